"""LOBPCG for the m smallest eigenpairs: certified bounds against numpy.linalg.eigvalsh, pass sharing."""

from __future__ import annotations

import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from ntkdist.linalg import DenseOperator, PassLog, run_programs
from ntkdist.linalg.density import slq_program
from ntkdist.linalg.lobpcg import lobpcg_program, smallest_eigenpairs
from ntkdist.linalg.nystrom import nystrom_from_sketch, nystrom_preconditioner, nystrom_test_matrix


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Small-block BLAS calls on 2 shared cores run far faster on one thread than on two that contend."""
    with threadpool_limits(1):
        yield


def check_bounds(result, exact_ascending):
    m = result.values.size
    true = exact_ascending[:m]
    assert np.all(np.diff(result.values) >= 0)                       # ascending
    assert np.all(result.values >= true - 1e-9 * abs(true[-1]))      # Cauchy interlacing (Ritz ≥ λ_i)
    assert np.all(np.abs(result.values - true) <= result.errors)     # every bound contains the true error
    assert result.info["lambda_min_upper_bound"] >= true[0]


def test_smallest_three_converge_with_certified_bounds(relu_ntk_2000):
    K, exact = relu_ntk_2000
    operator = DenseOperator(K)
    result = smallest_eigenpairs(operator, 3, seed=1, tol=1e-8, max_passes=100, rank=200, vectors=True)
    assert result.method == "lobpcg" and result.converged
    check_bounds(result, exact)
    assert np.all(result.errors <= 1e-8 * result.values)
    assert np.all(result.gap_certified)                               # Kato–Temple, not ‖r‖
    assert result.passes == operator.passes <= 100
    U = result.vectors
    np.testing.assert_allclose(U.T @ U, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(K @ U - U * result.values, axis=0), result.residual_norms,
                               rtol=1e-3, atol=1e-9)


def test_out_of_passes_returns_the_last_certified_iterate(relu_ntk_2000):
    K, exact = relu_ntk_2000
    result = smallest_eigenpairs(DenseOperator(K), 2, seed=0, tol=1e-12, max_passes=7, rank=100)
    assert not result.converged and result.passes == 7
    assert result.info["certified_at_pass"] == 7                     # the last pass carried K·X
    check_bounds(result, exact)


def test_driver_budget_exhaustion_is_caught(relu_ntk_2000):
    K, exact = relu_ntk_2000
    program = lobpcg_program(2000, 1, seed=0, tol=1e-12, max_passes=100, rank=100)
    result = run_programs(DenseOperator(K), {"lmin": program}, max_passes=6)["lmin"]
    assert not result.converged and result.passes == 6
    check_bounds(result, exact)


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="tol"):
        next(lobpcg_program(100, 1, seed=0, tol=0.0, max_passes=5))
    with pytest.raises(ValueError, match="block"):
        next(lobpcg_program(100, 2, seed=0, tol=1e-6, max_passes=5, block=1))


def test_lobpcg_and_slq_share_passes(relu_ntk_2000):
    K, _ = relu_ntk_2000

    def programs():
        return (lobpcg_program(2000, 1, seed=0, tol=1e-8, max_passes=60, rank=150),
                slq_program(2000, seed=0, steps=20, probes=8, bins=30, deflate=100))

    alone = [run_programs(DenseOperator(K), {"p": p})["p"] for p in programs()]
    operator = DenseOperator(K)
    log = PassLog()
    together = run_programs(operator, dict(zip(("lmin", "density"), programs())), log=log)
    np.testing.assert_allclose(together["lmin"].values, alone[0].values, rtol=1e-12)
    np.testing.assert_allclose(together["lmin"].errors, alone[0].errors, rtol=1e-6)
    assert together["lmin"].passes == alone[0].passes
    np.testing.assert_allclose(together["density"].mass, alone[1].mass, atol=1e-12)
    assert operator.passes == log.passes == max(alone[0].passes, alone[1].passes)
    assert operator.passes < alone[0].passes + alone[1].passes


# -- the acceptance matrix: N = 8000, d = 16 depth-3 ReLU NTK ----------------------------------------------
@pytest.fixture(scope="module")
def preconditioner_8000(relu_ntk_8000):
    """A rank-800 Nyström preconditioner of the N = 8000 NTK (one sketch pass), shared by the float64 and float32
    runs; the pass counts below add it."""
    K, _ = relu_ntk_8000
    Omega, _ = nystrom_test_matrix(8000, 800, seed=0)
    U, lam, _ = nystrom_from_sketch(Omega, DenseOperator(K).matmat(Omega))
    return nystrom_preconditioner(U, lam, mu=float(lam[-1]))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lambda_min_8000_within_1e_6_with_bounds_that_hold(relu_ntk_8000, preconditioner_8000, dtype):
    K, exact = relu_ntk_8000
    operator = DenseOperator(K.astype(dtype, copy=False))
    start = time.perf_counter()
    result = smallest_eigenpairs(operator, 1, seed=0, tol=1e-6, max_passes=80, preconditioner=preconditioner_8000)
    seconds = time.perf_counter() - start
    relative = abs(result.values[0] - exact[0]) / exact[0]
    print(f"\n{np.dtype(dtype).name}: λ_min {result.values[0]:.12g} (exact {exact[0]:.12g}), relative error "
          f"{relative:.2e}, bound {result.errors[0]:.2e}, passes {result.passes} + 1 sketch, {seconds:.1f} s")
    check_bounds(result, exact)
    if dtype == np.float64:
        assert result.converged
        assert relative <= 1e-6
        assert result.errors[0] <= 1e-6 * exact[0]
    else:
        # The float32 store moves λ_min by up to ‖E‖₂ ≤ η = u‖K‖_F ≈ 1e-3: that η is in the bound, honestly.
        assert result.errors[0] >= operator.error_bound
        assert result.converged  # tol excludes η, which no iteration can reduce
