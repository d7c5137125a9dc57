"""The network description (`MLP`) shared by every kernel, solver and theory function.

The mathematics, with its conventions, errata and tests: docs/theory.md §1.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .activations import Activation, get_activation


@dataclass(frozen=True)
class MLP:
    """A fully-connected network in the NTK parameterization of neural-tangents ``stax``.

    ``depth`` hidden layers, each ``Dense(width, W_std, b_std, parameterization='ntk')`` followed by the
    activation, then a linear readout ``Dense(1, W_std, b_std)``; ``weight_var = W_std²``, ``bias_var = b_std²``.
    The first layer's covariance is ``weight_var·⟨x, y⟩/d + bias_var`` (d = input dimension).

    Parameters
    ----------
    depth : int
        Number of hidden layers (≥ 1). ``depth=1`` is a two-layer network.
    activation : str or Activation
        ``"relu"``, ``"erf"``, … (see `ntkdist.kernels.available_activations`) or an `Activation` object.
    weight_var, bias_var : float
        W_std² > 0 and b_std² ≥ 0. The defaults (2, 0) are the critical ReLU initialisation.

    Notes
    -----
    This is the one description of a network; the other network types are views derived from it:
    `ntkdist.kernels.empirical.SampledWeights` (``sample_weights(net, dim=, width=, seed=)``) holds one
    finite-width draw of its weights, and `ntkdist.theory.power_series.LayerComposition`
    (``layer_composition(net, dim, radius)``) is its kernel on inputs of one norm as a composition of maps of
    the correlation, the form the power series and sphere eigenvalues are computed from.
    """

    depth: int
    activation: Activation = field(default="relu")  # type: ignore[assignment]
    weight_var: float = 2.0
    bias_var: float = 0.0

    def __post_init__(self):
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"depth: must be an integer ≥ 1 (number of hidden layers), got {self.depth!r}")
        object.__setattr__(self, "activation", get_activation(self.activation))
        for name in ("weight_var", "bias_var"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}: must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.weight_var <= 0.0:
            raise ValueError(f"weight_var: must be > 0 (it is W_std²), got {self.weight_var!r}")
        if self.bias_var < 0.0:
            raise ValueError(f"bias_var: must be ≥ 0 (it is b_std²), got {self.bias_var!r}")

    def describe(self) -> dict:
        """A plain, JSON-ready description (what a store's attrs record)."""
        return {
            "depth": self.depth,
            "activation": self.activation.describe(),
            "weight_var": self.weight_var,
            "bias_var": self.bias_var,
            "parameterization": "ntk",
        }
