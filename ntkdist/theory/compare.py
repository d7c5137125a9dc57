"""Every theoretical prediction that applies to a run, next to the computed spectrum: the glue of the compare stage.

`compare_spectrum` takes plain arrays and the solver's results (the inputs X, the top computed eigenvalues with
their errors, λ_min with its error, the exact trace) and, optionally, the Gram matrix as an operator
(`ntkdist.linalg.operator.SymmetricOperator`) with a budget of products; it never forms or loads the N×N Gram.
It returns `TheoryVariable`s — name, dims, data and JSON-ready attrs citing paper and equation and
stating the convention — that the pipeline turns into ``theory_*`` variables of the spectrum dataset, plus a
table of each bound against the computed value (the report prints it). Nothing here imports xarray or zarr.

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
≥ θ_k − error_bound. Computed values and their errors are in each variable's attrs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..kernels import MLP
from . import bounds as B
from .positivity import ntk_positivity
from .sphere import harmonic_multiplicity, sphere_eigenvalues

if TYPE_CHECKING:  # the protocol only; theory imports no implementation of it
    from ..linalg.operator import SymmetricOperator

SPHERE_CITATION = ("Murray et al. 2023 (arXiv 2211.07844) Thm 4.6 (= Azevedo & Menegatto 2015, Funk–Hecke); "
                   "N i.i.d. uniform points on the sphere: Gram eigenvalues ≈ N·μ_k, multiplicity N(d, k)")
#: Highest harmonic degree for which sphere eigenvalues are predicted.
MAX_SPHERE_DEGREE = 64
#: Order of the power series used by the dot-product bounds (tail mass beyond it is exact).
SERIES_ORDER = 128
#: At most this many k for the generic λ_k bound.
MAX_K_VALUES = 6


@dataclass
class TheoryVariable:
    """One ``theory_*`` variable: ``dims`` () for a scalar, ("mode",) or ("theory_k",)."""

    name: str
    dims: tuple
    data: np.ndarray
    attrs: dict


@dataclass
class Comparison:
    """What `compare_spectrum` found.

    Attributes
    ----------
    variables : list of TheoryVariable
    coords : dict
        Extra coordinates: name → (dims, values, attrs) (``theory_k``).
    table : list of dict
        One row per compared number: prediction, side, quantity, theory, computed, ratio (theory/computed),
        holds, citation.
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

    variables: list = field(default_factory=list)
    coords: dict = field(default_factory=dict)
    table: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    not_applicable: list = field(default_factory=list)
    eigendecompositions: float = 0.0
    budget: float = 1.0
    passes: int = 0
    pass_budget: int = 0

    def summary(self) -> dict:
        """JSON-ready summary (stored in the dataset's attrs and the stage record)."""
        return {"table": self.table, "skipped": self.skipped, "not_applicable": self.not_applicable,
                "eigendecompositions": self.eigendecompositions, "budget": self.budget,
                "passes": self.passes, "pass_budget": self.pass_budget}


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def _ratio(theory: float, computed: float | None):
    if computed is None or not math.isfinite(theory) or computed == 0.0:
        return None
    return theory / computed


_VARIABLE = {  # Bound.name → theory variable name
    "hermite_lambda_min": "theory_lambda_min_lower_hermite",
    "nguyen_hadamard_exact_lambda_min": "theory_lambda_min_lower_nguyen_hadamard",
    "nguyen_hadamard_gershgorin_lambda_min": "theory_lambda_min_lower_nguyen_gershgorin",
    "nguyen_layer_sum_lambda_min": "theory_lambda_min_lower_nguyen_layer_sum",
    "layer_sum_lambda_min": "theory_lambda_min_lower_layer_sum",
    "trace_lambda_min": "theory_lambda_min_upper_trace",
    "diagonal_lambda_min": "theory_lambda_min_upper_diagonal",
    "interlacing_lambda_min": "theory_lambda_min_upper_interlacing",
    "effective_rank": "theory_effective_rank_upper",
    "centred_effective_rank": "theory_centred_effective_rank_upper",
    "generic_lambda_k": "theory_lambda_k_upper",
}


def _bound_attrs(bound: B.Bound, computed, ratio, holds, what_computed: str) -> dict:
    return _jsonable({
        "long_name": f"{bound.side} bound on {bound.quantity}",
        "bound": bound.side,
        "quantity": bound.quantity,
        "citation": bound.citation,
        "convention": bound.convention,
        "applies_when": bound.conditions,
        "reason": bound.reason,
        "computed": computed,
        "computed_from": what_computed,
        "ratio_to_computed": ratio,
        "holds": holds,
        "dense_eigendecompositions": bound.cost,
        "details": bound.details,
    })


def _sphere_prediction(net: MLP, kind: str, n: int, dim: int, radius: float, modes: int):
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


@dataclass(frozen=True)
class Computed:
    """A computed quantity as an interval: ``value`` and the range [lower, upper] the true one lies in.

    For λ_min from a solver: ``value`` is its Rayleigh quotient θ (a certified upper bound on λ_min of the
    operator's matrix), ``upper`` = θ + the operator's error bound + rounding, ``lower`` = θ − ``error`` −
    rounding. A lower-bound prediction *holds* when it is ≤ ``upper``, an upper-bound prediction when it is ≥
    ``lower`` (a violation is then certain, up to what ``source`` says is probabilistic).
    """

    value: float
    lower: float
    upper: float
    error: float | None
    source: str


def _holds(side: str, theory: float, computed: Computed | None) -> bool | None:
    if computed is None or not math.isfinite(theory):
        return None
    return bool(theory <= computed.upper) if side == "lower" else bool(theory >= computed.lower)


def _computed_attrs(computed: Computed | None) -> dict:
    if computed is None:
        return {"computed": None}
    return {"computed": computed.value, "computed_error": computed.error,
            "computed_interval": [computed.lower, computed.upper], "computed_source": computed.source}


def compare_spectrum(X, net: MLP, *, kind: str, eigenvalues, trace: float, eigenvalue_error=None,
                     lambda_min: float | None = None, lambda_min_error: float | None = None,
                     operator: "SymmetricOperator | None" = None, pass_budget: int = 0,
                     sphere_radius: float | None = None, budget: float = 1.0, order: int = SERIES_ORDER,
                     max_n: int = B.EIGEN_MAX_N, scan_max_n: int = B.STREAM_MAX_N, seed: int = 0) -> Comparison:
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
    eigenvalues : (M,) array
        Computed top eigenvalues of the Gram matrix, descending; M = N for a full spectrum, usually M ≪ N.
        Ritz values from a solver are lower bounds on the true λ_k (Cauchy interlacing), so an upper-bound
        prediction on λ_k is violated only if it is below them.
    trace : float
        Tr K, exact from the diagonal.
    eigenvalue_error : (M,) array, optional
        The solver's certified error of each eigenvalue (widens the comparisons of λ_1 and λ_k).
    lambda_min, lambda_min_error : float, optional
        λ_min from the λ_min solver (its Rayleigh quotient, a certified upper bound) and its error bound. When
        not given and the spectrum is full (M = N), the last eigenvalue (and its error) is used; otherwise the
        λ_min bounds are listed without a computed value.
    operator : SymmetricOperator, optional
        The Gram matrix as an operator (`ntkdist.linalg.operator`): products V ↦ K·V for the bounds that need
        them (λ_1 of the centred kernel, Murray Thm 4.3); its ``error_bound`` widens every comparison (Weyl).
    pass_budget : int
        Products (passes over K) the compare may ask of ``operator`` in all; 0 asks none.
    sphere_radius : float, optional
        Set when X is i.i.d. uniform on the sphere of this radius: adds the sphere eigenvalue prediction.
    budget : float
        Dense N×N eigen-decompositions the bounds may use together (the solve used one); they apply only when
        N ≤ ``max_n``.
    order : int
        Truncation of the power series (tails are exact).
    max_n : int
        Bounds needing eigenvalues of other dense N×N matrices (Hadamard powers, layer kernels) are skipped
        above this N, with the reason recorded (`ntkdist.theory.bounds.EIGEN_MAX_N`).
    scan_max_n : int
        Bounds streaming over all N² pairs (Gershgorin sums, O(N²d)) are skipped above max(scan_max_n, max_n)
        (`ntkdist.theory.bounds.STREAM_MAX_N`); the near-pair search switches to sorted projections there.
    seed : int
        Start block of the operator products.
    """
    X = np.asarray(X, dtype=np.float64)
    n, dim = X.shape
    values = np.asarray(eigenvalues, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or values.size > n:
        raise ValueError(f"eigenvalues: expected a 1-D array of 1 … N = {n} values, got shape {values.shape}")
    modes = len(values)
    full = modes == n
    slack = 8.0 * n * np.finfo(float).eps * float(np.abs(values).max())
    if np.any(np.diff(values) > slack):
        raise ValueError("eigenvalues: must be in descending order (λ_1 ≥ λ_2 ≥ …); reverse an ascending eigvalsh")
    errors = None
    if eigenvalue_error is not None:
        errors = np.asarray(eigenvalue_error, dtype=np.float64)
        if errors.shape != values.shape:
            raise ValueError(f"eigenvalue_error: expected shape {values.shape} (one per eigenvalue), got "
                             f"{errors.shape}")
    if operator is not None and tuple(operator.shape) != (n, n):
        raise ValueError(f"operator: expected shape ({n}, {n}) for N = {n} inputs, got {tuple(operator.shape)}")
    if pass_budget < 0:
        raise ValueError(f"pass_budget: expected ≥ 0, got {pass_budget}")
    op_error = float(operator.error_bound) if operator is not None else 0.0
    out = Comparison(budget=budget, pass_budget=int(pass_budget))
    quadratic_limit = max(int(scan_max_n), int(max_n))

    # -- what was computed, as intervals ------------------------------------------------------------------------
    source = None
    if lambda_min is not None:
        source = "λ_min solver: Rayleigh quotient (certified upper bound) ± lambda_min_error"
    elif full:
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
    lam_min = None if lam is None else lam.value

    def eigenvalue(k: int) -> Computed | None:
        """λ_k (1-based) as computed: a Ritz value θ_k ≤ λ_k of the operator's matrix, λ_k ≤ θ_k + error."""
        if k > modes:
            return None
        theta = float(values[k - 1])
        err = None if errors is None else float(errors[k - 1])
        return Computed(theta, theta - op_error - slack, theta + (err or 0.0) + slack, err,
                        f"computed eigenvalue λ_{k} (Ritz value ≤ λ_{k}; ≤ λ_{k} + error)")

    # -- positivity (Carvalho et al.) and the polynomial rank bound -------------------------------------------
    verdict = ntk_positivity(X, net, kind=kind)
    code = {"positive_definite": 1, "not_guaranteed": 0, "singular": -1}[verdict.status]
    numerical_rank = int((values > slack).sum()) if full else None
    out.variables.append(TheoryVariable("theory_positive_definite", (), np.int8(code), _jsonable({
        "long_name": "strict positive definiteness: 1 guaranteed, −1 singular, 0 not guaranteed",
        "status": verdict.status, "reason": verdict.reason, "citation": verdict.citation,
        "applies_when": "NTK; non-polynomial activation; distinct inputs (bias) / non-proportional (no bias)",
        "convention": B.STAX_CONVENTION, "computed_lambda_min": lam_min,
        "computed_lambda_min_error": None if lam is None else lam.error,
        "details": {k: v for k, v in verdict.details.items() if k != "counts"}})))
    if lam is not None:
        err = lam.error or 0.0
        if code == 1:  # PD: agrees when λ_min is certainly above rounding, disagrees when certainly not
            agrees = True if lam.value - err > slack else (False if lam.value + err <= slack else None)
        elif code == -1:  # singular: agrees when [θ − err, θ + err] meets the rounding interval
            agrees = bool(lam.value - err <= slack and lam.value + err >= -slack)
        else:
            agrees = None
        out.table.append(_jsonable({"prediction": "positivity", "side": "status", "quantity": "lambda_min",
                                    "theory": verdict.status, "computed": lam_min, "computed_error": lam.error,
                                    "ratio": None, "holds": agrees, "citation": verdict.citation}))
    if verdict.rank_bound is not None:
        out.variables.append(TheoryVariable("theory_rank_upper", (), np.int64(verdict.rank_bound), _jsonable({
            "long_name": "upper bound on rank K for a polynomial activation, C(r + q^depth, q^depth)",
            "citation": "DERIVED from Carvalho et al.: polynomial φ of degree q gives an NTK "
                        "polynomial of degree q^depth in x",
            "convention": B.STAX_CONVENTION, "computed": numerical_rank})))
        out.table.append(_jsonable({"prediction": "polynomial_rank", "side": "upper", "quantity": "rank",
                                    "theory": verdict.rank_bound, "computed": numerical_rank,
                                    "ratio": _ratio(verdict.rank_bound, numerical_rank),
                                    "holds": None if numerical_rank is None else numerical_rank <= verdict.rank_bound,
                                    "citation": "DERIVED from Carvalho et al."}))

    finite_width = kind.startswith("empirical")
    limit_kind = kind.removeprefix("empirical_")

    # -- sphere eigenvalues (Murray Thm 4.6) ---------------------------------------------------------------------
    if sphere_radius is not None:
        predicted, degree_of, mu, top_degree, error = _sphere_prediction(net, limit_kind, n, dim,
                                                                         float(sphere_radius), modes)
        attrs = {"citation": SPHERE_CITATION, "radius": float(sphere_radius), "max_degree": top_degree,
                 "kernel": f"infinite-width {limit_kind.upper()}" + (
                     " (the limit of this run's finite-width sample; no 1/width corrections)" if finite_width else ""),
                 "method": "Funk–Hecke by Gauss–Legendre quadrature in the angle (ntkdist.theory.sphere)",
                 "mu_error_bound": error,
                 "convention": "N·μ_k, μ_k of f ↦ E_y[Θ(⟨x,y⟩)f(y)] under the uniform probability measure; "
                               "Gram K not divided by N",
                 "mu": _jsonable(mu)}
        out.variables.append(TheoryVariable("theory_sphere_eigenvalue", ("mode",), predicted, _jsonable({
            "long_name": "predicted eigenvalue N·μ_k, expanded by multiplicity N(d, k), descending", **attrs})))
        out.variables.append(TheoryVariable("theory_sphere_degree", ("mode",), degree_of, _jsonable({
            "long_name": "harmonic degree k of the predicted eigenvalue (−1 beyond max_degree)", **attrs})))
        biggest = np.nanmax(predicted) if np.isfinite(predicted).any() else 0.0
        seen = []
        for k in degree_of:
            if k >= 0 and k not in seen:
                seen.append(int(k))
        for k in seen[:6]:
            where = degree_of == k
            mean_pred, mean_comp = float(predicted[where].mean()), float(values[where].mean())
            if mean_pred <= 1e-3 * biggest:
                continue
            out.table.append(_jsonable({
                "prediction": f"sphere_cluster_k{k}", "side": "estimate", "quantity": f"mean λ over degree {k} "
                f"({int(where.sum())} modes)", "theory": mean_pred, "computed": mean_comp,
                "ratio": _ratio(mean_pred, mean_comp), "holds": None, "citation": SPHERE_CITATION}))

    # -- the bounds --------------------------------------------------------------------------------------------
    if finite_width:
        out.not_applicable.append({"name": "theory_lambda_*, theory_*effective_rank*", "reason": (
            f"the bounds hold for the infinite-width kernel; this run's kernel ({kind}) is a finite-width sample")})
        return out
    form, why_not = None, ""
    try:
        form = B.dot_product_form(X, net, kind=kind, order=order, max_n=max_n)
    except B.NotDotProduct as exc:
        why_not = str(exc)
    except B.TooLargeError as exc:
        why_not = str(exc)

    def record(bound: B.Bound, computed: Computed | None, what_computed):
        name = _VARIABLE[bound.name]
        if not bound.applies:
            out.not_applicable.append({"name": name, "reason": bound.reason})
            return
        out.eigendecompositions += bound.cost
        if bound.quantity == "lambda_k":
            ks = np.asarray(bound.k)
            found = [eigenvalue(int(k)) for k in ks]
            comp = np.array([np.nan if c is None else c.value for c in found])
            ratios = [_ratio(float(v), None if c is None else c.value) for v, c in zip(bound.value, found)]
            holds = [_holds("upper", float(v), c) for v, c in zip(bound.value, found)]
            out.coords["theory_k"] = (("theory_k",), ks, {"long_name": "eigenvalue index k of the generic bound"})
            attrs = _bound_attrs(bound, comp, ratios, holds, what_computed)
            attrs["computed_error"] = _jsonable([None if c is None else c.error for c in found])
            out.variables.append(TheoryVariable(name, ("theory_k",), np.asarray(bound.value, dtype=np.float64),
                                                attrs))
            for k, v, c, r, h in zip(ks, bound.value, comp, ratios, holds):
                out.table.append(_jsonable({"prediction": f"{name}[k={int(k)}]", "side": "upper",
                                            "quantity": f"lambda_{int(k)}", "theory": v, "computed": c, "ratio": r,
                                            "holds": h, "citation": bound.citation}))
            return
        value = float(bound.value)
        number = None if computed is None else computed.value
        ratio, holds = _ratio(value, number), _holds(bound.side, value, computed)
        attrs = _bound_attrs(bound, number, ratio, holds, what_computed)
        attrs.update(_jsonable(_computed_attrs(computed)))
        out.variables.append(TheoryVariable(name, (), np.float64(value), attrs))
        out.table.append(_jsonable({"prediction": name, "side": bound.side, "quantity": bound.quantity,
                                    "theory": value, "computed": number,
                                    "computed_error": None if computed is None else computed.error,
                                    "ratio": ratio, "holds": holds, "citation": bound.citation}))

    def attempt(name, cost, make, computed, what_computed, *, quadratic=False):
        """Run a bound if N allows its dense and O(N²) work and its dense cost fits the remaining budget."""
        if cost > 0 and n > max_n:
            out.skipped.append({"name": name, "reason": (
                f"needs λ_min of {cost:g} other dense {n}×{n} matrix/matrices (Hadamard powers or layer kernels); "
                f"N = {n} > max_n = {max_n}, so it is skipped rather than allocating N×N (running those spectra "
                "through the actor machinery is not implemented)")})
            return
        if quadratic and n > quadratic_limit:
            out.skipped.append({"name": name, "reason": (
                f"streams over all N² = {float(n) ** 2:.3g} pairs (O(N²d) Gershgorin row sums); N = {n} > "
                f"scan_max_n = {quadratic_limit}")})
            return
        if cost > 0 and out.eigendecompositions + cost > budget + 1e-9:
            out.skipped.append({"name": name, "reason": (
                f"needs {cost:g} dense {n}×{n} eigen-decomposition(s); the compare budget is {budget:g} (the solve's "
                f"one) and {out.eigendecompositions:g} are already used")})
            return
        try:
            record(make(), computed, what_computed)
        except B.TooLargeError as exc:
            out.skipped.append({"name": name, "reason": str(exc)})

    what_lam = "computed λ_min" + ("" if lam is None else f" ({lam.source.split(':')[0]})")
    lam1 = eigenvalue(1)
    eff_computed = None
    if lam1 is not None and lam1.value > 0:
        top = lam1.upper
        eff_computed = Computed(trace / lam1.value, trace / top, trace / max(lam1.lower, lam1.value * 1e-300),
                                None, "Tr K (exact, from the diagonal) / computed λ_1")
    if form is None:
        for name in ("theory_effective_rank_upper", "theory_centred_effective_rank_upper", "theory_lambda_k_upper",
                     "theory_lambda_min_lower_hermite"):
            out.not_applicable.append({"name": name, "reason": why_not})
    else:
        attempt("theory_effective_rank_upper", 0, lambda: B.effective_rank_bound(X, net, form=form),
                eff_computed, "Tr K (exact, from the diagonal) / computed λ_1")
        c0 = float(form.coefficients[0])
        centred = None
        if len(form.coefficients) > 1 and form.coefficients[1] > 0:
            centred = _centred_effective_rank(out, form, operator, trace, pass_budget, seed)
        attempt("theory_centred_effective_rank_upper", 0, lambda: B.centred_effective_rank_bound(X, net, form=form),
                centred, f"Tr/λ_1 of K − c_0·ddᵀ (c_0 = {c0:.6g}), λ_1 by block Krylov on the operator")
        ks = _generic_ks(form.powers.rank, modes, n)
        if ks:
            attempt("theory_lambda_k_upper", 0,
                    lambda: B.generic_eigenvalue_upper_bound(X, net, ks, form=form, max_n=max_n),
                    None, "computed eigenvalue λ_k")
        first = next((p for p in range(len(form.coefficients)) if not form.powers.is_singular(p)), None)
        cost = 0 if first is None or first in form.powers.known_lambda_min() else 1
        attempt("theory_lambda_min_lower_hermite", cost,
                lambda: B.hermite_lambda_min_lower_bound(X, net, form=form, exact_powers=1, max_n=max_n),
                lam, what_lam, quadratic=True)

    if kind == "ntk":
        nguyen = B.nguyen_applies(net) == ""
        if nguyen:
            attempt("theory_lambda_min_lower_nguyen_gershgorin", 0,
                    lambda: B.nguyen_hadamard_lower_bound(X, net, method="gershgorin"), lam, what_lam,
                    quadratic=True)
            attempt("theory_lambda_min_lower_nguyen_hadamard", _nguyen_exact_cost(X),
                    lambda: B.nguyen_hadamard_lower_bound(X, net, method="exact", max_n=max_n), lam, what_lam)
            attempt("theory_lambda_min_lower_nguyen_layer_sum", net.depth,
                    lambda: B.nguyen_layer_sum_lower_bound(X, net, max_n=max_n), lam, what_lam)
        else:
            out.not_applicable.append({"name": "theory_lambda_min_lower_nguyen_*",
                                       "reason": f"Nguyen et al. {B.nguyen_applies(net)}"})
            singular_first = B.numerical_rank(np.hstack([X, np.ones((n, 1))]) if net.bias_var > 0 else X) < n
            attempt("theory_lambda_min_lower_layer_sum", net.depth + (0 if singular_first else 1),
                    lambda: B.layer_sum_lower_bound(X, net, max_n=max_n), lam, what_lam)
    attempt("theory_lambda_min_upper_trace", 0, lambda: B.trace_upper_bound(X, net, kind=kind), lam, what_lam)
    attempt("theory_lambda_min_upper_diagonal", 0, lambda: B.diagonal_upper_bound(X, net, kind=kind), lam,
            what_lam)
    attempt("theory_lambda_min_upper_interlacing", 0,
            lambda: B.interlacing_upper_bound(X, net, kind=kind, exact_max_n=quadratic_limit), lam, what_lam)
    return out


#: Products of the operator the centred effective rank asks for at most (block Krylov on K − c_0·ddᵀ).
CENTRED_PASSES = 8
#: Block width of those products.
CENTRED_BLOCK = 4


def _centred_effective_rank(out: Comparison, form, operator, trace: float, pass_budget: int, seed: int):
    """eff(K − c_0·ddᵀ) through ``operator`` within what is left of ``pass_budget``; None (reason recorded) else."""
    name = "computed_centred_effective_rank"
    left = int(pass_budget) - out.passes
    if operator is None:
        out.skipped.append({"name": name, "reason": "needs λ_1 of K − c_0·ddᵀ: no operator was given (the Gram "
                                                    "matrix is never formed here)"})
        return None
    if left < 2:
        out.skipped.append({"name": name, "reason": (
            f"needs at least 2 products with the operator for λ_1 of K − c_0·ddᵀ; the pass budget has {left} left "
            f"of {pass_budget}")})
        return None
    before = getattr(operator, "passes", None)
    found = B.centred_effective_rank_operator(operator, form, trace, passes=min(left, CENTRED_PASSES),
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


def _nguyen_exact_cost(X) -> int:
    n = X.shape[0]
    rank = B.numerical_rank(X)
    return int(any(math.comb(rank + r - 1, r) >= n for r in range(2, 65, 2)))


def _generic_ks(rank: int, modes: int, n: int) -> list[int]:
    """k just above the rank counts of H_m (where the bound changes), within the computed modes, ≤ MAX_K_VALUES."""
    ks = []
    m, previous = 1, 0
    while True:
        k = B.sphere_polynomial_count(rank, m) + 1
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
