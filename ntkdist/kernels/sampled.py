"""Kernels of many sampled finite-width networks on a few points: the inner loop of Monte Carlo over networks.

`ntkdist.kernels.empirical` computes the empirical NTK of one network on many points, in fixed tiles of
``TILE`` rows so that blocks assemble bit for bit. Monte Carlo over networks is the other way round: thousands of
networks on a handful of points (m ≤ ~64), where padding every call to ``TILE`` rows would cost more than the
arithmetic. Here each network runs one forward and one backward pass over the m points as they are (the same
per-tile functions, unpadded) and returns, from the same features,

* Θ̂ — the empirical NTK in ntkdist's (stax) NTK parameterization, Θ̂ = Σ_l ⟨δ_l, δ_l⟩·(σ_w²⟨a_{l−1}, a_{l−1}⟩/n_{l−1}
  + σ_b²) (Novak, Sohl-Dickstein, Schoenholz 2022, the structured-derivative form of a Dense layer);
* K̂ — f(x)·f(y), the rank-one empirical NNGP of the scalar output;
* JJᵀ in the *standard* parameterization — the Gram of the gradients with respect to W'_l = (σ_w/√n_{l−1})·W_l
  and b'_l = σ_b·β_l, the weights the network actually multiplies by (Nguyen, Mondelli, Montúfar 2021, §2:
  K̄^{(L)} = JJᵀ with (W_l)_ij ~ N(0, β_l²), here β_l² = σ_w²/n_{l−1}). The forward pass and the δ_l are the same
  in both parameterizations; only the chain rule's last factor differs (∂h_l/∂W'_l = a_{l−1} instead of
  (σ_w/√n_{l−1})·a_{l−1}), so layer l's term is n_{l−1}/σ_w² times its NTK-parameterization term:

      K̄(x, y) = Σ_{l=1}^{L+1} ⟨δ_l(x), δ_l(y)⟩·(⟨a_{l−1}(x), a_{l−1}(y)⟩ + [σ_b > 0]).

  With σ_w² = 2 (He initialisation) and one wide layer of width n, the term of the layer it feeds grows like n:
  Nguyen et al.'s Theorem 4.1 (docs/finite-width.md).

Seeds: network ``index`` of width ``n`` in a study with base seed ``s`` is drawn by `sample_weights` from
`network_seed` (s, n, index), so every network is the same whichever worker or task draws it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .empirical import SampledWeights, _tile_backward, _tile_forward, sample_weights
from .gram import validate_inputs
from .network import MLP


class NetworkKernels(NamedTuple):
    """The kernels of one sampled network on m points, each (m, m) float64."""

    ntk: np.ndarray
    """Θ̂, NTK parameterization (ntkdist's convention; its mean over networks tends to `ntkdist.ntk`)."""
    nngp: np.ndarray
    """f(x_a)·f(x_b) (its mean over networks tends to `ntkdist.nngp`)."""
    standard_ntk: np.ndarray
    """JJᵀ with respect to the standard-parameterization weights (Nguyen et al.'s K̄; grows with the widths)."""


def network_seed(base_seed: int, width: int, index: int) -> int:
    """The seed of network ``index`` (0, 1, …) of hidden width ``width`` in a study with seed ``base_seed``.

    The first 63 bits of ``numpy.random.SeedSequence((base_seed, width, index))``: a hash of the three integers,
    so networks of different widths or indices are independent draws, and a network does not depend on how
    the draws are split among workers.
    """
    for name, value in (("seed", base_seed), ("width", width), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name}: must be a non-negative integer, got {value!r}")
    state = np.random.SeedSequence((int(base_seed), int(width), int(index))).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def network_kernels(params: SampledWeights, X) -> NetworkKernels:
    """Θ̂, K̂ and the standard-parameterization JJᵀ of one sampled network on the (m, d) points X (NumPy).

    One forward and one backward pass over the m rows, unpadded (module docstring); float64.
    """
    if not isinstance(params, SampledWeights):
        raise ValueError(f"params: expected a SampledWeights from sample_weights, got {type(params).__name__}")
    X, _ = validate_inputs(np.asarray(X, dtype=np.float64))
    if X.shape[1] != params.dim:
        raise ValueError(f"X: has {X.shape[1]} features but the network takes inputs of dimension {params.dim}")
    net = params.net
    pre, post = _tile_forward(params, X)
    deltas = [*_tile_backward(params, pre), np.ones((X.shape[0], 1))]
    sizes = params.layer_sizes
    bias = 1.0 if net.bias_var > 0 else 0.0
    ntk = np.zeros((X.shape[0], X.shape[0]))
    standard = np.zeros_like(ntk)
    for layer, (a, delta) in enumerate(zip(post, deltas)):
        inputs_gram = a @ a.T
        deltas_gram = delta @ delta.T
        ntk += deltas_gram * (net.weight_var / sizes[layer] * inputs_gram + net.bias_var)
        standard += deltas_gram * (inputs_gram + bias)
    f = pre[-1][:, 0]
    return NetworkKernels(ntk, np.outer(f, f), standard)


def sampled_network_kernels(X, net: MLP, *, width, seed: int) -> NetworkKernels:
    """`network_kernels` of the network of ``net``'s architecture with hidden ``width`` drawn from ``seed``."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X: must be an (m, d) array of points, got shape {X.shape}")
    return network_kernels(sample_weights(net, dim=X.shape[1], width=width, seed=seed), X)
