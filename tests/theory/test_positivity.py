"""The positivity predicate (Carvalho et al.) and the polynomial rank bound, against computed λ_min and rank."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ntkdist
from ntkdist.kernels import MLP, get_activation
from ntkdist.theory import positivity as P
from ..helpers import Quadratic


def eig(X, net, kind="ntk"):
    K = (ntkdist.ntk if kind == "ntk" else ntkdist.nngp)(X, net=net)
    return np.linalg.eigvalsh(K)


def rounding(values):
    return 16.0 * len(values) * np.finfo(float).eps * float(np.abs(values).max())


def assert_singular(values):
    assert abs(values[0]) <= rounding(values), (values[0], rounding(values))


def assert_positive(values):
    assert values[0] > 1e3 * rounding(values), (values[0], rounding(values))


def base(n=40, d=5, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


# ======================================================================================== constructed cases
def _with(X, extra):
    return np.vstack([X, extra])


CASES = [
    # (label, inputs, network, expected status)
    ("distinct, relu, no bias", lambda X: X, MLP(2), "positive_definite"),
    ("distinct, erf, bias", lambda X: X, MLP(3, "erf", 1.5, 0.2), "positive_definite"),
    ("duplicate, relu, bias", lambda X: _with(X, X[3]), MLP(2, "relu", 2.0, 0.1), "singular"),
    ("duplicate, erf, no bias", lambda X: _with(X, X[7]), MLP(2, "erf", 1.0, 0.0), "singular"),
    ("x and -x, erf (odd), no bias", lambda X: _with(X, -X[2]), MLP(2, "erf", 1.0, 0.0), "singular"),
    ("x and -x, abs (even), no bias", lambda X: _with(X, -X[2]), MLP(2, "abs", 2.0, 0.0), "singular"),
    ("x and -x, erf (odd), bias", lambda X: _with(X, -X[2]), MLP(2, "erf", 1.0, 0.1), "positive_definite"),
    ("x and -x, abs (even), bias", lambda X: _with(X, -X[2]), MLP(2, "abs", 2.0, 0.1), "positive_definite"),
    ("x and -x, relu (neither), no bias", lambda X: _with(X, -X[2]), MLP(2), "not_guaranteed"),
    ("x and -x, leaky relu (neither), no bias", lambda X: _with(X, -X[2]), MLP(2, "leaky_relu(0.3)"),
     "not_guaranteed"),
    ("x and 2x, relu (homogeneous), no bias", lambda X: _with(X, 2.0 * X[5]), MLP(2), "singular"),
    ("x and 3x, leaky relu (homogeneous), no bias", lambda X: _with(X, 3.0 * X[5]), MLP(3, "leaky_relu(0.1)"),
     "singular"),
    ("x and -2x, abs (even, homogeneous), no bias", lambda X: _with(X, -2.0 * X[5]), MLP(2, "abs"), "singular"),
    ("x and 2x, erf (not homogeneous), no bias", lambda X: _with(X, 2.0 * X[5]), MLP(2, "erf"), "not_guaranteed"),
    ("x and 2x, relu, bias", lambda X: _with(X, 2.0 * X[5]), MLP(2, "relu", 2.0, 0.1), "positive_definite"),
    ("zero input, relu, no bias", lambda X: _with(X, 0.0 * X[0]), MLP(2), "singular"),
    ("zero input, erf, no bias", lambda X: _with(X, 0.0 * X[0]), MLP(2, "erf"), "singular"),
    ("zero input, relu, bias", lambda X: _with(X, 0.0 * X[0]), MLP(2, "relu", 2.0, 0.1), "positive_definite"),
    ("linear activation = polynomial of degree 1", lambda X: X, MLP(2, "abrelu(1, 1)", 1.0, 0.1), "singular"),
]


@pytest.mark.parametrize("label,make,net,expected", CASES, ids=[c[0] for c in CASES])
def test_predicate_agrees_with_computed_lambda_min(label, make, net, expected):
    X = make(base())
    verdict = P.ntk_positivity(X, net)
    assert verdict.status == expected, verdict.reason
    assert verdict.reason and verdict.citation.startswith("Carvalho")
    values = eig(X, net)
    if expected == "positive_definite":
        assert verdict.guaranteed
        assert_positive(values)
    elif expected == "singular":
        assert verdict.singular
        assert_singular(values)
    else:
        assert not verdict.guaranteed and not verdict.singular
        # what the theorem leaves open is, in these cases, in fact positive definite
        assert_positive(values)


def test_odd_activations_from_the_registry_without_bias():
    for spec in ("tanh", "sin"):
        act = get_activation(spec)
        assert P.activation_parity(act) == "odd"
        X = _with(base(), -base()[4])
        net = MLP(2, act, 1.0, 0.0)
        verdict = P.ntk_positivity(X, net)
        assert verdict.singular
        assert_singular(eig(X, net))


def test_parity_and_polynomial_degree_of_activations():
    assert P.activation_parity(get_activation("erf")) == "odd"
    assert P.activation_parity(get_activation("abs")) == "even"
    assert P.activation_parity(get_activation("relu")) is None
    assert P.activation_polynomial_degree(get_activation("relu")) is None
    assert P.activation_polynomial_degree(get_activation("erf")) is None
    assert P.activation_polynomial_degree(get_activation("abrelu(2, 2)")) == 1
    assert P.activation_polynomial_degree(Quadratic()) == 2


def test_nngp_is_not_covered_but_singularities_are():
    X = base()
    assert P.ntk_positivity(X, MLP(2, "erf", 1.0, 0.1), kind="nngp").status == "not_guaranteed"
    Xd = _with(X, X[0])
    assert P.ntk_positivity(Xd, MLP(2, "erf", 1.0, 0.1), kind="nngp").singular
    assert_singular(eig(Xd, MLP(2, "erf", 1.0, 0.1), kind="nngp"))


def test_near_coincident_inputs_count_as_coincident_within_tolerance():
    X = base()
    Xn = _with(X, X[1] * (1 + 1e-15))
    verdict = P.ntk_positivity(Xn, MLP(2, "relu", 2.0, 0.1))
    assert verdict.singular and "coincide" in verdict.reason
    # a visible separation: guaranteed, with the caveat that λ_min may be tiny
    Xs = _with(X, X[1] + 1e-8)
    verdict = P.ntk_positivity(Xs, MLP(2, "relu", 2.0, 0.1))
    assert verdict.guaranteed and "tiny" in verdict.reason


# ======================================================================================= polynomial activations
def _fit_degree(net, dim=3, max_degree=12):
    """The degree of Θ(ρ) on unit inputs, from an exact-interpolation fit in the Chebyshev basis."""
    rho = np.cos(np.pi * (np.arange(64) + 0.5) / 64)  # Chebyshev nodes
    x = np.zeros((1, dim)); x[0, 0] = 1.0
    Y = np.zeros((len(rho), dim)); Y[:, 0] = rho; Y[:, 1] = np.sqrt(1 - rho ** 2)
    theta = ntkdist.ntk(x, Y, net=net)[0]
    coef = np.polynomial.chebyshev.chebfit(rho, theta, max_degree)
    significant = np.abs(coef) > 1e-11 * np.abs(coef).max()
    return int(np.flatnonzero(significant).max())


@pytest.mark.parametrize("q,depth,spec", [(2, 1, None), (2, 2, None), (2, 3, None), (1, 3, "abrelu(1, 1)"),
                                          (2, 2, "polynomial(0.1, 0.5, 1.0)"),
                                          (3, 2, "polynomial(0.1, 0.5, 1.0, 0.3)")])
def test_ntk_degree_in_the_cosine_is_q_to_the_depth(q, depth, spec):
    """With ``depth`` hidden layers the NTK is a polynomial of degree exactly q^depth in ρ (the readout adds none)."""
    act = Quadratic(0.1, 0.5, 1.0) if spec is None else get_activation(spec)
    assert P.activation_polynomial_degree(act) == q
    net = MLP(depth, act, 1.0, 0.1)
    assert _fit_degree(net, max_degree=max(12, q ** depth + 3)) == P.polynomial_kernel_degree(q, depth) == q ** depth


def _polynomial_nets():
    yield "quadratic (test-local)", MLP(2, Quadratic(0.1, 0.5, 1.0), 1.0, 0.1)
    yield "polynomial (ntkdist)", MLP(2, get_activation("polynomial(0.1, 0.5, 1.0)"), 1.0, 0.1)


def _nonpolynomial_nets():
    yield MLP(2, "erf", 1.0, 0.1)
    yield MLP(2, get_activation("tanh"), 1.0, 0.1)


@pytest.mark.parametrize("data", ["gaussian", "sphere"])
def test_degree_two_polynomial_at_depth_two_is_singular_beyond_the_rank_bound(data):
    d = 4
    bound = P.polynomial_rank_bound(d, 2, 2)
    assert bound == math.comb(d + 4, 4) == 70
    n = 120
    X = base(n, d, seed=11)
    if data == "sphere":
        X /= np.linalg.norm(X, axis=1, keepdims=True)
    nets = list(_polynomial_nets())
    for label, net in nets:
        verdict = P.ntk_positivity(X, net)
        assert verdict.singular and verdict.rank_bound == 70, (label, verdict.reason)
        values = eig(X, net)
        assert_singular(values)
        rank = int((values > rounding(values)).sum())
        assert rank <= bound
        if data == "gaussian":
            assert rank == bound  # the bound is attained by generic data (degree q^L also off the sphere)
        else:
            # on the sphere ‖x‖² = 1 removes the C(d + 2, 2) multiples of (‖x‖² − 1): 70 − 15
            assert rank == bound - math.comb(d + 2, 2)
    for net in _nonpolynomial_nets():
        verdict = P.ntk_positivity(X, net)
        assert verdict.guaranteed
        assert_positive(eig(X, net))


def test_polynomial_degrees_are_read_from_the_activations():
    assert P.activation_polynomial_degree(get_activation("polynomial(0.1, 0.5, 1.0)")) == 2
    assert P.activation_polynomial_degree(get_activation("identity")) == 1
    assert P.activation_polynomial_degree(get_activation("abrelu(0.5, 0.5)")) == 1
    assert P.activation_polynomial_degree(get_activation("tanh")) is None


def test_a_user_callable_is_not_certified_unless_it_says_what_it_is():
    """A callable that is secretly a polynomial would be singular beyond the rank bound: never call it PD."""
    from ntkdist.kernels.activations import custom

    X = base(120, 4, seed=11)
    quadratic = custom(lambda x: 0.1 + 0.5 * x + x * x, derivative=lambda x: 0.5 + 2 * x, name="secretquad")
    verdict = P.ntk_positivity(X, MLP(2, quadratic, 1.0, 0.1))
    assert verdict.status == "not_guaranteed" and "unknown" in verdict.reason
    assert_singular(eig(X, MLP(2, quadratic, 1.0, 0.1)))
    declared = custom(lambda x: 0.1 + 0.5 * x + x * x, derivative=lambda x: 0.5 + 2 * x, name="declaredquad",
                      polynomial_degree=2)
    assert P.ntk_positivity(X, MLP(2, declared, 1.0, 0.1)).singular
    swish = custom(lambda x: x / (1 + np.exp(-x)), name="swishy", non_polynomial=True)
    assert P.ntk_positivity(base(), MLP(2, swish, 1.0, 0.1)).guaranteed


def test_polynomial_below_the_rank_bound_is_not_guaranteed():
    X = base(30, 4, seed=2)
    net = MLP(2, Quadratic(0.1, 0.5, 1.0), 1.0, 0.1)
    verdict = P.ntk_positivity(X, net)
    assert verdict.status == "not_guaranteed" and "polynomial" in verdict.reason
    assert verdict.rank_bound == 70
    assert_positive(eig(X, net))  # 30 generic points < 70: here PD, but the theorem does not say so


# ================================================================================= finite width (empirical NTK)
def test_singularity_certificates_and_rank_bound_hold_at_finite_width():
    """The certificates come from f(−x) = ±f(x), f(t·x) = t·f(x), polynomial gradients: true for every draw."""
    from ntkdist.kernels.empirical import empirical_ntk

    X = base()
    for label, Xs, net in [("x, -x, erf", _with(X, -X[2]), MLP(2, "erf", 1.0, 0.0)),
                           ("x, -x, abs", _with(X, -X[2]), MLP(2, "abs", 2.0, 0.0)),
                           ("x, 2x, relu", _with(X, 2.0 * X[5]), MLP(2)),
                           ("zero, erf", _with(X, 0.0 * X[0]), MLP(2, "erf"))]:
        verdict = P.ntk_positivity(Xs, net, kind="empirical_ntk")
        assert verdict.singular, label
        assert_singular(np.linalg.eigvalsh(empirical_ntk(Xs, net=net, width=64, seed=3)))
    Xp = base(120, 4, seed=11)
    net = MLP(2, get_activation("polynomial(0.1, 0.5, 1.0)"), 1.0, 0.1)
    values = np.linalg.eigvalsh(empirical_ntk(Xp, net=net, width=128, seed=1))
    assert P.ntk_positivity(Xp, net, kind="empirical_ntk").singular
    assert int((values > rounding(values)).sum()) <= P.polynomial_rank_bound(4, 2, 2)
    # the theorem itself is about the infinite-width NTK
    generic = P.ntk_positivity(X, MLP(2, "erf", 1.0, 0.1), kind="empirical_ntk")
    assert generic.status == "not_guaranteed" and "infinite-width" in generic.reason


# ============================================================================= the pair search at scale (exact)
def _planted(n, d, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    extra = [X[3], -X[5], 2.5 * X[7], -0.3 * X[9], 0.0 * X[0], X[11] + 1e-9, X[13] * (1 + 1e-15),
             -X[15] * (1 - 1e-14), X[17] + 3e-7 * np.linalg.norm(X[17]) / np.sqrt(d), X[3]]
    X = np.vstack([X, extra])
    return X[rng.permutation(len(X))]


@pytest.mark.parametrize("n,d,seed", [(150, 1, 0), (500, 2, 1), (2000, 3, 2), (1500, 10, 3), (800, 64, 4)])
def test_pair_search_finds_exactly_what_the_bruteforce_scan_finds(n, d, seed):
    """Planted duplicates, antipodes, positive/negative multiples, zero rows and a 3e-7 near pair, any d."""
    X = _planted(n, d, seed)
    for tol in (P.ANGLE_TOL, 1e-9):
        fast = P._pair_structure(X, tol)
        slow = P._pair_structure_bruteforce(X, tol)
        for key in ("zero", "coincident", "positive_multiple", "antipodal", "negative_multiple"):
            assert fast[key] == slow[key], (key, fast[key][:5], slow[key][:5])
        assert fast["min_separation"] == pytest.approx(slow["min_separation"], rel=1e-12, abs=0)
    if d > 1:
        assert fast["coincident"] and fast["antipodal"] and fast["positive_multiple"] and fast["negative_multiple"]
        assert fast["min_separation"] < 1e-6


def test_pairs_within_is_exact_against_all_pairs():
    from scipy.spatial.distance import pdist, squareform

    from ntkdist.theory.pairs import pairs_within, signed_pairs_within

    rng = np.random.default_rng(7)
    X = rng.standard_normal((700, 5))
    X = np.vstack([X, X[:40] + 1e-3 * rng.standard_normal((40, 5)), -X[40:60]])
    D = squareform(pdist(X))
    S = squareform(pdist(X, lambda u, v: float(np.linalg.norm(u + v))))
    for radius in (0.0, 1e-3, 5e-3, 0.3):
        i, j, dist, candidates = pairs_within(X, radius, seed=3, chunk=4096)
        want = np.argwhere(np.triu(D <= radius, 1))
        assert np.array_equal(np.stack([i, j], axis=1), want), radius
        assert np.allclose(dist, D[i, j]) and candidates >= len(i)
        a, b, sign, _, _ = signed_pairs_within(X, radius, seed=5, chunk=1000)
        got = {(int(p), int(q), int(s)) for p, q, s in zip(a, b, sign)}
        expect = {(int(p), int(q), 1) for p, q in want}
        expect |= {(int(p), int(q), -1) for p, q in np.argwhere(np.triu(S <= radius, 1))}
        assert got == expect, radius


def test_pair_search_scales_past_the_quadratic_scan():
    """N = 200 000 in R¹⁶ (2·10¹⁰ pairs for the old scan) with planted structure, in seconds and O(N·d) memory."""
    import time
    import tracemalloc

    rng = np.random.default_rng(11)
    n, d = 200_000, 16
    X = rng.standard_normal((n, d))
    X[10] = X[20]
    X[30] = -X[40]
    X[50] = 3.0 * X[60]
    tracemalloc.start()
    start = time.perf_counter()
    try:
        pairs = P._pair_structure(X, P.ANGLE_TOL)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pairs["coincident"] == [(10, 20)] and pairs["antipodal"] == [(30, 40)]
    assert pairs["positive_multiple"] == [(50, 60)] and pairs["min_separation"] == 0.0
    assert peak < 40 * X.nbytes, peak
    assert seconds < 60, seconds


def test_interlacing_bound_with_the_projection_search_still_holds():
    from ntkdist.theory import bounds as B

    X = _with(base(600, 6, seed=5), base(600, 6, seed=5)[7] + 1e-4)
    net = MLP(2, "relu", 2.0, 0.1)
    exact = B.interlacing_upper_bound(X, net)
    projected = B.interlacing_upper_bound(X, net, exact_max_n=100)
    assert exact.details["pair_search"] == "exact" and "projections" in projected.details["pair_search"]
    true = eig(X, net)[0]
    assert projected.value >= true - rounding(eig(X, net)) and exact.value >= true - rounding(eig(X, net))
    # the planted near pair is found by the projection search too, so the bound stays tight
    assert projected.value <= 10 * exact.value
    found = B.near_pairs(X, 5, exact_max_n=100)
    assert (7, 600) in {tuple(p) for p in found.tolist()}


def test_a_lambda_min_at_rounding_neither_confirms_nor_refutes_positive_definiteness():
    """The tanh NTK on 2000 points of S² (the sphere-tanh example) is positive definite by Carvalho et al., but its
    smallest eigenvalues lie far below float64's resolution: the comparison must say "cannot tell", not "NO"."""
    from ntkdist.datasets import uniform_sphere
    from ntkdist.theory.compare import computed_spectrum, positivity_agrees
    from ntkdist.theory.positivity import POSITIVE_DEFINITE

    X = uniform_sphere(2000, 3, seed=0).to_array()
    net = MLP(3, "tanh", 1.5, 0.05)
    K = ntkdist.ntk(X, net=net)
    values = np.linalg.eigvalsh(K)[::-1]
    spectrum = computed_spectrum(len(K), values, float(np.trace(K)), lambda_min=float(values[-1]))
    assert P.ntk_positivity(X, net).status == POSITIVE_DEFINITE
    assert abs(values[-1]) < spectrum.slack  # at rounding: the exact λ_min is positive but unresolved
    assert positivity_agrees(POSITIVE_DEFINITE, spectrum.lambda_min, spectrum.slack) is None
    # Shifted down by more than rounding it is a contradiction; shifted up, a confirmation.
    for shift, expected in ((-10 * spectrum.slack, False), (10 * spectrum.slack, True)):
        shifted = computed_spectrum(len(K), values + shift, float(np.trace(K)), lambda_min=float(values[-1] + shift))
        assert positivity_agrees(POSITIVE_DEFINITE, shifted.lambda_min, shifted.slack) is expected
