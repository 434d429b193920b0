// SPDX-License-Identifier: MIT
/* server -- the Varlink server on the loop thread: listening socket (bound or inherited from
 * systemd), connections (peer credentials, caps, back-pressure, idle timeout), the methods
 * of io.mime and org.varlink.service, the hand-off of requests to the queue, and the way
 * back: batch records from the workers become replies (or complete the direct replies the
 * workers wrote), log lines and events.
 * Ownership: see mimed.h (calls and requests belong to their connection's FIFO).
 * Threads: the loop thread only, except mimed_result_text(), which workers call too. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/cgroup.h"
#include "daemon/io.mime.varlink.h"
#include "daemon/mimed.h"
#include "daemon/sdnotify.h"
#include "lib/image.h"

#define TOP_K_DEFAULT   5
#define MAX_BATCH_ITEMS 1024

static const char service_interface[] =
	"# The Varlink service interface is provided by every varlink service. It\n"
	"# describes the service and the interfaces it implements.\n"
	"interface org.varlink.service\n\n"
	"# Get a list of all the interfaces a service provides and information\n"
	"# about the implementation.\n"
	"method GetInfo() -> (\n  vendor: string,\n  product: string,\n  version: string,\n"
	"  url: string,\n  interfaces: []string\n)\n\n"
	"# Get the description of an interface that is implemented by this service.\n"
	"method GetInterfaceDescription(interface: string) -> (description: string)\n\n"
	"# The requested interface was not found.\nerror InterfaceNotFound (interface: string)\n\n"
	"# The requested method was not found\nerror MethodNotFound (method: string)\n\n"
	"# The interface defines the requested method, but the supplied parameters do not conform\n"
	"# to its definition.\nerror InvalidParameter (parameter: string)\n\n"
	"# Client is denied access\nerror PermissionDenied ()\n\n"
	"# Method is expected to be called with 'more' set to true, but wasn't\n"
	"error ExpectedMore ()\n";

/* ---- connections and calls ---------------------------------------------------------------- */

struct write_req {
	uv_write_t req;
	char *buf;
};

static void conn_close(struct mimed_conn *c, bool graceful);
static void conn_process(struct mimed_conn *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_read_data(struct mimed_conn *c, ssize_t nread, const uv_buf_t *buf);
static uint64_t predicted_rss(const struct mimed *d, int p);

static void conn_unref(struct mimed_conn *c)
{
	if (--c->refs > 0)
		return;
	if (c->wfd >= 0)
		close(c->wfd);
	mimed_framer_fini(&c->framer);
	free(c);
}

static void on_write(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;

	free(w->buf);
	free(w);
}

/* Sends len bytes of buf (taken). */
static void conn_write(struct mimed_conn *c, char *buf, size_t len)
{
	struct mimed *d = c->d;
	struct write_req *w;
	uv_buf_t b;
	int r;

	if (c->closing || !buf) {
		free(buf);
		return;
	}
	w = malloc(sizeof(*w));
	if (!w) {
		free(buf);
		conn_close(c, false);
		return;
	}
	w->buf = buf;
	b = uv_buf_init(buf, (unsigned)len);
	r = uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_write);
	if (r < 0) {
		free(buf);
		free(w);
		mimed_log(d, LOG_DEBUG, "connection uid=%u pid=%d: write: %s", (unsigned)c->uid,
		          (int)c->pid, uv_strerror(r));
		conn_close(c, false);
		return;
	}
	if (c->pipe.write_queue_size > d->cfg.max_write_queue_bytes) {
		mimed_log(d, LOG_WARNING,
		          "connection uid=%u pid=%d leaves %zu bytes of replies unread, closing",
		          (unsigned)c->uid, (int)c->pid, c->pipe.write_queue_size);
		conn_close(c, false);
	}
}

static struct mimed_call *call_new(struct mimed_conn *c, enum mimed_call_kind kind, int n_items,
                                   bool oneway)
{
	struct mimed_call *call;

	call = calloc(1, sizeof(*call) + (size_t)n_items * sizeof(call->reqs[0]));
	if (!call)
		return NULL;
	call->conn = c;
	call->kind = kind;
	call->oneway = oneway;
	call->n_items = n_items;
	c->refs++;
	if (c->tail)
		c->tail->next = call;
	else
		c->head = call;
	c->tail = call;
	c->n_calls++;
	if (kind != MIMED_CALL_WATCH)
		c->d->n_busy_calls++;
	return call;
}

static void call_free(struct mimed_call *call)
{
	struct mimed_conn *c = call->conn;

	free(call->reply);
	free(call->direct_msg);
	for (int i = 0; i < call->n_items; i++) {
		struct mimed_req *req = &call->reqs[i];

		free(req->input);
		free(req->top_class);
		free(req->top_prob);
		free(req->result);
		mimed_runtime_unref(req->rt);
	}
	free(call);
	c->n_calls--;
	conn_unref(c);
}

/* Writes the answered calls at the head of c's FIFO, in order, and frees them. */
static void conn_flush(struct mimed_conn *c)
{
	struct mimed *d = c->d;

	c->refs++; /* the writes below may close c */
	while (c->head && c->head->done) {
		struct mimed_call *call = c->head;

		c->head = call->next;
		if (!c->head)
			c->tail = NULL;
		if (!call->oneway && call->reply) {
			conn_write(c, call->reply, call->reply_len);
			call->reply = NULL;
		}
		call_free(call);
	}
	if (!c->closing) {
		if (c->n_calls == 0 && c->eof)
			conn_close(c, true);
		else if (!c->reading && !c->eof && !c->processing &&
		         c->n_calls < d->cfg.max_pending)
			conn_process(c);
	}
	conn_unref(c);
}

/* Marks call answered with msg (taken; NULL: no memory, the client gets nothing but the
 * connection is closed so it does not wait forever; or, for a direct call, nothing is left
 * to write). */
static void call_reply(struct mimed_call *call, char *msg, size_t len)
{
	struct mimed *d = call->conn->d;

	if (call->done) {
		free(msg);
		return;
	}
	call->reply = msg;
	call->reply_len = len;
	call->done = true;
	if (call->kind != MIMED_CALL_WATCH)
		d->n_busy_calls--;
	else
		d->n_watchers--;
	if (!msg && !call->oneway && !__atomic_load_n(&call->direct_state, __ATOMIC_RELAXED))
		conn_close(call->conn, false);
	conn_flush(call->conn);
	mimed_server_check_drained(d);
}

static void call_error(struct mimed_call *call, const char *error, json_t *params)
{
	size_t len = 0;
	char *msg = mimed_varlink_error(error, params, &len);

	if (strcmp(error, MIMED_ERR_BUSY) != 0 && strcmp(error, MIMED_ERR_TIMEOUT) != 0)
		call->conn->d->n_errors++;
	call_reply(call, msg, len);
}

static void call_error_desc(struct mimed_call *call, const char *error, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void call_error_desc(struct mimed_call *call, const char *error, const char *fmt, ...)
{
	char desc[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(desc, sizeof(desc), fmt, ap);
	va_end(ap);
	call_error(call, error, json_pack("{s:s}", "description", desc));
}

static void call_invalid_param(struct mimed_call *call, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void call_invalid_param(struct mimed_call *call, const char *name, const char *fmt, ...)
{
	char desc[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(desc, sizeof(desc), fmt, ap);
	va_end(ap);
	call_error(call, MIMED_ERR_INVALID_PARAM,
	           json_pack("{s:s,s:s}", "parameter", name, "description", desc));
}

static void call_ok(struct mimed_call *call, json_t *params)
{
	size_t len = 0;
	char *msg = mimed_varlink_reply(params, false, &len);

	call_reply(call, msg, len);
}

/* ---- requests -------------------------------------------------------------------------------- */

static void task_count(struct mimed *d, const char *name)
{
	for (int i = 0; i < d->n_task_counts; i++) {
		if (strcmp(d->task_counts[i].name, name) == 0) {
			d->task_counts[i].requests++;
			return;
		}
	}
	if (d->n_task_counts < (int)(sizeof(d->task_counts) / sizeof(d->task_counts[0]))) {
		snprintf(d->task_counts[d->n_task_counts].name, MIME_NAME_MAX, "%s", name);
		d->task_counts[d->n_task_counts++].requests = 1;
	}
}

/* One case's energy as the protocol's CaseEnergy: total, its DRAM / cache / reg / MAC split
 * and compute cycles. */
static json_t *case_json(const struct mime_energy_case_totals *t)
{
	return json_pack("{s:f,s:f,s:f,s:f,s:f,s:f}", "total", t->e_total, "dram",
	                 t->e[MIME_ENERGY_DRAM], "cache", t->e[MIME_ENERGY_CACHE], "reg",
	                 t->e[MIME_ENERGY_REG], "mac", t->e[MIME_ENERGY_MAC], "cycles", t->cycles);
}

/* a over MIME's b; 1 when MIME costs nothing (as mime_energy_batch_summary()) */
static double saving(double a, double b)
{
	return b > 0 ? a / b : 1;
}

static json_t *energy_json(const struct mimed_batch *b)
{
	const struct mime_energy_summary *e = b ? &b->energy : NULL;

	if (!b || !b->have_energy)
		return json_string("unavailable");
	return json_pack("{s:s,s:o,s:o,s:o,s:f,s:f,s:f,s:s}", "mode",
	                 mime_energy_mode_name(e->mode), "case1", case_json(&e->kase[0]), "case2",
	                 case_json(&e->kase[1]), "case3", case_json(&e->kase[2]), "saving_vs_case1",
	                 e->saving_vs_case1, "saving_vs_case2", e->saving_vs_case2,
	                 "speedup_vs_case1", e->speedup_vs_case1, "unit",
	                 "MAC energy (normalised)");
}

static void case_text(struct mimed_text *t, const struct mime_energy_case_totals *c)
{
	mimed_text_lit(t, "{\"total\":");
	mimed_text_real(t, c->e_total);
	mimed_text_lit(t, ",\"dram\":");
	mimed_text_real(t, c->e[MIME_ENERGY_DRAM]);
	mimed_text_lit(t, ",\"cache\":");
	mimed_text_real(t, c->e[MIME_ENERGY_CACHE]);
	mimed_text_lit(t, ",\"reg\":");
	mimed_text_real(t, c->e[MIME_ENERGY_REG]);
	mimed_text_lit(t, ",\"mac\":");
	mimed_text_real(t, c->e[MIME_ENERGY_MAC]);
	mimed_text_lit(t, ",\"cycles\":");
	mimed_text_real(t, c->cycles);
	mimed_text_lit(t, "}");
}

/* The same object as energy_json(b), as text. */
static void energy_text(struct mimed_text *t, const struct mimed_batch *b)
{
	const struct mime_energy_summary *e = &b->energy;

	if (!b->have_energy) {
		mimed_text_lit(t, "\"unavailable\"");
		return;
	}
	mimed_text_lit(t, "{\"mode\":");
	mimed_text_str(t, mime_energy_mode_name(e->mode));
	mimed_text_lit(t, ",\"case1\":");
	case_text(t, &e->kase[0]);
	mimed_text_lit(t, ",\"case2\":");
	case_text(t, &e->kase[1]);
	mimed_text_lit(t, ",\"case3\":");
	case_text(t, &e->kase[2]);
	mimed_text_lit(t, ",\"saving_vs_case1\":");
	mimed_text_real(t, e->saving_vs_case1);
	mimed_text_lit(t, ",\"saving_vs_case2\":");
	mimed_text_real(t, e->saving_vs_case2);
	mimed_text_lit(t, ",\"speedup_vs_case1\":");
	mimed_text_real(t, e->speedup_vs_case1);
	mimed_text_lit(t, ",\"unit\":\"MAC energy (normalised)\"}");
}

/* The protocol's InferResult, in the key order the jansson-built one had (clients see the
 * same bytes either way; tests/integration checks the values). */
void mimed_result_text(struct mimed_text *t, const struct mimed_req *req,
                       const struct mimed_batch *b, uint64_t latency_us)
{
	const struct mime_task_spec *ts = &req->rt->manifest->tasks[req->task];
	const struct mime_graph *g = &req->rt->manifest->graph;

	mimed_text_lit(t, "{\"task\":");
	mimed_text_str(t, ts->name);
	mimed_text_lit(t, ",\"label\":");
	mimed_text_int(t, req->label);
	mimed_text_lit(t, ",\"class\":");
	mimed_text_str(t, ts->class_names[req->label]);
	mimed_text_lit(t, ",\"top\":[");
	for (int i = 0; i < req->n_top; i++) {
		if (i)
			mimed_text_lit(t, ",");
		mimed_text_lit(t, "{\"label\":");
		mimed_text_int(t, req->top_class[i]);
		mimed_text_lit(t, ",\"class\":");
		mimed_text_str(t, ts->class_names[req->top_class[i]]);
		mimed_text_lit(t, ",\"score\":");
		mimed_text_real(t, (double)req->top_prob[i]);
		mimed_text_lit(t, "}");
	}
	mimed_text_lit(t, "],\"phase\":");
	mimed_text_int(t, req->phase);
	mimed_text_lit(t, ",\"latency_us\":");
	mimed_text_int(t, (long long)latency_us);
	mimed_text_lit(t, ",\"sparsity\":[");
	for (int m = 0; m < req->n_masked; m++) {
		if (m)
			mimed_text_lit(t, ",");
		mimed_text_lit(t, "{\"layer\":");
		mimed_text_str(t, g->layers[req->masked_layer[m]].name);
		mimed_text_lit(t, ",\"sparsity\":");
		mimed_text_real(t, (double)req->sparsity[m]);
		mimed_text_lit(t, "}");
	}
	mimed_text_lit(t, "],\"batch_id\":");
	mimed_text_int(t, (long long)req->batch_id);
	mimed_text_lit(t, ",\"batch_size\":");
	mimed_text_int(t, req->batch_size);
	mimed_text_lit(t, ",\"energy\":");
	energy_text(t, b);
	mimed_text_lit(t, "}");
}

/* A direct call's reply went out from the worker (all of it, part, or the write failed):
 * write what is left, or close the connection on a failed write. */
static void call_sent(struct mimed_call *call)
{
	struct mimed_conn *c = call->conn;
	char *msg = call->direct_msg;
	size_t n = call->direct_len - call->direct_sent;

	call->direct_msg = NULL;
	if (call->direct_error) {
		free(msg);
		mimed_log(c->d, LOG_DEBUG, "connection uid=%u pid=%d: write: %s", (unsigned)c->uid,
		          (int)c->pid, strerror(call->direct_error));
		conn_close(c, false);
		call_reply(call, NULL, 0);
		return;
	}
	if (n == 0) {
		free(msg);
		msg = NULL;
	} else {
		mimed_log(c->d, LOG_DEBUG,
		          "connection uid=%u pid=%d: the socket took %zu of %zu bytes of a reply, "
		          "the loop writes the rest",
		          (unsigned)c->uid, (int)c->pid, call->direct_sent, call->direct_len);
		memmove(msg, msg + call->direct_sent, n);
	}
	call_reply(call, msg, n);
}

/* Replies {"parameters":{key:<the items' results>}}: one object, or an array of them. */
static void call_ok_results(struct mimed_call *call, bool array)
{
	struct mimed_text t;
	char *msg;
	size_t len = 0;

	mimed_text_init(&t);
	if (array)
		mimed_text_lit(&t, "{\"parameters\":{\"results\":[");
	else
		mimed_text_lit(&t, "{\"parameters\":{\"result\":");
	for (int i = 0; i < call->n_items; i++) {
		if (i)
			mimed_text_lit(&t, ",");
		mimed_text_raw(&t, call->reqs[i].result, call->reqs[i].result_len);
	}
	if (array)
		mimed_text_lit(&t, "]}}");
	else
		mimed_text_lit(&t, "}}");
	msg = mimed_text_take(&t, &len);
	if (!msg) {
		call_error_desc(call, MIMED_ERR_INTERNAL, "out of memory");
		return;
	}
	call_reply(call, msg, len);
}

/* Builds the reply once every item of call is back. */
static void call_complete(struct mimed *d, struct mimed_call *call)
{
	if (__atomic_load_n(&call->direct_state, __ATOMIC_ACQUIRE) == MIMED_DIRECT_DONE) {
		call_sent(call);
		return;
	}
	if (call->error) {
		if (strcmp(call->error, MIMED_ERR_TIMEOUT) == 0 ||
		    strcmp(call->error, MIMED_ERR_SHUTTING_DOWN) == 0)
			call_error(call, call->error, NULL);
		else if (strcmp(call->error, MIMED_ERR_PHASE) == 0)
			call_error(call, call->error,
			           json_pack("{s:i,s:s}", "phase", call->error_phase, "description",
			                     call->error_desc));
		else
			call_error_desc(call, call->error, "%s", call->error_desc);
		return;
	}
	call_ok_results(call, call->kind != MIMED_CALL_INFER);
}

/* One request is back (from a batch, or taken out of the queue by the loop). */
static void req_finish(struct mimed *d, struct mimed_req *req, const struct mimed_batch *b)
{
	struct mimed_call *call = req->call;
	uint64_t latency_us = (mimed_now_ns() - req->accepted_ns) / 1000;
	int direct = __atomic_load_n(&call->direct_state, __ATOMIC_ACQUIRE);

	switch (req->status) {
	case MIMED_REQ_OK:
		if (direct) { /* the worker made the reply */
			latency_us = req->latency_us;
		} else {
			struct mimed_text t;

			mimed_text_init(&t);
			mimed_result_text(&t, req, b, latency_us);
			req->result_len = t.len;
			req->result = t.failed ? NULL : t.buf;
			if (t.failed) {
				mimed_text_fini(&t);
				if (!call->error) {
					call->error = MIMED_ERR_INTERNAL;
					snprintf(call->error_desc, sizeof(call->error_desc),
					         "out of memory, or a result that is not a finite "
					         "number");
				}
			}
		}
		mimed_latency_add(&d->latency, latency_us);
		if (req->phase >= 1 && req->phase <= MIMED_MAX_PHASES) {
			struct mimed_latency *pl = &d->phase_latency[req->phase - 1];

			if (pl->cap || mimed_latency_init(pl, 2048) == 0)
				mimed_latency_add(pl, latency_us);
		}
		task_count(d, req->rt->manifest->tasks[req->task].name);
		break;
	case MIMED_REQ_TIMEOUT:
		d->n_timeouts++;
		if (!call->error)
			call->error = MIMED_ERR_TIMEOUT;
		break;
	case MIMED_REQ_SHUTDOWN:
		if (!call->error)
			call->error = MIMED_ERR_SHUTTING_DOWN;
		break;
	case MIMED_REQ_NO_PHASE:
		if (!call->error) {
			call->error = MIMED_ERR_PHASE;
			call->error_phase = req->want_phase;
			snprintf(call->error_desc, sizeof(call->error_desc), "phase %d: %.200s",
			         req->want_phase,
			         b && b->switch_msg[0] ? b->switch_msg
			                               : mime_strerror(b ? b->switch_error : 0));
		}
		break;
	case MIMED_REQ_CANCELLED:
		if (!call->error) {
			call->error = MIMED_ERR_INTERNAL;
			snprintf(call->error_desc, sizeof(call->error_desc), "cancelled");
		}
		break;
	case MIMED_REQ_QUEUED:
	case MIMED_REQ_FAILED:
		if (!call->error) {
			call->error = MIMED_ERR_INTERNAL;
			snprintf(call->error_desc, sizeof(call->error_desc), "inference failed: %s",
			         mime_strerror(req->error));
		}
		break;
	}
	if (direct == MIMED_DIRECT_SENDING) { /* its worker is still writing: later */
		call->await_next = d->awaiting;
		d->awaiting = call;
		return;
	}
	if (--call->n_pending == 0)
		call_complete(d, call);
}

/* Completes the direct calls whose worker has finished writing since they came back. */
static void awaiting_complete(struct mimed *d)
{
	struct mimed_call **pp = &d->awaiting;

	while (*pp) {
		struct mimed_call *call = *pp;

		if (__atomic_load_n(&call->direct_state, __ATOMIC_ACQUIRE) != MIMED_DIRECT_DONE) {
			pp = &call->await_next;
			continue;
		}
		*pp = call->await_next;
		if (--call->n_pending == 0)
			call_complete(d, call);
		pp = &d->awaiting; /* completing may have changed the list: from the start */
	}
}

static bool match_conn(struct mimed_qitem *it, void *arg)
{
	return ((struct mimed_req *)it)->call->conn == arg;
}

static bool match_expired(struct mimed_qitem *it, void *arg)
{
	const struct mimed_req *req = (const struct mimed_req *)it;

	return req->deadline_ns && req->deadline_ns <= *(uint64_t *)arg;
}

static bool match_all(struct mimed_qitem *it, void *arg)
{
	return true;
}

static void finish_removed(struct mimed *d, struct mimed_qitem *list, enum mimed_req_status st)
{
	while (list) {
		struct mimed_req *req = (struct mimed_req *)list;

		list = list->next;
		req->status = st;
		req_finish(d, req, NULL);
	}
}

/* ---- the way back from the workers ------------------------------------------------------------
 */

/* The tasks of b's requests that ran, in batch order, into ret_tasks (room for b->size);
 * returns their count. Taken before the replies free the requests. */
static int batch_tasks(const struct mimed_batch *b, int *ret_tasks)
{
	int n = 0;

	for (int s = 0; s < b->size; s++)
		if (b->reqs[s]->status == MIMED_REQ_OK)
			ret_tasks[n++] = b->reqs[s]->task;
	return n;
}

/* One key=value line for b; tasks[0..n_tasks) are its requests' that ran (batch_tasks()). */
static void batch_log(struct mimed *d, const struct mimed_batch *b, const int *task_of, int n_ok)
{
	const struct mime_manifest *man = b->rt->manifest;
	char tasks[1024], sp[1024], energy[512];
	size_t nt = 0, ns = 0;
	bool mixed = false;

	tasks[0] = sp[0] = 0;
	for (int s = 0; s < n_ok; s++) {
		if (nt < sizeof(tasks))
			nt += (size_t)snprintf(tasks + nt, sizeof(tasks) - nt, "%s%s",
			                       nt ? "," : "", man->tasks[task_of[s]].name);
		if (task_of[s] != task_of[0])
			mixed = true;
	}
	for (int m = 0; m < b->n_masked; m++)
		if (ns < sizeof(sp))
			ns += (size_t)snprintf(sp + ns, sizeof(sp) - ns, "%s%s:%.3f", ns ? "," : "",
			                       man->graph.layers[b->masked_layer[m]].name,
			                       (double)b->mean_sparsity[m]);
	if (b->have_energy) {
		const struct mime_energy_summary *e = &b->energy;
		static const char *const key[3] = {"case1", "case2", "mime"};
		size_t ne = (size_t)snprintf(
			energy, sizeof(energy),
			"energy_mime=%.6g energy_case1=%.6g energy_case2=%.6g saving_case1=%.4g "
			"saving_case2=%.4g",
			e->kase[2].e_total, e->kase[0].e_total, e->kase[1].e_total,
			e->saving_vs_case1, e->saving_vs_case2);

		/* the split as dram/cache/reg/mac, per case */
		for (int k = 0; k < 3 && ne < sizeof(energy); k++) {
			const double *x = e->kase[k].e;

			ne += (size_t)snprintf(energy + ne, sizeof(energy) - ne,
			                       " split_%s=%.4g/%.4g/%.4g/%.4g", key[k],
			                       x[MIME_ENERGY_DRAM], x[MIME_ENERGY_CACHE],
			                       x[MIME_ENERGY_REG], x[MIME_ENERGY_MAC]);
		}
	} else
		snprintf(energy, sizeof(energy), "energy=unavailable");
	mimed_log(d, LOG_INFO,
	          "batch id=%llu size=%d ran=%d worker=%d tasks=%s mode=%s weights=%s phase=%d "
	          "forward_us=%llu sparsity=%s %s%s%s",
	          (unsigned long long)b->id, b->size, b->ran, b->worker, nt ? tasks : "-",
	          mixed ? "pipelined" : "singular",
	          b->rt->mode == MIMED_MODE_CONVENTIONAL ? "conventional" : "shared", b->phase,
	          (unsigned long long)b->forward_us, ns ? sp : "-", energy,
	          b->error ? " error=" : "", b->error ? mime_strerror(b->error) : "");
}

static json_t *batch_event(struct mimed *d, const struct mimed_batch *b, const int *task_of,
                           int n_ok)
{
	const struct mime_manifest *man = b->rt->manifest;
	json_t *tasks = json_array(), *sp = json_object();
	bool mixed = false;

	for (int s = 0; s < n_ok; s++) {
		json_array_append_new(tasks, json_string(man->tasks[task_of[s]].name));
		if (task_of[s] != task_of[0])
			mixed = true;
	}
	for (int m = 0; m < b->n_masked; m++)
		json_object_set_new(sp, man->graph.layers[b->masked_layer[m]].name,
		                    json_real((double)b->mean_sparsity[m]));
	return json_pack("{s:I,s:i,s:i,s:o,s:s,s:s,s:i,s:I,s:o,s:o}", "id", (json_int_t)b->id,
	                 "size", b->size, "ran", b->ran, "tasks", tasks, "mode",
	                 mixed ? "pipelined" : "singular", "weights",
	                 b->rt->mode == MIMED_MODE_CONVENTIONAL ? "conventional" : "shared",
	                 "phase", b->phase, "forward_us", (json_int_t)b->forward_us, "sparsity", sp,
	                 "energy", energy_json(b));
}

/* A worker entered another phase before running b: log it (cause, from/to, how long
 * mime_engine_set_phase() took) and emit a phase_switch event. Switches for a request's
 * named phase ("request") and back ("restore") may come with every batch: they log at the
 * batch records' level. */
static void switch_log(struct mimed *d, const struct mimed_batch *b)
{
	const char *cause = b->switch_cause  ? b->switch_cause
	                    : d->phase_cause ? d->phase_cause
	                                     : "start";

	if (b->switch_error < 0) {
		mimed_log(d, LOG_ERR, "worker %d: phase %d -> %d: %s: %s, %s", b->worker,
		          b->switch_from, b->switch_to, mime_strerror(b->switch_error),
		          b->switch_msg,
		          b->want_phase ? "refusing the batch's requests" : "staying there");
		return;
	}
	mimed_log(d, b->switch_cause ? LOG_INFO : LOG_NOTICE,
	          "phase switch worker=%d from=%d to=%d switch_us=%llu cause=%s", b->worker,
	          b->switch_from, b->switch_to, (unsigned long long)b->switch_us, cause);
	mimed_server_emit(d, "phase_switch",
	                  json_pack("{s:i,s:i,s:i,s:I,s:s}", "worker", b->worker, "from",
	                            b->switch_from, "to", b->switch_to, "switch_us",
	                            (json_int_t)b->switch_us, "cause", cause));
}

static void done_drain(struct mimed *d, bool log_later);
static void logs_flush(struct mimed *d);

void mimed_server_on_done(uv_async_t *h)
{
	struct mimed *d = h->data;

	awaiting_complete(d);
	done_drain(d, false);
	awaiting_complete(d);
}

/* The batches back from the workers: counters, energy totals, replies; then (or with
 * log_later, at logs_flush()) the log line and the event. */
static void done_drain(struct mimed *d, bool log_later)
{
	struct mimed_batch *list;

	pthread_mutex_lock(&d->done_lock);
	list = d->done_head;
	d->done_head = d->done_tail = NULL;
	pthread_mutex_unlock(&d->done_lock);

	while (list) {
		struct mimed_batch *b = list;
		struct mimed_runtime *rt = b->rt;

		list = b->next;
		b->next = NULL;
		/* The replies below may free the requests and their runtime references: keep
		 * what the log line and the event need. */
		rt->refs++;
		b->n_ok = batch_tasks(b, b->task_of);
		if (b->switched)
			switch_log(d, b);
		if (b->ran > 0) {
			d->n_batches++;
			if (b->have_energy) {
				for (int c = 0; c < 3; c++) {
					const struct mime_energy_case_totals *x =
						&b->energy.kase[c];
					struct mime_energy_case_totals *t = &d->energy_totals[c];

					for (int i = 0; i <= MIME_ENERGY_MAC; i++)
						t->e[i] += x->e[i];
					t->e_total += x->e_total;
					t->cycles += x->cycles;
				}
				d->energy_batches++;
				if (b->energy.mode == MIME_ENERGY_PIPELINED)
					d->energy_pipelined++;
			}
		}
		/* Replies first: they go out (uv_write tries at once) before the log line and
		 * the event are formatted, so those are off the request's path. */
		for (int s = 0; s < b->size; s++)
			req_finish(d, b->reqs[s], b);
		if (d->log_tail)
			d->log_tail->next = b;
		else
			d->log_head = b;
		d->log_tail = b;
	}
	if (!log_later)
		logs_flush(d);
}

/* The log lines and events of the batches done_drain() kept, in batch order. */
static void logs_flush(struct mimed *d)
{
	while (d->log_head) {
		struct mimed_batch *b = d->log_head;

		d->log_head = b->next;
		if (!d->log_head)
			d->log_tail = NULL;
		if (b->ran > 0) {
			batch_log(d, b, b->task_of, b->n_ok);
			if (d->n_watchers)
				mimed_server_emit(d, "batch",
				                  batch_event(d, b, b->task_of, b->n_ok));
		}
		mimed_runtime_unref(b->rt);
		free(b);
	}
}

/* ---- events ---------------------------------------------------------------------------------- */

void mimed_server_emit(struct mimed *d, const char *kind, json_t *data)
{
	json_t *ev;
	char *msg;
	size_t len = 0;

	if (!d->n_watchers) {
		json_decref(data);
		return;
	}
	ev = json_pack("{s:{s:s,s:I,s:o}}", "event", "kind", kind, "time_us",
	               (json_int_t)((mimed_now_ns() - d->start_ns) / 1000), "data",
	               data ? data : json_object());
	msg = mimed_varlink_reply(ev, true, &len);
	if (!msg)
		return;
	for (struct mimed_conn *c = d->conns, *next; c; c = next) {
		char *copy;

		next = c->next;
		if (c->closing || !c->head || c->head->kind != MIMED_CALL_WATCH || c->head->done)
			continue;
		copy = malloc(len);
		if (!copy)
			continue;
		memcpy(copy, msg, len);
		conn_write(c, copy, len);
	}
	free(msg);
}

/* ---- methods --------------------------------------------------------------------------------- */

/* An optional integer parameter in [lo, hi]; prefix names the item ("items[3].") in the
 * error. Returns false after replying InvalidParameter. */
static bool get_int(json_t *params, const char *key, const char *prefix, json_int_t lo,
                    json_int_t hi, json_int_t *ret, struct mimed_call *call)
{
	json_t *v = json_object_get(params, key);
	char name[64];

	if (!v || json_is_null(v))
		return true;
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
		snprintf(name, sizeof(name), "%s%s", prefix, key);
		call_invalid_param(call, name, "'%s' must be an integer in [%lld, %lld]", name,
		                   (long long)lo, (long long)hi);
		return false;
	}
	*ret = json_integer_value(v);
	return true;
}

static bool check_magic(const uint8_t *data, size_t n, const char *format)
{
	if (strcmp(format, "png") == 0)
		return n >= 8 && memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0;
	if (strcmp(format, "pgm") == 0)
		return n >= 2 && memcmp(data, "P5", 2) == 0;
	if (strcmp(format, "ppm") == 0)
		return n >= 2 && memcmp(data, "P6", 2) == 0;
	return false;
}

/* An item being decoded off the loop thread (libuv's thread pool; a small image file on the
 * loop thread itself, see prep_is_small()): base64, the image file or raw tensor, and the
 * preprocessing to the task's input spec, into req->input. The work reads only this struct,
 * the request's input buffer and the runtime (immutable, held by the request); it reports
 * through error and desc, which the loop reads in prep_done(). */
struct prep {
	uv_work_t work;
	struct mimed_call *call;
	struct mimed_req *req;
	json_t *image;      /* a reference taken on the loop thread; read-only meanwhile */
	const char *format; /* static: NULL (sniffed), "png", "pgm", "ppm", "u8" or "f32" */
	int64_t dims[3];    /* raw tensors: the shape, padded with 1 */
	int ndim;
	size_t n_elems;
	size_t max_bytes;
	long max_pixels; /* limits.max_pixels */
	char name[64];
	const char *error; /* a Varlink error name, when the item failed */
	char desc[256];
};

static void prep_fail(struct prep *p, const char *error, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void prep_fail(struct prep *p, const char *error, const char *fmt, ...)
{
	va_list ap;

	p->error = error;
	va_start(ap, fmt);
	vsnprintf(p->desc, sizeof(p->desc), fmt, ap);
	va_end(ap);
}

/* The shape of a raw tensor: 1 to 3 positive ints into dims; their product in *ret_n, at
 * most 3 x max_pixels. */
static bool raw_shape(json_t *js, size_t max_pixels, int64_t *dims, int *ret_ndim, size_t *ret_n)
{
	size_t i, n = 1;
	json_t *v;

	if (!json_is_array(js) || json_array_size(js) < 1 || json_array_size(js) > 3)
		return false;
	json_array_foreach(js, i, v)
	{
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > MIME_IMAGE_MAX_SIDE)
			return false;
		dims[i] = json_integer_value(v);
		n *= (size_t)dims[i];
	}
	*ret_ndim = (int)json_array_size(js);
	*ret_n = n;
	return n <= max_pixels * 3;
}

/* A raw tensor into out: "u8" is an image [H,W] or [H,W,C] (C 1 or 3, HWC) preprocessed
 * like a decoded file; "f32" is the network input itself, [C,H,W] exactly as the task's
 * input spec, little endian. */
static void prep_raw(struct prep *p, const struct mime_input_spec *spec, const uint8_t *bytes,
                     size_t n_bytes, float *out)
{
	struct mime_errinfo ei = {0};
	struct mime_image img = {0};
	size_t n = p->n_elems;
	int r;

	if (strcmp(p->format, "f32") == 0) {
		if (p->ndim != 3 || p->dims[0] != spec->channels || p->dims[1] != spec->height ||
		    p->dims[2] != spec->width)
			return prep_fail(p, MIMED_ERR_INVALID_IMAGE,
			                 "'%s': an f32 tensor must have the task's input shape "
			                 "[%d,%d,%d]",
			                 p->name, spec->channels, spec->height, spec->width);
		if (n_bytes != n * 4)
			return prep_fail(
				p, MIMED_ERR_INVALID_IMAGE,
				"'%s': shape [%d,%d,%d] needs %zu bytes of float32, got %zu",
				p->name, spec->channels, spec->height, spec->width, n * 4, n_bytes);
		for (size_t i = 0; i < n; i++) {
			uint32_t u = (uint32_t)bytes[4 * i] | (uint32_t)bytes[4 * i + 1] << 8 |
			             (uint32_t)bytes[4 * i + 2] << 16 |
			             (uint32_t)bytes[4 * i + 3] << 24;
			float f;

			memcpy(&f, &u, sizeof(f));
			if (!isfinite(f))
				return prep_fail(p, MIMED_ERR_INVALID_IMAGE,
				                 "'%s': element %zu is not a finite number",
				                 p->name, i);
			out[i] = f;
		}
		return;
	}
	if (p->ndim == 1 || (p->ndim == 3 && p->dims[2] != 1 && p->dims[2] != 3))
		return prep_fail(p, MIMED_ERR_INVALID_IMAGE,
		                 "'%s': a u8 image is [H,W] or [H,W,C] with C 1 or 3", p->name);
	if (n_bytes != n)
		return prep_fail(p, MIMED_ERR_INVALID_IMAGE,
		                 "'%s': shape %lldx%lldx%lld needs %zu bytes, got %zu", p->name,
		                 (long long)p->dims[0], (long long)p->dims[1],
		                 (long long)p->dims[2], n, n_bytes);
	img.height = (int)p->dims[0];
	img.width = (int)p->dims[1];
	img.channels = (int)p->dims[2];
	img.pixels = malloc(n * sizeof(float));
	if (!img.pixels)
		return prep_fail(p, MIMED_ERR_INTERNAL, "out of memory");
	for (size_t i = 0; i < n; i++)
		img.pixels[i] = (float)bytes[i] / 255.0f;
	r = mime_image_preprocess(&img, spec, out, &ei);
	mime_image_free(&img);
	if (r < 0)
		prep_fail(p, MIMED_ERR_INVALID_IMAGE, "'%s': %s: %s", p->name, mime_strerror(r),
		          ei.msg);
}

/* The thread-pool half: everything that costs CPU in proportion to the image. */
static void prep_work(uv_work_t *w)
{
	struct prep *p = container_of(w, struct prep, work);
	const struct mime_input_spec *spec = &p->req->rt->manifest->tasks[p->req->task].input;
	struct mime_errinfo ei = {0};
	struct mime_image img;
	uint8_t *bytes;
	size_t n_bytes;
	int r;

	r = mimed_base64_decode(json_string_value(p->image), json_string_length(p->image),
	                        p->max_bytes, &bytes, &n_bytes);
	if (r == -ENOMEM)
		return prep_fail(p, MIMED_ERR_INTERNAL, "out of memory");
	if (r < 0)
		return prep_fail(p, MIMED_ERR_INVALID_IMAGE, "'%s' is not valid base64", p->name);
	if (p->format && (strcmp(p->format, "u8") == 0 || strcmp(p->format, "f32") == 0)) {
		prep_raw(p, spec, bytes, n_bytes, p->req->input);
		free(bytes);
		return;
	}
	if (p->format && !check_magic(bytes, n_bytes, p->format)) {
		free(bytes);
		return prep_fail(p, MIMED_ERR_INVALID_IMAGE, "'%s' is not a %s file", p->name,
		                 p->format);
	}
	r = mime_image_decode_max(bytes, n_bytes, p->max_pixels, &img, &ei);
	free(bytes);
	if (r < 0)
		return prep_fail(p, MIMED_ERR_INVALID_IMAGE, "'%s': %s: %s%s", p->name,
		                 mime_strerror(r), ei.msg,
		                 r == MIME_ETOOBIG ? " (limits.max_pixels)" : "");
	r = mime_image_preprocess(&img, spec, p->req->input, &ei);
	mime_image_free(&img);
	if (r < 0)
		prep_fail(p, MIMED_ERR_INVALID_IMAGE, "'%s': %s: %s", p->name, mime_strerror(r),
		          ei.msg);
}

static void enqueue(struct mimed *d, struct mimed_call *call);

/* The loop's half: once every item of the call is decoded, queue them all or fail. */
static void prep_done(uv_work_t *w, int status)
{
	struct prep *p = container_of(w, struct prep, work);
	struct mimed_call *call = p->call;
	struct mimed *d = call->conn->d;

	if (p->error && !call->error) {
		call->error = p->error;
		snprintf(call->error_desc, sizeof(call->error_desc), "%s", p->desc);
	}
	json_decref(p->image);
	free(p);
	if (--call->n_preparing > 0)
		return;
	if (call->error)
		call_error_desc(call, call->error, "%s", call->error_desc);
	else if (call->conn->closing)
		call_error_desc(call, MIMED_ERR_INTERNAL, "cancelled");
	else
		enqueue(d, call);
}

/* Checks one item's parameters (task, top_k, phase, format, shape, image) on the loop
 * thread, fills req and makes its struct prep; on failure replies and returns false.
 * prefix names the item in messages ("" or "items[3].") */
static bool req_check(struct mimed *d, struct mimed_call *call, struct mimed_req *req, json_t *item,
                      const char *prefix, uint64_t deadline_ns, struct prep **ret_prep)
{
	static const char *const formats[] = {"png", "pgm", "ppm", "u8", "f32"};
	struct mimed_runtime *rt = d->rt;
	json_t *jt = json_object_get(item, "task"), *ji = json_object_get(item, "image");
	json_t *jf = json_object_get(item, "format");
	json_int_t top = TOP_K_DEFAULT, phase = 0;
	const char *format = NULL;
	struct prep *p;
	char name[64];
	int t;

	snprintf(name, sizeof(name), "%stask", prefix);
	if (!json_is_string(jt)) {
		call_invalid_param(call, name, "'%s' must be a task name (see ListTasks)", name);
		return false;
	}
	t = mime_manifest_task(rt->manifest, json_string_value(jt));
	if (t < 0 || !rt->enabled[t]) {
		call_error(call, "io.mime.TaskNotFound",
		           json_pack("{s:s}", "task", json_string_value(jt)));
		return false;
	}
	if (!get_int(item, "top_k", prefix, 1, MIMED_MAX_TOP_K, &top, call))
		return false;
	if (!get_int(item, "phase", prefix, 1, rt->n_phases, &phase, call))
		return false;
	/* A named phase that needs more memory than the budget in force allows is refused,
	 * unless the daemon is in it (or above) anyway or it is phase 1, the floor. */
	if (phase > 1 && phase > d->phase && d->memory_budget_now &&
	    predicted_rss(d, (int)phase) > d->memory_budget_now) {
		call_error(
			call, MIMED_ERR_PHASE,
			json_pack("{s:i,s:s}", "phase", (int)phase, "description",
		                  "the phase needs more memory than the memory budget in force"));
		return false;
	}
	snprintf(name, sizeof(name), "%sformat", prefix);
	if (jf && !json_is_null(jf)) {
		for (size_t i = 0; json_is_string(jf) && i < sizeof(formats) / sizeof(formats[0]);
		     i++)
			if (strcmp(json_string_value(jf), formats[i]) == 0)
				format = formats[i];
		if (!format) {
			call_invalid_param(call, name, "'%s' must be png, pgm, ppm, u8 or f32",
			                   name);
			return false;
		}
	}
	snprintf(name, sizeof(name), "%simage", prefix);
	if (!json_is_string(ji)) {
		call_invalid_param(call, name, "'%s' must be the image file's bytes in base64",
		                   name);
		return false;
	}
	p = calloc(1, sizeof(*p));
	req->input = malloc((size_t)rt->input_floats * sizeof(float));
	req->top_class = malloc((size_t)top * sizeof(int));
	req->top_prob = malloc((size_t)top * sizeof(float));
	if (!p || !req->input || !req->top_class || !req->top_prob) {
		free(p);
		call_error_desc(call, MIMED_ERR_INTERNAL, "out of memory");
		return false;
	}
	p->dims[0] = p->dims[1] = p->dims[2] = 1;
	if (format && (strcmp(format, "u8") == 0 || strcmp(format, "f32") == 0) &&
	    !raw_shape(json_object_get(item, "shape"), (size_t)d->cfg.max_pixels, p->dims, &p->ndim,
	               &p->n_elems)) {
		free(p);
		snprintf(name, sizeof(name), "%sshape", prefix);
		call_invalid_param(call, name,
		                   "a raw tensor needs '%s': 1 to 3 positive sizes ([H,W] or "
		                   "[H,W,C] for u8, [C,H,W] for f32), at most %lld elements (3 x "
		                   "limits.max_pixels)",
		                   name, 3LL * d->cfg.max_pixels);
		return false;
	}
	p->call = call;
	p->req = req;
	p->image = json_incref(ji);
	p->format = format;
	p->max_bytes = d->cfg.max_message_bytes;
	p->max_pixels = d->cfg.max_pixels;
	snprintf(p->name, sizeof(p->name), "%simage", prefix);
	req->call = call;
	req->rt = rt;
	rt->refs++;
	req->want_phase = (int)phase;
	req->q.key = mimed_runtime_key(rt, t, (int)phase);
	req->task = t;
	req->top_k = (int)top;
	req->deadline_ns = deadline_ns;
	req->accepted_ns = mimed_now_ns();
	req->status = MIMED_REQ_QUEUED;
	*ret_prep = p;
	return true;
}

/* Pixels an image file declares in its header (PNG's IHDR, the P5/P6 text header), read
 * from the first bytes of its base64; 0 when unknown (a comment, a short or odd header). */
static uint64_t declared_pixels(json_t *image)
{
	size_t n = json_string_length(image), len = 0, i = 2;
	uint64_t dim[2] = {0, 0};
	uint8_t *h = NULL;

	if (mimed_base64_decode(json_string_value(image), n < 96 ? n : 96, 96, &h, &len) < 0)
		return 0;
	if (len >= 24 && memcmp(h, "\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16) == 0) {
		for (int k = 0; k < 2; k++)
			dim[k] = (uint64_t)h[16 + 4 * k] << 24 | (uint64_t)h[17 + 4 * k] << 16 |
			         (uint64_t)h[18 + 4 * k] << 8 | h[19 + 4 * k];
	} else if (len >= 2 && h[0] == 'P' && (h[1] == '5' || h[1] == '6')) {
		for (int k = 0; k < 2; k++) {
			while (i < len &&
			       (h[i] == ' ' || h[i] == '\t' || h[i] == '\n' || h[i] == '\r'))
				i++;
			while (i < len && h[i] >= '0' && h[i] <= '9' && dim[k] < 1000000)
				dim[k] = dim[k] * 10 + (uint64_t)(h[i++] - '0');
		}
		if (i >= len) /* the number may go on past what we decoded */
			dim[0] = 0;
	}
	free(h);
	return dim[0] * dim[1];
}

/* Small image files are decoded right on the loop thread: for a 28x28 image (~20 us of
 * work) the thread pool's two hand-offs cost more than the work. Small means a short
 * message and few pixels by the file's own header, so the work stays bounded (a
 * decompression bomb still goes to the pool); raw tensors always go to the pool. */
#define INLINE_MAX_BASE64 16384
#define INLINE_MAX_PIXELS 65536

static bool prep_is_small(const struct prep *p)
{
	uint64_t px;

	if ((p->format && (strcmp(p->format, "u8") == 0 || strcmp(p->format, "f32") == 0)) ||
	    json_string_length(p->image) > INLINE_MAX_BASE64 ||
	    p->req->rt->input_floats > INLINE_MAX_PIXELS)
		return false;
	px = declared_pixels(p->image);
	return px > 0 && px <= INLINE_MAX_PIXELS;
}

/* Hands the checked items of call to the thread pool, or decodes the small ones at once
 * (all of them: the call is not touched after the last one starts, which may finish it). */
static void prep_start(struct mimed *d, struct mimed_call *call, struct prep **preps, int n)
{
	call->n_preparing = n;
	for (int i = 0; i < n; i++) {
		if (prep_is_small(preps[i]) ||
		    uv_queue_work(&d->loop, &preps[i]->work, prep_work, prep_done) < 0) {
			prep_work(&preps[i]->work);
			prep_done(&preps[i]->work, 0);
		}
	}
}

static void preps_free(struct prep **preps, int n)
{
	for (int i = 0; i < n; i++) {
		json_decref(preps[i]->image);
		free(preps[i]);
	}
}

/* May the worker write call's reply itself? Only an Infer that expects a reply, when libuv
 * holds nothing of its connection and every call before it in the FIFO is a direct one
 * (the loop writes nothing for those unless their worker left something to write, and then
 * the gate below stops this one): its worker writes only once the call just before it went
 * out whole (after_seq), else it leaves the whole reply to the loop. So a client that
 * calls again as soon as it read a reply gets a direct one again, even before the loop
 * has seen the previous batch. Anything else the loop writes, in order, as before. */
static bool direct_ok(struct mimed_conn *c, struct mimed_call *call)
{
	struct mimed_call *prev = NULL;

	if (call->kind != MIMED_CALL_INFER || call->oneway || c->closing || c->wfd < 0 ||
	    c->pipe.write_queue_size > 0)
		return false;
	for (struct mimed_call *p = c->head; p != call; p = p->next) {
		if (!p->direct)
			return false;
		prev = p;
	}
	call->after_seq = prev ? prev->seq : __atomic_load_n(&c->direct_seq, __ATOMIC_ACQUIRE);
	call->seq = ++c->next_seq;
	return true;
}

static void enqueue(struct mimed *d, struct mimed_call *call)
{
	struct mimed_qitem *items[MAX_BATCH_ITEMS];
	int r;

	for (int i = 0; i < call->n_items; i++)
		items[i] = &call->reqs[i].q;
	/* before the push: a worker may take it at once */
	call->direct = direct_ok(call->conn, call);
	r = mimed_queue_push(&d->queue, items, (size_t)call->n_items);
	if (r < 0)
		call->direct = false; /* the loop answers it */
	if (r == -EAGAIN) {
		d->n_busy++;
		call_error(
			call, MIMED_ERR_BUSY,
			json_pack("{s:I}", "queue_depth", (json_int_t)mimed_queue_len(&d->queue)));
		return;
	}
	if (r < 0) {
		call_error(call, MIMED_ERR_SHUTTING_DOWN, NULL);
		return;
	}
	call->n_pending = call->n_items;
	d->n_requests += (uint64_t)call->n_items;
}

static uint64_t deadline_of(json_int_t ms)
{
	return ms > 0 ? mimed_now_ns() + (uint64_t)ms * 1000000u : 0;
}

static void m_infer(struct mimed *d, struct mimed_conn *c, struct mimed_varlink_call *vc)
{
	struct mimed_call *call = call_new(c, MIMED_CALL_INFER, 1, vc->oneway);
	json_int_t deadline_ms = 0;
	struct prep *p;

	if (!call) {
		conn_close(c, false);
		return;
	}
	if (!get_int(vc->params, "deadline_ms", "", 0, 86400000, &deadline_ms, call))
		return;
	if (!req_check(d, call, &call->reqs[0], vc->params, "", deadline_of(deadline_ms), &p))
		return;
	mimed_workers_prepare(d, d->rt, call->reqs[0].task);
	prep_start(d, call, &p, 1);
}

static void m_infer_batch(struct mimed *d, struct mimed_conn *c, struct mimed_varlink_call *vc)
{
	json_t *items = json_object_get(vc->params, "items");
	struct prep *preps[MAX_BATCH_ITEMS];
	json_int_t deadline_ms = 0;
	struct mimed_call *call;
	size_t n = json_array_size(items);
	uint64_t deadline;

	call = call_new(c, MIMED_CALL_INFER_BATCH, json_is_array(items) ? (int)n : 0, vc->oneway);
	if (!call) {
		conn_close(c, false);
		return;
	}
	if (!json_is_array(items) || n < 1 || n > MAX_BATCH_ITEMS || n > d->cfg.queue_capacity) {
		call->n_items = 0;
		call_invalid_param(
			call, "items", "'items' must be an array of 1 to %zu {task, image, top_k?}",
			d->cfg.queue_capacity < MAX_BATCH_ITEMS ? d->cfg.queue_capacity
								: (size_t)MAX_BATCH_ITEMS);
		return;
	}
	if (!get_int(vc->params, "deadline_ms", "", 0, 86400000, &deadline_ms, call))
		return;
	deadline = deadline_of(deadline_ms);
	/* Every item is checked before any is decoded, so a bad one fails the call at once. */
	for (size_t i = 0; i < n; i++) {
		json_t *item = json_array_get(items, i);
		char prefix[32];

		snprintf(prefix, sizeof(prefix), "items[%zu].", i);
		if (!json_is_object(item)) {
			preps_free(preps, (int)i);
			call_invalid_param(call, "items", "items[%zu] must be an object", i);
			return;
		}
		if (!req_check(d, call, &call->reqs[i], item, prefix, deadline, &preps[i])) {
			preps_free(preps, (int)i);
			return;
		}
	}
	prep_start(d, call, preps, (int)n);
}

static void m_list_tasks(struct mimed *d, struct mimed_call *call)
{
	const struct mime_manifest *man = d->rt->manifest;
	json_t *tasks = json_array();

	for (int i = 0; i < man->n_tasks; i++) {
		const struct mime_task_spec *t = &man->tasks[i];
		static const char *const thr[] = {"none", "element", "channel"};
		json_t *classes = json_array(), *o;

		if (!d->rt->enabled[i])
			continue;
		for (int k = 0; k < t->n_classes; k++)
			json_array_append_new(classes, json_string(t->class_names[k]));
		o = json_pack("{s:s,s:o,s:i,s:i,s:i,s:s}", "name", t->name, "classes", classes,
		              "channels", t->input.channels, "height", t->input.height, "width",
		              t->input.width, "thresholds", thr[t->thresholds % 3]);
		if (o && t->accuracy >= 0)
			json_object_set_new(o, "accuracy", json_real(t->accuracy));
		json_array_append_new(tasks, o);
	}
	call_ok(call, json_pack("{s:o}", "tasks", tasks));
}

/* The avg10 figures (%) of a PSI file's "some" and "full" lines ("some avg10=0.12
 * avg60=..."), < 0 for a line it lacks; false when it cannot be read. */
static bool psi_avg10(const char *path, double *ret_some, double *ret_full)
{
	char line[256], kind[8];
	double avg10;
	FILE *f = fopen(path, "re");

	*ret_some = *ret_full = -1;
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%7s avg10=%lf", kind, &avg10) == 2) {
			if (strcmp(kind, "some") == 0)
				*ret_some = avg10;
			else if (strcmp(kind, "full") == 0)
				*ret_full = avg10;
		}
	fclose(f);
	return true;
}

/* A PSI file's avg10 figures into status as {"some_avg10":..,"full_avg10":..}, unless a
 * figure was set already (the cgroup's comes before the system's). */
static void memory_pressure(json_t *status, const char *path)
{
	double some, full;
	json_t *psi;

	if (json_object_get(status, "memory_pressure") || !psi_avg10(path, &some, &full) ||
	    (some < 0 && full < 0))
		return;
	psi = json_object();
	if (some >= 0)
		json_object_set_new(psi, "some_avg10", json_real(some));
	if (full >= 0)
		json_object_set_new(psi, "full_avg10", json_real(full));
	json_object_set_new(status, "memory_pressure", psi);
}

/* The daemon's memory cgroup (daemon/cgroup.h); version 0 when there is none or
 * /proc/self/cgroup cannot be read. */
static void cgroup_read(struct mimed *d, struct mimed_cgroup_memory *cg)
{
	int r = mimed_cgroup_memory_read("", cg);
	int err = r < 0 ? r : cg->limits_error;

	if (r < 0)
		memset(cg, 0, sizeof(*cg));
	if (!err) {
		d->cgroup_stale = false;
		return;
	}
	/* An unreadable file is not a vanished limit (e.g. out of descriptors): the last
	 * known limits stay in force (cgroup_stale) until a read succeeds. */
	if (!d->cgroup_stale)
		mimed_log(d, LOG_WARNING,
		          "cgroup memory limits: %s, keeping the last known (max %llu, high %llu "
		          "bytes; 0: none)",
		          strerror(-err), (unsigned long long)d->cgroup_max,
		          (unsigned long long)d->cgroup_high);
	d->cgroup_stale = true;
	if (d->cgroup_seen) {
		cg->max = d->cgroup_max;
		cg->high = d->cgroup_high;
	}
}

/* The tighter of the set budget and the cgroup's limits (cg already read). */
static uint64_t budget_in_force(const struct mimed *d, const struct mimed_cgroup_memory *cg,
                                const char **ret_source)
{
	uint64_t b = d->budget_memory_bytes;
	const char *source = b ? d->budget_memory_source : "none";

	if (cg->high && (!b || cg->high < b)) {
		b = cg->high;
		source = cg->version == 1 ? "cgroup memory.soft_limit_in_bytes"
		                          : "cgroup memory.high";
	}
	if (cg->max && (!b || cg->max < b)) {
		b = cg->max;
		source = cg->version == 1 ? "cgroup memory.limit_in_bytes" : "cgroup memory.max";
	}
	*ret_source = source;
	return b;
}

static void cgroup_memory(struct mimed *d, json_t *status)
{
	struct mimed_cgroup_memory cg;
	const char *source;
	uint64_t eff;

	cgroup_read(d, &cg);
	json_object_set_new(status, "cgroup_version", json_integer(cg.version));
	if (d->cgroup_stale)
		json_object_set_new(status, "cgroup_stale", json_true());
	if (cg.dir[0])
		json_object_set_new(status, "cgroup_dir", json_string(cg.dir));
	if (cg.max)
		json_object_set_new(status, "cgroup_memory_max", json_integer((json_int_t)cg.max));
	if (cg.high)
		json_object_set_new(status, "cgroup_memory_high",
		                    json_integer((json_int_t)cg.high));
	if (cg.current)
		json_object_set_new(status, "cgroup_memory_current",
		                    json_integer((json_int_t)cg.current));
	if (cg.pressure[0])
		memory_pressure(status, cg.pressure);
	memory_pressure(status, "/proc/pressure/memory");
	eff = budget_in_force(d, &cg, &source);
	if (eff)
		json_object_set_new(status, "memory_budget_bytes", json_integer((json_int_t)eff));
	json_object_set_new(status, "memory_budget_source", json_string(source));
}

static uint64_t rss_bytes(void)
{
	unsigned long size, resident;
	FILE *f = fopen("/proc/self/statm", "re");
	int n;

	if (!f)
		return 0;
	n = fscanf(f, "%lu %lu", &size, &resident);
	fclose(f);
	return n == 2 ? (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

static json_t *budgets_json(struct mimed *d)
{
	json_t *b = json_object();

	if (d->budget_memory_bytes)
		json_object_set_new(b, "memory_bytes",
		                    json_integer((json_int_t)d->budget_memory_bytes));
	if (d->budget_latency_ms > 0)
		json_object_set_new(b, "latency_ms", json_real(d->budget_latency_ms));
	return b;
}

/* What one worker's engines take in phase p (1..n_phases; 0: the parent, never entered). */
static int64_t phase_memory(const struct mimed_runtime *rt, int p)
{
	if (p < 1)
		return rt->has_phases ? rt->parent_memory_bytes : rt->phase_memory_bytes[0];
	return rt->phase_memory_bytes[p > rt->n_phases ? rt->n_phases - 1 : p - 1];
}

/* The bundle pages phase p's task tensors take in place (shared by the workers). */
static int64_t phase_mapped(const struct mimed_runtime *rt, int p)
{
	return rt->has_phases && p >= 1 && p <= rt->n_phases ? rt->phase_mapped_bytes[p - 1] : 0;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* The daemon's RSS that its phases do not explain: RSS now minus what every worker's
 * engines take in the phase each is in and the bundle pages of the daemon's phase's task
 * tensors (the rest: libraries, heap, connections, other phases' pages not yet dropped,
 * and the error of the phase figures). Recorded in d->memory_base_now. */
static uint64_t memory_base(struct mimed *d)
{
	const struct mimed_runtime *rt = d->rt;
	uint64_t rss = rss_bytes(), known = 0;

	for (int w = 0; w < rt->n_workers; w++) {
		int64_t m =
			phase_memory(rt, __atomic_load_n(&rt->engine_phase[w], __ATOMIC_RELAXED));

		known = sat_add(known, m > 0 ? (uint64_t)m : 0);
	}
	known = sat_add(known, (uint64_t)phase_mapped(rt, d->phase));
	d->memory_base_now = rss > known ? rss - known : 0;
	return d->memory_base_now;
}

/* The RSS the daemon is predicted to have with every worker in phase p: the base measured
 * at the last policy evaluation, plus every worker's engines in p, plus p's task tensor
 * pages (saturating: a manifest may claim any size). */
static uint64_t predicted_rss(const struct mimed *d, int p)
{
	int64_t m = phase_memory(d->rt, p);
	uint64_t engines = m > 0 ? (uint64_t)m : 0, n = (uint64_t)d->rt->n_workers;

	engines = engines > UINT64_MAX / n ? UINT64_MAX : engines * n;
	return sat_add(sat_add(d->memory_base_now, engines), (uint64_t)phase_mapped(d->rt, p));
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* What each phase of d's runtime is known to take, for the policy: memory as the RSS the
 * daemon would have in it (predicted_rss, from a base measured now); p95 latency as
 * measured here over the answers of the last policy.latency_window when the phase
 * has any ("measured"), else the manifest's latency_ms times the median ratio of measured
 * p95 to manifest latency over the phases measured in that window (1 when none: the
 * manifest times a forward, the daemon arrival to reply), "predicted"; else unknown (-1,
 * assumed to fit). Samples age out, so a phase that was slow once (a cold start, a busy
 * moment) is tried again once its samples are older than the window. ret_src may be NULL. */
static void policy_table(struct mimed *d, struct mimed_policy_phase *ret_ph, const char **ret_src)
{
	const struct mimed_runtime *rt = d->rt;
	static const double p95 = 95;
	uint64_t now = mimed_now_ns(), win = d->cfg.policy_latency_window_ms * 1000000ull;
	uint64_t since = now > win ? now - win : 0;
	double ratio[MIMED_MAX_PHASES], correction = 1;
	int n_ratio = 0;

	memory_base(d);
	for (int i = 0; i < rt->n_phases; i++) {
		double manifest = rt->has_phases ? rt->manifest->phases[i].latency_ms : -1;
		uint64_t us, pr = predicted_rss(d, i + 1);

		ret_ph[i].memory_bytes = pr > INT64_MAX ? INT64_MAX : (int64_t)pr;
		ret_ph[i].p95_ms = -1;
		if (ret_src)
			ret_src[i] = NULL;
		if (mimed_latency_percentiles_since(&d->phase_latency[i], since, &p95, 1, &us)) {
			ret_ph[i].p95_ms = (double)us / 1000.0;
			if (ret_src)
				ret_src[i] = "measured";
			if (manifest > 0)
				ratio[n_ratio++] = ret_ph[i].p95_ms / manifest;
		}
	}
	if (n_ratio) {
		qsort(ratio, (size_t)n_ratio, sizeof(ratio[0]), cmp_double);
		correction = n_ratio % 2 ? ratio[n_ratio / 2]
		                         : (ratio[n_ratio / 2 - 1] + ratio[n_ratio / 2]) / 2;
	}
	d->latency_correction = n_ratio ? correction : 0;
	for (int i = 0; i < rt->n_phases; i++) {
		double manifest = rt->has_phases ? rt->manifest->phases[i].latency_ms : -1;

		if (ret_ph[i].p95_ms < 0 && manifest >= 0) {
			ret_ph[i].p95_ms = manifest * correction;
			if (ret_src)
				ret_src[i] = "predicted";
		}
	}
}

void mimed_phase_set(struct mimed *d, int to, bool pinned, const char *cause)
{
	int from = d->phase;

	to = to < 1 ? 1 : to > d->rt->n_phases ? d->rt->n_phases : to;
	d->phase = to;
	d->pinned = pinned;
	d->phase_cause = cause;
	mimed_policy_init(&d->policy, to);
	__atomic_store_n(&d->desired_phase, to, __ATOMIC_RELEASE);
	mimed_workers_idle_switch(d);
	mimed_log(d, LOG_NOTICE, "phase %d -> %d (%s), cause=%s", from, to,
	          pinned ? "pinned" : "auto", cause);
	mimed_server_emit(d, "phase",
	                  json_pack("{s:i,s:i,s:b,s:s}", "from", from, "to", to, "pinned", pinned,
	                            "cause", cause));
}

/* The warning for a memory budget below the RSS predicted in phase 1 (ph: policy_table's). */
static void warn_memory_below(struct mimed *d, uint64_t budget, const char *src,
                              const struct mimed_policy_phase *ph)
{
	mimed_log(d, LOG_WARNING,
	          "memory budget %llu bytes (%s) is below the RSS predicted in phase 1 (%lld "
	          "bytes: %llu outside the phases + %d x %lld + %lld of task tensor pages); "
	          "staying at the lowest phase",
	          (unsigned long long)budget, src, (long long)ph[0].memory_bytes,
	          (unsigned long long)d->memory_base_now, d->rt->n_workers,
	          (long long)phase_memory(d->rt, 1), (long long)phase_mapped(d->rt, 1));
}

/* Memory pressure (PSI "some avg10" of the cgroup, else of the system) as a budget: at or
 * above budgets.memory_pressure the policy takes one phase down, at most one step per
 * MIMED_PRESSURE_STEP_MS (the avg10 window: the figure needs that long to show the step),
 * and climbs no higher until the pressure falls below half of it (hysteresis). Returns
 * the phase fit may be at most; *cause becomes "memory pressure" when it lowers it. */
static int pressure_cap(struct mimed *d, const struct mimed_cgroup_memory *cg, int fit,
                        const char **cause)
{
	double limit = d->cfg.memory_pressure_pct, psi, full;
	uint64_t now = mimed_now_ns();

	if (limit <= 0) {
		d->pressure_high = false; /* the key was cleared */
		return fit;
	}
	psi_avg10(cg->pressure[0] ? cg->pressure : "/proc/pressure/memory", &psi, &full);
	if (psi < 0)
		return fit;
	if (psi >= limit) {
		if (!d->pressure_high)
			mimed_log(d, LOG_WARNING,
			          "memory pressure: some avg10 %.2f%% >= %.2f%% "
			          "(budgets.memory_pressure): "
			          "stepping down, a phase per %d s",
			          psi, limit, MIMED_PRESSURE_STEP_MS / 1000);
		d->pressure_high = true;
		if (d->phase > 1 && fit >= d->phase &&
		    now - d->last_pressure_step_ns >= MIMED_PRESSURE_STEP_MS * 1000000ull) {
			*cause = "memory pressure";
			return d->phase - 1;
		}
		return fit < d->phase ? fit : d->phase;
	}
	if (d->pressure_high && psi >= limit / 2)
		return fit < d->phase ? fit : d->phase;
	if (d->pressure_high)
		mimed_log(
			d, LOG_NOTICE,
			"memory pressure: some avg10 %.2f%%, below half of %.2f%%: phases may step "
			"up again",
			psi, limit);
	d->pressure_high = false;
	return fit;
}

/* One evaluation of the policy (see daemon/policy.h). event: the source of a budget change
 * to announce ("socket", "config"), NULL for none; a change of the cgroup's limits is
 * noticed and announced here (source "cgroup"). An announced change logs a budget below
 * phase 1 and emits a budget event, pinned or not; auto mode then takes the phase the
 * budgets allow. */
static void evaluate(struct mimed *d, const char *cause, const char *event)
{
	struct mimed_policy_phase ph[MIMED_MAX_PHASES];
	struct mimed_cgroup_memory cg;
	const char *src;
	uint64_t budget;
	bool below, mem_below;
	int fit, to;

	cgroup_read(d, &cg);
	budget = budget_in_force(d, &cg, &src);
	/* The cgroup's limits changed since the last evaluation (e.g. systemctl set-property
	 * MemoryHigh=): a budget change like any other. */
	if (!d->cgroup_stale && d->cgroup_seen &&
	    (cg.max != d->cgroup_max || cg.high != d->cgroup_high)) {
		mimed_log(d, LOG_NOTICE,
		          "cgroup memory limits changed: max %llu -> %llu, high %llu -> %llu bytes "
		          "(0: none); memory budget in force %llu bytes (%s)",
		          (unsigned long long)d->cgroup_max, (unsigned long long)cg.max,
		          (unsigned long long)d->cgroup_high, (unsigned long long)cg.high,
		          (unsigned long long)budget, src);
		event = cause = "cgroup";
	}
	if (!d->cgroup_stale) {
		d->cgroup_seen = true;
		d->cgroup_max = cg.max;
		d->cgroup_high = cg.high;
	}
	d->last_policy_ns = mimed_now_ns();
	d->memory_budget_now = budget;
	policy_table(d, ph, NULL); /* also the base named-phase refusals read */
	fit = mimed_policy_fit(ph, d->rt->n_phases, budget, d->budget_latency_ms, &below);
	mimed_policy_fit(ph, d->rt->n_phases, budget, 0, &mem_below);
	/* Nothing fits the memory budget: a warning at its change, or when it starts. */
	if (mem_below && (event || !d->memory_below))
		warn_memory_below(d, budget, src, ph);
	d->memory_below = mem_below;
	if (event)
		mimed_server_emit(d, "budget",
		                  json_pack("{s:o,s:s,s:I,s:s,s:b,s:I,s:i}", "budgets",
		                            budgets_json(d), "source", event, "memory_budget_bytes",
		                            (json_int_t)budget, "memory_budget_source", src,
		                            "memory_fits", !mem_below, "rss_bytes",
		                            (json_int_t)rss_bytes(), "phase", d->phase));
	if (d->pinned || d->shutting_down)
		return;
	if (below && !mem_below && !d->latency_below)
		mimed_log(d, LOG_WARNING,
		          "latency budget p95 %g ms is below what phase 1 takes (p95 %g ms); "
		          "staying at the lowest phase",
		          d->budget_latency_ms, ph[0].p95_ms);
	d->latency_below = below && !mem_below;
	/* After a step the policy took, the timer holds further steps down for
	 * policy.settle_evals evaluations: the workers switch, and the RSS follows their
	 * switches and the trims after them with a lag; a budget change acts at once. */
	fit = mimed_policy_hold(&d->policy, fit, strcmp(cause, "budget timer") == 0);
	fit = pressure_cap(d, &cg, fit, &cause);
	to = mimed_policy_step(&d->policy, fit, d->cfg.policy_up_evals);
	if (to != d->phase) {
		if (to < d->phase && strcmp(cause, "memory pressure") == 0)
			d->last_pressure_step_ns = mimed_now_ns();
		mimed_phase_set(d, to, false, cause);
		mimed_policy_stepped(&d->policy, d->cfg.policy_settle_evals);
	}
}

void mimed_policy_evaluate(struct mimed *d, const char *cause)
{
	evaluate(d, cause, NULL);
}

void mimed_budget_changed(struct mimed *d, const char *source)
{
	evaluate(d, "budget", source);
}

/* The phases and what the policy knows of each. */
static json_t *phases_json(struct mimed *d)
{
	struct mimed_policy_phase ph[MIMED_MAX_PHASES];
	const struct mimed_runtime *rt = d->rt;
	json_t *a = json_array();

	const char *src[MIMED_MAX_PHASES];

	policy_table(d, ph, src);
	for (int i = 0; i < rt->n_phases; i++) {
		json_t *o = json_pack("{s:i,s:s,s:I,s:s,s:I}", "phase", i + 1, "name",
		                      rt->has_phases ? rt->manifest->phases[i].name : "parent",
		                      "memory_bytes", (json_int_t)phase_memory(rt, i + 1),
		                      "memory_source",
		                      rt->phase_memory_measured[i] ? "measured" : "manifest",
		                      "predicted_rss_bytes", (json_int_t)ph[i].memory_bytes);

		if (o && rt->has_phases)
			json_object_set_new(o, "mapped_bytes",
			                    json_integer(phase_mapped(rt, i + 1)));

		if (o && ph[i].p95_ms >= 0) {
			json_object_set_new(o, "p95_ms", json_real(ph[i].p95_ms));
			json_object_set_new(o, "p95_source", json_string(src[i]));
		}
		json_array_append_new(a, o);
	}
	return a;
}

static void m_get_status(struct mimed *d, struct mimed_call *call)
{
	static const double p[] = {50, 95, 99};
	json_t *tasks = json_array(), *status, *energy;
	uint64_t pct[3];

	mimed_latency_percentiles(&d->latency, p, 3, pct);
	for (int i = 0; i < d->n_task_counts; i++)
		json_array_append_new(tasks, json_pack("{s:s,s:I}", "name", d->task_counts[i].name,
		                                       "requests",
		                                       (json_int_t)d->task_counts[i].requests));
	if (d->energy_batches) {
		const struct mime_energy_case_totals *t = d->energy_totals;

		energy = json_pack("{s:I,s:I,s:o,s:o,s:o,s:f,s:f,s:f,s:s}", "batches",
		                   (json_int_t)d->energy_batches, "pipelined_batches",
		                   (json_int_t)d->energy_pipelined, "case1", case_json(&t[0]),
		                   "case2", case_json(&t[1]), "case3", case_json(&t[2]),
		                   "saving_vs_case1", saving(t[0].e_total, t[2].e_total),
		                   "saving_vs_case2", saving(t[1].e_total, t[2].e_total),
		                   "speedup_vs_case1", saving(t[0].cycles, t[2].cycles), "unit",
		                   "MAC energy (normalised)");
	} else
		energy = json_string(d->rt->have_energy ? "no batches yet" : "unavailable");
	status = json_pack("{s:i,s:b,s:o,s:I,s:{s:I,s:I,s:I,s:I},s:I,s:I,s:i,s:i,s:I,s:i,"
	                   "s:I,s:I,s:I,s:I,s:I,s:o,s:f,s:s,s:o}",
	                   "phase", d->phase, "pinned", d->pinned, "budgets", budgets_json(d),
	                   "rss_bytes", (json_int_t)rss_bytes(), "latency", "count",
	                   (json_int_t)d->latency.total, "p50_us", (json_int_t)pct[0], "p95_us",
	                   (json_int_t)pct[1], "p99_us", (json_int_t)pct[2], "queue_depth",
	                   (json_int_t)mimed_queue_len(&d->queue), "queue_capacity",
	                   (json_int_t)d->cfg.queue_capacity, "workers", d->n_workers, "max_batch",
	                   d->cfg.max_batch, "max_wait_us", (json_int_t)d->cfg.max_wait_us,
	                   "connections", d->n_conns, "requests", (json_int_t)d->n_requests, "busy",
	                   (json_int_t)d->n_busy, "timeouts", (json_int_t)d->n_timeouts, "errors",
	                   (json_int_t)d->n_errors, "batches", (json_int_t)d->n_batches, "tasks",
	                   tasks, "uptime_s", (double)(mimed_now_ns() - d->start_ns) / 1e9,
	                   "bundle", d->rt->bundle_path, "energy", energy);
	if (status) {
		json_t *phases = json_array();

		for (int i = 0; i < MIMED_MAX_PHASES; i++) {
			struct mimed_latency *pl = &d->phase_latency[i];

			if (!pl->n)
				continue;
			mimed_latency_percentiles(pl, p, 3, pct);
			json_array_append_new(
				phases, json_pack("{s:i,s:I,s:I,s:I,s:I}", "phase", i + 1, "count",
			                          (json_int_t)pl->total, "p50_us",
			                          (json_int_t)pct[0], "p95_us", (json_int_t)pct[1],
			                          "p99_us", (json_int_t)pct[2]));
		}
		json_object_set_new(status, "latency_by_phase", phases);
		json_object_set_new(status, "n_phases", json_integer(d->rt->n_phases));
		json_object_set_new(status, "phases", phases_json(d));
		{
			json_t *wp = json_array();

			for (int w = 0; w < d->rt->n_workers; w++)
				json_array_append_new(
					wp, json_integer(__atomic_load_n(&d->rt->engine_phase[w],
				                                         __ATOMIC_RELAXED)));
			json_object_set_new(status, "worker_phases", wp);
		}
		if (d->latency_correction > 0)
			json_object_set_new(status, "latency_correction",
			                    json_real(d->latency_correction));
		json_object_set_new(status, "mode",
		                    json_string(d->rt->mode == MIMED_MODE_CONVENTIONAL
		                                        ? "conventional"
		                                        : "mime"));
		cgroup_memory(d, status);
	}
	call_ok(call, json_pack("{s:o}", "status", status));
}

static void m_set_budget(struct mimed *d, struct mimed_call *call, json_t *params)
{
	json_t *mem = json_object_get(params, "memory_bytes");
	json_t *lat = json_object_get(params, "latency_ms");

	if (mem && !json_is_null(mem) && (!json_is_integer(mem) || json_integer_value(mem) < 0)) {
		call_invalid_param(call, "memory_bytes", "'memory_bytes' must be an integer >= 0");
		return;
	}
	if (lat && !json_is_null(lat) &&
	    (!json_is_number(lat) || json_number_value(lat) < 0 ||
	     !isfinite(json_number_value(lat)))) {
		call_invalid_param(call, "latency_ms", "'latency_ms' must be a number >= 0");
		return;
	}
	if (mem && json_is_integer(mem)) {
		d->budget_memory_bytes = (uint64_t)json_integer_value(mem);
		d->budget_memory_source = "socket";
	}
	if (lat && json_is_number(lat))
		d->budget_latency_ms = json_number_value(lat);
	mimed_log(d, LOG_NOTICE, "budget memory_bytes=%llu latency_ms=%g source=socket uid=%u",
	          (unsigned long long)d->budget_memory_bytes, d->budget_latency_ms,
	          (unsigned)call->conn->uid);
	mimed_budget_changed(d, "socket");
	call_ok(call, json_pack("{s:o}", "budgets", budgets_json(d)));
}

static void m_set_phase(struct mimed *d, struct mimed_call *call, json_t *params)
{
	json_t *p = json_object_get(params, "phase");
	bool pinned;

	if (json_is_string(p) && strcmp(json_string_value(p), "auto") == 0) {
		pinned = false;
	} else if (json_is_integer(p) && json_integer_value(p) >= 1 &&
	           json_integer_value(p) <= d->rt->n_phases) {
		pinned = true;
	} else {
		call_invalid_param(call, "phase",
		                   "'phase' must be \"auto\" or a phase of the bundle (1..%d)",
		                   d->rt->n_phases);
		return;
	}
	mimed_log(d, LOG_NOTICE, "SetPhase %s (socket, uid=%u)", pinned ? "pin" : "auto",
	          (unsigned)call->conn->uid);
	if (pinned) {
		mimed_phase_set(d, (int)json_integer_value(p), true, "SetPhase");
	} else if (d->pinned) {
		/* Unpinned: the policy decides from the phase in force, at once. */
		mimed_phase_set(d, d->phase, false, "SetPhase");
		mimed_policy_evaluate(d, "SetPhase auto");
	}
	call_ok(call, json_pack("{s:i,s:b}", "phase", d->phase, "pinned", d->pinned));
}

void mimed_server_reload_reply(struct mimed_call *call, const char *error, const char *err)
{
	if (!error)
		call_ok(call, NULL);
	else if (err)
		call_error_desc(call, error, "%s", err);
	else
		call_error(call, error, NULL);
}

static void m_get_info(struct mimed *d, struct mimed_call *call)
{
	call_ok(call, json_pack("{s:s,s:s,s:s,s:s,s:[s,s]}", "vendor", "mime", "product", "mimed",
	                        "version", MIMED_VERSION, "url", "", "interfaces",
	                        "org.varlink.service", "io.mime"));
}

static void m_describe(struct mimed *d, struct mimed_call *call, json_t *params)
{
	const char *iface = json_string_value(json_object_get(params, "interface"));

	if (!iface) {
		call_invalid_param(call, "interface", "'interface' must be a string");
		return;
	}
	if (strcmp(iface, "io.mime") == 0)
		call_ok(call, json_pack("{s:s}", "description", mimed_interface_io_mime));
	else if (strcmp(iface, "org.varlink.service") == 0)
		call_ok(call, json_pack("{s:s}", "description", service_interface));
	else
		call_error(call, MIMED_ERR_IFACE_NOT_FOUND, json_pack("{s:s}", "interface", iface));
}

static void m_watch(struct mimed *d, struct mimed_call *call)
{
	size_t len = 0;
	char *msg;

	d->n_watchers++;
	msg = mimed_varlink_reply(
		json_pack("{s:{s:s,s:I,s:{s:i,s:b,s:o}}}", "event", "kind", "watching", "time_us",
	                  (json_int_t)((mimed_now_ns() - d->start_ns) / 1000), "data", "phase",
	                  d->phase, "pinned", d->pinned, "budgets", budgets_json(d)),
		true, &len);
	if (call->conn->head == call)
		conn_write(call->conn, msg, len);
	else
		free(msg);
}

static bool admin_only(struct mimed_conn *c, struct mimed_call *call, const char *method)
{
	char desc[256];

	if (c->admin)
		return true;
	mimed_log(c->d, LOG_NOTICE, "%s refused to uid=%u pid=%d (not root, ours or admin group)",
	          method, (unsigned)c->uid, (int)c->pid);
	if (c->d->cfg.admin_group)
		snprintf(desc, sizeof(desc),
		         "%s is an admin method: for root, uid %u (mimed's) and members of group "
		         "'%s' (access.admin_group); you are uid %u",
		         method, (unsigned)getuid(), c->d->cfg.admin_group, (unsigned)c->uid);
	else
		snprintf(desc, sizeof(desc),
		         "%s is an admin method: for root and uid %u (mimed's; access.admin_group "
		         "is not set); you are uid %u",
		         method, (unsigned)getuid(), (unsigned)c->uid);
	call_error(call, MIMED_ERR_PERMISSION,
	           json_pack("{s:s,s:s}", "method", method, "description", desc));
	return false;
}

static void dispatch(struct mimed *d, struct mimed_conn *c, struct mimed_varlink_call *vc)
{
	char iface[128];
	const char *member = mimed_varlink_split(vc->method, iface, sizeof(iface));
	struct mimed_call *call;
	bool service;

	if (member && strcmp(iface, "io.mime") == 0 &&
	    (strcmp(member, "Infer") == 0 || strcmp(member, "InferBatch") == 0) &&
	    !d->shutting_down) {
		if (member[5])
			m_infer_batch(d, c, vc);
		else
			m_infer(d, c, vc);
		return;
	}
	/* The batches' log lines and events on_read() kept for later go first: this call may
	 * log or emit events of its own (a budget, a phase), which come after. */
	logs_flush(d);
	call = call_new(c, MIMED_CALL_SIMPLE, 0, vc->oneway);
	if (!call) {
		conn_close(c, false);
		return;
	}
	service = member && strcmp(iface, "org.varlink.service") == 0;
	if (!member || (!service && strcmp(iface, "io.mime") != 0)) {
		call_error(call, MIMED_ERR_IFACE_NOT_FOUND, json_pack("{s:s}", "interface", iface));
	} else if (service && strcmp(member, "GetInfo") == 0) {
		m_get_info(d, call);
	} else if (service && strcmp(member, "GetInterfaceDescription") == 0) {
		m_describe(d, call, vc->params);
	} else if (service) {
		call_error(call, MIMED_ERR_METHOD_NOT_FOUND,
		           json_pack("{s:s}", "method", vc->method));
	} else if (d->shutting_down && strcmp(member, "GetStatus") != 0) {
		call_error(call, MIMED_ERR_SHUTTING_DOWN, NULL);
	} else if (strcmp(member, "ListTasks") == 0) {
		m_list_tasks(d, call);
	} else if (strcmp(member, "GetStatus") == 0) {
		m_get_status(d, call);
	} else if (strcmp(member, "SetBudget") == 0) {
		if (admin_only(c, call, member))
			m_set_budget(d, call, vc->params);
	} else if (strcmp(member, "SetPhase") == 0) {
		if (admin_only(c, call, member))
			m_set_phase(d, call, vc->params);
	} else if (strcmp(member, "Reload") == 0) {
		if (admin_only(c, call, member))
			mimed_reload(d, call);
	} else if (strcmp(member, "WatchEvents") == 0) {
		if (!vc->more) {
			call_error(call, MIMED_ERR_EXPECTED_MORE, NULL);
			return;
		}
		call->kind = MIMED_CALL_WATCH;
		d->n_busy_calls--; /* a stream does not hold up a drain */
		m_watch(d, call);
	} else {
		call_error(call, MIMED_ERR_METHOD_NOT_FOUND,
		           json_pack("{s:s}", "method", vc->method));
	}
}

/* ---- reading --------------------------------------------------------------------------------- */

static void conn_protocol_error(struct mimed_conn *c, const char *desc)
{
	struct mimed_call *call = call_new(c, MIMED_CALL_SIMPLE, 0, false);

	if (!call) {
		conn_close(c, false);
		return;
	}
	mimed_log(c->d, LOG_DEBUG, "connection uid=%u pid=%d: %s", (unsigned)c->uid, (int)c->pid,
	          desc);
	c->eof = true; /* no more reading: close once the replies are out */
	if (c->reading) {
		uv_read_stop((uv_stream_t *)&c->pipe);
		c->reading = false;
	}
	call_error_desc(call, MIMED_ERR_INVALID_REQUEST, "%s", desc);
}

/* Frees c's framer buffer when it holds nothing (it is made again by the next read). */
static void conn_framer_release(struct mimed_conn *c)
{
	if (c->framer.buf && mimed_framer_pending(&c->framer) == 0)
		mimed_framer_fini(&c->framer);
}

/* Handles the complete messages in the framer while c may take more calls. */
static void conn_process(struct mimed_conn *c)
{
	struct mimed *d = c->d;

	c->refs++;
	c->processing = true;
	while (!c->closing && !c->eof && c->n_calls < d->cfg.max_pending) {
		struct mimed_varlink_call vc;
		const char *error;
		char desc[256], *msg;
		size_t len;
		int r = mimed_framer_next(&c->framer, &msg, &len);

		if (r == 0)
			break;
		if (r < 0) {
			snprintf(desc, sizeof(desc), "message longer than %zu bytes",
			         d->cfg.max_message_bytes);
			conn_protocol_error(c, desc);
			break;
		}
		if (mimed_varlink_parse(msg, len, &vc, &error, desc, sizeof(desc)) < 0) {
			struct mimed_call *call = call_new(c, MIMED_CALL_SIMPLE, 0, false);

			if (!call) {
				conn_close(c, false);
				break;
			}
			call_error_desc(call, error, "%s", desc);
			continue;
		}
		dispatch(d, c, &vc);
		mimed_varlink_call_fini(&vc);
	}
	if (mimed_framer_pending(&c->framer) == 0) {
		c->partial_since_ns = 0;
		if (c->framer.cap > MIMED_FRAMER_KEEP) /* a long message's buffer goes at once */
			conn_framer_release(c);
	} else if (!c->partial_since_ns)
		c->partial_since_ns = mimed_now_ns();
	if (!c->closing && !c->eof) {
		bool want = c->n_calls < d->cfg.max_pending;

		if (want && !c->reading) {
			if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) == 0)
				c->reading = true;
		} else if (!want && c->reading) {
			mimed_log(d, LOG_DEBUG,
			          "connection uid=%u pid=%d has %d calls in flight, pausing reads",
			          (unsigned)c->uid, (int)c->pid, c->n_calls);
			uv_read_stop((uv_stream_t *)&c->pipe);
			c->reading = false;
		}
	}
	c->processing = false;
	conn_unref(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct mimed_conn *c = h->data;
	struct mimed *d = c->d;

	/* shared by every connection: on_read() is done with it when it returns */
	if (!d->rbuf)
		d->rbuf = malloc(MIMED_RBUF_BYTES);
	/* a 0-byte buffer: on_read() gets UV_ENOBUFS and closes the connection */
	*buf = uv_buf_init(d->rbuf, d->rbuf ? MIMED_RBUF_BYTES : 0);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct mimed_conn *c = s->data;
	struct mimed *d = c->d;

	if (nread == 0)
		return;
	mimed_tick_fast(d);
	c->last_active_ns = mimed_now_ns();
	/* Batches back from the workers first: a worker puts a batch on the done list before
	 * it writes the batch's direct replies, so a client that read one and calls again finds
	 * that batch counted (GetStatus, energy totals) as if the loop had written the reply.
	 * Their log lines and events wait until what was read is handled (an Infer is queued:
	 * they are formatted while it runs). Usually there is nothing to do: one lock. */
	c->refs++;
	awaiting_complete(d);
	done_drain(d, true);
	awaiting_complete(d);
	if (c->closing) {
		logs_flush(d);
		conn_unref(c);
		return;
	}
	conn_unref(c);
	on_read_data(c, nread, buf);
	logs_flush(d);
}

/* What on_read() does with the bytes (or the end) it got, once the done list is taken. */
static void on_read_data(struct mimed_conn *c, ssize_t nread, const uv_buf_t *buf)
{
	struct mimed *d = c->d;
	uv_stream_t *s = (uv_stream_t *)&c->pipe;

	if (nread < 0) {
		uv_read_stop(s);
		c->reading = false;
		if (nread != UV_EOF) {
			conn_close(c, false);
			return;
		}
		if (mimed_framer_pending(&c->framer) > 0)
			conn_protocol_error(c,
			                    "connection closed in the middle of a message (every "
			                    "message ends with a NUL byte)");
		c->eof = true;
		if (c->n_calls == 0)
			conn_close(c, true);
		return;
	}
	if (mimed_framer_feed(&c->framer, buf->base, (size_t)nread) < 0) {
		mimed_log(d, LOG_WARNING, "connection uid=%u pid=%d: out of memory, closing",
		          (unsigned)c->uid, (int)c->pid);
		conn_close(c, false);
		return;
	}
	conn_process(c);
}

static void on_close(uv_handle_t *h)
{
	conn_unref(h->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct mimed_conn *c = req->data;

	free(req);
	uv_close((uv_handle_t *)&c->pipe, on_close);
}

/* Stops c: its queued requests are dropped, running ones finish unseen. graceful: replies
 * already written still go out first. */
static void conn_close(struct mimed_conn *c, bool graceful)
{
	struct mimed *d = c->d;
	struct mimed_qitem *removed;
	uv_shutdown_t *sreq;

	if (c->closing)
		return;
	c->closing = true;
	if (c->prev)
		c->prev->next = c->next;
	else
		d->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	d->n_conns--;
	if (c->reading)
		uv_read_stop((uv_stream_t *)&c->pipe);
	c->reading = false;

	/* A worker may still write a direct reply to wfd, which stays open until c is freed:
	 * an abrupt close shuts the socket down now, so the client sees it closed at once and
	 * such a write fails (EPIPE). A graceful one has no call left to write. */
	if (!graceful && c->wfd >= 0)
		shutdown(c->wfd, SHUT_RDWR);
	c->refs++;
	for (struct mimed_call *call = c->head; call; call = call->next)
		for (int i = 0; i < call->n_items; i++)
			__atomic_store_n(&call->reqs[i].cancelled, 1, __ATOMIC_RELEASE);
	removed = mimed_queue_remove_if(&d->queue, match_conn, c);
	finish_removed(d, removed, MIMED_REQ_CANCELLED);
	if (c->head && c->head->kind == MIMED_CALL_WATCH)
		call_reply(c->head, NULL, 0);
	conn_flush(c);

	sreq = graceful ? malloc(sizeof(*sreq)) : NULL;
	if (sreq) {
		sreq->data = c;
		if (uv_shutdown(sreq, (uv_stream_t *)&c->pipe, on_shutdown) == 0) {
			conn_unref(c);
			return;
		}
		free(sreq);
	}
	uv_close((uv_handle_t *)&c->pipe, on_close);
	conn_unref(c);
}

static void peer_credentials(struct mimed *d, struct mimed_conn *c)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	uv_os_fd_t fd;
	gid_t groups[256];

	c->uid = (uid_t)-1;
	c->gid = (gid_t)-1;
	if (uv_fileno((uv_handle_t *)&c->pipe, &fd) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return;
	c->uid = cred.uid;
	c->gid = cred.gid;
	c->pid = cred.pid;
	c->admin = cred.uid == 0 || cred.uid == geteuid();
	if (c->admin || !d->have_admin_gid)
		return;
	if (cred.gid == d->admin_gid) {
		c->admin = true;
		return;
	}
#ifdef SO_PEERGROUPS
	len = sizeof(groups);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0)
		for (size_t i = 0; i < len / sizeof(gid_t); i++)
			if (groups[i] == d->admin_gid)
				c->admin = true;
#else
	(void)groups;
#endif
}

static void on_connection(uv_stream_t *server, int status)
{
	struct mimed *d = server->data;
	struct mimed_conn *c;

	if (status < 0) {
		mimed_log(d, LOG_WARNING, "accept: %s, ignoring", uv_strerror(status));
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return;
	c->d = d;
	c->refs = 1;
	c->wfd = -1;
	mimed_framer_init(&c->framer, d->cfg.max_message_bytes);
	uv_pipe_init(&d->loop, &c->pipe, 0);
	c->pipe.data = c;
	if (uv_accept(server, (uv_stream_t *)&c->pipe) < 0) {
		uv_close((uv_handle_t *)&c->pipe, on_close);
		return;
	}
	if (d->n_conns >= d->cfg.max_connections || d->shutting_down) {
		mimed_log(d, LOG_WARNING, "%s, refusing a connection",
		          d->shutting_down ? "shutting down" : "too many connections");
		uv_close((uv_handle_t *)&c->pipe, on_close);
		return;
	}
	peer_credentials(d, c);
	{
		uv_os_fd_t fd;

		/* without a descriptor to spare, the loop writes every reply */
		if (uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0)
			c->wfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	}
	c->next = d->conns;
	if (d->conns)
		d->conns->prev = c;
	d->conns = c;
	d->n_conns++;
	c->last_active_ns = mimed_now_ns();
	if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) == 0)
		c->reading = true;
	else
		conn_close(c, false);
}

/* ---- listening, ticking, draining --------------------------------------------------------------
 */

static int make_parent_dir(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = 0;
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Removes a stale socket file; fails with -EADDRINUSE when something answers on it. */
static int remove_stale(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd, r;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	if (r == 0)
		return -EADDRINUSE;
	return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

int mimed_server_listen(struct mimed *d)
{
	char **names = NULL;
	int r;

	uv_pipe_init(&d->loop, &d->listener, 0);
	d->listener.data = d;
	r = mimed_sd_listen_fds(false, &names);
	if (r == -EINVAL && getenv("LISTEN_FDNAMES")) {
		/* The names only label the sockets in the log: names that do not match the
		 * descriptors' count lose their labels, not the sockets. */
		int n = mimed_sd_listen_fds(false, NULL);

		if (n > 0) {
			mimed_log(d, LOG_WARNING,
			          "socket activation: LISTEN_FDNAMES '%s' does not name %d "
			          "socket(s); names ignored",
			          getenv("LISTEN_FDNAMES"), n);
			r = n;
		}
	}
	mimed_sd_listen_fds(true, NULL); /* not inherited by anything mimed starts */
	if (r < 0)
		mimed_log(d, LOG_WARNING,
		          "socket activation: LISTEN_FDS / LISTEN_FDNAMES: %s; binding '%s'",
		          strerror(-r), d->socket_path);
	if (r > 1) {
		mimed_log(d, LOG_ERR, "socket activation passed %d sockets; expected one", r);
		mimed_sd_names_free(names);
		return -EINVAL;
	}
	if (r == 1) {
		r = mimed_sd_is_unix_listener(MIMED_SD_LISTEN_FDS_START);
		if (r <= 0) {
			mimed_log(d, LOG_ERR,
			          "socket from systemd (fd %d, '%s') is not a listening AF_UNIX "
			          "stream socket",
			          MIMED_SD_LISTEN_FDS_START, names ? names[0] : "unknown");
			mimed_sd_names_free(names);
			return r < 0 ? r : -ENOTSOCK;
		}
		r = uv_pipe_open(&d->listener, MIMED_SD_LISTEN_FDS_START);
		if (r < 0) {
			mimed_log(d, LOG_ERR, "socket from systemd: %s", uv_strerror(r));
			mimed_sd_names_free(names);
			return r;
		}
		mimed_log(d, LOG_INFO, "socket activation: fd %d, '%s'", MIMED_SD_LISTEN_FDS_START,
		          names ? names[0] : "unknown");
		d->activated = true;
	}
	mimed_sd_names_free(names);
	if (!d->activated) {
		if (strlen(d->socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			mimed_log(d, LOG_ERR, "socket path '%s' is too long", d->socket_path);
			return -ENAMETOOLONG;
		}
		r = make_parent_dir(d->socket_path);
		if (r == 0)
			r = remove_stale(d->socket_path);
		if (r < 0) {
			mimed_log(d, LOG_ERR, "socket '%s': %s", d->socket_path,
			          r == -EADDRINUSE ? "another daemon is listening there"
			                           : strerror(-r));
			return r;
		}
		r = uv_pipe_bind(&d->listener, d->socket_path);
		if (r < 0) {
			mimed_log(d, LOG_ERR, "bind '%s': %s", d->socket_path, uv_strerror(r));
			return r;
		}
		d->socket_created = true;
		if (chmod(d->socket_path, d->cfg.socket_mode) < 0)
			mimed_log(d, LOG_WARNING, "chmod '%s': %s, ignoring", d->socket_path,
			          strerror(errno));
	}
	r = uv_listen((uv_stream_t *)&d->listener, 128, on_connection);
	if (r < 0) {
		mimed_log(d, LOG_ERR, "listen: %s", uv_strerror(r));
		return r;
	}
	d->listening = true;
	return 0;
}

void mimed_server_tick(struct mimed *d)
{
	uint64_t now = mimed_now_ns();
	struct mimed_qitem *expired;

	/* batches a busy worker handed over without waking the loop (worker.c, deliver()) */
	mimed_server_on_done(&d->done_async);
	if (d->drained)
		return;
	if (now - d->last_policy_ns >= d->cfg.policy_interval_ms * 1000000ull)
		mimed_policy_evaluate(d, "budget timer");

	if (mimed_queue_len(&d->queue) > 0) {
		expired = mimed_queue_remove_if(&d->queue, match_expired, &now);
		finish_removed(d, expired, MIMED_REQ_TIMEOUT);
	}
	for (struct mimed_conn *c = d->conns, *next; c; c = next) {
		next = c->next;
		if (d->cfg.message_timeout_ms && c->reading && c->partial_since_ns &&
		    now - c->partial_since_ns > d->cfg.message_timeout_ms * 1000000u) {
			char desc[128];

			snprintf(desc, sizeof(desc),
			         "message not completed within %llu ms (it must end with a NUL "
			         "byte)",
			         (unsigned long long)d->cfg.message_timeout_ms);
			conn_protocol_error(c, desc);
			continue;
		}
		if (d->cfg.idle_timeout_ms && c->n_calls == 0 && !c->partial_since_ns &&
		    now - c->last_active_ns > d->cfg.idle_timeout_ms * 1000000u) {
			mimed_log(d, LOG_DEBUG, "connection uid=%u pid=%d idle, closing",
			          (unsigned)c->uid, (int)c->pid);
			conn_close(c, true);
			continue;
		}
		if (now - c->last_active_ns > MIMED_CONN_IDLE_FREE_MS * 1000000ull)
			conn_framer_release(c);
	}
}

static void on_handle_closed(uv_handle_t *h)
{
}

static void on_shutdown_timeout(uv_timer_t *t)
{
	struct mimed *d = t->data;
	struct mimed_qitem *left;
	int n_left = 0;

	left = mimed_queue_remove_if(&d->queue, match_all, NULL);
	for (const struct mimed_qitem *it = left; it; it = it->next)
		n_left++;
	if (n_left) {
		/* answered, but not served: the drain did not finish in time */
		mimed_log(d, LOG_ERR,
		          "shutdown: %d queued requests not run after %llu ms, answered "
		          "io.mime.ShuttingDown",
		          n_left, (unsigned long long)d->cfg.shutdown_timeout_ms);
		d->exit_code = 1;
	}
	finish_removed(d, left, MIMED_REQ_SHUTDOWN);
	if (d->n_busy_calls > 0) {
		mimed_log(d, LOG_ERR, "shutdown: %d calls still running after %llu ms, exiting",
		          d->n_busy_calls, (unsigned long long)d->cfg.shutdown_timeout_ms);
		d->exit_code = 1;
		d->forced_exit = true;
		uv_stop(&d->loop);
	}
}

void mimed_server_close_all(struct mimed *d)
{
	while (d->conns)
		conn_close(d->conns, true);
	if (d->listening) {
		uv_close((uv_handle_t *)&d->listener, on_handle_closed);
		d->listening = false;
	}
}

void mimed_server_check_drained(struct mimed *d)
{
	if (!d->shutting_down || d->drained || d->n_busy_calls > 0 || d->n_idle_switches > 0)
		return;
	d->drained = true;
	mimed_log(d, LOG_INFO, "drained: every accepted request is answered%s",
	          d->exit_code ? " (some with io.mime.ShuttingDown, see above)" : "");
	for (struct mimed_conn *c = d->conns; c; c = c->next)
		if (c->head && c->head->kind == MIMED_CALL_WATCH && !c->head->done)
			call_error(c->head, MIMED_ERR_SHUTTING_DOWN, NULL);
	mimed_server_close_all(d);
	uv_timer_stop(&d->shutdown_timer);
	uv_close((uv_handle_t *)&d->shutdown_timer, on_handle_closed);
	uv_timer_stop(&d->tick);
	uv_close((uv_handle_t *)&d->tick, on_handle_closed);
	uv_close((uv_handle_t *)&d->sig_hup, on_handle_closed);
	uv_close((uv_handle_t *)&d->sig_term, on_handle_closed);
	uv_close((uv_handle_t *)&d->sig_int, on_handle_closed);
	uv_close((uv_handle_t *)&d->sig_usr1, on_handle_closed);
	uv_close((uv_handle_t *)&d->sig_usr2, on_handle_closed);
	/* The workers are idle: nothing is queued or running. */
	mimed_workers_stop(d);
	uv_close((uv_handle_t *)&d->done_async, on_handle_closed);
}

void mimed_server_shutdown(struct mimed *d)
{
	if (d->shutting_down)
		return;
	d->shutting_down = true;
	mimed_notify(d, "STOPPING=1\nSTATUS=draining %d calls", d->n_busy_calls);
	mimed_log(d, LOG_NOTICE, "shutting down: no new connections, draining %d calls",
	          d->n_busy_calls);
	if (d->listening) {
		uv_close((uv_handle_t *)&d->listener, on_handle_closed);
		d->listening = false;
	}
	if (d->socket_created) {
		unlink(d->socket_path);
		d->socket_created = false;
	}
	/* what is queued runs now: no batch waits max_wait for requests that cannot come */
	mimed_queue_drain(&d->queue);
	uv_timer_start(&d->shutdown_timer, on_shutdown_timeout, d->cfg.shutdown_timeout_ms, 0);
	mimed_server_check_drained(d);
}
