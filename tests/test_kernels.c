// SPDX-License-Identifier: MIT
/* Kernel tests: the packed conv GEMM (dense and block-sparse, every SIMD path this CPU has)
 * against a naive double-precision convolution, with tails in K and in pixels, all three
 * mask kinds and the zero count; im2col against direct indexing.
 * Tolerance: |got - ref| <= 1e-4 * (1 + |ref|). */
#include "tests/unit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lib/gemm.h"
#include "lib/kernels.h"

static float *rand_floats(uint64_t *rng, long n, float lo, float hi)
{
	float *a = malloc(sizeof(float) * (size_t)n);

	for (long i = 0; i < n; i++)
		a[i] = mime_test_uniform(rng, lo, hi);
	return a;
}

static double naive_conv(const struct mime_conv_geom *g, const float *in, const float *w, int k,
                         int oh, int ow)
{
	double acc = 0;

	for (int c = 0; c < g->c; c++)
		for (int r = 0; r < g->r; r++)
			for (int s = 0; s < g->s; s++) {
				int ih = oh * g->stride - g->pad + r,
				    iw = ow * g->stride - g->pad + s;

				if (ih >= 0 && iw >= 0 && ih < g->h && iw < g->w)
					acc += (double)w[((k * g->c + c) * g->r + r) * g->s + s] *
					       in[(c * g->h + ih) * g->w + iw];
			}
	return acc;
}

/* Zeroes groups of wuv consecutive kernels at one column with probability ~frac. */
static void prune_groups(uint64_t *rng, float *w, int K, int CRS, int wuv, float frac)
{
	for (int k0 = 0; k0 < K; k0 += wuv)
		for (int c = 0; c < CRS; c++)
			if (mime_test_uniform(rng, 0, 1) < frac)
				for (int r = k0; r < k0 + wuv && r < K; r++)
					w[(long)r * CRS + c] = 0.0f;
}

static void check_conv(int simd, int sparse, int thr_kind, uint64_t seed)
{
	uint64_t rng = seed;
	struct mime_gemm_arch a;
	struct mime_conv_geom g;
	struct mime_gemm_weights pw;
	int k = 1 + (int)(mime_test_rand(&rng) % 37), ks = 1 + 2 * (int)(mime_test_rand(&rng) % 2);
	int CRS, P, np, p0;
	float *in, *w, *bias, *thr = NULL, *out, *packed = NULL;
	struct mime_mask_ref mask = {NULL, MIME_THR_NONE};
	int64_t zeros, ref_zeros = 0;

	mime_gemm_arch_select(simd, &a);
	assert_int_equal(a.simd, simd);
	g = (struct mime_conv_geom){.c = 1 + (int)(mime_test_rand(&rng) % 9),
	                            .h = 5 + (int)(mime_test_rand(&rng) % 11),
	                            .w = 4 + (int)(mime_test_rand(&rng) % 13),
	                            .k = k,
	                            .r = ks,
	                            .s = ks,
	                            .stride = 1 + (int)(mime_test_rand(&rng) % 2),
	                            .pad = ks / 2};
	g.oh = (g.h + 2 * g.pad - ks) / g.stride + 1;
	g.ow = (g.w + 2 * g.pad - ks) / g.stride + 1;
	CRS = g.c * ks * ks;
	P = g.oh * g.ow;
	p0 = (int)(mime_test_rand(&rng) % (unsigned)(P / 2 + 1));
	np = P - p0;
	in = rand_floats(&rng, (long)g.c * g.h * g.w, -1, 1);
	w = rand_floats(&rng, (long)k * CRS, -0.5f, 0.5f);
	bias = rand_floats(&rng, k, -0.2f, 0.2f);
	if (sparse)
		prune_groups(&rng, w, k, CRS, 16, 0.6f);
	if (thr_kind == MIME_THR_ELEMENT)
		thr = rand_floats(&rng, (long)k * P, 0, 0.5f);
	else if (thr_kind == MIME_THR_CHANNEL)
		thr = rand_floats(&rng, k, 0, 0.5f);
	mask = (struct mime_mask_ref){thr, (enum mime_thresholds)thr_kind};
	out = calloc((size_t)k * P, sizeof(float));
	assert_int_equal(mime_gemm_weights_pack(&a, w, k, CRS, sparse, &pw), 0);
	if (sparse) {
		/* Every dropped column was an all-zero panel column, and only those. */
		assert_int_equal(pw.n_cols, (int64_t)((k + a.mr - 1) / a.mr) * CRS -
		                                    mime_gemm_zero_columns(&a, w, k, CRS));
		assert_true(pw.n_cols < (int64_t)((k + a.mr - 1) / a.mr) * CRS || CRS * k < 40);
	}
	assert_int_equal(posix_memalign((void **)&packed, 64,
	                                sizeof(float) * mime_gemm_packed_b_floats(&a, CRS, np)),
	                 0);
	mime_gemm_pack_b(&a, &g, in, p0, np, packed);
	zeros = mime_gemm_conv(&a, &pw, packed, np, p0, P, bias, &mask, 1, out);
	for (int kk = 0; kk < k; kk++)
		for (int p = p0; p < P; p++) {
			double y = naive_conv(&g, in, w, kk, p / g.ow, p % g.ow) + bias[kk];
			double t = !thr                           ? 0
			           : thr_kind == MIME_THR_ELEMENT ? thr[kk * P + p]
			                                          : thr[kk];
			double ref = y >= t ? y : 0;
			float got = out[kk * P + p];

			if (fabs(got - ref) > 1e-4 * (1 + fabs(ref)) && fabs(y - t) > 1e-4)
				fail_msg("simd %d sparse %d k %d p %d: got %g ref %g", simd, sparse,
				         kk, p, got, ref);
			ref_zeros += ref == 0;
		}
	if (llabs(zeros - ref_zeros) > 2)
		fail_msg("zeros %ld ref %ld", (long)zeros, (long)ref_zeros);
	/* Pixels before p0 are untouched. */
	for (int kk = 0; kk < k; kk++)
		for (int p = 0; p < p0; p++)
			assert_true(out[kk * P + p] == 0.0f);
	mime_gemm_weights_free(&pw);
	free(packed);
	free(in);
	free(w);
	free(bias);
	free(thr);
	free(out);
}

static void test_kernels_gemm_conv_matches_naive_every_path(void **state)
{
	int paths = 0;

	(void)state;
	for (int simd = MIME_SIMD_SCALAR; simd <= MIME_SIMD_NEON; simd++) {
		if (!mime_gemm_arch_supported(simd))
			continue;
		paths++;
		for (int sparse = 0; sparse <= 1; sparse++)
			for (int thr = MIME_THR_NONE; thr <= MIME_THR_CHANNEL; thr++)
				for (int trial = 0; trial < 6; trial++)
					check_conv(simd, sparse, thr,
					           1000 + simd * 100 + sparse * 10 + thr +
					                   trial * 7);
	}
	assert_true(paths >= 1);
}

/* Sparse and dense packings of the same pruned weights give bit-identical outputs (the
 * skipped terms are exact zeros and the kept ones are summed in the same order). */
static void test_kernels_gemm_sparse_equals_dense_bitwise(void **state)
{
	uint64_t rng = 5;
	struct mime_gemm_arch a;
	struct mime_conv_geom g = {.c = 16,
	                           .h = 7,
	                           .w = 7,
	                           .k = 40,
	                           .r = 3,
	                           .s = 3,
	                           .stride = 1,
	                           .pad = 1,
	                           .oh = 7,
	                           .ow = 7};
	const int CRS = 16 * 9, P = 49;
	float *in = rand_floats(&rng, 16 * 49, -1, 1), *w = rand_floats(&rng, 40 * CRS, -1, 1);
	float *o1 = calloc(40 * P, sizeof(float)), *o2 = calloc(40 * P, sizeof(float)),
	      *packed = NULL;
	struct mime_gemm_weights dense, sparse;
	struct mime_mask_ref none = {NULL, MIME_THR_NONE};

	(void)state;
	mime_gemm_arch_select(-1, &a);
	prune_groups(&rng, w, 40, CRS, 16, 0.75f);
	assert_int_equal(mime_gemm_weights_pack(&a, w, 40, CRS, 0, &dense), 0);
	assert_int_equal(mime_gemm_weights_pack(&a, w, 40, CRS, 1, &sparse), 0);
	assert_true(mime_gemm_weights_bytes(&sparse) < mime_gemm_weights_bytes(&dense) / 2);
	assert_int_equal(posix_memalign((void **)&packed, 64,
	                                sizeof(float) * mime_gemm_packed_b_floats(&a, CRS, P)),
	                 0);
	mime_gemm_pack_b(&a, &g, in, 0, P, packed);
	mime_gemm_conv(&a, &dense, packed, P, 0, P, NULL, &none, 0, o1);
	mime_gemm_conv(&a, &sparse, packed, P, 0, P, NULL, &none, 0, o2);
	assert_memory_equal(o1, o2, sizeof(float) * 40 * P);
	mime_gemm_weights_free(&dense);
	mime_gemm_weights_free(&sparse);
	free(packed);
	free(in);
	free(w);
	free(o1);
	free(o2);
}

static void test_kernels_im2col_matches_direct_indexing(void **state)
{
	uint64_t rng = 9;
	struct mime_conv_geom g = {
		.c = 3, .h = 9, .w = 11, .k = 1, .r = 3, .s = 3, .stride = 2, .pad = 1};
	float *in = rand_floats(&rng, 3 * 9 * 11, -1, 1), *col;
	int P, p0 = 3, np;

	(void)state;
	g.oh = (9 + 2 - 3) / 2 + 1;
	g.ow = (11 + 2 - 3) / 2 + 1;
	P = g.oh * g.ow;
	np = P - p0;
	col = malloc(sizeof(float) * 27 * np);
	mime_im2col(&g, in, p0, np, col);
	for (int c = 0; c < 3; c++)
		for (int r = 0; r < 3; r++)
			for (int s = 0; s < 3; s++)
				for (int j = 0; j < np; j++) {
					int p = p0 + j, ih = (p / g.ow) * 2 - 1 + r,
					    iw = (p % g.ow) * 2 - 1 + s;
					float want = (ih < 0 || iw < 0 || ih >= 9 || iw >= 11)
					                     ? 0.0f
					                     : in[(c * 9 + ih) * 11 + iw];

					assert_true(col[((c * 3 + r) * 3 + s) * np + j] == want);
				}
	free(in);
	free(col);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kernels_gemm_conv_matches_naive_every_path),
		cmocka_unit_test(test_kernels_gemm_sparse_equals_dense_bitwise),
		cmocka_unit_test(test_kernels_im2col_matches_direct_indexing),
	};

	return cmocka_run_group_tests_name("kernels", tests, NULL, NULL);
}
