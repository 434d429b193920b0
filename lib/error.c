// SPDX-License-Identifier: MIT
/* error -- see error.h. */
#include "lib/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *mime_strerror(int err)
{
	switch (err) {
#define X(name, value, msg)                                                                        \
	case name:                                                                                 \
		return msg;
		MIME_ERROR_TABLE(X)
#undef X
	}
	const char *s = err < 0 ? strerrordesc_np(-err) : NULL; /* static, thread-safe */
	return s ? s : "unknown error";
}

int mime_errinfo_set(struct mime_errinfo *ei, int code, const char *fmt, ...)
{
	va_list ap;

	if (!ei)
		return code;
	ei->code = code;
	va_start(ap, fmt);
	vsnprintf(ei->msg, sizeof(ei->msg), fmt, ap);
	va_end(ap);
	return code;
}
