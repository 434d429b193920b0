// SPDX-License-Identifier: MIT
/* varlink -- see varlink.h. */
#include "daemon/varlink.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mimed_framer_init(struct mimed_framer *f, size_t max_bytes)
{
	memset(f, 0, sizeof(*f));
	f->max_bytes = max_bytes;
}

void mimed_framer_fini(struct mimed_framer *f)
{
	free(f->buf);
	f->buf = NULL;
	f->len = f->off = f->scan = f->cap = 0;
}

size_t mimed_framer_pending(const struct mimed_framer *f)
{
	return f->len - f->off;
}

int mimed_framer_feed(struct mimed_framer *f, const void *data, size_t n)
{
	if (f->off > 0) { /* drop the messages already handed out */
		memmove(f->buf, f->buf + f->off, f->len - f->off);
		f->len -= f->off;
		f->off = 0;
	}
	if (n > SIZE_MAX - f->len - 1)
		return -EMSGSIZE;
	if (f->len + n > f->cap) {
		size_t cap = f->cap ? f->cap : 4096;
		char *p;

		while (cap < f->len + n)
			cap = cap > SIZE_MAX / 2 ? f->len + n : cap * 2;
		p = realloc(f->buf, cap);
		if (!p)
			return -ENOMEM;
		f->buf = p;
		f->cap = cap;
	}
	memcpy(f->buf + f->len, data, n);
	f->len += n;
	return 0;
}

int mimed_framer_next(struct mimed_framer *f, char **ret_msg, size_t *ret_len)
{
	char *start = f->buf + f->off;
	size_t avail = f->len - f->off;
	char *nul;

	if (avail == 0 || f->scan >= avail)
		return 0;
	nul = memchr(start + f->scan, 0, avail - f->scan);
	if (!nul) {
		f->scan = avail;
		return avail > f->max_bytes ? -EMSGSIZE : 0;
	}
	if ((size_t)(nul - start) > f->max_bytes)
		return -EMSGSIZE;
	*ret_msg = start;
	*ret_len = (size_t)(nul - start);
	f->off += *ret_len + 1;
	f->scan = 0;
	return 1;
}

int mimed_varlink_parse(const char *msg, size_t len, struct mimed_varlink_call *ret_call,
                        const char **ret_error, char *desc, size_t desc_len)
{
	struct mimed_varlink_call c = {0};
	json_error_t jerr;
	json_t *v;

	*ret_error = MIMED_ERR_INVALID_REQUEST;
	c.root = json_loadb(msg, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!c.root) {
		snprintf(desc, desc_len, "malformed JSON at byte %d: %s", jerr.position, jerr.text);
		return -EINVAL;
	}
	if (!json_is_object(c.root)) {
		snprintf(desc, desc_len, "a call must be a JSON object");
		goto fail;
	}
	v = json_object_get(c.root, "method");
	if (!json_is_string(v) || !strchr(json_string_value(v), '.')) {
		snprintf(desc, desc_len, "'method' must be a string 'interface.Method'");
		goto fail;
	}
	c.method = json_string_value(v);
	c.params = json_object_get(c.root, "parameters");
	if (!c.params) {
		c.params = json_object();
		if (!c.params || json_object_set_new(c.root, "parameters", c.params) < 0) {
			snprintf(desc, desc_len, "out of memory");
			goto fail;
		}
	} else if (!json_is_object(c.params)) {
		snprintf(desc, desc_len, "'parameters' must be an object");
		goto fail;
	}
	v = json_object_get(c.root, "more");
	if (v && !json_is_boolean(v)) {
		snprintf(desc, desc_len, "'more' must be a boolean");
		goto fail;
	}
	c.more = json_is_true(v);
	v = json_object_get(c.root, "oneway");
	if (v && !json_is_boolean(v)) {
		snprintf(desc, desc_len, "'oneway' must be a boolean");
		goto fail;
	}
	c.oneway = json_is_true(v);

	*ret_call = c;
	*ret_error = NULL;
	return 0;

fail:
	json_decref(c.root);
	return -EINVAL;
}

void mimed_varlink_call_fini(struct mimed_varlink_call *c)
{
	if (!c)
		return;
	json_decref(c->root);
	memset(c, 0, sizeof(*c));
}

const char *mimed_varlink_split(const char *method, char *buf, size_t buf_len)
{
	const char *dot = strrchr(method, '.');
	size_t n;

	if (!dot || dot == method || !dot[1])
		return NULL;
	n = (size_t)(dot - method);
	if (n + 1 > buf_len)
		return NULL;
	memcpy(buf, method, n);
	buf[n] = 0;
	return dot + 1;
}

/* Serialises root compactly and appends the NUL; takes root. */
static char *dump_nul(json_t *root, size_t *ret_len)
{
	char *s;
	size_t n;

	if (!root)
		return NULL;
	s = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (!s)
		return NULL;
	n = strlen(s);
	*ret_len = n + 1; /* json_dumps' terminating NUL is the message separator */
	return s;
}

char *mimed_varlink_reply(json_t *params, bool continues, size_t *ret_len)
{
	json_t *root = json_object();

	if (!params)
		params = json_object();
	if (!root || !params || json_object_set_new(root, "parameters", params) < 0) {
		json_decref(root);
		return NULL;
	}
	if (continues && json_object_set_new(root, "continues", json_true()) < 0) {
		json_decref(root);
		return NULL;
	}
	return dump_nul(root, ret_len);
}

char *mimed_varlink_error(const char *error, json_t *params, size_t *ret_len)
{
	json_t *root = json_object();

	if (!params)
		params = json_object();
	if (!root || !params || json_object_set_new(root, "error", json_string(error)) < 0 ||
	    json_object_set_new(root, "parameters", params) < 0) {
		json_decref(root);
		return NULL;
	}
	return dump_nul(root, ret_len);
}

char *mimed_varlink_error_desc(const char *error, const char *name, const char *desc,
                               size_t *ret_len)
{
	json_t *p = json_object();

	if (!p)
		return NULL;
	if (name)
		json_object_set_new(p, "parameter", json_string(name));
	if (desc)
		json_object_set_new(p, "description", json_string(desc));
	return mimed_varlink_error(error, p, ret_len);
}

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int mimed_base64_decode(const char *in, size_t n, size_t max_bytes, uint8_t **ret_data,
                        size_t *ret_len)
{
	size_t pad = 0, out_len, i, o = 0;
	uint32_t acc = 0;
	int bits = 0;
	uint8_t *out;

	while (pad < 2 && n > 0 && in[n - 1] == '=') {
		n--;
		pad++;
	}
	if (n % 4 == 1 || (pad && (n + pad) % 4 != 0))
		return -EINVAL;
	out_len = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
	if (out_len > max_bytes)
		return -EMSGSIZE;
	out = malloc(out_len ? out_len : 1);
	if (!out)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		int v = b64_value((unsigned char)in[i]);

		if (v < 0) {
			free(out);
			return -EINVAL;
		}
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	if (acc & ((1u << bits) - 1)) { /* non-canonical trailing bits */
		free(out);
		return -EINVAL;
	}
	*ret_data = out;
	*ret_len = o;
	return 0;
}

void mimed_text_init(struct mimed_text *t)
{
	*t = (struct mimed_text){0};
}

void mimed_text_fini(struct mimed_text *t)
{
	free(t->buf);
	*t = (struct mimed_text){0};
}

/* Room for n more bytes (and a NUL); false once failed. */
static bool text_room(struct mimed_text *t, size_t n)
{
	size_t cap;
	char *p;

	if (t->failed)
		return false;
	if (n < t->cap - t->len)
		return true;
	if (n > SIZE_MAX / 2 - t->len) {
		t->failed = true;
		return false;
	}
	cap = t->cap ? t->cap : 1024;
	while (cap - t->len <= n)
		cap *= 2;
	p = realloc(t->buf, cap);
	if (!p) {
		t->failed = true;
		return false;
	}
	t->buf = p;
	t->cap = cap;
	return true;
}

void mimed_text_raw(struct mimed_text *t, const char *s, size_t n)
{
	if (!text_room(t, n))
		return;
	memcpy(t->buf + t->len, s, n);
	t->len += n;
}

void mimed_text_str(struct mimed_text *t, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s);
	char *o;

	if (!text_room(t, 6 * n + 2)) /* every byte escaped as \u00XX at worst */
		return;
	o = t->buf + t->len;
	*o++ = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		unsigned char c = *p;

		if (c >= 0x20 && c != '"' && c != '\\') {
			*o++ = (char)c;
			continue;
		}
		*o++ = '\\';
		switch (c) {
		case '"':
			*o++ = '"';
			break;
		case '\\':
			*o++ = '\\';
			break;
		case '\b':
			*o++ = 'b';
			break;
		case '\f':
			*o++ = 'f';
			break;
		case '\n':
			*o++ = 'n';
			break;
		case '\r':
			*o++ = 'r';
			break;
		case '\t':
			*o++ = 't';
			break;
		default:
			*o++ = 'u';
			*o++ = '0';
			*o++ = '0';
			*o++ = hex[c >> 4];
			*o++ = hex[c & 15];
		}
	}
	*o++ = '"';
	t->len = (size_t)(o - t->buf);
}

void mimed_text_int(struct mimed_text *t, long long v)
{
	if (text_room(t, 24))
		t->len += (size_t)snprintf(t->buf + t->len, 24, "%lld", v);
}

void mimed_text_real(struct mimed_text *t, double v)
{
	char *s, *e;
	int n;

	if (!isfinite(v)) {
		t->failed = true;
		return;
	}
	if (!text_room(t, 32))
		return;
	s = t->buf + t->len;
	n = snprintf(s, 32, "%.17g", v);
	e = strchr(s, 'e');
	if (!e) {
		if (!strchr(s, '.'))
			memcpy(s + n, ".0", 2), n += 2;
	} else { /* "1e+20" -> "1e20", "5e-05" -> "5e-5" */
		char *from = e + 1, *to = e + 1;

		if (*from == '+')
			from++;
		else if (*from == '-')
			from++, to++;
		while (*from == '0' && from[1])
			from++;
		memmove(to, from, (size_t)(s + n - from));
		n -= (int)(from - to);
	}
	t->len += (size_t)n;
}

char *mimed_text_take(struct mimed_text *t, size_t *ret_len)
{
	char *s;

	if (!text_room(t, 1)) {
		mimed_text_fini(t);
		return NULL;
	}
	t->buf[t->len] = 0;
	s = t->buf;
	*ret_len = t->len + 1;
	*t = (struct mimed_text){0};
	return s;
}
