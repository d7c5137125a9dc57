"""Kernel throughput: entries per second and peak extra memory of the full symmetric N×N Gram matrix.

    python -m bench.kernels                 # the table recorded in BENCHMARKS.md
    python -m bench.kernels --quick         # a smaller grid (a minute)
    python -m bench.kernels --case 8000,64,2,relu --repeat 7
    python -m bench.kernels --gpu --dtype float32 --case 65536,784,3,relu --repeat 3   # on a GPU machine

Entries/s counts all N² entries of the symmetric matrix (each pair is computed once and mirrored), as
neural-tangents' ``kernel_fn(x, x)`` would be counted. Each case runs once to warm up (numba compilation, the
first touch of the output's pages), then ``--repeat`` times; the median is reported. Peak extra memory is the
peak of Python-tracked allocations (NumPy registers with tracemalloc) minus the output array itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import tracemalloc

import numpy as np

import ntkdist
from ntkdist.kernels import MLP, default_threads, resolve_engine

#: neural-tangents' depth-2 ReLU NTK, N=8000, d=64, jitted kernel_fn, float32, on this 2-core machine kind
#: (figure given in the kernel-engine issue; neural-tangents no longer imports with current JAX).
PEER_ENTRIES_PER_SECOND = 19e6

FULL_GRID = [(n, 64, depth, act) for n in (2000, 4000, 8000) for depth in (1, 2, 4) for act in ("relu", "erf")]
QUICK_GRID = [(2000, 64, 2, "relu"), (4000, 64, 2, "relu"), (8000, 64, 2, "relu"), (4000, 64, 2, "erf")]


def run_case(n: int, dim: int, depth: int, activation: str, *, repeat: int, dtype: str = "float64",
             threads: int | None = None, seed: int = 0, gpu: bool = False) -> dict:
    X = np.random.default_rng(seed).standard_normal((n, dim))
    xp = np
    if gpu:
        import cupy as xp

        X = xp.asarray(X)
    net = MLP(depth=depth, activation=activation)

    def once():
        K = ntkdist.ntk(X, net=net, dtype=dtype, threads=threads)
        if gpu:
            xp.cuda.get_current_stream().synchronize()
        return K

    once()  # warm-up: compilation and page faults
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        K = once()
        times.append(time.perf_counter() - start)
        del K
    if gpu:
        pool = xp.get_default_memory_pool()
        K = once()
        extra = pool.total_bytes() - K.nbytes
    else:
        tracemalloc.start()
        K = once()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        extra = peak - K.nbytes
    median = statistics.median(times)
    bytes_out = K.nbytes
    return {
        "n": n, "dim": dim, "depth": depth, "activation": activation, "dtype": dtype,
        "device": "gpu" if gpu else "cpu", "write_gb_per_s": bytes_out / median / 1e9,
        "engine": resolve_engine("auto", xp, net.activation),
        "threads": threads or default_threads(),
        "median_s": median, "min_s": min(times), "runs": repeat,
        "entries_per_s": n * n / median,
        "ratio_to_peer": n * n / median / PEER_ENTRIES_PER_SECOND,
        "output_mib": K.nbytes / 2**20, "extra_peak_mib": extra / 2**20,
    }


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller grid")
    parser.add_argument("--case", action="append", help="N,dim,depth,activation (repeatable)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--gpu", action="store_true", help="CuPy inputs (the fused GPU engine)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.case:
        grid = [(int(n), int(d), int(depth), act) for n, d, depth, act in (c.split(",") for c in args.case)]
    else:
        grid = QUICK_GRID if args.quick else FULL_GRID
    print(f"machine: {machine()}")
    print(f"peer: neural-tangents {PEER_ENTRIES_PER_SECOND / 1e6:.0f} M entries/s (depth-2 ReLU, N=8000, d=64)\n")
    print("| N | d | depth | activation | engine | threads | median s | M entries/s | × peer | write GB/s | extra MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    results = []
    for n, dim, depth, act in grid:
        r = run_case(n, dim, depth, act, repeat=args.repeat, dtype=args.dtype, threads=args.threads, gpu=args.gpu)
        results.append(r)
        print(f"| {n} | {dim} | {depth} | {act} | {r['engine']} | {r['threads']} | {r['median_s']:.3f} | "
              f"{r['entries_per_s'] / 1e6:.1f} | {r['ratio_to_peer']:.1f} | {r['write_gb_per_s']:.2f} | "
              f"{r['extra_peak_mib']:.1f} |", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine(), "results": results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
