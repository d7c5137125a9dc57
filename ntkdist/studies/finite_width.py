"""The finite-width study: how far sampled networks' kernels and spectra are from the infinite-width ones.

Three measurements, each a small pure function here, run by `run_study` and plotted by
`ntkdist.studies.finite_width_report`:

1. **Monte Carlo over networks** (`ntkdist.cluster.finite_width.monte_carlo_kernels`, on Ray): means, variances
   and covariances of the empirical NTK and NNGP entries on a few points against K + K¹/n, Θ + Θ¹/n and
   (A + 2B)/n (Guillen, Misof, Gerken 2025).
2. **Spectra at finite width** (`finite_width_spectra`): the eigenvalues of the empirical NTK Gram of N points
   at each width and seed against those of the infinite-width Gram (`ntkdist.ntk`), by dense ``eigh`` (N ≤
   `MAX_DENSE_POINTS`: O(N³) time, N² memory, seconds at N = 2000). Theory: Θ̂ − Θ has entries of order n^{−1/2}
   (fluctuations; its mean is O(1/n)), so by Weyl's inequality |λ_i(Θ̂) − λ_i(Θ)| ≤ ‖Θ̂ − Θ‖₂ = O_P(n^{−1/2})
   for fixed N, and the mean shift E λ_i(Θ̂) − λ_i(Θ) is O(1/n) (the 1/n mean plus second-order perturbation
   of the fluctuations).
3. **Nguyen et al.'s Theorem 4.1** (`nguyen_lambda_min`): λ_min of the unnormalised JJᵀ in the standard
   parameterization (He initialisation, σ_w² = 2, ReLU, no biases) of a network whose first hidden layer has
   width n and the others a fixed width, on N points uniform on the sphere of radius √d (their Assumption 2.1):
   Θ(n) (docs/finite-width.md for the exponent bookkeeping).

Every slope is fitted by `ntkdist.theory.scaling.fit_log_log` with the standard errors over seeds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import Field, field_validator, model_validator

from .. import datasets
from ..config import ClusterSection, DataSection, NetworkSection, _Section, load_config
from ..errors import ConfigError
from ..kernels import MLP, empirical_ntk, get_activation, ntk
from ..kernels.sampled import network_seed, sampled_network_kernels
from ..theory.scaling import fit_log_log
from .common import StudyConfig

#: Largest N whose Grams `finite_width_spectra` decomposes densely (LAPACK eigh, O(N³)).
MAX_DENSE_POINTS = 4000
#: Slopes theory predicts for the spectrum's distance to the infinite-width one (module docstring).
FLUCTUATION_SLOPE = -0.5
MEAN_SHIFT_SLOPE = -1.0
#: Nguyen et al. Thm 4.1 with He initialisation: λ_min ∝ width of the wide layer.
NGUYEN_SLOPE = 1.0


# -- configuration -----------------------------------------------------------------------------------------------
def _widths(value: list[int]) -> list[int]:
    if len(value) < 2 or len(set(value)) != len(value) or min(value) < 1:
        raise ValueError(f"must list at least two distinct widths ≥ 1, got {value}")
    return sorted(value)


class MonteCarloSection(_Section):
    points: int = Field(default=3, ge=1, le=64, description="m, the points the kernels are sampled on "
                        "(theory costs ~2 s per pair at depth 3)")
    dim: int = Field(default=4, ge=1, description="their dimension")
    scale: float = Field(default=0.53, gt=0.0, description="points are standard Gaussian × scale (the paper's 0.53)")
    data_seed: int = Field(default=116, ge=0, description="seed of the points")
    widths: list[int] = Field(default=[20, 40, 80], description="hidden widths n (every hidden layer)")
    networks: int = Field(default=2000, ge=2, description="networks sampled per width")
    seed: int = Field(default=0, ge=0, description="base seed of the networks (network k of width n: "
                      "SeedSequence((seed, n, k)))")
    theory: bool = Field(default=True, description="compute K + K¹/n, Θ + Θ¹/n, (A + 2B)/n beside the samples")

    _check_widths = field_validator("widths")(_widths)


class SpectraSection(_Section):
    widths: list[int] = Field(default=[64, 128, 256, 512, 1024], description="hidden widths n of the sampled "
                              "networks")
    seeds: int = Field(default=6, ge=2, description="networks per width (error bars are over them)")
    seed: int = Field(default=0, ge=0, description="base seed of the networks")
    top_k: int = Field(default=3, ge=1, description="top eigenvalues whose mean relative error is fitted")

    _check_widths = field_validator("widths")(_widths)


class NguyenSection(_Section):
    n: int = Field(default=32, ge=2, le=MAX_DENSE_POINTS, description="N, points uniform on the sphere of radius "
                   "√dim (Nguyen et al.'s Assumption 2.1)")
    dim: int = Field(default=16, ge=2, description="their dimension d")
    data_seed: int = Field(default=0, ge=0, description="seed of the points")
    depth: int = Field(default=2, ge=1, le=8, description="hidden layers; the first is the wide one")
    fixed_width: int = Field(default=16, ge=1, description="width of the other hidden layers")
    widths: list[int] = Field(default=[64, 128, 256, 512, 1024], description="widths of the wide (first) layer")
    seeds: int = Field(default=8, ge=2, description="networks per width (error bars are over them)")
    seed: int = Field(default=0, ge=0, description="base seed of the networks")

    _check_widths = field_validator("widths")(_widths)


class FiniteWidthConfig(StudyConfig):
    """A validated finite-width study. Build it with `load_study_config` or `FiniteWidthConfig.from_dict`."""

    KIND: ClassVar[str] = "finite_width"
    network: NetworkSection
    data: DataSection
    monte_carlo: MonteCarloSection = MonteCarloSection()
    spectra: SpectraSection = SpectraSection()
    nguyen: NguyenSection = NguyenSection()
    cluster: ClusterSection = ClusterSection()

    @model_validator(mode="after")
    def _cross_section(self):
        if self.network.width is not None or self.network.seed != 0:
            raise ValueError("network: width and seed are set per measurement in this study ([monte_carlo] "
                             "widths/seed, [spectra] widths/seed); remove them from [network]")
        if self.data.n is not None and self.data.n > MAX_DENSE_POINTS:
            raise ValueError(f"data: n = {self.data.n} is more than the {MAX_DENSE_POINTS} points whose Grams the "
                             "spectra decompose densely; use fewer points")
        return self

    @property
    def net(self) -> MLP:
        return MLP(depth=self.network.depth, activation=get_activation(self.network.activation),
                   weight_var=self.network.weight_var, bias_var=self.network.bias_var)


def load_study_config(path) -> FiniteWidthConfig:
    """Read and validate a finite-width study's TOML file (`ConfigError` naming the key at fault)."""
    return load_config(path, model=FiniteWidthConfig)


# -- the measurements --------------------------------------------------------------------------------------------
def monte_carlo_points(section: MonteCarloSection) -> np.ndarray:
    """The m points of the Monte Carlo: standard Gaussian × scale (Guillen et al.'s inputs, their eqs. 116–119)."""
    return section.scale * np.random.default_rng(section.data_seed).standard_normal((section.points, section.dim))


def spectra_points(data: DataSection) -> np.ndarray:
    """The N points of the spectra (``[data]``: sphere, gaussian or npy)."""
    if data.source == "sphere":
        return datasets.uniform_sphere(data.n, data.dim, data.seed, data.radius).to_array()
    if data.source == "gaussian":
        return datasets.isotropic_gaussian(data.n, data.dim, data.seed).to_array()
    return datasets.npy_file(Path(data.path).expanduser(), n=data.n, dim=data.dim).to_array()


def _mean_and_error(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over axis 0 and its standard error (sample standard deviation / √count)."""
    return samples.mean(axis=0), samples.std(axis=0, ddof=1) / math.sqrt(samples.shape[0])


def _fit(x, y, error) -> dict:
    """`fit_log_log` as a dict, or the reason it cannot be fitted (non-positive or unresolved points)."""
    try:
        fit = fit_log_log(x, y, error)
    except ConfigError as exc:
        return {"slope": math.nan, "slope_error": math.nan, "prefactor": math.nan, "note": str(exc)}
    return {"slope": fit.slope, "slope_error": fit.slope_error, "prefactor": fit.prefactor,
            "chi2_per_dof": fit.chi2_per_dof, "note": ""}


def finite_width_spectra(X, net: MLP, widths, *, seeds: int, seed: int = 0, top_k: int = 3):
    """Eigenvalues of empirical NTK Grams at each width and seed against the infinite-width Gram's.

    For each width n and network k (`network_seed` (seed, n, k)), the dense spectrum of Θ̂ = `empirical_ntk`
    on X; relative errors e_i = |λ_i(Θ̂) − λ_i(Θ)| / λ_i(Θ) (eigenvalues sorted descending), averaged over
    networks with standard errors. Fitted against n on log–log axes (`fit_log_log`, errors over networks):
    ``top`` the mean of e_1 … e_k (prediction n^{−1/2}), ``lambda_min`` e_N (λ_min's relative error; at moderate
    n its downward shift dominates), and ``lambda_min_shift`` the signed mean (λ_min(Θ̂) − λ_min(Θ))/λ_min(Θ),
    whose size is predicted to shrink like 1/n (fitted where it is resolved, i.e. ≥ 3 standard errors at every
    width).

    Returns
    -------
    xarray.Dataset
        ``eigenvalues`` (width, network, index), ``infinite`` (index), ``relative_error`` (width, quantity,
        statistic = mean | std_error) for quantity ∈ {top, lambda_min, lambda_min_shift}; the fits in attrs
        (``fit_<quantity>`` as JSON) with the predicted slopes.
    """
    import xarray as xr

    X = np.asarray(X, dtype=np.float64)
    if X.shape[0] > MAX_DENSE_POINTS:
        raise ConfigError(f"[data] n: {X.shape[0]} points is more than the {MAX_DENSE_POINTS} that dense eigh "
                          "decomposes in reasonable time; use fewer")
    widths = _widths([int(w) for w in widths])
    k = min(int(top_k), X.shape[0])
    infinite = np.linalg.eigvalsh(ntk(X, net=net))[::-1]
    eigenvalues = np.stack([np.stack([np.linalg.eigvalsh(empirical_ntk(X, net=net, width=n,
                                                                       seed=network_seed(seed, n, j)))[::-1]
                                      for j in range(seeds)]) for n in widths])
    relative = (eigenvalues - infinite) / infinite
    quantities = {"top": np.abs(relative[:, :, :k]).mean(axis=2), "lambda_min": np.abs(relative[:, :, -1]),
                  "lambda_min_shift": relative[:, :, -1]}
    stats = np.stack([np.stack(_mean_and_error(q.T), axis=-1) for q in quantities.values()], axis=1)
    fits = {"top": _fit(widths, stats[:, 0, 0], stats[:, 0, 1]),
            "lambda_min": _fit(widths, stats[:, 1, 0], stats[:, 1, 1])}
    shift, shift_error = np.abs(stats[:, 2, 0]), stats[:, 2, 1]
    fits["lambda_min_shift"] = (_fit(widths, shift, shift_error) if np.all(shift >= 3 * shift_error) else
                                {"slope": math.nan, "slope_error": math.nan, "prefactor": math.nan,
                                 "note": "not resolved: the mean shift is below 3 standard errors at some width"})
    predicted = {"top": FLUCTUATION_SLOPE, "lambda_min": FLUCTUATION_SLOPE, "lambda_min_shift": MEAN_SHIFT_SLOPE}
    attrs = {f"fit_{name}": json.dumps({**fit, "predicted_slope": predicted[name]}) for name, fit in fits.items()}
    attrs.update({"top_k": k, "seed": int(seed), "networks": int(seeds), "n_points": int(X.shape[0]),
                  "eigensolver": "dense numpy.linalg.eigvalsh (LAPACK), float64"})
    return xr.Dataset(
        {"eigenvalues": (("width", "network", "index"), eigenvalues),
         "infinite": (("index",), infinite),
         "relative_error": (("width", "quantity", "statistic"), stats)},
        coords={"width": widths, "network": np.arange(seeds), "index": np.arange(1, X.shape[0] + 1),
                "quantity": list(quantities), "statistic": ["mean", "std_error"]},
        attrs=attrs)


def nguyen_lambda_min(section: NguyenSection):
    """λ_min of JJᵀ (standard parameterization, He init) against the wide layer's width (Nguyen et al. Thm 4.1).

    ReLU without biases, σ_w² = 2 in every layer (their β_l² = 2/n_{l−1}), first hidden layer of width n, the
    other ``depth − 1`` of ``fixed_width``; N points uniform on the sphere of radius √d. λ_min of
    K̄ = `NetworkKernels.standard_ntk` per network, its mean and standard error over ``seeds`` networks, and
    the slope fitted on log–log axes (predicted 1).

    Returns
    -------
    xarray.Dataset
        ``lambda_min`` (width, network), ``statistic`` (width, statistic = mean | std_error); the fit in attrs.
    """
    import xarray as xr

    X = datasets.uniform_sphere(section.n, section.dim, section.data_seed, math.sqrt(section.dim)).to_array()
    net = MLP(depth=section.depth, activation="relu", weight_var=2.0, bias_var=0.0)
    values = np.array([[np.linalg.eigvalsh(sampled_network_kernels(
        X, net, width=(n,) + (section.fixed_width,) * (section.depth - 1),
        seed=network_seed(section.seed, n, j)).standard_ntk)[0] for j in range(section.seeds)]
        for n in section.widths])
    mean, error = _mean_and_error(values.T)
    fit = _fit(section.widths, mean, error)
    return xr.Dataset(
        {"lambda_min": (("width", "network"), values),
         "statistic": (("width", "stat"), np.stack([mean, error], axis=-1))},
        coords={"width": section.widths, "network": np.arange(section.seeds), "stat": ["mean", "std_error"]},
        attrs={"fit": json.dumps({**fit, "predicted_slope": NGUYEN_SLOPE}), "n_points": section.n,
               "dim": section.dim, "depth": section.depth, "fixed_width": section.fixed_width,
               "quantity": "lambda_min of J J^T, gradients by the standard-parameterization weights, He init "
                           "(weight_var = 2), ReLU, no biases; first hidden layer wide"})


def fit_of(dataset, name: str = "fit") -> dict:
    """A fit stored in a study dataset's attrs (JSON), as a dict."""
    return json.loads(dataset.attrs[name])


# -- the run -----------------------------------------------------------------------------------------------------
#: The files a study writes into its output folder.
OUTPUTS = {"monte_carlo": "monte_carlo.nc", "spectra": "spectra.nc", "nguyen": "nguyen.nc",
           "config": "config.json"}


def run_monte_carlo(config: FiniteWidthConfig):
    """The Monte Carlo of ``[monte_carlo]`` on Ray (connecting as ``[cluster] address`` says), written as netCDF."""
    from ..cluster import ray_session
    from ..cluster.finite_width import monte_carlo_kernels, write_netcdf

    mc = config.monte_carlo
    with ray_session(config.cluster.address):
        dataset = monte_carlo_kernels(monte_carlo_points(mc), config.net, mc.widths, networks=mc.networks,
                                      seed=mc.seed, workers=config.cluster.workers, theory=mc.theory,
                                      cpus_per_worker=config.cluster.cpus_per_worker)
    path = _output(config, "monte_carlo")
    write_netcdf(dataset, path)
    return {"path": str(path), "widths": mc.widths, "networks": mc.networks}


def run_spectra(config: FiniteWidthConfig) -> dict:
    """`finite_width_spectra` of ``[data]`` and ``[spectra]``, written as netCDF; returns the fits."""
    s = config.spectra
    dataset = finite_width_spectra(spectra_points(config.data), config.net, s.widths, seeds=s.seeds, seed=s.seed,
                                   top_k=s.top_k)
    path = _output(config, "spectra")
    dataset.to_netcdf(path)
    return {"path": str(path), **{name: fit_of(dataset, f"fit_{name}")
                                  for name in ("top", "lambda_min", "lambda_min_shift")}}


def run_nguyen(config: FiniteWidthConfig) -> dict:
    """`nguyen_lambda_min` of ``[nguyen]``, written as netCDF; returns the fit."""
    dataset = nguyen_lambda_min(config.nguyen)
    path = _output(config, "nguyen")
    dataset.to_netcdf(path)
    return {"path": str(path), "fit": fit_of(dataset)}


def _output(config: FiniteWidthConfig, name: str) -> Path:
    config.output.mkdir(parents=True, exist_ok=True)
    (config.output / OUTPUTS["config"]).write_text(json.dumps(config.to_dict(), indent=2))
    return config.output / OUTPUTS[name]
