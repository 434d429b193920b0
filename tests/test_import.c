// SPDX-License-Identifier: MIT
/* test_import -- network description YAML and the import of PyTorch safetensors weights
 * (BatchNorm folding checked against a naive computation). */
#include "tests/unit.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/bundle.h"
#include "train/graphyaml.h"

static const char net_yaml[] =
	"name: tiny\n"
	"input: [3, 4, 4]\n"
	"layers:\n"
	"  - {name: conv1, kind: conv, out: 3, kernel: 3, pad: 1, act: relu,\n"
	"     source: features.0, bn: features.1}\n"
	"  - {name: pool1, kind: maxpool, kernel: 2}\n"
	"  - {name: conv2, kind: conv, out: 2, kernel: 1, act: relu, source: features.4,\n"
	"     bn: features.5}\n"
	"  - {name: flatten, kind: flatten}\n"
	"  - {name: fc1, kind: fc, out: 4, act: relu, source: classifier.0}\n"
	"head:\n"
	"  source: classifier.2\n"
	"  task: t\n"
	"  classes: [a, b, c]\n";

/* ---- a safetensors file as PyTorch's save_file() writes it ---- */

#define MAX_T 24

struct st_tensor {
	const char *name, *dtype;
	int ndim;
	int64_t shape[4];
	size_t n;
	void *data; /* n elements of the dtype, little endian (the host's order) */
};

struct st_file {
	int n;
	struct st_tensor t[MAX_T];
};

static float *st_add_f32(struct st_file *f, const char *name, int ndim, const int64_t *shape,
                         uint64_t *rng, float lo, float hi)
{
	struct st_tensor *t = &f->t[f->n++];
	float *v;

	t->name = name;
	t->dtype = "F32";
	t->ndim = ndim;
	t->n = 1;
	for (int i = 0; i < ndim; i++) {
		t->shape[i] = shape[i];
		t->n *= (size_t)shape[i];
	}
	v = malloc(t->n * sizeof(float));
	for (size_t i = 0; i < t->n; i++)
		v[i] = mime_test_uniform(rng, lo, hi);
	t->data = v;
	return v;
}

static void st_remove(struct st_file *f, const char *name)
{
	for (int i = 0; i < f->n; i++)
		if (strcmp(f->t[i].name, name) == 0) {
			free(f->t[i].data);
			f->t[i] = f->t[--f->n];
			return;
		}
	fail_msg("no tensor %s", name);
}

static struct st_tensor *st_get(struct st_file *f, const char *name)
{
	for (int i = 0; i < f->n; i++)
		if (strcmp(f->t[i].name, name) == 0)
			return &f->t[i];
	fail_msg("no tensor %s", name);
	return NULL;
}

static size_t dsize(const char *dtype)
{
	return strcmp(dtype, "F64") == 0 || strcmp(dtype, "I64") == 0 ? 8 : 4;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct st_tensor *)a)->name, ((const struct st_tensor *)b)->name);
}

/* Header {"__metadata__":{"format":"pt"}, entries sorted by name}, padded to 8 bytes. */
static uint8_t *st_build(struct st_file *f, size_t *ret_size)
{
	char hdr[8192];
	size_t o = 0, at = 0, n, size;
	uint8_t *buf;

	qsort(f->t, f->n, sizeof(f->t[0]), by_name);
	o += snprintf(hdr + o, sizeof(hdr) - o, "{\"__metadata__\":{\"format\":\"pt\"}");
	for (int i = 0; i < f->n; i++) {
		struct st_tensor *t = &f->t[i];
		size_t bytes = t->n * dsize(t->dtype);

		o += snprintf(hdr + o, sizeof(hdr) - o, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[",
		              t->name, t->dtype);
		for (int d = 0; d < t->ndim; d++)
			o += snprintf(hdr + o, sizeof(hdr) - o, "%s%lld", d ? "," : "",
			              (long long)t->shape[d]);
		o += snprintf(hdr + o, sizeof(hdr) - o, "],\"data_offsets\":[%zu,%zu]}", at,
		              at + bytes);
		at += bytes;
	}
	o += snprintf(hdr + o, sizeof(hdr) - o, "}");
	assert_true(o < sizeof(hdr));
	n = (o + 7) / 8 * 8;
	size = 8 + n + at;
	buf = aligned_alloc(8, (size + 7) / 8 * 8);
	for (int k = 0; k < 8; k++)
		buf[k] = (uint8_t)(n >> (8 * k));
	memcpy(buf + 8, hdr, o);
	memset(buf + 8 + o, ' ', n - o);
	at = 8 + n;
	for (int i = 0; i < f->n; i++) {
		size_t bytes = f->t[i].n * dsize(f->t[i].dtype);

		memcpy(buf + at, f->t[i].data, bytes);
		at += bytes;
	}
	*ret_size = size;
	return buf;
}

static void st_free(struct st_file *f)
{
	for (int i = 0; i < f->n; i++)
		free(f->t[i].data);
}

/* The weights net_yaml names, random; BN variances positive. */
static void make_weights(struct st_file *f)
{
	static const int64_t w0[] = {3, 3, 3, 3}, k3[] = {3}, w4[] = {2, 3, 1, 1}, k2[] = {2},
			     c0[] = {4, 8}, c2[] = {3, 4};
	uint64_t rng = 11;
	struct st_tensor *t;
	double *b64;

	memset(f, 0, sizeof(*f));
	st_add_f32(f, "features.0.weight", 4, w0, &rng, -1, 1);
	st_add_f32(f, "features.0.bias", 1, k3, &rng, -1, 1);
	st_add_f32(f, "features.1.weight", 1, k3, &rng, 0.5f, 2);
	st_add_f32(f, "features.1.bias", 1, k3, &rng, -1, 1);
	st_add_f32(f, "features.1.running_mean", 1, k3, &rng, -1, 1);
	st_add_f32(f, "features.1.running_var", 1, k3, &rng, 0.1f, 3);
	t = &f->t[f->n++]; /* BatchNorm's counter, an I64 scalar: must be tolerated */
	*t = (struct st_tensor){.name = "features.1.num_batches_tracked", .dtype = "I64", .n = 1};
	t->data = calloc(1, 8);
	st_add_f32(f, "features.4.weight", 4, w4, &rng, -1, 1); /* bias=False before BN */
	st_add_f32(f, "features.5.weight", 1, k2, &rng, 0.5f, 2);
	st_add_f32(f, "features.5.bias", 1, k2, &rng, -1, 1);
	st_add_f32(f, "features.5.running_mean", 1, k2, &rng, -1, 1);
	st_add_f32(f, "features.5.running_var", 1, k2, &rng, 0.1f, 3);
	st_add_f32(f, "classifier.0.weight", 2, c0, &rng, -1, 1);
	t = &f->t[f->n++]; /* an F64 bias: converted */
	*t = (struct st_tensor){
		.name = "classifier.0.bias", .dtype = "F64", .ndim = 1, .shape = {4}, .n = 4};
	b64 = malloc(4 * sizeof(double));
	for (int i = 0; i < 4; i++)
		b64[i] = 0.25 * i - 0.3;
	t->data = b64;
	st_add_f32(f, "classifier.2.weight", 2, c2, &rng, -1, 1);
	st_add_f32(f, "classifier.2.bias", 1, k3, &rng, -1, 1);
}

static int run_import(struct st_file *f, struct mimetrain_netdesc *d, char **ret_path,
                      struct mime_errinfo *ei)
{
	struct mime_bundle_writer *w = NULL;
	struct mime_bundle *st = NULL;
	struct mime_manifest m = {0};
	uint8_t *buf;
	size_t size;
	int r;

	buf = st_build(f, &size);
	r = mime_safetensors_open_memory(buf, size, &st, ei);
	if (r < 0)
		fail_msg("weights: %s", ei->msg);
	assert_int_equal(mime_bundle_writer_create(&w), 0);
	r = mimetrain_import(d, st, w, &m, ei);
	if (r == 0) {
		*ret_path = mime_test_tmpfile(NULL, 0);
		m.provenance_json = strdup("{\"command\":\"test\"}");
		r = mime_bundle_writer_write(w, &m, *ret_path, ei);
		mime_manifest_free(&m);
	}
	mime_bundle_writer_destroy(w);
	mime_bundle_close(st);
	free(buf);
	return r;
}

static const float *view_f32(struct mime_bundle *b, const char *name, size_t n)
{
	struct mime_tensor_view v;

	assert_int_equal(mime_bundle_tensor(b, name, &v), 0);
	assert_int_equal(v.dtype, MIME_DTYPE_F32);
	assert_int_equal(v.n_bytes, n * 4);
	return v.data;
}

static void assert_close(double got, double want, const char *what, int i)
{
	if (fabs(got - want) > 1e-5 * fmax(1.0, fabs(want)))
		fail_msg("%s[%d]: %.9g != %.9g", what, i, got, want);
}

/* Folded weights equal the naive formula, element by element. */
static void check_folded(struct mime_bundle *b, struct st_file *f, const char *dst, const char *src,
                         const char *bn, int k, int fan_in, int has_bias)
{
	char name[96], wn[96], bnn[4][96];
	const float *w, *bias;
	const float *sw, *sb = NULL, *g, *be, *mu, *var;

	snprintf(name, sizeof(name), "%s.weight", dst);
	w = view_f32(b, name, (size_t)k * fan_in);
	snprintf(name, sizeof(name), "%s.bias", dst);
	bias = view_f32(b, name, k);
	snprintf(wn, sizeof(wn), "%s.weight", src);
	sw = st_get(f, wn)->data;
	if (has_bias) {
		snprintf(wn, sizeof(wn), "%s.bias", src);
		sb = st_get(f, wn)->data;
	}
	snprintf(bnn[0], 96, "%s.weight", bn);
	snprintf(bnn[1], 96, "%s.bias", bn);
	snprintf(bnn[2], 96, "%s.running_mean", bn);
	snprintf(bnn[3], 96, "%s.running_var", bn);
	g = st_get(f, bnn[0])->data;
	be = st_get(f, bnn[1])->data;
	mu = st_get(f, bnn[2])->data;
	var = st_get(f, bnn[3])->data;
	for (int o = 0; o < k; o++) {
		double s = g[o] / sqrt(var[o] + 1e-5);

		for (int i = 0; i < fan_in; i++)
			assert_close(w[o * fan_in + i], sw[o * fan_in + i] * s, "weight",
			             o * fan_in + i);
		assert_close(bias[o], ((sb ? sb[o] : 0.0) - mu[o]) * s + be[o], "bias", o);
	}
}

static void test_import_folds_batchnorm(void **state)
{
	struct mimetrain_netdesc d;
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	const struct mime_manifest *m;
	struct st_file f;
	char *path = NULL;
	const float *hw, *fb;

	assert_int_equal(mimetrain_graphyaml_parse(net_yaml, strlen(net_yaml), "net.yaml", &d, &ei),
	                 0);
	make_weights(&f);
	if (run_import(&f, &d, &path, &ei) != 0)
		fail_msg("%s", ei.msg);
	if (mime_bundle_open(path, &b, &ei) != 0)
		fail_msg("%s", ei.msg);
	m = mime_bundle_manifest(b);
	assert_int_equal(m->n_tasks, 1);
	assert_string_equal(m->tasks[0].name, "t");
	assert_string_equal(m->tasks[0].class_names[2], "c");
	assert_int_equal(m->tasks[0].thresholds, MIME_THR_NONE);
	assert_int_equal(m->graph.n_layers, 5);

	check_folded(b, &f, "parent/conv1", "features.0", "features.1", 3, 27, 1);
	check_folded(b, &f, "parent/conv2", "features.4", "features.5", 2, 3, 0);
	/* no BN: copied as they are; the F64 bias converted */
	assert_memory_equal(view_f32(b, "parent/fc1.weight", 32),
	                    st_get(&f, "classifier.0.weight")->data, 32 * 4);
	fb = view_f32(b, "parent/fc1.bias", 4);
	for (int i = 0; i < 4; i++)
		assert_float_equal(fb[i], (float)(0.25 * i - 0.3), 0);
	hw = view_f32(b, "task/t/head.weight", 12);
	assert_memory_equal(hw, st_get(&f, "classifier.2.weight")->data, 12 * 4);
	assert_memory_equal(view_f32(b, "task/t/head.bias", 3),
	                    st_get(&f, "classifier.2.bias")->data, 3 * 4);
	mime_bundle_close(b);
	unlink(path);
	free(path);
	st_free(&f);
	mimetrain_netdesc_free(&d);
}

/* Functional check: conv with folded weights == conv followed by BatchNorm, at every output
 * of conv1 for a random input (naive convolution, pad 1). */
static double conv_at(const float *w, double bias, const float *x, int o, int y, int xx)
{
	double acc = bias;

	for (int c = 0; c < 3; c++)
		for (int r = 0; r < 3; r++)
			for (int s = 0; s < 3; s++) {
				int iy = y + r - 1, ix = xx + s - 1;

				if (iy < 0 || iy >= 4 || ix < 0 || ix >= 4)
					continue;
				acc += (double)w[((o * 3 + c) * 3 + r) * 3 + s] *
				       x[(c * 4 + iy) * 4 + ix];
			}
	return acc;
}

static void test_import_folded_conv_equals_conv_then_bn(void **state)
{
	struct mimetrain_netdesc d;
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	struct st_file f;
	char *path = NULL;
	float x[48];
	uint64_t rng = 5;
	const float *w, *bias, *sw, *sb, *g, *be, *mu, *var;

	for (int i = 0; i < 48; i++)
		x[i] = mime_test_uniform(&rng, -1, 1);
	assert_int_equal(mimetrain_graphyaml_parse(net_yaml, strlen(net_yaml), "net.yaml", &d, &ei),
	                 0);
	make_weights(&f);
	assert_int_equal(run_import(&f, &d, &path, &ei), 0);
	assert_int_equal(mime_bundle_open(path, &b, &ei), 0);
	w = view_f32(b, "parent/conv1.weight", 81);
	bias = view_f32(b, "parent/conv1.bias", 3);
	sw = st_get(&f, "features.0.weight")->data;
	sb = st_get(&f, "features.0.bias")->data;
	g = st_get(&f, "features.1.weight")->data;
	be = st_get(&f, "features.1.bias")->data;
	mu = st_get(&f, "features.1.running_mean")->data;
	var = st_get(&f, "features.1.running_var")->data;
	for (int o = 0; o < 3; o++)
		for (int y = 0; y < 4; y++)
			for (int xx = 0; xx < 4; xx++) {
				double conv = conv_at(sw, sb[o], x, o, y, xx);
				double want = (conv - mu[o]) / sqrt(var[o] + 1e-5) * g[o] + be[o];

				assert_close(conv_at(w, bias[o], x, o, y, xx), want, "out",
				             (o * 4 + y) * 4 + xx);
			}
	mime_bundle_close(b);
	unlink(path);
	free(path);
	st_free(&f);
	mimetrain_netdesc_free(&d);
}

static void expect_import_error(void (*edit)(struct st_file *f, struct mimetrain_netdesc *d),
                                const char *msg)
{
	struct mimetrain_netdesc d;
	struct mime_errinfo ei = {0};
	struct st_file f;
	char *path = NULL;
	int r;

	assert_int_equal(mimetrain_graphyaml_parse(net_yaml, strlen(net_yaml), "net.yaml", &d, &ei),
	                 0);
	make_weights(&f);
	edit(&f, &d);
	r = run_import(&f, &d, &path, &ei);
	assert_true(r == MIME_EFORMAT || r == MIME_EGRAPH);
	assert_null(path);
	if (!strstr(ei.msg, msg))
		fail_msg("message '%s' lacks '%s'", ei.msg, msg);
	st_free(&f);
	mimetrain_netdesc_free(&d);
}

static void e_missing_weight(struct st_file *f, struct mimetrain_netdesc *d)
{
	st_remove(f, "features.4.weight");
}
static void e_missing_bn(struct st_file *f, struct mimetrain_netdesc *d)
{
	st_remove(f, "features.5.running_var");
}
static void e_wrong_shape(struct st_file *f, struct mimetrain_netdesc *d)
{
	struct st_tensor *t = st_get(f, "classifier.0.weight");

	t->shape[0] = 8; /* [8,4]: same bytes, transposed */
	t->shape[1] = 4;
}
static void e_negative_var(struct st_file *f, struct mimetrain_netdesc *d)
{
	((float *)st_get(f, "features.1.running_var")->data)[1] = -1.0f;
}
static void e_int_weight(struct st_file *f, struct mimetrain_netdesc *d)
{
	st_get(f, "classifier.2.weight")->dtype = "I32";
}
static void e_class_count(struct st_file *f, struct mimetrain_netdesc *d)
{
	free(d->classes[2]);
	d->n_classes = 2; /* three rows in the head */
}
static void e_no_source(struct st_file *f, struct mimetrain_netdesc *d)
{
	d->src[4].source[0] = '\0';
}

static void test_import_reports_bad_weights(void **state)
{
	expect_import_error(e_missing_weight, "weights: tensor 'features.4.weight' missing");
	expect_import_error(e_missing_bn, "weights: tensor 'features.5.running_var' missing");
	expect_import_error(e_wrong_shape,
	                    "tensor 'classifier.0.weight': shape [8,4], the graph needs [4,8]");
	expect_import_error(e_negative_var, "'features.1.running_var'[1] is not a non-negative");
	expect_import_error(e_int_weight, "'classifier.2.weight': dtype I32 is not a float type");
	expect_import_error(e_class_count, "head: 2 class names for 'classifier.2.weight' with 3");
	expect_import_error(e_no_source, "layer 'fc1' has no source");
}

/* ---- the YAML loader ---- */

static void test_graphyaml_parse_reads_the_description(void **state)
{
	struct mimetrain_netdesc d;
	struct mime_errinfo ei = {0};

	assert_int_equal(mimetrain_graphyaml_parse(net_yaml, strlen(net_yaml), "net.yaml", &d, &ei),
	                 0);
	assert_string_equal(d.name, "tiny");
	assert_int_equal(d.graph.input.c, 3);
	assert_int_equal(d.graph.n_layers, 5);
	assert_int_equal(d.graph.layers[0].pad, 1);
	assert_int_equal(d.graph.layers[0].stride, 1);
	assert_int_equal(d.graph.layers[1].stride, 2); /* pool stride defaults to its kernel */
	assert_int_equal(d.graph.layers[2].pad, 0);
	assert_int_equal(d.graph.layers[4].act, MIME_ACT_RELU);
	assert_string_equal(d.src[0].source, "features.0");
	assert_string_equal(d.src[0].bn, "features.1");
	assert_string_equal(d.src[4].bn, "");
	assert_int_equal(d.has_head, 1);
	assert_string_equal(d.head.source, "classifier.2");
	assert_string_equal(d.head_task, "t");
	assert_int_equal(d.n_classes, 3);
	assert_string_equal(d.classes[1], "b");
	mimetrain_netdesc_free(&d);
}

static void expect_yaml_error(const char *text, const char *msg)
{
	struct mimetrain_netdesc d;
	struct mime_errinfo ei = {0};

	assert_int_equal(mimetrain_graphyaml_parse(text, strlen(text), "net.yaml", &d, &ei),
	                 MIME_EGRAPH);
	if (!strstr(ei.msg, msg))
		fail_msg("message '%s' lacks '%s'", ei.msg, msg);
	assert_int_equal(d.n_classes, 0);
	assert_null(d.classes);
}

static void test_graphyaml_parse_reports_line_and_field(void **state)
{
	expect_yaml_error("input: [1, 8, 8]\n"
	                  "layers:\n"
	                  "  - name: conv1\n"
	                  "    kind: conv\n"
	                  "    out: 4\n"
	                  "    kernal: 3\n",
	                  "net.yaml:6:5: layers[0]: unknown key 'kernal'");
	expect_yaml_error("input: [1, 8, 8]\nlayers:\n  - {name: p, kind: avgpool, kernel: 2}\n",
	                  "net.yaml:3:21: layers[0].kind: 'avgpool' unknown");
	expect_yaml_error("input: [1, 8, 8]\nlayers:\n  - {name: c, kind: conv, out: 4, kernel: "
	                  "three}\n",
	                  "net.yaml:3:43: layers[0].kernel: 'three' is not an integer >= 1");
	expect_yaml_error("input: [1, 8, 8]\nlayers:\n  - {name: c, kind: conv, kernel: 3}\n",
	                  "net.yaml:3:5: layers[0].out: missing (a conv needs it)");
	expect_yaml_error("input: [1, 8, 8]\nlayers:\n  - {name: p, kind: maxpool, kernel: 2, "
	                  "pad: 1}\n",
	                  "layers[0].pad: does not apply to maxpool");
	expect_yaml_error("input: [1, 8, 8]\nlayers:\n  - {name: p, kind: maxpool, kernel: 2, "
	                  "source: features.2}\n",
	                  "layers[0].source: only conv and fc layers have weights");
	expect_yaml_error("input: [1, 8, 8]\nlayers:\n  - {name: c, kind: conv, out: 4, kernel: 3, "
	                  "bn: features.1}\n",
	                  "layers[0].bn: needs a source to fold into");
	expect_yaml_error("input: [1, 8, 8]\nlayers:\n  - {name: c, kind: conv, out: 4, kernel: 3, "
	                  "act: gelu}\n",
	                  "layers[0].act: expected relu or none");
	expect_yaml_error("layers:\n  - {name: f, kind: flatten}\n", "input: missing");
	expect_yaml_error("input: [1, 8]\nlayers:\n  - {name: f, kind: flatten}\n",
	                  "net.yaml:1:8: input: expected [C, H, W]");
	expect_yaml_error("input: [1, 8, 8]\ninput: [1, 8, 8]\nlayers: []\n",
	                  "net.yaml:2:1: document: key 'input' given twice");
	expect_yaml_error("input: [1, 8, 8]\nlayers: []\n", "layers: expected a list of 1..48");
	expect_yaml_error("input: [1, 8, 8\nlayers: []\n", "net.yaml:2:");
	expect_yaml_error("", "document: empty");
	expect_yaml_error("input: [1, 8, 8]\nlayers:\n  - {name: fc1, kind: fc, out: 4}\n",
	                  "net.yaml:3:3: graph: layer 'fc1': fc needs a flat input");
	expect_yaml_error("input: [1, 8, 8]\nlayers:\n  - {name: f, kind: flatten}\n"
	                  "head: {source: classifier, classes: a}\n",
	                  "net.yaml:4:37: head.classes: expected a list");
	expect_yaml_error(
		"input: [1, 8, 8]\nlayers:\n  - {name: f, kind: flatten}\nhead: {task: t}\n",
		"head.source: missing");
	expect_yaml_error("input: [1, 8, 8]\nlayers:\n  - {name: f, kind: flatten}\nextra: 1\n",
	                  "net.yaml:4:1: document: unknown key 'extra'");
}

static void test_graphyaml_load_reads_the_shipped_networks(void **state)
{
	static const struct {
		const char *file;
		int n_layers, n_convs, c, h, features;
		const char *head;
	} nets[] = {
		{"conf/networks/vgg7.yaml", 8, 4, 1, 28, 2304, "classifier"},
		{"conf/networks/vgg7-half.yaml", 8, 4, 1, 28, 1152, "classifier"},
		{"conf/networks/vgg7-half-fc.yaml", 9, 4, 1, 28, 128, "classifier.2"},
		{"conf/networks/vgg7-half-gmp.yaml", 9, 4, 1, 28, 128, "classifier"},
		{"conf/networks/vgg7-half-gmp512.yaml", 9, 4, 1, 28, 512, "classifier"},
		{"conf/networks/vgg7-c3.yaml", 8, 4, 3, 32, 4096, "classifier"},
		{"conf/networks/vgg16.yaml", 21, 13, 3, 32, 512, "classifier.6"},
	};

	for (size_t i = 0; i < sizeof(nets) / sizeof(nets[0]); i++) {
		char *path = mime_test_source_path(nets[i].file);
		struct mimetrain_netdesc d;
		struct mime_errinfo ei = {0};
		struct mime_shape out;
		int convs = 0;

		if (mimetrain_graphyaml_load(path, &d, &ei) != 0)
			fail_msg("%s", ei.msg);
		assert_int_equal(d.graph.n_layers, nets[i].n_layers);
		for (int l = 0; l < d.graph.n_layers; l++) {
			if (d.graph.layers[l].kind == MIME_LAYER_CONV) {
				convs++;
				assert_int_equal(d.graph.layers[l].kernel, 3);
				assert_int_equal(d.graph.layers[l].pad, 1);
			}
			if (d.graph.layers[l].kind == MIME_LAYER_CONV ||
			    d.graph.layers[l].kind == MIME_LAYER_FC)
				assert_true(d.src[l].source[0] != '\0');
		}
		assert_int_equal(convs, nets[i].n_convs);
		assert_int_equal(d.graph.input.c, nets[i].c);
		assert_int_equal(d.graph.input.h, nets[i].h);
		out = mime_graph_output(&d.graph);
		assert_int_equal(mime_shape_size(&out), nets[i].features);
		assert_string_equal(d.head.source, nets[i].head);
		assert_int_equal(d.n_classes, 10);
		mimetrain_netdesc_free(&d);
		free(path);
	}
}

static void test_graphyaml_load_reports_missing_file(void **state)
{
	struct mimetrain_netdesc d;
	struct mime_errinfo ei = {0};

	assert_int_equal(mimetrain_graphyaml_load("/nonexistent/net.yaml", &d, &ei), -ENOENT);
	assert_non_null(strstr(ei.msg, "/nonexistent/net.yaml"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_import_folds_batchnorm),
		cmocka_unit_test(test_import_folded_conv_equals_conv_then_bn),
		cmocka_unit_test(test_import_reports_bad_weights),
		cmocka_unit_test(test_graphyaml_parse_reads_the_description),
		cmocka_unit_test(test_graphyaml_parse_reports_line_and_field),
		cmocka_unit_test(test_graphyaml_load_reads_the_shipped_networks),
		cmocka_unit_test(test_graphyaml_load_reports_missing_file),
	};

	return cmocka_run_group_tests_name("import", tests, NULL, NULL);
}
