// SPDX-License-Identifier: MIT
/* unit -- shared fixtures for the cmocka tests. */
#include "tests/unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *mime_test_tmpfile(const void *data, size_t size)
{
	const char *dir = getenv("TMPDIR");
	char *path;
	int fd;

	if (asprintf(&path, "%s/mime-test-XXXXXX", dir ? dir : "/tmp") < 0)
		return NULL;
	fd = mkstemp(path);
	if (fd < 0) {
		free(path);
		return NULL;
	}
	if (size && write(fd, data, size) != (ssize_t)size) {
		close(fd);
		unlink(path);
		free(path);
		return NULL;
	}
	close(fd);
	return path;
}

uint64_t mime_test_rand(uint64_t *state)
{
	uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ull;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1Dull;
}

float mime_test_uniform(uint64_t *state, float lo, float hi)
{
	return lo + (hi - lo) * (float)(mime_test_rand(state) >> 40) / (float)(1 << 24);
}

char *mime_test_source_path(const char *rel)
{
	const char *root = getenv("MIME_SOURCE_ROOT");
	char *p;

	if (asprintf(&p, "%s/%s", root ? root : ".", rel) < 0)
		return NULL;
	return p;
}
