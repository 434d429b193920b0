/* SPDX-License-Identifier: MIT */
/* manifest -- the bundle's description of itself: the graph, the tasks (classes, input spec,
 * thresholds) and provenance. It travels as one JSON string under the key "mime" of the
 * safetensors "__metadata__" map (safetensors metadata is a string -> string map).
 *
 * JSON schema (version 1):
 *   { "format": "mime-bundle", "version": 1,
 *     "graph": { "input": [C,H,W],
 *                "layers": [ {"name":"conv1","kind":"conv","out":64,"kernel":3,"stride":1,
 *                             "pad":1,"act":"relu"},
 *                            {"name":"pool1","kind":"maxpool","kernel":2,"stride":2},
 *                            {"name":"flatten","kind":"flatten"},
 *                            {"name":"fc1","kind":"fc","out":512,"act":"relu"} ] },
 *     "tasks": [ { "name":"fmnist", "classes":["T-shirt/top", ...],
 *                  "input": { "channels":1, "height":28, "width":28, "resize":"bilinear",
 *                             "fit":"stretch"|"pad", "invert":false,
 *                             "mean":[0.286], "std":[0.353] },
 *                  "thresholds": "none"|"element"|"channel",
 *                  "accuracy": 0.93, "sparsity": {"conv1":0.6, ...},
 *                  ...any other key, kept in extra_json } ],
 *     "phases": [ { "name":"p1", "kernels": {"conv1":16, ..., "fc1":128}, "wuv":8,
 *                   "fine": ["conv2", ...], "accuracy":0.81, "latency_ms":0.42,
 *                   "memory_bytes":1048576, "nonzero_params":123456,
 *                   ...any other key, kept in extra_json }, ... ],
 *     "provenance": { "command": "...", "seed": 1, "data": "...", "date": "...", ... } }
 *
 * Phases (optional; the Multi-phase CNN paper's nested sub-networks): phase 1 is the
 * smallest, phase N (the list's last) the largest. The whole parent is not a phase unless one
 * is listed with every layer's kernels = out and no fine layer; it is always available as
 * "phase 0" (mime_engine_set_phase(e, NULL, NULL)). "kernels" names every conv / fc layer
 * with its active kernels (the first k of the layer, 1..out); phases are nested: phase p+1
 * keeps at least as many kernels as phase p in every layer (and, checked by the bundle
 * reader, keeps every weight phase p keeps). "wuv" (16, 8 or 4) is the group
 * height of the fine-grain masks; "fine" lists the conv layers that have one (may be
 * empty or absent). The measured keys are optional.
 *
 * Tensors (all F32, little endian):
 *   parent/<layer>.weight  conv [K,C,R,S], fc [out,in]      parent/<layer>.bias [K]
 *   task/<task>/head.weight [n_classes, features]            task/<task>/head.bias [n_classes]
 *   task/<task>/<layer>.threshold  [C,H,W] ("element") or [C] ("channel"), for every masked
 *                                  layer when the task's "thresholds" is not "none".
 *   phase/<p>/<layer>.mask          U16 or U32 [n_kept]: the fine-grain mask of layer in
 *                                   phase p (1-based), encoded as lib/phase.h describes
 *   task/<task>/phase<p>/head.weight [n_classes, features of phase p]
 *   task/<task>/phase<p>/head.bias   [n_classes]
 *   task/<task>/phase<p>/<layer>.threshold  [k_active,H,W] or [k_active]
 *                                   A (task, phase) has all of these or none; with none the
 *                                   task cannot run in that phase, except in a phase that
 *                                   equals the whole parent, where the task's own tensors
 *                                   serve (lib/model.h, mime_model_phase()).
 *
 * Ownership: a manifest owns its arrays; mime_manifest_free() releases them.
 * Threads: immutable after parsing. */
#pragma once

#include <stdint.h>

#include "lib/graph.h"

#define MIME_MAX_TASKS   64
#define MIME_MAX_CLASSES 1000

enum mime_fit {
	MIME_FIT_STRETCH, /* resize to H x W, ignoring the aspect ratio */
	MIME_FIT_PAD,     /* resize keeping the aspect ratio, center, pad with background */
};

/* How a decoded image becomes the network's input tensor (lib/image applies it). */
struct mime_input_spec {
	int channels, height, width; /* must equal the graph's input shape */
	enum mime_fit fit;
	int invert;            /* 1: v = 1 - v before normalising (dark-on-light inputs) */
	float mean[3], std[3]; /* per channel, applied to values scaled to [0,1] */
};

enum mime_thresholds {
	MIME_THR_NONE,    /* ReLU in every masked layer */
	MIME_THR_ELEMENT, /* one threshold per output neuron: [C,H,W] */
	MIME_THR_CHANNEL, /* one threshold per output channel: [C] */
};

struct mime_task_spec {
	char name[MIME_NAME_MAX];
	int n_classes;
	char **class_names; /* n_classes strings */
	struct mime_input_spec input;
	enum mime_thresholds thresholds;
	double accuracy; /* measured test accuracy as a fraction, < 0 when unknown */
	/* The task's other keys ("sparsity", "baselines", "training", ...) as one serialised
	 * JSON object, kept verbatim through parse and format; NULL when there are none. Owned
	 * by a parsed manifest; a caller-built task may point it at its own string. */
	char *extra_json;
};

#define MIME_MAX_PHASES 32

/* One phase as the manifest describes it (the masks and per-task tensors are in the
 * bundle). Measured values are < 0 when unknown. */
struct mime_phase_spec {
	char name[MIME_NAME_MAX];
	int wuv;                             /* 16, 8 or 4 */
	int k_active[MIME_MAX_LAYERS];       /* conv / fc: active kernels, 1..out; 0 other kinds */
	unsigned char fine[MIME_MAX_LAYERS]; /* 1: conv layer i has a fine-grain mask */
	double accuracy;                     /* fraction in [0,1] */
	double latency_ms;
	int64_t memory_bytes;
	int64_t nonzero_params;
	/* The phase's other keys, serialised; NULL when none (ownership as for tasks). */
	char *extra_json;
};

struct mime_manifest {
	struct mime_graph graph;
	int n_tasks;
	struct mime_task_spec *tasks;
	char *provenance_json; /* the "provenance" object, serialised; may be NULL */
	char *json;            /* the whole manifest as read or written */
	/* Appended: phases 1..n_phases are phases[0..n_phases); 0 and NULL without phases. */
	int n_phases;
	struct mime_phase_spec *phases;
};

/* Parses and validates a manifest JSON string (graph checked, tasks unique, class names,
 * input spec matching the graph; phases: names unique, "kernels" naming exactly the conv /
 * fc layers with 1..out each, nested, "wuv" 16/8/4, "fine" naming conv layers once). On
 * failure returns MIME_EFORMAT / MIME_EGRAPH with the field named in ei. */
int mime_manifest_parse(const char *json, size_t len, struct mime_manifest *ret_manifest,
                        struct mime_errinfo *ei);

/* Serialises m (its graph, tasks, phases and provenance_json) to a newly allocated JSON string. */
char *mime_manifest_format(const struct mime_manifest *m);

void mime_manifest_free(struct mime_manifest *m); /* NULL and half-built are fine */

/* Checks m's phases against its graph as mime_manifest_parse() does (for a caller-built
 * manifest); MIME_EFORMAT with the phase and field named in ei. */
int mime_manifest_check_phases(const struct mime_manifest *m, struct mime_errinfo *ei);

/* Index of the task called name, or MIME_ENOTASK. */
int mime_manifest_task(const struct mime_manifest *m, const char *name);

/* The default input spec for a graph: no inversion, mean 0, std 1, stretch. */
void mime_input_spec_default(const struct mime_graph *g, struct mime_input_spec *ret_spec);
