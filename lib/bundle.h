/* SPDX-License-Identifier: MIT */
/* bundle -- open, validate and write *.mime files (safetensors layout).
 *
 * File layout (safetensors): 8-byte little-endian header length N; N bytes of JSON header
 * {"__metadata__": {"mime": "<manifest JSON>"}, "<tensor>": {"dtype":"F32","shape":[...],
 * "data_offsets":[begin,end]}, ...}; then the raw little-endian tensor bytes. Offsets are
 * relative to the byte after the header, must not overlap and must cover the data exactly.
 * The writer pads the header with spaces so the data starts 64-byte aligned.
 *
 * Ownership: a bundle owns its read-only mapping of the file; tensor views handed out by
 * mime_bundle_tensor() borrow from it and die with mime_bundle_close().
 * Threads: immutable once open (but for the F16 decoding cache of mime_bundle_tensor_f32,
 * which locks), so any thread may read it; open and close on one thread. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "lib/manifest.h"

#define MIME_MAX_DIMS 8

enum mime_dtype {
	MIME_DTYPE_F32,
	MIME_DTYPE_U8,
	MIME_DTYPE_I32,
	MIME_DTYPE_U16,
	/* Appended: the other safetensors dtypes, so that PyTorch files (BatchNorm's I64
	 * num_batches_tracked, F16 checkpoints) open; bundles themselves use F32. */
	MIME_DTYPE_F16,
	MIME_DTYPE_BF16,
	MIME_DTYPE_F64,
	MIME_DTYPE_I8,
	MIME_DTYPE_I16,
	MIME_DTYPE_I64,
	MIME_DTYPE_U32,
	MIME_DTYPE_U64,
	MIME_DTYPE_BOOL,
};

/* The safetensors spelling ("F32", ...) and the element size in bytes of a dtype. */
const char *mime_dtype_name(enum mime_dtype dtype);
size_t mime_dtype_size(enum mime_dtype dtype);

struct mime_tensor_view {
	const char *name;
	enum mime_dtype dtype;
	int ndim;
	int64_t shape[MIME_MAX_DIMS];
	const void *data; /* 4-byte aligned for F32 and I32 */
	size_t n_bytes;
};

struct mime_bundle; /* opaque */

/* Maps and validates path completely: header, every tensor entry, the manifest and that
 * every tensor the manifest implies exists with the right dtype and shape. On success
 * *ret_bundle owns the mapping; on failure returns MIME_EFORMAT (or -errno) and ei says
 * which tensor / field and which check failed. Never reads out of bounds. */
int mime_bundle_open(const char *path, struct mime_bundle **ret_bundle, struct mime_errinfo *ei);
/* The same, from memory the caller keeps alive (used by tests and fuzzing). */
int mime_bundle_open_memory(const void *data, size_t size, struct mime_bundle **ret_bundle,
                            struct mime_errinfo *ei);
void mime_bundle_close(struct mime_bundle *b); /* NULL is a no-op */

/* A plain safetensors file (as PyTorch or numpy write it): the same layout checks as
 * mime_bundle_open() (header, entries, offsets, coverage, alignment), but no manifest is
 * required or checked; __metadata__ is optional. The result is a struct mime_bundle whose
 * mime_bundle_manifest() is NULL; close it with mime_bundle_close(). */
int mime_safetensors_open(const char *path, struct mime_bundle **ret_bundle,
                          struct mime_errinfo *ei);
int mime_safetensors_open_memory(const void *data, size_t size, struct mime_bundle **ret_bundle,
                                 struct mime_errinfo *ei);

/* The bundle's manifest; NULL only for files opened with mime_safetensors_open*(). */
const struct mime_manifest *mime_bundle_manifest(const struct mime_bundle *b);
/* The value of key in the safetensors __metadata__ map, or NULL (borrowed from b). */
const char *mime_bundle_metadata(const struct mime_bundle *b, const char *key);

/* Looks a tensor up by name; returns 0, or MIME_EFORMAT when absent. */
int mime_bundle_tensor(const struct mime_bundle *b, const char *name,
                       struct mime_tensor_view *ret_view);
/* The values of tensor name as floats: an F32 tensor's view, or an F16 tensor decoded once,
 * on first use, into memory b owns (exact: every half is a float; the file pages the halves
 * lay in are then dropped from memory when b is a file mapping). The pointer lives as long
 * as b. Any thread may call this (the decoding is serialised). Returns 0, MIME_EFORMAT (no
 * such tensor, or not F32/F16) or -ENOMEM. */
int mime_bundle_tensor_f32(const struct mime_bundle *b, const char *name, const float **ret);
/* Sparse task tensors. A task's own tensor X ("task/...": a head or thresholds, which are
 * mostly zero once pruned) may be stored instead as two tensors: X.mask, U8 [ceil(n/8)], bit
 * j % 8 (least significant first) of byte j / 8 set when element j of X (row-major) is
 * non-zero, no bit set past n; and X.values, F32 or F16 [bits set], those elements in order.
 * The reader checks the pair as it checks a dense X (and rejects both forms at once);
 * mime_bundle_tensor(b, "X") does not find it, mime_bundle_tensor_f32(b, "X") hands out the
 * dense floats (decoded on first use, like F16; the array holds 8 * ceil(n/8) floats, the
 * tail 0). */
#define MIME_SPARSE_MASK   ".mask"
#define MIME_SPARSE_VALUES ".values"
/* Whether tensor name is in b, dense or sparse. */
int mime_bundle_has_tensor(const struct mime_bundle *b, const char *name);
size_t mime_bundle_n_tensors(const struct mime_bundle *b);
/* The i-th tensor in file order (ascending data offset; see mime_bundle_writer_write()). */
void mime_bundle_tensor_at(const struct mime_bundle *b, size_t i,
                           struct mime_tensor_view *ret_view);
size_t mime_bundle_size_bytes(const struct mime_bundle *b);
/* True when the bundle is a read-only private mapping of its file (mime_bundle_open): its
 * pages can be dropped from memory (MADV_DONTNEED) and are read back from the file when
 * touched again. False for mime_bundle_open_memory. */
int mime_bundle_is_mapped(const struct mime_bundle *b);

/* Writer: collects tensors (copies them) and writes a bundle in one go.
 * _add() returns 0, -ENOMEM, or MIME_EINVAL for a bad name / ndim / shape or a name added
 * twice. Tensor data is in host order; hosts are little endian (checked at build). */
struct mime_bundle_writer;
int mime_bundle_writer_create(struct mime_bundle_writer **ret_writer);
void mime_bundle_writer_destroy(struct mime_bundle_writer *w);
int mime_bundle_writer_add(struct mime_bundle_writer *w, const char *name, enum mime_dtype dtype,
                           int ndim, const int64_t *shape, const void *data);
/* Adds data[0..n) (n = the product of shape) as the sparse tensor name (see above): name.mask
 * and name.values (F32; `mime-train bundle half` makes them F16). Returns as _add(). */
int mime_bundle_writer_add_sparse(struct mime_bundle_writer *w, const char *name, int ndim,
                                  const int64_t *shape, const float *data);
/* Adds the fine-grain mask of layer in phase p (1-based) as tensor "phase/<p>/<layer>.mask":
 * keep[0..n_groups) (non-zero = kept) encoded with mime_phase_mask_encode() (lib/phase.h:
 * first kept group + deltas, U16 or U32). Returns 0, MIME_EINVAL (p < 1, bad name, too many
 * groups, a name added twice) or -ENOMEM. */
int mime_bundle_writer_add_mask(struct mime_bundle_writer *w, int p, const char *layer,
                                const uint8_t *keep, size_t n_groups);
/* Writes the manifest and all tensors to path (via a temporary file in the same directory,
 * fsync and rename). Tensors go to the file in the order they were added, except that wider
 * element types come first (F32 before U16 masks, ...), so each stays aligned to its element
 * size whatever order the caller used. The result is validated with mime_bundle_open_memory()
 * before it is written, so a writer never produces a file the reader rejects: a manifest that does
 * not match the tensors fails with MIME_EFORMAT and nothing is written. m may be NULL to
 * write a plain safetensors file (no manifest, checked like mime_safetensors_open()). */
int mime_bundle_writer_write(struct mime_bundle_writer *w, const struct mime_manifest *m,
                             const char *path, struct mime_errinfo *ei);
