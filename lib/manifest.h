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
 *     "provenance": { "command": "...", "seed": 1, "data": "...", "date": "...", ... } }
 *
 * Tensors (all F32, little endian):
 *   parent/<layer>.weight  conv [K,C,R,S], fc [out,in]      parent/<layer>.bias [K]
 *   task/<task>/head.weight [n_classes, features]            task/<task>/head.bias [n_classes]
 *   task/<task>/<layer>.threshold  [C,H,W] ("element") or [C] ("channel"), for every masked
 *                                  layer when the task's "thresholds" is not "none".
 *
 * Ownership: a manifest owns its arrays; mime_manifest_free() releases them.
 * Threads: immutable after parsing. */
#pragma once

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

struct mime_manifest {
	struct mime_graph graph;
	int n_tasks;
	struct mime_task_spec *tasks;
	char *provenance_json; /* the "provenance" object, serialised; may be NULL */
	char *json;            /* the whole manifest as read or written */
};

/* Parses and validates a manifest JSON string (graph checked, tasks unique, class names,
 * input spec matching the graph). On failure returns MIME_EFORMAT / MIME_EGRAPH with the
 * field named in ei. */
int mime_manifest_parse(const char *json, size_t len, struct mime_manifest *ret_manifest,
                        struct mime_errinfo *ei);

/* Serialises m (its graph, tasks and provenance_json) to a newly allocated JSON string. */
char *mime_manifest_format(const struct mime_manifest *m);

void mime_manifest_free(struct mime_manifest *m); /* NULL and half-built are fine */

/* Index of the task called name, or MIME_ENOTASK. */
int mime_manifest_task(const struct mime_manifest *m, const char *name);

/* The default input spec for a graph: no inversion, mean 0, std 1, stretch. */
void mime_input_spec_default(const struct mime_graph *g, struct mime_input_spec *ret_spec);
