// SPDX-License-Identifier: MIT
/* test_energy -- the systolic-array energy model: hand-computed counts for a tiny conv on a
 * 2x2 array (every counter, fitting and overflowing caches), invariants on VGG-like nets, the
 * storage formula and the argument checks. */
#include "tests/unit.h"

#include <math.h>
#include <string.h>

#include "lib/energy.h"

#define D        MIME_ENERGY_DRAM
#define C        MIME_ENERGY_CACHE
#define R        MIME_ENERGY_REG
#define W        MIME_ENERGY_W
#define X        MIME_ENERGY_X
#define T        MIME_ENERGY_T
#define Y        MIME_ENERGY_Y
#define EQ(a, b) assert_float_equal((a), (b), 1e-9)

/* 1x3x3 input, 2 filters 2x2, stride 1, no padding: M = 4 pixels, N = 2, K = 4. */
static void tiny_graph(struct mime_graph *g, enum mime_act act)
{
	memset(g, 0, sizeof(*g));
	g->input = (struct mime_shape){1, 3, 3};
	g->n_layers = 1;
	g->layers[0] = (struct mime_layer_spec){.kind = MIME_LAYER_CONV,
	                                        .name = "c",
	                                        .out = 2,
	                                        .kernel = 2,
	                                        .stride = 1,
	                                        .act = act};
}

/* A 2x2 array, 16-bit words, caches of cache_words words each. */
static void tiny_hw(struct mime_energy_hw *hw, long cache_words)
{
	mime_energy_hw_default(hw);
	hw->pe_rows = 2;
	hw->pe_cols = 2;
	hw->act_cache_bytes = hw->weight_cache_bytes = hw->thr_cache_bytes = cache_words * 2;
	hw->spad_bytes = 8;
}

static void tiny_net(struct mime_energy_net *net)
{
	struct mime_graph g;

	tiny_graph(&g, MIME_ACT_RELU);
	assert_int_equal(mime_energy_net_init(net, &g, MIME_ENERGY_THR_NEURON, NULL), 0);
	assert_int_equal(net->n_layers, 1);
	assert_int_equal(net->layers[0].m, 4);
	assert_int_equal(net->layers[0].n, 2);
	assert_int_equal(net->layers[0].k, 4);
	assert_int_equal(net->layers[0].thr_words, 8);
}

static void test_energy_batch_tiny_case1_every_counter(void **state)
{
	struct mime_energy_hw hw;
	struct mime_energy_net net;
	struct mime_energy_report r;
	const struct mime_energy_counts *c = &r.layer[0];

	tiny_hw(&hw, 512);
	tiny_net(&net);
	assert_int_equal(mime_energy_batch(&hw, &net, 1, NULL, NULL, MIME_ENERGY_CASE1, &r, NULL),
	                 0);
	assert_int_equal(r.mode, MIME_ENERGY_SINGULAR);
	EQ(c->macs, 32);                    /* 4 * 2 * 4 */
	EQ(c->cycles, 2 * (4 + 2 + 2 - 2)); /* I = 2, J = 1 tiles of K steps + fill */
	EQ(c->access[D][W], 8);
	EQ(c->access[D][X], 9);
	EQ(c->access[D][T], 0);
	EQ(c->access[D][Y], 8);
	EQ(c->access[C][W], 4 * 2 * 2 + 8); /* N*K per pixel tile, plus the fill */
	EQ(c->access[C][X], 4 * 4 * 1 + 9); /* M*K per filter tile, plus the fill */
	EQ(c->access[C][T], 0);
	EQ(c->access[C][Y], 8);
	EQ(c->access[R][W], 32);
	EQ(c->access[R][X], 32);
	EQ(c->access[R][T], 0);
	EQ(c->access[R][Y], 32 + 8);
	EQ(c->e[MIME_ENERGY_DRAM], 25 * 200);
	EQ(c->e[MIME_ENERGY_CACHE], 57 * 6);
	EQ(c->e[MIME_ENERGY_REG], 104 * 2);
	EQ(c->e[MIME_ENERGY_MAC], 32);
	EQ(c->e_total, 5000 + 342 + 208 + 32);
	EQ(r.total.e_total, c->e_total);
}

static void test_energy_batch_tiny_case3_every_counter(void **state)
{
	struct mime_energy_hw hw;
	struct mime_energy_net net;
	struct mime_energy_report r;
	const struct mime_energy_counts *c = &r.layer[0];
	const struct mime_energy_sparsity s = {0.5f, 0.5f};

	tiny_hw(&hw, 512);
	tiny_net(&net);
	assert_int_equal(mime_energy_batch(&hw, &net, 1, NULL, &s, MIME_ENERGY_CASE3, &r, NULL), 0);
	EQ(c->macs, 16);
	EQ(c->cycles, 2 * (2 + 2));
	EQ(c->access[D][W], 8);   /* bitmap would cost 8 + 1: stays dense */
	EQ(c->access[D][X], 5.5); /* 4.5 non-zeros + ceil(9/16) bitmap word */
	EQ(c->access[D][T], 8);
	EQ(c->access[D][Y], 5); /* 4 + 1 */
	EQ(c->access[C][W], 2 * 4 * 0.5 * 2 + 8);
	EQ(c->access[C][X], 4 * 4 * 0.5 + 5.5);
	EQ(c->access[C][T], 8 + 8); /* one read per neuron + the fill */
	EQ(c->access[C][Y], 5);
	EQ(c->access[R][W], 16);
	EQ(c->access[R][X], 16);
	EQ(c->access[R][T], 16);
	EQ(c->access[R][Y], 16 + 8);
	EQ(c->e_total, (8 + 5.5 + 8 + 5) * 200 + (16 + 13.5 + 16 + 5) * 6 + (16 * 3 + 24) * 2 + 16);

	/* Case-2 with the same sparsity: everything but the thresholds. */
	assert_int_equal(mime_energy_batch(&hw, &net, 1, NULL, &s, MIME_ENERGY_CASE2, &r, NULL), 0);
	EQ(c->access[D][T] + c->access[C][T] + c->access[R][T], 0);
	EQ(c->access[D][X], 5.5);
	EQ(c->macs, 16);
}

static void test_energy_batch_tiny_weight_cache_overflow(void **state)
{
	struct mime_energy_hw hw;
	struct mime_energy_net net;
	struct mime_energy_report r;
	const int tasks[2] = {0, 0};

	tiny_net(&net);
	/* 8 weights, cache of 8 words: resident, fetched once for the batch. */
	tiny_hw(&hw, 8);
	assert_int_equal(mime_energy_batch(&hw, &net, 2, tasks, NULL, MIME_ENERGY_CASE1, &r, NULL),
	                 0);
	EQ(r.layer[0].access[D][W], 8);
	/* 7 words: a filter tile (2 filters x 4) does not fit either: once per pixel tile. */
	tiny_hw(&hw, 7);
	hw.act_cache_bytes = 1024;
	assert_int_equal(mime_energy_batch(&hw, &net, 2, tasks, NULL, MIME_ENERGY_CASE1, &r, NULL),
	                 0);
	EQ(r.layer[0].access[D][W], 8 * 2 * 2);
	EQ(r.layer[0].access[C][W], 2 * (4 * 2 * 2) + 32);
	/* The same with spads holding both samples' partial sums (8 words >= 2 + 3): the tile is
	 * streamed in two reduction chunks of 4 <= 7 words, each used by both samples. */
	hw.spad_bytes = 16;
	assert_int_equal(mime_energy_batch(&hw, &net, 2, tasks, NULL, MIME_ENERGY_CASE1, &r, NULL),
	                 0);
	EQ(r.layer[0].access[D][W], 8);
	EQ(r.layer[0].access[D][X], 18);
	assert_int_equal(r.layer[0].loop_order, MIME_ENERGY_ORDER_TILE);
	/* 2x1 array: a filter tile is 4 words and fits a 6-word cache. One task: tile order keeps
	 * each tile for both samples, the layer is fetched once. */
	tiny_hw(&hw, 6);
	hw.act_cache_bytes = 1024;
	hw.pe_cols = 1;
	assert_int_equal(mime_energy_batch(&hw, &net, 2, tasks, NULL, MIME_ENERGY_CASE1, &r, NULL),
	                 0);
	EQ(r.layer[0].access[D][W], 8);
	assert_int_equal(r.layer[0].loop_order, MIME_ENERGY_ORDER_TILE);
	/* Two tasks: every tile misses for each sample in both orders: once per sample. */
	const int two[2] = {0, 1};
	assert_int_equal(mime_energy_batch(&hw, &net, 2, two, NULL, MIME_ENERGY_CASE1, &r, NULL),
	                 0);
	EQ(r.layer[0].access[D][W], 8 * 2);
	assert_int_equal(r.layer[0].loop_order, MIME_ENERGY_ORDER_SAMPLE);
	EQ(r.layer[0].cycles, 2 * 2 * 2 * (4 + 2 + 1 - 2)); /* batch * I * J * (K + fill) */
}

static void test_energy_batch_tiny_input_and_threshold_overflow(void **state)
{
	struct mime_energy_hw hw;
	struct mime_energy_net net;
	struct mime_energy_report r;

	tiny_net(&net);
	tiny_hw(&hw, 512);
	hw.pe_cols = 1;          /* J = 2 filter tiles */
	hw.act_cache_bytes = 16; /* 8 words < 9 inputs: re-streamed per filter tile */
	hw.thr_cache_bytes = 6;  /* 3 words < 4 thresholds of a filter tile: fetched per sample */
	const int tasks[2] = {3, 3};
	assert_int_equal(mime_energy_batch(&hw, &net, 2, tasks, NULL, MIME_ENERGY_CASE3, &r, NULL),
	                 0);
	EQ(r.layer[0].access[D][X], 2 * 9 * 2);
	EQ(r.layer[0].access[C][X], 2 * (4 * 4 * 2) + 36);
	EQ(r.layer[0].access[D][T], 2 * 8);
	hw.thr_cache_bytes = 8; /* a filter tile's 4 fit: tile order, once per batch of one task */
	assert_int_equal(mime_energy_batch(&hw, &net, 2, tasks, NULL, MIME_ENERGY_CASE3, &r, NULL),
	                 0);
	EQ(r.layer[0].access[D][T], 8);
	assert_int_equal(r.layer[0].loop_order, MIME_ENERGY_ORDER_TILE);
	EQ(r.layer[0].access[D][X], 2 * 9 * 2); /* 18 inputs do not fit 8 words either */
}

static void test_energy_batch_lru_over_tasks(void **state)
{
	struct mime_energy_hw hw;
	struct mime_energy_net net;
	struct mime_energy_report r;
	const int abab[4] = {0, 1, 0, 1};

	tiny_net(&net);
	tiny_hw(&hw, 8); /* one weight set */
	assert_int_equal(mime_energy_batch(&hw, &net, 4, abab, NULL, MIME_ENERGY_CASE1, &r, NULL),
	                 0);
	assert_int_equal(r.mode, MIME_ENERGY_PIPELINED);
	assert_int_equal(r.n_tasks, 2);
	EQ(r.layer[0].access[D][W], 4 * 8);
	tiny_hw(&hw, 16); /* two sets */
	assert_int_equal(mime_energy_batch(&hw, &net, 4, abab, NULL, MIME_ENERGY_CASE1, &r, NULL),
	                 0);
	EQ(r.layer[0].access[D][W], 2 * 8);
	/* MIME: the weights are shared (once); the thresholds (8 words) alternate. */
	tiny_hw(&hw, 8);
	assert_int_equal(mime_energy_batch(&hw, &net, 4, abab, NULL, MIME_ENERGY_CASE3, &r, NULL),
	                 0);
	EQ(r.layer[0].access[D][W], 8);
	EQ(r.layer[0].access[D][T], 4 * 8);
}

/* A VGG-like graph on 3x32x32 with a padded conv, pools and fc layers. */
static void vggish_graph(struct mime_graph *ret_g)
{
	struct mime_graph g = {.input = {3, 32, 32}, .n_layers = 8};
	const struct mime_layer_spec l[8] = {
		{MIME_LAYER_CONV, "conv1", 64, 3, 1, 1, MIME_ACT_RELU},
		{MIME_LAYER_CONV, "conv2", 64, 3, 1, 1, MIME_ACT_RELU},
		{MIME_LAYER_MAXPOOL, "pool1", 0, 2, 2, 0, MIME_ACT_NONE},
		{MIME_LAYER_CONV, "conv3", 256, 3, 1, 1, MIME_ACT_RELU},
		{MIME_LAYER_MAXPOOL, "pool2", 0, 2, 2, 0, MIME_ACT_NONE},
		{MIME_LAYER_CONV, "conv4", 512, 3, 1, 1, MIME_ACT_RELU},
		{MIME_LAYER_FLATTEN, "flat", 0, 0, 0, 0, MIME_ACT_NONE},
		{MIME_LAYER_FC, "fc", 512, 0, 0, 0, MIME_ACT_RELU},
	};

	memcpy(g.layers, l, sizeof(l));
	*ret_g = g;
}

static void vggish(struct mime_energy_net *net)
{
	struct mime_graph g;

	vggish_graph(&g);
	assert_int_equal(mime_energy_net_init(net, &g, MIME_ENERGY_THR_NEURON, NULL), 0);
	assert_int_equal(net->n_layers, 5);
}

static void fill_sparsity(struct mime_energy_sparsity *s, int n, float in, float out)
{
	for (int i = 0; i < n; i++)
		s[i] = (struct mime_energy_sparsity){in, out};
}

static void test_energy_batch_zero_sparsity_case2_is_case1(void **state)
{
	struct mime_energy_hw hw;
	struct mime_energy_net net;
	struct mime_energy_report r1, r2;
	struct mime_energy_sparsity s[3 * 5];
	const int tasks[3] = {0, 1, 2};

	mime_energy_hw_default(&hw);
	vggish(&net);
	fill_sparsity(s, 15, 0, 0);
	assert_int_equal(mime_energy_batch(&hw, &net, 3, tasks, s, MIME_ENERGY_CASE1, &r1, NULL),
	                 0);
	assert_int_equal(mime_energy_batch(&hw, &net, 3, tasks, s, MIME_ENERGY_CASE2, &r2, NULL),
	                 0);
	assert_memory_equal(&r1.total.access, &r2.total.access, sizeof(r1.total.access));
	EQ(r1.total.e_total, r2.total.e_total);
	EQ(r1.total.cycles, r2.total.cycles);
	/* Dense MACs are the layers' exact MACs. */
	EQ(r1.layer[0].macs, 3.0 * 32 * 32 * 64 * 3 * 9);
	EQ(r1.layer[4].macs, 3.0 * 512 * 512 * 8 * 8);
}

/* Dense MACs are the graph's exact MACs for every layer kind and geometry (stride, no pad,
 * non-square kernels' worth of channels, fc after pooling), in every case. */
static void test_energy_batch_dense_macs_are_the_graphs(void **state)
{
	struct mime_graph g = {.input = {3, 17, 13}};
	struct mime_shape shapes[MIME_MAX_LAYERS];
	struct mime_energy_hw hw;
	struct mime_energy_net net;
	struct mime_energy_report r;
	const int tasks[2] = {0, 1};

	(void)state;
	g.layers[g.n_layers++] = (struct mime_layer_spec){.kind = MIME_LAYER_CONV,
	                                                  .name = "c1",
	                                                  .out = 5,
	                                                  .kernel = 3,
	                                                  .stride = 2,
	                                                  .act = MIME_ACT_RELU};
	g.layers[g.n_layers++] = (struct mime_layer_spec){.kind = MIME_LAYER_CONV,
	                                                  .name = "c2",
	                                                  .out = 7,
	                                                  .kernel = 1,
	                                                  .stride = 1,
	                                                  .act = MIME_ACT_RELU};
	g.layers[g.n_layers++] = (struct mime_layer_spec){
		.kind = MIME_LAYER_MAXPOOL, .name = "p", .kernel = 2, .stride = 2};
	g.layers[g.n_layers++] = (struct mime_layer_spec){.kind = MIME_LAYER_CONV,
	                                                  .name = "c3",
	                                                  .out = 33,
	                                                  .kernel = 3,
	                                                  .stride = 1,
	                                                  .pad = 1,
	                                                  .act = MIME_ACT_RELU};
	g.layers[g.n_layers++] = (struct mime_layer_spec){.kind = MIME_LAYER_FLATTEN, .name = "f"};
	g.layers[g.n_layers++] =
		(struct mime_layer_spec){.kind = MIME_LAYER_FC, .name = "fc", .out = 11};
	assert_int_equal(mime_graph_check(&g, shapes, NULL), 0);
	mime_energy_hw_default(&hw);
	assert_int_equal(mime_energy_net_init(&net, &g, MIME_ENERGY_THR_NEURON, NULL), 0);
	assert_int_equal(net.n_layers, 4);
	for (int k = MIME_ENERGY_CASE1; k <= MIME_ENERGY_CASE3; k++) {
		assert_int_equal(mime_energy_batch(&hw, &net, 2, tasks, NULL, k, &r, NULL), 0);
		for (int l = 0; l < net.n_layers; l++) {
			const int i = net.layers[l].graph_index;
			const struct mime_shape *in = i ? &shapes[i - 1] : &g.input;

			EQ(r.layer[l].macs,
			   2.0 * mime_graph_layer_macs(&g.layers[i], in, &shapes[i]));
		}
	}
	assert_int_equal(net.layers[3].thr_words, 0); /* fc without ReLU: no mask */
}

static void test_energy_batch_monotonic_in_sparsity(void **state)
{
	struct mime_energy_hw hw;
	struct mime_energy_net net;
	struct mime_energy_report r;
	struct mime_energy_sparsity s[3 * 5];
	const int tasks[3] = {0, 1, 2};

	mime_energy_hw_default(&hw);
	vggish(&net);
	for (int kase = MIME_ENERGY_CASE2; kase <= MIME_ENERGY_CASE3; kase++) {
		double prev = INFINITY, prev_cycles = INFINITY;

		for (int step = 0; step <= 20; step++) {
			fill_sparsity(s, 15, step / 20.0f, step / 20.0f);
			assert_int_equal(mime_energy_batch(&hw, &net, 3, tasks, s, kase, &r, NULL),
			                 0);
			assert_true(r.total.e_total <= prev);
			assert_true(r.total.cycles <= prev_cycles);
			for (int l = 0; l < 5; l++)
				assert_true(r.layer[l].e_total > 0);
			prev = r.total.e_total;
			prev_cycles = r.total.cycles;
		}
	}
}

static void test_energy_batch_pipelined_vs_singular(void **state)
{
	struct mime_energy_hw hw;
	struct mime_energy_net net;
	struct mime_energy_report sing, pipe, none;
	struct mime_energy_sparsity s[4 * 5];
	const int same[4] = {7, 7, 7, 7}, mixed[4] = {7, 8, 9, 7};

	mime_energy_hw_default(&hw);
	vggish(&net);
	fill_sparsity(s, 20, 0.4f, 0.6f);
	for (int kase = MIME_ENERGY_CASE1; kase <= MIME_ENERGY_CASE3; kase++) {
		assert_int_equal(mime_energy_batch(&hw, &net, 4, same, s, kase, &sing, NULL), 0);
		assert_int_equal(mime_energy_batch(&hw, &net, 4, NULL, s, kase, &none, NULL), 0);
		assert_int_equal(mime_energy_batch(&hw, &net, 4, mixed, s, kase, &pipe, NULL), 0);
		/* A pipelined batch of one task is a singular one. */
		assert_int_equal(sing.mode, MIME_ENERGY_SINGULAR);
		assert_memory_equal(&sing.total, &none.total, sizeof(sing.total));
		assert_int_equal(pipe.mode, MIME_ENERGY_PIPELINED);
		assert_int_equal(pipe.n_tasks, 3);
		assert_true(pipe.total.access[D][W] >= sing.total.access[D][W]);
		if (kase != MIME_ENERGY_CASE3) {
			/* conventional: every switch re-fetches resident weights */
			assert_true(pipe.total.access[D][W] > sing.total.access[D][W]);
			EQ(pipe.total.access[D][T], 0);
			continue;
		}
		/* MIME: only the thresholds differ (when the mapper keeps the loop order). */
		for (int l = 0; l < pipe.n_layers; l++) {
			assert_int_equal(pipe.layer[l].loop_order, sing.layer[l].loop_order);
			for (int lv = 0; lv < MIME_ENERGY_N_LEVELS; lv++)
				for (int d = 0; d < MIME_ENERGY_N_DATA; d++)
					if (d != T)
						EQ(pipe.layer[l].access[lv][d],
						   sing.layer[l].access[lv][d]);
		}
		assert_true(pipe.total.access[D][T] > sing.total.access[D][T]);
		EQ(pipe.total.access[R][T], sing.total.access[R][T]);
		EQ(pipe.total.macs, sing.total.macs);
		EQ(pipe.total.cycles, sing.total.cycles);
	}
}

static void test_energy_batch_more_tasks_never_lower_conventional_dram(void **state)
{
	struct mime_energy_hw hw;
	struct mime_energy_net net;
	struct mime_energy_report r;
	int tasks[6] = {0, 0, 0, 0, 0, 0};
	double prev = 0;

	mime_energy_hw_default(&hw);
	vggish(&net);
	for (int n = 1; n <= 6; n++) {
		tasks[n - 1] = n - 1; /* 0,1,2,... then the rest stay 0 */
		assert_int_equal(
			mime_energy_batch(&hw, &net, 6, tasks, NULL, MIME_ENERGY_CASE2, &r, NULL),
			0);
		assert_true(r.total.access[D][W] >= prev);
		prev = r.total.access[D][W];
	}
}

/* The summary is the three reports' totals; base sparsity NULL = MIME's for every case. */
static void test_energy_batch_summary_is_the_three_cases(void **state)
{
	struct mime_energy_hw hw;
	struct mime_energy_net net;
	struct mime_energy_report rep[3];
	struct mime_energy_summary sum, same;
	struct mime_energy_sparsity mime[3 * 5], base[3 * 5];
	struct mime_errinfo ei = {0};
	const int tasks[3] = {0, 1, 2};

	(void)state;
	mime_energy_hw_default(&hw);
	vggish(&net);
	fill_sparsity(mime, 15, 0.2f, 0.6f);
	fill_sparsity(base, 15, 0.1f, 0.5f);
	assert_int_equal(mime_energy_batch_summary(&hw, &net, 3, tasks, mime, base, &sum, &ei), 0);
	for (int k = 0; k < 3; k++) {
		assert_int_equal(mime_energy_batch(&hw, &net, 3, tasks, k == 2 ? mime : base,
		                                   MIME_ENERGY_CASE1 + k, &rep[k], NULL),
		                 0);
		for (int lv = 0; lv <= MIME_ENERGY_N_LEVELS; lv++)
			EQ(sum.kase[k].e[lv], rep[k].total.e[lv]);
		EQ(sum.kase[k].e_total, rep[k].total.e_total);
		EQ(sum.kase[k].cycles, rep[k].total.cycles);
	}
	assert_int_equal(sum.mode, MIME_ENERGY_PIPELINED);
	assert_int_equal(sum.batch, 3);
	assert_int_equal(sum.n_tasks, 3);
	EQ(sum.saving_vs_case1, rep[0].total.e_total / rep[2].total.e_total);
	EQ(sum.saving_vs_case2, rep[1].total.e_total / rep[2].total.e_total);
	EQ(sum.speedup_vs_case1, rep[0].total.cycles / rep[2].total.cycles);
	assert_true(sum.saving_vs_case1 > 1 && sum.saving_vs_case2 > 1);

	/* NULL base: Case-1/2 on MIME's sparsity; Case-3 unchanged */
	assert_int_equal(mime_energy_batch_summary(&hw, &net, 3, tasks, mime, NULL, &same, NULL),
	                 0);
	assert_int_equal(
		mime_energy_batch(&hw, &net, 3, tasks, mime, MIME_ENERGY_CASE2, &rep[1], NULL), 0);
	EQ(same.kase[1].e_total, rep[1].total.e_total);
	EQ(same.kase[2].e_total, sum.kase[2].e_total);
	EQ(same.kase[0].e_total, sum.kase[0].e_total); /* Case-1 ignores sparsity */

	/* failures of mime_energy_batch() come through, and all-zero energies give ratio 1 */
	assert_int_equal(mime_energy_batch_summary(&hw, &net, 0, tasks, mime, NULL, &same, &ei),
	                 MIME_EINVAL);
	hw.e_dram = hw.e_cache = hw.e_reg = hw.e_mac = 0;
	assert_int_equal(mime_energy_batch_summary(&hw, &net, 3, tasks, mime, NULL, &same, NULL),
	                 0);
	EQ(same.saving_vs_case1, 1);
	EQ(same.saving_vs_case2, 1);
}

static void test_energy_storage_formula(void **state)
{
	struct mime_energy_hw hw;
	struct mime_energy_net net;
	struct mime_energy_storage st;

	tiny_hw(&hw, 512);
	tiny_net(&net);
	/* params 8 + 2 biases, head 5, thresholds 8 per child, 2 bytes a word */
	mime_energy_storage(&hw, &net, 3, 5, &st);
	EQ(st.conventional_bytes, 4 * 15 * 2);
	EQ(st.mime_bytes, (15 + 3 * (8 + 5)) * 2);
	mime_energy_storage(&hw, &net, 0, 5, &st);
	EQ(st.conventional_bytes, st.mime_bytes);
}

static void test_energy_batch_rejects_bad_arguments(void **state)
{
	struct mime_energy_hw hw;
	struct mime_energy_net net;
	struct mime_energy_report r;
	struct mime_errinfo ei = {0};
	struct mime_energy_sparsity s = {0.5f, 1.5f};

	tiny_hw(&hw, 512);
	tiny_net(&net);
	assert_int_equal(mime_energy_batch(&hw, &net, 0, NULL, NULL, MIME_ENERGY_CASE1, &r, &ei),
	                 MIME_EINVAL);
	assert_int_equal(mime_energy_batch(&hw, &net, 1, NULL, NULL, 4, &r, &ei), MIME_EINVAL);
	assert_int_equal(mime_energy_batch(&hw, &net, 1, NULL, &s, MIME_ENERGY_CASE2, &r, &ei),
	                 MIME_EINVAL);
	assert_non_null(strstr(ei.msg, "sparsity"));
	s.out = NAN;
	assert_int_equal(mime_energy_batch(&hw, &net, 1, NULL, &s, MIME_ENERGY_CASE2, &r, &ei),
	                 MIME_EINVAL);
}

static void test_energy_hw_check_rejects_bad_hardware(void **state)
{
	struct mime_energy_hw hw;
	struct mime_errinfo ei = {0};

	mime_energy_hw_default(&hw);
	assert_int_equal(mime_energy_hw_check(&hw, &ei), 0);
	assert_int_equal(hw.pe_rows * hw.pe_cols, 1024);
	hw.pe_cols = 0;
	assert_int_equal(mime_energy_hw_check(&hw, &ei), MIME_EINVAL);
	assert_non_null(strstr(ei.msg, "PE"));
	mime_energy_hw_default(&hw);
	hw.weight_cache_bytes = -1;
	assert_int_equal(mime_energy_hw_check(&hw, &ei), MIME_EINVAL);
	mime_energy_hw_default(&hw);
	hw.e_dram = -200;
	assert_int_equal(mime_energy_hw_check(&hw, &ei), MIME_EINVAL);
	assert_non_null(strstr(ei.msg, "e_dram"));
	mime_energy_hw_default(&hw);
	hw.spad_bytes = 4;
	assert_int_equal(mime_energy_hw_check(&hw, &ei), MIME_EINVAL);
}

/* MIME's (Case-3) total energy of one sample of the vggish graph in phase ph, at sparsity s. */
static double phase_energy(const struct mime_phase *ph, float s, struct mime_energy_net *ret_net)
{
	struct mime_energy_hw hw;
	struct mime_graph g;
	struct mime_energy_report r;
	struct mime_energy_sparsity sp[5];

	mime_energy_hw_default(&hw);
	vggish_graph(&g);
	assert_int_equal(mime_energy_net_init_phase(ret_net, &g, MIME_ENERGY_THR_NEURON, ph, NULL),
	                 0);
	fill_sparsity(sp, 5, s, s);
	assert_int_equal(mime_energy_batch(&hw, ret_net, 1, NULL, sp, MIME_ENERGY_CASE3, &r, NULL),
	                 0);
	return r.total.e_total;
}

static void test_energy_net_init_phase_full_is_the_parent(void **state)
{
	struct mime_energy_net parent, net;
	struct mime_graph g;
	struct mime_phase ph = {.wuv = 16};
	double e_parent;

	vggish(&parent);
	e_parent = phase_energy(NULL, 0.3f, &net);
	assert_memory_equal(&net, &parent, sizeof(net));
	/* every kernel kept, by 0 (all) or by the layer's own count: the same net, bit for bit */
	vggish_graph(&g);
	for (int i = 0; i < g.n_layers; i++)
		ph.layer[i].k_active = i % 2 ? g.layers[i].out : 0;
	EQ(phase_energy(&ph, 0.3f, &net), e_parent);
	assert_memory_equal(&net, &parent, sizeof(net));
}

static void test_energy_net_init_phase_smaller_costs_less(void **state)
{
	struct mime_energy_net parent, half, fine;
	struct mime_phase ph = {.wuv = 16};
	uint8_t keep[(64 / 16) * (32 * 3 * 3)]; /* conv2 at 32 of 64 kernels: [2][32*3*3] */
	double e_parent, e_half, e_fine;

	e_parent = phase_energy(NULL, 0.3f, &parent);
	/* Coarse: half the kernels of every conv, fc1 keeps its 512 outputs. */
	ph.layer[0].k_active = 32;
	ph.layer[1].k_active = 32;
	ph.layer[3].k_active = 128;
	ph.layer[5].k_active = 256;
	e_half = phase_energy(&ph, 0.3f, &half);
	assert_true(e_half < e_parent);
	assert_int_equal(half.layers[1].n, 32);
	assert_int_equal(half.layers[1].k, 32 * 9); /* conv1's 32 kernels in */
	assert_int_equal(half.layers[4].k, 256 * 8 * 8);
	assert_int_equal(half.layers[4].n, 512);
	assert_int_equal(half.layers[1].thr_words, 32 * 32 * 32);
	assert_int_equal(half.layers[1].params, 32 * 32 * 9 + 32);
	EQ(half.layers[1].weight_density, 1.0);
	/* Fine: conv2 also prunes every other group column of its first row of groups (16
	 * kernels), then every group column of the second row but the first 32 -> density
	 * (16 * 144 + 16 * 32) / (32 * 288). */
	memset(keep, 0, sizeof(keep));
	for (int c = 0; c < 288; c += 2)
		keep[c] = 1;
	for (int c = 0; c < 32; c++)
		keep[288 + c] = 1;
	ph.layer[1].keep = keep;
	e_fine = phase_energy(&ph, 0.3f, &fine);
	EQ(fine.layers[1].weight_density, (16.0 * 144 + 16.0 * 32) / (32.0 * 288));
	assert_true(e_fine < e_half);
	/* A last group row shorter than wuv counts its own height: 24 kernels = 16 + 8. */
	ph.layer[1].k_active = 24;
	phase_energy(&ph, 0.3f, &fine);
	EQ(fine.layers[1].weight_density, (16.0 * 144 + 8.0 * 32) / (24.0 * 288));
	/* A mask without a group height, a k_active past the layer: MIME_EINVAL. */
	{
		struct mime_graph g;
		struct mime_energy_net net;

		vggish_graph(&g);
		ph.wuv = 0;
		assert_int_equal(
			mime_energy_net_init_phase(&net, &g, MIME_ENERGY_THR_NEURON, &ph, NULL),
			MIME_EINVAL);
		ph.wuv = 16;
		ph.layer[1].k_active = 65;
		assert_int_equal(
			mime_energy_net_init_phase(&net, &g, MIME_ENERGY_THR_NEURON, &ph, NULL),
			MIME_EINVAL);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_energy_batch_tiny_case1_every_counter),
		cmocka_unit_test(test_energy_batch_tiny_case3_every_counter),
		cmocka_unit_test(test_energy_batch_tiny_weight_cache_overflow),
		cmocka_unit_test(test_energy_batch_tiny_input_and_threshold_overflow),
		cmocka_unit_test(test_energy_batch_lru_over_tasks),
		cmocka_unit_test(test_energy_batch_zero_sparsity_case2_is_case1),
		cmocka_unit_test(test_energy_batch_dense_macs_are_the_graphs),
		cmocka_unit_test(test_energy_batch_monotonic_in_sparsity),
		cmocka_unit_test(test_energy_batch_pipelined_vs_singular),
		cmocka_unit_test(test_energy_batch_more_tasks_never_lower_conventional_dram),
		cmocka_unit_test(test_energy_batch_summary_is_the_three_cases),
		cmocka_unit_test(test_energy_storage_formula),
		cmocka_unit_test(test_energy_batch_rejects_bad_arguments),
		cmocka_unit_test(test_energy_hw_check_rejects_bad_hardware),
		cmocka_unit_test(test_energy_net_init_phase_full_is_the_parent),
		cmocka_unit_test(test_energy_net_init_phase_smaller_costs_less),
	};

	return cmocka_run_group_tests_name("energy", tests, NULL, NULL);
}
