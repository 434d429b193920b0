// SPDX-License-Identifier: MIT
/* cmd_thresholds -- `mime-train thresholds` (MIME: a task's thresholds and head on the
 * frozen parent) and the shared body of `mime-train finetune` (the conventional baselines,
 * cmd_finetune.c). Both read a bundle, learn one task (train/mime.h), evaluate it through
 * the inference engine and write a new bundle holding every tensor of the input plus the
 * task's:
 *   thresholds  task/<task>/head.weight|bias, task/<task>/<layer>.threshold; the manifest's
 *               task (added, or replaced when it exists) gets "thresholds", "accuracy",
 *               "sparsity" (per masked layer, MIME), "relu_sparsity" (the frozen parent
 *               with ReLU on the same test images) and "training". With --head-density D
 *               the head is pruned (train/mime.h) and written sparse, head.weight.mask +
 *               head.weight.values (lib/bundle.h); "training" then has "head_pruning".
 *   finetune    conventional/<task>/<layer>.weight|bias and conventional/<task>/head.*;
 *   --head-only headonly/<task>/head.weight|bias; both record accuracy and sparsity in
 *               provenance.baselines.<task>.finetune|head_only.
 * Every run appends to provenance.steps. The parent's weights are verified byte-identical
 * (a checksum of the bundle's parent tensors and of the trainer's copy, before and after).
 * finetune needs the task in the bundle already (thresholds first), so that the three modes
 * share its input spec and eval --mode finds it. The input spec of a task already in the
 * bundle is kept; a new task's is the graph's shape,
 * "stretch" when its images have that size and "pad" (aspect kept, centered) otherwise,
 * with the mean and std of its training images after that step.
 * Exit codes: 0 ok, 1 failure (message on stderr), 2 usage. */
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
#include "train/cmd.h"
#include "train/data.h"
#include "train/mime.h"

struct learn_opts {
	const char *bundle, *task, *out, *json_out, *classes;
	const char *data_dir;
	char train_images[PATH_MAX], train_labels[PATH_MAX];
	char test_images[PATH_MAX], test_labels[PATH_MAX];
	int train_limit, test_limit;
	int val;            /* training images held out for epoch selection; 0: none */
	double val_percent; /* or this percentage of them (--val 10%) */
	int fit;            /* -1: automatic */
	struct mimetrain_mime_config cfg;
};

static void learn_usage(FILE *f, enum mimetrain_mode mode)
{
	if (mode == MIMETRAIN_MODE_MIME)
		fprintf(f,
		        "usage: mime-train thresholds --bundle IN.mime --task NAME -o OUT.mime\n"
		        "         [--data DIR | --train-images F --train-labels F --test-images F "
		        "--test-labels F]\n"
		        "         [--classes A,B,...] [--granularity element|channel] "
		        "[--epochs 10] [--batch 100]\n"
		        "         [--lr 1e-3] [--beta 1e-6] [--reg-sign plus|minus] "
		        "[--t-init 1e-6] [--collapse 0.98]\n"
		        "         [--fit pad|stretch] [--train-limit N] [--test-limit N] "
		        "[--threads T] [--seed S]\n"
		        "         [--val N|P%%] [--head-density D [--prune-epoch K]] "
		        "[--json REPORT.json]\n");
	else
		fprintf(f,
		        "usage: mime-train finetune --bundle IN.mime --task NAME -o OUT.mime "
		        "[--head-only]\n"
		        "         [--data DIR | --train-images F --train-labels F --test-images F "
		        "--test-labels F]\n"
		        "         [--classes A,B,...] [--epochs 10] [--batch 100] [--lr 1e-4 "
		        "(head-only: 1e-3)]\n"
		        "         [--head-lr 1e-3] [--fit pad|stretch] [--train-limit N] "
		        "[--test-limit N]\n"
		        "         [--threads T] [--seed S] [--val N|P%%] [--json REPORT.json]\n");
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int parse_learn_opts(int argc, char **argv, enum mimetrain_mode mode, struct learn_opts *o)
{
	enum {
		O_BUNDLE = 256,
		O_TASK,
		O_DATA,
		O_TRI,
		O_TRL,
		O_TEI,
		O_TEL,
		O_CLASSES,
		O_GRAN,
		O_EPOCHS,
		O_BATCH,
		O_LR,
		O_HEADLR,
		O_BETA,
		O_SIGN,
		O_TINIT,
		O_COLLAPSE,
		O_FIT,
		O_TRLIM,
		O_TELIM,
		O_THREADS,
		O_SEED,
		O_VAL,
		O_JSON,
		O_HEADONLY,
		O_DENSITY,
		O_PRUNE,
		O_HELP,
	};
	static const struct option longopts[] = {
		{"bundle", required_argument, NULL, O_BUNDLE},
		{"task", required_argument, NULL, O_TASK},
		{"data", required_argument, NULL, O_DATA},
		{"train-images", required_argument, NULL, O_TRI},
		{"train-labels", required_argument, NULL, O_TRL},
		{"test-images", required_argument, NULL, O_TEI},
		{"test-labels", required_argument, NULL, O_TEL},
		{"classes", required_argument, NULL, O_CLASSES},
		{"granularity", required_argument, NULL, O_GRAN},
		{"epochs", required_argument, NULL, O_EPOCHS},
		{"batch", required_argument, NULL, O_BATCH},
		{"lr", required_argument, NULL, O_LR},
		{"head-lr", required_argument, NULL, O_HEADLR},
		{"beta", required_argument, NULL, O_BETA},
		{"reg-sign", required_argument, NULL, O_SIGN},
		{"t-init", required_argument, NULL, O_TINIT},
		{"collapse", required_argument, NULL, O_COLLAPSE},
		{"fit", required_argument, NULL, O_FIT},
		{"train-limit", required_argument, NULL, O_TRLIM},
		{"test-limit", required_argument, NULL, O_TELIM},
		{"threads", required_argument, NULL, O_THREADS},
		{"seed", required_argument, NULL, O_SEED},
		{"val", required_argument, NULL, O_VAL},
		{"json", required_argument, NULL, O_JSON},
		{"head-only", no_argument, NULL, O_HEADONLY},
		{"head-density", required_argument, NULL, O_DENSITY},
		{"prune-epoch", required_argument, NULL, O_PRUNE},
		{"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, O_HELP},
		{NULL, 0, NULL, 0},
	};
	int c, lr_set = 0;
	char *end;

	memset(o, 0, sizeof(*o));
	o->fit = -1;
	o->cfg.mode = mode;
	o->cfg.granularity = MIME_THR_ELEMENT;
	o->cfg.epochs = 10;
	o->cfg.batch = 100;
	o->cfg.lr = mode == MIMETRAIN_MODE_MIME ? 1e-3f : 1e-4f;
	o->cfg.head_lr = 1e-3f;
	o->cfg.beta = 1e-6;
	o->cfg.reg_sign = 1;
	o->cfg.t_init = MIMETRAIN_T_MIN;
	o->cfg.collapse = 0.98;
	o->cfg.threads = 1;
	o->cfg.seed = 1;
	o->cfg.prune_epoch = -1;
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
		case O_TRI:
			snprintf(o->train_images, PATH_MAX, "%s", optarg);
			break;
		case O_TRL:
			snprintf(o->train_labels, PATH_MAX, "%s", optarg);
			break;
		case O_TEI:
			snprintf(o->test_images, PATH_MAX, "%s", optarg);
			break;
		case O_TEL:
			snprintf(o->test_labels, PATH_MAX, "%s", optarg);
			break;
		case O_CLASSES:
			o->classes = optarg;
			break;
		case O_GRAN:
			if (strcmp(optarg, "element") == 0)
				o->cfg.granularity = MIME_THR_ELEMENT;
			else if (strcmp(optarg, "channel") == 0)
				o->cfg.granularity = MIME_THR_CHANNEL;
			else
				return -1;
			break;
		case O_EPOCHS:
			o->cfg.epochs = (int)strtol(optarg, &end, 10);
			break;
		case O_BATCH:
			o->cfg.batch = (int)strtol(optarg, &end, 10);
			break;
		case O_LR:
			o->cfg.lr = strtof(optarg, &end);
			lr_set = 1;
			break;
		case O_HEADLR:
			o->cfg.head_lr = strtof(optarg, &end);
			break;
		case O_BETA:
			o->cfg.beta = strtod(optarg, &end);
			break;
		case O_SIGN:
			if (strcmp(optarg, "plus") == 0)
				o->cfg.reg_sign = 1;
			else if (strcmp(optarg, "minus") == 0)
				o->cfg.reg_sign = -1;
			else
				return -1;
			break;
		case O_TINIT:
			o->cfg.t_init = strtof(optarg, &end);
			break;
		case O_COLLAPSE:
			o->cfg.collapse = strtod(optarg, &end);
			break;
		case O_FIT:
			if (strcmp(optarg, "pad") == 0)
				o->fit = MIME_FIT_PAD;
			else if (strcmp(optarg, "stretch") == 0)
				o->fit = MIME_FIT_STRETCH;
			else
				return -1;
			break;
		case O_TRLIM:
			o->train_limit = (int)strtol(optarg, &end, 10);
			break;
		case O_TELIM:
			o->test_limit = (int)strtol(optarg, &end, 10);
			break;
		case O_THREADS:
			o->cfg.threads = (int)strtol(optarg, &end, 10);
			break;
		case O_SEED:
			o->cfg.seed = strtoull(optarg, &end, 10);
			break;
		case O_VAL:
			if (mimetrain_parse_val(optarg, &o->val, &o->val_percent) < 0)
				return -1;
			break;
		case O_JSON:
			o->json_out = optarg;
			break;
		case O_HEADONLY:
			if (mode == MIMETRAIN_MODE_MIME)
				return -1;
			o->cfg.mode = MIMETRAIN_MODE_HEAD_ONLY;
			if (!lr_set)
				o->cfg.lr = 1e-3f;
			break;
		case O_DENSITY: /* MIME only: the baselines' heads are read dense everywhere */
			o->cfg.head_density = strtod(optarg, &end);
			if (mode != MIMETRAIN_MODE_MIME) {
				fprintf(stderr,
				        "mime-train: --head-density is for thresholds only\n");
				return -1;
			}
			if (!(o->cfg.head_density > 0 && o->cfg.head_density <= 1)) {
				fprintf(stderr,
				        "mime-train: --head-density: expected 0 < D <= 1\n");
				return -1;
			}
			break;
		case O_PRUNE: /* 1-based on the command line */
			o->cfg.prune_epoch = (int)strtol(optarg, &end, 10) - 1;
			if (mode != MIMETRAIN_MODE_MIME || o->cfg.prune_epoch < 0) {
				fprintf(stderr, "mime-train: --prune-epoch: expected an epoch >= 1 "
				                "(thresholds only)\n");
				return -1;
			}
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
	if (optind != argc || !o->bundle || !o->task || !o->out || o->cfg.epochs < 0 ||
	    o->cfg.batch <= 0 || o->cfg.threads < 1 || o->cfg.threads > 64 || !(o->cfg.lr > 0) ||
	    o->cfg.beta < 0 || o->train_limit < 0 || o->test_limit < 0 || o->val < 0)
		return -1;
	if ((o->cfg.prune_epoch >= 0 && !o->cfg.head_density) ||
	    (mimetrain_prunes_head(&o->cfg) &&
	     (o->cfg.prune_epoch >= 0 ? o->cfg.prune_epoch : o->cfg.epochs / 2) >= o->cfg.epochs)) {
		fprintf(stderr, "mime-train: --prune-epoch needs --head-density, and the epoch "
		                "that prunes must be one of the --epochs\n");
		return -1;
	}
	if (o->data_dir) {
		snprintf(o->train_images, PATH_MAX, "%s/train-images-idx3-ubyte.gz", o->data_dir);
		snprintf(o->train_labels, PATH_MAX, "%s/train-labels-idx1-ubyte.gz", o->data_dir);
		snprintf(o->test_images, PATH_MAX, "%s/t10k-images-idx3-ubyte.gz", o->data_dir);
		snprintf(o->test_labels, PATH_MAX, "%s/t10k-labels-idx1-ubyte.gz", o->data_dir);
	}
	if (!o->train_images[0] || !o->train_labels[0] || !o->test_images[0] || !o->test_labels[0])
		return -1;
	return 0;
}

/* Splits "a,b,c" into a new array of new strings. */
static char **split_classes(const char *s, int *ret_n)
{
	char *copy = strdup(s), *tok, *save = NULL;
	char **names = NULL, **grown;
	int n = 0;

	if (!copy)
		return NULL;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		grown = realloc(names, sizeof(*names) * (size_t)(n + 1));
		if (!grown)
			goto fail;
		names = grown;
		names[n] = strdup(tok);
		if (!names[n])
			goto fail;
		n++;
	}
	free(copy);
	if (n == 0 || n > 256) {
		for (int i = 0; i < n; i++)
			free(names[i]);
		free(names);
		return NULL;
	}
	*ret_n = n;
	return names;
fail:
	for (int i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(copy);
	return NULL;
}

/* Does tensor `name` belong to what this run replaces? */
static int replaced(const char *name, enum mimetrain_mode mode, const char *task)
{
	static const char *const prefix[] = {"task", "headonly", "conventional"};
	char p[MIME_NAME_MAX + 32];

	snprintf(p, sizeof(p), "%s/%s/",
	         prefix[mode == MIMETRAIN_MODE_MIME        ? 0
	                : mode == MIMETRAIN_MODE_HEAD_ONLY ? 1
	                                                   : 2],
	         task);
	return strncmp(name, p, strlen(p)) == 0;
}

static json_t *sparsity_json(const struct mime_graph *g, const struct mimetrain_eval *ev)
{
	json_t *o = json_object();

	for (int k = 0; o && k < ev->n_masked; k++)
		json_object_set_new(o, g->layers[ev->masked_layer[k]].name,
		                    json_real(ev->sparsity[k]));
	return o;
}

static json_t *result_json(const struct learn_opts *o, const struct mime_graph *g,
                           const struct mimetrain_mime_report *rep, const struct mimetrain_eval *ev,
                           const struct mimetrain_eval *relu, size_t task_bytes, long n_train,
                           long n_test)
{
	static const char *const mode_name[] = {"mime", "head-only", "finetune"};
	json_t *r = json_object(), *tr = json_object(), *col = json_object();

	json_object_set_new(r, "task", json_string(o->task));
	json_object_set_new(r, "mode", json_string(mode_name[o->cfg.mode]));
	if (o->cfg.mode == MIMETRAIN_MODE_MIME)
		json_object_set_new(r, "granularity",
		                    json_string(o->cfg.granularity == MIME_THR_CHANNEL
		                                        ? "channel"
		                                        : "element"));
	json_object_set_new(r, "accuracy", json_real(ev->accuracy));
	json_object_set_new(r, "sparsity", sparsity_json(g, ev));
	if (relu)
		json_object_set_new(r, "relu_sparsity", sparsity_json(g, relu));
	json_object_set_new(r, "task_bytes", json_integer((json_int_t)task_bytes));
	json_object_set_new(tr, "epochs", json_integer(rep->epochs));
	json_object_set_new(tr, "batch", json_integer(o->cfg.batch));
	json_object_set_new(tr, "lr", json_real(o->cfg.lr));
	if (o->cfg.mode == MIMETRAIN_MODE_FINETUNE)
		json_object_set_new(tr, "head_lr", json_real(o->cfg.head_lr));
	if (o->cfg.mode == MIMETRAIN_MODE_MIME) {
		json_object_set_new(tr, "beta", json_real(o->cfg.beta));
		json_object_set_new(tr, "reg",
		                    json_string(o->cfg.reg_sign > 0 ? "exp(t)" : "exp(-t)"));
		json_object_set_new(tr, "t_init", json_real(o->cfg.t_init));
	}
	if (mimetrain_prunes_head(&o->cfg))
		json_object_set_new(tr, "head_pruning",
		                    json_pack("{s:f, s:i, s:I, s:I, s:s}", "density",
		                              o->cfg.head_density, "before_epoch",
		                              rep->pruned_epoch, "nonzero",
		                              (json_int_t)rep->head_nonzero, "weights",
		                              (json_int_t)rep->head_weights, "stored",
		                              "sparse: head.weight.mask + head.weight.values"));
	json_object_set_new(tr, "optimizer", json_string("adam"));
	json_object_set_new(tr, "seed", json_integer((json_int_t)o->cfg.seed));
	json_object_set_new(tr, "threads", json_integer(o->cfg.threads));
	json_object_set_new(tr, "train_images", json_integer(n_train));
	json_object_set_new(tr, "test_images", json_integer(n_test));
	json_object_set_new(tr, "train_seconds", json_real((double)(long)(rep->seconds * 10) / 10));
	json_object_set_new(tr, "train_cpu_seconds",
	                    json_real((double)(long)(rep->cpu_seconds * 10) / 10));
	json_object_set_new(tr, "train_loss", json_real(rep->train_loss));
	json_object_set_new(tr, "train_accuracy", json_real(rep->train_acc));
	for (int k = 0; k < rep->n_masked; k++)
		if (rep->collapse_events[k])
			json_object_set_new(col, g->layers[rep->masked_layer[k]].name,
			                    json_integer(rep->collapse_events[k]));
	if (rep->n_val) {
		json_t *curve = json_array(), *lcurve = json_array();

		for (int e = 0; e < rep->epochs && e < MIMETRAIN_VAL_CURVE; e++) {
			json_array_append_new(curve, json_real(rep->val_acc[e]));
			json_array_append_new(lcurve, json_real(rep->val_loss[e]));
		}
		json_object_set_new(tr, "validation",
		                    json_pack("{s:i, s:s, s:i, s:f, s:f, s:o, s:o}", "images",
		                              rep->n_val, "split",
		                              "held out of the training split, stratified, seeded",
		                              "best_epoch", rep->best_epoch, "best_accuracy",
		                              rep->val_acc_best, "best_loss", rep->val_loss_best,
		                              "accuracy", curve, "loss", lcurve));
	}
	json_object_set_new(tr, "collapse_guard",
	                    json_pack("{s:f, s:s, s:o}", "above", o->cfg.collapse, "action",
	                              "report, halve the layer's thresholds", "events", col));
	if (o->cfg.mode == MIMETRAIN_MODE_MIME) {
		json_t *tm = json_object();

		for (int k = 0; k < rep->n_masked; k++)
			json_object_set_new(tm, g->layers[rep->masked_layer[k]].name,
			                    json_real(rep->t_mean[k]));
		json_object_set_new(tr, "threshold_mean", tm);
	}
	json_object_set_new(r, "training", tr);
	return r;
}

int mimetrain_parse_val(const char *s, int *ret_n, double *ret_percent)
{
	const size_t len = strlen(s);
	char *end = NULL;

	*ret_n = 0;
	*ret_percent = 0;
	if (len > 1 && s[len - 1] == '%') {
		*ret_percent = strtod(s, &end);
		return end == s + len - 1 && *ret_percent > 0 && *ret_percent < 100 ? 0 : -1;
	}
	errno = 0;
	long n = strtol(s, &end, 10);

	if (len == 0 || *end || errno || n < 0 || n > INT_MAX)
		return -1;
	*ret_n = (int)n;
	return 0;
}

json_t *mimetrain_provenance_add_step(const char *old, const char *sub, int argc, char **argv,
                                      json_t **ret_step)
{
	json_t *p = old ? json_loads(old, 0, NULL) : NULL, *steps, *cmd = json_array();
	json_t *step = json_object();
	char date[32];
	time_t now = time(NULL);
	struct tm tm;

	if (!json_is_object(p)) {
		json_decref(p);
		p = json_object();
	}
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
	json_array_append_new(cmd, json_string("mime-train"));
	if (sub)
		json_array_append_new(cmd, json_string(sub));
	for (int i = 0; i < argc; i++)
		json_array_append_new(cmd, json_string(argv[i]));
	json_object_set_new(step, "command", cmd);
	json_object_set_new(step, "date", json_string(date));
	steps = json_object_get(p, "steps");
	if (!json_is_array(steps)) {
		steps = json_array();
		json_object_set_new(p, "steps", steps);
	}
	json_array_append_new(steps, step);
	if (ret_step)
		*ret_step = step;
	return p;
}

/* provenance.steps += step; baselines go to provenance.baselines.<task>.<kind> too. */
static char *new_provenance(const char *old, int argc, char **argv, const struct learn_opts *o,
                            json_t *result)
{
	json_t *step, *p = mimetrain_provenance_add_step(old, NULL, argc, argv, &step);
	char *s;

	json_object_set(step, "result", result);
	if (o->cfg.mode != MIMETRAIN_MODE_MIME) {
		json_t *bl = json_object_get(p, "baselines"), *bt;

		if (!json_is_object(bl)) {
			bl = json_object();
			json_object_set_new(p, "baselines", bl);
		}
		bt = json_object_get(bl, o->task);
		if (!json_is_object(bt)) {
			bt = json_object();
			json_object_set_new(bl, o->task, bt);
		}
		json_object_set(bt,
		                o->cfg.mode == MIMETRAIN_MODE_FINETUNE ? "finetune" : "head_only",
		                result);
	}
	s = json_dumps(p, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
	json_decref(p);
	return s;
}

static int add_f32(struct mime_bundle_writer *w, const char *name, int ndim, const int64_t *shape,
                   const float *data, struct mime_errinfo *ei)
{
	int r = mime_bundle_writer_add(w, name, MIME_DTYPE_F32, ndim, shape, data);

	if (r < 0)
		mime_errinfo_set(ei, r, "cannot add tensor '%s'", name);
	return r;
}

struct learned {
	const struct mimetrain_mime *mime;
	const struct mime_model *model; /* the engine's view of what was learned */
	int n_classes;
	int features;
};

/* The output bundle: every tensor of b this run does not replace, then the task's. */
static int write_output(const struct learn_opts *o, const struct mime_bundle *b,
                        struct mime_manifest *m, const struct learned *l, struct mime_errinfo *ei)
{
	static const char *const prefix[] = {"task", "headonly", "conventional"};
	const char *pre = prefix[o->cfg.mode];
	const struct mime_graph *g = &m->graph;
	struct mime_shape shapes[MIME_MAX_LAYERS];
	struct mime_bundle_writer *w = NULL;
	const struct mime_task_params *tp = &l->model->tasks[0];
	char name[MIME_NAME_MAX * 2 + 32];
	int r;

	r = mime_graph_check(g, shapes, ei);
	if (r < 0)
		return r;
	r = mime_bundle_writer_create(&w);
	if (r < 0)
		return r;
	for (size_t i = 0; i < mime_bundle_n_tensors(b); i++) {
		struct mime_tensor_view v;

		mime_bundle_tensor_at(b, i, &v);
		if (replaced(v.name, o->cfg.mode, o->task))
			continue;
		r = mime_bundle_writer_add(w, v.name, v.dtype, v.ndim, v.shape, v.data);
		if (r < 0) {
			mime_errinfo_set(ei, r, "cannot copy tensor '%s'", v.name);
			goto out;
		}
	}
	if (o->cfg.mode == MIMETRAIN_MODE_FINETUNE)
		for (int i = 0; i < g->n_layers; i++) {
			const struct mime_layer_spec *ls = &g->layers[i];
			const struct mime_shape *in = i ? &shapes[i - 1] : &g->input;
			int64_t shape[4] = {ls->out, in->c, ls->kernel, ls->kernel};

			if (ls->kind != MIME_LAYER_CONV && ls->kind != MIME_LAYER_FC)
				continue;
			if (ls->kind == MIME_LAYER_FC)
				shape[1] = mime_shape_size(in);
			snprintf(name, sizeof(name), "%s/%s/%s.weight", pre, o->task, ls->name);
			r = add_f32(w, name, ls->kind == MIME_LAYER_CONV ? 4 : 2, shape,
			            l->model->weight[i], ei);
			if (r < 0)
				goto out;
			snprintf(name, sizeof(name), "%s/%s/%s.bias", pre, o->task, ls->name);
			r = add_f32(w, name, 1, shape, l->model->bias[i], ei);
			if (r < 0)
				goto out;
		}
	{
		int64_t hshape[2] = {l->n_classes, l->features};

		snprintf(name, sizeof(name), "%s/%s/head.weight", pre, o->task);
		if (mimetrain_prunes_head(&o->cfg)) {
			r = mime_bundle_writer_add_sparse(w, name, 2, hshape, tp->head_w);
			if (r < 0)
				mime_errinfo_set(ei, r, "cannot add tensor '%s' (sparse)", name);
		} else {
			r = add_f32(w, name, 2, hshape, tp->head_w, ei);
		}
		if (r < 0)
			goto out;
		snprintf(name, sizeof(name), "%s/%s/head.bias", pre, o->task);
		r = add_f32(w, name, 1, hshape, tp->head_b, ei);
		if (r < 0)
			goto out;
	}
	if (o->cfg.mode == MIMETRAIN_MODE_MIME)
		for (int i = 0; i < g->n_layers; i++) {
			const struct mime_shape *s = &shapes[i];
			int64_t shape[3] = {s->c, s->h, s->w};

			if (!tp->thresholds[i])
				continue;
			snprintf(name, sizeof(name), "task/%s/%s.threshold", o->task,
			         g->layers[i].name);
			r = add_f32(w, name, o->cfg.granularity == MIME_THR_CHANNEL ? 1 : 3, shape,
			            tp->thresholds[i], ei);
			if (r < 0)
				goto out;
		}
	r = mime_bundle_writer_write(w, m, o->out, ei);
out:
	mime_bundle_writer_destroy(w);
	return r;
}

int mimetrain_learn_task(int argc, char **argv, int mode_)
{
	const enum mimetrain_mode mode = (enum mimetrain_mode)mode_;
	struct learn_opts o;
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	struct mime_model parent = {0}, learned = {0};
	struct mime_manifest m = {0};
	struct mimetrain_data dtrain = {0}, dtest = {0};
	struct mimetrain_taskset train = {0}, test = {0}, val = {0};
	struct mimetrain_mime *mime = NULL;
	struct mimetrain_mime_report rep;
	struct mimetrain_eval ev, relu_ev;
	struct mime_input_spec spec;
	const struct mime_manifest *bm;
	char **class_names = NULL;
	int n_classes = 0, task, r, status = 1;
	uint64_t sum_bundle, sum_before, sum_after, sum_bundle_after;
	json_t *result = NULL;
	size_t task_bytes = 0;
	double t_start = now_s();

	r = parse_learn_opts(argc, argv, mode, &o);
	if (r != 0) {
		learn_usage(r > 0 ? stdout : stderr, mode);
		return r > 0 ? 0 : 2;
	}
	r = mime_bundle_open(o.bundle, &b, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s: %s\n", o.bundle,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		return 1;
	}
	bm = mime_bundle_manifest(b);
	r = mime_manifest_parse(bm->json, strlen(bm->json), &m, &ei); /* our own copy */
	if (r == 0)
		r = mime_model_from_bundle(b, 0, &parent, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s: %s\n", o.bundle,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	task = mime_manifest_task(&m, o.task);
	if (task < 0 && mode != MIMETRAIN_MODE_MIME) {
		/* the baselines reuse the task's input spec and classes, so that all three
		 * modes see the same inputs, and `mime-train eval --mode` finds the task */
		fprintf(stderr,
		        "mime-train: task '%s' is not in %s: run `mime-train thresholds` first\n",
		        o.task, o.bundle);
		goto out;
	}
	if (o.classes) {
		class_names = split_classes(o.classes, &n_classes);
		if (!class_names) {
			fprintf(stderr, "mime-train: --classes: 1..256 comma-separated names\n");
			goto out;
		}
		if (task >= 0 && n_classes != m.tasks[task].n_classes) {
			fprintf(stderr,
			        "mime-train: task '%s' has %d classes in %s, --classes gives %d\n",
			        o.task, m.tasks[task].n_classes, o.bundle, n_classes);
			goto out;
		}
	} else if (task >= 0) {
		n_classes = m.tasks[task].n_classes;
	} else {
		fprintf(stderr, "mime-train: task '%s' is new: --classes is needed\n", o.task);
		goto out;
	}
	if (m.n_tasks >= MIME_MAX_TASKS && task < 0) {
		fprintf(stderr, "mime-train: %s already has %d tasks\n", o.bundle, m.n_tasks);
		goto out;
	}

	/* data, preprocessed as the daemon will */
	fprintf(stderr, "mime-train: loading %s, %s\n", o.train_images, o.test_images);
	r = mimetrain_data_load(o.train_images, o.train_labels, n_classes, o.train_limit, &dtrain,
	                        &ei);
	if (r == 0)
		r = mimetrain_data_load(o.test_images, o.test_labels, n_classes, o.test_limit,
		                        &dtest, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s\n", ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	if (task >= 0) {
		spec = m.tasks[task].input;
	} else {
		float mean, std;

		mime_input_spec_default(&m.graph, &spec);
		spec.fit = o.fit >= 0 ? o.fit
		           : dtrain.h == m.graph.input.h && dtrain.w == m.graph.input.w
		                   ? MIME_FIT_STRETCH
		                   : MIME_FIT_PAD;
		r = mimetrain_taskset_make(&dtrain, &spec, &train, &ei);
		if (r < 0) {
			fprintf(stderr, "mime-train: %s\n", ei.msg[0] ? ei.msg : mime_strerror(r));
			goto out;
		}
		mimetrain_taskset_stats(&train, &mean, &std);
		mimetrain_taskset_fini(&train);
		for (int c = 0; c < 3; c++) {
			spec.mean[c] = mean;
			spec.std[c] = std;
		}
	}
	r = mimetrain_taskset_make(&dtrain, &spec, &train, &ei);
	if (r == 0)
		r = mimetrain_taskset_make(&dtest, &spec, &test, &ei);
	/* held out of the training split (the test split stays unseen until the end) */
	if (r == 0)
		r = mimetrain_hold_out(&train, o.val, o.val_percent, o.cfg.seed, &val, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s\n", ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	fprintf(stderr,
	        "mime-train: task %s: %d train / %d test images %dx%d -> %dx%dx%d (%s, mean %.4f "
	        "std %.4f), %d classes, %d epochs, batch %d, %d threads\n",
	        o.task, train.n, test.n, dtrain.w, dtrain.h, spec.channels, spec.height, spec.width,
	        spec.fit == MIME_FIT_PAD ? "pad" : "stretch", spec.mean[0], spec.std[0], n_classes,
	        o.cfg.epochs, o.cfg.batch, o.cfg.threads);

	openblas_set_num_threads(o.cfg.threads);
	sum_bundle = mimetrain_model_checksum(&parent);
	/* the parent's own task (the bundle's first, written by `mime-train parent`) starts
	 * from the parent's head and trains it further; every other task gets a new head */
	r = mimetrain_mime_create(&parent, task == 0 ? 0 : -1, n_classes, &o.cfg, &mime, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s\n", ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	sum_before = mimetrain_mime_body_checksum(mime);
	if (sum_before != sum_bundle) {
		fprintf(stderr, "mime-train: the trainer's copy of the parent differs from %s\n",
		        o.bundle);
		goto out;
	}
	if (val.n)
		fprintf(stderr,
		        "mime-train: %d training images held out for validation: the epoch with "
		        "the best validation accuracy is kept\n",
		        val.n);
	r = mimetrain_mime_train(mime, &train, val.n ? &val : NULL, stderr, &rep, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s\n", ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	sum_after = mimetrain_mime_body_checksum(mime);
	sum_bundle_after = mimetrain_model_checksum(&parent);
	if (o.cfg.mode != MIMETRAIN_MODE_FINETUNE &&
	    (sum_after != sum_before || sum_bundle_after != sum_bundle)) {
		fprintf(stderr,
		        "mime-train: the frozen parent changed during training (%016llx -> "
		        "%016llx)\n",
		        (unsigned long long)sum_before, (unsigned long long)sum_after);
		goto out;
	}
	fprintf(stderr, "mime-train: parent weights checksum %016llx before and %016llx after%s\n",
	        (unsigned long long)sum_before, (unsigned long long)sum_after,
	        o.cfg.mode == MIMETRAIN_MODE_FINETUNE ? " (fine-tuned: expected to differ)"
	                                              : ": byte-identical");

	/* evaluation through the engine, as served */
	if (o.cfg.threads > 1)
		openblas_set_num_threads(1);
	r = mimetrain_mime_model(mime, &parent, o.task, &learned);
	if (r == 0)
		r = mimetrain_engine_eval(&learned, 0, &test, o.cfg.threads, &ev, &ei);
	if (r == 0 && o.cfg.mode == MIMETRAIN_MODE_MIME) {
		struct mime_task_params *tp = &learned.tasks[0];
		const float *saved[MIME_MAX_LAYERS];

		/* the frozen parent with ReLU on the same images: the baseline sparsity */
		memcpy(saved, tp->thresholds, sizeof(saved));
		memset(tp->thresholds, 0, sizeof(tp->thresholds));
		tp->granularity = MIME_THR_NONE;
		r = mimetrain_engine_eval(&learned, 0, &test, o.cfg.threads, &relu_ev, &ei);
		memcpy(tp->thresholds, saved, sizeof(saved));
		tp->granularity = o.cfg.granularity;
	}
	if (r < 0) {
		fprintf(stderr, "mime-train: evaluation: %s\n",
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	task_bytes = sizeof(float) *
	             ((size_t)n_classes * mimetrain_net_features(mimetrain_mime_net(mime)) +
	              (size_t)n_classes);
	if (mimetrain_prunes_head(&o.cfg)) /* mask bits + non-zero values + bias */
		task_bytes = (rep.head_weights + 7) / 8 +
		             sizeof(float) * (rep.head_nonzero + (size_t)n_classes);
	for (int i = 0; i < m.graph.n_layers; i++) {
		size_t nt = 0;

		if (o.cfg.mode == MIMETRAIN_MODE_MIME && mimetrain_mime_thresholds(mime, i, &nt))
			task_bytes += sizeof(float) * nt;
		if (o.cfg.mode == MIMETRAIN_MODE_FINETUNE && learned.weight[i]) {
			struct mime_shape shapes[MIME_MAX_LAYERS];

			mime_graph_check(&m.graph, shapes, NULL);
			task_bytes += sizeof(float) * (size_t)mime_graph_layer_params(
							      &m.graph.layers[i],
							      i ? &shapes[i - 1] : &m.graph.input);
		}
	}
	fprintf(stderr, "mime-train: task %s test accuracy %.4f (engine, %d images), sparsity",
	        o.task, ev.accuracy, test.n);
	for (int k = 0; k < ev.n_masked; k++)
		fprintf(stderr, " %s %.3f", m.graph.layers[ev.masked_layer[k]].name,
		        ev.sparsity[k]);
	if (o.cfg.mode == MIMETRAIN_MODE_MIME) {
		fprintf(stderr, " (ReLU:");
		for (int k = 0; k < relu_ev.n_masked; k++)
			fprintf(stderr, " %.3f", relu_ev.sparsity[k]);
		fprintf(stderr, ")");
	}
	fprintf(stderr, ", %zu bytes for the task, %.1f s training\n", task_bytes, rep.seconds);
	if (rep.total_collapse_events)
		fprintf(stderr, "mime-train: warning: the collapse guard fired %d times\n",
		        rep.total_collapse_events);

	result = result_json(&o, &m.graph, &rep, &ev,
	                     o.cfg.mode == MIMETRAIN_MODE_MIME ? &relu_ev : NULL, task_bytes,
	                     train.n, test.n);
	json_object_set_new(json_object_get(result, "training"), "parent_checksum",
	                    json_sprintf("%016llx", (unsigned long long)sum_bundle));

	/* the manifest: the task, then provenance */
	if (o.cfg.mode == MIMETRAIN_MODE_MIME) {
		struct mime_task_spec *ts;
		json_t *extra;

		if (task < 0) {
			struct mime_task_spec *grown =
				realloc(m.tasks, sizeof(*m.tasks) * (size_t)(m.n_tasks + 1));

			if (!grown) {
				fprintf(stderr, "mime-train: out of memory\n");
				goto out;
			}
			m.tasks = grown;
			task = m.n_tasks++;
			ts = &m.tasks[task];
			memset(ts, 0, sizeof(*ts));
			snprintf(ts->name, sizeof(ts->name), "%s", o.task);
			ts->n_classes = n_classes;
			ts->class_names = class_names;
			class_names = NULL; /* the manifest owns them now */
			ts->input = spec;
		}
		ts = &m.tasks[task];
		ts->thresholds = o.cfg.granularity;
		ts->accuracy = ev.accuracy;
		extra = ts->extra_json ? json_loads(ts->extra_json, 0, NULL) : NULL;
		if (!json_is_object(extra)) {
			json_decref(extra);
			extra = json_object();
		}
		json_object_set(extra, "sparsity", json_object_get(result, "sparsity"));
		json_object_set(extra, "relu_sparsity", json_object_get(result, "relu_sparsity"));
		json_object_set(extra, "task_bytes", json_object_get(result, "task_bytes"));
		json_object_set(extra, "training", json_object_get(result, "training"));
		free(ts->extra_json);
		ts->extra_json = json_dumps(extra, JSON_COMPACT | JSON_PRESERVE_ORDER |
		                                           JSON_REAL_PRECISION(9));
		json_decref(extra);
	}
	{
		char *prov = new_provenance(m.provenance_json, argc, argv, &o, result);

		if (!prov) {
			fprintf(stderr, "mime-train: out of memory\n");
			goto out;
		}
		free(m.provenance_json);
		m.provenance_json = prov;
	}
	{
		struct learned l = {.mime = mime,
		                    .model = &learned,
		                    .n_classes = n_classes,
		                    .features = mimetrain_net_features(mimetrain_mime_net(mime))};

		r = write_output(&o, b, &m, &l, &ei);
	}
	if (r < 0) {
		fprintf(stderr, "mime-train: %s: %s\n", o.out,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	if (o.json_out) {
		json_object_set_new(result, "bundle", json_string(o.out));
		json_object_set_new(result, "seconds_total", json_real(now_s() - t_start));
		if (json_dump_file(result, o.json_out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0) {
			fprintf(stderr, "mime-train: cannot write %s\n", o.json_out);
			goto out;
		}
	}
	fprintf(stderr, "mime-train: wrote %s (%.1f s in all)\n", o.out, now_s() - t_start);
	status = 0;
out:
	json_decref(result);
	for (int i = 0; class_names && i < n_classes; i++)
		free(class_names[i]);
	free(class_names);
	mimetrain_mime_destroy(mime);
	mime_model_fini(&learned);
	mime_model_fini(&parent);
	mimetrain_taskset_fini(&train);
	mimetrain_taskset_fini(&test);
	mimetrain_taskset_fini(&val);
	mimetrain_data_fini(&dtrain);
	mimetrain_data_fini(&dtest);
	mime_manifest_free(&m);
	mime_bundle_close(b);
	return status;
}

int mimetrain_cmd_thresholds(int argc, char **argv)
{
	return mimetrain_learn_task(argc, argv, MIMETRAIN_MODE_MIME);
}
