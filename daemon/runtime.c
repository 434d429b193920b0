// SPDX-License-Identifier: MIT
/* runtime -- a bundle made ready to serve: its model views, one engine (and one input
 * buffer) per worker, the enabled tasks and the energy model's view of its graph. Everything
 * is allocated here, at load; serving a request allocates nothing in the engine path.
 * Ownership: see struct mimed_runtime in mimed.h; freed when its last reference goes.
 * Threads: loaded in any thread (a reload runs in the thread pool), then owned by the loop
 * thread, which numbers it (gen) and frees it; worker i uses engines[i] and inputs[i]. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "daemon/mimed.h"

static void runtime_free(struct mimed_runtime *rt)
{
	if (!rt)
		return;
	for (int i = 0; rt->engines && i < rt->n_workers; i++)
		mime_engine_destroy(rt->engines[i]);
	for (int i = 0; rt->inputs && i < rt->n_workers; i++)
		free(rt->inputs[i]);
	free(rt->engines);
	free(rt->inputs);
	if (rt->model_ready)
		mime_model_fini(&rt->model);
	mime_bundle_close(rt->bundle);
	free(rt->bundle_path);
	free(rt);
}

void mimed_runtime_unref(struct mimed_runtime *rt)
{
	if (rt && --rt->refs == 0)
		runtime_free(rt);
}

bool mimed_runtime_stale(const struct mimed_runtime *rt, const char *path, int max_batch,
                         int threads)
{
	struct stat st;

	if (strcmp(rt->bundle_path, path) != 0 || rt->max_batch != max_batch ||
	    rt->threads != threads)
		return true;
	if (stat(path, &st) < 0)
		return true; /* the load will say why */
	return st.st_dev != rt->dev || st.st_ino != rt->ino || st.st_size != rt->size ||
	       st.st_mtim.tv_sec != rt->mtime.tv_sec || st.st_mtim.tv_nsec != rt->mtime.tv_nsec;
}

int mimed_runtime_load(const struct mimed_config *cfg, const char *path, int n_workers,
                       struct mimed_runtime **ret_rt, struct mime_errinfo *ei)
{
	struct mime_engine_config ecfg = {.max_batch = cfg->max_batch, .n_threads = cfg->threads};
	enum mime_energy_thr thr = MIME_ENERGY_THR_NEURON;
	struct mimed_runtime *rt;
	struct stat st;
	int r;

	if (stat(path, &st) < 0)
		return mime_errinfo_set(ei, -errno, "%s", strerror(errno));
	rt = calloc(1, sizeof(*rt));
	if (!rt)
		return -ENOMEM;
	rt->refs = 1;
	rt->dev = st.st_dev;
	rt->ino = st.st_ino;
	rt->size = st.st_size;
	rt->mtime = st.st_mtim;
	rt->max_batch = cfg->max_batch;
	rt->threads = cfg->threads;
	rt->n_workers = n_workers;
	rt->bundle_path = strdup(path);
	if (!rt->bundle_path) {
		r = -ENOMEM;
		goto fail;
	}
	r = mime_bundle_open(path, &rt->bundle, ei);
	if (r < 0)
		goto fail;
	rt->manifest = mime_bundle_manifest(rt->bundle);
	r = mime_model_from_bundle(rt->bundle, &rt->model, ei);
	if (r < 0)
		goto fail;
	rt->model_ready = true;
	if (rt->manifest->n_tasks < 1 || rt->manifest->n_tasks > MIME_MAX_TASKS) {
		r = mime_errinfo_set(ei, MIME_EFORMAT, "bundle '%s' has %d tasks", path,
		                     rt->manifest->n_tasks);
		goto fail;
	}
	for (int i = 0; i < rt->manifest->n_tasks; i++)
		rt->enabled[i] = cfg->n_tasks == 0;
	for (int i = 0; i < cfg->n_tasks; i++) {
		int t = mime_manifest_task(rt->manifest, cfg->tasks[i]);

		if (t < 0) {
			r = mime_errinfo_set(ei, MIME_ENOTASK,
			                     "task '%s' (config 'tasks') is not in '%s'",
			                     cfg->tasks[i], path);
			goto fail;
		}
		rt->enabled[t] = true;
	}
	rt->input_floats = mime_shape_size(&rt->manifest->graph.input);
	rt->engines = calloc((size_t)rt->n_workers, sizeof(*rt->engines));
	rt->inputs = calloc((size_t)rt->n_workers, sizeof(*rt->inputs));
	if (!rt->engines || !rt->inputs) {
		r = -ENOMEM;
		goto fail;
	}
	for (int i = 0; i < rt->n_workers; i++) {
		r = mime_engine_create(&rt->model, &ecfg, &rt->engines[i], ei);
		if (r < 0)
			goto fail;
		rt->inputs[i] =
			malloc((size_t)cfg->max_batch * (size_t)rt->input_floats * sizeof(float));
		if (!rt->inputs[i]) {
			r = -ENOMEM;
			goto fail;
		}
	}
	for (int i = 0; i < rt->manifest->n_tasks; i++)
		if (rt->manifest->tasks[i].thresholds == MIME_THR_CHANNEL)
			thr = MIME_ENERGY_THR_CHANNEL;
	mime_energy_hw_default(&rt->energy_hw);
	rt->have_energy =
		mime_energy_net_init(&rt->energy_net, &rt->manifest->graph, thr, NULL) == 0;

	*ret_rt = rt;
	return 0;

fail:
	runtime_free(rt);
	return r;
}
