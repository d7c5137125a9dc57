"""The progress of a Gram build, for people: a tqdm bar on a terminal and a Prefect progress artifact in a flow run.

`build_gram(progress=…)` calls ``start(total_blocks, done_blocks)`` once, ``advance(blocks, entries, nbytes)``
as each task's result arrives and ``close()`` at the end; `BuildProgress` implements that protocol.

- The bar (tqdm) shows the upper blocks done of all of them, and entries/s and MB/s of the blocks computed in
  this run (both triangles, as stored) in its postfix. It is drawn only when its stream is a terminal: a build
  under Prefect, in a batch job or in a test writes nothing there, and the log keeps its "built k/n" lines.
- Inside a Prefect flow run it also keeps a progress artifact (percent of blocks done) up to date, at most every
  `ARTIFACT_SECONDS`, so the Prefect UI shows how far a long build is without a terminal. A failure to reach the
  Prefect API is logged once and stops only the artifact, never the build.
"""

from __future__ import annotations

import logging
import os
import sys
import time

log = logging.getLogger("ntkdist.cluster")

#: The Prefect artifact is updated at most this often (each update is one API call).
ARTIFACT_SECONDS = 5.0
#: Key of the Prefect artifact (lowercase letters, digits and dashes, as Prefect requires).
ARTIFACT_KEY = "ntkdist-gram-build"


#: Set (to anything but "") by ``ntkdist run --quiet``: no progress bars, in this process and the flow's.
QUIET_SETTING = "NTKDIST_QUIET"


class BuildProgress:
    """Progress of a Gram build as a tqdm bar (on a terminal) and a Prefect progress artifact (in a flow run).

    Parameters
    ----------
    description : str
        The bar's label and the artifact's description.
    stream : text stream, optional
        Where the bar is drawn (default ``sys.stderr``).
    show : bool or None
        Draw the bar: True always, False never, None (default) only when ``stream`` is a terminal (``isatty()``)
        and `QUIET_SETTING` is not set (``ntkdist run --quiet`` sets it).
    clock : callable
        Seconds, monotonic (default `time.monotonic`); the rates and the artifact's pace read it.
    artifact : bool or None
        Keep a Prefect progress artifact: None (default) inside a Prefect flow or task run only.
    """

    def __init__(self, description: str = "gram blocks", *, stream=None, show: bool | None = None,
                 clock=time.monotonic, artifact: bool | None = None):
        self.description = description
        self._stream = sys.stderr if stream is None else stream
        self.show = _shown(self._stream, show)
        self._clock = clock
        self._want_artifact = _in_prefect_run() if artifact is None else bool(artifact)
        self.total = self.done = self.entries = self.nbytes = 0
        self._started = None
        self._bar = None
        #: The Prefect artifact's id once created (None outside a flow run).
        self.artifact_id = None
        #: Updates of the artifact sent so far (its creation not counted).
        self.artifact_updates = 0
        self._artifact_at = None

    # -- the protocol of build_gram ----------------------------------------------------------------------------
    def start(self, total_blocks: int, done_blocks: int) -> None:
        """The build has ``total_blocks`` upper blocks, ``done_blocks`` of them already stored (a resumed build)."""
        from tqdm import tqdm

        self.total, self.done = int(total_blocks), int(done_blocks)
        self._started = self._clock()
        # disable is decided here from `show`, not by tqdm's own TTY test, so the rule is ours and testable.
        self._bar = tqdm(total=self.total, initial=self.done, desc=self.description, unit="block",
                         file=self._stream, disable=not self.show, dynamic_ncols=True)
        if self._want_artifact:
            self._create_artifact()

    def advance(self, blocks: int, entries: int, nbytes: int) -> None:
        """``blocks`` more upper blocks are stored, holding ``entries`` Gram entries (``nbytes`` bytes) in all."""
        self.done += int(blocks)
        self.entries += int(entries)
        self.nbytes += int(nbytes)
        self._bar.set_postfix_str(self.postfix(), refresh=False)
        self._bar.update(int(blocks))
        if self.artifact_id is not None and self._clock() - self._artifact_at >= ARTIFACT_SECONDS:
            self._update_artifact()

    def close(self) -> None:
        """The build ended (finished or failed): the bar closes, the artifact shows where it stopped."""
        if self._bar is not None:
            self._bar.set_postfix_str(self.postfix(), refresh=False)
            self._bar.close()
        if self.artifact_id is not None:
            self._update_artifact()

    # -- what is shown -----------------------------------------------------------------------------------------
    def rates(self) -> tuple[float, float]:
        """(entries/s, MB/s) of the blocks stored since `start` (0 before any time has passed)."""
        seconds = 0.0 if self._started is None else self._clock() - self._started
        if seconds <= 0:
            return 0.0, 0.0
        return self.entries / seconds, self.nbytes / seconds / 1e6

    def postfix(self) -> str:
        entries_per_second, megabytes_per_second = self.rates()
        return f"{entries_per_second:.3g} entries/s, {megabytes_per_second:.3g} MB/s"

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else 100.0 * self.done / self.total

    # -- the Prefect artifact ----------------------------------------------------------------------------------
    def _artifact_text(self) -> str:
        return f"{self.description}: {self.done}/{self.total} blocks, {self.postfix()}"

    def _create_artifact(self) -> None:
        from prefect.artifacts import create_progress_artifact

        self._call_prefect(lambda: setattr(self, "artifact_id", create_progress_artifact(
            progress=self.percent, key=ARTIFACT_KEY, description=self._artifact_text())))
        self._artifact_at = self._clock()

    def _update_artifact(self) -> None:
        from prefect.artifacts import update_progress_artifact

        self._call_prefect(lambda: update_progress_artifact(self.artifact_id, progress=self.percent,
                                                            description=self._artifact_text()))
        self.artifact_updates += self.artifact_id is not None
        self._artifact_at = self._clock()

    def _call_prefect(self, call) -> None:
        try:
            call()
        except Exception as exc:  # the API is away or refuses: the build goes on without its artifact
            log.warning("progress artifact dropped: Prefect API call failed (%s)", exc)
            self._want_artifact = False
            self.artifact_id = None


class PassProgress:
    """The passes of a solve over K as a tqdm bar (drawn by the rule of `BuildProgress`): each pass's width (the
    vectors multiplied at once) and seconds. Call it with ``(width, seconds)`` after each pass (it is a
    `ntkdist.linalg.passes.PassLog` ``on_pass``), and `close` it when the solve ends."""

    def __init__(self, total_passes: int, description: str = "solver passes", *, stream=None,
                 show: bool | None = None):
        from tqdm import tqdm

        stream = sys.stderr if stream is None else stream
        self.show = _shown(stream, show)
        self.passes = 0
        self._bar = tqdm(total=int(total_passes), desc=description, unit="pass", file=stream,
                         disable=not self.show, dynamic_ncols=True)

    def __call__(self, width: int, seconds: float) -> None:
        self.passes += 1
        self._bar.set_postfix_str(f"{width} vectors, {seconds:.3g} s", refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def _shown(stream, show: bool | None) -> bool:
    """Draw a bar: as asked, else only on a terminal and without `QUIET_SETTING`."""
    if show is None:
        return _is_terminal(stream) and not os.environ.get(QUIET_SETTING)
    return bool(show)


def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _in_prefect_run() -> bool:
    """True inside a Prefect flow run or task run (the artifact is then linked to it)."""
    try:
        from prefect.context import FlowRunContext, TaskRunContext
    except ImportError:  # pragma: no cover - prefect is a dependency
        return False
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None
