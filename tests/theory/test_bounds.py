"""Spectral bounds for given data (ntkdist.theory.bounds) held against dense eigenvalues of ntkdist.ntk.

The first section holds a small reference implementation of the power series, independent of ``ntkdist.theory``
(Hermite coefficients by quadrature or closed form, composition form), checked against
ntkdist.ntk and ntkdist.theory.power_series: the bounds are only as good as the coefficients they are fed.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.special

import ntkdist
from ntkdist.kernels import MLP
from ntkdist.kernels.activations import ABReLU
from ntkdist.theory import bounds as B

from ..helpers import Quadratic, gaussian, sphere


# ======================================================================================================== reference
def _scaled_hermite_squares(act, q: float, count: int) -> np.ndarray:
    """a_k(q)² = E[φ(√q Z) h_k(Z)]², k < count (normalised probabilists' Hermite h_k)."""
    if isinstance(act, ABReLU):
        alpha, beta = 0.5 * (act.a + act.b), 0.5 * (act.b - act.a)
        mu = np.array([math.sqrt(B.relu_hermite_coefficient_squared(k)) for k in range(count)])
        out = (2.0 * beta * mu) ** 2
        out[1] = alpha ** 2       # |x| has no linear term, x only a linear one
        return q * out
    nodes, weights = scipy.special.roots_hermitenorm(400)
    weights = weights / math.sqrt(2.0 * math.pi)
    values = np.asarray(act(math.sqrt(q) * nodes), dtype=np.float64)
    # ψ_k = h_k·e^{−x²/4} keeps the recurrence in range; the weights carry e^{+x²/4}
    damp = np.exp(-nodes ** 2 / 4.0)
    w = weights / damp
    prev, cur = np.zeros_like(nodes), damp.copy()
    out = np.empty(count)
    for k in range(count):
        out[k] = float(np.sum(w * values * cur)) ** 2
        prev, cur = cur, (nodes * cur - math.sqrt(k) * prev) / math.sqrt(k + 1)
    return out


def _compose(coeffs: np.ndarray, u: np.ndarray, order: int) -> np.ndarray:
    """Σ_k coeffs[k]·u(z)^k truncated at z^order (Horner)."""
    out = np.zeros(order + 1)
    for a in coeffs[::-1]:
        out = np.convolve(out, u)[:order + 1]
        out[0] += a
    return out


@dataclass
class ReferenceSeries:
    coefficients: np.ndarray
    total: float

    @property
    def tail(self):
        return max(self.total - float(self.coefficients.sum()), 0.0)

    def __call__(self, t):
        """The truncated series (|error| ≤ tail·|t|^{order+1})."""
        return np.polynomial.polynomial.polyval(t, self.coefficients)


def reference_power_series(net, order, *, dim, kind="ntk", radius=1.0, hermite_terms=400):
    """Θ(ρ) = Σ_p κ_p ρ^p for inputs of norm ``radius`` in R^dim (stax), composition form."""
    act, w, b = net.activation, net.weight_var, net.bias_var
    s = np.zeros(order + 1)
    s[0], s[1] = b, w * radius ** 2 / dim
    q = s[0] + s[1]
    theta = s.copy()
    for _ in range(net.depth):
        a2 = _scaled_hermite_squares(act, q, hermite_terms + 1)
        da2 = np.arange(1, hermite_terms + 1) * a2[1:] / q     # a'_k² = (k+1)·a_{k+1}²/q (Stein)
        u = s / q
        s_next = w * _compose(a2[:hermite_terms], u, order)
        s_next[0] += b
        d = w * _compose(da2, u, order)
        theta = s_next + np.convolve(d, theta)[:order + 1]
        s = s_next
        q = w * float(np.asarray(act.second_moment(q))) + b
    total = float(B.kernel_diagonal(np.full((1, dim), radius / math.sqrt(dim)), net, kind)[0])
    return ReferenceSeries(theta if kind == "ntk" else s, total)


# ============================================================================================== data and helpers
def rounding(values, n):
    """The rounding scale of computed eigenvalues of an N×N matrix."""
    return 8.0 * n * np.finfo(float).eps * float(np.max(np.abs(values)))


# ============================================================================================ the reference itself
@pytest.mark.parametrize("net", [MLP(1), MLP(2, "relu", 2.0, 0.3), MLP(2, "erf", 1.5, 0.2), MLP(3, "leaky_relu(0.2)"),
                                 MLP(2, Quadratic(0.1, 0.5, 1.0), 1.0, 0.1)])
def test_reference_series_reproduces_ntk(net):
    dim, radius = 5, 1.7
    series = reference_power_series(net, 200, dim=dim, radius=radius)
    assert (series.coefficients >= -1e-14).all()
    rho = np.linspace(-0.9, 0.9, 13)
    x = np.zeros((1, dim)); x[0, 0] = radius
    Y = np.zeros((len(rho), dim)); Y[:, 0] = radius * rho; Y[:, 1] = radius * np.sqrt(1 - rho ** 2)
    np.testing.assert_allclose(series(rho), ntkdist.ntk(x, Y, net=net)[0], rtol=1e-9)


def test_reference_series_matches_ntkdist_power_series():
    from ntkdist.theory.power_series import power_series

    for net in (MLP(2), MLP(2, "erf", 1.5, 0.2), MLP(3, "relu", 2.0, 0.1)):
        ours = power_series(net, 64, dim=7, radius=1.3)
        ref = reference_power_series(net, 64, dim=7, radius=1.3)
        np.testing.assert_allclose(np.asarray(ours.coefficients)[:65], ref.coefficients, rtol=1e-8, atol=1e-13)
        assert ours.total == pytest.approx(ref.total, rel=1e-12)


# ================================================================================================ conventions
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("weight_var", [2.0, 1.3])
@pytest.mark.parametrize("data", ["gaussian", "sphere"])
def test_nguyen_limit_kernel_is_the_stax_ntk_after_conversion(depth, weight_var, data):
    X = gaussian(150, 12, depth) if data == "gaussian" else sphere(150, 12, depth, radius=math.sqrt(12))
    net = MLP(depth, "relu", weight_var, 0.0)
    factor = B.nguyen_to_stax_factor(net, 12)
    if weight_var == 2.0:
        assert factor == 2.0 / 12
    K_nguyen = B.nguyen_limit_kernel(X, depth + 1)
    K = ntkdist.ntk(X, net=net)
    np.testing.assert_allclose(factor * K_nguyen, K, rtol=1e-12, atol=1e-14 * np.abs(K).max())
    # their diagonal K^(L)_ii = L‖x_i‖²
    np.testing.assert_allclose(np.diag(K_nguyen), (depth + 1) * (X ** 2).sum(1), rtol=1e-13)
    Gs, _ = B.nguyen_layer_kernels(X, depth + 1)
    S = ntkdist.nngp(X, net=net)
    np.testing.assert_allclose(factor * Gs[-1], S, rtol=1e-12, atol=1e-14 * np.abs(S).max())


def test_nguyen_convention_refuses_other_networks():
    for net in (MLP(2, "relu", 2.0, 0.1), MLP(2, "erf"), MLP(2, "leaky_relu(0.1)")):
        with pytest.raises(ValueError, match="Nguyen"):
            B.nguyen_to_stax_factor(net, 3)
        assert not B.nguyen_hadamard_lower_bound(gaussian(20, 3, 0), net).applies


@pytest.mark.parametrize("net", [MLP(3), MLP(2, "erf", 1.5, 0.2), MLP(1, "leaky_relu(0.1)", 1.0, 0.3),
                                 MLP(2, "abs"), MLP(2, Quadratic(0.2, 1.0, 0.5))])
def test_kernel_diagonal_matches_ntk(net):
    X = gaussian(100, 6, 1)
    for kind, fn in (("ntk", ntkdist.ntk), ("nngp", ntkdist.nngp)):
        np.testing.assert_allclose(B.kernel_diagonal(X, net, kind), np.diag(fn(X, net=net)), rtol=1e-13)


def test_relu_hermite_coefficients():
    # μ_r² = ((r−3)!!)²/(2π r!) for even r ≥ 2 (Nguyen Sec. 2 values)
    assert B.relu_hermite_coefficient_squared(2) == pytest.approx(1 / (4 * math.pi))
    assert B.relu_hermite_coefficient_squared(4) == pytest.approx(0.00663, abs=5e-6)
    assert B.relu_hermite_coefficient_squared(6) == pytest.approx(0.00199, abs=5e-6)
    for r in range(2, 40, 2):
        dfact = scipy.special.factorial2(r - 3, exact=True) if r > 2 else 1
        assert B.relu_hermite_coefficient_squared(r) == pytest.approx(dfact ** 2 / (2 * math.pi * math.factorial(r)),
                                                                      rel=1e-12)
    assert B.relu_hermite_coefficient_squared(7) == 0.0
    # Σ μ_r² = E[ReLU(Z)²] = 1/2
    assert sum(B.relu_hermite_coefficient_squared(r) for r in range(4000)) == pytest.approx(0.5, abs=2e-4)
    from ntkdist.theory.hermite import hermite_coefficients

    mu = hermite_coefficients("relu", 20)
    np.testing.assert_allclose(np.asarray(mu) ** 2, [B.relu_hermite_coefficient_squared(r) for r in range(21)],
                               rtol=1e-10, atol=1e-15)


# ====================================================================================== pieces of the λ_min chain
def test_nguyen_hadamard_step_keeps_the_factor_two():
    """λ_min(G^(2)) ≥ 2μ_r² λ_min((XXᵀ)^∘r)/max‖x‖^{2(r−1)}: the factor 2 the paper's proof drops is valid."""
    for seed, (n, d) in enumerate([(60, 8), (150, 30), (200, 60)]):
        X = gaussian(n, d, seed)
        G2 = B.nguyen_layer_kernels(X, 2)[0][1]
        lam_G2 = np.linalg.eigvalsh(G2)[0]
        sq = (X ** 2).sum(1)
        for r in (2, 4, 6):
            lam_r = np.linalg.eigvalsh((X @ X.T) ** r)[0]
            bound = 2 * B.relu_hermite_coefficient_squared(r) * max(lam_r, 0) / sq.max() ** (r - 1)
            assert lam_G2 >= bound - rounding(G2, n)
        # Gershgorin (row-wise ≥ the paper's coarse form) really bounds λ_min((XXᵀ)^∘r)
        for r in (2, 4, 8):
            A = (X @ X.T) ** r
            value, _, info = B.hadamard_power_lambda_min(X, r, "gershgorin", B.EIGEN_MAX_N)
            assert value <= np.linalg.eigvalsh(A)[0] + rounding(A, n)
            assert info["nguyen_printed_gershgorin"] <= value


def test_layer_sum_general_equals_nguyen_for_relu_and_holds_for_others():
    X = gaussian(120, 10, 3)
    net = MLP(3, "relu", 2.0, 0.0)
    general, nguyen = B.layer_sum_lower_bound(X, net), B.nguyen_layer_sum_lower_bound(X, net)
    assert general.value == pytest.approx(nguyen.value, rel=1e-9)
    for net in (MLP(2, "erf", 1.5, 0.3), MLP(3, "leaky_relu(0.1)", 1.7, 0.1), MLP(2, "relu", 2.0, 0.5)):
        K = ntkdist.ntk(X, net=net)
        assert B.layer_sum_lower_bound(X, net).value <= np.linalg.eigvalsh(K)[0] + rounding(K, 120)
        assert B.layer_sum_lower_bound(X, net).value > 0


def test_hadamard_power_lambda_min_is_non_decreasing_and_cached():
    P = B.HadamardPowers(sphere(300, 6, 0))
    G = P.gram()
    lams = [np.linalg.eigvalsh(G ** p)[0] for p in range(1, 9)]
    assert all(b >= a - 1e-12 for a, b in zip(lams, lams[1:]))
    for p in range(1, 9):
        if P.is_singular(p):  # C(6+p−1, p) < 300 ⇒ singular
            assert abs(lams[p - 1]) < 1e-10
        else:
            assert P.lambda_min(p) <= lams[p - 1] + 1e-12
    used = P.eigendecompositions
    P.lambda_min(8)
    assert P.eigendecompositions == used
    gersh = P.gershgorin([3, 8, 20])
    assert gersh[8] <= lams[7] + 1e-12


@pytest.mark.parametrize("r,n", [(3, 400), (4, 600), (7, 900)])
def test_sphere_polynomial_count_bounds_the_rank_of_truncated_kernels(r, n):
    X = sphere(n, r, r)
    c = reference_power_series(MLP(2, "erf", 1.5, 0.2), 8, dim=r).coefficients
    G = X @ X.T
    for m in range(1, 6):
        H = sum(c[j] * G ** j for j in range(m))
        values = np.linalg.eigvalsh(H)
        rank = int((values > 1e-9 * values[-1]).sum())
        count = B.sphere_polynomial_count(r, m)
        assert rank <= count <= math.comb(r + m - 1, r)
        if count < n:
            assert rank == count  # generic data: the count is attained


# =========================================================================================== λ_min: the sandwich
_SANDWICH = [  # (data, N, d, network) — 20 data sets, Gaussian and sphere, d ∈ {20, 50, 100}, N in [200, 1200]
    ("sphere", 200, 20, MLP(2)), ("gaussian", 200, 20, MLP(2)), ("sphere", 300, 50, MLP(3)),
    ("gaussian", 400, 100, MLP(1)), ("sphere", 500, 20, MLP(2, "relu", 2.0, 0.2)),
    ("gaussian", 600, 50, MLP(2)), ("sphere", 700, 100, MLP(2, "erf", 1.5, 0.2)),
    ("gaussian", 800, 20, MLP(3)), ("sphere", 900, 50, MLP(2)), ("gaussian", 1000, 100, MLP(2, "relu", 1.0, 0.0)),
    ("sphere", 1000, 20, MLP(1, "leaky_relu(0.2)", 2.0, 0.1)), ("gaussian", 1200, 50, MLP(2, "leaky_relu(0.2)")),
    ("sphere", 1200, 100, MLP(4)), ("gaussian", 900, 20, MLP(2, "erf", 1.0, 0.1)), ("sphere", 1000, 50, MLP(2)),
    ("gaussian", 1100, 100, MLP(3)), ("sphere", 1200, 20, MLP(2, "erf", 2.0, 0.0)), ("gaussian", 1200, 50, MLP(2)),
    ("sphere", 1100, 100, MLP(2, "relu", 2.0, 0.1)), ("gaussian", 1200, 20, MLP(2)),
]
# Each data set costs about six dense eigendecompositions (the matrix and the bounds' Hadamard powers and layer
# kernels); N ≤ 1200 keeps the sandwich near 25 s on two cores (at N = 2000 it took 70 s).


def lambda_min_bounds(X, net):
    """Every λ_min bound that applies to (X, net): lower and upper lists of Bound."""
    found = [B.hermite_lambda_min_lower_bound(X, net, exact_powers=2),
             B.nguyen_hadamard_lower_bound(X, net, method="exact"),
             B.nguyen_hadamard_lower_bound(X, net, method="gershgorin"),
             B.nguyen_layer_sum_lower_bound(X, net), B.layer_sum_lower_bound(X, net),
             B.trace_upper_bound(X, net), B.diagonal_upper_bound(X, net), B.interlacing_upper_bound(X, net)]
    applies = [b for b in found if b.applies]
    return [b for b in applies if b.side == "lower"], [b for b in applies if b.side == "upper"]


@pytest.mark.slow
def test_lambda_min_lies_between_every_bound(record_property, capsys):
    rows = []
    start = time.perf_counter()
    for index, (data, n, d, net) in enumerate(_SANDWICH):
        X = sphere(n, d, index) if data == "sphere" else gaussian(n, d, index)
        K = ntkdist.ntk(X, net=net)
        values = np.linalg.eigvalsh(K)
        lam, slack = float(values[0]), rounding(values, n)
        lower, upper = lambda_min_bounds(X, net)
        assert len(lower) >= 1 and len(upper) >= 3
        for b in lower:
            assert b.value <= lam + slack, (data, n, d, net, b.name, b.value, lam)
        for b in upper:
            assert b.value >= lam - slack, (data, n, d, net, b.name, b.value, lam)
        rows.append((data, n, d, net.activation.describe(), net.depth, net.bias_var, lam,
                     {b.name: b.value / lam for b in lower + upper}))
    elapsed = time.perf_counter() - start
    record_property("lambda_min_tightness", json.dumps(rows, default=float))  # plain text: xdist ships it
    with capsys.disabled():
        print(f"\nλ_min sandwich on {len(rows)} data sets in {elapsed:.1f} s; bound/λ_min:")
        for row in rows:
            ratios = ", ".join(f"{k.replace('_lambda_min', '')}={v:.3g}" for k, v in row[7].items())
            print(f"  {row[0]:8s} N={row[1]:4d} d={row[2]:3d} {row[3]} L={row[4]} b={row[5]:g} "
                  f"λ_min={row[6]:.4g}: {ratios}")
    # the Hermite bound applies wherever the kernel reduces to a dot-product form, with real content on sphere data
    herm = [r[7]["hermite_lambda_min"] for r in rows if "hermite_lambda_min" in r[7] and r[0] == "sphere"]
    assert len(herm) == 10 and min(herm) > 0


# ============================================================================================= λ_k upper bound
@pytest.mark.parametrize("case", ["sphere-erf", "sphere-relu-bias", "normalised-gaussian", "homogeneous-raw"])
def test_generic_upper_bound_holds(case):
    n, d = 600, 5
    if case == "sphere-erf":
        X, net = sphere(n, d, 0, radius=2.0), MLP(2, "erf", 1.5, 0.2)
    elif case == "sphere-relu-bias":
        X, net = sphere(n, d, 1), MLP(3, "relu", 2.0, 0.1)
    elif case == "normalised-gaussian":
        X = gaussian(n, d, 2) * np.linspace(1, 3, d)  # anisotropic, then normalised
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        net = MLP(2, "leaky_relu(0.1)", 2.0, 0.05)
    else:
        X, net = gaussian(n, d, 3), MLP(2)
    values = np.linalg.eigvalsh(ntkdist.ntk(X, net=net))[::-1]
    ks = np.array([1, 2, 3, 6, 7, 20, 21, 40, 56, 57, 120, 127, 300, 600])
    bound = B.generic_eigenvalue_upper_bound(X, net, ks)
    assert bound.applies and bound.details["rank"] == d
    assert np.isnan(bound.value[0])  # k = 1: no admissible m
    held = ~np.isnan(bound.value)
    assert held.sum() >= 12
    assert np.all(values[ks[held] - 1] <= bound.value[held] * (1 + 1e-10) + rounding(values, n))
    # at least as tight as the paper's form λ_1(G^⊙m)·Σ_{j≥m} c_j with the monomial count C(r+m−1, r)
    form = B.dot_product_form(X, net)
    P = form.powers
    for k, value in zip(ks[held], bound.value[held]):
        ms = [m for m in range(1, 20) if math.comb(d + m - 1, d) < k]
        m = max(ms)
        reference = P.lambda_max(m) * form.tail(m) * form.max_scale2
        assert value <= reference * (1 + 1e-12)


# ======================================================================================== effective-rank bounds
def _effective_rank_cases():
    from sklearn.datasets import load_digits

    digits = load_digits().data.astype(float)
    digits = digits[np.linalg.norm(digits, axis=1) > 0]
    yield "digits-normalised", digits / np.linalg.norm(digits, axis=1, keepdims=True), MLP(2, "erf", 1.5, 0.2)
    yield "digits-normalised-relu", digits / np.linalg.norm(digits, axis=1, keepdims=True), MLP(3, "relu", 2.0, 0.1)
    yield "digits-raw-relu", digits, MLP(2)  # homogeneous, no bias: any norms
    yield "gaussian-normalised", sphere(1000, 30, 5), MLP(2, "leaky_relu(0.2)", 2.0, 0.3)
    yield "gaussian-raw-relu", gaussian(1000, 30, 6), MLP(3, "relu", 1.5, 0.0)


@pytest.mark.parametrize("name,X,net", list(_effective_rank_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_effective_rank_bounds_hold(name, X, net):
    K = ntkdist.ntk(X, net=net)
    values = np.linalg.eigvalsh(K)
    eff = B.effective_rank(values, trace=float(np.trace(K)))
    first = B.effective_rank_bound(X, net)
    assert first.applies and eff <= first.value * (1 + 1e-10), (eff, first.value)
    centred = B.centred_effective_rank_bound(X, net)
    form = B.dot_product_form(X, net)
    eff_centred = B.centred_effective_rank(K, form)
    assert centred.applies and eff_centred <= centred.value * (1 + 1e-8), (eff_centred, centred.value)
    # the quantities are not vacuous: the bounds are within a modest factor
    assert first.value < 20 * eff and centred.value < 50 * eff_centred


def test_dot_product_bounds_say_when_they_do_not_apply():
    X = gaussian(50, 4, 0)
    for net in (MLP(2, "relu", 2.0, 0.1), MLP(2, "erf")):
        for bound in (B.effective_rank_bound(X, net), B.hermite_lambda_min_lower_bound(X, net),
                      B.generic_eigenvalue_upper_bound(X, net, [10]), B.centred_effective_rank_bound(X, net)):
            assert not bound.applies and np.all(np.isnan(bound.value))
            assert "unequal norms" in bound.reason and "normalise" in bound.reason
    # an even activation without bias has no linear term: Thm 4.3 does not apply, Thm 4.1 does
    Xs = sphere(50, 4, 0)
    assert not B.centred_effective_rank_bound(Xs, MLP(2, "abs")).applies
    assert B.effective_rank_bound(Xs, MLP(2, "abs")).applies


def test_dense_bounds_refuse_above_max_n():
    X = sphere(300, 4, 0)
    net = MLP(2)
    with pytest.raises(B.TooLargeError, match="N ≤ 100"):
        B.hermite_lambda_min_lower_bound(X, net, max_n=100)
    with pytest.raises(B.TooLargeError, match="N ≤ 100"):
        B.layer_sum_lower_bound(X, net, max_n=100)
    with pytest.raises(B.TooLargeError):
        B.nguyen_layer_sum_lower_bound(X, net, max_n=100)
    with pytest.raises(B.TooLargeError):
        B.generic_eigenvalue_upper_bound(X, net, [50], max_n=100)
    # the streaming bounds work at any N
    assert B.nguyen_hadamard_lower_bound(X, net, method="gershgorin").applies
    assert B.interlacing_upper_bound(X, net).applies
