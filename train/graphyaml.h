/* SPDX-License-Identifier: MIT */
/* graphyaml -- network descriptions (conf/networks/NAME.yaml) and the import of weights
 * from a PyTorch safetensors file into a bundle.
 *
 * YAML schema:
 *   name: vgg7                      # optional, informative
 *   description: ...                # optional, informative
 *   input: [C, H, W]
 *   layers:                         # the fields of the manifest's graph.layers, plus
 *     - {name: conv1, kind: conv, out: 64, kernel: 3, stride: 1, pad: 1, act: relu,
 *        source: features.0,        # PyTorch prefix: <source>.weight, <source>.bias
 *        bn: features.1}            # BatchNorm to fold: .weight .bias .running_mean
 *                                   # .running_var (eps 1e-5)
 *     - {name: pool1, kind: maxpool, kernel: 2, stride: 2}
 *     - {name: flatten, kind: flatten}
 *   head: {source: classifier, bn: ..., task: fmnist, classes: [a, b, ...]}   # optional
 * Unknown keys are errors; every error names the file, line and column and the field.
 *
 * Ownership: a struct mimetrain_netdesc owns its class names; mimetrain_netdesc_free().
 * Threads: no shared state; all functions are reentrant. */
#pragma once

#include "lib/bundle.h"

#define MIMETRAIN_SOURCE_MAX 128

struct mimetrain_source {
	char source[MIMETRAIN_SOURCE_MAX]; /* PyTorch tensor prefix; "" when none */
	char bn[MIMETRAIN_SOURCE_MAX];     /* BatchNorm prefix to fold; "" when none */
};

struct mimetrain_netdesc {
	char name[MIME_NAME_MAX]; /* "" when the file has none */
	struct mime_graph graph;  /* checked with mime_graph_check() */
	struct mimetrain_source src[MIME_MAX_LAYERS];
	int has_head;
	struct mimetrain_source head;
	char head_task[MIME_NAME_MAX]; /* "" when none */
	int n_classes;                 /* 0 when head.classes is absent */
	char **classes;
};

/* Loads and checks path. Returns 0, -errno (file unreadable) or MIME_EGRAPH with
 * "FILE:LINE:COL: field: problem" in ei. On failure *ret_desc is left empty. */
int mimetrain_graphyaml_load(const char *path, struct mimetrain_netdesc *ret_desc,
                             struct mime_errinfo *ei);
/* The same from memory; filename is used in messages only. */
int mimetrain_graphyaml_parse(const char *text, size_t len, const char *filename,
                              struct mimetrain_netdesc *ret_desc, struct mime_errinfo *ei);
void mimetrain_netdesc_free(struct mimetrain_netdesc *d); /* NULL and empty are fine */

/* Imports weights (a plain safetensors file, e.g. PyTorch's save_file() of a state_dict)
 * as described by d: for every conv/fc layer <source>.weight (shape [K,C,R,S] / [out,in])
 * and <source>.bias (zeros when absent), BatchNorm folded in when bn is set:
 *   s = gamma / sqrt(running_var + 1e-5); W' = W * s; b' = (b - running_mean) * s + beta.
 * Weights may be F32, F64, F16 or BF16. Adds parent/<layer>.weight|bias to w; with a head
 * and a task name, adds task/<task>/head.weight|bias and one task (thresholds none, input
 * spec default, class names d->classes or "0".."n-1"). Fills *ret_manifest (caller frees
 * with mime_manifest_free(); provenance_json is NULL, for the caller to set). Fails with
 * MIME_EFORMAT naming the tensor and the problem. */
int mimetrain_import(const struct mimetrain_netdesc *d, const struct mime_bundle *weights,
                     struct mime_bundle_writer *w, struct mime_manifest *ret_manifest,
                     struct mime_errinfo *ei);
