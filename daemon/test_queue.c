// SPDX-License-Identifier: MIT
/* test_queue -- the bounded batching queue and the latency window. */
#include "tests/unit.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/queue.h"
#include "daemon/stats.h"

static void test_queue_push_refuses_when_full(void **state)
{
	struct mimed_queue q;
	struct mimed_qitem it[4] = {0}, *p[4] = {&it[0], &it[1], &it[2], &it[3]};

	assert_int_equal(mimed_queue_init(&q, 3, 8, 0), 0);
	assert_int_equal(mimed_queue_push(&q, p, 2), 0);
	assert_int_equal(mimed_queue_push(&q, p + 2, 2), -EAGAIN); /* all or none */
	assert_int_equal(mimed_queue_len(&q), 2);
	assert_int_equal(mimed_queue_push(&q, p + 2, 1), 0);
	assert_int_equal(mimed_queue_push(&q, p + 3, 1), -EAGAIN);
	mimed_queue_close(&q);
	assert_int_equal(mimed_queue_push(&q, p + 3, 1), -ESHUTDOWN);
	mimed_queue_fini(&q);
}

static void test_queue_pop_batch_takes_up_to_max_batch_in_order(void **state)
{
	struct mimed_queue q;
	struct mimed_qitem it[5] = {0}, *p[5], *out[8];

	for (int i = 0; i < 5; i++)
		p[i] = &it[i];
	assert_int_equal(mimed_queue_init(&q, 16, 3, 1000000), 0);
	assert_int_equal(mimed_queue_push(&q, p, 5), 0);
	assert_int_equal(mimed_queue_pop_batch(&q, out, 8), 3); /* full batch: no waiting */
	assert_ptr_equal(out[0], &it[0]);
	assert_ptr_equal(out[2], &it[2]);
	mimed_queue_close(&q); /* the rest comes out at once, then 0 */
	assert_int_equal(mimed_queue_pop_batch(&q, out, 8), 2);
	assert_ptr_equal(out[0], &it[3]);
	assert_int_equal(mimed_queue_pop_batch(&q, out, 8), 0);
	mimed_queue_fini(&q);
}

static void test_queue_pop_batch_waits_max_wait_for_a_partial_batch(void **state)
{
	struct mimed_queue q;
	struct mimed_qitem it = {0}, *p = &it, *out[4];
	uint64_t t0;

	assert_int_equal(mimed_queue_init(&q, 16, 4, 20000), 0); /* 20 ms */
	assert_int_equal(mimed_queue_push(&q, &p, 1), 0);
	t0 = mimed_now_ns();
	assert_int_equal(mimed_queue_pop_batch(&q, out, 4), 1);
	assert_true(mimed_now_ns() - t0 >= 15000000u); /* measured from the push */
	mimed_queue_fini(&q);
}

struct idle_arg {
	struct mimed_queue *q;
	struct mimed_qitem *item; /* pushed from the hook when not NULL */
	int calls;
};

static void idle_hook(void *arg)
{
	struct idle_arg *a = arg;

	a->calls++;
	if (a->item)
		assert_int_equal(mimed_queue_push(a->q, &a->item, 1), 0);
}

/* The idle hook runs once, before the worker would block, never while items are there;
 * what it pushes is taken without blocking. */
static void test_queue_pop_batch_idle_hook(void **state)
{
	struct mimed_queue q;
	struct mimed_qitem it[2] = {0}, *p = &it[0], *out[4];
	struct idle_arg a = {.q = &q};

	assert_int_equal(mimed_queue_init(&q, 16, 4, 0), 0);
	assert_int_equal(mimed_queue_push(&q, &p, 1), 0);
	assert_int_equal(mimed_queue_pop_batch_idle(&q, out, 4, idle_hook, &a), 1);
	assert_int_equal(a.calls, 0); /* an item was there: no idling */
	a.item = &it[1];
	assert_int_equal(mimed_queue_pop_batch_idle(&q, out, 4, idle_hook, &a), 1);
	assert_int_equal(a.calls, 1);
	assert_ptr_equal(out[0], &it[1]);
	a.item = NULL;
	mimed_queue_close(&q);
	assert_int_equal(mimed_queue_pop_batch_idle(&q, out, 4, idle_hook, &a), 0);
	mimed_queue_fini(&q);
	/* waiting for a batch to fill counts as idling too */
	a = (struct idle_arg){.q = &q};
	assert_int_equal(mimed_queue_init(&q, 16, 4, 5000), 0); /* 5 ms */
	assert_int_equal(mimed_queue_push(&q, &p, 1), 0);
	assert_int_equal(mimed_queue_pop_batch_idle(&q, out, 4, idle_hook, &a), 1);
	assert_int_equal(a.calls, 1);
	mimed_queue_fini(&q);
}

static void test_queue_drain_takes_a_partial_batch_at_once(void **state)
{
	struct mimed_queue q;
	struct mimed_qitem it[2] = {0}, *p[2] = {&it[0], &it[1]}, *out[4];
	uint64_t t0;

	assert_int_equal(mimed_queue_init(&q, 16, 4, 10000000), 0); /* max_wait 10 s */
	assert_int_equal(mimed_queue_push(&q, p, 1), 0);
	mimed_queue_drain(&q);
	t0 = mimed_now_ns();
	assert_int_equal(mimed_queue_pop_batch(&q, out, 4), 1); /* not after 10 s */
	assert_true(mimed_now_ns() - t0 < 5000000000u);
	assert_int_equal(mimed_queue_push(&q, p + 1, 1), 0); /* still accepted */
	assert_int_equal(mimed_queue_pop_batch(&q, out, 4), 1);
	assert_ptr_equal(out[0], &it[1]);
	mimed_queue_close(&q);
	mimed_queue_fini(&q);
}

static void test_queue_pop_batch_keeps_keys_apart(void **state)
{
	struct mimed_queue q;
	struct mimed_qitem it[4] = {{.key = 1}, {.key = 1}, {.key = 2}, {.key = 1}};
	struct mimed_qitem *p[4] = {&it[0], &it[1], &it[2], &it[3]}, *out[8];

	assert_int_equal(mimed_queue_init(&q, 16, 8, 1000000), 0);
	assert_int_equal(mimed_queue_push(&q, p, 4), 0);
	/* No waiting (another key is queued); the head's key, skipping the others. */
	assert_int_equal(mimed_queue_pop_batch(&q, out, 8), 3);
	assert_ptr_equal(out[0], &it[0]);
	assert_ptr_equal(out[1], &it[1]);
	assert_ptr_equal(out[2], &it[3]);
	assert_int_equal(mimed_queue_len(&q), 1);
	/* The tail is right after taking it: a push lands after item 2. */
	assert_int_equal(mimed_queue_push(&q, p + 3, 1), 0);
	mimed_queue_close(&q);
	assert_int_equal(mimed_queue_pop_batch(&q, out, 8), 1);
	assert_ptr_equal(out[0], &it[2]);
	assert_int_equal(mimed_queue_pop_batch(&q, out, 8), 1);
	assert_ptr_equal(out[0], &it[3]);
	assert_int_equal(mimed_queue_pop_batch(&q, out, 8), 0);
	mimed_queue_fini(&q);
}

static bool odd_key(struct mimed_qitem *it, void *arg)
{
	(*(int *)arg)++;
	return it->key % 2;
}

static void *pop_one(void *arg)
{
	struct mimed_qitem *out[4];

	return (void *)(intptr_t)mimed_queue_pop_batch(arg, out, 4);
}

/* has_idle: true while a popper waits for an item (polling or asleep), false once it took
 * one, and false with a queued item and nobody popping. */
static void test_queue_has_idle_while_a_popper_waits(void **state)
{
	struct mimed_queue q;
	struct mimed_qitem it[2] = {0}, *p[2] = {&it[0], &it[1]};
	pthread_t t;
	void *got;
	int i;

	assert_int_equal(mimed_queue_init(&q, 8, 4, 0), 0);
	assert_false(mimed_queue_has_idle(&q));
	assert_int_equal(pthread_create(&t, NULL, pop_one, &q), 0);
	for (i = 0; i < 2000 && !mimed_queue_has_idle(&q); i++)
		usleep(1000);
	assert_true(mimed_queue_has_idle(&q));
	usleep(5000); /* past the poll: asleep, still idle */
	assert_true(mimed_queue_has_idle(&q));
	assert_int_equal(mimed_queue_push(&q, p, 1), 0);
	assert_int_equal(pthread_join(t, &got), 0);
	assert_int_equal((intptr_t)got, 1);
	assert_false(mimed_queue_has_idle(&q));
	assert_int_equal(mimed_queue_push(&q, p + 1, 1), 0);
	assert_false(mimed_queue_has_idle(&q));
	mimed_queue_close(&q);
	assert_int_equal(pthread_create(&t, NULL, pop_one, &q), 0);
	assert_int_equal(pthread_join(t, &got), 0);
	assert_int_equal((intptr_t)got, 1); /* the queued one; then closed and empty */
	assert_int_equal(pthread_create(&t, NULL, pop_one, &q), 0);
	assert_int_equal(pthread_join(t, &got), 0);
	assert_int_equal((intptr_t)got, 0);
	assert_false(mimed_queue_has_idle(&q));
	mimed_queue_fini(&q);
}

static void test_queue_remove_if_unlinks_matches(void **state)
{
	struct mimed_queue q;
	struct mimed_qitem it[5] = {{.key = 0}, {.key = 1}, {.key = 2}, {.key = 3}, {.key = 4}};
	struct mimed_qitem *p[5], *out[8], *removed;
	int seen = 0;

	for (int i = 0; i < 5; i++)
		p[i] = &it[i];
	assert_int_equal(mimed_queue_init(&q, 5, 8, 0), 0);
	assert_int_equal(mimed_queue_push(&q, p, 5), 0);
	removed = mimed_queue_remove_if(&q, odd_key, &seen);
	assert_int_equal(seen, 5);
	assert_ptr_equal(removed, &it[1]);
	assert_ptr_equal(removed->next, &it[3]);
	assert_null(removed->next->next);
	assert_int_equal(mimed_queue_len(&q), 3);
	/* The tail is still right: a push lands after item 4. */
	assert_int_equal(mimed_queue_push(&q, p + 1, 1), 0);
	mimed_queue_close(&q);
	assert_int_equal(mimed_queue_pop_batch(&q, out, 8), 1); /* keys differ: 0 | 2 | 4 | 1 */
	assert_int_equal(mimed_queue_pop_batch(&q, out, 8), 1);
	assert_int_equal(mimed_queue_pop_batch(&q, out, 8), 1);
	assert_int_equal(mimed_queue_pop_batch(&q, out, 8), 1);
	assert_ptr_equal(out[0], &it[1]);
	assert_int_equal(mimed_queue_pop_batch(&q, out, 8), 0);
	mimed_queue_fini(&q);
}

#define N_ITEMS 2000

struct consumer {
	struct mimed_queue *q;
	int popped;
	int batches;
};

static void *consume(void *arg)
{
	struct consumer *c = arg;
	struct mimed_qitem *out[8];
	int n;

	while ((n = mimed_queue_pop_batch(c->q, out, 8)) > 0) {
		for (int i = 0; i < n; i++)
			out[i]->key = 99; /* mark as seen */
		c->popped += n;
		c->batches++;
	}
	return NULL;
}

static void test_queue_threads_deliver_every_item_once(void **state)
{
	struct mimed_queue q;
	struct mimed_qitem *it = calloc(N_ITEMS, sizeof(*it));
	struct consumer c[2] = {{.q = &q}, {.q = &q}};
	pthread_t t[2];
	int pushed = 0;

	assert_non_null(it);
	assert_int_equal(mimed_queue_init(&q, 64, 8, 200), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, consume, &c[i]), 0);
	while (pushed < N_ITEMS) {
		struct mimed_qitem *p = &it[pushed];

		if (mimed_queue_push(&q, &p, 1) == 0)
			pushed++;
		else
			sched_yield();
	}
	mimed_queue_close(&q);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(c[0].popped + c[1].popped, N_ITEMS);
	for (int i = 0; i < N_ITEMS; i++)
		assert_int_equal(it[i].key, 99);
	mimed_queue_fini(&q);
	free(it);
}

static void test_stats_latency_percentiles(void **state)
{
	static const double p[] = {50, 95, 99, 100};
	struct mimed_latency l;
	uint64_t out[4];

	assert_int_equal(mimed_latency_init(&l, 100), 0);
	mimed_latency_percentiles(&l, p, 4, out);
	assert_int_equal(out[0], 0);
	for (int i = 1; i <= 200; i++) /* the window keeps 101..200 */
		mimed_latency_add(&l, (uint64_t)i);
	mimed_latency_percentiles(&l, p, 4, out);
	assert_int_equal(out[0], 150);
	assert_int_equal(out[1], 195);
	assert_int_equal(out[2], 199);
	assert_int_equal(out[3], 200);
	assert_int_equal(l.total, 200);
	mimed_latency_fini(&l);
}

/* Only the samples added since a time count: the phase policy's ageing window. */
static void test_stats_latency_percentiles_since(void **state)
{
	static const double p[] = {50, 100};
	struct mimed_latency l;
	uint64_t out[2];

	assert_int_equal(mimed_latency_init(&l, 8), 0);
	for (int i = 1; i <= 4; i++) /* old and slow: 1000..4000 us at t = 1..4 s */
		mimed_latency_add_at(&l, (uint64_t)i * 1000, (uint64_t)i * 1000000000u);
	for (int i = 1; i <= 3; i++) /* recent and fast: 10..30 us at t = 10..12 s */
		mimed_latency_add_at(&l, (uint64_t)i * 10, (uint64_t)(9 + i) * 1000000000u);
	assert_int_equal(mimed_latency_percentiles_since(&l, 10000000000u, p, 2, out), 3);
	assert_int_equal(out[0], 20);
	assert_int_equal(out[1], 30);
	assert_int_equal(mimed_latency_percentiles_since(&l, 4000000000u, p, 2, out), 4);
	assert_int_equal(out[1], 4000);
	assert_int_equal(mimed_latency_percentiles_since(&l, 13000000000u, p, 2, out), 0);
	assert_int_equal(out[0], 0);
	mimed_latency_percentiles(&l, p, 2, out); /* all of them */
	assert_int_equal(out[1], 4000);
	for (int i = 0; i < 8; i++) /* the ring overwrites the oldest, with their times */
		mimed_latency_add_at(&l, 7, 20000000000u);
	assert_int_equal(mimed_latency_percentiles_since(&l, 0, p, 2, out), 8);
	assert_int_equal(out[1], 7);
	mimed_latency_fini(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_queue_push_refuses_when_full),
		cmocka_unit_test(test_queue_pop_batch_takes_up_to_max_batch_in_order),
		cmocka_unit_test(test_queue_pop_batch_waits_max_wait_for_a_partial_batch),
		cmocka_unit_test(test_queue_drain_takes_a_partial_batch_at_once),
		cmocka_unit_test(test_queue_pop_batch_keeps_keys_apart),
		cmocka_unit_test(test_queue_pop_batch_idle_hook),
		cmocka_unit_test(test_queue_has_idle_while_a_popper_waits),
		cmocka_unit_test(test_queue_remove_if_unlinks_matches),
		cmocka_unit_test(test_queue_threads_deliver_every_item_once),
		cmocka_unit_test(test_stats_latency_percentiles),
		cmocka_unit_test(test_stats_latency_percentiles_since),
	};
	return cmocka_run_group_tests_name("queue", tests, NULL, NULL);
}
