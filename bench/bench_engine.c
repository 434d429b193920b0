// SPDX-License-Identifier: MIT
/* bench_engine -- forward-pass benchmarks of the engine on VGG-7 with random weights, the
 * OpenBLAS sgemm rate on conv-sized GEMMs and the FMA peak of this machine, all in one run.
 *
 * Networks: conv3x3/pad1/relu x4 (widths w1..w4), max-pool 2x2 after conv 1, 2 and 4,
 * flatten, one head of 10 classes; full width 64-128-256-256, half 32-64-128-128, input
 * 1x28x28 or 3x32x32. The models are filled by hand from a struct mime_graph (no bundle).
 *
 * Cells: batch 1 and 32 x threads 1 and 2, for both conv paths of the engine (its packed
 * GEMM and im2col + OpenBLAS) and, with two threads, both ways of spending them (see
 * struct strategy). Each cell: warm-up, then timed forwards until --min-time seconds and
 * at least 7 of them; reported: median and min ms/image, images/s and effective GFLOP/s
 * (2 x MACs per image / median time).
 *
 * --profile adds, per net, the per-layer time of the engine at one thread for both paths
 * (as differences between engines built on growing prefixes of the graph) and, for conv
 * layers, the OpenBLAS time of the small GEMMs the blas path issues (the chunking copied
 * from engine.c's plan) next to one whole-batch sgemm of the same layer.
 *
 * Output: markdown on stdout, or JSON with --json. Not a test.
 * Ownership: everything is allocated and freed here. Threads: the main thread, the engine's
 * pool, OpenBLAS' pool, and two short-lived threads for the peak measurement. */
#include <cblas.h>
#include <errno.h>
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_net.h"
#include "lib/engine.h"

#define MAX_REPS 5000

static const struct bench_netdef NETS[] = {
	{"full-1x28x28", {1, 28, 28}, {64, 128, 256, 256}},
	{"half-1x28x28", {1, 28, 28}, {32, 64, 128, 128}},
	{"full-3x32x32", {3, 32, 32}, {64, 128, 256, 256}},
	{"half-3x32x32", {3, 32, 32}, {32, 64, 128, 128}},
};
#define N_NETS ((int)(sizeof(NETS) / sizeof(NETS[0])))

/* A way to run the convolutions and spend the threads. Conv "packed" is the engine's own
 * GEMM (lib/gemm), "blas" is im2col + cblas_sgemm. With two threads: "engine2" = engine
 * n_threads 2 with OpenBLAS at 1 thread; "blas2" = engine n_threads 1 with OpenBLAS at 2
 * threads (only meaningful for the blas path: the packed path does not call OpenBLAS in
 * its convolutions). */
struct strategy {
	const char *name;
	int threads, engine_threads, blas_threads;
	enum mime_conv_impl conv;
};

static const struct strategy STRATEGIES[] = {
	{"packed-1t", 1, 1, 1, MIME_CONV_PACKED},      {"blas-1t", 1, 1, 1, MIME_CONV_BLAS},
	{"packed-engine2", 2, 2, 1, MIME_CONV_PACKED}, {"blas-engine2", 2, 2, 1, MIME_CONV_BLAS},
	{"blas-blas2", 2, 1, 2, MIME_CONV_BLAS},
};
#define N_STRATEGIES ((int)(sizeof(STRATEGIES) / sizeof(STRATEGIES[0])))

static const int BATCHES[] = {1, 32};
#define N_BATCHES 2

struct options {
	int json;
	int profile;
	int no_cells;
	double min_time_s;
	const char *only_net; /* NULL = all */
};

struct stats {
	int reps;
	double median_ms, min_ms; /* per image */
};

/* Times forwards of batch images after a warm-up; per-image statistics. */
static int time_engine(const struct mime_model *m, int batch, const struct strategy *st,
                       const float *in, double min_time_s, struct stats *ret, int64_t *ret_macs)
{
	const struct mime_engine_config cfg = {
		.max_batch = batch, .n_threads = st->engine_threads, .conv = st->conv};
	struct mime_errinfo ei = {0};
	struct mime_engine *e = NULL;
	struct mime_engine_result res;
	static const int tasks[64];
	static double t[MAX_REPS];
	double t0;
	int r, n = 0;

	openblas_set_num_threads(st->blas_threads);
	r = mime_engine_create(m, &cfg, &e, &ei);
	if (r < 0) {
		fprintf(stderr, "bench_engine: engine: %s (%s)\n", ei.msg, mime_strerror(r));
		return r;
	}
	if (ret_macs)
		*ret_macs = mime_engine_macs(e, 0);
	/* Warm-up: at least 3 forwards and 10% of the timed budget. */
	t0 = bench_now_s();
	for (int i = 0; i < 3 || bench_now_s() - t0 < 0.1 * min_time_s; i++)
		mime_engine_forward(e, batch, in, tasks, &res);
	t0 = bench_now_s();
	while (n < MAX_REPS && (n < 7 || bench_now_s() - t0 < min_time_s)) {
		const double a = bench_now_s();

		mime_engine_forward(e, batch, in, tasks, &res);
		t[n++] = (bench_now_s() - a) * 1e3 / batch;
	}
	mime_engine_destroy(e);
	ret->reps = n;
	ret->median_ms = bench_median(t, n);
	ret->min_ms = t[0];
	return 0;
}

/* --- FMA peak ------------------------------------------------------------------------- */

#define FMA_ACC   16
#define FMA_ITERS 2000000L

/* 16 independent FMA chains of 16 floats: 512 flops per iteration. */
__attribute__((target("avx512f"))) static float fma_loop512(long iters)
{
	__m512 acc[FMA_ACC];
	const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
	float s = 0.0f;

	for (int i = 0; i < FMA_ACC; i++)
		acc[i] = _mm512_set1_ps((float)i);
	for (long it = 0; it < iters; it++)
		for (int i = 0; i < FMA_ACC; i++)
			acc[i] = _mm512_fmadd_ps(acc[i], x, y);
	for (int i = 0; i < FMA_ACC; i++)
		s += _mm512_reduce_add_ps(acc[i]);
	return s;
}

/* The same with 256-bit vectors (what OpenBLAS' Haswell kernels use): 12 chains, as AVX2
 * has 16 registers; 192 flops per iteration. */
#define FMA_ACC256 12
__attribute__((target("avx2,fma"))) static float fma_loop256(long iters)
{
	__m256 acc[FMA_ACC256];
	const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
	float s = 0.0f, v[8];

	for (int i = 0; i < FMA_ACC256; i++)
		acc[i] = _mm256_set1_ps((float)i);
	for (long it = 0; it < iters; it++)
		for (int i = 0; i < FMA_ACC256; i++)
			acc[i] = _mm256_fmadd_ps(acc[i], x, y);
	for (int i = 0; i < FMA_ACC256; i++) {
		_mm256_storeu_ps(v, acc[i]);
		for (int j = 0; j < 8; j++)
			s += v[j];
	}
	return s;
}

struct fma_arg {
	int wide; /* 512 or 256 */
	long iters;
	float sink;
};

static void *fma_thread(void *p)
{
	struct fma_arg *a = p;

	a->sink = a->wide == 512 ? fma_loop512(a->iters) : fma_loop256(a->iters);
	return NULL;
}

/* Aggregate GFLOP/s of n_threads threads each running the FMA loop (~25 ms); the best of 8
 * runs, as other jobs on the machine only ever slow it down. */
static double fma_peak(int wide, int n_threads)
{
	struct fma_arg args[2];
	pthread_t th[2];
	double best = 0.0;
	const long iters = FMA_ITERS / (wide == 512 ? 2 : 1);

	for (int rep = 0; rep < 8; rep++) {
		const double t0 = bench_now_s();
		double dt, flops;

		for (int i = 0; i < n_threads; i++) {
			args[i] = (struct fma_arg){.wide = wide, .iters = iters};
			pthread_create(&th[i], NULL, fma_thread, &args[i]);
		}
		for (int i = 0; i < n_threads; i++)
			pthread_join(th[i], NULL);
		dt = bench_now_s() - t0;
		/* chains x floats per vector x 2 flops per FMA */
		flops = (double)n_threads * iters * (wide == 512 ? FMA_ACC : FMA_ACC256) *
		        (wide / 32) * 2;
		if (flops / dt / 1e9 > best)
			best = flops / dt / 1e9;
	}
	return best;
}

/* --- sgemm ---------------------------------------------------------------------------- */

/* Median GFLOP/s of C[m,n] = A[m,k] B[k,n] (row-major, like the engine's conv GEMM). */
static double time_sgemm(int m, int n, int k, int threads, double min_time_s)
{
	uint64_t rng = 42;
	float *a = bench_rand_array(&rng, (long)m * k, -1, 1),
	      *b = bench_rand_array(&rng, (long)k * n, -1, 1);
	float *c = bench_rand_array(&rng, (long)m * n, 0, 0);
	static double t[MAX_REPS];
	double t0;
	int reps = 0;

	openblas_set_num_threads(threads);
	for (int i = 0; i < 3; i++)
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n,
		            0.0f, c, n);
	t0 = bench_now_s();
	while (reps < MAX_REPS && (reps < 7 || bench_now_s() - t0 < min_time_s)) {
		const double s = bench_now_s();

		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n,
		            0.0f, c, n);
		t[reps++] = bench_now_s() - s;
	}
	free(a);
	free(b);
	free(c);
	return 2.0 * m * n * k / bench_median(t, reps) / 1e9;
}

struct gemm_shape {
	int m, n, k;
	const char *what;
};

static const struct gemm_shape CEILING_SHAPES[] = {
	{256, 49 * 32, 2304, "conv4 full 28x28, batch 32 in one GEMM"},
	{128, 196, 576, "conv2 full 28x28, one sample"},
	{256, 49, 2304, "conv4 full 28x28, one sample (what the engine issues at 1 thread)"},
	{256, 25, 2304, "conv4 full 28x28, half a sample (engine, 2 threads)"},
	{128, 196 * 32, 576, "conv2 full 28x28, batch 32 in one GEMM"},
};
#define N_CEILING ((int)(sizeof(CEILING_SHAPES) / sizeof(CEILING_SHAPES[0])))

/* --- per-layer profile ---------------------------------------------------------------- */

/* The engine's chunking of a conv layer's pixels (a copy of plan_layers() in engine.c). */
static void engine_chunking(int crs, int pixels, int n_threads, int *ret_chunk, int *ret_cps)
{
	int chunk = 65536 / crs, cps;

	chunk = chunk < 64 ? 64 : chunk > 1024 ? 1024 : chunk;
	cps = (pixels + chunk - 1) / chunk;
	if (cps < n_threads && pixels >= 16 * n_threads)
		cps = n_threads;
	*ret_chunk = (pixels + cps - 1) / cps;
	*ret_cps = cps;
}

/* Median ms per image of a conv layer's GEMMs as the blas path issues them (cps x batch
 * GEMMs of K x chunk x CRS), or as one GEMM over the whole batch's columns when chunk = 0;
 * OpenBLAS at 1 thread. */
static double time_conv_gemms(int K, int CRS, int P, int batch, int chunk, double min_time_s)
{
	const int cps = chunk ? (P + chunk - 1) / chunk : 1, cols = chunk ? chunk : P * batch;
	const int calls = chunk ? cps * batch : 1;
	uint64_t rng = 5;
	float *a = bench_rand_array(&rng, (long)K * CRS, -1, 1),
	      *b = bench_rand_array(&rng, (long)CRS * cols, 0, 1);
	float *c = bench_rand_array(&rng, (long)K * cols, 0, 0);
	static double t[MAX_REPS];
	double t0 = bench_now_s();
	int reps = 0;

	openblas_set_num_threads(1);
	while (reps < MAX_REPS && (reps < 5 || bench_now_s() - t0 < min_time_s)) {
		const double s0 = bench_now_s();

		for (int i = 0; i < calls; i++) {
			const int nc =
				chunk ? (P - (i % cps) * chunk < chunk ? P - (i % cps) * chunk
			                                               : chunk)
				      : cols;

			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, K, nc, CRS, 1.0f, a,
			            CRS, b, nc, 0.0f, c, nc);
		}
		t[reps++] = (bench_now_s() - s0) * 1e3 / batch;
	}
	free(a);
	free(b);
	free(c);
	return bench_median(t, reps);
}

/* Median ms of the head's sgemv (BENCH_N_CLASSES x feat) for one sample, OpenBLAS at 1 thread. */
static double time_head(long feat, double min_time_s)
{
	uint64_t rng = 3;
	float *w = bench_rand_array(&rng, BENCH_N_CLASSES * feat, -1, 1),
	      *x = bench_rand_array(&rng, feat, 0, 1);
	float y[BENCH_N_CLASSES] = {0};
	static double t[MAX_REPS];
	double t0 = bench_now_s();
	int reps = 0;

	openblas_set_num_threads(1);
	while (reps < MAX_REPS && (reps < 7 || bench_now_s() - t0 < min_time_s)) {
		const double a = bench_now_s();

		cblas_sgemv(CblasRowMajor, CblasNoTrans, BENCH_N_CLASSES, (int)feat, 1.0f, w,
		            (int)feat, x, 1, 1.0f, y, 1);
		t[reps++] = (bench_now_s() - a) * 1e3;
	}
	free(w);
	free(x);
	return bench_median(t, reps);
}

/* Per-layer engine time of d at batch, single thread, for both conv paths: forwards of
 * engines built on the graph cut after 1, 2, ... layers, minus the head each prefix needs
 * (timed alone); layer i's time is the difference of consecutive prefixes. For conv layers
 * also the OpenBLAS time of the GEMMs the blas path issues, and of one batched GEMM. */
static void profile_net(const struct bench_netdef *d, int batch, const float *in,
                        const struct options *o, int *first)
{
	const struct strategy *packed = &STRATEGIES[0], *blas = &STRATEGIES[1];
	struct mime_graph full;
	struct mime_shape shapes[MIME_MAX_LAYERS];
	double prev[2] = {0.0, 0.0};

	bench_vgg7_graph(d, -1, &full);
	mime_graph_check(&full, shapes, NULL);
	for (int n = 1; n < full.n_layers; n++) {
		const struct mime_layer_spec *l = &full.layers[n - 1];
		const struct mime_shape lin = n >= 2 ? shapes[n - 2] : full.input;
		const long macs = mime_graph_layer_macs(l, &lin, &shapes[n - 1]);
		const double head = time_head(mime_shape_size(&shapes[n - 1]), o->min_time_s / 8);
		double ms[2], chunked = 0.0, batched = 0.0;
		int chunk = 0, cps = 0;
		struct mime_graph g;
		struct bench_net net;
		struct stats s;

		bench_vgg7_graph(d, n, &g);
		if (bench_net_init(&net, &g, 1) < 0)
			exit(1);
		for (int i = 0; i < 2; i++) {
			if (time_engine(&net.m, batch, i ? blas : packed, in, o->min_time_s / 2, &s,
			                NULL) < 0)
				exit(1);
			ms[i] = s.median_ms - head - prev[i];
			prev[i] = s.median_ms - head;
		}
		bench_net_fini(&net);
		if (l->kind == MIME_LAYER_CONV) {
			const int crs = lin.c * l->kernel * l->kernel;
			const int P = shapes[n - 1].h * shapes[n - 1].w;

			engine_chunking(crs, P, 1, &chunk, &cps);
			chunked = time_conv_gemms(l->out, crs, P, batch, chunk, o->min_time_s / 4);
			batched = time_conv_gemms(l->out, crs, P, batch, 0, o->min_time_s / 4);
		}
		if (o->json) {
			printf("%s{\"net\":\"%s\",\"batch\":%d,\"layer\":\"%s\",\"macs\":%ld,"
			       "\"packed_ms\":%.5f,\"blas_ms\":%.5f",
			       *first ? "" : ",\n", d->name, batch, l->name, macs, ms[0], ms[1]);
			if (l->kind == MIME_LAYER_CONV)
				printf(",\"gemm_m\":%d,\"gemm_n\":%d,\"gemm_k\":%d,\"calls\":%d,"
				       "\"chunked_gemm_ms\":%.5f,\"batched_gemm_ms\":%.5f",
				       l->out, chunk, lin.c * 9, cps * batch, chunked, batched);
			printf("}");
			*first = 0;
		} else {
			printf("| %s | %d | %s | %.2f | %.4f | %.4f |", d->name, batch, l->name,
			       macs / 1e6, ms[0], ms[1]);
			if (l->kind == MIME_LAYER_CONV)
				printf(" %d x %dx%dx%d | %.4f (%.0f GF/s) | %.4f (%.0f GF/s) |\n",
				       cps * batch, l->out, chunk, lin.c * 9, chunked,
				       2e-6 * macs / chunked, batched, 2e-6 * macs / batched);
			else
				printf(" | | |\n");
		}
	}
}

/* --- main ----------------------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr, "usage: bench_engine [--json] [--min-time SECONDS] [--net NAME] "
	                "[--profile] [--no-cells]\n");
}

int main(int argc, char **argv)
{
	struct options o = {.min_time_s = 0.5};
	uint64_t rng = 1;
	float *in[N_NETS];
	double peak512[2], peak256[2];
	struct mime_gemm_arch arch;
	int first = 1;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			o.json = 1;
		else if (!strcmp(argv[i], "--profile"))
			o.profile = 1;
		else if (!strcmp(argv[i], "--no-cells"))
			o.no_cells = 1;
		else if (!strcmp(argv[i], "--min-time") && i + 1 < argc)
			o.min_time_s = atof(argv[++i]);
		else if (!strcmp(argv[i], "--net") && i + 1 < argc)
			o.only_net = argv[++i];
		else {
			usage();
			return 2;
		}
	}
	for (int i = 0; i < N_NETS; i++)
		in[i] = bench_rand_array(&rng, 32 * mime_shape_size(&NETS[i].input), 0.0f, 1.0f);

	/* Ceiling: FMA peak and sgemm. */
	for (int t = 1; t <= 2; t++) {
		peak512[t - 1] = __builtin_cpu_supports("avx512f") ? fma_peak(512, t) : 0.0;
		peak256[t - 1] = fma_peak(256, t);
	}
	mime_gemm_arch_select(-1, &arch);
	if (o.json) {
		printf("{\"openblas\":{\"config\":\"%s\",\"core\":\"%s\"},\n",
		       openblas_get_config(), openblas_get_corename());
		printf("\"gemm_arch\":{\"name\":\"%s\",\"mr\":%d,\"nr\":%d},\n", arch.name, arch.mr,
		       arch.nr);
		printf("\"peak\":{\"avx512_1t\":%.1f,\"avx512_2t\":%.1f,\"avx2_1t\":%.1f,"
		       "\"avx2_2t\":%.1f},\n\"sgemm\":[",
		       peak512[0], peak512[1], peak256[0], peak256[1]);
	} else {
		printf("OpenBLAS %s, core %s; engine GEMM microkernel %s (%d x %d)\n\n",
		       openblas_get_config(), openblas_get_corename(), arch.name, arch.mr, arch.nr);
		printf("FMA peak (GFLOP/s, measured): AVX-512 %.1f (1 thread) %.1f (2 threads); "
		       "AVX2 %.1f / %.1f\n\n",
		       peak512[0], peak512[1], peak256[0], peak256[1]);
		printf("| sgemm M x N x K | what | 1 thread GFLOP/s | 2 threads GFLOP/s |\n"
		       "|---|---|---|---|\n");
	}
	for (int i = 0; i < N_CEILING; i++) {
		const struct gemm_shape *s = &CEILING_SHAPES[i];
		const double g1 = time_sgemm(s->m, s->n, s->k, 1, o.min_time_s / 2);
		const double g2 = time_sgemm(s->m, s->n, s->k, 2, o.min_time_s / 2);

		if (o.json)
			printf("%s{\"m\":%d,\"n\":%d,\"k\":%d,\"what\":\"%s\",\"gflops_1t\":%.1f,"
			       "\"gflops_2t\":%.1f}",
			       i ? ",\n" : "", s->m, s->n, s->k, s->what, g1, g2);
		else
			printf("| %d x %d x %d | %s | %.1f | %.1f |\n", s->m, s->n, s->k, s->what,
			       g1, g2);
	}
	if (o.json)
		printf("],\n\"cells\":[");
	else
		printf("\n| net | MMAC/img | batch | threads | strategy | ms/img median | ms/img "
		       "min | img/s | GFLOP/s | best "
		       "|\n|---|---|---|---|---|---|---|---|---|---|\n");

	for (int ni = 0; ni < N_NETS && !o.no_cells; ni++) {
		const struct bench_netdef *d = &NETS[ni];
		struct mime_graph g;
		struct bench_net net;

		if (o.only_net && strcmp(o.only_net, d->name))
			continue;
		bench_vgg7_graph(d, -1, &g);
		if (bench_net_init(&net, &g, 1) < 0)
			return 1;
		for (int bi = 0; bi < N_BATCHES; bi++) {
			struct stats s[N_STRATEGIES];
			int64_t macs = 0;

			for (int si = 0; si < N_STRATEGIES; si++)
				if (time_engine(&net.m, BATCHES[bi], &STRATEGIES[si], in[ni],
				                o.min_time_s, &s[si], &macs) < 0)
					return 1;
			for (int si = 0; si < N_STRATEGIES; si++) {
				const struct strategy *st = &STRATEGIES[si];
				int best = 1;

				/* Best = lowest median among the strategies with as many threads.
				 */
				for (int j = 0; j < N_STRATEGIES; j++)
					if (STRATEGIES[j].threads == st->threads &&
					    s[j].median_ms < s[si].median_ms)
						best = 0;
				if (o.json)
					printf("%s{\"net\":\"%s\",\"macs\":%lld,\"batch\":%d,"
					       "\"threads\":%d,\"strategy\":\"%s\","
					       "\"engine_threads\":%d,\"blas_threads\":%d,"
					       "\"reps\":%d,\"median_ms\":%.5f,\"min_ms\":%.5f,"
					       "\"best\":%s}",
					       first ? "" : ",\n", d->name, (long long)macs,
					       BATCHES[bi], st->threads, st->name,
					       st->engine_threads, st->blas_threads, s[si].reps,
					       s[si].median_ms, s[si].min_ms,
					       best ? "true" : "false");
				else
					printf("| %s | %.1f | %d | %d | %s | %.3f | %.3f | %.0f | "
					       "%.1f "
					       "| %s |\n",
					       d->name, macs / 1e6, BATCHES[bi], st->threads,
					       st->name, s[si].median_ms, s[si].min_ms,
					       1e3 / s[si].median_ms, 2e-6 * macs / s[si].median_ms,
					       best ? "**best**" : "");
				first = 0;
			}
		}
		bench_net_fini(&net);
	}
	if (o.profile) {
		first = 1;
		if (o.json)
			printf("],\n\"profile\":[");
		else
			printf("\n| net | batch | layer | MMAC | packed ms/img | blas ms/img | "
			       "blas "
			       "GEMMs (calls x MxNxK) | their sgemm ms | one batched sgemm ms "
			       "|\n|---|---|---|---|---|---|---|---|---|\n");
		for (int ni = 0; ni < N_NETS; ni++) {
			if (o.only_net && strcmp(o.only_net, NETS[ni].name))
				continue;
			for (int bi = 0; bi < N_BATCHES; bi++)
				profile_net(&NETS[ni], BATCHES[bi], in[ni], &o, &first);
		}
	}
	if (o.json)
		printf("]}\n");
	for (int i = 0; i < N_NETS; i++)
		free(in[i]);
	return 0;
}
