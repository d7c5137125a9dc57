"""The bound on ‖K_stored − K‖₂ a store records when its build ends (docs/theory.md §9.3), held against the dense
float64 matrix: it covers the float32 rounding, it is not absurdly loose, and the solvers report it."""

from __future__ import annotations

import numpy as np
import pytest

import ntkdist
from ntkdist import pipeline
from ntkdist.linalg import float32_storage_error, float32_storage_error_from_squares
from ntkdist.store import RunStore, StoredGramOperator


def _float32_store(config, written_store):
    """A float32 store of the config with every block written and recorded; returns (store, K in float64)."""
    K = written_store(config)
    return RunStore.open(config.store_location, mode="r+"), K


def test_bound_from_squares_covers_the_float64_sum_and_refuses_nonsense():
    # The summation slack makes it a hair larger than the bare formula, and never smaller.
    assert float32_storage_error_from_squares(4.0, 100) > float32_storage_error(2.0)
    assert float32_storage_error_from_squares(4.0, 100) < float32_storage_error(2.0) * (1 + 1e-12)
    for bad in (float("nan"), -1.0):
        with pytest.raises(ValueError, match="non-negative"):
            float32_storage_error_from_squares(bad, 100)


def test_float32_store_records_a_rigorous_bound(make_config, written_store):
    config = make_config(data={"n": 300, "dim": 4}, kernel={"block": 128, "dtype": "float32"},
                         network={"depth": 3, "bias_var": 0.1})
    store, K = _float32_store(config, written_store)
    bound = store.record_gram_error_bound()
    assert store.gram_error_bound == bound
    assert store.meta["gram_error_bound"] == bound  # readers without ntkdist find it in the group attrs
    error = store.read_gram() - K
    spectral, frobenius = np.linalg.norm(error, 2), np.linalg.norm(error)
    # Rigorous above the spectral error, and within a small factor of the Frobenius error (random-like rounding
    # of each entry: ‖E‖_F ≈ u‖K‖_F/√3), so the bound is not vacuous.
    assert 0 < spectral <= bound <= 10 * frobenius
    # From the manifest's sums, it is the bound of ‖K₃₂‖_F read densely, up to its summation slack.
    dense = float32_storage_error(np.linalg.norm(store.read_gram()))
    assert dense <= bound <= dense * (1 + 1e-9)


def test_operators_use_the_recorded_bound_without_a_read(make_config, written_store):
    config = make_config(data={"n": 200, "dim": 3}, kernel={"block": 64, "dtype": "float32"})
    store, _ = _float32_store(config, written_store)
    bound = store.record_gram_error_bound()
    operator = StoredGramOperator(store)
    assert operator.error_bound == bound and operator.read_passes == 0


def test_a_forgotten_block_drops_the_bound_and_float64_records_zero(make_config, written_store, tmp_path):
    config = make_config(data={"n": 200, "dim": 3}, kernel={"block": 64, "dtype": "float32"})
    store, _ = _float32_store(config, written_store)
    store.record_gram_error_bound()
    store.forget_blocks([(0, 2)])
    assert store.gram_error_bound is None
    with pytest.raises(ntkdist.errors.StoreError, match="incomplete"):
        store.record_gram_error_bound()

    config64 = make_config(run={"store": str(tmp_path / "f64.zarr")}, kernel={"block": 64})
    store64, _ = _float32_store(config64, written_store)
    assert store64.record_gram_error_bound() == 0.0 and store64.gram_error_bound == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("method", ["exact", "krylov"])
def test_the_spectrum_carries_the_recorded_bound(ray_local, make_config, method):
    """The whole pipeline on a float32 store: build records the bound, the solve reports it and every eigenvalue
    error covers the distance to the float64 matrix's eigenvalues."""
    config = make_config(data={"n": 260, "dim": 4}, kernel={"block": 100, "dtype": "float32"},
                         network={"depth": 3, "bias_var": 0.1},
                         solver={"method": method, **({"k": 6, "operator": "stored"} if method == "krylov" else {})})
    pipeline.prepare(config)
    built = pipeline.build(config)
    store = RunStore.open(config.store_location)
    bound = store.gram_error_bound
    assert bound > 0 and built["gram_error_bound"] == bound == store.stage("build")["gram_error_bound"]
    pipeline.solve(config)
    spectrum = RunStore.open(config.store_location).read_spectrum().load()
    assert spectrum.attrs["operator_error_bound"] == bound
    values, errors = spectrum["eigenvalue"].values, spectrum["eigenvalue_error"].values
    exact = np.linalg.eigvalsh(ntkdist.ntk(store.inputs[:], net=config.net))[::-1][:len(values)]
    assert np.all(errors >= bound) and np.all(np.abs(exact - values) <= errors)


@pytest.mark.slow
def test_ray_operator_reports_the_recorded_bound_without_reading_the_panels(ray_local, make_config, written_store):
    from ntkdist.cluster import RayGramOperator

    config = make_config(data={"n": 200, "dim": 3}, kernel={"block": 64, "dtype": "float32"})
    store, _ = _float32_store(config, written_store)
    bound = store.record_gram_error_bound()
    with RayGramOperator(store, mode="stored", workers=1, device="cpu") as operator:
        assert operator.error_bound == bound
        operator.matmat(np.ones((200, 2)))
        assert operator.error_bound == bound and operator.read_passes == 0 and operator._sum_squares is None
