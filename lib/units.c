// SPDX-License-Identifier: MIT
/* units -- see units.h. */
#include "lib/units.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A decimal number with an optional fraction, then the unit suffix in *ret_end. */
static int parse_number(const char *s, double *ret_v, const char **ret_end)
{
	char *end;
	double v;

	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || !isfinite(v) || v < 0)
		return -EINVAL;
	*ret_v = v;
	*ret_end = end;
	return 0;
}

int mime_parse_bytes(const char *s, uint64_t *ret_bytes)
{
	static const struct {
		const char *suffix;
		double mult;
	} units[] = {
		{"", 1},         {"B", 1},      {"K", 0x1p10},   {"KiB", 0x1p10}, {"M", 0x1p20},
		{"MiB", 0x1p20}, {"G", 0x1p30}, {"GiB", 0x1p30}, {"T", 0x1p40},   {"TiB", 0x1p40},
	};
	const char *end;
	double v;

	if (parse_number(s, &v, &end) < 0)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].suffix) == 0) {
			v *= units[i].mult;
			if (v >= 0x1p63 || (units[i].mult == 1 && v != floor(v)))
				return -EINVAL;
			*ret_bytes = (uint64_t)v;
			return 0;
		}
	}
	return -EINVAL;
}

int mime_parse_duration_us(const char *s, uint64_t default_unit_us, uint64_t *ret_us)
{
	static const struct {
		const char *suffix;
		double us;
	} units[] = {{"us", 1}, {"ms", 1e3}, {"s", 1e6}, {"min", 60e6}};
	const char *end;
	double v, mult = -1;

	if (parse_number(s, &v, &end) < 0)
		return -EINVAL;
	if (!*end)
		mult = (double)default_unit_us;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcmp(end, units[i].suffix) == 0)
			mult = units[i].us;
	if (mult < 0 || v * mult >= 0x1p62)
		return -EINVAL;
	*ret_us = (uint64_t)llround(v * mult);
	return 0;
}
