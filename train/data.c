// SPDX-License-Identifier: MIT
/* data -- see data.h. */
#include "train/data.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lib/idx.h"

int mimetrain_data_load(const char *images, const char *labels, int n_classes, int limit,
                        struct mimetrain_data *ret_data, struct mime_errinfo *ei)
{
	struct mime_idx im, lb;
	struct mimetrain_data d;
	int r;

	r = mime_idx_read_pair(images, labels, n_classes, &im, &lb, ei);
	if (r < 0)
		return r;
	memset(&d, 0, sizeof(d));
	d.n_classes = n_classes;
	if (im.ndim == 3) {
		d.c = 1;
		d.h = (int)im.dims[1];
		d.w = (int)im.dims[2];
	} else if (im.ndim == 4) {
		d.c = (int)im.dims[1];
		d.h = (int)im.dims[2];
		d.w = (int)im.dims[3];
	} else {
		r = mime_errinfo_set(ei, MIME_EDATA, "'%s': %d dimensions, want 3 or 4", images,
		                     im.ndim);
		goto out_free;
	}
	if (im.dims[0] > (uint32_t)INT32_MAX || d.c <= 0 || d.h <= 0 || d.w <= 0) {
		r = mime_errinfo_set(ei, MIME_EDATA, "'%s': bad dimensions", images);
		goto out_free;
	}
	d.n = (int)im.dims[0];
	if (limit > 0 && limit < d.n)
		d.n = limit;
	/* take ownership of the buffers; the excess beyond limit is simply unused */
	d.pixels = im.data;
	d.labels = lb.data;
	*ret_data = d;
	return 0;

out_free:
	mime_idx_free(&im);
	mime_idx_free(&lb);
	return r;
}

int mimetrain_data_from_arrays(int n, int c, int h, int w, const uint8_t *pixels,
                               const uint8_t *labels, int n_classes,
                               struct mimetrain_data *ret_data)
{
	struct mimetrain_data d = {.n = n, .c = c, .h = h, .w = w, .n_classes = n_classes};
	size_t sz;

	if (n <= 0 || c <= 0 || h <= 0 || w <= 0 || n_classes <= 0 || n_classes > 256)
		return MIME_EINVAL;
	sz = (size_t)n * c * h * w;
	d.pixels = malloc(sz);
	d.labels = malloc((size_t)n);
	if (!d.pixels || !d.labels) {
		free(d.pixels);
		free(d.labels);
		return -ENOMEM;
	}
	memcpy(d.pixels, pixels, sz);
	memcpy(d.labels, labels, (size_t)n);
	for (int i = 0; i < n; i++)
		if (labels[i] >= n_classes) {
			mimetrain_data_fini(&d);
			return MIME_EINVAL;
		}
	*ret_data = d;
	return 0;
}

void mimetrain_data_fini(struct mimetrain_data *d)
{
	if (!d)
		return;
	free(d->pixels);
	free(d->labels);
	d->pixels = d->labels = NULL;
}

void mimetrain_data_stats(const struct mimetrain_data *d, float *ret_mean, float *ret_std)
{
	const size_t n = (size_t)d->n * d->c * d->h * d->w;
	uint64_t hist[256] = {0};
	double s = 0, ss = 0;

	for (size_t i = 0; i < n; i++)
		hist[d->pixels[i]]++;
	for (int v = 0; v < 256; v++) {
		double x = v / 255.0;

		s += x * (double)hist[v];
		ss += x * x * (double)hist[v];
	}
	s /= (double)n;
	*ret_mean = (float)s;
	*ret_std = (float)sqrt(ss / (double)n - s * s);
}

void mimetrain_shuffle(int *perm, int n, struct mimetrain_rng *rng)
{
	for (int i = 0; i < n; i++)
		perm[i] = i;
	for (int i = n - 1; i > 0; i--) {
		int j = (int)mimetrain_rng_below(rng, (uint32_t)i + 1), t = perm[i];

		perm[i] = perm[j];
		perm[j] = t;
	}
}

void mimetrain_data_batch(const struct mimetrain_data *d, const int *idx, int count, float mean,
                          float std, const struct mimetrain_augment *aug, struct mimetrain_rng *rng,
                          float *x, uint8_t *y)
{
	const int C = d->c, H = d->h, W = d->w;
	const float scale = 1.0f / (255.0f * std), zero = -mean / std;
	float lut[256];

	for (int v = 0; v < 256; v++)
		lut[v] = (float)v * scale - mean / std;
	for (int b = 0; b < count; b++) {
		const uint8_t *src = d->pixels + (size_t)idx[b] * C * H * W;
		float *dst = x + (size_t)b * C * H * W;
		int dy = 0, dx = 0, flip = 0;

		y[b] = d->labels[idx[b]];
		if (aug && aug->pad > 0) {
			dy = (int)mimetrain_rng_below(rng, 2 * aug->pad + 1) - aug->pad;
			dx = (int)mimetrain_rng_below(rng, 2 * aug->pad + 1) - aug->pad;
		}
		if (aug && aug->hflip)
			flip = (int)(mimetrain_rng_next(rng) >> 63);
		for (int c = 0; c < C; c++)
			for (int i = 0; i < H; i++)
				for (int j = 0; j < W; j++) {
					int si = i + dy, sj = (flip ? W - 1 - j : j) + dx;

					dst[(c * H + i) * W + j] =
						(si >= 0 && si < H && sj >= 0 && sj < W)
							? lut[src[(c * H + si) * W + sj]]
							: zero;
				}
	}
}
