// SPDX-License-Identifier: MIT
/* data_convert -- the child tasks' source data to labelled uint8 digit sets, and the
 * stratified seeded split (formats and rules in data_convert.h and docs/DATA.md).
 * Ownership: digit sets own their arrays; nothing else outlives a call.
 * Threads: reentrant. */
#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/idx.h"
#include "train/data_convert.h"

#define MNIST_PIXELS (MIMETRAIN_MNIST_SIDE * MIMETRAIN_MNIST_SIDE)
#define MAX_SIDE     4096
#define MAX_CLASSES  256

int mimetrain_digitset_init(struct mimetrain_digitset *set, int rows, int cols)
{
	if (rows < 1 || rows > MAX_SIDE || cols < 1 || cols > MAX_SIDE)
		return MIME_EINVAL;
	memset(set, 0, sizeof(*set));
	set->rows = rows;
	set->cols = cols;
	return 0;
}

void mimetrain_digitset_fini(struct mimetrain_digitset *set)
{
	if (!set)
		return;
	free(set->pixels);
	free(set->labels);
	memset(set, 0, sizeof(*set));
}

/* Makes room for at least cap images (at least one, so arrays are never NULL). */
static int digitset_reserve(struct mimetrain_digitset *set, size_t cap)
{
	size_t image_bytes = (size_t)set->rows * (size_t)set->cols;
	uint8_t *p, *l;

	if (cap < 1)
		cap = 1;
	if (cap <= (size_t)set->cap)
		return 0;
	if (cap > INT_MAX)
		return MIME_ETOOBIG;
	if (cap > SIZE_MAX / image_bytes)
		return -ENOMEM;
	p = realloc(set->pixels, cap * image_bytes);
	if (!p)
		return -ENOMEM;
	set->pixels = p;
	l = realloc(set->labels, cap);
	if (!l)
		return -ENOMEM;
	set->labels = l;
	set->cap = (int)cap;
	return 0;
}

int mimetrain_digitset_append(struct mimetrain_digitset *set, const uint8_t *pixels, uint8_t label)
{
	size_t image_bytes = (size_t)set->rows * (size_t)set->cols;
	int r;

	if (set->n == set->cap) {
		size_t cap = set->cap < 64 ? 64 : 2 * (size_t)set->cap;

		if (cap > INT_MAX)
			cap = INT_MAX;
		if (set->n == INT_MAX)
			return MIME_ETOOBIG;
		r = digitset_reserve(set, cap);
		if (r < 0)
			return r;
	}
	memcpy(set->pixels + (size_t)set->n * image_bytes, pixels, image_bytes);
	set->labels[set->n++] = label;
	return 0;
}

void mimetrain_digitset_count(const struct mimetrain_digitset *set, int n_classes, int *ret_counts)
{
	for (int c = 0; c < n_classes; c++)
		ret_counts[c] = 0;
	for (int i = 0; i < set->n; i++)
		if (set->labels[i] < n_classes)
			ret_counts[set->labels[i]]++;
}

/* --- mnist JSON ------------------------------------------------------------------------ */

/* Converts the numbers vals[0..n) (n a multiple of 784) to digits appended to set; index0
 * is the first value's index in the file, for messages. */
static int mnist_append_values(json_t *const *vals, size_t n, size_t index0, const char *name,
                               uint8_t label, struct mimetrain_digitset *set,
                               struct mime_errinfo *ei)
{
	uint8_t digit[MNIST_PIXELS];
	int r;

	for (size_t i = 0; i < n; i += MNIST_PIXELS) {
		for (size_t k = 0; k < MNIST_PIXELS; k++) {
			const json_t *v = vals[i + k];
			double x;

			if (!json_is_number(v))
				return mime_errinfo_set(ei, MIME_EDATA,
				                        "'%s': value %zu is not a number", name,
				                        index0 + i + k);
			x = json_number_value(v);
			if (!(x >= 0.0 && x <= 1.0))
				return mime_errinfo_set(ei, MIME_EDATA,
				                        "'%s': value %zu is %g, outside [0,1]",
				                        name, index0 + i + k, x);
			digit[k] = (uint8_t)lround(x * 255.0);
		}
		r = mimetrain_digitset_append(set, digit, label);
		if (r < 0)
			return mime_errinfo_set(ei, r, "'%s': %s", name, mime_strerror(r));
	}
	return 0;
}

/* The values of a JSON array as a C array (jansson keeps them contiguous internally, but
 * only the accessor is public). */
static json_t **mnist_array_items(const json_t *a, size_t n)
{
	json_t **vals = malloc((n ? n : 1) * sizeof(*vals));

	if (!vals)
		return NULL;
	for (size_t i = 0; i < n; i++)
		vals[i] = json_array_get(a, i);
	return vals;
}

static int mnist_parse_flat(const json_t *a, const char *name, uint8_t label,
                            struct mimetrain_digitset *set, struct mime_errinfo *ei)
{
	size_t n = json_array_size(a);
	json_t **vals;
	int r;

	if (n % MNIST_PIXELS != 0)
		return mime_errinfo_set(ei, MIME_EDATA,
		                        "'%s': %zu values, not a multiple of %d (28x28 digits)",
		                        name, n, MNIST_PIXELS);
	r = digitset_reserve(set, (size_t)set->n + n / MNIST_PIXELS);
	if (r < 0)
		return mime_errinfo_set(ei, r, "'%s': %s", name, mime_strerror(r));
	vals = mnist_array_items(a, n);
	if (!vals)
		return mime_errinfo_set(ei, -ENOMEM, "'%s': %s", name, mime_strerror(-ENOMEM));
	r = mnist_append_values(vals, n, 0, name, label, set, ei);
	free(vals);
	return r;
}

static int mnist_parse_nested(const json_t *a, const char *name, uint8_t label,
                              struct mimetrain_digitset *set, struct mime_errinfo *ei)
{
	size_t n = json_array_size(a);
	json_t **vals;
	int r;

	r = digitset_reserve(set, (size_t)set->n + n);
	if (r < 0)
		return mime_errinfo_set(ei, r, "'%s': %s", name, mime_strerror(r));
	for (size_t d = 0; d < n; d++) {
		const json_t *digit = json_array_get(a, d);

		if (!json_is_array(digit) || json_array_size(digit) != MNIST_PIXELS)
			return mime_errinfo_set(ei, MIME_EDATA,
			                        "'%s': digit %zu is not an array of %d values",
			                        name, d, MNIST_PIXELS);
		vals = mnist_array_items(digit, MNIST_PIXELS);
		if (!vals)
			return mime_errinfo_set(ei, -ENOMEM, "'%s': %s", name,
			                        mime_strerror(-ENOMEM));
		r = mnist_append_values(vals, MNIST_PIXELS, d * MNIST_PIXELS, name, label, set, ei);
		free(vals);
		if (r < 0)
			return r;
	}
	return 0;
}

int mimetrain_mnist_json_parse(const char *text, size_t len, const char *name, uint8_t label,
                               struct mimetrain_digitset *set, struct mime_errinfo *ei)
{
	const json_t *a;
	json_t *root;
	json_error_t jerr;
	int n0 = set->n, r;

	if (set->rows != MIMETRAIN_MNIST_SIDE || set->cols != MIMETRAIN_MNIST_SIDE)
		return mime_errinfo_set(ei, MIME_EINVAL,
		                        "'%s': the set holds %dx%d images, not 28x28", name,
		                        set->rows, set->cols);
	root = json_loadb(text, len, 0, &jerr);
	if (!root)
		return mime_errinfo_set(ei, MIME_EDATA, "'%s': not JSON: line %d column %d: %s",
		                        name, jerr.line, jerr.column, jerr.text);
	/* The package's shape is {"data": [...]}; a bare array is accepted too (jansson
	 * refuses any other top level). */
	a = json_is_object(root) ? json_object_get(root, "data") : root;
	if (!json_is_array(a)) {
		r = mime_errinfo_set(ei, MIME_EDATA, "'%s': object without a \"data\" array", name);
		goto out;
	}
	if (json_array_size(a) == 0) {
		r = mime_errinfo_set(ei, MIME_EDATA, "'%s': no digits (empty array)", name);
		goto out;
	}
	if (json_is_array(json_array_get(a, 0)))
		r = mnist_parse_nested(a, name, label, set, ei);
	else
		r = mnist_parse_flat(a, name, label, set, ei);
out:
	if (r < 0)
		set->n = n0;
	json_decref(root);
	return r;
}

/* Reads a whole file (at most 256 MiB) into a malloc'ed buffer. */
static int read_file(const char *path, char **ret_text, size_t *ret_len, struct mime_errinfo *ei)
{
	size_t cap = 1 << 20, len = 0, n;
	char *text = malloc(cap), *p;
	FILE *f;
	int r;

	if (!text)
		return mime_errinfo_set(ei, -ENOMEM, "'%s': %s", path, mime_strerror(-ENOMEM));
	f = fopen(path, "rb");
	if (!f) {
		r = -errno;
		free(text);
		return mime_errinfo_set(ei, r, "'%s': %s", path, mime_strerror(r));
	}
	while ((n = fread(text + len, 1, cap - len, f)) > 0) {
		len += n;
		if (len < cap)
			continue;
		if (cap >= (size_t)256 << 20) {
			r = mime_errinfo_set(ei, MIME_ETOOBIG, "'%s': larger than 256 MiB", path);
			goto out_free;
		}
		p = realloc(text, 2 * cap);
		if (!p) {
			r = mime_errinfo_set(ei, -ENOMEM, "'%s': %s", path, mime_strerror(-ENOMEM));
			goto out_free;
		}
		text = p;
		cap *= 2;
	}
	if (ferror(f)) {
		r = mime_errinfo_set(ei, -EIO, "'%s': read error", path);
		goto out_free;
	}
	fclose(f);
	*ret_text = text;
	*ret_len = len;
	return 0;

out_free:
	fclose(f);
	free(text);
	return r;
}

int mimetrain_mnist_json_load(const char *dir, struct mimetrain_digitset *ret_set,
                              struct mime_errinfo *ei)
{
	struct mimetrain_digitset set;
	char path[PATH_MAX], *text = NULL;
	size_t len = 0;
	int r;

	mimetrain_digitset_init(&set, MIMETRAIN_MNIST_SIDE, MIMETRAIN_MNIST_SIDE);
	for (int d = 0; d < 10; d++) {
		if (snprintf(path, sizeof(path), "%s/%d.json", dir, d) >= (int)sizeof(path)) {
			r = mime_errinfo_set(ei, -ENAMETOOLONG, "'%s': path too long", dir);
			goto out_set;
		}
		r = read_file(path, &text, &len, ei);
		if (r < 0)
			goto out_set;
		r = mimetrain_mnist_json_parse(text, len, path, (uint8_t)d, &set, ei);
		free(text);
		if (r < 0)
			goto out_set;
	}
	*ret_set = set;
	return 0;

out_set:
	mimetrain_digitset_fini(&set);
	return r;
}

/* --- digit sheets ---------------------------------------------------------------------- */

int mimetrain_sheet_cut(const struct mime_image *img, const struct mimetrain_sheet_layout *layout,
                        struct mimetrain_digitset *ret_set, struct mime_errinfo *ei)
{
	const struct mimetrain_sheet_layout *l = layout;
	struct mimetrain_digitset set;
	uint8_t *digit;
	int w, h, ch = img->channels, rows_per_class, r;

	if (l->cell < 1 || l->cell > MAX_SIDE || l->cols < 1 || l->cols > MAX_SIDE || l->rows < 1 ||
	    l->rows > MAX_SIDE || l->n_classes < 1 || l->n_classes > MAX_CLASSES ||
	    l->rows % l->n_classes != 0)
		return mime_errinfo_set(ei, MIME_EINVAL,
		                        "sheet layout: %dx%d cells of %d pixels for %d classes "
		                        "(each 1..4096, classes 1..256 dividing the rows)",
		                        l->cols, l->rows, l->cell, l->n_classes);
	w = l->cols * l->cell;
	h = l->rows * l->cell;
	if (img->width != w || img->height != h)
		return mime_errinfo_set(ei, MIME_EDATA,
		                        "sheet is %dx%d pixels, expected %dx%d (%d x %d cells of "
		                        "%dx%d)",
		                        img->width, img->height, w, h, l->cols, l->rows, l->cell,
		                        l->cell);
	if (ch != 1 && ch != 3)
		return mime_errinfo_set(ei, MIME_EDATA, "sheet has %d channels, expected gray", ch);
	if (ch == 3)
		for (size_t i = 0; i < (size_t)w * (size_t)h; i++) {
			const float *px = img->pixels + 3 * i;

			if (px[0] != px[1] || px[0] != px[2])
				return mime_errinfo_set(ei, MIME_EDATA,
				                        "sheet is a colour image (pixel %zu,%zu), "
				                        "expected gray",
				                        i % (size_t)w, i / (size_t)w);
		}

	r = mimetrain_digitset_init(&set, l->cell, l->cell);
	if (r < 0)
		return mime_errinfo_set(ei, r, "sheet: bad cell size %d", l->cell);
	digit = malloc((size_t)l->cell * (size_t)l->cell);
	r = digit ? digitset_reserve(&set, (size_t)l->cols * (size_t)l->rows) : -ENOMEM;
	if (r < 0) {
		mime_errinfo_set(ei, r, "sheet: %s", mime_strerror(r));
		goto out_digit;
	}
	rows_per_class = l->rows / l->n_classes;
	for (int cy = 0; cy < l->rows; cy++)
		for (int cx = 0; cx < l->cols; cx++) {
			for (int y = 0; y < l->cell; y++)
				for (int x = 0; x < l->cell; x++) {
					size_t px = (size_t)(cy * l->cell + y) * (size_t)w +
					            (size_t)(cx * l->cell + x);
					float v = img->pixels[px * (size_t)ch];

					v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
					digit[y * l->cell + x] = (uint8_t)lroundf(v * 255.0f);
				}
			r = mimetrain_digitset_append(&set, digit, (uint8_t)(cy / rows_per_class));
			if (r < 0) {
				mime_errinfo_set(ei, r, "sheet: %s", mime_strerror(r));
				goto out_digit;
			}
		}
	free(digit);
	*ret_set = set;
	return 0;

out_digit:
	free(digit);
	mimetrain_digitset_fini(&set);
	return r;
}

/* --- the split ------------------------------------------------------------------------- */

uint64_t mimetrain_splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [0, bound), bound >= 1: draws below 2^64 mod bound are rejected, so every
 * residue has the same number of accepted draws. */
static uint64_t rng_below(uint64_t *state, uint64_t bound)
{
	uint64_t threshold = (0 - bound) % bound, x;

	do
		x = mimetrain_splitmix64(state);
	while (x < threshold);
	return x % bound;
}

/* Fisher-Yates: for i = n-1 down to 1, swap a[i] with a[j], j uniform in [0, i]. */
static void shuffle(int *a, size_t n, uint64_t *state)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = (size_t)rng_below(state, i);
		int t = a[i - 1];

		a[i - 1] = a[j];
		a[j] = t;
	}
}

/* Copies the images set[idx[0..n)] into a new set. */
static int gather(const struct mimetrain_digitset *set, const int *idx, size_t n,
                  struct mimetrain_digitset *ret_out)
{
	size_t image_bytes = (size_t)set->rows * (size_t)set->cols;
	struct mimetrain_digitset out;
	int r;

	mimetrain_digitset_init(&out, set->rows, set->cols);
	r = digitset_reserve(&out, n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		memcpy(out.pixels + i * image_bytes, set->pixels + (size_t)idx[i] * image_bytes,
		       image_bytes);
		out.labels[i] = set->labels[idx[i]];
	}
	out.n = (int)n;
	*ret_out = out;
	return 0;
}

int mimetrain_split_stratified(const struct mimetrain_digitset *set, int n_classes,
                               unsigned train_num, unsigned train_den, uint64_t seed,
                               struct mimetrain_digitset *ret_train,
                               struct mimetrain_digitset *ret_test, struct mime_errinfo *ei)
{
	int count[MAX_CLASSES], n_train[MAX_CLASSES], start[MAX_CLASSES];
	uint64_t rem[MAX_CLASSES], total, target, assigned = 0, state = seed;
	struct mimetrain_digitset train;
	int *order, *tr, *te;
	size_t n = (size_t)set->n, ntr = 0, nte = 0;
	int r;

	if (n_classes < 1 || n_classes > MAX_CLASSES)
		return mime_errinfo_set(ei, MIME_EINVAL, "split: %d classes, want 1..%d", n_classes,
		                        MAX_CLASSES);
	if (train_den == 0 || train_num == 0 || train_num >= train_den)
		return mime_errinfo_set(ei, MIME_EINVAL, "split: train fraction %u/%u not in (0,1)",
		                        train_num, train_den);
	for (size_t i = 0; i < n; i++)
		if (set->labels[i] >= n_classes)
			return mime_errinfo_set(ei, MIME_EINVAL,
			                        "split: image %zu has label %d >= %d", i,
			                        set->labels[i], n_classes);
	mimetrain_digitset_count(set, n_classes, count);
	for (int c = 0; c < n_classes; c++)
		if (count[c] == 0)
			return mime_errinfo_set(ei, MIME_EINVAL, "split: class %d has no image", c);

	/* Largest remainder: floor per class, the rest to the largest remainders. */
	total = n;
	target = (2 * total * train_num + train_den) / (2 * (uint64_t)train_den);
	for (int c = 0; c < n_classes; c++) {
		n_train[c] = (int)((uint64_t)count[c] * train_num / train_den);
		rem[c] = (uint64_t)count[c] * train_num % train_den;
		assigned += (uint64_t)n_train[c];
	}
	for (; assigned < target; assigned++) {
		int best = 0;

		for (int c = 1; c < n_classes; c++)
			if (rem[c] > rem[best])
				best = c;
		assert(rem[best] > 0); /* sum of rem / den >= target - floors */
		n_train[best]++;
		rem[best] = 0;
	}

	order = malloc(3 * (n ? n : 1) * sizeof(*order));
	if (!order)
		return mime_errinfo_set(ei, -ENOMEM, "split: %s", mime_strerror(-ENOMEM));
	tr = order + n;
	te = tr + n;
	/* Indices grouped by class, each class in set order (a stable counting sort). */
	start[0] = 0;
	for (int c = 1; c < n_classes; c++)
		start[c] = start[c - 1] + count[c - 1];
	for (size_t i = 0; i < n; i++)
		order[start[set->labels[i]]++] = (int)i;
	for (int c = 0; c < n_classes; c++) {
		int *cls = order + start[c] - count[c];

		shuffle(cls, (size_t)count[c], &state);
		for (int k = 0; k < count[c]; k++) {
			if (k < n_train[c])
				tr[ntr++] = cls[k];
			else
				te[nte++] = cls[k];
		}
	}
	shuffle(tr, ntr, &state);
	shuffle(te, nte, &state);

	r = gather(set, tr, ntr, &train);
	if (r < 0)
		goto out_order;
	r = gather(set, te, nte, ret_test);
	if (r < 0) {
		mimetrain_digitset_fini(&train);
		goto out_order;
	}
	*ret_train = train;
	free(order);
	return 0;

out_order:
	free(order);
	return mime_errinfo_set(ei, r, "split: %s", mime_strerror(r));
}

/* --- output ---------------------------------------------------------------------------- */

static int write_set(const struct mimetrain_digitset *set, const char *dir, const char *prefix,
                     struct mime_errinfo *ei)
{
	uint32_t dims[3] = {(uint32_t)set->n, (uint32_t)set->rows, (uint32_t)set->cols};
	static const uint8_t none = 0;
	char path[PATH_MAX];
	int r;

	if (snprintf(path, sizeof(path), "%s/%s-images-idx3-ubyte.gz", dir, prefix) >=
	    (int)sizeof(path))
		return mime_errinfo_set(ei, -ENAMETOOLONG, "'%s': path too long", dir);
	r = mime_idx_write(path, 3, dims, set->pixels ? set->pixels : &none, ei);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
	return mime_idx_write(path, 1, dims, set->labels ? set->labels : &none, ei);
}

int mimetrain_digitset_write_idx(const struct mimetrain_digitset *train,
                                 const struct mimetrain_digitset *test, const char *dir,
                                 struct mime_errinfo *ei)
{
	int r = write_set(train, dir, "train", ei);

	return r < 0 ? r : write_set(test, dir, "t10k", ei);
}
