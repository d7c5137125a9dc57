"""The mapping of theory results to the spectrum dataset: ``theory_*`` variables, their attrs, the summary table.

`ntkdist.theory.compare.compare_spectrum` returns typed results (`ntkdist.theory.result.TheoryResult`) and knows
no variable names; this module is the one place that names them and encodes them for zarr attrs (JSON-ready:
numpy scalars and arrays to Python, NaN and inf to None).

    theory_positive_definite                  int8: 1 guaranteed, −1 singular, 0 not guaranteed (Carvalho et al.)
    theory_rank_upper                         int64: rank bound of a polynomial activation
    theory_sphere_eigenvalue(mode)            N·μ_k by multiplicity, descending (uniform sphere data)
    theory_sphere_degree(mode)                its harmonic degree k (−1 beyond max_degree)
    theory_lambda_min_{lower,upper}_*         scalar bounds on λ_min (`BOUND_VARIABLES`)
    theory_effective_rank_upper, theory_centred_effective_rank_upper
    theory_lambda_k_upper(theory_k)           the generic λ_k bound, coordinate theory_k

Each bound's attrs: long_name, bound (side), quantity, citation, convention, applies_when, reason, computed,
computed_from, ratio_to_computed, holds, dense_eigendecompositions, details, and the computed interval. The
dataset's ``theory`` attr holds the summary: one table row per compared number, what was skipped or does not
apply (with reasons), and the budgets used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: Result name → variable name (also the name of the row in the summary table and of skipped entries).
BOUND_VARIABLES = {
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
#: Names of groups of results, as the summary lists them.
GROUP_NAMES = {
    "nguyen_*": "theory_lambda_min_lower_nguyen_*",
    "infinite_width_bounds": "theory_lambda_*, theory_*effective_rank*",
}
#: The positivity verdict as the int8 code of ``theory_positive_definite``.
POSITIVITY_CODE = {"positive_definite": 1, "not_guaranteed": 0, "singular": -1}


@dataclass
class TheoryVariable:
    """One ``theory_*`` variable: ``dims`` () for a scalar, ("mode",) or ("theory_k",)."""

    name: str
    dims: tuple
    data: np.ndarray
    attrs: dict


@dataclass
class TheoryVariables:
    """The theory part of the spectrum dataset, ready to write.

    Attributes
    ----------
    variables : list of TheoryVariable
    coords : dict
        Extra coordinates: name → (dims, values, attrs) (``theory_k``).
    table : list of dict
        One row per compared number: prediction, side, quantity, theory, computed, ratio (theory/computed),
        holds, citation.
    skipped, not_applicable : list of dict
        name (the variable's) and reason.
    eigendecompositions, budget, passes, pass_budget
        As in `ntkdist.theory.compare.Comparison`.
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
        """JSON-ready summary (stored in the dataset's ``theory`` attr and the stage record)."""
        return {"table": self.table, "skipped": self.skipped, "not_applicable": self.not_applicable,
                "eigendecompositions": self.eigendecompositions, "budget": self.budget,
                "passes": self.passes, "pass_budget": self.pass_budget}


def theory_variables(comparison) -> TheoryVariables:
    """The ``theory_*`` variables, coordinates and summary of a `ntkdist.theory.compare.Comparison`."""
    out = TheoryVariables(
        skipped=[_renamed(item) for item in comparison.skipped],
        not_applicable=[_renamed(item) for item in comparison.not_applicable],
        eigendecompositions=comparison.eigendecompositions, budget=comparison.budget,
        passes=comparison.passes, pass_budget=comparison.pass_budget)
    for result in comparison.results:
        _writer(result)(out, result)
    return out


def theory_dataset(stored: TheoryVariables, attrs: dict):
    """An xarray Dataset of the theory variables, with ``attrs`` and the summary as its ``theory`` attr."""
    import xarray as xr

    theory = xr.Dataset(attrs={**attrs, "theory": stored.summary()})
    for name, (dims, values, coord_attrs) in stored.coords.items():
        theory = theory.assign_coords({name: (dims, values, coord_attrs)})
    for variable in stored.variables:
        theory[variable.name] = (variable.dims, variable.data, variable.attrs)
    return theory


def jsonable(value):
    """A JSON-ready copy: numpy to Python, tuples to lists, NaN and inf to None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def _renamed(item: dict) -> dict:
    name = item["name"]
    return {**item, "name": BOUND_VARIABLES.get(name, GROUP_NAMES.get(name, name))}


def _writer(result):
    """The function that writes ``result`` (by its name and quantity)."""
    special = {"positivity": _positivity, "polynomial_rank": _rank, "sphere_eigenvalue": _sphere}
    if result.name in special:
        return special[result.name]
    if result.name.startswith("sphere_cluster"):
        return _estimate_row
    return _lambda_k_bound if result.quantity == "lambda_k" else _scalar_bound


def _computed_value(computed):
    return None if computed is None else computed.value


def _positivity(out: TheoryVariables, result) -> None:
    lam = result.computed
    out.variables.append(TheoryVariable("theory_positive_definite", (), np.int8(POSITIVITY_CODE[result.value]),
                                        jsonable({
        "long_name": "strict positive definiteness: 1 guaranteed, −1 singular, 0 not guaranteed",
        "status": result.value, "reason": result.reason, "citation": result.citation,
        "applies_when": result.conditions, "convention": result.convention,
        "computed_lambda_min": _computed_value(lam), "computed_lambda_min_error": None if lam is None else lam.error,
        "details": result.details})))
    if lam is not None:
        out.table.append(jsonable({"prediction": "positivity", "side": "status", "quantity": "lambda_min",
                                   "theory": result.value, "computed": lam.value, "computed_error": lam.error,
                                   "ratio": None, "holds": result.holds, "citation": result.citation}))


def _rank(out: TheoryVariables, result) -> None:
    rank = _computed_value(result.computed)
    out.variables.append(TheoryVariable("theory_rank_upper", (), np.int64(result.value), jsonable({
        "long_name": "upper bound on rank K for a polynomial activation, C(r + q^depth, q^depth)",
        "citation": result.citation, "convention": result.convention, "computed": rank})))
    # the table cites the derivation by its short name (what comes before the colon)
    out.table.append(jsonable({"prediction": "polynomial_rank", "side": "upper", "quantity": "rank",
                               "theory": result.value, "computed": rank, "ratio": result.ratio,
                               "holds": result.holds, "citation": result.citation.split(":")[0]}))


def _sphere(out: TheoryVariables, result) -> None:
    details = result.details
    attrs = {"citation": result.citation, "radius": details["radius"], "max_degree": details["max_degree"],
             "kernel": details["kernel"], "method": details["method"], "mu_error_bound": details["mu_error_bound"],
             "convention": result.convention, "mu": jsonable(details["mu"])}
    out.variables.append(TheoryVariable("theory_sphere_eigenvalue", ("mode",), result.value, jsonable({
        "long_name": "predicted eigenvalue N·μ_k, expanded by multiplicity N(d, k), descending", **attrs})))
    out.variables.append(TheoryVariable("theory_sphere_degree", ("mode",), details["degree"], jsonable({
        "long_name": "harmonic degree k of the predicted eigenvalue (−1 beyond max_degree)", **attrs})))


def _estimate_row(out: TheoryVariables, result) -> None:
    out.table.append(jsonable({"prediction": result.name, "side": result.side, "quantity": result.quantity,
                               "theory": result.value, "computed": _computed_value(result.computed),
                               "ratio": result.ratio, "holds": result.holds, "citation": result.citation}))


def _bound_attrs(result, computed, ratio, holds) -> dict:
    return jsonable({
        "long_name": f"{result.side} bound on {result.quantity}",
        "bound": result.side,
        "quantity": result.quantity,
        "citation": result.citation,
        "convention": result.convention,
        "applies_when": result.conditions,
        "reason": result.reason,
        "computed": computed,
        "computed_from": result.compared_with,
        "ratio_to_computed": ratio,
        "holds": holds,
        "dense_eigendecompositions": result.cost,
        "details": result.details,
    })


def _scalar_bound(out: TheoryVariables, result) -> None:
    name = BOUND_VARIABLES[result.name]
    computed = result.computed
    value, number = float(result.value), _computed_value(computed)
    attrs = _bound_attrs(result, number, result.ratio, result.holds)
    if computed is None:
        attrs.update({"computed": None})
    else:
        attrs.update(jsonable({"computed": computed.value, "computed_error": computed.error,
                               "computed_interval": [computed.lower, computed.upper],
                               "computed_source": computed.source}))
    out.variables.append(TheoryVariable(name, (), np.float64(value), attrs))
    out.table.append(jsonable({"prediction": name, "side": result.side, "quantity": result.quantity,
                               "theory": value, "computed": number,
                               "computed_error": None if computed is None else computed.error,
                               "ratio": result.ratio, "holds": result.holds, "citation": result.citation}))


def _lambda_k_bound(out: TheoryVariables, result) -> None:
    name = BOUND_VARIABLES[result.name]
    ks = np.asarray(result.k)
    found = result.computed
    comp = np.array([np.nan if c is None else c.value for c in found])
    ratios, holds = result.ratio, list(result.holds)
    out.coords["theory_k"] = (("theory_k",), ks, {"long_name": "eigenvalue index k of the generic bound"})
    attrs = _bound_attrs(result, comp, ratios, holds)
    attrs["computed_error"] = jsonable([None if c is None else c.error for c in found])
    out.variables.append(TheoryVariable(name, ("theory_k",), np.asarray(result.value, dtype=np.float64), attrs))
    for k, v, c, r, h in zip(ks, result.value, comp, ratios, holds):
        out.table.append(jsonable({"prediction": f"{name}[k={int(k)}]", "side": "upper",
                                   "quantity": f"lambda_{int(k)}", "theory": v, "computed": c, "ratio": r,
                                   "holds": h, "citation": result.citation}))
