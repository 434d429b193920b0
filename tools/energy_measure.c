// SPDX-License-Identifier: MIT
/* energy_measure -- see energy_measure.h. */
#include "tools/energy_measure.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/bundle.h"
#include "lib/engine.h"
#include "lib/idx.h"
#include "lib/image.h"
#include "lib/model.h"

#define CHUNK 32 /* samples per forward */

/* A view of tensor name holding exactly n_floats F32 values, or NULL. */
static const float *f32_tensor(const struct mime_bundle *b, const char *name, size_t n_floats)
{
	struct mime_tensor_view v;

	if (mime_bundle_tensor(b, name, &v) < 0 || v.dtype != MIME_DTYPE_F32 ||
	    v.n_bytes != n_floats * sizeof(float))
		return NULL;
	return v.data;
}

/* The one-task model of task tp's conventional baseline: every conv/fc layer's weights
 * from conventional/<task>/ when all are there (returns "conventional"), else the parent's;
 * ReLU in every masked layer either way. */
static const char *baseline_model(const struct mime_bundle *b, const struct mime_model *m,
                                  const struct mime_task_params *tp, struct mime_model *ret_m,
                                  struct mime_task_params *ret_tp)
{
	struct mime_shape shapes[MIME_MAX_LAYERS];
	struct mime_model bm = *m;
	char name[MIME_NAME_MAX * 2 + 32];
	int all = mime_graph_check(&m->graph, shapes, NULL) == 0;

	*ret_tp = *tp;
	mime_task_relu(ret_tp);
	for (int i = 0; all && i < m->graph.n_layers; i++) {
		const struct mime_layer_spec *l = &m->graph.layers[i];
		long nw;

		if (l->kind != MIME_LAYER_CONV && l->kind != MIME_LAYER_FC)
			continue;
		nw = mime_graph_layer_params(l, i ? &shapes[i - 1] : &m->graph.input) - l->out;
		snprintf(name, sizeof(name), "conventional/%s/%s.weight", tp->name, l->name);
		bm.weight[i] = f32_tensor(b, name, (size_t)nw);
		snprintf(name, sizeof(name), "conventional/%s/%s.bias", tp->name, l->name);
		bm.bias[i] = f32_tensor(b, name, (size_t)l->out);
		all = bm.weight[i] && bm.bias[i];
	}
	if (!all)
		bm = *m;
	bm.tasks = ret_tp;
	bm.n_tasks = 1;
	*ret_m = bm;
	return all ? "conventional" : "parent+relu";
}

/* Runs n images of idx through engine e as task `task` and writes their sparsity rows. */
static int measure_run(struct mime_engine *e, int task, const struct mime_idx *idx,
                       const struct mime_input_spec *spec, int n, const struct mime_energy_net *net,
                       struct mime_energy_sparsity *rows, float *in, float *pix,
                       struct mime_errinfo *ei)
{
	const long isz = (long)spec->channels * spec->height * spec->width;
	const long psz = (long)idx->dims[1] * idx->dims[2];
	struct mime_image img = {.width = (int)idx->dims[2],
	                         .height = (int)idx->dims[1],
	                         .channels = 1,
	                         .pixels = pix};
	float in_sp[CHUNK];
	int tasks[CHUNK];
	int r;

	for (int i0 = 0; i0 < n; i0 += CHUNK) {
		const int bn = n - i0 < CHUNK ? n - i0 : CHUNK;
		struct mime_engine_result res;

		for (int j = 0; j < bn; j++) {
			const uint8_t *src = idx->data + (long)(i0 + j) * psz;
			long zeros = 0;

			for (long p = 0; p < psz; p++)
				pix[p] = (float)src[p] / 255.0f;
			r = mime_image_preprocess(&img, spec, in + j * isz, ei);
			if (r < 0)
				return r;
			for (long p = 0; p < isz; p++)
				zeros += in[j * isz + p] == 0.0f;
			in_sp[j] = (float)zeros / (float)isz;
			tasks[j] = task;
		}
		r = mime_engine_forward(e, bn, in, tasks, &res);
		if (r < 0)
			return mime_errinfo_set(ei, r, "inference: %s", mime_strerror(r));
		for (int j = 0; j < bn; j++) {
			struct mime_energy_sparsity *row = rows + (long)(i0 + j) * net->n_layers;
			float prev = in_sp[j];

			for (int l = 0; l < net->n_layers; l++) {
				float out = 0;

				for (int k = 0; k < res.n_masked; k++)
					if (res.masked_layer[k] == net->layers[l].graph_index)
						out = (float)res.zeros[j * res.n_masked + k] /
						      (float)res.neurons[k];
				row[l] = (struct mime_energy_sparsity){.in = prev, .out = out};
				prev = out;
			}
		}
	}
	return 0;
}

static int engine_run(const struct mime_model *m, int task, const struct mime_idx *idx,
                      const struct mime_input_spec *spec, int n, const struct mime_energy_net *net,
                      struct mime_energy_sparsity *rows, float *in, float *pix,
                      struct mime_errinfo *ei)
{
	const struct mime_engine_config cfg = {.max_batch = CHUNK, .n_threads = 1};
	struct mime_engine *e = NULL;
	int r;

	r = mime_engine_create(m, &cfg, &e, ei);
	if (r < 0)
		return r;
	r = measure_run(e, task, idx, spec, n, net, rows, in, pix, ei);
	mime_engine_destroy(e);
	return r;
}

int energy_measure(const char *bundle_path, const char *const *task, int n_tasks,
                   const char *const *images, int n_images, int limit,
                   struct energy_measurement *ret, struct mime_errinfo *ei)
{
	struct energy_measurement em = {0};
	struct mime_idx idx[ENERGY_MEASURE_MAX_TASKS] = {0};
	int ti[ENERGY_MEASURE_MAX_TASKS];
	enum mime_energy_thr thr = MIME_ENERGY_THR_NEURON;
	const struct mime_manifest *man;
	struct mime_bundle *b = NULL;
	struct mime_model m = {0};
	float *in = NULL, *pix = NULL;
	size_t rows;
	long isz = 0, psz = 0;
	int r;

	if (n_tasks < 1 || n_tasks > ENERGY_MEASURE_MAX_TASKS)
		return mime_errinfo_set(ei, MIME_EINVAL, "1 to %d tasks, not %d",
		                        ENERGY_MEASURE_MAX_TASKS, n_tasks);
	if (n_images != 1 && n_images != n_tasks)
		return mime_errinfo_set(ei, MIME_EINVAL,
		                        "%d image files for %d tasks: give one, or one per task",
		                        n_images, n_tasks);
	if (limit < 1 || limit > MIME_ENERGY_MAX_BATCH)
		return mime_errinfo_set(ei, MIME_EINVAL, "limit %d outside 1..%d", limit,
		                        MIME_ENERGY_MAX_BATCH);
	r = mime_bundle_open(bundle_path, &b, ei);
	if (r < 0)
		return r;
	man = mime_bundle_manifest(b);
	for (int t = 0; t < n_tasks; t++) {
		ti[t] = mime_manifest_task(man, task[t]);
		if (ti[t] < 0) {
			r = mime_errinfo_set(ei, MIME_ENOTASK, "%s: no task '%s'", bundle_path,
			                     task[t]);
			goto out;
		}
		snprintf(em.task[t], sizeof(em.task[t]), "%s", task[t]);
		if (thr == MIME_ENERGY_THR_NEURON &&
		    man->tasks[ti[t]].thresholds == MIME_THR_CHANNEL)
			thr = MIME_ENERGY_THR_CHANNEL;
	}
	r = mime_energy_net_init(&em.net, &man->graph, thr, ei);
	if (r < 0)
		goto out;
	for (int i = 0; i < n_images; i++) {
		r = mime_idx_read(images[i], &idx[i], ei);
		if (r < 0)
			goto out;
		if (idx[i].ndim != 3 || idx[i].dims[0] < (uint32_t)limit) {
			r = mime_errinfo_set(ei, MIME_EDATA,
			                     "%s: expected [n >= %d, rows, cols] images", images[i],
			                     limit);
			goto out;
		}
		if ((long)idx[i].dims[1] * idx[i].dims[2] > psz)
			psz = (long)idx[i].dims[1] * idx[i].dims[2];
	}
	r = mime_model_from_bundle(b, MIME_MODEL_HALF_VIEWS, &m, ei);
	if (r < 0)
		goto out;
	isz = (long)man->graph.input.c * man->graph.input.h * man->graph.input.w;
	rows = (size_t)n_tasks * limit * em.net.n_layers;
	in = malloc(sizeof(float) * isz * CHUNK);
	pix = malloc(sizeof(float) * psz);
	em.mime = calloc(rows, sizeof(*em.mime));
	em.base = calloc(rows, sizeof(*em.base));
	if (!in || !pix || !em.mime || !em.base) {
		r = -ENOMEM;
		goto out;
	}
	em.n_tasks = n_tasks;
	em.n_samples = limit;
	for (int t = 0; t < n_tasks; t++) {
		const struct mime_idx *x = &idx[n_images == 1 ? 0 : t];
		const struct mime_input_spec *spec = &man->tasks[ti[t]].input;
		struct mime_task_params btp;
		struct mime_model bm;

		r = engine_run(&m, ti[t], x, spec, limit, &em.net,
		               (struct mime_energy_sparsity *)energy_measurement_row(&em, 0, t, 0),
		               in, pix, ei);
		if (r < 0)
			goto out;
		em.baseline[t] = baseline_model(b, &m, &m.tasks[ti[t]], &bm, &btp);
		r = engine_run(&bm, 0, x, spec, limit, &em.net,
		               (struct mime_energy_sparsity *)energy_measurement_row(&em, 1, t, 0),
		               in, pix, ei);
		if (r < 0)
			goto out;
	}
	*ret = em;
	em.mime = em.base = NULL;
out:
	energy_measurement_fini(&em);
	free(in);
	free(pix);
	for (int i = 0; i < n_images; i++)
		mime_idx_free(&idx[i]);
	mime_model_fini(&m);
	mime_bundle_close(b);
	return r;
}

void energy_measurement_fini(struct energy_measurement *m)
{
	free(m->mime);
	free(m->base);
	m->mime = m->base = NULL;
}
