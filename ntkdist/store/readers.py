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
