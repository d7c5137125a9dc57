"""Series activations at every variance: q from 1e-6 to 1e4, every correlation, no refusal (issue 10, item 2).

The reference shares no code with ntkdist: the conditional expectation
E[φ(u)φ(v)] = ∫ φ(√q_x z) g(ρ√q_y z, s) dγ(z), g(m, s) = E[φ(m + sZ)], s² = q_y(1 − ρ²), with both integrals by the
double-exponential (tanh–sinh) rule on segments split at the kink (z = 0 and ±k/√q outside, z = −m/s and ±k/s
inside, k = 1, 3, 8, 20) and on a grid of 9 points in [−8.5, 8.5]. "Converged" is checked, not assumed: the rule
at step h and at h/2 agree to 1e-13 of the Cauchy–Schwarz scale before either is used. Plus a 30-digit mpmath
check of the reference itself where the 2-D integral reduces to 1-D ones.

Runtime: the per-activation grid and the network checks are marked slow (15–40 s each on a loaded 2-core machine).
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from scipy.special import expit

import ntkdist
from ntkdist.cluster.runtime import get
from ntkdist.errors import DataError
from ntkdist.kernels import MLP
from ntkdist.kernels import activations as A

from ..helpers import assert_kernel_close

#: P(|Z| > 8.5) = 1.9e-17.
HALF_RANGE = 8.5


def _silu(x):
    return x * expit(x)


def _silu_derivative(x):
    s = expit(x)
    return s * (1.0 + x * (1.0 - s))


def _sech2(x):
    t = np.exp(-2.0 * np.abs(x))
    return 4.0 * t / (1.0 + t) ** 2


POINTWISE = {
    "tanh": (np.tanh, _sech2),
    "sigmoid": (expit, lambda x: expit(x) * expit(-x)),
    "softplus": (lambda x: np.logaddexp(0.0, x), expit),
    "silu": (_silu, _silu_derivative),
}


def make(spec):
    if spec == "silu":
        return A.custom(_silu, _silu_derivative, name="silu")
    return A.get_activation(spec)


def _tanh_sinh(step):
    """Nodes and weights of the tanh–sinh rule on [0, 1] (Takahasi & Mori 1974) at the given step in t."""
    t = np.arange(-3.25, 3.25 + step / 2, step)  # 1 − x < 1e-18 at |t| = 3.25
    arg = 0.5 * math.pi * np.sinh(t)
    x = 0.5 * (1.0 + np.tanh(arg))
    w = step * 0.25 * math.pi * np.cosh(t) / np.cosh(arg) ** 2
    keep = w > 1e-300
    return x[keep], w[keep]


def _segments(breaks, step):
    """Nodes and weights (shape breaks.shape[:-1] + (nodes,)) of tanh–sinh on each segment between sorted breaks."""
    x, w = _tanh_sinh(step)
    lo, hi = breaks[..., :-1, None], breaks[..., 1:, None]
    nodes = lo + (hi - lo) * x
    weights = (hi - lo) * w * np.exp(-0.5 * nodes * nodes) / math.sqrt(2.0 * math.pi)
    shape = breaks.shape[:-1] + (-1,)
    return nodes.reshape(shape), weights.reshape(shape)


def _breaks(kink, scale):
    points = [kink] + [kink + sign * k * scale for k in (1, 3, 8, 20) for sign in (-1, 1)]
    inner = np.clip(np.stack(np.broadcast_arrays(*points), axis=-1), -HALF_RANGE, HALF_RANGE)
    grid = np.linspace(-HALF_RANGE, HALF_RANGE, 9)  # the Gaussian weight needs segments ≲ 2 wide
    ends = np.broadcast_to(grid, inner.shape[:-1] + grid.shape)
    return np.sort(np.concatenate([ends, inner], axis=-1), axis=-1)


def reference_pairs(spec, qx, qy, rho, step):
    """(E[φφ], E[φ'φ']) for scalar qx, qy and an array of ρ by the split tanh–sinh rule at one step."""
    f, df = POINTWISE[spec]
    scale = 1.0 / math.sqrt(max(qx, qy, 1.0))
    z1, w1 = _segments(_breaks(np.array(0.0), scale), step)
    out = []
    for r in np.atleast_1d(rho):
        s = math.sqrt(qy * max((1.0 - r) * (1.0 + r), 0.0))
        m = r * math.sqrt(qy) * z1
        if s == 0.0:
            g, dg = f(m), df(m)
        else:
            z2, w2 = _segments(_breaks(-m / s, 1.0 / s), step)
            v = m[:, None] + s * z2
            g, dg = (f(v) * w2).sum(axis=1), (df(v) * w2).sum(axis=1)
        u = math.sqrt(qx) * z1
        out.append(((f(u) * g * w1).sum(), (df(u) * dg * w1).sum()))
    return np.array(out).T


def converged_reference(spec, qx, qy, rho):
    """The reference at steps 1/8 and 1/16 after checking that they agree to 1e-13 normwise; also the scales."""
    coarse, fine = reference_pairs(spec, qx, qy, rho, 1 / 8), reference_pairs(spec, qx, qy, rho, 1 / 16)
    mx, my = reference_pairs(spec, qx, qx, 1.0, 1 / 16), reference_pairs(spec, qy, qy, 1.0, 1 / 16)
    scale = np.sqrt(mx * my)  # rows: E[φφ] scale, E[φ'φ'] scale
    assert np.all(np.abs(coarse - fine) <= 1e-13 * scale), np.abs(coarse - fine).max(axis=1) / scale[:, 0]
    return fine, scale[:, 0]


RHOS = np.array([-1.0, -1.0 + 1e-8, -0.5, 0.0, 0.3, 1.0 - 1e-8, 1.0])
#: A log grid of equal variances, and unequal ones far apart.
VARIANCES = [(q, q) for q in (1e-6, 1e-3, 0.7, 20.0, 300.0, 1e4)] + [(1e-6, 1e4), (2.0, 900.0), (5000.0, 0.05)]
SPECS = ["tanh", "sigmoid", "softplus", "silu"]


@pytest.mark.slow  # ~10–30 s each: the converged reference is 2-D at two steps
@pytest.mark.parametrize("spec", SPECS)
def test_series_activations_hold_tol_from_tiny_to_huge_variances(spec):
    act = make(spec)
    for qx, qy in VARIANCES:
        (cov, dcov), (scale, dscale) = converged_reference(spec, qx, qy, RHOS)
        got = act.dual.pair(np.full(RHOS.size, qx), np.full(RHOS.size, qy), RHOS)
        err = np.abs(got[0] - cov).max() / scale, np.abs(got[1] - dcov).max() / dscale
        assert err[0] <= 1e-10 and err[1] <= 1e-10, (spec, qx, qy, err)
        # Second moments: the pair with itself at ρ = 1.
        moments = act.second_moment(np.array([qx, qy])), act.derivative_second_moment(np.array([qx, qy]))
        want = reference_pairs(spec, qx, qx, 1.0, 1 / 16)[:, 0], reference_pairs(spec, qy, qy, 1.0, 1 / 16)[:, 0]
        np.testing.assert_allclose(moments[0], [want[0][0], want[1][0]], rtol=1e-10)
        np.testing.assert_allclose(moments[1], [want[0][1], want[1][1]], rtol=1e-10)


def test_reference_matches_thirty_digit_mpmath():
    """The tanh–sinh reference itself against mpmath's quadrature split at the kink, where the 2-D integral reduces
    to 1-D ones: ρ = 1 (a second moment, the outer rule) and ρ = 0 (a product of means, the inner rule too)."""
    q, qx, qy = 900.0, 400.0, 2500.0
    with mp.workdps(30):
        def mean(f, v):
            k = 1 / mp.sqrt(v)
            return mp.quad(lambda z: f(mp.sqrt(v) * z) * mp.npdf(z), [-mp.inf, -8 * k, -k, 0, k, 8 * k, mp.inf])

        tanh_square = mean(lambda x: mp.tanh(x) ** 2, q)
        sech_fourth = mean(lambda x: mp.sech(x) ** 4, q)
        softplus = lambda x: mp.log1p(mp.exp(x))  # noqa: E731
        product = mean(softplus, qx) * mean(softplus, qy)
        sigmoid = lambda x: 1 / (1 + mp.exp(-x))  # noqa: E731 - softplus' = sigmoid
        sigmoid_product = mean(sigmoid, qx) * mean(sigmoid, qy)
    moment = reference_pairs("tanh", q, q, 1.0, 1 / 16)[:, 0]
    assert abs(moment[0] - float(tanh_square)) <= 1e-14 and abs(moment[1] - float(sech_fourth)) <= 1e-14
    means = reference_pairs("softplus", qx, qy, 0.0, 1 / 16)[:, 0]
    assert abs(means[0] - float(product)) <= 1e-13 * float(product)
    assert abs(means[1] - float(sigmoid_product)) <= 1e-13 * float(sigmoid_product)


def test_a_pair_does_not_depend_on_its_neighbours_at_large_variance():
    """Determinism: the quadrature pairs give the same bits alone, in a batch, in the tile path and the flat path."""
    act = A.tanh()
    rng = np.random.default_rng(5)
    qx = np.array([30.0, 700.0, 0.8, 9000.0, 30.0])[:, None]
    qy = np.array([30.0, 45.0, 2000.0, 0.3])[None, :]
    c = rng.uniform(-1, 1, size=(5, 4))
    c[0, 0] = 1.0
    tile = act.dual.pair(qx, qy, c)
    for i in range(5):
        for j in range(4):
            alone = act.dual.pair(qx[i], qy[:, j], c[i, j:j + 1])
            assert alone[0][0] == tile[0][i, j] and alone[1][0] == tile[1][i, j]
    # The moment of a row equals its pair with itself: a point's gap with itself is exactly 0.
    assert act.second_moment(np.array([30.0]))[0] == tile[0][0, 0]


def reference_network(spec, X, depth, w, b):
    """NNGP and NTK after each layer for the upper-triangle pairs, per pair, on the converged reference."""
    n, d = X.shape
    i, j = np.triu_indices(n)
    gram = X @ X.T
    sq = np.diag(gram)
    layers = []
    for p, (a, c) in enumerate(zip(i, j)):
        sxy, sxx, syy = w * gram[a, c] / d + b, w * sq[a] / d + b, w * sq[c] / d + b
        theta = sxy
        row = []
        for _ in range(depth):
            rho = float(np.clip(sxy / math.sqrt(sxx * syy), -1.0, 1.0))
            (exy, dexy), _ = converged_reference(spec, sxx, syy, np.array([rho]))
            exx = reference_pairs(spec, sxx, sxx, 1.0, 1 / 16)[0, 0]
            eyy = reference_pairs(spec, syy, syy, 1.0, 1 / 16)[0, 0]
            sxy, sxx, syy = w * exy[0] + b, w * exx + b, w * eyy + b
            theta = sxy + w * dexy[0] * theta
            row.append((sxy, theta))
        layers.append(row)
    return i, j, layers


@pytest.mark.slow  # ~10–20 s each: the reference recursion runs the 2-D reference per pair and layer
@pytest.mark.parametrize("spec", ["tanh", "sigmoid"])
def test_network_with_large_inputs_and_weight_var_three_matches_the_reference(spec):
    """The issue's failing case: rows of norm up to 3·√d and weight_var = 3 (q ≈ 27 in the first layer)."""
    rng = np.random.default_rng(10)
    d = 6
    X = rng.standard_normal((3, d))
    X *= np.array([[3.0], [1.0], [3.0]]) * math.sqrt(d) / np.linalg.norm(X, axis=1, keepdims=True)
    X[2] = -X[0] + 1e-9 * rng.standard_normal(d)  # near-antiparallel at the largest norm
    w, b = 3.0, 0.1
    i, j, layers = reference_network(spec, X, 5, w, b)
    for depth in range(1, 6):
        net = MLP(depth=depth, activation=spec, weight_var=w, bias_var=b)
        for kind, which, call in (("nngp", 0, ntkdist.nngp), ("ntk", 1, ntkdist.ntk)):
            got = call(X, net=net)
            ref = np.zeros_like(got)
            ref[i, j] = [layers[p][depth - 1][which] for p in range(len(i))]
            ref[j, i] = ref[i, j]
            diag = np.abs(np.diag(ref))
            assert_kernel_close(got, ref, np.sqrt(np.outer(diag, diag)), rtol=1e-10, sizable=1e-6)


def test_an_error_in_a_ray_actor_is_the_error_of_a_local_call(ray_local):
    """A non-finite variance (rows so large that w·‖x‖²/d overflows) is a DataError naming the activation, locally
    and from inside a Ray actor alike (`ntkdist.cluster.runtime.get` re-raises UserErrors as themselves)."""
    ray = ray_local
    X = np.array([[1e200, 1.0], [1.0, 2.0]])
    net = MLP(depth=2, activation="tanh")
    with pytest.raises(DataError) as local:
        ntkdist.ntk(X, net=net)

    class Worker:
        def gram(self, X):
            return ntkdist.ntk(X, net=MLP(depth=2, activation="tanh"))

    actor = ray.remote(num_cpus=0)(Worker).remote()
    with pytest.raises(DataError) as remote:
        get(actor.gram.remote(X))
    assert type(remote.value) is type(local.value) and str(remote.value) == str(local.value)
    assert "tanh" in str(local.value)
    ray.kill(actor)
