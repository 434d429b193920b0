/* SPDX-License-Identifier: MIT */
/* policy -- which phase the budgets allow: pure functions over what each phase is known to
 * take (memory bytes, p95 latency), with hysteresis so the phase does not flap.
 * Phases are numbered 1..n, 1 the smallest; a higher phase takes at least as much.
 * Ownership: none; the caller owns every struct.
 * Threads: none; the daemon calls it on the loop thread. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* The daemon evaluates the policy every policy.interval (500 ms by default) and on every
 * budget change; a step up needs policy.up_evals (3) fitting evaluations in a row, and after
 * a step the timer may not step down for policy.settle_evals (2): see mimed.yaml(5). Memory
 * pressure over budgets.memory_pressure steps a phase down at most this often (PSI's avg10
 * window). */
#define MIMED_PRESSURE_STEP_MS 10000

/* What one phase is known to take; a value < 0 is unknown and assumed to fit. */
struct mimed_policy_phase {
	int64_t memory_bytes;
	double p95_ms;
};

/* Hysteresis state: the phase in force and how long a higher one has fit. */
struct mimed_policy {
	int current;   /* 1..n */
	int candidate; /* the higher phase that fit on the last evaluation; 0: none */
	int streak;    /* evaluations in a row it has fit */
	int settle;    /* timer evaluations left that may not step down (mimed_policy_hold) */
};

/* The highest phase of ph[0..n) (phase i + 1 is ph[i]) whose memory fits memory_budget
 * (0: no budget) and whose p95 meets latency_budget_ms (<= 0: no budget). When none fits,
 * returns 1 and sets *ret_below (may be NULL) to true, else false. n >= 1. */
int mimed_policy_fit(const struct mimed_policy_phase *ph, int n, uint64_t memory_budget,
                     double latency_budget_ms, bool *ret_below);

/* The policy just took a step to p->current: the next settle_evals evaluations of the timer
 * may not step down (the workers switch, and the memory follows them with a lag). */
void mimed_policy_stepped(struct mimed_policy *p, int settle_evals);

/* Applies the hold after a step to fit (what mimed_policy_fit chose): from the timer, while
 * the hold lasts, a fit below the current phase is raised to it (each call counts one
 * evaluation); any other evaluation (a budget change) ends the hold and passes fit on. */
int mimed_policy_hold(struct mimed_policy *p, int fit, bool from_timer);

/* Starts p at phase current. */
void mimed_policy_init(struct mimed_policy *p, int current);

/* One evaluation: fit is what mimed_policy_fit() chose now. Below the current phase: takes
 * it at once. Above: takes it once it (or a higher phase) has fit up_evals evaluations in a
 * row, then the lowest phase seen fitting in that streak. Returns the phase now in force. */
int mimed_policy_step(struct mimed_policy *p, int fit, int up_evals);
