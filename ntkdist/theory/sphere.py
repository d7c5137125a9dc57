"""Eigenvalues of NTK/NNGP integral operators for data uniform on the sphere, and their decay.

Convention (docs/theory.md §1.3): for inputs x ∈ R^dim of norm ``radius``, μ_k are the eigenvalues of

    f ↦ E_{y ~ Unif(S^{dim−1})}[Θ(⟨x, y⟩) f(y)]          (probability measure),

each with multiplicity N(dim, k) (`harmonic_multiplicity`), so the N×N Gram matrix of N uniform points has
eigenvalues ≈ N·μ_k. Every spherical harmonic of degree k is an eigenfunction (Funk–Hecke):

    μ_k = E_t[Θ(t) P_k(t)],   t = ⟨x̂, ŷ⟩ with density ∝ (1 − t²)^{(dim−3)/2} on [−1, 1],

P_k the Gegenbauer polynomial C_k^{((dim−2)/2)} normalised to P_k(1) = 1. Murray, Jin, Bowman, Montúfar 2023
(arXiv 2211.07844) Theorem 4.6 (after Azevedo & Menegatto 2015) state it on S^d ⊂ R^{d+1} with the *surface*
measure; here d = dim − 1 and their λ̄_k = Vol(S^d)·μ_k (Murray et al. 2023, §4, normalisation).

Two independent methods:

* ``"series"``: Theorem 4.6 applied to the power series Θ = Σ_p κ_p t^p of `ntkdist.theory.power_series`,
  μ_k = Σ_{p ≥ k, p ≡ k (2)} κ_p β_{p,k} with β_{p,k} = E_t[t^p P_k(t)] ≥ 0 (`funk_hecke_weights`). The
  neglected tail is bounded exactly: 0 ≤ Σ_{p > P} κ_p β_{p,k} ≤ T_P^{(k mod 2)}·E|t|^{P'} (|P_k| ≤ 1;
  E|t|^p decreases in p; P' the first p > P of k's parity), with the parity-split tail masses
  T^{even/odd} = (T(1) ± T(−1))/2 from the closed-form kernel at t = ±1. Smooth activations meet ``tol`` with
  this bound at P = 1024. ReLU-type kernels (κ_p ~ p^{−3/2}) would need P ~ 10⁵–10⁶ on S² for the bound alone;
  for them the tail is instead summed from a fitted singular model: near t = ±1 these kernels are analytic
  functions of √(1 ∓ t), so κ_p ≈ Σ_j (a_j + (−1)^p b_j)[t^p](1 − t)^{j+1/2}, whose eigenvalues are known in
  closed form (`singular_model_eigenvalues`). Fitted on p ∈ [P/4, P]; accepted only inside the rigorous
  interval, with the change between 3- and 4-term models as ``error_bound`` (measured: series and quadrature
  agree to ~1e-14 absolute at P = 1024). The order grows ×4 until ``error_bound`` ≤ ``tol``·Θ(x, x).
* ``"quadrature"``: the Funk–Hecke integral itself, in the angle: μ_k = c ∫_0^π Θ(cos θ) P_k(cos θ)
  sin^{dim−2}θ dθ by Gauss–Legendre in θ, with Θ from `ntkdist.kernels.ntk`/`nngp` on unit vectors at angle θ.
  ReLU-type kernels have a √(1 − t) singularity at t = 1 but are analytic in θ, so the rule converges
  exponentially; ``error_bound`` is the change from n to 2n nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import gammaln

from ntkdist.kernels import ABReLU, Erf, Gelu, MLP, Tanh, nngp, ntk

from .hermite import activation_polynomial_degree
from .power_series import layer_composition, power_series
from .scaling import fit_log_log

__all__ = [
    "SphereSpectrum",
    "sphere_eigenvalues",
    "harmonic_multiplicity",
    "funk_hecke_weights",
    "abs_moment",
    "gegenbauer_normalized",
    "DecayPrediction",
    "decay_prediction",
    "fit_power_law",
    "singular_model_eigenvalues",
    "kernel_on_sphere",
]

#: Default accuracy target of the series method, relative to the kernel on the diagonal.
SERIES_TOL = 1e-10
#: Largest series order the series method goes to (then it returns with the bound it reached).
SERIES_MAX_ORDER = 1 << 18


@dataclass(frozen=True)
class SphereSpectrum:
    """Eigenvalues μ_k of the kernel's integral operator on Unif(S^{dim−1}) (probability measure), k = 0..K.

    Attributes
    ----------
    degree : (K+1,) int array
        k = 0..max_degree.
    eigenvalue : (K+1,) float array
        μ_k (docs/theory.md §1.3: the Gram matrix of N uniform points has eigenvalues ≈ N·μ_k).
    multiplicity : (K+1,) int array
        N(dim, k), the dimension of the degree-k spherical harmonics.
    error_bound : (K+1,) float array
        A bound on |eigenvalue − μ_k| (series: rigorous truncation bound plus rounding; quadrature: the change
        from n to 2n nodes).
    dim : int
    method : str
    order : int
        The series order used (series method) or the number of quadrature nodes.
    """

    degree: np.ndarray
    eigenvalue: np.ndarray
    multiplicity: np.ndarray
    error_bound: np.ndarray = field(default=None)  # type: ignore[assignment]
    dim: int = 0
    method: str = ""
    order: int = 0

    def ranked(self, count: int | None = None):
        """(values, degrees): the eigenvalues repeated by multiplicity, largest first (``count`` of them).

        Ties keep the lower degree first. Degrees above max_degree are absent, so the list is complete only
        down to the largest eigenvalue any omitted degree could have.
        """
        values = np.repeat(self.eigenvalue, self.multiplicity)
        degrees = np.repeat(self.degree, self.multiplicity)
        order = np.lexsort((degrees, -values))
        values, degrees = values[order], degrees[order]
        if count is not None:
            values, degrees = values[:count], degrees[:count]
        return values, degrees


def harmonic_multiplicity(dim: int, k: int) -> int:
    """N(dim, k): the number of linearly independent spherical harmonics of degree k on S^{dim−1} ⊂ R^dim.

    N = C(k+dim−1, dim−1) − C(k+dim−3, dim−1) (homogeneous harmonic polynomials of degree k in dim variables);
    equals (2k+d−1)/k·C(k+d−2, k−1) of Murray et al. 2023 §4 with the sphere dimension d = dim − 1.
    N(3, k) = 2k + 1, N(2, k) = 2 (k ≥ 1), N(dim, 0) = 1.
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 2:
        raise ValueError(f"dim: must be an integer ≥ 2 (the ambient dimension of the sphere), got {dim!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k: must be an integer ≥ 0, got {k!r}")
    dim, k = int(dim), int(k)
    return math.comb(k + dim - 1, dim - 1) - (math.comb(k + dim - 3, dim - 1) if k >= 2 else 0)


def abs_moment(dim: int, p) -> np.ndarray:
    """E|t|^p for t = ⟨x̂, ŷ⟩, x̂, ŷ uniform on S^{dim−1}: Γ(dim/2)Γ((p+1)/2) / (√π Γ((p+dim)/2)) ~ p^{−(dim−1)/2}."""
    p = np.asarray(p, dtype=float)
    return np.exp(gammaln(dim / 2.0) + gammaln((p + 1.0) / 2.0) - 0.5 * math.log(math.pi) - gammaln((p + dim) / 2.0))


def funk_hecke_weights(dim: int, max_degree: int, order: int) -> np.ndarray:
    """β_{p,k} = E_t[t^p P_k(t)], k = 0..max_degree (rows), p = 0..order (columns).

    Murray et al. 2023 (arXiv 2211.07844) Theorem 4.6 with d = dim − 1, divided by Vol(S^d) = 2π^{(d+1)/2}/Γ((d+1)/2):

        β_{p,k} = Γ((d+1)/2)/(√π 2^k) · Γ(p+1)Γ((p−k+1)/2) / [Γ(p−k+1)Γ((p+k+d+1)/2)],   p ≥ k, p ≡ k (mod 2),

    0 otherwise. Evaluated as β_{k,k} = Γ((d+1)/2) k!/(2^k Γ(k+(d+1)/2)) times the cumulative product of the
    exact ratios β_{p+2,k}/β_{p,k} = (p+2)(p+1)/((p−k+2)(p+k+d+1)) (relative error ~√(order)·ε, where log-Gamma
    differences would lose ~ε·log Γ(order) ≈ 1e-9 at order 10⁵). All β ≥ 0, Σ_k N(dim, k)β_{p,k} = 1.
    """
    d = dim - 1
    out = np.zeros((max_degree + 1, order + 1))
    for k in range(min(max_degree, order) + 1):
        start = math.exp(gammaln((d + 1) / 2.0) + gammaln(k + 1.0) - k * math.log(2.0) - gammaln(k + (d + 1) / 2.0))
        p = np.arange(k, order - 1, 2, dtype=float)  # ratio from p to p + 2
        ratios = (p + 2.0) * (p + 1.0) / ((p - k + 2.0) * (p + k + d + 1.0))
        out[k, k::2] = start * np.concatenate(([1.0], np.cumprod(ratios)))
    return out


def gegenbauer_normalized(dim: int, max_degree: int, t) -> np.ndarray:
    """P_k(t), k = 0..max_degree (rows): Gegenbauer C_k^{((dim−2)/2)}(t)/C_k(1) (Legendre for dim = 3, cos kθ for dim = 2).

    Three-term recurrence P_{k+1} = ((2k+dim−2) t P_k − k P_{k−1})/(k+dim−2), P_0 = 1, P_1 = t.
    """
    t = np.asarray(t, dtype=float)
    out = np.empty((max_degree + 1,) + t.shape)
    out[0] = 1.0
    if max_degree >= 1:
        out[1] = t
    for k in range(1, max_degree):
        out[k + 1] = ((2 * k + dim - 2) * t * out[k] - k * out[k - 1]) / (k + dim - 2)
    return out


def _check(net, dim, max_degree, kind, radius):
    if not isinstance(net, MLP):
        raise TypeError(f"net: expected an ntkdist.kernels.MLP, got {type(net).__name__}")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 2:
        raise ValueError(f"dim: must be an integer ≥ 2 (inputs live on S^(dim−1) ⊂ R^dim), got {dim!r}")
    if isinstance(max_degree, bool) or not isinstance(max_degree, (int, np.integer)) or max_degree < 0:
        raise ValueError(f"max_degree: must be an integer ≥ 0, got {max_degree!r}")
    if kind not in ("ntk", "nngp"):
        raise ValueError(f"kind: must be 'ntk' or 'nngp', got {kind!r}")
    radius = float(radius)
    if not math.isfinite(radius) or radius <= 0.0:
        raise ValueError(f"radius: must be a finite number > 0, got {radius!r}")
    return int(dim), int(max_degree), radius


def kernel_on_sphere(net: MLP, dim: int, theta, *, kind: str = "ntk", radius: float = 1.0) -> np.ndarray:
    """Θ (or the NNGP) of two inputs of norm ``radius`` in R^dim at angle θ, from `ntkdist.kernels.ntk`/`nngp`.

    x = r·e_1, y = r(cos θ e_1 + sin θ e_2); the kernels recompute 1 − cos θ of near-parallel pairs from x̂ − ŷ,
    so small angles keep their digits.
    """
    theta = np.atleast_1d(np.asarray(theta, dtype=float))
    X = np.zeros((1, dim))
    X[0, 0] = radius
    Y = np.zeros((theta.size, dim))
    Y[:, 0] = radius * np.cos(theta)
    Y[:, 1] = radius * np.sin(theta)
    fn = ntk if kind == "ntk" else nngp
    return np.asarray(fn(X, Y, net=net))[0]


def _kernel_antipodal(net, dim, kind, radius) -> float:
    X = np.zeros((1, dim))
    X[0, 0] = radius
    fn = ntk if kind == "ntk" else nngp
    return float(np.asarray(fn(X, -X, net=net))[0, 0])


def _quadrature(net, dim, max_degree, kind, radius, nodes):
    def estimate(n):
        x, w = np.polynomial.legendre.leggauss(n)
        theta = 0.5 * math.pi * (x + 1.0)
        weight = 0.5 * math.pi * w * np.sin(theta) ** (dim - 2)
        # c = Γ(dim/2)/(√π Γ((dim−1)/2)) normalises sin^{dim−2}θ dθ on [0, π] to a probability.
        weight *= math.exp(gammaln(dim / 2.0) - 0.5 * math.log(math.pi) - gammaln((dim - 1) / 2.0))
        values = kernel_on_sphere(net, dim, theta, kind=kind, radius=radius)
        return gegenbauer_normalized(dim, max_degree, np.cos(theta)) @ (weight * values)

    n = nodes if nodes is not None else 2 * max_degree + 256
    coarse = estimate(n)
    fine = estimate(2 * n)
    scale = float(np.max(np.abs(fine)))
    return fine, np.abs(fine - coarse) + 1e-15 * scale, 2 * n


def singular_model_eigenvalues(dim: int, max_degree: int, alpha: float) -> np.ndarray:
    """μ_k of the zonal function (1 − t)^α on S^{dim−1}, k = 0..max_degree, in closed form.

    With λ = (dim−2)/2, Rodrigues' formula and k integrations by parts give
    μ_k = c·2^{α+2λ} Γ(α+λ+½) Γ(λ+½) (−α)_k / Γ(α+k+2λ+1), c = Γ(λ+1)/(√π Γ(λ+½)), (−α)_k the rising
    factorial; (1 + t)^α has (−1)^k times these. For α = ½ they decay like k^{−dim}: the NTK rate of ReLU.
    """
    lam = 0.5 * (dim - 2)
    log_c = gammaln(lam + 1.0) - 0.5 * math.log(math.pi) - gammaln(lam + 0.5)
    log_a = log_c + (alpha + 2 * lam) * math.log(2.0) + gammaln(alpha + lam + 0.5) + gammaln(lam + 0.5)
    out = np.empty(max_degree + 1)
    rising = 1.0  # (−α)_k, built up term by term (k is small)
    for k in range(max_degree + 1):
        if k > 0:
            rising *= (k - 1) - alpha
        out[k] = rising * math.exp(log_a - gammaln(alpha + k + 2 * lam + 1.0))
    return out


def _binomial_series(alpha: float, order: int) -> np.ndarray:
    """Taylor coefficients of (1 − t)^α: m_0 = 1, m_p = m_{p−1}(p − 1 − α)/p."""
    p = np.arange(1, order + 1, dtype=float)
    return np.concatenate(([1.0], np.cumprod((p - 1.0 - alpha) / p)))


#: Exponents of the singular model (1 ∓ t)^α fitted to the coefficient tail (see `_tail_by_singular_model`).
_MODEL_EXPONENTS = (0.5, 1.5, 2.5, 3.5)


def _tail_by_singular_model(c: np.ndarray, dim: int, max_degree: int, beta: np.ndarray, terms: int):
    """Σ_{p>P} κ_p β_{p,k} from a fitted model of the coefficients' tail.

    Kernels built from ReLU-type activations are, near t = ±1, analytic functions of √(1 ∓ t) (arc-cosine
    kernels and their compositions), so κ_p ≈ Σ_j (a_j + (−1)^p b_j)·[t^p](1 − t)^{α_j} with α_j = ½, 3/2, …
    up to O(p^{−α_J − 1}). The model's own tail Σ_{p>P} m_p β_{p,k} = μ_k(m) − Σ_{p≤P} m_p β_{p,k} is exact
    (closed-form μ_k(m), `singular_model_eigenvalues`). a_j, b_j are fitted by least squares on p ∈ [P/4, P].
    """
    P = c.size - 1
    lo = P // 4
    p = np.arange(lo, P + 1)
    sign = np.where(p % 2 == 0, 1.0, -1.0)
    alphas = _MODEL_EXPONENTS[:terms]
    series = [_binomial_series(a, P) for a in alphas]
    columns, scales = [], []
    for a, m in zip(alphas, series):
        scale = float(P) ** (a + 1.0)  # m_p ~ p^{−α−1}: put every column on the scale of 1
        columns += [m[lo:] * scale, sign * m[lo:] * scale]
        scales += [scale, scale]
    weight = (p / float(P)) ** 1.5 * float(P) ** 1.5  # rows on a common scale (κ_p ~ p^{−3/2} or faster)
    design = np.array(columns).T * weight[:, None]
    coef, *_ = np.linalg.lstsq(design, c[lo:] * weight, rcond=None)
    coef = coef * np.array(scales)
    tail = np.zeros(max_degree + 1)
    parity = np.where(np.arange(max_degree + 1) % 2 == 0, 1.0, -1.0)
    signs_p = np.where(np.arange(P + 1) % 2 == 0, 1.0, -1.0)
    for j, (a, m) in enumerate(zip(alphas, series)):
        exact = singular_model_eigenvalues(dim, max_degree, a)
        plus, minus = coef[2 * j], coef[2 * j + 1]
        # (1 − t)^α and (1 + t)^α: coefficients m_p and (−1)^p m_p, eigenvalues μ_k and (−1)^k μ_k.
        tail += plus * (exact - beta @ m) + minus * (parity * exact - beta @ (signs_p * m))
    return tail


def _eigenvalues_from_power_series(net, dim, max_degree, kind, radius, tol, max_order):
    """μ_0 … μ_max_degree by Thm 4.6 from the power series, its order raised ×4 until the error is ≤ ``tol``·Θ(1).

    Returns the eigenvalues, their error bound and the order used.
    """
    minus = _kernel_antipodal(net, dim, kind, radius)
    P = max(1024, 4 * (max_degree + 1))
    while True:
        ps = power_series(net, P, dim=dim, kind=kind, radius=radius)
        c = ps.coefficients
        beta = funk_hecke_weights(dim, max_degree, P)
        partial = beta @ c
        signs = np.where(np.arange(P + 1) % 2 == 0, 1.0, -1.0)
        tail_plus = ps.tail
        tail_minus = minus - math.fsum(c * signs)
        # Σ_{p>P, p even} κ_p and Σ_{p>P, p odd} κ_p; rounding of the two totals is ~1e-16·total.
        rounding = 4e-16 * (abs(ps.total) + abs(minus)) + 2e-16 * float(np.sum(np.abs(c)))
        tails = (max(0.5 * (tail_plus + tail_minus), 0.0) + rounding,
                 max(0.5 * (tail_plus - tail_minus), 0.0) + rounding)
        k = np.arange(max_degree + 1)
        first_beyond = np.where((P + 1 - k) % 2 == 0, P + 1, P + 2)
        bound = np.array([tails[kk % 2] for kk in k]) * abs_moment(dim, first_beyond)
        # Contour coefficients carry ~1e-15·total absolute error each; Σ_p β_{p,k} ≤ Σ_p E|t|^p bounds the effect.
        noise = 2e-15 * abs(ps.total) * float(np.sum(abs_moment(dim, np.arange(P + 1)))) if P > 512 else 0.0
        value, error = partial + 0.5 * bound, 0.5 * bound + noise
        if float(np.max(bound)) > tol * abs(ps.total):
            # Rigorous bound not met: estimate the tail from the singular model, accept it where it lies inside
            # the rigorous interval [0, bound] and two model sizes agree; the disagreement is the error bound.
            fine = _tail_by_singular_model(c, dim, max_degree, beta, len(_MODEL_EXPONENTS))
            coarse = _tail_by_singular_model(c, dim, max_degree, beta, len(_MODEL_EXPONENTS) - 1)
            spread = np.abs(fine - coarse) + noise
            inside = (fine >= -spread) & (fine <= bound + spread)
            better = inside & (spread < 0.5 * bound)
            value = np.where(better, partial + fine, value)
            error = np.where(better, spread, error)
        if float(np.max(error)) <= tol * abs(ps.total) or P >= max_order:
            break
        P = min(4 * P, max_order)
    return value, error, P


def sphere_eigenvalues(net: MLP, dim: int, max_degree: int, kind: str = "ntk", *, radius: float = 1.0,
                       method: str = "series", tol: float = SERIES_TOL, max_order: int = SERIES_MAX_ORDER,
                       nodes: int | None = None) -> SphereSpectrum:
    """μ_k, k = 0..max_degree, of the NTK (or NNGP) of ``net`` on Unif(S^{dim−1}) of radius ``radius``.

    Convention: docs/theory.md §1.3 (probability measure; Gram of N uniform points ≈ N·μ_k, multiplicity N(dim, k)).
    ``method="series"``: Murray et al. 2023 (arXiv 2211.07844) Theorem 4.6 (Azevedo & Menegatto 2015) on the
    power series of `ntkdist.theory.power_series.power_series`, divided by Vol(S^{dim−1}) (Murray et al. 2023, §4),
    order raised until the rigorous tail bound is below ``tol``·Θ(x, x) (or ``max_order`` is reached; see
    ``error_bound``). ``method="quadrature"``: Gauss–Legendre in the angle of the Funk–Hecke integral of the
    closed-form kernel (``nodes`` and 2·``nodes`` points; default 2·max_degree + 256).

    ReLU-type kernels have κ_p ~ p^{−3/2}; their tail beyond the order P is summed from a fitted model of the
    √(1 ∓ t) singularities at t = ±1 (module docstring), which gives ~1e-14 absolute accuracy at P = 1024 in
    ~0.02 s. ``error_bound`` is rigorous where the plain tail bound met ``tol`` and an estimate (model spread)
    where the model was used.
    """
    dim, max_degree, radius = _check(net, dim, max_degree, kind, radius)
    if method == "series":
        values, error, order = _eigenvalues_from_power_series(net, dim, max_degree, kind, radius, float(tol),
                                                              int(max_order))
    elif method == "quadrature":
        values, error, order = _quadrature(net, dim, max_degree, kind, radius, nodes)
    else:
        raise ValueError(f"method: must be 'series' or 'quadrature', got {method!r}")
    degree = np.arange(max_degree + 1)
    multiplicity = np.array([harmonic_multiplicity(dim, int(k)) for k in degree], dtype=np.int64)
    return SphereSpectrum(degree=degree, eigenvalue=np.asarray(values, dtype=float), multiplicity=multiplicity,
                          error_bound=np.asarray(error, dtype=float), dim=dim, method=method, order=int(order))


# --------------------------------------------------------------------------------------------------------------
# Decay of the coefficients and eigenvalues (Murray et al. Lemma 3.2, Corollary 4.7)
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecayPrediction:
    """How fast κ_p and μ_k decay for a network on Unif(S^{dim−1}), up to constants.

    Attributes
    ----------
    regime : {"power", "stretched_exponential", "geometric", "finite", "unknown"}
    coefficient_rate : float or None
        power: a in κ_p = Θ(p^{−a}); stretched_exponential: a in κ_p = O(e^{−a√p}); geometric: the base b in
        κ_p = b^{p + o(p)} (b = 1/R, R the radius of convergence); finite: the degree of the kernel polynomial.
    eigenvalue_rate : float or None
        power: e in μ_k = Θ(k^{−e}) (Cor. 4.7(1)–(2): e = d + 2a − 2 on S^d, d = dim − 1); stretched_exponential:
        a in μ_k = O(k^{−d+1/2}e^{−a√k}) (Cor. 4.7(3)); geometric: the base in μ_k = ϱ^{−k + o(k)}, ϱ = R + √(R²−1)
        (the Bernstein ellipse through the singularity; inside Cor. 4.7(4)'s interval); finite: the largest k
        with μ_k ≠ 0 possible.
    eigenvalue_rate_bounds : (float, float) or None
        geometric: Cor. 4.7(4)'s bases (1/(2R), 1/R): μ_k = O(k^{−d+1}R^{−k}) and Ω(k^{−d/2+1}(2R)^{−k}).
    odd_vanish : bool
        κ_p = 0 for odd p ≥ 3, hence μ_k = 0 for odd k ≥ 3 (Lemma 3.2 / Cor. 4.7(2)).
    tight : bool
        True for Θ(·) statements, False for O(·) upper bounds.
    sharp_coefficient_rate : float or None
        stretched_exponential, one hidden layer: the exponent π/√s implied by the strip of analyticity
        |Im x| < π/2 of tanh (s = the first layer's slope w·r²/d): Hermite coefficients of a function analytic
        in |Im z| < τ decay like e^{−τ√k} (Hille), so κ_p ≈ e^{−π√(p/s)}. With Murray's unit variance (s = 1)
        this is e^{−π√p}, twice Lemma 3.2(2)'s exponent — the lemma's bound holds but is not tight.
    ranked_exponent : float or None
        power: the ℓ-th largest eigenvalue (with multiplicity) decays like ℓ^{−e/d}.
    reference : str
    """

    regime: str
    coefficient_rate: float | None
    eigenvalue_rate: float | None
    eigenvalue_rate_bounds: tuple | None
    odd_vanish: bool
    tight: bool
    sharp_coefficient_rate: float | None
    ranked_exponent: float | None
    reference: str
    dim: int

    def coefficient_envelope(self, p):
        """The predicted shape of κ_p, up to a constant (NaN where the regime gives none)."""
        p = np.asarray(p, dtype=float)
        if self.regime == "power":
            return p ** -self.coefficient_rate
        if self.regime == "stretched_exponential":
            rate = self.sharp_coefficient_rate or self.coefficient_rate
            return np.exp(-rate * np.sqrt(p))
        if self.regime == "geometric":
            return self.coefficient_rate ** p
        return np.full(p.shape, np.nan)

    def eigenvalue_envelope(self, k):
        """The predicted shape of μ_k, up to a constant (NaN where the regime gives none)."""
        k = np.asarray(k, dtype=float)
        d = self.dim - 1
        if self.regime == "power":
            return k ** -self.eigenvalue_rate
        if self.regime == "stretched_exponential":
            rate = self.sharp_coefficient_rate or self.coefficient_rate
            return k ** (-d + 0.5) * np.exp(-rate * np.sqrt(k))
        if self.regime == "geometric":
            return self.eigenvalue_rate ** k
        return np.full(k.shape, np.nan)


def _erf_radius(layers) -> float:
    """Radius of convergence R > 1 of an erf network's kernel series in ρ.

    Williams' kernel (2/π)arcsin(s·c), s = 2q/(1+2q), is analytic for |s·c| < 1; the series of a composition
    with non-negative coefficients first meets a singularity on the positive axis, where some layer's s_l·c_l(ρ)
    reaches 1 (Pringsheim). Found by bisection on the real recursion continued past ρ = 1.
    """
    q = layers.variances()

    def singular(rho: float) -> bool:
        s = layers.first_slope * rho + layers.first_const
        for layer in range(layers.hidden):
            arg = (2.0 * q[layer] / (1.0 + 2.0 * q[layer])) * s / q[layer]
            if arg >= 1.0:
                return True
            s = layers.weight_var * (2.0 / math.pi) * math.asin(arg) + layers.bias_var
        return False

    hi = 2.0
    while not singular(hi):
        hi *= 2.0
    lo = 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if singular(mid):
            hi = mid
        else:
            lo = mid
        if hi - lo <= 4e-16 * hi:
            break
    return hi


def decay_prediction(net: MLP, dim: int, kind: str = "ntk", *, radius: float = 1.0) -> DecayPrediction:
    """Predicted decay of κ_p and μ_k for ``net`` on the sphere of radius ``radius`` in R^dim.

    Murray, Jin, Bowman, Montúfar 2023 (arXiv 2211.07844): Lemma 3.2 (two-layer coefficient decay) and
    Corollary 4.7 (eigenvalues of Theorem 4.6), stated on S^d with d = dim − 1:

    * ABReLU family (ReLU, leaky ReLU, |x|): κ_p = Θ(p^{−3/2}) for the NTK (Lemma 3.2(1)); the NNGP's arc-cosine
      kernel has κ_p = Θ(p^{−5/2}). Beyond one hidden layer the exponent is unchanged (the kernel stays an
      analytic function of √(1 − ρ) with the same leading power; Bietti & Bach 2021, arXiv 2009.14397,
      "deep equals shallow"), so μ_k = Θ(k^{−d−2a+2}) = Θ(k^{−dim}) (NTK) or Θ(k^{−dim−2}) (NNGP) by
      Cor. 4.7(1). One hidden layer without bias: κ_p = 0 at odd p ≥ 3 and μ_k = 0 at odd k ≥ 3
      (Cor. 4.7(2); the appendix text says "even", which contradicts the corollary).
    * erf (and exact GELU, whose Φ is an erf): kernels analytic in |ρ| < R, R > 1 (`_erf_radius` for erf):
      geometric decay, Cor. 4.7(4) brackets the eigenvalue base between 1/(2R) and 1/R; the Bernstein-ellipse
      base 1/(R + √(R² − 1)) is the sharp value. GELU gets regime "geometric" without a computed R.
    * tanh, one hidden layer: κ_p = O(e^{−π√(p−1)/2}) (Lemma 3.2(2), unit variance) and Cor. 4.7(3); see
      ``sharp_coefficient_rate`` for the tight exponent.
    * polynomial activations of degree m (``polynomial_degree``): kernels are polynomials of degree ≤ m^depth
      (the identity: 1), μ_k = 0 above it.
    """
    dim, _, radius = _check(net, dim, 0, kind, radius)
    act = net.activation
    layers = layer_composition(net, dim, radius)
    d = dim - 1
    one_layer_no_bias = net.depth == 1 and net.bias_var == 0.0
    degree = activation_polynomial_degree(act)
    if degree is not None:
        top = degree ** net.depth
        return DecayPrediction("finite", float(top), float(top), None, False, True, None, None,
                               "polynomial activation: finite kernel polynomial", dim)
    if isinstance(act, ABReLU):
        a = 1.5 if kind == "ntk" else 2.5
        e = d + 2 * a - 2
        return DecayPrediction(
            "power", a, e, None, one_layer_no_bias, True, None, e / d if d > 0 else None,
            "Murray et al. 2023 Lemma 3.2(1), Cor. 4.7(1)-(2); Bietti & Bach 2021 for depth > 1", dim)
    if isinstance(act, Erf):
        R = _erf_radius(layers)
        rho = R + math.sqrt(R * R - 1.0)
        return DecayPrediction("geometric", 1.0 / R, 1.0 / rho, (1.0 / (2.0 * R), 1.0 / R), False, False, None,
                               None, "Murray et al. 2023 Cor. 4.7(4); Bernstein ellipse for the sharp base", dim)
    if isinstance(act, Gelu):
        return DecayPrediction("geometric", None, None, None, False, False, None, None,
                               "entire activation of order 2 (erf-like): geometric decay", dim)
    if isinstance(act, Tanh):
        if net.depth == 1:
            sharp = math.pi / math.sqrt(layers.first_slope)
            return DecayPrediction("stretched_exponential", math.pi / 2.0, math.pi / 2.0, None, False, False, sharp,
                                   None, "Murray et al. 2023 Lemma 3.2(2), Cor. 4.7(3)", dim)
        return DecayPrediction("stretched_exponential", None, None, None, False, False, None, None,
                               "tanh beyond one hidden layer: no rate in Murray et al. 2023", dim)
    return DecayPrediction("unknown", None, None, None, False, False, None, None, "no prediction", dim)


def fit_power_law(x, y) -> tuple[float, float]:
    """(exponent e, constant C) of the least-squares fit y ≈ C·x^{−e} on log–log axes (positive y only)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = (x > 0) & (y > 0)
    fit = fit_log_log(x[keep], y[keep])
    return -fit.slope, fit.prefactor
