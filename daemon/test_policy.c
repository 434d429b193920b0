// SPDX-License-Identifier: MIT
/* test_policy -- phase choice under memory and latency budgets, and its hysteresis. */
#include "tests/unit.h"

#include "daemon/policy.h"

static const struct mimed_policy_phase three[3] = {
	{.memory_bytes = 1000, .p95_ms = 1.0},
	{.memory_bytes = 2000, .p95_ms = 2.0},
	{.memory_bytes = 3000, .p95_ms = -1}, /* latency unknown: assumed to fit */
};

static void test_policy_fit_picks_highest_phase_within_budgets(void **state)
{
	bool below = true;

	assert_int_equal(mimed_policy_fit(three, 3, 0, 0, &below), 3);
	assert_false(below);
	assert_int_equal(mimed_policy_fit(three, 3, 2500, 0, &below), 2);
	assert_int_equal(mimed_policy_fit(three, 3, 2000, 0, &below), 2); /* inclusive */
	assert_int_equal(mimed_policy_fit(three, 3, 1000, 0, &below), 1);
	assert_false(below);
	assert_int_equal(mimed_policy_fit(three, 3, 0, 1.5, &below), 3); /* p3 unknown */
}

static void test_policy_fit_latency_budget(void **state)
{
	struct mimed_policy_phase ph[3] = {three[0], three[1], three[2]};

	ph[2].p95_ms = 5.0;
	assert_int_equal(mimed_policy_fit(ph, 3, 0, 2.5, NULL), 2);
	assert_int_equal(mimed_policy_fit(ph, 3, 0, 1.0, NULL), 1);
	assert_int_equal(mimed_policy_fit(ph, 3, 1500, 10, NULL), 1);
}

static void test_policy_fit_below_lowest_gives_lowest(void **state)
{
	bool below = false;

	assert_int_equal(mimed_policy_fit(three, 3, 10, 0, &below), 1);
	assert_true(below);
	assert_int_equal(mimed_policy_fit(three, 2, 0, 0.5, &below), 1);
	assert_true(below);
}

static void test_policy_fit_unknown_memory_fits(void **state)
{
	struct mimed_policy_phase ph[2] = {{-1, -1}, {-1, -1}};

	assert_int_equal(mimed_policy_fit(ph, 2, 1, 0.001, NULL), 2);
	assert_int_equal(mimed_policy_fit(ph, 1, 1, 0.001, NULL), 1);
}

static void test_policy_step_down_at_once_up_after_k(void **state)
{
	struct mimed_policy p;

	mimed_policy_init(&p, 3);
	assert_int_equal(mimed_policy_step(&p, 1, 3), 1); /* down at once */
	assert_int_equal(mimed_policy_step(&p, 3, 3), 1);
	assert_int_equal(mimed_policy_step(&p, 3, 3), 1);
	assert_int_equal(mimed_policy_step(&p, 3, 3), 3); /* the third evaluation */
	assert_int_equal(mimed_policy_step(&p, 3, 3), 3);
}

static void test_policy_step_streak_resets(void **state)
{
	struct mimed_policy p;

	mimed_policy_init(&p, 1);
	assert_int_equal(mimed_policy_step(&p, 3, 3), 1);
	assert_int_equal(mimed_policy_step(&p, 3, 3), 1);
	assert_int_equal(mimed_policy_step(&p, 1, 3), 1); /* no longer fits: start again */
	assert_int_equal(mimed_policy_step(&p, 3, 3), 1);
	assert_int_equal(mimed_policy_step(&p, 2, 3), 1);
	assert_int_equal(mimed_policy_step(&p, 3, 3), 2); /* the lowest that fit in the run */
	assert_int_equal(mimed_policy_step(&p, 2, 3), 2);
}

static void test_policy_step_one_eval_is_immediate(void **state)
{
	struct mimed_policy p;

	mimed_policy_init(&p, 1);
	assert_int_equal(mimed_policy_step(&p, 2, 1), 2);
}

/* After a step, timer evaluations hold a step down for settle_evals of them; a budget
 * change (not the timer) ends the hold at once; steps up are never held. */
static void test_policy_hold_after_a_step(void **state)
{
	struct mimed_policy p;

	mimed_policy_init(&p, 3);
	assert_int_equal(mimed_policy_hold(&p, 2, true), 2); /* no step taken: no hold */
	mimed_policy_stepped(&p, 2);
	assert_int_equal(mimed_policy_hold(&p, 1, true), 3); /* held */
	assert_int_equal(mimed_policy_hold(&p, 1, true), 3); /* held, the last one */
	assert_int_equal(mimed_policy_hold(&p, 1, true), 1); /* released */
	mimed_policy_stepped(&p, 5);
	assert_int_equal(mimed_policy_hold(&p, 4, true), 4);  /* up: never held */
	assert_int_equal(mimed_policy_hold(&p, 1, false), 1); /* a budget change: at once */
	assert_int_equal(mimed_policy_hold(&p, 1, true), 1);  /* and the hold is over */
	mimed_policy_stepped(&p, 0);
	assert_int_equal(mimed_policy_hold(&p, 1, true), 1);
	mimed_policy_stepped(&p, 1);
	mimed_policy_init(&p, 2); /* a new phase (a pin, SetPhase auto): no hold */
	assert_int_equal(mimed_policy_hold(&p, 1, true), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_policy_fit_picks_highest_phase_within_budgets),
		cmocka_unit_test(test_policy_fit_latency_budget),
		cmocka_unit_test(test_policy_fit_below_lowest_gives_lowest),
		cmocka_unit_test(test_policy_fit_unknown_memory_fits),
		cmocka_unit_test(test_policy_step_down_at_once_up_after_k),
		cmocka_unit_test(test_policy_step_streak_resets),
		cmocka_unit_test(test_policy_step_one_eval_is_immediate),
		cmocka_unit_test(test_policy_hold_after_a_step),
	};

	return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
