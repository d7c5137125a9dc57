"""SIGTERM, as a scheduler or `kill` sends it, stops `ntkdist run` cleanly: the embedded Prefect server and the
Ray processes the run started exit with it, the status is 143, and a re-run resumes and finishes.

Two phases, two handlers: while the embedded Prefect server starts, ntkdist's own (`cli._unwind_on_sigterm`);
inside the flow run, once Ray runs, Prefect's engine's, which marks the run crashed and exits with 15, reported
as 143 too. (Mid-solve, Ray's native handler may end the process with SIGABRT after the same shutdown; checked
by hand, not here: it needs a solve long enough to be caught in.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ntkdist.store import RunStore
from tests.helpers import alive, descendants, write_cpu_run_config

REPO = Path(__file__).resolve().parents[1]


#: Prefect settings the run may inherit: its home and what tests/conftest.py sets for every test.
KEPT_PREFECT = ("PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_LOGGING_EXTRA_LOGGERS")


def own_services_env() -> dict:
    """This process's environment as a user's shell would have it: no Prefect setting but its home (a fixture's
    server address or log level would reach the run and, with WARNING, hide the log lines the test waits for), no
    quiet flag, no Ray address, so the run starts its own embedded services."""
    return {k: v for k, v in os.environ.items()
            if (not k.startswith("PREFECT_") or k in KEPT_PREFECT) and k not in ("NTKDIST_QUIET", "RAY_ADDRESS")}


def started(phase: str, lines: list[str], family: dict[int, str]) -> bool:
    """Whether the run is in ``phase``: "prefect" while the embedded Prefect server starts (a Python child, no Ray
    yet: ntkdist's own handler; killed outright, that server outlived the run), "ray" once Ray's raylet runs below
    the driver (inside the flow run: Prefect's handler)."""
    if phase == "prefect":
        return (any("Starting temporary server" in line for line in lines)
                and any(name.startswith("python") for name in family.values()))
    return "raylet" in family.values()


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["prefect", "ray"])
def test_sigterm_stops_the_run_with_its_services_and_a_rerun_finishes(tmp_path, phase):
    config, store = write_cpu_run_config(tmp_path, "terminated", n=600, block=200)
    proc = subprocess.Popen([sys.executable, "-m", "ntkdist.cli", "run", str(config)], cwd=REPO,
                            env=own_services_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    family: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            family = descendants(proc.pid)
            if started(phase, lines, family):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "".join(lines)[-3000:]
        assert any(name.startswith("python") for name in family.values()), family  # the Prefect server
        assert ("raylet" in family.values()) == (phase == "ray"), family
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM, "".join(lines)[-3000:]
        # Everything the run started goes with it (Ray's processes may take a few seconds after the driver).
        end = time.monotonic() + 120
        while any(alive(pid) for pid in family) and time.monotonic() < end:
            time.sleep(0.5)
        assert not {pid: name for pid, name in family.items() if alive(pid)}
    finally:  # whatever the outcome, nothing the run started outlives the test (orphans leave the tree: `family`)
        for pid in {proc.pid, *family, *descendants(proc.pid)}:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        proc.wait(timeout=30)
    if phase == "prefect":
        return  # nothing was built yet; a re-run after SIGTERM mid-build is the other case
    rerun = subprocess.run([sys.executable, "-m", "ntkdist.cli", "run", str(config), "--quiet"], cwd=REPO,
                           env=own_services_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert RunStore.open(str(store)).missing_blocks() == []
