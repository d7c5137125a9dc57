"""One layer of the O(1/n) recursions for the NNGP and NTK statistics (Guillen, Misof, Gerken 2025).

Network (layer l → l+1, n neurons in layer l, all hidden widths equal):

    z^{l+1}_i = b_i + (1/√n) Σ_k W_ik φ(z^l_k),   W_ik ~ N(0, C_W), b_i ~ N(0, C_b),

with the NTK of the parameters summed with learning-rate factors λ_W (weights) and λ_b (biases):
λ = C (the neural-tangents ``stax`` NTK parameterization, ntkdist's convention) or λ = 1 (the paper's, eq. (2),
no biases). Statistics of layer l, per neuron (δ's over neurons, all tensors O(1) and divided by n):

    E[z_{i,1} z_{j,2}]                  = δ_ij (K_12 + K¹_12 / n)
    E[Θ̂_{ij,12}]                        = δ_ij (Θ_12 + Θ¹_12 / n)
    E_c[z_{i1,1} z_{i2,2} z_{i3,3} z_{i4,4}] = (δ12δ34 V_1234 + δ13δ24 V_1324 + δ14δ23 V_1423) / n
    E_c[z_{i1,1} z_{i2,2} ΔΘ̂_{i3i4,34}]   = (δ12δ34 D_1234 + δ13δ24 F_1234 + δ14δ23 F_1243) / n
    E_c[ΔΘ̂_{i1i2,12} ΔΘ̂_{i3i4,34}]      = (δ12δ34 A_1234 + δ13δ24 B_1234 + δ14δ23 B_1243) / n

Index order (ours, not the paper's): F and B keep the sample points in the order of their arguments
(z(x1), z(x2), Θ̂(x3, x4)); the paper writes the same numbers as F_{1324}, B_{1324} (its eqs. (5), (55)).
The recursions are derived in docs/theory.md §8.2 (law of total cumulance, leading order in 1/n) and agree with the
paper's eqs. (45), (47), (5), (50), (53), (55) and (15)/(78) up to that index order.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .expectations import LayerExpectations


class LayerStatistics(NamedTuple):
    """Means and 1/n coefficients of one layer over m sample points (index conventions: module doc)."""

    nngp: np.ndarray
    """K: the infinite-width NNGP, m × m."""
    ntk: np.ndarray
    """Θ: the infinite-width NTK, m × m."""
    nngp_correction: np.ndarray
    """K¹: E[K̂] = K + K¹/n + O(1/n²) (paper eq. (47))."""
    ntk_correction: np.ndarray
    """Θ¹: E[Θ̂] = Θ + Θ¹/n + O(1/n²) (paper eqs. (15), (78))."""
    v: np.ndarray
    """V: four-point cumulant of the pre-activations (eq. (45)), m⁴."""
    d: np.ndarray
    """D: joint cumulant z z ΔΘ̂, same-neuron pairs (eq. (50)), m⁴."""
    f: np.ndarray
    """F: joint cumulant z z ΔΘ̂, crossed neurons (eq. (5)), m⁴, argument order."""
    a: np.ndarray
    """A: NTK covariance, diagonal neuron pairs (eq. (53)), m⁴."""
    b: np.ndarray
    """B: NTK covariance, crossed neurons (eq. (55)), m⁴, argument order."""


class LayerConstants(NamedTuple):
    """C_W, C_b of the next layer and the learning-rate factors λ_W, λ_b of its NTK (module doc)."""

    weight_var: float
    bias_var: float
    weight_rate: float
    bias_rate: float


def first_layer(inputs: np.ndarray, constants: LayerConstants) -> LayerStatistics:
    """Layer 1: Gaussian pre-activations and a deterministic NTK, so every correction is 0 (docs/theory.md §8.2)."""
    gram = inputs @ inputs.T / inputs.shape[1]
    size = inputs.shape[0]
    zero2, zero4 = np.zeros((size, size)), np.zeros((size,) * 4)
    return LayerStatistics(
        nngp=constants.bias_var + constants.weight_var * gram,
        ntk=constants.bias_rate + constants.weight_rate * gram,
        nngp_correction=zero2, ntk_correction=zero2.copy(),
        v=zero4, d=zero4.copy(), f=zero4.copy(), a=zero4.copy(), b=zero4.copy())


def _outer(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return left[:, :, None, None] * right[None, None, :, :]


def next_layer(stats: LayerStatistics, e: LayerExpectations, constants: LayerConstants) -> LayerStatistics:
    """Layer l+1 from layer l and the expectations over N(0, K^l); equations in the module doc and docs/theory.md §8.2.

    Long because it is the whole system of coupled recursions of one layer, kept together so that each line can be
    read against its equation: NNGP mean (47), V (45), NTK mean (15)/(78), D (50), F (5), A (53), B (55).
    """
    cw, cb, lw, lb = constants
    theta = stats.ntk
    # Ω̂_12 = λ_W σ_1σ_2 + C_W Θ_12 σ'_1σ'_2 (+ λ_b): the NTK of layer l+1 given layer l's outputs, one neuron.
    omega_hessian = lw * e.ss_hessian + cw * theta[:, :, None, None] * e.pp_hessian
    omega_fourth = lw * e.ss_fourth + cw * theta[:, :, None, None, None, None] * e.pp_fourth
    # Connected 4-point expectations ⟨ΔX_12 ΔY_34⟩ of the one-neuron products.
    ss_ss = e.ssss - _outer(e.ss, e.ss)
    ss_pp = e.sspp - _outer(e.ss, e.pp)
    pp_ss = ss_pp.transpose(2, 3, 0, 1)
    pp_pp = e.pppp - _outer(e.pp, e.pp)
    g_omega = lw * ss_ss + cw * ss_pp * theta[None, None, :, :]
    omega_omega = (lw * lw * ss_ss + lw * cw * ss_pp * theta[None, None, :, :]
                   + lw * cw * pp_ss * theta[:, :, None, None]
                   + cw * cw * pp_pp * theta[:, :, None, None] * theta[None, None, :, :])

    # How layer l's four-point cumulant V shifts an expectation of two neurons: ¼ Σ V ⟨∂²X⟩⟨∂²Y⟩.
    def through_v(left_hessian, right_hessian):
        return 0.25 * np.einsum("abgh,ghij,cdij->abcd", left_hessian, stats.v, right_hessian, optimize=True)

    # How layer l's D shifts E[X(z_k) σ'σ'ΔΘ̂_mm]: ½ Σ ⟨∂²X⟩ D ⟨σ'σ'⟩.
    def through_d(left_hessian):
        return 0.5 * np.einsum("abgh,ghcd->abcd", left_hessian, stats.d, optimize=True) * e.pp[None, None, :, :]

    nngp = cb + cw * e.ss
    ntk = lb + lw * e.ss + cw * theta * e.pp
    nngp_correction = cw * (0.5 * np.einsum("gh,abgh->ab", stats.nngp_correction, e.ss_hessian)
                            + 0.125 * np.einsum("ghij,abghij->ab", stats.v, e.ss_fourth, optimize=True))
    # E_c[z_a z_b ΔΘ̂_{kk,12}] for one neuron k: all three δ-structures coincide.
    same_neuron = stats.d + stats.f + stats.f.transpose(0, 1, 3, 2)
    ntk_correction = (cw * stats.ntk_correction * e.pp
                      + 0.5 * np.einsum("gh,abgh->ab", stats.nngp_correction, omega_hessian)
                      + 0.125 * np.einsum("ghij,abghij->ab", stats.v, omega_fourth, optimize=True)
                      + 0.5 * cw * np.einsum("abgh,ghab->ab", e.pp_hessian, same_neuron, optimize=True))
    v = cw * cw * (ss_ss + through_v(e.ss_hessian, e.ss_hessian))
    d = cw * (g_omega + through_v(e.ss_hessian, omega_hessian) + cw * through_d(e.ss_hessian))
    f = cw * cw * (e.sspp * theta[None, None, :, :]
                   + np.einsum("acg,bdh,ghcd->abcd", e.sp_gradient, e.sp_gradient, stats.f, optimize=True))
    # D enters A twice: through the Θ̂ of the neuron behind Ω̂_34 and through that behind Ω̂_12.
    omega_d = through_d(omega_hessian)
    a = (omega_omega + through_v(omega_hessian, omega_hessian) + cw * (omega_d + omega_d.transpose(2, 3, 0, 1))
         + cw * cw * _outer(e.pp, e.pp) * stats.a)
    b = cw * cw * (e.pppp * theta[:, :, None, None] * theta[None, None, :, :]
                   + e.pp[:, None, :, None] * e.pp[None, :, None, :] * stats.b)
    return LayerStatistics(nngp, ntk, nngp_correction, ntk_correction, v, d, f, a, b)
