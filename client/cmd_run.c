// SPDX-License-Identifier: MIT
/* cmd_run -- `mimectl run`: classify image files offline with a bundle, no daemon needed.
 * Images are decoded and preprocessed to the task's input spec, run through the engine in
 * batches, and printed one line each (or one JSON object per image with --json).
 * --phase N runs the task in phase N of the bundle (lib/model.h: 0 = the whole parent, the
 * default; 1..n_phases as the manifest lists them); every line says which phase ran.
 * Exit codes: 0 every image classified; 1 the bundle or engine failed; 2 usage error;
 * 3 at least one image could not be read or decoded (the others are still classified);
 * 4 the bundle cannot run the task in that phase (no such phase, or a task has no head and
 * thresholds for it).
 * Ownership: everything made here is freed before returning. Threads: the engine's own. */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/cmd.h"
#include "lib/bundle.h"
#include "lib/engine.h"
#include "lib/image.h"
#include "lib/model.h"

#define RUN_BATCH 16

#define RUN_EXIT_PHASE 4 /* the task cannot run in the phase asked for */

static void run_usage(FILE *f)
{
	fprintf(f, "usage: mimectl run --bundle FILE --task NAME [--phase N] [--top K] [--json]\n"
	           "                  [--logits] [--threads N] IMAGE...\n"
	           "Classifies PNG/PGM/PPM images with the bundle's task, without a daemon.\n"
	           "--phase N runs phase N of the bundle: 0 the whole parent (default), 1..n its\n"
	           "phases as 'mime-train bundle inspect' lists them.\n"
	           "Exit codes: 0 ok, 1 bundle/engine failure, 2 usage, 3 some image unreadable,\n"
	           "4 the task cannot run in that phase (no such phase, or no tensors for it).\n");
}

struct run_opts {
	const char *bundle, *task;
	int top, json, logits, threads;
	int phase;     /* 0 = the whole parent */
	int say_phase; /* human lines name the phase (the bundle has phases, or --phase) */
};

/* Parses a phase number (0..MIME_MAX_PHASES) into *ret; -EINVAL for anything else. */
static int parse_phase(const char *s, int *ret)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 0 || v > MIME_MAX_PHASES)
		return -EINVAL;
	*ret = (int)v;
	return 0;
}

/* Puts engine e (built on b's model) in phase o->phase, keeping the phase's task views in
 * *ret_tasks (malloc'ed; the caller frees it after the engine) while the engine runs.
 * Prints why not and returns an exit code. */
static int enter_phase(const struct run_opts *o, const struct mime_bundle *b, struct mime_engine *e,
                       struct mime_task_params **ret_tasks)
{
	const struct mime_manifest *mf = mime_bundle_manifest(b);
	struct mime_task_params *tasks;
	struct mime_errinfo ei = {0};
	struct mime_phase ph;
	uint8_t *keep = NULL;
	int r;

	if (o->phase > mf->n_phases) {
		if (mf->n_phases)
			fprintf(stderr,
			        "mimectl: %s: no phase %d: the bundle has phases 1..%d "
			        "(0 = the whole parent)\n",
			        o->bundle, o->phase, mf->n_phases);
		else
			fprintf(stderr,
			        "mimectl: %s: no phase %d: the bundle lists no phases, only 0 "
			        "(the whole parent) runs\n",
			        o->bundle, o->phase);
		return RUN_EXIT_PHASE;
	}
	if (o->phase == 0)
		return 0; /* a new engine is in the whole parent */
	tasks = calloc((size_t)mf->n_tasks, sizeof(*tasks));
	if (!tasks) {
		fprintf(stderr, "mimectl: out of memory\n");
		return 1;
	}
	r = mime_model_phase(b, o->phase, MIME_MODEL_HALF_VIEWS, &ph, &keep, tasks, &ei);
	if (r == 0) {
		r = mime_engine_set_phase(e, &ph, tasks, &ei);
		free(keep);
	}
	if (r < 0) {
		/* MIME_EFORMAT: a task has no head or thresholds for the phase (ei names it) */
		fprintf(stderr, "mimectl: %s: %s\n", o->bundle,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		free(tasks);
		return r == MIME_EFORMAT || r == MIME_EINVAL ? RUN_EXIT_PHASE : 1;
	}
	*ret_tasks = tasks;
	return 0;
}

static void print_result(const struct run_opts *o, const struct mime_task_spec *ts,
                         const char *path, const float *logits)
{
	int cls[MIME_MAX_CLASSES];
	float prob[MIME_MAX_CLASSES];
	int k = mime_topk(logits, ts->n_classes, o->top, cls, prob);

	if (o->json) {
		json_t *j = json_object(), *top = json_array();

		json_object_set_new(j, "image", json_string(path));
		json_object_set_new(j, "task", json_string(ts->name));
		json_object_set_new(j, "phase", json_integer(o->phase));
		json_object_set_new(j, "label", json_integer(cls[0]));
		json_object_set_new(j, "class", json_string(ts->class_names[cls[0]]));
		for (int i = 0; i < k; i++) {
			json_t *e = json_object();

			json_object_set_new(e, "label", json_integer(cls[i]));
			json_object_set_new(e, "class", json_string(ts->class_names[cls[i]]));
			json_object_set_new(e, "score", json_real(prob[i]));
			json_array_append_new(top, e);
		}
		json_object_set_new(j, "top", top);
		if (o->logits) {
			json_t *l = json_array();

			for (int i = 0; i < ts->n_classes; i++)
				json_array_append_new(l, json_real(logits[i]));
			json_object_set_new(j, "logits", l);
		}
		json_dumpf(j, stdout, JSON_COMPACT);
		putchar('\n');
		json_decref(j);
		return;
	}
	printf("%s: %d %s (%.3f)", path, cls[0], ts->class_names[cls[0]], prob[0]);
	for (int i = 1; i < k; i++)
		printf("  %d %s (%.3f)", cls[i], ts->class_names[cls[i]], prob[i]);
	if (o->logits) {
		printf("  logits:");
		for (int i = 0; i < ts->n_classes; i++)
			printf(" %.6g", logits[i]);
	}
	if (o->say_phase)
		printf("  phase %d", o->phase);
	putchar('\n');
}

int mimectl_cmd_run(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"bundle", required_argument, NULL, 'b'},
		{"task", required_argument, NULL, 't'},
		{"top", required_argument, NULL, 'k'},
		{"json", no_argument, NULL, 'j'},
		{"logits", no_argument, NULL, 'l'},
		{"threads", required_argument, NULL, 'T'},
		{"phase", required_argument, NULL, 'p'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct run_opts o = {.top = 3, .threads = 1};
	struct mime_task_params *phase_tasks = NULL;
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	struct mime_model m;
	struct mime_engine *e = NULL;
	const struct mime_task_spec *ts;
	const char *paths[RUN_BATCH];
	float *in = NULL;
	int task, c, r, status = 0, n = 0;
	long isz;

	optind = 1;
	while ((c = getopt_long(argc, argv, "b:t:k:jlT:p:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'b':
			o.bundle = optarg;
			break;
		case 't':
			o.task = optarg;
			break;
		case 'k':
			o.top = atoi(optarg);
			break;
		case 'j':
			o.json = 1;
			break;
		case 'l':
			o.logits = 1;
			break;
		case 'T':
			o.threads = atoi(optarg);
			break;
		case 'p':
			if (parse_phase(optarg, &o.phase) < 0) {
				fprintf(stderr, "mimectl: --phase '%s': not a phase number\n",
				        optarg);
				return 2;
			}
			o.say_phase = 1;
			break;
		case 'h':
			run_usage(stdout);
			return 0;
		default:
			run_usage(stderr);
			return 2;
		}
	}
	if (!o.bundle || !o.task || optind >= argc || o.top < 1 || o.threads < 1 ||
	    o.threads > 64) {
		run_usage(stderr);
		return 2;
	}
	r = mime_bundle_open(o.bundle, &b, &ei);
	if (r < 0) {
		fprintf(stderr, "mimectl: %s: %s\n", o.bundle,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		return 1;
	}
	task = mime_manifest_task(mime_bundle_manifest(b), o.task);
	if (task < 0) {
		fprintf(stderr, "mimectl: %s: no task '%s'\n", o.bundle, o.task);
		mime_bundle_close(b);
		return 1;
	}
	ts = &mime_bundle_manifest(b)->tasks[task];
	o.say_phase |= mime_bundle_manifest(b)->n_phases > 0;
	r = mime_model_from_bundle(b, MIME_MODEL_HALF_VIEWS, &m, &ei);
	if (r < 0) {
		fprintf(stderr, "mimectl: %s: %s\n", o.bundle,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		mime_bundle_close(b);
		return 1;
	}
	if (o.threads > 1)
		openblas_set_num_threads(1);
	r = mime_engine_create(
		&m, &(struct mime_engine_config){.max_batch = RUN_BATCH, .n_threads = o.threads},
		&e, &ei);
	if (r < 0) {
		fprintf(stderr, "mimectl: %s: %s\n", o.bundle,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		status = 1;
		goto out;
	}
	status = enter_phase(&o, b, e, &phase_tasks);
	if (status)
		goto out;
	isz = (long)ts->input.channels * ts->input.height * ts->input.width;
	in = malloc(sizeof(float) * isz * RUN_BATCH);
	if (!in) {
		fprintf(stderr, "mimectl: out of memory\n");
		status = 1;
		goto out;
	}
	for (int i = optind; i <= argc; i++) {
		if (i < argc) {
			struct mime_image img;

			r = mime_image_load(argv[i], &img, &ei);
			if (r == 0) {
				r = mime_image_preprocess(&img, &ts->input, in + isz * n, &ei);
				mime_image_free(&img);
			}
			if (r < 0) {
				fprintf(stderr, "mimectl: %s: %s\n", argv[i],
				        ei.msg[0] ? ei.msg : mime_strerror(r));
				status = 3;
				continue;
			}
			paths[n++] = argv[i];
		}
		if (n == RUN_BATCH || (i == argc && n > 0)) {
			int tasks[RUN_BATCH];
			struct mime_engine_result res;

			for (int j = 0; j < n; j++)
				tasks[j] = task;
			r = mime_engine_forward(e, n, in, tasks, &res);
			if (r < 0) {
				fprintf(stderr, "mimectl: inference failed: %s\n",
				        mime_strerror(r));
				status = 1;
				goto out;
			}
			for (int j = 0; j < n; j++)
				print_result(&o, ts, paths[j],
				             res.logits + (long)j * res.max_classes);
			n = 0;
		}
	}
out:
	free(in);
	mime_engine_destroy(e);
	free(phase_tasks);
	mime_model_fini(&m);
	mime_bundle_close(b);
	return status;
}
