#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test_mimectl -- mimectl against the real mimed: which socket it finds without --socket
# (a user's $XDG_RUNTIME_DIR/mime/mimed.sock, else the system's /run/mime/mimed.sock, in a
# private mount namespace with its own /run, the client run as nobody), the error a daemon
# sends before it closes a connection whose call is over limits.max_message, an error's
# parameters as printed (from a stand-in on the socket), and the bash completion's phase
# numbers asked of the daemon.
# Environment: MIMED, MKBUNDLE, MIMECTL name the built programs (read by test_mimed, whose
# Daemon and helpers this file uses). Stdlib only.
import ctypes
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_mimed as T  # noqa: E402

NOBODY = 65534
SYSTEM_SOCK = '/run/mime/mimed.sock'
COMPLETION = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'docs',
                          'completion', 'mimectl.bash')


class Ctx:
    pass


def mimectl(*args, env=None, uid=None, timeout=120):
    """(exit code, stdout, stderr) of mimectl; as uid (setuid in the child) when given.
    env is the whole environment: nothing of the caller's MIME_SOCKET, XDG_RUNTIME_DIR or
    RUNTIME_DIRECTORY leaks in."""
    def drop():
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    p = subprocess.run([T.MIMECTL] + [str(a) for a in args], capture_output=True, text=True,
                       env=env if env is not None else client_env(), timeout=timeout,
                       preexec_fn=drop if uid is not None else None)
    return p.returncode, p.stdout, p.stderr


def client_env(**kw):
    env = {k: v for k, v in os.environ.items()
           if k not in ('MIME_SOCKET', 'XDG_RUNTIME_DIR', 'RUNTIME_DIRECTORY')}
    env.update(kw)
    return env


def in_private_run(fn):
    """Runs fn() in a forked child with a mount namespace of its own and an empty tmpfs on
    /run (so /run/mime/mimed.sock is ours alone, and the host's is neither seen nor
    touched). Returns False when this system cannot (not root, no CAP_SYS_ADMIN); raises
    what fn raised, as text."""
    if os.geteuid() != 0:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    clone_newns, ms_rec, ms_private = 0x20000, 1 << 14, 1 << 18
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        out = {}
        try:
            os.close(r)
            if libc.unshare(clone_newns) != 0:
                out = {'skip': 'unshare(CLONE_NEWNS): %s' % os.strerror(ctypes.get_errno())}
            elif libc.mount(b'none', b'/', None, ms_rec | ms_private, None) != 0 or \
                    libc.mount(b'tmpfs', b'/run', b'tmpfs', 0, b'mode=0755') != 0:
                out = {'skip': 'mount: %s' % os.strerror(ctypes.get_errno())}
            else:
                fn()
                out = {'ok': True}
        except BaseException:
            out = {'error': traceback.format_exc()}
        finally:
            sys.stdout.flush()
            os.write(w, json.dumps(out).encode())
            os._exit(0)
    os.close(w)
    out = json.loads(T.child_result(r, pid))
    if 'error' in out:
        raise AssertionError('in the private /run:\n' + out['error'])
    if 'skip' in out:
        print('  cannot make a private /run (%s)' % out['skip'])
        return False
    return True


def start_system_mimed(ctx, bundle):
    """mimed as root with no --socket, no socket key and neither $RUNTIME_DIRECTORY nor
    $XDG_RUNTIME_DIR: its own default, /run/mime/mimed.sock."""
    config = os.path.join(ctx.tmp, 'system.yaml')
    with open(config, 'w') as f:
        f.write('bundle: %s\nsocket_mode: "0666"\nworkers:\n  count: 1\n' % bundle)
    log = open(os.path.join(ctx.tmp, 'system.log'), 'wb')
    env = {k: v for k, v in os.environ.items()
           if k not in ('RUNTIME_DIRECTORY', 'XDG_RUNTIME_DIR', 'JOURNAL_STREAM',
                        'NOTIFY_SOCKET', 'LISTEN_FDS')}
    p = subprocess.Popen([T.MIMED, '--config', config], stdout=log, stderr=subprocess.STDOUT,
                         env=env)
    T.connect_retry(SYSTEM_SOCK).close()
    return p, log


def stop(p, log):
    p.terminate()
    p.wait(20)
    log.close()
    assert p.returncode == 0, p.returncode


def user_dirs(ctx, name):
    """A fake HOME and XDG_RUNTIME_DIR that nobody can enter."""
    home = os.path.join(ctx.tmp, name, 'home')
    xdg = os.path.join(ctx.tmp, name, 'xdg')
    for d in (home, xdg):
        os.makedirs(d)
        os.chmod(os.path.dirname(d), 0o755)
        os.chmod(d, 0o755)
    return home, xdg


def bundle_of(out):
    return json.loads(out)['bundle']


TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


@test
def socket_none_found_names_each_path(ctx):
    """Without --socket, $MIME_SOCKET or any socket at a default path, mimectl exits 3 and
    names every path it looked at: a user's $XDG_RUNTIME_DIR/mime/mimed.sock and
    /run/mime/mimed.sock; root only the latter."""
    home, xdg = user_dirs(ctx, 'none')
    user_sock = os.path.join(xdg, 'mime', 'mimed.sock')

    def body():
        env = client_env(HOME=home, XDG_RUNTIME_DIR=xdg)
        code, out, err = mimectl('status', env=env, uid=NOBODY)
        assert code == 3, (code, out, err)
        assert user_sock in err and SYSTEM_SOCK in err, err
        code, out, err = mimectl('status', env=env)  # root
        assert code == 3 and SYSTEM_SOCK in err and xdg not in err, (code, err)
        # $MIME_SOCKET empty is unset; without $XDG_RUNTIME_DIR only /run/mime/ is tried
        code, out, err = mimectl('tasks', env=client_env(HOME=home, MIME_SOCKET=''),
                                 uid=NOBODY)
        assert code == 3 and SYSTEM_SOCK in err and err.count('mimed.sock') == 1, err

    if not in_private_run(body):
        print('skip socket_none_found_names_each_path: no private /run')


@test
def socket_default_finds_system_daemon(ctx):
    """A user (nobody, with a fake HOME and XDG_RUNTIME_DIR) reaches the system mimed on
    /run/mime/mimed.sock when it has no mimed of its own, whatever $RUNTIME_DIRECTORY says
    (in a client that is its own service's); its own mimed on
    $XDG_RUNTIME_DIR/mime/mimed.sock comes first once there; root ignores
    $XDG_RUNTIME_DIR; $MIME_SOCKET and --socket come before both."""
    sys_bundle = os.path.join(ctx.tmp, 'system.mime')
    user_bundle = os.path.join(ctx.tmp, 'user.mime')
    for b, seed in ((sys_bundle, '2'), (user_bundle, '3')):
        subprocess.check_call([T.MKBUNDLE, b, seed], stdout=subprocess.DEVNULL)
    home, xdg = user_dirs(ctx, 'both')
    elsewhere = os.path.join(ctx.tmp, 'both', 'service-run')
    os.makedirs(elsewhere)

    def body():
        env = client_env(HOME=home, XDG_RUNTIME_DIR=xdg, RUNTIME_DIRECTORY=elsewhere)
        p, log = start_system_mimed(ctx, sys_bundle)
        user = None
        try:
            code, out, err = mimectl('status', '--json', env=env, uid=NOBODY)
            assert code == 0, (code, out, err)
            assert bundle_of(out) == sys_bundle, out
            # a user's mimed, on its default socket
            os.makedirs(os.path.join(xdg, 'mime'))
            user = T.Daemon(os.path.join(xdg, 'mime'), 'mimed', user_bundle, workers=1)
            assert user.sock == os.path.join(xdg, 'mime', 'mimed.sock')
            code, out, err = mimectl('status', '--json', env=env, uid=NOBODY)
            assert code == 0 and bundle_of(out) == user_bundle, (code, out, err)
            code, out, err = mimectl('status', '--json', env=env)  # root
            assert code == 0 and bundle_of(out) == sys_bundle, (code, out, err)
            code, out, err = mimectl('status', '--json', env=dict(env, MIME_SOCKET=user.sock))
            assert code == 0 and bundle_of(out) == user_bundle, (code, out, err)
            code, out, err = mimectl('status', '--json', '--socket', SYSTEM_SOCK,
                                     env=dict(env, MIME_SOCKET=user.sock), uid=NOBODY)
            assert code == 0 and bundle_of(out) == sys_bundle, (code, out, err)
        finally:
            if user:
                assert user.stop() == 0
            stop(p, log)

    if not in_private_run(body):
        print('skip socket_default_finds_system_daemon: no private /run')


def stored_png(path, w, h):
    """A gray PNG of w x h noise, its IDAT stored (zlib level 0): about w * h bytes."""
    rows = b''.join(b'\0' + os.urandom(w) for _ in range(h))

    def chunk(kind, data):
        return (struct.pack('>I', len(data)) + kind + data +
                struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' +
                chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0)) +
                chunk(b'IDAT', zlib.compress(rows, 0)) + chunk(b'IEND', b''))


@test
def over_max_message_prints_invalid_request(ctx):
    """A call longer than the daemon's limits.max_message: mimed answers InvalidRequest
    ("message longer than N bytes") and closes; mimectl prints that error and exits 1 (the
    daemon answered with an error), also when the call is so long that its send fails on
    the closed connection (infer of one image, of two, bench), and against the default 8M
    limit with a 7 MB PNG."""
    small = os.path.join(ctx.tmp, 'small.png')
    big = os.path.join(ctx.tmp, 'big.png')
    huge = os.path.join(ctx.tmp, 'huge.png')
    stored_png(small, 300, 300)      # 90 KB: base64 120 KB, sent whole before mimed closes
    stored_png(big, 2000, 2000)      # 4 MB: the send fails once mimed stops reading
    stored_png(huge, 2650, 2650)     # 7 MB: base64 9.4 MB
    want = 'io.mime.InvalidRequest: message longer than 65536 bytes'
    d = T.Daemon(ctx.tmp, 'limited', ctx.bundle, 'limits:\n  max_message: 64K\n', workers=1)
    try:
        sock = ('--socket', d.sock)
        for args in (('infer', '--task', 'alpha', small), ('infer', '--task', 'alpha', big),
                     ('infer', '--task', 'alpha', big, small),
                     ('bench', '-n', 1, '-c', 1, '--tasks', 'alpha', big)):
            code, out, err = mimectl(*(args + sock))
            assert code == 1 and 'mimectl: ' in err and want in err, (args, code, err)
        code, out, err = mimectl('tasks', *sock)  # still serving
        assert code == 0 and 'alpha' in out, (code, out, err)
    finally:
        assert d.stop() == 0
    d = T.Daemon(ctx.tmp, 'default', ctx.bundle, workers=1)
    try:
        code, out, err = mimectl('infer', '--task', 'alpha', '--socket', d.sock, huge)
        assert code == 1, (code, err)
        assert 'io.mime.InvalidRequest: message longer than %d bytes' % (8 << 20) in err, err
    finally:
        assert d.stop() == 0


@test
def error_parameters_printed(ctx):
    """Every parameter of an error reply is printed: the description after the name, the
    others as key=value (a string the description already holds is not repeated); a
    TaskNotFound names the task. From a stand-in that answers each call with one error."""
    sock_path = os.path.join(ctx.tmp, 'errors.sock')
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(4)
    cases = [
        ({'error': 'io.mime.Busy', 'parameters': {'queue_depth': 64}},
         'mimectl: io.mime.Busy (queue_depth=64)'),
        ({'error': 'io.mime.PhaseUnavailable',
          'parameters': {'phase': 3, 'description': 'needs more memory than the budget'}},
         'mimectl: io.mime.PhaseUnavailable: needs more memory than the budget (phase=3)'),
        ({'error': 'org.varlink.service.InvalidParameter',
          'parameters': {'parameter': 'top_k', 'description': "'top_k' must be 1..10"}},
         "mimectl: org.varlink.service.InvalidParameter: 'top_k' must be 1..10"),
        ({'error': 'org.varlink.service.MethodNotFound',
          'parameters': {'method': 'io.mime.Infer'}},
         'mimectl: org.varlink.service.MethodNotFound (method=io.mime.Infer)'),
        ({'error': 'io.mime.TaskNotFound', 'parameters': {'task': 'nope'}},
         "mimectl: io.mime.TaskNotFound: no task 'nope' (see 'mimectl tasks')"),
        ({'error': 'io.mime.ShuttingDown', 'parameters': {}},
         'mimectl: io.mime.ShuttingDown'),
    ]

    def serve():
        for reply, _ in cases:
            conn, _ = srv.accept()
            buf = b''
            while b'\0' not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                buf += chunk
            conn.sendall(json.dumps(reply).encode() + b'\0')
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    img = os.path.join(ctx.tmp, 'err.pgm')
    with open(img, 'wb') as f:
        f.write(T.pgm(16, 16, 1))
    try:
        for reply, want in cases:
            code, out, err = mimectl('infer', '--task', 'alpha', '--socket', sock_path, img)
            assert code == 1 and err.strip() == want, (reply, code, err)
    finally:
        t.join(10)
        srv.close()


def complete(words, env):
    """COMPREPLY of the completion for words (the last one being completed)."""
    script = ('. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _mimectl; '
              'printf "%s\\n" "${COMPREPLY[@]}"')
    p = subprocess.run(['bash', '-c', script, 'complete', COMPLETION] + words,
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    return [w for w in p.stdout.split('\n') if w]


@test
def completion_asks_phases(ctx):
    """The bash completion offers the daemon's phases, 1..n_phases from `mimectl status
    --json`, for `mimectl phase` (with auto) and `infer --phase`, over --socket or
    $MIME_SOCKET; nothing but auto without a daemon; 0 for `run --phase` (offline)."""
    phased = os.path.join(ctx.tmp, 'phased.mime')
    subprocess.check_call([T.MKBUNDLE, phased, '5', '--phases', '3'],
                          stdout=subprocess.DEVNULL)
    env = client_env(PATH=os.path.dirname(T.MIMECTL) + os.pathsep + os.environ['PATH'])
    none = os.path.join(ctx.tmp, 'none.sock')
    d = T.Daemon(ctx.tmp, 'phased', phased, workers=1)
    try:
        code, out, err = mimectl('status', '--json', '--socket', d.sock)
        assert json.loads(out)['n_phases'] == 3, out
        assert complete(['mimectl', 'phase', '--socket', d.sock, ''], env) == \
            ['auto', '1', '2', '3']
        assert complete(['mimectl', 'phase', ''], dict(env, MIME_SOCKET=d.sock)) == \
            ['auto', '1', '2', '3']
        assert complete(['mimectl', 'infer', '--socket', d.sock, '--phase', ''], env) == \
            ['1', '2', '3']
        assert complete(['mimectl', 'infer', '--phase', '2'], dict(env, MIME_SOCKET=d.sock)) \
            == ['2']
    finally:
        assert d.stop() == 0
    assert complete(['mimectl', 'phase', '--socket', none, ''], env) == ['auto']
    assert complete(['mimectl', 'infer', '--socket', none, '--phase', ''], env) == []
    assert complete(['mimectl', 'run', '--phase', ''], env) == ['0']


def main():
    for prog in (T.MIMED, T.MKBUNDLE, T.MIMECTL):
        if not os.access(prog, os.X_OK):
            print('missing %s' % prog)
            return 1
    ctx = Ctx()
    failures = 0
    with tempfile.TemporaryDirectory(prefix='mimectl-test-') as tmp:
        os.chmod(tmp, 0o755)  # nobody's client reaches sockets in here
        ctx.tmp = tmp
        ctx.bundle = os.path.join(tmp, 'test.mime')
        subprocess.check_call([T.MKBUNDLE, ctx.bundle, '1'], stdout=subprocess.DEVNULL)
        failures += T.run_tests(TESTS, ctx)  # ONLY=name[,name...]: just those
    print('%d failures' % failures)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
