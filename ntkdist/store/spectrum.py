"""The mapping of a solve's results to the ``spectrum`` dataset that users open with plain xarray.

    eigenvalue(mode), eigenvalue_error(mode)           the k largest, descending, with certified bounds
    eigenvalue_residual(mode), eigenvalue_gap_certified(mode)
    eigenvector(sample, mode)                          optional (``[solver] vectors = true``)
    smallest_eigenvalue(smallest), smallest_eigenvalue_error(smallest)
    lambda_min, lambda_min_error                       certified upper bound on λ_min and its error bound
    density(bin), density_cdf_error(bin_edge), bin_edge(bin_edge), bin_lower(bin), bin_upper(bin)
    diagonal(sample), trace, effective_rank            exact, from the diagonal read once

attrs: method, tol, passes, seed, seconds_per_pass, operator kind, stored dtype and its error bound, config,
versions. Everything is float64 (int64/bool for counts and flags), so the dataset exports to netCDF as it is.
"""

from __future__ import annotations

import numpy as np


def spectrum_dataset(solution, *, kind: str, effective_rank: float, attrs: dict):
    """An xarray Dataset of a `ntkdist.linalg.spectrum.SpectrumSolution` (see the module docstring).

    ``effective_rank`` is Tr K/λ_1 as `ntkdist.theory.bounds.effective_rank` defines it (its one home)."""
    import xarray as xr

    top = solution.top
    k = len(top.values)
    dataset = xr.Dataset(
        {
            "eigenvalue": ("mode", np.asarray(top.values, dtype=np.float64), {
                "long_name": f"eigenvalue of the {kind.upper()} Gram matrix",
                "description": "eigenvalues of K = [Θ(x_i, x_j)] itself (not divided by N), descending"}),
            "eigenvalue_error": ("mode", np.asarray(top.errors, dtype=np.float64), {
                "long_name": "bound on |λ_mode − eigenvalue|",
                "description": _error_description(top)}),
            "eigenvalue_residual": ("mode", np.asarray(top.residual_norms, dtype=np.float64), {
                "long_name": "‖K u − θ u‖ of the unit Ritz vector"}),
            "eigenvalue_gap_certified": ("mode", np.asarray(top.gap_certified, dtype=bool), {
                "long_name": "the quadratic Kato–Temple bound applies (an isolating gap is certified)"}),
            "diagonal": ("sample", np.asarray(solution.diagonal, dtype=np.float64), {
                "long_name": "K_ii, read once"}),
            "trace": ((), np.float64(solution.trace), {"long_name": "Tr K = Σ K_ii (exact)"}),
            "effective_rank": ((), np.float64(effective_rank), {
                "long_name": "effective rank Tr K / λ_1 (Murray et al.)"}),
        },
        coords={"mode": ("mode", np.arange(1, k + 1), {"long_name": "index, 1 = largest"})},
        attrs={
            **attrs,
            "method": solution.method,
            "passes": int(solution.passes),
            "seconds_per_pass": float(solution.seconds_per_pass),
            "seconds": float(solution.seconds),
            "operator_error_bound": float(solution.operator_error),
            "converged": bool(top.converged and (solution.bottom is None or solution.bottom.converged)),
            "top_info": _plain(top.info),
        },
    )
    if top.vectors is not None:
        dataset["eigenvector"] = (("sample", "mode"), np.asarray(top.vectors, dtype=np.float64),
                                  {"long_name": "unit Ritz vector of the mode"})
    bottom = solution.bottom
    if bottom is not None:
        m = len(bottom.values)
        dataset = dataset.assign_coords(smallest=("smallest", np.arange(1, m + 1),
                                                  {"long_name": "index from the bottom, 1 = smallest"}))
        dataset["smallest_eigenvalue"] = ("smallest", np.asarray(bottom.values, dtype=np.float64), {
            "long_name": "the smallest eigenvalues, ascending (Rayleigh–Ritz values: certified upper bounds)"})
        dataset["smallest_eigenvalue_error"] = ("smallest", np.asarray(bottom.errors, dtype=np.float64), {
            "long_name": "bound on |λ − value| (residual / Kato–Temple, plus storage error)"})
        dataset["lambda_min"] = ((), np.float64(solution.lambda_min), {
            "long_name": "λ_min estimate: a Rayleigh quotient, hence a certified upper bound on λ_min"})
        dataset["lambda_min_error"] = ((), np.float64(solution.lambda_min_error), {
            "long_name": "λ_min ≥ lambda_min − lambda_min_error",
            "description": "the residual bound, or Kato–Temple where the next Ritz value has converged and isolates "
                           "a gap; it bounds λ_min itself assuming the random start missed no eigenvalue at the "
                           "bottom (probabilistic; see docs/solvers.md), plus storage error and rounding"})
        dataset.attrs["bottom_info"] = _plain({**bottom.info, "passes": bottom.passes,
                                               "converged": bool(bottom.converged)})
    density = solution.density
    if density is not None:
        edges = np.asarray(density.edges, dtype=np.float64)
        dataset = dataset.assign_coords(
            bin=("bin", np.arange(len(edges) - 1)), bin_edge=("bin_edge", np.arange(len(edges))))
        dataset["bin_lower"] = ("bin", edges[:-1], {"long_name": "lower edge of the bin"})
        dataset["bin_upper"] = ("bin", edges[1:], {"long_name": "upper edge of the bin"})
        dataset["bin_edges"] = ("bin_edge", edges, {"long_name": "eigenvalue at each bin edge"})
        dataset["density"] = ("bin", np.asarray(density.mass, dtype=np.float64), {
            "long_name": "fraction of the N eigenvalues in the bin", "method": density.method})
        dataset["density_cdf_error"] = ("bin_edge", np.asarray(density.cdf_error, dtype=np.float64), {
            "long_name": "estimated error of the cumulative fraction at each edge (probabilistic)"})
        dataset.attrs["density_info"] = _plain({**density.info, "passes": density.passes})
    return dataset


def _error_description(top) -> str:
    """What the top's error bounds promise, by the method that made them."""
    if top.method == "nystrom":
        return ("single-pass Nyström: " + str(top.info.get("bound", "")) + "; the values are lower bounds of the "
                "eigenvalues (K̂ ⪯ K)")
    if top.method == "exact":
        return "LAPACK's backward-stability bound N·ε·‖K‖₂ plus the operator's storage error (Weyl)"
    return ("residual bound (Weyl/Bauer–Fike), Kato–Temple where a gap is isolated by converged neighbours "
            "(eigenvalue_gap_certified), plus the operator's storage error (Weyl) and a rounding term; that the "
            "mode-th largest eigenvalue is the one bounded assumes the random start missed no eigenvalue "
            "(probabilistic; see docs/solvers.md)")


def _plain(value):
    """JSON-ready copy of solver info (numpy scalars and arrays to Python)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def export_netcdf(dataset, path) -> None:
    """Write a spectrum dataset as netCDF: attributes netCDF cannot hold (tables, dicts, lists, booleans, None)
    are written as JSON strings, everything else as it is. Read it back with ``xarray.open_dataset(path)``."""
    import json

    def encoded(attrs: dict) -> dict:
        out = {}
        for key, value in attrs.items():
            if isinstance(value, (dict, list, tuple, bool)) or value is None:
                out[key] = json.dumps(_plain(value))
            else:
                out[key] = value
        return out

    copy = dataset.copy()
    copy.attrs = encoded(dataset.attrs)
    for name in copy.variables:
        copy[name].attrs = encoded(dataset[name].attrs)
    copy.to_netcdf(path)
