#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""report -- combine the rounds of bench_engine --json and pytorch_vgg7.py into RESULTS.md
(markdown on stdout). Per cell: the median over rounds of each round's median ms/image, and
the min over rounds of the min. Ratios are ours / PyTorch: goal <= 1.25 against frozen and
<= 0.667 against eager (1.5x faster)."""
import argparse
import datetime
import glob
import json
import os
import statistics
import subprocess

GOAL_FROZEN = 1.25
GOAL_EAGER = 1 / 1.5


def load(pattern):
    return [json.load(open(p)) for p in sorted(glob.glob(pattern))]


def lscpu():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "?"
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    get = lambda k: info.get(k, "?").strip()
    return (f"{get('Model name')}, {get('CPU(s)')} CPUs ({get('Core(s) per socket')} cores x "
            f"{get('Thread(s) per core')} threads), family {get('CPU family')} model "
            f"{get('Model')}")


def combine(rounds, key_fn):
    """{key: (median of medians, min of mins, n)} over the rounds' cells."""
    acc = {}
    for r in rounds:
        for c in r["cells"]:
            acc.setdefault(key_fn(c), []).append((c["median_ms"], c["min_ms"]))
    return {k: (statistics.median(m for m, _ in v), min(n for _, n in v), len(v))
            for k, v in acc.items()}


def mark(ok):
    return "yes" if ok else "**no**"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--command", default="bench/run.sh")
    ap.add_argument("--engine", default="?")
    ap.add_argument("--findings", default=None)
    a = ap.parse_args()

    eng = load(os.path.join(a.dir, "engine.*.json"))
    tor = load(os.path.join(a.dir, "torch.[0-9]*.json"))
    torp = load(os.path.join(a.dir, "torch.passive.*.json"))
    prof = os.path.join(a.dir, "profile.json")
    prof = json.load(open(prof)) if os.path.exists(prof) else None
    ours = combine(eng, lambda c: (c["net"], c["batch"], c["threads"], c["strategy"]))
    theirs = combine(tor, lambda c: (c["net"], c["batch"], c["threads"], c["kind"]))
    theirs_p = combine(torp, lambda c: (c["net"], c["batch"], c["threads"], c["kind"])) if torp else {}
    macs = {c["net"]: c["macs"] for c in eng[0]["cells"]}
    nets = list(dict.fromkeys(c["net"] for c in eng[0]["cells"]))
    load_start = open(os.path.join(a.dir, "load-start.txt")).read().strip()
    load_end = open(os.path.join(a.dir, "load-end.txt")).read().strip()

    p = print
    p("# mime engine benchmarks\n")
    p("Written by `bench/run.sh`; do not edit by hand (findings come from "
      "`bench/FINDINGS.md`).\n")
    end = datetime.datetime.fromtimestamp(os.path.getmtime(os.path.join(a.dir, "load-end.txt")))
    p(f"- date: {end.astimezone().isoformat(timespec='seconds')} (end of the run)")
    p(f"- machine: {lscpu()}")
    p(f"- load: start `{load_start}`; end `{load_end}` (shared machine: other jobs ran "
      "during the benchmark)")
    p(f"- command: `{a.command}`")
    p(f"- engine: {a.engine}; OpenBLAS {eng[0]['openblas']['config']}, core "
      f"`{eng[0]['openblas']['core']}`"
      f"{' (OPENBLAS_CORETYPE=' + os.environ['OPENBLAS_CORETYPE'] + ' in the environment)' if os.environ.get('OPENBLAS_CORETYPE') else ''}")
    p(f"- PyTorch {tor[0]['torch']} (Debian python3-torch), oneDNN available: "
      f"{tor[0]['mkldnn']}")
    p(f"- {len(eng)} interleaved rounds; per cell: median over rounds of each round's median "
      "ms/image (min over rounds of the min in parentheses)\n")

    # Ceiling.
    # Noise only slows the FMA loop down: the best round is the estimate of the peak.
    pk = {k: max(r["peak"][k] for r in eng) for k in eng[0]["peak"]}
    p("## Ceiling\n")
    p(f"FMA peak measured by an FMA loop in bench_engine (best of 8 runs x {len(eng)} rounds): AVX-512 "
      f"**{pk['avx512_1t']:.0f} GFLOP/s on 1 core, {pk['avx512_2t']:.0f} on 2**; AVX2 (256-bit) "
      f"{pk['avx2_1t']:.0f} / {pk['avx2_2t']:.0f}.\n")
    p("| sgemm M x N x K | what | 1 thread GFLOP/s | % AVX-512 peak | 2 threads GFLOP/s "
      "| % peak |")
    p("|---|---|---|---|---|---|")
    for i, s in enumerate(eng[0]["sgemm"]):
        g1 = statistics.median(r["sgemm"][i]["gflops_1t"] for r in eng)
        g2 = statistics.median(r["sgemm"][i]["gflops_2t"] for r in eng)
        p(f"| {s['m']} x {s['n']} x {s['k']} | {s['what']} | {g1:.1f} | "
          f"{100 * g1 / pk['avx512_1t']:.0f}% | {g2:.1f} | {100 * g2 / pk['avx512_2t']:.0f}% |")
    p()

    # Engine cells.
    p(f"## Engine (ms/image; engine GEMM microkernel `{eng[0]['gemm_arch']['name']}` "
      f"{eng[0]['gemm_arch']['mr']}x{eng[0]['gemm_arch']['nr']})\n")
    p("Conv paths: `packed` = the engine's packed-weight GEMM (the default), `blas` = im2col "
      "+ OpenBLAS sgemm. Two threads are spent either as (b) `engine2` = engine n_threads 2 + "
      "OpenBLAS 1 thread, or as (a) `blas2` = engine n_threads 1 + OpenBLAS 2 threads (only "
      "the blas path calls OpenBLAS in its convolutions). GFLOP/s and % of the measured "
      "AVX-512 peak of the cores used are for the best strategy of the cell.\n")
    p("| net | MMAC/img | batch | threads | packed | blas (1t / engine2) | blas-blas2 | "
      "blas path: (a) vs (b) | best | img/s | GFLOP/s | % peak |")
    p("|---|---|---|---|---|---|---|---|---|---|---|---|")
    best = {}
    for net in nets:
        for b in (1, 32):
            for t, strats in ((1, ["packed-1t", "blas-1t"]),
                              (2, ["packed-engine2", "blas-engine2", "blas-blas2"])):
                vals = {s: ours[(net, b, t, s)] for s in strats}
                win = min(strats, key=lambda s: vals[s][0])
                best[(net, b, t)] = (win, vals[win])
                cell = lambda s: f"{vals[s][0]:.3f} ({vals[s][1]:.3f})" if s in vals else "-"
                ab = "-"
                if t == 2:
                    ab = ("(b) engine2" if vals["blas-engine2"][0] <= vals["blas-blas2"][0]
                          else "(a) blas2")
                gf = 2e-6 * macs[net] / vals[win][0]
                peak = pk["avx512_1t"] if t == 1 else pk["avx512_2t"]
                p(f"| {net} | {macs[net] / 1e6:.1f} | {b} | {t} | {cell(strats[0])} | "
                  f"{cell(strats[1])} | {cell('blas-blas2')} | {ab} | {win} | "
                  f"{1e3 / vals[win][0]:.0f} | {gf:.1f} | {100 * gf / peak:.0f}% |")
    p()

    # PyTorch, both OpenMP wait policies.
    p("## PyTorch (ms/image)\n")
    p("`spin` = OpenMP's default wait policy, `passive` = OMP_WAIT_POLICY=PASSIVE (the same "
      "script, another process). Median over rounds (min in parentheses).\n")
    p("| net | batch | threads | frozen spin | frozen passive | eager spin | eager passive |")
    p("|---|---|---|---|---|---|---|")
    fmt = lambda v: f"{v[0]:.3f} ({v[1]:.3f})" if v else "-"
    for net in nets:
        for b in (1, 32):
            for t in (1, 2):
                p(f"| {net} | {b} | {t} | " + " | ".join(
                    fmt(d.get((net, b, t, k))) for k in ("frozen", "eager")
                    for d in (theirs, theirs_p)) + " |")
    p()

    # Comparison.
    p("## Ours vs PyTorch (ours = the best strategy of the cell; PyTorch = its better wait "
      "policy)\n")
    p(f"Goal: ours / frozen <= {GOAL_FROZEN} and ours / eager <= {GOAL_EAGER:.3f} (1.5x "
      "faster than eager). Ratios of medians, and of mins in parentheses; the verdicts are "
      "given for both (median / min).\n")
    p("| net | batch | threads | ours ms | frozen ms | eager ms | ours / frozen | "
      "ours / eager | <= 1.25x frozen | >= 1.5x faster than eager |")
    p("|---|---|---|---|---|---|---|---|---|---|")
    ok = {"f_med": 0, "f_min": 0, "e_med": 0, "e_min": 0}
    n = 0
    for net in nets:
        for b in (1, 32):
            for t in (1, 2):
                win, (om, on, _) = best[(net, b, t)]

                def better(kind):
                    cands = [(d[(net, b, t, kind)], tag) for d, tag in
                             ((theirs, "spin"), (theirs_p, "passive")) if (net, b, t, kind) in d]
                    (med, mn, _), tag = min(cands, key=lambda c: c[0][0])
                    return med, min(c[0][1] for c in cands), tag

                fm, fn, ft = better("frozen")
                em, en, et = better("eager")
                v = {"f_med": om / fm <= GOAL_FROZEN, "f_min": on / fn <= GOAL_FROZEN,
                     "e_med": om / em <= GOAL_EAGER, "e_min": on / en <= GOAL_EAGER}
                for k in ok:
                    ok[k] += v[k]
                n += 1
                p(f"| {net} | {b} | {t} | {om:.3f} ({win}) | {fm:.3f} ({ft}) | "
                  f"{em:.3f} ({et}) | {om / fm:.2f} ({on / fn:.2f}) | {om / em:.2f} "
                  f"({on / en:.2f}) | {mark(v['f_med'])} / {mark(v['f_min'])} | "
                  f"{mark(v['e_med'])} / {mark(v['e_min'])} |")
    p(f"\nCells meeting the goal (by medians / by mins): {ok['f_med']}/{n} / {ok['f_min']}/{n} "
      f"against frozen; {ok['e_med']}/{n} / {ok['e_min']}/{n} against eager.\n")

    if prof:
        p("## Per-layer profile (1 thread)\n")
        p("`packed ms` / `blas ms` = the engine's time per image for the layer, as the "
          "difference of forwards over growing prefixes of the graph (head subtracted; "
          "noisy, can go negative for cheap layers). For conv layers: the OpenBLAS sgemm "
          "calls the blas path issues (its chunking copied from engine.c: one GEMM of K x "
          "chunk x CRS per chunk of one sample's pixels, so results do not depend on the "
          "batch) timed alone, and one sgemm over the whole batch's columns.\n")
        p("| net | batch | layer | MMAC | packed ms (GFLOP/s) | blas ms | blas-path GEMMs "
          "(calls x MxNxK) | their sgemm ms (GFLOP/s) | one batched sgemm ms (GFLOP/s) |")
        p("|---|---|---|---|---|---|---|---|---|")
        gfs = lambda c, ms: f"{ms:.3f} ({2e-6 * c['macs'] / ms:.0f})" if ms > 0 else f"{ms:.3f}"
        for c in prof["profile"]:
            packed = gfs(c, c["packed_ms"]) if c["macs"] else f"{c['packed_ms']:.3f}"
            row = (f"| {c['net']} | {c['batch']} | {c['layer']} | {c['macs'] / 1e6:.2f} | "
                   f"{packed} | {c['blas_ms']:.3f} |")
            if "gemm_m" in c:
                row += (f" {c['calls']} x {c['gemm_m']}x{c['gemm_n']}x{c['gemm_k']} | "
                        f"{gfs(c, c['chunked_gemm_ms'])} | {gfs(c, c['batched_gemm_ms'])} |")
            else:
                row += " | | |"
            p(row)
        p()

    if a.findings and os.path.exists(a.findings):
        p(open(a.findings).read().rstrip())


if __name__ == "__main__":
    main()
