// SPDX-License-Identifier: MIT
/* svg -- see svg.h. */
#include "tools/svg.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

/* Colour-blind-safe (Tableau 10) palette. */
static const char *const PALETTE[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
                                      "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
#define N_PALETTE ((int)(sizeof(PALETTE) / sizeof(PALETTE[0])))

#define FONT     "DejaVu Sans, Arial, Helvetica, sans-serif"
#define M_LEFT   78
#define M_RIGHT  170 /* legend */
#define M_TOP    56
#define M_BOTTOM 62
#define PLOT_H   300
#define N_GRID   5

int svg_open(struct svg *s, const char *path, int width, int height)
{
	s->f = fopen(path, "w");
	if (!s->f)
		return -errno;
	s->width = width;
	s->height = height;
	fprintf(s->f,
	        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	        "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" "
	        "height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"%s\">\n"
	        "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
	        width, height, width, height, FONT);
	return 0;
}

int svg_close(struct svg *s)
{
	int r = 0;

	if (!s->f)
		return 0;
	fputs("</svg>\n", s->f);
	if (ferror(s->f))
		r = -EIO;
	if (fclose(s->f) != 0 && r == 0)
		r = -errno;
	s->f = NULL;
	return r;
}

void svg_rect(struct svg *s, double x, double y, double w, double h, const char *fill)
{
	fprintf(s->f, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"/>\n",
	        x, y, w, h, fill);
}

void svg_line(struct svg *s, double x1, double y1, double x2, double y2, const char *stroke,
              double width, int dashed)
{
	fprintf(s->f,
	        "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" "
	        "stroke-width=\"%g\"%s/>\n",
	        x1, y1, x2, y2, stroke, width, dashed ? " stroke-dasharray=\"5,4\"" : "");
}

static void put_escaped(FILE *f, const char *t)
{
	for (; *t; t++) {
		switch (*t) {
		case '<':
			fputs("&lt;", f);
			break;
		case '>':
			fputs("&gt;", f);
			break;
		case '&':
			fputs("&amp;", f);
			break;
		case '"':
			fputs("&quot;", f);
			break;
		default:
			fputc(*t, f);
		}
	}
}

void svg_text(struct svg *s, double x, double y, double size, const char *anchor, double rotate,
              const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(s->f, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"%g\" text-anchor=\"%s\"", x, y, size,
	        anchor);
	if (rotate != 0)
		fprintf(s->f, " transform=\"rotate(%g %.2f %.2f)\"", rotate, x, y);
	fputc('>', s->f);
	put_escaped(s->f, buf);
	fputs("</text>\n", s->f);
}

/* The smallest 1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 x 10^k at or above v (v > 0). */
static double nice_ceil(double v)
{
	static const double steps[] = {1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10};
	double p = pow(10, floor(log10(v)));

	for (unsigned i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
		if (steps[i] * p >= v * (1 - 1e-9))
			return steps[i] * p;
	return 10 * p;
}

/* Title, y axis with gridlines and labels from 0 to y_max; returns the y pixel of 0. */
static double axes(struct svg *s, const char *title, const char *subtitle, const char *y_label,
                   double plot_w, double y_max)
{
	const double y0 = M_TOP + PLOT_H;

	svg_text(s, M_LEFT, 22, 16, "start", 0, "%s", title);
	if (subtitle)
		svg_text(s, M_LEFT, 40, 11, "start", 0, "%s", subtitle);
	for (int i = 0; i <= N_GRID; i++) {
		const double y = y0 - PLOT_H * i / (double)N_GRID;

		svg_line(s, M_LEFT, y, M_LEFT + plot_w, y, i ? "#dddddd" : "#333333", 1, 0);
		svg_text(s, M_LEFT - 6, y + 4, 11, "end", 0, "%g", y_max * i / N_GRID);
	}
	svg_line(s, M_LEFT, M_TOP, M_LEFT, y0, "#333333", 1, 0);
	svg_text(s, 18, M_TOP + PLOT_H / 2.0, 12, "middle", -90, "%s", y_label);
	return y0;
}

/* Width of the legend: a swatch and the longest text, at ~6.3 px per character. */
static double legend_w(int n, const char *const *names, const char *const *labels)
{
	size_t max = 0;

	for (int i = 0; i < n; i++) {
		size_t len = strlen(names[i]) + (labels ? strlen(labels[i]) + 2 : 0);

		if (len > max)
			max = len;
	}
	return 20 + 6.3 * (double)max;
}

static void legend(struct svg *s, double x, int n, const char *const *names)
{
	for (int i = 0; i < n; i++) {
		const double y = M_TOP + 8 + 20 * i;

		svg_rect(s, x, y, 14, 14, PALETTE[i % N_PALETTE]);
		svg_text(s, x + 20, y + 11, 12, "start", 0, "%s", names[i]);
	}
}

int svg_bar_chart(const char *path, const struct svg_bar_chart *c)
{
	const int stacked = c->n_stacks > 1;
	const double bar_w = c->n_bars > 2 ? 14 : 18, gap = 12;
	const double group_w = c->n_bars * bar_w + gap;
	const double plot_w = c->n_groups * group_w + gap;
	double y_max = 0, y0, scale, lw;
	struct svg s;
	int r;

	for (int g = 0; g < c->n_groups; g++)
		for (int b = 0; b < c->n_bars; b++) {
			double sum = 0;

			for (int k = 0; k < c->n_stacks; k++)
				sum += c->v[(g * c->n_bars + b) * c->n_stacks + k];
			if (sum > y_max)
				y_max = sum;
		}
	if (c->ref > y_max)
		y_max = c->ref;
	y_max = y_max > 0 ? nice_ceil(y_max) : 1;
	lw = legend_w(c->n_bars, c->bar_names,
	              stacked ? (c->bar_labels ? c->bar_labels : c->bar_names) : NULL);
	if (stacked && legend_w(c->n_stacks, c->stack_names, NULL) > lw)
		lw = legend_w(c->n_stacks, c->stack_names, NULL);
	r = svg_open(&s, path, (int)(M_LEFT + plot_w + M_RIGHT + lw), M_TOP + PLOT_H + M_BOTTOM);
	if (r < 0)
		return r;
	y0 = axes(&s, c->title, c->subtitle, c->y_label, plot_w, y_max);
	scale = PLOT_H / y_max;
	for (int g = 0; g < c->n_groups; g++) {
		const double gx = M_LEFT + gap + g * group_w;

		for (int b = 0; b < c->n_bars; b++) {
			const double x = gx + b * bar_w;
			double y = y0;

			for (int k = 0; k < c->n_stacks; k++) {
				const double h =
					c->v[(g * c->n_bars + b) * c->n_stacks + k] * scale;

				svg_rect(&s, x, y - h, bar_w - 1, h,
				         PALETTE[(stacked ? k : b) % N_PALETTE]);
				y -= h;
			}
			if (stacked)
				svg_text(&s, x + (bar_w - 1) / 2, y0 + 12, 9, "middle", 0, "%s",
				         c->bar_labels ? c->bar_labels[b] : c->bar_names[b]);
		}
		svg_text(&s, gx + (group_w - gap) / 2, y0 + (stacked ? 27 : 16), 11, "middle", 0,
		         "%s", c->group_names[g]);
	}
	if (c->ref > 0)
		svg_line(&s, M_LEFT, y0 - c->ref * scale, M_LEFT + plot_w, y0 - c->ref * scale,
		         "#333333", 1, 1);
	if (stacked) {
		legend(&s, M_LEFT + plot_w + 16, c->n_stacks, c->stack_names);
		svg_text(&s, M_LEFT + plot_w + 16, M_TOP + 20 * c->n_stacks + 28, 11, "start", 0,
		         "bars in each group:");
		for (int b = 0; b < c->n_bars; b++)
			svg_text(&s, M_LEFT + plot_w + 16, M_TOP + 20 * c->n_stacks + 44 + 15 * b,
			         11, "start", 0, "%s: %s",
			         c->bar_labels ? c->bar_labels[b] : c->bar_names[b],
			         c->bar_names[b]);
	} else {
		legend(&s, M_LEFT + plot_w + 16, c->n_bars, c->bar_names);
	}
	return svg_close(&s);
}

int svg_line_chart(const char *path, const struct svg_line_chart *c)
{
	const double plot_w = 520;
	double x_min = INFINITY, x_max = -INFINITY, y_max = 0, y0;
	struct svg s;
	int r;

	for (int i = 0; i < c->n_points; i++) {
		x_min = fmin(x_min, c->x[i]);
		x_max = fmax(x_max, c->x[i]);
	}
	for (int i = 0; i < c->n_points * c->n_series; i++)
		y_max = fmax(y_max, c->y[i]);
	y_max = y_max > 0 ? nice_ceil(y_max) : 1;
	if (!(x_max > x_min))
		x_max = x_min + 1;
	r = svg_open(
		&s, path,
		(int)(M_LEFT + plot_w + M_RIGHT + legend_w(c->n_series, c->series_names, NULL)),
		M_TOP + PLOT_H + M_BOTTOM);
	if (r < 0)
		return r;
	y0 = axes(&s, c->title, c->subtitle, c->y_label, plot_w, y_max);
	for (int i = 0; i < c->n_points; i++) {
		const double x = M_LEFT + 10 + (plot_w - 20) * (c->x[i] - x_min) / (x_max - x_min);

		svg_text(&s, x, y0 + 16, 11, "middle", 0, "%g", c->x[i]);
	}
	svg_text(&s, M_LEFT + plot_w / 2, y0 + 36, 12, "middle", 0, "%s", c->x_label);
	for (int k = 0; k < c->n_series; k++) {
		const char *col = PALETTE[k % N_PALETTE];

		fprintf(s.f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
		        col);
		for (int i = 0; i < c->n_points; i++)
			fprintf(s.f, "%.2f,%.2f ",
			        M_LEFT + 10 + (plot_w - 20) * (c->x[i] - x_min) / (x_max - x_min),
			        y0 - PLOT_H * c->y[k * c->n_points + i] / y_max);
		fputs("\"/>\n", s.f);
		for (int i = 0; i < c->n_points; i++) {
			const int open = c->n_measured > 0 && i >= c->n_measured;

			fprintf(s.f,
			        "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"%s\" fill=\"%s\" "
			        "stroke=\"%s\"/>\n",
			        M_LEFT + 10 + (plot_w - 20) * (c->x[i] - x_min) / (x_max - x_min),
			        y0 - PLOT_H * c->y[k * c->n_points + i] / y_max, open ? "3.5" : "3",
			        open ? "white" : col, col);
		}
	}
	legend(&s, M_LEFT + plot_w + 16, c->n_series, c->series_names);
	return svg_close(&s);
}

/* An axis from lo to hi at a nice step (nice_ceil of a fifth of the span) covering [v0, v1]. */
static void nice_range(double v0, double v1, double *ret_lo, double *ret_hi, double *ret_step)
{
	double step;

	if (!(v1 > v0)) {
		v0 -= fabs(v0) > 0 ? fabs(v0) * 0.05 : 0.5;
		v1 += fabs(v1) > 0 ? fabs(v1) * 0.05 : 0.5;
	}
	step = nice_ceil((v1 - v0) / N_GRID);
	*ret_lo = floor(v0 / step + 1e-9) * step;
	*ret_hi = ceil(v1 / step - 1e-9) * step;
	if (*ret_hi <= *ret_lo)
		*ret_hi = *ret_lo + step;
	*ret_step = step;
}

/* geo: x_lo, x_hi, y_lo, y_hi, plot_w, y0 */
static double xy_px(double x, const double *geo)
{
	return M_LEFT + 10 + (geo[4] - 20) * (x - geo[0]) / (geo[1] - geo[0]);
}

static double xy_py(double y, const double *geo)
{
	return geo[5] - PLOT_H * (y - geo[2]) / (geo[3] - geo[2]);
}

/* The staircase outline of the area series s dominates above and right of the reference:
 * points beyond the reference taken by decreasing x, each adding the strip above the best y
 * so far. Writes a <polygon> (nothing when no point is beyond the reference). */
static void xy_dominated(struct svg *s, const struct svg_xy_chart *c, int k, const double *geo,
                         const char *col)
{
	const int n = c->n_points[k];
	double best = c->ref_y, last_x = INFINITY;
	int started = 0;

	for (;;) {
		int pick = -1;

		/* the point with the largest x below last_x, beyond the reference */
		for (int i = 0; i < n; i++) {
			const double x = c->x[k][i], y = c->y[k][i];

			if (x > c->ref_x && y > c->ref_y && x < last_x &&
			    (pick < 0 || x > c->x[k][pick] ||
			     (x == c->x[k][pick] && y > c->y[k][pick])))
				pick = i;
		}
		if (pick < 0)
			break;
		last_x = c->x[k][pick];
		if (c->y[k][pick] <= best)
			continue;
		if (!started) {
			fprintf(s->f,
			        "<polygon fill=\"%s\" fill-opacity=\"0.1\" stroke=\"%s\" "
			        "stroke-opacity=\"0.7\" stroke-width=\"1\" points=\"",
			        col, col);
			fprintf(s->f, "%.2f,%.2f ", xy_px(c->ref_x, geo), xy_py(c->ref_y, geo));
			started = 1;
		}
		fprintf(s->f, "%.2f,%.2f %.2f,%.2f ", xy_px(last_x, geo), xy_py(best, geo),
		        xy_px(last_x, geo), xy_py(c->y[k][pick], geo));
		best = c->y[k][pick];
	}
	if (started)
		fprintf(s->f, "%.2f,%.2f\"/>\n", xy_px(c->ref_x, geo), xy_py(best, geo));
}

int svg_xy_chart(const char *path, const struct svg_xy_chart *c)
{
	const double plot_w = 520, y0 = M_TOP + PLOT_H;
	double x0 = INFINITY, x1 = -INFINITY, v0 = INFINITY, v1 = -INFINITY, xs, ys, geo[6];
	struct svg s;
	int r;

	for (int k = 0; k < c->n_series; k++)
		for (int i = 0; i < c->n_points[k]; i++) {
			x0 = fmin(x0, c->x[k][i]);
			x1 = fmax(x1, c->x[k][i]);
			v0 = fmin(v0, c->y[k][i]);
			v1 = fmax(v1, c->y[k][i]);
		}
	if (c->has_ref) {
		x0 = fmin(x0, c->ref_x);
		x1 = fmax(x1, c->ref_x);
		v0 = fmin(v0, c->ref_y);
		v1 = fmax(v1, c->ref_y);
	}
	if (!isfinite(x0)) { /* no point at all */
		x0 = v0 = 0;
		x1 = v1 = 1;
	}
	nice_range(x0, x1, &geo[0], &geo[1], &xs);
	nice_range(v0, v1, &geo[2], &geo[3], &ys);
	geo[4] = plot_w;
	geo[5] = y0;
	r = svg_open(
		&s, path,
		(int)(M_LEFT + plot_w + M_RIGHT + legend_w(c->n_series, c->series_names, NULL)),
		M_TOP + PLOT_H + M_BOTTOM);
	if (r < 0)
		return r;
	svg_text(&s, M_LEFT, 22, 16, "start", 0, "%s", c->title);
	if (c->subtitle)
		svg_text(&s, M_LEFT, 40, 11, "start", 0, "%s", c->subtitle);
	for (double v = geo[2]; v <= geo[3] + ys * 1e-6; v += ys) {
		svg_line(&s, M_LEFT, xy_py(v, geo), M_LEFT + plot_w, xy_py(v, geo),
		         v == geo[2] ? "#333333" : "#dddddd", 1, 0);
		svg_text(&s, M_LEFT - 6, xy_py(v, geo) + 4, 11, "end", 0, "%g", v);
	}
	for (double v = geo[0]; v <= geo[1] + xs * 1e-6; v += xs)
		svg_text(&s, xy_px(v, geo), y0 + 16, 11, "middle", 0, "%g", v);
	svg_line(&s, M_LEFT, M_TOP, M_LEFT, y0, "#333333", 1, 0);
	svg_text(&s, 18, M_TOP + PLOT_H / 2.0, 12, "middle", -90, "%s", c->y_label);
	svg_text(&s, M_LEFT + plot_w / 2, y0 + 36, 12, "middle", 0, "%s", c->x_label);
	if (c->has_ref) {
		for (int k = 0; k < c->n_series; k++)
			xy_dominated(&s, c, k, geo, PALETTE[k % N_PALETTE]);
		svg_line(&s, xy_px(c->ref_x, geo), M_TOP, xy_px(c->ref_x, geo), y0, "#333333", 1,
		         1);
		svg_line(&s, M_LEFT, xy_py(c->ref_y, geo), M_LEFT + plot_w, xy_py(c->ref_y, geo),
		         "#333333", 1, 1);
		svg_text(&s, xy_px(c->ref_x, geo) + 4, xy_py(c->ref_y, geo) - 4, 10, "start", 0,
		         "reference");
	}
	for (int k = 0; k < c->n_series; k++) {
		const char *col = PALETTE[k % N_PALETTE];

		fprintf(s.f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
		        col);
		for (int i = 0; i < c->n_points[k]; i++)
			fprintf(s.f, "%.2f,%.2f ", xy_px(c->x[k][i], geo), xy_py(c->y[k][i], geo));
		fputs("\"/>\n", s.f);
		for (int i = 0; i < c->n_points[k]; i++)
			fprintf(s.f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"%s\"/>\n",
			        xy_px(c->x[k][i], geo), xy_py(c->y[k][i], geo), col);
	}
	legend(&s, M_LEFT + plot_w + 16, c->n_series, c->series_names);
	return svg_close(&s);
}
