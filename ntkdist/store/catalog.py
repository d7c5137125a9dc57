"""The runs under a root, one line each (what ``ntkdist ls`` prints), and a run's arrays as plain files
(what ``ntkdist export`` writes).

A run store is a zarr group whose attributes carry ntkdist's format (`RunStore.open` decides); the listing looks
for them below a local directory (at any depth, never inside a store) or one level below an ``s3://`` prefix (an
object store has no directories to walk, and listing a whole bucket can take minutes). A store that cannot be
read is listed with the reason rather than ending the listing.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import StoreError
from .location import is_remote, normalize_location, object_filesystem, storage_errors
from .run_store import STAGES, RunStore

#: Spectrum variables a listing summarises, when the run has them.
_SPECTRUM_SCALARS = ("trace", "effective_rank", "lambda_min", "lambda_min_error")


@dataclass(frozen=True)
class RunSummary:
    """One run store as ``ntkdist ls`` shows it. ``status`` is the last stage recorded after the inputs (or "building
    I/J blocks", "prepared", "created", "unreadable: why"); ``spectrum`` has λ_1, the number of eigenvalues, and what of
    `_SPECTRUM_SCALARS` the run stored (None before the solve stage)."""

    location: str
    status: str
    n: int | None = None
    dim: int | None = None
    network: str | None = None
    kind: str | None = None
    dtype: str | None = None
    created: str | None = None
    blocks_written: int | None = None
    blocks_total: int | None = None
    spectrum: dict | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def describe_network(network: dict) -> str:
    """``relu × 3, w 2, b 0`` from a store's recorded [network] section."""
    return (f"{network.get('activation', '?')} × {network.get('depth', '?')}, w {network.get('weight_var', '?'):g}, "
            f"b {network.get('bias_var', 0.0):g}")


def summarize_run(store: RunStore) -> RunSummary:
    """What a listing shows of one open store (reads its attributes, its manifest and the spectrum's scalars)."""
    meta = store.meta
    stages = meta.get("stages", {})
    done = [name for name in STAGES if name in stages]
    written = int(store.finished_blocks().sum())
    total = len(store.upper_blocks())
    if done and done[-1] != "prepare":
        status = done[-1]
    elif written:
        status = f"building {written}/{total} blocks"
    else:
        status = "prepared" if done else "created"
    config = store.config
    return RunSummary(
        location=store.location, status=status, n=store.n, dim=store.dim,
        network=describe_network(config.get("network", {})), kind=config.get("kernel", {}).get("kind", "ntk"),
        dtype=store.dtype, created=meta.get("created"), blocks_written=written, blocks_total=total,
        spectrum=_spectrum_summary(store) if "solve" in stages else None)


def _spectrum_summary(store: RunStore) -> dict:
    spectrum = store.read_spectrum()
    values = spectrum["eigenvalue"].values
    summary = {"eigenvalues": int(values.size), "lambda_1": float(values[0]) if values.size else None}
    for name in _SPECTRUM_SCALARS:
        if name in spectrum:
            summary[name] = float(spectrum[name].values)
    return summary


def find_runs(root) -> list[RunSummary]:
    """Every run store under ``root`` (a local directory, or an ``s3://bucket/prefix``), sorted by location."""
    root = normalize_location(root)
    candidates = _remote_candidates(root) if is_remote(root) else _local_candidates(Path(root))
    return sorted((_summary_or_reason(location) for location in candidates), key=lambda run: run.location)


def _local_candidates(root: Path) -> list[str]:
    if not root.is_dir():
        raise StoreError(f"{root}: not a directory; give the folder that holds the run stores (default: the "
                         "storage root, $NTKDIST_STORAGE or ./storage)")
    found = []
    for folder, subfolders, files in os.walk(root):
        if "zarr.json" in files:
            found.append(folder)
            subfolders.clear()  # a store's own arrays are not runs
        else:
            subfolders.sort()
    return found


def _remote_candidates(root: str) -> list[str]:
    fs = object_filesystem()
    prefix = root.split("://", 1)[1].rstrip("/")
    with storage_errors(root):
        if fs.exists(f"{prefix}/zarr.json"):
            return [root]
        entries = fs.ls(prefix, detail=True)
    return [f"s3://{entry['name']}" for entry in entries
            if entry["type"] == "directory" and fs.exists(f"{entry['name']}/zarr.json")]


def _summary_or_reason(location: str) -> RunSummary:
    try:
        return summarize_run(RunStore.open(location))
    except (StoreError, OSError, KeyError, ValueError) as exc:
        return RunSummary(location=location, status=f"unreadable: {' '.join(str(exc).split())}")


def export_npy(store: RunStore, directory, *, gram: bool = True) -> list[Path]:
    """The run's arrays as ``.npy`` files in ``directory``: inputs, the spectrum's variables, and (with
    ``gram``) the Gram matrix, written block row by block row into a memory-mapped file (the driver never holds
    it whole). Returns the files written. ``numpy.load(path, mmap_mode="r")`` reads them without pickle."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = [_save(directory / "inputs.npy", store.inputs[:])]
    if "solve" in store.meta.get("stages", {}):
        spectrum = store.read_spectrum()
        for name in spectrum.data_vars:
            written.append(_save(directory / f"{name}.npy", spectrum[name].values))
    if gram:
        missing = store.missing_blocks()
        if missing:
            raise StoreError(f"{store.location}: the Gram matrix is not complete ({len(missing)} "
                             "blocks missing); finish the build with `ntkdist run`, or export without it (--no-gram)")
        path = directory / "gram.npy"
        out = np.lib.format.open_memmap(path, mode="w+", dtype=store.gram.dtype, shape=(store.n, store.n))
        for i in range(store.n_blocks):
            rows = store.block_slice(i)
            out[rows] = store.gram[rows]
        out.flush()
        del out
        written.append(path)
    return written


def _save(path: Path, values) -> Path:
    np.save(path, np.asarray(values), allow_pickle=False)
    return path
