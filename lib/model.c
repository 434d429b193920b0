// SPDX-License-Identifier: MIT
/* model -- see model.h. The bundle has already checked every tensor the manifest implies
 * (names, dtypes, shapes), so a missing one here is a bug in the bundle reader. */
#include "lib/model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The floats of tensor name (F32, or a task's F16 tensor decoded by the bundle). */
static const float *tensor_f32(const struct mime_bundle *b, const char *name, int *r,
                               struct mime_errinfo *ei)
{
	const float *f = NULL;
	int rr;

	if (*r < 0)
		return NULL;
	rr = mime_bundle_tensor_f32(b, name, &f);
	if (rr < 0) {
		*r = rr == -ENOMEM ? -ENOMEM
		                   : mime_errinfo_set(ei, MIME_EFORMAT,
		                                      "bundle: tensor '%s' missing", name);
		return NULL;
	}
	return f;
}

/* A task's tensor: *ret_half its halves in place when it is F16 and flags asks for views,
 * else *ret_f32 its floats (decoded by the bundle when F16). */
static void task_tensor(const struct mime_bundle *b, const char *name, unsigned flags,
                        const float **ret_f32, const uint16_t **ret_half, int *r,
                        struct mime_errinfo *ei)
{
	struct mime_tensor_view v;

	if (*r < 0)
		return;
	/* (halves at an odd offset, which other writers may produce, are decoded instead: the
	 * engine reads them as uint16_t) */
	if ((flags & MIME_MODEL_HALF_VIEWS) && mime_bundle_tensor(b, name, &v) == 0 &&
	    v.dtype == MIME_DTYPE_F16 && (uintptr_t)v.data % sizeof(uint16_t) == 0) {
		*ret_f32 = NULL;
		*ret_half = v.data;
		return;
	}
	*ret_f32 = tensor_f32(b, name, r, ei);
	*ret_half = NULL;
}

/* Head and thresholds of task ts, from "task/<task>/<sub>..." (sub = "" or "phase<p>/"). */
static void task_views(const struct mime_bundle *b, const struct mime_task_spec *ts,
                       const char *sub, unsigned flags, struct mime_task_params *tp, int *r,
                       struct mime_errinfo *ei)
{
	const struct mime_graph *g = &mime_bundle_manifest(b)->graph;
	char name[3 * MIME_NAME_MAX];

	memset(tp, 0, sizeof(*tp));
	tp->name = ts->name;
	tp->n_classes = ts->n_classes;
	tp->granularity = ts->thresholds;
	snprintf(name, sizeof(name), "task/%s/%shead.weight", ts->name, sub);
	task_tensor(b, name, flags, &tp->head_w, &tp->head_w_half, r, ei);
	snprintf(name, sizeof(name), "task/%s/%shead.bias", ts->name, sub);
	task_tensor(b, name, flags, &tp->head_b, &tp->head_b_half, r, ei);
	if (ts->thresholds == MIME_THR_NONE)
		return;
	for (int i = 0; i < g->n_layers; i++) {
		if (!mime_graph_layer_masked(g, i))
			continue;
		snprintf(name, sizeof(name), "task/%s/%s%s.threshold", ts->name, sub,
		         g->layers[i].name);
		task_tensor(b, name, flags, &tp->thresholds[i], &tp->thresholds_half[i], r, ei);
	}
}

int mime_model_from_bundle(const struct mime_bundle *b, unsigned flags,
                           struct mime_model *ret_model, struct mime_errinfo *ei)
{
	const struct mime_manifest *mf = mime_bundle_manifest(b);
	struct mime_model m = {.graph = mf->graph,
	                       .n_tasks = mf->n_tasks,
	                       .weights_file_backed = mime_bundle_is_mapped(b)};
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
	for (int t = 0; t < mf->n_tasks; t++)
		task_views(b, &mf->tasks[t], "", flags, &m.tasks[t], &r, ei);
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

int mime_model_phase(const struct mime_bundle *b, int p, unsigned flags,
                     struct mime_phase *ret_phase, uint8_t **ret_keep_storage,
                     struct mime_task_params *ret_tasks, struct mime_errinfo *ei)
{
	const struct mime_manifest *mf = mime_bundle_manifest(b);
	const struct mime_graph *g = &mf->graph;
	const struct mime_phase_spec *ps;
	struct mime_shape in[MIME_MAX_LAYERS], out[MIME_MAX_LAYERS];
	struct mime_phase ph = {0};
	size_t n_groups[MIME_MAX_LAYERS] = {0}, total = 0, at = 0;
	char name[3 * MIME_NAME_MAX], sub[32];
	struct mime_task_params *tasks;
	uint8_t *keep = NULL;
	int whole = 1, r = 0;

	if (p < 0 || p > mf->n_phases)
		return mime_errinfo_set(ei, MIME_EINVAL, "phase %d: the bundle has phases 1..%d", p,
		                        mf->n_phases);
	/* Built aside: the caller's array may be the one an engine is using now. */
	tasks = calloc(mf->n_tasks ? (size_t)mf->n_tasks : 1, sizeof(*tasks));
	if (!tasks)
		return -ENOMEM;
	if (p == 0) {
		for (int t = 0; t < mf->n_tasks; t++)
			task_views(b, &mf->tasks[t], "", flags, &tasks[t], &r, ei);
		goto out_tasks;
	}
	ps = &mf->phases[p - 1];
	r = mime_phase_shapes(g, ps->k_active, in, out);
	if (r < 0) {
		mime_errinfo_set(ei, r, "phase %d: kernels out of range", p);
		goto out_tasks;
	}
	ph.wuv = ps->wuv;
	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];

		ph.layer[i].k_active = ps->k_active[i];
		if ((l->kind == MIME_LAYER_CONV || l->kind == MIME_LAYER_FC) &&
		    ps->k_active[i] != l->out)
			whole = 0;
		if (!ps->fine[i])
			continue;
		whole = 0;
		n_groups[i] =
			mime_phase_mask_groups(out[i].c, in[i].c * l->kernel * l->kernel, ps->wuv);
		if (n_groups[i] > SIZE_MAX - total) {
			r = -ENOMEM;
			goto out_tasks;
		}
		total += n_groups[i];
	}

	/* Tasks first: a phase a task cannot run in is refused before anything is decoded. */
	snprintf(sub, sizeof(sub), "phase%d/", p);
	for (int t = 0; t < mf->n_tasks; t++) {
		const struct mime_task_spec *ts = &mf->tasks[t];

		snprintf(name, sizeof(name), "task/%s/%shead.weight", ts->name, sub);
		if (mime_bundle_has_tensor(b, name)) {
			task_views(b, ts, sub, flags, &tasks[t], &r, ei);
		} else if (whole) {
			task_views(b, ts, "", flags, &tasks[t], &r, ei);
		} else {
			r = mime_errinfo_set(ei, MIME_EFORMAT,
			                     "phase %d ('%s'): task '%s' has no head or thresholds "
			                     "for it ('%s' missing); train them for this phase",
			                     p, ps->name, ts->name, name);
		}
		if (r < 0)
			goto out_tasks;
	}

	if (total) {
		keep = malloc(total);
		if (!keep) {
			r = -ENOMEM;
			goto out_tasks;
		}
	}
	for (int i = 0; i < g->n_layers; i++) {
		struct mime_tensor_view v;

		if (!ps->fine[i])
			continue;
		snprintf(name, sizeof(name), "phase/%d/%s.mask", p, g->layers[i].name);
		r = mime_bundle_tensor(b, name, &v);
		if (r == 0)
			r = mime_phase_mask_decode(v.dtype, v.data,
			                           v.ndim == 1 ? (size_t)v.shape[0] : 0,
			                           n_groups[i], keep + at, ei);
		else
			r = mime_errinfo_set(ei, MIME_EFORMAT, "bundle: tensor '%s' missing", name);
		if (r < 0) {
			free(keep);
			goto out_tasks;
		}
		ph.layer[i].keep = keep + at;
		at += n_groups[i];
	}
out_tasks:
	if (r == 0) {
		if (mf->n_tasks)
			memcpy(ret_tasks, tasks, sizeof(*tasks) * (size_t)mf->n_tasks);
		*ret_phase = ph;
		*ret_keep_storage = keep;
	}
	free(tasks);
	return r;
}
