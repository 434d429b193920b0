// SPDX-License-Identifier: MIT
/* phase -- the fine-grain mask encoding of a bundle (see phase.h): first kept group index,
 * then differences between successive kept groups, U16 or U32 little endian.
 * Ownership: encode returns a malloc'ed array the caller frees; decode writes caller storage.
 * Threads: pure functions. */
#include "lib/phase.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int mime_phase_shapes(const struct mime_graph *g, const int *k_active, struct mime_shape *ret_in,
                      struct mime_shape *ret_out)
{
	struct mime_shape full[MIME_MAX_LAYERS], cur = g->input;
	int r;

	r = mime_graph_check(g, full, NULL);
	if (r < 0)
		return r;
	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];
		struct mime_shape out = full[i];

		switch (l->kind) {
		case MIME_LAYER_CONV:
		case MIME_LAYER_FC:
			out.c = k_active[i] ? k_active[i] : l->out;
			if (out.c < 1 || out.c > l->out)
				return MIME_EINVAL;
			break;
		case MIME_LAYER_MAXPOOL:
			out.c = cur.c;
			break;
		case MIME_LAYER_FLATTEN:
			out = (struct mime_shape){(int)mime_shape_size(&cur), 1, 1};
			break;
		}
		if (ret_in)
			ret_in[i] = cur;
		ret_out[i] = out;
		cur = out;
	}
	return 0;
}

size_t mime_phase_mask_groups(int k_active, int crs, int wuv)
{
	size_t rows;

	if (k_active <= 0 || crs <= 0 || wuv <= 0)
		return 0;
	rows = ((size_t)k_active + (size_t)wuv - 1) / (size_t)wuv;
	if (rows > SIZE_MAX / (size_t)crs)
		return 0;
	return rows * (size_t)crs;
}

int mime_phase_mask_encode(const uint8_t *keep, size_t n_groups, enum mime_dtype *ret_dtype,
                           void **ret_data, size_t *ret_n_kept)
{
	size_t n_kept = 0, prev = 0, max = 0, k = 0;
	void *data;

	if (n_groups > (size_t)UINT32_MAX + 1)
		return MIME_EINVAL;
	/* First pass: how many, and the largest value stored (first index or difference). */
	for (size_t g = 0; g < n_groups; g++) {
		size_t v;

		if (!keep[g])
			continue;
		v = n_kept ? g - prev : g;
		max = v > max ? v : max;
		prev = g;
		n_kept++;
	}
	*ret_dtype = max <= UINT16_MAX ? MIME_DTYPE_U16 : MIME_DTYPE_U32;
	data = malloc(n_kept ? n_kept * mime_dtype_size(*ret_dtype) : 1);
	if (!data)
		return -ENOMEM;
	for (size_t g = 0; g < n_groups; g++) {
		size_t v;

		if (!keep[g])
			continue;
		v = k ? g - prev : g;
		prev = g;
		if (*ret_dtype == MIME_DTYPE_U16)
			((uint16_t *)data)[k++] = (uint16_t)v;
		else
			((uint32_t *)data)[k++] = (uint32_t)v;
	}
	*ret_data = data;
	*ret_n_kept = n_kept;
	return 0;
}

int mime_phase_mask_decode(enum mime_dtype dtype, const void *data, size_t n_values,
                           size_t n_groups, uint8_t *ret_keep, struct mime_errinfo *ei)
{
	const uint8_t *p = data;
	uint64_t at = 0; /* the group decoded last (0 before the first) */

	if (dtype != MIME_DTYPE_U16 && dtype != MIME_DTYPE_U32)
		return mime_errinfo_set(ei, MIME_EFORMAT, "mask: dtype %s, expected U16 or U32",
		                        mime_dtype_name(dtype));
	if (n_values > n_groups)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "mask: %zu kept groups, but the layer has only %zu",
		                        n_values, n_groups);
	if (ret_keep && n_groups)
		memset(ret_keep, 0, n_groups);
	for (size_t i = 0; i < n_values; i++) {
		uint64_t v;

		/* little endian, byte by byte: the mapping need not be aligned for U16/U32 */
		if (dtype == MIME_DTYPE_U16)
			v = (uint64_t)p[2 * i] | (uint64_t)p[2 * i + 1] << 8;
		else
			v = (uint64_t)p[4 * i] | (uint64_t)p[4 * i + 1] << 8 |
			    (uint64_t)p[4 * i + 2] << 16 | (uint64_t)p[4 * i + 3] << 24;
		if (i > 0 && v == 0)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "mask: value %zu is a difference of 0 (a group "
			                        "listed twice)",
			                        i);
		if (v >= n_groups - at) /* at < n_groups here, so this cannot wrap */
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "mask: value %zu reaches group %llu, beyond the "
			                        "layer's %zu groups",
			                        i, (unsigned long long)(at + v), n_groups);
		at += v;
		if (ret_keep)
			ret_keep[at] = 1;
	}
	return 0;
}
