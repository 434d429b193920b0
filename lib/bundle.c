// SPDX-License-Identifier: MIT
/* bundle -- open, validate and write *.mime files (safetensors layout); see bundle.h.
 * Ownership: a bundle owns its mapping (or borrows the caller's memory for _open_memory),
 * the parsed JSON header (tensor names borrow from it) and its manifest. A writer owns
 * copies of every tensor added to it.
 * Threads: an open bundle is immutable; a writer belongs to one thread.
 *
 * Format, as parsed below:
 *   bytes 0..7      header length N, unsigned 64-bit little endian (read byte by byte)
 *   bytes 8..8+N-1  JSON object, UTF-8, may end in spaces (padding):
 *                   "__metadata__": {string: string, ...}   (optional for plain safetensors;
 *                                   bundles need "mime": the manifest JSON)
 *                   "<tensor name>": {"dtype": "F32", "shape": [d0, ...],
 *                                     "data_offsets": [begin, end]}
 *   bytes 8+N..     tensor data; [begin, end) relative to 8+N. Sorted by begin, the ranges
 *                   must tile the data exactly: no overlap, no gap, no trailing byte.
 * F32 and I32 tensors must be 4-byte aligned in memory (true for any file whose data starts
 * at a multiple of 4, e.g. ours at 64 and PyTorch's at 8). */
#include "lib/bundle.h"

#include "lib/half.h"
#include "lib/phase.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "mime bundles hold little-endian data and the reader maps them as they are"
#endif

#define HEADER_MAX_BYTES (100u << 20) /* safetensors' own limit */
#define WRITE_ALIGN      64
#define MSG_NAME         "%.96s" /* tensor names in messages: keep room for the check */

static const struct {
	const char *name;
	size_t size;
} dtypes[] = {
	[MIME_DTYPE_F32] = {"F32", 4},   [MIME_DTYPE_U8] = {"U8", 1},
	[MIME_DTYPE_I32] = {"I32", 4},   [MIME_DTYPE_U16] = {"U16", 2},
	[MIME_DTYPE_F16] = {"F16", 2},   [MIME_DTYPE_BF16] = {"BF16", 2},
	[MIME_DTYPE_F64] = {"F64", 8},   [MIME_DTYPE_I8] = {"I8", 1},
	[MIME_DTYPE_I16] = {"I16", 2},   [MIME_DTYPE_I64] = {"I64", 8},
	[MIME_DTYPE_U32] = {"U32", 4},   [MIME_DTYPE_U64] = {"U64", 8},
	[MIME_DTYPE_BOOL] = {"BOOL", 1},
};
#define N_DTYPES (sizeof(dtypes) / sizeof(dtypes[0]))

const char *mime_dtype_name(enum mime_dtype dtype)
{
	return (unsigned)dtype < N_DTYPES ? dtypes[dtype].name : "?";
}

size_t mime_dtype_size(enum mime_dtype dtype)
{
	return (unsigned)dtype < N_DTYPES ? dtypes[dtype].size : 0;
}

static int dtype_parse(const char *s, enum mime_dtype *ret)
{
	for (unsigned i = 0; i < N_DTYPES; i++)
		if (strcmp(s, dtypes[i].name) == 0) {
			*ret = (enum mime_dtype)i;
			return 0;
		}
	return -1;
}

struct bundle_tensor {
	const char *name; /* borrowed from mime_bundle.header */
	enum mime_dtype dtype;
	int ndim;
	int64_t shape[MIME_MAX_DIMS];
	size_t begin, end; /* relative to the data section */
	float *decoded;    /* F16: its values as F32, made on first use (mime_bundle_tensor_f32);
	                    * the U8 mask of a sparse tensor: the dense floats it stands for */
};

struct mime_bundle {
	const uint8_t *base;
	size_t size;
	int mapped; /* base is our mmap (else the caller's memory) */
	const uint8_t *data;
	size_t data_bytes;
	json_t *header;
	json_t *metadata; /* borrowed from header; may be NULL */
	size_t n_tensors;
	struct bundle_tensor *tensors;  /* file order */
	struct bundle_tensor **by_name; /* sorted by name */
	int has_manifest;
	struct mime_manifest manifest;
	pthread_mutex_t decode_lock; /* guards every tensor's decoded */
};

static int tensor_cmp_offset(const void *a, const void *b)
{
	const struct bundle_tensor *x = a, *y = b;

	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return strcmp(x->name, y->name);
}

static int tensor_cmp_name(const void *a, const void *b)
{
	const struct bundle_tensor *const *x = a, *const *y = b;

	return strcmp((*x)->name, (*y)->name);
}

static void shape_str(char *buf, size_t size, int ndim, const int64_t *shape)
{
	size_t o = 0;

	o += snprintf(buf + o, size - o, "[");
	for (int i = 0; i < ndim && o < size; i++)
		o += snprintf(buf + o, size - o, "%s%lld", i ? "," : "", (long long)shape[i]);
	if (o < size)
		snprintf(buf + o, size - o, "]");
}

/* Reads a JSON non-negative integer that fits size_t. */
static int get_size(json_t *v, size_t *ret)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (unsigned long long)json_integer_value(v) > SIZE_MAX)
		return -1;
	*ret = (size_t)json_integer_value(v);
	return 0;
}

static int parse_entry(struct mime_bundle *b, const char *name, json_t *e, struct bundle_tensor *t,
                       struct mime_errinfo *ei)
{
	const char *key;
	json_t *v, *shape, *offs;
	size_t numel = 1, n_bytes;

	t->name = name;
	if (name[0] == '\0')
		return mime_errinfo_set(ei, MIME_EFORMAT, "header: a tensor has an empty name");
	if (!json_is_object(e))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "': entry is not an object", name);
	json_object_foreach(e, key, v)
	{
		if (strcmp(key, "dtype") != 0 && strcmp(key, "shape") != 0 &&
		    strcmp(key, "data_offsets") != 0)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "tensor '" MSG_NAME "': unknown key '%.32s'", name,
			                        key);
	}

	v = json_object_get(e, "dtype");
	if (!json_is_string(v))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "': dtype missing or not a string",
		                        name);
	if (dtype_parse(json_string_value(v), &t->dtype) < 0)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "': unknown dtype '%.16s'", name,
		                        json_string_value(v));

	shape = json_object_get(e, "shape");
	if (!json_is_array(shape))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "': shape missing or not a list", name);
	if (json_array_size(shape) > MIME_MAX_DIMS)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "': shape has %zu dims (at most %d)",
		                        name, json_array_size(shape), MIME_MAX_DIMS);
	t->ndim = (int)json_array_size(shape);
	for (int i = 0; i < t->ndim; i++) {
		size_t d;

		if (get_size(json_array_get(shape, i), &d) < 0 || d > INT64_MAX)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "tensor '" MSG_NAME
			                        "': shape[%d] is not a non-negative integer",
			                        name, i);
		if (d != 0 && numel > SIZE_MAX / d)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "tensor '" MSG_NAME "': element count overflows",
			                        name);
		numel *= d;
		t->shape[i] = (int64_t)d;
	}
	if (numel > SIZE_MAX / dtypes[t->dtype].size)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "': byte size overflows", name);
	n_bytes = numel * dtypes[t->dtype].size;

	offs = json_object_get(e, "data_offsets");
	if (!json_is_array(offs) || json_array_size(offs) != 2 ||
	    get_size(json_array_get(offs, 0), &t->begin) < 0 ||
	    get_size(json_array_get(offs, 1), &t->end) < 0)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "': data_offsets is not [begin,end]",
		                        name);
	if (t->begin > t->end)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "': data_offsets begin %zu > end %zu",
		                        name, t->begin, t->end);
	if (t->end > b->data_bytes)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "': data_offsets end %zu out of range "
		                        "(data is %zu bytes)",
		                        name, t->end, b->data_bytes);
	if (t->end - t->begin != n_bytes)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "': data_offsets span %zu bytes, "
		                        "shape and dtype need %zu",
		                        name, t->end - t->begin, n_bytes);
	if ((t->dtype == MIME_DTYPE_F32 || t->dtype == MIME_DTYPE_I32) &&
	    (uintptr_t)(b->data + t->begin) % 4 != 0)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME
		                        "': %s data at offset %zu is not 4-byte "
		                        "aligned",
		                        name, dtypes[t->dtype].name, t->begin);
	return 0;
}

static int parse_metadata(struct mime_bundle *b, json_t *md, struct mime_errinfo *ei)
{
	const char *key;
	json_t *v;

	if (!json_is_object(md))
		return mime_errinfo_set(ei, MIME_EFORMAT, "header: __metadata__ is not an object");
	json_object_foreach(md, key, v)
	{
		if (!json_is_string(v))
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "header: __metadata__['%.64s'] is not a string",
			                        key);
	}
	b->metadata = md;
	return 0;
}

/* Checks that the tensors tile [0, data_bytes); tensors must be sorted by offset. */
static int check_coverage(const struct mime_bundle *b, struct mime_errinfo *ei)
{
	size_t at = 0;

	for (size_t i = 0; i < b->n_tensors; i++) {
		const struct bundle_tensor *t = &b->tensors[i];

		if (t->begin < at)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "tensor '" MSG_NAME
			                        "': data_offsets overlap tensor "
			                        "'" MSG_NAME "'",
			                        t->name, b->tensors[i - 1].name);
		if (t->begin > at)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "data: gap of %zu bytes before tensor '" MSG_NAME
			                        "'",
			                        t->begin - at, t->name);
		at = t->end;
	}
	if (at != b->data_bytes)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "data: %zu trailing bytes not covered by any tensor",
		                        b->data_bytes - at);
	return 0;
}

static const struct bundle_tensor *find(const struct mime_bundle *b, const char *name)
{
	struct bundle_tensor key = {.name = name}, *kp = &key, **hit;

	if (b->n_tensors == 0)
		return NULL;
	hit = bsearch(&kp, b->by_name, b->n_tensors, sizeof(*b->by_name), tensor_cmp_name);
	return hit ? *hit : NULL;
}

/* The part (MIME_SPARSE_MASK or _VALUES) of the sparse form of tensor name, or NULL. */
static const struct bundle_tensor *sparse_part(const struct mime_bundle *b, const char *name,
                                               const char *suffix)
{
	char part[2 * MIME_NAME_MAX + 64];

	if ((size_t)snprintf(part, sizeof(part), "%s%s", name, suffix) >= sizeof(part))
		return NULL;
	return find(b, part);
}

static int expect_sparse(const struct mime_bundle *b, const char *name, int ndim,
                         const int64_t *shape, const char *what, struct mime_errinfo *ei);

/* One tensor the manifest implies: present, F32 (or where f16_ok, a task's head and
 * thresholds: F16 too, or sparse), of exactly this shape. */
static int expect_dtype(const struct mime_bundle *b, const char *name, int ndim,
                        const int64_t *shape, const char *what, int f16_ok, struct mime_errinfo *ei)
{
	const struct bundle_tensor *t = find(b, name);
	char want[96], have[96];

	if (!t && f16_ok)
		return expect_sparse(b, name, ndim, shape, what, ei);
	if (!t)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "' missing (the manifest's %s)", name,
		                        what);
	if (f16_ok &&
	    (sparse_part(b, name, MIME_SPARSE_MASK) || sparse_part(b, name, MIME_SPARSE_VALUES)))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "' is stored both dense and sparse "
		                        "(" MSG_NAME "%s)",
		                        name, name,
		                        sparse_part(b, name, MIME_SPARSE_MASK)
		                                ? MIME_SPARSE_MASK
		                                : MIME_SPARSE_VALUES);
	if (t->dtype != MIME_DTYPE_F32 && !(f16_ok && t->dtype == MIME_DTYPE_F16))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "': dtype %s, expected F32%s", name,
		                        dtypes[t->dtype].name, f16_ok ? " or F16" : "");
	if (t->ndim != ndim || memcmp(t->shape, shape, ndim * sizeof(*shape)) != 0) {
		shape_str(want, sizeof(want), ndim, shape);
		shape_str(have, sizeof(have), t->ndim, t->shape);
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "': shape %s, expected %s (%s)", name,
		                        have, want, what);
	}
	return 0;
}

static int expect(const struct mime_bundle *b, const char *name, int ndim, const int64_t *shape,
                  const char *what, struct mime_errinfo *ei)
{
	return expect_dtype(b, name, ndim, shape, what, 0, ei);
}

/* A task's own tensor (head, thresholds): F32 or F16. */
static int expect_task(const struct mime_bundle *b, const char *name, int ndim,
                       const int64_t *shape, const char *what, struct mime_errinfo *ei)
{
	return expect_dtype(b, name, ndim, shape, what, 1, ei);
}

/* Tensor name of this shape in its sparse form (bundle.h): a U8 mask of ceil(n/8) bytes
 * with no bit set past n, and as many F32 or F16 values as it has bits set. */
static int expect_sparse(const struct mime_bundle *b, const char *name, int ndim,
                         const int64_t *shape, const char *what, struct mime_errinfo *ei)
{
	const struct bundle_tensor *mask = sparse_part(b, name, MIME_SPARSE_MASK);
	const struct bundle_tensor *vals = sparse_part(b, name, MIME_SPARSE_VALUES);
	const uint8_t *bits;
	uint64_t n = 1, nnz = 0;

	if (!mask && !vals)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "' missing (the manifest's %s)", name,
		                        what);
	if (!mask || !vals)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "%s' missing (sparse '" MSG_NAME
		                        "' has its %s only)",
		                        name, mask ? MIME_SPARSE_VALUES : MIME_SPARSE_MASK, name,
		                        mask ? "mask" : "values");
	for (int i = 0; i < ndim; i++)
		n *= (uint64_t)shape[i];
	if (mask->dtype != MIME_DTYPE_U8 || mask->ndim != 1 ||
	    (uint64_t)mask->shape[0] != (n + 7) / 8)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "%s': expected U8 [%llu] (a bit per "
		                        "element of %s)",
		                        name, MIME_SPARSE_MASK, (unsigned long long)((n + 7) / 8),
		                        what);
	bits = b->data + mask->begin;
	for (uint64_t j = 0; j < (uint64_t)mask->shape[0]; j++)
		nnz += (uint64_t)__builtin_popcount(bits[j]);
	if (n % 8 && (bits[n / 8] >> (n % 8)) != 0)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "%s': bits set past its %llu elements",
		                        name, MIME_SPARSE_MASK, (unsigned long long)n);
	if ((vals->dtype != MIME_DTYPE_F32 && vals->dtype != MIME_DTYPE_F16) || vals->ndim != 1 ||
	    (uint64_t)vals->shape[0] != nnz)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "%s': expected F32 or F16 [%llu] (the "
		                        "mask's set bits)",
		                        name, MIME_SPARSE_VALUES, (unsigned long long)nnz);
	return 0;
}

/* The tensors of one (task, phase): all of them or none (then the task cannot run in that
 * phase; lib/model decides what that means). */
static int check_task_phase(const struct mime_bundle *b, const struct mime_task_spec *t, int p,
                            const struct mime_shape *out, struct mime_errinfo *ei)
{
	const struct mime_graph *g = &b->manifest.graph;
	char name[2 * MIME_NAME_MAX + 48], what[64];
	struct mime_shape feat = out[g->n_layers - 1];
	int64_t s[3];
	int r;

	snprintf(name, sizeof(name), "task/%s/phase%d/head.weight", t->name, p);
	if (!mime_bundle_has_tensor(b, name)) {
		/* None of them: the task does not run in this phase. Some: the head is missing. */
		char other[sizeof(name)];
		int present;

		snprintf(other, sizeof(other), "task/%s/phase%d/head.bias", t->name, p);
		present = mime_bundle_has_tensor(b, other);
		for (int i = 0; !present && t->thresholds != MIME_THR_NONE && i < g->n_layers;
		     i++) {
			if (!mime_graph_layer_masked(g, i))
				continue;
			snprintf(other, sizeof(other), "task/%s/phase%d/%s.threshold", t->name, p,
			         g->layers[i].name);
			present = mime_bundle_has_tensor(b, other);
		}
		if (!present)
			return 0;
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "tensor '" MSG_NAME "' missing (phase %d of task '%s' has "
		                        "'" MSG_NAME "': a task has all of a phase's tensors or "
		                        "none)",
		                        name, p, t->name, other);
	}
	s[0] = t->n_classes;
	s[1] = mime_shape_size(&feat);
	snprintf(what, sizeof(what), "phase %d head weight [n_classes,features]", p);
	r = expect_task(b, name, 2, s, what, ei);
	if (r < 0)
		return r;
	snprintf(name, sizeof(name), "task/%s/phase%d/head.bias", t->name, p);
	snprintf(what, sizeof(what), "phase %d head bias [n_classes]", p);
	r = expect_task(b, name, 1, s, what, ei);
	if (r < 0 || t->thresholds == MIME_THR_NONE)
		return r;
	for (int i = 0; i < g->n_layers; i++) {
		if (!mime_graph_layer_masked(g, i))
			continue;
		s[0] = out[i].c;
		s[1] = out[i].h;
		s[2] = out[i].w;
		snprintf(name, sizeof(name), "task/%s/phase%d/%s.threshold", t->name, p,
		         g->layers[i].name);
		if (t->thresholds == MIME_THR_ELEMENT) {
			snprintf(what, sizeof(what), "phase %d element thresholds [k_active,H,W]",
			         p);
			r = expect_task(b, name, 3, s, what, ei);
		} else {
			snprintf(what, sizeof(what), "phase %d channel thresholds [k_active]", p);
			r = expect_task(b, name, 1, s, what, ei);
		}
		if (r < 0)
			return r;
	}
	return 0;
}

/* Phase p's fine-grain masks (present, U16/U32, [n_kept], decodable) and per-task tensors. */
static int check_phase(const struct mime_bundle *b, int p, struct mime_errinfo *ei)
{
	const struct mime_manifest *m = &b->manifest;
	const struct mime_phase_spec *ph = &m->phases[p - 1];
	const struct mime_graph *g = &m->graph;
	struct mime_shape in[MIME_MAX_LAYERS], out[MIME_MAX_LAYERS];
	char name[MIME_NAME_MAX + 32];
	int r;

	r = mime_phase_shapes(g, ph->k_active, in, out);
	if (r < 0)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: phases[%d]: kernels out of "
		                        "range",
		                        p - 1); /* parse checked it already */
	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];
		const struct bundle_tensor *t;
		size_t n_groups;

		if (!ph->fine[i])
			continue;
		snprintf(name, sizeof(name), "phase/%d/%s.mask", p, l->name);
		t = find(b, name);
		if (!t)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "tensor '" MSG_NAME
			                        "' missing (phase %d lists '%s' "
			                        "as fine)",
			                        name, p, l->name);
		if (t->dtype != MIME_DTYPE_U16 && t->dtype != MIME_DTYPE_U32)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "tensor '" MSG_NAME
			                        "': dtype %s, expected U16 or U32",
			                        name, dtypes[t->dtype].name);
		if (t->ndim != 1)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "tensor '" MSG_NAME "': %d dims, expected [n_kept]",
			                        name, t->ndim);
		n_groups =
			mime_phase_mask_groups(out[i].c, in[i].c * l->kernel * l->kernel, ph->wuv);
		r = mime_phase_mask_decode(t->dtype, b->data + t->begin, (size_t)t->shape[0],
		                           n_groups, NULL, ei);
		if (r < 0) {
			if (ei) {
				char msg[sizeof(ei->msg)];

				snprintf(msg, sizeof(msg), "%s", ei->msg);
				mime_errinfo_set(ei, r, "tensor '" MSG_NAME "': %s", name, msg);
			}
			return r;
		}
	}
	for (int k = 0; k < m->n_tasks; k++) {
		r = check_task_phase(b, &m->tasks[k], p, out, ei);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Layer i's keep flags in phase p (1-based; masks already checked) into a new array, or
 * *ret_keep = NULL when the layer has no mask there (every group kept). */
static int phase_keep(const struct mime_bundle *b, int p, int i, const struct mime_shape *in,
                      const struct mime_shape *out, uint8_t **ret_keep, size_t *ret_crs)
{
	const struct mime_phase_spec *ph = &b->manifest.phases[p - 1];
	const struct mime_layer_spec *l = &b->manifest.graph.layers[i];
	char name[MIME_NAME_MAX + 32];
	const struct bundle_tensor *t;
	size_t n_groups;
	uint8_t *keep;

	*ret_crs = (size_t)in[i].c * l->kernel * l->kernel;
	*ret_keep = NULL;
	if (!ph->fine[i])
		return 0;
	n_groups = mime_phase_mask_groups(out[i].c, (int)*ret_crs, ph->wuv);
	snprintf(name, sizeof(name), "phase/%d/%s.mask", p, l->name);
	t = find(b, name);
	keep = malloc(n_groups ? n_groups : 1);
	if (!keep)
		return -ENOMEM;
	if (mime_phase_mask_decode(t->dtype, b->data + t->begin, (size_t)t->shape[0], n_groups,
	                           keep, NULL) < 0) {
		free(keep);
		return MIME_EFORMAT; /* check_phase() accepted it: cannot happen */
	}
	*ret_keep = keep;
	return 0;
}

/* Nesting of the fine grain: every weight phase p keeps (first k_active rows, first
 * C_active*R*S columns of W', less its pruned groups) is kept by phase p+1 too, since the
 * phases share the parent's weights and a larger phase contains the smaller one. */
static int check_nested_masks(const struct mime_bundle *b, int p, struct mime_errinfo *ei)
{
	const struct mime_manifest *m = &b->manifest;
	const struct mime_phase_spec *lo = &m->phases[p - 1], *hi = &m->phases[p];
	struct mime_shape in_lo[MIME_MAX_LAYERS], out_lo[MIME_MAX_LAYERS];
	struct mime_shape in_hi[MIME_MAX_LAYERS], out_hi[MIME_MAX_LAYERS];
	int r;

	if (mime_phase_shapes(&m->graph, lo->k_active, in_lo, out_lo) < 0 ||
	    mime_phase_shapes(&m->graph, hi->k_active, in_hi, out_hi) < 0)
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: phases: kernels out of range");
	for (int i = 0; i < m->graph.n_layers; i++) {
		uint8_t *k_lo = NULL, *k_hi = NULL;
		int step = lo->wuv < hi->wuv ? lo->wuv : hi->wuv;
		size_t crs_lo, crs_hi;

		if (!hi->fine[i])
			continue; /* phase p+1 keeps all of its (larger) rectangle */
		r = phase_keep(b, p, i, in_lo, out_lo, &k_lo, &crs_lo);
		if (r == 0)
			r = phase_keep(b, p + 1, i, in_hi, out_hi, &k_hi, &crs_hi);
		/* W_uv is 4, 8 or 16: blocks of the smaller one never straddle a group of
		 * either phase, so one row per block decides it. */
		for (int k = 0; r == 0 && k < out_lo[i].c; k += step)
			for (size_t c = 0; c < crs_lo; c++) {
				int kept_lo = !k_lo || k_lo[(size_t)(k / lo->wuv) * crs_lo + c];

				if (!kept_lo || k_hi[(size_t)(k / hi->wuv) * crs_hi + c])
					continue;
				r = mime_errinfo_set(
					ei, MIME_EFORMAT,
					"tensor 'phase/%d/%s.mask': prunes kernel %d, "
					"column %zu, which phase %d keeps: phases must "
					"be nested",
					p + 1, m->graph.layers[i].name, k, c, p);
				break;
			}
		free(k_lo);
		free(k_hi);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Every tensor the manifest implies, phases included; the layout is in manifest.h. Element
 * thresholds are [C,H,W] of the layer's output, also for fc layers ([out,1,1]); channel
 * thresholds [C]. */
static int check_implied(const struct mime_bundle *b, struct mime_errinfo *ei)
{
	const struct mime_manifest *m = &b->manifest;
	const struct mime_graph *g = &m->graph;
	struct mime_shape shapes[MIME_MAX_LAYERS], feat;
	char name[2 * MIME_NAME_MAX + 32];
	int64_t s[4];
	int r;

	r = mime_graph_check(g, shapes, ei);
	if (r < 0)
		return r; /* parse checked it already */
	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];
		const struct mime_shape *in = i ? &shapes[i - 1] : &g->input;

		if (l->kind == MIME_LAYER_CONV) {
			s[0] = l->out;
			s[1] = in->c;
			s[2] = s[3] = l->kernel;
			snprintf(name, sizeof(name), "parent/%s.weight", l->name);
			r = expect(b, name, 4, s, "conv weight [K,C,R,S]", ei);
		} else if (l->kind == MIME_LAYER_FC) {
			s[0] = l->out;
			s[1] = mime_shape_size(in);
			snprintf(name, sizeof(name), "parent/%s.weight", l->name);
			r = expect(b, name, 2, s, "fc weight [out,in]", ei);
		} else {
			continue;
		}
		if (r < 0)
			return r;
		snprintf(name, sizeof(name), "parent/%s.bias", l->name);
		r = expect(b, name, 1, s, "bias [K]", ei);
		if (r < 0)
			return r;
	}

	feat = shapes[g->n_layers - 1];
	for (int k = 0; k < m->n_tasks; k++) {
		const struct mime_task_spec *t = &m->tasks[k];

		s[0] = t->n_classes;
		s[1] = mime_shape_size(&feat);
		snprintf(name, sizeof(name), "task/%s/head.weight", t->name);
		r = expect_task(b, name, 2, s, "head weight [n_classes,features]", ei);
		if (r < 0)
			return r;
		snprintf(name, sizeof(name), "task/%s/head.bias", t->name);
		r = expect_task(b, name, 1, s, "head bias [n_classes]", ei);
		if (r < 0)
			return r;
		if (t->thresholds == MIME_THR_NONE)
			continue;
		for (int i = 0; i < g->n_layers; i++) {
			if (!mime_graph_layer_masked(g, i))
				continue;
			s[0] = shapes[i].c;
			s[1] = shapes[i].h;
			s[2] = shapes[i].w;
			snprintf(name, sizeof(name), "task/%s/%s.threshold", t->name,
			         g->layers[i].name);
			if (t->thresholds == MIME_THR_ELEMENT)
				r = expect_task(b, name, 3, s, "element thresholds [C,H,W]", ei);
			else
				r = expect_task(b, name, 1, s, "channel thresholds [C]", ei);
			if (r < 0)
				return r;
		}
	}
	for (int p = 1; p <= m->n_phases; p++) {
		r = check_phase(b, p, ei);
		if (r < 0)
			return r;
	}
	for (int p = 1; p < m->n_phases; p++) {
		r = check_nested_masks(b, p, ei);
		if (r < 0)
			return r;
	}
	return 0;
}

static int bundle_parse(struct mime_bundle *b, int want_manifest, struct mime_errinfo *ei)
{
	const char *key;
	json_error_t jerr;
	json_t *v, *mime;
	uint64_t n = 0;
	size_t i = 0;
	int r;

	if (b->size < 8)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "file is %zu bytes, shorter than the 8-byte header length",
		                        b->size);
	for (int k = 7; k >= 0; k--)
		n = n << 8 | b->base[k];
	if (n > HEADER_MAX_BYTES)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "header length %llu is absurd (more than 100 MiB)",
		                        (unsigned long long)n);
	if (n > b->size - 8)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "header length %llu beyond the end of the file (%zu bytes)",
		                        (unsigned long long)n, b->size);
	b->data = b->base + 8 + n;
	b->data_bytes = b->size - 8 - n;

	b->header = json_loadb((const char *)b->base + 8, n, JSON_REJECT_DUPLICATES, &jerr);
	if (!b->header)
		return mime_errinfo_set(ei, MIME_EFORMAT, "header: invalid JSON at byte %d: %s",
		                        jerr.position, jerr.text);
	if (!json_is_object(b->header))
		return mime_errinfo_set(ei, MIME_EFORMAT, "header: not a JSON object");

	b->n_tensors = json_object_size(b->header);
	if (json_object_get(b->header, "__metadata__"))
		b->n_tensors--;
	if (b->n_tensors) {
		b->tensors = calloc(b->n_tensors, sizeof(*b->tensors));
		b->by_name = calloc(b->n_tensors, sizeof(*b->by_name));
		if (!b->tensors || !b->by_name)
			return -ENOMEM;
	}
	json_object_foreach(b->header, key, v)
	{
		if (strcmp(key, "__metadata__") == 0) {
			r = parse_metadata(b, v, ei);
		} else {
			r = parse_entry(b, key, v, &b->tensors[i], ei);
			i++;
		}
		if (r < 0)
			return r;
	}
	qsort(b->tensors, b->n_tensors, sizeof(*b->tensors), tensor_cmp_offset);
	r = check_coverage(b, ei);
	if (r < 0)
		return r;
	for (i = 0; i < b->n_tensors; i++)
		b->by_name[i] = &b->tensors[i];
	qsort(b->by_name, b->n_tensors, sizeof(*b->by_name), tensor_cmp_name);

	if (!want_manifest)
		return 0;
	if (!b->metadata)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "header: __metadata__ missing (not a mime bundle)");
	mime = json_object_get(b->metadata, "mime");
	if (!mime)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "header: __metadata__ has no \"mime\" manifest");
	r = mime_manifest_parse(json_string_value(mime), json_string_length(mime), &b->manifest,
	                        ei);
	if (r == -ENOMEM)
		return r;
	if (r < 0) { /* a bad graph is a bad bundle */
		if (ei)
			ei->code = MIME_EFORMAT;
		return MIME_EFORMAT;
	}
	b->has_manifest = 1;
	return check_implied(b, ei);
}

void mime_bundle_close(struct mime_bundle *b)
{
	if (!b)
		return;
	if (b->has_manifest)
		mime_manifest_free(&b->manifest);
	for (size_t i = 0; b->tensors && i < b->n_tensors; i++)
		free(b->tensors[i].decoded);
	pthread_mutex_destroy(&b->decode_lock);
	free(b->by_name);
	free(b->tensors);
	json_decref(b->header);
	if (b->mapped)
		munmap((void *)b->base, b->size);
	free(b);
}

static int open_memory(const void *data, size_t size, int want_manifest,
                       struct mime_bundle **ret_bundle, struct mime_errinfo *ei)
{
	struct mime_bundle *b;
	int r;

	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	pthread_mutex_init(&b->decode_lock, NULL);
	b->base = data;
	b->size = size;
	r = bundle_parse(b, want_manifest, ei);
	if (r < 0) {
		mime_bundle_close(b);
		return r;
	}
	*ret_bundle = b;
	return 0;
}

static int open_file(const char *path, int want_manifest, struct mime_bundle **ret_bundle,
                     struct mime_errinfo *ei)
{
	struct mime_bundle *b = NULL;
	struct stat st;
	void *map;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		return mime_errinfo_set(ei, r, "cannot open: %s", strerror(-r));
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		mime_errinfo_set(ei, r, "cannot stat: %s", strerror(-r));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		r = mime_errinfo_set(ei, MIME_EFORMAT, "not a regular file");
		goto out_close;
	}
	if ((unsigned long long)st.st_size > SIZE_MAX) {
		r = mime_errinfo_set(ei, MIME_EFORMAT, "file too large to map");
		goto out_close;
	}
	if (st.st_size < 8) { /* also keeps mmap() away from empty files */
		r = mime_errinfo_set(ei, MIME_EFORMAT,
		                     "file is %lld bytes, shorter than the 8-byte header length",
		                     (long long)st.st_size);
		goto out_close;
	}
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED) {
		r = -errno;
		mime_errinfo_set(ei, r, "cannot map: %s", strerror(-r));
		goto out_close;
	}
	r = open_memory(map, (size_t)st.st_size, want_manifest, &b, ei);
	if (r < 0) {
		munmap(map, (size_t)st.st_size);
		goto out_close;
	}
	b->mapped = 1;
	*ret_bundle = b;
	r = 0;
out_close:
	close(fd);
	return r;
}

int mime_bundle_open(const char *path, struct mime_bundle **ret_bundle, struct mime_errinfo *ei)
{
	return open_file(path, 1, ret_bundle, ei);
}

int mime_bundle_open_memory(const void *data, size_t size, struct mime_bundle **ret_bundle,
                            struct mime_errinfo *ei)
{
	return open_memory(data, size, 1, ret_bundle, ei);
}

int mime_safetensors_open(const char *path, struct mime_bundle **ret_bundle,
                          struct mime_errinfo *ei)
{
	return open_file(path, 0, ret_bundle, ei);
}

int mime_safetensors_open_memory(const void *data, size_t size, struct mime_bundle **ret_bundle,
                                 struct mime_errinfo *ei)
{
	return open_memory(data, size, 0, ret_bundle, ei);
}

const struct mime_manifest *mime_bundle_manifest(const struct mime_bundle *b)
{
	return b->has_manifest ? &b->manifest : NULL;
}

const char *mime_bundle_metadata(const struct mime_bundle *b, const char *key)
{
	return b->metadata ? json_string_value(json_object_get(b->metadata, key)) : NULL;
}

static void view(const struct mime_bundle *b, const struct bundle_tensor *t,
                 struct mime_tensor_view *ret_view)
{
	memset(ret_view, 0, sizeof(*ret_view));
	ret_view->name = t->name;
	ret_view->dtype = t->dtype;
	ret_view->ndim = t->ndim;
	memcpy(ret_view->shape, t->shape, sizeof(t->shape));
	ret_view->data = b->data + t->begin;
	ret_view->n_bytes = t->end - t->begin;
}

int mime_bundle_tensor(const struct mime_bundle *b, const char *name,
                       struct mime_tensor_view *ret_view)
{
	const struct bundle_tensor *t = find(b, name);

	if (!t)
		return MIME_EFORMAT;
	view(b, t, ret_view);
	return 0;
}

int mime_bundle_has_tensor(const struct mime_bundle *b, const char *name)
{
	return find(b, name) || sparse_part(b, name, MIME_SPARSE_MASK);
}

/* Gives back the file pages wholly inside [p, p + n) of a mapped bundle (read again from the
 * file if something looks at them later). */
static void drop_pages(const struct mime_bundle *b, const uint8_t *p, size_t n)
{
	const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	const uintptr_t lo = ((uintptr_t)p + pg - 1) & ~(pg - 1);
	const uintptr_t hi = ((uintptr_t)p + n) & ~(pg - 1);

	if (b->mapped && hi > lo)
		madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* Value i of an F32 or F16 tensor at src (byte copies: any offset is fine). */
static float value_at(enum mime_dtype dtype, const uint8_t *src, size_t i)
{
	float f;
	uint16_t h;

	if (dtype == MIME_DTYPE_F32) {
		memcpy(&f, src + 4 * i, sizeof(f));
		return f;
	}
	memcpy(&h, src + 2 * i, sizeof(h));
	return mime_half_to_float(h);
}

/* The dense floats of t (F16), or of the sparse tensor whose mask t is (vals: its values),
 * into t->decoded. Called with the decode lock held. */
static int decode(const struct mime_bundle *b, struct bundle_tensor *t,
                  const struct bundle_tensor *vals)
{
	const uint8_t *src = b->data + t->begin;
	const size_t n = vals ? 8 * (t->end - t->begin) : (t->end - t->begin) / sizeof(uint16_t);

	t->decoded = malloc(sizeof(float) * (n ? n : 1));
	if (!t->decoded)
		return -ENOMEM;
	if (!vals) {
		for (size_t i = 0; i < n; i++)
			t->decoded[i] = value_at(t->dtype, src, i);
		drop_pages(b, src, t->end - t->begin);
		return 0;
	}
	/* sparse: element j is the next value when bit j is set (the reader checked the
	 * counts; bits past the tensor's elements are clear, so its tail decodes to 0) */
	for (size_t j = 0, k = 0; j < n; j++)
		t->decoded[j] = (src[j / 8] >> (j % 8)) & 1
		                        ? value_at(vals->dtype, b->data + vals->begin, k++)
		                        : 0.0f;
	drop_pages(b, src, t->end - t->begin);
	drop_pages(b, b->data + vals->begin, vals->end - vals->begin);
	return 0;
}

int mime_bundle_tensor_f32(const struct mime_bundle *b, const char *name, const float **ret)
{
	struct bundle_tensor *t = (struct bundle_tensor *)find(b, name); /* decoded: a cache */
	const struct bundle_tensor *vals = NULL;
	struct mime_bundle *mb = (struct mime_bundle *)b;
	uint64_t nnz = 0;
	int r = 0;

	if (!t) {
		t = (struct bundle_tensor *)sparse_part(b, name, MIME_SPARSE_MASK);
		vals = sparse_part(b, name, MIME_SPARSE_VALUES);
		if (!t || !vals || t->dtype != MIME_DTYPE_U8 || vals->ndim != 1 ||
		    (vals->dtype != MIME_DTYPE_F32 && vals->dtype != MIME_DTYPE_F16))
			return MIME_EFORMAT;
	} else if (t->dtype == MIME_DTYPE_F32) {
		*ret = (const float *)(b->data + t->begin);
		return 0;
	} else if (t->dtype != MIME_DTYPE_F16) {
		return MIME_EFORMAT;
	}
	pthread_mutex_lock(&mb->decode_lock);
	if (!t->decoded && vals) {
		/* the counts: checked at open when the manifest implies the tensor, not
		 * otherwise (once: decoding drops the mask's pages) */
		for (size_t j = t->begin; j < t->end; j++)
			nnz += (uint64_t)__builtin_popcount(b->data[j]);
		if (nnz != (uint64_t)vals->shape[0])
			r = MIME_EFORMAT;
	}
	if (!t->decoded && r == 0)
		r = decode(b, t, vals);
	if (r == 0)
		*ret = t->decoded;
	pthread_mutex_unlock(&mb->decode_lock);
	return r;
}

size_t mime_bundle_n_tensors(const struct mime_bundle *b)
{
	return b->n_tensors;
}

void mime_bundle_tensor_at(const struct mime_bundle *b, size_t i, struct mime_tensor_view *ret_view)
{
	view(b, &b->tensors[i], ret_view);
}

size_t mime_bundle_size_bytes(const struct mime_bundle *b)
{
	return b->size;
}

int mime_bundle_is_mapped(const struct mime_bundle *b)
{
	return b->mapped;
}

/* ---- writer ---- */

struct writer_tensor {
	char *name;
	enum mime_dtype dtype;
	int ndim;
	int64_t shape[MIME_MAX_DIMS];
	void *data;
	size_t n_bytes;
};

struct mime_bundle_writer {
	struct writer_tensor *t;
	size_t n, cap;
};

int mime_bundle_writer_create(struct mime_bundle_writer **ret_writer)
{
	struct mime_bundle_writer *w = calloc(1, sizeof(*w));

	if (!w)
		return -ENOMEM;
	*ret_writer = w;
	return 0;
}

void mime_bundle_writer_destroy(struct mime_bundle_writer *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n; i++) {
		free(w->t[i].name);
		free(w->t[i].data);
	}
	free(w->t);
	free(w);
}

int mime_bundle_writer_add(struct mime_bundle_writer *w, const char *name, enum mime_dtype dtype,
                           int ndim, const int64_t *shape, const void *data)
{
	struct writer_tensor *t;
	size_t n_bytes;

	if (!name || name[0] == '\0' || strcmp(name, "__metadata__") == 0 ||
	    (unsigned)dtype >= N_DTYPES || ndim < 0 || ndim > MIME_MAX_DIMS)
		return MIME_EINVAL;
	n_bytes = dtypes[dtype].size;
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0 || (shape[i] != 0 && n_bytes > SIZE_MAX / (uint64_t)shape[i]))
			return MIME_EINVAL;
		n_bytes *= (size_t)shape[i];
	}
	for (size_t i = 0; i < w->n; i++)
		if (strcmp(w->t[i].name, name) == 0)
			return MIME_EINVAL;
	if (w->n == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 16;
		struct writer_tensor *nt = reallocarray(w->t, cap, sizeof(*nt));

		if (!nt)
			return -ENOMEM;
		w->t = nt;
		w->cap = cap;
	}
	t = &w->t[w->n];
	memset(t, 0, sizeof(*t));
	t->name = strdup(name);
	t->data = malloc(n_bytes ? n_bytes : 1);
	if (!t->name || !t->data) {
		free(t->name);
		free(t->data);
		return -ENOMEM;
	}
	if (n_bytes)
		memcpy(t->data, data, n_bytes);
	t->dtype = dtype;
	t->ndim = ndim;
	if (ndim)
		memcpy(t->shape, shape, ndim * sizeof(*shape));
	t->n_bytes = n_bytes;
	w->n++;
	return 0;
}

int mime_bundle_writer_add_sparse(struct mime_bundle_writer *w, const char *name, int ndim,
                                  const int64_t *shape, const float *data)
{
	char part[2 * MIME_NAME_MAX + 64];
	uint64_t n = 1;
	size_t nnz = 0, k = 0;
	uint8_t *bits;
	float *vals;
	int64_t s;
	int r;

	if (!name || ndim < 0 || ndim > MIME_MAX_DIMS ||
	    strlen(name) + sizeof(MIME_SPARSE_VALUES) > sizeof(part))
		return MIME_EINVAL;
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0 || (shape[i] && n > (SIZE_MAX / 8) / (uint64_t)shape[i]))
			return MIME_EINVAL;
		n *= (uint64_t)shape[i];
	}
	for (uint64_t j = 0; j < n; j++)
		nnz += data[j] != 0.0f;
	bits = calloc((size_t)(n + 7) / 8 + 1, 1);
	vals = malloc(sizeof(float) * (nnz ? nnz : 1));
	if (!bits || !vals) {
		free(bits);
		free(vals);
		return -ENOMEM;
	}
	for (uint64_t j = 0; j < n; j++)
		if (data[j] != 0.0f) { /* -0.0f too: it is stored dense as 0 */
			bits[j / 8] |= (uint8_t)(1u << (j % 8));
			vals[k++] = data[j];
		}
	snprintf(part, sizeof(part), "%s%s", name, MIME_SPARSE_MASK);
	s = (int64_t)((n + 7) / 8);
	r = mime_bundle_writer_add(w, part, MIME_DTYPE_U8, 1, &s, bits);
	if (r == 0) {
		snprintf(part, sizeof(part), "%s%s", name, MIME_SPARSE_VALUES);
		s = (int64_t)nnz;
		r = mime_bundle_writer_add(w, part, MIME_DTYPE_F32, 1, &s, vals);
	}
	free(bits);
	free(vals);
	return r;
}

int mime_bundle_writer_add_mask(struct mime_bundle_writer *w, int p, const char *layer,
                                const uint8_t *keep, size_t n_groups)
{
	char name[MIME_NAME_MAX + 32];
	enum mime_dtype dtype;
	int64_t shape[1];
	size_t n_kept;
	void *data;
	int r;

	if (p < 1 || !layer || strlen(layer) >= MIME_NAME_MAX)
		return MIME_EINVAL;
	r = mime_phase_mask_encode(keep, n_groups, &dtype, &data, &n_kept);
	if (r < 0)
		return r;
	snprintf(name, sizeof(name), "phase/%d/%s.mask", p, layer);
	shape[0] = (int64_t)n_kept;
	r = mime_bundle_writer_add(w, name, dtype, 1, shape, data);
	free(data);
	return r;
}

/* Builds the header JSON text: metadata first, then the tensors in insertion order. */
static char *writer_header(const struct mime_bundle_writer *w, const char *manifest_json,
                           size_t *ret_data_bytes)
{
	json_t *root = json_object(), *md = NULL;
	size_t at = 0;
	char *s = NULL;

	if (!root)
		return NULL;
	if (manifest_json) {
		md = json_object();
		if (!md || json_object_set_new(md, "mime", json_string(manifest_json)) < 0 ||
		    json_object_set_new(root, "__metadata__", md) < 0)
			goto out;
	}
	for (size_t i = 0; i < w->n; i++) {
		const struct writer_tensor *t = &w->t[i];
		json_t *e = json_object(), *shape = json_array(), *offs = json_array();

		if (!e || !shape || !offs) {
			json_decref(e);
			json_decref(shape);
			json_decref(offs);
			goto out;
		}
		for (int d = 0; d < t->ndim; d++)
			json_array_append_new(shape, json_integer(t->shape[d]));
		if (at > SIZE_MAX - t->n_bytes)
			goto out;
		json_array_append_new(offs, json_integer((json_int_t)at));
		json_array_append_new(offs, json_integer((json_int_t)(at + t->n_bytes)));
		at += t->n_bytes;
		json_object_set_new(e, "dtype", json_string(dtypes[t->dtype].name));
		json_object_set_new(e, "shape", shape);
		json_object_set_new(e, "data_offsets", offs);
		if (json_object_set_new(root, t->name, e) < 0)
			goto out;
	}
	s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	*ret_data_bytes = at;
out:
	json_decref(root);
	return s;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);

		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static int write_file(const char *path, const uint8_t *buf, size_t size, struct mime_errinfo *ei)
{
	const char *slash = strrchr(path, '/');
	char *tmp, *dir;
	int fd, dfd, r;

	if (slash)
		r = asprintf(&tmp, "%.*s/.%s.XXXXXX", (int)(slash - path), path, slash + 1);
	else
		r = asprintf(&tmp, ".%s.XXXXXX", path);
	if (r < 0)
		return -ENOMEM;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		mime_errinfo_set(ei, r, "'%.200s': cannot create a temporary file: %s", path,
		                 strerror(-r));
		goto out_free;
	}
	r = fchmod(fd, 0644) < 0 ? -errno : 0;
	if (r == 0)
		r = write_all(fd, buf, size);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		mime_errinfo_set(ei, r, "'%.200s': %s", path, strerror(-r));
		unlink(tmp);
		goto out_free;
	}
	/* Make the rename durable; a directory that cannot be synced is not an error here. */
	dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
	if (dir) {
		dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
		free(dir);
	}
out_free:
	free(tmp);
	return r;
}

/* Stable sort by element size, widest first: every tensor then starts at a multiple of its
 * element size (the data starts aligned, and each tensor's bytes are a multiple of its own
 * element size), whatever order the caller added them in. */
static void sort_by_element_size(struct mime_bundle_writer *w)
{
	for (size_t i = 1; i < w->n; i++) {
		struct writer_tensor t = w->t[i];
		size_t j = i;

		while (j > 0 && mime_dtype_size(w->t[j - 1].dtype) < mime_dtype_size(t.dtype)) {
			w->t[j] = w->t[j - 1];
			j--;
		}
		w->t[j] = t;
	}
}

int mime_bundle_writer_write(struct mime_bundle_writer *w, const struct mime_manifest *m,
                             const char *path, struct mime_errinfo *ei)
{
	struct mime_bundle *check = NULL;
	char *manifest_json = NULL, *header;
	size_t hlen, padded, data_bytes = 0, size;
	uint8_t *buf;
	int r;

	if (m) {
		manifest_json = mime_manifest_format(m);
		if (!manifest_json)
			return mime_errinfo_set(
				ei, MIME_EINVAL,
				"manifest cannot be formatted (bad provenance JSON, "
				"or out of memory)");
	}
	sort_by_element_size(w);
	header = writer_header(w, manifest_json, &data_bytes);
	free(manifest_json);
	if (!header)
		return -ENOMEM;
	hlen = strlen(header);
	/* Pad with spaces so that the data starts at a multiple of WRITE_ALIGN. */
	padded = (8 + hlen + WRITE_ALIGN - 1) / WRITE_ALIGN * WRITE_ALIGN - 8;
	if (padded > HEADER_MAX_BYTES || data_bytes > SIZE_MAX - 8 - padded - WRITE_ALIGN) {
		r = mime_errinfo_set(ei, MIME_EINVAL, "bundle too large");
		goto out_header;
	}
	size = 8 + padded + data_bytes;
	buf = aligned_alloc(WRITE_ALIGN, (size + WRITE_ALIGN - 1) / WRITE_ALIGN * WRITE_ALIGN);
	if (!buf) {
		r = -ENOMEM;
		goto out_header;
	}
	for (int k = 0; k < 8; k++)
		buf[k] = (uint8_t)((uint64_t)padded >> (8 * k));
	memcpy(buf + 8, header, hlen);
	memset(buf + 8 + hlen, ' ', padded - hlen);
	for (size_t i = 0, at = 8 + padded; i < w->n; i++) {
		if (w->t[i].n_bytes)
			memcpy(buf + at, w->t[i].data, w->t[i].n_bytes);
		at += w->t[i].n_bytes;
	}

	/* The reader is the definition of a valid bundle: never write what it rejects. */
	if (m)
		r = mime_bundle_open_memory(buf, size, &check, ei);
	else
		r = mime_safetensors_open_memory(buf, size, &check, ei);
	if (r < 0)
		goto out_buf;
	mime_bundle_close(check);
	r = write_file(path, buf, size, ei);
out_buf:
	free(buf);
out_header:
	free(header);
	return r;
}
