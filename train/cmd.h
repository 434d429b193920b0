/* SPDX-License-Identifier: MIT */
/* cmd -- the subcommands of mime-train; each parses its own argv (argv[0] = its name) and
 * returns the process exit code: 0 ok, 1 failure (message on stderr), 2 usage error. */
#pragma once

#include <jansson.h>

int mimetrain_cmd_parent(int argc, char **argv);
int mimetrain_cmd_bundle(int argc, char **argv); /* inspect | verify | import */
int mimetrain_cmd_eval(int argc, char **argv);
int mimetrain_cmd_data(int argc, char **argv); /* mnist | digits */
int mimetrain_cmd_samples(int argc, char **argv);
int mimetrain_cmd_thresholds(int argc, char **argv);     /* MIME: thresholds + head of a task */
int mimetrain_cmd_finetune(int argc, char **argv);       /* baselines: fine-tune, --head-only */
int mimetrain_cmd_phases(int argc, char **argv);         /* multi-phase: build nested phases */
int mimetrain_cmd_phase_tasks(int argc, char **argv);    /* every task's tensors per phase */
int mimetrain_cmd_phases_measure(int argc, char **argv); /* re-measure a bundle's phases */
int mimetrain_cmd_report(int argc, char **argv);         /* models/REPORT.md and its figures */

/* The body of thresholds and finetune (cmd_thresholds.c); mode is an enum mimetrain_mode
 * (train/mime.h): MIME, or fine-tune (--head-only switches to head-only). */
int mimetrain_learn_task(int argc, char **argv, int mode);

/* The bundle provenance old (JSON text; NULL or not an object: a new one) with steps +=
 * {command: ["mime-train", sub (when not NULL), argv...], date}; *ret_step (may be NULL)
 * borrows the new step, for the caller to add to. Returns the object (the caller's). */
/* --val N | P%: a count into *ret_n (and *ret_percent = 0), or a percentage in (0, 100) into
 * *ret_percent (and *ret_n = 0). Returns 0, or -1 for anything else. */
int mimetrain_parse_val(const char *s, int *ret_n, double *ret_percent);

json_t *mimetrain_provenance_add_step(const char *old, const char *sub, int argc, char **argv,
                                      json_t **ret_step);
