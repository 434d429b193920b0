/* SPDX-License-Identifier: MIT */
/* energy -- an analytical model of the MIME paper's Eyeriss-like, output-stationary systolic
 * array (Bhattacharjee et al., MIME, §III-B, §IV, Table IV): what one batch of inferences
 * would cost in DRAM, cache, scratchpad (register) accesses, MACs and cycles, for
 *   Case-1  conventional per-task models, no zero-skipping,
 *   Case-2  conventional per-task models, zero-skipping of zero activations,
 *   Case-3  MIME: one shared weight set, per-task thresholds compared in the PE, zero-skipping.
 * docs/ENERGY.md derives every formula; the short version:
 *
 * Mapping. Each conv (fc) layer is a GEMM Y[M x N] = X[M x K] W[K x N] with M = output pixels
 * (1 for fc), N = filters (output features), K = C*R*S (input features). One PE owns one output
 * neuron (m, n) and keeps its partial sum in place (output stationary). The R x C array is folded
 * over the GEMM in tiles of R pixels x C filters: I = ceil(M/R) pixel tiles, J = ceil(N/C) filter
 * tiles per sample. Two loop orders, outermost first; per layer and batch the mapper takes the
 * one that moves fewer DRAM words (weights + inputs + thresholds; ties go to SAMPLE):
 *     SAMPLE: for sample b (batch order); for filter tile j; for pixel tile i; for k in K
 *     TILE:   for filter tile j; for sample b (batch order); for pixel tile i; for k in K
 * During a tile, X[i-rows, k] enters at the left edge and W[k, j-cols] at the top edge (one cache
 * read each) and travels PE to PE; each PE does one MAC per step. A finished tile compares each
 * partial sum with its threshold (Case-3) or with 0 (ReLU) and writes the output to the cache and
 * on to DRAM. Every layer reads its input from DRAM and writes its output to DRAM (§III-B).
 *
 * Zero-skipping (Case-2/3): only non-zero input activations are streamed, so MACs, cycles,
 * X and W cache reads scale with (1 - s_in) (idealised: as if every row skipped independently).
 * Zeros travel as a bitmap: a map of n words with z zeros costs min(n, n - z + ceil(n/bits))
 * words in DRAM and cache, i.e. the dense form is kept when the bitmap would not pay off.
 * Pruned weights (weight_density < 1) are stored the same way and skipped like zero inputs.
 *
 * Finite caches (capacity in words, one cache each for activations, weights, thresholds). A
 * "set" is one task's data (MIME's weights are one set shared by all tasks); a resident set is
 * fetched on each miss of an LRU over floor(capacity / set size) slots, cold at batch start.
 *   weights:    the layer's (encoded) weights fit -> resident sets, either order. Else a filter
 *               tile's weights fit -> SAMPLE: once per sample; TILE: each tile is a resident set
 *               (so a batch of one task, or MIME, fetches the layer once). Else, TILE order
 *               when the spad holds the batch's partial sums (batch + 3 words): a filter tile
 *               is streamed in reduction chunks small enough that every set's chunk fits, so
 *               the layer is fetched once per set (distinct tasks, or 1 for MIME) while the
 *               inputs, unless the batch's fit, are re-streamed per chunk. Else once per
 *               pixel tile, I times per sample.
 *   thresholds: (Case-3) SAMPLE: the layer's thresholds fit -> resident sets; TILE: a filter
 *               tile's share (1/J) fits -> resident sets, per tile. Else once per sample.
 *   inputs:     SAMPLE: a sample's encoded map fits -> once per sample, else J times per sample;
 *               TILE: the batch's encoded maps fit -> once, else J times per sample.
 * Every word fetched from DRAM is also one cache write (the fill).
 *
 * Ownership: plain data in caller storage; nothing allocates, mime_energy_batch() included.
 * Threads: pure functions; concurrent calls on distinct reports are safe. */
#pragma once

#include "lib/error.h"
#include "lib/graph.h"
#include "lib/phase.h"

enum mime_energy_case {
	MIME_ENERGY_CASE1 = 1, /* conventional, dense */
	MIME_ENERGY_CASE2 = 2, /* conventional, zero-skipping */
	MIME_ENERGY_CASE3 = 3, /* MIME */
};

enum mime_energy_mode {
	MIME_ENERGY_SINGULAR,  /* every sample of the batch belongs to one task */
	MIME_ENERGY_PIPELINED, /* samples of different tasks in succession */
};

/* What a word access moves. */
enum mime_energy_data {
	MIME_ENERGY_W, /* weights */
	MIME_ENERGY_X, /* input activations */
	MIME_ENERGY_T, /* thresholds */
	MIME_ENERGY_Y, /* output activations (and, in registers, partial sums) */
	MIME_ENERGY_N_DATA,
};

/* Where it moves. E_MAC follows these three in mime_energy_counts.e[]. */
enum mime_energy_level {
	MIME_ENERGY_DRAM,
	MIME_ENERGY_CACHE,
	MIME_ENERGY_REG,
	MIME_ENERGY_MAC, /* only as an index of e[] */
	MIME_ENERGY_N_LEVELS = MIME_ENERGY_MAC,
};

/* Register (scratchpad) accesses, per MAC: one read of X, one of W and one update of the partial
 * sum (Y); per output neuron: one read of the partial sum for the compare/drain (Y) and, in
 * Case-3, one write of the threshold into the spad plus one read by the comparator (T). */
#define MIME_ENERGY_REG_PER_MAC      3
#define MIME_ENERGY_REG_T_PER_NEURON 2
#define MIME_ENERGY_LRU_DEPTH        64 /* tasks tracked per layer; deeper ones count as misses */
#define MIME_ENERGY_MAX_BATCH        4096

/* The two loop orders the mapper chooses between, per layer and batch (see the top). */
enum mime_energy_order {
	MIME_ENERGY_ORDER_SAMPLE, /* for sample b; for filter tile j; for pixel tile i */
	MIME_ENERGY_ORDER_TILE,   /* for filter tile j; for sample b; for pixel tile i */
};

/* The accelerator; mime_energy_hw_default() gives the paper's Table IV. */
struct mime_energy_hw {
	int technology_nm;    /* informative only: energies are given normalised */
	int word_bits;        /* W, X, T and Y precision */
	int pe_rows, pe_cols; /* the array; rows take output pixels, cols filters */
	long act_cache_bytes; /* input activations */
	long weight_cache_bytes;
	long thr_cache_bytes;
	long spad_bytes;               /* per PE; must hold x, w, psum and threshold */
	double e_dram, e_cache, e_reg; /* per word access, normalised to one MAC */
	double e_mac;
};

/* Fills hw with Table IV: 65 nm, 16 bit, 156 KiB caches, 512 B spads, 32 x 32 PEs, energies
 * 200 / 6 / 2 / 1. */
void mime_energy_hw_default(struct mime_energy_hw *ret_hw);

/* Returns 0 or MIME_EINVAL with a message naming the field: non-positive sizes or PE counts,
 * word_bits outside 1..64, a spad smaller than 4 words, negative or non-finite energies. */
int mime_energy_hw_check(const struct mime_energy_hw *hw, struct mime_errinfo *ei);

/* Threshold granularity of the MIME tasks (the paper: one per neuron). */
enum mime_energy_thr {
	MIME_ENERGY_THR_NEURON,  /* one per output element: N * M per layer */
	MIME_ENERGY_THR_CHANNEL, /* one per filter: N per layer */
};

/* One compute layer (conv or fc) of a network, as the model sees it. */
struct mime_energy_layer {
	char name[MIME_NAME_MAX];
	int graph_index;       /* index into the graph's layers */
	long m, n, k;          /* GEMM: output pixels, filters, reduction (C*R*S) */
	long in_words;         /* the layer's input map C*H*W */
	long out_words;        /* m * n */
	long weight_words;     /* n * k; biases are left out of the traffic */
	long params;           /* weights + biases, for storage */
	long thr_words;        /* per task; 0 for a layer without mask (act none) */
	double weight_density; /* 1 = dense; 0.1 = a 90%-pruned model (Case-2/3 skip the zeros) */
};

/* Precomputed once per graph; mime_energy_batch() only reads it. */
struct mime_energy_net {
	int n_layers;
	struct mime_energy_layer layers[MIME_MAX_LAYERS];
};

/* Builds the model's view of g: one entry per conv and fc layer, in graph order (pooling and
 * flatten are not modelled: their cost is not counted and the next layer reads the pooled map).
 * Fails with MIME_EGRAPH as mime_graph_check() does, or when g has no conv or fc layer. */
int mime_energy_net_init(struct mime_energy_net *ret_net, const struct mime_graph *g,
                         enum mime_energy_thr thr, struct mime_errinfo *ei);

/* As mime_energy_net_init(), for the sub-network of g that phase ph serves (lib/phase.h; NULL
 * = the whole parent, the same net as mime_energy_net_init()): each conv / fc layer keeps its
 * first k_active filters (n) and reads the phase's input channels (k, in_words), so m, n, k,
 * the words, params and thresholds follow the phase's shapes (mime_phase_shapes()); a layer
 * with a fine-grain keep mask gets weight_density = the share of its n x k weights kept
 * (whole W_uv x 1 groups; the last group row may be shorter), which Case-2/3 skip like
 * pruned weights. A phase keeping every kernel and no mask gives the parent's net exactly.
 * Fails as mime_energy_net_init() does, or with MIME_EINVAL when a k_active is out of range
 * or a mask comes without a positive wuv. */
int mime_energy_net_init_phase(struct mime_energy_net *ret_net, const struct mime_graph *g,
                               enum mime_energy_thr thr, const struct mime_phase *ph,
                               struct mime_errinfo *ei);

/* Fraction of zeros, per sample and layer, in the layer's input map and in its output (after
 * the ReLU or the threshold mask). */
struct mime_energy_sparsity {
	float in, out;
};

/* Access counts (in words) and energies of one layer or of the whole batch. */
struct mime_energy_counts {
	double macs;
	double access[MIME_ENERGY_N_LEVELS][MIME_ENERGY_N_DATA];
	double cycles;                      /* compute cycles, no memory stalls */
	double e[MIME_ENERGY_N_LEVELS + 1]; /* E_DRAM, E_cache, E_reg, E_MAC (index by level) */
	double e_total;
	enum mime_energy_order loop_order; /* of a layer; 0 in totals */
};

struct mime_energy_report {
	enum mime_energy_case kase;
	enum mime_energy_mode mode;
	int batch;
	int n_tasks; /* distinct tasks in the batch */
	int n_layers;
	struct mime_energy_counts layer[MIME_MAX_LAYERS];
	struct mime_energy_counts total;
};

/* Models one batch: batch samples in the given order, sample b of task task_of_sample[b]
 * (any int; NULL = all one task) with sparsity[b * net->n_layers + l] for layer l (NULL = all
 * dense). Case-1/2 fetch each task's own weights, Case-3 one shared set plus each task's
 * thresholds. Fills *ret_report (every field) and returns 0; MIME_EINVAL for a batch < 1, a bad
 * case or a sparsity outside [0, 1]; hw is assumed checked. Allocation-free: O(batch * layers).
 */
int mime_energy_batch(const struct mime_energy_hw *hw, const struct mime_energy_net *net, int batch,
                      const int *task_of_sample, const struct mime_energy_sparsity *sparsity,
                      enum mime_energy_case kase, struct mime_energy_report *ret_report,
                      struct mime_errinfo *ei);

/* What a batch record carries (mimed's per-batch energy): the three cases' energies, split
 * and total, and compute cycles, the task mode and MIME's savings. */
struct mime_energy_case_totals {
	double e[MIME_ENERGY_N_LEVELS + 1]; /* E_DRAM, E_cache, E_reg, E_MAC (index by level) */
	double e_total;
	double cycles;
};

struct mime_energy_summary {
	enum mime_energy_mode mode;
	int batch;
	int n_tasks;
	struct mime_energy_case_totals kase[3]; /* [0] Case-1, [1] Case-2, [2] Case-3 (MIME) */
	/* Case-1 or Case-2 over MIME; 1 when MIME's energy or cycles are 0 */
	double saving_vs_case1;  /* E_total */
	double saving_vs_case2;  /* E_total */
	double speedup_vs_case1; /* cycles */
};

/* Runs mime_energy_batch() for the three cases: Case-3 on sparsity, Case-1/2 on
 * base_sparsity, the conventional models' own sparsity when it is known (NULL: the same as
 * sparsity, e.g. in a daemon that serves only MIME and so only measures MIME's; then Case-2
 * skips MIME's zeros and its saving is an upper bound). Fills *ret_summary and returns 0, or
 * fails as mime_energy_batch() does. Allocation-free (one report on the stack). */
int mime_energy_batch_summary(const struct mime_energy_hw *hw, const struct mime_energy_net *net,
                              int batch, const int *task_of_sample,
                              const struct mime_energy_sparsity *sparsity,
                              const struct mime_energy_sparsity *base_sparsity,
                              struct mime_energy_summary *ret_summary, struct mime_errinfo *ei);

/* Off-chip storage of a parent and n_children child tasks, in bytes. Conventional: 1 + n full
 * models (the net's params plus a head of head_params each). MIME: the parent model once plus,
 * per child, its thresholds (sum of thr_words) and its own head. */
struct mime_energy_storage {
	double conventional_bytes;
	double mime_bytes;
};

void mime_energy_storage(const struct mime_energy_hw *hw, const struct mime_energy_net *net,
                         int n_children, long head_params, struct mime_energy_storage *ret);

/* "case1", "case2", "case3"; "singular", "pipelined". */
const char *mime_energy_case_name(enum mime_energy_case kase);
const char *mime_energy_mode_name(enum mime_energy_mode mode);
