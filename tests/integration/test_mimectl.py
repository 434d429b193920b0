#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test_mimectl -- mimectl against the real mimed: the error a daemon sends before it closes
# a connection whose call is over limits.max_message, and an error's parameters as printed
# (from a stand-in on the socket).
# Environment: MIMED, MKBUNDLE, MIMECTL name the built programs (read by test_mimed, whose
# Daemon and helpers this file uses). Stdlib only.
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


TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


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
        only = os.environ.get('ONLY')  # ONLY=name[,name...]: just those
        for t in TESTS:
            if only and t.__name__ not in only.split(','):
                continue
            try:
                t(ctx)
                print('ok   %s' % t.__name__, flush=True)
            except Exception:
                failures += 1
                print('FAIL %s' % t.__name__, flush=True)
                traceback.print_exc()
    print('%d failures' % failures)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
