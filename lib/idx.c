// SPDX-License-Identifier: MIT
/* idx -- see idx.h.
 * File layout (all integers big-endian):
 *   byte 0, 1   0x00 0x00                  magic
 *   byte 2      type                       0x08 = unsigned byte (the only type we accept)
 *   byte 3      ndim                       1 .. 4
 *   4 * ndim    uint32 dims[ndim]          each > 0
 *   prod(dims)  data                       row-major, nothing after it
 * The whole file may be gzip-compressed (first bytes 0x1f 0x8b); zlib's gz* functions then
 * inflate it and check its CRC.
 * Ownership: mime_idx_read() hands the data buffer to the caller's struct mime_idx.
 * Threads: reentrant; no shared state. */
#include "lib/idx.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* Refuse data above this before allocating: the largest dataset we convert is a few
 * hundred MiB, so a bigger header is corrupt or hostile. */
#define IDX_MAX_DATA_BYTES (1UL << 30)
#define IDX_TYPE_UBYTE     0x08
#define IDX_MAX_NDIM       4
/* Buffers for gzip data grow in steps, so a tiny hostile file cannot cost 1 GiB at once. */
#define IDX_GROW_BYTES (16UL << 20)

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Product of dims in bytes; code (MIME_EDATA reading, MIME_EINVAL writing) on a zero
 * dimension or above the cap. */
static int idx_data_bytes(const char *path, int ndim, const uint32_t *dims, int code,
                          size_t *ret_bytes, struct mime_errinfo *ei)
{
	size_t n = 1;

	for (int i = 0; i < ndim; i++) {
		if (dims[i] == 0)
			return mime_errinfo_set(ei, code, "'%s': dimension %d is 0", path, i);
		if (n > IDX_MAX_DATA_BYTES / dims[i])
			return mime_errinfo_set(ei, code,
			                        "'%s': dimensions exceed the %lu MiB data cap",
			                        path, IDX_MAX_DATA_BYTES >> 20);
		n *= dims[i];
	}
	*ret_bytes = n;
	return 0;
}

/* Reads up to len bytes; returns the count read (short only at end of input) or a negative
 * code: -errno, or MIME_EDATA for a corrupt or truncated gzip stream. */
static long long idx_gzread(gzFile gz, const char *path, void *buf, size_t len,
                            struct mime_errinfo *ei)
{
	size_t done = 0;
	int zerr;

	while (done < len) {
		unsigned chunk = len - done > (1U << 30) ? (1U << 30) : (unsigned)(len - done);
		int n = gzread(gz, (uint8_t *)buf + done, chunk);

		if (n < 0)
			break;
		done += (size_t)n;
		if ((unsigned)n < chunk)
			break;
	}
	const char *msg = gzerror(gz, &zerr);
	switch (zerr) {
	case Z_OK:
		return (long long)done;
	case Z_ERRNO:
		return errno ? -errno : -EIO;
	case Z_BUF_ERROR:
		return mime_errinfo_set(ei, MIME_EDATA, "'%s': gzip stream truncated", path);
	case Z_MEM_ERROR:
		return -ENOMEM;
	default:
		return mime_errinfo_set(ei, MIME_EDATA, "'%s': gzip stream corrupt: %s", path, msg);
	}
}

int mime_idx_read(const char *path, struct mime_idx *ret_idx, struct mime_errinfo *ei)
{
	uint8_t head[4 + 4 * IDX_MAX_NDIM], magic[2], probe;
	struct mime_idx idx = {0};
	size_t cap = 0, done = 0;
	struct stat st;
	bool gzipped;
	long long n;
	gzFile gz;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return mime_errinfo_set(ei, -errno, "'%s': cannot open: %s", path,
		                        mime_strerror(-errno));
	if (fstat(fd, &st) < 0) {
		r = mime_errinfo_set(ei, -errno, "'%s': cannot stat: %s", path,
		                     mime_strerror(-errno));
		close(fd);
		return r;
	}
	n = pread(fd, magic, sizeof(magic), 0);
	gzipped = n == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
	gz = gzdopen(fd, "rb"); /* owns fd from here on; reads raw files unchanged */
	if (!gz) {
		close(fd);
		return -ENOMEM;
	}
	gzbuffer(gz, 128 * 1024);

	/* Magic, type and ndim. */
	n = idx_gzread(gz, path, head, 4, ei);
	if (n < 0) {
		r = (int)n;
		goto out_close;
	}
	if (n < 4) {
		r = mime_errinfo_set(ei, MIME_EDATA, "'%s': truncated header (%lld of 4 bytes)",
		                     path, n);
		goto out_close;
	}
	if (head[0] != 0 || head[1] != 0) {
		r = mime_errinfo_set(ei, MIME_EDATA,
		                     "'%s': bad magic %02x %02x (want 00 00 <type> <ndim>)%s", path,
		                     head[0], head[1], gzipped ? " after gunzip" : "");
		goto out_close;
	}
	if (head[2] != IDX_TYPE_UBYTE) {
		r = mime_errinfo_set(ei, MIME_EDATA,
		                     "'%s': data type 0x%02x unsupported (only 0x08, uint8)", path,
		                     head[2]);
		goto out_close;
	}
	if (head[3] < 1 || head[3] > IDX_MAX_NDIM) {
		r = mime_errinfo_set(ei, MIME_EDATA, "'%s': ndim %d out of range 1..%d", path,
		                     head[3], IDX_MAX_NDIM);
		goto out_close;
	}
	idx.ndim = head[3];

	/* Dimensions. */
	n = idx_gzread(gz, path, head + 4, 4 * (size_t)idx.ndim, ei);
	if (n < 0) {
		r = (int)n;
		goto out_close;
	}
	if (n < 4 * idx.ndim) {
		r = mime_errinfo_set(ei, MIME_EDATA,
		                     "'%s': truncated header (%lld of %d dimension bytes)", path, n,
		                     4 * idx.ndim);
		goto out_close;
	}
	for (int i = 0; i < idx.ndim; i++)
		idx.dims[i] = be32(head + 4 + 4 * i);
	r = idx_data_bytes(path, idx.ndim, idx.dims, MIME_EDATA, &idx.n_bytes, ei);
	if (r < 0)
		goto out_close;

	/* A raw file's size is known: say exactly how it disagrees before allocating. */
	if (!gzipped) {
		size_t hdr = 4 + 4 * (size_t)idx.ndim;
		if ((uint64_t)st.st_size != hdr + idx.n_bytes) {
			r = mime_errinfo_set(
				ei, MIME_EDATA,
				"'%s': size %lld bytes, but header + dims say %zu + %zu = %zu",
				path, (long long)st.st_size, hdr, idx.n_bytes, hdr + idx.n_bytes);
			goto out_close;
		}
	}

	/* Data, into a buffer that grows with what is actually there. */
	while (done < idx.n_bytes) {
		if (done == cap) {
			size_t want = idx.n_bytes; /* a raw file's size was checked above */
			uint8_t *p;

			if (gzipped && want - cap > (cap > IDX_GROW_BYTES ? cap : IDX_GROW_BYTES))
				want = cap + (cap > IDX_GROW_BYTES ? cap : IDX_GROW_BYTES);
			p = realloc(idx.data, want);
			if (!p) {
				r = -ENOMEM;
				goto out_free;
			}
			idx.data = p;
			cap = want;
		}
		n = idx_gzread(gz, path, idx.data + done, cap - done, ei);
		if (n < 0) {
			r = (int)n;
			goto out_free;
		}
		done += (size_t)n;
		if ((size_t)n == 0 || done < cap)
			break;
	}
	if (done < idx.n_bytes) {
		r = mime_errinfo_set(ei, MIME_EDATA,
		                     "'%s': truncated data: dims say %zu bytes, %s has %zu", path,
		                     idx.n_bytes, gzipped ? "gzip stream" : "file", done);
		goto out_free;
	}
	n = idx_gzread(gz, path, &probe, 1, ei);
	if (n < 0) {
		r = (int)n;
		goto out_free;
	}
	if (n > 0) {
		r = mime_errinfo_set(ei, MIME_EDATA,
		                     "'%s': trailing bytes after the %zu data bytes the dims say",
		                     path, idx.n_bytes);
		goto out_free;
	}
	gzclose_r(gz);
	*ret_idx = idx;
	return 0;

out_free:
	free(idx.data);
out_close:
	gzclose_r(gz);
	return r;
}

static int idx_write_gz(gzFile gz, const uint8_t *buf, size_t len)
{
	while (len > 0) {
		unsigned chunk = len > (1U << 30) ? (1U << 30) : (unsigned)len;
		int n = gzwrite(gz, buf, chunk);
		int zerr;

		if (n <= 0) {
			gzerror(gz, &zerr);
			return zerr == Z_ERRNO && errno ? -errno : -EIO;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int mime_idx_write(const char *path, int ndim, const uint32_t *dims, const uint8_t *data,
                   struct mime_errinfo *ei)
{
	uint8_t head[4 + 4 * IDX_MAX_NDIM];
	size_t len = strlen(path), n_bytes = 0, hdr;
	bool gzipped = len >= 3 && strcmp(path + len - 3, ".gz") == 0;
	gzFile gz;
	int r, zr;

	if (ndim < 1 || ndim > IDX_MAX_NDIM || !dims || !data)
		return mime_errinfo_set(ei, MIME_EINVAL, "'%s': ndim %d out of range 1..%d", path,
		                        ndim, IDX_MAX_NDIM);
	r = idx_data_bytes(path, ndim, dims, MIME_EINVAL, &n_bytes, ei);
	if (r < 0)
		return r;

	head[0] = 0;
	head[1] = 0;
	head[2] = IDX_TYPE_UBYTE;
	head[3] = (uint8_t)ndim;
	for (int i = 0; i < ndim; i++)
		put_be32(head + 4 + 4 * i, dims[i]);
	hdr = 4 + 4 * (size_t)ndim;

	/* "wb" without a level: zlib's default; "wT" writes plain (transparent) output. */
	errno = 0;
	gz = gzopen(path, gzipped ? "wb" : "wbT");
	if (!gz) {
		r = errno ? -errno : -ENOMEM;
		return mime_errinfo_set(ei, r, "'%s': cannot create: %s", path, mime_strerror(r));
	}
	r = idx_write_gz(gz, head, hdr);
	if (r == 0)
		r = idx_write_gz(gz, data, n_bytes);
	errno = 0;
	zr = gzclose_w(gz);
	if (r == 0 && zr != Z_OK)
		r = zr == Z_ERRNO && errno ? -errno : -EIO;
	if (r < 0) {
		unlink(path);
		return mime_errinfo_set(ei, r, "'%s': write failed: %s", path, mime_strerror(r));
	}
	return 0;
}

void mime_idx_free(struct mime_idx *idx)
{
	if (!idx)
		return;
	free(idx->data);
	memset(idx, 0, sizeof(*idx));
}

int mime_idx_read_pair(const char *images, const char *labels, int n_classes,
                       struct mime_idx *ret_images, struct mime_idx *ret_labels,
                       struct mime_errinfo *ei)
{
	struct mime_idx img = {0}, lab = {0};
	int r;

	r = mime_idx_read(images, &img, ei);
	if (r < 0)
		return r;
	r = mime_idx_read(labels, &lab, ei);
	if (r < 0)
		goto out_images;
	if (img.ndim != 3) {
		r = mime_errinfo_set(ei, MIME_EDATA,
		                     "'%s': images need 3 dims [n,rows,cols], not %d", images,
		                     img.ndim);
		goto out_labels;
	}
	if (lab.ndim != 1) {
		r = mime_errinfo_set(ei, MIME_EDATA, "'%s': labels need 1 dim [n], not %d", labels,
		                     lab.ndim);
		goto out_labels;
	}
	if (img.dims[0] != lab.dims[0]) {
		r = mime_errinfo_set(ei, MIME_EDATA, "'%s' has %u images but '%s' has %u labels",
		                     images, img.dims[0], labels, lab.dims[0]);
		goto out_labels;
	}
	if (n_classes > 0)
		for (size_t i = 0; i < lab.n_bytes; i++)
			if (lab.data[i] >= n_classes) {
				r = mime_errinfo_set(ei, MIME_EDATA,
				                     "'%s': label %d at index %zu is not below %d "
				                     "classes",
				                     labels, lab.data[i], i, n_classes);
				goto out_labels;
			}

	*ret_images = img;
	*ret_labels = lab;
	return 0;

out_labels:
	mime_idx_free(&lab);
out_images:
	mime_idx_free(&img);
	return r;
}
