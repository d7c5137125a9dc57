"""The finite-width study's report: log–log figures against width and a markdown summary.

Figures (PNG, the style of `ntkdist.figures`):

* ``mc_mean.png``     — |E Θ̂ − Θ| and |E K̂ − K| per entry against n, error bars = standard error of the mean,
  with the theory |Θ¹|/n and |K¹|/n (Guillen, Misof, Gerken 2025);
* ``mc_variance.png`` — Var Θ̂ per entry against n with the theory (A + B + Bᵀ)/n ((A + 2B)/n on the diagonal);
* ``spectra.png``     — relative eigenvalue errors of the empirical NTK Gram against n, fitted slopes, and the
  predicted n^{−1/2};
* ``nguyen.png``      — λ_min of JJᵀ (standard parameterization) against the wide layer's width, fitted slope.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..figures import _pyplot, _save
from .finite_width import FiniteWidthConfig, fit_of

FIGURES = ("mc_mean", "mc_variance", "spectra", "nguyen")


def _error_bars(ax, x, y, error, **style):
    """Points with standard-error bars on log axes (the lower bar clipped above 0, which a log axis cannot show)."""
    lower = np.minimum(error, y * (1 - 1e-3))
    return ax.errorbar(x, y, yerr=[lower, error], fmt="o", ms=4, capsize=2, lw=1, **style)


def _width_axis(ax, widths, label: str = "hidden width n (every hidden layer)"):
    """Log–log axes with the widths themselves as the x ticks (plain numbers, not powers of ten)."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(list(widths))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(label)
    ax.grid(True, which="major", alpha=0.3)


def _dodge(widths, index: int, count: int):
    """Widths shifted by a few percent per series, so that error bars of different series do not overlap."""
    return np.asarray(widths) * 1.04 ** (index - (count - 1) / 2)


def _label(ax, ylabel: str, title: str, *, title_size: float = 10, legend_size: float = 6.5, loc: str = "best"):
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=title_size)
    ax.legend(fontsize=legend_size, loc=loc)


def _fit_line(ax, widths, fit: dict, color, label: str):
    if not math.isfinite(fit.get("slope", math.nan)):
        return
    n = np.geomspace(min(widths), max(widths), 50)
    ax.plot(n, fit["prefactor"] * n ** fit["slope"], "-", color=color, lw=1,
            label=f"{label} {fit['slope']:.2f} ± {fit['slope_error']:.2f}")


def plot_mc_mean(mc, path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=120)
    widths = mc["width"].values
    pairs = mc["pair"].values
    for ax, kind, symbol in zip(axes, ("ntk", "nngp"), (r"\Theta", "K")):
        for p, pair in enumerate(pairs):
            color = f"C{p % 10}"
            stats = mc[kind].isel(pair=p)
            gap = np.abs(stats.sel(statistic="mean").values - stats.sel(statistic="infinite").values)
            error = stats.sel(statistic="std_error").values
            shown = gap > 0
            _error_bars(ax, _dodge(widths, p, len(pairs))[shown], gap[shown], error[shown], color=color,
                        label=f"({pair}) sampled, ± 1 s.e.")
            theory = np.abs(stats.sel(statistic="theory_mean").values - stats.sel(statistic="infinite").values)
            if np.all(np.isfinite(theory)) and np.all(theory > 0):
                n = np.geomspace(widths.min(), widths.max(), 50)
                ax.plot(n, theory[0] * widths[0] / n, "--", color=color, lw=1,
                        label=f"({pair}) theory ${symbol}^{{1}}_{{ij}}/n$ (abs.)")
        _width_axis(ax, widths)
        _label(ax, rf"$|\,\mathrm{{mean}}\,\hat{{{symbol}}}_{{ij}} - {symbol}_{{ij}}\,|$ for the entry i-j",
               f"{'NTK' if kind == 'ntk' else 'NNGP'} mean: distance to infinite width")
    return _save(fig, path)


def plot_mc_variance(mc, path: Path) -> Path:
    """Var Θ̂ with error bars variance·√(2/(N − 1)) (the Gaussian approximation of a sample variance's error)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    widths = mc["width"].values
    networks = mc["networks"].values
    pairs = mc["pair"].values
    for p, pair in enumerate(pairs):
        color = f"C{p % 10}"
        stats = mc["ntk"].isel(pair=p)
        variance = stats.sel(statistic="variance").values
        _error_bars(ax, _dodge(widths, p, len(pairs)), variance, variance * np.sqrt(2.0 / (networks - 1)), color=color,
                    label=rf"({pair}) sampled Var $\hat\Theta_{{ij}}$")
        theory = stats.sel(statistic="theory_variance").values
        if np.all(np.isfinite(theory)) and np.all(theory > 0):
            name = "(A + 2B)/n" if pair.split("-")[0] == pair.split("-")[1] else "(A + B + Bᵀ)/n"
            ax.plot(widths, theory, "--", color=color, lw=1, label=f"({pair}) theory {name}")
    _width_axis(ax, widths)
    _label(ax, r"Var $\hat\Theta(x_i, x_j)$ over sampled networks",
           "NTK fluctuations against width (error bars: Gaussian approximation)")
    return _save(fig, path)


def plot_spectra(spectra, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    widths = spectra["width"].values
    k = int(spectra.attrs["top_k"])
    labels = {"top": rf"mean $|\Delta\lambda_i|/\lambda_i$, top {k}",
              "lambda_min": r"$|\Delta\lambda_{\min}|/\lambda_{\min}$",
              "lambda_min_shift": r"$|\mathrm{mean}\,\Delta\lambda_{\min}|/\lambda_{\min}$ (shift)"}
    for c, quantity in enumerate(labels):
        stats = spectra["relative_error"].sel(quantity=quantity)
        mean, error = np.abs(stats.sel(statistic="mean").values), stats.sel(statistic="std_error").values
        shown = mean > 0
        _error_bars(ax, _dodge(widths, c, len(labels))[shown], mean[shown], error[shown], color=f"C{c}", label=labels[quantity])
        _fit_line(ax, widths, fit_of(spectra, f"fit_{quantity}"), f"C{c}", "fitted slope")
    means = np.abs(spectra["relative_error"].sel(statistic="mean").values)
    ax.set_ylim(bottom=0.3 * means[means > 0].min())  # an unresolved point's lower bar would stretch the axis
    top = spectra["relative_error"].sel(quantity="top", statistic="mean").values
    n = np.geomspace(widths.min(), widths.max(), 50)
    ax.plot(n, top[0] * np.sqrt(widths[0] / n), ":", color="k", lw=1, label=r"theory $\propto n^{-1/2}$ (fluctuations)")
    _width_axis(ax, widths)
    _label(ax, "relative eigenvalue error of the NTK Gram",
           f"Empirical vs infinite-width NTK spectrum, N = {spectra.attrs['n_points']}", loc="lower left")
    return _save(fig, path)


def plot_nguyen(nguyen, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    widths = nguyen["width"].values
    stats = nguyen["statistic"]
    _error_bars(ax, widths, stats.sel(stat="mean").values, stats.sel(stat="std_error").values, color="C0",
                label=rf"$\lambda_{{\min}}(JJ^\top)$, mean ± s.e. over {nguyen.sizes['network']} networks")
    _fit_line(ax, widths, fit_of(nguyen), "C0", "fitted slope")
    first = stats.sel(stat="mean").values[0]
    n = np.geomspace(widths.min(), widths.max(), 50)
    ax.plot(n, first * n / widths[0], ":", color="k", lw=1, label="Nguyen et al. Thm 4.1: ∝ n (slope 1)")
    _width_axis(ax, widths, "width n of the wide (first) hidden layer")
    _label(ax, r"$\lambda_{\min}(JJ^\top)$, standard parameterization",
           f"ReLU, He init, N = {nguyen.attrs['n_points']} on the sphere of radius √{nguyen.attrs['dim']}, "
           f"other width {nguyen.attrs['fixed_width']}", title_size=9, legend_size=7)
    return _save(fig, path)


def _slope(fit: dict) -> str:
    if not math.isfinite(fit["slope"]):
        return f"— ({fit['note']})"
    return f"{fit['slope']:.3f} ± {fit['slope_error']:.3f}"


def _mc_table(mc) -> list[str]:
    lines = ["| kernel | width | pair | mean ± s.e. | theory K + K¹/n | infinite | (mean − theory)/s.e. | variance "
             "| theory variance |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for kind in ("ntk", "nngp"):
        for width in mc["width"].values:
            for pair in mc["pair"].values:
                s = {name: float(mc[kind].sel(width=width, pair=pair, statistic=name))
                     for name in mc["statistic"].values}
                z = (s["mean"] - s["theory_mean"]) / s["std_error"]
                lines.append(f"| {kind} | {width} | {pair} | {s['mean']:.4f} ± {s['std_error']:.4f} | "
                             f"{s['theory_mean']:.4f} | {s['infinite']:.4f} | {z:+.2f} | {s['variance']:.4f} | "
                             f"{s['theory_variance']:.4f} |")
    return lines


def write_report(config: FiniteWidthConfig) -> dict:
    """Figures and ``report.md`` in the study's output folder from the datasets the runs wrote there."""
    import xarray as xr

    from .finite_width import OUTPUTS

    out = config.output
    with xr.open_dataset(out / OUTPUTS["monte_carlo"]) as mc, xr.open_dataset(out / OUTPUTS["spectra"]) as sp, \
            xr.open_dataset(out / OUTPUTS["nguyen"]) as ng:
        mc, sp, ng = mc.load(), sp.load(), ng.load()
    paths = {"mc_mean": plot_mc_mean(mc, out / "mc_mean.png"),
             "mc_variance": plot_mc_variance(mc, out / "mc_variance.png"),
             "spectra": plot_spectra(sp, out / "spectra.png"), "nguyen": plot_nguyen(ng, out / "nguyen.png")}
    net = config.network
    fits = {name: fit_of(sp, f"fit_{name}") for name in ("top", "lambda_min", "lambda_min_shift")}
    nguyen = fit_of(ng)
    lines = [f"# Finite-width study `{config.study.name}`", "",
             f"Network: depth {net.depth}, {net.activation}, weight_var {net.weight_var:g}, bias_var "
             f"{net.bias_var:g} (ntkdist's NTK parameterization; every hidden layer of width n).", "",
             "## Monte Carlo over sampled networks", "",
             f"{mc.sizes['pair']} entries of {mc.sizes['point']} points, {int(mc['networks'].values[0])} networks "
             f"per width; theory: Guillen, Misof, Gerken 2025 (K + K¹/n, Θ + Θ¹/n; variance (A + B + Bᵀ)/n). "
             "Dataset: `monte_carlo.nc`.", "", *_mc_table(mc), "",
             "![means](mc_mean.png)", "", "![variance](mc_variance.png)", "",
             "## Spectra at finite width", "",
             f"N = {sp.attrs['n_points']} points ({config.data.source}), {sp.attrs['networks']} networks per width, "
             f"dense eigh. Relative errors against the infinite-width Gram's eigenvalues, fitted on log–log axes.", "",
             "| quantity | predicted slope | measured slope |", "| --- | --- | --- |",
             f"| mean relative error of the top {sp.attrs['top_k']} | −0.5 (fluctuations, Weyl) | "
             f"{_slope(fits['top'])} |",
             f"| relative error of λ_min | −0.5 (fluctuations) | {_slope(fits['lambda_min'])} |",
             f"| mean shift of λ_min | −1 (mean and second-order shift) | {_slope(fits['lambda_min_shift'])} |", "",
             f"**Stated rate:** the empirical spectrum converges to the infinite-width spectrum like n^(−1/2) "
             f"(measured {_slope(fits['top'])} for the top {sp.attrs['top_k']}).", "",
             "![spectra](spectra.png)", "",
             "## Nguyen et al. Theorem 4.1: λ_min grows linearly in the wide layer", "",
             f"λ_min of JJᵀ (standard parameterization, He init, ReLU, no biases), first hidden layer of width n, "
             f"others {ng.attrs['fixed_width']}: fitted slope **{_slope(nguyen)}** (theory 1).", "",
             "![nguyen](nguyen.png)", ""]
    markdown = "\n".join(lines)
    (out / "report.md").write_text(markdown)
    return {"markdown": markdown, "report": str(out / "report.md"), **{k: str(v) for k, v in paths.items()},
            "fits": json.loads(json.dumps({"spectra": fits, "nguyen": nguyen}))}
