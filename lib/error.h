/* SPDX-License-Identifier: MIT */
/* error -- libmime's error codes and the optional detail that goes with them.
 * Ownership: struct mime_errinfo is caller storage; nothing here allocates.
 * Threads: all functions are thread-safe. */
#pragma once

#include <stddef.h>

/* Append-only: clients see the numbers. OS failures travel as -errno, untouched. */
#define MIME_ERROR_TABLE(X)                                                                        \
	X(MIME_OK, 0, "success")                                                                   \
	X(MIME_EFORMAT, -1001, "malformed bundle")                                                 \
	X(MIME_ESHAPE, -1002, "tensor shape mismatch")                                             \
	X(MIME_EBUDGET, -1003, "does not fit the memory budget")                                   \
	X(MIME_EINVAL, -1004, "invalid argument")                                                  \
	X(MIME_ENOTASK, -1005, "no such task")                                                     \
	X(MIME_EIMAGE, -1006, "invalid image")                                                     \
	X(MIME_EDATA, -1007, "invalid dataset file")                                               \
	X(MIME_EGRAPH, -1008, "invalid network graph")                                             \
	X(MIME_ETOOBIG, -1009, "input too large")                                                  \
	X(MIME_EUNSUPPORTED, -1010, "unsupported")

enum mime_error {
#define X(name, value, msg) name = value,
	MIME_ERROR_TABLE(X)
#undef X
};

/* Detail for a failure: which file, tensor, field and check. Filled on failure only. */
struct mime_errinfo {
	int code;
	char msg[256];
};

/* Returns a static, human-readable description of err (0, a MIME_E* code or -errno). */
const char *mime_strerror(int err);

/* Formats a message into ei (when ei is not NULL) and returns code, so that callers can
 * write `return mime_errinfo_set(ei, MIME_EFORMAT, "...", ...);`. */
int mime_errinfo_set(struct mime_errinfo *ei, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
