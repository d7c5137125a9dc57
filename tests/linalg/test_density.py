"""Stochastic Lanczos quadrature against the exact spectrum; the exact trace."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from ntkdist.linalg import DenseOperator
from ntkdist.linalg.density import cdf_at, gauss_quadrature, quadrature_cdf, spectral_density
from ntkdist.linalg.summaries import trace


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1):
        yield


def exact_cdf(eigenvalues, x):
    return np.searchsorted(np.sort(eigenvalues), x, side="right") / eigenvalues.size


def deciles(eigenvalues):
    return np.quantile(eigenvalues, np.linspace(0.1, 0.9, 9))


def test_gauss_rule_cms_interval_holds_for_a_known_measure():
    rng = np.random.default_rng(0)
    lam = np.sort(rng.uniform(0, 1, 500))
    v = rng.standard_normal(500)
    v /= np.linalg.norm(v)
    # Lanczos on diag(lam) from v, with full reorthogonalisation (exact-arithmetic behaviour).
    Q = [v]
    alpha, beta = [], []
    for j in range(12):
        w = lam * Q[-1]
        alpha.append(Q[-1] @ w)
        for q in Q:
            w -= q * (q @ w)
        beta.append(np.linalg.norm(w))
        Q.append(w / beta[-1])
    nodes, weights = gauss_quadrature(np.array(alpha), np.array(beta[:-1]))
    x = np.linspace(-0.1, 1.1, 200)
    estimate, bound = quadrature_cdf(nodes, weights, x)
    true = np.array([np.sum(v[lam <= t] ** 2) for t in x])
    assert np.all(np.abs(estimate - true) <= bound + 1e-12)


def test_density_2000_is_a_probability_and_its_errors_hold(relu_ntk_2000):
    K, exact = relu_ntk_2000
    operator = DenseOperator(K)
    result = spectral_density(operator, seed=0, steps=30, probes=20, bins=40)
    assert result.method == "slq" and result.passes == operator.passes == 30 + 2  # + the deflated subspace
    assert result.mass.sum() == pytest.approx(1.0, abs=1e-12) and np.all(result.mass >= -1e-12)
    assert np.all(np.diff(np.log(result.edges)) == pytest.approx(np.log(result.edges[1] / result.edges[0])))
    assert result.edges[0] <= exact[0] * 1.5 and result.edges[-1] >= exact[-1] * (1 - 1e-8)
    truth = exact_cdf(exact, result.edges)
    assert np.all(np.abs(result.info["cdf"] - truth) <= result.cdf_error)
    assert np.max(np.abs(cdf_at(result, deciles(exact)) - exact_cdf(exact, deciles(exact)))) <= 0.03


def test_linear_bins_and_plain_slq(relu_ntk_2000):
    K, exact = relu_ntk_2000
    result = spectral_density(DenseOperator(K), seed=1, steps=30, probes=20, bins=25, scale="linear", deflate=0)
    assert result.passes == 30
    np.testing.assert_allclose(np.diff(result.edges), np.diff(result.edges)[0], rtol=1e-9)
    assert np.all(np.abs(result.info["cdf"] - exact_cdf(exact, result.edges)) <= result.cdf_error)


def test_trace_is_exact(relu_ntk_2000):
    K, exact = relu_ntk_2000
    assert trace(DenseOperator(K).diagonal()) == pytest.approx(float(np.trace(K)), rel=1e-15)
    assert trace(DenseOperator(K).diagonal()) == pytest.approx(float(exact.sum()), rel=1e-10)


@pytest.mark.slow
def test_density_8000_cdf_at_the_deciles_within_003(relu_ntk_8000):
    K, exact = relu_ntk_8000
    result = spectral_density(DenseOperator(K), seed=0)  # defaults: 40 steps, 30 probes, 60 log bins
    at = deciles(exact)
    worst = np.max(np.abs(cdf_at(result, at) - exact_cdf(exact, at)))
    print(f"\nSLQ N=8000: worst decile CDF error {worst:.4f}, passes {result.passes}, "
          f"max cdf_error {result.cdf_error.max():.3f}")
    assert worst <= 0.03
    assert np.all(np.abs(result.info["cdf"] - exact_cdf(exact, result.edges)) <= result.cdf_error)
