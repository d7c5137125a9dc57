"""Building a stored Gram matrix with a pool of Ray actors, one per GPU (or per share of the CPUs).

The driver lists the upper blocks (I ≤ J) the manifest does not yet record, groups them into tasks along block
rows, and hands tasks to idle actors until none are left (`dispatch.TaskPool`, which requeues the tasks of lost
workers). Each actor reads each row block of the store's ``inputs`` it needs once (`InputBlocks`), computes its
blocks with `ntkdist.kernels.gram_block` on CuPy or NumPy, and writes each block and its mirror as whole chunks;
only then does the driver record the block in the manifest, in batches (`recording.BlockRecorder`). The driver
never holds a Gram block, so its memory does not grow with N; a re-run skips every block already recorded.

Optionally a single-pass Nyström sketch rides along (`build_gram(sketch_rank=r)`): Y = K·Ω for a seeded
Gaussian Ω (N×r) is gathered as blocks are written. Each upper block contributes K_IJ·Ω_J to Y_I and K_IJᵀ·Ω_I
to Y_J; the actors compute those from the block they just wrote (as stored: float32 values promoted), and the
driver adds them to its N×r Y and records the block in the sketch's own mask. Y and the mask are checkpointed
together (see `_SketchAccumulator`), so a resumed build adds every block exactly once: blocks already in the mask
are never added again, and blocks the manifest records but the mask does not (a crash between the two) are read
back from the store and added.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..kernels import MLP, empirical_gram_block, gram_block, sample_weights
from ..kernels._xp import to_numpy
from ..errors import ConfigError, StoreError
from ..store import RunStore
from .dispatch import Slot, TaskPool
from .recording import BlockRecorder
from .runtime import get

log = logging.getLogger("ntkdist.cluster")

#: Blocks per task: enough to amortise a remote call, few enough to balance the load across actors.
BLOCKS_PER_TASK = 8


class GramBlockWorker:
    """Computes and writes Gram blocks of one run store (runs as a Ray actor; plain class for in-process use)."""

    def __init__(self, location: str, net: MLP, kind: str, device: str, threads: int, width=None, seed: int = 0,
                 sketch: tuple[int, int] | None = None):
        self._store = RunStore.open(location, mode="r+")
        self._sketch = sketch  # (rank, seed) of the ride-along Nyström sketch, or None
        # The driver's own MLP object travels by Ray's serialisation (so user-defined activations work too).
        self._net = net
        self._kind = kind
        # Empirical kinds: every worker draws the same network from the seed (it does not depend on the data).
        self._sampled = (sample_weights(net, dim=self._store.dim, width=width, seed=seed)
                         if kind.startswith("empirical_") else None)
        self._dtype = self._store.meta["dtype"]
        self._threads = max(1, int(threads))  # the CPUs Ray gave this actor: tile threads of gram_block
        self._xp, self._device_note = _choose_array_module(device)
        self._inputs = InputBlocks(self._store, self._xp)
        # One writer thread: block k is written while block k + 1 is computed (the kernels release the GIL), so
        # the store's I/O waits hide behind the compute (BENCHMARKS.md, the build).
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gram-writer")

    def describe(self) -> dict:
        """Where this worker runs and what it computes with."""
        gpu_ids = []
        try:
            import ray

            if ray.is_initialized():
                gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        except ImportError:  # pragma: no cover - ray is a dependency
            pass
        return {"pid": os.getpid(), "node": _node_id(), "gpu_ids": gpu_ids, "array_module": self._xp.__name__,
                "note": self._device_note, "threads": self._threads, "input_reads": dict(self._inputs.reads)}

    def build(self, blocks: list[tuple[int, int]]) -> list[dict]:
        """Compute and write the given upper blocks; returns one record per block (for the driver to record).

        Each block is written by the writer thread while the next one is computed; at most one block waits to be
        written, and every write has finished (or raised here) before the records go back.
        """
        records, pending = [], None
        for i, j in blocks:
            start = time.perf_counter()
            rows = self._inputs.rows(i)
            cols = None if i == j else self._inputs.rows(j)
            if self._sampled is not None:
                values = empirical_gram_block(rows, cols, params=self._sampled, kind=self._kind[len("empirical_"):],
                                              dtype=self._dtype)
            else:
                values = gram_block(rows, cols, net=self._net, kind=self._kind, dtype=self._dtype,
                                    threads=self._threads)
            values = to_numpy(values)
            if pending is not None:
                records.append(pending.result())
            pending = self._writer.submit(self._write_and_describe, i, j, values, start)
        if pending is not None:
            records.append(pending.result())
        return records

    def _write_and_describe(self, i: int, j: int, values: np.ndarray, start: float) -> dict:
        """Write one computed block (writer thread); its record for the driver."""
        written = self._write(i, j, values)
        record = {"block": (i, j), "crc32": written.crc32, "sum_squares": written.sum_squares,
                  "seconds": time.perf_counter() - start, "pid": os.getpid(), "built": True}
        if self._sketch is not None:
            record["sketch"] = self._contributions(i, j, values)
        return record

    def _write(self, i: int, j: int, values: np.ndarray):
        """`RunStore.write_block`, with a failure of the storage itself (a full disk, no permission, a read-only
        file system, a missing bucket: an OSError, as fsspec reports S3 errors too) told as a `StoreError`."""
        try:
            return self._store.write_block(i, j, values)
        except OSError as exc:
            raise StoreError(f"{self._store.location}: writing Gram block ({i}, {j}) failed: {type(exc).__name__}: "
                             f"{exc}. Fix it and re-run: finished blocks are kept") from exc

    def sketch_stored(self, blocks: list[tuple[int, int]]) -> list[dict]:
        """Sketch contributions of upper blocks already in the store (read back, not recomputed)."""
        records = []
        for i, j in blocks:
            values = self._store.gram[self._store.block_slice(i), self._store.block_slice(j)]
            records.append({"block": (i, j), "built": False, "sketch": self._contributions(i, j, values)})
        return records

    def _contributions(self, i: int, j: int, values: np.ndarray):
        """(K_IJ·Ω_J, K_IJᵀ·Ω_I) of the block as stored (float32 promoted), or (K_II·Ω_I, None) on the diagonal."""
        rank, seed = self._sketch
        values = np.asarray(values, dtype=self._store.gram.dtype).astype(np.float64, copy=False)
        omega_i = sketch_omega_block(seed, i, values.shape[0], rank)
        if i == j:
            return values @ omega_i, None
        return values @ sketch_omega_block(seed, j, values.shape[1], rank), values.T @ omega_i


#: Bytes of input row blocks an actor keeps (least recently used dropped beyond): all of N = 300k float64 rows
#: up to d = 447.
INPUT_CACHE_BYTES = 1 << 30


class InputBlocks:
    """The store's input row blocks as one actor reads them: each read from the store once, then kept (on the
    actor's device) within `INPUT_CACHE_BYTES`, least recently used dropped first.

    A per-actor cache rather than one object ref of all inputs: the driver never holds the inputs (its memory
    stays independent of N·d), each actor reads only the rows its blocks need, straight from wherever the store
    lives (local disk or object storage), and a restarted actor simply reads again. ``reads`` counts the store
    reads per block (what the tests check: at most one per block while the inputs fit the budget).
    """

    def __init__(self, store: RunStore, xp, budget: int = INPUT_CACHE_BYTES):
        self._store, self._xp, self._budget = store, xp, int(budget)
        self._kept: OrderedDict[int, object] = OrderedDict()
        self._bytes = 0
        self.reads: Counter[int] = Counter()

    def rows(self, index: int):
        if index in self._kept:
            self._kept.move_to_end(index)
            return self._kept[index]
        rows = self._xp.asarray(self._store.inputs[self._store.block_slice(index)])
        self.reads[index] += 1
        self._kept[index] = rows
        self._bytes += rows.nbytes
        while self._bytes > self._budget and len(self._kept) > 1:
            _, dropped = self._kept.popitem(last=False)
            self._bytes -= dropped.nbytes
        return rows


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except ImportError:  # pragma: no cover - ray is a dependency
        return None


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
            raise ConfigError("[cluster] device: \"gpu\" but this Ray worker was given no GPU; use device = "
                              "\"auto\" or \"cpu\"")
        return np, "cpu"
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
        return cupy, f"gpu {gpu_ids[0]}"
    except Exception as exc:  # ImportError, or CUDA missing behind a logical GPU
        if device == "gpu":
            raise ConfigError(f"[cluster] device: \"gpu\" but CuPy cannot use GPU {gpu_ids[0]} ({exc}); install "
                              "CuPy for this CUDA (pip install -e '.[gpu]'), or use device = \"auto\" or "
                              "\"cpu\"") from exc
        return np, f"logical gpu {gpu_ids[0]} without CuPy/CUDA; computing with NumPy"


# -- the ride-along Nyström sketch ---------------------------------------------------------------------------------
SKETCH = "sketch"


def sketch_omega_block(seed: int, index: int, rows: int, rank: int) -> np.ndarray:
    """Rows of block ``index`` of the sketch's Gaussian test matrix Ω: standard normal from
    ``numpy.random.default_rng(SeedSequence([seed, index]))``, so any worker draws the same block alone."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)])).standard_normal((rows, rank))


def sketch_omega(n: int, block: int, rank: int, seed: int) -> np.ndarray:
    """The whole N×r test matrix Ω of a sketch (block by block, as the workers draw it)."""
    return np.concatenate([sketch_omega_block(seed, b, min(block, n - start), rank)
                           for b, start in enumerate(range(0, n, block))] or [np.empty((0, rank))])


def read_sketch(store: RunStore) -> dict | None:
    """The committed ride-along sketch of a store: {"Y", "omega", "rank", "seed", "block", "complete"}, or None.

    ``complete`` is True when every upper block has been added (Y = K·Ω of the whole stored K).
    """
    group = store.open_subgroup(SKETCH)
    if group is None:
        return None
    info = group.attrs.asdict().get("ntkdist_sketch")
    if not info or info.get("current") is None:
        return None
    slot = info["current"]
    mask = group[f"mask{slot}"][:] != 0
    nb = mask.shape[0]
    complete = bool(mask[np.triu_indices(nb)].all())
    return {"Y": group[f"Y{slot}"][:], "omega": sketch_omega(info["n"], info["block"], info["rank"], info["seed"]),
            "rank": info["rank"], "seed": info["seed"], "block": info["block"], "complete": complete}


class _SketchAccumulator:
    """The driver's Y = K·Ω (N×r) and the mask of upper blocks already added, checkpointed to ``sketch/``.

    Two slots (``Y0``/``mask0`` and ``Y1``/``mask1``) hold checkpoints; the group attrs name the current one. A
    checkpoint writes Y and the mask into the other slot and only then flips ``current`` (one small JSON write),
    so a crash at any moment leaves a Y and a mask that agree: resuming never adds a block twice nor misses one.
    A sketch of another rank, seed or block layout than the one asked for is started afresh.
    """

    def __init__(self, store: RunStore, rank: int, seed: int):
        if int(rank) < 1:
            raise ValueError(f"sketch_rank: must be ≥ 1, got {rank!r}")
        self.n, self.block, self.nb = store.n, store.block, store.n_blocks
        self.rank, self.seed = int(rank), int(seed)
        self._slices = [store.block_slice(b) for b in range(self.nb)]
        wanted = {"n": self.n, "block": self.block, "rank": self.rank, "seed": self.seed,
                  "omega": ("block b of Ω = numpy.random.default_rng(SeedSequence([seed, b]))"
                            ".standard_normal((rows_b, rank))")}
        self._group = store.open_subgroup(SKETCH, mode="r+")
        info = None if self._group is None else self._group.attrs.asdict().get("ntkdist_sketch")
        if info is None or any(info.get(k) != v for k, v in wanted.items()):
            self._group = store.open_subgroup(SKETCH, mode="w")
            for slot in (0, 1):
                self._group.create_array(f"Y{slot}", shape=(self.n, self.rank), chunks=(self.block, self.rank),
                                         dtype="float64", fill_value=0.0)
                self._group.create_array(f"mask{slot}", shape=(self.nb, self.nb), dtype="int8", fill_value=0)
            self._group.attrs.update({"ntkdist_sketch": {**wanted, "current": None}})
            store._consolidate()  # let readers of the root's consolidated metadata see the new group
            info = self._group.attrs.asdict()["ntkdist_sketch"]
        self._info = info
        current = info["current"]
        if current is None:
            self.Y = np.zeros((self.n, self.rank))
            self.mask = np.zeros((self.nb, self.nb), dtype=bool)
        else:
            self.Y = self._group[f"Y{current}"][:]
            self.mask = self._group[f"mask{current}"][:] != 0
        self.added = 0
        self._dirty = False

    def unsketched(self, finished: np.ndarray) -> list[tuple[int, int]]:
        """Upper blocks written to the store (manifest) but not yet added to Y."""
        return [(i, j) for i in range(self.nb) for j in range(i, self.nb) if finished[i, j] and not self.mask[i, j]]

    def add(self, i: int, j: int, contributions) -> None:
        if self.mask[i, j]:
            return  # already in Y (a block rebuilt after the sketch took it)
        own, mirror = contributions
        self.Y[self._slices[i]] += own
        if mirror is not None:
            self.Y[self._slices[j]] += mirror
        self.mask[i, j] = True
        self.added += 1
        self._dirty = True

    def checkpoint(self) -> None:
        if not self._dirty:
            return
        current = self._info["current"]
        slot = 0 if current is None else 1 - current  # never the slot a reader may be reading
        self._group[f"Y{slot}"][:] = self.Y
        self._group[f"mask{slot}"][:] = self.mask.astype(np.int8)
        self._info = {**self._info, "current": slot}
        self._group.attrs.update({"ntkdist_sketch": self._info})  # the commit point
        self._dirty = False

    @property
    def complete(self) -> bool:
        return bool(self.mask[np.triu_indices(self.nb)].all())


@dataclass
class BuildReport:
    """What a build did: blocks computed now, blocks found already written, Gram entries written (both
    triangles), and where they were computed."""

    computed: int = 0
    skipped: int = 0
    entries: int = 0
    #: Wall time of the pool, from asking for the actors to the last record: starting them (a process each, the
    #: imports, numba's cached kernels) and their blocks.
    seconds: float = 0.0
    #: The part of ``seconds`` after every actor answered: computing, writing and recording the blocks.
    block_seconds: float = 0.0
    workers: list[dict] = field(default_factory=list)
    #: The ride-along sketch, when asked for: rank, seed, blocks added now, and whether Y = K·Ω is complete.
    sketch: dict | None = None
    #: The upper blocks this build computed, in the order their results arrived.
    computed_blocks: list[tuple[int, int]] = field(default_factory=list)
    #: Blocks put back in the queue because their worker was lost; actors Ray restarted; actors replaced anew.
    requeued: int = 0
    restarts: int = 0
    replaced: int = 0

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
    """Ray resource requests of one actor, checked against what the connected Ray cluster has.

    Raises
    ------
    ConfigError
        If the cluster cannot host ``workers`` actors of this shape (`worker_resources`).
    """
    import ray

    # Ray lists no "GPU" at all for a cluster without GPUs: that is a known zero.
    return worker_resources({"GPU": 0.0, **ray.cluster_resources()}, device, workers, cpus_per_worker)


def worker_resources(available: dict, device: str, workers: int, cpus_per_worker: float | None) -> dict:
    """Ray resource requests of one of ``workers`` actors on a cluster offering ``available`` resources.

    ``available`` is `ray.cluster_resources()` or `ntkdist.cluster.runtime.cluster_resources` (a GPU count that
    could not be determined is absent, and then not checked). A GPU worker takes one GPU; a CPU worker takes
    ``cpus_per_worker``, or an equal share of the CPUs.

    Raises
    ------
    ConfigError
        Naming the ``[cluster]`` key and the fix: device = "gpu" on a cluster without GPUs, more GPU workers than
        GPUs, or more CPUs asked in all (``cpus_per_worker`` × workers) than the cluster has. Without
        ``cpus_per_worker``, CPU workers share the CPUs equally, fractions of a CPU included (the default two
        workers also run on a one-core machine).
    """
    workers = int(workers)
    if workers < 1:
        raise ConfigError(f"[cluster] workers: must be ≥ 1, got {workers}")
    known_gpus = "GPU" in available
    gpus = int(available.get("GPU", 0))
    cpus = float(available.get("CPU", 1))
    use_gpu = device == "gpu" or (device == "auto" and gpus > 0)
    if use_gpu:
        if known_gpus and gpus == 0:
            raise ConfigError("[cluster] device: \"gpu\" but the Ray cluster has no GPUs; use device = \"auto\" "
                              "or \"cpu\", or connect [cluster] address to a cluster with GPUs")
        if known_gpus and workers > gpus:
            raise ConfigError(f"[cluster] workers: {workers} GPU workers asked but the Ray cluster has {gpus} GPU"
                              f"{'s' if gpus != 1 else ''}; set workers ≤ {gpus} (one actor per GPU)")
        cpu_share = cpus_per_worker or max(1.0, min(4.0, cpus / workers))
        return {"num_gpus": 1, "num_cpus": min(cpu_share, cpus / workers)}
    share = cpus_per_worker or cpus / workers
    if share * workers > cpus + 1e-9:
        raise ConfigError(f"[cluster] cpus_per_worker: {workers} workers × {share:g} CPUs exceeds the Ray "
                          f"cluster's {cpus:g} CPUs; lower workers or cpus_per_worker")
    return {"num_cpus": share}


def build_gram(location, *, net: MLP, kind: str, workers: int, device: str = "auto",
               cpus_per_worker: float | None = None, per_task: int = BLOCKS_PER_TASK, width=None,
               seed: int = 0, sketch_rank: int | None = None, sketch_seed: int = 0, progress=None) -> BuildReport:
    """Compute every missing upper block of the store's Gram matrix with a pool of Ray actors.

    Ray must already be initialised (see `ray_session`). Blocks already in the manifest are skipped, so calling
    this again after a crash resumes the build. ``kind`` is "ntk" or "nngp" (infinite width), or
    "empirical_ntk"/"empirical_nngp" for the network of hidden ``width`` drawn from ``seed``.

    With ``sketch_rank`` r, Y = K·Ω for the Gaussian Ω of ``sketch_seed`` (`sketch_omega`) is gathered as the
    blocks are written and stored in ``sketch/`` (`read_sketch`), for single-pass Nyström (Tropp, Yurtsever,
    Udell & Cevher 2017) at no extra pass over K. Blocks already stored but not in the sketch are read back and
    added; none is added twice (module docstring).

    The pool survives lost workers and nodes (`ntkdist.cluster.dispatch`); finished blocks are recorded in
    batches, and always before this returns or raises (`ntkdist.cluster.recording`). ``progress``, if given,
    has ``start(total_blocks, done_blocks)``, ``advance(blocks, entries, nbytes)`` (as results arrive) and
    ``close()`` (called however the build ends).

    Returns
    -------
    BuildReport

    Raises
    ------
    StoreError
        If a worker cannot write to the store (full disk, no permission, …): fix it and re-run.
    ClusterError
        If no worker is left that can run the remaining blocks.
    """
    store = RunStore.open(location, mode="r+")  # the coordinator records finished blocks
    missing = store.missing_blocks()
    total = len(store.upper_blocks())
    report = BuildReport(skipped=total - len(missing))
    sketch = None if sketch_rank is None else _SketchAccumulator(store, sketch_rank, sketch_seed)
    unsketched = [] if sketch is None else sketch.unsketched(store.finished_blocks())
    tasks = [("build", t) for t in plan_tasks(missing, per_task)]
    tasks += [("sketch_stored", t) for t in plan_tasks(unsketched, per_task)]
    if progress is not None:
        progress.start(total, report.skipped)
    try:
        if tasks:
            recorder = BlockRecorder(store, report, sketch=sketch, progress=progress, total=len(missing))
            start_actor = functools.partial(
                _start_actor, str(location), net=net, kind=kind, device=device, width=width, seed=seed, sketch=sketch,
                resources=resources_per_worker(device, max(1, min(workers, len(tasks))), cpus_per_worker))
            _run_pool(tasks, recorder, report, start_actor, workers=max(1, min(workers, len(tasks))))
    finally:
        if progress is not None:
            progress.close()
    _report_sketch(report, sketch)
    return report


def _run_pool(tasks: list, recorder: BlockRecorder, report: BuildReport, start_actor, *, workers: int) -> None:
    """Start the actors, run the tasks on them, record what they built (also on failure) and stop them."""
    slots = [Slot(start_actor()) for _ in range(workers)]
    resources = start_actor.keywords["resources"]
    pool = TaskPool(slots, start_actor=start_actor, has_room=lambda: cluster_has_room(resources))
    start = ready = time.perf_counter()
    try:
        report.workers = get([slot.actor.describe.remote() for slot in slots])
        ready = time.perf_counter()
        for slot, info in zip(slots, report.workers):
            slot.info = info
            log.info("worker pid %s on node %s: %s, %s thread(s)", info["pid"], str(info["node"])[:12],
                     info["note"], info["threads"])
        pool.run(tasks, recorder.add)
        report.workers = pool.live_infos()
    except BaseException:
        recorder.close_after_failure()  # keeps what was written; the build's own error is the one to report
        raise
    else:
        recorder.close()
    finally:
        pool.kill_all()
        report.seconds = time.perf_counter() - start
        report.block_seconds = time.perf_counter() - ready
        report.requeued, report.restarts, report.replaced = (
            pool.counts.requeued, pool.counts.restarts, pool.counts.replaced)
        if report.requeued:
            log.warning("the pool lost workers: %d block(s) requeued, %d actor restart(s), %d actor(s) replaced",
                        report.requeued, report.restarts, report.replaced)


#: Ray restarts a crashed actor (its process killed, its node lost) up to this many times, on any node with room;
#: the driver requeues the blocks it lost (`TaskPool`). An actor that died this often is dropped and replaced by
#: a fresh one while the cluster has room, so a sick node cannot keep a slot forever.
MAX_RESTARTS = 3


def _start_actor(location: str, *, net: MLP, kind: str, device: str, width, seed: int, sketch, resources: dict):
    """One `GramBlockWorker` actor with ``resources``; Ray never retries its tasks (the driver requeues them)."""
    import ray

    threads = max(1, int(resources["num_cpus"]))
    sketch_args = None if sketch is None else (sketch.rank, sketch.seed)
    return ray.remote(GramBlockWorker).options(max_restarts=MAX_RESTARTS, max_task_retries=0, **resources).remote(
        location, net, kind, device, threads, width, seed, sketch_args)


def cluster_has_room(resources: dict) -> bool:
    """Whether the Ray cluster has the CPUs and GPUs for one more actor of this shape free now."""
    import ray

    free = ray.available_resources()
    return (free.get("CPU", 0.0) >= resources.get("num_cpus", 0.0) - 1e-9
            and free.get("GPU", 0.0) >= resources.get("num_gpus", 0.0) - 1e-9)


def _report_sketch(report: BuildReport, sketch) -> None:
    if sketch is not None:
        report.sketch = {"rank": sketch.rank, "seed": sketch.seed, "added": sketch.added,
                         "complete": sketch.complete}
