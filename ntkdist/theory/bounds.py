"""Spectral bounds for the NTK/NNGP Gram matrix of given data: pure functions of X and the network.

Every function takes the data X (N×d) and an `MLP` in the **stax convention** of `ntkdist.kernels`
(Σ¹ = weight_var·⟨x, y⟩/d + bias_var, ``depth`` hidden layers, linear readout; the Gram matrix is
K = [Θ(x_i, x_j)] itself, not divided by N) and returns a `Bound` on an eigenvalue of that K. Papers that use
another convention are converted at the boundary of the function that implements them; each docstring says how.

Bounds implemented (paper sections in brackets):

* Murray, Jin, Bowman, Montúfar 2023 (arXiv 2211.07844): effective rank, Thm 4.1 and Thm 4.3 [§1.6]; the
  generic-data upper bound on λ_k, Thm 4.8 in its implementable form (Lemma "eigen_ub_nonuniform1") [§1.8].
* The Hermite (power-series) lower bound λ_min(K) ≥ Σ_p c_p λ_min((X̂X̂ᵀ)^{⊙p}) (Schur product theorem on
  Murray's Thm 3.1 expansion) [§3, last paragraph].
* Nguyen, Mondelli, Montúfar 2021 (arXiv 2012.11654): the λ_min chain of the proof of Thm 3.2 (layer sum,
  Hadamard power with μ_r², Gershgorin, trace) [§2.2–2.3], in their convention with an explicit conversion.
* Plain linear algebra: λ_min ≤ min_i K_ii and Cauchy interlacing on a principal submatrix of near pairs.

**Dot-product reduction.** Murray's bounds need K = Σ_p c_p (X̂X̂ᵀ)^{⊙p} with c_p ≥ 0 and unit rows X̂. This
module reaches that form, K = D·(Σ_p c_p (X̂X̂ᵀ)^{⊙p})·D with D diagonal, in two cases (`dot_product_form`):

1. all rows have the same norm R (to ``rtol``): D = I and c_p are the coefficients of Θ as a series in the
   cosine for inputs of norm R (``power_series(net, order, dim=d, radius=R)``);
2. a positively homogeneous activation (ReLU, leaky ReLU, |x|) without biases, any norms: Θ(x, y) =
   ‖x‖‖y‖·Θ₁(x̂, ŷ), so D = diag‖x_i‖ and c_p are the coefficients at radius 1. Ostrowski's theorem
   (λ_k(DAD) = θ_k λ_k(A) with θ_k ∈ [min d_i², max d_i²]) then carries every eigenvalue bound over with the
   factor min d² (lower bounds) or max d² (upper bounds); the effective-rank bounds carry over exactly.

Other data (unequal norms with biases or a non-homogeneous activation) make Θ a function of the norms as well
as the cosine; the dot-product bounds then report ``applies=False`` and say why.

**Cost.** Bounds that need eigenvalues of dense N×N matrices refuse above ``max_n`` (default `EIGEN_MAX_N`)
with `TooLargeError`; each returned `Bound` records in ``cost`` how many dense N×N eigen-decompositions it
used (λ_1 by Lanczos and Gershgorin sums cost O(N²) and count zero).

**Rounding.** Eigenvalues computed here are rounded; a lower bound built from a computed λ_min subtracts the
backward-error allowance 4·N·ε·‖A‖₁ of that eigenvalue, and upper bounds from Lanczos add the residual norm,
so the bounds hold for the exact matrices up to the rounding of forming them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from ..kernels import MLP, nngp, ntk
from ..kernels.analytic import diagonal_recursion
from ..kernels.activations import ABReLU, theta_minus_sin
from .power_series import power_series

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


def _block_rows(n: int) -> int:
    """Rows of an N-column block: at most `_ROW_BLOCK` and at most `_BLOCK_ENTRIES` entries."""
    return max(1, min(_ROW_BLOCK, _BLOCK_ENTRIES // max(int(n), 1)))
_EPS = np.finfo(np.float64).eps

MURRAY = "Murray, Jin, Bowman, Montúfar 2023, arXiv 2211.07844"
NGUYEN = "Nguyen, Mondelli, Montúfar 2021, arXiv 2012.11654"
STAX_CONVENTION = ("stax NTK parameterization: Σ¹ = weight_var·⟨x,y⟩/d + bias_var, depth hidden layers + linear "
                   "readout; Gram K = [Θ(x_i, x_j)] not divided by N")


class TooLargeError(ValueError):
    """A bound needs dense N×N eigen-decompositions and N exceeds the documented limit."""


@dataclass(frozen=True)
class Bound:
    """A bound on a spectral quantity of the Gram matrix K = [Θ(x_i, x_j)] (stax convention).

    Attributes
    ----------
    name : str
        Short identifier, e.g. ``"hermite_lambda_min"`` (also the suffix of the ``theory_*`` variable).
    quantity : str
        ``"lambda_min"``, ``"lambda_k"``, ``"effective_rank"`` (Tr K/λ_1), ``"centred_effective_rank"``.
    side : str
        ``"lower"`` or ``"upper"``.
    value : float or ndarray
        The bound (NaN where it does not apply); an array over ``k`` for ``quantity == "lambda_k"``.
    applies : bool
        Whether the hypotheses hold for this network and data.
    conditions : str
        When the bound applies (activation, bias, data normalisation), in words.
    reason : str
        Why it applies or not here.
    citation : str
        Paper and equation/theorem.
    convention : str
        The convention of ``value`` (always the stax Gram; says what was converted).
    k : ndarray or None
        Indices (1 = largest) for ``lambda_k`` bounds.
    cost : float
        Dense N×N eigen-decompositions used.
    details : dict
        Intermediate numbers (coefficients used, the m or r chosen, …), JSON-ready.
    """

    name: str
    quantity: str
    side: str
    value: float | np.ndarray
    applies: bool
    conditions: str
    reason: str
    citation: str
    convention: str = STAX_CONVENTION
    k: np.ndarray | None = None
    cost: float = 0.0
    details: dict = field(default_factory=dict)


def _not_applicable(name, quantity, side, conditions, reason, citation, k=None) -> Bound:
    value = np.full(len(k), np.nan) if k is not None else float("nan")
    return Bound(name, quantity, side, value, False, conditions, reason, citation,
                 k=None if k is None else np.asarray(k, dtype=np.int64))


def _check_n(n: int, max_n: int, what: str) -> None:
    if n > max_n:
        raise TooLargeError(
            f"{what} needs dense {n}×{n} eigen-decompositions; it is limited to N ≤ {max_n} "
            f"(pass max_n= to raise the limit, or use a Gershgorin/trace bound, which scale to any N)")


def _as_data(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X: expected a non-empty 2-D array (points × features), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X: contains NaN or inf")
    return X


def _row_norms(X: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", X, X))


def _unit_rows(X: np.ndarray, norms: np.ndarray) -> np.ndarray:
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


# -- Dense helpers -------------------------------------------------------------------------------------------------
def _extreme_eigenvalue(A: np.ndarray, index: int) -> float:
    """The eigenvalue of symmetric A at ascending position ``index`` (0 or N − 1), by bisection (LAPACK syevx).

    syevr (MRRR) fails with "Internal Error" on matrices within rounding of the identity (high Hadamard powers);
    syevx does not, and a full syevd is the fallback.
    """
    try:
        return float(scipy.linalg.eigh(A, eigvals_only=True, driver="evx", subset_by_index=(index, index))[0])
    except np.linalg.LinAlgError:
        return float(np.linalg.eigvalsh(A)[index])


def _lambda_min_lower(A: np.ndarray) -> float:
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
    return _extreme_eigenvalue(A, 0) - allowance


def _lambda_max_upper(A: np.ndarray) -> float:
    """An upper estimate of λ_1(A) for symmetric PSD A: Lanczos + residual, capped by Gershgorin (a bound).

    The residual bounds the distance from the Ritz value to the nearest eigenvalue, which is λ_1 when Lanczos
    converged to the top of the spectrum; started from the all-ones vector it does for the entrywise non-negative
    Hadamard powers and kernels this is used on (Perron). Small A (N ≤ 400) take the dense eigenvalue instead.
    """
    n = A.shape[0]
    gershgorin = float(np.abs(A).sum(axis=1).max())
    if n <= 400:
        value = _extreme_eigenvalue(A, n - 1)
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
            _check_n(self.n, self.max_n, "forming X̂X̂ᵀ")
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
                _check_n(self.n, self.max_n, f"λ_min of the Hadamard power G^⊙{p}")
                value = max(_lambda_min_lower(self.power(p)), 0.0)
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
                _check_n(self.n, self.max_n, f"λ_1 of the Hadamard power G^⊙{p}")
                value = _lambda_max_upper(self.power(p))
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
        step = _block_rows(self.n)
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


# -- The dot-product form K = D (Σ c_p G^{⊙p}) D -------------------------------------------------------------------
@dataclass(frozen=True)
class DotProductForm:
    """K = D·(Σ_p c_p (X̂X̂ᵀ)^{⊙p})·D, the form Murray's bounds need (see the module docstring).

    Attributes
    ----------
    powers : HadamardPowers
        Of the unit rows X̂.
    scale : (N,) array
        The diagonal of D: ones (equal-norm data) or the row norms (homogeneous activation, no bias).
    radius : float
        The input norm at which the coefficients are taken.
    coefficients : (T+1,) array
        c_0 … c_T, in the stax convention (the Gram K itself, i.e. Murray's nK).
    total : float
        Σ_{p≥0} c_p = Θ(x, x) at norm ``radius`` (so tail sums are exact).
    how : str
        ``"equal-norm"`` or ``"homogeneous"``.
    """

    powers: HadamardPowers
    scale: np.ndarray
    radius: float
    coefficients: np.ndarray
    total: float
    how: str

    def tail(self, m: int) -> float:
        """Σ_{j≥m} c_j, exact from ``total`` (≥ 0)."""
        return max(self.total - float(self.coefficients[:m].sum()), 0.0)

    @property
    def min_scale2(self) -> float:
        return float((self.scale ** 2).min())

    @property
    def max_scale2(self) -> float:
        return float((self.scale ** 2).max())


class NotDotProduct(ValueError):
    """The kernel on these data is not of the form D·(Σ c_p G^{⊙p})·D that the bounds need."""


def is_positively_homogeneous(activation) -> bool:
    """φ(t·x) = t·φ(x) for t > 0 (the ABReLU family: ReLU, leaky ReLU, |x|)."""
    return isinstance(activation, ABReLU)


def _series(net: MLP, order: int, dim: int, kind: str, radius: float):
    series = power_series(net, order, dim=dim, kind=kind, radius=radius)
    coefficients = np.asarray(series.coefficients, dtype=np.float64)
    return coefficients, float(series.total)


def dot_product_form(X, net: MLP, *, kind: str = "ntk", order: int = 128, rtol: float = 1e-9,
                     coefficients=None, total: float | None = None, max_n: int = EIGEN_MAX_N,
                     powers: HadamardPowers | None = None) -> DotProductForm:
    """Reduce the Gram matrix of ``net`` on X to K = D·(Σ_p c_p (X̂X̂ᵀ)^{⊙p})·D.

    Parameters
    ----------
    X : (N, d) array
    net : MLP (stax convention)
    kind : {"ntk", "nngp"}
    order : int
        Truncation T of the series (the tail mass beyond it is exact through ``total``).
    rtol : float
        Row norms equal to this relative tolerance count as equal.
    coefficients, total : optional
        c_p in the stax convention at the radius of the data (equal-norm) or radius 1 (homogeneous) and their
        full sum Θ(x, x); by default from `ntkdist.theory.power_series.power_series` (composition form).
    powers : HadamardPowers, optional
        Reuse a cache built on the same unit rows.

    Raises
    ------
    NotDotProduct
        Unequal norms with biases or a non-homogeneous activation (the message says which).
    """
    X = _as_data(X)
    norms = _row_norms(X)
    n, dim = X.shape
    top = float(norms.max())
    if top == 0.0:
        raise NotDotProduct("every input is the zero vector")
    if float(norms.min()) >= top * (1.0 - rtol):
        how, radius, scale = "equal-norm", float(np.median(norms)), np.ones(n)
    elif is_positively_homogeneous(net.activation) and net.bias_var == 0.0:
        how, radius, scale = "homogeneous", 1.0, norms
    else:
        raise NotDotProduct(
            f"rows have unequal norms ({float(norms.min()):.4g} … {top:.4g}) and the network is not positively "
            f"homogeneous without biases ({net.activation.describe()}, bias_var = {net.bias_var:g}), so Θ is not "
            "a power series in the cosine alone; normalise the rows to use these bounds")
    if coefficients is None:
        coefficients, total = _series(net, order, dim, kind, radius)
    else:
        coefficients = np.asarray(coefficients, dtype=np.float64)
        if total is None:
            raise ValueError("total: give Σ_p c_p (= Θ(x, x) at that radius) together with coefficients")
    if (coefficients < -1e-12 * max(float(np.abs(coefficients).max()), 1e-300)).any():
        raise NotDotProduct("the series has negative coefficients; Murray's bounds need c_p ≥ 0")
    coefficients = np.maximum(coefficients, 0.0)
    if powers is None:
        powers = HadamardPowers(_unit_rows(X, norms), max_n=max_n)
    return DotProductForm(powers, scale, radius, coefficients, float(total), how)


def _form_or_reason(X, net, kind, order, form, **kw):
    if form is not None:
        return form, ""
    try:
        return dot_product_form(X, net, kind=kind, order=order, **kw), ""
    except NotDotProduct as exc:
        return None, str(exc)


_DOT_CONDITIONS = ("K = D·Σ_p c_p (X̂X̂ᵀ)^{⊙p}·D with c_p ≥ 0: rows of equal norm (any activation, any bias), or a "
                   "positively homogeneous activation (ReLU/leaky ReLU/|x|) without biases and any norms")


# -- Murray et al.: effective rank (Sec. 4.1) ----------------------------------------------------------------------
def effective_rank(eigenvalues=None, *, trace: float | None = None, matrix=None) -> float:
    """eff(A) = Tr(A)/λ_1(A) (Huang, Hsu, Vershynin; Murray et al. Sec. 4.1) from eigenvalues or a matrix."""
    if matrix is not None:
        A = np.asarray(matrix, dtype=np.float64)
        return float(np.trace(A)) / float(np.linalg.eigvalsh(A)[-1])
    values = np.asarray(eigenvalues, dtype=np.float64)
    return float(values.sum() if trace is None else trace) / float(values.max())


def effective_rank_bound(X, net: MLP, *, kind: str = "ntk", order: int = 128,
                         form: DotProductForm | None = None) -> Bound:
    """Murray et al. Thm 4.1: eff(K) ≤ (Σ_p c_p)/c_0 when c_0 > 0.

    Murray state it for nK = Σ c_p (XXᵀ)^{⊙p} with unit rows; nK is the stax Gram K here, so the c_p are the
    stax series coefficients unchanged. With K = D(Σ c_p G^{⊙p})D the bound holds verbatim:
    Tr K = ‖d‖² Σc_p and λ_1(K) ≥ c_0 λ_1(ddᵀ) = c_0‖d‖² [DERIVED extension to homogeneous nets].
    Cost: none (coefficients only).
    """
    name, conditions = "effective_rank", _DOT_CONDITIONS + "; c_0 > 0"
    citation = f"{MURRAY}, Thm 4.1 (Sec. 4.1): eff(K) ≤ Σ_p c_p / c_0"
    form, why = _form_or_reason(X, net, kind, order, form)
    if form is None:
        return _not_applicable(name, "effective_rank", "upper", conditions, why, citation)
    c0 = float(form.coefficients[0])
    if c0 <= 0.0:
        return _not_applicable(name, "effective_rank", "upper", conditions, "c_0 = 0 (no constant term)", citation)
    return Bound(name, "effective_rank", "upper", form.total / c0, True, conditions,
                 f"{form.how} data, c_0 = {c0:.6g}, Σc_p = {form.total:.6g}", citation,
                 details={"c0": c0, "total": form.total, "how": form.how})


def centred_effective_rank_bound(X, net: MLP, *, kind: str = "ntk", order: int = 128,
                                 form: DotProductForm | None = None) -> Bound:
    """Murray et al. Thm 4.3: eff(K̃) ≤ eff(XXᵀ)·(Σ_{p≥1} c_p)/c_1 for the centred kernel when c_1 > 0.

    Murray's K̃ = K − (c_0/n)11ᵀ for their K = Θ/n is, in the stax Gram convention, K̃ = K − c_0·ddᵀ
    (d = 1 for equal-norm data, d = row norms for homogeneous nets); compute it with `centred_effective_rank`.
    eff(XXᵀ) is of the raw data (scale-free). Cost: one SVD of X.
    """
    name, conditions = "centred_effective_rank", _DOT_CONDITIONS + "; c_1 > 0"
    citation = f"{MURRAY}, Thm 4.3 (Sec. 4.1): eff(K − c_0 11ᵀ) ≤ eff(XXᵀ)·Σ_{{p≥1}} c_p / c_1"
    form, why = _form_or_reason(X, net, kind, order, form)
    if form is None:
        return _not_applicable(name, "centred_effective_rank", "upper", conditions, why, citation)
    c1 = float(form.coefficients[1]) if len(form.coefficients) > 1 else 0.0
    if c1 <= 0.0:
        return _not_applicable(name, "centred_effective_rank", "upper", conditions,
                               "c_1 = 0 (no linear term, e.g. an even activation without bias)", citation)
    X = _as_data(X)
    s = np.linalg.svd(X, compute_uv=False)
    eff_data = float((s ** 2).sum() / s[0] ** 2)
    value = eff_data * form.tail(1) / c1
    return Bound(name, "centred_effective_rank", "upper", value, True, conditions,
                 f"{form.how} data, eff(XXᵀ) = {eff_data:.6g}, c_1 = {c1:.6g}", citation,
                 details={"c0": float(form.coefficients[0]), "c1": c1, "eff_data": eff_data, "how": form.how})


def centred_effective_rank(gram, form: DotProductForm) -> float:
    """eff(K − c_0·ddᵀ) of a computed Gram matrix (the quantity Thm 4.3 bounds); λ_1 by Lanczos."""
    K = np.asarray(gram, dtype=np.float64)
    d = form.scale
    c0 = float(form.coefficients[0])
    n = K.shape[0]
    trace = float(np.trace(K)) - c0 * float(d @ d)
    if n <= 400:
        top = float(np.linalg.eigvalsh(K - c0 * np.outer(d, d))[-1])
    else:
        op = scipy.sparse.linalg.LinearOperator((n, n), dtype=np.float64,
                                                matvec=lambda v: K @ v - c0 * d * (d @ v))
        top = float(scipy.sparse.linalg.eigsh(op, k=1, which="LA", tol=1e-10)[0][0])
    return trace / top


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


def centred_effective_rank_operator(operator, form: DotProductForm, trace: float, *, passes: int,
                                    block: int = 4, seed: int = 0) -> dict:
    """eff(K − c_0·ddᵀ) = (Tr K − c_0‖d‖²)/λ_1(K − c_0·ddᵀ) (the quantity of Murray Thm 4.3) through an operator.

    λ_1 of the rank-one update V ↦ K·V − c_0·d(dᵀV) by `top_eigenvalue` within ``passes`` products of
    ``operator`` (a `ntkdist.linalg.operator.SymmetricOperator`); the Gram matrix is never formed. ``trace`` is
    Tr K, exact from the diagonal. Returns value = Tr̃/θ (θ ≤ λ_1, so ≥ the true eff up to the operator's error),
    lower = Tr̃/(θ + ‖r‖ + ε_op) (the true eff, when Lanczos found λ_1 — see `TopEigenvalue`), θ, residual,
    passes used.
    """
    d = np.asarray(form.scale, dtype=np.float64)
    c0 = float(form.coefficients[0])
    n = d.shape[0]

    def apply(V):
        return operator.matmat(V) - c0 * np.outer(d, d @ V)

    top = top_eigenvalue(apply, n, passes=passes, block=block, seed=seed)
    centred_trace = float(trace) - c0 * float(d @ d)
    error = float(getattr(operator, "error_bound", 0.0) or 0.0)
    upper_top = top.value + top.residual + error
    return {"value": centred_trace / top.value if top.value > 0 else None,
            "lower": centred_trace / upper_top if upper_top > 0 else None,
            "lambda_1": top.value, "residual": top.residual, "operator_error_bound": error,
            "trace": centred_trace, "c0": c0, "passes": top.passes, "block": top.block}


# -- Murray et al.: generic-data upper bound on λ_k (Thm 4.8 / Lemma eigen_ub_nonuniform1) --------------------------
def generic_eigenvalue_upper_bound(X, net: MLP, ks, *, kind: str = "ntk", order: int = 128,
                                   form: DotProductForm | None = None, max_n: int = EIGEN_MAX_N) -> Bound:
    """Murray et al. Thm 4.8 (implementable form): λ_k(K) ≤ Σ_{j≥m} c_j λ_1(G^{⊙j}).

    For K = Σ_j c_j G^{⊙j} (G = X̂X̂ᵀ, unit rows, r = rank X) and every m with rank(H_m) < k, where
    H_m = Σ_{j<m} c_j G^{⊙j}, Weyl's inequality gives λ_k(K) ≤ λ_1(Σ_{j≥m} c_j G^{⊙j}). The paper's form bounds
    that by λ_1(G^{⊙m})·Σ_{j≥m} c_j; here each term keeps its own λ_1(G^{⊙j}) (non-increasing in j by Schur:
    λ_1(A⊙G) ≤ λ_1(A)·max G_ii), so the value is ≤ the paper's, and the best admissible m is taken per k.
    rank(H_m) is bounded by `sphere_polynomial_count` (r, m) ≤ C(r+m−1, r). Homogeneous nets: × max‖x_i‖².

    Λ_j ≥ λ_1(G^{⊙j}) comes from Lanczos (+ residual) at j = 1 and at the m the requested k can use, and from
    Gershgorin row sums max_i Σ_l |G_il|^j on a geometric grid of j, carried down monotonically in between.

    Stax convention: Murray's nK is the Gram K here; c_j are the stax series coefficients. Cost: λ_1 of a
    few Hadamard powers by Lanczos (O(N²) each; a dense eigenvalue for N ≤ 400); refuses above ``max_n``.

    Returns a `Bound` with ``k`` and ``value`` arrays (NaN where no m is admissible, e.g. k = 1).
    """
    ks = np.atleast_1d(np.asarray(ks, dtype=np.int64))
    name, conditions = "generic_lambda_k", _DOT_CONDITIONS
    citation = (f"{MURRAY}, Thm 4.8 via Lemma eigen_ub_nonuniform1 (App. C.5): λ_k ≤ λ_1(Σ_{{j≥m}} c_j G^⊙j) "
                "for rank(H_m) < k")
    form, why = _form_or_reason(X, net, kind, order, form, max_n=max_n)
    if form is None:
        return _not_applicable(name, "lambda_k", "upper", conditions, why, citation, k=ks)
    P = form.powers
    _check_n(P.n, max_n, "the generic-data λ_k bound")
    r = P.rank
    T = len(form.coefficients) - 1
    admissible = {}
    for k in ks:
        best = [m for m in range(1, T + 1) if sphere_polynomial_count(r, m) < k]
        admissible[int(k)] = max(best) if best else 0
    m_top = max(admissible.values(), default=0)
    if m_top == 0:
        return Bound(name, "lambda_k", "upper", np.full(len(ks), np.nan), True, conditions,
                     "no admissible m for these k", citation, k=ks)
    # Λ_j ≥ λ_1(G^{⊙j}), non-increasing in j: Lanczos at j = 1 and at the m the ks can use, Gershgorin row
    # sums on a geometric grid to T (cheap, and close to λ_1 once G^{⊙j} is near diagonal); in between the carry.
    lanczos = sorted({1} | {m for m in admissible.values() if 0 < m <= T})
    rows = P.row_sum_bound(sorted(set(_geometric_grid(1, T))))
    lam = {j: P.lambda_max(j) for j in lanczos}
    upper_j = np.empty(T + 1)
    upper_j[0] = float(P.n)
    running = math.inf
    for j in range(1, T + 1):
        running = min(running, lam.get(j, math.inf), rows.get(j, math.inf))
        upper_j[j] = running
    c = form.coefficients
    tail_T = form.tail(T + 1)
    # S(m) = Σ_{j=m}^{T} c_j Λ_j + tail_T·Λ_T, Λ_j ≥ λ_1(G^{⊙j}), non-increasing
    suffix = np.cumsum((c * upper_j)[::-1])[::-1] + tail_T * upper_j[T]
    values = np.empty(len(ks))
    chosen = []
    for i, k in enumerate(ks):
        m_max = admissible[int(k)]
        if m_max == 0 or k > P.n:
            values[i] = np.nan
            chosen.append(0)
            continue
        candidates = suffix[1:m_max + 1]
        m_best = int(np.argmin(candidates)) + 1
        values[i] = float(candidates[m_best - 1]) * form.max_scale2
        chosen.append(m_best)
    return Bound(name, "lambda_k", "upper", values, True, conditions,
                 f"{form.how} data, rank X = {r}", citation, k=ks,
                 details={"m": chosen, "rank": r, "how": form.how,
                          "lambda_1_powers": {str(j): float(upper_j[j]) for j in sorted(lam)}})


# -- Hermite / power-series lower bound on λ_min -------------------------------------------------------------------
def hermite_lambda_min_lower_bound(X, net: MLP, *, kind: str = "ntk", order: int = 128,
                                   form: DotProductForm | None = None, exact_powers: int = 1,
                                   max_n: int = EIGEN_MAX_N) -> Bound:
    """λ_min(K) ≥ Σ_p c_p λ_min((X̂X̂ᵀ)^{⊙p}) (DERIVED from Murray Thm 3.1 + Schur).

    Each term is PSD (Schur product theorem), so λ_min of the sum is at least the sum of the λ_min. Which
    λ_min((X̂X̂ᵀ)^{⊙p}) are computed:

    * p with C(r+p−1, p) < N (r = rank X): exactly 0 (rank-deficient), no computation;
    * the first ``exact_powers`` p beyond that: one dense eigen-decomposition each;
    * every later p: the running maximum of the last exact value and Gershgorin's bound — valid because
      λ_min(G^{⊙(p+1)}) = λ_min(G^{⊙p} ⊙ G) ≥ λ_min(G^{⊙p})·min_i G_ii = λ_min(G^{⊙p}) (Schur), so
      λ_min(G^{⊙p}) is non-decreasing in p; the tail Σ_{p>T} c_p is counted at λ_min(G^{⊙T}).

    Data other than unit norm: equal-norm data use the coefficients at their radius; homogeneous nets without
    bias use K = DK̂D and λ_min(K) ≥ min‖x_i‖²·λ_min(K̂); other data: ``applies=False``.

    Stax convention throughout (c_p of the Gram K itself). Cost: ``exact_powers`` eigen-decompositions at most.
    """
    name, conditions = "hermite_lambda_min", _DOT_CONDITIONS
    citation = ("Murray et al. 2023 Thm 3.1 expansion + Schur product theorem : "
                "λ_min(K) ≥ Σ_p c_p λ_min((X̂X̂ᵀ)^⊙p)")
    form, why = _form_or_reason(X, net, kind, order, form, max_n=max_n)
    if form is None:
        return _not_applicable(name, "lambda_min", "lower", conditions, why, citation)
    P = form.powers
    c = form.coefficients
    T = len(c) - 1
    lower = np.zeros(T + 1)
    first = next((p for p in range(T + 1) if not P.is_singular(p)), None)
    cost_before = P.eigendecompositions
    exact = []
    if first is not None:
        for p in range(first, min(first + exact_powers, T + 1)):
            lower[p] = P.lambda_min(p)
            exact.append(p)
        start = exact[-1] + 1 if exact else first
        grid = sorted({p for p in _geometric_grid(start, T)})
        gersh = P.gershgorin(grid) if grid else {}
        running = lower[start - 1] if start > 0 else 0.0
        for p in range(start, T + 1):
            if p in gersh:
                running = max(running, gersh[p])
            lower[p] = max(running, 0.0)
    value = float(c @ lower) + form.tail(T + 1) * float(lower[T])
    value *= form.min_scale2
    return Bound(name, "lambda_min", "lower", value, True, conditions,
                 f"{form.how} data, rank X = {P.rank}", citation,
                 cost=P.eigendecompositions - cost_before,
                 details={"exact_powers": exact, "first_nonsingular_power": first, "how": form.how,
                          "lambda_min_powers": {str(p): float(lower[p]) for p in range(min(T, 16) + 1)}})


def _geometric_grid(start: int, stop: int):
    """start, … stop on a grid that is dense at first and grows by ~25 %."""
    p = start
    while p <= stop:
        yield p
        p = max(p + 1, int(p * 1.25))
    if stop >= start:
        yield stop


# -- Plain upper bounds on λ_min -----------------------------------------------------------------------------------
def kernel_diagonal(X, net: MLP, kind: str = "ntk") -> np.ndarray:
    """K_ii = Θ(x_i, x_i) (or Σ(x_i, x_i)) from the diagonal recursion, O(N·d) (stax convention).

    q¹ = w‖x‖²/d + b, Θ¹ = q¹; q^{l+1} = w·E φ(u)² + b, Θ^{l+1} = q^{l+1} + w·E φ'(u)²·Θ^l, u ~ N(0, q^l).
    """
    X = _as_data(X)
    w, b = net.weight_var, net.bias_var
    nngp, ntk = diagonal_recursion(net.activation, w, b, net.depth, w * np.einsum("ij,ij->i", X, X) / X.shape[1] + b)
    return np.asarray(ntk if kind == "ntk" else nngp, dtype=np.float64)


def trace_upper_bound(X, net: MLP, *, kind: str = "ntk") -> Bound:
    """λ_min(K) ≤ Tr(K)/N (Nguyen et al. 2021, proof of Thm 3.2, upper bound; any kernel).

    In Nguyen's setting (ReLU, no bias) Tr K^{(L)}/N = (L/N)Σ‖x_i‖² in their convention; in the stax
    convention this is ((w/d)(w/2)^depth)·(depth+1)·Σ‖x_i‖²/N (see `nguyen_to_stax_factor`). Computed here
    for any network from the diagonal recursion. Cost O(N·d).
    """
    diag = kernel_diagonal(X, net, kind)
    return Bound("trace_lambda_min", "lambda_min", "upper", float(diag.mean()), True, "any network and data",
                 "λ_min is at most the mean eigenvalue Tr K/N",
                 f"{NGUYEN}, Thm 3.2 (upper bound λ_min ≤ Tr K/N = L·O(d))",
                 details={"trace": float(diag.sum())})


def diagonal_upper_bound(X, net: MLP, *, kind: str = "ntk") -> Bound:
    """λ_min(K) ≤ min_i K_ii (Rayleigh quotient of e_i); always ≤ `trace_upper_bound`. Cost O(N·d)."""
    diag = kernel_diagonal(X, net, kind)
    return Bound("diagonal_lambda_min", "lambda_min", "upper", float(diag.min()), True, "any network and data",
                 "Rayleigh quotient of a coordinate vector", "Rayleigh–Ritz: λ_min(K) ≤ min_i e_iᵀKe_i",
                 details={"argmin": int(diag.argmin())})


def near_pairs(X, count: int, *, exact_max_n: int = STREAM_MAX_N) -> np.ndarray:
    """Indices of ``count`` pairs (i < j) with small min(‖x_i − x_j‖, ‖x_i + x_j‖), nearest first.

    Sums are included because odd/even activations without bias make x and −x as degenerate as x and x.
    N ≤ ``exact_max_n``: the exact ``count`` smallest, streamed over row blocks (O(N²d) time, bounded memory).
    Above: neighbours in sorted random projections (`ntkdist.theory.pairs.near_pair_candidates`,
    O(N log N + N·d) per direction), a heuristic without optimality guarantee — fine for its one use, the
    interlacing bound, which holds for any set of pairs.
    """
    X = _as_data(X)
    n = X.shape[0]
    if n > exact_max_n:
        from .pairs import near_pair_candidates

        return near_pair_candidates(X, count)
    sq = np.einsum("ij,ij->i", X, X)
    best_d = np.empty(0)
    best_i = np.empty(0, dtype=np.int64)
    best_j = np.empty(0, dtype=np.int64)
    step = _block_rows(n)
    for start in range(0, n, step):
        stop = min(start + step, n)
        dist = sq[start:stop, None] + sq[None, :] - 2.0 * np.abs(X[start:stop] @ X.T)
        dist[np.arange(stop - start)[:, None] + start >= np.arange(n)[None, :]] = np.inf  # pairs i < j only
        flat = dist.ravel()
        take = min(count, int(np.isfinite(flat).sum()))
        if take == 0:
            continue
        part = np.argpartition(flat, take - 1)[:take]
        i, j = np.unravel_index(part, dist.shape)
        best_d = np.concatenate([best_d, flat[part]])
        best_i = np.concatenate([best_i, i + start])
        best_j = np.concatenate([best_j, j])
        if best_d.size > count:
            keep = np.argpartition(best_d, count - 1)[:count]
            best_d, best_i, best_j = best_d[keep], best_i[keep], best_j[keep]
    order = np.argsort(best_d, kind="stable")
    return np.stack([best_i[order], best_j[order]], axis=1)


def interlacing_upper_bound(X, net: MLP, *, kind: str = "ntk", pairs: int = 64,
                            exact_max_n: int = STREAM_MAX_N) -> Bound:
    """λ_min(K) ≤ λ_min(K[S, S]) for the principal submatrix on the points S of the ``pairs`` nearest pairs.

    Cauchy's interlacing theorem (Horn & Johnson, Thm 4.3.28). Near pairs (and, for odd/even activations,
    near-antipodal pairs) are where λ_min lives, so this is usually far tighter than the trace bound.
    The bound holds for *any* S; how near the pairs are only decides how tight it is. Cost: the search of
    `near_pairs` (exact O(N²d) streamed for N ≤ ``exact_max_n``, sorted random projections above it,
    O(N log N + N·d)) plus a kernel and eigenvalues of ≤ 2·pairs points; any N, memory O(N·d).
    """
    X = _as_data(X)
    n = X.shape[0]
    conditions = "any network and data (N ≥ 2)"
    citation = "Cauchy interlacing (Horn & Johnson 2013, Thm 4.3.28): λ_min(K) ≤ λ_min(K[S,S])"
    if n < 2:
        diag = kernel_diagonal(X, net, kind)
        return Bound("interlacing_lambda_min", "lambda_min", "upper", float(diag.min()), True, conditions,
                     "one point", citation)
    found = near_pairs(X, min(pairs, n * (n - 1) // 2), exact_max_n=exact_max_n)
    search = "exact" if n <= exact_max_n else "sorted random projections (heuristic; the bound holds for any S)"
    points = np.unique(found.ravel())
    sub = X[points]
    K = ntk(sub, net=net) if kind == "ntk" else nngp(sub, net=net)
    values = np.linalg.eigvalsh(K)
    allowance = 4.0 * len(points) * _EPS * float(np.abs(K).sum(axis=1).max())
    return Bound("interlacing_lambda_min", "lambda_min", "upper", float(values[0]) + allowance, True, conditions,
                 f"principal submatrix on {len(points)} points of the {len(found)} nearest (±) pairs", citation,
                 details={"points": int(len(points)), "pair_search": search})


# -- The general layer-sum chain (stax) ----------------------------------------------------------------------------
def layer_sum_lower_bound(X, net: MLP, *, max_n: int = EIGEN_MAX_N) -> Bound:
    """λ_min(Θ^{(L+1)}) ≥ Σ_{l=1}^{L+1} λ_min(Σ^{(l)})·∏_{l'=l+1}^{L+1} min_i Σ̇^{(l')}_ii (stax, any activation).

    From Θ^{(l+1)} = Σ^{(l+1)} + Σ̇^{(l+1)} ⊙ Θ^{(l)} and Schur's λ_min(A⊙B) ≥ λ_min(A)·min_i B_ii (B PSD);
    this is step 1 of Nguyen et al.'s proof of Thm 3.2 (their λ_min(K^{(L)}) ≥ Σ_l λ_min(G^{(l)}), where their
    Ġ_ii = 1) for any activation and bias, with the diagonal factors Σ̇_ii = w·E φ'(u)², u ~ N(0, Σ^{(l'−1)}_ii).
    NTK only. Cost: one dense eigen-decomposition per layer whose Σ^{(l)} is not provably singular
    (Σ^{(1)} = wXXᵀ/d + b has rank ≤ rank[X, 1]). Refuses above ``max_n``.
    """
    X = _as_data(X)
    n, dim = X.shape
    _check_n(n, max_n, "the layer-sum λ_min bound")
    act, w, b = net.activation, net.weight_var, net.bias_var
    # Σ^{(1)}: singular when N exceeds rank [X, 1] (or rank X without bias)
    augmented = np.hstack([X, np.ones((n, 1))]) if b > 0 else X
    cost = 0
    if numerical_rank(augmented) < n:
        lam = [0.0]
    else:
        S1 = w * (X @ X.T) / dim + b
        lam = [max(_lambda_min_lower(0.5 * (S1 + S1.T)), 0.0)]
        cost += 1
    for layer in range(2, net.depth + 2):
        S = nngp(X, net=MLP(layer - 1, act, w, b))
        lam.append(max(_lambda_min_lower(S), 0.0))
        cost += 1
    # min_i Σ̇^{(l')}_ii for l' = 2..L+1, from the diagonal variances q^{(l'−1)}
    q = w * np.einsum("ij,ij->i", X, X) / dim + b
    dot_min = []
    for _ in range(net.depth):
        dot_min.append(float((w * act.derivative_second_moment(q)).min()))
        q = w * act.second_moment(q) + b
    value = 0.0
    for l, lam_l in enumerate(lam):  # l = 0 is Σ^{(1)}
        factor = float(np.prod(dot_min[l:])) if l < len(dot_min) else 1.0
        value += lam_l * factor
    return Bound("layer_sum_lambda_min", "lambda_min", "lower", value, True, "NTK; any activation, bias and data",
                 f"{len(lam)} layers, min Σ̇_ii = {', '.join(f'{v:.4g}' for v in dot_min)}",
                 f"{NGUYEN}, proof of Thm 3.2, step λ_min(K^(L)) ≥ Σ_l λ_min(G^(l)) (Schur), in stax form",
                 cost=cost, details={"lambda_min_layers": lam, "min_sigma_dot": dot_min})


# -- Nguyen, Mondelli, Montúfar 2021, in their own convention ------------------------------------------------------
NGUYEN_CONVENTION = ("Nguyen et al.: ReLU, no biases, G^(1) = XXᵀ (no 1/d), G^(l) = 2E[σσᵀ], Ġ^(l) = 2E[σ'σ'ᵀ], "
                     "K^(L) = K^(L−1)∘Ġ^(L) + G^(L); L = depth + 1 layers")


def nguyen_applies(net: MLP) -> str:
    """'' when Nguyen et al.'s setting (ReLU, no biases) covers ``net``, else what is missing."""
    act = net.activation
    if not (isinstance(act, ABReLU) and act.a == 0.0 and act.b == 1.0):
        return f"needs ReLU (got {act.describe()})"
    if net.bias_var != 0.0:
        return f"needs no biases (bias_var = {net.bias_var:g})"
    return ""


def nguyen_to_stax_factor(net: MLP, dim: int) -> float:
    """t with Θ_stax = t·K^{(depth+1)}_Nguyen (and Σ_stax = t·G^{(depth+1)}): t = (w/d)·(w/2)^depth.

    Derivation: Σ¹ = (w/d)G^{(1)}; with Σ^{(l)} = c_l G^{(l)}, ReLU's homogeneity gives
    Σ^{(l+1)} = w·E[σσ] = (w/2)c_l G^{(l+1)} and Σ̇_stax = (w/2)Ġ, so Θ^{(l)} = c_l K^{(l)} with
    c_l = (w/d)(w/2)^{l−1}. For the critical w = 2: t = 2/d. ReLU without bias only.
    """
    why = nguyen_applies(net)
    if why:
        raise ValueError(f"net: Nguyen et al.'s convention {why}")
    w = net.weight_var
    return (w / dim) * (w / 2.0) ** net.depth


def _relu_layer(G: np.ndarray, diag: np.ndarray, one_minus: np.ndarray):
    """One ReLU layer of Nguyen's eq. (9)-(10) on G with angles from 1 − cos (kept without cancellation).

    Returns G', Ġ' and 1 − cos' of G'. sin θ, θ from 1 − c via θ = 2·asin(√((1 − c)/2)).
    """
    scale = np.sqrt(np.outer(diag, diag))
    one_minus = np.clip(one_minus, 0.0, 2.0)
    theta = 2.0 * np.arcsin(np.sqrt(0.5 * one_minus))
    c = 1.0 - one_minus
    sin_theta = np.sqrt(np.clip(one_minus * (2.0 - one_minus), 0.0, None))
    # (sin θ + (π − θ)c)/π and 1 − that = (2(π − θ)sin²(θ/2) + (θ − sin θ))/π, both cancellation-free.
    g = (sin_theta + (math.pi - theta) * c) / math.pi
    next_one_minus = (2.0 * (math.pi - theta) * (0.5 * one_minus) + theta_minus_sin(theta)) / math.pi
    return scale * g, (math.pi - theta) / math.pi, next_one_minus


def nguyen_layer_kernels(X, layers: int):
    """Nguyen et al. eqs. (8)–(10) in their convention: [G^{(1)}, …, G^{(L)}] and [Ġ^{(2)}, …, Ġ^{(L)}].

    G^{(1)} = XXᵀ, G^{(l)}_ij = √(G_ii G_jj)(sin θ + (π − θ)cos θ)/π, Ġ^{(l)}_ij = (π − θ)/π (θ the angle of
    G^{(l−1)}); G^{(l)}_ii = ‖x_i‖². Independent of `ntkdist.kernels` (used to verify the conversion).
    """
    X = _as_data(X)
    norms = _row_norms(X)
    unit = _unit_rows(X, norms)
    G = X @ X.T
    G = 0.5 * (G + G.T)
    diag = norms ** 2
    np.fill_diagonal(G, diag)
    cos = np.clip(unit @ unit.T, -1.0, 1.0)
    one_minus = 1.0 - cos
    # near-parallel pairs: 1 − cos = ‖x̂ − ŷ‖²/2 without cancellation
    close = one_minus < 1e-2
    if close.any():
        i, j = np.nonzero(close)
        diff = unit[i] - unit[j]
        one_minus[i, j] = 0.5 * np.einsum("ij,ij->i", diff, diff)
    Gs, dots = [G], []
    for _ in range(2, layers + 1):
        G, Gdot, one_minus = _relu_layer(G, diag, one_minus)
        Gs.append(G)
        dots.append(Gdot)
    return Gs, dots


def nguyen_limit_kernel(X, layers: int) -> np.ndarray:
    """K^{(L)} of Nguyen et al. eq. (8)–(10), L = ``layers`` (their convention; K^{(1)} = XXᵀ).

    Equals ``ntkdist.ntk(X, net=MLP(L−1, "relu", w, 0))/nguyen_to_stax_factor(net, d)``.
    """
    Gs, dots = nguyen_layer_kernels(X, layers)
    K = Gs[0]
    for G, Gdot in zip(Gs[1:], dots):
        K = K * Gdot + G
    return K


def relu_hermite_coefficient_squared(r: int) -> float:
    """μ_r(ReLU)² in the normalised probabilists' Hermite basis (Nguyen et al. Sec. 2).

    μ_0 = 1/√(2π), μ_1 = 1/2, μ_r = 0 for odd r ≥ 3, and for even r ≥ 2 μ_r² = ((r−3)!!)²/(2π·r!)
    (the exact coefficients of `ntkdist.theory.hermite`).
    """
    from .hermite import hermite_coefficients

    return float(hermite_coefficients("relu", r)[r]) ** 2


def _hadamard_gershgorin_raw(X: np.ndarray, rs) -> dict:
    """Gershgorin lower bounds on λ_min((XXᵀ)^{∘r}) for every r in ``rs``, in one streamed sweep over XXᵀ.

    Returns r → (row-wise bound, Nguyen's printed min‖x‖^{2r} − (N−1)·max_{i≠j}|⟨x_i,x_j⟩|^r). O(N²(d + |rs|))
    time, memory one block of rows (bounded, `_block_rows`).
    """
    n = X.shape[0]
    rs = sorted({int(r) for r in rs})
    sq = np.einsum("ij,ij->i", X, X)
    worst = {r: np.inf for r in rs}
    coarse_off = {r: 0.0 for r in rs}
    step = _block_rows(n)
    for start in range(0, n, step):
        stop = min(start + step, n)
        base = np.abs(X[start:stop] @ X.T)
        base[np.arange(stop - start), np.arange(start, stop)] = 0.0
        for r in rs:
            block = base ** r
            worst[r] = min(worst[r], float((sq[start:stop] ** r - block.sum(axis=1)).min()))
            coarse_off[r] = max(coarse_off[r], float(block.max()))
    return {r: (worst[r], float(sq.min() ** r) - (n - 1) * coarse_off[r]) for r in rs}


def _hadamard_lambda_min_raw(X: np.ndarray, r: int, method: str, max_n: int):
    """λ_min((XXᵀ)^{∘r}) of the raw data: exact (one eigen-decomposition) or row-wise Gershgorin."""
    n, dim = X.shape
    if method == "gershgorin":
        worst, coarse = _hadamard_gershgorin_raw(X, [r])[int(r)]
        # Nguyen's printed form: min‖x‖^{2r} − (N−1)·max_{i≠j}|⟨x_i,x_j⟩|^r (≤ the row-wise value)
        return worst, 0, {"nguyen_printed_gershgorin": coarse}
    if math.comb(numerical_rank(X) + r - 1, r) < n:  # rank((XXᵀ)^∘r) ≤ C(rank X + r − 1, r)
        return 0.0, 0, {"singular": True}
    _check_n(n, max_n, "λ_min of (XXᵀ)^∘r")
    A = (X @ X.T) ** r
    return _lambda_min_lower(0.5 * (A + A.T)), 1, {}


def nguyen_hadamard_lower_bound(X, net: MLP, *, r: int | None = None, method: str = "exact",
                                factor_two: bool = True, max_n: int = EIGEN_MAX_N) -> Bound:
    """Nguyen et al. Thm 3.2 proof, steps 1–3: λ_min(K^{(L)}) ≥ λ_min(XXᵀ) + 2μ_r² λ_min((XXᵀ)^{∘r})/max‖x‖^{2(r−1)}.

    Step 1 keeps G^{(1)} and G^{(2)} of Σ_l λ_min(G^{(l)}) (the others are PSD). Step 2 bounds
    λ_min(G^{(2)}) with ReLU's Hermite coefficient μ_r (even r ≥ 2); ``factor_two=True`` keeps the factor 2 of
    G^{(2)} = 2E[σσᵀ] that the paper's proof drops (dropping it only weakens the bound).
    ``method="gershgorin"`` replaces λ_min((XXᵀ)^{∘r}) by Gershgorin's row-wise bound (step 3, O(N²d), any N;
    the paper prints the coarser min‖x‖^{2r} − (N−1)max|⟨x_i,x_j⟩|^r, kept in ``details``).
    ``r=None`` picks, for "exact", the smallest even r with C(rank X + r − 1, r) ≥ N (below it the Hadamard power
    is singular), and for "gershgorin" the best even r ≤ 64.

    Convention: computed in Nguyen's (G^{(1)} = XXᵀ, no 1/d, factor-2 ReLU) and returned in stax, multiplied by
    `nguyen_to_stax_factor` (w/d)(w/2)^depth. Applies: ReLU, bias_var = 0, any data (their Thm 3.2 adds
    distributional assumptions only for the rate, not for this deterministic chain), NTK.
    """
    name = f"nguyen_hadamard_{method}_lambda_min"
    conditions = "NTK of a ReLU network without biases; any data"
    citation = (f"{NGUYEN}, proof of Thm 3.2: λ_min(K) ≥ Σ_l λ_min(G^(l)), λ_min(G^(2)) ≥ "
                "2μ_r²λ_min((XXᵀ)^∘r)/max‖x‖^{2(r−1)}" + (", Gershgorin" if method == "gershgorin" else ""))
    why = nguyen_applies(net)
    if why:
        return _not_applicable(name, "lambda_min", "lower", conditions, why, citation)
    if method not in ("exact", "gershgorin"):
        raise ValueError(f"method: 'exact' or 'gershgorin', got {method!r}")
    X = _as_data(X)
    n, dim = X.shape
    sq = np.einsum("ij,ij->i", X, X)
    rank = numerical_rank(X)
    lam1 = 0.0 if rank < n else float(np.linalg.svd(X, compute_uv=False)[-1] ** 2)
    if r is None:
        if method == "exact":
            r = 2
            while math.comb(rank + r - 1, r) < n and r < 64:
                r += 2
            candidates = [r]
        else:
            candidates = list(range(2, 65, 2))
    else:
        if r < 2 or r % 2:
            raise ValueError(f"r: Nguyen's bound takes an even r ≥ 2, got {r}")
        candidates = [r]
    best, best_r, cost, extra = -math.inf, candidates[0], 0, {}
    sweep = _hadamard_gershgorin_raw(X, candidates) if method == "gershgorin" else {}
    for rr in candidates:
        if method == "gershgorin":
            lam_r, used, info = sweep[rr][0], 0, {"nguyen_printed_gershgorin": sweep[rr][1]}
        else:
            lam_r, used, info = _hadamard_lambda_min_raw(X, rr, method, max_n)
        cost += used
        term = (2.0 if factor_two else 1.0) * relu_hermite_coefficient_squared(rr) * max(lam_r, 0.0) \
            / float(sq.max()) ** (rr - 1)
        if term > best:
            best, best_r, extra = term, rr, info
    factor = nguyen_to_stax_factor(net, dim)
    value_nguyen = lam1 + best
    return Bound(name, "lambda_min", "lower", factor * value_nguyen, True, conditions,
                 f"r = {best_r}, λ_min(XXᵀ) = {lam1:.4g}", citation,
                 convention=f"{STAX_CONVENTION}; converted from {NGUYEN_CONVENTION} by × (w/d)(w/2)^depth",
                 cost=cost, details={"r": best_r, "value_nguyen_convention": value_nguyen,
                                     "stax_factor": factor, "factor_two": factor_two, **extra})


def nguyen_layer_sum_lower_bound(X, net: MLP, *, max_n: int = EIGEN_MAX_N) -> Bound:
    """Nguyen et al. Thm 3.2 proof, step 1, exactly: λ_min(K^{(L)}) ≥ Σ_{l=1}^{L} λ_min(G^{(l)}).

    G^{(l)} from `nguyen_layer_kernels` in their convention (L = depth + 1), returned in stax
    (× `nguyen_to_stax_factor`). Equals `layer_sum_lower_bound` for ReLU without bias (there Ġ_ii = 1).
    Cost: L − 1 dense eigen-decompositions (λ_min(XXᵀ) from an SVD); refuses above ``max_n``.
    """
    name, conditions = "nguyen_layer_sum_lambda_min", "NTK of a ReLU network without biases; any data"
    citation = f"{NGUYEN}, proof of Thm 3.2: λ_min(K^(L)) ≥ Σ_l λ_min(G^(l)) (Schur, Ġ_ii = 1)"
    why = nguyen_applies(net)
    if why:
        return _not_applicable(name, "lambda_min", "lower", conditions, why, citation)
    X = _as_data(X)
    n, dim = X.shape
    _check_n(n, max_n, "Nguyen's layer-sum bound")
    Gs, _ = nguyen_layer_kernels(X, net.depth + 1)
    lam = [0.0 if numerical_rank(X) < n else float(np.linalg.svd(X, compute_uv=False)[-1] ** 2)]
    for G in Gs[1:]:
        lam.append(max(_lambda_min_lower(G), 0.0))
    factor = nguyen_to_stax_factor(net, dim)
    return Bound(name, "lambda_min", "lower", factor * sum(lam), True, conditions,
                 f"L = {net.depth + 1} layers", citation,
                 convention=f"{STAX_CONVENTION}; converted from {NGUYEN_CONVENTION} by × (w/d)(w/2)^depth",
                 cost=len(Gs) - 1, details={"lambda_min_layers_nguyen": lam, "stax_factor": factor})
