// SPDX-License-Identifier: MIT
/* test_phase -- phases in the bundle: the fine-grain mask encoding (first index + deltas,
 * U16/U32), the manifest's "phases" (round trip, every validation error), and a 2-phase
 * bundle written, opened and entered on an engine through mime_model_phase(), bit-equal to
 * an engine built on the sliced, masked network; missing or broken phase tensors refused. */
#include "tests/unit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/bundle.h"
#include "lib/engine.h"
#include "lib/half.h"
#include "lib/manifest.h"
#include "lib/model.h"
#include "lib/phase.h"

/* ---- the mask encoding ---- */

static void round_trip(const uint8_t *keep, size_t n_groups, enum mime_dtype want_dtype)
{
	enum mime_dtype dt;
	void *data = NULL;
	size_t n_kept = 0, expect_kept = 0;
	uint8_t *back = malloc(n_groups + 1);
	struct mime_errinfo ei = {0};

	for (size_t g = 0; g < n_groups; g++)
		expect_kept += keep[g] != 0;
	assert_int_equal(mime_phase_mask_encode(keep, n_groups, &dt, &data, &n_kept), 0);
	assert_non_null(data);
	assert_int_equal(n_kept, expect_kept);
	assert_int_equal(dt, want_dtype);
	memset(back, 7, n_groups + 1);
	if (mime_phase_mask_decode(dt, data, n_kept, n_groups, back, &ei) != 0)
		fail_msg("%s", ei.msg);
	for (size_t g = 0; g < n_groups; g++)
		assert_int_equal(back[g], keep[g] != 0);
	assert_int_equal(back[n_groups], 7); /* nothing written past the groups */
	assert_int_equal(mime_phase_mask_decode(dt, data, n_kept, n_groups, NULL, &ei), 0);
	free(data);
	free(back);
}

static void test_phase_mask_round_trips_random_empty_and_full(void **state)
{
	static const size_t sizes[] = {0, 1, 2, 7, 45, 1000, 65536, 65537, 200000};
	static const int percent[] = {0, 1, 10, 50, 90, 100};
	uint64_t rng = 11;

	(void)state;
	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++)
		for (size_t pi = 0; pi < sizeof(percent) / sizeof(percent[0]); pi++) {
			size_t n = sizes[si];
			uint8_t *keep = malloc(n + 1);
			size_t max = 0, prev = 0, k = 0;

			for (size_t g = 0; g < n; g++) {
				keep[g] = (int)(mime_test_rand(&rng) % 100) < percent[pi];
				if (keep[g]) {
					size_t v = k ? g - prev : g;

					max = v > max ? v : max;
					prev = g;
					k++;
				}
			}
			round_trip(keep, n, max <= 65535 ? MIME_DTYPE_U16 : MIME_DTYPE_U32);
			free(keep);
		}
}

/* U16 exactly when the first index and every delta fit 16 bits. */
static void test_phase_mask_encode_picks_u16_or_u32(void **state)
{
	size_t n = 200000;
	uint8_t *keep = calloc(n, 1);

	(void)state;
	keep[65535] = 1; /* first index 65535: fits */
	round_trip(keep, n, MIME_DTYPE_U16);
	keep[65535 + 65535] = 1; /* delta 65535: fits */
	round_trip(keep, n, MIME_DTYPE_U16);
	keep[65535 + 65535 + 65536] = 1; /* delta 65536: does not */
	round_trip(keep, n, MIME_DTYPE_U32);
	memset(keep, 0, n);
	keep[65536] = 1; /* first index 65536: does not */
	round_trip(keep, n, MIME_DTYPE_U32);
	memset(keep, 1, n); /* full: every delta is 1 */
	round_trip(keep, n, MIME_DTYPE_U16);
	memset(keep, 0, n); /* empty */
	round_trip(keep, n, MIME_DTYPE_U16);
	free(keep);
	assert_int_equal(mime_phase_mask_groups(7, 45, 4), 2 * 45);
	assert_int_equal(mime_phase_mask_groups(8, 45, 8), 45);
	assert_int_equal(mime_phase_mask_groups(0, 45, 8), 0);
	assert_int_equal(mime_phase_mask_groups(8, 45, 0), 0);
}

static void expect_decode_fails(enum mime_dtype dt, const void *data, size_t n, size_t n_groups,
                                const char *substr)
{
	struct mime_errinfo ei = {0};
	uint8_t keep[64];

	assert_true(n_groups <= sizeof(keep));
	assert_int_equal(mime_phase_mask_decode(dt, data, n, n_groups, keep, &ei), MIME_EFORMAT);
	if (!strstr(ei.msg, substr))
		fail_msg("message '%s' lacks '%s'", ei.msg, substr);
	memset(&ei, 0, sizeof(ei));
	assert_int_equal(mime_phase_mask_decode(dt, data, n, n_groups, NULL, &ei), MIME_EFORMAT);
}

static void test_phase_mask_decode_rejects_corrupted_deltas(void **state)
{
	const uint16_t zero_delta[] = {3, 4, 0, 1}, beyond[] = {3, 4, 40}, first_beyond[] = {50},
		       fine[] = {0, 1, 48};
	const uint32_t wrap[] = {5, 0xFFFFFFFFu, 0xFFFFFFFFu}, big[] = {0, 70000};
	const float f[] = {1.0f};

	(void)state;
	expect_decode_fails(MIME_DTYPE_U16, zero_delta, 4, 50, "value 2 is a difference of 0");
	expect_decode_fails(MIME_DTYPE_U16, beyond, 3, 20, "value 2 reaches group 47");
	expect_decode_fails(MIME_DTYPE_U16, first_beyond, 1, 50, "value 0 reaches group 50");
	expect_decode_fails(MIME_DTYPE_U32, wrap, 3, 64, "value 1 reaches group");
	expect_decode_fails(MIME_DTYPE_U32, big, 2, 64, "value 1 reaches group 70000");
	expect_decode_fails(MIME_DTYPE_U16, fine, 3, 2, "3 kept groups, but the layer has only 2");
	expect_decode_fails(MIME_DTYPE_F32, f, 1, 8, "dtype F32, expected U16 or U32");
	assert_int_equal(mime_phase_mask_decode(MIME_DTYPE_U16, fine, 3, 50, NULL, NULL), 0);
	assert_int_equal(mime_phase_mask_decode(MIME_DTYPE_U16, fine, 3, 49, NULL, NULL),
	                 MIME_EFORMAT); /* groups 0, 1, 49: the last is out of 49 groups */
}

/* ---- the manifest ---- */

/* A small VGG: l0 conv 8, l1 pool, l2 conv 12, l3 pool, l4 flatten, l5 fc 16; {P} is where
 * the phases go. */
static const char manifest_head[] =
	"{\"format\":\"mime-bundle\",\"version\":1,"
	"\"graph\":{\"input\":[1,16,16],\"layers\":["
	"{\"name\":\"l0\",\"kind\":\"conv\",\"out\":8,\"kernel\":3,\"stride\":1,\"pad\":1,"
	"\"act\":\"relu\"},"
	"{\"name\":\"l1\",\"kind\":\"maxpool\",\"kernel\":2,\"stride\":2},"
	"{\"name\":\"l2\",\"kind\":\"conv\",\"out\":12,\"kernel\":3,\"stride\":1,\"pad\":1,"
	"\"act\":\"relu\"},"
	"{\"name\":\"l3\",\"kind\":\"maxpool\",\"kernel\":2,\"stride\":2},"
	"{\"name\":\"l4\",\"kind\":\"flatten\"},"
	"{\"name\":\"l5\",\"kind\":\"fc\",\"out\":16,\"act\":\"relu\"}]},"
	"\"tasks\":[],";

static const char good_phases[] =
	"\"phases\":[{\"name\":\"small\",\"kernels\":{\"l0\":5,\"l2\":7,\"l5\":9},\"wuv\":4,"
	"\"fine\":[\"l2\"],\"accuracy\":0.8,\"latency_ms\":0.25,\"memory_bytes\":4096,"
	"\"nonzero_params\":1234,\"kind\":\"fine\"},"
	"{\"name\":\"all\",\"kernels\":{\"l0\":8,\"l2\":12,\"l5\":16},\"wuv\":8}]}";

static int parse_phases(const char *phases, struct mime_manifest *m, struct mime_errinfo *ei)
{
	char buf[4096];

	snprintf(buf, sizeof(buf), "%s%s", manifest_head, phases);
	memset(ei, 0, sizeof(*ei));
	return mime_manifest_parse(buf, strlen(buf), m, ei);
}

/* Parses good_phases with the first occurrence of from replaced by to. */
static int parse_edit(const char *from, const char *to, struct mime_errinfo *ei)
{
	const char *at = strstr(good_phases, from);
	struct mime_manifest m;
	char buf[2048];
	int r;

	assert_non_null(at);
	snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(at - good_phases), good_phases, to,
	         at + strlen(from));
	r = parse_phases(buf, &m, ei);
	if (r == 0)
		mime_manifest_free(&m);
	return r;
}

#define assert_edit_fails(from, to, substr)                                                        \
	do {                                                                                       \
		struct mime_errinfo ei_;                                                           \
		assert_int_equal(parse_edit(from, to, &ei_), MIME_EFORMAT);                        \
		if (!strstr(ei_.msg, substr))                                                      \
			fail_msg("message '%s' lacks '%s'", ei_.msg, substr);                      \
	} while (0)

static void test_phase_manifest_round_trips(void **state)
{
	struct mime_manifest m, m2;
	struct mime_errinfo ei = {0};
	char *s, *s2;

	(void)state;
	if (parse_phases(good_phases, &m, &ei) != 0)
		fail_msg("%s", ei.msg);
	assert_int_equal(m.n_phases, 2);
	assert_string_equal(m.phases[0].name, "small");
	assert_int_equal(m.phases[0].wuv, 4);
	assert_int_equal(m.phases[0].k_active[0], 5);
	assert_int_equal(m.phases[0].k_active[1], 0);
	assert_int_equal(m.phases[0].k_active[2], 7);
	assert_int_equal(m.phases[0].k_active[5], 9);
	assert_int_equal(m.phases[0].fine[2], 1);
	assert_int_equal(m.phases[0].fine[0], 0);
	assert_float_equal(m.phases[0].accuracy, 0.8, 1e-12);
	assert_float_equal(m.phases[0].latency_ms, 0.25, 1e-12);
	assert_int_equal(m.phases[0].memory_bytes, 4096);
	assert_int_equal(m.phases[0].nonzero_params, 1234);
	assert_string_equal(m.phases[0].extra_json, "{\"kind\":\"fine\"}");
	assert_int_equal(m.phases[1].k_active[5], 16);
	assert_true(m.phases[1].accuracy < 0);
	assert_true(m.phases[1].latency_ms < 0);
	assert_true(m.phases[1].memory_bytes < 0);
	assert_true(m.phases[1].nonzero_params < 0);
	assert_null(m.phases[1].extra_json);
	s = mime_manifest_format(&m);
	assert_non_null(s);
	assert_int_equal(mime_manifest_parse(s, strlen(s), &m2, &ei), 0);
	assert_int_equal(m2.n_phases, 2);
	for (int p = 0; p < 2; p++) {
		assert_string_equal(m.phases[p].name, m2.phases[p].name);
		assert_int_equal(m.phases[p].wuv, m2.phases[p].wuv);
		assert_memory_equal(m.phases[p].k_active, m2.phases[p].k_active,
		                    sizeof(m.phases[p].k_active));
		assert_memory_equal(m.phases[p].fine, m2.phases[p].fine, sizeof(m.phases[p].fine));
		assert_float_equal(m.phases[p].accuracy, m2.phases[p].accuracy, 1e-8);
		assert_float_equal(m.phases[p].latency_ms, m2.phases[p].latency_ms, 1e-8);
		assert_int_equal(m.phases[p].memory_bytes, m2.phases[p].memory_bytes);
		assert_int_equal(m.phases[p].nonzero_params, m2.phases[p].nonzero_params);
	}
	assert_string_equal(m2.phases[0].extra_json, "{\"kind\":\"fine\"}");
	s2 = mime_manifest_format(&m2);
	assert_string_equal(s, s2);
	assert_int_equal(mime_manifest_check_phases(&m2, NULL), 0);
	free(s);
	free(s2);
	mime_manifest_free(&m2);
	mime_manifest_free(&m);
	/* No phases: none formatted, n_phases 0. */
	assert_int_equal(parse_phases("\"phases\":[]}", &m, &ei), 0);
	assert_int_equal(m.n_phases, 0);
	assert_null(m.phases);
	s = mime_manifest_format(&m);
	assert_null(strstr(s, "phases"));
	free(s);
	mime_manifest_free(&m);
}

static void test_phase_manifest_rejects_each_error(void **state)
{
	struct mime_manifest m = {0};
	struct mime_errinfo ei;

	(void)state;
	assert_int_equal(parse_phases("\"phases\":{}}", &m, &ei), MIME_EFORMAT);
	assert_non_null(strstr(ei.msg, "phases is not a list"));
	assert_int_equal(parse_phases("\"phases\":[3]}", &m, &ei), MIME_EFORMAT);
	assert_non_null(strstr(ei.msg, "phases[0] is not an object"));
	assert_edit_fails("\"name\":\"small\",", "", "phases[0].name missing");
	assert_edit_fails("\"name\":\"small\"", "\"name\":\"a b\"", "phases[0].name 'a b'");
	assert_edit_fails("\"name\":\"all\"", "\"name\":\"small\"",
	                  "phases[1].name 'small' used twice (phases[0])");
	assert_edit_fails("\"wuv\":4,", "", "phases[0].wuv missing");
	assert_edit_fails("\"wuv\":4", "\"wuv\":6", "phases[0].wuv 6 is not 16, 8 or 4");
	assert_edit_fails("\"wuv\":4", "\"wuv\":32", "phases[0].wuv 32 out of range");
	assert_edit_fails("\"kernels\":{\"l0\":5,\"l2\":7,\"l5\":9},", "",
	                  "phases[0].kernels missing or not an object");
	assert_edit_fails("\"l0\":5,", "", "phases[0].kernels.l0 missing");
	assert_edit_fails("\"l0\":5", "\"l0\":0", "phases[0].kernels.l0 is not an integer in 1..8");
	assert_edit_fails("\"l0\":5", "\"l0\":9", "phases[0].kernels.l0 is not an integer in 1..8");
	assert_edit_fails("\"l0\":5", "\"l0\":5.5", "phases[0].kernels.l0 is not an integer");
	assert_edit_fails("\"l0\":5", "\"l0\":5,\"l1\":2", "kernels.l1: a maxpool layer has no");
	assert_edit_fails("\"l0\":5", "\"l0\":5,\"conv9\":2",
	                  "phases[0].kernels: no layer 'conv9' in the graph");
	assert_edit_fails("\"l0\":8,", "\"l0\":4,",
	                  "phases[1].kernels.l0 4 < 5 of phases[0]: phases must be nested");
	assert_edit_fails("\"fine\":[\"l2\"]", "\"fine\":[\"l5\"]",
	                  "phases[0].fine[0]: 'l5' is a fc layer; fine-grain masks are for conv");
	assert_edit_fails("\"fine\":[\"l2\"]", "\"fine\":[\"l2\",\"l2\"]",
	                  "phases[0].fine[1]: 'l2' listed twice");
	assert_edit_fails("\"fine\":[\"l2\"]", "\"fine\":[\"x\"]",
	                  "phases[0].fine[0]: no layer 'x'");
	assert_edit_fails("\"fine\":[\"l2\"]", "\"fine\":\"l2\"", "phases[0].fine is not a list");
	assert_edit_fails("\"fine\":[\"l2\"]", "\"fine\":[2]", "phases[0].fine[0] is not a string");
	assert_edit_fails("\"accuracy\":0.8", "\"accuracy\":80",
	                  "phases[0].accuracy is not a fraction");
	assert_edit_fails("\"latency_ms\":0.25", "\"latency_ms\":-1",
	                  "phases[0].latency_ms is not a non-negative number");
	assert_edit_fails("\"memory_bytes\":4096", "\"memory_bytes\":4.5",
	                  "phases[0].memory_bytes is not a non-negative integer");
	assert_edit_fails("\"nonzero_params\":1234", "\"nonzero_params\":\"x\"",
	                  "phases[0].nonzero_params is not a non-negative integer");
	/* A caller-built manifest is checked the same way. */
	assert_int_equal(parse_phases(good_phases, &m, &ei), 0);
	m.phases[1].k_active[2] = 6;
	assert_int_equal(mime_manifest_check_phases(&m, &ei), MIME_EFORMAT);
	assert_non_null(strstr(ei.msg, "phases[1].kernels.l2 6 < 7 of phases[0]"));
	m.phases[1].k_active[2] = 12;
	m.phases[1].fine[5] = 1;
	assert_int_equal(mime_manifest_check_phases(&m, &ei), MIME_EFORMAT);
	assert_non_null(strstr(ei.msg, "phases[1].fine: 'l5' is not a conv layer"));
	mime_manifest_free(&m);
}

/* ---- a 2-phase bundle on an engine ---- */

struct net {
	struct mime_model m;
	struct mime_task_params tasks[2];
	float *w[MIME_MAX_LAYERS], *b[MIME_MAX_LAYERS];
	float *thr[2][MIME_MAX_LAYERS];
	float *head_w[2], *head_b[2];
	struct mime_shape shapes[MIME_MAX_LAYERS];
};

static float *rand_array(uint64_t *rng, long n, float lo, float hi)
{
	float *a = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));

	for (long i = 0; i < n; i++)
		a[i] = mime_test_uniform(rng, lo, hi);
	return a;
}

static void add_layer(struct mime_graph *g, enum mime_layer_kind kind, int out, int k, int s,
                      int pad, enum mime_act act)
{
	struct mime_layer_spec *l = &g->layers[g->n_layers];

	*l = (struct mime_layer_spec){
		.kind = kind, .out = out, .kernel = k, .stride = s, .pad = pad, .act = act};
	snprintf(l->name, sizeof(l->name), "l%d", g->n_layers);
	g->n_layers++;
}

static void small_vgg(struct mime_graph *g)
{
	memset(g, 0, sizeof(*g));
	g->input = (struct mime_shape){1, 16, 16};
	add_layer(g, MIME_LAYER_CONV, 8, 3, 1, 1, MIME_ACT_RELU);
	add_layer(g, MIME_LAYER_MAXPOOL, 0, 2, 2, 0, MIME_ACT_NONE);
	add_layer(g, MIME_LAYER_CONV, 12, 3, 1, 1, MIME_ACT_RELU);
	add_layer(g, MIME_LAYER_MAXPOOL, 0, 2, 2, 0, MIME_ACT_NONE);
	add_layer(g, MIME_LAYER_FLATTEN, 0, 0, 0, 0, MIME_ACT_NONE);
	add_layer(g, MIME_LAYER_FC, 16, 0, 0, 0, MIME_ACT_RELU);
}

/* Random weights, heads and thresholds (task 0 element, task 1 channel), as test_engine. */
static void net_init(struct net *n, const struct mime_graph *g, uint64_t seed)
{
	static const enum mime_thresholds gran[2] = {MIME_THR_ELEMENT, MIME_THR_CHANNEL};
	static const int classes[2] = {5, 3};
	uint64_t rng = seed;
	struct mime_shape in;

	memset(n, 0, sizeof(*n));
	n->m.graph = *g;
	assert_int_equal(mime_graph_check(g, n->shapes, NULL), 0);
	in = g->input;
	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];

		if (l->kind == MIME_LAYER_CONV || l->kind == MIME_LAYER_FC) {
			long fan = l->kind == MIME_LAYER_CONV ? (long)in.c * l->kernel * l->kernel
			                                      : mime_shape_size(&in);
			float sc = 1.7f / sqrtf((float)fan);

			n->w[i] = rand_array(&rng, l->out * fan, -sc, sc);
			n->b[i] = rand_array(&rng, l->out, -0.1f, 0.1f);
			n->m.weight[i] = n->w[i];
			n->m.bias[i] = n->b[i];
		}
		in = n->shapes[i];
	}
	for (int t = 0; t < 2; t++) {
		struct mime_task_params *tp = &n->tasks[t];
		long feat = mime_shape_size(&in);

		tp->name = t == 0 ? "a" : "b";
		tp->n_classes = classes[t];
		n->head_w[t] = rand_array(&rng, classes[t] * feat, -0.2f, 0.2f);
		n->head_b[t] = rand_array(&rng, classes[t], -0.1f, 0.1f);
		tp->head_w = n->head_w[t];
		tp->head_b = n->head_b[t];
		tp->granularity = gran[t];
		for (int i = 0; i < g->n_layers; i++) {
			long cnt;

			if (!mime_graph_layer_masked(g, i))
				continue;
			cnt = gran[t] == MIME_THR_ELEMENT ? mime_shape_size(&n->shapes[i])
			                                  : n->shapes[i].c;
			n->thr[t][i] = rand_array(&rng, cnt, 0.0f, 0.3f);
			tp->thresholds[i] = n->thr[t][i];
		}
	}
	n->m.n_tasks = 2;
	n->m.tasks = n->tasks;
}

static void net_free(struct net *n)
{
	for (int i = 0; i < MIME_MAX_LAYERS; i++) {
		free(n->w[i]);
		free(n->b[i]);
		for (int t = 0; t < 2; t++)
			free(n->thr[t][i]);
	}
	for (int t = 0; t < 2; t++) {
		free(n->head_w[t]);
		free(n->head_b[t]);
	}
}

/* Copies rows [0, k) x columns [0, c) of a row-major [rows, lda] matrix. */
static float *slice(const float *w, int lda, int k, int c)
{
	float *o = malloc(sizeof(float) * (size_t)k * c);

	for (int i = 0; i < k; i++)
		memcpy(o + (size_t)i * c, w + (size_t)i * lda, sizeof(float) * c);
	return o;
}

/* The parent n, and the phase-1 sub-network sub (l0 8->5, l2 12->7 with a W_uv=4 mask,
 * l5 16->9) with weights sliced from n and its own heads and thresholds; keep is the mask
 * of l2 over [ceil(7/4)][5*9] groups. */
struct fixture {
	struct net n, sub;
	uint8_t keep[2 * 45];
};

enum {
	OMIT_NONE,
	OMIT_B_HEAD_BIAS,    /* one of task b's phase-1 tensors */
	OMIT_B_HEAD_WEIGHT,  /* the head weight, the rest present */
	OMIT_B_PHASE1,       /* all of task b's phase-1 tensors */
	OMIT_MASK,           /* phase/1/l2.mask */
	CORRUPT_MASK,        /* a delta of 0 */
	MASK_F32,            /* the mask stored as F32 */
	BAD_THRESHOLD_SHAPE, /* task a's phase-1 l2 thresholds of a wrong shape */
	PHASE2_OWN_TENSORS,  /* phase 2 (whole parent) with tensors of its own */
	PHASE2_NESTED,       /* phase 2 fine on l2, keeping all that phase 1 keeps */
	PHASE2_NOT_NESTED,   /* phase 2 fine on l2, pruning a weight phase 1 keeps */
	TASKS_F16,           /* nothing left out: every task tensor stored as F16 */
	SPARSE_HEADS,        /* every head weight stored sparse; phase 2 with tensors of its own */
};

static void fixture_init(struct fixture *f)
{
	struct mime_graph g, gs;
	uint64_t rng = 21;

	small_vgg(&g);
	net_init(&f->n, &g, 8);
	gs = g;
	gs.layers[0].out = 5;
	gs.layers[2].out = 7;
	gs.layers[5].out = 9;
	net_init(&f->sub, &gs, 9); /* its own heads and thresholds; weights replaced */
	free(f->sub.w[0]);
	f->sub.w[0] = slice(f->n.w[0], 9, 5, 9);
	free(f->sub.w[2]);
	f->sub.w[2] = slice(f->n.w[2], 8 * 9, 7, 5 * 9);
	free(f->sub.w[5]);
	f->sub.w[5] = slice(f->n.w[5], 12 * 4 * 4, 9, 7 * 4 * 4);
	for (int i = 0; i < 6; i++) {
		if (!f->sub.w[i])
			continue;
		memcpy(f->sub.b[i], f->n.b[i], sizeof(float) * (size_t)gs.layers[i].out);
		f->sub.m.weight[i] = f->sub.w[i];
		f->sub.m.bias[i] = f->sub.b[i];
	}
	/* Groups of 4 kernels x 1 column, row-major: rows 0-3 then rows 4-6. */
	for (int gi = 0; gi < 2 * 45; gi++) {
		int row = gi / 45, col = gi % 45;

		f->keep[gi] = mime_test_rand(&rng) % 3 != 0;
		if (!f->keep[gi])
			for (int k = row * 4; k < row * 4 + 4 && k < 7; k++)
				f->sub.w[2][k * 45 + col] = 0.0f;
	}
}

static void fixture_fini(struct fixture *f)
{
	net_free(&f->n);
	net_free(&f->sub);
}

static void add_f32(struct mime_bundle_writer *w, const char *name, int ndim, const int64_t *shape,
                    const float *data)
{
	assert_int_equal(mime_bundle_writer_add(w, name, MIME_DTYPE_F32, ndim, shape, data), 0);
}

/* Tensors of net n's tasks under "task/<t>/<sub>", less or broken as omit says. */
/* A task tensor: F32, or F16 (rounded) when the bundle is written with TASKS_F16. */
static void add_task_tensor(struct mime_bundle_writer *w, const char *name, int ndim,
                            const int64_t *shape, const float *data, int omit)
{
	int64_t n = 1;
	uint16_t *h;

	if (omit == SPARSE_HEADS && strstr(name, "head.weight")) {
		assert_int_equal(mime_bundle_writer_add_sparse(w, name, ndim, shape, data), 0);
		return;
	}
	if (omit != TASKS_F16) {
		add_f32(w, name, ndim, shape, data);
		return;
	}
	for (int i = 0; i < ndim; i++)
		n *= shape[i];
	h = malloc(sizeof(*h) * (size_t)n);
	assert_non_null(h);
	for (int64_t i = 0; i < n; i++)
		h[i] = mime_float_to_half(data[i]);
	assert_int_equal(mime_bundle_writer_add(w, name, MIME_DTYPE_F16, ndim, shape, h), 0);
	free(h);
}

static void add_tasks(struct mime_bundle_writer *w, const struct net *n, const char *sub, int omit)
{
	const struct mime_graph *g = &n->m.graph;
	struct mime_shape feat = n->shapes[g->n_layers - 1];
	char name[128];

	for (int t = 0; t < 2; t++) {
		const struct mime_task_params *tp = &n->tasks[t];
		int64_t s[3] = {tp->n_classes, mime_shape_size(&feat)};
		int b_phase1 = t == 1 && sub[0];

		if (b_phase1 && omit == OMIT_B_PHASE1)
			continue;
		snprintf(name, sizeof(name), "task/%s/%shead.weight", tp->name, sub);
		if (!(b_phase1 && omit == OMIT_B_HEAD_WEIGHT))
			add_task_tensor(w, name, 2, s, tp->head_w, omit);
		snprintf(name, sizeof(name), "task/%s/%shead.bias", tp->name, sub);
		if (!(b_phase1 && omit == OMIT_B_HEAD_BIAS))
			add_task_tensor(w, name, 1, s, tp->head_b, omit);
		for (int i = 0; i < g->n_layers; i++) {
			if (!mime_graph_layer_masked(g, i))
				continue;
			s[0] = n->shapes[i].c;
			s[1] = n->shapes[i].h;
			s[2] = n->shapes[i].w;
			if (t == 0 && i == 2 && sub[0] && omit == BAD_THRESHOLD_SHAPE)
				s[0] = 6; /* fewer bytes than the data: a wrong shape */
			snprintf(name, sizeof(name), "task/%s/%s%s.threshold", tp->name, sub,
			         g->layers[i].name);
			add_task_tensor(w, name, tp->granularity == MIME_THR_ELEMENT ? 3 : 1, s,
			                tp->thresholds[i], omit);
		}
	}
}

/* Writes the 2-phase bundle (phase 1 = sub with its mask; phase 2 = the whole parent without
 * tensors of its own unless asked) to path; returns writer_write's result. */
static int write_bundle(const struct fixture *f, int omit, const char *path,
                        struct mime_errinfo *ei)
{
	static char *names[5] = {"c0", "c1", "c2", "c3", "c4"};
	const struct mime_graph *g = &f->n.m.graph;
	struct mime_task_spec ts[2];
	struct mime_phase_spec ps[2];
	struct mime_manifest m = {0};
	struct mime_bundle_writer *w = NULL;
	struct mime_shape in = g->input;
	enum mime_dtype dt;
	void *mask;
	size_t n_kept;
	int r;

	memset(ts, 0, sizeof(ts));
	memset(ps, 0, sizeof(ps));
	for (int t = 0; t < 2; t++) {
		snprintf(ts[t].name, sizeof(ts[t].name), "%s", f->n.tasks[t].name);
		ts[t].n_classes = f->n.tasks[t].n_classes;
		ts[t].class_names = names;
		mime_input_spec_default(g, &ts[t].input);
		ts[t].thresholds = f->n.tasks[t].granularity;
		ts[t].accuracy = -1;
	}
	snprintf(ps[0].name, sizeof(ps[0].name), "p1");
	snprintf(ps[1].name, sizeof(ps[1].name), "whole");
	for (int p = 0; p < 2; p++) {
		ps[p].wuv = 4;
		ps[p].accuracy = ps[p].latency_ms = -1;
		ps[p].memory_bytes = ps[p].nonzero_params = -1;
		for (int i = 0; i < g->n_layers; i++)
			if (g->layers[i].kind == MIME_LAYER_CONV ||
			    g->layers[i].kind == MIME_LAYER_FC)
				ps[p].k_active[i] =
					p == 0 ? f->sub.m.graph.layers[i].out : g->layers[i].out;
	}
	ps[0].fine[2] = 1;
	ps[0].nonzero_params = 4321;
	ps[1].fine[2] = omit == PHASE2_NESTED || omit == PHASE2_NOT_NESTED;
	m.graph = *g;
	m.n_tasks = 2;
	m.tasks = ts;
	m.n_phases = 2;
	m.phases = ps;

	assert_int_equal(mime_bundle_writer_create(&w), 0);
	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];
		char name[64];
		int64_t s[4] = {l->out, in.c, l->kernel, l->kernel};

		if (l->kind == MIME_LAYER_FC)
			s[1] = mime_shape_size(&in);
		in = f->n.shapes[i];
		if (l->kind != MIME_LAYER_CONV && l->kind != MIME_LAYER_FC)
			continue;
		snprintf(name, sizeof(name), "parent/%s.weight", l->name);
		add_f32(w, name, l->kind == MIME_LAYER_CONV ? 4 : 2, s, f->n.w[i]);
		snprintf(name, sizeof(name), "parent/%s.bias", l->name);
		add_f32(w, name, 1, s, f->n.b[i]);
	}
	add_tasks(w, &f->n, "", omit);
	add_tasks(w, &f->sub, "phase1/", omit);
	if (omit == PHASE2_OWN_TENSORS || omit == SPARSE_HEADS)
		add_tasks(w, &f->n, "phase2/", omit);
	assert_int_equal(mime_phase_mask_encode(f->keep, sizeof(f->keep), &dt, &mask, &n_kept), 0);
	assert_int_equal(dt, MIME_DTYPE_U16);
	if (omit == CORRUPT_MASK)
		((uint16_t *)mask)[n_kept - 1] = 0;
	if (omit == MASK_F32) {
		float *fm = calloc(n_kept, sizeof(float));

		assert_int_equal(mime_bundle_writer_add(w, "phase/1/l2.mask", MIME_DTYPE_F32, 1,
		                                        (int64_t[]){(int64_t)n_kept}, fm),
		                 0);
		free(fm);
	} else if (omit != OMIT_MASK) {
		assert_int_equal(mime_bundle_writer_add(w, "phase/1/l2.mask", dt, 1,
		                                        (int64_t[]){(int64_t)n_kept}, mask),
		                 0);
	}
	free(mask);
	if (ps[1].fine[2]) {
		/* [ceil(12/4)][8*9] groups; phase 1 uses rows 0..6 and columns 0..44. */
		uint8_t keep2[3 * 72];

		for (int gi = 0; gi < 3 * 72; gi++) {
			int row = gi / 72, col = gi % 72;

			keep2[gi] = row == 2    ? col % 2
			            : col >= 45 ? col % 3 != 0
			                        : f->keep[row * 45 + col];
		}
		if (omit == PHASE2_NOT_NESTED)
			for (int col = 0; col < 45; col++)
				if (f->keep[45 + col]) {
					keep2[72 + col] = 0; /* kernels 4..7: phase 1 keeps 4..6 */
					break;
				}
		assert_int_equal(mime_bundle_writer_add_mask(w, 2, "l2", keep2, sizeof(keep2)), 0);
		assert_int_equal(mime_bundle_writer_add_mask(w, 2, "l2", keep2, sizeof(keep2)),
		                 MIME_EINVAL); /* twice */
		assert_int_equal(mime_bundle_writer_add_mask(w, 0, "l2", keep2, sizeof(keep2)),
		                 MIME_EINVAL);
	}
	memset(ei, 0, sizeof(*ei));
	r = mime_bundle_writer_write(w, &m, path, ei);
	mime_bundle_writer_destroy(w);
	return r;
}

/* The fixture's bundle, written by write_bundle(omit) to path, opened. */
static struct mime_bundle *open_fixture_bundle(const struct fixture *f, int omit, const char *path)
{
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;

	if (write_bundle(f, omit, path, &ei) != 0 || mime_bundle_open(path, &b, &ei) != 0)
		fail_msg("%s", ei.msg);
	return b;
}

static void forward_copy(struct mime_engine *e, const float *in, const int *tasks, float *logits,
                         int64_t *zeros)
{
	struct mime_engine_result res;

	assert_int_equal(mime_engine_forward(e, 4, in, tasks, &res), 0);
	memcpy(logits, res.logits, sizeof(float) * 4 * res.max_classes);
	memcpy(zeros, res.zeros, sizeof(int64_t) * 4 * res.n_masked);
}

/* The two engines' logits and zero counts for the same batch are bit for bit the same. */
static void forward_equal(struct mime_engine *e_want, struct mime_engine *e_got, const float *in,
                          const int *tasks)
{
	float want[4 * 5], got[4 * 5];
	int64_t zwant[4 * 3], zgot[4 * 3];

	forward_copy(e_want, in, tasks, want, zwant);
	forward_copy(e_got, in, tasks, got, zgot);
	assert_memory_equal(got, want, sizeof(got));
	assert_memory_equal(zgot, zwant, sizeof(zgot));
}

static void test_phase_bundle_phase_equals_sliced_network(void **state)
{
	struct fixture *f = malloc(sizeof(*f));
	char *path = mime_test_tmpfile(NULL, 0);
	struct mime_engine_config cfg = {.max_batch = 4, .n_threads = 2};
	struct mime_engine *e = NULL, *es = NULL;
	struct mime_bundle *b = NULL;
	struct mime_model model;
	struct mime_task_params pt[2];
	struct mime_phase ph;
	struct mime_errinfo ei = {0};
	uint8_t *keep_storage = NULL;
	int tasks[4] = {0, 1, 1, 0};
	float full[4 * 5], got[4 * 5], want[4 * 5];
	int64_t zfull[4 * 3], zgot[4 * 3], zwant[4 * 3];
	uint64_t rng = 5;
	float *in = rand_array(&rng, 4 * 256, 0.0f, 1.0f);

	(void)state;
	fixture_init(f);
	b = open_fixture_bundle(f, OMIT_NONE, path);
	assert_int_equal(mime_bundle_manifest(b)->n_phases, 2);
	assert_int_equal(mime_bundle_manifest(b)->phases[0].nonzero_params, 4321);
	assert_int_equal(mime_model_from_bundle(b, 0, &model, &ei), 0);
	assert_int_equal(mime_engine_create(&model, &cfg, &e, &ei), 0);
	forward_copy(e, in, tasks, full, zfull);

	/* Phase 1 from the bundle vs an engine on the sliced, masked network. */
	if (mime_model_phase(b, 1, 0, &ph, &keep_storage, pt, &ei) != 0)
		fail_msg("%s", ei.msg);
	assert_non_null(keep_storage);
	assert_int_equal(ph.wuv, 4);
	assert_int_equal(ph.layer[0].k_active, 5);
	assert_int_equal(ph.layer[2].k_active, 7);
	assert_int_equal(ph.layer[5].k_active, 9);
	assert_null(ph.layer[0].keep);
	assert_memory_equal(ph.layer[2].keep, f->keep, sizeof(f->keep));
	{
		struct mime_tensor_view v;

		assert_int_equal(mime_bundle_tensor(b, "task/a/phase1/head.weight", &v), 0);
		assert_ptr_equal(pt[0].head_w, v.data); /* a view, not a copy */
		assert_int_equal(mime_bundle_tensor(b, "task/b/phase1/l5.threshold", &v), 0);
		assert_ptr_equal(pt[1].thresholds[5], v.data);
	}
	assert_int_equal(pt[1].n_classes, 3);
	assert_int_equal(pt[1].granularity, MIME_THR_CHANNEL);
	if (mime_engine_set_phase(e, &ph, pt, &ei) != 0)
		fail_msg("%s", ei.msg);
	free(keep_storage); /* the engine read the masks while entering */
	forward_copy(e, in, tasks, got, zgot);
	assert_int_equal(mime_engine_create(&f->sub.m, &cfg, &es, &ei), 0);
	forward_copy(es, in, tasks, want, zwant);
	assert_memory_equal(got, want, sizeof(got));
	assert_memory_equal(zgot, zwant, sizeof(zgot));
	assert_memory_not_equal(got, full, sizeof(got));

	/* Phase 2 is the whole parent without tensors of its own: the task's serve. */
	assert_int_equal(mime_model_phase(b, 2, 0, &ph, &keep_storage, pt, &ei), 0);
	assert_null(keep_storage);
	assert_ptr_equal(pt[0].head_w, model.tasks[0].head_w);
	assert_ptr_equal(pt[1].thresholds[2], model.tasks[1].thresholds[2]);
	assert_int_equal(mime_engine_set_phase(e, &ph, pt, &ei), 0);
	forward_copy(e, in, tasks, got, zgot);
	assert_memory_equal(got, full, sizeof(got));
	assert_memory_equal(zgot, zfull, sizeof(zgot));

	/* Phase 0 is the whole parent; out of range is refused. */
	assert_int_equal(mime_model_phase(b, 1, 0, &ph, &keep_storage, pt, &ei), 0);
	assert_int_equal(mime_engine_set_phase(e, &ph, pt, &ei), 0);
	free(keep_storage);
	assert_int_equal(mime_model_phase(b, 0, 0, &ph, &keep_storage, pt, &ei), 0);
	assert_null(keep_storage);
	assert_int_equal(ph.layer[0].k_active, 0);
	assert_int_equal(mime_engine_set_phase(e, &ph, pt, &ei), 0);
	forward_copy(e, in, tasks, got, zgot);
	assert_memory_equal(got, full, sizeof(got));
	assert_int_equal(mime_model_phase(b, 3, 0, &ph, &keep_storage, pt, &ei), MIME_EINVAL);
	assert_non_null(strstr(ei.msg, "phase 3: the bundle has phases 1..2"));
	assert_int_equal(mime_model_phase(b, -1, 0, &ph, &keep_storage, pt, &ei), MIME_EINVAL);

	mime_engine_destroy(e);
	mime_engine_destroy(es);
	mime_model_fini(&model);
	mime_bundle_close(b);
	unlink(path);
	free(path);
	free(in);
	fixture_fini(f);
	free(f);
}

/* F16 task tensors (both granularities, phase 1's and the whole parent's) handed to the
 * engine in place (MIME_MODEL_HALF_VIEWS) give, in every phase and after switching back and
 * forth, bit for bit the forward of the same tensors decoded to floats by the bundle. */
static void test_phase_bundle_half_views_equal_decoded(void **state)
{
	struct fixture *f = malloc(sizeof(*f));
	char *path = mime_test_tmpfile(NULL, 0);
	struct mime_engine_config cfg = {.max_batch = 4, .n_threads = 2};
	struct mime_engine *ed = NULL, *eh = NULL;
	struct mime_bundle *b = NULL;
	struct mime_model md, mh;
	struct mime_errinfo ei = {0};
	const int order[] = {1, 2, 0, 1, 2};
	size_t extra[5];
	int tasks[4] = {0, 1, 1, 0}, only_b[4] = {1, 1, 1, 1};
	uint64_t rng = 6;
	float *in = rand_array(&rng, 4 * 256, 0.0f, 1.0f);

	(void)state;
	fixture_init(f);
	b = open_fixture_bundle(f, TASKS_F16, path);
	assert_int_equal(mime_model_from_bundle(b, 0, &md, &ei), 0);
	assert_int_equal(mime_model_from_bundle(b, MIME_MODEL_HALF_VIEWS, &mh, &ei), 0);
	assert_non_null(mh.tasks[0].thresholds_half[2]); /* per element */
	assert_non_null(mh.tasks[1].thresholds_half[2]); /* per channel */
	assert_int_equal(mime_engine_create(&md, &cfg, &ed, &ei), 0);
	assert_int_equal(mime_engine_create(&mh, &cfg, &eh, &ei), 0);
	for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
		struct mime_task_params pd[2], ph_[2];
		struct mime_phase phd, phh;
		uint8_t *keep_d = NULL, *keep_h = NULL;

		if (mime_model_phase(b, order[k], 0, &phd, &keep_d, pd, &ei) != 0 ||
		    mime_model_phase(b, order[k], MIME_MODEL_HALF_VIEWS, &phh, &keep_h, ph_, &ei) !=
		            0)
			fail_msg("%s", ei.msg);
		assert_null(ph_[0].head_w);
		assert_non_null(ph_[0].head_w_half);
		assert_int_equal(mime_engine_set_phase(ed, &phd, pd, &ei), 0);
		assert_int_equal(mime_engine_set_phase(eh, &phh, ph_, &ei), 0);
		free(keep_d);
		free(keep_h);
		/* the decoded tensors are kept per phase: the whole parent's (entered when the
		 * engine was made; phases 2 and 0 share them) and phase 1's, and no more when a
		 * phase comes back */
		extra[k] = mime_engine_plan_bytes(eh) - mime_engine_plan_bytes(ed);
		assert_true(extra[k] > 0);
		assert_int_equal(extra[k], extra[0]);
		/* a task is decoded on its first forward in the phase: b alone first */
		forward_equal(ed, eh, in, only_b);
		forward_equal(ed, eh, in, tasks);
	}
	/* trimmed: the current phase's only (the whole parent's) */
	mime_engine_trim(ed);
	mime_engine_trim(eh);
	assert_true(mime_engine_plan_bytes(eh) > mime_engine_plan_bytes(ed));
	assert_true(mime_engine_plan_bytes(eh) - mime_engine_plan_bytes(ed) < extra[0]);
	mime_engine_destroy(ed);
	mime_engine_destroy(eh);
	mime_model_fini(&md);
	mime_model_fini(&mh);
	mime_bundle_close(b);
	unlink(path);
	free(path);
	free(in);
	fixture_fini(f);
	free(f);
}

/* Heads stored sparse (bundle.h), the whole parent's, phase 1's and the whole-parent phase
 * 2's own (every third weight 0): every phase serves its own, bit for bit as the same weights
 * stored dense. */
static void test_phase_bundle_sparse_heads_equal_dense(void **state)
{
	struct fixture *f = malloc(sizeof(*f));
	char *dpath = mime_test_tmpfile(NULL, 0), *spath = mime_test_tmpfile(NULL, 0);
	struct mime_engine_config cfg = {.max_batch = 4, .n_threads = 1};
	struct mime_engine *ed = NULL, *es = NULL;
	struct mime_bundle *bd, *bs;
	struct mime_model md, ms;
	struct mime_errinfo ei = {0};
	int tasks[4] = {0, 1, 1, 0};
	uint64_t rng = 8;
	float *in = rand_array(&rng, 4 * 256, 0.0f, 1.0f);

	(void)state;
	fixture_init(f);
	for (struct net *n = &f->n; n; n = n == &f->n ? &f->sub : NULL)
		for (int t = 0; t < 2; t++) {
			const struct mime_shape *feat = &n->shapes[n->m.graph.n_layers - 1];
			float *hw = (float *)n->tasks[t].head_w;

			for (long i = 0; i < n->tasks[t].n_classes * mime_shape_size(feat); i += 3)
				hw[i] = 0.0f;
		}
	bd = open_fixture_bundle(f, PHASE2_OWN_TENSORS, dpath);
	bs = open_fixture_bundle(f, SPARSE_HEADS, spath);
	assert_true(mime_bundle_has_tensor(bs, "task/b/phase1/head.weight"));
	assert_int_equal(mime_model_from_bundle(bd, 0, &md, &ei), 0);
	assert_int_equal(mime_model_from_bundle(bs, MIME_MODEL_HALF_VIEWS, &ms, &ei), 0);
	assert_int_equal(mime_engine_create(&md, &cfg, &ed, &ei), 0);
	assert_int_equal(mime_engine_create(&ms, &cfg, &es, &ei), 0);
	for (int p = 0; p <= 2; p++) {
		struct mime_task_params pd[2], ps[2];
		struct mime_phase phd, phs;
		uint8_t *kd = NULL, *ks = NULL;

		if (mime_model_phase(bd, p, 0, &phd, &kd, pd, &ei) != 0 ||
		    mime_model_phase(bs, p, MIME_MODEL_HALF_VIEWS, &phs, &ks, ps, &ei) != 0)
			fail_msg("phase %d: %s", p, ei.msg);
		assert_int_equal(mime_engine_set_phase(ed, &phd, pd, &ei), 0);
		assert_int_equal(mime_engine_set_phase(es, &phs, ps, &ei), 0);
		free(kd);
		free(ks);
		if (p ==
		    2) { /* its own head, not the whole parent's (equal values, other memory) */
			const float *own, *whole;

			assert_int_equal(
				mime_bundle_tensor_f32(bs, "task/a/phase2/head.weight", &own), 0);
			assert_int_equal(mime_bundle_tensor_f32(bs, "task/a/head.weight", &whole),
			                 0);
			assert_ptr_equal(ps[0].head_w, own);
			assert_ptr_not_equal(own, whole);
		}
		forward_equal(ed, es, in, tasks);
	}
	mime_engine_destroy(ed);
	mime_engine_destroy(es);
	mime_model_fini(&md);
	mime_model_fini(&ms);
	mime_bundle_close(bd);
	mime_bundle_close(bs);
	unlink(dpath);
	unlink(spath);
	free(dpath);
	free(spath);
	free(in);
	fixture_fini(f);
	free(f);
}

/* A phase listing its own tensors for the whole parent uses them, not the task's. */
static void test_phase_bundle_whole_phase_prefers_its_own_tensors(void **state)
{
	struct fixture *f = malloc(sizeof(*f));
	char *path = mime_test_tmpfile(NULL, 0);
	struct mime_bundle *b = NULL;
	struct mime_task_params pt[2];
	struct mime_tensor_view v;
	struct mime_phase ph;
	struct mime_errinfo ei = {0};
	uint8_t *keep_storage = NULL;

	(void)state;
	fixture_init(f);
	b = open_fixture_bundle(f, PHASE2_OWN_TENSORS, path);
	assert_int_equal(mime_model_phase(b, 2, 0, &ph, &keep_storage, pt, &ei), 0);
	assert_int_equal(mime_bundle_tensor(b, "task/a/phase2/head.weight", &v), 0);
	assert_ptr_equal(pt[0].head_w, v.data);
	mime_bundle_close(b);
	unlink(path);
	free(path);
	fixture_fini(f);
	free(f);
}

static void expect_write_fails(const struct fixture *f, int omit, const char *substr)
{
	char *path = mime_test_tmpfile(NULL, 0);
	struct mime_errinfo ei;

	assert_int_equal(write_bundle(f, omit, path, &ei), MIME_EFORMAT);
	if (!strstr(ei.msg, substr))
		fail_msg("case %d: message '%s' lacks '%s'", omit, ei.msg, substr);
	unlink(path);
	free(path);
}

static void test_phase_bundle_rejects_missing_or_broken_phase_tensors(void **state)
{
	struct fixture *f = malloc(sizeof(*f));
	char *path = mime_test_tmpfile(NULL, 0);
	struct mime_bundle *b = NULL;
	struct mime_task_params pt[2];
	struct mime_phase ph;
	struct mime_errinfo ei = {0};
	uint8_t *keep_storage = (uint8_t *)"untouched";

	(void)state;
	fixture_init(f);
	expect_write_fails(f, OMIT_B_HEAD_BIAS,
	                   "tensor 'task/b/phase1/head.bias' missing (the manifest's phase 1 "
	                   "head bias");
	expect_write_fails(f, OMIT_B_HEAD_WEIGHT,
	                   "tensor 'task/b/phase1/head.weight' missing (phase 1 of task 'b' has "
	                   "'task/b/phase1/head.bias'");
	expect_write_fails(f, OMIT_MASK, "tensor 'phase/1/l2.mask' missing (phase 1 lists 'l2'");
	expect_write_fails(f, CORRUPT_MASK, "tensor 'phase/1/l2.mask': mask: value");
	expect_write_fails(f, MASK_F32, "tensor 'phase/1/l2.mask': dtype F32, expected U16 or U32");
	expect_write_fails(f, PHASE2_NOT_NESTED,
	                   "tensor 'phase/2/l2.mask': prunes kernel 4, column");
	expect_write_fails(f, BAD_THRESHOLD_SHAPE,
	                   "tensor 'task/a/phase1/l2.threshold': shape [6,8,8], expected [7,8,8]");

	if (write_bundle(f, PHASE2_NESTED, path, &ei) != 0)
		fail_msg("%s", ei.msg);

	/* A task with none of a phase's tensors: the bundle is fine, the phase cannot be
	 * entered (the whole-parent phase still can). */
	b = open_fixture_bundle(f, OMIT_B_PHASE1, path);
	assert_int_equal(mime_model_phase(b, 1, 0, &ph, &keep_storage, pt, &ei), MIME_EFORMAT);
	assert_non_null(strstr(ei.msg, "phase 1 ('p1'): task 'b' has no head or thresholds"));
	assert_non_null(strstr(ei.msg, "'task/b/phase1/head.weight' missing"));
	assert_string_equal((const char *)keep_storage, "untouched");
	assert_int_equal(mime_model_phase(b, 2, 0, &ph, &keep_storage, pt, &ei), 0);
	mime_bundle_close(b);
	unlink(path);
	free(path);
	fixture_fini(f);
	free(f);
}

/* Every bit of both masks and random header bits flipped: open either refuses the file or
 * yields phases that mime_model_phase() enters or refuses cleanly (run under ASan in CI). */
/* The bundle written with omit, every bit of the named tensors flipped in turn and then
 * random bits of the header: each copy is refused, or opens and every phase's model is made
 * or refused (never a read out of bounds: the sanitizer build runs this). */
static void bit_flip_trials(int omit, const char *const *names, int n_names, int names_refused)
{
	struct fixture *f = malloc(sizeof(*f));
	char *path = mime_test_tmpfile(NULL, 0);
	struct mime_errinfo ei = {0};
	struct mime_bundle *b = NULL;
	struct mime_tensor_view v;
	size_t size, at_[8], bytes[8], header_end, exhaustive = 0;
	uint8_t *buf, *copy;
	uint64_t rng = 77;
	int refused = 0, named_refused = 0;
	FILE *fp;

	assert_true(n_names <= 8);
	fixture_init(f);
	if (write_bundle(f, omit, path, &ei) != 0)
		fail_msg("%s", ei.msg);
	fp = fopen(path, "rb");
	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	size = (size_t)ftell(fp);
	rewind(fp);
	buf = malloc(size);
	copy = malloc(size);
	assert_int_equal(fread(buf, 1, size, fp), size);
	fclose(fp);
	assert_int_equal(mime_bundle_open_memory(buf, size, &b, &ei), 0);
	for (int k = 0; k < n_names; k++) {
		if (mime_bundle_tensor(b, names[k], &v) != 0)
			fail_msg("no tensor %s", names[k]);
		at_[k] = (size_t)((const uint8_t *)v.data - buf);
		bytes[k] = v.n_bytes;
		exhaustive += 8 * v.n_bytes;
	}
	mime_bundle_close(b);
	header_end = 0;
	for (int k = 7; k >= 0; k--)
		header_end = header_end << 8 | buf[k];
	header_end += 8;

	for (size_t trial = 0; trial < 3000 + exhaustive; trial++) {
		size_t at = 0, t = trial;
		int bit = 0, k;

		for (k = 0; k < n_names && t >= 8 * bytes[k]; k++)
			t -= 8 * bytes[k];
		if (k < n_names) {
			at = at_[k] + t / 8;
			bit = (int)(t % 8);
		} else {
			at = 8 + (size_t)(mime_test_rand(&rng) % (header_end - 8));
			bit = (int)(mime_test_rand(&rng) % 8);
		}
		memcpy(copy, buf, size);
		copy[at] ^= (uint8_t)(1u << bit);
		b = NULL;
		if (mime_bundle_open_memory(copy, size, &b, &ei) != 0) {
			assert_null(b);
			refused++;
			named_refused += k < n_names;
			continue;
		}
		for (int p = 0; p <= mime_bundle_manifest(b)->n_phases; p++) {
			struct mime_task_params pt[MIME_MAX_TASKS];
			struct mime_phase ph;
			uint8_t *keep = NULL;
			int r = mime_model_phase(b, p, 0, &ph, &keep, pt, &ei);

			assert_true(r == 0 || r == MIME_EFORMAT);
			free(r == 0 ? keep : NULL);
		}
		mime_bundle_close(b);
	}
	assert_true(refused > 0);
	if (names_refused) /* every flip of the named tensors */
		assert_int_equal(named_refused, (int)exhaustive);
	free(copy);
	free(buf);
	unlink(path);
	free(path);
	fixture_fini(f);
	free(f);
}

static void test_phase_bundle_survives_mask_and_header_bit_flips(void **state)
{
	static const char *const masks[] = {"phase/1/l2.mask", "phase/2/l2.mask"};

	(void)state;
	bit_flip_trials(PHASE2_NESTED, masks, 2, 0);
}

/* The same for sparse heads: every bit of their masks is refused (a flipped bit changes the
 * count the values must have, or sets a bit past the end), then header bits. */
static void test_phase_bundle_survives_sparse_head_bit_flips(void **state)
{
	static const char *const masks[] = {"task/a/head.weight.mask", "task/b/head.weight.mask",
	                                    "task/a/phase1/head.weight.mask",
	                                    "task/b/phase1/head.weight.mask"};

	(void)state;
	bit_flip_trials(SPARSE_HEADS, masks, 4, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_phase_mask_round_trips_random_empty_and_full),
		cmocka_unit_test(test_phase_mask_encode_picks_u16_or_u32),
		cmocka_unit_test(test_phase_mask_decode_rejects_corrupted_deltas),
		cmocka_unit_test(test_phase_manifest_round_trips),
		cmocka_unit_test(test_phase_manifest_rejects_each_error),
		cmocka_unit_test(test_phase_bundle_phase_equals_sliced_network),
		cmocka_unit_test(test_phase_bundle_whole_phase_prefers_its_own_tensors),
		cmocka_unit_test(test_phase_bundle_sparse_heads_equal_dense),
		cmocka_unit_test(test_phase_bundle_half_views_equal_decoded),
		cmocka_unit_test(test_phase_bundle_rejects_missing_or_broken_phase_tensors),
		cmocka_unit_test(test_phase_bundle_survives_mask_and_header_bit_flips),
		cmocka_unit_test(test_phase_bundle_survives_sparse_head_bit_flips),
	};

	return cmocka_run_group_tests_name("phase", tests, NULL, NULL);
}
