// SPDX-License-Identifier: MIT
/* test_manifest -- parsing, validation and formatting of the bundle manifest. */
#include "tests/unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/manifest.h"

/* Two tasks on a 1x28x28 graph; {H2} is replaced by the second task's height. */
static const char good[] =
	"{\"format\":\"mime-bundle\",\"version\":1,"
	"\"graph\":{\"input\":[1,28,28],\"layers\":["
	"{\"name\":\"conv1\",\"kind\":\"conv\",\"out\":8,\"kernel\":3,\"stride\":1,\"pad\":1,"
	"\"act\":\"relu\"},"
	"{\"name\":\"pool1\",\"kind\":\"maxpool\",\"kernel\":2,\"stride\":2},"
	"{\"name\":\"flatten\",\"kind\":\"flatten\"},"
	"{\"name\":\"fc1\",\"kind\":\"fc\",\"out\":16,\"act\":\"relu\"}]},"
	"\"tasks\":[{\"name\":\"fmnist\",\"classes\":[\"T-shirt/top\",\"Trouser\",\"Pullover\"],"
	"\"input\":{\"channels\":1,\"height\":28,\"width\":28,\"resize\":\"bilinear\","
	"\"fit\":\"pad\",\"invert\":true,\"mean\":[0.286],\"std\":[0.353]},"
	"\"thresholds\":\"element\",\"accuracy\":0.93,\"sparsity\":{\"conv1\":0.6}},"
	"{\"name\":\"mnist\",\"classes\":[\"0\",\"1\"],"
	"\"input\":{\"channels\":1,\"height\":28,\"width\":28}}],"
	"\"provenance\":{\"command\":\"mime-train parent\",\"seed\":1}}";

/* Parses good with the first occurrence of from replaced by to. */
static int parse_edit(const char *from, const char *to, struct mime_manifest *m,
                      struct mime_errinfo *ei)
{
	const char *at = strstr(good, from);
	char buf[4096];
	int r;

	assert_non_null(at);
	snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(at - good), good, to, at + strlen(from));
	memset(ei, 0, sizeof(*ei));
	r = mime_manifest_parse(buf, strlen(buf), m, ei);
	if (r == 0)
		mime_manifest_free(m);
	return r;
}

#define assert_edit_fails(from, to, code, substr)                                                  \
	do {                                                                                       \
		struct mime_manifest m_;                                                           \
		struct mime_errinfo ei_;                                                           \
		assert_int_equal(parse_edit(from, to, &m_, &ei_), code);                           \
		if (!strstr(ei_.msg, substr))                                                      \
			fail_msg("message '%s' lacks '%s'", ei_.msg, substr);                      \
	} while (0)

static void test_manifest_parse_reads_every_field(void **state)
{
	struct mime_manifest m;
	struct mime_errinfo ei = {0};

	assert_int_equal(mime_manifest_parse(good, strlen(good), &m, &ei), 0);
	assert_int_equal(m.graph.input.c, 1);
	assert_int_equal(m.graph.n_layers, 4);
	assert_int_equal(m.graph.layers[0].kind, MIME_LAYER_CONV);
	assert_int_equal(m.graph.layers[0].out, 8);
	assert_int_equal(m.graph.layers[0].pad, 1);
	assert_int_equal(m.graph.layers[0].act, MIME_ACT_RELU);
	assert_int_equal(m.graph.layers[1].stride, 2);
	assert_int_equal(m.graph.layers[3].kind, MIME_LAYER_FC);
	assert_int_equal(m.n_tasks, 2);
	assert_string_equal(m.tasks[0].name, "fmnist");
	assert_int_equal(m.tasks[0].n_classes, 3);
	assert_string_equal(m.tasks[0].class_names[2], "Pullover");
	assert_int_equal(m.tasks[0].input.fit, MIME_FIT_PAD);
	assert_int_equal(m.tasks[0].input.invert, 1);
	assert_float_equal(m.tasks[0].input.mean[0], 0.286f, 1e-7);
	assert_float_equal(m.tasks[0].input.std[0], 0.353f, 1e-7);
	assert_int_equal(m.tasks[0].thresholds, MIME_THR_ELEMENT);
	assert_float_equal(m.tasks[0].accuracy, 0.93, 1e-12);
	/* defaults */
	assert_int_equal(m.tasks[1].thresholds, MIME_THR_NONE);
	assert_int_equal(m.tasks[1].input.fit, MIME_FIT_STRETCH);
	assert_float_equal(m.tasks[1].input.std[0], 1.0f, 0);
	assert_true(m.tasks[1].accuracy < 0);
	assert_non_null(strstr(m.provenance_json, "\"seed\":1"));
	assert_string_equal(m.json, good);
	assert_int_equal(mime_manifest_task(&m, "mnist"), 1);
	assert_int_equal(mime_manifest_task(&m, "cifar"), MIME_ENOTASK);
	mime_manifest_free(&m);
	mime_manifest_free(&m); /* zeroed: a second free is harmless */
	mime_manifest_free(NULL);
}

static void test_manifest_format_round_trips(void **state)
{
	struct mime_manifest m, m2;
	struct mime_errinfo ei = {0};
	char *s, *s2;

	assert_int_equal(mime_manifest_parse(good, strlen(good), &m, &ei), 0);
	s = mime_manifest_format(&m);
	assert_non_null(s);
	assert_int_equal(mime_manifest_parse(s, strlen(s), &m2, &ei), 0);
	assert_memory_equal(&m.graph, &m2.graph, sizeof(m.graph));
	assert_int_equal(m2.n_tasks, 2);
	for (int t = 0; t < 2; t++) {
		assert_string_equal(m.tasks[t].name, m2.tasks[t].name);
		assert_int_equal(m.tasks[t].n_classes, m2.tasks[t].n_classes);
		for (int k = 0; k < m.tasks[t].n_classes; k++)
			assert_string_equal(m.tasks[t].class_names[k], m2.tasks[t].class_names[k]);
		assert_memory_equal(&m.tasks[t].input, &m2.tasks[t].input,
		                    sizeof(m.tasks[t].input));
		assert_int_equal(m.tasks[t].thresholds, m2.tasks[t].thresholds);
		assert_float_equal(m.tasks[t].accuracy, m2.tasks[t].accuracy, 1e-8);
	}
	assert_string_equal(m.provenance_json, m2.provenance_json);
	s2 = mime_manifest_format(&m2);
	assert_string_equal(s, s2); /* formatting is a fixed point */
	free(s);
	free(s2);
	mime_manifest_free(&m);
	mime_manifest_free(&m2);
}

static void test_manifest_format_refuses_bad_provenance(void **state)
{
	struct mime_manifest m;
	struct mime_errinfo ei = {0};

	assert_int_equal(mime_manifest_parse(good, strlen(good), &m, &ei), 0);
	free(m.provenance_json);
	m.provenance_json = strdup("[not an object");
	assert_null(mime_manifest_format(&m));
	mime_manifest_free(&m);
}

static void test_manifest_parse_names_the_input_spec_field(void **state)
{
	struct mime_manifest m;
	struct mime_errinfo ei;

	/* the second task's height: the message names task, field and both values */
	assert_int_equal(
		parse_edit("\"height\":28,\"width\":28}}", "\"height\":32,\"width\":28}}", &m, &ei),
		MIME_EFORMAT);
	assert_string_equal(ei.msg, "manifest: tasks[1].input.height 32 != graph input 28");
	assert_edit_fails("\"channels\":1,\"height\":28,\"width\":28,\"resize\"",
	                  "\"channels\":3,\"height\":28,\"width\":28,\"resize\"", MIME_EFORMAT,
	                  "tasks[0].input.channels 3 != graph input 1");
	assert_edit_fails("\"width\":28,\"resize\"", "\"width\":27,\"resize\"", MIME_EFORMAT,
	                  "tasks[0].input.width 27 != graph input 28");
}

static void test_manifest_parse_rejects_bad_tasks(void **state)
{
	assert_edit_fails("\"name\":\"mnist\"", "\"name\":\"fmnist\"", MIME_EFORMAT,
	                  "tasks[1].name 'fmnist' used twice");
	assert_edit_fails("\"classes\":[\"0\",\"1\"]", "\"classes\":[]", MIME_EFORMAT,
	                  "tasks[1].classes has 0 names");
	assert_edit_fails("\"classes\":[\"0\",\"1\"]", "\"classes\":[\"0\",1]", MIME_EFORMAT,
	                  "tasks[1].classes[1] is not a string");
	assert_edit_fails("\"classes\":[\"0\",\"1\"]", "\"classes\":[\"0\",\"1\"],\"n_classes\":3",
	                  MIME_EFORMAT, "tasks[1].n_classes does not match 2");
	assert_edit_fails("\"mean\":[0.286]", "\"mean\":[0.286,0.1]", MIME_EFORMAT,
	                  "tasks[0].input.mean is not a list of 1 numbers");
	assert_edit_fails("\"std\":[0.353]", "\"std\":[0]", MIME_EFORMAT,
	                  "tasks[0].input.std[0] is 0");
	assert_edit_fails("\"fit\":\"pad\"", "\"fit\":\"crop\"", MIME_EFORMAT,
	                  "tasks[0].input.fit");
	assert_edit_fails("\"thresholds\":\"element\"", "\"thresholds\":\"neuron\"", MIME_EFORMAT,
	                  "tasks[0].thresholds");
	assert_edit_fails("\"accuracy\":0.93", "\"accuracy\":93", MIME_EFORMAT,
	                  "tasks[0].accuracy");
	assert_edit_fails("\"name\":\"mnist\"", "\"name\":\"mn ist\"", MIME_EFORMAT,
	                  "tasks[1].name 'mn ist'");
	assert_edit_fails("\"resize\":\"bilinear\",", "\"resize\":\"bilinear\",\"gamma\":2,",
	                  MIME_EFORMAT, "tasks[0].input: unknown key 'gamma'");
}

static void test_manifest_parse_rejects_too_many_classes(void **state)
{
	char classes[MIME_MAX_CLASSES * 8 + 64], *p = classes;

	p += sprintf(p, "\"classes\":[");
	for (int i = 0; i <= MIME_MAX_CLASSES; i++)
		p += sprintf(p, "%s\"%d\"", i ? "," : "", i);
	sprintf(p, "]");
	{
		const char *at = strstr(good, "\"classes\":[\"0\",\"1\"]");
		static char buf[sizeof(classes) + sizeof(good)];
		struct mime_manifest m;
		struct mime_errinfo ei = {0};

		assert_non_null(at);
		snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(at - good), good, classes,
		         at + strlen("\"classes\":[\"0\",\"1\"]"));
		assert_int_equal(mime_manifest_parse(buf, strlen(buf), &m, &ei), MIME_EFORMAT);
		assert_non_null(strstr(ei.msg, "tasks[1].classes has 1001 names (1..1000"));
	}
}

static void test_manifest_parse_rejects_bad_graph(void **state)
{
	assert_edit_fails("\"kind\":\"maxpool\"", "\"kind\":\"avgpool\"", MIME_EFORMAT,
	                  "graph.layers[1].kind 'avgpool' unknown");
	assert_edit_fails("\"out\":8,\"kernel\":3", "\"out\":8,\"kernal\":3", MIME_EFORMAT,
	                  "graph.layers[0]: unknown key 'kernal'");
	assert_edit_fails("\"out\":8,", "\"out\":-8,", MIME_EFORMAT, "graph.layers[0].out -8");
	assert_edit_fails("\"out\":8,", "\"out\":\"8\",", MIME_EFORMAT,
	                  "graph.layers[0].out is not an integer");
	assert_edit_fails("\"out\":8,", "", MIME_EFORMAT, "graph.layers[0].out missing");
	assert_edit_fails("\"act\":\"relu\"}]", "\"act\":\"gelu\"}]", MIME_EFORMAT,
	                  "graph.layers[3].act 'gelu' unknown");
	assert_edit_fails("\"input\":[1,28,28]", "\"input\":[1,28]", MIME_EFORMAT,
	                  "graph.input is not [C,H,W]");
	assert_edit_fails("{\"name\":\"flatten\",\"kind\":\"flatten\"},", "", MIME_EGRAPH,
	                  "manifest: graph: layer 'fc1': fc needs a flat input");
	assert_edit_fails("\"name\":\"pool1\"", "\"name\":\"conv1\"", MIME_EGRAPH,
	                  "layer name 'conv1' used twice");
	assert_edit_fails("\"kernel\":3,\"stride\":1,\"pad\":1",
	                  "\"kernel\":31,\"stride\":1,\"pad\":1", MIME_EGRAPH,
	                  "kernel 31 larger than padded input");
}

static void test_manifest_parse_rejects_bad_top_level(void **state)
{
	struct mime_manifest m;
	struct mime_errinfo ei = {0};

	assert_edit_fails("\"format\":\"mime-bundle\"", "\"format\":\"onnx\"", MIME_EFORMAT,
	                  "format is not \"mime-bundle\"");
	assert_edit_fails("\"version\":1", "\"version\":2", MIME_EFORMAT, "version 2 unsupported");
	assert_edit_fails("\"provenance\":{", "\"provenance\":[{", MIME_EFORMAT, "invalid JSON");
	assert_edit_fails("\"provenance\":{\"command\":\"mime-train parent\",\"seed\":1}",
	                  "\"provenance\":\"yesterday\"", MIME_EFORMAT,
	                  "provenance is not an object");
	assert_int_equal(mime_manifest_parse("[]", 2, &m, &ei), MIME_EFORMAT);
	assert_non_null(strstr(ei.msg, "not a JSON object"));
	/* the length is honoured: a prefix of a valid manifest is not one */
	assert_int_equal(mime_manifest_parse(good, strlen(good) - 1, &m, &ei), MIME_EFORMAT);
	assert_non_null(strstr(ei.msg, "invalid JSON"));
}

static void test_manifest_input_spec_default(void **state)
{
	struct mime_graph g = {.input = {3, 32, 30}};
	struct mime_input_spec s;

	mime_input_spec_default(&g, &s);
	assert_int_equal(s.channels, 3);
	assert_int_equal(s.height, 32);
	assert_int_equal(s.width, 30);
	assert_int_equal(s.fit, MIME_FIT_STRETCH);
	assert_int_equal(s.invert, 0);
	for (int c = 0; c < 3; c++) {
		assert_float_equal(s.mean[c], 0.0f, 0);
		assert_float_equal(s.std[c], 1.0f, 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_manifest_parse_reads_every_field),
		cmocka_unit_test(test_manifest_format_round_trips),
		cmocka_unit_test(test_manifest_format_refuses_bad_provenance),
		cmocka_unit_test(test_manifest_parse_names_the_input_spec_field),
		cmocka_unit_test(test_manifest_parse_rejects_bad_tasks),
		cmocka_unit_test(test_manifest_parse_rejects_too_many_classes),
		cmocka_unit_test(test_manifest_parse_rejects_bad_graph),
		cmocka_unit_test(test_manifest_parse_rejects_bad_top_level),
		cmocka_unit_test(test_manifest_input_spec_default),
	};

	return cmocka_run_group_tests_name("manifest", tests, NULL, NULL);
}
