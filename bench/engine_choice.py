"""Why the fused CPU engine is numba: the same tile computation in each candidate tool, timed.

    python -m bench.engine_choice [--n 4000] [--dim 64] [--depth 2] [--repeat 5]

Candidates, each computing the depth-2 ReLU NTK of an N×N symmetric Gram (upper tiles + mirror, 2 threads):
  array    ntkdist's NumPy reference engine (tiled, every operation a NumPy ufunc on a 256×256 tile)
  numexpr  the plain arc-cosine recursion written as numexpr expressions on the same tiles (numexpr compiles
           each expression to a multi-threaded loop; fewer temporaries than NumPy) — if numexpr is installed
  fused    ntkdist's numba engine (the whole recursion per tile row, vectorised)
The numexpr candidate uses the textbook formulas (arccos of the correlation), so it does less work than the two
engines that keep near-parallel pairs accurate; it is an upper bound on what that tool would reach here.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import ntkdist
from ntkdist.kernels import MLP, TILE


def numexpr_relu_ntk(X, depth: int, threads: int):
    import numexpr as ne

    ne.set_num_threads(threads)
    n, d = X.shape
    out = np.empty((n, n))
    sq = np.einsum("ij,ij->i", X, X)
    for i0 in range(0, n, TILE):
        for j0 in range(i0, n, TILE):
            xi, xj = X[i0:i0 + TILE], X[j0:j0 + TILE]
            sigma = ne.evaluate("2.0 * g / d", local_dict={"g": xi @ xj.T, "d": float(d)})
            qx = (2.0 * sq[i0:i0 + TILE] / d)[:, None]
            qy = (2.0 * sq[j0:j0 + TILE] / d)[None, :]
            theta = sigma.copy()
            for _ in range(depth):
                sigma, dot = (
                    ne.evaluate("2.0 * sqrt(qx * qy) * (sqrt(1 - c * c) + (pi - arccos(c)) * c) / (2 * pi)",
                                local_dict={"qx": qx, "qy": qy, "c": ne.evaluate(
                                    "where(s / sqrt(qx * qy) > 1, 1, s / sqrt(qx * qy))",
                                    local_dict={"s": sigma, "qx": qx, "qy": qy}), "pi": np.pi}),
                    ne.evaluate("(pi - arccos(where(s / sqrt(qx * qy) > 1, 1, s / sqrt(qx * qy)))) / (2 * pi)",
                                local_dict={"s": sigma, "qx": qx, "qy": qy, "pi": np.pi}))
                theta = ne.evaluate("sigma + 2.0 * dot * theta")
                qx, qy = qx, qy  # ReLU at w = 2 keeps the variances
            out[i0:i0 + TILE, j0:j0 + TILE] = theta
            if j0 != i0:
                out[j0:j0 + TILE, i0:i0 + TILE] = theta.T
    return out


def timed(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    X = np.random.default_rng(0).standard_normal((args.n, args.dim))
    net = MLP(depth=args.depth)
    candidates = {
        "array": lambda: ntkdist.ntk(X, net=net, engine="array", threads=args.threads),
        "fused": lambda: ntkdist.ntk(X, net=net, engine="fused", threads=args.threads),
    }
    try:
        import numexpr  # noqa: F401

        candidates["numexpr"] = lambda: numexpr_relu_ntk(X, args.depth, args.threads)
    except ImportError:
        print("numexpr not installed: skipped")
    reference = ntkdist.ntk(X, net=net)
    print(f"N={args.n} d={args.dim} depth={args.depth} relu, {args.threads} threads, median of {args.repeat}\n")
    print("| engine | median s | M entries/s | max |Δ| vs fused / scale |")
    print("| --- | --- | --- | --- |")
    scale = np.sqrt(np.outer(np.diag(reference), np.diag(reference)))
    for name, fn in candidates.items():
        seconds = timed(fn, args.repeat)
        error = np.max(np.abs(fn() - reference) / scale)
        print(f"| {name} | {seconds:.3f} | {args.n ** 2 / seconds / 1e6:.1f} | {error:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
