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
	/* 0, or a negative errno: a limit file (max's or high's, of the cgroup or an ancestor)
	 * is there but could not be opened or read (EMFILE, ENFILE, ENOMEM, EACCES, ...). max
	 * and high then hold only the limits that were read and may miss the tightest: they
	 * are not "no limit", keep the last known ones (see mimed_cgroup_memory_read()). */
	int limits_error;
	char dir[512];      /* the cgroup's directory (with the root prefix), "" when none */
	char pressure[560]; /* v2: dir + "/memory.pressure" when that file exists, else "" */
};

/* Reads the calling process's memory cgroup. root is prepended to every path read
 * ("/proc/self/cgroup", "/proc/self/mountinfo", the mount points): "" in the daemon, a
 * fixture directory in tests. Returns 0 (ret->version 0 when there is no memory cgroup —
 * not an error), or a negative errno when /proc/self/cgroup, or a /proc/self/mountinfo that
 * is there, cannot be read: from opening it (-EMFILE when out of file descriptors), -EIO
 * when reading it fails, -ENAMETOOLONG when root is too long.
 *
 * v2 is used when the "0::" cgroup's directory, under a visible cgroup2 mount, has memory.max
 * or memory.current; else v1, when the cgroup of the line listing "memory", under a cgroup v1
 * mount with the memory option, has memory.limit_in_bytes or memory.usage_in_bytes. A cgroup
 * is not visible (not found) when its path lies outside the mount's root, when its path
 * below the mount's root has a ".." component (in a cgroup namespace, "0::/../x" names a
 * cgroup outside the namespace's root), or when its directory does not fit ret->dir. max
 * and high are the smallest non-zero limits from the cgroup up to the mount point; current
 * is the cgroup's own. A file that is not there, a garbled one, "max" and a v1 value at or
 * above 1<<62 read as 0 (none/unknown), and so does a limit of 0; a limit file that is there
 * but cannot be read sets ret->limits_error. *ret is written on success only.
 *
 * A caller that follows the limits over time keeps its last known max and high, not these,
 * when this returns < 0 or ret->limits_error is set: an unreadable file is not a vanished
 * limit (running out of file descriptors would otherwise drop every limit for a while). */
int mimed_cgroup_memory_read(const char *root, struct mimed_cgroup_memory *ret);
