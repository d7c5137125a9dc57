"""The Gram engines' large outputs are mapped without the huge-page hint (`tiles.output_array`): ordinary,
writable NumPy arrays whose memory carries no MADV_HUGEPAGE advice and is unmapped with the last view."""

from __future__ import annotations

import gc
import pickle

import numpy as np
import pytest

import ntkdist
from ntkdist.kernels import MLP
from ntkdist.kernels.tiles import HUGE_PAGE_HINT_BYTES, output_array


def mapping_of(array: np.ndarray) -> dict | None:
    """The /proc/self/smaps entry holding the array's first byte: {"range": (start, end), "flags": set}."""
    address = array.ctypes.data
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


def test_a_large_gram_is_an_ordinary_array_without_the_huge_page_hint():
    X = np.random.default_rng(0).standard_normal((1200, 8))
    K = ntkdist.ntk(X, net=MLP(depth=2))
    assert K.nbytes >= HUGE_PAGE_HINT_BYTES
    assert K.flags.writeable and K.flags.c_contiguous and K.dtype == np.float64 and K.shape == (1200, 1200)
    mapping = mapping_of(K)
    assert mapping is not None and "hg" not in mapping["flags"]  # no MADV_HUGEPAGE, unlike NumPy's own
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(K)), K)  # how Ray ships it
    np.testing.assert_array_equal(K[:300], ntkdist.ntk(X[:300], X, net=MLP(depth=2)))  # a small block agrees
    K[0, 0] = -1.0  # writable in place
    assert K[0, 0] == -1.0


def test_the_mapping_goes_with_the_last_view():
    out = output_array(np, (1024, 1024), "float64")
    out[:] = 1.0
    view = out[10:20]
    start, _ = mapping_of(out)["range"]
    del out
    gc.collect()
    assert mapping_of(view) is not None and mapping_of(view)["range"][0] == start  # a view keeps it
    address = view.ctypes.data
    del view
    gc.collect()
    with open("/proc/self/maps") as maps:
        ranges = [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in maps]
    assert not any(lo <= address < hi and lo == start for lo, hi in ranges)


@pytest.mark.parametrize("shape, dtype", [((10, 10), "float64"), ((300, 300), "float32")])
def test_small_outputs_are_plain_numpy(shape, dtype):
    out = output_array(np, shape, dtype)
    assert out.base is None and out.shape == shape and out.dtype == np.dtype(dtype)
