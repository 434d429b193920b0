// SPDX-License-Identifier: MIT
/* stats -- see stats.h. */
#include "daemon/stats.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int mimed_latency_init(struct mimed_latency *l, size_t cap)
{
	memset(l, 0, sizeof(*l));
	l->samples_us = calloc(cap, sizeof(*l->samples_us));
	l->sorted = calloc(cap, sizeof(*l->sorted));
	if (!l->samples_us || !l->sorted) {
		mimed_latency_fini(l);
		return -ENOMEM;
	}
	l->cap = cap;
	return 0;
}

void mimed_latency_fini(struct mimed_latency *l)
{
	free(l->samples_us);
	free(l->sorted);
	memset(l, 0, sizeof(*l));
}

void mimed_latency_add(struct mimed_latency *l, uint64_t us)
{
	if (!l->cap)
		return;
	l->samples_us[l->next] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
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

void mimed_latency_percentiles(struct mimed_latency *l, const double *p, int n_p, uint64_t *ret_us)
{
	if (!l->n) {
		for (int i = 0; i < n_p; i++)
			ret_us[i] = 0;
		return;
	}
	memcpy(l->sorted, l->samples_us, l->n * sizeof(*l->sorted));
	qsort(l->sorted, l->n, sizeof(*l->sorted), cmp_u32);
	for (int i = 0; i < n_p; i++) {
		double rank = ceil(p[i] / 100.0 * (double)l->n);
		size_t k = rank < 1 ? 0 : (size_t)rank - 1;

		ret_us[i] = l->sorted[k < l->n ? k : l->n - 1];
	}
}
