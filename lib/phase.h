/* SPDX-License-Identifier: MIT */
/* phase -- one phase of a multi-phase network (the Multi-phase CNN paper): a nested
 * sub-network of the parent. Coarse grain: the first k_active kernels of every conv / fc
 * layer (weights are stored phase-major, so a phase's kernels come first and the next
 * layer's input channels follow); fine grain: groups of W_uv consecutive rows of the im2col
 * weight matrix W' [kernels, C*R*S] at one column are kept or pruned together.
 * Also the bundle's encoding of the masks (below) and the sub-network's shapes.
 * Ownership: plain data; keep masks are borrowed by whoever is handed the phase (an engine
 * reads them while entering the phase only); mime_phase_mask_encode() returns an array the
 * caller frees.
 * Threads: immutable data; the functions are pure. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "lib/bundle.h"
#include "lib/graph.h"

struct mime_phase_layer {
	int k_active;        /* conv / fc: output channels kept (0 = all of them) */
	const uint8_t *keep; /* fine grain: [ceil(k_active / wuv)][C_active * R * S], 1 = kept;
	                        NULL = every group kept */
};

struct mime_phase {
	int wuv; /* group height of the keep masks (16 for AVX-512 floats, 8 AVX2, 4 NEON) */
	struct mime_phase_layer layer[MIME_MAX_LAYERS];
};

/* Fine-grain masks in a bundle: tensor "phase/<p>/<layer>.mask" (p = 1..n_phases).
 * Groups are numbered row-major over [ceil(k_active / wuv)][C_active * R * S]: group
 * g = row_group * (C_active * R * S) + column, where row_group covers kernels
 * [row_group * wuv, row_group * wuv + wuv) and C_active is the phase's input channels of the
 * layer. As the Multi-phase CNN paper stores its masks, the tensor holds only the kept
 * groups, in increasing order, as the index of the first kept group followed by the
 * difference between each kept group and the previous one: for kept groups (3, 7, 8) it is
 * [3, 4, 1]. Every value after the first is >= 1 and the running sum stays below the number
 * of groups; an empty tensor (shape [0]) keeps nothing. Shape [n_kept], dtype U16 when the
 * first index and every difference are <= 65535, else U32 (the encoder's choice; the
 * decoder takes either), little endian. */

/* Shapes of the sub-network of g (checked) that keeps the first k_active[i] kernels of every
 * conv / fc layer i (0 = all of them; MIME_MAX_LAYERS entries): ret_out[i] is the output of
 * layer i, ret_in[i] (ret_in may be NULL) its input; pool and flatten follow their input.
 * Returns 0, or MIME_EGRAPH (g does not check) / MIME_EINVAL (k_active out of range). */
int mime_phase_shapes(const struct mime_graph *g, const int *k_active, struct mime_shape *ret_in,
                      struct mime_shape *ret_out);

/* Number of groups of a mask over k_active kernels and crs = C_active * R * S columns with
 * group height wuv, or 0 when an argument is not positive. */
size_t mime_phase_mask_groups(int k_active, int crs, int wuv);

/* Encodes keep[0..n_groups) (0 = pruned, anything else = kept) as above. On success
 * *ret_data is a malloc'ed array (caller frees; not NULL even when nothing is kept) of
 * *ret_n_kept values of type *ret_dtype (MIME_DTYPE_U16 or MIME_DTYPE_U32). Fails with
 * MIME_EINVAL when n_groups exceeds 2^32 (a group index must fit U32), or -ENOMEM. */
int mime_phase_mask_encode(const uint8_t *keep, size_t n_groups, enum mime_dtype *ret_dtype,
                           void **ret_data, size_t *ret_n_kept);

/* Decodes n_values values of dtype (U16 or U32, little endian) at data into keep flags
 * ret_keep[0..n_groups) (1 = kept, 0 = pruned); ret_keep may be NULL to only validate.
 * Fails with MIME_EFORMAT, ei naming the check, for another dtype, more values than groups,
 * a difference of 0 after the first value (a group twice or out of order), or an index at
 * or beyond n_groups (including a running sum that would overflow); ret_keep is then
 * unspecified. */
int mime_phase_mask_decode(enum mime_dtype dtype, const void *data, size_t n_values,
                           size_t n_groups, uint8_t *ret_keep, struct mime_errinfo *ei);
