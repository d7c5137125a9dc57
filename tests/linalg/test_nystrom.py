"""Single-pass Nyström spectrum and the Nyström preconditioner, against numpy.linalg.eigvalsh."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from ntkdist.linalg import DenseOperator, run_program
from ntkdist.linalg.lobpcg import lobpcg_program
from ntkdist.linalg.nystrom import (NystromPreconditioner, nystrom_from_sketch, nystrom_preconditioner,
                                    nystrom_spectrum, nystrom_test_matrix)


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Small-block BLAS calls on 2 shared cores run far faster on one thread than on two that contend."""
    with threadpool_limits(1):
        yield


def test_sketch_recovers_a_low_rank_matrix_exactly():
    rng = np.random.default_rng(1)
    V, _ = np.linalg.qr(rng.standard_normal((300, 12)))
    lam = np.geomspace(1e3, 1.0, 12)
    K = (V * lam) @ V.T
    Omega, _ = nystrom_test_matrix(300, 20, seed=3)
    U, values, shift = nystrom_from_sketch(Omega, K @ Omega)
    np.testing.assert_allclose(values[:12], lam, rtol=1e-9)
    np.testing.assert_allclose((U * values) @ U.T, K, atol=1e-9 * lam[0])
    assert shift > 0


def test_single_pass_values_are_lower_bounds_and_errors_contain_the_truth(relu_ntk_2000):
    K, exact = relu_ntk_2000
    top = exact[::-1]
    operator = DenseOperator(K)
    result = nystrom_spectrum(operator, 50, seed=0, rank=300)
    assert operator.passes == 1 and result.passes == 1 and result.method == "nystrom"
    true = top[:50]
    assert np.all(result.values <= true * (1 + 1e-12))            # K̂ ⪯ K
    assert np.all(np.abs(true - result.values) <= result.errors)  # the a-posteriori bound holds
    assert result.values[0] == pytest.approx(true[0], rel=1e-2)   # the outlier is captured (measured 4e-3)
    assert result.info["failure_probability"] == pytest.approx(1e-10)
    assert np.all(np.isnan(result.residual_norms))                # one pass cannot compute K·u


def test_without_test_vectors_the_errors_are_nan_not_invented(relu_ntk_2000):
    K, _ = relu_ntk_2000
    result = nystrom_spectrum(DenseOperator(K), 5, seed=0, rank=20, test_vectors=0)
    assert np.all(np.isnan(result.errors)) and not result.converged
    assert result.info["bound"].startswith("none")


def test_preconditioner_is_equation_5_3_and_spd():
    rng = np.random.default_rng(2)
    n, r, mu = 200, 15, 0.7
    U, _ = np.linalg.qr(rng.standard_normal((n, r)))
    lam = np.sort(rng.uniform(1, 100, r))  # ascending on purpose: the factory sorts
    P = nystrom_preconditioner(U, lam, mu)
    order = np.argsort(lam)[::-1]
    Uo, lo = U[:, order], lam[order]
    dense = (lo[-1] + mu) * (Uo / (lo + mu)) @ Uo.T + np.eye(n) - Uo @ Uo.T
    V = rng.standard_normal((n, 4))
    np.testing.assert_allclose(P(V), dense @ V, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(P.apply(V[:, 0]), dense @ V[:, 0], rtol=1e-12, atol=1e-12)
    assert np.linalg.eigvalsh(dense).min() > 0
    with pytest.raises(ValueError, match="mu"):
        NystromPreconditioner(U, lam, 0.0)


def test_preconditioned_lobpcg_beats_unpreconditioned_at_equal_passes(relu_ntk_2000):
    K, exact = relu_ntk_2000
    passes = 35

    def error(**options):
        result = run_program(DenseOperator(K), lobpcg_program(2000, 1, seed=0, tol=1e-14, max_passes=passes,
                                                              **options))
        assert result.passes == passes
        return abs(result.values[0] - exact[0]) / exact[0]

    identity = error(preconditioner=lambda V: V)
    nystrom = error(rank=200)
    # Measured: 3.3e-6 against 1.5e-2 (4500×); a clear margin is three orders of magnitude.
    assert nystrom < 1e-3 * identity


def test_a_krylov_style_top_k_result_serves_as_the_preconditioner(relu_ntk_2000):
    K, exact = relu_ntk_2000
    values, vectors = np.linalg.eigh(K)
    top = nystrom_preconditioner(vectors[:, -150:], values[-150:], mu=values[-150])  # any (U, Λ̂) will do
    result = run_program(DenseOperator(K), lobpcg_program(2000, 1, seed=0, tol=1e-8, max_passes=80,
                                                          preconditioner=top))
    assert result.converged
    assert abs(result.values[0] - exact[0]) <= result.errors[0]
