// SPDX-License-Identifier: MIT
/* test_image -- PNG/PGM/PPM decoding of every kind we claim, refusal of corrupt and huge
 * inputs, preprocessing geometry and arithmetic, and PNG writing. PNGs are made here with
 * libpng's writer, so each test states the exact samples it expects back. */
#include "tests/unit.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "lib/image.h"

#define EPS 1e-6f

/* --- making PNGs -------------------------------------------------------------------- */

struct membuf {
	uint8_t *p;
	size_t n, cap;
};

static void mem_write(png_structp png, png_bytep data, size_t n)
{
	struct membuf *m = png_get_io_ptr(png);

	if (m->n + n > m->cap) {
		m->cap = (m->n + n) * 2;
		m->p = realloc(m->p, m->cap);
		assert_non_null(m->p);
	}
	memcpy(m->p + m->n, data, n);
	m->n += n;
}

static void mem_flush(png_structp png)
{
}

struct png_desc {
	int width, height, color, depth, interlace;
	const uint8_t *raw; /* rows as libpng packs them: MSB first, 16 bit big-endian */
	const png_color *palette;
	int n_palette;
	const uint8_t *trns; /* palette alphas */
	int n_trns;
	const png_color_16 *trns_color; /* gray / RGB key colour */
};

static int color_channels(int color)
{
	switch (color) {
	case PNG_COLOR_TYPE_GRAY:
	case PNG_COLOR_TYPE_PALETTE:
		return 1;
	case PNG_COLOR_TYPE_GRAY_ALPHA:
		return 2;
	case PNG_COLOR_TYPE_RGB:
		return 3;
	default:
		return 4;
	}
}

static uint8_t *encode_png(const struct png_desc *d, size_t *ret_size)
{
	struct membuf m = {0};
	size_t rowbytes = ((size_t)d->width * color_channels(d->color) * d->depth + 7) / 8;
	png_bytep *rows = calloc(d->height, sizeof(*rows));
	png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
	png_infop info = png_create_info_struct(png);

	assert_non_null(rows);
	assert_non_null(info);
	if (setjmp(png_jmpbuf(png)))
		fail_msg("libpng could not write the test image");
	png_set_write_fn(png, &m, mem_write, mem_flush);
	png_set_IHDR(png, info, d->width, d->height, d->depth, d->color, d->interlace,
	             PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	if (d->palette)
		png_set_PLTE(png, info, d->palette, d->n_palette);
	if (d->trns || d->trns_color)
		png_set_tRNS(png, info, d->trns, d->n_trns, d->trns_color);
	png_write_info(png, info);
	for (int y = 0; y < d->height; y++)
		rows[y] = (png_bytep)d->raw + (size_t)y * rowbytes;
	png_write_image(png, rows); /* handles the Adam7 passes itself */
	png_write_end(png, NULL);
	png_destroy_write_struct(&png, &info);
	free(rows);
	*ret_size = m.n;
	return m.p;
}

/* Decodes d and compares with want (h * w * channels floats). */
static void check_png(const struct png_desc *d, int channels, const float *want)
{
	struct mime_errinfo ei = {0};
	struct mime_image img = {0};
	size_t size;
	uint8_t *png = encode_png(d, &size);
	int r = mime_image_decode(png, size, &img, &ei);

	if (r != 0)
		fail_msg("decode: %d %s", r, ei.msg);
	assert_int_equal(img.width, d->width);
	assert_int_equal(img.height, d->height);
	assert_int_equal(img.channels, channels);
	for (int i = 0; i < d->width * d->height * channels; i++)
		if (fabsf(img.pixels[i] - want[i]) > EPS)
			fail_msg("sample %d: got %.7f, want %.7f", i, img.pixels[i], want[i]);
	mime_image_free(&img);
	assert_null(img.pixels);
	free(png);
}

static void test_image_decode_png_gray8(void **state)
{
	const uint8_t raw[] = {0, 51, 102, 153, 204, 255};
	const struct png_desc d = {
		.width = 3, .height = 2, .color = PNG_COLOR_TYPE_GRAY, .depth = 8, .raw = raw};
	const float want[] = {0, 0.2f, 0.4f, 0.6f, 0.8f, 1};

	check_png(&d, 1, want);
}

static void test_image_decode_png_gray16(void **state)
{
	const uint8_t raw[] = {0x00, 0x00, 0xff, 0xff, 0x80, 0x00, 0x03, 0xe8};
	const struct png_desc d = {
		.width = 2, .height = 2, .color = PNG_COLOR_TYPE_GRAY, .depth = 16, .raw = raw};
	const float want[] = {0, 1, 32768 / 65535.0f, 1000 / 65535.0f};

	check_png(&d, 1, want);
}

static void test_image_decode_png_gray_low_depths(void **state)
{
	/* 1 bit: 10 x 2, MSB first, rows padded to whole bytes. */
	const uint8_t raw1[] = {0xb0, 0x40, 0xff, 0xc0};
	const struct png_desc d1 = {
		.width = 10, .height = 2, .color = PNG_COLOR_TYPE_GRAY, .depth = 1, .raw = raw1};
	const float want1[] = {1, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
	/* 2 bit: 0 1 2 3; 4 bit: 0 15 7. */
	const uint8_t raw2[] = {0x1b}, raw4[] = {0x0f, 0x70};
	const struct png_desc d2 = {
		.width = 4, .height = 1, .color = PNG_COLOR_TYPE_GRAY, .depth = 2, .raw = raw2};
	const struct png_desc d4 = {
		.width = 3, .height = 1, .color = PNG_COLOR_TYPE_GRAY, .depth = 4, .raw = raw4};
	const float want2[] = {0, 1 / 3.0f, 2 / 3.0f, 1}, want4[] = {0, 1, 7 / 15.0f};

	check_png(&d1, 1, want1);
	check_png(&d2, 1, want2);
	check_png(&d4, 1, want4);
}

static void test_image_decode_png_gray_alpha(void **state)
{
	/* Composited over black: gray * alpha. */
	const uint8_t raw[] = {200, 255, 200, 51, 255, 0};
	const struct png_desc d = {.width = 3,
	                           .height = 1,
	                           .color = PNG_COLOR_TYPE_GRAY_ALPHA,
	                           .depth = 8,
	                           .raw = raw};
	const float want[] = {200 / 255.0f, 200 / 255.0f * 0.2f, 0};
	const uint8_t raw16[] = {0xff, 0xff, 0x80, 0x00};
	const struct png_desc d16 = {.width = 1,
	                             .height = 1,
	                             .color = PNG_COLOR_TYPE_GRAY_ALPHA,
	                             .depth = 16,
	                             .raw = raw16};
	const float want16[] = {32768 / 65535.0f};

	check_png(&d, 1, want);
	check_png(&d16, 1, want16);
}

static void test_image_decode_png_gray_trns_key(void **state)
{
	/* tRNS on a gray image: samples equal to the key are transparent, hence black. */
	const uint8_t raw[] = {51, 102, 51};
	const png_color_16 key = {.gray = 51};
	const struct png_desc d = {.width = 3,
	                           .height = 1,
	                           .color = PNG_COLOR_TYPE_GRAY,
	                           .depth = 8,
	                           .raw = raw,
	                           .trns_color = &key};
	const float want[] = {0, 0.4f, 0};

	check_png(&d, 1, want);
}

static void test_image_decode_png_rgb(void **state)
{
	const uint8_t raw[] = {255, 0, 0, 10, 20, 30};
	const struct png_desc d = {
		.width = 2, .height = 1, .color = PNG_COLOR_TYPE_RGB, .depth = 8, .raw = raw};
	const float want[] = {1, 0, 0, 10 / 255.0f, 20 / 255.0f, 30 / 255.0f};
	const uint8_t raw16[] = {0x12, 0x34, 0xff, 0xff, 0x00, 0x01};
	const struct png_desc d16 = {
		.width = 1, .height = 1, .color = PNG_COLOR_TYPE_RGB, .depth = 16, .raw = raw16};
	const float want16[] = {0x1234 / 65535.0f, 1, 1 / 65535.0f};

	check_png(&d, 3, want);
	check_png(&d16, 3, want16);
}

static void test_image_decode_png_rgba(void **state)
{
	const uint8_t raw[] = {255, 128, 0, 128, 10, 20, 30, 0, 10, 20, 30, 255};
	const struct png_desc d = {
		.width = 3, .height = 1, .color = PNG_COLOR_TYPE_RGB_ALPHA, .depth = 8, .raw = raw};
	const float a = 128 / 255.0f;
	const float want[] = {a, 128 / 255.0f * a, 0,           0,          0,
	                      0, 10 / 255.0f,      20 / 255.0f, 30 / 255.0f};

	check_png(&d, 3, want);
}

static void test_image_decode_png_palette_trns(void **state)
{
	const png_color pal[] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
	const uint8_t alpha[] = {0, 128}; /* entry 2 opaque */
	const uint8_t raw[] = {0, 1, 2, 2};
	const struct png_desc d = {.width = 2,
	                           .height = 2,
	                           .color = PNG_COLOR_TYPE_PALETTE,
	                           .depth = 8,
	                           .raw = raw,
	                           .palette = pal,
	                           .n_palette = 3,
	                           .trns = alpha,
	                           .n_trns = 2};
	const float want[] = {0, 0, 0, 0, 128 / 255.0f, 0, 0, 0, 1, 0, 0, 1};
	/* 4-bit indices, no tRNS: 2 1 0. */
	const uint8_t raw4[] = {0x21, 0x00};
	const struct png_desc d4 = {.width = 3,
	                            .height = 1,
	                            .color = PNG_COLOR_TYPE_PALETTE,
	                            .depth = 4,
	                            .raw = raw4,
	                            .palette = pal,
	                            .n_palette = 3};
	const float want4[] = {0, 0, 1, 0, 1, 0, 1, 0, 0};

	check_png(&d, 3, want);
	check_png(&d4, 3, want4);
}

static void test_image_decode_png_gray_palette_is_gray(void **state)
{
	const png_color pal[] = {{0, 0, 0}, {51, 51, 51}, {255, 255, 255}};
	const uint8_t raw[] = {0x24}; /* 2 bit: 0 2 1 0 */
	const struct png_desc d = {.width = 4,
	                           .height = 1,
	                           .color = PNG_COLOR_TYPE_PALETTE,
	                           .depth = 2,
	                           .raw = raw,
	                           .palette = pal,
	                           .n_palette = 3};
	const float want[] = {0, 1, 0.2f, 0};

	check_png(&d, 1, want);
}

static void test_image_decode_png_interlaced(void **state)
{
	enum { W = 13, H = 11 };
	uint8_t rgb[W * H * 3], gray16[W * H * 2];
	float want_rgb[W * H * 3], want_gray[W * H];
	uint64_t rng = 7;

	for (int i = 0; i < W * H * 3; i++) {
		rgb[i] = (uint8_t)mime_test_rand(&rng);
		want_rgb[i] = rgb[i] / 255.0f;
	}
	for (int i = 0; i < W * H; i++) {
		uint16_t v = (uint16_t)mime_test_rand(&rng);

		gray16[2 * i] = (uint8_t)(v >> 8);
		gray16[2 * i + 1] = (uint8_t)v;
		want_gray[i] = v / 65535.0f;
	}
	const struct png_desc d = {.width = W,
	                           .height = H,
	                           .color = PNG_COLOR_TYPE_RGB,
	                           .depth = 8,
	                           .interlace = PNG_INTERLACE_ADAM7,
	                           .raw = rgb};
	const struct png_desc g = {.width = W,
	                           .height = H,
	                           .color = PNG_COLOR_TYPE_GRAY,
	                           .depth = 16,
	                           .interlace = PNG_INTERLACE_ADAM7,
	                           .raw = gray16};
	check_png(&d, 3, want_rgb);
	check_png(&g, 1, want_gray);
}

/* --- refusing bad PNGs --------------------------------------------------------------- */

static uint8_t *sample_png(size_t *ret_size)
{
	static const int W = 16, H = 16;
	uint8_t raw[16 * 16 * 3];
	uint64_t rng = 3;

	for (size_t i = 0; i < sizeof(raw); i++)
		raw[i] = (uint8_t)mime_test_rand(&rng);
	const struct png_desc d = {
		.width = W, .height = H, .color = PNG_COLOR_TYPE_RGB, .depth = 8, .raw = raw};
	return encode_png(&d, ret_size);
}

static void expect_fail(const void *data, size_t size, int code, const char *needle)
{
	struct mime_errinfo ei = {0};
	struct mime_image img = {0};
	int r = mime_image_decode(data, size, &img, &ei);

	if (r != code)
		fail_msg("got %d (%s), want %d", r, ei.msg, code);
	assert_int_equal(ei.code, code);
	if (needle && !strstr(ei.msg, needle))
		fail_msg("message '%s' lacks '%s'", ei.msg, needle);
	assert_null(img.pixels);
}

/* Offset of the first chunk of this type, or 0. */
static size_t find_chunk(const uint8_t *p, size_t size, const char *type)
{
	for (size_t pos = 8; pos + 12 <= size;) {
		uint32_t len =
			(uint32_t)p[pos] << 24 | p[pos + 1] << 16 | p[pos + 2] << 8 | p[pos + 3];

		if (memcmp(p + pos + 4, type, 4) == 0)
			return pos;
		pos += 12 + len;
	}
	return 0;
}

static void test_image_decode_png_rejects_truncated(void **state)
{
	size_t size, idat;
	uint8_t *png = sample_png(&size);

	idat = find_chunk(png, size, "IDAT");
	assert_true(idat > 0);
	const size_t cuts[] = {0, 5, 8, 20, 33, idat + 4, idat + 20, size / 2, size - 12, size - 1};
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		uint8_t *copy = malloc(cuts[i] + 1); /* exact size, so ASan sees any overread */

		assert_non_null(copy);
		memcpy(copy, png, cuts[i]);
		expect_fail(copy, cuts[i], MIME_EIMAGE, cuts[i] > 33 ? "truncated" : NULL);
		free(copy);
	}
	free(png);
}

static void test_image_decode_png_rejects_bad_crc(void **state)
{
	size_t size, idat;
	uint8_t *png = sample_png(&size);

	/* IHDR's CRC (bytes 29..32). */
	png[30] ^= 0x01;
	expect_fail(png, size, MIME_EIMAGE, "CRC");
	png[30] ^= 0x01;
	/* IDAT's CRC: the 4 bytes after its data. */
	idat = find_chunk(png, size, "IDAT");
	uint32_t len = (uint32_t)png[idat] << 24 | png[idat + 1] << 16 | png[idat + 2] << 8 |
	               png[idat + 3];
	png[idat + 8 + len] ^= 0x80;
	expect_fail(png, size, MIME_EIMAGE, "CRC");
	free(png);
}

static void test_image_decode_rejects_bad_magic(void **state)
{
	size_t size;
	uint8_t *png = sample_png(&size);

	png[1] = 'Q';
	expect_fail(png, size, MIME_EIMAGE, "bad magic");
	expect_fail("GIF89a", 6, MIME_EIMAGE, "bad magic");
	expect_fail("", 0, MIME_EIMAGE, "bad magic");
	expect_fail("\x89PN", 3, MIME_EIMAGE, "truncated");
	free(png);
}

static void set_ihdr(uint8_t *png, uint32_t width, uint32_t height)
{
	uint32_t crc;

	for (int i = 0; i < 4; i++) {
		png[16 + i] = (uint8_t)(width >> (24 - 8 * i));
		png[20 + i] = (uint8_t)(height >> (24 - 8 * i));
	}
	crc = (uint32_t)crc32(0, png + 12, 4 + 13); /* type and data */
	for (int i = 0; i < 4; i++)
		png[29 + i] = (uint8_t)(crc >> (24 - 8 * i));
}

static void test_image_decode_png_rejects_huge_dims(void **state)
{
	size_t size;
	uint8_t *png = sample_png(&size);

	set_ihdr(png, 100000, 16);
	expect_fail(png, size, MIME_ETOOBIG, "100000x16");
	set_ihdr(png, 16384, 16384); /* sides fine, 256 Mpixels not */
	expect_fail(png, size, MIME_ETOOBIG, "exceeds");
	set_ihdr(png, 0x7fffffff, 0x7fffffff);
	expect_fail(png, size, MIME_ETOOBIG, NULL);
	set_ihdr(png, 0, 16);
	expect_fail(png, size, MIME_EIMAGE, "empty");
	/* A plausible size whose data is missing: refused, not read past the end. */
	set_ihdr(png, 1024, 1024);
	expect_fail(png, size, MIME_EIMAGE, NULL);
	free(png);
}

static void test_image_decode_png_survives_random_damage(void **state)
{
	size_t size;
	uint8_t *png = sample_png(&size), *copy = malloc(size);
	uint64_t rng = 11;

	assert_non_null(copy);
	for (int iter = 0; iter < 300; iter++) {
		struct mime_image img = {0};
		int r;

		memcpy(copy, png, size);
		for (int k = 0; k < 1 + iter % 4; k++)
			copy[8 + mime_test_rand(&rng) % (size - 8)] ^=
				(uint8_t)(1 + mime_test_rand(&rng) % 255);
		r = mime_image_decode(copy, size, &img, NULL);
		assert_true(r == 0 || r == MIME_EIMAGE || r == MIME_ETOOBIG);
		if (r == 0)
			assert_non_null(img.pixels);
		mime_image_free(&img);
	}
	free(copy);
	free(png);
}

/* --- PGM / PPM ------------------------------------------------------------------------ */

static void check_pnm(const char *header, const uint8_t *raster, size_t n, int width, int height,
                      int channels, const float *want)
{
	size_t hl = strlen(header);
	uint8_t *buf = malloc(hl + n);
	struct mime_errinfo ei = {0};
	struct mime_image img = {0};
	int r;

	assert_non_null(buf);
	memcpy(buf, header, hl);
	memcpy(buf + hl, raster, n);
	r = mime_image_decode(buf, hl + n, &img, &ei);
	if (r != 0)
		fail_msg("decode: %d %s", r, ei.msg);
	assert_int_equal(img.width, width);
	assert_int_equal(img.height, height);
	assert_int_equal(img.channels, channels);
	for (int i = 0; i < width * height * channels; i++)
		if (fabsf(img.pixels[i] - want[i]) > EPS)
			fail_msg("sample %d: got %.7f, want %.7f", i, img.pixels[i], want[i]);
	mime_image_free(&img);
	free(buf);
}

static void test_image_decode_pgm(void **state)
{
	const uint8_t r8[] = {0, 51, 255, 102, 10, 204};
	const float w8[] = {0, 0.2f, 1, 0.4f, 10 / 255.0f, 0.8f};
	const uint8_t r16[] = {0x12, 0x34, 0xff, 0xff};
	const float w16[] = {0x1234 / 65535.0f, 1};
	const uint8_t r15[] = {0, 15, 5};
	const float w15[] = {0, 1, 5 / 15.0f};

	check_pnm("P5\n# made by hand\n3 # width\n2\n#maxval next\n255\n", r8, 6, 3, 2, 1, w8);
	check_pnm("P5 2 1 65535\n", r16, 4, 2, 1, 1, w16);
	check_pnm("P5\t3\r\n1 15 ", r15, 3, 3, 1, 1, w15);
	/* A raster byte that looks like whitespace or '#' right after maxval's separator. */
	const uint8_t rws[] = {'\n', '#'};
	const float wws[] = {'\n' / 255.0f, '#' / 255.0f};
	check_pnm("P5 2 1 255\n", rws, 2, 2, 1, 1, wws);
}

static void test_image_decode_ppm(void **state)
{
	const uint8_t r8[] = {255, 0, 0, 0, 51, 102};
	const float w8[] = {1, 0, 0, 0, 0.2f, 0.4f};
	const uint8_t r16[] = {0x03, 0xe8, 0x01, 0xf4, 0x00, 0x00}; /* 1000 500 0 of 1000 */
	const float w16[] = {1, 0.5f, 0};

	check_pnm("P6\n#c1\n2#c2\n1\n# c3\n255\n", r8, 6, 2, 1, 3, w8);
	check_pnm("P6 1 1 1000\n", r16, 6, 1, 1, 3, w16);
}

static void test_image_decode_pnm_rejects_malformed(void **state)
{
	const char trunc[] = "P5 4 4 255\n0123456789"; /* 10 of 16 bytes */

	expect_fail(trunc, strlen(trunc), MIME_EIMAGE, "truncated raster");
	expect_fail("P6 2 2 65535\n\1\2\3\4\5\6", 19, MIME_EIMAGE, "truncated raster");
	expect_fail("P5 3", 4, MIME_EIMAGE, "truncated header");
	expect_fail("P5 3 3", 6, MIME_EIMAGE, "no maxval");
	expect_fail("P5 3 3 255", 10, MIME_EIMAGE, "no whitespace");
	expect_fail("P5 x 3 255\n", 11, MIME_EIMAGE, "width is not a number");
	expect_fail("P5 1 1 0\n\0", 10, MIME_EIMAGE, "maxval 0");
	expect_fail("P5 1 1 70000\n\0\0", 15, MIME_EIMAGE, "maxval above");
	expect_fail("P5 0 1 255\n", 11, MIME_EIMAGE, "empty");
	expect_fail("P5 3 1 9\n\1\12\3", 12, MIME_EIMAGE, "above maxval");
	expect_fail("P2 1 1 255\n0\n", 13, MIME_EIMAGE, "unsupported");
	expect_fail("P5 20000 1 255\n", 15, MIME_ETOOBIG, "width");
	expect_fail("P5 10000 10000 255\n", 19, MIME_ETOOBIG, "exceeds");
	expect_fail("P5 99999999999999999999 1 255\n", 30, MIME_ETOOBIG, NULL);
}

/* --- files ---------------------------------------------------------------------------- */

static void test_image_png_write_load_roundtrip(void **state)
{
	uint8_t gray[5 * 3], rgb[4 * 2 * 3];
	struct mime_image img = {0};
	char *path = mime_test_tmpfile(NULL, 0);
	uint64_t rng = 5;

	assert_non_null(path);
	for (size_t i = 0; i < sizeof(gray); i++)
		gray[i] = (uint8_t)mime_test_rand(&rng);
	for (size_t i = 0; i < sizeof(rgb); i++)
		rgb[i] = (uint8_t)mime_test_rand(&rng);

	assert_int_equal(mime_png_write(path, gray, 5, 3, 1, NULL), 0);
	assert_int_equal(mime_image_load(path, &img, NULL), 0);
	assert_int_equal(img.width, 5);
	assert_int_equal(img.height, 3);
	assert_int_equal(img.channels, 1);
	for (size_t i = 0; i < sizeof(gray); i++)
		assert_float_equal(img.pixels[i], gray[i] / 255.0f, EPS);
	mime_image_free(&img);

	assert_int_equal(mime_png_write(path, rgb, 4, 2, 3, NULL), 0);
	assert_int_equal(mime_image_load(path, &img, NULL), 0);
	assert_int_equal(img.channels, 3);
	for (size_t i = 0; i < sizeof(rgb); i++)
		assert_float_equal(img.pixels[i], rgb[i] / 255.0f, EPS);
	mime_image_free(&img);
	mime_image_free(NULL);

	unlink(path);
	free(path);
}

static void test_image_png_write_rejects_bad_args(void **state)
{
	const uint8_t px[4] = {0};
	struct mime_errinfo ei = {0};

	assert_int_equal(mime_png_write("/tmp/x.png", px, 2, 1, 2, NULL), MIME_EINVAL);
	assert_int_equal(mime_png_write("/tmp/x.png", px, 0, 1, 1, NULL), MIME_EINVAL);
	assert_int_equal(mime_png_write("/tmp/x.png", NULL, 1, 1, 1, NULL), MIME_EINVAL);
	assert_int_equal(mime_png_write("/nonexistent/mime/x.png", px, 1, 1, 1, &ei), -ENOENT);
	assert_non_null(strstr(ei.msg, "/nonexistent/mime/x.png"));
}

static void test_image_load_rejects_big_and_missing(void **state)
{
	struct mime_errinfo ei = {0};
	struct mime_image img = {0};
	char *path = mime_test_tmpfile("P5 1 1 255\n\0", 12);

	assert_non_null(path);
	assert_int_equal(truncate(path, 64L * 1024 * 1024 + 1), 0); /* sparse */
	assert_int_equal(mime_image_load(path, &img, &ei), MIME_ETOOBIG);
	assert_non_null(strstr(ei.msg, path));
	assert_null(img.pixels);
	/* At the limit it is read and decoded (trailing bytes after a PNM raster are fine). */
	assert_int_equal(truncate(path, 64L * 1024 * 1024), 0);
	assert_int_equal(mime_image_load(path, &img, NULL), 0);
	mime_image_free(&img);
	/* Decode failures name the file. */
	assert_int_equal(truncate(path, 11), 0);
	assert_int_equal(mime_image_load(path, &img, &ei), MIME_EIMAGE);
	assert_non_null(strstr(ei.msg, path));
	assert_non_null(strstr(ei.msg, "truncated"));
	unlink(path);
	assert_int_equal(mime_image_load(path, &img, &ei), -ENOENT);
	free(path);
}

/* --- preprocessing ------------------------------------------------------------------- */

static struct mime_input_spec spec_of(int c, int h, int w, enum mime_fit fit)
{
	struct mime_input_spec s = {c, h, w, fit, 0, {0, 0, 0}, {1, 1, 1}};

	return s;
}

static struct mime_image image_of(int w, int h, int c, float *px)
{
	struct mime_image img = {w, h, c, px};

	return img;
}

static void expect_floats(const float *got, const float *want, int n, float tol)
{
	for (int i = 0; i < n; i++)
		if (fabsf(got[i] - want[i]) > tol)
			fail_msg("value %d: got %.7f, want %.7f", i, got[i], want[i]);
}

static void test_image_preprocess_identity(void **state)
{
	float px[2 * 3 * 3], out[2 * 3 * 3], want[2 * 3 * 3];
	uint64_t rng = 9;

	for (int i = 0; i < 18; i++)
		px[i] = mime_test_uniform(&rng, 0, 1);
	/* HWC in, CHW out. */
	for (int y = 0; y < 2; y++)
		for (int x = 0; x < 3; x++)
			for (int c = 0; c < 3; c++)
				want[c * 6 + y * 3 + x] = px[(y * 3 + x) * 3 + c];
	struct mime_image img = image_of(3, 2, 3, px);
	struct mime_input_spec s = spec_of(3, 2, 3, MIME_FIT_STRETCH);
	assert_int_equal(mime_image_preprocess(&img, &s, out, NULL), 0);
	expect_floats(out, want, 18, 0);
	s.fit = MIME_FIT_PAD; /* same aspect: nothing to pad */
	assert_int_equal(mime_image_preprocess(&img, &s, out, NULL), 0);
	expect_floats(out, want, 18, 0);
}

/* The preprocessing of an image that needs no resampling, written out: output (c, y, x) is
 * ((invert ? 1 - v : v) - mean) / std of source pixel (y - y0, x - x0), v its channel c or
 * the gray mix of its RGB computed in double, or the background (invert) outside. */
static void preprocess_no_resample_ref(const struct mime_image *img,
                                       const struct mime_input_spec *s, int x0, int y0, float *want)
{
	for (int y = 0; y < s->height; y++)
		for (int x = 0; x < s->width; x++) {
			const bool in =
				y >= y0 && y < y0 + img->height && x >= x0 && x < x0 + img->width;
			double acc[3] = {s->invert, s->invert, s->invert};

			for (int c = 0; in && c < 3; c++)
				acc[c] = img->pixels[((y - y0) * img->width + (x - x0)) *
				                             img->channels +
				                     (img->channels == 3 ? c : 0)];
			for (int c = 0; c < s->channels; c++) {
				float v = in && s->channels == 1 && img->channels == 3
				                  ? (float)(0.299 * acc[0] + 0.587 * acc[1] +
				                            0.114 * acc[2])
				                  : (float)acc[c];
				float t = s->invert ? 1.0f - v : v;

				want[(c * s->height + y) * s->width + x] =
					(t - s->mean[c]) / s->std[c];
			}
		}
}

/* No resampling (the image has the size it takes in the output, padded or not): bit for
 * bit the formula above, over channel combinations, invert, mean and std, padding, and
 * pixels outside [0, 1]. */
static void test_image_preprocess_no_resample_exact(void **state)
{
	enum { W = 7, H = 4, OH = 9 };
	float px[W * H * 3], out[3 * OH * W], want[3 * OH * W];
	uint64_t rng = 21;

	(void)state;
	for (int i = 0; i < W * H * 3; i++)
		px[i] = mime_test_uniform(&rng, -0.5, 1.5);
	for (int k = 0; k < 16; k++) {
		const int ic = k & 1 ? 3 : 1, oc = k & 2 ? 3 : 1, pad = (k >> 3) & 1;
		struct mime_image img = image_of(W, H, ic, px);
		struct mime_input_spec s = {oc,
		                            pad ? OH : H,
		                            W,
		                            pad ? MIME_FIT_PAD : MIME_FIT_STRETCH,
		                            (k >> 2) & 1,
		                            {0.25f, -0.5f, 0.125f},
		                            {0.3f, 2.0f, 0.7f}};

		preprocess_no_resample_ref(&img, &s, 0, (s.height - H) / 2, want);
		assert_int_equal(mime_image_preprocess(&img, &s, out, NULL), 0);
		assert_memory_equal(out, want, sizeof(float) * oc * s.height * W);
	}
}

/* Bilinear resampling (no axis shrinking by more than 2x) written out from the header's
 * formula, one channel of a stretched image: source coordinate s = (o + 0.5) * in / out -
 * 0.5 clamped to [0, in - 1], taps floor(s) and the next one (if any) with weights 1 - f
 * and f, summed rows then columns in source order as (wy * wx) * pixel in double. */
static double bilinear_ref(const struct mime_image *img, int ow, int oh, int x, int y, int c)
{
	double sy = (y + 0.5) * ((double)img->height / oh) - 0.5;
	double sx = (x + 0.5) * ((double)img->width / ow) - 0.5, acc = 0;

	sy = sy < 0 ? 0 : sy > img->height - 1 ? img->height - 1 : sy;
	sx = sx < 0 ? 0 : sx > img->width - 1 ? img->width - 1 : sx;
	for (int j = (int)floor(sy); j <= (int)floor(sy) + 1 && j < img->height; j++) {
		double wy = j == (int)floor(sy) ? 1.0 - (sy - floor(sy)) : sy - floor(sy);

		if (wy == 0)
			continue;
		for (int i = (int)floor(sx); i <= (int)floor(sx) + 1 && i < img->width; i++) {
			double wx = i == (int)floor(sx) ? 1.0 - (sx - floor(sx)) : sx - floor(sx);

			acc += wy * wx * img->pixels[(j * img->width + i) * img->channels + c];
		}
	}
	return acc;
}

/* Bilinear stretches bit for bit the written-out formula: growing 20x20 -> 28x28 (the
 * digits samples into a 28x28 input), gray and RGB, and a side too long for the weights
 * table (10 -> 300), which computes them per pixel. */
static void test_image_preprocess_bilinear_exact(void **state)
{
	static float px[20 * 20 * 3], out[3 * 3 * 300];
	const int sizes[2][4] = {{20, 20, 28, 28}, {10, 2, 300, 3}};
	uint64_t rng = 5;

	(void)state;
	for (int i = 0; i < 20 * 20 * 3; i++)
		px[i] = mime_test_uniform(&rng, 0, 1);
	for (int k = 0; k < 4; k++) {
		const int *sz = sizes[k / 2], ch = k % 2 ? 3 : 1;
		struct mime_image img = image_of(sz[0], sz[1], ch, px);
		struct mime_input_spec s = spec_of(ch, sz[3], sz[2], MIME_FIT_STRETCH);

		assert_int_equal(mime_image_preprocess(&img, &s, out, NULL), 0);
		for (int c = 0; c < ch; c++)
			for (int y = 0; y < sz[3]; y++)
				for (int x = 0; x < sz[2]; x++) {
					float want =
						(float)bilinear_ref(&img, sz[2], sz[3], x, y, c);

					if (memcmp(&out[(c * sz[3] + y) * sz[2] + x], &want,
					           sizeof(float)))
						fail_msg("%dx%d -> %dx%d, c %d (%d, %d): got %.9g, "
						         "want %.9g",
						         sz[0], sz[1], sz[2], sz[3], c, x, y,
						         out[(c * sz[3] + y) * sz[2] + x], want);
				}
	}
}

static void test_image_preprocess_bilinear(void **state)
{
	/* 2x2 -> 4x4, centers aligned: source x = (i + 0.5) / 2 - 0.5 = -.25 .25 .75 1.25,
	 * clamped, so each row a b becomes a, .75a + .25b, .25a + .75b, b. */
	float px[] = {0, 0.4f, 0.8f, 0.2f}, out[16];
	const float r0[] = {0, 0.1f, 0.3f, 0.4f}, r1[] = {0.8f, 0.65f, 0.35f, 0.2f};
	float want[16];

	for (int x = 0; x < 4; x++) {
		want[0 * 4 + x] = r0[x];
		want[1 * 4 + x] = 0.75f * r0[x] + 0.25f * r1[x];
		want[2 * 4 + x] = 0.25f * r0[x] + 0.75f * r1[x];
		want[3 * 4 + x] = r1[x];
	}
	struct mime_image img = image_of(2, 2, 1, px);
	struct mime_input_spec s = spec_of(1, 4, 4, MIME_FIT_STRETCH);
	assert_int_equal(mime_image_preprocess(&img, &s, out, NULL), 0);
	expect_floats(out, want, 16, 1e-6f);

	/* 4x1 -> 2x1 (2x: still bilinear, at x = 0.5 and 2.5). */
	float px4[] = {0, 1, 0.5f, 0.25f}, out2[2];
	const float want2[] = {0.5f, 0.375f};
	img = image_of(4, 1, 1, px4);
	s = spec_of(1, 1, 2, MIME_FIT_STRETCH);
	assert_int_equal(mime_image_preprocess(&img, &s, out2, NULL), 0);
	expect_floats(out2, want2, 2, 1e-6f);
}

static void test_image_preprocess_area_when_shrinking(void **state)
{
	/* 6x1 -> 2x1 is 3x: box averages of three; 7 -> 2 covers 3.5 pixels each. */
	float px[] = {0, 0.3f, 0.6f, 1, 1, 0.1f, 0.7f}, out[2];
	const float want3[] = {0.3f, 0.7f};
	const float want35[] = {(0 + 0.3f + 0.6f + 0.5f * 1) / 3.5f,
	                        (0.5f * 1 + 1 + 0.1f + 0.7f) / 3.5f};
	struct mime_image img = image_of(6, 1, 1, px);
	struct mime_input_spec s = spec_of(1, 1, 2, MIME_FIT_STRETCH);

	assert_int_equal(mime_image_preprocess(&img, &s, out, NULL), 0);
	expect_floats(out, want3, 2, 1e-6f);
	img.width = 7;
	assert_int_equal(mime_image_preprocess(&img, &s, out, NULL), 0);
	expect_floats(out, want35, 2, 1e-6f);

	/* 8x8 of a checkerboard -> 2x2: every output is the mean, 0.5. */
	float board[64], out4[4];
	const float half[4] = {0.5f, 0.5f, 0.5f, 0.5f};
	for (int i = 0; i < 64; i++)
		board[i] = (float)((i / 8 + i % 8) % 2);
	img = image_of(8, 8, 1, board);
	s = spec_of(1, 2, 2, MIME_FIT_STRETCH);
	assert_int_equal(mime_image_preprocess(&img, &s, out4, NULL), 0);
	expect_floats(out4, half, 4, 1e-6f);
}

static void test_image_preprocess_pad_centers(void **state)
{
	/* A 4x2 white image padded into 4x4: rows 0 and 3 are background 0. */
	float px[8], out[16];
	const float want[16] = {0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0};
	for (int i = 0; i < 8; i++)
		px[i] = 1;
	struct mime_image img = image_of(4, 2, 1, px);
	struct mime_input_spec s = spec_of(1, 4, 4, MIME_FIT_PAD);
	assert_int_equal(mime_image_preprocess(&img, &s, out, NULL), 0);
	expect_floats(out, want, 16, 0);

	/* Tall 1x2 into 5x4 (scale 2 -> 2x4 area at x = 1: odd remainder goes right). */
	float tall[] = {1, 1}, out2[20];
	const float want2[20] = {0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0};
	img = image_of(1, 2, 1, tall);
	s = spec_of(1, 4, 5, MIME_FIT_PAD);
	assert_int_equal(mime_image_preprocess(&img, &s, out2, NULL), 0);
	expect_floats(out2, want2, 20, 0);

	/* Stretch fills everything instead. */
	s.fit = MIME_FIT_STRETCH;
	assert_int_equal(mime_image_preprocess(&img, &s, out2, NULL), 0);
	for (int i = 0; i < 20; i++)
		assert_float_equal(out2[i], 1, 0);

	/* Dark-on-light with invert: the image's white becomes 0 and so does the padding
	 * (it is background after inversion), then both are normalised. */
	float paper[8];
	for (int i = 0; i < 8; i++)
		paper[i] = i == 5 ? 0 : 1; /* one black ink pixel at (1, 1) */
	img = image_of(4, 2, 1, paper);
	s = spec_of(1, 4, 4, MIME_FIT_PAD);
	s.invert = 1;
	s.mean[0] = 0.5f;
	s.std[0] = 0.5f;
	assert_int_equal(mime_image_preprocess(&img, &s, out, NULL), 0);
	for (int i = 0; i < 16; i++)
		assert_float_equal(out[i], i == 4 + 4 + 1 ? 1 : -1, 1e-6f);
}

static void test_image_preprocess_invert_normalize(void **state)
{
	float px[] = {0.1f, 0.5f, 0.9f, 1, 0, 0.25f}, out[6];
	struct mime_image img = image_of(2, 1, 3, px);
	struct mime_input_spec s = {
		3, 1, 2, MIME_FIT_STRETCH, 1, {0.5f, 0.4f, 0.3f}, {0.25f, 0.5f, 2}};
	float want[6];

	for (int x = 0; x < 2; x++)
		for (int c = 0; c < 3; c++)
			want[c * 2 + x] = ((1 - px[x * 3 + c]) - s.mean[c]) / s.std[c];
	assert_int_equal(mime_image_preprocess(&img, &s, out, NULL), 0);
	expect_floats(out, want, 6, 1e-6f);
	/* Without invert. */
	s.invert = 0;
	for (int x = 0; x < 2; x++)
		for (int c = 0; c < 3; c++)
			want[c * 2 + x] = (px[x * 3 + c] - s.mean[c]) / s.std[c];
	assert_int_equal(mime_image_preprocess(&img, &s, out, NULL), 0);
	expect_floats(out, want, 6, 1e-6f);
}

static void test_image_preprocess_gray_rgb(void **state)
{
	float rgb[] = {1, 0, 0, 0.2f, 0.4f, 0.6f}, gray[] = {0.3f, 0.8f}, out[6];
	const float want_gray[] = {0.299f, 0.299f * 0.2f + 0.587f * 0.4f + 0.114f * 0.6f};
	const float want_rgb[] = {0.3f, 0.8f, 0.3f, 0.8f, 0.3f, 0.8f};
	struct mime_image img = image_of(2, 1, 3, rgb);
	struct mime_input_spec s = spec_of(1, 1, 2, MIME_FIT_STRETCH);

	assert_int_equal(mime_image_preprocess(&img, &s, out, NULL), 0);
	expect_floats(out, want_gray, 2, 1e-6f);
	img = image_of(2, 1, 1, gray);
	s = spec_of(3, 1, 2, MIME_FIT_STRETCH);
	assert_int_equal(mime_image_preprocess(&img, &s, out, NULL), 0);
	expect_floats(out, want_rgb, 6, 0);
}

static void test_image_preprocess_rejects_bad_spec(void **state)
{
	float px[1] = {0}, out[16];
	struct mime_image img = image_of(1, 1, 1, px);
	struct mime_input_spec s = spec_of(1, 2, 2, MIME_FIT_STRETCH);
	struct mime_errinfo ei = {0};

	s.channels = 2;
	assert_int_equal(mime_image_preprocess(&img, &s, out, &ei), MIME_EINVAL);
	assert_non_null(strstr(ei.msg, "channels 2"));
	s = spec_of(1, 0, 2, MIME_FIT_STRETCH);
	assert_int_equal(mime_image_preprocess(&img, &s, out, NULL), MIME_EINVAL);
	s = spec_of(1, 2, -1, MIME_FIT_STRETCH);
	assert_int_equal(mime_image_preprocess(&img, &s, out, NULL), MIME_EINVAL);
	s = spec_of(3, 2, 2, MIME_FIT_STRETCH);
	s.std[2] = 0;
	assert_int_equal(mime_image_preprocess(&img, &s, out, &ei), MIME_EINVAL);
	assert_non_null(strstr(ei.msg, "channel 2"));
	s = spec_of(1, 2, 2, (enum mime_fit)7);
	assert_int_equal(mime_image_preprocess(&img, &s, out, NULL), MIME_EINVAL);
	s = spec_of(1, 2, 2, MIME_FIT_STRETCH);
	img.channels = 4;
	assert_int_equal(mime_image_preprocess(&img, &s, out, NULL), MIME_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_image_decode_png_gray8),
		cmocka_unit_test(test_image_decode_png_gray16),
		cmocka_unit_test(test_image_decode_png_gray_low_depths),
		cmocka_unit_test(test_image_decode_png_gray_alpha),
		cmocka_unit_test(test_image_decode_png_gray_trns_key),
		cmocka_unit_test(test_image_decode_png_rgb),
		cmocka_unit_test(test_image_decode_png_rgba),
		cmocka_unit_test(test_image_decode_png_palette_trns),
		cmocka_unit_test(test_image_decode_png_gray_palette_is_gray),
		cmocka_unit_test(test_image_decode_png_interlaced),
		cmocka_unit_test(test_image_decode_png_rejects_truncated),
		cmocka_unit_test(test_image_decode_png_rejects_bad_crc),
		cmocka_unit_test(test_image_decode_rejects_bad_magic),
		cmocka_unit_test(test_image_decode_png_rejects_huge_dims),
		cmocka_unit_test(test_image_decode_png_survives_random_damage),
		cmocka_unit_test(test_image_decode_pgm),
		cmocka_unit_test(test_image_decode_ppm),
		cmocka_unit_test(test_image_decode_pnm_rejects_malformed),
		cmocka_unit_test(test_image_png_write_load_roundtrip),
		cmocka_unit_test(test_image_png_write_rejects_bad_args),
		cmocka_unit_test(test_image_load_rejects_big_and_missing),
		cmocka_unit_test(test_image_preprocess_identity),
		cmocka_unit_test(test_image_preprocess_no_resample_exact),
		cmocka_unit_test(test_image_preprocess_bilinear_exact),
		cmocka_unit_test(test_image_preprocess_bilinear),
		cmocka_unit_test(test_image_preprocess_area_when_shrinking),
		cmocka_unit_test(test_image_preprocess_pad_centers),
		cmocka_unit_test(test_image_preprocess_invert_normalize),
		cmocka_unit_test(test_image_preprocess_gray_rgb),
		cmocka_unit_test(test_image_preprocess_rejects_bad_spec),
	};
	return cmocka_run_group_tests_name("image", tests, NULL, NULL);
}
