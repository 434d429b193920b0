// SPDX-License-Identifier: MIT
/* test_mime -- MIME threshold learning (train/mime.h and the mask hook of train/net.h):
 * the mask's straight-through backward against the formula computed by hand in double, the
 * regulariser against central differences, all-zero thresholds equal ReLU bit for bit, the
 * frozen parent byte-identical through training, a tiny end-to-end run in which MIME beats
 * head-only with the same budget, bit-identical reruns, and the manifest keeping a task's
 * extra keys. */
#include "tests/unit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/manifest.h"
#include "train/mime.h"
#include "train/net.h"

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

static struct mimetrain_net *make_net(const struct mime_graph *g, int n_classes, int max_batch,
                                      int threads)
{
	struct mimetrain_net_config cfg = {.n_classes = n_classes,
	                                   .batchnorm = 0,
	                                   .max_batch = max_batch,
	                                   .threads = threads,
	                                   .seed = 7};
	struct mimetrain_net *net = NULL;
	struct mime_errinfo ei = {0};

	if (mimetrain_net_create(g, &cfg, &net, &ei) < 0)
		print_error("net: %s\n", ei.msg);
	assert_non_null(net);
	return net;
}

static double dstep(double x)
{
	x = fabs(x);
	return x <= 0.4 ? 2.0 - 4.0 * x : x <= 1.0 ? 0.4 : 0.0;
}

static void test_mime_dstep_pieces(void **state)
{
	(void)state;
	assert_true(mimetrain_mask_dstep(0.0f) == 2.0f);
	assert_true(fabsf(mimetrain_mask_dstep(0.25f) - 1.0f) < 1e-6f);
	assert_true(fabsf(mimetrain_mask_dstep(-0.25f) - 1.0f) < 1e-6f);
	assert_true(fabsf(mimetrain_mask_dstep(0.4f) - 0.4f) < 1e-6f);
	assert_true(mimetrain_mask_dstep(0.7f) == 0.4f);
	assert_true(mimetrain_mask_dstep(-1.0f) == 0.4f);
	assert_true(mimetrain_mask_dstep(1.01f) == 0.0f);
}

/* input 1x3x3 -> conv1 (2 kernels 1x1, mask) -> flatten -> fc1 (4, mask) -> head (3):
 * everything small enough to write out by hand. */
static void mask_backward_case(int conv_per_channel)
{
	enum { N = 5, P = 9, C = 2, F = 4, K = 3 };
	struct mime_graph g = {.input = {1, 3, 3}};
	struct mimetrain_net *net;
	float w1[C], b1[C], w2[F * C * P], b2[F], hw[K * F], hb[K];
	float t1[C * P], t2[F], g1[C * P], g2[F], x[N * P];
	uint8_t lab[N] = {0, 2, 1, 1, 0};
	struct mimetrain_param *ps;
	uint64_t rs = 42;
	double y1[N][C][P], y2[N][F], a1[N][C * P], a2[N][F], dy2[N][F], dy1[N][C][P];
	double rt1[C * P] = {0}, rt2[F] = {0}, rdx[N][P] = {0};
	const float *dx;
	int np;

	layer(&g, MIME_LAYER_CONV, "conv1", C, 1, 1, 0, MIME_ACT_RELU);
	layer(&g, MIME_LAYER_FLATTEN, "flatten", 0, 0, 0, 0, MIME_ACT_NONE);
	layer(&g, MIME_LAYER_FC, "fc1", F, 0, 0, 0, MIME_ACT_RELU);
	net = make_net(&g, K, N, 2);
	for (int i = 0; i < C; i++) {
		w1[i] = mime_test_uniform(&rs, 0.5f, 1.5f);
		b1[i] = mime_test_uniform(&rs, -0.5f, 0.5f);
	}
	for (int i = 0; i < F * C * P; i++)
		w2[i] = mime_test_uniform(&rs, -0.4f, 0.4f);
	for (int i = 0; i < F; i++)
		b2[i] = mime_test_uniform(&rs, -0.3f, 0.5f);
	for (int i = 0; i < N * P; i++)
		x[i] = mime_test_uniform(&rs, -1.0f, 1.0f);
	for (int i = 0; i < C * P; i++)
		t1[i] = mime_test_uniform(&rs, 0.0f, 0.6f);
	for (int i = 0; i < F; i++)
		t2[i] = mime_test_uniform(&rs, 0.0f, 0.6f);
	assert_int_equal(mimetrain_net_set_layer(net, 0, w1, b1), 0);
	assert_int_equal(mimetrain_net_set_layer(net, 2, w2, b2), 0);
	ps = mimetrain_net_params(net, &np);
	for (int i = 0; i < np; i++)
		if (strcmp(ps[i].name, "head.weight") == 0)
			memcpy(hw, ps[i].w, sizeof(hw));
		else if (strcmp(ps[i].name, "head.bias") == 0)
			memcpy(hb, ps[i].w, sizeof(hb));
	assert_int_equal(mimetrain_net_set_threshold(net, 0, t1, g1, conv_per_channel), 0);
	assert_int_equal(mimetrain_net_set_threshold(net, 2, t2, g2, 0), 0);
	assert_int_equal(mimetrain_net_set_threshold(net, 1, t2, g2, 0), MIME_EINVAL);

	assert_non_null(mimetrain_net_forward(net, x, N, 1));
	mimetrain_net_loss(net, lab, NULL);
	mimetrain_net_backward(net, 1);
	dx = mimetrain_net_input_grad(net);

	/* the reference, in double, with the formula: m = (y - t >= 0), a = y m,
	 * da/dy = m + y H'(y - t), da/dt = -y H'(y - t) */
	for (int b = 0; b < N; b++) {
		double z[K], mx = -1e30, sum = 0, dz[K], da2[F] = {0}, da1[C * P] = {0};

		for (int c = 0; c < C; c++)
			for (int p = 0; p < P; p++) {
				double t = conv_per_channel ? t1[c] : t1[c * P + p];

				y1[b][c][p] = (double)w1[c] * x[b * P + p] + b1[c];
				a1[b][c * P + p] = y1[b][c][p] - t >= 0 ? y1[b][c][p] : 0;
			}
		for (int j = 0; j < F; j++) {
			y2[b][j] = b2[j];
			for (int k = 0; k < C * P; k++)
				y2[b][j] += (double)w2[j * C * P + k] * a1[b][k];
			a2[b][j] = y2[b][j] - t2[j] >= 0 ? y2[b][j] : 0;
		}
		for (int k = 0; k < K; k++) {
			z[k] = hb[k];
			for (int j = 0; j < F; j++)
				z[k] += (double)hw[k * F + j] * a2[b][j];
			mx = fmax(mx, z[k]);
		}
		for (int k = 0; k < K; k++)
			sum += exp(z[k] - mx);
		for (int k = 0; k < K; k++)
			dz[k] = (exp(z[k] - mx) / sum - (k == lab[b])) / N;
		for (int j = 0; j < F; j++) {
			double d = y2[b][j] - t2[j], h = dstep(d), m = d >= 0;

			for (int k = 0; k < K; k++)
				da2[j] += hw[k * F + j] * dz[k];
			rt2[j] += -da2[j] * y2[b][j] * h;
			dy2[b][j] = da2[j] * (m + y2[b][j] * h);
			for (int k = 0; k < C * P; k++)
				da1[k] += (double)w2[j * C * P + k] * dy2[b][j];
		}
		for (int c = 0; c < C; c++)
			for (int p = 0; p < P; p++) {
				double t = conv_per_channel ? t1[c] : t1[c * P + p];
				double d = y1[b][c][p] - t, h = dstep(d), m = d >= 0;

				rt1[conv_per_channel ? c : c * P + p] +=
					-da1[c * P + p] * y1[b][c][p] * h;
				dy1[b][c][p] = da1[c * P + p] * (m + y1[b][c][p] * h);
				rdx[b][p] += w1[c] * dy1[b][c][p];
			}
	}
	for (int j = 0; j < F; j++)
		assert_true(fabs(g2[j] - rt2[j]) <= 1e-5 + 1e-4 * fabs(rt2[j]));
	for (int i = 0; i < (conv_per_channel ? C : C * P); i++)
		assert_true(fabs(g1[i] - rt1[i]) <= 1e-5 + 1e-4 * fabs(rt1[i]));
	for (int b = 0; b < N; b++)
		for (int p = 0; p < P; p++)
			assert_true(fabs(dx[b * P + p] - rdx[b][p]) <=
			            1e-5 + 1e-4 * fabs(rdx[b][p]));
	mimetrain_net_destroy(net);
}

static void test_mime_mask_backward_matches_formula(void **state)
{
	(void)state;
	mask_backward_case(0);
}

static void test_mime_mask_backward_per_channel_matches_formula(void **state)
{
	(void)state;
	mask_backward_case(1);
}

static void test_mime_threshold_reg_matches_central_differences(void **state)
{
	float t[6] = {1e-6f, 0.1f, 0.5f, 1.0f, 2.0f, 0.03f};
	const double beta = 1e-2;

	(void)state;
	for (int sign = -1; sign <= 1; sign += 2) {
		float g[6] = {0};
		double r = mimetrain_threshold_reg(t, 6, beta, sign, g), expect = 0;

		for (int i = 0; i < 6; i++)
			expect += beta * exp(sign * (double)t[i]);
		assert_true(fabs(r - expect) <= 1e-9);
		for (int i = 0; i < 6; i++) {
			const float h = 1e-3f;
			float tp[6], tm[6];
			double num;

			memcpy(tp, t, sizeof(t));
			memcpy(tm, t, sizeof(t));
			tp[i] += h;
			tm[i] -= h;
			num = (mimetrain_threshold_reg(tp, 6, beta, sign, NULL) -
			       mimetrain_threshold_reg(tm, 6, beta, sign, NULL)) /
			      ((double)tp[i] - tm[i]);
			assert_true(fabs(g[i] - num) <= 1e-6 + 1e-4 * fabs(num));
			assert_true((g[i] > 0) == (sign > 0));
		}
	}
}

/* A VGG-ish graph for the other tests: 1x8x8 -> conv(4) pool conv(6) pool flatten fc(8). */
static void small_graph(struct mime_graph *g)
{
	memset(g, 0, sizeof(*g));
	g->input = (struct mime_shape){1, 8, 8};
	layer(g, MIME_LAYER_CONV, "conv1", 4, 3, 1, 1, MIME_ACT_RELU);
	layer(g, MIME_LAYER_MAXPOOL, "pool1", 0, 2, 2, 0, MIME_ACT_NONE);
	layer(g, MIME_LAYER_CONV, "conv2", 6, 3, 1, 1, MIME_ACT_RELU);
	layer(g, MIME_LAYER_MAXPOOL, "pool2", 0, 2, 2, 0, MIME_ACT_NONE);
	layer(g, MIME_LAYER_FLATTEN, "flatten", 0, 0, 0, 0, MIME_ACT_NONE);
	layer(g, MIME_LAYER_FC, "fc1", 8, 0, 0, 0, MIME_ACT_RELU);
}

static void test_mime_zero_thresholds_equal_relu_bit_exactly(void **state)
{
	enum { N = 16 };
	struct mime_graph g;
	struct mimetrain_net *relu, *mask;
	float x[N * 64], t1[4 * 64] = {0}, t2[6 * 16] = {0}, t3[8] = {0};
	float g1[4 * 64], g2[6 * 16], g3[8];
	uint64_t rs = 3;
	const float *lr, *lm;

	(void)state;
	small_graph(&g);
	relu = make_net(&g, 5, N, 2);
	mask = make_net(&g, 5, N, 2); /* same seed: same weights */
	assert_int_equal(mimetrain_net_set_threshold(mask, 0, t1, g1, 0), 0);
	assert_int_equal(mimetrain_net_set_threshold(mask, 2, t2, g2, 0), 0);
	assert_int_equal(mimetrain_net_set_threshold(mask, 5, t3, g3, 0), 0);
	for (int i = 0; i < N * 64; i++) /* some exact zeros and negative zeros too */
		x[i] = i % 17 == 0 ? 0.0f : i % 19 == 0 ? -0.0f : mime_test_uniform(&rs, -1, 1);
	for (int train = 0; train <= 1; train++) {
		lr = mimetrain_net_forward(relu, x, N, train);
		lm = mimetrain_net_forward(mask, x, N, train);
		assert_memory_equal(lr, lm, sizeof(float) * N * 5);
		for (int i = 0; i < g.n_layers; i++) {
			int64_t zr, nr, zm, nm;

			if (!mime_graph_layer_masked(&g, i))
				continue;
			assert_int_equal(mimetrain_net_act_zeros(relu, i, &zr, &nr), 0);
			assert_int_equal(mimetrain_net_act_zeros(mask, i, &zm, &nm), 0);
			assert_int_equal(zr, zm);
			assert_int_equal(nr, nm);
		}
	}
	mimetrain_net_destroy(relu);
	mimetrain_net_destroy(mask);
}

/* A hand-filled parent model for small_graph with seeded weights (owned by the fixture). */
struct parent_fixture {
	struct mime_model model;
	struct mime_task_params task;
	float *w[MIME_MAX_LAYERS], *b[MIME_MAX_LAYERS];
	float head_w[3 * 8], head_b[3];
};

static void parent_init(struct parent_fixture *p, uint64_t seed)
{
	struct mime_shape shapes[MIME_MAX_LAYERS];
	uint64_t rs = seed;

	memset(p, 0, sizeof(*p));
	small_graph(&p->model.graph);
	assert_int_equal(mime_graph_check(&p->model.graph, shapes, NULL), 0);
	for (int i = 0; i < p->model.graph.n_layers; i++) {
		const struct mime_layer_spec *l = &p->model.graph.layers[i];
		const struct mime_shape *in = i ? &shapes[i - 1] : &p->model.graph.input;
		long nw;
		float sd;

		if (l->kind != MIME_LAYER_CONV && l->kind != MIME_LAYER_FC)
			continue;
		nw = mime_graph_layer_params(l, in) - l->out;
		sd = sqrtf(6.0f / (float)(nw / l->out));
		p->w[i] = malloc(sizeof(float) * nw);
		p->b[i] = malloc(sizeof(float) * l->out);
		assert_non_null(p->w[i]);
		assert_non_null(p->b[i]);
		for (long k = 0; k < nw; k++)
			p->w[i][k] = mime_test_uniform(&rs, -sd, sd);
		for (int k = 0; k < l->out; k++)
			p->b[i][k] = mime_test_uniform(&rs, -0.1f, 0.3f);
		p->model.weight[i] = p->w[i];
		p->model.bias[i] = p->b[i];
	}
	p->task.name = "parent";
	p->task.n_classes = 3;
	p->task.head_w = p->head_w;
	p->task.head_b = p->head_b;
	p->model.n_tasks = 1;
	p->model.tasks = &p->task;
}

static void parent_fini(struct parent_fixture *p)
{
	for (int i = 0; i < MIME_MAX_LAYERS; i++) {
		free(p->w[i]);
		free(p->b[i]);
	}
}

/* A synthetic child task on 8x8 images: class = which quadrant holds a bright blob,
 * on noise; n images, seeded. */
static void synth_task(struct mimetrain_taskset *s, int n, int n_classes, uint64_t seed)
{
	uint64_t rs = seed;

	memset(s, 0, sizeof(*s));
	s->n = n;
	s->c = 1;
	s->h = s->w = 8;
	s->n_classes = n_classes;
	s->x = malloc(sizeof(float) * n * 64);
	s->y = malloc(n);
	assert_non_null(s->x);
	assert_non_null(s->y);
	for (int i = 0; i < n; i++) {
		int cls = (int)(mime_test_rand(&rs) % n_classes);
		int cy = (cls / 2) * 4 + 1 + (int)(mime_test_rand(&rs) % 2);
		int cx = (cls % 2) * 4 + 1 + (int)(mime_test_rand(&rs) % 2);

		s->y[i] = (uint8_t)cls;
		for (int p = 0; p < 64; p++)
			s->x[i * 64 + p] = mime_test_uniform(&rs, -0.6f, 0.6f);
		for (int dy = 0; dy < 2; dy++)
			for (int dx = 0; dx < 2; dx++)
				s->x[i * 64 + (cy + dy) * 8 + cx + dx] += 1.0f;
	}
}

static struct mimetrain_mime_config small_config(enum mimetrain_mode mode)
{
	return (struct mimetrain_mime_config){.mode = mode,
	                                      .granularity = MIME_THR_ELEMENT,
	                                      .epochs = 10,
	                                      .batch = 20,
	                                      .threads = 2,
	                                      .lr = 3e-2f,
	                                      .beta = 1e-6,
	                                      .reg_sign = 1,
	                                      .t_init = MIMETRAIN_T_MIN,
	                                      .seed = 11};
}

static void test_mime_train_keeps_parent_byte_identical(void **state)
{
	struct parent_fixture p;
	struct mimetrain_taskset s;
	struct mimetrain_mime *m = NULL;
	struct mimetrain_mime_report rep;
	struct mime_errinfo ei = {0};
	struct mimetrain_mime_config cfg = small_config(MIMETRAIN_MODE_MIME);
	float *copy[MIME_MAX_LAYERS] = {0}, *bcopy[MIME_MAX_LAYERS] = {0};
	struct mimetrain_param *ps;
	uint64_t before, model_before;
	size_t nt;
	const float *t;
	int np, moved = 0;

	(void)state;
	parent_init(&p, 5);
	synth_task(&s, 200, 4, 9);
	for (int i = 0; i < p.model.graph.n_layers; i++)
		if (p.w[i]) {
			struct mime_shape shapes[MIME_MAX_LAYERS];
			long nw;

			mime_graph_check(&p.model.graph, shapes, NULL);
			nw = mime_graph_layer_params(&p.model.graph.layers[i],
			                             i ? &shapes[i - 1] : &p.model.graph.input) -
			     p.model.graph.layers[i].out;
			copy[i] = malloc(sizeof(float) * nw);
			bcopy[i] = malloc(sizeof(float) * p.model.graph.layers[i].out);
			memcpy(copy[i], p.w[i], sizeof(float) * nw);
			memcpy(bcopy[i], p.b[i], sizeof(float) * p.model.graph.layers[i].out);
		}
	assert_int_equal(mimetrain_mime_create(&p.model, -1, 4, &cfg, &m, &ei), 0);
	model_before = mimetrain_model_checksum(&p.model);
	before = mimetrain_mime_body_checksum(m);
	assert_true(before == model_before);
	assert_int_equal(mimetrain_mime_train(m, &s, NULL, NULL, &rep, &ei), 0);
	assert_true(mimetrain_mime_body_checksum(m) == before);
	assert_true(mimetrain_model_checksum(&p.model) == model_before);
	/* the net's own copies, compared byte by byte: params are weight, bias per layer */
	ps = mimetrain_net_params(mimetrain_mime_net(m), &np);
	for (int i = 0, k = 0; i < p.model.graph.n_layers; i++)
		if (copy[i]) {
			assert_memory_equal(ps[k].w, copy[i], sizeof(float) * ps[k].n);
			assert_memory_equal(ps[k + 1].w, bcopy[i], sizeof(float) * ps[k + 1].n);
			assert_memory_equal(p.w[i], copy[i], sizeof(float) * ps[k].n);
			k += 2;
		}
	/* ... while the thresholds did move, and stayed > 0 */
	t = mimetrain_mime_thresholds(m, 0, &nt);
	assert_non_null(t);
	assert_int_equal(nt, 4 * 64);
	for (size_t j = 0; j < nt; j++) {
		assert_true(t[j] >= MIMETRAIN_T_MIN);
		moved += t[j] > 2 * MIMETRAIN_T_MIN;
	}
	assert_true(moved > 0);
	for (int i = 0; i < MIME_MAX_LAYERS; i++) {
		free(copy[i]);
		free(bcopy[i]);
	}
	mimetrain_mime_destroy(m);
	mimetrain_taskset_fini(&s);
	parent_fini(&p);
}

static void test_mime_taskset_split_is_stratified_disjoint_and_seeded(void **state)
{
	struct mimetrain_taskset all, tr, va, tr2, va2;
	struct mime_errinfo ei = {0};
	int count[4] = {0}, vcount[4] = {0};

	(void)state;
	synth_task(&all, 400, 4, 21);
	for (int i = 0; i < all.n; i++)
		count[all.y[i]]++;
	assert_int_equal(mimetrain_taskset_split(&all, 100, 5, &tr, &va, &ei), 0);
	assert_int_equal(tr.n + va.n, all.n);
	assert_true(va.n >= 98 && va.n <= 102);
	for (int i = 0; i < va.n; i++)
		vcount[va.y[i]]++;
	for (int k = 0; k < 4; k++) /* every class keeps its share, to rounding */
		assert_true(abs(vcount[k] - (int)(100.0 * count[k] / all.n + 0.5)) == 0);
	/* disjoint, and together exactly all: every image of all is in one side once */
	for (int i = 0; i < all.n; i++) {
		int found = 0;

		for (int j = 0; j < tr.n; j++)
			found += memcmp(all.x + 64 * i, tr.x + 64 * j, sizeof(float) * 64) == 0 &&
			         all.y[i] == tr.y[j];
		for (int j = 0; j < va.n; j++)
			found += memcmp(all.x + 64 * i, va.x + 64 * j, sizeof(float) * 64) == 0 &&
			         all.y[i] == va.y[j];
		assert_int_equal(found, 1);
	}
	/* the same seed gives the same split, another seed another */
	assert_int_equal(mimetrain_taskset_split(&all, 100, 5, &tr2, &va2, &ei), 0);
	assert_int_equal(va2.n, va.n);
	assert_memory_equal(va2.x, va.x, sizeof(float) * 64 * va.n);
	mimetrain_taskset_fini(&tr2);
	mimetrain_taskset_fini(&va2);
	assert_int_equal(mimetrain_taskset_split(&all, 100, 6, &tr2, &va2, &ei), 0);
	assert_true(memcmp(va2.x, va.x, sizeof(float) * 64 * va.n) != 0);
	mimetrain_taskset_fini(&tr2);
	mimetrain_taskset_fini(&va2);
	/* nothing or everything held out: refused */
	assert_int_equal(mimetrain_taskset_split(&all, 0, 5, &tr2, &va2, &ei), MIME_EINVAL);
	assert_int_equal(mimetrain_taskset_split(&all, 400, 5, &tr2, &va2, &ei), MIME_EINVAL);
	mimetrain_taskset_fini(&tr);
	mimetrain_taskset_fini(&va);
	mimetrain_taskset_fini(&all);
}

/* Thresholds and head of m, in a fixed order, into out (room for MAX floats); returns n. */
static size_t learned_state(struct mimetrain_mime *m, const struct mime_graph *g, float *out)
{
	const float *hw, *hb;
	size_t off = 0;

	for (int i = 0; i < g->n_layers; i++) {
		size_t nt = 0;
		const float *t = mimetrain_mime_thresholds(m, i, &nt);

		if (t)
			memcpy(out + off, t, sizeof(float) * nt);
		off += t ? nt : 0;
	}
	mimetrain_net_head(mimetrain_mime_net(m), &hw, &hb);
	memcpy(out + off, hw, sizeof(float) * 4 * 8);
	off += 4 * 8;
	memcpy(out + off, hb, sizeof(float) * 4);
	return off + 4;
}

/* With a validation set the best epoch's params are kept: they equal, bit for bit, those
 * of a run stopped after that epoch (training is deterministic), although later epochs ran. */
static void test_mime_validation_keeps_the_best_epoch(void **state)
{
	enum { MAX_STATE = 4 * 64 + 6 * 16 + 8 + 4 * 8 + 4 };
	struct parent_fixture p;
	struct mimetrain_taskset train, val;
	struct mimetrain_mime *m = NULL;
	struct mimetrain_mime_report rep, rep2;
	struct mime_errinfo ei = {0};
	struct mimetrain_mime_config cfg = small_config(MIMETRAIN_MODE_MIME);
	float *s1 = calloc(MAX_STATE, sizeof(float)), *s2 = calloc(MAX_STATE, sizeof(float));
	size_t n1, n2;

	(void)state;
	assert_non_null(s1);
	assert_non_null(s2);
	parent_init(&p, 5);
	synth_task(&train, 200, 4, 9);
	/* a validation set whose labels are noise: its best epoch is an early one (seeded) */
	synth_task(&val, 100, 4, 31);
	for (int i = 0; i < val.n; i++)
		val.y[i] = (uint8_t)((val.y[i] + i) % 4);
	cfg.epochs = 8;
	assert_int_equal(mimetrain_mime_create(&p.model, -1, 4, &cfg, &m, &ei), 0);
	assert_int_equal(mimetrain_mime_train(m, &train, &val, NULL, &rep, &ei), 0);
	assert_int_equal(rep.epochs, 8);
	assert_int_equal(rep.n_val, 100);
	print_message("validation: best epoch %d of 8 (acc %.2f)\n", rep.best_epoch,
	              rep.val_acc_best);
	assert_true(rep.best_epoch >= 1 && rep.best_epoch < 8); /* the restore ran */
	for (int e = 0; e < rep.epochs; e++)
		assert_true(rep.val_acc[e] <= rep.val_acc_best);
	assert_true(rep.val_acc[rep.best_epoch - 1] == rep.val_acc_best);
	n1 = learned_state(m, &p.model.graph, s1);
	mimetrain_mime_destroy(m);

	cfg.epochs = rep.best_epoch;
	assert_int_equal(mimetrain_mime_create(&p.model, -1, 4, &cfg, &m, &ei), 0);
	assert_int_equal(mimetrain_mime_train(m, &train, NULL, NULL, &rep2, &ei), 0);
	assert_int_equal(rep2.best_epoch, rep.best_epoch);
	n2 = learned_state(m, &p.model.graph, s2);
	assert_int_equal(n1, n2);
	assert_memory_equal(s1, s2, sizeof(float) * n1);
	mimetrain_mime_destroy(m);
	/* a validation set of the wrong shape is refused */
	val.w = 7;
	cfg.epochs = 1;
	assert_int_equal(mimetrain_mime_create(&p.model, -1, 4, &cfg, &m, &ei), 0);
	assert_int_equal(mimetrain_mime_train(m, &train, &val, NULL, &rep2, &ei), MIME_EINVAL);
	mimetrain_mime_destroy(m);
	mimetrain_taskset_fini(&train);
	mimetrain_taskset_fini(&val);
	parent_fini(&p);
	free(s1);
	free(s2);
}

/* A pruned head: before epoch prune_epoch + 1 all but the head_density largest head weights
 * (those of a run stopped there: training is deterministic) go to 0 and stay there; the
 * epoch a validation set keeps is one with the pruned head. */
static void test_mime_head_pruning_keeps_the_largest_weights(void **state)
{
	struct parent_fixture p;
	struct mimetrain_taskset train, val;
	struct mimetrain_mime *m = NULL;
	struct mimetrain_mime_report rep;
	struct mime_errinfo ei = {0};
	struct mimetrain_mime_config cfg = small_config(MIMETRAIN_MODE_MIME);
	const float *hw, *hb;
	float before[32], after[32];
	int n_larger, better = 0;

	(void)state;
	parent_init(&p, 5);
	synth_task(&train, 200, 4, 9);
	synth_task(&val, 100, 4, 31);
	cfg.epochs = 4; /* the head as pruning finds it */
	assert_int_equal(mimetrain_mime_create(&p.model, -1, 4, &cfg, &m, &ei), 0);
	assert_int_equal(mimetrain_mime_train(m, &train, NULL, NULL, &rep, &ei), 0);
	assert_int_equal(rep.pruned_epoch, 0);
	assert_int_equal(rep.head_weights, 32);
	mimetrain_net_head(mimetrain_mime_net(m), &hw, &hb);
	memcpy(before, hw, sizeof(before));
	mimetrain_mime_destroy(m);

	cfg.epochs = 6;
	cfg.head_density = 2.0 / 32; /* so hard that the dense epochs validate better */
	cfg.prune_epoch = 4;
	assert_int_equal(mimetrain_mime_create(&p.model, -1, 4, &cfg, &m, &ei), 0);
	assert_int_equal(mimetrain_mime_train(m, &train, &val, NULL, &rep, &ei), 0);
	assert_int_equal(rep.pruned_epoch, 5);
	/* a dense epoch validated better than the pruned ones: only the pruned can be kept */
	for (int e = 0; e < 4; e++)
		better += rep.val_acc[e] > rep.val_acc_best;
	assert_true(better > 0);
	assert_true(rep.best_epoch >= 5);
	assert_int_equal(rep.head_nonzero, 2);
	mimetrain_net_head(mimetrain_mime_net(m), &hw, &hb);
	memcpy(after, hw, sizeof(after));
	for (int i = 0; i < 32; i++) {
		if (after[i] == 0.0f)
			continue;
		n_larger = 0; /* a kept weight: fewer than 2 were larger when it was pruned */
		for (int j = 0; j < 32; j++)
			n_larger += fabsf(before[j]) > fabsf(before[i]);
		assert_true(n_larger < 2);
	}
	mimetrain_mime_destroy(m);
	mimetrain_taskset_fini(&train);
	mimetrain_taskset_fini(&val);
	parent_fini(&p);
}

/* Trains mode on the synthetic task and returns the engine's test accuracy; keeps the
 * thresholds and head in ret_state (may be NULL) for the rerun check. */
static double run_small(enum mimetrain_mode mode, float *ret_state, size_t *ret_n)
{
	struct parent_fixture p;
	struct mimetrain_taskset train, test;
	struct mimetrain_mime *m = NULL;
	struct mimetrain_mime_report rep;
	struct mimetrain_eval ev;
	struct mime_model model;
	struct mime_errinfo ei = {0};
	struct mimetrain_mime_config cfg = small_config(mode);
	const float *hw, *hb;
	size_t off = 0;

	parent_init(&p, 5);
	synth_task(&train, 400, 4, 9);
	synth_task(&test, 400, 4, 10);
	assert_int_equal(mimetrain_mime_create(&p.model, -1, 4, &cfg, &m, &ei), 0);
	assert_int_equal(mimetrain_mime_train(m, &train, NULL, NULL, &rep, &ei), 0);
	assert_int_equal(rep.epochs, cfg.epochs);
	assert_int_equal(mimetrain_mime_model(m, &p.model, "child", &model), 0);
	assert_int_equal(mimetrain_engine_eval(&model, 0, &test, 1, &ev, &ei), 0);
	if (ret_state) {
		for (int i = 0; i < p.model.graph.n_layers; i++) {
			size_t nt = 0;
			const float *t = mimetrain_mime_thresholds(m, i, &nt);

			if (t)
				memcpy(ret_state + off, t, sizeof(float) * nt);
			off += t ? nt : 0;
		}
		mimetrain_net_head(mimetrain_mime_net(m), &hw, &hb);
		memcpy(ret_state + off, hw, sizeof(float) * 4 * 8);
		off += 4 * 8;
		memcpy(ret_state + off, hb, sizeof(float) * 4);
		off += 4;
		*ret_n = off;
	}
	mime_model_fini(&model);
	mimetrain_mime_destroy(m);
	mimetrain_taskset_fini(&train);
	mimetrain_taskset_fini(&test);
	parent_fini(&p);
	return ev.accuracy;
}

static void test_mime_tiny_run_beats_head_only_and_reruns_identically(void **state)
{
	enum { MAX_STATE = 4 * 64 + 6 * 16 + 8 + 4 * 8 + 4 };
	float *s1 = calloc(MAX_STATE, sizeof(float)), *s2 = calloc(MAX_STATE, sizeof(float));
	size_t n1 = 0, n2 = 0;
	double mime, mime2, head;

	(void)state;
	assert_non_null(s1);
	assert_non_null(s2);
	mime = run_small(MIMETRAIN_MODE_MIME, s1, &n1);
	mime2 = run_small(MIMETRAIN_MODE_MIME, s2, &n2);
	head = run_small(MIMETRAIN_MODE_HEAD_ONLY, NULL, NULL);
	print_message("tiny run: MIME %.4f, head-only %.4f (same budget)\n", mime, head);
	assert_int_equal(n1, MAX_STATE);
	assert_int_equal(n1, n2);
	assert_memory_equal(s1, s2, sizeof(float) * n1);
	assert_true(mime == mime2);
	assert_true(mime > head);
	free(s1);
	free(s2);
}

static void test_mime_manifest_keeps_task_extra_keys(void **state)
{
	static const char json[] =
		"{\"format\":\"mime-bundle\",\"version\":1,\"graph\":{\"input\":[1,2,2],"
		"\"layers\":[{\"name\":\"flatten\",\"kind\":\"flatten\"}]},\"tasks\":[{\"name\":"
		"\"t\",\"classes\":[\"a\",\"b\"],\"input\":{\"channels\":1,\"height\":2,\"width\":"
		"2},"
		"\"sparsity\":{\"conv1\":0.5},\"baselines\":{\"finetune\":{\"accuracy\":0.9}}}]}";
	struct mime_manifest m, m2;
	struct mime_errinfo ei = {0};
	char *s;

	(void)state;
	assert_int_equal(mime_manifest_parse(json, sizeof(json) - 1, &m, &ei), 0);
	assert_non_null(m.tasks[0].extra_json);
	assert_non_null(strstr(m.tasks[0].extra_json, "\"baselines\""));
	assert_null(strstr(m.tasks[0].extra_json, "\"classes\""));
	s = mime_manifest_format(&m);
	assert_non_null(s);
	assert_int_equal(mime_manifest_parse(s, strlen(s), &m2, &ei), 0);
	assert_string_equal(m.tasks[0].extra_json, m2.tasks[0].extra_json);
	free(s);
	mime_manifest_free(&m2);
	mime_manifest_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mime_dstep_pieces),
		cmocka_unit_test(test_mime_mask_backward_matches_formula),
		cmocka_unit_test(test_mime_mask_backward_per_channel_matches_formula),
		cmocka_unit_test(test_mime_threshold_reg_matches_central_differences),
		cmocka_unit_test(test_mime_zero_thresholds_equal_relu_bit_exactly),
		cmocka_unit_test(test_mime_train_keeps_parent_byte_identical),
		cmocka_unit_test(test_mime_tiny_run_beats_head_only_and_reruns_identically),
		cmocka_unit_test(test_mime_taskset_split_is_stratified_disjoint_and_seeded),
		cmocka_unit_test(test_mime_validation_keeps_the_best_epoch),
		cmocka_unit_test(test_mime_head_pruning_keeps_the_largest_weights),
		cmocka_unit_test(test_mime_manifest_keeps_task_extra_keys),
	};

	return cmocka_run_group_tests_name("mime", tests, NULL, NULL);
}
