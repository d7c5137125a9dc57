"""Writing one Gram chunk as a build does: its CRC-32, its transposed mirror, and its bytes written to a file
atomically and past the page cache (what `RunStore.write_block` runs for a full chunk of a local store).

Measured in BENCHMARKS.md, "The build with its store".
"""

from __future__ import annotations

import errno
import os
import threading
import zlib
from pathlib import Path

import numpy as np
from numba import njit


def block_checksum(block: np.ndarray) -> int:
    """CRC-32 of a block's bytes in C order (what the manifest records and `ntkdist verify` recomputes)."""
    # The array's own buffer, not a bytes copy: a 16 MB block is checksummed without copying it.
    return zlib.crc32(np.ascontiguousarray(block).data)


def transposed(values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``values.T`` as a C-contiguous array, written into ``out`` when given (`_transpose_into`).

    The mirror is half of what a build writes, so its transpose is a measurable share of the store's cost over
    compute only (BENCHMARKS.md, the build); the writer transposes straight into its page-aligned write buffer
    (`direct_write_buffer`), which saves a copy and the 4–5 ms of page faults of a fresh 16 MB array.
    """
    if out is None:
        out = np.empty(values.shape[::-1], dtype=values.dtype)
    _transpose_into(np.ascontiguousarray(values), out)
    return out


@njit(cache=True, nogil=True)
def _transpose_into(source: np.ndarray, target: np.ndarray) -> None:
    """``target[:] = source.T`` through 8 × 8 tiles gathered in registers, 128 × 128 tiles at a time.

    A 2048² float32 chunk has rows 8 KB apart, so a strided copy (numpy's ``values.T``: 37 ms) or a slab copy
    (16 rows at a time: ~20 ms) touches a new page, and the same cache set, at every element. Reading 8 rows ×
    8 columns and writing them as 8 short rows keeps each 32-byte run whole: 10–14 ms on the development machine.
    """
    rows, cols = source.shape
    rows8, cols8 = rows - rows % 8, cols - cols % 8
    tile = np.empty((8, 8), dtype=source.dtype)
    for i0 in range(0, rows8, 128):
        for j0 in range(0, cols8, 128):
            for i in range(i0, min(i0 + 128, rows8), 8):
                for j in range(j0, min(j0 + 128, cols8), 8):
                    for a in range(8):
                        for c in range(8):
                            tile[c, a] = source[i + a, j + c]
                    for c in range(8):
                        for a in range(8):
                            target[j + c, i + a] = tile[c, a]
    for i in range(rows8, rows):  # the ragged edges of a short last block
        for j in range(cols):
            target[j, i] = source[i, j]
    for i in range(rows8):
        for j in range(cols8, cols):
            target[j, i] = source[i, j]


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
