#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""daemon -- the driver of bench/daemon.sh (run that): starts mimed daemons on sockets in a
temporary directory and measures, in interleaved rounds so machine noise hits every cell:

* throughput and client-side p50/p99 of `mimectl bench` with the bundle's tasks interleaved
  at concurrency 1, 8, 32: MIME mode, conventional mode (`mode: conventional`), and a
  single-task stream in MIME mode; plus MIME with other worker/thread splits;
* RSS of mimed serving 1, 2, 3 tasks (`tasks:` in the config) in each mode, after a warm-up
  of every enabled task: VmRSS (the headline), Pss, RssAnon, RssFile, the bundle mapping's
  RSS, VmRSS again after 2.5 s without requests, and "model memory": VmRSS minus the floor,
  the same mode serving mkbundle's tiny 'small' graph after the same warm-up;
* the socket path at batch 1: `mimectl bench -c 1` with one task and one image vs
  bench_socket (mime_engine_forward at batch 1 on that image, preprocessed as mimed does).

Then writes its section of bench/RESULTS.md (between its markers; appended when absent).
Stdlib only."""
import argparse
import datetime
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

BEGIN = '<!-- bench/daemon.sh: begin -->'
END = '<!-- bench/daemon.sh: end -->'


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def bundle_tensors(path):
    """Tensor names in a *.mime (safetensors: u64 little-endian header length, JSON)."""
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        head = json.loads(f.read(n))
    return [k for k in head if k != '__metadata__']


def task_tensor_f32(head, data, name):
    """A task tensor as F32 bytes and its header entry: stored F32, F16 (`mime-train bundle
    half`) or sparse (name.mask + name.values, lib/bundle.h); the conventional mode reads
    F32 only."""
    def values(entry):
        b, e = entry['data_offsets']
        if entry['dtype'] == 'F16':
            return list(struct.unpack('<%de' % ((e - b) // 2), data[b:e]))
        assert entry['dtype'] == 'F32', (name, entry)
        return list(struct.unpack('<%df' % ((e - b) // 4), data[b:e]))
    if name in head:
        v = values(head[name])
        shape = head[name]['shape']
    else:  # sparse: the shape is the manifest's; the mask's bits give the element count
        mb, me = head[name + '.mask']['data_offsets']
        bits, nz = data[mb:me], iter(values(head[name + '.values']))
        shape = sparse_shape(head, name)
        n = 1
        for d in shape:
            n *= d
        v = [next(nz) if bits[j // 8] >> (j % 8) & 1 else 0.0 for j in range(n)]
    return {'dtype': 'F32', 'shape': shape}, struct.pack('<%df' % len(v), *v)


def sparse_shape(head, name):
    """[n_classes, features] of a sparse head weight: the bias gives n_classes; features are
    any dense head's (every head reads the same features), else the one count whose bits fill
    the mask's bytes."""
    t = name.split('/')[1]
    n_classes = head['task/%s/head.bias' % t]['shape'][0]
    for k, v in head.items():
        if k.endswith('/head.weight') and '/phase' not in k:
            return [n_classes, v['shape'][1]]
    mb, me = head[name + '.mask']['data_offsets']
    fits = [f for f in range(1, 8 * (me - mb) // n_classes + 1)
            if (n_classes * f + 7) // 8 == me - mb]
    assert len(fits) == 1, (name, fits)
    return [n_classes, fits[0]]


def complete_conventional(src, dst):
    """Copies the bundle src to dst, giving every task without conventional/<task>/ tensors
    the parent's layers and its own head (task/<task>/head.*) as its conventional model: the
    demo bundle has fine-tuned copies for its child tasks only, since the parent's own task
    (fmnist) has the parent as its conventional model. Returns the tasks completed.
    (safetensors: u64 little-endian header length, JSON header, data; offsets are relative
    to the data, which is kept and extended.)"""
    with open(src, 'rb') as f:
        raw = f.read()
    n = struct.unpack('<Q', raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    data = bytearray(raw[8 + n:])
    tasks = sorted({k.split('/')[1] for k in head if k.startswith('task/')})
    done = []
    for t in tasks:
        if any(k.startswith('conventional/%s/' % t) for k in head):
            continue
        add = {}
        for k, v in head.items():
            if k.startswith('parent/'):
                b, e = v['data_offsets']
                add['conventional/%s/%s' % (t, k.split('/', 1)[1])] = (
                    v, raw[8 + n + b:8 + n + e])
        for part in ('weight', 'bias'):
            add['conventional/%s/head.%s' % (t, part)] = task_tensor_f32(
                head, raw[8 + n:], 'task/%s/head.%s' % (t, part))
        for k, (v, blob) in add.items():  # appended back to back (no gaps allowed):
            if len(data) % 4:  # a U8 filler keeps the F32 tensor aligned
                pad = 4 - len(data) % 4
                head['bench/pad/%d' % len(data)] = {
                    'dtype': 'U8', 'shape': [pad], 'data_offsets': [len(data), len(data) + pad]}
                data += bytes(pad)
            head[k] = dict(v, data_offsets=[len(data), len(data) + len(blob)])
            data += blob
        done.append(t)
    h = json.dumps(head).encode()
    h += b' ' * ((-len(h) - 8) % 64)
    with open(dst, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + bytes(data))
    return done


def has_conventional(path):
    names = bundle_tensors(path)
    tasks = {k.split('/')[1] for k in names if k.startswith('task/')}
    conv = {k.split('/')[1] for k in names if k.startswith('conventional/')}
    return bool(tasks) and tasks <= conv


class Daemon:
    def __init__(self, a, tmp, name, mode='mime', tasks=None, workers=None, threads=None,
                 bundle=None):
        self.a = a
        self.name = name
        self.sock = os.path.join(tmp, name + '.sock')
        self.log = os.path.join(tmp, name + '.log')
        cfg = os.path.join(tmp, name + '.yaml')
        self.bundle = bundle or a.bundle
        with open(cfg, 'w') as f:
            f.write('bundle: %s\nmode: %s\n' % (self.bundle, mode))
            if tasks:
                f.write('tasks: [%s]\n' % ', '.join(tasks))
            if workers or threads is not None:
                f.write('workers:\n')
                if workers:
                    f.write('  count: %d\n' % workers)
                if threads is not None:
                    f.write('  threads: %d\n' % threads)
        env = {k: v for k, v in os.environ.items()
               if k not in ('NOTIFY_SOCKET', 'LISTEN_FDS', 'JOURNAL_STREAM')}
        self.logf = open(self.log, 'wb')
        self.p = subprocess.Popen([a.mimed, '--config', cfg, '--socket', self.sock],
                                  stdout=self.logf, stderr=subprocess.STDOUT, env=env)
        for _ in range(1000):
            if self.p.poll() is not None:
                raise RuntimeError('mimed %s exited:\n%s' % (name, open(self.log).read()))
            if os.path.exists(self.sock):
                try:
                    s = socket.socket(socket.AF_UNIX)
                    s.connect(self.sock)
                    s.close()
                    break
                except OSError:
                    pass
            time.sleep(0.02)
        self.status()

    def status(self):
        return json.loads(sh(self.a.mimectl, 'status', '--json', '--socket', self.sock))

    def bench(self, n, c, tasks=None, images=()):
        args = [self.a.mimectl, 'bench', '-n', str(n), '-c', str(c), '--json',
                '--socket', self.sock]
        if tasks:
            args += ['--tasks', ','.join(tasks)]
        return json.loads(sh(*args, *images))

    def proc_status(self):
        out = {}
        with open('/proc/%d/status' % self.p.pid) as f:
            for line in f:
                k, _, v = line.partition(':')
                if k in ('VmRSS', 'VmHWM', 'RssAnon', 'RssFile', 'RssShmem', 'Threads'):
                    v = v.split()
                    out[k] = int(v[0]) * (1024 if len(v) > 1 else 1)
        return out

    def memory(self):
        """/proc/PID/status (VmRSS, RssAnon, ...) plus, from /proc/PID/smaps, Pss (shared
        pages divided among the processes that map them) and the RSS of the bundle's own
        mapping (file-backed: the tensors a forward reads, and what the kernel maps around
        each page fault)."""
        out = self.proc_status()
        bundle = os.path.realpath(self.bundle)
        out['Pss'] = out['BundleRss'] = 0
        name = ''
        with open('/proc/%d/smaps' % self.p.pid) as f:
            for line in f:
                first = line.split(None, 1)[0]
                if '-' in first and not first.endswith(':'):
                    parts = line.split(None, 5)
                    name = parts[5].strip() if len(parts) > 5 else ''
                elif first == 'Pss:':
                    out['Pss'] += int(line.split()[1]) * 1024
                elif first == 'Rss:' and name == bundle:
                    out['BundleRss'] += int(line.split()[1]) * 1024
        return out

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.logf.close()

    def cpu_s(self):
        """User + system CPU seconds of every thread of the daemon so far."""
        with open('/proc/%d/stat' % self.p.pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')

    def log_size(self):
        self.logf.flush()
        return os.path.getsize(self.log)

    def forward_us_since(self, offset):
        """forward_us of the batches of one request logged after offset."""
        with open(self.log, 'rb') as f:
            f.seek(offset)
            text = f.read().decode(errors='replace')
        out = []
        for line in text.splitlines():
            if ' batch id=' in line and ' size=1 ' in line and 'forward_us=' in line:
                out.append(int(line.split('forward_us=')[1].split()[0]))
        return out

    def threads(self):
        return int(self.started_line().split(' threads=')[1].split()[0])

    def started_line(self):
        for line in open(self.log, errors='replace'):
            if 'serving bundle' in line:
                return line.strip()
        return ''


def med(xs):
    return statistics.median(xs) if xs else float('nan')


def write_pgm(path, seed, side):
    rnd = random.Random(seed)
    with open(path, 'wb') as f:
        f.write(b'P5\n%d %d\n255\n' % (side, side))
        f.write(bytes(rnd.randrange(256) for _ in range(side * side)))


def socket_round(a, d, bench_socket, bundle, task, image, n):
    """One measurement of the socket path on daemon d: mimectl bench -c 1 with one task and
    image, the daemon's own forward_us of those batches, and bench_socket in-process with
    d's engine threads."""
    off = d.log_size()
    client = d.bench(n, 1, tasks=[task], images=[image])
    fwd = d.forward_us_since(off)
    eng = json.loads(sh(bench_socket, bundle, task, image, '--threads', str(d.threads()),
                        '--min-time', '0.5'))
    return {'client': client, 'daemon_forward_us_median': med(fwd), 'engine': eng}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', required=True)
    ap.add_argument('--root', required=True)
    ap.add_argument('--command', default='bench/daemon.sh')
    ap.add_argument('--rounds', type=int, default=4)
    ap.add_argument('--requests', type=int, default=400)
    ap.add_argument('--graph', default='vgg7-half', choices=['vgg7-half', 'vgg7'])
    ap.add_argument('--bundle')
    ap.add_argument('--no-write', action='store_true')
    ap.add_argument('--memory-only', action='store_true',
                    help='only the RSS measurements (implies --no-write)')
    a = ap.parse_args()
    if a.memory_only:
        a.no_write = True
    a.mimed = os.path.join(a.build, 'daemon', 'mimed')
    a.mimectl = os.path.join(a.build, 'client', 'mimectl')
    mkbundle = os.path.join(a.build, 'daemon', 'mkbundle')
    bench_socket = os.path.join(a.build, 'bench', 'bench_socket')
    cpus = os.cpu_count()
    load_start = sh('uptime').strip()
    t_start = datetime.datetime.now(datetime.timezone.utc)
    res = {'command': a.command, 'rounds': a.rounds, 'requests': a.requests, 'cpus': cpus}

    tmp = tempfile.mkdtemp(prefix='mimed-bench-')
    daemons = []
    try:
        # ---- the bundle -------------------------------------------------------------------
        demo = os.path.join(a.root, 'models', 'demo.mime')
        if a.bundle:
            bundle_note = '`%s` (given with --bundle)' % a.bundle
        elif os.path.exists(demo) and has_conventional(demo):
            a.bundle = demo
            bundle_note = '`models/demo.mime` (trained; has conventional tensors)'
        elif os.path.exists(demo) and any(k.startswith('conventional/')
                                          for k in bundle_tensors(demo)):
            a.bundle = os.path.join(tmp, 'demo-conv.mime')
            done = complete_conventional(demo, a.bundle)
            bundle_note = ('`models/demo.mime` (trained: %s), copied with %s given the '
                           "parent's layers and its own MIME head as conventional/<task>/ "
                           '(the bundle has fine-tuned copies for the child tasks only; '
                           "the parent's own task's conventional model is the parent)"
                           % (', '.join(sorted({k.split('/')[1] for k in bundle_tensors(demo)
                                                if k.startswith('task/')})),
                              ', '.join(done)))
        else:
            why = ('has no conventional tensors' if os.path.exists(demo)
                   else 'does not exist yet')
            a.bundle = os.path.join(tmp, 'bench.mime')
            sh(mkbundle, a.bundle, '1', '--graph', a.graph)
            bundle_note = ('random weights from `tests/integration/mkbundle --graph %s` '
                           '(models/demo.mime %s): input 1x28x28, %s, three tasks with '
                           'element / channel / no thresholds (uniform in [0, 0.1]) and each '
                           "task's conventional copy of every layer"
                           % (a.graph, why,
                              'conv 32-64-128-128 (the demo parent\'s half-width VGG-7)'
                              if a.graph == 'vgg7-half' else 'conv 64-128-256-256 (VGG-7)'))
        res['bundle'] = a.bundle
        res['graph_name'] = ('demo bundle' if a.bundle in (
            demo, os.path.join(tmp, 'demo-conv.mime')) else
                             'given bundle' if a.bundle != os.path.join(tmp, 'bench.mime')
                             else 'VGG-7 half' if a.graph == 'vgg7-half' else 'VGG-7 full')
        res['bundle_bytes'] = os.path.getsize(a.bundle)
        # A bigger network for the socket path and RSS: VGG-7 full width (random weights).
        big = None
        if a.graph == 'vgg7-half':  # (the demo bundle is VGG-7 half too)
            big = os.path.join(tmp, 'big.mime')
            sh(mkbundle, big, '1', '--graph', 'vgg7')

        # ---- daemons (all alive through the rounds; idle ones sleep) ----------------------
        mime = Daemon(a, tmp, 'mime')
        daemons.append(mime)
        tasks = [t['name'] for t in json.loads(sh(a.mimectl, 'tasks', '--json', '--socket',
                                                  mime.sock))['tasks']]
        res['tasks'] = tasks
        conv = Daemon(a, tmp, 'conv', mode='conventional')
        daemons.append(conv)
        w1t2 = Daemon(a, tmp, 'w1t2', threads=2)  # the default is 1 engine thread
        w2t1 = Daemon(a, tmp, 'w2t1', workers=2, threads=1)
        daemons += [w1t2, w2t1]
        if big:
            big_auto = Daemon(a, tmp, 'vgg7', bundle=big)
            big_t2 = Daemon(a, tmp, 'vgg7-w1t2', bundle=big, threads=2)
            daemons += [big_auto, big_t2]
        res['started'] = {d.name: d.started_line() for d in daemons}

        # Images: real samples when the bundle is the demo's, else random 28x28 PGMs.
        samples = os.path.join(a.root, 'models', 'samples', tasks[0])
        if a.bundle in (demo, os.path.join(tmp, 'demo-conv.mime')) and \
                os.path.isdir(samples) and os.listdir(samples):
            # Real samples: the first of each class of each task, cycled.
            image = os.path.join(samples, sorted(os.listdir(samples))[0])
            images = []
            for t in tasks:
                d = os.path.join(a.root, 'models', 'samples', t)
                if os.path.isdir(d):
                    images += [os.path.join(d, f) for f in sorted(os.listdir(d))
                               if f.endswith('-0.png')]
        else:
            image = os.path.join(tmp, 'img0.pgm')
            write_pgm(image, 0, 28)
            images = []
            for k in range(8):
                p = os.path.join(tmp, 'img%d.pgm' % k)
                write_pgm(p, k, 28)
                images.append(p)
        res['image'] = image
        res['images_note'] = ('%d PNG samples (models/samples/<task>/<label>-0.png)'
                              % len(images) if image.endswith('.png')
                              else '8 random 28x28 PGM images')

        if a.memory_only:
            for d in daemons:
                d.stop()
            daemons = []
        for d in daemons:  # warm-up: page faults, the engines' threads, the allocator
            d.bench(200, 8, images=images)

        # ---- throughput rounds -----------------------------------------------------------
        # Paired design: the cells compared with each other run back to back for each
        # concurrency, in reversed order every other round, so the slow drift of the
        # machine's load hits them alike; ratios are taken within a round.
        groups = []
        for c in (1, 8, 32):
            g = [('mime', 'mixed', c, mime, None), ('mime', 'single', c, mime, tasks[:1]),
                 ('conventional', 'mixed', c, conv, None),
                 ('conventional', 'single', c, conv, tasks[:1])]
            if c in (1, 8):
                g += [('mime w1 t2', 'mixed', c, w1t2, None),
                      ('mime w2 t1', 'mixed', c, w2t1, None)]
            groups.append(g)
        runs = {}
        socket_runs = {}
        for r in range(0 if a.memory_only else a.rounds):
            for g in groups:
                for mode, kind, c, d, only in (g if r % 2 == 0 else g[::-1]):
                    cpu0 = d.cpu_s()
                    out = d.bench(a.requests, c, tasks=only, images=images)
                    out['daemon_cpu_ms_per_request'] = (d.cpu_s() - cpu0) * 1e3 / max(
                        1, out['ok'])
                    out['round'] = r
                    runs.setdefault((mode, kind, c), []).append(out)
            # The socket path at batch 1, same task and image, both thread settings.
            n1 = max(200, a.requests // 2)
            targets = [(mime, a.bundle, tasks[0]), (w1t2, a.bundle, tasks[0])]
            if big:  # mkbundle's tasks
                targets += [(big_auto, big, 'alpha'), (big_t2, big, 'alpha')]
            for d, b, t in targets:
                socket_runs.setdefault(d.name, []).append(
                    socket_round(a, d, bench_socket, b, t, image, n1))
            print('round %d of %d done' % (r + 1, a.rounds), file=sys.stderr, flush=True)
        res['throughput'] = [
            {'mode': m, 'stream': k, 'concurrency': c, 'runs': v}
            for (m, k, c), v in runs.items()]
        res['socket'] = {name: {'threads': next(d for d in daemons if d.name == name).threads(),
                                'runs': v} for name, v in socket_runs.items()}
        for d in daemons:
            d.stop()
        daemons = []

        # ---- RSS: 1, 2, 3 tasks per mode, and each mode's floor ----------------------------
        # The floor: the same binary and configuration serving mkbundle's 'small' graph (conv
        # 8-8 on 1x16x16, fc 16: ~3 K parameters) with one task, warmed up with the same
        # images (decoded as PNGs, resized to 16x16) over the same connections: the
        # libraries, threads, allocator and connection state of a serving daemon with a
        # model of almost nothing (its own engine is ~0.1-0.2 MiB, so "model memory" below
        # is understated by that much). Measured next to the daemons it is subtracted from,
        # because file-backed RSS depends on the page cache (see the reading).
        floor_bundle = os.path.join(tmp, 'floor.mime')
        sh(mkbundle, floor_bundle, '1', '--graph', 'small')

        def measure(name, mode, bundle, only, graph):
            d = Daemon(a, tmp, name, mode=mode, tasks=only, bundle=bundle)
            daemons.append(d)
            d.bench(300, 8, tasks=only, images=images)
            mem = d.memory()
            st = d.status()
            time.sleep(2.5)  # mimed trims its heap after 1 s without activity
            quiet = d.memory()
            d.stop()
            daemons.remove(d)
            return {'mode': mode, 'tasks': len(only) if only else len(tasks), 'graph': graph,
                    'proc': mem, 'quiet': quiet, 'status_rss_bytes': st.get('rss_bytes')}

        rss = []
        for mode in ('mime', 'conventional'):
            rss.append(measure('rss-floor-%s' % mode, mode, floor_bundle, ['alpha'], 'floor'))
            rss[-1]['tasks'] = 1
            for k in range(1, len(tasks) + 1):
                rss.append(measure('rss-%s-%d' % (mode, k), mode, None, tasks[:k], 'main'))
            if big:
                rss.append(measure('rss-vgg7-%s' % mode, mode, big, None, 'vgg7'))
        res['rss'] = rss
    finally:
        for d in daemons:
            d.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    res['load_start'] = load_start
    res['load_end'] = sh('uptime').strip()
    res['date_end'] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    res['seconds'] = (datetime.datetime.now(datetime.timezone.utc) - t_start).total_seconds()
    with open(os.path.join(a.build, 'daemon-results.json'), 'w') as f:
        json.dump(res, f, indent=1)
    section = report(a, res, bundle_note)
    print(section)
    if not a.no_write:
        path = os.path.join(a.root, 'bench', 'RESULTS.md')
        text = open(path).read() if os.path.exists(path) else ''
        block = BEGIN + '\n' + section + END + '\n'
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            text = head + block + rest.split(END, 1)[1].lstrip('\n')
        else:
            text = text.rstrip('\n') + '\n\n' + block
        with open(path, 'w') as f:
            f.write(text)
        print('daemon.sh: wrote its section of %s' % path, file=sys.stderr)


def mib(b):
    return '%.1f' % (b / 1048576)


def report(a, res, bundle_note):
    cpu = ''
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    rev = sh('git', '-C', a.root, 'rev-parse', '--short', 'HEAD').strip()
    dirty = sh('git', '-C', a.root, 'status', '--porcelain', '--untracked-files=no').strip()
    L = []
    w = L.append
    w('## Daemon (issue 5): mimed over its socket, MIME vs conventional\n')
    w('Written by `bench/daemon.sh` between its markers (bench/run.sh rewrites this file: '
      're-run `bench/daemon.sh` after it). Numbers from one run on a shared machine.\n')
    w('- command: `%s`' % res['command'])
    w('- date: %s (end of the run, %.0f s)' % (res['date_end'], res['seconds']))
    w('- machine: %s, %d online CPUs; %s' % (cpu or platform.machine(), res['cpus'],
                                             platform.platform()))
    w('- load: start `%s`; end `%s` (other jobs, e.g. a parent training, share the cores)'
      % (res['load_start'], res['load_end']))
    w('- code: %s%s; release build (`build-dbench`, -O3)' % (
        rev, ' + uncommitted changes in the tree' if dirty else ''))
    w('- bundle: %s; %s MiB' % (bundle_note, mib(res['bundle_bytes'])))
    w('- daemons: default configuration (workers.count 1, workers.threads 0 = auto = 1, '
      'max_batch 16, max_wait 0, log level info: one line per batch) plus `bundle`, '
      '`mode` and, where named, `workers.count`/`workers.threads`; as started:')
    for name, line in res['started'].items():
        w('  - %s: `%s`' % (name, line.split('mimed notice: ')[-1]))
    w('- `mimectl bench -n %d -c C --json` per cell (closed loop: C connections, each '
      'sends an Infer and waits for its reply); tasks interleaved round-robin (%s), '
      'or one task (`--tasks %s`) for the single-task stream; images cycled: %s. %d rounds; within a round the cells of one concurrency run back to back, in '
      'reversed order every other round; the table gives the median over rounds '
      '(throughput: min-max in brackets)\n'
      % (res['requests'], ', '.join(res['tasks']), res['tasks'][0], res['images_note'],
         res['rounds']))

    by = {(t['mode'], t['stream'], t['concurrency']): t['runs'] for t in res['throughput']}

    def cell(key):
        runs = by.get(key)
        if not runs:
            return None
        thr = [r['throughput_rps'] for r in runs]
        return {'thr': med(thr), 'lo': min(thr), 'hi': max(thr),
                'p50': med([r['p50_ms'] for r in runs]),
                'p99': med([r['p99_ms'] for r in runs]),
                'cpu': med([r['daemon_cpu_ms_per_request'] for r in runs]),
                'busy': sum(r['busy'] for r in runs), 'err': sum(r['errors'] for r in runs)}

    def paired(num, den, field='throughput_rps'):
        """Median over rounds of num/den, each ratio from cells that ran back to back."""
        a_, b_ = by.get(num, []), by.get(den, [])
        rb = {r['round']: r[field] for r in b_}
        ratios = [r[field] / rb[r['round']] for r in a_ if rb.get(r['round'])]
        return med(ratios), (min(ratios) if ratios else 0), (max(ratios) if ratios else 0)

    w('### Throughput and latency\n')
    w('| daemon | stream | concurrency | requests/s | p50 ms | p99 ms | daemon CPU ms per '
      'request |')
    w('|---|---|---|---|---|---|---|')
    for key in sorted(by, key=lambda k: (k[2], ['mime', 'conventional', 'mime w1 t2',
                                                 'mime w2 t1'].index(k[0]), k[1])):
        c = cell(key)
        w('| %s | %s | %d | %.0f [%.0f-%.0f] | %.2f | %.2f | %.2f |' % (
            key[0], 'tasks interleaved' if key[1] == 'mixed' else 'one task', key[2],
            c['thr'], c['lo'], c['hi'], c['p50'], c['p99'], c['cpu']))
    w('\nDaemon CPU ms per request: user + system time of all of mimed\'s threads over the '
      'cell (/proc/PID/stat, 10 ms ticks) per answered request -- less sensitive to the other '
      'jobs than wall-clock throughput, though an engine thread spinning while it waits for '
      'its partner counts too.')
    busy = sum(cell(k)['busy'] + cell(k)['err'] for k in by)
    w('\n%s\n' % ('No request got Busy or an error.' if busy == 0 else
                  '%d requests got Busy or an error (counted, not in the latencies).' % busy))

    w('### Memory: RSS after a warm-up of every enabled task (`tasks:` in the config)\n')
    rss = {(r.get('graph', 'main'), r['mode'], r['tasks']): r for r in res['rss']}
    main_net = res.get('graph_name', 'bench bundle')
    names = {'floor': 'floor (mkbundle small)', 'main': main_net, 'vgg7': 'VGG-7 full'}

    def floor(mode):
        f = rss.get(('floor', mode, 1))
        return f['proc']['VmRSS'] if f else None

    def model_mem(r, key='proc'):
        f = rss.get(('floor', r['mode'], 1))
        return r[key]['VmRSS'] - f[key]['VmRSS'] if f and r.get('graph') != 'floor' else None

    w('| network | mode | tasks | VmRSS MiB | model memory MiB (VmRSS - floor) | Pss MiB | '
      'RssAnon MiB | RssFile MiB | of which bundle mapping MiB | VmRSS after 2.5 s quiet MiB '
      '| VmHWM MiB | threads |')
    w('|---|---|---|---|---|---|---|---|---|---|---|---|')
    order = {'floor': 0, 'main': 1, 'vgg7': 2}
    for r in sorted(res['rss'], key=lambda r: (order.get(r.get('graph', 'main'), 3),
                                               r['mode'] != 'mime', r['tasks'])):
        p, q = r['proc'], r.get('quiet', r['proc'])
        mm = model_mem(r)
        w('| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %d |' % (
            names.get(r.get('graph', 'main'), r.get('graph')), r['mode'], r['tasks'],
            mib(p['VmRSS']), '-' if mm is None else mib(mm), mib(p.get('Pss', 0)),
            mib(p['RssAnon']), mib(p['RssFile']), mib(p.get('BundleRss', 0)), mib(q['VmRSS']),
            mib(p['VmHWM']), p['Threads']))
    w('\nVmRSS (the headline), RssAnon, RssFile, VmHWM: /proc/PID/status right after the '
      'warm-up (300 requests, 8 connections, every enabled task); Pss and the bundle '
      "mapping's RSS: /proc/PID/smaps at the same moment; \"after 2.5 s quiet\": VmRSS again "
      'once the daemon has had no request for 2.5 s (it hands its free heap pages back '
      'after 1 s). Model memory: VmRSS minus the floor of the same mode measured in the same '
      "run, the floor being the same binary and configuration serving mkbundle's 'small' "
      'graph (~3 K parameters) with one task after the same warm-up: libraries, threads, '
      'allocator and connection state without a model (its own tiny engine, ~0.1-0.2 MiB, '
      'stays in the floor). GetStatus `rss_bytes` reported %s.\n'
      % ', '.join('%s' % mib(r['status_rss_bytes'] or 0) for r in res['rss']))

    w('### Socket path at batch 1\n')
    w('`mimectl bench -c 1 -n N --tasks %s IMAGE` (VGG-7 full: task alpha; one image, one task: every batch holds '
      'one request; client-side p50, so it includes the client\'s JSON and base64) against '
      '`bench_socket BUNDLE %s IMAGE --threads T` (mime_engine_forward at batch 1 on the same '
      'image, preprocessed as mimed does, max_batch 16 and the daemon\'s T, in a tight loop '
      'in its own process) and against the daemon\'s own `forward_us` of the same batches '
      '(its batch log lines: the same engine call inside mimed). Medians over the rounds of '
      'each run\'s median. Image: `%s`.\n'
      % (res['tasks'][0], res['tasks'][0], os.path.basename(res['image'])))
    w('| network | daemon | engine threads | Infer over the socket, p50 us | '
      'bench_socket forward, median us | overhead vs bench_socket | forward_us in mimed, '
      'median | overhead vs mimed\'s forward | in-process decode+preprocess+forward+top-k, '
      'median us |')
    w('|---|---|---|---|---|---|---|---|---|')
    sock_rows = []
    for name, v in res['socket'].items():
        runs = v['runs']
        sp = med([r['client']['p50_ms'] for r in runs]) * 1000
        e = med([r['engine']['forward']['median_us'] for r in runs])
        ef = med([r['engine']['decode_preprocess_forward_topk']['median_us'] for r in runs])
        dfw = med([r['daemon_forward_us_median'] for r in runs])
        net = 'VGG-7 full' if name.startswith('vgg7') else main_net
        sock_rows.append((net, name, v['threads'], sp, e, dfw))
        w('| %s | %s | %d | %.0f | %.0f | %+.0f%% | %.0f | %+.0f%% | %.0f |' % (
            net, name, v['threads'], sp, e, 100 * (sp - e) / e, dfw, 100 * (sp - dfw) / dfw,
            ef))
    dec = med([r['engine']['decode_preprocess']['median_us']
               for v in res['socket'].values() for r in v['runs']])
    w('\nDecode + preprocess of the image alone (bench_socket): %.0f us (median).\n' % dec)
    gap = [(name, v) for name, v in res['socket'].items()
           if all('forward_after_gap_prepared' in r['engine'] for r in v['runs'])]
    if gap:
        w('The forward as a daemon serving one client calls it (bench_socket, medians of the '
          'rounds\' medians, us; process CPU per call in brackets): in a tight loop, after '
          'the caller slept 250 us, and after that gap with `mime_engine_prepare()` called '
          '50 us before the forward (mimed calls it when it accepts an Infer, before '
          'decoding the image).\n')
        w('| daemon | engine threads | tight loop | after a 250 us gap | after the gap, '
          'prepared |')
        w('|---|---|---|---|---|')
        for name, v in gap:
            cells = []
            for k in ('forward', 'forward_after_gap', 'forward_after_gap_prepared'):
                t = med([r['engine'][k]['median_us'] for r in v['runs']])
                c = med([r['engine'][k].get('cpu_us', 0) for r in v['runs']])
                cells.append('%.0f [%.0f]' % (t, c))
            w('| %s | %d | %s |' % (name, v['threads'], ' | '.join(cells)))
        w('')

    # ---- goals ---------------------------------------------------------------------------
    w('### Goals of issue 5\n')
    w('Throughput ratios are medians over rounds of the ratio of two cells run back to back '
      '(min-max over rounds in brackets); the CPU ratio compares daemon CPU per request the '
      'same way.\n')
    w('| goal | measured | met |')
    w('|---|---|---|')
    for c in (1, 8, 32):
        r, lo, hi = paired(('mime', 'mixed', c), ('mime', 'single', c))
        rc, _, _ = paired(('mime', 'single', c), ('mime', 'mixed', c),
                          'daemon_cpu_ms_per_request')
        w('| MIME mixed-task throughput >= 95%% of a single-task stream (c=%d) | '
          'throughput %.0f%% [%.0f-%.0f%%]; by CPU per request %.0f%% | %s |'
          % (c, 100 * r, 100 * lo, 100 * hi, 100 * rc, 'yes' if r >= 0.95 else 'no'))
    for c in (8, 32):
        r, lo, hi = paired(('mime', 'mixed', c), ('conventional', 'mixed', c))
        rc, _, _ = paired(('conventional', 'mixed', c), ('mime', 'mixed', c),
                          'daemon_cpu_ms_per_request')
        w('| MIME >= 1.5x conventional at concurrency %d%s (tasks interleaved) | '
          'throughput %.2fx [%.2f-%.2f]; by CPU per request %.2fx | %s |'
          % (c, '' if c == 8 else ' (not a goal, for reference)', r, lo, hi, rc,
             ('yes' if r >= 1.5 else 'no') if c == 8 else '-'))
    n = len(res['tasks'])
    for net in ('main', 'vgg7'):
        if (net, 'mime', n) not in rss or (net, 'conventional', n) not in rss:
            continue
        label = main_net if net == 'main' else 'VGG-7 full'
        rm, rc = rss[(net, 'mime', n)], rss[(net, 'conventional', n)]

        def view(what, m, c, goal=False):
            ok = 'yes' if m <= 0.5 * c else 'no'
            w('| %s, %s | %s vs %s MiB = %.2fx | %s |'
              % (what, label, mib(m), mib(c), m / c, ok if goal else '(%s; not the goal)' % ok))
        view('RSS(MIME, %d tasks) <= 0.5 x RSS(conventional, %d tasks)' % (n, n),
             rm['proc']['VmRSS'], rc['proc']['VmRSS'], goal=True)
        view('(the same on VmRSS after 2.5 s quiet)', rm['quiet']['VmRSS'],
             rc['quiet']['VmRSS'])
        view('(the same on Pss)', rm['proc']['Pss'], rc['proc']['Pss'])
        view('(the same on anonymous memory, RssAnon)', rm['proc']['RssAnon'],
             rc['proc']['RssAnon'])
        if model_mem(rm) is not None and model_mem(rc) is not None:
            view('(the same on model memory, VmRSS - floor)', model_mem(rm), model_mem(rc))
    for net, name, t, sp, e, dfw in sock_rows:
        o, od = (sp - e) / e, (sp - dfw) / dfw
        w('| socket overhead <= 15%% at batch 1, %s, daemon %s (%d engine thread%s) | '
          '%+.0f%% vs bench_socket (%.0f vs %.0f us); %+.0f%% vs mimed\'s own forward_us '
          '(%.0f us) | %s vs bench_socket, %s vs forward_us |'
          % (net, name, t, 's' if t > 1 else '', 100 * o, sp, e, 100 * od, dfw,
             'yes' if o <= 0.15 else 'no', 'yes' if od <= 0.15 else 'no'))
    w('')
    return '\n'.join(L) + '\n'


if __name__ == '__main__':
    main()
