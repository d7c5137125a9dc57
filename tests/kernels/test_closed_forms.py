"""The analytic kernels against independent closed forms written out here.

Two independent references: the textbook recursions in 40-digit arithmetic (mpmath), which stay exact even for
identical and parallel points where float64 formulas lose half their digits, and the same recursions in plain
float64 for many random, well-separated pairs.
"""

from __future__ import annotations

import numpy as np
import pytest

import ntkdist
from ntkdist.kernels import MLP

from ..helpers import assert_kernel_close, mp_kernels, tricky_inputs


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("bias_var", [0.0, 0.37])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_matches_40_digit_closed_form(activation, bias_var, depth):
    rng = np.random.default_rng(depth)
    X = tricky_inputs(rng)
    w = 1.7
    net = MLP(depth=depth, activation=activation, weight_var=w, bias_var=bias_var)
    got = {"ntk": ntkdist.ntk(X, net=net), "nngp": ntkdist.nngp(X, net=net)}
    n = len(X)
    ref = {"nngp": np.empty((n, n)), "ntk": np.empty((n, n))}
    for i in range(n):
        for j in range(n):
            ref["nngp"][i, j], ref["ntk"][i, j] = mp_kernels(X[i], X[j], depth=depth, activation=activation,
                                                            w=w, b=bias_var)
    for kind in ("ntk", "nngp"):
        R = ref[kind]
        assert_kernel_close(got[kind], R, np.sqrt(np.outer(np.diag(R), np.diag(R))), sizable=1e-6)
        assert np.all(got[kind][R == 0.0] == 0.0)


def float64_closed_form(X, Y, *, depth, activation, w, b):
    """The same recursions in plain float64 (fine away from parallel pairs)."""
    d = X.shape[1]
    s = w * X @ Y.T / d + b
    sx = w * (X * X).sum(1)[:, None] / d + b
    sy = w * (Y * Y).sum(1)[None, :] / d + b
    theta = s.copy()
    for _ in range(depth):
        if activation == "relu":
            scale = np.sqrt(sx * sy)
            c = np.clip(s / scale, -1, 1)
            angle = np.arccos(c)
            e = scale * (np.sin(angle) + (np.pi - angle) * c) / (2 * np.pi)
            de = (np.pi - angle) / (2 * np.pi)
            ex, ey = sx / 2, sy / 2
        else:
            e = 2 / np.pi * np.arcsin(2 * s / np.sqrt((1 + 2 * sx) * (1 + 2 * sy)))
            de = 4 / np.pi / np.sqrt((1 + 2 * sx) * (1 + 2 * sy) - 4 * s**2)
            ex = 2 / np.pi * np.arcsin(2 * sx / (1 + 2 * sx))
            ey = 2 / np.pi * np.arcsin(2 * sy / (1 + 2 * sy))
        s, sx, sy = w * e + b, w * ex + b, w * ey + b
        theta = s + w * de * theta
    return s, theta


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("bias_var", [0.0, 0.5])
def test_matches_float64_closed_form_on_many_pairs(activation, bias_var):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((300, 12)) * rng.uniform(0.1, 10.0, size=(300, 1))
    Y = rng.standard_normal((170, 12)) * rng.uniform(0.1, 10.0, size=(170, 1))
    for depth in (1, 3, 5):
        net = MLP(depth=depth, activation=activation, weight_var=1.3, bias_var=bias_var)
        s_ref, k_ref = float64_closed_form(X, Y, depth=depth, activation=activation, w=1.3, b=bias_var)
        diag = {}
        for name, Z in (("x", X), ("y", Y)):
            s_zz, k_zz = float64_closed_form(Z, Z, depth=depth, activation=activation, w=1.3, b=bias_var)
            diag[name] = (np.diag(s_zz), np.diag(k_zz))
        for got, ref, which in ((ntkdist.nngp(X, Y, net=net), s_ref, 0), (ntkdist.ntk(X, Y, net=net), k_ref, 1)):
            assert_kernel_close(got, ref, np.sqrt(np.outer(diag["x"][which], diag["y"][which])))


def test_zero_rows_give_zero_kernel_without_bias_and_bias_kernel_with_it():
    X = np.zeros((3, 4))
    X[1] = [1.0, -2.0, 0.5, 3.0]
    net = MLP(depth=3, activation="relu", weight_var=2.0, bias_var=0.0)
    K = ntkdist.ntk(X, net=net)
    assert np.all(K[0] == 0) and np.all(K[:, 2] == 0)
    # With bias the zero input sees only biases: NNGP diagonal q_{l+1} = w·q_l/2 + b from q_1 = b.
    b = 0.4
    q = b
    for _ in range(3):
        q = 2.0 * q / 2 + b
    S = ntkdist.nngp(X, net=MLP(depth=3, activation="relu", weight_var=2.0, bias_var=b))
    assert S[0, 0] == pytest.approx(q, rel=1e-15)


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_gram_is_symmetric_and_positive_semidefinite(activation):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((400, 6))
    K = ntkdist.ntk(X, net=MLP(depth=3, activation=activation, weight_var=1.5, bias_var=0.2))
    assert np.array_equal(K, K.T)
    eig = np.linalg.eigvalsh(K)
    assert eig[0] > -1e-12 * eig[-1]


def test_diagonal_is_exactly_the_depth_sum_for_critical_relu():
    # ReLU, w = 2, b = 0: every Σ^l(x, x) = 2‖x‖²/d and Θ(x, x) = (depth + 1)·2‖x‖²/d (Arora et al. 2019).
    rng = np.random.default_rng(4)
    X = rng.standard_normal((50, 8))
    for depth in (1, 4):
        K = ntkdist.ntk(X, net=MLP(depth=depth))
        np.testing.assert_allclose(np.diag(K), (depth + 1) * 2 * (X * X).sum(1) / 8, rtol=1e-14)


@pytest.mark.parametrize("block", [37, 100, 256, 333])
def test_blocks_of_any_size_assemble_to_the_whole_gram_bit_for_bit(block):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((700, 9))
    X[10] = X[11]  # duplicates land in different blocks for some block sizes
    net = MLP(depth=2, activation="relu", bias_var=0.1)
    whole = ntkdist.ntk(X, net=net)
    assembled = np.empty_like(whole)
    for i in range(0, len(X), block):
        for j in range(i, len(X), block):
            rows, cols = slice(i, i + block), slice(j, j + block)
            part = ntkdist.gram_block(X[rows], None if i == j else X[cols], net=net, kind="ntk")
            assembled[rows, cols] = part
            assembled[cols, rows] = part.T
    assert np.array_equal(assembled, whole)


def test_float32_storage_rounds_the_float64_result():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((100, 4))
    net = MLP(depth=2)
    assert np.array_equal(ntkdist.ntk(X, net=net, dtype="float32"), ntkdist.ntk(X, net=net).astype(np.float32))


def test_nngp_of_a_two_layer_network_matches_monte_carlo_over_sampled_networks():
    """E[f(x)f(y)] over random stax networks of any width equals the depth-1 NNGP exactly (one hidden layer)."""
    rng = np.random.default_rng(8)
    d, width, samples = 4, 64, 4000
    X = rng.standard_normal((5, d)) * np.array([[0.3], [1.0], [2.0], [0.7], [1.5]])
    w, b = 1.6, 0.3
    net = MLP(depth=1, activation="relu", weight_var=w, bias_var=b)
    W1 = rng.standard_normal((samples, width, d)) * np.sqrt(w)
    b1 = rng.standard_normal((samples, width, 1)) * np.sqrt(b)
    W2 = rng.standard_normal((samples, 1, width)) * np.sqrt(w)
    b2 = rng.standard_normal((samples, 1, 1)) * np.sqrt(b)
    hidden = np.maximum(W1 @ X.T / np.sqrt(d) + b1, 0.0)
    f = (W2 @ hidden / np.sqrt(width) + b2)[:, 0, :]  # (samples, points)
    products = f[:, :, None] * f[:, None, :]
    mean = products.mean(0)
    stderr = products.std(0, ddof=1) / np.sqrt(samples)
    K = ntkdist.nngp(X, net=net)
    assert np.all(np.abs(mean - K) < 4 * stderr)


def test_bad_inputs_name_the_argument():
    net = MLP(depth=1)
    with pytest.raises(ValueError, match="X: row 1 contains NaN"):
        ntkdist.ntk(np.array([[1.0, 2.0], [np.nan, 0.0]]), net=net)
    with pytest.raises(ValueError, match="Y: has 3 features but X has 2"):
        ntkdist.ntk(np.ones((2, 2)), np.ones((2, 3)), net=net)
    with pytest.raises(ValueError, match="X: expected a 2-D array"):
        ntkdist.ntk(np.ones(3), net=net)
    with pytest.raises(ValueError, match="kind: must be one of"):
        ntkdist.gram_block(np.ones((2, 2)), net=net, kind="cntk")
    with pytest.raises(ValueError, match="activation: unknown activation 'swish'"):
        MLP(depth=1, activation="swish")
    with pytest.raises(ValueError, match="weight_var: must be > 0"):
        MLP(depth=1, weight_var=0.0)
    with pytest.raises(ValueError, match="depth: must be an integer"):
        MLP(depth=0)


@pytest.mark.gpu
def test_cupy_inputs_give_cupy_results_equal_to_numpy():
    import cupy

    rng = np.random.default_rng(9)
    X = rng.standard_normal((300, 7))
    for activation in ("relu", "erf"):
        net = MLP(depth=3, activation=activation, bias_var=0.2)
        on_gpu = ntkdist.ntk(cupy.asarray(X), net=net)
        assert isinstance(on_gpu, cupy.ndarray)
        np.testing.assert_allclose(on_gpu.get(), ntkdist.ntk(X, net=net), rtol=1e-12, atol=0)
