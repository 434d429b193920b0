/* SPDX-License-Identifier: MIT */
/* phase -- one phase of a multi-phase network (the Multi-phase CNN paper): a nested
 * sub-network of the parent. Coarse grain: the first k_active kernels of every conv / fc
 * layer (weights are stored phase-major, so a phase's kernels come first and the next
 * layer's input channels follow); fine grain: groups of W_uv consecutive rows of the im2col
 * weight matrix W' [kernels, C*R*S] at one column are kept or pruned together.
 * Ownership: plain data; keep masks are borrowed by whoever is handed the phase (an engine
 * reads them while entering the phase only).
 * Threads: immutable data. */
#pragma once

#include <stdint.h>

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
