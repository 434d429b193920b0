/* SPDX-License-Identifier: MIT */
/* phases -- building the nested phases of a multi-phase network (the Multi-phase CNN paper,
 * IEEE Access 2023, §III-V) from a trained parent:
 *   - the parent's kernels are put in phase-major order (each conv / fc layer's kernels
 *     sorted by l2 norm, largest first; the next layer's input channels and the head's
 *     columns follow, so the network computes the same function), so that every coarse phase
 *     is "the first k kernels of every layer";
 *   - a phase is k per layer plus, for fine phases, a keep mask of W_uv x 1 groups of each
 *     conv layer's im2col weight matrix (lib/phase.h);
 *   - a phase's sub-network is extracted as a physically smaller network (pruned groups
 *     zeroed), retrained with the weights of the previous phase fixed (every weight moves
 *     during an epoch, as the paper does to keep the momentum of the updates, and the fixed
 *     part is overwritten at the end of every epoch and at the end) and pruned groups held at
 *     zero after every step, and stored back;
 *   - speed and memory of a phase are measured through the inference engine in that phase,
 *     and a third-order polynomial of (non-zero parameters, threads) is fitted to them.
 *
 * Ownership: a struct mimetrain_mp owns its weight arrays; phase definitions own their keep
 * masks (mimetrain_phase_def_fini); a struct mimetrain_sub owns its arrays.
 * Threads: one thread at a time; training runs the net's own workers (train/net.h). */
#pragma once

#include <stdint.h>
#include <stdio.h>

#include "lib/graph.h"
#include "lib/model.h"
#include "train/mime.h"

/* The parent under construction: the graph, every conv / fc layer's weights [K,C,R,S] or
 * [out,in] and biases, and one head (the parent task's, ReLU) [n_classes, features]. */
struct mimetrain_mp {
	struct mime_graph g;
	struct mime_shape shapes[MIME_MAX_LAYERS]; /* output of each layer */
	float *w[MIME_MAX_LAYERS], *b[MIME_MAX_LAYERS];
	int n_classes;
	float *head_w, *head_b;
};

/* Copies model's graph, weights and task `task`'s head (a task with thresholds is refused:
 * phases are built on the parent's ReLU network). Returns 0, MIME_EINVAL, MIME_EGRAPH or
 * -ENOMEM. */
int mimetrain_mp_init(struct mimetrain_mp *mp, const struct mime_model *model, int task,
                      struct mime_errinfo *ei);
void mimetrain_mp_fini(struct mimetrain_mp *mp); /* zeroed is fine */
/* Deep copy into dst (uninitialised). Returns 0 or -ENOMEM (dst zeroed). */
int mimetrain_mp_copy(struct mimetrain_mp *dst, const struct mimetrain_mp *src);

/* Sorts each conv / fc layer's kernels by l2 norm (weights and bias), largest first,
 * permuting the next layer's input channels (or, after the last, the head's columns) the
 * same way: the network computes the same function (up to rounding order: none, the sums
 * are the same products). */
void mimetrain_mp_sort_kernels(struct mimetrain_mp *mp);

/* One phase: active kernels per conv / fc layer (0 for other kinds) and, for fine layers, a
 * keep mask of groups as lib/phase.h numbers them (NULL = dense). */
struct mimetrain_phase_def {
	int k[MIME_MAX_LAYERS];
	uint8_t *keep[MIME_MAX_LAYERS];
	int wuv;
};

void mimetrain_phase_def_fini(struct mimetrain_phase_def *ph);
/* Deep copy; returns 0 or -ENOMEM. */
int mimetrain_phase_def_copy(struct mimetrain_phase_def *dst, const struct mimetrain_phase_def *src,
                             const struct mime_graph *g);
/* The phase keeping every kernel (k = out), dense. */
void mimetrain_phase_def_full(struct mimetrain_phase_def *ph, const struct mime_graph *g, int wuv);

/* Input channels (conv) or input features (fc) of layer i in phase ph, and R*S (1 for fc). */
int mimetrain_phase_cin(const struct mime_graph *g, const int *k, int i, int *ret_rs);
/* Groups of layer i's mask in ph. */
size_t mimetrain_phase_groups(const struct mime_graph *g, const struct mimetrain_phase_def *ph,
                              int i);

/* Non-zero parameters of ph: kept weights of every conv / fc layer (pruned groups excluded,
 * a group's rows beyond k not counted), their biases, and the head's weights and bias. */
int64_t mimetrain_phase_nonzero(const struct mimetrain_mp *mp,
                                const struct mimetrain_phase_def *ph);

/* Coarse phase keeping a fraction f of every conv / fc layer's kernels (at least 1). */
void mimetrain_phase_coarse(const struct mime_graph *g, double f, int wuv,
                            struct mimetrain_phase_def *ret);
/* The coarse phase whose non-zero count is the largest not above `target` (bisection over
 * the kept fraction; at least one kernel per layer). */
void mimetrain_phase_coarse_for(const struct mimetrain_mp *mp, int64_t target, int wuv,
                                struct mimetrain_phase_def *ret);

/* A fine phase between prev (NULL: nothing) and top (prev nested in top; same k as top):
 * keeps every group prev keeps, plus the groups of top's increment with the largest l2 norm
 * in `src` (full-size weight arrays, e.g. an independently trained network), the same
 * fraction of every conv layer's candidates, as many as keep the non-zero count within
 * `target` (at least none: the count cannot go below prev's groups plus the fc layers, which
 * have no mask and take top's kernels dense). Returns 0 or -ENOMEM. */
int mimetrain_phase_fine_between(const struct mimetrain_mp *mp,
                                 const struct mimetrain_phase_def *prev,
                                 const struct mimetrain_phase_def *top, float *const *src,
                                 int64_t target, struct mimetrain_phase_def *ret);

/* Whether every weight kept by a is kept by b (the bundle reader's nesting rule). */
int mimetrain_phase_nested(const struct mime_graph *g, const struct mimetrain_phase_def *a,
                           const struct mimetrain_phase_def *b);

/* A phase's network as a smaller model: graph with out = k, weights sliced from the full
 * arrays with pruned groups zeroed, and a head [n_classes, features of the phase]. */
struct mimetrain_sub {
	struct mime_graph g;
	float *w[MIME_MAX_LAYERS], *b[MIME_MAX_LAYERS];
	int n_classes, features;
	float *head_w, *head_b;
};

/* Slices ph out of the full arrays w / b (mp's or another network's of the same graph) and
 * the full head; head may be NULL for a head sliced from mp's. Returns 0, MIME_EGRAPH or
 * -ENOMEM. */
int mimetrain_sub_extract(const struct mimetrain_mp *mp, float *const *w, float *const *b,
                          const float *head_w, const struct mimetrain_phase_def *ph,
                          struct mimetrain_sub *ret_sub);
void mimetrain_sub_fini(struct mimetrain_sub *s);
/* Writes s back into mp's full arrays: ph's kept weights, its biases, and the head's columns
 * of the phase's features (and the head's bias). */
void mimetrain_sub_store(struct mimetrain_mp *mp, const struct mimetrain_phase_def *ph,
                         const struct mimetrain_sub *s);
/* Copies into s, from the full arrays w / b, the weights of ph that `prev` does not keep
 * (the restored part), leaving prev's as they are. */
void mimetrain_sub_restore_from(struct mimetrain_sub *s, const struct mimetrain_mp *mp,
                                const struct mimetrain_phase_def *ph,
                                const struct mimetrain_phase_def *prev, float *const *w,
                                float *const *b);
/* A model view of s (ReLU, one task named name); mime_model_fini() frees its task array. */
int mimetrain_sub_model(const struct mimetrain_sub *s, const char *name,
                        struct mime_model *ret_model);

struct mimetrain_sub_train_config {
	int epochs, batch, threads;
	float lr; /* Adam, cosine to 0 over the run */
	uint64_t seed;
};

/* Retrains s (the sub-network of ph) on train: the weights prev keeps (NULL: none) are fixed
 * -- overwritten with their values at the start after every epoch -- and the groups ph prunes
 * are zeroed after every step; the head is free. One line per epoch to log (may be NULL).
 * Returns 0, MIME_EINVAL, -ENOMEM, or MIME_EINVAL when the loss diverges. */
int mimetrain_sub_train(struct mimetrain_sub *s, const struct mimetrain_mp *mp,
                        const struct mimetrain_phase_def *ph,
                        const struct mimetrain_phase_def *prev,
                        const struct mimetrain_taskset *train,
                        const struct mimetrain_sub_train_config *cfg, FILE *log,
                        struct mime_errinfo *ei);

/* Measures phase ph of mp with head (sized for the phase) through the inference engine:
 * the lower quartile of the batch-1 forward times over `reps` images of set with `threads` threads,
 * and the engine's plan bytes in the phase (packed weights, buffers, scratch). Returns 0 or what
 * the engine fails with. */
int mimetrain_phase_measure(const struct mimetrain_mp *mp, const struct mimetrain_phase_def *ph,
                            const float *head_w, const float *head_b,
                            const struct mimetrain_taskset *set, int threads, int reps,
                            double *ret_latency_ms, int64_t *ret_memory_bytes,
                            struct mime_errinfo *ei);

/* Test accuracy of phase ph of mp with head (sized for the phase) through the inference
 * engine in that phase, as the daemon serves it. Returns 0 or what the engine fails with. */
int mimetrain_phase_eval(const struct mimetrain_mp *mp, const struct mimetrain_phase_def *ph,
                         const float *head_w, const float *head_b,
                         const struct mimetrain_taskset *set, int threads, double *ret_accuracy,
                         struct mime_errinfo *ei);

/* Fills a struct mime_phase (lib/phase.h) for the engine from ph (borrows ph's masks). */
void mimetrain_phase_to_engine(const struct mimetrain_phase_def *ph, const struct mime_graph *g,
                               struct mime_phase *ret);

/* Third-order polynomial in two variables, 10 terms in this order:
 * 1, x, y, x^2, xy, y^2, x^3, x^2 y, x y^2, y^3; x and y are scaled by the fit's own scale. */
#define MIMETRAIN_POLY_TERMS 10
struct mimetrain_poly {
	double coef[MIMETRAIN_POLY_TERMS];
	double x_scale, y_scale; /* inputs are divided by these first */
	double r2;               /* coefficient of determination on the fitted points */
};

/* Least-squares fit of z ~ poly(x, y) over n points (a small ridge keeps it solvable with
 * fewer distinct points than terms). Returns 0 or MIME_EINVAL (n < 1). */
int mimetrain_poly_fit(const double *x, const double *y, const double *z, int n,
                       struct mimetrain_poly *ret);
double mimetrain_poly_eval(const struct mimetrain_poly *p, double x, double y);
