// SPDX-License-Identifier: MIT
/* varlink -- see varlink.h. */
#include "client/varlink.h"
#include "lib/units.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Whether a socket may be at path: absent only when stat() says there is nothing (ENOENT,
 * ENOTDIR); any other failure, EACCES say, is left for connect() to report. */
static bool socket_may_exist(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 || (errno != ENOENT && errno != ENOTDIR);
}

int mimectl_socket_find(const char *path, char **ret_path, char **ret_tried)
{
	const char *dir = getenv("XDG_RUNTIME_DIR"), *env = getenv("MIME_SOCKET");
	char *cand[2] = {NULL, NULL};
	int n = 0, r;

	if (!path && env && *env)
		path = env;
	if (path) {
		*ret_path = strdup(path);
		return *ret_path ? 0 : -ENOMEM;
	}
	/* A user's own mimed first, then the system's, which binds
	 * $RUNTIME_DIRECTORY/mimed.sock = /run/mime/mimed.sock under systemd. As root the
	 * user's mimed is the system's, so /run/mime/ only. */
	if (geteuid() != 0 && dir && *dir) {
		if (asprintf(&cand[n], "%s/mime/mimed.sock", dir) < 0)
			return -ENOMEM;
		n++;
	}
	cand[n] = strdup("/run/mime/mimed.sock");
	if (!cand[n]) {
		r = -ENOMEM;
		goto out;
	}
	n++;
	for (int i = 0; i < n; i++) {
		if (socket_may_exist(cand[i])) {
			*ret_path = cand[i];
			cand[i] = NULL;
			r = 0;
			goto out;
		}
	}
	if (n == 2)
		r = asprintf(ret_tried, "%s or %s", cand[0], cand[1]) < 0 ? -ENOMEM : -ENOENT;
	else
		r = (*ret_tried = strdup(cand[0])) ? -ENOENT : -ENOMEM;
out:
	free(cand[0]);
	free(cand[1]);
	return r;
}

int mimectl_varlink_connect(const char *path, struct mimectl_varlink *ret_v)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	*ret_v = (struct mimectl_varlink){.fd = fd, .max_bytes = 256u << 20};
	return 0;
}

void mimectl_varlink_close(struct mimectl_varlink *v)
{
	if (v->fd >= 0)
		close(v->fd);
	free(v->buf);
	*v = (struct mimectl_varlink){.fd = -1};
}

char *mimectl_varlink_format(const char *method, json_t *params, bool more, size_t *ret_len)
{
	json_t *msg = json_pack("{s:s,s:o}", "method", method, "parameters",
	                        params ? params : json_object());
	char *s;

	if (!msg)
		return NULL;
	if (more)
		json_object_set_new(msg, "more", json_true());
	s = json_dumps(msg, JSON_COMPACT);
	json_decref(msg);
	if (s)
		*ret_len = strlen(s) + 1; /* with the NUL that ends a Varlink message */
	return s;
}

int mimectl_varlink_send_raw(struct mimectl_varlink *v, const char *msg, size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t k = send(v->fd, msg + off, len - off, MSG_NOSIGNAL);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return errno == EPIPE || errno == ECONNRESET ? -EPIPE : -errno;
		off += (size_t)k;
	}
	return 0;
}

int mimectl_varlink_send(struct mimectl_varlink *v, const char *method, json_t *params, bool more)
{
	size_t n = 0;
	char *s = mimectl_varlink_format(method, params, more, &n);
	int r;

	if (!s)
		return -ENOMEM;
	r = mimectl_varlink_send_raw(v, s, n);
	free(s);
	return r;
}

int mimectl_varlink_recv_raw(struct mimectl_varlink *v, const char **ret_msg, size_t *ret_len)
{
	size_t scanned = 0;

	if (v->taken) { /* drop the message handed out last time */
		memmove(v->buf, v->buf + v->taken, v->len - v->taken);
		v->len -= v->taken;
		v->taken = 0;
	}
	for (;;) {
		char *nul = v->len > scanned ? memchr(v->buf + scanned, 0, v->len - scanned) : NULL;
		ssize_t k;

		if (nul) {
			*ret_msg = v->buf;
			*ret_len = (size_t)(nul - v->buf);
			v->taken = *ret_len + 1;
			return 0;
		}
		scanned = v->len;
		if (v->len == v->cap) {
			size_t cap = v->cap ? v->cap * 2 : 65536;
			char *p;

			if (cap > v->max_bytes)
				return -EMSGSIZE;
			p = realloc(v->buf, cap);
			if (!p)
				return -ENOMEM;
			v->buf = p;
			v->cap = cap;
		}
		k = recv(v->fd, v->buf + v->len, v->cap - v->len, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return errno == ECONNRESET ? -EPIPE : -errno;
		if (k == 0)
			return -EPIPE;
		v->len += (size_t)k;
	}
}

int mimectl_varlink_recv(struct mimectl_varlink *v, json_t **ret_msg)
{
	const char *s;
	size_t n;
	int r = mimectl_varlink_recv_raw(v, &s, &n);
	json_t *msg;

	if (r < 0)
		return r;
	msg = json_loadb(s, n, 0, NULL);
	if (!msg)
		return -EPROTO;
	*ret_msg = msg;
	return 0;
}

int mimectl_varlink_call(struct mimectl_varlink *v, const char *method, json_t *params,
                         json_t **ret_params, json_t **ret_error)
{
	json_t *msg;
	int r;

	*ret_params = NULL;
	*ret_error = NULL;
	r = mimectl_varlink_send(v, method, params, false);
	/* A send that finds the connection closed still reads: mimed answers a call it
	 * refuses before it closes (a message over its limits.max_message: InvalidRequest),
	 * and that answer waits in the socket. With nothing there, recv says -EPIPE. */
	if (r < 0 && r != -EPIPE)
		return r;
	r = mimectl_varlink_recv(v, &msg);
	if (r < 0)
		return r;
	if (json_object_get(msg, "error")) {
		*ret_error = msg;
		return 1;
	}
	*ret_params = json_incref(json_object_get(msg, "parameters"));
	json_decref(msg);
	return 0;
}

/* Appends printf-style text at buf[*at], truncating at len (buf stays a C string). */
static void text_add(char *buf, size_t len, size_t *at, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void text_add(char *buf, size_t len, size_t *at, const char *fmt, ...)
{
	va_list ap;
	int k;

	if (*at >= len)
		return;
	va_start(ap, fmt);
	k = vsnprintf(buf + *at, len - *at, fmt, ap);
	va_end(ap);
	*at = k < 0 ? len : *at + (size_t)k;
}

const char *mimectl_error_text(const json_t *error, char *buf, size_t len)
{
	const char *name = json_string_value(json_object_get(error, "error"));
	json_t *p = json_object_get(error, "parameters"), *val;
	const char *desc = json_string_value(json_object_get(p, "description"));
	const char *task = json_string_value(json_object_get(p, "task"));
	const char *key;
	size_t at = 0;
	int n_more = 0;

	if (!len)
		return buf;
	buf[0] = 0;
	text_add(buf, len, &at, "%s", name ? name : "unknown error");
	if (task)
		text_add(buf, len, &at, ": no task '%s' (see 'mimectl tasks')", task);
	if (desc)
		text_add(buf, len, &at, ": %s", desc);
	/* Every other parameter as key=value, but a string the description already quotes
	 * (InvalidParameter's "parameter" is named in its description). */
	json_object_foreach(p, key, val)
	{
		const char *s = json_string_value(val);
		char *dump = NULL;

		if ((desc && strcmp(key, "description") == 0) || (task && strcmp(key, "task") == 0))
			continue;
		if (s && desc && strstr(desc, s))
			continue;
		if (!s)
			s = dump = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
		text_add(buf, len, &at, "%s%s=%s", n_more++ ? ", " : " (", key, s ? s : "?");
		free(dump);
	}
	if (n_more)
		text_add(buf, len, &at, ")");
	return buf;
}

char *mimectl_base64_encode(const void *data, size_t n)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const uint8_t *in = data;
	char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
	size_t i;

	if (!out)
		return NULL;
	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		*o++ = tab[v >> 18];
		*o++ = tab[(v >> 12) & 63];
		*o++ = tab[(v >> 6) & 63];
		*o++ = tab[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);

		*o++ = tab[v >> 18];
		*o++ = tab[(v >> 12) & 63];
		*o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
		*o++ = '=';
	}
	*o = 0;
	return out;
}

int mimectl_read_file(const char *path, size_t max_bytes, uint8_t **ret_data, size_t *ret_len)
{
	FILE *f = fopen(path, "rbe");
	uint8_t *data = NULL;
	size_t len = 0, cap = 0;
	int r = 0;

	if (!f)
		return -errno;
	for (;;) {
		size_t k;

		if (len == cap) {
			uint8_t *p;

			cap = cap ? cap * 2 : 65536;
			if (cap > max_bytes * 2 + 65536) {
				r = -EFBIG;
				break;
			}
			p = realloc(data, cap);
			if (!p) {
				r = -ENOMEM;
				break;
			}
			data = p;
		}
		k = fread(data + len, 1, cap - len, f);
		len += k;
		if (len > max_bytes) {
			r = -EFBIG;
			break;
		}
		if (k == 0) {
			if (ferror(f))
				r = -EIO;
			break;
		}
	}
	fclose(f);
	if (r < 0) {
		free(data);
		return r;
	}
	*ret_data = data;
	*ret_len = len;
	return 0;
}

int mimectl_parse_bytes(const char *s, uint64_t *ret_bytes)
{
	return mime_parse_bytes(s, ret_bytes);
}

int mimectl_parse_ms(const char *s, double *ret_ms)
{
	uint64_t us;
	int r = mime_parse_duration_us(s, 1000, &us); /* a bare number is milliseconds */

	if (r < 0)
		return r;
	*ret_ms = (double)us / 1e3;
	return 0;
}
