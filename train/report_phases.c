// SPDX-License-Identifier: MIT
/* report_phases -- the Multi-phase CNN section of `mime-train report` (report.h), from the
 * JSON record `mime-train phases --phases-json FILE` writes:
 *   {"parent": {accuracy, nonzero_params, latency_ms, memory_bytes},
 *    "constraints": {min_accuracy, latency_ms, memory_bytes: n | [n...], threads: [t...]},
 *    "search": [{step, rate, sparsity, nonzero_params, accuracy, seconds,
 *                measurements: [{threads, latency_ms, memory_bytes}]}],
 *    "regression": {"speed" | "memory": {r2, coef: [...], terms: [...]}},
 *    "highest": {nonzero_params, threads, predicted_latency_ms, predicted_memory_bytes},
 *    "variants": [{name, shipped, phases: [{phase, kind, sparsity, nonzero_params, accuracy,
 *                  latency_ms, speed_per_ms, memory_bytes, seconds,
 *                  task_accuracy: {task: acc}, task_accuracy_shared: {task: acc}}]}],
 *    "seconds", "threads", "epochs", "command"}
 * Accuracies are fractions, printed as percentages; any number may be absent (printed "-").
 * A phase's speed is speed_per_ms, else 1 / latency_ms. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tools/svg.h"
#include "train/report.h"

#define MAX_THREADS  8  /* columns of thread counts in the search table */
#define MAX_POINTS   64 /* phases per variant drawn and measured */
#define MAX_VARIANTS 16

/* o[key] as a number, NAN when o is not an object or the key is absent or not a number. */
static double jnum(const json_t *o, const char *key)
{
	const json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;

	return json_is_number(v) ? json_number_value(v) : NAN;
}

static const char *jstr(const json_t *o, const char *key)
{
	const json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;

	return json_is_string(v) ? json_string_value(v) : NULL;
}

static void put_num(FILE *f, const char *fmt, double v)
{
	if (isnan(v))
		fputc('-', f);
	else
		fprintf(f, fmt, v);
}

static double speed_of(const json_t *phase)
{
	const double s = jnum(phase, "speed_per_ms"), l = jnum(phase, "latency_ms");

	return !isnan(s) ? s : l > 0 ? 1.0 / l : NAN;
}

/* The reference point from the constraints: (1 / latency_ms, 100 * min_accuracy). */
static void reference(const json_t *root, double *ret_speed, double *ret_acc)
{
	const json_t *c = json_object_get(root, "constraints");
	const double l = jnum(c, "latency_ms");

	*ret_speed = l > 0 ? 1.0 / l : NAN;
	*ret_acc = 100.0 * jnum(c, "min_accuracy");
}

/* Hypervolume of a variant's phases over the reference, NAN when the reference is unknown
 * or the variant has no phase. */
static double variant_hv(const json_t *variant, double ref_s, double ref_a)
{
	const json_t *phases = json_object_get(variant, "phases");
	double s[MAX_POINTS], a[MAX_POINTS];
	size_t n = json_array_size(phases);

	if (isnan(ref_s) || isnan(ref_a) || n == 0)
		return NAN;
	if (n > MAX_POINTS)
		n = MAX_POINTS;
	for (size_t i = 0; i < n; i++) {
		s[i] = speed_of(json_array_get(phases, i));
		a[i] = 100.0 * jnum(json_array_get(phases, i), "accuracy");
	}
	return mimetrain_hypervolume((int)n, s, a, ref_s, ref_a);
}

static void write_record(FILE *out, const json_t *root, const char *path)
{
	const json_t *p = json_object_get(root, "parent"),
		     *c = json_object_get(root, "constraints");
	const json_t *mem = json_object_get(c, "memory_bytes"),
		     *thr = json_object_get(c, "threads");
	const char *cmd = jstr(root, "command");
	size_t i;
	json_t *v;

	fprintf(out, "From the phase build record `%s`", path);
	if (cmd)
		fprintf(out, ", written by `%s`", cmd);
	fputs(": ", out);
	put_num(out, "%.0f s", jnum(root, "seconds"));
	fputs(" to build, ", out);
	put_num(out, "%.0f", jnum(root, "threads"));
	fputs(" thread(s). Accuracies on the parent task's test split.\n\n", out);
	fputs("| | accuracy (%) | non-zero params | latency (ms) | memory (MB) |\n"
	      "|---|---|---|---|---|\n| parent | ",
	      out);
	put_num(out, "%.2f", 100.0 * jnum(p, "accuracy"));
	fputs(" | ", out);
	put_num(out, "%.0f", jnum(p, "nonzero_params"));
	fputs(" | ", out);
	put_num(out, "%.3f", jnum(p, "latency_ms"));
	fputs(" | ", out);
	put_num(out, "%.2f", jnum(p, "memory_bytes") / 1e6);
	fputs(" |\n\nConstraints: minimum accuracy ", out);
	put_num(out, "%.2f%%", 100.0 * jnum(c, "min_accuracy"));
	fputs(", latency ", out);
	put_num(out, "%.3f ms", jnum(c, "latency_ms"));
	fputs(" per image, memory budget(s) ", out);
	if (json_is_array(mem)) {
		json_array_foreach(mem, i, v)
		{
			fputs(i ? ", " : "", out);
			put_num(out, "%.2f MB",
			        json_is_number(v) ? json_number_value(v) / 1e6 : NAN);
		}
		if (json_array_size(mem) == 0)
			fputc('-', out);
	} else {
		put_num(out, "%.2f MB", json_is_number(mem) ? json_number_value(mem) / 1e6 : NAN);
	}
	fputs(", threads ", out);
	if (json_is_array(thr) && json_array_size(thr) > 0) {
		json_array_foreach(thr, i, v)
		{
			fputs(i ? ", " : "", out);
			put_num(out, "%.0f", json_is_number(v) ? json_number_value(v) : NAN);
		}
	} else {
		fputc('-', out);
	}
	fputs(". (MB = 10^6 bytes throughout.)\n", out);
}

static void write_search(FILE *out, const json_t *root)
{
	const json_t *search = json_object_get(root, "search");
	const double min_acc = jnum(json_object_get(root, "constraints"), "min_accuracy");
	int threads[MAX_THREADS], n_threads = 0;
	size_t i, j;
	json_t *st, *m;

	fputs("\n### Binary search for the lowest phase (the paper's Table 3)\n\n", out);
	if (json_array_size(search) == 0) {
		fputs("The record has no search steps.\n", out);
		return;
	}
	json_array_foreach(search, i, st)
	{
		json_array_foreach(json_object_get(st, "measurements"), j, m)
		{
			const double t = jnum(m, "threads");
			int k;

			for (k = 0; k < n_threads && threads[k] != (int)t; k++)
				;
			if (!isnan(t) && k == n_threads && n_threads < MAX_THREADS)
				threads[n_threads++] = (int)t;
		}
	}
	fputs("| step | pruning rate (%) | sparsity | non-zero params | accuracy (%) | within +-1 "
	      "point of the minimum |",
	      out);
	for (int k = 0; k < n_threads; k++)
		fprintf(out, " latency ms, %d thr | memory MB, %d thr |", threads[k], threads[k]);
	fputs(" build s |\n|---|---|---|---|---|---|---|", out);
	for (int k = 0; k < n_threads; k++)
		fputs("---|---|", out);
	fputc('\n', out);
	json_array_foreach(search, i, st)
	{
		const double acc = jnum(st, "accuracy");

		fputs("| ", out);
		put_num(out, "%.0f", jnum(st, "step"));
		fputs(" | ", out);
		put_num(out, "%.4g", 100.0 * jnum(st, "rate"));
		fputs(" | ", out);
		put_num(out, "%.4f", jnum(st, "sparsity"));
		fputs(" | ", out);
		put_num(out, "%.0f", jnum(st, "nonzero_params"));
		fputs(" | ", out);
		put_num(out, "%.2f", 100.0 * acc);
		fputs(" | ", out);
		fputs(isnan(acc) || isnan(min_acc)          ? "-"
		      : fabs(acc - min_acc) <= 0.01 + 1e-12 ? "yes"
		                                            : "no",
		      out);
		fputs(" |", out);
		for (int k = 0; k < n_threads; k++) {
			double lat = NAN, mem = NAN;

			json_array_foreach(json_object_get(st, "measurements"), j, m)
			{
				if ((int)jnum(m, "threads") == threads[k]) {
					lat = jnum(m, "latency_ms");
					mem = jnum(m, "memory_bytes") / 1e6;
				}
			}
			fputc(' ', out);
			put_num(out, "%.3f", lat);
			fputs(" | ", out);
			put_num(out, "%.2f", mem);
			fputs(" |", out);
		}
		fputc(' ', out);
		put_num(out, "%.0f", jnum(st, "seconds"));
		fputs(" |\n", out);
	}
}

static void write_regression(FILE *out, const json_t *root)
{
	static const char *const models[] = {"speed", "memory"};
	const json_t *reg = json_object_get(root, "regression"),
		     *h = json_object_get(root, "highest");

	fputs("\n### Performance model and the highest phase\n\n"
	      "Third-order polynomials in n (non-zero parameters) and t (threads), fitted to the "
	      "search's measurements (the paper's §V-A); R^2 on those measurements.\n\n"
	      "| model | R^2 | coefficients (term: value) |\n|---|---|---|\n",
	      out);
	for (int k = 0; k < 2; k++) {
		const json_t *mo = json_object_get(reg, models[k]);
		const json_t *coef = json_object_get(mo, "coef"),
			     *terms = json_object_get(mo, "terms");
		size_t i;
		json_t *v;

		fprintf(out, "| %s | ", models[k]);
		put_num(out, "%.4f", jnum(mo, "r2"));
		fputs(" | ", out);
		if (json_array_size(coef) == 0)
			fputc('-', out);
		json_array_foreach(coef, i, v)
		{
			const json_t *t = json_array_get(terms, i);

			fprintf(out, "%s%s: ", i ? ", " : "",
			        json_is_string(t) ? json_string_value(t) : "?");
			put_num(out, "%.4g", json_is_number(v) ? json_number_value(v) : NAN);
		}
		fputs(" |\n", out);
	}
	fputs("\nThe highest phase the model allows (latency constraint, largest memory budget): ",
	      out);
	put_num(out, "%.0f", jnum(h, "nonzero_params"));
	fputs(" non-zero parameters on ", out);
	put_num(out, "%.0f", jnum(h, "threads"));
	fputs(" thread(s), predicted ", out);
	put_num(out, "%.3f ms", jnum(h, "predicted_latency_ms"));
	fputs(" and ", out);
	put_num(out, "%.2f MB", jnum(h, "predicted_memory_bytes") / 1e6);
	fputs(".\n", out);
}

static void write_variants(FILE *out, const json_t *variants)
{
	size_t i, j;
	json_t *var, *ph;

	fputs("\n### Phases per variant (the paper's Table 5, measured here)\n\n"
	      "combined: the builder's coarse and fine steps; coarse / fine: only coarse or only "
	      "fine steps at the same sparsities; the shipped variant is the one in the "
	      "bundle.\n",
	      out);
	json_array_foreach(variants, i, var)
	{
		const char *name = jstr(var, "name");
		const json_t *sh = json_object_get(var, "shipped");

		fprintf(out, "\n%s%s:\n\n", name ? name : "(unnamed)",
		        json_is_true(sh) ? " (shipped)" : "");
		fputs("| phase | kind | sparsity | non-zero params | accuracy (%) | speed (1/ms) | "
		      "latency (ms) | memory (MB) | build s "
		      "|\n|---|---|---|---|---|---|---|---|---|\n",
		      out);
		json_array_foreach(json_object_get(var, "phases"), j, ph)
		{
			const char *kind = jstr(ph, "kind");

			fputs("| ", out);
			put_num(out, "%.0f", jnum(ph, "phase"));
			fprintf(out, " | %s | ", kind ? kind : "-");
			put_num(out, "%.4f", jnum(ph, "sparsity"));
			fputs(" | ", out);
			put_num(out, "%.0f", jnum(ph, "nonzero_params"));
			fputs(" | ", out);
			put_num(out, "%.2f", 100.0 * jnum(ph, "accuracy"));
			fputs(" | ", out);
			put_num(out, "%.4f", speed_of(ph));
			fputs(" | ", out);
			put_num(out, "%.3f", jnum(ph, "latency_ms"));
			fputs(" | ", out);
			put_num(out, "%.2f", jnum(ph, "memory_bytes") / 1e6);
			fputs(" | ", out);
			put_num(out, "%.0f", jnum(ph, "seconds"));
			fputs(" |\n", out);
		}
	}
}

static int write_hypervolume(FILE *out, const json_t *root, const json_t *variants,
                             struct mimetrain_report_ctx *ctx)
{
	const char *names[MAX_VARIANTS];
	const double *xs[MAX_VARIANTS], *ys[MAX_VARIANTS];
	double x[MAX_VARIANTS][MAX_POINTS], y[MAX_VARIANTS][MAX_POINTS], ref_s, ref_a;
	int n_points[MAX_VARIANTS], n_var = 0, r;
	char path[4096];
	size_t i, j;
	json_t *var, *ph;

	reference(root, &ref_s, &ref_a);
	fputs("\n### Hypervolume (the paper's Table 6)\n\nThe area of the (speed, accuracy) plane, "
	      "both maximised, that a variant's phases dominate above the reference point: the "
	      "union of the boxes [s_r, s_i] x [a_r, a_i] over its phases with s_i > s_r and "
	      "a_i > a_r, computed as the sum over the phases taken by decreasing speed of "
	      "(s_i - s_r) x max(0, a_i - the highest accuracy taken before, at least a_r); "
	      "speed s in 1/ms, accuracy a in percentage points. Reference from the constraints: "
	      "s_r = 1 / latency = ",
	      out);
	put_num(out, "%.4g", ref_s);
	fputs("/ms, a_r = minimum accuracy = ", out);
	put_num(out, "%.2f", ref_a);
	fputs("%. (With the reference (0.2/ms, 76%) this formula gives the paper's Table 6 from "
	      "its Table 5: combined_5p, coarse_5p and combined_6p to 6 digits, fine_5p within "
	      "0.0003.)\n\n| variant | phases | hypervolume (points x 1/ms) |\n"
	      "|---|---|---|\n",
	      out);
	json_array_foreach(variants, i, var)
	{
		const json_t *phases = json_object_get(var, "phases");
		const char *name = jstr(var, "name");

		fprintf(out, "| %s | %zu | ", name ? name : "(unnamed)", json_array_size(phases));
		put_num(out, "%.6f", variant_hv(var, ref_s, ref_a));
		fputs(" |\n", out);
		if (n_var == MAX_VARIANTS)
			continue;
		names[n_var] = name ? name : "(unnamed)";
		n_points[n_var] = 0;
		json_array_foreach(phases, j, ph)
		{
			const double s = speed_of(ph), a = 100.0 * jnum(ph, "accuracy");

			if (isfinite(s) && isfinite(a) && n_points[n_var] < MAX_POINTS) {
				x[n_var][n_points[n_var]] = s;
				y[n_var][n_points[n_var]++] = a;
			}
		}
		xs[n_var] = x[n_var];
		ys[n_var] = y[n_var];
		n_var++;
	}
	if (n_var == 0)
		return 0;
	if ((size_t)snprintf(path, sizeof(path), "%s/phases-accuracy-speed.svg",
	                     ctx->figures_dir) >= sizeof(path))
		return -ENAMETOOLONG;
	r = svg_xy_chart(path,
	                 &(struct svg_xy_chart){
				 .title = "Accuracy vs speed per phase (the paper's Fig. 10)",
				 .subtitle = "shaded: the area each variant dominates above the "
					     "reference point (its hypervolume)",
				 .x_label = "speed (inferences per ms)",
				 .y_label = "accuracy (%)",
				 .n_series = n_var,
				 .n_points = n_points,
				 .x = xs,
				 .y = ys,
				 .series_names = names,
				 .has_ref = isfinite(ref_s) && isfinite(ref_a),
				 .ref_x = ref_s,
				 .ref_y = ref_a,
			 });
	if (r < 0)
		return r;
	fprintf(out, "\n![Accuracy vs speed per variant](%s/phases-accuracy-speed.svg)\n",
	        ctx->figures_link);
	ctx->n_figures++;
	return 0;
}

/* Rows "task" (per phase) and "task, shared" of one variant; nothing without task data. */
static void write_task_accuracy(FILE *out, const json_t *variants)
{
	size_t i, j;
	json_t *var, *ph;
	int any = 0;

	fputs("\n### Accuracy per task at each phase\n\n"
	      "\"per phase\": what the bundle serves in each phase, the task's thresholds and "
	      "head trained for it (or, built with `phase-tasks --val`, the sliced ones where "
	      "those did at least as well on the held-out images); \"shared\": one set of "
	      "thresholds and head shared by every phase, sliced (when the record has it).\n",
	      out);
	json_array_foreach(variants, i, var)
	{
		const json_t *phases = json_object_get(var, "phases");
		const json_t *first = json_object_get(json_array_get(phases, 0), "task_accuracy");
		const char *task;
		json_t *unused;

		if (!json_is_object(first) || json_object_size(first) == 0)
			continue;
		any = 1;
		fprintf(out, "\n%s:\n\n| task |",
		        jstr(var, "name") ? jstr(var, "name") : "(unnamed)");
		json_array_foreach(phases, j, ph)
		{
			fputs(" phase ", out);
			put_num(out, "%.0f", jnum(ph, "phase"));
			fputs(" |", out);
		}
		fputs("\n|---|", out);
		for (j = 0; j < json_array_size(phases); j++)
			fputs("---|", out);
		fputc('\n', out);
		json_object_foreach((json_t *)first, task, unused)
		{
			for (int shared = 0; shared < 2; shared++) {
				int have = 0;

				json_array_foreach(phases, j, ph)
				{
					have |= !isnan(jnum(
						json_object_get(ph, shared ? "task_accuracy_shared"
					                                   : "task_accuracy"),
						task));
				}
				if (!have)
					continue;
				fprintf(out, "| %s, %s |", task, shared ? "shared" : "per phase");
				json_array_foreach(phases, j, ph)
				{
					fputc(' ', out);
					put_num(out, "%.2f",
					        100.0 * jnum(json_object_get(
								     ph,
								     shared ? "task_accuracy_shared"
									    : "task_accuracy"),
					                     task));
					fputs(" |", out);
				}
				fputc('\n', out);
			}
		}
	}
	if (!any)
		fputs("\nThe record has no per-task accuracies.\n", out);
}

/* The first variant whose name starts with prefix, or NULL. */
static const json_t *variant_named(const json_t *variants, const char *prefix)
{
	size_t i;
	json_t *var;

	json_array_foreach(variants, i, var)
	{
		const char *name = jstr(var, "name");

		if (name && strncmp(name, prefix, strlen(prefix)) == 0)
			return var;
	}
	return NULL;
}

static void write_goals(FILE *out, const json_t *root, const json_t *variants)
{
	const json_t *coarse = variant_named(variants, "coarse"),
		     *fine = variant_named(variants, "fine");
	const json_t *shipped = NULL, *var, *ph;
	double ref_s, ref_a, hc, hf, min_acc;
	size_t i, j;

	reference(root, &ref_s, &ref_a);
	min_acc = jnum(json_object_get(root, "constraints"), "min_accuracy");
	hc = coarse ? variant_hv(coarse, ref_s, ref_a) : NAN;
	hf = fine ? variant_hv(fine, ref_s, ref_a) : NAN;
	fputs("\n### Against the issue's goals (issue 4)\n\n| goal | measured | met? |\n"
	      "|---|---|---|\n",
	      out);
	json_array_foreach(variants, i, var)
	{
		const char *name = jstr(var, "name");
		const double h = variant_hv(var, ref_s, ref_a);

		if (json_is_true(json_object_get(var, "shipped")) && !shipped)
			shipped = var;
		if (!name || strncmp(name, "combined", 8) != 0)
			continue;
		fprintf(out, "| %s hypervolume >= coarse-only's and fine-only's | ", name);
		put_num(out, "%.4f", h);
		fputs(" vs ", out);
		put_num(out, "%.4f", hc);
		fputs(" and ", out);
		put_num(out, "%.4f", hf);
		fprintf(out, " | %s |\n",
		        isnan(h) || isnan(hc) || isnan(hf) ? "not measured"
		        : h >= hc && h >= hf               ? "met"
		                                           : "missed");
	}
	if (!shipped)
		shipped = variant_named(variants, "combined");
	if (shipped) {
		const json_t *low = json_array_get(json_object_get(shipped, "phases"), 0);
		const double a = jnum(low, "accuracy");

		fprintf(out, "| lowest phase within +-1 point of the minimum accuracy (%s) | ",
		        jstr(shipped, "name") ? jstr(shipped, "name") : "(unnamed)");
		put_num(out, "%.2f%%", 100.0 * a);
		fputs(" vs ", out);
		put_num(out, "%.2f%%", 100.0 * min_acc);
		fprintf(out, " | %s |\n",
		        isnan(a) || isnan(min_acc)          ? "not measured"
		        : fabs(a - min_acc) <= 0.01 + 1e-12 ? "met"
		                                            : "missed");
	}
	json_array_foreach(variants, i, var)
	{
		double prev = NAN;
		int falls = 0, n = 0;

		fprintf(out, "| accuracy never falls from one phase to the next (%s) | ",
		        jstr(var, "name") ? jstr(var, "name") : "(unnamed)");
		json_array_foreach(json_object_get(var, "phases"), j, ph)
		{
			const double a = jnum(ph, "accuracy");

			fprintf(out, "%s", n ? " -> " : "");
			put_num(out, "%.2f", 100.0 * a);
			if (!isnan(a) && !isnan(prev) && a < prev)
				falls++;
			if (!isnan(a))
				prev = a;
			n++;
		}
		fprintf(out, " | %s |\n", n == 0 ? "not measured" : falls ? "missed" : "met");
	}
	fputs("\nThe kernel, switch-latency and RSS goals of issue 4 are measured by the "
	      "benchmarks "
	      "(bench/RESULTS.md), not by this record.\n",
	      out);
}

int mimetrain_report_phases(FILE *out, const char *path, struct mimetrain_report_ctx *ctx,
                            struct mime_errinfo *ei)
{
	json_error_t jerr;
	json_t *root, *variants;
	int r;

	if (!path) {
		fputs("The bundle has no phase build record: `mime-train report` was run without "
		      "`--phases-json` (the phase builder, `mime-train phases --phases-json FILE`, "
		      "writes one), so there are no phases to report.\n",
		      out);
		return 0;
	}
	root = json_load_file(path, 0, &jerr);
	if (!root)
		return mime_errinfo_set(ei, MIME_EFORMAT, "%s:%d: %s", path, jerr.line, jerr.text);
	variants = json_object_get(root, "variants");
	if (!json_is_object(root) || (variants && !json_is_array(variants)) ||
	    (json_object_get(root, "search") && !json_is_array(json_object_get(root, "search")))) {
		json_decref(root);
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "%s: not a phase build record (\"variants\" and \"search\" "
		                        "must be arrays)",
		                        path);
	}
	write_record(out, root, path);
	write_search(out, root);
	write_regression(out, root);
	write_variants(out, variants);
	r = write_hypervolume(out, root, variants, ctx);
	if (r < 0) {
		json_decref(root);
		return mime_errinfo_set(ei, r, "writing the phases figure under '%s': %s",
		                        ctx->figures_dir, mime_strerror(r));
	}
	write_task_accuracy(out, variants);
	write_goals(out, root, variants);
	json_decref(root);
	return 0;
}
