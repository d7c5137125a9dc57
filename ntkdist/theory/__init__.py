"""Theory: Hermite coefficients, power series, sphere eigenvalues and spectral bounds (imports only kernels).

* `result`       — `TheoryResult`, the one typed value of every prediction and bound (value, paper, equation,
  conditions, cost, and once compared: the computed interval and whether it holds), and `Computed`.
* `hermite`      — μ_k of φ(√q ·) in normalised Hermite polynomials, exact where a closed form exists.
* `power_series` — Θ(ρ) = Σ_p κ_p ρ^p (Murray et al. 2023, Thm 3.1, composition form; project and paper
  conventions).
* `sphere`       — eigenvalues on Unif(S^{dim−1}) (Thm 4.6 and Funk–Hecke quadrature), multiplicities and the
  decay rates of Lemma 3.2 / Cor. 4.7.
* `bounds`       — spectral bounds for given data, one module per paper: `bounds.murray` (Thm 4.1/4.3/4.8, the
  Hermite lower bound), `bounds.nguyen` (the deep-ReLU λ_min chain), `bounds.elementary` (trace, diagonal,
  interlacing, layer sum).
* `estimates`    — the numerical building blocks of the bounds (extreme eigenvalues, Hadamard powers, λ_1 by
  block Krylov) and their size limits.
* `pairs`        — near and coincident pairs of inputs without the all-pairs scan.
* `positivity`   — strict positive definiteness (Carvalho et al.) and the polynomial rank bound.
* `summary`      — what theory says of a network before any data (``ntkdist theory``).
* `finite_width` — the leading 1/n corrections K¹, Θ¹ and the four-point tensors V, D, F, A, B of a finite-width
  MLP from the layer recursions (Guillen, Misof, Gerken 2025), on a few sample points.
* `compare`      — every prediction that applies to a run's network and data, held against its spectrum; how
  they are stored is `ntkdist.store.theory_variables`' business.

Structure (checked by ``tests/theory/test_structure.py``): no module over 600 lines, no function over 80 lines
unless its docstring says why ("long because …"), no import of ``ntkdist.store``.
"""

from .hermite import activation_polynomial_degree, dual_coefficients, hermite_coefficients
from .power_series import (
    PowerSeries,
    murray_power_series,
    murray_theorem_3_1,
    murray_two_layer_coefficients,
    power_series,
)
from .sphere import (
    DecayPrediction,
    SphereSpectrum,
    decay_prediction,
    fit_power_law,
    funk_hecke_weights,
    harmonic_multiplicity,
    sphere_eigenvalues,
)
from .scaling import LogLogFit, fit_log_log

from .bounds import (
    EIGEN_MAX_N,
    Bound,
    DotProductForm,
    HadamardPowers,
    TooLargeError,
    centred_effective_rank,
    centred_effective_rank_bound,
    diagonal_upper_bound,
    dot_product_form,
    effective_rank,
    effective_rank_bound,
    generic_eigenvalue_upper_bound,
    hermite_lambda_min_lower_bound,
    interlacing_upper_bound,
    kernel_diagonal,
    layer_sum_lower_bound,
    nguyen_hadamard_lower_bound,
    nguyen_layer_kernels,
    nguyen_layer_sum_lower_bound,
    nguyen_limit_kernel,
    nguyen_to_stax_factor,
    relu_hermite_coefficient_squared,
    trace_upper_bound,
)
from .compare import Comparison, compare_spectrum
from .finite_width import FiniteWidthCorrections, finite_width_corrections
from .result import Computed, TheoryResult
from .positivity import (Positivity, ntk_positivity, polynomial_kernel_degree, polynomial_rank_bound,
                         positivity_without_data)
from .summary import network_summary

__all__ = [
    "EIGEN_MAX_N", "Bound", "DotProductForm", "HadamardPowers", "TooLargeError", "centred_effective_rank",
    "centred_effective_rank_bound", "diagonal_upper_bound", "dot_product_form", "effective_rank",
    "effective_rank_bound", "generic_eigenvalue_upper_bound", "hermite_lambda_min_lower_bound",
    "interlacing_upper_bound", "kernel_diagonal", "layer_sum_lower_bound", "nguyen_hadamard_lower_bound",
    "nguyen_layer_kernels", "nguyen_layer_sum_lower_bound", "nguyen_limit_kernel", "nguyen_to_stax_factor",
    "relu_hermite_coefficient_squared", "trace_upper_bound", "Comparison", "compare_spectrum", "Positivity",
    "ntk_positivity", "polynomial_kernel_degree", "polynomial_rank_bound", "positivity_without_data", "network_summary",
    "hermite_coefficients", "dual_coefficients", "activation_polynomial_degree", "Computed", "TheoryResult",
    "PowerSeries", "power_series", "murray_power_series", "murray_theorem_3_1", "murray_two_layer_coefficients",
    "SphereSpectrum", "sphere_eigenvalues", "harmonic_multiplicity", "funk_hecke_weights",
    "DecayPrediction", "decay_prediction", "fit_power_law", "LogLogFit", "fit_log_log",
    "FiniteWidthCorrections", "finite_width_corrections",
]
