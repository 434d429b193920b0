// SPDX-License-Identifier: MIT
/* bench_phase -- what phases (the Multi-phase CNN paper, issue 4) buy and cost on this
 * machine, all in one process so that every ratio compares runs made side by side:
 *
 *  a. sparse:  each conv layer shape of VGG-7 (full 64-128-256-256 and half width on
 *              1x28x28) at W_uv = 16 group sparsity 0..95%: the block-sparse packed path
 *              (a phase with a keep mask) vs the dense OpenBLAS path (MIME_CONV_BLAS, the
 *              pruned groups zeroed) vs the dense packed path, batch 1 and 32, one thread.
 *              A cell is one conv layer followed by a global max-pool and a 10-class head
 *              (the same for all three paths), so its time is the layer's plus a little.
 *  b. coarse:  a whole VGG-7 at ~95% coarse sparsity (the first k kernels of every layer,
 *              k chosen so ~5% of the parameters remain) vs the whole network.
 *  c. bundle:  forward time of every phase of a bundle (--bundle), plus synthetic fine
 *              variants of each coarse phase (W_uv = 16 masks over conv2..4).
 *  d. switch:  median latency of mime_engine_set_phase() between adjacent phases, both
 *              directions (a batch-1 forward between switches, as between batches), and
 *              RSS per phase with the bundle opened from its file (file-backed weights).
 *
 * Timing: the engines compared in a cell are run in turn, one forward each per round, until
 * --min-time seconds and at least 9 rounds; reported: the median per forward.
 * Output: markdown on stdout. Exit status 1 when a run fails or a sparse result differs
 * from the engine's own packed path on the zeroed weights (the goals only print).
 * Ownership: everything is allocated and freed here. Threads: the main thread only (every
 * engine has n_threads = 1). */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench_net.h"
#include "lib/bundle.h"
#include "lib/engine.h"
#include "lib/gemm.h"
#include "lib/kernels.h"
#include "lib/model.h"

#define MAX_ROUNDS 20000
#define MAX_BATCH  32
#define WUV        16

static const struct bench_netdef NETS[] = {
	{"full", {1, 28, 28}, {64, 128, 256, 256}},
	{"half", {1, 28, 28}, {32, 64, 128, 128}},
};
#define N_NETS ((int)(sizeof(NETS) / sizeof(NETS[0])))

static const int SPARSITY_PCT[] = {0, 10, 25, 50, 75, 90, 95};
#define N_SPARSITY ((int)(sizeof(SPARSITY_PCT) / sizeof(SPARSITY_PCT[0])))

struct options {
	double min_time_s;
	const char *bundle;
	const char *parts; /* letters of the parts to run */
	int switches;      /* switches per direction in part d */
};

static int failed;

/* --- timing ----------------------------------------------------------------------------- */

/* Runs engines e[0..n) in turn, one forward of batch each per round; ret_ms[i] is the median
 * time of e[i]'s forwards, in ms per forward. */
static void time_interleaved(struct mime_engine **e, int n, int batch, const float *in,
                             double min_time_s, double *ret_ms)
{
	static double t[8][MAX_ROUNDS];
	static const int tasks[MAX_BATCH];
	struct mime_engine_result res;
	double t0;
	int rounds = 0;

	for (int w = 0; w < 3; w++)
		for (int i = 0; i < n; i++)
			mime_engine_forward(e[i], batch, in, tasks, &res);
	t0 = bench_now_s();
	while (rounds < MAX_ROUNDS && (rounds < 9 || bench_now_s() - t0 < min_time_s)) {
		for (int i = 0; i < n; i++) {
			const double a = bench_now_s();

			mime_engine_forward(e[i], batch, in, tasks, &res);
			t[i][rounds] = (bench_now_s() - a) * 1e3;
		}
		rounds++;
	}
	for (int i = 0; i < n; i++)
		ret_ms[i] = bench_median(t[i], rounds);
}

static struct mime_engine *engine_new(const struct mime_model *m, enum mime_conv_impl conv)
{
	const struct mime_engine_config cfg = {
		.max_batch = MAX_BATCH, .n_threads = 1, .conv = conv};
	struct mime_errinfo ei = {0};
	struct mime_engine *e = NULL;
	int r = mime_engine_create(m, &cfg, &e, &ei);

	if (r < 0) {
		fprintf(stderr, "bench_phase: engine: %s (%s)\n", ei.msg, mime_strerror(r));
		exit(1);
	}
	return e;
}

static void set_phase_or_die(struct mime_engine *e, const struct mime_phase *ph,
                             const struct mime_task_params *tasks)
{
	struct mime_errinfo ei = {0};
	int r = mime_engine_set_phase(e, ph, tasks, &ei);

	if (r < 0) {
		fprintf(stderr, "bench_phase: set_phase: %s (%s)\n", ei.msg, mime_strerror(r));
		exit(1);
	}
}

/* xorshift64* */
static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

/* keep[0..n) with exactly round(n * pct / 100) zeros at random places. */
static void random_keep(uint64_t *rng, uint8_t *keep, size_t n, int pct)
{
	const size_t n_pruned = (n * (size_t)pct + 50) / 100;

	memset(keep, 0, n_pruned);
	memset(keep + n_pruned, 1, n - n_pruned);
	for (size_t i = n; i > 1; i--) { /* Fisher-Yates */
		const size_t j = next_rand(rng) % i;
		const uint8_t tmp = keep[i - 1];

		keep[i - 1] = keep[j];
		keep[j] = tmp;
	}
}

static const char *verdict(double ratio, double goal)
{
	return ratio >= goal ? "PASS" : "MISS";
}

/* --- the conv layer alone, as the engine runs it ------------------------------------------ */

/* One conv layer's three paths without the engine around them (no pool, head, per-forward
 * setup): per sample and per chunk of output pixels, cut as lib/engine.c's plan cuts them
 * at one thread, pack patches + the packed GEMM with its fused epilogue (sparse: indexed
 * packing of the masked layer; dense: the dense packing), or im2col + cblas_sgemm + the
 * scalar epilogue on the zeroed weights (the MIME_CONV_BLAS path). ReLU epilogue. */
struct layer_kernel {
	struct mime_gemm_arch arch;
	struct mime_conv_geom g;
	int crs, P, chunk, chunk_blas;
	struct mime_gemm_weights sparse, dense;
	const float *w_zeroed, *bias;
	float *col, *acc, *out; /* out: [MAX_BATCH, K, P] */
};

/* The engine's chunk of columns for a layer of crs rows and P pixels (1 thread), rounded up
 * to nr pixels for the packed path (nr = 0: the OpenBLAS path). */
static int engine_chunk(int crs, int P, int nr)
{
	int chunk = 65536 / crs, cps;

	chunk = chunk < 64 ? 64 : chunk > 1024 ? 1024 : chunk;
	cps = (P + chunk - 1) / chunk;
	chunk = (P + cps - 1) / cps;
	return nr ? (chunk + nr - 1) / nr * nr : chunk;
}

static void kernel_init(struct layer_kernel *lk, const struct mime_shape *in, int K, const float *w,
                        const float *w_zeroed, const float *bias)
{
	uint64_t rng = 1;

	mime_gemm_arch_select(-1, &lk->arch);
	lk->g = (struct mime_conv_geom){.c = in->c,
	                                .h = in->h,
	                                .w = in->w,
	                                .k = K,
	                                .r = 3,
	                                .s = 3,
	                                .stride = 1,
	                                .pad = 1,
	                                .oh = in->h,
	                                .ow = in->w};
	lk->crs = in->c * 9;
	lk->P = in->h * in->w;
	lk->chunk = engine_chunk(lk->crs, lk->P, lk->arch.nr);
	lk->chunk_blas = engine_chunk(lk->crs, lk->P, 0);
	lk->w_zeroed = w_zeroed;
	lk->bias = bias;
	if (mime_gemm_weights_pack_selectable(&lk->arch, w, lk->crs, K, lk->crs, &lk->sparse) < 0 ||
	    mime_gemm_weights_pack(&lk->arch, w, K, lk->crs, 0, &lk->dense) < 0)
		exit(1);
	lk->col = bench_rand_array(&rng,
	                           (long)mime_gemm_packed_b_floats(&lk->arch, lk->crs, lk->chunk) +
	                                   (long)lk->crs * lk->chunk_blas,
	                           0, 0);
	lk->acc = bench_rand_array(&rng, (long)K * lk->chunk_blas, 0, 0);
	lk->out = bench_rand_array(&rng, (long)MAX_BATCH * K * lk->P, 0, 0);
}

static void kernel_fini(struct layer_kernel *lk)
{
	mime_gemm_weights_free(&lk->sparse);
	mime_gemm_weights_free(&lk->dense);
	free(lk->col);
	free(lk->acc);
	free(lk->out);
}

/* Runs path (0 sparse, 1 blas, 2 dense packed) over batch samples of x. */
static void kernel_run(struct layer_kernel *lk, int path, int batch, const float *x)
{
	static const struct mime_mask_ref relu = {NULL, MIME_THR_NONE};
	const struct mime_conv_geom *g = &lk->g;
	const int64_t in_size = (int64_t)g->c * g->h * g->w, out_size = (int64_t)g->k * lk->P;

	for (int n = 0; n < batch; n++) {
		const float *xn = x + n * in_size;
		float *on = lk->out + n * out_size;

		if (path == 1) {
			for (int p0 = 0; p0 < lk->P; p0 += lk->chunk_blas) {
				const int nc =
					lk->P - p0 < lk->chunk_blas ? lk->P - p0 : lk->chunk_blas;

				mime_im2col(g, xn, p0, nc, lk->col);
				cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->k, nc,
				            lk->crs, 1.0f, lk->w_zeroed, lk->crs, lk->col, nc, 0.0f,
				            lk->acc, nc);
				mime_conv_epilogue(lk->acc, g->k, p0, nc, lk->P, lk->bias, &relu, 1,
				                   on, NULL);
			}
			continue;
		}
		for (int p0 = 0; p0 < lk->P; p0 += lk->chunk) {
			const int nc = lk->P - p0 < lk->chunk ? lk->P - p0 : lk->chunk;
			const struct mime_gemm_weights *w = path == 0 ? &lk->sparse : &lk->dense;

			mime_gemm_pack_b_rows(&lk->arch, g, xn, p0, nc, w->rows, lk->col);
			mime_gemm_conv(&lk->arch, w, lk->col, nc, p0, lk->P, lk->bias, &relu, 1,
			               on);
		}
	}
}

/* The three paths in turn, one run each per round; ret_ms[path] = median ms per run. */
static void kernel_time(struct layer_kernel *lk, int batch, const float *x, double min_time_s,
                        double *ret_ms)
{
	static double t[3][MAX_ROUNDS];
	double t0;
	int rounds = 0;

	for (int w = 0; w < 3; w++)
		for (int i = 0; i < 3; i++)
			kernel_run(lk, i, batch, x);
	t0 = bench_now_s();
	while (rounds < MAX_ROUNDS && (rounds < 9 || bench_now_s() - t0 < min_time_s)) {
		for (int i = 0; i < 3; i++) {
			const double a = bench_now_s();

			kernel_run(lk, i, batch, x);
			t[i][rounds] = (bench_now_s() - a) * 1e3;
		}
		rounds++;
	}
	for (int i = 0; i < 3; i++)
		ret_ms[i] = bench_median(t[i], rounds);
}

/* --- a. sparse kernel speedup ------------------------------------------------------------ */

static void part_sparse(const struct options *o)
{
	static const int batches[2] = {1, MAX_BATCH};
	int pass90 = 0, n90 = 0, pass50 = 0, n50 = 0;
	char miss90[2048] = "", miss50[2048] = "";

	printf("## a. Block-sparse packed conv vs dense OpenBLAS and dense packed\n\n");
	printf("W_uv = %d groups pruned at random, 1 thread, ms (median); x = dense time / sparse "
	       "time. *Kernel*: the conv layer alone as the engine runs it (chunks, patch packing, "
	       "GEMM, epilogue; the goals are checked on these). *Engine*: mime_engine_forward of "
	       "the layer + a global max-pool + a 10-class head (the same for all three "
	       "paths).\n\n",
	       WUV);
	printf("| net | layer | C->K @HxW | batch | sparsity | kernel sparse ms | blas ms | dense "
	       "packed ms | x blas | x packed | engine sparse ms | blas ms | dense packed ms | x "
	       "blas | x packed |\n");
	printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
	for (int ni = 0; ni < N_NETS; ni++) {
		const struct bench_netdef *d = &NETS[ni];
		struct mime_shape in = d->input;

		for (int li = 0; li < 4; li++) {
			const int K = d->width[li], CRS = in.c * 9;
			struct mime_graph g = {.input = in, .n_layers = 3};
			struct bench_net net, zeroed;
			struct mime_engine *e[3], *check;
			struct layer_kernel lk;
			struct mime_phase ph = {.wuv = WUV};
			const size_t n_groups = mime_phase_mask_groups(K, CRS, WUV);
			uint8_t *keep = malloc(n_groups);
			uint64_t rng = 1000 + 10 * ni + li;
			float *x = bench_rand_array(&rng, (long)MAX_BATCH * mime_shape_size(&in),
			                            0.0f, 1.0f);

			g.layers[0] = (struct mime_layer_spec){.kind = MIME_LAYER_CONV,
			                                       .out = K,
			                                       .kernel = 3,
			                                       .stride = 1,
			                                       .pad = 1,
			                                       .act = MIME_ACT_RELU};
			g.layers[1] = (struct mime_layer_spec){
				.kind = MIME_LAYER_MAXPOOL, .kernel = in.h, .stride = in.h};
			g.layers[2] = (struct mime_layer_spec){.kind = MIME_LAYER_FLATTEN};
			snprintf(g.layers[0].name, sizeof(g.layers[0].name), "conv%d", li + 1);
			snprintf(g.layers[1].name, sizeof(g.layers[1].name), "gpool");
			snprintf(g.layers[2].name, sizeof(g.layers[2].name), "flatten");
			if (!keep || bench_net_init(&net, &g, 7 + li) < 0 ||
			    bench_net_init(&zeroed, &g, 7 + li) < 0)
				exit(1);
			e[0] = engine_new(&net.m, MIME_CONV_PACKED);  /* sparse via a phase */
			e[1] = engine_new(&zeroed.m, MIME_CONV_BLAS); /* zeroed weights */
			e[2] = engine_new(&net.m, MIME_CONV_PACKED);  /* dense, never masked */
			kernel_init(&lk, &in, K, net.w[0], zeroed.w[0], net.b[0]);
			ph.layer[0].keep = keep;
			for (int si = 0; si < N_SPARSITY; si++) {
				struct mime_engine_result r0, r1;
				static const int tasks[MAX_BATCH];

				random_keep(&rng, keep, n_groups, SPARSITY_PCT[si]);
				memcpy(zeroed.w[0], net.w[0], sizeof(float) * (size_t)K * CRS);
				for (size_t gi = 0; gi < n_groups; gi++)
					if (!keep[gi])
						for (int k = (int)(gi / CRS) * WUV;
						     k < (int)(gi / CRS) * WUV + WUV && k < K; k++)
							zeroed.w[0][(int64_t)k * CRS + gi % CRS] =
								0;
				set_phase_or_die(e[0], &ph, NULL);
				/* Sanity: the masked phase = the packed path on the zeroed weights.
				 */
				check = engine_new(&zeroed.m, MIME_CONV_PACKED);
				mime_engine_forward(e[0], MAX_BATCH, x, tasks, &r0);
				mime_engine_forward(check, MAX_BATCH, x, tasks, &r1);
				if (memcmp(r0.logits, r1.logits,
				           sizeof(float) * MAX_BATCH * r0.max_classes) != 0) {
					fprintf(stderr,
					        "bench_phase: %s conv%d %d%%: masked phase "
					        "differs from the zeroed weights\n",
					        d->name, li + 1, SPARSITY_PCT[si]);
					failed = 1;
				}
				mime_engine_destroy(check);
				if (mime_gemm_weights_select(&lk.sparse, keep, WUV) < 0)
					exit(1);
				for (int bi = 0; bi < 2; bi++) {
					double ms[3], km[3], xb;

					kernel_time(&lk, batches[bi], x, o->min_time_s, km);
					time_interleaved(e, 3, batches[bi], x, o->min_time_s, ms);
					xb = km[1] / km[0];
					printf("| %s | conv%d | %d->%d @%dx%d | %d | %d%% | %.4f | "
					       "%.4f | "
					       "%.4f | %.2f | %.2f | %.4f | %.4f | %.4f | %.2f | "
					       "%.2f |\n",
					       d->name, li + 1, in.c, K, in.h, in.w, batches[bi],
					       SPARSITY_PCT[si], km[0], km[1], km[2], km[1] / km[0],
					       km[2] / km[0], ms[0], ms[1], ms[2], ms[1] / ms[0],
					       ms[2] / ms[0]);
					fflush(stdout);
					if (SPARSITY_PCT[si] == 90 || SPARSITY_PCT[si] == 50) {
						const int is90 = SPARSITY_PCT[si] == 90;
						const double goal = is90 ? 4.0 : 1.5;
						char *miss = is90 ? miss90 : miss50;
						size_t len = strlen(miss);

						(is90 ? &n90 : &n50)[0]++;
						if (xb >= goal)
							(is90 ? &pass90 : &pass50)[0]++;
						else
							snprintf(miss + len, 2048 - len,
							         " %s/conv%d/b%d (%.2fx)", d->name,
							         li + 1, batches[bi], xb);
					}
				}
			}
			for (int i = 0; i < 3; i++)
				mime_engine_destroy(e[i]);
			kernel_fini(&lk);
			bench_net_fini(&net);
			bench_net_fini(&zeroed);
			free(keep);
			free(x);
			/* next layer's input: conv1, conv2 and conv4 are followed by a 2x2 pool */
			in.c = K;
			if (li != 2) {
				in.h /= 2;
				in.w /= 2;
			}
		}
	}
	printf("\nGoals on the kernel times.\n");
	printf("Goal 90%% sparsity >= 4x dense OpenBLAS: %s (%d of %d cells)%s%s\n",
	       pass90 == n90 ? "PASS" : "MISS", pass90, n90, miss90[0] ? "; misses:" : "", miss90);
	printf("Goal 50%% sparsity >= 1.5x dense OpenBLAS: %s (%d of %d cells)%s%s\n\n",
	       pass50 == n50 ? "PASS" : "MISS", pass50, n50, miss50[0] ? "; misses:" : "", miss50);
}

/* --- b. coarse sparsity, whole network ---------------------------------------------------- */

/* Parameters (weights + biases of conv / fc layers, and one 10-class head) of the
 * sub-network keeping k[i] kernels of layer i (0 = all). */
static long phase_params(const struct mime_graph *g, const int *k)
{
	struct mime_shape in_s[MIME_MAX_LAYERS], out_s[MIME_MAX_LAYERS];
	long n = 0;

	if (mime_phase_shapes(g, k, in_s, out_s) < 0)
		return -1;
	for (int i = 0; i < g->n_layers; i++) {
		struct mime_layer_spec l = g->layers[i];

		l.out = out_s[i].c;
		if (l.kind == MIME_LAYER_CONV || l.kind == MIME_LAYER_FC)
			n += mime_graph_layer_params(&l, &in_s[i]);
	}
	return n + BENCH_N_CLASSES * (mime_shape_size(&out_s[g->n_layers - 1]) + 1);
}

static void part_coarse(const struct options *o)
{
	printf("## b. Coarse: the first k kernels of every layer (~5%% of the parameters) vs the "
	       "whole network\n\n");
	printf("| net | kernels kept | params kept | MACs kept | batch | whole ms | phase ms | "
	       "x | goal >= 5x |\n");
	printf("|---|---|---|---|---|---|---|---|---|\n");
	for (int ni = 0; ni < N_NETS; ni++) {
		const struct bench_netdef *d = &NETS[ni];
		struct mime_graph g;
		struct bench_net net;
		struct mime_phase ph = {0};
		struct mime_task_params task;
		struct mime_engine *e[2], *probe;
		int best_k[MIME_MAX_LAYERS] = {0};
		double best_diff = 1e9, ratio = 0;
		long full;
		uint64_t rng = 77;
		float *x, *hw;
		char kept[64] = "";
		int64_t macs[2];

		bench_vgg7_graph(d, -1, &g);
		if (bench_net_init(&net, &g, 5) < 0)
			exit(1);
		full = phase_params(&g, (int[MIME_MAX_LAYERS]){0});
		for (int f = 50; f <= 600; f++) { /* fraction f / 1000 of every layer's kernels */
			int k[MIME_MAX_LAYERS] = {0};
			double rr, diff;

			for (int i = 0; i < g.n_layers; i++)
				if (g.layers[i].kind == MIME_LAYER_CONV) {
					k[i] = (int)((long)g.layers[i].out * f / 1000);
					k[i] = k[i] < 1 ? 1 : k[i];
				}
			rr = (double)phase_params(&g, k) / (double)full;
			diff = rr > 0.05 ? rr - 0.05 : 0.05 - rr;
			if (diff < best_diff) {
				best_diff = diff;
				ratio = rr;
				memcpy(best_k, k, sizeof(k));
			}
		}
		for (int i = 0; i < g.n_layers; i++) {
			ph.layer[i].k_active = best_k[i];
			if (best_k[i])
				snprintf(kept + strlen(kept), sizeof(kept) - strlen(kept), "%s%d",
				         kept[0] ? "-" : "", best_k[i]);
		}
		{
			struct mime_shape in_s[MIME_MAX_LAYERS], out_s[MIME_MAX_LAYERS];
			long feat;

			mime_phase_shapes(&g, best_k, in_s, out_s);
			feat = mime_shape_size(&out_s[g.n_layers - 1]);
			hw = bench_rand_array(&rng, BENCH_N_CLASSES * feat, -0.1f, 0.1f);
		}
		task = net.task;
		task.head_w = hw;
		x = bench_rand_array(&rng, (long)MAX_BATCH * mime_shape_size(&g.input), 0.0f, 1.0f);
		e[0] = engine_new(&net.m, MIME_CONV_PACKED);
		e[1] = engine_new(&net.m, MIME_CONV_PACKED);
		set_phase_or_die(e[1], &ph, &task);
		probe = e[1];
		macs[0] = mime_engine_macs(e[0], 0);
		{
			/* MACs of the phase: mime_engine_macs follows the current phase. */
			macs[1] = mime_engine_macs(probe, 0);
		}
		for (int b = 1; b <= MAX_BATCH; b += MAX_BATCH - 1) {
			double ms[2];

			time_interleaved(e, 2, b, x, o->min_time_s, ms);
			printf("| %s | %s | %.1f%% | %.1f%% | %d | %.4f | %.4f | %.2f | %s |\n",
			       d->name, kept, 100 * ratio,
			       100.0 * (double)macs[1] / (double)macs[0], b, ms[0], ms[1],
			       ms[0] / ms[1], verdict(ms[0] / ms[1], 5.0));
			fflush(stdout);
		}
		mime_engine_destroy(e[0]);
		mime_engine_destroy(e[1]);
		bench_net_fini(&net);
		free(hw);
		free(x);
	}
	printf("\n");
}

/* --- c, d. a bundle's phases --------------------------------------------------------------- */

/* One state an engine can be in: a bundle phase, or a synthetic fine variant of one. */
struct state {
	char name[48];
	struct mime_phase ph;
	struct mime_task_params *tasks; /* n_tasks; views into the bundle */
	uint8_t *keep_storage;          /* from mime_model_phase */
	uint8_t *own_keep;              /* the synthetic masks */
	int coarse_of;                  /* index of the state with the same kernels, or -1 */
	int fine_pct;                   /* synthetic: groups pruned per fine layer */
};

#define MAX_STATES 32

struct states {
	int n;
	struct state s[MAX_STATES];
};

/* Adds a fine variant of state base: W_uv x 1 groups pruned at random (pct%) in every conv
 * layer but the first; nested in parent_keep's state when it is not -1 (prunes what it
 * prunes, and more). */
static void add_fine_variant(struct states *st, const struct mime_graph *g, int base, int pct,
                             int parent, int wuv, uint64_t *rng)
{
	struct state *s = &st->s[st->n], *b = &st->s[base];
	struct mime_shape in_s[MIME_MAX_LAYERS], out_s[MIME_MAX_LAYERS];
	int k[MIME_MAX_LAYERS];
	size_t total = 0, at = 0;
	int first_conv = -1;

	char name[sizeof(s->name)];

	snprintf(name, sizeof(name), "%.20s+fine%d%s", b->name, pct, wuv != WUV ? "/w4" : "");
	*s = *b;
	memcpy(s->name, name, sizeof(name));
	s->keep_storage = NULL;
	s->coarse_of = base;
	s->fine_pct = pct;
	s->ph.wuv = wuv;
	for (int i = 0; i < g->n_layers; i++)
		k[i] = b->ph.layer[i].k_active;
	mime_phase_shapes(g, k, in_s, out_s);
	for (int i = 0; i < g->n_layers; i++)
		if (g->layers[i].kind == MIME_LAYER_CONV) {
			if (first_conv < 0)
				first_conv = i;
			else
				total += mime_phase_mask_groups(
					out_s[i].c,
					in_s[i].c * g->layers[i].kernel * g->layers[i].kernel, wuv);
		}
	s->own_keep = malloc(total ? total : 1);
	if (!s->own_keep)
		exit(1);
	for (int i = 0; i < g->n_layers; i++) {
		size_t n;

		s->ph.layer[i].keep = NULL;
		if (g->layers[i].kind != MIME_LAYER_CONV || i == first_conv)
			continue;
		n = mime_phase_mask_groups(
			out_s[i].c, in_s[i].c * g->layers[i].kernel * g->layers[i].kernel, wuv);
		if (parent >= 0) {
			/* prune pct% of what the parent keeps... on top of what it prunes */
			const uint8_t *pk = st->s[parent].ph.layer[i].keep;

			for (size_t j = 0; j < n; j++)
				s->own_keep[at + j] =
					pk[j] && (next_rand(rng) % 1000) >= (uint64_t)pct * 10;
		} else {
			random_keep(rng, s->own_keep + at, n, pct);
		}
		s->ph.layer[i].keep = s->own_keep + at;
		at += n;
	}
	st->n++;
}

static long rss_kb(void)
{
	long size = 0, res = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%ld %ld", &size, &res) != 2)
			res = 0;
		fclose(f);
	}
	return res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Resident kB of the mapping holding p, from /proc/self/smaps; -1 if not found. */
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

static void states_fini(struct states *st)
{
	for (int i = 0; i < st->n; i++) {
		if (st->s[i].coarse_of < 0) {
			free(st->s[i].tasks);
			free(st->s[i].keep_storage);
		}
		free(st->s[i].own_keep);
	}
}

/* Median latency of switching e between states a and b (n each way), a batch-1 forward
 * between switches; ret_us[0] = a -> b, ret_us[1] = b -> a. */
static void switch_latency(struct mime_engine *e, const struct state *a, const struct state *b,
                           int n, const float *x, double *ret_us)
{
	double *t[2] = {malloc(sizeof(double) * n), malloc(sizeof(double) * n)};
	const struct state *s[2] = {a, b};
	static const int tasks[1];
	struct mime_engine_result res;

	if (!t[0] || !t[1])
		exit(1);
	set_phase_or_die(e, &a->ph, a->tasks);
	for (int i = 0; i < n; i++)
		for (int dir = 0; dir < 2; dir++) {
			double t0;

			mime_engine_forward(e, 1, x, tasks, &res);
			t0 = bench_now_s();
			set_phase_or_die(e, &s[!dir]->ph, s[!dir]->tasks);
			t[dir][i] = (bench_now_s() - t0) * 1e6;
		}
	ret_us[0] = bench_median(t[0], n);
	ret_us[1] = bench_median(t[1], n);
	free(t[0]);
	free(t[1]);
}

static void part_bundle(const struct options *o, const char *parts)
{
	struct mime_bundle *b = NULL;
	struct mime_model m;
	struct mime_errinfo ei = {0};
	const struct mime_manifest *mf;
	struct states *st = calloc(1, sizeof(*st));
	struct mime_engine *e[MAX_STATES];
	int n_coarse, r;
	uint64_t rng = 99;
	float *x;
	long rss0;

	if (!st)
		exit(1);
	r = mime_bundle_open(o->bundle, &b, &ei);
	if (r < 0) {
		fprintf(stderr, "bench_phase: %s: %s (%s)\n", o->bundle, ei.msg, mime_strerror(r));
		exit(1);
	}
	mf = mime_bundle_manifest(b);
	if (mime_model_from_bundle(b, MIME_MODEL_HALF_VIEWS, &m, &ei) < 0) {
		fprintf(stderr, "bench_phase: %s: %s\n", o->bundle, ei.msg);
		exit(1);
	}
	/* States: phase 0 (the whole parent) unless the last listed phase is it, the listed
	 * phases smallest first, then fine variants of each coarse state. */
	for (int p = 0; p <= mf->n_phases; p++) {
		struct state *s = &st->s[st->n];
		int whole = 1;

		if (p == 0 && mf->n_phases > 0) {
			const struct mime_phase_spec *last = &mf->phases[mf->n_phases - 1];

			for (int i = 0; i < mf->graph.n_layers; i++)
				if (last->k_active[i] &&
				    last->k_active[i] != mf->graph.layers[i].out)
					whole = 0;
			for (int i = 0; i < mf->graph.n_layers; i++)
				whole &= !last->fine[i];
			if (whole)
				continue;
		}
		s->tasks = calloc((size_t)m.n_tasks, sizeof(*s->tasks));
		if (!s->tasks || mime_model_phase(b, p, MIME_MODEL_HALF_VIEWS, &s->ph,
		                                  &s->keep_storage, s->tasks, &ei) < 0) {
			fprintf(stderr, "bench_phase: phase %d: %s\n", p, ei.msg);
			exit(1);
		}
		snprintf(s->name, sizeof(s->name), "%d %.30s", p,
		         p ? mf->phases[p - 1].name : "whole");
		s->coarse_of = -1;
		st->n++;
	}
	/* Phase 0 goes last: the listed phases are smallest first. */
	if (st->n > 1 && strncmp(st->s[0].name, "0 ", 2) == 0) {
		struct state s0 = st->s[0];

		memmove(&st->s[0], &st->s[1], sizeof(st->s[0]) * (size_t)(st->n - 1));
		st->s[st->n - 1] = s0;
	}
	n_coarse = st->n;
	for (int c = 0; c < n_coarse && st->n + 3 <= MAX_STATES; c++) {
		int has_fine = 0;

		for (int i = 0; i < mf->graph.n_layers; i++)
			has_fine |= st->s[c].ph.layer[i].keep != NULL;
		if (has_fine)
			continue;
		add_fine_variant(st, &mf->graph, c, 50, -1, WUV, &rng);
		add_fine_variant(st, &mf->graph, c, 50, st->n - 1, WUV, &rng); /* ~75% */
		st->s[st->n - 1].fine_pct = 75;
		memcpy(strstr(st->s[st->n - 1].name, "+fine50"), "+fine75", 7);
		add_fine_variant(st, &mf->graph, c, 50, -1, 4, &rng); /* W_uv 4 < MR */
	}
	x = bench_rand_array(&rng, (long)MAX_BATCH * mime_shape_size(&mf->graph.input), 0.0f, 1.0f);

	if (strchr(parts, 'c')) {
		printf("## c. Whole-network forward per phase: %s\n\n", o->bundle);
		printf("Graph: %d layers, input %dx%dx%d, %d phases listed; one engine per state, "
		       "1 thread, timed in turn; synthetic '+fineN' states prune N%% of the W_uv "
		       "x 1 groups of conv2..4 (W_uv 16 unless '/w4').\n\n",
		       mf->graph.n_layers, mf->graph.input.c, mf->graph.input.h, mf->graph.input.w,
		       mf->n_phases);
		for (int i = 0; i < st->n; i++) {
			e[i] = engine_new(&m, MIME_CONV_PACKED);
			set_phase_or_die(e[i], &st->s[i].ph, st->s[i].tasks);
		}
		printf("| state | MACs/image | packed KiB | b1 ms | b1 x whole | b32 ms/image | "
		       "b32 x "
		       "whole |\n|---|---|---|---|---|---|---|\n");
		{
			double ms1[MAX_STATES], ms32[MAX_STATES];
			const int w = n_coarse - 1; /* the largest coarse state */

			for (int i0 = 0; i0 < st->n; i0 += 8) {
				int n = st->n - i0 < 8 ? st->n - i0 : 8;
				struct mime_engine *grp[8];
				double a[8];

				/* groups of up to 8 with the largest state in each */
				for (int j = 0; j < n; j++)
					grp[j] = e[i0 + j];
				time_interleaved(grp, n, 1, x, o->min_time_s, a);
				memcpy(ms1 + i0, a, sizeof(double) * n);
				time_interleaved(grp, n, MAX_BATCH, x, o->min_time_s, a);
				memcpy(ms32 + i0, a, sizeof(double) * n);
			}
			for (int i = 0; i < st->n; i++)
				printf("| %s | %lld | %.0f | %.4f | %.2f | %.4f | %.2f |\n",
				       st->s[i].name, (long long)mime_engine_macs(e[i], 0),
				       (double)mime_engine_plan_bytes(e[i]) / 1024.0, ms1[i],
				       ms1[w] / ms1[i], ms32[i] / MAX_BATCH, ms32[w] / ms32[i]);
		}
		for (int i = 0; i < st->n; i++)
			mime_engine_destroy(e[i]);
		printf("\n'packed KiB' is mime_engine_plan_bytes (activations, scratch, packed "
		       "weights).\n\n");
	}

	if (strchr(parts, 'd')) {
		struct mime_engine *sw = engine_new(&m, MIME_CONV_PACKED);
		int n_rows = 0;

		printf("## d. Phase switch latency and RSS: %s (file-backed weights)\n\n",
		       o->bundle);
		printf("mime_engine_set_phase() between two states, a batch-1 forward between "
		       "switches, median of %d per direction; 1 thread.\n\n",
		       o->switches);
		printf("| from | to | kind | -> us | <- us | goal | verdict |\n"
		       "|---|---|---|---|---|---|---|\n");
		for (int i = 0; i < st->n; i++)
			for (int j = i + 1; j < st->n; j++) {
				const struct state *a = &st->s[i], *c = &st->s[j];
				int fine, adjacent;
				double us[2], goal;

				fine = a->coarse_of == j || c->coarse_of == i ||
				       (a->coarse_of >= 0 && a->coarse_of == c->coarse_of);
				if (!fine)
					for (int l = 0, same = 1; l < mf->graph.n_layers; l++) {
						same &= a->ph.layer[l].k_active ==
						        c->ph.layer[l].k_active;
						fine = same && l == mf->graph.n_layers - 1;
					}
				/* adjacent: consecutive coarse states; a coarse state and its
				 * variants; fine50 <-> fine75 of one state. */
				adjacent = (j == i + 1 && j < n_coarse) ||
				           (c->coarse_of == i && c->fine_pct == 50 &&
				            c->ph.wuv == WUV) ||
				           (c->coarse_of == i && c->ph.wuv != WUV) ||
				           (a->coarse_of >= 0 && a->coarse_of == c->coarse_of &&
				            a->fine_pct == 50 && c->fine_pct == 75);
				if (!adjacent)
					continue;
				switch_latency(sw, a, c, o->switches, x, us);
				goal = fine ? 50 : 5000;
				printf("| %s | %s | %s | %.1f | %.1f | <= %.0f us | %s |\n",
				       a->name, c->name, fine ? "fine" : "coarse", us[0], us[1],
				       goal, us[0] <= goal && us[1] <= goal ? "PASS" : "MISS");
				fflush(stdout);
				n_rows++;
			}
		(void)n_rows;
		printf("\nRSS per state (entered from the largest coarse state, then one batch-%d "
		       "forward):\n\n",
		       MAX_BATCH);
		printf("| state | RSS KiB | bundle mapping RSS KiB | plan KiB "
		       "|\n|---|---|---|---|\n");
		rss0 = rss_kb();
		for (int i = st->n - 1; i >= 0; i--) {
			struct mime_engine_result res;
			static const int tasks[MAX_BATCH];

			set_phase_or_die(sw, &st->s[n_coarse - 1].ph, st->s[n_coarse - 1].tasks);
			set_phase_or_die(sw, &st->s[i].ph, st->s[i].tasks);
			mime_engine_forward(sw, MAX_BATCH, x, tasks, &res);
			printf("| %s | %ld | %ld | %.0f |\n", st->s[i].name, rss_kb(),
			       mapping_rss_kb(m.weight[0] ? m.weight[0] : m.tasks[0].head_w),
			       (double)mime_engine_plan_bytes(sw) / 1024.0);
		}
		(void)rss0;
		printf("\n");
		mime_engine_destroy(sw);
	}
	free(x);
	states_fini(st);
	free(st);
	mime_model_fini(&m);
	mime_bundle_close(b);
}

int main(int argc, char **argv)
{
	struct options o = {.min_time_s = 0.15, .parts = "abcd", .switches = 101};

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--bundle") == 0 && i + 1 < argc) {
			o.bundle = argv[++i];
		} else if (strcmp(argv[i], "--min-time") == 0 && i + 1 < argc) {
			o.min_time_s = atof(argv[++i]);
		} else if (strcmp(argv[i], "--parts") == 0 && i + 1 < argc) {
			o.parts = argv[++i];
		} else if (strcmp(argv[i], "--switches") == 0 && i + 1 < argc) {
			o.switches = atoi(argv[++i]);
		} else if (strcmp(argv[i], "--probe") == 0 && i + 1 < argc) {
			/* prints the number of phases the bundle lists (for bench/phases.sh) */
			struct mime_bundle *b = NULL;

			if (mime_bundle_open(argv[++i], &b, NULL) < 0)
				return 1;
			printf("%d\n", mime_bundle_manifest(b)->n_phases);
			mime_bundle_close(b);
			return 0;
		} else {
			fprintf(stderr, "usage: bench_phase [--bundle FILE] [--min-time S] "
			                "[--parts abcd] [--switches N] | --probe FILE\n");
			return 2;
		}
	}
	if (o.switches < 1)
		o.switches = 1;
	openblas_set_num_threads(1);
	{
		struct mime_gemm_arch a;

		mime_gemm_arch_select(-1, &a);
		printf("# bench_phase\n\nSIMD path %s (MR %d x NR %d), OpenBLAS 1 thread, engines "
		       "1 thread, --min-time %.2f s per cell.\n\n",
		       a.name, a.mr, a.nr, o.min_time_s);
	}
	if (strchr(o.parts, 'a'))
		part_sparse(&o);
	if (strchr(o.parts, 'b'))
		part_coarse(&o);
	if (strchr(o.parts, 'c') || strchr(o.parts, 'd')) {
		if (!o.bundle) {
			fprintf(stderr, "bench_phase: parts c and d need --bundle FILE\n");
			return 2;
		}
		part_bundle(&o, o.parts);
	}
	return failed;
}
