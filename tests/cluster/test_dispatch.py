"""The fault-tolerant task pool on the session's real local Ray, with a small actor of its own: an actor Ray gave
up on is dropped and replaced, the build fails clearly when none can run, and an error of the task's own code
fails it at once without a requeue."""

from __future__ import annotations

import os

import pytest

from ntkdist.cluster.dispatch import Slot, TaskPool
from ntkdist.errors import ClusterError, ConfigError


def _counter_actor(ray):
    """A stand-in worker: ``describe`` says its pid; ``work(items)`` returns them, or raises the error asked for."""

    @ray.remote(num_cpus=0.25, max_restarts=0, max_task_retries=0)
    class Counter:
        def describe(self) -> dict:
            return {"pid": os.getpid(), "node": "here"}

        def work(self, items: list) -> list:
            if items == ["bug"]:
                raise ZeroDivisionError("a bug in the task's own code")
            if items == ["user"]:
                raise ConfigError("[kernel] block: a user error raised in the task")
            return items

    return Counter


def test_an_actor_gone_for_good_is_replaced_and_its_tasks_requeued(ray_local):
    Counter = _counter_actor(ray_local)
    pool = TaskPool([Slot(Counter.remote())], start_actor=Counter.remote, has_room=lambda: True)
    results = []

    def on_result(items):
        results.extend(items)
        if len(results) == 1:
            ray_local.kill(pool.slots[0].actor, no_restart=True)  # Ray will not restart it: gone for good

    pool.run([("work", [k]) for k in range(8)], on_result)
    assert sorted(results) == list(range(8))
    assert pool.counts.replaced == 1 and pool.counts.requeued >= 1
    assert [slot.state for slot in pool.slots] == ["dead", "live"]
    pool.kill_all()


def test_no_actor_left_and_no_room_for_one_is_a_clear_error(ray_local):
    Counter = _counter_actor(ray_local)
    pool = TaskPool([Slot(Counter.remote())], start_actor=Counter.remote, has_room=lambda: False)

    def on_result(items):
        ray_local.kill(pool.slots[0].actor, no_restart=True)

    with pytest.raises(ClusterError, match="no worker can run the .* task"):
        pool.run([("work", [k]) for k in range(6)], on_result)
    pool.kill_all()


@pytest.mark.parametrize("task, error", [(["bug"], ZeroDivisionError), (["user"], ConfigError)])
def test_an_error_of_the_task_itself_fails_at_once_without_a_requeue(ray_local, task, error):
    Counter = _counter_actor(ray_local)
    pool = TaskPool([Slot(Counter.remote())], start_actor=Counter.remote, has_room=lambda: True)
    with pytest.raises(error):
        pool.run([("work", task), ("work", [1])], lambda items: None)
    assert pool.counts.requeued == 0 and pool.counts.replaced == 0
    pool.kill_all()
