/* SPDX-License-Identifier: MIT */
/* unit -- what every cmocka test includes first, and small shared fixtures. */
#pragma once

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* Writes size bytes to a new temporary file; returns its malloc'ed path or NULL. */
char *mime_test_tmpfile(const void *data, size_t size);
/* A deterministic generator for test data (xorshift64*). */
uint64_t mime_test_rand(uint64_t *state);
/* Uniform float in [lo, hi). */
float mime_test_uniform(uint64_t *state, float lo, float hi);
/* Path under the source tree (MIME_SOURCE_ROOT or "."), malloc'ed. */
char *mime_test_source_path(const char *rel);
