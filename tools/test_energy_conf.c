// SPDX-License-Identifier: MIT
/* test_energy_conf -- the accelerator YAML loader of mime-energy (tools/energy_conf.c): the
 * shipped file is Table IV, every key overrides its field, absent keys keep theirs, and every
 * bad file fails with MIME_EINVAL (or -errno) and a message naming file and line.
 * Built from tools/meson.build (the loader lives in tools/), suite 'unit'. */
#include "tests/unit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/energy_conf.h"

/* Loads text from a temporary file into hw (starting from the defaults); returns the code
 * and, in ret_path (may be NULL), the file's path for message checks (caller frees). */
static int load_text(const char *text, struct mime_energy_hw *hw, struct mime_errinfo *ei,
                     char **ret_path)
{
	char *path = mime_test_tmpfile(text, strlen(text));
	int r;

	assert_non_null(path);
	mime_energy_hw_default(hw);
	r = energy_conf_load(path, hw, ei);
	unlink(path);
	if (ret_path)
		*ret_path = path;
	else
		free(path);
	return r;
}

static void expect_error(const char *text, int line, const char *what)
{
	struct mime_energy_hw hw;
	struct mime_errinfo ei = {0};
	char *path, where[4200];

	assert_int_equal(load_text(text, &hw, &ei, &path), MIME_EINVAL);
	snprintf(where, sizeof(where), "%s:%d: ", path, line);
	if (!strstr(ei.msg, where) || !strstr(ei.msg, what))
		fail_msg("message '%s' lacks '%s' or '%s'", ei.msg, where, what);
	free(path);
}

static void test_energy_conf_load_shipped_file_is_table_iv(void **state)
{
	struct mime_energy_hw hw, def;
	struct mime_errinfo ei = {0};
	char *path = mime_test_source_path("conf/accelerator.yaml");

	(void)state;
	mime_energy_hw_default(&def);
	memset(&hw, 0, sizeof(hw));
	hw.pe_rows = 3; /* overwritten: the file sets every key */
	assert_int_equal(energy_conf_load(path, &hw, &ei), 0);
	assert_memory_equal(&hw, &def, sizeof(hw));
	assert_int_equal(hw.pe_rows * hw.pe_cols, 1024);
	assert_int_equal(hw.act_cache_bytes, 156 * 1024);
	free(path);
}

static void test_energy_conf_load_overrides_every_key(void **state)
{
	static const char text[] = "# every key, none at its default\n"
				   "technology_nm: 45\n"
				   "word_bits: 8\n"
				   "pe_rows: 16\n"
				   "pe_cols: 8\n"
				   "activation_cache_kib: 128\n"
				   "weight_cache_kib: 64.5\n"
				   "threshold_cache_kib: 2\n"
				   "spad_bytes: 256\n"
				   "e_dram: 150.5\n"
				   "e_cache: 5\n"
				   "e_reg: 1.5\n"
				   "e_mac: 0.5   # trailing comment\n";
	struct mime_energy_hw hw;
	struct mime_errinfo ei = {0};

	(void)state;
	assert_int_equal(load_text(text, &hw, &ei, NULL), 0);
	assert_int_equal(hw.technology_nm, 45);
	assert_int_equal(hw.word_bits, 8);
	assert_int_equal(hw.pe_rows, 16);
	assert_int_equal(hw.pe_cols, 8);
	assert_int_equal(hw.act_cache_bytes, 128 * 1024);
	assert_int_equal(hw.weight_cache_bytes, 64 * 1024 + 512);
	assert_int_equal(hw.thr_cache_bytes, 2048);
	assert_int_equal(hw.spad_bytes, 256);
	assert_true(hw.e_dram == 150.5);
	assert_true(hw.e_cache == 5);
	assert_true(hw.e_reg == 1.5);
	assert_true(hw.e_mac == 0.5);
}

static void test_energy_conf_load_absent_keys_keep_their_values(void **state)
{
	struct mime_energy_hw hw, want;
	struct mime_errinfo ei = {0};

	(void)state;
	mime_energy_hw_default(&want);
	want.pe_rows = want.pe_cols = 16;
	assert_int_equal(load_text("{pe_rows: 16, pe_cols: 16}\n", &hw, &ei, NULL), 0);
	assert_memory_equal(&hw, &want, sizeof(hw));
	/* an empty file (or only comments) changes nothing */
	mime_energy_hw_default(&want);
	assert_int_equal(load_text("# nothing\n", &hw, &ei, NULL), 0);
	assert_memory_equal(&hw, &want, sizeof(hw));
}

static void test_energy_conf_load_unknown_key_names_file_and_line(void **state)
{
	(void)state;
	expect_error("pe_rows: 4\n\ncache_kib: 1\n", 3, "unknown key 'cache_kib'");
}

static void test_energy_conf_load_rejects_negative_numbers(void **state)
{
	(void)state;
	expect_error("e_dram: 200\nspad_bytes: -512\n", 2, "must not be negative");
	expect_error("e_reg: -1\n", 1, "must not be negative");
	expect_error("weight_cache_kib: -0.5\n", 1, "must not be negative");
}

static void test_energy_conf_load_rejects_malformed_values(void **state)
{
	(void)state;
	expect_error("e_dram: lots\n", 1, "'lots' is not a number");
	expect_error("e_mac: .inf\n", 1, "not a number");
	expect_error("pe_cols: 2.5\n", 1, "not an integer");
	expect_error("word_bits: \n", 1, "not a number");
}

static void test_energy_conf_load_rejects_structure(void **state)
{
	(void)state;
	expect_error("pe_rows: 4\narray: {rows: 4}\n", 2, "nested mappings");
	expect_error("pe_rows: [4, 4]\n", 1, "lists are not allowed");
	expect_error("- pe_rows\n", 1, "lists are not allowed");
	expect_error("pe_rows: &a 4\npe_cols: *a\n", 2, "aliases are not allowed");
	expect_error("pe_rows: 4\n\tpe_cols: 4\n", 2, "tab character");
}

/* The loaded hardware is checked as a whole: the file name and the field, no line. */
static void test_energy_conf_load_checks_the_hardware(void **state)
{
	static const struct {
		const char *text, *what;
	} cases[] = {
		{"pe_rows: 0\n", "needs at least one PE"},
		{"pe_cols: 0\n", "needs at least one PE"},
		{"word_bits: 0\n", "word_bits 0 outside 1..64"},
		{"word_bits: 65\n", "outside 1..64"},
		{"threshold_cache_kib: 0\n", "cache sizes must be positive"},
		{"spad_bytes: 7\n", "cannot hold x, w, psum and threshold"},
	};

	(void)state;
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct mime_energy_hw hw;
		struct mime_errinfo ei = {0};
		char *path;

		assert_int_equal(load_text(cases[i].text, &hw, &ei, &path), MIME_EINVAL);
		if (strncmp(ei.msg, path, strlen(path)) != 0 || !strstr(ei.msg, cases[i].what))
			fail_msg("'%s': message '%s'", cases[i].text, ei.msg);
		free(path);
	}
}

static void test_energy_conf_load_missing_file_is_enoent(void **state)
{
	struct mime_energy_hw hw;
	struct mime_errinfo ei = {0};

	(void)state;
	mime_energy_hw_default(&hw);
	assert_int_equal(energy_conf_load("/nonexistent/accelerator.yaml", &hw, &ei), -ENOENT);
	assert_non_null(strstr(ei.msg, "/nonexistent/accelerator.yaml"));
}

static void test_energy_conf_set_one_key(void **state)
{
	struct mime_energy_hw hw;
	struct mime_errinfo ei = {0};

	(void)state;
	mime_energy_hw_default(&hw);
	assert_int_equal(energy_conf_set(&hw, "pe_rows", "16", &ei), 0);
	assert_int_equal(hw.pe_rows, 16);
	assert_int_equal(energy_conf_set(&hw, "threshold_cache_kib", "128", &ei), 0);
	assert_int_equal(hw.thr_cache_bytes, 128 * 1024);
	assert_int_equal(energy_conf_set(&hw, "pe_row", "16", &ei), MIME_EINVAL);
	assert_string_equal(ei.msg, "unknown key 'pe_row'");
	assert_int_equal(energy_conf_set(&hw, "e_cache", "-6", &ei), MIME_EINVAL);
	assert_int_equal(energy_conf_set(&hw, "e_cache", "6x", &ei), MIME_EINVAL);
	assert_int_equal(energy_conf_set(&hw, "pe_cols", "1e12", &ei), MIME_EINVAL);
	assert_int_equal(hw.pe_cols, 32); /* failures leave the field alone */
	assert_true(hw.e_cache == 6);
	assert_int_equal(energy_conf_set(&hw, "pe_cols", "8", NULL), 0); /* ei may be NULL */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_energy_conf_load_shipped_file_is_table_iv),
		cmocka_unit_test(test_energy_conf_load_overrides_every_key),
		cmocka_unit_test(test_energy_conf_load_absent_keys_keep_their_values),
		cmocka_unit_test(test_energy_conf_load_unknown_key_names_file_and_line),
		cmocka_unit_test(test_energy_conf_load_rejects_negative_numbers),
		cmocka_unit_test(test_energy_conf_load_rejects_malformed_values),
		cmocka_unit_test(test_energy_conf_load_rejects_structure),
		cmocka_unit_test(test_energy_conf_load_checks_the_hardware),
		cmocka_unit_test(test_energy_conf_load_missing_file_is_enoent),
		cmocka_unit_test(test_energy_conf_set_one_key),
	};

	return cmocka_run_group_tests_name("energy_conf", tests, NULL, NULL);
}
