// SPDX-License-Identifier: MIT
/* test_gemm_portable -- the packed conv GEMM (dense and block-sparse) on every SIMD path the
 * machine has, against a naive double-precision convolution, with no dependency but libc and
 * libm: it is cross-compiled for aarch64 and run under qemu-user in CI to test the NEON path
 * (edge boxes are often ARM), and built natively as well. Tolerance: |got - ref| <=
 * 1e-4 * (1 + |ref|), except outputs within 1e-4 of their threshold. Exit 0 = pass. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/gemm.h"

static uint64_t rng = 88172645463325252ull;

static float uni(float lo, float hi)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return lo + (hi - lo) * (float)(rng >> 40) / (float)(1 << 24);
}

static int check(int simd, int sparse, int thr_kind)
{
	struct mime_gemm_arch a;
	struct mime_gemm_weights pw;
	struct mime_conv_geom g;
	int k = 1 + (int)(uni(0, 37)), ks = uni(0, 1) < 0.5f ? 1 : 3, CRS, P, fails = 0;
	float *in, *w, *bias, *thr = NULL, *out, *packed = NULL;
	struct mime_mask_ref mask;
	int64_t zeros, ref_zeros = 0;

	mime_gemm_arch_select(simd, &a);
	if ((int)a.simd != simd) {
		printf("path %d not selected\n", simd);
		return 1;
	}
	g = (struct mime_conv_geom){.c = 1 + (int)uni(0, 9),
	                            .h = 5 + (int)uni(0, 11),
	                            .w = 4 + (int)uni(0, 13),
	                            .k = k,
	                            .r = ks,
	                            .s = ks,
	                            .stride = 1 + (int)uni(0, 2),
	                            .pad = ks / 2};
	g.oh = (g.h + 2 * g.pad - ks) / g.stride + 1;
	g.ow = (g.w + 2 * g.pad - ks) / g.stride + 1;
	CRS = g.c * ks * ks;
	P = g.oh * g.ow;
	in = malloc(sizeof(float) * g.c * g.h * g.w);
	w = malloc(sizeof(float) * k * CRS);
	bias = malloc(sizeof(float) * k);
	out = calloc((size_t)k * P, sizeof(float));
	for (int i = 0; i < g.c * g.h * g.w; i++)
		in[i] = uni(-1, 1);
	for (int i = 0; i < k * CRS; i++)
		w[i] = uni(-0.5f, 0.5f);
	for (int i = 0; i < k; i++)
		bias[i] = uni(-0.2f, 0.2f);
	if (sparse) /* prune W_uv = 16 row groups at random columns */
		for (int k0 = 0; k0 < k; k0 += 16)
			for (int c = 0; c < CRS; c++)
				if (uni(0, 1) < 0.6f)
					for (int r = k0; r < k0 + 16 && r < k; r++)
						w[r * CRS + c] = 0.0f;
	if (thr_kind) {
		int n = thr_kind == MIME_THR_ELEMENT ? k * P : k;

		thr = malloc(sizeof(float) * n);
		for (int i = 0; i < n; i++)
			thr[i] = uni(0, 0.5f);
	}
	mask = (struct mime_mask_ref){thr, (enum mime_thresholds)thr_kind};
	if (mime_gemm_weights_pack(&a, w, k, CRS, sparse, &pw) < 0 ||
	    posix_memalign((void **)&packed, 64,
	                   sizeof(float) * mime_gemm_packed_b_floats(&a, CRS, P)) != 0) {
		printf("out of memory\n");
		return 1;
	}
	mime_gemm_pack_b(&a, &g, in, 0, P, packed);
	zeros = mime_gemm_conv(&a, &pw, packed, P, 0, P, bias, &mask, 1, out);
	for (int kk = 0; kk < k; kk++)
		for (int p = 0; p < P; p++) {
			double y = bias[kk], t, ref;
			int oh = p / g.ow, ow = p % g.ow;

			for (int c = 0; c < g.c; c++)
				for (int r = 0; r < ks; r++)
					for (int s = 0; s < ks; s++) {
						int ih = oh * g.stride - g.pad + r,
						    iw = ow * g.stride - g.pad + s;

						if (ih >= 0 && iw >= 0 && ih < g.h && iw < g.w)
							y += (double)w[((kk * g.c + c) * ks + r) *
							                       ks +
							               s] *
							     in[(c * g.h + ih) * g.w + iw];
					}
			t = !thr ? 0 : thr_kind == MIME_THR_ELEMENT ? thr[kk * P + p] : thr[kk];
			ref = y >= t ? y : 0;
			ref_zeros += ref == 0;
			if (fabs(out[kk * P + p] - ref) > 1e-4 * (1 + fabs(ref)) &&
			    fabs(y - t) > 1e-4) {
				if (fails++ < 3)
					printf("%s sparse %d thr %d: k %d p %d got %g want %g\n",
					       a.name, sparse, thr_kind, kk, p, out[kk * P + p],
					       ref);
			}
		}
	if (llabs(zeros - ref_zeros) > 2) {
		printf("%s: %lld zeros, reference %lld\n", a.name, (long long)zeros,
		       (long long)ref_zeros);
		fails++;
	}
	mime_gemm_weights_free(&pw);
	free(packed);
	free(in);
	free(w);
	free(bias);
	free(thr);
	free(out);
	return fails != 0;
}

int main(void)
{
	int failed = 0, paths = 0;

	for (int simd = MIME_SIMD_SCALAR; simd <= MIME_SIMD_NEON; simd++) {
		struct mime_gemm_arch a;

		if (!mime_gemm_arch_supported(simd))
			continue;
		mime_gemm_arch_select(simd, &a);
		paths++;
		for (int sparse = 0; sparse <= 1; sparse++)
			for (int thr = MIME_THR_NONE; thr <= MIME_THR_CHANNEL; thr++)
				for (int trial = 0; trial < 8; trial++)
					failed += check(simd, sparse, thr);
		printf("%s (%dx%d): %s\n", a.name, a.mr, a.nr, failed ? "FAILED" : "ok");
	}
	printf("%d paths, %d failed checks\n", paths, failed);
	return failed || paths == 0;
}
