// SPDX-License-Identifier: MIT
/* cmd_bundle -- mime-train bundle (not written yet). */
#include <stdio.h>

#include "train/cmd.h"

int mimetrain_cmd_bundle(int argc, char **argv)
{
	(void)argc;
	fprintf(stderr, "mime-train: %s: not implemented yet\n", argv[0]);
	return 1;
}
