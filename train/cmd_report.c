// SPDX-License-Identifier: MIT
/* cmd_report -- `mime-train report`: (re)generates models/REPORT.md and its SVG figures from
 * measurements it makes itself and from the phase builder's JSON record:
 *   for every task of the bundle, its test split (<data>/<task>/t10k-*-idx*-ubyte.gz) through
 *   the inference engine in three modes: MIME (the bundle's task), conventional (the fine-tuned
 *   copy conventional/<task>/...) and head-only (headonly/<task>/head.*), as `mime-train eval
 *   --mode` does; bytes from the bundle's tensors; training times from its manifest; then
 *   the template (train/report-template.md) with its "@@section@@" lines filled (report.h).
 * The report is written to OUT.tmp and renamed; figures go to --figures (created if missing).
 * Exit codes: 0 ok, 1 failure (message on stderr), 2 usage. */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/bundle.h"
#include "lib/model.h"
#include "train/cmd.h"
#include "train/data.h"
#include "train/report.h"

static void report_usage(FILE *f)
{
	fprintf(f, "usage: mime-train report --bundle FILE [--data DIR] [--phases-json FILE]\n"
	           "                         [--out FILE] [--figures DIR] [--template FILE]\n"
	           "                         [--channel-bundle FILE] [--train-bench FILE]\n"
	           "                         [--threads N] [--limit N]\n"
	           "  --data      test splits, DIR/<task>/t10k-{images-idx3,labels-idx1}-ubyte.gz\n"
	           "              (default $MIME_DATA, else ~/.cache/mime/data)\n"
	           "  --out       the report (default models/REPORT.md)\n"
	           "  --figures   SVG figures (default: figures/ beside the report)\n"
	           "  --template  markdown with @@section@@ lines (default "
	           "train/report-template.md)\n"
	           "  --channel-bundle  a bundle of the same parent whose tasks have per-channel\n"
	           "              thresholds: measured too, for the per-channel byte goal\n"
	           "  --train-bench  bench/train.sh --json's record: the training-time goal\n"
	           "  --threads   engine threads (default 1)   --limit  test images per task (0: "
	           "all)\n");
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A view of tensor name that must hold exactly n_floats F32 values, or NULL. */
static const float *report_tensor(const struct mime_bundle *b, const char *name, size_t n_floats)
{
	struct mime_tensor_view v;

	if (mime_bundle_tensor(b, name, &v) < 0 || v.dtype != MIME_DTYPE_F32 ||
	    v.n_bytes != n_floats * sizeof(float))
		return NULL;
	return v.data;
}

/* Points task's views in m at the baseline's tensors (as `mime-train eval --mode` does) and
 * leaves m with that one task; returns 0 or -1 when the bundle lacks them. */
static int report_use_baseline(const struct mime_bundle *b, struct mime_model *m, int task,
                               enum mimetrain_report_mode mode)
{
	const char *pre = mode == MIMETRAIN_REPORT_CONVENTIONAL ? "conventional" : "headonly";
	struct mime_task_params *tp = &m->tasks[task];
	struct mime_shape shapes[MIME_MAX_LAYERS];
	char name[MIME_NAME_MAX * 2 + 32];
	const float *hw;
	int feat;

	if (mime_graph_check(&m->graph, shapes, NULL) < 0)
		return -1;
	feat = (int)mime_shape_size(&shapes[m->graph.n_layers - 1]);
	snprintf(name, sizeof(name), "%s/%s/head.weight", pre, tp->name);
	hw = report_tensor(b, name, (size_t)tp->n_classes * feat);
	snprintf(name, sizeof(name), "%s/%s/head.bias", pre, tp->name);
	mime_task_set_head(tp, hw, report_tensor(b, name, (size_t)tp->n_classes));
	if (!tp->head_w || !tp->head_b)
		return -1;
	mime_task_relu(tp);
	for (int i = 0; mode == MIMETRAIN_REPORT_CONVENTIONAL && i < m->graph.n_layers; i++) {
		const struct mime_layer_spec *l = &m->graph.layers[i];
		long nw;

		if (l->kind != MIME_LAYER_CONV && l->kind != MIME_LAYER_FC)
			continue;
		nw = mime_graph_layer_params(l, i ? &shapes[i - 1] : &m->graph.input) - l->out;
		snprintf(name, sizeof(name), "%s/%s/%s.weight", pre, tp->name, l->name);
		m->weight[i] = report_tensor(b, name, (size_t)nw);
		snprintf(name, sizeof(name), "%s/%s/%s.bias", pre, tp->name, l->name);
		m->bias[i] = report_tensor(b, name, (size_t)l->out);
		if (!m->weight[i] || !m->bias[i])
			return -1;
	}
	m->tasks[0] = *tp;
	m->n_tasks = 1;
	return 0;
}

/* Sum of the bytes of every tensor whose name starts with prefix. */
static int64_t report_prefix_bytes(const struct mime_bundle *b, const char *prefix)
{
	const size_t n = mime_bundle_n_tensors(b), len = strlen(prefix);
	int64_t sum = 0;

	for (size_t i = 0; i < n; i++) {
		struct mime_tensor_view v;

		mime_bundle_tensor_at(b, i, &v);
		if (strncmp(v.name, prefix, len) == 0)
			sum += (int64_t)v.n_bytes;
	}
	return sum;
}

static double jnum_path(const json_t *o, const char *k1, const char *k2)
{
	const json_t *v = json_object_get(json_object_get(o, k1), k2);

	return json_is_number(v) ? json_number_value(v) : NAN;
}

/* Training times and sizes recorded in the manifest: the task's "training" object and the
 * provenance's "baselines"/<task>/{finetune,head_only}/"training". */
static void report_recorded(const struct mime_manifest *mf, int i, struct mimetrain_report_task *t)
{
	static const char *const keys[] = {NULL, "finetune", "head_only"};
	json_t *extra = NULL, *prov = NULL;

	for (int m = 0; m < MIMETRAIN_REPORT_N_MODES; m++)
		t->train_seconds[m] = t->train_cpu_seconds[m] = t->train_epochs[m] = NAN;
	t->train_images = NAN;
	if (mf->tasks[i].extra_json)
		extra = json_loads(mf->tasks[i].extra_json, 0, NULL);
	if (mf->provenance_json)
		prov = json_loads(mf->provenance_json, 0, NULL);
	t->train_seconds[0] = jnum_path(extra, "training", "train_seconds");
	t->train_cpu_seconds[0] = jnum_path(extra, "training", "train_cpu_seconds");
	t->train_epochs[0] = jnum_path(extra, "training", "epochs");
	t->train_images = jnum_path(extra, "training", "train_images");
	for (int m = 1; m < MIMETRAIN_REPORT_N_MODES; m++) {
		const json_t *base = json_object_get(
			json_object_get(json_object_get(prov, "baselines"), t->name), keys[m]);

		t->train_seconds[m] = jnum_path(base, "training", "train_seconds");
		t->train_cpu_seconds[m] = jnum_path(base, "training", "train_cpu_seconds");
		t->train_epochs[m] = jnum_path(base, "training", "epochs");
	}
	json_decref(extra);
	json_decref(prov);
}

/* Measures task i of b in every mode it has on its test split; a task without data keeps
 * n_test = 0. Returns 0 or -1 (message printed). */
static int report_measure_task(const struct mime_bundle *b, int i, const char *data_dir, int limit,
                               int threads, struct mimetrain_report_task *t)
{
	const struct mime_manifest *mf = mime_bundle_manifest(b);
	const struct mime_task_spec *ts = &mf->tasks[i];
	struct mimetrain_data d = {0};
	struct mimetrain_taskset set = {0};
	struct mime_errinfo ei = {0};
	char images[4096], labels[4096];
	int r, status = -1;

	if ((size_t)snprintf(images, sizeof(images), "%s/%s/t10k-images-idx3-ubyte.gz", data_dir,
	                     ts->name) >= sizeof(images) ||
	    (size_t)snprintf(labels, sizeof(labels), "%s/%s/t10k-labels-idx1-ubyte.gz", data_dir,
	                     ts->name) >= sizeof(labels)) {
		fprintf(stderr, "mime-train: report: data path too long\n");
		return -1;
	}
	if (access(images, R_OK) != 0 || access(labels, R_OK) != 0) {
		fprintf(stderr, "mime-train: report: no test split for '%s' in %s, skipped\n",
		        ts->name, data_dir);
		return 0;
	}
	r = mimetrain_data_load(images, labels, ts->n_classes, limit, &d, &ei);
	if (r == 0)
		r = mimetrain_taskset_make(&d, &ts->input, &set, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s: %s\n", images,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		goto out;
	}
	t->n_test = set.n;
	for (int m = 0; m < MIMETRAIN_REPORT_N_MODES; m++) {
		struct mime_model model = {0};
		int task = i;

		r = mime_model_from_bundle(b, 0, &model, &ei);
		if (r == 0 && m != MIMETRAIN_REPORT_MIME) {
			if (report_use_baseline(b, &model, i, m) < 0) {
				mime_model_fini(&model);
				continue; /* the bundle has no such baseline for the task */
			}
			task = 0;
		}
		if (r == 0)
			r = mimetrain_engine_eval(&model, task, &set, threads, &t->eval[m], &ei);
		mime_model_fini(&model);
		if (r < 0) {
			fprintf(stderr, "mime-train: %s, %s: %s\n", ts->name,
			        m == 0   ? "MIME"
			        : m == 1 ? "conventional"
			                 : "head-only",
			        ei.msg[0] ? ei.msg : mime_strerror(r));
			goto out;
		}
		t->has[m] = 1;
		fprintf(stderr,
		        "mime-train: report: %-8s %-12s accuracy %.4f on %d images (%.1f s)\n",
		        ts->name,
		        m == 0   ? "mime"
		        : m == 1 ? "conventional"
		                 : "head-only",
		        t->eval[m].accuracy, set.n, t->eval[m].seconds);
	}
	status = 0;
out:
	mimetrain_taskset_fini(&set);
	mimetrain_data_fini(&d);
	return status;
}

/* Everything section A needs, measured from b. Returns 0 or -1 (message printed). */
static int report_measure(const struct mime_bundle *b, const char *path, const char *data_dir,
                          int limit, int threads, struct mimetrain_report_mime *r)
{
	const struct mime_manifest *mf = mime_bundle_manifest(b);
	const struct mime_graph *g = &mf->graph;
	struct mime_shape shapes[MIME_MAX_LAYERS];
	char prefix[MIME_NAME_MAX + 32];

	if (mime_graph_check(g, shapes, NULL) < 0)
		return -1;
	r->bundle = path;
	r->bundle_bytes = (int64_t)mime_bundle_size_bytes(b);
	r->parent_bytes = report_prefix_bytes(b, "parent/");
	for (size_t i = 0; i < mime_bundle_n_tensors(b); i++) {
		struct mime_tensor_view v;

		mime_bundle_tensor_at(b, i, &v);
		if (strncmp(v.name, "parent/", 7) == 0)
			r->parent_checksum = mimetrain_fnv1a(v.data, v.n_bytes, r->parent_checksum);
	}
	r->data_dir = data_dir;
	r->threads = threads;
	r->n_tasks = mf->n_tasks;
	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];

		if (l->kind == MIME_LAYER_CONV || l->kind == MIME_LAYER_FC)
			r->parent_weights +=
				mime_graph_layer_params(l, i ? &shapes[i - 1] : &g->input);
		if (mime_graph_layer_masked(g, i))
			snprintf(r->layer[r->n_masked++], MIME_NAME_MAX, "%s", l->name);
	}
	for (int i = 0; i < mf->n_tasks; i++) {
		struct mimetrain_report_task *t = &r->tasks[i];

		snprintf(t->name, sizeof(t->name), "%s", mf->tasks[i].name);
		t->granularity = mf->tasks[i].thresholds;
		/* the task's whole-parent tensors; its per-phase ones (task/<task>/phase<p>/)
		 * belong to the phases and are not a cost of MIME */
		snprintf(prefix, sizeof(prefix), "task/%s/", t->name);
		t->mime_bytes = report_prefix_bytes(b, prefix);
		snprintf(prefix, sizeof(prefix), "task/%s/phase", t->name);
		t->mime_bytes -= report_prefix_bytes(b, prefix);
		snprintf(prefix, sizeof(prefix), "task/%s/head.", t->name);
		t->head_bytes = report_prefix_bytes(b, prefix);
		snprintf(prefix, sizeof(prefix), "conventional/%s/", t->name);
		t->copy_bytes = report_prefix_bytes(b, prefix);
		t->channel_bytes = t->head_bytes;
		t->head_weights = (int64_t)mf->tasks[i].n_classes *
		                  (int64_t)mime_shape_size(&shapes[g->n_layers - 1]);
		t->head_stored = t->head_weights;
		{
			/* a sparse head (bundle.h) stores its non-zero weights only */
			struct mime_tensor_view sv;

			snprintf(prefix, sizeof(prefix), "task/%s/head.weight%s", t->name,
			         MIME_SPARSE_VALUES);
			if (mime_bundle_tensor(b, prefix, &sv) == 0)
				t->head_stored = sv.shape[0];
		}
		{
			/* stored as the task's head is (F32, or F16 after `bundle half`) */
			struct mime_tensor_view hv;
			size_t elem = sizeof(float);

			snprintf(prefix, sizeof(prefix), "task/%s/head.weight", t->name);
			if (mime_bundle_tensor(b, prefix, &hv) == 0)
				elem = mime_dtype_size(hv.dtype);
			strcat(prefix, MIME_SPARSE_VALUES); /* (room: prefix holds any task's) */
			if (mime_bundle_tensor(b, prefix, &hv) == 0)
				elem = mime_dtype_size(hv.dtype);
			for (int k = 0; k < g->n_layers; k++)
				if (mime_graph_layer_masked(g, k))
					t->channel_bytes += (int64_t)elem * g->layers[k].out;
		}
		report_recorded(mf, i, t);
		if (report_measure_task(b, i, data_dir, limit, threads, t) < 0)
			return -1;
	}
	return 0;
}

/* Opens the bundle at path (*ret_bundle, for the caller to close) and measures it; NULL
 * (message printed) on failure. */
static struct mimetrain_report_mime *report_open_measure(const char *path, const char *data,
                                                         int limit, int threads,
                                                         struct mime_bundle **ret_bundle)
{
	struct mimetrain_report_mime *m;
	struct mime_errinfo ei = {0};
	int r = mime_bundle_open(path, ret_bundle, &ei);

	if (r < 0) {
		fprintf(stderr, "mime-train: %s: %s\n", path,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		return NULL;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		fprintf(stderr, "mime-train: out of memory\n");
		return NULL;
	}
	if (report_measure(*ret_bundle, path, data, limit, threads, m) < 0) {
		free(m);
		return NULL;
	}
	return m;
}

/* The whole text of path (malloc'ed, NUL-terminated) or NULL with errno set. */
static char *report_slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)n + 1);
		if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
			errno = EIO;
		} else if (buf) {
			buf[n] = '\0';
		}
	}
	fclose(f);
	return buf;
}

int mimetrain_cmd_report(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"bundle", required_argument, NULL, 'b'},
		{"data", required_argument, NULL, 'd'},
		{"phases-json", required_argument, NULL, 'p'},
		{"channel-bundle", required_argument, NULL, 'c'},
		{"train-bench", required_argument, NULL, 'B'},
		{"out", required_argument, NULL, 'o'},
		{"figures", required_argument, NULL, 'f'},
		{"template", required_argument, NULL, 'T'},
		{"threads", required_argument, NULL, 't'},
		{"limit", required_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *bundle = NULL, *data = getenv("MIME_DATA"), *phases = NULL, *cbundle = NULL;
	const char *train_bench = NULL;
	const char *out_path = "models/REPORT.md", *figures = NULL;
	const char *template_path = "train/report-template.md";
	char data_buf[4096], fig_buf[4096], link_buf[4096], tmp[4200], generated[8192];
	struct mimetrain_report_mime *mime = NULL, *channel = NULL;
	struct mime_bundle *b = NULL, *cb = NULL;
	struct mime_errinfo ei = {0};
	char *text = NULL;
	FILE *out = NULL;
	int c, r, threads = 1, limit = 0, status = 1;
	double t0 = now_s(), t_measured;
	size_t gl;

	optind = 1;
	while ((c = getopt_long(argc, argv, "b:d:p:c:B:o:f:T:t:n:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'b':
			bundle = optarg;
			break;
		case 'd':
			data = optarg;
			break;
		case 'p':
			phases = optarg;
			break;
		case 'c':
			cbundle = optarg;
			break;
		case 'B':
			train_bench = optarg;
			break;
		case 'o':
			out_path = optarg;
			break;
		case 'f':
			figures = optarg;
			break;
		case 'T':
			template_path = optarg;
			break;
		case 't':
			threads = atoi(optarg);
			break;
		case 'n':
			limit = atoi(optarg);
			break;
		case 'h':
			report_usage(stdout);
			return 0;
		default:
			report_usage(stderr);
			return 2;
		}
	}
	if (!bundle || threads < 1 || threads > 64 || limit < 0 || optind != argc) {
		report_usage(stderr);
		return 2;
	}
	if (!data) {
		snprintf(data_buf, sizeof(data_buf), "%s/.cache/mime/data",
		         getenv("HOME") ? getenv("HOME") : ".");
		data = data_buf;
	}
	/* figures: default DIR(out)/figures, linked from the report as "figures" */
	{
		const char *slash = strrchr(out_path, '/');
		const int dir_len = slash ? (int)(slash - out_path) : 0;

		if (!figures) {
			snprintf(fig_buf, sizeof(fig_buf), "%.*s%sfigures", dir_len, out_path,
			         slash ? "/" : "");
			figures = fig_buf;
		}
		if (slash && strncmp(figures, out_path, (size_t)dir_len + 1) == 0)
			snprintf(link_buf, sizeof(link_buf), "%s", figures + dir_len + 1);
		else
			snprintf(link_buf, sizeof(link_buf), "%s", figures);
	}
	text = report_slurp(template_path);
	if (!text) {
		fprintf(stderr, "mime-train: %s: %s\n", template_path, strerror(errno));
		return 1;
	}
	if (mkdir(figures, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "mime-train: %s: %s\n", figures, strerror(errno));
		goto out;
	}
	if (threads > 1)
		openblas_set_num_threads(1);
	mime = report_open_measure(bundle, data, limit, threads, &b);
	if (!mime)
		goto out;
	if (cbundle) {
		channel = report_open_measure(cbundle, data, limit, threads, &cb);
		if (!channel)
			goto out;
	}
	t_measured = now_s() - t0;

	{
		const time_t now = time(NULL);
		struct tm tm;

		gmtime_r(&now, &tm);
		gl = (size_t)snprintf(
			generated, sizeof(generated),
			"<!-- Generated by mime-train report from %s; edit %s, not "
			"this file. -->\n\nGenerated on %04d-%02d-%02d %02d:%02d UTC by "
			"`mime-train",
			template_path, template_path, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
			tm.tm_hour, tm.tm_min);
		for (int i = 0; i < argc && gl < sizeof(generated) - 2; i++)
			gl += (size_t)snprintf(generated + gl, sizeof(generated) - gl, " %s",
			                       argv[i]);
		if (gl < sizeof(generated) - 2)
			snprintf(generated + gl, sizeof(generated) - gl, "`.");
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", out_path);
	out = fopen(tmp, "w");
	if (!out) {
		fprintf(stderr, "mime-train: %s: %s\n", tmp, strerror(errno));
		goto out;
	}
	r = mimetrain_report_template(out, text,
	                              &(struct mimetrain_report_ctx){
					      .mime = mime,
					      .channel = channel,
					      .train_bench = train_bench,
					      .phases_json = phases,
					      .figures_dir = figures,
					      .figures_link = link_buf,
					      .generated = generated,
					      .seconds = t_measured,
				      },
	                              &ei);
	if (fclose(out) != 0 && r == 0)
		r = -errno;
	out = NULL;
	if (r < 0) {
		fprintf(stderr, "mime-train: %s: %s\n", out_path,
		        ei.msg[0] ? ei.msg : mime_strerror(r));
		unlink(tmp);
		goto out;
	}
	if (rename(tmp, out_path) < 0) {
		fprintf(stderr, "mime-train: %s: %s\n", out_path, strerror(errno));
		unlink(tmp);
		goto out;
	}
	fprintf(stderr, "mime-train: report: wrote %s and figures in %s (%.1f s)\n", out_path,
	        figures, now_s() - t0);
	status = 0;
out:
	free(mime);
	free(channel);
	mime_bundle_close(b);
	mime_bundle_close(cb);
	free(text);
	return status;
}
