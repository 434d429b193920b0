// SPDX-License-Identifier: MIT
/* mimectl -- mime's command-line client: dispatches to one subcommand. */
#include <stdio.h>
#include <string.h>

#include "client/cmd.h"
#include "client/varlink.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: mimectl COMMAND [ARGS...]\n\ncommands:\n"
	           "  run      classify images offline with a bundle (no daemon needed)\n"
	           "  infer    classify images with the daemon: infer --task T IMAGE...\n"
	           "  tasks    list the daemon's tasks\n"
	           "  status   the daemon's phase, budgets, memory, latency and counters\n"
	           "  budget   set the memory / latency budget: budget --memory 48M --latency 5ms\n"
	           "  phase    pin a phase or let the daemon choose: phase N|auto\n"
	           "  reload   make the daemon re-read its configuration and bundle\n"
	           "  watch    follow the daemon's events (batch records, budgets, phases)\n"
	           "  bench    closed-loop load test: bench -n 1000 -c 8\n"
	           "\nThe daemon commands take --socket PATH; else $MIME_SOCKET, else the first\n"
	           "that exists of $XDG_RUNTIME_DIR/mime/mimed.sock (not as root) and\n"
	           "/run/mime/mimed.sock. Exit status: 0 success, 1 the daemon answered with an\n"
	           "error, 2 bad usage, 3 no daemon on the socket or the connection broke.\n"
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
	static const struct {
		const char *name;
		int (*fn)(int argc, char **argv);
	} cmds[] = {
		{"run", mimectl_cmd_run},       {"infer", mimectl_cmd_infer},
		{"tasks", mimectl_cmd_tasks},   {"status", mimectl_cmd_status},
		{"budget", mimectl_cmd_budget}, {"phase", mimectl_cmd_phase},
		{"reload", mimectl_cmd_reload}, {"watch", mimectl_cmd_watch},
		{"bench", mimectl_cmd_bench},
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(argv[1], cmds[i].name) == 0)
			return cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "mimectl: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
