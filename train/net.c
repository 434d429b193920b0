// SPDX-License-Identifier: MIT
/* net -- see net.h. The net is a list of ops (conv, bn, relu, maxpool, flatten, fc, head);
 * act[i] is op i's input and act[i + 1] its output, grad[i] the gradient of act[i]. */
#include "train/net.h"

#include <cblas.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum op_kind { OP_CONV, OP_BN, OP_RELU, OP_POOL, OP_FLATTEN, OP_FC };

struct op {
	enum op_kind kind;
	int layer;                 /* graph layer index; -1 for the head */
	struct mime_shape in, out; /* per sample */
	int flat_in;               /* input is [N][F] rather than [C][N][H][W] */
	int k, stride, pad;        /* conv, pool */
	float *w, *b, *gw, *gb;    /* conv/fc: weight, bias; bn: gamma, beta */
	float *run_mean, *run_var; /* bn */
	float *xhat, *inv_std;     /* bn: normalised input (train), 1/sqrt(var + eps) */
	float *col;                /* conv: im2col of the input, [C*R*S][N*OH*OW] */
	int32_t *argmax;           /* pool: flat input index per output */
	size_t n_w, n_b;
	const float *thr; /* relu: MIME thresholds in place of ReLU ([C,H,W] or [C]); NULL = ReLU */
	float *gthr;      /* relu under MIME: dLoss/dt, overwritten by backward */
	int thr_channel;  /* thr is [C] (one threshold per channel) */
};

struct pool {
	int n; /* threads including the caller */
	pthread_t *tids;
	int n_started;
	pthread_mutex_t mu;
	pthread_cond_t start, done;
	unsigned gen;
	int busy, stop;
	void (*fn)(void *arg, int tid, int nt);
	void *arg;
};

struct mimetrain_net {
	struct mime_graph graph;
	struct mimetrain_net_config cfg;
	int n_ops;
	struct op ops[2 * MIME_MAX_LAYERS + 4];
	float *act[2 * MIME_MAX_LAYERS + 5];
	float *grad[2 * MIME_MAX_LAYERS + 5];
	float *x_nchw_grad; /* input gradient in NCHW */
	float *dcol;        /* conv backward scratch, the largest col */
	uint8_t *labels;
	int n;        /* batch of the last forward */
	int features; /* head input */
	int n_params;
	struct mimetrain_param *params;
	struct pool pool;
	int frozen; /* graph layers get no weight gradients (mimetrain_net_set_frozen) */
};

uint64_t mimetrain_rng_derive(uint64_t seed, uint64_t stream)
{
	struct mimetrain_rng r;

	mimetrain_rng_seed(&r, seed ^ (stream * 0xD1B54A32D192ED03ull));
	mimetrain_rng_next(&r);
	return mimetrain_rng_next(&r);
}

int mimetrain_graph_vgg7(int width_div, struct mime_graph *ret_graph)
{
	static const struct {
		const char *name;
		enum mime_layer_kind kind;
		int out;
	} spec[] = {
		{"conv1", MIME_LAYER_CONV, 64},   {"pool1", MIME_LAYER_MAXPOOL, 0},
		{"conv2", MIME_LAYER_CONV, 128},  {"pool2", MIME_LAYER_MAXPOOL, 0},
		{"conv3", MIME_LAYER_CONV, 256},  {"conv4", MIME_LAYER_CONV, 256},
		{"pool3", MIME_LAYER_MAXPOOL, 0}, {"flatten", MIME_LAYER_FLATTEN, 0},
	};
	struct mime_graph g;

	if (width_div <= 0 || 64 % width_div != 0)
		return MIME_EINVAL;
	memset(&g, 0, sizeof(g));
	g.input = (struct mime_shape){1, 28, 28};
	g.n_layers = sizeof(spec) / sizeof(spec[0]);
	for (int i = 0; i < g.n_layers; i++) {
		struct mime_layer_spec *l = &g.layers[i];

		snprintf(l->name, sizeof(l->name), "%s", spec[i].name);
		l->kind = spec[i].kind;
		if (l->kind == MIME_LAYER_CONV) {
			l->out = spec[i].out / width_div;
			l->kernel = 3;
			l->stride = 1;
			l->pad = 1;
			l->act = MIME_ACT_RELU;
		} else if (l->kind == MIME_LAYER_MAXPOOL) {
			l->kernel = 2;
			l->stride = 2;
		}
	}
	*ret_graph = g;
	return 0;
}

/* ---- worker pool: run fn(arg, tid, nt) on every thread, the caller being tid 0 ---- */

static void *pool_main(void *arg_)
{
	struct pool *p = arg_;
	unsigned seen = 0;
	int tid;

	pthread_mutex_lock(&p->mu);
	tid = ++p->n_started;
	for (;;) {
		while (p->gen == seen && !p->stop)
			pthread_cond_wait(&p->start, &p->mu);
		if (p->stop)
			break;
		seen = p->gen;
		pthread_mutex_unlock(&p->mu);
		p->fn(p->arg, tid, p->n);
		pthread_mutex_lock(&p->mu);
		if (--p->busy == 0)
			pthread_cond_signal(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

static void pool_run(struct pool *p, void (*fn)(void *, int, int), void *arg)
{
	if (p->n <= 1) {
		fn(arg, 0, 1);
		return;
	}
	pthread_mutex_lock(&p->mu);
	p->fn = fn;
	p->arg = arg;
	p->busy = p->n - 1;
	p->gen++;
	pthread_cond_broadcast(&p->start);
	pthread_mutex_unlock(&p->mu);
	fn(arg, 0, p->n);
	pthread_mutex_lock(&p->mu);
	while (p->busy > 0)
		pthread_cond_wait(&p->done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

static int pool_init(struct pool *p, int n)
{
	int r;

	memset(p, 0, sizeof(*p));
	p->n = n;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->start, NULL);
	pthread_cond_init(&p->done, NULL);
	if (n <= 1)
		return 0;
	p->tids = calloc((size_t)n - 1, sizeof(*p->tids));
	if (!p->tids)
		return -ENOMEM;
	for (int i = 0; i < n - 1; i++) {
		r = pthread_create(&p->tids[i], NULL, pool_main, p);
		if (r != 0) {
			p->n = i + 1; /* pool_fini joins the ones that started */
			return -r;
		}
	}
	return 0;
}

static void pool_fini(struct pool *p)
{
	if (p->tids) {
		pthread_mutex_lock(&p->mu);
		p->stop = 1;
		pthread_cond_broadcast(&p->start);
		pthread_mutex_unlock(&p->mu);
		for (int i = 0; i < p->n - 1; i++)
			pthread_join(p->tids[i], NULL);
		free(p->tids);
	}
	pthread_cond_destroy(&p->done);
	pthread_cond_destroy(&p->start);
	pthread_mutex_destroy(&p->mu);
}

/* The share [*lo, *hi) of n items for thread tid of nt. */
static void split(long n, int tid, int nt, long *lo, long *hi)
{
	*lo = n * tid / nt;
	*hi = n * (tid + 1) / nt;
}

/* ---- conv ---- */

struct conv_job {
	const struct op *o;
	int n;
	const float *x; /* [C][N][H][W] */
	float *col;     /* [C*R*S][N*OH*OW] */
	float *dx;      /* col2im target */
};

static void im2col_job(void *arg, int tid, int nt)
{
	const struct conv_job *j = arg;
	const struct op *o = j->o;
	const int C = o->in.c, H = o->in.h, W = o->in.w, OH = o->out.h, OW = o->out.w;
	const int k = o->k, st = o->stride, pad = o->pad;
	const long np = (long)j->n * OH * OW;
	long lo, hi;

	split((long)C * k * k, tid, nt, &lo, &hi);
	for (long row = lo; row < hi; row++) {
		int c = (int)(row / (k * k)), r = (int)(row / k % k), s = (int)(row % k);
		float *dst = j->col + row * np;

		for (int b = 0; b < j->n; b++) {
			const float *src = j->x + ((long)c * j->n + b) * H * W;

			for (int oy = 0; oy < OH; oy++) {
				int iy = oy * st - pad + r;

				if (iy < 0 || iy >= H) {
					memset(dst, 0, sizeof(float) * OW);
					dst += OW;
					continue;
				}
				for (int ox = 0; ox < OW; ox++) {
					int ix = ox * st - pad + s;

					*dst++ = (ix >= 0 && ix < W) ? src[iy * W + ix] : 0.0f;
				}
			}
		}
	}
}

static void col2im_job(void *arg, int tid, int nt)
{
	const struct conv_job *j = arg;
	const struct op *o = j->o;
	const int C = o->in.c, H = o->in.h, W = o->in.w, OH = o->out.h, OW = o->out.w;
	const int k = o->k, st = o->stride, pad = o->pad;
	const long np = (long)j->n * OH * OW;
	long lo, hi;

	split(C, tid, nt, &lo, &hi);
	for (long c = lo; c < hi; c++) {
		memset(j->dx + c * j->n * H * W, 0, sizeof(float) * j->n * H * W);
		for (int r = 0; r < k; r++)
			for (int s = 0; s < k; s++) {
				const float *src = j->col + ((c * k + r) * k + s) * np;

				for (int b = 0; b < j->n; b++) {
					float *dst = j->dx + (c * j->n + b) * H * W;

					for (int oy = 0; oy < OH; oy++) {
						int iy = oy * st - pad + r;

						if (iy < 0 || iy >= H) {
							src += OW;
							continue;
						}
						for (int ox = 0; ox < OW; ox++, src++) {
							int ix = ox * st - pad + s;

							if (ix >= 0 && ix < W)
								dst[iy * W + ix] += *src;
						}
					}
				}
			}
	}
}

struct bias_job {
	float *y; /* [K][m] */
	const float *b;
	float *gb;
	long K, m;
};

static void bias_add_job(void *arg, int tid, int nt)
{
	const struct bias_job *j = arg;
	long lo, hi;

	split(j->K, tid, nt, &lo, &hi);
	for (long k = lo; k < hi; k++) {
		float *y = j->y + k * j->m, b = j->b[k];

		for (long i = 0; i < j->m; i++)
			y[i] += b;
	}
}

static void bias_grad_job(void *arg, int tid, int nt)
{
	const struct bias_job *j = arg;
	long lo, hi;

	split(j->K, tid, nt, &lo, &hi);
	for (long k = lo; k < hi; k++) {
		const float *y = j->y + k * j->m;
		double s = 0;

		for (long i = 0; i < j->m; i++)
			s += y[i];
		j->gb[k] = (float)s;
	}
}

static void conv_forward(struct mimetrain_net *net, struct op *o, const float *x, float *y, int n)
{
	const int K = o->out.c, crs = o->in.c * o->k * o->k;
	const long np = (long)n * o->out.h * o->out.w;
	struct conv_job j = {.o = o, .n = n, .x = x, .col = o->col};
	struct bias_job bj = {.y = y, .b = o->b, .K = K, .m = np};

	pool_run(&net->pool, im2col_job, &j);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, K, (int)np, crs, 1.0f, o->w, crs,
	            o->col, (int)np, 0.0f, y, (int)np);
	pool_run(&net->pool, bias_add_job, &bj);
}

static void conv_backward(struct mimetrain_net *net, struct op *o, const float *dy, float *dx,
                          int n)
{
	const int K = o->out.c, crs = o->in.c * o->k * o->k;
	const long np = (long)n * o->out.h * o->out.w;
	struct bias_job bj = {.y = (float *)dy, .gb = o->gb, .K = K, .m = np};

	pool_run(&net->pool, bias_grad_job, &bj);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, K, crs, (int)np, 1.0f, dy, (int)np,
	            o->col, (int)np, 0.0f, o->gw, crs);
	if (dx) {
		struct conv_job j = {.o = o, .n = n, .col = net->dcol, .dx = dx};

		cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, crs, (int)np, K, 1.0f, o->w,
		            crs, dy, (int)np, 0.0f, net->dcol, (int)np);
		pool_run(&net->pool, col2im_job, &j);
	}
}

/* A frozen conv: only dLoss/dx (no weight or bias gradient). */
static void conv_backward_frozen(struct mimetrain_net *net, struct op *o, const float *dy,
                                 float *dx, int n)
{
	const int K = o->out.c, crs = o->in.c * o->k * o->k;
	const long np = (long)n * o->out.h * o->out.w;
	struct conv_job j = {.o = o, .n = n, .col = net->dcol, .dx = dx};

	if (!dx)
		return;
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, crs, (int)np, K, 1.0f, o->w, crs, dy,
	            (int)np, 0.0f, net->dcol, (int)np);
	pool_run(&net->pool, col2im_job, &j);
}

/* ---- BatchNorm over [C][m] ---- */

struct bn_job {
	struct mimetrain_net *net;
	struct op *o;
	const float *x, *dy;
	float *y, *dx;
	long m;
	int train;
};

static void bn_forward_job(void *arg, int tid, int nt)
{
	const struct bn_job *j = arg;
	struct op *o = j->o;
	const float mom = j->net->cfg.bn_momentum, eps = j->net->cfg.bn_eps;
	const long m = j->m;
	long lo, hi;

	split(o->in.c, tid, nt, &lo, &hi);
	for (long c = lo; c < hi; c++) {
		const float *x = j->x + c * m;
		float *y = j->y + c * m, mean, inv, g = o->w[c], b = o->b[c];

		if (j->train) {
			double s = 0, ss = 0, var;
			float *xh = o->xhat + c * m;

			for (long i = 0; i < m; i++)
				s += x[i];
			s /= (double)m;
			for (long i = 0; i < m; i++) {
				double d = x[i] - s;

				ss += d * d;
			}
			var = ss / (double)m;
			mean = (float)s;
			inv = (float)(1.0 / sqrt(var + eps));
			o->inv_std[c] = inv;
			o->run_mean[c] = (1 - mom) * o->run_mean[c] + mom * mean;
			o->run_var[c] = (1 - mom) * o->run_var[c] +
			                mom * (float)(m > 1 ? ss / (double)(m - 1) : var);
			for (long i = 0; i < m; i++) {
				xh[i] = (x[i] - mean) * inv;
				y[i] = g * xh[i] + b;
			}
		} else {
			mean = o->run_mean[c];
			inv = 1.0f / sqrtf(o->run_var[c] + eps);
			for (long i = 0; i < m; i++)
				y[i] = g * (x[i] - mean) * inv + b;
		}
	}
}

static void bn_backward_job(void *arg, int tid, int nt)
{
	const struct bn_job *j = arg;
	struct op *o = j->o;
	const long m = j->m;
	long lo, hi;

	split(o->in.c, tid, nt, &lo, &hi);
	for (long c = lo; c < hi; c++) {
		const float *dy = j->dy + c * m, *xh = o->xhat + c * m;
		double sg = 0, sb = 0;

		for (long i = 0; i < m; i++) {
			sg += (double)dy[i] * xh[i];
			sb += dy[i];
		}
		o->gw[c] = (float)sg;
		o->gb[c] = (float)sb;
		if (j->dx) {
			float *dx = j->dx + c * m;
			const float f = o->w[c] * o->inv_std[c] / (float)m;
			const float fsg = (float)sg, fsb = (float)sb, fm = (float)m;

			for (long i = 0; i < m; i++)
				dx[i] = f * (fm * dy[i] - fsb - xh[i] * fsg);
		}
	}
}

/* ---- ReLU ---- */

struct ew_job {
	const float *x, *y, *dy;
	float *out;
	long n;
};

static void relu_forward_job(void *arg, int tid, int nt)
{
	const struct ew_job *j = arg;
	long lo, hi;

	split(j->n, tid, nt, &lo, &hi);
	for (long i = lo; i < hi; i++)
		j->out[i] = j->x[i] > 0.0f ? j->x[i] : 0.0f;
}

static void relu_backward_job(void *arg, int tid, int nt)
{
	const struct ew_job *j = arg;
	long lo, hi;

	split(j->n, tid, nt, &lo, &hi);
	for (long i = lo; i < hi; i++)
		j->out[i] = j->y[i] > 0.0f ? j->dy[i] : 0.0f;
}

/* ---- MIME threshold mask in place of ReLU (mimetrain_net_set_threshold) ----
 * Forward: m = (y - t >= 0), a = y * m (written as m ? y : +0, so t = 0 gives ReLU's bits).
 * Backward, the step's straight-through estimate of Dynamic Sparse Training (Liu et al.
 * 2020): H'(x) = 2 - 4|x| for |x| <= 0.4, 0.4 for 0.4 < |x| <= 1, 0 beyond; then
 *   da/dy = m + y H'(y - t),   da/dt = -y H'(y - t),
 * dL/dt summed over the minibatch (and over H, W for per-channel thresholds). */

/* H'(x) without branches, so that the mask loops below vectorise: for |x| <= 0.4,
 * 2 - 4|x| >= 0.4; for 0.4 < |x| <= 1 it is below 0.4, so the max gives 0.4; beyond, 0. */
static inline float dstep(float x)
{
	const float ax = fabsf(x);

	return ax <= 1.0f ? fmaxf(2.0f - 4.0f * ax, 0.4f) : 0.0f;
}

float mimetrain_mask_dstep(float x)
{
	return dstep(x);
}

struct mask_job {
	const struct op *o;
	int n;
	const float *x, *dy; /* x: the pre-activation y; dy: dLoss/da */
	float *y, *dx;       /* y: the activation a; dx: dLoss/dy */
};

/* The thresholds of channel c: per element, t[p] for pixel p of its plane (stride 1);
 * per channel, t[0] for all (stride 0). Flat inputs are one pixel per "channel". */
static inline const float *mask_thr(const struct op *o, long c, long hw, long *ret_stride)
{
	*ret_stride = o->thr_channel ? 0 : 1;
	return o->thr_channel ? o->thr + c : o->thr + c * hw;
}

static void mask_forward_job(void *arg, int tid, int nt)
{
	const struct mask_job *j = arg;
	const struct op *o = j->o;
	const long hw = o->flat_in ? 1 : (long)o->in.h * o->in.w;
	const long C = o->flat_in ? mime_shape_size(&o->in) : o->in.c;
	long lo, hi;

	split(C, tid, nt, &lo, &hi);
	for (long c = lo; c < hi; c++) {
		long ts;
		const float *t = mask_thr(o, c, hw, &ts);

		for (int b = 0; b < j->n; b++) {
			/* spatial: [C][N][HW]; flat: [N][F] with F = C */
			const long base = o->flat_in ? (long)b * C + c : (c * j->n + b) * hw;
			const float *x = j->x + base;
			float *y = j->y + base;

			for (long p = 0; p < hw; p++) {
				const float v = x[p];

				y[p] = (v - t[p * ts] >= 0.0f && v != 0.0f) ? v : 0.0f;
			}
		}
	}
}

static void mask_backward_job(void *arg, int tid, int nt)
{
	const struct mask_job *j = arg;
	const struct op *o = j->o;
	const long hw = o->flat_in ? 1 : (long)o->in.h * o->in.w;
	const long C = o->flat_in ? mime_shape_size(&o->in) : o->in.c;
	long lo, hi;

	split(C, tid, nt, &lo, &hi);
	for (long c = lo; c < hi; c++) {
		long ts;
		const float *t = mask_thr(o, c, hw, &ts);
		float *gt = o->thr_channel ? NULL : o->gthr + c * hw;
		double gc = 0; /* per channel: the sum over the batch and the plane */

		if (gt)
			memset(gt, 0, sizeof(float) * (size_t)hw);
		for (int b = 0; b < j->n; b++) {
			const long base = o->flat_in ? (long)b * C + c : (c * j->n + b) * hw;
			const float *x = j->x + base, *dy = j->dy + base;
			float *dx = j->dx ? j->dx + base : NULL;
			float part = 0; /* this sample's share of gc */

			for (long p = 0; p < hw; p++) {
				const float y = x[p], d = y - t[p * ts], h = dstep(d);
				const float m = d >= 0.0f ? 1.0f : 0.0f;

				if (dx)
					dx[p] = dy[p] * (m + y * h);
				if (gt)
					gt[p] += -dy[p] * y * h;
				else
					part += -dy[p] * y * h;
			}
			gc += part;
		}
		if (!gt)
			o->gthr[c] = (float)gc;
	}
}

/* ---- maxpool over planes [C*N][H][W] ---- */

struct pool_job {
	struct op *o;
	const float *x, *dy;
	float *y, *dx;
	long planes;
};

static void maxpool_forward_job(void *arg, int tid, int nt)
{
	const struct pool_job *j = arg;
	const struct op *o = j->o;
	const int H = o->in.h, W = o->in.w, OH = o->out.h, OW = o->out.w, k = o->k, st = o->stride;
	long lo, hi;

	split(j->planes, tid, nt, &lo, &hi);
	for (long p = lo; p < hi; p++) {
		const float *x = j->x + p * H * W;
		float *y = j->y + p * OH * OW;
		int32_t *am = o->argmax + p * OH * OW;

		for (int oy = 0; oy < OH; oy++)
			for (int ox = 0; ox < OW; ox++) {
				int best = (oy * st) * W + ox * st;
				float bv = x[best];

				for (int r = 0; r < k; r++)
					for (int s = 0; s < k; s++) {
						int idx = (oy * st + r) * W + ox * st + s;

						if (x[idx] > bv) {
							bv = x[idx];
							best = idx;
						}
					}
				y[oy * OW + ox] = bv;
				am[oy * OW + ox] = best;
			}
	}
}

static void maxpool_backward_job(void *arg, int tid, int nt)
{
	const struct pool_job *j = arg;
	const struct op *o = j->o;
	const long isz = (long)o->in.h * o->in.w, osz = (long)o->out.h * o->out.w;
	long lo, hi;

	split(j->planes, tid, nt, &lo, &hi);
	for (long p = lo; p < hi; p++) {
		float *dx = j->dx + p * isz;
		const float *dy = j->dy + p * osz;
		const int32_t *am = o->argmax + p * osz;

		memset(dx, 0, sizeof(float) * isz);
		for (long i = 0; i < osz; i++)
			dx[am[i]] += dy[i];
	}
}

/* ---- layout changes: [C][N][HW] <-> [N][C][HW] ---- */

static void cn_to_nc(const float *x, float *y, int C, int n, long hw)
{
	for (int c = 0; c < C; c++)
		for (int b = 0; b < n; b++)
			memcpy(y + ((long)b * C + c) * hw, x + ((long)c * n + b) * hw,
			       sizeof(float) * hw);
}

static void nc_to_cn(const float *x, float *y, int C, int n, long hw)
{
	for (int c = 0; c < C; c++)
		for (int b = 0; b < n; b++)
			memcpy(y + ((long)c * n + b) * hw, x + ((long)b * C + c) * hw,
			       sizeof(float) * hw);
}

/* ---- fc: y[N][out] = x[N][in] W^T + b ---- */

static void fc_forward(struct op *o, const float *x, float *y, int n)
{
	const int in = (int)mime_shape_size(&o->in), out = o->out.c;

	for (int b = 0; b < n; b++)
		memcpy(y + (long)b * out, o->b, sizeof(float) * out);
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, o->w, in,
	            1.0f, y, out);
}

static void fc_backward(struct op *o, const float *x, const float *dy, float *dx, int n)
{
	const int in = (int)mime_shape_size(&o->in), out = o->out.c;

	for (int k = 0; k < out; k++) {
		double s = 0;

		for (int b = 0; b < n; b++)
			s += dy[(long)b * out + k];
		o->gb[k] = (float)s;
	}
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in, 0.0f,
	            o->gw, in);
	if (dx)
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out,
		            o->w, in, 0.0f, dx, in);
}

/* ---- building ---- */

static int add_param(struct mimetrain_net *net, const char *layer, const char *what, float *w,
                     float *g, size_t n, int decay)
{
	struct mimetrain_param *p;

	p = realloc(net->params, sizeof(*p) * (net->n_params + 1));
	if (!p)
		return -ENOMEM;
	net->params = p;
	p = &net->params[net->n_params++];
	snprintf(p->name, sizeof(p->name), "%s.%s", layer, what);
	p->w = w;
	p->g = g;
	p->n = n;
	p->decay = decay;
	return 0;
}

static double rng_normal(struct mimetrain_rng *r)
{
	double u1 = mimetrain_rng_uniform(r), u2 = mimetrain_rng_uniform(r);

	return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

static struct op *add_op(struct mimetrain_net *net, enum op_kind kind, int layer,
                         struct mime_shape in, int flat_in)
{
	struct op *o = &net->ops[net->n_ops++];

	memset(o, 0, sizeof(*o));
	o->kind = kind;
	o->layer = layer;
	o->in = in;
	o->out = in;
	o->flat_in = flat_in;
	return o;
}

/* Allocates weights (Kaiming normal, fan_in) and gradients for a conv/fc op. */
static int alloc_weights(struct mimetrain_net *net, struct op *o, const char *name,
                         struct mimetrain_rng *rng)
{
	size_t fan_in = o->kind == OP_CONV ? (size_t)o->in.c * o->k * o->k
	                                   : (size_t)mime_shape_size(&o->in);
	double sd = sqrt(2.0 / (double)fan_in);
	int r;

	o->n_w = (size_t)o->out.c * fan_in;
	o->n_b = (size_t)o->out.c;
	o->w = calloc(o->n_w, sizeof(float));
	o->gw = calloc(o->n_w, sizeof(float));
	o->b = calloc(o->n_b, sizeof(float));
	o->gb = calloc(o->n_b, sizeof(float));
	if (!o->w || !o->gw || !o->b || !o->gb)
		return -ENOMEM;
	for (size_t i = 0; i < o->n_w; i++)
		o->w[i] = (float)(sd * rng_normal(rng));
	r = add_param(net, name, "weight", o->w, o->gw, o->n_w, 1);
	if (r < 0)
		return r;
	return add_param(net, name, "bias", o->b, o->gb, o->n_b, 0);
}

static int alloc_bn(struct mimetrain_net *net, struct op *o, const char *name, int max_batch)
{
	const int C = o->in.c;
	char bn_name[MIME_NAME_MAX + 8];
	int r;

	o->n_w = o->n_b = (size_t)C;
	o->w = malloc(sizeof(float) * C);
	o->b = calloc(C, sizeof(float));
	o->gw = calloc(C, sizeof(float));
	o->gb = calloc(C, sizeof(float));
	o->run_mean = calloc(C, sizeof(float));
	o->run_var = malloc(sizeof(float) * C);
	o->inv_std = calloc(C, sizeof(float));
	o->xhat = calloc((size_t)max_batch * mime_shape_size(&o->in), sizeof(float));
	if (!o->w || !o->b || !o->gw || !o->gb || !o->run_mean || !o->run_var || !o->inv_std ||
	    !o->xhat)
		return -ENOMEM;
	for (int c = 0; c < C; c++)
		o->w[c] = o->run_var[c] = 1.0f;
	snprintf(bn_name, sizeof(bn_name), "%s.bn", name);
	r = add_param(net, bn_name, "gamma", o->w, o->gw, C, 0);
	if (r < 0)
		return r;
	return add_param(net, bn_name, "beta", o->b, o->gb, C, 0);
}

static int net_build(struct mimetrain_net *net, struct mime_errinfo *ei)
{
	const struct mime_graph *g = &net->graph;
	const int B = net->cfg.max_batch;
	struct mime_shape s = g->input;
	struct mimetrain_rng rng;
	size_t max_col = 0;
	int flat = 0, r;
	struct op *o;

	mimetrain_rng_seed(&rng, mimetrain_rng_derive(net->cfg.seed, 0x1417));
	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];

		switch (l->kind) {
		case MIME_LAYER_CONV:
			if (flat)
				return mime_errinfo_set(ei, MIME_EGRAPH,
				                        "net: conv '%s' after flatten", l->name);
			o = add_op(net, OP_CONV, i, s, 0);
			o->k = l->kernel;
			o->stride = l->stride;
			o->pad = l->pad;
			o->out.c = l->out;
			o->out.h = (s.h + 2 * l->pad - l->kernel) / l->stride + 1;
			o->out.w = (s.w + 2 * l->pad - l->kernel) / l->stride + 1;
			r = alloc_weights(net, o, l->name, &rng);
			if (r < 0)
				return r;
			{
				size_t col = (size_t)s.c * o->k * o->k * B * o->out.h * o->out.w;

				o->col = malloc(sizeof(float) * col);
				if (!o->col)
					return -ENOMEM;
				if (col > max_col)
					max_col = col;
			}
			s = o->out;
			if (net->cfg.batchnorm) {
				o = add_op(net, OP_BN, i, s, 0);
				r = alloc_bn(net, o, l->name, B);
				if (r < 0)
					return r;
			}
			break;
		case MIME_LAYER_MAXPOOL:
			if (flat)
				return mime_errinfo_set(ei, MIME_EGRAPH,
				                        "net: maxpool '%s' after flatten", l->name);
			o = add_op(net, OP_POOL, i, s, 0);
			o->k = l->kernel;
			o->stride = l->stride;
			o->out.h = (s.h - l->kernel) / l->stride + 1;
			o->out.w = (s.w - l->kernel) / l->stride + 1;
			o->argmax = malloc(sizeof(int32_t) * B * mime_shape_size(&o->out));
			if (!o->argmax)
				return -ENOMEM;
			s = o->out;
			break;
		case MIME_LAYER_FLATTEN:
			o = add_op(net, OP_FLATTEN, i, s, flat);
			s = (struct mime_shape){(int)mime_shape_size(&s), 1, 1};
			o->out = s;
			flat = 1;
			break;
		case MIME_LAYER_FC:
			if (!flat) /* mime_graph_check guarantees a 1x1 input: make it [N][F] */
				add_op(net, OP_FLATTEN, i, s, 0);
			flat = 1;
			o = add_op(net, OP_FC, i, s, 1);
			o->out = (struct mime_shape){l->out, 1, 1};
			r = alloc_weights(net, o, l->name, &rng);
			if (r < 0)
				return r;
			s = o->out;
			break;
		}
		if (l->act == MIME_ACT_RELU)
			add_op(net, OP_RELU, i, s, flat);
	}
	if (!flat) {
		add_op(net, OP_FLATTEN, -1, s, 0);
		s = (struct mime_shape){(int)mime_shape_size(&s), 1, 1};
		net->ops[net->n_ops - 1].out = s;
	}
	net->features = s.c;
	o = add_op(net, OP_FC, -1, s, 1);
	o->out = (struct mime_shape){net->cfg.n_classes, 1, 1};
	r = alloc_weights(net, o, "head", &rng);
	if (r < 0)
		return r;

	for (int i = 0; i <= net->n_ops; i++) {
		const struct mime_shape *sh =
			i < net->n_ops ? &net->ops[i].in : &net->ops[i - 1].out;
		size_t sz = (size_t)B * mime_shape_size(sh);

		net->act[i] = malloc(sizeof(float) * sz);
		net->grad[i] = malloc(sizeof(float) * sz);
		if (!net->act[i] || !net->grad[i])
			return -ENOMEM;
	}
	net->x_nchw_grad = malloc(sizeof(float) * B * mime_shape_size(&g->input));
	net->labels = malloc(B);
	net->dcol = malloc(sizeof(float) * (max_col ? max_col : 1));
	if (!net->x_nchw_grad || !net->labels || !net->dcol)
		return -ENOMEM;
	return 0;
}

int mimetrain_net_create(const struct mime_graph *g, const struct mimetrain_net_config *cfg,
                         struct mimetrain_net **ret_net, struct mime_errinfo *ei)
{
	struct mimetrain_net *net;
	int r;

	r = mime_graph_check(g, NULL, ei);
	if (r < 0)
		return r;
	if (cfg->n_classes <= 0 || cfg->max_batch <= 0 || cfg->threads <= 0 || cfg->threads > 256)
		return mime_errinfo_set(ei, MIME_EINVAL, "net: bad config");
	net = calloc(1, sizeof(*net));
	if (!net)
		return -ENOMEM;
	net->graph = *g;
	net->cfg = *cfg;
	if (net->cfg.bn_momentum <= 0)
		net->cfg.bn_momentum = 0.1f;
	if (net->cfg.bn_eps <= 0)
		net->cfg.bn_eps = 1e-5f;
	r = pool_init(&net->pool, cfg->threads);
	if (r < 0) {
		mime_errinfo_set(ei, r, "net: cannot start threads");
		goto out_destroy;
	}
	r = net_build(net, ei);
	if (r < 0)
		goto out_destroy;
	*ret_net = net;
	return 0;

out_destroy:
	mimetrain_net_destroy(net);
	return r;
}

void mimetrain_net_destroy(struct mimetrain_net *net)
{
	if (!net)
		return;
	pool_fini(&net->pool);
	for (int i = 0; i < net->n_ops; i++) {
		struct op *o = &net->ops[i];

		free(o->w);
		free(o->b);
		free(o->gw);
		free(o->gb);
		free(o->run_mean);
		free(o->run_var);
		free(o->xhat);
		free(o->inv_std);
		free(o->col);
		free(o->argmax);
	}
	for (int i = 0; i <= net->n_ops; i++) {
		free(net->act[i]);
		free(net->grad[i]);
	}
	free(net->x_nchw_grad);
	free(net->labels);
	free(net->dcol);
	free(net->params);
	free(net);
}

const struct mime_graph *mimetrain_net_graph(const struct mimetrain_net *net)
{
	return &net->graph;
}

int mimetrain_net_features(const struct mimetrain_net *net)
{
	return net->features;
}

struct mimetrain_param *mimetrain_net_params(struct mimetrain_net *net, int *ret_n)
{
	*ret_n = net->n_params;
	return net->params;
}

/* ---- forward / backward ---- */

/* The lowest op whose backward matters: 0 unless frozen; frozen, the lowest thresholded
 * ReLU, else the head. */
static int lowest_trainable_op(const struct mimetrain_net *net)
{
	if (!net->frozen)
		return 0;
	for (int i = 0; i < net->n_ops; i++)
		if (net->ops[i].kind == OP_RELU && net->ops[i].thr)
			return i;
	return net->n_ops - 1;
}

const float *mimetrain_net_forward(struct mimetrain_net *net, const float *x, int n, int train)
{
	const struct mime_shape *in = &net->graph.input;

	if (n <= 0 || n > net->cfg.max_batch)
		return NULL;
	net->n = n;
	nc_to_cn(x, net->act[0], in->c, n, (long)in->h * in->w);
	for (int i = 0; i < net->n_ops; i++) {
		struct op *o = &net->ops[i];
		const float *a = net->act[i];
		float *y = net->act[i + 1];

		switch (o->kind) {
		case OP_CONV:
			conv_forward(net, o, a, y, n);
			break;
		case OP_BN: {
			struct bn_job j = {.net = net,
			                   .o = o,
			                   .x = a,
			                   .y = y,
			                   .m = (long)n * o->in.h * o->in.w,
			                   .train = train};

			pool_run(&net->pool, bn_forward_job, &j);
			break;
		}
		case OP_RELU: {
			struct ew_job j = {
				.x = a, .out = y, .n = (long)n * mime_shape_size(&o->in)};
			struct mask_job mj = {.o = o, .n = n, .x = a, .y = y};

			if (o->thr)
				pool_run(&net->pool, mask_forward_job, &mj);
			else
				pool_run(&net->pool, relu_forward_job, &j);
			break;
		}
		case OP_POOL: {
			struct pool_job j = {.o = o, .x = a, .y = y, .planes = (long)o->in.c * n};

			pool_run(&net->pool, maxpool_forward_job, &j);
			break;
		}
		case OP_FLATTEN:
			if (o->flat_in)
				memcpy(y, a, sizeof(float) * n * mime_shape_size(&o->in));
			else
				cn_to_nc(a, y, o->in.c, n, (long)o->in.h * o->in.w);
			break;
		case OP_FC:
			fc_forward(o, a, y, n);
			break;
		}
	}
	return net->act[net->n_ops];
}

double mimetrain_net_loss(struct mimetrain_net *net, const uint8_t *labels, int *ret_correct)
{
	const int n = net->n, K = net->cfg.n_classes;
	const float *z = net->act[net->n_ops];
	float *dz = net->grad[net->n_ops];
	double loss = 0;
	int correct = 0;

	memcpy(net->labels, labels, n);
	for (int b = 0; b < n; b++) {
		const float *zb = z + (long)b * K;
		float *db = dz + (long)b * K;
		float mx = zb[0];
		int arg = 0;
		double sum = 0;

		for (int k = 1; k < K; k++)
			if (zb[k] > mx) {
				mx = zb[k];
				arg = k;
			}
		correct += arg == labels[b];
		for (int k = 0; k < K; k++)
			sum += exp((double)zb[k] - mx);
		loss += log(sum) - ((double)zb[labels[b]] - mx);
		for (int k = 0; k < K; k++)
			db[k] = (float)(exp((double)zb[k] - mx) / sum / n);
		db[labels[b]] -= 1.0f / (float)n;
	}
	if (ret_correct)
		*ret_correct = correct;
	return loss / n;
}

void mimetrain_net_backward(struct mimetrain_net *net, int want_input_grad)
{
	const struct mime_shape *in = &net->graph.input;
	const int n = net->n;
	const int stop = want_input_grad ? 0 : lowest_trainable_op(net);

	for (int i = net->n_ops - 1; i >= stop; i--) {
		struct op *o = &net->ops[i];
		const float *dy = net->grad[i + 1];
		float *dx = (i > 0 || want_input_grad) ? net->grad[i] : NULL;

		switch (o->kind) {
		case OP_CONV:
			if (net->frozen && o->layer >= 0)
				conv_backward_frozen(net, o, dy, dx, n);
			else
				conv_backward(net, o, dy, dx, n);
			break;
		case OP_BN: {
			struct bn_job j = {.net = net,
			                   .o = o,
			                   .dy = dy,
			                   .dx = dx,
			                   .m = (long)n * o->in.h * o->in.w};

			pool_run(&net->pool, bn_backward_job, &j);
			break;
		}
		case OP_RELU:
			if (o->thr) {
				struct mask_job mj = {
					.o = o, .n = n, .x = net->act[i], .dy = dy, .dx = dx};

				pool_run(&net->pool, mask_backward_job, &mj);
			} else if (dx) {
				struct ew_job j = {.y = net->act[i + 1],
				                   .dy = dy,
				                   .out = dx,
				                   .n = (long)n * mime_shape_size(&o->in)};

				pool_run(&net->pool, relu_backward_job, &j);
			}
			break;
		case OP_POOL:
			if (dx) {
				struct pool_job j = {
					.o = o, .dy = dy, .dx = dx, .planes = (long)o->in.c * n};

				pool_run(&net->pool, maxpool_backward_job, &j);
			}
			break;
		case OP_FLATTEN:
			if (!dx)
				break;
			if (o->flat_in)
				memcpy(dx, dy, sizeof(float) * n * mime_shape_size(&o->in));
			else
				nc_to_cn(dy, dx, o->in.c, n, (long)o->in.h * o->in.w);
			break;
		case OP_FC:
			if (net->frozen && o->layer >= 0) {
				if (dx) /* frozen: only the gradient of the input */
					cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n,
					            (int)mime_shape_size(&o->in), o->out.c, 1.0f,
					            dy, o->out.c, o->w,
					            (int)mime_shape_size(&o->in), 0.0f, dx,
					            (int)mime_shape_size(&o->in));
			} else {
				fc_backward(o, net->act[i], dy, dx, n);
			}
			break;
		}
	}
	if (want_input_grad)
		cn_to_nc(net->grad[0], net->x_nchw_grad, in->c, n, (long)in->h * in->w);
}

const float *mimetrain_net_input_grad(const struct mimetrain_net *net)
{
	return net->x_nchw_grad;
}

/* ---- export ---- */

static struct op *layer_op(const struct mimetrain_net *net, int i, enum op_kind kind)
{
	for (int k = 0; k < net->n_ops; k++)
		if (net->ops[k].layer == i && net->ops[k].kind == kind)
			return (struct op *)&net->ops[k];
	return NULL;
}

int mimetrain_net_folded(const struct mimetrain_net *net, int i, float *ret_w, float *ret_b)
{
	const struct op *o, *bn;
	size_t per;

	if (i < 0 || i >= net->graph.n_layers)
		return MIME_EINVAL;
	o = layer_op(net, i, OP_CONV);
	if (!o)
		o = layer_op(net, i, OP_FC);
	if (!o)
		return MIME_EINVAL;
	bn = layer_op(net, i, OP_BN);
	per = o->n_w / o->n_b;
	for (size_t k = 0; k < o->n_b; k++) {
		float scale = 1.0f, shift = 0.0f;

		if (bn) {
			scale = bn->w[k] / sqrtf(bn->run_var[k] + net->cfg.bn_eps);
			shift = bn->b[k] - bn->run_mean[k] * scale;
		}
		for (size_t j = 0; j < per; j++)
			ret_w[k * per + j] = o->w[k * per + j] * scale;
		ret_b[k] = o->b[k] * scale + shift;
	}
	return 0;
}

void mimetrain_net_head(const struct mimetrain_net *net, const float **ret_w, const float **ret_b)
{
	const struct op *o = &net->ops[net->n_ops - 1];

	*ret_w = o->w;
	*ret_b = o->b;
}

int mimetrain_net_set_layer(struct mimetrain_net *net, int i, const float *w, const float *b)
{
	struct op *o, *bn;

	if (i < 0 || i >= net->graph.n_layers)
		return MIME_EINVAL;
	o = layer_op(net, i, OP_CONV);
	if (!o)
		o = layer_op(net, i, OP_FC);
	if (!o)
		return MIME_EINVAL;
	memcpy(o->w, w, sizeof(float) * o->n_w);
	memcpy(o->b, b, sizeof(float) * o->n_b);
	bn = layer_op(net, i, OP_BN);
	if (bn)
		for (size_t k = 0; k < bn->n_w; k++) {
			bn->w[k] = 1.0f;
			bn->b[k] = 0.0f;
			bn->run_mean[k] = 0.0f;
			bn->run_var[k] = 1.0f - net->cfg.bn_eps;
		}
	return 0;
}

/* ---- save / load: per param its float count (uint64) and floats; then per BN op its
 * running mean and variance ---- */

static int write_floats(FILE *f, const float *x, size_t n)
{
	uint64_t n64 = n;

	if (fwrite(&n64, sizeof(n64), 1, f) != 1 || fwrite(x, sizeof(float), n, f) != n)
		return -EIO;
	return 0;
}

static int read_floats(FILE *f, float *x, size_t n, struct mime_errinfo *ei)
{
	uint64_t n64;

	if (fread(&n64, sizeof(n64), 1, f) != 1)
		return mime_errinfo_set(ei, MIME_EFORMAT, "checkpoint truncated");
	if (n64 != n)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "checkpoint tensor has %llu floats, net wants %zu",
		                        (unsigned long long)n64, n);
	if (fread(x, sizeof(float), n, f) != n)
		return mime_errinfo_set(ei, MIME_EFORMAT, "checkpoint truncated");
	return 0;
}

int mimetrain_net_save(const struct mimetrain_net *net, FILE *f)
{
	int r;

	for (int i = 0; i < net->n_params; i++) {
		r = write_floats(f, net->params[i].w, net->params[i].n);
		if (r < 0)
			return r;
	}
	for (int i = 0; i < net->n_ops; i++) {
		const struct op *o = &net->ops[i];

		if (o->kind != OP_BN)
			continue;
		r = write_floats(f, o->run_mean, o->n_w);
		if (r < 0)
			return r;
		r = write_floats(f, o->run_var, o->n_w);
		if (r < 0)
			return r;
	}
	return 0;
}

int mimetrain_net_load(struct mimetrain_net *net, FILE *f, struct mime_errinfo *ei)
{
	int r;

	for (int i = 0; i < net->n_params; i++) {
		r = read_floats(f, net->params[i].w, net->params[i].n, ei);
		if (r < 0)
			return r;
	}
	for (int i = 0; i < net->n_ops; i++) {
		struct op *o = &net->ops[i];

		if (o->kind != OP_BN)
			continue;
		r = read_floats(f, o->run_mean, o->n_w, ei);
		if (r < 0)
			return r;
		r = read_floats(f, o->run_var, o->n_w, ei);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- MIME hooks (additive) ---- */

int mimetrain_net_set_threshold(struct mimetrain_net *net, int i, const float *t, float *gt,
                                int per_channel)
{
	struct op *o;

	if (i < 0 || i >= net->graph.n_layers)
		return MIME_EINVAL;
	o = layer_op(net, i, OP_RELU);
	if (!o || (t && !gt))
		return MIME_EINVAL;
	o->thr = t;
	o->gthr = t ? gt : NULL;
	o->thr_channel = t ? per_channel : 0;
	return 0;
}

void mimetrain_net_set_frozen(struct mimetrain_net *net, int frozen)
{
	net->frozen = frozen;
}

int mimetrain_net_act_zeros(const struct mimetrain_net *net, int i, int64_t *ret_zeros,
                            int64_t *ret_neurons)
{
	const struct op *o;
	long total;
	int64_t z = 0;
	const float *a;

	if (i < 0 || i >= net->graph.n_layers)
		return MIME_EINVAL;
	o = layer_op(net, i, OP_RELU);
	if (!o)
		return MIME_EINVAL;
	a = net->act[o - net->ops + 1];
	total = (long)net->n * mime_shape_size(&o->in);
	for (long k = 0; k < total; k++)
		z += a[k] == 0.0f;
	*ret_zeros = z;
	*ret_neurons = total;
	return 0;
}
