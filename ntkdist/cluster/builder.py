"""Building a stored Gram matrix with a pool of Ray actors, one per GPU (or per share of the CPUs).

The driver lists the upper blocks (I ≤ J) the manifest does not yet record, groups them into tasks along block
rows, and hands tasks to idle actors until none are left. Each actor reads the rows it needs from the store's
``inputs``, computes its blocks with `ntkdist.kernels.gram_block` on CuPy or NumPy, and writes each block and
its mirror as whole chunks before setting the block's manifest entry. The driver never holds a Gram block, so
its memory does not grow with N; a re-run skips every block already recorded.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..kernels import MLP, empirical_gram_block, gram_block, sample_network
from ..kernels._xp import to_numpy
from ..store import RunStore

log = logging.getLogger("ntkdist.cluster")

#: Blocks per task: enough to amortise a remote call, few enough to balance the load across actors.
BLOCKS_PER_TASK = 4


class GramBlockWorker:
    """Computes and writes Gram blocks of one run store (runs as a Ray actor; plain class for in-process use)."""

    def __init__(self, store_path: str, net: MLP, kind: str, device: str, threads: int, width=None, seed: int = 0):
        self._store = RunStore.open(store_path, mode="r+")
        # The driver's own MLP object travels by Ray's serialisation (so user-defined activations work too).
        self._net = net
        self._kind = kind
        # Empirical kinds: every worker draws the same network from the seed (it does not depend on the data).
        self._sampled = (sample_network(net, dim=self._store.dim, width=width, seed=seed)
                         if kind.startswith("empirical_") else None)
        self._dtype = self._store.meta["dtype"]
        self._threads = max(1, int(threads))  # the CPUs Ray gave this actor: tile threads of gram_block
        self._xp, self._device_note = _choose_array_module(device)
        self._row_cache: tuple[int, object] | None = None

    def describe(self) -> dict:
        """Where this worker runs and what it computes with."""
        gpu_ids = []
        try:
            import ray

            if ray.is_initialized():
                gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        except ImportError:  # pragma: no cover - ray is a dependency
            pass
        return {"pid": os.getpid(), "gpu_ids": gpu_ids, "array_module": self._xp.__name__,
                "note": self._device_note, "threads": self._threads}

    def _rows(self, index: int):
        if self._row_cache is not None and self._row_cache[0] == index:
            return self._row_cache[1]
        rows = self._xp.asarray(self._store.inputs[self._store.block_slice(index)])
        self._row_cache = (index, rows)
        return rows

    def build(self, blocks: list[tuple[int, int]]) -> list[dict]:
        """Compute, write and record the given upper blocks; returns one record per block."""
        records = []
        for i, j in blocks:
            start = time.perf_counter()
            rows = self._rows(i)
            cols = None if i == j else self._xp.asarray(self._store.inputs[self._store.block_slice(j)])
            if self._sampled is not None:
                values = empirical_gram_block(rows, cols, params=self._sampled, kind=self._kind[len("empirical_"):],
                                              dtype=self._dtype)
            else:
                values = gram_block(rows, cols, net=self._net, kind=self._kind, dtype=self._dtype,
                                    threads=self._threads)
            checksum = self._store.write_block(i, j, to_numpy(values))
            records.append({"block": (i, j), "crc32": checksum, "seconds": time.perf_counter() - start,
                            "pid": os.getpid()})
        return records


def _choose_array_module(device: str):
    """CuPy when this worker was given a GPU and CuPy can use it; NumPy otherwise (with the reason)."""
    if device == "cpu":
        return np, "cpu"
    try:
        import ray

        gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []
    except ImportError:  # pragma: no cover
        gpu_ids = []
    if not gpu_ids:
        if device == "gpu":
            raise RuntimeError("cluster.device = \"gpu\" but this worker was given no GPU")
        return np, "cpu"
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
        return cupy, f"gpu {gpu_ids[0]}"
    except Exception as exc:  # ImportError, or CUDA missing behind a logical GPU
        if device == "gpu":
            raise RuntimeError(f"cluster.device = \"gpu\" but CuPy cannot use GPU {gpu_ids[0]}: {exc}") from exc
        return np, f"logical gpu {gpu_ids[0]} without CuPy/CUDA; computing with NumPy"


@dataclass
class BuildReport:
    """What a build did: blocks computed now, blocks found already written, Gram entries written (both
    triangles), and where they were computed."""

    computed: int = 0
    skipped: int = 0
    entries: int = 0
    seconds: float = 0.0
    workers: list[dict] = field(default_factory=list)

    @property
    def entries_per_second(self) -> float:
        return 0.0 if self.seconds == 0 else self.entries / self.seconds


def plan_tasks(missing: list[tuple[int, int]], per_task: int = BLOCKS_PER_TASK) -> list[list[tuple[int, int]]]:
    """Group missing upper blocks into tasks along block rows, longest rows first (they finish last otherwise)."""
    rows: dict[int, list[tuple[int, int]]] = {}
    for i, j in missing:
        rows.setdefault(i, []).append((i, j))
    tasks = []
    for i in sorted(rows, key=lambda r: -len(rows[r])):
        blocks = sorted(rows[i])
        tasks.extend(blocks[k:k + per_task] for k in range(0, len(blocks), per_task))
    return tasks


def resources_per_worker(device: str, workers: int, cpus_per_worker: float | None) -> dict:
    """Ray resource requests of one actor, checked against what the cluster has.

    Raises
    ------
    ValueError
        If the cluster cannot host ``workers`` actors of this shape (naming ``[cluster]`` keys).
    """
    import ray

    available = ray.cluster_resources()
    gpus = int(available.get("GPU", 0))
    cpus = float(available.get("CPU", 1))
    use_gpu = device == "gpu" or (device == "auto" and gpus > 0)
    if use_gpu:
        if gpus == 0:
            raise ValueError("[cluster] device: \"gpu\" but the Ray cluster has no GPUs; use \"auto\" or \"cpu\"")
        if workers > gpus:
            raise ValueError(f"[cluster] workers: {workers} GPU workers asked but the cluster has {gpus} GPUs; "
                             f"set workers ≤ {gpus} (one actor per GPU)")
        cpu_share = cpus_per_worker or max(1.0, min(4.0, cpus / workers))
        return {"num_gpus": 1, "num_cpus": min(cpu_share, cpus / workers)}
    share = cpus_per_worker or cpus / workers
    if share * workers > cpus + 1e-9:
        raise ValueError(f"[cluster] cpus_per_worker: {workers} workers × {share:g} CPUs exceeds the cluster's "
                         f"{cpus:g} CPUs; lower workers or cpus_per_worker")
    return {"num_cpus": share}


def build_gram(store_path, *, net: MLP, kind: str, workers: int, device: str = "auto",
               cpus_per_worker: float | None = None, per_task: int = BLOCKS_PER_TASK, width=None,
               seed: int = 0) -> BuildReport:
    """Compute every missing upper block of the store's Gram matrix with a pool of Ray actors.

    Ray must already be initialised (see `ray_session`). Blocks already in the manifest are skipped, so calling
    this again after a crash resumes the build. ``kind`` is "ntk" or "nngp" (infinite width), or
    "empirical_ntk"/"empirical_nngp" for the network of hidden ``width`` drawn from ``seed``.

    Returns
    -------
    BuildReport
    """
    import ray

    store = RunStore.open(store_path)
    missing = store.missing_blocks()
    report = BuildReport(skipped=len(store.upper_blocks()) - len(missing))
    if not missing:
        return report
    tasks = plan_tasks(missing, per_task)
    workers = max(1, min(workers, len(tasks)))
    resources = resources_per_worker(device, workers, cpus_per_worker)
    threads = max(1, int(resources["num_cpus"]))
    Actor = ray.remote(GramBlockWorker)
    actors = [Actor.options(**resources).remote(str(store_path), net, kind, device, threads, width, seed)
              for _ in range(workers)]
    report.workers = ray.get([a.describe.remote() for a in actors])
    for info in report.workers:
        log.info("worker pid %s: %s, %s thread(s)", info["pid"], info["note"], info["threads"])

    start = time.perf_counter()
    queue = list(reversed(tasks))
    in_flight = {}
    # Two tasks in flight per actor hide the round trip between finishing one task and receiving the next.
    for actor in actors * 2:
        if queue:
            in_flight[actor.build.remote(queue.pop())] = actor
    total = len(missing)
    try:
        while in_flight:
            done, _ = ray.wait(list(in_flight), num_returns=1)
            ref = done[0]
            actor = in_flight.pop(ref)
            records = ray.get(ref)
            report.computed += len(records)
            report.entries += sum(_block_entries(store, *r["block"]) for r in records)
            log.info("built %d/%d blocks", report.computed, total)
            if queue:
                in_flight[actor.build.remote(queue.pop())] = actor
    finally:
        for ref in in_flight:
            ray.cancel(ref, force=False)
        for actor in actors:
            ray.kill(actor)
    report.seconds = time.perf_counter() - start
    return report


def _block_entries(store: RunStore, i: int, j: int) -> int:
    rows, cols = store.block_slice(i), store.block_slice(j)
    size = (rows.stop - rows.start) * (cols.stop - cols.start)
    return size if i == j else 2 * size
