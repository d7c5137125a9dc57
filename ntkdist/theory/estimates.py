"""Numerical estimates the bounds are built from: extreme eigenvalues, Hadamard powers, λ_1 by block Krylov.

No paper: these are the rounding-safe numerical building blocks (LAPACK bisection, Cholesky-certified λ_min,
Lanczos with residuals, Gershgorin row sums streamed in blocks of bounded memory) and the size limits that keep
dense N×N work away from large N. Every estimate says on which side of the exact value it errs.

**Cost.** Functions that need eigenvalues of dense N×N matrices refuse above ``max_n`` (default `EIGEN_MAX_N`)
with `TooLargeError`; `HadamardPowers` counts its dense eigen-decompositions (λ_1 by Lanczos and Gershgorin sums
cost O(N²) and count zero).

**Rounding.** A lower estimate of λ_min subtracts the backward-error allowance 4·N·ε·‖A‖₁ of that eigenvalue, and
upper estimates from Lanczos add the residual norm, so they hold for the exact matrices up to the rounding of
forming them.

The mathematics, with its conventions, errata and tests: docs/theory.md §5.6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

#: Largest N for which a bound forms and eigen-decomposes dense N×N matrices (8192² float64 = 512 MiB).
EIGEN_MAX_N = 8192
#: Rows per block when a bound streams over the N×N products (Gershgorin sums, near-pair search); fewer for large
#: N so that one block holds at most `_BLOCK_ENTRIES` numbers (128 MiB): memory stays bounded at any N.
_ROW_BLOCK = 512
_BLOCK_ENTRIES = 1 << 24
#: Largest N for which a bound streams over all N² pairs (Gershgorin row sums of Hadamard powers, the exact
#: near-pair search): O(N²d) time, about 10⁹ products here. `ntkdist.theory.compare` skips such bounds above it
#: (with the reason recorded); the functions themselves stream with bounded memory at any N.
STREAM_MAX_N = 32768


def block_rows(n: int) -> int:
    """Rows of an N-column block: at most `_ROW_BLOCK` and at most `_BLOCK_ENTRIES` entries."""
    return max(1, min(_ROW_BLOCK, _BLOCK_ENTRIES // max(int(n), 1)))


_EPS = np.finfo(np.float64).eps


class TooLargeError(ValueError):
    """A bound needs dense N×N eigen-decompositions and N exceeds the documented limit."""


def check_size(n: int, max_n: int, what: str) -> None:
    """Refuse (`TooLargeError`) dense N×N work on ``what`` above ``max_n``."""
    if n > max_n:
        raise TooLargeError(
            f"{what} needs dense {n}×{n} eigen-decompositions; it is limited to N ≤ {max_n} "
            f"(pass max_n= to raise the limit, or use a Gershgorin/trace bound, which scale to any N)")


def as_data(X) -> np.ndarray:
    """X as a finite, non-empty float64 (N, d) array, or a ValueError naming the problem."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X: expected a non-empty 2-D array (points × features), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X: contains NaN or inf")
    return X


def row_norms(X: np.ndarray) -> np.ndarray:
    """‖x_i‖ for every row."""
    return np.sqrt(np.einsum("ij,ij->i", X, X))


def unit_rows(X: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """X̂ with unit rows; a zero row becomes e_1 (it is multiplied by d_i = 0 wherever it is used)."""
    out = np.zeros_like(X)
    nonzero = norms > 0
    out[nonzero] = X[nonzero] / norms[nonzero, None]
    out[~nonzero, 0] = 1.0
    return out


def numerical_rank(X: np.ndarray) -> int:
    """rank(X) from its singular values, with LAPACK's usual threshold max(N, d)·ε·σ_1."""
    s = np.linalg.svd(np.asarray(X, dtype=np.float64), compute_uv=False)
    if s.size == 0 or s[0] == 0.0:
        return 0
    return int((s > max(X.shape) * _EPS * s[0]).sum())


def homogeneous_polynomial_count(r: int, p: int) -> int:
    """C(r+p−1, p): the dimension of homogeneous polynomials of degree p in r variables ≥ rank((X̂X̂ᵀ)^{⊙p})."""
    return math.comb(r + p - 1, p)


def sphere_polynomial_count(r: int, m: int) -> int:
    """dim of polynomials of degree < m restricted to the unit sphere S^{r−1}: C(r+m−1, r) − C(r+m−3, r).

    An upper bound on rank(H_m), H_m = Σ_{j<m} c_j (X̂X̂ᵀ)^{⊙j}, for unit rows spanning an r-dimensional space:
    the rows lie on the unit sphere of that space, where ‖x‖² = 1 makes C(r+m−3, r) of the C(r+m−1, r)
    monomials of degree < m redundant. [DERIVED; tighter than the C(r+m−1, r) of Murray et al.'s Thm 4.8 for m ≥ 3.]
    """
    if m <= 0:
        return 0
    full = math.comb(r + m - 1, r)
    return full - (math.comb(r + m - 3, r) if m >= 3 else 0)


# -- Dense eigenvalue estimates ----------------------------------------------------------------------------------------
def extreme_eigenvalue(A: np.ndarray, index: int) -> float:
    """The eigenvalue of symmetric A at ascending position ``index`` (0 or N − 1), by bisection (LAPACK syevx).

    syevr (MRRR) fails with "Internal Error" on matrices within rounding of the identity (high Hadamard powers);
    syevx does not, and a full syevd is the fallback.
    """
    try:
        return float(scipy.linalg.eigh(A, eigvals_only=True, driver="evx", subset_by_index=(index, index))[0])
    except np.linalg.LinAlgError:
        return float(np.linalg.eigvalsh(A)[index])


def lambda_min_lower_estimate(A: np.ndarray) -> float:
    """A rounding-safe lower estimate of λ_min(A) for symmetric A, at the cost of at most one eigen-decomposition.

    Positive definite, well-conditioned A (the usual case for the Hadamard powers and layer kernels here): one
    Cholesky factorisation (N³/3 flops, a quarter of a tridiagonalisation) and Lanczos on A⁻¹, whose Ritz value
    θ plus residual ‖A⁻¹v − θv‖ estimates λ_max(A⁻¹) = 1/λ_min(A) from above; the estimate μ is then certified
    by a second Cholesky of A − μI (it exists only if λ_min(A) > μ), since a residual bounds the distance to
    *some* eigenvalue, not necessarily the largest. When a Cholesky fails (A not numerically PD, or Lanczos
    settled on an interior eigenvalue) or A is too ill-conditioned for the solves to be trusted (κ·N·ε > 1e-6),
    the dense eigenvalue (LAPACK syevx) decides. Either way the backward-error allowance 4·N·ε·‖A‖₁ is subtracted.
    """
    n = A.shape[0]
    norm1 = float(np.abs(A).sum(axis=1).max())
    allowance = 4.0 * n * _EPS * norm1
    if n > 64:
        try:
            factor = scipy.linalg.cho_factor(A, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            factor = None
        if factor is not None:
            def solve(v):
                return scipy.linalg.cho_solve(factor, v, check_finite=False)

            op = scipy.sparse.linalg.LinearOperator((n, n), dtype=np.float64, matvec=solve)
            try:
                theta, vec = scipy.sparse.linalg.eigsh(op, k=1, which="LA", tol=1e-10,
                                                         v0=np.random.default_rng(0).standard_normal(n))
            except scipy.sparse.linalg.ArpackNoConvergence:
                theta = None
            if theta is not None:
                vec = vec[:, 0]
                top = float(theta[0]) + float(np.linalg.norm(solve(vec) - theta[0] * vec))
                if top > 0 and norm1 * top * n * _EPS < 1e-6:
                    candidate = 1.0 / top - allowance
                    try:
                        scipy.linalg.cho_factor(A - candidate * np.eye(n), lower=True, check_finite=False)
                        return candidate
                    except np.linalg.LinAlgError:
                        pass
    return extreme_eigenvalue(A, 0) - allowance


def lambda_max_upper_estimate(A: np.ndarray) -> float:
    """An upper estimate of λ_1(A) for symmetric PSD A: Lanczos + residual, capped by Gershgorin (a bound).

    The residual bounds the distance from the Ritz value to the nearest eigenvalue, which is λ_1 when Lanczos
    converged to the top of the spectrum; started from the all-ones vector it does for the entrywise non-negative
    Hadamard powers and kernels this is used on (Perron). Small A (N ≤ 400) take the dense eigenvalue instead.
    """
    n = A.shape[0]
    gershgorin = float(np.abs(A).sum(axis=1).max())
    if n <= 400:
        value = extreme_eigenvalue(A, n - 1)
        return min(value + 4.0 * n * _EPS * gershgorin, gershgorin)
    v0 = np.ones(n) / math.sqrt(n)  # PSD matrices with a positive top eigenvector: a good start
    theta, vec = scipy.sparse.linalg.eigsh(A, k=1, which="LA", v0=v0, tol=1e-8)
    vec = vec[:, 0]
    residual = float(np.linalg.norm(A @ vec - theta[0] * vec))
    return min(float(theta[0]) + residual + 4.0 * n * _EPS * gershgorin, gershgorin)


def gershgorin_lower_bound(A) -> float:
    """Gershgorin's theorem: λ_min(A) ≥ min_i (A_ii − Σ_{j≠i} |A_ij|) for symmetric A (cost O(N²))."""
    A = np.asarray(A, dtype=np.float64)
    off = np.abs(A).sum(axis=1) - np.abs(np.diagonal(A))
    return float((np.diagonal(A) - off).min())


class HadamardPowers:
    """Spectral quantities of the Hadamard powers G^{⊙p} of the Gram matrix G = X̂X̂ᵀ of unit rows X̂.

    Caches what it computes and counts its dense eigen-decompositions (``eigendecompositions``), so several
    bounds on the same data share them. Dense operations refuse above ``max_n``; Gershgorin sums stream over
    row blocks and work for any N.

    Parameters
    ----------
    unit_rows : (N, d) array
        Rows of norm 1 (within rounding).
    max_n : int
        Largest N for dense N×N work.
    """

    def __init__(self, unit_rows, *, max_n: int = EIGEN_MAX_N):
        self.rows = np.asarray(unit_rows, dtype=np.float64)
        self.n, self.dim = self.rows.shape
        self.max_n = int(max_n)
        self.rank = numerical_rank(self.rows)
        self.eigendecompositions = 0
        self._gram = None
        self._lambda_min: dict[int, float] = {}
        self._lambda_max: dict[int, float] = {}
        self._gershgorin: dict[int, float] = {}
        self._row_sum: dict[int, float] = {}
        self._last_power = None

    def gram(self) -> np.ndarray:
        """G = X̂X̂ᵀ with its diagonal set to exactly 1 (N×N; refuses above ``max_n``)."""
        if self._gram is None:
            check_size(self.n, self.max_n, "forming X̂X̂ᵀ")
            G = self.rows @ self.rows.T
            G = 0.5 * (G + G.T)
            np.fill_diagonal(G, 1.0)
            self._gram = np.clip(G, -1.0, 1.0)
        return self._gram

    def power(self, p: int) -> np.ndarray:
        """G^{⊙p} (N×N), by repeated squaring, or from the last power asked for when p is a few steps above it.

        The returned array is shared with the cache: read it, do not modify it.
        """
        G = self.gram()
        last = self._last_power
        if last is not None and 0 <= p - last[0] <= 4:
            M = last[1]
            if p > last[0]:
                M = M * G
                for _ in range(p - last[0] - 1):
                    M *= G
        else:
            M, base, e = None, G, int(p)
            if e == 0:
                M = np.ones_like(G)
            while e:
                if e & 1:
                    M = base.copy() if M is None else M * base
                e >>= 1
                if e:
                    base = base * base
        self._last_power = (int(p), M)
        return M

    def is_singular(self, p: int) -> bool:
        """True when rank(G^{⊙p}) ≤ C(r+p−1, p) < N proves λ_min(G^{⊙p}) = 0 (r = rank X̂)."""
        if p == 0:
            return self.n > 1
        return homogeneous_polynomial_count(self.rank, p) < self.n

    def lambda_min(self, p: int) -> float:
        """A rounding-safe lower estimate of λ_min(G^{⊙p}), ≥ 0 (G^{⊙p} is PSD by the Schur product theorem).

        Exactly 0 without any eigen-decomposition when `is_singular` proves it; 1 when N = 1.
        """
        if p not in self._lambda_min:
            if self.n == 1:
                value = 1.0
            elif self.is_singular(p):
                value = 0.0
            else:
                check_size(self.n, self.max_n, f"λ_min of the Hadamard power G^⊙{p}")
                value = max(lambda_min_lower_estimate(self.power(p)), 0.0)
                self.eigendecompositions += 1
            self._lambda_min[p] = value
        return self._lambda_min[p]

    def known_lambda_min(self) -> dict[int, float]:
        return dict(self._lambda_min)

    def lambda_max(self, p: int) -> float:
        """A rounding-safe upper estimate of λ_1(G^{⊙p}) (Lanczos + residual; O(N²) per iteration)."""
        if p not in self._lambda_max:
            if p == 0:
                value = float(self.n)
            elif p == 1:  # λ_1(X̂X̂ᵀ) = σ_1(X̂)², O(N·d²)
                sigma = float(np.linalg.svd(self.rows, compute_uv=False)[0])
                value = sigma * sigma * (1.0 + 8.0 * max(self.rows.shape) * _EPS)
            else:
                check_size(self.n, self.max_n, f"λ_1 of the Hadamard power G^⊙{p}")
                value = lambda_max_upper_estimate(self.power(p))
            self._lambda_max[p] = value
        return self._lambda_max[p]

    def gershgorin(self, powers) -> dict[int, float]:
        """min_i (1 − Σ_{j≠i} |G_ij|^p) for each p: Gershgorin lower bounds on λ_min(G^{⊙p}), streamed in rows."""
        self._row_sums(powers)
        return {int(p): self._gershgorin[int(p)] for p in powers}

    def row_sum_bound(self, powers) -> dict[int, float]:
        """max_i Σ_j |G_ij|^p for each p: Gershgorin upper bounds on λ_1(G^{⊙p}), streamed in rows (any N)."""
        self._row_sums(powers)
        return {int(p): self._row_sum[int(p)] for p in powers}

    def _row_sums(self, powers) -> None:
        wanted = sorted({int(p) for p in powers} - set(self._gershgorin))
        if not wanted:
            return
        low = {p: np.inf for p in wanted}
        high = {p: 0.0 for p in wanted}
        step = block_rows(self.n)
        for start in range(0, self.n, step):
            stop = min(start + step, self.n)
            block = np.abs(self.rows[start:stop] @ self.rows.T)
            block[np.arange(stop - start), np.arange(start, stop)] = 0.0
            block = np.minimum(block, 1.0)
            with np.errstate(divide="ignore"):
                logs = np.log(block)
            for p in wanted:
                sums = np.exp(p * logs).sum(axis=1) if p > 0 else np.full(stop - start, self.n - 1.0)
                low[p] = min(low[p], float((1.0 - sums).min()))
                # rounding of the sums: each |G_ij|^p carries a relative error of a few ε
                high[p] = max(high[p], float((1.0 + sums * (1.0 + 8.0 * _EPS)).max()))
        self._gershgorin.update(low)
        self._row_sum.update(high)


# -- λ_1 of an operator by block Krylov --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TopEigenvalue:
    """λ_1 of a symmetric operator by block Krylov with Rayleigh–Ritz (`top_eigenvalue`).

    ``value`` θ is a Ritz value, so θ ≤ λ_1 (Courant–Fischer, up to rounding); ``residual`` ‖Au − θu‖ bounds
    the distance from θ to *some* eigenvalue, which is λ_1 unless the Krylov space missed the top of the
    spectrum (probabilistic: the start block is random, so missing it has probability zero, but no finite
    residual certifies it without a gap).
    """

    value: float
    residual: float
    passes: int
    block: int


def top_eigenvalue(apply, n: int, *, passes: int, block: int = 4, seed: int = 0, rtol: float = 1e-10
                   ) -> TopEigenvalue:
    """λ_1 of the symmetric map ``apply`` (V ↦ A·V on (n, b) blocks) within ``passes`` products.

    Block Krylov with full reorthogonalisation and Rayleigh–Ritz on the whole space [V, AV, …, A^{q−1}V]
    (Golub & Underwood 1977; Musco & Musco 2015, Alg. 2): after each product the Ritz pair of the largest
    Ritz value is formed from the stored products (no extra pass) and the loop stops when its residual is
    ≤ ``rtol``·θ. Memory: 2·passes·block vectors of length n (never n×n).
    """
    if passes < 1:
        raise ValueError(f"passes: need at least 1, got {passes}")
    block = max(1, min(int(block), n))
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, block)))
    basis, images = [], []
    theta, residual, used = 0.0, math.inf, 0
    for _ in range(passes):
        Z = np.asarray(apply(Q), dtype=np.float64)
        used += 1
        basis.append(Q)
        images.append(Z)
        B, AB = np.hstack(basis), np.hstack(images)
        T = B.T @ AB
        values, vectors = np.linalg.eigh(0.5 * (T + T.T))
        y = vectors[:, -1]
        u = B @ y
        norm_u = float(np.linalg.norm(u))
        theta = float(values[-1])
        residual = float(np.linalg.norm(AB @ y - theta * u)) / norm_u
        if residual <= rtol * abs(theta) or B.shape[1] >= n:
            break
        W = Z.copy()
        for _ in range(2):  # classical Gram–Schmidt, twice
            W -= B @ (B.T @ W)
        Q, R = np.linalg.qr(W)
        keep = np.abs(np.diagonal(R)) > 1e-12 * max(float(np.abs(R).max()), 1e-300)
        if not keep.any():  # the Krylov space is invariant: θ is exact
            break
        Q = Q[:, keep]
    return TopEigenvalue(theta, residual, used, block)


# -- grids of powers ---------------------------------------------------------------------------------------------------
def geometric_grid(start: int, stop: int):
    """start, … stop on a grid that is dense at first and grows by ~25 %."""
    p = start
    while p <= stop:
        yield p
        p = max(p + 1, int(p * 1.25))
    if stop >= start:
        yield stop

