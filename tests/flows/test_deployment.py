"""deploy/prefect.yaml as users run it: a Prefect server on loopback, the deployment registered from the file, a
process worker that runs it, its artifact, and a second identical run that recomputes nothing.

Everything is real: `prefect server start`, `prefect deploy`, `prefect worker start`, `prefect deployment run`,
each a subprocess with a Prefect home of the test's own. Only the deployment's parameters are made small (and its
store put under the test's directory), and the pull step points at this checkout instead of /opt/ntkdist.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from ntkdist.store import RunStore

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
FLOW_RUN_ID = re.compile(r"UUID\W+([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _api(url: str, path: str, body: dict | None = None):
    request = urllib.request.Request(f"{url}{path}", data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"},
                                     method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _prefect(env: dict, *args: str, timeout: float = 300) -> str:
    done = subprocess.run([PREFECT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture
def prefect_api(tmp_path):
    """A Prefect server on 127.0.0.1 with its own home; yields (api url, environment for the CLI)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=url,
               PREFECT_SERVER_ANALYTICS_ENABLED="false", NTKDIST_STORAGE=str(tmp_path / "storage"))
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240  # the first start migrates a new database: slow on two busy cores
        while True:
            try:
                _api(url, "/health")
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the Prefect server did not answer in 240 s"
                time.sleep(1)
        yield url, env
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _deployment_file(tmp_path: Path) -> tuple[Path, dict]:
    """The repository's prefect.yaml, pointed at this checkout and a small run stored under ``tmp_path``."""
    spec = yaml.safe_load((REPO / "deploy" / "prefect.yaml").read_text())
    spec["pull"] = [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    [deployment] = spec["deployments"]
    config = deployment["parameters"]["config"]
    config["run"]["store"] = str(tmp_path / "runs" / "weekly.zarr")
    config["data"]["n"] = 400
    config["kernel"]["block"] = 128
    config["cluster"] = {"address": "", "workers": 2, "device": "cpu"}  # an embedded Ray in the flow run
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path, deployment


def _run_deployment(url: str, env: dict, name: str) -> dict:
    """Trigger one run of the deployment, let a worker take it, and return the finished flow run."""
    out = _prefect(env, "deployment", "run", name)
    flow_run_id = FLOW_RUN_ID.search(out).group(1)
    _prefect(env, "worker", "start", "--pool", "ntkdist-pool", "--run-once", timeout=600)
    deadline = time.monotonic() + 120
    while (run := _api(url, f"/flow_runs/{flow_run_id}"))["state"]["type"] not in ("COMPLETED", "FAILED", "CRASHED"):
        assert time.monotonic() < deadline, f"flow run still {run['state']['type']}"
        time.sleep(1)
    return run


@pytest.mark.slow
def test_the_deployment_runs_on_a_worker_and_a_second_run_recomputes_nothing(tmp_path, prefect_api):
    url, env = prefect_api
    path, deployment = _deployment_file(tmp_path)
    assert deployment["schedules"][0]["cron"] == "0 3 * * 1"
    _prefect(env, "work-pool", "create", "ntkdist-pool", "--type", "process")
    _prefect(env, "--no-prompt", "deploy", "--all", "--prefect-file", str(path))
    [registered] = _api(url, "/deployments/filter", {})
    assert registered["name"] == "weekly-demo-spectrum" and registered["work_pool_name"] == "ntkdist-pool"
    assert registered["global_concurrency_limit"]["limit"] == 1  # one flow run of this run name at a time
    assert registered["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    assert registered["schedules"][0]["schedule"]["cron"] == "0 3 * * 1"
    name = "ntkdist-spectrum/weekly-demo-spectrum"

    first = _run_deployment(url, env, name)
    assert first["state"]["type"] == "COMPLETED", first["state"]
    [artifact] = _api(url, "/artifacts/filter", {"artifacts": {"key": {"any_": ["ntkdist-weekly-demo"]}}})
    assert "Theory against the computed spectrum" in artifact["data"]
    store = RunStore.open(tmp_path / "runs" / "weekly.zarr")
    assert not store.missing_blocks() and store.stage("report") is not None
    chunks = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "weekly.zarr" / "gram").rglob("c/*/*")}
    solved = store.stage("solve")["completed"]

    second = _run_deployment(url, env, name)
    assert second["state"]["type"] == "COMPLETED", second["state"]
    assert {p: p.stat().st_mtime_ns for p in chunks} == chunks  # no block was written again
    assert store.stage("solve")["completed"] == solved  # nor the spectrum solved again
    assert second["total_run_time"] < first["total_run_time"]
