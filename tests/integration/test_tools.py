#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test_tools -- the offline tools' phases, on random-weight bundles from mkbundle (small
# graph, --phases 3): `mimectl run --phase N` against a forward pass written here from the
# bundle's bytes (so a run that ignores --phase, or enters the wrong phase, fails), against
# `mime-train eval --phase N` on the same images, its errors and exit codes; `mime-train eval
# --phase all`; `mime-train bundle inspect --json` with the manifest's measured keys and a
# phase's "task_accuracy"; `mimectl status`'s phase table and `mimectl infer --phase` from a
# real mimed; `mime-train phases` and `phase-tasks` end to end on the shipped parent with a
# few hundred Fashion-MNIST images (${MIME_DATA:-~/.cache/mime/data}/fmnist, fetched by
# scripts/test.sh), their phases' accuracies reproduced by `mime-train eval --phase`.
# Bundles with measured keys or missing per-phase tensors are made here by rewriting
# mkbundle's file (safetensors: 8-byte little-endian header length, JSON header, data).
# Environment: MIMECTL, MIME_TRAIN, MKBUNDLE, MIMED name the built programs. Stdlib only.
import array
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

MIMECTL = os.path.abspath(os.environ.get('MIMECTL', 'build/client/mimectl'))
MIME_TRAIN = os.path.abspath(os.environ.get('MIME_TRAIN', 'build/train/mime-train'))
MKBUNDLE = os.path.abspath(os.environ.get('MKBUNDLE', 'build/daemon/mkbundle'))
MIMED = os.path.abspath(os.environ.get('MIMED', 'build/daemon/mimed'))
SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
N_PHASES = 3
SIDE = 16  # mkbundle's small graph: input 1x16x16


# ---- safetensors ---------------------------------------------------------------------------

def st_read(path):
    """(header dict, data bytes) of a safetensors file."""
    with open(path, 'rb') as f:
        raw = f.read()
    n = struct.unpack('<Q', raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def st_write(path, header, data, keep=None):
    """Writes the tensors of (header, data) that keep(name) accepts, laid out again
    contiguously in their old order, and header's __metadata__."""
    names = sorted((k for k in header if k != '__metadata__' and (keep is None or keep(k))),
                   key=lambda k: header[k]['data_offsets'][0])
    out_header, chunks, at = {}, [], 0
    if '__metadata__' in header:
        out_header['__metadata__'] = header['__metadata__']
    for k in names:
        a, b = header[k]['data_offsets']
        out_header[k] = dict(header[k], data_offsets=[at, at + b - a])
        chunks.append(data[a:b])
        at += b - a
    h = json.dumps(out_header).encode()
    h += b' ' * ((-(8 + len(h))) % 64)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(chunks))


def manifest_of(header):
    return json.loads(header['__metadata__']['mime'])


def with_manifest(header, m):
    h = dict(header)
    h['__metadata__'] = dict(header['__metadata__'], mime=json.dumps(m))
    return h


# ---- the reference forward pass ------------------------------------------------------------

class Bundle:
    def __init__(self, path):
        self.header, self.data = st_read(path)
        self.manifest = manifest_of(self.header)

    def has(self, name):
        return name in self.header

    def f32(self, name):
        """The tensor's values as floats: F32, or F16 (a task's tensors after `mime-train
        bundle half`) decoded with struct's IEEE half."""
        a, b = self.header[name]['data_offsets']
        if self.header[name]['dtype'] == 'F16':
            v = array.array('f', struct.unpack('<%de' % ((b - a) // 2), self.data[a:b]))
            return v, self.header[name]['shape']
        assert self.header[name]['dtype'] == 'F32', (name, self.header[name])
        v = array.array('f')
        v.frombytes(self.data[a:b])
        if sys.byteorder != 'little':
            v.byteswap()
        return v, self.header[name]['shape']


def preprocess(pixels, spec):
    """16x16 gray bytes to the network input for a task spec of the same size (the
    resampling is then the identity): scale, invert, normalise."""
    assert spec['height'] == SIDE and spec['width'] == SIDE and spec['channels'] == 1
    out = []
    for p in pixels:
        v = p / 255.0
        if spec.get('invert'):
            v = 1.0 - v
        out.append((v - spec['mean'][0]) / spec['std'][0])
    return out


def forward(b, task, phase, pixels):
    """Logits of task for one image in phase (0 = the whole parent), as lib/engine.h
    describes it: conv / fc on the first k_active kernels and input channels, the task's
    threshold mask (a = y >= t ? y : 0; ReLU without thresholds), 2x2 max-pools, the head."""
    m = b.manifest
    spec = next(t for t in m['tasks'] if t['name'] == task)
    ph = m['phases'][phase - 1] if phase else None
    sub = 'phase%d/' % phase if phase and b.has('task/%s/phase%d/head.weight' %
                                                (task, phase)) else ''
    if phase and not sub:
        assert all(k == l['out'] for l in m['graph']['layers'] if l['kind'] in ('conv', 'fc')
                   for k in [ph['kernels'][l['name']]]), 'task cannot run in this phase'
    x = preprocess(pixels, spec['input'])
    c, h, w = 1, SIDE, SIDE
    for l in m['graph']['layers']:
        if l['kind'] in ('conv', 'fc'):
            wt, wshape = b.f32('parent/%s.weight' % l['name'])
            bias, _ = b.f32('parent/%s.bias' % l['name'])
            k = ph['kernels'][l['name']] if ph else l['out']
            if l['kind'] == 'conv':
                r, pad, cin = l['kernel'], l['pad'], wshape[1]
                y = []
                for o in range(k):
                    for yy in range(h):
                        for xx in range(w):
                            s = bias[o]
                            for ci in range(c):
                                for dy in range(r):
                                    iy = yy + dy - pad
                                    if iy < 0 or iy >= h:
                                        continue
                                    for dx in range(r):
                                        ix = xx + dx - pad
                                        if 0 <= ix < w:
                                            s += (wt[((o * cin + ci) * r + dy) * r + dx] *
                                                  x[(ci * h + iy) * w + ix])
                            y.append(s)
                c = k
            else:
                n_in = wshape[1]
                y = [bias[o] + sum(wt[o * n_in + i] * x[i] for i in range(len(x)))
                     for o in range(k)]
                c, h, w = k, 1, 1
            if l.get('act') == 'relu':
                if spec['thresholds'] == 'none':
                    y = [v if v > 0 else 0.0 for v in y]
                else:
                    t, _ = b.f32('task/%s/%s%s.threshold' % (task, sub, l['name']))
                    per = h * w if spec['thresholds'] == 'channel' else 1
                    y = [v if v >= t[i // per] else 0.0 for i, v in enumerate(y)]
            x = y
        elif l['kind'] == 'maxpool':
            oh, ow = h // 2, w // 2
            x = [max(x[(ci * h + 2 * yy + dy) * w + 2 * xx + dx]
                     for dy in range(2) for dx in range(2))
                 for ci in range(c) for yy in range(oh) for xx in range(ow)]
            h, w = oh, ow
    hw, hshape = b.f32('task/%s/%shead.weight' % (task, sub))
    hb, _ = b.f32('task/%s/%shead.bias' % (task, sub))
    assert hshape[1] == len(x), (hshape, len(x))
    return [hb[o] + sum(hw[o * len(x) + i] * x[i] for i in range(len(x)))
            for o in range(hshape[0])]


def argmax(v):
    return max(range(len(v)), key=lambda i: (v[i], -i))


# ---- helpers -------------------------------------------------------------------------------

class Ctx:
    pass


def run(*args, check=None):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)
    if check is not None and p.returncode != check:
        raise AssertionError('%s: exit %d, want %d\n%s%s' % (' '.join(map(str, args)),
                                                             p.returncode, check, p.stdout,
                                                             p.stderr))
    return p


def write_pgm(path, pixels):
    with open(path, 'wb') as f:
        f.write(b'P5\n%d %d\n255\n' % (SIDE, SIDE) + bytes(pixels))


def write_idx(prefix, images, labels):
    with open(prefix + '-images.idx', 'wb') as f:
        f.write(struct.pack('>IIII', 0x803, len(images), SIDE, SIDE) +
                b''.join(bytes(i) for i in images))
    with open(prefix + '-labels.idx', 'wb') as f:
        f.write(struct.pack('>II', 0x801, len(labels)) + bytes(labels))
    return prefix + '-images.idx', prefix + '-labels.idx'


def mimectl_run(ctx, bundle, task, phase, paths, check=0):
    args = [MIMECTL, 'run', '--bundle', bundle, '--task', task, '--json', '--logits']
    if phase is not None:
        args += ['--phase', phase]
    p = run(*args, *paths, check=check)
    return [json.loads(line) for line in p.stdout.splitlines()]


# ---- tests ---------------------------------------------------------------------------------

def run_phase_matches_reference(ctx):
    """Every task at every phase: mimectl run's logits are the reference's within 1e-3,
    its label the reference's (when not a near tie) and its answer names the phase."""
    b = Bundle(ctx.bundle)
    labels = {}  # (task, phase) -> labels of ctx.images
    for task in ('alpha', 'beta', 'gamma'):
        for phase in range(N_PHASES + 1):
            got = mimectl_run(ctx, ctx.bundle, task, phase, ctx.paths)
            assert len(got) == len(ctx.paths), got
            labels[task, phase] = []
            for img, res in zip(ctx.images, got):
                ref = forward(b, task, phase, img)
                assert res['phase'] == phase and res['task'] == task, res
                err = max(abs(a - r) for a, r in zip(res['logits'], ref))
                assert err < 1e-3 * (1 + max(abs(r) for r in ref)), \
                    '%s phase %d %s: logits %s, reference %s' % (task, phase, res['image'],
                                                                  res['logits'], ref)
                top = sorted(ref, reverse=True)
                if top[0] - top[1] > 1e-4:
                    assert res['label'] == argmax(ref), (task, phase, res, ref)
                labels[task, phase].append(res['label'])
    # The phases really differ: a tool that ran phase 0 (or any one phase) for every --phase
    # would give the same labels in all of them.
    for task in ('alpha', 'beta', 'gamma'):
        sets = {tuple(labels[task, p]) for p in range(N_PHASES + 1)}
        assert len(sets) > 1, 'task %s: the same labels in every phase: %s' % (task, sets)
    ctx.labels = labels
    # Without --phase: phase 0, and the human line says so.
    assert [r['label'] for r in mimectl_run(ctx, ctx.bundle, 'alpha', None, ctx.paths)] == \
        labels['alpha', 0]
    p = run(MIMECTL, 'run', '--bundle', ctx.bundle, '--task', 'alpha', '--phase', '2',
            ctx.paths[0], check=0)
    assert p.stdout.rstrip().endswith('phase 2'), p.stdout


def eval_agrees_with_run(ctx):
    """mime-train eval --phase N on the same images, labelled with run's answers in phase
    N, scores 1.0; labelled with another phase's answers it scores less."""
    for task in ('alpha', 'beta'):
        for phase in range(N_PHASES + 1):
            x, y = write_idx(os.path.join(ctx.tmp, '%s-%d' % (task, phase)), ctx.images,
                             ctx.labels[task, phase])
            p = run(MIME_TRAIN, 'eval', '--bundle', ctx.bundle, '--task', task, '--images',
                    x, '--labels', y, '--phase', phase, '--json', check=0)
            o = json.loads(p.stdout)
            assert o['phase'] == phase and o['accuracy'] == 1.0, o
            others = [q for q in range(N_PHASES + 1)
                      if ctx.labels[task, q] != ctx.labels[task, phase]]
            if others:
                p = run(MIME_TRAIN, 'eval', '--bundle', ctx.bundle, '--task', task,
                        '--images', x, '--labels', y, '--phase', others[0], '--json',
                        check=0)
                assert json.loads(p.stdout)['accuracy'] < 1.0, p.stdout


def half_bundle_matches_reference(ctx):
    """`mime-train bundle half`: every task tensor (whole parent and per phase) becomes F16,
    rounded to nearest even exactly as IEEE does (struct's 'e'), everything else is byte
    for byte the same; mimectl run on the result matches the reference forward pass on the
    halves in every phase, and `bundle verify` accepts it."""
    half = os.path.join(ctx.tmp, 'half.mime')
    p = run(MIME_TRAIN, 'bundle', 'half', ctx.bundle, '-o', half, check=0)
    assert 'F32 -> F16' in p.stdout, p.stdout
    run(MIME_TRAIN, 'bundle', 'verify', half, check=0)
    src, dst = Bundle(ctx.bundle), Bundle(half)
    n_half = 0
    for name, e in src.header.items():
        if name == '__metadata__':
            continue
        a, b = e['data_offsets']
        c, d = dst.header[name]['data_offsets']
        if name.startswith('task/'):
            assert dst.header[name]['dtype'] == 'F16', (name, dst.header[name])
            vals = struct.unpack('<%df' % ((b - a) // 4), src.data[a:b])
            want = struct.pack('<%de' % len(vals), *vals)
            assert dst.data[c:d] == want, name
            n_half += 1
        else:
            assert dst.header[name]['dtype'] == e['dtype'], name
            assert dst.data[c:d] == src.data[a:b], name
    assert n_half > 0
    assert os.path.getsize(half) < os.path.getsize(ctx.bundle)
    for task in ('alpha', 'gamma'):
        for phase in range(N_PHASES + 1):
            got = mimectl_run(ctx, half, task, phase, ctx.paths)
            for img, res in zip(ctx.images, got):
                ref = forward(dst, task, phase, img)
                err = max(abs(a - r) for a, r in zip(res['logits'], ref))
                assert err < 1e-3 * (1 + max(abs(r) for r in ref)), (task, phase, res, ref)
    # the parent's weights may not be F16: the reader names the tensor
    bad = os.path.join(ctx.tmp, 'bad-half.mime')
    h = dict(dst.header)
    name = next(k for k in h if k.startswith('parent/') and k.endswith('.bias'))
    a, b = h[name]['data_offsets']
    vals = struct.unpack('<%df' % ((b - a) // 4), dst.data[a:b])
    data = dst.data[:a] + struct.pack('<%de' % len(vals), *vals) + b'\0' * ((b - a) // 2) + \
        dst.data[b:]
    h[name] = dict(h[name], dtype='F16', data_offsets=[a, a + (b - a) // 2])
    h['__pad__'] = {'dtype': 'U8', 'shape': [(b - a) // 2],
                    'data_offsets': [a + (b - a) // 2, b]}
    st_write(bad, h, data)
    p = run(MIME_TRAIN, 'bundle', 'verify', bad)
    assert p.returncode != 0 and name in p.stderr and 'expected F32' in p.stderr, p.stderr


def run_bad_phase(ctx):
    """Phases the bundle does not have, or a task cannot run in: exit 4 and a message
    naming the phase (and the task); not a number: exit 2."""
    p = run(MIMECTL, 'run', '--bundle', ctx.bundle, '--task', 'alpha', '--phase',
            N_PHASES + 1, ctx.paths[0], check=4)
    assert 'no phase %d' % (N_PHASES + 1) in p.stderr and '1..%d' % N_PHASES in p.stderr, \
        p.stderr
    assert p.stdout == '', p.stdout
    p = run(MIMECTL, 'run', '--bundle', ctx.flat, '--task', 'alpha', '--phase', 1,
            ctx.paths[0], check=4)
    assert 'no phase 1' in p.stderr and 'no phases' in p.stderr, p.stderr
    for bad in ('x', '-1', '1x', ''):
        p = run(MIMECTL, 'run', '--bundle', ctx.bundle, '--task', 'alpha', '--phase', bad,
                ctx.paths[0], check=2)
        assert '--phase' in p.stderr, p.stderr
    # beta has no tensors for phase 1: beta cannot run there, and (mime_model_phase()
    # enters a phase for every task or none) neither can alpha, with beta named.
    for task in ('beta', 'alpha'):
        p = run(MIMECTL, 'run', '--bundle', ctx.partial, '--task', task, '--phase', 1,
                ctx.paths[0], check=4)
        assert "task 'beta'" in p.stderr and 'phase 1' in p.stderr, p.stderr
    # Phase 2 is intact.
    got = mimectl_run(ctx, ctx.partial, 'beta', 2, ctx.paths)
    assert [r['label'] for r in got] == ctx.labels['beta', 2]
    # gamma has no tensors for phase 3, the whole parent: its parent tensors serve, so its
    # answers there are phase 0's.
    got3 = mimectl_run(ctx, ctx.partial, 'gamma', 3, ctx.paths)
    got0 = mimectl_run(ctx, ctx.partial, 'gamma', 0, ctx.paths)
    assert [r['logits'] for r in got3] == [r['logits'] for r in got0]
    assert all(r['phase'] == 3 for r in got3)


def eval_phase_all(ctx):
    """--phase all: n+1 entries 0..n, each as --phase N alone measures it; a phase the task
    cannot run in is an entry with an error; bad phases are errors."""
    x, y = write_idx(os.path.join(ctx.tmp, 'all'), ctx.images, ctx.labels['alpha', 1])
    p = run(MIME_TRAIN, 'eval', '--bundle', ctx.bundle, '--task', 'alpha', '--images', x,
            '--labels', y, '--phase', 'all', '--json', check=0)
    a = json.loads(p.stdout)
    assert isinstance(a, list) and len(a) == N_PHASES + 1, a
    names = ['parent'] + ['p%d' % i for i in range(1, N_PHASES + 1)]
    masked = ['conv1', 'conv2', 'fc1']
    for i, o in enumerate(a):
        assert o['phase'] == i and o['phase_name'] == names[i], o
        assert sorted(o['sparsity']) == masked, o
        assert all(0 <= v <= 1 for v in o['sparsity'].values()), o
        assert o['ms_per_image'] > 0 and o['images'] == len(ctx.images), o
        alone = run(MIME_TRAIN, 'eval', '--bundle', ctx.bundle, '--task', 'alpha', '--images',
                    x, '--labels', y, '--phase', i, '--json', check=0)
        alone = json.loads(alone.stdout)
        assert alone['accuracy'] == o['accuracy'] and alone['sparsity'] == o['sparsity'], \
            (alone, o)
    assert a[1]['accuracy'] == 1.0, a[1]
    p = run(MIME_TRAIN, 'eval', '--bundle', ctx.bundle, '--task', 'alpha', '--images', x,
            '--labels', y, '--phase', 'all', check=0)
    rows = [line.split() for line in p.stdout.splitlines() if line[:1].isdigit()]
    assert [r[0] for r in rows] == [str(i) for i in range(N_PHASES + 1)], p.stdout
    assert 'conv1' in p.stdout and 'MS/IMAGE' in p.stdout, p.stdout
    # A phase beta cannot run in: an entry saying so, the others measured, exit 0.
    xb, yb = write_idx(os.path.join(ctx.tmp, 'allb'), ctx.images, ctx.labels['beta', 2])
    p = run(MIME_TRAIN, 'eval', '--bundle', ctx.partial, '--task', 'beta', '--images', xb,
            '--labels', yb, '--phase', 'all', '--json', check=0)
    a = json.loads(p.stdout)
    assert len(a) == N_PHASES + 1, a
    assert a[1]['accuracy'] is None and "task 'beta'" in a[1]['error'], a[1]
    assert a[2]['accuracy'] == 1.0 and 'error' not in a[2], a[2]
    p = run(MIME_TRAIN, 'eval', '--bundle', ctx.partial, '--task', 'beta', '--images', xb,
            '--labels', yb, '--phase', 1, check=1)
    assert "task 'beta'" in p.stderr, p.stderr
    p = run(MIME_TRAIN, 'eval', '--bundle', ctx.bundle, '--task', 'alpha', '--images', x,
            '--labels', y, '--phase', N_PHASES + 1, check=1)
    assert 'no phase %d' % (N_PHASES + 1) in p.stderr, p.stderr
    run(MIME_TRAIN, 'eval', '--bundle', ctx.bundle, '--task', 'alpha', '--images', x,
        '--labels', y, '--phase', 'some', check=2)
    run(MIME_TRAIN, 'eval', '--bundle', ctx.bundle, '--task', 'alpha', '--images', x,
        '--labels', y, '--phase', 'all', '--mode', 'conventional', check=2)


def inspect_phases(ctx):
    """inspect --json: the manifest's measured keys per phase, speed = 1/latency, the
    phase's task_accuracy, which tasks can run; the human output shows them too."""
    p = run(MIME_TRAIN, 'bundle', 'inspect', '--json', ctx.measured, check=0)
    phases = json.loads(p.stdout)['phases']
    assert [o['phase'] for o in phases] == list(range(1, N_PHASES + 1)), phases
    for i, o in enumerate(phases):
        want = ctx.measures[i]
        for k in ('accuracy', 'latency_ms', 'memory_bytes', 'nonzero_params'):
            assert o[k] == want[k], (k, o, want)
        assert abs(o['speed_per_ms'] - 1 / want['latency_ms']) < 1e-9, o
        assert o['task_accuracy'] == want['task_accuracy'], o
        assert o['tasks'] == ['alpha', 'beta', 'gamma'] and o['enterable'] is True, o
        assert o['whole'] == (i == N_PHASES - 1), o
    p = run(MIME_TRAIN, 'bundle', 'inspect', ctx.measured, check=0)
    assert 'SPEED' in p.stdout and '%.2f%%' % (100 * ctx.measures[0]['accuracy']) in p.stdout
    assert 'alpha %.2f%%' % (100 * ctx.measures[0]['task_accuracy']['alpha']) in p.stdout
    # Without measured keys they are absent; the partial bundle's phase 1 lacks beta.
    p = run(MIME_TRAIN, 'bundle', 'inspect', '--json', ctx.partial, check=0)
    phases = json.loads(p.stdout)['phases']
    assert all(k not in phases[0] for k in ('accuracy', 'latency_ms', 'speed_per_ms',
                                            'memory_bytes', 'nonzero_params',
                                            'task_accuracy')), phases[0]
    assert phases[0]['tasks'] == ['alpha', 'gamma'] and phases[0]['enterable'] is False
    assert phases[2]['tasks'] == ['alpha', 'beta', 'gamma'] and phases[2]['enterable'], \
        phases[2]
    assert phases[2]['tasks_with_tensors'] == ['alpha', 'beta'], phases[2]
    p = run(MIME_TRAIN, 'bundle', 'inspect', ctx.partial, check=0)
    assert 'beta (cannot run' in p.stdout and 'not enterable' in p.stdout, p.stdout


def status_phase_table(ctx):
    """mimectl status (human) prints GetStatus's phases[] as a table with the current phase
    marked; it moves with a pin."""
    sock = os.path.join(ctx.tmp, 'mimed.sock')
    log = open(os.path.join(ctx.tmp, 'mimed.log'), 'w')
    d = subprocess.Popen([MIMED, '--bundle', ctx.measured, '--socket', sock], stdout=log,
                         stderr=subprocess.STDOUT)
    try:
        # The socket file may appear before mimed listens: retry until it answers.
        for _ in range(200):
            p = run(MIMECTL, 'status', '--json', '--socket', sock)
            if p.returncode != 3:
                break
            time.sleep(0.05)
        assert p.returncode == 0, p.stderr
        st = json.loads(p.stdout)
        assert len(st['phases']) == N_PHASES, st
        for want, pin in ((st['phase'], None), (1, 1)):
            if pin:
                run(MIMECTL, 'phase', pin, '--socket', sock, check=0)
            out = run(MIMECTL, 'status', '--socket', sock, check=0).stdout
            lines = out.splitlines()
            head = next(i for i, line in enumerate(lines) if line.startswith('phases '))
            assert lines[head].split()[1] == '%d,' % N_PHASES, out
            assert lines[head + 1].split() == ['PHASE', 'NAME', 'MEMORY', 'P95', 'RSS'], out
            rows = {}
            for line in lines[head + 2:head + 2 + N_PHASES]:
                f = line.split()
                mark = f.pop(0) if f[0] == '*' else ''
                rows[int(f[0])] = (mark, f[1:])
            assert sorted(rows) == list(range(1, N_PHASES + 1)), out
            assert [p for p, r in rows.items() if r[0] == '*'] == [want], out
            for p, (_, f) in rows.items():
                mm = ctx.measures[p - 1]
                # name, memory in KiB with its source, the manifest's latency as the p95,
                # the daemon's predicted RSS in the phase (moves with the RSS between
                # calls), and nothing more
                assert len(f) == 8, out
                assert f[0] == 'p%d' % p, out
                assert f[1:4] == ['%.1f' % (mm['memory_bytes'] / 1024), 'KiB', '(manifest)'], out
                assert f[4:6] == ['%.3f' % mm['latency_ms'], 'ms'], out
                rss = st['phases'][p - 1]['predicted_rss_bytes'] / (1 << 20)
                assert f[7] == 'MiB' and abs(float(f[6]) - rss) < 1.0, (out, rss)
    finally:
        d.terminate()
        d.wait(20)
        log.close()


def infer_named_phase(ctx):
    """mimectl infer --phase N: the daemon runs the images in phase N (its reply says so) and
    answers what mimectl run gives offline in that phase; without --phase the daemon's own
    phase (the highest) runs; a bad --phase is a usage error."""
    sock = os.path.join(ctx.tmp, 'mimed-infer.sock')
    log = open(os.path.join(ctx.tmp, 'mimed-infer.log'), 'w')
    d = subprocess.Popen([MIMED, '--bundle', ctx.bundle, '--socket', sock], stdout=log,
                         stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            p = run(MIMECTL, 'status', '--json', '--socket', sock)
            if p.returncode != 3:
                break
            time.sleep(0.05)
        assert p.returncode == 0, p.stderr
        for phase in range(1, N_PHASES + 1):
            offline = mimectl_run(ctx, ctx.bundle, 'beta', phase, ctx.paths)
            p = run(MIMECTL, 'infer', '--task', 'beta', '--phase', phase, '--json',
                    '--socket', sock, *ctx.paths, check=0)
            got = json.loads(p.stdout)['results']
            assert [r['phase'] for r in got] == [phase] * len(ctx.paths), got
            assert [r['label'] for r in got] == [r['label'] for r in offline], (got, offline)
            p = run(MIMECTL, 'infer', '--task', 'beta', '--phase', phase, '--socket', sock,
                    ctx.paths[0], check=0)
            assert ', phase %d, ' % phase in p.stdout, p.stdout
        p = run(MIMECTL, 'infer', '--task', 'beta', '--json', '--socket', sock, ctx.paths[0],
                check=0)
        assert json.loads(p.stdout)['result']['phase'] == N_PHASES, p.stdout
        p = run(MIMECTL, 'infer', '--task', 'beta', '--phase', 'x', '--socket', sock,
                ctx.paths[0])
        assert p.returncode == 2 and '--phase' in p.stderr, (p.returncode, p.stderr)
    finally:
        d.terminate()
        d.wait(20)
        log.close()


def phases_build_small(ctx):
    """mime-train phases end to end on the shipped parent with a few hundred Fashion-MNIST
    images: a valid bundle with 5 nested phases (coarse, fine, coarse, fine, coarse), each
    with its measured accuracy, which `mime-train eval --phase` reproduces through the engine;
    the JSON record has the search, the fit and the variant; phase-tasks then gives the task
    tensors for every phase with both accuracies in the manifest."""
    data = os.path.join(os.environ.get('MIME_DATA', os.path.expanduser('~/.cache/mime/data')),
                        'fmnist')
    parent = os.path.join(SRC, 'models', 'fmnist-parent.mime')
    out = os.path.join(ctx.tmp, 'phased-fmnist.mime')
    rec = os.path.join(ctx.tmp, 'phases.json')
    run(MIME_TRAIN, 'phases', '--bundle', parent, '--task', 'fmnist', '--data', data,
        '-o', out, '--json', rec, '--train-limit', 300, '--test-limit', 200, '--epochs', 1,
        '--search-epochs', 1, '--max-steps', 2, '--reps', 5, '--retries', 0,
        '--train-threads', 1, '--variants', 'none', check=0)
    run(MIME_TRAIN, 'bundle', 'verify', out, check=0)
    insp = json.loads(run(MIME_TRAIN, 'bundle', 'inspect', '--json', out, check=0).stdout)
    phases = insp['phases']
    assert len(phases) == 5, phases
    kinds = [p['name'].split('-', 1)[1] for p in phases]
    assert kinds == ['coarse', 'fine', 'coarse', 'fine', 'coarse'], kinds
    nz = [p['nonzero_params'] for p in phases]
    assert nz == sorted(nz) and nz[0] < nz[-1], nz
    r = json.load(open(rec))
    assert r['search'] and r['search'][0]['rate'] == 0.5, r['search']
    assert len(r['regression']['speed']['coef']) == 10, r['regression']
    v = r['variants'][0]
    assert v['name'] == 'combined_5p' and v['shipped'] and v['nested_bit_identical'], v
    ev = json.loads(run(MIME_TRAIN, 'eval', '--bundle', out, '--task', 'fmnist', '--phase',
                        'all', '--json', '--images',
                        os.path.join(data, 't10k-images-idx3-ubyte.gz'), '--labels',
                        os.path.join(data, 't10k-labels-idx1-ubyte.gz'), '--limit', 200,
                        check=0).stdout)
    assert len(ev) == 6, ev
    for p in range(1, 6):
        assert abs(ev[p]['accuracy'] - v['phases'][p - 1]['accuracy']) < 1e-9, (ev[p], v)
    out2 = os.path.join(ctx.tmp, 'phased-tasks.mime')
    rec2 = os.path.join(ctx.tmp, 'phase-tasks.json')
    run(MIME_TRAIN, 'phase-tasks', '--bundle', out, '--data-root', os.path.dirname(data),
        '-o', out2, '--epochs', 1, '--train-limit', 200, '--test-limit', 100, '--threads', 1,
        '--val', '20%', '--json', rec2, check=0)
    insp = json.loads(run(MIME_TRAIN, 'bundle', 'inspect', '--json', out2, check=0).stdout)
    phases = insp['phases']
    rows = json.load(open(rec2))['fmnist']
    # --val: per phase the sliced or the trained tensors, whichever validates better (the
    # sliced on a tie); the bundle serves what was kept, with that accuracy in the manifest
    ev = json.loads(run(MIME_TRAIN, 'eval', '--bundle', out2, '--task', 'fmnist', '--phase',
                        'all', '--json', '--images',
                        os.path.join(data, 't10k-images-idx3-ubyte.gz'), '--labels',
                        os.path.join(data, 't10k-labels-idx1-ubyte.gz'), '--limit', 100,
                        check=0).stdout)
    for p, row in zip(phases, rows):
        assert row['val_images'] == 40, row
        shared = row['val_shared'] >= row['val_trained']
        assert row['kept'] == ('shared' if shared else 'trained'), row
        assert row['served'] == (row['shared'] if shared else row['trained']), row
        assert abs(p['task_accuracy']['fmnist'] - row['served']) < 1e-9, (p, row)
        assert abs(ev[row['phase']]['accuracy'] - row['served']) < 1e-9, (ev, row)


def sparse_head_end_to_end(ctx):
    """mime-train thresholds --head-density on the shipped parent with a few hundred mnist
    digits: the head is stored sparse (head.weight.mask, a bit per weight, and as many
    head.weight.values as bits set: the 25% largest), the JSON's task bytes are those
    tensors', `bundle verify` accepts it, `bundle half` makes the values F16 and leaves the
    mask alone, and `eval` on the written bundle reproduces the accuracy the trainer measured
    on its own copy (so the stored sparse head is the trained one)."""
    root = os.environ.get('MIME_DATA', os.path.expanduser('~/.cache/mime/data'))
    data = os.path.join(root, 'mnist')
    parent = os.path.join(SRC, 'models', 'fmnist-parent.mime')
    out = os.path.join(ctx.tmp, 'sparse-head.mime')
    rec = os.path.join(ctx.tmp, 'sparse-head.json')
    run(MIME_TRAIN, 'thresholds', '--bundle', parent, '--task', 'mnist', '--data', data,
        '--classes', '0,1,2,3,4,5,6,7,8,9', '--granularity', 'channel', '--epochs', 2,
        '--head-density', 0.25, '--train-limit', 300, '--test-limit', 200, '--threads', 1,
        '--json', rec, '-o', out, check=0)
    run(MIME_TRAIN, 'bundle', 'verify', out, check=0)
    b = Bundle(out)
    r = json.load(open(rec))
    assert not b.has('task/mnist/head.weight')
    mask = b.header['task/mnist/head.weight.mask']
    vals = b.header['task/mnist/head.weight.values']
    n_w = 10 * 1152
    assert mask['dtype'] == 'U8' and mask['shape'] == [n_w // 8], mask
    a, e = mask['data_offsets']
    bits = sum(bin(x).count('1') for x in b.data[a:e])
    assert vals['dtype'] == 'F32' and vals['shape'] == [bits], (vals, bits)
    assert bits == r['training']['head_pruning']['nonzero'] == round(0.25 * n_w), (bits, r)
    assert r['training']['head_pruning']['before_epoch'] == 2, r['training']
    v, _ = b.f32('task/mnist/head.weight.values')
    assert all(x != 0 for x in v)
    own = sum(hd['data_offsets'][1] - hd['data_offsets'][0]
              for k, hd in b.header.items() if k.startswith('task/mnist/'))
    assert own == r['task_bytes'] == n_w // 8 + 4 * (bits + 10 + 32 + 64 + 128 + 128), \
        (own, r['task_bytes'])
    ev = json.loads(run(MIME_TRAIN, 'eval', '--bundle', out, '--task', 'mnist', '--json',
                        '--images', os.path.join(data, 't10k-images-idx3-ubyte.gz'),
                        '--labels', os.path.join(data, 't10k-labels-idx1-ubyte.gz'),
                        '--limit', 200, check=0).stdout)
    assert abs(ev['accuracy'] - r['accuracy']) < 1e-9, (ev, r['accuracy'])
    half = os.path.join(ctx.tmp, 'sparse-head-half.mime')
    run(MIME_TRAIN, 'bundle', 'half', out, '-o', half, check=0)
    h = Bundle(half)
    hm = h.header['task/mnist/head.weight.mask']
    assert h.header['task/mnist/head.weight.values']['dtype'] == 'F16'
    assert h.data[hm['data_offsets'][0]:hm['data_offsets'][1]] == b.data[a:e]

    # phase-tasks keeps a pruned head pruned, and sparse, in every phase: the same task on
    # the small phased parent of phases_build_small (5 phases, the last the whole parent)
    phased = os.path.join(ctx.tmp, 'phased-fmnist.mime')
    if not os.path.exists(phased):
        phases_build_small(ctx)
    on_phased = os.path.join(ctx.tmp, 'sparse-phased.mime')
    run(MIME_TRAIN, 'thresholds', '--bundle', phased, '--task', 'mnist', '--data', data,
        '--classes', '0,1,2,3,4,5,6,7,8,9', '--granularity', 'channel', '--epochs', 2,
        '--head-density', 0.25, '--train-limit', 300, '--test-limit', 200, '--threads', 1,
        '-o', on_phased, check=0)
    out2 = os.path.join(ctx.tmp, 'sparse-phase-tasks.mime')
    rec2 = os.path.join(ctx.tmp, 'sparse-phase-tasks.json')
    run(MIME_TRAIN, 'phase-tasks', '--bundle', on_phased, '--data-root', root, '--tasks',
        'mnist', '-o', out2, '--epochs', 1, '--train-limit', 200, '--test-limit', 100,
        '--threads', 1, '--json', rec2, check=0)
    run(MIME_TRAIN, 'bundle', 'verify', out2, check=0)
    p2 = Bundle(out2)
    for ph in range(1, 6):
        name = 'task/mnist/phase%d/head.weight' % ph
        assert not p2.has(name) and p2.has(name + '.mask'), (ph, sorted(p2.header))
        c, d = p2.header[name + '.mask']['data_offsets']
        set_bits = sum(bin(x).count('1') for x in p2.data[c:d])
        assert 0 < set_bits <= bits, (ph, set_bits, bits)
        assert p2.header[name + '.values']['shape'] == [set_bits]
    # the whole parent's phase: the same shape, so no weight pruned there comes back
    c, d = p2.header['task/mnist/phase5/head.weight.mask']['data_offsets']
    assert all(x & ~y == 0 for x, y in zip(p2.data[c:d], b2_mask(on_phased))), 'unpruned'
    ev = json.loads(run(MIME_TRAIN, 'eval', '--bundle', out2, '--task', 'mnist', '--phase',
                        'all', '--json', '--images',
                        os.path.join(data, 't10k-images-idx3-ubyte.gz'), '--labels',
                        os.path.join(data, 't10k-labels-idx1-ubyte.gz'), '--limit', 100,
                        check=0).stdout)
    # what the bundle serves per phase is what phase-tasks trained and measured
    rows = json.load(open(rec2))['mnist']
    assert len(ev) == 6 and len(rows) == 5, (ev, rows)
    for row in rows:
        assert abs(ev[row['phase']]['accuracy'] - row['served']) < 1e-9, (ev, row)
    # phase-tasks again on its own output: the new sparse phase heads replace both tensors
    # of each old one (mask and values), nothing is left twice
    out3 = os.path.join(ctx.tmp, 'sparse-phase-tasks-again.mime')
    run(MIME_TRAIN, 'phase-tasks', '--bundle', out2, '--data-root', root, '--tasks', 'mnist',
        '-o', out3, '--epochs', 1, '--train-limit', 200, '--test-limit', 100, '--threads', 1,
        check=0)
    run(MIME_TRAIN, 'bundle', 'verify', out3, check=0)
    assert sorted(Bundle(out3).header) == sorted(p2.header)


def b2_mask(path):
    """The bytes of task/mnist/head.weight.mask in the bundle at path."""
    b = Bundle(path)
    a, e = b.header['task/mnist/head.weight.mask']['data_offsets']
    return b.data[a:e]


def status_phase_table_gaps(ctx):
    """A phase without a known p95 or predicted RSS (a canned GetStatus from a stand-in on
    the socket) shows '-' for each; the other phase shows both. A "predicted_p95_ms" key,
    which mimed never sends, is not shown: the table has no predicted-latency column."""
    sock_path = os.path.join(ctx.tmp, 'fake.sock')
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(1)
    status = {'bundle': 'fake.mime', 'mode': 'mime', 'phase': 2, 'pinned': True,
              'budgets': {}, 'rss_bytes': 1 << 20, 'memory_budget_source': 'none',
              'latency': {'count': 0, 'p50_us': 0, 'p95_us': 0, 'p99_us': 0},
              'tasks': [], 'energy': 'no batches yet', 'uptime_s': 1.0, 'n_phases': 2,
              'phases': [{'phase': 1, 'name': 'small', 'memory_bytes': 2048,
                          'memory_source': 'measured', 'predicted_p95_ms': 0.125},
                         {'phase': 2, 'name': 'big', 'memory_bytes': 3 << 20,
                          'memory_source': 'manifest', 'p95_ms': 1.5,
                          'predicted_rss_bytes': 5 << 20}]}

    def serve():
        conn, _ = srv.accept()
        buf = b''
        while b'\0' not in buf:
            chunk = conn.recv(4096)
            if not chunk:
                break
            buf += chunk
        call = json.loads(buf.split(b'\0')[0])
        assert call['method'] == 'io.mime.GetStatus', call
        conn.sendall(json.dumps({'parameters': {'status': status}}).encode() + b'\0')
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        out = run(MIMECTL, 'status', '--socket', sock_path, check=0).stdout
    finally:
        t.join(10)
        srv.close()
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith('phases '))
    assert lines[head + 1].split() == ['PHASE', 'NAME', 'MEMORY', 'P95', 'RSS'], out
    r1, r2 = lines[head + 2].split(), lines[head + 3].split()
    assert r1 == ['1', 'small', '2.0', 'KiB', '(measured)', '-', '-'], out
    assert r2 == ['*', '2', 'big', '3.0', 'MiB', '(manifest)', '1.500', 'ms', '5.0', 'MiB'], out
    assert lines[head + 4].startswith('uptime '), out


def main():
    for prog in (MIMECTL, MIME_TRAIN, MKBUNDLE):
        if not os.access(prog, os.X_OK):
            print('missing %s' % prog)
            return 1
    ctx = Ctx()
    ctx.tmp = tempfile.mkdtemp(prefix='mime-tools-')
    ctx.bundle = os.path.join(ctx.tmp, 'phased.mime')
    ctx.flat = os.path.join(ctx.tmp, 'flat.mime')
    ctx.partial = os.path.join(ctx.tmp, 'partial.mime')
    ctx.measured = os.path.join(ctx.tmp, 'measured.mime')
    run(MKBUNDLE, ctx.bundle, 5, '--phases', N_PHASES, check=0)
    run(MKBUNDLE, ctx.flat, 5, check=0)
    header, data = st_read(ctx.bundle)
    # partial: beta without phase 1 tensors, gamma without phase 3's (the whole parent)
    st_write(ctx.partial, header, data,
             keep=lambda k: not k.startswith(('task/beta/phase1/', 'task/gamma/phase3/')))
    # measured: the keys the phase builder writes, per phase
    m = manifest_of(header)
    ctx.measures = []
    for i, ph in enumerate(m['phases']):
        meas = {'accuracy': 0.5 + 0.1 * i, 'latency_ms': 0.25 * (i + 1),
                'memory_bytes': 100000 * (i + 1), 'nonzero_params': 1000 * (i + 1),
                'task_accuracy': {'alpha': 0.61 + 0.1 * i, 'beta': 0.55 + 0.1 * i,
                                  'gamma': 0.4 + 0.1 * i}}
        ph.update(meas)
        ctx.measures.append(meas)
    st_write(ctx.measured, with_manifest(header, m), data)
    for path in (ctx.partial, ctx.measured):
        run(MIME_TRAIN, 'bundle', 'verify', path, check=0)
    rng = random.Random(3)
    ctx.images = [[rng.randrange(256) for _ in range(SIDE * SIDE)] for _ in range(6)]
    ctx.paths = []
    for i, img in enumerate(ctx.images):
        ctx.paths.append(os.path.join(ctx.tmp, 'img%d.pgm' % i))
        write_pgm(ctx.paths[-1], img)

    tests = [run_phase_matches_reference, eval_agrees_with_run, half_bundle_matches_reference,
             run_bad_phase,
             eval_phase_all, inspect_phases, status_phase_table_gaps, phases_build_small,
             sparse_head_end_to_end]
    if os.access(MIMED, os.X_OK):
        tests += [status_phase_table, infer_named_phase]
    if os.environ.get('ONLY'):  # ONLY=name[,name...]: just those
        tests = [t for t in tests if t.__name__ in os.environ['ONLY'].split(',')]
    failed = 0
    for t in tests:
        try:
            t(ctx)
            print('ok   %s' % t.__name__)
        except Exception:
            failed += 1
            print('FAIL %s' % t.__name__)
            traceback.print_exc()
    if not failed:
        shutil.rmtree(ctx.tmp)
    else:
        print('kept %s' % ctx.tmp)
    print('%d tests, %d failed' % (len(tests), failed))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
