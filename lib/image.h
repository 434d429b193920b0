/* SPDX-License-Identifier: MIT */
/* image -- decode PNG (libpng: gray, gray+alpha, RGB, RGBA, palette; 8/16 bit; interlaced)
 * and binary PGM/PPM (P5/P6, maxval up to 65535), then preprocess to a task's input spec.
 * Ownership: decoded images own their pixels; mime_image_free() releases them.
 * Threads: all functions are reentrant. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "lib/error.h"
#include "lib/manifest.h"

/* Refuse images with more pixels than this, or a side above MIME_IMAGE_MAX_SIDE: a
 * decompression bomb costs an error, not the memory. */
#define MIME_IMAGE_MAX_PIXELS (16L * 1024 * 1024)
#define MIME_IMAGE_MAX_SIDE   16384

struct mime_image {
	int width, height;
	int channels;  /* 1 (gray) or 3 (RGB); alpha is composited over black and dropped */
	float *pixels; /* HWC, values in [0,1] */
};

/* Decodes a PNG, PGM or PPM held in memory (format sniffed from the magic bytes).
 * Fails with MIME_EIMAGE (ei says why: truncated, bad magic, unsupported, CRC, ...) or
 * MIME_ETOOBIG. Samples are used as stored (gAMA, sRGB and iCCP are ignored); a palette
 * whose entries are all gray decodes to 1 channel. */
int mime_image_decode(const void *data, size_t size, struct mime_image *ret_image,
                      struct mime_errinfo *ei);
/* The same with a tighter limit on width x height: max_pixels (<= 0 or above
 * MIME_IMAGE_MAX_PIXELS: that limit); checked from the header, before any pixel memory. */
int mime_image_decode_max(const void *data, size_t size, long max_pixels,
                          struct mime_image *ret_image, struct mime_errinfo *ei);
/* Reads and decodes a file (files above 64 MiB are refused). */
int mime_image_load(const char *path, struct mime_image *ret_image, struct mime_errinfo *ei);
void mime_image_free(struct mime_image *img);

/* Converts img to spec: gray <-> RGB (gray = 0.299 R + 0.587 G + 0.114 B), resize (bilinear;
 * area-averaging when shrinking by more than 2x), stretch or pad/center, invert, then
 * (v - mean[c]) / std[c]. Writes spec->channels * height * width floats (CHW) to out.
 * Resampling aligns pixel centers (source x = (i + 0.5) * in / out - 0.5, clamped at the
 * edges), so an equal size is an exact copy; each axis is bilinear, or a box average of
 * the exactly covered area when that axis shrinks by more than 2x. MIME_FIT_PAD scales by
 * the smaller ratio (rounded, at least 1 pixel), centers the result (an odd remainder goes
 * right / below) and fills the rest with the background as the network sees it: 0 after
 * the invert step, i.e. black, or white in the image when spec->invert is set; padding is
 * then normalised like any pixel. Allocates nothing. Fails with MIME_EINVAL on a bad image
 * or spec (channels not 1 or 3, a size <= 0 or above MIME_IMAGE_MAX_SIDE, unknown fit, a
 * std of 0, a mean or std not finite). */
int mime_image_preprocess(const struct mime_image *img, const struct mime_input_spec *spec,
                          float *out, struct mime_errinfo *ei);

/* Writes an 8-bit gray (channels 1) or RGB (3) image as a PNG file (for sample images). */
int mime_png_write(const char *path, const uint8_t *pixels, int width, int height, int channels,
                   struct mime_errinfo *ei);
