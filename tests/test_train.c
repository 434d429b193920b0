// SPDX-License-Identifier: MIT
/* test_train -- the training core: every layer's backward against central finite
 * differences, BatchNorm folding, optimizers, data batches, a tiny training run that must
 * learn, and bit-identical reruns and resumes. */
#include "tests/unit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train/data.h"
#include "train/net.h"
#include "train/optim.h"

/* ---- helpers ---- */

static void layer(struct mime_graph *g, enum mime_layer_kind kind, const char *name, int out,
                  int kernel, int stride, int pad, enum mime_act act)
{
	struct mime_layer_spec *l = &g->layers[g->n_layers++];

	memset(l, 0, sizeof(*l));
	l->kind = kind;
	snprintf(l->name, sizeof(l->name), "%s", name);
	l->out = out;
	l->kernel = kernel;
	l->stride = stride;
	l->pad = pad;
	l->act = act;
}

static struct mimetrain_net *make_net(const struct mime_graph *g, int n_classes, int bn,
                                      int max_batch, uint64_t seed)
{
	struct mimetrain_net_config cfg = {.n_classes = n_classes,
	                                   .batchnorm = bn,
	                                   .max_batch = max_batch,
	                                   .threads = 2,
	                                   .seed = seed};
	struct mimetrain_net *net = NULL;
	struct mime_errinfo ei = {0};

	if (mimetrain_net_create(g, &cfg, &net, &ei) < 0)
		print_error("net: %s\n", ei.msg);
	assert_non_null(net);
	return net;
}

static double loss_at(struct mimetrain_net *net, const float *x, const uint8_t *y, int n)
{
	assert_non_null(mimetrain_net_forward(net, x, n, 1));
	return mimetrain_net_loss(net, y, NULL);
}

/* Compares the analytic gradient of every param (up to `per` entries each, spread over the
 * tensor) and of the input with central differences. The loss is a float32 computation
 * (about 2.0, so ~2e-7 of rounding), so with eps = 1e-3 the difference carries ~2e-4 of
 * noise; the tolerance is |analytic - numeric| <= 2e-3 + 2e-2 * |numeric|. eps is small so
 * that ReLU kinks and max-pool arg-max switches rarely fall inside [w - eps, w + eps]
 * (with eps = 1e-2 they do, and the pooling checks fail). */
static void grad_check(const struct mime_graph *g, int bn, int n)
{
	const int C = 5, per = 24;
	const float eps = 1e-3f;
	const long nx = (long)n * mime_shape_size(&g->input);
	struct mimetrain_net *net = make_net(g, C, bn, n, 7);
	struct mimetrain_param *p;
	uint64_t s = 42;
	float *x = malloc(sizeof(float) * nx), *gx = malloc(sizeof(float) * nx), **ga;
	uint8_t y[16];
	int np, checked = 0;

	assert_non_null(x);
	assert_non_null(gx);
	for (long i = 0; i < nx; i++)
		x[i] = mime_test_uniform(&s, -1.0f, 1.0f);
	for (int i = 0; i < n; i++)
		y[i] = (uint8_t)(i % C);
	p = mimetrain_net_params(net, &np);
	/* move BN's gamma/beta and biases off their initial values */
	for (int i = 0; i < np; i++)
		if (!p[i].decay)
			for (size_t j = 0; j < p[i].n; j++)
				p[i].w[j] += mime_test_uniform(&s, -0.3f, 0.3f);
	loss_at(net, x, y, n);
	mimetrain_net_backward(net, 1);
	memcpy(gx, mimetrain_net_input_grad(net), sizeof(float) * nx);
	ga = calloc(np, sizeof(*ga));
	assert_non_null(ga);
	for (int i = 0; i < np; i++) {
		ga[i] = malloc(sizeof(float) * p[i].n);
		assert_non_null(ga[i]);
		memcpy(ga[i], p[i].g, sizeof(float) * p[i].n);
	}
	for (int i = 0; i < np; i++) {
		size_t stride = p[i].n > (size_t)per ? p[i].n / per : 1;

		for (size_t j = 0; j < p[i].n; j += stride) {
			float w0 = p[i].w[j];
			double lp, lm, num;

			p[i].w[j] = w0 + eps;
			lp = loss_at(net, x, y, n);
			p[i].w[j] = w0 - eps;
			lm = loss_at(net, x, y, n);
			p[i].w[j] = w0;
			num = (lp - lm) / (2 * eps);
			if (fabs(ga[i][j] - num) > 2e-3 + 2e-2 * fabs(num))
				fail_msg("%s[%zu]: analytic %.6g numeric %.6g", p[i].name, j,
				         ga[i][j], num);
			checked++;
		}
	}
	for (long j = 0; j<nx; j += nx> per ? nx / per : 1) {
		float x0 = x[j];
		double lp, lm, num;

		x[j] = x0 + eps;
		lp = loss_at(net, x, y, n);
		x[j] = x0 - eps;
		lm = loss_at(net, x, y, n);
		x[j] = x0;
		num = (lp - lm) / (2 * eps);
		if (fabs(gx[j] - num) > 2e-3 + 2e-2 * fabs(num))
			fail_msg("input[%ld]: analytic %.6g numeric %.6g", j, gx[j], num);
		checked++;
	}
	assert_true(checked > 10);
	for (int i = 0; i < np; i++)
		free(ga[i]);
	free(ga);
	free(gx);
	free(x);
	mimetrain_net_destroy(net);
}

/* ---- gradients ---- */

static void test_train_head_softmax_ce_grad(void **state)
{
	struct mime_graph g = {.input = {3, 2, 3}};

	layer(&g, MIME_LAYER_FLATTEN, "flatten", 0, 0, 0, 0, MIME_ACT_NONE);
	grad_check(&g, 0, 4);
}

static void test_train_conv_stride_pad_grad(void **state)
{
	struct mime_graph g = {.input = {2, 7, 9}};

	layer(&g, MIME_LAYER_CONV, "conv1", 3, 3, 2, 1, MIME_ACT_NONE);
	layer(&g, MIME_LAYER_CONV, "conv2", 4, 2, 1, 0, MIME_ACT_NONE);
	grad_check(&g, 0, 3);
}

static void test_train_conv_large_kernel_relu_grad(void **state)
{
	struct mime_graph g = {.input = {1, 11, 10}};

	layer(&g, MIME_LAYER_CONV, "conv1", 3, 5, 3, 2, MIME_ACT_NONE);
	layer(&g, MIME_LAYER_CONV, "conv2", 2, 1, 1, 0, MIME_ACT_NONE);
	grad_check(&g, 0, 2);
}

static void test_train_maxpool_grad(void **state)
{
	struct mime_graph g = {.input = {2, 9, 8}};

	layer(&g, MIME_LAYER_CONV, "conv1", 3, 3, 1, 1, MIME_ACT_NONE);
	layer(&g, MIME_LAYER_MAXPOOL, "pool1", 0, 3, 2, 0, MIME_ACT_NONE); /* overlapping */
	layer(&g, MIME_LAYER_MAXPOOL, "pool2", 0, 2, 2, 0, MIME_ACT_NONE);
	grad_check(&g, 0, 2);
}

static void test_train_fc_grad(void **state)
{
	struct mime_graph g = {.input = {2, 3, 3}};

	layer(&g, MIME_LAYER_FLATTEN, "flatten", 0, 0, 0, 0, MIME_ACT_NONE);
	layer(&g, MIME_LAYER_FC, "fc1", 7, 0, 0, 0, MIME_ACT_NONE);
	layer(&g, MIME_LAYER_FC, "fc2", 6, 0, 0, 0, MIME_ACT_NONE);
	grad_check(&g, 0, 3);
}

static void test_train_batchnorm_grad(void **state)
{
	struct mime_graph g = {.input = {2, 5, 5}};

	layer(&g, MIME_LAYER_CONV, "conv1", 3, 3, 1, 1, MIME_ACT_NONE);
	layer(&g, MIME_LAYER_CONV, "conv2", 4, 3, 2, 0, MIME_ACT_NONE);
	grad_check(&g, 1, 4);
}

/* ReLU, pooling, BatchNorm and fc together, as in VGG. A pre-activation within eps of 0
 * would put a kink inside the difference; with random inputs that is rare enough that the
 * tolerance above holds for this fixed seed. */
static void test_train_relu_vgg_like_grad(void **state)
{
	struct mime_graph g = {.input = {1, 8, 8}};

	layer(&g, MIME_LAYER_CONV, "conv1", 4, 3, 1, 1, MIME_ACT_RELU);
	layer(&g, MIME_LAYER_MAXPOOL, "pool1", 0, 2, 2, 0, MIME_ACT_NONE);
	layer(&g, MIME_LAYER_CONV, "conv2", 3, 3, 1, 1, MIME_ACT_RELU);
	layer(&g, MIME_LAYER_FLATTEN, "flatten", 0, 0, 0, 0, MIME_ACT_NONE);
	layer(&g, MIME_LAYER_FC, "fc", 6, 0, 0, 0, MIME_ACT_RELU);
	grad_check(&g, 1, 3);
}

/* ---- BatchNorm folding ---- */

static void test_train_folded_matches_eval_forward(void **state)
{
	struct mime_graph g = {.input = {1, 10, 10}};
	const int n = 8;
	struct mimetrain_net *a, *b;
	struct mimetrain_param *p;
	const float *hw, *hb;
	float x[8 * 100], w[6 * 4 * 9], bias[6], la[8 * 4];
	uint8_t y[8];
	uint64_t s = 3;
	int np;

	layer(&g, MIME_LAYER_CONV, "conv1", 4, 3, 1, 1, MIME_ACT_RELU);
	layer(&g, MIME_LAYER_MAXPOOL, "pool1", 0, 2, 2, 0, MIME_ACT_NONE);
	layer(&g, MIME_LAYER_CONV, "conv2", 6, 3, 2, 0, MIME_ACT_RELU);
	a = make_net(&g, 4, 1, n, 5);
	b = make_net(&g, 4, 0, n, 6);
	for (int i = 0; i < n * 100; i++)
		x[i] = mime_test_uniform(&s, -1, 2);
	for (int i = 0; i < n; i++)
		y[i] = (uint8_t)(i % 4);
	/* non-trivial gamma/beta and running statistics */
	p = mimetrain_net_params(a, &np);
	for (int i = 0; i < np; i++)
		if (strstr(p[i].name, ".bn."))
			for (size_t j = 0; j < p[i].n; j++)
				p[i].w[j] += mime_test_uniform(&s, -0.5f, 0.5f);
	for (int k = 0; k < 5; k++)
		loss_at(a, x, y, n);
	memcpy(la, mimetrain_net_forward(a, x, n, 0), sizeof(la));

	assert_int_equal(mimetrain_net_folded(a, 0, w, bias), 0);
	assert_int_equal(mimetrain_net_set_layer(b, 0, w, bias), 0);
	assert_int_equal(mimetrain_net_folded(a, 2, w, bias), 0);
	assert_int_equal(mimetrain_net_set_layer(b, 2, w, bias), 0);
	assert_int_equal(mimetrain_net_folded(a, 1, w, bias), MIME_EINVAL); /* a pool */
	mimetrain_net_head(a, &hw, &hb);
	{
		struct mimetrain_param *pb = mimetrain_net_params(b, &np);

		memcpy(pb[np - 2].w, hw, sizeof(float) * pb[np - 2].n);
		memcpy(pb[np - 1].w, hb, sizeof(float) * pb[np - 1].n);
	}
	{
		const float *lb = mimetrain_net_forward(b, x, n, 0);
		double max_err = 0, max_abs = 0;

		for (int i = 0; i < n * 4; i++) {
			max_err = fmax(max_err, fabs(la[i] - lb[i]));
			max_abs = fmax(max_abs, fabs(la[i]));
		}
		/* tolerance: float rounding of a re-associated product, relative 1e-4 */
		assert_true(max_abs > 0.1);
		if (max_err > 1e-4 * max_abs)
			fail_msg("folded logits differ by %g (max |logit| %g)", max_err, max_abs);
	}
	mimetrain_net_destroy(b);
	mimetrain_net_destroy(a);
}

/* ---- optimizers ---- */

static void test_train_optim_schedules(void **state)
{
	struct mimetrain_optim_config c = {.lr = 0.1f,
	                                   .schedule = MIMETRAIN_LR_COSINE,
	                                   .total_steps = 100,
	                                   .warmup_steps = 10};

	assert_float_equal(mimetrain_optim_lr(&c, 0), 0.01, 1e-6);
	assert_float_equal(mimetrain_optim_lr(&c, 9), 0.1, 1e-6);
	assert_float_equal(mimetrain_optim_lr(&c, 10), 0.1, 1e-6);
	assert_float_equal(mimetrain_optim_lr(&c, 55), 0.05, 1e-6);
	assert_float_equal(mimetrain_optim_lr(&c, 100), 0.0, 1e-6);
	c.schedule = MIMETRAIN_LR_STEP;
	c.warmup_steps = 0;
	c.step_every = 30;
	c.step_gamma = 0.1f;
	assert_float_equal(mimetrain_optim_lr(&c, 29), 0.1, 1e-6);
	assert_float_equal(mimetrain_optim_lr(&c, 30), 0.01, 1e-7);
	assert_float_equal(mimetrain_optim_lr(&c, 65), 0.001, 1e-8);
}

/* One parameter w with loss (w - 3)^2 / 2 (gradient w - 3): both optimizers converge;
 * SGD's first steps follow the formula in optim.h exactly; decay only on decay params. */
static void test_train_optim_converges(void **state)
{
	for (int kind = 0; kind < 2; kind++) {
		float w[2] = {0, 0}, g[2];
		struct mimetrain_param p[2] = {
			{.name = "a.weight", .w = &w[0], .g = &g[0], .n = 1, .decay = 1},
			{.name = "a.bias", .w = &w[1], .g = &g[1], .n = 1, .decay = 0},
		};
		struct mimetrain_optim_config c = {.kind = kind ? MIMETRAIN_ADAM : MIMETRAIN_SGD,
		                                   .lr = kind ? 0.05f : 0.1f,
		                                   .momentum = 0.9f,
		                                   .nesterov = 1,
		                                   .weight_decay = 0.1f,
		                                   .schedule = MIMETRAIN_LR_CONSTANT};
		struct mimetrain_optim *o = NULL;

		assert_int_equal(mimetrain_optim_create(&c, p, 2, &o, NULL), 0);
		for (int it = 0; it < 500; it++) {
			g[0] = w[0] - 3;
			g[1] = w[1] - 3;
			mimetrain_optim_step(o);
			if (it == 0 && kind == 0) {
				/* v = g = -3; w -= 0.1 * (g + 0.9 v) = 0.57 */
				assert_float_equal(w[0], 0.57, 1e-6);
				assert_float_equal(w[1], 0.57, 1e-6);
			}
		}
		/* with decay: minimum of (w-3)^2/2 + 0.05 w^2 is 3 / 1.1 */
		assert_float_equal(w[0], 3.0 / 1.1, 2e-2);
		assert_float_equal(w[1], 3.0, 2e-2);
		assert_int_equal(mimetrain_optim_steps(o), 500);
		mimetrain_optim_destroy(o);
	}
}

static void test_train_optim_rejects_bad_config(void **state)
{
	struct mimetrain_optim_config c = {.lr = 0, .schedule = MIMETRAIN_LR_CONSTANT};
	struct mimetrain_optim *o = NULL;

	assert_int_equal(mimetrain_optim_create(&c, NULL, 0, &o, NULL), MIME_EINVAL);
	c.lr = 0.1f;
	c.schedule = MIMETRAIN_LR_COSINE; /* without total_steps */
	assert_int_equal(mimetrain_optim_create(&c, NULL, 0, &o, NULL), MIME_EINVAL);
	assert_null(o);
}

/* ---- data ---- */

static void test_train_data_shuffle_is_seeded_permutation(void **state)
{
	int a[1000], b[1000], seen[1000] = {0}, same = 0;
	struct mimetrain_rng r;

	mimetrain_rng_seed(&r, 9);
	mimetrain_shuffle(a, 1000, &r);
	mimetrain_rng_seed(&r, 9);
	mimetrain_shuffle(b, 1000, &r);
	assert_memory_equal(a, b, sizeof(a));
	for (int i = 0; i < 1000; i++) {
		assert_in_range(a[i], 0, 999);
		seen[a[i]]++;
		same += a[i] == i;
	}
	for (int i = 0; i < 1000; i++)
		assert_int_equal(seen[i], 1);
	assert_true(same < 20);
}

static void test_train_data_batch_normalises_and_augments(void **state)
{
	uint8_t px[2 * 9], lb[2] = {1, 0};
	struct mimetrain_data d;
	struct mimetrain_augment flip = {.pad = 0, .hflip = 1}, shift = {.pad = 1, .hflip = 0};
	struct mimetrain_rng r;
	float x[9];
	uint8_t y;
	int idx = 0, flips = 0, shifted = 0;

	for (int i = 0; i < 18; i++)
		px[i] = (uint8_t)(i * 10);
	assert_int_equal(mimetrain_data_from_arrays(2, 1, 3, 3, px, lb, 2, &d), 0);
	mimetrain_data_batch(&d, &idx, 1, 0.5f, 0.25f, NULL, NULL, x, &y);
	assert_int_equal(y, 1);
	for (int i = 0; i < 9; i++)
		assert_float_equal(x[i], (px[i] / 255.0f - 0.5f) / 0.25f, 1e-5);
	mimetrain_rng_seed(&r, 1);
	for (int t = 0; t < 64; t++) {
		mimetrain_data_batch(&d, &idx, 1, 0.0f, 1.0f, &flip, &r, x, &y);
		if (x[0] != 0.0f) { /* mirrored: column 2 first */
			assert_float_equal(x[0], 20 / 255.0f, 1e-6);
			flips++;
		}
	}
	assert_in_range(flips, 16, 48);
	for (int t = 0; t < 64; t++) {
		float sum = 0;

		mimetrain_data_batch(&d, &idx, 1, 0.0f, 1.0f, &shift, &r, x, &y);
		for (int i = 0; i < 9; i++)
			sum += x[i];
		shifted += fabsf(sum - 360 / 255.0f) > 1e-4f; /* zero padding entered */
	}
	assert_true(shifted > 32);
	assert_int_equal(mimetrain_data_from_arrays(2, 1, 3, 3, px, lb, 1, &d), MIME_EINVAL);
	mimetrain_data_fini(&d);
}

/* ---- training ---- */

/* Synthetic 10-class data, 1x12x12: class k is a bright 3x3 blob centred at one of ten
 * fixed positions, with uniform noise and a random +-1 pixel jitter. */
static void synth(int n, uint64_t seed, uint8_t *px, uint8_t *lb)
{
	static const int pos[10][2] = {{2, 2}, {2, 6}, {2, 9}, {6, 2}, {6, 6},
	                               {6, 9}, {9, 2}, {9, 6}, {9, 9}, {4, 4}};
	uint64_t s = seed;

	for (int i = 0; i < n; i++) {
		int k = (int)(mime_test_rand(&s) % 10);
		int cy = pos[k][0] + (int)(mime_test_rand(&s) % 3) - 1;
		int cx = pos[k][1] + (int)(mime_test_rand(&s) % 3) - 1;
		uint8_t *p = px + (size_t)i * 144;

		lb[i] = (uint8_t)k;
		for (int j = 0; j < 144; j++)
			p[j] = (uint8_t)(mime_test_rand(&s) % 90);
		for (int dy = -1; dy <= 1; dy++)
			for (int dx = -1; dx <= 1; dx++)
				p[(cy + dy) * 12 + cx + dx] =
					200 + (uint8_t)(mime_test_rand(&s) % 56);
	}
}

static void small_graph(struct mime_graph *g)
{
	memset(g, 0, sizeof(*g));
	g->input = (struct mime_shape){1, 12, 12};
	layer(g, MIME_LAYER_CONV, "conv1", 8, 3, 1, 1, MIME_ACT_RELU);
	layer(g, MIME_LAYER_MAXPOOL, "pool1", 0, 2, 2, 0, MIME_ACT_NONE);
	layer(g, MIME_LAYER_CONV, "conv2", 16, 3, 1, 1, MIME_ACT_RELU);
	layer(g, MIME_LAYER_MAXPOOL, "pool2", 0, 2, 2, 0, MIME_ACT_NONE);
	layer(g, MIME_LAYER_FLATTEN, "flatten", 0, 0, 0, 0, MIME_ACT_NONE);
}

/* Trains epochs [from, to) of a run; the shuffle and augmentation of epoch e come from
 * (seed, e) only, as in mime-train parent. Returns the accuracy on test. */
static double run_epochs(struct mimetrain_net *net, struct mimetrain_optim *opt,
                         const struct mimetrain_data *train, const struct mimetrain_data *test,
                         int batch, int from, int to)
{
	struct mimetrain_augment aug = {.pad = 1, .hflip = 0};
	int perm[2048], correct = 0;
	float x[64 * 144];
	uint8_t y[64];

	assert_true(train->n <= 2048 && batch <= 64);
	for (int ep = from; ep < to; ep++) {
		struct mimetrain_rng shuf, ar;

		mimetrain_rng_seed(&shuf, mimetrain_rng_derive(11, 2u * ep));
		mimetrain_rng_seed(&ar, mimetrain_rng_derive(11, 2u * ep + 1));
		mimetrain_shuffle(perm, train->n, &shuf);
		for (int s = 0; s + batch <= train->n; s += batch) {
			mimetrain_data_batch(train, perm + s, batch, 0.3f, 0.3f, &aug, &ar, x, y);
			mimetrain_net_forward(net, x, batch, 1);
			mimetrain_net_loss(net, y, NULL);
			mimetrain_net_backward(net, 0);
			mimetrain_optim_step(opt);
		}
	}
	for (int s = 0; s < test->n; s += batch) {
		int n = test->n - s < batch ? test->n - s : batch, c, idx[64];

		for (int i = 0; i < n; i++)
			idx[i] = s + i;
		mimetrain_data_batch(test, idx, n, 0.3f, 0.3f, NULL, NULL, x, y);
		mimetrain_net_forward(net, x, n, 0);
		mimetrain_net_loss(net, y, &c);
		correct += c;
	}
	return (double)correct / test->n;
}

struct tiny {
	struct mimetrain_data train, test;
	struct mime_graph g;
};

static int setup_tiny(void **state)
{
	struct tiny *t = calloc(1, sizeof(*t));
	uint8_t *px = malloc(1024 * 144), lb[1024];

	if (!t || !px)
		return -1;
	synth(1024, 1, px, lb);
	if (mimetrain_data_from_arrays(1024, 1, 12, 12, px, lb, 10, &t->train) < 0)
		return -1;
	synth(512, 2, px, lb);
	if (mimetrain_data_from_arrays(512, 1, 12, 12, px, lb, 10, &t->test) < 0)
		return -1;
	free(px);
	small_graph(&t->g);
	*state = t;
	return 0;
}

static int teardown_tiny(void **state)
{
	struct tiny *t = *state;

	mimetrain_data_fini(&t->train);
	mimetrain_data_fini(&t->test);
	free(t);
	return 0;
}

static struct mimetrain_optim *make_opt(struct mimetrain_net *net, long total)
{
	struct mimetrain_optim_config c = {.kind = MIMETRAIN_SGD,
	                                   .lr = 0.05f,
	                                   .momentum = 0.9f,
	                                   .nesterov = 1,
	                                   .weight_decay = 5e-4f,
	                                   .schedule = MIMETRAIN_LR_COSINE,
	                                   .total_steps = total,
	                                   .warmup_steps = 8};
	struct mimetrain_optim *o = NULL;
	struct mimetrain_param *p;
	int np;

	p = mimetrain_net_params(net, &np);
	assert_int_equal(mimetrain_optim_create(&c, p, np, &o, NULL), 0);
	return o;
}

/* 1024 synthetic images, 4 epochs of batch 32: must reach 90% on 512 held-out images (a
 * net that does not learn stays near 10%). */
static void test_train_tiny_run_learns(void **state)
{
	struct tiny *t = *state;
	struct mimetrain_net *net = make_net(&t->g, 10, 1, 32, 1);
	struct mimetrain_optim *o = make_opt(net, 4 * 32);
	double acc = run_epochs(net, o, &t->train, &t->test, 32, 0, 4);

	print_message("tiny run: test accuracy %.1f%%\n", 100 * acc);
	assert_true(acc >= 0.90);
	mimetrain_optim_destroy(o);
	mimetrain_net_destroy(net);
}

static void assert_same_weights(struct mimetrain_net *a, struct mimetrain_net *b, int want_same)
{
	struct mimetrain_param *pa, *pb;
	int na, nb, same = 1;

	pa = mimetrain_net_params(a, &na);
	pb = mimetrain_net_params(b, &nb);
	assert_int_equal(na, nb);
	for (int i = 0; i < na; i++)
		same &= memcmp(pa[i].w, pb[i].w, sizeof(float) * pa[i].n) == 0;
	assert_int_equal(same, want_same);
}

/* Same seed and thread count: bit-identical weights; another seed: different ones. */
static void test_train_rerun_is_bit_identical(void **state)
{
	struct tiny *t = *state;
	struct mimetrain_net *a = make_net(&t->g, 10, 1, 32, 1), *b = make_net(&t->g, 10, 1, 32, 1),
			     *c = make_net(&t->g, 10, 1, 32, 2);
	struct mimetrain_optim *oa = make_opt(a, 64), *ob = make_opt(b, 64), *oc = make_opt(c, 64);

	run_epochs(a, oa, &t->train, &t->test, 32, 0, 2);
	run_epochs(b, ob, &t->train, &t->test, 32, 0, 2);
	run_epochs(c, oc, &t->train, &t->test, 32, 0, 2);
	assert_same_weights(a, b, 1);
	assert_same_weights(a, c, 0);
	mimetrain_optim_destroy(oa);
	mimetrain_optim_destroy(ob);
	mimetrain_optim_destroy(oc);
	mimetrain_net_destroy(a);
	mimetrain_net_destroy(b);
	mimetrain_net_destroy(c);
}

/* Two epochs straight equal one epoch, save, load into fresh objects, one more epoch. */
static void test_train_resume_is_bit_identical(void **state)
{
	struct tiny *t = *state;
	struct mimetrain_net *a = make_net(&t->g, 10, 1, 32, 1), *b = make_net(&t->g, 10, 1, 32, 1),
			     *b2 = make_net(&t->g, 10, 1, 32, 99);
	struct mimetrain_optim *oa = make_opt(a, 64), *ob = make_opt(b, 64),
			       *ob2 = make_opt(b2, 64);
	char *path = mime_test_tmpfile(NULL, 0);
	FILE *f;

	assert_non_null(path);
	run_epochs(a, oa, &t->train, &t->test, 32, 0, 2);
	run_epochs(b, ob, &t->train, &t->test, 32, 0, 1);
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(mimetrain_net_save(b, f), 0);
	assert_int_equal(mimetrain_optim_save(ob, f), 0);
	fclose(f);
	f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(mimetrain_net_load(b2, f, NULL), 0);
	assert_int_equal(mimetrain_optim_load(ob2, f, NULL), 0);
	fclose(f);
	run_epochs(b2, ob2, &t->train, &t->test, 32, 1, 2);
	assert_same_weights(a, b2, 1);
	/* a truncated file is refused */
	assert_int_equal(truncate(path, 100), 0);
	f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(mimetrain_net_load(b2, f, NULL), MIME_EFORMAT);
	fclose(f);
	unlink(path);
	free(path);
	mimetrain_optim_destroy(oa);
	mimetrain_optim_destroy(ob);
	mimetrain_optim_destroy(ob2);
	mimetrain_net_destroy(a);
	mimetrain_net_destroy(b);
	mimetrain_net_destroy(b2);
}

static void test_train_net_create_rejects_bad_config(void **state)
{
	struct mime_graph g;
	struct mimetrain_net_config cfg = {.n_classes = 0, .max_batch = 4, .threads = 1};
	struct mimetrain_net *net = NULL;
	struct mime_errinfo ei = {0};

	small_graph(&g);
	assert_int_equal(mimetrain_net_create(&g, &cfg, &net, &ei), MIME_EINVAL);
	cfg.n_classes = 10;
	g.layers[0].kernel = 0;
	assert_int_equal(mimetrain_net_create(&g, &cfg, &net, &ei), MIME_EGRAPH);
	assert_null(net);
}

static void test_train_vgg7_shapes(void **state)
{
	struct mime_graph g;
	struct mimetrain_net *net;

	assert_int_equal(mimetrain_graph_vgg7(1, &g), 0);
	assert_int_equal(mime_graph_check(&g, NULL, NULL), 0);
	net = make_net(&g, 10, 1, 2, 1);
	assert_int_equal(mimetrain_net_features(net), 2304);
	mimetrain_net_destroy(net);
	assert_int_equal(mimetrain_graph_vgg7(2, &g), 0);
	net = make_net(&g, 10, 1, 2, 1);
	assert_int_equal(mimetrain_net_features(net), 1152);
	mimetrain_net_destroy(net);
	assert_int_equal(mimetrain_graph_vgg7(0, &g), MIME_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_train_head_softmax_ce_grad),
		cmocka_unit_test(test_train_conv_stride_pad_grad),
		cmocka_unit_test(test_train_conv_large_kernel_relu_grad),
		cmocka_unit_test(test_train_maxpool_grad),
		cmocka_unit_test(test_train_fc_grad),
		cmocka_unit_test(test_train_batchnorm_grad),
		cmocka_unit_test(test_train_relu_vgg_like_grad),
		cmocka_unit_test(test_train_folded_matches_eval_forward),
		cmocka_unit_test(test_train_optim_schedules),
		cmocka_unit_test(test_train_optim_converges),
		cmocka_unit_test(test_train_optim_rejects_bad_config),
		cmocka_unit_test(test_train_data_shuffle_is_seeded_permutation),
		cmocka_unit_test(test_train_data_batch_normalises_and_augments),
		cmocka_unit_test(test_train_net_create_rejects_bad_config),
		cmocka_unit_test(test_train_vgg7_shapes),
		cmocka_unit_test_setup_teardown(test_train_tiny_run_learns, setup_tiny,
	                                        teardown_tiny),
		cmocka_unit_test_setup_teardown(test_train_rerun_is_bit_identical, setup_tiny,
	                                        teardown_tiny),
		cmocka_unit_test_setup_teardown(test_train_resume_is_bit_identical, setup_tiny,
	                                        teardown_tiny),
	};

	return cmocka_run_group_tests_name("train", tests, NULL, NULL);
}
