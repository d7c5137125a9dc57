"""The compare glue (ntkdist.theory.compare): every applicable prediction, with citing attrs, against the spectrum."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ntkdist
from ntkdist.kernels import MLP
from ntkdist.theory.compare import compare_spectrum
from tests.theory.test_bounds import Quadratic, gaussian, sphere


def run(X, net, kind="ntk", k=None, **kw):
    K = (ntkdist.ntk if kind == "ntk" else ntkdist.nngp)(X, net=net)
    values = np.linalg.eigvalsh(K)[::-1]
    if k is not None:
        values = values[:k]
    return compare_spectrum(X, net, kind=kind, eigenvalues=values, trace=float(np.trace(K)), gram=K, **kw), values


def by_name(result):
    return {v.name: v for v in result.variables}


def test_sphere_run_gets_every_prediction_with_citations():
    X = sphere(500, 3, 0)
    net = MLP(2, "relu", 2.0, 0.1)
    result, values = run(X, net, sphere_radius=1.0)
    names = by_name(result)
    for name in ("theory_sphere_eigenvalue", "theory_sphere_degree", "theory_lambda_min_lower_hermite",
                 "theory_lambda_min_upper_trace", "theory_lambda_min_upper_diagonal",
                 "theory_lambda_min_upper_interlacing", "theory_effective_rank_upper",
                 "theory_centred_effective_rank_upper", "theory_lambda_k_upper", "theory_positive_definite"):
        assert name in names, name
        attrs = names[name].attrs
        assert attrs["citation"] and "convention" in attrs
        json.dumps(attrs)  # JSON-ready for zarr attrs
    assert names["theory_sphere_eigenvalue"].dims == ("mode",)
    assert names["theory_lambda_k_upper"].dims == ("theory_k",) and "theory_k" in result.coords
    # every bound holds
    assert all(row["holds"] is not False for row in result.table), [r for r in result.table if r["holds"] is False]
    assert any(row["prediction"] == "theory_lambda_min_lower_hermite" and row["holds"] for row in result.table)
    # the budget is one dense eigen-decomposition; the layer-sum chain (depth + 1 of them) is skipped and says so
    assert result.eigendecompositions <= 1
    skipped = {item["name"]: item["reason"] for item in result.skipped}
    assert "theory_lambda_min_lower_layer_sum" in skipped and "budget" in skipped["theory_lambda_min_lower_layer_sum"]
    # sphere clusters: mean computed eigenvalue of each degree within a few % of N·μ_k where μ_k is not tiny
    clusters = [row for row in result.table if row["prediction"].startswith("sphere_cluster")]
    assert len(clusters) >= 3
    for row in clusters[:3]:
        assert row["ratio"] == pytest.approx(1.0, abs=0.05), row


def test_gaussian_data_with_bias_reports_what_does_not_apply():
    X = gaussian(300, 8, 1)
    net = MLP(2, "erf", 1.5, 0.2)
    result, values = run(X, net)
    names = by_name(result)
    assert "theory_sphere_eigenvalue" not in names
    missing = {item["name"]: item["reason"] for item in result.not_applicable}
    assert "unequal norms" in missing["theory_lambda_min_lower_hermite"]
    assert "theory_lambda_min_upper_interlacing" in names
    assert int(names["theory_positive_definite"].data) == 1
    assert all(row["holds"] is not False for row in result.table)


def test_relu_without_bias_gets_nguyen_bounds_converted():
    X = gaussian(400, 30, 2)
    net = MLP(2)
    result, values = run(X, net, budget=2.0)
    names = by_name(result)
    assert "theory_lambda_min_lower_nguyen_gershgorin" in names
    assert "theory_lambda_min_lower_nguyen_hadamard" in names
    attrs = names["theory_lambda_min_lower_nguyen_hadamard"].attrs
    assert "Nguyen" in attrs["citation"] and "converted" in attrs["convention"]
    assert result.eigendecompositions <= 2
    for row in result.table:
        assert row["holds"] is not False, row


def test_top_k_spectrum_compares_only_what_was_computed():
    X = sphere(400, 4, 3)
    net = MLP(2, "erf", 1.0, 0.1)
    result, values = run(X, net, k=30, sphere_radius=1.0)
    names = by_name(result)
    assert len(names["theory_sphere_eigenvalue"].data) == 30
    assert all(k <= 30 for k in result.coords["theory_k"][1])
    lower = [row for row in result.table if row["quantity"] == "lambda_min"]
    assert lower and all(row["computed"] is None for row in lower)


def test_budget_zero_skips_dense_bounds():
    X = sphere(300, 5, 4)
    result, _ = run(X, MLP(2), budget=0.0)
    skipped = {item["name"] for item in result.skipped}
    assert {"theory_lambda_min_lower_hermite", "theory_lambda_min_lower_nguyen_hadamard"} <= skipped
    assert result.eigendecompositions == 0


def test_polynomial_activation_gets_the_rank_bound():
    X = gaussian(120, 4, 11)
    net = MLP(2, Quadratic(0.1, 0.5, 1.0), 1.0, 0.1)
    result, values = run(X, net)
    names = by_name(result)
    assert int(names["theory_rank_upper"].data) == 70
    assert int(names["theory_positive_definite"].data) == -1
    row = next(r for r in result.table if r["prediction"] == "polynomial_rank")
    assert row["computed"] == 70 and row["holds"]


def test_nngp_kind():
    X = sphere(300, 3, 5)
    net = MLP(3, "relu", 2.0, 0.05)
    result, values = run(X, net, kind="nngp", sphere_radius=1.0)
    names = by_name(result)
    assert "theory_sphere_eigenvalue" in names and "theory_lambda_min_lower_hermite" in names
    assert int(names["theory_positive_definite"].data) == 0  # the theorem is about the NTK
    assert all(row["holds"] is not False for row in result.table)


def test_finite_width_run_gets_only_what_holds_at_any_width():
    from ntkdist.kernels.empirical import empirical_ntk

    X = sphere(300, 3, 6)
    net = MLP(2, "relu", 2.0, 0.1)
    K = empirical_ntk(X, net=net, width=256, seed=0)
    values = np.linalg.eigvalsh(K)[::-1]
    result = compare_spectrum(X, net, kind="empirical_ntk", eigenvalues=values, trace=float(np.trace(K)), gram=K,
                              sphere_radius=1.0)
    names = by_name(result)
    assert "infinite-width" in names["theory_sphere_eigenvalue"].attrs["kernel"]
    assert not any(name.startswith("theory_lambda") for name in names)
    assert any("finite-width sample" in item["reason"] for item in result.not_applicable)
    assert int(names["theory_positive_definite"].data) == 0
    # the limit is listed against the sampled spectrum (how far a width-256 draw is from it is the user's question)
    top = next(row for row in result.table if row["prediction"] == "sphere_cluster_k0")
    assert top["ratio"] > 0 and top["holds"] is None


def test_scalar_inputs_and_ascending_eigenvalues():
    """Rank-1 data (d = 1) end the generic-bound search (it once looped forever); ascending input is refused."""
    X = np.linspace(-2.0, 3.0, 10)[:, None]
    net = MLP(depth=2, bias_var=0.2)
    K = ntkdist.ntk(X, net=net)
    values = np.linalg.eigvalsh(K)[::-1]
    result = compare_spectrum(X, net, kind="ntk", eigenvalues=values, trace=float(np.trace(K)), gram=K)
    assert result.variables
    with pytest.raises(ValueError, match="descending"):
        compare_spectrum(X, net, kind="ntk", eigenvalues=values[::-1], trace=float(np.trace(K)), gram=K)
