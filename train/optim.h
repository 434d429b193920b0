/* SPDX-License-Identifier: MIT */
/* optim -- optimizers over a net's params: SGD with momentum (optionally Nesterov) and Adam,
 * L2 weight decay on params marked decay (conv/fc weights), and learning-rate schedules
 * (constant, cosine, step) with an optional linear warm-up, all as functions of the step.
 *
 * SGD (PyTorch's convention): g += wd * w; v = mu * v + g; w -= lr * (nesterov ? g + mu * v
 * : v). Adam: g += wd * w; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
 * w -= lr * mhat / (sqrt(vhat) + eps).
 *
 * Ownership: an optimizer owns its state (one or two floats per parameter) and borrows the
 * param array, which must outlive it.
 * Threads: one thread at a time. */
#pragma once

#include <stdint.h>
#include <stdio.h>

#include "lib/error.h"
#include "train/net.h"

enum mimetrain_optimizer { MIMETRAIN_SGD, MIMETRAIN_ADAM };
enum mimetrain_schedule { MIMETRAIN_LR_CONSTANT, MIMETRAIN_LR_COSINE, MIMETRAIN_LR_STEP };

struct mimetrain_optim_config {
	enum mimetrain_optimizer kind;
	float lr;           /* peak learning rate */
	float momentum;     /* SGD; Adam's beta1 is 0.9 and beta2 0.999 */
	int nesterov;       /* SGD */
	float weight_decay; /* on params with decay set */
	enum mimetrain_schedule schedule;
	long total_steps;  /* cosine: decays to lr_min at total_steps */
	long warmup_steps; /* linear warm-up from lr/warmup_steps */
	float lr_min;      /* cosine floor */
	long step_every;   /* step schedule: multiply by step_gamma every step_every steps */
	float step_gamma;
};

struct mimetrain_optim;

/* Returns 0, MIME_EINVAL (bad config) or -ENOMEM. */
int mimetrain_optim_create(const struct mimetrain_optim_config *cfg, struct mimetrain_param *params,
                           int n_params, struct mimetrain_optim **ret_optim,
                           struct mime_errinfo *ei);
void mimetrain_optim_destroy(struct mimetrain_optim *o); /* NULL is a no-op */

/* The learning rate the schedule gives for step (0-based). */
float mimetrain_optim_lr(const struct mimetrain_optim_config *cfg, long step);

/* Applies one update from the params' gradients; returns the learning rate used. */
float mimetrain_optim_step(struct mimetrain_optim *o);
long mimetrain_optim_steps(const struct mimetrain_optim *o); /* steps taken so far */

/* Serialise the step count and state, or read them back (same config and params). */
int mimetrain_optim_save(const struct mimetrain_optim *o, FILE *f);
int mimetrain_optim_load(struct mimetrain_optim *o, FILE *f, struct mime_errinfo *ei);
