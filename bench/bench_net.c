// SPDX-License-Identifier: MIT
/* bench_net -- see bench_net.h. */
#include "bench/bench_net.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double bench_now_s(void)
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

double bench_median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* xorshift64* uniform in [lo, hi). */
static float uniform(uint64_t *s, float lo, float hi)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return lo + (hi - lo) * (float)((*s * 2685821657736338717ULL) >> 40) / 16777216.0f;
}

float *bench_rand_array(uint64_t *rng, long n, float lo, float hi)
{
	float *a = aligned_alloc(64, ((size_t)(n > 0 ? n : 1) * sizeof(float) + 63) / 64 * 64);

	if (!a) {
		perror("bench");
		exit(1);
	}
	for (long i = 0; i < n; i++)
		a[i] = uniform(rng, lo, hi);
	return a;
}

static void add_layer(struct mime_graph *g, enum mime_layer_kind kind, int out, int k, int s,
                      int pad, enum mime_act act)
{
	struct mime_layer_spec *l = &g->layers[g->n_layers];

	*l = (struct mime_layer_spec){
		.kind = kind, .out = out, .kernel = k, .stride = s, .pad = pad, .act = act};
	snprintf(l->name, sizeof(l->name), "%s%d", mime_layer_kind_name(kind), g->n_layers);
	g->n_layers++;
}

void bench_vgg7_graph(const struct bench_netdef *d, int n_layers, struct mime_graph *ret_g)
{
	struct mime_graph g = {.input = d->input};

	for (int i = 0; i < 4; i++) {
		if (n_layers >= 0 && g.n_layers >= n_layers)
			break;
		add_layer(&g, MIME_LAYER_CONV, d->width[i], 3, 1, 1, MIME_ACT_RELU);
		if (i == 2)
			continue;
		if (n_layers >= 0 && g.n_layers >= n_layers)
			break;
		add_layer(&g, MIME_LAYER_MAXPOOL, 0, 2, 2, 0, MIME_ACT_NONE);
	}
	add_layer(&g, MIME_LAYER_FLATTEN, 0, 0, 0, 0, MIME_ACT_NONE);
	*ret_g = g;
}

int bench_net_init(struct bench_net *n, const struct mime_graph *g, uint64_t seed)
{
	struct mime_shape shapes[MIME_MAX_LAYERS], in;
	struct mime_errinfo ei = {0};
	uint64_t rng = seed;
	long feat;
	int r;

	memset(n, 0, sizeof(*n));
	r = mime_graph_check(g, shapes, &ei);
	if (r < 0) {
		fprintf(stderr, "bench: graph: %s\n", ei.msg);
		return r;
	}
	n->m.graph = *g;
	in = g->input;
	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];

		if (l->kind == MIME_LAYER_CONV) {
			const long fan_in = (long)in.c * l->kernel * l->kernel;
			const float a = sqrtf(6.0f / (float)fan_in);

			n->w[i] = bench_rand_array(&rng, l->out * fan_in, -a, a);
			n->b[i] = bench_rand_array(&rng, l->out, 0.0f, 0.01f);
			n->m.weight[i] = n->w[i];
			n->m.bias[i] = n->b[i];
		}
		in = shapes[i];
	}
	feat = mime_shape_size(&in);
	n->head_w = bench_rand_array(&rng, BENCH_N_CLASSES * feat, -1.0f / sqrtf((float)feat),
	                             1.0f / sqrtf((float)feat));
	n->head_b = bench_rand_array(&rng, BENCH_N_CLASSES, 0.0f, 0.0f);
	n->task = (struct mime_task_params){.name = "bench",
	                                    .n_classes = BENCH_N_CLASSES,
	                                    .head_w = n->head_w,
	                                    .head_b = n->head_b};
	n->m.n_tasks = 1;
	n->m.tasks = &n->task;
	return 0;
}

void bench_net_fini(struct bench_net *n)
{
	for (int i = 0; i < MIME_MAX_LAYERS; i++) {
		free(n->w[i]);
		free(n->b[i]);
	}
	free(n->head_w);
	free(n->head_b);
}
