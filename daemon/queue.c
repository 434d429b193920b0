// SPDX-License-Identifier: MIT
/* queue -- see queue.h. */
#include "daemon/queue.h"

#include <errno.h>
#include <sched.h>
#include <time.h>

uint64_t mimed_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int mimed_queue_init(struct mimed_queue *q, size_t cap, int max_batch, uint64_t max_wait_us)
{
	pthread_condattr_t attr;
	int r;

	*q = (struct mimed_queue){0};
	r = pthread_mutex_init(&q->lock, NULL);
	if (r)
		return -r;
	r = pthread_condattr_init(&attr);
	if (r)
		goto out_mutex;
	r = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (!r)
		r = pthread_cond_init(&q->cond, &attr);
	pthread_condattr_destroy(&attr);
	if (r)
		goto out_mutex;
	q->cap = cap;
	q->max_batch = max_batch > 0 ? max_batch : 1;
	q->max_wait_ns = max_wait_us * 1000;
	q->spin_ns = MIMED_QUEUE_SPIN_US * 1000ull;
	return 0;

out_mutex:
	pthread_mutex_destroy(&q->lock);
	return -r;
}

void mimed_queue_fini(struct mimed_queue *q)
{
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
}

void mimed_queue_configure(struct mimed_queue *q, size_t cap, int max_batch, uint64_t max_wait_us)
{
	pthread_mutex_lock(&q->lock);
	q->cap = cap;
	q->max_batch = max_batch > 0 ? max_batch : 1;
	q->max_wait_ns = max_wait_us * 1000;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

int mimed_queue_push(struct mimed_queue *q, struct mimed_qitem **items, size_t n)
{
	uint64_t now = mimed_now_ns();
	size_t i;

	pthread_mutex_lock(&q->lock);
	if (q->closed) {
		pthread_mutex_unlock(&q->lock);
		return -ESHUTDOWN;
	}
	if (n > q->cap - q->len || q->len > q->cap) {
		pthread_mutex_unlock(&q->lock);
		return -EAGAIN;
	}
	for (i = 0; i < n; i++) {
		items[i]->next = NULL;
		items[i]->queued_ns = now;
		if (q->tail)
			q->tail->next = items[i];
		else
			q->head = items[i];
		q->tail = items[i];
	}
	q->len += n;
	if (n) {
		__atomic_add_fetch(&q->events, 1, __ATOMIC_RELEASE);
		pthread_cond_broadcast(&q->cond);
	}
	pthread_mutex_unlock(&q->lock);
	return 0;
}

/* Items at the head sharing the head's key, up to limit. Called with the lock held. */
static int queue_ready(const struct mimed_queue *q, int limit)
{
	const struct mimed_qitem *it;
	int n = 0;

	for (it = q->head; it && n < limit; it = it->next)
		if (it->key == q->head->key)
			n++;
	return n;
}

/* Polls q->events for up to spin_ns (the lock not held) and returns once it moved. Between
 * polls it yields the CPU, so on a machine with runnable work (the loop thread, the client,
 * other jobs) the poll costs them little; on an idle one it answers within a microsecond. */
static void queue_spin(struct mimed_queue *q, uint64_t seen)
{
	uint64_t until = mimed_now_ns() + q->spin_ns;

	for (unsigned i = 1; __atomic_load_n(&q->events, __ATOMIC_ACQUIRE) == seen; i++) {
		sched_yield();
		if (i % 16 == 0 && mimed_now_ns() >= until)
			return;
	}
}

int mimed_queue_pop_batch(struct mimed_queue *q, struct mimed_qitem **ret_items, int room)
{
	return mimed_queue_pop_batch_idle(q, ret_items, room, NULL, NULL);
}

int mimed_queue_pop_batch_idle(struct mimed_queue *q, struct mimed_qitem **ret_items, int room,
                               void (*idle)(void *arg), void *arg)
{
	bool spun = false, idle_counted = false;
	int n, limit;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		uint64_t deadline;
		struct timespec ts;

		if (!q->head) {
			if (q->closed) {
				if (idle_counted)
					__atomic_sub_fetch(&q->idle, 1, __ATOMIC_RELAXED);
				pthread_mutex_unlock(&q->lock);
				return 0;
			}
			if (!idle_counted) {
				__atomic_add_fetch(&q->idle, 1, __ATOMIC_RELAXED);
				idle_counted = true;
			}
			if (q->spin_ns && !spun) { /* once per call: then sleep */
				uint64_t seen = __atomic_load_n(&q->events, __ATOMIC_RELAXED);

				pthread_mutex_unlock(&q->lock);
				queue_spin(q, seen);
				pthread_mutex_lock(&q->lock);
				spun = true;
				continue;
			}
			if (idle) { /* once, then look again: items may have come meanwhile */
				pthread_mutex_unlock(&q->lock);
				idle(arg);
				idle = NULL;
				pthread_mutex_lock(&q->lock);
				continue;
			}
			pthread_cond_wait(&q->cond, &q->lock);
			continue;
		}
		if (idle_counted) {
			__atomic_sub_fetch(&q->idle, 1, __ATOMIC_RELAXED);
			idle_counted = false;
		}
		limit = q->max_batch < room ? q->max_batch : room;
		n = queue_ready(q, limit);
		/* Full, or a different key waits behind it (more cannot join), or closing. */
		if (n >= limit || (size_t)n < q->len || q->closed || q->no_wait)
			break;
		deadline = q->head->queued_ns + q->max_wait_ns;
		if (mimed_now_ns() >= deadline)
			break;
		if (idle) {
			pthread_mutex_unlock(&q->lock);
			idle(arg);
			idle = NULL;
			pthread_mutex_lock(&q->lock);
			continue;
		}
		ts.tv_sec = (time_t)(deadline / 1000000000u);
		ts.tv_nsec = (long)(deadline % 1000000000u);
		pthread_cond_timedwait(&q->cond, &q->lock, &ts);
	}
	{
		uint64_t key = q->head->key;
		struct mimed_qitem **pp = &q->head, *prev = NULL;
		int k = 0;

		while (*pp && k < n) {
			struct mimed_qitem *it = *pp;

			if (it->key == key) {
				*pp = it->next;
				it->next = NULL;
				ret_items[k++] = it;
			} else {
				prev = it;
				pp = &it->next;
			}
		}
		if (!*pp) /* took the tail: the last item left is the new tail */
			q->tail = prev;
	}
	q->len -= (size_t)n;
	if (q->head) /* another worker may take the rest */
		pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
	return n;
}

struct mimed_qitem *mimed_queue_remove_if(struct mimed_queue *q,
                                          bool (*pred)(struct mimed_qitem *item, void *arg),
                                          void *arg)
{
	struct mimed_qitem *out = NULL, **out_tail = &out, **pp, *prev = NULL;

	pthread_mutex_lock(&q->lock);
	pp = &q->head;
	while (*pp) {
		struct mimed_qitem *it = *pp;

		if (pred(it, arg)) {
			*pp = it->next;
			it->next = NULL;
			*out_tail = it;
			out_tail = &it->next;
			q->len--;
		} else {
			prev = it;
			pp = &it->next;
		}
	}
	q->tail = prev;
	pthread_mutex_unlock(&q->lock);
	return out;
}

void mimed_queue_close(struct mimed_queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->closed = true;
	__atomic_add_fetch(&q->events, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

void mimed_queue_drain(struct mimed_queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->no_wait = true;
	__atomic_add_fetch(&q->events, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

bool mimed_queue_has_idle(struct mimed_queue *q)
{
	return __atomic_load_n(&q->idle, __ATOMIC_RELAXED) > 0;
}

size_t mimed_queue_len(struct mimed_queue *q)
{
	size_t n;

	pthread_mutex_lock(&q->lock);
	n = q->len;
	pthread_mutex_unlock(&q->lock);
	return n;
}
