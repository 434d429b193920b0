// SPDX-License-Identifier: MIT
/* policy -- the phase the budgets allow, with hysteresis (see policy.h).
 * Ownership: none. Threads: none. */
#include "daemon/policy.h"

int mimed_policy_fit(const struct mimed_policy_phase *ph, int n, uint64_t memory_budget,
                     double latency_budget_ms, bool *ret_below)
{
	for (int i = n - 1; i >= 0; i--) {
		bool mem_ok = !memory_budget || ph[i].memory_bytes < 0 ||
		              (uint64_t)ph[i].memory_bytes <= memory_budget;
		bool lat_ok = latency_budget_ms <= 0 || ph[i].p95_ms < 0 ||
		              ph[i].p95_ms <= latency_budget_ms;

		if (mem_ok && lat_ok) {
			if (ret_below)
				*ret_below = false;
			return i + 1;
		}
	}
	if (ret_below)
		*ret_below = true;
	return 1;
}

void mimed_policy_init(struct mimed_policy *p, int current)
{
	p->current = current;
	p->candidate = 0;
	p->streak = 0;
	p->settle = 0;
}

void mimed_policy_stepped(struct mimed_policy *p, int settle_evals)
{
	p->settle = settle_evals > 0 ? settle_evals : 0;
}

int mimed_policy_hold(struct mimed_policy *p, int fit, bool from_timer)
{
	if (!from_timer) {
		p->settle = 0;
		return fit;
	}
	if (p->settle > 0) {
		p->settle--;
		if (fit < p->current)
			return p->current;
	}
	return fit;
}

int mimed_policy_step(struct mimed_policy *p, int fit, int up_evals)
{
	if (fit <= p->current) {
		p->current = fit; /* down at once, or stay */
		p->candidate = 0;
		p->streak = 0;
		return p->current;
	}
	/* A higher phase fits: count the streak, remembering the lowest that fit in it. */
	if (p->candidate == 0 || fit < p->candidate)
		p->candidate = fit;
	p->streak++;
	if (p->streak >= up_evals) {
		p->current = p->candidate;
		p->candidate = 0;
		p->streak = 0;
	}
	return p->current;
}
