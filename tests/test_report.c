// SPDX-License-Identifier: MIT
/* test_report -- `mime-train report`'s pieces (train/report.h): the hypervolume on
 * hand-computed cases and on the Multi-phase CNN paper's Tables 5 -> 6, the storage model,
 * the template, the goal checks of both sections, and the phases section rendered from the
 * fixture tests/data/phases-sample.json (and from records with fields missing). */
#include "tests/unit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train/report.h"

/* cmocka 1.1.5 has no assert_double_equal */
#define assert_near(a, b, tol) assert_true(fabs((a) - (b)) <= (tol))

static char *fig_dir(void)
{
	char *d = strdup("/tmp/mime-test-report-XXXXXX");

	assert_non_null(d);
	assert_non_null(mkdtemp(d));
	return d;
}

static void rm_dir(char *d)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
	assert_int_equal(system(cmd), 0);
	free(d);
}

/* Runs section (or the whole template when template_text is not NULL) into a string. */
static char *render(struct mimetrain_report_ctx *ctx, const char *section,
                    const char *template_text, int *ret_r)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	struct mime_errinfo ei = {0};

	assert_non_null(f);
	*ret_r = template_text ? mimetrain_report_template(f, template_text, ctx, &ei)
	                       : mimetrain_report_section(f, section, ctx, &ei);
	fclose(f);
	return buf;
}

static void test_report_hypervolume_hand_computed(void **state)
{
	/* one point: the box [1, 2] x [80, 90] */
	static const double s1[] = {2}, a1[] = {90};
	/* two points: boxes of 2 x 5 and 1 x 10 overlapping in 1 x 5: 10 + 10 - 5 = 15 */
	static const double s2[] = {3, 2}, a2[] = {85, 90};
	/* the same with a dominated point, points below the reference, a NAN, another order */
	static const double s3[] = {0.5, 2, 2.5, 4, NAN, 3}, a3[] = {95, 90, 84, 79, 99, 85};
	/* equal speeds: only the higher accuracy counts */
	static const double s4[] = {2, 2}, a4[] = {88, 90};

	(void)state;
	assert_near(mimetrain_hypervolume(1, s1, a1, 1, 80), 10, 1e-12);
	assert_near(mimetrain_hypervolume(2, s2, a2, 1, 80), 15, 1e-12);
	assert_near(mimetrain_hypervolume(6, s3, a3, 1, 80), 15, 1e-12);
	assert_near(mimetrain_hypervolume(2, s4, a4, 1, 80), 10, 1e-12);
	/* a point on the reference lines adds nothing; no point: 0 */
	assert_near(mimetrain_hypervolume(1, s1, a1, 2, 80), 0, 0);
	assert_near(mimetrain_hypervolume(0, NULL, NULL, 1, 80), 0, 0);
}

static void test_report_hypervolume_paper_table6(void **state)
{
	/* the paper's Table 5 (speed 1/ms, accuracy %) and Table 6, reference (0.2/ms, 76%) */
	static const double cs[] = {0.6317, 0.5336, 0.5094, 0.2546, 0.2391};
	static const double ca[] = {78.78, 82.07, 82.72, 86.68, 87.3};
	static const double os[] = {0.6317, 0.5797, 0.5299, 0.3037, 0.2367};
	static const double oa[] = {78.78, 81.76, 82.89, 84.41, 86.54};
	static const double fs[] = {0.4018, 0.3509, 0.3283, 0.2573, 0.2358};
	static const double fa[] = {83.86, 85.63, 86.07, 87.68, 88};
	static const double s6[] = {0.6317, 0.5797, 0.5299, 0.285, 0.2629, 0.2388};
	static const double a6[] = {78.78, 81.76, 82.89, 85.4, 86.36, 87.08};

	(void)state;
	assert_near(mimetrain_hypervolume(5, cs, ca, 0.2, 76), 2.739238, 1e-6);
	assert_near(mimetrain_hypervolume(5, os, oa, 0.2, 76), 2.940214, 1e-6);
	assert_near(mimetrain_hypervolume(6, s6, a6, 0.2, 76), 3.006089, 1e-6);
	assert_near(mimetrain_hypervolume(5, fs, fa, 0.2, 76), 2.013187, 3e-4);
}

/* Two tasks: the parent's ("p") and a child ("c"); parent weights 50 bytes. */
static void two_tasks(struct mimetrain_report_mime *r)
{
	static const double sp_mime[] = {0.7, 0.6}, sp_relu[] = {0.5, 0.65};

	memset(r, 0, sizeof(*r));
	r->bundle = "b.mime";
	r->bundle_bytes = 1000;
	r->parent_bytes = 50;
	r->n_masked = 2;
	strcpy(r->layer[0], "conv1");
	strcpy(r->layer[1], "conv2");
	r->n_tasks = 2;
	r->data_dir = "data";
	r->threads = 1;
	for (int i = 0; i < 2; i++) {
		struct mimetrain_report_task *t = &r->tasks[i];

		strcpy(t->name, i ? "c" : "p");
		t->n_test = 100;
		t->granularity = MIME_THR_ELEMENT;
		t->mime_bytes = i ? 20 : 10;
		t->copy_bytes = i ? 0 : 100;
		t->head_bytes = 5;
		t->channel_bytes = 6;
		t->train_images = 1000;
		for (int m = 0; m < MIMETRAIN_REPORT_N_MODES; m++) {
			t->has[m] = 1;
			t->eval[m].n_masked = 2;
			for (int k = 0; k < 2; k++)
				t->eval[m].sparsity[k] = m == 0 ? sp_mime[k] : sp_relu[k];
			t->train_seconds[m] = m == 0 ? 10 : 20;
			t->train_cpu_seconds[m] = NAN;
			t->train_epochs[m] = 10;
		}
		t->eval[0].accuracy = 0.90;
		t->eval[1].accuracy = 0.91; /* MIME - fine-tune = -1.00 point */
		t->eval[2].accuracy = 0.92; /* MIME below head-only */
	}
}

static void test_report_storage_measured_then_mean(void **state)
{
	struct mimetrain_report_mime *r = calloc(1, sizeof(*r));
	int64_t mime[3], conv[3];

	(void)state;
	assert_non_null(r);
	two_tasks(r);
	assert_int_equal(mimetrain_report_storage(r, 3, mime, conv), 2);
	assert_int_equal(mime[0], 60); /* parent + p's 10 */
	assert_int_equal(mime[1], 80);
	assert_int_equal(mime[2], 95); /* + the mean task, 15 */
	assert_int_equal(conv[0], 100);
	assert_int_equal(conv[1], 155); /* c has no copy: the parent's weights + its head */
	assert_int_equal(conv[2], 233); /* + the mean copy, (100 + 55) / 2 rounded */
	free(r);
}

static void test_report_template_sections_and_unknown_marker(void **state)
{
	struct mimetrain_report_ctx ctx = {.figures_dir = "/nonexistent", .figures_link = "f"};
	char *s;
	int r;

	(void)state;
	s = render(&ctx, NULL, "# Title\n@@phases@@\nlast line", &r);
	assert_int_equal(r, 0);
	assert_non_null(strstr(s, "# Title\nThe bundle has no phase build record"));
	assert_non_null(strstr(s, "\nlast line\n"));
	assert_null(strstr(s, "@@"));
	free(s);
	s = render(&ctx, NULL, "text\n@@no-such-section@@\n", &r);
	assert_int_equal(r, MIME_EINVAL);
	free(s);
}

static void test_report_mime_goals_and_figures(void **state)
{
	struct mimetrain_report_mime *m = calloc(1, sizeof(*m));
	char *dir = fig_dir(), *s, path[512];
	struct mimetrain_report_ctx ctx = {.figures_link = "figs", .seconds = 1.5};
	int r;

	(void)state;
	assert_non_null(m);
	two_tasks(m);
	ctx.mime = m;
	ctx.figures_dir = dir;
	s = render(&ctx, "mime-goals", NULL, &r);
	assert_int_equal(r, 0);
	assert_non_null(strstr(s, "| child MIME accuracy within 1.5 points of its full fine-tune | "
	                          "c -1.00 points | met |"));
	assert_non_null(strstr(s, "| child MIME accuracy above head-only | c -2.00 points | "
	                          "missed |"));
	/* conv2: MIME 0.6 is below the baselines' 0.65 */
	assert_non_null(strstr(s, "p: 2 of 4 layer x baseline pairs above"));
	assert_non_null(strstr(s, "| MIME sparsity >= 0.55 in every masked layer | p "
	                          "0.600-0.700, c 0.600-0.700 | met |"));
	assert_non_null(strstr(s, "largest task: 40.00% (20 of 50 bytes) | missed |"));
	assert_non_null(strstr(s, "| demo bundle <= 16 MiB | 1000 bytes | met |"));
	/* training time: wall (10 vs 20 s) while no CPU time is recorded ... */
	assert_non_null(strstr(s, "c 10 vs 20 s wall (one run each, shared machine) | met |"));
	free(s);
	/* ... CPU time once both runs recorded it, whatever the wall times say */
	m->tasks[1].train_cpu_seconds[0] = 30;
	m->tasks[1].train_cpu_seconds[1] = 25;
	s = render(&ctx, "mime-goals", NULL, &r);
	assert_non_null(strstr(s, "c 30 vs 25 s CPU (one run each, shared machine) | missed |"));
	free(s);
	/* with the child's fine-tune not measured, the first goal is not measured either */
	m->tasks[1].has[MIMETRAIN_REPORT_CONVENTIONAL] = 0;
	s = render(&ctx, "mime-goals", NULL, &r);
	assert_non_null(strstr(s, "its full fine-tune | - | not measured |"));
	free(s);
	for (const char *const *sec =
	             (const char *const[]){"mime-accuracy", "mime-sparsity", "mime-storage", NULL};
	     *sec; sec++) {
		s = render(&ctx, *sec, NULL, &r);
		assert_int_equal(r, 0);
		assert_non_null(strstr(s, "](figs/"));
		free(s);
	}
	for (const char *const *f = (const char *const[]){"accuracy.svg", "sparsity-p.svg",
	                                                  "sparsity-c.svg", "storage.svg", NULL};
	     *f; f++) {
		snprintf(path, sizeof(path), "%s/%s", dir, *f);
		assert_int_equal(access(path, R_OK), 0);
	}
	rm_dir(dir);
	free(m);
}

/* The per-channel bundle: its tasks' stored bytes decide the per-channel goal when its parent
 * is the demo bundle's (same checksum); otherwise the figure computed from the shapes. */
static void test_report_channel_bundle(void **state)
{
	struct mimetrain_report_mime *m = calloc(1, sizeof(*m)), *c = calloc(1, sizeof(*c));
	struct mimetrain_report_ctx ctx = {.figures_dir = "/nonexistent", .figures_link = "f"};
	char *s;
	int r;

	(void)state;
	assert_non_null(m);
	assert_non_null(c);
	two_tasks(m);
	two_tasks(c);
	m->parent_checksum = c->parent_checksum = 0x1234;
	m->parent_bytes = c->parent_bytes = 5000;
	c->bundle = "ch.mime";
	for (int i = 0; i < 2; i++) {
		c->tasks[i].granularity = MIME_THR_CHANNEL;
		c->tasks[i].mime_bytes = i ? 49 : 40; /* 0.98%, under 1% */
		c->tasks[i].head_weights = 100;
		c->tasks[i].head_stored = 25;
		c->tasks[i].eval[0].accuracy = 0.895; /* 1.5 points below c's fine-tune */
		m->tasks[i].channel_bytes = 60;       /* computed: 1.2%, over */
	}
	ctx.mime = m;
	ctx.channel = c;
	s = render(&ctx, "mime-goals", NULL, &r);
	assert_int_equal(r, 0);
	assert_non_null(strstr(s, "| per-channel thresholds + head <= 1% (the per-channel bundle's "
	                          "tasks, as stored) | largest task: 0.98% (49 of 5000 bytes) | "
	                          "met |"));
	free(s);
	s = render(&ctx, "mime-channel", NULL, &r);
	assert_int_equal(r, 0);
	assert_non_null(strstr(s, "byte-identical to the demo bundle's"));
	assert_non_null(strstr(s, "| c | per channel | 25 of 100 | 49 | 0.98% | 89.50 | 91.00 | "
	                          "92.00 | -1.50 | 0.700 0.600 |"));
	free(s);
	/* another parent: the measured tasks say nothing about this one */
	c->parent_checksum = 0x4321;
	s = render(&ctx, "mime-goals", NULL, &r);
	assert_non_null(strstr(s, "(computed from the shapes) | largest task: 1.20% (60 of 5000 "
	                          "bytes) | missed |"));
	free(s);
	s = render(&ctx, "mime-channel", NULL, &r);
	assert_non_null(strstr(s, "**not** those of"));
	free(s);
	ctx.channel = NULL;
	s = render(&ctx, "mime-channel", NULL, &r);
	assert_non_null(strstr(s, "No per-channel bundle was measured"));
	free(s);
	free(m);
	free(c);
}

/* bench/train.sh --json's record decides the training-time goal when given (the bundle's
 * recorded times, wall 10 vs 20 s, would say met: the record says missed here). */
static void test_report_train_bench(void **state)
{
	static const char rec[] =
		"{\"command\":\"bench/train.sh\",\"date\":\"2026-11-26T19:01:13Z\",\"task\":\"c\","
		"\"bundle\":\"models/x.mime\","
		"\"epochs\":10,\"rounds\":3,\"threads\":1,\"modes\":{"
		"\"mime\":{\"train_cpu_seconds\":120.5,\"cpu_vs_finetune\":1.05},"
		"\"finetune\":{\"train_cpu_seconds\":115.0,\"cpu_vs_finetune\":1.0}}}";
	struct mimetrain_report_mime *m = calloc(1, sizeof(*m));
	struct mimetrain_report_ctx ctx = {.figures_dir = "/nonexistent", .figures_link = "f"};
	char *path = mime_test_tmpfile(rec, sizeof(rec) - 1), *bad = mime_test_tmpfile("{", 1);
	char *s;
	int r;

	(void)state;
	assert_non_null(m);
	two_tasks(m);
	ctx.mime = m;
	ctx.train_bench = path;
	s = render(&ctx, "mime-goals", NULL, &r);
	assert_int_equal(r, 0);
	assert_non_null(strstr(
		s, "c on models/x.mime, 10 epochs, 3 rounds, 1 thread(s), 2026-11-26T19:01:13Z: "
		   "thresholds 120.5 s vs fine-tune 115.0 s (medians), 1.05x | "
		   "missed |"));
	assert_null(strstr(s, "one run each"));
	assert_non_null(strstr(s, "| demo bundle <= 16 MiB | 1000 bytes | met |"));
	free(s);
	ctx.train_bench = bad;
	s = render(&ctx, "mime-goals", NULL, &r);
	assert_non_null(strstr(s, "- (the record is unreadable or incomplete) | not measured |"));
	free(s);
	unlink(path);
	unlink(bad);
	free(path);
	free(bad);
	free(m);
}

static void test_report_phases_fixture(void **state)
{
	char *json = mime_test_source_path("tests/data/phases-sample.json");
	char *dir = fig_dir(), *s, path[512], svg[1 << 15];
	struct mimetrain_report_ctx ctx = {.figures_link = "figs"};
	struct mime_errinfo ei = {0};
	size_t n_svg;
	FILE *f;
	int r, polygons = 0;

	(void)state;
	ctx.figures_dir = dir;
	ctx.phases_json = json;
	s = render(&ctx, "phases", NULL, &r);
	assert_int_equal(r, 0);
	assert_non_null(strstr(s, "| combined_5p | 5 | 2.739238 |"));
	assert_non_null(strstr(s, "| coarse_5p | 5 | 2.940214 |"));
	assert_non_null(strstr(s, "| combined_6p | 6 | 3.006089 |"));
	assert_non_null(strstr(s, "| combined_5p hypervolume >= coarse-only's and fine-only's | "
	                          "2.7392 vs 2.9402 and 2.0134 | missed |"));
	assert_non_null(strstr(s, "| combined_6p hypervolume >= coarse-only's and fine-only's | "
	                          "3.0061 vs 2.9402 and 2.0134 | met |"));
	assert_non_null(strstr(s, "(combined_5p) | 78.78% vs 76.00% | missed |"));
	assert_non_null(strstr(s, "| 6 | 95.31 | 0.9531 | 13453 | 76.31 | yes |"));
	assert_non_null(strstr(s, "| mnist, shared | 93.00 | 95.00 |"));
	assert_non_null(strstr(s, "| speed | 0.9712 |"));
	assert_non_null(strstr(s, "](figs/phases-accuracy-speed.svg)"));
	free(s);
	snprintf(path, sizeof(path), "%s/phases-accuracy-speed.svg", dir);
	f = fopen(path, "r");
	assert_non_null(f);
	n_svg = fread(svg, 1, sizeof(svg) - 1, f);
	fclose(f);
	svg[n_svg] = '\0';
	for (const char *p = strstr(svg, "<polygon"); p; p = strstr(p + 1, "<polygon"))
		polygons++;
	assert_int_equal(polygons, 4); /* one dominated area per variant */
	assert_non_null(strstr(svg, "</svg>\n"));
	/* not JSON */
	f = open_memstream(&s, &n_svg);
	assert_int_equal(mimetrain_report_phases(f, path, &ctx, &ei), MIME_EFORMAT);
	fclose(f);
	free(s);
	rm_dir(dir);
	free(json);
}

static void test_report_phases_missing_fields(void **state)
{
	static const char rec[] =
		"{\"variants\": [{\"name\": \"combined_5p\", \"phases\": [{\"phase\": 1, "
		"\"accuracy\": 0.9}, {\"phase\": 2, \"accuracy\": 0.85, \"latency_ms\": 0.5}]}]}";
	char *path = mime_test_tmpfile(rec, sizeof(rec) - 1), *dir = fig_dir(), *s;
	struct mimetrain_report_ctx ctx = {.figures_link = "figs"};
	int r;

	(void)state;
	assert_non_null(path);
	ctx.figures_dir = dir;
	ctx.phases_json = path;
	s = render(&ctx, "phases", NULL, &r);
	assert_int_equal(r, 0);
	/* no speed for phase 1, 1 / 0.5 ms for phase 2 */
	assert_non_null(strstr(s, "| 1 | - | - | - | 90.00 | - | - | - | - |"));
	assert_non_null(strstr(s, "| 2 | - | - | - | 85.00 | 2.0000 | 0.500 | - | - |"));
	/* no constraints: no reference, no hypervolume, nothing faked */
	assert_non_null(strstr(s, "| combined_5p | 2 | - |"));
	assert_non_null(strstr(s, "| - vs - and - | not measured |"));
	assert_non_null(strstr(s, "(combined_5p) | 90.00% vs - | not measured |"));
	assert_non_null(strstr(s, "90.00 -> 85.00 | missed |"));
	assert_non_null(strstr(s, "The record has no search steps."));
	free(s);
	unlink(path);
	free(path);
	rm_dir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_report_hypervolume_hand_computed),
		cmocka_unit_test(test_report_hypervolume_paper_table6),
		cmocka_unit_test(test_report_storage_measured_then_mean),
		cmocka_unit_test(test_report_template_sections_and_unknown_marker),
		cmocka_unit_test(test_report_mime_goals_and_figures),
		cmocka_unit_test(test_report_channel_bundle),
		cmocka_unit_test(test_report_train_bench),
		cmocka_unit_test(test_report_phases_fixture),
		cmocka_unit_test(test_report_phases_missing_fields),
	};

	return cmocka_run_group_tests_name("report", tests, NULL, NULL);
}
