/* SPDX-License-Identifier: MIT */
/* svg -- a small SVG 1.1 writer for mime-energy's and `mime-train report`'s figures, no
 * dependencies: a few drawing primitives and three chart kinds built on them, grouped
 * (optionally stacked) bars, lines over shared x values, and x-y series with their own x.
 * Text is XML-escaped; numbers are written with %g. Charts scale the y axis from 0 to a
 * "nice" maximum (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 x 10^k, at or above the largest value) with 5
 * gridlines. Ownership: a struct svg owns its FILE from svg_open() to svg_close(). Threads: one
 * thread per struct svg; the chart functions are reentrant. */
#pragma once

#include <stdio.h>

struct svg {
	FILE *f;
	int width, height;
};

/* Creates path and writes the SVG header; 0 or -errno. */
int svg_open(struct svg *s, const char *path, int width, int height);
/* Writes the footer and closes; 0, or -errno when anything failed to be written. */
int svg_close(struct svg *s);

void svg_rect(struct svg *s, double x, double y, double w, double h, const char *fill);
void svg_line(struct svg *s, double x1, double y1, double x2, double y2, const char *stroke,
              double width, int dashed);
/* anchor: "start", "middle" or "end"; rotate in degrees about (x, y) (0: none). */
void svg_text(struct svg *s, double x, double y, double size, const char *anchor, double rotate,
              const char *fmt, ...) __attribute__((format(printf, 7, 8)));

/* Bars: n_groups groups along x (e.g. layers), each of n_bars bars (e.g. cases), each bar a
 * stack of n_stacks segments (1: plain bars) with values v[(g * n_bars + b) * n_stacks + k],
 * drawn bottom-up in order k. Stacked bars take their colours from the stack (legend: stack
 * names, then "label: name" per bar) and carry bar_labels under each bar; plain bars take
 * their colours from the bar (legend: bar names). ref > 0 draws a dashed line at y = ref. */
struct svg_bar_chart {
	const char *title, *subtitle, *y_label;
	int n_groups, n_bars, n_stacks;
	const char *const *group_names;
	const char *const *bar_names;
	const char *const *bar_labels;  /* short, under stacked bars; NULL: bar_names */
	const char *const *stack_names; /* may be NULL when n_stacks == 1 */
	const double *v;
	double ref;
};

/* Lines: n_series series of n_points (x[i], y[s * n_points + i]) with markers. n_measured
 * > 0: the markers of points n_measured.. are drawn open (e.g. extrapolated); 0: all filled. */
struct svg_line_chart {
	const char *title, *subtitle, *x_label, *y_label;
	int n_points, n_series;
	const double *x, *y;
	const char *const *series_names;
	int n_measured;
};

/* X-Y series: series s has n_points[s] points (x[s][i], y[s][i]), drawn as markers joined in
 * the given order. Both axes span the data (and the reference point) with nice ticks; they do
 * not start at 0. has_ref: dashed lines through (ref_x, ref_y) and, for every series, the
 * area its points dominate above and right of the reference (maximising x and y: the union
 * of the boxes [ref_x, x_i] x [ref_y, y_i], a hypervolume) shaded in the series' colour. */
struct svg_xy_chart {
	const char *title, *subtitle, *x_label, *y_label;
	int n_series;
	const int *n_points;
	const double *const *x, *const *y;
	const char *const *series_names;
	int has_ref;
	double ref_x, ref_y;
};

/* Write the chart to path; 0 or -errno. */
int svg_bar_chart(const char *path, const struct svg_bar_chart *c);
int svg_line_chart(const char *path, const struct svg_line_chart *c);
int svg_xy_chart(const char *path, const struct svg_xy_chart *c);
