// SPDX-License-Identifier: MIT
/* mkbundle -- writes a random-weight bundle for the integration tests and the daemon
 * benchmarks, so they do not depend on a trained model: three tasks with element, channel
 * and no thresholds, plus each task's conventional baseline (conventional/<task>/<layer>.
 * weight|bias, conventional/<task>/head.weight|bias).
 *   mkbundle OUT.mime [SEED] [--graph small|vgg7|vgg7-half] [--phases N]
 * --phases N (2 or 3): the bundle also lists N nested phases (the Multi-phase CNN paper's
 * sub-networks, coarse only): phase p keeps the first ceil(out * p / N) kernels of every conv
 * and fc layer, so phase N is the whole parent; each (task, phase) gets its own random head
 * and thresholds sized for the phase (task/<task>/phase<p>/...), as tests/test_phase.c's
 * write_bundle() does, so an image's answer differs between phases.
 * small (the default): input 1x16x16, two conv+pool stages, one fc, uniform weights.
 * vgg7: the paper's VGG-7 on 1x28x28 (conf/networks/vgg7.yaml: conv 64-128-256-256, three
 * 2x2 max-pools, the head on 256x3x3); vgg7-half: the demo parent's half width (conv
 * 32-64-128-128). Their weights are He-uniform (+-sqrt(6 / fan_in)), so activations keep
 * their scale through the layers and the thresholds (uniform in [0, 0.1]) prune about half.
 * Ownership: everything is freed before exit. Threads: single-threaded. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/bundle.h"
#include "lib/manifest.h"
#include "lib/phase.h"

static const struct graph {
	const char *name;
	int side; /* input 1 x side x side */
	bool he;  /* He-uniform weights (else the small graph's fixed ranges) */
	const char *layers;
} graphs[] = {
	{"small", 16, false,
         "{\"name\":\"conv1\",\"kind\":\"conv\",\"out\":8,\"kernel\":3,\"stride\":1,\"pad\":1,"
         "\"act\":\"relu\"},"
         "{\"name\":\"pool1\",\"kind\":\"maxpool\",\"kernel\":2,\"stride\":2},"
         "{\"name\":\"conv2\",\"kind\":\"conv\",\"out\":8,\"kernel\":3,\"stride\":1,\"pad\":1,"
         "\"act\":\"relu\"},"
         "{\"name\":\"pool2\",\"kind\":\"maxpool\",\"kernel\":2,\"stride\":2},"
         "{\"name\":\"flatten\",\"kind\":\"flatten\"},"
         "{\"name\":\"fc1\",\"kind\":\"fc\",\"out\":16,\"act\":\"relu\"}"},
#define VGG7(c1, c2, c3)                                                                           \
	"{\"name\":\"conv1\",\"kind\":\"conv\",\"out\":" #c1 ",\"kernel\":3,\"stride\":1,"         \
	"\"pad\":1,\"act\":\"relu\"},"                                                             \
	"{\"name\":\"pool1\",\"kind\":\"maxpool\",\"kernel\":2,\"stride\":2},"                     \
	"{\"name\":\"conv2\",\"kind\":\"conv\",\"out\":" #c2 ",\"kernel\":3,\"stride\":1,"         \
	"\"pad\":1,\"act\":\"relu\"},"                                                             \
	"{\"name\":\"pool2\",\"kind\":\"maxpool\",\"kernel\":2,\"stride\":2},"                     \
	"{\"name\":\"conv3\",\"kind\":\"conv\",\"out\":" #c3 ",\"kernel\":3,\"stride\":1,"         \
	"\"pad\":1,\"act\":\"relu\"},"                                                             \
	"{\"name\":\"conv4\",\"kind\":\"conv\",\"out\":" #c3 ",\"kernel\":3,\"stride\":1,"         \
	"\"pad\":1,\"act\":\"relu\"},"                                                             \
	"{\"name\":\"pool3\",\"kind\":\"maxpool\",\"kernel\":2,\"stride\":2},"                     \
	"{\"name\":\"flatten\",\"kind\":\"flatten\"}"
	{"vgg7", 28, true, VGG7(64, 128, 256)},
	{"vgg7-half", 28, true, VGG7(32, 64, 128)},
#undef VGG7
};

/* printf format: graph input side, graph layers, then each task's input side x2, seed. */
static const char manifest_json[] =
	"{\"format\":\"mime-bundle\",\"version\":1,"
	"\"graph\":{\"input\":[1,%d,%d],\"layers\":[%s]},"
	"\"tasks\":["
	"{\"name\":\"alpha\",\"classes\":[\"a0\",\"a1\",\"a2\",\"a3\"],"
	"\"input\":{\"channels\":1,\"height\":%d,\"width\":%d,\"resize\":\"bilinear\","
	"\"fit\":\"stretch\",\"invert\":false,\"mean\":[0.5],\"std\":[0.25]},"
	"\"thresholds\":\"element\",\"accuracy\":0.5},"
	"{\"name\":\"beta\",\"classes\":[\"b0\",\"b1\",\"b2\"],"
	"\"input\":{\"channels\":1,\"height\":%d,\"width\":%d,\"resize\":\"bilinear\","
	"\"fit\":\"pad\",\"invert\":true,\"mean\":[0.5],\"std\":[0.25]},"
	"\"thresholds\":\"channel\"},"
	"{\"name\":\"gamma\",\"classes\":[\"g0\",\"g1\",\"g2\",\"g3\",\"g4\"],"
	"\"input\":{\"channels\":1,\"height\":%d,\"width\":%d,\"resize\":\"bilinear\","
	"\"fit\":\"stretch\",\"invert\":false,\"mean\":[0.5],\"std\":[0.25]},"
	"\"thresholds\":\"none\"}],"
	"\"provenance\":{\"command\":\"tests/integration/mkbundle\",\"graph\":\"%s\","
	"\"seed\":%u}}";

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
	const struct graph *g = &graphs[0];
	const char *out = NULL;
	char json[4096], name[256];
	unsigned seed = 1;
	int r = 1, n_pos = 0, n_phases = 0;
	struct mime_phase_spec ps[3];

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--graph") == 0 && i + 1 < argc) {
			g = NULL;
			for (size_t k = 0; k < sizeof(graphs) / sizeof(graphs[0]); k++)
				if (strcmp(argv[i + 1], graphs[k].name) == 0)
					g = &graphs[k];
			if (!g) {
				fprintf(stderr, "mkbundle: unknown graph '%s'\n", argv[i + 1]);
				return 2;
			}
			i++;
		} else if (strcmp(argv[i], "--phases") == 0 && i + 1 < argc) {
			n_phases = atoi(argv[++i]);
			if (n_phases < 2 || n_phases > 3) {
				fprintf(stderr, "mkbundle: --phases takes 2 or 3\n");
				return 2;
			}
		} else if (n_pos == 0 && argv[i][0] != '-') {
			out = argv[i];
			n_pos++;
		} else if (n_pos == 1 && argv[i][0] != '-') {
			seed = (unsigned)strtoul(argv[i], NULL, 10);
			n_pos++;
		} else {
			out = NULL;
			break;
		}
	}
	if (!out) {
		fprintf(stderr, "usage: mkbundle OUT.mime [SEED] [--graph small|vgg7|vgg7-half] "
		                "[--phases 2|3]\n");
		return 2;
	}
	rng = 0x9E3779B97F4A7C15ull ^ seed;
	if (snprintf(json, sizeof(json), manifest_json, g->side, g->side, g->layers, g->side,
	             g->side, g->side, g->side, g->side, g->side, g->name,
	             seed) >= (int)sizeof(json)) {
		fprintf(stderr, "mkbundle: manifest too long\n");
		return 1;
	}
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
			scale = g->he ? sqrtf(6.0f / (float)(in->c * l->kernel * l->kernel))
			              : 1.0f / (float)(in->c * l->kernel);
		} else if (l->kind == MIME_LAYER_FC) {
			ws[0] = l->out;
			ws[1] = mime_shape_size(in);
			scale = g->he ? sqrtf(6.0f / (float)mime_shape_size(in))
			              : 1.0f / (float)mime_shape_size(in) * 4;
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
	/* Phases: nested kernels per layer, each (task, phase) its own head and thresholds. */
	memset(ps, 0, sizeof(ps));
	for (int p = 0; p < n_phases; p++) {
		struct mime_shape ph_shapes[MIME_MAX_LAYERS];

		snprintf(ps[p].name, sizeof(ps[p].name), "p%d", p + 1);
		ps[p].wuv = 4;
		ps[p].accuracy = ps[p].latency_ms = -1;
		ps[p].memory_bytes = ps[p].nonzero_params = -1;
		for (int i = 0; i < m.graph.n_layers; i++) {
			const struct mime_layer_spec *l = &m.graph.layers[i];

			if (l->kind == MIME_LAYER_CONV || l->kind == MIME_LAYER_FC)
				ps[p].k_active[i] = (l->out * (p + 1) + n_phases - 1) / n_phases;
		}
		if (mime_phase_shapes(&m.graph, ps[p].k_active, NULL, ph_shapes) < 0) {
			snprintf(ei.msg, sizeof(ei.msg), "phase %d: bad shapes", p + 1);
			goto out;
		}
		for (int k = 0; k < m.n_tasks; k++) {
			const struct mime_task_spec *t = &m.tasks[k];
			int64_t hw[2] = {t->n_classes,
			                 mime_shape_size(&ph_shapes[m.graph.n_layers - 1])};
			int64_t hb[1] = {t->n_classes};

			snprintf(name, sizeof(name), "task/%s/phase%d/head.weight", t->name, p + 1);
			if (add_random(w, name, 2, hw, -0.5f, 0.5f) < 0)
				goto out;
			snprintf(name, sizeof(name), "task/%s/phase%d/head.bias", t->name, p + 1);
			if (add_random(w, name, 1, hb, -0.1f, 0.1f) < 0)
				goto out;
			if (t->thresholds == MIME_THR_NONE)
				continue;
			for (int i = 0; i < m.graph.n_layers; i++) {
				int64_t sh[3] = {ph_shapes[i].c, ph_shapes[i].h, ph_shapes[i].w};

				if (!mime_graph_layer_masked(&m.graph, i))
					continue;
				snprintf(name, sizeof(name), "task/%s/phase%d/%s.threshold",
				         t->name, p + 1, m.graph.layers[i].name);
				if (add_random(w, name, t->thresholds == MIME_THR_ELEMENT ? 3 : 1,
				               sh, 0.0f, 0.1f) < 0)
					goto out;
			}
		}
	}
	m.n_phases = n_phases;
	m.phases = n_phases ? ps : NULL;
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
			float a = 0.2f;

			if (l->kind == MIME_LAYER_FC) {
				ws[1] = mime_shape_size(in);
				ndim = 2;
			} else if (l->kind != MIME_LAYER_CONV) {
				continue;
			}
			if (g->he)
				a = sqrtf(6.0f / (float)(ws[1] * (ndim == 4 ? ws[2] * ws[3] : 1)));
			snprintf(name, sizeof(name), "conventional/%s/%s.weight", t->name, l->name);
			if (add_random(w, name, ndim, ws, -a, a) < 0)
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
	if (mime_bundle_writer_write(w, &m, out, &ei) < 0)
		goto out;
	r = 0;
out:
	if (r)
		fprintf(stderr, "mkbundle: %s\n", ei.msg[0] ? ei.msg : "failed");
	mime_bundle_writer_destroy(w);
	m.n_phases = 0;
	m.phases = NULL; /* ps is ours */
	mime_manifest_free(&m);
	return r;
}
