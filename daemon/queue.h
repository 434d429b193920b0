/* SPDX-License-Identifier: MIT */
/* queue -- the bounded request queue between the loop thread and the workers, and the
 * batching rule: a worker takes up to max_batch items, waiting at most max_wait_us after the
 * oldest item was queued for the batch to fill. Items are intrusive (struct mimed_qitem is
 * embedded in the request), so pushing never allocates; a full queue refuses at once.
 * Ownership: the queue owns nothing; items belong to whoever pushed them until popped or
 * removed, then to whoever got them back.
 * Threads: every function is thread-safe; pop blocks, the others never wait for long. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How long a worker that finds the queue empty polls it (yielding the CPU between polls)
 * before it sleeps on the condition variable: a request that arrives meanwhile is taken
 * without a futex wake-up, tens of microseconds on a busy or virtualised machine and part of
 * the socket path's fixed cost at concurrency 1 (bench/RESULTS.md: a request at concurrency
 * 1 arrives ~100-200 us after the previous reply). Polling stops at once when an item
 * arrives or the queue closes; an idle worker polls once per idle period, then sleeps. A
 * pause-only spin was measured worse on this 2-core shared machine: it took the CPU from
 * the loop thread and the client. */
#define MIMED_QUEUE_SPIN_US 300

struct mimed_qitem {
	struct mimed_qitem *next;
	uint64_t queued_ns; /* CLOCK_MONOTONIC, set by push */
	uint64_t key;       /* only items with equal keys share a batch (runtime generation; and
	                     * the task, when each task has its own weights) */
};

struct mimed_queue {
	pthread_mutex_t lock;
	pthread_cond_t cond;             /* signalled on push, close and batching changes */
	struct mimed_qitem *head, *tail; /* guarded by lock */
	size_t len, cap;                 /* guarded by lock; len + n > cap -> push refuses */
	int max_batch;                   /* guarded by lock */
	uint64_t max_wait_ns;            /* guarded by lock */
	bool closed;                     /* guarded by lock */
	bool no_wait;                    /* guarded by lock: draining, batches go at once */
	uint64_t spin_ns;                /* see MIMED_QUEUE_SPIN_US; set at init */
	/* __atomic: bumped under lock by every push and by close; polled without the lock */
	uint64_t events;
	/* __atomic: poppers waiting for an item (polling or asleep); read without the lock */
	int idle;
};

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t mimed_now_ns(void);

int mimed_queue_init(struct mimed_queue *q, size_t cap, int max_batch, uint64_t max_wait_us);
void mimed_queue_fini(struct mimed_queue *q); /* the queue must be empty of live items */
/* Changes capacity and batching (a reload); items already queued stay. */
void mimed_queue_configure(struct mimed_queue *q, size_t cap, int max_batch, uint64_t max_wait_us);

/* Queues n items (all or none, in order). Returns 0, -EAGAIN when they do not fit (reply
 * io.mime.Busy), -ESHUTDOWN after close. */
int mimed_queue_push(struct mimed_queue *q, struct mimed_qitem **items, size_t n);

/* Waits for a batch: blocks until an item is queued, then until max_batch items are queued
 * or the oldest has waited max_wait_us (at once after close, or when items of another key
 * are queued), and takes up to max_batch items that share the head's key, in queue order,
 * skipping others. Returns the count written to ret_items (room for max_batch), or 0 once
 * the queue is closed and empty. */
int mimed_queue_pop_batch(struct mimed_queue *q, struct mimed_qitem **ret_items, int room);
/* The same, calling idle(arg) once, without the lock, before it first blocks (after the
 * poll, or before waiting for a batch to fill); NULL: never. */
int mimed_queue_pop_batch_idle(struct mimed_queue *q, struct mimed_qitem **ret_items, int room,
                               void (*idle)(void *arg), void *arg);

/* Draining (a shutdown): from now on a batch is taken as soon as it has an item, without
 * waiting max_wait_us for more; pushes are still accepted. */
void mimed_queue_drain(struct mimed_queue *q);

/* Whether a popper is waiting for an item (polling or asleep), so that an item pushed now
 * is taken at once: a hint, read without the lock. */
bool mimed_queue_has_idle(struct mimed_queue *q);

/* Removes every item for which pred returns true and returns them as a list linked by next
 * (queue order). Used for expired deadlines, cancelled calls and shutdown. */
struct mimed_qitem *mimed_queue_remove_if(struct mimed_queue *q,
                                          bool (*pred)(struct mimed_qitem *item, void *arg),
                                          void *arg);

/* Refuses further pushes and wakes every waiting worker; queued items are still popped. */
void mimed_queue_close(struct mimed_queue *q);
size_t mimed_queue_len(struct mimed_queue *q);
