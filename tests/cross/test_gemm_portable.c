// SPDX-License-Identifier: MIT
/* test_gemm_portable -- the packed conv GEMM on every SIMD path the machine has, against a
 * naive double-precision convolution, with no dependency but libc and libm: it is
 * cross-compiled for aarch64 and run under qemu-user in CI to test the NEON path (edge boxes
 * are often ARM), and built natively as well. Tolerance: |got - ref| <= 1e-4 * (1 + |ref|),
 * except outputs within 1e-4 of their threshold. Exit 0 = pass.
 * Forms: dense and compact from mime_gemm_weights_pack (check); and, on storage reused across
 * shapes (check_fine), a selectable packing switched by mime_gemm_weights_select through W_uv
 * 16 / 8 / 4 keep masks at 0, 50, 90 and 100% pruned (indexed, or dense when the index would
 * not pay), each against the reference and bit for bit against the same masked weights packed
 * directly, compact and dense; patches packed with mime_gemm_pack_b_rows(w->rows) into a
 * buffer full of NaNs, in random pixel chunks; each epilogue (none, ReLU, per-channel and
 * per-element thresholds) and its zero count. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/gemm.h"
#include "lib/half.h"

static uint64_t rng = 88172645463325252ull;

static float uni(float lo, float hi)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return lo + (hi - lo) * (float)(rng >> 40) / (float)(1 << 24);
}

/* Uniform in [0, n). */
static int irand(int n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (int)((rng >> 33) % (uint64_t)n);
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

/* The fine-grain sparse forms: storage sizes, one layer per trial (check_fine). */
#define K_MAX   40
#define C_MAX   8
#define CRS_MAX (C_MAX * 25)

enum epilogue { EP_NONE, EP_RELU, EP_CHANNEL, EP_ELEMENT, EP_COUNT };

/* What the trials of a path ran: selects by the form they chose, and refused. */
static int n_indexed, n_selected_dense, n_refused;

/* One layer: a sub-matrix [K, CRS] of parent weights with leading dimension lda (everything
 * outside it NaN: never read), its input, the naive patches and the epilogue's operands. */
struct layer {
	struct mime_gemm_arch a;
	struct mime_conv_geom g;
	int K, CRS, P, panels;
	int64_t lda;
	float *W, *in, *bias, *thr_e, *thr_c, *packed, *out;
	double *X, *y; /* X [CRS, P]: naive patches; y [K, P]: reference before the mask */
	const char *what;
	int fails;
};

static int fail(struct layer *l, const char *fmt, long long x, long long y)
{
	if (l->fails++ < 8) {
		printf("%s K %d CRS %d P %d (%s): ", l->a.name, l->K, l->CRS, l->P, l->what);
		printf(fmt, x, y);
		printf("\n");
	}
	return 1;
}

static int kept(const uint8_t *keep, int wuv, int CRS, int k, int c)
{
	return !keep || keep[(int64_t)(k / wuv) * CRS + c];
}

/* y = bias + (W masked by keep) X, in double. */
static void reference(struct layer *l, const uint8_t *keep, int wuv)
{
	for (int k = 0; k < l->K; k++)
		for (int p = 0; p < l->P; p++) {
			double y = l->bias ? l->bias[k] : 0.0;

			for (int c = 0; c < l->CRS; c++)
				if (kept(keep, wuv, l->CRS, k, c))
					y += (double)l->W[k * l->lda + c] *
					     l->X[(int64_t)c * l->P + p];
			l->y[(int64_t)k * l->P + p] = y;
		}
}

/* Panel columns of W masked by keep holding a nonzero value (rows past K are zero). */
static int64_t live_columns(const struct layer *l, const uint8_t *keep, int wuv, uint8_t *rows)
{
	int64_t n = 0;

	if (rows)
		memset(rows, 0, (size_t)l->CRS);
	for (int p = 0; p < l->panels; p++)
		for (int c = 0; c < l->CRS; c++) {
			int nz = 0;

			for (int k = p * l->a.mr; k < (p + 1) * l->a.mr && k < l->K; k++)
				nz |= kept(keep, wuv, l->CRS, k, c) && l->W[k * l->lda + c] != 0.0f;
			n += nz;
			if (rows)
				rows[c] |= (uint8_t)nz;
		}
	return n;
}

/* out = conv(w) with epilogue ep, over pixel chunks of random sizes (not multiples of NR),
 * the patches packed with w->rows into a buffer of NaNs; returns the zeros counted. */
static int64_t run(struct layer *l, const struct mime_gemm_weights *w, int ep)
{
	const struct mime_mask_ref mask = {ep == EP_CHANNEL   ? l->thr_c
	                                   : ep == EP_ELEMENT ? l->thr_e
	                                                      : NULL,
	                                   ep == EP_CHANNEL   ? MIME_THR_CHANNEL
	                                   : ep == EP_ELEMENT ? MIME_THR_ELEMENT
	                                                      : MIME_THR_NONE};
	const int chunk = irand(3) == 0 ? l->P : 1 + irand(l->P);
	int64_t zeros = 0;

	for (int64_t i = 0; i < (int64_t)l->K * l->P; i++)
		l->out[i] = NAN;
	for (int p0 = 0; p0 < l->P; p0 += chunk) {
		const int np = l->P - p0 < chunk ? l->P - p0 : chunk;
		const size_t nb = mime_gemm_packed_b_floats(&l->a, l->CRS, np);

		for (size_t i = 0; i < nb; i++)
			l->packed[i] = NAN;
		mime_gemm_pack_b_rows(&l->a, &l->g, l->in, p0, np, w->rows, l->packed);
		zeros += mime_gemm_conv(&l->a, w, l->packed, np, p0, l->P, l->bias, &mask,
		                        ep != EP_NONE, l->out);
	}
	return zeros;
}

/* l->out and the zero count of run(ep) against the reference l->y. */
static int verify(struct layer *l, int ep, int64_t zeros)
{
	int64_t out_zeros = 0, ref_zeros = 0, near = 0;
	int bad = 0;

	for (int k = 0; k < l->K; k++)
		for (int p = 0; p < l->P; p++) {
			const int64_t i = (int64_t)k * l->P + p;
			const double y = l->y[i];
			const double t = ep == EP_CHANNEL   ? l->thr_c[k]
			                 : ep == EP_ELEMENT ? l->thr_e[i]
			                                    : 0;
			const double ref = ep == EP_NONE || y >= t ? y : 0.0;
			const int is_near = ep != EP_NONE && fabs(y - t) <= 1e-4;
			const float got = l->out[i];

			near += is_near;
			out_zeros += got == 0.0f;
			ref_zeros += ref == 0.0;
			if (isnan(got) ||
			    (!(fabs(got - ref) <= 1e-4 * (1 + fabs(ref))) && !is_near)) {
				if (!bad++ && l->fails < 8)
					printf("%s (%s): k %d p %d got %g want %g\n", l->a.name,
					       l->what, k, p, got, ref);
			}
		}
	if (bad)
		return fail(l, "epilogue %lld: %lld bad outputs", ep, bad);
	if (zeros != (ep == EP_NONE ? 0 : out_zeros))
		return fail(l, "returned %lld zeros, %lld in the output", zeros, out_zeros);
	if (ep != EP_NONE && llabs(out_zeros - ref_zeros) > near)
		return fail(l, "%lld zeros, reference %lld", out_zeros, ref_zeros);
	return 0;
}

static int same_bits(struct layer *l, const float *want, int64_t want_zeros, int64_t zeros)
{
	if (memcmp(l->out, want, sizeof(float) * l->K * l->P) != 0)
		return fail(l, "outputs differ from the directly packed masked weights (%lld %lld)",
		            l->K, l->P);
	if (zeros != want_zeros)
		return fail(l, "%lld zeros, directly packed %lld", zeros, want_zeros);
	return 0;
}

static void *must(void *p)
{
	if (!p) {
		printf("out of memory\n");
		exit(1);
	}
	return p;
}

/* What the input-sparse runs checked: chunks run sparse, trials where the geometry allows. */
static int n_act_runs, n_act_layers;

/* The input-sparse form of packing w (W^T built from it into t): out over random pixel
 * chunks, the scratch full of NaNs before each, must be bit for bit want (the dense run of
 * the same packing) with the same zero count, and within tolerance of the reference. */
static int act_same(struct layer *l, struct mime_gemm_tweights *t,
                    const struct mime_gemm_weights *w, int ep, const float *want,
                    int64_t want_zeros)
{
	const struct mime_mask_ref mask = {ep == EP_CHANNEL   ? l->thr_c
	                                   : ep == EP_ELEMENT ? l->thr_e
	                                                      : NULL,
	                                   ep == EP_CHANNEL   ? MIME_THR_CHANNEL
	                                   : ep == EP_ELEMENT ? MIME_THR_ELEMENT
	                                                      : MIME_THR_NONE};
	const size_t sb = mime_gemm_act_scratch_bytes(&l->a, &l->g, l->K);
	const int chunk = irand(3) == 0 ? l->P : 1 + irand(l->P);
	void *scratch = NULL;
	int64_t zeros = 0;

	if (!t->values)
		return 0; /* geometry not handled: the engine runs dense */
	if (mime_gemm_tweights_build(t, w) != 0)
		return fail(l, "tweights_build failed (%lld %lld)", l->K, l->CRS);
	if (t->K != l->K || t->CRS != l->CRS || t->kv % 16 || t->kv < l->K)
		return fail(l, "tweights shape K %lld kv %lld", t->K, t->kv);
	if (posix_memalign(&scratch, 64, sb) != 0)
		must(NULL);
	for (int64_t i = 0; i < (int64_t)l->K * l->P; i++)
		l->out[i] = NAN;
	for (int p0 = 0; p0 < l->P; p0 += chunk) {
		const int np = l->P - p0 < chunk ? l->P - p0 : chunk;
		double d;

		memset(scratch, 0xff, sb); /* NaNs: what the form reads, it wrote first */
		d = mime_gemm_act_density(&l->a, &l->g, l->in, p0, np, scratch);
		if (!(d >= 0.0 && d <= 1.0))
			fail(l, "density %lld/1000 (%lld)", (long long)(d * 1000), 0);
		zeros += mime_gemm_conv_act(&l->a, t, &l->g, l->in, p0, np, l->P, l->bias, &mask,
		                            ep != EP_NONE, l->out, scratch);
		n_act_runs++;
	}
	free(scratch);
	verify(l, ep, zeros);
	if (memcmp(l->out, want, sizeof(float) * l->K * l->P) != 0)
		return fail(l, "input-sparse outputs differ from the dense path's (%lld %lld)",
		            l->K, l->P);
	if (zeros != want_zeros)
		return fail(l, "input-sparse: %lld zeros, dense %lld", zeros, want_zeros);
	return 0;
}

/* After a select on sel: tu, built from sel before and updated now, must hold what tw,
 * built from sel now, holds. */
static int tweights_updated(struct layer *l, struct mime_gemm_tweights *tu,
                            const struct mime_gemm_tweights *tw,
                            const struct mime_gemm_weights *sel)
{
	if (!tu->values)
		return 0;
	if (mime_gemm_tweights_update(tu, sel) != 0)
		return fail(l, "tweights_update refused form %lld (%lld)", sel->form, 0);
	if (memcmp(tu->values, tw->values, sizeof(float) * tw->kv * tw->CRS) != 0 ||
	    memcmp(tu->live, tw->live, sizeof(uint32_t) * (tw->CRS / tw->rs)) != 0)
		return fail(l, "updated W^T differs from a fresh build (%lld %lld)", 0, 0);
	return 0;
}

/* What select must have chosen: indexed over the live kept columns when keep leaves out a
 * live column or at least 1 in 8 columns are left out, else dense. */
static int check_selection(struct layer *l, const struct mime_gemm_weights *w, const uint8_t *keep,
                           int wuv, int64_t n_live)
{
	static uint8_t rows[CRS_MAX];
	const int64_t total = (int64_t)l->panels * l->CRS, n = live_columns(l, keep, wuv, rows);
	const int indexed = n < n_live || 8 * (total - n) >= total;

	if (w->n_live != n_live)
		return fail(l, "n_live %lld, counted %lld", w->n_live, n_live);
	if ((w->form == MIME_GEMM_INDEXED) != indexed || (!indexed && w->form != MIME_GEMM_DENSE))
		return fail(l, "form %lld, want indexed %lld", w->form, indexed);
	if (w->n_cols != (indexed ? n : total))
		return fail(l, "%lld columns run, want %lld", w->n_cols, indexed ? n : total);
	if (!indexed)
		return w->rows ? fail(l, "dense with rows (%lld %lld)", 0, 0) : 0;
	for (int p = 0; p < l->panels; p++) {
		const int64_t s = w->start[p], e = w->start[p + 1];

		for (int64_t i = s; i < e; i++) {
			const int c = w->cols[i];
			int nz = 0;

			if (c < 0 || c >= l->CRS || (i > s && c <= w->cols[i - 1]))
				return fail(l, "panel %lld runs column %lld out of order", p, c);
			for (int k = p * l->a.mr; k < (p + 1) * l->a.mr && k < l->K; k++)
				nz |= kept(keep, wuv, l->CRS, k, c) && l->W[k * l->lda + c] != 0.0f;
			if (!nz)
				return fail(l, "panel %lld runs pruned or zero column %lld", p, c);
		}
	}
	if (!w->rows || memcmp(w->rows, rows, (size_t)l->CRS) != 0)
		return fail(l, "patch rows differ from the columns run (%lld %lld)", 0, 0);
	return 0;
}

/* One random layer on path a: sel holds a selectable packing switched through keep masks,
 * dir the same masked weights packed directly; both storages are reused across trials. */
static int check_fine(const struct mime_gemm_arch *a, int trial, struct mime_gemm_weights *sel,
                      struct mime_gemm_weights *dir)
{
	static const int wuvs[] = {16, 8, 4};
	static const float pruned[] = {0.0f, 0.5f, 0.9f, 1.0f};
	static uint8_t keep[(K_MAX + 3) / 4 * CRS_MAX];
	const int ks = (int[]){1, 3, 3, 5}[irand(4)];
	struct layer l = {.a = *a, .what = "unmasked"};
	struct mime_gemm_tweights tw = {0}, tu = {0}; /* tu: built once, then updated */
	float *out_dense, *want;
	int64_t n_live, zeros, zeros_dense, want_zeros;
	int ep = trial % EP_COUNT, step = 0, kp;

	l.g = (struct mime_conv_geom){.c = 1 + irand(C_MAX),
	                              .h = ks + irand(12),
	                              .w = ks + irand(12),
	                              .r = ks,
	                              .s = ks,
	                              .stride = 1 + irand(2),
	                              .pad = irand(2) ? ks / 2 : 0};
	l.K = l.g.k = trial % 5 == 0 ? 16 * (1 + irand(2)) : 1 + irand(K_MAX);
	l.g.oh = (l.g.h + 2 * l.g.pad - ks) / l.g.stride + 1;
	l.g.ow = (l.g.w + 2 * l.g.pad - ks) / l.g.stride + 1;
	l.CRS = l.g.c * ks * ks;
	l.P = l.g.oh * l.g.ow;
	l.panels = (l.K + a->mr - 1) / a->mr;
	l.lda = l.CRS + irand(7);
	kp = l.K + irand(5); /* parent rows */
	l.W = must(malloc(sizeof(float) * kp * l.lda));
	l.in = must(malloc(sizeof(float) * l.g.c * l.g.h * l.g.w));
	l.bias = irand(4) ? must(malloc(sizeof(float) * l.K)) : NULL;
	l.thr_e = must(malloc(sizeof(float) * l.K * l.P));
	l.thr_c = must(malloc(sizeof(float) * l.K));
	l.out = must(malloc(sizeof(float) * l.K * l.P));
	out_dense = must(malloc(sizeof(float) * l.K * l.P));
	want = must(malloc(sizeof(float) * l.K * l.P));
	l.X = must(calloc((size_t)l.CRS * l.P, sizeof(double)));
	l.y = must(malloc(sizeof(double) * l.K * l.P));
	if (posix_memalign((void **)&l.packed, 64,
	                   sizeof(float) * mime_gemm_packed_b_floats(a, l.CRS, l.P)) != 0)
		must(NULL);

	{
		/* Inputs as thresholds leave them: a fraction exactly zero (some -0), in
		 * scattered pixels and whole channels. */
		const float zf = (float[]){0.0f, 0.3f, 0.7f, 0.95f, 1.0f}[irand(5)];

		for (int i = 0; i < l.g.c * l.g.h * l.g.w; i++)
			l.in[i] = uni(0, 1) < zf ? (irand(4) ? 0.0f : -0.0f) : uni(-1, 1);
		for (int c = 0; c < l.g.c; c++)
			if (uni(0, 1) < zf / 2)
				for (int i = 0; i < l.g.h * l.g.w; i++)
					l.in[c * l.g.h * l.g.w + i] = 0.0f;
	}
	if (mime_gemm_act_supported(&l.g)) {
		if (mime_gemm_tweights_init(&tw, K_MAX, l.CRS + ks * ks * irand(3), ks * ks) != 0 ||
		    mime_gemm_tweights_init(&tu, K_MAX, l.CRS, ks * ks) != 0) {
			fail(&l, "tweights_init failed (%lld %lld)", l.K, l.CRS);
			goto out;
		}
		n_act_layers++;
	} else if (l.g.stride == 1 && ks <= 3) {
		fail(&l, "geometry not supported (%lld %lld)", l.g.h, l.g.w);
	}
	for (int64_t i = 0; i < kp * l.lda; i++)
		l.W[i] = NAN; /* outside the sub-matrix: must not be read */
	for (int k = 0; k < l.K; k++)
		for (int c = 0; c < l.CRS; c++)
			l.W[k * l.lda + c] = uni(0, 1) < 0.03f ? 0.0f : uni(-0.5f, 0.5f);
	/* Zeros of the weights themselves (dead panel columns, whatever the mask): whole
	 * columns, and runs of 4 rows (across panel borders when MR is 6). */
	for (int c = 0; c < l.CRS; c++) {
		if (uni(0, 1) < 0.15f)
			for (int k = 0; k < l.K; k++)
				l.W[k * l.lda + c] = 0.0f;
		for (int k0 = 0; k0 < l.K; k0 += 4)
			if (uni(0, 1) < 0.1f)
				for (int k = k0; k < k0 + 4 && k < l.K; k++)
					l.W[k * l.lda + c] = 0.0f;
	}
	for (int k = 0; k < l.K; k++) {
		if (l.bias)
			l.bias[k] = uni(-0.2f, 0.2f);
		l.thr_c[k] = uni(0, 0.5f);
	}
	for (int i = 0; i < l.K * l.P; i++)
		l.thr_e[i] = uni(0, 0.5f);
	for (int c = 0; c < l.g.c; c++) /* naive patches */
		for (int r = 0; r < ks; r++)
			for (int s = 0; s < ks; s++)
				for (int p = 0; p < l.P; p++) {
					const int ih = p / l.g.ow * l.g.stride - l.g.pad + r;
					const int iw = p % l.g.ow * l.g.stride - l.g.pad + s;

					if (ih >= 0 && iw >= 0 && ih < l.g.h && iw < l.g.w)
						l.X[(int64_t)((c * ks + r) * ks + s) * l.P + p] =
							l.in[(c * l.g.h + ih) * l.g.w + iw];
				}

	/* Selectable, before any select: dense over every column. */
	if (mime_gemm_weights_repack_selectable(sel, a, l.W, l.lda, l.K, l.CRS) != 0) {
		fail(&l, "repack_selectable failed (%lld %lld)", l.K, l.CRS);
		goto out;
	}
	n_live = live_columns(&l, NULL, 1, NULL);
	if (sel->form != MIME_GEMM_DENSE || sel->rows || sel->n_live != n_live)
		fail(&l, "selectable: form %lld, n_live %lld", sel->form, sel->n_live);
	reference(&l, NULL, 1);
	zeros_dense = run(&l, sel, ep);
	verify(&l, ep, zeros_dense);
	memcpy(out_dense, l.out, sizeof(float) * l.K * l.P);
	act_same(&l, &tw, sel, ep, out_dense, zeros_dense);
	if (tu.values && mime_gemm_tweights_build(&tu, sel) != 0)
		fail(&l, "tweights_build (%lld %lld)", 0, 0);

	for (unsigned wi = 0; wi < sizeof(wuvs) / sizeof(wuvs[0]); wi++)
		for (unsigned si = 0; si < sizeof(pruned) / sizeof(pruned[0]); si++, step++) {
			const int wuv = wuvs[wi], groups = (l.K + wuv - 1) / wuv;
			const int64_t total = (int64_t)l.panels * l.CRS;
			struct mime_gemm_weights before;
			char what[64];
			int r;

			ep = (trial + step) % EP_COUNT;
			snprintf(what, sizeof(what), "W_uv %d, %d%% pruned, epilogue %d", wuv,
			         (int)(100 * pruned[si]), ep);
			l.what = what;
			for (int i = 0; i < groups * l.CRS; i++)
				keep[i] = (uint8_t)(uni(0, 1) >= pruned[si]) *
				          (uint8_t)(1 + irand(255));
			reference(&l, keep, wuv);

			/* Directly: compact, then dense; the same bits. */
			if (mime_gemm_weights_repack(dir, a, l.W, l.lda, l.K, l.CRS, keep, wuv,
			                             1) != 0) {
				fail(&l, "compact repack failed (%lld %lld)", l.K, l.CRS);
				continue;
			}
			if (dir->form != MIME_GEMM_COMPACT ||
			    dir->n_cols != live_columns(&l, keep, wuv, NULL) ||
			    mime_gemm_zero_columns_sub(a, l.W, l.lda, l.K, l.CRS, keep, wuv) !=
			            total - dir->n_cols)
				fail(&l, "compact: form %lld, %lld columns", dir->form,
				     dir->n_cols);
			want_zeros = run(&l, dir, ep);
			verify(&l, ep, want_zeros);
			memcpy(want, l.out, sizeof(float) * l.K * l.P);
			act_same(&l, &tw, dir, ep, want, want_zeros);
			if (mime_gemm_weights_repack(dir, a, l.W, l.lda, l.K, l.CRS, keep, wuv,
			                             0) != 0 ||
			    dir->form != MIME_GEMM_DENSE || dir->n_cols != total) {
				fail(&l, "dense repack: form %lld, %lld columns", dir->form,
				     dir->n_cols);
				continue;
			}
			zeros = run(&l, dir, ep);
			same_bits(&l, want, want_zeros, zeros);
			act_same(&l, &tw, dir, ep, want, want_zeros);
			if (mime_gemm_weights_select(dir, keep, wuv) != -EINVAL)
				fail(&l, "select on a packing that is not selectable (%lld %lld)",
				     0, 0);

			/* A fine switch: the same packed weights, another mask. */
			before = *sel;
			r = mime_gemm_weights_select(sel, keep, wuv);
			if (wuv % a->mr != 0) { /* groups across panels: not selectable */
				if (r != -EINVAL || memcmp(&before, sel, sizeof(before)) != 0)
					fail(&l, "select returned %lld for MR %lld", r, a->mr);
				n_refused++;
				continue;
			}
			if (r != 0) {
				fail(&l, "select returned %lld (%lld)", r, 0);
				continue;
			}
			if (check_selection(&l, sel, keep, wuv, n_live))
				continue;
			n_indexed += sel->form == MIME_GEMM_INDEXED;
			n_selected_dense += sel->form == MIME_GEMM_DENSE;
			zeros = run(&l, sel, ep);
			verify(&l, ep, zeros);
			same_bits(&l, want, want_zeros, zeros);
			act_same(&l, &tw, sel, ep, want, want_zeros);
			tweights_updated(&l, &tu, &tw, sel);
		}

	/* Back to every live column: the bits of the dense run. */
	ep = trial % EP_COUNT;
	l.what = "select(NULL)";
	if (mime_gemm_weights_select(sel, NULL, 0) != 0 ||
	    check_selection(&l, sel, NULL, 1, n_live))
		fail(&l, "select(NULL) (%lld %lld)", 0, 0);
	zeros = run(&l, sel, ep);
	memcpy(want, out_dense, sizeof(float) * l.K * l.P);
	same_bits(&l, want, zeros_dense, zeros);
	reference(&l, NULL, 1);
	act_same(&l, &tw, sel, ep, want, zeros_dense);
	tweights_updated(&l, &tu, &tw, sel);
	if (mime_gemm_weights_select(sel, keep, 0) != -EINVAL ||
	    mime_gemm_weights_repack(sel, a, l.W, l.lda, K_MAX + 1, l.CRS, NULL, 0, 0) != -EINVAL ||
	    mime_gemm_weights_repack_selectable(sel, a, l.W, l.lda, l.K, CRS_MAX + 1) != -EINVAL ||
	    !sel->live || sel->K != l.K || sel->CRS != l.CRS)
		fail(&l, "bad arguments not refused, or the packing changed (%lld %lld)", 0, 0);
out:
	mime_gemm_tweights_free(&tw);
	mime_gemm_tweights_free(&tu);
	free(l.W);
	free(l.in);
	free(l.bias);
	free(l.thr_e);
	free(l.thr_c);
	free(l.out);
	free(out_dense);
	free(want);
	free(l.X);
	free(l.y);
	free(l.packed);
	return l.fails != 0;
}

/* The F16 array conversion (F16C on x86, FCVTL on aarch64, else scalar) against the scalar
 * one, all 65,536 halves (signalling NaNs may come out quiet). */
static int check_half(void)
{
	static uint16_t h[65536];
	static float f[65536];
	int bad = 0;

	for (uint32_t i = 0; i < 65536; i++)
		h[i] = (uint16_t)i;
	mime_half_to_float_n(h + 1, f + 1, 65535); /* unaligned, with a tail */
	mime_half_to_float_n(h, f, 1);
	for (uint32_t i = 0; i < 65536; i++) {
		const float want = mime_half_to_float(h[i]);

		if (isnan(want) ? !isnan(f[i]) : memcmp(&want, &f[i], sizeof(want)) != 0)
			bad++;
	}
	printf("half -> float, 65536 halves: %s\n", bad ? "FAILED" : "ok");
	return bad != 0;
}

int main(void)
{
	int failed = check_half(), paths = 0;

	for (int simd = MIME_SIMD_SCALAR; simd <= MIME_SIMD_NEON; simd++) {
		struct mime_gemm_arch a;
		struct mime_gemm_weights sel, dir;
		int f = 0;

		if (!mime_gemm_arch_supported(simd))
			continue;
		mime_gemm_arch_select(simd, &a);
		paths++;
		for (int sparse = 0; sparse <= 1; sparse++)
			for (int thr = MIME_THR_NONE; thr <= MIME_THR_CHANNEL; thr++)
				for (int trial = 0; trial < 8; trial++)
					f += check(simd, sparse, thr);
		if (mime_gemm_weights_init(&sel, &a, K_MAX, CRS_MAX) != 0 ||
		    mime_gemm_weights_init(&dir, &a, K_MAX, CRS_MAX) != 0) {
			printf("out of memory\n");
			return 1;
		}
		n_indexed = n_selected_dense = n_refused = n_act_runs = n_act_layers = 0;
		for (int trial = 0; trial < 32; trial++) /* the storages swap roles */
			f += trial % 3 == 2 ? check_fine(&a, trial, &dir, &sel)
			                    : check_fine(&a, trial, &sel, &dir);
		mime_gemm_weights_free(&sel);
		mime_gemm_weights_free(&dir);
		printf("%s (%dx%d): %s (masked selects: %d indexed, %d dense, %d refused; "
		       "input-sparse: %d layers, %d chunks bit-equal)\n",
		       a.name, a.mr, a.nr, f ? "FAILED" : "ok", n_indexed, n_selected_dense,
		       n_refused, n_act_layers, n_act_runs);
		failed += f;
	}
	printf("%d paths, %d failed checks\n", paths, failed);
	return failed || paths == 0;
}
