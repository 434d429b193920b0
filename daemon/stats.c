// SPDX-License-Identifier: MIT
/* stats -- see stats.h. */
#include "daemon/stats.h"
#include "daemon/queue.h" /* mimed_now_ns */

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int mimed_latency_init(struct mimed_latency *l, size_t cap)
{
	memset(l, 0, sizeof(*l));
	l->samples_us = calloc(cap, sizeof(*l->samples_us));
	l->at_ns = calloc(cap, sizeof(*l->at_ns));
	l->sorted = calloc(cap, sizeof(*l->sorted));
	if (!l->samples_us || !l->at_ns || !l->sorted) {
		mimed_latency_fini(l);
		return -ENOMEM;
	}
	l->cap = cap;
	return 0;
}

void mimed_latency_fini(struct mimed_latency *l)
{
	free(l->samples_us);
	free(l->at_ns);
	free(l->sorted);
	memset(l, 0, sizeof(*l));
}

void mimed_latency_add(struct mimed_latency *l, uint64_t us)
{
	mimed_latency_add_at(l, us, mimed_now_ns());
}

void mimed_latency_add_at(struct mimed_latency *l, uint64_t us, uint64_t now_ns)
{
	if (!l->cap)
		return;
	l->samples_us[l->next] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
	l->at_ns[l->next] = now_ns;
	l->next = (l->next + 1) % l->cap;
	if (l->n < l->cap)
		l->n++;
	l->total++;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

size_t mimed_latency_percentiles_since(struct mimed_latency *l, uint64_t since_ns, const double *p,
                                       int n_p, uint64_t *ret_us)
{
	size_t n = 0;

	for (size_t i = 0; i < l->n; i++)
		if (l->at_ns[i] >= since_ns)
			l->sorted[n++] = l->samples_us[i];
	if (!n) {
		for (int i = 0; i < n_p; i++)
			ret_us[i] = 0;
		return 0;
	}
	qsort(l->sorted, n, sizeof(*l->sorted), cmp_u32);
	for (int i = 0; i < n_p; i++) {
		double rank = ceil(p[i] / 100.0 * (double)n);
		size_t k = rank < 1 ? 0 : (size_t)rank - 1;

		ret_us[i] = l->sorted[k < n ? k : n - 1];
	}
	return n;
}

void mimed_latency_percentiles(struct mimed_latency *l, const double *p, int n_p, uint64_t *ret_us)
{
	mimed_latency_percentiles_since(l, 0, p, n_p, ret_us);
}
