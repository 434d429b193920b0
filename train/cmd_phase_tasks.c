// SPDX-License-Identifier: MIT
/* cmd_phase_tasks -- `mime-train phase-tasks`: every task's head and thresholds for every
 * phase of a bundle that has phases (`mime-train phases`), so the daemon can serve each task
 * in each phase. Per (task, phase) the task's whole-parent tensors are sliced to the phase
 * (the first k_active channels of each threshold map, the head's columns of the phase's
 * features: phases keep the first kernels, so that is exact), measured as they are
 * ("shared": no training per phase), then trained for --epochs on the frozen phase network
 * (MIME: thresholds and head; a task without thresholds: its head) and measured again. Both
 * accuracies go into the phase's manifest entry (task_accuracy, task_accuracy_shared), so
 * the cost of sharing is on record; the trained tensors are written as
 * task/<task>/phase<p>/... Exit codes: 0 ok, 1 failure, 2 usage. */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/bundle.h"
#include "lib/manifest.h"
#include "lib/model.h"
#include "lib/phase.h"
#include "train/cmd.h"
#include "train/data.h"
#include "train/mime.h"
#include "train/phases.h"

struct opts {
	const char *bundle, *data_root, *out, *json_out, *tasks;
	int epochs, batch, threads, train_limit, test_limit, reg_sign, val;
	float lr;
	double beta, val_percent;
	uint64_t seed;
};

/* One new tensor. */
struct newt {
	char name[MIME_NAME_MAX * 2 + 32];
	int ndim;
	int64_t shape[4];
	float *data;
	int sparse; /* written sparse (bundle.h): a pruned head */
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: mime-train phase-tasks --bundle IN.mime --data-root DIR -o OUT.mime\n"
	           "         [--tasks a,b,... (default: all)] [--epochs 2] [--batch 100]\n"
	           "         [--lr 1e-3] [--beta 1e-4] [--reg-sign minus|plus]\n"
	           "         [--train-limit 10000] [--test-limit 0] [--threads 2] [--seed 1]\n"
	           "         [--val N|P%%] [--json REPORT.json]\n"
	           "  DIR/<task>/ holds each task's IDX files (scripts/fetch-data.sh).\n"
	           "  --val: held out of the training images (stratified, seeded); each (task,\n"
	           "  phase) keeps its best epoch by them, and keeps the sliced tensors instead\n"
	           "  when those do at least as well on them.\n");
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{"bundle", required_argument, NULL, 'b'},
		{"data-root", required_argument, NULL, 'd'},
		{"tasks", required_argument, NULL, 't'},
		{"epochs", required_argument, NULL, 'e'},
		{"batch", required_argument, NULL, 'B'},
		{"lr", required_argument, NULL, 'l'},
		{"beta", required_argument, NULL, 'x'},
		{"reg-sign", required_argument, NULL, 's'},
		{"train-limit", required_argument, NULL, 'L'},
		{"test-limit", required_argument, NULL, 'T'},
		{"threads", required_argument, NULL, 'j'},
		{"seed", required_argument, NULL, 'S'},
		{"val", required_argument, NULL, 'v'},
		{"json", required_argument, NULL, 'J'},
		{"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;
	char *end;

	memset(o, 0, sizeof(*o));
	o->epochs = 2;
	o->batch = 100;
	o->threads = 2;
	o->train_limit = 10000;
	o->reg_sign = -1;
	o->lr = 1e-3f;
	o->beta = 1e-4;
	o->seed = 1;
	optind = 1;
	while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
		end = NULL;
		switch (c) {
		case 'b':
			o->bundle = optarg;
			break;
		case 'd':
			o->data_root = optarg;
			break;
		case 't':
			o->tasks = optarg;
			break;
		case 'e':
			o->epochs = (int)strtol(optarg, &end, 10);
			break;
		case 'B':
			o->batch = (int)strtol(optarg, &end, 10);
			break;
		case 'l':
			o->lr = strtof(optarg, &end);
			break;
		case 'x':
			o->beta = strtod(optarg, &end);
			break;
		case 's':
			if (strcmp(optarg, "plus") == 0)
				o->reg_sign = 1;
			else if (strcmp(optarg, "minus") == 0)
				o->reg_sign = -1;
			else
				return -1;
			break;
		case 'L':
			o->train_limit = (int)strtol(optarg, &end, 10);
			break;
		case 'T':
			o->test_limit = (int)strtol(optarg, &end, 10);
			break;
		case 'j':
			o->threads = (int)strtol(optarg, &end, 10);
			break;
		case 'S':
			o->seed = strtoull(optarg, &end, 10);
			break;
		case 'v':
			if (mimetrain_parse_val(optarg, &o->val, &o->val_percent) < 0)
				return -1;
			break;
		case 'J':
			o->json_out = optarg;
			break;
		case 'o':
			o->out = optarg;
			break;
		case 'h':
			return 1;
		default:
			return -1;
		}
		if (end && *end)
			return -1;
	}
	if (optind != argc || !o->bundle || !o->data_root || !o->out || o->epochs < 0 ||
	    o->batch < 1 || o->threads < 1 || o->threads > 64 || !(o->lr > 0) || o->beta < 0 ||
	    o->train_limit < 0 || o->test_limit < 0)
		return -1;
	return 0;
}

static int wanted(const char *list, const char *name)
{
	size_t n = strlen(name);

	if (!list)
		return 1;
	for (const char *s = list; *s;) {
		size_t len = strcspn(s, ",");

		if (len == n && strncmp(s, name, n) == 0)
			return 1;
		s += len;
		if (*s == ',')
			s++;
	}
	return 0;
}

/* Phase p (1-based) of the bundle as a phase definition (masks decoded, owned by ret). */
static int phase_def(const struct mime_bundle *b, const struct mime_manifest *m, int p,
                     struct mimetrain_phase_def *ret, struct mime_errinfo *ei)
{
	const struct mime_phase_spec *ps = &m->phases[p - 1];

	memset(ret, 0, sizeof(*ret));
	ret->wuv = ps->wuv;
	memcpy(ret->k, ps->k_active, sizeof(ret->k));
	for (int i = 0; i < m->graph.n_layers; i++) {
		char name[MIME_NAME_MAX + 32];
		struct mime_tensor_view v;
		size_t ng;
		int r;

		if (!ps->fine[i])
			continue;
		snprintf(name, sizeof(name), "phase/%d/%s.mask", p, m->graph.layers[i].name);
		r = mime_bundle_tensor(b, name, &v);
		if (r < 0)
			return mime_errinfo_set(ei, r, "no tensor '%s'", name);
		ng = mimetrain_phase_groups(&m->graph, ret, i);
		ret->keep[i] = malloc(ng ? ng : 1);
		if (!ret->keep[i])
			return -ENOMEM;
		r = mime_phase_mask_decode(v.dtype, v.data, v.ndim == 1 ? (size_t)v.shape[0] : 0,
		                           ng, ret->keep[i], ei);
		if (r < 0)
			return r;
	}
	return 0;
}

static int load_task_data(const struct opts *o, const struct mime_task_spec *ts,
                          struct mimetrain_taskset *train, struct mimetrain_taskset *val,
                          struct mimetrain_taskset *test, struct mime_errinfo *ei)
{
	struct mimetrain_data dtr = {0}, dte = {0};
	char im[PATH_MAX], lb[PATH_MAX];
	int r;

	snprintf(im, sizeof(im), "%s/%s/train-images-idx3-ubyte.gz", o->data_root, ts->name);
	snprintf(lb, sizeof(lb), "%s/%s/train-labels-idx1-ubyte.gz", o->data_root, ts->name);
	r = mimetrain_data_load(im, lb, ts->n_classes, o->train_limit, &dtr, ei);
	snprintf(im, sizeof(im), "%s/%s/t10k-images-idx3-ubyte.gz", o->data_root, ts->name);
	snprintf(lb, sizeof(lb), "%s/%s/t10k-labels-idx1-ubyte.gz", o->data_root, ts->name);
	if (r == 0)
		r = mimetrain_data_load(im, lb, ts->n_classes, o->test_limit, &dte, ei);
	if (r == 0)
		r = mimetrain_taskset_make(&dtr, &ts->input, train, ei);
	if (r == 0)
		r = mimetrain_taskset_make(&dte, &ts->input, test, ei);
	if (r == 0)
		r = mimetrain_hold_out(train, o->val, o->val_percent, o->seed, val, ei);
	mimetrain_data_fini(&dtr);
	mimetrain_data_fini(&dte);
	return r;
}

/* Adds a copy of n floats as a new tensor. */
static int push(struct newt **arr, int *n, const char *name, int ndim, const int64_t *shape,
                const float *data, size_t count)
{
	struct newt *g = realloc(*arr, sizeof(**arr) * (size_t)(*n + 1)), *t;

	if (!g)
		return -ENOMEM;
	*arr = g;
	t = &g[*n];
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->ndim = ndim;
	memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
	t->data = malloc(sizeof(float) * (count ? count : 1));
	if (!t->data)
		return -ENOMEM;
	memcpy(t->data, data, sizeof(float) * count);
	(*n)++;
	return 0;
}

/* Whether new tensor name replaces old tensor old: the same name, or old is a part of name's
 * sparse form (whichever form the new one is written in). */
static int replaces(const char *name, const char *old)
{
	const size_t n = strlen(name);

	return strncmp(name, old, n) == 0 &&
	       (old[n] == '\0' || strcmp(old + n, MIME_SPARSE_MASK) == 0 ||
	        strcmp(old + n, MIME_SPARSE_VALUES) == 0);
}

/* What task_phase measured and kept for one (task, phase). */
struct phase_result {
	double shared, trained;         /* test accuracy: sliced, trained */
	double val_shared, val_trained; /* validation accuracy (with a validation set) */
	int kept_shared;                /* the sliced tensors were written (they validated at
	                                   least as well as the trained ones) */
};

/* Task t in phase p: sliced, measured, trained, measured; new tensors pushed: the trained
 * ones, or with a validation set (val->n > 0) whichever of sliced and trained does better on
 * it (the sliced ones on a tie: no training where it does not pay). */
static int task_phase(const struct opts *o, const struct mime_manifest *m,
                      const struct mime_model *model, const struct mimetrain_mp *mp, int t, int p,
                      const struct mimetrain_phase_def *ph, const struct mimetrain_taskset *train,
                      const struct mimetrain_taskset *val, const struct mimetrain_taskset *test,
                      int sparse_head, struct phase_result *res, struct newt **nt, int *n_nt,
                      struct mime_errinfo *ei)
{
	const struct mime_task_params *tp = &model->tasks[t];
	const int mime = tp->granularity != MIME_THR_NONE;
	struct mimetrain_sub s;
	struct mime_model sm = {0}, lm = {0};
	struct mime_shape shapes[MIME_MAX_LAYERS];
	float *sliced[MIME_MAX_LAYERS] = {0};
	struct mimetrain_mime *tr = NULL;
	struct mimetrain_mime_report rep;
	struct mimetrain_eval ev;
	char name[MIME_NAME_MAX * 2 + 32];
	int r;

	r = mimetrain_sub_extract(mp, mp->w, mp->b, NULL, ph, &s);
	if (r < 0)
		return r;
	r = mime_graph_check(&s.g, shapes, ei);
	if (r == 0)
		r = mimetrain_sub_model(&s, tp->name, &sm);
	if (r < 0)
		goto out;
	sm.tasks[0].granularity = tp->granularity;
	for (int i = 0; mime && i < s.g.n_layers; i++) {
		size_t n;

		if (!tp->thresholds[i])
			continue;
		n = tp->granularity == MIME_THR_CHANNEL ? (size_t)shapes[i].c
		                                        : (size_t)mime_shape_size(&shapes[i]);
		/* [C,H,W] channel-major (or [C]): the first k channels are the first n values */
		sliced[i] = malloc(sizeof(float) * n);
		if (!sliced[i]) {
			r = -ENOMEM;
			goto out;
		}
		memcpy(sliced[i], tp->thresholds[i], sizeof(float) * n);
		sm.tasks[0].thresholds[i] = sliced[i];
	}
	memset(res, 0, sizeof(*res));
	r = mimetrain_engine_eval(&sm, 0, test, o->threads, &ev, ei);
	res->shared = ev.accuracy;
	if (r == 0 && val->n > 0) {
		r = mimetrain_engine_eval(&sm, 0, val, o->threads, &ev, ei);
		res->val_shared = ev.accuracy;
	}
	if (r < 0)
		goto out;
	r = mimetrain_mime_create(
		&sm, 0, tp->n_classes,
		&(struct mimetrain_mime_config){
			.mode = mime ? MIMETRAIN_MODE_MIME : MIMETRAIN_MODE_HEAD_ONLY,
			.granularity = mime ? tp->granularity : MIME_THR_ELEMENT,
			.epochs = o->epochs,
			.batch = o->batch,
			.threads = o->threads,
			.lr = o->lr,
			.beta = o->beta,
			.reg_sign = o->reg_sign,
			.t_init = MIMETRAIN_T_MIN,
			.seed = o->seed + (uint64_t)p,
			.head_keep_zeros = sparse_head},
		&tr, ei);
	for (int i = 0; r == 0 && i < s.g.n_layers; i++)
		if (sliced[i]) {
			size_t n = tp->granularity == MIME_THR_CHANNEL
			                   ? (size_t)shapes[i].c
			                   : (size_t)mime_shape_size(&shapes[i]);

			r = mimetrain_mime_set_thresholds(tr, i, sliced[i], n);
		}
	if (r == 0)
		r = mimetrain_mime_train(tr, train, val->n > 0 ? val : NULL, NULL, &rep, ei);
	if (r == 0)
		r = mimetrain_mime_model(tr, &sm, tp->name, &lm);
	if (r == 0)
		r = mimetrain_engine_eval(&lm, 0, test, o->threads, &ev, ei);
	if (r < 0)
		goto out;
	res->trained = ev.accuracy;
	res->val_trained = val->n > 0 ? rep.val_acc_best : 0;
	res->kept_shared = val->n > 0 && res->val_shared >= res->val_trained;
	{
		const struct mime_task_params *lt = res->kept_shared ? &sm.tasks[0] : &lm.tasks[0];
		int64_t hs[2] = {tp->n_classes, s.features};

		snprintf(name, sizeof(name), "task/%s/phase%d/head.weight", tp->name, p);
		r = push(nt, n_nt, name, 2, hs, lt->head_w, (size_t)hs[0] * (size_t)hs[1]);
		if (r == 0)
			(*nt)[*n_nt - 1].sparse = sparse_head;
		snprintf(name, sizeof(name), "task/%s/phase%d/head.bias", tp->name, p);
		if (r == 0)
			r = push(nt, n_nt, name, 1, hs, lt->head_b, (size_t)hs[0]);
		for (int i = 0; r == 0 && mime && i < s.g.n_layers; i++) {
			int64_t sh[3] = {shapes[i].c, shapes[i].h, shapes[i].w};
			int ch = tp->granularity == MIME_THR_CHANNEL;

			if (!lt->thresholds[i])
				continue;
			snprintf(name, sizeof(name), "task/%s/phase%d/%s.threshold", tp->name, p,
			         m->graph.layers[i].name);
			r = push(nt, n_nt, name, ch ? 1 : 3, sh, lt->thresholds[i],
			         ch ? (size_t)sh[0] : (size_t)(sh[0] * sh[1] * sh[2]));
		}
	}
out:
	for (int i = 0; i < MIME_MAX_LAYERS; i++)
		free(sliced[i]);
	mimetrain_mime_destroy(tr);
	mime_model_fini(&lm);
	mime_model_fini(&sm);
	mimetrain_sub_fini(&s);
	return r;
}

/* phase extra_json[key][task] = v */
static int set_phase_acc(struct mime_phase_spec *ps, const char *key, const char *task, double v)
{
	json_t *x = ps->extra_json ? json_loads(ps->extra_json, 0, NULL) : NULL, *o;

	if (!json_is_object(x)) {
		json_decref(x);
		x = json_object();
	}
	o = json_object_get(x, key);
	if (!json_is_object(o)) {
		o = json_object();
		json_object_set_new(x, key, o);
	}
	json_object_set_new(o, task, json_real(v));
	free(ps->extra_json);
	ps->extra_json = json_dumps(x, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
	json_decref(x);
	return ps->extra_json ? 0 : -ENOMEM;
}

int mimetrain_cmd_phase_tasks(int argc, char **argv)
{
	struct opts o;
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	struct mime_model model = {0};
	struct mime_manifest m = {0};
	struct newt *nt = NULL;
	struct mime_bundle_writer *w = NULL;
	int n_nt = 0, r, status = 1;
	double t_start = now_s();
	json_t *rep = json_object();

	r = parse_opts(argc, argv, &o);
	if (r != 0) {
		usage(r > 0 ? stdout : stderr);
		json_decref(rep);
		return r > 0 ? 0 : 2;
	}
	r = mime_bundle_open(o.bundle, &b, &ei);
	if (r == 0) {
		const struct mime_manifest *bm = mime_bundle_manifest(b);

		r = mime_manifest_parse(bm->json, strlen(bm->json), &m, &ei);
	}
	if (r == 0)
		r = mime_model_from_bundle(b, 0, &model, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train phase-tasks: %s: %s\n", o.bundle,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	if (m.n_phases == 0) {
		fprintf(stderr, "mime-train phase-tasks: %s has no phases (`mime-train phases`)\n",
		        o.bundle);
		goto out;
	}
	openblas_set_num_threads(o.threads);
	for (int t = 0; t < m.n_tasks; t++) {
		struct mimetrain_taskset train = {0}, val = {0}, test = {0};
		struct mime_model plain = model;
		struct mime_task_params tp = model.tasks[t];
		struct mimetrain_mp mp = {0};
		json_t *tj = json_array();
		struct mime_tensor_view hv;
		char hname[MIME_NAME_MAX + 48];
		int sparse_head;

		if (!wanted(o.tasks, m.tasks[t].name)) {
			json_decref(tj);
			continue;
		}
		/* a head pruned by `thresholds --head-density` stays pruned, and sparse, in
		 * every phase (its slices keep its zeros; training keeps them) */
		snprintf(hname, sizeof(hname), "task/%s/head.weight%s", m.tasks[t].name,
		         MIME_SPARSE_MASK);
		sparse_head = mime_bundle_tensor(b, hname, &hv) == 0;
		/* the weights and this task's whole-parent head, without its thresholds */
		mime_task_relu(&tp);
		plain.tasks = &tp;
		plain.n_tasks = 1;
		r = mimetrain_mp_init(&mp, &plain, 0, &ei);
		if (r == 0)
			r = load_task_data(&o, &m.tasks[t], &train, &val, &test, &ei);
		for (int p = 1; r == 0 && p <= m.n_phases; p++) {
			struct mimetrain_phase_def ph;
			struct phase_result res;
			double t0 = now_s();

			r = phase_def(b, &m, p, &ph, &ei);
			if (r == 0)
				r = task_phase(&o, &m, &model, &mp, t, p, &ph, &train, &val, &test,
				               sparse_head, &res, &nt, &n_nt, &ei);
			mimetrain_phase_def_fini(&ph);
			if (r < 0)
				break;
			const double served = res.kept_shared ? res.shared : res.trained;

			fprintf(stderr,
			        "task %s phase %d (%s): accuracy %.4f shared (sliced), %.4f "
			        "trained (%d epochs)",
			        m.tasks[t].name, p, m.phases[p - 1].name, res.shared, res.trained,
			        o.epochs);
			if (val.n > 0)
				fprintf(stderr, "; validation %.4f vs %.4f: %s kept",
				        res.val_shared, res.val_trained,
				        res.kept_shared ? "sliced" : "trained");
			fprintf(stderr, ", %.0f s\n", now_s() - t0);
			/* task_accuracy: what the bundle serves in the phase */
			set_phase_acc(&m.phases[p - 1], "task_accuracy", m.tasks[t].name, served);
			set_phase_acc(&m.phases[p - 1], "task_accuracy_shared", m.tasks[t].name,
			              res.shared);
			json_t *row = json_pack(
				"{s:i, s:f, s:f, s:f, s:s, s:f}", "phase", p, "shared", res.shared,
				"trained", res.trained, "served", served, "kept",
				res.kept_shared ? "shared" : "trained", "seconds", now_s() - t0);

			if (val.n > 0 && row) {
				json_object_set_new(row, "val_shared", json_real(res.val_shared));
				json_object_set_new(row, "val_trained", json_real(res.val_trained));
				json_object_set_new(row, "val_images", json_integer(val.n));
			}
			json_array_append_new(tj, row);
		}
		json_object_set_new(rep, m.tasks[t].name, tj);
		mimetrain_mp_fini(&mp);
		mimetrain_taskset_fini(&train);
		mimetrain_taskset_fini(&val);
		mimetrain_taskset_fini(&test);
		if (r < 0) {
			fprintf(stderr, "mime-train phase-tasks: %s: %s\n", m.tasks[t].name,
			        ei.msg[0] ? ei.msg : mime_strerror(r));
			goto out;
		}
	}

	/* the bundle: old F32 tensors not replaced, the new ones, then the rest (masks), so
	 * every F32 tensor stays 4-byte aligned */
	r = mime_bundle_writer_create(&w);
	for (int pass = 0; r == 0 && pass < 3; pass++) {
		if (pass == 1) {
			for (int j = 0; r == 0 && j < n_nt; j++)
				r = nt[j].sparse
				            ? mime_bundle_writer_add_sparse(w, nt[j].name,
				                                            nt[j].ndim, nt[j].shape,
				                                            nt[j].data)
				            : mime_bundle_writer_add(w, nt[j].name, MIME_DTYPE_F32,
				                                     nt[j].ndim, nt[j].shape,
				                                     nt[j].data);
			continue;
		}
		for (size_t i = 0; r == 0 && i < mime_bundle_n_tensors(b); i++) {
			struct mime_tensor_view v;
			int replaced = 0;

			mime_bundle_tensor_at(b, i, &v);
			if ((pass == 0) != (v.dtype == MIME_DTYPE_F32))
				continue;
			for (int j = 0; j < n_nt && !replaced; j++)
				replaced = replaces(nt[j].name, v.name);
			if (!replaced)
				r = mime_bundle_writer_add(w, v.name, v.dtype, v.ndim, v.shape,
				                           v.data);
		}
	}
	if (r == 0)
		r = mime_bundle_writer_write(w, &m, o.out, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train phase-tasks: %s: %s\n", o.out,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	json_object_set_new(rep, "seconds", json_real(now_s() - t_start));
	if (o.json_out &&
	    json_dump_file(rep, o.json_out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0) {
		fprintf(stderr, "mime-train phase-tasks: cannot write %s\n", o.json_out);
		goto out;
	}
	fprintf(stderr, "mime-train phase-tasks: wrote %s (%.0f s)\n", o.out, now_s() - t_start);
	status = 0;
out:
	json_decref(rep);
	for (int j = 0; j < n_nt; j++)
		free(nt[j].data);
	free(nt);
	mime_bundle_writer_destroy(w);
	mime_model_fini(&model);
	mime_manifest_free(&m);
	mime_bundle_close(b);
	return status;
}
