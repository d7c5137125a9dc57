"""The linearity flow: run the width sweep of `ntkdist.studies.linearity`, then report it; one Prefect task each.

The run task writes the Dataset (``linearity.nc``) into the study's folder and the report task reads it back, so
the report can be re-made alone; only small summaries pass through Prefect.
"""

from __future__ import annotations


from prefect import flow, get_run_logger, task

from ntkdist.studies import linearity

from .artifacts import artifact_key, publish_report


@task(name="linearity-sweep", persist_result=False)
def sweep_task(config: dict) -> dict:
    cfg = linearity.LinearityConfig.from_dict(config)
    ds = linearity.run(cfg, progress=get_run_logger().info)
    path = linearity.write_dataset(ds, cfg.output)
    return {"dataset": str(path), "seconds": ds.attrs["seconds"]}


@task(name="linearity-report", persist_result=False)
def report_task(config: dict) -> dict:
    cfg = linearity.LinearityConfig.from_dict(config)
    return linearity.report(cfg, linearity.read_dataset(cfg.output))


@flow(name="linearity", persist_result=False)
def linearity_flow(config: dict) -> dict:
    """The Hessian's norm and the tangent kernel's change in training against width, and their report.

    Parameters
    ----------
    config : dict
        A parsed study configuration (examples/linearity.toml as a table); validated before any work.
    """
    cfg = linearity.LinearityConfig.from_dict(config)
    plain = cfg.to_dict()
    swept = sweep_task(plain)
    get_run_logger().info("dataset %s (%s s)", swept["dataset"], swept["seconds"])
    reported = report_task(plain)
    figures = {name: path for name, path in reported.items() if name not in ("markdown", "report")}
    publish_report(artifact_key("linearity", cfg.study.name), reported["markdown"], figures,
                   f"linearity study {cfg.study.name}")
    return {"dataset": swept["dataset"], **{k: v for k, v in reported.items() if k != "markdown"}}
