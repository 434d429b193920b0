// SPDX-License-Identifier: MIT
/* graphyaml -- network descriptions in YAML and weight import; see graphyaml.h.
 * Ownership: the libyaml document lives only inside a parse; a netdesc owns its class
 * names; import allocates scratch per tensor and frees it before returning.
 * Threads: no shared state. */
#include "train/graphyaml.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define BN_EPS 1e-5

struct yctx {
	yaml_document_t doc;
	const char *file;
	struct mime_errinfo *ei;
};

static int yerr(struct yctx *y, const yaml_node_t *n, const char *where, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int yerr(struct yctx *y, const yaml_node_t *n, const char *where, const char *fmt, ...)
{
	char msg[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n)
		return mime_errinfo_set(y->ei, MIME_EGRAPH, "%.60s:%zu:%zu: %s: %s", y->file,
		                        n->start_mark.line + 1, n->start_mark.column + 1, where,
		                        msg);
	return mime_errinfo_set(y->ei, MIME_EGRAPH, "%.60s: %s: %s", y->file, where, msg);
}

static yaml_node_t *ynode(struct yctx *y, int id)
{
	return yaml_document_get_node(&y->doc, id);
}

static const char *scalar(const yaml_node_t *n)
{
	return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int get_str(struct yctx *y, yaml_node_t *n, const char *where, char *buf, size_t size)
{
	const char *s = scalar(n);

	if (!s)
		return yerr(y, n, where, "expected a string");
	if (strlen(s) == 0 || strlen(s) >= size)
		return yerr(y, n, where, "must be 1..%zu characters", size - 1);
	strcpy(buf, s);
	return 0;
}

static int get_int(struct yctx *y, yaml_node_t *n, const char *where, int lo, int *ret)
{
	const char *s = scalar(n);
	char *end;
	long v;

	if (!s || !*s)
		return yerr(y, n, where, "expected an integer");
	errno = 0;
	v = strtol(s, &end, 10);
	if (*end || errno || v < lo || v > INT_MAX)
		return yerr(y, n, where, "'%.32s' is not an integer >= %d", s, lo);
	*ret = (int)v;
	return 0;
}

/* Calls fn for each key of a mapping, refusing duplicate keys and keys not in allowed. */
static int check_map(struct yctx *y, yaml_node_t *n, const char *where, const char *const *allowed)
{
	if (!n || n->type != YAML_MAPPING_NODE)
		return yerr(y, n, where, "expected a mapping");
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = ynode(y, p->key);
		const char *key = scalar(k);
		int ok = 0;

		if (!key)
			return yerr(y, k, where, "keys must be plain strings");
		for (size_t i = 0; allowed[i]; i++)
			if (strcmp(key, allowed[i]) == 0)
				ok = 1;
		if (!ok)
			return yerr(y, k, where, "unknown key '%.40s'", key);
		for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < p; q++)
			if (strcmp(scalar(ynode(y, q->key)), key) == 0)
				return yerr(y, k, where, "key '%.40s' given twice", key);
	}
	return 0;
}

static yaml_node_t *map_get(struct yctx *y, yaml_node_t *n, const char *key)
{
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
	     p++) {
		const char *k = scalar(ynode(y, p->key));

		if (k && strcmp(k, key) == 0)
			return ynode(y, p->value);
	}
	return NULL;
}

static int seq_len(const yaml_node_t *n)
{
	return (int)(n->data.sequence.items.top - n->data.sequence.items.start);
}

static yaml_node_t *seq_get(struct yctx *y, const yaml_node_t *n, int i)
{
	return ynode(y, n->data.sequence.items.start[i]);
}

static int parse_layer(struct yctx *y, yaml_node_t *n, int i, struct mime_layer_spec *l,
                       struct mimetrain_source *src)
{
	static const char *const keys[] = {"name", "kind", "out",    "kernel", "stride",
	                                   "pad",  "act",  "source", "bn",     NULL};
	char where[64];
	yaml_node_t *v;
	int r;

	snprintf(where, sizeof(where), "layers[%d]", i);
	r = check_map(y, n, where, keys);
	if (r < 0)
		return r;
	snprintf(where, sizeof(where), "layers[%d].name", i);
	v = map_get(y, n, "name");
	if (!v)
		return yerr(y, n, where, "missing");
	r = get_str(y, v, where, l->name, sizeof(l->name));
	if (r < 0)
		return r;

	snprintf(where, sizeof(where), "layers[%d].kind", i);
	v = map_get(y, n, "kind");
	if (!v)
		return yerr(y, n, where, "missing");
	if (!scalar(v) || mime_layer_kind_parse(scalar(v), &l->kind) < 0)
		return yerr(y, v, where, "'%.32s' unknown (conv|maxpool|flatten|fc)",
		            scalar(v) ? scalar(v) : "?");

	l->out = l->kernel = l->pad = 0;
	l->stride = 1;
	l->act = MIME_ACT_NONE;
	struct {
		const char *key;
		int *field, lo, required, allowed;
	} ints[] = {
		{"out", &l->out, 1, l->kind == MIME_LAYER_CONV || l->kind == MIME_LAYER_FC,
	         l->kind == MIME_LAYER_CONV || l->kind == MIME_LAYER_FC},
		{"kernel", &l->kernel, 1,
	         l->kind == MIME_LAYER_CONV || l->kind == MIME_LAYER_MAXPOOL,
	         l->kind == MIME_LAYER_CONV || l->kind == MIME_LAYER_MAXPOOL},
		{"stride", &l->stride, 1, 0,
	         l->kind == MIME_LAYER_CONV || l->kind == MIME_LAYER_MAXPOOL},
		{"pad", &l->pad, 0, 0, l->kind == MIME_LAYER_CONV},
	};
	for (size_t k = 0; k < sizeof(ints) / sizeof(ints[0]); k++) {
		snprintf(where, sizeof(where), "layers[%d].%s", i, ints[k].key);
		v = map_get(y, n, ints[k].key);
		if (!v && ints[k].required)
			return yerr(y, n, where, "missing (a %s needs it)",
			            mime_layer_kind_name(l->kind));
		if (v && !ints[k].allowed)
			return yerr(y, v, where, "does not apply to %s",
			            mime_layer_kind_name(l->kind));
		if (v) {
			r = get_int(y, v, where, ints[k].lo, ints[k].field);
			if (r < 0)
				return r;
		}
		if (k == 1 && l->kind == MIME_LAYER_MAXPOOL)
			l->stride = l->kernel; /* pool stride defaults to its kernel */
	}

	snprintf(where, sizeof(where), "layers[%d].act", i);
	v = map_get(y, n, "act");
	if (v) {
		const char *s = scalar(v);

		if (s && strcmp(s, "relu") == 0)
			l->act = MIME_ACT_RELU;
		else if (s && strcmp(s, "none") == 0)
			l->act = MIME_ACT_NONE;
		else
			return yerr(y, v, where, "expected relu or none");
	}

	memset(src, 0, sizeof(*src));
	snprintf(where, sizeof(where), "layers[%d].source", i);
	v = map_get(y, n, "source");
	if (v) {
		if (l->kind != MIME_LAYER_CONV && l->kind != MIME_LAYER_FC)
			return yerr(y, v, where, "only conv and fc layers have weights");
		r = get_str(y, v, where, src->source, sizeof(src->source));
		if (r < 0)
			return r;
	}
	snprintf(where, sizeof(where), "layers[%d].bn", i);
	v = map_get(y, n, "bn");
	if (v) {
		if (!src->source[0])
			return yerr(y, v, where, "needs a source to fold into");
		r = get_str(y, v, where, src->bn, sizeof(src->bn));
		if (r < 0)
			return r;
	}
	return 0;
}

static int parse_head(struct yctx *y, yaml_node_t *n, struct mimetrain_netdesc *d)
{
	static const char *const keys[] = {"source", "bn", "task", "classes", NULL};
	yaml_node_t *v;
	int r;

	r = check_map(y, n, "head", keys);
	if (r < 0)
		return r;
	d->has_head = 1;
	v = map_get(y, n, "source");
	if (!v)
		return yerr(y, n, "head.source", "missing");
	r = get_str(y, v, "head.source", d->head.source, sizeof(d->head.source));
	if (r == 0 && (v = map_get(y, n, "bn")))
		r = get_str(y, v, "head.bn", d->head.bn, sizeof(d->head.bn));
	if (r == 0 && (v = map_get(y, n, "task")))
		r = get_str(y, v, "head.task", d->head_task, sizeof(d->head_task));
	if (r < 0)
		return r;
	v = map_get(y, n, "classes");
	if (!v)
		return 0;
	if (v->type != YAML_SEQUENCE_NODE || seq_len(v) < 1 || seq_len(v) > MIME_MAX_CLASSES)
		return yerr(y, v, "head.classes", "expected a list of 1..%d names",
		            MIME_MAX_CLASSES);
	d->classes = calloc(seq_len(v), sizeof(char *));
	if (!d->classes)
		return -ENOMEM;
	for (int k = 0; k < seq_len(v); k++) {
		yaml_node_t *c = seq_get(y, v, k);
		char where[32];

		snprintf(where, sizeof(where), "head.classes[%d]", k);
		if (!scalar(c))
			return yerr(y, c, where, "expected a string");
		d->classes[k] = strdup(scalar(c));
		if (!d->classes[k])
			return -ENOMEM;
		d->n_classes = k + 1;
	}
	return 0;
}

static int parse_root(struct yctx *y, struct mimetrain_netdesc *d)
{
	static const char *const keys[] = {"name", "description", "input", "layers", "head", NULL};
	yaml_node_t *root = yaml_document_get_root_node(&y->doc), *v;
	int dims[3];
	int r;

	if (!root)
		return yerr(y, NULL, "document", "empty");
	r = check_map(y, root, "document", keys);
	if (r < 0)
		return r;
	v = map_get(y, root, "name");
	if (v) {
		r = get_str(y, v, "name", d->name, sizeof(d->name));
		if (r < 0)
			return r;
	}
	v = map_get(y, root, "description");
	if (v && !scalar(v))
		return yerr(y, v, "description", "expected a string");

	v = map_get(y, root, "input");
	if (!v)
		return yerr(y, root, "input", "missing");
	if (v->type != YAML_SEQUENCE_NODE || seq_len(v) != 3)
		return yerr(y, v, "input", "expected [C, H, W]");
	for (int i = 0; i < 3; i++) {
		char where[16];

		snprintf(where, sizeof(where), "input[%d]", i);
		r = get_int(y, seq_get(y, v, i), where, 1, &dims[i]);
		if (r < 0)
			return r;
	}
	d->graph.input = (struct mime_shape){dims[0], dims[1], dims[2]};

	v = map_get(y, root, "layers");
	if (!v)
		return yerr(y, root, "layers", "missing");
	if (v->type != YAML_SEQUENCE_NODE || seq_len(v) < 1 || seq_len(v) > MIME_MAX_LAYERS)
		return yerr(y, v, "layers", "expected a list of 1..%d layers", MIME_MAX_LAYERS);
	d->graph.n_layers = seq_len(v);
	for (int i = 0; i < d->graph.n_layers; i++) {
		r = parse_layer(y, seq_get(y, v, i), i, &d->graph.layers[i], &d->src[i]);
		if (r < 0)
			return r;
	}
	r = mime_graph_check(&d->graph, NULL, y->ei);
	if (r < 0 && y->ei) {
		char msg[sizeof(y->ei->msg)];

		snprintf(msg, sizeof(msg), "%s", y->ei->msg);
		mime_errinfo_set(y->ei, r, "%.60s:%zu:%zu: %.180s", y->file, v->start_mark.line + 1,
		                 v->start_mark.column + 1, msg);
	}
	if (r < 0)
		return r;

	v = map_get(y, root, "head");
	if (v)
		return parse_head(y, v, d);
	return 0;
}

int mimetrain_graphyaml_parse(const char *text, size_t len, const char *filename,
                              struct mimetrain_netdesc *ret_desc, struct mime_errinfo *ei)
{
	struct yctx y = {.file = filename ? filename : "<yaml>", .ei = ei};
	yaml_parser_t parser;
	int r;

	memset(ret_desc, 0, sizeof(*ret_desc));
	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &y.doc)) {
		r = mime_errinfo_set(ei, MIME_EGRAPH, "%.60s:%zu:%zu: %s%s%.100s", y.file,
		                     parser.problem_mark.line + 1, parser.problem_mark.column + 1,
		                     parser.problem ? parser.problem : "invalid YAML",
		                     parser.context ? " " : "",
		                     parser.context ? parser.context : "");
		goto out_parser;
	}
	r = parse_root(&y, ret_desc);
	yaml_document_delete(&y.doc);
	if (r < 0)
		mimetrain_netdesc_free(ret_desc);
out_parser:
	yaml_parser_delete(&parser);
	return r;
}

int mimetrain_graphyaml_load(const char *path, struct mimetrain_netdesc *ret_desc,
                             struct mime_errinfo *ei)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f;
	int r;

	memset(ret_desc, 0, sizeof(*ret_desc));
	f = fopen(path, "re");
	if (!f) {
		r = -errno;
		return mime_errinfo_set(ei, r, "%.100s: %s", path, strerror(-r));
	}
	/* Descriptions are a few kilobytes; refuse anything that is clearly not one. */
	text = malloc(1 << 20);
	if (!text) {
		r = -ENOMEM;
		goto out_close;
	}
	len = fread(text, 1, 1 << 20, f);
	if (ferror(f)) {
		r = mime_errinfo_set(ei, -EIO, "%.100s: read error", path);
		goto out_free;
	}
	if (len == 1 << 20) {
		r = mime_errinfo_set(ei, MIME_EGRAPH, "%.100s: larger than 1 MiB", path);
		goto out_free;
	}
	r = mimetrain_graphyaml_parse(text, len, path, ret_desc, ei);
out_free:
	free(text);
out_close:
	fclose(f);
	return r;
}

void mimetrain_netdesc_free(struct mimetrain_netdesc *d)
{
	if (!d)
		return;
	for (int k = 0; d->classes && k < d->n_classes; k++)
		free(d->classes[k]);
	free(d->classes);
	d->classes = NULL;
	d->n_classes = 0;
}

/* ---- import ---- */

static float half_to_float(uint16_t h)
{
	int e = (h >> 10) & 0x1f, m = h & 0x3ff;
	float v;

	if (e == 0)
		v = ldexpf((float)m, -24);
	else if (e == 31)
		v = m ? NAN : INFINITY;
	else
		v = ldexpf((float)(m | 0x400), e - 25);
	return (h & 0x8000) ? -v : v;
}

/* Copies a tensor's values into a new float array; the data is little endian, read byte by
 * byte. Returns NULL with ei set when absent, of another shape or of an unsupported dtype. */
static float *load_floats(const struct mime_bundle *st, const char *name, int ndim,
                          const int64_t *shape, struct mime_errinfo *ei, int *ret_err)
{
	struct mime_tensor_view v;
	const uint8_t *p;
	size_t n = 1, es;
	float *out;

	if (mime_bundle_tensor(st, name, &v) < 0) {
		*ret_err = mime_errinfo_set(ei, MIME_EFORMAT, "weights: tensor '%.100s' missing",
		                            name);
		return NULL;
	}
	for (int i = 0; i < ndim; i++)
		n *= (size_t)shape[i];
	/* A PyTorch fc weight flattened from conv output has the same element order. */
	if (v.ndim != ndim || memcmp(v.shape, shape, ndim * sizeof(*shape)) != 0) {
		char have[64] = "", want[64] = "";
		size_t o = 0, q = 0;

		for (int i = 0; i < v.ndim && o < sizeof(have); i++)
			o += snprintf(have + o, sizeof(have) - o, "%s%lld", i ? "," : "",
			              (long long)v.shape[i]);
		for (int i = 0; i < ndim && q < sizeof(want); i++)
			q += snprintf(want + q, sizeof(want) - q, "%s%lld", i ? "," : "",
			              (long long)shape[i]);
		*ret_err = mime_errinfo_set(
			ei, MIME_EFORMAT,
			"weights: tensor '%.100s': shape [%s], the graph needs [%s]", name, have,
			want);
		return NULL;
	}
	es = mime_dtype_size(v.dtype);
	if (v.dtype != MIME_DTYPE_F32 && v.dtype != MIME_DTYPE_F64 && v.dtype != MIME_DTYPE_F16 &&
	    v.dtype != MIME_DTYPE_BF16) {
		*ret_err = mime_errinfo_set(
			ei, MIME_EFORMAT, "weights: tensor '%.100s': dtype %s is not a float type",
			name, mime_dtype_name(v.dtype));
		return NULL;
	}
	out = malloc((n ? n : 1) * sizeof(float));
	if (!out) {
		*ret_err = -ENOMEM;
		return NULL;
	}
	p = v.data;
	for (size_t i = 0; i < n; i++, p += es) {
		uint64_t u = 0;

		for (size_t k = es; k-- > 0;)
			u = u << 8 | p[k];
		switch (v.dtype) {
		case MIME_DTYPE_F32: {
			uint32_t u32 = (uint32_t)u;

			memcpy(&out[i], &u32, 4);
			break;
		}
		case MIME_DTYPE_F64: {
			double dv;

			memcpy(&dv, &u, 8);
			out[i] = (float)dv;
			break;
		}
		case MIME_DTYPE_BF16: {
			uint32_t u32 = (uint32_t)u << 16;

			memcpy(&out[i], &u32, 4);
			break;
		}
		default:
			out[i] = half_to_float((uint16_t)u);
			break;
		}
	}
	return out;
}

/* Reads <src>.weight and <src>.bias (bias zeros when absent), folds <bn>.* when set, and
 * adds the result under dst_prefix.weight / .bias. */
static int import_layer(const struct mime_bundle *st, const struct mimetrain_source *src, int k,
                        int fan_in, int ndim, const int64_t *wshape, const char *dst_prefix,
                        struct mime_bundle_writer *w, struct mime_errinfo *ei)
{
	char name[MIMETRAIN_SOURCE_MAX + 32];
	struct mime_tensor_view tv;
	float *wt = NULL, *bias = NULL, *bn[4] = {NULL, NULL, NULL, NULL};
	static const char *const bn_names[] = {"weight", "bias", "running_mean", "running_var"};
	int64_t kshape[1] = {k};
	int r = 0;

	snprintf(name, sizeof(name), "%s.weight", src->source);
	wt = load_floats(st, name, ndim, wshape, ei, &r);
	if (!wt)
		return r;
	snprintf(name, sizeof(name), "%s.bias", src->source);
	if (mime_bundle_tensor(st, name, &tv) == 0) {
		bias = load_floats(st, name, 1, kshape, ei, &r);
	} else {
		bias = calloc(k, sizeof(float));
		r = bias ? 0 : -ENOMEM;
	}
	if (r < 0)
		goto out;
	if (src->bn[0]) {
		for (int j = 0; j < 4; j++) {
			snprintf(name, sizeof(name), "%s.%s", src->bn, bn_names[j]);
			/* affine=False BatchNorm has no weight/bias: gamma 1, beta 0 */
			if (j < 2 && mime_bundle_tensor(st, name, &tv) < 0)
				continue;
			bn[j] = load_floats(st, name, 1, kshape, ei, &r);
			if (!bn[j])
				goto out;
		}
		for (int o = 0; o < k; o++) {
			double gamma = bn[0] ? bn[0][o] : 1.0, beta = bn[1] ? bn[1][o] : 0.0;
			double var = bn[3][o], s;

			if (!(var >= 0.0) || !isfinite(var)) {
				r = mime_errinfo_set(
					ei, MIME_EFORMAT,
					"weights: tensor '%.100s.running_var'[%d] is not a "
					"non-negative number",
					src->bn, o);
				goto out;
			}
			s = gamma / sqrt(var + BN_EPS);
			for (int i = 0; i < fan_in; i++)
				wt[(size_t)o * fan_in + i] =
					(float)(wt[(size_t)o * fan_in + i] * s);
			bias[o] = (float)((bias[o] - bn[2][o]) * s + beta);
		}
	}
	snprintf(name, sizeof(name), "%s.weight", dst_prefix);
	r = mime_bundle_writer_add(w, name, MIME_DTYPE_F32, ndim, wshape, wt);
	if (r == 0) {
		snprintf(name, sizeof(name), "%s.bias", dst_prefix);
		r = mime_bundle_writer_add(w, name, MIME_DTYPE_F32, 1, kshape, bias);
	}
	if (r < 0)
		mime_errinfo_set(ei, r, "cannot add '%.100s' to the bundle", name);
out:
	for (int j = 0; j < 4; j++)
		free(bn[j]);
	free(bias);
	free(wt);
	return r;
}

static int import_task(const struct mimetrain_netdesc *d, int n_classes, struct mime_manifest *m)
{
	struct mime_task_spec *t;

	m->tasks = calloc(1, sizeof(*m->tasks));
	if (!m->tasks)
		return -ENOMEM;
	m->n_tasks = 1;
	t = &m->tasks[0];
	snprintf(t->name, sizeof(t->name), "%s", d->head_task);
	t->class_names = calloc(n_classes, sizeof(char *));
	if (!t->class_names)
		return -ENOMEM;
	for (int c = 0; c < n_classes; c++) {
		if (d->n_classes)
			t->class_names[c] = strdup(d->classes[c]);
		else if (asprintf(&t->class_names[c], "%d", c) < 0)
			t->class_names[c] = NULL;
		if (!t->class_names[c])
			return -ENOMEM;
		t->n_classes = c + 1;
	}
	mime_input_spec_default(&m->graph, &t->input);
	t->thresholds = MIME_THR_NONE;
	t->accuracy = -1.0;
	return 0;
}

int mimetrain_import(const struct mimetrain_netdesc *d, const struct mime_bundle *weights,
                     struct mime_bundle_writer *w, struct mime_manifest *ret_manifest,
                     struct mime_errinfo *ei)
{
	struct mime_manifest m = {0};
	struct mime_shape shapes[MIME_MAX_LAYERS], feat;
	char dst[MIME_NAME_MAX + 16];
	int64_t s[4];
	int r;

	m.graph = d->graph;
	r = mime_graph_check(&m.graph, shapes, ei);
	if (r < 0)
		return r;
	for (int i = 0; i < d->graph.n_layers; i++) {
		const struct mime_layer_spec *l = &d->graph.layers[i];
		const struct mime_shape *in = i ? &shapes[i - 1] : &d->graph.input;
		int ndim, fan_in;

		if (l->kind == MIME_LAYER_CONV) {
			s[0] = l->out;
			s[1] = in->c;
			s[2] = s[3] = l->kernel;
			ndim = 4;
			fan_in = in->c * l->kernel * l->kernel;
		} else if (l->kind == MIME_LAYER_FC) {
			s[0] = l->out;
			s[1] = mime_shape_size(in);
			ndim = 2;
			fan_in = (int)s[1];
		} else {
			continue;
		}
		if (!d->src[i].source[0])
			return mime_errinfo_set(
				ei, MIME_EGRAPH,
				"layer '%s' has no source to import its weights from", l->name);
		snprintf(dst, sizeof(dst), "parent/%s", l->name);
		r = import_layer(weights, &d->src[i], l->out, fan_in, ndim, s, dst, w, ei);
		if (r < 0)
			return r;
	}

	if (d->has_head && d->head_task[0]) {
		struct mime_tensor_view v;
		char name[MIMETRAIN_SOURCE_MAX + 16];
		int n_classes;

		feat = shapes[d->graph.n_layers - 1];
		snprintf(name, sizeof(name), "%s.weight", d->head.source);
		if (mime_bundle_tensor(weights, name, &v) < 0)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "weights: tensor '%.100s' missing", name);
		if (v.ndim != 2 || v.shape[0] < 1 || v.shape[0] > MIME_MAX_CLASSES ||
		    v.shape[1] != mime_shape_size(&feat))
			return mime_errinfo_set(
				ei, MIME_EFORMAT,
				"weights: tensor '%.100s': not [n_classes, %ld] with "
				"1..%d classes",
				name, mime_shape_size(&feat), MIME_MAX_CLASSES);
		n_classes = (int)v.shape[0];
		if (d->n_classes && d->n_classes != n_classes)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "head: %d class names for '%.100s' with %d rows",
			                        d->n_classes, name, n_classes);
		s[0] = n_classes;
		s[1] = mime_shape_size(&feat);
		snprintf(dst, sizeof(dst), "task/%s/head", d->head_task);
		r = import_layer(weights, &d->head, n_classes, (int)s[1], 2, s, dst, w, ei);
		if (r < 0)
			return r;
		r = import_task(d, n_classes, &m);
		if (r < 0) {
			mime_manifest_free(&m);
			return r;
		}
	}
	*ret_manifest = m;
	return 0;
}
