// SPDX-License-Identifier: MIT
/* energy -- see energy.h; docs/ENERGY.md has the equations. */
#include "lib/energy.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

void mime_energy_hw_default(struct mime_energy_hw *ret_hw)
{
	*ret_hw = (struct mime_energy_hw){
		.technology_nm = 65,
		.word_bits = 16,
		.pe_rows = 32,
		.pe_cols = 32,
		.act_cache_bytes = 156 * 1024,
		.weight_cache_bytes = 156 * 1024,
		.thr_cache_bytes = 156 * 1024,
		.spad_bytes = 512,
		.e_dram = 200,
		.e_cache = 6,
		.e_reg = 2,
		.e_mac = 1,
	};
}

int mime_energy_hw_check(const struct mime_energy_hw *hw, struct mime_errinfo *ei)
{
	const struct {
		const char *name;
		double v;
	} energies[] = {
		{"e_dram", hw->e_dram},
		{"e_cache", hw->e_cache},
		{"e_reg", hw->e_reg},
		{"e_mac", hw->e_mac},
	};

	if (hw->word_bits < 1 || hw->word_bits > 64)
		return mime_errinfo_set(ei, MIME_EINVAL, "word_bits %d outside 1..64",
		                        hw->word_bits);
	if (hw->pe_rows < 1 || hw->pe_cols < 1)
		return mime_errinfo_set(ei, MIME_EINVAL, "PE array %dx%d: needs at least one PE",
		                        hw->pe_rows, hw->pe_cols);
	if (hw->act_cache_bytes <= 0 || hw->weight_cache_bytes <= 0 || hw->thr_cache_bytes <= 0)
		return mime_errinfo_set(ei, MIME_EINVAL, "cache sizes must be positive");
	if (hw->spad_bytes * 8 < 4L * hw->word_bits)
		return mime_errinfo_set(ei, MIME_EINVAL,
		                        "spad of %ld bytes cannot hold x, w, psum and threshold",
		                        hw->spad_bytes);
	for (unsigned i = 0; i < sizeof(energies) / sizeof(energies[0]); i++)
		if (!isfinite(energies[i].v) || energies[i].v < 0)
			return mime_errinfo_set(ei, MIME_EINVAL, "%s must be finite and >= 0",
			                        energies[i].name);
	return 0;
}

/* Share of a layer's n x k weights a fine-grain keep mask [ceil(n / wuv)][k] keeps: each kept
 * group is wuv rows of one column, but the last group row only n - row * wuv rows. */
static double keep_density(const uint8_t *keep, long n, long k, int wuv)
{
	long rows = (n + wuv - 1) / wuv;
	double kept = 0;

	for (long r = 0; r < rows; r++) {
		long height = n - r * wuv < wuv ? n - r * wuv : wuv, groups = 0;

		for (long c = 0; c < k; c++)
			groups += keep[r * k + c] != 0;
		kept += (double)groups * (double)height;
	}
	return kept / ((double)n * (double)k);
}

int mime_energy_net_init_phase(struct mime_energy_net *ret_net, const struct mime_graph *g,
                               enum mime_energy_thr thr, const struct mime_phase *ph,
                               struct mime_errinfo *ei)
{
	struct mime_shape ins[MIME_MAX_LAYERS], outs[MIME_MAX_LAYERS];
	int k_active[MIME_MAX_LAYERS] = {0};
	struct mime_energy_net net = {0};
	int r;

	r = mime_graph_check(g, outs, ei);
	if (r < 0)
		return r;
	for (int i = 0; ph && i < g->n_layers; i++)
		k_active[i] = ph->layer[i].k_active;
	r = mime_phase_shapes(g, k_active, ins, outs);
	if (r < 0)
		return mime_errinfo_set(ei, r, "energy: phase: a k_active is out of range");
	for (int i = 0; i < g->n_layers; i++) {
		const struct mime_layer_spec *l = &g->layers[i];
		const struct mime_shape *in = &ins[i];
		const struct mime_shape *out = &outs[i];
		struct mime_energy_layer *e = &net.layers[net.n_layers];

		if (l->kind != MIME_LAYER_CONV && l->kind != MIME_LAYER_FC)
			continue;
		memcpy(e->name, l->name, sizeof(e->name));
		e->graph_index = i;
		e->m = (long)out->h * out->w;
		e->n = out->c;
		e->k = l->kind == MIME_LAYER_CONV ? (long)in->c * l->kernel * l->kernel
		                                  : mime_shape_size(in);
		e->in_words = mime_shape_size(in);
		e->out_words = e->m * e->n;
		e->weight_words = e->n * e->k;
		e->params = e->weight_words + e->n; /* weights + biases */
		if (!mime_graph_layer_masked(g, i))
			e->thr_words = 0;
		else
			e->thr_words = thr == MIME_ENERGY_THR_CHANNEL ? e->n : e->out_words;
		e->weight_density = 1.0;
		if (ph && ph->layer[i].keep) {
			if (ph->wuv < 1)
				return mime_errinfo_set(ei, MIME_EINVAL,
				                        "energy: layer '%s' has a mask but wuv %d",
				                        l->name, ph->wuv);
			e->weight_density = keep_density(ph->layer[i].keep, e->n, e->k, ph->wuv);
		}
		net.n_layers++;
	}
	if (net.n_layers == 0)
		return mime_errinfo_set(ei, MIME_EGRAPH, "graph has no conv or fc layer");
	*ret_net = net;
	return 0;
}

int mime_energy_net_init(struct mime_energy_net *ret_net, const struct mime_graph *g,
                         enum mime_energy_thr thr, struct mime_errinfo *ei)
{
	return mime_energy_net_init_phase(ret_net, g, thr, NULL, ei);
}

/* Words a map of n words with a fraction `density` of non-zeros costs when zeros are skipped:
 * the non-zeros plus a one-bit-per-element bitmap, or the dense map when that is smaller. */
static double encoded_words(double n, double density, int word_bits)
{
	double sparse = n * density + ceil(n / word_bits);

	return sparse < n ? sparse : n;
}

/* Misses of an LRU cache with `slots` places over the batch's key sequence (key = task, or one
 * shared key when shared); cold at the start. Keys deeper than MIME_ENERGY_LRU_DEPTH in the
 * recency stack are counted as misses. */
static long lru_misses(const int *task_of_sample, int batch, int shared, long slots)
{
	int stack[MIME_ENERGY_LRU_DEPTH];
	int depth = 0;
	long misses = 0;

	for (int b = 0; b < batch; b++) {
		int key = shared || !task_of_sample ? 0 : task_of_sample[b];
		int pos = -1;

		for (int d = 0; d < depth; d++)
			if (stack[d] == key) {
				pos = d;
				break;
			}
		if (pos < 0 || pos >= slots)
			misses++;
		if (pos < 0)
			pos = depth < MIME_ENERGY_LRU_DEPTH ? depth++ : depth - 1;
		memmove(&stack[1], &stack[0], sizeof(stack[0]) * pos);
		stack[0] = key;
	}
	return misses;
}

static int count_tasks(const int *task_of_sample, int batch)
{
	int n = 0;

	if (!task_of_sample)
		return 1;
	for (int b = 0; b < batch; b++) {
		int seen = 0;

		for (int j = 0; j < b && !seen; j++)
			seen = task_of_sample[j] == task_of_sample[b];
		n += !seen;
	}
	return n;
}

static void counts_energy(const struct mime_energy_hw *hw, struct mime_energy_counts *c)
{
	const double e_level[MIME_ENERGY_N_LEVELS] = {hw->e_dram, hw->e_cache, hw->e_reg};

	c->e_total = 0;
	for (int lv = 0; lv < MIME_ENERGY_N_LEVELS; lv++) {
		double n = 0;

		for (int d = 0; d < MIME_ENERGY_N_DATA; d++)
			n += c->access[lv][d];
		c->e[lv] = n * e_level[lv];
		c->e_total += c->e[lv];
	}
	c->e[MIME_ENERGY_MAC] = c->macs * hw->e_mac;
	c->e_total += c->e[MIME_ENERGY_MAC];
}

static void counts_add(struct mime_energy_counts *sum, const struct mime_energy_counts *c)
{
	sum->macs += c->macs;
	sum->cycles += c->cycles;
	for (int lv = 0; lv < MIME_ENERGY_N_LEVELS; lv++)
		for (int d = 0; d < MIME_ENERGY_N_DATA; d++)
			sum->access[lv][d] += c->access[lv][d];
}

/* Fetches of a parameter set of `words` (already encoded) into a cache of `cap` words over the
 * batch, for the resident case; the caller handles sets that do not fit. */
static double resident_fetches(double words, double cap, const int *task_of_sample, int batch,
                               int shared)
{
	double slots = floor(cap / words);

	return words * (double)lru_misses(task_of_sample, batch, shared,
	                                  slots > 1e9 ? 1000000000L : (long)slots);
}

/* DRAM words of weights, inputs and thresholds for one layer over the batch under one loop
 * order: MIME_ENERGY_ORDER_SAMPLE (samples outside filter tiles) or MIME_ENERGY_ORDER_TILE
 * (filter tiles outside samples, so a resident filter tile serves every sample that can use
 * it). Output traffic does not depend on the order. */
static void dram_words(const struct mime_energy_hw *hw, const struct mime_energy_layer *L,
                       int batch, const int *task_of_sample, int n_tasks, const double *x_enc,
                       int order, enum mime_energy_case kase, double ret[MIME_ENERGY_N_DATA])
{
	const double wb = hw->word_bits;
	const double cap_a = floor(hw->act_cache_bytes * 8.0 / wb);
	const double cap_w = floor(hw->weight_cache_bytes * 8.0 / wb);
	const double cap_t = floor(hw->thr_cache_bytes * 8.0 / wb);
	const double rows = hw->pe_rows, cols = hw->pe_cols;
	const double M = L->m, N = L->n, K = L->k;
	const double I = ceil(M / rows), J = ceil(N / cols);
	const int skip = kase != MIME_ENERGY_CASE1, shared = kase == MIME_ENERGY_CASE3;
	const double dens = skip ? L->weight_density : 1.0;
	const double w_enc = skip ? encoded_words(L->weight_words, dens, hw->word_bits)
	                          : (double)L->weight_words;
	const double wtile = cols < N ? cols : N;
	const double wtile_enc = skip ? encoded_words(wtile * K, dens, hw->word_bits) : wtile * K;
	const double t = kase == MIME_ENERGY_CASE3 ? (double)L->thr_words : 0;
	const double ttile = t / J;
	const double spad_words = floor(hw->spad_bytes * 8.0 / wb);
	const double n_sets = shared ? 1 : n_tasks;
	/* TILE order with the batch's partial sums in the spads: a filter tile too big for the
	 * cache is streamed in reduction chunks sized so that every set's chunk fits at once. */
	const int chunked =
		order == MIME_ENERGY_ORDER_TILE && w_enc > cap_w && batch + 3 <= spad_words;
	const double chunks = chunked ? ceil(wtile_enc * n_sets / cap_w) : 1;
	double x_sum = 0;

	for (int b = 0; b < batch; b++)
		x_sum += x_enc[b];
	ret[MIME_ENERGY_Y] = 0;

	/* Weights: the whole layer resident (LRU over task sets) in either order. */
	if (w_enc <= cap_w)
		ret[MIME_ENERGY_W] = resident_fetches(w_enc, cap_w, task_of_sample, batch, shared);
	else if (chunked)
		ret[MIME_ENERGY_W] = w_enc * n_sets;
	else if (order == MIME_ENERGY_ORDER_TILE && wtile_enc <= cap_w)
		ret[MIME_ENERGY_W] =
			resident_fetches(wtile_enc, cap_w, task_of_sample, batch, shared) *
			(w_enc / wtile_enc);
	else if (order == MIME_ENERGY_ORDER_SAMPLE && wtile_enc <= cap_w)
		ret[MIME_ENERGY_W] = w_enc * batch;
	else
		ret[MIME_ENERGY_W] = w_enc * I * batch;

	/* Thresholds: resident per task (a whole layer's, or a filter tile's) or per sample. */
	if (t <= 0)
		ret[MIME_ENERGY_T] = 0;
	else if (order == MIME_ENERGY_ORDER_SAMPLE && t <= cap_t)
		ret[MIME_ENERGY_T] = resident_fetches(t, cap_t, task_of_sample, batch, 0);
	else if (order == MIME_ENERGY_ORDER_TILE && ttile <= cap_t)
		ret[MIME_ENERGY_T] = resident_fetches(ttile, cap_t, task_of_sample, batch, 0) * J;
	else
		ret[MIME_ENERGY_T] = t * batch;

	/* Inputs: one sample's map (sample order) or the batch's maps (tile order) resident. */
	ret[MIME_ENERGY_X] = 0;
	if (order == MIME_ENERGY_ORDER_SAMPLE) {
		for (int b = 0; b < batch; b++)
			ret[MIME_ENERGY_X] += x_enc[b] <= cap_a ? x_enc[b] : x_enc[b] * J;
	} else {
		ret[MIME_ENERGY_X] = x_sum <= cap_a ? x_sum : x_sum * J * chunks;
	}
}

static void model_layer(const struct mime_energy_hw *hw, const struct mime_energy_layer *L,
                        int batch, const int *task_of_sample, const struct mime_energy_sparsity *sp,
                        int stride, int n_tasks, enum mime_energy_case kase, double *x_enc,
                        struct mime_energy_counts *c)
{
	const double rows = hw->pe_rows, cols = hw->pe_cols;
	const double M = L->m, N = L->n, K = L->k, neurons = (double)L->m * L->n;
	const double I = ceil(M / rows), J = ceil(N / cols), tiles = I * J;
	const int skip = kase != MIME_ENERGY_CASE1;
	const double dens = skip ? L->weight_density : 1.0;
	double by_order[2][MIME_ENERGY_N_DATA], sum[2];

	memset(c, 0, sizeof(*c));
	for (int b = 0; b < batch; b++) {
		const struct mime_energy_sparsity *s = sp ? &sp[(long)b * stride] : NULL;
		const double nz_in = skip && s ? 1.0 - s->in : 1.0;
		const double nz_out = skip && s ? 1.0 - s->out : 1.0;
		const double y_enc = skip ? encoded_words(neurons, nz_out, hw->word_bits) : neurons;
		const double steps = K * nz_in * dens; /* per tile */
		const double macs = neurons * steps;

		x_enc[b] = skip ? encoded_words(L->in_words, nz_in, hw->word_bits)
		                : (double)L->in_words;
		c->macs += macs;
		c->cycles += tiles * (steps + rows + cols - 2);
		c->access[MIME_ENERGY_DRAM][MIME_ENERGY_Y] += y_enc;
		c->access[MIME_ENERGY_CACHE][MIME_ENERGY_X] += M * K * nz_in * J;
		c->access[MIME_ENERGY_CACHE][MIME_ENERGY_W] += N * K * nz_in * dens * I;
		c->access[MIME_ENERGY_CACHE][MIME_ENERGY_Y] += y_enc;
		c->access[MIME_ENERGY_REG][MIME_ENERGY_X] += macs;
		c->access[MIME_ENERGY_REG][MIME_ENERGY_W] += macs;
		c->access[MIME_ENERGY_REG][MIME_ENERGY_Y] += macs + neurons;
	}
	if (kase == MIME_ENERGY_CASE3 && L->thr_words > 0) {
		c->access[MIME_ENERGY_CACHE][MIME_ENERGY_T] = neurons * batch;
		c->access[MIME_ENERGY_REG][MIME_ENERGY_T] =
			MIME_ENERGY_REG_T_PER_NEURON * neurons * batch;
	}

	/* The mapper takes the loop order that moves fewer DRAM words (ties: sample order). */
	for (int o = 0; o < 2; o++) {
		dram_words(hw, L, batch, task_of_sample, n_tasks, x_enc, o, kase, by_order[o]);
		sum[o] = by_order[o][MIME_ENERGY_W] + by_order[o][MIME_ENERGY_X] +
		         by_order[o][MIME_ENERGY_T];
	}
	c->loop_order = sum[MIME_ENERGY_ORDER_TILE] < sum[MIME_ENERGY_ORDER_SAMPLE]
	                        ? MIME_ENERGY_ORDER_TILE
	                        : MIME_ENERGY_ORDER_SAMPLE;
	for (int d = 0; d < MIME_ENERGY_N_DATA; d++) {
		if (d == MIME_ENERGY_Y)
			continue;
		c->access[MIME_ENERGY_DRAM][d] = by_order[c->loop_order][d];
		/* Fills: every word read from DRAM is written into its cache once. */
		c->access[MIME_ENERGY_CACHE][d] += by_order[c->loop_order][d];
	}
	counts_energy(hw, c);
}

int mime_energy_batch(const struct mime_energy_hw *hw, const struct mime_energy_net *net, int batch,
                      const int *task_of_sample, const struct mime_energy_sparsity *sparsity,
                      enum mime_energy_case kase, struct mime_energy_report *ret_report,
                      struct mime_errinfo *ei)
{
	struct mime_energy_report *r = ret_report;
	double x_enc[MIME_ENERGY_MAX_BATCH];

	if (batch < 1 || batch > MIME_ENERGY_MAX_BATCH)
		return mime_errinfo_set(ei, MIME_EINVAL, "energy: batch %d outside 1..%d", batch,
		                        MIME_ENERGY_MAX_BATCH);
	if (kase < MIME_ENERGY_CASE1 || kase > MIME_ENERGY_CASE3)
		return mime_errinfo_set(ei, MIME_EINVAL, "energy: no case %d", (int)kase);
	if (net->n_layers < 1 || net->n_layers > MIME_MAX_LAYERS)
		return mime_errinfo_set(ei, MIME_EINVAL, "energy: net has %d layers",
		                        net->n_layers);
	if (sparsity)
		for (long i = 0; i < (long)batch * net->n_layers; i++) {
			const struct mime_energy_sparsity *s = &sparsity[i];

			/* written so that NaN fails too */
			if (!(s->in >= 0 && s->in <= 1 && s->out >= 0 && s->out <= 1))
				return mime_errinfo_set(
					ei, MIME_EINVAL,
					"energy: sample %ld layer %ld: sparsity outside "
					"[0, 1]",
					i / net->n_layers, i % net->n_layers);
		}

	memset(r, 0, sizeof(*r));
	r->kase = kase;
	r->batch = batch;
	r->n_tasks = count_tasks(task_of_sample, batch);
	r->mode = r->n_tasks > 1 ? MIME_ENERGY_PIPELINED : MIME_ENERGY_SINGULAR;
	r->n_layers = net->n_layers;
	for (int l = 0; l < net->n_layers; l++) {
		model_layer(hw, &net->layers[l], batch, task_of_sample,
		            sparsity ? &sparsity[l] : NULL, net->n_layers, r->n_tasks, kase, x_enc,
		            &r->layer[l]);
		counts_add(&r->total, &r->layer[l]);
	}
	counts_energy(hw, &r->total);
	return 0;
}

int mime_energy_batch_summary(const struct mime_energy_hw *hw, const struct mime_energy_net *net,
                              int batch, const int *task_of_sample,
                              const struct mime_energy_sparsity *sparsity,
                              const struct mime_energy_sparsity *base_sparsity,
                              struct mime_energy_summary *ret_summary, struct mime_errinfo *ei)
{
	struct mime_energy_summary sum = {0};
	struct mime_energy_report rep;
	int r;

	for (int k = 0; k < 3; k++) {
		struct mime_energy_case_totals *t = &sum.kase[k];

		r = mime_energy_batch(hw, net, batch, task_of_sample,
		                      k < 2 && base_sparsity ? base_sparsity : sparsity,
		                      MIME_ENERGY_CASE1 + k, &rep, ei);
		if (r < 0)
			return r;
		memcpy(t->e, rep.total.e, sizeof(t->e));
		t->e_total = rep.total.e_total;
		t->cycles = rep.total.cycles;
		sum.mode = rep.mode;
		sum.batch = rep.batch;
		sum.n_tasks = rep.n_tasks;
	}
	/* 1 when MIME costs nothing (all energies configured 0, or a 1x1 array at full sparsity) */
	sum.saving_vs_case1 =
		sum.kase[2].e_total > 0 ? sum.kase[0].e_total / sum.kase[2].e_total : 1;
	sum.saving_vs_case2 =
		sum.kase[2].e_total > 0 ? sum.kase[1].e_total / sum.kase[2].e_total : 1;
	sum.speedup_vs_case1 = sum.kase[2].cycles > 0 ? sum.kase[0].cycles / sum.kase[2].cycles : 1;
	*ret_summary = sum;
	return 0;
}

void mime_energy_storage(const struct mime_energy_hw *hw, const struct mime_energy_net *net,
                         int n_children, long head_params, struct mime_energy_storage *ret)
{
	double params = 0, thr = 0;
	double bytes = hw->word_bits / 8.0;

	for (int l = 0; l < net->n_layers; l++) {
		params += net->layers[l].params;
		thr += net->layers[l].thr_words;
	}
	ret->conventional_bytes = (1.0 + n_children) * (params + head_params) * bytes;
	ret->mime_bytes = (params + head_params + n_children * (thr + head_params)) * bytes;
}

const char *mime_energy_case_name(enum mime_energy_case kase)
{
	switch (kase) {
	case MIME_ENERGY_CASE1:
		return "case1";
	case MIME_ENERGY_CASE2:
		return "case2";
	case MIME_ENERGY_CASE3:
		return "case3";
	}
	return "?";
}

const char *mime_energy_mode_name(enum mime_energy_mode mode)
{
	return mode == MIME_ENERGY_PIPELINED ? "pipelined" : "singular";
}
