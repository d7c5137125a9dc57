"""The spectrum flow: prepare → build → solve → compare → report, one Prefect task per stage of `ntkdist.pipeline`.

Each task reads and writes the run store and returns a small summary (no arrays pass through Prefect), so a
task retried after a crash picks up where the store says it stopped. Run it with ``ntkdist run CONFIG.toml``
(embedded Prefect server and Ray) or deploy it with ``deploy/prefect.yaml``.
"""

from __future__ import annotations


from prefect import flow, get_run_logger, task

from ntkdist import pipeline
from ntkdist.config import Config
from ntkdist.errors import UserError

from .artifacts import artifact_key, publish_report


def _retry_unless_user_error(task, task_run, state) -> bool:
    """Retry crashes (a lost worker, a full disk that was freed), never bad input."""
    try:
        state.result()
    except UserError:
        return False
    except Exception:
        return True
    return False


#: Retries of a task that may meet a crash (a lost worker, a full disk that was freed): never for bad input. Every
#: task given retries takes them from here, so it also takes the condition (tests/flows/test_retries.py checks).
RETRIES = {"retries": 2, "retry_delay_seconds": 5, "retry_condition_fn": _retry_unless_user_error}


@task(name="prepare", persist_result=False)
def prepare_task(config: dict, overwrite: bool = False, data_digest: str | None = None) -> dict:
    return pipeline.prepare(Config.from_dict(config), overwrite=overwrite, data_digest=data_digest)


@task(name="build", persist_result=False, **RETRIES)
def build_task(config: dict) -> dict:
    return pipeline.build(Config.from_dict(config))


@task(name="solve", persist_result=False)
def solve_task(config: dict) -> dict:
    return pipeline.solve(Config.from_dict(config))


@task(name="compare", persist_result=False)
def compare_task(config: dict) -> dict:
    return pipeline.compare(Config.from_dict(config))


@task(name="report", persist_result=False)
def report_task(config: dict) -> dict:
    return pipeline.report(Config.from_dict(config))


@flow(name="ntkdist-spectrum", persist_result=False)
def spectrum_flow(config: dict, overwrite: bool = False, data_digest: str | None = None) -> dict:
    """Compute a run's Gram matrix and spectrum and report them.

    Parameters
    ----------
    config : dict
        A parsed configuration (the TOML document as a table); validated before any work.
    overwrite : bool
        Replace an existing store of a different configuration instead of refusing.
    data_digest : str, optional
        SHA-256 of the data set when the caller has already computed it (saves one pass over the data).
    """
    cfg = Config.from_dict(config)
    logger = get_run_logger()
    plain = cfg.to_dict()
    prepared = prepare_task(plain, overwrite, data_digest)
    logger.info("store %s (%s)", prepared["store"], "resumed" if prepared["resumed"] else "new")
    built = build_task(plain)
    logger.info("gram: %s blocks computed, %s already stored", built.get("computed_blocks"), built.get("skipped_blocks"))
    solved = solve_task(plain)
    compared = compare_task(plain)
    logger.info("theory: %s predictions, %s skipped", compared.get("predictions"), compared.get("skipped"))
    reported = report_task(plain)
    figures = {name: path for name, path in reported.items() if name not in ("store", "markdown")}
    publish_report(artifact_key("ntkdist", cfg.run.name), reported["markdown"], figures,
                   f"spectrum of run {cfg.run.name}")
    return {"store": prepared["store"], **figures, "build": built, "solve": solved, "compare": compared}
