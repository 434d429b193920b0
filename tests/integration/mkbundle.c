// SPDX-License-Identifier: MIT
/* mkbundle -- writes a small random-weight bundle for the integration tests, so they do not
 * depend on a trained model: input 1x16x16, two conv+pool stages, one fc, and three tasks
 * with element, channel and no thresholds, plus each task's conventional baseline
 * (conventional/<task>/<layer>.weight|bias, conventional/<task>/head.weight|bias).
 *   mkbundle OUT.mime [SEED]
 * Ownership: everything is freed before exit. Threads: single-threaded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/bundle.h"
#include "lib/manifest.h"

static const char manifest_json[] =
	"{\"format\":\"mime-bundle\",\"version\":1,"
	"\"graph\":{\"input\":[1,16,16],\"layers\":["
	"{\"name\":\"conv1\",\"kind\":\"conv\",\"out\":8,\"kernel\":3,\"stride\":1,\"pad\":1,"
	"\"act\":\"relu\"},"
	"{\"name\":\"pool1\",\"kind\":\"maxpool\",\"kernel\":2,\"stride\":2},"
	"{\"name\":\"conv2\",\"kind\":\"conv\",\"out\":8,\"kernel\":3,\"stride\":1,\"pad\":1,"
	"\"act\":\"relu\"},"
	"{\"name\":\"pool2\",\"kind\":\"maxpool\",\"kernel\":2,\"stride\":2},"
	"{\"name\":\"flatten\",\"kind\":\"flatten\"},"
	"{\"name\":\"fc1\",\"kind\":\"fc\",\"out\":16,\"act\":\"relu\"}]},"
	"\"tasks\":["
	"{\"name\":\"alpha\",\"classes\":[\"a0\",\"a1\",\"a2\",\"a3\"],"
	"\"input\":{\"channels\":1,\"height\":16,\"width\":16,\"resize\":\"bilinear\","
	"\"fit\":\"stretch\",\"invert\":false,\"mean\":[0.5],\"std\":[0.25]},"
	"\"thresholds\":\"element\",\"accuracy\":0.5},"
	"{\"name\":\"beta\",\"classes\":[\"b0\",\"b1\",\"b2\"],"
	"\"input\":{\"channels\":1,\"height\":16,\"width\":16,\"resize\":\"bilinear\","
	"\"fit\":\"pad\",\"invert\":true,\"mean\":[0.5],\"std\":[0.25]},"
	"\"thresholds\":\"channel\"},"
	"{\"name\":\"gamma\",\"classes\":[\"g0\",\"g1\",\"g2\",\"g3\",\"g4\"],"
	"\"input\":{\"channels\":1,\"height\":16,\"width\":16,\"resize\":\"bilinear\","
	"\"fit\":\"stretch\",\"invert\":false,\"mean\":[0.5],\"std\":[0.25]},"
	"\"thresholds\":\"none\"}],"
	"\"provenance\":{\"command\":\"tests/integration/mkbundle\",\"seed\":%u}}";

static uint64_t rng;

static float uniform(float lo, float hi)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return lo + (hi - lo) * (float)((rng * 0x2545F4914F6CDD1Dull) >> 40) / (float)(1 << 24);
}

static int add_random(struct mime_bundle_writer *w, const char *name, int ndim,
                      const int64_t *shape, float lo, float hi)
{
	int64_t n = 1;
	float *data;
	int r;

	for (int i = 0; i < ndim; i++)
		n *= shape[i];
	data = malloc((size_t)n * sizeof(float));
	if (!data)
		return -1;
	for (int64_t i = 0; i < n; i++)
		data[i] = uniform(lo, hi);
	r = mime_bundle_writer_add(w, name, MIME_DTYPE_F32, ndim, shape, data);
	free(data);
	return r;
}

int main(int argc, char **argv)
{
	struct mime_shape shapes[MIME_MAX_LAYERS];
	struct mime_bundle_writer *w = NULL;
	struct mime_errinfo ei = {0};
	struct mime_manifest m = {0};
	char json[sizeof(manifest_json) + 16], name[256];
	unsigned seed = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 1;
	int r = 1;

	if (argc < 2) {
		fprintf(stderr, "usage: mkbundle OUT.mime [SEED]\n");
		return 2;
	}
	rng = 0x9E3779B97F4A7C15ull ^ seed;
	snprintf(json, sizeof(json), manifest_json, seed);
	if (mime_manifest_parse(json, strlen(json), &m, &ei) < 0) {
		fprintf(stderr, "mkbundle: manifest: %s\n", ei.msg);
		return 1;
	}
	if (mime_graph_check(&m.graph, shapes, &ei) < 0 || mime_bundle_writer_create(&w) < 0)
		goto out;
	for (int i = 0; i < m.graph.n_layers; i++) {
		const struct mime_layer_spec *l = &m.graph.layers[i];
		const struct mime_shape *in = i ? &shapes[i - 1] : &m.graph.input;
		int64_t ws[4], bs[1] = {l->out};
		float scale;

		if (l->kind == MIME_LAYER_CONV) {
			ws[0] = l->out;
			ws[1] = in->c;
			ws[2] = ws[3] = l->kernel;
			scale = 1.0f / (float)(in->c * l->kernel);
		} else if (l->kind == MIME_LAYER_FC) {
			ws[0] = l->out;
			ws[1] = mime_shape_size(in);
			scale = 1.0f / (float)mime_shape_size(in) * 4;
		} else {
			continue;
		}
		snprintf(name, sizeof(name), "parent/%s.weight", l->name);
		if (add_random(w, name, l->kind == MIME_LAYER_CONV ? 4 : 2, ws, -scale, scale) < 0)
			goto out;
		snprintf(name, sizeof(name), "parent/%s.bias", l->name);
		if (add_random(w, name, 1, bs, -0.05f, 0.1f) < 0)
			goto out;
	}
	for (int k = 0; k < m.n_tasks; k++) {
		const struct mime_task_spec *t = &m.tasks[k];
		struct mime_shape feat = shapes[m.graph.n_layers - 1];
		int64_t hw[2] = {t->n_classes, mime_shape_size(&feat)}, hb[1] = {t->n_classes};

		snprintf(name, sizeof(name), "task/%s/head.weight", t->name);
		if (add_random(w, name, 2, hw, -0.5f, 0.5f) < 0)
			goto out;
		snprintf(name, sizeof(name), "task/%s/head.bias", t->name);
		if (add_random(w, name, 1, hb, -0.1f, 0.1f) < 0)
			goto out;
		if (t->thresholds == MIME_THR_NONE)
			continue;
		for (int i = 0; i < m.graph.n_layers; i++) {
			int64_t s[3] = {shapes[i].c, shapes[i].h, shapes[i].w};

			if (!mime_graph_layer_masked(&m.graph, i))
				continue;
			snprintf(name, sizeof(name), "task/%s/%s.threshold", t->name,
			         m.graph.layers[i].name);
			if (add_random(w, name, t->thresholds == MIME_THR_ELEMENT ? 3 : 1, s, 0.0f,
			               0.1f) < 0)
				goto out;
		}
	}
	/* The conventional baseline: each task's own copy of every layer and its head. */
	for (int k = 0; k < m.n_tasks; k++) {
		const struct mime_task_spec *t = &m.tasks[k];
		struct mime_shape feat = shapes[m.graph.n_layers - 1];
		int64_t hw[2] = {t->n_classes, mime_shape_size(&feat)}, hb[1] = {t->n_classes};

		for (int i = 0; i < m.graph.n_layers; i++) {
			const struct mime_layer_spec *l = &m.graph.layers[i];
			const struct mime_shape *in = i ? &shapes[i - 1] : &m.graph.input;
			int64_t ws[4] = {l->out, in->c, l->kernel, l->kernel}, bs[1] = {l->out};
			int ndim = 4;

			if (l->kind == MIME_LAYER_FC) {
				ws[1] = mime_shape_size(in);
				ndim = 2;
			} else if (l->kind != MIME_LAYER_CONV) {
				continue;
			}
			snprintf(name, sizeof(name), "conventional/%s/%s.weight", t->name, l->name);
			if (add_random(w, name, ndim, ws, -0.2f, 0.2f) < 0)
				goto out;
			snprintf(name, sizeof(name), "conventional/%s/%s.bias", t->name, l->name);
			if (add_random(w, name, 1, bs, -0.05f, 0.1f) < 0)
				goto out;
		}
		snprintf(name, sizeof(name), "conventional/%s/head.weight", t->name);
		if (add_random(w, name, 2, hw, -0.5f, 0.5f) < 0)
			goto out;
		snprintf(name, sizeof(name), "conventional/%s/head.bias", t->name);
		if (add_random(w, name, 1, hb, -0.1f, 0.1f) < 0)
			goto out;
	}
	if (mime_bundle_writer_write(w, &m, argv[1], &ei) < 0)
		goto out;
	r = 0;
out:
	if (r)
		fprintf(stderr, "mkbundle: %s\n", ei.msg[0] ? ei.msg : "failed");
	mime_bundle_writer_destroy(w);
	mime_manifest_free(&m);
	return r;
}
