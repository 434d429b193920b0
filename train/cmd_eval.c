// SPDX-License-Identifier: MIT
/* cmd_eval -- `mime-train eval`: accuracy of a bundle's task on IDX data through the
 * inference engine (the same code path the daemon serves), per-class accuracy, and per
 * masked layer the mean fraction of output neurons that were zero ("sparsity").
 * IDX images are taken as 8-bit gray in [0,1] and preprocessed to the task's input spec.
 * --mode picks what serves the task: "mime" (default: the bundle's task as the daemon serves
 * it, thresholds if it has them), "conventional" (the fine-tuned copy conventional/<task>/...
 * written by `mime-train finetune`, ReLU) or "head-only" (the parent with ReLU and the head
 * headonly/<task>/head.*). The model is the bundle's with that task's views replaced.
 * --phase N measures phase N of the bundle (lib/model.h: 0 = the whole parent, the default;
 * 1..n_phases as the manifest lists them); --phase all measures 0..n_phases one after the
 * other on one engine and prints a table (a JSON array with --json), a phase the task cannot
 * run in being reported as such. ms/image is the engine's forward time alone (batches of
 * 64 on --threads threads), not reading or preprocessing; each phase's first batch is run
 * once more, untimed, to warm it.
 * Exit codes: 0 ok, 1 failure (message on stderr; also a phase the bundle cannot run the
 * task in, asked for by number), 2 usage.
 * Ownership: everything made here is freed before returning. Threads: the engine's own. */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/bundle.h"
#include "lib/engine.h"
#include "lib/idx.h"
#include "lib/image.h"
#include "lib/model.h"
#include "train/cmd.h"

#define EVAL_BATCH 64

static void eval_usage(FILE *f)
{
	fprintf(f, "usage: mime-train eval --bundle FILE --task NAME --images IDX --labels IDX\n"
	           "                       [--limit N] [--threads N] [--json]\n"
	           "                       [--mode mime|conventional|head-only] [--phase N|all]\n"
	           "--phase N measures phase N of the bundle (0 the whole parent, the default;\n"
	           "1..n as 'mime-train bundle inspect' lists them); --phase all every phase,\n"
	           "as a table (a JSON array with --json). --phase needs --mode mime.\n");
}

/* A view of tensor name that must hold exactly n_floats F32 values, or NULL. */
static const float *eval_tensor(const struct mime_bundle *b, const char *name, size_t n_floats)
{
	struct mime_tensor_view v;

	if (mime_bundle_tensor(b, name, &v) < 0 || v.dtype != MIME_DTYPE_F32 ||
	    v.n_bytes != n_floats * sizeof(float))
		return NULL;
	return v.data;
}

/* Replaces task's views in m by the baseline's: mode 1 conventional, 2 head-only. */
static int eval_use_baseline(const struct mime_bundle *b, struct mime_model *m, int task, int mode)
{
	const char *pre = mode == 1 ? "conventional" : "headonly";
	struct mime_task_params *tp = &m->tasks[task];
	struct mime_shape shapes[MIME_MAX_LAYERS];
	char name[MIME_NAME_MAX * 2 + 32];
	const float *hw;
	int feat;

	if (mime_graph_check(&m->graph, shapes, NULL) < 0)
		return -1;
	feat = (int)mime_shape_size(&shapes[m->graph.n_layers - 1]);
	snprintf(name, sizeof(name), "%s/%s/head.weight", pre, tp->name);
	hw = eval_tensor(b, name, (size_t)tp->n_classes * feat);
	snprintf(name, sizeof(name), "%s/%s/head.bias", pre, tp->name);
	mime_task_set_head(tp, hw, eval_tensor(b, name, (size_t)tp->n_classes));
	if (!tp->head_w || !tp->head_b) {
		fprintf(stderr, "mime-train: no %s/%s/head.weight|bias of the right shape\n", pre,
		        tp->name);
		return -1;
	}
	mime_task_relu(tp);
	for (int i = 0; mode == 1 && i < m->graph.n_layers; i++) {
		const struct mime_layer_spec *l = &m->graph.layers[i];
		long nw;

		if (l->kind != MIME_LAYER_CONV && l->kind != MIME_LAYER_FC)
			continue;
		nw = mime_graph_layer_params(l, i ? &shapes[i - 1] : &m->graph.input) - l->out;
		snprintf(name, sizeof(name), "%s/%s/%s.weight", pre, tp->name, l->name);
		m->weight[i] = eval_tensor(b, name, (size_t)nw);
		snprintf(name, sizeof(name), "%s/%s/%s.bias", pre, tp->name, l->name);
		m->bias[i] = eval_tensor(b, name, (size_t)l->out);
		if (!m->weight[i] || !m->bias[i]) {
			fprintf(stderr, "mime-train: no %s/%s/%s.weight|bias of the right shape\n",
			        pre, tp->name, l->name);
			return -1;
		}
	}
	/* one task only: the others would run on the baseline's weights */
	m->tasks[0] = *tp;
	m->n_tasks = 1;
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define PHASE_ALL (-1)

/* The data set and the task it is evaluated for. */
struct eval_data {
	const struct mime_idx *x, *y;
	const struct mime_task_spec *ts;
	int task; /* index in the engine's model */
	long n;   /* images used */
};

/* What one pass over the data measured. */
struct eval_result {
	int phase;
	int ran; /* 0: the phase could not be entered (why in error) */
	char error[256];
	long hits;
	long *correct, *seen; /* [n_classes] */
	int n_masked;
	int masked_layer[MIME_MAX_LAYERS];
	double zero_sum[MIME_MAX_LAYERS]; /* sum over images of the zero fraction */
	int64_t neurons[MIME_MAX_LAYERS]; /* in this phase */
	double secs, forward_secs;
};

static void eval_result_fini(struct eval_result *res)
{
	free(res->correct);
	free(res->seen);
}

/* Runs every image of d through e; fills *res (its correct / seen arrays allocated here).
 * Returns 0 or prints why not and returns -1. */
static int eval_pass(struct mime_engine *e, const struct eval_data *d, float *in, float *pix,
                     struct eval_result *res)
{
	const struct mime_task_spec *ts = d->ts;
	const long isz = (long)ts->input.channels * ts->input.height * ts->input.width;
	const long psz = (long)d->x->dims[1] * d->x->dims[2];
	struct mime_image img = {.width = (int)d->x->dims[2],
	                         .height = (int)d->x->dims[1],
	                         .channels = 1,
	                         .pixels = pix};
	struct mime_errinfo ei = {0};
	double t0 = now_s();
	int r;

	res->correct = calloc((size_t)ts->n_classes, sizeof(long));
	res->seen = calloc((size_t)ts->n_classes, sizeof(long));
	if (!res->correct || !res->seen) {
		fprintf(stderr, "mime-train: out of memory\n");
		return -1;
	}
	for (long i0 = 0; i0 < d->n; i0 += EVAL_BATCH) {
		int bn = (int)(d->n - i0 < EVAL_BATCH ? d->n - i0 : EVAL_BATCH);
		int tasks[EVAL_BATCH];
		struct mime_engine_result out;
		double f0;

		for (int j = 0; j < bn; j++) {
			const uint8_t *src = d->x->data + (i0 + j) * psz;

			for (long p = 0; p < psz; p++)
				pix[p] = (float)src[p] / 255.0f;
			r = mime_image_preprocess(&img, &ts->input, in + j * isz, &ei);
			if (r < 0) {
				fprintf(stderr, "mime-train: image %ld: %s\n", i0 + j, ei.msg);
				return -1;
			}
			tasks[j] = d->task;
		}
		/* The first batch of a phase also warms it (caches, first-touch pages), untimed. */
		r = i0 == 0 ? mime_engine_forward(e, bn, in, tasks, &out) : 0;
		f0 = now_s();
		if (r == 0)
			r = mime_engine_forward(e, bn, in, tasks, &out);
		res->forward_secs += now_s() - f0;
		if (r < 0) {
			fprintf(stderr, "mime-train: inference failed: %s\n", mime_strerror(r));
			return -1;
		}
		res->n_masked = out.n_masked;
		for (int k = 0; k < out.n_masked; k++) {
			res->neurons[k] = out.neurons[k];
			res->masked_layer[k] = out.masked_layer[k];
		}
		for (int j = 0; j < bn; j++) {
			int cls, y = d->y->data[i0 + j];
			float p;

			mime_topk(out.logits + (long)j * out.max_classes, ts->n_classes, 1, &cls,
			          &p);
			res->seen[y]++;
			if (cls == y) {
				res->correct[y]++;
				res->hits++;
			}
			for (int k = 0; k < out.n_masked; k++)
				res->zero_sum[k] += (double)out.zeros[j * out.n_masked + k] /
				                    (double)out.neurons[k];
		}
	}
	res->secs = now_s() - t0;
	res->ran = 1;
	return 0;
}

/* Puts e (built on b's model) in phase p; *io_tasks holds the task views of the phase e is
 * in (NULL for the model's own) and is replaced on success. On failure e stays where it
 * was and ret_why says why. */
static int eval_enter(const struct mime_bundle *b, struct mime_engine *e, int p,
                      struct mime_task_params **io_tasks, char *ret_why, size_t why_size)
{
	const struct mime_manifest *mf = mime_bundle_manifest(b);
	struct mime_task_params *tasks = NULL;
	struct mime_errinfo ei = {0};
	struct mime_phase ph;
	uint8_t *keep = NULL;
	int r;

	if (p == 0) {
		r = mime_engine_set_phase(e, NULL, NULL, &ei);
	} else {
		tasks = calloc((size_t)mf->n_tasks, sizeof(*tasks));
		if (!tasks)
			return -ENOMEM;
		r = mime_model_phase(b, p, MIME_MODEL_HALF_VIEWS, &ph, &keep, tasks, &ei);
		if (r == 0) {
			r = mime_engine_set_phase(e, &ph, tasks, &ei);
			free(keep);
		}
	}
	if (r < 0) {
		snprintf(ret_why, why_size, "%s", ei.msg[0] ? ei.msg : mime_strerror(r));
		free(tasks);
		return r;
	}
	free(*io_tasks);
	*io_tasks = tasks;
	return 0;
}

static const char *phase_name(const struct mime_manifest *mf, int p)
{
	return p == 0 ? "parent" : mf->phases[p - 1].name;
}

static json_t *result_json(const char *bundle, const char *mode, const struct mime_model *m,
                           const struct mime_manifest *mf, const struct eval_data *d,
                           const struct eval_result *res)
{
	const struct mime_task_spec *ts = d->ts;
	json_t *o = json_object(), *pc, *sp;

	json_object_set_new(o, "bundle", json_string(bundle));
	json_object_set_new(o, "task", json_string(ts->name));
	json_object_set_new(o, "mode", json_string(mode));
	json_object_set_new(o, "phase", json_integer(res->phase));
	json_object_set_new(o, "phase_name", json_string(phase_name(mf, res->phase)));
	json_object_set_new(o, "images", json_integer(d->n));
	if (!res->ran) {
		json_object_set_new(o, "accuracy", json_null());
		json_object_set_new(o, "error", json_string(res->error));
		return o;
	}
	json_object_set_new(o, "accuracy", json_real((double)res->hits / (double)d->n));
	pc = json_object();
	for (int k = 0; k < ts->n_classes; k++)
		json_object_set_new(
			pc, ts->class_names[k],
			res->seen[k] ? json_real((double)res->correct[k] / (double)res->seen[k])
				     : json_null());
	json_object_set_new(o, "per_class", pc);
	sp = json_object();
	for (int k = 0; k < res->n_masked; k++)
		json_object_set_new(sp, m->graph.layers[res->masked_layer[k]].name,
		                    json_real(res->zero_sum[k] / (double)d->n));
	json_object_set_new(o, "sparsity", sp);
	json_object_set_new(o, "seconds", json_real(res->secs));
	json_object_set_new(o, "ms_per_image", json_real(1e3 * res->forward_secs / (double)d->n));
	return o;
}

static void print_result(const char *bundle, const struct mime_model *m, const struct eval_data *d,
                         const struct eval_result *res, int say_phase)
{
	const struct mime_task_spec *ts = d->ts;
	const long n = d->n;

	printf("%s task %s", bundle, ts->name);
	if (say_phase)
		printf(" phase %d", res->phase);
	printf(": accuracy %.4f (%ld/%ld) in %.2f s (%.0f images/s, %.4f ms/image forward)\n",
	       (double)res->hits / (double)n, res->hits, n, res->secs, (double)n / res->secs,
	       1e3 * res->forward_secs / (double)n);
	for (int k = 0; k < ts->n_classes; k++)
		printf("  %-16s %.4f (%ld)\n", ts->class_names[k],
		       res->seen[k] ? (double)res->correct[k] / (double)res->seen[k] : 0.0,
		       res->seen[k]);
	for (int k = 0; k < res->n_masked; k++)
		printf("  sparsity %-10s %.4f of %ld neurons\n",
		       m->graph.layers[res->masked_layer[k]].name, res->zero_sum[k] / (double)n,
		       (long)res->neurons[k]);
}

/* --phase all: one line per phase, the sparsity of each masked layer in its column. */
static void print_table(const char *bundle, const struct mime_model *m,
                        const struct mime_manifest *mf, const struct eval_data *d,
                        const struct eval_result *res, int n_res)
{
	int n_masked = 0;

	for (int i = 0; i < n_res; i++)
		if (res[i].ran)
			n_masked = res[i].n_masked;
	printf("%s task %s, %ld images, phases 0..%d (0 = the whole parent)\n", bundle, d->ts->name,
	       d->n, mf->n_phases);
	printf("%-5s %-12s %8s %9s", "PHASE", "NAME", "ACCURACY", "MS/IMAGE");
	for (int i = 0; i < n_res; i++) {
		if (!res[i].ran)
			continue;
		for (int k = 0; k < n_masked; k++)
			printf(" %10.10s", m->graph.layers[res[i].masked_layer[k]].name);
		break;
	}
	printf("\n");
	for (int i = 0; i < n_res; i++) {
		const struct eval_result *r = &res[i];

		printf("%-5d %-12.12s", r->phase, phase_name(mf, r->phase));
		if (!r->ran) {
			printf(" cannot run: %s\n", r->error);
			continue;
		}
		printf(" %8.4f %9.4f", (double)r->hits / (double)d->n,
		       1e3 * r->forward_secs / (double)d->n);
		for (int k = 0; k < r->n_masked; k++)
			printf(" %10.4f", r->zero_sum[k] / (double)d->n);
		printf("\n");
	}
	if (n_masked)
		printf("(columns after MS/IMAGE: sparsity, the mean share of each masked layer's "
		       "output neurons that were zero)\n");
}

/* Parses --phase: a number 0..MIME_MAX_PHASES or "all" (PHASE_ALL). */
static int parse_phase(const char *s, int *ret)
{
	char *end;
	long v;

	if (strcmp(s, "all") == 0) {
		*ret = PHASE_ALL;
		return 0;
	}
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 0 || v > MIME_MAX_PHASES)
		return -EINVAL;
	*ret = (int)v;
	return 0;
}

int mimetrain_cmd_eval(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"bundle", required_argument, NULL, 'b'},
		{"task", required_argument, NULL, 't'},
		{"images", required_argument, NULL, 'i'},
		{"labels", required_argument, NULL, 'l'},
		{"limit", required_argument, NULL, 'n'},
		{"threads", required_argument, NULL, 'T'},
		{"json", no_argument, NULL, 'j'},
		{"mode", required_argument, NULL, 'm'},
		{"phase", required_argument, NULL, 'p'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *bundle = NULL, *task_name = NULL, *images = NULL, *labels = NULL;
	int json = 0, threads = 1, c, r, task, status = 1, mode = 0, phase = 0, phase_given = 0;
	static const char *const mode_names[] = {"mime", "conventional", "head-only"};
	long limit = -1;
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	const struct mime_manifest *mf;
	struct mime_model m = {0};
	struct mime_engine *e = NULL;
	struct mime_task_params *phase_tasks = NULL;
	struct mime_idx xi = {0}, yi = {0};
	struct eval_result *res = NULL;
	struct eval_data d;
	float *in = NULL, *pix = NULL;
	int p_lo, p_hi, n_res = 0;

	optind = 1;
	while ((c = getopt_long(argc, argv, "b:t:i:l:n:T:jm:p:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'b':
			bundle = optarg;
			break;
		case 't':
			task_name = optarg;
			break;
		case 'i':
			images = optarg;
			break;
		case 'l':
			labels = optarg;
			break;
		case 'n':
			limit = atol(optarg);
			break;
		case 'T':
			threads = atoi(optarg);
			break;
		case 'j':
			json = 1;
			break;
		case 'm':
			for (mode = 0; mode < 3 && strcmp(optarg, mode_names[mode]) != 0; mode++)
				;
			if (mode == 3) {
				eval_usage(stderr);
				return 2;
			}
			break;
		case 'p':
			if (parse_phase(optarg, &phase) < 0) {
				fprintf(stderr,
				        "mime-train: --phase '%s': not a phase number or 'all'\n",
				        optarg);
				return 2;
			}
			phase_given = 1;
			break;
		case 'h':
			eval_usage(stdout);
			return 0;
		default:
			eval_usage(stderr);
			return 2;
		}
	}
	if (!bundle || !task_name || !images || !labels || threads < 1 || threads > 64 ||
	    optind != argc) {
		eval_usage(stderr);
		return 2;
	}
	if (mode != 0 && phase != 0) {
		fprintf(stderr, "mime-train: --phase needs --mode mime: the baselines have no "
		                "phases\n");
		return 2;
	}
	r = mime_bundle_open(bundle, &b, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s: %s\n", bundle,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		return 1;
	}
	mf = mime_bundle_manifest(b);
	task = mime_manifest_task(mf, task_name);
	if (task < 0) {
		fprintf(stderr, "mime-train: %s: no task '%s'\n", bundle, task_name);
		goto out;
	}
	if (phase > mf->n_phases) {
		if (mf->n_phases)
			fprintf(stderr,
			        "mime-train: %s: no phase %d: the bundle has phases 1..%d "
			        "(0 = the whole parent)\n",
			        bundle, phase, mf->n_phases);
		else
			fprintf(stderr,
			        "mime-train: %s: no phase %d: the bundle lists no phases, only 0 "
			        "(the whole parent)\n",
			        bundle, phase);
		goto out;
	}
	p_lo = phase == PHASE_ALL ? 0 : phase;
	p_hi = phase == PHASE_ALL ? mf->n_phases : phase;
	d.ts = &mf->tasks[task];
	r = mime_idx_read_pair(images, labels, d.ts->n_classes, &xi, &yi, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s\n", ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	if (xi.ndim != 3) {
		fprintf(stderr, "mime-train: %s: expected [n, rows, cols] images\n", images);
		goto out;
	}
	r = mime_model_from_bundle(b, MIME_MODEL_HALF_VIEWS, &m, &ei);
	if (r == 0 && mode != 0) {
		if (eval_use_baseline(b, &m, task, mode) < 0)
			goto out;
		task = 0;
	}
	if (r == 0) {
		if (threads > 1)
			openblas_set_num_threads(1);
		r = mime_engine_create(
			&m,
			&(struct mime_engine_config){.max_batch = EVAL_BATCH, .n_threads = threads},
			&e, &ei);
	}
	if (r < 0) {
		fprintf(stderr, "mime-train: %s: %s\n", bundle,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	d.x = &xi;
	d.y = &yi;
	d.task = task;
	d.n = (long)xi.dims[0];
	if (limit > 0 && limit < d.n)
		d.n = limit;
	if (d.n < 1) {
		fprintf(stderr, "mime-train: %s: no images\n", images);
		goto out;
	}
	in = malloc(sizeof(float) * (size_t)d.ts->input.channels * d.ts->input.height *
	            d.ts->input.width * EVAL_BATCH);
	pix = malloc(sizeof(float) * (size_t)xi.dims[1] * xi.dims[2]);
	res = calloc((size_t)(p_hi - p_lo + 1), sizeof(*res));
	if (!in || !pix || !res) {
		fprintf(stderr, "mime-train: out of memory\n");
		goto out;
	}
	for (int p = p_lo; p <= p_hi; p++) {
		struct eval_result *cur = &res[n_res++];

		cur->phase = p;
		/* A new engine is in the whole parent; the baselines never leave it. */
		if (p != 0 || n_res > 1) {
			r = eval_enter(b, e, p, &phase_tasks, cur->error, sizeof(cur->error));
			if (r == -ENOMEM) {
				fprintf(stderr, "mime-train: out of memory\n");
				goto out;
			}
			if (r < 0) {
				if (phase != PHASE_ALL) {
					fprintf(stderr, "mime-train: %s: %s\n", bundle, cur->error);
					goto out;
				}
				continue;
			}
		}
		if (eval_pass(e, &d, in, pix, cur) < 0)
			goto out;
	}
	if (json && phase == PHASE_ALL) {
		json_t *a = json_array();

		for (int i = 0; i < n_res; i++)
			json_array_append_new(
				a, result_json(bundle, mode_names[mode], &m, mf, &d, &res[i]));
		json_dumpf(a, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(a);
	} else if (json) {
		json_t *o = result_json(bundle, mode_names[mode], &m, mf, &d, &res[0]);

		json_dumpf(o, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(o);
	} else if (phase == PHASE_ALL) {
		print_table(bundle, &m, mf, &d, res, n_res);
	} else {
		print_result(bundle, &m, &d, &res[0], phase_given || mf->n_phases > 0);
	}
	status = 0;
out:
	for (int i = 0; i < n_res; i++)
		eval_result_fini(&res[i]);
	free(res);
	free(in);
	free(pix);
	mime_idx_free(&xi);
	mime_idx_free(&yi);
	mime_engine_destroy(e);
	free(phase_tasks);
	mime_model_fini(&m);
	mime_bundle_close(b);
	return status;
}
