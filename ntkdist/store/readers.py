"""Entry points for people who analyse stored runs: open a run's arrays without knowing the layout."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from ..errors import StoreError
from .run_store import RunStore


def open_gram(path, *, coords: bool = False, require_complete: bool = True):
    """The stored Gram matrix of a run as a lazy `dask.array.Array` (N, N), one dask chunk per stored block.

    Parameters
    ----------
    path : path of the run's ``.zarr`` directory
    coords : bool
        Return an `xarray.DataArray` named ``gram`` instead, with dims (``sample_i``, ``sample_j``) and the integer
        sample indices 0 … N−1 as their coordinates (row i and column j are input row i and j of the store's
        ``inputs``), and the store's ``n``, ``block``, ``dtype`` and ``kind`` as attrs.
    require_complete : bool
        Refuse a store whose manifest does not record every block. With False, a store being built reads as far as the
        manifest said at this call: every block not recorded as finished (upper or mirror) reads as NaN, even
        if its chunk is already on disk, so a reader never sees a block a writer has not finished.

    Raises
    ------
    StoreError
        If the store is missing or, with ``require_complete``, its build is unfinished.
    """
    import dask.array as da

    store = RunStore.open(path)
    # Complete means every upper block is recorded in the manifest (what the build stage's record also says once
    # written; the manifest is the truth for a build driven by `build_gram` outside the flow too).
    missing = len(store.missing_blocks())
    if require_complete and missing:
        raise StoreError(
            f"{path}: the Gram matrix is incomplete ({missing} of {len(store.upper_blocks())} blocks missing); "
            "re-run the same configuration to resume, or pass require_complete=False to read what is there"
        )
    gram = da.from_zarr(store.gram)  # dask chunks = zarr chunks = the store's blocks
    finished = store.finished_blocks()  # the snapshot: one read of the manifest
    finished = finished | finished.T
    if not finished.all():
        gram = gram.map_blocks(_nan_unless_finished, finished=finished, dtype=gram.dtype)
    if not coords:
        return gram
    import xarray as xr

    index = np.arange(store.n)
    return xr.DataArray(gram, dims=("sample_i", "sample_j"), coords={"sample_i": index, "sample_j": index},
                        name="gram", attrs={"n": store.n, "block": store.block, "dtype": store.dtype,
                                            "kind": store.config.get("kernel", {}).get("kind", "ntk")})


def _nan_unless_finished(values: np.ndarray, *, finished: np.ndarray, block_id=None) -> np.ndarray:
    """One chunk of `open_gram`'s dask graph: its values if the manifest snapshot records its block, else NaN."""
    return values if finished[block_id] else np.full_like(values, np.nan)


def iter_gram_blocks(path) -> Iterator[tuple[slice, slice, np.ndarray]]:
    """(rows, cols, values) of every upper block (I ≤ J) the manifest records as finished, in block order.

    ``path`` is the run's ``.zarr`` directory (or an open `RunStore`).

    ``values`` is ``K[rows, cols]`` as stored (float64 or float32); the lower triangle is the transposes. One
    manifest read at the start decides which blocks are yielded, so a store being built can be iterated too.
    """
    store = path if isinstance(path, RunStore) else RunStore.open(path)
    finished = store.finished_blocks()
    for i, j in store.upper_blocks():
        if finished[i, j]:
            rows, cols = store.block_slice(i), store.block_slice(j)
            yield rows, cols, store.gram[rows, cols]


def open_inputs(path):
    """The (N, d) float64 inputs of a run, as a zarr array."""
    return RunStore.open(path).inputs


def open_spectrum(path):
    """The spectrum of a run as an xarray Dataset (``eigenvalue`` on dimension ``mode``, descending).

    Raises
    ------
    StoreError
        If the run's solve stage has not finished (a spectrum is only served once it is recorded complete).
    """
    store = RunStore.open(path)
    if store.stage("solve") is None:
        raise StoreError(f"{path}: the spectrum is not complete (the solve stage has not finished); re-run the same "
                         "configuration with `ntkdist run` to finish it")
    return store.read_spectrum()
