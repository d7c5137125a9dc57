"""Certified error bounds for Ritz values of a symmetric matrix, from residuals alone.

For a unit vector u with Rayleigh quotient θ = uᵀKu and residual r = Ku − θu:

- **Residual (Weyl / Bauer–Fike / Krylov–Bogolyubov)**: K has an eigenvalue in [θ − ‖r‖, θ + ‖r‖]
  (Parlett, *The Symmetric Eigenvalue Problem*, Thm 4.5.1). For a whole Rayleigh–Ritz block with residual matrix
  R = KU − UΘ, there are m eigenvalues of K paired one to one with the θ_i, each within ‖R‖₂ (Kahan; Parlett
  Thm 11.5.2) — we use the per-vector ‖r_i‖, which pairs each θ_i with *some* eigenvalue.
- **Kato–Temple** (Kato 1949; Temple 1928; Parlett Thm 10.6.1): if the open interval (a, b) contains θ and exactly
  one eigenvalue λ, then θ − ‖r‖²/(b − θ) ≤ λ ≤ θ + ‖r‖²/(θ − a). The error becomes quadratic in the residual,
  which is what makes a top eigenvalue's bound tight (the residual is still ~1e-5·λ when the value is right to
  1e-10).
- **Weyl** for the operator itself: if the operator applies K̃ with ‖K̃ − K‖₂ ≤ η, every eigenvalue of K̃ is within
  η of the matching eigenvalue of K, so η is added to every bound.

What is rigorous and what is probabilistic
------------------------------------------
The existence of an eigenvalue within each bound is rigorous (up to the rounding term below). That this
eigenvalue is the *i-th largest* (or smallest) — that no eigenvalue above θ_k was missed by the random start —
is probabilistic: it holds with the high probability of the randomized range finder (Halko–Martinsson–Tropp 2011,
Thm 10.8) and is the assumption under which gaps between neighbouring intervals are certified. A Rayleigh quotient
is always a rigorous upper bound on λ_min and a rigorous lower bound on λ_max (Courant–Fischer); Cauchy interlacing
makes Rayleigh–Ritz values rigorous lower bounds on λ_i, i = 1…m, and upper bounds on the smallest.

Rounding: the residual is computed as fl(Ku) − θu; we add ``rounding_term`` = c·√N·ε·‖K‖₂, the standard
random-rounding model of a length-N float64 dot product (the worst case N·ε is ~√N times too pessimistic), to
every residual norm, and once more, additively, to every error: the computed θ is the Rayleigh quotient of the
computed products, which differ from K·u by that much, so no bound (Kato–Temple included) is below it.

The mathematics, with its conventions, errata and tests: docs/theory.md §9.
"""

from __future__ import annotations

import numpy as np

#: Constant of the rounding term c·√N·ε·‖K‖₂ added to computed residual norms.
ROUNDING_CONSTANT = 4.0

#: A neighbouring Ritz value may bound a Kato–Temple gap only when its own residual is at most this fraction of
#: its distance to the value being bounded (see `certified_errors`, Notes).
NEIGHBOUR_TRUST = 5e-2


def rounding_term(n: int, norm_estimate: float) -> float:
    """c·√N·ε·‖K‖₂: the error of a residual computed in float64 (random-rounding model, see module docstring)."""
    return ROUNDING_CONSTANT * np.sqrt(n) * np.finfo(np.float64).eps * float(abs(norm_estimate))


def residual_bound(residual_norms, *, operator_error: float = 0.0, rounding: float = 0.0) -> np.ndarray:
    """‖r‖ + rounding + η: each θ_i is within this of an eigenvalue of the requested matrix."""
    return np.asarray(residual_norms, dtype=np.float64) + rounding + operator_error


def kato_temple_bound(residual_norm, gap) -> np.ndarray:
    """‖r‖²/gap (Kato–Temple), where gap > 0 is the distance from θ to the nearest *other* eigenvalue's interval."""
    residual_norm = np.asarray(residual_norm, dtype=np.float64)
    gap = np.asarray(gap, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap > 0, residual_norm ** 2 / gap, np.inf)


def certified_errors(values, residual_norms, *, n: int, side: str, operator_error: float = 0.0,
                     outer_edge: float | None = None, norm_estimate: float | None = None,
                     trust: float = NEIGHBOUR_TRUST) -> tuple[np.ndarray, np.ndarray]:
    """Error bounds of a set of Ritz values: Kato–Temple where a gap is certified, the residual bound elsewhere.

    Parameters
    ----------
    values : (m,) Ritz values of one Rayleigh–Ritz step, any order.
    residual_norms : (m,) ‖K u_i − θ_i u_i‖ of the unit Ritz vectors, as computed.
    n : int
        Dimension (for the rounding term).
    side : {"largest", "smallest"}
        Which end of the spectrum the set is: nothing lies beyond its near end (above the top of a "largest"
        set, below the bottom of a "smallest" set); the unknown rest of the spectrum lies beyond its far end.
    operator_error : float
        η ≥ ‖K_operator − K‖₂, added by Weyl.
    outer_edge : float, optional
        A bound on every eigenvalue *not* represented by ``values`` on the far side of the set: for a top-k set,
        an upper bound on λ_{m+1} (e.g. θ_m + ‖r_m‖ under the no-missed-eigenvalue assumption); for a bottom set,
        a lower bound on the next one up. When None, the extreme value of the set (the one nearest the unknown
        part of the spectrum) gets no gap on that side.

    norm_estimate : float, optional
        An estimate of ‖K‖₂ for the rounding term (default: the largest |θ_i| of the set, right for a top set;
        a bottom set must pass one, e.g. an estimate of λ_max, since rounding scales with ‖K‖, not with θ).

    trust : float
        A Ritz value's immediate neighbours (in value order) can isolate it only when each neighbour's residual
        is ≤ ``trust`` × its distance to θ_i.

    Returns
    -------
    errors : (m,) bounds |λ − θ_i| ≤ errors_i on the requested matrix's matching eigenvalue.
    gap_certified : (m,) bool, where Kato–Temple was used.

    Notes
    -----
    θ_i's interval is I_i = [θ_i − ρ_i, θ_i + ρ_i] with ρ_i = ‖r_i‖ + rounding. If I_i meets no other I_j, then under
    the no-missed-eigenvalue assumption (module docstring) exactly one eigenvalue lies in the open interval between
    the neighbouring intervals' near edges, (a, b), and Kato–Temple gives ρ_i²/min(θ_i − a, b − θ_i).

    Each neighbour's interval holds *an* eigenvalue, but not necessarily the one next to λ_i in order: a Ritz
    vector that is still a mixture (an unconverged guard vector, 99 % in a cluster above and 1 % along λ_{i+1})
    has a narrow-looking interval around the cluster while λ_{i+1} sits, uncovered, inside (a, b). So a neighbour
    counts only once it has converged relative to the gap it defines (``trust``); otherwise θ_i keeps the residual
    bound. This catches the partly converged mixtures of the first iterations; an eigenvalue whose direction the
    basis barely contains at all is a *missed* eigenvalue, which no residual can reveal: that remains the
    probabilistic part (module docstring).
    """
    theta = np.asarray(values, dtype=np.float64)
    rho_raw = np.asarray(residual_norms, dtype=np.float64)
    m = theta.size
    scale = float(np.max(np.abs(theta))) if m else 0.0
    if norm_estimate is not None:
        scale = max(scale, abs(float(norm_estimate)))
    rounding = rounding_term(n, scale)
    rho = rho_raw + rounding
    order = np.argsort(theta)  # ascending
    errors_sorted, certified_sorted = _kato_temple_where_isolated(theta[order], rho[order], side=side,
                                                                 outer_edge=outer_edge, trust=trust)
    errors = np.empty(m)
    certified = np.empty(m, dtype=bool)
    # The computed θ_i is itself only the Rayleigh quotient of fl(KU) to within the same rounding term, and that
    # error is additive: a Kato–Temple bound, quadratic in ρ, would otherwise drop it (ρ² ≪ ε‖K‖ at convergence).
    errors[order] = errors_sorted + rounding + operator_error
    certified[order] = certified_sorted
    return errors, certified


def _kato_temple_where_isolated(t, r, *, side: str, outer_edge, trust: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of Ritz values sorted ascending (``t``) with interval radii ``r`` (residual + rounding): Kato–Temple
    where θ_i's interval is isolated and its neighbours are trusted, r_i elsewhere; and where Kato–Temple was used.

    The rules are those of `certified_errors` (Notes); the operator and rounding terms are added by the caller.
    """
    m = t.size
    lower_edges = t - r
    upper_edges = t + r
    # a_i: the highest upper edge among values below; b_i: the lowest lower edge among values above.
    below = np.full(m, -np.inf)
    above = np.full(m, np.inf)
    if m > 1:
        below[1:] = np.maximum.accumulate(upper_edges[:-1])
        above[:-1] = np.minimum.accumulate(lower_edges[::-1])[::-1][1:]
    errors_sorted = r.copy()
    certified_sorted = np.zeros(m, dtype=bool)
    for i in range(m):
        a, b = below[i], above[i]
        # The unknown rest of the spectrum lies beyond the far end: below a "largest" set (every missing
        # eigenvalue ≤ outer_edge), above a "smallest" set (≥ outer_edge). Without an outer edge the value at
        # the far end has no certified neighbour on that side.
        if side == "largest":
            a = max(a, outer_edge) if outer_edge is not None else (a if i > 0 else np.nan)
        elif side == "smallest":
            b = min(b, outer_edge) if outer_edge is not None else (b if i < m - 1 else np.nan)
        else:
            raise ValueError(f"side: expected \"largest\" or \"smallest\", got {side!r}")
        # Isolation: θ_i's own interval must not reach the neighbours' intervals.
        if not (a < lower_edges[i] and upper_edges[i] < b):
            continue
        # The immediate neighbours must have converged relative to their distance from θ_i.
        if any(r[j] > trust * abs(t[j] - t[i]) for j in (i - 1, i + 1) if 0 <= j < m):
            continue
        gap = min(t[i] - a, b - t[i])
        if not np.isfinite(gap):
            continue
        kt = float(kato_temple_bound(r[i], gap))
        if kt < errors_sorted[i]:
            errors_sorted[i] = kt
            certified_sorted[i] = True
    return errors_sorted, certified_sorted
