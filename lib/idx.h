/* SPDX-License-Identifier: MIT */
/* idx -- read and write IDX files (the MNIST / Fashion-MNIST format), raw or gzip.
 * Format: magic 0x00 0x00 <type> <ndim>, then ndim big-endian uint32 dimensions, then the
 * data (type 0x08 = uint8 only). Images are [n, rows, cols], labels [n].
 * Ownership: a struct mime_idx owns its data; mime_idx_free() releases it.
 * Threads: reentrant. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "lib/error.h"

struct mime_idx {
	int ndim;
	uint32_t dims[4];
	size_t n_bytes;
	uint8_t *data;
};

/* Reads path (gzip-compressed when it starts with the gzip magic). Fails with MIME_EDATA
 * when the magic, type, dimensions or size are wrong (ei names the check), -errno. */
int mime_idx_read(const char *path, struct mime_idx *ret_idx, struct mime_errinfo *ei);
/* Writes an IDX uint8 file, gzip-compressed when path ends in ".gz". */
int mime_idx_write(const char *path, int ndim, const uint32_t *dims, const uint8_t *data,
                   struct mime_errinfo *ei);
void mime_idx_free(struct mime_idx *idx);

/* Reads an images file and a labels file and checks that they agree (same count, labels
 * below n_classes when n_classes > 0). */
int mime_idx_read_pair(const char *images, const char *labels, int n_classes,
                       struct mime_idx *ret_images, struct mime_idx *ret_labels,
                       struct mime_errinfo *ei);
