/* SPDX-License-Identifier: MIT */
/* model -- borrowed views of everything an engine needs: the graph, the parent's weights per
 * layer, and each task's head and thresholds. A model can be filled from a bundle
 * (mime_model_from_bundle) or by hand (the trainer, tests).
 * Ownership: a model owns nothing but its task array; the float arrays are borrowed (from
 * a bundle's mapping or from the caller) and must outlive every engine built from it.
 * Threads: immutable once built. */
#pragma once

#include "lib/bundle.h"
#include "lib/graph.h"
#include "lib/manifest.h"
#include "lib/phase.h"

/* A task's tensors are F32 arrays, or (from a bundle that stores them as F16, opened with
 * MIME_MODEL_HALF_VIEWS) the halves in place: each tensor is given by exactly one of its
 * float and half pointers. An engine decodes a task's halves on its first forward in a phase,
 * into memory of its own kept per phase (mime_engine_set_phase), so the bundle keeps half the
 * bytes per task on disk and in the page cache and a forward reads floats as ever. */
struct mime_task_params {
	const char *name;
	int n_classes;
	const float *head_w; /* [n_classes, features] */
	const float *head_b; /* [n_classes] */
	enum mime_thresholds granularity;
	const float *thresholds[MIME_MAX_LAYERS];         /* per masked layer; NULL = ReLU */
	const uint16_t *head_w_half, *head_b_half;        /* F16 instead of head_w / head_b */
	const uint16_t *thresholds_half[MIME_MAX_LAYERS]; /* F16 instead of thresholds[i] */
};

/* Task tensors stored as F16 in the bundle: */
enum mime_model_flags {
	/* (0) decoded once into floats the bundle owns (for code that reads the floats) */
	MIME_MODEL_HALF_VIEWS = 1, /* given in place as halves (for engines; see above) */
};

/* Makes tp a ReLU task: no thresholds, as floats or as halves. */
static inline void mime_task_relu(struct mime_task_params *tp)
{
	tp->granularity = MIME_THR_NONE;
	for (int i = 0; i < MIME_MAX_LAYERS; i++) {
		tp->thresholds[i] = NULL;
		tp->thresholds_half[i] = NULL;
	}
}

/* Points tp's head at F32 arrays (dropping F16 views of another head). */
static inline void mime_task_set_head(struct mime_task_params *tp, const float *w, const float *b)
{
	tp->head_w = w;
	tp->head_b = b;
	tp->head_w_half = tp->head_b_half = NULL;
}

/* True when tp has thresholds for masked layer i (as floats or halves). */
static inline int mime_task_has_thresholds(const struct mime_task_params *tp, int i)
{
	return tp->thresholds[i] != NULL || tp->thresholds_half[i] != NULL;
}

struct mime_model {
	struct mime_graph graph;
	const float *weight[MIME_MAX_LAYERS]; /* conv [K,C,R,S] / fc [out,in]; NULL otherwise */
	const float *bias[MIME_MAX_LAYERS];   /* [K] */
	int n_tasks;
	struct mime_task_params *tasks;
	/* 1: the weight arrays (and the tasks' F16 halves) lie in a read-only file mapping (a
	 * bundle opened from a file), so an engine that keeps its own packed or decoded copy
	 * may drop their pages (MADV_DONTNEED) and the kernel reads them back from the file if
	 * they are touched again. 0: never dropped. */
	int weights_file_backed;
};

/* Fills *ret_model with views into b (which must outlive the model); flags: enum
 * mime_model_flags. Returns 0 or a negative code (-ENOMEM). */
int mime_model_from_bundle(const struct mime_bundle *b, unsigned flags,
                           struct mime_model *ret_model, struct mime_errinfo *ei);
void mime_model_fini(struct mime_model *m); /* frees the task array only */

/* Phase p of bundle b (1..n_phases as the manifest lists them; 0 = the whole parent) in the
 * form mime_engine_set_phase() takes, for an engine built on mime_model_from_bundle(b).
 * *ret_phase gets every layer's k_active, the group height and the fine-grain masks, decoded
 * into *ret_keep_storage: one malloc'ed block the caller frees once the engine has entered
 * the phase (NULL when the phase has no fine layer). ret_tasks[0..n_tasks) gets each task's
 * head and thresholds for the phase as views into b (which must outlive them; flags as for
 * mime_model_from_bundle); an engine
 * borrows that array while it is in the phase, so keep it alive until the next switch.
 * Rule for a task without tensors of its own for phase p (a bundle has all or none): in a
 * phase equal to the whole parent (every layer's kernels = out, no fine layer) the task's
 * parent tensors serve; any other phase cannot be entered and this fails with MIME_EFORMAT
 * naming the task and the phase. Also MIME_EINVAL for p out of range, -ENOMEM. Nothing is
 * written on failure. */
int mime_model_phase(const struct mime_bundle *b, int p, unsigned flags,
                     struct mime_phase *ret_phase, uint8_t **ret_keep_storage,
                     struct mime_task_params *ret_tasks, struct mime_errinfo *ei);
