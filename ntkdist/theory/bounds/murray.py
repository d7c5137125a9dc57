"""Murray, Jin, Bowman, Montúfar 2023 (arXiv 2211.07844): bounds of the power-series (dot-product) form.

Every function takes the data X (N×d) and an `MLP` in the **stax convention** of `ntkdist.kernels`
(Σ¹ = weight_var·⟨x, y⟩/d + bias_var, ``depth`` hidden layers, linear readout; the Gram matrix is
K = [Θ(x_i, x_j)] itself, not divided by N, which is Murray's nK) and returns a `TheoryResult`.

* the effective rank, Thm 4.1 and Thm 4.3 (Sec. 4.1);
* the generic-data upper bound on λ_k, Thm 4.8 in its implementable form (Lemma "eigen_ub_nonuniform1", App. C.5);
* the Hermite (power-series) lower bound λ_min(K) ≥ Σ_p c_p λ_min((X̂X̂ᵀ)^{⊙p}) (Schur product theorem on the
  expansion of Thm 3.1).

**Dot-product reduction.** These bounds need K = Σ_p c_p (X̂X̂ᵀ)^{⊙p} with c_p ≥ 0 and unit rows X̂. This
module reaches that form, K = D·(Σ_p c_p (X̂X̂ᵀ)^{⊙p})·D with D diagonal, in two cases (`dot_product_form`):

1. all rows have the same norm R (to ``rtol``): D = I and c_p are the coefficients of Θ as a series in the
   cosine for inputs of norm R (``power_series(net, order, dim=d, radius=R)``);
2. a positively homogeneous activation (ReLU, leaky ReLU, |x|) without biases, any norms: Θ(x, y) =
   ‖x‖‖y‖·Θ₁(x̂, ŷ), so D = diag‖x_i‖ and c_p are the coefficients at radius 1. Ostrowski's theorem
   (λ_k(DAD) = θ_k λ_k(A) with θ_k ∈ [min d_i², max d_i²]) then carries every eigenvalue bound over with the
   factor min d² (lower bounds) or max d² (upper bounds); the effective-rank bounds carry over exactly.

Other data (unequal norms with biases or a non-homogeneous activation) make Θ a function of the norms as well
as the cosine; the bounds then report ``applies=False`` and say why.

The mathematics, with its conventions, errata and tests: docs/theory.md §5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse.linalg

from ...kernels import MLP
from ...kernels.activations import ABReLU
from ..estimates import (
    EIGEN_MAX_N,
    HadamardPowers,
    as_data,
    check_size,
    geometric_grid,
    row_norms,
    sphere_polynomial_count,
    top_eigenvalue,
    unit_rows,
)
from ..power_series import power_series
from ..result import MURRAY, TheoryResult, not_applicable

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


def stax_series_coefficients(net: MLP, order: int, dim: int, kind: str, radius: float):
    """c_0 … c_order of Θ as a series in the cosine at input norm ``radius`` (stax), and their full sum Θ(x, x)."""
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
    X = as_data(X)
    norms = row_norms(X)
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
        coefficients, total = stax_series_coefficients(net, order, dim, kind, radius)
    else:
        coefficients = np.asarray(coefficients, dtype=np.float64)
        if total is None:
            raise ValueError("total: give Σ_p c_p (= Θ(x, x) at that radius) together with coefficients")
    if (coefficients < -1e-12 * max(float(np.abs(coefficients).max()), 1e-300)).any():
        raise NotDotProduct("the series has negative coefficients; Murray's bounds need c_p ≥ 0")
    coefficients = np.maximum(coefficients, 0.0)
    if powers is None:
        powers = HadamardPowers(unit_rows(X, norms), max_n=max_n)
    return DotProductForm(powers, scale, radius, coefficients, float(total), how)


def _form_or_reason(X, net, kind, order, form, **kw):
    """The given form, or `dot_product_form` of (X, net), or None and why these data have none."""
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
                         form: DotProductForm | None = None) -> TheoryResult:
    """Murray et al. Thm 4.1: eff(K) ≤ (Σ_p c_p)/c_0 when c_0 > 0.

    Murray state it for nK = Σ c_p (XXᵀ)^{⊙p} with unit rows; nK is the stax Gram K here, so the c_p are the
    stax series coefficients unchanged. With K = D(Σ c_p G^{⊙p})D the bound holds verbatim:
    Tr K = ‖d‖² Σc_p and λ_1(K) ≥ c_0 λ_1(ddᵀ) = c_0‖d‖² [DERIVED extension to homogeneous nets].
    Cost: none (coefficients only).
    """
    name, conditions = "effective_rank", _DOT_CONDITIONS + "; c_0 > 0"
    equation = "Thm 4.1 (Sec. 4.1): eff(K) ≤ Σ_p c_p / c_0"
    form, why = _form_or_reason(X, net, kind, order, form)
    if form is None:
        return not_applicable(name, "effective_rank", "upper", conditions, why, MURRAY, equation)
    c0 = float(form.coefficients[0])
    if c0 <= 0.0:
        return not_applicable(name, "effective_rank", "upper", conditions, "c_0 = 0 (no constant term)", MURRAY,
                              equation)
    return TheoryResult(name, "effective_rank", "upper", form.total / c0, True, conditions,
                        f"{form.how} data, c_0 = {c0:.6g}, Σc_p = {form.total:.6g}", MURRAY, equation,
                        work="the series coefficients only", details={"c0": c0, "total": form.total, "how": form.how})


def centred_effective_rank_bound(X, net: MLP, *, kind: str = "ntk", order: int = 128,
                                 form: DotProductForm | None = None) -> TheoryResult:
    """Murray et al. Thm 4.3: eff(K̃) ≤ eff(XXᵀ)·(Σ_{p≥1} c_p)/c_1 for the centred kernel when c_1 > 0.

    Murray's K̃ = K − (c_0/n)11ᵀ for their K = Θ/n is, in the stax Gram convention, K̃ = K − c_0·ddᵀ
    (d = 1 for equal-norm data, d = row norms for homogeneous nets); compute it with `centred_effective_rank`.
    eff(XXᵀ) is of the raw data (scale-free). Cost: one SVD of X.
    """
    name, conditions = "centred_effective_rank", _DOT_CONDITIONS + "; c_1 > 0"
    equation = "Thm 4.3 (Sec. 4.1): eff(K − c_0 11ᵀ) ≤ eff(XXᵀ)·Σ_{p≥1} c_p / c_1"
    form, why = _form_or_reason(X, net, kind, order, form)
    if form is None:
        return not_applicable(name, "centred_effective_rank", "upper", conditions, why, MURRAY, equation)
    c1 = float(form.coefficients[1]) if len(form.coefficients) > 1 else 0.0
    if c1 <= 0.0:
        return not_applicable(name, "centred_effective_rank", "upper", conditions,
                              "c_1 = 0 (no linear term, e.g. an even activation without bias)", MURRAY, equation)
    X = as_data(X)
    s = np.linalg.svd(X, compute_uv=False)
    eff_data = float((s ** 2).sum() / s[0] ** 2)
    value = eff_data * form.tail(1) / c1
    return TheoryResult(name, "centred_effective_rank", "upper", value, True, conditions,
                        f"{form.how} data, eff(XXᵀ) = {eff_data:.6g}, c_1 = {c1:.6g}", MURRAY, equation,
                        work="one SVD of X, O(N·d²)", details={"c0": float(form.coefficients[0]), "c1": c1, "eff_data": eff_data, "how": form.how})


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
                                   form: DotProductForm | None = None, max_n: int = EIGEN_MAX_N) -> TheoryResult:
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

    Returns a `TheoryResult` with ``k`` and ``value`` arrays (NaN where no m is admissible, e.g. k = 1).
    """
    ks = np.atleast_1d(np.asarray(ks, dtype=np.int64))
    name, conditions = "generic_lambda_k", _DOT_CONDITIONS
    equation = ("Thm 4.8 via Lemma eigen_ub_nonuniform1 (App. C.5): λ_k ≤ λ_1(Σ_{j≥m} c_j G^⊙j) "
                "for rank(H_m) < k")
    form, why = _form_or_reason(X, net, kind, order, form, max_n=max_n)
    if form is None:
        return not_applicable(name, "lambda_k", "upper", conditions, why, MURRAY, equation, k=ks)
    P = form.powers
    check_size(P.n, max_n, "the generic-data λ_k bound")
    r = P.rank
    T = len(form.coefficients) - 1
    admissible = {}
    for k in ks:
        best = [m for m in range(1, T + 1) if sphere_polynomial_count(r, m) < k]
        admissible[int(k)] = max(best) if best else 0
    m_top = max(admissible.values(), default=0)
    if m_top == 0:
        return TheoryResult(name, "lambda_k", "upper", np.full(len(ks), np.nan), True, conditions,
                            "no admissible m for these k", MURRAY, equation, k=ks)
    # Λ_j ≥ λ_1(G^{⊙j}), non-increasing in j: Lanczos at j = 1 and at the m the ks can use, Gershgorin row
    # sums on a geometric grid to T (cheap, and close to λ_1 once G^{⊙j} is near diagonal); in between the carry.
    lanczos = sorted({1} | {m for m in admissible.values() if 0 < m <= T})
    rows = P.row_sum_bound(sorted(set(geometric_grid(1, T))))
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
    return TheoryResult(name, "lambda_k", "upper", values, True, conditions,
                        f"{form.how} data, rank X = {r}", MURRAY, equation, k=ks,
                        work=f"λ_1 of a few Hadamard powers by Lanczos, O(N²) each; N ≤ max_n = {max_n}",
                        details={"m": chosen, "rank": r, "how": form.how,
                                 "lambda_1_powers": {str(j): float(upper_j[j]) for j in sorted(lam)}})


# -- Hermite / power-series lower bound on λ_min -------------------------------------------------------------------
def hermite_lambda_min_lower_bound(X, net: MLP, *, kind: str = "ntk", order: int = 128,
                                   form: DotProductForm | None = None, exact_powers: int = 1,
                                   max_n: int = EIGEN_MAX_N) -> TheoryResult:
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
    # derived, not a theorem of the paper: no paper, the equation names what it rests on
    equation = ("Murray et al. 2023 Thm 3.1 expansion + Schur product theorem : "
                "λ_min(K) ≥ Σ_p c_p λ_min((X̂X̂ᵀ)^⊙p)")
    form, why = _form_or_reason(X, net, kind, order, form, max_n=max_n)
    if form is None:
        return not_applicable(name, "lambda_min", "lower", conditions, why, "", equation)
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
        grid = sorted({p for p in geometric_grid(start, T)})
        gersh = P.gershgorin(grid) if grid else {}
        running = lower[start - 1] if start > 0 else 0.0
        for p in range(start, T + 1):
            if p in gersh:
                running = max(running, gersh[p])
            lower[p] = max(running, 0.0)
    value = float(c @ lower) + form.tail(T + 1) * float(lower[T])
    value *= form.min_scale2
    return TheoryResult(name, "lambda_min", "lower", value, True, conditions,
                        f"{form.how} data, rank X = {P.rank}", "", equation,
                        cost=P.eigendecompositions - cost_before,
                        work=f"≤ {exact_powers} dense eigen-decomposition(s) (N ≤ max_n = {max_n}) and O(N²d) "
                             "streamed Gershgorin sums",
                        details={"exact_powers": exact, "first_nonsingular_power": first, "how": form.how,
                                 "lambda_min_powers": {str(p): float(lower[p]) for p in range(min(T, 16) + 1)}})


