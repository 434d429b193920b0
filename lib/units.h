/* SPDX-License-Identifier: MIT */
/* units -- parse the sizes and durations people type in configs and on command lines:
 * "48M", "1.5KiB", "4096" (bytes; K/M/G/T are powers of 1024, with or without "iB"), and
 * "5ms", "250us", "2s", "1min" (a bare number takes the caller's default unit).
 * Ownership: none. Threads: pure functions. */
#pragma once

#include <stdint.h>

/* Bytes; a bare number must be whole. Returns 0, or -EINVAL (empty, sign, unknown suffix,
 * >= 2^63 bytes). */
int mime_parse_bytes(const char *s, uint64_t *ret_bytes);

/* Microseconds, rounded; a bare number is in default_unit_us. Returns 0 or -EINVAL (empty,
 * sign, unknown suffix, >= 2^62 us). */
int mime_parse_duration_us(const char *s, uint64_t default_unit_us, uint64_t *ret_us);
