"""Kernels of one sampled network on a few points (ntkdist.kernels.sampled) against the tiled engine and against
finite-difference Jacobians of the standard-parameterization weights."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from ntkdist.kernels import MLP, empirical_gram_block, forward, sample_weights
from ntkdist.kernels.sampled import network_kernels, network_seed, sampled_network_kernels

X = np.random.default_rng(5).standard_normal((3, 3))


@pytest.mark.parametrize("spec, bias_var", [("relu", 0.0), ("gelu", 0.3)])
def test_ntk_and_nngp_match_the_tiled_engine(spec, bias_var):
    net = MLP(depth=2, activation=spec, weight_var=1.7, bias_var=bias_var)
    params = sample_weights(net, dim=3, width=(7, 5), seed=11)
    k = network_kernels(params, X)
    np.testing.assert_allclose(k.ntk, empirical_gram_block(X, params=params, kind="ntk"), rtol=1e-12)
    f = forward(params, X).output
    np.testing.assert_allclose(k.nngp, np.outer(f, f), rtol=1e-12)


@pytest.mark.parametrize("bias_var", [0.0, 0.4])
def test_standard_ntk_is_the_gram_of_finite_difference_gradients(bias_var):
    """JJᵀ with J = ∂f/∂(W'_l, b'_l), W'_l = (σ_w/√n_{l−1})W_l, b'_l = σ_b β_l, by central differences (ε = 1e-5)."""
    net = MLP(depth=2, activation="tanh", weight_var=2.0, bias_var=bias_var)
    params = sample_weights(net, dim=3, width=(4, 3), seed=2)
    sizes, eps = params.layer_sizes, 1e-5
    columns = []
    for layer in range(len(params.weights)):
        # A step ε in W'_l is a step ε·√n_{l−1}/σ_w in W_l (and ε/σ_b in β_l).
        scales = [("weights", math.sqrt(sizes[layer] / net.weight_var))]
        if bias_var > 0:
            scales.append(("biases", 1.0 / math.sqrt(bias_var)))
        for name, scale in scales:
            base = getattr(params, name)[layer]
            for index in np.ndindex(base.shape):
                outputs = []
                for sign in (1, -1):
                    moved = base.copy()
                    moved[index] += sign * eps * scale
                    arrays = list(getattr(params, name))
                    arrays[layer] = moved
                    outputs.append(forward(dataclasses.replace(params, **{name: tuple(arrays)}), X).output)
                columns.append((outputs[0] - outputs[1]) / (2 * eps))
    J = np.stack(columns, axis=1)
    np.testing.assert_allclose(network_kernels(params, X).standard_ntk, J @ J.T, rtol=1e-7)


def test_network_seed_is_a_fixed_hash_of_its_three_integers():
    seeds = {network_seed(0, w, k) for w in (20, 40) for k in range(100)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)
    assert network_seed(3, 20, 7) == network_seed(3, 20, 7) != network_seed(4, 20, 7)
    a = sampled_network_kernels(X, MLP(depth=1), width=8, seed=network_seed(0, 8, 1))
    b = sampled_network_kernels(X, MLP(depth=1), width=8, seed=network_seed(0, 8, 1))
    assert np.array_equal(a.ntk, b.ntk)
    with pytest.raises(ValueError, match="width"):
        network_seed(0, -1, 0)
    with pytest.raises(ValueError, match="X"):
        network_kernels(sample_weights(MLP(depth=1), dim=4, width=3, seed=0), X)
