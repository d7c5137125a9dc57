"""`ntkdist verify`: re-check a stored Gram matrix over a pool of Ray actors, and repair the blocks that fail.

Each actor checks its share of the upper blocks (I ≤ J) against what the coordinator recorded when the block was
built (`ntkdist.store.RunStore.record_blocks`):

- the block reads back (a damaged compressed chunk fails to decode) and holds no NaN (the fill value of a chunk
  that is missing);
- its CRC-32 (`ntkdist.store.block_checksum`) and its Σ K_ij² equal the manifest's;
- its mirror (J, I) is its exact transpose;
- the entries at a seeded random sample of rows × columns equal a fresh kernel evaluation of the same network
  on the stored inputs (`sample_indices`, `entry_tolerance`). This is what catches a block that was written
  wrong and recorded consistently with its wrong bytes.

The CPU engine is bit-identical for any block shape: an entry K(x_a, x_b) of an off-diagonal block computed
alone equals the one computed with its whole block, and on a diagonal block so does the symmetric evaluation of
a subset (each pair computed with the lower index as the row, as the builder does). A float64 store built on CPUs
by this revision of the kernel arithmetic (the store's ``kernel_arithmetic``, `ntkdist.kernels.ARITHMETIC_REVISION`)
is therefore compared exactly; one built on GPUs or by another revision within `GPU_RELATIVE_TOLERANCE`. Repair
forgets the bad blocks in the manifest and rebuilds exactly those with `ntkdist.cluster.build_gram`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..kernels import ARITHMETIC_REVISION, MLP, empirical_gram_block, gram_block, sample_weights
from ..store import RunStore, block_checksum, sum_squares_matches
from .builder import BLOCKS_PER_TASK, SKETCH, BuildReport, build_gram, resources_per_worker

#: Sampled rows (and the same columns): SAMPLE² / 2 entries of the upper triangle are recomputed.
DEFAULT_SAMPLE = 256
#: Relative half-ulp of float32 (round to nearest): |fl32(k) − k| ≤ 2⁻²⁴ |k|.
FLOAT32_ROUNDING = 2.0 ** -24
#: A store built on GPUs, or by another revision of the kernel arithmetic, is compared within this tolerance,
#: relative to the largest |k| of the sampled block: the GPU's panel GEMMs are shaped by the block, so their sums
#: are ordered differently than on the CPU that verifies, and another revision rounds differently. Every engine and
#: revision is within 4(depth + 1) units of rounding of √(K_ii K_jj) of the exact kernel (README, "Conventions"),
#: a few 1e-15; 2⁻³⁶ ≈ 1.5e-11 leaves a margin of 10³–10⁴ for that, and is still 10⁴ below float32 rounding. Not
#: yet measured on a GPU store.
GPU_RELATIVE_TOLERANCE = 2.0 ** -36
_NOT_RECORDED = -1


@dataclass(frozen=True)
class BadBlock:
    """An upper block (I, J) that failed verification, and every reason found."""

    i: int
    j: int
    reasons: tuple[str, ...]

    def __str__(self) -> str:
        return f"block ({self.i}, {self.j}): " + "; ".join(self.reasons)


@dataclass
class VerifyReport:
    """What `verify_store` checked and what it found."""

    store: str
    blocks: int
    sampled_entries: int
    comparison: str
    bad: list[BadBlock] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.bad

    @property
    def bad_blocks(self) -> list[tuple[int, int]]:
        return [(b.i, b.j) for b in self.bad]

    def summary(self) -> str:
        """One line: the store, the blocks checked, the entries recomputed, and the verdict."""
        verdict = "intact" if self.ok else f"{len(self.bad)} bad block{'s' if len(self.bad) != 1 else ''}"
        return (f"{self.store}: {verdict} — {self.blocks} upper blocks checked (CRC-32, Σ K², mirror, NaN), "
                f"{self.sampled_entries} sampled entries recomputed ({self.comparison}), {self.seconds:.1f} s")


def sample_indices(n: int, sample: int, seed: int) -> np.ndarray:
    """The sorted sample rows (also the sample columns): ``min(sample, n)`` distinct indices drawn by
    ``numpy.random.default_rng(seed)``, so every actor and every re-run sees the same entries."""
    if sample < 0:
        raise ValueError(f"sample: must be ≥ 0, got {sample}")
    return np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))


def entry_tolerance(store: RunStore) -> tuple[float, float, str]:
    """(relative tolerance per entry, relative tolerance of the block's largest |k|, description) for comparing
    stored entries with a fresh float64 evaluation on the CPU: exact for a float64 store built on CPUs by this
    revision of the kernel arithmetic (`ntkdist.kernels.ARITHMETIC_REVISION`). Another revision, or a store that
    does not record one, rounds differently: it is held to `GPU_RELATIVE_TOLERANCE` like a GPU build (the
    revisions differ by a few units of rounding of √(K_ii K_jj), README "Conventions")."""
    record = store.stage("build") or {}
    on_gpu = any(str(w.get("note", "")).startswith("gpu") for w in record.get("workers", []))
    other_arithmetic = store.kernel_arithmetic != str(ARITHMETIC_REVISION)
    per_entry = FLOAT32_ROUNDING if store.dtype == "float32" else 0.0
    per_block = GPU_RELATIVE_TOLERANCE if on_gpu or other_arithmetic else 0.0
    parts = ["exact"] if per_entry == per_block == 0.0 else []
    if per_entry:
        parts.append("within float32 rounding 2^-24·|k|")
    if per_block:
        why = ["built on GPU"] if on_gpu else []
        if other_arithmetic:
            why.append(f"kernel arithmetic {store.kernel_arithmetic or 'unrecorded'}, this is {ARITHMETIC_REVISION}")
        parts.append(f"within 2^-36·max|k| ({'; '.join(why)})")
    return per_entry, per_block, " and ".join(parts)


class BlockVerifier:
    """Checks blocks of one run store (runs as a Ray actor; a plain class for in-process use)."""

    def __init__(self, location: str, net: MLP, kind: str, width, seed: int, sample: np.ndarray, threads: int):
        self._store = RunStore.open(location)
        self._net, self._kind, self._threads = net, kind, max(1, int(threads))
        # Empirical kinds: the same network the builder drew from the seed (`GramBlockWorker`).
        self._sampled = (sample_weights(net, dim=self._store.dim, width=width, seed=seed)
                         if kind.startswith("empirical_") else None)
        self._sample = np.asarray(sample, dtype=np.int64)
        self._per_entry, self._per_block, _ = entry_tolerance(self._store)

    def check(self, blocks: list[tuple[int, int, int, float]]) -> list[BadBlock]:
        """Check upper blocks given as (I, J, manifest CRC-32, manifest Σ K²); returns those that fail."""
        bad = []
        for i, j, crc, squares in blocks:
            reasons = self._problems(i, j, crc, squares)
            if reasons:
                bad.append(BadBlock(i, j, tuple(reasons)))
        return bad

    def _problems(self, i: int, j: int, crc: int, squares: float) -> list[str]:
        if crc == _NOT_RECORDED:
            return ["not recorded as finished in the manifest (re-run the build, or --repair)"]
        rows, cols = self._store.block_slice(i), self._store.block_slice(j)
        try:
            upper = self._store.gram[rows, cols]
        except Exception as exc:  # a damaged chunk: the codec's own error, whatever it is
            return [f"its chunk cannot be read ({type(exc).__name__}: {exc})"]
        reasons = []
        if np.isnan(upper).any():
            reasons.append("holds NaN: its chunk is missing or was never written")
        if block_checksum(upper) != crc:
            reasons.append("does not match its CRC-32 in the manifest")
        if not sum_squares_matches(upper, squares):
            reasons.append("its sum of squares differs from manifest/sum_squares")
        if i != j:
            reasons.extend(self._mirror_problems(i, j, upper))
        if not reasons:
            reasons.extend(self._sample_problems(i, j, upper))
        return reasons

    def _mirror_problems(self, i: int, j: int, upper: np.ndarray) -> list[str]:
        try:
            mirror = self._store.gram[self._store.block_slice(j), self._store.block_slice(i)]
        except Exception as exc:
            return [f"its mirror ({j}, {i}) cannot be read ({type(exc).__name__}: {exc})"]
        if not np.array_equal(mirror, upper.T):
            return [f"its mirror ({j}, {i}) is not its exact transpose"]
        return []

    def _in_block(self, index: int) -> np.ndarray:
        part = self._store.block_slice(index)
        return self._sample[(self._sample >= part.start) & (self._sample < part.stop)]

    def _sample_problems(self, i: int, j: int, upper: np.ndarray) -> list[str]:
        """Compare the sampled entries of the block with a fresh evaluation (the module docstring says why the
        diagonal block is evaluated symmetrically)."""
        sample_rows, sample_cols = self._in_block(i), self._in_block(j)
        if not len(sample_rows) or not len(sample_cols):
            return []
        row0, col0 = self._store.block_slice(i).start, self._store.block_slice(j).start
        x_rows = self._store.inputs[self._store.block_slice(i)][sample_rows - row0]
        x_cols = None if i == j else self._store.inputs[self._store.block_slice(j)][sample_cols - col0]
        fresh = np.asarray(self._evaluate(x_rows, x_cols), dtype=np.float64)
        stored = upper[np.ix_(sample_rows - row0, sample_cols - col0)].astype(np.float64)
        allowed = self._per_entry * np.abs(fresh) + self._per_block * np.abs(fresh).max()
        wrong = ~(np.abs(stored - fresh) <= allowed)
        if not wrong.any():
            return []
        a, b = np.unravel_index(np.argmax(np.where(wrong, np.abs(stored - fresh), -np.inf)), wrong.shape)
        return [f"{int(wrong.sum())} of {wrong.size} sampled entries differ from a fresh kernel evaluation "
                f"(e.g. K[{sample_rows[a]}, {sample_cols[b]}] stored {stored[a, b]!r}, computed {fresh[a, b]!r})"]

    def _evaluate(self, x_rows, x_cols):
        if self._sampled is not None:
            return empirical_gram_block(x_rows, x_cols, params=self._sampled, kind=self._kind[len("empirical_"):])
        return gram_block(x_rows, x_cols, net=self._net, kind=self._kind, threads=self._threads)


def verify_store(path, *, net: MLP, kind: str, width=None, seed: int = 0, workers: int = 1,
                 sample: int = DEFAULT_SAMPLE, sample_seed: int = 0, per_task: int = BLOCKS_PER_TASK) -> VerifyReport:
    """Check every upper block of a stored Gram matrix with a pool of ``workers`` CPU actors (module docstring).

    Ray must already be initialised (`ntkdist.cluster.ray_session`). ``net``, ``kind``, ``width`` and ``seed``
    are those the store was built with (its recorded config); ``sample`` rows drawn from ``sample_seed``
    (`sample_indices`) give the entries recomputed.

    Returns
    -------
    VerifyReport
        Every bad block with its reasons, in block order.
    """
    import ray
    from ray.util import ActorPool

    start = time.perf_counter()
    store = RunStore.open(path)
    blocks = recorded_blocks(store)
    rows = sample_indices(store.n, sample, sample_seed)
    report = VerifyReport(store=str(path), blocks=len(blocks), sampled_entries=_upper_entries(store, rows),
                          comparison=entry_tolerance(store)[2])
    tasks = [blocks[k:k + per_task] for k in range(0, len(blocks), per_task)]
    resources = resources_per_worker("cpu", max(1, min(workers, len(tasks))), None)
    actor = ray.remote(BlockVerifier).options(**resources)
    actors = [actor.remote(str(path), net, kind, width, seed, rows, int(resources["num_cpus"]))
              for _ in range(max(1, min(workers, len(tasks))))]
    try:
        found = ActorPool(actors).map_unordered(lambda a, task: a.check.remote(task), tasks)
        report.bad = sorted((b for bad in found for b in bad), key=lambda b: (b.i, b.j))
    finally:
        for a in actors:
            ray.kill(a)
    report.seconds = time.perf_counter() - start
    return report


def recorded_blocks(store: RunStore) -> list[tuple[int, int, int, float]]:
    """(I, J, CRC-32, Σ K²) of every upper block, from one snapshot of the manifest (−1 and NaN: not recorded)."""
    crcs, squares = store.manifest[:], store.sum_squares[:]
    return [(i, j, int(crcs[i, j]), float(squares[i, j])) for i, j in store.upper_blocks()]


def verify_in_process(path, *, net: MLP, kind: str, width=None, seed: int = 0, sample: int = DEFAULT_SAMPLE,
                      sample_seed: int = 0) -> list[BadBlock]:
    """The checks of `verify_store` in this process, without Ray (a small store, or a test): the bad blocks."""
    store = RunStore.open(path)
    verifier = BlockVerifier(str(path), net, kind, width, seed, sample_indices(store.n, sample, sample_seed), 1)
    return verifier.check(recorded_blocks(store))


def _upper_entries(store: RunStore, rows: np.ndarray) -> int:
    """Sampled entries in the upper blocks: |S ∩ I|·|S ∩ J| summed over I ≤ J."""
    counts = np.bincount(rows // store.block, minlength=store.n_blocks)
    return int((counts.sum() ** 2 + (counts ** 2).sum()) // 2)


def repair_store(path, blocks: list[tuple[int, int]], *, net: MLP, kind: str, width=None, seed: int = 0,
                 workers: int = 1, device: str = "cpu") -> BuildReport:
    """Rebuild exactly the given upper blocks: forget them in the manifest, then `build_gram` computes what the
    manifest misses (those blocks, and any other block never recorded).

    What was computed from the bad blocks no longer describes the store, so when a block was rebuilt the records
    of the solve, compare and report stages are cleared (the next ``ntkdist run`` redoes them) and the ride-along
    sketch, whose Y summed the bad blocks, is removed.
    """
    store = RunStore.open(path, mode="r+")
    store.forget_blocks(blocks)
    rebuilt = build_gram(path, net=net, kind=kind, workers=workers, device=device, width=width, seed=seed)
    if rebuilt.computed:
        store.clear_stages("solve", "compare", "report")
        store.delete_subgroup(SKETCH)
    return rebuilt
