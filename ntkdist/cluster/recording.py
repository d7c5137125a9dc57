"""The build's coordinator side of a finished task: counting it, reporting progress, recording it in batches.

Workers only write a block's bytes; the driver records them in the manifest (`RunStore.record_blocks`, one
whole-chunk rewrite per call). Recording each task's blocks alone would rewrite the manifest once per task, so the
driver collects them and records a batch every `RECORD_SECONDS` or `RECORD_BLOCKS` blocks, and always when the
build ends, failed builds included: a block whose bytes are written but whose record was lost in a crash is
merely computed again. The ride-along sketch takes a block only after the manifest records it, so its mask
never holds a block the manifest lacks (`builder` module docstring).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..errors import StoreError
from ..store import BlockRecord, RunStore

log = logging.getLogger("ntkdist.cluster")

#: The driver records finished blocks at least this often…
RECORD_SECONDS = 2.0
#: …or as soon as this many are waiting.
RECORD_BLOCKS = 64
#: The ride-along sketch is checkpointed at least this often (and when the build ends or fails).
SKETCH_CHECKPOINT_SECONDS = 30.0


def block_entries(store: RunStore, i: int, j: int) -> int:
    """Gram entries an upper block stands for in the stored matrix (both triangles)."""
    rows, cols = store.block_slice(i), store.block_slice(j)
    size = (rows.stop - rows.start) * (cols.stop - cols.start)
    return size if i == j else 2 * size


class BlockRecorder:
    """Takes each task's result as it arrives: counts it in the report, tells ``progress``, records in batches.

    ``progress`` is None or has ``advance(blocks, entries, nbytes)``, called for the blocks a task built (bytes as
    written to the store, both triangles). ``sketch`` is the build's `_SketchAccumulator`, or None.
    """

    def __init__(self, store: RunStore, report, *, sketch=None, progress=None, total: int = 0):
        self._store, self._report, self._sketch, self._progress = store, report, sketch, progress
        self._itemsize = np.dtype(store.dtype).itemsize
        self._total = total
        self._pending: list[dict] = []
        self._last_record = self._last_checkpoint = time.monotonic()

    def add(self, records: list[dict]) -> None:
        built = [r for r in records if r["built"]]
        entries = sum(block_entries(self._store, *r["block"]) for r in built)
        self._report.computed += len(built)
        self._report.entries += entries
        self._report.computed_blocks.extend(tuple(r["block"]) for r in built)
        if self._progress is not None and built:
            self._progress.advance(len(built), entries, entries * self._itemsize)
        self._pending.extend(records)
        waiting = sum(r["built"] for r in self._pending)
        if waiting >= RECORD_BLOCKS or time.monotonic() - self._last_record >= RECORD_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Record the waiting blocks in the manifest, then add them to the sketch."""
        pending, self._pending = self._pending, []
        built = [r for r in pending if r["built"]]
        try:
            self._store.record_blocks(BlockRecord(*r["block"], r["crc32"], r["sum_squares"]) for r in built)
        except OSError as exc:
            raise StoreError(f"{self._store.location}: recording {len(built)} finished block(s) in the manifest failed: "
                             f"{type(exc).__name__}: {exc}. Fix it and re-run: blocks recorded before are kept, "
                             "these are computed again") from exc
        self._last_record = time.monotonic()
        if built:
            log.info("recorded %d block(s); %d/%d built", len(built), self._report.computed, self._total)
        if self._sketch is None:
            return
        for r in pending:
            self._sketch.add(*r["block"], r["sketch"])
        if time.monotonic() - self._last_checkpoint > SKETCH_CHECKPOINT_SECONDS:
            self._sketch.checkpoint()
            self._last_checkpoint = time.monotonic()

    def close(self) -> None:
        """Record what is waiting and checkpoint the sketch."""
        self.flush()
        if self._sketch is not None:
            self._sketch.checkpoint()

    def close_after_failure(self) -> None:
        """`close` while the build fails: a failure here (the same full disk, say) is logged, not raised, so the
        build's own error stays the one reported."""
        try:
            self.close()
        except Exception as exc:  # noqa: BLE001 - any: the error already propagating matters more
            log.error("could not record the last finished blocks (they will be computed again): %s", exc)
