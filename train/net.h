/* SPDX-License-Identifier: MIT */
/* net -- a trainable network: the layers of a struct mime_graph (conv with optional
 * BatchNorm, ReLU, maxpool, flatten, fc) followed by a classifier head (fc from the graph's
 * features to n_classes) and softmax cross-entropy. float32 forward and backward.
 *
 * Layout: inside the net, spatial activations are kept channel-major over the whole
 * minibatch, [C][N][H][W], so a conv is one im2col over the batch and one sgemm
 * (Y[K, N*OH*OW] = W[K, C*R*S] * col[C*R*S, N*OH*OW]); flat activations are [N][F] with
 * F ordered c, h, w as in the inference engine. Callers see NCHW inputs and [N][classes]
 * logits only.
 *
 * Determinism: every reduction is done by one thread in a fixed order and OpenBLAS
 * partitions a GEMM by its output, so the same seed, data and thread count give
 * bit-identical weights.
 *
 * Ownership: a net owns its parameters, gradients, activations and its worker threads; the
 * graph is copied. Pointers handed out (logits, params) borrow from the net.
 * Threads: a net is used from one thread at a time; it runs `threads - 1` worker pthreads of
 * its own for im2col, col2im, BatchNorm, ReLU and pooling, and OpenBLAS runs the GEMMs with
 * whatever thread count the caller set (openblas_set_num_threads()). */
#pragma once

#include <stdint.h>
#include <stdio.h>

#include "lib/error.h"
#include "lib/graph.h"

/* A small seeded generator (splitmix64): the trainer's only source of randomness. */
struct mimetrain_rng {
	uint64_t s;
};

static inline void mimetrain_rng_seed(struct mimetrain_rng *r, uint64_t seed)
{
	r->s = seed;
}

static inline uint64_t mimetrain_rng_next(struct mimetrain_rng *r)
{
	uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* Uniform in [0, n) (multiply-shift; n > 0). */
static inline uint32_t mimetrain_rng_below(struct mimetrain_rng *r, uint32_t n)
{
	return (uint32_t)(((mimetrain_rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

/* Uniform double in (0, 1). */
static inline double mimetrain_rng_uniform(struct mimetrain_rng *r)
{
	return ((double)(mimetrain_rng_next(r) >> 11) + 0.5) / 9007199254740992.0;
}

/* A derived seed for stream `stream` of `seed` (e.g. the shuffle of one epoch). */
uint64_t mimetrain_rng_derive(uint64_t seed, uint64_t stream);

/* Fills g with VGG-7 for a 1x28x28 input: conv-pool-conv-pool-conv-conv-pool-flatten, 3x3
 * pad 1 convs with ReLU, 2x2 pools; width 64-128-256-256 divided by width_div (1 = full,
 * 2 = half). Returns 0 or MIME_EINVAL. */
int mimetrain_graph_vgg7(int width_div, struct mime_graph *ret_graph);

struct mimetrain_net_config {
	int n_classes;
	int batchnorm;             /* 1: BatchNorm after every conv (before its ReLU) */
	int max_batch;             /* largest n passed to forward */
	int threads;               /* own worker threads including the caller's, >= 1 */
	uint64_t seed;             /* Kaiming initialisation */
	float bn_momentum, bn_eps; /* 0 picks 0.1 and 1e-5 */
};

/* One trainable tensor and its gradient (same length). decay: weight decay applies (conv and
 * fc weights, not biases or BatchNorm). */
struct mimetrain_param {
	char name[96]; /* "conv1.weight", "conv1.bn.gamma", "head.bias", ... */
	float *w, *g;
	size_t n;
	int decay;
};

struct mimetrain_net;

/* Builds the net for a checked graph. Fails with MIME_EGRAPH (bad graph), MIME_EINVAL (bad
 * config), -ENOMEM, or -errno when threads cannot start. */
int mimetrain_net_create(const struct mime_graph *g, const struct mimetrain_net_config *cfg,
                         struct mimetrain_net **ret_net, struct mime_errinfo *ei);
void mimetrain_net_destroy(struct mimetrain_net *net); /* NULL is a no-op */

const struct mime_graph *mimetrain_net_graph(const struct mimetrain_net *net);
int mimetrain_net_features(const struct mimetrain_net *net); /* the head's input width */

/* The trainable tensors, in a fixed order; borrowed from the net. */
struct mimetrain_param *mimetrain_net_params(struct mimetrain_net *net, int *ret_n);

/* Runs the net on x (n samples, NCHW float, n <= max_batch). train: BatchNorm uses the
 * batch's statistics and updates its running statistics, and the activations are kept for
 * mimetrain_net_backward(); otherwise BatchNorm uses the running statistics. Returns the
 * logits [n][n_classes], borrowed until the next forward. */
const float *mimetrain_net_forward(struct mimetrain_net *net, const float *x, int n, int train);

/* Softmax cross-entropy of the last forward's logits against labels (n as in forward);
 * keeps dLoss/dlogits for backward. Returns the mean loss; *ret_correct (may be NULL)
 * counts arg-max hits. */
double mimetrain_net_loss(struct mimetrain_net *net, const uint8_t *labels, int *ret_correct);

/* Back-propagates the last loss through the last training forward and overwrites every
 * param's g. want_input_grad: also compute dLoss/dx (tests), see mimetrain_net_input_grad. */
void mimetrain_net_backward(struct mimetrain_net *net, int want_input_grad);
/* dLoss/dx of the last backward with want_input_grad, NCHW like x; borrowed. */
const float *mimetrain_net_input_grad(const struct mimetrain_net *net);

/* Weights of graph layer i (a conv or fc) with BatchNorm folded in:
 * w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta per
 * output channel, using the running statistics. ret_w holds out*in*k*k floats (conv) or
 * out*in (fc), ret_b out floats. Returns 0 or MIME_EINVAL (not a conv/fc layer). */
int mimetrain_net_folded(const struct mimetrain_net *net, int i, float *ret_w, float *ret_b);
/* The head's weights [n_classes][features] and bias, borrowed. */
void mimetrain_net_head(const struct mimetrain_net *net, const float **ret_w, const float **ret_b);
/* Overwrites the weight and bias of graph layer i (conv/fc) and resets its BatchNorm to the
 * identity (gamma 1, beta 0, mean 0, var 1 - eps); used to load folded weights. */
int mimetrain_net_set_layer(struct mimetrain_net *net, int i, const float *w, const float *b);

/* Serialises every param and the BatchNorm running statistics (native float layout), or
 * reads them back into a net built with the same graph and config. Return 0, -errno or
 * MIME_EFORMAT (size mismatch). */
int mimetrain_net_save(const struct mimetrain_net *net, FILE *f);
int mimetrain_net_load(struct mimetrain_net *net, FILE *f, struct mime_errinfo *ei);

/* ---- MIME (train/mime.h): thresholds in place of ReLU, a frozen body ----
 * The threshold mask replaces the ReLU after graph layer i: m = (y - t >= 0), a = y * m
 * (a ReLU's +0 where y = 0, so all-zero thresholds reproduce ReLU bit for bit). Backward uses
 * the straight-through estimate of the step from Dynamic Sparse Training (Liu et al. 2020):
 *   H'(x) = 2 - 4|x| (|x| <= 0.4), 0.4 (0.4 < |x| <= 1), 0 (|x| > 1)
 *   da/dy = m + y H'(y - t)        da/dt = -y H'(y - t)
 * and writes dLoss/dt summed over the minibatch (and over H, W when per_channel) to gt. */

/* H'(x) above. */
float mimetrain_mask_dstep(float x);

/* Sets the thresholds of graph layer i (a conv/fc with ReLU): t is [C,H,W] of the layer's
 * output ([out] for fc), or [C] when per_channel; gt, as long as t, receives dLoss/dt at
 * every backward. Both are borrowed until replaced; t = NULL restores ReLU. Returns 0 or
 * MIME_EINVAL (no ReLU after layer i, or t without gt). */
int mimetrain_net_set_threshold(struct mimetrain_net *net, int i, const float *t, float *gt,
                                int per_channel);

/* frozen = 1: backward computes no gradient for any graph layer's weights, biases or
 * BatchNorm (their g are left as they were), only for thresholds and the head, and stops
 * below the lowest thresholded layer (or at the head when there is none), unless
 * want_input_grad asks for dLoss/dx. The weights themselves are never written by backward;
 * an optimizer given only thresholds and head leaves them byte-identical. */
void mimetrain_net_set_frozen(struct mimetrain_net *net, int frozen);

/* In the last forward, the number of zero activations after graph layer i's ReLU or mask
 * (*ret_zeros) out of all of them (*ret_neurons = n * neurons of the layer). Returns 0 or
 * MIME_EINVAL (no activation after layer i). */
int mimetrain_net_act_zeros(const struct mimetrain_net *net, int i, int64_t *ret_zeros,
                            int64_t *ret_neurons);
