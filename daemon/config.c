// SPDX-License-Identifier: MIT
/* config -- see config.h. */
#include "daemon/config.h"
#include "lib/image.h"
#include "lib/units.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <yaml.h>

#include "daemon/log.h"

void mimed_config_defaults(struct mimed_config *c)
{
	*c = (struct mimed_config){
		.socket_mode = 0660,
		.mode = MIMED_MODE_MIME,
		.max_batch = 16,
		.max_wait_us = 0,
		.queue_capacity = 256,
		.workers = 1,
		.threads = 0,
		.blas_threads = 0,
		.max_message_bytes = 8u << 20,
		.max_pixels = 1 << 20,
		.max_connections = 128,
		.max_pending = 64,
		.idle_timeout_ms = 300000,
		.message_timeout_ms = 30000,
		.shutdown_timeout_ms = 10000,
		.memory_pressure_pct = 0,
		.policy_interval_ms = 500,
		.policy_up_evals = 3,
		.policy_settle_evals = 2,
		.policy_latency_window_ms = 30000,
		.max_write_queue_bytes = 16u << 20,
		.log_level = LOG_INFO,
	};
}

void mimed_config_fini(struct mimed_config *c)
{
	free(c->socket);
	free(c->bundle);
	free(c->admin_group);
	free(c->file);
	for (int i = 0; i < c->n_tasks; i++)
		free(c->tasks[i]);
	memset(c, 0, sizeof(*c));
}

static int dup_opt(char **dst, const char *src)
{
	*dst = NULL;
	if (src && !(*dst = strdup(src)))
		return -ENOMEM;
	return 0;
}

int mimed_config_copy(const struct mimed_config *src, struct mimed_config *ret_dst)
{
	struct mimed_config c = *src;

	c.socket = c.bundle = c.admin_group = c.file = NULL;
	c.n_tasks = 0;
	if (dup_opt(&c.socket, src->socket) < 0 || dup_opt(&c.bundle, src->bundle) < 0 ||
	    dup_opt(&c.admin_group, src->admin_group) < 0 || dup_opt(&c.file, src->file) < 0)
		goto fail;
	for (int i = 0; i < src->n_tasks; i++) {
		if (dup_opt(&c.tasks[i], src->tasks[i]) < 0)
			goto fail;
		c.n_tasks++;
	}
	*ret_dst = c;
	return 0;
fail:
	mimed_config_fini(&c);
	return -ENOMEM;
}

int mimed_config_engine_threads(const struct mimed_config *c, int n_workers, long n_cpus)
{
	/* auto: 1. On the 2-core machine shared with other work a 2-thread engine cost ~1.2x
	 * the CPU per request and up to 2.3x the latency at concurrency 1 (demo bundle; equal
	 * latency only with a core idle): bench/RESULTS.md, "Daemon benchmark: reading". */
	(void)n_workers;
	(void)n_cpus;
	return c->threads > 0 ? c->threads : 1;
}

int mimed_parse_bytes(const char *s, uint64_t *ret_bytes)
{
	return mime_parse_bytes(s, ret_bytes);
}

int mimed_parse_duration_us(const char *s, uint64_t default_unit_us, uint64_t *ret_us)
{
	return mime_parse_duration_us(s, default_unit_us, ret_us);
}

enum key_kind {
	KEY_STRING,   /* char *, "" -> NULL */
	KEY_MODE,     /* octal permission bits */
	KEY_INT,      /* int within [min, max] */
	KEY_SIZE,     /* size_t count within [min, max] */
	KEY_BYTES,    /* uint64_t / size_t bytes within [min, max] */
	KEY_US,       /* uint64_t microseconds (bare number: us) */
	KEY_MS,       /* uint64_t milliseconds (bare number: ms) */
	KEY_MS_FLOAT, /* double milliseconds */
	KEY_FLOAT,    /* double within [min, max] */
	KEY_LOG,
	KEY_RUNMODE,
	KEY_TASKS,
};

struct key {
	const char *path; /* "batching.max_batch" */
	enum key_kind kind;
	size_t offset;
	double min, max;
	int size_bytes; /* KEY_BYTES: 8 (uint64_t) or sizeof(size_t) */
};

#define OFF(f) offsetof(struct mimed_config, f)
static const struct key keys[] = {
	{"socket", KEY_STRING, OFF(socket), 0, 0, 0},
	{"socket_mode", KEY_MODE, OFF(socket_mode), 0, 0777, 0},
	{"bundle", KEY_STRING, OFF(bundle), 0, 0, 0},
	{"tasks", KEY_TASKS, 0, 0, 0, 0},
	{"mode", KEY_RUNMODE, OFF(mode), 0, 0, 0},
	{"batching.max_batch", KEY_INT, OFF(max_batch), 1, MIMED_MAX_BATCH, 0},
	{"batching.max_wait", KEY_US, OFF(max_wait_us), 0, 10e6, 0},
	{"batching.queue_capacity", KEY_SIZE, OFF(queue_capacity), 1, 1 << 20, 0},
	{"workers.count", KEY_INT, OFF(workers), 1, MIMED_MAX_WORKERS, 0},
	{"workers.threads", KEY_INT, OFF(threads), 0, 256, 0},
	{"workers.blas_threads", KEY_INT, OFF(blas_threads), 0, 256, 0},
	{"budgets.memory", KEY_BYTES, OFF(memory_budget_bytes), 0, 0x1p62, 8},
	{"budgets.latency", KEY_MS_FLOAT, OFF(latency_budget_ms), 0, 3.6e6, 0},
	{"budgets.memory_pressure", KEY_FLOAT, OFF(memory_pressure_pct), 0, 100, 0},
	{"policy.interval", KEY_MS, OFF(policy_interval_ms), 10, 600000, 0},
	{"policy.up_evals", KEY_INT, OFF(policy_up_evals), 1, 1000, 0},
	{"policy.settle_evals", KEY_INT, OFF(policy_settle_evals), 0, 1000, 0},
	{"policy.latency_window", KEY_MS, OFF(policy_latency_window_ms), 100, 86400000, 0},
	{"limits.max_message", KEY_BYTES, OFF(max_message_bytes), 1024, 1 << 30, sizeof(size_t)},
	{"limits.max_pixels", KEY_INT, OFF(max_pixels), 1, MIME_IMAGE_MAX_PIXELS, 0},
	{"limits.max_connections", KEY_INT, OFF(max_connections), 1, 1 << 20, 0},
	{"limits.max_pending", KEY_INT, OFF(max_pending), 1, 1 << 16, 0},
	{"limits.idle_timeout", KEY_MS, OFF(idle_timeout_ms), 0, 0x1p40, 0},
	{"limits.message_timeout", KEY_MS, OFF(message_timeout_ms), 0, 0x1p40, 0},
	{"limits.max_write_queue", KEY_BYTES, OFF(max_write_queue_bytes), 4096, 0x1p40,
         sizeof(size_t)},
	{"shutdown_timeout", KEY_MS, OFF(shutdown_timeout_ms), 1, 0x1p40, 0},
	{"access.admin_group", KEY_STRING, OFF(admin_group), 0, 0, 0},
	{"log.level", KEY_LOG, OFF(log_level), 0, 0, 0},
};
#undef OFF
_Static_assert(sizeof(keys) / sizeof(keys[0]) == MIMED_CONFIG_KEYS,
               "MIMED_CONFIG_KEYS in config.h is the size of the key table");

unsigned mimed_config_line(const struct mimed_config *c, const char *key)
{
	for (size_t i = 0; i < MIMED_CONFIG_KEYS; i++)
		if (strcmp(keys[i].path, key) == 0)
			return c->key_lines[i];
	return 0;
}

struct loader {
	struct mimed_config *c;
	const char *path;
	char *err;
	size_t err_len;
	yaml_document_t *doc;
};

static int fail(struct loader *l, const yaml_node_t *n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct loader *l, const yaml_node_t *n, const char *fmt, ...)
{
	int k = snprintf(l->err, l->err_len, "%s:%zu: ", l->path, n->start_mark.line + 1);
	va_list ap;

	if (k < 0 || (size_t)k >= l->err_len)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(l->err + k, l->err_len - (size_t)k, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static const char *scalar(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

static int set_tasks(struct loader *l, const yaml_node_t *v)
{
	struct mimed_config *c = l->c;
	yaml_node_item_t *it;

	if (v->type != YAML_SEQUENCE_NODE)
		return fail(l, v, "'tasks' must be a list of task names");
	for (int i = 0; i < c->n_tasks; i++)
		free(c->tasks[i]);
	c->n_tasks = 0;
	for (it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
		yaml_node_t *t = yaml_document_get_node(l->doc, *it);

		if (!t || t->type != YAML_SCALAR_NODE || !*scalar(t))
			return fail(l, t ? t : v, "'tasks' items must be task names");
		if (c->n_tasks == MIMED_MAX_ENABLED)
			return fail(l, t, "more than %d tasks", MIMED_MAX_ENABLED);
		c->tasks[c->n_tasks] = strdup(scalar(t));
		if (!c->tasks[c->n_tasks])
			return -ENOMEM;
		c->task_lines[c->n_tasks] = (unsigned)t->start_mark.line + 1;
		c->n_tasks++;
	}
	return 0;
}

static int set_key(struct loader *l, const struct key *k, const yaml_node_t *v)
{
	char *base = (char *)l->c;
	const char *s;
	char *end;
	uint64_t u;
	double d;
	long n;

	if (k->kind == KEY_TASKS)
		return set_tasks(l, v);
	if (v->type != YAML_SCALAR_NODE)
		return fail(l, v, "'%s' must be a single value", k->path);
	s = scalar(v);
	switch (k->kind) {
	case KEY_STRING: {
		char **dst = (char **)(base + k->offset);
		free(*dst);
		*dst = NULL;
		if (*s && !(*dst = strdup(s)))
			return -ENOMEM;
		return 0;
	}
	case KEY_MODE:
		errno = 0;
		n = strtol(s, &end, 8);
		if (errno || end == s || *end || n < 0 || n > 0777)
			return fail(l, v, "'%s' must be octal permission bits like 0660, not '%s'",
			            k->path, s);
		*(unsigned *)(base + k->offset) = (unsigned)n;
		return 0;
	case KEY_INT:
	case KEY_SIZE:
		errno = 0;
		n = strtol(s, &end, 10);
		if (errno || end == s || *end || n < k->min || n > k->max)
			return fail(l, v, "'%s' must be an integer in [%.0f, %.0f], not '%s'",
			            k->path, k->min, k->max, s);
		if (k->kind == KEY_INT)
			*(int *)(base + k->offset) = (int)n;
		else
			*(size_t *)(base + k->offset) = (size_t)n;
		return 0;
	case KEY_BYTES:
		if (mimed_parse_bytes(s, &u) < 0 || (double)u < k->min || (double)u > k->max)
			return fail(
				l, v,
				"'%s' must be a size like 48M or 4096 in [%.0f, %.0f], not '%s'",
				k->path, k->min, k->max, s);
		if (k->size_bytes == 8)
			*(uint64_t *)(base + k->offset) = u;
		else
			*(size_t *)(base + k->offset) = (size_t)u;
		return 0;
	case KEY_US:
	case KEY_MS:
		if (mimed_parse_duration_us(s, k->kind == KEY_US ? 1 : 1000, &u) < 0)
			return fail(l, v, "'%s' must be a duration like 2ms or 500us, not '%s'",
			            k->path, s);
		if (k->kind == KEY_MS)
			u = (u + 999) / 1000;
		if ((double)u < k->min || (double)u > k->max)
			return fail(l, v, "'%s' is out of range: '%s'", k->path, s);
		*(uint64_t *)(base + k->offset) = u;
		return 0;
	case KEY_MS_FLOAT:
		if (mimed_parse_duration_us(s, 1000, &u) < 0 || (d = (double)u / 1e3) > k->max)
			return fail(l, v, "'%s' must be a duration like 5ms, not '%s'", k->path, s);
		*(double *)(base + k->offset) = d;
		return 0;
	case KEY_FLOAT:
		errno = 0;
		d = strtod(s, &end);
		if (errno || end == s || *end || !(d >= k->min && d <= k->max))
			return fail(l, v, "'%s' must be a number in [%g, %g], not '%s'", k->path,
			            k->min, k->max, s);
		*(double *)(base + k->offset) = d;
		return 0;
	case KEY_LOG:
		n = mimed_log_level_parse(s);
		if (n < 0)
			return fail(l, v,
			            "'%s' must be err, warning, notice, info or debug, not '%s'",
			            k->path, s);
		*(int *)(base + k->offset) = (int)n;
		return 0;
	case KEY_RUNMODE:
		if (strcmp(s, "mime") == 0)
			l->c->mode = MIMED_MODE_MIME;
		else if (strcmp(s, "conventional") == 0)
			l->c->mode = MIMED_MODE_CONVENTIONAL;
		else
			return fail(l, v, "'mode' must be mime or conventional, not '%s'", s);
		return 0;
	case KEY_TASKS:
		break;
	}
	return fail(l, v, "internal: unhandled key kind");
}

/* The key of pair p of map, when it is a scalar; else NULL. */
static const yaml_node_t *pair_key(const struct loader *l, const yaml_node_pair_t *p)
{
	const yaml_node_t *k = yaml_document_get_node(l->doc, p->key);

	return k && k->type == YAML_SCALAR_NODE ? k : NULL;
}

static int load_mapping(struct loader *l, const yaml_node_t *map, const char *prefix)
{
	yaml_node_pair_t *p;
	int r;

	for (p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
		const yaml_node_t *k = pair_key(l, p);
		yaml_node_t *v = yaml_document_get_node(l->doc, p->value);
		const struct key *found = NULL;
		char path[128];
		size_t plen;

		if (!k || !v) {
			const yaml_node_t *at = yaml_document_get_node(l->doc, p->key);

			return fail(l, at ? at : map, "keys must be plain names");
		}
		snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", scalar(k));
		plen = strlen(path);
		/* libyaml keeps every pair of a mapping, a key given twice too: the second
		 * would silently win (or, for a section, add to the first). */
		for (const yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
			const yaml_node_t *earlier = pair_key(l, q);

			if (earlier && strcmp(scalar(earlier), scalar(k)) == 0)
				return fail(l, k, "duplicate key '%s' (first on line %zu)", path,
				            earlier->start_mark.line + 1);
		}
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			if (strcmp(keys[i].path, path) == 0)
				found = &keys[i];
		if (found) {
			l->c->key_lines[found - keys] = (unsigned)k->start_mark.line + 1;
			/* An empty value (key: with nothing) keeps the default. */
			if (v->type == YAML_SCALAR_NODE && !*scalar(v) && found->kind != KEY_STRING)
				continue;
			r = set_key(l, found, v);
		} else if (v->type == YAML_MAPPING_NODE) {
			int section = 0;

			for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
				if (strncmp(keys[i].path, path, plen) == 0 &&
				    keys[i].path[plen] == '.')
					section = 1;
			if (!section)
				return fail(l, k, "unknown key '%s'", path);
			r = load_mapping(l, v, path);
		} else {
			return fail(l, k, "unknown key '%s'", path);
		}
		if (r < 0)
			return r;
	}
	return 0;
}

int mimed_config_load(struct mimed_config *c, const char *path, char *err, size_t err_len)
{
	struct loader l = {.c = c, .path = path, .err = err, .err_len = err_len};
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_node_t *root;
	FILE *f;
	int r;

	f = fopen(path, "re");
	if (!f) {
		r = -errno;
		snprintf(err, err_len, "%s: %s", path, strerror(-r));
		return r;
	}
	free(c->file);
	memset(c->key_lines, 0, sizeof(c->key_lines));
	c->file = strdup(path);
	if (!c->file || !yaml_parser_initialize(&parser)) {
		fclose(f);
		snprintf(err, err_len, "%s: %s", path, strerror(ENOMEM));
		return -ENOMEM;
	}
	yaml_parser_set_input_file(&parser, f);
	if (!yaml_parser_load(&parser, &doc)) {
		snprintf(err, err_len, "%s:%zu: %s", path, parser.problem_mark.line + 1,
		         parser.problem ? parser.problem : "YAML syntax error");
		r = -EINVAL;
		goto out_parser;
	}
	l.doc = &doc;
	root = yaml_document_get_root_node(&doc);
	if (!root) /* an empty file: defaults */
		r = 0;
	else if (root->type == YAML_SCALAR_NODE && !*scalar(root))
		r = 0;
	else if (root->type != YAML_MAPPING_NODE)
		r = fail(&l, root, "the configuration must be a mapping of keys");
	else
		r = load_mapping(&l, root, "");
	if (r == -ENOMEM) /* the only failure that does not say where */
		snprintf(err, err_len, "%s: %s", path, strerror(ENOMEM));
	yaml_document_delete(&doc);
out_parser:
	yaml_parser_delete(&parser);
	fclose(f);
	return r;
}
