// SPDX-License-Identifier: MIT
/* cmd_run -- mimectl run (not written yet). */
#include <stdio.h>

#include "client/cmd.h"

int mimectl_cmd_run(int argc, char **argv)
{
	(void)argc;
	fprintf(stderr, "mimectl: %s: not implemented yet\n", argv[0]);
	return 1;
}
