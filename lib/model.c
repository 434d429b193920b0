// SPDX-License-Identifier: MIT
/* model -- see model.h. The bundle has already checked every tensor the manifest implies
 * (names, dtypes, shapes), so a missing one here is a bug in the bundle reader. */
#include "lib/model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static const float *tensor_f32(const struct mime_bundle *b, const char *name, int *r,
                               struct mime_errinfo *ei)
{
	struct mime_tensor_view v;

	if (*r < 0)
		return NULL;
	if (mime_bundle_tensor(b, name, &v) < 0 || v.dtype != MIME_DTYPE_F32) {
		*r = mime_errinfo_set(ei, MIME_EFORMAT, "bundle: tensor '%s' missing", name);
		return NULL;
	}
	return v.data;
}

int mime_model_from_bundle(const struct mime_bundle *b, struct mime_model *ret_model,
                           struct mime_errinfo *ei)
{
	const struct mime_manifest *mf = mime_bundle_manifest(b);
	struct mime_model m = {.graph = mf->graph, .n_tasks = mf->n_tasks};
	char name[3 * MIME_NAME_MAX];
	int r = 0;

	m.tasks = calloc((size_t)mf->n_tasks, sizeof(*m.tasks));
	if (!m.tasks)
		return -ENOMEM;
	for (int i = 0; i < m.graph.n_layers; i++) {
		const struct mime_layer_spec *l = &m.graph.layers[i];

		if (l->kind != MIME_LAYER_CONV && l->kind != MIME_LAYER_FC)
			continue;
		snprintf(name, sizeof(name), "parent/%s.weight", l->name);
		m.weight[i] = tensor_f32(b, name, &r, ei);
		snprintf(name, sizeof(name), "parent/%s.bias", l->name);
		m.bias[i] = tensor_f32(b, name, &r, ei);
	}
	for (int t = 0; t < mf->n_tasks; t++) {
		const struct mime_task_spec *ts = &mf->tasks[t];
		struct mime_task_params *tp = &m.tasks[t];

		tp->name = ts->name;
		tp->n_classes = ts->n_classes;
		tp->granularity = ts->thresholds;
		snprintf(name, sizeof(name), "task/%s/head.weight", ts->name);
		tp->head_w = tensor_f32(b, name, &r, ei);
		snprintf(name, sizeof(name), "task/%s/head.bias", ts->name);
		tp->head_b = tensor_f32(b, name, &r, ei);
		if (ts->thresholds == MIME_THR_NONE)
			continue;
		for (int i = 0; i < m.graph.n_layers; i++) {
			if (!mime_graph_layer_masked(&m.graph, i))
				continue;
			snprintf(name, sizeof(name), "task/%s/%s.threshold", ts->name,
			         m.graph.layers[i].name);
			tp->thresholds[i] = tensor_f32(b, name, &r, ei);
		}
	}
	if (r < 0) {
		free(m.tasks);
		return r;
	}
	*ret_model = m;
	return 0;
}

void mime_model_fini(struct mime_model *m)
{
	if (!m)
		return;
	free(m->tasks);
	m->tasks = NULL;
	m->n_tasks = 0;
}
