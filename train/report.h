/* SPDX-License-Identifier: MIT */
/* report -- the pieces of `mime-train report` (train/cmd_report.c) that do not need data:
 * the markdown template, the MIME section rendered from measurements, the storage model,
 * the Multi-phase section rendered from the phase builder's JSON record, the hypervolume,
 * and their SVG figures (tools/svg.c).
 *
 * Template: a markdown text in which a line that is exactly "@@name@@" is replaced by the
 * generated section `name` (mimetrain_report_section() lists them); every other line is
 * copied as it is. So the explanations live in the template and every number in the C.
 *
 * Hypervolume (the Multi-phase CNN paper's Table 6, Brockhoff et al. 2013): in the plane of
 * (speed s in 1/ms, accuracy a in percentage points), both maximised, with the reference
 * point (s_r, a_r), a variant's phases (s_i, a_i) dominate the union of the boxes
 * [s_r, s_i] x [a_r, a_i] of the points with s_i > s_r and a_i > a_r; its area is
 *   HV = sum over the points taken by decreasing s (ties: higher a first) of
 *        (s_i - s_r) * max(0, a_i - max(a_r, a of every point taken before)).
 * Units: points x 1/ms. The paper's Table 6 follows from its Table 5 with this formula and
 * the reference (0.2/ms, 76%): three variants to 6 digits, fine_5p within 0.0003
 * (tests/test_report.c).
 *
 * Ownership: a struct mimetrain_report_mime is plain data the caller fills; the phases
 * record is read, rendered and released inside mimetrain_report_phases().
 * Threads: none of these functions share state; one thread per output file. */
#pragma once

#include <stdint.h>
#include <stdio.h>

#include "lib/error.h"
#include "lib/manifest.h"
#include "train/mime.h"

/* Hypervolume of the n points (speed[i], acc[i]) over the reference (ref_speed, ref_acc), as
 * defined above; points at or below the reference in either coordinate and non-finite
 * points add nothing. Units are the caller's (the report: 1/ms and percentage points). */
double mimetrain_hypervolume(int n, const double *speed, const double *acc, double ref_speed,
                             double ref_acc);

enum mimetrain_report_mode {
	MIMETRAIN_REPORT_MIME,         /* the bundle's task: thresholds + head */
	MIMETRAIN_REPORT_CONVENTIONAL, /* conventional/<task>/...: fine-tuned copy, ReLU */
	MIMETRAIN_REPORT_HEAD_ONLY,    /* headonly/<task>/head.*: frozen parent, ReLU */
	MIMETRAIN_REPORT_N_MODES,
};

/* One task as measured: every field filled by the caller; unknown numbers are NAN. */
struct mimetrain_report_task {
	char name[MIME_NAME_MAX];
	int n_test;                        /* test images evaluated; 0: no data found */
	int has[MIMETRAIN_REPORT_N_MODES]; /* 1: that mode was measured */
	struct mimetrain_eval eval[MIMETRAIN_REPORT_N_MODES];
	enum mime_thresholds granularity;
	int64_t mime_bytes;    /* task/<task>/... tensors: thresholds + head */
	int64_t copy_bytes;    /* conventional/<task>/... tensors; 0 when absent */
	int64_t channel_bytes; /* per-channel thresholds + head, from the shapes */
	int64_t head_bytes;    /* task/<task>/head.* */
	int64_t head_weights;  /* the head's weights, and of them stored (non-zero in a */
	int64_t head_stored;   /* sparse head.weight, bundle.h; else all) */
	/* recorded in the bundle when the task was trained (manifest), NAN when absent */
	double train_seconds[MIMETRAIN_REPORT_N_MODES];     /* wall, as recorded */
	double train_cpu_seconds[MIMETRAIN_REPORT_N_MODES]; /* process CPU; NAN: not recorded */
	double train_epochs[MIMETRAIN_REPORT_N_MODES];
	double train_images; /* MIME's */
};

struct mimetrain_report_mime {
	const char *bundle; /* path as given */
	int64_t bundle_bytes;
	int64_t parent_bytes;     /* parent/... tensors (weights and biases) */
	int64_t parent_weights;   /* conv / fc weights and biases, in floats */
	uint64_t parent_checksum; /* FNV-1a 64 of the parent/... tensors' bytes, in file order */
	int n_masked;
	char layer[MIME_MAX_LAYERS][MIME_NAME_MAX]; /* the masked layers' names */
	int n_tasks;                                /* tasks[0] is the parent's own task */
	struct mimetrain_report_task tasks[MIME_MAX_TASKS];
	const char *data_dir;
	int threads;
};

#define MIMETRAIN_REPORT_MAX_N 8 /* the storage table's n = 1..8 */

/* Storage of n = 1..n_max tasks: ret_mime[n-1] = parent + the first n tasks' thresholds and
 * heads, ret_conv[n-1] = n fine-tuned copies (a task without one counts as the parent's
 * weights and its head), tasks beyond the bundle's counted as the mean task (rounded).
 * Returns how many n were measured (min(n_tasks, n_max)). */
int mimetrain_report_storage(const struct mimetrain_report_mime *r, int n_max, int64_t *ret_mime,
                             int64_t *ret_conv);

/* Everything the generated sections need. figures_dir: where SVGs are written (must exist);
 * figures_link: the same directory as the report links it ("figures"). phases_json may be
 * NULL (the section then says there is no phase build record). */
struct mimetrain_report_ctx {
	const struct mimetrain_report_mime *mime;
	/* a second bundle whose tasks have per-channel thresholds (`report --channel-bundle`),
	 * measured like mime; NULL: none */
	const struct mimetrain_report_mime *channel;
	/* bench/train.sh --json's record (`report --train-bench`): the training-time goal is
	 * read from it instead of the bundle's recorded times; NULL: none */
	const char *train_bench;
	const char *phases_json;
	const char *figures_dir, *figures_link;
	const char *generated; /* the header line: date, command, machine; may be NULL */
	double seconds;        /* how long the measurements took; < 0: unknown */
	int n_figures;         /* figures written so far (counted by the sections) */
};

/* Writes the generated section `name` to out: "header", "mime-accuracy", "mime-sparsity",
 * "mime-bytes", "mime-storage", "mime-channel", "mime-goals", "phases". Returns 0, MIME_EINVAL for
 * an unknown name (ei names it), MIME_EFORMAT for an unreadable phases record, or -errno from
 * writing a figure. */
int mimetrain_report_section(FILE *out, const char *name, struct mimetrain_report_ctx *ctx,
                             struct mime_errinfo *ei);

/* Copies template to out with every "@@name@@" line replaced by its section. Returns 0 or
 * the first failure of mimetrain_report_section() (ei says which line). */
int mimetrain_report_template(FILE *out, const char *template_text,
                              struct mimetrain_report_ctx *ctx, struct mime_errinfo *ei);

/* The "phases" section alone (report_phases.c): reads the phase builder's JSON record from
 * path (NULL: says there is none) and writes its tables, hypervolumes, goal checks and the
 * Fig. 10 SVG ("phases-accuracy-speed.svg") under ctx's figures. Returns 0, MIME_EFORMAT
 * (not JSON, or "variants" / "search" not arrays; ei says where) or -errno. */
int mimetrain_report_phases(FILE *out, const char *path, struct mimetrain_report_ctx *ctx,
                            struct mime_errinfo *ei);
