// SPDX-License-Identifier: MIT
/* test_bundle -- the bundle reader's validation, the writer, and their round trip. */
#include "tests/unit.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/bundle.h"
#include "lib/engine.h"
#include "lib/half.h"
#include "lib/model.h"

/* A tiny network: 1x4x4 -> conv1 (2 kernels 3x3 pad 1, relu) -> pool1 -> flatten (8) ->
 * fc1 (3, relu); task t with 2 classes and channel thresholds. */
static const char manifest_json[] =
	"{\"format\":\"mime-bundle\",\"version\":1,"
	"\"graph\":{\"input\":[1,4,4],\"layers\":["
	"{\"name\":\"conv1\",\"kind\":\"conv\",\"out\":2,\"kernel\":3,\"stride\":1,\"pad\":1,"
	"\"act\":\"relu\"},"
	"{\"name\":\"pool1\",\"kind\":\"maxpool\",\"kernel\":2,\"stride\":2},"
	"{\"name\":\"flatten\",\"kind\":\"flatten\"},"
	"{\"name\":\"fc1\",\"kind\":\"fc\",\"out\":3,\"act\":\"relu\"}]},"
	"\"tasks\":[{\"name\":\"t\",\"classes\":[\"a\",\"b\"],"
	"\"input\":{\"channels\":1,\"height\":4,\"width\":4},\"thresholds\":\"channel\"}]}";

/* The tensors it implies, in file order: name, shape, byte range. */
static const char tensors_json[] =
	"{\"parent/conv1.weight\":{\"dtype\":\"F32\",\"shape\":[2,1,3,3],\"data_offsets\":[0,72]},"
	"\"parent/conv1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[72,80]},"
	"\"parent/fc1.weight\":{\"dtype\":\"F32\",\"shape\":[3,8],\"data_offsets\":[80,176]},"
	"\"parent/fc1.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[176,188]},"
	"\"task/t/head.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[188,212]},"
	"\"task/t/head.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[212,220]},"
	"\"task/t/conv1.threshold\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[220,228]},"
	"\"task/t/fc1.threshold\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[228,240]}}";
#define DATA_BYTES 240

/* What a corruption case edits before the file is assembled. */
struct parts {
	json_t *header;   /* the tensor entries (+ "__metadata__" when metadata is set) */
	json_t *manifest; /* NULL: no "mime" key */
	int metadata;     /* 0: no __metadata__ at all */
	size_t data_bytes;
	size_t misalign; /* extra header bytes (breaks the 8-byte alignment of the data) */
};

static void parts_init(struct parts *p)
{
	p->header = json_loads(tensors_json, 0, NULL);
	p->manifest = json_loads(manifest_json, 0, NULL);
	assert_non_null(p->header);
	assert_non_null(p->manifest);
	p->metadata = 1;
	p->data_bytes = DATA_BYTES;
	p->misalign = 0;
}

/* Assembles a file as the safetensors layout says; header padded to 8 bytes. */
static uint8_t *parts_build(struct parts *p, size_t *ret_size)
{
	char *hdr, *man;
	size_t hlen, n, size;
	uint8_t *buf;

	if (p->metadata) {
		json_t *md = json_object();

		if (p->manifest) {
			man = json_dumps(p->manifest, JSON_COMPACT | JSON_PRESERVE_ORDER);
			json_object_set_new(md, "mime", json_string(man));
			free(man);
		}
		json_object_set_new(p->header, "__metadata__", md);
	}
	hdr = json_dumps(p->header, JSON_COMPACT | JSON_PRESERVE_ORDER);
	assert_non_null(hdr);
	hlen = strlen(hdr);
	n = (hlen + 7) / 8 * 8 + p->misalign;
	size = 8 + n + p->data_bytes;
	buf = malloc(size + 1);
	assert_non_null(buf);
	for (int k = 0; k < 8; k++)
		buf[k] = (uint8_t)((uint64_t)n >> (8 * k));
	memcpy(buf + 8, hdr, hlen);
	memset(buf + 8 + hlen, ' ', n - hlen);
	for (size_t i = 0; i < p->data_bytes; i++)
		buf[8 + n + i] = (uint8_t)(i * 7 / 4 % 256 / 4); /* small, finite floats */
	free(hdr);
	json_decref(p->header);
	json_decref(p->manifest);
	*ret_size = size;
	return buf;
}

static json_t *tensor(struct parts *p, const char *name)
{
	json_t *t = json_object_get(p->header, name);

	assert_non_null(t);
	return t;
}

static void set_offsets(struct parts *p, const char *name, long begin, long end)
{
	json_object_set_new(tensor(p, name), "data_offsets",
	                    json_pack("[I,I]", (json_int_t)begin, (json_int_t)end));
}

/* ---- the corruption cases ---- */

struct corrupt_case {
	void (*edit)(struct parts *p);
	void (*edit_bytes)(uint8_t *buf, size_t *size); /* after assembly; may be NULL */
	const char *msg;                                /* expected substring of ei.msg */
};

static void e_none(struct parts *p)
{
}
static void b_truncate_to_5(uint8_t *buf, size_t *size)
{
	*size = 5;
}
static void b_length_beyond_file(uint8_t *buf, size_t *size)
{
	buf[0] = (uint8_t)(*size - 7);
	buf[1] = (uint8_t)((*size - 7) >> 8);
}
static void b_length_absurd(uint8_t *buf, size_t *size)
{
	buf[5] = 1; /* 2^40 */
}
static void b_invalid_json(uint8_t *buf, size_t *size)
{
	buf[8] = ','; /* was '{' */
}
static void b_truncated_data(uint8_t *buf, size_t *size)
{
	*size -= 3;
}
static void e_header_not_object(struct parts *p)
{
	json_decref(p->header);
	p->header = json_array();
	p->metadata = 0;
	p->data_bytes = 0;
}
static void e_no_metadata(struct parts *p)
{
	p->metadata = 0;
}
static void e_no_manifest(struct parts *p)
{
	json_decref(p->manifest);
	p->manifest = NULL;
}
static void e_metadata_not_strings(struct parts *p)
{
	json_object_set_new(p->header, "__metadata__", json_pack("{s:i}", "mime", 3));
	p->metadata = 0;
}
static void e_manifest_not_json(struct parts *p)
{
	json_object_set_new(p->header, "__metadata__", json_pack("{s:s}", "mime", "{\"format\""));
	p->metadata = 0;
}
static void e_entry_not_object(struct parts *p)
{
	json_object_set_new(p->header, "extra", json_integer(1));
}
static void e_unknown_dtype(struct parts *p)
{
	json_object_set_new(tensor(p, "parent/conv1.bias"), "dtype", json_string("F8_E4M3"));
}
static void e_dtype_not_string(struct parts *p)
{
	json_object_set_new(tensor(p, "parent/conv1.bias"), "dtype", json_integer(32));
}
static void e_unknown_entry_key(struct parts *p)
{
	json_object_set_new(tensor(p, "parent/conv1.bias"), "crc", json_integer(0));
}
static void e_negative_dim(struct parts *p)
{
	json_object_set_new(tensor(p, "parent/conv1.bias"), "shape", json_pack("[i]", -2));
}
static void e_shape_not_list(struct parts *p)
{
	json_object_set_new(tensor(p, "parent/conv1.bias"), "shape", json_string("2"));
}
static void e_too_many_dims(struct parts *p)
{
	json_object_set_new(tensor(p, "parent/conv1.bias"), "shape",
	                    json_pack("[iiiiiiiii]", 2, 1, 1, 1, 1, 1, 1, 1, 1));
}
static void e_numel_overflow(struct parts *p)
{
	json_object_set_new(
		tensor(p, "parent/conv1.bias"), "shape",
		json_pack("[III]", (json_int_t)1 << 32, (json_int_t)1 << 32, (json_int_t)1 << 32));
}
static void e_offsets_not_pair(struct parts *p)
{
	json_object_set_new(tensor(p, "parent/conv1.bias"), "data_offsets", json_pack("[i]", 72));
}
static void e_offsets_reversed(struct parts *p)
{
	set_offsets(p, "parent/conv1.bias", 80, 72);
}
static void e_offsets_out_of_range(struct parts *p)
{
	set_offsets(p, "task/t/fc1.threshold", 228, 244);
}
static void e_offsets_size_mismatch(struct parts *p)
{
	set_offsets(p, "parent/conv1.bias", 72, 84);
}
static void e_offsets_overlap(struct parts *p)
{
	set_offsets(p, "parent/conv1.bias", 64, 72);
}
static void e_offsets_gap(struct parts *p)
{
	set_offsets(p, "task/t/fc1.threshold", 232, 244);
	p->data_bytes += 4;
}
static void e_trailing_bytes(struct parts *p)
{
	p->data_bytes += 4;
}
static void e_misaligned(struct parts *p)
{
	p->misalign = 2;
}
static void e_dtype_mismatch(struct parts *p)
{
	json_object_set_new(tensor(p, "parent/conv1.bias"), "dtype", json_string("I32"));
}
static void e_shape_mismatch(struct parts *p)
{
	json_object_set_new(tensor(p, "parent/conv1.weight"), "shape", json_pack("[iii]", 2, 1, 9));
}
static void e_head_shape_mismatch(struct parts *p)
{
	json_object_set_new(tensor(p, "task/t/head.weight"), "shape", json_pack("[ii]", 3, 2));
}
static void e_missing_tensor(struct parts *p)
{
	json_object_del(p->header, "task/t/fc1.threshold");
	p->data_bytes -= 12;
}
static void e_element_thresholds(struct parts *p)
{
	json_object_set_new(json_array_get(json_object_get(p->manifest, "tasks"), 0), "thresholds",
	                    json_string("element"));
}
static void e_unknown_layer_kind(struct parts *p)
{
	json_t *layers = json_object_get(json_object_get(p->manifest, "graph"), "layers");

	json_object_set_new(json_array_get(layers, 1), "kind", json_string("avgpool"));
}
static void e_wrong_input_spec(struct parts *p)
{
	json_t *t = json_array_get(json_object_get(p->manifest, "tasks"), 0);

	json_object_set_new(json_object_get(t, "input"), "height", json_integer(5));
}
static void e_bad_graph(struct parts *p)
{
	json_t *layers = json_object_get(json_object_get(p->manifest, "graph"), "layers");

	json_object_set_new(json_array_get(layers, 0), "pad", json_integer(0));
	json_object_set_new(json_array_get(layers, 0), "kernel", json_integer(5));
}
static void e_duplicate_task(struct parts *p)
{
	json_t *tasks = json_object_get(p->manifest, "tasks");

	json_array_append(tasks, json_array_get(tasks, 0));
}
static void e_empty_name(struct parts *p)
{
	json_object_set(p->header, "", tensor(p, "parent/conv1.bias"));
	json_object_del(p->header, "parent/conv1.bias");
}

#define CASE(n, e, b, m) static const struct corrupt_case n = {e, b, m};
CASE(c_truncated, e_none, b_truncate_to_5, "5 bytes, shorter than the 8-byte header length")
CASE(c_length_beyond, e_none, b_length_beyond_file, "beyond the end of the file")
CASE(c_length_absurd, e_none, b_length_absurd,
     "header length 1099511628896 is absurd (more than 100 MiB)")
CASE(c_invalid_json, e_none, b_invalid_json, "header: invalid JSON")
CASE(c_truncated_data, e_none, b_truncated_data, "out of range")
CASE(c_not_object, e_header_not_object, NULL, "header: not a JSON object")
CASE(c_no_metadata, e_no_metadata, NULL, "__metadata__ missing")
CASE(c_no_manifest, e_no_manifest, NULL, "no \"mime\" manifest")
CASE(c_metadata_types, e_metadata_not_strings, NULL, "__metadata__['mime'] is not a string")
CASE(c_manifest_json, e_manifest_not_json, NULL, "manifest: invalid JSON")
CASE(c_entry_not_object, e_entry_not_object, NULL, "tensor 'extra': entry is not an object")
CASE(c_unknown_dtype, e_unknown_dtype, NULL, "'parent/conv1.bias': unknown dtype 'F8_E4M3'")
CASE(c_dtype_not_string, e_dtype_not_string, NULL, "dtype missing or not a string")
CASE(c_entry_key, e_unknown_entry_key, NULL, "unknown key 'crc'")
CASE(c_negative_dim, e_negative_dim, NULL, "shape[0] is not a non-negative integer")
CASE(c_shape_not_list, e_shape_not_list, NULL, "shape missing or not a list")
CASE(c_too_many_dims, e_too_many_dims, NULL, "shape has 9 dims (at most 8)")
CASE(c_numel_overflow, e_numel_overflow, NULL, "overflows")
CASE(c_offsets_pair, e_offsets_not_pair, NULL, "data_offsets is not [begin,end]")
CASE(c_offsets_reversed, e_offsets_reversed, NULL, "begin 80 > end 72")
CASE(c_out_of_range, e_offsets_out_of_range, NULL, "end 244 out of range (data is 240 bytes)")
CASE(c_size_mismatch, e_offsets_size_mismatch, NULL, "span 12 bytes, shape and dtype need 8")
CASE(c_overlap, e_offsets_overlap, NULL,
     "'parent/conv1.bias': data_offsets overlap tensor 'parent/conv1.weight'")
CASE(c_gap, e_offsets_gap, NULL, "gap of 4 bytes before tensor 'task/t/fc1.threshold'")
CASE(c_trailing, e_trailing_bytes, NULL, "4 trailing bytes")
CASE(c_misaligned, e_misaligned, NULL, "F32 data at offset 0 is not 4-byte aligned")
CASE(c_dtype_mismatch, e_dtype_mismatch, NULL, "'parent/conv1.bias': dtype I32, expected F32")
CASE(c_shape_mismatch, e_shape_mismatch, NULL,
     "'parent/conv1.weight': shape [2,1,9], expected [2,1,3,3]")
CASE(c_head_shape, e_head_shape_mismatch, NULL, "'task/t/head.weight': shape [3,2], expected [2,3]")
CASE(c_missing_tensor, e_missing_tensor, NULL, "tensor 'task/t/fc1.threshold' missing")
CASE(c_element_thresholds, e_element_thresholds, NULL,
     "'task/t/conv1.threshold': shape [2], expected [2,4,4] (element thresholds")
CASE(c_layer_kind, e_unknown_layer_kind, NULL, "graph.layers[1].kind 'avgpool' unknown")
CASE(c_input_spec, e_wrong_input_spec, NULL, "tasks[0].input.height 5 != graph input 4")
CASE(c_bad_graph, e_bad_graph, NULL, "layer 'conv1': kernel 5 larger than padded input")
CASE(c_duplicate_task, e_duplicate_task, NULL, "tasks[1].name 't' used twice")
CASE(c_empty_name, e_empty_name, NULL, "empty name")

/* Each case: open_memory rejects it with MIME_EFORMAT and the message; so does open(). */
static void run_corrupt_case(void **state)
{
	const struct corrupt_case *c = *state;
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	struct parts p;
	uint8_t *buf;
	size_t size;
	char *path;

	parts_init(&p);
	c->edit(&p);
	buf = parts_build(&p, &size);
	if (c->edit_bytes)
		c->edit_bytes(buf, &size);
	assert_int_equal(mime_bundle_open_memory(buf, size, &b, &ei), MIME_EFORMAT);
	assert_null(b);
	if (!strstr(ei.msg, c->msg))
		fail_msg("message '%s' lacks '%s'", ei.msg, c->msg);
	assert_int_equal(ei.code, MIME_EFORMAT);

	path = mime_test_tmpfile(buf, size);
	assert_non_null(path);
	memset(&ei, 0, sizeof(ei));
	assert_int_equal(mime_bundle_open(path, &b, &ei), MIME_EFORMAT);
	assert_null(b);
	if (!strstr(ei.msg, c->msg))
		fail_msg("file: message '%s' lacks '%s'", ei.msg, c->msg);
	unlink(path);
	free(path);
	free(buf);
}

static void test_bundle_open_accepts_the_uncorrupted_fixture(void **state)
{
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	struct mime_tensor_view v;
	struct parts p;
	uint8_t *buf;
	size_t size;

	parts_init(&p);
	buf = parts_build(&p, &size);
	if (mime_bundle_open_memory(buf, size, &b, &ei) != 0)
		fail_msg("%s", ei.msg);
	assert_int_equal(mime_bundle_n_tensors(b), 8);
	assert_int_equal(mime_bundle_size_bytes(b), size);
	assert_int_equal(mime_bundle_tensor(b, "task/t/fc1.threshold", &v), 0);
	assert_int_equal(v.n_bytes, 12);
	assert_ptr_equal(v.data, buf + size - 12);
	assert_int_equal(mime_bundle_tensor(b, "task/t/nope", &v), MIME_EFORMAT);
	mime_bundle_tensor_at(b, 1, &v);
	assert_string_equal(v.name, "parent/conv1.bias");
	assert_string_equal(mime_bundle_manifest(b)->tasks[0].name, "t");
	mime_bundle_close(b);
	mime_bundle_close(NULL);
	free(buf);
}

/* Unknown extra tensors (future phases, conventional weights) are allowed. */
static void test_bundle_open_allows_extra_tensors(void **state)
{
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	struct mime_tensor_view v;
	struct parts p;
	uint8_t *buf;
	size_t size;

	parts_init(&p);
	json_object_set_new(p.header, "phase/1/conv1.mask",
	                    json_pack("{s:s,s:[i],s:[i,i]}", "dtype", "U16", "shape", 3,
	                              "data_offsets", 240, 246));
	json_object_set_new(p.header, "empty",
	                    json_pack("{s:s,s:[i],s:[i,i]}", "dtype", "U8", "shape", 0,
	                              "data_offsets", 246, 246));
	p.data_bytes = 246;
	buf = parts_build(&p, &size);
	if (mime_bundle_open_memory(buf, size, &b, &ei) != 0)
		fail_msg("%s", ei.msg);
	assert_int_equal(mime_bundle_n_tensors(b), 10);
	assert_int_equal(mime_bundle_tensor(b, "phase/1/conv1.mask", &v), 0);
	assert_int_equal(v.dtype, MIME_DTYPE_U16);
	assert_int_equal(v.n_bytes, 6);
	mime_bundle_close(b);
	free(buf);
}

/* F16 task tensors at odd offsets (legal safetensors, though our writer never makes them):
 * the model hands them out decoded, not as misaligned uint16_t views (UBSan would flag the
 * engine's reads), and the engine runs on them. */
static void test_bundle_odd_f16_offsets_are_decoded(void **state)
{
	static const char *const names[] = {"task/t/head.weight", "task/t/head.bias",
	                                    "task/t/conv1.threshold", "task/t/fc1.threshold"};
	static const int sizes[] = {6, 2, 2, 3};
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	struct mime_model m;
	struct mime_engine *e = NULL;
	struct mime_engine_result res;
	const struct mime_engine_config cfg = {.max_batch = 1, .n_threads = 1};
	const int task = 0;
	float in[16] = {0.5f, 0.25f};
	struct parts p;
	uint8_t *buf;
	size_t size;
	long at = 189; /* after the F32 parent (0..188) and a 1-byte U8 tensor */

	(void)state;
	parts_init(&p);
	json_object_set_new(p.header, "pad",
	                    json_pack("{s:s,s:[i],s:[i,i]}", "dtype", "U8", "shape", 1,
	                              "data_offsets", 188, 189));
	for (int i = 0; i < 4; i++) {
		json_object_set_new(tensor(&p, names[i]), "dtype", json_string("F16"));
		set_offsets(&p, names[i], at, at + 2 * sizes[i]);
		at += 2 * sizes[i];
	}
	p.data_bytes = (size_t)at;
	buf = parts_build(&p, &size);
	if (mime_bundle_open_memory(buf, size, &b, &ei) != 0)
		fail_msg("%s", ei.msg);
	assert_int_equal(mime_model_from_bundle(b, MIME_MODEL_HALF_VIEWS, &m, &ei), 0);
	assert_null(m.tasks[0].head_w_half);
	assert_null(m.tasks[0].thresholds_half[3]);
	assert_non_null(m.tasks[0].head_w);
	assert_non_null(m.tasks[0].thresholds[3]);
	assert_int_equal(mime_engine_create(&m, &cfg, &e, &ei), 0);
	assert_int_equal(mime_engine_forward(e, 1, in, &task, &res), 0);
	mime_engine_destroy(e);
	mime_model_fini(&m);
	mime_bundle_close(b);
	free(buf);
}

/* Every prefix of a valid bundle is invalid, and none is read out of bounds (ASan). */
static void test_bundle_open_rejects_every_truncation(void **state)
{
	struct mime_bundle *b = NULL;
	struct parts p;
	uint8_t *buf, *copy;
	size_t size;

	parts_init(&p);
	buf = parts_build(&p, &size);
	for (size_t n = 0; n < size; n++) {
		copy = malloc(n ? n : 1);
		memcpy(copy, buf, n);
		assert_int_equal(mime_bundle_open_memory(copy, n, &b, NULL), MIME_EFORMAT);
		free(copy);
	}
	free(buf);
}

/* Random byte changes in the header either fail cleanly or still give a valid bundle. */
static void test_bundle_open_survives_header_bit_flips(void **state)
{
	uint64_t rng = 42;
	struct mime_bundle *b = NULL;
	struct parts p;
	uint8_t *buf, *copy;
	size_t size;

	parts_init(&p);
	buf = parts_build(&p, &size);
	copy = malloc(size);
	for (int i = 0; i < 3000; i++) {
		size_t at = mime_test_rand(&rng) % (size - DATA_BYTES);
		int r;

		memcpy(copy, buf, size);
		copy[at] ^= (uint8_t)(1u << (mime_test_rand(&rng) % 8));
		r = mime_bundle_open_memory(copy, size, &b, NULL);
		assert_true(r == 0 || r == MIME_EFORMAT);
		mime_bundle_close(r == 0 ? b : NULL);
	}
	free(copy);
	free(buf);
}

static void test_bundle_open_reports_missing_file(void **state)
{
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;

	assert_int_equal(mime_bundle_open("/nonexistent/x.mime", &b, &ei), -ENOENT);
	assert_null(b);
	assert_int_equal(mime_bundle_open("/", &b, &ei), MIME_EFORMAT);
	assert_non_null(strstr(ei.msg, "not a regular file"));
}

/* The writer: a bundle written, opened again, has bit-identical tensors in insertion order,
 * the same manifest, and data starting 64-byte aligned. */
static void fill(float *v, size_t n, uint64_t *rng)
{
	for (size_t i = 0; i < n; i++)
		v[i] = mime_test_uniform(rng, -1, 1);
}

struct fixture_tensors {
	float cw[18], cb[2], fw[24], fb[3], hw[6], hb[2], t1[2], t2[3];
};

/* The fixture's tensors in a writer (with_head: the head's weight too, else the caller
 * adds it in the form it tests). */
static struct mime_bundle_writer *make_writer_head(struct fixture_tensors *f, int with_thresholds,
                                                   int with_head)
{
	static const int64_t s_cw[] = {2, 1, 3, 3}, s2[] = {2}, s_fw[] = {3, 8}, s3[] = {3},
			     s_hw[] = {2, 3};
	struct mime_bundle_writer *w = NULL;
	uint64_t rng = 7;

	fill((float *)f, sizeof(*f) / sizeof(float), &rng);
	assert_int_equal(mime_bundle_writer_create(&w), 0);
	assert_int_equal(
		mime_bundle_writer_add(w, "parent/conv1.weight", MIME_DTYPE_F32, 4, s_cw, f->cw),
		0);
	assert_int_equal(
		mime_bundle_writer_add(w, "parent/conv1.bias", MIME_DTYPE_F32, 1, s2, f->cb), 0);
	assert_int_equal(
		mime_bundle_writer_add(w, "parent/fc1.weight", MIME_DTYPE_F32, 2, s_fw, f->fw), 0);
	assert_int_equal(mime_bundle_writer_add(w, "parent/fc1.bias", MIME_DTYPE_F32, 1, s3, f->fb),
	                 0);
	/* deliberately not sorted by name */
	if (with_head)
		assert_int_equal(mime_bundle_writer_add(w, "task/t/head.weight", MIME_DTYPE_F32, 2,
		                                        s_hw, f->hw),
		                 0);
	assert_int_equal(
		mime_bundle_writer_add(w, "task/t/head.bias", MIME_DTYPE_F32, 1, s2, f->hb), 0);
	if (with_thresholds) {
		assert_int_equal(mime_bundle_writer_add(w, "task/t/fc1.threshold", MIME_DTYPE_F32,
		                                        1, s3, f->t2),
		                 0);
		assert_int_equal(mime_bundle_writer_add(w, "task/t/conv1.threshold", MIME_DTYPE_F32,
		                                        1, s2, f->t1),
		                 0);
	}
	return w;
}

static struct mime_bundle_writer *make_writer(struct fixture_tensors *f, int with_thresholds)
{
	return make_writer_head(f, with_thresholds, 1);
}

static void test_bundle_writer_round_trips(void **state)
{
	struct fixture_tensors f;
	struct mime_bundle_writer *w = make_writer(&f, 1);
	const struct {
		const char *name;
		const float *data;
		size_t n;
	} want[] = {
		{"parent/conv1.weight", f.cw, 18}, {"parent/conv1.bias", f.cb, 2},
		{"parent/fc1.weight", f.fw, 24},   {"parent/fc1.bias", f.fb, 3},
		{"task/t/head.weight", f.hw, 6},   {"task/t/head.bias", f.hb, 2},
		{"task/t/fc1.threshold", f.t2, 3}, {"task/t/conv1.threshold", f.t1, 2},
	};
	struct mime_manifest m;
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	char *path = mime_test_tmpfile(NULL, 0), *s1, *s2;
	uint8_t head[8];
	uint64_t n = 0;
	struct stat st;
	FILE *fp;

	assert_int_equal(mime_manifest_parse(manifest_json, strlen(manifest_json), &m, &ei), 0);
	m.provenance_json = strdup("{\"command\":\"test\",\"seed\":3}");
	if (mime_bundle_writer_write(w, &m, path, &ei) != 0)
		fail_msg("%s", ei.msg);
	if (mime_bundle_open(path, &b, &ei) != 0)
		fail_msg("%s", ei.msg);
	assert_int_equal(mime_bundle_n_tensors(b), 8);
	for (size_t i = 0; i < 8; i++) {
		struct mime_tensor_view v;

		mime_bundle_tensor_at(b, i, &v); /* file order is insertion order */
		assert_string_equal(v.name, want[i].name);
		assert_int_equal(v.dtype, MIME_DTYPE_F32);
		assert_int_equal(v.n_bytes, want[i].n * 4);
		assert_memory_equal(v.data, want[i].data, want[i].n * 4);
		assert_int_equal((uintptr_t)v.data % 4, 0);
	}
	s1 = mime_manifest_format(&m);
	s2 = mime_manifest_format(mime_bundle_manifest(b));
	assert_string_equal(s1, s2);
	assert_string_equal(mime_bundle_manifest(b)->provenance_json, m.provenance_json);

	/* the header is padded so that the data starts at a multiple of 64 */
	fp = fopen(path, "rb");
	assert_int_equal(fread(head, 1, 8, fp), 8);
	fclose(fp);
	for (int k = 7; k >= 0; k--)
		n = n << 8 | head[k];
	assert_int_equal((8 + n) % 64, 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal((size_t)st.st_size, 8 + n + (18 + 2 + 24 + 3 + 6 + 2 + 3 + 2) * 4);
	assert_int_equal(st.st_mode & 0777, 0644);

	free(s1);
	free(s2);
	mime_bundle_close(b);
	mime_manifest_free(&m);
	mime_bundle_writer_destroy(w);
	unlink(path);
	free(path);
}

/* The writer never produces a file the reader rejects: nothing is written, the old file
 * stays, and the reason is the reader's. */
static void test_bundle_writer_refuses_what_the_reader_rejects(void **state)
{
	static const char old[] = "old";
	struct fixture_tensors f;
	struct mime_bundle_writer *w = make_writer(&f, 0); /* no thresholds */
	struct mime_manifest m;
	struct mime_errinfo ei = {0};
	char *path = mime_test_tmpfile(old, 3), buf[8] = "";
	FILE *fp;

	assert_int_equal(mime_manifest_parse(manifest_json, strlen(manifest_json), &m, &ei), 0);
	assert_int_equal(mime_bundle_writer_write(w, &m, path, &ei), MIME_EFORMAT);
	assert_non_null(strstr(ei.msg, "tensor 'task/t/conv1.threshold' missing"));
	fp = fopen(path, "rb");
	assert_int_equal(fread(buf, 1, sizeof(buf), fp), 3);
	fclose(fp);
	assert_memory_equal(buf, old, 3);

	/* channel thresholds were the problem: without them the same tensors are fine */
	m.tasks[0].thresholds = MIME_THR_NONE;
	assert_int_equal(mime_bundle_writer_write(w, &m, path, &ei), 0);
	mime_manifest_free(&m);
	mime_bundle_writer_destroy(w);
	unlink(path);
	free(path);
}

static void test_bundle_writer_add_rejects_bad_tensors(void **state)
{
	struct mime_bundle_writer *w = NULL;
	int64_t s[] = {2}, neg[] = {-1};
	float v[2] = {1, 2};

	assert_int_equal(mime_bundle_writer_create(&w), 0);
	assert_int_equal(mime_bundle_writer_add(w, "a", MIME_DTYPE_F32, 1, s, v), 0);
	assert_int_equal(mime_bundle_writer_add(w, "a", MIME_DTYPE_F32, 1, s, v), MIME_EINVAL);
	assert_int_equal(mime_bundle_writer_add(w, "", MIME_DTYPE_F32, 1, s, v), MIME_EINVAL);
	assert_int_equal(mime_bundle_writer_add(w, "__metadata__", MIME_DTYPE_F32, 1, s, v),
	                 MIME_EINVAL);
	assert_int_equal(mime_bundle_writer_add(w, "b", MIME_DTYPE_F32, 1, neg, v), MIME_EINVAL);
	assert_int_equal(mime_bundle_writer_add(w, "c", MIME_DTYPE_F32, MIME_MAX_DIMS + 1, s, v),
	                 MIME_EINVAL);
	assert_int_equal(mime_bundle_writer_add(w, "d", (enum mime_dtype)99, 1, s, v), MIME_EINVAL);
	mime_bundle_writer_destroy(w);
	mime_bundle_writer_destroy(NULL);
}

/* Plain safetensors: no manifest needed; metadata optional; a bundle open refuses it. */
static void test_bundle_safetensors_open_needs_no_manifest(void **state)
{
	struct mime_bundle_writer *w = NULL;
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	struct mime_tensor_view v;
	int64_t s[] = {3};
	int32_t iv[3] = {1, -2, 3};
	char *path = mime_test_tmpfile(NULL, 0);

	assert_int_equal(mime_bundle_writer_create(&w), 0);
	assert_int_equal(mime_bundle_writer_add(w, "x.weight", MIME_DTYPE_I32, 1, s, iv), 0);
	assert_int_equal(
		mime_bundle_writer_add(w, "x.scalar", MIME_DTYPE_I64, 0, NULL, &(int64_t){5}), 0);
	assert_int_equal(mime_bundle_writer_write(w, NULL, path, &ei), 0);
	assert_int_equal(mime_safetensors_open(path, &b, &ei), 0);
	assert_null(mime_bundle_manifest(b));
	assert_null(mime_bundle_metadata(b, "mime"));
	assert_int_equal(mime_bundle_tensor(b, "x.weight", &v), 0);
	assert_memory_equal(v.data, iv, sizeof(iv));
	assert_int_equal(mime_bundle_tensor(b, "x.scalar", &v), 0);
	assert_int_equal(v.ndim, 0);
	assert_int_equal(v.n_bytes, 8);
	mime_bundle_close(b);
	assert_int_equal(mime_bundle_open(path, &b, &ei), MIME_EFORMAT);
	assert_non_null(strstr(ei.msg, "__metadata__ missing"));
	assert_string_equal(mime_dtype_name(MIME_DTYPE_BF16), "BF16");
	assert_int_equal(mime_dtype_size(MIME_DTYPE_U16), 2);
	mime_bundle_writer_destroy(w);
	unlink(path);
	free(path);
}

/* Tensors added narrow first (an odd-length U16 mask, then F32) are written wide first, so
 * the F32 data stays 4-byte aligned and the file opens; the values survive the reordering. */
static void test_bundle_writer_keeps_wide_tensors_aligned(void **state)
{
	struct mime_bundle_writer *w = NULL;
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	struct mime_tensor_view v;
	uint16_t mask[3] = {7, 1, 2};
	float f[4] = {1.5f, -2.0f, 3.25f, 0.0f};
	int64_t s3[] = {3}, s4[] = {4};
	char *path = mime_test_tmpfile(NULL, 0);

	(void)state;
	assert_int_equal(mime_bundle_writer_create(&w), 0);
	assert_int_equal(mime_bundle_writer_add(w, "a.mask", MIME_DTYPE_U16, 1, s3, mask), 0);
	assert_int_equal(mime_bundle_writer_add(w, "b.weight", MIME_DTYPE_F32, 1, s4, f), 0);
	assert_int_equal(mime_bundle_writer_add(w, "c.mask", MIME_DTYPE_U16, 1, s3, mask), 0);
	assert_int_equal(mime_bundle_writer_write(w, NULL, path, &ei), 0);
	assert_int_equal(mime_safetensors_open(path, &b, &ei), 0);
	assert_int_equal(mime_bundle_tensor(b, "b.weight", &v), 0);
	assert_int_equal((uintptr_t)v.data % 4, 0);
	assert_memory_equal(v.data, f, sizeof(f));
	mime_bundle_tensor_at(b, 0, &v);
	assert_string_equal(v.name, "b.weight");
	mime_bundle_tensor_at(b, 1, &v); /* the narrow ones keep their order */
	assert_string_equal(v.name, "a.mask");
	assert_memory_equal(v.data, mask, sizeof(mask));
	mime_bundle_tensor_at(b, 2, &v);
	assert_string_equal(v.name, "c.mask");
	mime_bundle_close(b);
	mime_bundle_writer_destroy(w);
	unlink(path);
	free(path);
}

/* Half precision: every one of the 65,536 encodings decodes to the value its fields say
 * (computed with ldexp) and encodes back to itself; rounding float -> half is to the nearest
 * half, ties to even, checked against a search over every finite half. */
static double half_value(uint16_t h)
{
	const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
	const double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);

	return h & 0x8000 ? -v : v;
}

static void test_half_decodes_every_encoding_and_rounds_to_nearest_even(void **state)
{
	static const struct {
		float f;
		uint16_t h;
	} edge[] = {
		{1.0f, 0x3c00},         {-2.0f, 0xc000},           {65504.0f, 0x7bff},
		{65519.0f, 0x7bff},     {65520.0f, 0x7c00},        {1e10f, 0x7c00},
		{0x1p-24f, 0x0001},     {0x1p-25f, 0x0000},        {0x1.8p-25f, 0x0001},
		{0x1.ffcp-15f, 0x0400}, {1.0f + 0x1p-11f, 0x3c00}, {1.0f + 0x3p-11f, 0x3c02},
		{-0.0f, 0x8000},        {0x1p-14f, 0x0400},        {0x1p-30f, 0x0000},
	};
	uint64_t rng = 99;

	(void)state;
	for (uint32_t h = 0; h < 0x10000u; h++) {
		const float f = mime_half_to_float((uint16_t)h);
		const int exp = (h >> 10) & 0x1f;

		if (exp == 0x1f) {
			assert_true((h & 0x3ff) ? isnan(f) : isinf(f));
			assert_true(((h & 0x3ff) != 0) ==
			            isnan(mime_half_to_float(mime_float_to_half(f))));
			continue;
		}
		assert_true((double)f == half_value((uint16_t)h));
		assert_int_equal(mime_float_to_half(f), h);
	}
	for (size_t i = 0; i < sizeof(edge) / sizeof(edge[0]); i++)
		if (mime_float_to_half(edge[i].f) != edge[i].h)
			fail_msg("%a -> 0x%04x, expected 0x%04x", (double)edge[i].f,
			         mime_float_to_half(edge[i].f), edge[i].h);
	for (int i = 0; i < 3000; i++) {
		/* log-uniform over the halves' range, both signs */
		const float f = (i & 1 ? -1.0f : 1.0f) *
		                (float)exp2(mime_test_uniform(&rng, -26.0f, 15.99f));
		const uint16_t got = mime_float_to_half(f);
		uint16_t best = 0;
		double dbest = INFINITY;

		for (uint16_t h = 0; h < 0x7c00; h++) {
			const double d = fabs(fabs((double)f) - half_value(h));

			if (d < dbest || (d == dbest && !(h & 1))) {
				dbest = d;
				best = h;
			}
		}
		if (fabs((double)f) >= 65520.0)
			best = 0x7c00;
		if ((got & 0x7fff) != best || ((got & 0x8000) != 0) != (f < 0))
			fail_msg("%a -> 0x%04x, nearest-even is 0x%04x", (double)f, got, best);
	}
}

/* The array conversion (the CPU's instructions where it has them) gives the scalar one's
 * float for every half; signalling NaNs may come out quiet. */
static void test_half_to_float_n_equals_scalar(void **state)
{
	uint16_t *h = malloc(sizeof(*h) * 65536);
	float *f = malloc(sizeof(*f) * 65536);

	(void)state;
	assert_non_null(h);
	assert_non_null(f);
	for (uint32_t i = 0; i < 65536; i++)
		h[i] = (uint16_t)i;
	/* from an odd start too: the vector loop's tail and unaligned loads */
	mime_half_to_float_n(h + 3, f + 3, 65533);
	mime_half_to_float_n(h, f, 3);
	for (uint32_t i = 0; i < 65536; i++) {
		const float want = mime_half_to_float(h[i]);

		if (isnan(want))
			assert_true(isnan(f[i]));
		else if (memcmp(&want, &f[i], sizeof(want)) != 0)
			fail_msg("half 0x%04x: %a, expected %a", (unsigned)i, (double)f[i],
			         (double)want);
	}
	free(h);
	free(f);
}

/* Both engines (the fixture's graph, one task) answer a random batch of 4 bit for bit alike:
 * logits and zero counts. */
static void expect_same_forward(struct mime_engine *e_want, struct mime_engine *e_got,
                                uint64_t *rng)
{
	struct mime_engine_result rw, rg;
	const int tasks[4] = {0, 0, 0, 0};
	float in[4 * 16];

	for (int i = 0; i < 4 * 16; i++)
		in[i] = mime_test_uniform(rng, -1.0f, 1.0f);
	assert_int_equal(mime_engine_forward(e_want, 4, in, tasks, &rw), 0);
	assert_int_equal(mime_engine_forward(e_got, 4, in, tasks, &rg), 0);
	assert_memory_equal(rg.logits, rw.logits, sizeof(float) * 4 * rw.max_classes);
	assert_memory_equal(rg.zeros, rw.zeros, sizeof(int64_t) * 4 * rw.n_masked);
}

/* A task's head and thresholds may be stored as F16 (half the bytes of a task); the parent's
 * weights may not. mime_bundle_tensor_f32 and the model see the decoded floats. */
static void test_bundle_task_tensors_may_be_f16(void **state)
{
	static const int64_t s_cw[] = {2, 1, 3, 3}, s2[] = {2}, s_fw[] = {3, 8}, s3[] = {3},
			     s_hw[] = {2, 3};
	struct fixture_tensors f;
	struct mime_bundle_writer *w = NULL;
	struct mime_manifest m;
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	struct mime_model model, views;
	struct mime_tensor_view v;
	uint16_t hw[6], hb[2], t1[2], t2[3];
	const float *dec, *again;
	char *path = mime_test_tmpfile(NULL, 0);
	uint64_t rng = 7;

	(void)state;
	fill((float *)&f, sizeof(f) / sizeof(float), &rng);
	for (int i = 0; i < 6; i++)
		hw[i] = mime_float_to_half(f.hw[i]);
	for (int i = 0; i < 2; i++) {
		hb[i] = mime_float_to_half(f.hb[i]);
		t1[i] = mime_float_to_half(f.t1[i]);
	}
	for (int i = 0; i < 3; i++)
		t2[i] = mime_float_to_half(f.t2[i]);
	assert_int_equal(mime_manifest_parse(manifest_json, strlen(manifest_json), &m, &ei), 0);
	for (int parent_f16 = 0; parent_f16 < 2; parent_f16++) {
		assert_int_equal(mime_bundle_writer_create(&w), 0);
		assert_int_equal(mime_bundle_writer_add(w, "parent/conv1.weight", MIME_DTYPE_F32, 4,
		                                        s_cw, f.cw),
		                 0);
		assert_int_equal(
			mime_bundle_writer_add(w, "parent/conv1.bias", MIME_DTYPE_F32, 1, s2, f.cb),
			0);
		assert_int_equal(mime_bundle_writer_add(w, "parent/fc1.weight", MIME_DTYPE_F32, 2,
		                                        s_fw, f.fw),
		                 0);
		if (parent_f16) /* a parent tensor as F16: refused by name */
			assert_int_equal(mime_bundle_writer_add(w, "parent/fc1.bias",
			                                        MIME_DTYPE_F16, 1, s3, t2),
			                 0);
		else
			assert_int_equal(mime_bundle_writer_add(w, "parent/fc1.bias",
			                                        MIME_DTYPE_F32, 1, s3, f.fb),
			                 0);
		assert_int_equal(mime_bundle_writer_add(w, "task/t/head.weight", MIME_DTYPE_F16, 2,
		                                        s_hw, hw),
		                 0);
		assert_int_equal(
			mime_bundle_writer_add(w, "task/t/head.bias", MIME_DTYPE_F16, 1, s2, hb),
			0);
		assert_int_equal(mime_bundle_writer_add(w, "task/t/conv1.threshold", MIME_DTYPE_F16,
		                                        1, s2, t1),
		                 0);
		assert_int_equal(mime_bundle_writer_add(w, "task/t/fc1.threshold", MIME_DTYPE_F16,
		                                        1, s3, t2),
		                 0);
		if (parent_f16) {
			assert_int_equal(mime_bundle_writer_write(w, &m, path, &ei), MIME_EFORMAT);
			assert_non_null(strstr(ei.msg, "parent/fc1.bias"));
			assert_non_null(strstr(ei.msg, "expected F32"));
			mime_bundle_writer_destroy(w);
			continue;
		}
		if (mime_bundle_writer_write(w, &m, path, &ei) != 0)
			fail_msg("%s", ei.msg);
		mime_bundle_writer_destroy(w);
	}
	if (mime_bundle_open(path, &b, &ei) != 0)
		fail_msg("%s", ei.msg);
	assert_int_equal(mime_bundle_tensor(b, "task/t/head.weight", &v), 0);
	assert_int_equal(v.dtype, MIME_DTYPE_F16);
	assert_int_equal(v.n_bytes, 12);
	assert_int_equal(mime_bundle_tensor_f32(b, "task/t/head.weight", &dec), 0);
	for (int i = 0; i < 6; i++) {
		assert_true(dec[i] == mime_half_to_float(hw[i]));
		assert_true(fabsf(dec[i] - f.hw[i]) <= 0x1p-11f * fabsf(f.hw[i]) + 0x1p-24f);
	}
	assert_int_equal(mime_bundle_tensor_f32(b, "task/t/head.weight", &again), 0);
	assert_ptr_equal(again, dec); /* decoded once */
	assert_int_equal(mime_bundle_tensor_f32(b, "parent/fc1.weight", &dec), 0);
	assert_memory_equal(dec, f.fw, sizeof(f.fw)); /* F32: the view itself */
	assert_int_equal(mime_bundle_tensor_f32(b, "nope", &dec), MIME_EFORMAT);
	assert_int_equal(mime_model_from_bundle(b, 0, &model, &ei), 0);
	for (int i = 0; i < 3; i++)
		assert_true(model.tasks[0].thresholds[3][i] == mime_half_to_float(t2[i]));
	assert_true(model.tasks[0].head_b[1] == mime_half_to_float(hb[1]));
	/* With MIME_MODEL_HALF_VIEWS the model points at the halves in the file, and an engine
	 * (which decodes them when it enters a phase) computes bit for bit what it computes on
	 * the decoded floats. */
	assert_int_equal(mime_model_from_bundle(b, MIME_MODEL_HALF_VIEWS, &views, &ei), 0);
	assert_null(views.tasks[0].head_w);
	assert_null(views.tasks[0].thresholds[3]);
	assert_ptr_equal(views.tasks[0].head_w_half, v.data);
	assert_int_equal(mime_bundle_tensor(b, "task/t/fc1.threshold", &v), 0);
	assert_ptr_equal(views.tasks[0].thresholds_half[3], v.data);
	assert_true(mime_task_has_thresholds(&views.tasks[0], 3));
	assert_false(mime_task_has_thresholds(&views.tasks[0], 1)); /* pool1 */
	assert_ptr_equal(views.weight[0], model.weight[0]);         /* F32: the same views */
	{
		const struct mime_engine_config cfg = {.max_batch = 4, .n_threads = 1};
		struct mime_engine *e_dec = NULL, *e_half = NULL;

		if (mime_engine_create(&model, &cfg, &e_dec, &ei) != 0 ||
		    mime_engine_create(&views, &cfg, &e_half, &ei) != 0)
			fail_msg("%s", ei.msg);
		expect_same_forward(e_dec, e_half, &rng);
		/* the decoded head and thresholds are the engine's memory, counted in its plan */
		assert_true(mime_engine_plan_bytes(e_half) ==
		            mime_engine_plan_bytes(e_dec) + sizeof(float) * (6 + 2 + 2 + 3));
		mime_engine_destroy(e_dec);
		mime_engine_destroy(e_half);
	}
	mime_model_fini(&views);
	mime_model_fini(&model);
	mime_bundle_close(b);
	mime_manifest_free(&m);
	unlink(path);
	free(path);
}

/* A task tensor stored sparse (bundle.h: X.mask + X.values): it validates like the dense one,
 * mime_bundle_tensor_f32 and the model see the dense floats (zeros in place), and an engine
 * computes bit for bit what it computes with the dense tensor. */
enum sparse_variant {
	SPARSE_OK,
	SPARSE_F16_VALUES,
	SPARSE_COUNT_MISMATCH,
	SPARSE_MASK_LENGTH,
	SPARSE_BITS_PAST_END,
	SPARSE_BOTH_FORMS,
	SPARSE_MASK_ONLY,
	SPARSE_VALUES_DTYPE,
	SPARSE_DENSE_AND_VALUES,
};

/* The fixture's bundle with its head weight [2,3] = hw stored as variant asks. */
static int write_sparse_variant(struct fixture_tensors *f, const float *hw,
                                enum sparse_variant variant, const char *path,
                                struct mime_errinfo *ei)
{
	static const int64_t s_hw[] = {2, 3}, s1[] = {1}, s2[] = {2}, s3[] = {3};
	struct mime_bundle_writer *out = make_writer_head(
		f, 1, variant == SPARSE_BOTH_FORMS || variant == SPARSE_DENSE_AND_VALUES);
	struct mime_manifest m;
	uint8_t bits = 0;
	uint16_t h[3];
	int r;

	assert_int_equal(mime_manifest_parse(manifest_json, strlen(manifest_json), &m, ei), 0);
	for (int j = 0; j < 6; j++)
		bits |= (uint8_t)((hw[j] != 0.0f) << j);
	switch (variant) {
	case SPARSE_OK:
	case SPARSE_BOTH_FORMS:
		assert_int_equal(
			mime_bundle_writer_add_sparse(out, "task/t/head.weight", 2, s_hw, hw), 0);
		break;
	case SPARSE_F16_VALUES:
		for (int j = 0, k = 0; j < 6; j++)
			if (hw[j] != 0.0f)
				h[k++] = mime_float_to_half(hw[j]);
		assert_int_equal(mime_bundle_writer_add(out, "task/t/head.weight.mask",
		                                        MIME_DTYPE_U8, 1, s1, &bits),
		                 0);
		assert_int_equal(mime_bundle_writer_add(out, "task/t/head.weight.values",
		                                        MIME_DTYPE_F16, 1, s3, h),
		                 0);
		break;
	case SPARSE_COUNT_MISMATCH: /* 3 bits set, 2 values */
	case SPARSE_MASK_LENGTH:    /* 2 mask bytes for 6 elements */
	case SPARSE_BITS_PAST_END:  /* bit 6 set: a 7th element */
	case SPARSE_VALUES_DTYPE: {
		uint8_t mb[2] = {bits, 0};
		float vals[4] = {0};

		if (variant == SPARSE_BITS_PAST_END)
			mb[0] |= 1u << 6;
		assert_int_equal(
			mime_bundle_writer_add(out, "task/t/head.weight.mask", MIME_DTYPE_U8, 1,
		                               variant == SPARSE_MASK_LENGTH ? s2 : s1, mb),
			0);
		if (variant == SPARSE_VALUES_DTYPE)
			assert_int_equal(mime_bundle_writer_add(out, "task/t/head.weight.values",
			                                        MIME_DTYPE_I32, 1, s3, vals),
			                 0);
		else
			assert_int_equal(mime_bundle_writer_add(
						 out, "task/t/head.weight.values", MIME_DTYPE_F32,
						 1, variant == SPARSE_COUNT_MISMATCH ? s2 : s3,
						 vals),
			                 0);
		break;
	}
	case SPARSE_DENSE_AND_VALUES: {
		const float v3[3] = {1, 2, 3};

		assert_int_equal(mime_bundle_writer_add(out, "task/t/head.weight.values",
		                                        MIME_DTYPE_F32, 1, s3, v3),
		                 0);
		break;
	}
	case SPARSE_MASK_ONLY:
		assert_int_equal(mime_bundle_writer_add(out, "task/t/head.weight.mask",
		                                        MIME_DTYPE_U8, 1, s1, &bits),
		                 0);
		break;
	}
	r = mime_bundle_writer_write(out, &m, path, ei);
	mime_bundle_writer_destroy(out);
	mime_manifest_free(&m);
	return r;
}

static void test_bundle_sparse_task_tensors(void **state)
{
	static const struct {
		enum sparse_variant variant;
		const char *msg;
	} bad[] = {
		{SPARSE_COUNT_MISMATCH,
	         "'task/t/head.weight.values': expected F32 or F16 [3] (the mask's set bits)"},
		{SPARSE_MASK_LENGTH, "'task/t/head.weight.mask': expected U8 [1]"},
		{SPARSE_BITS_PAST_END, "'task/t/head.weight.mask': bits set past its 6 elements"},
		{SPARSE_BOTH_FORMS, "'task/t/head.weight' is stored both dense and sparse"},
		{SPARSE_MASK_ONLY, "'task/t/head.weight.values' missing (sparse "
	                           "'task/t/head.weight' has its mask only)"},
		{SPARSE_VALUES_DTYPE, "'task/t/head.weight.values': expected F32 or F16 [3]"},
		{SPARSE_DENSE_AND_VALUES, "'task/t/head.weight' is stored both dense and sparse "
	                                  "(task/t/head.weight.values)"},
	};
	struct fixture_tensors f;
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL, *bd = NULL;
	struct mime_model sparse, dense;
	struct mime_tensor_view v;
	const float *dec;
	char *path = mime_test_tmpfile(NULL, 0), *dpath = mime_test_tmpfile(NULL, 0);
	float hw[6];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&ei, 0, sizeof(ei));
		memset(hw, 0, sizeof(hw));
		hw[0] = 0.5f, hw[2] = -1.25f, hw[5] = 3.0f;
		assert_int_equal(write_sparse_variant(&f, hw, bad[i].variant, path, &ei),
		                 MIME_EFORMAT);
		if (!strstr(ei.msg, bad[i].msg))
			fail_msg("variant %d: '%s', expected '%s'", (int)bad[i].variant, ei.msg,
			         bad[i].msg);
	}
	/* a pair the manifest does not imply is not checked at open: its counts are checked
	 * when it is read */
	for (int wrong = 0; wrong < 2; wrong++) {
		static const int64_t s1[] = {1}, s2[] = {2}, s3[] = {3};
		const uint8_t bits = 0x13; /* elements 0, 1, 4 */
		const float vals[3] = {1.5f, -2.0f, 4.0f};
		struct mime_bundle_writer *w = make_writer(&f, 1);
		struct mime_manifest m;

		assert_int_equal(mime_manifest_parse(manifest_json, strlen(manifest_json), &m, &ei),
		                 0);
		assert_int_equal(
			mime_bundle_writer_add(w, "extra/x.mask", MIME_DTYPE_U8, 1, s1, &bits), 0);
		assert_int_equal(mime_bundle_writer_add(w, "extra/x.values", MIME_DTYPE_F32, 1,
		                                        wrong ? s2 : s3, vals),
		                 0);
		if (mime_bundle_writer_write(w, &m, path, &ei) != 0 ||
		    mime_bundle_open(path, &b, &ei) != 0)
			fail_msg("%s", ei.msg);
		if (wrong) {
			assert_int_equal(mime_bundle_tensor_f32(b, "extra/x", &dec), MIME_EFORMAT);
		} else {
			assert_int_equal(mime_bundle_tensor_f32(b, "extra/x", &dec), 0);
			assert_true(dec[0] == 1.5f && dec[1] == -2.0f && dec[2] == 0.0f &&
			            dec[3] == 0.0f && dec[4] == 4.0f && dec[7] == 0.0f);
		}
		mime_bundle_close(b);
		mime_bundle_writer_destroy(w);
		mime_manifest_free(&m);
	}
	for (int f16 = 0; f16 < 2; f16++) {
		memset(&ei, 0, sizeof(ei));
		memset(hw, 0, sizeof(hw));
		hw[0] = 0.5f, hw[2] = -1.25f, hw[5] = 3.0f; /* exact in F16 too */
		if (write_sparse_variant(&f, hw, f16 ? SPARSE_F16_VALUES : SPARSE_OK, path, &ei) !=
		    0)
			fail_msg("%s", ei.msg);
		if (mime_bundle_open(path, &b, &ei) != 0)
			fail_msg("%s", ei.msg);
		assert_int_equal(mime_bundle_tensor(b, "task/t/head.weight", &v), MIME_EFORMAT);
		assert_true(mime_bundle_has_tensor(b, "task/t/head.weight"));
		assert_false(mime_bundle_has_tensor(b, "task/t/nope"));
		assert_int_equal(mime_bundle_tensor(b, "task/t/head.weight.values", &v), 0);
		assert_int_equal(v.n_bytes, 3 * (f16 ? 2 : 4));
		assert_int_equal(mime_bundle_tensor_f32(b, "task/t/head.weight", &dec), 0);
		assert_memory_equal(dec, hw, sizeof(hw));
		assert_true(dec[6] == 0.0f && dec[7] == 0.0f); /* the mask byte's tail */

		/* the same tensors with the head dense */
		{
			static const int64_t s_hw[] = {2, 3};
			struct mime_bundle_writer *w = make_writer_head(&f, 1, 0);
			struct mime_manifest m;

			assert_int_equal(
				mime_manifest_parse(manifest_json, strlen(manifest_json), &m, &ei),
				0);
			assert_int_equal(mime_bundle_writer_add(w, "task/t/head.weight",
			                                        MIME_DTYPE_F32, 2, s_hw, hw),
			                 0);
			if (mime_bundle_writer_write(w, &m, dpath, &ei) != 0 ||
			    mime_bundle_open(dpath, &bd, &ei) != 0)
				fail_msg("%s", ei.msg);
			mime_bundle_writer_destroy(w);
			mime_manifest_free(&m);
		}
		assert_int_equal(mime_model_from_bundle(b, MIME_MODEL_HALF_VIEWS, &sparse, &ei), 0);
		assert_int_equal(mime_model_from_bundle(bd, MIME_MODEL_HALF_VIEWS, &dense, &ei), 0);
		assert_memory_equal(sparse.tasks[0].head_w, hw, sizeof(hw));
		{
			const struct mime_engine_config cfg = {.max_batch = 4, .n_threads = 1};
			struct mime_engine *es = NULL, *ed = NULL;
			uint64_t rng = 11;

			if (mime_engine_create(&sparse, &cfg, &es, &ei) != 0 ||
			    mime_engine_create(&dense, &cfg, &ed, &ei) != 0)
				fail_msg("%s", ei.msg);
			expect_same_forward(ed, es, &rng);
			mime_engine_destroy(es);
			mime_engine_destroy(ed);
		}
		mime_model_fini(&sparse);
		mime_model_fini(&dense);
		mime_bundle_close(bd);
		mime_bundle_close(b);
	}
	unlink(path);
	unlink(dpath);
	free(path);
	free(dpath);
}

#define CORRUPT(n, c)                                                                              \
	{                                                                                          \
		"test_bundle_open_rejects_" n, run_corrupt_case, NULL, NULL, (void *)&c            \
	}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bundle_open_accepts_the_uncorrupted_fixture),
		cmocka_unit_test(test_bundle_open_allows_extra_tensors),
		cmocka_unit_test(test_bundle_odd_f16_offsets_are_decoded),
		CORRUPT("truncated_file", c_truncated),
		CORRUPT("header_length_beyond_file", c_length_beyond),
		CORRUPT("absurd_header_length", c_length_absurd),
		CORRUPT("invalid_json", c_invalid_json),
		CORRUPT("truncated_data", c_truncated_data),
		CORRUPT("header_not_object", c_not_object),
		CORRUPT("missing_metadata", c_no_metadata),
		CORRUPT("missing_manifest", c_no_manifest),
		CORRUPT("metadata_not_strings", c_metadata_types),
		CORRUPT("manifest_not_json", c_manifest_json),
		CORRUPT("entry_not_object", c_entry_not_object),
		CORRUPT("unknown_dtype", c_unknown_dtype),
		CORRUPT("dtype_not_string", c_dtype_not_string),
		CORRUPT("unknown_entry_key", c_entry_key),
		CORRUPT("negative_dim", c_negative_dim),
		CORRUPT("shape_not_list", c_shape_not_list),
		CORRUPT("too_many_dims", c_too_many_dims),
		CORRUPT("element_count_overflow", c_numel_overflow),
		CORRUPT("offsets_not_pair", c_offsets_pair),
		CORRUPT("offsets_reversed", c_offsets_reversed),
		CORRUPT("offsets_out_of_range", c_out_of_range),
		CORRUPT("offsets_size_mismatch", c_size_mismatch),
		CORRUPT("offsets_overlapping", c_overlap),
		CORRUPT("offsets_gap", c_gap),
		CORRUPT("trailing_bytes", c_trailing),
		CORRUPT("misaligned_f32", c_misaligned),
		CORRUPT("dtype_mismatch", c_dtype_mismatch),
		CORRUPT("shape_mismatch", c_shape_mismatch),
		CORRUPT("head_shape_mismatch", c_head_shape),
		CORRUPT("missing_tensor", c_missing_tensor),
		CORRUPT("element_threshold_shape", c_element_thresholds),
		CORRUPT("unknown_layer_kind", c_layer_kind),
		CORRUPT("wrong_input_spec", c_input_spec),
		CORRUPT("bad_graph", c_bad_graph),
		CORRUPT("duplicate_task", c_duplicate_task),
		CORRUPT("empty_tensor_name", c_empty_name),
		cmocka_unit_test(test_bundle_open_rejects_every_truncation),
		cmocka_unit_test(test_bundle_open_survives_header_bit_flips),
		cmocka_unit_test(test_bundle_open_reports_missing_file),
		cmocka_unit_test(test_bundle_writer_round_trips),
		cmocka_unit_test(test_half_decodes_every_encoding_and_rounds_to_nearest_even),
		cmocka_unit_test(test_bundle_task_tensors_may_be_f16),
		cmocka_unit_test(test_half_to_float_n_equals_scalar),
		cmocka_unit_test(test_bundle_writer_refuses_what_the_reader_rejects),
		cmocka_unit_test(test_bundle_writer_add_rejects_bad_tensors),
		cmocka_unit_test(test_bundle_safetensors_open_needs_no_manifest),
		cmocka_unit_test(test_bundle_writer_keeps_wide_tensors_aligned),
		cmocka_unit_test(test_bundle_sparse_task_tensors),
	};

	return cmocka_run_group_tests_name("bundle", tests, NULL, NULL);
}
