"""Building stored Gram matrices on a real local Ray (2 CPUs) with real zarr stores on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import ntkdist
from ntkdist import pipeline
from ntkdist.cluster import build_gram, plan_tasks
from ntkdist.cluster.verify import verify_in_process
from ntkdist.config import load_config
from ntkdist.store import RunStore
from tests.helpers import write_cpu_run_config

REPO = Path(__file__).resolve().parents[2]


def prepared(config):
    pipeline.prepare(config)
    return RunStore.open(config.store_location, mode="r+")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_pool_builds_the_exact_gram_of_the_stored_inputs(ray_local, make_config, dtype):
    config = make_config(data={"n": 450, "dim": 5, "source": "gaussian"}, kernel={"block": 100, "dtype": dtype},
                         network={"depth": 3, "bias_var": 0.2})
    store = prepared(config)
    report = build_gram(store.location, net=config.net, kind="ntk", workers=2, device="cpu")
    assert report.computed == 15 and report.skipped == 0
    assert 0 < report.block_seconds < report.seconds  # the blocks' time leaves out starting the actors
    assert len({w["pid"] for w in report.workers}) == 2 and all(w["threads"] == 1 for w in report.workers)
    expected = ntkdist.ntk(store.inputs[:], net=config.net, dtype=dtype)
    assert np.array_equal(store.gram[:], expected)
    assert verify_in_process(store.location, net=config.net, kind="ntk") == []


def test_nngp_kind_is_built_too(ray_local, make_config):
    config = make_config(kernel={"kind": "nngp", "block": 64}, network={"activation": "erf"})
    store = prepared(config)
    build_gram(store.location, net=config.net, kind="nngp", workers=2, device="cpu")
    assert np.array_equal(store.gram[:], ntkdist.nngp(store.inputs[:], net=config.net))


def test_rebuild_computes_only_missing_blocks(ray_local, make_config):
    config = make_config(kernel={"block": 64})
    store = prepared(config)
    build_gram(store.location, net=config.net, kind="ntk", workers=2, device="cpu")
    first = store.gram[:]
    # Forget three blocks as a crash between writing chunks and recording them would.
    lost = [(0, 1), (2, 4), (3, 3)]
    for i, j in lost:
        store.forget_blocks([(i, j)])
        store.gram[store.block_slice(i), store.block_slice(j)] = np.nan
    report = build_gram(store.location, net=config.net, kind="ntk", workers=2, device="cpu")
    assert report.computed == len(lost) and report.skipped == len(store.upper_blocks()) - len(lost)
    assert np.array_equal(store.gram[:], first) and verify_in_process(store.location, net=config.net, kind="ntk") == []
    again = build_gram(store.location, net=config.net, kind="ntk", workers=2, device="cpu")
    assert again.computed == 0


def test_tasks_cover_each_missing_block_once_longest_rows_first():
    missing = [(i, j) for i in range(5) for j in range(i, 5) if (i, j) != (1, 3)]
    tasks = plan_tasks(missing, per_task=2)
    flat = [b for t in tasks for b in t]
    assert sorted(flat) == sorted(missing) and len(flat) == len(set(flat))
    assert all(len({i for i, _ in t}) == 1 for t in tasks)  # a task stays on one block row
    assert tasks[0][0][0] == 0


def _process_parents() -> dict[int, int]:
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parent[int(entry.name)] = int(fields[1])
            except OSError:
                continue
    return parent


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` in the process tree (root included)."""
    parent = _process_parents()
    found = {root}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parent.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    return found & (set(parent) | {root})


def kill_tree(root: int) -> None:
    """SIGKILL a process and everything it started (Ray's raylet, GCS and actors included), as a node loss would."""
    for _ in range(20):
        alive = descendants(root)
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def _listening_sockets_of_descendants() -> list[tuple[int, str]]:
    """(pid, local address) of every listening TCP socket owned by this process or its descendants."""
    mine = descendants(os.getpid())
    inode_owner = {}
    for pid in mine:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inode_owner[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inode_owner:  # 0A = LISTEN
                found.append((inode_owner[cols[9]], cols[1].split(":")[0]))
    return found


LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def test_embedded_ray_listens_on_loopback_only(ray_local):
    sockets = _listening_sockets_of_descendants()
    assert sockets, "found no listening sockets of the embedded Ray"
    assert all(addr in LOOPBACK for _, addr in sockets), sockets


@pytest.mark.slow
def test_gpu_workers_are_placed_one_per_logical_gpu(tmp_path):
    """A fresh Ray declaring two logical GPUs: one actor per GPU, each told a different device."""
    script = textwrap.dedent(f"""
        import json, numpy as np, ntkdist
        from ntkdist import pipeline
        from ntkdist.cluster import start_local_ray, build_gram
        from ntkdist.config import Config
        from ntkdist.store import RunStore
        start_local_ray(num_cpus=2, num_gpus=2)
        config = Config.from_dict({{"run": {{"name": "g", "store": "{tmp_path / 'g.zarr'}"}},
                                    "data": {{"source": "sphere", "n": 200, "dim": 4}},
                                    "network": {{"depth": 2}}, "kernel": {{"block": 50}},
                                    "cluster": {{"workers": 2, "device": "auto"}}}})
        pipeline.prepare(config)
        report = build_gram(config.store_location, net=config.net, kind="ntk", workers=2, device="auto")
        store = RunStore.open(config.store_location)
        exact = bool(np.array_equal(store.gram[:], ntkdist.ntk(store.inputs[:], net=config.net)))
        print(json.dumps({{"workers": report.workers, "exact": exact}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    result = json.loads(out.stdout.strip().splitlines()[-1])
    gpu_ids = [w["gpu_ids"] for w in result["workers"]]
    assert sorted(g for ids in gpu_ids for g in ids) == ["0", "1"]
    assert all("logical gpu" in w["note"] or w["array_module"] == "cupy" for w in result["workers"])
    assert result["exact"]


@pytest.mark.slow
def test_killed_build_resumes_without_recomputing_written_blocks(tmp_path):
    """SIGKILL the whole run (driver, Ray and its actors) mid-build; a re-run keeps every recorded block's bytes
    and finishes the rest."""
    config_path, kill_store = write_cpu_run_config(tmp_path, "kill", n=1500, block=100, depth=3)
    script = textwrap.dedent(f"""
        from ntkdist import pipeline
        from ntkdist.config import load_config
        config = load_config("{config_path}")
        pipeline.prepare(config)
        pipeline.build(config)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    total = 15 * 16 // 2  # upper blocks of a 15 × 15 block grid
    try:
        deadline = time.time() + 240
        done = 0
        while time.time() < deadline:
            time.sleep(0.05)
            try:
                done = int(RunStore.open(kill_store).finished_blocks().sum())
            except Exception:  # the store is being created
                continue
            if done >= 20:
                break
    finally:
        kill_tree(proc.pid)
        proc.wait(timeout=60)
    store = RunStore.open(kill_store)
    recorded = store.finished_blocks()
    assert 20 <= recorded.sum() < total, "the build was not interrupted mid-way"
    assert store.stage("build") is None
    snapshot = {(i, j): store.gram[store.block_slice(i), store.block_slice(j)]
                for i, j in zip(*np.nonzero(recorded))}
    chunk_times = {(i, j): (kill_store / "gram" / "c" / str(i) / str(j)).stat().st_mtime_ns
                   for i, j in snapshot}

    # The re-run is the same two stages in a fresh process (`ntkdist run` adds Prefect around them: its resume of a
    # finished run is tests/flows/test_deployment.py's, and its first start tests/test_first_run.py's).
    rerun = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    store = RunStore.open(kill_store)
    # Recorded blocks are skipped, and only the others computed: none recorded before the kill is computed again.
    assert store.stage("build")["skipped_blocks"] == len(snapshot)
    assert store.stage("build")["computed_blocks"] == total - len(snapshot)
    for (i, j), values in snapshot.items():
        assert np.array_equal(store.gram[store.block_slice(i), store.block_slice(j)], values)
        assert (kill_store / "gram" / "c" / str(i) / str(j)).stat().st_mtime_ns == chunk_times[(i, j)]
    config = load_config(config_path)
    assert verify_in_process(kill_store, net=config.net, kind="ntk") == []
    assert np.array_equal(store.gram[:], ntkdist.ntk(store.inputs[:], net=config.net))


def test_empirical_kernel_of_a_sampled_network_is_built_exactly(ray_local, make_config):
    config = make_config(data={"n": 200, "dim": 4}, kernel={"kind": "empirical_ntk", "block": 64},
                         network={"depth": 2, "width": 96, "seed": 5, "bias_var": 0.1})
    store = prepared(config)
    build_gram(store.location, net=config.net, kind="empirical_ntk", workers=2, device="cpu", width=96, seed=5)
    expected = ntkdist.empirical_ntk(store.inputs[:], net=config.net, width=96, seed=5)
    assert np.array_equal(store.gram[:], expected)
    assert verify_in_process(store.location, net=config.net, kind="empirical_ntk", width=96, seed=5) == []
