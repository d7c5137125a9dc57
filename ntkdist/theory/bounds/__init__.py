"""Spectral bounds for the NTK/NNGP Gram matrix of given data, one module per paper.

Every bound takes the data X (N×d) and an `MLP` in the **stax convention** of `ntkdist.kernels`
(Σ¹ = weight_var·⟨x, y⟩/d + bias_var, ``depth`` hidden layers, linear readout; the Gram matrix is
K = [Θ(x_i, x_j)] itself, not divided by N) and returns a `ntkdist.theory.result.TheoryResult` (``Bound``) on
an eigenvalue of that K. Papers that use another convention are converted at the boundary of the function that
implements them; each docstring says how.

* `murray`     — Murray, Jin, Bowman, Montúfar 2023 (arXiv 2211.07844): the dot-product form
  K = D·Σ_p c_p (X̂X̂ᵀ)^{⊙p}·D, effective rank (Thm 4.1, 4.3), the generic λ_k upper bound (Thm 4.8) and the
  Hermite λ_min lower bound (Thm 3.1 expansion + Schur).
* `nguyen`     — Nguyen, Mondelli, Montúfar 2021 (arXiv 2012.11654): deep-ReLU λ_min chain of the proof of
  Thm 3.2 in their convention (layer kernels, Hadamard powers with μ_r², layer sum), converted to stax.
* `elementary` — no special structure: λ_min ≤ min_i K_ii, ≤ Tr K/N, Cauchy interlacing on near pairs, and the
  stax layer-sum lower bound for any activation.

The numerical building blocks (extreme eigenvalues, `HadamardPowers`, `top_eigenvalue`, size limits) live in
`ntkdist.theory.estimates`, the near-pair search in `ntkdist.theory.pairs`; both are re-exported here for the
callers that know them as ``bounds.*``.
"""

from ..estimates import (
    EIGEN_MAX_N,
    STREAM_MAX_N,
    HadamardPowers,
    TooLargeError,
    TopEigenvalue,
    gershgorin_lower_bound,
    homogeneous_polynomial_count,
    numerical_rank,
    sphere_polynomial_count,
    top_eigenvalue,
)
from ..pairs import near_pairs
from ..result import MURRAY, NGUYEN, STAX_CONVENTION, Bound, Computed, TheoryResult
from .elementary import (
    diagonal_upper_bound,
    interlacing_upper_bound,
    kernel_diagonal,
    layer_sum_lower_bound,
    trace_upper_bound,
)
from .murray import (
    DotProductForm,
    NotDotProduct,
    centred_effective_rank,
    centred_effective_rank_bound,
    centred_effective_rank_operator,
    dot_product_form,
    effective_rank,
    effective_rank_bound,
    generic_eigenvalue_upper_bound,
    hermite_lambda_min_lower_bound,
    is_positively_homogeneous,
    stax_series_coefficients,
)
from .nguyen import (
    NGUYEN_CONVENTION,
    hadamard_power_gershgorin,
    hadamard_power_lambda_min,
    nguyen_applies,
    nguyen_hadamard_lower_bound,
    nguyen_layer_kernels,
    nguyen_layer_sum_lower_bound,
    nguyen_limit_kernel,
    nguyen_to_stax_factor,
    relu_hermite_coefficient_squared,
)

__all__ = [
    "EIGEN_MAX_N", "STREAM_MAX_N", "HadamardPowers", "TooLargeError", "TopEigenvalue", "gershgorin_lower_bound",
    "homogeneous_polynomial_count", "numerical_rank", "sphere_polynomial_count", "top_eigenvalue", "near_pairs",
    "MURRAY", "NGUYEN", "STAX_CONVENTION", "Bound", "Computed", "TheoryResult",
    "diagonal_upper_bound", "interlacing_upper_bound", "kernel_diagonal", "layer_sum_lower_bound",
    "trace_upper_bound",
    "DotProductForm", "NotDotProduct", "centred_effective_rank", "centred_effective_rank_bound",
    "centred_effective_rank_operator", "dot_product_form", "effective_rank", "effective_rank_bound",
    "generic_eigenvalue_upper_bound", "hermite_lambda_min_lower_bound", "is_positively_homogeneous",
    "stax_series_coefficients",
    "NGUYEN_CONVENTION", "hadamard_power_gershgorin", "hadamard_power_lambda_min", "nguyen_applies",
    "nguyen_hadamard_lower_bound", "nguyen_layer_kernels", "nguyen_layer_sum_lower_bound", "nguyen_limit_kernel",
    "nguyen_to_stax_factor", "relu_hermite_coefficient_squared",
]
