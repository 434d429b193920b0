// SPDX-License-Identifier: MIT
/* Engine tests: every layer and whole networks against a naive reference (direct loops in
 * double precision), the threshold mask's semantics, mixed-task batches, zero counts, and
 * thread-count independence. Tolerance: |engine - reference| <= 1e-4 * (1 + |reference|)
 * (float32 GEMM sums of up to a few thousand products). */
#include "tests/unit.h"

#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/bundle.h"
#include "lib/engine.h"
#include "lib/half.h"

#define TOL 1e-4

struct net {
	struct mime_model m;
	struct mime_task_params tasks[3];
	float *w[MIME_MAX_LAYERS], *b[MIME_MAX_LAYERS];
	float *thr[3][MIME_MAX_LAYERS];
	float *head_w[3], *head_b[3];
	struct mime_shape shapes[MIME_MAX_LAYERS];
};

static float *rand_array(uint64_t *rng, long n, float lo, float hi)
{
	float *a = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));

	for (long i = 0; i < n; i++)
		a[i] = mime_test_uniform(rng, lo, hi);
	return a;
}

static void add_layer(struct mime_graph *g, enum mime_layer_kind kind, int out, int k, int s,
                      int pad, enum mime_act act)
{
	struct mime_layer_spec *l = &g->layers[g->n_layers];

	*l = (struct mime_layer_spec){
		.kind = kind, .out = out, .kernel = k, .stride = s, .pad = pad, .act = act};
	snprintf(l->name, sizeof(l->name), "l%d", g->n_layers);
	g->n_layers++;
}

/* The network of the fine-mask tests: conv 40 - pool - conv 37 - conv 24 - pool - flatten -
 * fc 10 (ReLU) on 3 x side x side. */
static void fine_test_graph(struct mime_graph *g, int side)
{
	g->input = (struct mime_shape){3, side, side};
	add_layer(g, MIME_LAYER_CONV, 40, 3, 1, 1, MIME_ACT_RELU);
	add_layer(g, MIME_LAYER_MAXPOOL, 0, 2, 2, 0, MIME_ACT_NONE);
	add_layer(g, MIME_LAYER_CONV, 37, 3, 1, 1, MIME_ACT_RELU);
	add_layer(g, MIME_LAYER_CONV, 24, 3, 1, 1, MIME_ACT_RELU);
	add_layer(g, MIME_LAYER_MAXPOOL, 0, 2, 2, 0, MIME_ACT_NONE);
	add_layer(g, MIME_LAYER_FLATTEN, 0, 0, 0, 0, MIME_ACT_NONE);
	add_layer(g, MIME_LAYER_FC, 10, 0, 0, 0, MIME_ACT_RELU);
}

/* Random weights; task t gets thresholds of granularity gran[t] (NONE = ReLU). */
static void net_init(struct net *n, const struct mime_graph *g, int n_tasks,
                     const enum mime_thresholds *gran, const int *classes, uint64_t seed)
{
	uint64_t rng = seed;
	struct mime_shape in;

	memset(n, 0, sizeof(*n));
	n->m.graph = *g;
	assert_int_equal(mime_graph_check(g, n->shapes, NULL), 0);
	in = g->input;
	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];

		if (l->kind == MIME_LAYER_CONV || l->kind == MIME_LAYER_FC) {
			long fan = l->kind == MIME_LAYER_CONV ? (long)in.c * l->kernel * l->kernel
			                                      : mime_shape_size(&in);
			float sc = 1.7f / sqrtf((float)fan);

			n->w[i] = rand_array(&rng, l->out * fan, -sc, sc);
			n->b[i] = rand_array(&rng, l->out, -0.1f, 0.1f);
			n->m.weight[i] = n->w[i];
			n->m.bias[i] = n->b[i];
		}
		in = n->shapes[i];
	}
	for (int t = 0; t < n_tasks; t++) {
		struct mime_task_params *tp = &n->tasks[t];
		long feat = mime_shape_size(&in);

		tp->name = t == 0 ? "a" : t == 1 ? "b" : "c";
		tp->n_classes = classes[t];
		n->head_w[t] = rand_array(&rng, classes[t] * feat, -0.2f, 0.2f);
		n->head_b[t] = rand_array(&rng, classes[t], -0.1f, 0.1f);
		tp->head_w = n->head_w[t];
		tp->head_b = n->head_b[t];
		tp->granularity = gran[t];
		for (int i = 0; i < g->n_layers; i++) {
			long cnt;

			if (gran[t] == MIME_THR_NONE || !mime_graph_layer_masked(g, i))
				continue;
			cnt = gran[t] == MIME_THR_ELEMENT ? mime_shape_size(&n->shapes[i])
			                                  : n->shapes[i].c;
			n->thr[t][i] = rand_array(&rng, cnt, 0.0f, 0.3f);
			tp->thresholds[i] = n->thr[t][i];
		}
	}
	n->m.n_tasks = n_tasks;
	n->m.tasks = n->tasks;
}

static void net_free(struct net *n)
{
	for (int i = 0; i < MIME_MAX_LAYERS; i++) {
		free(n->w[i]);
		free(n->b[i]);
		for (int t = 0; t < 3; t++)
			free(n->thr[t][i]);
	}
	for (int t = 0; t < 3; t++) {
		free(n->head_w[t]);
		free(n->head_b[t]);
	}
}

/* The naive reference: one sample, direct loops, double accumulation. Returns logits in
 * ret_logits and zero counts per masked layer in ret_zeros. */
static void reference(const struct net *n, const float *x0, int task, double *ret_logits,
                      int64_t *ret_zeros)
{
	const struct mime_graph *g = &n->m.graph;
	const struct mime_task_params *tp = &n->tasks[task];
	struct mime_shape in = g->input;
	double *x = malloc(sizeof(double) * (size_t)mime_shape_size(&in));
	int mi = 0;

	for (long i = 0; i < mime_shape_size(&in); i++)
		x[i] = x0[i];
	for (int li = 0; li < g->n_layers; li++) {
		const struct mime_layer_spec *l = &g->layers[li];
		struct mime_shape out = n->shapes[li];
		double *y = calloc((size_t)mime_shape_size(&out), sizeof(double));

		if (l->kind == MIME_LAYER_CONV) {
			for (int k = 0; k < out.c; k++)
				for (int oh = 0; oh < out.h; oh++)
					for (int ow = 0; ow < out.w; ow++) {
						double acc = n->b[li][k];

						for (int c = 0; c < in.c; c++)
							for (int r = 0; r < l->kernel; r++)
								for (int s = 0; s < l->kernel;
								     s++) {
									int ih = oh * l->stride -
									         l->pad + r;
									int iw = ow * l->stride -
									         l->pad + s;

									if (ih < 0 || iw < 0 ||
									    ih >= in.h ||
									    iw >= in.w)
										continue;
									acc += (double)n->w
									               [li]
									               [((k * in.c +
									                  c) * l->kernel +
									                 r) * l->kernel +
									                s] *
									       x[(c * in.h + ih) *
									                 in.w +
									         iw];
								}
						y[(k * out.h + oh) * out.w + ow] = acc;
					}
		} else if (l->kind == MIME_LAYER_FC) {
			long nin = mime_shape_size(&in);

			for (int o = 0; o < out.c; o++) {
				double acc = n->b[li][o];

				for (long i = 0; i < nin; i++)
					acc += (double)n->w[li][o * nin + i] * x[i];
				y[o] = acc;
			}
		} else if (l->kind == MIME_LAYER_MAXPOOL) {
			for (int c = 0; c < out.c; c++)
				for (int oh = 0; oh < out.h; oh++)
					for (int ow = 0; ow < out.w; ow++) {
						double m = -INFINITY;

						for (int r = 0; r < l->kernel; r++)
							for (int s = 0; s < l->kernel; s++) {
								double v = x[(c * in.h +
								              oh * l->stride + r) *
								                     in.w +
								             ow * l->stride + s];
								m = v > m ? v : m;
							}
						y[(c * out.h + oh) * out.w + ow] = m;
					}
		} else {
			memcpy(y, x, sizeof(double) * (size_t)mime_shape_size(&out));
		}
		if (mime_graph_layer_masked(g, li)) {
			int64_t z = 0;

			for (long i = 0; i < mime_shape_size(&out); i++) {
				double t = 0;

				if (tp->thresholds[li])
					t = tp->granularity == MIME_THR_ELEMENT
					            ? tp->thresholds[li][i]
					            : tp->thresholds[li][i / (out.h * out.w)];
				y[i] = y[i] >= t ? y[i] : 0.0;
				z += y[i] == 0.0;
			}
			ret_zeros[mi++] = z;
		}
		free(x);
		x = y;
		in = out;
	}
	for (int c = 0; c < tp->n_classes; c++) {
		double acc = tp->head_b[c];

		for (long i = 0; i < mime_shape_size(&in); i++)
			acc += (double)tp->head_w[c * mime_shape_size(&in) + i] * x[i];
		ret_logits[c] = acc;
	}
	free(x);
}

static void check_skip(const struct net *n, int batch, const int *tasks, int n_threads,
                       uint64_t seed, enum mime_conv_impl conv, int simd, enum mime_act_skip skip)
{
	struct mime_engine_config cfg = {.max_batch = batch,
	                                 .n_threads = n_threads,
	                                 .conv = conv,
	                                 .simd = simd,
	                                 .act_skip = skip};
	struct mime_engine *e = NULL;
	struct mime_engine_result res;
	struct mime_errinfo ei = {0};
	long isz = mime_shape_size(&n->m.graph.input);
	uint64_t rng = seed;
	float *in = rand_array(&rng, isz * batch, -1.0f, 1.0f);

	assert_int_equal(mime_engine_create(&n->m, &cfg, &e, &ei), 0);
	assert_int_equal(mime_engine_forward(e, batch, in, tasks, &res), 0);
	assert_int_equal(res.batch, batch);
	for (int b = 0; b < batch; b++) {
		double logits[16];
		int64_t zeros[MIME_MAX_LAYERS];

		reference(n, in + isz * b, tasks[b], logits, zeros);
		for (int c = 0; c < n->tasks[tasks[b]].n_classes; c++) {
			double got = res.logits[b * res.max_classes + c];

			if (fabs(got - logits[c]) > TOL * (1 + fabs(logits[c])))
				fail_msg("sample %d class %d: engine %.7f reference %.7f", b, c,
				         got, logits[c]);
		}
		/* Zero counts may differ only where a value lands within rounding of its
		 * threshold: allow a handful of neurons out of thousands. */
		for (int mi = 0; mi < res.n_masked; mi++) {
			int64_t d = res.zeros[b * res.n_masked + mi] - zeros[mi];

			if (d < -3 || d > 3)
				fail_msg("sample %d masked layer %d: %ld zeros, reference %ld", b,
				         mi, (long)res.zeros[b * res.n_masked + mi],
				         (long)zeros[mi]);
		}
	}
	mime_engine_destroy(e);
	free(in);
}

static void check_impl(const struct net *n, int batch, const int *tasks, int n_threads,
                       uint64_t seed, enum mime_conv_impl conv, int simd)
{
	check_skip(n, batch, tasks, n_threads, seed, conv, simd, MIME_ACT_SKIP_AUTO);
}

static void check_against_reference(const struct net *n, int batch, const int *tasks, int n_threads,
                                    uint64_t seed)
{
	check_impl(n, batch, tasks, n_threads, seed, MIME_CONV_AUTO, 0);
}

static void small_vgg(struct mime_graph *g, int c, int h, int w)
{
	memset(g, 0, sizeof(*g));
	g->input = (struct mime_shape){c, h, w};
	add_layer(g, MIME_LAYER_CONV, 8, 3, 1, 1, MIME_ACT_RELU);
	add_layer(g, MIME_LAYER_MAXPOOL, 0, 2, 2, 0, MIME_ACT_NONE);
	add_layer(g, MIME_LAYER_CONV, 12, 3, 1, 1, MIME_ACT_RELU);
	add_layer(g, MIME_LAYER_MAXPOOL, 0, 2, 2, 0, MIME_ACT_NONE);
	add_layer(g, MIME_LAYER_FLATTEN, 0, 0, 0, 0, MIME_ACT_NONE);
	add_layer(g, MIME_LAYER_FC, 16, 0, 0, 0, MIME_ACT_RELU);
}

static void test_engine_forward_matches_reference_odd_shapes(void **state)
{
	uint64_t rng = 42;

	(void)state;
	for (int trial = 0; trial < 12; trial++) {
		struct mime_graph g = {0};
		struct net n;
		enum mime_thresholds gran[1] = {(enum mime_thresholds)(trial % 3)};
		int classes[1] = {3 + trial % 5};
		int tasks[5] = {0, 0, 0, 0, 0};
		int k = 1 + (int)(mime_test_rand(&rng) % 5); /* 1..5 */
		int s = 1 + (int)(mime_test_rand(&rng) % 3); /* 1..3 */
		int pad = (int)(mime_test_rand(&rng) % (k / 2 + 2));
		int hw = k + 2 + (int)(mime_test_rand(&rng) % 14);

		g.input = (struct mime_shape){1 + (int)(mime_test_rand(&rng) % 4), hw, hw + 1};
		add_layer(&g, MIME_LAYER_CONV, 3 + (int)(mime_test_rand(&rng) % 9), k, s, pad,
		          MIME_ACT_RELU);
		add_layer(&g, MIME_LAYER_CONV, 5, 3, 1, 1,
		          trial % 2 ? MIME_ACT_RELU : MIME_ACT_NONE);
		{
			struct mime_shape sh[MIME_MAX_LAYERS];

			/* A 3x3/2 or 2x2/1 max-pool when the map is large enough. */
			assert_int_equal(mime_graph_check(&g, sh, NULL), 0);
			if (sh[1].h >= 3 && sh[1].w >= 3)
				add_layer(&g, MIME_LAYER_MAXPOOL, 0, 3 - trial % 2, 2 - trial % 2,
				          0, MIME_ACT_NONE);
		}
		add_layer(&g, MIME_LAYER_FLATTEN, 0, 0, 0, 0, MIME_ACT_NONE);
		add_layer(&g, MIME_LAYER_FC, 7, 0, 0, 0, MIME_ACT_RELU);
		net_init(&n, &g, 1, gran, classes, 100 + trial);
		check_against_reference(&n, 1 + trial % 5, tasks, 1 + trial % 2, 7 + trial);
		net_free(&n);
	}
}

static void test_engine_forward_vgg_like_all_granularities(void **state)
{
	struct mime_graph g;
	struct net n;
	enum mime_thresholds gran[3] = {MIME_THR_NONE, MIME_THR_ELEMENT, MIME_THR_CHANNEL};
	int classes[3] = {10, 4, 7};
	int tasks[6] = {0, 1, 2, 2, 1, 0};

	(void)state;
	small_vgg(&g, 1, 28, 28);
	net_init(&n, &g, 3, gran, classes, 5);
	check_against_reference(&n, 6, tasks, 1, 11);
	check_against_reference(&n, 6, tasks, 2, 11);
	check_against_reference(&n, 6, tasks, 3, 11);
	net_free(&n);
	small_vgg(&g, 3, 32, 32);
	net_init(&n, &g, 3, gran, classes, 6);
	check_against_reference(&n, 6, tasks, 2, 12);
	net_free(&n);
}

/* Every conv path and SIMD microkernel this CPU has agrees with the reference, including
 * tails (K not a multiple of MR, pixel counts not a multiple of NR). */
static void test_engine_every_conv_path_matches_reference(void **state)
{
	struct mime_graph g;
	struct net n;
	enum mime_thresholds gran[3] = {MIME_THR_ELEMENT, MIME_THR_CHANNEL, MIME_THR_NONE};
	int classes[3] = {10, 4, 7};
	int tasks[5] = {0, 1, 2, 0, 1};

	(void)state;
	small_vgg(&g, 3, 19, 23);
	g.layers[0].out = 13; /* not a multiple of any MR */
	net_init(&n, &g, 3, gran, classes, 77);
	for (int simd = MIME_SIMD_SCALAR; simd <= MIME_SIMD_NEON; simd++) {
		struct mime_engine *e = NULL;
		struct mime_engine_config cfg = {
			.max_batch = 1, .n_threads = 1, .conv = MIME_CONV_PACKED, .simd = simd + 1};
		enum mime_conv_impl conv;
		struct mime_gemm_arch arch;

		if (!mime_gemm_arch_supported(simd))
			continue;

		assert_int_equal(mime_engine_create(&n.m, &cfg, &e, NULL), 0);
		mime_engine_describe(e, &conv, &arch);
		assert_int_equal(conv, MIME_CONV_PACKED);
		assert_int_equal(arch.simd, simd);
		mime_engine_destroy(e);
		check_impl(&n, 5, tasks, 1 + simd % 2, 31, MIME_CONV_PACKED, simd + 1);
		/* every conv chunk dense, and every chunk the geometry allows input-sparse */
		check_skip(&n, 5, tasks, 1 + simd % 2, 31, MIME_CONV_PACKED, simd + 1,
		           MIME_ACT_SKIP_OFF);
		check_skip(&n, 5, tasks, 2 - simd % 2, 31, MIME_CONV_PACKED, simd + 1,
		           MIME_ACT_SKIP_ALWAYS);
	}
	check_impl(&n, 5, tasks, 1, 31, MIME_CONV_BLAS, 0);
	check_impl(&n, 5, tasks, 2, 31, MIME_CONV_BLAS, 0);
	net_free(&n);
}

/* Batch 1 on 2 threads splits the big layers over both threads and runs the small ones
 * (max-pools, convs under 1 M MACs) on the caller alone: either way the logits and zero
 * counts are bit for bit those of 1 thread, for every task kind. */
static void test_engine_batch1_threads_equal_one_thread(void **state)
{
	struct mime_graph g = {.input = {3, 32, 32}};
	struct net n;
	enum mime_thresholds gran[3] = {MIME_THR_ELEMENT, MIME_THR_CHANNEL, MIME_THR_NONE};
	int classes[3] = {10, 5, 3};
	struct mime_engine *e1 = NULL, *e2 = NULL;
	struct mime_engine_result r1, r2;
	uint64_t rng = 5;
	float *in;

	(void)state;
	add_layer(&g, MIME_LAYER_CONV, 32, 3, 1, 1, MIME_ACT_RELU); /* 0.9 M MACs: alone */
	add_layer(&g, MIME_LAYER_CONV, 64, 3, 1, 1, MIME_ACT_RELU); /* 19 M: both threads */
	add_layer(&g, MIME_LAYER_MAXPOOL, 0, 2, 2, 0, MIME_ACT_NONE);
	add_layer(&g, MIME_LAYER_CONV, 16, 3, 1, 1, MIME_ACT_RELU); /* 2.4 M: both */
	add_layer(&g, MIME_LAYER_FLATTEN, 0, 0, 0, 0, MIME_ACT_NONE);
	net_init(&n, &g, 3, gran, classes, 23);
	in = rand_array(&rng, mime_shape_size(&g.input), 0.0f, 1.0f);
	assert_int_equal(mime_engine_create(
				 &n.m, &(struct mime_engine_config){.max_batch = 2, .n_threads = 1},
				 &e1, NULL),
	                 0);
	assert_int_equal(mime_engine_create(
				 &n.m, &(struct mime_engine_config){.max_batch = 2, .n_threads = 2},
				 &e2, NULL),
	                 0);
	for (int t = 0; t < 3; t++) {
		assert_int_equal(mime_engine_forward(e1, 1, in, &t, &r1), 0);
		assert_int_equal(mime_engine_forward(e2, 1, in, &t, &r2), 0);
		assert_memory_equal(r1.logits, r2.logits, sizeof(float) * classes[t]);
		assert_memory_equal(r1.zeros, r2.zeros, sizeof(int64_t) * r1.n_masked);
		assert_true(r1.zeros[1] > 0 && r1.zeros[1] < r1.neurons[1]);
	}
	mime_engine_destroy(e1);
	mime_engine_destroy(e2);
	free(in);
	net_free(&n);
}

/* A mixed-task batch gives exactly (bit for bit) the results of each sample run alone. */
static void test_engine_mixed_batch_equals_single_samples(void **state)
{
	struct mime_graph g;
	struct net n;
	enum mime_thresholds gran[3] = {MIME_THR_ELEMENT, MIME_THR_CHANNEL, MIME_THR_NONE};
	int classes[3] = {10, 5, 3};
	int tasks[7] = {2, 0, 1, 0, 2, 1, 1};
	struct mime_engine_config cfg = {.max_batch = 7, .n_threads = 2};
	struct mime_engine *e = NULL, *e1 = NULL;
	struct mime_engine_result res, one;
	uint64_t rng = 99;
	float *in;
	float *logits;
	int64_t *zeros;
	long isz;

	(void)state;
	small_vgg(&g, 1, 20, 20);
	net_init(&n, &g, 3, gran, classes, 17);
	isz = mime_shape_size(&g.input);
	in = rand_array(&rng, isz * 7, 0.0f, 1.0f);
	assert_int_equal(mime_engine_create(&n.m, &cfg, &e, NULL), 0);
	cfg.max_batch = 1;
	assert_int_equal(mime_engine_create(&n.m, &cfg, &e1, NULL), 0);
	assert_int_equal(mime_engine_forward(e, 7, in, tasks, &res), 0);
	logits = malloc(sizeof(float) * 7 * res.max_classes);
	zeros = malloc(sizeof(int64_t) * 7 * res.n_masked);
	memcpy(logits, res.logits, sizeof(float) * 7 * res.max_classes);
	memcpy(zeros, res.zeros, sizeof(int64_t) * 7 * res.n_masked);
	for (int b = 0; b < 7; b++) {
		assert_int_equal(mime_engine_forward(e1, 1, in + isz * b, &tasks[b], &one), 0);
		assert_memory_equal(one.logits, logits + b * res.max_classes,
		                    sizeof(float) * classes[tasks[b]]);
		assert_memory_equal(one.zeros, zeros + b * res.n_masked,
		                    sizeof(int64_t) * res.n_masked);
	}
	/* And the batch really depends on the task: the same image under two tasks differs. */
	{
		int t2[2] = {0, 1};
		float two[2 * 16];

		memcpy(in + isz, in, sizeof(float) * isz);
		assert_int_equal(mime_engine_forward(e, 2, in, t2, &res), 0);
		memcpy(two, res.logits, sizeof(float) * 2 * res.max_classes);
		assert_int_not_equal(res.zeros[0], res.zeros[res.n_masked]);
	}
	free(logits);
	free(zeros);
	free(in);
	mime_engine_destroy(e);
	mime_engine_destroy(e1);
	net_free(&n);
}

/* Sample-parallel forwards hand out samples as threads free up (who runs a sample depends on
 * timing): every batch size on 2, 3 and 4 threads, repeated, gives each sample's result
 * alone bit for bit, and a batch run right after another starts from its first sample. */
static void test_engine_sample_split_any_batch_equals_single_samples(void **state)
{
	struct mime_graph g;
	struct net n;
	enum mime_thresholds gran[3] = {MIME_THR_ELEMENT, MIME_THR_CHANNEL, MIME_THR_NONE};
	int classes[3] = {10, 5, 3};
	int tasks[9] = {2, 0, 1, 0, 2, 1, 1, 0, 2};
	struct mime_engine_config cfg = {.max_batch = 1, .n_threads = 1};
	struct mime_engine *e1 = NULL;
	struct mime_engine_result res, one;
	uint64_t rng = 41;
	float *in, *logits;
	int64_t *zeros;
	long isz;

	(void)state;
	small_vgg(&g, 1, 12, 12);
	net_init(&n, &g, 3, gran, classes, 29);
	isz = mime_shape_size(&g.input);
	in = rand_array(&rng, isz * 9, 0.0f, 1.0f);
	assert_int_equal(mime_engine_create(&n.m, &cfg, &e1, NULL), 0);
	logits = malloc(sizeof(float) * 9 * 16);
	zeros = malloc(sizeof(int64_t) * 9 * MIME_MAX_LAYERS);
	for (int b = 0; b < 9; b++) {
		assert_int_equal(mime_engine_forward(e1, 1, in + isz * b, &tasks[b], &one), 0);
		memcpy(logits + b * 16, one.logits, sizeof(float) * classes[tasks[b]]);
		memcpy(zeros + b * MIME_MAX_LAYERS, one.zeros, sizeof(int64_t) * one.n_masked);
	}
	for (int threads = 2; threads <= 4; threads++) {
		struct mime_engine *e = NULL;

		cfg = (struct mime_engine_config){.max_batch = 9, .n_threads = threads};
		assert_int_equal(mime_engine_create(&n.m, &cfg, &e, NULL), 0);
		for (int rep = 0; rep < 3; rep++)
			for (int batch = threads; batch <= 9; batch++) {
				assert_int_equal(mime_engine_forward(e, batch, in, tasks, &res), 0);
				for (int b = 0; b < batch; b++) {
					assert_memory_equal(res.logits + b * res.max_classes,
					                    logits + b * 16,
					                    sizeof(float) * classes[tasks[b]]);
					assert_memory_equal(res.zeros + b * res.n_masked,
					                    zeros + b * MIME_MAX_LAYERS,
					                    sizeof(int64_t) * res.n_masked);
				}
			}
		mime_engine_destroy(e);
	}
	free(logits);
	free(zeros);
	free(in);
	mime_engine_destroy(e1);
	net_free(&n);
}

/* Times the engine's threads (named "mime-engine") went to sleep so far: the sum of their
 * voluntary context switches (/proc/self/task). */
static long engine_thread_sleeps(void)
{
	DIR *dir = opendir("/proc/self/task");
	struct dirent *de;
	long sum = 0;

	assert_non_null(dir);
	while ((de = readdir(dir))) {
		char path[288], line[128];
		FILE *f;
		int named = 0;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		named = fgets(line, sizeof(line), f) && strncmp(line, "mime-engine", 11) == 0;
		fclose(f);
		if (!named)
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f))
			if (strncmp(line, "voluntary_ctxt_switches:", 24) == 0)
				sum += atol(line + 24);
		fclose(f);
	}
	closedir(dir);
	return sum;
}

/* Polls up to 2 s until the engine's 2 threads are asleep and have gone to sleep at least
 * min_sleeps times in all; returns whether they did. */
static bool wait_asleep_again(const struct mime_engine *e, long min_sleeps)
{
	for (int i = 0; i < 2000; i++) {
		if (mime_engine_threads_asleep(e) == 2 && engine_thread_sleeps() >= min_sleeps)
			return true;
		usleep(1000);
	}
	return false;
}

/* mime_engine_prepare(): an idle engine's threads sleep and stay asleep; prepare wakes them
 * (each goes back to sleep once more), and if no forward comes they sleep again within its
 * window (no busy CPU when idle); a forward right after prepare, and prepares between
 * forwards, change no result. One thread: nothing to wake. */
static void test_engine_prepare_wakes_threads_then_they_sleep(void **state)
{
	struct mime_graph g;
	struct net n;
	enum mime_thresholds gran[1] = {MIME_THR_ELEMENT};
	int classes[1] = {10}, tasks[1] = {0};
	struct mime_engine *e = NULL, *e1 = NULL;
	struct mime_engine_result res, ref;
	float ref_logits[10];
	uint64_t rng = 77;
	long sleeps;
	float *in;

	(void)state;
	small_vgg(&g, 1, 20, 20);
	net_init(&n, &g, 1, gran, classes, 31);
	in = rand_array(&rng, mime_shape_size(&g.input), 0.0f, 1.0f);
	assert_int_equal(mime_engine_create(
				 &n.m, &(struct mime_engine_config){.max_batch = 1, .n_threads = 1},
				 &e1, NULL),
	                 0);
	assert_int_equal(mime_engine_forward(e1, 1, in, tasks, &ref), 0);
	memcpy(ref_logits, ref.logits, sizeof(ref_logits));
	mime_engine_prepare(e1); /* no threads: a no-op */
	assert_int_equal(mime_engine_threads_asleep(e1), 0);

	assert_int_equal(mime_engine_create(
				 &n.m, &(struct mime_engine_config){.max_batch = 1, .n_threads = 3},
				 &e, NULL),
	                 0);
	assert_int_equal(mime_engine_forward(e, 1, in, tasks, &res), 0);
	assert_true(wait_asleep_again(e, 0));
	sleeps = engine_thread_sleeps();
	usleep(20000); /* idle: nothing wakes them */
	assert_int_equal(engine_thread_sleeps(), sleeps);
	assert_int_equal(mime_engine_threads_asleep(e), 2);
	for (int k = 0; k < 3; k++) {
		mime_engine_prepare(e);
		/* woken, then asleep again unused: each slept once more */
		assert_true(wait_asleep_again(e, sleeps + 2));
		sleeps = engine_thread_sleeps();
	}
	mime_engine_prepare(e);
	assert_int_equal(mime_engine_forward(e, 1, in, tasks, &res), 0);
	assert_memory_equal(res.logits, ref_logits, sizeof(ref_logits));
	for (int k = 0; k < 200; k++) {
		mime_engine_prepare(e);
		assert_int_equal(mime_engine_forward(e, 1, in, tasks, &res), 0);
		assert_memory_equal(res.logits, ref_logits, sizeof(ref_logits));
	}
	assert_true(wait_asleep_again(e, 0));
	mime_engine_destroy(e);
	mime_engine_destroy(e1);
	free(in);
	net_free(&n);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* After a forward that used it, an unprepared engine thread goes to sleep at once instead
 * of polling for a next layer that will not come (the poll between layers lasts ~70 us):
 * the median of 20 forwards finds it asleep within 30 us of the forward's return (polling
 * on, ~60 us). Prepared, it polls until the next forward; every forward gives the same
 * bits. */
static void test_engine_threads_sleep_after_forward(void **state)
{
	struct mime_graph g = {.input = {8, 64, 64}};
	struct net n;
	enum mime_thresholds gran[1] = {MIME_THR_ELEMENT};
	int classes[1] = {1}, tasks[1] = {0}; /* a tiny head: the parallel conv ends it */
	struct mime_engine *e = NULL;
	struct mime_engine_result res;
	float ref_logits[1];
	double took[20];
	uint64_t rng = 13;
	float *in;

	(void)state;
	add_layer(&g, MIME_LAYER_CONV, 16, 3, 1, 1, MIME_ACT_RELU); /* 4.7 M MACs: 2 threads */
	add_layer(&g, MIME_LAYER_FLATTEN, 0, 0, 0, 0, MIME_ACT_NONE);
	net_init(&n, &g, 1, gran, classes, 37);
	in = rand_array(&rng, mime_shape_size(&g.input), 0.0f, 1.0f);
	assert_int_equal(mime_engine_create(
				 &n.m, &(struct mime_engine_config){.max_batch = 1, .n_threads = 2},
				 &e, NULL),
	                 0);
	assert_int_equal(mime_engine_forward(e, 1, in, tasks, &res), 0);
	memcpy(ref_logits, res.logits, sizeof(ref_logits));
	for (int k = 0; k < 20; k++) {
		double t0;

		usleep(1000);
		assert_int_equal(mime_engine_forward(e, 1, in, tasks, &res), 0);
		t0 = mono_us();
		while (mime_engine_threads_asleep(e) < 1 && mono_us() < t0 + 1e6)
			;
		took[k] = mono_us() - t0;
		assert_memory_equal(res.logits, ref_logits, sizeof(ref_logits));
	}
	qsort(took, 20, sizeof(took[0]), cmp_double);
	assert_true(took[10] < 30.0);
	for (int k = 0; k < 20; k++) {
		mime_engine_prepare(e);
		usleep(100);
		assert_int_equal(mime_engine_forward(e, 1, in, tasks, &res), 0);
		assert_memory_equal(res.logits, ref_logits, sizeof(ref_logits));
	}
	mime_engine_destroy(e);
	free(in);
	net_free(&n);
}

/* All thresholds 0 equals ReLU bit for bit; a large threshold prunes everything. */
static void test_engine_zero_thresholds_equal_relu(void **state)
{
	struct mime_graph g;
	struct net n;
	enum mime_thresholds gran[2] = {MIME_THR_NONE, MIME_THR_ELEMENT};
	int classes[2] = {6, 6};
	struct mime_engine_config cfg = {.max_batch = 2, .n_threads = 1};
	struct mime_engine *e = NULL;
	struct mime_engine_result res;
	uint64_t rng = 3;
	float *in;
	long isz;
	int tasks[2] = {0, 1};

	(void)state;
	small_vgg(&g, 1, 16, 16);
	net_init(&n, &g, 2, gran, classes, 23);
	/* Task 1 = task 0's head with thresholds all zero. */
	n.tasks[1].head_w = n.head_w[0];
	n.tasks[1].head_b = n.head_b[0];
	for (int i = 0; i < g.n_layers; i++)
		if (n.thr[1][i])
			memset(n.thr[1][i], 0, sizeof(float) * mime_shape_size(&n.shapes[i]));
	isz = mime_shape_size(&g.input);
	in = rand_array(&rng, isz * 2, -1.0f, 1.0f);
	memcpy(in + isz, in, sizeof(float) * isz);
	assert_int_equal(mime_engine_create(&n.m, &cfg, &e, NULL), 0);
	assert_int_equal(mime_engine_forward(e, 2, in, tasks, &res), 0);
	assert_memory_equal(res.logits, res.logits + res.max_classes, sizeof(float) * 6);
	assert_memory_equal(res.zeros, res.zeros + res.n_masked, sizeof(int64_t) * res.n_masked);
	/* Thresholds of 1e30 prune every neuron of every masked layer. */
	for (int i = 0; i < g.n_layers; i++)
		if (n.thr[1][i])
			for (long j = 0; j < mime_shape_size(&n.shapes[i]); j++)
				n.thr[1][i][j] = 1e30f;
	assert_int_equal(mime_engine_forward(e, 2, in, tasks, &res), 0);
	for (int mi = 0; mi < res.n_masked; mi++)
		assert_int_equal(res.zeros[res.n_masked + mi], res.neurons[mi]);
	assert_true(res.zeros[0] < res.neurons[0]);
	mime_engine_destroy(e);
	free(in);
	net_free(&n);
}

/* y == t fires: with a 1x1 identity conv and t equal to the input, every neuron survives. */
static void test_engine_threshold_equal_fires(void **state)
{
	struct mime_graph g = {0};
	float w[1] = {1.0f}, b[1] = {0.0f}, head_w[16], head_b[1] = {0.0f};
	float thr[16], in[16];
	struct mime_model m = {0};
	struct mime_task_params tp = {.name = "t",
	                              .n_classes = 1,
	                              .head_w = head_w,
	                              .head_b = head_b,
	                              .granularity = MIME_THR_ELEMENT};
	struct mime_engine_config cfg = {.max_batch = 1, .n_threads = 1};
	struct mime_engine *e = NULL;
	struct mime_engine_result res;
	int task = 0;

	(void)state;
	g.input = (struct mime_shape){1, 4, 4};
	add_layer(&g, MIME_LAYER_CONV, 1, 1, 1, 0, MIME_ACT_RELU);
	add_layer(&g, MIME_LAYER_FLATTEN, 0, 0, 0, 0, MIME_ACT_NONE);
	for (int i = 0; i < 16; i++) {
		in[i] = 0.25f * (float)(i + 1);
		thr[i] = in[i];
		head_w[i] = 1.0f;
	}
	thr[3] = in[3] + 0.001f; /* just above: pruned */
	m.graph = g;
	m.weight[0] = w;
	m.bias[0] = b;
	tp.thresholds[0] = thr;
	m.n_tasks = 1;
	m.tasks = &tp;
	assert_int_equal(mime_engine_create(&m, &cfg, &e, NULL), 0);
	assert_int_equal(mime_engine_forward(e, 1, in, &task, &res), 0);
	assert_int_equal(res.zeros[0], 1);
	/* Sum of inputs 0.25 * (1 + ... + 16) = 34 minus the pruned 1.0. */
	assert_float_equal(res.logits[0], 33.0f, 1e-4);
	mime_engine_destroy(e);
}

static void test_engine_forward_rejects_bad_arguments(void **state)
{
	struct mime_graph g;
	struct net n;
	enum mime_thresholds gran[1] = {MIME_THR_NONE};
	int classes[1] = {2};
	struct mime_engine_config cfg = {.max_batch = 2, .n_threads = 1};
	struct mime_engine *e = NULL;
	struct mime_engine_result res;
	float in[3 * 16 * 16] = {0};
	int tasks[3] = {0, 1, 0};
	struct mime_errinfo ei = {0};

	(void)state;
	small_vgg(&g, 1, 16, 16);
	net_init(&n, &g, 1, gran, classes, 1);
	assert_int_equal(mime_engine_create(&n.m, &cfg, &e, NULL), 0);
	assert_int_equal(mime_engine_forward(e, 3, in, tasks, &res), MIME_EINVAL);
	assert_int_equal(mime_engine_forward(e, 2, in, tasks, &res), MIME_EINVAL);
	assert_int_equal(mime_engine_forward(e, 0, in, tasks, &res), MIME_EINVAL);
	mime_engine_destroy(e);
	/* A conv layer without weights is refused at creation, with the layer named. */
	n.m.weight[2] = NULL;
	e = NULL;
	assert_int_equal(mime_engine_create(&n.m, &cfg, &e, &ei), MIME_ESHAPE);
	assert_null(e);
	assert_non_null(strstr(ei.msg, "l2"));
	cfg.max_batch = 0;
	assert_int_equal(mime_engine_create(&n.m, &cfg, &e, NULL), MIME_EINVAL);
	net_free(&n);
}

/* Copies rows [0, k) x columns [0, c) of a row-major [rows, lda] matrix. */
static float *slice(const float *w, int lda, int k, int c)
{
	float *o = malloc(sizeof(float) * (size_t)k * c);

	for (int i = 0; i < k; i++)
		memcpy(o + (size_t)i * c, w + (size_t)i * lda, sizeof(float) * c);
	return o;
}

/* A phase (first k kernels of every layer + a fine-grain mask on one conv) gives bit for bit
 * what a network built from the sliced, masked weights gives; a bad phase changes nothing;
 * going back to the whole parent restores the original results. */
static void test_engine_set_phase_equals_sliced_network(void **state)
{
	struct mime_graph g;
	struct net n, sub;
	enum mime_thresholds gran[2] = {MIME_THR_ELEMENT, MIME_THR_CHANNEL};
	int classes[2] = {5, 3}, tasks[4] = {0, 1, 1, 0};
	struct mime_engine_config cfg = {.max_batch = 4, .n_threads = 2};
	struct mime_engine *e = NULL, *es = NULL;
	struct mime_engine_result r1, r2;
	struct mime_phase ph = {.wuv = 16};
	struct mime_errinfo ei = {0};
	uint64_t rng = 4;
	float *in, *full_logits;
	uint8_t *keep;
	size_t full_bytes, fresh_bytes;
	const int ka[6] = {5, 0, 7, 0, 0, 9}; /* conv 8->5, conv 12->7, fc 16->9 */

	(void)state;
	small_vgg(&g, 1, 16, 16);
	net_init(&n, &g, 2, gran, classes, 8);
	in = rand_array(&rng, 4 * 256, 0.0f, 1.0f);
	assert_int_equal(mime_engine_create(&n.m, &cfg, &e, NULL), 0);
	full_bytes = fresh_bytes = mime_engine_plan_bytes(e);
	assert_int_equal(mime_engine_forward(e, 4, in, tasks, &r1), 0);
	full_logits = malloc(sizeof(float) * 4 * r1.max_classes);
	memcpy(full_logits, r1.logits, sizeof(float) * 4 * r1.max_classes);

	/* The sliced network: graph with fewer kernels, weights cut, one mask applied. */
	{
		struct mime_graph gs = g;

		gs.layers[0].out = 5;
		gs.layers[2].out = 7;
		gs.layers[5].out = 9;
		net_init(&sub, &gs, 2, gran, classes, 8); /* shapes and heads; weights replaced */
	}
	for (int i = 0; i < 6; i++)
		ph.layer[i].k_active = ka[i];
	free(sub.w[0]);
	sub.w[0] = slice(n.w[0], 9, 5, 9);
	free(sub.w[2]);
	sub.w[2] = slice(n.w[2], 8 * 9, 7, 5 * 9);
	free(sub.w[5]);
	sub.w[5] = slice(n.w[5], 12 * 4 * 4, 9, 7 * 4 * 4);
	for (int i = 0; i < 6; i++) {
		if (!sub.w[i])
			continue;
		memcpy(sub.b[i], n.b[i], sizeof(float) * (size_t)sub.m.graph.layers[i].out);
		sub.m.weight[i] = sub.w[i];
		sub.m.bias[i] = sub.b[i];
	}
	/* Fine grain on conv l2: drop about half of its W_uv x 1 groups. */
	keep = malloc(1 * 5 * 9);
	for (int c = 0; c < 5 * 9; c++) {
		keep[c] = (mime_test_rand(&rng) & 1) != 0;
		if (!keep[c])
			for (int k = 0; k < 7; k++)
				sub.w[2][k * 45 + c] = 0.0f;
	}
	ph.layer[2].keep = keep;
	/* Phase tasks: the sliced network's heads and thresholds. */
	assert_int_equal(mime_engine_set_phase(e, &ph, sub.tasks, &ei), 0);
	assert_true(mime_engine_plan_bytes(e) < full_bytes);
	assert_int_equal(mime_engine_neurons(e, 0), 5 * 16 * 16);
	assert_int_equal(mime_engine_forward(e, 4, in, tasks, &r1), 0);
	assert_int_equal(mime_engine_create(&sub.m, &cfg, &es, NULL), 0);
	assert_int_equal(mime_engine_forward(es, 4, in, tasks, &r2), 0);
	assert_int_equal(r1.max_classes, r2.max_classes);
	assert_memory_equal(r1.logits, r2.logits, sizeof(float) * 4 * r1.max_classes);
	assert_memory_equal(r1.zeros, r2.zeros, sizeof(int64_t) * 4 * r1.n_masked);

	/* A bad phase is refused and the current one stays. */
	ph.layer[0].k_active = 9;
	assert_int_equal(mime_engine_set_phase(e, &ph, sub.tasks, &ei), MIME_EINVAL);
	assert_non_null(strstr(ei.msg, "l0"));
	assert_int_equal(mime_engine_forward(e, 4, in, tasks, &r1), 0);
	assert_memory_equal(r1.logits, r2.logits, sizeof(float) * 4 * r1.max_classes);

	/* Back to the whole parent: the fine mask's W^T (the input-sparse form) stays kept and
	 * counted; entering the phase again builds nothing more. */
	assert_int_equal(mime_engine_set_phase(e, NULL, NULL, &ei), 0);
	assert_true(mime_engine_plan_bytes(e) > full_bytes);
	full_bytes = mime_engine_plan_bytes(e);
	ph.layer[0].k_active = ka[0];
	assert_int_equal(mime_engine_set_phase(e, &ph, sub.tasks, &ei), 0);
	assert_int_equal(mime_engine_set_phase(e, NULL, NULL, &ei), 0);
	assert_int_equal(mime_engine_plan_bytes(e), full_bytes);
	assert_int_equal(mime_engine_forward(e, 4, in, tasks, &r1), 0);
	assert_memory_equal(r1.logits, full_logits, sizeof(float) * 4 * r1.max_classes);
	/* Trimmed: the kept copy is given back, the plan is the fresh engine's again, the
	 * answers do not change, and entering the phase again builds it anew, same answers. */
	mime_engine_trim(e);
	assert_int_equal(mime_engine_plan_bytes(e), fresh_bytes);
	assert_int_equal(mime_engine_forward(e, 4, in, tasks, &r1), 0);
	assert_memory_equal(r1.logits, full_logits, sizeof(float) * 4 * r1.max_classes);
	assert_int_equal(mime_engine_set_phase(e, &ph, sub.tasks, &ei), 0);
	assert_int_equal(mime_engine_forward(e, 4, in, tasks, &r1), 0);
	assert_memory_equal(r1.logits, r2.logits, sizeof(float) * 4 * r1.max_classes);
	mime_engine_trim(e); /* in the phase: its own copy stays */
	assert_int_equal(mime_engine_forward(e, 4, in, tasks, &r1), 0);
	assert_memory_equal(r1.logits, r2.logits, sizeof(float) * 4 * r1.max_classes);
	assert_int_equal(mime_engine_set_phase(e, NULL, NULL, &ei), 0);
	assert_int_equal(mime_engine_plan_bytes(e), full_bytes);
	mime_engine_destroy(e);
	mime_engine_destroy(es);
	free(keep);
	free(in);
	free(full_logits);
	net_free(&n);
	net_free(&sub);
}

/* keep for a phase's layer: [ceil(k / wuv)][crs] groups, about 1 in 2 kept. */
static uint8_t *random_groups(uint64_t *rng, int k, int crs, int wuv)
{
	const size_t n = mime_phase_mask_groups(k, crs, wuv);
	uint8_t *keep = malloc(n);

	for (size_t i = 0; i < n; i++)
		keep[i] = (mime_test_rand(rng) & 1) != 0;
	return keep;
}

/* The same groups at a smaller height: group (k / small, c) = group (k / wuv, c). */
static uint8_t *regroup(const uint8_t *keep, int k, int crs, int wuv, int small)
{
	uint8_t *out = malloc(mime_phase_mask_groups(k, crs, small));

	for (int row = 0; row < (k + small - 1) / small; row++)
		for (int c = 0; c < crs; c++)
			out[(size_t)row * crs + c] = keep[(size_t)(row * small / wuv) * crs + c];
	return out;
}

static void forward_into(struct mime_engine *e, const float *in, const int *tasks, float *logits,
                         int64_t *zeros)
{
	struct mime_engine_result r;

	assert_int_equal(mime_engine_forward(e, 4, in, tasks, &r), 0);
	memcpy(logits, r.logits, sizeof(float) * 4 * r.max_classes);
	memcpy(zeros, r.zeros, sizeof(int64_t) * 4 * r.n_masked);
}

/* Random halves for n values, and the floats they are. */
static uint16_t *rand_halves(uint64_t *rng, long n, float lo, float hi, float **ret_floats)
{
	uint16_t *h = malloc(sizeof(*h) * (size_t)(n > 0 ? n : 1));
	float *f = malloc(sizeof(*f) * (size_t)(n > 0 ? n : 1));

	for (long i = 0; i < n; i++) {
		h[i] = mime_float_to_half(mime_test_uniform(rng, lo, hi));
		f[i] = mime_half_to_float(h[i]);
	}
	*ret_floats = f;
	return h;
}

/* Tasks given as F16 halves: an engine keeps the decoded floats of up to 8 phases (least
 * recently used reused). Cycling twice through 11 sets of halves (so slots are evicted and
 * decoded again), with a partial batch first, every forward equals that of an engine given
 * the same values as floats. */
static void test_engine_half_views_evicted_and_rebuilt(void **state)
{
	enum { V = 11, T = 2 };
	const enum mime_thresholds gran[T] = {MIME_THR_ELEMENT, MIME_THR_CHANNEL};
	const int classes[T] = {4, 6}, tasks[4] = {1, 0, 0, 1}, only_a[4] = {0, 0, 0, 0};
	const struct mime_engine_config cfg = {.max_batch = 4, .n_threads = 2};
	struct mime_task_params th[V][T], tf[V][T];
	void *owned[V * T * (MIME_MAX_LAYERS + 2) * 2];
	struct mime_graph g = {0};
	struct mime_engine *ef = NULL, *eh = NULL;
	struct mime_model mh;
	struct net n;
	uint64_t rng = 91;
	int n_owned = 0;
	float *in;
	long feat;

	(void)state;
	fine_test_graph(&g, 12);
	net_init(&n, &g, T, gran, classes, 5);
	feat = mime_shape_size(&n.shapes[g.n_layers - 1]);
	in = rand_array(&rng, 4 * 3 * 144, 0.0f, 1.0f);
	for (int v = 0; v < V; v++)
		for (int t = 0; t < T; t++) {
			struct mime_task_params *h = &th[v][t], *f = &tf[v][t];
			float *fl;

			*f = n.tasks[t];
			*h = n.tasks[t];
			h->head_w_half = rand_halves(&rng, classes[t] * feat, -0.2f, 0.2f, &fl);
			f->head_w = fl;
			owned[n_owned++] = (void *)h->head_w_half;
			owned[n_owned++] = fl;
			h->head_b_half = rand_halves(&rng, classes[t], -0.1f, 0.1f, &fl);
			f->head_b = fl;
			owned[n_owned++] = (void *)h->head_b_half;
			owned[n_owned++] = fl;
			h->head_w = h->head_b = NULL;
			for (int i = 0; i < g.n_layers; i++) {
				const long cnt = gran[t] == MIME_THR_ELEMENT
				                         ? mime_shape_size(&n.shapes[i])
				                         : n.shapes[i].c;

				if (!n.tasks[t].thresholds[i])
					continue;
				h->thresholds_half[i] = rand_halves(&rng, cnt, 0.0f, 0.3f, &fl);
				h->thresholds[i] = NULL;
				f->thresholds[i] = fl;
				owned[n_owned++] = (void *)h->thresholds_half[i];
				owned[n_owned++] = fl;
			}
		}
	mh = n.m;
	mh.tasks = th[0];
	assert_int_equal(mime_engine_create(&n.m, &cfg, &ef, NULL), 0);
	assert_int_equal(mime_engine_create(&mh, &cfg, &eh, NULL), 0);
	for (int pass = 0; pass < 2; pass++)
		for (int v = 0; v < V; v++) {
			float lf[4 * 6] = {0}, lh[4 * 6] = {0};
			int64_t zf[4 * 4] = {0}, zh[4 * 4] = {0};

			assert_int_equal(mime_engine_set_phase(ef, NULL, tf[v], NULL), 0);
			assert_int_equal(mime_engine_set_phase(eh, NULL, th[v], NULL), 0);
			forward_into(ef, in, only_a, lf, zf);
			forward_into(eh, in, only_a, lh, zh);
			assert_memory_equal(lf, lh, sizeof(lf));
			assert_memory_equal(zf, zh, sizeof(zf));
			forward_into(ef, in, tasks, lf, zf);
			forward_into(eh, in, tasks, lh, zh);
			assert_memory_equal(lf, lh, sizeof(lf));
			assert_memory_equal(zf, zh, sizeof(zf));
		}
	mime_engine_destroy(ef);
	mime_engine_destroy(eh);
	for (int i = 0; i < n_owned; i++)
		free(owned[i]);
	free(in);
	net_free(&n);
}

/* A fine-grain switch (same kernels, other masks) selects other columns of the packed
 * weights instead of repacking them; the phase it lands in gives bit for bit what entering
 * that phase from a coarse one gives, and what the compact packing of the same masked
 * weights gives (groups of W_uv / 2 rows, not whole panel columns: the repacking path), on
 * every SIMD path of this machine, and back. */
static void test_engine_fine_switch_equals_direct_entry(void **state)
{
	static const int simds[3] = {MIME_SIMD_SCALAR, MIME_SIMD_AVX2, MIME_SIMD_AVX512};
	const enum mime_thresholds gran[2] = {MIME_THR_ELEMENT, MIME_THR_CHANNEL};
	const int classes[2] = {4, 6}, tasks[4] = {1, 0, 0, 1};
	const int ka[9] = {33, 0, 30, 19, 0, 0, 0}; /* conv 40->33, 37->30, 24->19; fc all */
	const int masked[3] = {0, 2, 3}, crs[3] = {3 * 9, 33 * 9, 30 * 9};
	struct mime_graph g = {0};
	struct net n;
	uint64_t rng = 77;
	float *in;

	(void)state;
	fine_test_graph(&g, 12);
	net_init(&n, &g, 2, gran, classes, 31);
	in = rand_array(&rng, 4 * 3 * 144, 0.0f, 1.0f);
	for (int si = 0; si < 3; si++) {
		struct mime_engine_config cfg = {
			.max_batch = 4, .n_threads = 2, .simd = 1 + simds[si]};
		struct mime_engine *direct = NULL, *sw = NULL, *compact = NULL;
		struct mime_phase pa = {0}, pb = {0}, pc = {0}, psmall = {0};
		struct mime_gemm_arch arch;
		uint8_t *keep_a[3], *keep_b[3], *keep_small[3];
		float l1[4 * 10] = {0}, l2[4 * 10] = {0},
			     l3[4 * 10] = {0}; /* 4 x max_classes used */
		int64_t z1[4 * 8] = {0}, z2[4 * 8] = {0}, z3[4 * 8] = {0};
		size_t bytes_direct;
		int wuv;

		if (!mime_gemm_arch_supported(simds[si]))
			continue;
		mime_gemm_arch_select(simds[si], &arch);
		wuv = 2 * arch.mr; /* whole panel columns */
		pa.wuv = pb.wuv = wuv;
		psmall.wuv = arch.mr / 2; /* half a panel column: compact repacking */
		for (int i = 0; i < g.n_layers; i++) {
			pa.layer[i].k_active = pb.layer[i].k_active = ka[i];
			psmall.layer[i].k_active = ka[i];
			pc.layer[i].k_active = ka[i] ? ka[i] - 5 : 0; /* a coarse step down */
		}
		for (int m = 0; m < 3; m++) {
			const int l = masked[m];

			keep_a[m] = random_groups(&rng, ka[l], crs[m], wuv);
			keep_b[m] = random_groups(&rng, ka[l], crs[m], wuv);
			keep_small[m] = regroup(keep_a[m], ka[l], crs[m], wuv, psmall.wuv);
			pa.layer[l].keep = keep_a[m];
			pb.layer[l].keep = keep_b[m];
			psmall.layer[l].keep = keep_small[m];
		}
		assert_int_equal(mime_engine_create(&n.m, &cfg, &direct, NULL), 0);
		assert_int_equal(mime_engine_create(&n.m, &cfg, &sw, NULL), 0);
		assert_int_equal(mime_engine_create(&n.m, &cfg, &compact, NULL), 0);

		/* A entered from a coarse phase (repacked) vs from B (columns selected). */
		assert_int_equal(mime_engine_set_phase(direct, &pc, NULL, NULL), 0);
		assert_int_equal(mime_engine_set_phase(direct, &pa, NULL, NULL), 0);
		forward_into(direct, in, tasks, l1, z1);
		bytes_direct = mime_engine_plan_bytes(direct);
		assert_int_equal(mime_engine_set_phase(sw, &pb, NULL, NULL), 0);
		forward_into(sw, in, tasks, l2, z2);
		assert_memory_not_equal(l1, l2, sizeof(l1)); /* B is another sub-network */
		assert_int_equal(mime_engine_set_phase(sw, &pa, NULL, NULL), 0);
		forward_into(sw, in, tasks, l2, z2);
		assert_memory_equal(l1, l2, sizeof(l1));
		assert_memory_equal(z1, z2, sizeof(z1));
		/* sw also keeps B's masked W^T: the same once direct has seen B. */
		assert_int_equal(mime_engine_set_phase(direct, &pb, NULL, NULL), 0);
		assert_int_equal(mime_engine_set_phase(direct, &pa, NULL, NULL), 0);
		bytes_direct = mime_engine_plan_bytes(direct);
		assert_int_equal(mime_engine_plan_bytes(sw), bytes_direct);
		assert_int_equal(mime_engine_set_phase(compact, &psmall, NULL, NULL), 0);
		forward_into(compact, in, tasks, l3, z3);
		assert_memory_equal(l1, l3, sizeof(l1));
		assert_memory_equal(z1, z3, sizeof(z1));

		/* And back: B via a fine switch = B entered from the whole parent. */
		assert_int_equal(mime_engine_set_phase(sw, &pb, NULL, NULL), 0);
		forward_into(sw, in, tasks, l2, z2);
		assert_int_equal(mime_engine_set_phase(direct, NULL, NULL, NULL), 0);
		assert_int_equal(mime_engine_set_phase(direct, &pb, NULL, NULL), 0);
		forward_into(direct, in, tasks, l1, z1);
		assert_memory_equal(l1, l2, sizeof(l1));
		assert_memory_equal(z1, z2, sizeof(z1));
		/* A mask entered twice in a row changes nothing. */
		assert_int_equal(mime_engine_set_phase(sw, &pb, NULL, NULL), 0);
		forward_into(sw, in, tasks, l2, z2);
		assert_memory_equal(l1, l2, sizeof(l1));

		mime_engine_destroy(direct);
		mime_engine_destroy(sw);
		mime_engine_destroy(compact);
		for (int m = 0; m < 3; m++) {
			free(keep_a[m]);
			free(keep_b[m]);
			free(keep_small[m]);
		}
	}
	free(in);
	net_free(&n);
}

/* Zero activations skipped (the input-sparse conv form): on every SIMD path of this
 * machine, at 1 and 2 threads, batch 1 and a batch mixing three tasks (per-element,
 * per-channel thresholds, ReLU), engines that never skip (OFF), skip where it pays (AUTO)
 * and skip wherever they can (ALWAYS) give bit for bit the same logits and zero counts, in
 * the whole parent and through phases: a coarse one, a fine one entered from it (a coarse
 * step into a fine mask), fine switches to other masks and back (the masked W^T kept per
 * mask found again), more masks of one size than the engine keeps (rebuilt), a fine mask
 * on the whole parent entered from the parent and left to it, the parent again. Inputs
 * half zeros, thresholds that zero most outputs (as MIME's do). */
static void test_engine_act_skip_bit_equal(void **state)
{
	static const int simds[3] = {MIME_SIMD_SCALAR, MIME_SIMD_AVX2, MIME_SIMD_AVX512};
	const enum mime_thresholds gran[3] = {MIME_THR_ELEMENT, MIME_THR_CHANNEL, MIME_THR_NONE};
	const int classes[3] = {4, 6, 5}, tasks[5] = {1, 0, 2, 2, 0};
	const int ka[9] = {33, 0, 30, 19, 0, 0, 0};
	const int masked[3] = {0, 2, 3}, crs[3] = {3 * 9, 33 * 9, 30 * 9};
	struct mime_graph g = {0};
	struct net n;
	uint64_t rng = 91;
	float *in;

	(void)state;
	fine_test_graph(&g, 14);
	net_init(&n, &g, 3, gran, classes, 57);
	for (int t = 0; t < 2; t++) /* thresholds that zero most outputs */
		for (int i = 0; i < g.n_layers; i++)
			if (n.thr[t][i]) {
				const long cnt = gran[t] == MIME_THR_ELEMENT
				                         ? mime_shape_size(&n.shapes[i])
				                         : n.shapes[i].c;

				for (long j = 0; j < cnt; j++)
					n.thr[t][i][j] = mime_test_uniform(&rng, 0.0f, 0.6f);
			}
	in = rand_array(&rng, 5 * 3 * 196, -1.0f, 1.0f);
	for (int i = 0; i < 5 * 3 * 196; i++)
		if (mime_test_uniform(&rng, 0.0f, 1.0f) < 0.5f)
			in[i] = 0.0f;
	for (int si = 0; si < 3; si++) {
		struct mime_gemm_arch arch;
		enum { NK = 6, NSEQ = 21 };
		struct mime_phase pk[NK] = {0}, pc = {0}, pd = {0};
		uint8_t *keep_k[NK][3], *keep_d[3];
		const int kd[3] = {40, 37, 24}, crs_d[3] = {3 * 9, 40 * 9, 37 * 9};
		const struct mime_phase *seq[NSEQ] = {
			NULL,   &pc,    &pk[0], &pk[1], &pk[0], &pd,    NULL,
			&pd,    &pk[2], &pk[3], &pk[4], &pk[5], &pk[0], &pk[5],
			&pk[1], &pc,    &pk[1], &pd,    &pk[3], &pk[2], NULL};

		if (!mime_gemm_arch_supported(simds[si]))
			continue;
		mime_gemm_arch_select(simds[si], &arch);
		pd.wuv = 2 * arch.mr; /* whole panel columns: fine switches select */
		for (int f = 0; f < NK; f++)
			pk[f].wuv = pd.wuv;
		for (int i = 0; i < g.n_layers; i++) {
			for (int f = 0; f < NK; f++)
				pk[f].layer[i].k_active = ka[i];
			pc.layer[i].k_active = ka[i] ? ka[i] - 5 : 0;
		}
		for (int m = 0; m < 3; m++) {
			for (int f = 0; f < NK; f++) {
				keep_k[f][m] = random_groups(&rng, ka[masked[m]], crs[m], pd.wuv);
				pk[f].layer[masked[m]].keep = keep_k[f][m];
			}
			keep_d[m] = random_groups(&rng, kd[m], crs_d[m], pd.wuv);
			pd.layer[masked[m]].keep = keep_d[m];
		}
		for (int threads = 1; threads <= 2; threads++)
			for (int batch = 1; batch <= 5; batch += 4) {
				struct mime_engine *e[3];
				float lg[3][5 * 6];
				int64_t z[3][5 * 4];

				for (int k = 0; k < 3; k++) {
					struct mime_engine_config cfg = {
						.max_batch = 5,
						.n_threads = threads,
						.simd = 1 + simds[si],
						.act_skip = (enum mime_act_skip)k};

					assert_int_equal(
						mime_engine_create(&n.m, &cfg, &e[k], NULL), 0);
				}
				for (int step = 0; step < NSEQ; step++)
					for (int k = 0; k < 3; k++) {
						struct mime_engine_result r;

						assert_int_equal(mime_engine_set_phase(e[k],
						                                       seq[step],
						                                       NULL, NULL),
						                 0);
						assert_int_equal(mime_engine_forward(e[k], batch,
						                                     in, tasks, &r),
						                 0);
						memcpy(lg[k], r.logits,
						       sizeof(float) * batch * r.max_classes);
						memcpy(z[k], r.zeros,
						       sizeof(int64_t) * batch * r.n_masked);
						if (k == 0)
							continue;
						assert_memory_equal(lg[0], lg[k],
						                    sizeof(float) * batch *
						                            r.max_classes);
						assert_memory_equal(z[0], z[k],
						                    sizeof(int64_t) * batch *
						                            r.n_masked);
					}
				for (int k = 0; k < 3; k++)
					mime_engine_destroy(e[k]);
			}
		for (int m = 0; m < 3; m++) {
			for (int f = 0; f < NK; f++)
				free(keep_k[f][m]);
			free(keep_d[m]);
		}
	}
	free(in);
	net_free(&n);
}

/* Resident bytes of the mapping that contains p, from /proc/self/smaps; -1 if not found. */
static long mapping_rss_kb(const void *p)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	int inside = 0;
	long rss = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 &&
		    strchr(line, '-') < strchr(line, ' '))
			inside = (uintptr_t)p >= lo && (uintptr_t)p < hi;
		else if (inside && sscanf(line, "Rss: %ld kB", &rss) == 1)
			break;
	}
	fclose(f);
	return rss;
}

/* With weights in a file-backed bundle, the packed path keeps only its packed copy: the
 * mapping's pages of conv weights are dropped after packing (RSS follows the phase), and the
 * results equal an engine on a heap copy of the same weights. */
static void test_engine_packed_path_releases_mapped_weights(void **state)
{
	static char *classes[3] = {"x", "y", "z"};
	struct mime_graph g = {0};
	struct mime_manifest mf = {0};
	struct mime_task_spec ts = {0};
	struct mime_bundle_writer *w = NULL;
	struct mime_bundle *b = NULL;
	struct mime_model m, heap;
	struct mime_engine *e = NULL, *eh = NULL;
	struct mime_engine_result r;
	struct mime_errinfo ei = {0};
	struct mime_engine_config cfg = {.max_batch = 2, .n_threads = 1};
	uint64_t rng = 12;
	const long nw = 256L * 64 * 9, feat = 256L * 8 * 8;
	float *wt = rand_array(&rng, nw, -0.05f, 0.05f), *bias = rand_array(&rng, 256, 0, 0.1f);
	float *hw = rand_array(&rng, 3 * feat, -0.1f, 0.1f), *hb = rand_array(&rng, 3, 0, 0.1f);
	float *in = rand_array(&rng, 2 * 3 * 16 * 16, 0, 1), logits[2 * 3];
	float *w0 = rand_array(&rng, 64 * 27, -0.2f, 0.2f), *b0 = rand_array(&rng, 64, 0, 0.1f);
	char *path = mime_test_tmpfile(NULL, 0);
	int tasks[2] = {0, 0};
	double sum = 0;
	long before, after;

	(void)state;
	g.input = (struct mime_shape){3, 16, 16};
	add_layer(&g, MIME_LAYER_CONV, 64, 3, 1, 1, MIME_ACT_RELU);
	add_layer(&g, MIME_LAYER_CONV, 256, 3, 1, 1, MIME_ACT_RELU);
	add_layer(&g, MIME_LAYER_MAXPOOL, 0, 2, 2, 0, MIME_ACT_NONE);
	add_layer(&g, MIME_LAYER_FLATTEN, 0, 0, 0, 0, MIME_ACT_NONE);
	mf.graph = g;
	snprintf(ts.name, sizeof(ts.name), "t");
	ts.n_classes = 3;
	ts.class_names = classes;
	mime_input_spec_default(&g, &ts.input);
	ts.accuracy = -1;
	mf.n_tasks = 1;
	mf.tasks = &ts;
	assert_int_equal(mime_bundle_writer_create(&w), 0);
	assert_int_equal(mime_bundle_writer_add(w, "parent/l0.weight", MIME_DTYPE_F32, 4,
	                                        (int64_t[]){64, 3, 3, 3}, w0),
	                 0);
	assert_int_equal(
		mime_bundle_writer_add(w, "parent/l0.bias", MIME_DTYPE_F32, 1, (int64_t[]){64}, b0),
		0);
	assert_int_equal(mime_bundle_writer_add(w, "parent/l1.weight", MIME_DTYPE_F32, 4,
	                                        (int64_t[]){256, 64, 3, 3}, wt),
	                 0);
	assert_int_equal(mime_bundle_writer_add(w, "parent/l1.bias", MIME_DTYPE_F32, 1,
	                                        (int64_t[]){256}, bias),
	                 0);
	assert_int_equal(mime_bundle_writer_add(w, "task/t/head.weight", MIME_DTYPE_F32, 2,
	                                        (int64_t[]){3, feat}, hw),
	                 0);
	assert_int_equal(mime_bundle_writer_add(w, "task/t/head.bias", MIME_DTYPE_F32, 1,
	                                        (int64_t[]){3}, hb),
	                 0);
	if (mime_bundle_writer_write(w, &mf, path, &ei) != 0)
		fail_msg("%s", ei.msg);
	mime_bundle_writer_destroy(w);
	if (mime_bundle_open(path, &b, &ei) != 0)
		fail_msg("%s", ei.msg);
	assert_int_equal(mime_model_from_bundle(b, 0, &m, &ei), 0);
	assert_int_equal(m.weights_file_backed, 1);
	for (long i = 0; i < nw; i++) /* fault every weight page in */
		sum += m.weight[1][i];
	before = mapping_rss_kb(m.weight[1]);
	assert_true(before >= (long)(nw * 4 / 1024) - 8);
	assert_int_equal(mime_engine_create(&m, &cfg, &e, &ei), 0);
	after = mapping_rss_kb(m.weight[1]);
	if (after > before - (long)(nw * 4 / 1024) + 16)
		fail_msg("mapping RSS %ld kB before, %ld kB after packing", before, after);
	assert_int_equal(mime_engine_forward(e, 2, in, tasks, &r), 0);
	memcpy(logits, r.logits, sizeof(logits));

	/* The same weights on the heap (never dropped) give the same bits. */
	heap = m;
	heap.weight[1] = wt;
	heap.weights_file_backed = 0;
	assert_int_equal(mime_engine_create(&heap, &cfg, &eh, &ei), 0);
	assert_int_equal(mime_engine_forward(eh, 2, in, tasks, &r), 0);
	assert_memory_equal(logits, r.logits, sizeof(logits));
	assert_true(sum == sum);
	mime_engine_destroy(e);
	mime_engine_destroy(eh);
	mime_model_fini(&m);
	mime_bundle_close(b);
	unlink(path);
	free(path);
	free(wt);
	free(w0);
	free(b0);
	free(bias);
	free(hw);
	free(hb);
	free(in);
}

static long process_rss_kb(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long size = 0, res = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%ld %ld", &size, &res) != 2)
		res = -1;
	fclose(f);
	return res < 0 ? -1 : res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* With a file-backed bundle, stepping down a coarse phase gives the memory of the kernels it
 * drops back to the system: the process' RSS falls by at least 80% of the packed bytes the
 * step releases (the packed weights live in mappings of their own, the file's pages are
 * dropped once packed); stepping up takes it again. */
static void test_engine_coarse_step_down_releases_memory(void **state)
{
	static char *classes[2] = {"x", "y"};
	struct mime_graph g = {0};
	struct mime_manifest mf = {0};
	struct mime_task_spec ts = {0};
	struct mime_bundle_writer *w = NULL;
	struct mime_bundle *b = NULL;
	struct mime_model m;
	struct mime_engine *e = NULL;
	struct mime_engine_result r;
	struct mime_errinfo ei = {0};
	struct mime_engine_config cfg = {.max_batch = 1, .n_threads = 1};
	struct mime_phase small = {0};
	uint64_t rng = 15;
	const long n1 = 512L * 128 * 9, feat = 512L * 4 * 4;
	float *w0 = rand_array(&rng, 128 * 9, -0.3f, 0.3f), *b0 = rand_array(&rng, 128, 0, 0.1f);
	float *w1 = rand_array(&rng, n1, -0.05f, 0.05f), *b1 = rand_array(&rng, 512, 0, 0.1f);
	float *hw = rand_array(&rng, 2 * feat, -0.1f, 0.1f), *hb = rand_array(&rng, 2, 0, 0.1f);
	float *in = rand_array(&rng, 8 * 8, 0, 1);
	char *path = mime_test_tmpfile(NULL, 0);
	int tasks[1] = {0};
	long rss_big, rss_small, rss_again;
	size_t plan_big, plan_small;

	(void)state;
	g.input = (struct mime_shape){1, 8, 8};
	add_layer(&g, MIME_LAYER_CONV, 128, 3, 1, 1, MIME_ACT_RELU);
	add_layer(&g, MIME_LAYER_CONV, 512, 3, 1, 1, MIME_ACT_RELU);
	add_layer(&g, MIME_LAYER_MAXPOOL, 0, 2, 2, 0, MIME_ACT_NONE);
	add_layer(&g, MIME_LAYER_FLATTEN, 0, 0, 0, 0, MIME_ACT_NONE);
	mf.graph = g;
	snprintf(ts.name, sizeof(ts.name), "t");
	ts.n_classes = 2;
	ts.class_names = classes;
	mime_input_spec_default(&g, &ts.input);
	ts.accuracy = -1;
	mf.n_tasks = 1;
	mf.tasks = &ts;
	assert_int_equal(mime_bundle_writer_create(&w), 0);
	assert_int_equal(mime_bundle_writer_add(w, "parent/l0.weight", MIME_DTYPE_F32, 4,
	                                        (int64_t[]){128, 1, 3, 3}, w0),
	                 0);
	assert_int_equal(mime_bundle_writer_add(w, "parent/l0.bias", MIME_DTYPE_F32, 1,
	                                        (int64_t[]){128}, b0),
	                 0);
	assert_int_equal(mime_bundle_writer_add(w, "parent/l1.weight", MIME_DTYPE_F32, 4,
	                                        (int64_t[]){512, 128, 3, 3}, w1),
	                 0);
	assert_int_equal(mime_bundle_writer_add(w, "parent/l1.bias", MIME_DTYPE_F32, 1,
	                                        (int64_t[]){512}, b1),
	                 0);
	assert_int_equal(mime_bundle_writer_add(w, "task/t/head.weight", MIME_DTYPE_F32, 2,
	                                        (int64_t[]){2, feat}, hw),
	                 0);
	assert_int_equal(mime_bundle_writer_add(w, "task/t/head.bias", MIME_DTYPE_F32, 1,
	                                        (int64_t[]){2}, hb),
	                 0);
	if (mime_bundle_writer_write(w, &mf, path, &ei) != 0)
		fail_msg("%s", ei.msg);
	mime_bundle_writer_destroy(w);
	if (mime_bundle_open(path, &b, &ei) != 0)
		fail_msg("%s", ei.msg);
	assert_int_equal(mime_model_from_bundle(b, 0, &m, &ei), 0);
	assert_int_equal(m.weights_file_backed, 1);
	assert_int_equal(mime_engine_create(&m, &cfg, &e, &ei), 0);
	/* The whole parent, then the first 64 of l1's 512 kernels: 448 x 1152 weights go.
	 * (The head reads a prefix of the parent's head: enough for a memory test.) */
	small.layer[1].k_active = 64;
	assert_int_equal(mime_engine_forward(e, 1, in, tasks, &r), 0);
	plan_big = mime_engine_plan_bytes(e);
	rss_big = process_rss_kb();
	assert_int_equal(mime_engine_set_phase(e, &small, NULL, &ei), 0);
	assert_int_equal(mime_engine_forward(e, 1, in, tasks, &r), 0);
	plan_small = mime_engine_plan_bytes(e);
	rss_small = process_rss_kb();
	assert_true(plan_big - plan_small >= 448UL * 1152 * 4);
	if ((double)(rss_big - rss_small) * 1024 < 0.8 * (double)(plan_big - plan_small))
		fail_msg("RSS %ld kB in the whole parent, %ld kB after releasing %zu bytes",
		         rss_big, rss_small, plan_big - plan_small);
	/* Back up: the increment is packed (and resident) again. */
	assert_int_equal(mime_engine_set_phase(e, NULL, NULL, &ei), 0);
	assert_int_equal(mime_engine_forward(e, 1, in, tasks, &r), 0);
	rss_again = process_rss_kb();
	assert_int_equal(mime_engine_plan_bytes(e), plan_big);
	assert_true((double)(rss_again - rss_small) * 1024 >=
	            0.8 * (double)(plan_big - plan_small));
	mime_engine_destroy(e);
	mime_model_fini(&m);
	mime_bundle_close(b);
	unlink(path);
	free(path);
	free(w0);
	free(b0);
	free(w1);
	free(b1);
	free(hw);
	free(hb);
	free(in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_engine_forward_matches_reference_odd_shapes),
		cmocka_unit_test(test_engine_forward_vgg_like_all_granularities),
		cmocka_unit_test(test_engine_every_conv_path_matches_reference),
		cmocka_unit_test(test_engine_mixed_batch_equals_single_samples),
		cmocka_unit_test(test_engine_batch1_threads_equal_one_thread),
		cmocka_unit_test(test_engine_sample_split_any_batch_equals_single_samples),
		cmocka_unit_test(test_engine_prepare_wakes_threads_then_they_sleep),
		cmocka_unit_test(test_engine_threads_sleep_after_forward),
		cmocka_unit_test(test_engine_zero_thresholds_equal_relu),
		cmocka_unit_test(test_engine_threshold_equal_fires),
		cmocka_unit_test(test_engine_forward_rejects_bad_arguments),
		cmocka_unit_test(test_engine_set_phase_equals_sliced_network),
		cmocka_unit_test(test_engine_packed_path_releases_mapped_weights),
		cmocka_unit_test(test_engine_fine_switch_equals_direct_entry),
		cmocka_unit_test(test_engine_half_views_evicted_and_rebuilt),
		cmocka_unit_test(test_engine_act_skip_bit_equal),
		cmocka_unit_test(test_engine_coarse_step_down_releases_memory),
	};

	return cmocka_run_group_tests_name("engine", tests, NULL, NULL);
}
