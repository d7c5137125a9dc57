"""Memory for the engines' large CPU results: mapped by ntkdist, on huge pages when free ones are at hand, and
kept warm for the next result of the same size.

Fresh memory is not free. Every page of a new mapping costs the kernel a fault and a zeroed page, and on a
virtual machine whose balloon reports free memory to the host (free page reporting, as on the development VM)
memory freed a few seconds ago has gone back to the host and costs the host's faults as well. Measured there
(BENCHMARKS.md, "Fresh memory"): writing a fresh 512 MiB takes 0.25 s on 4 KiB pages and 0.06 s on huge pages
that were freed a moment ago, against 0.02 s to rewrite memory already mapped; the N = 8000 float64 Gram matrix
that fills it takes 0.32 s to compute. Two measures follow:

- `output_array` advises huge pages (``MADV_HUGEPAGE``) only while /proc/buddyinfo shows `HUGE_PAGE_HEADROOM`
  times the array's size free in whole huge pages (`free_huge_page_bytes`). NumPy advises them for every large
  array, and where the THP defrag setting is ``madvise`` (a common default) a fault that finds no free huge page
  compacts memory synchronously: after other processes had churned memory that stalled a fresh 488 MB Gram
  matrix by up to 0.8 s, longer than computing it. Without free huge pages the mapping keeps 4 KiB pages.
- When the last array using a mapping is gone, the mapping goes back to a small pool (`OutputPool`) instead of
  being unmapped, and the next result of the same size reuses it: the blocks a Ray actor builds one after
  another, the kernel blocks of every matrix-free solver pass, and a loop of `ntk` calls. The pool holds at most
  `pool_limit_bytes` and unmaps what has not been reused after `keep_seconds` (default 5 s, environment
  ``NTKDIST_OUTPUT_KEEP_SECONDS``; 0 turns the pool off), as allocators such as jemalloc keep freed pages for a
  few seconds. `release_pooled_outputs` unmaps everything pooled at once.

A third measure is the engines' to take: an output too large to stay in the last-level cache is written by
streaming (non-temporal) stores (`streams_output` decides). An ordinary store to a line that is not in cache
first reads the line from memory (read-for-ownership) only to overwrite all of it: it doubles the memory traffic
of a large output and evicts the next tile's inputs, and that traffic is what a neighbour on a shared host slows
down.

The arrays are ordinary writable, C-contiguous NumPy arrays; their ``base`` is the `_Lease` that returns the
memory. Contents are uninitialised, as with ``numpy.empty``.
"""

from __future__ import annotations

import atexit
import mmap
import os
import sys
import threading
import time

import numpy as np

#: NumPy asks for transparent huge pages for arrays of this size and more; `output_array` maps those itself.
HUGE_PAGE_HINT_BYTES = 4 * 2**20
#: Huge pages are asked for only while this many times the array's bytes are free in whole huge pages: then
#: every fault finds one on a free list, with room for what other processes take meanwhile.
HUGE_PAGE_HEADROOM = 2
#: The last-level cache where the system does not say (`last_level_cache_bytes`).
FALLBACK_CACHE_BYTES = 32 * 2**20
#: Seconds a pooled mapping waits to be reused before it is unmapped (``NTKDIST_OUTPUT_KEEP_SECONDS``).
DEFAULT_KEEP_SECONDS = 5.0


def output_array(xp, shape: tuple[int, ...], dtype):
    """An uninitialised result array; on the CPU, a large one is a pooled mapping (module docstring)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if xp is not np or nbytes < HUGE_PAGE_HINT_BYTES or not hasattr(mmap, "MAP_PRIVATE"):  # (Windows: NumPy's)
        return xp.empty(shape, dtype=dtype)
    mapping = _POOL.take(nbytes) or fresh_mapping(nbytes)
    return np.asarray(_Lease(mapping, _POOL, tuple(shape), np.dtype(dtype)))


def fresh_mapping(nbytes: int) -> mmap.mmap:
    """A private anonymous mapping of ``nbytes``, advised to use huge pages only when enough are free."""
    mapping = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE") and free_huge_page_bytes() >= HUGE_PAGE_HEADROOM * nbytes:
        mapping.madvise(mmap.MADV_HUGEPAGE)
    return mapping


def free_huge_page_bytes(buddyinfo: str = "/proc/buddyinfo",
                         huge_page_size: str = "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size") -> int:
    """Bytes the kernel's page allocator holds free in blocks of at least one transparent huge page, over all
    nodes and zones; 0 where either file cannot be read.

    Each line of /proc/buddyinfo counts the free blocks of 2^k base pages for k = 0, 1, …; a huge page is served
    without compaction from a block of order log2(huge page / base page) or more.
    """
    try:
        with open(huge_page_size) as size:
            huge_order = (int(size.read()) // mmap.PAGESIZE).bit_length() - 1
        with open(buddyinfo) as info:
            lines = info.read().splitlines()
    except (OSError, ValueError):
        return 0
    pages = 0
    for line in lines:
        counts = line.split()[4:]  # "Node 0, zone   Normal  c0 c1 c2 …"
        pages += sum(int(count) << order for order, count in enumerate(counts) if order >= huge_order)
    return pages * mmap.PAGESIZE


class _Lease:
    """The owner of one mapping while arrays use it.

    NumPy sees the memory through ``__array_interface__`` and keeps the lease as the ``base`` of the array and of
    every view of it, so the lease dies with the last of them and only then hands the mapping back to its pool.
    """

    __slots__ = ("mapping", "pool", "__array_interface__")

    def __init__(self, mapping: mmap.mmap, pool: OutputPool, shape: tuple[int, ...], dtype: np.dtype):
        self.mapping, self.pool = mapping, pool
        address = np.frombuffer(mapping, dtype=np.uint8).ctypes.data  # (the temporary export ends here)
        self.__array_interface__ = {"data": (address, False), "shape": shape, "typestr": dtype.str,
                                    "version": 3}

    def __del__(self):
        self.pool.give_back(self.mapping)


class OutputPool:
    """Mappings no array uses any more, by size, each unmapped ``keep_seconds`` after it came back unless reused.

    Holds at most ``limit_bytes`` (the oldest go first) and nothing at all when ``keep_seconds`` is 0. A daemon
    thread unmaps what expires; `release` unmaps everything now. Safe to use from any thread.
    """

    def __init__(self, keep_seconds: float, limit_bytes: int):
        self.keep_seconds, self.limit_bytes = keep_seconds, limit_bytes
        self._lock = threading.Condition()
        self._idle: list[tuple[float, mmap.mmap]] = []  # (expiry, mapping), oldest first
        self._reaper: threading.Thread | None = None
        self._closed = False

    def take(self, nbytes: int) -> mmap.mmap | None:
        """The most recently returned idle mapping of exactly ``nbytes``, or None."""
        with self._lock:
            for index in range(len(self._idle) - 1, -1, -1):
                if len(self._idle[index][1]) == nbytes:
                    return self._idle.pop(index)[1]
        return None

    def give_back(self, mapping: mmap.mmap) -> None:
        if self.keep_seconds <= 0 or len(mapping) > self.limit_bytes or self._closed or sys.is_finalizing():
            # (At exit no reaper thread could start: starting one then waits forever, so the process would hang.)
            mapping.close()
            return
        evicted = []
        with self._lock:
            self._idle.append((time.monotonic() + self.keep_seconds, mapping))
            while sum(len(m) for _, m in self._idle) > self.limit_bytes:
                evicted.append(self._idle.pop(0)[1])
            if self._reaper is None or not self._reaper.is_alive():
                self._reaper = threading.Thread(target=self._reap, name="ntkdist-output-pool", daemon=True)
                self._reaper.start()
            self._lock.notify()
        for old in evicted:
            old.close()

    def idle_bytes(self) -> int:
        with self._lock:
            return sum(len(m) for _, m in self._idle)

    def close(self) -> None:
        """Unmap every idle mapping and keep none from now on (at interpreter exit: `atexit` calls it)."""
        self._closed = True
        self.release()

    def release(self) -> None:
        """Unmap every idle mapping now."""
        with self._lock:
            idle, self._idle = self._idle, []
        for _, mapping in idle:
            mapping.close()

    def _reap(self) -> None:
        while True:
            with self._lock:
                while not self._idle:
                    if not self._lock.wait(timeout=60.0):  # idle for a minute: the thread ends, a later
                        if not self._idle:                  # give_back starts another
                            self._reaper = None
                            return
                now = time.monotonic()
                expired = [m for expiry, m in self._idle if expiry <= now]
                self._idle = [(expiry, m) for expiry, m in self._idle if expiry > now]
                if not expired:
                    self._lock.wait(timeout=self._idle[0][0] - now)
            for mapping in expired:
                mapping.close()

    def _after_fork(self) -> None:
        """In a forked child: a fresh lock and no reaper (the parent's thread does not exist there)."""
        self._lock = threading.Condition()
        self._reaper = None


def last_level_cache_bytes(sysfs: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """The largest cache of CPU 0 as Linux reports it (``index*/size``); `FALLBACK_CACHE_BYTES` where unknown."""
    sizes = []
    try:
        for entry in os.listdir(sysfs):
            if entry.startswith("index"):
                with open(os.path.join(sysfs, entry, "size")) as f:
                    text = f.read().strip()
                units = {"K": 2**10, "M": 2**20, "G": 2**30}
                sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    except (OSError, ValueError):
        return FALLBACK_CACHE_BYTES
    return max(sizes, default=FALLBACK_CACHE_BYTES)


def streams_output(nbytes: int) -> bool:
    """Whether an engine writes an output of ``nbytes`` by streaming stores (module docstring): when it is more
    than a quarter of the last-level cache, which the threads' outputs and the tiles' inputs share, so that it
    would be evicted before whoever reads it next gets to it. (Measured on the development machine: a build's
    16 MiB blocks, two actors, 32 MiB cache: 2–3% faster streamed, store leg included.) Environment
    ``NTKDIST_STREAM_STORES``: ``auto`` (default), ``always`` or ``never`` (for benchmarks; the values written are
    the same either way)."""
    mode = os.environ.get("NTKDIST_STREAM_STORES", "auto")
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"NTKDIST_STREAM_STORES: must be auto, always or never, got {mode!r}")
    return mode == "always" or (mode == "auto" and 4 * nbytes > _LAST_LEVEL_CACHE_BYTES)


def _keep_seconds() -> float:
    text = os.environ.get("NTKDIST_OUTPUT_KEEP_SECONDS", "")
    try:
        return float(text) if text else DEFAULT_KEEP_SECONDS
    except ValueError:
        raise ValueError(f"NTKDIST_OUTPUT_KEEP_SECONDS: must be a number of seconds (0 turns the output pool "
                         f"off), got {text!r}") from None


def pool_limit_bytes() -> int:
    """The pool's cap: an eighth of physical memory, at most 4 GiB (where it cannot be read, 1 GiB)."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**30
    return min(physical // 8, 4 * 2**30)


_POOL = OutputPool(_keep_seconds(), pool_limit_bytes())
_LAST_LEVEL_CACHE_BYTES = last_level_cache_bytes()
atexit.register(_POOL.close)  # arrays still alive at exit unmap their memory instead of pooling it
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL._after_fork)


def release_pooled_outputs() -> None:
    """Unmap every result mapping kept for reuse (the memory goes back to the system at once)."""
    _POOL.release()
