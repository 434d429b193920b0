/* SPDX-License-Identifier: MIT */
/* sdnotify -- the service manager's side of systemd's stable, documented protocols that mimed
 * speaks, written out instead of linking libsystemd (which maps itself and six libraries it
 * pulls in: ~0.9 MiB of RSS in every daemon, bench/RESULTS.md):
 *
 *   - notification (sd_notify(3)): one datagram of "KEY=VALUE\n..." text to the AF_UNIX
 *     socket named by $NOTIFY_SOCKET, a path ("/run/systemd/notify") or, with a leading
 *     '@', an abstract-namespace address;
 *   - the watchdog (sd_watchdog_enabled(3)): $WATCHDOG_USEC, for this process only when
 *     $WATCHDOG_PID is unset or names it;
 *   - socket activation (sd_listen_fds(3)): $LISTEN_FDS descriptors from fd 3 on when
 *     $LISTEN_PID names this process, named by the colon-separated $LISTEN_FDNAMES.
 *
 * Each follows libsystemd's function of the same name (v252) for what mimed asks of it; where
 * an edge case is stricter here it says so (an empty $NOTIFY_SOCKET, state or $LISTEN_FDNAMES:
 * an error). The environment is only unset where the caller asks. AF_VSOCK notify addresses
 * ("vsock:...", systemd 254 for virtual machines) are not supported: -EAFNOSUPPORT.
 * Threads: they read (and mimed_sd_listen_fds may unset) environment variables; call them
 * from one thread, before other threads read the environment. No state of their own. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define MIMED_SD_LISTEN_FDS_START 3

/* Sends state (e.g. "READY=1\nSTATUS=serving") as one datagram to $NOTIFY_SOCKET, as
 * sd_notify(0, state). Returns 1 when sent, 0 when $NOTIFY_SOCKET is unset, else a negative
 * errno: -EINVAL (empty state, an address too long for sun_path), -EAFNOSUPPORT (neither '/'
 * nor '@', an empty $NOTIFY_SOCKET too), or the socket's error (-ECONNREFUSED: nobody bound
 * there). */
int mimed_sd_notify(const char *state);

/* As sd_watchdog_enabled(0, ret_usec): 1 and *ret_usec (> 0) when the service manager
 * expects WATCHDOG=1 from this process at least every *ret_usec microseconds; 0 when not
 * ($WATCHDOG_USEC unset, or $WATCHDOG_PID names another process); -EINVAL on a malformed or
 * zero value. *ret_usec is written only when 1 is returned. */
int mimed_sd_watchdog_enabled(uint64_t *ret_usec);

/* As sd_listen_fds_with_names(unset_env, ret_names): the number n of descriptors passed
 * (fds MIMED_SD_LISTEN_FDS_START .. + n - 1, each made close-on-exec), 0 when none are for
 * this process ($LISTEN_PID unset or another process's), or a negative errno: -EINVAL on a
 * malformed variable or when $LISTEN_FDNAMES does not name n descriptors, -EBADF when a
 * descriptor is not open, -ENOMEM. ret_names (may be NULL): when n > 0, a NULL-terminated
 * array of n malloc'ed names ("unknown" each when $LISTEN_FDNAMES is unset; free with
 * mimed_sd_names_free), else NULL. unset_env: $LISTEN_PID, $LISTEN_FDS and $LISTEN_FDNAMES
 * are removed from the environment whatever the outcome, so that no child inherits them. */
int mimed_sd_listen_fds(bool unset_env, char ***ret_names);
void mimed_sd_names_free(char **names);

/* 1 when fd is a listening AF_UNIX SOCK_STREAM socket (what mimed serves on), 0 when it is
 * another kind of socket or descriptor, negative errno when fd is not open. */
int mimed_sd_is_unix_listener(int fd);
