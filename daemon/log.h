/* SPDX-License-Identifier: MIT */
/* log -- mimed's log lines on stderr, led by "<N>" (the syslog priority journald reads) when
 * $JOURNAL_STREAM says stderr goes to the journal.
 * Ownership: nothing.
 * Threads: the loop thread only (workers report through their batch result). */
#pragma once

#include <stdbool.h>
#include <syslog.h>

struct mimed_logger {
	int max;      /* LOG_ERR .. LOG_DEBUG; messages above it are dropped */
	bool journal; /* stderr is the journal: prefix "<N>", no timestamps */
};

/* Arguments are not evaluated when the message is filtered out. */
#define mimed_log(d, prio, ...)                                                                    \
	do {                                                                                       \
		if ((prio) <= (d)->log.max)                                                        \
			mimed_log_write(&(d)->log, (prio), __VA_ARGS__);                           \
	} while (0)

void mimed_logger_init(struct mimed_logger *l, int max);
void mimed_log_write(const struct mimed_logger *l, int prio, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* "err", "warning", "notice", "info", "debug" -> LOG_*; -1 for anything else. */
int mimed_log_level_parse(const char *s);
