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

struct mime_task_params {
	const char *name;
	int n_classes;
	const float *head_w; /* [n_classes, features] */
	const float *head_b; /* [n_classes] */
	enum mime_thresholds granularity;
	const float *thresholds[MIME_MAX_LAYERS]; /* per masked layer; NULL = ReLU */
};

struct mime_model {
	struct mime_graph graph;
	const float *weight[MIME_MAX_LAYERS]; /* conv [K,C,R,S] / fc [out,in]; NULL otherwise */
	const float *bias[MIME_MAX_LAYERS];   /* [K] */
	int n_tasks;
	struct mime_task_params *tasks;
};

/* Fills *ret_model with views into b (which must outlive the model). Returns 0 or a
 * negative code (-ENOMEM). */
int mime_model_from_bundle(const struct mime_bundle *b, struct mime_model *ret_model,
                           struct mime_errinfo *ei);
void mime_model_fini(struct mime_model *m); /* frees the task array only */
