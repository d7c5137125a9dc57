"""The solve and compare stages through operators: no stage reads the Gram matrix whole, and a matrix-free run
stores no Gram matrix at all. Real Ray (2 CPUs), real zarr stores; the spectra are checked against dense LAPACK."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import ntkdist
from ntkdist import pipeline
from ntkdist.cluster.verify import verify_in_process
from ntkdist.store import RunStore


def _dense_spectrum(config) -> np.ndarray:
    X = zarr.open_array(f"{config.store_location}/inputs", mode="r")[:]
    return np.linalg.eigvalsh(ntkdist.ntk(X, net=config.net))


def _forbid_whole_gram_reads(monkeypatch):
    """Make any read of the whole stored Gram matrix fail the test."""
    def refuse(self, *args, **kwargs):
        raise AssertionError("the solve read the whole Gram matrix")

    monkeypatch.setattr(RunStore, "read_gram", refuse)


@pytest.mark.slow
@pytest.mark.parametrize("operator", ["matrix_free", "stored", "memory"])
def test_krylov_solve_through_each_operator_matches_lapack(ray_local, make_config, monkeypatch, operator):
    config = make_config(data={"n": 700, "dim": 5, "seed": 3}, kernel={"block": 256},
                         network={"depth": 3, "bias_var": 0.05},
                         solver={"method": "krylov", "k": 12, "tol": 1e-10, "smallest": 2, "max_passes": 80,
                                 "operator": operator},
                         cluster={"workers": 2, "cpus_per_worker": 1.0})
    pipeline.prepare(config)
    built = pipeline.build(config)
    store = RunStore.open(config.store_location)
    if operator == "matrix_free":
        assert built["matrix_free"] is True
        assert not any(name.startswith("c") for name in os.listdir(Path(config.store_location) / "gram")), "no chunk written"
    _forbid_whole_gram_reads(monkeypatch)
    solved = pipeline.solve(config)
    assert solved["operator"] == operator and solved["method"] == "krylov" and solved["passes"] >= 2

    exact = _dense_spectrum(config)
    spectrum = xr.open_zarr(config.store_location, group="spectrum").load()
    top = spectrum["eigenvalue"].values
    np.testing.assert_allclose(top, exact[::-1][:12], rtol=1e-9)
    # every certified bound contains the true error
    assert np.all(np.abs(top - exact[::-1][:12]) <= spectrum["eigenvalue_error"].values)
    lam_min, lam_err = float(spectrum["lambda_min"]), float(spectrum["lambda_min_error"])
    assert exact[0] <= lam_min + 1e-12 * exact[-1]  # a Rayleigh quotient: certified upper bound
    assert abs(lam_min - exact[0]) <= lam_err
    assert float(spectrum["trace"]) == pytest.approx(np.trace(ntkdist.ntk(store.inputs[:], net=config.net)),
                                                     rel=1e-13)
    assert spectrum["density"].sum() == pytest.approx(1.0, abs=1e-9)
    assert spectrum.attrs["operator"] == operator and spectrum.attrs["passes"] == solved["passes"]

    compared = pipeline.compare(config)
    assert compared["predictions"] >= 4
    reported = pipeline.report(config)
    assert "λ_min (upper bound)" in reported["markdown"]


@pytest.mark.slow
def test_matrix_free_run_exports_to_netcdf(ray_local, make_config, tmp_path):
    config = make_config(data={"n": 400, "dim": 4}, kernel={"block": 128},
                         solver={"method": "krylov", "k": 8, "tol": 1e-8, "operator": "matrix_free",
                                 "vectors": True, "max_passes": 60},
                         cluster={"workers": 2, "cpus_per_worker": 1.0})
    pipeline.run_all(config)
    from ntkdist.store import export_netcdf, open_spectrum

    spectrum = open_spectrum(config.store_location).load()
    path = tmp_path / "spectrum.nc"
    export_netcdf(spectrum, path)
    again = xr.open_dataset(path).load()
    assert json.loads(again.attrs["config"]) == config.to_dict() and again.attrs["method"] == "krylov"
    np.testing.assert_array_equal(again["eigenvalue"].values, spectrum["eigenvalue"].values)
    vectors = spectrum["eigenvector"].values
    assert vectors.shape == (400, 8)
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(8), atol=1e-10)


@pytest.mark.slow
def test_nystrom_rides_along_the_build_and_costs_no_pass(ray_local, make_config):
    config = make_config(data={"n": 500, "dim": 4, "seed": 2}, kernel={"block": 128},
                         solver={"method": "nystrom", "k": 10, "smallest": 0, "density": False,
                                 "operator": "stored", "seed": 5},
                         cluster={"workers": 2, "cpus_per_worker": 1.0})
    pipeline.prepare(config)
    built = pipeline.build(config)
    assert built["sketch"]["complete"] is True and built["sketch"]["rank"] == 30  # 2k + 10 held-out vectors
    solved = pipeline.solve(config)
    assert solved["passes"] == 0 and solved["method"] == "nystrom"
    exact = _dense_spectrum(config)[::-1][:10]
    spectrum = xr.open_zarr(config.store_location, group="spectrum").load()
    values, errors = spectrum["eigenvalue"].values, spectrum["eigenvalue_error"].values
    shift = spectrum.attrs["top_info"]["shift"]
    assert np.all(values <= exact + shift + 1e-12 * exact[0])  # Nyström values are lower bounds
    assert np.all(np.abs(values - exact) <= errors)            # the held-out vectors' bound holds
    # exactly what one dense pass with the same test matrix gives (the build's blocks add up to K·Ω)
    from ntkdist.cluster import sketch_omega
    from ntkdist.linalg.nystrom import nystrom_from_gathered_sketch

    X = zarr.open_array(f"{config.store_location}/inputs", mode="r")[:]
    omega = sketch_omega(500, 128, 30, 5)
    dense = nystrom_from_gathered_sketch(omega, ntkdist.ntk(X, net=config.net) @ omega, 10)
    np.testing.assert_allclose(values, dense.values, rtol=1e-10)


def test_a_solve_that_crashes_leaves_no_spectrum_that_looks_complete(make_config, monkeypatch, written_store):
    from ntkdist.errors import StoreError
    from ntkdist.store import open_spectrum

    config = make_config(data={"n": 200, "dim": 3}, kernel={"block": 100})
    written_store(config)
    pipeline.solve(config)
    assert len(open_spectrum(config.store_location)["eigenvalue"]) == 200

    changed = make_config(data={"n": 200, "dim": 3}, kernel={"block": 100}, solver={"k": 5})

    def crash(self, dataset):
        raise RuntimeError("killed while writing the spectrum")

    monkeypatch.setattr(RunStore, "write_spectrum", crash)
    with pytest.raises(RuntimeError, match="killed"):
        pipeline.solve(changed)
    with pytest.raises(StoreError, match="not complete"):
        open_spectrum(config.store_location)
    monkeypatch.undo()
    assert pipeline.solve(changed)["resumed"] is False
    assert len(open_spectrum(config.store_location)["eigenvalue"]) == 5


def test_exact_solve_of_a_float32_store_includes_the_storage_error(make_config, written_store):
    config = make_config(data={"n": 300, "dim": 3}, kernel={"block": 128, "dtype": "float32"},
                         network={"bias_var": 0.1})
    K = written_store(config)
    pipeline.solve(config)
    spectrum = xr.open_zarr(config.store_location, group="spectrum").load()
    eta = spectrum.attrs["operator_error_bound"]
    assert 0 < eta and eta == pytest.approx(2.0 ** -24 * np.linalg.norm(K.astype(np.float32).astype(np.float64)),
                                             rel=1e-6)
    exact64 = np.linalg.eigvalsh(K)  # the requested (float64) matrix
    assert np.all(np.abs(spectrum["eigenvalue"].values - exact64[::-1]) <= spectrum["eigenvalue_error"].values)
    assert abs(float(spectrum["lambda_min"]) - exact64[0]) <= float(spectrum["lambda_min_error"])


@pytest.mark.slow
def test_a_stored_run_after_a_matrix_free_one_builds_the_gram(ray_local, make_config):
    solver = {"method": "krylov", "k": 5, "smallest": 0, "density": False, "max_passes": 30}
    free = make_config(data={"n": 300, "dim": 3}, kernel={"block": 128}, solver={**solver, "operator": "matrix_free"},
                       cluster={"workers": 2, "cpus_per_worker": 1.0})
    pipeline.prepare(free)
    assert pipeline.build(free)["matrix_free"] is True
    stored = make_config(data={"n": 300, "dim": 3}, kernel={"block": 128}, solver={**solver, "operator": "stored"},
                         cluster={"workers": 2, "cpus_per_worker": 1.0})
    built = pipeline.build(stored)
    assert built["resumed"] is False and built["computed_blocks"] == 6
    assert verify_in_process(stored.store_location, net=stored.net, kind="ntk") == []
