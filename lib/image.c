// SPDX-License-Identifier: MIT
/* image -- see image.h.
 * PNG goes through libpng from memory: a read callback with bounds checks, error callbacks
 * that record libpng's message and longjmp back to mime_image_decode's cleanup. The image
 * size is checked in the IHDR bytes before libpng sees them (and libpng's user limits
 * repeat the check), so a decompression bomb is refused before anything is allocated.
 * PGM/PPM are parsed here (format described at pnm_decode).
 * Sample values are taken as stored: gAMA, cHRM, sRGB and iCCP are ignored.
 * Ownership: decoded images own their pixels; preprocess writes to caller storage and
 * allocates nothing.
 * Threads: reentrant; libpng state lives on the stack of each call. */
#include "lib/image.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <png.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IMAGE_MAX_FILE_BYTES (64L * 1024 * 1024)
/* Largest ancillary chunk libpng may allocate (text, iCCP, ...); IDAT is streamed. */
#define PNG_CHUNK_MAX_BYTES (8L * 1024 * 1024)

static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

/* MIME_ETOOBIG when width x height is beyond the limits, MIME_EIMAGE when empty. */
static int image_check_size(const char *what, uint64_t width, uint64_t height, long max_pixels,
                            struct mime_errinfo *ei)
{
	if (width == 0 || height == 0)
		return mime_errinfo_set(ei, MIME_EIMAGE, "%s: empty image (%llux%llu)", what,
		                        (unsigned long long)width, (unsigned long long)height);
	if (width > MIME_IMAGE_MAX_SIDE || height > MIME_IMAGE_MAX_SIDE ||
	    width * height > (uint64_t)max_pixels)
		return mime_errinfo_set(ei, MIME_ETOOBIG,
		                        "%s: %llux%llu exceeds the limits (side %d, %ld pixels)",
		                        what, (unsigned long long)width, (unsigned long long)height,
		                        MIME_IMAGE_MAX_SIDE, max_pixels);
	return 0;
}

static int image_alloc(struct mime_image *img, int width, int height, int channels,
                       struct mime_errinfo *ei)
{
	/* image_check_size() bounds this product far below SIZE_MAX. */
	img->pixels = malloc((size_t)width * height * channels * sizeof(float));
	if (!img->pixels)
		return mime_errinfo_set(ei, -ENOMEM, "cannot allocate %dx%dx%d pixels", width,
		                        height, channels);
	img->width = width;
	img->height = height;
	img->channels = channels;
	return 0;
}

/* --- PNG ---------------------------------------------------------------------------- */

struct png_ctx {
	const uint8_t *data;
	size_t size, pos;
	char msg[200]; /* libpng's last error */
};

static void png_ctx_error(png_structp png, png_const_charp msg)
{
	struct png_ctx *ctx = png_get_error_ptr(png);

	snprintf(ctx->msg, sizeof(ctx->msg), "%s", msg);
	png_longjmp(png, 1);
}

static void png_ctx_warning(png_structp png, png_const_charp msg)
{
	/* lib never logs; warnings (bad ancillary chunks, ...) do not change the pixels. */
}

static void png_ctx_read(png_structp png, png_bytep out, size_t n)
{
	struct png_ctx *ctx = png_get_io_ptr(png);

	if (n > ctx->size - ctx->pos) {
		snprintf(ctx->msg, sizeof(ctx->msg), "truncated at byte %zu of %zu (need %zu more)",
		         ctx->pos, ctx->size, n);
		png_longjmp(png, 1);
	}
	memcpy(out, ctx->data + ctx->pos, n);
	ctx->pos += n;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Converts one of libpng's output rows (gray, gray+alpha, RGB or RGBA; 8 or 16 bit
 * big-endian) to image row y, compositing alpha over black. gray_palette keeps only R of
 * an all-gray palette image. */
static void png_row_to_float(const uint8_t *row, int n_in, int depth, bool gray_palette,
                             struct mime_image *img, int y)
{
	const float scale = depth == 16 ? 1.0f / 65535.0f : 1.0f / 255.0f;
	const bool alpha = n_in == 2 || n_in == 4;
	const int n_color = alpha ? n_in - 1 : n_in;
	float *out = img->pixels + (size_t)y * img->width * img->channels;

	for (int x = 0; x < img->width; x++) {
		float v[4];

		for (int c = 0; c < n_in; c++) {
			size_t i = (size_t)x * n_in + c;
			unsigned s =
				depth == 16 ? (unsigned)row[2 * i] << 8 | row[2 * i + 1] : row[i];

			v[c] = (float)s * scale;
		}
		if (alpha)
			for (int c = 0; c < n_color; c++)
				v[c] *= v[n_color];
		if (gray_palette)
			*out++ = v[0];
		else
			for (int c = 0; c < n_color; c++)
				*out++ = v[c];
	}
}

static int png_decode(const uint8_t *data, size_t size, long max_pixels,
                      struct mime_image *ret_image, struct mime_errinfo *ei)
{
	struct png_ctx ctx = {.data = data, .size = size};
	struct mime_image img = {0};
	png_structp png;
	png_infop info;
	uint8_t *volatile buf = NULL;
	png_bytep *volatile rows = NULL;
	float *volatile pixels = NULL;
	volatile int r = MIME_EIMAGE;
	png_uint_32 width, height;
	int depth, color, n_in, n_out;
	volatile bool gray_palette = false; /* set between libpng calls */
	bool interlaced;
	size_t rowbytes;

	/* Signature, then IHDR: length 13, "IHDR", width, height, ... as big-endian. */
	if (size < 8 + 8 + 13 + 4)
		return mime_errinfo_set(ei, MIME_EIMAGE, "PNG: truncated (%zu bytes, no IHDR)",
		                        size);
	if (be32(data + 8) != 13 || memcmp(data + 12, "IHDR", 4) != 0)
		return mime_errinfo_set(ei, MIME_EIMAGE, "PNG: first chunk is not a 13-byte IHDR");
	r = image_check_size("PNG", be32(data + 16), be32(data + 20), max_pixels, ei);
	if (r < 0)
		return r;

	png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, png_ctx_error, png_ctx_warning);
	if (!png)
		return mime_errinfo_set(ei, -ENOMEM, "PNG: cannot create the libpng reader");
	info = png_create_info_struct(png);
	if (!info) {
		r = mime_errinfo_set(ei, -ENOMEM, "PNG: cannot create the libpng reader");
		goto out_png;
	}
	if (setjmp(png_jmpbuf(png))) {
		r = mime_errinfo_set(ei, MIME_EIMAGE, "PNG: %s", ctx.msg);
		goto out_buf;
	}
	png_set_user_limits(png, MIME_IMAGE_MAX_SIDE, MIME_IMAGE_MAX_SIDE);
	png_set_chunk_malloc_max(png, PNG_CHUNK_MAX_BYTES);
	png_set_read_fn(png, &ctx, png_ctx_read);

	png_read_info(png, info);
	width = png_get_image_width(png, info);
	height = png_get_image_height(png, info);
	color = png_get_color_type(png, info);

	if (color == PNG_COLOR_TYPE_PALETTE) {
		png_colorp pal;
		int n_pal = 0;

		gray_palette = png_get_PLTE(png, info, &pal, &n_pal) == PNG_INFO_PLTE && n_pal > 0;
		for (int i = 0; i < n_pal; i++)
			if (pal[i].red != pal[i].green || pal[i].red != pal[i].blue)
				gray_palette = false;
	}
	/* Everything to 8 or 16 bits per sample, palettes to RGB, tRNS to an alpha channel. */
	png_set_expand(png);
	png_set_interlace_handling(png);
	png_read_update_info(png, info);

	depth = png_get_bit_depth(png, info);
	n_in = png_get_channels(png, info);
	rowbytes = png_get_rowbytes(png, info);
	if ((depth != 8 && depth != 16) || n_in < 1 || n_in > 4 ||
	    rowbytes != (size_t)width * n_in * (depth / 8)) {
		r = mime_errinfo_set(ei, MIME_EIMAGE,
		                     "PNG: unsupported layout (%d bits, %d channels)", depth, n_in);
		goto out_buf;
	}
	n_out = n_in >= 3 && !gray_palette ? 3 : 1;

	/* Adam7 needs every row at once; otherwise one row buffer is enough. */
	interlaced = png_get_interlace_type(png, info) != PNG_INTERLACE_NONE;
	buf = malloc(interlaced ? rowbytes * height : rowbytes);
	if (!buf) {
		r = mime_errinfo_set(ei, -ENOMEM, "PNG: cannot allocate %ux%u rows", width, height);
		goto out_buf;
	}
	r = image_alloc(&img, (int)width, (int)height, n_out, ei);
	if (r < 0)
		goto out_buf;
	pixels = img.pixels;
	if (interlaced) {
		rows = malloc(sizeof(*rows) * height);
		if (!rows) {
			r = mime_errinfo_set(ei, -ENOMEM, "PNG: cannot allocate %u row pointers",
			                     height);
			goto out_buf;
		}
		for (png_uint_32 y = 0; y < height; y++)
			rows[y] = buf + (size_t)y * rowbytes;
		png_read_image(png, rows);
		for (png_uint_32 y = 0; y < height; y++)
			png_row_to_float(rows[y], n_in, depth, gray_palette, &img, (int)y);
	} else {
		for (png_uint_32 y = 0; y < height; y++) {
			png_read_row(png, buf, NULL);
			png_row_to_float(buf, n_in, depth, gray_palette, &img, (int)y);
		}
	}
	png_read_end(png, NULL); /* the rest up to IEND: catches truncation and CRC errors */
	pixels = NULL;
	*ret_image = img;
	r = 0;

out_buf:
	free(pixels);
	free(rows);
	free(buf);
out_png:
	png_destroy_read_struct(&png, info ? &info : NULL, NULL);
	return r;
}

/* --- PGM / PPM ----------------------------------------------------------------------- */

/* Skips whitespace and '#' comments (to the end of the line); returns false at the end. */
static bool pnm_skip(const uint8_t *p, size_t size, size_t *pos)
{
	while (*pos < size) {
		if (p[*pos] == '#') {
			while (*pos < size && p[*pos] != '\n' && p[*pos] != '\r')
				(*pos)++;
		} else if (p[*pos] == ' ' || p[*pos] == '\t' || p[*pos] == '\n' ||
		           p[*pos] == '\r' || p[*pos] == '\v' || p[*pos] == '\f') {
			(*pos)++;
		} else {
			return true;
		}
	}
	return false;
}

/* Reads one decimal header field; values above limit (and overlong numbers) give
 * too_big_code, anything else malformed gives MIME_EIMAGE. */
static int pnm_field(const uint8_t *p, size_t size, size_t *pos, const char *name, uint32_t limit,
                     int too_big_code, uint32_t *ret, struct mime_errinfo *ei)
{
	uint64_t v = 0;
	size_t start;

	if (!pnm_skip(p, size, pos))
		return mime_errinfo_set(ei, MIME_EIMAGE, "PNM: truncated header, no %s", name);
	start = *pos;
	while (*pos < size && p[*pos] >= '0' && p[*pos] <= '9') {
		v = v * 10 + (p[*pos] - '0');
		if (v > limit)
			return mime_errinfo_set(ei, too_big_code, "PNM: %s above %u", name, limit);
		(*pos)++;
	}
	if (*pos == start)
		return mime_errinfo_set(ei, MIME_EIMAGE, "PNM: %s is not a number (byte %zu)", name,
		                        start);
	*ret = (uint32_t)v;
	return 0;
}

/* Binary PGM (P5, gray) and PPM (P6, RGB): "P5" or "P6", then width, height and maxval as
 * decimal numbers separated by whitespace (with '#' comments to the end of a line allowed
 * between them), then exactly one whitespace byte, then the raster: rows top to bottom,
 * samples of one byte (maxval < 256) or two big-endian bytes (maxval 256..65535). Bytes
 * after the raster (a next image) are ignored. */
static int pnm_decode(const uint8_t *data, size_t size, long max_pixels,
                      struct mime_image *ret_image, struct mime_errinfo *ei)
{
	const int channels = data[1] == '6' ? 3 : 1;
	uint32_t width, height, maxval;
	struct mime_image img = {0};
	size_t pos = 2, n_samples, bps;
	int r;

	r = pnm_field(data, size, &pos, "width", MIME_IMAGE_MAX_SIDE, MIME_ETOOBIG, &width, ei);
	if (r < 0)
		return r;
	r = pnm_field(data, size, &pos, "height", MIME_IMAGE_MAX_SIDE, MIME_ETOOBIG, &height, ei);
	if (r < 0)
		return r;
	r = pnm_field(data, size, &pos, "maxval", 65535, MIME_EIMAGE, &maxval, ei);
	if (r < 0)
		return r;
	if (maxval == 0)
		return mime_errinfo_set(ei, MIME_EIMAGE, "PNM: maxval 0");
	r = image_check_size("PNM", width, height, max_pixels, ei);
	if (r < 0)
		return r;
	if (pos >= size || !(data[pos] == ' ' || data[pos] == '\t' || data[pos] == '\n' ||
	                     data[pos] == '\r' || data[pos] == '\v' || data[pos] == '\f'))
		return mime_errinfo_set(ei, MIME_EIMAGE,
		                        "PNM: no whitespace byte after maxval (byte %zu)", pos);
	pos++;

	bps = maxval > 255 ? 2 : 1;
	n_samples = (size_t)width * height * channels;
	if (size - pos < n_samples * bps)
		return mime_errinfo_set(ei, MIME_EIMAGE,
		                        "PNM: truncated raster: %ux%u needs %zu bytes, %zu present",
		                        width, height, n_samples * bps, size - pos);

	r = image_alloc(&img, (int)width, (int)height, channels, ei);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n_samples; i++) {
		const uint8_t *s = data + pos + i * bps;
		uint32_t v = bps == 2 ? (uint32_t)s[0] << 8 | s[1] : s[0];

		if (v > maxval) {
			mime_image_free(&img);
			return mime_errinfo_set(ei, MIME_EIMAGE,
			                        "PNM: sample %zu is %u, above maxval %u", i, v,
			                        maxval);
		}
		img.pixels[i] = (float)v / (float)maxval;
	}
	*ret_image = img;
	return 0;
}

int mime_image_decode_max(const void *data, size_t size, long max_pixels,
                          struct mime_image *ret_image, struct mime_errinfo *ei)
{
	const uint8_t *p = data;

	if (max_pixels <= 0 || max_pixels > MIME_IMAGE_MAX_PIXELS)
		max_pixels = MIME_IMAGE_MAX_PIXELS;
	if (size >= 8 && memcmp(p, png_magic, 8) == 0)
		return png_decode(p, size, max_pixels, ret_image, ei);
	if (size >= 2 && p[0] == 'P' && (p[1] == '5' || p[1] == '6'))
		return pnm_decode(p, size, max_pixels, ret_image, ei);
	if (size >= 2 && p[0] == 'P' && p[1] >= '1' && p[1] <= '7')
		return mime_errinfo_set(ei, MIME_EIMAGE,
		                        "PNM P%c unsupported (binary P5 and P6 only)", p[1]);
	if (size < 8 && size >= 1 && memcmp(p, png_magic, size) == 0)
		return mime_errinfo_set(ei, MIME_EIMAGE, "PNG: truncated signature (%zu bytes)",
		                        size);
	return mime_errinfo_set(ei, MIME_EIMAGE,
	                        "bad magic: neither PNG nor binary PGM/PPM (%zu bytes)", size);
}

int mime_image_decode(const void *data, size_t size, struct mime_image *ret_image,
                      struct mime_errinfo *ei)
{
	return mime_image_decode_max(data, size, MIME_IMAGE_MAX_PIXELS, ret_image, ei);
}

int mime_image_load(const char *path, struct mime_image *ret_image, struct mime_errinfo *ei)
{
	struct mime_errinfo dei = {0};
	struct stat st;
	uint8_t *buf;
	size_t done = 0;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return mime_errinfo_set(ei, -errno, "'%s': cannot open: %s", path,
		                        mime_strerror(-errno));
	if (fstat(fd, &st) < 0) {
		r = mime_errinfo_set(ei, -errno, "'%s': cannot stat: %s", path,
		                     mime_strerror(-errno));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		r = mime_errinfo_set(ei, MIME_EIMAGE, "'%s': not a regular file", path);
		goto out_close;
	}
	if (st.st_size > IMAGE_MAX_FILE_BYTES) {
		r = mime_errinfo_set(ei, MIME_ETOOBIG, "'%s': %lld bytes, above the %ld MiB limit",
		                     path, (long long)st.st_size, IMAGE_MAX_FILE_BYTES >> 20);
		goto out_close;
	}
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf) {
		r = -ENOMEM;
		goto out_close;
	}
	while (done < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + done, (size_t)st.st_size - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = mime_errinfo_set(ei, -errno, "'%s': read failed: %s", path,
			                     mime_strerror(-errno));
			goto out_buf;
		}
		if (n == 0)
			break; /* shrank meanwhile: decode what is there */
		done += (size_t)n;
	}
	r = mime_image_decode(buf, done, ret_image, &dei);
	if (r < 0)
		mime_errinfo_set(ei, r, "'%s': %s", path, dei.msg[0] ? dei.msg : mime_strerror(r));

out_buf:
	free(buf);
out_close:
	close(fd);
	return r;
}

void mime_image_free(struct mime_image *img)
{
	if (!img)
		return;
	free(img->pixels);
	memset(img, 0, sizeof(*img));
}

/* --- preprocessing ------------------------------------------------------------------- */

/* One axis of the resampling: output index i (0 .. n_dst-1 within the image area) reads
 * source indices first .. last with weights from axis_weight(). Shrinking by more than 2x
 * averages the covered area (box filter, exact fractional coverage); otherwise bilinear
 * with pixel centers aligned ((i + 0.5) * scale - 0.5, clamped at the edges), which is
 * an exact copy at scale 1. */
struct axis {
	int n_src;
	double scale; /* n_src / n_dst */
	bool area;
};

static void axis_span(const struct axis *ax, int i, int *ret_first, int *ret_last)
{
	if (ax->area) {
		double a = i * ax->scale, b = (i + 1) * ax->scale;
		int first = (int)floor(a), last = (int)ceil(b) - 1;

		*ret_first = first < 0 ? 0 : first;
		*ret_last = last >= ax->n_src ? ax->n_src - 1 : last;
	} else {
		double s = (i + 0.5) * ax->scale - 0.5;
		int first;

		if (s < 0)
			s = 0;
		if (s > ax->n_src - 1)
			s = ax->n_src - 1;
		first = (int)floor(s);
		*ret_first = first;
		*ret_last = first + 1 < ax->n_src ? first + 1 : first;
	}
}

/* Weight of source index j for output index i; weights of a span sum to 1. */
static double axis_weight(const struct axis *ax, int i, int j)
{
	if (ax->area) {
		double a = i * ax->scale, b = (i + 1) * ax->scale;
		double lo = a > j ? a : j, hi = b < j + 1 ? b : j + 1;

		return hi > lo ? (hi - lo) / (b - a) : 0.0;
	}
	double s = (i + 0.5) * ax->scale - 0.5;

	if (s < 0)
		s = 0;
	if (s > ax->n_src - 1)
		s = ax->n_src - 1;
	double f = s - floor(s);
	return j == (int)floor(s) ? 1.0 - f : f;
}

static void axis_init(struct axis *ax, int n_src, int n_dst)
{
	ax->n_src = n_src;
	ax->scale = (double)n_src / n_dst;
	ax->area = ax->scale > 2.0;
}

/* A bilinear axis's span (at most 2 source indices) and weights per output index, computed
 * once with the functions above (the same values) instead of once per pixel. Held on the
 * stack, for axes of up to TAPS_MAX outputs (a network's input side); others, and box
 * averages, are computed per pixel as before. */
#define TAPS_MAX 256
struct taps {
	int first, last;
	double w[2];
};

static bool taps_fill(const struct axis *ax, int n_dst, struct taps *t)
{
	if (ax->area || n_dst > TAPS_MAX)
		return false;
	for (int i = 0; i < n_dst; i++) {
		axis_span(ax, i, &t[i].first, &t[i].last);
		for (int j = t[i].first; j <= t[i].last; j++)
			t[i].w[j - t[i].first] = axis_weight(ax, i, j);
	}
	return true;
}

int mime_image_preprocess(const struct mime_image *img, const struct mime_input_spec *spec,
                          float *out, struct mime_errinfo *ei)
{
	const int oc = spec ? spec->channels : 0, oh = spec ? spec->height : 0;
	const int ow = spec ? spec->width : 0;
	const size_t plane = (size_t)oh * ow;
	int rw, rh, x0, y0; /* the image's area in the output: rw x rh at (x0, y0) */
	struct axis ax, ay;
	struct taps tx[TAPS_MAX], ty[TAPS_MAX];
	bool same, have_tx, have_ty;
	float bg;

	if (!img || !img->pixels || (img->channels != 1 && img->channels != 3) || img->width <= 0 ||
	    img->height <= 0)
		return mime_errinfo_set(ei, MIME_EINVAL, "preprocess: no valid image");
	if (!spec || !out)
		return mime_errinfo_set(ei, MIME_EINVAL, "preprocess: no spec or output");
	if (oc != 1 && oc != 3)
		return mime_errinfo_set(ei, MIME_EINVAL, "input spec: channels %d, not 1 or 3", oc);
	if (oh <= 0 || ow <= 0 || oh > MIME_IMAGE_MAX_SIDE || ow > MIME_IMAGE_MAX_SIDE)
		return mime_errinfo_set(ei, MIME_EINVAL, "input spec: size %dx%d out of range", ow,
		                        oh);
	if (spec->fit != MIME_FIT_STRETCH && spec->fit != MIME_FIT_PAD)
		return mime_errinfo_set(ei, MIME_EINVAL, "input spec: unknown fit %d", spec->fit);
	for (int c = 0; c < oc; c++)
		if (spec->std[c] == 0 || !isfinite(spec->std[c]) || !isfinite(spec->mean[c]))
			return mime_errinfo_set(ei, MIME_EINVAL,
			                        "input spec: channel %d mean %g std %g invalid", c,
			                        spec->mean[c], spec->std[c]);

	rw = ow;
	rh = oh;
	if (spec->fit == MIME_FIT_PAD) {
		/* Largest size with the image's aspect ratio that fits, at least one pixel. */
		double s = fmin((double)ow / img->width, (double)oh / img->height);

		rw = (int)lround(img->width * s);
		rh = (int)lround(img->height * s);
		rw = rw < 1 ? 1 : rw > ow ? ow : rw;
		rh = rh < 1 ? 1 : rh > oh ? oh : rh;
	}
	x0 = (ow - rw) / 2; /* centered; an odd remainder goes right / below */
	y0 = (oh - rh) / 2;
	axis_init(&ax, img->width, rw);
	axis_init(&ay, img->height, rh);
	/* Padding is the task's background as the network sees it: 0 after the invert step,
	 * i.e. black (0) in the image, or white (1) when the task inverts its input. */
	bg = spec->invert ? 1.0f : 0.0f;
	/* No resampling (the image already has the size it takes in the output, the usual
	 * case): each pixel is its source pixel, which is what the spans below give with
	 * weights 1 and 0 (for finite pixels), without their per-pixel arithmetic. */
	same = rw == img->width && rh == img->height;
	have_tx = !same && taps_fill(&ax, rw, tx);
	have_ty = !same && taps_fill(&ay, rh, ty);

	for (int y = 0; y < oh; y++)
		for (int x = 0; x < ow; x++) {
			const bool inside = x >= x0 && x < x0 + rw && y >= y0 && y < y0 + rh;
			double acc[3] = {bg, bg, bg};
			float v[3];

			if (inside && same) {
				const float *px = img->pixels + ((size_t)(y - y0) * img->width +
				                                 (size_t)(x - x0)) *
				                                        img->channels;

				for (int c = 0; c < img->channels; c++)
					acc[c] = px[c];
				if (img->channels == 1)
					acc[1] = acc[2] = acc[0];
			} else if (inside) {
				const int ix = x - x0, iy = y - y0;
				int fx, lx, fy, ly;

				if (have_tx)
					fx = tx[ix].first, lx = tx[ix].last;
				else
					axis_span(&ax, ix, &fx, &lx);
				if (have_ty)
					fy = ty[iy].first, ly = ty[iy].last;
				else
					axis_span(&ay, iy, &fy, &ly);
				acc[0] = acc[1] = acc[2] = 0;
				for (int j = fy; j <= ly; j++) {
					double wy = have_ty ? ty[iy].w[j - fy]
					                    : axis_weight(&ay, iy, j);
					const float *row = img->pixels +
					                   (size_t)j * img->width * img->channels;

					if (wy == 0)
						continue;
					for (int i = fx; i <= lx; i++) {
						double w = wy * (have_tx ? tx[ix].w[i - fx]
						                         : axis_weight(&ax, ix, i));
						const float *px = row + (size_t)i * img->channels;

						for (int c = 0; c < img->channels; c++)
							acc[c] += w * px[c];
					}
				}
				if (img->channels == 1)
					acc[1] = acc[2] = acc[0];
			}
			if (oc == 1 && img->channels == 3 && inside)
				v[0] = (float)(0.299 * acc[0] + 0.587 * acc[1] + 0.114 * acc[2]);
			else
				for (int c = 0; c < oc; c++)
					v[c] = (float)acc[c];
			for (int c = 0; c < oc; c++) {
				float t = spec->invert ? 1.0f - v[c] : v[c];

				out[c * plane + (size_t)y * ow + x] =
					(t - spec->mean[c]) / spec->std[c];
			}
		}
	return 0;
}

/* --- PNG writing --------------------------------------------------------------------- */

int mime_png_write(const char *path, const uint8_t *pixels, int width, int height, int channels,
                   struct mime_errinfo *ei)
{
	struct png_ctx ctx = {0};
	png_structp png;
	png_infop info;
	FILE *volatile f = NULL;
	volatile int r;

	if (!pixels || (channels != 1 && channels != 3) || width <= 0 || height <= 0 ||
	    width > MIME_IMAGE_MAX_SIDE || height > MIME_IMAGE_MAX_SIDE)
		return mime_errinfo_set(ei, MIME_EINVAL, "'%s': cannot write a %dx%dx%d PNG", path,
		                        width, height, channels);

	png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, png_ctx_error, png_ctx_warning);
	if (!png)
		return mime_errinfo_set(ei, -ENOMEM, "'%s': cannot create the libpng writer", path);
	info = png_create_info_struct(png);
	if (!info) {
		r = mime_errinfo_set(ei, -ENOMEM, "'%s': cannot create the libpng writer", path);
		goto out_png;
	}
	f = fopen(path, "wbe");
	if (!f) {
		r = mime_errinfo_set(ei, -errno, "'%s': cannot create: %s", path,
		                     mime_strerror(-errno));
		goto out_png;
	}
	if (setjmp(png_jmpbuf(png))) {
		r = mime_errinfo_set(ei, -EIO, "'%s': PNG write failed: %s", path, ctx.msg);
		goto out_file;
	}
	png_init_io(png, f);
	png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8,
	             channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
	             PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	png_write_info(png, info);
	for (int y = 0; y < height; y++)
		png_write_row(png, pixels + (size_t)y * width * channels);
	png_write_end(png, NULL);
	if (fflush(f) != 0 || ferror(f)) {
		r = mime_errinfo_set(ei, -EIO, "'%s': write failed", path);
		goto out_file;
	}
	r = fclose(f) == 0 ? 0 : mime_errinfo_set(ei, -errno, "'%s': close failed", path);
	f = NULL;
	if (r < 0)
		unlink(path);
	png_destroy_write_struct(&png, &info);
	return r;

out_file:
	fclose(f);
	unlink(path);
out_png:
	png_destroy_write_struct(&png, info ? &info : NULL);
	return r;
}
