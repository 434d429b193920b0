// SPDX-License-Identifier: MIT
/* optim -- see optim.h. */
#include "train/optim.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct mimetrain_optim {
	struct mimetrain_optim_config cfg;
	struct mimetrain_param *params;
	int n_params;
	long step;
	float **m, **v; /* per param; v only for Adam */
};

int mimetrain_optim_create(const struct mimetrain_optim_config *cfg, struct mimetrain_param *params,
                           int n_params, struct mimetrain_optim **ret_optim,
                           struct mime_errinfo *ei)
{
	struct mimetrain_optim *o;

	if (!(cfg->lr > 0) || cfg->momentum < 0 || cfg->momentum >= 1 || cfg->weight_decay < 0 ||
	    (cfg->kind != MIMETRAIN_SGD && cfg->kind != MIMETRAIN_ADAM) ||
	    (cfg->schedule == MIMETRAIN_LR_COSINE && cfg->total_steps <= 0) ||
	    (cfg->schedule == MIMETRAIN_LR_STEP && cfg->step_every <= 0) || cfg->warmup_steps < 0)
		return mime_errinfo_set(ei, MIME_EINVAL, "optimizer: bad configuration");
	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->cfg = *cfg;
	o->params = params;
	o->n_params = n_params;
	o->m = calloc(n_params, sizeof(*o->m));
	o->v = calloc(n_params, sizeof(*o->v));
	if (!o->m || !o->v)
		goto out_nomem;
	for (int i = 0; i < n_params; i++) {
		o->m[i] = calloc(params[i].n, sizeof(float));
		if (!o->m[i])
			goto out_nomem;
		if (cfg->kind == MIMETRAIN_ADAM) {
			o->v[i] = calloc(params[i].n, sizeof(float));
			if (!o->v[i])
				goto out_nomem;
		}
	}
	*ret_optim = o;
	return 0;

out_nomem:
	mimetrain_optim_destroy(o);
	return -ENOMEM;
}

void mimetrain_optim_destroy(struct mimetrain_optim *o)
{
	if (!o)
		return;
	for (int i = 0; i < o->n_params; i++) {
		if (o->m)
			free(o->m[i]);
		if (o->v)
			free(o->v[i]);
	}
	free(o->m);
	free(o->v);
	free(o);
}

float mimetrain_optim_lr(const struct mimetrain_optim_config *cfg, long step)
{
	double lr = cfg->lr;

	if (step < cfg->warmup_steps)
		return (float)(lr * (double)(step + 1) / (double)cfg->warmup_steps);
	switch (cfg->schedule) {
	case MIMETRAIN_LR_CONSTANT:
		break;
	case MIMETRAIN_LR_COSINE: {
		long span = cfg->total_steps - cfg->warmup_steps;
		double t = span > 0 ? (double)(step - cfg->warmup_steps) / (double)span : 1.0;

		if (t > 1)
			t = 1;
		lr = cfg->lr_min + 0.5 * (cfg->lr - cfg->lr_min) * (1 + cos(M_PI * t));
		break;
	}
	case MIMETRAIN_LR_STEP:
		lr *= pow(cfg->step_gamma, (double)((step - cfg->warmup_steps) / cfg->step_every));
		break;
	}
	return (float)lr;
}

float mimetrain_optim_step(struct mimetrain_optim *o)
{
	const struct mimetrain_optim_config *c = &o->cfg;
	const float lr = mimetrain_optim_lr(c, o->step);
	const float mu = c->momentum;

	o->step++;
	for (int i = 0; i < o->n_params; i++) {
		const struct mimetrain_param *p = &o->params[i];
		const float wd = p->decay ? c->weight_decay : 0.0f;
		float *m = o->m[i], *w = p->w;
		const float *g = p->g;

		if (c->kind == MIMETRAIN_SGD) {
			for (size_t j = 0; j < p->n; j++) {
				float gj = g[j] + wd * w[j];

				m[j] = mu * m[j] + gj;
				w[j] -= lr * (c->nesterov ? gj + mu * m[j] : m[j]);
			}
		} else {
			const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
			const float c1 = (float)(1.0 - pow(b1, (double)o->step));
			const float c2 = (float)(1.0 - pow(b2, (double)o->step));
			float *v = o->v[i];

			for (size_t j = 0; j < p->n; j++) {
				float gj = g[j] + wd * w[j];

				m[j] = b1 * m[j] + (1 - b1) * gj;
				v[j] = b2 * v[j] + (1 - b2) * gj * gj;
				w[j] -= lr * (m[j] / c1) / (sqrtf(v[j] / c2) + eps);
			}
		}
	}
	return lr;
}

long mimetrain_optim_steps(const struct mimetrain_optim *o)
{
	return o->step;
}

int mimetrain_optim_save(const struct mimetrain_optim *o, FILE *f)
{
	int64_t step = o->step;

	if (fwrite(&step, sizeof(step), 1, f) != 1)
		return -EIO;
	for (int i = 0; i < o->n_params; i++) {
		size_t n = o->params[i].n;

		if (fwrite(o->m[i], sizeof(float), n, f) != n)
			return -EIO;
		if (o->v[i] && fwrite(o->v[i], sizeof(float), n, f) != n)
			return -EIO;
	}
	return 0;
}

int mimetrain_optim_load(struct mimetrain_optim *o, FILE *f, struct mime_errinfo *ei)
{
	int64_t step;

	if (fread(&step, sizeof(step), 1, f) != 1 || step < 0)
		return mime_errinfo_set(ei, MIME_EFORMAT, "checkpoint: optimizer state truncated");
	o->step = step;
	for (int i = 0; i < o->n_params; i++) {
		size_t n = o->params[i].n;

		if (fread(o->m[i], sizeof(float), n, f) != n ||
		    (o->v[i] && fread(o->v[i], sizeof(float), n, f) != n))
			return mime_errinfo_set(ei, MIME_EFORMAT,
			                        "checkpoint: optimizer state truncated");
	}
	return 0;
}
