// SPDX-License-Identifier: MIT
/* cgroup -- the calling process's memory cgroup and its limits (see cgroup.h).
 * Ownership: none; nothing is allocated. Threads: any; no global state. */
#include "daemon/cgroup.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CGROUP_V1_NONE (UINT64_C(1) << 62) /* v1 limits at or above this are "unlimited" */
#define LINE_BYTES     8192                /* longer lines cannot name a cgroup we can use */
#define MOUNT_FIELDS   64                  /* a mountinfo line with more fields is skipped */

/* Reads one line into buf without its newline. A line longer than size - 1 bytes is skipped
 * whole. Returns false at end of file (or on a read error: ferror() tells). */
static bool next_line(FILE *f, char *buf, size_t size)
{
	while (fgets(buf, (int)size, f)) {
		size_t n = strlen(buf);
		int c;

		if (n > 0 && buf[n - 1] == '\n') {
			buf[n - 1] = '\0';
			return true;
		}
		c = getc(f);
		if (c == '\n' || c == EOF)
			return true; /* the whole line, or the last one without a newline */
		while (c != '\n' && c != EOF)
			c = getc(f);
	}
	return false;
}

/* Whether the comma-separated list holds word as one of its items. */
static bool list_has(const char *list, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = list;;) {
		const char *comma = strchr(p, ',');

		if (strncmp(p, word, n) == 0 && (p[n] == ',' || p[n] == '\0'))
			return true;
		if (!comma)
			return false;
		p = comma + 1;
	}
}

/* Undoes mountinfo's octal escapes (\040 space, \011 tab, \012 newline, \134 backslash) in
 * place; a backslash not followed by three octal digits is kept as it is. */
static void unescape(char *s)
{
	char *w = s;

	for (const char *r = s; *r;) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') << 6 | (r[2] - '0') << 3 | (r[3] - '0'));
			r += 4;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
}

/* Parses a cgroup number file's text: decimal digits, then an optional newline, nothing
 * else. Returns the value, or 0 for anything else: "max" (none), "", garbage, overflow. */
static uint64_t parse_u64(const char *s)
{
	uint64_t v = 0;
	const char *p = s;

	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');

		if (v > (UINT64_MAX - d) / 10)
			return 0; /* overflow */
		v = v * 10 + d;
	}
	if (*p == '\n')
		p++;
	return *p == '\0' ? v : 0;
}

/* Whether errno value e of an open() says the file is not there (rather than that it could
 * not be opened: EMFILE, ENOMEM, EACCES, ELOOP, ...). */
static bool absent(int e)
{
	return e == ENOENT || e == ENOTDIR;
}

/* The number in file dir/name into *ret (see parse_u64()); values >= none_at read as 0, and
 * so do a file that is not there and one that holds no number (garbled, or longer than a
 * number can be). Returns 0, or -errno when the file is there but could not be opened or
 * read (*ret is 0 then too). */
static int read_u64(const char *dir, const char *name, uint64_t none_at, uint64_t *ret)
{
	char path[600], buf[32];
	uint64_t v;
	size_t n;
	FILE *f;
	int r = 0;

	*ret = 0;
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return -ENAMETOOLONG;
	f = fopen(path, "re");
	if (!f)
		return absent(errno) ? 0 : -errno;
	errno = 0;
	n = fread(buf, 1, sizeof(buf), f);
	if (ferror(f))
		r = errno > 0 ? -errno : -EIO;
	fclose(f);
	if (r < 0)
		return r;
	if (n >= sizeof(buf))
		return 0; /* 20 digits and a newline fit; more is not a number */
	buf[n] = '\0';
	v = parse_u64(buf);
	*ret = v >= none_at ? 0 : v;
	return 0;
}

static bool file_exists(const char *dir, const char *name)
{
	char path[600];

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return false;
	return access(path, F_OK) == 0;
}

static uint64_t min_nonzero(uint64_t a, uint64_t b)
{
	if (!a)
		return b;
	if (!b)
		return a;
	return a < b ? a : b;
}

/* The cgroup paths in root/proc/self/cgroup: the v2 one ("0::path") into v2 and the one
 * whose controller list holds "memory" into v1, each "" when absent or longer than size - 1.
 * Lines are "ID:controllers:path"; the path may itself hold colons. Returns 0, or -errno
 * when the file cannot be read. */
static int read_proc_cgroup(const char *root, char *v2, char *v1, size_t size)
{
	char path[4096], line[LINE_BYTES];
	FILE *f;
	int r = 0;

	v2[0] = v1[0] = '\0';
	if ((size_t)snprintf(path, sizeof(path), "%s/proc/self/cgroup", root) >= sizeof(path))
		return -ENAMETOOLONG;
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (next_line(f, line, sizeof(line))) {
		char *controllers = strchr(line, ':'), *cg;

		if (!controllers)
			continue;
		*controllers++ = '\0';
		cg = strchr(controllers, ':');
		if (!cg)
			continue;
		*cg++ = '\0';
		if (cg[0] != '/' || strlen(cg) >= size)
			continue;
		if (strcmp(line, "0") == 0 && controllers[0] == '\0')
			strcpy(v2, cg);
		else if (list_has(controllers, "memory"))
			strcpy(v1, cg);
	}
	if (ferror(f))
		r = -EIO;
	fclose(f);
	return r;
}

/* Whether path has a ".." component. */
static bool has_dotdot(const char *path)
{
	for (const char *p = path; (p = strstr(p, "..")); p += 2)
		if ((p == path || p[-1] == '/') && (p[2] == '/' || p[2] == '\0'))
			return true;
	return false;
}

/* Joins root + mount point + the cgroup path relative to the mount's root into ret_dir and
 * sets *ret_base to the length of root + mount point (where an ancestor walk stops). Returns
 * false when cg lies outside mnt_root (the cgroup is not visible there) or it does not fit.
 * Both paths are relative to the reader's cgroup namespace, so either may start with "/..":
 * a cgroup outside the namespace's root ("0::/../x"). What is left of cg once mnt_root is
 * taken off must go down from the mount point: a ".." there would lead out of the mount. */
static bool cgroup_dir(const char *root, const char *mnt_point, const char *mnt_root,
                       const char *cg, char *ret_dir, size_t size, size_t *ret_base)
{
	const char *rel = cg;
	int n;

	if (strcmp(mnt_root, "/") != 0) {
		size_t len = strlen(mnt_root);

		if (strncmp(cg, mnt_root, len) != 0 || (cg[len] != '\0' && cg[len] != '/'))
			return false;
		rel = cg + len;
	}
	if (has_dotdot(rel))
		return false;
	if (strcmp(rel, "/") == 0)
		rel = "";
	if (strcmp(mnt_point, "/") == 0)
		mnt_point = "";
	n = snprintf(ret_dir, size, "%s%s%s", root, mnt_point, rel);
	if (n < 0 || (size_t)n >= size)
		return false;
	*ret_base = strlen(root) + strlen(mnt_point);
	return true;
}

/* Finds, in root/proc/self/mountinfo, the first mount of fstype (with option among its
 * comma-separated super options, when not NULL) under which cgroup cg is visible, and puts
 * the cgroup's directory into ret_dir (see cgroup_dir()). A line reads
 * "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS",
 * with space, tab, newline and backslash in ROOT and MOUNTPOINT escaped as \ooo.
 * Returns 1 when found, 0 when there is none (or no mountinfo), -errno when mountinfo is
 * there but cannot be opened, -EIO when reading it fails before the mount is found. */
static int find_mount(const char *root, const char *fstype, const char *option, const char *cg,
                      char *ret_dir, size_t size, size_t *ret_base)
{
	char path[4096], line[LINE_BYTES];
	bool found = false;
	FILE *f;
	int r;

	if ((size_t)snprintf(path, sizeof(path), "%s/proc/self/mountinfo", root) >= sizeof(path))
		return -ENAMETOOLONG;
	f = fopen(path, "re");
	if (!f)
		return absent(errno) ? 0 : -errno;
	while (!found && next_line(f, line, sizeof(line))) {
		char *field[MOUNT_FIELDS], *p = line;
		int n = 0, dash = -1;

		while (p && n < MOUNT_FIELDS) {
			field[n] = p;
			p = strchr(p, ' ');
			if (p)
				*p++ = '\0';
			if (dash < 0 && n >= 6 && strcmp(field[n], "-") == 0)
				dash = n;
			n++;
		}
		if (p || dash < 0 || n < dash + 4)
			continue; /* too many fields, or too few */
		if (strcmp(field[dash + 1], fstype) != 0)
			continue;
		if (option && !list_has(field[dash + 3], option))
			continue;
		unescape(field[3]);
		unescape(field[4]);
		found = cgroup_dir(root, field[4], field[3], cg, ret_dir, size, ret_base);
	}
	r = found ? 1 : ferror(f) ? -EIO : 0;
	fclose(f);
	return r;
}

/* The smallest non-zero max_name and high_name from dir up to its first base bytes (the
 * mount point), both included. Returns 0, or the -errno of the first of those files that is
 * there but could not be read (the limits are then those of the others). */
static int walk_limits(const char *dir, size_t base, const char *max_name, const char *high_name,
                       uint64_t none_at, uint64_t *ret_max, uint64_t *ret_high)
{
	char d[sizeof(((struct mimed_cgroup_memory *)0)->dir)];
	uint64_t max = 0, high = 0, v;
	int r = 0, k;

	snprintf(d, sizeof(d), "%s", dir);
	for (;;) {
		char *slash;

		k = read_u64(d, max_name, none_at, &v);
		r = r ? r : k;
		max = min_nonzero(max, v);
		k = read_u64(d, high_name, none_at, &v);
		r = r ? r : k;
		high = min_nonzero(high, v);
		slash = strrchr(d, '/');
		if (strlen(d) <= base || !slash)
			break;
		*slash = '\0'; /* the parent; d is the mount point + "/..." so it stays >= base */
	}
	*ret_max = max;
	*ret_high = high;
	return r;
}

int mimed_cgroup_memory_read(const char *root, struct mimed_cgroup_memory *ret)
{
	struct mimed_cgroup_memory m = {0};
	char v2[sizeof(m.dir)], v1[sizeof(m.dir)];
	size_t base;
	int r;

	r = read_proc_cgroup(root, v2, v1, sizeof(v2));
	if (r < 0)
		return r;

	r = v2[0] ? find_mount(root, "cgroup2", NULL, v2, m.dir, sizeof(m.dir), &base) : 0;
	if (r < 0)
		return r;
	if (r > 0 && (file_exists(m.dir, "memory.max") || file_exists(m.dir, "memory.current"))) {
		m.version = 2;
		m.limits_error = walk_limits(m.dir, base, "memory.max", "memory.high", UINT64_MAX,
		                             &m.max, &m.high);
		(void)read_u64(m.dir, "memory.current", UINT64_MAX, &m.current); /* 0: unknown */
		if (file_exists(m.dir, "memory.pressure"))
			snprintf(m.pressure, sizeof(m.pressure), "%s/memory.pressure", m.dir);
		*ret = m;
		return 0;
	}
	r = v1[0] ? find_mount(root, "cgroup", "memory", v1, m.dir, sizeof(m.dir), &base) : 0;
	if (r < 0)
		return r;
	if (r > 0 && (file_exists(m.dir, "memory.limit_in_bytes") ||
	              file_exists(m.dir, "memory.usage_in_bytes"))) {
		m.version = 1;
		m.limits_error =
			walk_limits(m.dir, base, "memory.limit_in_bytes",
		                    "memory.soft_limit_in_bytes", CGROUP_V1_NONE, &m.max, &m.high);
		(void)read_u64(m.dir, "memory.usage_in_bytes", UINT64_MAX, &m.current);
	} else {
		m.dir[0] = '\0';
	}
	*ret = m;
	return 0;
}
