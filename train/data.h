/* SPDX-License-Identifier: MIT */
/* data -- a labelled image dataset in memory (uint8 pixels, from IDX files or arrays) and
 * minibatches from it: seeded shuffling, uint8 -> float normalisation with the task's mean
 * and std, and augmentation (random shift with zero padding, horizontal flip).
 *
 * Augmentation: a random crop of the image padded by `pad` pixels on every side is a shift by
 * (dy, dx) in [-pad, pad]^2 where uncovered pixels take the raw value 0 (the background of
 * MNIST-like data) before normalisation; a flip mirrors columns with probability 1/2.
 *
 * Ownership: a dataset owns its pixels and labels; mimetrain_data_fini() releases them.
 * Threads: read-only after loading; mimetrain_data_batch() only writes the caller's buffers
 * and rng. */
#pragma once

#include <stdint.h>

#include "lib/error.h"
#include "train/net.h"

struct mimetrain_data {
	int n;       /* images */
	int c, h, w; /* per image; pixels are [n][c][h][w] */
	uint8_t *pixels;
	uint8_t *labels;
	int n_classes;
};

struct mimetrain_augment {
	int pad;   /* random shift of up to pad pixels; 0 = none */
	int hflip; /* 1: mirror with probability 1/2 */
};

/* Loads images and labels IDX files (gzip or raw; 3-dim images are 1 channel), keeping the
 * first `limit` samples when limit > 0. Fails like mime_idx_read_pair(). */
int mimetrain_data_load(const char *images, const char *labels, int n_classes, int limit,
                        struct mimetrain_data *ret_data, struct mime_errinfo *ei);
/* Takes copies of n images [n][c][h][w] and labels. Returns 0, MIME_EINVAL or -ENOMEM. */
int mimetrain_data_from_arrays(int n, int c, int h, int w, const uint8_t *pixels,
                               const uint8_t *labels, int n_classes,
                               struct mimetrain_data *ret_data);
void mimetrain_data_fini(struct mimetrain_data *d);

/* Mean and standard deviation of all pixels scaled to [0, 1] (single-channel statistics). */
void mimetrain_data_stats(const struct mimetrain_data *d, float *ret_mean, float *ret_std);

/* A seeded Fisher-Yates permutation of 0..n-1 into perm. */
void mimetrain_shuffle(int *perm, int n, struct mimetrain_rng *rng);

/* Fills x [count][c][h][w] with (p / 255 - mean) / std for samples idx[0..count-1] (after
 * augmentation when aug is not NULL, drawing from rng) and y with their labels. */
void mimetrain_data_batch(const struct mimetrain_data *d, const int *idx, int count, float mean,
                          float std, const struct mimetrain_augment *aug, struct mimetrain_rng *rng,
                          float *x, uint8_t *y);
