// SPDX-License-Identifier: MIT
/* cmd_samples -- `mime-train samples`: write the first N images of each class of an IDX
 * test split as PNG files named <label>-<n>.png (label = class index, n from 0), the sample
 * images shipped in models/samples/<task>/. Deterministic: the first N of each class in
 * file order. Exit codes: 0 ok, 1 failure, 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "lib/idx.h"
#include "lib/image.h"
#include "train/cmd.h"

static void samples_usage(FILE *f)
{
	fprintf(f,
	        "usage: mime-train samples --images IDX --labels IDX --out DIR [--per-class N]\n");
}

int mimetrain_cmd_samples(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"images", required_argument, NULL, 'i'},
		{"labels", required_argument, NULL, 'l'},
		{"out", required_argument, NULL, 'o'},
		{"per-class", required_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *images = NULL, *labels = NULL, *out = NULL;
	int per_class = 3, c, r, status = 1;
	struct mime_idx xi = {0}, yi = {0};
	struct mime_errinfo ei = {0};
	int count[256] = {0};

	optind = 1;
	while ((c = getopt_long(argc, argv, "i:l:o:n:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'i':
			images = optarg;
			break;
		case 'l':
			labels = optarg;
			break;
		case 'o':
			out = optarg;
			break;
		case 'n':
			per_class = atoi(optarg);
			break;
		case 'h':
			samples_usage(stdout);
			return 0;
		default:
			samples_usage(stderr);
			return 2;
		}
	}
	if (!images || !labels || !out || per_class < 1 || per_class > 1000 || optind != argc) {
		samples_usage(stderr);
		return 2;
	}
	r = mime_idx_read_pair(images, labels, 0, &xi, &yi, &ei);
	if (r < 0) {
		fprintf(stderr, "mime-train: %s\n", ei.msg[0] ? ei.msg : mime_strerror(r));
		return 1;
	}
	if (mkdir(out, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "mime-train: %s: %m\n", out);
		goto done;
	}
	for (uint32_t i = 0; i < xi.dims[0]; i++) {
		const int y = yi.data[i];
		char path[PATH_MAX];
		const size_t psz = (size_t)xi.dims[1] * xi.dims[2];

		if (count[y] >= per_class)
			continue;
		snprintf(path, sizeof(path), "%s/%d-%d.png", out, y, count[y]);
		r = mime_png_write(path, xi.data + i * psz, (int)xi.dims[2], (int)xi.dims[1], 1,
		                   &ei);
		if (r < 0) {
			fprintf(stderr, "mime-train: %s: %s\n", path,
			        ei.msg[0] ? ei.msg : mime_strerror(r));
			goto done;
		}
		count[y]++;
	}
	status = 0;
done:
	mime_idx_free(&xi);
	mime_idx_free(&yi);
	return status;
}
