#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""pytorch_vgg7 -- the networks of bench_engine.c in PyTorch (Debian's python3-torch), eager
and frozen TorchScript (torch.jit.freeze of torch.jit.script(model.eval()), which runs
oneDNN), batch 1 and 32, torch.set_num_threads 1 and 2. Prints JSON: per cell the median
and min ms/image over timed forwards run for --min-time seconds (at least 7) after warm-up.

OpenMP's wait policy (OMP_WAIT_POLICY, read when torch loads) is recorded: with the
default, threads spin at every parallel region's barrier, which collapses when another
process holds the second core. Run with /usr/bin/python3 (pyenv shims may shadow python3)."""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

NETS = [
    ("full-1x28x28", (1, 28, 28), (64, 128, 256, 256)),
    ("half-1x28x28", (1, 28, 28), (32, 64, 128, 128)),
    ("full-3x32x32", (3, 32, 32), (64, 128, 256, 256)),
    ("half-3x32x32", (3, 32, 32), (32, 64, 128, 128)),
]
BATCHES = (1, 32)
THREADS = (1, 2)
N_CLASSES = 10


def vgg7(in_shape, width):
    """conv3x3/pad1/relu x4, max-pool 2x2 after conv 1, 2 and 4, flatten, head."""
    c, h, w = in_shape
    layers = []
    for i, k in enumerate(width):
        layers += [nn.Conv2d(c, k, 3, padding=1), nn.ReLU(inplace=True)]
        c = k
        if i != 2:
            layers.append(nn.MaxPool2d(2, 2))
            h, w = h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(c * h * w, N_CLASSES)]
    model = nn.Sequential(*layers)
    for m in model.modules():  # He-uniform, like bench_engine.c (no denormals)
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            nn.init.uniform_(m.bias, 0.0, 0.01)
    return model.eval()


def macs(in_shape, width):
    c, h, w = in_shape
    total = 0
    for i, k in enumerate(width):
        total += h * w * k * c * 9
        c = k
        if i != 2:
            h, w = h // 2, w // 2
    return total + c * h * w * N_CLASSES


def time_cell(fn, x, batch, min_time_s):
    with torch.no_grad():
        t0 = time.perf_counter()
        i = 0
        # Warm-up: the profiling executor of a frozen module optimizes after a few calls.
        while i < 5 or time.perf_counter() - t0 < 0.2 * min_time_s:
            fn(x)
            i += 1
        times = []
        t0 = time.perf_counter()
        while len(times) < 7 or time.perf_counter() - t0 < min_time_s:
            a = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - a) * 1e3 / batch)
    return statistics.median(times), min(times), len(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-time", type=float, default=0.5)
    ap.add_argument("--net", default=None)
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_interop_threads(1)
    out = {
        "torch": torch.__version__,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "parallel_info": torch.__config__.parallel_info(),
        "cells": [],
    }
    for name, in_shape, width in NETS:
        if args.net and args.net != name:
            continue
        model = vgg7(in_shape, width)
        frozen = torch.jit.freeze(torch.jit.script(model))
        for batch in BATCHES:
            x = torch.rand(batch, *in_shape)
            with torch.no_grad():
                ref = model(x)
                got = frozen(x)
                assert torch.allclose(ref, got, rtol=1e-3, atol=1e-4), "frozen != eager"
            for threads in THREADS:
                torch.set_num_threads(threads)
                for kind, fn in (("eager", model), ("frozen", frozen)):
                    med, mn, reps = time_cell(fn, x, batch, args.min_time)
                    out["cells"].append({
                        "net": name, "macs": macs(in_shape, width), "batch": batch,
                        "threads": threads, "kind": kind, "reps": reps,
                        "median_ms": round(med, 5), "min_ms": round(mn, 5),
                    })
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
