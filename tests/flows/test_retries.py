"""Prefect retries crashes, never bad input: a `UserError` in a retried task runs once (real Prefect, real Ray)."""

from __future__ import annotations

import pytest
from prefect import Task, flow, task

import flows.spectrum as spectrum
from ntkdist import pipeline
from ntkdist.errors import ConfigError, StoreError


def _retried_tasks():
    return [value for value in vars(spectrum).values() if isinstance(value, Task) and value.retries]


def test_every_retried_task_takes_the_user_error_condition():
    tasks = _retried_tasks()
    assert tasks, "no task of flows/spectrum.py retries; this test has nothing to check"
    for retried in tasks:
        assert retried.retry_condition_fn is spectrum._retry_unless_user_error, retried.name


def _attempts(retried, config: dict, expected: type[Exception]) -> int:
    """Run ``retried`` in a real flow; return how many times Prefect ran it (it must end in ``expected``)."""
    from prefect.client.orchestration import get_client

    @flow(name="ntkdist-retry-probe", persist_result=False)
    def probe(config: dict) -> dict:
        state = retried(config, return_state=True)
        error = state.result(raise_on_failure=False)
        return {"task_run_id": state.state_details.task_run_id, "failed": state.is_failed(), "error": error}

    outcome = probe(config)
    assert outcome["failed"] and isinstance(outcome["error"], expected), outcome
    with get_client(sync_client=True) as client:
        return client.read_task_run(outcome["task_run_id"]).run_count


@pytest.mark.parametrize("cluster, expected", [
    ({"device": "gpu"}, ConfigError),           # the Ray cluster cannot host the workers
    ({"workers": 2}, StoreError),               # no store: the prepare stage never ran
])
def test_a_user_error_in_a_retried_task_is_attempted_once(prefect_server, ray_local, make_config, cluster,
                                                          expected):
    config = make_config(data={"n": 200}, kernel={"block": 100}, cluster=cluster)
    if expected is ConfigError:
        pipeline.prepare(make_config(data={"n": 200}, kernel={"block": 100}))  # same store, a possible cluster
    for retried in _retried_tasks():
        assert _attempts(retried, config.to_dict(), expected) == 1, retried.name


def test_a_crash_in_a_retried_task_is_retried(prefect_server):
    """The condition itself: anything but a UserError is retried (a crash may not recur)."""
    calls = []

    @task(name="crashes-once", persist_result=False,
                   **{**spectrum.RETRIES, "retry_delay_seconds": 0})
    def crashes_once():
        calls.append(1)
        if len(calls) == 1:
            raise OSError("No space left on device")
        return "done"

    @flow(name="ntkdist-retry-crash", persist_result=False)
    def probe():
        return crashes_once()

    assert probe() == "done" and len(calls) == 2
