"""Leading 1/n corrections to the NNGP and NTK of a finite-width MLP, from the layer recursions.

Guillen, Misof, Gerken 2025 ("Finite-width neural tangent kernels from Feynman diagrams", arXiv 2508.11522),
eqs. (45), (47), (5), (50), (53), (55), (15)/(78), which reproduce the recursions of Roberts, Yaida, Hanin 2022
(arXiv 2106.10165, ch. 4 and 8). The equations, their derivation and the conventions are in docs/theory.md §8.2.

* `gaussian`     — integration rules for 1–4 correlated pre-activations and Stein's lemma for derivatives;
* `expectations` — the table of Gaussian expectations one layer needs;
* `recursions`   — one layer of the coupled recursions;
* here           — `finite_width_corrections`, the whole network, and its result `FiniteWidthCorrections`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...kernels import Activation, get_activation
from .expectations import layer_expectations
from .recursions import LayerConstants, LayerStatistics, first_layer, next_layer

GUILLEN = "Guillen, Misof, Gerken 2025, arXiv 2508.11522"
#: The NTK conventions: "stax" sums the parameter gradients with learning rates λ_W = weight_var, λ_b = bias_var
#: (ntkdist's and neural-tangents' NTK parameterization); "paper" with λ_W = λ_b = 1 (the paper's eq. (2)).
CONVENTIONS = ("stax", "paper")
#: The tensors are 4-index over sample points (m⁴ entries, m⁶ for the fourth-derivative tables).
MAX_POINTS = 6


@dataclass(frozen=True)
class FiniteWidthCorrections:
    """Infinite-width kernels and their O(1/n) statistics at the network output, over m sample points.

    All hidden layers have the same width n; every tensor is the coefficient of 1/n. Index order: ``f`` and ``b``
    follow the order of their arguments (z(x1), z(x2), Θ̂(x3, x4)); the paper's F_{1324} is ``f[0, 1, 2, 3]``
    for points 0…3 (docs/theory.md §8.2).
    """

    inputs: np.ndarray
    activation: str
    depth: int
    weight_var: float
    bias_var: float
    convention: str
    output: LayerStatistics
    """The statistics at the network output (layer depth+1). Its fields K, Θ, K¹, Θ¹, V, D, F, A, B (described in
    `LayerStatistics`) read as attributes of this result too: ``result.ntk_correction``."""
    paper: str = GUILLEN

    def __getattr__(self, name: str):
        # Only reached when normal lookup fails: the output layer's statistics, by their names.
        if name in LayerStatistics._fields:
            return getattr(self.output, name)
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    def nngp_mean(self, width: float) -> np.ndarray:
        """E[z(x_a) z(x_b)] ≈ K + K¹/n for one output neuron."""
        return self.nngp + self.nngp_correction / _width(width)

    def ntk_mean(self, width: float) -> np.ndarray:
        """E[Θ̂(x_a, x_b)] ≈ Θ + Θ¹/n for one output neuron."""
        return self.ntk + self.ntk_correction / _width(width)

    def ntk_covariance(self, width: float) -> np.ndarray:
        """Cov(Θ̂(x1, x2), Θ̂(x3, x4)) ≈ (A_1234 + B_1234 + B_1243)/n for a scalar output (all δ's are 1)."""
        return (self.a + self.b + self.b.transpose(0, 1, 3, 2)) / _width(width)

    def ntk_variance(self, width: float) -> np.ndarray:
        """Var Θ̂(x_a, x_b) ≈ (A_abab + B_abab + B_abba)/n; on the diagonal (A + 2B)/n."""
        cov = self.ntk_covariance(width)
        m = cov.shape[0]
        return np.array([[cov[i, j, i, j] for j in range(m)] for i in range(m)])


def _width(width) -> float:
    if not np.isfinite(width) or width <= 0:
        raise ValueError(f"width: must be a positive number of neurons per hidden layer, got {width!r}")
    return float(width)


def _validate(inputs, depth: int, weight_var: float, bias_var: float, convention: str) -> np.ndarray:
    x = np.asarray(inputs, dtype=np.float64)
    if x.ndim != 2 or not 1 <= x.shape[0] <= MAX_POINTS:
        raise ValueError(f"inputs: must be an (m, d) array with 1 ≤ m ≤ {MAX_POINTS} points, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("inputs: contain NaN or inf; pass finite values")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth: must be an integer ≥ 0 (number of hidden layers), got {depth!r}")
    if not weight_var > 0:
        raise ValueError(f"weight_var: must be > 0 (it is W_std², C_W), got {weight_var!r}")
    if not bias_var >= 0:
        raise ValueError(f"bias_var: must be ≥ 0 (it is b_std², C_b), got {bias_var!r}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention: must be one of {CONVENTIONS}, got {convention!r}")
    return x


def layer_statistics(inputs, activation, depth: int, weight_var: float = 2.0, bias_var: float = 0.0, *,
                     convention: str = "stax") -> list[LayerStatistics]:
    """The statistics of every layer 1 … depth+1 (the readout is layer depth+1); see `finite_width_corrections`."""
    x = _validate(inputs, depth, weight_var, bias_var, convention)
    phi = activation if isinstance(activation, Activation) else get_activation(activation)
    # The paper's network has no biases; with bias_var > 0 its bias gradients enter with learning rate 1.
    rates = (weight_var, bias_var) if convention == "stax" else (1.0, 1.0 if bias_var > 0 else 0.0)
    constants = LayerConstants(float(weight_var), float(bias_var), *map(float, rates))
    layers = [first_layer(x, constants)]
    for _ in range(depth):
        layers.append(next_layer(layers[-1], layer_expectations(phi, layers[-1].nngp), constants))
    return layers


def finite_width_corrections(inputs, activation, depth: int, weight_var: float = 2.0, bias_var: float = 0.0, *,
                             convention: str = "stax") -> FiniteWidthCorrections:
    """K, Θ and their 1/n statistics K¹, Θ¹, V, D, F, A, B at the output of an MLP with equal hidden widths n.

    Guillen, Misof, Gerken 2025, eqs. (45), (47), (5), (50), (53), (55), (15)/(78) (docs/theory.md §8.2).

    Parameters
    ----------
    inputs : (m, d) array
        The sample points (m ≤ `MAX_POINTS`; linearly independent unless ``bias_var > 0``).
    activation : Activation or spec string
        Any `ntkdist.kernels` activation; expectations by quadrature (`finite_width.gaussian`: ~1e-12 for any φ
        on one or two distinct points, and for smooth φ on three or four; kinks only at 0 are resolved).
    depth : int
        Hidden layers, as `ntkdist.kernels.MLP` counts them; the output is layer depth+1 (the paper's L). The
        paper's "4-layer" network is depth=3. depth=0 is the linear model of layer 1: every correction is 0.
    weight_var, bias_var : float
        C_W = W_std² and C_b = b_std², the same in every layer including the readout.
    convention : "stax" or "paper"
        ``"stax"`` (default): ntkdist's NTK, Θ¹ = λ_b + λ_W⟨x,y⟩/d with λ_W = weight_var, λ_b = bias_var,
        as `ntkdist.kernels.ntk` computes it. ``"paper"``: the paper's NTK with learning rates 1 (its eq. (2); bias gradients only if
        bias_var > 0);
        without bias and with one C_W in every layer the stax NTK is C_W times the paper's, so Θ, Θ¹, D, F scale
        by C_W and A, B by C_W² between the two.
    """
    out = layer_statistics(inputs, activation, depth, weight_var, bias_var, convention=convention)[-1]
    phi = activation if isinstance(activation, Activation) else get_activation(activation)
    return FiniteWidthCorrections(
        inputs=np.asarray(inputs, dtype=np.float64), activation=getattr(phi, "name", str(activation)),
        depth=depth, weight_var=float(weight_var), bias_var=float(bias_var), convention=convention, output=out)


__all__ = ["CONVENTIONS", "GUILLEN", "MAX_POINTS", "FiniteWidthCorrections", "LayerStatistics",
           "finite_width_corrections", "layer_statistics"]
