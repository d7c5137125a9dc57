"""Is the infinite-width NTK Gram matrix on given inputs strictly positive definite? And, for polynomial
activations, how large can its rank be?

Carvalho, Costa, Mourão, Oliveira, "The Positivity of the Neural Tangent Kernel" (arXiv 2404.12928; SIAM J.
Math. Data Sci. 7(2), 2025), as reconstructed here (hypotheses we could not check against the paper are marked; each claim
below is also checked numerically in ``tests/theory/test_positivity.py``): for a continuous, a.e. differentiable,
**non-polynomial** activation and any depth, the NTK Gram matrix is strictly positive definite

* with biases (bias_var > 0) on **pairwise distinct** inputs;
* without biases on **pairwise non-proportional** inputs (x_i ≠ t·x_j for every real t, so no zero input and
  no x, −x pair).

Conventions: the network is an `MLP` in the stax convention; the verdict is about K = [Θ(x_i, x_j)] and does
not depend on weight_var or on scaling K.

Singularity is certain (whatever the activation's polynomial status) in these cases, all proved by a row of K
being a multiple of another (verified numerically in the tests):

* coincident inputs (x_i = x_j);
* without biases, a zero input when φ(0) = 0 (then Θ(0, ·) ≡ 0 at every layer);
* without biases, a positively homogeneous φ (ReLU, leaky ReLU, |x|) and x_j = t·x_i, t > 0
  (Θ(t·x, y) = t·Θ(x, y));
* without biases, an odd φ (erf, tanh, sin, identity) or an even φ (|x|) and x_j = −x_i: Σ¹ changes sign, and
  by induction Θ(−x, y) = −Θ(x, y) (odd φ) or +Θ(x, y) (even φ: φ' is odd and the sign cancels in Σ̇·Θ);
  for homogeneous odd/even φ every negative multiple;
* a polynomial φ of degree q when N > C(r + q^depth, q^depth) (`polynomial_rank_bound`).

Not covered (``not_guaranteed``): other proportional pairs without bias (e.g. ReLU on x and −x, which is in fact
positive definite: Θ(x, −x) = 0 at depth 1 and 0 < Θ(x, −x) < Θ(x, x) deeper), polynomial activations below the
rank bound, user callables not declared polynomial or not, and the NNGP.

The mathematics, with its conventions, errata and tests: docs/theory.md §7.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..kernels import MLP
from ..kernels.activations import ABReLU
from .estimates import numerical_rank
from .hermite import activation_polynomial_degree

CARVALHO = "Carvalho, Costa, Mourão, Oliveira 2025, arXiv 2404.12928 (SIAM J. Math. Data Sci. 7(2):495–515)"
#: Inputs whose directions differ by less than this angle (radians) count as proportional, and those whose
#: difference is below it relative to their norm as coincident: a Gram matrix of such points is singular to
#: rounding even when the theorem calls it positive definite.
ANGLE_TOL = 1e-12
#: Inputs closer than this (relative distance ‖x_i − x_j‖/max norm) add the caveat that λ_min may be tiny; the
#: pair search finds every pair below it, so ``min_separation`` is exact below it and reported as ∞ above.
SEPARATION_CAVEAT = 1e-6
_ROW_BLOCK = 512

POSITIVE_DEFINITE = "positive_definite"
SINGULAR = "singular"
NOT_GUARANTEED = "not_guaranteed"


@dataclass(frozen=True)
class Positivity:
    """The verdict of `ntk_positivity`.

    Attributes
    ----------
    status : str
        ``"positive_definite"`` (guaranteed strictly PD by the theorem), ``"singular"`` (provably singular, or
        singular to rounding for coincident/proportional inputs within `ANGLE_TOL`), ``"not_guaranteed"``.
    reason : str
        One sentence saying why.
    citation : str
    rank_bound : int or None
        For polynomial activations, C(r + q^depth, q^depth) ≥ rank K.
    details : dict
        Counts and the first offending index pairs.
    """

    status: str
    reason: str
    citation: str = CARVALHO
    rank_bound: int | None = None
    details: dict = field(default_factory=dict)

    @property
    def guaranteed(self) -> bool:
        """True iff strict positive definiteness is guaranteed."""
        return self.status == POSITIVE_DEFINITE

    @property
    def singular(self) -> bool:
        return self.status == SINGULAR


def activation_parity(activation) -> str | None:
    """``"odd"``, ``"even"`` or None, checked on a grid of points (both would mean φ ≡ 0)."""
    t = np.concatenate([np.linspace(0.05, 6.0, 61), [math.pi / 7, math.e, 0.3141, 1.7320508, 11.5]])
    plus, minus = np.asarray(activation(t), dtype=np.float64), np.asarray(activation(-t), dtype=np.float64)
    scale = max(float(np.abs(plus).max()), float(np.abs(minus).max()), 1e-300)
    if np.all(np.abs(plus + minus) <= 1e-12 * scale):
        return "odd"
    if np.all(np.abs(plus - minus) <= 1e-12 * scale):
        return "even"
    return None


def polynomial_kernel_degree(degree: int, depth: int) -> int:
    """D = q^depth: the degree of the NTK (and NNGP) of ``depth`` hidden layers of a degree-q polynomial φ.

    As a polynomial in the input coordinates of x (for fixed y), for any data [DERIVED]: Σ¹ has degree 1;
    E[u^a v^b] is a sum of q_x^i Σ_xy^j q_y^k with 2i + j = a (Isserlis), and q_x = Σ(x, x) has twice the degree
    of Σ(x, y), so each Dense layer multiplies the degree by q; Θ^{l+1} = Σ^{l+1} + Σ̇^{l+1}Θ^l has degree
    ≤ max(q·D_l, (q−1)·D_l + D_l) = q·D_l. On unit-norm data this is the degree in the cosine ρ (Carvalho et al.,
    where the readout adds no degree: with ``depth`` hidden layers the NTK has degree q^depth, checked in the
    tests by fitting Θ(ρ)).
    """
    if degree < 0 or depth < 1:
        raise ValueError(f"degree ≥ 0 and depth ≥ 1 needed, got {degree}, {depth}")
    return degree ** depth


def polynomial_rank_bound(dim: int, degree: int, depth: int) -> int:
    """rank(K) ≤ C(dim + D, D), D = q^depth: the polynomials of degree ≤ D in ``dim`` variables [Carvalho et al.].

    Holds for any data in R^dim (not only unit norm; see `polynomial_kernel_degree`), with or without biases,
    for the NTK and the NNGP, and at any finite width too: every pre-activation of layer l is a polynomial of
    degree q^{l−1} in x, so every gradient entry ∂f/∂θ has degree ≤ q^depth and Θ̂ = Σ_θ ∂f(x)∂f(y) is a sum of
    products of such polynomials. Passing ``dim`` = rank X (the data's linear span) gives a valid tighter bound.
    """
    D = polynomial_kernel_degree(degree, depth)
    return math.comb(dim + D, D)


def _pair_structure(X: np.ndarray, tol: float, *, seed: int = 0):
    """Coincident, positively and negatively proportional pairs (within angle ``tol``), zero rows, and the
    smallest relative separation when it is below `SEPARATION_CAVEAT`.

    Exact, not sampled: every pair of unit rows x̂_i, x̂_j with ‖x̂_i ∓ x̂_j‖ ≤ max(tol, 2·`SEPARATION_CAVEAT`) is
    found by `ntkdist.theory.pairs.signed_pairs_within` (a sort along random projections, whose windows are widened
    by their rounding error). A pair with ‖x_i − x_j‖/max(‖x_i‖, ‖x_j‖) = s has ‖x̂_i − x̂_j‖ ≤ 2s, so every
    pair closer than the caveat is among those found and ``min_separation`` is exact whenever it is below
    `SEPARATION_CAVEAT` (otherwise it is reported as ∞ with ``min_separation_searched_below``).
    Cost O(N log N + N·d + C·d), C the candidate pairs (tiny for data without near-duplicates); memory O(N·d),
    never N×N. The previous O(N²d) block scan is kept as `_pair_structure_bruteforce` for the tests.
    """
    from .pairs import signed_pairs_within

    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    zero = np.flatnonzero(norms == 0.0)
    nz = np.flatnonzero(norms > 0)
    unit = X[nz] / norms[nz, None]
    coincident, positive, antipodal, negative = [], [], [], []
    min_separation = math.inf
    radius = max(float(tol), 2.0 * SEPARATION_CAVEAT)
    a, b, sign, chord, candidates = signed_pairs_within(unit, radius, seed=seed)
    a, b = nz[a], nz[b]
    for i, j, s, angle in zip(a.tolist(), b.tolist(), sign.tolist(), chord.tolist()):
        gap = float(np.linalg.norm(X[i] - s * X[j])) / max(norms[i], norms[j])
        if s > 0:
            min_separation = min(min_separation, gap)
        if angle > tol:  # ≈ the angle between the lines
            continue
        if s > 0:
            (coincident if gap <= tol else positive).append((i, j))
        else:
            (antipodal if gap <= tol else negative).append((i, j))
    if min_separation >= SEPARATION_CAVEAT:
        min_separation = math.inf
    return {"zero": zero.tolist(), "coincident": sorted(coincident), "positive_multiple": sorted(positive),
            "antipodal": sorted(antipodal), "negative_multiple": sorted(negative), "min_separation": min_separation,
            "min_separation_searched_below": SEPARATION_CAVEAT, "pair_candidates": int(candidates)}


def _pair_structure_bruteforce(X: np.ndarray, tol: float):
    """The O(N²d) reference scan over all pairs (row blocks of N columns); for the tests of `_pair_structure`."""
    n = X.shape[0]
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    zero = np.flatnonzero(norms == 0.0)
    unit = np.zeros_like(X)
    nz = norms > 0
    unit[nz] = X[nz] / norms[nz, None]
    coincident, positive, antipodal, negative = [], [], [], []
    min_separation = math.inf
    for start in range(0, n, _ROW_BLOCK):
        stop = min(start + _ROW_BLOCK, n)
        cos = unit[start:stop] @ unit.T
        rows, cols = np.nonzero(np.abs(cos) > 1.0 - 1e-6)
        keep = (cols > rows + start) & nz[rows + start] & nz[cols]
        for i, j in zip(rows[keep] + start, cols[keep]):
            sign = 1.0 if cos[i - start, j] > 0 else -1.0
            angle = float(np.linalg.norm(unit[i] - sign * unit[j]))
            gap = float(np.linalg.norm(X[i] - sign * X[j])) / max(norms[i], norms[j])
            if sign > 0:
                min_separation = min(min_separation, gap)
            if angle > tol:
                continue
            if sign > 0:
                (coincident if gap <= tol else positive).append((int(i), int(j)))
            else:
                (antipodal if gap <= tol else negative).append((int(i), int(j)))
    if min_separation >= SEPARATION_CAVEAT:
        min_separation = math.inf
    return {"zero": zero.tolist(), "coincident": sorted(coincident), "positive_multiple": sorted(positive),
            "antipodal": sorted(antipodal), "negative_multiple": sorted(negative), "min_separation": min_separation}


def ntk_positivity(X, net: MLP, *, kind: str = "ntk", tol: float = ANGLE_TOL) -> Positivity:
    """Whether the Gram matrix of ``net`` on X is guaranteed strictly positive definite, and why.

    Parameters
    ----------
    X : (N, d) array
        Any inputs (no normalisation assumed).
    net : MLP
        Stax convention; the verdict does not depend on weight_var.
    kind : {"ntk", "nngp", "empirical_ntk", "empirical_nngp"}
        Carvalho et al. is a theorem about the infinite-width NTK; for the other kinds only singularity can be
        certified (every certificate below holds for any kernel of the network, finite-width samples included:
        it comes from f(−x) = ±f(x), f(t·x) = t·f(x) or f(0) ≡ 0 for every weight draw).
    tol : float
        Angle (radians) within which inputs count as proportional / coincident (see `ANGLE_TOL`).

    Returns
    -------
    Positivity
        ``status`` in {"positive_definite", "singular", "not_guaranteed"} with the reason; for polynomial φ the
        rank bound C(r + q^depth, q^depth), r = rank X.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X: expected a non-empty 2-D array, got shape {X.shape}")
    n, dim = X.shape
    act = net.activation
    bias = net.bias_var > 0.0
    degree = activation_polynomial_degree(act)
    parity = activation_parity(act)
    homogeneous = isinstance(act, ABReLU)
    phi0_zero = float(np.asarray(act(np.zeros(1)))[0]) == 0.0
    pairs = _pair_structure(X, tol)
    details = {"n": n, "activation": act.describe(), "bias": bias, "polynomial_degree": degree,
               "parity": parity, "positively_homogeneous": homogeneous,
               **{k: (v[:5] if isinstance(v, list) else v) for k, v in pairs.items()},
               "counts": {k: len(v) for k, v in pairs.items() if isinstance(v, list)}}
    if not math.isfinite(pairs["min_separation"]):
        details["min_separation"] = None  # no two distinct inputs closer than min_separation_searched_below
    rank_bound = None
    if isinstance(degree, int):
        r = numerical_rank(X)
        rank_bound = polynomial_rank_bound(r, degree, net.depth)
        details["rank_X"] = r
        details["rank_bound_full_dim"] = polynomial_rank_bound(dim, degree, net.depth)

    facts = _Facts(n, act, bias, degree, parity, homogeneous, phi0_zero, rank_bound, net.depth)
    reason = _singularity(facts, pairs, tol)
    status, reason = (SINGULAR, reason) if reason else _theorem(facts, pairs, kind)
    return Positivity(status, reason, CARVALHO, rank_bound, details)


@dataclass(frozen=True)
class _Facts:
    """What the verdict depends on besides the pair structure of the inputs."""

    n: int
    activation: object
    bias: bool
    degree: int | None
    parity: str | None
    homogeneous: bool
    phi0_zero: bool
    rank_bound: int | None
    depth: int


def _singularity(facts: _Facts, pairs: dict, tol: float) -> str:
    """Why K is certainly singular (equal or proportional rows, a rank bound below N), or '' when it is not."""
    degree, depth, parity = facts.degree, facts.depth, facts.parity
    if pairs["coincident"]:
        i, j = pairs["coincident"][0]
        return f"inputs {i} and {j} coincide (within {tol:g}): two equal rows of K"
    if facts.rank_bound is not None and facts.n > facts.rank_bound:
        return (f"φ is a polynomial of degree {degree}: rank K ≤ C(r + {degree}^{depth}, "
                f"{degree}^{depth}) = {facts.rank_bound} < N = {facts.n} (r = rank X)")
    if facts.bias:
        return ""
    if pairs["zero"] and facts.phi0_zero:
        return f"input {pairs['zero'][0]} is zero, there are no biases and φ(0) = 0: its row of K vanishes"
    if facts.homogeneous and pairs["positive_multiple"]:
        i, j = pairs["positive_multiple"][0]
        return (f"inputs {i} and {j} are positive multiples and φ is positively homogeneous "
                "without biases: proportional rows of K")
    if parity and pairs["antipodal"]:
        i, j = pairs["antipodal"][0]
        return (f"inputs {i} and {j} are x and −x, φ is {parity} and there are no biases: "
                f"Θ(−x, ·) = {'−' if parity == 'odd' else '+'}Θ(x, ·)")
    if parity and facts.homogeneous and pairs["negative_multiple"]:
        i, j = pairs["negative_multiple"][0]
        return (f"inputs {i} and {j} are negative multiples and φ is {parity} and positively "
                "homogeneous without biases: proportional rows of K")
    return ""


def _theorem(facts: _Facts, pairs: dict, kind: str) -> tuple[str, str]:
    """Carvalho et al.'s theorem on data that are not certainly singular: (status, reason)."""
    act, n, degree = facts.activation, facts.n, facts.degree
    if not getattr(act, "polynomial_known", True):
        return NOT_GUARANTEED, (f"whether φ ({act.describe()}) is a polynomial is unknown: declare it with "
                                "custom(..., polynomial_degree=q) or custom(..., non_polynomial=True)")
    if kind != "ntk":
        return NOT_GUARANTEED, f"Carvalho et al. is a theorem about the infinite-width NTK, not the {kind}"
    if isinstance(degree, int):
        return NOT_GUARANTEED, (f"φ is a polynomial of degree {degree}: the theorem needs a non-polynomial "
                                f"activation (rank K ≤ {facts.rank_bound} ≥ N = {n}, so K may still be PD)")
    caveat = ""
    if pairs["min_separation"] < SEPARATION_CAVEAT:
        caveat = (f"; the closest inputs are {pairs['min_separation']:.2g} apart (relative), so λ_min may be "
                  "tiny")
    if facts.bias:
        return POSITIVE_DEFINITE, (f"non-polynomial φ ({act.describe()}) with biases on {n} pairwise "
                                   "distinct inputs" + caveat)
    offending = pairs["zero"] or pairs["positive_multiple"] or pairs["antipodal"] or pairs["negative_multiple"]
    if offending:
        what = ("a zero input" if pairs["zero"] else
                f"proportional inputs {offending[0]}")
        return NOT_GUARANTEED, (f"no biases and {what}: the theorem needs pairwise non-proportional "
                                "inputs without biases")
    return POSITIVE_DEFINITE, (f"non-polynomial φ ({act.describe()}) without biases on {n} pairwise "
                               "non-proportional inputs" + caveat)


def positivity_without_data(net: MLP, dim: int, *, kind: str = "ntk") -> dict:
    """What Carvalho et al. promise for ``net`` on any data in R^dim, before the data exist (``ntkdist theory``).

    The data-dependent verdict is `ntk_positivity`; this states the conditions under which it will say
    positive definite, and for a polynomial φ the rank bound C(dim + q^depth, q^depth) that caps N for a
    non-singular K (`polynomial_rank_bound`). JSON-ready: ``{"statement", "citation", "polynomial_degree",
    "rank_bound"}``.
    """
    act = net.activation
    degree = activation_polynomial_degree(act)
    rank_bound = polynomial_rank_bound(dim, degree, net.depth) if isinstance(degree, int) else None
    if isinstance(degree, int):
        statement = (f"φ is a polynomial of degree {degree}: rank K ≤ C({dim} + {degree}^{net.depth}, "
                     f"{degree}^{net.depth}) = {rank_bound}, so K is singular for N > {rank_bound}")
    elif not getattr(act, "polynomial_known", True):
        statement = (f"whether φ ({act.describe()}) is a polynomial is unknown: declare it with "
                     "custom(..., polynomial_degree=q) or custom(..., non_polynomial=True)")
    elif kind != "ntk":
        statement = f"Carvalho et al. is a theorem about the infinite-width NTK, not the {kind}: no guarantee"
    elif net.bias_var > 0.0:
        statement = f"non-polynomial φ ({act.describe()}) with biases: K is strictly positive definite on any " \
                    "pairwise distinct inputs"
    else:
        statement = f"non-polynomial φ ({act.describe()}) without biases: K is strictly positive definite on " \
                    "any pairwise non-proportional inputs"
    return {"statement": statement, "citation": CARVALHO, "polynomial_degree": degree, "rank_bound": rank_bound}
