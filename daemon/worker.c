// SPDX-License-Identifier: MIT
/* worker -- inference threads: each pops a batch (tasks mixed) from the queue, drops the
 * requests that were cancelled or are past their deadline, runs one engine forward over the
 * rest, computes top-k, per-layer sparsity and the batch's modelled energy, writes the
 * replies of direct calls to their sockets (mimed.h), and hands the batch to the loop
 * through the done list and uv_async_send(), its only libuv call.
 * Ownership: a batch is allocated here and freed by the loop.
 * Threads: one thread per worker; see mimed.h for what each may touch. */
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/mimed.h"

/* Softmax over logits[0..n) and the k largest, most probable first (ties: lower index). */
static int top_k(const float *logits, int n, int k, int *ret_class, float *ret_prob)
{
	float max = logits[0];
	double sum = 0;
	int m = 0;

	for (int i = 1; i < n; i++)
		if (logits[i] > max)
			max = logits[i];
	for (int i = 0; i < n; i++)
		sum += exp((double)(logits[i] - max));
	if (k > n)
		k = n;
	for (int i = 0; i < n; i++) { /* insertion into the sorted top list */
		float v = logits[i];
		int j;

		if (m == k && v <= logits[ret_class[m - 1]])
			continue;
		j = m < k ? m++ : m - 1;
		while (j > 0 && logits[ret_class[j - 1]] < v) {
			ret_class[j] = ret_class[j - 1];
			j--;
		}
		ret_class[j] = i;
	}
	for (int i = 0; i < m; i++)
		ret_prob[i] = (float)(exp((double)(logits[ret_class[i]] - max)) / sum);
	return m;
}

static void batch_energy(struct mimed_worker *w, struct mimed_batch *b, int ran)
{
	/* the sub-network the batch ran: its phase's filters, input channels and kept weights */
	const struct mime_energy_net *net = &b->rt->energy_nets[b->phase];
	size_t need = (size_t)b->size * (size_t)net->n_layers;

	if (need > w->energy_cap) { /* grows to the largest batch: allocation-free after that */
		struct mime_energy_sparsity *p = realloc(w->energy_buf, need * sizeof(*p));

		if (!p) {
			b->have_energy = false;
			return;
		}
		w->energy_buf = p;
		w->energy_cap = need;
	}

	/* Sample b's sparsity per modelled layer: its output zeros from the engine's count for
	 * that layer, its input zeros from the previous modelled layer's output (the image: 0). */
	for (int s = 0, j = 0; s < b->size; s++) {
		const struct mimed_req *req = b->reqs[s];
		float prev = 0;

		if (req->status != MIMED_REQ_OK)
			continue;
		for (int l = 0; l < net->n_layers; l++) {
			float out = 0;

			for (int m = 0; m < req->n_masked; m++)
				if (req->masked_layer[m] == net->layers[l].graph_index)
					out = req->sparsity[m];
			w->energy_buf[j * net->n_layers + l] =
				(struct mime_energy_sparsity){.in = prev, .out = out};
			prev = out;
		}
		w->tasks[j++] = req->task;
	}
	/* Only MIME's sparsity is measured here: Case-2 skips MIME's zeros (an upper bound on its
	 * saving). Allocation-free; one report on the stack per case. */
	b->have_energy = mime_energy_batch_summary(&b->rt->energy_hw, net, ran, w->tasks,
	                                           w->energy_buf, NULL, &b->energy, NULL) == 0;
}

/* Takes the results of the n requests run[0..n) out of res. */
static void collect(struct mimed_batch *b, const struct mime_engine_result *res,
                    struct mimed_req **run, int n)
{
	const struct mimed_runtime *rt = b->rt;

	b->n_masked = res->n_masked < MIME_MAX_LAYERS ? res->n_masked : MIME_MAX_LAYERS;
	for (int m = 0; m < b->n_masked; m++)
		b->masked_layer[m] = res->masked_layer[m];
	for (int j = 0; j < n; j++) {
		struct mimed_req *req = run[j];
		const float *logits = res->logits + (size_t)j * (size_t)res->max_classes;
		int n_classes = rt->manifest->tasks[req->task].n_classes;

		req->n_top = top_k(logits, n_classes, req->top_k, req->top_class, req->top_prob);
		req->label = req->top_class[0];
		req->n_masked = b->n_masked;
		for (int m = 0; m < b->n_masked; m++) {
			int64_t neurons = res->neurons[m];
			int64_t zeros = res->zeros[(size_t)j * (size_t)res->n_masked + (size_t)m];

			req->masked_layer[m] = res->masked_layer[m];
			req->sparsity[m] =
				neurons > 0 ? (float)((double)zeros / (double)neurons) : 0.0f;
			b->mean_sparsity[m] += req->sparsity[m] / (float)b->ran;
		}
	}
}

static void run_batch(struct mimed_worker *w, struct mimed_batch *b)
{
	struct mimed_runtime *rt = b->rt;
	float *in = rt->inputs[w->index];
	struct mimed_req *run[MIMED_MAX_BATCH];
	struct mime_engine_result res;
	uint64_t now = mimed_now_ns(), t0;
	int ran = 0, r;

	for (int s = 0; s < b->size; s++) {
		struct mimed_req *req = b->reqs[s];

		req->batch_id = b->id;
		req->batch_size = b->size;
		if (__atomic_load_n(&req->cancelled, __ATOMIC_ACQUIRE))
			req->status = MIMED_REQ_CANCELLED;
		else if (req->deadline_ns && now >= req->deadline_ns)
			req->status = MIMED_REQ_TIMEOUT;
		else
			run[ran++] = req;
	}
	b->ran = ran;
	/* A reload may have raised max_batch while this runtime's requests waited: run in
	 * chunks the engines and buffers were sized for. */
	for (int off = 0; off < ran; off += rt->max_batch) {
		int n = ran - off < rt->max_batch ? ran - off : rt->max_batch;

		struct mime_engine *engine = NULL;

		for (int i = 0; i < n; i++) {
			memcpy(in + (size_t)i * (size_t)rt->input_floats, run[off + i]->input,
			       (size_t)rt->input_floats * sizeof(float));
			/* conventional: one task per batch (the queue key), its own engine */
			engine = mimed_runtime_engine(rt, w->index, run[off + i]->task,
			                              &w->tasks[i]);
		}
		t0 = mimed_now_ns();
		r = mime_engine_forward(engine, n, in, w->tasks, &res);
		b->forward_us += (mimed_now_ns() - t0) / 1000;
		if (r < 0) {
			b->error = r;
			for (int i = 0; i < ran; i++) {
				run[i]->status = MIMED_REQ_FAILED;
				run[i]->error = r;
			}
			return;
		}
		collect(b, &res, run + off, n);
	}
	for (int i = 0; i < ran; i++)
		run[i]->status = MIMED_REQ_OK;
	if (ran > 0 && rt->have_energy)
		batch_energy(w, b, ran);
}

/* Switches worker w's engine on rt from phase cur into want, timed into *ret_us; with
 * give_back (a step down for the budget) what the engine keeps for the other phases (fine
 * masks' W^T, decoded task tensors), the bundle pages of their task tensors and free heap go
 * back to the system, so that the RSS falls as the budget expects. On failure (ei says why)
 * the engine stays in cur. Under w->engine_lock. */
static int engine_switch(struct mimed_worker *w, struct mimed_runtime *rt, int cur, int want,
                         bool give_back, uint64_t *ret_us, struct mime_errinfo *ei)
{
	uint64_t t0 = mimed_now_ns();
	int r = mime_engine_set_phase(
		rt->engines[w->index], &rt->phases[want - 1],
		&rt->phase_tasks[(size_t)(want - 1) * (size_t)rt->model.n_tasks], ei);

	*ret_us = (mimed_now_ns() - t0) / 1000;
	if (r < 0)
		return r;
	if (give_back && want < cur) {
		mime_engine_trim(rt->engines[w->index]);
		mimed_runtime_drop_pages(rt, want, true);
		malloc_trim(0);
	}
	__atomic_store_n(&rt->engine_phase[w->index], want, __ATOMIC_RELAXED);
	return 0;
}

/* Before running a batch (never inside one): brings this worker's engine into the phase the
 * batch's requests named or, when they named none, the one the loop asks for, timing
 * mime_engine_set_phase(); the loop logs the switch from b. On failure the engine stays in
 * its phase: a batch that named none runs there, one that named a phase must not run at
 * all (returns false: its requests get io.mime.PhaseUnavailable). */
static bool enter_phase(struct mimed_worker *w, struct mimed_batch *b)
{
	struct mimed_runtime *rt = b->rt;
	int want = b->want_phase;
	int cur = __atomic_load_n(&rt->engine_phase[w->index], __ATOMIC_RELAXED);
	struct mime_errinfo ei = {0};

	if (want)
		b->switch_cause = "request";
	else {
		want = __atomic_load_n(&w->d->desired_phase, __ATOMIC_ACQUIRE);
		b->switch_cause = w->in_named_phase ? "restore" : NULL;
	}
	want = want < 1 ? 1 : want > rt->n_phases ? rt->n_phases : want;
	b->phase = cur;
	if (!rt->has_phases || cur == want) {
		if (!b->want_phase)
			w->in_named_phase = false;
		return true;
	}
	b->switched = true;
	b->switch_from = cur;
	b->switch_to = want;
	/* The daemon's phase below where the worker was (before a request's own phase took
	 * it, for a restore) gives back the other phases' memory; a request's own phase keeps
	 * it for cheap switches. */
	if (b->want_phase && !w->in_named_phase)
		w->phase_before_named = cur;
	b->switch_error = engine_switch(w, rt, b->switch_cause ? w->phase_before_named : cur, want,
	                                !b->want_phase, &b->switch_us, &ei);
	if (b->switch_error < 0) {
		snprintf(b->switch_msg, sizeof(b->switch_msg), "%s", ei.msg);
		return !b->want_phase;
	}
	w->in_named_phase = b->want_phase != 0;
	b->phase = want;
	return true;
}

/* Builds the replies of b's direct calls that ran (mimed.h) into msg[s] (NULL: none). */
static void direct_build(struct mimed_batch *b, char **msg, size_t *len)
{
	for (int s = 0; s < b->size; s++) {
		struct mimed_req *req = b->reqs[s];
		struct mimed_text t;

		msg[s] = NULL;
		if (req->status != MIMED_REQ_OK || !req->call->direct)
			continue;
		req->latency_us = (mimed_now_ns() - req->accepted_ns) / 1000;
		mimed_text_init(&t);
		mimed_text_lit(&t, "{\"parameters\":{\"result\":");
		mimed_result_text(&t, req, b, req->latency_us);
		mimed_text_lit(&t, "}}");
		/* NULL on failure: the loop builds it again and reports the failure */
		msg[s] = mimed_text_take(&t, &len[s]);
	}
}

/* Appends b to the done list, then writes the replies direct_build() made to their sockets
 * without blocking: the socket takes all of a reply (the usual case), part of it or nothing
 * (the loop writes the rest), or the write fails (the loop closes the connection). A reply
 * is written only when every direct reply before it on its connection went out whole
 * (mimed.h: after_seq, direct_seq), else the loop writes all of it. The batch is on the
 * list first so that a client that read its reply and calls again finds it counted; the
 * loop completes a call whose batch it took before this worker was done with it later
 * (direct_state). The socket is the connection's own duplicate descriptor, valid until the
 * loop has completed the call, so no lock is held while writing. */
static void deliver(struct mimed_worker *w, struct mimed_batch *b, char **msg, const size_t *len)
{
	struct mimed *d = w->d;
	bool urgent = false;
	struct mimed_call *calls[MIMED_MAX_BATCH];
	char *out[MIMED_MAX_BATCH];
	size_t out_len[MIMED_MAX_BATCH];
	int n = 0;

	for (int s = 0; s < b->size; s++) {
		if (!msg[s]) { /* the loop answers it: a client waits for the loop */
			urgent = true;
			continue;
		}
		calls[n] = b->reqs[s]->call;
		out[n] = msg[s];
		out_len[n] = len[s];
		__atomic_store_n(&calls[n]->direct_state, MIMED_DIRECT_SENDING, __ATOMIC_RELAXED);
		n++;
	}
	pthread_mutex_lock(&d->done_lock);
	if (d->done_tail)
		d->done_tail->next = b;
	else
		d->done_head = b;
	d->done_tail = b;
	pthread_mutex_unlock(&d->done_lock);
	/* b is the loop's from here; the calls stay until their direct_state is DONE */
	for (int i = 0; i < n; i++) {
		struct mimed_call *call = calls[i];
		struct mimed_conn *c = call->conn;
		ssize_t k = 0;
		int err = 0;

		if (__atomic_load_n(&c->direct_seq, __ATOMIC_ACQUIRE) == call->after_seq) {
			do
				k = send(c->wfd, out[i], out_len[i], MSG_DONTWAIT | MSG_NOSIGNAL);
			while (k < 0 && errno == EINTR);
			if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
				err = errno;
		}
		call->direct_sent = k > 0 ? (size_t)k : 0;
		call->direct_error = err;
		call->direct_msg = out[i];
		call->direct_len = out_len[i];
		if (call->direct_sent == out_len[i])
			__atomic_store_n(&c->direct_seq, call->seq, __ATOMIC_RELEASE);
		else
			urgent = true; /* the loop writes the rest, or closes */
		__atomic_store_n(&call->direct_state, MIMED_DIRECT_DONE, __ATOMIC_RELEASE);
	}
	/* When every reply went out whole, nobody waits for the loop: it takes the batch when
	 * it next reads (on_read() empties the done list first), or this worker wakes it
	 * before idling, or its tick does (10 ms). That saves the wake-up of the loop thread,
	 * which on a busy machine took the CPU from the client reading its reply. */
	if (urgent)
		uv_async_send(&d->done_async);
	else
		w->notify_pending = true;
}

/* Before the worker blocks for the next batch: wakes the loop for the batches it handed
 * over quietly (deliver()). */
static void notify_idle(void *arg)
{
	struct mimed_worker *w = arg;

	if (w->notify_pending) {
		w->notify_pending = false;
		uv_async_send(&w->d->done_async);
	}
}

static void *worker_main(void *arg)
{
	struct mimed_worker *w = arg;
	struct mimed *d = w->d;
	char *msg[MIMED_MAX_BATCH];
	size_t len[MIMED_MAX_BATCH];
	int n;

	for (;;) {
		/* The record is allocated before popping, so a popped request is never lost. */
		struct mimed_batch *b =
			calloc(1, sizeof(*b) + MIMED_MAX_BATCH * sizeof(b->reqs[0]));

		if (!b) {
			usleep(1000);
			continue;
		}
		n = mimed_queue_pop_batch_idle(&d->queue, w->items, MIMED_MAX_BATCH, notify_idle,
		                               w);
		if (n <= 0) {
			free(b);
			notify_idle(w);
			break;
		}
		for (int i = 0; i < n; i++)
			b->reqs[i] = (struct mimed_req *)w->items[i];
		b->id = __atomic_add_fetch(&d->next_batch_id, 1, __ATOMIC_RELAXED);
		b->size = n;
		b->worker = w->index;
		b->rt = b->reqs[0]->rt;
		b->want_phase = b->reqs[0]->want_phase; /* one queue key: one named phase */
		pthread_mutex_lock(&w->engine_lock);
		if (enter_phase(w, b)) {
			for (int i = 0; i < n; i++)
				b->reqs[i]->phase = b->phase;
			run_batch(w, b);
		} else {
			for (int i = 0; i < n; i++) {
				b->reqs[i]->batch_id = b->id;
				b->reqs[i]->batch_size = n;
				b->reqs[i]->status = MIMED_REQ_NO_PHASE;
			}
		}
		pthread_mutex_unlock(&w->engine_lock);
		direct_build(b, msg, len);
		deliver(w, b, msg, len);
	}
	return NULL;
}

/* The loop accepted an Infer for task on rt (before decoding its image): the engine that
 * will run it wakes its threads now (mime_engine_prepare), so that they are polling when
 * the forward starts instead of being woken by it. Only when a worker waits for work (else
 * the request waits behind a running batch, and the engine, in conventional mode another
 * task's, would be woken long before its turn). Any idle worker may take the request: each
 * worker's engine for the task is prepared (a no-op for engines of one thread, and for an
 * engine in a forward). */
void mimed_workers_prepare(struct mimed *d, const struct mimed_runtime *rt, int task)
{
	if (!mimed_queue_has_idle(&d->queue))
		return;
	for (int i = 0; i < d->n_workers; i++) {
		int engine_task;
		struct mime_engine *e = mimed_runtime_engine(rt, i, task, &engine_task);

		if (e)
			mime_engine_prepare(e);
	}
}

/* An idle switch (mimed_workers_idle_switch): the worker, the runtime whose engine it
 * switches (a reference the loop took), and what happened, for the loop's log. */
struct idle_switch {
	uv_work_t work;
	struct mimed_worker *w;
	struct mimed_runtime *rt;
	int from, to, error;
	uint64_t us;
	bool switched;
	char msg[sizeof(((struct mime_errinfo *)0)->msg)];
};

/* Thread pool: the engine of a worker that runs nothing now (else its next batch switches
 * it) into the daemon's phase, trimmed as a policy step down is (enter_phase). */
static void idle_switch_work(uv_work_t *req)
{
	struct idle_switch *s = container_of(req, struct idle_switch, work);
	struct mimed_worker *w = s->w;
	struct mimed_runtime *rt = s->rt;
	struct mime_errinfo ei = {0};
	int cur, want;

	if (pthread_mutex_trylock(&w->engine_lock) != 0)
		return;
	cur = __atomic_load_n(&rt->engine_phase[w->index], __ATOMIC_RELAXED);
	want = __atomic_load_n(&w->d->desired_phase, __ATOMIC_ACQUIRE);
	want = want < 1 ? 1 : want > rt->n_phases ? rt->n_phases : want;
	if (rt->has_phases && cur != want && !w->in_named_phase) {
		s->error = engine_switch(w, rt, cur, want, true, &s->us, &ei);
		if (s->error < 0)
			snprintf(s->msg, sizeof(s->msg), "%s", ei.msg);
		s->switched = s->error == 0;
		s->from = cur;
		s->to = want;
	}
	pthread_mutex_unlock(&w->engine_lock);
}

static void idle_switch_done(uv_work_t *req, int status)
{
	struct idle_switch *s = container_of(req, struct idle_switch, work);
	struct mimed *d = s->w->d;

	if (s->switched) {
		mimed_log(d, LOG_INFO,
		          "phase switch worker=%d from=%d to=%d switch_us=%llu cause=idle",
		          s->w->index, s->from, s->to, (unsigned long long)s->us);
		mimed_server_emit(d, "phase_switch",
		                  json_pack("{s:i,s:i,s:i,s:I,s:s}", "worker", s->w->index, "from",
		                            s->from, "to", s->to, "switch_us", (json_int_t)s->us,
		                            "cause", "idle"));
	} else if (s->error < 0) {
		mimed_log(d, LOG_WARNING, "idle phase switch of worker %d failed: %s", s->w->index,
		          s->msg);
	}
	mimed_runtime_unref(s->rt);
	free(s);
	d->n_idle_switches--;
	mimed_server_check_drained(d);
}

void mimed_workers_idle_switch(struct mimed *d)
{
	struct mimed_runtime *rt = d->rt;

	if (d->shutting_down || !rt->has_phases || !d->workers)
		return;
	for (int i = 0; i < d->n_workers; i++) {
		struct idle_switch *s;

		if (__atomic_load_n(&rt->engine_phase[i], __ATOMIC_RELAXED) == d->phase)
			continue;
		s = calloc(1, sizeof(*s));
		if (!s)
			return; /* the worker switches at its next batch */
		s->w = &d->workers[i];
		s->rt = rt;
		rt->refs++;
		if (uv_queue_work(&d->loop, &s->work, idle_switch_work, idle_switch_done) < 0) {
			rt->refs--;
			free(s);
			continue;
		}
		d->n_idle_switches++;
	}
}

int mimed_workers_start(struct mimed *d, int n)
{
	int r;

	d->workers = calloc((size_t)n, sizeof(*d->workers));
	if (!d->workers)
		return -ENOMEM;
	d->n_workers = n;
	for (int i = 0; i < n; i++) {
		d->workers[i].d = d;
		d->workers[i].index = i;
		pthread_mutex_init(&d->workers[i].engine_lock, NULL);
		r = pthread_create(&d->workers[i].thread, NULL, worker_main, &d->workers[i]);
		if (r) {
			mimed_workers_stop(d);
			return -r;
		}
		d->workers[i].started = true;
	}
	return 0;
}

void mimed_workers_stop(struct mimed *d)
{
	mimed_queue_close(&d->queue);
	for (int i = 0; i < d->n_workers; i++)
		if (d->workers[i].started)
			pthread_join(d->workers[i].thread, NULL);
	for (int i = 0; i < d->n_workers; i++) {
		free(d->workers[i].energy_buf);
		pthread_mutex_destroy(&d->workers[i].engine_lock);
	}
	free(d->workers);
	d->workers = NULL;
}
