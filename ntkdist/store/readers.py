"""Entry points for people who analyse stored runs: open a run's arrays without knowing the layout."""

from __future__ import annotations

from ..errors import StoreError
from .run_store import RunStore


def open_gram(path, *, require_complete: bool = True):
    """The stored Gram matrix of a run, as a lazily read zarr array of shape (N, N).

    Parameters
    ----------
    path : path of the run's ``.zarr`` directory
    require_complete : bool
        Refuse a store whose build stage has not finished (its unwritten chunks read as NaN).

    Raises
    ------
    StoreError
        If the store is missing or, with ``require_complete``, its build is unfinished.
    """
    store = RunStore.open(path)
    if require_complete and store.stage("build") is None:
        missing = len(store.missing_blocks())
        raise StoreError(
            f"{path}: the Gram matrix is incomplete ({missing} of {len(store.upper_blocks())} blocks missing); "
            "re-run the same configuration to resume, or pass require_complete=False to read what is there"
        )
    return store.gram


def open_inputs(path):
    """The (N, d) float64 inputs of a run, as a zarr array."""
    return RunStore.open(path).inputs


def open_spectrum(path):
    """The spectrum of a run as an xarray Dataset (``eigenvalue`` on dimension ``mode``, descending)."""
    return RunStore.open(path).read_spectrum()
