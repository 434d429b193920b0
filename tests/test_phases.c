// SPDX-License-Identifier: MIT
/* test_phases -- the phase builder's pieces (train/phases.h) on a small random network with
 * a conv -> pool -> conv -> flatten -> fc body: sorting kernels by l2 norm keeps the
 * function; non-zero counts against a count by hand; a phase's sub-network holds exactly the
 * full network's kept weights and stores back only those; fine phases nest between their
 * neighbours; retraining keeps the previous phase's weights bit-identical and pruned groups
 * at zero while the restored weights move; the cubic regression recovers a cubic; a phase
 * evaluated through the engine equals the engine's own evaluation of the same network. */
#include "tests/unit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/engine.h"
#include "train/mime.h"
#include "train/phases.h"

enum { N_CLASSES = 3, WUV = 8 };

struct fixture {
	struct mime_graph g;
	float *w[MIME_MAX_LAYERS], *b[MIME_MAX_LAYERS], *hw, *hb;
	struct mime_task_params task;
	struct mime_model model;
	struct mimetrain_taskset set;
};

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

static void fixture_init(struct fixture *f, int n_images)
{
	struct mime_shape shapes[MIME_MAX_LAYERS];
	uint64_t rs = 1234;
	size_t nf;

	memset(f, 0, sizeof(*f));
	f->g.input = (struct mime_shape){1, 8, 8};
	layer(&f->g, MIME_LAYER_CONV, "conv1", 20, 3, 1, 1, MIME_ACT_RELU);
	layer(&f->g, MIME_LAYER_MAXPOOL, "pool1", 0, 2, 2, 0, MIME_ACT_NONE);
	layer(&f->g, MIME_LAYER_CONV, "conv2", 24, 3, 1, 1, MIME_ACT_RELU);
	layer(&f->g, MIME_LAYER_FLATTEN, "flatten", 0, 0, 0, 0, MIME_ACT_NONE);
	layer(&f->g, MIME_LAYER_FC, "fc1", 12, 0, 0, 0, MIME_ACT_RELU);
	assert_int_equal(mime_graph_check(&f->g, shapes, NULL), 0);
	for (int i = 0; i < f->g.n_layers; i++) {
		const struct mime_layer_spec *l = &f->g.layers[i];
		const struct mime_shape *in = i ? &shapes[i - 1] : &f->g.input;
		size_t n;

		if (l->kind != MIME_LAYER_CONV && l->kind != MIME_LAYER_FC)
			continue;
		n = (size_t)l->out * (l->kind == MIME_LAYER_CONV
		                              ? (size_t)in->c * (size_t)(l->kernel * l->kernel)
		                              : (size_t)mime_shape_size(in));
		f->w[i] = malloc(sizeof(float) * n);
		f->b[i] = malloc(sizeof(float) * (size_t)l->out);
		assert_non_null(f->w[i]);
		assert_non_null(f->b[i]);
		for (size_t j = 0; j < n; j++)
			f->w[i][j] = mime_test_uniform(&rs, -0.5f, 0.5f);
		for (int j = 0; j < l->out; j++)
			f->b[i][j] = mime_test_uniform(&rs, -0.1f, 0.1f);
		f->model.weight[i] = f->w[i];
		f->model.bias[i] = f->b[i];
	}
	nf = (size_t)mime_shape_size(&shapes[f->g.n_layers - 1]);
	f->hw = malloc(sizeof(float) * nf * N_CLASSES);
	f->hb = malloc(sizeof(float) * N_CLASSES);
	for (size_t j = 0; j < nf * N_CLASSES; j++)
		f->hw[j] = mime_test_uniform(&rs, -0.5f, 0.5f);
	for (int j = 0; j < N_CLASSES; j++)
		f->hb[j] = 0;
	f->task.name = "t";
	f->task.n_classes = N_CLASSES;
	f->task.head_w = f->hw;
	f->task.head_b = f->hb;
	f->task.granularity = MIME_THR_NONE;
	f->model.graph = f->g;
	f->model.n_tasks = 1;
	f->model.tasks = &f->task;
	f->set.n = n_images;
	f->set.c = 1;
	f->set.h = f->set.w = 8;
	f->set.n_classes = N_CLASSES;
	f->set.x = malloc(sizeof(float) * 64 * (size_t)n_images);
	f->set.y = malloc((size_t)n_images);
	for (int i = 0; i < n_images; i++) {
		/* a learnable rule: the class is which third of the image is brightest */
		float sum[3] = {0};

		for (int p = 0; p < 64; p++) {
			f->set.x[i * 64 + p] = mime_test_uniform(&rs, 0.0f, 1.0f);
			sum[(p % 8) * 3 / 8] += f->set.x[i * 64 + p];
		}
		f->set.y[i] =
			sum[0] > sum[1] ? (sum[0] > sum[2] ? 0 : 2) : (sum[1] > sum[2] ? 1 : 2);
	}
}

static void fixture_fini(struct fixture *f)
{
	for (int i = 0; i < MIME_MAX_LAYERS; i++) {
		free(f->w[i]);
		free(f->b[i]);
	}
	free(f->hw);
	free(f->hb);
	free(f->set.x);
	free(f->set.y);
}

/* Logits of the first n images of the set through the engine. */
static void logits_of(const struct mime_model *m, const struct mimetrain_taskset *set, int n,
                      float *ret)
{
	struct mime_engine *e = NULL;
	struct mime_engine_result res;
	int tasks[16] = {0};

	assert_int_equal(
		mime_engine_create(m, &(struct mime_engine_config){.max_batch = n, .n_threads = 1},
	                           &e, NULL),
		0);
	assert_int_equal(mime_engine_forward(e, n, set->x, tasks, &res), 0);
	for (int b = 0; b < n; b++)
		memcpy(ret + b * N_CLASSES, res.logits + (size_t)b * (size_t)res.max_classes,
		       sizeof(float) * N_CLASSES);
	mime_engine_destroy(e);
}

static void mp_model(const struct mimetrain_mp *mp, struct mime_task_params *task,
                     struct mime_model *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->graph = mp->g;
	for (int i = 0; i < mp->g.n_layers; i++) {
		ret->weight[i] = mp->w[i];
		ret->bias[i] = mp->b[i];
	}
	memset(task, 0, sizeof(*task));
	task->name = "t";
	task->n_classes = mp->n_classes;
	task->head_w = mp->head_w;
	task->head_b = mp->head_b;
	task->granularity = MIME_THR_NONE;
	ret->n_tasks = 1;
	ret->tasks = task;
}

static void test_sort_keeps_function(void **state)
{
	struct fixture f;
	struct mimetrain_mp mp;
	struct mime_model sorted;
	struct mime_task_params st;
	float before[8 * N_CLASSES], after[8 * N_CLASSES];
	int changed = 0;

	(void)state;
	fixture_init(&f, 8);
	logits_of(&f.model, &f.set, 8, before);
	assert_int_equal(mimetrain_mp_init(&mp, &f.model, 0, NULL), 0);
	mimetrain_mp_sort_kernels(&mp);
	mp_model(&mp, &st, &sorted);
	logits_of(&sorted, &f.set, 8, after);
	for (int j = 0; j < 8 * N_CLASSES; j++)
		assert_true(fabsf(before[j] - after[j]) <= 1e-4f * (1.0f + fabsf(before[j])));
	/* norms descend in every weight layer, and the order really changed */
	for (int i = 0; i < mp.g.n_layers; i++) {
		const struct mime_layer_spec *l = &mp.g.layers[i];
		size_t row;
		double prev = INFINITY;

		if (!mp.w[i])
			continue;
		row = i == 0 ? 9 : i == 2 ? 20 * 9 : 24 * 16;
		for (int k = 0; k < l->out; k++) {
			double s = (double)mp.b[i][k] * mp.b[i][k];

			for (size_t j = 0; j < row; j++)
				s += (double)mp.w[i][k * row + j] * mp.w[i][k * row + j];
			assert_true(s <= prev);
			prev = s;
		}
		changed |= memcmp(mp.w[i], f.w[i], sizeof(float) * row * (size_t)l->out) != 0;
	}
	assert_true(changed);
	mimetrain_mp_fini(&mp);
	fixture_fini(&f);
}

static void test_nonzero_and_sub(void **state)
{
	struct fixture f;
	struct mimetrain_mp mp;
	struct mimetrain_phase_def ph;
	struct mimetrain_sub s;
	int64_t expect;

	(void)state;
	fixture_init(&f, 4);
	assert_int_equal(mimetrain_mp_init(&mp, &f.model, 0, NULL), 0);
	mimetrain_phase_coarse(&mp.g, 0.5, WUV, &ph);
	assert_int_equal(ph.k[0], 10);
	assert_int_equal(ph.k[2], 12);
	assert_int_equal(ph.k[4], 6);
	/* conv1 10x1x9 + 10, conv2 12x10x9 + 12, fc1 6x(12*4*4) + 6, head 3x6 + 3 */
	expect = 10 * 9 + 10 + 12 * 10 * 9 + 12 + 6 * 12 * 16 + 6 + 3 * 6 + 3;
	assert_int_equal(mimetrain_phase_nonzero(&mp, &ph), expect);
	assert_int_equal(mimetrain_sub_extract(&mp, mp.w, mp.b, NULL, &ph, &s), 0);
	assert_int_equal(s.g.layers[2].out, 12);
	assert_int_equal(s.features, 6);
	/* conv2 kernel 5, channel 7, tap 4; fc1 row 3, feature 11*16 + 5 */
	assert_true(s.w[2][(5 * 10 + 7) * 9 + 4] == mp.w[2][(5 * 20 + 7) * 9 + 4]);
	assert_true(s.w[4][3 * 192 + 11 * 16 + 5] == mp.w[4][3 * 384 + 11 * 16 + 5]);
	assert_true(s.head_w[2 * 6 + 4] == mp.head_w[2 * 12 + 4]);
	/* storing back writes the kept weights only */
	s.w[2][(5 * 10 + 7) * 9 + 4] = 42.0f;
	{
		float outside = mp.w[2][(5 * 20 + 15) * 9 + 4], beyond = mp.w[2][(15 * 20) * 9];

		mimetrain_sub_store(&mp, &ph, &s);
		assert_true(mp.w[2][(5 * 20 + 7) * 9 + 4] == 42.0f);
		assert_true(mp.w[2][(5 * 20 + 15) * 9 + 4] == outside);
		assert_true(mp.w[2][(15 * 20) * 9] == beyond);
	}
	mimetrain_sub_fini(&s);
	mimetrain_mp_fini(&mp);
	fixture_fini(&f);
}

static void test_fine_nests(void **state)
{
	struct fixture f;
	struct mimetrain_mp mp;
	struct mimetrain_phase_def prev, top, mid;
	int64_t np, nt, target;

	(void)state;
	fixture_init(&f, 4);
	assert_int_equal(mimetrain_mp_init(&mp, &f.model, 0, NULL), 0);
	mimetrain_mp_sort_kernels(&mp);
	mimetrain_phase_coarse(&mp.g, 0.4, WUV, &prev);
	mimetrain_phase_coarse(&mp.g, 0.8, WUV, &top);
	np = mimetrain_phase_nonzero(&mp, &prev);
	nt = mimetrain_phase_nonzero(&mp, &top);
	/* the least a fine phase can be: prev's groups, and fc1 (no mask) with top's kernels */
	assert_int_equal(mimetrain_phase_fine_between(&mp, &prev, &top, mp.w, 0, &mid), 0);
	np = mimetrain_phase_nonzero(&mp, &mid);
	assert_true(np < nt);
	mimetrain_phase_def_fini(&mid);
	target = (np + nt) / 2;
	assert_int_equal(mimetrain_phase_fine_between(&mp, &prev, &top, mp.w, target, &mid), 0);
	assert_true(mimetrain_phase_nested(&mp.g, &prev, &mid));
	assert_true(mimetrain_phase_nested(&mp.g, &mid, &top));
	assert_false(mimetrain_phase_nested(&mp.g, &top, &mid));
	assert_true(mimetrain_phase_nonzero(&mp, &mid) <= target);
	assert_true(mimetrain_phase_nonzero(&mp, &mid) > np + (target - np) / 2);
	assert_non_null(mid.keep[2]); /* conv2 has a mask; fc1 has none (conv only) */
	assert_null(mid.keep[4]);
	/* from nothing to the whole network */
	{
		struct mimetrain_phase_def full, first;
		int64_t least, nf;

		mimetrain_phase_def_full(&full, &mp.g, WUV);
		nf = mimetrain_phase_nonzero(&mp, &full);
		assert_int_equal(mimetrain_phase_fine_between(&mp, NULL, &full, mp.w, 0, &first),
		                 0);
		least = mimetrain_phase_nonzero(&mp, &first);
		mimetrain_phase_def_fini(&first);
		assert_int_equal(mimetrain_phase_fine_between(&mp, NULL, &full, mp.w,
		                                              (least + nf) / 2, &first),
		                 0);
		assert_true(mimetrain_phase_nonzero(&mp, &first) <= (least + nf) / 2);
		assert_true(mimetrain_phase_nonzero(&mp, &first) > least);
		assert_true(mimetrain_phase_nested(&mp.g, &first, &full));
		mimetrain_phase_def_fini(&first);
	}
	mimetrain_phase_def_fini(&mid);
	mimetrain_mp_fini(&mp);
	fixture_fini(&f);
}

static void test_train_keeps_fixed_part(void **state)
{
	struct fixture f;
	struct mimetrain_mp mp;
	struct mimetrain_phase_def prev, top, mid;
	struct mimetrain_sub s, before;
	int moved = 0;

	(void)state;
	fixture_init(&f, 64);
	assert_int_equal(mimetrain_mp_init(&mp, &f.model, 0, NULL), 0);
	mimetrain_mp_sort_kernels(&mp);
	mimetrain_phase_coarse(&mp.g, 0.4, WUV, &prev);
	mimetrain_phase_coarse(&mp.g, 0.8, WUV, &top);
	assert_int_equal(mimetrain_phase_fine_between(&mp, &prev, &top, mp.w,
	                                              (mimetrain_phase_nonzero(&mp, &prev) +
	                                               mimetrain_phase_nonzero(&mp, &top)) /
	                                                      2,
	                                              &mid),
	                 0);
	assert_int_equal(mimetrain_sub_extract(&mp, mp.w, mp.b, NULL, &mid, &s), 0);
	assert_int_equal(mimetrain_sub_extract(&mp, mp.w, mp.b, NULL, &mid, &before), 0);
	assert_int_equal(
		mimetrain_sub_train(
			&s, &mp, &mid, &prev, &f.set,
			&(struct mimetrain_sub_train_config){
				.epochs = 2, .batch = 16, .threads = 1, .lr = 1e-2f, .seed = 3},
			NULL, NULL),
		0);
	for (int i = 0; i < s.g.n_layers; i++) {
		int rs, cin, cin_prev;

		if (!s.w[i])
			continue;
		cin = mimetrain_phase_cin(&mp.g, mid.k, i, &rs);
		cin_prev = mimetrain_phase_cin(&mp.g, prev.k, i, &rs);
		for (int kk = 0; kk < mid.k[i]; kk++) {
			for (int col = 0; col < cin * rs; col++) {
				const size_t e = (size_t)kk * (size_t)(cin * rs) + (size_t)col;
				const int kept =
					!mid.keep[i] ||
					mid.keep[i][(size_t)(kk / WUV) * (size_t)(cin * rs) +
				                    (size_t)col];
				const int fixed = kk < prev.k[i] && col < cin_prev * rs;

				if (!kept)
					assert_true(s.w[i][e] == 0.0f);
				else if (fixed)
					assert_memory_equal(&s.w[i][e], &before.w[i][e],
					                    sizeof(float));
				else
					moved += s.w[i][e] != before.w[i][e];
			}
			if (kk < prev.k[i])
				assert_memory_equal(&s.b[i][kk], &before.b[i][kk], sizeof(float));
		}
	}
	assert_true(moved > 100);
	/* stored back: the previous phase's weights in mp are untouched */
	{
		struct mimetrain_sub p0, p1;

		assert_int_equal(mimetrain_sub_extract(&mp, mp.w, mp.b, NULL, &prev, &p0), 0);
		mimetrain_sub_store(&mp, &mid, &s);
		assert_int_equal(mimetrain_sub_extract(&mp, mp.w, mp.b, NULL, &prev, &p1), 0);
		for (int i = 0; i < p0.g.n_layers; i++) {
			int rs, cin;

			if (!p0.w[i])
				continue;
			cin = mimetrain_phase_cin(&mp.g, prev.k, i, &rs);
			assert_memory_equal(p0.w[i], p1.w[i],
			                    sizeof(float) * (size_t)prev.k[i] * (size_t)(cin * rs));
		}
		mimetrain_sub_fini(&p0);
		mimetrain_sub_fini(&p1);
	}
	mimetrain_sub_fini(&s);
	mimetrain_sub_fini(&before);
	mimetrain_phase_def_fini(&mid);
	mimetrain_mp_fini(&mp);
	fixture_fini(&f);
}

static void test_poly_fit(void **state)
{
	double x[40], y[40], z[40];
	struct mimetrain_poly p;
	int n = 0;

	(void)state;
	for (int i = 1; i <= 10; i++)
		for (int t = 1; t <= 4; t++) {
			x[n] = 1000.0 * i;
			y[n] = t;
			/* in the fit's scaled units (x / 10000, y / 4) */
			z[n] = 2 + 3 * (x[n] / 1e4) - (y[n] / 4) + 0.5 * pow(x[n] / 1e4, 3) +
			       0.25 * (x[n] / 1e4) * (y[n] / 4) * (y[n] / 4);
			n++;
		}
	assert_int_equal(mimetrain_poly_fit(x, y, z, n, &p), 0);
	assert_true(p.r2 > 0.999999);
	assert_true(fabs(mimetrain_poly_eval(&p, 5500, 2.5) -
	                 (2 + 3 * 0.55 - 2.5 / 4 + 0.5 * pow(0.55, 3) +
	                  0.25 * 0.55 * pow(2.5 / 4, 2))) < 1e-6);
	assert_true(fabs(p.coef[6] - 0.5) < 1e-4);
	assert_int_equal(mimetrain_poly_fit(x, y, z, 0, &p), MIME_EINVAL);
}

static void test_phase_eval_matches_engine(void **state)
{
	struct fixture f;
	struct mimetrain_mp mp;
	struct mimetrain_phase_def full, half;
	struct mimetrain_eval ev;
	double acc = -1, acc_half = -1, lat = 0;
	int64_t mem_full = 0, mem_half = 0;

	(void)state;
	fixture_init(&f, 50);
	assert_int_equal(mimetrain_mp_init(&mp, &f.model, 0, NULL), 0);
	mimetrain_phase_def_full(&full, &mp.g, WUV);
	assert_int_equal(
		mimetrain_phase_eval(&mp, &full, mp.head_w, mp.head_b, &f.set, 1, &acc, NULL), 0);
	assert_int_equal(mimetrain_engine_eval(&f.model, 0, &f.set, 1, &ev, NULL), 0);
	assert_true(acc == ev.accuracy);
	/* a smaller phase measures, and holds fewer packed bytes */
	mimetrain_phase_coarse(&mp.g, 0.3, WUV, &half);
	{
		struct mimetrain_sub s;

		assert_int_equal(mimetrain_sub_extract(&mp, mp.w, mp.b, NULL, &half, &s), 0);
		assert_int_equal(mimetrain_phase_eval(&mp, &half, s.head_w, s.head_b, &f.set, 1,
		                                      &acc_half, NULL),
		                 0);
		assert_true(acc_half >= 0 && acc_half <= 1);
		assert_int_equal(mimetrain_phase_measure(&mp, &half, s.head_w, s.head_b, &f.set, 1,
		                                         5, &lat, &mem_half, NULL),
		                 0);
		mimetrain_sub_fini(&s);
	}
	assert_int_equal(mimetrain_phase_measure(&mp, &full, mp.head_w, mp.head_b, &f.set, 1, 5,
	                                         &lat, &mem_full, NULL),
	                 0);
	assert_true(lat > 0);
	assert_true(mem_half < mem_full);
	mimetrain_mp_fini(&mp);
	fixture_fini(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sort_keeps_function),
		cmocka_unit_test(test_nonzero_and_sub),
		cmocka_unit_test(test_fine_nests),
		cmocka_unit_test(test_train_keeps_fixed_part),
		cmocka_unit_test(test_poly_fit),
		cmocka_unit_test(test_phase_eval_matches_engine),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
