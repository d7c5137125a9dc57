"""NTK and NNGP of deep fully-connected networks as power series in the cosine of the inputs.

Murray, Jin, Bowman, Montúfar 2023, "Characterizing the spectrum of the NTK via a power series expansion"
(ICLR 2023, arXiv 2211.07844), Theorem 3.1: for inputs on a sphere the infinite-width NTK is a dot-product
kernel Θ(ρ) = Σ_p κ_p ρ^p with κ_p ≥ 0 converging absolutely on [−1, 1]. This module computes the κ_p in two
conventions:

* `power_series` — the project's (neural-tangents ``stax``, NTK parameterization, docs/theory.md §1.1): ``depth`` hidden
  layers and a linear readout, every Dense layer with weight_var w and bias_var b, first layer
  Σ¹ = w·r²ρ/d + b for inputs of norm r in R^d.
* `murray_power_series` — the paper's: Σ¹ = γ_w²ρ + γ_b² for unit-norm inputs, later layers σ_w², σ_b²
  (Theorem 3.1's recursion puts σ_b² in every layer l ≥ 2, the output layer included — that is what its
  Table 1 and Assumption 2 use).

Both use the *composition form* (the layer maps composed, Σ^{(1)} = γ_w²ρ + γ_b² fed to the first activation) rather than the printed base case of Theorem 3.1, which
evaluates the first hidden layer's dual activation at ρ instead of at the first-layer correlation and is
therefore wrong whenever γ_b ≠ 0 or γ_w² ≠ 1 (an erratum we found by testing against the dense kernel; `murray_theorem_3_1` implements
the printed recursion verbatim so the tests can show both facts). Generalised here to layer variances
q_l ≠ 1: with ψ_l(z) = φ(√q_l z), Hermite coefficients a_{k,l} = μ_k(ψ_l) (`ntkdist.theory.hermite`) and the
dual activation G_l(c) = Σ_k a_{k,l}² c^k (Daniely et al. 2016, Mehler's formula),

    s_1(ρ) = slope·ρ + const,                       Θ_1 = s_1,          q_1 = s_1(1),
    s_{l+1}(ρ) = w·G_l(s_l(ρ)/q_l) + b,             q_{l+1} = s_{l+1}(1) = w·E φ(√q_l Z)² + b,
    Θ_{l+1}(ρ) = s_{l+1}(ρ) + (w/q_l)·G_l'(s_l(ρ)/q_l)·Θ_l(ρ),

where (1/q)·G'(c) = E[φ'(u)φ'(v)] (Price's theorem, equivalently μ_k(ψ') = √(k+1)μ_{k+1}(ψ), Murray's Lemma
under Assumption 3). All series have non-negative coefficients, so every step is a sum of non-negative terms.

The composition is done in truncated series arithmetic: s_l/q_l = c_0 + ũ(ρ) with ũ(0) = 0, G_l is Taylor-
shifted to c_0 (g_j = Σ_k a_k² C(k, j) c_0^{k−j}, summed until a rigorous tail bound is below 1e-18 of the
total), then G_l(c_0 + ũ) = Σ_{j ≤ order} g_j ũ^j exactly to the truncation order (Horner, O(order³)).
For high orders (the sphere eigenvalues of ReLU-type kernels need ~10⁵ coefficients, because those decay only
like p^{−3/2}) the ``"contour"`` method takes the Taylor coefficients by FFT of the same recursion evaluated at
M = 8·(order+1) points of the circle |ρ| = r, r^M = 1e-17 (the kernel is analytic in the open unit disk):
aliasing below 1e-17 of the total, rounding amplified by at most r^{−order} ≤ 133.
The dual activations on the circle are closed forms where known (ABReLU family: arc-cosine kernel of Cho &
Saul 2009; erf: arcsin of Williams 1997; sin, cos) and the Hermite series otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ntkdist.kernels import ABReLU, Cos, Erf, MLP, Sin, get_activation
from ntkdist.kernels.analytic import diagonal_recursion, layer_variances

from .hermite import dual_coefficients, is_exact, second_moment

__all__ = [
    "PowerSeries",
    "power_series",
    "murray_power_series",
    "murray_theorem_3_1",
    "murray_two_layer_coefficients",
    "dual_taylor_shift",
    "layer_composition",
    "LayerComposition",
]

#: Relative size (of the total) below which a neglected tail of an inner sum counts as zero.
_TAIL_TOLERANCE = 1e-18
#: Largest number of Hermite terms used for a dual activation (exact coefficients / quadrature).
_MAX_TERMS_EXACT = 1 << 18
_MAX_TERMS_NUMERIC = 1 << 14
#: The composition form's Taylor shift stops at this many numerical Hermite terms ("auto" then uses the contour).
_MAX_SHIFT_TERMS_NUMERIC = 1 << 12
#: Orders up to this use the composition form by default, above it the contour FFT.
COMPOSITION_MAX_ORDER = 512


@dataclass(frozen=True)
class PowerSeries:
    """A kernel as a power series in the cosine ρ: k(ρ) = Σ_p κ_p ρ^p, κ_p ≥ 0.

    Attributes
    ----------
    coefficients : (order + 1,) float64 array
        κ_p for p = 0..order.
    tail : float
        Σ_{p > order} κ_p = total − Σ coefficients (≥ 0 up to rounding of the total, ~1e-16·total).
    total : float
        Σ_p κ_p = k(1), the kernel on the diagonal, from the closed-form diagonal recursion.
    """

    coefficients: np.ndarray
    tail: float
    total: float

    @property
    def order(self) -> int:
        return self.coefficients.size - 1

    def __call__(self, t):
        """The truncated series Σ_{p ≤ order} κ_p t^p (Horner), elementwise; t real or complex."""
        t = np.asarray(t)
        out = np.zeros(t.shape, dtype=np.result_type(t, np.float64))
        for c in self.coefficients[::-1]:
            out = out * t + c
        return out

    def truncation_bound(self, t):
        """|k(t) − series(t)| ≤ tail·|t|^{order+1} for |t| ≤ 1 (all κ_p ≥ 0)."""
        t = np.abs(np.asarray(t, dtype=float))
        return self.tail * t ** (self.order + 1)

    def cumulative_share(self):
        """Σ_{p ≤ T} κ_p / total for T = 0..order (Murray et al. Table 1 reports this in percent)."""
        return np.cumsum(self.coefficients) / self.total


@dataclass(frozen=True)
class LayerComposition:
    """The kernel of a fully-connected network on inputs of one norm, as a composition of maps of the correlation ρ
    (convention-free): the view of an `ntkdist.kernels.MLP` the power series are computed from.

    First layer s_1(ρ) = first_slope·ρ + first_const; then ``hidden`` activations, each followed by a Dense
    layer with weight variance ``weight_var`` and bias variance ``bias_var`` (the last of them the readout).
    Derived from an MLP (stax convention) by `layer_composition`; `murray_power_series` builds one in Murray
    et al.'s convention instead.
    """

    activation: object
    first_slope: float
    first_const: float
    weight_var: float
    bias_var: float
    hidden: int

    def variances(self) -> list[float]:
        """q_1, ..., q_{hidden+1}: the pre-activation variance of every layer on the diagonal (ρ = 1)."""
        q, _ = layer_variances(self.activation, self.weight_var, self.bias_var, self.hidden,
                               np.float64(self.first_slope + self.first_const))
        return [float(v) for v in q]

    def diagonal(self) -> tuple[float, float]:
        """(NNGP, NTK) at ρ = 1 from the activation's closed-form second moments (as ntkdist.kernels does)."""
        nngp, ntk = diagonal_recursion(self.activation, self.weight_var, self.bias_var, self.hidden,
                                       np.float64(self.first_slope + self.first_const))
        return float(nngp), float(ntk)


def layer_composition(net: MLP, dim: int, radius: float = 1.0) -> LayerComposition:
    """The stax network ``net`` on inputs of norm ``radius`` in R^dim: slope w·r²/d, constant b (docs/theory.md §1.5)."""
    if not isinstance(net, MLP):
        raise TypeError(f"net: expected an ntkdist.kernels.MLP, got {type(net).__name__}")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim: must be an integer ≥ 1 (the input dimension), got {dim!r}")
    radius = float(radius)
    if not math.isfinite(radius) or radius <= 0.0:
        raise ValueError(f"radius: must be a finite number > 0 (the norm of the inputs), got {radius!r}")
    return LayerComposition(net.activation, net.weight_var * radius * radius / int(dim), net.bias_var,
                            net.weight_var, net.bias_var, net.depth)


# --------------------------------------------------------------------------------------------------------------
# Truncated series arithmetic (all operands have non-negative coefficients)
# --------------------------------------------------------------------------------------------------------------

def _mul(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """(a·b) mod z^n by direct convolution (exact signs: no FFT round-off below zero)."""
    return np.convolve(a[:n], b[:n])[:n]


def _compose(g: np.ndarray, u: np.ndarray, n: int) -> np.ndarray:
    """Σ_j g_j u^j mod z^n for u with u[0] = 0 (Horner; the partial sum after g_j only matters mod z^{n−j})."""
    acc = np.array([g[n - 1]]) if n - 1 < g.size else np.zeros(1)
    for j in range(n - 2, -1, -1):
        m = n - j
        nxt = np.zeros(m)
        prod = np.convolve(acc, u[1:m])[: m - 1]  # acc·u shifted: u[0] = 0
        nxt[1:1 + prod.size] = prod
        nxt[0] = g[j] if j < g.size else 0.0
        acc = nxt
    out = np.zeros(n)
    out[: acc.size] = acc
    return out


def dual_taylor_shift(coefficients: np.ndarray, c0: float, count: int) -> np.ndarray:
    """g̃_j = Σ_k A_k C(k, j) c0^{k−j} h^j, h = 1 − c0, j = 0..count−1: G(c0 + h·x) = Σ_j g̃_j x^j.

    The Taylor coefficients of G(c) = Σ_k A_k c^k at c0, scaled to the interval [c0, 1] that the correlation
    sweeps (so Σ_j g̃_j = G(1) and nothing overflows however close c0 is to 1). The weights are the binomial
    probabilities P(Bin(k, h) = j), built by the recursion P_{k+1}(j) = c0·P_k(j) + h·P_k(j−1): every
    operation adds non-negative numbers, so each g̃_j carries a relative error of a few ulps per term.
    """
    A = np.asarray(coefficients, dtype=float)
    out = np.zeros(count)
    if c0 == 0.0:
        m = min(count, A.size)
        out[:m] = A[:m]
        return out
    h = 1.0 - c0
    pmf = np.zeros(count)
    pmf[0] = 1.0
    for a_k in A:
        if a_k != 0.0:
            out += a_k * pmf
        shifted = pmf[:-1] * h
        pmf *= c0
        pmf[1:] += shifted
    return out


def _shift_terms_needed(c0: float, count: int, total: float, tail_of) -> int | None:
    """Smallest K (on a doubling grid) with Σ_{k>K} A_k P(Bin(k, 1−c0) < count) ≤ 1e-18·total.

    P(Bin(k, h) < count) decreases in k, so the neglected part of every g̃_j (j < count) is at most
    T_K·P(Bin(K+1, h) < count), T_K = Σ_{k>K} A_k (from `tail_of`).
    """
    if c0 == 0.0:
        return count
    from scipy.stats import binom

    h = 1.0 - c0
    K = max(2 * count, 64)
    limit = _TAIL_TOLERANCE * total
    while True:
        tail = tail_of(K)
        if tail <= 0.0 or tail * float(binom.cdf(count - 1, K + 1, h)) <= limit:
            return K
        K *= 2
        if K > _MAX_TERMS_EXACT:
            return None


class _TooManyTerms(ValueError):
    """The composition would need more Hermite terms than `_MAX_TERMS_EXACT` (use the contour method)."""


class _Dual:
    """Hermite-side data of one layer: A_k = a_k² to order K on demand, and the closed-form total E φ(u)².

    ``total`` is the activation's own second moment (what the kernels use for the next layer's variance);
    ``norm2`` is the Parseval total the tails of the A_k are measured against: the same closed form for exact
    expansions, and for numerical ones our own quadrature (`hermite.second_moment`, ~1e-16), since a Mehler-
    series activation's second moment is accurate only to its ``tol``.
    """

    def __init__(self, activation, q: float, cap: int | None = None):
        self.activation = activation
        self.q = q
        self.total = float(activation.second_moment(np.float64(q)))
        self.exact = is_exact(activation)
        self.norm2 = self.total if self.exact else second_moment(activation, variance=q)
        self.cap = cap if cap is not None else (_MAX_TERMS_EXACT if self.exact else _MAX_TERMS_NUMERIC)
        self._coef = np.zeros(0)

    def coefficients(self, K: int) -> np.ndarray:
        if self._coef.size < K + 1:
            if K > self.cap:
                raise _TooManyTerms(f"order: the dual activation of {self.activation.describe()} would need {K} "
                                    f"Hermite terms (more than {self.cap}); lower the order or use method='contour'")
            key = _cache_key(self.activation, self.q)
            cached = _COEFFICIENT_CACHE.get(key)
            if cached is not None and cached.size >= K + 1:
                self._coef = cached
            else:
                size = min(max(K, 2 * self._coef.size), self.cap)
                self._coef = dual_coefficients(self.activation, size, variance=self.q)
                if key is not None:
                    if len(_COEFFICIENT_CACHE) >= 64:
                        _COEFFICIENT_CACHE.pop(next(iter(_COEFFICIENT_CACHE)))
                    _COEFFICIENT_CACHE[key] = self._coef
        return self._coef[: K + 1]

    def tail(self, K: int) -> float:
        """An upper estimate of Σ_{k>K} a_k².

        Rigorous: norm2 − Σ_{k≤K} a_k² plus a few ulps of norm2 (clipped at ≥ 0) — but that rounding floor,
        ~1e-16·norm2, is far above the true tail of fast-decaying expansions. When the blocks
        S₁ = Σ_{K<k≤2K} a_k² and S₂ = Σ_{2K<k≤4K} a_k² show decay faster than S₂ ≤ 1e-3·S₁ (analytic
        activations: geometric or e^{−a√k}), or both are at the rounding level of numerical coefficients, the
        tail is taken as S₁ + 2S₂ instead.
        """
        rigorous = max(self.norm2 - math.fsum(self.coefficients(K)), 0.0) + 4e-16 * self.norm2
        if 4 * K <= self.cap:
            A = self.coefficients(4 * K)
            s1, s2 = math.fsum(A[K + 1:2 * K + 1]), math.fsum(A[2 * K + 1:4 * K + 1])
            # (below ~1e-28·norm2 the a_k² of numerical expansions are rounding noise: the tail is at most that)
            if s2 <= 1e-3 * s1 or s1 + s2 <= 1e-28 * self.norm2:
                return min(rigorous, s1 + 2.0 * s2)
        return rigorous


#: Dual coefficients by (activation spec, variance); custom activations are not cached (names can be reused).
_COEFFICIENT_CACHE: dict = {}


def _cache_key(activation, q: float):
    name = activation.describe()
    if name.startswith("custom:"):
        return None
    return (type(activation).__name__, name, float(q))


def _composition(layers: LayerComposition, order: int, kind: str) -> np.ndarray:
    n = order + 1
    w, b = layers.weight_var, layers.bias_var
    s = np.zeros(n)
    s[0] = layers.first_const
    if n > 1:
        s[1] = layers.first_slope
    theta = s.copy()
    q = layers.first_slope + layers.first_const
    for _ in range(layers.hidden):
        dual = _Dual(layers.activation, q, cap=None if is_exact(layers.activation) else _MAX_SHIFT_TERMS_NUMERIC)
        u = s / q
        c0 = float(u[0])
        u[0] = 0.0
        K = _shift_terms_needed(c0, n + 1, max(dual.norm2, 1e-300), dual.tail)
        if K is None:
            raise _TooManyTerms("order: the composition needs too many Hermite terms (a layer's correlation at "
                             "ρ = 0 is too close to 1); use method='contour'")
        h = 1.0 - c0
        if h <= 0.0:
            # The layer's correlation is 1 at ρ = 0, i.e. its kernel is constant in ρ: nothing to compose.
            raise _TooManyTerms("order: a layer's kernel is constant in ρ; use method='contour'")
        A = dual.coefficients(K)
        g = dual_taylor_shift(A, c0, n + 1)  # G(c0 + h·x) = Σ g̃_j x^j
        v = u / h                             # s/q = c0 + h·v, v(0) = 0, v(1) = 1
        G = _compose(g[:n], v, n)
        dG = _compose(g[1:n + 1] * np.arange(1, n + 1) / h, v, n)
        s_next = w * G
        s_next[0] += b
        if kind == "ntk":
            theta = s_next + (w / q) * _mul(dG, theta, n)
        s = s_next
        q = w * dual.total + b
    return theta if kind == "ntk" else s


# --------------------------------------------------------------------------------------------------------------
# Contour method: the same recursion at complex ρ, Taylor coefficients by FFT
# --------------------------------------------------------------------------------------------------------------

def _complex_dual(activation, q: float, c: np.ndarray, c_max: float):
    """(E[φ(u)φ(v)], E[φ'(u)φ'(v)]) at complex correlation c, |c| ≤ c_max < 1, variance q.

    Closed forms: ABReLU φ = αx + β|x| (Cho & Saul 2009 arc-cosine kernel, continued analytically:
    q[α²c + β²(2/π)(√(1−c²) + c·arcsin c)], derivative α² + β²(2/π)arcsin c), erf (Williams 1997:
    (2/π)arcsin(sc), s = 2q/(1+2q)), sin (e^{−q} sinh(qc)), cos (e^{−q} cosh(qc)); else the Hermite series Σ a_k² c^k with enough
    terms that the tail is below 1e-18 of E φ² at |c| = c_max.
    """
    if isinstance(activation, ABReLU):
        alpha2 = (0.5 * (activation.a + activation.b)) ** 2
        beta2 = (0.5 * (activation.b - activation.a)) ** 2
        asin = np.arcsin(c)
        root = np.sqrt(1.0 - c * c)
        G = q * (alpha2 * c + beta2 * (2.0 / math.pi) * (root + c * asin))
        dG = alpha2 + beta2 * (2.0 / math.pi) * asin
        return G, dG
    if isinstance(activation, Erf):
        s = 2.0 * q / (1.0 + 2.0 * q)
        G = (2.0 / math.pi) * np.arcsin(s * c)
        dG = (2.0 / math.pi) * s / np.sqrt(1.0 - (s * c) ** 2) / q
        return G, dG
    if isinstance(activation, Sin):
        return math.exp(-q) * np.sinh(q * c), math.exp(-q) * np.cosh(q * c)
    if isinstance(activation, Cos):
        return math.exp(-q) * np.cosh(q * c), math.exp(-q) * np.sinh(q * c)
    dual = _Dual(activation, q)
    K = 64
    while True:
        tail = dual.tail(K)
        if tail * c_max ** K <= _TAIL_TOLERANCE * max(dual.norm2, 1e-300) or tail <= 4e-16 * dual.norm2 * 1.0001:
            break
        K *= 2
        if K > _MAX_TERMS_NUMERIC:
            raise ValueError(f"order: the Hermite series of {activation.describe()} converges too slowly near |c| = 1 "
                             "for the contour method at this order; lower the order")
    A = dual.coefficients(K)
    G = np.zeros_like(c)
    dG = np.zeros_like(c)
    k = np.arange(A.size, dtype=float)
    for j in range(A.size - 1, -1, -1):
        G = G * c + A[j]
    for j in range(A.size - 1, 0, -1):
        dG = dG * c + k[j] * A[j]
    return G, dG / q


def _kernel_at(layers: LayerComposition, z: np.ndarray, kind: str, c_max_of=None):
    """The recursion of the module docstring evaluated at (complex) ρ = z."""
    w, b = layers.weight_var, layers.bias_var
    s = layers.first_slope * z + layers.first_const
    theta = s
    q = layers.first_slope + layers.first_const
    for _ in range(layers.hidden):
        c = s / q
        c_max = float(np.max(np.abs(c)))
        G, dE = _complex_dual(layers.activation, q, c, min(c_max, 1.0))
        s_next = w * G + b
        if kind == "ntk":
            theta = s_next + w * dE * theta
        s = s_next
        q = w * float(layers.activation.second_moment(np.float64(q))) + b
    return theta if kind == "ntk" else s


def _contour(layers: LayerComposition, order: int, kind: str, oversampling: int = 8) -> np.ndarray:
    n = order + 1
    M = 1 << max(int(math.ceil(math.log2(oversampling * n))), 4)
    log_r = math.log(1e-17) / M  # r^M = 1e-17: aliasing c_{p+M} r^M below 1e-17 of the total
    r = math.exp(log_r)
    angle = 2.0 * math.pi * np.arange(M) / M
    z = r * np.exp(1j * angle)
    values = _kernel_at(layers, z, kind)
    coef = np.fft.fft(values)[:n].real / M
    p = np.arange(n, dtype=float)
    # κ_p ≥ 0 (Theorem 3.1); the FFT leaves noise of ~1e-15·total on coefficients that are below that.
    return np.maximum(coef * np.exp(-p * log_r), 0.0)


def _power_series_of_layers(layers: LayerComposition, order: int, kind: str, method: str) -> PowerSeries:
    """Θ (or Σ) of ``layers`` as a series in ρ to ``order``, by composition or contour, with its exact tail."""
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 0:
        raise ValueError(f"order: must be an integer ≥ 0, got {order!r}")
    if kind not in ("ntk", "nngp"):
        raise ValueError(f"kind: must be 'ntk' or 'nngp', got {kind!r}")
    if method not in ("auto", "composition", "contour"):
        raise ValueError(f"method: must be 'auto', 'composition' or 'contour', got {method!r}")
    coefficients = None
    if method == "composition" or (method == "auto" and order <= COMPOSITION_MAX_ORDER):
        try:
            coefficients = _composition(layers, int(order), kind)
        except _TooManyTerms:
            if method == "composition":
                raise
            # "auto": correlations at ρ = 0 too close to 1 for the Taylor shift; the contour has no such limit.
    if coefficients is None:
        coefficients = _contour(layers, int(order), kind)
    nngp_total, ntk_total = layers.diagonal()
    total = ntk_total if kind == "ntk" else nngp_total
    tail = total - math.fsum(coefficients)
    return PowerSeries(coefficients=coefficients, tail=float(tail), total=float(total))


def power_series(net: MLP, order: int, *, dim: int, kind: str = "ntk", radius: float = 1.0,
                 method: str = "auto") -> PowerSeries:
    """Θ(x, y) (or the NNGP) of ``net`` for ‖x‖ = ‖y‖ = radius in R^dim as a series in ρ = ⟨x,y⟩/(‖x‖‖y‖).

    Project convention (docs/theory.md §1.1, §3.2; neural-tangents ``stax``, NTK parameterization): ``net.depth`` hidden layers
    and a linear readout, Σ¹ = w·radius²·ρ/dim + b, every later layer w·E[φφ] + b. Murray et al. 2023
    (arXiv 2211.07844) Theorem 3.1 in the composition form (the printed base case is wrong
    with bias), generalised to layer variances q_l ≠ 1 through the Hermite coefficients of φ(√q_l ·); see the
    module docstring.

    Parameters
    ----------
    net : MLP
    order : int
        Highest power kept.
    dim : int
        Input dimension d (enters through the first layer's w/d).
    kind : {"ntk", "nngp"}
    radius : float
        Norm of the inputs.
    method : {"auto", "composition", "contour"}
        ``"composition"``: truncated series arithmetic, O(depth·order³), every coefficient a sum of
        non-negative terms (≥ 0 exactly). ``"contour"``: FFT of the same recursion on a circle |ρ| = r < 1,
        O(order·log order) (absolute error ~1e-15·total per coefficient; clipped at 0). ``"auto"``: composition up to order
        512, contour above.

    Returns
    -------
    PowerSeries with ``total`` = Θ(x, x) (or Σ(x, x)) from the closed-form diagonal recursion and the exact
    ``tail`` = total − Σ coefficients.
    """
    return _power_series_of_layers(layer_composition(net, dim, radius), order, kind, method)


def murray_power_series(activation, order: int, *, layers: int = 2, gamma_w2: float = 1.0, gamma_b2: float = 0.0,
                        sigma_w2: float = 2.0, sigma_b2: float = 0.0, method: str = "auto") -> PowerSeries:
    """κ_{p,l} of Murray et al. 2023 (arXiv 2211.07844), Theorem 3.1, in the paper's convention.

    Paper convention (Murray et al. 2023, §2–3): unit-norm inputs, Σ^{(1)} = γ_w²ρ + γ_b², layers 2..l with
    Σ^{(h)} = σ_w² E[φφ] + σ_b² and Θ^{(h)} = Σ^{(h)} + Θ^{(h−1)}Σ̇^{(h)}; ``layers`` = l is the paper's layer
    index (l = 2 is the two-layer network of eq. (4) and Table 1, l = L + 1 for L hidden layers). σ_b² enters
    every layer l ≥ 2 including the output, as in Theorem 3.1's α_{p,2} = σ_w²μ_p² + δ_{p0}σ_b² (the text's
    network definition omits the output bias, its theorem and Table 1 include it). Nothing requires the unit-
    variance Assumption 2: variances ≠ 1 go through the Hermite coefficients of φ(√q ·).
    Returns the coefficients of n·K_l = Σ_p κ_{p,l}(XX^T)^{⊙p} (the paper's Gram K_l carries a 1/n).
    Computed by the composition form (see the module docstring's erratum), exact for every γ_b; compare
    `murray_theorem_3_1`, the printed recursion, which is right only for γ_b = 0, γ_w² = 1.
    """
    if isinstance(layers, bool) or not isinstance(layers, (int, np.integer)) or layers < 1:
        raise ValueError(f"layers: must be an integer ≥ 1 (Murray's l; 2 = one hidden layer), got {layers!r}")
    for name, value in (("gamma_w2", gamma_w2), ("gamma_b2", gamma_b2), ("sigma_w2", sigma_w2), ("sigma_b2", sigma_b2)):
        if not math.isfinite(float(value)) or float(value) < 0.0:
            raise ValueError(f"{name}: must be a finite number ≥ 0, got {value!r}")
    if float(gamma_w2) <= 0.0 or float(sigma_w2) <= 0.0:
        raise ValueError("gamma_w2, sigma_w2: must be > 0")
    spec = LayerComposition(get_activation(activation), float(gamma_w2), float(gamma_b2), float(sigma_w2),
                         float(sigma_b2), int(layers) - 1)
    return _power_series_of_layers(spec, order, "ntk", method)


def _power_conv(a: np.ndarray, k: int, n: int) -> np.ndarray:
    """F(·, k, a) of Theorem 3.1: the coefficients of (Σ_j a_j z^j)^k mod z^n."""
    out = np.zeros(n)
    out[0] = 1.0
    for _ in range(k):
        out = _mul(out, a, n)
    return out


def murray_theorem_3_1(activation, order: int, *, layers: int = 2, gamma_w2: float = 1.0, gamma_b2: float = 0.0,
                       sigma_w2: float = 2.0, sigma_b2: float = 0.0, hermite_terms: int | None = None) -> np.ndarray:
    """Theorem 3.1 of Murray et al. 2023 (arXiv 2211.07844) exactly as printed, for reference and tests.

    κ_{p,1} = δ_{p0}γ_b² + δ_{p1}γ_w²; κ_{p,l} = α_{p,l} + Σ_q κ_{q,l−1}υ_{p−q,l}; α_{p,2} = σ_w²μ_p² + δ_{p0}σ_b²,
    υ_{p,2} = σ_w²μ_p(φ')² = (p+1)·σ_w²μ_{p+1}² (a second typo of the paper fixed), and for l ≥ 3
    α_{p,l} = Σ_k α_{k,2}F(p, k, ᾱ_{l−1}), υ_{p,l} = Σ_k υ_{k,2}F(p, k, ᾱ_{l−1}), with μ_k of φ at unit variance.
    The inner sums over k run to ``hermite_terms`` (default 10·order + 256), exact when α_{0,l−1} = 0.

    **Erratum**: the base case uses the input correlation ρ where the first hidden layer
    sees γ_w²ρ + γ_b²; the recursion is the true NTK only for γ_b = 0, γ_w² = 1 (and variances 1). Use
    `murray_power_series` for anything else.
    """
    act = get_activation(activation)
    n = order + 1
    K = hermite_terms if hermite_terms is not None else 10 * order + 256
    A = dual_coefficients(act, K + 1, variance=1.0)
    alpha2 = sigma_w2 * A[:K + 1].copy()
    alpha2[0] += sigma_b2
    upsilon2 = sigma_w2 * A[1:K + 2] * np.arange(1, K + 2)
    kappa = np.zeros(n)
    kappa[0] = gamma_b2
    if n > 1:
        kappa[1] = gamma_w2
    alpha_prev = None
    for l in range(2, layers + 1):
        if l == 2:
            alpha, upsilon = alpha2[:n].copy(), upsilon2[:n].copy()
            if alpha.size < n:
                alpha = np.pad(alpha, (0, n - alpha.size))
                upsilon = np.pad(upsilon, (0, n - upsilon.size))
        else:
            alpha = np.zeros(n)
            upsilon = np.zeros(n)
            power = np.zeros(n)
            power[0] = 1.0
            for k in range(K + 1):
                alpha += alpha2[k] * power
                upsilon += upsilon2[k] * power
                power = _mul(power, alpha_prev, n)
        kappa = alpha + _mul(kappa, upsilon, n)
        alpha_prev = alpha
    return kappa


def murray_two_layer_coefficients(activation, order: int, *, gamma_w2: float = 1.0, gamma_b2: float = 0.0,
                                  sigma_w2: float = 2.0, sigma_b2: float = 0.0) -> np.ndarray:
    """Murray et al. 2023 (arXiv 2211.07844) eq. (4) as printed: the two-layer κ_{p,2}, paper convention.

    κ_{p,2} = σ_w²(1 + γ_w²p)μ_p² + σ_w²γ_b²(1 + p)μ_{p+1}² + δ_{p0}σ_b². It inherits Theorem 3.1's base case,
    so it is the NTK only for γ_b = 0, γ_w² = 1 (see the module docstring's erratum); `murray_power_series` is exact.
    """
    A = dual_coefficients(get_activation(activation), order + 1, variance=1.0)
    p = np.arange(order + 1, dtype=float)
    out = sigma_w2 * (1.0 + gamma_w2 * p) * A[:order + 1] + sigma_w2 * gamma_b2 * (1.0 + p) * A[1:order + 2]
    out[0] += sigma_b2
    return out
