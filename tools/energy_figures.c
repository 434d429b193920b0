// SPDX-License-Identifier: MIT
/* energy_figures -- see energy_figures.h. */
#include "tools/energy_figures.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "tools/svg.h"

#define MAX_REPORTS 8

static const char *const LEVELS[] = {"E_DRAM", "E_cache", "E_reg", "E_MAC"};

int energy_fig_layers(const char *path, const char *title, const char *subtitle,
                      const struct mime_energy_net *net, const struct mime_energy_report *rep,
                      const char *const *labels, const char *const *names, int n)
{
	const char *groups[MIME_MAX_LAYERS];
	double *v;
	int r;

	if (n < 1 || n > MAX_REPORTS)
		return -EINVAL;
	v = calloc((size_t)net->n_layers * n * 4, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (int l = 0; l < net->n_layers; l++) {
		groups[l] = net->layers[l].name;
		for (int b = 0; b < n; b++)
			for (int k = 0; k < 4; k++)
				v[(l * n + b) * 4 + k] = rep[b].layer[l].e[k] / 1e6;
	}
	r = svg_bar_chart(path, &(struct svg_bar_chart){
					.title = title,
					.subtitle = subtitle,
					.y_label = "energy (10^6 x E_MAC)",
					.n_groups = net->n_layers,
					.n_bars = n,
					.n_stacks = 4,
					.group_names = groups,
					.bar_names = names,
					.bar_labels = labels,
					.stack_names = LEVELS,
					.v = v,
				});
	free(v);
	return r;
}

int energy_fig_throughput(const char *path, const char *title, const char *subtitle,
                          const struct mime_energy_net *net, const struct mime_energy_report *rep,
                          const char *const *names, int n)
{
	const char *groups[MIME_MAX_LAYERS];
	double v[MIME_MAX_LAYERS * MAX_REPORTS];

	if (n < 1 || n > MAX_REPORTS)
		return -EINVAL;
	for (int l = 0; l < net->n_layers; l++) {
		groups[l] = net->layers[l].name;
		for (int b = 0; b < n; b++)
			v[l * n + b] = rep[0].layer[l].cycles / rep[b].layer[l].cycles;
	}
	return svg_bar_chart(path, &(struct svg_bar_chart){
					   .title = title,
					   .subtitle = subtitle,
					   .y_label = "throughput relative to the first bar",
					   .n_groups = net->n_layers,
					   .n_bars = n,
					   .n_stacks = 1,
					   .group_names = groups,
					   .bar_names = names,
					   .v = v,
					   .ref = 1,
				   });
}

int energy_fig_storage(const char *path, const char *subtitle, const struct mime_energy_hw *hw,
                       const struct mime_energy_net *net, long head_params, int max_children)
{
	static const char *const series[] = {"conventional", "MIME"};
	double x[64], y[2 * 64];
	char title[128];
	int n = max_children + 1;

	if (max_children < 1 || n > 64)
		return -EINVAL;
	for (int i = 0; i < n; i++) {
		struct mime_energy_storage st;

		mime_energy_storage(hw, net, i, head_params, &st);
		x[i] = i;
		y[i] = st.conventional_bytes / 1048576.0;
		y[n + i] = st.mime_bytes / 1048576.0;
	}
	snprintf(title, sizeof(title),
	         "DRAM storage: parent + n child tasks (n = %d: conventional / MIME = %.2fx)",
	         n > 3 ? 3 : n - 1, y[n > 3 ? 3 : n - 1] / y[n + (n > 3 ? 3 : n - 1)]);
	return svg_line_chart(path, &(struct svg_line_chart){
					    .title = title,
					    .subtitle = subtitle,
					    .x_label = "child tasks n",
					    .y_label = "off-chip storage (MiB)",
					    .n_points = n,
					    .n_series = 2,
					    .x = x,
					    .y = y,
					    .series_names = series,
				    });
}
