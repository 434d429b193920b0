/* SPDX-License-Identifier: MIT */
/* stats -- request latency percentiles over a sliding window of the most recent requests,
 * all of them or those answered since a time (the phase policy ages its samples).
 * Ownership: a window owns its sample array.
 * Threads: none; the loop thread owns the daemon's window. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct mimed_latency {
	uint32_t *samples_us; /* ring of the last cap samples */
	uint64_t *at_ns;      /* when each was added (CLOCK_MONOTONIC) */
	uint32_t *sorted;     /* scratch for percentiles, cap entries */
	size_t cap, n, next;
	uint64_t total; /* samples ever added */
};

int mimed_latency_init(struct mimed_latency *l, size_t cap); /* 0 or -ENOMEM */
void mimed_latency_fini(struct mimed_latency *l);
void mimed_latency_add(struct mimed_latency *l, uint64_t us); /* added now */
void mimed_latency_add_at(struct mimed_latency *l, uint64_t us, uint64_t now_ns);
/* Nearest-rank percentiles (p in 0..100) of the window into ret_us[i]; 0 when empty. */
void mimed_latency_percentiles(struct mimed_latency *l, const double *p, int n_p, uint64_t *ret_us);
/* The same over the samples of the window added at or after since_ns; returns their count
 * (0: ret_us all 0). */
size_t mimed_latency_percentiles_since(struct mimed_latency *l, uint64_t since_ns, const double *p,
                                       int n_p, uint64_t *ret_us);
