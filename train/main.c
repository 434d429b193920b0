// SPDX-License-Identifier: MIT
/* mime-train -- makes mime's models from data: dispatches to one subcommand. */
#include <stdio.h>
#include <string.h>

#include "train/cmd.h"

static const struct {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *help;
} commands[] = {
	{"parent", mimetrain_cmd_parent, "train the parent network on a dataset, write a bundle"},
	{"thresholds", mimetrain_cmd_thresholds,
         "MIME: learn a task's thresholds and head on the frozen parent"},
	{"finetune", mimetrain_cmd_finetune,
         "baselines: fine-tune a copy of the parent, or --head-only, for a task"},
	{"phases", mimetrain_cmd_phases,
         "multi-phase: build nested coarse / fine phases of the parent from constraints"},
	{"phase-tasks", mimetrain_cmd_phase_tasks,
         "multi-phase: every task's head and thresholds for every phase"},
	{"phases-measure", mimetrain_cmd_phases_measure,
         "multi-phase: measure a bundle's phases on this machine, update its record"},
	{"eval", mimetrain_cmd_eval, "accuracy and sparsity of a bundle's task on IDX data"},
	{"bundle", mimetrain_cmd_bundle, "inspect | verify | import bundles"},
	{"data", mimetrain_cmd_data, "convert the mnist | digits child-task data to IDX"},
	{"samples", mimetrain_cmd_samples, "write the first N test images of each class as PNG"},
	{"report", mimetrain_cmd_report,
         "measure a bundle, (re)write models/REPORT.md and figures"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: mime-train COMMAND [ARGS...]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].help);
	fprintf(f, "\n'mime-train COMMAND --help' describes a command.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "mime-train: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
