"""Power series of the NTK/NNGP (ntkdist.theory.power_series) against the closed-form kernels and Murray et al."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ntkdist
from ntkdist.kernels import MLP
from ntkdist.theory import (
    murray_power_series,
    murray_theorem_3_1,
    murray_two_layer_coefficients,
    power_series,
)


def unit_pairs(dim: int, rho, radius: float = 1.0):
    """x = r·e_1 and rows y_j = r(ρ_j e_1 + √(1−ρ_j²) e_2) in R^dim."""
    rho = np.asarray(rho, dtype=float)
    X = np.zeros((1, dim))
    X[0, 0] = radius
    Y = np.zeros((rho.size, dim))
    Y[:, 0] = radius * rho
    Y[:, 1] = radius * np.sqrt(1.0 - rho * rho)
    return X, Y


def closed_form(net, dim, rho, kind="ntk", radius=1.0):
    X, Y = unit_pairs(dim, rho, radius)
    fn = ntkdist.ntk if kind == "ntk" else ntkdist.nngp
    return np.asarray(fn(X, Y, net=net))[0]


def murray_relu_closed_form(rho, layers, gamma_w2, gamma_b2, sigma_w2, sigma_b2):
    """Θ^{(l)} of Murray's network (paper convention, Murray et al. §3) for ReLU with unit-norm inputs.

    Written out independently: arc-cosine kernel (Cho & Saul 2009) on the variances of every layer.
    """
    rho = np.asarray(rho, dtype=float)
    s = gamma_w2 * rho + gamma_b2
    q = gamma_w2 + gamma_b2
    theta = s
    for _ in range(layers - 1):
        c = np.clip(s / q, -1.0, 1.0)
        angle = np.arccos(c)
        e_phiphi = q * (np.sin(angle) + (np.pi - angle) * c) / (2 * np.pi)
        e_dphidphi = (np.pi - angle) / (2 * np.pi)
        s = sigma_w2 * e_phiphi + sigma_b2
        theta = s + sigma_w2 * e_dphidphi * theta
        q = sigma_w2 * q / 2 + sigma_b2
    return theta


# -------------------------------------------------------------------------------------------- Murray et al. 2023

def test_murray_table_1():
    """Table 1: ReLU, γ_w² = 1, γ_b² = 0, σ_w² = 1, σ_b² = 1/2, two layers: Σ_{p≤T} κ_{p,2}/Σ κ_{p,2} for T = 0..5."""
    ps = murray_power_series("relu", 60, layers=2, gamma_w2=1.0, gamma_b2=0.0, sigma_w2=1.0, sigma_b2=0.5)
    share = 100 * ps.cumulative_share()[:6]
    np.testing.assert_allclose(np.round(share, 3), [43.944, 77.277, 93.192, 93.192, 95.403, 95.403], atol=1e-9)
    # Θ^{(2)}(x, x) = Σ^{(2)} + Σ^{(1)}·χ with Σ^{(2)}(x, x) = 1 (σ_w² E ReLU² + σ_b² = 1/2 + 1/2), Σ^{(1)} = 1 and
    # χ = σ_w² E[ReLU'(Z)²] = 1/2: 1.5.
    assert ps.total == pytest.approx(1.5, rel=1e-15)


@pytest.mark.parametrize("layers", [2, 3, 4])
@pytest.mark.parametrize("sigma_b2", [0.0, 0.3])
def test_printed_theorem_is_right_without_first_layer_bias(layers, sigma_b2):
    """Theorem 3.1 as printed = the composition form when γ_b = 0, γ_w² = 1."""
    kwargs = dict(layers=layers, gamma_w2=1.0, gamma_b2=0.0, sigma_w2=2.0 - 2 * sigma_b2, sigma_b2=sigma_b2)
    printed = murray_theorem_3_1("relu", 120, **kwargs)
    composed = murray_power_series("relu", 120, **kwargs).coefficients
    np.testing.assert_allclose(printed, composed, rtol=1e-12, atol=1e-15)


def test_eq4_is_the_printed_two_layer_theorem():
    for gamma_b2 in (0.0, 0.3):
        kwargs = dict(gamma_w2=1.0 - gamma_b2, gamma_b2=gamma_b2, sigma_w2=1.0, sigma_b2=0.5)
        np.testing.assert_allclose(murray_two_layer_coefficients("erf", 80, **kwargs),
                                   murray_theorem_3_1("erf", 80, layers=2, **kwargs), rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("layers", [2, 3])
def test_printed_theorem_is_wrong_with_first_layer_bias(layers):
    """The erratum of `ntkdist.theory.power_series`: with γ_w² = 0.7, γ_b² = 0.3 (σ_w² = 2, σ_b² = 0) the printed base case misses the
    true NTK (0.468 vs 0.662 at ρ = 0 for two layers); the composition form reproduces it; both agree at ρ = 1."""
    kwargs = dict(layers=layers, gamma_w2=0.7, gamma_b2=0.3, sigma_w2=2.0, sigma_b2=0.0)
    rho = np.linspace(-0.5, 0.5, 11)
    truth = murray_relu_closed_form(rho, **kwargs)
    composed = murray_power_series("relu", 120, **kwargs)
    printed = murray_theorem_3_1("relu", 120, **kwargs)
    np.testing.assert_allclose(composed(rho), truth, rtol=0, atol=1e-13)
    printed_at = np.polynomial.polynomial.polyval(rho, printed)
    assert np.min(np.abs(printed_at - truth)) > 0.1
    if layers == 2:
        assert printed[0] == pytest.approx(0.468, abs=1e-3) and truth[5] == pytest.approx(0.662, abs=1e-3)
    # At ρ = 1 both are right (the wrong argument is exact there): equal partial sums up to the O(P^{−1/2}) tails.
    assert math.fsum(printed) == pytest.approx(composed.total, rel=0.03)


@pytest.mark.parametrize("spec", ["relu", "erf", "tanh"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_paper_convention_is_the_stax_network_with_matching_parameters(spec, depth):
    """Murray's γ_w² = w/d, γ_b² = σ_b² = b, σ_w² = w, l = depth + 1 is the stax network exactly."""
    dim, w, b = 7, 1.6, 0.2
    stax = power_series(MLP(depth, spec, weight_var=w, bias_var=b), 80, dim=dim)
    paper = murray_power_series(spec, 80, layers=depth + 1, gamma_w2=w / dim, gamma_b2=b, sigma_w2=w, sigma_b2=b)
    np.testing.assert_allclose(paper.coefficients, stax.coefficients, rtol=1e-13, atol=1e-16)
    assert paper.total == stax.total


# --------------------------------------------------------------------------------------- against the kernels

ACTIVATIONS = ["relu", "leaky_relu(0.1)", "abs", "erf", "tanh", "gelu", "sigmoid", "softplus", "sin", "identity",
               "polynomial(0.2, 1.0, 0.4)"]


@pytest.mark.parametrize("spec", ACTIVATIONS)
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("bias_var", [0.0, 0.3])
def test_series_reproduces_the_kernel(spec, depth, bias_var):
    """Order 60 reproduces ntkdist.ntk and ntkdist.nngp for unit inputs with |ρ| ≤ 0.5 to 1e-10; κ_p ≥ 0;
    total = Θ(x, x); tail = total − Σ κ_p ≥ 0."""
    net = MLP(depth, spec, weight_var=1.4, bias_var=bias_var)
    dim = 5
    rho = np.linspace(-0.5, 0.5, 21)
    for kind in ("ntk", "nngp"):
        ps = power_series(net, 60, dim=dim, kind=kind)
        kernel = closed_form(net, dim, rho, kind)
        np.testing.assert_allclose(ps(rho), kernel, rtol=0, atol=1e-10 * ps.total)
        assert (ps.coefficients >= 0).all()
        X, _ = unit_pairs(dim, [1.0])
        diagonal = float((ntkdist.ntk if kind == "ntk" else ntkdist.nngp)(X, X, net=net)[0, 0])
        assert ps.total == pytest.approx(diagonal, rel=1e-12)
        # The tail is the exact remainder Θ(x, x) − Σ_{p≤60} κ_p, so it must also bound the truncation error
        # where the series is evaluated (|ρ| ≤ 0.5: at most tail·0.5^61).
        assert ps.tail >= -1e-10 * ps.total  # the tanh/sigmoid/softplus kernels are accurate to 1e-10 only
        assert np.all(np.abs(ps(rho) - kernel) <= max(ps.tail, 0.0) * 0.5 ** 61 + 1e-12 * ps.total)


@pytest.mark.parametrize("spec,dim,radius", [("relu", 3, 1.0), ("relu", 10, 2.5), ("erf", 4, 0.5), ("tanh", 6, 1.7)])
def test_radius_and_dimension(spec, dim, radius):
    net = MLP(2, spec, weight_var=1.2, bias_var=0.1)
    rho = np.linspace(-0.5, 0.5, 9)
    ps = power_series(net, 60, dim=dim, radius=radius)
    np.testing.assert_allclose(ps(rho), closed_form(net, dim, rho, radius=radius), rtol=0, atol=1e-10 * ps.total)


@pytest.mark.parametrize("spec", ["relu", "abs", "erf", "tanh", "gelu"])
@pytest.mark.parametrize("depth,bias_var", [(1, 0.0), (2, 0.2), (3, 0.5)])
def test_truncation_bound_holds_on_the_whole_interval(spec, depth, bias_var):
    """|Θ(ρ) − Σ_{p≤P} κ_p ρ^p| ≤ tail·|ρ|^{P+1} for all ρ ∈ [−1, 1] (κ_p ≥ 0), near ±1 included."""
    net = MLP(depth, spec, weight_var=1.8, bias_var=bias_var)
    ps = power_series(net, 100, dim=3)
    rho = np.concatenate([np.linspace(-1.0, 1.0, 41), [-0.999999, 0.9999, 0.999999]])
    error = np.abs(ps(rho) - closed_form(net, 3, rho))
    assert (error <= ps.truncation_bound(rho) + 1e-10 * ps.total).all()


@pytest.mark.parametrize("spec", ["relu", "leaky_relu(0.2)", "erf", "tanh", "sin"])
@pytest.mark.parametrize("depth,bias_var,dim", [(1, 0.0, 3), (2, 0.3, 3), (3, 0.5, 8)])
def test_composition_and_contour_agree(spec, depth, bias_var, dim):
    """Two independent evaluations of the same coefficients: truncated series arithmetic vs FFT on a circle."""
    net = MLP(depth, spec, weight_var=1.5, bias_var=bias_var)
    for kind in ("ntk", "nngp"):
        a = power_series(net, 300, dim=dim, kind=kind, method="composition")
        b = power_series(net, 300, dim=dim, kind=kind, method="contour")
        np.testing.assert_allclose(a.coefficients, b.coefficients, rtol=0, atol=1e-11 * a.total)


def test_high_order_contour_is_nonnegative_and_sums_to_the_total():
    net = MLP(3, "relu", weight_var=2.0, bias_var=0.1)
    ps = power_series(net, 1 << 15, dim=3)
    assert ps.coefficients.min() >= -1e-14 * ps.total
    assert 0.0 <= ps.tail < 0.01 * ps.total


def test_bad_arguments_name_the_field():
    net = MLP(1, "relu")
    with pytest.raises(ValueError, match="order"):
        power_series(net, -1, dim=3)
    with pytest.raises(ValueError, match="dim"):
        power_series(net, 10, dim=0)
    with pytest.raises(ValueError, match="kind"):
        power_series(net, 10, dim=3, kind="cntk")
    with pytest.raises(ValueError, match="radius"):
        power_series(net, 10, dim=3, radius=-1.0)
    with pytest.raises(ValueError, match="method"):
        power_series(net, 10, dim=3, method="magic")
    with pytest.raises(ValueError, match="layers"):
        murray_power_series("relu", 10, layers=0)


def test_a_constant_layer_does_not_poison_the_series():
    """A layer whose kernel does not depend on ρ (constant φ) once gave NaN coefficients in the composition form."""
    series = power_series(MLP(2, "polynomial(0.7)"), 10, dim=3)
    assert np.all(np.isfinite(series.coefficients)) and series.tail == pytest.approx(0.0, abs=1e-15)
    assert series.coefficients[0] == pytest.approx(series.total) and np.all(series.coefficients[1:] == 0.0)
