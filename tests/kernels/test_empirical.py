"""The empirical NTK of one sampled finite-width network.

References used here, independent of the per-layer factorization the module implements:

* the per-parameter Jacobian of f, by complex-step differentiation of a forward pass written out in this file
  (∂f/∂θ_k = Im f(θ + i·h·e_k)/h with h = 1e-30: no subtraction, so exact to rounding, Squire & Trapp 1998);
* the analytic `ntkdist.ntk`, which is E[Θ̂] exactly for one hidden layer and the width → ∞ limit deeper.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.special

import ntkdist
from ntkdist.kernels import MLP
from ntkdist.kernels.empirical import (
    TILE,
    SampledWeights,
    backward_signals,
    empirical_gram_block,
    empirical_nngp,
    empirical_ntk,
    forward,
    sample_weights,
)
import ntkdist.kernels.empirical as empirical_module

# Activations continued to complex arguments, for the complex step. ReLU is piecewise linear: away from 0 its
# continuation is z or 0 by the sign of the real part, and at 0 it takes the JAX convention φ'(0) = 0.
COMPLEX_ACTIVATIONS = {
    "relu": lambda z: np.where(z.real > 0, z, 0.0),
    "erf": scipy.special.erf,
    "tanh": np.tanh,
}


def reference_output(params: SampledWeights, X, flat):
    """f(x) of the stax NTK-parameterization network, with all parameters taken from the flat vector ``flat``
    (complex allowed): layer by layer W_l (n_{l-1} × n_l, row-major) then β_l."""
    net = params.net
    act = COMPLEX_ACTIVATIONS[net.activation.name]
    sizes = params.layer_sizes
    a = X.astype(flat.dtype)
    at = 0
    for layer in range(len(sizes) - 1):
        n_in, n_out = sizes[layer], sizes[layer + 1]
        W = flat[at:at + n_in * n_out].reshape(n_in, n_out)
        at += n_in * n_out
        beta = flat[at:at + n_out]
        at += n_out
        h = math.sqrt(net.weight_var) / math.sqrt(n_in) * (a @ W) + math.sqrt(net.bias_var) * beta
        a = act(h) if layer < net.depth else h
    assert at == flat.size
    return a[:, 0]


def flat_parameters(params: SampledWeights):
    return np.concatenate([np.concatenate([W.ravel(), b]) for W, b in zip(params.weights, params.biases)])


def complex_step_jacobian(params: SampledWeights, X):
    """(N, P) matrix of ∂f(x_i)/∂θ_k, one complex-step forward pass per parameter."""
    theta = flat_parameters(params).astype(complex)
    step = 1e-30
    J = np.empty((len(X), theta.size))
    for k in range(theta.size):
        shifted = theta.copy()
        shifted[k] += 1j * step
        J[:, k] = reference_output(params, X, shifted).imag / step
    return J


def assert_close_to_scale(got, ref, rtol):
    """Entrywise within rtol·√(K_ii K_jj) (entries that cancel far below their scale get no relative bound)."""
    d = np.sqrt(np.abs(np.diag(ref)))
    assert np.all(np.abs(got - ref) <= rtol * np.outer(d, d)), np.max(np.abs(got - ref) / np.outer(d, d))


def mixed_points(rng, n, d):
    """Gaussian directions with norms over an order of magnitude, one near-parallel pair."""
    X = rng.standard_normal((n, d))
    X *= np.geomspace(0.3, 4.0, n)[:, None] / np.linalg.norm(X, axis=1, keepdims=True)
    X[-1] = 0.7 * X[0] + 0.05 * rng.standard_normal(d)
    return X


# --------------------------------------------------------------------------------------------------------------
# 1. Exactness against the complex-step Jacobian J Jᵀ.

@pytest.mark.parametrize("activation", ["relu", "erf", "tanh"])
@pytest.mark.parametrize("bias_var", [0.0, 0.45])
@pytest.mark.parametrize("depth, width", [(1, 5), (2, (4, 3)), (3, (3, 5, 4))])
def test_equals_jacobian_gram_of_every_parameter(activation, bias_var, depth, width):
    rng = np.random.default_rng(depth)
    d = 3
    X = rng.standard_normal((7, d)) * rng.uniform(0.2, 3.0, size=(7, 1))
    X[3] = 0.0  # only biases reach it (and ReLU'(0) = 0 without them)
    X[5] = -1.5 * X[1]
    Y = rng.standard_normal((4, d))
    net = MLP(depth=depth, activation=activation, weight_var=1.7, bias_var=bias_var)
    params = sample_weights(net, dim=d, width=width, seed=11)

    JX, JY = complex_step_jacobian(params, X), complex_step_jacobian(params, Y)
    assert JX.shape[1] == params.num_parameters
    ref = JX @ JX.T
    got = empirical_ntk(X, net=net, width=width, seed=11)
    assert_close_to_scale(got, ref, 1e-13)
    np.testing.assert_allclose(empirical_ntk(X, Y, net=net, width=width, seed=11), JX @ JY.T,
                               rtol=1e-12, atol=1e-13 * np.abs(ref).max())
    # The forward pass is the network written out above.
    f = reference_output(params, X, flat_parameters(params))
    np.testing.assert_allclose(forward(params, X).output, f, rtol=1e-14, atol=1e-15 * np.abs(f).max())
    np.testing.assert_allclose(empirical_nngp(X, net=net, width=width, seed=11), np.outer(f, f),
                               rtol=1e-13, atol=1e-15 * np.abs(f).max() ** 2)


def test_factorization_from_public_forward_and_backward_signals():
    """The formula in the module docstring, assembled by hand from `forward` and `backward_signals`."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((150, 4))  # more than one tile
    net = MLP(depth=2, activation="erf", weight_var=1.3, bias_var=0.2)
    params = sample_weights(net, dim=4, width=(6, 9), seed=3)
    fp = forward(params, X)
    deltas = backward_signals(params, fp)
    assert [h.shape for h in fp.pre_activations] == [(150, 6), (150, 9), (150, 1)]
    assert [a.shape for a in fp.post_activations] == [(150, 4), (150, 6), (150, 9)]
    assert [g.shape for g in deltas] == [(150, 6), (150, 9), (150, 1)]
    manual = sum((g @ g.T) * (net.weight_var * (a @ a.T) / a.shape[1] + net.bias_var)
                 for g, a in zip(deltas, fp.post_activations))
    np.testing.assert_allclose(empirical_gram_block(X, params=params), manual, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------------------------------------------
# 2. One hidden layer: E[Θ̂] is the analytic NTK at any width.

@pytest.mark.parametrize("activation, bias_var", [("relu", 0.0), ("relu", 0.3), ("erf", 0.0), ("erf", 0.3)])
def test_mean_over_networks_of_one_hidden_layer_is_the_analytic_kernel_at_width_4(activation, bias_var):
    rng = np.random.default_rng(2)
    X = mixed_points(rng, 6, 4)
    net = MLP(depth=1, activation=activation, weight_var=1.7, bias_var=bias_var)
    seeds = 4000
    ntk_samples = np.empty((seeds, 6, 6))
    nngp_samples = np.empty((seeds, 6, 6))
    for seed in range(seeds):
        params = sample_weights(net, dim=4, width=4, seed=seed)
        ntk_samples[seed] = empirical_gram_block(X, params=params, kind="ntk")
        nngp_samples[seed] = empirical_gram_block(X, params=params, kind="nngp")
    for samples, analytic in ((ntk_samples, ntkdist.ntk(X, net=net)), (nngp_samples, ntkdist.nngp(X, net=net))):
        mean = samples.mean(0)
        stderr = samples.std(0, ddof=1) / np.sqrt(seeds)
        assert np.all(np.abs(mean - analytic) < 4 * stderr), np.max(np.abs(mean - analytic) / stderr)
        # The test has power: the standard errors are a few percent of the kernel.
        assert np.all(stderr < 0.05 * np.sqrt(np.outer(np.diag(analytic), np.diag(analytic))))


# --------------------------------------------------------------------------------------------------------------
# 3. Acceptance: width 2048, 64 seeds, depth 3, within 4 standard errors of the analytic NTK.

ACCEPTANCE_CASES = {
    "relu": MLP(depth=3, activation="relu", weight_var=2.0, bias_var=0.0),
    "erf": MLP(depth=3, activation="erf", weight_var=1.7, bias_var=0.3),
    "tanh": dict(depth=3, activation="tanh", weight_var=1.5, bias_var=0.0),
}
ACCEPTANCE_SEEDS = 64


@pytest.fixture(scope="module")
def acceptance_samples():
    """Θ̂ of every available case for the same 64 networks: each seed's draws are sampled once and reused with
    every activation (`SampledWeights.net` may be replaced; the standard-normal draws do not depend on it)."""
    X = mixed_points(np.random.default_rng(3), 8, 6)
    nets = {name: (MLP(**case) if isinstance(case, dict) else case) for name, case in ACCEPTANCE_CASES.items()}
    samples = {name: np.empty((ACCEPTANCE_SEEDS, len(X), len(X))) for name in nets}
    for seed in range(ACCEPTANCE_SEEDS):
        params = sample_weights(nets["relu"], dim=X.shape[1], width=2048, seed=seed)
        for name, net in nets.items():
            samples[name][seed] = empirical_gram_block(X, params=dataclasses.replace(params, net=net))
    return X, nets, samples


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["relu", "erf", "tanh"])
def test_mean_of_64_networks_of_width_2048_is_within_4_standard_errors_of_the_analytic_ntk(
        activation, acceptance_samples):
    X, nets, samples = acceptance_samples
    net = nets[activation]
    if activation == "relu":
        # The reused-draws path is `empirical_ntk` itself.
        assert np.array_equal(samples["relu"][5], empirical_ntk(X, net=net, width=2048, seed=5))
    mean = samples[activation].mean(0)
    stderr = samples[activation].std(0, ddof=1) / np.sqrt(ACCEPTANCE_SEEDS)
    analytic = ntkdist.ntk(X, net=net)
    assert np.all(np.abs(mean - analytic) < 4 * stderr), np.max(np.abs(mean - analytic) / stderr)
    scale = np.sqrt(np.outer(np.diag(analytic), np.diag(analytic)))
    assert np.all(stderr < 0.02 * scale)  # a 2048-wide network is within a few percent of its limit


# --------------------------------------------------------------------------------------------------------------
# 4. Determinism: blocks, panels, seeds.

@pytest.mark.parametrize("block", [37, 100, TILE, 333])
def test_blocks_of_any_size_assemble_to_the_whole_gram_bit_for_bit(block):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((420, 7))
    X[10] = X[11]  # duplicates land in different blocks for some block sizes
    net = MLP(depth=2, activation="relu", bias_var=0.1)
    whole = empirical_ntk(X, net=net, width=(48, 40), seed=9)
    assert np.array_equal(whole, whole.T)
    assert np.array_equal(whole[10], whole[11])
    assembled = np.empty_like(whole)
    for i in range(0, len(X), block):
        for j in range(i, len(X), block):
            rows, cols = slice(i, i + block), slice(j, j + block)
            part = empirical_ntk(X[rows], None if i == j else X[cols], net=net, width=(48, 40), seed=9)
            assembled[rows, cols] = part
            assembled[cols, rows] = part.T
    assert np.array_equal(assembled, whole)


def test_row_panels_that_hold_few_tiles_give_the_same_bits(monkeypatch):
    rng = np.random.default_rng(6)
    X, Y = rng.standard_normal((300, 5)), rng.standard_normal((140, 5))
    params = sample_weights(MLP(depth=3, activation="erf", bias_var=0.2), dim=5, width=32, seed=2)
    one_panel = {k: empirical_gram_block(X, Y if k == "xy" else None, params=params) for k in ("xx", "xy")}
    monkeypatch.setattr(empirical_module, "FEATURE_BYTES", 1)  # one tile per panel
    for k, expected in one_panel.items():
        assert np.array_equal(empirical_gram_block(X, Y if k == "xy" else None, params=params), expected)


def test_same_seed_reproduces_and_different_seeds_differ():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((20, 3))
    net = MLP(depth=2, activation="erf")
    a = empirical_ntk(X, net=net, width=16, seed=4)
    assert np.array_equal(a, empirical_ntk(X, net=net, width=16, seed=4))
    assert np.array_equal(a, empirical_ntk(X.tolist(), net=net, width=[16, 16], seed=np.int64(4)))
    b = empirical_ntk(X, net=net, width=16, seed=5)
    assert np.all(a != b)
    # The network does not depend on the data: a subset's kernel is the same sub-matrix.
    assert np.array_equal(empirical_ntk(X[3:9], net=net, width=16, seed=4), a[3:9, 3:9])
    p, q = sample_weights(net, dim=3, width=16, seed=4), sample_weights(net, dim=3, width=16, seed=4)
    assert all(np.array_equal(u, v) for u, v in zip(p.weights + p.biases, q.weights + q.biases))
    # Each layer draws from its own stream: a deeper network shares the shallower one's first layers.
    deeper = sample_weights(MLP(depth=3, activation="erf"), dim=3, width=16, seed=4)
    assert np.array_equal(deeper.weights[0], p.weights[0]) and np.array_equal(deeper.weights[1], p.weights[1])


def test_nngp_kind_is_the_outer_product_of_the_forward_outputs_and_float32_rounds_float64():
    rng = np.random.default_rng(8)
    X, Y = rng.standard_normal((200, 4)), rng.standard_normal((30, 4))
    params = sample_weights(MLP(depth=2, activation="relu", bias_var=0.5), dim=4, width=24, seed=1)
    fx, fy = forward(params, X).output, forward(params, Y).output
    assert np.array_equal(empirical_gram_block(X, Y, params=params, kind="nngp"), np.outer(fx, fy))
    full = empirical_gram_block(X, Y, params=params)
    assert np.array_equal(empirical_gram_block(X, Y, params=params, dtype="float32"), full.astype(np.float32))
    assert empirical_gram_block(X[:0], Y, params=params).shape == (0, 30)


# --------------------------------------------------------------------------------------------------------------
# 5. Bad inputs.

def test_bad_inputs_name_the_argument():
    net = MLP(depth=2)
    X = np.ones((3, 2))
    with pytest.raises(ValueError, match="Y: has 3 features but X has 2"):
        empirical_ntk(X, np.ones((2, 3)), net=net, width=4, seed=0)
    with pytest.raises(ValueError, match="X: row 1 contains NaN"):
        empirical_ntk(np.array([[1.0, 2.0], [np.nan, 0.0]]), net=net, width=4, seed=0)
    with pytest.raises(ValueError, match="X: expected a 2-D array"):
        empirical_ntk(np.ones(3), net=net, width=4, seed=0)
    with pytest.raises(ValueError, match="width: the width must be an integer ≥ 1, got 0"):
        empirical_ntk(X, net=net, width=0, seed=0)
    with pytest.raises(ValueError, match="width: entry 1 must be an integer ≥ 1, got -3"):
        empirical_ntk(X, net=net, width=(4, -3), seed=0)
    with pytest.raises(ValueError, match="width: got 3 widths for a network of depth 2"):
        empirical_ntk(X, net=net, width=(4, 4, 4), seed=0)
    with pytest.raises(ValueError, match="width: the width must be an integer ≥ 1, got 2.5"):
        empirical_ntk(X, net=net, width=2.5, seed=0)
    with pytest.raises(ValueError, match="seed: must be a non-negative integer"):
        empirical_ntk(X, net=net, width=4, seed=-1)
    with pytest.raises(ValueError, match="net: expected an ntkdist MLP"):
        empirical_ntk(X, net="relu", width=4, seed=0)
    params = sample_weights(net, dim=2, width=4, seed=0)
    with pytest.raises(ValueError, match="X_rows: has 5 features but the sampled network takes inputs of dimension 2"):
        empirical_gram_block(np.ones((3, 5)), params=params)
    with pytest.raises(ValueError, match="Y: has 5 features but X has 2"):
        empirical_gram_block(X, np.ones((3, 5)), params=params)
    with pytest.raises(ValueError, match="kind: must be one of"):
        empirical_gram_block(X, params=params, kind="cntk")
    with pytest.raises(ValueError, match="net: has depth 3 but the sampled network has 2 hidden layers"):
        dataclasses.replace(params, net=MLP(depth=3))
    with pytest.raises(ValueError, match="dim: must be an integer ≥ 1"):
        sample_weights(net, dim=0, width=4, seed=0)


@pytest.mark.gpu
def test_cupy_inputs_give_cupy_results_equal_to_numpy():
    import cupy

    rng = np.random.default_rng(9)
    X = rng.standard_normal((300, 7))
    for activation in ("relu", "erf"):
        net = MLP(depth=3, activation=activation, bias_var=0.2)
        on_gpu = empirical_ntk(cupy.asarray(X), net=net, width=256, seed=1)
        assert isinstance(on_gpu, cupy.ndarray)
        assert cupy.array_equal(on_gpu, on_gpu.T)
        np.testing.assert_allclose(on_gpu.get(), empirical_ntk(X, net=net, width=256, seed=1), rtol=1e-11, atol=0)
