"""The compare stage's theory (ntkdist.theory.compare) as stored (ntkdist.store.theory_variables): every applicable
prediction, with citing attrs, against the spectrum."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ntkdist
from ntkdist.kernels import MLP
from ntkdist.store.theory_variables import theory_variables
from ntkdist.theory import compare

from ..helpers import Quadratic, assert_every_bound_holds, gaussian, sphere


def compare_spectrum(*args, **kwargs):
    """The compare as the pipeline stores it: typed theory results mapped to the ``theory_*`` variables."""
    return theory_variables(compare.compare_spectrum(*args, **kwargs))


class CountingOperator:
    """A SymmetricOperator (ntkdist.linalg.operator protocol) over a matrix held by the test, counting passes.

    It exposes products, the diagonal and columns only, so a compare that tried to read the Gram as an array
    could not; ``columns`` is counted too (the compare should never need it).
    """

    def __init__(self, matrix, error_bound=0.0):
        self._matrix = np.asarray(matrix, dtype=np.float64)
        self._passes = 0
        self.column_requests = 0
        self.widest = 0
        self._error = float(error_bound)

    @property
    def shape(self):
        return self._matrix.shape

    @property
    def dtype(self):
        return np.dtype(np.float64)

    @property
    def passes(self):
        return self._passes

    @property
    def error_bound(self):
        return self._error

    def matmat(self, V):
        V = np.asarray(V, dtype=np.float64)
        assert V.ndim == 2 and V.shape[0] == self.shape[0]
        self._passes += 1
        self.widest = max(self.widest, V.shape[1])
        return self._matrix @ V

    def diagonal(self):
        return np.diagonal(self._matrix).copy()

    def columns(self, index):
        self.column_requests += 1
        return self._matrix[:, np.asarray(index)]


def run(X, net, kind="ntk", k=None, pass_budget=8, **kw):
    K = (ntkdist.ntk if kind == "ntk" else ntkdist.nngp)(X, net=net)
    values = np.linalg.eigvalsh(K)[::-1]
    if k is not None:
        values = values[:k]
    operator = CountingOperator(K)
    result = compare_spectrum(X, net, kind=kind, eigenvalues=values, trace=float(np.trace(K)), operator=operator,
                              pass_budget=pass_budget, **kw)
    assert result.passes == operator.passes <= pass_budget and operator.column_requests == 0
    return result, values


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
    assert_every_bound_holds(result.table)
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
    assert_every_bound_holds(result.table)


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
    assert_every_bound_holds(result.table)


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
    assert_every_bound_holds(result.table)


def test_finite_width_run_gets_only_what_holds_at_any_width():
    from ntkdist.kernels.empirical import empirical_ntk

    X = sphere(300, 3, 6)
    net = MLP(2, "relu", 2.0, 0.1)
    K = empirical_ntk(X, net=net, width=256, seed=0)
    values = np.linalg.eigvalsh(K)[::-1]
    result = compare_spectrum(X, net, kind="empirical_ntk", eigenvalues=values, trace=float(np.trace(K)),
                              operator=CountingOperator(K), pass_budget=8, sphere_radius=1.0)
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
    result = compare_spectrum(X, net, kind="ntk", eigenvalues=values, trace=float(np.trace(K)))
    assert result.variables
    with pytest.raises(ValueError, match="descending"):
        compare_spectrum(X, net, kind="ntk", eigenvalues=values[::-1], trace=float(np.trace(K)))


# ================================================================== the solver's results, the operator, large N
def test_centred_effective_rank_through_the_operator_matches_the_dense_value():
    from ntkdist.theory import bounds as B

    X = sphere(500, 3, 0)
    net = MLP(2, "relu", 2.0, 0.1)
    result, values = run(X, net, sphere_radius=1.0, pass_budget=8)
    K = ntkdist.ntk(X, net=net)
    dense = B.centred_effective_rank(K, B.dot_product_form(X, net))
    attrs = by_name(result)["theory_centred_effective_rank_upper"].attrs
    assert attrs["computed"] == pytest.approx(dense, rel=1e-8)
    low, high = attrs["computed_interval"]
    assert low <= dense * (1 + 1e-12) and attrs["holds"]
    assert 2 <= result.passes <= 8 and result.summary()["passes"] == result.passes


def test_without_operator_or_passes_the_centred_value_is_skipped_with_a_reason():
    X = sphere(300, 3, 1)
    net = MLP(2, "relu", 2.0, 0.1)
    K = ntkdist.ntk(X, net=net)
    values = np.linalg.eigvalsh(K)[::-1]
    for kw in ({}, {"operator": CountingOperator(K), "pass_budget": 1}):
        result = compare_spectrum(X, net, kind="ntk", eigenvalues=values, trace=float(np.trace(K)), **kw)
        reasons = {item["name"]: item["reason"] for item in result.skipped}
        assert "computed_centred_effective_rank" in reasons, reasons
        assert by_name(result)["theory_centred_effective_rank_upper"].attrs["computed"] is None
        assert result.passes == 0


def test_solver_lambda_min_is_an_upper_bound_in_the_comparisons():
    """λ_min from a solver is a Rayleigh quotient θ ≥ λ_min: lower bounds hold iff ≤ θ, upper ones iff ≥ θ − err."""
    X = gaussian(300, 30, 2)
    net = MLP(2)
    K = ntkdist.ntk(X, net=net)
    values = np.linalg.eigvalsh(K)[::-1]
    true = float(values[-1])
    kw = dict(kind="ntk", eigenvalues=values[:20], trace=float(np.trace(K)), budget=2.0)
    result = compare_spectrum(X, net, lambda_min=true * (1 + 1e-9), lambda_min_error=1e-6 * true, **kw)
    rows = [r for r in result.table if r["quantity"] == "lambda_min" and r["side"] in ("lower", "upper")]
    assert rows and all(r["holds"] and r["computed_error"] == pytest.approx(1e-6 * true) for r in rows), rows
    attrs = by_name(result)["theory_lambda_min_lower_nguyen_hadamard"].attrs
    assert attrs["computed"] == pytest.approx(true) and attrs["computed_error"] == pytest.approx(1e-6 * true)
    # a Rayleigh quotient far below every lower bound would contradict them (it is an upper bound on λ_min)
    low = compare_spectrum(X, net, lambda_min=1e-3 * true, lambda_min_error=0.0, **kw)
    lower_rows = [r for r in low.table if r["quantity"] == "lambda_min" and r["side"] == "lower"
                  and r["theory"] > 1e-3 * true * 1.01]
    assert lower_rows and all(r["holds"] is False for r in lower_rows)
    # and the upper bounds are checked against θ − error: a huge error keeps them consistent
    wide = compare_spectrum(X, net, lambda_min=10 * true, lambda_min_error=10 * true, **kw)
    assert all(r["holds"] for r in wide.table if r["quantity"] == "lambda_min" and r["side"] == "upper")


def test_partial_spectrum_beyond_max_n_never_forms_an_n_by_n_matrix():
    """N above max_n (simulated small): top-M + λ_min from a solver, the operator for products, no N×N anywhere."""
    import tracemalloc

    n, m = 1500, 20
    X = sphere(n, 8, 9)
    net = MLP(2)  # ReLU without bias: every bound family applies (dot-product, Nguyen, interlacing, positivity)
    K = ntkdist.ntk(X, net=net)
    full = np.linalg.eigvalsh(K)[::-1]
    operator = CountingOperator(K)
    trace = float(np.trace(K))
    tracemalloc.start()
    try:
        result = compare_spectrum(X, net, kind="ntk", eigenvalues=full[:m], trace=trace,
                                  lambda_min=float(full[-1]), lambda_min_error=1e-10 * float(full[0]),
                                  operator=operator, pass_budget=6, sphere_radius=1.0, max_n=200, scan_max_n=200)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < n * n * 8 / 2, f"peak {peak / 2**20:.1f} MiB: an N×N array ({n * n * 8 / 2**20:.1f} MiB) was formed"
    assert result.eigendecompositions == 0
    assert result.passes == operator.passes <= 6 and operator.column_requests == 0
    assert operator.widest <= 8  # the driver holds N×b blocks only
    skipped = {item["name"]: item["reason"] for item in result.skipped}
    for name in ("theory_lambda_min_lower_hermite", "theory_lambda_min_lower_nguyen_gershgorin",
                 "theory_lambda_min_lower_nguyen_layer_sum", "theory_lambda_k_upper"):
        assert name in skipped and ("max_n" in skipped[name] or "limited to N" in skipped[name]), (name, skipped)
    names = by_name(result)
    for name in ("theory_positive_definite", "theory_sphere_eigenvalue", "theory_effective_rank_upper",
                 "theory_centred_effective_rank_upper", "theory_lambda_min_upper_trace",
                 "theory_lambda_min_upper_diagonal", "theory_lambda_min_upper_interlacing"):
        assert name in names, name
    assert names["theory_centred_effective_rank_upper"].attrs["computed"] is not None
    assert "projections" in names["theory_lambda_min_upper_interlacing"].attrs["details"]["pair_search"]
    assert len(names["theory_sphere_eigenvalue"].data) == m
    lam_rows = [r for r in result.table if r["quantity"] == "lambda_min" and r["side"] in ("lower", "upper")]
    assert lam_rows and all(r["computed"] == pytest.approx(full[-1]) for r in lam_rows)
    assert_every_bound_holds(result.table)
    json.dumps(result.summary())


def test_operator_shape_and_error_lengths_are_checked():
    X = sphere(50, 3, 3)
    net = MLP(2)
    K = ntkdist.ntk(X, net=net)
    values = np.linalg.eigvalsh(K)[::-1]
    with pytest.raises(ValueError, match="operator"):
        compare_spectrum(X, net, kind="ntk", eigenvalues=values, trace=float(np.trace(K)),
                         operator=CountingOperator(K[:10, :10]), pass_budget=4)
    with pytest.raises(ValueError, match="eigenvalue_error"):
        compare_spectrum(X, net, kind="ntk", eigenvalues=values, trace=float(np.trace(K)),
                         eigenvalue_error=np.zeros(3))


def test_the_table_check_refuses_an_undecided_bound():
    """`holds is None` on a bound that had a computed value to be held against is a failure, not a pass."""
    decided = {"prediction": "theory_lambda_min_upper_trace", "side": "upper", "quantity": "lambda_min",
               "theory": 2.0, "computed": 1.0, "holds": True}
    estimate = {"prediction": "sphere_cluster_k0", "side": "estimate", "quantity": "mean λ", "theory": 2.0,
                "computed": 1.9, "holds": None}
    not_computed = {**decided, "prediction": "theory_lambda_k_upper[k=40]", "computed": None, "holds": None}
    assert_every_bound_holds([decided, estimate, not_computed])
    for bad in ({**decided, "holds": None}, {**decided, "holds": False}, {**estimate, "holds": True}):
        with pytest.raises(AssertionError):
            assert_every_bound_holds([decided, bad])


def test_theory_returns_typed_results_and_names_no_variable():
    """The math room's answer is a list of frozen TheoryResults (paper, equation, conditions, cost, holds)."""
    import dataclasses

    from ntkdist.theory.result import Computed, TheoryResult

    X = sphere(120, 3, 7)
    net = MLP(2)
    K = ntkdist.ntk(X, net=net)
    values = np.linalg.eigvalsh(K)[::-1]
    typed = compare.compare_spectrum(X, net, kind="ntk", eigenvalues=values, trace=float(np.trace(K)),
                                     sphere_radius=1.0)
    assert typed.results and all(isinstance(r, TheoryResult) for r in typed.results)
    with pytest.raises(dataclasses.FrozenInstanceError):
        typed.results[0].value = 0.0
    names = {r.name: r for r in typed.results}
    hermite = names["hermite_lambda_min"]
    assert hermite.side == "lower" and hermite.holds is True and isinstance(hermite.computed, Computed)
    assert hermite.equation and hermite.conditions and hermite.work and hermite.cost <= 1
    nguyen = names["nguyen_hadamard_gershgorin_lambda_min"]
    assert nguyen.paper.startswith("Nguyen") and nguyen.citation == f"{nguyen.paper}, {nguyen.equation}"
    assert not any(r.name.startswith("theory_") for r in typed.results)
    assert not any(item["name"].startswith("theory_") for item in typed.skipped + typed.not_applicable)
    # the store names them, one variable per applicable bound
    stored = theory_variables(typed)
    assert "theory_lambda_min_lower_hermite" in by_name(stored)
