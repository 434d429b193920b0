// SPDX-License-Identifier: MIT
/* cmd_daemon -- mimectl's subcommands that talk to mimed over Varlink: infer, tasks, status,
 * budget, phase, reload, watch and bench. Each takes --socket PATH (else $MIME_SOCKET, else
 * the first of $XDG_RUNTIME_DIR/mime/mimed.sock and /run/mime/mimed.sock that exists) and
 * returns an exit code from client/varlink.h.
 * Ownership: each command frees what it made before returning.
 * Threads: single-threaded; bench multiplexes its connections with poll(). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client/varlink.h"

#define MAX_IMAGE_BYTES (64u << 20)
#define OPT_SOCKET      1000
#define INFER_CHUNK     64   /* images per InferBatch call */
#define HELP_SHOWN      (-1) /* simple_call(): the usage went to stdout, nothing else to do */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Connects to the daemon or says why not; returns an exit code. */
static int open_daemon(const char *socket_opt, struct mimectl_varlink *ret_v)
{
	char *path = NULL, *tried = NULL;
	int r = mimectl_socket_find(socket_opt, &path, &tried);

	if (r == -ENOENT) {
		fprintf(stderr,
		        "mimectl: no mimed socket at %s (is mimed running? --socket PATH or "
		        "$MIME_SOCKET names another socket)\n",
		        tried);
		free(tried);
		return MIMECTL_EXIT_CONNECT;
	}
	if (r < 0) {
		fprintf(stderr, "mimectl: %s\n", strerror(-r));
		return MIMECTL_EXIT_ERROR;
	}
	r = mimectl_varlink_connect(path, ret_v);
	if (r < 0) {
		fprintf(stderr,
		        "mimectl: cannot connect to mimed at '%s': %s (is mimed running? "
		        "--socket PATH or $MIME_SOCKET names another socket)\n",
		        path, strerror(-r));
		free(path);
		return MIMECTL_EXIT_CONNECT;
	}
	free(path);
	return MIMECTL_EXIT_OK;
}

/* One call; prints a failure and returns its exit code, or 0 with *ret_params. */
static int call(struct mimectl_varlink *v, const char *method, json_t *params, json_t **ret_params)
{
	json_t *err;
	char text[512];
	int r = mimectl_varlink_call(v, method, params, ret_params, &err);

	if (r < 0) {
		fprintf(stderr, "mimectl: %s: %s\n", method,
		        r == -EPIPE ? "mimed closed the connection" : strerror(-r));
		return MIMECTL_EXIT_CONNECT;
	}
	if (r > 0) {
		fprintf(stderr, "mimectl: %s\n", mimectl_error_text(err, text, sizeof(text)));
		json_decref(err);
		return MIMECTL_EXIT_ERROR;
	}
	return MIMECTL_EXIT_OK;
}

static void print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

	if (s) {
		puts(s);
		free(s);
	}
}

/* Parses the --socket / --json / --help options every command shares; returns -1 to go on,
 * or an exit code. */
static int common_opt(int opt, const char **socket_opt, bool *json, const char *usage)
{
	switch (opt) {
	case OPT_SOCKET:
		*socket_opt = optarg;
		return -1;
	case 'j':
		*json = true;
		return -1;
	case 'h':
		fputs(usage, stdout);
		return MIMECTL_EXIT_OK;
	default:
		fputs(usage, stderr);
		return MIMECTL_EXIT_USAGE;
	}
}

/* ---- infer ------------------------------------------------------------------------------------
 */

static void print_result(const char *image, json_t *r, int top)
{
	json_t *t;
	size_t i;

	printf("%s: %s (label %lld, %.1f%%) task %s, phase %lld, batch %lld of %lld, %.2f ms\n",
	       image, json_string_value(json_object_get(r, "class")),
	       (long long)json_integer_value(json_object_get(r, "label")),
	       100 * json_number_value(json_object_get(json_array_get(json_object_get(r, "top"), 0),
	                                               "score")),
	       json_string_value(json_object_get(r, "task")),
	       (long long)json_integer_value(json_object_get(r, "phase")),
	       (long long)json_integer_value(json_object_get(r, "batch_id")),
	       (long long)json_integer_value(json_object_get(r, "batch_size")),
	       (double)json_integer_value(json_object_get(r, "latency_us")) / 1000.0);
	if (top <= 1)
		return;
	json_array_foreach(json_object_get(r, "top"), i, t) printf(
		"  %zu. %-24s %6.2f%%\n", i + 1, json_string_value(json_object_get(t, "class")),
		100 * json_number_value(json_object_get(t, "score")));
}

int mimectl_cmd_infer(int argc, char **argv)
{
	static const char usage[] = "usage: mimectl infer --task TASK [--top K] [--deadline MS] "
				    "[--phase N] [--json] [--socket PATH] "
				    "IMAGE...\n\n"
				    "Classifies PNG, PGM or PPM images with the daemon's TASK. "
				    "Several images go in one\n"
				    "InferBatch call. --top K lists the K most likely classes; "
				    "--phase N runs them in\n"
				    "phase N (1..n, as `mimectl status` lists them) instead of the "
				    "daemon's phase; --json\nprints the reply.\n";
	static const struct option opts[] = {
		{"task", required_argument, NULL, 't'},
		{"top", required_argument, NULL, 'k'},
		{"deadline", required_argument, NULL, 'd'},
		{"phase", required_argument, NULL, 'p'},
		{"json", no_argument, NULL, 'j'},
		{"socket", required_argument, NULL, OPT_SOCKET},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char *task = NULL, *socket_opt = NULL;
	struct mimectl_varlink v = {.fd = -1};
	json_t *items, *reply = NULL;
	bool json = false;
	long top = 0, deadline = 0, phase = 0;
	int opt, r;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "t:k:d:p:jh", opts, NULL)) != -1) {
		char *end;

		if (opt == 't') {
			task = optarg;
		} else if (opt == 'p') {
			phase = strtol(optarg, &end, 10);
			if (*end || phase < 1 || phase > 1000) {
				fprintf(stderr,
				        "mimectl: --phase wants a phase number, 1 or more\n");
				return MIMECTL_EXIT_USAGE;
			}
		} else if (opt == 'k' || opt == 'd') {
			long x = strtol(optarg, &end, 10);

			if (*end || x < 1 || x > 1000000) {
				fprintf(stderr, "mimectl: --%s wants a positive integer\n",
				        opt == 'k' ? "top" : "deadline");
				return MIMECTL_EXIT_USAGE;
			}
			*(opt == 'k' ? &top : &deadline) = x;
		} else if ((r = common_opt(opt, &socket_opt, &json, usage)) >= 0) {
			return r;
		}
	}
	if (!task || optind >= argc) {
		fputs(usage, stderr);
		return MIMECTL_EXIT_USAGE;
	}
	items = json_array();
	for (int i = optind; i < argc; i++) {
		uint8_t *data;
		size_t len;
		char *b64;

		r = mimectl_read_file(argv[i], MAX_IMAGE_BYTES, &data, &len);
		if (r < 0) {
			fprintf(stderr, "mimectl: %s: %s\n", argv[i],
			        r == -EFBIG ? "larger than 64 MiB" : strerror(-r));
			json_decref(items);
			return MIMECTL_EXIT_USAGE;
		}
		b64 = mimectl_base64_encode(data, len);
		free(data);
		json_array_append_new(items, json_pack("{s:s,s:s%}", "task", task, "image", b64,
		                                       b64 ? strlen(b64) : 0));
		free(b64);
		if (top)
			json_object_set_new(json_array_get(items, json_array_size(items) - 1),
			                    "top_k", json_integer(top));
		if (phase)
			json_object_set_new(json_array_get(items, json_array_size(items) - 1),
			                    "phase", json_integer(phase));
	}
	r = open_daemon(socket_opt, &v);
	if (r) {
		json_decref(items);
		return r;
	}
	if (json_array_size(items) == 1) {
		json_t *p = json_incref(json_array_get(items, 0));

		if (deadline)
			json_object_set_new(p, "deadline_ms", json_integer(deadline));
		json_decref(items);
		r = call(&v, "io.mime.Infer", p, &reply);
		if (r == 0 && json)
			print_json(reply);
		else if (r == 0)
			print_result(argv[optind], json_object_get(reply, "result"), (int)top);
	} else {
		/* In InferBatch calls of at most INFER_CHUNK images (the daemon's queue bounds
		 * one call); the results are printed as one list. */
		json_t *all = json_array();
		size_t n = json_array_size(items);

		for (size_t off = 0; off < n && r == 0; off += INFER_CHUNK) {
			json_t *chunk = json_array(), *p;
			size_t i;

			for (i = off; i < n && i < off + INFER_CHUNK; i++)
				json_array_append(chunk, json_array_get(items, i));
			p = json_pack("{s:o}", "items", chunk);
			if (deadline)
				json_object_set_new(p, "deadline_ms", json_integer(deadline));
			r = call(&v, "io.mime.InferBatch", p, &reply);
			if (r == 0) {
				json_array_extend(all, json_object_get(reply, "results"));
				json_decref(reply);
				reply = NULL;
			}
		}
		json_decref(items);
		if (r == 0 && json) {
			json_t *o = json_pack("{s:O}", "results", all);

			print_json(o);
			json_decref(o);
		} else if (r == 0) {
			json_t *res;
			size_t i;

			json_array_foreach(all, i, res)
				print_result(argv[optind + (int)i], res, (int)top);
		}
		json_decref(all);
	}
	json_decref(reply);
	mimectl_varlink_close(&v);
	return r;
}

/* ---- tasks, status ------------------------------------------------------------------------------
 */

/* Parses the shared options, makes one call and returns an exit code with *ret_reply, or
 * HELP_SHOWN after --help (the caller exits 0 and prints nothing more). */
static int simple_call(int argc, char **argv, const char *usage, const char *method, json_t *params,
                       json_t **ret_reply, bool *ret_json)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},
		{"socket", required_argument, NULL, OPT_SOCKET},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	struct mimectl_varlink v = {.fd = -1};
	const char *socket_opt = NULL;
	int opt, r;

	*ret_json = false;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		if ((r = common_opt(opt, &socket_opt, ret_json, usage)) >= 0) {
			json_decref(params);
			return opt == 'h' ? HELP_SHOWN : r;
		}
	}
	if (optind < argc) {
		fputs(usage, stderr);
		json_decref(params);
		return MIMECTL_EXIT_USAGE;
	}
	r = open_daemon(socket_opt, &v);
	if (r) {
		json_decref(params);
		return r;
	}
	r = call(&v, method, params, ret_reply);
	mimectl_varlink_close(&v);
	return r;
}

int mimectl_cmd_tasks(int argc, char **argv)
{
	static const char usage[] = "usage: mimectl tasks [--json] [--socket PATH]\n\n"
				    "Lists the tasks the daemon serves.\n";
	json_t *reply = NULL, *t;
	bool json;
	size_t i;
	int r = simple_call(argc, argv, usage, "io.mime.ListTasks", NULL, &reply, &json);

	if (r)
		return r == HELP_SHOWN ? MIMECTL_EXIT_OK : r;
	if (json) {
		print_json(reply);
	} else {
		printf("%-16s %7s  %-11s %-9s %s\n", "TASK", "CLASSES", "INPUT", "THRESH",
		       "ACCURACY");
		json_array_foreach(json_object_get(reply, "tasks"), i, t)
		{
			char shape[32], acc[16] = "-";
			json_t *a = json_object_get(t, "accuracy");

			snprintf(shape, sizeof(shape), "%lldx%lldx%lld",
			         (long long)json_integer_value(json_object_get(t, "channels")),
			         (long long)json_integer_value(json_object_get(t, "height")),
			         (long long)json_integer_value(json_object_get(t, "width")));
			if (a)
				snprintf(acc, sizeof(acc), "%.2f%%", 100 * json_number_value(a));
			printf("%-16s %7zu  %-11s %-9s %s\n",
			       json_string_value(json_object_get(t, "name")),
			       json_array_size(json_object_get(t, "classes")), shape,
			       json_string_value(json_object_get(t, "thresholds")), acc);
		}
	}
	json_decref(reply);
	return MIMECTL_EXIT_OK;
}

static const char *human_bytes(double b, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int u = 0;

	while (b >= 1024 && u < 4) {
		b /= 1024;
		u++;
	}
	snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", b, units[u]);
	return buf;
}

static long long jint(json_t *o, const char *k)
{
	return (long long)json_integer_value(json_object_get(o, k));
}

/* o's number k (int or real); 0 when o or k is missing */
static double jnum(json_t *o, const char *k)
{
	return json_number_value(json_object_get(o, k));
}

/* GetStatus's phases[] as a table, the phase in force (status "phase") marked '*'. */
static void print_phases(json_t *s)
{
	json_t *phases = json_object_get(s, "phases"), *ph;
	long long cur = jint(s, "phase");
	size_t i;

	if (!json_array_size(phases))
		return;
	printf("phases      %zu, * = the phase in force; memory: one worker's engines, rss: "
	       "the daemon's predicted (held against the memory budget)\n",
	       json_array_size(phases));
	printf("  %1s %5s  %-12s %-26s %11s %11s\n", "", "PHASE", "NAME", "MEMORY", "P95", "RSS");
	json_array_foreach(phases, i, ph)
	{
		char mem[64], hb[32], p95[32] = "-", rss[32] = "-";
		const char *src = json_string_value(json_object_get(ph, "memory_source"));
		const char *name = json_string_value(json_object_get(ph, "name"));

		snprintf(mem, sizeof(mem), "%s (%s)",
		         human_bytes((double)jint(ph, "memory_bytes"), hb, sizeof(hb)),
		         src ? src : "?");
		if (json_is_number(json_object_get(ph, "p95_ms")))
			snprintf(p95, sizeof(p95), "%.3f ms", jnum(ph, "p95_ms"));
		if (json_is_integer(json_object_get(ph, "predicted_rss_bytes")))
			human_bytes((double)jint(ph, "predicted_rss_bytes"), rss, sizeof(rss));
		printf("  %1s %5lld  %-12.12s %-26s %11s %11s\n",
		       jint(ph, "phase") == cur ? "*" : "", jint(ph, "phase"), name ? name : "?",
		       mem, p95, rss);
	}
}

int mimectl_cmd_status(int argc, char **argv)
{
	static const char usage[] =
		"usage: mimectl status [--json] [--socket PATH]\n\n"
		"Shows the daemon's phase, budgets, memory, latency, queue and counters, and\n"
		"its phases: memory, p95 and predicted RSS of each, the one in force marked.\n";
	json_t *reply = NULL, *s, *b, *l, *t, *e;
	char buf1[32], buf2[32], buf3[32];
	bool json;
	size_t i;
	int r = simple_call(argc, argv, usage, "io.mime.GetStatus", NULL, &reply, &json);

	if (r)
		return r == HELP_SHOWN ? MIMECTL_EXIT_OK : r;
	s = json_object_get(reply, "status");
	if (json) {
		print_json(s);
		json_decref(reply);
		return MIMECTL_EXIT_OK;
	}
	b = json_object_get(s, "budgets");
	l = json_object_get(s, "latency");
	printf("bundle      %s\n", json_string_value(json_object_get(s, "bundle")));
	if (json_is_string(json_object_get(s, "mode")))
		printf("mode        %s\n", json_string_value(json_object_get(s, "mode")));
	printf("phase       %lld (%s)\n", jint(s, "phase"),
	       json_is_true(json_object_get(s, "pinned")) ? "pinned" : "auto");
	printf("budgets     memory %s, latency %s\n",
	       json_object_get(b, "memory_bytes")
	               ? human_bytes((double)jint(b, "memory_bytes"), buf1, sizeof(buf1))
	               : "none",
	       json_object_get(b, "latency_ms")
	               ? (snprintf(buf2, sizeof(buf2), "%g ms p95",
	                           json_number_value(json_object_get(b, "latency_ms"))),
	                  buf2)
	               : "none");
	if (json_object_get(s, "memory_budget_bytes"))
		printf("in force    memory %s (%s)\n",
		       human_bytes((double)jint(s, "memory_budget_bytes"), buf1, sizeof(buf1)),
		       json_string_value(json_object_get(s, "memory_budget_source")));
	printf("memory      rss %s, cgroup memory.max %s, memory.high %s\n",
	       human_bytes((double)jint(s, "rss_bytes"), buf1, sizeof(buf1)),
	       json_object_get(s, "cgroup_memory_max")
	               ? human_bytes((double)jint(s, "cgroup_memory_max"), buf2, sizeof(buf2))
	               : "-",
	       json_object_get(s, "cgroup_memory_high")
	               ? human_bytes((double)jint(s, "cgroup_memory_high"), buf3, sizeof(buf3))
	               : "-");
	printf("latency     p50 %.2f ms, p95 %.2f ms, p99 %.2f ms (%lld requests)\n",
	       (double)jint(l, "p50_us") / 1e3, (double)jint(l, "p95_us") / 1e3,
	       (double)jint(l, "p99_us") / 1e3, jint(l, "count"));
	printf("queue       %lld of %lld, %lld workers, max_batch %lld, max_wait %lld us\n",
	       jint(s, "queue_depth"), jint(s, "queue_capacity"), jint(s, "workers"),
	       jint(s, "max_batch"), jint(s, "max_wait_us"));
	printf("counters    %lld requests, %lld batches, %lld busy, %lld timeouts, %lld errors, "
	       "%lld connections\n",
	       jint(s, "requests"), jint(s, "batches"), jint(s, "busy"), jint(s, "timeouts"),
	       jint(s, "errors"), jint(s, "connections"));
	printf("tasks      ");
	json_array_foreach(json_object_get(s, "tasks"), i, t) printf(
		" %s %lld", json_string_value(json_object_get(t, "name")), jint(t, "requests"));
	printf("%s\n", json_array_size(json_object_get(s, "tasks")) ? "" : " (no requests yet)");
	e = json_object_get(s, "energy");
	if (json_is_object(e)) {
		static const char *const key[3] = {"case1", "case2", "case3"};
		static const char *const label[3] = {"case 1", "case 2", "MIME  "};

		printf("energy      over %lld batches (%lld pipelined), %s\n", jint(e, "batches"),
		       jint(e, "pipelined_batches"), json_string_value(json_object_get(e, "unit")));
		for (int k = 0; k < 3; k++) {
			json_t *c = json_object_get(e, key[k]);

			printf("  %s    total %.4g = DRAM %.4g + cache %.4g + reg %.4g + MAC %.4g, "
			       "%.4g cycles\n",
			       label[k], jnum(c, "total"), jnum(c, "dram"), jnum(c, "cache"),
			       jnum(c, "reg"), jnum(c, "mac"), jnum(c, "cycles"));
		}
		printf("  saving    %.3gx vs case 1, %.3gx vs case 2; %.3gx fewer cycles than case "
		       "1\n",
		       jnum(e, "saving_vs_case1"), jnum(e, "saving_vs_case2"),
		       jnum(e, "speedup_vs_case1"));
	} else {
		printf("energy      %s\n", json_string_value(e));
	}
	print_phases(s);
	printf("uptime      %.0f s\n", json_number_value(json_object_get(s, "uptime_s")));
	json_decref(reply);
	return MIMECTL_EXIT_OK;
}

/* ---- admin: budget, phase, reload ------------------------------------------------------------ */

int mimectl_cmd_budget(int argc, char **argv)
{
	static const char usage[] =
		"usage: mimectl budget [--memory SIZE|none] [--latency DURATION|none] [--json] "
		"[--socket PATH]\n\n"
		"Sets the daemon's memory budget (48M, 1G) and latency budget (p95: 5ms, 800us);\n"
		"'none' clears one. Admin: root, mimed's user or its admin group.\n";
	static const struct option opts[] = {
		{"memory", required_argument, NULL, 'm'},
		{"latency", required_argument, NULL, 'l'},
		{"json", no_argument, NULL, 'j'},
		{"socket", required_argument, NULL, OPT_SOCKET},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	struct mimectl_varlink v = {.fd = -1};
	const char *socket_opt = NULL;
	json_t *params = json_object(), *reply = NULL, *b;
	bool json = false;
	int opt, r;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "m:l:jh", opts, NULL)) != -1) {
		if (opt == 'm') {
			uint64_t bytes = 0;

			if (strcmp(optarg, "none") != 0 &&
			    mimectl_parse_bytes(optarg, &bytes) < 0) {
				fprintf(stderr,
				        "mimectl: --memory '%s': want a size like 48M or none\n",
				        optarg);
				json_decref(params);
				return MIMECTL_EXIT_USAGE;
			}
			json_object_set_new(params, "memory_bytes",
			                    json_integer((json_int_t)bytes));
		} else if (opt == 'l') {
			double ms = 0;

			if (strcmp(optarg, "none") != 0 && mimectl_parse_ms(optarg, &ms) < 0) {
				fprintf(stderr,
				        "mimectl: --latency '%s': want a duration like 5ms or "
				        "none\n",
				        optarg);
				json_decref(params);
				return MIMECTL_EXIT_USAGE;
			}
			json_object_set_new(params, "latency_ms", json_real(ms));
		} else if ((r = common_opt(opt, &socket_opt, &json, usage)) >= 0) {
			json_decref(params);
			return r;
		}
	}
	if (optind < argc || json_object_size(params) == 0) {
		fputs(usage, stderr);
		json_decref(params);
		return MIMECTL_EXIT_USAGE;
	}
	r = open_daemon(socket_opt, &v);
	if (r) {
		json_decref(params);
		return r;
	}
	r = call(&v, "io.mime.SetBudget", params, &reply);
	mimectl_varlink_close(&v);
	if (r)
		return r;
	b = json_object_get(reply, "budgets");
	if (json) {
		print_json(b);
	} else {
		char buf[32];

		printf("memory budget %s, ",
		       json_object_get(b, "memory_bytes")
		               ? human_bytes((double)jint(b, "memory_bytes"), buf, sizeof(buf))
		               : "none");
		if (json_object_get(b, "latency_ms"))
			printf("latency budget %g ms (p95)\n",
			       json_number_value(json_object_get(b, "latency_ms")));
		else
			printf("latency budget none\n");
	}
	json_decref(reply);
	return MIMECTL_EXIT_OK;
}

int mimectl_cmd_phase(int argc, char **argv)
{
	static const char usage[] =
		"usage: mimectl phase N|auto [--json] [--socket PATH]\n\n"
		"Pins the daemon to phase N, or lets it choose by its budgets (auto). Admin.\n";
	json_t *params, *reply = NULL;
	const char *arg = NULL;
	bool json;
	int r;

	/* The phase is the one non-option argument; find it and pass the rest on. */
	for (int i = 1; i < argc; i++) {
		if (argv[i][0] != '-' && (i == 1 || strcmp(argv[i - 1], "--socket") != 0)) {
			arg = argv[i];
			memmove(&argv[i], &argv[i + 1], (size_t)(argc - i) * sizeof(char *));
			argc--;
			break;
		}
	}
	if (!arg) {
		if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
			fputs(usage, stdout);
			return MIMECTL_EXIT_OK;
		}
		fputs(usage, stderr);
		return MIMECTL_EXIT_USAGE;
	}
	if (strcmp(arg, "auto") == 0) {
		params = json_pack("{s:s}", "phase", "auto");
	} else {
		char *end;
		long n = strtol(arg, &end, 10);

		if (*end || n < 1 || n > 1000) {
			fprintf(stderr, "mimectl: phase '%s': want a phase number or auto\n", arg);
			return MIMECTL_EXIT_USAGE;
		}
		params = json_pack("{s:i}", "phase", (int)n);
	}
	r = simple_call(argc, argv, usage, "io.mime.SetPhase", params, &reply, &json);
	if (r)
		return r == HELP_SHOWN ? MIMECTL_EXIT_OK : r;
	if (json)
		print_json(reply);
	else
		printf("phase %lld (%s)\n", jint(reply, "phase"),
		       json_is_true(json_object_get(reply, "pinned")) ? "pinned" : "auto");
	json_decref(reply);
	return MIMECTL_EXIT_OK;
}

int mimectl_cmd_reload(int argc, char **argv)
{
	static const char usage[] =
		"usage: mimectl reload [--socket PATH]\n\n"
		"Makes the daemon re-read its configuration (and the bundle, if it changed); on "
		"an\n"
		"error it keeps serving as before and the error is printed. Admin.\n";
	json_t *reply = NULL;
	bool json;
	int r = simple_call(argc, argv, usage, "io.mime.Reload", NULL, &reply, &json);

	json_decref(reply);
	if (r == HELP_SHOWN)
		return MIMECTL_EXIT_OK;
	if (r == 0 && !json)
		printf("reloaded\n");
	return r;
}

/* ---- watch ------------------------------------------------------------------------------------
 */

static void print_event(json_t *ev)
{
	const char *kind = json_string_value(json_object_get(ev, "kind"));
	json_t *d = json_object_get(ev, "data"), *t, *e;
	double sec = (double)jint(ev, "time_us") / 1e6;
	size_t i;

	if (kind && strcmp(kind, "batch") == 0) {
		printf("%10.3f batch id=%lld size=%lld tasks=", sec, jint(d, "id"),
		       jint(d, "size"));
		json_array_foreach(json_object_get(d, "tasks"), i, t)
			printf("%s%s", i ? "," : "", json_string_value(t));
		printf(" mode=%s phase=%lld forward_us=%lld",
		       json_string_value(json_object_get(d, "mode")), jint(d, "phase"),
		       jint(d, "forward_us"));
		e = json_object_get(d, "energy");
		if (json_is_object(e))
			printf(" energy_mime=%.4g energy_case1=%.4g energy_case2=%.4g "
			       "energy_mode=%s "
			       "saving_case1=%.3g saving_case2=%.3g\n",
			       jnum(json_object_get(e, "case3"), "total"),
			       jnum(json_object_get(e, "case1"), "total"),
			       jnum(json_object_get(e, "case2"), "total"),
			       json_string_value(json_object_get(e, "mode")),
			       jnum(e, "saving_vs_case1"), jnum(e, "saving_vs_case2"));
		else
			printf(" energy=%s\n", json_string_value(e));
	} else {
		char *s = json_dumps(d, JSON_COMPACT | JSON_PRESERVE_ORDER);

		printf("%10.3f %s %s\n", sec, kind ? kind : "?", s ? s : "");
		free(s);
	}
	fflush(stdout);
}

int mimectl_cmd_watch(int argc, char **argv)
{
	static const char usage[] =
		"usage: mimectl watch [--json] [--socket PATH]\n\n"
		"Follows the daemon's events: batch records (tasks, mode, phase, modelled "
		"energy),\n"
		"budget changes, phase switches, reloads. --json prints one JSON event per line.\n";
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},
		{"socket", required_argument, NULL, OPT_SOCKET},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	struct mimectl_varlink v = {.fd = -1};
	const char *socket_opt = NULL;
	bool json = false;
	int opt, r;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "jh", opts, NULL)) != -1)
		if ((r = common_opt(opt, &socket_opt, &json, usage)) >= 0)
			return r;
	if (optind < argc) {
		fputs(usage, stderr);
		return MIMECTL_EXIT_USAGE;
	}
	r = open_daemon(socket_opt, &v);
	if (r)
		return r;
	r = mimectl_varlink_send(&v, "io.mime.WatchEvents", NULL, true);
	if (r == -EPIPE)
		r = 0; /* read the error mimed sent before closing, if any (see varlink.h) */
	for (;;) {
		json_t *msg = NULL, *ev;
		char text[512];

		if (r == 0)
			r = mimectl_varlink_recv(&v, &msg);
		if (r < 0) {
			fprintf(stderr, "mimectl: watch: %s\n",
			        r == -EPIPE ? "mimed closed the connection" : strerror(-r));
			r = MIMECTL_EXIT_CONNECT;
			break;
		}
		if (json_object_get(msg, "error")) {
			const char *name = json_string_value(json_object_get(msg, "error"));

			fprintf(stderr, "mimectl: watch: %s\n",
			        mimectl_error_text(msg, text, sizeof(text)));
			r = name && strcmp(name, "io.mime.ShuttingDown") == 0 ? MIMECTL_EXIT_OK
			                                                      : MIMECTL_EXIT_ERROR;
			json_decref(msg);
			break;
		}
		ev = json_object_get(json_object_get(msg, "parameters"), "event");
		if (json) {
			char *s = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER);

			if (s)
				puts(s);
			free(s);
			fflush(stdout);
		} else {
			print_event(ev);
		}
		json_decref(msg);
		r = 0;
	}
	mimectl_varlink_close(&v);
	return r;
}

/* ---- bench ------------------------------------------------------------------------------------
 */

/* After a send that found v closed: prints the error mimed sent before it closed, or that it
 * closed; returns the exit code. */
static int closed_error(struct mimectl_varlink *v)
{
	json_t *msg = NULL;
	char text[512];
	int r = mimectl_varlink_recv(v, &msg);

	if (r == 0 && json_object_get(msg, "error")) {
		fprintf(stderr, "mimectl: bench: %s\n",
		        mimectl_error_text(msg, text, sizeof(text)));
		json_decref(msg);
		return MIMECTL_EXIT_ERROR;
	}
	json_decref(msg);
	fprintf(stderr, "mimectl: bench: mimed closed the connection\n");
	return MIMECTL_EXIT_CONNECT;
}

struct bench_conn {
	struct mimectl_varlink v;
	uint64_t sent_ns;
	bool busy;
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static double pct_ms(const uint64_t *sorted, size_t n, double p)
{
	size_t k;

	if (!n)
		return 0;
	k = (size_t)ceil(p / 100.0 * (double)n);
	k = k ? k - 1 : 0;
	return (double)sorted[k < n ? k : n - 1] / 1e6;
}

/* A gray 28x28 PGM with a pattern that varies with seed, base64-encoded. */
static char *synthetic_image(int seed)
{
	uint8_t img[15 + 28 * 28];
	int h = snprintf((char *)img, sizeof(img), "P5\n28 28\n255\n");

	for (int y = 0; y < 28; y++)
		for (int x = 0; x < 28; x++)
			img[h + y * 28 + x] = (uint8_t)(((x - 14) * (x - 14) + (y - 14) * (y - 14) <
			                                 (seed % 7 + 3) * (seed % 7 + 3) * 3)
			                                        ? 255
			                                        : (x * y * (seed + 1)) % 64);
	return mimectl_base64_encode(img, (size_t)h + 28 * 28);
}

int mimectl_cmd_bench(int argc, char **argv)
{
	static const char usage[] =
		"usage: mimectl bench [-n REQUESTS] [-c CONCURRENCY] [--tasks A,B,...] [--json] "
		"[--socket PATH] [IMAGE...]\n\n"
		"Closed-loop load: CONCURRENCY connections each send an Infer and wait for its\n"
		"reply before the next, REQUESTS in all (default 1000, concurrency 8), "
		"interleaved\n"
		"across the tasks (default: every task) and images (default: synthetic 28x28).\n"
		"Prints throughput and client-side latency percentiles; Busy replies are "
		"counted.\n";
	static const struct option opts[] = {
		{"requests", required_argument, NULL, 'n'},
		{"concurrency", required_argument, NULL, 'c'},
		{"tasks", required_argument, NULL, 't'},
		{"json", no_argument, NULL, 'j'},
		{"socket", required_argument, NULL, OPT_SOCKET},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	struct bench_conn *conns = NULL;
	struct pollfd *pfd = NULL;
	char **calls = NULL; /* [n_tasks * n_images]: each Infer serialised once, on first use */
	size_t *call_len = NULL;
	const char *socket_opt = NULL;
	char *tasks_opt = NULL, **images = NULL, *tasks[64];
	json_t *reply = NULL, *t;
	uint64_t *lat = NULL, t0, elapsed;
	long n = 1000, conc = 8, sent = 0, done = 0, errors = 0, busy = 0, n_ok = 0;
	int n_tasks = 0, n_images = 0, opt, r;
	bool json = false;
	size_t i;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "n:c:t:jh", opts, NULL)) != -1) {
		char *end;

		if (opt == 'n' || opt == 'c') {
			long x = strtol(optarg, &end, 10);

			if (*end || x < 1 || x > 100000000) {
				fprintf(stderr, "mimectl: -%c wants a positive integer\n", opt);
				return MIMECTL_EXIT_USAGE;
			}
			*(opt == 'n' ? &n : &conc) = x;
		} else if (opt == 't') {
			tasks_opt = optarg;
		} else if ((r = common_opt(opt, &socket_opt, &json, usage)) >= 0) {
			return r;
		}
	}
	if (conc > 4096) {
		fprintf(stderr, "mimectl: -c: at most 4096 connections\n");
		return MIMECTL_EXIT_USAGE;
	}
	conns = calloc((size_t)conc, sizeof(*conns));
	pfd = calloc((size_t)conc, sizeof(*pfd));
	lat = calloc((size_t)n, sizeof(*lat));
	n_images = argc - optind > 0 ? argc - optind : 8;
	images = calloc((size_t)n_images, sizeof(*images));
	if (!conns || !pfd || !lat || !images) {
		r = MIMECTL_EXIT_ERROR;
		goto out;
	}
	for (int k = 0; k < n_images; k++) {
		if (argc - optind > 0) {
			uint8_t *data;
			size_t len;

			r = mimectl_read_file(argv[optind + k], MAX_IMAGE_BYTES, &data, &len);
			if (r < 0) {
				fprintf(stderr, "mimectl: %s: %s\n", argv[optind + k],
				        strerror(-r));
				r = MIMECTL_EXIT_USAGE;
				goto out;
			}
			images[k] = mimectl_base64_encode(data, len);
			free(data);
		} else {
			images[k] = synthetic_image(k);
		}
	}
	for (long k = 0; k < conc; k++)
		conns[k].v.fd = -1;
	for (long k = 0; k < conc; k++) {
		r = open_daemon(socket_opt, &conns[k].v);
		if (r)
			goto out;
	}
	if (tasks_opt) {
		for (char *tok = strtok(tasks_opt, ","); tok && n_tasks < 64;
		     tok = strtok(NULL, ","))
			tasks[n_tasks++] = tok;
	} else {
		r = call(&conns[0].v, "io.mime.ListTasks", NULL, &reply);
		if (r)
			goto out;
		json_array_foreach(json_object_get(reply, "tasks"), i, t) if (n_tasks < 64)
			tasks[n_tasks++] = (char *)json_string_value(json_object_get(t, "name"));
	}
	if (n_tasks == 0) {
		fprintf(stderr, "mimectl: bench: no tasks\n");
		r = MIMECTL_EXIT_ERROR;
		goto out;
	}
	calls = calloc((size_t)n_tasks * (size_t)n_images, sizeof(*calls));
	call_len = calloc((size_t)n_tasks * (size_t)n_images, sizeof(*call_len));
	if (!calls || !call_len) {
		r = MIMECTL_EXIT_ERROR;
		goto out;
	}

	t0 = now_ns();
	while (done < n) {
		for (long k = 0; k < conc && sent < n; k++) {
			size_t c = (size_t)(sent % n_tasks) * (size_t)n_images +
			           (size_t)(sent % n_images);

			if (conns[k].busy)
				continue;
			if (!calls[c])
				calls[c] = mimectl_varlink_format(
					"io.mime.Infer",
					json_pack("{s:s,s:s}", "task", tasks[sent % n_tasks],
				                  "image", images[sent % n_images]),
					false, &call_len[c]);
			r = calls[c] ? mimectl_varlink_send_raw(&conns[k].v, calls[c], call_len[c])
			             : -ENOMEM;
			if (r == -EPIPE) {
				r = closed_error(&conns[k].v);
				goto out;
			}
			if (r < 0) {
				fprintf(stderr, "mimectl: bench: %s\n", strerror(-r));
				r = MIMECTL_EXIT_CONNECT;
				goto out;
			}
			conns[k].busy = true;
			conns[k].sent_ns = now_ns();
			sent++;
		}
		for (long k = 0; k < conc; k++) {
			pfd[k].fd = conns[k].busy ? conns[k].v.fd : -1;
			pfd[k].events = POLLIN;
			pfd[k].revents = 0;
		}
		if (poll(pfd, (nfds_t)conc, -1) < 0 && errno != EINTR) {
			r = MIMECTL_EXIT_ERROR;
			goto out;
		}
		for (long k = 0; k < conc; k++) {
			static const char ok[] = "{\"parameters\":";
			const char *raw;
			size_t raw_len;
			json_t *msg;

			if (!pfd[k].revents)
				continue;
			r = mimectl_varlink_recv_raw(&conns[k].v, &raw, &raw_len);
			if (r < 0) {
				fprintf(stderr, "mimectl: bench: %s\n",
				        r == -EPIPE ? "mimed closed the connection" : strerror(-r));
				r = MIMECTL_EXIT_CONNECT;
				goto out;
			}
			/* The latency is taken when the reply is read: mimed's replies start with
			 * their parameters, so an answer is told from an error without parsing
			 * it (a reply in another key order is parsed) */
			if (raw_len >= sizeof(ok) - 1 && memcmp(raw, ok, sizeof(ok) - 1) == 0) {
				lat[n_ok++] = now_ns() - conns[k].sent_ns;
				conns[k].busy = false;
				done++;
				continue;
			}
			msg = json_loadb(raw, raw_len, 0, NULL);
			if (!msg) {
				fprintf(stderr, "mimectl: bench: a reply that is not JSON\n");
				r = MIMECTL_EXIT_CONNECT;
				goto out;
			}
			if (json_object_get(msg, "error")) {
				const char *name = json_string_value(json_object_get(msg, "error"));

				if (name && strcmp(name, "io.mime.Busy") == 0)
					busy++;
				else if (errors++ == 0) {
					char text[512];

					fprintf(stderr, "mimectl: bench: %s\n",
					        mimectl_error_text(msg, text, sizeof(text)));
				}
			} else {
				lat[n_ok++] = now_ns() - conns[k].sent_ns;
			}
			json_decref(msg);
			conns[k].busy = false;
			done++;
		}
	}
	elapsed = now_ns() - t0;
	qsort(lat, (size_t)n_ok, sizeof(*lat), cmp_u64);
	if (json) {
		json_t *o = json_pack("{s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:f,s:[]}", "requests",
		                      (json_int_t)n, "concurrency", (json_int_t)conc, "ok",
		                      (json_int_t)n_ok, "busy", (json_int_t)busy, "errors",
		                      (json_int_t)errors, "seconds", (double)elapsed / 1e9,
		                      "throughput_rps", (double)n_ok / ((double)elapsed / 1e9),
		                      "p50_ms", pct_ms(lat, (size_t)n_ok, 50), "p95_ms",
		                      pct_ms(lat, (size_t)n_ok, 95), "p99_ms",
		                      pct_ms(lat, (size_t)n_ok, 99), "tasks");

		for (int k = 0; k < n_tasks; k++)
			json_array_append_new(json_object_get(o, "tasks"), json_string(tasks[k]));
		print_json(o);
		json_decref(o);
	} else {
		printf("%ld requests (%ld ok, %ld busy, %ld errors) over %d tasks at concurrency "
		       "%ld "
		       "in %.2f s\n",
		       n, n_ok, busy, errors, n_tasks, conc, (double)elapsed / 1e9);
		printf("throughput  %.1f requests/s\n", (double)n_ok / ((double)elapsed / 1e9));
		printf("latency     p50 %.3f ms, p95 %.3f ms, p99 %.3f ms\n",
		       pct_ms(lat, (size_t)n_ok, 50), pct_ms(lat, (size_t)n_ok, 95),
		       pct_ms(lat, (size_t)n_ok, 99));
	}
	r = errors ? MIMECTL_EXIT_ERROR : MIMECTL_EXIT_OK;
out:
	for (long k = 0; conns && k < conc; k++)
		mimectl_varlink_close(&conns[k].v);
	for (size_t k = 0; calls && k < (size_t)n_tasks * (size_t)n_images; k++)
		free(calls[k]);
	free(calls);
	free(call_len);
	for (int k = 0; images && k < n_images; k++)
		free(images[k]);
	free(images);
	free(conns);
	free(pfd);
	free(lat);
	json_decref(reply);
	return r;
}
