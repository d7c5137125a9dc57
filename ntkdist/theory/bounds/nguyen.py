"""Nguyen, Mondelli, Montúfar 2021 (arXiv 2012.11654): the λ_min chain of deep ReLU networks, proof of Thm 3.2.

Their layer kernels G^{(l)}, Ġ^{(l)} and limit kernel K^{(L)} (eqs. (8)–(10)), the Hadamard-power lower bound
λ_min(K^{(L)}) ≥ λ_min(XXᵀ) + 2μ_r²·λ_min((XXᵀ)^{∘r})/max‖x‖^{2(r−1)} (steps 1–3, exact or by Gershgorin)
and the layer sum λ_min(K^{(L)}) ≥ Σ_l λ_min(G^{(l)}) (step 1). Written out in docs/theory.md §6.

**Convention.** The paper's: ReLU without biases, G^{(1)} = XXᵀ (no 1/d), the factor 2 of He initialisation
(`NGUYEN_CONVENTION`), L = depth + 1 layers. Each bound is computed there and returned in the stax convention of
`ntkdist.kernels`, multiplied by `nguyen_to_stax_factor` = (w/d)(w/2)^depth; `TheoryResult.convention` says so.
"""

from __future__ import annotations

import math

import numpy as np

from ...kernels import MLP
from ...kernels.activations import ABReLU
from ...kernels.gram import input_moments
from ..estimates import (
    EIGEN_MAX_N,
    as_data,
    block_rows,
    check_size,
    lambda_min_lower_estimate,
    numerical_rank,
)
from ..hermite import hermite_coefficients
from ..result import NGUYEN, STAX_CONVENTION, TheoryResult, not_applicable


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


#: ReLU: Nguyen's G^{(l+1)} and Ġ^{(l+1)} are twice its pair moments (`ABReLU.pair_moments`, the arc-cosine kernel).
_RELU = ABReLU(0.0, 1.0)


def _correlations(G, scale, gap_parallel, gap_antiparallel):
    """(ρ, 1 − ρ, 1 + ρ) of a kernel from its values and Cauchy–Schwarz gaps over s = √(G_ii G_jj); a pair with a
    zero point gets ρ = 0 (as `ntkdist.kernels.analytic.dense_layer` does)."""
    positive = scale > 0.0
    inv = np.divide(1.0, scale, out=np.zeros_like(scale), where=positive)
    return (np.where(positive, np.clip(G * inv, -1.0, 1.0), 0.0),
            np.where(positive, np.clip(gap_parallel * inv, 0.0, 2.0), 1.0),
            np.where(positive, np.clip(gap_antiparallel * inv, 0.0, 2.0), 1.0))


def nguyen_layer_kernels(X, layers: int):
    """Nguyen et al. eqs. (8)–(10) in their convention: [G^{(1)}, …, G^{(L)}] and [Ġ^{(2)}, …, Ġ^{(L)}].

    G^{(1)} = XXᵀ, G^{(l)}_ij = √(G_ii G_jj)(sin θ + (π − θ)cos θ)/π, Ġ^{(l)}_ij = (π − θ)/π (θ the angle of
    G^{(l−1)}); G^{(l)}_ii = ‖x_i‖². These are 2E[σ(u)σ(v)] and 2E[σ'(u)σ'(v)] with (u, v) of covariance
    G^{(l−1)}: computed by `ntkdist.kernels`' definitions (the input moments of `gram.input_moments`, the
    arc-cosine kernel of `ABReLU.pair_moments`), so each pair's angle carries no cancellation near 0 or π.
    """
    X = as_data(X)
    n = X.shape[0]
    sq = np.einsum("ij,ij->i", X, X)
    G, below, above = input_moments(X, X, sq, sq, n, n)
    scale = np.sqrt(sq[:, None] * sq[None, :])
    c, e, f = _correlations(G, scale, below, above)
    Gs, dots = [G], []
    for _ in range(2, layers + 1):
        # ReLU keeps the variance of Nguyen's factor-2 layer: E σ(u)² = q/2, so G^{(l)}_ii = ‖x_i‖² at every l.
        moments = _RELU.pair_moments(sq[:, None], sq[None, :], c, e, f)
        G = 2.0 * moments.cov
        Gs.append(G)
        dots.append(2.0 * moments.dcov)
        c, e, f = _correlations(G, scale, 2.0 * moments.gap_parallel, 2.0 * moments.gap_antiparallel)
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
    return float(hermite_coefficients("relu", r)[r]) ** 2


def hadamard_power_gershgorin(X: np.ndarray, rs) -> dict:
    """Gershgorin lower bounds on λ_min((XXᵀ)^{∘r}) for every r in ``rs``, in one streamed sweep over XXᵀ.

    Returns r → (row-wise bound, Nguyen's printed min‖x‖^{2r} − (N−1)·max_{i≠j}|⟨x_i,x_j⟩|^r). O(N²(d + |rs|))
    time, memory one block of rows (bounded, `block_rows`).
    """
    n = X.shape[0]
    rs = sorted({int(r) for r in rs})
    sq = np.einsum("ij,ij->i", X, X)
    worst = {r: np.inf for r in rs}
    coarse_off = {r: 0.0 for r in rs}
    step = block_rows(n)
    for start in range(0, n, step):
        stop = min(start + step, n)
        base = np.abs(X[start:stop] @ X.T)
        base[np.arange(stop - start), np.arange(start, stop)] = 0.0
        for r in rs:
            block = base ** r
            worst[r] = min(worst[r], float((sq[start:stop] ** r - block.sum(axis=1)).min()))
            coarse_off[r] = max(coarse_off[r], float(block.max()))
    return {r: (worst[r], float(sq.min() ** r) - (n - 1) * coarse_off[r]) for r in rs}


def hadamard_power_lambda_min(X: np.ndarray, r: int, method: str, max_n: int):
    """λ_min((XXᵀ)^{∘r}) of the raw data: exact (one eigen-decomposition) or row-wise Gershgorin."""
    n, dim = X.shape
    if method == "gershgorin":
        worst, coarse = hadamard_power_gershgorin(X, [r])[int(r)]
        # Nguyen's printed form: min‖x‖^{2r} − (N−1)·max_{i≠j}|⟨x_i,x_j⟩|^r (≤ the row-wise value)
        return worst, 0, {"nguyen_printed_gershgorin": coarse}
    if math.comb(numerical_rank(X) + r - 1, r) < n:  # rank((XXᵀ)^∘r) ≤ C(rank X + r − 1, r)
        return 0.0, 0, {"singular": True}
    check_size(n, max_n, "λ_min of (XXᵀ)^∘r")
    A = (X @ X.T) ** r
    return lambda_min_lower_estimate(0.5 * (A + A.T)), 1, {}


_HADAMARD_WORK = {"exact": "one dense eigen-decomposition of (XXᵀ)^∘r (none when it is provably singular)",
                  "gershgorin": "O(N²(d + 32)) streamed Gershgorin row sums, memory one block of rows; any N"}


def nguyen_hadamard_lower_bound(X, net: MLP, *, r: int | None = None, method: str = "exact",
                                factor_two: bool = True, max_n: int = EIGEN_MAX_N) -> TheoryResult:
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
    equation = ("proof of Thm 3.2: λ_min(K) ≥ Σ_l λ_min(G^(l)), λ_min(G^(2)) ≥ "
                "2μ_r²λ_min((XXᵀ)^∘r)/max‖x‖^{2(r−1)}" + (", Gershgorin" if method == "gershgorin" else ""))
    why = nguyen_applies(net)
    if why:
        return not_applicable(name, "lambda_min", "lower", conditions, why, NGUYEN, equation)
    if method not in ("exact", "gershgorin"):
        raise ValueError(f"method: 'exact' or 'gershgorin', got {method!r}")
    X = as_data(X)
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
    sweep = hadamard_power_gershgorin(X, candidates) if method == "gershgorin" else {}
    for rr in candidates:
        if method == "gershgorin":
            lam_r, used, info = sweep[rr][0], 0, {"nguyen_printed_gershgorin": sweep[rr][1]}
        else:
            lam_r, used, info = hadamard_power_lambda_min(X, rr, method, max_n)
        cost += used
        term = (2.0 if factor_two else 1.0) * relu_hermite_coefficient_squared(rr) * max(lam_r, 0.0) \
            / float(sq.max()) ** (rr - 1)
        if term > best:
            best, best_r, extra = term, rr, info
    factor = nguyen_to_stax_factor(net, dim)
    value_nguyen = lam1 + best
    return TheoryResult(name, "lambda_min", "lower", factor * value_nguyen, True, conditions,
                        f"r = {best_r}, λ_min(XXᵀ) = {lam1:.4g}", NGUYEN, equation,
                        convention=f"{STAX_CONVENTION}; converted from {NGUYEN_CONVENTION} by × (w/d)(w/2)^depth",
                        cost=cost, work=_HADAMARD_WORK[method], details={"r": best_r, "value_nguyen_convention": value_nguyen,
                                     "stax_factor": factor, "factor_two": factor_two, **extra})


def nguyen_layer_sum_lower_bound(X, net: MLP, *, max_n: int = EIGEN_MAX_N) -> TheoryResult:
    """Nguyen et al. Thm 3.2 proof, step 1, exactly: λ_min(K^{(L)}) ≥ Σ_{l=1}^{L} λ_min(G^{(l)}).

    G^{(l)} from `nguyen_layer_kernels` in their convention (L = depth + 1), returned in stax
    (× `nguyen_to_stax_factor`). Equals `layer_sum_lower_bound` for ReLU without bias (there Ġ_ii = 1).
    Cost: L − 1 dense eigen-decompositions (λ_min(XXᵀ) from an SVD); refuses above ``max_n``.
    """
    name, conditions = "nguyen_layer_sum_lambda_min", "NTK of a ReLU network without biases; any data"
    equation = "proof of Thm 3.2: λ_min(K^(L)) ≥ Σ_l λ_min(G^(l)) (Schur, Ġ_ii = 1)"
    why = nguyen_applies(net)
    if why:
        return not_applicable(name, "lambda_min", "lower", conditions, why, NGUYEN, equation)
    X = as_data(X)
    n, dim = X.shape
    check_size(n, max_n, "Nguyen's layer-sum bound")
    Gs, _ = nguyen_layer_kernels(X, net.depth + 1)
    lam = [0.0 if numerical_rank(X) < n else float(np.linalg.svd(X, compute_uv=False)[-1] ** 2)]
    for G in Gs[1:]:
        lam.append(max(lambda_min_lower_estimate(G), 0.0))
    factor = nguyen_to_stax_factor(net, dim)
    return TheoryResult(name, "lambda_min", "lower", factor * sum(lam), True, conditions,
                        f"L = {net.depth + 1} layers", NGUYEN, equation,
                        convention=f"{STAX_CONVENTION}; converted from {NGUYEN_CONVENTION} by × (w/d)(w/2)^depth",
                        work=f"depth dense eigen-decompositions, N ≤ max_n = {max_n}", cost=len(Gs) - 1, details={"lambda_min_layers_nguyen": lam, "stax_factor": factor})
