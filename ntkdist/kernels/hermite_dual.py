"""Dual activations without a closed form: the Mehler (Hermite) series with adaptive truncation and quadrature, and
a graded conditional quadrature where the series would need too many terms (large variances).

For (u, v) ~ N(0, [[q_x, ρ√(q_x q_y)], [ρ√(q_x q_y), q_y]]) and normalised probabilists' Hermite functions
h_n = He_n/√(n!), Mehler's formula gives (Daniely, Frostig & Singer 2016, §6.4)

    E[φ(u)φ(v)]   = Σ_n a_n(q_x) a_n(q_y) ρⁿ,        a_n(q) = E[φ(√q Z) h_n(Z)],  Z ~ N(0, 1),
    E[φ'(u)φ'(v)] = Σ_n b_n(q_x) b_n(q_y) ρⁿ,        b_n(q) = E[φ'(√q Z) h_n(Z)] = √((n + 1)/q)·a_{n+1}(q).

The last identity is Gaussian integration by parts (Stein's lemma: μ_n(φ') = √(n+1)·μ_{n+1}(φ) at q = 1); it
holds for absolutely continuous φ. The coefficients are per-row quantities: a tile of n × m pairs needs them for
n + m variances only, and the per-pair work is a Horner evaluation in ρ² of the even and the odd part,

    Σ_n a_n a_n' ρⁿ = Σ_j a_{2j} a'_{2j} (ρ²)ʲ + ρ·Σ_j a_{2j+1} a'_{2j+1} (ρ²)ʲ,

so an odd or even φ (tanh, its derivative sech²) costs half the terms of a generic one.

Accuracy. ``tol`` bounds the error of E[φφ] relative to √(E φ(u)² E φ(v)²) and of E[φ'φ'] relative to
√(E φ'(u)² E φ'(v)²), at every ρ ∈ [−1, 1] (the normwise criterion: an entry that is small only because of
cancellation is accurate relative to its Cauchy–Schwarz scale). Two errors make it up:

* truncation: each parity of each row is cut where the squared tail Σ_{n>N} a_n² ≤ (tol/4)·Σ a_n²; by
  Cauchy–Schwarz the series error of a pair is then ≤ (tol/2)·√(E_x E_y) at |ρ| ≤ 1;
* quadrature: a_n(q) = Σ_i w_i φ(√q z_i) h_n(z_i) with an M-point Gauss–Hermite rule aliases coefficients of
  index ≥ 2M − n onto a_n; M is chosen (≈ 2N) so that ‖δa‖ ≤ (tol/8)·√Σ a_n², and the same for b.

Both are calibrated per *level*, not per row: level j holds the variances q ∈ (2^{(j−1)/2}, 2^{j/2}]. For each
level the truncation lengths and M come from reference coefficients (an M_ref ≥ 2M-point rule) at both ends
and the middle of the interval, with a 10% margin (this assumes the needs vary monotonically inside a level,
true for the activations here; the margin covers mild exceptions). Calibration runs once per level and
activation object (milliseconds at q ≲ 1, about 2 s for the highest levels), lazily, under a lock.

Determinism. A pair (x, y) is evaluated at level max(ℓ(q_x), ℓ(q_y)) with both rows' coefficients computed at
that level, from fixed-shape GEMM calls; every evaluation path (outer product, shared scalar coefficients,
flat pairs, the diagonal) performs the same floating-point operations per entry, s ← s·t + fl(x_k·y_k). A
pair's value therefore depends only on (q_x, q_y, ρ), never on the other rows of its tile: a Gram matrix
assembled from blocks of any size equals the whole one bit for bit (`ntkdist.kernels.gram`), and the second
moment of a row equals its pair with itself, so a point's parallel gap with itself is exactly 0.

Variances are rounded to ⌈log2(64/tol)⌉ significant bits first (relative change ≤ tol/64, far below the
kernel's tolerance): points of equal norm then share one set of coefficients (their q differ only by
rounding), and their tiles take the scalar-coefficient Horner, 3–4× faster than the outer-product form.

The quadrature rules are in `ntkdist.kernels.gauss_hermite`, the Horner evaluation of the sums in
`ntkdist.kernels.mehler_sums`.

Cost and range. Terms grow with q as the singularities of φ(√q z) approach the real axis (tanh: poles at
±iπ/(2√q)): at tol = 1e-10 tanh keeps ≈ 100 coefficients at q = 1 and ≈ 950 at q = 10. One core evaluates
≈ 8 M pairs/s per layer for tanh at q ≈ 1 and ≈ 1.2 M/s at q ≈ 10 (rows of distinct norms; 2–3× more for
equal norms).

Large variances. A level above ``_SERIES_MAX_LEVEL`` (q > 128), or one whose calibration would need more than
``_MAX_NODES`` Gauss–Hermite nodes (at tol = 1e-10: tanh q > 16, sigmoid q > 64), is served by the conditional
quadrature of `ntkdist.kernels.kink_quadrature` instead: E_{Z₁}[φ(√q_x Z₁)·E[φ(ρ√q_y Z₁ + sZ₂)]] with Gauss–Legendre
panels graded towards the kink at the scale 1/√q. It holds 1e-15 normwise (far inside any tol) from q = 16 to
1e4 and beyond, at every ρ including ±1, and never refuses; it costs ≈ 7–15 ms a pair on one core (≈ 1000× the
series at q ≈ 10), so it is the fallback, not the rule. Which rule a pair takes depends only on its level (a
calibration's outcome depends only on the level and the activation), and the quadrature's shapes only on the
level, so the determinism promise above holds for both: a pair's value depends only on (q_x, q_y, ρ), and a
point's moments are its pair with itself at ρ = 1 by the same rule. The tile and flat paths call the same
function on the same (q_x, q_y, ρ).

The mathematics, with its conventions, errata and tests: docs/theory.md §2.2 and §2.6.
"""

from __future__ import annotations

import math
import threading
from typing import NamedTuple

import numpy as np

from ._xp import array_module, to_numpy
from .gauss_hermite import gauss_hermite_rule, weighted_hermite_columns
from .kink_quadrature import conditional_pairs
from .variance_keys import checked_variances, content_key, quantize_variances, sorted_union
from .mehler_sums import diagonal_moments, evaluate_outer, horner_pairs

#: Gauss–Hermite orders a level may use (even: the nodes pair up as ±z, no node at 0).
_LADDER = (16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024,
           1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096)
_MAX_NODES = _LADDER[-1]
#: The largest reference rule used in calibration.
_MAX_REFERENCE = 2 * _MAX_NODES
#: Levels: j covers (2^{(j−1)/2}, 2^{j/2}]; the lowest also covers [0, 2^{_J_MIN/2}].
_J_MIN = -60
#: The highest level the series is tried at (q ≤ 2^7 = 128). Above it, and at any level whose calibration needs
#: more than _MAX_NODES nodes, pairs take the conditional quadrature of `ntkdist.kernels.kink_quadrature`. A fixed
#: bound, not "the first level that fails", so that a level's rule depends on that level alone (determinism) and
#: no time is spent calibrating levels the series cannot serve.
_SERIES_MAX_LEVEL = 14
#: Rows with q ≤ 2^-10 take b_n from φ' itself: the identity divides by √q, which would amplify the rounding of
#: φ(√q z) ≈ φ(0) by ~1/√q.
_Q_DIRECT = 2.0 ** -10
#: Rows per GEMM call when computing coefficients (fixed, so a row's coefficients do not depend on its batch).
_ROWS = 32
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
#: Bytes of per-side coefficient rows kept between calls.
_CACHE_BYTES = 64 * 2 ** 20


def _fold(values_plus, values_minus):
    """Even and odd parts on the positive nodes: a_{2j} uses φ(z) + φ(−z), a_{2j+1} uses φ(z) − φ(−z)."""
    return values_plus + values_minus, values_plus - values_minus


# --------------------------------------------------------------------------------------------------------------
# Calibration records
# --------------------------------------------------------------------------------------------------------------

class Counts(NamedTuple):
    """Numbers of kept coefficients of each parity: a at even indices, a at odd, b at even, b at odd."""

    a_even: int
    a_odd: int
    b_even: int
    b_odd: int

    def merge(self, other):
        return Counts(*(max(p, q) for p, q in zip(self, other)))

    def padded(self):
        """10% and two terms more (zero counts stay zero: an exactly vanishing parity)."""
        return Counts(*(0 if n == 0 else n + max(2, -(-n // 10)) for n in self))


class Level(NamedTuple):
    """How the rows of one variance interval are computed: the quadrature order and the kept coefficients."""

    order: int
    counts: Counts


def _needed(coefficients, total, budget):
    """Smallest n with Σ_{k ≥ n} c_k² ≤ budget·total (c given in order)."""
    if coefficients.size == 0:
        return 0
    tail = np.cumsum((coefficients * coefficients)[::-1])[::-1]
    ok = np.nonzero(tail <= budget * total)[0]
    return int(ok[0]) if ok.size else coefficients.size


def _columns_for(counts: Counts, direct: bool):
    """Columns of the even and odd weighted-Hermite tables a level needs."""
    if direct:
        return max(counts.a_even, counts.b_even), max(counts.a_odd, counts.b_odd)
    # b_{2j} = √((2j+1)/q)·a_{2j+1} and b_{2j+1} = √((2j+2)/q)·a_{2j+2}.
    return max(counts.a_even, counts.b_odd + 1 if counts.b_odd else 0), max(counts.a_odd, counts.b_even)


# --------------------------------------------------------------------------------------------------------------
# The dual of one activation
# --------------------------------------------------------------------------------------------------------------

class MehlerDual:
    """E[φ(u)φ(v)], E[φ'(u)φ'(v)] and the second moments of one activation by the Mehler series.

    Parameters
    ----------
    fn : callable
        φ, elementwise on arrays of the module it is given (NumPy or CuPy).
    derivative : callable
        φ', used for the coefficients b_n at small variances (q ≤ 2^-10) only; elsewhere b_n come from the
        identity b_n = √((n+1)/q)·a_{n+1}.
    tol : float
        Normwise relative accuracy (module docstring).
    name : str
        For error messages.
    """

    def __init__(self, fn, derivative, tol: float, name: str):
        self.fn, self.derivative, self.tol, self.name = fn, derivative, float(tol), name
        self._references = {}
        self._levels = {}
        self._tables = {}
        self._moment_cache = {}
        self._coefficient_cache = {}
        self._bits = min(52, max(20, math.ceil(math.log2(64.0 / self.tol))))
        # `gram_block` runs tiles on threads: calibration and the caches are shared, so they take this lock.
        self._lock = threading.RLock()

    def __getstate__(self):
        # Calibration and tables are caches (tens of MiB at high levels): rebuilt where the object lands.
        state = self.__dict__.copy()
        for cache in ("_references", "_levels", "_tables", "_moment_cache", "_coefficient_cache"):
            state[cache] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # ---- levels -----------------------------------------------------------------------------------------------

    @staticmethod
    def level_index(q):
        """Level j of each variance (host NumPy): q ∈ (2^{(j−1)/2}, 2^{j/2}], clamped below at _J_MIN."""
        q = np.asarray(q, dtype=np.float64)
        mantissa, exponent = np.frexp(q)
        j = np.where(mantissa == 0.5, 2 * exponent - 2, np.where(mantissa <= _INV_SQRT2, 2 * exponent - 1,
                                                                   2 * exponent))
        return np.maximum(np.where(q > 0, j, _J_MIN), _J_MIN).astype(np.int64)

    @staticmethod
    def _interval(j):
        hi = 2.0 ** (j / 2.0)
        lo = 0.0 if j == _J_MIN else 2.0 ** ((j - 1) / 2.0)
        mid = hi * 2.0 ** -0.25 if lo > 0 else hi * 0.5
        return lo, mid, hi

    def level(self, j: int) -> Level | None:
        """The calibrated level j (computed once per activation object), or None where the series does not serve
        it (above _SERIES_MAX_LEVEL, or more than _MAX_NODES nodes needed): those pairs take the quadrature."""
        j = int(j)
        if j > _SERIES_MAX_LEVEL:
            return None
        if j not in self._levels:
            with self._lock:
                if j not in self._levels:
                    try:
                        self._levels[j] = self._calibrate(j)
                    except _SeriesTooLong:
                        self._levels[j] = None
        return self._levels[j]

    def _quadrature(self, j, qx, qy, rho):
        """(E[φφ], E[φ'φ']) of host pairs at a level the series does not serve (`kink_quadrature`)."""
        return conditional_pairs(self.fn, self.derivative, qx, qy, rho, 2.0 ** (j / 2.0))

    def _too_large(self, q, detail):
        return _SeriesTooLong(f"activation: {self.name} at q = {q:.4g} needs {detail} for tol = {self.tol:g}")

    # ---- coefficients -----------------------------------------------------------------------------------------

    def _node_values(self, q, z, xp, fn):
        """fn(±√q z) folded into even and odd parts, (rows, nodes)."""
        x = xp.sqrt(q)[:, None] * z[None, :]
        return _fold(fn(x), fn(-x))

    def _reference(self, q: float, order: int):
        """All coefficients a_n, b_n (n < order) of one variance from the ``order``-point rule (host, cached)."""
        key = (q, order)
        ref = self._references.get(key)
        if ref is not None:
            return ref
        z, _ = gauss_hermite_rule(order)
        qa = np.array([q])
        fe, fo = self._node_values(qa, z, np, self.fn)
        direct = q <= _Q_DIRECT
        if direct:
            ge, go = self._node_values(qa, z, np, self.derivative)
            rows_e, rows_o = np.concatenate([fe, ge]), np.concatenate([fo, go])
        else:
            rows_e, rows_o = fe, fo
        count = order // 2  # coefficients of higher index are not resolved by this rule anyway
        coef = np.zeros((rows_e.shape[0], count))

        def block(first, columns):
            even = columns[:, (first % 2)::2]
            odd = columns[:, 1 - (first % 2)::2]
            k_even = np.arange(first + (first % 2), first + columns.shape[1], 2)
            k_odd = np.arange(first + 1 - (first % 2), first + columns.shape[1], 2)
            coef[:, k_even] = rows_e @ even
            coef[:, k_odd] = rows_o @ odd

        weighted_hermite_columns(order, count, block=block)
        a = coef[0]
        if direct:
            b = coef[1]
        else:
            n = np.arange(count - 1)
            b = np.sqrt((n + 1) / q) * a[1:]
        ref = (a, b)
        self._references[key] = ref
        return ref

    def _resolved_reference(self, q: float, at_least: int = 64):
        """A reference rule large enough that the needed coefficients are a third of its order or fewer."""
        order = max(64, at_least)
        while True:
            a, b = self._reference(q, order)
            counts = self._needs(a, b)
            top = 2 * max(counts) + 2
            if 3 * top <= order:
                return order, a, b, counts
            if order >= _MAX_REFERENCE:
                raise self._too_large(q, f"more than {_MAX_NODES} Gauss–Hermite nodes")
            order = min(2 * order, _MAX_REFERENCE)

    def _needs(self, a, b):
        budget = self.tol / 4.0
        ea, eb = float(a @ a), float(b @ b)
        return Counts(_needed(a[0::2], ea, budget), _needed(a[1::2], ea, budget),
                      _needed(b[0::2], eb, budget), _needed(b[1::2], eb, budget))

    def _calibrate(self, j: int) -> Level:
        points = list(self._interval(j))
        refs = [self._resolved_reference(q) for q in points]
        counts = refs[0][3]
        for r in refs[1:]:
            counts = counts.merge(r[3])
        counts = counts.padded()
        even_cols, odd_cols = _columns_for(counts, direct=False)
        top = max(2 * even_cols - 2, 2 * odd_cols - 1, 1)  # highest Hermite index used
        budget = self.tol / 8.0
        for order in _LADDER:
            if 4 * order < 5 * (top + 1):  # aliasing needs about 2 nodes per index (measured 1.75–2.5): skip
                continue
            ok = True
            for q, (ref_order, _, _, _) in zip(points, refs):
                if ref_order < 2 * order:
                    ref_order = 2 * order
                a_ref, b_ref = self._reference(q, ref_order)
                level = Level(order, counts)
                ae, ao, be, bo = (to_numpy(t)[0] for t in self._coefficients(np.array([q]), level, np))
                errors_a = np.concatenate([ae - a_ref[0::2][:ae.size], ao - a_ref[1::2][:ao.size]])
                errors_b = np.concatenate([be - b_ref[0::2][:be.size], bo - b_ref[1::2][:bo.size]])
                scale_a, scale_b = math.sqrt(float(a_ref @ a_ref)), math.sqrt(float(b_ref @ b_ref))
                if (np.linalg.norm(errors_a) > budget * scale_a or np.linalg.norm(errors_b) > budget * scale_b):
                    ok = False
                    break
            if ok:
                return Level(order, counts)
        raise self._too_large(points[-1], f"more than {_MAX_NODES} Gauss–Hermite nodes")

    def _table(self, order: int, even_columns: int, odd_columns: int, xp):
        """(even, odd) weighted-Hermite tables of the ``order``-point rule on the device of ``xp``."""
        key = (order, xp.__name__)
        need = max(2 * even_columns, 2 * odd_columns)
        with self._lock:
            cached = self._tables.get(key)
            if cached is None or cached[0] < need:
                host = weighted_hermite_columns(order, need)
                even, odd = np.ascontiguousarray(host[:, 0::2]), np.ascontiguousarray(host[:, 1::2])
                cached = (need, xp.asarray(even), xp.asarray(odd))
                self._tables[key] = cached
        _, even, odd = cached
        return even[:, :even_columns], odd[:, :odd_columns]

    def _coefficients(self, q, level: Level, xp):
        """Coefficient rows of the variances ``q`` (host 1-D array) at ``level``, on ``xp``.

        Returns (a_even, a_odd, b_even, b_odd), each (len(q), count) with the level's counts. Rows with
        q ≤ 2^-10 take b_n from φ' itself, the others from b_n = √((n+1)/q)·a_{n+1} (the choice depends on the
        row's q only, as does everything else about the row).
        """
        counts = level.counts
        small = q <= _Q_DIRECT
        if small.all() or not small.any():
            return self._coefficients_by(q, level, bool(small.all()), xp)
        out = [xp.empty((q.size, n)) for n in counts]
        for mask, direct in ((small, True), (~small, False)):
            idx = np.nonzero(mask)[0]
            for dest, part in zip(out, self._coefficients_by(q[idx], level, direct, xp)):
                dest[xp.asarray(idx)] = part
        return tuple(out)

    def _coefficients_by(self, q, level: Level, direct: bool, xp):
        counts = level.counts
        even_columns, odd_columns = _columns_for(counts, direct)
        z = xp.asarray(gauss_hermite_rule(level.order)[0])
        t_even, t_odd = self._table(level.order, even_columns, odd_columns, xp)
        rows = q.size
        padded = -(-rows // _ROWS) * _ROWS
        q_dev = xp.zeros(padded)
        q_dev[:rows] = xp.asarray(q)
        even_parts, odd_parts = [], []
        for start in range(0, padded, _ROWS):
            qc = q_dev[start:start + _ROWS]
            fe, fo = self._node_values(qc, z, xp, self.fn)
            if direct:
                ge, go = self._node_values(qc, z, xp, self.derivative)
                fe, fo = xp.concatenate([fe, ge]), xp.concatenate([fo, go])
            # Fixed shapes (_ROWS or 2·_ROWS rows): a row's coefficients do not depend on the rows beside it.
            even_parts.append(fe @ t_even)
            odd_parts.append(fo @ t_odd)
        if direct:
            a_even = xp.concatenate([p[:_ROWS] for p in even_parts])[:rows]
            a_odd = xp.concatenate([p[:_ROWS] for p in odd_parts])[:rows]
            b_even = xp.concatenate([p[_ROWS:] for p in even_parts])[:rows]
            b_odd = xp.concatenate([p[_ROWS:] for p in odd_parts])[:rows]
            return (a_even[:, :counts.a_even], a_odd[:, :counts.a_odd],
                    b_even[:, :counts.b_even], b_odd[:, :counts.b_odd])
        ce = xp.concatenate(even_parts)[:rows]
        co = xp.concatenate(odd_parts)[:rows]
        inv_root_q = 1.0 / xp.sqrt(xp.asarray(q))[:, None]  # q > 2^-10 here
        k_even = xp.asarray(np.sqrt(np.arange(counts.b_even) * 2.0 + 1.0))  # b_{2j} = √(2j+1)·a_{2j+1}/√q
        k_odd = xp.asarray(np.sqrt(np.arange(counts.b_odd) * 2.0 + 2.0))  # b_{2j+1} = √(2j+2)·a_{2j+2}/√q
        b_even = co[:, :counts.b_even] * k_even[None, :] * inv_root_q
        b_odd = ce[:, 1:counts.b_odd + 1] * k_odd[None, :] * inv_root_q
        return ce[:, :counts.a_even], co[:, :counts.a_odd], b_even, b_odd

    # ---- series -----------------------------------------------------------------------------------------------

    def moments(self, q):
        """(E φ(u)², E φ'(u)²) for u ~ N(0, q), elementwise.

        The series at ρ = 1, with the arithmetic of a pair of identical rows, so that a point's Cauchy–Schwarz gap
        with itself is exactly 0.
        """
        xp = array_module(q)
        q = xp.asarray(q, dtype=xp.float64)
        key = content_key(q)
        with self._lock:
            hit = self._moment_cache.get(key)
        if hit is not None:
            return tuple(m.copy() for m in hit)
        (unique,), (inverse,), (levels,) = self._prepare(xp, q.reshape(-1))
        second = xp.empty(unique.size)
        derivative = xp.empty(unique.size)
        for j in np.unique(levels):
            pick = np.nonzero(levels == j)[0]
            idx = xp.asarray(pick)
            second[idx], derivative[idx] = self._diagonal(xp, j, unique[pick])
        inv = xp.asarray(inverse)
        result = (second[inv].reshape(q.shape), derivative[inv].reshape(q.shape))
        self._remember(key, result)
        return result

    def _diagonal(self, xp, j, values):
        """(E φ², E φ'²) of the sorted unique host ``values`` at level j: the pair arithmetic at ρ = 1."""
        if self.level(j) is None:
            return tuple(xp.asarray(m) for m in self._quadrature(j, values, values, np.ones(values.size)))
        coef = self._level_coefficients(xp, j, values)
        return diagonal_moments(xp, coef, xp.arange(values.size))

    def _remember(self, key, value):
        # The recursion asks for the second moments of the variances it has just passed to `pair`: keep a few
        # (a few per thread of the tile loop).
        with self._lock:
            self._moment_cache[key] = value
            while len(self._moment_cache) > 64:
                self._moment_cache.pop(next(iter(self._moment_cache)))

    def pair(self, qx, qy, c):
        """(E[φ(u)φ(v)], E[φ'(u)φ'(v)]) for variances qx, qy and correlation c (broadcast)."""
        xp = array_module(qx, qy, c)
        qx = xp.asarray(qx, dtype=xp.float64)
        qy = xp.asarray(qy, dtype=xp.float64)
        c = xp.asarray(c, dtype=xp.float64)
        if (qx.ndim == 2 and qy.ndim == 2 and c.ndim == 2 and qx.shape[1] == 1 and qy.shape[0] == 1
                and c.shape == (qx.shape[0], qy.shape[1])):
            cov, dcov, mx, my = self._pair_outer(xp, qx[:, 0], qy[0, :], c)
            self._remember(content_key(qx), tuple(m[:, None] for m in mx))
            self._remember(content_key(qy), tuple(m[None, :] for m in my))
            return cov, dcov
        shape = np.broadcast_shapes(qx.shape, qy.shape, c.shape)
        qx, qy, c = (xp.broadcast_to(a, shape).reshape(-1) for a in (qx, qy, c))
        cov, dcov = self._pair_flat(xp, qx, qy, c)
        return cov.reshape(shape), dcov.reshape(shape)

    def _prepare(self, xp, *sides):
        """Unique (quantised) variances of each side on the host, the inverse maps and the levels."""
        uniques, inverses, levels = [], [], []
        for side in sides:
            host = quantize_variances(to_numpy(checked_variances(xp, side, self.name)), self._bits)
            u, inv = np.unique(host, return_inverse=True)
            uniques.append(u)
            inverses.append(inv.reshape(-1))
            levels.append(self.level_index(u))
        return uniques, inverses, levels

    def _level_coefficients(self, xp, j, values):
        """Coefficient rows of the sorted unique ``values`` at level j, transposed: four (count, rows) arrays.

        Kept in a small LRU cache keyed by content: a tile row's variances recur in every tile of its row.
        """
        key = (int(j), xp.__name__, values.tobytes())
        with self._lock:
            cached = self._coefficient_cache.pop(key, None)
            if cached is not None:
                self._coefficient_cache[key] = cached  # most recently used last
                return cached
        level = self.level(int(j))
        coef = self._coefficients(values, level, xp)
        cached = tuple(xp.ascontiguousarray(cf.T) for cf in coef)
        with self._lock:
            self._coefficient_cache[key] = cached
            total = sum(cf.nbytes for entry in self._coefficient_cache.values() for cf in entry)
            while total > _CACHE_BYTES and len(self._coefficient_cache) > 1:
                oldest = next(iter(self._coefficient_cache))
                total -= sum(cf.nbytes for cf in self._coefficient_cache.pop(oldest))
        return cached

    def _pair_outer(self, xp, qx, qy, c):
        """The tile path: qx (n,), qy (m,), c (n, m). Also returns the moments of every row and column."""
        (ux, uy), (ix, iy), (lx, ly) = self._prepare(xp, qx, qy)
        row_level, col_level = lx[ix], ly[iy]
        t = c * c
        present = np.union1d(lx, ly)
        whole = present.size == 1
        cov = None if whole else xp.empty(c.shape)
        dcov = None if whole else xp.empty(c.shape)
        moments_x = (xp.empty(ux.size), xp.empty(ux.size))
        moments_y = (xp.empty(uy.size), xp.empty(uy.size))
        for j in present:
            if whole:
                rectangles = [(np.arange(ix.size), np.arange(iy.size))]
            else:
                # Pairs at level j: rows at j with columns at or below it, rows below j with columns at j.
                rectangles = [(np.nonzero(row_level == j)[0], np.nonzero(col_level <= j)[0]),
                              (np.nonzero(row_level < j)[0], np.nonzero(col_level == j)[0])]
                rectangles = [(r, s) for r, s in rectangles if r.size and s.size]
            own_x, own_y = np.nonzero(lx == j)[0], np.nonzero(ly == j)[0]
            if self.level(j) is None:
                cov, dcov = self._outer_by_quadrature(xp, j, (ux, uy), (ix, iy), (own_x, own_y),
                                                      (moments_x, moments_y), rectangles, c, cov, dcov)
                continue
            need_x = np.unique(np.concatenate([own_x] + [ix[r] for r, _ in rectangles]))
            need_y = np.unique(np.concatenate([own_y] + [iy[s] for _, s in rectangles]))
            coef_x = self._level_coefficients(xp, j, ux[need_x]) if need_x.size else None
            if np.array_equal(ux[need_x], uy[need_y]):
                coef_y = coef_x
            else:
                coef_y = self._level_coefficients(xp, j, uy[need_y]) if need_y.size else None
            pos_x = np.zeros(ux.size, dtype=np.int64)
            pos_x[need_x] = np.arange(need_x.size)
            pos_y = np.zeros(uy.size, dtype=np.int64)
            pos_y[need_y] = np.arange(need_y.size)
            for moments, own, pos, coef in ((moments_x, own_x, pos_x, coef_x), (moments_y, own_y, pos_y, coef_y)):
                if own.size:
                    idx = xp.asarray(own)
                    moments[0][idx], moments[1][idx] = diagonal_moments(xp, coef, xp.asarray(pos[own]))
            for r, s in rectangles:
                gx, gy = pos_x[ix[r]], pos_y[iy[s]]
                if whole:
                    cov, dcov = evaluate_outer(xp, coef_x, coef_y, gx, gy, t, c)
                    continue
                block = xp.ix_(xp.asarray(r), xp.asarray(s))
                cov[block], dcov[block] = evaluate_outer(xp, coef_x, coef_y, gx, gy, t[block], c[block])
        inv_x, inv_y = xp.asarray(ix), xp.asarray(iy)
        return cov, dcov, tuple(m[inv_x] for m in moments_x), tuple(m[inv_y] for m in moments_y)

    def _outer_by_quadrature(self, xp, j, unique, inverse, own, moments, rectangles, c, cov_all, dcov_all):
        """The rectangles of a quadrature level (pair by pair) and the moments of its own rows and columns.

        Fills ``cov_all`` and ``dcov_all`` and returns them; where they are None (one level covers the whole tile)
        returns the tile's arrays instead."""
        for u, idx, mom in zip(unique, own, moments):
            if idx.size:
                dev = xp.asarray(idx)
                mom[0][dev], mom[1][dev] = self._diagonal(xp, j, u[idx])
        (ux, uy), (ix, iy) = unique, inverse
        host_c = to_numpy(c)
        for r, s in rectangles:
            rr, ss = np.meshgrid(r, s, indexing="ij")
            cov, dcov = (xp.asarray(v.reshape(rr.shape))
                         for v in self._quadrature(j, ux[ix[rr]].ravel(), uy[iy[ss]].ravel(), host_c[rr, ss].ravel()))
            if cov_all is None:
                return cov, dcov
            block = xp.ix_(xp.asarray(r), xp.asarray(s))
            cov_all[block], dcov_all[block] = cov, dcov
        return cov_all, dcov_all

    def _pair_flat(self, xp, qx, qy, c):
        """General broadcasting: qx, qy, c are 1-D arrays of the same length."""
        (ux, uy), (ix, iy), (lx, ly) = self._prepare(xp, qx, qy)
        pair_level = np.maximum(lx[ix], ly[iy])
        t = c * c
        cov = xp.empty(c.shape)
        dcov = xp.empty(c.shape)
        for j in np.unique(pair_level):
            pick = np.nonzero(pair_level == j)[0]
            sel = xp.asarray(pick)
            if self.level(j) is None:
                values = self._quadrature(j, ux[ix[pick]], uy[iy[pick]], to_numpy(c[sel]))
                cov[sel], dcov[sel] = (xp.asarray(v) for v in values)
                continue
            need_x, need_y = np.unique(ix[pick]), np.unique(iy[pick])
            values, (px, py) = sorted_union(ux[need_x], uy[need_y])
            pos_x = np.zeros(ux.size, dtype=np.int64)
            pos_x[need_x] = px
            pos_y = np.zeros(uy.size, dtype=np.int64)
            pos_y[need_y] = py
            coef = self._level_coefficients(xp, j, values)
            gx, gy = xp.asarray(pos_x[ix[pick]]), xp.asarray(pos_y[iy[pick]])
            sums = [horner_pairs(t[sel], cf[:, gx], cf[:, gy]) for cf in coef]
            cov[sel] = sums[0] + c[sel] * sums[1]
            dcov[sel] = sums[2] + c[sel] * sums[3]
        return cov, dcov


class _SeriesTooLong(Exception):
    """A level needs more quadrature nodes than the series allows: its pairs take `kink_quadrature` instead."""
