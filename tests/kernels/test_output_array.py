"""The Gram engines' large CPU outputs (`ntkdist.kernels.output_memory`): ordinary writable NumPy arrays on a
mapping of our own, advised to use huge pages only when the kernel has them free, and handed back to a pool
when the last view is gone, where the next output of the same size reuses them until they expire."""

from __future__ import annotations

import gc
import mmap
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

import ntkdist
from ntkdist.kernels import MLP, output_memory
from ntkdist.kernels.output_memory import (FALLBACK_CACHE_BYTES, HUGE_PAGE_HINT_BYTES, OutputPool, free_huge_page_bytes,
                                          last_level_cache_bytes, output_array, streams_output)


def mapping_of(address: int) -> dict | None:
    """The /proc/self/smaps entry holding ``address``: {"range": (start, end), "flags": set}."""
    entry = None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and all(c in "0123456789abcdef-" for c in head):
                start, end = (int(x, 16) for x in head.split("-"))
                entry = {"range": (start, end), "flags": set()} if start <= address < end else None
            elif entry is not None and line.startswith("VmFlags:"):
                entry["flags"] = set(line.split()[1:])
                return entry
    return None


def is_mapped(address: int, start: int) -> bool:
    with open("/proc/self/maps") as maps:
        ranges = [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in maps]
    return any(lo <= address < hi and lo == start for lo, hi in ranges)


@pytest.fixture
def pool(monkeypatch):
    """A pool of our own in place of the process's, keeping idle mappings a minute (no expiry mid-test, however
    loaded the machine)."""
    own = OutputPool(keep_seconds=60.0, limit_bytes=64 * 2**20)
    monkeypatch.setattr(output_memory, "_POOL", own)
    yield own
    own.release()


def test_a_large_gram_is_an_ordinary_writable_array():
    X = np.random.default_rng(0).standard_normal((1200, 8))
    K = ntkdist.ntk(X, net=MLP(depth=2))
    assert K.nbytes >= HUGE_PAGE_HINT_BYTES
    assert K.flags.writeable and K.flags.c_contiguous and K.dtype == np.float64 and K.shape == (1200, 1200)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(K)), K)  # how Ray ships it
    np.testing.assert_array_equal(K[:300], ntkdist.ntk(X[:300], X, net=MLP(depth=2)))  # a small block agrees
    K[0, 0] = -1.0  # writable in place
    assert K[0, 0] == -1.0


@pytest.mark.skipif(not hasattr(mmap, "MADV_HUGEPAGE"), reason="this platform has no MADV_HUGEPAGE")
@pytest.mark.parametrize("free_bytes, advised", [(0, False), (2**40, True)])
def test_huge_pages_are_asked_for_only_when_enough_are_free(pool, monkeypatch, free_bytes, advised):
    monkeypatch.setattr(output_memory, "free_huge_page_bytes", lambda: free_bytes)
    out = output_array(np, (1024, 1024), "float64")
    assert ("hg" in mapping_of(out.ctypes.data)["flags"]) is advised


def test_free_huge_page_bytes_counts_blocks_of_a_huge_page_and_more(tmp_path):
    page = mmap.PAGESIZE
    (tmp_path / "hpage").write_text(str(512 * page))  # a huge page of order 9
    (tmp_path / "buddyinfo").write_text(
        "Node 0, zone      DMA      1      0      0      0      0      0      0      0      1      1      3 \n"
        "Node 0, zone   Normal  19581  27867   5631  14595   6879   4458   2642   1402    570    270    218 \n")
    free = free_huge_page_bytes(str(tmp_path / "buddyinfo"), str(tmp_path / "hpage"))
    assert free == ((1 + 270) * 512 + (3 + 218) * 1024) * page
    assert free_huge_page_bytes(str(tmp_path / "missing"), str(tmp_path / "hpage")) == 0


def test_the_mapping_returns_to_the_pool_with_the_last_view_and_is_reused(pool):
    out = output_array(np, (1024, 1024), "float64")
    out[:] = 1.0
    view = out[10:20]
    address = out.ctypes.data
    start = mapping_of(address)["range"][0]
    del out
    gc.collect()
    assert pool.idle_bytes() == 0 and np.all(view == 1.0)  # a view keeps it in use
    other = output_array(np, (1024, 1024), "float64")  # so a second output gets other memory
    assert other.ctypes.data != address
    del view
    gc.collect()
    assert pool.idle_bytes() == 1024 * 1024 * 8
    again = output_array(np, (512, 2048), "float64")  # the same size, another shape: the same memory
    assert again.ctypes.data == address and pool.idle_bytes() == 0
    del again, other
    gc.collect()
    assert pool.idle_bytes() == 2 * 1024 * 1024 * 8
    pool.release()
    assert pool.idle_bytes() == 0 and not is_mapped(address, start)


def test_an_idle_mapping_is_unmapped_when_its_time_is_up():
    short = OutputPool(keep_seconds=0.2, limit_bytes=64 * 2**20)
    mapping = mmap.mmap(-1, 4 * 2**20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    short.give_back(mapping)
    assert short.idle_bytes() == 4 * 2**20 or mapping.closed  # (a very slow machine may already be past 0.2 s)
    deadline = time.monotonic() + 30.0
    while short.idle_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert short.idle_bytes() == 0 and mapping.closed


def test_the_pool_keeps_at_most_its_limit_and_nothing_when_turned_off():
    capped = OutputPool(keep_seconds=60.0, limit_bytes=10 * 2**20)
    for _ in range(3):
        capped.give_back(mmap.mmap(-1, 4 * 2**20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))
    assert capped.idle_bytes() == 8 * 2**20  # the oldest went
    capped.release()
    assert capped.idle_bytes() == 0
    off = OutputPool(keep_seconds=0.0, limit_bytes=10 * 2**20)
    mapping = mmap.mmap(-1, 4 * 2**20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    off.give_back(mapping)
    assert off.idle_bytes() == 0 and mapping.closed


def test_a_bad_keep_seconds_names_the_variable(monkeypatch):
    monkeypatch.setenv("NTKDIST_OUTPUT_KEEP_SECONDS", "five")
    with pytest.raises(ValueError, match="NTKDIST_OUTPUT_KEEP_SECONDS"):
        output_memory._keep_seconds()


@pytest.mark.parametrize("shape, dtype", [((10, 10), "float64"), ((300, 300), "float32")])
def test_small_outputs_are_plain_numpy(shape, dtype):
    out = output_array(np, shape, dtype)
    assert out.base is None and out.shape == shape and out.dtype == np.dtype(dtype)


def test_a_process_ending_with_pooled_arrays_exits():
    """At exit the pool keeps nothing: an array alive at teardown unmaps its memory (a reaper thread started then
    would wait forever to run, and the interpreter with it)."""
    script = ("import numpy as np\n"
              "from ntkdist.kernels.output_memory import output_array\n"
              "kept = output_array(np, (1024, 1024), 'float64'); kept[:] = 1.0\n"
              "cycle = [output_array(np, (1024, 1024), 'float64')]; cycle.append(cycle)\n")
    done = subprocess.run([sys.executable, "-c", script], timeout=30, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_outputs_beyond_a_quarter_of_the_last_level_cache_are_streamed(tmp_path, monkeypatch):
    for index, (level, size) in enumerate([(1, "32K"), (2, "1024K"), (3, "32768K")]):
        entry = tmp_path / f"index{index}"
        entry.mkdir()
        (entry / "level").write_text(f"{level}\n")
        (entry / "size").write_text(f"{size}\n")
    assert last_level_cache_bytes(str(tmp_path)) == 32 * 2**20
    assert last_level_cache_bytes(str(tmp_path / "missing")) == FALLBACK_CACHE_BYTES
    cache = last_level_cache_bytes()
    monkeypatch.delenv("NTKDIST_STREAM_STORES", raising=False)
    assert streams_output(cache // 4 + 1) and not streams_output(cache // 4)
    monkeypatch.setenv("NTKDIST_STREAM_STORES", "never")
    assert not streams_output(100 * cache)
    monkeypatch.setenv("NTKDIST_STREAM_STORES", "always")
    assert streams_output(1)
    monkeypatch.setenv("NTKDIST_STREAM_STORES", "yes")
    with pytest.raises(ValueError, match="NTKDIST_STREAM_STORES: must be auto, always or never"):
        streams_output(1)
