"""Gaussian expectations over 1–4 correlated pre-activations, and their derivatives by Stein's lemma.

The finite-width recursions (Guillen, Misof, Gerken 2025, §4 and App. E; Roberts, Yaida, Hanin 2022, ch. 4 and 8)
need expectations ⟨g⟩ = E[g(z)] for z ~ N(0, K) over the sample points that g depends on (at most four), and
expectations of derivatives ⟨∂_a ∂_b f⟩, ⟨∂_a ∂_b ∂_c ∂_d f⟩ of functions f of two points. The derivatives are
taken off f and put on the Gaussian density (Stein's lemma, Gaussian integration by parts):

    ⟨∂_a f⟩             = ⟨f · y_a⟩,
    ⟨∂_a ∂_b f⟩         = ⟨f · (y_a y_b − P_ab)⟩,
    ⟨∂_a ∂_b ∂_c ∂_d f⟩ = ⟨f · (y_a y_b y_c y_d − [P_ab y_c y_d + 5 pairings] + [P_ab P_cd + 2 pairings])⟩,

with P = K⁻¹ and y = P z (the multivariate Hermite polynomials of the density). f itself is never
differentiated, so a kinked φ (ReLU: φ'' a delta function) needs no special case, only an integration rule that
resolves the kink.

The rules (nodes z and weights w with Σ w·g(z) ≈ E[g(z)]):

* one point: Gauss–Legendre on [−R, 0] and [0, R] of the standard normal density (the kink at 0 is a node
  boundary), R = `RADIUS`;
* two points: polar coordinates of the whitened variable u = L⁻¹z (K = L Lᵀ): Gauss–Legendre in the angle on
  each sector between the directions where some z_i = 0, and Gauss–Legendre in the radius on [0, R] with weight
  r·e^{−r²/2}/(2π). Within a sector every z_i keeps its sign, so a φ whose only kink is at 0 (ReLU, leaky ReLU,
  |x|) is smooth there and the rule converges exponentially;
* three or four points, smooth φ: a tensor-product Gauss–Hermite rule over the Cholesky factor (exponentially
  accurate for entire φ; tested < 1e-10 for GELU and erf);
* three or four points, φ with a kink at 0 (`has_kink_at_zero`): the sequential rule — one whitened coordinate
  at a time, z = L u, each coordinate's Gauss–Legendre rule split where its own z_k = 0 (tested < 1e-10 for
  ReLU and |x| on three and four points; Gauss–Hermite would give only ~2e-3).

Tested against the closed-form pair moments of the kernel engine to 1e-12 (GeLU, ReLU, erf).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Radius of the integration domain in standard deviations: the Gaussian tail beyond it, even weighted by the
#: degree-8 polynomials of a fourth derivative, is below 1e-25.
RADIUS = 13.0
#: Gauss–Legendre nodes per half-line (one point), per angular sector and radially (two points).
LINE_NODES = 160
ANGLE_NODES = 64
RADIAL_NODES = 96
#: Gauss–Hermite nodes per dimension for three and four points of a smooth φ (60³ = 216 000, 44⁴ = 3.7 million).
HERMITE_NODES = {3: 60, 4: 44}
#: Three and four points of a kinked φ: Gauss–Legendre nodes per half-interval of each coordinate (48³ = 110 592 and
#: 40⁴ = 2.56 million nodes), on [−R_seq, R_seq] (the tail beyond 10σ, weighted by degree-8 polynomials, < 1e-14).
SEQUENTIAL_NODES = {1: 24, 2: 24, 3: 24, 4: 20}
SEQUENTIAL_RADIUS = 10.0


@lru_cache(maxsize=None)
def _hermite_rule(dim: int):
    x, w = np.polynomial.hermite_e.hermegauss(HERMITE_NODES[dim])
    w = w / np.sqrt(2.0 * np.pi)
    grids = np.meshgrid(*([x] * dim), indexing="ij")
    wgrids = np.meshgrid(*([w] * dim), indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1), np.prod([g.reshape(-1) for g in wgrids], axis=0)


def has_kink_at_zero(activation) -> bool:
    """Whether φ' jumps at 0 (ReLU, leaky ReLU, |x|): then three and four points take the sequential rule."""
    step = np.array([-1e-12, 1e-12])
    left, right = np.asarray(activation.derivative(step), dtype=np.float64)
    return bool(abs(right - left) > 1e-8 * max(1.0, abs(left), abs(right)))


@lru_cache(maxsize=None)
def _legendre(count: int):
    return np.polynomial.legendre.leggauss(count)


def _interval(count: int, lower: float, upper: float):
    """Gauss–Legendre nodes and weights on [lower, upper]."""
    x, w = _legendre(count)
    half = 0.5 * (upper - lower)
    return lower + half * (x + 1.0), half * w


def _line_rule():
    """Standard normal on the line, split at the kink 0: nodes u (P, 1) and weights (P,)."""
    left, wl = _interval(LINE_NODES, -RADIUS, 0.0)
    right, wr = _interval(LINE_NODES, 0.0, RADIUS)
    u = np.concatenate([left, right])
    w = np.concatenate([wl, wr]) * np.exp(-0.5 * u * u) / np.sqrt(2.0 * np.pi)
    return u[:, None], w


def _plane_rule(chol: np.ndarray):
    """Standard normal in the plane in polar coordinates, sectors split where (L u)_i = 0 (see module doc)."""
    # (L u)_i = 0 on the line through 0 orthogonal to the row L_i: two directions per row.
    normals = np.arctan2(chol[:, 1], chol[:, 0])
    cuts = np.mod(np.concatenate([normals + 0.5 * np.pi, normals + 1.5 * np.pi]), 2.0 * np.pi)
    edges = np.unique(np.concatenate([[0.0, 2.0 * np.pi], cuts]))
    edges = edges[np.concatenate([[True], np.diff(edges) > 1e-14])]
    radius, wr = _interval(RADIAL_NODES, 0.0, RADIUS)
    wr = wr * radius * np.exp(-0.5 * radius * radius) / (2.0 * np.pi)
    nodes, weights = [], []
    for start, stop in zip(edges[:-1], edges[1:]):
        angle, wa = _interval(ANGLE_NODES, start, stop)
        direction = np.stack([np.cos(angle), np.sin(angle)], axis=1)
        nodes.append((radius[:, None, None] * direction[None, :, :]).reshape(-1, 2))
        weights.append((wr[:, None] * wa[None, :]).reshape(-1))
    return np.concatenate(nodes), np.concatenate(weights)


def _sequential_rule(chol: np.ndarray):
    """Standard normal u in d dimensions, one coordinate at a time, each split where its z_k = (L u)_k = 0.

    z_k = Σ_{j<k} L_kj u_j + L_kk u_k is linear in u_k once u_1 … u_{k−1} are fixed, so its kink sits at one
    point of the u_k axis, which becomes the boundary of two Gauss–Legendre intervals on [−R_seq, R_seq]. Inner
    integrals of a kinked integrand are smooth in the outer coordinates, so every level converges exponentially.
    """
    count = SEQUENTIAL_NODES[chol.shape[0]]
    x, w = _legendre(count)
    nodes = np.zeros((1, 0))
    weights = np.ones(1)
    for k in range(chol.shape[0]):
        kink = np.clip(-(nodes @ chol[k, :k]) / chol[k, k], -SEQUENTIAL_RADIUS, SEQUENTIAL_RADIUS)
        edge = np.full_like(kink, SEQUENTIAL_RADIUS)
        points, point_weights = [], []
        for lower, upper in ((-edge, kink), (kink, edge)):
            half = 0.5 * (upper - lower)[:, None]
            u = lower[:, None] + half * (x + 1.0)
            points.append(u)
            point_weights.append(half * w * np.exp(-0.5 * u * u) / np.sqrt(2.0 * np.pi))
        u, wk = np.concatenate(points, axis=1), np.concatenate(point_weights, axis=1)
        nodes = np.concatenate([np.repeat(nodes, u.shape[1], axis=0), u.reshape(-1, 1)], axis=1)
        weights = (weights[:, None] * wk).reshape(-1)
    return nodes, weights


def cholesky(cov: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of the pre-activation covariance, with an error that says what to change."""
    message = ("inputs: the pre-activation covariance of some inputs is singular (coincident or parallel inputs, "
               "linearly dependent ones such as more points than input dimensions, or a zero input without "
               "bias); pass linearly independent inputs or a positive bias_var")
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ValueError(message) from None
    # Stein's lemma divides by K: a pivot at rounding level would turn the derivatives into noise.
    if np.min(np.diag(chol)) ** 2 <= 1e-10 * np.max(np.diag(cov)):
        raise ValueError(message)
    return chol


def gaussian_rule(cov: np.ndarray, kinked: bool = True):
    """Nodes z (P, d) and weights w (P,) with Σ_p w_p g(z_p) ≈ E[g(z)], z ~ N(0, cov), d = 1…4 (module doc).

    ``kinked``: g has kinks where some z_i = 0 (three and four points then take the sequential rule).
    """
    cov = np.asarray(cov, dtype=np.float64)
    dim = cov.shape[0]
    chol = cholesky(cov)
    if dim == 1:
        u, w = _line_rule()
    elif dim == 2:
        u, w = _plane_rule(chol)
    elif dim <= 4:
        u, w = _sequential_rule(chol) if kinked else _hermite_rule(dim)
    else:
        raise ValueError(f"inputs: expectations over {dim} points are not implemented (at most 4)")
    return u @ chol.T, w


def hermite_weights(z: np.ndarray, cov: np.ndarray, order: int) -> np.ndarray:
    """The Stein multipliers h with ⟨∂^order f⟩ = ⟨f·h⟩ at the nodes z: shape (P,) + (d,)·order, order ∈ {1, 2, 4}."""
    precision = np.linalg.inv(cov)
    y = z @ precision
    if order == 1:
        return y
    if order == 2:
        return y[:, :, None] * y[:, None, :] - precision
    if order != 4:
        raise ValueError(f"order: must be 1, 2 or 4, got {order}")
    p = precision
    yy = y[:, :, None] * y[:, None, :]
    quartic = yy[:, :, :, None, None] * yy[:, None, None, :, :]
    # The six ways to pair two of the four indices with P and the other two with y y.
    pair_y = (np.einsum("ab,pcd->pabcd", p, yy) + np.einsum("ac,pbd->pabcd", p, yy)
              + np.einsum("ad,pbc->pabcd", p, yy) + np.einsum("bc,pad->pabcd", p, yy)
              + np.einsum("bd,pac->pabcd", p, yy) + np.einsum("cd,pab->pabcd", p, yy))
    pair_p = np.einsum("ab,cd->abcd", p, p) + np.einsum("ac,bd->abcd", p, p) + np.einsum("ad,bc->abcd", p, p)
    return quartic - pair_y + pair_p
