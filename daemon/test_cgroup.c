// SPDX-License-Identifier: MIT
/* test_cgroup -- finding the memory cgroup from fixture /proc and /sys trees in a temporary
 * directory: unified, hybrid, nested, container-rooted and escaped mounts, and bad files. */
#include "tests/unit.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/cgroup.h"

#define V1_UNLIMITED "9223372036854771712\n" /* what v1 shows for "no limit" */

static int setup_root(void **state)
{
	const char *tmp = getenv("TMPDIR");
	char *dir;

	if (asprintf(&dir, "%s/mime-cgroup-XXXXXX", tmp ? tmp : "/tmp") < 0)
		return -1;
	if (!mkdtemp(dir)) {
		free(dir);
		return -1;
	}
	*state = dir;
	return 0;
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	return remove(path);
}

static int teardown_root(void **state)
{
	nftw(*state, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(*state);
	return 0;
}

/* Creates base + rel as a directory, with its parents. */
static void mkdirs(const char *base, const char *rel)
{
	char path[1024];

	assert_true((size_t)snprintf(path, sizeof(path), "%s%s", base, rel) < sizeof(path));
	for (char *p = path + strlen(base) + 1;; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;

			*p = '\0';
			assert_true(mkdir(path, 0755) == 0 || errno == EEXIST);
			*p = c;
			if (!c)
				break;
		}
	}
}

/* Writes text to the file base + rel, creating its directories. */
static void put(const char *base, const char *rel, const char *text)
{
	char path[1024], parent[1024];
	FILE *f;

	snprintf(parent, sizeof(parent), "%s", rel);
	*strrchr(parent, '/') = '\0';
	if (parent[0])
		mkdirs(base, parent);
	assert_true((size_t)snprintf(path, sizeof(path), "%s%s", base, rel) < sizeof(path));
	f = fopen(path, "we");
	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
}

static void drop(const char *base, const char *rel)
{
	char path[1024];

	snprintf(path, sizeof(path), "%s%s", base, rel);
	assert_int_equal(unlink(path), 0);
}

/* base + rel, in a buffer of the test's. */
static const char *at(char *buf, size_t size, const char *base, const char *rel)
{
	snprintf(buf, size, "%s%s", base, rel);
	return buf;
}

static void read_ok(const char *base, struct mimed_cgroup_memory *m)
{
	memset(m, 0xa5, sizeof(*m)); /* every field must be written */
	assert_int_equal(mimed_cgroup_memory_read(base, m), 0);
}

static const char sys_line[] = "22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - "
			       "sysfs sysfs rw\n";

static void test_cgroup_memory_read_unified(void **state)
{
	const char *base = *state;
	struct mimed_cgroup_memory m;
	char want[1024];

	put(base, "/proc/self/cgroup", "4:memory:/v1svc\n0::/system.slice/mimed.service\n");
	put(base, "/proc/self/mountinfo",
	    "22 1 0:21 / /sys rw,nosuid shared:7 - sysfs sysfs rw\n"
	    "30 22 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 "
	    "cgroup2 rw,nsdelegate,memory_recursiveprot\n"
	    "31 30 0:28 / /sys/fs/cgroup/v1mem rw - cgroup cgroup rw,memory\n");
	put(base, "/sys/fs/cgroup/system.slice/mimed.service/memory.max", "1073741824\n");
	put(base, "/sys/fs/cgroup/system.slice/mimed.service/memory.high", "max\n");
	put(base, "/sys/fs/cgroup/system.slice/mimed.service/memory.current", "123456\n");
	put(base, "/sys/fs/cgroup/system.slice/mimed.service/memory.pressure", "some avg10=0.00\n");
	put(base, "/sys/fs/cgroup/system.slice/memory.max", "max\n");
	put(base, "/sys/fs/cgroup/system.slice/memory.high", "max\n");
	put(base, "/sys/fs/cgroup/memory.pressure", "some avg10=0.00\n");
	/* A v1 memory cgroup too: v2 is preferred. */
	put(base, "/sys/fs/cgroup/v1mem/v1svc/memory.limit_in_bytes", "4096\n");

	read_ok(base, &m);
	assert_int_equal(m.version, 2);
	assert_string_equal(
		m.dir, at(want, sizeof(want), base, "/sys/fs/cgroup/system.slice/mimed.service"));
	assert_string_equal(m.pressure,
	                    at(want, sizeof(want), base,
	                       "/sys/fs/cgroup/system.slice/mimed.service/memory.pressure"));
	assert_int_equal(m.max, 1073741824);
	assert_int_equal(m.high, 0);
	assert_int_equal(m.current, 123456);

	/* "max" all the way up, and a high limit; no PSI file. */
	put(base, "/sys/fs/cgroup/system.slice/mimed.service/memory.max", "max\n");
	put(base, "/sys/fs/cgroup/system.slice/mimed.service/memory.high", "536870912\n");
	drop(base, "/sys/fs/cgroup/system.slice/mimed.service/memory.pressure");
	read_ok(base, &m);
	assert_int_equal(m.version, 2);
	assert_int_equal(m.max, 0);
	assert_int_equal(m.high, 536870912);
	assert_string_equal(m.pressure, "");

	/* The root cgroup has no memory.max; memory.current is enough. */
	put(base, "/proc/self/cgroup", "0::/\n");
	put(base, "/sys/fs/cgroup/memory.current", "777\n");
	read_ok(base, &m);
	assert_int_equal(m.version, 2);
	assert_string_equal(m.dir, at(want, sizeof(want), base, "/sys/fs/cgroup"));
	assert_int_equal(m.max, 0);
	assert_int_equal(m.current, 777);
}

static void test_cgroup_memory_read_hybrid_uses_v1(void **state)
{
	const char *base = *state;
	struct mimed_cgroup_memory m;
	char want[1024];

	/* As on a hybrid host: cgroup2 at .../unified holds no memory controller. */
	put(base, "/proc/self/cgroup",
	    "9:name=systemd:/\n3:memoryx:/decoy\n4:memory:/process_api/x\n1:cpu,cpuacct:/\n0::/\n");
	put(base, "/proc/self/mountinfo",
	    "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
	    "31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
	    "32 30 0:29 / /sys/fs/cgroup/decoy rw,relatime - cgroup cgroup rw,memoryx\n"
	    "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
	    "39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
	    "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n");
	put(base, "/sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n");
	put(base, "/sys/fs/cgroup/unified/memory.pressure", "some avg10=0.00\n");
	put(base, "/sys/fs/cgroup/memory/memory.limit_in_bytes", V1_UNLIMITED);
	put(base, "/sys/fs/cgroup/memory/memory.soft_limit_in_bytes", V1_UNLIMITED);
	put(base, "/sys/fs/cgroup/memory/process_api/memory.limit_in_bytes", V1_UNLIMITED);
	put(base, "/sys/fs/cgroup/memory/process_api/memory.soft_limit_in_bytes", V1_UNLIMITED);
	put(base, "/sys/fs/cgroup/memory/process_api/x/memory.limit_in_bytes", V1_UNLIMITED);
	put(base, "/sys/fs/cgroup/memory/process_api/x/memory.soft_limit_in_bytes", V1_UNLIMITED);
	put(base, "/sys/fs/cgroup/memory/process_api/x/memory.usage_in_bytes", "5537792\n");

	read_ok(base, &m);
	assert_int_equal(m.version, 1);
	assert_string_equal(m.dir,
	                    at(want, sizeof(want), base, "/sys/fs/cgroup/memory/process_api/x"));
	assert_string_equal(m.pressure, "");
	assert_int_equal(m.max, 0);
	assert_int_equal(m.high, 0);
	assert_int_equal(m.current, 5537792);

	/* A real limit on the cgroup, a soft limit on its parent. */
	put(base, "/sys/fs/cgroup/memory/process_api/x/memory.limit_in_bytes", "536870912\n");
	put(base, "/sys/fs/cgroup/memory/process_api/memory.soft_limit_in_bytes", "268435456\n");
	read_ok(base, &m);
	assert_int_equal(m.version, 1);
	assert_int_equal(m.max, 536870912);
	assert_int_equal(m.high, 268435456);
	assert_int_equal(m.current, 5537792);
}

static void test_cgroup_memory_read_takes_tightest_ancestor(void **state)
{
	const char *base = *state;
	struct mimed_cgroup_memory m;

	put(base, "/proc/self/cgroup", "0::/a/b/c\n");
	put(base, "/proc/self/mountinfo",
	    "30 22 0:27 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw\n");
	put(base, "/sys/fs/cgroup/a/b/c/memory.max", "2000\n");
	put(base, "/sys/fs/cgroup/a/b/c/memory.high", "900\n");
	put(base, "/sys/fs/cgroup/a/b/c/memory.current", "300\n");
	put(base, "/sys/fs/cgroup/a/b/memory.max", "1000\n");
	put(base, "/sys/fs/cgroup/a/b/memory.high", "max\n");
	put(base, "/sys/fs/cgroup/a/b/memory.current", "999\n");
	put(base, "/sys/fs/cgroup/a/memory.max", "max\n");
	put(base, "/sys/fs/cgroup/a/memory.high", "700\n");
	put(base, "/sys/fs/cgroup/memory.high", "600\n"); /* the mount point counts */
	put(base, "/sys/fs/memory.max", "1\n");           /* above it does not */
	put(base, "/sys/fs/memory.high", "1\n");
	put(base, "/memory.max", "1\n");

	read_ok(base, &m);
	assert_int_equal(m.version, 2);
	assert_int_equal(m.max, 1000);
	assert_int_equal(m.high, 600);
	assert_int_equal(m.current, 300);
}

static void test_cgroup_memory_read_container_mount_root(void **state)
{
	const char *base = *state;
	struct mimed_cgroup_memory m;
	char want[1024];

	put(base, "/proc/self/cgroup", "0::/docker/abc/sub\n");
	/* The first cgroup2 mount does not show this cgroup; the second does. */
	put(base, "/proc/self/mountinfo",
	    "1230 1200 0:30 /docker/zzz /zzz rw - cgroup2 cgroup rw\n"
	    "1234 1200 0:30 /docker/abc /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 "
	    "cgroup rw,nsdelegate\n");
	put(base, "/zzz/sub/memory.max", "1\n");
	put(base, "/sys/fs/cgroup/docker/abc/sub/memory.max", "1\n"); /* not where it is */
	put(base, "/sys/fs/cgroup/sub/memory.max", "4096\n");
	put(base, "/sys/fs/cgroupdef/memory.max", "1\n"); /* /docker/abcdef, taken as under it */
	put(base, "/sys/fs/cgroup/sub/memory.current", "100\n");
	put(base, "/sys/fs/cgroup/memory.max", "8192\n");

	read_ok(base, &m);
	assert_int_equal(m.version, 2);
	assert_string_equal(m.dir, at(want, sizeof(want), base, "/sys/fs/cgroup/sub"));
	assert_int_equal(m.max, 4096);
	assert_int_equal(m.current, 100);

	/* The cgroup is the mount's root. */
	put(base, "/proc/self/cgroup", "0::/docker/abc\n");
	read_ok(base, &m);
	assert_int_equal(m.version, 2);
	assert_string_equal(m.dir, at(want, sizeof(want), base, "/sys/fs/cgroup"));
	assert_int_equal(m.max, 8192);

	/* Outside the mount's root, or only sharing a name prefix with it: not visible. */
	put(base, "/proc/self/cgroup", "0::/docker/abcdef\n");
	read_ok(base, &m);
	assert_int_equal(m.version, 0);
	assert_string_equal(m.dir, "");
	put(base, "/proc/self/cgroup", "0::/other/sub\n");
	read_ok(base, &m);
	assert_int_equal(m.version, 0);

	/* Mounted at "/". */
	put(base, "/proc/self/cgroup", "0::/sub\n");
	put(base, "/proc/self/mountinfo", "1 0 0:30 / / rw - cgroup2 cgroup2 rw\n");
	put(base, "/sub/memory.max", "2048\n");
	read_ok(base, &m);
	assert_int_equal(m.version, 2);
	assert_string_equal(m.dir, at(want, sizeof(want), base, "/sub"));
	assert_int_equal(m.max, 2048);
}

static void test_cgroup_memory_read_escaped_mount_point(void **state)
{
	const char *base = *state;
	struct mimed_cgroup_memory m;
	char want[1024];

	put(base, "/proc/self/cgroup", "0::/svc\n");
	put(base, "/proc/self/mountinfo",
	    "40 30 0:37 / /sys/fs/cgroup\\040x rw - cgroup2 cgroup2 rw\n");
	put(base, "/sys/fs/cgroup x/svc/memory.max", "12345\n");

	read_ok(base, &m);
	assert_int_equal(m.version, 2);
	assert_string_equal(m.dir, at(want, sizeof(want), base, "/sys/fs/cgroup x/svc"));
	assert_int_equal(m.max, 12345);

	/* Escaped root too: tab and backslash. */
	put(base, "/proc/self/cgroup", "0::/a\tb/svc\n");
	put(base, "/proc/self/mountinfo",
	    "40 30 0:37 /a\\011b /sys/fs/c\\134g rw - cgroup2 cgroup2 rw\n");
	put(base, "/sys/fs/c\\g/svc/memory.max", "54321\n");
	read_ok(base, &m);
	assert_int_equal(m.version, 2);
	assert_string_equal(m.dir, at(want, sizeof(want), base, "/sys/fs/c\\g/svc"));
	assert_int_equal(m.max, 54321);
}

static void test_cgroup_memory_read_none_found(void **state)
{
	const char *base = *state;
	struct mimed_cgroup_memory m;

	/* No v2 line and no memory line. */
	put(base, "/proc/self/cgroup", "1:cpu:/\n");
	put(base, "/proc/self/mountinfo",
	    "30 22 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
	    "31 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n");
	put(base, "/sys/fs/cgroup/memory.current", "1\n");
	put(base, "/sys/fs/cgroup/memory/memory.usage_in_bytes", "1\n");
	read_ok(base, &m);
	assert_int_equal(m.version, 0);
	assert_string_equal(m.dir, "");
	assert_string_equal(m.pressure, "");
	assert_int_equal(m.max, 0);
	assert_int_equal(m.high, 0);
	assert_int_equal(m.current, 0);

	/* The lines, but no cgroup mount. */
	put(base, "/proc/self/cgroup", "4:memory:/\n0::/\n");
	put(base, "/proc/self/mountinfo", sys_line);
	read_ok(base, &m);
	assert_int_equal(m.version, 0);
	assert_string_equal(m.dir, "");

	/* No mountinfo at all. */
	drop(base, "/proc/self/mountinfo");
	read_ok(base, &m);
	assert_int_equal(m.version, 0);

	/* A cgroup2 mount whose cgroup has no memory files, and no v1. */
	put(base, "/proc/self/cgroup", "0::/svc\n");
	put(base, "/proc/self/mountinfo", "30 22 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
	put(base, "/sys/fs/cgroup/svc/memory.pressure", "some\n");
	put(base, "/sys/fs/cgroup/svc/cgroup.controllers", "cpu\n");
	read_ok(base, &m);
	assert_int_equal(m.version, 0);
	assert_string_equal(m.dir, "");
	assert_string_equal(m.pressure, "");

	/* A v1 memory mount whose cgroup directory is gone. */
	put(base, "/proc/self/cgroup", "4:memory:/gone\n");
	put(base, "/proc/self/mountinfo",
	    "31 30 0:28 / /sys/fs/cgroup rw - cgroup cgroup rw,memory\n");
	put(base, "/sys/fs/cgroup/memory.limit_in_bytes", "4096\n");
	read_ok(base, &m);
	assert_int_equal(m.version, 0);
	assert_string_equal(m.dir, "");
	assert_int_equal(m.max, 0);
}

static void test_cgroup_memory_read_unreadable_proc_cgroup(void **state)
{
	const char *base = *state;
	struct mimed_cgroup_memory m;

	memset(&m, 0xa5, sizeof(m));
	put(base, "/proc/self/mountinfo", "30 22 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
	assert_int_equal(mimed_cgroup_memory_read(base, &m), -ENOENT);
	assert_int_equal(m.version, (int)0xa5a5a5a5); /* untouched on failure */

	/* There, but not readable as a file. */
	mkdirs(base, "/proc/self/cgroup");
	assert_int_equal(mimed_cgroup_memory_read(base, &m), -EIO);
	assert_int_equal(m.version, (int)0xa5a5a5a5);
}

static void test_cgroup_memory_read_garbage_reads_as_zero(void **state)
{
	static const char *const garbage[] = {
		"",
		"\n",
		"12abc\n",
		"-5\n",
		" 5\n",
		"5 \n",
		"5\n\n",
		"0x10\n",
		"max 5\n",
		"maximum\n",
		"18446744073709551616\n", /* UINT64_MAX + 1 */
		"18446744073709551617\n", /* ... + 2: wraps to 1 unless caught */
		"99999999999999999999\n",
		"99999999999999999999999999999999999999999999999999\n",
		"0000000000000000000000000000000000000000000000000001\n",
		"0000000000000000000000000000001\n5\n", /* a number, then more */
	};
	const char *base = *state;
	struct mimed_cgroup_memory m;
	char pad[8193], *mounts, *cgroups;

	/* Lines to skip, before or after the real ones: too short, without a separator, too many
	 * fields, and too long: a line cgroup.c cannot hold (it reads up to 8191 bytes) is skipped
	 * whole, its tail not taken for a line of its own. */
	memset(pad, 'a', sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = '\0';
	assert_true(asprintf(&cgroups, "garbage\n::\n0:\n0:/x\n0::/svc\n0:x:/wrong\n%s0::/wrong\n",
	                     pad) > 0);
	assert_true(asprintf(&mounts,
	                     "x\n\n1 2 3 4 5 - cgroup2 cgroup2 rw\n"
	                     "1 - cgroup2 / /wrong rw\n"
	                     "1 2 3 / /wrong rw - cgroup2\n"
	                     "%s30 22 0:27 / /wrong rw - cgroup2 cgroup2 rw\n"
	                     "1 2 3 / /wrong rw - cgroup2 cgroup2 rw 1 2 3 4 5 6 7 8 9 10 11 12 13 "
	                     "14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 "
	                     "37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58\n"
	                     "30 22 0:27 / /sys/fs/cgroup rw a:1 b:2 - cgroup2 cgroup2 rw",
	                     pad) > 0);
	put(base, "/proc/self/cgroup", cgroups);
	put(base, "/proc/self/mountinfo", mounts);
	free(cgroups);
	free(mounts);

	/* Numbers that do parse, as a control. */
	put(base, "/sys/fs/cgroup/svc/memory.max", "4096");
	put(base, "/sys/fs/cgroup/svc/memory.high", "18446744073709551614\n");
	put(base, "/sys/fs/cgroup/svc/memory.current", "42\n");
	read_ok(base, &m);
	assert_int_equal(m.version, 2);
	assert_int_equal(m.max, 4096);
	assert_int_equal(m.high, UINT64_C(18446744073709551614));
	assert_int_equal(m.current, 42);

	for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
		put(base, "/sys/fs/cgroup/svc/memory.max", garbage[i]);
		put(base, "/sys/fs/cgroup/svc/memory.high", garbage[i]);
		put(base, "/sys/fs/cgroup/svc/memory.current", garbage[i]);
		read_ok(base, &m);
		assert_int_equal(m.version, 2);
		assert_int_equal(m.max, 0);
		assert_int_equal(m.high, 0);
		assert_int_equal(m.current, 0);
	}
}

static void test_cgroup_memory_read_dotdot_is_not_visible(void **state)
{
	static const char *const hidden[] = {
		"0::/../x\n", "0::/a/../../x\n", "0::/..\n", "0::/a/..\n", "4:memory:/../y\n",
	};
	const char *base = *state;
	struct mimed_cgroup_memory m;
	char want[1024];

	/* In a cgroup namespace, a cgroup outside the namespace's root reads "/../x". Under a
	 * mount rooted at the namespace's root it is not visible: mount point + "/../x" is a
	 * directory outside the mount (here one with limits, to be found if it were read). The
	 * same for v1 (the last case). */
	put(base, "/proc/self/mountinfo",
	    "30 22 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
	    "31 30 0:28 / /sys/fs/cgroup/mem rw - cgroup cgroup rw,memory\n");
	put(base, "/sys/fs/cgroup/memory.max", "1000\n");
	put(base, "/sys/fs/cgroup/memory.current", "1\n");
	put(base, "/sys/fs/x/memory.max", "4096\n");
	put(base, "/sys/fs/x/memory.current", "2\n");
	put(base, "/sys/fs/memory.max", "2048\n");
	put(base, "/sys/fs/cgroup/a/memory.max", "3000\n");
	put(base, "/sys/fs/cgroup/mem/memory.limit_in_bytes", "5000\n");
	put(base, "/sys/fs/cgroup/y/memory.limit_in_bytes", "6000\n");
	for (size_t i = 0; i < sizeof(hidden) / sizeof(hidden[0]); i++) {
		put(base, "/proc/self/cgroup", hidden[i]);
		read_ok(base, &m);
		if (m.version != 0 || m.dir[0])
			fail_msg("'%s' found at '%s'", hidden[i], m.dir);
		assert_int_equal(m.max, 0);
	}

	/* ".." only as part of a name is a name. */
	put(base, "/proc/self/cgroup", "0::/..a/b..\n");
	put(base, "/sys/fs/cgroup/..a/b../memory.max", "777\n");
	read_ok(base, &m);
	assert_int_equal(m.version, 2);
	assert_string_equal(m.dir, at(want, sizeof(want), base, "/sys/fs/cgroup/..a/b.."));
	assert_int_equal(m.max, 777);

	/* A mount made outside the namespace shows its root as "/..": relative to it, the
	 * cgroup "/../x" is "/x" under the mount point. */
	put(base, "/proc/self/cgroup", "0::/../x\n");
	put(base, "/proc/self/mountinfo",
	    "30 22 0:27 /.. /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
	put(base, "/sys/fs/cgroup/x/memory.max", "8192\n");
	read_ok(base, &m);
	assert_int_equal(m.version, 2);
	assert_string_equal(m.dir, at(want, sizeof(want), base, "/sys/fs/cgroup/x"));
	assert_int_equal(m.max, 1000); /* and the mount point's */
}

/* Makes base + rel a symbolic link to itself: opening it fails with ELOOP. */
static void loop_link(const char *base, const char *rel)
{
	char path[1024];

	snprintf(path, sizeof(path), "%s%s", base, rel);
	assert_int_equal(symlink(path, path), 0);
}

static void test_cgroup_memory_read_unreadable_limit_is_not_none(void **state)
{
	const char *base = *state;
	struct mimed_cgroup_memory m;
	char dir[1024];

	put(base, "/proc/self/cgroup", "0::/a/svc\n");
	put(base, "/proc/self/mountinfo", "30 22 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
	put(base, "/sys/fs/cgroup/a/svc/memory.max", "max\n");
	put(base, "/sys/fs/cgroup/a/svc/memory.current", "300\n");
	put(base, "/sys/fs/cgroup/a/memory.max", "4096\n");
	put(base, "/sys/fs/cgroup/a/memory.high", "2048\n");
	read_ok(base, &m);
	assert_int_equal(m.limits_error, 0);
	assert_int_equal(m.max, 4096);
	assert_int_equal(m.high, 2048);

	/* The cgroup's memory.high is there but cannot be read (a directory: opened, then
	 * read() fails): not "no limit". The others are still read. */
	mkdirs(base, "/sys/fs/cgroup/a/svc/memory.high");
	read_ok(base, &m);
	assert_int_equal(m.version, 2);
	assert_int_equal(m.limits_error, -EISDIR);
	assert_int_equal(m.max, 4096);
	assert_int_equal(m.high, 2048);
	assert_int_equal(m.current, 300);

	/* An ancestor's memory.max cannot be opened (as with EMFILE): the first error is kept. */
	drop(base, "/sys/fs/cgroup/a/memory.max");
	loop_link(base, "/sys/fs/cgroup/a/memory.max");
	read_ok(base, &m);
	assert_int_equal(m.limits_error, -EISDIR);
	assert_int_equal(m.max, 0);
	assert_int_equal(m.high, 2048);
	assert_int_equal(rmdir(at(dir, sizeof(dir), base, "/sys/fs/cgroup/a/svc/memory.high")), 0);
	read_ok(base, &m);
	assert_int_equal(m.limits_error, -ELOOP);

	/* Not there at all is "no limit", and no error. */
	drop(base, "/sys/fs/cgroup/a/memory.max");
	read_ok(base, &m);
	assert_int_equal(m.limits_error, 0);
	assert_int_equal(m.max, 0);
	assert_int_equal(m.high, 2048);

	/* v1 alike. */
	put(base, "/proc/self/cgroup", "4:memory:/svc\n");
	put(base, "/proc/self/mountinfo", "31 30 0:28 / /sys/fs/v1 rw - cgroup cgroup rw,memory\n");
	put(base, "/sys/fs/v1/svc/memory.limit_in_bytes", V1_UNLIMITED);
	put(base, "/sys/fs/v1/svc/memory.usage_in_bytes", "5\n");
	loop_link(base, "/sys/fs/v1/memory.soft_limit_in_bytes");
	read_ok(base, &m);
	assert_int_equal(m.version, 1);
	assert_int_equal(m.limits_error, -ELOOP);
	assert_int_equal(m.current, 5);
}

static void test_cgroup_memory_read_unreadable_mountinfo_fails(void **state)
{
	const char *base = *state;
	struct mimed_cgroup_memory m;

	/* A mountinfo that is there but cannot be read is no "no cgroup". */
	put(base, "/proc/self/cgroup", "0::/svc\n");
	mkdirs(base, "/proc/self/mountinfo");
	put(base, "/sys/fs/cgroup/svc/memory.max", "4096\n");
	memset(&m, 0xa5, sizeof(m));
	assert_int_equal(mimed_cgroup_memory_read(base, &m), -EIO);
	assert_int_equal(m.version, (int)0xa5a5a5a5);
}

static void test_cgroup_memory_read_out_of_fds_fails(void **state)
{
	const char *base = *state;
	struct mimed_cgroup_memory m;
	struct rlimit old, low;
	int fd, r;

	put(base, "/proc/self/cgroup", "0::/svc\n");
	put(base, "/proc/self/mountinfo", "30 22 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
	put(base, "/sys/fs/cgroup/svc/memory.max", "4096\n");
	read_ok(base, &m);
	assert_int_equal(m.max, 4096);

	/* No descriptor left: an error, not a cgroup without limits. */
	fd = dup(0);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = (rlim_t)fd; /* the lowest free descriptor is the first one refused */
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	memset(&m, 0xa5, sizeof(m));
	r = mimed_cgroup_memory_read(base, &m);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_int_equal(r, -EMFILE);
	assert_int_equal(m.version, (int)0xa5a5a5a5);
}

static void test_cgroup_memory_read_real_machine(void **state)
{
	struct mimed_cgroup_memory m;
	struct stat st;

	(void)state;
	read_ok("", &m);
	assert_in_range(m.version, 0, 2);
	if (m.version != 0) {
		assert_int_equal(stat(m.dir, &st), 0);
		assert_true(S_ISDIR(st.st_mode));
	} else {
		assert_string_equal(m.dir, "");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_cgroup_memory_read_unified, setup_root,
	                                        teardown_root),
		cmocka_unit_test_setup_teardown(test_cgroup_memory_read_hybrid_uses_v1, setup_root,
	                                        teardown_root),
		cmocka_unit_test_setup_teardown(test_cgroup_memory_read_takes_tightest_ancestor,
	                                        setup_root, teardown_root),
		cmocka_unit_test_setup_teardown(test_cgroup_memory_read_container_mount_root,
	                                        setup_root, teardown_root),
		cmocka_unit_test_setup_teardown(test_cgroup_memory_read_escaped_mount_point,
	                                        setup_root, teardown_root),
		cmocka_unit_test_setup_teardown(test_cgroup_memory_read_none_found, setup_root,
	                                        teardown_root),
		cmocka_unit_test_setup_teardown(test_cgroup_memory_read_unreadable_proc_cgroup,
	                                        setup_root, teardown_root),
		cmocka_unit_test_setup_teardown(test_cgroup_memory_read_garbage_reads_as_zero,
	                                        setup_root, teardown_root),
		cmocka_unit_test_setup_teardown(test_cgroup_memory_read_dotdot_is_not_visible,
	                                        setup_root, teardown_root),
		cmocka_unit_test_setup_teardown(
			test_cgroup_memory_read_unreadable_limit_is_not_none, setup_root,
			teardown_root),
		cmocka_unit_test_setup_teardown(test_cgroup_memory_read_unreadable_mountinfo_fails,
	                                        setup_root, teardown_root),
		cmocka_unit_test_setup_teardown(test_cgroup_memory_read_out_of_fds_fails,
	                                        setup_root, teardown_root),
		cmocka_unit_test(test_cgroup_memory_read_real_machine),
	};

	return cmocka_run_group_tests_name("cgroup", tests, NULL, NULL);
}
