// SPDX-License-Identifier: MIT
/* graph -- see graph.h. */
#include "lib/graph.h"

#include <string.h>

static const char *const kind_names[] = {
	[MIME_LAYER_CONV] = "conv",
	[MIME_LAYER_MAXPOOL] = "maxpool",
	[MIME_LAYER_FLATTEN] = "flatten",
	[MIME_LAYER_FC] = "fc",
};

const char *mime_layer_kind_name(enum mime_layer_kind kind)
{
	if ((unsigned)kind >= sizeof(kind_names) / sizeof(kind_names[0]))
		return "?";
	return kind_names[kind];
}

int mime_layer_kind_parse(const char *s, enum mime_layer_kind *ret_kind)
{
	for (unsigned i = 0; i < sizeof(kind_names) / sizeof(kind_names[0]); i++)
		if (strcmp(s, kind_names[i]) == 0) {
			*ret_kind = (enum mime_layer_kind)i;
			return 0;
		}
	return MIME_EGRAPH;
}

/* Limits keep every product below 2^31 per sample and refuse absurd graphs early. */
#define DIM_MAX 4096
#define CH_MAX  65536

int mime_graph_check(const struct mime_graph *g, struct mime_shape *ret_shapes,
                     struct mime_errinfo *ei)
{
	struct mime_shape s = g->input;

	if (s.c <= 0 || s.h <= 0 || s.w <= 0 || s.c > CH_MAX || s.h > DIM_MAX || s.w > DIM_MAX)
		return mime_errinfo_set(ei, MIME_EGRAPH, "graph: bad input shape %dx%dx%d", s.c,
		                        s.h, s.w);
	if (g->n_layers <= 0 || g->n_layers > MIME_MAX_LAYERS)
		return mime_errinfo_set(ei, MIME_EGRAPH, "graph: %d layers (1..%d allowed)",
		                        g->n_layers, MIME_MAX_LAYERS);
	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];

		if (l->name[0] == '\0' || memchr(l->name, '\0', MIME_NAME_MAX) == NULL)
			return mime_errinfo_set(ei, MIME_EGRAPH, "graph: layer %d has no name", i);
		for (int j = 0; j < i; j++)
			if (strcmp(g->layers[j].name, l->name) == 0)
				return mime_errinfo_set(ei, MIME_EGRAPH,
				                        "graph: layer name '%s' used twice",
				                        l->name);
		switch (l->kind) {
		case MIME_LAYER_CONV:
			if (l->out <= 0 || l->out > CH_MAX || l->kernel <= 0 || l->stride <= 0 ||
			    l->pad < 0 || l->kernel > DIM_MAX || l->pad > DIM_MAX ||
			    l->stride > DIM_MAX)
				return mime_errinfo_set(ei, MIME_EGRAPH,
				                        "graph: layer '%s': bad conv parameters",
				                        l->name);
			if (s.h + 2 * l->pad < l->kernel || s.w + 2 * l->pad < l->kernel)
				return mime_errinfo_set(ei, MIME_EGRAPH,
				                        "graph: layer '%s': kernel %d larger than "
				                        "padded input %dx%d",
				                        l->name, l->kernel, s.h + 2 * l->pad,
				                        s.w + 2 * l->pad);
			s.h = (s.h + 2 * l->pad - l->kernel) / l->stride + 1;
			s.w = (s.w + 2 * l->pad - l->kernel) / l->stride + 1;
			s.c = l->out;
			break;
		case MIME_LAYER_MAXPOOL:
			if (l->kernel <= 0 || l->stride <= 0 || l->kernel > DIM_MAX ||
			    l->stride > DIM_MAX)
				return mime_errinfo_set(ei, MIME_EGRAPH,
				                        "graph: layer '%s': bad pool parameters",
				                        l->name);
			if (s.h < l->kernel || s.w < l->kernel)
				return mime_errinfo_set(
					ei, MIME_EGRAPH,
					"graph: layer '%s': pool %d larger than input "
					"%dx%d",
					l->name, l->kernel, s.h, s.w);
			s.h = (s.h - l->kernel) / l->stride + 1;
			s.w = (s.w - l->kernel) / l->stride + 1;
			break;
		case MIME_LAYER_FLATTEN:
			s.c = s.c * s.h * s.w;
			s.h = s.w = 1;
			break;
		case MIME_LAYER_FC:
			if (s.h != 1 || s.w != 1)
				return mime_errinfo_set(ei, MIME_EGRAPH,
				                        "graph: layer '%s': fc needs a flat input "
				                        "(add a flatten layer)",
				                        l->name);
			if (l->out <= 0 || l->out > CH_MAX * 4)
				return mime_errinfo_set(ei, MIME_EGRAPH,
				                        "graph: layer '%s': bad fc width %d",
				                        l->name, l->out);
			s.c = l->out;
			break;
		default:
			return mime_errinfo_set(ei, MIME_EGRAPH, "graph: layer '%s': unknown kind",
			                        l->name);
		}
		if (l->act != MIME_ACT_NONE && l->act != MIME_ACT_RELU)
			return mime_errinfo_set(ei, MIME_EGRAPH,
			                        "graph: layer '%s': bad activation", l->name);
		if (l->act == MIME_ACT_RELU && l->kind != MIME_LAYER_CONV &&
		    l->kind != MIME_LAYER_FC)
			return mime_errinfo_set(ei, MIME_EGRAPH,
			                        "graph: layer '%s': only conv and fc take relu",
			                        l->name);
		if ((long)s.c * s.h * s.w > (1L << 26))
			return mime_errinfo_set(ei, MIME_EGRAPH,
			                        "graph: layer '%s': output too large", l->name);
		if (ret_shapes)
			ret_shapes[i] = s;
	}
	return 0;
}

struct mime_shape mime_graph_output(const struct mime_graph *g)
{
	struct mime_shape shapes[MIME_MAX_LAYERS];

	if (mime_graph_check(g, shapes, NULL) < 0)
		return (struct mime_shape){0, 0, 0};
	return shapes[g->n_layers - 1];
}

int mime_graph_layer_masked(const struct mime_graph *g, int i)
{
	const struct mime_layer_spec *l = &g->layers[i];

	return (l->kind == MIME_LAYER_CONV || l->kind == MIME_LAYER_FC) && l->act == MIME_ACT_RELU;
}

long mime_graph_layer_params(const struct mime_layer_spec *l, const struct mime_shape *in)
{
	switch (l->kind) {
	case MIME_LAYER_CONV:
		return (long)l->out * in->c * l->kernel * l->kernel + l->out;
	case MIME_LAYER_FC:
		return (long)l->out * mime_shape_size(in) + l->out;
	default:
		return 0;
	}
}

long mime_graph_layer_macs(const struct mime_layer_spec *l, const struct mime_shape *in,
                           const struct mime_shape *out)
{
	switch (l->kind) {
	case MIME_LAYER_CONV:
		return (long)out->h * out->w * l->out * in->c * l->kernel * l->kernel;
	case MIME_LAYER_FC:
		return (long)l->out * mime_shape_size(in);
	default:
		return 0;
	}
}
