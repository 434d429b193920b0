/* SPDX-License-Identifier: MIT */
/* varlink -- mimectl's side of the Varlink connection to mimed: find the socket, connect,
 * send calls (JSON + NUL), read replies, and the small helpers the daemon subcommands share
 * (base64, sizes and durations).
 * Ownership: a connection owns its socket and read buffer; replies handed out are the
 * caller's (json_decref).
 * Threads: a connection is used by one thread. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes of the daemon subcommands (documented in mimectl --help). */
#define MIMECTL_EXIT_OK      0
#define MIMECTL_EXIT_ERROR   1 /* the daemon answered with an error */
#define MIMECTL_EXIT_USAGE   2
#define MIMECTL_EXIT_CONNECT 3 /* no daemon on the socket, or the connection broke */

struct mimectl_varlink {
	int fd;
	char *buf;
	size_t len, cap;
	size_t taken;     /* bytes of the last message mimectl_varlink_recv_raw() handed out */
	size_t max_bytes; /* longest reply accepted */
};

/* The socket to use: path if not NULL, else $MIME_SOCKET when set and not empty, else the
 * first that exists of $XDG_RUNTIME_DIR/mime/mimed.sock (not as root) and
 * /run/mime/mimed.sock (the system daemon's). Returns 0 with *ret_path (malloc'ed);
 * -ENOENT when none of those exists, with *ret_tried (malloc'ed) naming the paths looked
 * at ("A or B"); -ENOMEM. */
int mimectl_socket_find(const char *path, char **ret_path, char **ret_tried);

/* Connects; returns 0 or -errno. */
int mimectl_varlink_connect(const char *path, struct mimectl_varlink *ret_v);
void mimectl_varlink_close(struct mimectl_varlink *v);

/* Sends one call; params is stolen (NULL = {}). Returns 0 or -errno. */
int mimectl_varlink_send(struct mimectl_varlink *v, const char *method, json_t *params, bool more);
/* Sends len bytes of a serialised call, its NUL included. Returns 0 or -errno. */
int mimectl_varlink_send_raw(struct mimectl_varlink *v, const char *msg, size_t len);
/* The JSON text of one call (method, params), NUL-terminated, malloc'ed; *ret_len counts
 * the NUL. params is stolen (NULL = {}). NULL on ENOMEM. */
char *mimectl_varlink_format(const char *method, json_t *params, bool more, size_t *ret_len);
/* Reads one message into *ret_msg (owned). Returns 0, -EPIPE when the daemon closed the
 * connection, -EPROTO on a message that is not JSON, -errno. */
int mimectl_varlink_recv(struct mimectl_varlink *v, json_t **ret_msg);
/* Reads one message without parsing it: *ret_msg points into the connection's buffer, a
 * C string of *ret_len bytes, valid until the next recv. Returns 0 or as above. */
int mimectl_varlink_recv_raw(struct mimectl_varlink *v, const char **ret_msg, size_t *ret_len);

/* A call and its reply. Returns 0 with *ret_params (owned; may be NULL), 1 when the daemon
 * replied with an error (*ret_error owned: {"error": name, "parameters": {...}}), or a
 * negative code when the connection failed. A send that finds the connection closed still
 * reads the error mimed sent before closing (a call over its max_message) and returns 1
 * with it; -EPIPE when mimed sent none. */
int mimectl_varlink_call(struct mimectl_varlink *v, const char *method, json_t *params,
                         json_t **ret_params, json_t **ret_error);

/* An error reply as text, into buf (truncated at len): its name, ": description" when it
 * has one, and its other parameters as " (key=value, ...)", a string the description
 * already holds left out; a TaskNotFound says "no task 'x' (see 'mimectl tasks')". */
const char *mimectl_error_text(const json_t *error, char *buf, size_t len);

/* Standard base64 with padding; malloc'ed, NULL on ENOMEM. */
char *mimectl_base64_encode(const void *data, size_t n);
/* Reads a whole file (up to max_bytes); returns 0 or -errno / -EFBIG. */
int mimectl_read_file(const char *path, size_t max_bytes, uint8_t **ret_data, size_t *ret_len);

/* "48M" -> bytes (K/M/G/T powers of 1024); "5ms"/"250us"/"1s" -> milliseconds (bare: ms). */
int mimectl_parse_bytes(const char *s, uint64_t *ret_bytes);
int mimectl_parse_ms(const char *s, double *ret_ms);

/* The subcommands that talk to mimed (cmd_daemon.c); each returns an exit code above. */
int mimectl_cmd_infer(int argc, char **argv);
int mimectl_cmd_tasks(int argc, char **argv);
int mimectl_cmd_status(int argc, char **argv);
int mimectl_cmd_budget(int argc, char **argv);
int mimectl_cmd_phase(int argc, char **argv);
int mimectl_cmd_reload(int argc, char **argv);
int mimectl_cmd_watch(int argc, char **argv);
int mimectl_cmd_bench(int argc, char **argv);
