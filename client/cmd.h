/* SPDX-License-Identifier: MIT */
/* cmd -- mimectl's subcommands; each returns the process exit code (see mimectl --help). */
#pragma once

int mimectl_cmd_run(int argc, char **argv);
