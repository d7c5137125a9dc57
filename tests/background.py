"""Slow reference computations started in background processes as soon as collection ends.

The suite keeps about 0.8 of its 2 cores idle on average (tests waiting on Ray actors, Prefect servers and
subprocesses), while two session fixtures each spend over a minute of pure computation: the dense spectrum of the
N = 8000 acceptance matrix (LAPACK) and the neural-tangents peer's kernels (JAX). Started at the end of collection
(`tests/conftest.py`), they run in that idle time, and their fixtures only wait for the result. A fixture whose
job was not started (a selection that collected it late, say) runs the same command itself. Results travel as
``.npy``/``.npz`` files read with ``allow_pickle=False``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: The dense spectrum of the N = 8000, d = 16 depth-3 ReLU NTK (`tests/linalg/conftest.relu_ntk_8000`).
EIGVALSH_8000 = ("import sys, numpy as np; from tests.linalg.conftest import relu_ntk; "
                 "np.save(sys.argv[1], np.linalg.eigvalsh(relu_ntk(8000, 16)))")


@dataclass
class Job:
    """One background process and the file it writes."""

    process: subprocess.Popen
    output: Path
    log: Path

    def result(self, timeout: float = 900.0) -> Path:
        """Wait for the process; its output file (raises with the end of its stderr if it failed)."""
        self.process.wait(timeout=timeout)
        if self.process.returncode != 0:
            raise RuntimeError(f"background job failed ({self.process.returncode}): "
                               f"{self.log.read_text(errors='replace')[-3000:]}")
        return self.output


_jobs: dict[str, Job] = {}


def start(name: str, argv: list[str], output: Path) -> Job:
    """Start ``argv`` (run from the repository root) under ``name`` unless it is running already."""
    if name not in _jobs:
        log = output.with_name(output.name + ".stderr")  # a file, not a pipe: a chatty job never blocks on it
        with open(log, "w") as stderr:
            process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
        _jobs[name] = Job(process, output, log)
    return _jobs[name]


def start_eigvalsh_8000() -> Job:
    output = Path(tempfile.mkdtemp(prefix="ntkdist-eigvalsh-")) / "eigenvalues.npy"
    return start("eigvalsh_8000", [sys.executable, "-c", EIGVALSH_8000, str(output)], output)


def stop_all() -> None:
    """Stop what is still running (a session that ended early, or was interrupted)."""
    for job in _jobs.values():
        if job.process.poll() is None:
            job.process.kill()
            job.process.wait()
