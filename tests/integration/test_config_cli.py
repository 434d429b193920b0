#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test_config_cli -- mimed's configuration as the command line and SIGHUP see it: errors that
# name FILE:LINE and exit 2 at start (a task the bundle lacks, an unknown admin group, a key
# given twice) and keep the old settings serving on a reload; socket_mode applied on a
# reload, or left to systemd's socket unit for a socket it passed.
# Environment: MIMED, MKBUNDLE (and MIMECTL) as test_mimed.py reads them. Stdlib only.
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_mimed as T  # noqa: E402

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def write(path, text):
    with open(path, 'w') as f:
        f.write(text)


def line_of(text, needle, last=False):
    """The 1-based line of text holding needle: the first one, or the last one."""
    found = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert found, '%r not in %r' % (needle, text)
    return found[-1] if last else found[0]


def start_fails(ctx, name, text):
    """Runs mimed on the configuration text; it must exit 2. Returns (config path, output)."""
    conf = os.path.join(ctx.tmp, name + '.yaml')
    write(conf, text)
    r = subprocess.run([T.MIMED, '--config', conf, '--socket',
                        os.path.join(ctx.tmp, name + '.sock')],
                       capture_output=True, text=True, timeout=20)
    out = r.stdout + r.stderr
    assert r.returncode == 2, 'exit %d, want 2: %s' % (r.returncode, out)
    assert not os.path.exists(os.path.join(ctx.tmp, name + '.sock')), out
    return conf, out


def wait_log(d, needle, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = d.read_log()
        if needle in log:
            return log
        time.sleep(0.05)
    raise AssertionError('%r not logged:\n%s' % (needle, d.read_log()[-3000:]))


def config_text(bundle, extra='', mode='0666'):
    return ('bundle: %s\nsocket_mode: "%s"\nworkers:\n  count: 1\nlog:\n  level: debug\n%s'
            % (bundle, mode, extra))


@test
def start_task_not_in_bundle(ctx):
    """A task the bundle lacks is a configuration error: FILE:LINE of the name, exit 2."""
    text = config_text(ctx.bundle, 'tasks:\n  - alpha\n  - nope\n')
    conf, out = start_fails(ctx, 'notask', text)
    want = "%s:%d: tasks: 'nope' is not in bundle '%s'" % (conf, line_of(text, '- nope'),
                                                             ctx.bundle)
    assert want in out, out
    # A flow list: the line of the list.
    text = config_text(ctx.bundle, 'tasks: [nope]\n')
    conf, out = start_fails(ctx, 'notask2', text)
    assert "%s:%d: tasks: 'nope'" % (conf, line_of(text, 'tasks:')) in out, out


@test
def start_unknown_admin_group(ctx):
    text = config_text(ctx.bundle, 'access:\n  admin_group: nosuchgroup-mime\n')
    conf, out = start_fails(ctx, 'nogroup', text)
    want = "%s:%d: access.admin_group: no group 'nosuchgroup-mime'" % (
        conf, line_of(text, 'admin_group'))
    assert want in out, out


@test
def start_duplicate_keys(ctx):
    text = config_text(ctx.bundle, 'socket_mode: "0600"\n')
    conf, out = start_fails(ctx, 'dup', text)
    want = "%s:%d: duplicate key 'socket_mode' (first on line %d)" % (
        conf, line_of(text, 'socket_mode', last=True), line_of(text, 'socket_mode'))
    assert want in out, out
    text = config_text(ctx.bundle, 'batching:\n  max_batch: 4\n  max_wait: 1ms\n'
                       '  max_batch: 8\n')
    conf, out = start_fails(ctx, 'dup2', text)
    want = "%s:%d: duplicate key 'batching.max_batch'" % (conf, line_of(text, 'max_batch: 8'))
    assert want in out, out


@test
def reload_config_errors_keep_serving(ctx):
    """On SIGHUP or Reload, the same errors as at start are logged and returned, and the old
    settings keep serving every task."""
    d = T.Daemon(ctx.tmp, 'reload', ctx.bundle, workers=1)
    try:
        c = d.conn()
        before = T.infer(c, 'gamma', T.pgm(16, 16, 5))
        other = os.path.join(ctx.tmp, 'other.mime')
        subprocess.check_call([T.MKBUNDLE, other, '3'])
        cases = [
            # the same bundle: checked against the one serving
            (config_text(ctx.bundle, 'tasks: [alpha, nope]\n'), 'tasks: [',
             "tasks: 'nope' is not in bundle '%s'" % ctx.bundle),
            # another bundle: checked as it is loaded
            (config_text(other, 'tasks:\n  - beta\n  - nope\n'), '- nope',
             "tasks: 'nope' is not in bundle '%s'" % other),
            (config_text(ctx.bundle, 'access:\n  admin_group: nosuchgroup-mime\n'),
             'admin_group', "access.admin_group: no group 'nosuchgroup-mime'"),
            (config_text(ctx.bundle, 'log:\n  level: info\n'), 'log:',
             "duplicate key 'log'"),
        ]
        for text, at, why in cases:
            write(d.config, text)
            want = '%s:%d: %s' % (d.config, line_of(text, at, last=True), why)
            n = d.read_log().count('reload failed')
            d.p.send_signal(signal.SIGHUP)
            deadline = time.time() + 10
            while d.read_log().count('reload failed') == n and time.time() < deadline:
                time.sleep(0.05)
            log = d.read_log()
            assert 'reload failed, keeping the old state: ' + want in log, (want, log[-2000:])
            p = T.expect_error(c, 'io.mime.ReloadFailed', 'io.mime.Reload')
            assert want in p['description'], (want, p)
            for task in ('alpha', 'beta', 'gamma'):
                T.infer(c, task, T.pgm(16, 16, 5))
            assert T.infer(c, 'gamma', T.pgm(16, 16, 5))['top'] == before['top']
            st = c.call('io.mime.GetStatus')['status']
            assert st['bundle'] == ctx.bundle, st['bundle']
        c.close()
    finally:
        assert d.stop() == 0


@test
def reload_applies_socket_mode(ctx):
    d = T.Daemon(ctx.tmp, 'mode', ctx.bundle, workers=1)  # socket_mode "0666"
    try:
        assert stat.S_IMODE(os.stat(d.sock).st_mode) == 0o666
        write(d.config, config_text(ctx.bundle, mode='0600'))
        d.p.send_signal(signal.SIGHUP)
        wait_log(d, "reload: socket_mode 0666 -> 0600 on '%s'" % d.sock)
        assert stat.S_IMODE(os.stat(d.sock).st_mode) == 0o600
        # Through the Reload method too; the socket still serves its owner.
        write(d.config, config_text(ctx.bundle, mode='0640'))
        c = d.conn()
        assert c.call('io.mime.Reload') == {}
        assert stat.S_IMODE(os.stat(d.sock).st_mode) == 0o640
        assert "socket_mode 0600 -> 0640" in d.read_log()
        T.infer(c, 'alpha', T.pgm(16, 16, 1))
        c.close()
        # Unchanged: nothing said.
        n = d.read_log().count('socket_mode')
        c = d.conn()
        assert c.call('io.mime.Reload') == {}
        c.close()
        assert d.read_log().count('socket_mode') == n
    finally:
        assert d.stop() == 0


@test
def reload_socket_mode_of_activated_socket(ctx):
    """A socket passed by systemd keeps its mode (its socket unit's SocketMode= sets it); a
    reload that changes socket_mode says so."""
    path = os.path.join(ctx.tmp, 'act.sock')
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(8)
    ls.set_inheritable(True)  # it may be fd 3 itself, which dup2 would leave close-on-exec
    os.chmod(path, 0o604)
    conf = os.path.join(ctx.tmp, 'act.yaml')
    write(conf, config_text(ctx.bundle))
    env = dict(os.environ, LISTEN_FDS='1')
    for k in ('NOTIFY_SOCKET', 'LISTEN_PID', 'LISTEN_FDNAMES', 'WATCHDOG_USEC',
              'JOURNAL_STREAM'):
        env.pop(k, None)
    logpath = os.path.join(ctx.tmp, 'act.log')
    log = open(logpath, 'wb')
    p = subprocess.Popen(['/bin/sh', '-c', 'export LISTEN_PID=$$; exec "$@"', 'sh', T.MIMED,
                          '--config', conf, '--socket', os.path.join(ctx.tmp, 'unused.sock')],
                         env=env, stdout=log, stderr=subprocess.STDOUT, close_fds=False,
                         preexec_fn=lambda: os.dup2(ls.fileno(), 3))
    try:
        c = T.connect_retry(path)  # ls itself accepts it: wait for mimed's answer
        c.call('org.varlink.service.GetInfo')
        write(conf, config_text(ctx.bundle, mode='0600'))
        assert c.call('io.mime.Reload') == {}
        c.close()
        text = open(logpath, errors='replace').read()
        assert ("reload: socket_mode 0666 -> 0600 not applied: the socket is systemd's, its "
                "socket unit's SocketMode= governs it") in text, text
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o604
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()
        ls.close()


class Ctx:
    pass


def main():
    ctx = Ctx()
    failures = 0
    with tempfile.TemporaryDirectory(prefix='mimed-config-') as tmp:
        ctx.tmp = tmp
        ctx.bundle = os.path.join(tmp, 'test.mime')
        subprocess.check_call([T.MKBUNDLE, ctx.bundle, '1'])
        failures += T.run_tests(TESTS, ctx)
    print('%d failures' % failures)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
