"""Curvature of a sampled network's output: Hessian–vector products by Pearlmutter's R-operator, and its norm.

The network is a `SampledWeights` of `ntkdist.kernels.empirical` (NTK parameterization of ``stax``): with
c_l = σ_w/√n_{l−1},

    h_l = c_l·a_{l−1} W_l + σ_b·β_l,   a_l = φ(h_l),   f = h_{L+1},

and its output may be passed through an output map ψ (`OUTPUT_MAPS`): f̃ = ψ(f). Liu, Zhu & Belkin (2020, "On the
linearity of large non-linear models", NeurIPS; arXiv 2010.01092) show that ‖H_f(x)‖ = Õ(1/√m) for hidden widths
m (their Theorem 3.2, the bound behind the constancy of the tangent kernel), while a non-linear output adds the
width-independent rank-one term of

    H_f̃ = ψ'(f)·H_f + ψ''(f)·∇f ∇fᵀ                                                   (chain rule, twice)

whose norm |ψ''(f)|·‖∇f‖² is Θ(1) (‖∇f‖² = Θ̂(x, x) is the NTK's diagonal), so f̃ does not become linear.

**R-operator** (Pearlmutter 1994, "Fast exact multiplication by the Hessian", Neural Comput. 6:147). For a
direction v = (V_W, V_β) in parameter space, R{·} = d/dt ·(θ + t·v) at t = 0 is applied to every line of the
forward and the backward pass; R{∇f} = H_f·v exactly, in the cost of about two gradients, and the Hessian is never
formed. With δ_l = ∂f/∂h_l (δ_{L+1} = 1) and g_l = ∂f/∂a_l = c_{l+1}·δ_{l+1} W_{l+1}ᵀ:

    forward    R{h_l} = c_l·(R{a_{l−1}} W_l + a_{l−1} V_{W_l}) + σ_b·V_{β_l},   R{a_0} = 0,   R{a_l} = φ'(h_l)·R{h_l}
    backward   R{g_l} = c_{l+1}·(R{δ_{l+1}} W_{l+1}ᵀ + δ_{l+1} V_{W_{l+1}}ᵀ),   R{δ_{L+1}} = 0,
               R{δ_l} = φ''(h_l)·R{h_l}·g_l + φ'(h_l)·R{g_l}
    gradient   ∂f/∂W_l = c_l·a_{l−1}ᵀ δ_l,   ∂f/∂β_l = σ_b·δ_l   ⇒
               (H_f v)_{W_l} = c_l·(R{a_{l−1}}ᵀ δ_l + a_{l−1}ᵀ R{δ_l}),   (H_f v)_{β_l} = σ_b·R{δ_l}

and for f̃ = ψ(f): R{∇f̃} = ψ''(f)·R{f}·∇f + ψ'(f)·H_f v with R{f} = ⟨∇f, v⟩ = R{h_{L+1}}.

The structure of H_f shows why it is small: every block is a sum over hidden units of products of one O(1/√m)
factor (an entry of δ_l, whose ∞-norm is O(1/√m) while its 2-norm is O(1)) with O(1) ones, so the blocks' norms
are governed by ‖δ_l‖_∞ rather than ‖δ_l‖₂, the mechanism of Liu et al.'s Theorem 3.2.

The primal forward and backward passes are `ntkdist.kernels.empirical`'s (per tile, here on unpadded rows).
The equations in words, with the study that uses them: docs/linearity.md §3.2, §3.3 and §3.4.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.sparse.linalg

from .activations import ABReLU, numerical_derivative
from .empirical import SampledWeights, _tile_backward, _tile_forward, empirical_gram_block


class OutputMap(NamedTuple):
    """ψ of f̃ = ψ(f), with ψ' and ψ'' in closed form."""

    name: str
    value: object
    first: object
    second: object


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # the same function as 1/(1 + e^−z), without overflow


#: The output maps: the linear readout itself, and two non-linear ones (Liu et al. 2020, §4: a non-linear output
#: layer breaks the transition to linearity).
OUTPUT_MAPS = {
    "identity": OutputMap("identity", lambda z: z, np.ones_like, np.zeros_like),
    "tanh": OutputMap("tanh", np.tanh, lambda z: 1.0 - np.tanh(z) ** 2,
                      lambda z: -2.0 * np.tanh(z) * (1.0 - np.tanh(z) ** 2)),
    "sigmoid": OutputMap("sigmoid", _sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z)),
                         lambda z: _sigmoid(z) * (1.0 - _sigmoid(z)) * (1.0 - 2.0 * _sigmoid(z))),
}


def output_map(name: str) -> OutputMap:
    """The `OutputMap` called ``name`` (ValueError naming the choices otherwise)."""
    if name not in OUTPUT_MAPS:
        raise ValueError(f"output: unknown output map {name!r}; use one of {', '.join(OUTPUT_MAPS)}")
    return OUTPUT_MAPS[name]


# --------------------------------------------------------------------------------------------------------------
# Vectors in parameter space.

class ParameterVector(NamedTuple):
    """A vector in the parameter space of a `SampledWeights`: one array per weight matrix and per bias.

    Gradients, Hessian–vector products, directions and gradient-descent steps all take this shape.
    """

    weights: tuple
    biases: tuple

    def dot(self, other: "ParameterVector") -> float:
        return float(sum(np.vdot(a, b) for a, b in zip((*self.weights, *self.biases),
                                                       (*other.weights, *other.biases))))

    def combination(self, own: float, scale: float, other: "ParameterVector") -> "ParameterVector":
        """own·self + scale·other."""
        return ParameterVector(tuple(own * a + scale * b for a, b in zip(self.weights, other.weights)),
                               tuple(own * a + scale * b for a, b in zip(self.biases, other.biases)))

    def scaled_add(self, scale: float, other: "ParameterVector") -> "ParameterVector":
        """self + scale·other."""
        return self.combination(1.0, scale, other)

    def flat(self) -> np.ndarray:
        return np.concatenate([a.ravel() for a in (*self.weights, *self.biases)])

    @classmethod
    def of(cls, params: SampledWeights) -> "ParameterVector":
        """The parameters of a network as a vector."""
        return cls(tuple(params.weights), tuple(params.biases))

    @classmethod
    def from_flat(cls, flat: np.ndarray, like: SampledWeights) -> "ParameterVector":
        """The inverse of `flat` for vectors shaped like ``like``'s parameters."""
        arrays, start = [], 0
        for template in (*like.weights, *like.biases):
            arrays.append(flat[start:start + template.size].reshape(template.shape))
            start += template.size
        layers = len(like.weights)
        return cls(tuple(arrays[:layers]), tuple(arrays[layers:]))


def with_parameters(params: SampledWeights, vector: ParameterVector) -> SampledWeights:
    """The network ``params`` with its weights and biases replaced by ``vector`` (same architecture and seed)."""
    return SampledWeights(params.net, params.dim, params.widths, params.seed, tuple(vector.weights),
                          tuple(vector.biases))


def random_direction(params: SampledWeights, seed: int) -> ParameterVector:
    """A unit vector in parameter space, uniform on the sphere (normalised standard normals) from ``seed``."""
    rng = np.random.default_rng(seed)
    flat = rng.standard_normal(params.num_parameters)
    return ParameterVector.from_flat(flat / np.linalg.norm(flat), params)


# --------------------------------------------------------------------------------------------------------------
# The passes.

def _as_rows(params: SampledWeights, X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    X = X[None, :] if X.ndim == 1 else X
    if X.ndim != 2 or X.shape[1] != params.dim or not np.all(np.isfinite(X)):
        raise ValueError(f"x: expected finite inputs of shape (d,) or (N, d) with d = {params.dim}, got shape "
                         f"{X.shape}; pass points of the network's input dimension")
    return X


def _layer_scales(params: SampledWeights):
    """c_l = σ_w/√n_{l−1} for l = 1 … L + 1, and σ_b."""
    sw = math.sqrt(params.net.weight_var)
    return [sw / math.sqrt(n) for n in params.layer_sizes[:-1]], math.sqrt(params.net.bias_var)


def _second_derivative(activation, h):
    """φ''(h): zero for the piecewise-linear ReLU family (almost everywhere), else an eighth-order central
    difference of the closed-form φ' (`numerical_derivative`, ~1e-14 relative for smooth φ)."""
    if isinstance(activation, ABReLU):
        return np.zeros_like(h)
    return numerical_derivative(activation.derivative)(h)


def gradient_of_outputs(params: SampledWeights, X, row_weights=None, output: str = "identity"):
    """Σ_i r_i·∇_θ ψ(f(x_i)) over the rows of X, and ψ(f(x_i)) (the gradient of f itself for one point, r = 1).

    Returns
    -------
    (ParameterVector, (N,) array of ψ(f(x_i)))
    """
    X = _as_rows(params, X)
    psi = output_map(output)
    pre, post = _tile_forward(params, X)
    f = pre[-1][:, 0]
    r = np.ones(len(X)) if row_weights is None else np.asarray(row_weights, dtype=np.float64)
    deltas = [*_tile_backward(params, pre), np.ones((len(X), 1))]
    return _weighted_gradient(params, post, deltas, r * psi.first(f)), psi.value(f)


def _weighted_gradient(params, post, deltas, r) -> ParameterVector:
    """Σ_i r_i·∇f(x_i) from layer inputs a_{l−1} and backward signals δ_l: (c_l·a_{l−1}ᵀ(r⊙δ_l), σ_b·Σ_i r_i δ_l)."""
    scales, sb = _layer_scales(params)
    weighted = [r[:, None] * d for d in deltas]
    return ParameterVector(tuple(c * (a.T @ d) for c, a, d in zip(scales, post, weighted)),
                           tuple(sb * d.sum(axis=0) for d in weighted))


def hessian_vector_product(params: SampledWeights, x, direction: ParameterVector,
                           output: str = "identity") -> ParameterVector:
    """H·v for the Hessian H of ψ(f(x)) in all weights and biases, by the R-operator (module docstring).

    Parameters
    ----------
    params : SampledWeights
        On the host (NumPy).
    x : (d,) array
        One input: the Hessian of one output, as Liu et al. bound it.
    direction : ParameterVector
        v, shaped like the parameters.
    output : str
        A key of `OUTPUT_MAPS`; ``"identity"`` is the network's own linear readout.
    """
    return hessian_operator(params, x, output)(direction)


def hessian_operator(params: SampledWeights, x, output: str = "identity"):
    """v ↦ H·v at one input, as `hessian_vector_product`, with the primal passes done once for every v.

    The forward pass (h_l, a_l), the backward signals δ_l, g_l = ∂f/∂a_l and φ'(h_l), φ''(h_l) do not depend on
    the direction, so an iterative eigensolver's many products each cost only the two R-passes (about four
    products with the weight matrices) and the outer products of the result.
    """
    X = _as_rows(params, x)
    if X.shape[0] != 1:
        raise ValueError(f"x: one input of shape (d,) expected, got {X.shape[0]} rows; call once per point")
    psi = output_map(output)
    net = params.net
    depth = net.depth
    scales, sb = _layer_scales(params)
    W = params.weights
    pre, post = _tile_forward(params, X)
    deltas = [*_tile_backward(params, pre), np.ones((1, 1))]
    slopes = [net.activation.derivative(h) for h in pre[:depth]]
    upstream = [scales[layer + 1] * (deltas[layer + 1] @ W[layer + 1].T) for layer in range(depth)]  # g_l
    curvatures = [_second_derivative(net.activation, h) * g for h, g in zip(pre[:depth], upstream)]  # φ''·g
    f = pre[-1][0, 0]
    gradient = _weighted_gradient(params, post, deltas, np.ones(1)) if output != "identity" else None

    def product(direction: ParameterVector) -> ParameterVector:
        VW, Vb = direction.weights, direction.biases
        # Forward R-pass: R{h_l} and R{a_l} (R{a_0} = 0).
        r_pre, r_post = [], [np.zeros_like(X)]
        for layer in range(depth + 1):
            r_h = scales[layer] * (r_post[layer] @ W[layer] + post[layer] @ VW[layer]) + sb * Vb[layer]
            r_pre.append(r_h)
            if layer < depth:
                r_post.append(slopes[layer] * r_h)
        # Backward R-pass: R{δ_l} = φ''(h_l)·R{h_l}·g_l + φ'(h_l)·R{g_l}, from R{δ_{L+1}} = 0 down.
        r_deltas = [None] * depth + [np.zeros((1, 1))]
        for layer in range(depth - 1, -1, -1):
            upper = layer + 1
            r_g = scales[upper] * (r_deltas[upper] @ W[upper].T + deltas[upper] @ VW[upper].T)
            r_deltas[layer] = curvatures[layer] * r_pre[layer] + slopes[layer] * r_g
        hv = ParameterVector(
            tuple(_outer_sum(c * ra[0], d[0], c * a[0], rd[0])
                  for c, ra, a, d, rd in zip(scales, r_post, post, deltas, r_deltas)),
            tuple(sb * rd[0] for rd in r_deltas))
        if gradient is None:
            return hv
        # H_f̃ v = ψ'(f)·H_f v + ψ''(f)·⟨∇f, v⟩·∇f, with ⟨∇f, v⟩ = R{f} = R{h_{L+1}}.
        return hv.combination(psi.first(f), psi.second(f) * r_pre[-1][0, 0], gradient)

    return product


def _outer_sum(u1, v1, u2, v2):
    """u1 ⊗ v1 + u2 ⊗ v2, with one temporary."""
    out = np.multiply.outer(u1, v1)
    out += np.multiply.outer(u2, v2)
    return out


#: Lanczos stopping rule of `hessian_norm`: ARPACK stops when the Ritz pair's residual ‖Hu − θu‖ ≤ tol·|θ|, so the
#: returned θ is within tol·|θ| of an eigenvalue of H (Parlett, The Symmetric Eigenvalue Problem, Thm 4.5.1).
HESSIAN_TOL = 1e-8
#: Lanczos basis size: small, so that memory stays a few parameter vectors at width 2048.
LANCZOS_VECTORS = 12


def hessian_norm(params: SampledWeights, x, *, output: str = "identity", seed: int = 0,
                 tol: float = HESSIAN_TOL) -> float:
    """The spectral norm ‖H‖ = max |λ(H)| of the Hessian of ψ(f(x)) at one input, by Lanczos on HVPs.

    Implicitly restarted Lanczos (ARPACK ``eigsh``, ``which="LM"``, k = 1) on the operator v ↦ H v of
    `hessian_vector_product`: the largest-magnitude eigenvalue, whatever its sign (H is indefinite: the blocks
    coupling consecutive layers give it eigenvalues of both signs). Lanczos rather than power iteration because
    a pair ±λ of nearly equal magnitude stalls power iteration but not Lanczos. Stopping rule: `HESSIAN_TOL`.
    The start vector is drawn from ``seed``, so the result is reproducible.
    """
    size = params.num_parameters
    start = random_direction(params, seed).flat()
    if size <= 3:  # too small for ARPACK (k < ncv < size); such a net's Hessian is cheap to form by products
        product = hessian_operator(params, x, output)
        columns = [product(ParameterVector.from_flat(e, params)).flat() for e in np.eye(size)]
        return float(np.max(np.abs(np.linalg.eigvalsh(np.array(columns)))))
    product = hessian_operator(params, x, output)
    operator = scipy.sparse.linalg.LinearOperator(
        (size, size), dtype=np.float64,
        matvec=lambda v: product(ParameterVector.from_flat(np.ravel(v), params)).flat())
    values = scipy.sparse.linalg.eigsh(operator, k=1, which="LM", v0=start, tol=tol,
                                       ncv=min(LANCZOS_VECTORS, size - 1), return_eigenvectors=False)
    return float(abs(values[0]))


# --------------------------------------------------------------------------------------------------------------
# Training, and the tangent kernel's change in training.

def squared_loss_gradient(params: SampledWeights, X, y, output: str = "identity"):
    """The loss L = (1/2N)·Σ_i (ψ(f(x_i)) − y_i)² and its gradient Σ_i r_i·ψ'(f_i)·∇f(x_i), r_i = (ψ(f_i) − y_i)/N.

    Returns
    -------
    (float, ParameterVector)
    """
    X = _as_rows(params, X)
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (len(X),):
        raise ValueError(f"y: expected one target per input, shape ({len(X)},), got {y.shape}")
    psi = output_map(output)
    pre, post = _tile_forward(params, X)
    f = pre[-1][:, 0]
    residuals = (psi.value(f) - y) / len(X)
    deltas = [*_tile_backward(params, pre), np.ones((len(X), 1))]
    loss = 0.5 * len(X) * float(residuals @ residuals)
    return loss, _weighted_gradient(params, post, deltas, residuals * psi.first(f))


def gradient_descent(params: SampledWeights, X, y, *, learning_rate: float, steps: int,
                     output: str = "identity"):
    """Full-batch gradient descent θ ← θ − η·∇L on the squared loss of `squared_loss_gradient`, ``steps`` times.

    In the NTK parameterization a fixed η (independent of the width) trains every width at the same speed: the
    function-space dynamics are df/dt = −(η/N)·Θ̂·(f − y) with Θ̂ = O(1) (Jacot et al. 2018, §4; Lee et al. 2019,
    eq. 7), stable while η < 2N/λ_max(Θ̂).

    Returns
    -------
    (SampledWeights, (steps + 1,) array)
        The trained network, and the loss before each step and after the last one.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps: must be a non-negative integer, got {steps!r}")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate: must be a positive number, got {learning_rate!r}")
    theta = ParameterVector.of(params)
    losses = []
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging run is reported below, by name
        for _ in range(steps):
            loss, gradient = squared_loss_gradient(params, X, y, output)
            losses.append(loss)
            theta = theta.scaled_add(-learning_rate, gradient)
            params = with_parameters(params, theta)
        losses.append(squared_loss_gradient(params, X, y, output)[0])
    if not np.all(np.isfinite(losses)):
        raise ValueError(f"learning_rate: gradient descent diverged at η = {learning_rate}; use a smaller one")
    return params, np.array(losses)


def tangent_gram(params: SampledWeights, X, output: str = "identity") -> np.ndarray:
    """The empirical NTK Gram of ψ(f): Θ̃(x_i, x_j) = ψ'(f(x_i))·ψ'(f(x_j))·Θ̂(x_i, x_j) (∇ψ(f) = ψ'(f)·∇f)."""
    X = _as_rows(params, X)
    slope = output_map(output).first(_tile_forward(params, X)[0][-1][:, 0])
    return slope[:, None] * empirical_gram_block(X, params=params, kind="ntk") * slope[None, :]


def relative_change(before: np.ndarray, after: np.ndarray) -> float:
    """‖after − before‖_F / ‖before‖_F."""
    return float(np.linalg.norm(after - before) / np.linalg.norm(before))


def kernel_ascent_direction(params: SampledWeights, X, output: str = "identity") -> ParameterVector:
    """The unit direction u in which the tangent kernel's trace Σ_i ‖∇ψ(f(x_i))‖² grows fastest at θ.

    ∇_θ‖∇ψ_i‖² = 2·H_i∇ψ_i, with H_i the Hessian of ψ(f(x_i)), so u = g/‖g‖ for g = Σ_i H_i∇ψ_i: one gradient and
    one Hessian–vector product per point. ‖H_i∇ψ_i‖ = O(‖H_i‖) = Õ(1/√m) (its readout block sums m same-sign
    terms of size 1/m), unlike the random-sign contraction ⟨∇ψ_i, H_j∇ψ_j⟩ = O(1/m) that gradient descent sees
    (docs/linearity.md §3.5).
    """
    X = _as_rows(params, X)
    total = None
    for x in X:
        gradient, _ = gradient_of_outputs(params, x, output=output)
        product = hessian_vector_product(params, x, gradient, output)
        total = product if total is None else total.scaled_add(1.0, product)
    norm = math.sqrt(total.dot(total))
    if not norm > 0:
        raise ValueError("X: the kernel's trace does not change to first order at these parameters (Hessian "
                         "products vanish, e.g. a piecewise-linear network); use a smooth activation")
    return total.combination(1.0 / norm, 0.0, total)


def kernel_change_in_ball(params: SampledWeights, X, radius: float, output: str = "identity") -> float:
    """‖Θ̃(θ + R·u) − Θ̃(θ)‖_F / ‖Θ̃(θ)‖_F on X, along `kernel_ascent_direction` u, for the ball radius R.

    Liu, Zhu & Belkin (2020, Thm 3.2 and its corollary on the tangent kernel) bound the change of the tangent
    kernel over the whole ball ‖θ' − θ‖ ≤ R by O(R·‖H‖) = Õ(R/√m). This is the change in one direction of the ball,
    the steepest for the kernel's trace, so a lower estimate of their supremum; with a linear output it falls like
    1/√m (while along gradient descent's path it falls like 1/m).
    """
    if not (math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius: must be a positive number, got {radius!r}")
    X = _as_rows(params, X)
    direction = kernel_ascent_direction(params, X, output)
    moved = with_parameters(params, ParameterVector.of(params).scaled_add(radius, direction))
    return relative_change(tangent_gram(params, X, output), tangent_gram(moved, X, output))
