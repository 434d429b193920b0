/* SPDX-License-Identifier: MIT */
/* varlink -- the Varlink wire format as mimed speaks it: a stream of JSON objects, each ended
 * by one NUL byte. A framer cuts the stream into messages (with a size cap), a parser turns
 * one message into a call (method, parameters, more, oneway), and the reply builders make the
 * NUL-terminated bytes of a reply or an error. No I/O here: the server feeds bytes in and
 * writes the results out, so all of this is unit-tested on its own.
 *
 * Call:  {"method":"io.mime.Infer","parameters":{...},"more":false,"oneway":false}
 * Reply: {"parameters":{...}}  (+ "continues":true while a "more" call streams)
 * Error: {"error":"io.mime.Busy","parameters":{...}}
 *
 * Ownership: a framer owns its buffer; a parsed call owns its JSON (mimed_varlink_call_fini);
 * reply builders return malloc'ed bytes the caller frees.
 * Threads: no shared state; each object is used by one thread at a time. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Varlink error names mimed replies with. */
#define MIMED_ERR_TASK_NOT_FOUND   "io.mime.TaskNotFound"
#define MIMED_ERR_INVALID_IMAGE    "io.mime.InvalidImage"
#define MIMED_ERR_INVALID_REQUEST  "io.mime.InvalidRequest"
#define MIMED_ERR_BUSY             "io.mime.Busy"
#define MIMED_ERR_TIMEOUT          "io.mime.Timeout"
#define MIMED_ERR_PERMISSION       "io.mime.PermissionDenied"
#define MIMED_ERR_SHUTTING_DOWN    "io.mime.ShuttingDown"
#define MIMED_ERR_INTERNAL         "io.mime.InternalError"
#define MIMED_ERR_PHASE            "io.mime.PhaseUnavailable"
#define MIMED_ERR_METHOD_NOT_FOUND "org.varlink.service.MethodNotFound"
#define MIMED_ERR_INVALID_PARAM    "org.varlink.service.InvalidParameter"
#define MIMED_ERR_IFACE_NOT_FOUND  "org.varlink.service.InterfaceNotFound"
#define MIMED_ERR_EXPECTED_MORE    "org.varlink.service.ExpectedMore"

/* Cuts a byte stream into NUL-terminated messages. */
struct mimed_framer {
	char *buf;
	size_t len;       /* bytes held, from buf[0] */
	size_t off;       /* start of the first message not yet handed out */
	size_t scan;      /* bytes before this (from off) hold no NUL */
	size_t cap;       /* allocated */
	size_t max_bytes; /* longest message accepted, NUL excluded */
};

void mimed_framer_init(struct mimed_framer *f, size_t max_bytes);
void mimed_framer_fini(struct mimed_framer *f);
/* Appends n bytes. Returns 0, or -ENOMEM (-EMSGSIZE on size_t overflow). */
int mimed_framer_feed(struct mimed_framer *f, const void *data, size_t n);
/* Hands out the next complete message, a C string of *ret_len bytes (its NUL ends it).
 * Returns 1 and sets *ret_msg, valid until the next feed; 0 when no message is complete;
 * -EMSGSIZE when the next message is longer than max_bytes, complete or not (the stream
 * cannot be resynchronised: reply and close). Call it until it returns <= 0 after each feed. */
int mimed_framer_next(struct mimed_framer *f, char **ret_msg, size_t *ret_len);
/* Bytes of an incomplete message held (what a client left without its NUL). */
size_t mimed_framer_pending(const struct mimed_framer *f);

struct mimed_varlink_call {
	json_t *root;       /* owned */
	const char *method; /* borrowed from root: "io.mime.Infer" */
	json_t *params;     /* borrowed from root; an empty object when absent */
	bool more, oneway;
};

/* Parses one message. Returns 0, or -EINVAL with *ret_error set to the Varlink error to reply
 * (a static string) and desc (desc_len bytes) saying why: not JSON, not an object, no method,
 * parameters not an object, more/oneway not booleans. */
int mimed_varlink_parse(const char *msg, size_t len, struct mimed_varlink_call *ret_call,
                        const char **ret_error, char *desc, size_t desc_len);
void mimed_varlink_call_fini(struct mimed_varlink_call *c); /* NULL fields are fine */

/* The interface part of a method name ("io.mime" of "io.mime.Infer") copied into buf; returns
 * the member ("Infer"), or NULL when name has no dot or buf is too small. */
const char *mimed_varlink_split(const char *method, char *buf, size_t buf_len);

/* Builds a reply; params is stolen (NULL = {}). *ret_len counts the final NUL. NULL on ENOMEM. */
char *mimed_varlink_reply(json_t *params, bool continues, size_t *ret_len);
/* Builds an error reply; params is stolen (NULL = {}). */
char *mimed_varlink_error(const char *error, json_t *params, size_t *ret_len);
/* An error whose parameters are {"description": desc} (and {"parameter": name} when name is
 * not NULL, as org.varlink.service.InvalidParameter wants). */
char *mimed_varlink_error_desc(const char *error, const char *name, const char *desc,
                               size_t *ret_len);

/* A JSON text built by hand, for the replies on the request path (Infer results): about a
 * quarter of what building jansson objects and json_dumps() cost. Its output is what
 * json_dumps(JSON_COMPACT) writes for the same values: strings escaped the same way (",
 * \\ and control characters; UTF-8 passed through), reals as "%.17g" with ".0" added when
 * neither '.' nor 'e' appears and the exponent's '+' and leading zeros dropped. A
 * non-finite real (jansson refuses those) or an allocation failure marks it failed; every
 * later call is then a no-op. */
struct mimed_text {
	char *buf;
	size_t len, cap;
	bool failed;
};

void mimed_text_init(struct mimed_text *t);
void mimed_text_fini(struct mimed_text *t); /* frees what was not taken */
void mimed_text_raw(struct mimed_text *t, const char *s, size_t n);
#define mimed_text_lit(t, s) mimed_text_raw((t), "" s, sizeof(s) - 1)
void mimed_text_str(struct mimed_text *t, const char *s); /* a JSON string */
void mimed_text_int(struct mimed_text *t, long long v);   /* a JSON integer */
void mimed_text_real(struct mimed_text *t, double v);     /* a JSON real */
/* Appends the NUL that ends a Varlink message and hands out the bytes (*ret_len counts the
 * NUL); NULL when the text failed. The text is empty afterwards. */
char *mimed_text_take(struct mimed_text *t, size_t *ret_len);

/* Strict base64 (RFC 4648, standard alphabet, padding optional, no whitespace). Returns 0
 * and a malloc'ed *ret_data of *ret_len bytes, -EINVAL on a bad character or length,
 * -EMSGSIZE when the decoded size would exceed max_bytes, -ENOMEM. */
int mimed_base64_decode(const char *in, size_t n, size_t max_bytes, uint8_t **ret_data,
                        size_t *ret_len);
