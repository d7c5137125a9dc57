"""The fused CPU path: the whole depth recursion of a tile in one compiled pass, tiles spread over all cores.

`gram.gram_block` hands each TILE × TILE tile here after its input inner products (one fixed-shape BLAS call) and
the near-parallel corrections. For every row of the tile the kernel keeps the pair state of that row (ρ, 1 − ρ,
1 + ρ, Θ and the Cauchy–Schwarz gaps, a few KiB) in L1 and sweeps it through all depth + 1 layers; the sweep
over the row's columns is an innermost loop of arithmetic, square roots, divisions and selects that LLVM
vectorises (AVX2/AVX-512). The arcsine it needs is a branch-free polynomial (below) rather than a libm call,
which would stop the vectoriser: numba's pip wheels have no SVML. The loops are bound by the latency of their
dependency chains (a division, two square roots, the polynomial), not by arithmetic throughput, so the
polynomials use Estrin's scheme with explicit fused multiply-adds, and each layer is split in two loops.
No numba threads: `gram.gram_block` runs tiles on its own thread pool with BLAS limited to one thread, so there
is one busy thread per CPU. Tiles of an output too large to stay in the last-level cache are computed into a
per-thread tile and copied out, with their mirror, by streaming stores (`streaming_stores`).

The arithmetic is the same as `ntkdist.kernels.closed_form_activations` (ABReLU family and erf), written out per
element; results agree with the NumPy path to a few ulps, and are bit-for-bit reproducible for a given tile shape.
Supported activations: the ABReLU family (relu, leaky_relu, abs, abrelu) and erf; others use the NumPy path.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .activations import ABReLU, Erf

# asin(x) = x + x³·P(x²) for 0 ≤ x ≤ 1/√2; P is the degree-18 polynomial interpolating (asin(x) − x)/x³ at the
# Chebyshev nodes of z = x² ∈ [0, 1/2] (coefficients solved in 60-digit arithmetic with mpmath). Max relative
# error of asin over the interval in float64 evaluation: 1.2e-16 (tests/kernels/test_fused_cpu.py checks).
_ASIN_P = (0.16666666666666669, 0.07499999999998412, 0.04464285714665563, 0.030381944084994415,
           0.0223721770065477, 0.017352221539201188, 0.013975730180211136, 0.01139924601483468,
           0.011310924828955462, -0.0032941927380090922, 0.07377343868679113, -0.2809947932275328,
           0.952265420570822, -2.3535297860232123, 4.3847119392409954, -5.883233416999023,
           5.436384462318588, -3.0948547605199717, 0.8387674099544927)
_A0, _A1, _A2, _A3, _A4, _A5, _A6, _A7, _A8, _A9 = _ASIN_P[:10]
_A10, _A11, _A12, _A13, _A14, _A15, _A16, _A17, _A18 = _ASIN_P[10:]
# θ − sin θ = θ³·S(θ²) with S(u) = Σ_k (−u)^k / (2k + 3)!, k = 0..6: the Taylor series of
# `ntkdist.kernels.activation_base.theta_minus_sin` (the same seven terms; the omitted one is below 1e-17 at 0.5).
_S0, _S1, _S2, _S3, _S4, _S5, _S6 = ((-1.0) ** k / math.factorial(2 * k + 3) for k in range(7))
_SQRT_HALF = math.sqrt(0.5)
#: The least T·u the erf layer scales by (`_erf_layer`): its square, 1e-300, is still a normal float64.
_ERF_TINY_SCALE = 1e-150
_PI = math.pi
_HALF_PI = math.pi / 2.0

_ENGINE_ACTIVATIONS = (ABReLU, Erf)


def supports(activation) -> bool:
    """Whether the fused path has this activation compiled in."""
    return type(activation) in _ENGINE_ACTIVATIONS


@intrinsic
def fma(typingctx, a, b, c):
    """a·b + c rounded once (LLVM's ``llvm.fma``; one vfmadd on x86-64 with FMA3).

    Explicit rather than left to the compiler's contraction (fastmath "contract"), so that the vectorised body of
    a loop and its scalar remainder round identically: a pair's value must not depend on its column in a tile.
    """
    if not all(isinstance(t, types.Float) for t in (a, b, c)):
        return None
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        double = ir.DoubleType()
        converted = [context.cast(builder, v, t, types.float64) for v, t in zip(args, signature.args)]
        llvm_fma = builder.module.declare_intrinsic("llvm.fma", [double], ir.FunctionType(double, [double] * 3))
        return builder.call(llvm_fma, converted)

    return sig, codegen


@njit(inline="always", cache=True, error_model="numpy")
def asin_half(x):
    """asin(x) for 0 ≤ x ≤ 1/√2: arithmetic only, so loops calling it vectorise.

    P(z) by Estrin's scheme with fused multiply-adds: a dependency chain of 5 FMAs (plus the powers of z)
    instead of Horner's 18, so the out-of-order core overlaps the lanes of neighbouring iterations.
    """
    z = x * x
    z2 = z * z
    z4 = z2 * z2
    z8 = z4 * z4
    z16 = z8 * z8
    c0 = fma(fma(_A3, z, _A2), z2, fma(_A1, z, _A0))
    c1 = fma(fma(_A7, z, _A6), z2, fma(_A5, z, _A4))
    c2 = fma(fma(_A11, z, _A10), z2, fma(_A9, z, _A8))
    c3 = fma(fma(_A15, z, _A14), z2, fma(_A13, z, _A12))
    c4 = fma(_A18, z2, fma(_A17, z, _A16))
    p = fma(c4, z16, fma(fma(c3, z4, c2), z8, fma(c1, z4, c0)))
    return fma(x * z, p, x)


@njit(inline="always", cache=True, error_model="numpy")
def asin_given_cosine(x, cosine):
    """asin(x) for −1 ≤ x ≤ 1, given ``cosine`` = √(1 − x²) computed on its own: asin_half(|x|) up to |x| = 1/√2,
    π/2 − asin_half(cosine) above (both arguments ≤ 1/√2, up to rounding), the sign of x restored; one polynomial
    per element, chosen by selects (no branches).

    The erf layer has the cosine for free (√(1 − x²) = √det·(1 + 2q_x)^(-1/2)(1 + 2q_y)^(-1/2), and √det is needed
    anyway), which saves the square root of the usual reduction π/2 − 2·asin(√((1 − |x|)/2)); and near |x| = 1
    the cosine, built from the Cauchy–Schwarz gaps, keeps the digits that 1 − |x| loses to cancellation.
    """
    t = abs(x)
    low = t <= _SQRT_HALF
    p = asin_half(t if low else cosine)
    y = p if low else _HALF_PI - p
    return y if x >= 0.0 else -y


@njit(inline="always", cache=True, error_model="numpy")
def theta_minus_sin(theta, sin_theta):
    """θ − sin θ: the Taylor series θ³·S(θ²) below 0.5 (where the difference would cancel), the difference
    above. S by Estrin's scheme with FMAs."""
    u = theta * theta
    u2 = u * u
    low = fma(fma(_S3, u, _S2), u2, fma(_S1, u, _S0))
    high = fma(_S6, u2, fma(_S5, u, _S4))
    series = (theta * u) * fma(high, u2 * u2, low)
    return series if theta < 0.5 else theta - sin_theta


@njit(inline="always", cache=True, error_model="numpy")
def _clip(x, lo, hi):
    return lo if x < lo else (hi if x > hi else x)


@njit(nogil=True, cache=True, error_model="numpy")
def _row_layers(sq, dim, depth, w, b, act_kind, second):
    """Per layer and point: the Dense layer's input variance E_l (E_0 = ‖x‖²/d), √E_l, its output variance
    q_l = w·E_l + b, √q_l, and (erf) 1/√(1 + 2q_l).

    Mirrors the layer-variance recursion `ntkdist.kernels.analytic.diagonal_recursion` (q ↦ w·E φ(u)² + b), with
    E φ(u)² written out: ``second``·q for the ABReLU family (`ABReLU.second_moment`, second = (a² + b²)/2) and
    (2/π)·asin(2q/(1 + 2q)) = (2/π)·atan2(2q, √(1 + 4q)) for erf (`Erf.second_moment`, both in
    `closed_form_activations`).
    """
    n = sq.shape[0]
    var = np.empty((depth + 1, n))
    q = np.empty((depth + 1, n))
    for i in range(n):
        v = sq[i] / dim
        for layer in range(depth + 1):
            var[layer, i] = v
            ql = w * v + b
            q[layer, i] = ql
            if act_kind == 0:
                v = second * ql
            else:
                v = (2.0 / _PI) * math.atan2(2.0 * ql, math.sqrt(1.0 + 4.0 * ql))
    return var, np.sqrt(var), q, np.sqrt(q), 1.0 / np.sqrt(1.0 + 2.0 * q)


@njit(inline="always", cache=True, error_model="numpy")
def _input_row(i, inner, sq_x, sq_y, x_hat, y_hat, near, cov, gap_lo, gap_hi):
    """Row i of the input moments: ⟨x, y⟩ and ‖x‖‖y‖ ∓ ⟨x, y⟩, near-(anti)parallel pairs from x̂ ∓ ŷ.

    Mirrors the near-parallel correction `ntkdist.kernels.gram.input_moments` (threshold ``near`` =
    `gram.NEAR_PARALLEL`, passed in): where a gap is below ``near``·‖x‖‖y‖ it is recomputed as
    ‖x‖‖y‖·‖x̂ ∓ ŷ‖²/2, summed in index order.
    """
    m = cov.shape[0]
    d = x_hat.shape[1]
    sx = sq_x[i]
    flagged = 0
    for j in range(m):
        prod = math.sqrt(sx * sq_y[j])
        value = inner[i, j]
        lo = prod - value
        hi = prod + value
        cov[j] = value
        gap_lo[j] = lo
        gap_hi[j] = hi
        threshold = near * prod
        flagged += 1 if (lo < threshold or hi < threshold) and prod > 0.0 else 0
    if flagged == 0:
        return
    for j in range(m):
        prod = math.sqrt(sx * sq_y[j])
        threshold = near * prod
        if prod > 0.0 and (gap_lo[j] < threshold or gap_hi[j] < threshold):
            sign = -1.0 if gap_lo[j] < threshold else 1.0
            acc = 0.0
            for k in range(d):
                t = x_hat[i, k] + sign * y_hat[j, k]
                acc += t * t
            gap = prod * (0.5 * acc)
            if sign < 0.0:
                gap_lo[j] = gap
                cov[j] = prod - gap
                gap_hi[j] = 2.0 * prod - gap
            else:
                gap_hi[j] = gap
                cov[j] = gap - prod
                gap_lo[j] = 2.0 * prod - gap
        gap_lo[j] = max(gap_lo[j], 0.0)
        gap_hi[j] = max(gap_hi[j], 0.0)


@njit(nogil=True, cache=True, error_model="numpy")
def fused_tile(inner, x_hat, y_hat, sq_x, sq_y, near, depth, w, b, act_kind, ab, alpha2, beta2, second,
               want_ntk, out, upper=False):
    """NNGP or NTK of one tile, every layer fused; writes ``out`` (n, m) float64, or with ``upper`` (a diagonal
    tile of a symmetric Gram) only its entries j ≥ i, the rest being their mirror.

    Parameters
    ----------
    inner : (≥n, ≥m) array
        ⟨x_i, y_j⟩ from the tile's fixed-shape BLAS product (only the top-left n × m is read).
    x_hat, y_hat : (n, d), (m, d) arrays
        The rows divided by their norms (zero rows stay zero), for near-parallel pairs.
    sq_x, sq_y : squared norms.
    act_kind : 0 for the ABReLU family (ab = a·b, α² = ((a+b)/2)², β² = ((b−a)/2)², second = (a²+b²)/2), 1 for erf.
    """
    n, m = out.shape
    dim = x_hat.shape[1]
    var_x, root_var_x, q_x, root_q_x, inv_x = _row_layers(sq_x, dim, depth, w, b, act_kind, second)
    var_y, root_var_y, q_y, root_q_y, inv_y = _row_layers(sq_y, dim, depth, w, b, act_kind, second)
    inv_d = 1.0 / dim
    cov = np.empty(m)
    gap_lo = np.empty(m)
    gap_hi = np.empty(m)
    dcov = np.empty(m)
    theta = np.empty(m)
    scales = np.empty(m)
    for i in range(n):
        # Row i's sweep over columns start … m − 1, on views that begin there: loops over a view from 0 vectorise
        # (an index from a run-time start would keep numba's negative-index wraparound in the loop), and an
        # entry's arithmetic does not depend on where its sweep starts.
        start = i if upper else 0
        c_cov, c_lo, c_hi, c_dcov, c_theta = cov[start:], gap_lo[start:], gap_hi[start:], dcov[start:], theta[start:]
        _input_row(i, inner[:, start:], sq_x, sq_y[start:], x_hat, y_hat[start:], near, c_cov, c_lo, c_hi)
        for j in range(m - start):
            c_cov[j] *= inv_d
            c_lo[j] *= inv_d
            c_hi[j] *= inv_d
            c_dcov[j] = 0.0
            c_theta[j] = 0.0
        for layer in range(depth):
            if act_kind == 0:
                # The readout needs only Σ and Θ: the last activation layer skips the gaps.
                _abrelu_layer(root_var_x[layer, i], root_q_x[layer, i], root_var_y[layer, start:],
                              root_q_y[layer, start:], w, b, ab, alpha2, beta2, c_cov, c_lo, c_hi, c_dcov, c_theta,
                              scales[start:], layer < depth - 1)
            else:
                _erf_layer(root_var_x[layer, i], root_q_x[layer, i], q_x[layer, i], inv_x[layer, i],
                           root_var_x[layer + 1, i], root_var_y[layer, start:], root_q_y[layer, start:],
                           q_y[layer, start:], inv_y[layer, start:], root_var_y[layer + 1, start:], w, b,
                           c_cov, c_lo, c_hi, c_dcov, c_theta)
        # The readout Dense layer: Σ and Θ only.
        row = out[i, start:]
        for j in range(m - start):
            sigma = w * c_cov[j] + b
            c_theta[j] = sigma + w * c_dcov[j] * c_theta[j]
            row[j] = c_theta[j] if want_ntk else sigma


@njit(inline="always", cache=True, error_model="numpy")
def _dense_numerators(rx, rqx, ry, rqy, w, b, cov, below, above):
    """One Dense layer for one pair before its division (mirrors `ntkdist.kernels.analytic.dense_layer`): Σ,
    s = √(q_x q_y), T = s + w√(E_x E_y) + b, and the numerators (1 ∓ ρ)·s·T, from the input moments and the
    roots √E, √q of both points.

    s − Σ = (s² − (w√(E_x E_y) + b)²)/T + w·(√(E_x E_y) − ⟨·,·⟩), and s² − (w√(E_x E_y) + b)² = b·w·(√E_x − √E_y)²
    (the AM–GM gap): so (1 − ρ)·s·T has no cancellation, and likewise (1 + ρ)·s·T.
    """
    sigma = w * cov + b
    scale = rqx * rqy
    total = scale + (w * (rx * ry) + b)
    diff = rx - ry
    am_gm = (b * w) * diff * diff  # AM–GM gap × (scale + geometric)
    return sigma, scale, total, am_gm + w * below * total, am_gm + (2.0 * b + w * above) * total


@njit(inline="always", cache=True, error_model="numpy")
def _dense(rx, rqx, ry, rqy, w, b, cov, below, above):
    """One Dense layer for one pair with one division: Σ, √(q_x q_y), ρ, 1 − ρ, 1 + ρ (`_dense_numerators`)."""
    sigma, scale, total, lo, hi = _dense_numerators(rx, rqx, ry, rqy, w, b, cov, below, above)
    positive = scale > 0.0
    inv = 1.0 / (total * scale) if positive else 0.0
    c = _clip(sigma * total * inv, -1.0, 1.0) if positive else 0.0
    e = _clip(lo * inv, 0.0, 2.0) if positive else 1.0
    f = _clip(hi * inv, 0.0, 2.0) if positive else 1.0
    return sigma, scale, c, e, f


@njit(inline="always", cache=True, error_model="numpy")
def _abrelu_layer(rx, rqx, root_var_y, root_q_y, w, b, ab, alpha2, beta2, cov, gap_lo, gap_hi, dcov, theta,
                  scales, need_gaps):
    """Dense + ABReLU over one row of pairs: mirrors the arc-cosine kernel of
    `ntkdist.kernels.closed_form_activations.ABReLU.pair_moments` (Cho & Saul 2009), written per element.

    α = min(θ, π − θ) = 2·asin(√(min(1 − ρ, 1 + ρ)/2)), and sin θ = √((1 − ρ)(1 + ρ)): two square roots, no
    division, no library call.
    """
    beta_term = 2.0 * beta2 / _PI
    beta_over_pi = beta2 / _PI
    # Two loops (fission): the Dense layer's moments first, stored in place (ρ over Σ, 1 ∓ ρ over the gaps), then
    # the arc-cosine kernel. Each body is a shorter dependency chain (division; √ → polynomial → θ − sin θ), so
    # more iterations fit in the out-of-order window than in one long body.
    for j in range(cov.shape[0]):
        sigma, scale, c, e, f = _dense(rx, rqx, root_var_y[j], root_q_y[j], w, b, cov[j], gap_lo[j], gap_hi[j])
        theta[j] = sigma + w * dcov[j] * theta[j]
        cov[j] = c
        gap_lo[j] = e
        gap_hi[j] = f
        scales[j] = scale
    for j in range(cov.shape[0]):
        c = cov[j]
        e = gap_lo[j]
        f = gap_hi[j]
        scale = scales[j]
        near_zero = e <= f
        small = e if near_zero else f
        alpha = 2.0 * asin_half(math.sqrt(0.5 * small))
        sin_theta = math.sqrt(e * f)
        tms = theta_minus_sin(alpha, sin_theta)
        pi_minus_theta = _PI - alpha if near_zero else alpha
        j_val = sin_theta + pi_minus_theta * c if near_zero else alpha * f - tms
        pi_minus_even = small * (_PI - 2.0 * alpha) + 2.0 * tms
        even = 2.0 * j_val - _PI * c
        cov[j] = scale * (ab * c + beta_term * j_val)
        dcov[j] = ab + beta_term * pi_minus_theta
        if need_gaps:
            gap_lo[j] = scale * (alpha2 * e + beta_over_pi * pi_minus_even)
            gap_hi[j] = scale * (alpha2 * f + beta_over_pi * (_PI + even))


@njit(inline="always", cache=True, error_model="numpy")
def _erf_layer(rx, rqx, qx, inv_x, next_rx, root_var_y, root_q_y, q_y, inv_y, next_root_var_y, w, b,
               cov, gap_lo, gap_hi, dcov, theta):
    """Dense + erf over one row of pairs (Williams 1997): mirrors
    `ntkdist.kernels.closed_form_activations.Erf.pair_moments`, with its gaps by subtraction as `smooth_gaps`.

    With A = 1 + 2q_x, B = 1 + 2q_y and u = 1/√(AB): E erf·erf = (2/π)·asin(t), t = 2Σu, and E erf′·erf′ =
    (4/π)/√det, det = AB − 4Σ² = A + B − 1 + 4·q_x q_y (1 − ρ)(1 + ρ) = A + B − 1 + 4·lo·hi/T² in the numerators
    of `_dense_numerators`. Scaled by u, G = det·(Tu)² = (A + B − 1)·(Tu)² + 4·(lo·u)(hi·u) (any scale would do;
    u keeps Tu within [0.5, 1] for large q, since √(q_x q_y) ≤ T ≤ 2√(q_x q_y), where unscaled lo·hi overflows from
    q ≈ 1e77). Then one square root and one division, r = 1/(Tu·√G), give 1/√det = (Tu)²·r and the arcsine's
    cosine √(1 − t²) = √det·u = G·r·u (`asin_given_cosine`), where the textbook order spends two divisions and two
    square roots. Tu is held at least `_ERF_TINY_SCALE`: below it (u ≤ 1) q_x q_y < 1e-300, so 4·lo·hi/T² =
    4 q_x q_y (1 − ρ²) is far below the rounding of A + B − 1 ≥ 1, and G = (A + B − 1)·Tu² gives det as exactly
    as the full sum would (a zero point, T = 0, included).
    """
    # Two loops, as in `_abrelu_layer`: the Dense numerators, t and G first (stored over Σ and the two gaps), then
    # the square root, the division and the arcsine.
    for j in range(cov.shape[0]):
        sigma, _, total, lo, hi = _dense_numerators(rx, rqx, root_var_y[j], root_q_y[j], w, b, cov[j],
                                                    gap_lo[j], gap_hi[j])
        theta[j] = sigma + w * dcov[j] * theta[j]
        # Products of x's and y's factors are formed first, so that (x, y) and (y, x) round the same: the mirror
        # of a symmetric Gram equals the entry computed with its points swapped (blocks of any size agree).
        u = inv_x * inv_y[j]
        cov[j] = 2.0 * sigma * u
        scaled_total = max(total * u, _ERF_TINY_SCALE)
        gap_lo[j] = (1.0 + 2.0 * (qx + q_y[j])) * (scaled_total * scaled_total) + \
            4.0 * ((max(lo, 0.0) * u) * (max(hi, 0.0) * u))
        gap_hi[j] = scaled_total
    for j in range(cov.shape[0]):
        g = gap_lo[j]
        scaled_total = gap_hi[j]
        r = 1.0 / (scaled_total * math.sqrt(g))
        value = (2.0 / _PI) * asin_given_cosine(cov[j], (g * r) * (inv_x * inv_y[j]))
        root = next_rx * next_root_var_y[j]
        dcov[j] = (4.0 / _PI) * ((scaled_total * scaled_total) * r)
        cov[j] = value
        gap_lo[j] = max(root - value, 0.0)
        gap_hi[j] = max(root + value, 0.0)


def activation_parameters(activation):
    """(act_kind, ab, α², β², (a² + b²)/2) for `fused_tile`."""
    if isinstance(activation, ABReLU):
        a, b = activation.a, activation.b
        return 0, a * b, (0.5 * (a + b)) ** 2, (0.5 * (b - a)) ** 2, 0.5 * (a * a + b * b)
    if isinstance(activation, Erf):
        return 1, 0.0, 0.0, 0.0, 0.0
    raise TypeError(f"the fused CPU path has no {activation!r}")


@njit(nogil=True, cache=True)
def transpose_into(source, target):
    """target[:] = source.T (the mirror of an off-diagonal tile) in 4 × 4 blocks, row blocks of the source in order.

    A tile's rows lie N·8 bytes apart in the output, so each of its rows and each of the mirror's is on its own
    pages: 4 × 4 blocks read and write 32-byte runs and keep the source's rows and the target's in cache across
    the sweep. 30 µs a 256² float64 tile of an N = 8000 output, against 75–105 µs for the 32 × 32 blocks of
    columns this replaced and 32–45 µs for 8 × 8 blocks (measured side by side on the development machine).
    """
    n, m = source.shape
    n4, m4 = n - n % 4, m - m % 4
    for i in range(0, n4, 4):
        for j in range(0, m4, 4):
            for c in range(4):
                for a in range(4):
                    target[j + c, i + a] = source[i + a, j + c]
    for i in range(n4, n):  # the ragged edges of a short last tile
        for j in range(m):
            target[j, i] = source[i, j]
    for i in range(n4):
        for j in range(m4, m):
            target[j, i] = source[i, j]


@njit(nogil=True, cache=True)
def mirror_upper(square):
    """Lower triangle := transpose of the upper triangle (a diagonal tile: the pair (i, j) is computed with the
    lower index as the row)."""
    n = square.shape[0]
    for i in range(n):
        for j in range(i + 1, n):
            square[j, i] = square[i, j]
