// SPDX-License-Identifier: MIT
/* kernels -- see kernels.h. */
#include "lib/kernels.h"

#include <string.h>

void mime_im2col_row(const struct mime_conv_geom *g, const float *in_sample, int c, int kh, int kw,
                     int p0, int np, float *dst)
{
	const float *plane = in_sample + (int64_t)c * g->h * g->w;
	int oh = p0 / g->ow, ow = p0 % g->ow;
	int done = 0;

	/* Walk the pixels one output row segment at a time. */
	while (done < np) {
		int seg = g->ow - ow;
		int ih = oh * g->stride - g->pad + kh;

		if (seg > np - done)
			seg = np - done;
		if (ih < 0 || ih >= g->h) {
			memset(dst + done, 0, sizeof(float) * seg);
		} else {
			const float *row = plane + (int64_t)ih * g->w;
			int iw = ow * g->stride - g->pad + kw;

			if (g->stride == 1 && iw >= 0 && iw + seg <= g->w) {
				memcpy(dst + done, row + iw, sizeof(float) * seg);
			} else {
				for (int i = 0; i < seg; i++, iw += g->stride)
					dst[done + i] = (iw >= 0 && iw < g->w) ? row[iw] : 0.0f;
			}
		}
		done += seg;
		oh++;
		ow = 0;
	}
}

void mime_im2col(const struct mime_conv_geom *g, const float *in_sample, int p0, int np, float *col)
{
	for (int c = 0; c < g->c; c++)
		for (int kh = 0; kh < g->r; kh++)
			for (int kw = 0; kw < g->s; kw++)
				mime_im2col_row(g, in_sample, c, kh, kw, p0, np,
				                col + ((int64_t)(c * g->r + kh) * g->s + kw) * np);
}

void mime_conv_epilogue(const float *acc, int k_count, int64_t j0, int ncols, int p_count,
                        const float *bias, const struct mime_mask_ref *masks, int apply_mask,
                        float *out, int64_t *zeros)
{
	int64_t j = j0;
	int done = 0;

	while (done < ncols) {
		int64_t n = j / p_count;
		int p0 = (int)(j % p_count);
		int seg = p_count - p0;
		const struct mime_mask_ref *mk = &masks[n];
		int64_t nz = 0;

		if (seg > ncols - done)
			seg = ncols - done;
		for (int k = 0; k < k_count; k++) {
			const float *a = acc + (int64_t)k * ncols + done;
			float *o = out + (n * k_count + k) * (int64_t)p_count + p0;
			const float b = bias ? bias[k] : 0.0f;

			if (!apply_mask) {
				for (int i = 0; i < seg; i++)
					o[i] = a[i] + b;
			} else if (!mk->thr || mk->granularity == MIME_THR_CHANNEL) {
				const float t = mk->thr ? mk->thr[k] : 0.0f;
				int z = 0;

				for (int i = 0; i < seg; i++) {
					float y = a[i] + b;
					float v = y >= t ? y : 0.0f;

					o[i] = v;
					z += v == 0.0f;
				}
				nz += z;
			} else {
				const float *t = mk->thr + (int64_t)k * p_count + p0;
				int z = 0;

				for (int i = 0; i < seg; i++) {
					float y = a[i] + b;
					float v = y >= t[i] ? y : 0.0f;

					o[i] = v;
					z += v == 0.0f;
				}
				nz += z;
			}
		}
		if (zeros && apply_mask)
			zeros[n] += nz;
		done += seg;
		j += seg;
	}
}

void mime_maxpool(const float *in, int n_planes, int h, int w, int kernel, int stride, int oh,
                  int ow, float *out)
{
	for (int pl = 0; pl < n_planes; pl++) {
		const float *src = in + (int64_t)pl * h * w;
		float *dst = out + (int64_t)pl * oh * ow;

		if (kernel == 2 && stride == 2) {
			for (int y = 0; y < oh; y++) {
				const float *r0 = src + (2 * y) * w, *r1 = r0 + w;

				for (int x = 0; x < ow; x++) {
					float a = r0[2 * x] > r0[2 * x + 1] ? r0[2 * x]
					                                    : r0[2 * x + 1];
					float b = r1[2 * x] > r1[2 * x + 1] ? r1[2 * x]
					                                    : r1[2 * x + 1];

					dst[y * ow + x] = a > b ? a : b;
				}
			}
			continue;
		}
		for (int y = 0; y < oh; y++)
			for (int x = 0; x < ow; x++) {
				float m = src[(y * stride) * w + x * stride];

				for (int dy = 0; dy < kernel; dy++)
					for (int dx = 0; dx < kernel; dx++) {
						float v = src[(y * stride + dy) * w + x * stride +
						              dx];

						m = v > m ? v : m;
					}
				dst[y * ow + x] = m;
			}
	}
}

int64_t mime_fc_epilogue(float *y, int n, const float *bias, const struct mime_mask_ref *mask,
                         int apply_mask)
{
	int64_t z = 0;

	for (int i = 0; i < n; i++) {
		float v = y[i] + (bias ? bias[i] : 0.0f);

		if (apply_mask) {
			/* An fc output is [C,1,1]: per element and per channel coincide. */
			float t = mask->thr ? mask->thr[i] : 0.0f;

			v = v >= t ? v : 0.0f;
			z += v == 0.0f;
		}
		y[i] = v;
	}
	return z;
}
