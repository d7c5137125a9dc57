"""Figures and the summary of a run, what the ``report`` stage of `ntkdist.pipeline` writes:

* the spectrum: eigenvalue against index on log-log axes, with error bars where the certified error is visible at
  the plot's scale, and the theory overlaid (the sphere staircase N·μ_k repeated by multiplicity, the generic
  upper bound on λ_k, and the band in which λ_min lies, between the best lower and the best upper bound);
* the spectral density: the fraction of all N eigenvalues per bin, when the solve estimated it;
* the cumulative trace share Σ_{i ≤ k} λ_i / Tr K against k, with the effective rank Tr K / λ_1 marked;
* the width scalings of `ntkdist.studies` (`plot_width_scaling`): log-log against width with fits and theory;
* a markdown summary with a table of every prediction against the computed value (from the ``theory_*`` variables
  that the compare stage writes into the spectrum dataset).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


#: An error bar is drawn where the certified error is at least this fraction of the eigenvalue (smaller ones
#: would be hidden by the marker on a log axis).
VISIBLE_ERROR = 0.02


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def plot_spectrum(eigenvalues: np.ndarray, path: Path, *, title: str, kind: str = "ntk", theory=None,
                  errors: np.ndarray | None = None) -> Path:
    """Eigenvalues against their index on log-log axes (non-positive eigenvalues are left out and counted).

    ``errors`` (certified bounds on |λ − value|, optional) are drawn as error bars where they are at least
    `VISIBLE_ERROR` of the value. ``theory`` (the spectrum dataset, optional) overlays its ``theory_*``
    predictions: the sphere eigenvalues N·μ_k along the modes, the generic upper bounds on λ_k at their k, and
    the λ_min bounds at index N, as a band from the best lower to the best upper bound (where the computed λ_min
    is drawn too when only the top of the spectrum was computed).
    """
    plt = _pyplot()
    values = np.asarray(eigenvalues, dtype=np.float64)
    index = np.arange(1, len(values) + 1)
    positive = values > 0
    fig, ax = plt.subplots(figsize=(6.4, 5.4), dpi=120)
    ax.loglog(index[positive], values[positive], ".", ms=3, color="C0", label=f"{kind.upper()} Gram eigenvalues")
    if errors is not None:
        errors = np.asarray(errors, dtype=np.float64)
        wide = positive & (errors >= VISIBLE_ERROR * np.abs(values))
        if wide.any():
            lower = np.minimum(errors[wide], values[wide] * (1 - 1e-3))  # a log axis cannot draw below 0
            ax.errorbar(index[wide], values[wide], yerr=[lower, errors[wide]], fmt="none", ecolor="C0", lw=0.8,
                        alpha=0.7, label="certified error (where ≥ 2%)")
    if theory is not None:
        n = int(theory.attrs.get("n", len(values)))
        if "lambda_min" in theory.variables and len(values) < n:
            lam_min = float(theory["lambda_min"].values)
            if lam_min > 0:
                ax.loglog([n], [lam_min], "s", ms=5, color="C0", mfc="none", label="λ_min (certified upper bound)")
        _overlay_theory(ax, theory, n)
    dropped = int((~positive).sum())
    if dropped:  # a legend entry, not free text: the legend places itself, and text under it was hidden
        ax.plot([], [], " ", label=f"{dropped} eigenvalue(s) ≤ 0 not shown")
    ax.set_xlabel("index ℓ (1 = largest)")
    ax.set_ylabel("λ_ℓ of the Gram matrix K (not divided by N)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    # Below the axes: the spectrum and the λ_min markers span the whole plot, so a legend inside hid some of them.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    return _save(fig, path)


def lambda_min_band(theory) -> tuple[float, float] | None:
    """(best lower, best upper) bound on λ_min among the ``theory_lambda_min_*`` variables, None without both."""
    lower, upper = -np.inf, np.inf
    for name in theory.variables:
        if not name.startswith("theory_lambda_min_"):
            continue
        value = float(theory[name].values)
        if not np.isfinite(value):
            continue
        if theory[name].attrs.get("bound", "lower") == "lower":
            lower = max(lower, value)
        else:
            upper = min(upper, value)
    return (lower, upper) if np.isfinite(lower) and np.isfinite(upper) else None


def plot_density(spectrum, path: Path, *, title: str) -> Path | None:
    """The spectral density (fraction of the N eigenvalues per bin) on a log eigenvalue axis; None when the solve
    did not estimate one. Bins at or below 0 are left out of the log axis and their mass is printed."""
    if "density" not in spectrum.variables:
        return None
    plt = _pyplot()
    lower, upper = spectrum["bin_lower"].values, spectrum["bin_upper"].values
    mass = np.asarray(spectrum["density"].values, dtype=np.float64)
    shown = lower > 0
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.bar(lower[shown], mass[shown], width=upper[shown] - lower[shown], align="edge", color="C0", alpha=0.75,
           edgecolor="C0", label=f"fraction of the {int(spectrum.attrs.get('n', 0)) or 'N'} eigenvalues")
    ax.set_xscale("log")
    if (~shown).any():
        ax.text(0.02, 0.92, f"{mass[~shown].sum():.3g} of the mass at λ ≤ {upper[~shown].max():.2g}",
                transform=ax.transAxes, fontsize=8)
    ax.set_xlabel("eigenvalue λ of K (not divided by N)")
    ax.set_ylabel("fraction of the N eigenvalues per bin")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_trace_share(eigenvalues: np.ndarray, trace: float, path: Path, *, title: str) -> Path:
    """Σ_{i ≤ k} λ_i / Tr K against k (log k), with the effective rank Tr K / λ_1 (Murray et al. §4.1) marked."""
    plt = _pyplot()
    values = np.asarray(eigenvalues, dtype=np.float64)
    share = np.cumsum(values) / trace
    k = np.arange(1, len(values) + 1)
    effective_rank = trace / values[0]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.semilogx(k, share, "-", color="C0", label=f"(λ_1 + … + λ_k) / Tr K, the top {len(values)} computed")
    ax.axvline(effective_rank, color="C3", ls="--", lw=1, label=f"effective rank Tr K / λ_1 = {effective_rank:.3g}")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("k, the number of top eigenvalues")
    ax.set_ylabel("share of the trace Tr K")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def _overlay_theory(ax, theory, modes: int) -> None:
    variables = theory.variables
    if "theory_sphere_eigenvalue" in variables:
        predicted = np.asarray(variables["theory_sphere_eigenvalue"].values, dtype=np.float64)
        index = np.arange(1, len(predicted) + 1)
        shown = np.isfinite(predicted) & (predicted > 0)
        ax.loglog(index[shown], predicted[shown], "-", lw=1.0, color="C1", alpha=0.9,
                  label="sphere prediction N·μ_k (Murray Thm 4.6)")
    if "theory_lambda_k_upper" in variables:
        bound = np.asarray(variables["theory_lambda_k_upper"].values, dtype=np.float64)
        ks = np.asarray(theory["theory_k"].values)
        shown = np.isfinite(bound) & (bound > 0)
        ax.loglog(ks[shown], bound[shown], "v", ms=6, mfc="none", color="C3",
                  label="upper bound on λ_k (Murray Thm 4.8)")
    band = lambda_min_band(theory)
    if band is not None and band[1] > 0:
        if band[0] > 0:
            ax.fill_between([modes / 1.25, modes * 1.25], band[0], band[1], color="C2", alpha=0.25, lw=0,
                            label="λ_min lies in this band (best bounds)")
        else:  # no positive lower bound: a band with an invented lower edge would claim one
            ax.hlines(band[1], modes / 1.25, modes * 1.25, color="C2", lw=2.5,
                      label="λ_min lies below this line (every lower bound is 0 here)")
    markers = {"lower": "^", "upper": "v"}
    colour = iter(f"C{i}" for i in range(4, 10))
    for name in sorted(variables):
        if not name.startswith("theory_lambda_min_"):
            continue
        value = float(variables[name].values)
        if not (np.isfinite(value) and value > 0):
            continue
        side = variables[name].attrs.get("bound", "lower")
        ax.loglog([modes], [value], markers.get(side, "o"), ms=6, color=next(colour, "k"),
                  label=f"λ_min {side}: {name.removeprefix('theory_lambda_min_').removeprefix(side + '_')}")


def _format(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "**NO**"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4e}"
    return str(value)


def theory_markdown(theory) -> list[str]:
    """The theory section: each prediction against the computed value, with tightness theory/computed."""
    summary = theory.attrs.get("theory") if theory is not None else None
    if not summary:
        return []
    lines = ["", "## Theory against the computed spectrum", "",
             "Tightness is theory/computed: ≤ 1 for a lower bound, ≥ 1 for an upper bound, 1 is exact.", "",
             "| prediction | bound | quantity | theory | computed | theory/computed | holds | source |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in summary.get("table", []):
        ratio = row.get("ratio")
        lines.append(
            f"| {row['prediction']} | {row['side']} | {row['quantity']} | {_format(row.get('theory'))} | "
            f"{_format(row.get('computed'))} | {'—' if ratio is None else f'{ratio:.4g}'} | "
            f"{_format(row.get('holds'))} | {row['citation']} |")
    if "theory_positive_definite" in theory.variables:
        attrs = theory["theory_positive_definite"].attrs
        lines += ["", f"- positivity ({attrs.get('citation', '')}): **{attrs.get('status')}** — {attrs.get('reason')}"]
    used, budget = summary.get("eigendecompositions", 0), summary.get("budget", 1)
    lines.append(f"- cost: the bounds used {used:g} dense N×N eigen-decomposition(s) of a budget of {budget:g} "
                 "(the solve's one); O(N²) work (Lanczos, Gershgorin, near pairs) is not counted")
    for item in summary.get("skipped", []):
        lines.append(f"- skipped `{item['name']}`: {item['reason']}")
    for item in summary.get("not_applicable", []):
        lines.append(f"- not applicable `{item['name']}`: {item['reason']}")
    return lines


def summary_markdown(config, store, spectrum, paths: dict) -> str:
    """A short markdown summary: the run, the spectrum's headline numbers with their certified errors, the theory
    table (when the compare stage has run), the stage timings, the paths.

    ``spectrum`` is the run's spectrum dataset; nothing here reads the Gram matrix."""
    values = np.asarray(spectrum["eigenvalue"].values, dtype=np.float64)
    errors = np.asarray(spectrum["eigenvalue_error"].values, dtype=np.float64) if "eigenvalue_error" in spectrum \
        else np.zeros_like(values)
    trace = float(spectrum["trace"].values) if "trace" in spectrum else float(store.diagonal().sum())
    n = store.n
    attrs = spectrum.attrs
    stages = store.meta["stages"]
    lines = [
        f"# ntkdist run `{config.run.name}`",
        "",
        f"- data: {stages.get('prepare', {}).get('data', config.data.source)}; N = {n}, d = {store.dim}",
        f"- network: depth {config.network.depth}, {config.network.activation}, weight_var = "
        f"{config.network.weight_var:g}, bias_var = {config.network.bias_var:g} (NTK parameterization)",
        f"- kernel: {config.kernel.kind.upper()}, stored as {config.kernel.dtype} in blocks of {store.block}"
        + (" (matrix-free: not stored)" if attrs.get("operator") == "matrix_free" else ""),
        f"- solver: {attrs.get('solver', config.solver.method)} through the {attrs.get('operator', 'dense')} operator, "
        f"{len(values)} of {n} eigenvalues from the top; {attrs.get('passes', 0)} passes over K "
        f"({attrs.get('seconds_per_pass', 0.0):.3g} s per pass); converged: {attrs.get('converged', True)}",
        f"- storage error bound ‖K_stored − K‖₂ ≤ {attrs.get('operator_error_bound', 0.0):.3e} (included in every error)",
        "",
        "| quantity | value | error bound |",
        "| --- | --- | --- |",
        f"| λ_max | {values[0]:.6e} | {errors[0]:.2e} |",
    ]
    if "lambda_min" in spectrum:
        lam_min, lam_min_error = float(spectrum["lambda_min"].values), float(spectrum["lambda_min_error"].values)
        lines.append(f"| λ_min (upper bound) | {lam_min:.6e} | {lam_min_error:.2e} |")
        if lam_min > lam_min_error:
            # λ_min ≤ lambda_min, so this ratio is a lower bound on λ_max/λ_min.
            lines.append(f"| condition number (lower bound) | ≥ {values[0] / lam_min:.4e} | |")
    else:
        lines.append(f"| λ_{len(values)} | {values[-1]:.6e} | {errors[-1]:.2e} |")
    lines += [f"| trace (Σ K_ii) | {trace:.6e} | exact |",
              f"| effective rank Tr/λ_max | {trace / values[0]:.4f} | |"]
    lines += ["", "Top eigenvalues: " + ", ".join(f"{v:.4e}" for v in values[:8])]
    lines += theory_markdown(spectrum if "theory" in attrs else None)
    lines += ["", "| stage | seconds |", "| --- | --- |"]
    for name in ("prepare", "build", "solve", "compare"):
        if name in stages and "seconds" in stages[name]:
            lines.append(f"| {name} | {stages[name]['seconds']} |")
    lines += ["", f"- store: `{store.location}`"]
    lines += [f"- {name.replace('_', ' ')}: `{path}`" for name, path in paths.items() if name != "summary"]
    lines.append("")
    return "\n".join(lines)


def plot_width_scaling(series, path: Path, *, ylabel: str, title: str) -> Path:
    """A quantity against the hidden width on log-log axes, one series per variant, with fits and theory lines.

    ``series`` holds (label, widths, means, standard errors, fit, theory) tuples, the fit a
    `ntkdist.theory.scaling.LogLogFit` and theory a list of (shape, label) pairs (empty where theory gives none), a
    shape being a power-law slope or a function of the width.
    Each series is drawn as points with ±1 standard-error bars and its fitted power law as a dashed line (one
    legend entry with the fitted slope); each theory shape as a black line through the fit at the geometric-mean
    width (theory predicts the shape, not the prefactor).
    """
    plt = _pyplot()
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=120)
    handles, labels, ticks = [], [], set()
    line_styles = iter([":", "-.", (0, (1, 3))])
    for k, (label, widths, means, errors, fit, theory) in enumerate(series):
        color = f"C{k}"
        widths, means, errors = (np.asarray(a, dtype=np.float64) for a in (widths, means, errors))
        ticks.update(widths.tolist())
        lower = np.minimum(errors, means * (1 - 1e-3))  # a log axis cannot draw below 0
        points = ax.errorbar(widths, means, yerr=[lower, errors], fmt="o", ms=4, color=color, capsize=2, lw=1)
        grid = np.geomspace(widths.min(), widths.max(), 50)
        (line,) = ax.plot(grid, fit.predict(grid), "--", color=color, lw=1)
        handles.append((points, line))
        labels.append(f"{label}: fitted slope {fit.slope:+.2f} ± {fit.slope_error:.2f}")
        middle = math.exp(np.mean(np.log(widths)))
        for shape, theory_label in theory:
            if callable(shape):
                curve = shape(grid) / shape(middle)
            else:
                curve = (grid / middle) ** shape
                theory_label = f"{theory_label} (slope {shape:+.1f})"
            (guide,) = ax.plot(grid, fit.predict(middle) * curve, linestyle=next(line_styles), color="k", lw=1.2)
            handles.append(guide)
            labels.append(theory_label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted(ticks))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("hidden width m")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    # Below the axes: the series span the whole width, so any legend inside would hide points.
    ax.legend(handles, labels, handler_map={tuple: HandlerTuple(ndivide=None)}, fontsize=7, loc="upper center",
              bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    return _save(fig, path)
