"""What writing one block costs the builder, step by step, with nothing computing beside it.

    python -m bench.write_cost --blocks 28 --block 2048

Writes the off-diagonal blocks of a float32 store on local disk (``--dir``, default a temporary directory) from one
random block, through `RunStore.write_block` (the block, its mirror, the CRC-32 and Σ K² the manifest records),
and times the same steps one by one on the same block: the mirror's transpose into the direct-I/O buffer, the
CRC-32, Σ K² (and numpy's einsum, which computed it before), and the two direct writes. Reports wall and CPU
milliseconds per block (medians); BENCHMARKS.md, "The build with its store", uses them to account for the store
leg's cost over compute only.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ntkdist.kernels.output_memory import output_array
from ntkdist.store.chunk_io import (block_checksum, block_sum_squares, direct_write_buffer, transposed,
                                   write_file_atomically)
from ntkdist.store.run_store import RunStore


def timed(step, repeats: int) -> tuple[float, float]:
    """Median (wall ms, CPU ms) of ``repeats`` calls of ``step``."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        walls.append(1e3 * (time.perf_counter() - wall))
        cpus.append(1e3 * (time.process_time() - cpu))
    return statistics.median(walls), statistics.median(cpus)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", type=int, default=2048)
    parser.add_argument("--blocks", type=int, default=28, help="off-diagonal blocks written (≤ nb(nb−1)/2)")
    parser.add_argument("--dir", default=None, help="where the store goes (default: a temporary directory)")
    args = parser.parse_args(argv)
    nb = 2
    while nb * (nb - 1) // 2 < args.blocks:
        nb += 1
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        store = RunStore.create(str(Path(root) / "write-cost.zarr"), n=nb * args.block, dim=4, block=args.block,
                                dtype="float32", config={}, fingerprint="bench", versions={})
        values = output_array(np, (args.block, args.block), "float32")
        values[:] = np.random.default_rng(0).standard_normal(values.shape)
        pairs = iter([(i, j) for i in range(nb) for j in range(i + 1, nb)][:args.blocks])
        rows = {"write_block (all of it)": timed(lambda: store.write_block(*next(pairs), values), args.blocks)}
        mirror = direct_write_buffer(values.shape[::-1], values.dtype)
        target = Path(root) / "chunk"
        rows["mirror transpose"] = timed(lambda: transposed(values, out=mirror), args.blocks)
        rows["CRC-32"] = timed(lambda: block_checksum(values), args.blocks)
        rows["Σ K² (float64, `block_sum_squares`)"] = timed(lambda: block_sum_squares(values), args.blocks)
        rows["(Σ K² by np.einsum, the rule before it)"] = timed(
            lambda: np.einsum("ij,ij->", values, values, dtype=np.float64), args.blocks)
        rows["two direct writes"] = timed(lambda: (write_file_atomically(target, values),
                                                    write_file_atomically(target, mirror)), args.blocks)
    print(f"block {args.block}² float32 ({values.nbytes / 2**20:.0f} MiB), {args.blocks} blocks, medians")
    print("| step | wall ms | CPU ms |\n| --- | --- | --- |")
    for name, (wall, cpu) in rows.items():
        print(f"| {name} | {wall:.1f} | {cpu:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
