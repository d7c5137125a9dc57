"""What writing to the local disk costs the cores that compute: CPU lost per MB written.

    python -m bench.io_cost                       # 10 s alone, then 10 s with a writer, twice
    python -m bench.io_cost --seconds 5 --rounds 1

A store build writes every byte of the Gram matrix once (`RunStore.write_block`, direct I/O where the file
system allows). On bare metal that costs the computing cores almost nothing: the device does the work. On a
virtual machine the hypervisor emulates the disk, and the time it spends doing so can be taken from the guest's
own cores ("steal" in /proc/stat). This script measures that share, so that a build's store-over-compute ratio
can be read against the floor the machine itself sets:

1. ``--cores`` processes run a fixed floating-point loop (256² matrix products, one BLAS thread each) for
   ``--seconds``, alone: their operations per second are the machine's compute rate;
2. the same, while one more process writes 16 MiB chunks of float32 through
   `ntkdist.store.chunk_io.write_file_atomically` (what a build does) to ``--dir``;
3. the rate lost in (2), in core-seconds, divided by the megabytes written is the CPU each written MB costs the
   computing cores (``core_ms_per_mb``), with the steal and iowait jiffies of both phases.

The floor for a build: ratio ≥ 1 + bytes_written · core_ms_per_mb / (cores · compute_seconds). BENCHMARKS.md
(the build) records both.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHUNK_SIDE = 2048  # a 2048² float32 block: 16 MiB, the layout's chunk


def cpu_jiffies() -> dict[str, int]:
    """The machine's CPU time by state since boot (/proc/stat), in clock ticks."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    return {name: int(value) for name, value in zip(names, fields)}


def _spin(seconds: float, results) -> None:
    """Matrix products for ``seconds``; puts how many it did."""
    a = np.random.default_rng(0).standard_normal((256, 256))
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ a
        count += 1
    results.put(count)


def _write(seconds: float, directory: str, results) -> None:
    """Chunks written as a build writes them, for ``seconds``; puts the bytes written."""
    from ntkdist.store.chunk_io import write_file_atomically

    values = np.random.default_rng(1).standard_normal((CHUNK_SIDE, CHUNK_SIDE)).astype(np.float32)
    written, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        write_file_atomically(Path(directory) / f"c{written // values.nbytes % 64}", values)
        written += values.nbytes
    results.put(written)


def phase(cores: int, seconds: float, directory: str | None) -> dict:
    """One phase: ``cores`` spinning processes, with a writer when ``directory`` is given."""
    context = mp.get_context("spawn")  # fresh interpreters: BLAS reads the one-thread setting of `main`
    spins, writes = context.Queue(), context.Queue()
    processes = [context.Process(target=_spin, args=(seconds, spins)) for _ in range(cores)]
    if directory is not None:
        processes.append(context.Process(target=_write, args=(seconds, directory, writes)))
    before = cpu_jiffies()
    for process in processes:
        process.start()
    counts = [spins.get() for _ in range(cores)]
    written = writes.get() if directory is not None else 0
    for process in processes:
        process.join()
    after = cpu_jiffies()
    ticks = os.sysconf("SC_CLK_TCK")
    return {"products": sum(counts), "bytes_written": written,
            "steal_seconds": (after["steal"] - before["steal"]) / ticks,
            "iowait_seconds": (after["iowait"] - before["iowait"]) / ticks}


def measure(cores: int, seconds: float, rounds: int, directory: str) -> dict:
    """Alternating phases alone and with a writer; the median CPU cost per MB written."""
    alone, loaded, costs = [], [], []
    for _ in range(rounds):
        quiet = phase(cores, seconds, None)
        busy = phase(cores, seconds, directory)
        alone.append(quiet)
        loaded.append(busy)
        lost_core_seconds = cores * seconds * (1 - busy["products"] / quiet["products"])
        costs.append(1e3 * lost_core_seconds / (busy["bytes_written"] / 1e6))
    return {"cores": cores, "seconds": seconds, "rounds": rounds,
            "core_ms_per_mb": statistics.median(costs), "core_ms_per_mb_all": costs,
            "write_mb_per_s": statistics.median(b["bytes_written"] / 1e6 / seconds for b in loaded),
            "alone": alone, "with_writer": loaded}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", default=None, help="where the chunks go (default: a temporary directory)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    directory = tempfile.mkdtemp(prefix="io-cost-", dir=args.dir)
    try:
        results = measure(args.cores, args.seconds, args.rounds, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"{args.cores} cores: writing at {results['write_mb_per_s']:.0f} MB/s costs the computing cores "
          f"{results['core_ms_per_mb']:.2f} core-ms per MB (median of {args.rounds}; all: "
          + ", ".join(f"{c:.2f}" for c in results["core_ms_per_mb_all"]) + "); steal s with the writer: "
          + ", ".join(f"{b['steal_seconds']:.1f}" for b in results["with_writer"]) + ", alone: "
          + ", ".join(f"{a['steal_seconds']:.1f}" for a in results["alone"]))
    write_json(args.json, results)
    return 0


def write_json(path: str | None, results: dict) -> None:
    """A benchmark's results as indented JSON at ``path`` (nothing when no path was asked for)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
