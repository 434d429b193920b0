// SPDX-License-Identifier: MIT
/* manifest -- parse, validate and format the bundle manifest JSON (schema in manifest.h).
 * Ownership: a parsed manifest owns its task array, class names, provenance and JSON text;
 * mime_manifest_free() releases them. Formatting returns a string the caller frees.
 * Threads: no shared state; parse and format are reentrant.
 *
 * Strictness: graph layers and task input specs reject unknown keys (a typo there changes
 * what the network computes), and so do a phase's "kernels" (every conv / fc layer, no
 * other); the top level, tasks and phases keep or ignore unknown keys ("sparsity", ...) so
 * later format additions stay readable. */
#include "lib/manifest.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MANIFEST_FORMAT  "mime-bundle"
#define MANIFEST_VERSION 1

/* Names end up inside tensor names ("task/<task>/<layer>.threshold") and on command lines. */
static int name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= MIME_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return 0;
	}
	return 1;
}

/* Reads an optional integer member into *ret (left alone when absent) within [lo, hi]. */
static int get_int(json_t *obj, const char *key, int required, long lo, long hi, int *ret,
                   const char *where, struct mime_errinfo *ei)
{
	json_t *v = json_object_get(obj, key);
	json_int_t x;

	if (!v) {
		if (required)
			return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: %s.%s missing", where,
			                        key);
		return 0;
	}
	if (!json_is_integer(v))
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: %s.%s is not an integer",
		                        where, key);
	x = json_integer_value(v);
	if (x < lo || x > hi)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.%s %lld out of range %ld..%ld", where, key,
		                        (long long)x, lo, hi);
	*ret = (int)x;
	return 0;
}

static int check_keys(json_t *obj, const char *const *allowed, const char *where,
                      struct mime_errinfo *ei)
{
	const char *key;
	json_t *v;

	json_object_foreach(obj, key, v)
	{
		int ok = 0;

		for (size_t i = 0; allowed[i]; i++)
			if (strcmp(key, allowed[i]) == 0)
				ok = 1;
		if (!ok)
			return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: %s: unknown key '%s'",
			                        where, key);
	}
	return 0;
}

static int parse_layer(json_t *jl, int i, struct mime_layer_spec *l, struct mime_errinfo *ei)
{
	static const char *const keys[] = {"name",   "kind", "out", "kernel",
	                                   "stride", "pad",  "act", NULL};
	char where[48];
	json_t *v;
	int r;

	snprintf(where, sizeof(where), "graph.layers[%d]", i);
	if (!json_is_object(jl))
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: %s is not an object", where);
	r = check_keys(jl, keys, where, ei);
	if (r < 0)
		return r;

	v = json_object_get(jl, "name");
	if (!json_is_string(v))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.name missing or not a string", where);
	if (!name_ok(json_string_value(v)))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.name '%.64s' is not 1..%d characters of "
		                        "[A-Za-z0-9_.-]",
		                        where, json_string_value(v), MIME_NAME_MAX - 1);
	strcpy(l->name, json_string_value(v));

	v = json_object_get(jl, "kind");
	if (!json_is_string(v))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.kind missing or not a string", where);
	if (mime_layer_kind_parse(json_string_value(v), &l->kind) < 0)
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: %s.kind '%.64s' unknown",
		                        where, json_string_value(v));

	l->out = l->kernel = l->pad = 0;
	l->stride = 1;
	l->act = MIME_ACT_NONE;
	switch (l->kind) {
	case MIME_LAYER_CONV:
		r = get_int(jl, "out", 1, 1, INT_MAX, &l->out, where, ei);
		if (r == 0)
			r = get_int(jl, "kernel", 1, 1, INT_MAX, &l->kernel, where, ei);
		if (r == 0)
			r = get_int(jl, "stride", 0, 1, INT_MAX, &l->stride, where, ei);
		if (r == 0)
			r = get_int(jl, "pad", 0, 0, INT_MAX, &l->pad, where, ei);
		break;
	case MIME_LAYER_MAXPOOL:
		r = get_int(jl, "kernel", 1, 1, INT_MAX, &l->kernel, where, ei);
		l->stride = l->kernel;
		if (r == 0)
			r = get_int(jl, "stride", 0, 1, INT_MAX, &l->stride, where, ei);
		break;
	case MIME_LAYER_FC:
		r = get_int(jl, "out", 1, 1, INT_MAX, &l->out, where, ei);
		break;
	case MIME_LAYER_FLATTEN:
		break;
	}
	if (r < 0)
		return r;
	/* Keys that do not apply to the kind are refused rather than ignored. */
	if (l->kind != MIME_LAYER_CONV && json_object_get(jl, "pad"))
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: %s.pad: only conv has one",
		                        where);
	if ((l->kind == MIME_LAYER_FLATTEN || l->kind == MIME_LAYER_FC) &&
	    (json_object_get(jl, "kernel") || json_object_get(jl, "stride")))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s: kernel/stride do not apply to %s", where,
		                        mime_layer_kind_name(l->kind));
	if ((l->kind == MIME_LAYER_FLATTEN || l->kind == MIME_LAYER_MAXPOOL) &&
	    json_object_get(jl, "out"))
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: %s.out does not apply to %s",
		                        where, mime_layer_kind_name(l->kind));

	v = json_object_get(jl, "act");
	if (v) {
		const char *s = json_string_value(v);

		if (!s)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "manifest: %s.act is not a string", where);
		if (strcmp(s, "relu") == 0)
			l->act = MIME_ACT_RELU;
		else if (strcmp(s, "none") == 0)
			l->act = MIME_ACT_NONE;
		else
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "manifest: %s.act '%.64s' unknown (relu|none)",
			                        where, s);
	}
	return 0;
}

static int parse_graph(json_t *jg, struct mime_graph *g, struct mime_errinfo *ei)
{
	static const char *const keys[] = {"input", "layers", NULL};
	json_t *in, *layers;
	int dims[3];
	int r;

	if (!json_is_object(jg))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: graph missing or not an object");
	r = check_keys(jg, keys, "graph", ei);
	if (r < 0)
		return r;
	in = json_object_get(jg, "input");
	if (!json_is_array(in) || json_array_size(in) != 3)
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: graph.input is not [C,H,W]");
	for (int i = 0; i < 3; i++) {
		json_t *v = json_array_get(in, i);

		if (!json_is_integer(v) || json_integer_value(v) <= 0 ||
		    json_integer_value(v) > INT_MAX)
			return mime_errinfo_set(
				ei, MIME_EFORMAT,
				"manifest: graph.input[%d] is not a positive integer", i);
		dims[i] = (int)json_integer_value(v);
	}
	g->input = (struct mime_shape){dims[0], dims[1], dims[2]};

	layers = json_object_get(jg, "layers");
	if (!json_is_array(layers))
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: graph.layers is not a list");
	if (json_array_size(layers) == 0 || json_array_size(layers) > MIME_MAX_LAYERS)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: graph.layers has %zu entries (1..%d allowed)",
		                        json_array_size(layers), MIME_MAX_LAYERS);
	g->n_layers = (int)json_array_size(layers);
	for (int i = 0; i < g->n_layers; i++) {
		r = parse_layer(json_array_get(layers, i), i, &g->layers[i], ei);
		if (r < 0)
			return r;
	}
	r = mime_graph_check(g, NULL, ei);
	if (r < 0 && ei) {
		char msg[sizeof(ei->msg)];

		snprintf(msg, sizeof(msg), "%s", ei->msg);
		mime_errinfo_set(ei, r, "manifest: %s", msg);
	}
	return r;
}

static int parse_floats(json_t *arr, int n, float *ret, const char *where, const char *key,
                        struct mime_errinfo *ei)
{
	if (!json_is_array(arr) || json_array_size(arr) != (size_t)n)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.%s is not a list of %d numbers (one per "
		                        "channel)",
		                        where, key, n);
	for (int i = 0; i < n; i++) {
		json_t *v = json_array_get(arr, i);
		double d;

		if (!json_is_number(v))
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "manifest: %s.%s[%d] is not a number", where, key,
			                        i);
		d = json_number_value(v);
		if (!isfinite(d) || fabs(d) > 1e30)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "manifest: %s.%s[%d] out of range", where, key, i);
		ret[i] = (float)d;
	}
	return 0;
}

static int parse_input(json_t *ji, const struct mime_graph *g, struct mime_input_spec *s,
                       const char *task_where, struct mime_errinfo *ei)
{
	static const char *const keys[] = {"channels", "height", "width", "resize", "fit",
	                                   "invert",   "mean",   "std",   NULL};
	char where[64];
	json_t *v;
	int r;

	snprintf(where, sizeof(where), "%s.input", task_where);
	if (!json_is_object(ji))
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: %s missing or not an object",
		                        where);
	r = check_keys(ji, keys, where, ei);
	if (r < 0)
		return r;
	mime_input_spec_default(g, s);
	r = get_int(ji, "channels", 1, 1, INT_MAX, &s->channels, where, ei);
	if (r == 0)
		r = get_int(ji, "height", 1, 1, INT_MAX, &s->height, where, ei);
	if (r == 0)
		r = get_int(ji, "width", 1, 1, INT_MAX, &s->width, where, ei);
	if (r < 0)
		return r;
	if (s->channels != g->input.c)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.channels %d != graph input %d", where,
		                        s->channels, g->input.c);
	if (s->height != g->input.h)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.height %d != graph input %d", where,
		                        s->height, g->input.h);
	if (s->width != g->input.w)
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: %s.width %d != graph input %d",
		                        where, s->width, g->input.w);
	if (s->channels != 1 && s->channels != 3)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.channels %d: images have 1 or 3 channels",
		                        where, s->channels);

	v = json_object_get(ji, "resize");
	if (v && (!json_is_string(v) || strcmp(json_string_value(v), "bilinear") != 0))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.resize must be \"bilinear\"", where);
	v = json_object_get(ji, "fit");
	if (v) {
		const char *f = json_string_value(v);

		if (f && strcmp(f, "stretch") == 0)
			s->fit = MIME_FIT_STRETCH;
		else if (f && strcmp(f, "pad") == 0)
			s->fit = MIME_FIT_PAD;
		else
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "manifest: %s.fit must be \"stretch\" or \"pad\"",
			                        where);
	}
	v = json_object_get(ji, "invert");
	if (v) {
		if (!json_is_boolean(v))
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "manifest: %s.invert is not a boolean", where);
		s->invert = json_is_true(v);
	}
	v = json_object_get(ji, "mean");
	if (v) {
		r = parse_floats(v, s->channels, s->mean, where, "mean", ei);
		if (r < 0)
			return r;
	}
	v = json_object_get(ji, "std");
	if (v) {
		r = parse_floats(v, s->channels, s->std, where, "std", ei);
		if (r < 0)
			return r;
	}
	for (int c = 0; c < s->channels; c++)
		if (s->std[c] == 0.0f)
			return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: %s.std[%d] is 0",
			                        where, c);
	return 0;
}

/* The keys of obj not listed in known (NULL-terminated), serialised into *ret_json (left
 * NULL when there are none): what a parser keeps of keys it does not read. */
static int unknown_keys(json_t *obj, const char *const *known, char **ret_json)
{
	json_t *extra = json_object(), *v;
	const char *key;
	int is_known, r = 0;

	if (!extra)
		return -ENOMEM;
	json_object_foreach(obj, key, v)
	{
		is_known = 0;
		for (int k = 0; known[k]; k++)
			is_known |= strcmp(key, known[k]) == 0;
		if (!is_known && json_object_set(extra, key, v) < 0) {
			r = -ENOMEM;
			goto out;
		}
	}
	if (json_object_size(extra) > 0) {
		*ret_json = json_dumps(extra, JSON_COMPACT | JSON_PRESERVE_ORDER);
		if (!*ret_json)
			r = -ENOMEM;
	}
out:
	json_decref(extra);
	return r;
}

/* Keeps every key of task jt that parse_task() does not read in t->extra_json. */
static int parse_task_extra(json_t *jt, struct mime_task_spec *t)
{
	static const char *const known[] = {"name",       "classes",  "n_classes", "input",
	                                    "thresholds", "accuracy", NULL};

	return unknown_keys(jt, known, &t->extra_json);
}

static int parse_task(json_t *jt, int i, const struct mime_graph *g, struct mime_task_spec *t,
                      struct mime_errinfo *ei)
{
	char where[32];
	json_t *v, *classes;
	int r;

	snprintf(where, sizeof(where), "tasks[%d]", i);
	t->accuracy = -1.0;
	if (!json_is_object(jt))
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: %s is not an object", where);
	v = json_object_get(jt, "name");
	if (!json_is_string(v))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.name missing or not a string", where);
	if (!name_ok(json_string_value(v)))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.name '%.64s' is not 1..%d characters of "
		                        "[A-Za-z0-9_.-]",
		                        where, json_string_value(v), MIME_NAME_MAX - 1);
	strcpy(t->name, json_string_value(v));

	classes = json_object_get(jt, "classes");
	if (!json_is_array(classes))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.classes missing or not a list", where);
	if (json_array_size(classes) < 1 || json_array_size(classes) > MIME_MAX_CLASSES)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.classes has %zu names (1..%d allowed)", where,
		                        json_array_size(classes), MIME_MAX_CLASSES);
	v = json_object_get(jt, "n_classes");
	if (v &&
	    (!json_is_integer(v) || json_integer_value(v) != (json_int_t)json_array_size(classes)))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.n_classes does not match %zu class names",
		                        where, json_array_size(classes));
	t->class_names = calloc(json_array_size(classes), sizeof(char *));
	if (!t->class_names)
		return -ENOMEM;
	for (size_t k = 0; k < json_array_size(classes); k++) {
		const char *s = json_string_value(json_array_get(classes, k));

		if (!s)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "manifest: %s.classes[%zu] is not a string", where,
			                        k);
		t->class_names[k] = strdup(s);
		if (!t->class_names[k])
			return -ENOMEM;
		t->n_classes = (int)k + 1; /* what mime_manifest_free() releases */
	}

	r = parse_input(json_object_get(jt, "input"), g, &t->input, where, ei);
	if (r < 0)
		return r;

	t->thresholds = MIME_THR_NONE;
	v = json_object_get(jt, "thresholds");
	if (v) {
		const char *s = json_string_value(v);

		if (s && strcmp(s, "none") == 0)
			t->thresholds = MIME_THR_NONE;
		else if (s && strcmp(s, "element") == 0)
			t->thresholds = MIME_THR_ELEMENT;
		else if (s && strcmp(s, "channel") == 0)
			t->thresholds = MIME_THR_CHANNEL;
		else
			return mime_errinfo_set(
				ei, MIME_EFORMAT,
				"manifest: %s.thresholds must be \"none\", \"element\" "
				"or \"channel\"",
				where);
	}
	v = json_object_get(jt, "accuracy");
	if (v) {
		if (!json_is_number(v) || json_number_value(v) < 0.0 || json_number_value(v) > 1.0)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "manifest: %s.accuracy is not a fraction in [0,1]",
			                        where);
		t->accuracy = json_number_value(v);
	}
	v = json_object_get(jt, "sparsity");
	if (v && !json_is_object(v))
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: %s.sparsity is not an object",
		                        where);
	return parse_task_extra(jt, t);
}

/* Keeps every key of phase jp that parse_phase() does not read in p->extra_json. */
static int parse_phase_extra(json_t *jp, struct mime_phase_spec *p)
{
	static const char *const known[] = {"name",         "kernels",        "wuv",
	                                    "fine",         "accuracy",       "latency_ms",
	                                    "memory_bytes", "nonzero_params", NULL};

	return unknown_keys(jp, known, &p->extra_json);
}

/* An optional non-negative number (measured value) into *ret_d or *ret_i. */
static int get_measured(json_t *jp, const char *key, const char *where, double *ret_d,
                        int64_t *ret_i, struct mime_errinfo *ei)
{
	json_t *v = json_object_get(jp, key);

	if (!v)
		return 0;
	if (ret_i) {
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "manifest: %s.%s is not a non-negative integer",
			                        where, key);
		*ret_i = json_integer_value(v);
		return 0;
	}
	if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < 0)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.%s is not a non-negative number", where, key);
	*ret_d = json_number_value(v);
	return 0;
}

static int layer_index(const struct mime_graph *g, const char *name)
{
	for (int i = 0; i < g->n_layers; i++)
		if (strcmp(g->layers[i].name, name) == 0)
			return i;
	return -1;
}

static int parse_phase(json_t *jp, int i, const struct mime_graph *g, struct mime_phase_spec *p,
                       struct mime_errinfo *ei)
{
	char where[32];
	const char *key;
	json_t *v, *kernels, *fine;
	int r;

	snprintf(where, sizeof(where), "phases[%d]", i);
	p->accuracy = p->latency_ms = -1.0;
	p->memory_bytes = p->nonzero_params = -1;
	if (!json_is_object(jp))
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: %s is not an object", where);
	v = json_object_get(jp, "name");
	if (!json_is_string(v))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.name missing or not a string", where);
	if (!name_ok(json_string_value(v)))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.name '%.64s' is not 1..%d characters of "
		                        "[A-Za-z0-9_.-]",
		                        where, json_string_value(v), MIME_NAME_MAX - 1);
	strcpy(p->name, json_string_value(v));

	r = get_int(jp, "wuv", 1, 1, 16, &p->wuv, where, ei);
	if (r < 0)
		return r;
	if (p->wuv != 16 && p->wuv != 8 && p->wuv != 4)
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.wuv %d is not 16, 8 or 4 (floats per SIMD "
		                        "vector)",
		                        where, p->wuv);

	kernels = json_object_get(jp, "kernels");
	if (!json_is_object(kernels))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.kernels missing or not an object", where);
	json_object_foreach(kernels, key, v)
	{
		int li = layer_index(g, key);
		const struct mime_layer_spec *l = li >= 0 ? &g->layers[li] : NULL;

		if (!l)
			return mime_errinfo_set(
				ei, MIME_EFORMAT,
				"manifest: %s.kernels: no layer '%.64s' in the graph", where, key);
		if (l->kind != MIME_LAYER_CONV && l->kind != MIME_LAYER_FC)
			return mime_errinfo_set(
				ei, MIME_EFORMAT,
				"manifest: %s.kernels.%s: a %s layer has no kernels", where, key,
				mime_layer_kind_name(l->kind));
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > l->out)
			return mime_errinfo_set(
				ei, MIME_EFORMAT,
				"manifest: %s.kernels.%s is not an integer in 1..%d", where, key,
				l->out);
		p->k_active[li] = (int)json_integer_value(v);
	}
	for (int li = 0; li < g->n_layers; li++)
		if ((g->layers[li].kind == MIME_LAYER_CONV ||
		     g->layers[li].kind == MIME_LAYER_FC) &&
		    p->k_active[li] == 0)
			return mime_errinfo_set(
				ei, MIME_EFORMAT,
				"manifest: %s.kernels.%s missing (every conv and fc "
				"layer needs one)",
				where, g->layers[li].name);

	fine = json_object_get(jp, "fine");
	if (fine && !json_is_array(fine))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.fine is not a list of layer names", where);
	for (size_t k = 0; fine && k < json_array_size(fine); k++) {
		const char *s = json_string_value(json_array_get(fine, k));
		int li = s ? layer_index(g, s) : -1;

		if (!s)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "manifest: %s.fine[%zu] is not a string", where, k);
		if (li < 0)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "manifest: %s.fine[%zu]: no layer '%.64s' in the "
			                        "graph",
			                        where, k, s);
		if (g->layers[li].kind != MIME_LAYER_CONV)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "manifest: %s.fine[%zu]: '%s' is a %s layer; "
			                        "fine-grain masks are for conv layers only",
			                        where, k, s,
			                        mime_layer_kind_name(g->layers[li].kind));
		if (p->fine[li])
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "manifest: %s.fine[%zu]: '%s' listed twice", where,
			                        k, s);
		p->fine[li] = 1;
	}

	v = json_object_get(jp, "accuracy");
	if (v && (!json_is_number(v) || json_number_value(v) < 0.0 || json_number_value(v) > 1.0))
		return mime_errinfo_set(ei, MIME_EFORMAT,
		                        "manifest: %s.accuracy is not a fraction in [0,1]", where);
	if (v)
		p->accuracy = json_number_value(v);
	r = get_measured(jp, "latency_ms", where, &p->latency_ms, NULL, ei);
	if (r == 0)
		r = get_measured(jp, "memory_bytes", where, NULL, &p->memory_bytes, ei);
	if (r == 0)
		r = get_measured(jp, "nonzero_params", where, NULL, &p->nonzero_params, ei);
	if (r < 0)
		return r;
	return parse_phase_extra(jp, p);
}

/* Uniqueness and nesting: the checks that need more than one phase, and that a caller-built
 * manifest must pass too. */
static int check_phases(const struct mime_manifest *m, struct mime_errinfo *ei)
{
	const struct mime_graph *g = &m->graph;

	if (m->n_phases < 0 || m->n_phases > MIME_MAX_PHASES || (m->n_phases && !m->phases))
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: %d phases (at most %d)",
		                        m->n_phases, MIME_MAX_PHASES);
	for (int p = 0; p < m->n_phases; p++) {
		const struct mime_phase_spec *ph = &m->phases[p];

		if (!name_ok(ph->name))
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "manifest: phases[%d].name '%.64s' is not 1..%d "
			                        "characters of [A-Za-z0-9_.-]",
			                        p, ph->name, MIME_NAME_MAX - 1);
		if (ph->wuv != 16 && ph->wuv != 8 && ph->wuv != 4)
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "manifest: phases[%d].wuv %d is not 16, 8 or 4", p,
			                        ph->wuv);
		for (int q = 0; q < p; q++)
			if (strcmp(m->phases[q].name, ph->name) == 0)
				return mime_errinfo_set(
					ei, MIME_EFORMAT,
					"manifest: phases[%d].name '%s' used twice (phases[%d])", p,
					ph->name, q);
		for (int li = 0; li < g->n_layers; li++) {
			const struct mime_layer_spec *l = &g->layers[li];
			int has_k = l->kind == MIME_LAYER_CONV || l->kind == MIME_LAYER_FC;

			if (has_k && (ph->k_active[li] < 1 || ph->k_active[li] > l->out))
				return mime_errinfo_set(ei, MIME_EFORMAT,
				                        "manifest: phases[%d].kernels.%s %d not in "
				                        "1..%d",
				                        p, l->name, ph->k_active[li], l->out);
			if (!has_k && ph->k_active[li] != 0)
				return mime_errinfo_set(
					ei, MIME_EFORMAT,
					"manifest: phases[%d].kernels.%s: a %s layer "
					"has no kernels",
					p, l->name, mime_layer_kind_name(l->kind));
			if (ph->fine[li] && l->kind != MIME_LAYER_CONV)
				return mime_errinfo_set(
					ei, MIME_EFORMAT,
					"manifest: phases[%d].fine: '%s' is not a conv "
					"layer",
					p, l->name);
			if (p > 0 && ph->k_active[li] < m->phases[p - 1].k_active[li])
				return mime_errinfo_set(ei, MIME_EFORMAT,
				                        "manifest: phases[%d].kernels.%s %d < %d "
				                        "of phases[%d]: phases "
				                        "must be nested (smallest first)",
				                        p, l->name, ph->k_active[li],
				                        m->phases[p - 1].k_active[li], p - 1);
		}
	}
	return 0;
}

int mime_manifest_check_phases(const struct mime_manifest *m, struct mime_errinfo *ei)
{
	return check_phases(m, ei);
}

static int parse_phases(json_t *root, struct mime_manifest *m, struct mime_errinfo *ei)
{
	json_t *phases = json_object_get(root, "phases");
	int r;

	if (!phases)
		return 0;
	if (!json_is_array(phases))
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: phases is not a list");
	if (json_array_size(phases) > MIME_MAX_PHASES)
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: %zu phases (at most %d)",
		                        json_array_size(phases), MIME_MAX_PHASES);
	if (json_array_size(phases) == 0)
		return 0;
	m->phases = calloc(json_array_size(phases), sizeof(*m->phases));
	if (!m->phases)
		return -ENOMEM;
	for (size_t i = 0; i < json_array_size(phases); i++) {
		m->n_phases = (int)i + 1; /* so that free() sees a half-built phase */
		r = parse_phase(json_array_get(phases, i), (int)i, &m->graph, &m->phases[i], ei);
		if (r < 0)
			return r;
	}
	return check_phases(m, ei);
}

static int parse_root(json_t *root, struct mime_manifest *m, struct mime_errinfo *ei)
{
	json_t *v, *tasks;
	int r;

	if (!json_is_object(root))
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: not a JSON object");
	v = json_object_get(root, "format");
	if (!json_is_string(v) || strcmp(json_string_value(v), MANIFEST_FORMAT) != 0)
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: format is not \"%s\"",
		                        MANIFEST_FORMAT);
	v = json_object_get(root, "version");
	if (!json_is_integer(v))
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: version missing");
	if (json_integer_value(v) != MANIFEST_VERSION)
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: version %lld unsupported (%d)",
		                        (long long)json_integer_value(v), MANIFEST_VERSION);
	r = parse_graph(json_object_get(root, "graph"), &m->graph, ei);
	if (r < 0)
		return r;

	tasks = json_object_get(root, "tasks");
	if (!tasks)
		tasks = json_array(); /* a bundle may hold only a parent */
	else
		json_incref(tasks);
	if (!tasks)
		return -ENOMEM;
	if (!json_is_array(tasks)) {
		r = mime_errinfo_set(ei, MIME_EFORMAT, "manifest: tasks is not a list");
		goto out_tasks;
	}
	if (json_array_size(tasks) > MIME_MAX_TASKS) {
		r = mime_errinfo_set(ei, MIME_EFORMAT, "manifest: %zu tasks (at most %d)",
		                     json_array_size(tasks), MIME_MAX_TASKS);
		goto out_tasks;
	}
	if (json_array_size(tasks) > 0) {
		m->tasks = calloc(json_array_size(tasks), sizeof(*m->tasks));
		if (!m->tasks) {
			r = -ENOMEM;
			goto out_tasks;
		}
	}
	for (size_t i = 0; i < json_array_size(tasks); i++) {
		m->n_tasks = (int)i + 1; /* so that free() sees a half-built task */
		r = parse_task(json_array_get(tasks, i), (int)i, &m->graph, &m->tasks[i], ei);
		if (r < 0)
			goto out_tasks;
		for (size_t j = 0; j < i; j++)
			if (strcmp(m->tasks[j].name, m->tasks[i].name) == 0) {
				r = mime_errinfo_set(
					ei, MIME_EFORMAT,
					"manifest: tasks[%zu].name '%s' used twice (tasks[%zu])", i,
					m->tasks[i].name, j);
				goto out_tasks;
			}
	}

	r = parse_phases(root, m, ei);
	if (r < 0)
		goto out_tasks;

	v = json_object_get(root, "provenance");
	if (v) {
		if (!json_is_object(v)) {
			r = mime_errinfo_set(ei, MIME_EFORMAT,
			                     "manifest: provenance is not an object");
			goto out_tasks;
		}
		m->provenance_json = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
		if (!m->provenance_json) {
			r = -ENOMEM;
			goto out_tasks;
		}
	}
	r = 0;
out_tasks:
	json_decref(tasks);
	return r;
}

int mime_manifest_parse(const char *json, size_t len, struct mime_manifest *ret_manifest,
                        struct mime_errinfo *ei)
{
	struct mime_manifest m = {0};
	json_error_t jerr;
	json_t *root;
	int r;

	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return mime_errinfo_set(ei, MIME_EFORMAT, "manifest: invalid JSON at %d:%d: %s",
		                        jerr.line, jerr.column, jerr.text);
	r = parse_root(root, &m, ei);
	if (r < 0)
		goto out_free;
	m.json = strndup(json, len);
	if (!m.json) {
		r = -ENOMEM;
		goto out_free;
	}
	json_decref(root);
	*ret_manifest = m;
	return 0;

out_free:
	mime_manifest_free(&m);
	json_decref(root);
	return r;
}

static json_t *format_layer(const struct mime_layer_spec *l)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	json_object_set_new(o, "name", json_string(l->name));
	json_object_set_new(o, "kind", json_string(mime_layer_kind_name(l->kind)));
	switch (l->kind) {
	case MIME_LAYER_CONV:
		json_object_set_new(o, "out", json_integer(l->out));
		json_object_set_new(o, "kernel", json_integer(l->kernel));
		json_object_set_new(o, "stride", json_integer(l->stride));
		json_object_set_new(o, "pad", json_integer(l->pad));
		break;
	case MIME_LAYER_MAXPOOL:
		json_object_set_new(o, "kernel", json_integer(l->kernel));
		json_object_set_new(o, "stride", json_integer(l->stride));
		break;
	case MIME_LAYER_FC:
		json_object_set_new(o, "out", json_integer(l->out));
		break;
	case MIME_LAYER_FLATTEN:
		break;
	}
	if (l->kind == MIME_LAYER_CONV || l->kind == MIME_LAYER_FC)
		json_object_set_new(o, "act",
		                    json_string(l->act == MIME_ACT_RELU ? "relu" : "none"));
	return o;
}

static json_t *format_floats(const float *v, int n)
{
	json_t *a = json_array();

	for (int i = 0; a && i < n; i++)
		json_array_append_new(a, json_real(v[i]));
	return a;
}

static json_t *format_task(const struct mime_task_spec *t)
{
	static const char *const thr[] = {"none", "element", "channel"};
	const struct mime_input_spec *s = &t->input;
	json_t *o = json_object(), *classes = json_array(), *in = json_object();

	if (!o || !classes || !in) {
		json_decref(o);
		json_decref(classes);
		json_decref(in);
		return NULL;
	}
	json_object_set_new(o, "name", json_string(t->name));
	for (int k = 0; k < t->n_classes; k++)
		json_array_append_new(classes, json_string(t->class_names[k]));
	json_object_set_new(o, "classes", classes);
	json_object_set_new(in, "channels", json_integer(s->channels));
	json_object_set_new(in, "height", json_integer(s->height));
	json_object_set_new(in, "width", json_integer(s->width));
	json_object_set_new(in, "resize", json_string("bilinear"));
	json_object_set_new(in, "fit", json_string(s->fit == MIME_FIT_PAD ? "pad" : "stretch"));
	json_object_set_new(in, "invert", json_boolean(s->invert));
	json_object_set_new(in, "mean", format_floats(s->mean, s->channels > 3 ? 3 : s->channels));
	json_object_set_new(in, "std", format_floats(s->std, s->channels > 3 ? 3 : s->channels));
	json_object_set_new(o, "input", in);
	json_object_set_new(o, "thresholds",
	                    json_string((unsigned)t->thresholds < 3 ? thr[t->thresholds] : "?"));
	if (t->accuracy >= 0.0)
		json_object_set_new(o, "accuracy", json_real(t->accuracy));
	if (t->extra_json) {
		json_t *extra = json_loads(t->extra_json, 0, NULL);

		if (!json_is_object(extra)) { /* a caller's mistake: refuse rather than drop it */
			json_decref(extra);
			json_decref(o);
			return NULL;
		}
		/* the keys above win: extra cannot redefine what the network computes */
		json_object_update_missing(o, extra);
		json_decref(extra);
	}
	return o;
}

static json_t *format_phase(const struct mime_graph *g, const struct mime_phase_spec *p)
{
	json_t *o = json_object(), *kernels = json_object(), *fine = json_array();

	if (!o || !kernels || !fine) {
		json_decref(o);
		json_decref(kernels);
		json_decref(fine);
		return NULL;
	}
	json_object_set_new(o, "name", json_string(p->name));
	for (int i = 0; i < g->n_layers; i++) {
		if (g->layers[i].kind == MIME_LAYER_CONV || g->layers[i].kind == MIME_LAYER_FC)
			json_object_set_new(kernels, g->layers[i].name,
			                    json_integer(p->k_active[i]));
		if (p->fine[i])
			json_array_append_new(fine, json_string(g->layers[i].name));
	}
	json_object_set_new(o, "kernels", kernels);
	json_object_set_new(o, "wuv", json_integer(p->wuv));
	json_object_set_new(o, "fine", fine);
	if (p->accuracy >= 0.0)
		json_object_set_new(o, "accuracy", json_real(p->accuracy));
	if (p->latency_ms >= 0.0)
		json_object_set_new(o, "latency_ms", json_real(p->latency_ms));
	if (p->memory_bytes >= 0)
		json_object_set_new(o, "memory_bytes", json_integer(p->memory_bytes));
	if (p->nonzero_params >= 0)
		json_object_set_new(o, "nonzero_params", json_integer(p->nonzero_params));
	if (p->extra_json) {
		json_t *extra = json_loads(p->extra_json, 0, NULL);

		if (!json_is_object(extra)) { /* a caller's mistake: refuse rather than drop it */
			json_decref(extra);
			json_decref(o);
			return NULL;
		}
		json_object_update_missing(o, extra);
		json_decref(extra);
	}
	return o;
}

char *mime_manifest_format(const struct mime_manifest *m)
{
	json_t *root = NULL, *graph, *layers, *input, *tasks, *prov;
	char *s = NULL;

	root = json_object();
	graph = json_object();
	layers = json_array();
	input = json_array();
	tasks = json_array();
	if (!root || !graph || !layers || !input || !tasks) {
		json_decref(graph);
		json_decref(layers);
		json_decref(input);
		json_decref(tasks);
		goto out;
	}
	json_object_set_new(root, "format", json_string(MANIFEST_FORMAT));
	json_object_set_new(root, "version", json_integer(MANIFEST_VERSION));
	json_array_append_new(input, json_integer(m->graph.input.c));
	json_array_append_new(input, json_integer(m->graph.input.h));
	json_array_append_new(input, json_integer(m->graph.input.w));
	json_object_set_new(graph, "input", input);
	for (int i = 0; i < m->graph.n_layers && i < MIME_MAX_LAYERS; i++)
		json_array_append_new(layers, format_layer(&m->graph.layers[i]));
	json_object_set_new(graph, "layers", layers);
	json_object_set_new(root, "graph", graph);
	for (int i = 0; i < m->n_tasks; i++)
		json_array_append_new(tasks, format_task(&m->tasks[i]));
	json_object_set_new(root, "tasks", tasks);
	if (m->n_phases > 0) {
		json_t *phases = json_array();

		if (!phases || m->n_phases > MIME_MAX_PHASES || !m->phases) {
			json_decref(phases);
			goto out;
		}
		for (int p = 0; p < m->n_phases; p++)
			json_array_append_new(phases, format_phase(&m->graph, &m->phases[p]));
		if (json_array_size(phases) != (size_t)m->n_phases) {
			json_decref(phases);
			goto out;
		}
		json_object_set_new(root, "phases", phases);
	}
	if (m->provenance_json) {
		prov = json_loads(m->provenance_json, 0, NULL);
		if (!json_is_object(prov)) { /* a caller's mistake: refuse rather than drop it */
			json_decref(prov);
			goto out;
		}
		json_object_set_new(root, "provenance", prov);
	}
	/* json_*_append_new() and _set_new() fail quietly on NULL values; count what landed. */
	if (json_array_size(layers) != (size_t)m->graph.n_layers ||
	    json_array_size(tasks) != (size_t)m->n_tasks)
		goto out;
	s = json_dumps(root, JSON_PRESERVE_ORDER | JSON_COMPACT | JSON_REAL_PRECISION(9));
out:
	json_decref(root);
	return s;
}

void mime_manifest_free(struct mime_manifest *m)
{
	if (!m)
		return;
	for (int i = 0; m->tasks && i < m->n_tasks; i++) {
		for (int k = 0; m->tasks[i].class_names && k < m->tasks[i].n_classes; k++)
			free(m->tasks[i].class_names[k]);
		free(m->tasks[i].class_names);
		free(m->tasks[i].extra_json);
	}
	free(m->tasks);
	for (int p = 0; m->phases && p < m->n_phases; p++)
		free(m->phases[p].extra_json);
	free(m->phases);
	free(m->provenance_json);
	free(m->json);
	memset(m, 0, sizeof(*m));
}

int mime_manifest_task(const struct mime_manifest *m, const char *name)
{
	for (int i = 0; i < m->n_tasks; i++)
		if (strcmp(m->tasks[i].name, name) == 0)
			return i;
	return MIME_ENOTASK;
}

void mime_input_spec_default(const struct mime_graph *g, struct mime_input_spec *ret_spec)
{
	memset(ret_spec, 0, sizeof(*ret_spec));
	ret_spec->channels = g->input.c;
	ret_spec->height = g->input.h;
	ret_spec->width = g->input.w;
	ret_spec->fit = MIME_FIT_STRETCH;
	ret_spec->invert = 0;
	for (int c = 0; c < 3; c++) {
		ret_spec->mean[c] = 0.0f;
		ret_spec->std[c] = 1.0f;
	}
}
