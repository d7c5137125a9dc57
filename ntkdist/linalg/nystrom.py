"""Randomized Nyström approximation of a positive semidefinite K, its single-pass spectrum, and its preconditioner.

One pass multiplies K by an orthonormal N×r test matrix Ω; everything else is arithmetic on N×r blocks:

- `nystrom_from_sketch`: (Ω, Y = KΩ) ↦ (U, Λ̂) with K̂ = U Λ̂ Uᵀ, the stabilised (shifted) Nyström approximation of
  Tropp–Yurtsever–Udell–Cevher 2017 (Alg. 3) in the form of Frangella–Tropp–Udell 2023 (Alg. 2.1).
- `nystrom_program` / `nystrom_spectrum`: the k largest eigenvalues from that one pass, with honest error bounds
  (a posteriori, from held-out test vectors in the *same* pass; see `nystrom_result_from_sketch`).
- `NystromPreconditioner` / `nystrom_preconditioner`: P⁻¹ = (λ̂_r + μ)·U(Λ̂ + μI)⁻¹Uᵀ + (I − UUᵀ)
  (Frangella–Tropp–Udell 2023, eq. (5.3)), from any low-rank eigen-approximation (U, Λ̂): a Nyström sketch or the
  top-k pairs of a Krylov solve.

Because the sketch is a single product with a test matrix drawn from a seed (`nystrom_test_matrix`), K·Ω can be
gathered while the Gram matrix is being built, block row by block row, and handed to
`nystrom_result_from_sketch` afterwards: the spectrum estimate then costs no pass at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from .passes import EigenResult, PassBudgetExhausted, Product, run_program

#: Held-out Gaussian test vectors for the a-posteriori bound: it fails with probability ≤ 10^-q (q = this number).
DEFAULT_TEST_VECTORS = 10


def nystrom_test_matrix(n: int, rank: int, seed: int, *, test_vectors: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The sketch's test matrix: Ω = orth(G), G an N×r standard Gaussian, and q independent Gaussian test vectors.

    Drawn from ``seed`` alone, so a builder that gathers K·Ω block by block makes the same Ω as the solver.

    Returns
    -------
    Omega : (n, rank) float64 with orthonormal columns (Frangella–Tropp–Udell 2023, Alg. 2.1, step 1).
    test : (n, test_vectors) float64 standard Gaussian, independent of Ω (for `nystrom_result_from_sketch`).
    """
    if not 1 <= rank <= n:
        raise ValueError(f"rank: expected 1 ≤ rank ≤ n = {n}, got {rank}")
    rng = np.random.default_rng(seed)
    Omega, _ = np.linalg.qr(rng.standard_normal((n, rank)))
    test = rng.standard_normal((n, test_vectors))
    return Omega, test


def nystrom_from_sketch(Omega: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Stabilised randomized Nyström approximation K̂ = U Λ̂ Uᵀ from one sketch Y = KΩ.

    Tropp, Yurtsever, Udell, Cevher 2017, "Fixed-rank approximation of a positive-semidefinite matrix from
    streaming data", Alg. 3; as written in Frangella, Tropp, Udell 2023, "Randomized Nyström preconditioning",
    Alg. 2.1:

    1. ν = √N·ε·‖Y‖₂ (the stabilising shift), Y_ν = Y + νΩ  — the sketch of K + νI;
    2. C = chol(Ωᵀ Y_ν) (upper), B = Y_ν C⁻¹, so that B Bᵀ = Y_ν (ΩᵀY_ν)⁻¹ Y_νᵀ, the Nyström approximation of K + νI;
    3. B = U Σ Vᵀ (thin SVD), Λ̂ = max(0, Σ² − ν).

    In exact arithmetic (K + νI)⟨Ω⟩ ⪯ K + νI, so λ̂_i ≤ λ_i(K) for every i (K̂ is a lower approximation).

    Parameters
    ----------
    Omega : (N, r) test matrix with orthonormal columns.
    Y : (N, r) float64, K·Omega.

    Returns
    -------
    U : (N, r) orthonormal eigenvectors of K̂; lam : (r,) its eigenvalues, descending, ≥ 0; shift : ν.
    """
    Omega = np.asarray(Omega, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    n = Y.shape[0]
    # ‖Y‖₂ ≤ ‖Y‖_F; the shift only needs the right order of magnitude.
    shift = float(np.sqrt(n) * np.finfo(np.float64).eps * np.linalg.norm(Y))
    Y_shift = Y + shift * Omega
    core = Omega.T @ Y_shift
    core = 0.5 * (core + core.T)
    try:
        C = scipy.linalg.cholesky(core, lower=False)
    except np.linalg.LinAlgError:
        # K (as sketched) is not numerically PSD on range(Ω): raise the shift until the core factors.
        bump = max(shift, float(np.finfo(np.float64).eps * np.abs(np.diag(core)).max()))
        for _ in range(60):
            bump *= 10.0
            try:
                C = scipy.linalg.cholesky(core + bump * np.eye(core.shape[0]), lower=False)
                Y_shift = Y_shift + bump * Omega
                shift += bump
                break
            except np.linalg.LinAlgError:
                continue
        else:  # pragma: no cover - only for a matrix that is far from PSD
            raise
    B = scipy.linalg.solve_triangular(C, Y_shift.T, trans="T", lower=False).T  # Y_ν C⁻¹
    U, sigma, _ = scipy.linalg.svd(B, full_matrices=False, lapack_driver="gesdd")
    lam = np.maximum(sigma ** 2 - shift, 0.0)
    return U, lam, shift


def nystrom_result_from_sketch(Omega: np.ndarray, Y: np.ndarray, k: int, *, test: np.ndarray | None = None,
                               KT: np.ndarray | None = None, operator_error: float = 0.0,
                               vectors: bool = False) -> EigenResult:
    """The k largest eigenvalues of K from one sketch, with a-posteriori error bounds.

    Values are those of the stabilised Nyström approximation K̂ (`nystrom_from_sketch`).

    Error bounds (what one pass can and cannot give)
    ------------------------------------------------
    One pass cannot compute K·u for the Ritz vectors u (they are only known after the pass), so the residual and
    Kato–Temple bounds of `ntkdist.linalg.certify` are out of reach. What one pass does give:

    - **Lower bounds** (rigorous up to rounding and the shift ν): K̂ ⪯ K + ν(I − UUᵀ), hence λ̂_i ≤ λ_i(K) + ν for
      every i, by Weyl's monotonicity (Tropp et al. 2017, Sec. 3; Frangella et al. 2023, Lemma A.1).
    - **Upper bounds** (probabilistic): E = K − K̂ is (up to ν) positive semidefinite, so λ_i(K) ≤ λ̂_i + ‖E‖₂
      (Weyl), and ‖E‖₂ is estimated from q Gaussian test vectors t_j drawn independently of Ω and multiplied in
      the same pass: ‖E‖₂ ≤ 10·√(2/π)·max_j ‖E t_j‖ with probability at least 1 − 10^-q
      (Halko, Martinsson, Tropp 2011, Lemma 4.1 / eq. (4.3)), where E t_j = K t_j − U Λ̂ Uᵀ t_j is computable.

    So |λ_i − λ̂_i| ≤ errors_i = 10√(2/π)·max_j‖E t_j‖ + ν + rounding + operator_error, holding for every i at once
    with probability ≥ 1 − 10^-q; ``info["bound"]`` says so. Without test vectors the errors are NaN
    (``info["bound"] = "none"``): the values are then certified only as lower bounds.

    These bounds pair λ̂_i with λ_i by index, so, unlike the Krylov bounds, they need no assumption that no
    eigenvalue was missed; they are loose (‖E‖₂ ≈ λ_{r+1} at best, times ~8) but honest.

    Parameters
    ----------
    Omega, Y : the sketch (`nystrom_from_sketch`).
    k : how many of the largest eigenvalues to report (k ≤ r).
    test, KT : (N, q) held-out Gaussian test vectors and K·test, from the same pass; optional.
    operator_error : η ≥ ‖K_operator − K‖₂, added by Weyl.
    vectors : also return the (N, k) Ritz vectors U[:, :k].
    """
    from .certify import rounding_term  # local: certify is a sibling with no dependency on this module

    n, r = Omega.shape
    if not 1 <= k <= r:
        raise ValueError(f"k: expected 1 ≤ k ≤ rank = {r}, got {k}")
    U, lam, shift = nystrom_from_sketch(Omega, Y)
    scale = float(lam[0]) if lam.size else 0.0
    if test is not None and KT is not None and test.shape[1] > 0:
        E_test = KT - U @ (lam[:, None] * (U.T @ test))
        estimate = float(10.0 * np.sqrt(2.0 / np.pi) * np.linalg.norm(E_test, axis=0).max())
        q = test.shape[1]
        errors = np.full(k, estimate + shift + rounding_term(n, scale) + operator_error)
        bound = (f"probabilistic: |λ_i − λ̂_i| ≤ 10√(2/π)·max_j‖(K − K̂)t_j‖ + ν + rounding + η with probability "
                 f"≥ 1 − 1e-{q} (Halko–Martinsson–Tropp 2011, Lemma 4.1; q = {q} held-out test vectors)")
        failure_probability = 10.0 ** (-q)
    else:
        estimate = float("nan")
        errors = np.full(k, np.nan)
        bound = "none: values are certified lower bounds only (K̂ ⪯ K); no held-out test vectors"
        failure_probability = float("nan")
    return EigenResult(
        method="nystrom", values=lam[:k].copy(), errors=errors, residual_norms=np.full(k, np.nan),
        gap_certified=np.zeros(k, dtype=bool), passes=1, converged=bool(np.all(np.isfinite(errors))),
        vectors=U[:, :k].copy() if vectors else None,
        info={"rank": r, "shift": shift, "values_are_lower_bounds": True, "bound": bound,
              "residual_norms": "not computable from one pass (K·u needs a second pass)",
              "error_estimate_norm": estimate, "failure_probability": failure_probability,
              "operator_error": operator_error},
    )


def default_rank(n: int, k: int) -> int:
    """Sketch size of single-pass Nyström for the top k: min(n, max(2k, k + 10))."""
    return min(n, max(2 * k, k + 10))


def nystrom_from_gathered_sketch(Omega: np.ndarray, Y: np.ndarray, k: int, *, test_vectors: int = DEFAULT_TEST_VECTORS,
                                 operator_error: float = 0.0, vectors: bool = False) -> EigenResult:
    """Single-pass Nyström from a sketch Y = K·Ω gathered elsewhere (e.g. block by block during the build).

    Ω is any N×(r + q) Gaussian matrix: its last q columns are held out as the test vectors of the error bound
    (they are independent of the first r), and the first r are orthonormalised, Ω_r = Q R, with Y_r R⁻¹ the sketch
    of Q — the Nyström approximation depends only on range(Ω_r), so this is exact (Tropp et al. 2017, Sec. 2).
    The result is `nystrom_result_from_sketch` with ``passes = 0``: the pass was the build's.
    """
    n, width = Omega.shape
    rank = width - test_vectors
    if not 1 <= k <= rank:
        raise ValueError(f"k: expected 1 ≤ k ≤ rank = {rank} (a sketch of {width} columns, {test_vectors} held out)")
    Q, R = np.linalg.qr(Omega[:, :rank])
    YQ = scipy.linalg.solve_triangular(R, Y[:, :rank].T, trans="T", lower=False).T  # Y R⁻¹ = K Q
    result = nystrom_result_from_sketch(Q, YQ, k, test=Omega[:, rank:], KT=Y[:, rank:],
                                        operator_error=operator_error, vectors=vectors)
    result.passes = 0
    result.info["sketch"] = "gathered during the build (no pass of its own)"
    return result


def nystrom_program(n: int, k: int, *, seed: int, rank: int | None = None, operator_error: float = 0.0,
                    vectors: bool = False, test_vectors: int = DEFAULT_TEST_VECTORS):
    """Single-pass Nyström spectrum as a program (`ntkdist.linalg.passes`): one `Product` of width rank + q.

    Tropp–Yurtsever–Udell–Cevher 2017, Alg. 3 (see `nystrom_from_sketch`); errors as in
    `nystrom_result_from_sketch` (values are lower bounds; upper bounds are probabilistic, from q held-out test
    vectors that ride along in the same pass).

    Parameters
    ----------
    n : dimension. k : eigenvalues wanted. seed : for Ω and the test vectors.
    rank : sketch size r (default min(n, max(2k, k + 10))); the estimate of λ_k improves as λ_{r+1}/λ_k falls.
    operator_error : η, added to every error by Weyl. vectors : return the Ritz vectors.
    test_vectors : q held-out Gaussian vectors (failure probability 10^-q); 0 gives NaN errors.
    """
    rank = default_rank(n, k) if rank is None else int(rank)
    if not 1 <= k <= rank <= n:
        raise ValueError(f"k, rank: expected 1 ≤ k ≤ rank ≤ n = {n}, got k = {k}, rank = {rank}")
    Omega, test = nystrom_test_matrix(n, rank, seed, test_vectors=test_vectors)
    try:
        product = yield Product(np.concatenate([Omega, test], axis=1))
    except PassBudgetExhausted:
        nan = np.full(k, np.nan)
        return EigenResult(method="nystrom", values=nan, errors=np.full(k, np.inf), residual_norms=nan,
                           gap_certified=np.zeros(k, dtype=bool), passes=0, converged=False,
                           info={"stopped": "pass budget exhausted before the sketch"})
    return nystrom_result_from_sketch(Omega, product[:, :rank], k, test=test, KT=product[:, rank:],
                                      operator_error=operator_error, vectors=vectors)


def nystrom_spectrum(operator, k: int, *, seed: int = 0, rank: int | None = None, vectors: bool = False,
                     test_vectors: int = DEFAULT_TEST_VECTORS) -> EigenResult:
    """The k largest eigenvalues of ``operator`` by single-pass Nyström (`nystrom_program`); one pass."""
    return run_program(operator, nystrom_program(operator.shape[0], k, seed=seed, rank=rank,
                                                 operator_error=operator.error_bound, vectors=vectors,
                                                 test_vectors=test_vectors))


# -- the preconditioner --------------------------------------------------------------------------------------------
@dataclass
class NystromPreconditioner:
    """P⁻¹ = (λ̂_r + μ)·U(Λ̂ + μI)⁻¹Uᵀ + (I − UUᵀ), Frangella–Tropp–Udell 2023, eq. (5.3).

    For a low-rank eigen-approximation K ≈ U Λ̂ Uᵀ (U: N×r orthonormal, Λ̂ descending) and a shift μ > 0 this is
    an SPD approximation of (λ̂_r + μ)(K + μI)⁻¹: it maps the top r directions to (λ̂_r + μ)/(λ̂_i + μ) ≤ 1 and
    leaves the rest alone, so P⁻¹K has its top r eigenvalues pulled down to about λ̂_r + μ. Applying it costs two
    N×r by r×b products and no pass over K.
    """

    U: np.ndarray
    lam: np.ndarray
    mu: float

    def __post_init__(self):
        self.U = np.asarray(self.U, dtype=np.float64)
        self.lam = np.asarray(self.lam, dtype=np.float64)
        if self.U.ndim != 2 or self.U.shape[1] != self.lam.size:
            raise ValueError(f"U, lam: expected (N, r) and (r,), got {self.U.shape} and {self.lam.shape}")
        if not self.mu > 0 or not np.isfinite(self.mu):
            raise ValueError(f"mu: expected a finite shift > 0, got {self.mu}")
        if self.lam.size and float(self.lam.min()) + self.mu <= 0:
            raise ValueError("lam + mu must be positive for an SPD preconditioner")
        self._scale = (float(self.lam.min()) if self.lam.size else 0.0) + self.mu
        self._factor = self._scale / (self.lam + self.mu) - 1.0  # P⁻¹ = I + U diag(factor) Uᵀ

    def apply(self, V: np.ndarray) -> np.ndarray:
        """P⁻¹·V for V of shape (N,) or (N, b)."""
        V = np.asarray(V, dtype=np.float64)
        coefficients = self.U.T @ V
        return V + self.U @ (self._factor.reshape((-1,) + (1,) * (V.ndim - 1)) * coefficients)

    __call__ = apply


def nystrom_preconditioner(U: np.ndarray, lam: np.ndarray, mu: float) -> NystromPreconditioner:
    """P⁻¹ of Frangella–Tropp–Udell 2023, eq. (5.3), from any low-rank eigen-approximation (U, Λ̂) of K.

    (U, Λ̂) may come from `nystrom_from_sketch` or from the top-k Ritz pairs of a Krylov solve (values in any
    order; the smallest is used as λ̂_r). See `NystromPreconditioner`.
    """
    lam = np.asarray(lam, dtype=np.float64)
    if np.all(lam[:-1] >= lam[1:]):  # already descending (a Nyström sketch's order): no N × r copy
        return NystromPreconditioner(U, lam, float(mu))
    order = np.argsort(lam)[::-1]
    return NystromPreconditioner(np.asarray(U)[:, order], lam[order], float(mu))
