"""Randomized block Krylov top-k (`ntkdist.linalg.krylov`): accuracy against LAPACK, certified bounds that hold
and are tight, locking, restarts, shared passes, and block growth where k cuts through a cluster."""

from __future__ import annotations

import numpy as np
import pytest

from ntkdist.linalg import DenseOperator, Product, run_programs
from ntkdist.linalg.krylov import block_krylov_program, default_block, topk_eigenpairs


def _assert_bounds_hold(result, exact_descending, slack=0.0):
    true = np.abs(result.values - exact_descending[:result.values.size])
    assert np.all(true <= result.errors + slack), np.max(true - result.errors)


@pytest.fixture(scope="module")
def top100_2000(relu_ntk_2000):
    K, eigenvalues = relu_ntk_2000
    return topk_eigenpairs(DenseOperator(K), 100, seed=0, tol=1e-10, vectors=True), eigenvalues[::-1]


def test_top100_matches_eigvalsh_with_bounds(top100_2000, relu_ntk_2000):
    result, exact = top100_2000
    assert result.method == "krylov" and result.converged
    assert result.values.shape == (100,) and np.all(np.diff(result.values) <= 0)
    assert np.max(np.abs(result.values - exact[:100]) / exact[:100]) < 1e-9
    _assert_bounds_hold(result, exact)
    assert np.all(result.errors <= 1e-10 * np.abs(result.values))
    assert result.gap_certified.all()
    assert result.passes <= 10 and result.seconds_per_pass > 0


def test_vectors_are_orthonormal_ritz_vectors(top100_2000, relu_ntk_2000):
    result, _ = top100_2000
    K, _ = relu_ntk_2000
    U = result.vectors
    assert U.shape == (2000, 100)
    assert np.allclose(U.T @ U, np.eye(100), atol=1e-12)
    residuals = np.linalg.norm(K @ U - U * result.values, axis=0)
    assert np.allclose(residuals, result.residual_norms, rtol=1e-3, atol=1e-9 * result.values[0])


def test_locking_shrinks_the_block(top100_2000):
    info = top100_2000[0].info
    locked = info["locked_per_pass"]
    assert locked[-1] == 100 and locked[0] < 100
    # Locked pairs are no longer multiplied: the last pass is narrower than the first.
    assert info["block_per_pass"][-1] < info["block_per_pass"][0]
    assert info["stopped_by"] == "converged"


def test_seed_reproducibility(relu_ntk_2000):
    K, exact = relu_ntk_2000
    first = topk_eigenpairs(DenseOperator(K), 20, seed=7, tol=1e-8)
    again = topk_eigenpairs(DenseOperator(K), 20, seed=7, tol=1e-8)
    other = topk_eigenpairs(DenseOperator(K), 20, seed=8, tol=1e-8)
    np.testing.assert_array_equal(first.values, again.values)
    np.testing.assert_array_equal(first.errors, again.errors)
    timing = "arithmetic_seconds_per_pass"
    assert {**first.info, timing: None} == {**again.info, timing: None}
    assert not np.array_equal(first.values, other.values)
    assert np.all(np.abs(first.values - other.values) <= first.errors + other.errors)


def test_own_pass_budget_returns_certified_partial_result(relu_ntk_2000):
    K, exact = relu_ntk_2000
    result = topk_eigenpairs(DenseOperator(K), 100, seed=0, tol=1e-10, max_passes=3)
    assert result.passes == 3 and not result.converged
    assert result.info["stopped_by"] == "max_passes"
    _assert_bounds_hold(result, exact[::-1])


def test_budget_thrown_in_by_the_driver(relu_ntk_2000):
    K, exact = relu_ntk_2000
    operator = DenseOperator(K)
    program = block_krylov_program(2000, 30, seed=0, tol=1e-12, max_passes=50)
    result = run_programs(operator, {"topk": program}, max_passes=4)["topk"]
    assert result.passes == 4 and not result.converged and operator.passes == 4
    assert result.info["stopped_by"] == "pass budget of the run"
    _assert_bounds_hold(result, exact[::-1])
    # Budget spent before the first product: an honest empty answer.
    empty = run_programs(operator, {"topk": block_krylov_program(2000, 5, seed=0, tol=1e-8, max_passes=5)},
                         max_passes=0)["topk"]
    assert empty.passes == 0 and np.all(np.isinf(empty.errors)) and not empty.converged


def test_shares_passes_with_another_program(relu_ntk_2000):
    K, _ = relu_ntk_2000

    def power_program(n, width, passes):
        V = np.random.default_rng(1).standard_normal((n, width))
        for _ in range(passes):
            V = yield Product(V)
            V /= np.linalg.norm(V, axis=0)
        return V

    alone = topk_eigenpairs(DenseOperator(K), 10, seed=3, tol=1e-9)
    operator = DenseOperator(K)
    together = run_programs(operator, {
        "topk": block_krylov_program(2000, 10, seed=3, tol=1e-9, max_passes=20),
        "power": power_program(2000, 4, 2),
    })
    assert operator.passes == alone.passes  # the power program rode along on the first two passes
    np.testing.assert_allclose(together["topk"].values, alone.values, rtol=1e-13)
    assert together["power"].shape == (2000, 4)


def test_thick_restart_keeps_accuracy(relu_ntk_2000):
    K, exact = relu_ntk_2000
    result = topk_eigenpairs(DenseOperator(K), 40, seed=0, tol=1e-10, max_basis=200, block=60)
    assert result.info["restarts"] >= 1 and max(result.info["basis_per_pass"]) <= 200
    assert result.converged
    assert np.max(np.abs(result.values - exact[::-1][:40]) / exact[::-1][:40]) < 1e-9
    _assert_bounds_hold(result, exact[::-1])


def test_float32_operator_bound_includes_storage_error(relu_ntk_2000):
    K, exact = relu_ntk_2000
    operator = DenseOperator(K.astype(np.float32))
    result = topk_eigenpairs(operator, 30, seed=0, tol=1e-10)
    assert result.info["operator_error"] == operator.error_bound > 0
    assert np.all(result.errors >= operator.error_bound)
    _assert_bounds_hold(result, exact[::-1])


def test_diagonal_matrix_and_validation():
    A = DenseOperator(np.diag(np.arange(1.0, 301.0)))
    result = topk_eigenpairs(A, 5, seed=0, tol=1e-12)
    np.testing.assert_allclose(result.values, [300.0, 299.0, 298.0, 297.0, 296.0], rtol=1e-13)
    assert default_block(100, 10_000) == 150 and default_block(400, 10_000) == 600
    assert default_block(100, 120) == 120
    with pytest.raises(ValueError, match="k"):
        topk_eigenpairs(A, 300)
    with pytest.raises(ValueError, match="tol"):
        topk_eigenpairs(A, 5, tol=0.0)
    with pytest.raises(ValueError, match="max_passes"):
        topk_eigenpairs(A, 5, max_passes=0)


def _harmonic_like_spectrum(n, cluster, rng):
    """A spectrum shaped like a sphere NTK's: one constant mode, 20 'linear' modes, then a near-degenerate band
    of ``cluster`` 'quadratic' modes (relative width 1 %), then a bulk three times lower."""
    return np.sort(np.concatenate([[1000.0], 100 * (1 + 0.05 * rng.random(20)), 10 * (1 + 0.01 * rng.random(cluster)),
                                   3 * rng.random(n - cluster - 21) ** 2]))[::-1]


@pytest.mark.slow
def test_block_grows_past_a_cluster_that_k_cuts_through():
    """k = 40 ends inside a 200-fold near-degenerate band (indices 22–221); the default block (90) stalls there."""
    rng = np.random.default_rng(1)
    n, cluster = 2000, 200
    eigenvalues = _harmonic_like_spectrum(n, cluster, rng)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    K = (Q * eigenvalues) @ Q.T
    K = 0.5 * (K + K.T)
    # A basis cap (thick restarts) keeps the basis well below n, so convergence is the solver's, not exhaustion's.
    grown = topk_eigenpairs(DenseOperator(K), 40, seed=0, tol=1e-8, max_passes=14, max_basis=900)
    assert grown.converged, grown.info["worst_relative_error_per_pass"]
    assert grown.info["stopped_by"] == "converged" and max(grown.info["basis_per_pass"]) <= 900
    growth = grown.info["growth"][0]
    # The block now reaches past the band's edge (index 221), found by the quadrature count, not by a guess.
    assert growth["to"] > 21 + cluster
    assert abs(growth["estimated_count_above_edge"] - (21 + cluster)) < 0.2 * (21 + cluster)
    assert np.max(np.abs(grown.values - eigenvalues[:40]) / eigenvalues[:40]) < 1e-10
    _assert_bounds_hold(grown, eigenvalues)
    fixed = topk_eigenpairs(DenseOperator(K), 40, seed=0, tol=1e-8, max_passes=grown.passes + 3, grow=False,
                            max_basis=900)
    assert not fixed.converged
    _assert_bounds_hold(fixed, eigenvalues)


@pytest.mark.slow
def test_sphere_ntk_with_k_inside_the_quadratic_harmonics():
    """Uniform points on S²³: the quadratic harmonics form a band of d(d+1)/2 − 1 = 299 eigenvalues (indices
    25–323); k = 60 and the default block (110) both end inside it."""
    from ntkdist.kernels import ntk
    from ntkdist.linalg.exact import exact_eigenvalues

    from .conftest import RELU3

    X = np.random.default_rng(0).standard_normal((1200, 24))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    K = ntk(X, net=RELU3)
    exact = exact_eigenvalues(K, 120)
    assert exact[24] > 2 * exact[25]  # the linear harmonics end at index 25, the band begins
    result = topk_eigenpairs(DenseOperator(K), 60, seed=0, tol=1e-10)
    assert result.converged
    assert np.max(np.abs(result.values - exact[:60]) / exact[:60]) < 1e-9
    _assert_bounds_hold(result, exact)


# -- the acceptance matrix: depth-3 ReLU NTK, N = 8000, d = 16 ------------------------------------------
@pytest.mark.slow
def test_top100_on_8000_float64(relu_ntk_8000):
    K, eigenvalues = relu_ntk_8000
    exact = eigenvalues[::-1]
    result = topk_eigenpairs(DenseOperator(K), 100, seed=0, tol=1e-10)
    assert result.converged and result.passes <= 10
    true = np.abs(result.values - exact[:100])
    assert np.max(true / exact[:100]) < 1e-9
    _assert_bounds_hold(result, exact)
    # Tight where a gap is certified: not the loose ‖r‖, at most 100× the truth (or 1e-12·λ₁).
    certified = result.gap_certified
    assert certified.all()
    assert np.all(result.errors[certified] <= np.maximum(100 * true[certified], 1e-12 * exact[0]))
    assert np.all(result.errors < 1e-2 * result.residual_norms + 1e-12 * exact[0])


@pytest.mark.slow
def test_top100_on_8000_float32_store(relu_ntk_8000):
    K, eigenvalues = relu_ntk_8000
    exact = eigenvalues[::-1]
    operator = DenseOperator(K.astype(np.float32))
    result = topk_eigenpairs(operator, 100, seed=0, tol=1e-10, block=200)
    # The bound is for the float64 matrix asked about: the storage error enters by Weyl.
    _assert_bounds_hold(result, exact)
    assert result.info["operator_error_dominates"]
    assert np.all(result.errors - operator.error_bound <= 1e-10 * np.abs(result.values))
