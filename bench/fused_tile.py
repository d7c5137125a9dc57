"""One tile of the fused CPU engine, timed alone: the BLAS product, `fused_tile` at each depth, writing it out.

    python -m bench.fused_tile --activation erf --depths 1,2,3 --repeat 30

A 256 × 256 tile (``gram.TILE``) of N = 8000 standard Gaussian points in R^64, in a float64 output of the whole
N × N (so the tile's rows are 64 KB apart, as in `ntkdist.ntk`), one thread. Prints the median microseconds of the
tile's input product (the fixed-shape GEMM), of `fused_cpu.fused_tile` at each depth (the slope between depths is
the cost of one layer; BENCHMARKS.md uses it to compare versions of a layer), and of putting a finished tile and
its mirror into the output: the mirror's transpose alone (a hot target), then a tile and its mirror into cold
memory, as the engine does it for an output too large to stay in the last-level cache (each repeat at the next
tile of the output, so every line written is cold), in place by ordinary stores against copied out by streaming
stores.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from ntkdist.kernels import MLP
from ntkdist.kernels.fused_cpu import activation_parameters, fused_tile, transpose_into
from ntkdist.kernels.gram import NEAR_PARALLEL, TILE, row_sq_norms, unit_rows
from ntkdist.kernels.output_memory import output_array
from ntkdist.kernels.streaming_stores import stream_tile


def median_microseconds(step, repeat: int) -> float:
    step()  # compiled and warm
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def cold_tiles(n: int):
    """Tile corners (i0, j0), i0 < j0, of an n × n output, round and round: consecutive ones share no lines."""
    corners = [(i0, j0) for i0 in range(0, n - TILE + 1, TILE) for j0 in range(i0 + TILE, n - TILE + 1, TILE)]
    while True:
        yield from corners


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activation", default="erf")
    parser.add_argument("--depths", default="1,2,3", help="comma-separated depths")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--n", type=int, default=8000, help="points (the output's row length)")
    args = parser.parse_args(argv)
    n = max(args.n, 2 * TILE)
    X = np.random.default_rng(0).standard_normal((n, 64))
    sq = row_sq_norms(X)
    unit = unit_rows(X, sq)
    out = output_array(np, (n, n), "float64")
    rows, cols = slice(0, TILE), slice(TILE, 2 * TILE)
    print(f"one {TILE} × {TILE} tile of an N = {n} float64 output, d = 64, one thread; median of {args.repeat}")
    print("| step | µs |\n| --- | --- |")
    with threadpool_limits(1, "blas"):
        inner = X[rows] @ X[cols].T
        print(f"| input product (GEMM) | {median_microseconds(lambda: X[rows] @ X[cols].T, args.repeat):.0f} |")
        for depth in (int(d) for d in args.depths.split(",")):
            net = MLP(depth=depth, activation=args.activation)
            params = activation_parameters(net.activation)

            def tile(net=net, params=params, depth=depth):
                fused_tile(inner, unit[rows], unit[cols], sq[rows], sq[cols], NEAR_PARALLEL, depth, net.weight_var,
                           net.bias_var, *params, True, out[rows, cols])

            print(f"| fused_tile, {args.activation} depth {depth} | {median_microseconds(tile, args.repeat):.0f} |")
        mirror = lambda: transpose_into(out[rows, cols], out[cols, rows])  # noqa: E731
        print(f"| mirror transpose | {median_microseconds(mirror, args.repeat):.0f} |")
        tile_values = out[rows, cols].copy()
        strip = np.empty((8, TILE), tile_values.dtype)
        cold = cold_tiles(n)
        out.fill(0.0)  # every page mapped now: the steps below time cold cache lines, not first-touch page faults

        def in_place():
            i0, j0 = next(cold)
            target = out[i0:i0 + TILE, j0:j0 + TILE]
            target[:] = tile_values
            transpose_into(target, out[j0:j0 + TILE, i0:i0 + TILE])

        def streamed():
            i0, j0 = next(cold)
            stream_tile(tile_values, out, i0, j0, True, strip)

        print(f"| tile + mirror to cold memory, ordinary stores | {median_microseconds(in_place, args.repeat):.0f} |")
        print(f"| tile + mirror to cold memory, streaming stores | {median_microseconds(streamed, args.repeat):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
