// SPDX-License-Identifier: MIT
/* cmd_bundle -- mime-train bundle inspect | verify | import.
 * Ownership: each subcommand opens, uses and closes its own bundles and writer.
 * Threads: main thread only. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/bundle.h"
#include "lib/half.h"
#include "lib/phase.h"
#include "train/cmd.h"
#include "train/graphyaml.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: mime-train bundle inspect FILE [--json]\n"
	           "       mime-train bundle verify FILE\n"
	           "       mime-train bundle import --graph NET.yaml --weights FILE.safetensors\n"
	           "                                -o OUT.mime [--task NAME] [--classes A,B,...]\n"
	           "       mime-train bundle half IN.mime -o OUT.mime\n"
	           "\n"
	           "inspect  the manifest and the tensor table of a bundle (or of a plain\n"
	           "         safetensors file), and its phases when it has some: measured\n"
	           "         accuracy, latency and speed (1/ms), memory, nonzero parameters,\n"
	           "         which tasks can run in each and their accuracy there\n"
	           "verify   validate a bundle completely; exit 0 when it is good\n"
	           "import   make a bundle from PyTorch weights (a state_dict saved with\n"
	           "         safetensors) as the network description names them; BatchNorm\n"
	           "         layers are folded into the preceding conv/fc\n"
	           "half     store every task's head and thresholds (task/*, every phase's too)\n"
	           "         as F16 instead of F32: half the bytes per task; the parent and the\n"
	           "         baselines stay F32. Prints the bytes and the largest rounding error;\n"
	           "         measure the accuracy after (mime-train eval / report)\n");
}

/* Opens path as a plain safetensors file, then, when it carries a mime manifest, again as
 * a bundle so that the whole bundle is validated. */
static int open_any(const char *path, struct mime_bundle **ret, struct mime_errinfo *ei)
{
	struct mime_bundle *st = NULL;
	int r, is_bundle;

	r = mime_safetensors_open(path, &st, ei);
	if (r < 0)
		return r;
	is_bundle = mime_bundle_metadata(st, "mime") != NULL;
	if (!is_bundle) {
		*ret = st;
		return 0;
	}
	mime_bundle_close(st);
	return mime_bundle_open(path, ret, ei);
}

static void shape_str(char *buf, size_t size, const struct mime_tensor_view *v)
{
	size_t o = snprintf(buf, size, "[");

	for (int i = 0; i < v->ndim && o < size; i++)
		o += snprintf(buf + o, size - o, "%s%lld", i ? "," : "", (long long)v->shape[i]);
	if (o < size)
		snprintf(buf + o, size - o, "]");
}

static size_t tensor_offset(const struct mime_bundle *b, const struct mime_tensor_view *v)
{
	struct mime_tensor_view first;

	mime_bundle_tensor_at(b, 0, &first); /* file order starts at data offset 0 */
	return (size_t)((const char *)v->data - (const char *)first.data);
}

static void print_manifest(const struct mime_manifest *m)
{
	static const char *const thr[] = {"none", "element", "channel"};
	struct mime_shape shapes[MIME_MAX_LAYERS];
	long params = 0, macs = 0;

	if (mime_graph_check(&m->graph, shapes, NULL) < 0)
		return;
	printf("graph: input %dx%dx%d, %d layers\n", m->graph.input.c, m->graph.input.h,
	       m->graph.input.w, m->graph.n_layers);
	for (int i = 0; i < m->graph.n_layers; i++) {
		const struct mime_layer_spec *l = &m->graph.layers[i];
		const struct mime_shape *in = i ? &shapes[i - 1] : &m->graph.input;
		char desc[64] = "";

		if (l->kind == MIME_LAYER_CONV)
			snprintf(desc, sizeof(desc), "%d %dx%d/%d pad %d%s", l->out, l->kernel,
			         l->kernel, l->stride, l->pad,
			         l->act == MIME_ACT_RELU ? " relu" : "");
		else if (l->kind == MIME_LAYER_MAXPOOL)
			snprintf(desc, sizeof(desc), "%dx%d/%d", l->kernel, l->kernel, l->stride);
		else if (l->kind == MIME_LAYER_FC)
			snprintf(desc, sizeof(desc), "%d%s", l->out,
			         l->act == MIME_ACT_RELU ? " relu" : "");
		printf("  %-10s %-8s %-20s -> %dx%dx%d  params %ld\n", l->name,
		       mime_layer_kind_name(l->kind), desc, shapes[i].c, shapes[i].h, shapes[i].w,
		       mime_graph_layer_params(l, in));
		params += mime_graph_layer_params(l, in);
		macs += mime_graph_layer_macs(l, in, &shapes[i]);
	}
	printf("  parent: %ld parameters, %ld MACs per sample\n", params, macs);
	printf("tasks: %d\n", m->n_tasks);
	for (int k = 0; k < m->n_tasks; k++) {
		const struct mime_task_spec *t = &m->tasks[k];

		printf("  %s: %d classes (%s%s), input %dx%dx%d %s%s, thresholds %s", t->name,
		       t->n_classes, t->class_names[0], t->n_classes > 1 ? ", ..." : "",
		       t->input.channels, t->input.height, t->input.width,
		       t->input.fit == MIME_FIT_PAD ? "pad" : "stretch",
		       t->input.invert ? " inverted" : "",
		       (unsigned)t->thresholds < 3 ? thr[t->thresholds] : "?");
		if (t->accuracy >= 0)
			printf(", accuracy %.2f%%", 100.0 * t->accuracy);
		printf("\n");
	}
	if (m->provenance_json)
		printf("provenance: %s\n", m->provenance_json);
}

/* Phase p's parameters with its fine-grain masks applied (weights of kept groups + biases of
 * active kernels), and its masks' kept / total groups; -1 when a mask does not decode. */
struct phase_count {
	long params, kept_groups[MIME_MAX_LAYERS], groups[MIME_MAX_LAYERS];
};

static int phase_count(const struct mime_bundle *b, int p, struct phase_count *ret)
{
	const struct mime_manifest *m = mime_bundle_manifest(b);
	const struct mime_phase_spec *ps = &m->phases[p - 1];
	struct mime_shape in[MIME_MAX_LAYERS], out[MIME_MAX_LAYERS];

	memset(ret, 0, sizeof(*ret));
	if (mime_phase_shapes(&m->graph, ps->k_active, in, out) < 0)
		return -1;
	for (int i = 0; i < m->graph.n_layers; i++) {
		const struct mime_layer_spec *l = &m->graph.layers[i];
		int k = out[i].c;
		long crs = l->kind == MIME_LAYER_CONV ? (long)in[i].c * l->kernel * l->kernel
		                                      : mime_shape_size(&in[i]);
		struct mime_tensor_view v;
		char name[MIME_NAME_MAX + 32];
		uint8_t *keep;
		size_t n;

		if (l->kind != MIME_LAYER_CONV && l->kind != MIME_LAYER_FC)
			continue;
		ret->params += (long)k * crs + k;
		if (!ps->fine[i])
			continue;
		n = mime_phase_mask_groups(k, (int)crs, ps->wuv);
		snprintf(name, sizeof(name), "phase/%d/%s.mask", p, l->name);
		keep = malloc(n ? n : 1);
		if (!keep || mime_bundle_tensor(b, name, &v) < 0 ||
		    mime_phase_mask_decode(v.dtype, v.data, v.ndim == 1 ? (size_t)v.shape[0] : 0, n,
		                           keep, NULL) < 0) {
			free(keep);
			return -1;
		}
		ret->groups[i] = (long)n;
		for (size_t g = 0; g < n; g++) {
			long row = (long)(g / (size_t)crs) * ps->wuv;
			long h = k - row < ps->wuv ? k - row
			                           : ps->wuv; /* the last group may be short */

			ret->kept_groups[i] += keep[g];
			if (!keep[g])
				ret->params -= h;
		}
		free(keep);
	}
	return 0;
}

/* Whether task t has tensors of its own for phase p (else: the parent's, when the phase
 * is the whole parent, or it cannot run there). */
static int task_has_phase(const struct mime_bundle *b, const struct mime_task_spec *t, int p)
{
	char name[MIME_NAME_MAX + 48];

	snprintf(name, sizeof(name), "task/%s/phase%d/head.weight", t->name, p);
	return mime_bundle_has_tensor(b, name);
}

/* Whether phase ps is the whole parent: every layer's kernels = out, no fine layer. */
static int phase_is_whole(const struct mime_manifest *m, const struct mime_phase_spec *ps)
{
	for (int i = 0; i < m->graph.n_layers; i++)
		if (ps->fine[i] || (ps->k_active[i] && ps->k_active[i] != m->graph.layers[i].out))
			return 0;
	return 1;
}

/* The rule of mime_model_phase(): a task runs in phase p with tensors of its own for it,
 * or with its parent tensors when the phase is the whole parent. */
static int task_can_run(const struct mime_bundle *b, int t, int p)
{
	const struct mime_manifest *m = mime_bundle_manifest(b);

	return task_has_phase(b, &m->tasks[t], p) || phase_is_whole(m, &m->phases[p - 1]);
}

/* The phase's "task_accuracy" object (task -> accuracy, written by the phase builder into
 * the phase's extra keys), a new reference; NULL when it has none. */
static json_t *phase_task_accuracy(const struct mime_phase_spec *ps)
{
	json_t *extra, *ta;

	if (!ps->extra_json)
		return NULL;
	extra = json_loads(ps->extra_json, 0, NULL);
	ta = json_object_get(extra, "task_accuracy");
	ta = json_is_object(ta) ? json_incref(ta) : NULL;
	json_decref(extra);
	return ta;
}

/* Task t's accuracy in ta, or -1 when ta does not say. */
static double task_accuracy_of(json_t *ta, const char *task)
{
	json_t *a = json_object_get(ta, task);

	return json_is_number(a) ? json_number_value(a) : -1;
}

static void print_phases(const struct mime_bundle *b, const struct mime_manifest *m)
{
	char buf[32];

	if (m->n_phases == 0)
		return;
	printf("phases: %d, smallest first (phase 0 = the whole parent); measured, as the "
	       "manifest says:\n",
	       m->n_phases);
	printf("  %-5s %-12s %8s %10s %10s %12s %12s\n", "PHASE", "NAME", "ACCURACY", "LATENCY",
	       "SPEED", "MEMORY", "NONZERO");
	for (int p = 1; p <= m->n_phases; p++) {
		const struct mime_phase_spec *ps = &m->phases[p - 1];

		printf("  %-5d %-12.12s", p, ps->name);
		if (ps->accuracy >= 0)
			snprintf(buf, sizeof(buf), "%.2f%%", 100.0 * ps->accuracy);
		printf(" %8s", ps->accuracy >= 0 ? buf : "-");
		if (ps->latency_ms >= 0)
			snprintf(buf, sizeof(buf), "%.3f ms", ps->latency_ms);
		printf(" %10s", ps->latency_ms >= 0 ? buf : "-");
		if (ps->latency_ms > 0)
			snprintf(buf, sizeof(buf), "%.3g/ms", 1.0 / ps->latency_ms);
		printf(" %10s", ps->latency_ms > 0 ? buf : "-");
		if (ps->memory_bytes >= 0)
			snprintf(buf, sizeof(buf), "%lld", (long long)ps->memory_bytes);
		printf(" %12s", ps->memory_bytes >= 0 ? buf : "-");
		if (ps->nonzero_params >= 0)
			snprintf(buf, sizeof(buf), "%lld", (long long)ps->nonzero_params);
		printf(" %12s\n", ps->nonzero_params >= 0 ? buf : "-");
	}
	for (int p = 1; p <= m->n_phases; p++) {
		const struct mime_phase_spec *ps = &m->phases[p - 1];
		json_t *ta = phase_task_accuracy(ps);
		struct phase_count c;
		int ok = phase_count(b, p, &c) == 0, n_fine = 0, n_run = 0;

		printf("  %d %s: wuv %d", p, ps->name, ps->wuv);
		if (phase_is_whole(m, ps))
			printf(", the whole parent");
		if (ok)
			printf(", %ld parameters with masks applied", c.params);
		printf("\n    kernels:");
		for (int i = 0; i < m->graph.n_layers; i++)
			if (ps->k_active[i])
				printf(" %s %d/%d", m->graph.layers[i].name, ps->k_active[i],
				       m->graph.layers[i].out);
		printf("\n    fine:");
		for (int i = 0; i < m->graph.n_layers; i++) {
			if (!ps->fine[i])
				continue;
			n_fine++;
			if (ok)
				printf(" %s (%ld/%ld groups kept)", m->graph.layers[i].name,
				       c.kept_groups[i], c.groups[i]);
			else
				printf(" %s", m->graph.layers[i].name);
		}
		printf("%s\n    tasks:", n_fine ? "" : " none");
		for (int t = 0; t < m->n_tasks; t++) {
			const char *name = m->tasks[t].name;
			double acc = task_accuracy_of(ta, name);

			if (!task_can_run(b, t, p)) {
				printf(" %s (cannot run: no head or thresholds for it)", name);
				continue;
			}
			n_run++;
			printf(" %s", name);
			if (acc >= 0)
				printf(" %.2f%%", 100.0 * acc);
			if (!task_has_phase(b, &m->tasks[t], p))
				printf(" (the parent's tensors)");
		}
		printf("\n");
		/* mime_model_phase() enters a phase only when every task can run in it */
		if (n_run < m->n_tasks)
			printf("    not enterable as it is: %d of %d tasks can run in it\n", n_run,
			       m->n_tasks);
		json_decref(ta);
	}
}

static int inspect_json(const char *path, const struct mime_bundle *b)
{
	const struct mime_manifest *m = mime_bundle_manifest(b);
	json_t *root = json_object(), *tensors = json_array(), *man = NULL;
	char *s;

	if (m) {
		man = json_loads(m->json, 0, NULL);
		if (!man) {
			json_decref(root);
			json_decref(tensors);
			return -ENOMEM;
		}
	}
	json_object_set_new(root, "file", json_string(path));
	json_object_set_new(root, "size_bytes",
	                    json_integer((json_int_t)mime_bundle_size_bytes(b)));
	json_object_set_new(root, "manifest", man ? man : json_null());
	for (size_t i = 0; i < mime_bundle_n_tensors(b); i++) {
		struct mime_tensor_view v;
		json_t *t = json_object(), *shape = json_array();

		mime_bundle_tensor_at(b, i, &v);
		for (int d = 0; d < v.ndim; d++)
			json_array_append_new(shape, json_integer(v.shape[d]));
		json_object_set_new(t, "name", json_string(v.name));
		json_object_set_new(t, "dtype", json_string(mime_dtype_name(v.dtype)));
		json_object_set_new(t, "shape", shape);
		json_object_set_new(t, "bytes", json_integer((json_int_t)v.n_bytes));
		json_object_set_new(t, "offset", json_integer((json_int_t)tensor_offset(b, &v)));
		json_array_append_new(tensors, t);
	}
	json_object_set_new(root, "tensors", tensors);
	if (m && m->n_phases) {
		/* Each phase's measured keys from the manifest (accuracy, latency_ms and its
		 * inverse speed_per_ms, memory_bytes, nonzero_params: those it has), its
		 * "task_accuracy" object when its extra keys carry one, and what the manifest
		 * does not say: parameters with the masks applied, which tasks have tensors of
		 * their own ("tasks_with_tensors"), which can run in it ("tasks": those, or
		 * every task in a phase equal to the whole parent) and whether every task can
		 * ("enterable": what mime_model_phase() and the daemon need). */
		json_t *phases = json_array();

		for (int p = 1; phases && p <= m->n_phases; p++) {
			const struct mime_phase_spec *ps = &m->phases[p - 1];
			struct phase_count c;
			json_t *o = json_object(), *own = json_array(), *run = json_array();
			json_t *ta = phase_task_accuracy(ps);

			json_object_set_new(o, "phase", json_integer(p));
			json_object_set_new(o, "name", json_string(ps->name));
			json_object_set_new(o, "whole", json_boolean(phase_is_whole(m, ps)));
			if (phase_count(b, p, &c) == 0)
				json_object_set_new(o, "params", json_integer(c.params));
			/* the manifest's measured keys, when it has them */
			if (ps->accuracy >= 0)
				json_object_set_new(o, "accuracy", json_real(ps->accuracy));
			if (ps->latency_ms >= 0)
				json_object_set_new(o, "latency_ms", json_real(ps->latency_ms));
			if (ps->latency_ms > 0)
				json_object_set_new(o, "speed_per_ms",
				                    json_real(1.0 / ps->latency_ms));
			if (ps->memory_bytes >= 0)
				json_object_set_new(o, "memory_bytes",
				                    json_integer((json_int_t)ps->memory_bytes));
			if (ps->nonzero_params >= 0)
				json_object_set_new(o, "nonzero_params",
				                    json_integer((json_int_t)ps->nonzero_params));
			for (int t = 0; t < m->n_tasks; t++) {
				if (task_has_phase(b, &m->tasks[t], p))
					json_array_append_new(own, json_string(m->tasks[t].name));
				if (task_can_run(b, t, p))
					json_array_append_new(run, json_string(m->tasks[t].name));
			}
			json_object_set_new(o, "tasks_with_tensors", own);
			json_object_set_new(
				o, "enterable",
				json_boolean(json_array_size(run) == (size_t)m->n_tasks));
			json_object_set_new(o, "tasks", run);
			if (ta)
				json_object_set_new(o, "task_accuracy", ta);
			json_array_append_new(phases, o);
		}
		json_object_set_new(root, "phases", phases);
	}
	s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (!s)
		return -ENOMEM;
	printf("%s\n", s);
	free(s);
	return 0;
}

static int cmd_inspect(int argc, char **argv)
{
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	const char *path = NULL;
	int as_json = 0, r;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			as_json = 1;
		else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (argv[i][0] == '-' || path) {
			fprintf(stderr, "mime-train: bundle inspect: unexpected argument '%s'\n",
			        argv[i]);
			return 2;
		} else
			path = argv[i];
	}
	if (!path) {
		usage(stderr);
		return 2;
	}
	r = open_any(path, &b, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s: %s\n", path,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		return 1;
	}
	if (as_json) {
		r = inspect_json(path, b);
	} else {
		const struct mime_manifest *m = mime_bundle_manifest(b);

		printf("%s: %zu bytes, %zu tensors, %s\n", path, mime_bundle_size_bytes(b),
		       mime_bundle_n_tensors(b),
		       m ? "mime bundle" : "plain safetensors (no mime manifest)");
		if (m) {
			print_manifest(m);
			print_phases(b, m);
		}
		printf("tensors:\n  %-40s %-5s %-18s %12s %12s\n", "NAME", "DTYPE", "SHAPE",
		       "BYTES", "OFFSET");
		for (size_t i = 0; i < mime_bundle_n_tensors(b); i++) {
			struct mime_tensor_view v;
			char shape[96];

			mime_bundle_tensor_at(b, i, &v);
			shape_str(shape, sizeof(shape), &v);
			printf("  %-40s %-5s %-18s %12zu %12zu\n", v.name, mime_dtype_name(v.dtype),
			       shape, v.n_bytes, tensor_offset(b, &v));
		}
	}
	mime_bundle_close(b);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s: %s\n", path, mime_strerror(r));
		return 1;
	}
	return 0;
}

static int cmd_verify(int argc, char **argv)
{
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	const struct mime_manifest *m;
	int r;

	if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		usage(stdout);
		return 0;
	}
	if (argc != 2 || argv[1][0] == '-') {
		usage(stderr);
		return 2;
	}
	r = mime_bundle_open(argv[1], &b, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s: %s\n", argv[1],
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		return 1;
	}
	m = mime_bundle_manifest(b);
	printf("%s: OK (%zu tensors, %zu bytes, %d layers, %d tasks", argv[1],
	       mime_bundle_n_tensors(b), mime_bundle_size_bytes(b), m->graph.n_layers, m->n_tasks);
	if (m->n_phases)
		printf(", %d phases", m->n_phases);
	printf(")\n");
	mime_bundle_close(b);
	return 0;
}

/* Replaces d's class names with the comma-separated list s. */
static int set_classes(struct mimetrain_netdesc *d, const char *s)
{
	char *copy = strdup(s), *save = NULL, *tok;
	char **names;
	int n = 1;

	if (!copy)
		return -ENOMEM;
	for (const char *p = s; *p; p++)
		n += *p == ',';
	names = calloc(n, sizeof(char *));
	if (!names) {
		free(copy);
		return -ENOMEM;
	}
	n = 0;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		names[n] = strdup(tok);
		if (!names[n])
			break;
		n++;
	}
	free(copy);
	mimetrain_netdesc_free(d);
	d->classes = names;
	d->n_classes = n;
	if (n == 0 || tok)
		return n == 0 ? -EINVAL : -ENOMEM;
	return 0;
}

static char *provenance(int argc, char **argv, const char *weights, const char *graph)
{
	json_t *p = json_object();
	char date[32], *cmd = NULL, *s;
	size_t len = strlen("mime-train bundle") + 1;
	time_t now = time(NULL);
	struct tm tm;

	for (int i = 0; i < argc; i++)
		len += strlen(argv[i]) + 1;
	cmd = malloc(len);
	if (!p || !cmd) {
		json_decref(p);
		free(cmd);
		return NULL;
	}
	strcpy(cmd, "mime-train bundle");
	for (int i = 0; i < argc; i++) {
		strcat(cmd, " ");
		strcat(cmd, argv[i]);
	}
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
	json_object_set_new(p, "command", json_string(cmd));
	json_object_set_new(p, "source", json_string(weights));
	json_object_set_new(p, "graph", json_string(graph));
	json_object_set_new(p, "date", json_string(date));
	s = json_dumps(p, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(p);
	free(cmd);
	return s;
}

static int cmd_import(int argc, char **argv)
{
	static const struct option opts[] = {
		{"graph", required_argument, NULL, 'g'},
		{"weights", required_argument, NULL, 'w'},
		{"output", required_argument, NULL, 'o'},
		{"task", required_argument, NULL, 't'},
		{"classes", required_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *graph = NULL, *weights = NULL, *out = NULL, *task = NULL, *classes = NULL;
	struct mimetrain_netdesc d;
	struct mime_manifest m = {0};
	struct mime_errinfo ei = {0};
	struct mime_bundle *st = NULL;
	struct mime_bundle_writer *w = NULL;
	int c, r, ret = 1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "g:w:o:t:c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'g':
			graph = optarg;
			break;
		case 'w':
			weights = optarg;
			break;
		case 'o':
			out = optarg;
			break;
		case 't':
			task = optarg;
			break;
		case 'c':
			classes = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			return 2;
		}
	}
	if (optind != argc || !graph || !weights || !out) {
		fprintf(stderr, "mime-train: bundle import needs --graph, --weights and -o\n");
		return 2;
	}

	r = mimetrain_graphyaml_load(graph, &d, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s\n", ei.msg);
		return 1;
	}
	if (task) {
		if (!d.has_head) {
			fprintf(stderr, "mime-train: %s: --task needs a head: in the description\n",
			        graph);
			goto out_desc;
		}
		snprintf(d.head_task, sizeof(d.head_task), "%s", task);
	}
	if (classes) {
		r = set_classes(&d, classes);
		if (r < 0) {
			fprintf(stderr, "mime-train: --classes '%s': %s\n", classes,
			        r == -EINVAL ? "no class names" : mime_strerror(r));
			goto out_desc;
		}
	}
	r = mime_safetensors_open(weights, &st, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s: %s\n", weights, ei.msg);
		goto out_desc;
	}
	r = mime_bundle_writer_create(&w);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s\n", mime_strerror(r));
		goto out_st;
	}
	r = mimetrain_import(&d, st, w, &m, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s: %s\n", weights,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out_writer;
	}
	m.provenance_json = provenance(argc, argv, weights, graph);
	if (!m.provenance_json) {
		fprintf(stderr, "mime-train: %s\n", mime_strerror(-ENOMEM));
		goto out_manifest;
	}
	r = mime_bundle_writer_write(w, &m, out, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s: %s\n", out, ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out_manifest;
	}
	printf("%s: %d layers%s%s imported from %s\n", out, d.graph.n_layers,
	       m.n_tasks ? " and task " : "", m.n_tasks ? m.tasks[0].name : "", weights);
	ret = 0;
out_manifest:
	mime_manifest_free(&m);
out_writer:
	mime_bundle_writer_destroy(w);
out_st:
	mime_bundle_close(st);
out_desc:
	mimetrain_netdesc_free(&d);
	return ret;
}

static int cmd_half(int argc, char **argv)
{
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	struct mime_bundle_writer *w = NULL;
	struct mime_manifest m = {0};
	const char *in = NULL, *out = NULL;
	size_t before = 0, after = 0, n_conv = 0;
	double worst = 0, worst_abs = 0;
	uint16_t *h = NULL;
	int r, status = 1;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
			out = argv[++i];
		} else if (argv[i][0] != '-' && !in) {
			in = argv[i];
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (!in || !out) {
		usage(stderr);
		return 2;
	}
	r = mime_bundle_open(in, &b, &ei);
	if (r == 0)
		r = mime_manifest_parse(mime_bundle_manifest(b)->json,
		                        strlen(mime_bundle_manifest(b)->json), &m, &ei);
	if (r == 0)
		r = mime_bundle_writer_create(&w);
	for (size_t i = 0; r == 0 && i < mime_bundle_n_tensors(b); i++) {
		struct mime_tensor_view v;
		size_t n;

		mime_bundle_tensor_at(b, i, &v);
		if (strncmp(v.name, "task/", 5) != 0 || v.dtype != MIME_DTYPE_F32) {
			r = mime_bundle_writer_add(w, v.name, v.dtype, v.ndim, v.shape, v.data);
			continue;
		}
		n = v.n_bytes / sizeof(float);
		free(h);
		h = malloc(sizeof(uint16_t) * (n ? n : 1));
		if (!h) {
			r = -ENOMEM;
			break;
		}
		for (size_t j = 0; j < n; j++) {
			float f;
			double err;

			memcpy(&f, (const uint8_t *)v.data + 4 * j, sizeof(f));
			h[j] = mime_float_to_half(f);
			if (!isfinite(mime_half_to_float(h[j])) && isfinite(f)) {
				r = mime_errinfo_set(&ei, MIME_EINVAL,
				                     "%s[%zu] = %g does not fit in F16", v.name, j,
				                     (double)f);
				break;
			}
			/* relative error where halves are normal (|f| >= 2^-14), absolute below */
			err = fabs((double)mime_half_to_float(h[j]) - f);
			if (fabs(f) >= 0x1p-14) {
				if (err / fabs(f) > worst)
					worst = err / fabs(f);
			} else if (err > worst_abs) {
				worst_abs = err;
			}
		}
		if (r == 0)
			r = mime_bundle_writer_add(w, v.name, MIME_DTYPE_F16, v.ndim, v.shape, h);
		before += v.n_bytes;
		after += n * sizeof(uint16_t);
		n_conv++;
	}
	if (r == 0) {
		json_t *p = mimetrain_provenance_add_step(m.provenance_json, "bundle", argc, argv,
		                                          NULL);
		char *prov = json_dumps(p, JSON_COMPACT);

		json_decref(p);
		free(m.provenance_json);
		m.provenance_json = prov;
		r = mime_bundle_writer_write(w, &m, out, &ei);
	}
	if (r < 0) {
		fprintf(stderr, "mime-train: bundle half: %s\n",
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	printf("%s: %zu task tensors F32 -> F16, %zu -> %zu bytes; largest rounding error "
	       "%.2e relative (|x| >= 2^-14), %.2e absolute (|x| < 2^-14); bundle %zu -> ",
	       out, n_conv, before, after, worst, worst_abs, mime_bundle_size_bytes(b));
	mime_bundle_close(b);
	b = NULL;
	r = mime_bundle_open(out, &b, &ei);
	if (r < 0) {
		fprintf(stderr, "\nmime-train: %s: %s\n", out,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	printf("%zu bytes\n", mime_bundle_size_bytes(b));
	status = 0;
out:
	free(h);
	mime_bundle_writer_destroy(w);
	mime_manifest_free(&m);
	mime_bundle_close(b);
	return status;
}

int mimetrain_cmd_bundle(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "inspect") == 0)
		return cmd_inspect(argc - 1, argv + 1);
	if (strcmp(argv[1], "verify") == 0)
		return cmd_verify(argc - 1, argv + 1);
	if (strcmp(argv[1], "import") == 0)
		return cmd_import(argc - 1, argv + 1);
	if (strcmp(argv[1], "half") == 0)
		return cmd_half(argc - 1, argv + 1);
	fprintf(stderr, "mime-train: bundle: unknown subcommand '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
