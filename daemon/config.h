/* SPDX-License-Identifier: MIT */
/* config -- mimed's settings: built-in defaults, then conf/mimed.yaml (libyaml), then the
 * command line. Every key is listed in one table in config.c and documented in
 * conf/mimed.yaml; an unknown key or a bad value is an error naming file:line.
 * Ownership: a config owns its strings; mimed_config_fini() frees them.
 * Threads: the loop thread only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MIMED_MAX_BATCH   256
#define MIMED_MAX_WORKERS 64
#define MIMED_MAX_ENABLED 64
#define MIMED_CONFIG_KEYS 28 /* entries of the key table in config.c */

enum mimed_mode {
	MIMED_MODE_MIME,
	MIMED_MODE_CONVENTIONAL,
};

struct mimed_config {
	char *socket; /* NULL: $RUNTIME_DIRECTORY, /run/mime (root), $XDG_RUNTIME_DIR/mime */
	unsigned socket_mode; /* permission bits of the socket we create */
	char *bundle;         /* NULL: the shipped bundle */
	int n_tasks;          /* tasks enabled; 0 = every task of the bundle */
	char *tasks[MIMED_MAX_ENABLED];
	enum mimed_mode mode;
	int max_batch;
	uint64_t max_wait_us;
	size_t queue_capacity;
	int workers;
	int threads;                  /* engine threads per worker; 0: auto */
	int blas_threads;             /* OpenBLAS threads; 0: auto */
	uint64_t memory_budget_bytes; /* 0: none */
	double latency_budget_ms;     /* 0: none */
	double memory_pressure_pct;   /* PSI some avg10 (%) that steps a phase down; 0: ignored */
	uint64_t policy_interval_ms;  /* the budget timer */
	int policy_up_evals;          /* evaluations a higher phase must fit before a step up */
	int policy_settle_evals;      /* timer evaluations after a step that may not step down */
	uint64_t policy_latency_window_ms; /* a phase's p95 is over its answers of this while */
	size_t max_message_bytes;
	int max_pixels; /* width x height of an image (or elements / 3 of a raw tensor) */
	int max_connections;
	int max_pending;             /* calls in flight per connection before reading pauses */
	uint64_t idle_timeout_ms;    /* 0: never */
	uint64_t message_timeout_ms; /* a started message must end within this; 0: never */
	uint64_t shutdown_timeout_ms;
	size_t max_write_queue_bytes; /* replies a slow reader may leave unread */
	char *admin_group;            /* NULL: root and our own uid only */
	int log_level;                /* LOG_ERR .. LOG_DEBUG */

	/* Where the values came from, for messages that name FILE:LINE: the file read last
	 * (NULL: none), the line in it of each key of the table (0: not in the file; read it
	 * with mimed_config_line()) and of each name in tasks. A command-line flag may have
	 * replaced a value since. */
	char *file;
	unsigned key_lines[MIMED_CONFIG_KEYS];
	unsigned task_lines[MIMED_MAX_ENABLED];
};

void mimed_config_defaults(struct mimed_config *c);
void mimed_config_fini(struct mimed_config *c);
/* Deep copy; 0 or -ENOMEM. */
int mimed_config_copy(const struct mimed_config *src, struct mimed_config *ret_dst);

/* Reads path over the values already in c, and records it in c->file and the line of each
 * key and task name. Returns 0, or a negative code with err saying "FILE:LINE: what"
 * (unknown key, bad value, a key given twice in one mapping: the line of the second, YAML
 * syntax, unreadable file). On failure c may be partly changed: load into a copy. */
int mimed_config_load(struct mimed_config *c, const char *path, char *err, size_t err_len);

/* The line of c->file that set key, named as in the file with its section
 * ("access.admin_group", "tasks"); 0 when the file did not set it or no such key exists. */
unsigned mimed_config_line(const struct mimed_config *c, const char *key);

/* Engine threads of each of n_workers workers: c->threads, or for 0 (auto) n_cpus / n_workers
 * (the online CPUs shared out; n_cpus < 1 counts as 1), at least 1. */
int mimed_config_engine_threads(const struct mimed_config *c, int n_workers, long n_cpus);

/* "48M", "1.5G", "4096", "64KiB" -> bytes (K/M/G/T are powers of 1024). 0 or -EINVAL. */
int mimed_parse_bytes(const char *s, uint64_t *ret_bytes);
/* "5ms", "250us", "2s", "1.5ms" -> microseconds; a bare number is in default_unit_us. */
int mimed_parse_duration_us(const char *s, uint64_t default_unit_us, uint64_t *ret_us);
