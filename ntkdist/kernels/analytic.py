"""The infinite-width NNGP and NTK recursions of a fully-connected network, on one tile of pairs.

Convention (neural-tangents ``stax``, ``parameterization='ntk'``; Jacot et al. 2018, Lee et al. 2019): with
w = weight_var, b = bias_var, d = input dimension and φ the activation,

    Σ¹(x, y) = w·⟨x, y⟩/d + b,                        Θ¹ = Σ¹
    Σˡ⁺¹     = w·E[φ(u)φ(v)] + b,                      Θˡ⁺¹ = Σˡ⁺¹ + w·E[φ'(u)φ'(v)]·Θˡ,

(u, v) ~ N(0, Σˡ restricted to {x, y}), for ``depth`` hidden layers and the linear readout, i.e. depth + 1
Dense layers. The NNGP is Σ and the NTK is Θ of the readout.

Each pair carries its correlation three times, as ρ, 1 − ρ and 1 + ρ (see `ntkdist.kernels.activation_base`). The
Dense layer turns the activation's Cauchy–Schwarz gaps into the next 1 ∓ ρ without subtracting nearly equal
numbers. With E_x = E φ(u)², q_x' = w·E_x + b, s' = √(q_x' q_y') and g = w√(E_x E_y) + b:

    1 − ρ' = [(s' − g) + w·(√(E_x E_y) − E[φφ])] / s',
    1 + ρ' = [(s' − g) + 2b + w·(√(E_x E_y) + E[φφ])] / s',
    s' − g = b·w(√E_x − √E_y)² / (s' + g)          (AM–GM gap, ≥ 0).

Every term is ≥ 0.

The mathematics, with its conventions, errata and tests: docs/theory.md §1.2 and §1.4.
"""

from __future__ import annotations

from ._xp import array_module
from .network import MLP


def dense_layer(weight_var, bias_var, cov, var_x, var_y, gap_parallel, gap_antiparallel):
    """One Dense layer on the moments of its input features a(·).

    Parameters
    ----------
    cov : (n, m) array
        E[a(x)a(y)] (⟨x, y⟩/d for the first layer).
    var_x, var_y : (n, 1) and (1, m) arrays
        E[a(x)²], E[a(y)²].
    gap_parallel, gap_antiparallel : (n, m) arrays
        √(var_x var_y) ∓ cov ≥ 0, accurate to relative rounding.

    Returns
    -------
    sigma, q_x, q_y, c, e, f
        The pre-activation covariance Σ = w·cov + b, the variances q, and ρ, 1 − ρ, 1 + ρ. Pairs with a zero
        variance get ρ = 0 (the value neural-tangents uses; it multiplies a zero).
    """
    xp = array_module(cov)
    w, b = weight_var, bias_var
    sigma = w * cov + b
    q_x = w * var_x + b
    q_y = w * var_y + b
    scale = xp.sqrt(q_x * q_y)
    root_x, root_y = xp.sqrt(var_x), xp.sqrt(var_y)
    geometric = w * (root_x * root_y) + b
    positive = scale > 0.0
    safe = xp.where(positive, scale, 1.0)
    am_gm_gap = (b * w) * (root_x - root_y) ** 2 / (safe + geometric)
    c = xp.where(positive, sigma / safe, 0.0)
    e = xp.where(positive, (am_gm_gap + w * gap_parallel) / safe, 1.0)
    f = xp.where(positive, (am_gm_gap + 2.0 * b + w * gap_antiparallel) / safe, 1.0)
    return sigma, q_x, q_y, xp.clip(c, -1.0, 1.0), xp.clip(e, 0.0, 2.0), xp.clip(f, 0.0, 2.0)


def recursion(net: MLP, dim: int, inner, sq_x, sq_y, gap_parallel, gap_antiparallel, *, want_ntk: bool = True):
    """NNGP and NTK of ``net`` on a tile of pairs, from the input moments.

    Parameters
    ----------
    net : MLP
    dim : int
        Input dimension d.
    inner : (n, m) array
        ⟨x_i, y_j⟩.
    sq_x, sq_y : (n,) and (m,) arrays
        ‖x_i‖², ‖y_j‖².
    gap_parallel, gap_antiparallel : (n, m) arrays
        ‖x_i‖‖y_j‖ ∓ ⟨x_i, y_j⟩ ≥ 0, accurate for near-(anti)parallel pairs (see `gram.input_moments`).
    want_ntk : bool
        Skip the Θ accumulation when only the NNGP is needed.

    Returns
    -------
    (nngp, ntk) : (n, m) arrays; ``ntk`` is None when ``want_ntk`` is False.
    """
    act = net.activation
    w, b = net.weight_var, net.bias_var
    inv_d = 1.0 / dim
    cov = inner * inv_d
    var_x = (sq_x * inv_d)[:, None]
    var_y = (sq_y * inv_d)[None, :]
    below, above = gap_parallel * inv_d, gap_antiparallel * inv_d
    theta = dcov = None
    for layer in range(net.depth + 1):
        sigma, q_x, q_y, c, e, f = dense_layer(w, b, cov, var_x, var_y, below, above)
        if want_ntk:
            theta = sigma if layer == 0 else sigma + w * dcov * theta
        if layer == net.depth:
            return sigma, theta
        cov, dcov, below, above = act.pair_moments(q_x, q_y, c, e, f)
        var_x, var_y = act.second_moment(q_x), act.second_moment(q_y)
    raise AssertionError("unreachable")


def layer_variances(activation, weight_var: float, bias_var: float, depth: int, first_variance):
    """The variances of every layer on the diagonal x = y, from the first Dense layer's output variance q₀.

    q_{l+1} = w·E_{l+1} + b with E_{l+1} = E φ(u)², u ~ N(0, q_l) (the diagonal of `recursion`; for the stax network
    q₀ = weight_var·‖x‖²/d + bias_var). The one definition of this recursion: `diagonal_recursion`,
    `layer_tables` (the tables the CUDA engine reads) and
    `ntkdist.theory.power_series.LayerComposition.variances` call it; `fused_cpu` restates it in numba.

    Parameters
    ----------
    first_variance : float or array
        q₀, per point.

    Returns
    -------
    q : list of depth + 1
        q₀ … q_depth, the output variances of the depth + 1 Dense layers.
    second_moments : list of depth
        E₁ … E_depth, the activation's second moments E φ(u)² (the inputs of Dense layers 1 … depth).
    """
    q, second_moments = [first_variance], []
    for _ in range(depth):
        second_moments.append(activation.second_moment(q[-1]))
        q.append(weight_var * second_moments[-1] + bias_var)
    return q, second_moments


def diagonal_recursion(activation, weight_var: float, bias_var: float, depth: int, first_variance):
    """(Σ, Θ) of the readout on the diagonal x = y, from the first layer's variance q¹ (scalar or array).

    The variances from `layer_variances`, and Θ^{l+1} = q^{l+1} + w·E φ'(u)²·Θ^l with u ~ N(0, q^l), Θ¹ = q¹
    (the diagonal of `recursion`). O(depth) per point.
    """
    q, _ = layer_variances(activation, weight_var, bias_var, depth, first_variance)
    theta = q[0]
    for layer in range(depth):
        theta = q[layer + 1] + weight_var * activation.derivative_second_moment(q[layer]) * theta
    return q[-1], theta


def layer_tables(sq, dim: int, depth: int, weight_var: float, bias_var: float, activation):
    """Per-point tables for the compiled engines: (rv, rq, q, ia), each (depth + 1, n), holding √E_l, √q_l, q_l
    and 1/√(1 + 2q_l) for point i and Dense layer l (E_0 = ‖x‖²/d, the rest from `layer_variances`), in the array
    module of the squared norms ``sq``."""
    xp = array_module(sq)
    first = sq / dim
    q, second_moments = layer_variances(activation, weight_var, bias_var, depth, weight_var * first + bias_var)
    var = xp.stack([first, *second_moments])
    q = xp.stack(q)
    return xp.sqrt(var), xp.sqrt(q), q, 1.0 / xp.sqrt(1.0 + 2.0 * q)
