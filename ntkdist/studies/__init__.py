"""Width studies beside the spectrum job: how far a finite network is from its infinite-width limit.

* `finite_width` — Monte Carlo over sampled networks on Ray: empirical NTK/NNGP means and covariances against the
  1/n theory of `ntkdist.theory.finite_width`, finite-width spectra against the infinite-width one, and Nguyen et
  al.'s λ_min growing linearly in the wide layer (report: `finite_width_report`; docs/finite-width.md);
* `linearity`    — the transition to linearity (Liu, Zhu, Belkin 2020): the Hessian's norm and the NTK's change in
  training against width, for linear and non-linear outputs and a bottleneck.

Each study is a validated config, a run that writes an xarray Dataset (netCDF) and a report with log–log figures.
"""

from .common import STUDY_KINDS, StudyConfig, study_kind


def load_study(path) -> StudyConfig:
    """Read and validate a study's TOML file as the study its ``[study] kind`` names."""
    from ..config import load_config

    kind = study_kind(path)
    if kind == "finite_width":
        from .finite_width import FiniteWidthConfig as model
    else:
        from .linearity import LinearityConfig as model
    return load_config(path, model=model)


__all__ = ["STUDY_KINDS", "StudyConfig", "load_study", "study_kind"]
