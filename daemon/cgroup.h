/* SPDX-License-Identifier: MIT */
/* cgroup -- the calling process's memory cgroup, found the way the kernel describes it: the
 * cgroup paths in /proc/self/cgroup, the cgroup filesystems' mount points and roots in
 * /proc/self/mountinfo. Works on unified (cgroup2) hosts, on hybrid hosts (cgroup2 without the
 * memory controller, memory on cgroup v1) and inside containers (mount root != "/").
 * Ownership: none; the caller owns the struct, nothing is allocated.
 * Threads: any; no global state, each call only reads files. */
#pragma once

#include <stdint.h>

struct mimed_cgroup_memory {
	/* 2 (unified, memory controller present), 1 (v1 memory controller), 0: none found */
	int version;
	/* bytes; 0: no limit. v2 memory.max ("max" = none); v1 memory.limit_in_bytes
	 * (>= 1<<62 = none) */
	uint64_t max;
	/* bytes; 0: none. v2 memory.high; v1 memory.soft_limit_in_bytes (>= 1<<62 = none) */
	uint64_t high;
	/* bytes charged now: v2 memory.current, v1 memory.usage_in_bytes; 0: unknown */
	uint64_t current;
	char dir[512];      /* the cgroup's directory (with the root prefix), "" when none */
	char pressure[560]; /* v2: dir + "/memory.pressure" when that file exists, else "" */
};

/* Reads the calling process's memory cgroup. root is prepended to every path read
 * ("/proc/self/cgroup", "/proc/self/mountinfo", the mount points): "" in the daemon, a
 * fixture directory in tests. Returns 0 (ret->version 0 when there is no memory cgroup —
 * not an error), or a negative errno when /proc/self/cgroup cannot be read: from opening it,
 * -EIO when reading it fails, -ENAMETOOLONG when root is too long.
 *
 * v2 is used when the "0::" cgroup's directory, under a visible cgroup2 mount, has memory.max
 * or memory.current; else v1, when the cgroup of the line listing "memory", under a cgroup v1
 * mount with the memory option, has memory.limit_in_bytes or memory.usage_in_bytes. A cgroup
 * is not visible (not found) when its path lies outside the mount's root, or when its
 * directory does not fit ret->dir. max and high are the smallest non-zero limits from the
 * cgroup up to the mount point; current is the cgroup's own. A missing or garbled file reads
 * as 0 (none/unknown), and so does a limit of 0. *ret is written on success only. */
int mimed_cgroup_memory_read(const char *root, struct mimed_cgroup_memory *ret);
