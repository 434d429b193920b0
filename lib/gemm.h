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
 * [ceil(np/NR)][CRS][NR] (pixels past np are zero). Both 64-byte aligned.
 * Ownership: a struct mime_gemm_weights owns what packing allocated (released by
 * mime_gemm_weights_free); callers own every other buffer.
 * Threads: reentrant; only mime_gemm_weights_init() and the _pack functions allocate. */
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

/* Packed weights, in one of three forms.
 * Dense: panel p (kernels p*MR .. p*MR+MR-1) holds CRS columns of MR values.
 * Compact block-sparse (SIMD-aware fine-grain pruning, the Multi-phase CNN paper's W_uv
 * groups): a panel column whose MR values are all zero is not stored, and each panel lists
 * the columns it keeps, so a zero group costs no instruction and no byte.
 * Indexed block-sparse: the dense panels stay as they are and each panel lists the columns
 * to run; the microkernel reads weights and patches at those columns. Choosing other
 * columns (mime_gemm_weights_select, a fine-grain phase switch) moves no weight: a pruned
 * group costs no instruction, but its bytes stay.
 * Groups of W_uv rows with MR | W_uv (e.g. W_uv = 16 on AVX-512, MR = 8) map to whole panel
 * columns.
 * Storage: one mapping sized at init for the largest packing it will hold (K_max x
 * CRS_max); a packing fills a prefix of it and the pages past that prefix are returned to
 * the system, so repacking a smaller sub-matrix (a coarse step down) really frees memory,
 * and a larger one faults in only what it adds. Values are page aligned. */
enum mime_gemm_form {
	MIME_GEMM_DENSE,
	MIME_GEMM_COMPACT,
	MIME_GEMM_INDEXED,
};

struct mime_gemm_weights {
	int K, CRS, mr;
	enum mime_gemm_form form;
	float *values;      /* compact: panel p at values + start[p] * mr; else p * CRS * mr */
	int32_t *cols;      /* compact, indexed: columns run, increasing per panel */
	int64_t *start;     /* compact, indexed: [panels + 1] offsets into cols */
	int64_t n_cols;     /* columns run over all panels */
	uint8_t *live;      /* selectable packings: [panels][CRS], 1 = the panel column holds a
	                       nonzero value; NULL otherwise */
	int64_t n_live;     /* selectable: columns with live set */
	int K_max, CRS_max; /* what the storage can hold */
	uint8_t *rows;      /* indexed: [CRS], 1 = some panel runs column c; NULL otherwise */
	size_t off_live, off_start, off_cols, off_rows, map_bytes; /* the storage's regions */
	size_t touched[5]; /* bytes of each region written since its pages were released */
};

/* Number of all-zero MR x 1 panel columns of W [K, CRS] (what sparse packing drops). */
int64_t mime_gemm_zero_columns(const struct mime_gemm_arch *a, const float *W, int K, int CRS);

/* Maps storage for packings of up to K_max kernels x CRS_max columns (address space only:
 * nothing is resident before a packing writes it); *w holds no packing yet. Returns 0,
 * -EINVAL (sizes not positive or too large) or -ENOMEM. */
int mime_gemm_weights_init(struct mime_gemm_weights *w, const struct mime_gemm_arch *a, int K_max,
                           int CRS_max);
/* Packs, into w's storage (no allocation), rows [0, K) and columns [0, CRS) of W with leading
 * dimension lda (a phase's first K kernels over its first C input channels), with
 * keep[(k / wuv) * CRS + c] == 0 reading group (k / wuv, c) as zero (keep may be NULL);
 * sparse = 1: compact form, dropping all-zero panel columns; 0: dense. Replaces the packing
 * w held and releases the pages it no longer uses. Returns 0, or -EINVAL (K or CRS beyond the
 * storage, another arch, keep without a positive wuv) leaving w as it was. */
int mime_gemm_weights_repack(struct mime_gemm_weights *w, const struct mime_gemm_arch *a,
                             const float *W, int64_t lda, int K, int CRS, const uint8_t *keep,
                             int wuv, int sparse);
/* Packs the same sub-matrix densely and unmasked, noting which panel columns hold a nonzero
 * value, so that mime_gemm_weights_select() can later pick the columns to run without
 * touching a weight; runs dense (every column) until then. Same failures. */
int mime_gemm_weights_repack_selectable(struct mime_gemm_weights *w, const struct mime_gemm_arch *a,
                                        const float *W, int64_t lda, int K, int CRS);
/* Picks the columns of selectable packing w to run: column c of panel p runs when it holds a
 * nonzero value and keep (NULL = every group) keeps group (p * MR / wuv, c), keep being
 * [ceil(K / wuv)][CRS] as above. w runs indexed when keep leaves out a column holding a
 * nonzero value or when at least 1 in 8 columns is left out (below that, skipping all-zero
 * columns saves about what the index costs), else dense. No weight moves and nothing is
 * allocated; the results are bit for bit those of packing the masked weights. Returns 0,
 * or -EINVAL (w not selectable; keep with wuv not a positive multiple of MR), leaving w as
 * it was. */
int mime_gemm_weights_select(struct mime_gemm_weights *w, const uint8_t *keep, int wuv);

/* Storage just large enough, then repack / repack_selectable: allocates; 0 or -ENOMEM
 * (-EINVAL: keep without a positive wuv). */
int mime_gemm_weights_pack(const struct mime_gemm_arch *a, const float *W, int K, int CRS,
                           int sparse, struct mime_gemm_weights *ret_weights);
int mime_gemm_weights_pack_sub(const struct mime_gemm_arch *a, const float *W, int64_t lda, int K,
                               int CRS, const uint8_t *keep, int wuv, int sparse,
                               struct mime_gemm_weights *ret_weights);
int mime_gemm_weights_pack_selectable(const struct mime_gemm_arch *a, const float *W, int64_t lda,
                                      int K, int CRS, struct mime_gemm_weights *ret_weights);
int64_t mime_gemm_zero_columns_sub(const struct mime_gemm_arch *a, const float *W, int64_t lda,
                                   int K, int CRS, const uint8_t *keep, int wuv);
void mime_gemm_weights_free(struct mime_gemm_weights *w); /* unmaps; zeroes *w; {0} is fine */
/* Bytes the current packing uses: values (all of the dense panels when indexed), live
 * flags, index. */
size_t mime_gemm_weights_bytes(const struct mime_gemm_weights *w);

/* Floats needed for the packed patches of np pixels. */
size_t mime_gemm_packed_b_floats(const struct mime_gemm_arch *a, int CRS, int np);

/* Packs the patches of output pixels [p0, p0 + np) of one sample (in_sample = [C, H, W]).
 */
void mime_gemm_pack_b(const struct mime_gemm_arch *a, const struct mime_conv_geom *g,
                      const float *in_sample, int p0, int np, float *packed);
/* The same, filling only the rows (columns of the weights) c with rows[c] set (rows may be
 * NULL: all of them); the others are left as they were. For an indexed packing w, pass
 * w->rows: the rows no panel runs are never read. */
void mime_gemm_pack_b_rows(const struct mime_gemm_arch *a, const struct mime_conv_geom *g,
                           const float *in_sample, int p0, int np, const uint8_t *rows,
                           float *packed);

/* out_sample[k, p0 + j] = mask(sum_crs W[k, crs] * X[crs, j] + bias[k]) for every kernel k
 * and j < np; P = OH*OW is the row stride of out_sample ([K, P]). Returns the number of zero
 * outputs written when apply_mask is set (else 0). */
int64_t mime_gemm_conv(const struct mime_gemm_arch *a, const struct mime_gemm_weights *w,
                       const float *packed_b, int np, int p0, int P, const float *bias,
                       const struct mime_mask_ref *mask, int apply_mask, float *out_sample);

/* Skipping zero activations (issue 5): the thresholds (and ReLU) leave most of a conv
 * layer's input at exactly 0, and a zero input contributes nothing to any output. In the
 * input-sparse form each output pixel is computed as a vector over the kernels: for every
 * nonzero input under its receptive field, taken in increasing c*R*S order, an FMA of that
 * input, broadcast, with row c*R*S of the transposed weights W^T [CRS][kv] (kv = K rounded
 * up to 16; the effective weights of the packing: pruned groups are zeros, and rows with
 * no nonzero weight are never visited). Each output is then the same chain of FMAs as in
 * the dense path with the terms of the zero inputs left out, and adding 0 * w (w finite)
 * to a sum that is never -0 changes no bit: the results are bit for bit those of
 * mime_gemm_conv on every path. (A weight that is inf or NaN times a skipped zero would
 * give NaN in the dense path; the trained weights are finite.)
 * Storage: one private mapping sized at init for K_max x CRS_max; a build fills a prefix.
 * Unlike the packed weights, pages past it are kept: a coarse step back up would otherwise
 * fault them in again (milliseconds in a virtual machine). */
struct mime_gemm_tweights {
	int K, CRS, kv;         /* current: K kernels over CRS rows, row stride kv */
	int K_max, CRS_max, rs; /* storage; rs = R*S of the layer (rows per input channel) */
	float *values;          /* [CRS][kv] */
	uint32_t *live;         /* [CRS / rs]: bit t set when row c*rs + t has a nonzero */
	uint8_t *held;          /* [panels][CRS]: 1 = W^T holds panel p's column c */
	uint8_t *row, *dirty;   /* [CRS] each: scratch of mime_gemm_tweights_update */
	size_t off_live, off_held, off_row, map_bytes, touched;
};

/* Maps storage for up to K_max kernels x CRS_max rows, rs = R*S rows per input channel
 * (rs <= 16). Returns 0, -EINVAL or -ENOMEM. */
int mime_gemm_tweights_init(struct mime_gemm_tweights *t, int K_max, int CRS_max, int rs);
/* Builds W^T from packing w (any form: the columns w runs, zeros elsewhere). Reads only w
 * (resident), never the model's weights. Returns 0 or -EINVAL (w larger than the storage,
 * CRS not a multiple of rs). */
int mime_gemm_tweights_build(struct mime_gemm_tweights *t, const struct mime_gemm_weights *w);
/* The same after a fine-grain switch (mime_gemm_weights_select) of the packing t was last
 * built or updated from, its values unchanged: rewrites only the columns whose selection
 * changed (a comparison of panels x CRS flags, then the columns that differ). w must be dense
 * or indexed with t's K and CRS; -EINVAL otherwise (then build). Still hundreds of
 * microseconds when half the groups change (VGG-7 half), so the engine does not use it: it
 * builds a W^T per fine mask once and keeps it (lib/engine.c). */
int mime_gemm_tweights_update(struct mime_gemm_tweights *t, const struct mime_gemm_weights *w);
void mime_gemm_tweights_free(struct mime_gemm_tweights *t); /* {0} is fine */
/* Gives the pages of the values back to the system and marks t empty (K = 0, nothing
 * touched); the storage stays mapped, so a later build just faults pages in again. */
void mime_gemm_tweights_release(struct mime_gemm_tweights *t);
/* Bytes held: the largest build so far (kept resident) and the live flags. */
size_t mime_gemm_tweights_bytes(const struct mime_gemm_tweights *t);

/* True when the input-sparse form handles geometry g (stride 1, R*S <= 16, a padded input
 * row of at most 32 pixels). */
int mime_gemm_act_supported(const struct mime_conv_geom *g);
/* Bytes of scratch mime_gemm_conv_act needs for a layer of K kernels, geometry g. */
size_t mime_gemm_act_scratch_bytes(const struct mime_gemm_arch *a, const struct mime_conv_geom *g,
                                   int K);
/* Fraction of nonzero inputs under output pixels [p0, p0 + np) (the input rows they read,
 * every channel), computed while noting where they are (in scratch, for the call below). */
double mime_gemm_act_density(const struct mime_gemm_arch *a, const struct mime_conv_geom *g,
                             const float *in_sample, int p0, int np, void *scratch);
/* Output pixels [p0, p0 + np) of one sample in the input-sparse form, after
 * mime_gemm_act_density on the same arguments and scratch; writes what mime_gemm_conv
 * writes (same epilogue) and returns its zero count. t must match w->K, w->CRS and g. */
int64_t mime_gemm_conv_act(const struct mime_gemm_arch *a, const struct mime_gemm_tweights *t,
                           const struct mime_conv_geom *g, const float *in_sample, int p0, int np,
                           int P, const float *bias, const struct mime_mask_ref *mask,
                           int apply_mask, float *out_sample, void *scratch);
