// SPDX-License-Identifier: MIT
/* phases -- building nested phases (train/phases.h). */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/engine.h"
#include "lib/phase.h"
#include "train/optim.h"
#include "train/phases.h"

static int is_wlayer(const struct mime_layer_spec *l)
{
	return l->kind == MIME_LAYER_CONV || l->kind == MIME_LAYER_FC;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Input of layer i in the full graph: channels (conv) or features (fc), and R*S. */
static int full_cin(const struct mimetrain_mp *mp, int i, int *ret_rs)
{
	const struct mime_layer_spec *l = &mp->g.layers[i];
	const struct mime_shape *in = i ? &mp->shapes[i - 1] : &mp->g.input;

	if (l->kind == MIME_LAYER_CONV) {
		*ret_rs = l->kernel * l->kernel;
		return in->c;
	}
	*ret_rs = 1;
	return (int)mime_shape_size(in);
}

int mimetrain_phase_cin(const struct mime_graph *g, const int *k, int i, int *ret_rs)
{
	struct mime_shape in[MIME_MAX_LAYERS], out[MIME_MAX_LAYERS];
	const struct mime_layer_spec *l = &g->layers[i];

	if (mime_phase_shapes(g, k, in, out) < 0)
		return -1;
	if (l->kind == MIME_LAYER_CONV) {
		*ret_rs = l->kernel * l->kernel;
		return in[i].c;
	}
	*ret_rs = 1;
	return (int)mime_shape_size(&in[i]);
}

size_t mimetrain_phase_groups(const struct mime_graph *g, const struct mimetrain_phase_def *ph,
                              int i)
{
	int rs, cin = mimetrain_phase_cin(g, ph->k, i, &rs);

	return mime_phase_mask_groups(ph->k[i], cin * rs, ph->wuv);
}

/* Whether ph keeps element (kk, col) of layer i, given its cin * rs = crs. */
static int keeps(const struct mimetrain_phase_def *ph, int i, int crs, int kk, int col)
{
	if (kk >= ph->k[i] || col >= crs)
		return 0;
	return !ph->keep[i] || ph->keep[i][(size_t)(kk / ph->wuv) * (size_t)crs + (size_t)col];
}

int mimetrain_mp_init(struct mimetrain_mp *mp, const struct mime_model *model, int task,
                      struct mime_errinfo *ei)
{
	const struct mime_task_params *tp;
	int r;

	memset(mp, 0, sizeof(*mp));
	if (task < 0 || task >= model->n_tasks)
		return mime_errinfo_set(ei, MIME_EINVAL, "phases: no task %d", task);
	tp = &model->tasks[task];
	for (int i = 0; i < MIME_MAX_LAYERS; i++)
		if (tp->thresholds[i])
			return mime_errinfo_set(
				ei, MIME_EINVAL,
				"phases: task '%s' has thresholds; phases are built "
				"on the parent's ReLU network",
				tp->name);
	mp->g = model->graph;
	r = mime_graph_check(&mp->g, mp->shapes, ei);
	if (r < 0)
		return r;
	for (int i = 0; i < mp->g.n_layers; i++) {
		int rs, cin;
		size_t nw;

		if (!is_wlayer(&mp->g.layers[i]))
			continue;
		cin = full_cin(mp, i, &rs);
		nw = (size_t)mp->g.layers[i].out * (size_t)cin * (size_t)rs;
		mp->w[i] = malloc(sizeof(float) * nw);
		mp->b[i] = malloc(sizeof(float) * (size_t)mp->g.layers[i].out);
		if (!mp->w[i] || !mp->b[i]) {
			mimetrain_mp_fini(mp);
			return -ENOMEM;
		}
		memcpy(mp->w[i], model->weight[i], sizeof(float) * nw);
		memcpy(mp->b[i], model->bias[i], sizeof(float) * (size_t)mp->g.layers[i].out);
	}
	mp->n_classes = tp->n_classes;
	{
		size_t nf = (size_t)mime_shape_size(&mp->shapes[mp->g.n_layers - 1]);

		mp->head_w = malloc(sizeof(float) * nf * (size_t)mp->n_classes);
		mp->head_b = malloc(sizeof(float) * (size_t)mp->n_classes);
		if (!mp->head_w || !mp->head_b) {
			mimetrain_mp_fini(mp);
			return -ENOMEM;
		}
		memcpy(mp->head_w, tp->head_w, sizeof(float) * nf * (size_t)mp->n_classes);
		memcpy(mp->head_b, tp->head_b, sizeof(float) * (size_t)mp->n_classes);
	}
	return 0;
}

int mimetrain_mp_copy(struct mimetrain_mp *dst, const struct mimetrain_mp *src)
{
	size_t nf = (size_t)mime_shape_size(&src->shapes[src->g.n_layers - 1]);

	memset(dst, 0, sizeof(*dst));
	dst->g = src->g;
	memcpy(dst->shapes, src->shapes, sizeof(dst->shapes));
	dst->n_classes = src->n_classes;
	for (int i = 0; i < src->g.n_layers; i++) {
		int rs, cin;
		size_t nw;

		if (!src->w[i])
			continue;
		cin = full_cin(src, i, &rs);
		nw = (size_t)src->g.layers[i].out * (size_t)cin * (size_t)rs;
		dst->w[i] = malloc(sizeof(float) * nw);
		dst->b[i] = malloc(sizeof(float) * (size_t)src->g.layers[i].out);
		if (!dst->w[i] || !dst->b[i])
			goto fail;
		memcpy(dst->w[i], src->w[i], sizeof(float) * nw);
		memcpy(dst->b[i], src->b[i], sizeof(float) * (size_t)src->g.layers[i].out);
	}
	dst->head_w = malloc(sizeof(float) * nf * (size_t)src->n_classes);
	dst->head_b = malloc(sizeof(float) * (size_t)src->n_classes);
	if (!dst->head_w || !dst->head_b)
		goto fail;
	memcpy(dst->head_w, src->head_w, sizeof(float) * nf * (size_t)src->n_classes);
	memcpy(dst->head_b, src->head_b, sizeof(float) * (size_t)src->n_classes);
	return 0;
fail:
	mimetrain_mp_fini(dst);
	return -ENOMEM;
}

void mimetrain_mp_fini(struct mimetrain_mp *mp)
{
	if (!mp)
		return;
	for (int i = 0; i < MIME_MAX_LAYERS; i++) {
		free(mp->w[i]);
		free(mp->b[i]);
	}
	free(mp->head_w);
	free(mp->head_b);
	memset(mp, 0, sizeof(*mp));
}

struct norm_idx {
	double norm;
	int idx;
};

static int by_norm_desc(const void *a, const void *b)
{
	const struct norm_idx *x = a, *y = b;

	if (x->norm != y->norm)
		return x->norm < y->norm ? 1 : -1;
	return x->idx - y->idx; /* stable: the lower index first */
}

/* Permutes blocks of `block` floats inside each of `rows` rows of `row_len` floats: new
 * block c' = old block perm[c']. */
static void permute_blocks(float *a, size_t rows, size_t row_len, const int *perm, int n_blocks,
                           size_t block, float *tmp)
{
	for (size_t r = 0; r < rows; r++) {
		float *row = a + r * row_len;

		for (int c = 0; c < n_blocks; c++)
			memcpy(tmp + (size_t)c * block, row + (size_t)perm[c] * block,
			       sizeof(float) * block);
		memcpy(row, tmp, sizeof(float) * block * (size_t)n_blocks);
	}
}

void mimetrain_mp_sort_kernels(struct mimetrain_mp *mp)
{
	const struct mime_graph *g = &mp->g;

	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];
		struct norm_idx *ni;
		int rs, cin, K = l->out, *perm, next = -1;
		size_t row, consumer_row, consumer_rows, need;
		float *tmp, *consumer;

		if (!is_wlayer(l))
			continue;
		cin = full_cin(mp, i, &rs);
		row = (size_t)cin * (size_t)rs;
		for (int j = i + 1; j < g->n_layers && next < 0; j++)
			if (is_wlayer(&g->layers[j]))
				next = j;
		if (next >= 0) {
			int rs2, cin2 = full_cin(mp, next, &rs2);

			consumer = mp->w[next];
			consumer_row = (size_t)cin2 * (size_t)rs2;
			consumer_rows = (size_t)g->layers[next].out;
		} else {
			consumer = mp->head_w;
			consumer_row = (size_t)mime_shape_size(&mp->shapes[g->n_layers - 1]);
			consumer_rows = (size_t)mp->n_classes;
		}
		need = row * (size_t)K > consumer_row ? row * (size_t)K : consumer_row;
		ni = malloc(sizeof(*ni) * (size_t)K);
		perm = malloc(sizeof(int) * (size_t)K);
		tmp = malloc(sizeof(float) * need);
		if (!ni || !perm || !tmp) {
			free(ni);
			free(perm);
			free(tmp);
			return; /* left unsorted: still a valid network */
		}
		for (int k = 0; k < K; k++) {
			double s = (double)mp->b[i][k] * mp->b[i][k];

			for (size_t j = 0; j < row; j++)
				s += (double)mp->w[i][(size_t)k * row + j] *
				     mp->w[i][(size_t)k * row + j];
			ni[k].norm = s;
			ni[k].idx = k;
		}
		qsort(ni, (size_t)K, sizeof(*ni), by_norm_desc);
		for (int k = 0; k < K; k++)
			perm[k] = ni[k].idx;
		/* this layer's rows and biases */
		permute_blocks(mp->w[i], 1, row * (size_t)K, perm, K, row, tmp);
		permute_blocks(mp->b[i], 1, (size_t)K, perm, K, 1, tmp);
		/* its consumer's input channels (conv: blocks of R*S; fc or head after a flatten:
		 * blocks of the flattened H*W; after an fc: blocks of 1) */
		permute_blocks(consumer, consumer_rows, consumer_row, perm, K,
		               consumer_row / (size_t)K, tmp);
		free(ni);
		free(perm);
		free(tmp);
	}
}

void mimetrain_phase_def_fini(struct mimetrain_phase_def *ph)
{
	if (!ph)
		return;
	for (int i = 0; i < MIME_MAX_LAYERS; i++) {
		free(ph->keep[i]);
		ph->keep[i] = NULL;
	}
}

int mimetrain_phase_def_copy(struct mimetrain_phase_def *dst, const struct mimetrain_phase_def *src,
                             const struct mime_graph *g)
{
	memset(dst, 0, sizeof(*dst));
	memcpy(dst->k, src->k, sizeof(dst->k));
	dst->wuv = src->wuv;
	for (int i = 0; i < g->n_layers; i++) {
		size_t n;

		if (!src->keep[i])
			continue;
		n = mimetrain_phase_groups(g, src, i);
		dst->keep[i] = malloc(n ? n : 1);
		if (!dst->keep[i]) {
			mimetrain_phase_def_fini(dst);
			return -ENOMEM;
		}
		memcpy(dst->keep[i], src->keep[i], n);
	}
	return 0;
}

void mimetrain_phase_def_full(struct mimetrain_phase_def *ph, const struct mime_graph *g, int wuv)
{
	memset(ph, 0, sizeof(*ph));
	ph->wuv = wuv;
	for (int i = 0; i < g->n_layers; i++)
		if (is_wlayer(&g->layers[i]))
			ph->k[i] = g->layers[i].out;
}

int64_t mimetrain_phase_nonzero(const struct mimetrain_mp *mp, const struct mimetrain_phase_def *ph)
{
	struct mime_shape in[MIME_MAX_LAYERS], out[MIME_MAX_LAYERS];
	const struct mime_graph *g = &mp->g;
	int64_t n = 0;

	if (mime_phase_shapes(g, ph->k, in, out) < 0)
		return -1;
	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];
		int rs, cin;

		if (!is_wlayer(l))
			continue;
		rs = l->kind == MIME_LAYER_CONV ? l->kernel * l->kernel : 1;
		cin = l->kind == MIME_LAYER_CONV ? in[i].c : (int)mime_shape_size(&in[i]);
		n += ph->k[i]; /* biases */
		if (!ph->keep[i]) {
			n += (int64_t)ph->k[i] * cin * rs;
			continue;
		}
		for (int rg = 0; rg * ph->wuv < ph->k[i]; rg++) {
			int rows = ph->k[i] - rg * ph->wuv < ph->wuv ? ph->k[i] - rg * ph->wuv
			                                             : ph->wuv;

			for (int col = 0; col < cin * rs; col++)
				n += ph->keep[i][(size_t)rg * (size_t)(cin * rs) + (size_t)col]
				             ? rows
				             : 0;
		}
	}
	n += (int64_t)mp->n_classes * (mime_shape_size(&out[g->n_layers - 1]) + 1);
	return n;
}

void mimetrain_phase_coarse(const struct mime_graph *g, double f, int wuv,
                            struct mimetrain_phase_def *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->wuv = wuv;
	for (int i = 0; i < g->n_layers; i++) {
		int k;

		if (!is_wlayer(&g->layers[i]))
			continue;
		k = (int)lround(f * g->layers[i].out);
		ret->k[i] = k < 1 ? 1 : k > g->layers[i].out ? g->layers[i].out : k;
	}
}

void mimetrain_phase_coarse_for(const struct mimetrain_mp *mp, int64_t target, int wuv,
                                struct mimetrain_phase_def *ret)
{
	double lo = 0, hi = 1;

	mimetrain_phase_coarse(&mp->g, 1.0, wuv, ret);
	if (mimetrain_phase_nonzero(mp, ret) <= target)
		return;
	for (int it = 0; it < 40; it++) {
		double mid = 0.5 * (lo + hi);

		mimetrain_phase_coarse(&mp->g, mid, wuv, ret);
		if (mimetrain_phase_nonzero(mp, ret) <= target)
			lo = mid;
		else
			hi = mid;
	}
	mimetrain_phase_coarse(&mp->g, lo, wuv, ret);
}

/* l2 norm of group (rg, col) of layer i over rows < k, in the full array w. */
static double group_norm(const struct mimetrain_mp *mp, const float *w, int i, int k, int wuv,
                         int rg, int col)
{
	int rs, cin = full_cin(mp, i, &rs);
	size_t row = (size_t)cin * (size_t)rs;
	double s = 0;

	for (int kk = rg * wuv; kk < k && kk < rg * wuv + wuv; kk++) {
		double v = w[(size_t)kk * row + (size_t)col];

		s += v * v;
	}
	return s;
}

int mimetrain_phase_fine_between(const struct mimetrain_mp *mp,
                                 const struct mimetrain_phase_def *prev,
                                 const struct mimetrain_phase_def *top, float *const *src,
                                 int64_t target, struct mimetrain_phase_def *ret)
{
	const struct mime_graph *g = &mp->g;
	struct norm_idx *order[MIME_MAX_LAYERS] = {0};
	int n_cand[MIME_MAX_LAYERS] = {0}, n_forced[MIME_MAX_LAYERS] = {0};
	uint8_t *forced[MIME_MAX_LAYERS] = {0};
	double lo = 0, hi = 1;
	int r = 0;

	memset(ret, 0, sizeof(*ret));
	memcpy(ret->k, top->k, sizeof(ret->k));
	ret->wuv = top->wuv;
	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];
		int rs, cin, cin_prev, crs, crs_prev;
		size_t ng;

		if (l->kind != MIME_LAYER_CONV)
			continue;
		cin = mimetrain_phase_cin(g, top->k, i, &rs);
		cin_prev = prev ? mimetrain_phase_cin(g, prev->k, i, &rs) : 0;
		crs = cin * rs;
		crs_prev = cin_prev * rs;
		ng = mime_phase_mask_groups(top->k[i], crs, top->wuv);
		forced[i] = calloc(ng, 1);
		order[i] = malloc(sizeof(**order) * ng);
		ret->keep[i] = calloc(ng, 1);
		if (!forced[i] || !order[i] || !ret->keep[i]) {
			r = -ENOMEM;
			goto out;
		}
		for (size_t gi = 0; gi < ng; gi++) {
			const int rg = (int)(gi / (size_t)crs), col = (int)(gi % (size_t)crs);
			int f = 0;

			if (top->keep[i] && !top->keep[i][gi])
				continue; /* not in top: never kept */
			for (int kk = rg * top->wuv;
			     kk < top->k[i] && kk < rg * top->wuv + top->wuv; kk++)
				f |= prev && keeps(prev, i, crs_prev, kk, col);
			if (f) {
				forced[i][gi] = 1;
				n_forced[i]++;
				continue;
			}
			order[i][n_cand[i]].norm =
				group_norm(mp, src[i], i, top->k[i], top->wuv, rg, col);
			order[i][n_cand[i]].idx = (int)gi;
			n_cand[i]++;
		}
		qsort(order[i], (size_t)n_cand[i], sizeof(**order), by_norm_desc);
	}
	/* the same fraction q of every layer's candidates, the largest q within target */
	for (int it = 0; it <= 40; it++) {
		const double q = it == 40 ? lo : 0.5 * (lo + hi);

		for (int i = 0; i < g->n_layers; i++) {
			size_t ng;
			int take;

			if (!forced[i])
				continue;
			ng = mimetrain_phase_groups(g, ret, i);
			memcpy(ret->keep[i], forced[i], ng);
			take = (int)ceil(q * n_cand[i] - 1e-9);
			for (int c = 0; c < take && c < n_cand[i]; c++)
				ret->keep[i][order[i][c].idx] = 1;
		}
		if (it == 40)
			break;
		if (mimetrain_phase_nonzero(mp, ret) <= target)
			lo = q;
		else
			hi = q;
	}
	/* a layer that keeps every group is dense */
	for (int i = 0; i < g->n_layers; i++) {
		size_t ng, j;

		if (!ret->keep[i])
			continue;
		ng = mimetrain_phase_groups(g, ret, i);
		for (j = 0; j < ng && ret->keep[i][j]; j++)
			;
		if (j == ng) {
			free(ret->keep[i]);
			ret->keep[i] = NULL;
		}
	}
out:
	for (int i = 0; i < MIME_MAX_LAYERS; i++) {
		free(order[i]);
		free(forced[i]);
	}
	if (r < 0)
		mimetrain_phase_def_fini(ret);
	return r;
}

int mimetrain_phase_nested(const struct mime_graph *g, const struct mimetrain_phase_def *a,
                           const struct mimetrain_phase_def *b)
{
	for (int i = 0; i < g->n_layers; i++) {
		int rs, cin_a, cin_b;

		if (!is_wlayer(&g->layers[i]))
			continue;
		if (a->k[i] > b->k[i])
			return 0;
		cin_a = mimetrain_phase_cin(g, a->k, i, &rs);
		cin_b = mimetrain_phase_cin(g, b->k, i, &rs);
		for (int kk = 0; kk < a->k[i]; kk++)
			for (int col = 0; col < cin_a * rs; col++)
				if (keeps(a, i, cin_a * rs, kk, col) &&
				    !keeps(b, i, cin_b * rs, kk, col))
					return 0;
	}
	return 1;
}

void mimetrain_sub_fini(struct mimetrain_sub *s)
{
	if (!s)
		return;
	for (int i = 0; i < MIME_MAX_LAYERS; i++) {
		free(s->w[i]);
		free(s->b[i]);
	}
	free(s->head_w);
	free(s->head_b);
	memset(s, 0, sizeof(*s));
}

int mimetrain_sub_extract(const struct mimetrain_mp *mp, float *const *w, float *const *b,
                          const float *head_w, const struct mimetrain_phase_def *ph,
                          struct mimetrain_sub *ret_sub)
{
	struct mime_shape shapes[MIME_MAX_LAYERS];
	struct mimetrain_sub s;
	size_t nf_full = (size_t)mime_shape_size(&mp->shapes[mp->g.n_layers - 1]);
	int r;

	memset(&s, 0, sizeof(s));
	s.g = mp->g;
	for (int i = 0; i < s.g.n_layers; i++)
		if (is_wlayer(&s.g.layers[i]))
			s.g.layers[i].out = ph->k[i];
	r = mime_graph_check(&s.g, shapes, NULL);
	if (r < 0)
		return r;
	for (int i = 0; i < s.g.n_layers; i++) {
		int rs, cin_full, cin;
		size_t crs;

		if (!is_wlayer(&s.g.layers[i]))
			continue;
		cin_full = full_cin(mp, i, &rs);
		cin = mimetrain_phase_cin(&mp->g, ph->k, i, &rs);
		crs = (size_t)cin * (size_t)rs;
		s.w[i] = malloc(sizeof(float) * (size_t)ph->k[i] * crs);
		s.b[i] = malloc(sizeof(float) * (size_t)ph->k[i]);
		if (!s.w[i] || !s.b[i]) {
			mimetrain_sub_fini(&s);
			return -ENOMEM;
		}
		for (int kk = 0; kk < ph->k[i]; kk++) {
			for (size_t col = 0; col < crs; col++)
				s.w[i][(size_t)kk * crs + col] =
					keeps(ph, i, (int)crs, kk, (int)col)
						? w[i][(size_t)kk * (size_t)cin_full * (size_t)rs +
				                       col]
						: 0.0f;
			s.b[i][kk] = b[i][kk];
		}
	}
	s.n_classes = mp->n_classes;
	s.features = (int)mime_shape_size(&shapes[s.g.n_layers - 1]);
	s.head_w = malloc(sizeof(float) * (size_t)s.features * (size_t)s.n_classes);
	s.head_b = malloc(sizeof(float) * (size_t)s.n_classes);
	if (!s.head_w || !s.head_b) {
		mimetrain_sub_fini(&s);
		return -ENOMEM;
	}
	for (int c = 0; c < s.n_classes; c++)
		memcpy(s.head_w + (size_t)c * (size_t)s.features,
		       (head_w ? head_w : mp->head_w) + (size_t)c * nf_full,
		       sizeof(float) * (size_t)s.features);
	memcpy(s.head_b, mp->head_b, sizeof(float) * (size_t)s.n_classes);
	*ret_sub = s;
	return 0;
}

void mimetrain_sub_store(struct mimetrain_mp *mp, const struct mimetrain_phase_def *ph,
                         const struct mimetrain_sub *s)
{
	const size_t nf_full = (size_t)mime_shape_size(&mp->shapes[mp->g.n_layers - 1]);

	for (int c = 0; c < s->n_classes; c++) /* the head's columns of the phase's features */
		memcpy(mp->head_w + (size_t)c * nf_full,
		       s->head_w + (size_t)c * (size_t)s->features,
		       sizeof(float) * (size_t)s->features);
	memcpy(mp->head_b, s->head_b, sizeof(float) * (size_t)s->n_classes);
	for (int i = 0; i < mp->g.n_layers; i++) {
		int rs, cin_full, cin;
		size_t crs;

		if (!is_wlayer(&mp->g.layers[i]))
			continue;
		cin_full = full_cin(mp, i, &rs);
		cin = mimetrain_phase_cin(&mp->g, ph->k, i, &rs);
		crs = (size_t)cin * (size_t)rs;
		for (int kk = 0; kk < ph->k[i]; kk++) {
			for (size_t col = 0; col < crs; col++)
				if (keeps(ph, i, (int)crs, kk, (int)col))
					mp->w[i][(size_t)kk * (size_t)cin_full * (size_t)rs + col] =
						s->w[i][(size_t)kk * crs + col];
			mp->b[i][kk] = s->b[i][kk];
		}
	}
}

void mimetrain_sub_restore_from(struct mimetrain_sub *s, const struct mimetrain_mp *mp,
                                const struct mimetrain_phase_def *ph,
                                const struct mimetrain_phase_def *prev, float *const *w,
                                float *const *b)
{
	for (int i = 0; i < mp->g.n_layers; i++) {
		int rs, cin_full, cin, cin_prev;
		size_t crs;

		if (!is_wlayer(&mp->g.layers[i]))
			continue;
		cin_full = full_cin(mp, i, &rs);
		cin = mimetrain_phase_cin(&mp->g, ph->k, i, &rs);
		cin_prev = prev ? mimetrain_phase_cin(&mp->g, prev->k, i, &rs) : 0;
		crs = (size_t)cin * (size_t)rs;
		for (int kk = 0; kk < ph->k[i]; kk++) {
			for (size_t col = 0; col < crs; col++)
				if (keeps(ph, i, (int)crs, kk, (int)col) &&
				    !(prev && keeps(prev, i, cin_prev * rs, kk, (int)col)))
					s->w[i][(size_t)kk * crs + col] =
						w[i]
						 [(size_t)kk * (size_t)cin_full * (size_t)rs + col];
			if (!prev || kk >= prev->k[i])
				s->b[i][kk] = b[i][kk];
		}
	}
}

int mimetrain_sub_model(const struct mimetrain_sub *s, const char *name,
                        struct mime_model *ret_model)
{
	struct mime_model m;
	struct mime_task_params *tp;

	memset(&m, 0, sizeof(m));
	m.graph = s->g;
	for (int i = 0; i < s->g.n_layers; i++) {
		m.weight[i] = s->w[i];
		m.bias[i] = s->b[i];
	}
	tp = calloc(1, sizeof(*tp));
	if (!tp)
		return -ENOMEM;
	tp->name = name;
	tp->n_classes = s->n_classes;
	tp->head_w = s->head_w;
	tp->head_b = s->head_b;
	tp->granularity = MIME_THR_NONE;
	m.n_tasks = 1;
	m.tasks = tp;
	*ret_model = m;
	return 0;
}

static struct mimetrain_param *find_param(struct mimetrain_net *net, const char *name)
{
	struct mimetrain_param *p;
	int n;

	p = mimetrain_net_params(net, &n);
	for (int i = 0; i < n; i++)
		if (strcmp(p[i].name, name) == 0)
			return &p[i];
	return NULL;
}

int mimetrain_sub_train(struct mimetrain_sub *s, const struct mimetrain_mp *mp,
                        const struct mimetrain_phase_def *ph,
                        const struct mimetrain_phase_def *prev,
                        const struct mimetrain_taskset *train,
                        const struct mimetrain_sub_train_config *cfg, FILE *log,
                        struct mime_errinfo *ei)
{
	const struct mime_graph *g = &s->g;
	const long isz = mime_shape_size(&g->input);
	const int B = cfg->batch;
	struct mimetrain_net *net = NULL;
	struct mimetrain_optim *opt = NULL;
	struct mimetrain_param *pw[MIME_MAX_LAYERS] = {0}, *pb[MIME_MAX_LAYERS] = {0}, *hw, *hb;
	uint8_t *zero[MIME_MAX_LAYERS] = {0}, *fixed[MIME_MAX_LAYERS] = {0};
	float *saved[MIME_MAX_LAYERS] = {0}, *x = NULL;
	int n_fixed_b[MIME_MAX_LAYERS] = {0};
	uint8_t *y = NULL;
	int *perm = NULL, n_params, r;
	struct mimetrain_param *params;
	long steps;

	if (train->n < B || train->c != g->input.c || train->h != g->input.h ||
	    train->w != g->input.w)
		return mime_errinfo_set(ei, MIME_EINVAL,
		                        "phases: training set does not fit the graph");
	r = mimetrain_net_create(g,
	                         &(struct mimetrain_net_config){.n_classes = s->n_classes,
	                                                        .batchnorm = 0,
	                                                        .max_batch = B,
	                                                        .threads = cfg->threads,
	                                                        .seed = cfg->seed},
	                         &net, ei);
	if (r < 0)
		return r;
	for (int i = 0; i < g->n_layers; i++) {
		char name[MIME_NAME_MAX + 16];
		int rs, cin, cin_prev = 0;
		size_t crs, n;

		if (!is_wlayer(&g->layers[i]))
			continue;
		mimetrain_net_set_layer(net, i, s->w[i], s->b[i]);
		snprintf(name, sizeof(name), "%s.weight", g->layers[i].name);
		pw[i] = find_param(net, name);
		snprintf(name, sizeof(name), "%s.bias", g->layers[i].name);
		pb[i] = find_param(net, name);
		cin = mimetrain_phase_cin(&mp->g, ph->k, i, &rs);
		if (prev)
			cin_prev = mimetrain_phase_cin(&mp->g, prev->k, i, &rs);
		crs = (size_t)cin * (size_t)rs;
		n = (size_t)ph->k[i] * crs;
		if (!pw[i] || !pb[i] || pw[i]->n != n) {
			r = mime_errinfo_set(ei, MIME_EINVAL, "phases: net layout of '%s'",
			                     g->layers[i].name);
			goto out;
		}
		zero[i] = calloc(n, 1);
		fixed[i] = calloc(n, 1);
		saved[i] = malloc(sizeof(float) * n);
		if (!zero[i] || !fixed[i] || !saved[i]) {
			r = -ENOMEM;
			goto out;
		}
		memcpy(saved[i], s->w[i], sizeof(float) * n);
		for (int kk = 0; kk < ph->k[i]; kk++)
			for (size_t col = 0; col < crs; col++) {
				zero[i][(size_t)kk * crs + col] =
					!keeps(ph, i, (int)crs, kk, (int)col);
				fixed[i][(size_t)kk * crs + col] =
					prev && keeps(prev, i, cin_prev * rs, kk, (int)col);
			}
		n_fixed_b[i] = prev ? prev->k[i] : 0;
	}
	hw = find_param(net, "head.weight");
	hb = find_param(net, "head.bias");
	if (!hw || !hb || hw->n != (size_t)s->n_classes * (size_t)s->features) {
		r = mime_errinfo_set(ei, MIME_EINVAL, "phases: net has no head of %d features",
		                     s->features);
		goto out;
	}
	memcpy(hw->w, s->head_w, sizeof(float) * hw->n);
	memcpy(hb->w, s->head_b, sizeof(float) * hb->n);
	params = mimetrain_net_params(net, &n_params);
	steps = (long)(train->n / B) * cfg->epochs;
	r = mimetrain_optim_create(
		&(struct mimetrain_optim_config){.kind = MIMETRAIN_ADAM,
	                                         .lr = cfg->lr,
	                                         .schedule = MIMETRAIN_LR_COSINE,
	                                         .total_steps = steps > 0 ? steps : 1},
		params, n_params, &opt, ei);
	if (r < 0)
		goto out;
	x = malloc(sizeof(float) * (size_t)B * (size_t)isz);
	y = malloc((size_t)B);
	perm = malloc(sizeof(int) * (size_t)train->n);
	if (!x || !y || !perm) {
		r = -ENOMEM;
		goto out;
	}
	for (int epoch = 0; epoch < cfg->epochs; epoch++) {
		struct mimetrain_rng rng;
		double loss = 0, t0 = now_s();
		long hits = 0, seen = 0;

		for (int i = 0; i < train->n; i++)
			perm[i] = i;
		mimetrain_rng_seed(&rng, mimetrain_rng_derive(cfg->seed, 0x9a5e0000ull + epoch));
		mimetrain_shuffle(perm, train->n, &rng);
		for (int i0 = 0; i0 + B <= train->n; i0 += B) {
			int correct;

			for (int bb = 0; bb < B; bb++) {
				memcpy(x + (size_t)bb * isz, train->x + (size_t)perm[i0 + bb] * isz,
				       sizeof(float) * isz);
				y[bb] = train->y[perm[i0 + bb]];
			}
			mimetrain_net_forward(net, x, B, 1);
			loss += mimetrain_net_loss(net, y, &correct) * B;
			hits += correct;
			seen += B;
			mimetrain_net_backward(net, 0);
			mimetrain_optim_step(opt);
			for (int i = 0; i < g->n_layers; i++)
				for (size_t j = 0; zero[i] && j < pw[i]->n; j++)
					if (zero[i][j])
						pw[i]->w[j] = 0.0f;
		}
		if (!isfinite(loss)) {
			r = mime_errinfo_set(ei, MIME_EINVAL,
			                     "phases: the loss diverged in epoch %d", epoch + 1);
			goto out;
		}
		/* the fixed part: overwritten at the end of every epoch */
		for (int i = 0; i < g->n_layers; i++) {
			for (size_t j = 0; fixed[i] && j < pw[i]->n; j++)
				if (fixed[i][j])
					pw[i]->w[j] = saved[i][j];
			if (pb[i])
				memcpy(pb[i]->w, s->b[i], sizeof(float) * (size_t)n_fixed_b[i]);
		}
		if (log) {
			fprintf(log, "    epoch %d/%d loss %.4f train_acc %.2f%% %.1fs\n",
			        epoch + 1, cfg->epochs, loss / (double)seen,
			        100.0 * (double)hits / (double)seen, now_s() - t0);
			fflush(log);
		}
	}
	for (int i = 0; i < g->n_layers; i++) {
		if (!pw[i])
			continue;
		memcpy(s->w[i], pw[i]->w, sizeof(float) * pw[i]->n);
		memcpy(s->b[i], pb[i]->w, sizeof(float) * pb[i]->n);
	}
	memcpy(s->head_w, hw->w, sizeof(float) * hw->n);
	memcpy(s->head_b, hb->w, sizeof(float) * hb->n);
	r = 0;
out:
	for (int i = 0; i < MIME_MAX_LAYERS; i++) {
		free(zero[i]);
		free(fixed[i]);
		free(saved[i]);
	}
	free(x);
	free(y);
	free(perm);
	mimetrain_optim_destroy(opt);
	mimetrain_net_destroy(net);
	return r;
}

void mimetrain_phase_to_engine(const struct mimetrain_phase_def *ph, const struct mime_graph *g,
                               struct mime_phase *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->wuv = ph->wuv;
	for (int i = 0; i < g->n_layers; i++) {
		ret->layer[i].k_active = ph->k[i];
		ret->layer[i].keep = ph->keep[i];
	}
}

static int cmp_double(const void *a, const void *b)
{
	const double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* An engine on mp's full weights, in phase ph with head (sized for the phase): the views it
 * borrows live here, next to it. */
struct phase_run {
	struct mime_model m;
	struct mime_task_params full, phase_task;
	struct mime_engine *e;
};

static int phase_run_open(struct phase_run *pr, const struct mimetrain_mp *mp,
                          const struct mimetrain_phase_def *ph, const float *head_w,
                          const float *head_b, int max_batch, int threads, struct mime_errinfo *ei)
{
	struct mime_phase eph;
	int r;

	memset(pr, 0, sizeof(*pr));
	pr->m.graph = mp->g;
	for (int i = 0; i < mp->g.n_layers; i++) {
		pr->m.weight[i] = mp->w[i];
		pr->m.bias[i] = mp->b[i];
	}
	pr->full.name = "parent";
	pr->full.n_classes = mp->n_classes;
	pr->full.head_w = mp->head_w;
	pr->full.head_b = mp->head_b;
	pr->full.granularity = MIME_THR_NONE;
	pr->phase_task = pr->full;
	pr->phase_task.head_w = head_w;
	pr->phase_task.head_b = head_b;
	pr->m.n_tasks = 1;
	pr->m.tasks = &pr->full;
	r = mime_engine_create(
		&pr->m, &(struct mime_engine_config){.max_batch = max_batch, .n_threads = threads},
		&pr->e, ei);
	if (r < 0)
		return r;
	mimetrain_phase_to_engine(ph, &mp->g, &eph);
	r = mime_engine_set_phase(pr->e, &eph, &pr->phase_task, ei);
	if (r < 0) {
		mime_engine_destroy(pr->e);
		pr->e = NULL;
	}
	return r;
}

int mimetrain_phase_measure(const struct mimetrain_mp *mp, const struct mimetrain_phase_def *ph,
                            const float *head_w, const float *head_b,
                            const struct mimetrain_taskset *set, int threads, int reps,
                            double *ret_latency_ms, int64_t *ret_memory_bytes,
                            struct mime_errinfo *ei)
{
	const long isz = (long)set->c * set->h * set->w;
	struct mime_engine_result res;
	struct phase_run pr;
	double *t;
	int task0 = 0, r;

	if (reps < 1)
		reps = 1;
	t = malloc(sizeof(double) * (size_t)reps);
	if (!t)
		return -ENOMEM;
	r = phase_run_open(&pr, mp, ph, head_w, head_b, 1, threads, ei);
	if (r < 0)
		goto out;
	for (int i = 0; i < 20 && i < set->n; i++) /* warm-up */
		mime_engine_forward(pr.e, 1, set->x + (size_t)i * isz, &task0, &res);
	for (int i = 0; i < reps; i++) {
		double t0 = now_s();

		mime_engine_forward(pr.e, 1, set->x + (size_t)(i % set->n) * isz, &task0, &res);
		t[i] = now_s() - t0;
	}
	qsort(t, (size_t)reps, sizeof(double), cmp_double);
	*ret_latency_ms = 1e3 * t[reps / 4]; /* lower quartile: robust to a busy machine */
	*ret_memory_bytes = (int64_t)mime_engine_plan_bytes(pr.e);
	mime_engine_destroy(pr.e);
out:
	free(t);
	return r;
}

int mimetrain_phase_eval(const struct mimetrain_mp *mp, const struct mimetrain_phase_def *ph,
                         const float *head_w, const float *head_b,
                         const struct mimetrain_taskset *set, int threads, double *ret_accuracy,
                         struct mime_errinfo *ei)
{
	enum { BATCH = 100 };
	const long isz = (long)set->c * set->h * set->w;
	struct mime_engine_result res;
	struct phase_run pr;
	int tasks[BATCH] = {0}, r;
	long hits = 0;

	r = phase_run_open(&pr, mp, ph, head_w, head_b, BATCH, threads, ei);
	for (int i0 = 0; r == 0 && i0 < set->n; i0 += BATCH) {
		const int bn = set->n - i0 < BATCH ? set->n - i0 : BATCH;

		r = mime_engine_forward(pr.e, bn, set->x + (size_t)i0 * isz, tasks, &res);
		for (int bb = 0; r == 0 && bb < bn; bb++) {
			int cls;
			float p;

			mime_topk(res.logits + (long)bb * res.max_classes, mp->n_classes, 1, &cls,
			          &p);
			hits += cls == set->y[i0 + bb];
		}
	}
	if (r == 0)
		*ret_accuracy = (double)hits / (double)set->n;
	mime_engine_destroy(pr.e);
	return r;
}

static void poly_terms(double x, double y, double *ret)
{
	ret[0] = 1;
	ret[1] = x;
	ret[2] = y;
	ret[3] = x * x;
	ret[4] = x * y;
	ret[5] = y * y;
	ret[6] = x * x * x;
	ret[7] = x * x * y;
	ret[8] = x * y * y;
	ret[9] = y * y * y;
}

double mimetrain_poly_eval(const struct mimetrain_poly *p, double x, double y)
{
	double t[MIMETRAIN_POLY_TERMS], z = 0;

	poly_terms(x / p->x_scale, y / p->y_scale, t);
	for (int j = 0; j < MIMETRAIN_POLY_TERMS; j++)
		z += p->coef[j] * t[j];
	return z;
}

int mimetrain_poly_fit(const double *x, const double *y, const double *z, int n,
                       struct mimetrain_poly *ret)
{
	enum { T = MIMETRAIN_POLY_TERMS };
	double a[T][T + 1], mean = 0, ss_tot = 0, ss_res = 0;
	struct mimetrain_poly p;

	if (n < 1)
		return MIME_EINVAL;
	memset(&p, 0, sizeof(p));
	memset(a, 0, sizeof(a));
	p.x_scale = p.y_scale = 0;
	for (int i = 0; i < n; i++) {
		p.x_scale = fabs(x[i]) > p.x_scale ? fabs(x[i]) : p.x_scale;
		p.y_scale = fabs(y[i]) > p.y_scale ? fabs(y[i]) : p.y_scale;
	}
	if (p.x_scale == 0)
		p.x_scale = 1;
	if (p.y_scale == 0)
		p.y_scale = 1;
	/* normal equations with a small ridge: (A'A + lambda I) c = A'z */
	for (int i = 0; i < n; i++) {
		double t[T];

		poly_terms(x[i] / p.x_scale, y[i] / p.y_scale, t);
		for (int r = 0; r < T; r++) {
			for (int c = 0; c < T; c++)
				a[r][c] += t[r] * t[c];
			a[r][T] += t[r] * z[i];
		}
	}
	for (int r = 0; r < T; r++)
		a[r][r] += 1e-9 * (a[r][r] > 0 ? a[r][r] : 1) + 1e-12;
	/* Gaussian elimination with partial pivoting */
	for (int c = 0; c < T; c++) {
		int piv = c;

		for (int r = c + 1; r < T; r++)
			if (fabs(a[r][c]) > fabs(a[piv][c]))
				piv = r;
		if (piv != c)
			for (int k = 0; k <= T; k++) {
				double tmp = a[c][k];

				a[c][k] = a[piv][k];
				a[piv][k] = tmp;
			}
		if (a[c][c] == 0)
			continue;
		for (int r = c + 1; r < T; r++) {
			double f = a[r][c] / a[c][c];

			for (int k = c; k <= T; k++)
				a[r][k] -= f * a[c][k];
		}
	}
	for (int c = T - 1; c >= 0; c--) {
		double s = a[c][T];

		for (int k = c + 1; k < T; k++)
			s -= a[c][k] * p.coef[k];
		p.coef[c] = a[c][c] != 0 ? s / a[c][c] : 0;
	}
	for (int i = 0; i < n; i++)
		mean += z[i] / n;
	for (int i = 0; i < n; i++) {
		double e = z[i] - mimetrain_poly_eval(&p, x[i], y[i]);

		ss_res += e * e;
		ss_tot += (z[i] - mean) * (z[i] - mean);
	}
	p.r2 = ss_tot > 0 ? 1 - ss_res / ss_tot : 1;
	*ret = p;
	return 0;
}
