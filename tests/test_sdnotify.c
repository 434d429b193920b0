// SPDX-License-Identifier: MIT
/* test_sdnotify -- mimed's own sd_notify / sd_watchdog_enabled / sd_listen_fds
 * (daemon/sdnotify.c): the exact datagram a service manager receives on a path and an
 * abstract address, from this process; the watchdog's and socket activation's variables
 * for this process and for another; close-on-exec; the environment left or unset. */
#include "tests/unit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/sdnotify.h"

static char tmpdir[] = "/tmp/mime-sdnotify-XXXXXX";
static int saved_fd[2] = {-1, -1}; /* whatever the test runner had at fds 3 and 4 */

static void clear_env(void)
{
	static const char *const vars[] = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
	                                   "LISTEN_PID",    "LISTEN_FDS",    "LISTEN_FDNAMES"};

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
}

static int setup(void **state)
{
	if (!mkdtemp(tmpdir))
		return -1;
	for (int i = 0; i < 2; i++)
		saved_fd[i] = fcntl(3 + i, F_DUPFD_CLOEXEC, 100); /* -1 when not open */
	clear_env();
	return 0;
}

static int teardown(void **state)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/notify", tmpdir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/listen", tmpdir);
	unlink(path);
	rmdir(tmpdir);
	for (int i = 0; i < 2; i++) {
		if (saved_fd[i] >= 0) {
			dup2(saved_fd[i], 3 + i);
			close(saved_fd[i]);
		} else {
			close(3 + i);
		}
	}
	clear_env();
	return 0;
}

static void setenv_int(const char *name, long v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%ld", v);
	assert_int_equal(setenv(name, buf, 1), 0);
}

/* A datagram socket bound at sa (len bytes of it), receiving senders' credentials. */
static int bind_dgram(const struct sockaddr_un *sa, socklen_t len)
{
	int one = 1, fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (const struct sockaddr *)sa, len), 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
	return fd;
}

/* Receives one datagram without waiting; returns its length (-1: none) and the sender's pid. */
static ssize_t recv_one(int fd, char *buf, size_t cap, pid_t *ret_pid)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(struct ucred))];
	} ctl;
	struct iovec iov = {.iov_base = buf, .iov_len = cap};
	struct msghdr mh = {.msg_iov = &iov,
	                    .msg_iovlen = 1,
	                    .msg_control = &ctl,
	                    .msg_controllen = sizeof(ctl)};
	ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT);

	*ret_pid = 0;
	for (struct cmsghdr *c = n >= 0 ? CMSG_FIRSTHDR(&mh) : NULL; c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
			struct ucred uc;

			memcpy(&uc, CMSG_DATA(c), sizeof(uc));
			*ret_pid = uc.pid;
		}
	return n;
}

static void test_notify_path_sends_the_exact_message(void **state)
{
	static const char *const msgs[] = {
		"READY=1\nSTATUS=serving 3 tasks, phase 2",
		"RELOADING=1\nMONOTONIC_USEC=123456789\nSTATUS=reloading",
		"STOPPING=1\nSTATUS=draining 0 calls",
		"WATCHDOG=1",
	};
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char buf[512];
	pid_t pid;
	int fd;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify", tmpdir);
	fd = bind_dgram(&sa, sizeof(sa));
	assert_int_equal(setenv("NOTIFY_SOCKET", sa.sun_path, 1), 0);
	for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
		ssize_t n;

		assert_int_equal(mimed_sd_notify(msgs[i]), 1);
		n = recv_one(fd, buf, sizeof(buf), &pid);
		/* the text, no NUL, sent by this process (NotifyAccess=main checks the pid) */
		assert_int_equal(n, (ssize_t)strlen(msgs[i]));
		assert_memory_equal(buf, msgs[i], (size_t)n);
		assert_int_equal(pid, getpid());
		assert_int_equal(recv_one(fd, buf, sizeof(buf), &pid), -1); /* one datagram each */
	}
	/* sd_notify(0, ...) leaves the variable for the next notification */
	assert_non_null(getenv("NOTIFY_SOCKET"));
	assert_string_equal(getenv("NOTIFY_SOCKET"), sa.sun_path);
	close(fd);
}

static void test_notify_abstract_namespace(void **state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char name[64], buf[64];
	size_t len;
	pid_t pid;
	int fd;

	/* "@name" is the abstract address "\0name" of exactly that length (no trailing NULs:
	 * those would be another address, and the send would be refused) */
	len = (size_t)snprintf(name, sizeof(name), "@mime-test-sdnotify-%d", (int)getpid());
	memcpy(sa.sun_path + 1, name + 1, len - 1);
	fd = bind_dgram(&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
	assert_int_equal(setenv("NOTIFY_SOCKET", name, 1), 0);
	assert_int_equal(mimed_sd_notify("READY=1\nSTATUS=abstract"), 1);
	assert_int_equal(recv_one(fd, buf, sizeof(buf), &pid), 23);
	assert_memory_equal(buf, "READY=1\nSTATUS=abstract", 23);
	assert_int_equal(pid, getpid());
	close(fd);
	/* nobody bound there any more */
	assert_true(mimed_sd_notify("WATCHDOG=1") < 0);
}

static void test_notify_unset_and_bad_addresses(void **state)
{
	char longpath[200];

	assert_int_equal(mimed_sd_notify("READY=1"), 0); /* not under a service manager */
	assert_int_equal(setenv("NOTIFY_SOCKET", "relative/notify", 1), 0);
	assert_int_equal(mimed_sd_notify("READY=1"), -EAFNOSUPPORT);
	assert_int_equal(setenv("NOTIFY_SOCKET", "vsock:2:1234", 1), 0);
	assert_int_equal(mimed_sd_notify("READY=1"), -EAFNOSUPPORT);
	assert_int_equal(setenv("NOTIFY_SOCKET", "", 1), 0);
	assert_int_equal(mimed_sd_notify("READY=1"), -EAFNOSUPPORT);
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(setenv("NOTIFY_SOCKET", longpath, 1), 0);
	assert_int_equal(mimed_sd_notify("READY=1"), -EINVAL);
	longpath[0] = '@';
	assert_int_equal(mimed_sd_notify("READY=1"), -EINVAL);
	snprintf(longpath, sizeof(longpath), "%s/nobody", tmpdir);
	assert_int_equal(setenv("NOTIFY_SOCKET", longpath, 1), 0);
	assert_int_equal(mimed_sd_notify("READY=1"), -ENOENT);
	assert_int_equal(mimed_sd_notify(""), -EINVAL);
}

static void test_watchdog(void **state)
{
	uint64_t usec = 7;

	assert_int_equal(mimed_sd_watchdog_enabled(&usec), 0);
	assert_int_equal(usec, 7);
	assert_int_equal(setenv("WATCHDOG_USEC", "30000000", 1), 0);
	assert_int_equal(mimed_sd_watchdog_enabled(&usec), 1);
	assert_int_equal(usec, 30000000);
	setenv_int("WATCHDOG_PID", getpid());
	usec = 7;
	assert_int_equal(mimed_sd_watchdog_enabled(&usec), 1);
	assert_int_equal(usec, 30000000);
	/* for another process (a parent that exported it to us): not ours to feed */
	setenv_int("WATCHDOG_PID", getpid() + 1);
	usec = 7;
	assert_int_equal(mimed_sd_watchdog_enabled(&usec), 0);
	assert_int_equal(usec, 7);
	assert_int_equal(setenv("WATCHDOG_PID", "x", 1), 0);
	assert_int_equal(mimed_sd_watchdog_enabled(&usec), -EINVAL);
	assert_int_equal(unsetenv("WATCHDOG_PID"), 0);
	assert_int_equal(setenv("WATCHDOG_USEC", "0", 1), 0);
	assert_int_equal(mimed_sd_watchdog_enabled(&usec), -EINVAL);
	assert_int_equal(setenv("WATCHDOG_USEC", "100ms", 1), 0);
	assert_int_equal(mimed_sd_watchdog_enabled(&usec), -EINVAL);
	assert_int_equal(setenv("WATCHDOG_USEC", "-5", 1), 0);
	assert_int_equal(mimed_sd_watchdog_enabled(&usec), -EINVAL);
	assert_int_equal(setenv("WATCHDOG_USEC", "99999999999999999999", 1), 0);
	assert_int_equal(mimed_sd_watchdog_enabled(&usec), -EINVAL);
	assert_int_equal(usec, 7);
	/* read, never unset */
	assert_non_null(getenv("WATCHDOG_USEC"));
}

/* Puts a new socket of type at fd target, close-on-exec off (as the manager passes it);
 * listening (and bound at tmpdir/listen) when listening. */
static void put_socket(int target, int type, bool listening)
{
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	if (listening) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/listen", tmpdir);
		unlink(sa.sun_path);
		assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		assert_int_equal(listen(fd, 4), 0);
	}
	if (fd != target) {
		assert_int_equal(dup2(fd, target), target); /* dup2 clears FD_CLOEXEC */
		close(fd);
	} else {
		assert_int_equal(fcntl(fd, F_SETFD, 0), 0);
	}
	assert_int_equal(fcntl(target, F_GETFD) & FD_CLOEXEC, 0);
}

static void test_listen_fds_for_this_process(void **state)
{
	char **names = NULL;

	put_socket(3, SOCK_STREAM, true);
	setenv_int("LISTEN_PID", getpid());
	assert_int_equal(setenv("LISTEN_FDS", "1", 1), 0);
	assert_int_equal(setenv("LISTEN_FDNAMES", "varlink", 1), 0);
	assert_int_equal(mimed_sd_listen_fds(false, &names), 1);
	assert_non_null(names);
	assert_string_equal(names[0], "varlink");
	assert_null(names[1]);
	mimed_sd_names_free(names);
	assert_int_equal(fcntl(3, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC); /* made close-on-exec */
	assert_int_equal(mimed_sd_is_unix_listener(3), 1);
	assert_non_null(getenv("LISTEN_FDS")); /* unset_env false: left alone */
	/* unset_env: same answer, and no child inherits the variables */
	assert_int_equal(mimed_sd_listen_fds(true, NULL), 1);
	assert_null(getenv("LISTEN_PID"));
	assert_null(getenv("LISTEN_FDS"));
	assert_null(getenv("LISTEN_FDNAMES"));
	assert_int_equal(mimed_sd_listen_fds(true, &names), 0); /* gone: nothing passed now */
	assert_null(names);
	close(3);
}

static void test_listen_fds_of_another_process_are_ignored(void **state)
{
	char **names = (char **)&names;

	put_socket(3, SOCK_STREAM, true);
	setenv_int("LISTEN_PID", getpid() + 1); /* e.g. a shell that was socket-activated */
	assert_int_equal(setenv("LISTEN_FDS", "1", 1), 0);
	assert_int_equal(setenv("LISTEN_FDNAMES", "varlink", 1), 0);
	assert_int_equal(mimed_sd_listen_fds(false, &names), 0);
	assert_null(names);
	assert_int_equal(fcntl(3, F_GETFD) & FD_CLOEXEC, 0); /* not ours: untouched */
	assert_int_equal(mimed_sd_listen_fds(true, &names), 0);
	assert_null(getenv("LISTEN_PID")); /* unset whatever the outcome */
	assert_null(getenv("LISTEN_FDS"));
	assert_null(getenv("LISTEN_FDNAMES"));
	/* no LISTEN_PID at all */
	assert_int_equal(setenv("LISTEN_FDS", "1", 1), 0);
	assert_int_equal(mimed_sd_listen_fds(true, &names), 0);
	close(3);
}

static void test_listen_fds_names_and_errors(void **state)
{
	char **names = NULL;

	put_socket(3, SOCK_STREAM, true);
	put_socket(4, SOCK_DGRAM, false);
	setenv_int("LISTEN_PID", getpid());
	assert_int_equal(setenv("LISTEN_FDS", "2", 1), 0);
	assert_int_equal(setenv("LISTEN_FDNAMES", "varlink:", 1), 0); /* an empty second name */
	assert_int_equal(mimed_sd_listen_fds(false, &names), 2);
	assert_string_equal(names[0], "varlink");
	assert_string_equal(names[1], "");
	assert_null(names[2]);
	mimed_sd_names_free(names);
	assert_int_equal(fcntl(4, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	assert_int_equal(unsetenv("LISTEN_FDNAMES"), 0);
	assert_int_equal(mimed_sd_listen_fds(false, &names), 2);
	assert_string_equal(names[0], "unknown");
	assert_string_equal(names[1], "unknown");
	mimed_sd_names_free(names);
	/* names for another count of descriptors */
	assert_int_equal(setenv("LISTEN_FDNAMES", "a", 1), 0);
	assert_int_equal(mimed_sd_listen_fds(false, &names), -EINVAL);
	assert_null(names);
	assert_int_equal(setenv("LISTEN_FDNAMES", "a:b:c", 1), 0);
	assert_int_equal(mimed_sd_listen_fds(false, &names), -EINVAL);
	assert_int_equal(mimed_sd_listen_fds(false, NULL), 2); /* names not asked: not read */
	assert_int_equal(unsetenv("LISTEN_FDNAMES"), 0);
	/* malformed counts and pids */
	static const char *const bad[] = {"0", "-1", "1x", "", "99999999999"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(setenv("LISTEN_FDS", bad[i], 1), 0);
		assert_int_equal(mimed_sd_listen_fds(false, NULL), -EINVAL);
	}
	assert_int_equal(setenv("LISTEN_FDS", "1", 1), 0);
	assert_int_equal(setenv("LISTEN_PID", "0", 1), 0);
	assert_int_equal(mimed_sd_listen_fds(false, NULL), -EINVAL);
	/* a descriptor that is not open */
	setenv_int("LISTEN_PID", getpid());
	close(3);
	assert_int_equal(mimed_sd_listen_fds(true, &names), -EBADF);
	assert_null(names);
	assert_null(getenv("LISTEN_FDS"));
	close(4);
}

static void test_is_unix_listener(void **state)
{
	int p[2];

	put_socket(3, SOCK_STREAM, true);
	assert_int_equal(mimed_sd_is_unix_listener(3), 1);
	put_socket(3, SOCK_STREAM, false); /* not listening */
	assert_int_equal(mimed_sd_is_unix_listener(3), 0);
	put_socket(3, SOCK_DGRAM, false);
	assert_int_equal(mimed_sd_is_unix_listener(3), 0);
	assert_int_equal(pipe(p), 0); /* not a socket */
	assert_int_equal(mimed_sd_is_unix_listener(p[0]), 0);
	close(p[0]);
	close(p[1]);
	close(3);
	assert_int_equal(mimed_sd_is_unix_listener(3), -EBADF);
}

/* Each test starts with none of the protocols' variables set. */
static int fresh_env(void **state)
{
	clear_env();
	return 0;
}

#define T(f) cmocka_unit_test_setup(f, fresh_env)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_notify_path_sends_the_exact_message),
		T(test_notify_abstract_namespace),
		T(test_notify_unset_and_bad_addresses),
		T(test_watchdog),
		T(test_listen_fds_for_this_process),
		T(test_listen_fds_of_another_process_are_ignored),
		T(test_listen_fds_names_and_errors),
		T(test_is_unix_listener),
	};

	return cmocka_run_group_tests_name("sdnotify", tests, setup, teardown);
}
