"""Slow reference computations started in background processes as soon as collection ends, once per test run.

Two session fixtures each spend over a minute of pure computation: the dense spectrum of the N = 8000 acceptance
matrix (LAPACK) and the neural-tangents peer's kernels (JAX). Started at the end of collection
(`tests/conftest.py`), they run while the first tests wait on Ray actors, Prefect servers and subprocesses, and
their fixtures only wait for the result.

One run, many processes: under pytest-xdist every worker collects every test and may need either result, so a
job belongs to the whole run, not to a process. The run has an id (`RUN_ENV`, set by the controlling process
before the workers start, which inherit it) and a directory; the first process to claim a job's name (an
exclusive create) starts it, every other process waits for the same files. The job's exit status lands in
``NAME.status`` only once its output is complete. The controlling process stops whatever is still running when
the whole run ends. Results travel as ``.npy``/``.npz`` files read with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The environment variable holding the test run's id (shared by pytest-xdist's controller and its workers).
RUN_ENV = "NTKDIST_TEST_RUN"

#: The dense spectrum of the N = 8000, d = 16 depth-3 ReLU NTK (`tests/linalg/conftest.relu_ntk_8000`).
EIGVALSH_8000 = ("import sys, numpy as np; from tests.linalg.conftest import relu_ntk; "
                 "np.save(sys.argv[1], np.linalg.eigvalsh(relu_ntk(8000, 16)))")


def begin_run() -> None:
    """Give this test run its id unless a controlling process already did (call in ``pytest_configure``)."""
    os.environ.setdefault(RUN_ENV, uuid.uuid4().hex[:12])


def run_directory() -> Path:
    """The directory the run's jobs write to (created on first use)."""
    begin_run()
    directory = Path(tempfile.gettempdir()) / f"ntkdist-background-{os.environ[RUN_ENV]}"
    directory.mkdir(exist_ok=True)
    return directory


@dataclass
class Job:
    """One job of the run, started by whichever process claimed it first; any process may wait for it."""

    name: str
    output: Path

    @property
    def _status(self) -> Path:
        return self.output.parent / f"{self.name}.status"

    def result(self, timeout: float = 900.0) -> Path:
        """Wait for the job; its output file (raises with the end of its stderr if it failed)."""
        deadline = time.monotonic() + timeout
        while not self._status.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"background job {self.name} gave no result within {timeout:.0f} s")
            time.sleep(0.2)
        status = self._status.read_text().strip()
        if status != "0":
            log = self.output.parent / f"{self.name}.stderr"
            raise RuntimeError(f"background job {self.name} failed ({status}): "
                               f"{log.read_text(errors='replace')[-3000:]}")
        return self.output


def start(name: str, argv: list[str], output_name: str) -> Job:
    """Start ``argv`` (run from the repository root) as the run's job ``name`` unless some process already did.

    ``argv`` must write its result to the path ``{output}`` stands for in it (its file name is ``output_name``).
    """
    directory = run_directory()
    job = Job(name, directory / output_name)
    try:
        claim = os.open(directory / f"{name}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return job
    command = " ".join(shlex.quote(part.replace("{output}", str(job.output))) for part in argv)
    status = shlex.quote(str(job._status))
    # The status file appears (by rename) only after the command exited: a waiter never reads a partial output.
    script = f"{command}; echo $? > {status}.partial && mv {status}.partial {status}"
    with open(directory / f"{name}.stderr", "w") as stderr:  # a file, not a pipe: a chatty job never blocks
        process = subprocess.Popen(["/bin/sh", "-c", script], cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr,
                                   start_new_session=True)
    os.write(claim, str(process.pid).encode())
    os.close(claim)
    return job


def start_eigvalsh_8000() -> Job:
    return start("eigvalsh_8000", [sys.executable, "-c", EIGVALSH_8000, "{output}"], "eigenvalues.npy")


def stop_all() -> None:
    """At the end of the whole run (in the controlling process only): stop what still runs, remove the files."""
    if os.environ.get("PYTEST_XDIST_WORKER") or RUN_ENV not in os.environ:
        return
    directory = Path(tempfile.gettempdir()) / f"ntkdist-background-{os.environ[RUN_ENV]}"
    for claim in directory.glob("*.claim"):
        text = claim.read_text().strip()
        if text.isdigit() and not claim.with_suffix(".status").exists():
            try:
                os.killpg(int(text), signal.SIGKILL)  # the shell and its command: their own session
            except ProcessLookupError:
                pass
    shutil.rmtree(directory, ignore_errors=True)
