/* SPDX-License-Identifier: MIT */
/* energy_measure -- per-sample, per-layer sparsities of a bundle's network measured by the
 * inference engine over real images, in the form lib/energy takes them, for two models per
 * task:
 *   mime      the task as mimed serves it (the shared parent, the task's thresholds if it has
 *             any, else ReLU): what Case-3 costs;
 *   baseline  the task's conventional model: the fine-tuned copy conventional/<task>/<layer>.*
 *             that `mime-train finetune` writes into the bundle when every conv/fc layer has
 *             one, else the parent with ReLU (thresholds dropped): what Case-1/2 cost.
 * Images are IDX uint8 [n, rows, cols] taken as gray in [0,1] and preprocessed to the task's
 * input spec (mime_image_preprocess, as `mime-train eval` does). A modelled layer's output
 * sparsity is the engine's zero count of that layer over its output neurons (0 for a layer
 * without ReLU/mask); its input sparsity is the previous modelled layer's output sparsity
 * (pooling assumed to keep the fraction, as in the study); the first layer's is the fraction
 * of exact zeros in the preprocessed image.
 * Ownership: a struct energy_measurement owns its arrays; energy_measurement_fini().
 * Threads: one engine thread; reentrant. */
#pragma once

#include "lib/energy.h"

#define ENERGY_MEASURE_MAX_TASKS 16

struct energy_measurement {
	struct mime_energy_net net; /* the bundle's graph as lib/energy sees it */
	int n_tasks;                /* as asked, in order */
	int n_samples;              /* per task */
	char task[ENERGY_MEASURE_MAX_TASKS][MIME_NAME_MAX];
	const char *baseline[ENERGY_MEASURE_MAX_TASKS]; /* "conventional" or "parent+relu" */
	/* [task][sample][layer], net.n_layers per sample */
	struct mime_energy_sparsity *mime, *base;
};

/* Opens bundle_path, runs the first `limit` images of images[t] (n_images == 1: one file for
 * every task) through the engine for each task[t] under both models and fills *ret.
 * Threshold granularity for the energy model follows the first task that has thresholds
 * (per channel -> MIME_ENERGY_THR_CHANNEL, else per neuron). Fails with MIME_ENOTASK for an
 * unknown task, MIME_EDATA for images that are not [n, rows, cols] or fewer than `limit`,
 * MIME_EINVAL for n_tasks outside 1..ENERGY_MEASURE_MAX_TASKS or n_images not 1 or n_tasks,
 * or what the bundle, IDX, engine or energy model report; ei says which. */
int energy_measure(const char *bundle_path, const char *const *task, int n_tasks,
                   const char *const *images, int n_images, int limit,
                   struct energy_measurement *ret, struct mime_errinfo *ei);
void energy_measurement_fini(struct energy_measurement *m); /* zeroed or filled */

/* Sparsity row of sample s of task t (net.n_layers entries). */
static inline const struct mime_energy_sparsity *
energy_measurement_row(const struct energy_measurement *m, int baseline, int t, int s)
{
	return (baseline ? m->base : m->mime) + ((long)t * m->n_samples + s) * m->net.n_layers;
}
