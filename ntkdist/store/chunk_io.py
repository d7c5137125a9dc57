"""Writing one Gram chunk as a build does: its CRC-32, its Σ K², its transposed mirror, and its bytes written to
a file atomically and past the page cache (what `RunStore.write_block` runs for a full chunk of a local store).

Measured in BENCHMARKS.md, "The build with its store".
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import numpy as np
from numba import njit
from zlib_ng import zlib_ng


def block_checksum(block: np.ndarray) -> int:
    """CRC-32 of a block's bytes in C order (what the manifest records and `ntkdist verify` recomputes).

    The standard CRC-32 (zlib's, so ``zlib.crc32`` of the chunk file's bytes gives the same number) computed by
    zlib-ng, whose carry-less-multiply kernel runs 0.3 ms a 16 MB block against the standard library's 4–5 ms.
    """
    # The array's own buffer, not a bytes copy: a 16 MB block is checksummed without copying it.
    return zlib_ng.crc32(np.ascontiguousarray(block).data)


#: Σ K² sums each row into this many running float64 totals (column j into total j mod 8), added at the end.
_SQUARE_LANES = 8


def block_sum_squares(block: np.ndarray) -> float:
    """Σ K_ij² of a block, in float64 (what the manifest's ``sum_squares`` records and `ntkdist verify` recomputes).

    The entries are promoted to float64 and squared exactly (a float32's square is exact in float64), then summed in
    a fixed order: row by row, column j into running total j mod 8, the 8 totals added last. The order is part of
    the definition: verify compares the recorded value exactly, and this one function is the only place either
    side computes it. 8 independent totals vectorise without reassociating the sum (1.2 ms a 2048² float32 block,
    against 4.3 ms for ``np.einsum("ij,ij->", K, K, dtype=float64)``, the rule of stores written before it); the
    relative rounding error is at most about (N·M/8)·2⁻⁵³, far below a float32 store's own error.
    """
    values = np.asarray(block)
    if values.ndim != 2:
        raise ValueError(f"block_sum_squares takes a 2-D block, got shape {values.shape}")
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    return float(_sum_squares_in_lanes(values))


def sum_squares_matches(block: np.ndarray, recorded: float) -> bool:
    """Whether ``recorded`` is the block's Σ K² exactly: by `block_sum_squares`, or by the rule stores written
    before it used (``np.einsum`` in float64; the two differ only by rounding, ~1e-13 relative), so those stores
    still verify."""
    if block_sum_squares(block) == recorded:
        return True
    values = np.asarray(block)
    return float(np.einsum("ij,ij->", values, values, dtype=np.float64)) == recorded


@njit(cache=True, nogil=True)
def _sum_squares_in_lanes(values: np.ndarray) -> float:
    rows, cols = values.shape
    whole = cols - cols % _SQUARE_LANES
    lanes = np.zeros(_SQUARE_LANES)
    ragged = 0.0
    for i in range(rows):
        for j in range(0, whole, _SQUARE_LANES):
            for lane in range(_SQUARE_LANES):
                entry = np.float64(values[i, j + lane])
                lanes[lane] += entry * entry
        for j in range(whole, cols):
            entry = np.float64(values[i, j])
            ragged += entry * entry
    total = 0.0
    for lane in range(_SQUARE_LANES):
        total += lanes[lane]
    return total + ragged


def transposed(values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``values.T`` as a C-contiguous array, written into ``out`` when given (`_transpose_into`).

    The mirror is half of what a build writes, so its transpose is a measurable share of the store's cost over
    compute only (BENCHMARKS.md, the build); the writer transposes straight into its page-aligned write buffer
    (`direct_write_buffer`), which saves a copy and the 4–5 ms of page faults of a fresh 16 MB array.
    """
    if out is None:
        out = np.empty(values.shape[::-1], dtype=values.dtype)
    values = np.ascontiguousarray(values)
    _transpose_into(values, out)
    rows8, cols8 = (size - size % 8 for size in values.shape)
    out[:, rows8:] = values[rows8:, :].T  # the ragged edges of a short last block (thin: numpy's strided copy)
    out[cols8:, :rows8] = values[:rows8, cols8:].T
    return out


@njit(cache=True, nogil=True)
def _transpose_into(source: np.ndarray, target: np.ndarray) -> None:
    """``target[:rows8, :cols8] = source[:rows8, :cols8].T`` for the whole multiples of 8 of each side, through
    8 × 8 tiles gathered in registers, 512 × 512 tiles at a time (`transposed` adds the ragged edges).

    A 2048² float32 chunk has rows 8 KB apart, so a strided copy (numpy's ``values.T``: 37 ms) or a slab copy
    (16 rows at a time: ~20 ms) touches a new page, and the same cache set, at every element. Reading 8 rows ×
    8 columns and writing them as 8 short rows keeps each 32-byte run whole. Outer tiles of 512 (1 MB of source
    and target together) measured 3.2–3.6 ms a 2048² float32 block on the development machine, against 5–6 ms
    for 128 and 6.5 ms for none (BENCHMARKS.md, "The build with its store").
    """
    rows, cols = source.shape
    rows8, cols8 = rows - rows % 8, cols - cols % 8
    tile = np.empty((8, 8), dtype=source.dtype)
    for i0 in range(0, rows8, 512):
        for j0 in range(0, cols8, 512):
            for i in range(i0, min(i0 + 512, rows8), 8):
                for j in range(j0, min(j0 + 512, cols8), 8):
                    for a in range(8):
                        for c in range(8):
                            tile[c, a] = source[i + a, j + c]
                    for c in range(8):
                        for a in range(8):
                            target[j + c, i + a] = tile[c, a]


#: Bytes per direct write: O_DIRECT needs sizes (and buffer addresses) aligned to the device's logical block.
_DIRECT_ALIGNMENT = 4096
_aligned_buffers = threading.local()


def direct_write_buffer(shape: tuple[int, ...], dtype) -> np.ndarray:
    """This thread's page-aligned scratch array of ``shape`` (the buffer `write_file_atomically` writes from).

    Filling it directly (a cast, a transpose) saves the copy into it and the page faults of a fresh array. It is
    reused by the next call on the same thread, so its contents live only until then.
    """
    import mmap

    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    cached = getattr(_aligned_buffers, "map", None)
    if cached is None or len(cached) != nbytes:
        cached = _aligned_buffers.map = mmap.mmap(-1, max(nbytes, 1))  # anonymous maps are page-aligned
    return np.frombuffer(cached, dtype=dtype, count=int(np.prod(shape))).reshape(shape)


def write_file_atomically(path: Path, values: np.ndarray) -> None:
    """Write the bytes of a C-contiguous array to ``path`` through a temporary file renamed into place (as zarr
    does: a reader never sees half a chunk), bypassing the page cache where the file system allows.

    A build writes each byte of the matrix once and does not read it back: through the page cache, the kernel
    spends 55 ms of CPU on each 2048² float32 block and its mirror (1.6 ms a MB on the development machine), CPU
    the kernels' own cores then lack. ``O_DIRECT`` hands the pages to the device instead (2 ms of CPU a chunk);
    it needs a size that is a multiple of 4096 bytes and an aligned buffer, so values that do not start on a
    4096-byte boundary are first copied into this thread's `direct_write_buffer` (the mirror is transposed
    straight into it; a block from the engines' output pool is page-aligned and is written as it is). Where the
    file system refuses ``O_DIRECT`` (tmpfs) or the size is not aligned, the write is an ordinary buffered one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.partial")
    data = memoryview(values).cast("B")
    direct = getattr(os, "O_DIRECT", 0) and data.nbytes % _DIRECT_ALIGNMENT == 0
    try:
        if direct:
            source = data
            if values.ctypes.data % _DIRECT_ALIGNMENT:  # (an engine's pooled output is page-aligned already)
                buffer = direct_write_buffer(values.shape, values.dtype)
                np.copyto(buffer, values)
                source = _aligned_buffers.map
            try:
                descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
            except OSError as error:  # EINVAL: this file system has no direct I/O
                if error.errno != errno.EINVAL:
                    raise
                direct = False
            else:
                try:
                    if os.write(descriptor, source) != data.nbytes:
                        raise OSError(errno.EIO, f"short direct write to {partial}")
                finally:
                    os.close(descriptor)
        if not direct:
            with open(partial, "wb") as out:
                out.write(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
