// SPDX-License-Identifier: MIT
/* gemm -- see gemm.h. */
#include "lib/gemm.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MIME_X86 1
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#define MIME_NEON 1
#endif

#define MAX_MR 8
#define MAX_NR 32

int mime_gemm_arch_supported(int simd)
{
	switch (simd) {
	case MIME_SIMD_SCALAR:
		return 1;
#ifdef MIME_X86
	case MIME_SIMD_AVX2:
		__builtin_cpu_init();
		return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
	case MIME_SIMD_AVX512:
		__builtin_cpu_init();
		return __builtin_cpu_supports("avx512f");
#endif
#ifdef MIME_NEON
	case MIME_SIMD_NEON:
		return 1;
#endif
	default:
		return 0;
	}
}

void mime_gemm_arch_select(int want, struct mime_gemm_arch *ret_arch)
{
	static const struct mime_gemm_arch archs[] = {
		[MIME_SIMD_SCALAR] = {MIME_SIMD_SCALAR, "scalar", 4, 8},
		[MIME_SIMD_AVX2] = {MIME_SIMD_AVX2, "avx2", 6, 16},
		[MIME_SIMD_AVX512] = {MIME_SIMD_AVX512, "avx512", 8, 32},
		[MIME_SIMD_NEON] = {MIME_SIMD_NEON, "neon", 8, 8},
	};
	static const enum mime_simd best_first[] = {MIME_SIMD_AVX512, MIME_SIMD_NEON,
	                                            MIME_SIMD_AVX2, MIME_SIMD_SCALAR};
	enum mime_simd pick = MIME_SIMD_SCALAR;

	if (want >= 0 && want <= MIME_SIMD_NEON && mime_gemm_arch_supported(want)) {
		pick = (enum mime_simd)want;
	} else {
		for (unsigned i = 0; i < sizeof(best_first) / sizeof(best_first[0]); i++)
			if (mime_gemm_arch_supported(best_first[i])) {
				pick = best_first[i];
				break;
			}
	}
	*ret_arch = archs[pick];
}

/* A view of the weights to pack: rows [0, K) and columns [0, CRS) of a row-major matrix with
 * leading dimension lda, with the fine-grain groups keep says are pruned read as zero. */
struct wsrc {
	const float *W;
	int64_t lda;
	int K, CRS;
	const uint8_t *keep; /* [ceil(K / wuv)][CRS] or NULL */
	int wuv;
};

static float wsrc_at(const struct wsrc *s, int k, int c)
{
	if (k >= s->K)
		return 0.0f;
	if (s->keep && !s->keep[(int64_t)(k / s->wuv) * s->CRS + c])
		return 0.0f;
	return s->W[(int64_t)k * s->lda + c];
}

static int column_is_zero(const struct wsrc *s, int k0, int mr, int c)
{
	for (int r = 0; r < mr && k0 + r < s->K; r++)
		if (wsrc_at(s, k0 + r, c) != 0.0f)
			return 0;
	return 1;
}

static int64_t zero_columns(const struct wsrc *s, int mr)
{
	int64_t n = 0;

	for (int k0 = 0; k0 < s->K; k0 += mr)
		for (int c = 0; c < s->CRS; c++)
			n += column_is_zero(s, k0, mr, c);
	return n;
}

int64_t mime_gemm_zero_columns(const struct mime_gemm_arch *a, const float *W, int K, int CRS)
{
	const struct wsrc s = {W, CRS, K, CRS, NULL, 1};

	return zero_columns(&s, a->mr);
}

/* Storage: one private anonymous mapping per packing, sized once for the largest packing
 * it will hold (the whole parent's layer), in five page-aligned regions: values, live
 * flags, start, cols, rows. A packing fills a prefix of each region; repacking a smaller one
 * returns the pages past it to the system (MADV_DONTNEED), so memory follows the phase,
 * and a larger one faults in only what it adds. Nothing of this goes through malloc,
 * which would keep freed chunks (and glibc raises its mmap threshold to the largest chunk
 * freed). */
static size_t page_bytes(void)
{
	static const size_t fallback = 4096;
	const long p = sysconf(_SC_PAGESIZE);

	return p > 0 ? (size_t)p : fallback;
}

static size_t round_up(size_t n, size_t to)
{
	return (n + to - 1) / to * to;
}

int mime_gemm_weights_init(struct mime_gemm_weights *w, const struct mime_gemm_arch *a, int K_max,
                           int CRS_max)
{
	const size_t pg = page_bytes();
	const size_t panels = (size_t)((K_max + a->mr - 1) / a->mr), cols = panels * CRS_max;
	void *map;

	*w = (struct mime_gemm_weights){.mr = a->mr, .K_max = K_max, .CRS_max = CRS_max};
	if (K_max < 1 || CRS_max < 1 || cols > SIZE_MAX / 64 / (size_t)a->mr)
		return -EINVAL;
	w->off_live = round_up(sizeof(float) * cols * a->mr, pg);
	w->off_start = w->off_live + round_up(cols, pg);
	w->off_cols = w->off_start + round_up(sizeof(int64_t) * (panels + 1), pg);
	w->off_rows = w->off_cols + round_up(sizeof(int32_t) * cols, pg);
	w->map_bytes = w->off_rows + round_up((size_t)CRS_max, pg);
	map = mmap(NULL, w->map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED) {
		*w = (struct mime_gemm_weights){0};
		return -ENOMEM;
	}
	w->values = map; /* page aligned, so 64-byte aligned */
	return 0;
}

/* Region i of the storage ([off, end)) now uses its first used bytes: returns the pages
 * past them that an earlier packing touched to the system (one madvise, and only when
 * there are some: a system call is not free, least of all in a virtual machine). */
static void release_tail(struct mime_gemm_weights *w, int i, size_t off, size_t end, size_t used)
{
	const size_t pg = page_bytes(), from = off + round_up(used, pg);
	const size_t to = off + round_up(w->touched[i], pg);

	if (from < to && from < end)
		madvise((uint8_t *)w->values + from, (to < end ? to : end) - from,
		        MADV_DONTNEED); /* advice: errors ignored */
	w->touched[i] = used;
}

/* Points the arrays at the regions for a packing of K x CRS (nothing selected yet). */
static void place(struct mime_gemm_weights *w, int K, int CRS)
{
	w->K = K;
	w->CRS = CRS;
	w->start = (int64_t *)((uint8_t *)w->values + w->off_start);
	w->cols = (int32_t *)((uint8_t *)w->values + w->off_cols);
	w->live = NULL;
	w->n_live = 0;
	w->rows = NULL;
}

/* Releases what the packing leaves unused: values past its columns, live flags unless
 * selectable, index entries unless compact or indexed, rows unless indexed. */
static void release_unused(struct mime_gemm_weights *w)
{
	const size_t panels = (size_t)((w->K + w->mr - 1) / w->mr);
	const size_t stored =
		w->form == MIME_GEMM_COMPACT ? (size_t)w->n_cols : panels * (size_t)w->CRS;

	release_tail(w, 0, 0, w->off_live, sizeof(float) * stored * w->mr);
	release_tail(w, 1, w->off_live, w->off_start, w->live ? panels * w->CRS : 0);
	release_tail(w, 2, w->off_start, w->off_cols,
	             w->form == MIME_GEMM_DENSE ? 0 : sizeof(int64_t) * (panels + 1));
	release_tail(w, 3, w->off_cols, w->off_rows,
	             w->form == MIME_GEMM_DENSE ? 0 : sizeof(int32_t) * (size_t)w->n_cols);
	release_tail(w, 4, w->off_rows, w->map_bytes, w->rows ? (size_t)w->CRS : 0);
}

static int fits(const struct mime_gemm_weights *w, const struct mime_gemm_arch *a, int K, int CRS)
{
	return w->values && a->mr == w->mr && K >= 1 && CRS >= 1 && K <= w->K_max &&
	       CRS <= w->CRS_max;
}

static void pack(const struct wsrc *s, int sparse, struct mime_gemm_weights *w)
{
	const int mr = w->mr, K = s->K, CRS = s->CRS, panels = (K + mr - 1) / mr;
	float *v = w->values;
	int64_t n = 0;

	place(w, K, CRS);
	w->form = sparse ? MIME_GEMM_COMPACT : MIME_GEMM_DENSE;
	for (int p = 0; p < panels; p++) {
		const int k0 = p * mr;

		if (sparse)
			w->start[p] = n;
		for (int c = 0; c < CRS; c++) {
			if (sparse) {
				if (column_is_zero(s, k0, mr, c))
					continue;
				w->cols[n++] = c;
			}
			for (int r = 0; r < mr; r++)
				*v++ = wsrc_at(s, k0 + r, c);
		}
	}
	if (sparse)
		w->start[panels] = n;
	w->n_cols = sparse ? n : (int64_t)panels * CRS;
	release_unused(w);
}

int mime_gemm_weights_repack(struct mime_gemm_weights *w, const struct mime_gemm_arch *a,
                             const float *W, int64_t lda, int K, int CRS, const uint8_t *keep,
                             int wuv, int sparse)
{
	const struct wsrc s = {W, lda, K, CRS, keep, wuv > 0 ? wuv : 1};

	if (!fits(w, a, K, CRS) || (keep && wuv <= 0))
		return -EINVAL;
	pack(&s, sparse, w);
	return 0;
}

int mime_gemm_weights_pack(const struct mime_gemm_arch *a, const float *W, int K, int CRS,
                           int sparse, struct mime_gemm_weights *ret_weights)
{
	return mime_gemm_weights_pack_sub(a, W, CRS, K, CRS, NULL, 0, sparse, ret_weights);
}

int mime_gemm_weights_pack_sub(const struct mime_gemm_arch *a, const float *W, int64_t lda, int K,
                               int CRS, const uint8_t *keep, int wuv, int sparse,
                               struct mime_gemm_weights *ret_weights)
{
	struct mime_gemm_weights w;
	int r;

	if (keep && wuv <= 0)
		return -EINVAL;
	r = mime_gemm_weights_init(&w, a, K, CRS);
	if (r < 0)
		return r == -EINVAL ? -ENOMEM : r;
	r = mime_gemm_weights_repack(&w, a, W, lda, K, CRS, keep, wuv, sparse);
	if (r < 0) {
		mime_gemm_weights_free(&w);
		return r;
	}
	*ret_weights = w;
	return 0;
}

int64_t mime_gemm_zero_columns_sub(const struct mime_gemm_arch *a, const float *W, int64_t lda,
                                   int K, int CRS, const uint8_t *keep, int wuv)
{
	const struct wsrc s = {W, lda, K, CRS, keep, wuv > 0 ? wuv : 1};

	return zero_columns(&s, a->mr);
}

int mime_gemm_weights_repack_selectable(struct mime_gemm_weights *w, const struct mime_gemm_arch *a,
                                        const float *W, int64_t lda, int K, int CRS)
{
	const int mr = w->mr, panels = (K + mr - 1) / mr;
	float *v = w->values;

	if (!fits(w, a, K, CRS))
		return -EINVAL;
	place(w, K, CRS);
	w->live = (uint8_t *)w->values + w->off_live;
	/* Panel by panel: each source row read in order (a stream, not MR strided reads per
	 * column), the last panel padded with zeros, then the live flags from the panel while
	 * it is in cache. */
	for (int p = 0; p < panels; p++, v += (int64_t)CRS * mr) {
		const int k0 = p * mr, kn = K - k0 < mr ? K - k0 : mr;
		uint8_t *live = w->live + (int64_t)p * CRS;

		for (int r = 0; r < mr; r++) {
			const float *row = W + (int64_t)(k0 + r) * lda;

			if (r < kn)
				for (int c = 0; c < CRS; c++)
					v[(int64_t)c * mr + r] = row[c];
			else
				for (int c = 0; c < CRS; c++)
					v[(int64_t)c * mr + r] = 0.0f;
		}
		for (int c = 0; c < CRS; c++) {
			int nz = 0;

			for (int r = 0; r < mr; r++)
				nz |= v[(int64_t)c * mr + r] != 0.0f;
			live[c] = (uint8_t)nz;
			w->n_live += nz;
		}
	}
	w->form = MIME_GEMM_DENSE;
	w->n_cols = (int64_t)panels * CRS;
	release_unused(w);
	return 0;
}

int mime_gemm_weights_pack_selectable(const struct mime_gemm_arch *a, const float *W, int64_t lda,
                                      int K, int CRS, struct mime_gemm_weights *ret_weights)
{
	struct mime_gemm_weights w;
	int r = mime_gemm_weights_init(&w, a, K, CRS);

	if (r < 0)
		return r == -EINVAL ? -ENOMEM : r;
	r = mime_gemm_weights_repack_selectable(&w, a, W, lda, K, CRS);
	if (r < 0) {
		mime_gemm_weights_free(&w);
		return r;
	}
	*ret_weights = w;
	return 0;
}

int mime_gemm_weights_select(struct mime_gemm_weights *w, const uint8_t *keep, int wuv)
{
	const int mr = w->mr, CRS = w->CRS, panels = (w->K + mr - 1) / mr;
	const int64_t total = (int64_t)panels * CRS;
	int64_t n = 0;
	uint8_t *rows;

	if (!w->live || (keep && (wuv <= 0 || wuv % mr != 0)))
		return -EINVAL;
	if (!keep && 8 * (total - w->n_live) < total) {
		w->form = MIME_GEMM_DENSE; /* nothing worth selecting */
		w->n_cols = total;
		w->rows = NULL;
		return 0;
	}
	/* Branch-free: every column is written, the count advances only for those that run.
	 * A panel lies in one group row, as MR divides wuv. rows[c]: some panel runs column c
	 * (the patch rows mime_gemm_pack_b_rows must fill). */
	rows = (uint8_t *)w->values + w->off_rows;
	memset(rows, 0, (size_t)CRS);
	for (int p = 0; p < panels; p++) {
		const uint8_t *live = w->live + (int64_t)p * CRS;
		int32_t *cols = w->cols;

		w->start[p] = n;
		if (keep) {
			const uint8_t *kp = keep + (int64_t)(p * mr / wuv) * CRS;

			for (int c = 0; c < CRS; c++) {
				const uint8_t run = live[c] & (kp[c] != 0);

				cols[n] = c;
				n += run;
				rows[c] |= run;
			}
		} else {
			for (int c = 0; c < CRS; c++) {
				cols[n] = c;
				n += live[c];
				rows[c] |= live[c];
			}
		}
	}
	w->start[panels] = n;
	/* Dense only when what is left out is all zeros anyway (never a weight the mask
	 * prunes: the values are unmasked) and there is little of it. */
	if (n == w->n_live && 8 * (total - n) < total) {
		w->form = MIME_GEMM_DENSE;
		w->n_cols = total;
		w->rows = NULL;
	} else {
		w->form = MIME_GEMM_INDEXED;
		w->n_cols = n;
		w->rows = rows;
	}
	w->touched[4] = (size_t)CRS;
	/* What the index pages hold now (kept resident: the next fine switch reuses them). */
	if (w->touched[2] < sizeof(int64_t) * (size_t)(panels + 1))
		w->touched[2] = sizeof(int64_t) * (size_t)(panels + 1);
	if (w->touched[3] < sizeof(int32_t) * (size_t)(n < total ? n + 1 : total))
		w->touched[3] = sizeof(int32_t) * (size_t)(n < total ? n + 1 : total);
	return 0;
}

void mime_gemm_weights_free(struct mime_gemm_weights *w)
{
	if (w->values)
		munmap(w->values, w->map_bytes);
	*w = (struct mime_gemm_weights){0};
}

size_t mime_gemm_weights_bytes(const struct mime_gemm_weights *w)
{
	const size_t panels = w->mr ? (size_t)((w->K + w->mr - 1) / w->mr) : 0;
	const size_t stored =
		w->form == MIME_GEMM_COMPACT ? (size_t)w->n_cols : panels * (size_t)w->CRS;
	size_t n = sizeof(float) * stored * w->mr;

	if (w->live)
		n += panels * (size_t)w->CRS;
	if (w->form != MIME_GEMM_DENSE)
		n += sizeof(int64_t) * (panels + 1) + sizeof(int32_t) * (size_t)w->n_cols;
	return n;
}

size_t mime_gemm_packed_b_floats(const struct mime_gemm_arch *a, int CRS, int np)
{
	return (size_t)((np + a->nr - 1) / a->nr) * CRS * a->nr;
}

/* One run of a patch row: dst[0, lo) = 0, dst[lo, hi) = src_lo[0, hi - lo), dst[hi, seg) = 0. */
static void seg_copy(float *dst, const float *src_lo, int lo, int hi, int seg)
{
	for (int i = 0; i < lo; i++)
		dst[i] = 0.0f;
	memcpy(dst + lo, src_lo, sizeof(float) * (hi - lo));
	for (int i = hi; i < seg; i++)
		dst[i] = 0.0f;
}

#ifdef MIME_X86
/* The same for seg <= 32 without a call or a branch per part: an expand-load puts the
 * source run in lanes [lo, hi) with zeros around it (masked lanes are not read), one masked
 * store per 16 lanes. At 7x7 or 14x14 pixels the runs are a few floats long, and the calls
 * to memcpy / memset cost more than the copying. */
__attribute__((target("avx512f"))) static void seg_avx512(float *dst, const float *src_lo, int lo,
                                                          int hi, int seg)
{
	const uint32_t run = (uint32_t)((1ull << hi) - (1ull << lo));
	const uint32_t all = (uint32_t)((1ull << seg) - 1);

	_mm512_mask_storeu_ps(dst, (__mmask16)all,
	                      _mm512_maskz_expandloadu_ps((__mmask16)run, src_lo));
	if (seg > 16)
		_mm512_mask_storeu_ps(
			dst + 16, (__mmask16)(all >> 16),
			_mm512_maskz_expandloadu_ps((__mmask16)(run >> 16),
		                                    src_lo + __builtin_popcount(run & 0xffff)));
}
#endif

#ifdef MIME_X86
#define GATHER_MAX_K 16 /* kernel rows / columns the gathering packer handles */

/* Patch packing with gathers (AVX-512, NR = 32): per pixel panel, lane j is pixel p of
 * output row oh, column ow; for tap (c, kh, kw) it reads input (c, oh*stride - pad + kh,
 * ow*stride - pad + kw), one gather of 16 lanes at a time, lanes in the padding or past np
 * masked off (read as zero, never touched). One pass per row and panel instead of one per
 * run of pixels: at 7x7 outputs a run is 7 floats and the per-run work dominated. */
__attribute__((target("avx512f"))) static void pack_b_gather(const struct mime_conv_geom *g,
                                                             const float *in_sample, int p0, int np,
                                                             const uint8_t *rows, float *packed)
{
	const int CRS = g->c * g->r * g->s, panels = (np + 31) / 32;
	const int64_t plane = (int64_t)g->h * g->w;

	for (int pi = 0; pi < panels; pi++) {
		int32_t base[32] __attribute__((aligned(64)));
		uint32_t mrow[GATHER_MAX_K], mcol[GATHER_MAX_K];
		float *panel = packed + (int64_t)pi * CRS * 32;

		/* Per lane: the input offset of tap (0, 0), and which taps fall inside. */
		for (int kh = 0; kh < g->r; kh++)
			mrow[kh] = 0;
		for (int kw = 0; kw < g->s; kw++)
			mcol[kw] = 0;
		for (int l = 0; l < 32; l++) {
			const int j = pi * 32 + l, p = p0 + j;
			const int ih0 = (p / g->ow) * g->stride - g->pad;
			const int iw0 = (p % g->ow) * g->stride - g->pad;

			base[l] = ih0 * g->w + iw0;
			if (j >= np)
				continue;
			for (int kh = 0; kh < g->r; kh++)
				mrow[kh] |= (uint32_t)(ih0 + kh >= 0 && ih0 + kh < g->h) << l;
			for (int kw = 0; kw < g->s; kw++)
				mcol[kw] |= (uint32_t)(iw0 + kw >= 0 && iw0 + kw < g->w) << l;
		}
		{
			const __m512i b0 = _mm512_load_si512(base),
				      b1 = _mm512_load_si512(base + 16);

			for (int c = 0; c < g->c; c++)
				for (int kh = 0; kh < g->r; kh++)
					for (int kw = 0; kw < g->s; kw++) {
						const int row = (c * g->r + kh) * g->s + kw;
						const uint32_t m = mrow[kh] & mcol[kw];
						const float *src =
							in_sample + c * plane + kh * g->w + kw;
						float *dst = panel + (int64_t)row * 32;

						if (rows && !rows[row])
							continue; /* no panel runs this column */
						_mm512_store_ps(dst,
						                _mm512_mask_i32gather_ps(
									_mm512_setzero_ps(),
									(__mmask16)m, b0, src, 4));
						_mm512_store_ps(dst + 16,
						                _mm512_mask_i32gather_ps(
									_mm512_setzero_ps(),
									(__mmask16)(m >> 16), b1,
									src, 4));
					}
		}
	}
}
#endif

void mime_gemm_pack_b(const struct mime_gemm_arch *a, const struct mime_conv_geom *g,
                      const float *in_sample, int p0, int np, float *packed)
{
	mime_gemm_pack_b_rows(a, g, in_sample, p0, np, NULL, packed);
}

void mime_gemm_pack_b_rows(const struct mime_gemm_arch *a, const struct mime_conv_geom *g,
                           const float *in_sample, int p0, int np, const uint8_t *rows,
                           float *packed)
{
	const int nr = a->nr, CRS = g->c * g->r * g->s, oh0 = p0 / g->ow, ow0 = p0 % g->ow;
	const int64_t plane = (int64_t)g->h * g->w;

#ifdef MIME_X86
	/* Gathers pay for their per-panel set-up (per lane: a division, the tap masks) from a
	 * few dozen rows on; a first layer of 1-3 channels copies its long runs faster. */
	if (a->simd == MIME_SIMD_AVX512 && CRS >= 32 && g->r <= GATHER_MAX_K &&
	    g->s <= GATHER_MAX_K && plane < INT32_MAX / 2) {
		pack_b_gather(g, in_sample, p0, np, rows, packed);
		return;
	}
#endif
	/* Straight into the panels: each run of pixels that stays in one output row and one
	 * panel is one contiguous (stride 1) or strided read of an input row. */
	for (int c = 0; c < g->c; c++)
		for (int kh = 0; kh < g->r; kh++)
			for (int kw = 0; kw < g->s; kw++) {
				const int row = (c * g->r + kh) * g->s + kw;
				const float *src_plane = in_sample + c * plane;
				float *panel = packed + (int64_t)row * nr; /* pixel panel 0 */
				int oh = oh0, ow = ow0, lane = 0;

				if (rows && !rows[row])
					continue; /* no panel runs this column */
				/* j: pixel, lane = j % nr in panel j / nr, kept without dividing */
				for (int j = 0; j < np;) {
					float *dst = panel + lane;
					int seg = g->ow - ow, ih = oh * g->stride - g->pad + kh;
					int iw = ow * g->stride - g->pad + kw;

					if (seg > nr - lane)
						seg = nr - lane;
					if (seg > np - j)
						seg = np - j;
					if (ih < 0 || ih >= g->h) {
						for (int i = 0; i < seg; i++)
							dst[i] = 0.0f;
					} else {
						const float *src = src_plane + (int64_t)ih * g->w;

						if (g->stride == 1) {
							/* Padding on the left, a straight copy,
							 * padding on the right. */
							int lo = iw < 0 ? -iw : 0;
							int hi = g->w - iw < seg ? g->w - iw : seg;

							lo = lo > seg ? seg : lo;
							hi = hi < lo ? lo : hi;
#ifdef MIME_X86
							if (a->simd == MIME_SIMD_AVX512)
								seg_avx512(dst, src + iw + lo, lo,
								           hi, seg);
							else
#endif
								seg_copy(dst, src + iw + lo, lo, hi,
								         seg);
						} else {
							for (int i = 0; i < seg;
							     i++, iw += g->stride)
								dst[i] = (iw >= 0 && iw < g->w)
								                 ? src[iw]
								                 : 0.0f;
						}
					}
					j += seg;
					ow += seg;
					lane += seg;
					if (lane == nr) {
						lane = 0;
						panel += (int64_t)CRS * nr;
					}
					if (ow == g->ow) {
						ow = 0;
						oh++;
					}
				}
			}
	/* Zero the lanes past np in the last panel. */
	if (np % nr) {
		float *last = packed + (int64_t)(np / nr) * CRS * nr;

		for (int r = 0; r < CRS; r++)
			for (int l = np % nr; l < nr; l++)
				last[(int64_t)r * nr + l] = 0.0f;
	}
}

/* Microkernels: tile[MR][NR] = sum over i < n of a[x][r] * b[x][j], i in increasing order,
 * x = cols[i] (or i when cols is NULL, dense); a is read at row i (compact: its columns are
 * stored in order) or, with ia set (indexed), at row x like b. */

static void ukr_scalar(int n, const float *a, const float *b, const int32_t *cols, int ia,
                       float *tile)
{
	float acc[4][8] = {{0}};

	for (int i = 0; i < n; i++) {
		const int64_t x = cols ? cols[i] : i;
		const float *bb = b + x * 8, *ai = a + (ia ? x : i) * 4;

		for (int r = 0; r < 4; r++)
			for (int j = 0; j < 8; j++)
				acc[r][j] = fmaf(ai[r], bb[j], acc[r][j]);
	}
	memcpy(tile, acc, sizeof(acc));
}

#ifdef MIME_X86
/* The kernels are written out by hand so the accumulators stay in registers at -O2. Each is
 * one always-inline body instantiated three times: dense (cols == NULL, the compiler drops
 * the index), compact (b row = cols[i]) and indexed (a and b rows = cols[i]). */
#define ROW2(r, LOADA, FMA)                                                                        \
	do {                                                                                       \
		const VEC ar = LOADA(ai + (r));                                                    \
		c##r##0 = FMA(ar, b0, c##r##0);                                                    \
		c##r##1 = FMA(ar, b1, c##r##1);                                                    \
	} while (0)
#define STORE2(r, STORE, W)                                                                        \
	do {                                                                                       \
		STORE(tile + (r)*2 * (W), c##r##0);                                                \
		STORE(tile + (r)*2 * (W) + (W), c##r##1);                                          \
	} while (0)

#define VEC __m256
__attribute__((target("avx2,fma"), always_inline)) static inline void
ukr_avx2_body(int n, const float *a, const float *b, const int32_t *cols, int ia, float *tile)
{
	__m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
	__m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;

	for (int i = 0; i < n; i++) {
		const int64_t x = cols ? cols[i] : i;
		const float *bb = b + x * 16, *ai = a + (ia ? x : i) * 6;
		const __m256 b0 = _mm256_load_ps(bb), b1 = _mm256_load_ps(bb + 8);

		ROW2(0, _mm256_broadcast_ss, _mm256_fmadd_ps);
		ROW2(1, _mm256_broadcast_ss, _mm256_fmadd_ps);
		ROW2(2, _mm256_broadcast_ss, _mm256_fmadd_ps);
		ROW2(3, _mm256_broadcast_ss, _mm256_fmadd_ps);
		ROW2(4, _mm256_broadcast_ss, _mm256_fmadd_ps);
		ROW2(5, _mm256_broadcast_ss, _mm256_fmadd_ps);
	}
	STORE2(0, _mm256_store_ps, 8);
	STORE2(1, _mm256_store_ps, 8);
	STORE2(2, _mm256_store_ps, 8);
	STORE2(3, _mm256_store_ps, 8);
	STORE2(4, _mm256_store_ps, 8);
	STORE2(5, _mm256_store_ps, 8);
}
#undef VEC

__attribute__((target("avx2,fma"))) static void ukr_avx2(int n, const float *a, const float *b,
                                                         const int32_t *cols, int ia, float *tile)
{
	if (!cols)
		ukr_avx2_body(n, a, b, NULL, 0, tile);
	else if (ia)
		ukr_avx2_body(n, a, b, cols, 1, tile);
	else
		ukr_avx2_body(n, a, b, cols, 0, tile);
}

#define VEC __m512
__attribute__((target("avx512f"), always_inline)) static inline __m512 bcast512(const float *p)
{
	return _mm512_set1_ps(*p);
}

__attribute__((target("avx512f"), always_inline)) static inline void
ukr_avx512_body(int n, const float *a, const float *b, const int32_t *cols, int ia, float *tile)
{
	__m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
	__m512 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00;
	__m512 c61 = c00, c70 = c00, c71 = c00;

	for (int i = 0; i < n; i++) {
		const int64_t x = cols ? cols[i] : i;
		const float *bb = b + x * 32, *ai = a + (ia ? x : i) * 8;
		const __m512 b0 = _mm512_load_ps(bb), b1 = _mm512_load_ps(bb + 16);

		ROW2(0, bcast512, _mm512_fmadd_ps);
		ROW2(1, bcast512, _mm512_fmadd_ps);
		ROW2(2, bcast512, _mm512_fmadd_ps);
		ROW2(3, bcast512, _mm512_fmadd_ps);
		ROW2(4, bcast512, _mm512_fmadd_ps);
		ROW2(5, bcast512, _mm512_fmadd_ps);
		ROW2(6, bcast512, _mm512_fmadd_ps);
		ROW2(7, bcast512, _mm512_fmadd_ps);
	}
	STORE2(0, _mm512_store_ps, 16);
	STORE2(1, _mm512_store_ps, 16);
	STORE2(2, _mm512_store_ps, 16);
	STORE2(3, _mm512_store_ps, 16);
	STORE2(4, _mm512_store_ps, 16);
	STORE2(5, _mm512_store_ps, 16);
	STORE2(6, _mm512_store_ps, 16);
	STORE2(7, _mm512_store_ps, 16);
}
#undef VEC

__attribute__((target("avx512f"))) static void ukr_avx512(int n, const float *a, const float *b,
                                                          const int32_t *cols, int ia, float *tile)
{
	if (!cols)
		ukr_avx512_body(n, a, b, NULL, 0, tile);
	else if (ia)
		ukr_avx512_body(n, a, b, cols, 1, tile);
	else
		ukr_avx512_body(n, a, b, cols, 0, tile);
}

/* The conv epilogue on a 8 x 32 tile with AVX-512: bias, mask, zero count, masked stores. */
__attribute__((target("avx512f"))) static int64_t
epilogue_avx512(const float *tile, int kn, int jn, int k0, int j0, int p0, int P, const float *bias,
                const struct mime_mask_ref *mask, int apply_mask, float *out)
{
	const __mmask16 m0 = jn >= 16 ? 0xffff : (__mmask16)((1u << jn) - 1);
	const __mmask16 m1 = jn <= 16 ? 0 : jn >= 32 ? 0xffff : (__mmask16)((1u << (jn - 16)) - 1);
	const __m512 zero = _mm512_setzero_ps();
	int64_t zeros = 0;

	for (int r = 0; r < kn; r++) {
		const int k = k0 + r;
		const __m512 bk = _mm512_set1_ps(bias ? bias[k] : 0.0f);
		__m512 y0 = _mm512_add_ps(_mm512_load_ps(tile + r * 32), bk);
		__m512 y1 = _mm512_add_ps(_mm512_load_ps(tile + r * 32 + 16), bk);
		float *o = out + (int64_t)k * P + p0 + j0;

		if (apply_mask) {
			__m512 t0, t1;

			if (!mask->thr || mask->granularity == MIME_THR_CHANNEL) {
				t0 = t1 = _mm512_set1_ps(mask->thr ? mask->thr[k] : 0.0f);
			} else {
				const float *th = mask->thr + (int64_t)k * P + p0 + j0;

				t0 = _mm512_maskz_loadu_ps(m0, th);
				t1 = _mm512_maskz_loadu_ps(m1, th + 16);
			}
			y0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y0, t0, _CMP_GE_OQ), y0);
			y1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y1, t1, _CMP_GE_OQ), y1);
			zeros += __builtin_popcount(
					 _mm512_mask_cmp_ps_mask(m0, y0, zero, _CMP_EQ_OQ)) +
			         __builtin_popcount(
					 _mm512_mask_cmp_ps_mask(m1, y1, zero, _CMP_EQ_OQ));
		}
		_mm512_mask_storeu_ps(o, m0, y0);
		_mm512_mask_storeu_ps(o + 16, m1, y1);
	}
	return zeros;
}
#endif

#ifdef MIME_NEON
/* 8 kernels x 8 pixels: 16 accumulators of 4 floats (of 32 NEON registers). */
static void ukr_neon(int n, const float *a, const float *b, const int32_t *cols, int ia,
                     float *tile)
{
	float32x4_t c[8][2];

	for (int r = 0; r < 8; r++)
		c[r][0] = c[r][1] = vdupq_n_f32(0.0f);
	for (int i = 0; i < n; i++) {
		const int64_t x = cols ? cols[i] : i;
		const float *bb = b + x * 8, *ai = a + (ia ? x : i) * 8;
		const float32x4_t b0 = vld1q_f32(bb), b1 = vld1q_f32(bb + 4);
		const float32x4_t a0 = vld1q_f32(ai), a1 = vld1q_f32(ai + 4);

		c[0][0] = vfmaq_laneq_f32(c[0][0], b0, a0, 0);
		c[0][1] = vfmaq_laneq_f32(c[0][1], b1, a0, 0);
		c[1][0] = vfmaq_laneq_f32(c[1][0], b0, a0, 1);
		c[1][1] = vfmaq_laneq_f32(c[1][1], b1, a0, 1);
		c[2][0] = vfmaq_laneq_f32(c[2][0], b0, a0, 2);
		c[2][1] = vfmaq_laneq_f32(c[2][1], b1, a0, 2);
		c[3][0] = vfmaq_laneq_f32(c[3][0], b0, a0, 3);
		c[3][1] = vfmaq_laneq_f32(c[3][1], b1, a0, 3);
		c[4][0] = vfmaq_laneq_f32(c[4][0], b0, a1, 0);
		c[4][1] = vfmaq_laneq_f32(c[4][1], b1, a1, 0);
		c[5][0] = vfmaq_laneq_f32(c[5][0], b0, a1, 1);
		c[5][1] = vfmaq_laneq_f32(c[5][1], b1, a1, 1);
		c[6][0] = vfmaq_laneq_f32(c[6][0], b0, a1, 2);
		c[6][1] = vfmaq_laneq_f32(c[6][1], b1, a1, 2);
		c[7][0] = vfmaq_laneq_f32(c[7][0], b0, a1, 3);
		c[7][1] = vfmaq_laneq_f32(c[7][1], b1, a1, 3);
	}
	for (int r = 0; r < 8; r++) {
		vst1q_f32(tile + r * 8, c[r][0]);
		vst1q_f32(tile + r * 8 + 4, c[r][1]);
	}
}
#endif

/* The conv epilogue of one tile (row r at tile + r * nr, kernels k0 .. k0 + kn - 1, pixels
 * j0 .. j0 + jn - 1 of the chunk at p0): bias, mask, zero count, store. */
static int64_t tile_epilogue(const struct mime_gemm_arch *a, const float *tile, int kn, int jn,
                             int k0, int j0, int p0, int P, const float *bias,
                             const struct mime_mask_ref *mask, int apply_mask, float *out_sample)
{
	const int nr = a->nr;
	int64_t zeros = 0;

#ifdef MIME_X86
	if (a->simd == MIME_SIMD_AVX512)
		return epilogue_avx512(tile, kn, jn, k0, j0, p0, P, bias, mask, apply_mask,
		                       out_sample);
#endif
	for (int r = 0; r < kn; r++) {
		const int k = k0 + r;
		const float bk = bias ? bias[k] : 0.0f;
		const float *t = tile + r * nr;
		float *o = out_sample + (int64_t)k * P + p0 + j0;

		if (!apply_mask) {
			for (int j = 0; j < jn; j++)
				o[j] = t[j] + bk;
		} else if (!mask->thr || mask->granularity == MIME_THR_CHANNEL) {
			const float th = mask->thr ? mask->thr[k] : 0.0f;
			int z = 0;

			for (int j = 0; j < jn; j++) {
				const float y = t[j] + bk, v = y >= th ? y : 0.0f;

				o[j] = v;
				z += v == 0.0f;
			}
			zeros += z;
		} else {
			const float *th = mask->thr + (int64_t)k * P + p0 + j0;
			int z = 0;

			for (int j = 0; j < jn; j++) {
				const float y = t[j] + bk, v = y >= th[j] ? y : 0.0f;

				o[j] = v;
				z += v == 0.0f;
			}
			zeros += z;
		}
	}
	return zeros;
}

int64_t mime_gemm_conv(const struct mime_gemm_arch *a, const struct mime_gemm_weights *w,
                       const float *packed_b, int np, int p0, int P, const float *bias,
                       const struct mime_mask_ref *mask, int apply_mask, float *out_sample)
{
	const int mr = a->mr, nr = a->nr, K = w->K, CRS = w->CRS;
	float tile[MAX_MR * MAX_NR] __attribute__((aligned(64)));
	int64_t zeros = 0;

	for (int k0 = 0; k0 < K; k0 += mr) {
		const int p = k0 / mr, ia = w->form == MIME_GEMM_INDEXED;
		const int64_t c0 = w->form == MIME_GEMM_DENSE ? (int64_t)p * CRS : w->start[p];
		const int n = (int)(w->form == MIME_GEMM_DENSE ? CRS : w->start[p + 1] - c0);
		const float *ap = w->values + (ia ? (int64_t)p * CRS : c0) * mr;
		const int32_t *cols = w->form == MIME_GEMM_DENSE ? NULL : w->cols + c0;
		const int kn = K - k0 < mr ? K - k0 : mr;

		for (int j0 = 0; j0 < np; j0 += nr) {
			const float *bp = packed_b + (int64_t)(j0 / nr) * CRS * nr;
			const int jn = np - j0 < nr ? np - j0 : nr;

			switch (a->simd) {
#ifdef MIME_X86
			case MIME_SIMD_AVX512:
				ukr_avx512(n, ap, bp, cols, ia, tile);
				break;
			case MIME_SIMD_AVX2:
				ukr_avx2(n, ap, bp, cols, ia, tile);
				break;
#endif
#ifdef MIME_NEON
			case MIME_SIMD_NEON:
				ukr_neon(n, ap, bp, cols, ia, tile);
				break;
#endif
			default:
				ukr_scalar(n, ap, bp, cols, ia, tile);
				break;
			}
			/* Epilogue while the tile is hot. */
			zeros += tile_epilogue(a, tile, kn, jn, k0, j0, p0, P, bias, mask,
			                       apply_mask, out_sample);
		}
	}
	return zeros;
}

/* ---- The input-sparse form (see gemm.h) ---- */

#define ACT_KV    16 /* kv is K rounded up to this */
#define ACT_MAXW  32 /* padded input row width the row masks hold */
#define ACT_MAXRS 16 /* R*S: the taps of one channel fit one vector */

int mime_gemm_tweights_init(struct mime_gemm_tweights *t, int K_max, int CRS_max, int rs)
{
	const size_t pg = page_bytes();
	const size_t kv = (size_t)(K_max + ACT_KV - 1) / ACT_KV * ACT_KV;
	void *map;

	*t = (struct mime_gemm_tweights){.K_max = K_max, .CRS_max = CRS_max, .rs = rs};
	if (K_max < 1 || CRS_max < 1 || rs < 1 || rs > ACT_MAXRS || CRS_max % rs ||
	    kv > SIZE_MAX / 8 / (size_t)CRS_max)
		return -EINVAL;
	t->off_live = round_up(sizeof(float) * kv * CRS_max, pg);
	t->off_held = t->off_live + round_up(sizeof(uint32_t) * (size_t)(CRS_max / rs), pg);
	t->off_row = t->off_held + round_up((size_t)K_max * CRS_max, pg); /* panels <= K */
	t->map_bytes = t->off_row + round_up(2 * (size_t)CRS_max, pg);
	map = mmap(NULL, t->map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED) {
		*t = (struct mime_gemm_tweights){0};
		return -ENOMEM;
	}
	t->values = map;
	t->live = (uint32_t *)((uint8_t *)map + t->off_live);
	t->held = (uint8_t *)map + t->off_held;
	t->row = (uint8_t *)map + t->off_row;
	t->dirty = t->row + CRS_max;
	return 0;
}

/* live bit of row r of W^T (r = c * rs + q) from its values. */
static void tweights_live_row(struct mime_gemm_tweights *t, int r)
{
	const float *v = t->values + (int64_t)r * t->kv;
	const uint32_t bit = 1u << (r % t->rs);
	int nz = 0;

	for (int k = 0; k < t->K; k++)
		nz |= v[k] != 0.0f;
	if (nz)
		t->live[r / t->rs] |= bit;
	else
		t->live[r / t->rs] &= ~bit;
}

/* The columns panel p of w runs, as flags row[0, CRS). */
static void run_flags(const struct mime_gemm_weights *w, int p, uint8_t *row)
{
	if (w->form == MIME_GEMM_DENSE) {
		memset(row, 1, (size_t)w->CRS);
		return;
	}
	memset(row, 0, (size_t)w->CRS);
	for (int64_t i = w->start[p]; i < w->start[p + 1]; i++)
		row[w->cols[i]] = 1;
}

int mime_gemm_tweights_update(struct mime_gemm_tweights *t, const struct mime_gemm_weights *w)
{
	const int mr = w->mr, K = w->K, CRS = w->CRS, panels = (K + mr - 1) / mr;

	if (!t->values || w->form == MIME_GEMM_COMPACT || K != t->K || CRS != t->CRS)
		return -EINVAL;
	memset(t->dirty, 0, (size_t)CRS);
	for (int p = 0; p < panels; p++) {
		const int k0 = p * mr, kn = K - k0 < mr ? K - k0 : mr;
		uint8_t *held = t->held + (int64_t)p * CRS;

		run_flags(w, p, t->row);
		for (int c = 0; c < CRS; c++) {
			const float *src = w->values + ((int64_t)p * CRS + c) * mr;
			float *dst = t->values + (int64_t)c * t->kv + k0;

			if (t->row[c] == held[c])
				continue;
			for (int r = 0; r < kn; r++)
				dst[r] = t->row[c] ? src[r] : 0.0f;
			held[c] = t->row[c];
			t->dirty[c] = 1;
		}
	}
	for (int c = 0; c < CRS; c++)
		if (t->dirty[c])
			tweights_live_row(t, c);
	return 0;
}

int mime_gemm_tweights_build(struct mime_gemm_tweights *t, const struct mime_gemm_weights *w)
{
	const int mr = w->mr, K = w->K, CRS = w->CRS, panels = (K + mr - 1) / mr;
	const int kv = (K + ACT_KV - 1) / ACT_KV * ACT_KV;
	size_t used;

	if (!t->values || K > t->K_max || CRS > t->CRS_max || CRS % t->rs)
		return -EINVAL;
	t->K = K;
	t->CRS = CRS;
	t->kv = kv;
	if (w->form == MIME_GEMM_DENSE) /* every [c][0, K) is written below: the padding */
		for (int c = 0; c < CRS; c++)
			memset(t->values + (int64_t)c * kv + K, 0,
			       sizeof(float) * (size_t)(kv - K));
	else
		memset(t->values, 0, sizeof(float) * (size_t)kv * CRS);
	/* The columns w runs, panel by panel: W^T[c][p*mr + r] = panel p's column c, row r
	 * (kernels past K are zero in the panel and lie past K here, in the padding). */
	for (int p = 0; p < panels; p++) {
		const int k0 = p * mr, kn = K - k0 < mr ? K - k0 : mr;
		int64_t i0 = 0, i1 = CRS;

		run_flags(w, p, t->held + (int64_t)p * CRS);
		if (w->form != MIME_GEMM_DENSE) {
			i0 = w->start[p];
			i1 = w->start[p + 1];
		}
		for (int64_t i = i0; i < i1; i++) {
			const int c = w->form == MIME_GEMM_DENSE ? (int)i : w->cols[i];
			const float *src = w->form == MIME_GEMM_COMPACT
			                           ? w->values + i * mr
			                           : w->values + ((int64_t)p * CRS + c) * mr;
			float *dst = t->values + (int64_t)c * kv + k0;

			for (int r = 0; r < kn; r++)
				dst[r] = src[r];
		}
	}
	for (int c = 0; c < CRS / t->rs; c++) {
		uint32_t bits = 0;

		for (int q = 0; q < t->rs; q++) {
			const float *row = t->values + (int64_t)(c * t->rs + q) * kv;
			int nz = 0;

			for (int k = 0; k < K; k++)
				nz |= row[k] != 0.0f;
			bits |= (uint32_t)nz << q;
		}
		t->live[c] = bits;
	}
	/* The pages stay resident (a smaller build uses a prefix): faulting them back in after
	 * a release made a coarse step up cost milliseconds here (bench/RESULTS.md). */
	used = sizeof(float) * (size_t)kv * CRS;
	if (used > t->touched)
		t->touched = used;
	return 0;
}

void mime_gemm_tweights_free(struct mime_gemm_tweights *t)
{
	if (t->values)
		munmap(t->values, t->map_bytes);
	*t = (struct mime_gemm_tweights){0};
}

void mime_gemm_tweights_release(struct mime_gemm_tweights *t)
{
	if (!t->values)
		return;
	if (t->touched)
		madvise(t->values, round_up(t->touched, page_bytes()),
		        MADV_DONTNEED); /* advice: errors ignored */
	t->touched = 0;
	t->K = 0;
	t->CRS = 0;
}

size_t mime_gemm_tweights_bytes(const struct mime_gemm_tweights *t)
{
	return t->values ? t->touched + sizeof(uint32_t) * (size_t)(t->CRS_max / t->rs) : 0;
}

int mime_gemm_act_supported(const struct mime_conv_geom *g)
{
	return g->stride == 1 && g->r * g->s <= ACT_MAXRS && g->w + 2 * g->pad <= ACT_MAXW &&
	       g->oh == g->h + 2 * g->pad - g->r + 1 && g->ow == g->w + 2 * g->pad - g->s + 1;
}

/* Pixels are taken in groups of up to ACT_NP consecutive pixels of one output row: one
 * list of the weight rows any of them needs (c*R*S ascending), each entry an FMA of the
 * row into every pixel's accumulators with that pixel's input (0 where only the others need
 * the row: 0 * w adds nothing). A group shares each weight load and each list entry among
 * its pixels; the union of their windows costs FMAs: 4 measured best (bench_sparse). */
#ifndef ACT_NP
#define ACT_NP 4
#endif

/* Scratch: a header; the padded row masks [rows][Cp] (Cp = C rounded up to 16; bit x of
 * entry (y, c): the padded input of channel c at (y0 + y, x) is nonzero); a zero-padded copy
 * of those input rows [C][rows][wp] (+ slack for the pixels of a short group, which are
 * computed and dropped); the list of a group (offsets into W^T, offsets into the copy, + 16
 * of slack for whole-vector stores); the accumulators of a panel of NR pixels
 * [NR + ACT_NP][kv] (a group's dropped pixels past the panel included); the tile [kv][NR]
 * the epilogue reads. */
struct act_scratch {
	int y0, rows, wp, cp; /* padded rows [y0, y0 + rows) are held, wp floats per row */
	int64_t masks_at, xpad_at, woffs_at, xoffs_at, acc_at, tile_at, end;
};

static size_t align64(size_t n)
{
	return (n + 63) / 64 * 64;
}

static void act_layout(const struct mime_gemm_arch *a, const struct mime_conv_geom *g, int K,
                       struct act_scratch *ret)
{
	const size_t kv = (size_t)(K + ACT_KV - 1) / ACT_KV * ACT_KV;
	const size_t rows = (size_t)(g->h + 2 * g->pad), wp = (size_t)(g->w + 2 * g->pad);
	const size_t crs = (size_t)g->c * g->r * g->s, cp = (size_t)(g->c + 15) / 16 * 16;

	ret->masks_at = (int64_t)align64(sizeof(struct act_scratch));
	ret->xpad_at = ret->masks_at + (int64_t)align64(sizeof(uint32_t) * cp * rows);
	ret->woffs_at =
		ret->xpad_at + (int64_t)align64(sizeof(float) * (g->c * rows * wp + ACT_NP + 64));
	ret->xoffs_at = ret->woffs_at + (int64_t)align64(sizeof(int32_t) * (crs + 16));
	ret->acc_at = ret->xoffs_at + (int64_t)align64(sizeof(int32_t) * (crs + 16));
	ret->tile_at = ret->acc_at + (int64_t)align64(sizeof(float) * kv * (a->nr + ACT_NP));
	ret->end = ret->tile_at + (int64_t)align64(sizeof(float) * kv * a->nr);
}

size_t mime_gemm_act_scratch_bytes(const struct mime_gemm_arch *a, const struct mime_conv_geom *g,
                                   int K)
{
	struct act_scratch l;

	act_layout(a, g, K, &l);
	return (size_t)l.end;
}

#ifdef MIME_X86
/* One padded row (wp <= 32 floats) of the copy with AVX-512: masked loads put input x in
 * lane pad + x and zeros around it (lanes outside [pad, pad + w) are not read); the nonzero
 * lanes are the row's mask bits. */
__attribute__((target("avx512f"), always_inline)) static inline uint32_t
act_row_avx512(const float *row, int w, int pad, int wp, float *xr)
{
	const uint32_t run = (uint32_t)(((1ull << w) - 1) << pad);
	const uint32_t all = (uint32_t)((1ull << wp) - 1);
	const __m512 zero = _mm512_setzero_ps();
	const float *base = (const float *)((uintptr_t)row - sizeof(float) * (size_t)pad);
	const __m512 v0 = _mm512_maskz_loadu_ps((__mmask16)run, base);
	uint32_t bits;

	_mm512_mask_storeu_ps(xr, (__mmask16)all, v0);
	bits = _mm512_cmp_ps_mask(v0, zero, _CMP_NEQ_UQ);
	if (wp > 16) {
		const __m512 v1 = _mm512_maskz_loadu_ps((__mmask16)(run >> 16), base + 16);

		_mm512_mask_storeu_ps(xr + 16, (__mmask16)(all >> 16), v1);
		bits |= (uint32_t)_mm512_cmp_ps_mask(v1, zero, _CMP_NEQ_UQ) << 16;
	}
	return bits;
}
#endif

#ifdef MIME_X86
/* The rows [y0, y1) of every channel (the loop of mime_gemm_act_density, in one function so
 * that the row copies inline: a call per row cost as much as the row). Returns the nonzero
 * count. */
__attribute__((target("avx512f"))) static int64_t act_rows_avx512(const struct mime_conv_geom *g,
                                                                  const float *in_sample, int y0,
                                                                  int y1, int cp, int rows, int wp,
                                                                  uint32_t *masks, float *xpad)
{
	const int plane = g->h * g->w;
	int64_t nz = 0;

	for (int c = 0; c < g->c; c++) {
		float *xc = xpad + (int64_t)c * rows * wp;

		for (int y = y0; y < y1; y++) {
			const int ih = y - g->pad;
			float *xr = xc + (int64_t)(y - y0) * wp;
			uint32_t bits = 0;

			if (ih >= 0 && ih < g->h)
				bits = act_row_avx512(in_sample + (int64_t)c * plane +
				                              (int64_t)ih * g->w,
				                      g->w, g->pad, wp, xr);
			else
				act_row_avx512(in_sample, 0, 0, wp, xr); /* zeros, nothing read */
			masks[(int64_t)(y - y0) * cp + c] = bits;
			nz += __builtin_popcount(bits);
		}
	}
	return nz;
}
#endif

double mime_gemm_act_density(const struct mime_gemm_arch *a, const struct mime_conv_geom *g,
                             const float *in_sample, int p0, int np, void *scratch)
{
	struct act_scratch *h = scratch;
	const int H = g->h + 2 * g->pad, wp = g->w + 2 * g->pad, plane = g->h * g->w;
	const int y0 = p0 / g->ow, y1r = (p0 + np - 1) / g->ow + g->r; /* padded rows read */
	const int y1 = y1r < H ? y1r : H, cp = (g->c + 15) / 16 * 16;
	uint32_t *masks;
	float *xpad;
	int64_t nz = 0, n = 0;

	act_layout(a, g, 1, h); /* offsets up to xpad do not depend on K */
	masks = (uint32_t *)((uint8_t *)scratch + h->masks_at);
	xpad = (float *)((uint8_t *)scratch + h->xpad_at);
	h->y0 = y0;
	h->rows = y1 - y0;
	h->wp = wp;
	h->cp = cp;
	memset(masks, 0, sizeof(uint32_t) * (size_t)cp * h->rows);
	for (int y = y0; y < y1; y++)
		n += y - g->pad >= 0 && y - g->pad < g->h ? (int64_t)g->c * g->w : 0;
#ifdef MIME_X86
	if (a->simd == MIME_SIMD_AVX512) {
		nz = act_rows_avx512(g, in_sample, y0, y1, cp, h->rows, wp, masks, xpad);
		goto slack;
	}
#endif
	for (int c = 0; c < g->c; c++) {
		float *xc = xpad + (int64_t)c * h->rows * wp;

		for (int y = y0; y < y1; y++) {
			const int ih = y - g->pad;
			float *xr = xc + (int64_t)(y - y0) * wp;
			uint32_t bits = 0;

			if (ih < 0 || ih >= g->h) {
				memset(xr, 0, sizeof(float) * wp);
				continue;
			}
			{
				const float *row =
					in_sample + (int64_t)c * plane + (int64_t)ih * g->w;

				for (int x = 0; x < g->pad; x++)
					xr[x] = xr[wp - 1 - x] = 0.0f;
				memcpy(xr + g->pad, row, sizeof(float) * g->w);
				for (int x = 0; x < g->w; x++)
					bits |= (uint32_t)(row[x] != 0.0f) << x;
				bits <<= g->pad;
			}
			masks[(int64_t)(y - y0) * cp + c] = bits;
			nz += __builtin_popcount(bits);
		}
	}
#ifdef MIME_X86
slack:
#endif
	/* The slack the last short group reads past the copy (values never used). */
	for (int i = 0; i < ACT_NP + 64; i++)
		xpad[(int64_t)g->c * h->rows * wp + i] = 0.0f;
	return n ? (double)nz / (double)n : 1.0;
}

/* The list of the group of gn pixels from output (oh, ow): for every channel c, the window
 * bits q (tap q = kh * S + kw) where some pixel's input is nonzero and the weight row
 * c*R*S + q is live; entries woffs = that row's offset in W^T, xoffs = the first pixel's
 * input in the copy. Returns the number of entries. */
static int act_list(const struct act_scratch *h, const uint32_t *masks, const uint32_t *live,
                    const struct mime_conv_geom *g, int kv, const int32_t *tap, int oh, int ow,
                    int gn, int32_t *woffs, int32_t *xoffs)
{
	const int R = g->r, S = g->s, rs = R * S, cs = h->rows * h->wp;
	const uint32_t smask = (1u << S) - 1;
	const uint32_t *m = masks + (int64_t)(oh - h->y0) * h->cp;
	const int32_t xbase = (oh - h->y0) * h->wp + ow;
	int n = 0;

	for (int c = 0; c < g->c; c++) {
		uint32_t win = 0;

		for (int kh = 0; kh < R; kh++) {
			const uint32_t rb = m[kh * h->cp + c] >> ow;
			uint32_t u = rb;

			for (int q = 1; q < gn; q++)
				u |= rb >> q;
			win |= (u & smask) << (kh * S);
		}
		win &= live[c];
		while (win) {
			const int q = __builtin_ctz(win);

			win &= win - 1;
			woffs[n] = (c * rs + q) * kv;
			xoffs[n] = c * cs + xbase + tap[q];
			n++;
		}
	}
	return n;
}

#ifdef MIME_X86
/* The same, 16 channels at a time: the windows in one vector, then each nonzero window's
 * entries compressed out of a vector of its R*S taps (rs <= 16). */
__attribute__((target("avx512f"))) static int
act_list_avx512(const struct act_scratch *h, const uint32_t *masks, const uint32_t *live,
                const struct mime_conv_geom *g, int kv, const int32_t *tap, int oh, int ow, int gn,
                int32_t *woffs, int32_t *xoffs)
{
	const int R = g->r, S = g->s, rs = R * S, cs = h->rows * h->wp;
	const uint32_t *m = masks + (int64_t)(oh - h->y0) * h->cp;
	const __m512i smask = _mm512_set1_epi32((1 << S) - 1);
	const __m128i sh = _mm_cvtsi32_si128(ow);
	const __m512i lanes =
		_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	const __m512i qkv = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(kv));
	const __m512i taps = _mm512_maskz_loadu_epi32((__mmask16)((1u << rs) - 1), tap);
	const int32_t xbase = (oh - h->y0) * h->wp + ow;
	uint32_t wins[16] __attribute__((aligned(64)));
	int n = 0;

	for (int c0 = 0; c0 < g->c; c0 += 16) {
		const __mmask16 valid =
			g->c - c0 >= 16 ? 0xffff : (__mmask16)((1u << (g->c - c0)) - 1);
		__m512i win = _mm512_setzero_si512();
		__mmask16 nz;

		for (int kh = 0; kh < R; kh++) {
			const __m512i rb =
				_mm512_srl_epi32(_mm512_load_si512(m + kh * h->cp + c0), sh);
			__m512i u = rb;

			for (int q = 1; q < gn; q++)
				u = _mm512_or_si512(u, _mm512_srl_epi32(rb, _mm_cvtsi32_si128(q)));
			win = _mm512_or_si512(win, _mm512_sll_epi32(_mm512_and_si512(u, smask),
			                                            _mm_cvtsi32_si128(kh * S)));
		}
		win = _mm512_maskz_and_epi32(valid, win,
		                             _mm512_maskz_loadu_epi32(valid, live + c0));
		nz = _mm512_test_epi32_mask(win, win);
		if (!nz)
			continue;
		_mm512_store_si512(wins, win);
		while (nz) {
			const int l = __builtin_ctz(nz), c = c0 + l;
			const __mmask16 w = (__mmask16)wins[l];

			nz &= (__mmask16)(nz - 1);
			_mm512_storeu_si512(
				woffs + n,
				_mm512_maskz_compress_epi32(
					w, _mm512_add_epi32(qkv, _mm512_set1_epi32(c * rs * kv))));
			_mm512_storeu_si512(
				xoffs + n,
				_mm512_maskz_compress_epi32(
					w,
					_mm512_add_epi32(taps, _mm512_set1_epi32(c * cs + xbase))));
			n += __builtin_popcount(w);
		}
	}
	return n;
}
#endif

/* acc[j][0, kv) (j < ACT_NP, row stride kv) = sum over the list of x[xoffs[i] + j] * W^T
 * row at woffs[i], in list order, one FMA per element: the microkernels' arithmetic, per
 * output. */
static void act_scalar(int n, const int32_t *woffs, const int32_t *xoffs, const float *wt,
                       const float *x, int kv, float *acc)
{
	for (int j = 0; j < ACT_NP; j++)
		for (int k = 0; k < kv; k++)
			acc[j * kv + k] = 0.0f;
	for (int i = 0; i < n; i++) {
		const float *wr = wt + woffs[i], *xr = x + xoffs[i];

		for (int j = 0; j < ACT_NP; j++)
			for (int k = 0; k < kv; k++)
				acc[j * kv + k] = fmaf(xr[j], wr[k], acc[j * kv + k]);
	}
}

#ifdef MIME_X86
/* ACT_NP pixels x VB vectors of 16 kernels, from kernel k0, accumulators in registers
 * (ACT_NP * VB <= 16). */
#define ACT512(VB)                                                                                 \
	__attribute__((target("avx512f"), always_inline)) static inline void act512_##VB(          \
		int n, const int32_t *woffs, const int32_t *xoffs, const float *wt,                \
		const float *x, int kv, int k0, float *acc)                                        \
	{                                                                                          \
		__m512 c[ACT_NP][VB];                                                              \
                                                                                                   \
		_Pragma("GCC unroll 16") for (int j = 0; j < ACT_NP; j++)                          \
			_Pragma("GCC unroll 16") for (int v = 0; v < VB; v++) c[j][v] =            \
				_mm512_setzero_ps();                                               \
		for (int i = 0; i < n; i++) {                                                      \
			const float *wr = wt + woffs[i] + k0, *xr = x + xoffs[i];                  \
			__m512 w[VB];                                                              \
                                                                                                   \
			_Pragma("GCC unroll 16") for (int v = 0; v < VB; v++) w[v] =               \
				_mm512_load_ps(wr + 16 * v);                                       \
			_Pragma("GCC unroll 16") for (int j = 0; j < ACT_NP; j++)                  \
			{                                                                          \
				const __m512 xj = _mm512_set1_ps(xr[j]);                           \
                                                                                                   \
				_Pragma("GCC unroll 16") for (int v = 0; v < VB; v++) c[j][v] =    \
					_mm512_fmadd_ps(xj, w[v], c[j][v]);                        \
			}                                                                          \
		}                                                                                  \
		_Pragma("GCC unroll 16") for (int j = 0; j < ACT_NP; j++)                          \
			_Pragma("GCC unroll 16") for (int v = 0; v < VB; v++)                      \
				_mm512_store_ps(acc + j * kv + k0 + 16 * v, c[j][v]);              \
	}
ACT512(1)
#if ACT_NP <= 2
ACT512(8)
#elif ACT_NP == 4
ACT512(4)
#elif ACT_NP == 8
ACT512(2)
#endif

__attribute__((target("avx512f"))) static void act_avx512(int n, const int32_t *woffs,
                                                          const int32_t *xoffs, const float *wt,
                                                          const float *x, int kv, float *acc)
{
	int k0 = 0;

#if ACT_NP <= 2
	for (; k0 + 128 <= kv; k0 += 128)
		act512_8(n, woffs, xoffs, wt, x, kv, k0, acc);
#elif ACT_NP == 4
	for (; k0 + 64 <= kv; k0 += 64)
		act512_4(n, woffs, xoffs, wt, x, kv, k0, acc);
#else
	for (; k0 + 32 <= kv; k0 += 32)
		act512_2(n, woffs, xoffs, wt, x, kv, k0, acc);
#endif
	for (; k0 < kv; k0 += 16)
		act512_1(n, woffs, xoffs, wt, x, kv, k0, acc);
}

/* ACT_NP pixels x 16 kernels (two registers each). */
__attribute__((target("avx2,fma"))) static void act_avx2(int n, const int32_t *woffs,
                                                         const int32_t *xoffs, const float *wt,
                                                         const float *x, int kv, float *acc)
{
	for (int k0 = 0; k0 < kv; k0 += 16) {
		__m256 c[ACT_NP][2];

#pragma GCC unroll 8
		for (int j = 0; j < ACT_NP; j++)
			c[j][0] = c[j][1] = _mm256_setzero_ps();
		for (int i = 0; i < n; i++) {
			const float *wr = wt + woffs[i] + k0, *xr = x + xoffs[i];
			const __m256 w0 = _mm256_load_ps(wr), w1 = _mm256_load_ps(wr + 8);

#pragma GCC unroll 8
			for (int j = 0; j < ACT_NP; j++) {
				const __m256 xj = _mm256_broadcast_ss(xr + j);

				c[j][0] = _mm256_fmadd_ps(xj, w0, c[j][0]);
				c[j][1] = _mm256_fmadd_ps(xj, w1, c[j][1]);
			}
		}
#pragma GCC unroll 8
		for (int j = 0; j < ACT_NP; j++) {
			_mm256_store_ps(acc + j * kv + k0, c[j][0]);
			_mm256_store_ps(acc + j * kv + k0 + 8, c[j][1]);
		}
	}
}
#endif

#ifdef MIME_NEON
/* ACT_NP pixels x 16 kernels (four registers each). */
static void act_neon(int n, const int32_t *woffs, const int32_t *xoffs, const float *wt,
                     const float *x, int kv, float *acc)
{
	for (int k0 = 0; k0 < kv; k0 += 16) {
		float32x4_t c[ACT_NP][4];

		for (int j = 0; j < ACT_NP; j++)
			for (int v = 0; v < 4; v++)
				c[j][v] = vdupq_n_f32(0.0f);
		for (int i = 0; i < n; i++) {
			const float *wr = wt + woffs[i] + k0, *xr = x + xoffs[i];
			float32x4_t w[4];

			for (int v = 0; v < 4; v++)
				w[v] = vld1q_f32(wr + 4 * v);
			for (int j = 0; j < ACT_NP; j++) {
				const float32x4_t xj = vdupq_n_f32(xr[j]);

				for (int v = 0; v < 4; v++)
					c[j][v] = vfmaq_f32(c[j][v], xj, w[v]);
			}
		}
		for (int j = 0; j < ACT_NP; j++)
			for (int v = 0; v < 4; v++)
				vst1q_f32(acc + j * kv + k0 + 4 * v, c[j][v]);
	}
}
#endif

#ifdef MIME_X86
/* tile[k][j] = acc[j][k] (tile rows of 32) for k < kv and j < jn rounded up to 16, in 16 x 16
 * blocks through registers. Rows of acc past jn hold whatever they held: their columns of the
 * tile are past jn, which the epilogue never reads. */
__attribute__((target("avx512f"))) static void act_transpose_avx512(const float *acc, int kv,
                                                                    int jn, float *tile)
{
	for (int j0 = 0; j0 < jn; j0 += 16)
		for (int k0 = 0; k0 < kv; k0 += 16) {
			__m512 r[16], t[16];

			for (int i = 0; i < 16; i++)
				r[i] = _mm512_loadu_ps(acc + (int64_t)(j0 + i) * kv + k0);
			/* 2 x 2 blocks of floats, then of pairs, then of 128-bit quads. */
			for (int i = 0; i < 16; i += 2) {
				t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
				t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
			}
			for (int i = 0; i < 16; i += 4) {
				r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(
					_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
				r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(
					_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
				r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(
					_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
				r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(
					_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
			}
			/* r[4q + m] holds, in 128-bit lane L, rows 4q..4q+3 at column 4L + m */
			for (int m = 0; m < 4; m++) {
				const __m512 a0 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x44);
				const __m512 a1 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xee);
				const __m512 b0 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x44);
				const __m512 b1 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xee);

				t[m] = _mm512_shuffle_f32x4(a0, b0, 0x88);      /* column m */
				t[4 + m] = _mm512_shuffle_f32x4(a0, b0, 0xdd);  /* column 4 + m */
				t[8 + m] = _mm512_shuffle_f32x4(a1, b1, 0x88);  /* column 8 + m */
				t[12 + m] = _mm512_shuffle_f32x4(a1, b1, 0xdd); /* column 12 + m */
			}
			for (int i = 0; i < 16; i++)
				_mm512_store_ps(tile + (int64_t)(k0 + i) * 32 + j0, t[i]);
		}
}
#endif

int64_t mime_gemm_conv_act(const struct mime_gemm_arch *a, const struct mime_gemm_tweights *t,
                           const struct mime_conv_geom *g, const float *in_sample, int p0, int np,
                           int P, const float *bias, const struct mime_mask_ref *mask,
                           int apply_mask, float *out_sample, void *scratch)
{
	const struct act_scratch *h = scratch;
	struct act_scratch l;
	const int nr = a->nr, kv = t->kv, K = t->K, S = g->s, R = g->r;
	int32_t tap[32]; /* offset of tap (kh, kw) in the copy from the window's corner */
	const uint32_t *masks;
	const float *xpad;
	int32_t *woffs, *xoffs;
	float *acc, *tile;
	int64_t zeros = 0;

	(void)in_sample; /* read through the copy mime_gemm_act_density made */
	act_layout(a, g, K, &l);
	masks = (const uint32_t *)((const uint8_t *)scratch + l.masks_at);
	xpad = (const float *)((const uint8_t *)scratch + l.xpad_at);
	woffs = (int32_t *)((uint8_t *)scratch + l.woffs_at);
	xoffs = (int32_t *)((uint8_t *)scratch + l.xoffs_at);
	acc = (float *)((uint8_t *)scratch + l.acc_at);
	tile = (float *)((uint8_t *)scratch + l.tile_at);
	for (int kh = 0; kh < R; kh++)
		for (int kw = 0; kw < S; kw++)
			tap[kh * S + kw] = kh * h->wp + kw;
	for (int j0 = 0; j0 < np; j0 += nr) {
		const int jn = np - j0 < nr ? np - j0 : nr;

		for (int j = 0; j < jn;) {
			const int p = p0 + j0 + j, oh = p / g->ow, ow = p % g->ow;
			float *aj = acc + (int64_t)j * kv;
			int gn = g->ow - ow, n;

			gn = gn < jn - j ? gn : jn - j;
			gn = gn < ACT_NP ? gn : ACT_NP;
			switch (a->simd) {
#ifdef MIME_X86
			case MIME_SIMD_AVX512:
				n = act_list_avx512(h, masks, t->live, g, kv, tap, oh, ow, gn,
				                    woffs, xoffs);
				act_avx512(n, woffs, xoffs, t->values, xpad, kv, aj);
				break;
			case MIME_SIMD_AVX2:
				n = act_list(h, masks, t->live, g, kv, tap, oh, ow, gn, woffs,
				             xoffs);
				act_avx2(n, woffs, xoffs, t->values, xpad, kv, aj);
				break;
#endif
#ifdef MIME_NEON
			case MIME_SIMD_NEON:
				n = act_list(h, masks, t->live, g, kv, tap, oh, ow, gn, woffs,
				             xoffs);
				act_neon(n, woffs, xoffs, t->values, xpad, kv, aj);
				break;
#endif
			default:
				n = act_list(h, masks, t->live, g, kv, tap, oh, ow, gn, woffs,
				             xoffs);
				act_scalar(n, woffs, xoffs, t->values, xpad, kv, aj);
				break;
			}
			j += gn;
		}
		/* [pixel][kernel] -> [kernel][pixel], then the dense path's epilogue. */
#ifdef MIME_X86
		if (a->simd == MIME_SIMD_AVX512)
			act_transpose_avx512(acc, kv, jn, tile);
		else
#endif
			for (int k = 0; k < K; k++)
				for (int j = 0; j < jn; j++)
					tile[(int64_t)k * nr + j] = acc[(int64_t)j * kv + k];
		zeros += tile_epilogue(a, tile, K, jn, 0, j0, p0, P, bias, mask, apply_mask,
		                       out_sample);
	}
	return zeros;
}
