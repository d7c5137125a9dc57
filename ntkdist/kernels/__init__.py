"""Kernels: activations, the analytic NNGP/NTK recursions and their Gram matrices.

Pure functions on arrays; ``xp`` is NumPy or CuPy, whichever holds the input. Never imports ray, prefect or zarr.
"""

from .activation_scope import ActivationScope, current_scope
from .activations import (
    DEFAULT_TOL, ABReLU, Abs, Activation, Cos, Custom, Erf, Gelu, Identity, LeakyReLU, MehlerActivation, PairMoments,
    Polynomial, ReLU, Sigmoid, Sin, Softplus, Tanh, available_activations, get_activation, numerical_derivative,
)
from .gram import DTYPES, ENGINES, KINDS, TILE, default_threads, gram_block, nngp, ntk, resolve_engine, validate_inputs
from .empirical import (ForwardPass, SampledNetwork, backward_signals, empirical_gram_block, empirical_nngp,
                        empirical_ntk, forward, sample_network)
from .network import MLP

__all__ = [
    "ABReLU", "Abs", "Activation", "ActivationScope", "Erf", "LeakyReLU", "ReLU", "available_activations",
    "current_scope", "get_activation",
    "DEFAULT_TOL", "Cos", "Custom", "Gelu", "Identity", "MehlerActivation", "PairMoments", "Polynomial", "Sigmoid",
    "Sin", "Softplus", "Tanh", "numerical_derivative",
    "MLP", "DTYPES", "ENGINES", "KINDS", "TILE", "default_threads", "gram_block", "nngp", "ntk", "resolve_engine",
    "validate_inputs", "ForwardPass", "SampledNetwork", "backward_signals", "empirical_gram_block", "empirical_nngp",
    "empirical_ntk", "forward", "sample_network",
]
