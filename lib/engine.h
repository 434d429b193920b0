/* SPDX-License-Identifier: MIT */
/* engine -- CPU inference of a mime_model over a batch whose samples may belong to different
 * tasks. Conv layers run as im2col + OpenBLAS sgemm over the whole batch (the weights are
 * shared), with bias, the per-sample threshold mask (a = y >= t ? y : 0, t from the sample's
 * task; ReLU when the task has none) and zero counting fused into one epilogue pass.
 * Ownership: an engine borrows its model (and so the bundle under it) and owns its plan:
 * activation buffers and scratch sized once for max_batch; forward never allocates.
 * Threads: one forward at a time per engine. With n_threads > 1 the engine runs n_threads - 1
 * threads of its own (the caller is the n-th): a batch of at least n_threads samples is split
 * by samples (one join per forward; each thread takes the next few samples left, so a thread
 * that runs late takes fewer), a smaller one layer by layer over chunks of pixels. Its
 * threads call OpenBLAS concurrently, so creating such an engine sets OpenBLAS to one thread
 * (openblas_set_num_threads(1), process wide). With n_threads = 1 OpenBLAS keeps its own. */
#pragma once

#include <stdint.h>

#include "lib/gemm.h"
#include "lib/model.h"
#include "lib/phase.h"

struct mime_engine; /* opaque */

enum mime_conv_impl {
	MIME_CONV_AUTO,   /* the packed path (measured faster here: bench/RESULTS.md) */
	MIME_CONV_PACKED, /* lib/gemm: packed weights + own SIMD microkernel, fused epilogue */
	MIME_CONV_BLAS,   /* im2col + OpenBLAS cblas_sgemm, then the epilogue */
};

/* Zero activations (issue 5): the thresholds (and ReLU) leave most of a conv layer's input
 * at 0. On the packed path a conv chunk whose input (the rows its pixels read) has at most
 * act_max_density nonzero values runs in the input-sparse form of lib/gemm, which skips
 * them (results bit for bit those of the dense path); others run dense, and so do
 * geometries the form does not handle (stride > 1, R*S > 16, padded rows over 32 pixels)
 * and fine-grain masks whose wuv is not a multiple of MR. The decision is per chunk of
 * pixels of one sample, from that sample's input only. Skipping costs W^T per conv layer
 * (about the packed weights again) and, under a fine-grain mask, a masked W^T built on the
 * mask's first entry and kept for later fine switches (up to 2 per layer, resident once
 * built; see mime_engine_plan_bytes); OFF allocates none. */
enum mime_act_skip {
	MIME_ACT_SKIP_AUTO,   /* skip where the density says it pays (the default) */
	MIME_ACT_SKIP_OFF,    /* always dense */
	MIME_ACT_SKIP_ALWAYS, /* input-sparse wherever it applies, any density (tests) */
};

struct mime_engine_config {
	int max_batch; /* >= 1 */
	int n_threads; /* threads for this engine's GEMMs (1 = the calling thread only) */
	enum mime_conv_impl conv;
	int simd; /* 0: the best path the CPU has; 1 + enum mime_simd: at most that one */
	enum mime_act_skip act_skip;
	float act_max_density; /* AUTO's threshold, in (0, 1]; 0 = the measured default */
};

/* Per-sample results of one forward, owned by the engine, valid until the next forward.
 * logits: row b holds the logits of sample b (max_classes floats per row, only the first
 * n_classes of its task meaningful). zeros: row b holds, per masked layer m, the number of
 * output neurons of sample b that were zero after the mask (pruned or negative). */
struct mime_engine_result {
	int batch;
	int n_masked;            /* masked layers, in graph order */
	int max_classes;         /* stride of logits */
	const float *logits;     /* [batch, max_classes] */
	const int64_t *zeros;    /* [batch, n_masked] */
	const int64_t *neurons;  /* [n_masked]: output neurons of each masked layer */
	const int *masked_layer; /* [n_masked]: graph index of each masked layer */
};

/* Builds the plan for model m. Fails with MIME_EGRAPH / MIME_ESHAPE when the model is
 * inconsistent (missing weights, head of the wrong width), -ENOMEM. */
int mime_engine_create(const struct mime_model *m, const struct mime_engine_config *cfg,
                       struct mime_engine **ret_engine, struct mime_errinfo *ei);
void mime_engine_destroy(struct mime_engine *e); /* NULL is a no-op */

/* Runs batch samples; in is [batch, C, H, W] preprocessed floats; tasks[b] is the index of
 * sample b's task in the model. Returns 0, or MIME_EINVAL for batch > max_batch or a bad
 * task index. */
int mime_engine_forward(struct mime_engine *e, int batch, const float *in, const int *tasks,
                        struct mime_engine_result *ret_result);

/* A forward is coming soon (mimed calls it when it accepts a request, before decoding its
 * image). With n_threads > 1, the engine's threads that went to sleep since the last
 * forward are woken and poll for work until the next forward starts, for up to 300 us (then
 * they sleep again): so that forward does not start by waking them (a futex wake-up and a
 * scheduling delay, tens of microseconds on a virtualised machine). Without it they poll
 * only between the layers of a forward and sleep as soon as it returns. When they are
 * awake already it costs a clock read and an atomic store; with n_threads = 1 nothing.
 * Any thread, any time, also while a forward runs; never blocks for long. */
void mime_engine_prepare(struct mime_engine *e);
/* The engine's own threads asleep waiting for work (0 .. n_threads - 1): for tests and
 * diagnostics. */
int mime_engine_threads_asleep(const struct mime_engine *e);

const struct mime_model *mime_engine_model(const struct mime_engine *e);
/* Bytes the plan holds (activations, scratch, packed weights, the input-sparse form's W^T
 * and the masked W^T kept for fine-grain masks entered so far). */
size_t mime_engine_plan_bytes(const struct mime_engine *e);
/* Gives back what the engine keeps for phases it is not in: the masked W^T of every
 * fine-grain mask other than the current phase's, and other phases' decoded F16 task
 * tensors (both kept so that switches stay cheap). A later entry of such a phase builds
 * them again (milliseconds, once). For a caller
 * that entered many phases once, e.g. to check them, and will mostly stay in one. Not while
 * a forward runs (the same rule as mime_engine_set_phase). Updates the plan bytes. */
void mime_engine_trim(struct mime_engine *e);
/* Multiply-accumulates of one sample's forward through the current phase's sub-network and
 * its head. */
int64_t mime_engine_macs(const struct mime_engine *e, int task);

/* Softmax of logits[0..n) and the k most probable classes, most probable first (ties: lower
 * index first). Writes min(k, n) entries to ret_class / ret_prob; returns that count. */
int mime_topk(const float *logits, int n, int k, int *ret_class, float *ret_prob);

/* The conv path and SIMD microkernel the engine uses. */
void mime_engine_describe(const struct mime_engine *e, enum mime_conv_impl *ret_conv,
                          struct mime_gemm_arch *ret_arch);

/* Graph index of the k-th masked layer. */
int mime_engine_result_layer(const struct mime_engine *e, int k);

/* Enters a phase between forwards: ph (NULL = the whole parent) picks the active kernels and
 * fine-grain masks of every layer; tasks (model->n_tasks entries; NULL = the model's) are the
 * heads and thresholds of this phase, sized for its sub-network: head [n_classes, features of
 * the phase], thresholds [k_active, H, W] or [k_active]. A conv layer whose active kernels
 * and input channels do not change keeps its packed weights and only selects the columns to
 * run (a fine-grain switch: no weight moves, microseconds) when wuv is a multiple of the
 * microkernel's MR (16 or 8 on AVX-512, see mime_engine_describe); otherwise, and on a
 * coarse step, the layer is repacked in place (a coarse step really changes the packed
 * bytes and the memory held, see mime_engine_plan_bytes). The plan's buffers and packing
 * storage were sized for the whole parent, so entering a phase allocates nothing, but for
 * tasks given as F16 halves (struct mime_task_params): the engine keeps floats for them per
 * phase entered (up to 8 phases, least recently used reused), decoding a task on its first
 * forward in the phase (microseconds per 100 KB with F16C; the halves' file pages are then
 * dropped when model->weights_file_backed); a later entry finds them. The masks are read while
 * entering only. On failure (MIME_EINVAL: k_active out of range, keep without wuv;
 * MIME_EUNSUPPORTED: fine masks on the OpenBLAS path; -ENOMEM for decoded tensors) the
 * previous phase stays in force. */
int mime_engine_set_phase(struct mime_engine *e, const struct mime_phase *ph,
                          const struct mime_task_params *tasks, struct mime_errinfo *ei);

/* Output neurons of masked layer k in the current phase. */
int64_t mime_engine_neurons(const struct mime_engine *e, int k);
