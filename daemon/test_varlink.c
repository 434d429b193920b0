// SPDX-License-Identifier: MIT
/* test_varlink -- framing, call parsing, replies and base64 of mimed's Varlink layer. */
#include "tests/unit.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/varlink.h"

static void test_varlink_framer_splits_on_nul(void **state)
{
	static const char in[] = "{\"a\":1}\0{\"b\":2}\0{\"c\"";
	struct mimed_framer f;
	char *msg;
	size_t len;

	mimed_framer_init(&f, 1024);
	assert_int_equal(mimed_framer_feed(&f, in, sizeof(in) - 1), 0);
	assert_int_equal(mimed_framer_next(&f, &msg, &len), 1);
	assert_int_equal(len, 7);
	assert_string_equal(msg, "{\"a\":1}");
	assert_int_equal(mimed_framer_next(&f, &msg, &len), 1);
	assert_string_equal(msg, "{\"b\":2}");
	assert_int_equal(mimed_framer_next(&f, &msg, &len), 0);
	assert_int_equal(mimed_framer_pending(&f), 4);
	assert_int_equal(mimed_framer_feed(&f, ":3}", 4), 0); /* with its NUL */
	assert_int_equal(mimed_framer_next(&f, &msg, &len), 1);
	assert_string_equal(msg, "{\"c\":3}");
	assert_int_equal(mimed_framer_pending(&f), 0);
	mimed_framer_fini(&f);
}

static void test_varlink_framer_byte_by_byte(void **state)
{
	static const char in[] = "{\"method\":\"x.Y\"}";
	struct mimed_framer f;
	char *msg;
	size_t len;

	mimed_framer_init(&f, 1024);
	for (size_t i = 0; i < sizeof(in); i++) { /* sizeof includes the NUL */
		assert_int_equal(mimed_framer_feed(&f, in + i, 1), 0);
		assert_int_equal(mimed_framer_next(&f, &msg, &len), i + 1 == sizeof(in));
	}
	assert_string_equal(msg, in);
	mimed_framer_fini(&f);
}

static void test_varlink_framer_caps_message_size(void **state)
{
	char big[100];
	struct mimed_framer f;
	char *msg;
	size_t len;

	memset(big, 'x', sizeof(big));
	mimed_framer_init(&f, 64);
	/* Exactly the cap is fine. */
	assert_int_equal(mimed_framer_feed(&f, big, 64), 0);
	assert_int_equal(mimed_framer_next(&f, &msg, &len), 0);
	assert_int_equal(mimed_framer_feed(&f, "", 1), 0);
	assert_int_equal(mimed_framer_next(&f, &msg, &len), 1);
	assert_int_equal(len, 64);
	/* Over the cap without a NUL yet. */
	assert_int_equal(mimed_framer_feed(&f, big, 65), 0);
	assert_int_equal(mimed_framer_next(&f, &msg, &len), -EMSGSIZE);
	mimed_framer_fini(&f);

	/* Over the cap, complete. */
	mimed_framer_init(&f, 64);
	big[80] = 0;
	assert_int_equal(mimed_framer_feed(&f, big, 81), 0);
	assert_int_equal(mimed_framer_next(&f, &msg, &len), -EMSGSIZE);
	mimed_framer_fini(&f);
}

static void test_varlink_parse_accepts_a_call(void **state)
{
	static const char in[] =
		"{\"method\":\"io.mime.Infer\",\"parameters\":{\"task\":\"t\"},\"more\":true}";
	struct mimed_varlink_call c;
	const char *err;
	char desc[128];

	assert_int_equal(mimed_varlink_parse(in, strlen(in), &c, &err, desc, sizeof(desc)), 0);
	assert_null(err);
	assert_string_equal(c.method, "io.mime.Infer");
	assert_string_equal(json_string_value(json_object_get(c.params, "task")), "t");
	assert_true(c.more);
	assert_false(c.oneway);
	mimed_varlink_call_fini(&c);
}

static void test_varlink_parse_defaults_parameters(void **state)
{
	static const char in[] = "{\"method\":\"io.mime.ListTasks\",\"oneway\":true}";
	struct mimed_varlink_call c;
	const char *err;
	char desc[128];

	assert_int_equal(mimed_varlink_parse(in, strlen(in), &c, &err, desc, sizeof(desc)), 0);
	assert_true(json_is_object(c.params));
	assert_int_equal(json_object_size(c.params), 0);
	assert_true(c.oneway);
	mimed_varlink_call_fini(&c);
}

static void test_varlink_parse_rejects_bad_calls(void **state)
{
	static const char *bad[] = {
		"{\"method\":\"io.mime.Infer\"",           /* truncated */
		"not json",                                /* not JSON */
		"[1,2]",                                   /* not an object */
		"{}",                                      /* no method */
		"{\"method\":42}",                         /* method not a string */
		"{\"method\":\"NoDot\"}",                  /* no interface */
		"{\"method\":\"a.B\",\"parameters\":[]}",  /* parameters not object */
		"{\"method\":\"a.B\",\"more\":1}",         /* more not bool */
		"{\"method\":\"a.B\",\"oneway\":\"yes\"}", /* oneway not bool */
		"{\"method\":\"a.B\",\"method\":\"a.C\"}", /* duplicate key */
	};
	struct mimed_varlink_call c;
	const char *err;
	char desc[128];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		desc[0] = 0;
		assert_int_equal(
			mimed_varlink_parse(bad[i], strlen(bad[i]), &c, &err, desc, sizeof(desc)),
			-EINVAL);
		assert_string_equal(err, MIMED_ERR_INVALID_REQUEST);
		assert_true(desc[0] != 0);
	}
}

static void test_varlink_split_names_interface_and_member(void **state)
{
	char buf[32];

	assert_string_equal(mimed_varlink_split("io.mime.Infer", buf, sizeof(buf)), "Infer");
	assert_string_equal(buf, "io.mime");
	assert_string_equal(mimed_varlink_split("org.varlink.service.GetInfo", buf, sizeof(buf)),
	                    "GetInfo");
	assert_string_equal(buf, "org.varlink.service");
	assert_null(mimed_varlink_split("Infer", buf, sizeof(buf)));
	assert_null(mimed_varlink_split("io.mime.", buf, sizeof(buf)));
	assert_null(mimed_varlink_split("io.mime.Infer", buf, 4));
}

static void test_varlink_reply_is_nul_terminated_json(void **state)
{
	size_t len;
	char *s = mimed_varlink_reply(json_pack("{s:i}", "x", 1), true, &len);

	assert_non_null(s);
	assert_int_equal(s[len - 1], 0);
	assert_int_equal(strlen(s) + 1, len);
	assert_string_equal(s, "{\"parameters\":{\"x\":1},\"continues\":true}");
	free(s);

	s = mimed_varlink_reply(NULL, false, &len);
	assert_string_equal(s, "{\"parameters\":{}}");
	free(s);

	s = mimed_varlink_error_desc(MIMED_ERR_INVALID_PARAM, "top_k", "must be >= 1", &len);
	assert_string_equal(s, "{\"error\":\"org.varlink.service.InvalidParameter\","
	                       "\"parameters\":{\"parameter\":\"top_k\",\"description\":"
	                       "\"must be >= 1\"}}");
	assert_int_equal(strlen(s) + 1, len);
	free(s);
}

static void test_varlink_base64_decodes(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{"", ""},
		{"Zg==", "f"},
		{"Zg", "f"},
		{"Zm8=", "fo"},
		{"Zm9v", "foo"},
		{"Zm9vYg==", "foob"},
		{"Zm9vYmE=", "fooba"},
		{"Zm9vYmFy", "foobar"},
	};
	uint8_t *out;
	size_t len;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(
			mimed_base64_decode(cases[i].in, strlen(cases[i].in), 1024, &out, &len), 0);
		assert_int_equal(len, strlen(cases[i].out));
		assert_memory_equal(out, cases[i].out, len);
		free(out);
	}
}

static void test_varlink_base64_rejects_garbage(void **state)
{
	static const char *bad[] = {"Z", "Zg=", "Zm9v!", "Zm 9v", "Zh==", "Zm9=v", "===="};
	uint8_t *out = NULL;
	size_t len;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(mimed_base64_decode(bad[i], strlen(bad[i]), 1024, &out, &len),
		                 -EINVAL);
	assert_null(out);
	assert_int_equal(mimed_base64_decode("Zm9vYmFy", 8, 5, &out, &len), -EMSGSIZE);
}

/* The hand-built text is byte for byte what jansson writes for the same values. */
static void test_varlink_text_matches_jansson(void **state)
{
	static const double reals[] = {0.0,
	                               -0.0,
	                               1.0,
	                               0.5,
	                               -2.25,
	                               1e20,
	                               1e-5,
	                               4.9949117965297773e-5,
	                               0.99993610382080078,
	                               1e300,
	                               -1e-300,
	                               123456789012345678.0,
	                               7102.0896682739258,
	                               3.0e17,
	                               1.5e-7,
	                               (double)0.1f,
	                               5e-324,
	                               1.7976931348623157e308};
	static const long long ints[] = {0, -1, 42, 9007199254740993LL, -9223372036854775807LL - 1};
	static const char *const strs[] = {"",
	                                   "T-shirt/top",
	                                   "a\"b\\c",
	                                   "tab\tnl\ncr\r",
	                                   "\b\f\x01\x1f\x7f",
	                                   "caf\xc3\xa9 \xe2\x82\xac"};
	json_t *arr = json_array();
	struct mimed_text t;
	char *want, *got;
	size_t len;

	mimed_text_init(&t);
	mimed_text_lit(&t, "[");
	for (size_t i = 0; i < sizeof(reals) / sizeof(reals[0]); i++) {
		json_array_append_new(arr, json_real(reals[i]));
		mimed_text_real(&t, reals[i]);
		mimed_text_lit(&t, ",");
	}
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		json_array_append_new(arr, json_integer(ints[i]));
		mimed_text_int(&t, ints[i]);
		mimed_text_lit(&t, ",");
	}
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		json_array_append_new(arr, json_string(strs[i]));
		mimed_text_str(&t, strs[i]);
		if (i + 1 < sizeof(strs) / sizeof(strs[0]))
			mimed_text_lit(&t, ",");
	}
	mimed_text_lit(&t, "]");
	want = json_dumps(arr, JSON_COMPACT);
	got = mimed_text_take(&t, &len);
	assert_non_null(want);
	assert_non_null(got);
	assert_string_equal(got, want);
	assert_int_equal(len, strlen(want) + 1);
	free(want);
	free(got);
	json_decref(arr);

	/* A long text grows; a non-finite real fails it and later calls are no-ops. */
	mimed_text_init(&t);
	for (int i = 0; i < 5000; i++)
		mimed_text_str(&t, "0123456789");
	assert_int_equal(t.len, 5000 * 12);
	mimed_text_real(&t, NAN);
	assert_true(t.failed);
	mimed_text_int(&t, 1);
	assert_null(mimed_text_take(&t, &len));
	assert_null(t.buf);
	mimed_text_init(&t);
	mimed_text_real(&t, INFINITY);
	assert_null(mimed_text_take(&t, &len));
	mimed_text_fini(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_varlink_framer_splits_on_nul),
		cmocka_unit_test(test_varlink_framer_byte_by_byte),
		cmocka_unit_test(test_varlink_framer_caps_message_size),
		cmocka_unit_test(test_varlink_parse_accepts_a_call),
		cmocka_unit_test(test_varlink_parse_defaults_parameters),
		cmocka_unit_test(test_varlink_parse_rejects_bad_calls),
		cmocka_unit_test(test_varlink_split_names_interface_and_member),
		cmocka_unit_test(test_varlink_reply_is_nul_terminated_json),
		cmocka_unit_test(test_varlink_base64_decodes),
		cmocka_unit_test(test_varlink_base64_rejects_garbage),
		cmocka_unit_test(test_varlink_text_matches_jansson),
	};
	return cmocka_run_group_tests_name("varlink", tests, NULL, NULL);
}
