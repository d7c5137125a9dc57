"""Small kernel calls: the fixed cost of one `ntkdist.ntk` call, where the tile loop is short.

    python -m bench.small_calls --repeat 21

Users call the kernel on small sets too (a batch of test points against a training set, a verifier's samples, a
solver's diagonal), where what each call does besides its tiles matters: limiting BLAS to one thread, allocating
the output, the diagonal tiles of a symmetric Gram. Prints the median milliseconds of ``ntkdist.ntk(X)`` (depth-2
ReLU NTK, d = 64, one thread) for N = 16, 256, 512 and 1000. To compare two versions, run this file with
``PYTHONPATH`` pointing at a worktree of the other one (the file imports nothing but ntkdist's public API).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import ntkdist
from ntkdist.kernels import MLP


def median_milliseconds(n: int, repeat: int) -> float:
    X = np.random.default_rng(0).standard_normal((n, 64))
    net = MLP(depth=2)
    ntkdist.ntk(X, net=net, threads=1)  # compiled and warm
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        ntkdist.ntk(X, net=net, threads=1)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--sizes", default="16,256,512,1000", help="comma-separated N")
    args = parser.parse_args(argv)
    print("| N | median ms |\n| --- | --- |")
    for n in (int(v) for v in args.sizes.split(",")):
        print(f"| {n} | {median_milliseconds(n, args.repeat):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
