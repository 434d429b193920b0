// SPDX-License-Identifier: MIT
/* test_svg -- the SVG writer behind mime-energy's and mime-train report's figures
 * (tools/svg.c): one rect per bar segment, escaped text, a nice y axis, lines with one marker
 * per point (open ones past n_measured), x-y series with their dominated areas, and -errno
 * for a path that cannot be created. Built from tools/meson.build, suite 'unit'. */
#include "tests/unit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/svg.h"

/* The file's text (malloc'ed) and then removes it. */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = calloc(1, 1 << 16);
	size_t n;

	assert_non_null(f);
	assert_non_null(buf);
	n = fread(buf, 1, (1 << 16) - 1, f);
	buf[n] = '\0';
	fclose(f);
	unlink(path);
	return buf;
}

static int count(const char *s, const char *what)
{
	int n = 0;

	for (const char *p = strstr(s, what); p; p = strstr(p + 1, what))
		n++;
	return n;
}

static char *tmp_path(void)
{
	char *path = mime_test_tmpfile("", 0);

	assert_non_null(path);
	return path;
}

static void test_svg_bar_chart_stacked(void **state)
{
	static const char *const groups[] = {"conv1", "a<b&c"}, *const bars[] = {"one", "two"};
	static const char *const stacks[] = {"E_DRAM", "E_cache", "E_reg"};
	static const double v[2 * 2 * 3] = {1,   0.5, 0.25, 0.1, 0.1, 0.1,
	                                    0.3, 0.3, 0.3,  2,   0.5, 0.28};
	char *path = tmp_path(), *s;

	(void)state;
	assert_int_equal(svg_bar_chart(path, &(struct svg_bar_chart){.title = "T",
	                                                             .y_label = "y",
	                                                             .n_groups = 2,
	                                                             .n_bars = 2,
	                                                             .n_stacks = 3,
	                                                             .group_names = groups,
	                                                             .bar_names = bars,
	                                                             .stack_names = stacks,
	                                                             .v = v}),
	                 0);
	s = slurp(path);
	assert_true(strncmp(s, "<?xml", 5) == 0);
	assert_non_null(strstr(s, "</svg>\n"));
	/* background + 2 x 2 x 3 segments + 3 legend swatches */
	assert_int_equal(count(s, "<rect"), 1 + 12 + 3);
	assert_non_null(strstr(s, ">a&lt;b&amp;c</text>"));
	assert_null(strstr(s, "a<b"));
	/* the tallest bar is 2.78: the axis ends at 3, gridlines every 0.6 */
	assert_non_null(strstr(s, ">3</text>"));
	assert_non_null(strstr(s, ">0.6</text>"));
	assert_non_null(strstr(s, ">one: one</text>"));
	free(s);
	free(path);
}

static void test_svg_bar_chart_plain_with_reference(void **state)
{
	static const char *const groups[] = {"l1", "l2", "l3"}, *const bars[] = {"A", "B"};
	static const double v[6] = {1, 2, 1, 0.5, 1, 1.2};
	char *path = tmp_path(), *s;

	(void)state;
	assert_int_equal(svg_bar_chart(path, &(struct svg_bar_chart){.title = "T",
	                                                             .y_label = "y",
	                                                             .n_groups = 3,
	                                                             .n_bars = 2,
	                                                             .n_stacks = 1,
	                                                             .group_names = groups,
	                                                             .bar_names = bars,
	                                                             .v = v,
	                                                             .ref = 1}),
	                 0);
	s = slurp(path);
	assert_int_equal(count(s, "<rect"), 1 + 6 + 2);
	assert_int_equal(count(s, "stroke-dasharray"), 1);
	free(s);
	free(path);
}

static void test_svg_line_chart(void **state)
{
	static const char *const series[] = {"conventional", "MIME"};
	static const double x[4] = {0, 1, 2, 3}, y[8] = {1, 2, 3, 4, 1, 1.1, 1.2, 1.3};
	char *path = tmp_path(), *s;

	(void)state;
	assert_int_equal(svg_line_chart(path, &(struct svg_line_chart){.title = "S",
	                                                               .x_label = "n",
	                                                               .y_label = "MiB",
	                                                               .n_points = 4,
	                                                               .n_series = 2,
	                                                               .x = x,
	                                                               .y = y,
	                                                               .series_names = series}),
	                 0);
	s = slurp(path);
	assert_int_equal(count(s, "<polyline"), 2);
	assert_int_equal(count(s, "<circle"), 8);
	assert_non_null(strstr(s, ">4</text>")); /* y axis ends at 4 */
	free(s);
	free(path);
}

static void test_svg_line_chart_open_markers(void **state)
{
	static const char *const series[] = {"a"};
	static const double x[3] = {1, 2, 3}, y[3] = {1, 2, 3};
	char *path = tmp_path(), *s;

	(void)state;
	assert_int_equal(svg_line_chart(path, &(struct svg_line_chart){.title = "S",
	                                                               .x_label = "n",
	                                                               .y_label = "MB",
	                                                               .n_points = 3,
	                                                               .n_series = 1,
	                                                               .x = x,
	                                                               .y = y,
	                                                               .series_names = series,
	                                                               .n_measured = 2}),
	                 0);
	s = slurp(path);
	assert_int_equal(count(s, "<circle"), 3);
	assert_int_equal(count(s, "fill=\"white\" stroke"), 1); /* the third point is open */
	free(s);
	free(path);
}

static void test_svg_xy_chart_dominated_area(void **state)
{
	static const char *const series[] = {"v1", "v2"};
	static const double x1[] = {3, 2, 2.5}, y1[] = {85, 90, 84}, x2[] = {0.5}, y2[] = {95};
	static const double *const xs[] = {x1, x2}, *const ys[] = {y1, y2};
	static const int n[] = {3, 1};
	char *path = tmp_path(), *s;

	(void)state;
	assert_int_equal(svg_xy_chart(path, &(struct svg_xy_chart){.title = "F",
	                                                           .x_label = "speed",
	                                                           .y_label = "acc",
	                                                           .n_series = 2,
	                                                           .n_points = n,
	                                                           .x = xs,
	                                                           .y = ys,
	                                                           .series_names = series,
	                                                           .has_ref = 1,
	                                                           .ref_x = 1,
	                                                           .ref_y = 80}),
	                 0);
	s = slurp(path);
	assert_int_equal(count(s, "<circle"), 4);
	assert_int_equal(count(s, "<polyline"), 2);
	/* v1 dominates a staircase: ref, (3, 80), (3, 85), (2, 85), (2, 90), (1, 90); v2 is left
	 * of the reference and shades nothing */
	assert_int_equal(count(s, "<polygon"), 1);
	assert_int_equal(count(s, "stroke-dasharray"), 2);
	assert_non_null(strstr(s, ">reference</text>"));
	free(s);
	free(path);
}

static void test_svg_open_unwritable_path(void **state)
{
	static const char *const names[] = {"a"};
	static const double v[1] = {1};

	(void)state;
	assert_int_equal(svg_bar_chart("/nonexistent/dir/x.svg",
	                               &(struct svg_bar_chart){.title = "T",
	                                                       .y_label = "y",
	                                                       .n_groups = 1,
	                                                       .n_bars = 1,
	                                                       .n_stacks = 1,
	                                                       .group_names = names,
	                                                       .bar_names = names,
	                                                       .v = v}),
	                 -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_svg_bar_chart_stacked),
		cmocka_unit_test(test_svg_bar_chart_plain_with_reference),
		cmocka_unit_test(test_svg_line_chart),
		cmocka_unit_test(test_svg_line_chart_open_markers),
		cmocka_unit_test(test_svg_xy_chart_dominated_area),
		cmocka_unit_test(test_svg_open_unwritable_path),
	};

	return cmocka_run_group_tests_name("svg", tests, NULL, NULL);
}
