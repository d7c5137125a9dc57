"""The GPU half of the determinism promise (README): identical bytes for a fixed block size.

On a GPU the input products are cuBLAS GEMMs shaped by the block, so another block size may round differently;
two builds with the same block size must give the same bytes. (The CPU half, bit-identical for any block size, is
`tests/kernels/test_closed_forms.py::test_blocks_of_any_size_assemble_to_the_whole_gram_bit_for_bit`.)
"""

from __future__ import annotations

import numpy as np
import pytest

from ntkdist.kernels import MLP, gram_block
from ntkdist.store import RunStore

NET = MLP(depth=3, activation="relu", weight_var=2.0, bias_var=0.1)


def _build_on_gpu(path, X: np.ndarray, block: int, dtype: str) -> RunStore:
    """Every upper block computed on CuPy (as a GPU worker does) and written and recorded in a fresh store."""
    import cupy

    store = RunStore.create(path, n=len(X), dim=X.shape[1], block=block, dtype=dtype, config={},
                            fingerprint="gpu-determinism", versions={})
    store.inputs[:] = X
    for i, j in store.upper_blocks():
        rows = cupy.asarray(X[store.block_slice(i)])
        cols = None if i == j else cupy.asarray(X[store.block_slice(j)])
        values = gram_block(rows, cols, net=NET, kind="ntk", dtype=dtype)
        assert isinstance(values, cupy.ndarray)
        store.record_blocks([store.write_block(i, j, cupy.asnumpy(values))])
    return store


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_two_gpu_builds_with_one_block_size_give_the_same_bytes(tmp_path, dtype):
    X = np.random.default_rng(21).standard_normal((700, 24))
    first = _build_on_gpu(tmp_path / "a.zarr", X, 256, dtype)
    second = _build_on_gpu(tmp_path / "b.zarr", X, 256, dtype)
    assert first.gram[:].tobytes() == second.gram[:].tobytes()
    assert np.array_equal(first.manifest[:], second.manifest[:])
    # Another block size: the same matrix to rounding, not necessarily the same bytes.
    other = _build_on_gpu(tmp_path / "c.zarr", X, 300, dtype)
    rtol = 1e-12 if dtype == "float64" else 2 ** -23
    np.testing.assert_allclose(other.gram[:], first.gram[:], rtol=rtol, atol=0)
