/* SPDX-License-Identifier: MIT */
/* mime -- a task learned on a frozen parent (the MIME paper, DAC 2022, §III-A) and the two
 * conventional baselines beside it:
 *   MIME       the parent's weights frozen; learned: a threshold per neuron ([C,H,W], or per
 *              channel [C]) of every masked layer, in place of ReLU, and the task's head.
 *              Forward m = (y - t >= 0), a = y * m; backward with the straight-through
 *              estimate of Dynamic Sparse Training (train/net.h):
 *                H'(x) = 2 - 4|x| (|x| <= 0.4), 0.4 (0.4 < |x| <= 1), 0 (|x| > 1)
 *                da/dy = m + y H'(y - t),  da/dt = -y H'(y - t).
 *              Loss = CE + beta * sum over layers and neurons of exp(s * t_i), s = +1 as the
 *              paper writes it, s = -1 as Dynamic Sparse Training does. Adam; after every
 *              step each t_i is clamped to t_i >= MIMETRAIN_T_MIN, so t_i > 0 always.
 *   head-only  the parent frozen with its ReLUs; learned: the head.
 *   fine-tune  every weight starts from the parent and is trained with a new head (ReLU).
 * Collapse guard: after every epoch, a masked layer whose mean sparsity over that epoch's
 * training batches exceeds the config's `collapse` fraction is reported (in the log and in
 * the report's collapse_events) and its thresholds are halved, so that it can recover.
 *
 * Determinism: the same parent, data, config and thread count give bit-identical results
 * (the net's reductions are ordered; shuffles come from (seed, epoch)).
 *
 * Ownership: a struct mimetrain_mime owns its net, thresholds and optimizers; it copies the
 * parent's weights, so the parent model may go away after create. Tasksets own their floats.
 * Threads: one thread at a time; the net runs its own workers (train/net.h). */
#pragma once

#include <stdint.h>
#include <stdio.h>

#include "lib/engine.h"
#include "lib/model.h"
#include "train/data.h"
#include "train/net.h"

#define MIMETRAIN_T_MIN     1e-6f /* thresholds are clamped to >= this after every step */
#define MIMETRAIN_VAL_CURVE 100   /* epochs whose validation figures a report keeps */

enum mimetrain_mode {
	MIMETRAIN_MODE_MIME,      /* frozen parent; thresholds + head */
	MIMETRAIN_MODE_HEAD_ONLY, /* frozen parent with ReLU; head */
	MIMETRAIN_MODE_FINETUNE,  /* every weight from the parent and a new head; ReLU */
};

/* Images preprocessed exactly as the daemon preprocesses them (mime_image_preprocess() to
 * a task's input spec), so training sees what inference will see. */
struct mimetrain_taskset {
	int n;       /* images */
	int c, h, w; /* the spec's shape */
	float *x;    /* [n][c][h][w] */
	uint8_t *y;  /* [n] */
	int n_classes;
};

/* Preprocesses every image of d (8-bit gray taken as [0,1]) to spec. Returns 0, -ENOMEM or
 * what mime_image_preprocess() fails with. */
int mimetrain_taskset_make(const struct mimetrain_data *d, const struct mime_input_spec *spec,
                           struct mimetrain_taskset *ret_set, struct mime_errinfo *ei);
void mimetrain_taskset_fini(struct mimetrain_taskset *s); /* zeroed or NULL: no-op */
/* Mean and standard deviation of every value of s. */
void mimetrain_taskset_stats(const struct mimetrain_taskset *s, float *ret_mean, float *ret_std);
/* Splits all into *ret_train and *ret_val (copies; all is left alone): per class, a seeded
 * random round(n_val * class count / all->n) of its images go to the validation set, so
 * it keeps the class balance; both keep all's order otherwise. The split depends only on
 * (all's labels, n_val, seed). Returns 0, MIME_EINVAL (n_val not in 1..n-1, or a side
 * left empty) or -ENOMEM. */
int mimetrain_taskset_split(const struct mimetrain_taskset *all, int n_val, uint64_t seed,
                            struct mimetrain_taskset *ret_train, struct mimetrain_taskset *ret_val,
                            struct mime_errinfo *ei);
/* Holds n (or percent of train's images, rounded; both 0: nothing) out of *train into *val
 * with mimetrain_taskset_split; *train becomes the rest (unchanged on error). Returns 0 or
 * mimetrain_taskset_split's error. */
int mimetrain_hold_out(struct mimetrain_taskset *train, int n, double percent, uint64_t seed,
                       struct mimetrain_taskset *val, struct mime_errinfo *ei);

struct mimetrain_mime_config {
	enum mimetrain_mode mode;
	enum mime_thresholds granularity; /* MIME: MIME_THR_ELEMENT or MIME_THR_CHANNEL */
	int epochs, batch, threads;
	float lr;        /* Adam: thresholds and head (MIME, head-only); the body's (fine-tune) */
	float head_lr;   /* Adam for the head in fine-tune; 0 = lr */
	double beta;     /* weight of the threshold regulariser */
	int reg_sign;    /* +1: beta * sum exp(t) (the paper); -1: beta * sum exp(-t) (DST) */
	float t_init;    /* initial thresholds (at least MIMETRAIN_T_MIN) */
	double collapse; /* training sparsity of a layer above this is a collapse; 0 = 0.98 */
	uint64_t seed;   /* shuffles and a new head's initialisation */
	/* A sparse head: at the start of epoch prune_epoch (0-based; < 0: epochs / 2) the head's
	 * weights but the head_density largest in magnitude are set to 0 and kept there (after
	 * every step) for the remaining epochs, which retrain the rest; with a validation set
	 * the epoch kept is one of those. 0 or 1: a dense head. */
	double head_density;
	int prune_epoch;
	/* A head that starts pruned (its zeros, e.g. a pruned head sliced for a phase): they
	 * are kept at 0 through training. */
	int head_keep_zeros;
};

/* Whether c prunes the head (0 < head_density < 1), which is then written sparse. */
static inline int mimetrain_prunes_head(const struct mimetrain_mime_config *c)
{
	return c->head_density > 0 && c->head_density < 1;
}

struct mimetrain_mime_report {
	int epochs;
	double seconds;               /* training only, wall */
	double cpu_seconds;           /* training only, the process's CPU time (all threads) */
	double train_loss, train_acc; /* last epoch, on the training batches */
	int n_masked;
	int masked_layer[MIME_MAX_LAYERS];      /* graph index of each masked layer */
	double train_sparsity[MIME_MAX_LAYERS]; /* last epoch, fraction of zero activations */
	double t_mean[MIME_MAX_LAYERS];         /* mean threshold at the end (MIME) */
	int collapse_events[MIME_MAX_LAYERS];   /* epochs in which the guard fired */
	int total_collapse_events;
	/* With a validation set (mimetrain_mime_train's val): after every epoch the learned
	 * params are measured on it and the best epoch's (highest accuracy, then lowest loss;
	 * the earlier on a tie) are kept and restored at the end. */
	size_t head_nonzero, head_weights;   /* the head's weights at the end: non-zero, all */
	int pruned_epoch;                    /* 1-based epoch before which it was pruned; 0 */
	int n_val;                           /* 0: no validation set, the last epoch */
	int best_epoch;                      /* 1-based: whose params were kept */
	double val_acc_best, val_loss_best;  /* of that epoch */
	double val_acc[MIMETRAIN_VAL_CURVE]; /* per epoch (the first ones) */
	double val_loss[MIMETRAIN_VAL_CURVE];
};

struct mimetrain_mime;

/* Builds the trainable net from parent's graph and weights (copied; BatchNorm is folded in
 * bundles, so the net has none). head_task >= 0: the head starts as that parent task's
 * head (it must have n_classes classes); -1: a new head (seeded Kaiming initialisation).
 * Fails with MIME_EINVAL (bad config, no masked layer for MIME, class count mismatch),
 * MIME_EGRAPH, -ENOMEM. */
int mimetrain_mime_create(const struct mime_model *parent, int head_task, int n_classes,
                          const struct mimetrain_mime_config *cfg, struct mimetrain_mime **ret_mime,
                          struct mime_errinfo *ei);
void mimetrain_mime_destroy(struct mimetrain_mime *m); /* NULL is a no-op */

/* Trains for cfg->epochs over train (its shape must be the graph's input), printing one
 * line per epoch and every collapse to log (may be NULL). val (may be NULL; same shape and
 * classes, never trained on): measured after every epoch, and the best epoch's learned
 * params are kept (see the report). Fills *ret_report. Returns 0, MIME_EINVAL (shape or
 * label mismatch) or -ENOMEM. */
int mimetrain_mime_train(struct mimetrain_mime *m, const struct mimetrain_taskset *train,
                         const struct mimetrain_taskset *val, FILE *log,
                         struct mimetrain_mime_report *ret_report, struct mime_errinfo *ei);

struct mimetrain_net *mimetrain_mime_net(struct mimetrain_mime *m);

/* The thresholds of graph layer i (MIME mode) and their count, or NULL. Borrowed. */
const float *mimetrain_mime_thresholds(const struct mimetrain_mime *m, int i, size_t *ret_n);

/* Starts the thresholds of graph layer i (MIME mode) from t[0..n) (n must be their count;
 * values below MIMETRAIN_T_MIN are raised to it), e.g. a larger network's, sliced. Returns
 * 0 or MIME_EINVAL. */
int mimetrain_mime_set_thresholds(struct mimetrain_mime *m, int i, const float *t, size_t n);

/* Fills *ret_model for the engine with one task, "name": the trained head and (MIME)
 * thresholds; weights are the parent's (borrowed from parent) or, fine-tuned, the net's
 * own. Everything is borrowed from m and parent; mime_model_fini() releases the task
 * array. Returns 0 or -ENOMEM. */
int mimetrain_mime_model(const struct mimetrain_mime *m, const struct mime_model *parent,
                         const char *name, struct mime_model *ret_model);

/* A checksum (FNV-1a 64) of the weights and biases of every conv/fc layer held by the net
 * (its copy of the parent), and the same over a model's views: equal values before and
 * after training mean the parent's bytes are untouched. */
uint64_t mimetrain_mime_body_checksum(const struct mimetrain_mime *m);
uint64_t mimetrain_model_checksum(const struct mime_model *model);
uint64_t mimetrain_fnv1a(const void *data, size_t n, uint64_t h); /* h = 0 starts one */

/* The threshold regulariser R = beta * sum_i exp(sign * t_i); when g is not NULL adds
 * dR/dt_i = beta * sign * exp(sign * t_i) to g[i]. Returns R. */
double mimetrain_threshold_reg(const float *t, size_t n, double beta, int sign, float *g);

struct mimetrain_eval {
	double accuracy; /* fraction */
	int n_masked;
	int masked_layer[MIME_MAX_LAYERS];
	double sparsity[MIME_MAX_LAYERS]; /* mean over samples of the zero fraction */
	double seconds;
};

/* Runs task `task` of model over set through the inference engine (the daemon's code
 * path) with `threads` engine threads. Returns 0 or the engine's error. */
int mimetrain_engine_eval(const struct mime_model *model, int task,
                          const struct mimetrain_taskset *set, int threads,
                          struct mimetrain_eval *ret_eval, struct mime_errinfo *ei);
