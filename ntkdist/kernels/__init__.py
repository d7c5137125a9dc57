"""Kernels: activations, the analytic NNGP/NTK recursions and their Gram matrices.

The activation constructors (``relu()``, ``leaky_relu(0.1)``, ``tanh(tol=...)``, ``custom(fn)``) live in
`ntkdist.kernels.activations`; this package re-exports the activation types and the registry.

Pure functions on arrays; ``xp`` is NumPy or CuPy, whichever holds the input. Never imports ray, prefect or zarr.
"""

from . import activations
from .activation_scope import ActivationScope, current_scope
from .activations import (
    DEFAULT_TOL, ABReLU, Activation, Cos, Custom, Erf, Gelu, Identity, MehlerActivation, PairMoments, Polynomial,
    Sigmoid, Sin, Softplus, Tanh, available_activations, get_activation, numerical_derivative,
)
from .tiles import DTYPES, KINDS
from .gram import (ARITHMETIC_REVISION, ENGINES, TILE, default_threads, gram_block, nngp, ntk, resolve_engine,
                   validate_inputs)
from .empirical import (ForwardPass, SampledWeights, backward_signals, empirical_gram_block, empirical_nngp,
                        empirical_ntk, forward, sample_weights)
from .network import MLP
from .output_memory import release_pooled_outputs

__all__ = [
    "activations", "ABReLU", "Activation", "ActivationScope", "Erf", "available_activations", "current_scope",
    "get_activation",
    "DEFAULT_TOL", "Cos", "Custom", "Gelu", "Identity", "MehlerActivation", "PairMoments", "Polynomial", "Sigmoid",
    "Sin", "Softplus", "Tanh", "numerical_derivative",
    "MLP", "ARITHMETIC_REVISION", "DTYPES", "ENGINES", "KINDS", "TILE", "default_threads", "gram_block", "nngp",
    "ntk", "resolve_engine",
    "validate_inputs", "ForwardPass", "SampledWeights", "backward_signals", "empirical_gram_block", "empirical_nngp",
    "empirical_ntk", "forward", "sample_weights", "release_pooled_outputs",
]
