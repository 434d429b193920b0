/* SPDX-License-Identifier: MIT */
/* gemm -- the engine's own convolution GEMM: weights packed once per plan into panels of MR
 * kernels, input patches packed (im2col) into panels of NR pixels, a register-blocked
 * MR x NR microkernel (AVX-512, AVX2 or portable C, chosen at run time from the CPU), and the
 * conv epilogue (bias, threshold mask, zero count) applied to each tile while it is still in
 * cache, stored straight to NCHW.
 *
 * Every output is the sum over c*R*S in increasing order, whatever the batch, chunk or
 * thread, so a sample's result does not depend on what it is batched with.
 *
 * Layouts: packed weights [ceil(K/MR)][CRS][MR] (kernels past K are zero; see
 * struct mime_gemm_weights for the block-sparse form); packed patches
 * [ceil(np/NR)][CRS][NR] (pixels past np are zero). Both 64-byte aligned by the caller.
 * Ownership: callers own every buffer. Threads: reentrant; no allocation. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "lib/kernels.h"

enum mime_simd {
	MIME_SIMD_SCALAR,
	MIME_SIMD_AVX2,
	MIME_SIMD_AVX512,
	MIME_SIMD_NEON, /* aarch64 Advanced SIMD, 8 x 8 tile */
};

struct mime_gemm_arch {
	enum mime_simd simd;
	const char *name;
	int mr, nr;
};

/* True when this build and CPU can run path simd (cpuid on x86; NEON on every aarch64). */
int mime_gemm_arch_supported(int simd);

/* The path named by want when it is supported, else the best this CPU supports (want = -1:
 * the best). */
void mime_gemm_arch_select(int want, struct mime_gemm_arch *ret_arch);

/* Packed weights. Dense: panel p (kernels p*MR .. p*MR+MR-1) holds CRS columns of MR values.
 * Block-sparse (SIMD-aware fine-grain pruning, the Multi-phase CNN paper's W_uv groups): a
 * panel column whose MR values are all zero is not stored, and each panel lists the columns
 * it keeps, so a zero group costs no instruction and no byte. Groups of W_uv rows with
 * MR | W_uv (e.g. W_uv = 16 on AVX-512, MR = 8) map to whole panel columns. */
struct mime_gemm_weights {
	int K, CRS, mr;
	float *values;  /* panel p's values: values + start[p] * mr (dense: p * CRS * mr) */
	int32_t *cols;  /* kept column indices, increasing per panel; NULL when dense */
	int64_t *start; /* [panels + 1] offsets into cols; NULL when dense */
	int64_t n_cols; /* stored columns over all panels */
};

/* Number of all-zero MR x 1 panel columns of W [K, CRS] (what sparse packing drops). */
int64_t mime_gemm_zero_columns(const struct mime_gemm_arch *a, const float *W, int K, int CRS);

/* Packs W [K, CRS] (row-major) for a; sparse = 1 drops all-zero panel columns. Allocates
 * (64-byte aligned); returns 0 or -ENOMEM. */
int mime_gemm_weights_pack(const struct mime_gemm_arch *a, const float *W, int K, int CRS,
                           int sparse, struct mime_gemm_weights *ret_weights);
/* The same for a sub-matrix and a fine-grain mask: rows [0, K) and columns [0, CRS) of W with
 * leading dimension lda (a phase's first K kernels over its first C input channels), and
 * keep[(k / wuv) * CRS + c] == 0 reads group (k / wuv, c) as zero (keep may be NULL).
 * Returns 0, -ENOMEM, or -EINVAL (keep without a positive wuv). */
int mime_gemm_weights_pack_sub(const struct mime_gemm_arch *a, const float *W, int64_t lda, int K,
                               int CRS, const uint8_t *keep, int wuv, int sparse,
                               struct mime_gemm_weights *ret_weights);
int64_t mime_gemm_zero_columns_sub(const struct mime_gemm_arch *a, const float *W, int64_t lda,
                                   int K, int CRS, const uint8_t *keep, int wuv);
void mime_gemm_weights_free(struct mime_gemm_weights *w); /* zeroes *w; NULL fields fine */
size_t mime_gemm_weights_bytes(const struct mime_gemm_weights *w);

/* Floats needed for the packed patches of np pixels. */
size_t mime_gemm_packed_b_floats(const struct mime_gemm_arch *a, int CRS, int np);

/* Packs the patches of output pixels [p0, p0 + np) of one sample (in_sample = [C, H, W]).
 */
void mime_gemm_pack_b(const struct mime_gemm_arch *a, const struct mime_conv_geom *g,
                      const float *in_sample, int p0, int np, float *packed);

/* out_sample[k, p0 + j] = mask(sum_crs W[k, crs] * X[crs, j] + bias[k]) for every kernel k
 * and j < np; P = OH*OW is the row stride of out_sample ([K, P]). Returns the number of zero
 * outputs written when apply_mask is set (else 0). */
int64_t mime_gemm_conv(const struct mime_gemm_arch *a, const struct mime_gemm_weights *w,
                       const float *packed_b, int np, int p0, int P, const float *bias,
                       const struct mime_mask_ref *mask, int apply_mask, float *out_sample);
