// SPDX-License-Identifier: MIT
/* report -- see report.h: template, MIME sections, storage model, hypervolume. */
#include "train/report.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tools/svg.h"

static const char *const mode_names[MIMETRAIN_REPORT_N_MODES] = {"MIME", "full fine-tune",
                                                                 "head-only"};

double mimetrain_hypervolume(int n, const double *speed, const double *acc, double ref_speed,
                             double ref_acc)
{
	double hv = 0, best = ref_acc, last_s = INFINITY, last_a = INFINITY;

	/* take the points by decreasing speed (ties: higher accuracy first) */
	for (;;) {
		int pick = -1;

		for (int i = 0; i < n; i++) {
			const double s = speed[i], a = acc[i];

			if (!isfinite(s) || !isfinite(a) || s <= ref_speed || a <= ref_acc)
				continue;
			if (s > last_s || (s == last_s && a >= last_a))
				continue; /* taken already */
			if (pick < 0 || s > speed[pick] || (s == speed[pick] && a > acc[pick]))
				pick = i;
		}
		if (pick < 0)
			break;
		last_s = speed[pick];
		last_a = acc[pick];
		if (last_a > best) {
			hv += (last_s - ref_speed) * (last_a - best);
			best = last_a;
		}
	}
	return hv;
}

int mimetrain_report_storage(const struct mimetrain_report_mime *r, int n_max, int64_t *ret_mime,
                             int64_t *ret_conv)
{
	const int known = r->n_tasks < n_max ? r->n_tasks : n_max;
	int64_t mime = r->parent_bytes, conv = 0, sum_mime = 0, sum_conv = 0;

	for (int i = 0; i < r->n_tasks; i++) {
		const struct mimetrain_report_task *t = &r->tasks[i];

		sum_mime += t->mime_bytes;
		sum_conv += t->copy_bytes > 0 ? t->copy_bytes : r->parent_bytes + t->head_bytes;
	}
	for (int n = 1; n <= n_max; n++) {
		if (n <= r->n_tasks) {
			const struct mimetrain_report_task *t = &r->tasks[n - 1];

			mime += t->mime_bytes;
			conv += t->copy_bytes > 0 ? t->copy_bytes : r->parent_bytes + t->head_bytes;
		} else if (r->n_tasks > 0) {
			mime += (sum_mime + r->n_tasks / 2) / r->n_tasks;
			conv += (sum_conv + r->n_tasks / 2) / r->n_tasks;
		}
		ret_mime[n - 1] = mime;
		ret_conv[n - 1] = conv;
	}
	return known;
}

/* v with fmt, or "-" when v is not a number. */
static void put_num(FILE *f, const char *fmt, double v)
{
	if (isnan(v))
		fputc('-', f);
	else
		fprintf(f, fmt, v);
}

static double pct(double fraction)
{
	return 100.0 * fraction;
}

/* Accuracy of task t in mode m as a percentage, NAN when not measured. */
static double acc_pct(const struct mimetrain_report_task *t, int m)
{
	return t->has[m] && t->n_test > 0 ? pct(t->eval[m].accuracy) : NAN;
}

static int report_figure_path(const struct mimetrain_report_ctx *ctx, const char *file, char *buf,
                              size_t n)
{
	if ((size_t)snprintf(buf, n, "%s/%s", ctx->figures_dir, file) >= n)
		return -ENAMETOOLONG;
	return 0;
}

static int section_header(FILE *out, struct mimetrain_report_ctx *ctx)
{
	const struct mimetrain_report_mime *r = ctx->mime;
	long images = 0;

	for (int i = 0; i < r->n_tasks; i++)
		for (int m = 0; m < MIMETRAIN_REPORT_N_MODES; m++)
			images += r->tasks[i].has[m] ? r->tasks[i].n_test : 0;
	if (ctx->generated)
		fprintf(out, "%s\n", ctx->generated);
	fprintf(out,
	        "Measured from `%s` (%lld bytes) and the test splits in `%s`: %ld images "
	        "through the inference engine (`lib/engine`, the daemon's code path) with %d "
	        "engine thread%s",
	        r->bundle, (long long)r->bundle_bytes, r->data_dir, images, r->threads,
	        r->threads == 1 ? "" : "s");
	if (ctx->seconds >= 0)
		fprintf(out, ", in %.1f s of wall time", ctx->seconds);
	fputs(".\n", out);
	return 0;
}

static int section_accuracy(FILE *out, struct mimetrain_report_ctx *ctx)
{
	const struct mimetrain_report_mime *r = ctx->mime;
	const char *groups[MIME_MAX_TASKS];
	double v[MIME_MAX_TASKS * MIMETRAIN_REPORT_N_MODES];
	char path[4096];
	int r2;

	fputs("| task | test images | MIME | full fine-tune | head-only | MIME - fine-tune "
	      "(points) "
	      "| MIME - head-only (points) |\n|---|---|---|---|---|---|---|\n",
	      out);
	for (int i = 0; i < r->n_tasks; i++) {
		const struct mimetrain_report_task *t = &r->tasks[i];

		fprintf(out, "| %s%s | %d | ", t->name, i == 0 ? " (the parent's task)" : "",
		        t->n_test);
		for (int m = 0; m < MIMETRAIN_REPORT_N_MODES; m++) {
			put_num(out, "%.2f", acc_pct(t, m));
			fputs(" | ", out);
		}
		put_num(out, "%+.2f", acc_pct(t, 0) - acc_pct(t, 1));
		fputs(" | ", out);
		put_num(out, "%+.2f", acc_pct(t, 0) - acc_pct(t, 2));
		fputs(" |\n", out);
		groups[i] = t->name;
		for (int m = 0; m < MIMETRAIN_REPORT_N_MODES; m++) {
			const double a = acc_pct(t, m);

			v[i * MIMETRAIN_REPORT_N_MODES + m] = isnan(a) ? 0 : 100 - a;
		}
	}
	fputs("\nTraining as recorded in the bundle's manifest when each model was trained (not "
	      "re-measured here; wall times on a shared machine vary from run to run):\n\n"
	      "| task | MIME train images | MIME s (epochs) | fine-tune s (epochs) | "
	      "head-only s (epochs) |\n|---|---|---|---|---|\n",
	      out);
	for (int i = 0; i < r->n_tasks; i++) {
		const struct mimetrain_report_task *t = &r->tasks[i];

		fprintf(out, "| %s | ", t->name);
		put_num(out, "%.0f", t->train_images);
		for (int m = 0; m < MIMETRAIN_REPORT_N_MODES; m++) {
			fputs(" | ", out);
			if (m > 0 && t->train_epochs[m] == 0) {
				fputs("the parent (0 epochs)", out);
				continue;
			}
			put_num(out, "%.0f", t->train_seconds[m]);
			fputs(" (", out);
			put_num(out, "%.0f", t->train_epochs[m]);
			fputs(")", out);
		}
		fputs(" |\n", out);
	}
	r2 = report_figure_path(ctx, "accuracy.svg", path, sizeof(path));
	if (r2 == 0 && r->n_tasks > 0)
		r2 = svg_bar_chart(
			path, &(struct svg_bar_chart){
				      .title = "Test error per task and mode (lower is better)",
				      .subtitle = "through the inference engine, test splits; "
						  "accuracy = 100 - error",
				      .y_label = "test error (%)",
				      .n_groups = r->n_tasks,
				      .n_bars = MIMETRAIN_REPORT_N_MODES,
				      .n_stacks = 1,
				      .group_names = groups,
				      .bar_names = mode_names,
				      .v = v,
			      });
	if (r2 < 0)
		return r2;
	if (r->n_tasks > 0) {
		fprintf(out, "\n![Test error per task and mode](%s/accuracy.svg)\n",
		        ctx->figures_link);
		ctx->n_figures++;
	}
	return 0;
}

/* One of the paper's Table II / III layouts: task, accuracy, then sparsity per layer. */
static void sparsity_table(FILE *out, const struct mimetrain_report_mime *r, int m,
                           const char *what)
{
	fprintf(out, "%s\n\n| task | test accuracy (%%) |", what);
	for (int k = 0; k < r->n_masked; k++)
		fprintf(out, " %s |", r->layer[k]);
	fputs("\n|---|---|", out);
	for (int k = 0; k < r->n_masked; k++)
		fputs("---|", out);
	fputc('\n', out);
	for (int i = 0; i < r->n_tasks; i++) {
		const struct mimetrain_report_task *t = &r->tasks[i];

		fprintf(out, "| %s | ", t->name);
		put_num(out, "%.2f", acc_pct(t, m));
		fputs(" |", out);
		for (int k = 0; k < r->n_masked; k++) {
			fputc(' ', out);
			put_num(out, "%.4f",
			        t->has[m] && t->n_test > 0 ? t->eval[m].sparsity[k] : NAN);
			fputs(" |", out);
		}
		fputc('\n', out);
	}
}

static int section_sparsity(FILE *out, struct mimetrain_report_ctx *ctx)
{
	static const char *const bars[MIMETRAIN_REPORT_N_MODES] = {
		"MIME thresholds", "fine-tuned copy, ReLU", "frozen parent, ReLU (head-only)"};
	const struct mimetrain_report_mime *r = ctx->mime;
	const char *groups[MIME_MAX_LAYERS];

	sparsity_table(out, r, MIMETRAIN_REPORT_MIME,
	               "MIME (the paper's Table II): the task's thresholds on the frozen parent, "
	               "mean fraction of zero outputs per masked layer:");
	fputc('\n', out);
	sparsity_table(out, r, MIMETRAIN_REPORT_CONVENTIONAL,
	               "Conventional (the paper's Table III): the task's fine-tuned copy, sparsity "
	               "due to ReLU:");
	fputc('\n', out);
	sparsity_table(out, r, MIMETRAIN_REPORT_HEAD_ONLY,
	               "Head-only: the frozen parent with ReLU and the task's head (the parent's "
	               "own ReLU sparsity on the task's images):");
	for (int k = 0; k < r->n_masked; k++)
		groups[k] = r->layer[k];
	fputc('\n', out);
	for (int i = 0; i < r->n_tasks; i++) {
		const struct mimetrain_report_task *t = &r->tasks[i];
		double v[MIME_MAX_LAYERS * MIMETRAIN_REPORT_N_MODES];
		char path[4096], file[MIME_NAME_MAX + 32], title[MIME_NAME_MAX + 64];
		int rr;

		if (t->n_test == 0 || r->n_masked == 0)
			continue;
		for (int k = 0; k < r->n_masked; k++)
			for (int m = 0; m < MIMETRAIN_REPORT_N_MODES; m++)
				v[k * MIMETRAIN_REPORT_N_MODES + m] =
					t->has[m] ? t->eval[m].sparsity[k] : 0;
		snprintf(file, sizeof(file), "sparsity-%s.svg", t->name);
		snprintf(title, sizeof(title), "Neuron sparsity per masked layer: %s", t->name);
		rr = report_figure_path(ctx, file, path, sizeof(path));
		if (rr == 0)
			rr = svg_bar_chart(
				path, &(struct svg_bar_chart){
					      .title = title,
					      .subtitle = "mean fraction of zero outputs, test "
							  "split; dashed: the 0.55 goal",
					      .y_label = "sparsity",
					      .n_groups = r->n_masked,
					      .n_bars = MIMETRAIN_REPORT_N_MODES,
					      .n_stacks = 1,
					      .group_names = groups,
					      .bar_names = bars,
					      .v = v,
					      .ref = 0.55,
				      });
		if (rr < 0)
			return rr;
		fprintf(out, "![Sparsity per layer, %s](%s/%s)\n", t->name, ctx->figures_link,
		        file);
		ctx->n_figures++;
	}
	return 0;
}

static int section_bytes(FILE *out, struct mimetrain_report_ctx *ctx)
{
	const struct mimetrain_report_mime *r = ctx->mime;
	const double pb = (double)r->parent_bytes;

	fprintf(out,
	        "Parent weights and biases (`parent/*`): %lld bytes (%lld floats). Bytes are the "
	        "bundle's tensors as stored (F32, or F16 for task tensors written by `bundle "
	        "half`); per-channel thresholds ([C] per masked layer) are not in this bundle and "
	        "are computed from the shapes at the size of the task's stored elements.\n\n",
	        (long long)r->parent_bytes, (long long)r->parent_weights);
	fputs("| task | thresholds | MIME thresholds + head | % of parent | per-channel thresholds "
	      "+ head | % of parent | head alone | fine-tuned copy (weights + head) |\n"
	      "|---|---|---|---|---|---|---|---|\n",
	      out);
	for (int i = 0; i < r->n_tasks; i++) {
		const struct mimetrain_report_task *t = &r->tasks[i];
		static const char *const gran[] = {"none (ReLU)", "per element", "per channel"};

		fprintf(out, "| %s | %s | %lld | %.1f%% | %lld | %.2f%% | %lld | ", t->name,
		        gran[t->granularity], (long long)t->mime_bytes,
		        100.0 * (double)t->mime_bytes / pb, (long long)t->channel_bytes,
		        100.0 * (double)t->channel_bytes / pb, (long long)t->head_bytes);
		if (t->copy_bytes > 0)
			fprintf(out, "%lld |\n", (long long)t->copy_bytes);
		else
			fputs("- |\n", out);
	}
	return 0;
}

static int section_storage(FILE *out, struct mimetrain_report_ctx *ctx)
{
	static const char *const series[] = {"MIME: parent + thresholds and heads",
	                                     "conventional: a fine-tuned copy per task"};
	const struct mimetrain_report_mime *r = ctx->mime;
	int64_t mime[MIMETRAIN_REPORT_MAX_N], conv[MIMETRAIN_REPORT_MAX_N];
	double x[MIMETRAIN_REPORT_MAX_N], y[2 * MIMETRAIN_REPORT_MAX_N];
	char path[4096], title[128], sub[160];
	int known, rr;

	if (r->n_tasks == 0) {
		fputs("The bundle has no task.\n", out);
		return 0;
	}
	known = mimetrain_report_storage(r, MIMETRAIN_REPORT_MAX_N, mime, conv);
	fprintf(out,
	        "n <= %d measured (the bundle's tasks, in its order), beyond: the mean task. MIME "
	        "= the parent's weights + n tasks' thresholds and heads; conventional = n "
	        "fine-tuned copies (weights + head; for the parent's task its copy is the "
	        "parent).\n\n| n | MIME bytes | conventional bytes | conventional / MIME |\n"
	        "|---|---|---|---|\n",
	        known);
	for (int n = 1; n <= MIMETRAIN_REPORT_MAX_N; n++) {
		fprintf(out, "| %d%s | %lld | %lld | %.2fx |\n", n,
		        n <= known ? "" : " (extrapolated)", (long long)mime[n - 1],
		        (long long)conv[n - 1], (double)conv[n - 1] / (double)mime[n - 1]);
		x[n - 1] = n;
		y[n - 1] = (double)mime[n - 1] / 1e6;
		y[MIMETRAIN_REPORT_MAX_N + n - 1] = (double)conv[n - 1] / 1e6;
	}
	snprintf(title, sizeof(title),
	         "Storage, parent + n tasks (n = %d: conventional / MIME = %.2fx)", known,
	         (double)conv[known - 1] / (double)mime[known - 1]);
	snprintf(sub, sizeof(sub),
	         "filled: the bundle's %d task%s, measured; open: extrapolated with the mean task",
	         known, known == 1 ? "" : "s");
	rr = report_figure_path(ctx, "storage.svg", path, sizeof(path));
	if (rr == 0)
		rr = svg_line_chart(path, &(struct svg_line_chart){
						  .title = title,
						  .subtitle = sub,
						  .x_label = "tasks n",
						  .y_label = "bytes (MB = 10^6 bytes)",
						  .n_points = MIMETRAIN_REPORT_MAX_N,
						  .n_series = 2,
						  .x = x,
						  .y = y,
						  .series_names = series,
						  .n_measured = known,
					  });
	if (rr < 0)
		return rr;
	fprintf(out, "\n![Storage vs number of tasks](%s/storage.svg)\n", ctx->figures_link);
	ctx->n_figures++;
	return 0;
}

/* The task of r named name, or NULL. */
static const struct mimetrain_report_task *task_named(const struct mimetrain_report_mime *r,
                                                      const char *name)
{
	for (int i = 0; i < r->n_tasks; i++)
		if (strcmp(r->tasks[i].name, name) == 0)
			return &r->tasks[i];
	return NULL;
}

/* The per-channel bundle (--channel-bundle): its tasks as stored and measured, beside the
 * main bundle's fine-tune and head-only baselines of the same task. */
static int section_channel(FILE *out, struct mimetrain_report_ctx *ctx)
{
	static const char *const gran[] = {"none (ReLU)", "per element", "per channel"};
	const struct mimetrain_report_mime *c = ctx->channel, *r = ctx->mime;

	if (!c) {
		fputs("No per-channel bundle was measured (`mime-train report --channel-bundle "
		      "FILE`).\n",
		      out);
		return 0;
	}
	fprintf(out,
	        "Measured from `%s` (%lld bytes): its parent tensors are %s the demo bundle's "
	        "(%lld bytes, FNV-1a %016llx). Bytes are the task's tensors as stored; a head "
	        "pruned by `--head-density` is stored sparse (a bit per weight + its non-zero "
	        "weights, docs/ARCHITECTURE.md). Fine-tune and head-only: the demo bundle's "
	        "baselines of the task.\n\n",
	        c->bundle, (long long)c->bundle_bytes,
	        c->parent_checksum == r->parent_checksum ? "byte-identical to" : "**not** those of",
	        (long long)c->parent_bytes, (unsigned long long)c->parent_checksum);
	fputs("| task | thresholds | head weights stored | thresholds + head bytes | % of parent "
	      "| accuracy | fine-tune | head-only | - fine-tune (points) | sparsity",
	      out);
	for (int k = 0; k < c->n_masked; k++)
		fprintf(out, " %s", c->layer[k]);
	fputs(" |\n|---|---|---|---|---|---|---|---|---|---|\n", out);
	for (int i = 0; i < c->n_tasks; i++) {
		const struct mimetrain_report_task *t = &c->tasks[i],
						   *base = task_named(r, t->name);
		const double ft = base ? acc_pct(base, MIMETRAIN_REPORT_CONVENTIONAL) : NAN;

		fprintf(out, "| %s | %s | %lld of %lld | %lld | %.2f%% | ", t->name,
		        gran[t->granularity], (long long)t->head_stored, (long long)t->head_weights,
		        (long long)t->mime_bytes,
		        100.0 * (double)t->mime_bytes / (double)c->parent_bytes);
		put_num(out, "%.2f", acc_pct(t, MIMETRAIN_REPORT_MIME));
		fputs(" | ", out);
		put_num(out, "%.2f", ft);
		fputs(" | ", out);
		put_num(out, "%.2f", base ? acc_pct(base, MIMETRAIN_REPORT_HEAD_ONLY) : NAN);
		fputs(" | ", out);
		put_num(out, "%+.2f", acc_pct(t, MIMETRAIN_REPORT_MIME) - ft);
		fputs(" |", out);
		for (int k = 0; k < c->n_masked; k++) {
			fputc(' ', out);
			put_num(out, "%.3f",
			        t->has[MIMETRAIN_REPORT_MIME] && t->n_test
			                ? t->eval[MIMETRAIN_REPORT_MIME].sparsity[k]
			                : NAN);
		}
		fputs(" |\n", out);
	}
	return 0;
}

static const char *met(int ok);

/* The training-time goal from bench/train.sh --json's record at path (the modes alternating
 * round by round on one machine: the medians of the training loop's CPU time), then the
 * bundle-size row that ends the goal table. */
static int goal_train_bench(FILE *out, const char *path, const struct mimetrain_report_mime *r)
{
	json_t *j = json_load_file(path, 0, NULL);
	json_t *modes = json_object_get(j, "modes");
	const double mime = json_number_value(
		json_object_get(json_object_get(modes, "mime"), "train_cpu_seconds"));
	const double ft = json_number_value(
		json_object_get(json_object_get(modes, "finetune"), "train_cpu_seconds"));
	const double ratio = json_number_value(
		json_object_get(json_object_get(modes, "mime"), "cpu_vs_finetune"));
	const char *date = json_string_value(json_object_get(j, "date"));
	const char *task = json_string_value(json_object_get(j, "task"));
	const char *bundle = json_string_value(json_object_get(j, "bundle"));

	fprintf(out,
	        "| thresholds faster than fine-tuning (`bench/train.sh`, the modes alternating "
	        "round by round, training loop CPU time: %s) | ",
	        path);
	if (!(mime > 0) || !(ft > 0) || !(ratio > 0) || !date || !task)
		fputs("- (the record is unreadable or incomplete) | not measured |\n", out);
	else
		fprintf(out,
		        "%s%s%s, %lld epochs, %lld rounds, %lld thread(s), %s: thresholds %.1f s "
		        "vs fine-tune %.1f s (medians), %.2fx | %s |\n",
		        task, bundle ? " on " : "", bundle ? bundle : "",
		        json_integer_value(json_object_get(j, "epochs")),
		        json_integer_value(json_object_get(j, "rounds")),
		        json_integer_value(json_object_get(j, "threads")), date, mime, ft, ratio,
		        met(ratio < 1 && mime < ft));
	json_decref(j);
	fprintf(out, "| demo bundle <= 16 MiB | %lld bytes | %s |\n", (long long)r->bundle_bytes,
	        met(r->bundle_bytes <= 16 << 20));
	return 0;
}

static const char *met(int ok)
{
	return ok ? "met" : "missed";
}

static int section_goals(FILE *out, struct mimetrain_report_ctx *ctx)
{
	const struct mimetrain_report_mime *r = ctx->mime;
	int ok, any;

	fputs("Children are the bundle's tasks after the first (the parent's own task). Every "
	      "check is computed from the tables above; \"not measured\" when a number is "
	      "missing.\n\n| goal (issue 3) | measured | met? |\n|---|---|---|\n",
	      out);
	/* accuracy vs fine-tune and head-only */
	for (int g = 0; g < 2; g++) {
		const int base =
			g == 0 ? MIMETRAIN_REPORT_CONVENTIONAL : MIMETRAIN_REPORT_HEAD_ONLY;

		fputs(g == 0 ? "| child MIME accuracy within 1.5 points of its full fine-tune | "
		             : "| child MIME accuracy above head-only | ",
		      out);
		ok = 1;
		any = 0;
		for (int i = 1; i < r->n_tasks; i++) {
			const double d = acc_pct(&r->tasks[i], 0) - acc_pct(&r->tasks[i], base);

			if (isnan(d))
				continue;
			fprintf(out, "%s%s %+.2f", any ? ", " : "", r->tasks[i].name, d);
			ok &= g == 0 ? d >= -1.5 : d > 0;
			any = 1;
		}
		fprintf(out, "%s | %s |\n", any ? " points" : "-", any ? met(ok) : "not measured");
	}
	/* sparsity */
	fputs("| MIME sparsity >= 0.55 in every masked layer | ", out);
	ok = 1;
	any = 0;
	for (int i = 0; i < r->n_tasks; i++) {
		const struct mimetrain_report_task *t = &r->tasks[i];
		double lo = INFINITY, hi = -INFINITY;

		if (!t->has[0] || t->n_test == 0)
			continue;
		for (int k = 0; k < r->n_masked; k++) {
			lo = fmin(lo, t->eval[0].sparsity[k]);
			hi = fmax(hi, t->eval[0].sparsity[k]);
		}
		fprintf(out, "%s%s %.3f-%.3f", any ? ", " : "", t->name, lo, hi);
		ok &= lo >= 0.55;
		any = 1;
	}
	fprintf(out, "%s | %s |\n", any ? "" : "-", any ? met(ok) : "not measured");
	fputs("| MIME sparsity above the baselines' ReLU sparsity, every layer | ", out);
	ok = 1;
	any = 0;
	for (int i = 0; i < r->n_tasks; i++) {
		const struct mimetrain_report_task *t = &r->tasks[i];
		int below = 0, n = 0;

		if (!t->has[0] || t->n_test == 0)
			continue;
		for (int m = 1; m < MIMETRAIN_REPORT_N_MODES; m++)
			for (int k = 0; t->has[m] && k < r->n_masked; k++) {
				below += t->eval[0].sparsity[k] <= t->eval[m].sparsity[k];
				n++;
			}
		if (n == 0)
			continue;
		fprintf(out, "%s%s: %d of %d layer x baseline pairs above", any ? "; " : "",
		        t->name, n - below, n);
		ok &= below == 0;
		any = 1;
	}
	fprintf(out, "%s | %s |\n", any ? "" : "-", any ? met(ok) : "not measured");
	/* bytes: per element the demo bundle's tasks; per channel those of the per-channel
	 * bundle when it has the same parent, else computed from the demo bundle's shapes */
	for (int g = 0; g < 2; g++) {
		const double limit = g == 0 ? 0.15 : 0.01;
		const int measured = g == 1 && ctx->channel &&
		                     ctx->channel->parent_checksum == r->parent_checksum;
		const struct mimetrain_report_mime *src = measured ? ctx->channel : r;

		fputs(g == 0     ? "| per-element thresholds + head <= 15% of the parent's weight "
		                   "bytes | "
		      : measured ? "| per-channel thresholds + head <= 1% (the per-channel "
		                   "bundle's tasks, as stored) | "
		                 : "| per-channel thresholds + head <= 1% (computed from the "
		                   "shapes) | ",
		      out);
		ok = 1;
		any = 0;
		int64_t most = 0;
		for (int i = 0; i < src->n_tasks; i++) {
			const struct mimetrain_report_task *t = &src->tasks[i];
			const int64_t b = g == 0 || measured ? t->mime_bytes : t->channel_bytes;

			if (t->granularity != (g == 0 ? MIME_THR_ELEMENT : MIME_THR_CHANNEL) &&
			    (g == 0 || measured))
				continue;
			most = b > most ? b : most;
			ok &= (double)b <= limit * (double)r->parent_bytes;
			any = 1;
		}
		if (any)
			fprintf(out, "largest task: %.2f%% (%lld of %lld bytes) | %s |\n",
			        100.0 * (double)most / (double)r->parent_bytes, (long long)most,
			        (long long)r->parent_bytes, met(ok));
		else
			fputs("- | not measured |\n", out);
	}
	if (ctx->train_bench)
		return goal_train_bench(out, ctx->train_bench, r);
	/* training time, as recorded: CPU time where both runs recorded it (steadier on a
	 * shared machine), else wall time */
	fputs("| thresholds faster than fine-tuning (the build's recorded training times, same "
	      "epochs: CPU where recorded, else wall; side by side: bench/train.sh) | ",
	      out);
	ok = 1;
	any = 0;
	for (int i = 1; i < r->n_tasks; i++) {
		const struct mimetrain_report_task *t = &r->tasks[i];
		const int cpu = !isnan(t->train_cpu_seconds[0]) && !isnan(t->train_cpu_seconds[1]);
		const double a = cpu ? t->train_cpu_seconds[0] : t->train_seconds[0];
		const double b = cpu ? t->train_cpu_seconds[1] : t->train_seconds[1];

		if (isnan(a) || isnan(b))
			continue;
		fprintf(out, "%s%s %.0f vs %.0f s %s", any ? ", " : "", t->name, a, b,
		        cpu ? "CPU" : "wall");
		ok &= a < b;
		any = 1;
	}
	fprintf(out, "%s | %s |\n", any ? " (one run each, shared machine)" : "-",
	        any ? met(ok) : "not measured");
	fprintf(out, "| demo bundle <= 16 MiB | %lld bytes | %s |\n", (long long)r->bundle_bytes,
	        met(r->bundle_bytes <= 16 << 20));
	return 0;
}

int mimetrain_report_section(FILE *out, const char *name, struct mimetrain_report_ctx *ctx,
                             struct mime_errinfo *ei)
{
	static const struct {
		const char *name;
		int (*write)(FILE *out, struct mimetrain_report_ctx *ctx);
	} sections[] = {
		{"header", section_header},          {"mime-accuracy", section_accuracy},
		{"mime-sparsity", section_sparsity}, {"mime-bytes", section_bytes},
		{"mime-storage", section_storage},   {"mime-goals", section_goals},
		{"mime-channel", section_channel},
	};
	int r;

	if (strcmp(name, "phases") == 0)
		return mimetrain_report_phases(out, ctx->phases_json, ctx, ei);
	for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++) {
		if (strcmp(name, sections[i].name) != 0)
			continue;
		r = sections[i].write(out, ctx);
		if (r < 0)
			return mime_errinfo_set(ei, r,
			                        "section '%s': writing a figure under '%s': %s",
			                        name, ctx->figures_dir, mime_strerror(r));
		return 0;
	}
	return mime_errinfo_set(ei, MIME_EINVAL, "no report section '%s'", name);
}

int mimetrain_report_template(FILE *out, const char *template_text,
                              struct mimetrain_report_ctx *ctx, struct mime_errinfo *ei)
{
	const char *p = template_text;
	int line = 0;

	while (*p) {
		const char *nl = strchr(p, '\n');
		const size_t len = nl ? (size_t)(nl - p) : strlen(p);
		char name[64];
		int r;

		line++;
		if (len > 4 && len - 4 < sizeof(name) && strncmp(p, "@@", 2) == 0 &&
		    strncmp(p + len - 2, "@@", 2) == 0) {
			memcpy(name, p + 2, len - 4);
			name[len - 4] = '\0';
			r = mimetrain_report_section(out, name, ctx, ei);
			if (r < 0) {
				if (ei) {
					char msg[sizeof(ei->msg)];

					snprintf(msg, sizeof(msg), "%s", ei->msg);
					mime_errinfo_set(ei, r, "template line %d: %s", line, msg);
				}
				return r;
			}
		} else {
			fwrite(p, 1, len, out);
			fputc('\n', out);
		}
		p += len + (nl ? 1 : 0);
	}
	return ferror(out) ? -EIO : 0;
}
