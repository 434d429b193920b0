// SPDX-License-Identifier: MIT
/* energy_conf -- see energy_conf.h. */
#include "tools/energy_conf.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

enum kind { K_INT, K_KIB, K_BYTES, K_ENERGY };

static const struct key {
	const char *name;
	enum kind kind;
	size_t off;
} keys[] = {
	{"technology_nm", K_INT, offsetof(struct mime_energy_hw, technology_nm)},
	{"word_bits", K_INT, offsetof(struct mime_energy_hw, word_bits)},
	{"pe_rows", K_INT, offsetof(struct mime_energy_hw, pe_rows)},
	{"pe_cols", K_INT, offsetof(struct mime_energy_hw, pe_cols)},
	{"activation_cache_kib", K_KIB, offsetof(struct mime_energy_hw, act_cache_bytes)},
	{"weight_cache_kib", K_KIB, offsetof(struct mime_energy_hw, weight_cache_bytes)},
	{"threshold_cache_kib", K_KIB, offsetof(struct mime_energy_hw, thr_cache_bytes)},
	{"spad_bytes", K_BYTES, offsetof(struct mime_energy_hw, spad_bytes)},
	{"e_dram", K_ENERGY, offsetof(struct mime_energy_hw, e_dram)},
	{"e_cache", K_ENERGY, offsetof(struct mime_energy_hw, e_cache)},
	{"e_reg", K_ENERGY, offsetof(struct mime_energy_hw, e_reg)},
	{"e_mac", K_ENERGY, offsetof(struct mime_energy_hw, e_mac)},
};

int energy_conf_set(struct mime_energy_hw *hw, const char *key, const char *value,
                    struct mime_errinfo *ei)
{
	char *end;
	double v;

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const struct key *k = &keys[i];
		char *field = (char *)hw + k->off;

		if (strcmp(key, k->name) != 0)
			continue;
		errno = 0;
		v = strtod(value, &end);
		if (errno || end == value || *end != '\0' || !isfinite(v))
			return mime_errinfo_set(ei, MIME_EINVAL, "%s: '%s' is not a number", key,
			                        value);
		if (v < 0)
			return mime_errinfo_set(ei, MIME_EINVAL, "%s: %s must not be negative", key,
			                        value);
		switch (k->kind) {
		case K_INT:
			if (v != floor(v) || v > 1e9)
				return mime_errinfo_set(ei, MIME_EINVAL, "%s: %s is not an integer",
				                        key, value);
			*(int *)field = (int)v;
			break;
		case K_KIB:
			v *= 1024;
			/* fall through */
		case K_BYTES:
			if (v > 1e15)
				return mime_errinfo_set(ei, MIME_EINVAL, "%s: %s is too large", key,
				                        value);
			*(long *)field = (long)llround(v);
			break;
		case K_ENERGY:
			*(double *)field = v;
			break;
		}
		return 0;
	}
	return mime_errinfo_set(ei, MIME_EINVAL, "unknown key '%s'", key);
}

/* The format: a single document holding one block or flow mapping of scalar keys to scalar
 * values (or nothing at all). */
int energy_conf_load(const char *path, struct mime_energy_hw *hw, struct mime_errinfo *ei)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	char key[64] = "";
	int have_key = 0, depth = 0, done = 0, r = 0;
	FILE *f;

	f = fopen(path, "r");
	if (!f) {
		r = -errno;
		return mime_errinfo_set(ei, r, "%s: %s", path, strerror(-r));
	}
	if (!yaml_parser_initialize(&parser)) {
		r = -ENOMEM;
		goto out_file;
	}
	yaml_parser_set_input_file(&parser, f);
	while (!done) {
		if (!yaml_parser_parse(&parser, &ev)) {
			r = mime_errinfo_set(ei, MIME_EINVAL, "%s:%zu: %s", path,
			                     parser.problem_mark.line + 1,
			                     parser.problem ? parser.problem : "syntax error");
			goto out_parser;
		}
		size_t line = ev.start_mark.line + 1;

		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = 1;
			break;
		case YAML_MAPPING_START_EVENT:
			if (++depth > 1)
				r = mime_errinfo_set(ei, MIME_EINVAL,
				                     "%s:%zu: nested mappings are not allowed",
				                     path, line);
			break;
		case YAML_MAPPING_END_EVENT:
			depth--;
			break;
		case YAML_SEQUENCE_START_EVENT:
			r = mime_errinfo_set(ei, MIME_EINVAL, "%s:%zu: lists are not allowed", path,
			                     line);
			break;
		case YAML_SCALAR_EVENT: {
			const char *s = (const char *)ev.data.scalar.value;

			if (depth != 1) {
				r = mime_errinfo_set(ei, MIME_EINVAL,
				                     "%s:%zu: expected a mapping of keys", path,
				                     line);
			} else if (!have_key) {
				snprintf(key, sizeof(key), "%s", s);
				have_key = 1;
			} else {
				have_key = 0;
				r = energy_conf_set(hw, key, s, ei);
				if (r < 0 && ei) {
					char msg[sizeof(ei->msg)];

					snprintf(msg, sizeof(msg), "%s", ei->msg);
					mime_errinfo_set(ei, r, "%s:%zu: %s", path, line, msg);
				}
			}
			break;
		}
		case YAML_ALIAS_EVENT:
			r = mime_errinfo_set(ei, MIME_EINVAL, "%s:%zu: aliases are not allowed",
			                     path, line);
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
		if (r < 0)
			goto out_parser;
	}
	r = mime_energy_hw_check(hw, ei);
	if (r < 0 && ei) {
		char msg[sizeof(ei->msg)];

		snprintf(msg, sizeof(msg), "%s", ei->msg);
		mime_errinfo_set(ei, r, "%s: %s", path, msg);
	}

out_parser:
	yaml_parser_delete(&parser);
out_file:
	fclose(f);
	return r;
}
