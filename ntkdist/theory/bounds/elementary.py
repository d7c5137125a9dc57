"""Bounds on λ_min that need no special structure: the diagonal, the trace, Cauchy interlacing, the layer sum.

Plain linear algebra on the Gram matrix K = [Θ(x_i, x_j)] (stax convention) of any network and data:

* λ_min(K) ≤ min_i K_ii (Rayleigh–Ritz) and λ_min(K) ≤ Tr K/N (the upper bound in Nguyen et al. 2021, Thm 3.2);
* λ_min(K) ≤ λ_min(K[S, S]) on the points S of near pairs (Cauchy interlacing, Horn & Johnson Thm 4.3.28);
* λ_min(Θ^{(L+1)}) ≥ Σ_l λ_min(Σ^{(l)})·∏ min_i Σ̇_ii (Schur's product theorem on the NTK recursion; step 1 of
  Nguyen et al.'s proof of Thm 3.2, here for any activation and bias).

Each returns a `TheoryResult`; the paper is named where one states the inequality.

The mathematics, with its conventions, errata and tests: docs/theory.md §6.5.
"""

from __future__ import annotations

import numpy as np

from ...kernels import MLP, nngp, ntk
from ...kernels.analytic import diagonal_recursion
from ..estimates import (
    EIGEN_MAX_N,
    STREAM_MAX_N,
    as_data,
    check_size,
    lambda_min_lower_estimate,
    numerical_rank,
)
from ..pairs import near_pairs
from ..result import NGUYEN, TheoryResult

_EPS = np.finfo(np.float64).eps
_ANY = "any network and data"

# -- Plain upper bounds on λ_min -----------------------------------------------------------------------------------
def kernel_diagonal(X, net: MLP, kind: str = "ntk") -> np.ndarray:
    """K_ii = Θ(x_i, x_i) (or Σ(x_i, x_i)) from the diagonal recursion, O(N·d) (stax convention).

    q¹ = w‖x‖²/d + b, Θ¹ = q¹; q^{l+1} = w·E φ(u)² + b, Θ^{l+1} = q^{l+1} + w·E φ'(u)²·Θ^l, u ~ N(0, q^l).
    """
    X = as_data(X)
    w, b = net.weight_var, net.bias_var
    nngp, ntk = diagonal_recursion(net.activation, w, b, net.depth, w * np.einsum("ij,ij->i", X, X) / X.shape[1] + b)
    return np.asarray(ntk if kind == "ntk" else nngp, dtype=np.float64)


def trace_upper_bound(X, net: MLP, *, kind: str = "ntk") -> TheoryResult:
    """λ_min(K) ≤ Tr(K)/N (Nguyen et al. 2021, proof of Thm 3.2, upper bound; any kernel).

    In Nguyen's setting (ReLU, no bias) Tr K^{(L)}/N = (L/N)Σ‖x_i‖² in their convention; in the stax
    convention this is ((w/d)(w/2)^depth)·(depth+1)·Σ‖x_i‖²/N (see `nguyen_to_stax_factor`). Computed here
    for any network from the diagonal recursion. Cost O(N·d).
    """
    diag = kernel_diagonal(X, net, kind)
    return TheoryResult("trace_lambda_min", "lambda_min", "upper", float(diag.mean()), True, _ANY,
                        "λ_min is at most the mean eigenvalue Tr K/N",
                        NGUYEN, "Thm 3.2 (upper bound λ_min ≤ Tr K/N = L·O(d))",
                        work="O(N·d), any N", details={"trace": float(diag.sum())})


def diagonal_upper_bound(X, net: MLP, *, kind: str = "ntk") -> TheoryResult:
    """λ_min(K) ≤ min_i K_ii (Rayleigh quotient of e_i); always ≤ `trace_upper_bound`. Cost O(N·d)."""
    diag = kernel_diagonal(X, net, kind)
    return TheoryResult("diagonal_lambda_min", "lambda_min", "upper", float(diag.min()), True, _ANY,
                        "Rayleigh quotient of a coordinate vector", "", "Rayleigh–Ritz: λ_min(K) ≤ min_i e_iᵀKe_i",
                        work="O(N·d), any N", details={"argmin": int(diag.argmin())})


def interlacing_upper_bound(X, net: MLP, *, kind: str = "ntk", pairs: int = 64,
                            exact_max_n: int = STREAM_MAX_N) -> TheoryResult:
    """λ_min(K) ≤ λ_min(K[S, S]) for the principal submatrix on the points S of the ``pairs`` nearest pairs.

    Cauchy's interlacing theorem (Horn & Johnson, Thm 4.3.28). Near pairs (and, for odd/even activations,
    near-antipodal pairs) are where λ_min lives, so this is usually far tighter than the trace bound.
    The bound holds for *any* S; how near the pairs are only decides how tight it is. Cost: the search of
    `near_pairs` (exact O(N²d) streamed for N ≤ ``exact_max_n``, sorted random projections above it,
    O(N log N + N·d)) plus a kernel and eigenvalues of ≤ 2·pairs points; any N, memory O(N·d).
    """
    X = as_data(X)
    n = X.shape[0]
    conditions = "any network and data (N ≥ 2)"
    equation = "Cauchy interlacing (Horn & Johnson 2013, Thm 4.3.28): λ_min(K) ≤ λ_min(K[S,S])"
    if n < 2:
        diag = kernel_diagonal(X, net, kind)
        return TheoryResult("interlacing_lambda_min", "lambda_min", "upper", float(diag.min()), True, conditions,
                            "one point", "", equation)
    found = near_pairs(X, min(pairs, n * (n - 1) // 2), exact_max_n=exact_max_n)
    search = "exact" if n <= exact_max_n else "sorted random projections (heuristic; the bound holds for any S)"
    points = np.unique(found.ravel())
    sub = X[points]
    K = ntk(sub, net=net) if kind == "ntk" else nngp(sub, net=net)
    values = np.linalg.eigvalsh(K)
    allowance = 4.0 * len(points) * _EPS * float(np.abs(K).sum(axis=1).max())
    return TheoryResult("interlacing_lambda_min", "lambda_min", "upper", float(values[0]) + allowance, True,
                        conditions, f"principal submatrix on {len(points)} points of the {len(found)} nearest (±) "
                        "pairs", "", equation,
                        work=f"near-pair search ({'O(N²d)' if n <= exact_max_n else 'O(N log N + N·d)'}) and a "
                             f"{len(points)}-point kernel; any N", details={"points": int(len(points)), "pair_search": search})


# -- The general layer-sum chain (stax) ----------------------------------------------------------------------------
def layer_sum_lower_bound(X, net: MLP, *, max_n: int = EIGEN_MAX_N) -> TheoryResult:
    """λ_min(Θ^{(L+1)}) ≥ Σ_{l=1}^{L+1} λ_min(Σ^{(l)})·∏_{l'=l+1}^{L+1} min_i Σ̇^{(l')}_ii (stax, any activation).

    From Θ^{(l+1)} = Σ^{(l+1)} + Σ̇^{(l+1)} ⊙ Θ^{(l)} and Schur's λ_min(A⊙B) ≥ λ_min(A)·min_i B_ii (B PSD);
    this is step 1 of Nguyen et al.'s proof of Thm 3.2 (their λ_min(K^{(L)}) ≥ Σ_l λ_min(G^{(l)}), where their
    Ġ_ii = 1) for any activation and bias, with the diagonal factors Σ̇_ii = w·E φ'(u)², u ~ N(0, Σ^{(l'−1)}_ii).
    NTK only. Cost: one dense eigen-decomposition per layer whose Σ^{(l)} is not provably singular
    (Σ^{(1)} = wXXᵀ/d + b has rank ≤ rank[X, 1]). Refuses above ``max_n``.
    """
    X = as_data(X)
    n, dim = X.shape
    check_size(n, max_n, "the layer-sum λ_min bound")
    act, w, b = net.activation, net.weight_var, net.bias_var
    # Σ^{(1)}: singular when N exceeds rank [X, 1] (or rank X without bias)
    augmented = np.hstack([X, np.ones((n, 1))]) if b > 0 else X
    cost = 0
    if numerical_rank(augmented) < n:
        lam = [0.0]
    else:
        S1 = w * (X @ X.T) / dim + b
        lam = [max(lambda_min_lower_estimate(0.5 * (S1 + S1.T)), 0.0)]
        cost += 1
    for layer in range(2, net.depth + 2):
        S = nngp(X, net=MLP(layer - 1, act, w, b))
        lam.append(max(lambda_min_lower_estimate(S), 0.0))
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
    return TheoryResult("layer_sum_lambda_min", "lambda_min", "lower", value, True,
                        "NTK; any activation, bias and data",
                        f"{len(lam)} layers, min Σ̇_ii = {', '.join(f'{v:.4g}' for v in dot_min)}",
                        NGUYEN, "proof of Thm 3.2, step λ_min(K^(L)) ≥ Σ_l λ_min(G^(l)) (Schur), in stax form",
                        cost=cost, work=f"one dense eigen-decomposition per layer, N ≤ max_n = {max_n}",
                        details={"lambda_min_layers": lam, "min_sigma_dot": dot_min})


