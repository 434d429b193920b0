/* SPDX-License-Identifier: MIT */
/* energy_conf -- reads conf/accelerator.yaml (and KEY=VALUE overrides) into a
 * struct mime_energy_hw. The file is one flat YAML mapping; keys: technology_nm, word_bits,
 * pe_rows, pe_cols, activation_cache_kib, weight_cache_kib, threshold_cache_kib, spad_bytes,
 * e_dram, e_cache, e_reg, e_mac. Absent keys keep the value already in hw.
 * Ownership: caller storage only. Threads: reentrant. */
#pragma once

#include "lib/energy.h"

/* Sets one key from its text; MIME_EINVAL for an unknown key, a malformed or negative number;
 * the hardware as a whole is checked by energy_conf_load() / mime_energy_hw_check(). */
int energy_conf_set(struct mime_energy_hw *hw, const char *key, const char *value,
                    struct mime_errinfo *ei);

/* Overrides hw with the keys of the YAML file at path, then checks the result. Errors name
 * the file and line: -errno when it cannot be opened, MIME_EINVAL otherwise. */
int energy_conf_load(const char *path, struct mime_energy_hw *hw, struct mime_errinfo *ei);
