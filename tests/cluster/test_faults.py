"""What a build on the session's real local Ray (2 CPUs) reports and survives: progress as results arrive, each
input row block read once per actor, and a store that cannot be written (a clear `StoreError`; the re-run after
the fix finishes bit-identical without recomputing what was recorded)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

import ntkdist
from ntkdist import pipeline
from ntkdist.cluster import build_gram
from ntkdist.errors import StoreError
from ntkdist.cluster.verify import verify_in_process
from ntkdist.store import RunStore

from .test_build import descendants


def prepared(make_config, n: int, block: int):
    config = make_config(data={"n": n, "dim": 3}, kernel={"block": block})
    pipeline.prepare(config)
    return RunStore.open(config.store_location, mode="r+"), config


class RecordingProgress:
    def __init__(self):
        self.calls = []

    def start(self, total_blocks: int, done_blocks: int) -> None:
        self.calls.append(("start", total_blocks, done_blocks))

    def advance(self, blocks: int, entries: int, nbytes: int) -> None:
        self.calls.append(("advance", blocks, entries, nbytes))

    def close(self) -> None:
        self.calls.append(("close",))


def test_progress_is_reported_and_each_input_block_is_read_once_per_actor(ray_local, make_config):
    store, config = prepared(make_config, 200, 20)
    first = [(0, 0), (0, 1), (3, 7)]
    values = ntkdist.ntk(store.inputs[:], net=config.net)
    store.record_blocks([store.write_block(i, j, values[store.block_slice(i), store.block_slice(j)])
                         for i, j in first])
    progress = RecordingProgress()
    report = build_gram(store.location, net=config.net, kind="ntk", workers=2, device="cpu", per_task=2,
                        progress=progress)

    total = 10 * 11 // 2
    assert progress.calls[0] == ("start", total, len(first)) and progress.calls[-1] == ("close",)
    advances = [call[1:] for call in progress.calls[1:-1]]
    assert all(call[0] == "advance" for call in progress.calls[1:-1])
    assert sum(b for b, _, _ in advances) == report.computed == total - len(first)
    assert sum(e for _, e, _ in advances) == report.entries == 200 * 200 - (400 + 800 + 800)  # one diagonal, two mirrored
    assert all(nbytes == 8 * entries for _, entries, nbytes in advances)  # float64, both triangles

    reads = [w["input_reads"] for w in report.workers]
    assert len(reads) == 2 and all(set(r.values()) == {1} for r in reads)
    assert set().union(*reads) == set(range(10))
    assert sorted(report.computed_blocks) == sorted(set(store.upper_blocks()) - set(first))
    assert np.array_equal(store.gram[:], values) and verify_in_process(store.location, net=config.net, kind="ntk") == []


def _local_actor_pids() -> list[int]:
    """Process ids of the GramBlockWorker actors of the session's embedded Ray."""
    import ray

    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    return [pid for pid in sorted(descendants(raylet)) if b"GramBlockWorker" in _cmdline(pid)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone meanwhile
        return b""


class KillAfter(RecordingProgress):
    """Kills the (only) actor's process once ``after`` blocks have arrived and some are recorded (in batches,
    every 2 s), noting what the manifest records."""

    def __init__(self, store: RunStore, after: int):
        super().__init__()
        self.store, self.after, self.seen, self.recorded = store, after, 0, None

    def advance(self, blocks: int, entries: int, nbytes: int) -> None:
        self.seen += blocks
        if self.recorded is None and self.seen >= self.after and self.store.finished_blocks().any():
            self.recorded, self.seen_at_kill = set(zip(*np.nonzero(self.store.finished_blocks()))), self.seen
            os.kill(_local_actor_pids()[0], signal.SIGKILL)


@pytest.mark.slow
def test_the_only_actor_killed_mid_build_is_restarted_and_finishes_the_build(ray_local, make_config):
    store, config = prepared(make_config, 300, 20)
    hook = KillAfter(store, after=20)
    report = build_gram(store.location, net=config.net, kind="ntk", workers=1, device="cpu", per_task=1, progress=hook)
    assert report.restarts == 1 and report.requeued >= 1 and report.replaced == 0
    recorded = {(int(i), int(j)) for i, j in hook.recorded}
    assert recorded and not recorded & set(report.computed_blocks[hook.seen_at_kill:])
    assert len(set(report.computed_blocks)) == len(report.computed_blocks) == len(store.upper_blocks())
    assert np.array_equal(store.gram[:], ntkdist.ntk(store.inputs[:], net=config.net)) and verify_in_process(store.location, net=config.net, kind="ntk") == []


def test_unwritable_store_ends_with_a_store_error_and_the_fixed_rerun_resumes(ray_local, make_config):
    store, config = prepared(make_config, 200, 50)
    obstacle = Path(store.location) / "gram" / "c" / "3"  # a plain file where zarr needs the directory of row 3
    obstacle.parent.mkdir(parents=True, exist_ok=True)
    obstacle.write_text("not a directory")
    with pytest.raises(StoreError, match=r"writing Gram block \(\d, 3\) failed.*Fix it and re-run: finished "
                                         r"blocks are kept") as caught:
        build_gram(store.location, net=config.net, kind="ntk", workers=1, device="cpu", per_task=1)
    assert str(store.location) in str(caught.value)
    recorded = {(int(i), int(j)) for i, j in zip(*np.nonzero(store.finished_blocks()))}
    assert recorded and all(3 not in block for block in recorded)

    obstacle.unlink()
    report = build_gram(store.location, net=config.net, kind="ntk", workers=1, device="cpu", per_task=1)
    assert report.skipped == len(recorded) and not recorded & set(report.computed_blocks)
    assert np.array_equal(store.gram[:], ntkdist.ntk(store.inputs[:], net=config.net)) and verify_in_process(store.location, net=config.net, kind="ntk") == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (a real full disk); skipped where this process may not mount one (not root, no
    CAP_SYS_ADMIN, e.g. an unprivileged container)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) here to make a small tmpfs")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.slow
def test_full_disk_ends_with_a_store_error_and_the_rerun_elsewhere_resumes(ray_local, make_config, tiny_disk):
    """N = 600 float64 is 2.7 MiB of Gram: the 1 MiB disk fills mid-build; the store then moves to a roomier
    disk (the fix) and the build finishes there without recomputing what was recorded."""
    config = make_config(data={"n": 600, "dim": 3}, kernel={"block": 50},
                         run={"store": str(tiny_disk / "run.zarr")})
    pipeline.prepare(config)
    with pytest.raises(StoreError, match="No space left on device.*Fix it and re-run"):
        build_gram(config.store_location, net=config.net, kind="ntk", workers=1, device="cpu", per_task=1)
    recorded = RunStore.open(config.store_location).finished_blocks()  # the last batch may not fit on the disk either
    assert recorded.sum() < 12 * 13 // 2

    moved = tiny_disk.parent / "roomy.zarr"
    shutil.copytree(config.store_location, moved)
    report = build_gram(moved, net=config.net, kind="ntk", workers=1, device="cpu", per_task=1)
    assert report.skipped == recorded.sum()
    assert not {tuple(b) for b in zip(*np.nonzero(recorded))} & set(report.computed_blocks)
    store = RunStore.open(moved)
    assert np.array_equal(store.gram[:], ntkdist.ntk(store.inputs[:], net=config.net)) and verify_in_process(store.location, net=config.net, kind="ntk") == []
