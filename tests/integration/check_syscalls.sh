#!/bin/sh
# SPDX-License-Identifier: MIT
# check_syscalls.sh -- does mimed.service's SystemCallFilter= allow every system call mimed makes?
# Runs the built mimed under strace -f, serving real requests (InferBatch on every task from
# three clients at once, Infer with and without a phase, ListTasks, GetStatus, SetPhase,
# SetBudget, a bench, watch, a Reload and a refused one, SIGUSR1/SIGUSR2, a SIGHUP that loads
# another bundle in conventional mode, SIGTERM) with the unit's notify and watchdog protocols
# on, twice: binding its socket itself, and socket-activated (as with mimed.socket; needs
# systemd-socket-activate). From the unit's SystemCallFilter= lines, in order and with every
# @group resolved by 'systemd-analyze syscall-filter', it builds the filter systemd would
# load, and fails naming each system call mimed made (from its execve on: systemd loads the
# filter before it) that the filter does not allow: systemd would kill mimed with SIGSYS at
# the first.
#
# Usage: check_syscalls.sh UNIT (the built mimed.service)
# Environment: SYSTEMD_ANALYZE STRACE MIMED MIMECTL BUNDLE (a *.mime with tasks fmnist, mnist,
#   digits) SAMPLES (models/samples) [SOCKET_ACTIVATE (systemd-socket-activate; empty: that run
#   is skipped)] [PYTHON]
# Exit status: 0 allowed, 1 a call not allowed or mimed misbehaved, 77 (skip) without strace.
set -eu

UNIT=${1:?usage: check_syscalls.sh UNIT}
: "${SYSTEMD_ANALYZE:?}" "${MIMED:?}" "${MIMECTL:?}" "${BUNDLE:?}" "${SAMPLES:?}"
STRACE=${STRACE:-}
SOCKET_ACTIVATE=${SOCKET_ACTIVATE:-}
PYTHON=${PYTHON:-python3}
if [ -z "$STRACE" ]; then
	echo "check_syscalls: no strace (scripts/setup.sh installs it), skipped"
	exit 77
fi

T=$(mktemp -d)
pid="" tracer="" listener="" watcher=""
cleanup()
{
	for p in $pid $tracer $watcher $listener; do
		kill -KILL "$p" 2>/dev/null || true
	done
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail()
{
	echo "check_syscalls: $*" >&2
	for f in "$T"/*.log; do
		[ -f "$f" ] && { echo "--- $f"; tail -n 30 "$f"; } >&2
	done
	exit 1
}

# filter UNIT TRACE LABEL: checks TRACE (strace -f output) against UNIT's SystemCallFilter=.
# systemd's rules (systemd.exec(5), config_parse_syscall_filter): the first non-empty line sets
# the mode, allow-list (plus @default) or, led by '~', deny-list; each later line adds to that
# list or, led by '~' in allow-list mode (without it in deny-list mode), removes from it; an
# empty line resets. A ':errno' suffix changes the denial from SIGSYS to an error: still denied.
filter()
{
	awk -v analyze="$SYSTEMD_ANALYZE" -v mimed="$MIMED" -v label="$3" '
	# The system calls of a filter entry as " a b c ": a @group, nested groups too, resolved.
	function calls(e,    cmd, line, name, out) {
		if (e !~ /^@/)
			return " " e " "
		if (e in flat)
			return flat[e]
		cmd = analyze " syscall-filter " e " 2>&1"
		out = " "
		while ((cmd | getline line) > 0) {
			if (line !~ /^    [^ #]/)
				continue
			name = line
			sub(/^ +/, "", name)
			sub(/[ \t].*/, "", name)
			out = out (name ~ /^@/ ? substr(calls(name), 2) : name " ")
		}
		close(cmd)
		if (out == " ") {
			printf "check_syscalls: systemd-analyze syscall-filter %s: no such group\n", e
			bad_unit = 1
			exit 1
		}
		return flat[e] = out
	}
	function apply(e, invert,    n, i, c, list) {
		sub(/:.*/, "", e) # the errno a denied call gets instead of SIGSYS
		n = split(calls(e), list, " ")
		for (i = 1; i <= n; i++) {
			c = list[i]
			if ((mode == "allow") == !invert)
				set[c] = 1
			else
				delete set[c]
			if (invert)
				why[c] = why[c] (why[c] == "" ? "" : ", ") "~" e
		}
	}
	FNR == NR {
		if ($0 !~ /^SystemCallFilter=/)
			next
		v = substr($0, length("SystemCallFilter=") + 1)
		lines = lines "\n  " $0
		if (v ~ /^[ \t]*$/) {
			mode = ""
			split("", set)
			split("", why)
			next
		}
		invert = sub(/^~/, "", v)
		if (mode == "") {
			mode = invert ? "deny" : "allow"
			if (mode == "allow")
				apply("@default", 0)
		}
		n = split(v, words, /[ \t]+/)
		for (i = 1; i <= n; i++)
			if (words[i] != "")
				apply(words[i], invert)
		next
	}
	# The trace: "PID name(args) = ret", or "PID <... name resumed> ...", "PID --- SIGHUP ---".
	!started {
		if (index($0, "execve(\"" mimed "\"") && $0 ~ / = 0$/)
			started = 1
		else
			next
	}
	{
		rest = $0
		sub(/^[0-9]+ +/, "", rest)
		if (!match(rest, /^[a-z_][a-z0-9_]*\(/))
			next
		c = substr(rest, 1, RLENGTH - 1)
		if (!(c in count)) {
			first[c] = $0
			names = names " " c
		}
		count[c]++
		total++
	}
	END {
		if (bad_unit)
			exit 1
		if (mode == "") {
			printf "check_syscalls: no SystemCallFilter= in the unit\n"
			exit 1
		}
		if (!started) {
			printf "check_syscalls: %s: no execve of %s in the trace\n", label, mimed
			exit 1
		}
		n = split(names, list, " ")
		for (i = 1; i <= n; i++) {
			c = list[i]
			if ((mode == "allow") != (c in set)) {
				if (length(first[c]) > 160)
					first[c] = substr(first[c], 1, 160) "..."
				bad = bad sprintf("  %s (%d calls%s), first: %s\n", c, count[c],
				                  why[c] == "" ? "" : "; in " why[c], first[c])
				n_bad++
			}
		}
		printf "%s: mimed made %d calls of %d system calls:\n", label, total, n
		line = " "
		for (i = 1; i <= n; i++) {
			if (length(line) + length(list[i]) > 98) {
				print line
				line = " "
			}
			line = line " " list[i]
		}
		print line
		if (n_bad) {
			printf "check_syscalls: %s: %d of them not allowed by the unit (systemd kills " \
			       "mimed with SIGSYS at the first):\n%s", label, n_bad, bad
			printf "the unit says:%s\n", lines
			exit 1
		}
		printf "%s: all allowed by SystemCallFilter= of the unit\n", label
	}' "$1" "$2"
}

# wait_for WHAT SECONDS COMMAND...: runs COMMAND every 0.1 s until it succeeds.
wait_for()
{
	what=$1 n=$(($2 * 10))
	shift 2
	while ! "$@" >/dev/null 2>&1; do
		n=$((n - 1))
		[ "$n" -gt 0 ] || fail "timed out waiting for $what"
		[ -z "$tracer" ] || kill -0 "$tracer" 2>/dev/null || fail "mimed exited while waiting for $what"
		sleep 0.1
	done
}

# traced: sets pid to strace's child (the activator execs mimed in its place).
traced()
{
	pid=$(ps -o pid= --ppid "$tracer" | tr -d ' ')
	[ -n "$pid" ]
}

n_ready()
{
	grep -c 'READY=1' "$T/notify.log" || true
}

ready_after()
{
	[ "$(n_ready)" -gt "$1" ]
}

ctl()
{
	"$MIMECTL" "$@" --socket "$T/mimed.sock" >>"$T/mimectl.log" 2>&1 ||
		fail "mimectl $* failed"
}

# config BUNDLE [MODE]
config()
{
	cat >"$T/mimed.yaml" <<EOF
bundle: $1
mode: ${2:-mime}
workers:
  count: 2
  threads: 2
  blas_threads: 2
access:
  admin_group: $(id -gn)
EOF
}

# run LABEL [ACTIVATOR...]: mimed under strace, driven through every path above.
run()
{
	label=$1
	shift
	rm -f "$T/mimed.sock" "$T/notify" "$T/notify.log"
	: >"$T/notify.log"
	# systemd's notify socket, as a logging datagram listener.
	"$PYTHON" -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as f:
    while True:
        f.write(s.recv(4096).decode().replace("\n", " ") + "\n")
' "$T/notify" "$T/notify.log" &
	listener=$!
	wait_for "the notify socket" 10 test -S "$T/notify"
	config "$T/a.mime"

	# As the unit runs it: --config, Type=notify, WatchdogSec= (here 2 s: pings every 1 s),
	# journald's stream. --socket is ignored when socket-activated.
	NOTIFY_SOCKET=$T/notify WATCHDOG_USEC=2000000 JOURNAL_STREAM=0:0 \
		"$STRACE" -f -qq -e trace=all -o "$T/$label.trace" "$@" "$MIMED" \
		--config "$T/mimed.yaml" --socket "$T/mimed.sock" >"$T/$label.log" 2>&1 &
	tracer=$!
	wait_for "strace to start mimed" 10 traced
	if [ $# -gt 0 ]; then
		wait_for "the activation socket" 10 test -S "$T/mimed.sock"
		ctl status # the first connection starts mimed, as with mimed.socket
	fi
	wait_for "READY=1" 60 ready_after 0
	if [ $# -eq 0 ]; then # socket_mode's default, as the unit's group mime needs it
		mode=$(stat -c %a "$T/mimed.sock")
		[ "$mode" = 660 ] || fail "$label: mimed made its socket mode $mode, not 660"
	fi

	"$MIMECTL" watch --socket "$T/mimed.sock" >"$T/watch.out" 2>&1 &
	watcher=$!
	clients=""
	for task in fmnist mnist digits; do
		"$MIMECTL" infer --socket "$T/mimed.sock" --task $task "$SAMPLES/$task"/*.png \
			>"$T/infer-$task.out" 2>&1 &
		clients="$clients $!"
	done
	for p in $clients; do
		wait "$p" || fail "$label: an infer client failed: $(cat "$T"/infer-*.out)"
	done
	for task in fmnist mnist digits; do
		grep -q "task $task" "$T/infer-$task.out" || fail "$label: no $task answer"
	done
	ctl tasks
	ctl status
	ctl phase 1
	ctl infer --task mnist "$SAMPLES/mnist/3-0.png"
	ctl infer --task fmnist --phase 2 "$SAMPLES/fmnist/7-1.png"
	ctl phase auto
	kill -USR1 "$pid"
	kill -USR2 "$pid"
	ctl budget --memory 64M --latency 50ms
	ctl budget --memory none --latency none
	ctl bench -n 100 -c 4 "$SAMPLES/digits/5-0.png"
	n=$(n_ready)
	ctl reload
	wait_for "Reload's READY=1" 30 ready_after "$n"
	echo 'workers: {count: many}' >"$T/mimed.yaml" # refused: the old state keeps serving
	if "$MIMECTL" reload --socket "$T/mimed.sock" >>"$T/mimectl.log" 2>&1; then
		fail "$label: a bad configuration was accepted"
	fi

	# SIGHUP with another bundle and mode in the configuration: the bundle is reloaded and
	# each task gets its own engine.
	config "$T/b.mime" conventional
	n=$(n_ready)
	kill -HUP "$pid"
	wait_for "SIGHUP's READY=1" 60 ready_after "$n"
	ctl status
	grep -q "b.mime" "$T/mimectl.log" || fail "SIGHUP did not load b.mime"
	grep -q "mode *conventional" "$T/mimectl.log" || fail "SIGHUP did not switch the mode"
	ctl infer --task digits "$SAMPLES/digits/8-2.png" "$SAMPLES/digits/9-0.png"
	ctl infer --task mnist "$SAMPLES/mnist/8-2.png"
	kill "$watcher" 2>/dev/null || true
	wait "$watcher" 2>/dev/null || true
	watcher=""
	grep -q . "$T/watch.out" || fail "mimectl watch saw no event"

	kill -TERM "$pid"
	st=0
	wait "$tracer" || st=$?
	tracer="" pid=""
	[ "$st" -eq 0 ] || fail "$label: mimed exited with status $st after SIGTERM"
	grep -q 'STOPPING=1' "$T/notify.log" || fail "$label: no STOPPING=1"
	if [ $# -gt 0 ]; then
		grep -q "socket activation: fd 3, 'mimed.socket'" "$T/$label.log" ||
			fail "$label: not socket-activated"
	fi
	kill "$listener" 2>/dev/null || true
	wait "$listener" 2>/dev/null || true
	listener=""
	: >"$T/mimectl.log"
	filter "$UNIT" "$T/$label.trace" "$label" || status=1
}

cp "$BUNDLE" "$T/a.mime"
cp "$BUNDLE" "$T/b.mime"
echo "unit: $UNIT"
grep '^SystemCallFilter=' "$UNIT" | sed 's/^/  /'
status=0
run own-socket
if [ -n "$SOCKET_ACTIVATE" ]; then
	# It passes on only the variables named with -E; systemd names the fd for the socket unit.
	run socket-activated "$SOCKET_ACTIVATE" -l "$T/mimed.sock" --fdname=mimed.socket \
		-E NOTIFY_SOCKET -E WATCHDOG_USEC -E JOURNAL_STREAM
else
	echo "socket-activated: skipped (no systemd-socket-activate)"
fi
exit $status
