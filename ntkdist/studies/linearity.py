"""The transition to linearity (Liu, Zhu & Belkin 2020, arXiv 2010.01092) against width: config, run, report.

For each width m, seed and variant the run samples one network (`ntkdist.kernels.empirical.sample_weights`), and
measures

* ``hessian_norm``: ‖H(x)‖ of the output's Hessian at initialization, at each of the first ``[hessian] points``
  training inputs (`ntkdist.kernels.linearity.hessian_norm`, Lanczos on R-operator products);
* ``ntk_change``: ‖Θ̂_T − Θ̂_0‖_F / ‖Θ̂_0‖_F of the tangent-kernel Gram on the training set after ``steps`` of
  full-batch gradient descent on the squared loss (for the non-linear output, the kernel of ψ(f));
* ``ntk_change_ball``: the same relative change at θ_0 + R·u, u the kernel trace's steepest direction
  (`kernel_change_in_ball`, R = ``[sweep] radius``): Liu et al.'s change over the ball, in one direction;

for three variants: ``linear`` (the network's own linear readout; all hidden widths m), ``nonlinear_output``
(f̃ = ψ(f), ψ = ``[sweep] output``), and ``bottleneck`` (linear readout; hidden layer ``bottleneck_layer`` has
the fixed width ``bottleneck_width`` while the others are m). The results are an xarray Dataset with dims
(variant, width, seed[, point]), written as netCDF, and a report: the fitted log–log slopes (`fit_log_log`) in
markdown and two figures.

Per seed the Hessian norm is the largest over the points (Liu et al. bound ‖H(x)‖ for every x, so the maximum
over a few x scales like each); each width's value is the mean over seeds, its error the standard error over seeds.
The whole study, with its equations and what the figures show: docs/linearity.md.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import xarray as xr
from pydantic import Field, model_validator

from ..config import _Section, load_config
from ..kernels import MLP, get_activation, sample_weights
from ..kernels.blas_threads import one_blas_thread
from ..kernels.linearity import (gradient_descent, hessian_norm, kernel_change_in_ball, relative_change,
                                 tangent_gram)
from ..theory.scaling import fit_log_log
from .common import StudyConfig

VARIANTS = ("linear", "nonlinear_output", "bottleneck")
#: Log–log slopes theory gives, where it does, as (slope, source). With a linear output Liu et al. (2020, Thm 3.2)
#: prove ‖H‖ = Õ(1/√m), and from it a change of the tangent kernel in a ball of fixed radius of at most Õ(1/√m):
#: a bound, over every direction in the ball. Gradient descent moves along the gradients, and along them the
#: change is smaller: Dyer & Gur-Ari (2020, "Asymptotics of wide networks from Feynman diagrams", ICLR, §3)
#: derive dΘ/dt = O(1/n) during training, so the kernel's change after training is O(1/m).
#:
#: Why ‖H‖/√(log m) is fitted too: the Õ hides a logarithm, and at these widths it shows. The Hessian's diagonal
#: blocks have norm max_i |∂f/∂a_i·φ''(h_i)|·O(1), a maximum over m units of entries of size O(1/√m) with Gaussian
#: tails, which grows like √(2 log m)/√m (our derivation; the maximum of m standard normals is ≈ √(2 log m)). So
#: ‖H‖ ∝ √(log m / m), whose local log–log slope is −1/2 + 1/(2 log m), −0.41 near m = 200 (measured: −0.42 ± 0.01
#: on widths 64–2048), while ‖H‖/√(log m) has slope −1/2 (measured: −0.50 ± 0.01 on the same widths).
THEORY_SLOPES = {
    ("hessian_norm", "linear"): [(-0.5, "Liu et al. 2020, Thm 3.2")],
    ("hessian_norm_log", "linear"): [(-0.5, "Liu et al. 2020, Thm 3.2, with its log factor")],
    ("ntk_change", "linear"): [(-0.5, "Liu et al. 2020, bound"), (-1.0, "Dyer & Gur-Ari 2020")],
    ("ntk_change_ball", "linear"): [(-0.5, "Liu et al. 2020, Thm 3.2: the ball")],
}
#: Theory curves that are not power laws, drawn in the figures: (m ↦ shape, label).
THEORY_CURVES = {
    ("hessian_norm", "linear"): [(lambda m: np.sqrt(np.log(m) / m), "Liu et al. with its log: √(log m / m)")],
}


class StudyData(_Section):
    n: int = Field(default=16, ge=2, le=1024, description="training points, i.i.d. N(0, I_dim)")
    dim: int = Field(default=5, ge=1, le=1000, description="input dimension d")
    seed: int = Field(default=0, ge=0, description="seed of the inputs and of the target direction")
    target_scale: float = Field(default=0.8, gt=0.0, lt=1.0, description="targets y = target_scale·sin(2⟨u, x⟩) "
                                "for a random unit u; below 1 so that a tanh or sigmoid output can reach them")


class StudyNetwork(_Section):
    depth: int = Field(default=2, ge=1, le=20, description="hidden layers (Dense + activation), then a linear "
                       "readout, NTK parameterization")
    activation: str = Field(default="tanh", description="a twice-differentiable activation (Liu et al.'s theorem "
                            "assumes one), e.g. tanh, erf, gelu, sigmoid, softplus")
    weight_var: float = Field(default=1.0, gt=0.0, description="W_std²")
    bias_var: float = Field(default=0.1, ge=0.0, description="b_std²")


class StudySweep(_Section):
    widths: list[int] = Field(description="hidden widths m, at least three distinct, each ≥ 2")
    seeds: int = Field(default=3, ge=2, le=100, description="networks per width and variant (seeds 0 … seeds−1); "
                       "the error bars are standard errors over them")
    variants: list[Literal["linear", "nonlinear_output", "bottleneck"]] = Field(
        default=list(VARIANTS), description="which of linear, nonlinear_output, bottleneck to run")
    output: Literal["tanh", "sigmoid"] = Field(default="tanh", description="ψ of the non-linear output ψ(f)")
    bottleneck_width: int = Field(default=8, ge=1, description="the narrow layer's fixed width")
    bottleneck_layer: int = Field(default=-1, description="which hidden layer is narrow: 0 … depth−1, or −1 for "
                                  "the last (the one the readout reads)")
    radius: float = Field(default=1.0, gt=0.0, description="R of the kernel's change in the ball ‖θ − θ_0‖ ≤ R "
                          "(ntk_change_ball; gradient descent travels a distance of order 1 at every width)")

    @model_validator(mode="after")
    def _enough_widths(self):
        if len(set(self.widths)) < 3 or min(self.widths) < 2:
            raise ValueError(f"widths: give at least three distinct widths ≥ 2 for a slope with an error, got "
                             f"{self.widths}")
        if len(set(self.variants)) != len(self.variants) or not self.variants:
            raise ValueError(f"variants: give each of {', '.join(VARIANTS)} at most once, at least one")
        return self


class StudyTraining(_Section):
    learning_rate: float = Field(default=1.0, gt=0.0, description="η of full-batch gradient descent on "
                                 "(1/2N)·Σ(f − y)², the same at every width (NTK parameterization)")
    steps: int = Field(default=200, ge=1, le=100_000, description="gradient-descent steps")


class StudyHessian(_Section):
    points: int = Field(default=2, ge=1, description="the Hessian's norm at the first `points` training inputs")
    tol: float = Field(default=1e-6, gt=0.0, lt=0.1, description="Lanczos stopping rule: Ritz residual ≤ tol·|θ|")


class LinearityConfig(StudyConfig):
    """A validated linearity study. Build it with `LinearityConfig.from_dict` or `load_linearity_config`."""

    KIND: ClassVar[str] = "linearity"
    data: StudyData = StudyData()
    network: StudyNetwork = StudyNetwork()
    sweep: StudySweep
    training: StudyTraining = StudyTraining()
    hessian: StudyHessian = StudyHessian()

    @model_validator(mode="after")
    def _cross_section(self):
        depth = self.network.depth
        if "bottleneck" in self.sweep.variants:
            if depth < 2:
                raise ValueError("[sweep] bottleneck_layer: a bottleneck needs depth ≥ 2 (one narrow layer while "
                                 "the others grow); raise [network] depth or drop \"bottleneck\" from variants")
            if not -depth <= self.sweep.bottleneck_layer < depth:
                raise ValueError(f"[sweep] bottleneck_layer: must be in −{depth} … {depth - 1} for depth {depth}, "
                                 f"got {self.sweep.bottleneck_layer}")
        if self.hessian.points > self.data.n:
            raise ValueError(f"[hessian] points: at most [data] n = {self.data.n}, got {self.hessian.points}")
        return self

    @model_validator(mode="before")
    @classmethod
    def _known_activation(cls, raw):
        activation = (raw.get("network") or {}).get("activation") if isinstance(raw, dict) else None
        if isinstance(activation, str):
            try:
                get_activation(activation)
            except (ValueError, TypeError):
                raise ValueError(f"[network] activation: unknown activation {activation!r}; use a smooth one such "
                                 "as tanh, erf, gelu") from None
        return raw

    @property
    def net(self) -> MLP:
        n = self.network
        return MLP(depth=n.depth, activation=n.activation, weight_var=n.weight_var, bias_var=n.bias_var)


def load_linearity_config(path) -> LinearityConfig:
    """Read and validate a study's TOML file (`ConfigError` naming the file and key otherwise)."""
    return load_config(path, model=LinearityConfig)


# --------------------------------------------------------------------------------------------------------------
# The run.

def training_data(config: LinearityConfig):
    """(X, y): N i.i.d. N(0, I_d) inputs and y = target_scale·sin(2⟨u, x⟩) with a random unit u, from the seed."""
    data = config.data
    rng = np.random.default_rng(data.seed)
    X = rng.standard_normal((data.n, data.dim))
    u = rng.standard_normal(data.dim)
    return X, data.target_scale * np.sin(2.0 * X @ (u / np.linalg.norm(u)))


def hidden_widths(config: LinearityConfig, variant: str, width: int) -> list[int]:
    """The hidden widths of ``variant`` at width m: all m, except the bottleneck's narrow layer."""
    widths = [width] * config.network.depth
    if variant == "bottleneck":
        widths[config.sweep.bottleneck_layer] = config.sweep.bottleneck_width
    return widths


def measure(config: LinearityConfig, variant: str, width: int, seed: int, X, y) -> dict:
    """One network's measurements: Hessian norms at the first points, NTK change in training, losses."""
    output = config.sweep.output if variant == "nonlinear_output" else "identity"
    # One row (Hessian) or N rows (training) against m×m weights: one BLAS thread is fastest, and several
    # contend badly on a shared machine (measured 10× slower with two threads under load).
    with one_blas_thread():
        params = sample_weights(config.net, dim=config.data.dim, width=hidden_widths(config, variant, width),
                                seed=seed)
        norms = [hessian_norm(params, X[i], output=output, seed=seed, tol=config.hessian.tol)
                 for i in range(config.hessian.points)]
        before = tangent_gram(params, X, output)
        trained, losses = gradient_descent(params, X, y, learning_rate=config.training.learning_rate,
                                           steps=config.training.steps, output=output)
        change = relative_change(before, tangent_gram(trained, X, output))
        ball = kernel_change_in_ball(params, X, config.sweep.radius, output)
    return {"hessian_norm": norms, "ntk_change": change, "ntk_change_ball": ball, "loss_initial": losses[0],
            "loss_final": losses[-1]}


def run(config: LinearityConfig, *, progress=None) -> xr.Dataset:
    """Every (variant, width, seed) of the sweep, as a Dataset (see `dataset_layout`)."""
    X, y = training_data(config)
    sweep = config.sweep
    widths = sorted(set(sweep.widths))
    shape = (len(sweep.variants), len(widths), sweep.seeds)
    norms = np.full(shape + (config.hessian.points,), np.nan)
    fields = {name: np.full(shape, np.nan) for name in ("ntk_change", "ntk_change_ball", "loss_initial",
                                                         "loss_final")}
    started = time.perf_counter()
    for i, variant in enumerate(sweep.variants):
        for j, width in enumerate(widths):
            for seed in range(sweep.seeds):
                result = measure(config, variant, width, seed, X, y)
                norms[i, j, seed] = result["hessian_norm"]
                for name in fields:
                    fields[name][i, j, seed] = result[name]
            if progress:
                progress(f"{variant} width {width}: done")
    dims = ("variant", "width", "seed")
    ds = xr.Dataset(
        {"hessian_norm": (dims + ("point",), norms, {"long_name": "spectral norm of the output's Hessian at x"}),
         "ntk_change": (dims, fields["ntk_change"], {"long_name": "‖Θ_T − Θ_0‖_F / ‖Θ_0‖_F after training"}),
         "ntk_change_ball": (dims, fields["ntk_change_ball"], {
             "long_name": "‖Θ(θ_0 + R·u) − Θ_0‖_F / ‖Θ_0‖_F along the kernel's steepest direction u",
             "radius": config.sweep.radius}),
         "loss_initial": (dims, fields["loss_initial"], {"long_name": "(1/2N)Σ(f − y)² before training"}),
         "loss_final": (dims, fields["loss_final"], {"long_name": "(1/2N)Σ(f − y)² after training"})},
        coords={"variant": list(sweep.variants), "width": widths, "seed": np.arange(sweep.seeds),
                "point": np.arange(config.hessian.points)},
        attrs={"config": json.dumps(config.to_dict(), sort_keys=True), "paper": "Liu, Zhu, Belkin 2020, "
               "arXiv 2010.01092", "seconds": round(time.perf_counter() - started, 3)})
    return ds


# --------------------------------------------------------------------------------------------------------------
# Fits and report.

def per_width(ds: xr.Dataset, quantity: str, variant: str):
    """(widths, mean over seeds, standard error over seeds) of a quantity; the Hessian norm is first maximised over
    the points of each network."""
    values = ds[quantity].sel(variant=variant)
    if "point" in values.dims:
        values = values.max("point")
    seeds = values.sizes["seed"]
    return (ds["width"].values.astype(float), values.mean("seed").values,
            values.std("seed", ddof=1).values / math.sqrt(seeds))


def fitted_slopes(ds: xr.Dataset) -> dict:
    """{(quantity, variant): LogLogFit} for every quantity and variant of the dataset, and, for the linear output,
    ``("hessian_norm_log", "linear")``: the fit of ‖H‖/√(log m) (why: the comment above `THEORY_SLOPES`)."""
    fits = {(quantity, variant): fit_log_log(*per_width(ds, quantity, variant))
            for quantity in QUANTITIES for variant in ds["variant"].values.tolist()}
    if "linear" in ds["variant"].values.tolist():
        widths, means, errors = per_width(ds, "hessian_norm", "linear")
        log_factor = np.sqrt(np.log(widths))
        fits[("hessian_norm_log", "linear")] = fit_log_log(widths, means / log_factor, errors / log_factor)
    return fits


def write_dataset(ds: xr.Dataset, out_dir: Path) -> Path:
    """The dataset as netCDF (``linearity.nc``; netCDF-3 through scipy, no extra dependency)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "linearity.nc"
    ds.to_netcdf(path, engine="scipy")
    return path


def read_dataset(out_dir: Path) -> xr.Dataset:
    with xr.open_dataset(Path(out_dir) / "linearity.nc", engine="scipy") as ds:
        return ds.load()


LABELS = {"linear": "linear output f", "nonlinear_output": "non-linear output ψ(f)",
          "bottleneck": "bottleneck (one narrow layer)"}
#: quantity: (y label, title, file)
QUANTITIES = {
    "hessian_norm": (r"$\|H(x)\|_2$ at initialization (max over points)", "Hessian norm of the output",
                     "hessian.png"),
    "ntk_change": (r"$\|\hat\Theta_T - \hat\Theta_0\|_F \,/\, \|\hat\Theta_0\|_F$ after training",
                   "tangent-kernel change in gradient descent", "ntk_change.png"),
    "ntk_change_ball": (r"$\|\hat\Theta(\theta_0 + R u) - \hat\Theta_0\|_F \,/\, \|\hat\Theta_0\|_F$",
                        "tangent-kernel change in the ball (steepest direction)", "ntk_change_ball.png")}


def report(config: LinearityConfig, ds: xr.Dataset) -> dict:
    """Write the figures and ``report.md`` into the study's folder; returns their paths and the markdown."""
    from ..figures import plot_width_scaling

    out_dir = config.output
    fits = fitted_slopes(ds)
    paths = {}
    for quantity, (label, title, filename) in QUANTITIES.items():
        series = [(LABELS[v], *per_width(ds, quantity, v), fits[(quantity, v)],
                   THEORY_SLOPES.get((quantity, v), []) + THEORY_CURVES.get((quantity, v), []))
                  for v in ds["variant"].values.tolist()]
        paths[quantity] = str(plot_width_scaling(series, out_dir / filename, ylabel=label,
                                                 title=f"{config.study.name}: {title}"))
    markdown = summary_markdown(config, ds, fits, paths)
    (out_dir / "report.md").write_text(markdown)
    return {**paths, "markdown": markdown, "report": str(out_dir / "report.md")}


def summary_markdown(config: LinearityConfig, ds: xr.Dataset, fits: dict, paths: dict) -> str:
    net = config.network
    lines = [f"# Transition to linearity: {config.study.name}", "",
             f"Depth {net.depth}, {net.activation}, σ_w² = {net.weight_var}, σ_b² = {net.bias_var}; "
             f"N = {config.data.n} points in d = {config.data.dim}; widths {ds['width'].values.tolist()}, "
             f"{ds.sizes['seed']} seeds; {config.training.steps} steps of gradient descent at η = "
             f"{config.training.learning_rate}; non-linear output ψ = {config.sweep.output}; bottleneck width "
             f"{config.sweep.bottleneck_width} at hidden layer {config.sweep.bottleneck_layer}.", "",
             "| quantity | variant | fitted slope ± standard error | theory slope (source): distance in σ |",
             "| --- | --- | --- | --- |"]
    for (quantity, variant), fit in fits.items():
        theory = "; ".join(f"{slope:+.1f} ({source}): {abs(fit.slope - slope) / fit.slope_error:.1f}σ"
                           for slope, source in THEORY_SLOPES.get((quantity, variant), []))
        name = {"hessian_norm_log": "hessian_norm / √(log m)"}.get(quantity, quantity)
        lines.append(f"| {name} | {variant} | {fit.slope:+.3f} ± {fit.slope_error:.3f} | {theory} |")
    final = ds["loss_final"].max().item()
    lines += ["", f"Largest final training loss: {final:.2e} (every network was trained). Run time "
              f"{ds.attrs.get('seconds', float('nan'))} s.", ""]
    lines += [f"![{quantity}]({Path(path).name})" for quantity, path in paths.items()]
    return "\n".join(lines) + "\n"


def dataset_layout() -> str:
    """The Dataset's layout in words (docs/linearity.md §2 has the table)."""
    return ("dims (variant, width, seed, point); hessian_norm (variant, width, seed, point); ntk_change, "
            "ntk_change_ball, loss_initial, loss_final (variant, width, seed); attrs: config (JSON), paper, seconds")


__all__ = ["LinearityConfig", "load_linearity_config", "run", "report", "fitted_slopes", "per_width",
           "write_dataset", "read_dataset", "training_data", "hidden_widths", "measure", "VARIANTS",
           "THEORY_SLOPES"]
