"""Data sets: generated (uniform sphere, isotropic Gaussian) or read from a ``.npy`` file, streamed in row chunks.

Generated data are prefix-stable: the first m rows for a given seed are the same whatever n is, because rows are
drawn in order from one generator. Files are memory-mapped and never unpickled (``allow_pickle=False``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import DataError

#: Rows generated, checked or copied per step (bounds the memory of prepare to a few hundred MiB).
ROW_CHUNK = 65_536


class Dataset:
    """A data set of ``n`` points in ``dim`` dimensions that can be streamed in row chunks."""

    def __init__(self, n: int, dim: int, chunks, description: str):
        self.n, self.dim = int(n), int(dim)
        self._chunks = chunks
        self.description = description

    def iter_chunks(self, rows: int = ROW_CHUNK) -> Iterator[np.ndarray]:
        """Yield consecutive float64 row chunks of at most ``rows`` rows."""
        yield from self._chunks(rows)

    def to_array(self) -> np.ndarray:
        """The whole (n, dim) float64 array (for small data sets and tests)."""
        out = np.empty((self.n, self.dim))
        row = 0
        for chunk in self.iter_chunks():
            out[row:row + len(chunk)] = chunk
            row += len(chunk)
        return out


def uniform_sphere(n: int, dim: int, seed: int = 0, radius: float = 1.0) -> Dataset:
    """n points uniform on the sphere of the given radius in R^dim (normalised standard Gaussians)."""

    def chunks(rows):
        rng = np.random.default_rng(seed)
        for start in range(0, n, rows):
            g = rng.standard_normal((min(rows, n - start), dim))
            yield radius * g / np.linalg.norm(g, axis=1, keepdims=True)

    return Dataset(n, dim, chunks, f"uniform on the sphere of radius {radius:g} in R^{dim}, seed {seed}")


def isotropic_gaussian(n: int, dim: int, seed: int = 0) -> Dataset:
    """n points from N(0, I_dim)."""

    def chunks(rows):
        rng = np.random.default_rng(seed)
        for start in range(0, n, rows):
            yield rng.standard_normal((min(rows, n - start), dim))

    return Dataset(n, dim, chunks, f"standard Gaussian in R^{dim}, seed {seed}")


def npy_file(path: str | Path, *, n: int | None = None, dim: int | None = None) -> Dataset:
    """A (n, dim) array stored in a ``.npy`` file, checked for shape, dtype and finite values.

    Parameters
    ----------
    path : path of the file
    n, dim : int, optional
        Expected shape; a mismatch is an error naming ``[data] n`` or ``[data] dim``.

    Raises
    ------
    DataError
        Naming the ``[data]`` key at fault and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"[data] path: {path} does not exist; point it at a .npy file of shape (n, dim)")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise DataError(
            f"[data] path: {path} cannot be read without unpickling ({exc}); save a plain numeric array with numpy.save"
        ) from None
    except OSError as exc:
        raise DataError(f"[data] path: {path} is not a readable .npy file ({exc})") from None
    if array.ndim != 2:
        raise DataError(f"[data] path: {path} holds an array of shape {array.shape}; it must be 2-D (n, dim)")
    if array.dtype.kind not in "fiu":
        raise DataError(f"[data] path: {path} holds dtype {array.dtype}; it must hold real numbers")
    rows, cols = array.shape
    if rows == 0 or cols == 0:
        raise DataError(f"[data] path: {path} holds an empty array of shape {array.shape}")
    if dim is not None and cols != dim:
        raise DataError(f"[data] dim: is {dim} but {path} has {cols} columns; set dim = {cols} or remove it")
    if n is not None and rows != n:
        raise DataError(f"[data] n: is {n} but {path} has {rows} rows; set n = {rows} or remove it")

    def chunks(step):
        for start in range(0, rows, step):
            yield np.asarray(array[start:start + step], dtype=np.float64)

    dataset = Dataset(rows, cols, chunks, f"{path} ({rows}×{cols}, {array.dtype})")
    for start, chunk in _with_offsets(dataset):
        finite = np.isfinite(chunk)
        if not finite.all():
            bad_row, bad_col = np.argwhere(~finite)[0]
            raise DataError(
                f"[data] path: {path} has a non-finite value ({chunk[bad_row, bad_col]}) at row {start + bad_row}, "
                f"column {bad_col}; remove or impute such rows before running"
            )
    return dataset


def _with_offsets(dataset: Dataset):
    start = 0
    for chunk in dataset.iter_chunks():
        yield start, chunk
        start += len(chunk)


def digest(dataset: Dataset) -> str:
    """SHA-256 of the float64 rows (little-endian, C order) with the shape: identifies the data of a run."""
    h = hashlib.sha256(f"{dataset.n}x{dataset.dim}:".encode())
    for chunk in dataset.iter_chunks():
        h.update(np.ascontiguousarray(chunk, dtype="<f8").tobytes())
    return h.hexdigest()
