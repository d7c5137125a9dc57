"""The finite-width flow: Monte Carlo over networks (Ray), finite-width spectra, Nguyen's λ_min, report.

One Prefect task per function of `ntkdist.studies.finite_width`; each writes its dataset (netCDF) into the
study's output folder and returns a small summary, and the report task reads them back. Run it with
``python -m flows.finite_width examples/finite-width.toml`` (embedded Prefect server and Ray).
"""

from __future__ import annotations

import sys

from prefect import flow, get_run_logger, task

from ntkdist.studies import finite_width, finite_width_report
from ntkdist.studies.finite_width import FiniteWidthConfig

from .artifacts import artifact_key, publish_report
from .spectrum import RETRIES


@task(name="monte-carlo", persist_result=False, **RETRIES)
def monte_carlo_task(config: dict) -> dict:
    return finite_width.run_monte_carlo(FiniteWidthConfig.from_dict(config))


@task(name="spectra", persist_result=False)
def spectra_task(config: dict) -> dict:
    return finite_width.run_spectra(FiniteWidthConfig.from_dict(config))


@task(name="nguyen", persist_result=False)
def nguyen_task(config: dict) -> dict:
    return finite_width.run_nguyen(FiniteWidthConfig.from_dict(config))


@task(name="report", persist_result=False)
def report_task(config: dict) -> dict:
    return finite_width_report.write_report(FiniteWidthConfig.from_dict(config))


@flow(name="finite_width", persist_result=False)
def finite_width_flow(config: dict) -> dict:
    """Run the finite-width study of a parsed configuration (validated before any work) and report it."""
    cfg = FiniteWidthConfig.from_dict(config)
    plain = cfg.to_dict()
    logger = get_run_logger()
    sampled = monte_carlo_task(plain)
    logger.info("Monte Carlo: %s", sampled["path"])
    spectra = spectra_task(plain)
    logger.info("spectra: top-%d slope %.3f ± %.3f", cfg.spectra.top_k, spectra["top"]["slope"],
                spectra["top"]["slope_error"])
    nguyen = nguyen_task(plain)
    logger.info("Nguyen λ_min slope %.3f ± %.3f", nguyen["fit"]["slope"], nguyen["fit"]["slope_error"])
    reported = report_task(plain)
    publish_report(artifact_key("finite-width", cfg.study.name), reported["markdown"],
                   {name: reported[name] for name in finite_width_report.FIGURES},
                   f"finite-width study {cfg.study.name}")
    return {"output": str(cfg.output), "monte_carlo": sampled, "spectra": spectra, "nguyen": nguyen,
            "report": reported["report"], "figures": {name: reported[name] for name in finite_width_report.FIGURES}}


if __name__ == "__main__":  # python -m flows.finite_width CONFIG.toml
    print(finite_width_flow(finite_width.load_study_config(sys.argv[1]).to_dict())["report"])
