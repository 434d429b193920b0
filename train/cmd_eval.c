// SPDX-License-Identifier: MIT
/* cmd_eval -- `mime-train eval`: accuracy of a bundle's task on IDX data through the
 * inference engine (the same code path the daemon serves), per-class accuracy, and per
 * masked layer the mean fraction of output neurons that were zero ("sparsity").
 * IDX images are taken as 8-bit gray in [0,1] and preprocessed to the task's input spec.
 * --mode picks what serves the task: "mime" (default: the bundle's task as the daemon serves
 * it, thresholds if it has them), "conventional" (the fine-tuned copy conventional/<task>/...
 * written by `mime-train finetune`, ReLU) or "head-only" (the parent with ReLU and the head
 * headonly/<task>/head.*). The model is the bundle's with that task's views replaced.
 * Exit codes: 0 ok, 1 failure (message on stderr), 2 usage. */
#include <cblas.h>
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
	           "                       [--mode mime|conventional|head-only]\n");
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
	int feat;

	if (mime_graph_check(&m->graph, shapes, NULL) < 0)
		return -1;
	feat = (int)mime_shape_size(&shapes[m->graph.n_layers - 1]);
	snprintf(name, sizeof(name), "%s/%s/head.weight", pre, tp->name);
	tp->head_w = eval_tensor(b, name, (size_t)tp->n_classes * feat);
	snprintf(name, sizeof(name), "%s/%s/head.bias", pre, tp->name);
	tp->head_b = eval_tensor(b, name, (size_t)tp->n_classes);
	if (!tp->head_w || !tp->head_b) {
		fprintf(stderr, "mime-train: no %s/%s/head.weight|bias of the right shape\n", pre,
		        tp->name);
		return -1;
	}
	tp->granularity = MIME_THR_NONE;
	memset(tp->thresholds, 0, sizeof(tp->thresholds));
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

int mimetrain_cmd_eval(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"bundle", required_argument, NULL, 'b'}, {"task", required_argument, NULL, 't'},
		{"images", required_argument, NULL, 'i'}, {"labels", required_argument, NULL, 'l'},
		{"limit", required_argument, NULL, 'n'},  {"threads", required_argument, NULL, 'T'},
		{"json", no_argument, NULL, 'j'},         {"mode", required_argument, NULL, 'm'},
		{"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
	};
	const char *bundle = NULL, *task_name = NULL, *images = NULL, *labels = NULL;
	int json = 0, threads = 1, c, r, task, status = 1, mode = 0;
	static const char *const mode_names[] = {"mime", "conventional", "head-only"};
	long limit = -1;
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	struct mime_model m = {0};
	struct mime_engine *e = NULL;
	struct mime_idx xi = {0}, yi = {0};
	const struct mime_task_spec *ts;
	float *in = NULL, *pix = NULL;
	long *correct = NULL, *seen = NULL;
	double *zero_sum = NULL;
	int64_t *neurons = NULL;
	int n_masked = 0;
	long n, hits = 0;
	double t0, secs;

	optind = 1;
	while ((c = getopt_long(argc, argv, "b:t:i:l:n:T:jm:h", longopts, NULL)) != -1) {
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
	r = mime_bundle_open(bundle, &b, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s: %s\n", bundle,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		return 1;
	}
	task = mime_manifest_task(mime_bundle_manifest(b), task_name);
	if (task < 0) {
		fprintf(stderr, "mime-train: %s: no task '%s'\n", bundle, task_name);
		goto out;
	}
	ts = &mime_bundle_manifest(b)->tasks[task];
	r = mime_idx_read_pair(images, labels, ts->n_classes, &xi, &yi, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s\n", ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	if (xi.ndim != 3) {
		fprintf(stderr, "mime-train: %s: expected [n, rows, cols] images\n", images);
		goto out;
	}
	r = mime_model_from_bundle(b, &m, &ei);
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
	n = (long)xi.dims[0];
	if (limit > 0 && limit < n)
		n = limit;
	{
		const long isz = (long)ts->input.channels * ts->input.height * ts->input.width;
		const long psz = (long)xi.dims[1] * xi.dims[2];
		struct mime_image img = {
			.width = (int)xi.dims[2], .height = (int)xi.dims[1], .channels = 1};

		in = malloc(sizeof(float) * isz * EVAL_BATCH);
		pix = malloc(sizeof(float) * psz);
		correct = calloc((size_t)ts->n_classes, sizeof(long));
		seen = calloc((size_t)ts->n_classes, sizeof(long));
		zero_sum = calloc(MIME_MAX_LAYERS, sizeof(double));
		if (!in || !pix || !correct || !seen || !zero_sum) {
			fprintf(stderr, "mime-train: out of memory\n");
			goto out;
		}
		img.pixels = pix;
		t0 = now_s();
		for (long i0 = 0; i0 < n; i0 += EVAL_BATCH) {
			int bn = (int)(n - i0 < EVAL_BATCH ? n - i0 : EVAL_BATCH);
			int tasks[EVAL_BATCH];
			struct mime_engine_result res;

			for (int j = 0; j < bn; j++) {
				const uint8_t *src = xi.data + (i0 + j) * psz;

				for (long p = 0; p < psz; p++)
					pix[p] = (float)src[p] / 255.0f;
				r = mime_image_preprocess(&img, &ts->input, in + j * isz, &ei);
				if (r < 0) {
					fprintf(stderr, "mime-train: %s: %s\n", images, ei.msg);
					goto out;
				}
				tasks[j] = task;
			}
			r = mime_engine_forward(e, bn, in, tasks, &res);
			if (r < 0) {
				fprintf(stderr, "mime-train: inference failed: %s\n",
				        mime_strerror(r));
				goto out;
			}
			n_masked = res.n_masked;
			neurons = (int64_t *)res.neurons;
			for (int j = 0; j < bn; j++) {
				int cls, y = yi.data[i0 + j];
				float p;

				mime_topk(res.logits + (long)j * res.max_classes, ts->n_classes, 1,
				          &cls, &p);
				seen[y]++;
				if (cls == y) {
					correct[y]++;
					hits++;
				}
				for (int k = 0; k < res.n_masked; k++)
					zero_sum[k] += (double)res.zeros[j * res.n_masked + k] /
					               (double)res.neurons[k];
			}
		}
		secs = now_s() - t0;
	}
	if (json) {
		json_t *o = json_object(), *pc = json_object(), *sp = json_object();

		json_object_set_new(o, "bundle", json_string(bundle));
		json_object_set_new(o, "task", json_string(ts->name));
		json_object_set_new(o, "mode", json_string(mode_names[mode]));
		json_object_set_new(o, "images", json_integer(n));
		json_object_set_new(o, "accuracy", json_real((double)hits / (double)n));
		for (int k = 0; k < ts->n_classes; k++)
			json_object_set_new(
				pc, ts->class_names[k],
				seen[k] ? json_real((double)correct[k] / (double)seen[k])
					: json_null());
		json_object_set_new(o, "per_class", pc);
		for (int k = 0; k < n_masked; k++)
			json_object_set_new(sp, m.graph.layers[mime_engine_result_layer(e, k)].name,
			                    json_real(zero_sum[k] / (double)n));
		json_object_set_new(o, "sparsity", sp);
		json_object_set_new(o, "seconds", json_real(secs));
		json_dumpf(o, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(o);
	} else {
		printf("%s task %s: accuracy %.4f (%ld/%ld) in %.2f s (%.0f images/s)\n", bundle,
		       ts->name, (double)hits / (double)n, hits, n, secs, (double)n / secs);
		for (int k = 0; k < ts->n_classes; k++)
			printf("  %-16s %.4f (%ld)\n", ts->class_names[k],
			       seen[k] ? (double)correct[k] / (double)seen[k] : 0.0, seen[k]);
		for (int k = 0; k < n_masked; k++)
			printf("  sparsity %-10s %.4f of %ld neurons\n",
			       m.graph.layers[mime_engine_result_layer(e, k)].name,
			       zero_sum[k] / (double)n, (long)neurons[k]);
	}
	status = 0;
out:
	free(in);
	free(pix);
	free(correct);
	free(seen);
	free(zero_sum);
	mime_idx_free(&xi);
	mime_idx_free(&yi);
	mime_engine_destroy(e);
	mime_model_fini(&m);
	mime_bundle_close(b);
	return status;
}
