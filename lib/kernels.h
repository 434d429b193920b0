/* SPDX-License-Identifier: MIT */
/* kernels -- the engine's inner loops, exposed (not installed) so unit tests can check each
 * one against a naive reference: im2col over a range of output columns of a whole batch,
 * the fused conv epilogue (bias + threshold mask + zero count, scattering GEMM columns back
 * to NCHW), max-pooling, and the fc epilogue.
 * Column space of a conv layer's epilogue: j in [0, batch * OH*OW), j = n * OH*OW + p.
 * Ownership: callers own every buffer. Threads: reentrant; no allocation. */
#pragma once

#include <stdint.h>

#include "lib/graph.h"
#include "lib/manifest.h"

struct mime_conv_geom {
	int c, h, w; /* input */
	int k, r, s; /* kernels, kernel rows, kernel columns (r = s here) */
	int stride, pad;
	int oh, ow; /* output */
};

/* Fills one im2col row (fixed c, kh, kw) for output pixels [p0, p0 + np) of one sample
 * (in_sample = [C, H, W]): dst[j] = the input under tap (kh, kw) of pixel p0 + j, or 0 in
 * the padding. */
void mime_im2col_row(const struct mime_conv_geom *g, const float *in_sample, int c, int kh, int kw,
                     int p0, int np, float *dst);

/* Fills col[CRS, np] (row-major) with the patches of pixels [p0, p0 + np) of one sample. */
void mime_im2col(const struct mime_conv_geom *g, const float *in_sample, int p0, int np,
                 float *col);

/* The threshold of output neuron (k, p) for one sample: NULL thr = ReLU (t = 0). */
struct mime_mask_ref {
	const float *thr;
	enum mime_thresholds granularity;
};

/* Epilogue of a conv GEMM chunk: acc is [K, ncols] (leading dimension ncols) for output
 * columns [j0, j0+ncols). Writes out[n, k, p] = mask(acc[k, j] + bias[k]) where the mask is
 * a = (y >= t) ? y : 0 with t from masks[n] (per element: thr[k*P + p]; per channel: thr[k];
 * ReLU: t = 0). Adds the count of zero outputs of sample n to zeros[n] (when zeros is not
 * NULL; masked layers only). P = OH*OW. */
void mime_conv_epilogue(const float *acc, int k_count, int64_t j0, int ncols, int p_count,
                        const float *bias, const struct mime_mask_ref *masks, int apply_mask,
                        float *out, int64_t *zeros);

/* Max-pool planes [n_planes, h, w] -> [n_planes, oh, ow] with a square kernel and stride. */
void mime_maxpool(const float *in, int n_planes, int h, int w, int kernel, int stride, int oh,
                  int ow, float *out);

/* In-place fc epilogue of one sample: y[i] += bias[i], then the mask (if apply_mask);
 * returns the number of zeros after masking (0 when apply_mask is false). */
int64_t mime_fc_epilogue(float *y, int n, const float *bias, const struct mime_mask_ref *mask,
                         int apply_mask);
