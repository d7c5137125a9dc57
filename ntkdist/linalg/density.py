"""Spectral density of K by stochastic Lanczos quadrature (SLQ), all probes as one block.

The empirical spectral measure φ = (1/N) Σ_i δ_{λ_i} is estimated as in Ubaru, Chen, Saad 2017 ("Fast estimation
of tr(f(A)) via stochastic Lanczos quadrature", SIAM J. Matrix Anal. Appl. 38(4)), Alg. 1: for each Rademacher
probe v_l (unit norm), m Lanczos steps on (K, v_l) give a tridiagonal T_l = S_l Θ_l S_lᵀ whose eigenvalues θ_{lk}
and squared first components τ_{lk}² are the nodes and weights of the m-point Gauss quadrature rule of the
measure μ_l = Σ_i (v_lᵀu_i)² δ_{λ_i} (their eq. (9)–(11)), and

    tr f(K)/N ≈ (1/p) Σ_l Σ_k τ_{lk}² f(θ_{lk})      (their eq. (12)–(13), with ‖z‖² = N for Rademacher z).

With f = 1(t ≤ x) this is the CDF F(x) = #{λ_i ≤ x}/N, and the mass of a bin is the CDF difference of its edges.

All p probes run together: one `Product` of width p per Lanczos step, so the density shares each pass with the
other solvers. No reorthogonalisation by default: at a few dozen steps the Gauss rule of Lanczos in floating
point is that of a nearby matrix whose eigenvalues lie in tiny intervals around K's (Greenbaum 1989, "Behavior of
slightly perturbed Lanczos and conjugate-gradient recurrences", Linear Algebra Appl. 113; Knizhnerman 1996), so
the quadrature stays accurate; lost orthogonality shows as duplicated ("ghost") top nodes whose weights still sum
correctly. Full reorthogonalisation per probe (``reorthogonalize=True``) keeps all m·p Lanczos vectors, N·m·p
numbers: fine for tests, not at N = 10⁶.

What the error estimate is
--------------------------
``cdf_error`` at each edge x is the sum of

- a **quadrature bound**, deterministic for exact-arithmetic Lanczos: by the Chebyshev–Markov–Stieltjes
  inequalities (Szegő, *Orthogonal Polynomials*, Sec. 3.41; Golub–Meurant, *Matrices, Moments and Quadrature*,
  Thm 6.4), for nodes θ_j ≤ x < θ_{j+1} of probe l, Σ_{k<j} τ_k² ≤ μ_l((−∞, x]) ≤ Σ_{k≤j+1} τ_k², so the Gauss
  value Σ_{k≤j} τ_k² is within max(τ_j², τ_{j+1}²); averaged over probes;
- a **deflation term** (with deflation, `slq_program`): the number of deflated Ritz values θ_i within their own
  residual ‖r_i‖ of x, over N (their eigenvalues may lie on either side of x), plus 1/N (the CDF's resolution);
- a **probe (Hutchinson) term**, probabilistic: z·s/√p with s the sample standard deviation of the per-probe
  Gauss CDFs and z = 3 (about 99.7% for a normal mean; the per-probe values are bounded, so the CLT applies
  quickly, but with p ≈ 30 this is an estimate, not a guarantee).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .passes import DensityResult, PassBudgetExhausted, Product, run_program

#: Standard errors in the probe term of ``cdf_error``.
PROBE_Z = 3.0


def rademacher_probes(n: int, probes: int, seed: int) -> np.ndarray:
    """(n, probes) Rademacher (±1) vectors scaled to unit norm (Ubaru–Chen–Saad 2017, Alg. 1, step 2)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 2, size=(n, probes)) * 2.0 - 1.0) / np.sqrt(n)


def gauss_quadrature(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the Gauss rule of one Lanczos run: eigenvalues of T and squared first components.

    T = tridiag(β, α, β) (m×m, β of length m − 1); Golub–Welsch (Ubaru–Chen–Saad 2017, eq. (10)–(11)).
    Nodes ascending, weights summing to 1.
    """
    nodes, S = scipy.linalg.eigh_tridiagonal(alpha, beta)
    weights = S[0] ** 2
    return nodes, weights / weights.sum()


def quadrature_cdf(nodes: np.ndarray, weights: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A CDF estimate from one Gauss rule at points x, and its Chebyshev–Markov–Stieltjes error bound.

    The plain Gauss CDF Σ_{θ_k ≤ x} w_k is a staircase whose steps are as tall as a node's weight; it is biased by
    up to a weight at every x (measured: 0.17 at the deciles of the N = 8000 test NTK with 40 steps). The estimate
    here splits each node's weight in half across the node and interpolates linearly between nodes (value
    Σ_{k<j} w_k + w_j/2 at θ_j), which stays inside the CMS interval [Σ_{k<j} w_k, Σ_{k≤j+1} w_k] for
    θ_j ≤ x < θ_{j+1} and is unbiased for a locally uniform density (measured: 0.06 undeflated, 0.008 deflated).

    Returns (estimate, bound): bound = the larger distance from the estimate to the ends of the CMS interval, a
    rigorous bound on |estimate − μ((−∞, x])| for the exact-arithmetic Gauss rule of the measure μ.
    ``nodes`` ascending, ``weights`` summing to 1.
    """
    x = np.asarray(x, dtype=np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(weights)])
    j = np.searchsorted(nodes, x, side="right")  # nodes[:j] ≤ x, i.e. θ_j ≤ x < θ_{j+1} (1-based)
    estimate = np.interp(x, nodes, cumulative[1:] - 0.5 * weights, left=0.0, right=1.0)
    lower = cumulative[np.maximum(j - 1, 0)]
    upper = cumulative[np.minimum(j + 1, nodes.size)]
    bound = np.maximum(estimate - lower, upper - estimate)
    return np.clip(estimate, 0.0, 1.0), bound


def density_edges(nodes: np.ndarray, bins: int, *, scale: str = "log",
                  spectrum_range: tuple[float, float] | None = None) -> np.ndarray:
    """Bin edges: ``bins`` log- (default; NTK spectra span ~5 decades) or linearly spaced bins over the range.

    The default range is [min, max] of the Gauss nodes, widened by 1e-9 relative so every node lies inside; a
    log scale starts at the smallest positive node.
    """
    if spectrum_range is not None:
        lo, hi = (float(v) for v in spectrum_range)
    else:
        lo, hi = float(np.min(nodes)), float(np.max(nodes))
        if scale == "log" and lo <= 0:
            positive = nodes[nodes > 0]
            lo = float(positive.min()) if positive.size else hi * 1e-16
        lo, hi = lo - 1e-9 * abs(lo), hi + 1e-9 * abs(hi)
    if not hi > lo:
        raise ValueError(f"spectrum_range: expected lo < hi, got ({lo}, {hi})")
    if scale == "log":
        if not lo > 0:
            raise ValueError(f"spectrum_range: a log scale needs lo > 0, got {lo}")
        return np.geomspace(lo, hi, bins + 1)
    if scale == "linear":
        return np.linspace(lo, hi, bins + 1)
    raise ValueError(f"scale: expected \"log\" or \"linear\", got {scale!r}")


def default_deflation(n: int) -> int:
    """Rank of the deflated top subspace: min(400, n/20) (measured: 400 at N = 8000 takes the decile error of 40
    steps from 0.06 to 0.008)."""
    return int(min(400, n // 20))


def slq_program(n: int, *, seed: int, steps: int, probes: int, bins, max_passes: int | None = None,
                spectrum_range: tuple[float, float] | None = None, scale: str = "log",
                reorthogonalize: bool = False, deflate: int | None = None, power: int = 1):
    """Spectral density by stochastic Lanczos quadrature, as a program (`ntkdist.linalg.passes`).

    Ubaru, Chen, Saad 2017, Alg. 1 with f = the indicator of (−∞, x] (eq. (9)–(13)); see the module docstring
    for the block form, the reorthogonalisation choice and what ``cdf_error`` means.

    Deflation. An NTK spectrum has a few hundred eigenvalues spread over [10, 10⁴] above a bulk in [0.3, 6] that
    holds 90% of them; Lanczos nodes distribute like the equilibrium measure of the whole range, so 40 of them put
    about two in the bulk. So, first, a rank-r top subspace Q is found by randomized subspace iteration
    (Halko–Martinsson–Tropp 2011, Alg. 4.4; ``power`` + 1 passes of width r), then K·Q rides along the first
    Lanczos pass for a Rayleigh–Ritz step (Ritz values θ_i, residual block R = KQ − QΘ), and the probes and
    Lanczos run on the complement, K_⊥ = (I − QQᵀ)K(I − QQᵀ). With z_⊥ = (I − QQᵀ)z,

        F(x) ≈ ( #{θ_i ≤ x} + (1/p) Σ_l ‖z_⊥,l‖² · Gauss_l(x) ) / N,

    Hutchinson on the complement (unbiased: E[z zᵀ] = I). This is the CDF of diag(QᵀKQ, K restricted to the
    complement), which differs from K by the off-diagonal block of norm ‖R‖₂: every eigenvalue of K lies within
    ‖R‖₂ of one of it (Weyl), i.e. the exact CDF at x lies between the estimated CDF at x ∓ ‖R‖₂ (rigorous,
    recorded as ``info["deflation_residual"]``; not folded into ``cdf_error``, which is in probability).

    Parameters
    ----------
    n : dimension. seed : for the probes and the sketch. steps : Lanczos steps m (one pass each).
    probes : p, the block width. bins : int (number of bins) or an increasing array of edges.
    max_passes : this program's budget (default all of them: power + 1 + steps with deflation, else steps);
        fewer passes give fewer Gauss nodes.
    spectrum_range : (lo, hi) for the bins; default the range of the Gauss nodes and Ritz values. Mass outside
        it is lumped into the end bins (``info["mass_below"]``, ``info["mass_above"]``), so Σ mass = 1.
    scale : "log" (default) or "linear" bins. reorthogonalize : full reorthogonalisation per probe.
    deflate : rank r of the deflated top subspace (`default_deflation`; 0 for plain SLQ).
    power : power iterations of the subspace iteration.

    Returns
    -------
    DensityResult(method="slq"): ``edges`` (bins + 1), ``mass`` (bins), ``cdf_error`` at each edge, ``nodes``
    and ``weights`` of all probes' Gauss rules and the Ritz values, weighted so that their sum is 1, and in
    ``info`` the CDF at the edges (``cdf``), the two parts of the error and the per-probe step counts.

    Long because: a program's state lives in its local variables across the yields of its passes (reverse
    communication, `ntkdist.linalg.passes`), and the block Lanczos recurrence keeps most of it (V, V_prev, β,
    each probe's length and breakdown flag, the optional basis, the pending K·Q); the deflation's subspace
    iteration (`_top_subspace`), its Rayleigh–Ritz step and the result's assembly (`_slq_result`) are helpers.
    """
    if steps < 1 or probes < 1:
        raise ValueError(f"steps, probes: expected ≥ 1, got {steps}, {probes}")
    r = default_deflation(n) if deflate is None else int(deflate)
    if not 0 <= r <= n // 2:
        raise ValueError(f"deflate: expected 0 ≤ deflate ≤ n/2 = {n // 2}, got {r}")
    budget = (power + 1 + steps if r else steps) if max_passes is None else int(max_passes)
    passes = 0
    stopped = "steps"
    Q = np.zeros((n, 0))
    theta = np.zeros(0)
    deflation_residual = 0.0
    ritz_residuals = np.zeros(0)
    rng = np.random.default_rng([seed, 1])
    pending_KQ = False
    if r:
        Q, passes, deflation_stopped = yield from _top_subspace(n, r, power, rng, budget)
        stopped = deflation_stopped or stopped
        pending_KQ = Q.shape[1] > 0  # else it ran out before the subspace was ready: plain SLQ on what is left
    Z = rademacher_probes(n, probes, seed) * np.sqrt(n)  # ±1 entries
    if Q.shape[1]:
        Z = Z - Q @ (Q.T @ Z)
    probe_norm2 = np.einsum("ij,ij->j", Z, Z)  # ‖z_⊥‖² (= n without deflation)
    V = Z / np.sqrt(probe_norm2)
    del Z
    V_prev = np.zeros_like(V)
    beta_prev = np.zeros(probes)
    alphas: list[np.ndarray] = []
    betas: list[np.ndarray] = []
    length = np.zeros(probes, dtype=int)  # Lanczos steps taken per probe (a breakdown stops a probe early)
    alive = np.ones(probes, dtype=bool)
    basis: list[np.ndarray] = [V.copy()] if reorthogonalize else []
    while passes < budget and len(alphas) < steps:
        block = np.concatenate([Q, V], axis=1) if pending_KQ else V
        try:
            product = yield Product(block)
        except PassBudgetExhausted:
            stopped = "pass budget exhausted (driver)"
            break
        passes += 1
        if pending_KQ:
            theta, deflation_residual, ritz_residuals = _deflation_ritz(Q, product[:, :r])
            pending_KQ = False
            product = product[:, r:]
        KV = product
        if Q.shape[1]:
            KV = KV - Q @ (Q.T @ KV)  # K_⊥ v = (I − QQᵀ) K v for v ⟂ Q
        alpha = np.einsum("ij,ij->j", V, KV)
        W = KV - V * alpha - V_prev * beta_prev
        del KV, product
        if reorthogonalize:
            for _ in range(2):
                for B in basis:
                    W -= B * np.einsum("ij,ij->j", B, W)
                if Q.shape[1]:
                    W -= Q @ (Q.T @ W)
        beta = np.linalg.norm(W, axis=0)
        alphas.append(alpha)
        betas.append(beta)
        length[alive] += 1
        # Breakdown: K·v lies in the Krylov space already built, the Gauss rule is exact; stop that probe.
        broken = alive & (beta <= 1e-12 * np.maximum(np.abs(alpha) + beta_prev, np.finfo(float).tiny))
        alive &= ~broken
        safe_beta = np.where(alive, beta, 1.0)
        V_prev, V = np.where(alive, V, 0.0), np.where(alive, W / safe_beta, 0.0)
        beta_prev = np.where(alive, beta, 0.0)
        if reorthogonalize:
            basis.append(V.copy())
        if not alive.any():
            stopped = "every probe broke down (exact)"
            break
    del V, V_prev, basis, Q
    return _slq_result(n, probes, alphas, betas, length, probe_norm2, theta, ritz_residuals, bins=bins,
                       scale=scale, spectrum_range=spectrum_range, passes=passes, stopped=stopped,
                       reorthogonalize=reorthogonalize, power=power, deflation_residual=deflation_residual)


def _top_subspace(n: int, r: int, power: int, rng, budget: int):
    """Randomized subspace iteration for the top-r subspace (HMT 2011, Alg. 4.4), power + 1 passes: a sub-program
    of `slq_program` (``yield from``). Returns (Q, passes, stopped): Q without columns when the budget ran out
    before the subspace was ready, ``stopped`` a reason when the driver's budget ended it, else None."""
    Q = rng.standard_normal((n, r))
    passes = 0
    for _ in range(power + 1):
        if passes >= budget:
            break
        try:
            Y = yield Product(Q)
        except PassBudgetExhausted:
            return np.zeros((n, 0)), passes, "pass budget exhausted (driver) during deflation"
        passes += 1
        Q, _ = np.linalg.qr(Y)
        del Y
    else:
        return Q, passes, None
    return np.zeros((n, 0)), passes, None


def _deflation_ritz(Q: np.ndarray, KQ: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Rayleigh–Ritz on the deflated subspace: the Ritz values θ, ‖R‖₂ and the column norms of the residual block
    R = KQ·C − QC·Θ (C the eigenvectors of QᵀKQ)."""
    theta, C = np.linalg.eigh(0.5 * (Q.T @ KQ + KQ.T @ Q))
    R = KQ @ C - (Q @ C) * theta
    return theta, float(np.linalg.norm(R, 2)), np.linalg.norm(R, axis=0)


def _slq_result(n: int, probes: int, alphas: list, betas: list, length: np.ndarray, probe_norm2: np.ndarray,
                theta: np.ndarray, ritz_residuals: np.ndarray, *, bins, scale: str, spectrum_range, passes: int,
                stopped: str, reorthogonalize: bool, power: int, deflation_residual: float) -> DensityResult:
    """The `DensityResult` of `slq_program` from its Lanczos coefficients: each probe's Gauss rule, the CDF at the
    bin edges with its quadrature and probe error terms, and the masses."""
    if not alphas:
        edges = np.asarray(bins, dtype=np.float64) if np.ndim(bins) else np.full(int(bins) + 1, np.nan)
        return DensityResult(method="slq", edges=edges, mass=np.full(edges.size - 1, np.nan),
                             cdf_error=np.ones(edges.size), passes=passes, info={"stopped": stopped})
    A = np.array(alphas)  # (steps, probes)
    B = np.array(betas)
    rules = [gauss_quadrature(A[:length[l], l], B[:length[l] - 1, l]) for l in range(probes)]
    share = probe_norm2 / n  # each probe's Gauss rule stands for ‖z_⊥‖²/N of the spectrum
    nodes = np.concatenate([rule[0] for rule in rules] + [theta])
    weights = np.concatenate([rule[1] * share[l] / probes for l, rule in enumerate(rules)]
                             + [np.full(theta.size, 1.0 / n)])
    if np.ndim(bins):
        edges = np.asarray(bins, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("bins: expected an int or an increasing 1-D array of at least two edges")
    else:
        edges = density_edges(nodes, int(bins), scale=scale, spectrum_range=spectrum_range)
    counted = np.searchsorted(np.sort(theta), edges, side="right") / n  # the deflated Ritz values, exactly
    estimates = [quadrature_cdf(rule[0], rule[1], edges) for rule in rules]
    per_probe = np.array([counted + share[l] * e[0] for l, e in enumerate(estimates)])  # (probes, edges)
    quadrature = np.mean([share[l] * e[1] for l, e in enumerate(estimates)], axis=0)
    cdf = np.clip(per_probe.mean(axis=0), 0.0, 1.0)
    spread = per_probe.std(axis=0, ddof=1) / np.sqrt(probes) if probes > 1 else np.ones(edges.size)
    probe_term = PROBE_Z * spread
    # Deflated Ritz values within their own residual of an edge may sit on either side of it (their eigenvalue
    # is within ‖r_i‖); and the CDF is a multiple of 1/N, which the probe spread cannot see where every probe's
    # estimate is 0 (below the lowest node), hence the 1/N floor.
    straddling = np.array([np.count_nonzero(np.abs(theta - x) <= ritz_residuals) for x in edges]) / n
    quadrature = quadrature + straddling + 1.0 / n
    mass = np.diff(cdf)
    mass_below, mass_above = float(cdf[0]), float(1.0 - cdf[-1])
    mass[0] += mass_below
    mass[-1] += mass_above
    return DensityResult(
        method="slq", edges=edges, mass=mass, cdf_error=quadrature + probe_term, passes=passes,
        nodes=nodes, weights=weights,
        info={"n": n, "rules": rules, "probe_share": share, "ritz_values": np.sort(theta),
              "cdf": cdf, "quadrature_error": quadrature, "probe_error": probe_term, "probe_z": PROBE_Z,
              "steps": length.tolist(), "probes": probes, "mass_below": mass_below, "mass_above": mass_above,
              "reorthogonalize": reorthogonalize, "stopped": stopped, "scale": scale,
              "deflate": int(theta.size), "power": power, "deflation_residual": deflation_residual,
              "cdf_error_is": "quadrature (Chebyshev–Markov–Stieltjes, exact-arithmetic Lanczos) + "
                              f"{PROBE_Z:g} standard errors over probes (probabilistic); with deflation the "
                              "exact CDF at x lies within the estimate at x ∓ deflation_residual (Weyl)"},
    )


def spectral_density(operator, *, seed: int = 0, steps: int = 40, probes: int = 30, bins=60,
                     range: tuple[float, float] | None = None, scale: str = "log",  # noqa: A002 (the brief's name)
                     reorthogonalize: bool = False, deflate: int | None = None, power: int = 1) -> DensityResult:
    """The spectral density of ``operator`` by deflated stochastic Lanczos quadrature (`slq_program`).

    Passes: ``steps`` (+ ``power`` + 1 for the deflated subspace). The storage error η of a float32 operator
    moves every eigenvalue by at most η (Weyl), so the CDF of the requested matrix at x lies between the CDF of
    the stored one at x ∓ η; it is recorded as ``info["operator_error"]``, not folded into ``cdf_error``.
    """
    result = run_program(operator, slq_program(operator.shape[0], seed=seed, steps=steps, probes=probes, bins=bins,
                                               spectrum_range=range, scale=scale, reorthogonalize=reorthogonalize,
                                               deflate=deflate, power=power))
    result.info["operator_error"] = operator.error_bound
    return result


def cdf_at(result: DensityResult, x) -> np.ndarray:
    """The SLQ CDF estimate F(x) ≈ #{λ_i ≤ x}/N at arbitrary points (the same estimator as ``info["cdf"]``)."""
    x = np.asarray(x, dtype=np.float64)
    n = result.info["n"]
    counted = np.searchsorted(result.info["ritz_values"], x, side="right") / n
    rules, share = result.info["rules"], result.info["probe_share"]
    return counted + np.mean([share[l] * quadrature_cdf(nodes, weights, x)[0]
                              for l, (nodes, weights) in enumerate(rules)], axis=0)


def density_from_eigenvalues(eigenvalues, *, bins: int, scale: str = "log",
                             spectrum_range: tuple[float, float] | None = None) -> DensityResult:
    """The exact spectral density of a fully known spectrum, on the same bins as `slq_program` would use.

    The histogram of all N eigenvalues (``mass`` = count per bin / N); ``cdf_error`` is 0 at every edge. Used by
    the exact solver so that every spectrum dataset carries its density in one form.
    """
    values = np.sort(np.asarray(eigenvalues, dtype=np.float64))
    edges = density_edges(values, bins, scale=scale, spectrum_range=spectrum_range)
    counts, _ = np.histogram(values, bins=edges)
    below = np.count_nonzero(values < edges[0])
    if below:
        # Non-positive eigenvalues (singular kernels) lie left of a log scale: count them in the first bin, so
        # the masses still sum to one.
        counts[0] += below
    return DensityResult(method="exact", edges=edges, mass=counts / values.size, cdf_error=np.zeros(edges.size),
                         passes=0, info={"n": int(values.size), "below_first_edge": int(below)})
