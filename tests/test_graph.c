// SPDX-License-Identifier: MIT
/* Graph tests: shape inference and MAC counts of the demo networks, and every rejection
 * mime_graph_check promises, with the offending layer named. */
#include "tests/unit.h"

#include <stdio.h>
#include <string.h>

#include "lib/graph.h"

static void add(struct mime_graph *g, enum mime_layer_kind kind, int out, int k, int s, int pad,
                enum mime_act act)
{
	struct mime_layer_spec *l = &g->layers[g->n_layers];

	*l = (struct mime_layer_spec){
		.kind = kind, .out = out, .kernel = k, .stride = s, .pad = pad, .act = act};
	snprintf(l->name, sizeof(l->name), "%s%d", mime_layer_kind_name(kind), g->n_layers);
	g->n_layers++;
}

/* VGG-7 of the Multi-phase CNN paper: Conv-Pool-Conv-Pool-Conv-Conv-Pool, then the head. */
static void vgg7(struct mime_graph *g, int c, int hw, int w0)
{
	memset(g, 0, sizeof(*g));
	g->input = (struct mime_shape){c, hw, hw};
	add(g, MIME_LAYER_CONV, w0, 3, 1, 1, MIME_ACT_RELU);
	add(g, MIME_LAYER_MAXPOOL, 0, 2, 2, 0, MIME_ACT_NONE);
	add(g, MIME_LAYER_CONV, 2 * w0, 3, 1, 1, MIME_ACT_RELU);
	add(g, MIME_LAYER_MAXPOOL, 0, 2, 2, 0, MIME_ACT_NONE);
	add(g, MIME_LAYER_CONV, 4 * w0, 3, 1, 1, MIME_ACT_RELU);
	add(g, MIME_LAYER_CONV, 4 * w0, 3, 1, 1, MIME_ACT_RELU);
	add(g, MIME_LAYER_MAXPOOL, 0, 2, 2, 0, MIME_ACT_NONE);
	add(g, MIME_LAYER_FLATTEN, 0, 0, 0, 0, MIME_ACT_NONE);
}

static long graph_macs(const struct mime_graph *g)
{
	struct mime_shape shapes[MIME_MAX_LAYERS], in = g->input;
	long macs = 0;

	assert_int_equal(mime_graph_check(g, shapes, NULL), 0);
	for (int i = 0; i < g->n_layers; i++) {
		macs += mime_graph_layer_macs(&g->layers[i], &in, &shapes[i]);
		in = shapes[i];
	}
	return macs;
}

static void test_graph_check_vgg7_shapes_and_macs(void **state)
{
	struct mime_graph g;
	struct mime_shape out;

	(void)state;
	vgg7(&g, 1, 28, 64);
	out = mime_graph_output(&g);
	assert_int_equal(out.c, 256 * 3 * 3);
	assert_int_equal(out.h, 1);
	/* 784*64*9 + 196*128*576 + 49*256*1152 + 49*256*2304, by hand. */
	assert_int_equal(graph_macs(&g), 451584L + 14450688L + 14450688L + 28901376L);
	vgg7(&g, 3, 32, 32);
	out = mime_graph_output(&g);
	assert_int_equal(out.c, 128 * 4 * 4);
	assert_int_equal(mime_graph_layer_masked(&g, 0), 1);
	assert_int_equal(mime_graph_layer_masked(&g, 1), 0);
}

static void test_graph_check_vgg16_cifar(void **state)
{
	static const int cfg[] = {64, 64,  0,   128, 128, 0,   256, 256, 256,
	                          0,  512, 512, 512, 0,   512, 512, 512, 0};
	struct mime_graph g = {0};
	struct mime_shape out;
	struct mime_shape in = {3, 32, 32};
	long params = 0;
	struct mime_shape shapes[MIME_MAX_LAYERS];

	(void)state;
	g.input = in;
	for (unsigned i = 0; i < sizeof(cfg) / sizeof(cfg[0]); i++)
		if (cfg[i])
			add(&g, MIME_LAYER_CONV, cfg[i], 3, 1, 1, MIME_ACT_RELU);
		else
			add(&g, MIME_LAYER_MAXPOOL, 0, 2, 2, 0, MIME_ACT_NONE);
	add(&g, MIME_LAYER_FLATTEN, 0, 0, 0, 0, MIME_ACT_NONE);
	add(&g, MIME_LAYER_FC, 512, 0, 0, 0, MIME_ACT_RELU);
	add(&g, MIME_LAYER_FC, 512, 0, 0, 0, MIME_ACT_RELU);
	assert_int_equal(mime_graph_check(&g, shapes, NULL), 0);
	out = mime_graph_output(&g);
	assert_int_equal(out.c, 512);
	for (int i = 0; i < g.n_layers; i++) {
		params += mime_graph_layer_params(&g.layers[i], &in);
		in = shapes[i];
	}
	/* 14,714,688 conv parameters (the torchvision VGG-16 features) + 2 x fc 512. */
	assert_int_equal(params, 14714688L + (512L * 512 + 512) * 2);
}

static void expect_reject(struct mime_graph *g, const char *needle)
{
	struct mime_errinfo ei = {0};

	assert_int_equal(mime_graph_check(g, NULL, &ei), MIME_EGRAPH);
	if (!strstr(ei.msg, needle))
		fail_msg("message '%s' lacks '%s'", ei.msg, needle);
}

static void test_graph_check_rejects_bad_graphs(void **state)
{
	struct mime_graph g;

	(void)state;
	vgg7(&g, 1, 28, 8);
	g.input.h = 0;
	expect_reject(&g, "input shape");
	vgg7(&g, 1, 28, 8);
	g.layers[2].kernel = 0;
	expect_reject(&g, "conv2");
	vgg7(&g, 1, 4, 8); /* 4 -> 2 -> 1: the third pool has nothing to pool */
	expect_reject(&g, "pool");
	vgg7(&g, 1, 28, 8);
	strcpy(g.layers[2].name, g.layers[0].name);
	expect_reject(&g, "used twice");
	vgg7(&g, 1, 28, 8);
	g.n_layers--; /* drop flatten, then an fc on a 3-D tensor */
	add(&g, MIME_LAYER_FC, 10, 0, 0, 0, MIME_ACT_NONE);
	expect_reject(&g, "flat input");
	vgg7(&g, 1, 28, 8);
	g.layers[1].act = MIME_ACT_RELU;
	expect_reject(&g, "only conv and fc");
	vgg7(&g, 1, 28, 8);
	g.layers[0].name[0] = '\0';
	expect_reject(&g, "no name");
	vgg7(&g, 1, 28, 8);
	g.layers[0].kind = (enum mime_layer_kind)42;
	expect_reject(&g, "unknown kind");
	vgg7(&g, 1, 28, 8);
	g.n_layers = 0;
	expect_reject(&g, "layers");
	vgg7(&g, 1, 28, 8);
	g.layers[0].kernel = 31;
	expect_reject(&g, "larger than padded input");
}

static void test_graph_kind_names_round_trip(void **state)
{
	(void)state;
	for (int k = MIME_LAYER_CONV; k <= MIME_LAYER_FC; k++) {
		enum mime_layer_kind back;

		assert_int_equal(mime_layer_kind_parse(mime_layer_kind_name(k), &back), 0);
		assert_int_equal(back, k);
	}
	{
		enum mime_layer_kind back;

		assert_int_equal(mime_layer_kind_parse("conv3d", &back), MIME_EGRAPH);
	}
}

static void test_error_strerror_covers_table_and_errno(void **state)
{
	struct mime_errinfo ei = {0};

	(void)state;
	assert_string_equal(mime_strerror(MIME_EFORMAT), "malformed bundle");
	assert_string_equal(mime_strerror(0), "success");
	assert_string_equal(mime_strerror(-2), "No such file or directory");
	assert_string_equal(mime_strerror(-99999), "unknown error");
	assert_int_equal(mime_errinfo_set(&ei, MIME_ESHAPE, "layer %s", "x"), MIME_ESHAPE);
	assert_string_equal(ei.msg, "layer x");
	assert_int_equal(ei.code, MIME_ESHAPE);
	assert_int_equal(mime_errinfo_set(NULL, MIME_ESHAPE, "ignored"), MIME_ESHAPE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_graph_check_vgg7_shapes_and_macs),
		cmocka_unit_test(test_graph_check_vgg16_cifar),
		cmocka_unit_test(test_graph_check_rejects_bad_graphs),
		cmocka_unit_test(test_graph_kind_names_round_trip),
		cmocka_unit_test(test_error_strerror_covers_table_and_errno),
	};

	return cmocka_run_group_tests_name("graph", tests, NULL, NULL);
}
