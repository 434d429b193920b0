/* SPDX-License-Identifier: MIT */
/* graph -- a VGG-style network described as data: an input shape and a list of layers.
 * The parent network is the graph; each task adds a classifier head (an FC layer from the
 * graph's final feature vector to its own classes) and, optionally, a threshold tensor for
 * every masked layer (a conv or fc layer with act = relu): a = (y >= t) ? y : 0.
 * Ownership: plain data, caller storage; no allocation.
 * Threads: pure functions. */
#pragma once

#include "lib/error.h"

#define MIME_MAX_LAYERS 48
#define MIME_NAME_MAX   64

enum mime_layer_kind {
	MIME_LAYER_CONV,
	MIME_LAYER_MAXPOOL,
	MIME_LAYER_FLATTEN,
	MIME_LAYER_FC,
};

enum mime_act {
	MIME_ACT_NONE,
	MIME_ACT_RELU, /* replaced by the task's threshold mask when the task has one */
};

struct mime_shape {
	int c, h, w; /* a flat vector is c = n, h = w = 1 */
};

struct mime_layer_spec {
	enum mime_layer_kind kind;
	char name[MIME_NAME_MAX];
	int out;    /* conv: output channels (kernels); fc: output features */
	int kernel; /* conv, maxpool: square kernel size */
	int stride; /* conv, maxpool */
	int pad;    /* conv: zero padding on every side */
	enum mime_act act;
};

struct mime_graph {
	struct mime_shape input;
	int n_layers;
	struct mime_layer_spec layers[MIME_MAX_LAYERS];
};

/* Returns "conv", "maxpool", "flatten", "fc" (the manifest spelling). */
const char *mime_layer_kind_name(enum mime_layer_kind kind);
/* Parses the manifest spelling; returns 0 or MIME_EGRAPH. */
int mime_layer_kind_parse(const char *s, enum mime_layer_kind *ret_kind);

/* Checks every layer's parameters and computes the output shape of each layer into
 * ret_shapes[0..n_layers-1] (may be NULL). Fails with MIME_EGRAPH and a message naming the
 * layer: non-positive sizes, a kernel larger than its padded input, an fc after a
 * non-flat tensor without flatten, duplicate names. */
int mime_graph_check(const struct mime_graph *g, struct mime_shape *ret_shapes,
                     struct mime_errinfo *ei);

/* The shape of the final feature vector (what heads take); the graph must be checked. */
struct mime_shape mime_graph_output(const struct mime_graph *g);

/* True when layer i is a conv or fc whose activation may carry a threshold mask. */
int mime_graph_layer_masked(const struct mime_graph *g, int i);

/* Number of parameters of layer i (weights + bias; 0 for pool/flatten) given its input. */
long mime_graph_layer_params(const struct mime_layer_spec *l, const struct mime_shape *in);

/* Multiply-accumulates of layer i for one sample (conv: out_pixels * K * C*R*S). */
long mime_graph_layer_macs(const struct mime_layer_spec *l, const struct mime_shape *in,
                           const struct mime_shape *out);

static inline long mime_shape_size(const struct mime_shape *s)
{
	return (long)s->c * s->h * s->w;
}
