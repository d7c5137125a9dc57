"""Certified error bounds (`ntkdist.linalg.certify`) on matrices whose eigenvalues are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from ntkdist.linalg.certify import certified_errors, kato_temple_bound, residual_bound, rounding_term


def _ritz_pairs(eigenvalues, perturbation, rng):
    """Unit vectors u_i = normalised(e_i + perturbation·g) of diag(eigenvalues), their θ_i and ‖Ku_i − θ_iu_i‖."""
    n = eigenvalues.size
    values, residuals = [], []
    for i in range(3):
        u = np.zeros(n)
        u[i] = 1.0
        u += perturbation * rng.standard_normal(n)
        u /= np.linalg.norm(u)
        Ku = eigenvalues * u
        theta = u @ Ku
        values.append(theta)
        residuals.append(np.linalg.norm(Ku - theta * u))
    return np.array(values), np.array(residuals)


def test_kato_temple_contains_the_error_and_is_quadratic():
    rng = np.random.default_rng(0)
    eigenvalues = np.concatenate([[100.0, 50.0, 20.0], rng.uniform(0.0, 5.0, 497)])
    values, residuals = _ritz_pairs(eigenvalues, 1e-6, rng)
    errors, certified = certified_errors(values, residuals, n=eigenvalues.size, side="largest", outer_edge=5.0)
    true = np.abs(values - eigenvalues[:3])
    assert certified.all()
    assert np.all(true <= errors)
    # Quadratic: far below the residual, and within a modest factor of the truth (θ/gap ≤ 20 here).
    assert np.all(errors < 1e-2 * residuals)
    assert np.all(errors <= 50 * np.maximum(true, rounding_term(500, 100.0)))


def test_overlapping_intervals_fall_back_to_the_residual_bound():
    values = np.array([10.0, 9.99])
    residuals = np.array([0.1, 0.1])
    errors, certified = certified_errors(values, residuals, n=100, side="largest", outer_edge=1.0)
    assert not certified.any()
    assert np.allclose(errors, residuals + 2 * rounding_term(100, 10.0))


def test_without_outer_edge_the_far_value_is_not_certified():
    errors, certified = certified_errors([10.0, 5.0], [1e-3, 1e-3], n=100, side="largest")
    assert certified.tolist() == [True, False]
    errors, certified = certified_errors([1.0, 5.0], [1e-3, 1e-3], n=100, side="smallest")
    assert certified.tolist() == [True, False]


def test_smallest_side_mirrors_largest():
    rng = np.random.default_rng(1)
    eigenvalues = np.concatenate([[0.1, 0.5, 1.0], rng.uniform(3.0, 10.0, 297)])
    values, residuals = _ritz_pairs(eigenvalues, 1e-4, rng)
    errors, certified = certified_errors(values, residuals, n=300, side="smallest", outer_edge=3.0,
                                         norm_estimate=10.0)
    assert certified.all()
    assert np.all(np.abs(values - eigenvalues[:3]) <= errors)


def test_operator_error_and_rounding_are_added():
    base, _ = certified_errors([10.0, 5.0], [1e-6, 1e-6], n=100, side="largest", outer_edge=1.0)
    shifted, _ = certified_errors([10.0, 5.0], [1e-6, 1e-6], n=100, side="largest", outer_edge=1.0,
                                  operator_error=1e-3)
    assert np.allclose(shifted - base, 1e-3)
    # The computed θ carries the rounding of the products: no bound is below it, however small the residual.
    assert np.all(base >= rounding_term(100, 10.0))
    # A bottom set's rounding scales with ‖K‖, not with its own (small) values.
    small, _ = certified_errors([0.1], [0.0], n=100, side="smallest", outer_edge=1.0)
    scaled, _ = certified_errors([0.1], [0.0], n=100, side="smallest", outer_edge=1.0, norm_estimate=1e4)
    assert scaled[0] > 1e4 * small[0] / 10


def test_helpers_and_bad_side():
    assert np.isinf(kato_temple_bound(1.0, 0.0))
    assert kato_temple_bound(1e-3, 0.5) == pytest.approx(2e-6)
    assert residual_bound([1.0], operator_error=0.5, rounding=0.25)[0] == pytest.approx(1.75)
    with pytest.raises(ValueError, match="side"):
        certified_errors([1.0], [0.1], n=10, side="middle")


def test_an_unconverged_neighbour_does_not_isolate_a_gap():
    """A guard vector that is 99 % in a cluster above and 1 % along λ_2 has a narrow-looking interval around the
    cluster while λ_2 sits uncovered inside the Kato–Temple interval: θ_1 must keep the residual bound."""
    values = np.concatenate([[0.421, 0.442], np.full(50, 0.5), np.geomspace(1.0, 2e4, 20)])
    K = np.diag(values)
    n = values.size
    basis = np.zeros((n, 2))
    basis[0, 0], basis[1, 0] = 1.0, 0.01
    basis[1, 1], basis[2, 1], basis[3, 1] = 0.1, 1.0, 1.0
    Q, _ = np.linalg.qr(basis)
    theta, C = np.linalg.eigh(Q.T @ K @ Q)
    U = Q @ C
    residual = np.linalg.norm(K @ U - U * theta, axis=0)
    errors, certified = certified_errors(theta, residual, n=n, side="smallest", norm_estimate=values.max())
    assert not certified[0]
    assert abs(theta[0] - values[0]) <= errors[0]
    # with a converged neighbour the pair is isolated, and the quadratic bound holds and is far below ‖r‖
    basis[:] = 0.0
    basis[0, 0], basis[10, 0] = 1.0, 1e-3
    basis[1, 1] = 1.0
    Q, _ = np.linalg.qr(basis)
    theta, C = np.linalg.eigh(Q.T @ K @ Q)
    U = Q @ C
    residual = np.linalg.norm(K @ U - U * theta, axis=0)
    errors, certified = certified_errors(theta, residual, n=n, side="smallest", norm_estimate=values.max())
    assert certified[0] and abs(theta[0] - values[0]) <= errors[0] < residual[0]
