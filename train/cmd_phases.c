// SPDX-License-Identifier: MIT
/* cmd_phases -- `mime-train phases`: builds the nested phases of a multi-phase network from a
 * parent bundle and stated constraints, as §V of the Multi-phase CNN paper does:
 *  1. the lowest phase: coarse pruning at rates found by binary search (50%, 75%, ... of the
 *     non-zero parameters removed; each candidate retrained) until its test accuracy lands
 *     within --margin of the minimum accuracy (default: the parent's less 10 points); every
 *     candidate is measured through the engine for speed and memory at each thread count;
 *  2. a third-order polynomial of (non-zero parameters, threads) fitted to those
 *     measurements, for speed (1/ms) and for memory (bytes), with its R^2;
 *  3. the highest phase: the largest coarse network whose predicted speed meets --latency-ms
 *     and whose predicted memory fits the largest --memory budget, at the best thread count;
 *  4. intermediate phases, in the order --order gives (default coarse,fine,coarse,fine,
 *     coarse): a coarse phase restores kernels (to fill the next memory budget, or halfway in
 *     log scale between its neighbours) whose weights start from an independently trained
 *     network of that size (the lottery-ticket initialisation of §III-B) and are retrained
 *     with the previous phase fixed; fine phases before a coarse phase C are carved out of
 *     C's increment: C's kernels are restored and trained once (the paper's (1)'), then each
 *     fine phase keeps the W_uv x 1 groups of the increment with the largest l2 norm up to
 *     its share of parameters and retrains them with the previous phase fixed, and C itself
 *     retrains the rest;
 *  5. the same construction for the comparison variants (--variants: coarse-only and
 *     fine-only at the shipped variant's sparsities, a 6-phase combined one), measured the
 *     same way and recorded in the JSON for `mime-train report`.
 * The output bundle holds the shipped variant: the parent's weights in phase-major order
 * (kernels sorted by l2 norm, the function unchanged), the phases in the manifest with their
 * measured accuracy, latency, memory and non-zero count, the fine masks, and the task's head
 * per phase. Every phase is checked nested in the next and bit-identical after the later
 * phases were trained. Exit codes: 0 ok, 1 failure, 2 usage. */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/bundle.h"
#include "lib/engine.h"
#include "lib/manifest.h"
#include "lib/model.h"
#include "train/cmd.h"
#include "train/data.h"
#include "train/mime.h"
#include "train/phases.h"

#define MAX_PHASES  12
#define MAX_THREADS 8
#define MAX_CANDS   16
#define MAX_BUDGETS 8

enum kind { COARSE, FINE };

struct opts {
	const char *bundle, *task, *data_dir, *out, *json_out, *order, *variants;
	double min_accuracy, margin, latency_ms;
	double memory_bytes[MAX_BUDGETS];
	int n_budgets;
	int threads[MAX_THREADS], n_threads;
	int train_threads, epochs, search_epochs, batch, max_steps, train_limit, test_limit, wuv,
		reps, retries;
	float lr;
	uint64_t seed;
};

struct cand {
	int indep; /* its trained network in ctx.indeps */
	double rate, accuracy, seconds;
	int64_t nonzero;
	struct mimetrain_phase_def ph;
	double latency_ms[MAX_THREADS];
	int64_t memory_bytes[MAX_THREADS];
};

/* A trained network of one coarse size (search candidates, independent networks). */
struct indep {
	struct mimetrain_phase_def ph;
	struct mimetrain_mp net;
};

struct built {
	enum kind kind;
	struct mimetrain_phase_def ph;
	float *head_w, *head_b;
	int features;
	double accuracy, latency_ms, seconds;
	int64_t memory_bytes, nonzero;
	uint64_t sum; /* checksum of the weights the phase keeps, right after it was built */
};

struct variant {
	char name[32];
	int n;
	enum kind kinds[MAX_PHASES];
	int64_t target[MAX_PHASES];
	struct built p[MAX_PHASES];
	struct mimetrain_mp mp;
	int nested_ok;
	double seconds;
};

struct ctx {
	const struct opts *o;
	struct mimetrain_mp parent; /* sorted, as trained */
	struct mimetrain_taskset train, test;
	struct indep indeps[MAX_CANDS * 2];
	int n_indeps;
	int measure_threads; /* the thread count phases are measured at (the highest's) */
	int64_t n_full;
	double parent_accuracy;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	const double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: mime-train phases --bundle PARENT.mime --task NAME --data DIR -o OUT.mime\n"
	        "         [--min-accuracy A (default: parent - 0.10)] [--margin 0.01]\n"
	        "         [--latency-ms 2.0] [--memory SIZE[,SIZE...] (bytes, K/M suffix)]\n"
	        "         [--threads 1,2 (measured)] [--train-threads 2]\n"
	        "         [--order coarse,fine,coarse,fine,coarse]\n"
	        "         [--variants coarse_5p,fine_5p,combined_6p | none]\n"
	        "         [--epochs 2] [--search-epochs 1] [--max-steps 8] [--batch 100]\n"
	        "         [--lr 5e-4] [--train-limit 20000] [--test-limit 0] [--wuv 16]\n"
	        "         [--reps 300] [--retries 2] [--seed 1] [--json REPORT.json]\n");
}

static int parse_list_int(const char *s, int *ret, int max)
{
	int n = 0;
	char *end;

	while (*s && n < max) {
		long v = strtol(s, &end, 10);

		if (end == s || v < 1 || v > 64)
			return -1;
		ret[n++] = (int)v;
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			return -1;
	}
	return *s ? -1 : n;
}

static int parse_budgets(const char *s, double *ret, int max)
{
	int n = 0;
	char *end;

	while (*s && n < max) {
		double v = strtod(s, &end);

		if (end == s || !(v > 0))
			return -1;
		if (*end == 'K' || *end == 'k')
			v *= 1024, end++;
		else if (*end == 'M' || *end == 'm')
			v *= 1024 * 1024, end++;
		ret[n++] = v;
		if (*end && *end != ',')
			return -1;
		s = *end == ',' ? end + 1 : end;
	}
	return *s ? -1 : n;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	enum {
		O_BUNDLE = 256,
		O_TASK,
		O_DATA,
		O_MINACC,
		O_MARGIN,
		O_LAT,
		O_MEM,
		O_THREADS,
		O_TTHREADS,
		O_ORDER,
		O_VARIANTS,
		O_EPOCHS,
		O_SEPOCHS,
		O_STEPS,
		O_BATCH,
		O_LR,
		O_TRLIM,
		O_TELIM,
		O_WUV,
		O_REPS,
		O_RETRIES,
		O_SEED,
		O_JSON,
		O_HELP,
	};
	static const struct option longopts[] = {
		{"bundle", required_argument, NULL, O_BUNDLE},
		{"task", required_argument, NULL, O_TASK},
		{"data", required_argument, NULL, O_DATA},
		{"min-accuracy", required_argument, NULL, O_MINACC},
		{"margin", required_argument, NULL, O_MARGIN},
		{"latency-ms", required_argument, NULL, O_LAT},
		{"memory", required_argument, NULL, O_MEM},
		{"threads", required_argument, NULL, O_THREADS},
		{"train-threads", required_argument, NULL, O_TTHREADS},
		{"order", required_argument, NULL, O_ORDER},
		{"variants", required_argument, NULL, O_VARIANTS},
		{"epochs", required_argument, NULL, O_EPOCHS},
		{"search-epochs", required_argument, NULL, O_SEPOCHS},
		{"max-steps", required_argument, NULL, O_STEPS},
		{"batch", required_argument, NULL, O_BATCH},
		{"lr", required_argument, NULL, O_LR},
		{"train-limit", required_argument, NULL, O_TRLIM},
		{"test-limit", required_argument, NULL, O_TELIM},
		{"wuv", required_argument, NULL, O_WUV},
		{"reps", required_argument, NULL, O_REPS},
		{"retries", required_argument, NULL, O_RETRIES},
		{"seed", required_argument, NULL, O_SEED},
		{"json", required_argument, NULL, O_JSON},
		{"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, O_HELP},
		{NULL, 0, NULL, 0},
	};
	int c;
	char *end;

	memset(o, 0, sizeof(*o));
	o->min_accuracy = -1;
	o->margin = 0.01;
	o->latency_ms = 2.0;
	o->threads[0] = 1;
	o->threads[1] = 2;
	o->n_threads = 2;
	o->train_threads = 2;
	o->order = "coarse,fine,coarse,fine,coarse";
	o->variants = "coarse_5p,fine_5p,combined_6p";
	o->epochs = 2;
	o->search_epochs = 1;
	o->max_steps = 8;
	o->batch = 100;
	o->lr = 5e-4f;
	o->train_limit = 20000;
	o->wuv = 16;
	o->reps = 300;
	o->retries = 2;
	o->seed = 1;
	optind = 1;
	while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
		end = NULL;
		switch (c) {
		case O_BUNDLE:
			o->bundle = optarg;
			break;
		case O_TASK:
			o->task = optarg;
			break;
		case O_DATA:
			o->data_dir = optarg;
			break;
		case O_MINACC:
			o->min_accuracy = strtod(optarg, &end);
			break;
		case O_MARGIN:
			o->margin = strtod(optarg, &end);
			break;
		case O_LAT:
			o->latency_ms = strtod(optarg, &end);
			break;
		case O_MEM:
			o->n_budgets = parse_budgets(optarg, o->memory_bytes, MAX_BUDGETS);
			if (o->n_budgets < 1)
				return -1;
			qsort(o->memory_bytes, (size_t)o->n_budgets, sizeof(double), cmp_double);
			break;
		case O_THREADS:
			o->n_threads = parse_list_int(optarg, o->threads, MAX_THREADS);
			if (o->n_threads < 1)
				return -1;
			break;
		case O_TTHREADS:
			o->train_threads = (int)strtol(optarg, &end, 10);
			break;
		case O_ORDER:
			o->order = optarg;
			break;
		case O_VARIANTS:
			o->variants = optarg;
			break;
		case O_EPOCHS:
			o->epochs = (int)strtol(optarg, &end, 10);
			break;
		case O_SEPOCHS:
			o->search_epochs = (int)strtol(optarg, &end, 10);
			break;
		case O_STEPS:
			o->max_steps = (int)strtol(optarg, &end, 10);
			break;
		case O_BATCH:
			o->batch = (int)strtol(optarg, &end, 10);
			break;
		case O_LR:
			o->lr = strtof(optarg, &end);
			break;
		case O_TRLIM:
			o->train_limit = (int)strtol(optarg, &end, 10);
			break;
		case O_TELIM:
			o->test_limit = (int)strtol(optarg, &end, 10);
			break;
		case O_WUV:
			o->wuv = (int)strtol(optarg, &end, 10);
			break;
		case O_REPS:
			o->reps = (int)strtol(optarg, &end, 10);
			break;
		case O_RETRIES:
			o->retries = (int)strtol(optarg, &end, 10);
			break;
		case O_SEED:
			o->seed = strtoull(optarg, &end, 10);
			break;
		case O_JSON:
			o->json_out = optarg;
			break;
		case 'o':
			o->out = optarg;
			break;
		case 'h':
		case O_HELP:
			return 1;
		default:
			return -1;
		}
		if (end && *end)
			return -1;
	}
	if (optind != argc || !o->bundle || !o->task || !o->data_dir || !o->out || o->epochs < 0 ||
	    o->search_epochs < 0 || o->batch < 1 || o->max_steps < 1 || o->max_steps > MAX_CANDS ||
	    o->train_threads < 1 || o->train_threads > 64 || !(o->lr > 0) || !(o->latency_ms > 0) ||
	    !(o->margin > 0) || o->train_limit < 0 || o->test_limit < 0 || o->retries < 0 ||
	    (o->wuv != 16 && o->wuv != 8 && o->wuv != 4) || o->reps < 1)
		return -1;
	return 0;
}

/* "coarse,fine,..." into kinds; the first must be coarse or fine, at most MAX_PHASES. */
static int parse_order(const char *s, enum kind *ret)
{
	int n = 0;

	while (*s) {
		if (n == MAX_PHASES)
			return -1;
		if (strncmp(s, "coarse", 6) == 0) {
			ret[n++] = COARSE;
			s += 6;
		} else if (strncmp(s, "fine", 4) == 0) {
			ret[n++] = FINE;
			s += 4;
		} else {
			return -1;
		}
		if (*s == ',')
			s++;
		else if (*s)
			return -1;
	}
	return n >= 1 ? n : -1;
}

static const char *kind_name(enum kind k)
{
	return k == COARSE ? "coarse" : "fine";
}

/* FNV-1a over the weights ph keeps in mp (and their biases). */
static uint64_t kept_checksum(const struct mimetrain_mp *mp, const struct mimetrain_phase_def *ph)
{
	struct mimetrain_sub s;
	uint64_t h = 1469598103934665603ull;

	if (mimetrain_sub_extract(mp, mp->w, mp->b, NULL, ph, &s) < 0)
		return 0;
	for (int i = 0; i < s.g.n_layers; i++) {
		const unsigned char *p;
		size_t n;
		int rs;

		if (!s.w[i])
			continue;
		n = (size_t)ph->k[i] * (size_t)mimetrain_phase_cin(&mp->g, ph->k, i, &rs) *
		    (size_t)rs * sizeof(float);
		p = (const unsigned char *)s.w[i];
		for (size_t j = 0; j < n; j++)
			h = (h ^ p[j]) * 1099511628211ull;
		p = (const unsigned char *)s.b[i];
		for (size_t j = 0; j < sizeof(float) * (size_t)ph->k[i]; j++)
			h = (h ^ p[j]) * 1099511628211ull;
	}
	mimetrain_sub_fini(&s);
	return h;
}

static int same_k(const struct mime_graph *g, const int *a, const int *b)
{
	for (int i = 0; i < g->n_layers; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

static int is_full(const struct mime_graph *g, const struct mimetrain_phase_def *ph)
{
	for (int i = 0; i < g->n_layers; i++)
		if ((g->layers[i].kind == MIME_LAYER_CONV || g->layers[i].kind == MIME_LAYER_FC) &&
		    (ph->k[i] != g->layers[i].out || ph->keep[i]))
			return 0;
	return 1;
}

/* Trains the coarse network ph alone from the parent (no fixed part): a search candidate or
 * the independent network a coarse restore starts from. Returns the cached entry or NULL. */
static struct indep *independent(struct ctx *c, const struct mimetrain_phase_def *ph, int epochs,
                                 double *ret_seconds, struct mime_errinfo *ei)
{
	struct indep *d;
	struct mimetrain_sub s;
	double t0 = now_s();
	int r;

	for (int j = 0; j < c->n_indeps; j++)
		if (same_k(&c->parent.g, c->indeps[j].ph.k, ph->k)) {
			if (ret_seconds)
				*ret_seconds = 0;
			return &c->indeps[j];
		}
	if (c->n_indeps == (int)(sizeof(c->indeps) / sizeof(c->indeps[0]))) {
		mime_errinfo_set(ei, MIME_EINVAL, "phases: too many independent networks");
		return NULL;
	}
	d = &c->indeps[c->n_indeps];
	if (mimetrain_mp_copy(&d->net, &c->parent) < 0)
		return NULL;
	if (mimetrain_phase_def_copy(&d->ph, ph, &c->parent.g) < 0) {
		mimetrain_mp_fini(&d->net);
		return NULL;
	}
	if (is_full(&c->parent.g, ph)) { /* the parent is the independent network */
		c->n_indeps++;
		if (ret_seconds)
			*ret_seconds = 0;
		return d;
	}
	r = mimetrain_sub_extract(&d->net, d->net.w, d->net.b, NULL, ph, &s);
	if (r == 0) {
		fprintf(stderr, "  training an independent network of %lld non-zero parameters\n",
		        (long long)mimetrain_phase_nonzero(&c->parent, ph));
		r = mimetrain_sub_train(&s, &d->net, ph, NULL, &c->train,
		                        &(struct mimetrain_sub_train_config){
						.epochs = epochs,
						.batch = c->o->batch,
						.threads = c->o->train_threads,
						.lr = c->o->lr,
						.seed = c->o->seed + (uint64_t)c->n_indeps},
		                        stderr, ei);
	}
	if (r == 0) {
		mimetrain_sub_store(&d->net, ph, &s);
	}
	mimetrain_sub_fini(&s);
	if (r < 0) {
		mimetrain_phase_def_fini(&d->ph);
		mimetrain_mp_fini(&d->net);
		return NULL;
	}
	c->n_indeps++;
	if (ret_seconds)
		*ret_seconds = now_s() - t0;
	return d;
}

/* Sliced head of ph from a full-width head (columns < features of ph). */
static int head_of(const struct mimetrain_mp *mp, const struct mimetrain_phase_def *ph,
                   float **ret_w, float **ret_b, int *ret_features)
{
	struct mimetrain_sub s;
	int r = mimetrain_sub_extract(mp, mp->w, mp->b, NULL, ph, &s);

	if (r < 0)
		return r;
	*ret_w = s.head_w;
	*ret_b = s.head_b;
	*ret_features = s.features;
	s.head_w = s.head_b = NULL;
	mimetrain_sub_fini(&s);
	return 0;
}

static int run_search(struct ctx *c, struct cand *cands, int *ret_n, int *ret_lowest,
                      struct mime_errinfo *ei)
{
	const struct opts *o = c->o;
	const double min_acc = o->min_accuracy;
	double lo = 0, hi = 1, rate = 0.5;
	int n = 0, lowest = -1;

	for (int step = 0; step < o->max_steps; step++) {
		struct cand *cd = &cands[n];
		struct indep *d;
		float *hw = NULL, *hb = NULL;
		int nf, r;

		memset(cd, 0, sizeof(*cd));
		cd->rate = rate;
		mimetrain_phase_coarse_for(&c->parent, (int64_t)((1 - rate) * (double)c->n_full),
		                           o->wuv, &cd->ph);
		cd->nonzero = mimetrain_phase_nonzero(&c->parent, &cd->ph);
		fprintf(stderr, "search step %d: pruning rate %.4f -> %lld non-zero parameters\n",
		        step + 1, rate, (long long)cd->nonzero);
		d = independent(c, &cd->ph, o->search_epochs, &cd->seconds, ei);
		if (!d)
			return -ENOMEM;
		cd->indep = (int)(d - c->indeps);
		r = head_of(&d->net, &cd->ph, &hw, &hb, &nf);
		if (r == 0)
			r = mimetrain_phase_eval(&d->net, &cd->ph, hw, hb, &c->test,
			                         o->train_threads, &cd->accuracy, ei);
		for (int t = 0; r == 0 && t < o->n_threads; t++)
			r = mimetrain_phase_measure(&d->net, &cd->ph, hw, hb, &c->test,
			                            o->threads[t], o->reps, &cd->latency_ms[t],
			                            &cd->memory_bytes[t], ei);
		free(hw);
		free(hb);
		if (r < 0)
			return r;
		fprintf(stderr,
		        "search step %d: accuracy %.4f (minimum %.4f), %.3f ms at %d thread(s), "
		        "%lld bytes, %.0f s\n",
		        step + 1, cd->accuracy, min_acc, cd->latency_ms[0], o->threads[0],
		        (long long)cd->memory_bytes[0], cd->seconds);
		n++;
		if (fabs(cd->accuracy - min_acc) <= o->margin) {
			lowest = n - 1;
			break;
		}
		if (cd->accuracy > min_acc)
			lo = rate;
		else
			hi = rate;
		rate = 0.5 * (lo + hi);
	}
	if (lowest < 0) { /* no candidate within the margin: the sparsest one above the minimum */
		for (int j = 0; j < n; j++)
			if (cands[j].accuracy >= min_acc &&
			    (lowest < 0 || cands[j].nonzero < cands[lowest].nonzero))
				lowest = j;
		if (lowest < 0)
			return mime_errinfo_set(ei, MIME_EINVAL,
			                        "phases: no candidate reached the minimum accuracy "
			                        "%.4f in %d steps",
			                        min_acc, n);
		fprintf(stderr,
		        "search: no candidate within ±%.3f of the minimum after %d steps; "
		        "the sparsest above it is the lowest phase\n",
		        o->margin, n);
	}
	*ret_n = n;
	*ret_lowest = lowest;
	return 0;
}

/* One phase of a variant: extract from v->mp, restore what prev does not keep from src,
 * train with prev fixed, store back, measure. */
static int build_phase(struct ctx *c, struct variant *v, int j,
                       const struct mimetrain_phase_def *ph, const struct mimetrain_mp *src,
                       int train, struct mime_errinfo *ei)
{
	const struct mimetrain_phase_def *prev = j > 0 ? &v->p[j - 1].ph : NULL;
	struct built *bp = &v->p[j];
	struct mimetrain_sub s;
	double t0 = now_s();
	int r;

	r = mimetrain_phase_def_copy(&bp->ph, ph, &v->mp.g);
	if (r < 0)
		return r;
	r = mimetrain_sub_extract(&v->mp, v->mp.w, v->mp.b, src->head_w, ph, &s);
	if (r < 0)
		return r;
	memcpy(s.head_b, src->head_b, sizeof(float) * (size_t)s.n_classes);
	mimetrain_sub_restore_from(&s, &v->mp, ph, prev, src->w, src->b);
	if (train) {
		fprintf(stderr,
		        "  %s phase %d: retraining %lld restored of %lld non-zero parameters\n",
		        kind_name(v->kinds[j]), j + 1,
		        (long long)(mimetrain_phase_nonzero(&v->mp, ph) -
		                    (prev ? mimetrain_phase_nonzero(&v->mp, prev) : 0)),
		        (long long)mimetrain_phase_nonzero(&v->mp, ph));
		r = mimetrain_sub_train(&s, &v->mp, ph, prev, &c->train,
		                        &(struct mimetrain_sub_train_config){
						.epochs = c->o->epochs,
						.batch = c->o->batch,
						.threads = c->o->train_threads,
						.lr = c->o->lr,
						.seed = c->o->seed + 1000u + (uint64_t)j},
		                        stderr, ei);
		if (r < 0)
			goto out;
	}
	/* accuracy must not fall from one phase to the next: train on (up to --retries more
	 * rounds) while it does */
	for (int round = 0; train && j > 0 && round < c->o->retries; round++) {
		struct mimetrain_mp probe;
		double acc = 0;

		r = mimetrain_mp_copy(&probe, &v->mp);
		if (r < 0)
			goto out;
		mimetrain_sub_store(&probe, ph, &s);
		r = mimetrain_phase_eval(&probe, ph, s.head_w, s.head_b, &c->test,
		                         c->o->train_threads, &acc, ei);
		mimetrain_mp_fini(&probe);
		if (r < 0)
			goto out;
		if (acc >= v->p[j - 1].accuracy)
			break;
		fprintf(stderr, "  accuracy %.4f below the previous phase's %.4f: one more round\n",
		        acc, v->p[j - 1].accuracy);
		r = mimetrain_sub_train(
			&s, &v->mp, ph, prev, &c->train,
			&(struct mimetrain_sub_train_config){.epochs = 1,
		                                             .batch = c->o->batch,
		                                             .threads = c->o->train_threads,
		                                             .lr = c->o->lr * 0.5f,
		                                             .seed = c->o->seed + 2000u +
		                                                     (uint64_t)(j * 16 + round)},
			stderr, ei);
		if (r < 0)
			goto out;
	}
	mimetrain_sub_store(&v->mp, ph, &s);
	bp->kind = v->kinds[j];
	bp->head_w = s.head_w;
	bp->head_b = s.head_b;
	bp->features = s.features;
	s.head_w = s.head_b = NULL;
	bp->nonzero = mimetrain_phase_nonzero(&v->mp, ph);
	r = mimetrain_phase_eval(&v->mp, ph, bp->head_w, bp->head_b, &c->test, c->o->train_threads,
	                         &bp->accuracy, ei);
	if (r == 0)
		r = mimetrain_phase_measure(&v->mp, ph, bp->head_w, bp->head_b, &c->test,
		                            c->measure_threads, c->o->reps, &bp->latency_ms,
		                            &bp->memory_bytes, ei);
	bp->sum = kept_checksum(&v->mp, ph);
	bp->seconds = now_s() - t0;
	fprintf(stderr,
	        "%s phase %d (%s): %lld non-zero (sparsity %.4f), accuracy %.4f, %.3f ms, %lld "
	        "bytes, %.0f s\n",
	        v->name, j + 1, kind_name(v->kinds[j]), (long long)bp->nonzero,
	        1.0 - (double)bp->nonzero / (double)c->n_full, bp->accuracy, bp->latency_ms,
	        (long long)bp->memory_bytes, bp->seconds);
out:
	mimetrain_sub_fini(&s);
	return r;
}

/* The coarse phase for target n, at least prev's kernels in every layer. */
static void coarse_at_least(const struct ctx *c, int64_t target,
                            const struct mimetrain_phase_def *prev, struct mimetrain_phase_def *ret)
{
	mimetrain_phase_coarse_for(&c->parent, target, c->o->wuv, ret);
	for (int i = 0; prev && i < c->parent.g.n_layers; i++)
		if (ret->k[i] < prev->k[i])
			ret->k[i] = prev->k[i];
}

/* Builds variant v (kinds and targets set) from the parent; phase 1 when coarse is the
 * search's lowest candidate as trained. */
static int build_variant(struct ctx *c, struct variant *v, const struct indep *lowest,
                         struct mime_errinfo *ei)
{
	const struct mime_graph *g = &c->parent.g;
	struct mimetrain_mp oneprime = {0};
	struct mimetrain_phase_def top = {0};
	int have_oneprime = 0, r = 0;
	double t0 = now_s();

	fprintf(stderr, "variant %s: %d phases\n", v->name, v->n);
	r = mimetrain_mp_copy(&v->mp, &c->parent);
	if (r < 0)
		return r;
	for (int j = 0; j < v->n && r == 0; j++) {
		const struct mimetrain_phase_def *prev = j > 0 ? &v->p[j - 1].ph : NULL;
		struct mimetrain_phase_def ph = {0};

		if (v->kinds[j] == COARSE) {
			if (j == 0) {
				r = build_phase(c, v, j, &lowest->ph, &lowest->net, 0, ei);
				continue;
			}
			coarse_at_least(c, v->target[j], prev, &ph);
			if (have_oneprime && same_k(g, ph.k, top.k)) {
				/* the rest of (1)' after its fine phases */
				r = build_phase(c, v, j, &ph, &oneprime, 1, ei);
				have_oneprime = 0;
			} else {
				const struct indep *d = independent(c, &ph, c->o->epochs, NULL, ei);

				r = d ? build_phase(c, v, j, &ph, &d->net, 1, ei) : -ENOMEM;
			}
			mimetrain_phase_def_fini(&ph);
			continue;
		}
		/* fine: carved out of the next coarse phase's increment (or the whole network) */
		if (!have_oneprime) {
			int64_t top_target = c->n_full;
			const struct indep *d;
			struct mimetrain_sub s;

			for (int q = j + 1; q < v->n; q++)
				if (v->kinds[q] == COARSE) {
					top_target = v->target[q];
					break;
				}
			mimetrain_phase_def_fini(&top);
			coarse_at_least(c, top_target, prev, &top);
			d = independent(c, &top, c->o->epochs, NULL, ei);
			if (!d) {
				r = -ENOMEM;
				break;
			}
			mimetrain_mp_fini(&oneprime);
			r = mimetrain_mp_copy(&oneprime, &v->mp);
			if (r < 0)
				break;
			/* (1)': top's kernels restored from the independent network and trained
			 * with the previous phase fixed (none before the first phase) */
			r = mimetrain_sub_extract(&oneprime, oneprime.w, oneprime.b, d->net.head_w,
			                          &top, &s);
			if (r < 0)
				break;
			memcpy(s.head_b, d->net.head_b, sizeof(float) * (size_t)s.n_classes);
			mimetrain_sub_restore_from(&s, &oneprime, &top, prev, d->net.w, d->net.b);
			if (prev || !is_full(g, &top)) {
				fprintf(stderr,
				        "  (1)': training the restored kernels of the next coarse "
				        "phase once\n");
				r = mimetrain_sub_train(
					&s, &oneprime, &top, prev, &c->train,
					&(struct mimetrain_sub_train_config){
						.epochs = c->o->epochs,
						.batch = c->o->batch,
						.threads = c->o->train_threads,
						.lr = c->o->lr,
						.seed = c->o->seed + 500u + (uint64_t)j},
					stderr, ei);
			}
			if (r == 0)
				mimetrain_sub_store(&oneprime, &top, &s);
			mimetrain_sub_fini(&s);
			if (r < 0)
				break;
			have_oneprime = 1;
		}
		r = mimetrain_phase_fine_between(&v->mp, prev, &top, oneprime.w, v->target[j], &ph);
		if (r == 0)
			r = build_phase(c, v, j, &ph, &oneprime, 1, ei);
		mimetrain_phase_def_fini(&ph);
	}
	if (r == 0) {
		/* nested, and every phase's weights unchanged by the later ones */
		v->nested_ok = 1;
		for (int j = 0; j < v->n; j++) {
			if (j + 1 < v->n &&
			    !mimetrain_phase_nested(g, &v->p[j].ph, &v->p[j + 1].ph))
				v->nested_ok = 0;
			if (kept_checksum(&v->mp, &v->p[j].ph) != v->p[j].sum)
				v->nested_ok = 0;
		}
		fprintf(stderr, "variant %s: phases nested and bit-identical after training: %s\n",
		        v->name, v->nested_ok ? "yes" : "NO");
	}
	v->seconds = now_s() - t0;
	mimetrain_mp_fini(&oneprime);
	mimetrain_phase_def_fini(&top);
	return r;
}

static void variant_fini(struct variant *v)
{
	for (int j = 0; j < v->n; j++) {
		mimetrain_phase_def_fini(&v->p[j].ph);
		free(v->p[j].head_w);
		free(v->p[j].head_b);
	}
	mimetrain_mp_fini(&v->mp);
}

static json_t *variant_json(const struct ctx *c, const struct variant *v, int shipped)
{
	json_t *o = json_object(), *arr = json_array();

	json_object_set_new(o, "name", json_string(v->name));
	json_object_set_new(o, "shipped", json_boolean(shipped));
	json_object_set_new(o, "nested_bit_identical", json_boolean(v->nested_ok));
	json_object_set_new(o, "seconds", json_real(round(v->seconds)));
	for (int j = 0; j < v->n; j++) {
		const struct built *b = &v->p[j];
		json_t *p = json_object(), *ta = json_object();

		json_object_set_new(p, "phase", json_integer(j + 1));
		json_object_set_new(p, "kind", json_string(kind_name(b->kind)));
		json_object_set_new(p, "sparsity",
		                    json_real(1.0 - (double)b->nonzero / (double)c->n_full));
		json_object_set_new(p, "nonzero_params", json_integer(b->nonzero));
		json_object_set_new(p, "accuracy", json_real(b->accuracy));
		json_object_set_new(p, "latency_ms", json_real(b->latency_ms));
		json_object_set_new(p, "speed_per_ms", json_real(1.0 / b->latency_ms));
		json_object_set_new(p, "memory_bytes", json_integer(b->memory_bytes));
		json_object_set_new(p, "seconds", json_real(round(b->seconds)));
		json_object_set_new(ta, c->o->task, json_real(b->accuracy));
		json_object_set_new(p, "task_accuracy", ta);
		json_array_append_new(arr, p);
	}
	json_object_set_new(o, "phases", arr);
	return o;
}

static json_t *poly_json(const struct mimetrain_poly *p)
{
	static const char *const terms[] = {"1",   "n",   "t",    "n^2",  "nt",
	                                    "t^2", "n^3", "n^2t", "nt^2", "t^3"};
	json_t *o = json_object(), *cf = json_array(), *tm = json_array();

	for (int j = 0; j < MIMETRAIN_POLY_TERMS; j++) {
		json_array_append_new(cf, json_real(p->coef[j]));
		json_array_append_new(tm, json_string(terms[j]));
	}
	json_object_set_new(o, "r2", json_real(p->r2));
	json_object_set_new(o, "coef", cf);
	json_object_set_new(o, "terms", tm);
	json_object_set_new(o, "n_scale", json_real(p->x_scale));
	json_object_set_new(o, "t_scale", json_real(p->y_scale));
	return o;
}

static int add_f32(struct mime_bundle_writer *w, const char *name, int ndim, const int64_t *shape,
                   const float *data, struct mime_errinfo *ei)
{
	int r = mime_bundle_writer_add(w, name, MIME_DTYPE_F32, ndim, shape, data);

	if (r < 0)
		mime_errinfo_set(ei, r, "cannot add tensor '%s'", name);
	return r;
}

/* The output bundle: the variant's weights (phase-major), the task's head (phase 0), and
 * per phase the masks and the task's head. */
static int write_bundle(const struct ctx *c, const struct variant *v, struct mime_manifest *m,
                        int task, const float *head_w, const float *head_b, struct mime_errinfo *ei)
{
	const struct mime_graph *g = &v->mp.g;
	struct mime_bundle_writer *w = NULL;
	struct mime_phase_spec *ps;
	char name[MIME_NAME_MAX * 2 + 32];
	int r;

	ps = calloc((size_t)v->n, sizeof(*ps));
	if (!ps)
		return -ENOMEM;
	r = mime_bundle_writer_create(&w);
	if (r < 0)
		goto out;
	for (int i = 0; i < g->n_layers && r == 0; i++) {
		const struct mime_layer_spec *l = &g->layers[i];
		const struct mime_shape *in = i ? &v->mp.shapes[i - 1] : &g->input;
		int64_t shape[4] = {l->out, in->c, l->kernel, l->kernel};

		if (l->kind != MIME_LAYER_CONV && l->kind != MIME_LAYER_FC)
			continue;
		if (l->kind == MIME_LAYER_FC)
			shape[1] = mime_shape_size(in);
		snprintf(name, sizeof(name), "parent/%s.weight", l->name);
		r = add_f32(w, name, l->kind == MIME_LAYER_CONV ? 4 : 2, shape, v->mp.w[i], ei);
		if (r == 0) {
			snprintf(name, sizeof(name), "parent/%s.bias", l->name);
			r = add_f32(w, name, 1, shape, v->mp.b[i], ei);
		}
	}
	if (r == 0) {
		int64_t hs[2] = {c->parent.n_classes,
		                 mime_shape_size(&v->mp.shapes[g->n_layers - 1])};

		snprintf(name, sizeof(name), "task/%s/head.weight", c->o->task);
		r = add_f32(w, name, 2, hs, head_w, ei);
		snprintf(name, sizeof(name), "task/%s/head.bias", c->o->task);
		if (r == 0)
			r = add_f32(w, name, 1, hs, head_b, ei);
	}
	for (int j = 0; j < v->n && r == 0; j++) {
		const struct built *b = &v->p[j];
		int64_t hs[2] = {c->parent.n_classes, b->features};
		json_t *extra;

		snprintf(ps[j].name, sizeof(ps[j].name), "p%d-%s", j + 1, kind_name(b->kind));
		ps[j].wuv = b->ph.wuv;
		memcpy(ps[j].k_active, b->ph.k, sizeof(ps[j].k_active));
		ps[j].accuracy = b->accuracy;
		ps[j].latency_ms = b->latency_ms;
		ps[j].memory_bytes = b->memory_bytes;
		ps[j].nonzero_params = b->nonzero;
		extra = json_pack("{s:s, s:f, s:f, s:i, s:{s:f}}", "kind", kind_name(b->kind),
		                  "sparsity", 1.0 - (double)b->nonzero / (double)c->n_full,
		                  "speed_per_ms", 1.0 / b->latency_ms, "threads",
		                  c->measure_threads, "task_accuracy", c->o->task, b->accuracy);
		ps[j].extra_json = json_dumps(extra, JSON_COMPACT | JSON_PRESERVE_ORDER);
		json_decref(extra);
		snprintf(name, sizeof(name), "task/%s/phase%d/head.weight", c->o->task, j + 1);
		if (r == 0)
			r = add_f32(w, name, 2, hs, b->head_w, ei);
		snprintf(name, sizeof(name), "task/%s/phase%d/head.bias", c->o->task, j + 1);
		if (r == 0)
			r = add_f32(w, name, 1, hs, b->head_b, ei);
	}
	/* the masks (U16 / U32) last, so that every F32 tensor stays 4-byte aligned */
	for (int j = 0; j < v->n && r == 0; j++)
		for (int i = 0; i < g->n_layers && r == 0; i++) {
			const struct built *b = &v->p[j];

			if (!b->ph.keep[i])
				continue;
			ps[j].fine[i] = 1;
			r = mime_bundle_writer_add_mask(w, j + 1, g->layers[i].name, b->ph.keep[i],
			                                mimetrain_phase_groups(g, &b->ph, i));
			if (r < 0)
				mime_errinfo_set(ei, r, "cannot add the mask of '%s' in phase %d",
				                 g->layers[i].name, j + 1);
		}
	if (r < 0)
		goto out;
	m->n_phases = v->n;
	m->phases = ps;
	m->tasks[task].accuracy = v->p[v->n - 1].accuracy;
	r = mime_bundle_writer_write(w, m, c->o->out, ei);
	m->n_phases = 0;
	m->phases = NULL;
out:
	for (int j = 0; ps && j < v->n; j++)
		free(ps[j].extra_json);
	free(ps);
	mime_bundle_writer_destroy(w);
	return r;
}

/* Variant name -> kinds ("combined_5p" is --order). */
static int variant_kinds(const char *name, const char *order, enum kind *ret)
{
	if (strcmp(name, "combined_5p") == 0)
		return parse_order(order, ret);
	if (strcmp(name, "combined_6p") == 0)
		return parse_order("coarse,fine,coarse,fine,fine,coarse", ret);
	if (strcmp(name, "coarse_5p") == 0)
		return parse_order("coarse,coarse,coarse,coarse,coarse", ret);
	if (strcmp(name, "fine_5p") == 0)
		return parse_order("fine,fine,fine,fine,fine", ret);
	return -1;
}

/* Targets (non-zero counts) of a variant's phases between n_low (the first) and n_high (the
 * last): an intermediate coarse phase fills the next memory budget below the largest (the
 * largest n whose predicted memory fits it) when one is given, else sits at its place in log
 * scale; fine phases are spread evenly between their coarse neighbours. */
static void plan_targets(const struct ctx *c, const struct mimetrain_poly *mem, int n,
                         const enum kind *kinds, int64_t n_low, int64_t n_high, int64_t *ret)
{
	int q = 0;

	ret[0] = n_low;
	ret[n - 1] = n_high;
	for (int j = 1; j < n - 1; j++) {
		int64_t best = -1;

		if (kinds[j] != COARSE)
			continue;
		ret[j] = (int64_t)exp(log((double)n_low) +
		                      (log((double)n_high) - log((double)n_low)) * (double)j /
		                              (double)(n - 1));
		if (q < c->o->n_budgets - 1) { /* budgets are sorted ascending */
			for (int s = 0; s <= 400; s++) {
				int64_t nn = n_low + (n_high - n_low) * s / 400;

				if (mimetrain_poly_eval(mem, (double)nn, c->measure_threads) <=
				    c->o->memory_bytes[q])
					best = nn;
			}
			if (best > n_low && best < n_high)
				ret[j] = best;
		}
		q++;
	}
	for (int j = 1; j < n - 1; j++) {
		int a, b;

		if (kinds[j] == COARSE)
			continue;
		for (a = j - 1; a > 0 && kinds[a] != COARSE; a--)
			;
		for (b = j + 1; b < n - 1 && kinds[b] != COARSE; b++)
			;
		ret[j] = ret[a] + (ret[b] - ret[a]) * (j - a) / (b - a);
	}
}

int mimetrain_cmd_phases(int argc, char **argv)
{
	struct opts o;
	struct ctx c;
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	struct mime_model model = {0};
	struct mime_manifest m = {0};
	struct mimetrain_data dtrain = {0}, dtest = {0};
	struct cand cands[MAX_CANDS];
	struct variant *vars = NULL;
	struct mimetrain_poly poly_speed, poly_mem;
	const struct mime_manifest *bm;
	int n_cands = 0, lowest = -1, task, r, status = 1, n_vars = 0, high_threads = 1;
	int64_t n_low, n_high = 0;
	double t_start = now_s(), sorted_acc = 0;
	json_t *rep = NULL;
	char path[PATH_MAX];

	memset(&c, 0, sizeof(c));
	memset(cands, 0, sizeof(cands));
	r = parse_opts(argc, argv, &o);
	if (r != 0) {
		usage(r > 0 ? stdout : stderr);
		return r > 0 ? 0 : 2;
	}
	c.o = &o;
	{
		enum kind k[MAX_PHASES];
		int n = parse_order(o.order, k);

		if (n < 2 || k[0] != COARSE || k[n - 1] != COARSE) {
			fprintf(stderr,
			        "mime-train phases: --order: 2..%d of coarse|fine, starting "
			        "and ending with coarse\n",
			        MAX_PHASES);
			return 2;
		}
	}
	r = mime_bundle_open(o.bundle, &b, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train phases: %s: %s\n", o.bundle,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		return 1;
	}
	bm = mime_bundle_manifest(b);
	r = mime_manifest_parse(bm->json, strlen(bm->json), &m, &ei);
	if (r == 0)
		r = mime_model_from_bundle(b, 0, &model, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train phases: %s: %s\n", o.bundle,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	task = mime_manifest_task(&m, o.task);
	if (task < 0) {
		fprintf(stderr, "mime-train phases: no task '%s' in %s\n", o.task, o.bundle);
		goto out;
	}
	if (m.n_tasks != 1 || m.n_phases) {
		fprintf(stderr,
		        "mime-train phases: %s has %d tasks and %d phases: phases are built on a "
		        "parent bundle with its one task (add the other tasks after, with "
		        "`mime-train thresholds`)\n",
		        o.bundle, m.n_tasks, m.n_phases);
		goto out;
	}
	r = mimetrain_mp_init(&c.parent, &model, task, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train phases: %s\n", ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}

	/* data, preprocessed as the daemon does for this task */
	snprintf(path, sizeof(path), "%s/train-images-idx3-ubyte.gz", o.data_dir);
	{
		char lab[PATH_MAX];

		snprintf(lab, sizeof(lab), "%s/train-labels-idx1-ubyte.gz", o.data_dir);
		r = mimetrain_data_load(path, lab, m.tasks[task].n_classes, o.train_limit, &dtrain,
		                        &ei);
		snprintf(path, sizeof(path), "%s/t10k-images-idx3-ubyte.gz", o.data_dir);
		snprintf(lab, sizeof(lab), "%s/t10k-labels-idx1-ubyte.gz", o.data_dir);
		if (r == 0)
			r = mimetrain_data_load(path, lab, m.tasks[task].n_classes, o.test_limit,
			                        &dtest, &ei);
	}
	if (r == 0)
		r = mimetrain_taskset_make(&dtrain, &m.tasks[task].input, &c.train, &ei);
	if (r == 0)
		r = mimetrain_taskset_make(&dtest, &m.tasks[task].input, &c.test, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train phases: %s\n", ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	openblas_set_num_threads(o.train_threads);

	/* the parent in phase-major order (its speed and memory are measured with the search's
	 * candidates, for the regression) */
	{
		struct mimetrain_phase_def full;

		mimetrain_phase_def_full(&full, &c.parent.g, o.wuv);
		r = mimetrain_phase_eval(&c.parent, &full, c.parent.head_w, c.parent.head_b,
		                         &c.test, o.train_threads, &c.parent_accuracy, &ei);
		mimetrain_mp_sort_kernels(&c.parent);
		if (r == 0)
			r = mimetrain_phase_eval(&c.parent, &full, c.parent.head_w, c.parent.head_b,
			                         &c.test, o.train_threads, &sorted_acc, &ei);
		if (r < 0) {
			fprintf(stderr, "mime-train phases: %s\n",
			        ei.msg[0] ? ei.msg : mime_strerror(r));
			goto out;
		}
		c.n_full = mimetrain_phase_nonzero(&c.parent, &full);
		fprintf(stderr,
		        "parent: %lld non-zero parameters, accuracy %.4f (%.4f with its kernels "
		        "sorted by l2 norm); %d train / %d test images\n",
		        (long long)c.n_full, c.parent_accuracy, sorted_acc, c.train.n, c.test.n);
	}
	if (o.min_accuracy < 0)
		o.min_accuracy = c.parent_accuracy - 0.10;

	/* 1. the lowest phase */
	r = run_search(&c, cands, &n_cands, &lowest, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train phases: %s\n", ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	n_low = cands[lowest].nonzero;

	/* 2. the regression on every measurement (the parent's included) */
	{
		double xs[(MAX_CANDS + 1) * MAX_THREADS], ys[(MAX_CANDS + 1) * MAX_THREADS];
		double zs[(MAX_CANDS + 1) * MAX_THREADS], zm[(MAX_CANDS + 1) * MAX_THREADS];
		struct mimetrain_phase_def full;
		int np = 0;

		mimetrain_phase_def_full(&full, &c.parent.g, o.wuv);
		for (int t = 0; t < o.n_threads; t++) {
			double lat;
			int64_t mem;

			r = mimetrain_phase_measure(&c.parent, &full, c.parent.head_w,
			                            c.parent.head_b, &c.test, o.threads[t], o.reps,
			                            &lat, &mem, &ei);
			if (r < 0)
				goto out;
			fprintf(stderr, "parent: %.3f ms at %d thread(s), %lld bytes\n", lat,
			        o.threads[t], (long long)mem);
			xs[np] = (double)c.n_full;
			ys[np] = o.threads[t];
			zs[np] = 1.0 / lat;
			zm[np++] = (double)mem;
		}
		for (int j = 0; j < n_cands; j++)
			for (int t = 0; t < o.n_threads; t++) {
				xs[np] = (double)cands[j].nonzero;
				ys[np] = o.threads[t];
				zs[np] = 1.0 / cands[j].latency_ms[t];
				zm[np++] = (double)cands[j].memory_bytes[t];
			}
		mimetrain_poly_fit(xs, ys, zs, np, &poly_speed);
		mimetrain_poly_fit(xs, ys, zm, np, &poly_mem);
		fprintf(stderr, "regression on %d measurements: speed R^2 %.4f, memory R^2 %.4f\n",
		        np, poly_speed.r2, poly_mem.r2);
	}

	/* 3. the highest phase: the largest n meeting the latency and the largest budget */
	{
		double max_budget = 0;

		for (int q = 0; q < o.n_budgets; q++)
			max_budget =
				o.memory_bytes[q] > max_budget ? o.memory_bytes[q] : max_budget;
		for (int s = 0; s <= 400; s++) {
			int64_t nn = n_low + (c.n_full - n_low) * s / 400;

			for (int t = 0; t < o.n_threads; t++) {
				double sp =
					mimetrain_poly_eval(&poly_speed, (double)nn, o.threads[t]);
				double mem =
					mimetrain_poly_eval(&poly_mem, (double)nn, o.threads[t]);

				if (sp >= 1.0 / o.latency_ms &&
				    (max_budget == 0 || mem <= max_budget) && nn >= n_high) {
					if (nn > n_high ||
					    sp > mimetrain_poly_eval(&poly_speed, (double)nn,
					                             high_threads))
						high_threads = o.threads[t];
					n_high = nn;
				}
			}
		}
		if (n_high <= n_low) {
			fprintf(stderr,
			        "mime-train phases: no network larger than the lowest phase "
			        "meets the constraints: the lowest phase is the only one\n");
			n_high = n_low;
		}
		c.measure_threads = high_threads;
		fprintf(stderr,
		        "highest phase: %lld non-zero parameters at %d thread(s) (predicted %.3f "
		        "ms, %.0f bytes)\n",
		        (long long)n_high, high_threads,
		        1.0 / mimetrain_poly_eval(&poly_speed, (double)n_high, high_threads),
		        mimetrain_poly_eval(&poly_mem, (double)n_high, high_threads));
	}

	/* 4, 5. the shipped variant and the comparison variants */
	{
		char names[8][32];
		int nn = 0;
		const char *s = o.variants;

		snprintf(names[nn++], sizeof(names[0]), "combined_5p");
		while (strcmp(o.variants, "none") != 0 && *s && nn < 8) {
			size_t len = strcspn(s, ",");

			snprintf(names[nn], sizeof(names[0]), "%.*s", (int)len, s);
			nn++;
			s += len;
			if (*s == ',')
				s++;
		}
		vars = calloc((size_t)nn, sizeof(*vars));
		if (!vars)
			goto out;
		for (int q = 0; q < nn; q++) {
			struct variant *v = &vars[q];

			snprintf(v->name, sizeof(v->name), "%s", names[q]);
			v->n = variant_kinds(v->name, o.order, v->kinds);
			if (v->n < 1) {
				fprintf(stderr, "mime-train phases: unknown variant '%s'\n",
				        v->name);
				goto out;
			}
			n_vars = q + 1;
			if (q == 0) {
				plan_targets(&c, &poly_mem, v->n, v->kinds, n_low, n_high,
				             v->target);
			} else if (v->n == vars[0].n) {
				/* the shipped variant's sparsities, as the paper compares them */
				for (int j = 0; j < v->n; j++)
					v->target[j] = vars[0].p[j].nonzero;
			} else if (v->n == vars[0].n + 1) {
				/* one more phase, halfway between the shipped one's last two */
				const int n0 = vars[0].n;

				for (int j = 0; j < n0 - 1; j++)
					v->target[j] = vars[0].p[j].nonzero;
				v->target[n0 - 1] =
					(vars[0].p[n0 - 2].nonzero + vars[0].p[n0 - 1].nonzero) / 2;
				v->target[n0] = vars[0].p[n0 - 1].nonzero;
			} else {
				plan_targets(&c, &poly_mem, v->n, v->kinds, n_low, n_high,
				             v->target);
			}
			r = build_variant(&c, v, &c.indeps[cands[lowest].indep], &ei);
			if (r < 0) {
				fprintf(stderr, "mime-train phases: %s: %s\n", v->name,
				        ei.msg[0] ? ei.msg : mime_strerror(r));
				goto out;
			}
		}
	}

	/* every phase of every variant measured again, interleaved round by round, so that
	 * load from elsewhere during the (long) build touches them alike: the least lower
	 * quartile over the rounds is kept */
	for (int round = 0; round < 3; round++)
		for (int q = 0; q < n_vars; q++)
			for (int j = 0; j < vars[q].n; j++) {
				struct built *bp = &vars[q].p[j];
				double lat;
				int64_t mem;

				r = mimetrain_phase_measure(&vars[q].mp, &bp->ph, bp->head_w,
				                            bp->head_b, &c.test, c.measure_threads,
				                            o.reps, &lat, &mem, &ei);
				if (r < 0) {
					fprintf(stderr, "mime-train phases: %s\n",
					        ei.msg[0] ? ei.msg : mime_strerror(r));
					goto out;
				}
				if (round == 0 || lat < bp->latency_ms)
					bp->latency_ms = lat;
				bp->memory_bytes = mem;
			}
	for (int q = 0; q < n_vars; q++)
		for (int j = 0; j < vars[q].n; j++)
			fprintf(stderr,
			        "%s phase %d: %.4f ms, %lld bytes (measured again, 3 rounds)\n",
			        vars[q].name, j + 1, vars[q].p[j].latency_ms,
			        (long long)vars[q].p[j].memory_bytes);

	/* the bundle: the shipped variant; phase 0 (the whole parent) is its last phase when
	 * that is the whole network, else the parent's own head over the rest */
	{
		const struct variant *v = &vars[0];
		const struct built *top = &v->p[v->n - 1];
		const float *hw = c.parent.head_w, *hb = c.parent.head_b;

		if (is_full(&c.parent.g, &top->ph)) {
			hw = top->head_w;
			hb = top->head_b;
		} else {
			fprintf(stderr, "note: the highest phase is not the whole parent; phase 0 "
			                "keeps the parent's weights beyond it\n");
		}
		r = write_bundle(&c, v, &m, task, hw, hb, &ei);
		if (r < 0) {
			fprintf(stderr, "mime-train phases: %s: %s\n", o.out,
			        ei.msg[0] ? ei.msg : mime_strerror(r));
			goto out;
		}
		fprintf(stderr, "mime-train phases: wrote %s\n", o.out);
	}

	/* the JSON record for `mime-train report` */
	rep = json_object();
	{
		json_t *par = json_object(), *cons = json_object(), *mem = json_array(),
		       *th = json_array(), *search = json_array(), *vs = json_array(), *cmd,
		       *hi = json_object();

		json_object_set_new(par, "accuracy", json_real(c.parent_accuracy));
		json_object_set_new(par, "accuracy_sorted", json_real(sorted_acc));
		json_object_set_new(par, "nonzero_params", json_integer(c.n_full));
		json_object_set_new(rep, "parent", par);
		json_object_set_new(cons, "min_accuracy", json_real(o.min_accuracy));
		json_object_set_new(cons, "margin", json_real(o.margin));
		json_object_set_new(cons, "latency_ms", json_real(o.latency_ms));
		for (int q = 0; q < o.n_budgets; q++)
			json_array_append_new(mem, json_integer((json_int_t)o.memory_bytes[q]));
		json_object_set_new(cons, "memory_bytes", mem);
		for (int t = 0; t < o.n_threads; t++)
			json_array_append_new(th, json_integer(o.threads[t]));
		json_object_set_new(cons, "threads", th);
		json_object_set_new(rep, "constraints", cons);
		for (int j = 0; j < n_cands; j++) {
			json_t *s = json_object(), *ms = json_array();

			json_object_set_new(s, "step", json_integer(j + 1));
			json_object_set_new(s, "rate", json_real(cands[j].rate));
			json_object_set_new(
				s, "sparsity",
				json_real(1.0 - (double)cands[j].nonzero / (double)c.n_full));
			json_object_set_new(s, "nonzero_params", json_integer(cands[j].nonzero));
			json_object_set_new(s, "accuracy", json_real(cands[j].accuracy));
			json_object_set_new(s, "seconds", json_real(round(cands[j].seconds)));
			json_object_set_new(s, "lowest", json_boolean(j == lowest));
			for (int t = 0; t < o.n_threads; t++)
				json_array_append_new(
					ms, json_pack("{s:i, s:f, s:I}", "threads", o.threads[t],
				                      "latency_ms", cands[j].latency_ms[t],
				                      "memory_bytes",
				                      (json_int_t)cands[j].memory_bytes[t]));
			json_object_set_new(s, "measurements", ms);
			json_array_append_new(search, s);
		}
		json_object_set_new(rep, "search", search);
		json_object_set_new(rep, "regression",
		                    json_pack("{s:o, s:o}", "speed", poly_json(&poly_speed),
		                              "memory", poly_json(&poly_mem)));
		json_object_set_new(hi, "nonzero_params", json_integer(n_high));
		json_object_set_new(hi, "threads", json_integer(high_threads));
		json_object_set_new(hi, "predicted_latency_ms",
		                    json_real(1.0 / mimetrain_poly_eval(&poly_speed, (double)n_high,
		                                                        high_threads)));
		json_object_set_new(
			hi, "predicted_memory_bytes",
			json_real(mimetrain_poly_eval(&poly_mem, (double)n_high, high_threads)));
		json_object_set_new(rep, "highest", hi);
		for (int q = 0; q < n_vars; q++)
			json_array_append_new(vs, variant_json(&c, &vars[q], q == 0));
		json_object_set_new(rep, "variants", vs);
		json_object_set_new(rep, "seconds", json_real(round(now_s() - t_start)));
		json_object_set_new(rep, "threads", json_integer(o.train_threads));
		json_object_set_new(rep, "epochs",
		                    json_pack("{s:i, s:i, s:i, s:f}", "search", o.search_epochs,
		                              "restore", o.epochs, "train_images", c.train.n, "lr",
		                              (double)o.lr));
		cmd = json_array();
		json_array_append_new(cmd, json_string("mime-train"));
		for (int i = 0; i < argc; i++)
			json_array_append_new(cmd, json_string(argv[i]));
		json_object_set_new(rep, "command", cmd);
	}
	if (o.json_out &&
	    json_dump_file(rep, o.json_out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0) {
		fprintf(stderr, "mime-train phases: cannot write %s\n", o.json_out);
		goto out;
	}
	fprintf(stderr, "mime-train phases: done in %.0f s\n", now_s() - t_start);
	status = 0;
	for (int q = 0; q < n_vars; q++)
		if (!vars[q].nested_ok)
			status = 1;
out:
	json_decref(rep);
	for (int q = 0; vars && q < n_vars; q++)
		variant_fini(&vars[q]);
	free(vars);
	for (int j = 0; j < n_cands; j++)
		mimetrain_phase_def_fini(&cands[j].ph);
	for (int j = 0; j < c.n_indeps; j++) {
		mimetrain_phase_def_fini(&c.indeps[j].ph);
		mimetrain_mp_fini(&c.indeps[j].net);
	}
	mimetrain_mp_fini(&c.parent);
	mimetrain_taskset_fini(&c.train);
	mimetrain_taskset_fini(&c.test);
	mimetrain_data_fini(&dtrain);
	mimetrain_data_fini(&dtest);
	mime_model_fini(&model);
	mime_manifest_free(&m);
	mime_bundle_close(b);
	return status;
}

/* ---- mime-train phases-measure ----------------------------------------------------------- */

static void measure_usage(FILE *f)
{
	fprintf(f, "usage: mime-train phases-measure --bundle IN.mime --data DIR [-o OUT.mime]\n"
	           "         [--json REPORT.json] [--task NAME (default: the first)]\n"
	           "         [--threads T (default: the phases' own, else 1)] [--reps 300]\n"
	           "         [--rounds 5] [--test-limit 1000]\n"
	           "Measures every phase of a bundle on this machine as the daemon runs it\n"
	           "(batch 1, T engine threads; the lower quartile of each round, the least over\n"
	           "rounds, phases interleaved round by round so that other load touches them\n"
	           "alike) and its engine memory; -o writes the bundle with the new measured\n"
	           "keys, --json updates the shipped variant of a `mime-train phases` record.\n");
}

int mimetrain_cmd_phases_measure(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"bundle", required_argument, NULL, 'b'},
		{"data", required_argument, NULL, 'd'},
		{"json", required_argument, NULL, 'J'},
		{"task", required_argument, NULL, 't'},
		{"threads", required_argument, NULL, 'j'},
		{"reps", required_argument, NULL, 'r'},
		{"rounds", required_argument, NULL, 'R'},
		{"test-limit", required_argument, NULL, 'L'},
		{"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *bundle = NULL, *data = NULL, *json_path = NULL, *task_name = NULL, *out = NULL;
	int threads = 0, reps = 300, rounds = 5, limit = 1000, c, r, status = 1, task = 0;
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	struct mime_manifest m = {0};
	struct mime_model model = {0};
	struct mimetrain_data dtest = {0};
	struct mimetrain_taskset test = {0};
	struct mime_engine *e = NULL;
	double lat[MIME_MAX_PHASES], *t = NULL;
	int64_t mem[MIME_MAX_PHASES];
	char path[PATH_MAX], lab[PATH_MAX];
	char *end;

	optind = 1;
	while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
		end = NULL;
		switch (c) {
		case 'b':
			bundle = optarg;
			break;
		case 'd':
			data = optarg;
			break;
		case 'J':
			json_path = optarg;
			break;
		case 't':
			task_name = optarg;
			break;
		case 'j':
			threads = (int)strtol(optarg, &end, 10);
			break;
		case 'r':
			reps = (int)strtol(optarg, &end, 10);
			break;
		case 'R':
			rounds = (int)strtol(optarg, &end, 10);
			break;
		case 'L':
			limit = (int)strtol(optarg, &end, 10);
			break;
		case 'o':
			out = optarg;
			break;
		case 'h':
			measure_usage(stdout);
			return 0;
		default:
			measure_usage(stderr);
			return 2;
		}
		if (end && *end) {
			measure_usage(stderr);
			return 2;
		}
	}
	if (optind != argc || !bundle || !data || threads < 0 || threads > 64 || reps < 4 ||
	    rounds < 1 || limit < 0) {
		measure_usage(stderr);
		return 2;
	}
	r = mime_bundle_open(bundle, &b, &ei);
	if (r == 0) {
		const struct mime_manifest *bm = mime_bundle_manifest(b);

		r = mime_manifest_parse(bm->json, strlen(bm->json), &m, &ei);
	}
	if (r == 0) /* as mimed opens it: F16 task tensors decoded by the engine, counted */
		r = mime_model_from_bundle(b, MIME_MODEL_HALF_VIEWS, &model, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train phases-measure: %s: %s\n", bundle,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	if (m.n_phases == 0 || m.n_phases > MIME_MAX_PHASES) {
		fprintf(stderr, "mime-train phases-measure: %s has no phases\n", bundle);
		goto out;
	}
	if (task_name && (task = mime_manifest_task(&m, task_name)) < 0) {
		fprintf(stderr, "mime-train phases-measure: no task '%s' in %s\n", task_name,
		        bundle);
		goto out;
	}
	if (threads == 0) { /* the thread count the builder measured the phases at */
		json_t *x =
			m.phases[0].extra_json ? json_loads(m.phases[0].extra_json, 0, NULL) : NULL;

		threads = (int)json_integer_value(json_object_get(x, "threads"));
		json_decref(x);
		if (threads < 1)
			threads = 1;
	}
	snprintf(path, sizeof(path), "%s/t10k-images-idx3-ubyte.gz", data);
	snprintf(lab, sizeof(lab), "%s/t10k-labels-idx1-ubyte.gz", data);
	r = mimetrain_data_load(path, lab, m.tasks[task].n_classes, limit, &dtest, &ei);
	if (r == 0)
		r = mimetrain_taskset_make(&dtest, &m.tasks[task].input, &test, &ei);
	if (r == 0)
		r = mime_engine_create(
			&model, &(struct mime_engine_config){.max_batch = 1, .n_threads = threads},
			&e, &ei);
	t = malloc(sizeof(double) * (size_t)reps);
	if (r < 0 || !t) {
		fprintf(stderr, "mime-train phases-measure: %s\n",
		        ei.msg[0] ? ei.msg : mime_strerror(r < 0 ? r : -ENOMEM));
		goto out;
	}
	for (int p = 0; p < m.n_phases; p++)
		lat[p] = INFINITY;
	for (int round = 0; round < rounds; round++)
		for (int p = 0; p < m.n_phases; p++) {
			struct mime_phase ph;
			struct mime_task_params *tp = calloc((size_t)m.n_tasks, sizeof(*tp));
			struct mime_engine_result res;
			const long isz = (long)test.c * test.h * test.w;
			uint8_t *keep = NULL;

			if (!tp)
				goto out;
			r = mime_model_phase(b, p + 1, MIME_MODEL_HALF_VIEWS, &ph, &keep, tp, &ei);
			if (r == 0)
				r = mime_engine_set_phase(e, &ph, tp, &ei);
			if (r == 0) /* the phase's own memory, as mimed measures it */
				mime_engine_trim(e);
			free(keep);
			for (int i = 0; r == 0 && i < reps + 20; i++) {
				double t0 = now_s();

				mime_engine_forward(e, 1, test.x + (size_t)(i % test.n) * isz,
				                    &task, &res);
				if (i >= 20) /* the first ones warm the caches up */
					t[i - 20] = now_s() - t0;
			}
			if (r == 0) {
				qsort(t, (size_t)reps, sizeof(double), cmp_double);
				if (1e3 * t[reps / 4] < lat[p])
					lat[p] = 1e3 * t[reps / 4];
				mem[p] = (int64_t)mime_engine_plan_bytes(e);
			}
			/* back to the whole parent before the engine lets go of tp */
			mime_engine_set_phase(e, NULL, NULL, NULL);
			free(tp);
			if (r < 0) {
				fprintf(stderr, "mime-train phases-measure: phase %d: %s\n", p + 1,
				        ei.msg[0] ? ei.msg : mime_strerror(r));
				goto out;
			}
		}
	for (int p = 0; p < m.n_phases; p++) {
		json_t *x =
			m.phases[p].extra_json ? json_loads(m.phases[p].extra_json, 0, NULL) : NULL;

		printf("phase %d %-12s %.4f ms (%.2f/ms) at %d thread(s), %lld bytes (was %.4f ms, "
		       "%lld bytes)\n",
		       p + 1, m.phases[p].name, lat[p], 1.0 / lat[p], threads, (long long)mem[p],
		       m.phases[p].latency_ms, (long long)m.phases[p].memory_bytes);
		m.phases[p].latency_ms = lat[p];
		m.phases[p].memory_bytes = mem[p];
		if (!json_is_object(x)) {
			json_decref(x);
			x = json_object();
		}
		json_object_set_new(x, "speed_per_ms", json_real(1.0 / lat[p]));
		json_object_set_new(x, "threads", json_integer(threads));
		free(m.phases[p].extra_json);
		m.phases[p].extra_json = json_dumps(x, JSON_COMPACT | JSON_PRESERVE_ORDER);
		json_decref(x);
	}
	if (out) {
		struct mime_bundle_writer *w = NULL;

		r = mime_bundle_writer_create(&w);
		for (size_t i = 0; r == 0 && i < mime_bundle_n_tensors(b); i++) {
			struct mime_tensor_view v;

			mime_bundle_tensor_at(b, i, &v);
			r = mime_bundle_writer_add(w, v.name, v.dtype, v.ndim, v.shape, v.data);
		}
		if (r == 0)
			r = mime_bundle_writer_write(w, &m, out, &ei);
		mime_bundle_writer_destroy(w);
		if (r < 0) {
			fprintf(stderr, "mime-train phases-measure: %s: %s\n", out,
			        ei.msg[0] ? ei.msg : mime_strerror(r));
			goto out;
		}
	}
	if (json_path) {
		json_t *rec = json_load_file(json_path, 0, NULL), *v, *ph;
		size_t i, j;

		if (!rec) {
			fprintf(stderr, "mime-train phases-measure: cannot read %s\n", json_path);
			goto out;
		}
		json_array_foreach(json_object_get(rec, "variants"), i, v)
		{
			if (!json_is_true(json_object_get(v, "shipped")))
				continue;
			json_array_foreach(json_object_get(v, "phases"), j, ph)
			{
				if (j >= (size_t)m.n_phases)
					break;
				json_object_set_new(ph, "latency_ms", json_real(lat[j]));
				json_object_set_new(ph, "speed_per_ms", json_real(1.0 / lat[j]));
				json_object_set_new(ph, "memory_bytes", json_integer(mem[j]));
			}
			json_object_set_new(v, "remeasured",
			                    json_pack("{s:i, s:i, s:i, s:s}", "threads", threads,
			                              "rounds", rounds, "reps", reps, "by",
			                              "mime-train phases-measure"));
		}
		r = json_dump_file(rec, json_path, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		json_decref(rec);
		if (r < 0) {
			fprintf(stderr, "mime-train phases-measure: cannot write %s\n", json_path);
			goto out;
		}
	}
	status = 0;
out:
	free(t);
	mime_engine_destroy(e);
	mimetrain_taskset_fini(&test);
	mimetrain_data_fini(&dtest);
	mime_model_fini(&model);
	mime_manifest_free(&m);
	mime_bundle_close(b);
	return status;
}
