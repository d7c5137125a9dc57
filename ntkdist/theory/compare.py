"""Every theoretical prediction that applies to a run, held against the computed spectrum, as typed results.

`compare_spectrum` takes plain arrays and the solver's results (the inputs X, the top computed eigenvalues with
their errors, λ_min with its error, the exact trace) and, optionally, the Gram matrix as an operator
(`ntkdist.linalg.operator.SymmetricOperator`) with a budget of products; it never forms or loads the N×N Gram.
It returns a `Comparison`: one `TheoryResult` per prediction, each held against what was computed, plus what was
skipped or does not apply, and why. How results are stored (the ``theory_*`` variables of the spectrum dataset)
is `ntkdist.store.theory_variables`' business; nothing here imports xarray or zarr or knows a variable name.

`compare_spectrum` reads as its list of steps: the computed spectrum as intervals (`computed_spectrum`), the
positivity verdict (`positivity_predictions`), the sphere eigenvalues (`sphere_predictions`), the bounds of
Murray et al. (`dot_product_bounds`), of Nguyen et al. (`deep_relu_bounds`) and the elementary ones
(`elementary_bounds`), each bound run through `attempt`, which keeps it within the size limits and budgets.

Convention: every value is in the stax Gram convention of ``ntkdist.kernels`` (K = [Θ(x_i, x_j)], not divided
by N; sphere predictions are N·μ_k with μ_k in the probability-measure convention of
``ntkdist.theory.sphere``). Conversions from the papers happen inside `ntkdist.theory.bounds`.

Cost, at any N. Nothing here allocates N×N unless N ≤ ``max_n``:

* bounds needing λ_min of *other* dense N×N matrices (Hadamard powers of X̂X̂ᵀ, layer kernels: the Hermite,
  Nguyen and layer-sum lower bounds, the generic λ_k bound) run only for N ≤ ``max_n`` and share a budget of
  ``budget`` dense eigen-decompositions (default 1: no more than a dense solve would do); above it, or past the
  budget, they are listed in ``skipped`` with the reason. (Running them through the actor machinery, as
  products with those matrices, is not implemented.)
* O(N²d) streams (Gershgorin row sums of Hadamard powers) run in row blocks of bounded memory and only for
  N ≤ max(``scan_max_n``, ``max_n``); above, skipped with the reason.
* the pair searches (positivity, interlacing) use a sort along random projections (`ntkdist.theory.pairs`):
  exact for the positivity tolerances, O(N log N + N·d);
* the centred effective rank (Murray Thm 4.3) needs λ_1 of K − c_0·ddᵀ: a few block-Krylov products with the
  operator, at most ``pass_budget`` passes in all (counted in ``passes``); without an operator or budget it is
  skipped with the reason.

How computed numbers are compared: each is an interval (`Computed`). λ_min from a solver is its Rayleigh
quotient θ (a certified upper bound on λ_min of the operator's matrix, + the operator's ``error_bound`` for K):
a lower bound on λ_min *holds* when it is ≤ θ + error_bound (+ rounding), an upper bound when it is
≥ θ − lambda_min_error. Top eigenvalues are Ritz values θ_k ≤ λ_k, so an upper bound on λ_k holds when it is
≥ θ_k − error_bound.

The mathematics, with its conventions, errata and tests: docs/theory.md §9.6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..kernels import MLP
from .bounds import (
    NotDotProduct,
    centred_effective_rank_bound,
    centred_effective_rank_operator,
    diagonal_upper_bound,
    dot_product_form,
    effective_rank_bound,
    generic_eigenvalue_upper_bound,
    hermite_lambda_min_lower_bound,
    interlacing_upper_bound,
    layer_sum_lower_bound,
    nguyen_applies,
    nguyen_hadamard_lower_bound,
    nguyen_layer_sum_lower_bound,
    trace_upper_bound,
)
from .estimates import EIGEN_MAX_N, STREAM_MAX_N, TooLargeError, numerical_rank, sphere_polynomial_count
from .positivity import NOT_GUARANTEED, POSITIVE_DEFINITE, SINGULAR, ntk_positivity
from .result import Computed, TheoryResult
from .sphere import harmonic_multiplicity, sphere_eigenvalues

if TYPE_CHECKING:  # the protocol only; theory imports no implementation of it
    from ..linalg.operator import SymmetricOperator

SPHERE_CITATION = ("Murray et al. 2023 (arXiv 2211.07844) Thm 4.6 (= Azevedo & Menegatto 2015, Funk–Hecke); "
                   "N i.i.d. uniform points on the sphere: Gram eigenvalues ≈ N·μ_k, multiplicity N(d, k)")
SPHERE_CONVENTION = ("N·μ_k, μ_k of f ↦ E_y[Θ(⟨x,y⟩)f(y)] under the uniform probability measure; "
                     "Gram K not divided by N")
POSITIVITY_CONDITIONS = "NTK; non-polynomial activation; distinct inputs (bias) / non-proportional (no bias)"
RANK_EQUATION = ("DERIVED from Carvalho et al.: polynomial φ of degree q gives an NTK polynomial of degree q^depth "
                 "in x")
#: Highest harmonic degree for which sphere eigenvalues are predicted.
MAX_SPHERE_DEGREE = 64
#: Order of the power series used by the dot-product bounds (tail mass beyond it is exact).
SERIES_ORDER = 128
#: At most this many k for the generic λ_k bound.
MAX_K_VALUES = 6
#: Products of the operator the centred effective rank asks for at most (block Krylov on K − c_0·ddᵀ).
CENTRED_PASSES = 8
#: Block width of those products.
CENTRED_BLOCK = 4
#: Sphere degrees whose mean eigenvalue is listed against the computed one.
SPHERE_CLUSTERS = 6
EFFECTIVE_RANK_SOURCE = "Tr K (exact, from the diagonal) / computed λ_1"


@dataclass
class Comparison:
    """What `compare_spectrum` found.

    Attributes
    ----------
    results : list of TheoryResult
        Every prediction computed, in order, each held against the computed value (`TheoryResult.against`).
    skipped : list of dict
        name and reason for each prediction that applies in principle but was not computed (cost, size) or
        failed.
    not_applicable : list of dict
        name and reason for each prediction whose hypotheses do not hold.
    eigendecompositions : float
        Dense N×N eigen-decompositions used (≤ budget).
    budget : float
    passes : int
        Products (passes over K) asked of the operator (≤ pass_budget).
    pass_budget : int
    """

    results: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    not_applicable: list = field(default_factory=list)
    eigendecompositions: float = 0.0
    budget: float = 1.0
    passes: int = 0
    pass_budget: int = 0


@dataclass(frozen=True)
class Limits:
    """How far the compare may go: N, the dense limit ``max_n`` and the O(N²) limit ``scan_max_n``."""

    n: int
    max_n: int
    scan_max_n: int


@dataclass(frozen=True)
class ComputedSpectrum:
    """The solver's results as intervals: λ_k (Ritz values), λ_min, Tr K, and the rounding ``slack``."""

    values: np.ndarray
    errors: np.ndarray | None
    trace: float
    n: int
    operator_error: float
    slack: float
    lambda_min: Computed | None

    @property
    def modes(self) -> int:
        return len(self.values)

    def eigenvalue(self, k: int) -> Computed | None:
        """λ_k (1-based) as computed: a Ritz value θ_k ≤ λ_k of the operator's matrix, λ_k ≤ θ_k + error."""
        if k > self.modes:
            return None
        theta = float(self.values[k - 1])
        err = None if self.errors is None else float(self.errors[k - 1])
        return Computed(theta, theta - self.operator_error - self.slack, theta + (err or 0.0) + self.slack, err,
                        f"computed eigenvalue λ_{k} (Ritz value ≤ λ_{k}; ≤ λ_{k} + error)")

    def effective_rank(self) -> Computed | None:
        """Tr K / λ_1 with the interval λ_1 carries (Tr K is exact)."""
        lam1 = self.eigenvalue(1)
        if lam1 is None or lam1.value <= 0:
            return None
        return Computed(self.trace / lam1.value, self.trace / lam1.upper,
                        self.trace / max(lam1.lower, lam1.value * 1e-300), None, EFFECTIVE_RANK_SOURCE)

    def numerical_rank(self) -> int | None:
        """Eigenvalues above rounding, when the spectrum is full; None otherwise."""
        return int((self.values > self.slack).sum()) if self.modes == self.n else None

    def lambda_min_label(self) -> str:
        lam = self.lambda_min
        return "computed λ_min" + ("" if lam is None else f" ({lam.source.split(':')[0]})")


def compare_spectrum(X, net: MLP, *, kind: str, eigenvalues, trace: float, eigenvalue_error=None,
                     lambda_min: float | None = None, lambda_min_error: float | None = None,
                     operator: "SymmetricOperator | None" = None, pass_budget: int = 0,
                     sphere_radius: float | None = None, budget: float = 1.0, order: int = SERIES_ORDER,
                     max_n: int = EIGEN_MAX_N, scan_max_n: int = STREAM_MAX_N, seed: int = 0) -> Comparison:
    """Every prediction that applies to (X, net), against the computed spectrum; never forms the N×N Gram.

    Parameters
    ----------
    X : (N, d) array
        The run's inputs.
    net : MLP
        Stax convention.
    kind : {"ntk", "nngp", "empirical_ntk", "empirical_nngp"}
        For the empirical (finite-width) kinds only the predictions that hold at any width are compared (the
        singularity certificates and the polynomial rank bound); the sphere prediction of the infinite-width
        limit is added as a reference, and the infinite-width bounds are listed as not applicable.
    eigenvalues, eigenvalue_error, trace, lambda_min, lambda_min_error
        See `computed_spectrum`.
    operator : SymmetricOperator, optional
        The Gram matrix as an operator (`ntkdist.linalg.operator`): products V ↦ K·V for the bounds that need
        them (λ_1 of the centred kernel, Murray Thm 4.3); its ``error_bound`` widens every comparison (Weyl).
    pass_budget : int
        Products (passes over K) the compare may ask of ``operator`` in all; 0 asks none.
    sphere_radius : float, optional
        Set when X is i.i.d. uniform on the sphere of this radius: adds the sphere eigenvalue prediction.
    budget : float
        Dense N×N eigen-decompositions the bounds may use together (the solve used one).
    order : int
        Truncation of the power series (tails are exact).
    max_n, scan_max_n : int
        Bounds needing eigenvalues of other dense N×N matrices are skipped above ``max_n``, those streaming
        over all N² pairs above max(scan_max_n, max_n), with the reason recorded (`ntkdist.theory.estimates`).
    seed : int
        Start block of the operator products.
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    spectrum = computed_spectrum(n, eigenvalues, trace, eigenvalue_error, lambda_min, lambda_min_error, operator)
    check_operator(operator, n, pass_budget)
    out = Comparison(budget=budget, pass_budget=int(pass_budget))
    limits = Limits(n, int(max_n), max(int(scan_max_n), int(max_n)))
    out.results += positivity_predictions(X, net, kind, spectrum)
    if sphere_radius is not None:
        out.results += sphere_predictions(net, kind, X.shape[1], float(sphere_radius), spectrum)
    if kind.startswith("empirical"):
        out.not_applicable.append({"name": "infinite_width_bounds", "reason": (
            f"the bounds hold for the infinite-width kernel; this run's kernel ({kind}) is a finite-width sample")})
        return out
    dot_product_bounds(out, limits, X, net, kind, order, spectrum, operator, seed)
    if kind == "ntk":
        deep_relu_bounds(out, limits, X, net, spectrum)
    elementary_bounds(out, limits, X, net, kind, spectrum)
    return out


# -- step 1: what was computed, as intervals ----------------------------------------------------------------------
def computed_spectrum(n: int, eigenvalues, trace: float, eigenvalue_error=None, lambda_min: float | None = None,
                      lambda_min_error: float | None = None, operator=None) -> ComputedSpectrum:
    """The solver's results, checked, as a `ComputedSpectrum`.

    ``eigenvalues`` (M,) are the computed top eigenvalues, descending (M = N for a full spectrum, usually M ≪ N):
    Ritz values, lower bounds on the true λ_k (Cauchy interlacing), so an upper-bound prediction on λ_k is
    violated only if it is below them; ``eigenvalue_error`` (M,) their certified errors; ``trace`` Tr K, exact
    from the diagonal. ``lambda_min`` and its error come from the λ_min solver (a Rayleigh quotient, a certified
    upper bound); without them a full spectrum gives its last eigenvalue, a partial one no λ_min.
    """
    values = np.asarray(eigenvalues, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or values.size > n:
        raise ValueError(f"eigenvalues: expected a 1-D array of 1 … N = {n} values, got shape {values.shape}")
    slack = 8.0 * n * np.finfo(float).eps * float(np.abs(values).max())
    if np.any(np.diff(values) > slack):
        raise ValueError("eigenvalues: must be in descending order (λ_1 ≥ λ_2 ≥ …); reverse an ascending eigvalsh")
    errors = None
    if eigenvalue_error is not None:
        errors = np.asarray(eigenvalue_error, dtype=np.float64)
        if errors.shape != values.shape:
            raise ValueError(f"eigenvalue_error: expected shape {values.shape} (one per eigenvalue), got "
                             f"{errors.shape}")
    op_error = float(operator.error_bound) if operator is not None else 0.0
    source = None
    if lambda_min is not None:
        source = "λ_min solver: Rayleigh quotient (certified upper bound) ± lambda_min_error"
    elif len(values) == n:
        lambda_min = float(values[-1])
        if lambda_min_error is None and errors is not None:
            lambda_min_error = float(errors[-1])
        source = "last mode of the full spectrum"
    lam = None
    if lambda_min is not None:
        err = None if lambda_min_error is None else float(lambda_min_error)
        lam = Computed(float(lambda_min), float(lambda_min) - (err or 0.0) - slack,
                       float(lambda_min) + op_error + slack, err,
                       source + ("" if err is not None else "; no error bound given: compared as a point value"))
    return ComputedSpectrum(values, errors, float(trace), n, op_error, slack, lam)


def check_operator(operator, n: int, pass_budget: int) -> None:
    """The operator must be N×N and the pass budget non-negative."""
    if operator is not None and tuple(operator.shape) != (n, n):
        raise ValueError(f"operator: expected shape ({n}, {n}) for N = {n} inputs, got {tuple(operator.shape)}")
    if pass_budget < 0:
        raise ValueError(f"pass_budget: expected ≥ 0, got {pass_budget}")


# -- step 2: positivity (Carvalho et al.) and the polynomial rank bound -------------------------------------------
def positivity_predictions(X, net: MLP, kind: str, spectrum: ComputedSpectrum) -> list[TheoryResult]:
    """The positivity verdict against λ_min, and for a polynomial φ the rank bound against the numerical rank."""
    verdict = ntk_positivity(X, net, kind=kind)
    lam = spectrum.lambda_min
    status = TheoryResult("positivity", "lambda_min", "status", verdict.status, True, POSITIVITY_CONDITIONS,
                          verdict.reason, "", verdict.citation,
                          work="a sort along random projections, O(N log N + N·d)",
                          details={k: v for k, v in verdict.details.items() if k != "counts"})
    results = [status.against(lam, spectrum.lambda_min_label(),
                              agrees=positivity_agrees(verdict.status, lam, spectrum.slack))]
    if verdict.rank_bound is not None:
        rank = spectrum.numerical_rank()
        computed = None if rank is None else Computed(rank, rank, rank, None, "eigenvalues above rounding")
        bound = TheoryResult("polynomial_rank", "rank", "upper", verdict.rank_bound, True,
                             "polynomial activation of degree q", verdict.reason, "", RANK_EQUATION,
                             work="one SVD of X, O(N·d²)")
        results.append(bound.against(computed, "numerical rank of the full computed spectrum"))
    return results


def positivity_agrees(status: str, lam: Computed | None, slack: float) -> bool | None:
    """Whether computed λ_min ± its error agrees with the verdict; None when it cannot tell.

    Positive definite: agrees when λ_min is certainly above rounding, disagrees only when it is certainly
    negative beyond rounding. A λ_min within rounding of 0 cannot tell: the theorem promises λ_min > 0, not that
    it exceeds float64's resolution, and analytic kernels (tanh, erf, …) on many points have eigenvalues far
    below it. Singular: agrees when [θ − err, θ + err] meets the rounding interval. Not guaranteed: nothing to
    check.
    """
    if lam is None or status == NOT_GUARANTEED:
        return None
    err = lam.error or 0.0
    if status == POSITIVE_DEFINITE:
        return True if lam.value - err > slack else (False if lam.value + err < -slack else None)
    assert status == SINGULAR, status
    return bool(lam.value - err <= slack and lam.value + err >= -slack)


# -- step 3: sphere eigenvalues (Murray Thm 4.6) ------------------------------------------------------------------
def sphere_predictions(net: MLP, kind: str, dim: int, radius: float, spectrum: ComputedSpectrum
                       ) -> list[TheoryResult]:
    """N·μ_k by multiplicity over the computed modes, and the mean of the first degrees against the computed mean.

    For a finite-width kind the prediction is that of its infinite-width limit (no 1/width corrections).
    """
    limit_kind = kind.removeprefix("empirical_")
    n, modes = spectrum.n, spectrum.modes
    predicted, degree_of, mu, top_degree, error = sphere_prediction(net, limit_kind, n, dim, radius, modes)
    kernel = f"infinite-width {limit_kind.upper()}" + (
        " (the limit of this run's finite-width sample; no 1/width corrections)" if kind != limit_kind else "")
    conditions = f"N i.i.d. uniform points on the sphere of radius {radius:g} in R^{dim}"
    details = {"radius": radius, "max_degree": top_degree, "kernel": kernel,
               "method": "Funk–Hecke by Gauss–Legendre quadrature in the angle (ntkdist.theory.sphere)",
               "mu_error_bound": error, "mu": mu, "degree": degree_of}
    results = [TheoryResult("sphere_eigenvalue", "eigenvalue", "estimate", predicted, True, conditions, "",
                            "", SPHERE_CITATION, convention=SPHERE_CONVENTION, details=details,
                            work=f"quadrature of {top_degree + 1} degrees; any N")]
    biggest = np.nanmax(predicted) if np.isfinite(predicted).any() else 0.0
    seen = []
    for k in degree_of:
        if k >= 0 and k not in seen:
            seen.append(int(k))
    for k in seen[:SPHERE_CLUSTERS]:
        where = degree_of == k
        mean_pred, mean_comp = float(predicted[where].mean()), float(spectrum.values[where].mean())
        if mean_pred <= 1e-3 * biggest:
            continue
        cluster = TheoryResult(f"sphere_cluster_k{k}", f"mean λ over degree {k} ({int(where.sum())} modes)",
                               "estimate", mean_pred, True, conditions, "", "", SPHERE_CITATION,
                               convention=SPHERE_CONVENTION)
        results.append(cluster.against(Computed(mean_comp, mean_comp, mean_comp, None, "mean computed eigenvalue"),
                                       f"mean of the computed eigenvalues of degree {k}"))
    return results


def sphere_prediction(net: MLP, kind: str, n: int, dim: int, radius: float, modes: int):
    """N·μ_k expanded by multiplicity and sorted descending over the first ``modes`` modes (NaN beyond)."""
    total, degree = 0, 0
    while total < modes and degree < MAX_SPHERE_DEGREE:
        total += int(harmonic_multiplicity(dim, degree))
        degree += 1
    # Gauss–Legendre in the angle of the Funk–Hecke integral: converges exponentially even for ReLU kernels,
    # whose power series would need ~10⁵ terms on S² (see ntkdist.theory.sphere)
    spectrum = sphere_eigenvalues(net, dim, max(degree - 1, 1), kind=kind, radius=radius, method="quadrature")
    degrees = np.asarray(spectrum.degree, dtype=np.int64)
    mu = np.asarray(spectrum.eigenvalue, dtype=np.float64)
    mult = np.asarray(spectrum.multiplicity, dtype=np.int64)
    values = np.repeat(n * mu, mult)
    labels = np.repeat(degrees, mult)
    order = np.argsort(-values, kind="stable")
    values, labels = values[order][:modes], labels[order][:modes]
    predicted = np.full(modes, np.nan)
    degree_of = np.full(modes, -1, dtype=np.int64)
    predicted[:len(values)] = values
    degree_of[:len(labels)] = labels
    error = getattr(spectrum, "error_bound", None)
    error = float(np.max(error)) if error is not None else None
    return predicted, degree_of, {int(k): float(m) for k, m in zip(degrees, mu)}, int(degrees.max()), error


# -- running a bound within the limits ----------------------------------------------------------------------------
def attempt(out: Comparison, limits: Limits, name: str, cost: float, make: Callable[[], TheoryResult],
            compare: Callable[[TheoryResult], TheoryResult], *, quadratic: bool = False) -> None:
    """Run the bound ``make`` if N allows its dense and O(N²) work and its dense ``cost`` fits the budget left.

    An applicable result is held against the computed value by ``compare`` and added to ``out.results``; a
    result whose hypotheses fail goes to ``out.not_applicable``, one that cannot run to ``out.skipped``.
    """
    n = limits.n
    if cost > 0 and n > limits.max_n:
        out.skipped.append({"name": name, "reason": (
            f"needs λ_min of {cost:g} other dense {n}×{n} matrix/matrices (Hadamard powers or layer kernels); "
            f"N = {n} > max_n = {limits.max_n}, so it is skipped rather than allocating N×N (running those spectra "
            "through the actor machinery is not implemented)")})
        return
    if quadratic and n > limits.scan_max_n:
        out.skipped.append({"name": name, "reason": (
            f"streams over all N² = {float(n) ** 2:.3g} pairs (O(N²d) Gershgorin row sums); N = {n} > "
            f"scan_max_n = {limits.scan_max_n}")})
        return
    if cost > 0 and out.eigendecompositions + cost > out.budget + 1e-9:
        out.skipped.append({"name": name, "reason": (
            f"needs {cost:g} dense {n}×{n} eigen-decomposition(s); the compare budget is {out.budget:g} (the "
            f"solve's one) and {out.eigendecompositions:g} are already used")})
        return
    try:
        result = make()
    except TooLargeError as exc:
        out.skipped.append({"name": name, "reason": str(exc)})
        return
    if not result.applies:
        out.not_applicable.append({"name": result.name, "reason": result.reason})
        return
    out.eigendecompositions += result.cost
    out.results.append(compare(result))


def against_lambda_min(spectrum: ComputedSpectrum):
    """``compare`` for `attempt`: hold a λ_min bound against the computed λ_min."""
    return partial(TheoryResult.against, computed=spectrum.lambda_min, compared_with=spectrum.lambda_min_label())


# -- step 4: Murray et al. (the dot-product form) -----------------------------------------------------------------
def dot_product_bounds(out: Comparison, limits: Limits, X, net: MLP, kind: str, order: int,
                       spectrum: ComputedSpectrum, operator, seed: int) -> None:
    """Effective rank (Thm 4.1, 4.3), the generic λ_k bound (Thm 4.8) and the Hermite λ_min lower bound."""
    form, why_not = None, ""
    try:
        form = dot_product_form(X, net, kind=kind, order=order, max_n=limits.max_n)
    except (NotDotProduct, TooLargeError) as exc:
        why_not = str(exc)
    if form is None:
        for name in ("effective_rank", "centred_effective_rank", "generic_lambda_k", "hermite_lambda_min"):
            out.not_applicable.append({"name": name, "reason": why_not})
        return
    attempt(out, limits, "effective_rank", 0, lambda: effective_rank_bound(X, net, form=form),
            partial(TheoryResult.against, computed=spectrum.effective_rank(), compared_with=EFFECTIVE_RANK_SOURCE))
    c0 = float(form.coefficients[0])
    centred = None
    if len(form.coefficients) > 1 and form.coefficients[1] > 0:
        centred = computed_centred_effective_rank(out, form, operator, spectrum.trace, seed)
    attempt(out, limits, "centred_effective_rank", 0, lambda: centred_effective_rank_bound(X, net, form=form),
            partial(TheoryResult.against, computed=centred, compared_with=(
                f"Tr/λ_1 of K − c_0·ddᵀ (c_0 = {c0:.6g}), λ_1 by block Krylov on the operator")))
    ks = generic_bound_indices(form.powers.rank, spectrum.modes, limits.n)
    if ks:
        attempt(out, limits, "generic_lambda_k", 0,
                lambda: generic_eigenvalue_upper_bound(X, net, ks, form=form, max_n=limits.max_n),
                lambda bound: bound.against([spectrum.eigenvalue(int(k)) for k in bound.k],
                                            "computed eigenvalue λ_k"))
    first = next((p for p in range(len(form.coefficients)) if not form.powers.is_singular(p)), None)
    cost = 0 if first is None or first in form.powers.known_lambda_min() else 1
    attempt(out, limits, "hermite_lambda_min", cost,
            lambda: hermite_lambda_min_lower_bound(X, net, form=form, exact_powers=1, max_n=limits.max_n),
            against_lambda_min(spectrum), quadratic=True)


def computed_centred_effective_rank(out: Comparison, form, operator, trace: float, seed: int) -> Computed | None:
    """eff(K − c_0·ddᵀ) through ``operator`` within what is left of the pass budget; None (reason recorded) else."""
    name = "computed_centred_effective_rank"
    left = int(out.pass_budget) - out.passes
    if operator is None:
        out.skipped.append({"name": name, "reason": "needs λ_1 of K − c_0·ddᵀ: no operator was given (the Gram "
                                                    "matrix is never formed here)"})
        return None
    if left < 2:
        out.skipped.append({"name": name, "reason": (
            f"needs at least 2 products with the operator for λ_1 of K − c_0·ddᵀ; the pass budget has {left} left "
            f"of {out.pass_budget}")})
        return None
    before = getattr(operator, "passes", None)
    found = centred_effective_rank_operator(operator, form, trace, passes=min(left, CENTRED_PASSES),
                                            block=CENTRED_BLOCK, seed=seed)
    after = getattr(operator, "passes", None)
    out.passes += (after - before) if isinstance(before, int) and isinstance(after, int) else found["passes"]
    if found["value"] is None:
        out.skipped.append({"name": name, "reason": f"λ_1 of K − c_0·ddᵀ came out ≤ 0 ({found['lambda_1']:.3g})"})
        return None
    lower = found["lower"] if found["lower"] is not None else 0.0
    return Computed(found["value"], lower, found["value"], found["value"] - lower, (
        f"Tr̃/θ, θ = {found['lambda_1']:.6g} by block Krylov ({found['passes']} passes, block {found['block']}) on "
        f"V ↦ KV − c_0·d(dᵀV), residual {found['residual']:.3g}; the interval assumes θ + residual ≥ λ_1 "
        "(probabilistic: random start)"))


def generic_bound_indices(rank: int, modes: int, n: int) -> list[int]:
    """k just above the rank counts of H_m (where the bound changes), within the computed modes, ≤ MAX_K_VALUES."""
    ks = []
    m, previous = 1, 0
    while True:
        k = sphere_polynomial_count(rank, m) + 1
        # For rank ≤ 2 the count stops growing (rank 1: 1, 2, 2, …): stop there too.
        if k > min(modes, n) or k <= previous:
            break
        if k >= 2:
            ks.append(k)
        previous = k
        m += 1
    if len(ks) > MAX_K_VALUES:
        pick = np.unique(np.round(np.geomspace(1, len(ks), MAX_K_VALUES)).astype(int) - 1)
        ks = [ks[i] for i in pick]
    if modes >= 2 and modes not in ks and modes <= n:
        ks.append(modes)
    return ks


# -- step 5: Nguyen et al. (deep ReLU) or the layer sum of any activation -----------------------------------------
def deep_relu_bounds(out: Comparison, limits: Limits, X, net: MLP, spectrum: ComputedSpectrum) -> None:
    """Nguyen et al.'s λ_min chain for ReLU without bias; otherwise the stax layer sum (any activation). NTK only."""
    compare = against_lambda_min(spectrum)
    why = nguyen_applies(net)
    if why:
        out.not_applicable.append({"name": "nguyen_*", "reason": f"Nguyen et al. {why}"})
        n = limits.n
        singular_first = numerical_rank(np.hstack([X, np.ones((n, 1))]) if net.bias_var > 0 else X) < n
        attempt(out, limits, "layer_sum_lambda_min", net.depth + (0 if singular_first else 1),
                lambda: layer_sum_lower_bound(X, net, max_n=limits.max_n), compare)
        return
    attempt(out, limits, "nguyen_hadamard_gershgorin_lambda_min", 0,
            lambda: nguyen_hadamard_lower_bound(X, net, method="gershgorin"), compare, quadratic=True)
    attempt(out, limits, "nguyen_hadamard_exact_lambda_min", nguyen_exact_cost(X),
            lambda: nguyen_hadamard_lower_bound(X, net, method="exact", max_n=limits.max_n), compare)
    attempt(out, limits, "nguyen_layer_sum_lambda_min", net.depth,
            lambda: nguyen_layer_sum_lower_bound(X, net, max_n=limits.max_n), compare)


def nguyen_exact_cost(X) -> int:
    """1 when some even r ≤ 64 makes (XXᵀ)^∘r possibly non-singular (one eigen-decomposition), else 0."""
    n = X.shape[0]
    rank = numerical_rank(X)
    return int(any(math.comb(rank + r - 1, r) >= n for r in range(2, 65, 2)))


# -- step 6: the elementary upper bounds on λ_min -----------------------------------------------------------------
def elementary_bounds(out: Comparison, limits: Limits, X, net: MLP, kind: str, spectrum: ComputedSpectrum) -> None:
    """λ_min ≤ Tr K/N, ≤ min_i K_ii and ≤ λ_min of a principal submatrix on near pairs (any network, any N)."""
    compare = against_lambda_min(spectrum)
    attempt(out, limits, "trace_lambda_min", 0, lambda: trace_upper_bound(X, net, kind=kind), compare)
    attempt(out, limits, "diagonal_lambda_min", 0, lambda: diagonal_upper_bound(X, net, kind=kind), compare)
    attempt(out, limits, "interlacing_lambda_min", 0,
            lambda: interlacing_upper_bound(X, net, kind=kind, exact_max_n=limits.scan_max_n), compare)
