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
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/mimed.h"

static void runtime_free(struct mimed_runtime *rt)
{
	if (!rt)
		return;
	for (int i = 0; rt->engines && i < rt->n_workers * rt->n_models; i++)
		mime_engine_destroy(rt->engines[i]);
	free(rt->conv_models);
	free(rt->conv_tasks);
	for (int i = 0; rt->inputs && i < rt->n_workers; i++)
		free(rt->inputs[i]);
	free(rt->engines);
	free(rt->inputs);
	for (int i = 0; rt->phase_keep && i < rt->n_phases; i++)
		free(rt->phase_keep[i]);
	free(rt->phase_keep);
	free(rt->phases);
	free(rt->phase_tasks);
	free(rt->phase_memory_bytes);
	free(rt->phase_memory_measured);
	free(rt->phase_mapped_bytes);
	free(rt->engine_phase);
	free(rt->energy_nets);
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

bool mimed_runtime_stale(const struct mimed_runtime *rt, const char *path,
                         const struct mimed_config *cfg)
{
	struct stat st;

	if (strcmp(rt->bundle_path, path) != 0 || rt->max_batch != cfg->max_batch ||
	    rt->threads != mimed_config_engine_threads(cfg, rt->n_workers,
	                                               sysconf(_SC_NPROCESSORS_ONLN)) ||
	    rt->mode != cfg->mode)
		return true;
	/* Conventional mode builds engines for the enabled tasks only: enabling another
	 * needs a new runtime. An unknown name does too; the load will say why. */
	for (int t = 0; rt->mode == MIMED_MODE_CONVENTIONAL && t < rt->manifest->n_tasks; t++)
		if (cfg->n_tasks == 0 && !rt->engines[t])
			return true;
	for (int i = 0; rt->mode == MIMED_MODE_CONVENTIONAL && i < cfg->n_tasks; i++) {
		int t = mime_manifest_task(rt->manifest, cfg->tasks[i]);

		if (t < 0 || !rt->engines[t])
			return true;
	}
	if (stat(path, &st) < 0)
		return true; /* the load will say why */
	return st.st_dev != rt->dev || st.st_ino != rt->ino || st.st_size != rt->size ||
	       st.st_mtim.tv_sec != rt->mtime.tv_sec || st.st_mtim.tv_nsec != rt->mtime.tv_nsec;
}

struct mime_engine *mimed_runtime_engine(const struct mimed_runtime *rt, int w, int task,
                                         int *ret_engine_task)
{
	if (rt->mode == MIMED_MODE_CONVENTIONAL) {
		*ret_engine_task = 0;
		return rt->engines[w * rt->n_models + task];
	}
	*ret_engine_task = task;
	return rt->engines[w];
}

uint64_t mimed_runtime_key(const struct mimed_runtime *rt, int task, int phase)
{
	return (rt->gen * (MIMED_MAX_PHASES + 1) + (uint64_t)phase) * MIME_MAX_TASKS +
	       (rt->mode == MIMED_MODE_CONVENTIONAL ? (uint64_t)task : 0);
}

/* A borrowed F32 tensor of exactly n floats, or NULL. */
static const float *tensor_n(const struct mime_bundle *b, const char *name, size_t n)
{
	struct mime_tensor_view v;

	if (mime_bundle_tensor(b, name, &v) < 0 || v.dtype != MIME_DTYPE_F32 ||
	    v.n_bytes != n * sizeof(float))
		return NULL;
	return v.data;
}

/* The conventional baseline of task t: the parent's graph on the task's own fine-tuned
 * weights (conventional/<task>/<layer>.weight|bias) and head (conventional/<task>/head.*),
 * with ReLU; a single-task model. */
static int conv_model(struct mimed_runtime *rt, int t, struct mime_errinfo *ei)
{
	struct mime_model *m = &rt->conv_models[t];
	struct mime_task_params *tp = &rt->conv_tasks[t];
	const struct mime_graph *g = &rt->model.graph;
	struct mime_shape shapes[MIME_MAX_LAYERS];
	char name[2 * MIME_NAME_MAX + 32];
	const float *hw;
	size_t feat;
	int r;

	r = mime_graph_check(g, shapes, ei);
	if (r < 0)
		return r;
	feat = (size_t)mime_shape_size(&shapes[g->n_layers - 1]);
	*m = rt->model;
	*tp = rt->model.tasks[t];
	mime_task_relu(tp);
	snprintf(name, sizeof(name), "conventional/%s/head.weight", tp->name);
	hw = tensor_n(rt->bundle, name, (size_t)tp->n_classes * feat);
	snprintf(name, sizeof(name), "conventional/%s/head.bias", tp->name);
	mime_task_set_head(tp, hw, tensor_n(rt->bundle, name, (size_t)tp->n_classes));
	if (!tp->head_w || !tp->head_b)
		return mime_errinfo_set(
			ei, MIME_EFORMAT,
			"mode conventional: no F32 conventional/%s/head.weight|bias "
			"of the right size (make them with mime-train finetune)",
			tp->name);
	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];
		long nw;

		if (l->kind != MIME_LAYER_CONV && l->kind != MIME_LAYER_FC)
			continue;
		nw = mime_graph_layer_params(l, i ? &shapes[i - 1] : &g->input) - l->out;
		snprintf(name, sizeof(name), "conventional/%s/%s.weight", tp->name, l->name);
		m->weight[i] = tensor_n(rt->bundle, name, (size_t)nw);
		snprintf(name, sizeof(name), "conventional/%s/%s.bias", tp->name, l->name);
		m->bias[i] = tensor_n(rt->bundle, name, (size_t)l->out);
		if (!m->weight[i] || !m->bias[i])
			return mime_errinfo_set(
				ei, MIME_EFORMAT,
				"mode conventional: no F32 conventional/%s/%s.weight|bias "
				"of the right size (make them with mime-train finetune)",
				tp->name, l->name);
	}
	m->tasks = tp;
	m->n_tasks = 1;
	return 0;
}

/* The phases clients see (see struct mimed_runtime). With phases: each one's struct
 * mime_phase and task parameters from mime_model_phase(), entered once on worker 0's engine
 * to check it can be and to measure its plan bytes; that engine stays in the last phase,
 * trimmed of what the other phases left (mime_engine_trim).
 * Without: one phase, the parent, measured as it is. */
static int runtime_phases(struct mimed_runtime *rt, struct mime_errinfo *ei)
{
	int n_tasks = rt->model.n_tasks, r;

	rt->has_phases = rt->mode == MIMED_MODE_MIME && rt->manifest->n_phases > 0;
	rt->n_phases = rt->has_phases ? rt->manifest->n_phases : 1;
	if (rt->n_phases > MIMED_MAX_PHASES)
		return mime_errinfo_set(ei, MIME_EFORMAT, "bundle '%s' has %d phases (at most %d)",
		                        rt->bundle_path, rt->n_phases, MIMED_MAX_PHASES);
	rt->phase_memory_bytes = calloc((size_t)rt->n_phases, sizeof(*rt->phase_memory_bytes));
	rt->phase_memory_measured =
		calloc((size_t)rt->n_phases, sizeof(*rt->phase_memory_measured));
	rt->phase_mapped_bytes = calloc((size_t)rt->n_phases, sizeof(*rt->phase_mapped_bytes));
	rt->engine_phase = calloc((size_t)rt->n_workers, sizeof(*rt->engine_phase));
	if (!rt->phase_memory_bytes || !rt->phase_memory_measured || !rt->phase_mapped_bytes ||
	    !rt->engine_phase)
		return -ENOMEM;
	if (!rt->has_phases) {
		size_t bytes = 0;

		for (int i = 0; i < rt->n_models; i++)
			if (rt->engines[i])
				bytes += mime_engine_plan_bytes(rt->engines[i]);
		rt->phase_memory_bytes[0] = (int64_t)bytes;
		rt->phase_memory_measured[0] = true;
		for (int w = 0; w < rt->n_workers; w++)
			rt->engine_phase[w] = 1;
		return 0;
	}
	rt->parent_memory_bytes = (int64_t)mime_engine_plan_bytes(rt->engines[0]);
	rt->phases = calloc((size_t)rt->n_phases, sizeof(*rt->phases));
	rt->phase_keep = calloc((size_t)rt->n_phases, sizeof(*rt->phase_keep));
	rt->phase_tasks = calloc((size_t)rt->n_phases * (size_t)n_tasks, sizeof(*rt->phase_tasks));
	if (!rt->phases || !rt->phase_keep || !rt->phase_tasks)
		return -ENOMEM;
	for (int p = 1; p <= rt->n_phases; p++) {
		struct mime_task_params *tasks =
			&rt->phase_tasks[(size_t)(p - 1) * (size_t)n_tasks];
		int64_t manifest_bytes = rt->manifest->phases[p - 1].memory_bytes;

		r = mime_model_phase(rt->bundle, p, MIME_MODEL_HALF_VIEWS, &rt->phases[p - 1],
		                     &rt->phase_keep[p - 1], tasks, ei);
		if (r < 0)
			return r;
		r = mime_engine_set_phase(rt->engines[0], &rt->phases[p - 1], tasks, ei);
		if (r < 0)
			return r;
		/* what the phase holds by itself: not the fine masks' W^T or decoded task
		 * tensors that the phases entered before it left behind */
		mime_engine_trim(rt->engines[0]);
		rt->engine_phase[0] = p;
		rt->phase_memory_measured[p - 1] = manifest_bytes < 0;
		rt->phase_memory_bytes[p - 1] =
			manifest_bytes >= 0 ? manifest_bytes
					    : (int64_t)mime_engine_plan_bytes(rt->engines[0]);
	}
	/* The daemon starts in the top phase (the last one entered, trimmed of the others);
	 * other phases' fine W^T and decoded task tensors are built again when a switch needs
	 * them, and kept from then on for fast switches. */
	return 0;
}

/* Sorts and searches the pointers the serving path reads (drop_unread_pages). */
static int cmp_ptr(const void *a, const void *b)
{
	const uintptr_t x = (uintptr_t) * (const void *const *)a;
	const uintptr_t y = (uintptr_t) * (const void *const *)b;

	return x < y ? -1 : x > y;
}

static void keep_task(const void **keep, size_t *n, const struct mime_task_params *tp)
{
	/* F16 tensors (the half pointers) are read once, when an engine decodes them on a
	 * task's first forward in a phase: their pages may go. */
	if (tp->head_w)
		keep[(*n)++] = tp->head_w;
	if (tp->head_b)
		keep[(*n)++] = tp->head_b;
	for (int i = 0; i < MIME_MAX_LAYERS; i++)
		if (tp->thresholds[i])
			keep[(*n)++] = tp->thresholds[i];
}

/* The bundle's mapping [*ret_base, *ret_base + *ret_len), page aligned; false when the
 * bundle is not a file mapping. The tensors tile the data to the end of the file (checked
 * on open), so the mapping ends where the last tensor does. */
static bool bundle_mapping(const struct mime_bundle *b, uintptr_t *ret_base, size_t *ret_len)
{
	const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	const size_t n = mime_bundle_n_tensors(b), size = mime_bundle_size_bytes(b);
	uintptr_t end = 0;

	if (!mime_bundle_is_mapped(b))
		return false;
	for (size_t i = 0; i < n; i++) {
		struct mime_tensor_view v;

		mime_bundle_tensor_at(b, i, &v);
		if (v.n_bytes && (uintptr_t)v.data + v.n_bytes > end)
			end = (uintptr_t)v.data + v.n_bytes;
	}
	if (end < size || (end - size) % pg != 0)
		return false; /* not the mapping we think: leave it alone */
	*ret_base = end - size;
	*ret_len = (size + pg - 1) / pg * pg;
	return true;
}

/* After the load, the bundle mapping holds pages that serving never reads again: the header
 * (parsed into the manifest), the parent's conv weights around the pages the engines dropped
 * once packed, the masks (decoded), other phases' and disabled tasks' tensors, the other
 * mode's tensors, and whatever the kernel mapped around each page fault (fault-around maps
 * up to 16 cached neighbours). Drops every page that holds no byte of a tensor a forward
 * reads: biases, fc weights, conv weights unless packed, and the heads and thresholds of
 * the enabled tasks in `phase` (at load, the one the daemon starts in; conventional mode:
 * their heads).
 * Those keep their pages (dropping a bias's page would cost a fault that maps 64 KiB around
 * it); anything dropped that is needed after all (a later phase, a task enabled by a
 * reload) is read back from the file on first touch. Advice only: errors are ignored. */
void mimed_runtime_drop_pages(struct mimed_runtime *rt, int phase, bool every_task)
{
	const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	const struct mime_graph *g = &rt->model.graph;
	const size_t n_tensors = mime_bundle_n_tensors(rt->bundle);
	const int n_tasks = rt->manifest->n_tasks;
	size_t n_keep = 0, cap, len;
	uintptr_t base, at;
	const void **keep;
	bool packed = true;

	if (!bundle_mapping(rt->bundle, &base, &len))
		return;
	for (int i = 0; i < rt->n_workers * rt->n_models; i++) {
		enum mime_conv_impl conv;

		if (rt->engines[i]) {
			mime_engine_describe(rt->engines[i], &conv, NULL);
			packed = packed && conv == MIME_CONV_PACKED;
		}
	}
	/* Per model: a weight and a bias per layer; per task: a head (2) and thresholds. */
	cap = (size_t)rt->n_models * 2 * MIME_MAX_LAYERS + (size_t)n_tasks * (2 + MIME_MAX_LAYERS);
	keep = malloc(cap * sizeof(*keep));
	if (!keep)
		return;
	for (int k = 0; k < rt->n_models; k++) {
		const struct mime_model *m =
			rt->mode == MIMED_MODE_CONVENTIONAL ? &rt->conv_models[k] : &rt->model;

		if (rt->mode == MIMED_MODE_CONVENTIONAL && !rt->enabled[k])
			continue;
		for (int i = 0; i < g->n_layers; i++) {
			if (m->bias[i])
				keep[n_keep++] = m->bias[i];
			if (m->weight[i] && (g->layers[i].kind == MIME_LAYER_FC || !packed))
				keep[n_keep++] = m->weight[i];
		}
		if (rt->mode == MIMED_MODE_CONVENTIONAL)
			keep_task(keep, &n_keep, &rt->conv_tasks[k]);
	}
	for (int t = 0; rt->mode == MIMED_MODE_MIME && t < n_tasks; t++) {
		/* At load, the phase the daemon starts in, the top one: every worker's engine
		 * enters it before its first batch (engines other than worker 0's are still in
		 * phase 0, whose views a phased bundle stores separately and no batch reads). */
		int p = phase < 1 ? 1 : phase > rt->n_phases ? rt->n_phases : phase;
		size_t ti = (size_t)(p - 1) * (size_t)n_tasks + (size_t)t;

		if (every_task || rt->enabled[t])
			keep_task(keep, &n_keep,
			          rt->has_phases ? &rt->phase_tasks[ti] : &rt->model.tasks[t]);
	}
	qsort(keep, n_keep, sizeof(*keep), cmp_ptr);
	/* Reads one byte of every page of each kept tensor first: a page fault may map a
	 * whole large folio of the page cache (2 MiB seen here, whatever MADV_NOHUGEPAGE
	 * says), so the faults are taken now and the drop below unmaps what came with them.
	 * Then drops [at, start of each kept tensor) in whole pages, and the tail. */
	at = base;
	for (size_t i = 0; i <= n_tensors; i++) {
		struct mime_tensor_view v = {0};
		uintptr_t lo, hi;

		if (i < n_tensors) {
			mime_bundle_tensor_at(rt->bundle, i, &v);
			if (!v.n_bytes || !bsearch(&v.data, keep, n_keep, sizeof(*keep), cmp_ptr))
				continue;
			for (uintptr_t p = (uintptr_t)v.data; p < (uintptr_t)v.data + v.n_bytes;
			     p = (p / pg + 1) * pg)
				(void)*(const volatile char *)p;
		} else {
			v.data = (const void *)(base + len);
		}
		lo = (at + pg - 1) / pg * pg;
		hi = (uintptr_t)v.data / pg * pg;
		if (hi > lo)
			madvise((void *)lo, hi - lo, MADV_DONTNEED);
		at = (uintptr_t)v.data + v.n_bytes;
	}
	free(keep);
}

/* rt->phase_mapped_bytes: per phase, the pages of the bundle's mapping that hold the task
 * tensors its forwards read in place (F32 heads and thresholds of the enabled tasks; F16
 * ones are decoded into the engine's plan and their pages dropped), shared by all workers. */
static void phases_mapped_bytes(struct mimed_runtime *rt)
{
	const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	const size_t n_tensors = mime_bundle_n_tensors(rt->bundle);
	const int n_tasks = rt->manifest->n_tasks;
	const void *keep[MIME_MAX_TASKS * (2 + MIME_MAX_LAYERS)];
	uintptr_t base;
	size_t len;

	if (!rt->has_phases || n_tasks > MIME_MAX_TASKS || !bundle_mapping(rt->bundle, &base, &len))
		return;
	for (int p = 1; p <= rt->n_phases; p++) {
		size_t n_keep = 0, bytes = 0;
		uintptr_t last = 0; /* the end of the last page counted: tensors may share one */

		for (int t = 0; t < n_tasks; t++)
			if (rt->enabled[t])
				keep_task(keep, &n_keep,
				          &rt->phase_tasks[(size_t)(p - 1) * (size_t)n_tasks +
				                           (size_t)t]);
		qsort(keep, n_keep, sizeof(*keep), cmp_ptr);
		for (size_t i = 0; i < n_tensors; i++) {
			struct mime_tensor_view v;
			uintptr_t lo, hi;

			mime_bundle_tensor_at(rt->bundle, i, &v);
			if (!v.n_bytes || !bsearch(&v.data, keep, n_keep, sizeof(*keep), cmp_ptr))
				continue;
			lo = (uintptr_t)v.data / pg * pg;
			hi = ((uintptr_t)v.data + v.n_bytes + pg - 1) / pg * pg;
			if (lo < last)
				lo = last;
			if (hi > lo)
				bytes += hi - lo;
			if (hi > last)
				last = hi;
		}
		rt->phase_mapped_bytes[p - 1] = (int64_t)bytes;
	}
}

int mimed_runtime_load(const struct mimed_config *cfg, const char *path, int n_workers,
                       struct mimed_runtime **ret_rt, struct mime_errinfo *ei)
{
	struct mime_engine_config ecfg = {
		.max_batch = cfg->max_batch,
		.n_threads =
			mimed_config_engine_threads(cfg, n_workers, sysconf(_SC_NPROCESSORS_ONLN)),
	};
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
	rt->mode = cfg->mode;
	rt->threads = ecfg.n_threads;
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
	{
		/* A file freshly written or read ahead sits in the page cache in large folios,
		 * and the kernel maps a 2 MiB one with one PMD on the first fault inside it:
		 * reading a bias put 2 MiB of the bundle in RSS (VGG-7 full: 6 of the 6.4 MiB
		 * the mapping held). No PMD mappings here; a fault may still map a whole
		 * folio page by page, hence drop_unread_pages(). Advice only. */
		uintptr_t base;
		size_t len;

		if (bundle_mapping(rt->bundle, &base, &len))
			madvise((void *)base, len, MADV_NOHUGEPAGE);
	}
	r = mime_model_from_bundle(rt->bundle, MIME_MODEL_HALF_VIEWS, &rt->model, ei);
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
	rt->n_models = 1;
	if (rt->mode == MIMED_MODE_CONVENTIONAL) {
		rt->n_models = rt->manifest->n_tasks;
		rt->conv_models = calloc((size_t)rt->n_models, sizeof(*rt->conv_models));
		rt->conv_tasks = calloc((size_t)rt->n_models, sizeof(*rt->conv_tasks));
		if (!rt->conv_models || !rt->conv_tasks) {
			r = -ENOMEM;
			goto fail;
		}
		for (int t = 0; t < rt->n_models; t++) {
			if (!rt->enabled[t])
				continue; /* no engine: a disabled task costs no memory */
			r = conv_model(rt, t, ei);
			if (r < 0)
				goto fail;
		}
	}
	rt->engines = calloc((size_t)rt->n_workers * (size_t)rt->n_models, sizeof(*rt->engines));
	rt->inputs = calloc((size_t)rt->n_workers, sizeof(*rt->inputs));
	if (!rt->engines || !rt->inputs) {
		r = -ENOMEM;
		goto fail;
	}
	for (int i = 0; i < rt->n_workers; i++) {
		for (int k = 0; k < rt->n_models; k++) {
			const struct mime_model *m = rt->mode == MIMED_MODE_CONVENTIONAL
			                                     ? &rt->conv_models[k]
			                                     : &rt->model;

			if (rt->mode == MIMED_MODE_CONVENTIONAL && !rt->enabled[k])
				continue;
			r = mime_engine_create(m, &ecfg, &rt->engines[i * rt->n_models + k], ei);
			if (r < 0)
				goto fail;
		}
		rt->inputs[i] =
			malloc((size_t)cfg->max_batch * (size_t)rt->input_floats * sizeof(float));
		if (!rt->inputs[i]) {
			r = -ENOMEM;
			goto fail;
		}
	}
	r = runtime_phases(rt, ei);
	if (r < 0)
		goto fail;
	mimed_runtime_drop_pages(rt, rt->n_phases, false);
	phases_mapped_bytes(rt);
	for (int i = 0; i < rt->manifest->n_tasks; i++)
		if (rt->manifest->tasks[i].thresholds == MIME_THR_CHANNEL)
			thr = MIME_ENERGY_THR_CHANNEL;
	mime_energy_hw_default(&rt->energy_hw);
	rt->energy_nets = calloc((size_t)rt->n_phases + 1, sizeof(*rt->energy_nets));
	if (!rt->energy_nets) {
		r = -ENOMEM;
		goto fail;
	}
	rt->have_energy = true;
	for (int p = 0; p <= rt->n_phases && rt->have_energy; p++)
		rt->have_energy =
			mime_energy_net_init_phase(&rt->energy_nets[p], &rt->manifest->graph, thr,
		                                   rt->has_phases && p ? &rt->phases[p - 1] : NULL,
		                                   NULL) == 0;

	*ret_rt = rt;
	return 0;

fail:
	runtime_free(rt);
	return r;
}
