// SPDX-License-Identifier: MIT
/* sdnotify -- systemd's notification, watchdog and socket-activation protocols (see
 * sdnotify.h; the protocols: sd_notify(3), sd_watchdog_enabled(3), sd_listen_fds(3)). */
#include "daemon/sdnotify.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* A decimal number without sign, blanks or overflow. */
static int parse_u64(const char *s, uint64_t *ret)
{
	uint64_t v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*ret = v;
	return 0;
}

/* A process id: 1 .. INT32_MAX. */
static int parse_pid(const char *s, pid_t *ret)
{
	uint64_t v;

	if (parse_u64(s, &v) < 0 || v == 0 || v > INT32_MAX)
		return -EINVAL;
	*ret = (pid_t)v;
	return 0;
}

int mimed_sd_notify(const char *state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	const char *e = getenv("NOTIFY_SOCKET");
	socklen_t salen;
	size_t l;
	ssize_t n;
	int fd, r;

	if (!state || !*state)
		return -EINVAL;
	if (!e)
		return 0;
	l = strlen(e);
	if (e[0] == '/') { /* a path: with its NUL */
		if (l >= sizeof(sa.sun_path))
			return -EINVAL;
		memcpy(sa.sun_path, e, l + 1);
		salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + l + 1);
	} else if (e[0] == '@') { /* abstract: a leading NUL, the name's exact length */
		if (l > sizeof(sa.sun_path))
			return -EINVAL;
		sa.sun_path[0] = '\0';
		memcpy(sa.sun_path + 1, e + 1, l - 1);
		salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + l);
	} else {
		return -EAFNOSUPPORT;
	}
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	l = strlen(state);
	n = sendto(fd, state, l, MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
	r = n < 0 ? -errno : (size_t)n == l ? 1 : -EIO;
	close(fd);
	return r;
}

int mimed_sd_watchdog_enabled(uint64_t *ret_usec)
{
	const char *s = getenv("WATCHDOG_USEC");
	const char *p = getenv("WATCHDOG_PID");
	uint64_t usec;
	pid_t pid;

	if (!s)
		return 0;
	if (parse_u64(s, &usec) < 0 || usec == 0 || usec == UINT64_MAX)
		return -EINVAL;
	if (p) {
		if (parse_pid(p, &pid) < 0)
			return -EINVAL;
		if (pid != getpid())
			return 0;
	}
	*ret_usec = usec;
	return 1;
}

void mimed_sd_names_free(char **names)
{
	if (!names)
		return;
	for (char **p = names; *p; p++)
		free(*p);
	free(names);
}

/* n names from the colon-separated list s (empty names kept), or n "unknown" when s is
 * NULL; -EINVAL when s has another count. */
static int split_names(const char *s, int n, char ***ret)
{
	char **names = calloc((size_t)n + 1, sizeof(*names));
	int k = 0;

	if (!names)
		return -ENOMEM;
	if (s && *s) {
		for (const char *a = s;; k++) {
			const char *b = strchr(a, ':');
			size_t len = b ? (size_t)(b - a) : strlen(a);

			if (k == n)
				goto invalid;
			names[k] = strndup(a, len);
			if (!names[k])
				goto nomem;
			if (!b) {
				k++;
				break;
			}
			a = b + 1;
		}
		if (k != n)
			goto invalid;
	} else if (s) { /* "": no name at all */
		goto invalid;
	} else {
		for (; k < n; k++)
			if (!(names[k] = strdup("unknown")))
				goto nomem;
	}
	*ret = names;
	return 0;
invalid:
	mimed_sd_names_free(names);
	return -EINVAL;
nomem:
	mimed_sd_names_free(names);
	return -ENOMEM;
}

static int listen_fds(void)
{
	const char *e = getenv("LISTEN_PID");
	uint64_t n;
	pid_t pid;

	if (!e)
		return 0;
	if (parse_pid(e, &pid) < 0)
		return -EINVAL;
	if (pid != getpid()) /* for another process: our parent's, say */
		return 0;
	e = getenv("LISTEN_FDS");
	if (!e)
		return 0;
	if (parse_u64(e, &n) < 0 || n == 0 || n > (uint64_t)(INT32_MAX - MIMED_SD_LISTEN_FDS_START))
		return -EINVAL;
	for (int fd = MIMED_SD_LISTEN_FDS_START; fd < MIMED_SD_LISTEN_FDS_START + (int)n; fd++) {
		int flags = fcntl(fd, F_GETFD);

		if (flags < 0 ||
		    (!(flags & FD_CLOEXEC) && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0))
			return -errno;
	}
	return (int)n;
}

int mimed_sd_listen_fds(bool unset_env, char ***ret_names)
{
	int n = listen_fds();

	if (ret_names) {
		*ret_names = NULL;
		if (n > 0) {
			int r = split_names(getenv("LISTEN_FDNAMES"), n, ret_names);

			if (r < 0)
				n = r;
		}
	}
	if (unset_env) {
		unsetenv("LISTEN_PID");
		unsetenv("LISTEN_FDS");
		unsetenv("LISTEN_FDNAMES");
	}
	return n;
}

int mimed_sd_is_unix_listener(int fd)
{
	int v;
	socklen_t len = sizeof(v);
	struct sockaddr_un sa;

	if (fcntl(fd, F_GETFD) < 0)
		return -errno;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) < 0 || v != SOCK_STREAM)
		return 0;
	len = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) < 0 || !v)
		return 0;
	len = sizeof(sa);
	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0 || sa.sun_family != AF_UNIX)
		return 0;
	return 1;
}
