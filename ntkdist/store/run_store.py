"""One run's zarr v3 group: its inputs, its Gram matrix, the manifest of finished blocks, and its spectrum.

Layout (see ``storage/README.md`` for the reader's view)::

    <run>.zarr/
      zarr.json          group attrs["ntkdist"]: format, config, fingerprint, versions, stage records,
                         gram_error_bound (‖K_stored − K‖₂ ≤ it; 0 for float64) once the build is done
      inputs             (N, d) float64, chunks (block, d)
      gram               (N, N) float64|float32, chunks (block, block), fill NaN; the full symmetric matrix
      manifest/blocks    (nb, nb) int64, one chunk, fill −1; CRC-32 of each finished upper block I ≤ J
      manifest/sum_squares (nb, nb) float64, one chunk, fill NaN; Σ K_ij² of each finished upper block as stored
                         (`chunk_io.block_sum_squares`)
      spectrum/          xarray Dataset (consolidated): eigenvalue(mode), …

Writes are chunk-aligned and idempotent: a block is written as its chunk and its mirror's chunk by a worker
(`RunStore.write_block`), and only afterwards does the coordinator record it, in batches (`RunStore.record_blocks`:
one whole-chunk rewrite of the manifest, atomic on a local disk and on object storage). A crash never leaves a
block that counts as finished without its bytes, and finding what is missing reads one small array, never a
listing of the store. A stage is
recorded as complete in the group attrs after its last write, so nothing half-written looks complete.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np
import zarr
from zarr.codecs import BytesCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from ..errors import StoreError
from ..linalg.operator import float32_storage_error_from_squares
from .chunk_io import block_checksum, block_sum_squares, direct_write_buffer, transposed, write_file_atomically
from .lease import Lease
from .location import (LEASE, clear_keeping_lease, is_remote, normalize_location, storage_errors, store_exists,
                       zarr_store)

FORMAT = "ntkdist-run"
FORMAT_VERSION = 2
INPUTS = "inputs"
GRAM = "gram"
MANIFEST = "manifest/blocks"
SUM_SQUARES = "manifest/sum_squares"
#: The key of the store's ``versions`` that records the revision of the kernel arithmetic that built it.
KERNEL_ARITHMETIC = "kernel_arithmetic"
SPECTRUM = "spectrum"
#: Key of the ``ntkdist`` group attrs that holds the bound on ‖K_stored − K‖₂ (`RunStore.record_gram_error_bound`).
GRAM_ERROR_BOUND = "gram_error_bound"
STAGES = ("prepare", "build", "solve", "compare", "report")
_NOT_DONE = -1
#: Codecs of ``gram`` chunks: none, since NTK values are smooth floats that zstd barely shrinks while it costs
#: write and read time (measured by ``bench/layout.py``, numbers in storage/README.md). Small arrays keep zarr's
#: default (zstd).
GRAM_COMPRESSORS = None
#: Attributes written once, when the store is created, and never changed (an overwrite makes a new store).
_FIXED = ("format", "format_version", "created", "n", "dim", "block", "dtype", "fingerprint", "config", "versions")


class BlockRecord(NamedTuple):
    """What the manifest records of one written upper block (I ≤ J): its CRC-32 and Σ K_ij² of its values as
    stored (float64 sum; the float32 storage bound is built from these)."""

    i: int
    j: int
    crc32: int
    sum_squares: float


@contextlib.contextmanager
def _quiet_consolidation():
    """Silence zarr's note that consolidated metadata is outside the v3 spec (we rely on zarr-python's support)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        # The writer's lease (lease.json) is an object of ours beside the hierarchy, not a zarr node.
        warnings.filterwarnings("ignore", message=f"Object at {LEASE} is not recognized")
        yield


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class RunStore:
    """Access to one run's store. Create with `RunStore.create`, open with `RunStore.open`."""

    def __init__(self, group: zarr.Group, location: str):
        self._group = group
        #: Where the store lives: an absolute local path or an object-store URL.
        self.location = location
        # What never changes is read once; the stage records are read from storage on every call (`meta`).
        self._fixed = {key: value for key, value in self._read_meta().items() if key in _FIXED}

    # -- lifecycle ---------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, location, *, n: int, dim: int, block: int, dtype: str, config: dict, fingerprint: str,
               versions: dict, overwrite: bool = False) -> "RunStore":
        """Create an empty run store (inputs, gram, manifest) and record the configuration.

        Raises
        ------
        StoreError
            If something already exists at ``location`` and ``overwrite`` is False, or the object store refuses.
        """
        location = normalize_location(location)
        if store_exists(location) and not overwrite:
            raise StoreError(f"[run] store: {location} already exists; remove it, choose another store, "
                             "or pass --overwrite")
        if not is_remote(location):
            Path(location).parent.mkdir(parents=True, exist_ok=True)
        clear_keeping_lease(location)  # the writer that replaces a store keeps its lease
        with storage_errors(location):
            group = zarr.open_group(zarr_store(location), mode="a", zarr_format=3)
        nb = -(-n // block)
        group.create_array(INPUTS, shape=(n, dim), chunks=(min(block, n), dim), dtype="float64")
        group.create_array(GRAM, shape=(n, n), chunks=(min(block, n),) * 2, dtype=dtype, fill_value=np.nan,
                           compressors=GRAM_COMPRESSORS)
        # One chunk each: the coordinator rewrites them whole, a batch of blocks at a time (`record_blocks`).
        group.create_array(MANIFEST, shape=(nb, nb), chunks=(nb, nb), dtype="int64", fill_value=_NOT_DONE)
        group.create_array(SUM_SQUARES, shape=(nb, nb), chunks=(nb, nb), dtype="float64", fill_value=np.nan)
        group.attrs.update({
            "ntkdist": {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "created": _now(),
                "n": n,
                "dim": dim,
                "block": block,
                "dtype": dtype,
                "fingerprint": fingerprint,
                "config": config,
                "versions": versions,
                "stages": {},
            }
        })
        store = cls(group, location)
        store._consolidate()
        return store

    @classmethod
    def open(cls, location, mode: str = "r") -> "RunStore":
        """Open an existing run store (``mode`` "r" or "r+").

        Raises
        ------
        StoreError
            If there is no ntkdist run store at ``location``, or the object store refuses.
        """
        location = normalize_location(location)
        with storage_errors(location):
            store = zarr_store(location, read_only=mode == "r")
            if not sync(store.exists("zarr.json")):
                store_exists(location)  # a missing bucket or refused credentials say so, rather than "no store"
                raise StoreError(f"{location}: no run store here; run `ntkdist run CONFIG.toml` to create one")
            group = zarr.open_group(store, mode=mode)
        meta = group.attrs.asdict().get("ntkdist", {})
        if meta.get("format") != FORMAT:
            raise StoreError(f"{location}: a zarr group, but not an ntkdist run store (no ntkdist attrs)")
        if meta.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{location}: store format version {meta.get('format_version')} is not {FORMAT_VERSION}; "
                "re-run it with this version of ntkdist"
            )
        return cls(group, location)

    def lease(self, **timing) -> Lease:
        """The writer's lease of this store, to hold while writing: ``with store.lease(): ...``.

        Raises `StoreError` on entry if another live writer holds it (see `ntkdist.store.lease`); ``timing``:
        ``heartbeat_seconds``, ``stale_after``.
        """
        return Lease(self.location, **timing)

    # -- metadata ----------------------------------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        """The store's ``ntkdist`` attributes as they are in storage now: stages recorded by another handle or
        process since this one was opened included (a zarr group caches the attributes it was opened with)."""
        return self._read_meta()

    def _read_meta(self) -> dict[str, Any]:
        # One small read of the group's zarr.json: straight from the file for a local store (tens of µs), else
        # through the group's own store (object storage).
        store = self._group.store
        key = f"{self._group.path}/zarr.json" if self._group.path else "zarr.json"
        if isinstance(store, zarr.storage.LocalStore):
            try:
                raw = (Path(store.root) / key).read_bytes()
            except FileNotFoundError:
                raw = None
        else:
            buffer = sync(store.get(key, prototype=default_buffer_prototype()))
            raw = None if buffer is None else buffer.to_bytes()
        if raw is None:
            raise StoreError(f"{self.location}: the run store has gone (no zarr.json); run the flow again to "
                             "recreate it")
        return json.loads(raw)["attributes"]["ntkdist"]

    @property
    def n(self) -> int:
        return int(self._fixed["n"])

    @property
    def dim(self) -> int:
        return int(self._fixed["dim"])

    @property
    def block(self) -> int:
        return int(self._fixed["block"])

    @property
    def n_blocks(self) -> int:
        return -(-self.n // self.block)

    @property
    def config(self) -> dict:
        return self._fixed["config"]

    @property
    def fingerprint(self) -> str:
        return self._fixed["fingerprint"]

    @property
    def kernel_arithmetic(self) -> str | None:
        """The revision of the kernel engines' arithmetic that built this store (``versions`` key
        `KERNEL_ARITHMETIC`; None when not recorded, as by versions before the key existed)."""
        return (self._fixed.get("versions") or {}).get(KERNEL_ARITHMETIC)

    @property
    def dtype(self) -> str:
        """The stored Gram matrix's dtype name ("float64" or "float32")."""
        return self._fixed["dtype"]

    def stage(self, name: str) -> dict | None:
        """The record of a completed stage, or None."""
        return self.meta["stages"].get(name)

    def mark_stage(self, name: str, **info) -> None:
        """Record a stage as complete (call after its last write)."""
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}")
        meta = self.meta
        meta["stages"] = {**meta["stages"], name: {"completed": _now(), **info}}
        self._write_meta(meta)

    def clear_stages(self, *names: str) -> None:
        """Forget stage records (before re-doing a stage, so a crash in between is not read as complete)."""
        meta = self.meta
        meta["stages"] = {k: v for k, v in meta["stages"].items() if k not in names}
        self._write_meta(meta)

    def _write_meta(self, meta: dict) -> None:
        self._group.attrs.update({"ntkdist": meta})
        self._consolidate()

    def _consolidate(self) -> None:
        # xarray opens ``spectrum`` through the root's consolidated metadata; a root that changed since its
        # last consolidation would send it to a slow fallback with a warning, so re-consolidate on each change.
        with _quiet_consolidation():
            zarr.consolidate_metadata(self._group.store, zarr_format=3)

    def open_subgroup(self, name: str, mode: str = "r") -> zarr.Group | None:
        """A group below the root (such as the ride-along ``sketch``), or None if ``mode`` is "r"/"r+" and there is
        none; mode "w" creates it afresh. Opened without consolidated metadata, so it sees its writes at once."""
        store = self._group.store
        if mode != "w" and not sync(store.exists(f"{name}/zarr.json")):
            return None
        return zarr.open_group(store, path=name, mode=mode, zarr_format=3, use_consolidated=False)

    # -- arrays ------------------------------------------------------------------------------------------------
    @cached_property
    def inputs(self) -> zarr.Array:
        return self._group[INPUTS]

    @cached_property
    def gram(self) -> zarr.Array:
        return self._group[GRAM]

    @cached_property
    def manifest(self) -> zarr.Array:
        return self._group[MANIFEST]

    def block_slice(self, index: int) -> slice:
        return slice(index * self.block, min((index + 1) * self.block, self.n))

    def upper_blocks(self) -> list[tuple[int, int]]:
        nb = self.n_blocks
        return [(i, j) for i in range(nb) for j in range(i, nb)]

    def finished_blocks(self) -> np.ndarray:
        """Boolean (nb, nb) matrix: True where the manifest records the upper block (I, J) as written."""
        return self.manifest[:] != _NOT_DONE

    def missing_blocks(self) -> list[tuple[int, int]]:
        done = self.finished_blocks()
        return [(i, j) for i, j in self.upper_blocks() if not done[i, j]]

    @cached_property
    def sum_squares(self) -> zarr.Array:
        return self._group[SUM_SQUARES]

    def write_block(self, i: int, j: int, values: np.ndarray) -> BlockRecord:
        """Write the upper block (I, J) and its mirror (J, I); returns what the manifest should record of it.

        The block does not count as finished until a `record_blocks` call records it (the coordinator's job).
        Each write covers whole chunks, so concurrent writers of different blocks never touch the same object.
        """
        if i > j:
            raise ValueError(f"write_block takes upper blocks (I ≤ J), got ({i}, {j})")
        rows, cols = self.block_slice(i), self.block_slice(j)
        expected = (rows.stop - rows.start, cols.stop - cols.start)
        if values.shape != expected:
            raise ValueError(f"block ({i}, {j}) has shape {values.shape}, expected {expected}")
        values = np.ascontiguousarray(values, dtype=self.gram.dtype)
        self._write_gram_chunk(i, j, values)
        if i != j:
            self._write_gram_chunk(j, i, values, transpose=True)
        return BlockRecord(i, j, block_checksum(values), block_sum_squares(values))

    def _write_gram_chunk(self, i: int, j: int, values: np.ndarray, *, transpose: bool = False) -> None:
        """Write block (I, J) of ``gram``, which is exactly its chunk (I, J): ``values``, or with ``transpose``
        its transpose (the mirror of block (J, I)).

        A full-size chunk of an uncompressed ``gram`` (the store's layout, `GRAM_COMPRESSORS`) is written as its
        bytes straight to its key: zarr's own path encodes (copies) the block first and then writes it through
        its IO thread, 33 ms for a 2048² float32 block on a local disk against 7 ms written directly, and a build
        writes every byte of the matrix once (BENCHMARKS.md, the build). The bytes are what zarr writes (the
        little-endian values in C order under ``c/I/J``). Edge chunks (zarr pads them to the chunk shape) and
        any other codec go through zarr.
        """
        gram = self.gram
        rows, cols = self.block_slice(i), self.block_slice(j)
        store = self._group.store
        raw = values.shape[::-1 if transpose else 1] == gram.chunks and \
            gram.metadata.codecs == (BytesCodec(endian="little"),)
        if raw and transpose and isinstance(store, zarr.storage.LocalStore):
            values = transposed(values, out=direct_write_buffer(values.shape[::-1], values.dtype))
        elif transpose:
            values = transposed(values)
        if not raw:
            gram[rows, cols] = values
            return
        prefix = f"{self._group.path}/" if self._group.path else ""
        key = f"{prefix}{GRAM}/{gram.metadata.encode_chunk_key((i, j))}"
        values = np.ascontiguousarray(values, dtype=gram.dtype.newbyteorder("<"))
        if isinstance(store, zarr.storage.LocalStore):
            write_file_atomically(Path(store.root) / key, values)
        else:
            data = memoryview(values).cast("B")
            sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data)))

    def record_blocks(self, records: Iterable[BlockRecord]) -> None:
        """Record written blocks as finished: one read and one whole-chunk rewrite of each manifest array.

        Call only after the blocks' bytes are written (`write_block`). The rewrite is one object put, atomic on
        a local disk (zarr writes a temporary file and renames it) and on object storage.
        """
        records = list(records)
        if not records:
            return
        crcs, squares = self.manifest[:], self.sum_squares[:]
        for record in records:
            crcs[record.i, record.j] = record.crc32
            squares[record.i, record.j] = record.sum_squares
        # The sums first: a crash between the two writes leaves sums of blocks not yet recorded, which is harmless.
        self.sum_squares[:] = squares
        self.manifest[:] = crcs

    def forget_blocks(self, blocks: Iterable[tuple[int, int]]) -> None:
        """Mark upper blocks as not written (so the next build recomputes them; how a bad block is repaired).

        The recorded `gram_error_bound` goes too: it speaks of the complete matrix, and the build records it anew.
        """
        crcs = self.manifest[:]
        for i, j in blocks:
            crcs[i, j] = _NOT_DONE
        meta = self.meta
        if GRAM_ERROR_BOUND in meta:
            del meta[GRAM_ERROR_BOUND]
            self._write_meta(meta)  # before the manifest: a crash in between leaves no bound on a changed matrix
        self.manifest[:] = crcs

    def stored_sum_squares(self) -> float:
        """‖K_stored‖_F² from the manifest (both triangles), or NaN while a block is unrecorded."""
        squares = self.sum_squares[:]
        upper = np.triu(np.ones_like(squares, dtype=bool))
        if not np.isfinite(squares[upper]).all() or (self.manifest[:][upper] == _NOT_DONE).any():
            return float("nan")
        return float(2 * squares[upper].sum() - np.trace(squares))

    @property
    def gram_error_bound(self) -> float | None:
        """The recorded bound on ‖K_stored − K‖₂ (`record_gram_error_bound`), or None when none is recorded."""
        bound = self.meta.get(GRAM_ERROR_BOUND)
        return None if bound is None else float(bound)

    def record_gram_error_bound(self) -> float:
        """Record and return a rigorous bound on ‖K_stored − K‖₂ of the complete Gram matrix, K being the float64
        values the workers computed: 0 for a float64 store; for float32, `float32_storage_error_from_squares` of
        the manifest's Σ K_ij² as stored (docs/theory.md §9.3), so no block is read again. Solvers add it to every
        eigenvalue error; readers find it in the group attrs as ``ntkdist.gram_error_bound``.

        Raises
        ------
        StoreError
            If a block is not recorded in the manifest yet (the bound speaks of the whole matrix).
        """
        if self.dtype == "float64":
            bound = 0.0
        else:
            squares = self.stored_sum_squares()
            if not np.isfinite(squares):
                raise StoreError(f"{self.location}: the Gram matrix is incomplete or holds non-finite values; finish the "
                                 "build (re-run the same configuration) before recording its float32 error bound")
            bound = float32_storage_error_from_squares(squares, self.n * self.n)
        meta = self.meta
        meta[GRAM_ERROR_BOUND] = bound
        self._write_meta(meta)
        return bound

    def read_gram(self, dtype=np.float64) -> np.ndarray:
        """The whole stored Gram matrix in memory (N² numbers: only for the exact solver at small N).

        Read one block row at a time into one preallocated array, so the peak is the matrix plus one block row
        (a plain ``gram[:]`` of a float32 store would hold the float32 copy and its float64 promotion at once).
        Raises `StoreError` if a block was never written (its chunks read as NaN).
        """
        out = np.empty((self.n, self.n), dtype=dtype)
        for i in range(self.n_blocks):
            rows = self.block_slice(i)
            out[rows] = self.gram[rows, :]
        if np.isnan(out[:, :1]).any() or np.isnan(np.diagonal(out)).any():
            raise StoreError(f"{self.location}: the Gram matrix has unwritten blocks; re-run the build to finish it")
        return out

    def diagonal(self) -> np.ndarray:
        """The diagonal K_ii of the stored Gram matrix (reads only the diagonal blocks), as float64."""
        out = np.empty(self.n)
        for i in range(self.n_blocks):
            rows = self.block_slice(i)
            out[rows] = np.diagonal(self.gram[rows, rows])
        return out

    # -- spectrum ----------------------------------------------------------------------------------------------
    def write_spectrum(self, dataset) -> None:
        """Write (replace) the ``spectrum`` group from an xarray Dataset, with consolidated metadata so that
        ``xarray.open_zarr(store, group="spectrum")`` opens it without a fallback warning."""
        with _quiet_consolidation():
            dataset.to_zarr(self._group.store, group=SPECTRUM, mode="w", zarr_format=3, consolidated=True)

    def delete_spectrum(self) -> None:
        """Remove the ``spectrum`` group (before a solve is redone, so a crash cannot leave the old or a half-written
        spectrum behind looking current)."""
        self.delete_subgroup(SPECTRUM)

    def delete_subgroup(self, name: str) -> None:
        """Remove a group below the root (``spectrum``, the ride-along ``sketch``) if it is there, and re-consolidate
        so that readers of the root's consolidated metadata no longer see it."""
        # Through this handle's own group when it lists the subgroup, so that the handle's view drops it too; a group
        # written after the handle was opened (the sketch) through a fresh, unconsolidated view of the root.
        root = self._group if name in self._group else zarr.open_group(
            self._group.store, mode="r+", zarr_format=3, use_consolidated=False)
        if name in root:
            del root[name]
            self._consolidate()

    def add_to_spectrum(self, additions, *, replace_prefix: str) -> None:
        """Add the variables, coordinates and attrs of ``additions`` to the stored spectrum.

        Appending (zarr mode "a") leaves the variables already there (``eigenvalue``) untouched, so a crash here
        cannot lose the solve's result. Only when variables named ``replace_prefix…`` are already stored (an
        earlier attempt that crashed before its stage was recorded) is the group rewritten whole, without them.
        """
        import xarray as xr

        current = self.read_spectrum().load()
        stale = [name for name in current.variables if str(name).startswith(replace_prefix)]
        if stale:
            self.write_spectrum(xr.merge([additions, current.drop_vars(stale)], combine_attrs="override"))
            return
        with _quiet_consolidation():
            additions.to_zarr(self._group.store, group=SPECTRUM, mode="a", zarr_format=3, consolidated=True)

    def read_spectrum(self):
        import xarray as xr

        if SPECTRUM not in self._group:
            raise StoreError(f"{self.location}: has no spectrum yet; run the solve stage (`ntkdist run`) first")
        return xr.open_zarr(self._group.store, group=SPECTRUM)
