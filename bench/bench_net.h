/* SPDX-License-Identifier: MIT */
/* bench_net -- what the benchmarks share: VGG-7 models with random weights built in memory
 * (no bundle), a seeded generator, a clock and a median.
 * Ownership: a bench_net owns its arrays; bench_net_fini() frees them.
 * Threads: single-threaded helpers. */
#pragma once

#include <stdint.h>

#include "lib/model.h"

#define BENCH_N_CLASSES 10

struct bench_netdef {
	const char *name;
	struct mime_shape input;
	int width[4]; /* conv1..conv4 kernels */
};

struct bench_net {
	struct mime_model m;
	struct mime_task_params task;
	float *w[MIME_MAX_LAYERS], *b[MIME_MAX_LAYERS];
	float *head_w, *head_b;
	int64_t macs;
};

double bench_now_s(void);
double bench_median(double *v, int n); /* sorts v */
/* 64-byte aligned array of n uniform floats in [lo, hi) (xorshift64*); exits on ENOMEM. */
float *bench_rand_array(uint64_t *rng, long n, float lo, float hi);
/* The VGG-7 trunk of d (conv-pool-conv-pool-conv-conv-pool), cut after its first n_layers
 * layers (-1 = all), always ending in flatten so heads apply. */
void bench_vgg7_graph(const struct bench_netdef *d, int n_layers, struct mime_graph *ret_g);
/* He-uniform weights, small positive biases, a random BENCH_N_CLASSES head. Returns 0 or the
 * graph check's error (printed). */
int bench_net_init(struct bench_net *n, const struct mime_graph *g, uint64_t seed);
void bench_net_fini(struct bench_net *n);
