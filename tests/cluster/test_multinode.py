"""The build on a real multi-node Ray cluster on loopback: three nodes (head and two more), each with 2 CPUs and 2
logical GPUs (`ray.cluster_utils.Cluster`). One actor lands per GPU, and the build finishes by itself when a
worker process is killed or a node is removed mid-way, without recomputing a block it had recorded.

The cluster is shared by the module (starting it costs tens of seconds on two cores); the node-removal test runs
last because it leaves two nodes. The session's embedded Ray, if one was running, is stopped meanwhile and started
again afterwards.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

import ntkdist
from ntkdist import pipeline
from ntkdist.cluster import build_gram
from ntkdist.cluster.verify import verify_in_process
from ntkdist.store import RunStore

from .test_build import descendants

pytestmark = pytest.mark.slow

NODES, GPUS_PER_NODE, CPUS_PER_NODE = 3, 2, 2


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    from ntkdist.cluster import start_local_ray
    from ntkdist.cluster.runtime import _loopback_only

    had_local = ray.is_initialized()
    if had_local:
        ray.shutdown()
    with _loopback_only():  # every node binds 127.0.0.1 only, as the embedded instance does
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": CPUS_PER_NODE, "num_gpus": GPUS_PER_NODE,
                                                              "include_dashboard": False})
        for _ in range(NODES - 1):
            nodes.add_node(num_cpus=CPUS_PER_NODE, num_gpus=GPUS_PER_NODE)
        ray.init(address=nodes.address, logging_level="WARNING")
    yield nodes
    ray.shutdown()
    nodes.shutdown()
    if had_local:
        start_local_ray(num_cpus=2, num_gpus=0)


@pytest.fixture
def store_of(make_config):
    """A prepared store of many small blocks (slow enough to be interrupted mid-way with a small N)."""
    def make(n: int = 400, block: int = 20) -> RunStore:
        config = make_config(data={"n": n, "dim": 3}, kernel={"block": block}, network={"depth": 3})
        pipeline.prepare(config)
        return RunStore.open(config.store_location, mode="r+"), config

    return make


class FaultAfter:
    """A progress hook that, once ``after`` blocks have arrived and some are recorded, notes what the manifest
    records and the mtimes of those blocks' chunks, then injects ``fault()``."""

    def __init__(self, store: RunStore, after: int, fault):
        self.store, self.after, self.fault = store, after, fault
        self.seen, self.recorded, self.mtimes = 0, None, {}

    def start(self, total_blocks: int, done_blocks: int) -> None:
        pass

    def advance(self, blocks: int, entries: int, nbytes: int) -> None:
        self.seen += blocks
        if self.recorded is not None or self.seen < self.after:
            return
        recorded = {(int(i), int(j)) for i, j in zip(*np.nonzero(self.store.finished_blocks()))}
        if recorded:  # the driver records in batches (every 2 s): wait for one, so the test can check it is kept
            self.recorded, self.seen_at_fault = recorded, self.seen
            self.mtimes = {b: _chunk(self.store, *b).stat().st_mtime_ns for b in self.recorded}
            self.fault()

    def close(self) -> None:
        pass


def _chunk(store: RunStore, i: int, j: int) -> Path:
    return Path(store.location) / "gram" / "c" / str(i) / str(j)


def _actor_pids(nodes) -> list[int]:
    """Process ids of the GramBlockWorker actors under the cluster's raylets."""
    raylets = [node.all_processes["raylet"][0].process.pid for node in [nodes.head_node, *nodes.worker_nodes]]
    pids = []
    for raylet in raylets:
        for pid in descendants(raylet):
            try:
                if b"GramBlockWorker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(pid)
            except OSError:
                continue
    return sorted(pids)


def assert_finished_exactly_without_recomputing(store: RunStore, config, report, hook: FaultAfter) -> None:
    assert hook.recorded, "the fault came before any block was recorded"
    assert len(hook.recorded) < len(store.upper_blocks()), "the build was not interrupted mid-way"
    after = report.computed_blocks[hook.seen_at_fault:]
    assert after, "nothing was computed after the fault"
    assert not hook.recorded & set(after), "a block recorded before the fault was computed again"
    assert len(set(report.computed_blocks)) == len(report.computed_blocks) == len(store.upper_blocks())
    assert all(_chunk(store, *b).stat().st_mtime_ns == t for b, t in hook.mtimes.items())
    assert verify_in_process(store.location, net=config.net, kind="ntk") == []
    assert np.array_equal(store.gram[:], ntkdist.ntk(store.inputs[:], net=config.net))


def test_one_actor_lands_per_logical_gpu_across_nodes(cluster, store_of):
    store, config = store_of(n=120, block=20)
    report = build_gram(store.location, net=config.net, kind="ntk", workers=NODES * GPUS_PER_NODE, device="auto")
    places = {(w["node"], w["gpu_ids"][0]) for w in report.workers if len(w["gpu_ids"]) == 1}
    assert len(places) == NODES * GPUS_PER_NODE == len(report.workers)
    assert len({node for node, _ in places}) == NODES
    assert all(w["array_module"] == "numpy" and "logical gpu" in w["note"] for w in report.workers)
    assert np.array_equal(store.gram[:], ntkdist.ntk(store.inputs[:], net=config.net))


def test_build_finishes_by_itself_when_a_worker_process_is_killed(cluster, store_of):
    store, config = store_of()
    victims = []

    def kill_one_worker():
        victims.append(_actor_pids(cluster)[0])
        os.kill(victims[0], signal.SIGKILL)

    hook = FaultAfter(store, after=40, fault=kill_one_worker)
    report = build_gram(store.location, net=config.net, kind="ntk", workers=NODES * GPUS_PER_NODE, device="auto",
                        per_task=1, progress=hook)
    assert victims and report.requeued >= 1
    assert all(w["pid"] != victims[0] for w in report.workers if not w.get("lost"))
    assert_finished_exactly_without_recomputing(store, config, report, hook)


def test_build_finishes_on_the_remaining_nodes_when_a_node_is_removed(cluster, store_of):
    store, config = store_of()
    node = sorted(cluster.worker_nodes, key=lambda n: n.node_id)[0]
    hook = FaultAfter(store, after=40, fault=lambda: cluster.remove_node(node, allow_graceful=False))
    report = build_gram(store.location, net=config.net, kind="ntk", workers=NODES * GPUS_PER_NODE, device="auto",
                        per_task=1, progress=hook)
    assert report.requeued >= 1
    survivors = [w for w in report.workers if not w.get("lost")]
    assert survivors and all(w["node"] != node.node_id for w in survivors)
    assert_finished_exactly_without_recomputing(store, config, report, hook)
