// SPDX-License-Identifier: MIT
/* mimectl -- mime's command-line client: dispatches to one subcommand. */
#include <stdio.h>
#include <string.h>

#include "client/cmd.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: mimectl COMMAND [ARGS...]\n\ncommands:\n"
	           "  run      classify images offline with a bundle (no daemon needed)\n"
	           "\n'mimectl COMMAND --help' describes a command.\n");
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
	if (strcmp(argv[1], "run") == 0)
		return mimectl_cmd_run(argc - 1, argv + 1);
	fprintf(stderr, "mimectl: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
