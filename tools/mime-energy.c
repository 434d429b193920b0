// SPDX-License-Identifier: MIT
/* mime-energy -- the MIME paper's accelerator study and single questions to lib/energy.
 *   mime-energy study --out DIR     VGG16 on 3x32x32 with the paper's Tables II/III sparsities:
 *                                   Singular/Pipelined x Cases 1-3, 90%-pruned comparison,
 *                                   PE-array and cache ablations, storage vs child tasks.
 *   mime-energy layer --input CxHxW --filters N [--kernel R --stride S --pad P | --fc] ...
 *   mime-energy net [--net vgg16 | --graph conf/networks/NAME.yaml] ...
 *   mime-energy net --bundle FILE --task T[,T2...] --images IDX[,IDX2...] [--limit N]
 *                   [--out DIR]
 *                                   per-sample sparsities measured by the engine on real
 *                                   images; Singular per task and Pipelined over the tasks.
 * Common: --config FILE (conf/accelerator.yaml), --set KEY=VALUE, --json.
 * Ownership: everything lives on main()'s stack or in files it writes.
 * Threads: one. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lib/energy.h"
#include "tools/energy_conf.h"
#include "tools/energy_figures.h"
#include "tools/energy_measure.h"
#include "train/graphyaml.h"

#define MAX_BATCH  1024
#define N_PAPER    3 /* cifar10, cifar100, fmnist */
#define VGG_LAYERS 15

struct opts {
	const char *config, *out, *paper_dir, *net, *graph;
	/* net --bundle: comma-separated lists split in place */
	const char *bundle;
	char *task_list, *image_list;
	long limit;
	const char *sets[32];
	int n_sets;
	int json;
	/* layer / net */
	struct mime_shape input;
	int filters, kernel, stride, pad, fc;
	float in_sparsity, out_sparsity;
	int tasks[MAX_BATCH];
	int batch;
	enum mime_energy_thr thr;
};

/* A per-layer sparsity table from conf/paper/: rows = tasks, columns = paper layer numbers. */
struct paper_table {
	char task[N_PAPER][32];
	double s[N_PAPER][VGG_LAYERS];
	int given[VGG_LAYERS]; /* 1 when the paper prints the value */
};

static void usage(FILE *f)
{
	fputs("usage: mime-energy study --out DIR [--paper-dir conf/paper]\n"
	      "       mime-energy layer --input CxHxW --filters N [--kernel R] [--stride S] "
	      "[--pad P] [--fc]\n"
	      "                         [--in-sparsity S] [--out-sparsity S] [--tasks 0,1,2]\n"
	      "       mime-energy net [--net vgg16 | --graph FILE.yaml] [--in-sparsity S] "
	      "[--out-sparsity S] [--tasks 0,1,2]\n"
	      "       mime-energy [net] --bundle FILE --task T[,T2...] --images IDX[,IDX2...] "
	      "[--limit N] [--out DIR]\n"
	      "common: [--config conf/accelerator.yaml] [--set KEY=VALUE]... "
	      "[--thresholds neuron|channel] [--json]\n",
	      f);
}

/* VGG16 for 3x32x32 inputs (the paper's CIFAR children): 13 3x3 convs, 5 max-pools, and two
 * 512-wide fc layers numbered 14 and 15 as the paper's Tables II/III number them. The
 * task's classifier head is not part of the graph. */
static void vgg16_graph(struct mime_graph *g)
{
	static const int cfg[] = {64, 64,  0,   128, 128, 0,   256, 256, 256,
	                          0,  512, 512, 512, 0,   512, 512, 512, 0};
	int n = 0, conv = 0, pool = 0;

	memset(g, 0, sizeof(*g));
	g->input = (struct mime_shape){3, 32, 32};
	for (unsigned i = 0; i < sizeof(cfg) / sizeof(cfg[0]); i++) {
		struct mime_layer_spec *l = &g->layers[n++];

		if (cfg[i]) {
			*l = (struct mime_layer_spec){.kind = MIME_LAYER_CONV,
			                              .out = cfg[i],
			                              .kernel = 3,
			                              .stride = 1,
			                              .pad = 1,
			                              .act = MIME_ACT_RELU};
			snprintf(l->name, sizeof(l->name), "conv%d", ++conv);
		} else {
			*l = (struct mime_layer_spec){
				.kind = MIME_LAYER_MAXPOOL, .kernel = 2, .stride = 2};
			snprintf(l->name, sizeof(l->name), "pool%d", ++pool);
		}
	}
	g->layers[n++] = (struct mime_layer_spec){.kind = MIME_LAYER_FLATTEN, .name = "flatten"};
	g->layers[n++] = (struct mime_layer_spec){
		.kind = MIME_LAYER_FC, .name = "fc14", .out = 512, .act = MIME_ACT_RELU};
	g->layers[n++] = (struct mime_layer_spec){
		.kind = MIME_LAYER_FC, .name = "fc15", .out = 512, .act = MIME_ACT_RELU};
	g->n_layers = n;
}

/* Reads a CSV with a '#' comment, a header "task,convN,..." and one row per task. Layers the
 * paper does not list get the mean of the nearest listed layers before and after. */
static int paper_table_load(const char *path, struct paper_table *t, struct mime_errinfo *ei)
{
	char line[1024];
	int cols[VGG_LAYERS + 1], n_cols = 0, row = 0, r = 0;
	FILE *f = fopen(path, "r");

	memset(t, 0, sizeof(*t));
	if (!f) {
		r = -errno;
		return mime_errinfo_set(ei, r, "%s: %s", path, strerror(-r));
	}
	while (fgets(line, sizeof(line), f)) {
		char *save = NULL, *tok;
		int c = 0;

		if (line[0] == '#' || line[0] == '\n')
			continue;
		line[strcspn(line, "\r\n")] = '\0';
		for (tok = strtok_r(line, ",", &save); tok; tok = strtok_r(NULL, ",", &save), c++) {
			if (n_cols == 0) { /* the header */
				int num;

				if (c == 0)
					continue;
				if (sscanf(tok, "conv%d", &num) != 1 || num < 1 ||
				    num > VGG_LAYERS || c > VGG_LAYERS) {
					r = mime_errinfo_set(ei, MIME_EINVAL, "%s: bad column '%s'",
					                     path, tok);
					goto out;
				}
				cols[c] = num - 1;
				t->given[num - 1] = 1;
				continue;
			}
			if (row >= N_PAPER || c > n_cols) {
				r = mime_errinfo_set(ei, MIME_EINVAL,
				                     "%s: too many rows or columns", path);
				goto out;
			}
			if (c == 0) {
				snprintf(t->task[row], sizeof(t->task[row]), "%s", tok);
				continue;
			}
			char *end;
			double v = strtod(tok, &end);

			if (end == tok || *end || !(v >= 0 && v <= 1)) {
				r = mime_errinfo_set(ei, MIME_EINVAL, "%s: bad sparsity '%s'", path,
				                     tok);
				goto out;
			}
			t->s[row][cols[c]] = v;
		}
		if (n_cols == 0)
			n_cols = c - 1;
		else
			row++;
	}
	if (row != N_PAPER || n_cols == 0) {
		r = mime_errinfo_set(ei, MIME_EINVAL, "%s: expected %d task rows", path, N_PAPER);
		goto out;
	}
	for (int k = 0; k < N_PAPER; k++)
		for (int l = 0; l < VGG_LAYERS; l++) {
			int a = l, b = l;

			if (t->given[l])
				continue;
			while (a >= 0 && !t->given[a])
				a--;
			while (b < VGG_LAYERS && !t->given[b])
				b++;
			if (a < 0 && b >= VGG_LAYERS)
				t->s[k][l] = 0;
			else if (a < 0)
				t->s[k][l] = t->s[k][b];
			else if (b >= VGG_LAYERS)
				t->s[k][l] = t->s[k][a];
			else
				t->s[k][l] = (t->s[k][a] + t->s[k][b]) / 2;
		}
out:
	fclose(f);
	return r;
}

/* Per-sample sparsities for the VGG16 net: layer l's output from the table, its input the
 * previous layer's output (max-pooling assumed to keep the fraction), the image dense. */
static void paper_sparsity(const struct paper_table *t, const int *tasks, int batch,
                           struct mime_energy_sparsity *sp)
{
	for (int b = 0; b < batch; b++)
		for (int l = 0; l < VGG_LAYERS; l++)
			sp[b * VGG_LAYERS + l] = (struct mime_energy_sparsity){
				.in = l ? (float)t->s[tasks[b]][l - 1] : 0.0f,
				.out = (float)t->s[tasks[b]][l]};
}

static int run(const struct mime_energy_hw *hw, const struct mime_energy_net *net, int batch,
               const int *tasks, const struct mime_energy_sparsity *sp, enum mime_energy_case k,
               struct mime_energy_report *rep)
{
	struct mime_errinfo ei = {0};
	int r = mime_energy_batch(hw, net, batch, tasks, sp, k, rep, &ei);

	if (r < 0)
		fprintf(stderr, "mime-energy: %s\n", ei.msg);
	return r;
}

static const char *const data_names[] = {"w", "x", "t", "y"};
static const char *const level_names[] = {"dram", "cache", "reg", "mac"};

static json_t *counts_json(const struct mime_energy_counts *c)
{
	json_t *o = json_object(), *acc = json_object(), *e = json_object();

	for (int lv = 0; lv < MIME_ENERGY_N_LEVELS; lv++) {
		json_t *d = json_object();

		for (int k = 0; k < MIME_ENERGY_N_DATA; k++)
			json_object_set_new(d, data_names[k], json_real(c->access[lv][k]));
		json_object_set_new(acc, level_names[lv], d);
	}
	for (int lv = 0; lv <= MIME_ENERGY_N_LEVELS; lv++)
		json_object_set_new(e, level_names[lv], json_real(c->e[lv]));
	json_object_set_new(e, "total", json_real(c->e_total));
	json_object_set_new(o, "macs", json_real(c->macs));
	json_object_set_new(o, "cycles", json_real(c->cycles));
	json_object_set_new(o, "accesses", acc);
	json_object_set_new(o, "energy", e);
	return o;
}

static json_t *report_json(const struct mime_energy_net *net, const struct mime_energy_report *r)
{
	json_t *o = json_object(), *layers = json_array();

	json_object_set_new(o, "case", json_string(mime_energy_case_name(r->kase)));
	json_object_set_new(o, "mode", json_string(mime_energy_mode_name(r->mode)));
	json_object_set_new(o, "batch", json_integer(r->batch));
	json_object_set_new(o, "tasks", json_integer(r->n_tasks));
	for (int l = 0; l < r->n_layers; l++) {
		json_t *c = counts_json(&r->layer[l]);

		json_object_set_new(c, "layer", json_string(net->layers[l].name));
		json_array_append_new(layers, c);
	}
	json_object_set_new(o, "layers", layers);
	json_object_set_new(o, "total", counts_json(&r->total));
	return o;
}

static void print_report(FILE *f, const struct mime_energy_net *net,
                         const struct mime_energy_report *r)
{
	fprintf(f, "%s, %s, batch %d, %d task(s)\n", mime_energy_case_name(r->kase),
	        mime_energy_mode_name(r->mode), r->batch, r->n_tasks);
	fprintf(f, "%-8s %12s %12s %12s %12s %12s %12s %12s %12s\n", "layer", "E_DRAM", "E_cache",
	        "E_reg", "E_MAC", "E_total", "cycles", "DRAM_W", "DRAM_T");
	for (int l = 0; l <= r->n_layers; l++) {
		const struct mime_energy_counts *c = l < r->n_layers ? &r->layer[l] : &r->total;

		fprintf(f, "%-8s %12.4g %12.4g %12.4g %12.4g %12.4g %12.4g %12.4g %12.4g\n",
		        l < r->n_layers ? net->layers[l].name : "total", c->e[0], c->e[1], c->e[2],
		        c->e[3], c->e_total, c->cycles, c->access[MIME_ENERGY_DRAM][MIME_ENERGY_W],
		        c->access[MIME_ENERGY_DRAM][MIME_ENERGY_T]);
	}
}

/* Runs the three cases on one net and prints or collects them. */
static int answer(const struct opts *o, const struct mime_energy_hw *hw,
                  const struct mime_energy_net *net)
{
	static struct mime_energy_sparsity sp[MAX_BATCH * MIME_MAX_LAYERS];
	json_t *arr = json_array();
	int r = 0;

	for (int b = 0; b < o->batch; b++)
		for (int l = 0; l < net->n_layers; l++)
			sp[b * net->n_layers + l] = (struct mime_energy_sparsity){
				l ? o->out_sparsity : o->in_sparsity, o->out_sparsity};
	for (int k = MIME_ENERGY_CASE1; k <= MIME_ENERGY_CASE3; k++) {
		struct mime_energy_report rep;

		r = run(hw, net, o->batch, o->tasks, sp, k, &rep);
		if (r < 0)
			break;
		if (o->json)
			json_array_append_new(arr, report_json(net, &rep));
		else
			print_report(stdout, net, &rep);
	}
	if (r == 0 && o->json)
		json_dumpf(arr, stdout, JSON_INDENT(1) | JSON_REAL_PRECISION(8));
	if (o->json)
		putchar('\n');
	json_decref(arr);
	return r;
}

static int cmd_layer(const struct opts *o, const struct mime_energy_hw *hw)
{
	struct mime_graph g = {.input = o->input, .n_layers = 1};
	struct mime_energy_net net;
	struct mime_errinfo ei = {0};
	struct opts one = *o;

	if (o->fc) {
		g.layers[0] = (struct mime_layer_spec){.kind = MIME_LAYER_FLATTEN, .name = "flat"};
		g.layers[1] = (struct mime_layer_spec){.kind = MIME_LAYER_FC,
		                                       .name = "fc",
		                                       .out = o->filters,
		                                       .act = MIME_ACT_RELU};
		g.n_layers = 2;
	} else {
		g.layers[0] = (struct mime_layer_spec){.kind = MIME_LAYER_CONV,
		                                       .name = "conv",
		                                       .out = o->filters,
		                                       .kernel = o->kernel,
		                                       .stride = o->stride,
		                                       .pad = o->pad,
		                                       .act = MIME_ACT_RELU};
	}
	if (mime_energy_net_init(&net, &g, o->thr, &ei) < 0) {
		fprintf(stderr, "mime-energy: %s\n", ei.msg);
		return 1;
	}
	/* a single layer: its input sparsity is --in-sparsity */
	one.out_sparsity = o->out_sparsity;
	return answer(&one, hw, &net) < 0;
}

/* ---- net --bundle: sparsities measured by the engine on real images ---- */

/* Splits a comma-separated list in place into v; returns the count, -1 above max. */
static int split_list(char *s, const char **v, int max)
{
	int n = 0;

	for (char *save = NULL, *tok = strtok_r(s, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		if (n >= max)
			return -1;
		v[n++] = tok;
	}
	return n;
}

/* Mean output sparsity of layer l over task t's samples. */
static double mean_out(const struct energy_measurement *em, int baseline, int t, int l)
{
	double sum = 0;

	for (int s = 0; s < em->n_samples; s++)
		sum += energy_measurement_row(em, baseline, t, s)[l].out;
	return sum / em->n_samples;
}

/* Cases 1-3 of one batch: Case-1/2 on the baselines' sparsities, Case-3 on MIME's; prints
 * the per-layer tables and the ratios, or adds the reports to arr. */
static int bundle_cases(const struct opts *o, const struct mime_energy_hw *hw,
                        const struct mime_energy_net *net, const char *title, int batch,
                        const int *tasks, const struct mime_energy_sparsity *sp_base,
                        const struct mime_energy_sparsity *sp_mime, json_t *arr,
                        const char *fig_name)
{
	static const char *const labels[] = {"1", "2", "M"};
	static const char *const names[] = {"Case-1 (conventional, dense)",
	                                    "Case-2 (conventional, zero-skipping)",
	                                    "MIME (Case-3)"};
	struct mime_energy_report rep[3];
	char path[4096], sub[256];
	int r;

	for (int k = 0; k < 3; k++) {
		if (run(hw, net, batch, tasks, k == 2 ? sp_mime : sp_base, k + 1, &rep[k]) < 0)
			return -1;
		if (o->json) {
			json_array_append_new(arr, report_json(net, &rep[k]));
		} else {
			if (k == 0)
				printf("\n== %s ==\n", title);
			print_report(stdout, net, &rep[k]);
		}
	}
	if (!o->json)
		printf("Case-1 / MIME: energy %.2fx, cycles %.2fx; Case-2 / MIME: energy %.2fx, "
		       "cycles %.2fx; E_DRAM MIME / Case-2 %.2f\n",
		       rep[0].total.e_total / rep[2].total.e_total,
		       rep[0].total.cycles / rep[2].total.cycles,
		       rep[1].total.e_total / rep[2].total.e_total,
		       rep[1].total.cycles / rep[2].total.cycles,
		       rep[2].total.e[MIME_ENERGY_DRAM] / rep[1].total.e[MIME_ENERGY_DRAM]);
	if (!o->out)
		return 0;
	snprintf(sub, sizeof(sub), "%s; sparsities measured by the engine (Case-1/2: baseline)",
	         o->bundle);
	snprintf(path, sizeof(path), "%s/%s_energy.svg", o->out, fig_name);
	r = energy_fig_layers(path, title, sub, net, rep, labels, names, 3);
	if (r == 0) {
		snprintf(path, sizeof(path), "%s/%s_throughput.svg", o->out, fig_name);
		r = energy_fig_throughput(path, title, sub, net, rep, names, 3);
	}
	if (r < 0)
		fprintf(stderr, "mime-energy: %s: %s\n", path, strerror(-r));
	return r;
}

static int cmd_bundle(const struct opts *o, const struct mime_energy_hw *hw)
{
	static struct mime_energy_sparsity sp_base[MAX_BATCH * MIME_MAX_LAYERS],
		sp_mime[MAX_BATCH * MIME_MAX_LAYERS];
	static int tasks[MAX_BATCH];
	const char *task[ENERGY_MEASURE_MAX_TASKS], *images[ENERGY_MEASURE_MAX_TASKS];
	struct energy_measurement em = {0};
	struct mime_errinfo ei = {0};
	json_t *root = json_object(), *jt = json_array(), *jsing = json_object();
	int n_tasks, n_images, n, L, r = 1;

	n_tasks = o->task_list ? split_list(o->task_list, task, ENERGY_MEASURE_MAX_TASKS) : 0;
	n_images = o->image_list ? split_list(o->image_list, images, ENERGY_MEASURE_MAX_TASKS) : 0;
	if (n_tasks < 1 || n_images < 1 || o->limit < 1 || o->limit > MAX_BATCH) {
		fprintf(stderr,
		        "mime-energy: --bundle needs --task T[,T2...] (at most %d), "
		        "--images IDX[,IDX2...] and --limit 1..%d\n",
		        ENERGY_MEASURE_MAX_TASKS, MAX_BATCH);
		json_decref(root);
		json_decref(jt);
		json_decref(jsing);
		return 2;
	}
	if (o->out && mkdir(o->out, 0777) < 0 && errno != EEXIST) {
		fprintf(stderr, "mime-energy: %s: %s\n", o->out, strerror(errno));
		goto out;
	}
	if (energy_measure(o->bundle, task, n_tasks, images, n_images, (int)o->limit, &em, &ei) <
	    0) {
		fprintf(stderr, "mime-energy: %s\n", ei.msg);
		goto out;
	}
	n = em.n_samples;
	L = em.net.n_layers;
	if (!o->json) {
		printf("%s: %d image(s) per task; Case-3 runs on MIME's measured sparsity, "
		       "Case-1/2 on each task's baseline's:",
		       o->bundle, n);
		for (int t = 0; t < n_tasks; t++)
			printf(" %s=%s", em.task[t], em.baseline[t]);
		printf("\nmean output sparsity per layer:\n%-10s", "layer");
		for (int t = 0; t < n_tasks; t++)
			printf(" %11.11s/M %11.11s/B", em.task[t], em.task[t]);
		putchar('\n');
		for (int l = 0; l < L; l++) {
			printf("%-10s", em.net.layers[l].name);
			for (int t = 0; t < n_tasks; t++)
				printf(" %12.4f %12.4f", mean_out(&em, 0, t, l),
				       mean_out(&em, 1, t, l));
			putchar('\n');
		}
	}
	for (int t = 0; t < n_tasks; t++) {
		json_t *o_t = json_object(), *sp = json_object(), *reps = json_array();
		char title[128], fig[MIME_NAME_MAX + 16];

		json_object_set_new(o_t, "name", json_string(em.task[t]));
		json_object_set_new(o_t, "baseline", json_string(em.baseline[t]));
		for (int l = 0; l < L; l++)
			json_object_set_new(sp, em.net.layers[l].name,
			                    json_pack("{s:f,s:f}", "mime", mean_out(&em, 0, t, l),
			                              "baseline", mean_out(&em, 1, t, l)));
		json_object_set_new(o_t, "output_sparsity", sp);
		json_array_append_new(jt, o_t);
		for (int s = 0; s < n; s++)
			tasks[s] = t;
		snprintf(title, sizeof(title), "Singular: %s x %d", em.task[t], n);
		snprintf(fig, sizeof(fig), "singular_%s", em.task[t]);
		if (bundle_cases(o, hw, &em.net, title, n, tasks,
		                 energy_measurement_row(&em, 1, t, 0),
		                 energy_measurement_row(&em, 0, t, 0), reps, fig) < 0) {
			json_decref(reps);
			goto out;
		}
		json_object_set_new(jsing, em.task[t], reps);
	}
	json_object_set_new(root, "bundle", json_string(o->bundle));
	json_object_set_new(root, "images_per_task", json_integer(n));
	json_object_set_new(root, "tasks", jt);
	json_object_set_new(root, "singular", jsing);
	jt = jsing = NULL;
	if (n_tasks > 1) {
		json_t *reps = json_array();
		char title[128];

		/* sample s: task s mod n_tasks, that task's image s; a task named twice is one */
		for (int s = 0; s < n; s++) {
			const int t = s % n_tasks;

			tasks[s] = 0;
			while (strcmp(em.task[tasks[s]], em.task[t]) != 0)
				tasks[s]++;
			memcpy(&sp_base[s * L], energy_measurement_row(&em, 1, t, s),
			       sizeof(*sp_base) * L);
			memcpy(&sp_mime[s * L], energy_measurement_row(&em, 0, t, s),
			       sizeof(*sp_mime) * L);
		}
		snprintf(title, sizeof(title), "Pipelined: %d samples, tasks in turn", n);
		r = bundle_cases(o, hw, &em.net, title, n, tasks, sp_base, sp_mime, reps,
		                 "pipelined");
		json_object_set_new(root, "pipelined", reps);
		if (r < 0) {
			r = 1;
			goto out;
		}
	}
	if (o->json) {
		json_dumpf(root, stdout, JSON_INDENT(1) | JSON_REAL_PRECISION(8));
		putchar('\n');
	}
	r = 0;
out:
	json_decref(root);
	json_decref(jt);
	json_decref(jsing);
	energy_measurement_fini(&em);
	return r;
}

static int cmd_net(const struct opts *o, const struct mime_energy_hw *hw)
{
	struct mime_graph g;
	struct mime_energy_net net;
	struct mime_errinfo ei = {0};

	if (o->bundle)
		return cmd_bundle(o, hw);
	if (o->graph) {
		struct mimetrain_netdesc d;
		int r = mimetrain_graphyaml_load(o->graph, &d, &ei);

		if (r < 0) {
			fprintf(stderr, "mime-energy: %s\n", ei.msg[0] ? ei.msg : mime_strerror(r));
			return 1;
		}
		g = d.graph;
		mimetrain_netdesc_free(&d);
	} else if (strcmp(o->net, "vgg16") == 0) {
		vgg16_graph(&g);
	} else {
		fprintf(stderr, "mime-energy: only --net vgg16 is built in; use --graph FILE\n");
		return 1;
	}
	if (mime_energy_net_init(&net, &g, o->thr, &ei) < 0) {
		fprintf(stderr, "mime-energy: %s\n", ei.msg);
		return 1;
	}
	return answer(o, hw, &net) < 0;
}

/* ---- the study ---- */

struct range {
	double lo, hi;
};

static void range_add(struct range *r, double v)
{
	if (v < r->lo)
		r->lo = v;
	if (v > r->hi)
		r->hi = v;
}

static FILE *open_out(const char *dir, const char *name)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	if (!f)
		fprintf(stderr, "mime-energy: %s: %s\n", path, strerror(errno));
	return f;
}

static void csv_header(FILE *f)
{
	fputs("scenario,layer,paper_sparsity,case,mode,e_dram,e_cache,e_reg,e_mac,e_total,cycles,"
	      "macs,dram_w,dram_x,dram_t,dram_y,cache_w,cache_x,cache_t,cache_y\n",
	      f);
}

static void csv_report(FILE *f, const char *scenario, const struct mime_energy_net *net,
                       const struct paper_table *t, const struct mime_energy_report *r)
{
	for (int l = 0; l <= r->n_layers; l++) {
		const struct mime_energy_counts *c = l < r->n_layers ? &r->layer[l] : &r->total;
		const double(*a)[MIME_ENERGY_N_DATA] = c->access;

		fprintf(f, "%s,%s,%s,%s,%s,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g", scenario,
		        l < r->n_layers ? net->layers[l].name : "total",
		        l < r->n_layers ? (t->given[l] ? "given" : "interpolated") : "",
		        mime_energy_case_name(r->kase), mime_energy_mode_name(r->mode), c->e[0],
		        c->e[1], c->e[2], c->e[3], c->e_total, c->cycles, c->macs);
		for (int lv = 0; lv < 2; lv++)
			for (int d = 0; d < MIME_ENERGY_N_DATA; d++)
				fprintf(f, ",%.6g", a[lv][d]);
		fputc('\n', f);
	}
}

struct study {
	const struct opts *o;
	struct mime_energy_hw hw;
	struct mime_energy_net net;
	struct paper_table mime, base;
	FILE *csv, *md;
	json_t *json;
};

/* Ratios per paper layer (the ones Tables II/III list) of a over b: energy and cycles. */
static void ratio_table(struct study *s, const char *title, const char *key, const char *what,
                        const struct mime_energy_report *a, const struct mime_energy_report *b,
                        int flags)
{
	const int cycles = flags & 1, dram = flags & 2;
	struct range re = {INFINITY, -INFINITY}, rc = {INFINITY, -INFINITY};
	json_t *o = json_object(), *per = json_object();

	fprintf(s->md, "\n### %s\n\n%s\n\n| layer | %s ratio |%s\n|---|---|%s\n", title, what,
	        dram ? "E_DRAM" : "energy", cycles ? " throughput ratio |" : "",
	        cycles ? "---|" : "");
	for (int l = 0; l < s->net.n_layers; l++) {
		double e = dram ? a->layer[l].e[MIME_ENERGY_DRAM] / b->layer[l].e[MIME_ENERGY_DRAM]
		                : a->layer[l].e_total / b->layer[l].e_total;
		double c = a->layer[l].cycles / b->layer[l].cycles;

		fprintf(s->md, "| %s%s | %.2f |", s->net.layers[l].name,
		        s->mime.given[l] ? "" : " (interp.)", e);
		if (cycles)
			fprintf(s->md, " %.2f |", c);
		fputc('\n', s->md);
		json_object_set_new(per, s->net.layers[l].name, json_real(e));
		if (!s->mime.given[l])
			continue;
		range_add(&re, e);
		range_add(&rc, c);
	}
	fprintf(s->md, "| total | %.2f |",
	        dram ? a->total.e[MIME_ENERGY_DRAM] / b->total.e[MIME_ENERGY_DRAM]
	             : a->total.e_total / b->total.e_total);
	if (cycles)
		fprintf(s->md, " %.2f |", a->total.cycles / b->total.cycles);
	fprintf(s->md, "\n\nOver the paper's layers: energy %.2f-%.2fx", re.lo, re.hi);
	if (cycles)
		fprintf(s->md, ", throughput %.2f-%.2fx", rc.lo, rc.hi);
	fputs("\n", s->md);
	json_object_set_new(o, "energy_min", json_real(re.lo));
	json_object_set_new(o, "energy_max", json_real(re.hi));
	json_object_set_new(o, "energy_total", json_real(a->total.e_total / b->total.e_total));
	if (cycles) {
		json_object_set_new(o, "throughput_min", json_real(rc.lo));
		json_object_set_new(o, "throughput_max", json_real(rc.hi));
	}
	json_object_set_new(o, "per_layer", per);
	json_object_set_new(s->json, key, o);
	if (!s->o->json) {
		printf("%-44s energy %.2f-%.2fx", title, re.lo, re.hi);
		if (cycles)
			printf(", throughput %.2f-%.2fx", rc.lo, rc.hi);
		putchar('\n');
	}
}

/* Singular or Pipelined, Cases 1-3, with the paper's sparsities. */
static int study_mode(struct study *s, const int tasks[3], const char *scenario,
                      struct mime_energy_report rep[3])
{
	struct mime_energy_sparsity sp_base[3 * VGG_LAYERS], sp_mime[3 * VGG_LAYERS];

	paper_sparsity(&s->base, tasks, 3, sp_base);
	paper_sparsity(&s->mime, tasks, 3, sp_mime);
	for (int k = 0; k < 3; k++) {
		if (run(&s->hw, &s->net, 3, tasks, k == 2 ? sp_mime : sp_base, k + 1, &rep[k]) < 0)
			return -1;
		csv_report(s->csv, scenario, &s->net, &s->mime, &rep[k]);
	}
	return 0;
}

static int study_storage(struct study *s)
{
	FILE *f = open_out(s->o->out, "storage.csv");
	const long head = 512L * 10 + 10; /* a 10-class head on the 512-wide features */
	json_t *arr = json_array();

	if (!f)
		return -1;
	fputs("children,conventional_mib,mime_mib,ratio\n", f);
	fprintf(s->md, "\n### DRAM storage, parent + n children (Fig. 1/4)\n\n"
	               "| children | conventional MiB | MIME MiB | ratio |\n|---|---|---|---|\n");
	for (int n = 0; n <= 10; n++) {
		struct mime_energy_storage st;

		mime_energy_storage(&s->hw, &s->net, n, head, &st);
		fprintf(f, "%d,%.4f,%.4f,%.4f\n", n, st.conventional_bytes / 1048576.0,
		        st.mime_bytes / 1048576.0, st.conventional_bytes / st.mime_bytes);
		fprintf(s->md, "| %d | %.2f | %.2f | %.2f |\n", n,
		        st.conventional_bytes / 1048576.0, st.mime_bytes / 1048576.0,
		        st.conventional_bytes / st.mime_bytes);
		json_array_append_new(arr, json_real(st.conventional_bytes / st.mime_bytes));
		if (n == 3 && !s->o->json)
			printf("%-44s %.2fx (%.1f MiB vs %.1f MiB)\n",
			       "storage, parent + 3 children",
			       st.conventional_bytes / st.mime_bytes,
			       st.conventional_bytes / 1048576.0, st.mime_bytes / 1048576.0);
	}
	json_object_set_new(s->json, "storage_ratio_by_children", arr);
	fclose(f);
	return 0;
}

/* The figures of the study as SVG in o->out (tools/energy_figures.c). */
static int study_figures(struct study *s, const struct mime_energy_report sing[3],
                         const struct mime_energy_report pipe[3],
                         const struct mime_energy_report *pruned,
                         const struct mime_energy_report *small_pe,
                         const struct mime_energy_report *small_cache)
{
	static const char *const case_labels[] = {"1", "2", "M"};
	static const char *const case_names[] = {"Case-1 (conventional, dense)",
	                                         "Case-2 (conventional, zero-skipping)",
	                                         "MIME (Case-3)"};
	static const char *const pruned_labels[] = {"P", "M"};
	static const char *const pruned_names[] = {"90%-pruned conventional, zero-skipping",
	                                           "MIME"};
	static const char *const abl_labels[] = {"A", "B", "C"};
	static const char *const abl_names[] = {"1024 PEs, 156 KiB caches (Table IV)",
	                                        "256 PEs (16x16)", "128 KiB caches"};
	const struct mime_energy_report pr[2] = {*pruned, pipe[2]};
	const struct mime_energy_report abl[3] = {pipe[2], *small_pe, *small_cache};
	char path[4096];
	int r;

#define FIG(name, call)                                                                            \
	do {                                                                                       \
		snprintf(path, sizeof(path), "%s/%s", s->o->out, name);                            \
		r = call;                                                                          \
		if (r < 0) {                                                                       \
			fprintf(stderr, "mime-energy: %s: %s\n", path, strerror(-r));              \
			return r;                                                                  \
		}                                                                                  \
	} while (0)
	FIG("fig5_singular_energy.svg",
	    energy_fig_layers(path, "Singular task mode: energy per layer (Fig. 5)",
	                      "VGG16 3x32x32, a batch of 3 CIFAR10 images; sparsities of the "
	                      "paper's Tables II/III",
	                      &s->net, sing, case_labels, case_names, 3));
	FIG("fig6_pipelined_energy.svg",
	    energy_fig_layers(path, "Pipelined task mode: energy per layer (Fig. 6)",
	                      "VGG16 3x32x32, CIFAR10, CIFAR100, F-MNIST in succession", &s->net,
	                      pipe, case_labels, case_names, 3));
	FIG("fig7_throughput.svg",
	    energy_fig_throughput(path,
	                          "Pipelined: throughput per layer relative to Case-1 (Fig. 7)",
	                          "compute cycles with zero-skipping, no memory stalls", &s->net,
	                          pipe, case_names, 3));
	FIG("fig8_pruned.svg",
	    energy_fig_layers(path,
	                      "Pipelined: MIME vs 90%-weight-pruned conventional models (Fig. 8)",
	                      "pruned weights stored as non-zeros + bitmap and skipped like zero "
	                      "activations",
	                      &s->net, pr, pruned_labels, pruned_names, 2));
	FIG("fig9_ablation.svg",
	    energy_fig_layers(path, "MIME pipelined: hardware ablations (Fig. 9)",
	                      "A = Table IV; B = 16x16 PE array; C = 128 KiB caches", &s->net, abl,
	                      abl_labels, abl_names, 3));
	FIG("fig9_ablation_cycles.svg",
	    energy_fig_throughput(path, "MIME pipelined: throughput of the ablations vs Case-A",
	                          "B = 16x16 PE array; C = 128 KiB caches", &s->net, abl, abl_names,
	                          3));
	FIG("fig4_storage.svg",
	    energy_fig_storage(path,
	                       "VGG16 3x32x32 parent, 10-class heads, one threshold per neuron",
	                       &s->hw, &s->net, 512L * 10 + 10, 10));
#undef FIG
	return 0;
}

static int cmd_study(const struct opts *o, const struct mime_energy_hw *hw)
{
	static const int singular[3] = {0, 0, 0}, pipelined[3] = {0, 1, 2};
	struct study s = {.o = o, .hw = *hw};
	struct mime_energy_report sing[3], pipe[3], pruned, small_pe, small_cache;
	struct mime_energy_sparsity sp[3 * VGG_LAYERS];
	struct mime_energy_net pruned_net;
	struct mime_errinfo ei = {0};
	struct mime_graph g;
	char path[4096];
	int r = 1;

	if (!o->out) {
		usage(stderr);
		return 2;
	}
	if (mkdir(o->out, 0777) < 0 && errno != EEXIST) {
		fprintf(stderr, "mime-energy: %s: %s\n", o->out, strerror(errno));
		return 1;
	}
	snprintf(path, sizeof(path), "%s/table2_mime_sparsity.csv", o->paper_dir);
	if (paper_table_load(path, &s.mime, &ei) < 0)
		goto fail_ei;
	snprintf(path, sizeof(path), "%s/table3_baseline_sparsity.csv", o->paper_dir);
	if (paper_table_load(path, &s.base, &ei) < 0)
		goto fail_ei;
	vgg16_graph(&g);
	if (mime_energy_net_init(&s.net, &g, o->thr, &ei) < 0)
		goto fail_ei;
	s.csv = open_out(o->out, "layers.csv");
	s.md = open_out(o->out, "summary.md");
	s.json = json_object();
	if (!s.csv || !s.md)
		goto out;
	csv_header(s.csv);
	fprintf(s.md,
	        "# mime-energy study\n\nVGG16 on 3x32x32, batch of 3; sparsities from the MIME "
	        "paper's Tables II (MIME) and III (baseline). Hardware: %dx%d PEs, caches "
	        "%ld/%ld/%ld KiB, %d-bit words, e = %g/%g/%g/%g. Layers marked (interp.) have no "
	        "value in the paper and are left out of the ranges.\n",
	        hw->pe_rows, hw->pe_cols, hw->act_cache_bytes / 1024, hw->weight_cache_bytes / 1024,
	        hw->thr_cache_bytes / 1024, hw->word_bits, hw->e_dram, hw->e_cache, hw->e_reg,
	        hw->e_mac);

	if (study_mode(&s, singular, "singular", sing) < 0 ||
	    study_mode(&s, pipelined, "pipelined", pipe) < 0)
		goto out;
	ratio_table(&s, "Singular: Case-1 / MIME", "singular_case1_over_mime",
	            "Energy of Case-1 over Case-3 (MIME), three CIFAR10 images.", &sing[0],
	            &sing[2], 1);
	ratio_table(&s, "Singular: Case-2 / MIME", "singular_case2_over_mime",
	            "Energy of Case-2 over Case-3.", &sing[1], &sing[2], 1);
	ratio_table(&s, "Singular: E_DRAM of MIME / Case-2", "singular_dram_mime_over_case2",
	            "Ratio of E_DRAM only (above 1: MIME moves more).", &sing[2], &sing[1], 2);
	ratio_table(&s, "Pipelined: Case-1 / MIME", "pipelined_case1_over_mime",
	            "CIFAR10, CIFAR100, F-MNIST in succession.", &pipe[0], &pipe[2], 1);
	ratio_table(&s, "Pipelined: Case-2 / MIME", "pipelined_case2_over_mime",
	            "Energy of Case-2 over Case-3.", &pipe[1], &pipe[2], 1);

	/* Fig. 8: conventional 90%-weight-pruned models, zero-skipping, pipelined. */
	pruned_net = s.net;
	for (int l = 0; l < pruned_net.n_layers; l++)
		pruned_net.layers[l].weight_density = 0.1;
	paper_sparsity(&s.base, pipelined, 3, sp);
	if (run(&s.hw, &pruned_net, 3, pipelined, sp, MIME_ENERGY_CASE2, &pruned) < 0)
		goto out;
	csv_report(s.csv, "pipelined_pruned90", &s.net, &s.mime, &pruned);
	ratio_table(&s, "Pipelined: 90%-pruned conventional / MIME", "pruned90_over_mime",
	            "Above 1: MIME spends less (Fig. 8).", &pruned, &pipe[2], 0);

	/* Fig. 9: Case-B 256 PEs, Case-C 128 KiB caches, MIME pipelined. */
	paper_sparsity(&s.mime, pipelined, 3, sp);
	s.hw.pe_rows = s.hw.pe_cols = 16;
	if (run(&s.hw, &s.net, 3, pipelined, sp, MIME_ENERGY_CASE3, &small_pe) < 0)
		goto out;
	csv_report(s.csv, "pipelined_pe256", &s.net, &s.mime, &small_pe);
	s.hw = *hw;
	s.hw.act_cache_bytes = s.hw.weight_cache_bytes = s.hw.thr_cache_bytes = 128 * 1024;
	if (run(&s.hw, &s.net, 3, pipelined, sp, MIME_ENERGY_CASE3, &small_cache) < 0)
		goto out;
	csv_report(s.csv, "pipelined_cache128", &s.net, &s.mime, &small_cache);
	s.hw = *hw;
	ratio_table(&s, "MIME pipelined: 256 PEs / 1024 PEs", "pe256_over_pe1024",
	            "Fig. 9 Case-B over Case-A.", &small_pe, &pipe[2], 1);
	ratio_table(&s, "MIME pipelined: 128 KiB / 156 KiB caches", "cache128_over_cache156",
	            "Fig. 9 Case-C over Case-A.", &small_cache, &pipe[2], 0);

	if (study_storage(&s) < 0 ||
	    study_figures(&s, sing, pipe, &pruned, &small_pe, &small_cache) < 0)
		goto out;
	if (o->json) {
		json_dumpf(s.json, stdout, JSON_INDENT(1) | JSON_REAL_PRECISION(6));
		putchar('\n');
	} else {
		printf("wrote %s/layers.csv, %s/storage.csv, %s/summary.md and %s/fig*.svg\n",
		       o->out, o->out, o->out, o->out);
	}
	r = 0;
out:
	json_decref(s.json);
	if (s.md)
		fclose(s.md);
	if (s.csv)
		fclose(s.csv);
	return r;
fail_ei:
	fprintf(stderr, "mime-energy: %s\n", ei.msg);
	return 1;
}

static int parse_tasks(const char *s, int *tasks, int *ret_batch)
{
	int n = 0;

	while (*s) {
		char *end;
		long v = strtol(s, &end, 10);

		if (end == s || n >= MAX_BATCH || v < -1000000 || v > 1000000)
			return -1;
		tasks[n++] = (int)v;
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			return -1;
	}
	*ret_batch = n;
	return n ? 0 : -1;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},
		{"set", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"out", required_argument, NULL, 'o'},
		{"paper-dir", required_argument, NULL, 'p'},
		{"net", required_argument, NULL, 'n'},
		{"graph", required_argument, NULL, 'g'},
		{"bundle", required_argument, NULL, 'B'},
		{"task", required_argument, NULL, 'K'},
		{"images", required_argument, NULL, 'G'},
		{"limit", required_argument, NULL, 'L'},
		{"input", required_argument, NULL, 'i'},
		{"filters", required_argument, NULL, 'f'},
		{"kernel", required_argument, NULL, 'k'},
		{"stride", required_argument, NULL, 'S'},
		{"pad", required_argument, NULL, 'P'},
		{"fc", no_argument, NULL, 'F'},
		{"in-sparsity", required_argument, NULL, 'I'},
		{"out-sparsity", required_argument, NULL, 'O'},
		{"tasks", required_argument, NULL, 't'},
		{"thresholds", required_argument, NULL, 'T'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	struct opts o = {.paper_dir = "conf/paper",
	                 .net = "vgg16",
	                 .kernel = 3,
	                 .stride = 1,
	                 .pad = 1,
	                 .batch = 1,
	                 .limit = 32,
	                 .thr = MIME_ENERGY_THR_NEURON};
	struct mime_energy_hw hw;
	struct mime_errinfo ei = {0};
	const char *cmd;
	int c;

	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	/* `mime-energy --bundle ...` is `mime-energy net --bundle ...` */
	cmd = argv[1][0] == '-' ? "net" : argv[1];
	optind = argv[1][0] == '-' ? 1 : 2;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			o.config = optarg;
			break;
		case 's':
			if (o.n_sets >= 32)
				return fprintf(stderr, "mime-energy: too many --set\n"), 2;
			o.sets[o.n_sets++] = optarg;
			break;
		case 'j':
			o.json = 1;
			break;
		case 'o':
			o.out = optarg;
			break;
		case 'p':
			o.paper_dir = optarg;
			break;
		case 'n':
			o.net = optarg;
			break;
		case 'g':
			o.graph = optarg;
			break;
		case 'B':
			o.bundle = optarg;
			break;
		case 'K':
			o.task_list = optarg;
			break;
		case 'G':
			o.image_list = optarg;
			break;
		case 'L':
			o.limit = atol(optarg);
			break;
		case 'i':
			if (sscanf(optarg, "%dx%dx%d", &o.input.c, &o.input.h, &o.input.w) != 3)
				return fprintf(stderr, "mime-energy: --input wants CxHxW\n"), 2;
			break;
		case 'f':
			o.filters = atoi(optarg);
			break;
		case 'k':
			o.kernel = atoi(optarg);
			break;
		case 'S':
			o.stride = atoi(optarg);
			break;
		case 'P':
			o.pad = atoi(optarg);
			break;
		case 'F':
			o.fc = 1;
			break;
		case 'I':
			o.in_sparsity = strtof(optarg, NULL);
			break;
		case 'O':
			o.out_sparsity = strtof(optarg, NULL);
			break;
		case 't':
			if (parse_tasks(optarg, o.tasks, &o.batch) < 0)
				return fprintf(stderr, "mime-energy: --tasks wants 0,1,2...\n"), 2;
			break;
		case 'T':
			if (strcmp(optarg, "neuron") == 0)
				o.thr = MIME_ENERGY_THR_NEURON;
			else if (strcmp(optarg, "channel") == 0)
				o.thr = MIME_ENERGY_THR_CHANNEL;
			else
				return fprintf(stderr,
				               "mime-energy: --thresholds neuron|channel\n"),
				       2;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	mime_energy_hw_default(&hw);
	if (o.config && energy_conf_load(o.config, &hw, &ei) < 0)
		goto fail_ei;
	for (int i = 0; i < o.n_sets; i++) {
		char key[64];
		const char *eq = strchr(o.sets[i], '=');

		if (!eq || eq - o.sets[i] >= (long)sizeof(key)) {
			fprintf(stderr, "mime-energy: --set wants KEY=VALUE\n");
			return 2;
		}
		snprintf(key, sizeof(key), "%.*s", (int)(eq - o.sets[i]), o.sets[i]);
		if (energy_conf_set(&hw, key, eq + 1, &ei) < 0)
			goto fail_ei;
	}
	if (mime_energy_hw_check(&hw, &ei) < 0)
		goto fail_ei;

	if (strcmp(cmd, "study") == 0)
		return cmd_study(&o, &hw);
	if (strcmp(cmd, "layer") == 0)
		return cmd_layer(&o, &hw);
	if (strcmp(cmd, "net") == 0)
		return cmd_net(&o, &hw);
	usage(stderr);
	return 2;
fail_ei:
	fprintf(stderr, "mime-energy: %s\n", ei.msg);
	return 1;
}
