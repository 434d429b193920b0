// SPDX-License-Identifier: MIT
/* test_config -- mimed's YAML configuration: defaults, the shipped conf/mimed.yaml, values
 * with units, and errors that name file:line. */
#include "tests/unit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "daemon/config.h"

static int load_text(const char *text, struct mimed_config *c, char *err, size_t err_len,
                     char **ret_path)
{
	char *path = mime_test_tmpfile(text, strlen(text));
	int r;

	assert_non_null(path);
	mimed_config_defaults(c);
	r = mimed_config_load(c, path, err, err_len);
	*ret_path = path;
	return r;
}

static void test_config_parse_bytes_and_durations(void **state)
{
	uint64_t v;

	assert_int_equal(mimed_parse_bytes("48M", &v), 0);
	assert_int_equal(v, 48u << 20);
	assert_int_equal(mimed_parse_bytes("4096", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(mimed_parse_bytes("1.5KiB", &v), 0);
	assert_int_equal(v, 1536);
	assert_int_equal(mimed_parse_bytes("2G", &v), 0);
	assert_int_equal(v, 2ull << 30);
	assert_int_equal(mimed_parse_bytes("12Q", &v), -EINVAL);
	assert_int_equal(mimed_parse_bytes("-1", &v), -EINVAL);
	assert_int_equal(mimed_parse_bytes("", &v), -EINVAL);
	assert_int_equal(mimed_parse_bytes("1.5", &v), -EINVAL);

	assert_int_equal(mimed_parse_duration_us("5ms", 1, &v), 0);
	assert_int_equal(v, 5000);
	assert_int_equal(mimed_parse_duration_us("250us", 1, &v), 0);
	assert_int_equal(v, 250);
	assert_int_equal(mimed_parse_duration_us("1.5s", 1, &v), 0);
	assert_int_equal(v, 1500000);
	assert_int_equal(mimed_parse_duration_us("7", 1000, &v), 0);
	assert_int_equal(v, 7000);
	assert_int_equal(mimed_parse_duration_us("7 ms", 1, &v), -EINVAL);
	assert_int_equal(mimed_parse_duration_us("ms", 1, &v), -EINVAL);
}

static void test_config_shipped_file_equals_defaults(void **state)
{
	char *path = mime_test_source_path("conf/mimed.yaml");
	struct mimed_config def, c;
	char err[256] = "";

	mimed_config_defaults(&def);
	mimed_config_defaults(&c);
	assert_int_equal(mimed_config_load(&c, path, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_null(c.socket);
	assert_null(c.bundle);
	assert_null(c.admin_group);
	assert_int_equal(c.socket_mode, def.socket_mode);
	assert_int_equal(c.max_batch, def.max_batch);
	assert_int_equal(c.max_wait_us, def.max_wait_us);
	assert_int_equal(c.queue_capacity, def.queue_capacity);
	assert_int_equal(c.workers, def.workers);
	assert_int_equal(c.threads, def.threads);
	assert_int_equal(c.blas_threads, def.blas_threads);
	assert_int_equal(c.mode, def.mode);
	assert_int_equal(c.n_tasks, 0);
	assert_int_equal(c.max_message_bytes, def.max_message_bytes);
	assert_int_equal(c.max_connections, def.max_connections);
	assert_int_equal(c.max_pending, def.max_pending);
	assert_int_equal(c.idle_timeout_ms, def.idle_timeout_ms);
	assert_int_equal(c.message_timeout_ms, def.message_timeout_ms);
	assert_int_equal(c.max_write_queue_bytes, def.max_write_queue_bytes);
	assert_int_equal(c.shutdown_timeout_ms, def.shutdown_timeout_ms);
	assert_int_equal(c.memory_budget_bytes, 0);
	assert_true(c.latency_budget_ms == 0);
	assert_int_equal(c.log_level, def.log_level);
	mimed_config_fini(&c);
	free(path);
}

static void test_config_engine_threads_auto_is_one(void **state)
{
	struct mimed_config c;
	char err[256], *path;

	mimed_config_defaults(&c);
	assert_int_equal(c.threads, 0); /* auto is the default */
	assert_int_equal(mimed_config_engine_threads(&c, 1, 2), 1);
	assert_int_equal(mimed_config_engine_threads(&c, 2, 8), 1);
	assert_int_equal(mimed_config_engine_threads(&c, 1, -1), 1); /* sysconf failed */
	assert_int_equal(mimed_config_engine_threads(&c, 0, 4), 1);
	c.threads = 3;
	assert_int_equal(mimed_config_engine_threads(&c, 2, 2), 3); /* as configured */
	mimed_config_fini(&c);

	assert_int_equal(load_text("workers:\n  threads: 0\n", &c, err, sizeof(err), &path), 0);
	assert_int_equal(c.threads, 0);
	mimed_config_fini(&c);
	unlink(path);
	free(path);
	err[0] = 0;
	assert_int_equal(load_text("workers:\n  threads: -1\n", &c, err, sizeof(err), &path),
	                 -EINVAL);
	assert_non_null(strstr(err, ":2: 'workers.threads' must be an integer in [0, 256]"));
	mimed_config_fini(&c);
	unlink(path);
	free(path);
}

static void test_config_load_reads_values(void **state)
{
	static const char text[] = "socket: /tmp/x.sock\n"
				   "socket_mode: \"0600\"\n"
				   "tasks: [fmnist, mnist]\n"
				   "batching:\n  max_batch: 32\n  max_wait: 500us\n"
				   "workers:\n  count: 2\n"
				   "budgets:\n  memory: 48M\n  latency: 5ms\n"
				   "access:\n  admin_group: wheel\n"
				   "log:\n  level: debug\n";
	struct mimed_config c, copy;
	char err[256], *path;

	assert_int_equal(load_text(text, &c, err, sizeof(err), &path), 0);
	assert_string_equal(c.socket, "/tmp/x.sock");
	assert_int_equal(c.socket_mode, 0600);
	assert_int_equal(c.n_tasks, 2);
	assert_string_equal(c.tasks[1], "mnist");
	assert_int_equal(c.max_batch, 32);
	assert_int_equal(c.max_wait_us, 500);
	assert_int_equal(c.workers, 2);
	assert_int_equal(c.memory_budget_bytes, 48u << 20);
	assert_true(c.latency_budget_ms == 5.0);
	assert_string_equal(c.admin_group, "wheel");
	assert_int_equal(c.log_level, LOG_DEBUG);
	assert_int_equal(mimed_config_copy(&c, &copy), 0);
	assert_string_equal(copy.tasks[0], "fmnist");
	assert_ptr_not_equal(copy.tasks[0], c.tasks[0]);
	mimed_config_fini(&copy);
	mimed_config_fini(&c);
	unlink(path);
	free(path);
}

static void test_config_load_names_file_and_line(void **state)
{
	static const struct {
		const char *text, *want;
	} cases[] = {
		{"bundle: x\nbogus: 1\n", ":2: unknown key 'bogus'"},
		{"batching:\n  max_batch: 0\n", ":2: 'batching.max_batch' must be an integer"},
		{"batching:\n  max_batch: lots\n", ":2: 'batching.max_batch'"},
		{"batching:\n  nope: 1\n", ":2: unknown key 'batching.nope'"},
		{"workers: 3\n", ":1: unknown key 'workers'"},
		{"budgets:\n  memory: 48Q\n", ":2: 'budgets.memory' must be a size"},
		{"budgets:\n  latency: soon\n", ":2: 'budgets.latency'"},
		{"log:\n  level: loud\n", ":2: 'log.level'"},
		{"socket_mode: 999\n", ":1: 'socket_mode'"},
		{"mode: classic\n", ":1: 'mode' must be mime or conventional"},
		{"tasks: fmnist\n", ":1: 'tasks' must be a list"},
		{"bundle: [unclosed\n", ":2: "},
		{"- a\n- b\n", ":1: the configuration must be a mapping"},
		{"budgets:\n  memory_pressure: 101\n",
	         ":2: 'budgets.memory_pressure' must be a number"},
		{"budgets:\n  memory_pressure: lots\n", ":2: 'budgets.memory_pressure'"},
		{"policy:\n  up_evals: 0\n", ":2: 'policy.up_evals' must be an integer"},
		{"policy:\n  interval: 5ms\n", ":2: 'policy.interval'"},
		{"socket: a\nsocket: b\n", ":2: duplicate key 'socket' (first on line 1)"},
		{"batching:\n  max_batch: 2\n  max_wait: 1ms\n  max_batch: 3\n",
	         ":4: duplicate key 'batching.max_batch' (first on line 2)"},
		{"batching:\n  max_batch: 2\nlog:\n  level: info\nbatching:\n  max_wait: 1ms\n",
	         ":5: duplicate key 'batching' (first on line 1)"},
		{"tasks: [a]\nbundle: x\ntasks:\n  - b\n", ":3: duplicate key 'tasks'"},
		{"socket_mode: \"0600\"\nsocket_mode:\n", ":2: duplicate key 'socket_mode'"},
	};
	struct mimed_config c;
	char err[256], *path;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = 0;
		assert_int_equal(load_text(cases[i].text, &c, err, sizeof(err), &path), -EINVAL);
		if (!strstr(err, cases[i].want) || strncmp(err, path, strlen(path)) != 0)
			fail_msg("case %zu: '%s' does not say '%s'", i, err, cases[i].want);
		mimed_config_fini(&c);
		unlink(path);
		free(path);
	}
}

/* The same name in two mappings is no duplicate (test_config_load_rejects_bad_values has
 * the duplicates). */
static void test_config_load_same_name_in_two_mappings(void **state)
{
	struct mimed_config c;
	char err[256], *path;

	assert_int_equal(load_text("workers:\n  count: 2\nlimits:\n  max_pending: 3\n", &c, err,
	                           sizeof(err), &path),
	                 0);
	mimed_config_fini(&c);
	unlink(path);
	free(path);
}

static void test_config_load_records_lines(void **state)
{
	static const char text[] = "# comment\n"
				   "socket_mode: \"0600\"\n"
				   "tasks:\n"
				   "  - fmnist\n"
				   "\n"
				   "  - mnist\n"
				   "access:\n"
				   "  admin_group: wheel\n"
				   "batching:\n"
				   "  max_wait:\n"; /* empty: the default, but written on line 10 */
	struct mimed_config c, copy;
	char err[256], *path;

	mimed_config_defaults(&c);
	assert_null(c.file);
	assert_int_equal(mimed_config_line(&c, "socket_mode"), 0);
	assert_int_equal(load_text(text, &c, err, sizeof(err), &path), 0);
	assert_string_equal(c.file, path);
	assert_int_equal(mimed_config_line(&c, "socket_mode"), 2);
	assert_int_equal(mimed_config_line(&c, "tasks"), 3);
	assert_int_equal(mimed_config_line(&c, "access.admin_group"), 8);
	assert_int_equal(mimed_config_line(&c, "batching.max_wait"), 10);
	assert_int_equal(mimed_config_line(&c, "socket"), 0);      /* not in the file */
	assert_int_equal(mimed_config_line(&c, "admin_group"), 0); /* not a key's full name */
	assert_int_equal(mimed_config_line(&c, "access"), 0);      /* a section */
	assert_int_equal(c.n_tasks, 2);
	assert_int_equal(c.task_lines[0], 4);
	assert_int_equal(c.task_lines[1], 6);
	assert_int_equal(mimed_config_copy(&c, &copy), 0);
	assert_string_equal(copy.file, path);
	assert_ptr_not_equal(copy.file, c.file);
	assert_int_equal(mimed_config_line(&copy, "access.admin_group"), 8);
	assert_int_equal(copy.task_lines[1], 6);
	mimed_config_fini(&copy);
	mimed_config_fini(&c);
	unlink(path);
	free(path);

	/* A flow list: every name on the line of the list. */
	assert_int_equal(
		load_text("bundle: x\ntasks: [alpha, nope]\n", &c, err, sizeof(err), &path), 0);
	assert_int_equal(c.task_lines[0], 2);
	assert_int_equal(c.task_lines[1], 2);
	mimed_config_fini(&c);
	unlink(path);
	free(path);
}

static void test_config_load_missing_file(void **state)
{
	struct mimed_config c;
	char err[256];

	mimed_config_defaults(&c);
	assert_int_equal(mimed_config_load(&c, "/nonexistent/mimed.yaml", err, sizeof(err)),
	                 -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/mimed.yaml"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_parse_bytes_and_durations),
		cmocka_unit_test(test_config_shipped_file_equals_defaults),
		cmocka_unit_test(test_config_engine_threads_auto_is_one),
		cmocka_unit_test(test_config_load_reads_values),
		cmocka_unit_test(test_config_load_names_file_and_line),
		cmocka_unit_test(test_config_load_same_name_in_two_mappings),
		cmocka_unit_test(test_config_load_records_lines),
		cmocka_unit_test(test_config_load_missing_file),
	};
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
