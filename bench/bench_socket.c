// SPDX-License-Identifier: MIT
/* bench_socket -- the in-process side of the socket-path overhead (issue 5): times
 * mime_engine_forward() at batch 1 on one image, preprocessed once for TASK exactly as mimed
 * does it (mime_image_decode + mime_image_preprocess with the task's input spec), on an
 * engine configured like mimed's (max_batch, threads). bench/daemon.sh sets the result
 * against `mimectl bench -c 1` with the same image and task.
 *
 *   bench_socket BUNDLE TASK IMAGE [--threads N] [--max-batch B] [--min-time SECONDS]
 *                [--gap-us US] [--lead-us US]
 *
 * Also timed, for the breakdown: decode + preprocess of the image bytes, and
 * decode + preprocess + forward + top-k (what a worker and the thread pool do for one
 * request, without the socket, JSON, base64, queue and hand-offs); and the forward again
 * with the calling thread asleep for --gap-us (default 250) before each call, as a daemon
 * serving one client at a time sees it: the engine's other threads stop spinning and
 * sleep between calls, so a forward on 2 threads starts by waking them ("forward_after_gap";
 * the tight loop keeps them spinning); and that again with mime_engine_prepare() called
 * --lead-us (default 50) before the forward, inside the gap, as mimed calls it when it
 * accepts a request and then decodes it ("forward_after_gap_prepared"). Each: a warm-up,
 * then single calls until --min-time (default 1 s; at least 200 calls); prints one JSON
 * object with median, p99, mean and min in microseconds, and the process CPU time (all
 * threads, a spinning engine thread included) per call. Not a test.
 * Ownership: everything is allocated here and freed before exit.
 * Threads: the main thread, plus the engine's own with --threads > 1. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/bundle.h"
#include "lib/engine.h"
#include "lib/error.h"
#include "lib/image.h"
#include "lib/manifest.h"
#include "lib/model.h"

#define MAX_CALLS 200000

struct timing {
	double median_us, p99_us, mean_us, min_us;
	double cpu_us; /* process CPU time (every thread) per call, sleeps excluded */
	long n;
};

static double clock_us(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static double now_us(void)
{
	return clock_us(CLOCK_MONOTONIC);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* What one timed call does; returns 0 or a negative code. */
struct subject {
	struct mime_engine *engine;
	const struct mime_task_spec *spec;
	int task;
	const uint8_t *bytes;
	size_t n_bytes;
	float *input;
	int what; /* 0 forward, 1 decode + preprocess, 2 all of it + top-k, 3 forward after gap,
	           * 4 forward after gap, mime_engine_prepare() lead_us before it */
	long gap_us, lead_us;
};

static int run_once(struct subject *s)
{
	struct mime_engine_result res;
	struct mime_image img;
	int cls[5], r;
	float prob[5];

	if (s->what == 1 || s->what == 2) {
		r = mime_image_decode(s->bytes, s->n_bytes, &img, NULL);
		if (r < 0)
			return r;
		r = mime_image_preprocess(&img, &s->spec->input, s->input, NULL);
		mime_image_free(&img);
		if (r < 0 || s->what == 1)
			return r;
	}
	r = mime_engine_forward(s->engine, 1, s->input, &s->task, &res);
	if (r < 0)
		return r;
	if (s->what == 2)
		mime_topk(res.logits, s->spec->n_classes, 5, cls, prob);
	return 0;
}

static int time_calls(struct subject *s, double min_time_s, double *samples, struct timing *ret_t)
{
	double t_end, sum = 0, cpu0;
	long n = 0;
	int r;

	for (int i = 0; i < 50; i++) /* warm-up: caches, the engine's threads, page faults */
		if ((r = run_once(s)) < 0)
			return r;
	t_end = now_us() + min_time_s * 1e6;
	cpu0 = clock_us(CLOCK_PROCESS_CPUTIME_ID);
	while ((n < 200 || now_us() < t_end) && n < MAX_CALLS) {
		double t0;

		if (s->what >= 3 && s->gap_us > 0) {
			long us = s->gap_us - (s->what == 4 ? s->lead_us : 0);
			struct timespec gap = {.tv_sec = us / 1000000,
			                       .tv_nsec = us % 1000000 * 1000};

			nanosleep(&gap, NULL);
		}
		if (s->what == 4) {
			/* as mimed: prepare when the request is accepted, decode, then forward */
			struct timespec lead = {.tv_sec = s->lead_us / 1000000,
			                        .tv_nsec = s->lead_us % 1000000 * 1000};

			mime_engine_prepare(s->engine);
			nanosleep(&lead, NULL);
		}
		t0 = now_us();

		r = run_once(s);
		if (r < 0)
			return r;
		samples[n] = now_us() - t0;
		sum += samples[n++];
	}
	ret_t->cpu_us = (clock_us(CLOCK_PROCESS_CPUTIME_ID) - cpu0) / (double)n;
	qsort(samples, (size_t)n, sizeof(*samples), cmp_double);
	ret_t->n = n;
	ret_t->median_us = samples[n / 2];
	ret_t->p99_us = samples[(long)((double)n * 0.99) < n ? (long)((double)n * 0.99) : n - 1];
	ret_t->mean_us = sum / (double)n;
	ret_t->min_us = samples[0];
	return 0;
}

static int read_file(const char *path, uint8_t **ret_data, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *data = NULL;
	long len;

	if (!f)
		return -errno;
	if (fseek(f, 0, SEEK_END) < 0 || (len = ftell(f)) < 0 || len > (64L << 20) ||
	    fseek(f, 0, SEEK_SET) < 0 || !(data = malloc((size_t)len + 1)) ||
	    fread(data, 1, (size_t)len, f) != (size_t)len) {
		free(data);
		fclose(f);
		return -EIO;
	}
	fclose(f);
	*ret_data = data;
	*ret_len = (size_t)len;
	return 0;
}

static void print_timing(const char *name, const struct timing *t, int last)
{
	printf("  \"%s\": {\"median_us\": %.1f, \"p99_us\": %.1f, \"mean_us\": %.1f, "
	       "\"min_us\": %.1f, \"cpu_us\": %.1f, \"calls\": %ld}%s\n",
	       name, t->median_us, t->p99_us, t->mean_us, t->min_us, t->cpu_us, t->n,
	       last ? "" : ",");
}

int main(int argc, char **argv)
{
	struct mime_engine_config cfg = {.max_batch = 16, .n_threads = 1};
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	struct mime_model m = {0};
	struct subject s = {0};
	struct timing t[5];
	uint8_t *bytes = NULL;
	double min_time = 1.0, *samples = NULL;
	const char *pos[3];
	int n_pos = 0, r = 1;
	size_t n_bytes = 0;

	s.gap_us = 250;
	s.lead_us = 50;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
			cfg.n_threads = atoi(argv[++i]);
		else if (strcmp(argv[i], "--max-batch") == 0 && i + 1 < argc)
			cfg.max_batch = atoi(argv[++i]);
		else if (strcmp(argv[i], "--min-time") == 0 && i + 1 < argc)
			min_time = atof(argv[++i]);
		else if (strcmp(argv[i], "--gap-us") == 0 && i + 1 < argc)
			s.gap_us = atol(argv[++i]);
		else if (strcmp(argv[i], "--lead-us") == 0 && i + 1 < argc)
			s.lead_us = atol(argv[++i]);
		else if (argv[i][0] != '-' && n_pos < 3)
			pos[n_pos++] = argv[i];
		else
			n_pos = -100;
	}
	if (n_pos != 3 || cfg.n_threads < 1 || cfg.max_batch < 1 || min_time <= 0 ||
	    s.lead_us < 0 || s.lead_us > s.gap_us) {
		fprintf(stderr, "usage: bench_socket BUNDLE TASK IMAGE [--threads N] "
		                "[--max-batch B] [--min-time SECONDS] [--gap-us US] "
		                "[--lead-us US]\n");
		return 2;
	}
	if (read_file(pos[2], &bytes, &n_bytes) < 0) {
		fprintf(stderr, "bench_socket: cannot read '%s'\n", pos[2]);
		return 1;
	}
	if (mime_bundle_open(pos[0], &b, &ei) < 0 ||
	    mime_model_from_bundle(b, MIME_MODEL_HALF_VIEWS, &m, &ei) < 0) {
		fprintf(stderr, "bench_socket: %s: %s\n", pos[0], ei.msg);
		goto out_bytes;
	}
	s.task = mime_manifest_task(mime_bundle_manifest(b), pos[1]);
	if (s.task < 0) {
		fprintf(stderr, "bench_socket: no task '%s' in %s\n", pos[1], pos[0]);
		goto out_model;
	}
	s.spec = &mime_bundle_manifest(b)->tasks[s.task];
	s.bytes = bytes;
	s.n_bytes = n_bytes;
	s.input = malloc((size_t)mime_shape_size(&m.graph.input) * sizeof(float));
	samples = malloc(MAX_CALLS * sizeof(*samples));
	if (!s.input || !samples)
		goto out_model;
	if (mime_engine_create(&m, &cfg, &s.engine, &ei) < 0) {
		fprintf(stderr, "bench_socket: engine: %s\n", ei.msg);
		goto out_model;
	}
	/* The preprocessed image the forward-only timing runs on. */
	s.what = 1;
	if (run_once(&s) < 0) {
		fprintf(stderr, "bench_socket: '%s' is not an image mimed would take\n", pos[2]);
		goto out_engine;
	}
	for (int w = 0; w < 5; w++) {
		s.what = w;
		if (time_calls(&s, min_time, samples, &t[w]) < 0) {
			fprintf(stderr, "bench_socket: forward failed\n");
			goto out_engine;
		}
	}
	printf("{\n  \"bundle\": \"%s\", \"task\": \"%s\", \"image\": \"%s\", \"threads\": %d, "
	       "\"max_batch\": %d, \"macs\": %lld,\n",
	       pos[0], pos[1], pos[2], cfg.n_threads, cfg.max_batch,
	       (long long)mime_engine_macs(s.engine, s.task));
	print_timing("forward", &t[0], 0);
	print_timing("decode_preprocess", &t[1], 0);
	print_timing("decode_preprocess_forward_topk", &t[2], 0);
	print_timing("forward_after_gap", &t[3], 0);
	print_timing("forward_after_gap_prepared", &t[4], 1);
	printf("}\n");
	r = 0;
out_engine:
	mime_engine_destroy(s.engine);
out_model:
	free(samples);
	free(s.input);
	if (b)
		mime_model_fini(&m);
	mime_bundle_close(b);
out_bytes:
	free(bytes);
	return r;
}
