"""Every theoretical prediction that applies to a run, next to the computed spectrum: the glue of the compare stage.

`compare_spectrum` takes plain arrays (the inputs X, the computed eigenvalues, the trace, optionally the Gram
matrix) and returns `TheoryVariable`s — name, dims, data and JSON-ready attrs citing paper and equation and
stating the convention — that the pipeline turns into ``theory_*`` variables of the spectrum dataset, plus a
table of each bound against the computed value (the report prints it). Nothing here imports xarray or zarr.

Convention: every value is in the stax Gram convention of ``ntkdist.kernels`` (K = [Θ(x_i, x_j)], not divided
by N; sphere predictions are N·μ_k with μ_k in the probability-measure convention of
``ntkdist.theory.sphere``). Conversions from the papers happen inside `ntkdist.theory.bounds`.

Cost. The run's solve did one dense N×N eigen-decomposition; the bounds that need dense eigen-decompositions
share a budget of ``budget`` such decompositions (default 1, i.e. the compare stage never does more of them
than the solve), taken in the order of `_DENSE_ORDER`; a bound whose cost does not fit is skipped and listed
with the reason. O(N²) work (Lanczos for λ_1, Gershgorin sums, near-pair search) is not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..kernels import MLP
from . import bounds as B
from .positivity import ntk_positivity
from .sphere import harmonic_multiplicity, sphere_eigenvalues

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
    """

    variables: list = field(default_factory=list)
    coords: dict = field(default_factory=dict)
    table: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    not_applicable: list = field(default_factory=list)
    eigendecompositions: float = 0.0
    budget: float = 1.0

    def summary(self) -> dict:
        """JSON-ready summary (stored in the dataset's attrs and the stage record)."""
        return {"table": self.table, "skipped": self.skipped, "not_applicable": self.not_applicable,
                "eigendecompositions": self.eigendecompositions, "budget": self.budget}


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


def _holds(side: str, theory: float, computed: float | None, slack: float) -> bool | None:
    if computed is None or not math.isfinite(theory):
        return None
    return bool(theory <= computed + slack) if side == "lower" else bool(theory >= computed - slack)


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


def compare_spectrum(X, net: MLP, *, kind: str, eigenvalues, trace: float, gram=None,
                     sphere_radius: float | None = None, budget: float = 1.0, order: int = SERIES_ORDER,
                     max_n: int = B.EIGEN_MAX_N) -> Comparison:
    """Every prediction that applies to (X, net), against the computed spectrum.

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
        Computed eigenvalues of the Gram matrix, descending (M = N for a full spectrum, else the top M).
    trace : float
        Tr K (Σ K_ii of the stored Gram).
    gram : (N, N) array or callable returning it, optional
        The stored Gram matrix (for eff of the centred kernel, Murray Thm 4.3); loaded only when needed.
    sphere_radius : float, optional
        Set when X is i.i.d. uniform on the sphere of this radius: adds the sphere eigenvalue prediction.
    budget : float
        Dense N×N eigen-decompositions the bounds may use together (the solve used one).
    order : int
        Truncation of the power series (tails are exact).
    max_n : int
        Dense bounds refuse above this N (`ntkdist.theory.bounds.EIGEN_MAX_N`).
    """
    X = np.asarray(X, dtype=np.float64)
    n, dim = X.shape
    values = np.asarray(eigenvalues, dtype=np.float64)
    modes = len(values)
    full = modes == n
    slack = 8.0 * n * np.finfo(float).eps * float(np.abs(values).max())
    if np.any(np.diff(values) > slack):
        raise ValueError("eigenvalues: must be in descending order (λ_1 ≥ λ_2 ≥ …); reverse an ascending eigvalsh")
    out = Comparison(budget=budget)
    lam_min = float(values[-1]) if full else None

    # -- positivity (Carvalho et al.) and the polynomial rank bound -------------------------------------------
    verdict = ntk_positivity(X, net, kind=kind)
    code = {"positive_definite": 1, "not_guaranteed": 0, "singular": -1}[verdict.status]
    numerical_rank = int((values > slack).sum()) if full else None
    out.variables.append(TheoryVariable("theory_positive_definite", (), np.int8(code), _jsonable({
        "long_name": "strict positive definiteness: 1 guaranteed, −1 singular, 0 not guaranteed",
        "status": verdict.status, "reason": verdict.reason, "citation": verdict.citation,
        "applies_when": "NTK; non-polynomial activation; distinct inputs (bias) / non-proportional (no bias)",
        "convention": B.STAX_CONVENTION, "computed_lambda_min": lam_min,
        "details": {k: v for k, v in verdict.details.items() if k != "counts"}})))
    if lam_min is not None:
        agrees = {1: lam_min > slack, -1: abs(lam_min) <= slack, 0: None}[code]
        out.table.append(_jsonable({"prediction": "positivity", "side": "status", "quantity": "lambda_min",
                                    "theory": verdict.status, "computed": lam_min, "ratio": None, "holds": agrees,
                                    "citation": verdict.citation}))
    if verdict.rank_bound is not None:
        out.variables.append(TheoryVariable("theory_rank_upper", (), np.int64(verdict.rank_bound), _jsonable({
            "long_name": "upper bound on rank K for a polynomial activation, C(r + q^depth, q^depth)",
            "citation": "REFERENCE §3 [DERIVED] after Carvalho et al.: polynomial φ of degree q gives an NTK "
                        "polynomial of degree q^depth in x",
            "convention": B.STAX_CONVENTION, "computed": numerical_rank})))
        out.table.append(_jsonable({"prediction": "polynomial_rank", "side": "upper", "quantity": "rank",
                                    "theory": verdict.rank_bound, "computed": numerical_rank,
                                    "ratio": _ratio(verdict.rank_bound, numerical_rank),
                                    "holds": None if numerical_rank is None else numerical_rank <= verdict.rank_bound,
                                    "citation": "REFERENCE §3 [DERIVED]"}))

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

    def record(bound: B.Bound, computed, what_computed):
        name = _VARIABLE[bound.name]
        if not bound.applies:
            out.not_applicable.append({"name": name, "reason": bound.reason})
            return
        out.eigendecompositions += bound.cost
        if bound.quantity == "lambda_k":
            ks = np.asarray(bound.k)
            comp = np.array([values[k - 1] if k <= modes else np.nan for k in ks])
            ratios = [_ratio(float(v), None if not math.isfinite(c) else float(c)) for v, c in zip(bound.value, comp)]
            holds = [_holds("upper", float(v), None if not math.isfinite(c) else float(c), slack)
                     for v, c in zip(bound.value, comp)]
            out.coords["theory_k"] = (("theory_k",), ks, {"long_name": "eigenvalue index k of the generic bound"})
            out.variables.append(TheoryVariable(name, ("theory_k",), np.asarray(bound.value, dtype=np.float64),
                                                _bound_attrs(bound, comp, ratios, holds, what_computed)))
            for k, v, c, r, h in zip(ks, bound.value, comp, ratios, holds):
                out.table.append(_jsonable({"prediction": f"{name}[k={int(k)}]", "side": "upper",
                                            "quantity": f"lambda_{int(k)}", "theory": v, "computed": c, "ratio": r,
                                            "holds": h, "citation": bound.citation}))
            return
        value = float(bound.value)
        ratio, holds = _ratio(value, computed), _holds(bound.side, value, computed, slack)
        out.variables.append(TheoryVariable(name, (), np.float64(value),
                                            _bound_attrs(bound, computed, ratio, holds, what_computed)))
        out.table.append(_jsonable({"prediction": name, "side": bound.side, "quantity": bound.quantity,
                                    "theory": value, "computed": computed, "ratio": ratio, "holds": holds,
                                    "citation": bound.citation}))

    def attempt(name, cost, make, computed, what_computed):
        """Run a bound if its dense cost fits the remaining budget."""
        if cost > 0 and out.eigendecompositions + cost > budget + 1e-9:
            out.skipped.append({"name": name, "reason": (
                f"needs {cost:g} dense {n}×{n} eigen-decomposition(s); the compare budget is {budget:g} (the solve's "
                f"one) and {out.eigendecompositions:g} are already used")})
            return
        try:
            record(make(), computed, what_computed)
        except B.TooLargeError as exc:
            out.skipped.append({"name": name, "reason": str(exc)})

    lam1 = float(values[0])
    eff_computed = trace / lam1 if lam1 > 0 else None
    if form is None:
        for name in ("theory_effective_rank_upper", "theory_centred_effective_rank_upper", "theory_lambda_k_upper",
                     "theory_lambda_min_lower_hermite"):
            out.not_applicable.append({"name": name, "reason": why_not})
    else:
        attempt("theory_effective_rank_upper", 0, lambda: B.effective_rank_bound(X, net, form=form),
                eff_computed, "Tr K / λ_1 of the stored Gram and computed spectrum")
        centred = None
        c0 = float(form.coefficients[0])
        if gram is not None and len(form.coefficients) > 1 and form.coefficients[1] > 0:
            matrix = gram() if callable(gram) else gram
            centred = B.centred_effective_rank(matrix, form)
            del matrix
        attempt("theory_centred_effective_rank_upper", 0, lambda: B.centred_effective_rank_bound(X, net, form=form),
                centred, f"Tr/λ_1 of K − c_0·ddᵀ (c_0 = {c0:.6g}), λ_1 by Lanczos")
        ks = _generic_ks(form.powers.rank, modes, n)
        if ks:
            attempt("theory_lambda_k_upper", 0,
                    lambda: B.generic_eigenvalue_upper_bound(X, net, ks, form=form, max_n=max_n),
                    None, "computed eigenvalue λ_k")
        first = next((p for p in range(len(form.coefficients)) if not form.powers.is_singular(p)), None)
        cost = 0 if first is None or first in form.powers.known_lambda_min() else 1
        attempt("theory_lambda_min_lower_hermite", cost,
                lambda: B.hermite_lambda_min_lower_bound(X, net, form=form, exact_powers=1, max_n=max_n),
                lam_min, "computed λ_min (last mode)")

    if kind == "ntk":
        nguyen = B.nguyen_applies(net) == ""
        if nguyen:
            attempt("theory_lambda_min_lower_nguyen_gershgorin", 0,
                    lambda: B.nguyen_hadamard_lower_bound(X, net, method="gershgorin"), lam_min,
                    "computed λ_min (last mode)")
            attempt("theory_lambda_min_lower_nguyen_hadamard", _nguyen_exact_cost(X),
                    lambda: B.nguyen_hadamard_lower_bound(X, net, method="exact", max_n=max_n), lam_min,
                    "computed λ_min (last mode)")
            attempt("theory_lambda_min_lower_nguyen_layer_sum", net.depth,
                    lambda: B.nguyen_layer_sum_lower_bound(X, net, max_n=max_n), lam_min,
                    "computed λ_min (last mode)")
        else:
            out.not_applicable.append({"name": "theory_lambda_min_lower_nguyen_*",
                                       "reason": f"Nguyen et al. {B.nguyen_applies(net)}"})
            singular_first = B.numerical_rank(np.hstack([X, np.ones((n, 1))]) if net.bias_var > 0 else X) < n
            attempt("theory_lambda_min_lower_layer_sum", net.depth + (0 if singular_first else 1),
                    lambda: B.layer_sum_lower_bound(X, net, max_n=max_n), lam_min, "computed λ_min (last mode)")
    for make in (B.trace_upper_bound, B.diagonal_upper_bound, B.interlacing_upper_bound):
        attempt(make.__name__, 0, lambda make=make: make(X, net, kind=kind), lam_min, "computed λ_min (last mode)")
    return out


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
