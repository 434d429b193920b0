/* SPDX-License-Identifier: MIT */
/* mimed -- the daemon's state: one struct mimed on main()'s stack; every libuv handle's
 * ->data points to it (connections point to their struct mimed_conn, which points to it).
 *
 * A call (one Varlink message) owns n_items requests; each request is one image for one
 * task and travels loop (checks) -> thread pool (base64, decode, preprocess) -> loop ->
 * queue -> worker -> done list -> loop. A "direct" call (an Infer with nothing but other
 * direct calls before it on its connection, see direct_ok() in server.c) has its reply
 * written by the worker that ran it, straight to the socket (through the connection's own
 * duplicate of the descriptor, so a socket the loop closes meanwhile cannot be mistaken for
 * a new one), right after the batch went to the done list; the loop does the batch's
 * bookkeeping as for any other, and once the worker is done with the socket
 * (direct_state) writes what the socket did not take, or closes the connection when the
 * write failed. Replies stay in call order: a worker writes a call's reply only when every
 * direct reply before it on the connection went out whole (direct_seq), else it leaves the
 * whole reply to the loop. A connection answers its
 * calls in order (Varlink has no call ids); a call holds a reference on its connection, so a
 * client that disconnects mid-request only marks its requests cancelled: the memory stays
 * until the last one comes back, and nothing is written to the closed socket.
 *
 * Ownership: struct mimed owns the runtime (bundle + engines), the queue, the workers, the
 * connections and the config. A runtime is reference-counted by the requests made for it,
 * so a reload can swap it while old requests finish on the old one.
 * Threads: everything here belongs to the loop thread except where a field says otherwise:
 * the queue (its own lock), the done list (done_lock), the requests' and direct calls'
 * result fields (the worker that popped them writes them, the loop reads them after the
 * done hand-off) and the runtime's engines and buffers (worker i uses engines[i] /
 * inputs[i] only). */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "daemon/config.h"
#include "daemon/log.h"
#include "daemon/policy.h"
#include "daemon/queue.h"
#include "daemon/stats.h"
#include "daemon/varlink.h"
#include "lib/bundle.h"
#include "lib/energy.h"
#include "lib/engine.h"
#include "lib/model.h"

#define MIMED_MAX_TOP_K  1000
#define MIMED_MAX_PHASES MIME_MAX_PHASES

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct mimed;

/* A loaded bundle and what serving it takes: model views, one engine per worker. */
struct mimed_runtime {
	int refs;     /* loop thread only: the daemon's + one per live request */
	uint64_t gen; /* queue key: one batch never mixes runtimes */
	char *bundle_path;
	dev_t dev;
	ino_t ino;
	struct timespec mtime;
	off_t size;
	int max_batch, threads; /* threads: resolved engine threads per worker */
	enum mimed_mode mode;
	struct mime_bundle *bundle;
	const struct mime_manifest *manifest;
	struct mime_model model;
	bool model_ready;
	long input_floats; /* C*H*W of the graph input */
	bool enabled[MIME_MAX_TASKS];
	int n_workers;
	int n_models;                        /* 1 (mime) or one per task (conventional) */
	struct mime_model *conv_models;      /* conventional: [n_tasks], single-task each */
	struct mime_task_params *conv_tasks; /* conventional: [n_tasks], their task params */
	/* [n_workers * n_models]; conventional: NULL for a disabled task */
	struct mime_engine **engines;
	float **inputs; /* [n_workers][max_batch * input_floats] */
	bool have_energy;
	/* [n_phases + 1]: the energy model's view of the network phase p serves at [p]; [0] the
	 * whole parent (an engine that never entered a phase) */
	struct mime_energy_net *energy_nets;
	struct mime_energy_hw energy_hw;
	/* Phases as clients number them, 1..n_phases: the bundle's phases when it lists any
	 * (has_phases; mime mode only), else one phase, the whole parent, entered by nothing. */
	int n_phases;
	bool has_phases;
	struct mime_phase *phases;            /* [n_phases]; has_phases only */
	uint8_t **phase_keep;                 /* [n_phases]: mask storage, freed with rt */
	struct mime_task_params *phase_tasks; /* [n_phases * n_tasks]; engines borrow them */
	/* [n_phases]: what one worker's engines take in the phase: the manifest's memory_bytes
	 * when given, else the plan bytes in that phase, measured at load on worker 0's
	 * engine(s); memory_measured says which. */
	int64_t *phase_memory_bytes;
	bool *phase_memory_measured;
	/* [n_phases]: the bundle pages of the task tensors the phase reads in place (F32),
	 * shared by the workers; 0 without phases or a file mapping. Counted at load for the
	 * enabled tasks (a reload that enables others leaves it low: the base takes it up) */
	int64_t *phase_mapped_bytes;
	int64_t parent_memory_bytes; /* has_phases: an engine's plan bytes before any phase */
	int *engine_phase; /* [n_workers]: the phase worker i's engine is in (0: the parent);
	                    * written by worker i only after load, __atomic (the loop reads it
	                    * for the memory policy) */
};

enum mimed_req_status {
	MIMED_REQ_QUEUED,
	MIMED_REQ_OK,
	MIMED_REQ_TIMEOUT,
	MIMED_REQ_CANCELLED,
	MIMED_REQ_FAILED,
	MIMED_REQ_SHUTDOWN,
	MIMED_REQ_NO_PHASE, /* its named phase could not be entered: io.mime.PhaseUnavailable */
};

struct mimed_call;

struct mimed_req {
	struct mimed_qitem q; /* first: the queue links requests through it */
	struct mimed_call *call;
	struct mimed_runtime *rt; /* a reference */
	int task;                 /* index in rt->manifest->tasks */
	int top_k;
	uint64_t accepted_ns, deadline_ns; /* deadline 0: none */
	float *input;                      /* input_floats, preprocessed */
	int want_phase; /* the phase it named (1..rt->n_phases; part of its queue key); 0: the
	                 * daemon's phase at the time its batch runs */
	int phase;      /* the phase it ran in (written by the worker) */
	int cancelled;  /* __atomic: set by the loop, read by workers */
	/* Written by the worker that ran it, read by the loop after the hand-off. */
	enum mimed_req_status status;
	int error; /* MIMED_REQ_FAILED: the engine's code */
	int label;
	int n_top;
	int *top_class; /* [top_k] */
	float *top_prob;
	int n_masked;
	int masked_layer[MIME_MAX_LAYERS];
	float sparsity[MIME_MAX_LAYERS];
	uint64_t batch_id;
	int batch_size;
	uint64_t latency_us; /* arrival to answer, when the worker wrote the reply (direct) */
	char *result;        /* the InferResult object's JSON text (not NUL-terminated), built
	                      * by the loop when it comes back */
	size_t result_len;
};

/* What one worker pass produced; handed to the loop through the done list. */
struct mimed_batch {
	struct mimed_batch *next; /* done list, guarded by done_lock */
	uint64_t id;
	int size, ran; /* requests popped, requests run */
	int worker;
	int error; /* the engine's code when forward failed */
	uint64_t forward_us;
	struct mimed_runtime *rt; /* borrowed through its requests */
	int phase;                /* the phase the batch ran in */
	int want_phase;           /* the phase its requests named; 0: the daemon's */
	/* The worker entered another phase before running this batch (set_phase); cause: NULL
	 * when the loop asked for it (the loop's phase_cause), else a static string. */
	bool switched;
	const char *switch_cause;
	int switch_from, switch_to, switch_error;
	uint64_t switch_us;
	char switch_msg[256];
	int n_masked;
	int masked_layer[MIME_MAX_LAYERS];
	float mean_sparsity[MIME_MAX_LAYERS];
	bool have_energy;
	/* Case-1, Case-2 and Case-3 (MIME): split, total and cycles; the mode and the savings */
	struct mime_energy_summary energy;
	/* Loop only: the tasks of the requests that ran, kept for the log line and the event
	 * (the replies free the requests) when those wait for later (d->log_head) */
	int n_ok;
	int task_of[MIMED_MAX_BATCH];
	struct mimed_req *reqs[];
};

#define MIMED_DIRECT_SENDING 1
#define MIMED_DIRECT_DONE    2

enum mimed_call_kind {
	MIMED_CALL_SIMPLE, /* answered at once */
	MIMED_CALL_INFER,
	MIMED_CALL_INFER_BATCH,
	MIMED_CALL_WATCH,
};

struct mimed_conn;

struct mimed_call {
	struct mimed_call *next;        /* the connection's FIFO */
	struct mimed_call *reload_next; /* d's Reload() calls waiting for a reload */
	struct mimed_conn *conn;        /* a reference */
	enum mimed_call_kind kind;
	bool oneway;
	bool done;   /* reply (or nothing, for oneway) ready to go out */
	char *reply; /* NUL-terminated message, reply_len bytes with the NUL */
	size_t reply_len;
	int n_items;
	int n_preparing;   /* items still being decoded in the thread pool */
	int n_pending;     /* items queued or running */
	const char *error; /* the first failure among the items */
	char error_desc[256];
	int error_phase; /* io.mime.PhaseUnavailable: the phase */
	/* Direct reply (see the top of this file). direct, seq, after_seq: set by the loop
	 * before the request is queued; the worker writes the reply only if the connection's
	 * direct_seq is after_seq then (every direct reply before it went out whole), and sets
	 * direct_seq to seq when this one does too. direct_state (__atomic): 0 the worker has
	 * not taken it (or not built a reply: the loop answers), MIMED_DIRECT_SENDING from
	 * before the batch is on the done list until the worker is done with the socket,
	 * MIMED_DIRECT_DONE after (release): then direct_msg, direct_len, direct_sent and
	 * direct_error are the loop's to read. await_next: the loop's list of calls whose
	 * batch came back while their worker was still writing (d->awaiting). */
	bool direct;
	int direct_state;
	uint64_t seq, after_seq;
	int direct_error;               /* errno of the failed write; 0 */
	char *direct_msg;               /* the reply it built: direct_len bytes with the NUL */
	size_t direct_len, direct_sent; /* direct_sent: bytes the socket took (0: not written) */
	struct mimed_call *await_next;
	struct mimed_req reqs[];
};

struct mimed_conn {
	uv_pipe_t pipe; /* pipe.data = this */
	struct mimed *d;
	int wfd; /* a duplicate of the socket's descriptor that workers write direct replies to
	          * (-1: none, no direct replies); set at accept, closed when c is freed, so it
	          * stays valid while a call may be written */
	uint64_t next_seq;   /* the last seq given to a direct call */
	uint64_t direct_seq; /* __atomic: seq of the last direct reply a worker wrote whole */
	struct mimed_conn *prev, *next; /* d->conns */
	int refs;                       /* the open handle + one per call */
	bool closing;
	bool reading;
	bool eof;        /* no more reading: the client half-closed, or a protocol error */
	bool processing; /* inside conn_process(): no re-entry */
	uid_t uid;
	gid_t gid;
	pid_t pid;
	bool admin;
	uint64_t last_active_ns;
	uint64_t partial_since_ns; /* an incomplete message has been waiting since; 0: none */
	/* What it read and has not handled: grows to the longest message (up to
	 * limits.max_message), freed once empty when over MIMED_FRAMER_KEEP bytes, and when the
	 * connection has been idle MIMED_CONN_IDLE_FREE_MS (mimed_server_tick). */
	struct mimed_framer framer;
	struct mimed_call *head, *tail; /* calls not yet answered, in order */
	int n_calls;
};

/* The loop reads every connection into one buffer of this size (struct mimed's rbuf), whose
 * bytes go to the connection's framer at once. */
#define MIMED_RBUF_BYTES        65536
#define MIMED_FRAMER_KEEP       65536
#define MIMED_CONN_IDLE_FREE_MS 1000

struct mimed_worker {
	struct mimed *d;
	int index;
	pthread_t thread;
	bool started;
	/* Held while the worker enters a phase and runs a batch, and by an idle switch
	 * (worker.c mimed_workers_idle_switch) while it switches the engine of a worker with
	 * nothing to run: one user of the worker's engines at a time. */
	pthread_mutex_t engine_lock;
	struct mimed_qitem *items[MIMED_MAX_BATCH];
	int tasks[MIMED_MAX_BATCH];
	/* Its engine is in a phase a request named, not the daemon's: the next batch that names
	 * none switches back (cause "restore"). */
	bool in_named_phase;
	int phase_before_named; /* the worker's phase when a request's own phase took it */
	/* It handed over batches without waking the loop (every reply in them went out whole):
	 * it wakes it before it idles (worker.c, notify_idle()). */
	bool notify_pending;
	/* The energy model's input of its batch: [energy_cap] (the largest batch's samples x
	 * modelled layers so far), malloc'ed by worker.c's batch_energy(); it was a 96 KiB array
	 * here, zeroed by calloc and so resident in every worker */
	struct mime_energy_sparsity *energy_buf;
	size_t energy_cap;
};

struct mimed_task_count {
	char name[MIME_NAME_MAX];
	uint64_t requests;
};

struct mimed {
	uv_loop_t loop;
	uv_pipe_t listener;
	bool listening;
	bool activated; /* the listener came from systemd (LISTEN_FDS) */
	uv_signal_t sig_hup, sig_term, sig_int, sig_usr1, sig_usr2;
	uv_async_t done_async; /* workers only call uv_async_send() on it */
	uv_timer_t tick;       /* deadlines, idle connections, watchdog, status */
	bool tick_slow;        /* the tick runs at its idle period (mimed_tick_fast) */
	uv_timer_t shutdown_timer;
	struct mimed_logger log;

	/* Settings: as loaded (file + command line), and the command line alone. */
	struct mimed_config cfg;
	const char *config_path; /* NULL: built-in defaults only */
	const char *cli_bundle, *cli_socket;
	char *socket_path; /* where we listen */
	bool socket_created;
	gid_t admin_gid;
	bool have_admin_gid;

	struct mimed_runtime *rt; /* current */
	uint64_t next_gen;
	bool reloading;                         /* a reload job is in the thread pool */
	bool reload_again;                      /* another was asked for meanwhile */
	struct mimed_call *reload_waiters_next; /* Reload() calls for the next reload job */

	struct mimed_queue queue;
	int n_workers;
	struct mimed_worker *workers;
	uint64_t next_batch_id; /* __atomic: workers number their batches */
	pthread_mutex_t done_lock;
	struct mimed_batch *done_head, *done_tail; /* guarded by done_lock */
	struct mimed_call *awaiting; /* direct calls back before their worker's write ended */
	/* Batches whose log line and event wait until the loop has handled what it read
	 * (on_read()), linked by next */
	struct mimed_batch *log_head, *log_tail;

	struct mimed_conn *conns;
	int n_conns;
	/* MIMED_RBUF_BYTES, malloc'ed at the first read: libuv reads into it (on_alloc()) and
	 * on_read() hands the bytes to the connection's framer before it returns, so one buffer
	 * serves every connection (it was 64 KiB inside each struct mimed_conn) */
	char *rbuf;
	int n_busy_calls;    /* calls accepted and not yet answered (watch calls excluded) */
	int n_idle_switches; /* idle switches in the thread pool (the drain waits for them) */
	int n_watchers;

	bool shutting_down;
	bool drained;
	bool forced_exit; /* the shutdown timeout passed with work still running */
	int exit_code;
	uint64_t start_ns;

	/* Budgets and phases (one phase until bundles have more). */
	uint64_t budget_memory_bytes; /* set by config or socket; 0: none */
	uint64_t memory_budget_now;   /* in force at the last policy evaluation (cgroup included) */
	/* The daemon's memory outside its engines' phases (RSS minus what the engines' phases
	 * are known to take), measured at every policy evaluation: a phase's predicted RSS is
	 * this plus its engines' phase memory. */
	uint64_t memory_base_now;
	/* The cgroup's limits at the last evaluation (0: none), to notice them change. */
	bool cgroup_seen;
	bool cgroup_stale; /* the last read failed: the limits above stay in force */
	uint64_t cgroup_max, cgroup_high;
	const char *budget_memory_source; /* "config" or "socket" (static strings) */
	double budget_latency_ms;
	int phase;               /* the phase asked for (pinned or chosen by the policy) */
	int desired_phase;       /* __atomic: the loop writes it, workers read it before a batch */
	const char *phase_cause; /* why the last change (static string) */
	bool pinned;
	struct mimed_policy policy; /* auto mode's hysteresis */
	uint64_t last_policy_ns;
	bool latency_below; /* the last evaluation found no phase fitting: warned once */
	bool memory_below;  /* the same for the memory budget alone */
	/* memory pressure as a budget (budgets.memory_pressure; server.c pressure_cap) */
	bool pressure_high;
	uint64_t last_pressure_step_ns;
	/* median measured p95 / manifest latency_ms over the phases measured lately (0: none):
	 * what predicts the p95 of a phase without recent answers */
	double latency_correction;

	/* Counters. */
	struct mimed_latency latency;                         /* every request */
	struct mimed_latency phase_latency[MIMED_MAX_PHASES]; /* by phase; made on first use */
	uint64_t n_requests, n_busy, n_timeouts, n_errors, n_batches;
	struct mime_energy_case_totals energy_totals[3]; /* summed over batches, per case */
	uint64_t energy_batches, energy_pipelined;       /* batches modelled, of them pipelined */
	int n_task_counts;
	struct mimed_task_count task_counts[MIME_MAX_TASKS * 2];

	/* systemd (sdnotify.h) */
	bool notify;        /* $NOTIFY_SOCKET is set */
	bool notify_failed; /* a notification failed: logged once */
	uint64_t watchdog_usec;
	uint64_t last_watchdog_ns;
	uint64_t last_status_ns;
};

/* runtime.c: loads path for cfg with one engine per worker; the caller sets gen. Touches
 * nothing shared, so a reload runs it in the thread pool. */
int mimed_runtime_load(const struct mimed_config *cfg, const char *path, int n_workers,
                       struct mimed_runtime **ret_rt, struct mime_errinfo *ei);
void mimed_runtime_unref(struct mimed_runtime *rt);
/* Drops the pages of the bundle's mapping that no forward in `phase` reads (see runtime.c):
 * the enabled tasks' tensors are kept, or every task's with every_task (a worker's call:
 * a reload may rewrite rt->enabled on the loop thread meanwhile). At load for the top
 * phase, and by a worker after the policy stepped it down. Other workers may read the
 * dropped pages meanwhile: they are read back from the file. Advice only; any thread. */
void mimed_runtime_drop_pages(struct mimed_runtime *rt, int phase, bool every_task);
/* True when path names another file than rt was loaded from, or the file changed. */
bool mimed_runtime_stale(const struct mimed_runtime *rt, const char *path,
                         const struct mimed_config *cfg);
/* The engine worker w runs task's samples on, and the task index to give it. */
struct mime_engine *mimed_runtime_engine(const struct mimed_runtime *rt, int w, int task,
                                         int *ret_engine_task);
/* The queue key of a request of task naming phase (0: none): one batch never mixes
 * runtimes, nor named phases, nor tasks when each task has its own weights. */
uint64_t mimed_runtime_key(const struct mimed_runtime *rt, int task, int phase);

/* worker.c */
int mimed_workers_start(struct mimed *d, int n);
void mimed_workers_stop(struct mimed *d); /* closes the queue and joins */
/* An Infer for task was accepted (loop thread): wakes the engines that may run it. */
void mimed_workers_prepare(struct mimed *d, const struct mimed_runtime *rt, int task);
/* The loop changed the daemon's phase: each worker whose engine is in another phase and
 * that runs no batch now is switched in libuv's thread pool (a busy one switches before its
 * next batch, as always), so that the memory of an idle worker follows the phase too. Loop
 * thread; logs each switch (cause idle) when it is done. */
void mimed_workers_idle_switch(struct mimed *d);

/* server.c */
/* Appends req's InferResult object ({"task", "label", ..., "energy"}) to t; b is the batch it
 * ran in. Reads only req, b and the runtime: workers call it too. */
void mimed_result_text(struct mimed_text *t, const struct mimed_req *req,
                       const struct mimed_batch *b, uint64_t latency_us);
int mimed_server_listen(struct mimed *d);
void mimed_server_on_done(uv_async_t *h);
void mimed_server_tick(struct mimed *d);
/* The loop got work (a connection, bytes): the tick back at its busy period if it had slowed
 * down (main.c; loop thread). */
void mimed_tick_fast(struct mimed *d);
void mimed_server_shutdown(struct mimed *d); /* stop accepting, drain, then stop the loop */
void mimed_server_close_all(struct mimed *d);
void mimed_server_emit(struct mimed *d, const char *kind, json_t *data); /* takes data */
void mimed_server_check_drained(struct mimed *d);
/* Answers a Reload() call: err NULL for success. */
void mimed_server_reload_reply(struct mimed_call *call, const char *error, const char *err);
/* Logs (a budget below the lowest phase: a warning), emits a budget event and lets the
 * policy react at once (a step down is immediate). */
void mimed_budget_changed(struct mimed *d, const char *source);
/* Asks for phase `to` (clamped to the runtime's 1..n_phases) with pinned and cause; workers
 * switch before their next batch. Logs and emits a phase event. */
void mimed_phase_set(struct mimed *d, int to, bool pinned, const char *cause);
/* Auto mode: one evaluation of the policy (see daemon/policy.h); no-op when pinned. */
void mimed_policy_evaluate(struct mimed *d, const char *cause);

/* main.c: reloads the configuration and, when it changed, the bundle, in the thread pool;
 * commits on the loop thread or keeps the old state. call (a Reload() call; NULL for
 * SIGHUP) is answered through mimed_server_reload_reply() when it is done. A reload asked
 * for while one runs follows it. */
void mimed_reload(struct mimed *d, struct mimed_call *call);
void mimed_notify(struct mimed *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
