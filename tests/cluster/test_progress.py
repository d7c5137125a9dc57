"""`BuildProgress`: the bar on a terminal only, its rates on a given clock, and a real Prefect progress artifact
read back from the test server."""

from __future__ import annotations

import io

import pytest

from ntkdist.cluster import BuildProgress
from ntkdist.cluster.progress import ARTIFACT_KEY, ARTIFACT_SECONDS


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    """A text stream that says whether it is a terminal."""

    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def run_build(progress: BuildProgress, clock: Clock) -> None:
    """A resumed build of 10 blocks (2 stored before): 8 blocks of 1000 entries (4000 bytes) each in 3 seconds."""
    progress.start(10, 2)
    for blocks in (3, 3, 2):
        clock.now += 1.0
        progress.advance(blocks, 1000 * blocks, 4000 * blocks)
    progress.close()


@pytest.mark.parametrize("tty", [True, False])
def test_the_bar_is_drawn_on_a_terminal_only(tty):
    stream, clock = Terminal(tty), Clock()
    progress = BuildProgress("build t", stream=stream, clock=clock, artifact=False)
    assert progress.show is tty
    run_build(progress, clock)
    assert progress.done == 10 and progress.percent == 100.0
    text = stream.getvalue()
    if tty:
        assert "build t" in text and "10/10" in text and "2.67e+03 entries/s, 0.0107 MB/s" in text
    else:
        assert text == ""


def test_show_overrides_the_terminal_test_both_ways():
    assert BuildProgress(stream=Terminal(False), show=True, artifact=False).show is True
    assert BuildProgress(stream=Terminal(True), show=False, artifact=False).show is False
    assert BuildProgress(stream=object(), artifact=False).show is False  # a stream without isatty


def test_rates_count_this_runs_blocks_on_the_given_clock():
    clock = Clock()
    progress = BuildProgress(stream=Terminal(False), clock=clock, artifact=False)
    progress.start(6, 1)
    assert progress.rates() == (0.0, 0.0)
    clock.now += 4.0
    progress.advance(2, 2_000_000, 16_000_000)
    assert progress.rates() == (500_000.0, 4.0) and progress.percent == 50.0
    progress.close()


def test_outside_prefect_there_is_no_artifact():
    progress = BuildProgress(stream=Terminal(False))
    progress.start(1, 0)
    progress.advance(1, 1, 8)
    progress.close()
    assert progress.artifact_id is None


def test_a_flow_run_gets_a_progress_artifact_updated_at_a_bounded_pace(prefect_server):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId
    from prefect.runtime import flow_run

    clock = Clock()

    @flow(name="progress-artifact")
    def build_flow():
        progress = BuildProgress("build t", stream=Terminal(False), clock=clock)
        progress.start(10, 2)
        for blocks in (1,) * 8:
            clock.now += ARTIFACT_SECONDS / 2  # an update every second advance, not every one
            progress.advance(blocks, 100, 800)
        progress.close()
        return progress.artifact_id, progress.artifact_updates, flow_run.id

    artifact_id, updates, run_id = build_flow()
    assert artifact_id is not None and updates == 4 + 1  # four on the clock, one at close
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id])))
    assert artifact.type == "progress" and artifact.key == ARTIFACT_KEY
    assert float(artifact.data) == 100.0 and str(artifact.flow_run_id) == str(run_id)
    assert "10/10 blocks" in artifact.description


def test_the_solver_passes_draw_one_step_each_with_their_width():
    import numpy as np

    from ntkdist.cluster import PassProgress
    from ntkdist.linalg import DenseOperator
    from ntkdist.linalg.passes import PassLog
    from ntkdist.linalg.spectrum import solve_spectrum

    rng = np.random.default_rng(0)
    A = rng.standard_normal((400, 400))
    stream = io.StringIO()
    progress = PassProgress(12, "solve t", stream=stream, show=True)
    log = PassLog(on_pass=progress)
    solution = solve_spectrum(DenseOperator(A @ A.T), method="krylov", k=5, tol=1e-6, max_passes=12, log=log)
    progress.close()
    assert progress.passes == log.passes == solution.passes > 0
    last = stream.getvalue().replace("\r", "\n").strip().splitlines()[-1]
    assert f"{log.passes}/12" in last and f"{log.widths[-1]} vectors" in last


def test_quiet_hides_the_pass_bar_on_a_terminal(monkeypatch):
    from ntkdist.cluster import PassProgress
    from ntkdist.cluster.progress import QUIET_SETTING

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert PassProgress(3, stream=Terminal()).show
    monkeypatch.setenv(QUIET_SETTING, "1")
    assert not PassProgress(3, stream=Terminal()).show
