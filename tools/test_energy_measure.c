// SPDX-License-Identifier: MIT
/* test_energy_measure -- sparsities measured by the engine for mime-energy --bundle
 * (tools/energy_measure.c) on a bundle small enough to count by hand: input 1x4x4, one 1x1
 * conv with two filters (+1 and -1, no bias), ReLU or a per-channel threshold mask. Task "a"
 * has no thresholds and a conventional copy whose filters are both -1; task "b" has the
 * thresholds {0.5, 0}. Every image: 8 pixels 1.0, 4 pixels 0.2, 4 pixels 0.
 *   input sparsity         4/16 = 0.25 (mean 0, std 1: zeros stay exact zeros)
 *   a, MIME (ReLU)         filter +1 zero on the 4 zeros, filter -1 zero everywhere: 20/32
 *   a, conventional        both filters -1: 32/32
 *   b, MIME (thr 0.5, 0)   filter +1 zero below 0.5 (8), filter -1 everywhere (16): 24/32
 *   b, baseline            no conventional copy: the parent with ReLU, 20/32
 * Built from tools/meson.build, suite 'unit'. */
#include "tests/unit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/bundle.h"
#include "lib/idx.h"
#include "tools/energy_measure.h"

#define N_IMAGES 3

static const char MANIFEST[] =
	"{\"format\":\"mime-bundle\",\"version\":1,"
	"\"graph\":{\"input\":[1,4,4],\"layers\":["
	"{\"name\":\"conv1\",\"kind\":\"conv\",\"out\":2,\"kernel\":1,\"stride\":1,\"pad\":0,"
	"\"act\":\"relu\"},{\"name\":\"flatten\",\"kind\":\"flatten\"}]},"
	"\"tasks\":["
	"{\"name\":\"a\",\"classes\":[\"x\",\"y\"],\"input\":{\"channels\":1,\"height\":4,"
	"\"width\":4,\"resize\":\"bilinear\",\"fit\":\"stretch\",\"invert\":false,\"mean\":[0],"
	"\"std\":[1]},\"thresholds\":\"none\"},"
	"{\"name\":\"b\",\"classes\":[\"x\",\"y\"],\"input\":{\"channels\":1,\"height\":4,"
	"\"width\":4,\"resize\":\"bilinear\",\"fit\":\"stretch\",\"invert\":false,\"mean\":[0],"
	"\"std\":[1]},\"thresholds\":\"channel\"}]}";

struct fixture {
	char bundle[64], images[64];
};

static int add(struct mime_bundle_writer *w, const char *name, int ndim, const int64_t *shape,
               const float *data)
{
	return mime_bundle_writer_add(w, name, MIME_DTYPE_F32, ndim, shape, data);
}

static int setup(void **state)
{
	static const float w[2] = {1, -1}, w_conv[2] = {-1, -1}, zero[64] = {0};
	static const float thr[2] = {0.5f, 0};
	static const int64_t s_w[4] = {2, 1, 1, 1}, s_b[1] = {2}, s_head[2] = {2, 32};
	struct fixture *f = calloc(1, sizeof(*f));
	struct mime_bundle_writer *wr = NULL;
	struct mime_manifest m;
	uint8_t px[N_IMAGES * 16];
	const uint32_t dims[3] = {N_IMAGES, 4, 4};
	int fd, r;

	if (!f || mime_manifest_parse(MANIFEST, sizeof(MANIFEST) - 1, &m, NULL) < 0)
		return -1;
	for (int i = 0; i < N_IMAGES * 16; i++)
		px[i] = i % 16 < 8 ? 255 : i % 16 < 12 ? 51 : 0;
	snprintf(f->bundle, sizeof(f->bundle), "/tmp/mime-test-XXXXXX");
	snprintf(f->images, sizeof(f->images), "/tmp/mime-test-XXXXXX");
	fd = mkstemp(f->bundle);
	if (fd >= 0)
		close(fd);
	fd = fd >= 0 ? mkstemp(f->images) : -1;
	if (fd >= 0)
		close(fd);
	r = fd >= 0 && mime_bundle_writer_create(&wr) == 0 ? 0 : -1;
	if (r == 0)
		r = add(wr, "parent/conv1.weight", 4, s_w, w) ||
		    add(wr, "parent/conv1.bias", 1, s_b, zero) ||
		    add(wr, "task/a/head.weight", 2, s_head, zero) ||
		    add(wr, "task/a/head.bias", 1, s_b, zero) ||
		    add(wr, "task/b/head.weight", 2, s_head, zero) ||
		    add(wr, "task/b/head.bias", 1, s_b, zero) ||
		    add(wr, "task/b/conv1.threshold", 1, s_b, thr) ||
		    add(wr, "conventional/a/conv1.weight", 4, s_w, w_conv) ||
		    add(wr, "conventional/a/conv1.bias", 1, s_b, zero);
	if (r == 0)
		r = mime_bundle_writer_write(wr, &m, f->bundle, NULL);
	if (r == 0)
		r = mime_idx_write(f->images, 3, dims, px, NULL);
	mime_bundle_writer_destroy(wr);
	mime_manifest_free(&m);
	*state = f;
	return r ? -1 : 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	unlink(f->bundle);
	unlink(f->images);
	free(f);
	return 0;
}

#define EQ(a, b) assert_float_equal((a), (b), 1e-6)

static void test_energy_measure_counts_by_hand(void **state)
{
	struct fixture *f = *state;
	const char *tasks[] = {"a", "b"}, *images[] = {f->images};
	struct energy_measurement em = {0};
	struct mime_errinfo ei = {0};

	assert_int_equal(energy_measure(f->bundle, tasks, 2, images, 1, N_IMAGES, &em, &ei), 0);
	assert_int_equal(em.n_tasks, 2);
	assert_int_equal(em.n_samples, N_IMAGES);
	assert_int_equal(em.net.n_layers, 1);
	assert_string_equal(em.task[1], "b");
	assert_string_equal(em.baseline[0], "conventional");
	assert_string_equal(em.baseline[1], "parent+relu");
	/* per-channel thresholds in a task -> one threshold per filter in the model */
	assert_int_equal(em.net.layers[0].thr_words, 2);
	for (int s = 0; s < N_IMAGES; s++) {
		EQ(energy_measurement_row(&em, 0, 0, s)->in, 0.25);
		EQ(energy_measurement_row(&em, 0, 0, s)->out, 20.0 / 32);
		EQ(energy_measurement_row(&em, 1, 0, s)->out, 1.0);
		EQ(energy_measurement_row(&em, 0, 1, s)->out, 24.0 / 32);
		EQ(energy_measurement_row(&em, 1, 1, s)->out, 20.0 / 32);
		EQ(energy_measurement_row(&em, 1, 1, s)->in, 0.25);
	}
	energy_measurement_fini(&em);
	energy_measurement_fini(&em); /* twice is fine */
}

static void test_energy_measure_rejects_bad_requests(void **state)
{
	struct fixture *f = *state;
	const char *tasks[] = {"a", "nope"}, *images[] = {f->images, f->images, f->images};
	struct energy_measurement em = {0};
	struct mime_errinfo ei = {0};

	assert_int_equal(energy_measure(f->bundle, tasks, 2, images, 1, 1, &em, &ei), MIME_ENOTASK);
	assert_non_null(strstr(ei.msg, "'nope'"));
	assert_int_equal(energy_measure(f->bundle, tasks, 1, images, 1, N_IMAGES + 1, &em, &ei),
	                 MIME_EDATA);
	assert_int_equal(energy_measure(f->bundle, tasks, 1, images, 3, 1, &em, &ei), MIME_EINVAL);
	assert_int_equal(energy_measure(f->bundle, tasks, 0, images, 1, 1, &em, &ei), MIME_EINVAL);
	assert_int_equal(energy_measure(f->bundle, tasks, 1, images, 1, 0, &em, &ei), MIME_EINVAL);
	assert_int_equal(energy_measure("/nonexistent.mime", tasks, 1, images, 1, 1, &em, &ei),
	                 -ENOENT);
	assert_null(em.mime);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_energy_measure_counts_by_hand),
		cmocka_unit_test(test_energy_measure_rejects_bad_requests),
	};

	return cmocka_run_group_tests_name("energy_measure", tests, setup, teardown);
}
