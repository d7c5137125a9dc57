"""Handing tasks to a pool of Ray actors that outlives lost worker processes and lost nodes.

The driver is the only scheduler. Actors are created with ``max_restarts`` (Ray starts a crashed actor's process
again, on another node if its node is gone) and ``max_task_retries = 0`` (Ray never re-runs a task by itself), so
the driver alone knows which blocks each task carried: when a task is lost to a system failure (the actor's
process or node died, or the actor is restarting) its blocks go back to the queue, and the actor gets no work
until a probe (`describe`) answers from its new process. An actor Ray gave up on is dropped and, while the
cluster has room for one, replaced. Writes are whole chunks and idempotent, so a block a dead actor half-wrote is
simply written again by whoever takes it next.

An error raised by the task's own code is no system failure: a `ntkdist.errors.UserError` (a full disk, an
unwritable store) or a bug in a kernel ends the build at once with its message (`runtime.get`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ClusterError
from .runtime import get

log = logging.getLogger("ntkdist.cluster")

#: Tasks in flight per actor: two hide the round trip between finishing one task and receiving the next.
IN_FLIGHT_PER_ACTOR = 2
#: A task whose actor died this many times is not handed out again (its blocks, not the cluster, are the likely
#: cause: e.g. a block too large for a worker's memory).
MAX_LOSSES_PER_TASK = 3
#: Seconds between probes of an actor that Ray is restarting (its calls fail at once meanwhile).
PROBE_INTERVAL_SECONDS = 1.0
#: With work left and no actor able to take it for this long, the build fails (the cluster has no room left).
STALL_SECONDS = 120.0


def system_errors() -> tuple[type, ...]:
    """Ray's exceptions for a task lost to the system (a process, node or owner that died), not to its code."""
    from ray import exceptions as rx

    names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError", "LocalRayletDiedError",
             "RaySystemError")
    return tuple(getattr(rx, name) for name in names if hasattr(rx, name))


@dataclass
class Slot:
    """One actor of the pool: its handle, what its current process said of itself, and its state."""

    actor: Any
    info: dict = field(default_factory=dict)
    state: str = "live"  # "live" takes work; "probing" waits for its restart; "dead" is dropped
    busy: int = 0

    def where(self) -> str:
        return f"pid {self.info.get('pid')} on node {str(self.info.get('node', '?'))[:12]}"


@dataclass
class PoolCounts:
    """What the pool survived: blocks requeued, actors restarted by Ray, actors replaced by new ones."""

    requeued: int = 0
    restarts: int = 0
    replaced: int = 0


class TaskPool:
    """Runs tasks ``(method, blocks)`` on actors, requeueing the tasks of actors lost to a system failure.

    ``start_actor()`` makes a new actor (used to replace one Ray gave up on) and ``has_room()`` says whether the
    cluster can host one more now. ``on_result(records)`` receives each task's result as it arrives.
    """

    def __init__(self, slots: list[Slot], *, start_actor: Callable[[], Any], has_room: Callable[[], bool]):
        self.slots = slots
        self.counts = PoolCounts()
        self._start_actor, self._has_room = start_actor, has_room
        self._in_flight: dict[Any, tuple[Slot, tuple | None]] = {}  # ref → (slot, task), task None for a probe
        self._probe_due: list[tuple[float, Slot]] = []
        self._losses: dict[int, int] = {}

    def run(self, tasks: list[tuple[str, list]], on_result: Callable[[list], None]) -> None:
        """Run every task to completion (or raise); results go to ``on_result`` in the order they arrive."""
        import ray

        queue = deque(tasks)
        last_progress = time.monotonic()
        self._fill(queue)
        while queue or self._work_in_flight():
            self._send_due_probes()
            if not self._in_flight:  # only probes waiting to be sent
                time.sleep(PROBE_INTERVAL_SECONDS)
                self._check_stall(queue, last_progress)
                continue
            done, _ = ray.wait(list(self._in_flight), num_returns=1, timeout=PROBE_INTERVAL_SECONDS)
            if not done:
                self._check_stall(queue, last_progress)
                continue
            slot, task = self._in_flight.pop(done[0])
            try:
                result = get(done[0])
            except system_errors() as exc:
                if _is_task_error(exc):
                    raise
                self._on_lost(slot, task, exc, queue)
            else:
                last_progress = time.monotonic()
                if task is None:
                    self._on_probe_answer(slot, result)
                else:
                    slot.busy -= 1
                    on_result(result)
            self._fill(queue)

    def live_infos(self, timeout: float = 30.0) -> list[dict]:
        """A fresh `describe()` of every live actor (what each process did), and the last known of the others,
        marked ``lost`` (an actor lost at this last moment too: the work is done, so that is no error)."""
        import ray

        asked = {slot.actor.describe.remote(): slot for slot in self.slots if slot.state == "live"}
        answered, _ = ray.wait(list(asked), num_returns=len(asked), timeout=timeout) if asked else ([], [])
        for ref in asked:
            try:
                asked[ref].info = get(ref) if ref in answered else asked[ref].info
            except system_errors():
                asked[ref].state = "probing"
            if ref not in answered:
                asked[ref].state = "probing"
        return [slot.info if slot.state == "live" else {**slot.info, "lost": True} for slot in self.slots]

    def kill_all(self) -> None:
        import ray

        for ref in self._in_flight:
            ray.cancel(ref, force=False)
        for slot in self.slots:
            ray.kill(slot.actor)  # no_restart: an actor Ray is restarting stops too

    # -- scheduling --------------------------------------------------------------------------------------------
    def _work_in_flight(self) -> bool:
        return any(task is not None for _, task in self._in_flight.values())

    def _fill(self, queue: deque) -> None:
        for slot in self.slots:
            while slot.state == "live" and slot.busy < IN_FLIGHT_PER_ACTOR and queue:
                task = queue.popleft()
                method, blocks = task
                self._in_flight[getattr(slot.actor, method).remote(blocks)] = (slot, task)
                slot.busy += 1

    def _on_lost(self, slot: Slot, task: tuple | None, exc: Exception, queue: deque) -> None:
        """A task or probe failed for a system reason: requeue the task, and find out what became of the actor."""
        from ray.exceptions import ActorUnavailableError

        if task is not None:
            slot.busy -= 1
            key = id(task)
            self._losses[key] = self._losses.get(key, 0) + 1
            if self._losses[key] >= MAX_LOSSES_PER_TASK:
                raise ClusterError(f"blocks {task[1]} lost their worker {MAX_LOSSES_PER_TASK} times (last: "
                                   f"{_short(exc)}); a worker may run out of memory on them: lower [kernel] block "
                                   "or raise the workers' memory, then re-run (finished blocks are kept)")
            queue.appendleft(task)
            self.counts.requeued += len(task[1])
            log.warning("actor %s lost a task (%s); %d block(s) requeued", slot.where(), _short(exc), len(task[1]))
        if slot.state == "dead":
            return
        if isinstance(exc, ActorUnavailableError) or task is not None:
            self._schedule_probe(slot)  # restarting (or about to be): ask again until it answers or dies
            return
        self._drop(slot, exc)

    def _schedule_probe(self, slot: Slot) -> None:
        if slot.state == "live":
            slot.state = "probing"
        if not any(s is slot for _, s in self._probe_due) and not any(
                s is slot and t is None for s, t in self._in_flight.values()):
            self._probe_due.append((time.monotonic() + PROBE_INTERVAL_SECONDS, slot))

    def _send_due_probes(self) -> None:
        now = time.monotonic()
        due = [slot for when, slot in self._probe_due if when <= now]
        self._probe_due = [(when, slot) for when, slot in self._probe_due if when > now]
        for slot in due:
            if slot.state != "dead":
                log.debug("probing actor %s", slot.where())
                self._in_flight[slot.actor.describe.remote()] = (slot, None)

    def _on_probe_answer(self, slot: Slot, info: dict) -> None:
        if slot.state == "probing" and slot.info and info.get("pid") != slot.info.get("pid"):
            self.counts.restarts += 1
            log.warning("actor %s was restarted as pid %s on node %s", slot.where(), info.get("pid"),
                        str(info.get("node"))[:12])
        slot.info, slot.state = info, "live"

    def _drop(self, slot: Slot, exc: Exception) -> None:
        """Ray gave up on this actor: drop it, and start a new one while the cluster has room."""
        slot.state = "dead"
        log.warning("actor %s is gone for good (%s)", slot.where(), _short(exc))
        if not self._has_room():
            log.warning("no room in the Ray cluster for a replacement; continuing with %d actor(s)",
                        sum(s.state != "dead" for s in self.slots))
            return
        replacement = Slot(self._start_actor(), state="probing")
        self.slots.append(replacement)
        self.counts.replaced += 1
        self._in_flight[replacement.actor.describe.remote()] = (replacement, None)

    def _check_stall(self, queue: deque, last_progress: float) -> None:
        if any(s.state == "live" for s in self.slots) or not queue:
            return
        if all(s.state == "dead" for s in self.slots) or time.monotonic() - last_progress > STALL_SECONDS:
            raise ClusterError(f"no worker can run the {len(queue)} task(s) left (waited up to {STALL_SECONDS:.0f} "
                               "s): every actor is dead or waiting for room to restart; add nodes (or lower "
                               "[cluster] workers) and re-run (finished blocks are kept)")


def _is_task_error(exc: Exception) -> bool:
    """True for an error raised by the task's own code (Ray wraps it in a `RayTaskError`)."""
    from ray.exceptions import RayTaskError

    return isinstance(exc, RayTaskError)


def _short(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
