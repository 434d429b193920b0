// SPDX-License-Identifier: MIT
/* mimed -- mime's inference daemon: main(), the command line, signals, reload, systemd.
 *
 *   mimed [--config FILE] [--bundle FILE] [--socket PATH] [--foreground]
 *
 * Ownership: struct mimed lives on main()'s stack and owns everything (see mimed.h).
 * Threads: main() is the loop thread; workers start after the bundle is loaded. */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/mimed.h"
#include "daemon/sdnotify.h"

/* The tick: every TICK_MS while anything is queued, running or half-read (deadlines, the
 * batches a busy worker leaves for the loop, message timeouts), else every IDLE_TICK_MS (at
 * most a quarter of the watchdog interval): an idle daemon wakes 10 times a second instead
 * of 100 (measured: 3.5 ms of CPU per second idle at 10 ms). The first byte or connection
 * brings the busy period back (mimed_tick_fast). */
#define TICK_MS      10
#define IDLE_TICK_MS 100

void mimed_notify(struct mimed *d, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int r;

	if (!d->notify)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	r = mimed_sd_notify(buf);
	if (r < 0 && !d->notify_failed) { /* said once: the watchdog would repeat it */
		d->notify_failed = true;
		mimed_log(d, LOG_WARNING, "NOTIFY_SOCKET: %s", strerror(-r));
	}
}

/* OpenBLAS's pthreads build starts cores - 1 server threads when it is loaded, before main();
 * with one BLAS thread it never hands them work, and each holds its stack pages, its copy of
 * OpenBLAS's static TLS and a buffer (~70 kB of RSS). blas_thread_shutdown_ (what OpenBLAS
 * itself calls before a fork) joins them; OpenBLAS would start them again on its own if a
 * call ever ran multi-threaded. A weak reference: other BLAS builds (the OpenMP one) do not
 * have it, and then nothing happens (dlsym would do the same, but its code in libc costs
 * more RSS than the threads). Before any other thread calls BLAS. */
extern int blas_thread_shutdown_(void) __attribute__((weak));

static void blas_stop_idle_threads(void)
{
	if (blas_thread_shutdown_)
		blas_thread_shutdown_();
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: mimed [--config FILE] [--bundle FILE] [--socket PATH] [--foreground]\n"
	        "\n"
	        "Serves the tasks of a mime bundle over Varlink (interface io.mime) on a Unix\n"
	        "socket. Flags override the configuration file.\n"
	        "\n"
	        "  -c, --config FILE   read FILE (YAML; see conf/mimed.yaml); default: built-in\n"
	        "                      settings only\n"
	        "  -b, --bundle FILE   the bundle to serve (*.mime)\n"
	        "  -s, --socket PATH   listen on PATH; default $RUNTIME_DIRECTORY/mimed.sock,\n"
	        "                      /run/mime/mimed.sock as root, else\n"
	        "                      $XDG_RUNTIME_DIR/mime/mimed.sock\n"
	        "  -f, --foreground    accepted for compatibility: mimed never forks\n"
	        "  -h, --help          this text\n"
	        "\n"
	        "Signals: SIGHUP reloads the configuration (and the bundle if it changed);\n"
	        "SIGTERM/SIGINT drain and exit 0.\n"
	        "Exit status: 0 after a clean shutdown, 1 on a runtime failure, 2 on bad usage\n"
	        "or configuration.\n");
}

/* The default socket path, malloc'ed; NULL when no runtime directory is known. */
static char *default_socket(void)
{
	const char *dir = getenv("RUNTIME_DIRECTORY");
	char *p = NULL;

	if (dir && *dir) {
		char *colon = strchr(dir, ':'); /* several directories: take the first */

		if (asprintf(&p, "%.*s/mimed.sock", colon ? (int)(colon - dir) : (int)strlen(dir),
		             dir) < 0)
			return NULL;
		return p;
	}
	if (geteuid() == 0)
		return strdup("/run/mime/mimed.sock");
	dir = getenv("XDG_RUNTIME_DIR");
	if (dir && *dir && asprintf(&p, "%s/mime/mimed.sock", dir) >= 0)
		return p;
	return NULL;
}

/* Whether this mimed runs from a build inside its source tree (not an installed copy). */
static bool in_source_tree(void)
{
	static const char root[] = MIMED_SOURCE_ROOT "/";
	char exe[4096];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n <= 0)
		return false;
	exe[n] = 0;
	return strncmp(exe, root, sizeof(root) - 1) == 0;
}

/* The bundle to load: the command line, the config, else the shipped one: an installed
 * mimed looks in $datadir/mime/ first (it may run from /, and a source tree left on the
 * machine is not what it was installed with), one run from its build looks in the working
 * directory and the source tree first. When none is readable, the first candidate (its
 * load error names it). */
static const char *bundle_path(const struct mimed *d, const struct mimed_config *cfg)
{
	static const char *const build_order[] = {
		"models/demo.mime",
		"models/fmnist-parent.mime",
		MIMED_SOURCE_ROOT "/models/demo.mime",
		MIMED_SOURCE_ROOT "/models/fmnist-parent.mime",
		MIMED_DATADIR "/mime/demo.mime",
		MIMED_DATADIR "/mime/fmnist-parent.mime",
	};
	static const char *const installed_order[] = {
		MIMED_DATADIR "/mime/demo.mime",
		MIMED_DATADIR "/mime/fmnist-parent.mime",
		"models/demo.mime",
		"models/fmnist-parent.mime",
		MIMED_SOURCE_ROOT "/models/demo.mime",
		MIMED_SOURCE_ROOT "/models/fmnist-parent.mime",
	};
	const char *const *order = in_source_tree() ? build_order : installed_order;

	_Static_assert(sizeof(build_order) == sizeof(installed_order), "the same candidates");

	if (d->cli_bundle)
		return d->cli_bundle;
	if (cfg->bundle)
		return cfg->bundle;
	for (size_t i = 0; i < sizeof(build_order) / sizeof(build_order[0]); i++)
		if (access(order[i], R_OK) == 0)
			return order[i];
	return order[0];
}

/* Defaults, then the file, then the command line, into *ret_cfg. */
static int load_config(struct mimed *d, struct mimed_config *ret_cfg, char *err, size_t err_len)
{
	struct mimed_config c;
	int r;

	mimed_config_defaults(&c);
	if (d->config_path) {
		r = mimed_config_load(&c, d->config_path, err, err_len);
		if (r < 0) {
			mimed_config_fini(&c);
			return r;
		}
	}
	if (d->cli_socket) {
		free(c.socket);
		c.socket = strdup(d->cli_socket);
		if (!c.socket) {
			mimed_config_fini(&c);
			return -ENOMEM;
		}
	}
	*ret_cfg = c;
	return 0;
}

/* A configuration error about a value the file set on line: "FILE:LINE: " and the message
 * into err (the message alone when no file set it). */
static void config_error(const struct mimed_config *cfg, unsigned line, char *err, size_t err_len,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void config_error(const struct mimed_config *cfg, unsigned line, char *err, size_t err_len,
                         const char *fmt, ...)
{
	int k = 0;
	va_list ap;

	if (cfg->file && line)
		k = snprintf(err, err_len, "%s:%u: ", cfg->file, line);
	if (k < 0 || (size_t)k >= err_len)
		return;
	va_start(ap, fmt);
	vsnprintf(err + k, err_len - (size_t)k, fmt, ap);
	va_end(ap);
}

static int resolve_admin_group(const struct mimed_config *cfg, gid_t *ret_gid, bool *ret_have,
                               char *err, size_t err_len)
{
	unsigned line = mimed_config_line(cfg, "access.admin_group");
	struct group gr, *g = NULL;
	char buf[4096];
	int r;

	*ret_have = false;
	if (!cfg->admin_group)
		return 0;
	r = getgrnam_r(cfg->admin_group, &gr, buf, sizeof(buf), &g);
	if (r != 0) {
		config_error(cfg, line, err, err_len, "access.admin_group: looking up '%s': %s",
		             cfg->admin_group, strerror(r));
		return -r;
	}
	if (!g) {
		config_error(cfg, line, err, err_len, "access.admin_group: no group '%s'",
		             cfg->admin_group);
		return -ENOENT;
	}
	*ret_gid = g->gr_gid;
	*ret_have = true;
	return 0;
}

/* The first of cfg's tasks that m (the manifest of the bundle at path) lacks, said in err as
 * "FILE:LINE: tasks: 'x' is not in bundle 'path'": MIME_ENOTASK; 0 when m has them all. */
static int check_tasks(const struct mimed_config *cfg, const struct mime_manifest *m,
                       const char *path, char *err, size_t err_len)
{
	for (int i = 0; i < cfg->n_tasks; i++) {
		if (mime_manifest_task(m, cfg->tasks[i]) < 0) {
			config_error(cfg, cfg->task_lines[i], err, err_len,
			             "tasks: '%s' is not in bundle '%s'", cfg->tasks[i], path);
			return MIME_ENOTASK;
		}
	}
	return 0;
}

/* mimed_runtime_load(), its failure said in err: "bundle 'path': why", or for a task the
 * bundle lacks (MIME_ENOTASK, an error of the configuration) what check_tasks() says. */
static int load_runtime(const struct mimed_config *cfg, const char *path, int n_workers,
                        struct mimed_runtime **ret_rt, char *err, size_t err_len)
{
	struct mime_errinfo ei = {0};
	struct mime_bundle *b;
	int r;

	r = mimed_runtime_load(cfg, path, n_workers, ret_rt, &ei);
	if (r == 0)
		return 0;
	snprintf(err, err_len, "bundle '%s': %s", path, ei.msg[0] ? ei.msg : mime_strerror(r));
	/* The runtime names the task but not the line: look for it again (failures only). */
	if (r == MIME_ENOTASK && mime_bundle_open(path, &b, NULL) == 0) {
		check_tasks(cfg, mime_bundle_manifest(b), path, err, err_len);
		mime_bundle_close(b);
	}
	return r;
}

/* A reload: prepared in the thread pool (config file, group, bundle and engines: all the
 * slow parts), committed on the loop thread. Only one runs at a time, so the pool side may
 * read d's settings and runtime, which change only at a commit. */
struct reload_job {
	uv_work_t work;
	struct mimed *d;
	struct mimed_config cfg;
	bool have_cfg;
	const char *path; /* the bundle: in cfg, the command line or a static default */
	gid_t gid;
	bool have_gid;
	int workers_asked; /* workers.count in the file, when it differs from the running count */
	struct mimed_runtime *rt; /* a new runtime, when the bundle changed */
	int r;
	char err[512];
	struct mimed_call *waiters;
};

static void reload_work(uv_work_t *w)
{
	struct reload_job *job = container_of(w, struct reload_job, work);
	struct mimed *d = job->d;
	struct mimed_config *c = &job->cfg;

	job->r = load_config(d, c, job->err, sizeof(job->err));
	if (job->r < 0)
		return;
	job->have_cfg = true;
	job->r = resolve_admin_group(c, &job->gid, &job->have_gid, job->err, sizeof(job->err));
	if (job->r < 0)
		return;
	if (c->workers != d->n_workers) {
		job->workers_asked = c->workers;
		c->workers = d->n_workers;
	}
	job->path = bundle_path(d, c);
	if (mimed_runtime_stale(d->rt, job->path, c))
		job->r = load_runtime(c, job->path, d->n_workers, &job->rt, job->err,
		                      sizeof(job->err));
	else
		job->r = check_tasks(c, d->rt->manifest, job->path, job->err, sizeof(job->err));
}

/* socket_mode changed in the file: applied to the socket mimed created (on failure c keeps
 * the running mode, so that the next reload tries again). A socket from systemd keeps the
 * mode its socket unit gave it. */
static void reload_socket_mode(struct mimed *d, struct mimed_config *c)
{
	unsigned from = d->cfg.socket_mode, to = c->socket_mode;

	if (to == from)
		return;
	if (d->activated) {
		mimed_log(d, LOG_WARNING,
		          "reload: socket_mode %04o -> %04o not applied: the socket is systemd's, "
		          "its socket unit's SocketMode= governs it",
		          from, to);
	} else if (d->socket_created) {
		if (chmod(d->socket_path, to) < 0) {
			mimed_log(d, LOG_WARNING,
			          "reload: socket_mode %04o -> %04o: chmod '%s': %s, keeping %04o",
			          from, to, d->socket_path, strerror(errno), from);
			c->socket_mode = from;
		} else {
			mimed_log(d, LOG_NOTICE, "reload: socket_mode %04o -> %04o on '%s'", from,
			          to, d->socket_path);
		}
	}
}

/* Takes job's settings and runtime into d; nothing here can fail. */
static void reload_commit(struct mimed *d, struct reload_job *job)
{
	struct mimed_config *c = &job->cfg;
	struct mimed_runtime *rt = job->rt;
	bool budget_changed;

	if (job->workers_asked)
		mimed_log(d, LOG_WARNING,
		          "reload: workers.count %d -> %d needs a restart, keeping %d",
		          d->n_workers, job->workers_asked, d->n_workers);
	if ((c->socket || d->cfg.socket) &&
	    (!c->socket || !d->cfg.socket || strcmp(c->socket, d->cfg.socket) != 0))
		mimed_log(d, LOG_WARNING, "reload: a new socket path needs a restart, keeping '%s'",
		          d->socket_path);
	reload_socket_mode(d, c);
	if (rt) {
		rt->gen = ++d->next_gen;
		mimed_log(d, LOG_NOTICE, "reload: serving bundle '%s' (%d tasks)", rt->bundle_path,
		          rt->manifest->n_tasks);
		mimed_runtime_unref(d->rt);
		d->rt = rt;
		job->rt = NULL;
		/* The phases are the new bundle's: the old per-phase latencies say nothing of
		 * them; a pin stays where the bundle still has it, auto starts at the top. */
		for (int i = 0; i < MIMED_MAX_PHASES; i++)
			d->phase_latency[i].n = d->phase_latency[i].next = 0;
		{
			int to = d->pinned && d->phase <= rt->n_phases ? d->phase : rt->n_phases;

			if (to != d->phase)
				mimed_phase_set(d, to, d->pinned, "reload");
		}
	} else {
		/* Same bundle, maybe other tasks enabled (checked in reload_work). */
		for (int i = 0; i < d->rt->manifest->n_tasks; i++)
			d->rt->enabled[i] = c->n_tasks == 0;
		for (int i = 0; i < c->n_tasks; i++)
			d->rt->enabled[mime_manifest_task(d->rt->manifest, c->tasks[i])] = true;
	}
	/* Budgets set through the socket stay unless the file changed that budget. */
	budget_changed = c->memory_budget_bytes != d->cfg.memory_budget_bytes ||
	                 c->latency_budget_ms != d->cfg.latency_budget_ms ||
	                 c->memory_pressure_pct != d->cfg.memory_pressure_pct;
	if (c->memory_budget_bytes != d->cfg.memory_budget_bytes) {
		d->budget_memory_bytes = c->memory_budget_bytes;
		d->budget_memory_source = "config";
	}
	if (c->latency_budget_ms != d->cfg.latency_budget_ms)
		d->budget_latency_ms = c->latency_budget_ms;
	free(c->socket);
	c->socket = d->cfg.socket; /* the listening socket stays */
	d->cfg.socket = NULL;
	mimed_config_fini(&d->cfg);
	d->cfg = *c;
	job->have_cfg = false;
	d->admin_gid = job->gid;
	d->have_admin_gid = job->have_gid;
	d->log.max = d->cfg.log_level;
	mimed_queue_configure(&d->queue, d->cfg.queue_capacity, d->cfg.max_batch,
	                      d->cfg.max_wait_us);
	for (struct mimed_conn *conn = d->conns; conn; conn = conn->next)
		conn->framer.max_bytes = d->cfg.max_message_bytes;
	mimed_log(d, LOG_NOTICE, "reloaded %s", d->config_path ? d->config_path : "(defaults)");
	mimed_server_emit(d, "reload", json_pack("{s:s}", "bundle", d->rt->bundle_path));
	if (budget_changed)
		mimed_budget_changed(d, "config");
}

static void reload_start(struct mimed *d);

static void reload_done(uv_work_t *w, int status)
{
	struct reload_job *job = container_of(w, struct reload_job, work);
	struct mimed *d = job->d;
	const char *error = NULL;
	struct mimed_call *waiters = job->waiters;

	if (d->shutting_down) {
		error = MIMED_ERR_SHUTTING_DOWN;
		snprintf(job->err, sizeof(job->err), "shutting down");
	} else if (job->r < 0) {
		error = "io.mime.ReloadFailed";
		mimed_log(d, LOG_ERR, "reload failed, keeping the old state: %s", job->err);
		mimed_notify(d, "READY=1\nSTATUS=reload failed, serving as before");
	} else {
		reload_commit(d, job);
		mimed_notify(d, "READY=1\nSTATUS=serving %d tasks, phase %d",
		             d->rt->manifest->n_tasks, d->phase);
	}
	if (job->have_cfg)
		mimed_config_fini(&job->cfg);
	mimed_runtime_unref(job->rt);
	d->reloading = false;
	if (d->reload_again && !d->shutting_down) {
		d->reload_again = false;
		reload_start(d);
	}
	while (waiters) {
		struct mimed_call *call = waiters;

		waiters = call->reload_next;
		mimed_server_reload_reply(call, error, error ? job->err : NULL);
	}
	free(job);
}

static void reload_start(struct mimed *d)
{
	struct reload_job *job = calloc(1, sizeof(*job));

	if (!job) {
		struct mimed_call *waiters = d->reload_waiters_next;

		mimed_log(d, LOG_ERR, "reload: out of memory, keeping the old state");
		d->reload_waiters_next = NULL;
		while (waiters) {
			struct mimed_call *call = waiters;

			waiters = call->reload_next;
			mimed_server_reload_reply(call, "io.mime.ReloadFailed", "out of memory");
		}
		return;
	}
	job->d = d;
	job->waiters = d->reload_waiters_next;
	d->reload_waiters_next = NULL;
	d->reloading = true;
	mimed_notify(d, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
	             (unsigned long long)(mimed_now_ns() / 1000));
	if (uv_queue_work(&d->loop, &job->work, reload_work, reload_done) < 0) {
		reload_work(&job->work);
		reload_done(&job->work, 0);
	}
}

void mimed_reload(struct mimed *d, struct mimed_call *call)
{
	if (call) {
		call->reload_next = d->reload_waiters_next;
		d->reload_waiters_next = call;
	}
	if (d->reloading)
		d->reload_again = true; /* after the running one, with what it read then */
	else
		reload_start(d);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct mimed *d = h->data;

	switch (signum) {
	case SIGHUP:
		if (d->shutting_down)
			return;
		mimed_log(d, LOG_NOTICE, "SIGHUP: reloading");
		mimed_reload(d, NULL);
		return;
	case SIGTERM:
	case SIGINT:
		mimed_log(d, LOG_NOTICE, "SIG%s: shutting down", sigabbrev_np(signum));
		mimed_server_shutdown(d);
		return;
	case SIGUSR1:
	case SIGUSR2: {
		/* One step down / up between the bundle's phases, as a pin; SetPhase "auto"
		 * unpins. The workers switch before their next batch (phase_switch events). */
		int n_phases = d->rt->n_phases, from = d->phase;
		int to = signum == SIGUSR1 ? from - 1 : from + 1;

		to = to < 1 ? 1 : to > n_phases ? n_phases : to;
		if (to == from)
			mimed_log(d, LOG_NOTICE, "%s: no phase further that way than %d",
			          signum == SIGUSR1 ? "SIGUSR1" : "SIGUSR2", from);
		mimed_phase_set(d, to, true, signum == SIGUSR1 ? "SIGUSR1" : "SIGUSR2");
		return;
	}
	}
}

/* Hands the heap's free pages back to the system once the daemon has been quiet for
 * TRIM_QUIET_NS after some activity: a burst leaves freed connection state (message
 * buffers; until 1524ec4 a 64 KiB read buffer in each), decoded images and replies in the
 * heap, which glibc returns only from its top (measured after 300 requests over 8
 * connections: ~0.4 MiB before 1524ec4). Never while requests come in (the pages
 * would be faulted in again at once); one malloc_trim per quiet period. Loop thread only,
 * so the state can be static (one daemon per process). */
#define TRIM_QUIET_NS 1000000000u

static void trim_when_quiet(struct mimed *d, uint64_t now)
{
	static uint64_t seen, quiet_since_ns;
	static bool dirty;
	uint64_t activity = d->n_requests + d->n_batches + (uint64_t)d->n_conns + d->next_gen;

	if (activity != seen) {
		seen = activity;
		quiet_since_ns = now;
		dirty = true;
	} else if (dirty && now - quiet_since_ns >= TRIM_QUIET_NS &&
	           mimed_queue_len(&d->queue) == 0) {
		dirty = false;
		malloc_trim(0);
	}
}

static void on_tick(uv_timer_t *t);

/* Nothing that needs the busy tick: no call queued or unanswered (n_busy_calls counts a
 * batch until the loop has taken it back from the worker) and no message half read. */
static bool loop_idle(struct mimed *d)
{
	if (d->n_busy_calls > 0 || mimed_queue_len(&d->queue) > 0 || d->shutting_down)
		return false;
	for (const struct mimed_conn *c = d->conns; c; c = c->next)
		if (c->partial_since_ns)
			return false;
	return true;
}

static uint64_t idle_tick_ms(const struct mimed *d)
{
	uint64_t ms = IDLE_TICK_MS;

	if (d->watchdog_usec && d->watchdog_usec / 4000 < ms)
		ms = d->watchdog_usec / 4000;
	return ms < TICK_MS ? TICK_MS : ms;
}

void mimed_tick_fast(struct mimed *d)
{
	if (!d->tick_slow)
		return;
	d->tick_slow = false;
	uv_timer_start(&d->tick, on_tick, TICK_MS, TICK_MS);
}

static void on_tick(uv_timer_t *t)
{
	struct mimed *d = t->data;
	uint64_t now = mimed_now_ns();

	mimed_server_tick(d);
	trim_when_quiet(d, now);
	if (d->watchdog_usec && now - d->last_watchdog_ns >= d->watchdog_usec * 500u) {
		d->last_watchdog_ns = now;
		mimed_notify(d, "WATCHDOG=1");
	}
	if (d->notify && now - d->last_status_ns >= 5000000000u) {
		d->last_status_ns = now;
		mimed_notify(d,
		             "STATUS=serving %d tasks, phase %d (%s), queue %zu, %d connections, "
		             "%llu requests",
		             d->rt->manifest->n_tasks, d->phase, d->pinned ? "pinned" : "auto",
		             mimed_queue_len(&d->queue), d->n_conns,
		             (unsigned long long)d->n_requests);
	}
	if (!d->tick_slow && loop_idle(d)) {
		d->tick_slow = true;
		uv_timer_set_repeat(t, idle_tick_ms(d));
	} else if (d->tick_slow && !loop_idle(d)) {
		mimed_tick_fast(d); /* e.g. a shutdown that began between requests */
	}
}

/* A forced exit (the shutdown timeout passed with a batch still running): the replies
 * already made (io.mime.ShuttingDown for what was queued) may sit in libuv's write queues,
 * or wait, in call order, behind a call of the running batch on the same connection. Give
 * the loop up to a second more to finish that batch and write them all. The workers are not
 * joined: the process exits after this. */
static void flush_replies(struct mimed *d)
{
	uint64_t end = mimed_now_ns() + 1000000000u;

	while (mimed_now_ns() < end) {
		size_t queued = 0;

		for (struct mimed_conn *c = d->conns; c; c = c->next)
			queued += uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe);
		/* once drained, the connections leave d->conns while libuv still writes their
		 * last replies: wait for the loop to close them all */
		if (d->n_busy_calls == 0 && (d->drained ? !uv_loop_alive(&d->loop) : !queued))
			return;
		uv_run(&d->loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
}

static void close_handle(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static int setup_signal(struct mimed *d, uv_signal_t *s, int signum)
{
	int r = uv_signal_init(&d->loop, s);

	if (r < 0)
		return r;
	s->data = d;
	return uv_signal_start(s, on_signal, signum);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'}, {"bundle", required_argument, NULL, 'b'},
		{"socket", required_argument, NULL, 's'}, {"foreground", no_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},         {0},
	};
	struct mimed d = {0};
	char err[512];
	const char *path;
	int opt, r, blas_threads;

	while ((opt = getopt_long(argc, argv, "c:b:s:fh", opts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			d.config_path = optarg;
			break;
		case 'b':
			d.cli_bundle = optarg;
			break;
		case 's':
			d.cli_socket = optarg;
			break;
		case 'f':
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "mimed: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	mimed_logger_init(&d.log, LOG_INFO);
	d.start_ns = mimed_now_ns();
	d.phase = 1;
	if (load_config(&d, &d.cfg, err, sizeof(err)) < 0 ||
	    resolve_admin_group(&d.cfg, &d.admin_gid, &d.have_admin_gid, err, sizeof(err)) < 0) {
		mimed_log(&d, LOG_ERR, "%s", err);
		return 2;
	}
	d.log.max = d.cfg.log_level;
	d.budget_memory_bytes = d.cfg.memory_budget_bytes;
	d.budget_memory_source = "config";
	d.budget_latency_ms = d.cfg.latency_budget_ms;
	d.socket_path = d.cfg.socket ? strdup(d.cfg.socket) : default_socket();
	if (!d.socket_path) {
		mimed_log(&d, LOG_ERR,
		          "no socket path: pass --socket, set 'socket' in the "
		          "configuration, $RUNTIME_DIRECTORY or $XDG_RUNTIME_DIR");
		r = 2;
		goto out_cfg;
	}
	d.notify = getenv("NOTIFY_SOCKET") != NULL;
	r = mimed_sd_watchdog_enabled(&d.watchdog_usec);
	if (r < 0)
		mimed_log(&d, LOG_WARNING, "WATCHDOG_USEC / WATCHDOG_PID: %s, no watchdog",
		          strerror(-r));
	if (r <= 0)
		d.watchdog_usec = 0;
	signal(SIGPIPE, SIG_IGN);
	/* Images are decoded in libuv's thread pool, off the loop thread; two threads are
	 * plenty next to the workers. */
	setenv("UV_THREADPOOL_SIZE", "2", 0);
	/* Workers x engine threads x BLAS threads share the cores; workers.threads 0 is 1.
	 * blas_threads 0 is 1 too: engines with threads of their own want OpenBLAS
	 * single-threaded, and for one single-threaded engine OpenBLAS's threads made no
	 * forward of the demo bundle faster but spun ~0.3 ms of CPU per request after each
	 * (bench/RESULTS.md, "Daemon benchmark: reading"). */
	blas_threads = d.cfg.blas_threads > 0 ? d.cfg.blas_threads : 1;
	openblas_set_num_threads(blas_threads);
	if (blas_threads == 1)
		blas_stop_idle_threads();

	d.n_workers = d.cfg.workers;
	path = bundle_path(&d, &d.cfg);
	r = load_runtime(&d.cfg, path, d.n_workers, &d.rt, err, sizeof(err));
	if (r == 0) {
		d.rt->gen = ++d.next_gen;
		/* Auto mode starts at the highest phase; the first tick's policy evaluation
		 * steps down at once if a budget says so. */
		d.phase = d.rt->n_phases;
		d.phase_cause = "start";
		d.desired_phase = d.phase;
		mimed_policy_init(&d.policy, d.phase);
	}
	if (r < 0) {
		mimed_log(&d, LOG_ERR, "%s%s", err,
		          r == MIME_ENOTASK || d.cli_bundle || d.cfg.bundle
		                  ? ""
		                  : " (no bundle given: pass --bundle FILE or set 'bundle' in the "
		                    "configuration)");
		r = r == MIME_ENOTASK ? 2 : 1; /* a task the bundle lacks: the configuration's */
		goto out_socket;
	}
	r = mimed_latency_init(&d.latency, 8192);
	if (r < 0)
		goto out_rt;
	r = mimed_queue_init(&d.queue, d.cfg.queue_capacity, d.cfg.max_batch, d.cfg.max_wait_us);
	if (r < 0)
		goto out_latency;
	pthread_mutex_init(&d.done_lock, NULL);
	r = uv_loop_init(&d.loop);
	if (r < 0)
		goto out_queue;
	uv_async_init(&d.loop, &d.done_async, mimed_server_on_done);
	d.done_async.data = &d;
	uv_timer_init(&d.loop, &d.tick);
	d.tick.data = &d;
	uv_timer_init(&d.loop, &d.shutdown_timer);
	d.shutdown_timer.data = &d;
	if (setup_signal(&d, &d.sig_hup, SIGHUP) < 0 ||
	    setup_signal(&d, &d.sig_term, SIGTERM) < 0 ||
	    setup_signal(&d, &d.sig_int, SIGINT) < 0 ||
	    setup_signal(&d, &d.sig_usr1, SIGUSR1) < 0 ||
	    setup_signal(&d, &d.sig_usr2, SIGUSR2) < 0) {
		mimed_log(&d, LOG_ERR, "signal handlers: %s", strerror(errno));
		r = 1;
		goto out_loop;
	}
	r = mimed_workers_start(&d, d.n_workers);
	if (r < 0) {
		mimed_log(&d, LOG_ERR, "starting %d workers: %s", d.n_workers, strerror(-r));
		r = 1;
		goto out_loop;
	}
	r = mimed_server_listen(&d);
	if (r < 0) {
		r = 1;
		goto out_workers;
	}
	uv_timer_start(&d.tick, on_tick, TICK_MS, TICK_MS);
	mimed_log(&d, LOG_NOTICE,
	          "serving bundle '%s' (%d tasks) on %s: workers=%d threads=%d blas_threads=%d "
	          "max_batch=%d max_wait_us=%llu queue=%zu",
	          path, d.rt->manifest->n_tasks,
	          d.activated ? "the socket from systemd" : d.socket_path, d.n_workers,
	          d.rt->threads, blas_threads, d.cfg.max_batch,
	          (unsigned long long)d.cfg.max_wait_us, d.cfg.queue_capacity);
	mimed_notify(&d, "READY=1\nSTATUS=serving %d tasks, phase %d", d.rt->manifest->n_tasks,
	             d.phase);

	uv_run(&d.loop, UV_RUN_DEFAULT);
	if (d.forced_exit) {
		flush_replies(&d);
		fflush(stderr);
		_exit(d.exit_code);
	}
	r = d.exit_code;
	mimed_log(&d, LOG_NOTICE, "stopped: %llu requests, %llu batches",
	          (unsigned long long)d.n_requests, (unsigned long long)d.n_batches);
	goto out_loop;

out_workers:
	mimed_workers_stop(&d);
out_loop:
	if (!d.drained) {
		/* Failed before serving: close what was opened so the loop can be closed. */
		uv_walk(&d.loop, close_handle, NULL);
		uv_run(&d.loop, UV_RUN_DEFAULT);
	}
	uv_loop_close(&d.loop);
	free(d.rbuf);
out_queue:
	pthread_mutex_destroy(&d.done_lock);
	mimed_queue_fini(&d.queue);
out_latency:
	mimed_latency_fini(&d.latency);
	for (int i = 0; i < MIMED_MAX_PHASES; i++)
		mimed_latency_fini(&d.phase_latency[i]);
out_rt:
	mimed_runtime_unref(d.rt);
out_socket:
	if (d.socket_created)
		unlink(d.socket_path);
	free(d.socket_path);
out_cfg:
	mimed_config_fini(&d.cfg);
	return r;
}
