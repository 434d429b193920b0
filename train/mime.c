// SPDX-License-Identifier: MIT
/* mime -- see mime.h. */
#include "train/mime.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/image.h"
#include "train/optim.h"

#define EVAL_BATCH 64

struct mimetrain_mime {
	struct mimetrain_mime_config cfg;
	struct mime_graph graph;
	struct mimetrain_net *net;
	int n_classes;
	int n_masked;
	int masked_layer[MIME_MAX_LAYERS];
	float *t[MIME_MAX_LAYERS], *gt[MIME_MAX_LAYERS]; /* MIME: per masked layer */
	size_t n_t[MIME_MAX_LAYERS];
	struct mimetrain_param *train_params; /* what the main optimizer updates */
	int n_train_params;
	struct mimetrain_param *head_params; /* fine-tune: the head, with its own optimizer */
	int n_head_params;
	struct mimetrain_optim *optim, *head_optim;
	float *body_w[MIME_MAX_LAYERS], *body_b[MIME_MAX_LAYERS]; /* fine-tune: engine copies */
	struct mimetrain_param head_w; /* the head's weights (the net's) */
	uint8_t *head_keep;            /* a pruned head: which weights live; else NULL */
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- tasksets ---- */

int mimetrain_taskset_make(const struct mimetrain_data *d, const struct mime_input_spec *spec,
                           struct mimetrain_taskset *ret_set, struct mime_errinfo *ei)
{
	const long isz = (long)spec->channels * spec->height * spec->width;
	const long psz = (long)d->h * d->w;
	struct mimetrain_taskset s = {0};
	struct mime_image img = {.width = d->w, .height = d->h, .channels = 1};
	float *pix;
	int r = 0;

	if (d->c != 1)
		return mime_errinfo_set(ei, MIME_EINVAL, "taskset: %d-channel images", d->c);
	if (d->n <= 0 || isz <= 0 || (size_t)d->n > SIZE_MAX / sizeof(float) / (size_t)isz)
		return mime_errinfo_set(ei, MIME_EINVAL, "taskset: bad size");
	s.x = malloc(sizeof(float) * (size_t)d->n * (size_t)isz);
	s.y = malloc((size_t)d->n);
	pix = malloc(sizeof(float) * (size_t)psz);
	if (!s.x || !s.y || !pix) {
		r = -ENOMEM;
		goto out;
	}
	img.pixels = pix;
	for (int i = 0; i < d->n; i++) {
		const uint8_t *src = d->pixels + (size_t)i * psz;

		for (long p = 0; p < psz; p++)
			pix[p] = (float)src[p] / 255.0f;
		r = mime_image_preprocess(&img, spec, s.x + (size_t)i * isz, ei);
		if (r < 0)
			goto out;
		s.y[i] = d->labels[i];
	}
	s.n = d->n;
	s.c = spec->channels;
	s.h = spec->height;
	s.w = spec->width;
	s.n_classes = d->n_classes;
	*ret_set = s;
	s.x = NULL;
	s.y = NULL;
out:
	free(pix);
	free(s.x);
	free(s.y);
	return r;
}

void mimetrain_taskset_fini(struct mimetrain_taskset *s)
{
	if (!s)
		return;
	free(s->x);
	free(s->y);
	memset(s, 0, sizeof(*s));
}

void mimetrain_taskset_stats(const struct mimetrain_taskset *s, float *ret_mean, float *ret_std)
{
	const size_t n = (size_t)s->n * s->c * s->h * s->w;
	double sum = 0, ss = 0, mean;

	for (size_t i = 0; i < n; i++)
		sum += s->x[i];
	mean = n ? sum / (double)n : 0;
	for (size_t i = 0; i < n; i++)
		ss += (s->x[i] - mean) * (s->x[i] - mean);
	*ret_mean = (float)mean;
	*ret_std = n ? (float)sqrt(ss / (double)n) : 1.0f;
	if (!(*ret_std > 0))
		*ret_std = 1.0f;
}

/* ---- checksums and the regulariser ---- */

int mimetrain_taskset_split(const struct mimetrain_taskset *all, int n_val, uint64_t seed,
                            struct mimetrain_taskset *ret_train, struct mimetrain_taskset *ret_val,
                            struct mime_errinfo *ei)
{
	const size_t isz = (size_t)all->c * (size_t)all->h * (size_t)all->w;
	struct mimetrain_taskset sets[2] = {{0}, {0}};
	int count[256] = {0}, want[256] = {0}, taken[256] = {0};
	uint8_t *to_val = NULL;
	int *perm = NULL, n_to_val = 0, r = 0;
	struct mimetrain_rng rng;

	if (all->n < 2 || n_val < 1 || n_val >= all->n)
		return mime_errinfo_set(ei, MIME_EINVAL,
		                        "validation split: %d of %d images (1..%d allowed)", n_val,
		                        all->n, all->n - 1);
	for (int i = 0; i < all->n; i++)
		count[all->y[i]]++;
	for (int k = 0; k < 256; k++) {
		want[k] = (int)((double)n_val * count[k] / all->n + 0.5);
		n_to_val += want[k];
	}
	if (n_to_val < 1 || n_to_val >= all->n)
		return mime_errinfo_set(ei, MIME_EINVAL,
		                        "validation split: %d of %d images leaves a side empty",
		                        n_to_val, all->n);
	perm = malloc(sizeof(int) * (size_t)all->n);
	to_val = calloc((size_t)all->n, 1);
	if (!perm || !to_val) {
		r = -ENOMEM;
		goto out;
	}
	for (int i = 0; i < all->n; i++)
		perm[i] = i;
	mimetrain_rng_seed(&rng, mimetrain_rng_derive(seed, 0x7a11da7eull));
	mimetrain_shuffle(perm, all->n, &rng);
	for (int j = 0; j < all->n; j++) {
		const int i = perm[j], k = all->y[i];

		if (taken[k] < want[k]) {
			taken[k]++;
			to_val[i] = 1;
		}
	}
	for (int s = 0; s < 2; s++) {
		struct mimetrain_taskset *t = &sets[s];
		const int n = s ? n_to_val : all->n - n_to_val;

		*t = (struct mimetrain_taskset){
			.n = n, .c = all->c, .h = all->h, .w = all->w, .n_classes = all->n_classes};
		t->x = malloc(sizeof(float) * isz * (size_t)n);
		t->y = malloc((size_t)n);
		if (!t->x || !t->y) {
			r = -ENOMEM;
			goto out;
		}
		for (int i = 0, at = 0; i < all->n; i++) {
			if (to_val[i] != s)
				continue;
			memcpy(t->x + isz * (size_t)at, all->x + isz * (size_t)i,
			       sizeof(float) * isz);
			t->y[at++] = all->y[i];
		}
	}
	*ret_train = sets[0];
	*ret_val = sets[1];
out:
	if (r < 0) {
		mimetrain_taskset_fini(&sets[0]);
		mimetrain_taskset_fini(&sets[1]);
	}
	free(perm);
	free(to_val);
	return r;
}

int mimetrain_hold_out(struct mimetrain_taskset *train, int n, double percent, uint64_t seed,
                       struct mimetrain_taskset *val, struct mime_errinfo *ei)
{
	struct mimetrain_taskset all = *train;
	int r;

	if (percent > 0)
		n = (int)(percent / 100.0 * train->n + 0.5);
	if (n <= 0)
		return 0;
	r = mimetrain_taskset_split(&all, n, seed, train, val, ei);
	if (r == 0)
		mimetrain_taskset_fini(&all);
	else
		*train = all;
	return r;
}

uint64_t mimetrain_fnv1a(const void *data, size_t n, uint64_t h)
{
	const uint8_t *p = data;

	if (h == 0)
		h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static size_t layer_n_weights(const struct mime_graph *g, int i)
{
	struct mime_shape shapes[MIME_MAX_LAYERS];
	const struct mime_layer_spec *l = &g->layers[i];

	if (mime_graph_check(g, shapes, NULL) < 0)
		return 0;
	return (size_t)(mime_graph_layer_params(l, i ? &shapes[i - 1] : &g->input) - l->out);
}

uint64_t mimetrain_model_checksum(const struct mime_model *model)
{
	uint64_t h = 0;

	for (int i = 0; i < model->graph.n_layers; i++) {
		const struct mime_layer_spec *l = &model->graph.layers[i];

		if (l->kind != MIME_LAYER_CONV && l->kind != MIME_LAYER_FC)
			continue;
		h = mimetrain_fnv1a(model->weight[i],
		                    sizeof(float) * layer_n_weights(&model->graph, i), h);
		h = mimetrain_fnv1a(model->bias[i], sizeof(float) * (size_t)l->out, h);
	}
	return h;
}

uint64_t mimetrain_mime_body_checksum(const struct mimetrain_mime *m)
{
	struct mimetrain_param *p;
	uint64_t h = 0;
	int n;

	/* the net's params are weight then bias per conv/fc layer in graph order, the head
	 * last: the same byte sequence as mimetrain_model_checksum() when nothing changed */
	p = mimetrain_net_params(m->net, &n);
	for (int i = 0; i < n; i++)
		if (strncmp(p[i].name, "head.", 5) != 0)
			h = mimetrain_fnv1a(p[i].w, sizeof(float) * p[i].n, h);
	return h;
}

double mimetrain_threshold_reg(const float *t, size_t n, double beta, int sign, float *g)
{
	double r = 0;

	for (size_t i = 0; i < n; i++) {
		double e = exp((double)sign * t[i]);

		r += e;
		if (g)
			g[i] += (float)(beta * sign * e);
	}
	return beta * r;
}

/* ---- the trainer ---- */

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

static int push_param(struct mimetrain_param **arr, int *n, const struct mimetrain_param *p)
{
	struct mimetrain_param *a = realloc(*arr, sizeof(**arr) * (size_t)(*n + 1));

	if (!a)
		return -ENOMEM;
	a[*n] = *p;
	*arr = a;
	(*n)++;
	return 0;
}

static int mime_setup(struct mimetrain_mime *m, const struct mime_model *parent, int head_task,
                      struct mime_errinfo *ei)
{
	const struct mimetrain_mime_config *c = &m->cfg;
	struct mime_shape shapes[MIME_MAX_LAYERS];
	struct mimetrain_param *all, *hw, *hb;
	int n_all, r;

	r = mime_graph_check(&m->graph, shapes, ei);
	if (r < 0)
		return r;
	for (int i = 0; i < m->graph.n_layers; i++) {
		const struct mime_layer_spec *l = &m->graph.layers[i];

		if (l->kind != MIME_LAYER_CONV && l->kind != MIME_LAYER_FC)
			continue;
		if (!parent->weight[i] || !parent->bias[i])
			return mime_errinfo_set(ei, MIME_EINVAL, "parent has no weights for '%s'",
			                        l->name);
		r = mimetrain_net_set_layer(m->net, i, parent->weight[i], parent->bias[i]);
		if (r < 0)
			return mime_errinfo_set(ei, r, "cannot load '%s'", l->name);
		if (mime_graph_layer_masked(&m->graph, i))
			m->masked_layer[m->n_masked++] = i;
	}
	hw = find_param(m->net, "head.weight");
	hb = find_param(m->net, "head.bias");
	if (!hw || !hb)
		return mime_errinfo_set(ei, MIME_EINVAL, "net has no head");
	m->head_w = *hw;
	if (head_task >= 0) {
		const struct mime_task_params *tp;

		if (head_task >= parent->n_tasks)
			return mime_errinfo_set(ei, MIME_EINVAL, "no parent task %d", head_task);
		tp = &parent->tasks[head_task];
		if (tp->n_classes != m->n_classes || !tp->head_w || !tp->head_b)
			return mime_errinfo_set(ei, MIME_EINVAL,
			                        "parent task '%s' has %d classes, not %d", tp->name,
			                        tp->n_classes, m->n_classes);
		memcpy(hw->w, tp->head_w, sizeof(float) * hw->n);
		memcpy(hb->w, tp->head_b, sizeof(float) * hb->n);
	}

	if (c->mode == MIMETRAIN_MODE_MIME) {
		if (m->n_masked == 0)
			return mime_errinfo_set(ei, MIME_EINVAL, "the graph has no masked layer");
		for (int k = 0; k < m->n_masked; k++) {
			const int i = m->masked_layer[k];
			const struct mime_shape *s = &shapes[i];
			const int per_channel = c->granularity == MIME_THR_CHANNEL;
			struct mimetrain_param p = {.decay = 0};

			m->n_t[k] = per_channel ? (size_t)s->c : (size_t)mime_shape_size(s);
			m->t[k] = malloc(sizeof(float) * m->n_t[k]);
			m->gt[k] = calloc(m->n_t[k], sizeof(float));
			if (!m->t[k] || !m->gt[k])
				return -ENOMEM;
			for (size_t j = 0; j < m->n_t[k]; j++)
				m->t[k][j] =
					c->t_init > MIMETRAIN_T_MIN ? c->t_init : MIMETRAIN_T_MIN;
			r = mimetrain_net_set_threshold(m->net, i, m->t[k], m->gt[k], per_channel);
			if (r < 0)
				return mime_errinfo_set(ei, r, "cannot mask '%s'",
				                        m->graph.layers[i].name);
			snprintf(p.name, sizeof(p.name), "%s.threshold", m->graph.layers[i].name);
			p.w = m->t[k];
			p.g = m->gt[k];
			p.n = m->n_t[k];
			r = push_param(&m->train_params, &m->n_train_params, &p);
			if (r < 0)
				return r;
		}
	}
	if (c->mode == MIMETRAIN_MODE_FINETUNE) {
		all = mimetrain_net_params(m->net, &n_all);
		for (int i = 0; i < n_all; i++) {
			if (strncmp(all[i].name, "head.", 5) == 0)
				r = push_param(&m->head_params, &m->n_head_params, &all[i]);
			else
				r = push_param(&m->train_params, &m->n_train_params, &all[i]);
			if (r < 0)
				return r;
		}
	} else {
		mimetrain_net_set_frozen(m->net, 1);
		r = push_param(&m->train_params, &m->n_train_params, hw);
		if (r == 0)
			r = push_param(&m->train_params, &m->n_train_params, hb);
		if (r < 0)
			return r;
	}
	{
		struct mimetrain_optim_config oc = {
			.kind = MIMETRAIN_ADAM, .lr = c->lr, .schedule = MIMETRAIN_LR_CONSTANT};

		r = mimetrain_optim_create(&oc, m->train_params, m->n_train_params, &m->optim, ei);
		if (r < 0)
			return r;
		if (m->n_head_params) {
			oc.lr = c->head_lr > 0 ? c->head_lr : c->lr;
			r = mimetrain_optim_create(&oc, m->head_params, m->n_head_params,
			                           &m->head_optim, ei);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

int mimetrain_mime_create(const struct mime_model *parent, int head_task, int n_classes,
                          const struct mimetrain_mime_config *cfg, struct mimetrain_mime **ret_mime,
                          struct mime_errinfo *ei)
{
	struct mimetrain_mime *m;
	int r;

	if (cfg->epochs < 0 || cfg->batch <= 0 || cfg->threads <= 0 || !(cfg->lr > 0) ||
	    n_classes <= 0 || n_classes > 256 || (cfg->reg_sign != 1 && cfg->reg_sign != -1) ||
	    (cfg->mode == MIMETRAIN_MODE_MIME && cfg->granularity != MIME_THR_ELEMENT &&
	     cfg->granularity != MIME_THR_CHANNEL))
		return mime_errinfo_set(ei, MIME_EINVAL, "mime: bad config");
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->cfg = *cfg;
	if (m->cfg.collapse <= 0)
		m->cfg.collapse = 0.98;
	m->graph = parent->graph;
	m->n_classes = n_classes;
	r = mimetrain_net_create(&m->graph,
	                         &(struct mimetrain_net_config){.n_classes = n_classes,
	                                                        .batchnorm = 0,
	                                                        .max_batch = cfg->batch,
	                                                        .threads = cfg->threads,
	                                                        .seed = cfg->seed},
	                         &m->net, ei);
	if (r < 0)
		goto out_destroy;
	r = mime_setup(m, parent, head_task, ei);
	if (r < 0)
		goto out_destroy;
	*ret_mime = m;
	return 0;

out_destroy:
	mimetrain_mime_destroy(m);
	return r;
}

void mimetrain_mime_destroy(struct mimetrain_mime *m)
{
	if (!m)
		return;
	mimetrain_optim_destroy(m->optim);
	mimetrain_optim_destroy(m->head_optim);
	mimetrain_net_destroy(m->net);
	for (int k = 0; k < MIME_MAX_LAYERS; k++) {
		free(m->t[k]);
		free(m->gt[k]);
		free(m->body_w[k]);
		free(m->body_b[k]);
	}
	free(m->train_params);
	free(m->head_params);
	free(m->head_keep);
	free(m);
}

struct mimetrain_net *mimetrain_mime_net(struct mimetrain_mime *m)
{
	return m->net;
}

const float *mimetrain_mime_thresholds(const struct mimetrain_mime *m, int i, size_t *ret_n)
{
	for (int k = 0; k < m->n_masked; k++)
		if (m->masked_layer[k] == i && m->t[k]) {
			if (ret_n)
				*ret_n = m->n_t[k];
			return m->t[k];
		}
	return NULL;
}

int mimetrain_mime_set_thresholds(struct mimetrain_mime *m, int i, const float *t, size_t n)
{
	for (int k = 0; k < m->n_masked; k++)
		if (m->masked_layer[k] == i && m->t[k]) {
			if (n != m->n_t[k])
				return MIME_EINVAL;
			for (size_t j = 0; j < n; j++)
				m->t[k][j] = t[j] >= MIMETRAIN_T_MIN ? t[j] : MIMETRAIN_T_MIN;
			return 0;
		}
	return MIME_EINVAL;
}

static void clamp_thresholds(struct mimetrain_mime *m)
{
	for (int k = 0; k < m->n_masked; k++)
		for (size_t j = 0; m->t[k] && j < m->n_t[k]; j++)
			if (!(m->t[k][j] >= MIMETRAIN_T_MIN)) /* also catches NaN */
				m->t[k][j] = MIMETRAIN_T_MIN;
}

struct by_magnitude {
	float mag;
	size_t i;
};

/* Largest magnitude first, then the lower index. */
static int cmp_magnitude(const void *a, const void *b)
{
	const struct by_magnitude *x = a, *y = b;

	if (x->mag != y->mag)
		return x->mag > y->mag ? -1 : 1;
	return x->i < y->i ? -1 : x->i > y->i;
}

/* Keeps the round(density * n) head weights largest in magnitude (at least one), zeroes
 * the others and remembers which (m->head_keep). */
static int prune_head(struct mimetrain_mime *m, double density)
{
	const size_t n = m->head_w.n;
	size_t keep = (size_t)llround(density * (double)n);
	struct by_magnitude *order = malloc(sizeof(*order) * n);

	m->head_keep = calloc(n, 1);
	if (!order || !m->head_keep) {
		free(order);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		order[i] = (struct by_magnitude){isnan(m->head_w.w[i]) ? -1.0f /* pruned first */
		                                                       : fabsf(m->head_w.w[i]),
		                                 i};
	qsort(order, n, sizeof(*order), cmp_magnitude);
	for (size_t k = 0; k < (keep ? keep : 1) && k < n; k++)
		m->head_keep[order[k].i] = 1;
	free(order);
	for (size_t i = 0; i < n; i++)
		if (!m->head_keep[i])
			m->head_w.w[i] = 0.0f;
	return 0;
}

/* Keeps the head's zeros at 0 from now on (a head that starts pruned). */
static int keep_head_zeros(struct mimetrain_mime *m)
{
	m->head_keep = malloc(m->head_w.n ? m->head_w.n : 1);
	if (!m->head_keep)
		return -ENOMEM;
	for (size_t i = 0; i < m->head_w.n; i++)
		m->head_keep[i] = m->head_w.w[i] != 0.0f;
	return 0;
}

/* Puts the pruned head weights back to 0 (after an optimizer step moved them). */
static void keep_head_pruned(struct mimetrain_mime *m)
{
	for (size_t i = 0; m->head_keep && i < m->head_w.n; i++)
		if (!m->head_keep[i])
			m->head_w.w[i] = 0.0f;
}

/* Accuracy and mean loss of the net as it is now on set (no training state kept). */
static void val_measure(struct mimetrain_mime *m, const struct mimetrain_taskset *set,
                        double *ret_acc, double *ret_loss)
{
	const size_t isz = (size_t)set->c * (size_t)set->h * (size_t)set->w;
	double loss = 0;
	long hits = 0;

	for (int i0 = 0; i0 < set->n; i0 += m->cfg.batch) {
		const int n = set->n - i0 < m->cfg.batch ? set->n - i0 : m->cfg.batch;
		int correct;

		mimetrain_net_forward(m->net, set->x + isz * (size_t)i0, n, 0);
		loss += mimetrain_net_loss(m->net, set->y + i0, &correct) * n;
		hits += correct;
	}
	*ret_acc = (double)hits / set->n;
	*ret_loss = loss / set->n;
}

/* Copies every learned param into snap (save) or back (!save). */
static void learned_copy(struct mimetrain_mime *m, float *snap, int save)
{
	struct mimetrain_param *sets[2] = {m->train_params, m->head_params};
	const int counts[2] = {m->n_train_params, m->n_head_params};

	for (int s = 0; s < 2; s++)
		for (int i = 0; i < counts[s]; i++) {
			if (save)
				memcpy(snap, sets[s][i].w, sizeof(float) * sets[s][i].n);
			else
				memcpy(sets[s][i].w, snap, sizeof(float) * sets[s][i].n);
			snap += sets[s][i].n;
		}
}

static size_t learned_count(const struct mimetrain_mime *m)
{
	size_t n = 0;

	for (int i = 0; i < m->n_train_params; i++)
		n += m->train_params[i].n;
	for (int i = 0; i < m->n_head_params; i++)
		n += m->head_params[i].n;
	return n;
}

int mimetrain_mime_train(struct mimetrain_mime *m, const struct mimetrain_taskset *train,
                         const struct mimetrain_taskset *val, FILE *log,
                         struct mimetrain_mime_report *ret_report, struct mime_errinfo *ei)
{
	const struct mimetrain_mime_config *c = &m->cfg;
	const struct mime_shape *in = &m->graph.input;
	const long isz = mime_shape_size(in);
	const int B = c->batch;
	struct mimetrain_mime_report rep;
	float *x = NULL;
	uint8_t *y = NULL;
	int *perm = NULL;
	float *snap = NULL;
	double t0 = now_s(), c0 = cpu_s();
	int r = 0;

	memset(&rep, 0, sizeof(rep));
	if (val && (val->c != in->c || val->h != in->h || val->w != in->w || val->n <= 0))
		return mime_errinfo_set(ei, MIME_EINVAL,
		                        "validation images are %dx%dx%d, not %dx%dx%d", val->c,
		                        val->h, val->w, in->c, in->h, in->w);
	for (int i = 0; val && i < val->n; i++)
		if (val->y[i] >= m->n_classes)
			return mime_errinfo_set(ei, MIME_EINVAL,
			                        "label %d of validation image %d >= %d classes",
			                        val->y[i], i, m->n_classes);
	if (train->c != in->c || train->h != in->h || train->w != in->w || train->n <= 0)
		return mime_errinfo_set(ei, MIME_EINVAL,
		                        "training images are %dx%dx%d, the graph wants %dx%dx%d",
		                        train->c, train->h, train->w, in->c, in->h, in->w);
	for (int i = 0; i < train->n; i++)
		if (train->y[i] >= m->n_classes)
			return mime_errinfo_set(ei, MIME_EINVAL,
			                        "label %d of image %d >= %d classes", train->y[i],
			                        i, m->n_classes);
	x = malloc(sizeof(float) * (size_t)B * (size_t)isz);
	y = malloc((size_t)B);
	perm = malloc(sizeof(int) * (size_t)train->n);
	if (val)
		snap = malloc(sizeof(float) * learned_count(m));
	if (!x || !y || !perm || (val && !snap)) {
		r = -ENOMEM;
		goto out;
	}
	if (c->head_keep_zeros && !m->head_keep) {
		r = keep_head_zeros(m);
		if (r < 0)
			goto out;
	}
	rep.n_masked = m->n_masked;
	rep.n_val = val ? val->n : 0;
	memcpy(rep.masked_layer, m->masked_layer, sizeof(rep.masked_layer));
	for (int epoch = 0; epoch < c->epochs; epoch++) {
		struct mimetrain_rng rng;
		double loss_sum = 0, te = now_s();
		long hits = 0, seen = 0;
		int64_t zeros[MIME_MAX_LAYERS] = {0}, neurons[MIME_MAX_LAYERS] = {0};

		if (mimetrain_prunes_head(c) && !m->head_keep &&
		    epoch == (c->prune_epoch >= 0 ? c->prune_epoch : c->epochs / 2)) {
			r = prune_head(m, c->head_density);
			if (r < 0)
				goto out;
			rep.pruned_epoch = epoch + 1;
			rep.best_epoch = 0; /* the epoch kept has the pruned head */
			if (log)
				fprintf(log,
				        "head pruned to %.1f%% of its weights before epoch %d\n",
				        100.0 * c->head_density, epoch + 1);
		}

		for (int i = 0; i < train->n; i++)
			perm[i] = i;
		mimetrain_rng_seed(&rng, mimetrain_rng_derive(c->seed, 0x5eed0000ull + epoch));
		mimetrain_shuffle(perm, train->n, &rng);
		/* a last partial batch is dropped so every step sees B samples */
		for (int i0 = 0; i0 + B <= train->n || (i0 == 0 && train->n < B); i0 += B) {
			const int n = train->n < B ? train->n : B;
			int correct;

			for (int b = 0; b < n; b++) {
				memcpy(x + (size_t)b * isz, train->x + (size_t)perm[i0 + b] * isz,
				       sizeof(float) * isz);
				y[b] = train->y[perm[i0 + b]];
			}
			mimetrain_net_forward(m->net, x, n, 1);
			loss_sum += mimetrain_net_loss(m->net, y, &correct) * n;
			hits += correct;
			seen += n;
			for (int k = 0; k < m->n_masked; k++) {
				int64_t z, nn;

				mimetrain_net_act_zeros(m->net, m->masked_layer[k], &z, &nn);
				zeros[k] += z;
				neurons[k] += nn;
			}
			mimetrain_net_backward(m->net, 0);
			for (int k = 0; k < m->n_masked; k++)
				if (m->t[k])
					loss_sum += n * mimetrain_threshold_reg(
								m->t[k], m->n_t[k], c->beta,
								c->reg_sign, m->gt[k]);
			mimetrain_optim_step(m->optim);
			if (m->head_optim)
				mimetrain_optim_step(m->head_optim);
			keep_head_pruned(m);
			clamp_thresholds(m);
			if (train->n < B)
				break;
		}
		rep.epochs = epoch + 1;
		rep.train_loss = loss_sum / (double)seen;
		rep.train_acc = (double)hits / (double)seen;
		if (log)
			fprintf(log, "epoch %d/%d loss %.4f train_acc %.2f%% sparsity", epoch + 1,
			        c->epochs, rep.train_loss, 100.0 * rep.train_acc);
		for (int k = 0; k < m->n_masked; k++) {
			rep.train_sparsity[k] = (double)zeros[k] / (double)neurons[k];
			if (log)
				fprintf(log, " %s %.3f", m->graph.layers[m->masked_layer[k]].name,
				        rep.train_sparsity[k]);
		}
		if (log) {
			fprintf(log, " time %.1fs\n", now_s() - te);
			fflush(log);
		}
		/* the collapse guard: report, then halve the layer's thresholds */
		for (int k = 0; k < m->n_masked; k++) {
			if (!(rep.train_sparsity[k] > m->cfg.collapse))
				continue;
			rep.collapse_events[k]++;
			rep.total_collapse_events++;
			if (log)
				fprintf(log,
				        "collapse guard: %s sparsity %.4f > %.2f in epoch %d%s\n",
				        m->graph.layers[m->masked_layer[k]].name,
				        rep.train_sparsity[k], m->cfg.collapse, epoch + 1,
				        m->t[k] ? ": halving its thresholds"
				                : " (ReLU; nothing to do)");
			for (size_t j = 0; m->t[k] && j < m->n_t[k]; j++)
				m->t[k][j] *= 0.5f;
			clamp_thresholds(m);
		}
		if (val) {
			double acc, loss;

			val_measure(m, val, &acc, &loss);
			if (epoch < MIMETRAIN_VAL_CURVE) {
				rep.val_acc[epoch] = acc;
				rep.val_loss[epoch] = loss;
			}
			if (rep.best_epoch == 0 || acc > rep.val_acc_best ||
			    (acc == rep.val_acc_best && loss < rep.val_loss_best)) {
				rep.best_epoch = epoch + 1;
				rep.val_acc_best = acc;
				rep.val_loss_best = loss;
				learned_copy(m, snap, 1);
			}
			if (log)
				fprintf(log, "epoch %d/%d validation acc %.2f%% loss %.4f%s\n",
				        epoch + 1, c->epochs, 100.0 * acc, loss,
				        rep.best_epoch == epoch + 1 ? " (best so far)" : "");
		}
	}
	if (val && rep.best_epoch > 0) {
		if (rep.best_epoch != rep.epochs) {
			learned_copy(m, snap, 0);
			if (log)
				fprintf(log, "kept epoch %d's parameters (validation acc %.2f%%)\n",
				        rep.best_epoch, 100.0 * rep.val_acc_best);
		}
	} else {
		rep.best_epoch = rep.epochs;
	}
	for (int k = 0; k < m->n_masked; k++) {
		double s = 0;

		for (size_t j = 0; m->t[k] && j < m->n_t[k]; j++)
			s += m->t[k][j];
		rep.t_mean[k] = m->t[k] ? s / (double)m->n_t[k] : 0.0;
	}
	rep.head_weights = m->head_w.n;
	for (size_t i = 0; i < m->head_w.n; i++)
		rep.head_nonzero += m->head_w.w[i] != 0.0f;
	rep.seconds = now_s() - t0;
	rep.cpu_seconds = cpu_s() - c0;
	*ret_report = rep;
out:
	free(x);
	free(y);
	free(perm);
	free(snap);
	return r;
}

int mimetrain_mime_model(const struct mimetrain_mime *m, const struct mime_model *parent,
                         const char *name, struct mime_model *ret_model)
{
	struct mimetrain_mime *mm = (struct mimetrain_mime *)m; /* engine copies are a cache */
	struct mime_model model;
	struct mime_task_params *tp;
	const float *hw, *hb;

	memset(&model, 0, sizeof(model));
	model.graph = m->graph;
	for (int i = 0; i < m->graph.n_layers; i++) {
		model.weight[i] = parent->weight[i];
		model.bias[i] = parent->bias[i];
	}
	if (m->cfg.mode == MIMETRAIN_MODE_FINETUNE)
		for (int i = 0; i < m->graph.n_layers; i++) {
			const struct mime_layer_spec *l = &m->graph.layers[i];
			size_t nw = layer_n_weights(&m->graph, i);

			if (l->kind != MIME_LAYER_CONV && l->kind != MIME_LAYER_FC)
				continue;
			free(mm->body_w[i]);
			free(mm->body_b[i]);
			mm->body_w[i] = malloc(sizeof(float) * nw);
			mm->body_b[i] = malloc(sizeof(float) * (size_t)l->out);
			if (!mm->body_w[i] || !mm->body_b[i])
				return -ENOMEM;
			mimetrain_net_folded(m->net, i, mm->body_w[i], mm->body_b[i]);
			model.weight[i] = mm->body_w[i];
			model.bias[i] = mm->body_b[i];
		}
	tp = calloc(1, sizeof(*tp));
	if (!tp)
		return -ENOMEM;
	mimetrain_net_head(m->net, &hw, &hb);
	tp->name = name;
	tp->n_classes = m->n_classes;
	tp->head_w = hw;
	tp->head_b = hb;
	tp->granularity = MIME_THR_NONE;
	if (m->cfg.mode == MIMETRAIN_MODE_MIME) {
		tp->granularity = m->cfg.granularity;
		for (int k = 0; k < m->n_masked; k++)
			tp->thresholds[m->masked_layer[k]] = m->t[k];
	}
	model.n_tasks = 1;
	model.tasks = tp;
	*ret_model = model;
	return 0;
}

int mimetrain_engine_eval(const struct mime_model *model, int task,
                          const struct mimetrain_taskset *set, int threads,
                          struct mimetrain_eval *ret_eval, struct mime_errinfo *ei)
{
	const long isz = (long)set->c * set->h * set->w;
	struct mime_engine *e = NULL;
	struct mimetrain_eval ev;
	int tasks[EVAL_BATCH];
	long hits = 0;
	double t0 = now_s();
	int r;

	memset(&ev, 0, sizeof(ev));
	if (task < 0 || task >= model->n_tasks || set->n <= 0)
		return mime_errinfo_set(ei, MIME_EINVAL, "eval: no task %d or no images", task);
	r = mime_engine_create(
		model, &(struct mime_engine_config){.max_batch = EVAL_BATCH, .n_threads = threads},
		&e, ei);
	if (r < 0)
		return r;
	for (int b = 0; b < EVAL_BATCH; b++)
		tasks[b] = task;
	for (int i0 = 0; i0 < set->n; i0 += EVAL_BATCH) {
		const int bn = set->n - i0 < EVAL_BATCH ? set->n - i0 : EVAL_BATCH;
		struct mime_engine_result res;

		r = mime_engine_forward(e, bn, set->x + (size_t)i0 * isz, tasks, &res);
		if (r < 0) {
			mime_errinfo_set(ei, r, "eval: forward failed");
			goto out;
		}
		ev.n_masked = res.n_masked;
		for (int k = 0; k < res.n_masked; k++)
			ev.masked_layer[k] = res.masked_layer[k];
		for (int b = 0; b < bn; b++) {
			int cls;
			float p;

			mime_topk(res.logits + (long)b * res.max_classes,
			          model->tasks[task].n_classes, 1, &cls, &p);
			hits += cls == set->y[i0 + b];
			for (int k = 0; k < res.n_masked; k++)
				ev.sparsity[k] += (double)res.zeros[b * res.n_masked + k] /
				                  (double)res.neurons[k];
		}
	}
	ev.accuracy = (double)hits / (double)set->n;
	for (int k = 0; k < ev.n_masked; k++)
		ev.sparsity[k] /= (double)set->n;
	ev.seconds = now_s() - t0;
	*ret_eval = ev;
out:
	mime_engine_destroy(e);
	return r;
}
