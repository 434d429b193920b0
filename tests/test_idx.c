// SPDX-License-Identifier: MIT
/* test_idx -- IDX reading and writing: round trips raw and gzip, every malformed case. */
#include "tests/unit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "lib/idx.h"

/* A temporary path ending in suffix; the fixture owns it and unlinks it in teardown. */
struct paths {
	char *p[4];
	int n;
};

static const char *tmp_path(struct paths *ps, const char *suffix)
{
	char *base = mime_test_tmpfile(NULL, 0), *p;

	assert_non_null(base);
	unlink(base);
	assert_true(asprintf(&p, "%s%s", base, suffix) > 0);
	free(base);
	assert_true(ps->n < 4);
	ps->p[ps->n++] = p;
	return p;
}

static int setup_paths(void **state)
{
	*state = calloc(1, sizeof(struct paths));
	return *state ? 0 : -1;
}

static int teardown_paths(void **state)
{
	struct paths *ps = *state;

	for (int i = 0; i < ps->n; i++) {
		unlink(ps->p[i]);
		free(ps->p[i]);
	}
	free(ps);
	return 0;
}

static void write_bytes(const char *path, const void *data, size_t size)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, size, f), size);
	assert_int_equal(fclose(f), 0);
}

static uint8_t *read_bytes(const char *path, size_t *ret_size)
{
	struct stat st;
	uint8_t *buf;
	FILE *f;

	assert_int_equal(stat(path, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	assert_non_null(buf);
	f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(fread(buf, 1, (size_t)st.st_size, f), (size_t)st.st_size);
	fclose(f);
	*ret_size = (size_t)st.st_size;
	return buf;
}

/* Writes a [n, rows, cols] image file of known random bytes; returns the bytes. */
static uint8_t *write_images(const char *path, uint32_t n, uint32_t rows, uint32_t cols)
{
	uint32_t dims[3] = {n, rows, cols};
	size_t size = (size_t)n * rows * cols;
	uint8_t *data = malloc(size);
	uint64_t rng = 42;

	assert_non_null(data);
	for (size_t i = 0; i < size; i++)
		data[i] = (uint8_t)mime_test_rand(&rng);
	assert_int_equal(mime_idx_write(path, 3, dims, data, NULL), 0);
	return data;
}

static void write_labels(const char *path, uint32_t n, uint8_t n_classes)
{
	uint8_t *data = malloc(n);

	assert_non_null(data);
	for (uint32_t i = 0; i < n; i++)
		data[i] = (uint8_t)(i % n_classes);
	assert_int_equal(mime_idx_write(path, 1, &n, data, NULL), 0);
	free(data);
}

static void expect_edata(const char *path, const char *needle)
{
	struct mime_errinfo ei = {0};
	struct mime_idx idx = {0};

	assert_int_equal(mime_idx_read(path, &idx, &ei), MIME_EDATA);
	assert_int_equal(ei.code, MIME_EDATA);
	assert_non_null(strstr(ei.msg, path)); /* names the file */
	if (!strstr(ei.msg, needle))
		fail_msg("message '%s' lacks '%s'", ei.msg, needle);
	assert_null(idx.data);
}

static void roundtrip(const char *path)
{
	uint8_t *want = write_images(path, 7, 5, 3);
	struct mime_idx idx = {0};

	assert_int_equal(mime_idx_read(path, &idx, NULL), 0);
	assert_int_equal(idx.ndim, 3);
	assert_int_equal(idx.dims[0], 7);
	assert_int_equal(idx.dims[1], 5);
	assert_int_equal(idx.dims[2], 3);
	assert_int_equal(idx.n_bytes, 7 * 5 * 3);
	assert_memory_equal(idx.data, want, idx.n_bytes);
	mime_idx_free(&idx);
	assert_null(idx.data);
	free(want);
}

static void test_idx_write_read_roundtrip_raw(void **state)
{
	const char *path = tmp_path(*state, "");
	uint8_t head[16];
	size_t size;
	uint8_t *bytes;

	roundtrip(path);
	bytes = read_bytes(path, &size);
	assert_int_equal(size, 16 + 7 * 5 * 3);
	memcpy(head, bytes, 16);
	const uint8_t want[16] = {0, 0, 8, 3, 0, 0, 0, 7, 0, 0, 0, 5, 0, 0, 0, 3};
	assert_memory_equal(head, want, 16);
	free(bytes);
}

static void test_idx_write_read_roundtrip_gz(void **state)
{
	const char *path = tmp_path(*state, ".gz");
	uint8_t *bytes;
	size_t size;

	roundtrip(path);
	bytes = read_bytes(path, &size);
	assert_true(size > 2);
	assert_int_equal(bytes[0], 0x1f);
	assert_int_equal(bytes[1], 0x8b);
	free(bytes);
}

static void test_idx_read_large_gz_grows_buffer(void **state)
{
	/* Above the 16 MiB first step, so the gzip path grows its buffer. */
	const char *path = tmp_path(*state, ".gz");
	uint8_t *want = write_images(path, 700, 160, 160);
	struct mime_idx idx = {0};

	assert_int_equal(mime_idx_read(path, &idx, NULL), 0);
	assert_int_equal(idx.n_bytes, (size_t)700 * 160 * 160);
	assert_memory_equal(idx.data, want, idx.n_bytes);
	mime_idx_free(&idx);
	free(want);
}

static void test_idx_read_labels(void **state)
{
	const char *path = tmp_path(*state, "");
	struct mime_idx idx = {0};

	write_labels(path, 10000, 10);
	assert_int_equal(mime_idx_read(path, &idx, NULL), 0);
	assert_int_equal(idx.ndim, 1);
	assert_int_equal(idx.dims[0], 10000);
	for (size_t i = 0; i < idx.n_bytes; i++)
		assert_true(idx.data[i] < 10);
	mime_idx_free(&idx);
	mime_idx_free(NULL);
}

static void test_idx_read_rejects_bad_magic(void **state)
{
	const char *path = tmp_path(*state, "");
	const uint8_t bad[] = {0, 1, 8, 1, 0, 0, 0, 1, 5};

	write_bytes(path, bad, sizeof(bad));
	expect_edata(path, "magic");
}

static void test_idx_read_rejects_wrong_type(void **state)
{
	const char *path = tmp_path(*state, "");
	const uint8_t bad[] = {0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0}; /* 0x0d = float */

	write_bytes(path, bad, sizeof(bad));
	expect_edata(path, "type 0x0d");
}

static void test_idx_read_rejects_bad_ndim(void **state)
{
	const char *path = tmp_path(*state, "");
	uint8_t bad[] = {0, 0, 8, 0, 0, 0, 0, 1, 7};

	write_bytes(path, bad, sizeof(bad));
	expect_edata(path, "ndim 0");
	bad[3] = 5;
	write_bytes(path, bad, sizeof(bad));
	expect_edata(path, "ndim 5");
}

static void test_idx_read_rejects_zero_dim(void **state)
{
	const char *path = tmp_path(*state, "");
	const uint8_t bad[] = {0, 0, 8, 2, 0, 0, 0, 3, 0, 0, 0, 0};

	write_bytes(path, bad, sizeof(bad));
	expect_edata(path, "dimension 1 is 0");
}

static void test_idx_read_rejects_size_mismatch(void **state)
{
	const char *path = tmp_path(*state, "");
	const uint8_t buf[8 + 4 + 1] = {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 2, 9};

	write_bytes(path, buf, sizeof(buf)); /* one data byte where dims say four */
	expect_edata(path, "header + dims say 12 + 4 = 16");

	uint8_t *want = write_images(path, 2, 2, 2);
	assert_int_equal(truncate(path, 16 + 8 + 1), 0); /* one byte too many */
	expect_edata(path, "size 25 bytes");
	assert_int_equal(truncate(path, 6), 0); /* inside the dimensions */
	expect_edata(path, "truncated header");
	assert_int_equal(truncate(path, 2), 0); /* inside the magic */
	expect_edata(path, "truncated header");
	assert_int_equal(truncate(path, 0), 0);
	expect_edata(path, "truncated header");
	free(want);
}

static void test_idx_read_rejects_huge_dims(void **state)
{
	const char *path = tmp_path(*state, "");
	const uint8_t bad[] = {0, 0, 8, 3, 0, 1, 0, 0, 0, 0, 0x10, 0, 0, 0, 0x10, 0, 1, 2, 3};

	write_bytes(path, bad, sizeof(bad)); /* 65536 * 4096 * 4096 bytes */
	expect_edata(path, "cap");
}

static void test_idx_read_rejects_truncated_gzip(void **state)
{
	const char *path = tmp_path(*state, ".gz");
	uint8_t *want = write_images(path, 20, 10, 10);
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	/* Cut the 8-byte trailer (CRC32 + ISIZE) only: all data present, stream unfinished. */
	assert_int_equal(truncate(path, st.st_size - 4), 0);
	expect_edata(path, "gzip stream truncated");
	/* Cut into the deflate data. */
	assert_int_equal(truncate(path, st.st_size / 2), 0);
	expect_edata(path, "gzip stream truncated");
	free(want);
}

static void test_idx_read_rejects_corrupt_gzip(void **state)
{
	const char *path = tmp_path(*state, ".gz");
	uint8_t *want = write_images(path, 20, 10, 10), *bytes;
	size_t size;

	bytes = read_bytes(path, &size);
	bytes[size - 8] ^= 0xff; /* the CRC32 */
	write_bytes(path, bytes, size);
	expect_edata(path, "gzip stream corrupt");
	free(bytes);
	free(want);
}

static void write_gz(const char *path, const void *data, size_t size)
{
	gzFile gz = gzopen(path, "wb");

	assert_non_null(gz);
	assert_int_equal(gzwrite(gz, data, (unsigned)size), (int)size);
	assert_int_equal(gzclose(gz), Z_OK);
}

static void test_idx_read_rejects_gzip_size_mismatch(void **state)
{
	const char *path = tmp_path(*state, ".gz");
	uint8_t buf[8 + 11] = {0, 0, 8, 1, 0, 0, 0, 10}; /* dims say 10 data bytes */

	write_gz(path, buf, sizeof(buf)); /* a valid stream with 11 */
	expect_edata(path, "trailing bytes");
	write_gz(path, buf, sizeof(buf) - 2); /* and with 9 */
	expect_edata(path, "truncated data: dims say 10 bytes, gzip stream has 9");
}

static void test_idx_read_missing_file(void **state)
{
	struct mime_errinfo ei = {0};
	struct mime_idx idx = {0};

	assert_int_equal(mime_idx_read("/nonexistent/mime/x.idx", &idx, &ei), -ENOENT);
	assert_non_null(strstr(ei.msg, "/nonexistent/mime/x.idx"));
}

static void test_idx_write_rejects_bad_args(void **state)
{
	const char *path = tmp_path(*state, "");
	uint32_t dims[5] = {1, 1, 1, 1, 1}, zero[2] = {3, 0};
	uint8_t data[1] = {0};

	assert_int_equal(mime_idx_write(path, 0, dims, data, NULL), MIME_EINVAL);
	assert_int_equal(mime_idx_write(path, 5, dims, data, NULL), MIME_EINVAL);
	assert_int_equal(mime_idx_write(path, 2, zero, data, NULL), MIME_EINVAL);
	assert_int_equal(mime_idx_write("/nonexistent/mime/x.idx", 1, dims, data, NULL), -ENOENT);
}

static void test_idx_read_pair_ok(void **state)
{
	const char *img = tmp_path(*state, ".gz"), *lab = tmp_path(*state, "");
	struct mime_idx i = {0}, l = {0};
	uint8_t *want = write_images(img, 30, 4, 4);

	write_labels(lab, 30, 10);
	assert_int_equal(mime_idx_read_pair(img, lab, 10, &i, &l, NULL), 0);
	assert_int_equal(i.dims[0], 30);
	assert_int_equal(l.dims[0], 30);
	assert_memory_equal(i.data, want, 30 * 16);
	mime_idx_free(&i);
	mime_idx_free(&l);
	free(want);
}

static void test_idx_read_pair_rejects_count_mismatch(void **state)
{
	const char *img = tmp_path(*state, ""), *lab = tmp_path(*state, "");
	struct mime_idx i = {0}, l = {0};
	struct mime_errinfo ei = {0};
	uint8_t *want = write_images(img, 30, 4, 4);

	write_labels(lab, 29, 10);
	assert_int_equal(mime_idx_read_pair(img, lab, 10, &i, &l, &ei), MIME_EDATA);
	assert_non_null(strstr(ei.msg, "30 images"));
	assert_non_null(strstr(ei.msg, "29 labels"));
	assert_null(i.data);
	assert_null(l.data);
	free(want);
}

static void test_idx_read_pair_rejects_label_out_of_range(void **state)
{
	const char *img = tmp_path(*state, ""), *lab = tmp_path(*state, "");
	struct mime_idx i = {0}, l = {0};
	struct mime_errinfo ei = {0};
	uint8_t *want = write_images(img, 30, 4, 4);

	write_labels(lab, 30, 10);
	assert_int_equal(mime_idx_read_pair(img, lab, 9, &i, &l, &ei), MIME_EDATA);
	assert_non_null(strstr(ei.msg, "label 9 at index 9"));
	/* n_classes 0: no range check. */
	assert_int_equal(mime_idx_read_pair(img, lab, 0, &i, &l, NULL), 0);
	mime_idx_free(&i);
	mime_idx_free(&l);
	free(want);
}

static void test_idx_read_pair_rejects_wrong_ndim(void **state)
{
	const char *img = tmp_path(*state, ""), *lab = tmp_path(*state, "");
	struct mime_idx i = {0}, l = {0};
	struct mime_errinfo ei = {0};
	uint8_t *want = write_images(img, 30, 4, 4);

	/* Labels file where the images go and the other way round. */
	write_labels(lab, 30, 10);
	assert_int_equal(mime_idx_read_pair(lab, img, 10, &i, &l, &ei), MIME_EDATA);
	assert_non_null(strstr(ei.msg, "images need 3 dims"));
	assert_int_equal(mime_idx_read_pair(img, img, 10, &i, &l, &ei), MIME_EDATA);
	assert_non_null(strstr(ei.msg, "labels need 1 dim"));
	free(want);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup_paths, teardown_paths)
	const struct CMUnitTest tests[] = {
		T(test_idx_write_read_roundtrip_raw),
		T(test_idx_write_read_roundtrip_gz),
		T(test_idx_read_large_gz_grows_buffer),
		T(test_idx_read_labels),
		T(test_idx_read_rejects_bad_magic),
		T(test_idx_read_rejects_wrong_type),
		T(test_idx_read_rejects_bad_ndim),
		T(test_idx_read_rejects_zero_dim),
		T(test_idx_read_rejects_size_mismatch),
		T(test_idx_read_rejects_huge_dims),
		T(test_idx_read_rejects_truncated_gzip),
		T(test_idx_read_rejects_corrupt_gzip),
		T(test_idx_read_rejects_gzip_size_mismatch),
		T(test_idx_read_missing_file),
		T(test_idx_write_rejects_bad_args),
		T(test_idx_read_pair_ok),
		T(test_idx_read_pair_rejects_count_mismatch),
		T(test_idx_read_pair_rejects_label_out_of_range),
		T(test_idx_read_pair_rejects_wrong_ndim),
	};
#undef T
	return cmocka_run_group_tests_name("idx", tests, NULL, NULL);
}
