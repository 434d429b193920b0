// SPDX-License-Identifier: MIT
/* engine -- see engine.h.
 *
 * Plan: every layer's output shape, weights and scratch are fixed at creation for max_batch.
 * Activations ping-pong between two buffers of the largest layer's size.
 *
 * Conv: each sample's output pixels p in [0, OH*OW) are cut into the same chunks whatever
 * the batch (a few hundred columns, and at least one chunk per thread when a sample has
 * enough pixels); each chunk is one im2col into a private panel, one cblas_sgemm
 * (acc[K, cols] = W[K, CRS] x col[CRS, cols]) and one fused epilogue pass (bias, the
 * sample's threshold mask, zero count) that scatters the columns back to NCHW. The chunks
 * are dealt round-robin to the engine's threads (the calling thread is thread 0), so a batch
 * of 1 still uses every thread (threading over pixels) and a large batch streams through
 * cache-sized panels. Chunks never span samples and their sizes do not depend on the batch:
 * OpenBLAS' results depend on the GEMM's shape, and this way a sample's result is bit for
 * bit the same alone or in any mixed batch (tested). FC layers run one GEMM row per sample
 * for the same reason.
 *
 * Threads: a pool of n_threads - 1 workers waits on a condition variable for a job. With at
 * least n_threads samples the job is the whole network, each thread taking the next few
 * samples nobody has taken until none is left (one join per forward); with fewer, a job is one
 * layer and each thread takes every n_threads-th chunk of pixels. Either way a sample meets the
 * same chunks and the same kernels, so its result does not depend on the mode. The threads call
 * OpenBLAS concurrently (fc layers, heads, the BLAS conv path), which is only correct with OpenBLAS
 * single-threaded: creating a threaded engine sets that. */
#include "lib/engine.h"

#include <assert.h>
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "lib/half.h"
#include "lib/kernels.h"

#define ALIGN 64
/* AUTO's density threshold: below it the input-sparse form is faster than the dense packed
 * GEMM (measured: bench/bench_sparse, bench/RESULTS.md "Zero activations"). */
#define ACT_MAX_DENSITY_DEFAULT 0.75
/* Masked W^T kept per conv layer for fine-grain masks seen (the phases are nested and few:
 * the demo bundle has 2 fine phases); the least recently used is rebuilt on a miss. */
#define FINE_TW_SLOTS 2
#define DEC_SLOTS     8 /* phases whose decoded F16 task tensors an engine keeps */

/* W^T of one fine-grain mask of a layer: built once, on the first entry with that mask at
 * that size, so a later fine switch only finds it (a comparison of the mask's bytes). */
struct fine_tw {
	struct mime_gemm_tweights tw; /* masked W^T (owned) */
	uint8_t *keep;                /* copy of the mask, [ceil(K / wuv)][CRS] (owned) */
	int K, CRS, wuv;              /* what it was built for; K = 0: empty */
	uint64_t used;                /* last use (LRU) */
};

struct layer_plan {
	const struct mime_layer_spec *spec;
	struct mime_shape in, out;
	const float *w, *b;
	int masked; /* index among masked layers, -1 if not masked */
	int crs;    /* conv: C*R*S */
	int chunk;  /* conv: columns per chunk (the last chunk of a sample may be short) */
	int cps;    /* conv: chunks per sample */
	struct mime_shape full;       /* output shape of the whole parent */
	int64_t lda;                  /* conv: full C*R*S; fc: full input width */
	struct mime_gemm_weights gw;  /* conv, packed path: packed weights (owned) */
	struct mime_gemm_tweights tw; /* conv, packed path: the input-sparse form (owned) */
	int act;                      /* tw exists (geometry supported, skipping on) */
	int tw_valid;                 /* tw holds the current K x CRS panels, unmasked */
	int act_now;                  /* this phase runs input-sparse chunks */
	int sparse;                   /* gw drops all-zero panel columns */
	struct mime_conv_geom geom;

	struct fine_tw fine[FINE_TW_SLOTS];      /* masked W^T of fine masks (act only) */
	const struct mime_gemm_tweights *tw_run; /* the W^T this phase runs (act_now) */
};

/* One phase's tasks with their halves decoded (see struct mime_engine). */
struct dec_slot {
	const void **key;               /* [DEC_KEY]: the tensors the tasks were given as */
	int64_t out[MIME_MAX_LAYERS];   /* the layer sizes they were decoded for */
	struct mime_task_params *tasks; /* [n_tasks]: halves until done, then floats */
	uint8_t *done;                  /* [n_tasks]: decoded (on the task's first forward) */
	float *floats;                  /* [n_tasks * dec_cap] */
	size_t n_floats;                /* once every task is decoded */
	uint64_t used;                  /* LRU clock; 0 = empty */
};

struct thread_scratch {
	void *act;      /* the input-sparse form's scratch (largest layer) */
	float *col;     /* [crs_max * chunk_max] */
	float *acc;     /* [k_max * chunk_max] */
	int64_t *zeros; /* [max_batch]: this thread's zero counts for the current layer */
};

struct mime_engine {
	struct mime_model model;              /* copy of the caller's struct; arrays borrowed */
	const struct mime_task_params *tasks; /* the current phase's heads and thresholds */
	/* F16 task tensors: each phase's tasks with their halves decoded, a task on its first
	 * forward in the phase (a task never asked for costs nothing), kept per phase entered
	 * (least recently used slot reused; mime_engine_trim frees all but the current), so
	 * that switching back to a phase decodes nothing. */
	struct dec_slot dec[DEC_SLOTS];
	size_t dec_cap; /* floats per task in a slot: sized for the whole parent */
	uint64_t dec_clock;
	int dec_cur;             /* the current phase's slot; -1: its tasks have no halves */
	struct mime_phase phase; /* the current phase (k_active per layer) */
	struct mime_engine_config cfg;
	struct mime_gemm_arch arch;
	int n_layers;
	struct layer_plan L[MIME_MAX_LAYERS];
	struct mime_shape feat;
	int n_masked;
	int masked_layer[MIME_MAX_LAYERS];
	int64_t neurons[MIME_MAX_LAYERS];
	int max_classes;
	int group;              /* samples a thread takes through the whole network at a time */
	double act_max_density; /* see struct mime_engine_config */
	size_t act_floats, plan_bytes, base_bytes; /* base: buffers, without packed weights */
	uint64_t fine_clock;                       /* LRU clock of the fine W^T slots */
	float *act[2];
	float *logits;
	int64_t *zeros;              /* [max_batch, n_masked] */
	struct mime_mask_ref *masks; /* [n_layers][max_batch], filled per forward */
	struct thread_scratch *ts;   /* [n_threads] */

	/* Current job, read by workers after the generation changes. */
	struct {
		const struct layer_plan *lp; /* NULL: each thread runs whole samples */
		int batch;
		const float *in;
		float *out;
		const int *tasks;
	} job;
	pthread_t *workers;
	int n_workers_started;
	pthread_mutex_t lock;
	pthread_cond_t go, done;
	atomic_uint generation; /* written under lock; read by spinning workers */
	atomic_int pending;     /* jobs still running; the last one signals done under lock */
	atomic_int next_sample; /* sample-parallel job: the first sample nobody took yet */
	atomic_int sleeping;    /* workers waiting on go (changed under lock) */
	atomic_int in_forward;  /* a forward runs: its next job comes soon */
	atomic_uint_fast64_t awake_until; /* CLOCK_MONOTONIC ns: mime_engine_prepare's window */
	int stop;                         /* guarded by lock */
};

static void dec_free(struct dec_slot *d);
static void dec_batch(struct mime_engine *e, const int *tasks, int batch);

static void *xaligned(size_t n_bytes)
{
	void *p = NULL;

	if (n_bytes == 0)
		n_bytes = ALIGN;
	n_bytes = (n_bytes + ALIGN - 1) / ALIGN * ALIGN;
	return posix_memalign(&p, ALIGN, n_bytes) == 0 ? p : NULL;
}

/* The mask of sample b at layer i. */
static const struct mime_mask_ref *mask_of(const struct mime_engine *e, int i, int b)
{
	return &e->masks[(int64_t)i * e->cfg.max_batch + b];
}

/* Conv chunks first, first + step, ... among the chunks of samples [s0, s1). The zero count
 * of sample n is added to zrow[n * zstride]. */
static void conv_range(struct mime_engine *e, int tid, const struct layer_plan *lp, const float *in,
                       float *out, int s0, int s1, int first, int step, int64_t *zrow, int zstride,
                       int sbase)
{
	const struct mime_conv_geom *g = &lp->geom;
	const int64_t P = (int64_t)g->oh * g->ow;
	const int64_t in_size = (int64_t)g->c * g->h * g->w;
	struct thread_scratch *ts = &e->ts[tid];
	const int apply = lp->spec->act == MIME_ACT_RELU;
	const int li = (int)(lp - e->L);

	for (int64_t ci = (int64_t)s0 * lp->cps + first; ci < (int64_t)s1 * lp->cps; ci += step) {
		const int64_t n = ci / lp->cps, p0 = (ci % lp->cps) * lp->chunk;
		const int nc = (int)(P - p0 < lp->chunk ? P - p0 : lp->chunk);
		const float *in_n = in + n * in_size;
		int64_t z;

		/* Input-sparse when the chunk's input is sparse enough (the density pass also
		 * notes where the nonzeros are, for the sparse form). */
		if (lp->act_now && (mime_gemm_act_density(&e->arch, g, in_n, (int)p0, nc,
		                                          ts->act) <= e->act_max_density ||
		                    e->cfg.act_skip == MIME_ACT_SKIP_ALWAYS)) {
			z = mime_gemm_conv_act(&e->arch, lp->tw_run, g, in_n, (int)p0, nc, (int)P,
			                       lp->b, mask_of(e, li, sbase + (int)n), apply,
			                       out + n * g->k * P, ts->act);
		} else if (e->cfg.conv == MIME_CONV_PACKED) {
			mime_gemm_pack_b_rows(&e->arch, g, in_n, (int)p0, nc, lp->gw.rows, ts->col);
			z = mime_gemm_conv(&e->arch, &lp->gw, ts->col, nc, (int)p0, (int)P, lp->b,
			                   mask_of(e, li, sbase + (int)n), apply,
			                   out + n * g->k * P);
		} else {
			if (g->r == 1 && g->s == 1 && g->stride == 1 && g->pad == 0) {
				/* 1x1 conv: the input planes are the panel. */
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->k, nc,
				            lp->crs, 1.0f, lp->w, (int)lp->lda, in_n + p0, (int)P,
				            0.0f, ts->acc, nc);
			} else {
				mime_im2col(g, in_n, (int)p0, nc, ts->col);
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->k, nc,
				            lp->crs, 1.0f, lp->w, (int)lp->lda, ts->col, nc, 0.0f,
				            ts->acc, nc);
			}
			z = 0;
			/* The chunk lies in sample n: hand the epilogue that sample alone. */
			mime_conv_epilogue(ts->acc, g->k, p0, nc, (int)P, lp->b,
			                   mask_of(e, li, sbase + (int)n), apply,
			                   out + n * g->k * P, &z);
		}
		if (lp->masked >= 0)
			zrow[n * zstride] += z;
	}
}

static void pool_range(const struct layer_plan *lp, const float *in, float *out, int p0, int n)
{
	if (n <= 0)
		return;
	mime_maxpool(in + (int64_t)p0 * lp->in.h * lp->in.w, n, lp->in.h, lp->in.w,
	             lp->spec->kernel, lp->spec->stride, lp->out.h, lp->out.w,
	             out + (int64_t)p0 * lp->out.h * lp->out.w);
}

static void fc_range(struct mime_engine *e, const struct layer_plan *lp, const float *in,
                     float *out, int s0, int s1, int sbase)
{
	const int n_in = (int)mime_shape_size(&lp->in), n_out = lp->out.c;
	const int apply = lp->spec->act == MIME_ACT_RELU;
	const int li = (int)(lp - e->L);

	/* One GEMM row per sample: OpenBLAS' result would depend on M otherwise. */
	for (int b = s0; b < s1; b++) {
		float *y = out + (int64_t)b * n_out;
		int64_t z;

		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1, n_out, n_in, 1.0f,
		            in + (int64_t)b * n_in, n_in, lp->w, (int)lp->lda, 0.0f, y, n_out);
		z = mime_fc_epilogue(y, n_out, lp->b, mask_of(e, li, sbase + b), apply);
		if (lp->masked >= 0)
			e->zeros[(int64_t)(sbase + b) * e->n_masked + lp->masked] = z;
	}
}

static void heads_range(struct mime_engine *e, const float *x, const int *tasks, float *logits,
                        int n)
{
	const int feat = (int)mime_shape_size(&e->feat);

	/* Per-task heads: tiny next to the trunk, one gemv per sample. */
	for (int b = 0; b < n; b++) {
		const struct mime_task_params *tp = &e->tasks[tasks[b]];
		float *lg = logits + (int64_t)b * e->max_classes;

		memcpy(lg, tp->head_b, sizeof(float) * tp->n_classes);
		cblas_sgemv(CblasRowMajor, CblasNoTrans, tp->n_classes, feat, 1.0f, tp->head_w,
		            feat, x + (int64_t)b * feat, 1, 1.0f, lg, 1);
		for (int c = tp->n_classes; c < e->max_classes; c++)
			lg[c] = 0.0f;
	}
}

/* Runs every layer and the heads for samples [s0, s1) on thread tid alone. The thread works
 * in its own slice of the activation buffers, [s0, s1) x the largest layer, indexing its
 * samples from 0 there: threads move through the layers at their own pace, so sharing the
 * batch layout (stride = the layer's size) would let one thread's layer i+2 overwrite what
 * another still reads for layer i+1. */
static void samples_range(struct mime_engine *e, int tid, const float *in, int s0, int s1)
{
	const int nb = s1 - s0;
	const float *x = in + (int64_t)s0 * mime_shape_size(&e->model.graph.input);
	int cur = 0;

	for (int i = 0; i < e->n_layers; i++) {
		const struct layer_plan *lp = &e->L[i];
		float *y = e->act[cur] + (int64_t)s0 * e->act_floats;

		switch (lp->spec->kind) {
		case MIME_LAYER_CONV:
			conv_range(e, tid, lp, x, y, 0, nb, 0, 1,
			           e->zeros + (int64_t)s0 * e->n_masked + lp->masked, e->n_masked,
			           s0);
			break;
		case MIME_LAYER_MAXPOOL:
			pool_range(lp, x, y, 0, nb * lp->in.c);
			break;
		case MIME_LAYER_FLATTEN:
			continue; /* NCHW per sample is already flat */
		case MIME_LAYER_FC:
			fc_range(e, lp, x, y, 0, nb, s0);
			break;
		}
		x = y;
		cur ^= 1;
	}
	heads_range(e, x, e->job.tasks + s0, e->logits + (int64_t)s0 * e->max_classes, nb);
}

/* Thread tid's share (of T) of the current job. */
static void run_job(struct mime_engine *e, int tid, int T)
{
	const struct layer_plan *lp = e->job.lp;
	const int B = e->job.batch;

	if (!lp) {
		/* Sample-parallel: whole network, one join. Each thread takes the next few
		 * samples nobody has taken (up to a group, so that a layer's output is still in
		 * cache when the next layer reads it; fewer near the end, so the threads finish
		 * together) until none is left: a thread that was preempted or started late
		 * (a loaded machine) takes fewer instead of holding up the join. Who runs a
		 * sample changes nothing in its result (its own slice of the buffers, the same
		 * chunks and kernels). */
		for (;;) {
			int s = atomic_load(&e->next_sample), n;

			do {
				const int left = B - s;

				if (left <= 0)
					return;
				n = left / T < 1 ? 1 : left / T;
				n = n > e->group ? e->group : n;
			} while (!atomic_compare_exchange_weak(&e->next_sample, &s, s + n));
			samples_range(e, tid, e->job.in, s, s + n);
		}
	}
	if (lp->spec->kind == MIME_LAYER_CONV) {
		struct thread_scratch *ts = &e->ts[tid];

		memset(ts->zeros, 0, sizeof(int64_t) * B);
		conv_range(e, tid, lp, e->job.in, e->job.out, 0, B, tid, T, ts->zeros, 1, 0);
	} else {
		const int planes = lp->in.c * B, per = (planes + T - 1) / T;

		pool_range(lp, e->job.in, e->job.out, tid * per,
		           planes - tid * per < per ? planes - tid * per : per);
	}
}

/* A short spin before sleeping: a layer of a batch-1 forward takes tens of microseconds, about
 * what a condition-variable wake-up costs, so threads that are about to get work poll first. */
#define SPIN_ROUNDS 4000
#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ volatile("yield")
#else
#define cpu_relax() ((void)0)
#endif

/* How long a worker woken by mime_engine_prepare() polls for the forward before it sleeps
 * again: the daemon calls it when it accepts a request, 40-70 us before the forward on an
 * idle machine (parse, decode, queue), more on a busy one. */
#define PREPARE_NS (300 * 1000)

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Polls for a job other than seen: during a forward (the next layer's job comes soon) up
 * to SPIN_ROUNDS pauses, after it not at all; and on while now is inside the window
 * mime_engine_prepare() opened (a forward is coming), yielding the CPU between polls: on a
 * machine with more runnable threads than cores a pause-only poll there took the CPU from
 * the threads decoding and queueing that very request (measured: bench/RESULTS.md). */
static void spin_for_job(struct mime_engine *e, unsigned seen)
{
	/* i stops at SPIN_ROUNDS: prepares that keep coming without a forward for this engine
	 * (another worker's takes the requests) keep the window open for as long as they come,
	 * and a count of every poll would overflow after ~2^31 of them (tens of minutes). */
	for (int i = 0; atomic_load(&e->generation) == seen; i += i < SPIN_ROUNDS) {
		if (atomic_load(&e->in_forward) && i < SPIN_ROUNDS) {
			cpu_relax();
			continue;
		}
		if (mono_ns() >= atomic_load(&e->awake_until))
			return;
		sched_yield();
	}
}

static void *worker_main(void *arg)
{
	struct mime_engine *e = arg;
	unsigned seen = 0;
	int tid;

	pthread_mutex_lock(&e->lock);
	tid = ++e->n_workers_started; /* 1 .. n_threads-1 */
	pthread_mutex_unlock(&e->lock);
	pthread_setname_np(pthread_self(), "mime-engine"); /* for top, perf, tests */
	for (;;) {
		spin_for_job(e, seen);
		pthread_mutex_lock(&e->lock);
		while (atomic_load(&e->generation) == seen && !e->stop) {
			/* Counted as asleep before the window is read: a prepare that opens it
			 * either is seen here or sees this thread asleep and wakes it. */
			atomic_fetch_add(&e->sleeping, 1);
			if (mono_ns() < atomic_load(&e->awake_until)) {
				atomic_fetch_sub(&e->sleeping, 1);
				pthread_mutex_unlock(&e->lock);
				spin_for_job(e, seen);
				pthread_mutex_lock(&e->lock);
				continue;
			}
			pthread_cond_wait(&e->go, &e->lock);
			atomic_fetch_sub(&e->sleeping, 1);
		}
		if (e->stop) {
			pthread_mutex_unlock(&e->lock);
			break;
		}
		seen = atomic_load(&e->generation);
		pthread_mutex_unlock(&e->lock);
		run_job(e, tid, e->cfg.n_threads);
		if (atomic_fetch_sub(&e->pending, 1) == 1) {
			pthread_mutex_lock(&e->lock);
			pthread_cond_signal(&e->done);
			pthread_mutex_unlock(&e->lock);
		}
	}
	return NULL;
}

/* Layer-parallel forwards (batch below the thread count) split each layer over the threads,
 * one hand-off and one join per layer. The stated rule: a max-pool, or a conv of fewer than
 * SMALL_LAYER_MACS multiply-accumulates over the batch in the current phase (about 20 us on
 * one core here), runs on the calling thread alone. Small phases are mostly such layers. */
#define SMALL_LAYER_MACS (1 << 20)

static int layer_is_small(const struct layer_plan *lp, int batch)
{
	if (lp->spec->kind != MIME_LAYER_CONV)
		return 1;
	return (int64_t)batch * lp->out.c * lp->out.h * lp->out.w * lp->crs < SMALL_LAYER_MACS;
}

/* Runs the current job on every thread and waits for all of them. */
static void parallel_run(struct mime_engine *e)
{
	atomic_store(&e->next_sample, 0);
	if (e->cfg.n_threads == 1) {
		run_job(e, 0, 1);
		return;
	}
	atomic_store(&e->pending, e->cfg.n_threads - 1);
	pthread_mutex_lock(&e->lock);
	atomic_fetch_add(&e->generation, 1);
	pthread_cond_broadcast(&e->go);
	pthread_mutex_unlock(&e->lock);
	run_job(e, 0, e->cfg.n_threads);
	for (int i = 0; i < SPIN_ROUNDS && atomic_load(&e->pending) > 0; i++)
		cpu_relax();
	pthread_mutex_lock(&e->lock);
	while (atomic_load(&e->pending) > 0)
		pthread_cond_wait(&e->done, &e->lock);
	pthread_mutex_unlock(&e->lock);
}

static int plan_layers(struct mime_engine *e, struct mime_errinfo *ei)
{
	const struct mime_graph *g = &e->model.graph;
	struct mime_shape shapes[MIME_MAX_LAYERS];
	struct mime_shape in = g->input;
	int r;

	r = mime_graph_check(g, shapes, ei);
	if (r < 0)
		return r;
	e->n_layers = g->n_layers;
	e->act_floats = (size_t)mime_shape_size(&in);
	for (int i = 0; i < g->n_layers; i++) {
		struct layer_plan *lp = &e->L[i];
		const struct mime_layer_spec *s = &g->layers[i];

		lp->spec = s;
		lp->in = in;
		lp->out = shapes[i];
		lp->full = shapes[i];
		lp->masked = -1;
		if (s->kind == MIME_LAYER_CONV || s->kind == MIME_LAYER_FC) {
			lp->w = e->model.weight[i];
			lp->b = e->model.bias[i];
			if (!lp->w || !lp->b)
				return mime_errinfo_set(ei, MIME_ESHAPE,
				                        "engine: layer '%s' has no weights",
				                        s->name);
		}
		if (s->kind == MIME_LAYER_FC)
			lp->lda = mime_shape_size(&in);
		if (mime_graph_layer_masked(g, i)) {
			lp->masked = e->n_masked;
			e->masked_layer[e->n_masked] = i;
			e->neurons[e->n_masked] = mime_shape_size(&lp->out);
			e->n_masked++;
		}
		if (s->kind == MIME_LAYER_CONV) {
			struct mime_conv_geom *cg = &lp->geom;
			int chunk;

			*cg = (struct mime_conv_geom){
				.c = in.c,
				.h = in.h,
				.w = in.w,
				.k = s->out,
				.r = s->kernel,
				.s = s->kernel,
				.stride = s->stride,
				.pad = s->pad,
				.oh = lp->out.h,
				.ow = lp->out.w,
			};
			lp->crs = in.c * s->kernel * s->kernel;
			lp->lda = lp->crs;
			/* A panel of about 256 KiB (L2-sized), 64 to 1024 columns; at least one
			 * chunk per thread when each gets 16 pixels or more. */
			chunk = (int)(65536 / lp->crs);
			chunk = chunk < 64 ? 64 : chunk > 1024 ? 1024 : chunk;
			lp->cps =
				(int)((mime_shape_size(&lp->out) / lp->out.c + chunk - 1) / chunk);
			if (lp->cps < e->cfg.n_threads &&
			    lp->out.h * lp->out.w >= 16 * e->cfg.n_threads)
				lp->cps = e->cfg.n_threads;
			lp->chunk = (lp->out.h * lp->out.w + lp->cps - 1) / lp->cps;
			if (e->cfg.conv == MIME_CONV_PACKED) {
				const int nr = e->arch.nr;

				lp->chunk = (lp->chunk + nr - 1) / nr * nr;
				lp->cps = (lp->out.h * lp->out.w + lp->chunk - 1) / lp->chunk;
			}
		}
		if ((size_t)mime_shape_size(&lp->out) > e->act_floats)
			e->act_floats = (size_t)mime_shape_size(&lp->out);
		in = lp->out;
	}
	e->feat = in;
	return 0;
}

static int check_tasks(struct mime_engine *e, struct mime_errinfo *ei)
{
	if (e->model.n_tasks <= 0)
		return mime_errinfo_set(ei, MIME_EINVAL, "engine: model has no tasks");
	if (e->feat.h != 1 || e->feat.w != 1)
		return mime_errinfo_set(ei, MIME_EGRAPH,
		                        "engine: the graph must end flat (add a flatten layer)");
	for (int t = 0; t < e->model.n_tasks; t++) {
		const struct mime_task_params *tp = &e->model.tasks[t];

		if (tp->n_classes <= 0 || (!tp->head_w && !tp->head_w_half) ||
		    (!tp->head_b && !tp->head_b_half))
			return mime_errinfo_set(ei, MIME_ESHAPE, "engine: task '%s' has no head",
			                        tp->name ? tp->name : "?");
		if (tp->n_classes > e->max_classes)
			e->max_classes = tp->n_classes;
	}
	return 0;
}

static int alloc_plan(struct mime_engine *e)
{
	const int B = e->cfg.max_batch, T = e->cfg.n_threads;
	size_t col_max = 1, acc_max = 1, act_max = 64;

	for (int i = 0; i < e->n_layers; i++) {
		const struct layer_plan *lp = &e->L[i];

		if (lp->spec->kind != MIME_LAYER_CONV)
			continue;
		if (mime_gemm_packed_b_floats(&e->arch, lp->crs, lp->chunk) > col_max)
			col_max = mime_gemm_packed_b_floats(&e->arch, lp->crs, lp->chunk);
		if ((size_t)lp->geom.k * lp->chunk > acc_max)
			acc_max = (size_t)lp->geom.k * lp->chunk;
		if (e->cfg.conv == MIME_CONV_PACKED && e->cfg.act_skip != MIME_ACT_SKIP_OFF &&
		    mime_gemm_act_supported(&lp->geom) &&
		    mime_gemm_act_scratch_bytes(&e->arch, &lp->geom, lp->geom.k) > act_max)
			act_max = mime_gemm_act_scratch_bytes(&e->arch, &lp->geom, lp->geom.k);
	}
	if (e->act_floats > SIZE_MAX / sizeof(float) / (size_t)B)
		return -ENOMEM;
	for (int i = 0; i < 2; i++) {
		e->act[i] = xaligned(sizeof(float) * e->act_floats * B);
		if (!e->act[i])
			return -ENOMEM;
	}
	e->logits = xaligned(sizeof(float) * (size_t)e->max_classes * B);
	e->zeros = calloc((size_t)B * (e->n_masked ? e->n_masked : 1), sizeof(int64_t));
	e->masks = calloc((size_t)B * e->n_layers, sizeof(*e->masks));
	e->ts = calloc((size_t)T, sizeof(*e->ts));
	if (!e->logits || !e->zeros || !e->masks || !e->ts)
		return -ENOMEM;
	for (int t = 0; t < T; t++) {
		e->ts[t].col = xaligned(sizeof(float) * col_max);
		e->ts[t].acc = xaligned(sizeof(float) * acc_max);
		e->ts[t].zeros = calloc((size_t)B, sizeof(int64_t));
		e->ts[t].act = xaligned(act_max);
		if (!e->ts[t].col || !e->ts[t].acc || !e->ts[t].zeros || !e->ts[t].act)
			return -ENOMEM;
	}
	/* Storage for each conv layer's packed weights, sized for the whole parent: a phase
	 * repacks into it, so entering one allocates nothing and cannot fail. */
	for (int i = 0; i < e->n_layers; i++) {
		struct layer_plan *lp = &e->L[i];

		if (lp->spec->kind == MIME_LAYER_CONV && e->cfg.conv == MIME_CONV_PACKED &&
		    mime_gemm_weights_init(&lp->gw, &e->arch, lp->spec->out, (int)lp->lda) < 0)
			return -ENOMEM;
		/* The input-sparse form where the geometry allows it (a phase changes C and
		 * K, not the geometry's kind). */
		if (lp->spec->kind == MIME_LAYER_CONV && e->cfg.conv == MIME_CONV_PACKED &&
		    e->cfg.act_skip != MIME_ACT_SKIP_OFF && mime_gemm_act_supported(&lp->geom)) {
			if (mime_gemm_tweights_init(&lp->tw, lp->spec->out, (int)lp->lda,
			                            lp->geom.r * lp->geom.s) < 0)
				return -ENOMEM;
			/* Address space for the fine masks' W^T (pages come with a build) and
			 * room for a copy of a mask (wuv >= 1: at most K x CRS flags). */
			for (int f = 0; f < FINE_TW_SLOTS; f++) {
				if (mime_gemm_tweights_init(&lp->fine[f].tw, lp->spec->out,
				                            (int)lp->lda,
				                            lp->geom.r * lp->geom.s) < 0)
					return -ENOMEM;
				lp->fine[f].keep = calloc((size_t)lp->spec->out, (size_t)lp->lda);
				if (!lp->fine[f].keep)
					return -ENOMEM;
			}
			lp->act = 1;
		}
	}
	/* About 256 KiB of activations per buffer per group (L2-sized), 1 to 8 samples. */
	e->group = (int)(65536 / (e->act_floats ? e->act_floats : 1));
	e->group = e->group < 1 ? 1 : e->group > 8 ? 8 : e->group;
	e->base_bytes = sizeof(float) * (2 * e->act_floats * B + (size_t)e->max_classes * B +
	                                 (size_t)T * (col_max + acc_max)) +
	                (size_t)T * act_max;
	return 0;
}

static int start_workers(struct mime_engine *e)
{
	const int n = e->cfg.n_threads - 1;
	int r;

	if (n <= 0)
		return 0;
	e->workers = calloc((size_t)n, sizeof(pthread_t));
	if (!e->workers)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		r = pthread_create(&e->workers[i], NULL, worker_main, e);
		if (r != 0) {
			/* Let the ones started so far be joined by destroy. */
			e->cfg.n_threads = i + 1;
			return -r;
		}
	}
	return 0;
}

void mime_engine_destroy(struct mime_engine *e)
{
	if (!e)
		return;
	if (e->workers) {
		pthread_mutex_lock(&e->lock);
		e->stop = 1;
		pthread_cond_broadcast(&e->go);
		pthread_mutex_unlock(&e->lock);
		for (int i = 0; i < e->cfg.n_threads - 1; i++)
			pthread_join(e->workers[i], NULL);
		free(e->workers);
	}
	pthread_mutex_destroy(&e->lock);
	pthread_cond_destroy(&e->go);
	pthread_cond_destroy(&e->done);
	if (e->ts)
		for (int t = 0; t < e->cfg.n_threads; t++) {
			free(e->ts[t].col);
			free(e->ts[t].acc);
			free(e->ts[t].zeros);
			free(e->ts[t].act);
		}
	free(e->ts);
	for (int i = 0; i < e->n_layers; i++) {
		mime_gemm_weights_free(&e->L[i].gw);
		mime_gemm_tweights_free(&e->L[i].tw);
		for (int f = 0; f < FINE_TW_SLOTS; f++) {
			mime_gemm_tweights_free(&e->L[i].fine[f].tw);
			free(e->L[i].fine[f].keep);
		}
	}
	for (int i = 0; i < DEC_SLOTS; i++)
		dec_free(&e->dec[i]);
	free(e->masks);
	free(e->zeros);
	free(e->logits);
	free(e->act[0]);
	free(e->act[1]);
	free(e);
}

int mime_engine_create(const struct mime_model *m, const struct mime_engine_config *cfg,
                       struct mime_engine **ret_engine, struct mime_errinfo *ei)
{
	struct mime_engine *e;
	int r;

	if (!m || !cfg || cfg->conv < MIME_CONV_AUTO || cfg->conv > MIME_CONV_BLAS ||
	    cfg->simd < 0 || cfg->simd > 1 + MIME_SIMD_NEON || cfg->max_batch < 1 ||
	    cfg->max_batch > 65536 || cfg->n_threads < 1 || cfg->n_threads > 256 ||
	    cfg->act_skip < MIME_ACT_SKIP_AUTO || cfg->act_skip > MIME_ACT_SKIP_ALWAYS ||
	    !(cfg->act_max_density >= 0.0f && cfg->act_max_density <= 1.0f))
		return mime_errinfo_set(ei, MIME_EINVAL, "engine: bad configuration");
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->model = *m;
	e->cfg = *cfg;
	e->dec_cur = -1;
	if (e->cfg.conv == MIME_CONV_AUTO)
		e->cfg.conv = MIME_CONV_PACKED;
	mime_gemm_arch_select(cfg->simd - 1, &e->arch);
	e->act_max_density =
		cfg->act_max_density > 0.0f ? cfg->act_max_density : ACT_MAX_DENSITY_DEFAULT;
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->go, NULL);
	pthread_cond_init(&e->done, NULL);
	r = plan_layers(e, ei);
	if (r < 0)
		goto out_destroy;
	r = check_tasks(e, ei);
	if (r < 0)
		goto out_destroy;
	r = alloc_plan(e);
	if (r < 0) {
		mime_errinfo_set(ei, r, "engine: cannot allocate the plan");
		goto out_destroy;
	}
	r = mime_engine_set_phase(e, NULL, NULL, ei);
	if (r < 0)
		goto out_destroy;
	/* Concurrent calls into a multi-threaded OpenBLAS give wrong results (seen in the
	 * tests under ASan), and the engine's threads call it concurrently (fc, heads, the
	 * BLAS conv path): with threads of its own, OpenBLAS must run single-threaded. */
	if (e->cfg.n_threads > 1 && openblas_get_num_threads() > 1)
		openblas_set_num_threads(1);
	r = start_workers(e);
	if (r < 0) {
		mime_errinfo_set(ei, r, "engine: cannot start threads");
		goto out_destroy;
	}
	*ret_engine = e;
	return 0;

out_destroy:
	mime_engine_destroy(e);
	return r;
}

int mime_engine_forward(struct mime_engine *e, int batch, const float *in, const int *tasks,
                        struct mime_engine_result *ret_result)
{
	const float *x = in;
	int cur = 0;

	if (batch < 1 || batch > e->cfg.max_batch)
		return MIME_EINVAL;
	for (int b = 0; b < batch; b++)
		if (tasks[b] < 0 || tasks[b] >= e->model.n_tasks)
			return MIME_EINVAL;
	if (e->dec_cur >= 0)
		dec_batch(e, tasks, batch);
	memset(e->zeros, 0, sizeof(int64_t) * batch * (e->n_masked ? e->n_masked : 1));
	for (int i = 0; i < e->n_layers; i++)
		for (int b = 0; b < batch; b++) {
			const struct mime_task_params *tp = &e->tasks[tasks[b]];
			struct mime_mask_ref *mk = &e->masks[(int64_t)i * e->cfg.max_batch + b];

			*mk = e->L[i].masked >= 0
			              ? (struct mime_mask_ref){tp->thresholds[i], tp->granularity}
			              : (struct mime_mask_ref){NULL, MIME_THR_NONE};
		}
	e->job.batch = batch;
	e->job.tasks = tasks;
	/* This is the forward a prepare announced: its window closes, so that the threads do
	 * not poll on after it unless another prepare (a request accepted since) reopens it. */
	atomic_store(&e->in_forward, 1);
	atomic_store(&e->awake_until, 0);
	if (batch > 1 && batch >= e->cfg.n_threads) {
		/* Enough samples for every thread: split the batch, not the layers (with one
		 * thread too: groups of samples through the whole network keep the activations
		 * in cache, where layer after layer over the whole batch would not). */
		e->job.lp = NULL;
		e->job.in = in;
		parallel_run(e);
		goto done;
	}
	for (int i = 0; i < e->n_layers; i++) {
		const struct layer_plan *lp = &e->L[i];
		float *y = e->act[cur];

		switch (lp->spec->kind) {
		case MIME_LAYER_CONV:
		case MIME_LAYER_MAXPOOL: {
			/* A small layer runs on the calling thread alone: waking the others
			 * costs more than it saves (the chunks, and so the results, are the
			 * same whoever runs them). */
			const int solo = layer_is_small(lp, batch);

			e->job.lp = lp;
			e->job.in = x;
			e->job.out = y;
			if (solo)
				run_job(e, 0, 1);
			else
				parallel_run(e);
			if (lp->masked >= 0)
				for (int t = 0; t < (solo ? 1 : e->cfg.n_threads); t++)
					for (int b = 0; b < batch; b++)
						e->zeros[(int64_t)b * e->n_masked + lp->masked] +=
							e->ts[t].zeros[b];
			break;
		}
		case MIME_LAYER_FLATTEN:
			continue; /* NCHW per sample is already flat */
		case MIME_LAYER_FC:
			fc_range(e, lp, x, y, 0, batch, 0);
			break;
		}
		x = y;
		cur ^= 1;
	}
	heads_range(e, x, tasks, e->logits, batch);
done:
	atomic_store(&e->in_forward, 0); /* idle threads sleep now, unless prepared */
	*ret_result = (struct mime_engine_result){
		.batch = batch,
		.n_masked = e->n_masked,
		.max_classes = e->max_classes,
		.logits = e->logits,
		.zeros = e->zeros,
		.neurons = e->neurons,
		.masked_layer = e->masked_layer,
	};
	return 0;
}

void mime_engine_prepare(struct mime_engine *e)
{
	/* During a forward its threads are busy or poll between its layers; when it returns
	 * they sleep, and the next forward (a batch already queued) wakes them: on a machine
	 * with more runnable threads than cores, polling on between back-to-back batches took
	 * the CPU from the threads that parse, decode and reply (bench/RESULTS.md). */
	if (e->cfg.n_threads == 1 || atomic_load(&e->in_forward))
		return;
	atomic_store(&e->awake_until, mono_ns() + PREPARE_NS);
	if (atomic_load(&e->sleeping) > 0) {
		pthread_mutex_lock(&e->lock);
		pthread_cond_broadcast(&e->go);
		pthread_mutex_unlock(&e->lock);
	}
}

int mime_engine_threads_asleep(const struct mime_engine *e)
{
	return atomic_load(&((struct mime_engine *)e)->sleeping);
}

const struct mime_model *mime_engine_model(const struct mime_engine *e)
{
	return &e->model;
}

size_t mime_engine_plan_bytes(const struct mime_engine *e)
{
	return e->plan_bytes;
}

int64_t mime_engine_macs(const struct mime_engine *e, int task)
{
	int64_t macs = 0;

	for (int i = 0; i < e->n_layers; i++) {
		struct mime_layer_spec l = *e->L[i].spec;

		if (l.kind == MIME_LAYER_CONV || l.kind == MIME_LAYER_FC)
			l.out = e->L[i].out.c; /* the current phase's kernels */
		macs += mime_graph_layer_macs(&l, &e->L[i].in, &e->L[i].out);
	}
	if (task >= 0 && task < e->model.n_tasks)
		macs += (int64_t)e->model.tasks[task].n_classes * mime_shape_size(&e->feat);
	return macs;
}

int mime_topk(const float *logits, int n, int k, int *ret_class, float *ret_prob)
{
	double mx = -INFINITY, sum = 0.0;

	if (k > n)
		k = n;
	for (int i = 0; i < n; i++)
		mx = logits[i] > mx ? logits[i] : mx;
	for (int i = 0; i < n; i++)
		sum += exp((double)logits[i] - mx);
	for (int j = 0; j < k; j++) {
		int best = -1;

		for (int i = 0; i < n; i++) {
			int taken = 0;

			for (int q = 0; q < j; q++)
				taken |= ret_class[q] == i;
			if (!taken && (best < 0 || logits[i] > logits[best]))
				best = i;
		}
		ret_class[j] = best;
		ret_prob[j] = (float)(exp((double)logits[best] - mx) / sum);
	}
	return k;
}

int mime_engine_result_layer(const struct mime_engine *e, int k)
{
	return k >= 0 && k < e->n_masked ? e->masked_layer[k] : -1;
}

void mime_engine_describe(const struct mime_engine *e, enum mime_conv_impl *ret_conv,
                          struct mime_gemm_arch *ret_arch)
{
	if (ret_conv)
		*ret_conv = e->cfg.conv;
	if (ret_arch)
		*ret_arch = e->arch;
}

/* Drops the whole pages inside [p, p + n_bytes) of a read-only file mapping: the kernel reads
 * them back from the file if they are touched again. Advice only: errors are ignored. */
static void drop_file_pages(const void *p, size_t n_bytes)
{
	const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	const uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1);
	const uintptr_t hi = ((uintptr_t)p + n_bytes) & ~(page - 1);

	if (hi > lo)
		madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* The packed path reads a conv layer's weights from the model only while packing. When they
 * lie in a file mapping, drop their pages afterwards: the packed copy is then the only one
 * in memory, so RSS follows the phase (a coarse step down really frees memory) instead of
 * holding the whole parent twice. Only whole pages inside each array are dropped. */
static void release_packed_sources(struct mime_engine *e)
{
	if (!e->model.weights_file_backed || e->cfg.conv != MIME_CONV_PACKED)
		return;
	for (int i = 0; i < e->n_layers; i++) {
		const struct layer_plan *lp = &e->L[i];

		if (lp->spec->kind == MIME_LAYER_CONV)
			drop_file_pages(lp->w, sizeof(float) * (size_t)lp->spec->out * lp->lda);
	}
}

/* The masked W^T of layer lp under keep (its packing gw already selected with keep): the slot
 * built for that mask at this size, else the least recently used slot rebuilt from gw (the
 * columns gw runs; no model weight is read). NULL when the build fails (it cannot: sizes
 * were checked). */
static const struct mime_gemm_tweights *fine_tw(struct mime_engine *e, struct layer_plan *lp,
                                                const uint8_t *keep, int wuv)
{
	const int K = lp->gw.K, CRS = lp->gw.CRS;
	const size_t n = mime_phase_mask_groups(K, CRS, wuv);
	struct fine_tw *f = NULL;

	for (int i = 0; i < FINE_TW_SLOTS; i++) {
		struct fine_tw *s = &lp->fine[i];

		if (s->K == K && s->CRS == CRS && s->wuv == wuv && memcmp(s->keep, keep, n) == 0) {
			s->used = ++e->fine_clock;
			return &s->tw;
		}
		if (!f || s->used < f->used)
			f = s;
	}
	f->K = 0;
	if (mime_gemm_tweights_build(&f->tw, &lp->gw) < 0)
		return NULL;
	memcpy(f->keep, keep, n);
	f->K = K;
	f->CRS = CRS;
	f->wuv = wuv;
	f->used = ++e->fine_clock;
	return &f->tw;
}

static int has_halves(const struct mime_engine *e, const struct mime_task_params *tasks)
{
	for (int t = 0; t < e->model.n_tasks; t++) {
		if (tasks[t].head_w_half || tasks[t].head_b_half)
			return 1;
		for (int i = 0; tasks[t].granularity != MIME_THR_NONE && i < e->n_layers; i++)
			if (tasks[t].thresholds_half[i])
				return 1;
	}
	return 0;
}

/* Every tensor pointer of tasks (floats and halves), in a fixed order, as a slot's key:
 * key[DEC_KEY(e)]. */
#define DEC_KEY(e) ((size_t)(e)->model.n_tasks * (size_t)(2 + (e)->n_layers) * 2)
static void dec_key(const struct mime_engine *e, const struct mime_task_params *tasks,
                    const void **key)
{
	for (int t = 0; t < e->model.n_tasks; t++) {
		const struct mime_task_params *tp = &tasks[t];
		const int thr = tp->granularity != MIME_THR_NONE;

		*key++ = tp->head_w_half;
		*key++ = tp->head_b_half;
		*key++ = tp->head_w;
		*key++ = tp->head_b;
		for (int i = 0; i < e->n_layers; i++) {
			*key++ = thr ? tp->thresholds_half[i] : NULL;
			*key++ = thr ? tp->thresholds[i] : NULL;
		}
	}
}

static void dec_free(struct dec_slot *d)
{
	free(d->key);
	free(d->tasks);
	free(d->done);
	free(d->floats);
	memset(d, 0, sizeof(*d));
}

/* The slot that holds tasks decoded for layer sizes out[], or the one to decode them into
 * (empty or least recently used; never the current, which a failure must leave intact),
 * its memory allocated; *ret_hit says which. Returns the slot index or -ENOMEM. */
static int dec_find(struct mime_engine *e, const struct mime_task_params *tasks, const int64_t *out,
                    int *ret_hit)
{
	const size_t n_key = DEC_KEY(e);
	const void **key = malloc(sizeof(*key) * n_key);
	int pick = -1;

	if (!key)
		return -ENOMEM;
	dec_key(e, tasks, key);
	for (int i = 0; i < DEC_SLOTS; i++) {
		struct dec_slot *d = &e->dec[i];

		if (d->used && !memcmp(d->key, key, sizeof(*key) * n_key) &&
		    !memcmp(d->out, out, sizeof(d->out))) {
			free(key);
			*ret_hit = 1;
			return i;
		}
		if (i != e->dec_cur && (pick < 0 || d->used < e->dec[pick].used))
			pick = i;
	}
	*ret_hit = 0;
	if (!e->dec_cap) {
		size_t cap = (size_t)e->max_classes *
		             ((size_t)mime_shape_size(&e->L[e->n_layers - 1].full) + 1);

		for (int i = 0; i < e->n_layers; i++)
			if (e->L[i].masked >= 0)
				cap += (size_t)mime_shape_size(&e->L[i].full);
		e->dec_cap = cap;
	}
	if (!e->dec[pick].floats) {
		struct dec_slot *d = &e->dec[pick];

		d->tasks = calloc((size_t)e->model.n_tasks, sizeof(*d->tasks));
		d->done = calloc((size_t)e->model.n_tasks, 1);
		d->floats = malloc(sizeof(float) * e->dec_cap * (size_t)e->model.n_tasks);
		if (!d->tasks || !d->done || !d->floats) {
			free(key);
			dec_free(d);
			return -ENOMEM;
		}
	}
	free(e->dec[pick].key);
	e->dec[pick].key = key;
	e->dec[pick].used = 0; /* not valid until decoded */
	memcpy(e->dec[pick].out, out, sizeof(e->dec[pick].out));
	return pick;
}

/* The floats task tp's halves take in the current phase (layer shapes and e->feat final):
 * its head, then its thresholds layer by layer; at (if not NULL) gets them decoded, exactly
 * (every half is a float: a forward gives what it gives on the same values stored as F32),
 * and tp's float pointers point there. */
static size_t dec_task(const struct mime_engine *e, struct mime_task_params *tp, float *at)
{
	const size_t nc = (size_t)tp->n_classes, feat = (size_t)mime_shape_size(&e->feat);
	size_t n = 0;

	for (int k = -2; k < e->n_layers; k++) {
		const uint16_t *h;
		size_t cnt;

		if (k == -2) {
			h = tp->head_w_half;
			cnt = nc * feat;
		} else if (k == -1) {
			h = tp->head_b_half;
			cnt = nc;
		} else {
			const struct layer_plan *lp = &e->L[k];

			h = tp->thresholds_half[k];
			if (!h || lp->masked < 0 || tp->granularity == MIME_THR_NONE)
				continue;
			cnt = tp->granularity == MIME_THR_CHANNEL
			              ? (size_t)lp->out.c
			              : (size_t)mime_shape_size(&lp->out);
		}
		if (!h)
			continue;
		if (at) {
			mime_half_to_float_n(h, at + n, cnt);
			if (e->model.weights_file_backed) /* read once: the floats serve from now */
				drop_file_pages(h, sizeof(*h) * cnt);
			if (k == -2)
				tp->head_w = at + n;
			else if (k == -1)
				tp->head_b = at + n;
			else
				tp->thresholds[k] = at + n;
		}
		n += cnt;
	}
	if (at) {
		tp->head_w_half = tp->head_b_half = NULL;
		memset(tp->thresholds_half, 0, sizeof(tp->thresholds_half));
	}
	return n;
}

/* Slot d takes tasks (the phase just set up), none decoded yet; its bytes count as if all
 * were (what the phase will hold once every task has run). */
static void dec_assign(struct mime_engine *e, struct dec_slot *d,
                       const struct mime_task_params *tasks)
{
	d->n_floats = 0;
	for (int t = 0; t < e->model.n_tasks; t++) {
		d->tasks[t] = tasks[t];
		d->done[t] = 0;
		d->n_floats += dec_task(e, &d->tasks[t], NULL);
	}
}

/* Decodes, in the current phase's slot, the tasks of a batch that have not run in it yet. */
static void dec_batch(struct mime_engine *e, const int *tasks, int batch)
{
	struct dec_slot *d = &e->dec[e->dec_cur];

	for (int b = 0; b < batch; b++)
		if (!d->done[tasks[b]]) {
			dec_task(e, &d->tasks[tasks[b]], d->floats + (size_t)tasks[b] * e->dec_cap);
			d->done[tasks[b]] = 1;
		}
}

static size_t dec_bytes(const struct mime_engine *e)
{
	size_t n = 0;

	for (int i = 0; i < DEC_SLOTS; i++)
		if (e->dec[i].used)
			n += e->dec[i].n_floats * sizeof(float);
	return n;
}

int mime_engine_set_phase(struct mime_engine *e, const struct mime_phase *ph,
                          const struct mime_task_params *tasks, struct mime_errinfo *ei)
{
	static const struct mime_phase whole; /* const: every layer fully active */
	struct mime_shape in_s[MIME_MAX_LAYERS], out_s[MIME_MAX_LAYERS];
	struct mime_shape cur = e->model.graph.input;
	int64_t out_n[MIME_MAX_LAYERS] = {0};
	size_t packed = 0;
	int repacked = 0, slot = -1, hit = 0;

	if (!ph)
		ph = &whole;
	if (!tasks)
		tasks = e->model.tasks;
	for (int t = 0; t < e->model.n_tasks; t++)
		if (tasks[t].n_classes < 1 || tasks[t].n_classes > e->max_classes ||
		    (!tasks[t].head_w && !tasks[t].head_w_half) ||
		    (!tasks[t].head_b && !tasks[t].head_b_half))
			return mime_errinfo_set(ei, MIME_EINVAL,
			                        "phase: task %d has no usable head", t);
	/* Shapes of the sub-network. */
	for (int i = 0; i < e->n_layers; i++) {
		const struct layer_plan *lp = &e->L[i];
		const struct mime_phase_layer *pl = &ph->layer[i];
		struct mime_shape out = lp->full;

		switch (lp->spec->kind) {
		case MIME_LAYER_CONV:
		case MIME_LAYER_FC:
			out.c = pl->k_active ? pl->k_active : lp->spec->out;
			if (out.c < 1 || out.c > lp->spec->out)
				return mime_errinfo_set(
					ei, MIME_EINVAL,
					"phase: layer '%s': %d kernels active of %d",
					lp->spec->name, out.c, lp->spec->out);
			break;
		case MIME_LAYER_MAXPOOL:
			out.c = cur.c;
			break;
		case MIME_LAYER_FLATTEN:
			out = (struct mime_shape){(int)mime_shape_size(&cur), 1, 1};
			break;
		}
		if (pl->keep && (ph->wuv <= 0 || lp->spec->kind != MIME_LAYER_CONV))
			return mime_errinfo_set(ei, MIME_EINVAL,
			                        "phase: layer '%s': a fine-grain mask needs a conv "
			                        "layer and a group height",
			                        lp->spec->name);
		if (pl->keep && e->cfg.conv == MIME_CONV_BLAS)
			return mime_errinfo_set(
				ei, MIME_EUNSUPPORTED,
				"phase: fine-grain masks need the packed conv path");
		in_s[i] = cur;
		out_s[i] = out;
		out_n[i] = mime_shape_size(&out);
		cur = out;
	}
	if (has_halves(e, tasks)) {
		slot = dec_find(e, tasks, out_n, &hit);
		if (slot < 0)
			return mime_errinfo_set(ei, -ENOMEM,
			                        "phase: cannot allocate the decoded task tensors");
	}
	/* Checked: from here on nothing can fail (each layer's storage was sized for the whole
	 * parent when the engine was made). A layer whose kernels and input channels stay
	 * keeps its panels and only selects other columns: a fine-grain switch moves no weight.
	 * Others repack in place, selectable, unless the mask's groups are not whole panel
	 * columns (W_uv not a multiple of MR): then compact, the pruned groups left out. */
	for (int i = 0; i < e->n_layers; i++) {
		struct layer_plan *lp = &e->L[i];
		const uint8_t *keep = ph->layer[i].keep;
		const int K = out_s[i].c, CRS = in_s[i].c * lp->spec->kernel * lp->spec->kernel;
		int r = 0;

		lp->in = in_s[i];
		lp->out = out_s[i];
		if (lp->masked >= 0)
			e->neurons[lp->masked] = mime_shape_size(&lp->out);
		e->phase.layer[i] = (struct mime_phase_layer){out_s[i].c, NULL};
		if (lp->spec->kind != MIME_LAYER_CONV)
			continue;
		lp->geom.c = in_s[i].c;
		lp->geom.k = K;
		lp->crs = CRS;
		if (e->cfg.conv != MIME_CONV_PACKED)
			continue;
		if (keep && ph->wuv % e->arch.mr != 0) {
			/* Stated rule: block-sparse when at least 1 in 8 panel columns is all
			 * zero; below that the index costs about what it saves. */
			const int64_t cols = (int64_t)((K + e->arch.mr - 1) / e->arch.mr) * CRS;
			const int sparse = 8 * mime_gemm_zero_columns_sub(&e->arch, lp->w, lp->lda,
			                                                  K, CRS, keep, ph->wuv) >=
			                   cols;

			r = mime_gemm_weights_repack(&lp->gw, &e->arch, lp->w, lp->lda, K, CRS,
			                             keep, ph->wuv, sparse);
			repacked = 1;
			lp->tw_valid = 0; /* W^T follows the selectable packing only */
		} else {
			if (!lp->gw.live || lp->gw.K != K || lp->gw.CRS != CRS) {
				r = mime_gemm_weights_repack_selectable(&lp->gw, &e->arch, lp->w,
				                                        lp->lda, K, CRS);
				repacked = 1;
				/* W^T of the unmasked panels (from the packed values: the
				 * model's pages may have been dropped), built once per coarse
				 * step; a fine switch leaves it as it is. */
				if (r == 0 && lp->act) {
					r = mime_gemm_tweights_build(&lp->tw, &lp->gw);
					lp->tw_valid = r == 0;
				}
			}
			if (r == 0)
				r = mime_gemm_weights_select(&lp->gw, keep, ph->wuv);
		}
		assert(r == 0); /* sizes and wuv were checked */
		(void)r;
		lp->sparse = lp->gw.form != MIME_GEMM_DENSE;
		packed += mime_gemm_weights_bytes(&lp->gw);
		/* Input-sparse from the unmasked W^T without a fine-grain mask; with one, from
		 * that mask's W^T, built on its first entry and kept (rewriting one W^T at
		 * every fine switch cost hundreds of microseconds; finding the kept one costs
		 * a comparison of the mask). Compact packings (W_uv not a multiple of MR) run
		 * dense. */
		lp->tw_run = NULL;
		if (lp->act && lp->tw_valid)
			lp->tw_run = keep ? fine_tw(e, lp, keep, ph->wuv) : &lp->tw;
		lp->act_now = lp->tw_run != NULL;
		if (lp->act) { /* resident whether this phase uses them or not */
			packed += mime_gemm_tweights_bytes(&lp->tw);
			for (int f = 0; f < FINE_TW_SLOTS; f++)
				if (lp->fine[f].K) /* built: its W^T and the mask's copy */
					packed += mime_gemm_tweights_bytes(&lp->fine[f].tw) +
					          mime_phase_mask_groups(lp->fine[f].K,
					                                 lp->fine[f].CRS,
					                                 lp->fine[f].wuv);
		}
	}
	e->phase.wuv = ph->wuv;
	if (repacked)
		release_packed_sources(e);
	e->feat = cur;
	e->tasks = tasks;
	e->dec_cur = slot;
	if (slot >= 0) {
		if (!hit)
			dec_assign(e, &e->dec[slot], tasks);
		e->dec[slot].used = ++e->dec_clock;
		e->tasks = e->dec[slot].tasks;
	}
	e->plan_bytes = e->base_bytes + packed + dec_bytes(e);
	return 0;
}

void mime_engine_trim(struct mime_engine *e)
{
	size_t freed = dec_bytes(e);

	for (int i = 0; i < DEC_SLOTS; i++)
		if (i != e->dec_cur)
			dec_free(&e->dec[i]);
	freed -= dec_bytes(e);

	for (int i = 0; i < e->n_layers; i++) {
		struct layer_plan *lp = &e->L[i];

		if (!lp->act)
			continue;
		for (int f = 0; f < FINE_TW_SLOTS; f++) {
			struct fine_tw *s = &lp->fine[f];

			if (!s->K || lp->tw_run == &s->tw)
				continue;
			/* what mime_engine_set_phase counted for it */
			freed += mime_gemm_tweights_bytes(&s->tw) +
			         mime_phase_mask_groups(s->K, s->CRS, s->wuv);
			mime_gemm_tweights_release(&s->tw);
			s->K = 0; /* set_phase counts an empty slot as nothing */
			s->used = 0;
		}
	}
	e->plan_bytes -= freed;
}

int64_t mime_engine_neurons(const struct mime_engine *e, int k)
{
	return k >= 0 && k < e->n_masked ? e->neurons[k] : -1;
}
