"""The stored-Gram operator on real zarr stores holding a real NTK Gram matrix."""

from __future__ import annotations

import numpy as np
import pytest

import ntkdist
from ntkdist.errors import StoreError
from ntkdist.linalg import SymmetricOperator, as_linear_operator, float32_storage_error
from ntkdist.store import RunStore, StoredGramOperator

NET = ntkdist.MLP(depth=3, bias_var=0.1)


def stored_ntk(path, *, n=230, dim=5, block=64, dtype="float64", seed=0):
    """A store holding the depth-3 NTK of Gaussian inputs, written block by block as the build does."""
    X = np.random.default_rng(seed).standard_normal((n, dim))
    K = ntkdist.ntk(X, net=NET)
    store = RunStore.create(path, n=n, dim=dim, block=block, dtype=dtype, config={"run": {"name": "op"}},
                            fingerprint="f" * 64, versions={"numpy": np.__version__})
    store.inputs[:] = X
    for i, j in store.upper_blocks():
        store.record_blocks([store.write_block(i, j, K[store.block_slice(i), store.block_slice(j)])])
    return store, K


@pytest.mark.parametrize("rows_per_read", [None, 50, 1000])
def test_products_equal_the_dense_product(tmp_path, rows_per_read):
    store, K = stored_ntk(tmp_path / "r.zarr")
    op = StoredGramOperator(store, rows_per_read=rows_per_read)
    assert isinstance(op, SymmetricOperator)
    V = np.random.default_rng(1).standard_normal((K.shape[0], 7))
    Y = op.matmat(V)
    assert Y.dtype == np.float64 and Y.shape == V.shape
    assert np.max(np.abs(Y - K @ V)) <= 1e-13 * np.max(np.abs(K @ V))
    op.matmat(V[:, :2])
    assert op.passes == 2 and op.read_passes == 0
    assert op.error_bound == 0.0
    assert np.array_equal(op.diagonal(), np.diagonal(K))
    # scipy's adapter goes through the same product (and counts it).
    assert np.allclose(as_linear_operator(op) @ V[:, 0], K @ V[:, 0], rtol=1e-13, atol=0)
    assert op.passes == 3


def test_columns_read_the_requested_columns_in_order(tmp_path):
    store, K = stored_ntk(tmp_path / "r.zarr")
    op = StoredGramOperator(store)
    index = np.array([200, 3, 64, 3, 129])
    assert np.array_equal(op.columns(index), K[:, index])
    assert op.columns(np.array([], dtype=int)).shape == (K.shape[0], 0)
    assert op.passes == 0
    with pytest.raises(IndexError, match="index"):
        op.columns(np.array([230]))


def test_float32_store_is_promoted_and_its_bound_contains_the_storage_error(tmp_path):
    store, K = stored_ntk(tmp_path / "r.zarr", dtype="float32")
    K32 = K.astype(np.float32).astype(np.float64)
    op = StoredGramOperator(store)
    assert op.dtype == np.float32
    V = np.random.default_rng(2).standard_normal((K.shape[0], 4))
    Y = op.matmat(V)
    # The product is that of the stored float32 matrix, in float64 arithmetic.
    assert np.max(np.abs(Y - K32 @ V)) <= 1e-13 * np.max(np.abs(K32 @ V))
    # ‖K₃₂‖_F and the diagonal came with the first product's read: no further pass.
    bound = op.error_bound
    assert op.read_passes == 0
    assert bound == pytest.approx(float32_storage_error(np.linalg.norm(K32)), rel=1e-12)
    true_error = np.linalg.norm(K32 - K, 2)
    assert 0 < true_error <= bound
    assert np.array_equal(op.diagonal(), np.diagonal(K32))


def test_bound_before_any_product_costs_one_read_pass(tmp_path):
    store, K = stored_ntk(tmp_path / "r.zarr", dtype="float32", n=100, block=32)
    op = StoredGramOperator(store)
    assert op.error_bound >= np.linalg.norm(K.astype(np.float32).astype(np.float64) - K, 2)
    assert (op.read_passes, op.passes) == (1, 0)
    op.error_bound  # cached
    op.matmat(np.ones((100, 1)))
    assert (op.read_passes, op.passes) == (1, 1)


def test_incomplete_store_is_refused(tmp_path):
    store, _ = stored_ntk(tmp_path / "r.zarr", n=100, block=32)
    store.forget_blocks([(1, 2)])
    with pytest.raises(StoreError, match="incomplete"):
        StoredGramOperator(store)


def test_bad_arguments(tmp_path):
    store, _ = stored_ntk(tmp_path / "r.zarr", n=40, block=16)
    with pytest.raises(ValueError, match="rows_per_read"):
        StoredGramOperator(store, rows_per_read=0)
    with pytest.raises(ValueError, match="V: expected shape"):
        StoredGramOperator(store).matmat(np.ones((39, 2)))
