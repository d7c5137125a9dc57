"""Kernel throughput: entries per second and peak extra memory of the full symmetric N×N Gram matrix.

    python -m bench.kernels                 # the table recorded in BENCHMARKS.md
    python -m bench.kernels --quick         # a smaller grid (a minute)
    python -m bench.kernels --case 8000,64,2,relu --repeat 7
    python -m bench.kernels --gpu --dtype float32 --case 65536,784,3,relu --repeat 3   # on a GPU machine
    python -m bench.kernels --peer --rounds 5 --dtype both   # side by side with neural-tangents (make bench-kernels)
    python -m bench.kernels --peer --rounds 5 --case 4000,64,3,relu --width 512   # the empirical NTK, likewise

``--peer`` measures ntkdist and neural-tangents in the same run: the peer runs in its own environment
(``--peer-python``, default ``$NTKDIST_NT_PYTHON`` or ``.venv-nt/bin/python``) as a long-lived
``bench/neural_tangents_reference.py serve`` process, and the two alternate run by run, so both see the same
machine load. ``--dtype both`` times ntkdist's float64 and float32 outputs (float64 arithmetic in both) against the
same peer runs: the peer's default output is float32, so the second row compares equal output precision and half
the bytes written; ``--stores both`` likewise times ntkdist with and without streaming stores for its output.
``--kind nngp`` compares the NNGP instead of the NTK. ``--width W`` compares the empirical (finite-width) NTK of
one network of width W instead: `ntkdist.empirical_ntk` against neural-tangents' jitted ``empirical_ntk_fn`` by
Jacobian contraction (the fastest of its implementations that runs with the JAX it imports with; see
``_empirical_fns`` in the peer script), the peer's weights in its own precision (ours are drawn inside each timed
call). The ratio is the ratio of the two medians of wall time; the CPU-time ratio (medians of the CPU seconds each
process spent, all threads) is printed too, as it depends less on what else runs on the machine, and so is the
ratio of each side's fastest run ("best ÷ best"): on a shared host the same call of either side varies by up to
40% from one run to the next (user CPU time included, with the output pool hit and no extra
page faults), and noise only ever adds time.
The roofline fraction is the executed float64 flops (`flops_per_pair`, counted from the engine's code) per
second over the peak implied by /proc/cpuinfo (`cpu_info`). Grid: the issue's acceptance cases (ReLU NTK at depth 2
and 3, erf NTK at depth 3, N = 8000, d = 64), or ``--case``.

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
import subprocess
import time
import tracemalloc

import numpy as np

import ntkdist
from ntkdist.kernels import MLP, default_threads, resolve_engine

PEER_GRID = [(8000, 64, 2, "relu"), (8000, 64, 3, "relu"), (8000, 64, 3, "erf")]
PEER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "neural_tangents_reference.py")

# Floating-point operations the fused CPU engine executes per unique pair (i ≤ j; the mirror costs none), counted
# from ntkdist/kernels/fused_cpu.py: +, −, ×, ÷ and √ one each, a fused multiply-add two; both sides of every
# select are executed by the vectorised loops, so both are counted; compares, clips and selects are not.
FLOPS_INPUT = 8      # √(‖x‖²‖y‖²), the two Cauchy–Schwarz gaps and their threshold, the three 1/d scalings
FLOPS_DENSE = 28     # `_dense` (Σ, the scale, ρ, 1 ∓ ρ with one division) and the Θ update of the layer
FLOPS_ASIN = 44      # `asin_half`: z, four powers, 18 FMAs, x·z, the last FMA
FLOPS_LAYER = {
    "relu": FLOPS_DENSE + FLOPS_ASIN + 51,  # √, 2α, sin θ, θ − sin θ (17 + 1), J, π − θ, cov, dcov, both gaps
    "erf": FLOPS_DENSE + FLOPS_ASIN + 22,   # the argument, asin's reduction, det, 1/√det, both gaps
}
FLOPS_READOUT = 5


def flops_per_pair(dim: int, depth: int, activation: str) -> int:
    """Executed flops of one pair: the BLAS inner product (2d), the input moments, depth layers, the readout."""
    return 2 * dim + FLOPS_INPUT + depth * FLOPS_LAYER[activation] + FLOPS_READOUT


def empirical_flops_per_pair(dim: int, depth: int, width: int) -> int:
    """Flops of one pair of the empirical NTK (`ntkdist.kernels.empirical`), widths all ``width``: the Gram
    products ⟨a_{l−1}(x), a_{l−1}(y)⟩ and ⟨δ_l(x), δ_l(y)⟩ of every layer and readout (2 flops a term) and the
    3 flops a layer that combine them; the forward and backward passes are per point, not per pair."""
    return 2 * (dim + depth * width) + 2 * (depth * width + 1) + 3 * (depth + 1)


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
        "output_mib": K.nbytes / 2**20, "extra_peak_mib": extra / 2**20,
    }


def cpu_info() -> dict:
    """Model, CPUs, clock and SIMD width from /proc/cpuinfo, and the float64 peak they imply.

    Peak = CPUs × GHz × FMA units × float64 lanes × 2 flops. Lanes from the flags (avx512f: 8, avx2: 4, else 2);
    2 FMA units per core is assumed (Zen 2–4 and Intel server cores since Haswell have two), except that Zen 4
    (AMD family 0x19 with AVX-512) runs a 512-bit FMA on both of its 256-bit units at once: one 8-lane FMA a
    cycle, not two. The clock is the nominal "cpu MHz" (under a hypervisor the guest sees no boost). An upper
    bound, not a measurement.
    """
    info = {"model": platform.processor() or platform.machine(), "mhz": 0.0, "flags": set(), "vendor": "",
            "family": -1}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    info["model"] = value.strip()
                elif key == "cpu MHz" and not info["mhz"]:
                    info["mhz"] = float(value)
                elif key == "flags" and not info["flags"]:
                    info["flags"] = set(value.split())
                elif key == "vendor_id" and not info["vendor"]:
                    info["vendor"] = value.strip()
                elif key == "cpu family" and info["family"] < 0:
                    info["family"] = int(value)
    except OSError:
        pass
    flags, vendor, family = info.pop("flags"), info.pop("vendor"), info.pop("family")
    lanes = 8 if "avx512f" in flags else 4 if "avx2" in flags else 2
    cpus = default_threads()
    fma_units = 2 if "fma" in flags or lanes == 8 else 1
    if lanes == 8 and vendor == "AuthenticAMD" and family == 0x19:  # Zen 4: 512-bit ops on 256-bit units
        fma_units = 1
    info.update(cpus=cpus, float64_lanes=lanes, fma_units=fma_units,
                peak_gflops=cpus * info["mhz"] / 1e3 * fma_units * lanes * 2)
    return info


def machine() -> str:
    c = cpu_info()
    return (f"{c['model']}, {c['cpus']} CPUs at {c['mhz'] / 1e3:.2f} GHz, {c['float64_lanes']} float64 lanes × "
            f"{c['fma_units']} FMA unit{'s' if c['fma_units'] != 1 else ''}, "
            f"float64 peak {c['peak_gflops']:.0f} GFLOP/s; "
            f"Python {platform.python_version()}, numpy {np.__version__}")


class Peer:
    """neural-tangents in its own interpreter (`neural_tangents_reference.serve`), timed one run per request."""

    def __init__(self, python: str, dtype: str):
        if not os.path.exists(python):
            raise SystemExit(f"--peer-python: {python} does not exist; build it with `make .venv-nt` or point "
                             "NTKDIST_NT_PYTHON at a Python with neural-tangents")
        self.process = subprocess.Popen([python, PEER_SCRIPT, "serve", dtype], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.version = self._reply()["jax"]

    def _reply(self) -> dict:
        for line in self.process.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise SystemExit(f"the peer process exited (code {self.process.wait()}); see its messages above")

    def run(self, n: int, dim: int, depth: int, activation: str, net: MLP,
            width: int | None = None, kind: str = "ntk") -> tuple[float, float]:
        """(wall seconds, CPU seconds over the peer's threads) of one full Gram of ``kind`` (the empirical NTK of
        one network of ``width``, if given)."""
        request = {"n": n, "dim": dim, "depth": depth, "activation": activation,
                   "weight_var": net.weight_var, "bias_var": net.bias_var, "kind": kind}
        if width is not None:
            request["width"] = width
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        reply = self._reply()
        return reply["seconds"], reply["cpu_seconds"]

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def side_by_side(grid, rounds: int, peer: Peer, threads: int | None,
                 dtypes: tuple[str, ...] = ("float64",), stores: tuple[str, ...] = ("auto",),
                 width: int | None = None, kind: str = "ntk") -> list[dict]:
    """Per case: all sides warmed up, then ``rounds`` × (ntkdist once in each output dtype and store mode, the peer
    once); medians of each side, one result per ntkdist variant against the same peer runs. ``stores`` are values
    of ``NTKDIST_STREAM_STORES`` (`ntkdist.kernels.output_memory.streams_output`). With ``width``, both sides
    compute the empirical NTK of one network of that width (each draws its own) instead of the infinite-width
    one; ``kind`` "nngp" times the NNGP instead of the NTK."""
    peak = cpu_info()["peak_gflops"]
    variants = [(dtype, mode) for dtype in dtypes for mode in stores]
    results = []
    for n, dim, depth, activation in grid:
        X = np.random.default_rng(0).standard_normal((n, dim))
        net = MLP(depth=depth, activation=activation)

        def ours(dtype: str, mode: str) -> tuple[float, float]:
            before = os.environ.get("NTKDIST_STREAM_STORES")
            os.environ["NTKDIST_STREAM_STORES"] = mode
            try:
                start, cpu = time.perf_counter(), time.process_time()
                if width is None:
                    K = ntkdist.gram_block(X, net=net, kind=kind, threads=threads, dtype=dtype)
                else:
                    K = ntkdist.empirical_ntk(X, net=net, width=width, seed=0, dtype=dtype)
                elapsed = time.perf_counter() - start, time.process_time() - cpu
            finally:
                if before is None:
                    del os.environ["NTKDIST_STREAM_STORES"]
                else:
                    os.environ["NTKDIST_STREAM_STORES"] = before
            del K
            return elapsed

        for variant in variants:
            ours(*variant)
        peer.run(n, dim, depth, activation, net, width, kind)  # jit and warm-up
        mine, theirs = {variant: [] for variant in variants}, []
        for _ in range(rounds):
            for variant in variants:
                mine[variant].append(ours(*variant))
            theirs.append(peer.run(n, dim, depth, activation, net, width, kind))
        for dtype, mode in variants:
            flops = flops_per_pair(dim, depth, activation) if width is None else \
                empirical_flops_per_pair(dim, depth, width)
            result = _comparison(n, dim, depth, activation, rounds, dtype, mine[dtype, mode], theirs, peak, flops)
            results.append(dict(result, stream_stores=mode, width=width, kind=kind))
    return results


def _comparison(n, dim, depth, activation, rounds, dtype, mine, theirs, peak, flops) -> dict:
    """One case's medians and ratios; ``mine`` and ``theirs`` are lists of (wall s, CPU s)."""
    ours_s, peer_s = (statistics.median(t[0] for t in runs) for runs in (mine, theirs))
    # CPU seconds (all threads) are less sensitive to other processes on a shared machine than wall time.
    ours_cpu, peer_cpu = (statistics.median(t[1] for t in runs) for runs in (mine, theirs))
    gflops = n * (n + 1) / 2 * flops / ours_s / 1e9
    return {
        "n": n, "dim": dim, "depth": depth, "activation": activation, "rounds": rounds, "ntkdist_dtype": dtype,
        "ntkdist_s": [t[0] for t in mine], "peer_s": [t[0] for t in theirs], "ntkdist_cpu_s": [t[1] for t in mine],
        "peer_cpu_s": [t[1] for t in theirs], "ntkdist_median_s": ours_s, "peer_median_s": peer_s,
        "cpu_ratio": peer_cpu / ours_cpu,
        "ntkdist_entries_per_s": n * n / ours_s, "peer_entries_per_s": n * n / peer_s,
        "ratio": peer_s / ours_s,
        # The fastest run of each side: what each does on a quiet machine (the host's noise only ever adds).
        "best_ratio": min(t[0] for t in theirs) / min(t[0] for t in mine),
        "flops_per_pair": flops, "gflops": gflops, "roofline_fraction": gflops / peak,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller grid")
    parser.add_argument("--case", action="append", help="N,dim,depth,activation (repeatable)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32", "both"),
                        help="ntkdist's output precision (arithmetic is float64); with --peer, \"both\" times "
                             "each against the same peer runs (the peer's output is float32 by default)")
    parser.add_argument("--gpu", action="store_true", help="CuPy inputs (the fused GPU engine)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--peer", action="store_true", help="side by side with neural-tangents, same run")
    parser.add_argument("--rounds", type=int, default=5, help="--peer: alternating runs of each side per case")
    parser.add_argument("--stores", default="auto", choices=("auto", "never", "both"),
                        help="--peer: NTKDIST_STREAM_STORES for ntkdist's runs; \"both\" times auto (streaming "
                             "stores for outputs too large to stay cached) and never against the same "
                             "peer runs")
    parser.add_argument("--kind", default="ntk", choices=("ntk", "nngp"),
                        help="--peer: the kernel both sides compute")
    parser.add_argument("--width", type=int, default=None,
                        help="--peer: time the empirical NTK of one network of this width (both sides) instead")
    parser.add_argument("--peer-dtype", default="float32", choices=("float64", "float32"),
                        help="--peer: neural-tangents' precision (ntkdist always computes in float64)")
    parser.add_argument("--peer-python", default=os.environ.get("NTKDIST_NT_PYTHON", ".venv-nt/bin/python"),
                        help="--peer: the interpreter with neural-tangents (make .venv-nt)")
    args = parser.parse_args(argv)
    if args.dtype == "both" and not args.peer:
        parser.error("--dtype both: only with --peer (without it, run float64 and float32 as two commands)")
    if args.width is not None and not args.peer:
        parser.error("--width: only with --peer")
    if args.kind != "ntk" and (not args.peer or args.width is not None):
        parser.error("--kind nngp: only with --peer, and not with --width (the empirical NNGP is f(x)·f(y))")
    if args.stores != "auto" and not args.peer:
        parser.error("--stores: only with --peer (without it, set NTKDIST_STREAM_STORES)")
    if args.case:
        grid = [(int(n), int(d), int(depth), act) for n, d, depth, act in (c.split(",") for c in args.case)]
    else:
        grid = PEER_GRID if args.peer else QUICK_GRID if args.quick else FULL_GRID
    print(f"machine: {machine()}")
    if args.peer:
        return main_peer(args, grid)
    print("| N | d | depth | activation | engine | threads | median s | M entries/s | write GB/s | extra MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    results = []
    for n, dim, depth, act in grid:
        r = run_case(n, dim, depth, act, repeat=args.repeat, dtype=args.dtype, threads=args.threads, gpu=args.gpu)
        results.append(r)
        print(f"| {n} | {dim} | {depth} | {act} | {r['engine']} | {r['threads']} | {r['median_s']:.3f} | "
              f"{r['entries_per_s'] / 1e6:.1f} | {r['write_gb_per_s']:.2f} | {r['extra_peak_mib']:.1f} |", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine(), "results": results}, fh, indent=2)
    return 0


def main_peer(args, grid) -> int:
    dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype,)
    stores = ("auto", "never") if args.stores == "both" else (args.stores,)
    peer = Peer(args.peer_python, args.peer_dtype)
    timed = (f"jitted kernel_fn(x, None, \"{args.kind}\")" if args.width is None else
             f"jitted empirical_ntk_fn (Jacobian contraction) of one network of width {args.width}")
    print(f"peer: neural-tangents (JAX {peer.version}), {args.peer_dtype}, {timed}; "
          f"ntkdist output {' and '.join(dtypes)} (float64 arithmetic), NTKDIST_STREAM_STORES {' and '.join(stores)}, "
          f"{args.threads or default_threads()} threads; {args.rounds} alternating runs each; "
          f"load average {os.getloadavg()[0]:.2f} at start\n")
    print("| N | d | depth | activation | ntkdist output | ntkdist median s | ntkdist M entries/s | peer median s | "
          "peer M entries/s | ntkdist ÷ peer | best ÷ best | CPU-time ratio | flops/pair | GFLOP/s | of float64 peak |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    try:
        results = []
        for case in grid:
            for r in side_by_side([case], args.rounds, peer, args.threads, dtypes, stores, args.width, args.kind):
                results.append(r)
                output = r["ntkdist_dtype"] + ("" if len(stores) == 1 else f", stores {r['stream_stores']}")
                activation = r["activation"] + ("" if args.width is None else f", empirical, width {args.width}") + \
                    ("" if args.kind == "ntk" else f", {args.kind}")
                print(f"| {r['n']} | {r['dim']} | {r['depth']} | {activation} | {output} | "
                      f"{r['ntkdist_median_s']:.3f} | "
                      f"{r['ntkdist_entries_per_s'] / 1e6:.1f} | {r['peer_median_s']:.3f} | "
                      f"{r['peer_entries_per_s'] / 1e6:.1f} | **{r['ratio']:.1f}×** | {r['best_ratio']:.1f}× | "
                      f"{r['cpu_ratio']:.1f}× | "
                      f"{r['flops_per_pair']} | "
                      f"{r['gflops']:.1f} | {100 * r['roofline_fraction']:.0f}% |", flush=True)
    finally:
        peer.close()
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine(), "cpu": cpu_info(), "results": results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
