"""What fresh memory costs: writing 512 MiB into a new mapping (4 KiB pages, or huge pages when advised) against
rewriting memory already mapped. The reason for `ntkdist.kernels.output_memory` (BENCHMARKS.md, "Fresh memory").

    python -m bench.fresh_memory --repeat 5

Each repeat maps, fills with one thread and unmaps, so the huge-page rows see pages freed a moment ago; the
first huge-page fill of a run may instead pay for compaction or for memory the host has taken back.
"""

from __future__ import annotations

import argparse
import mmap
import statistics
import time

import numpy as np

from ntkdist.kernels.output_memory import free_huge_page_bytes


def fill_fresh(nbytes: int, huge: bool) -> float:
    mapping = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if huge:
        mapping.madvise(mmap.MADV_HUGEPAGE)
    array = np.frombuffer(mapping, dtype=np.float64)
    start = time.perf_counter()
    array.fill(1.0)
    elapsed = time.perf_counter() - start
    del array
    mapping.close()
    return elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    nbytes = args.mib * 2**20
    warm = np.ones(nbytes // 8)
    rows = {"fresh, 4 KiB pages": [], "fresh, huge pages advised": [], "already mapped": []}
    for _ in range(args.repeat):
        rows["fresh, 4 KiB pages"].append(fill_fresh(nbytes, huge=False))
        rows["fresh, huge pages advised"].append(fill_fresh(nbytes, huge=True))
        start = time.perf_counter()
        warm.fill(1.0)
        rows["already mapped"].append(time.perf_counter() - start)
    print(f"{args.mib} MiB, one thread; free in whole huge pages now: {free_huge_page_bytes() / 2**30:.2f} GiB")
    print("| memory | median s | runs, s |\n| --- | --- | --- |")
    for name, times in rows.items():
        print(f"| {name} | {statistics.median(times):.3f} | {', '.join(f'{t:.3f}' for t in times)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
