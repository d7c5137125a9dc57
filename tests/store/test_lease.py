"""The writer's lease: a second writer is refused naming the first, stale leases are taken over, readers ignore it."""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ntkdist.errors import StaleLeaseWarning, StoreError
from ntkdist.store import RunStore
from ntkdist.store.lease import Lease

from ..helpers import make_store, symmetric, write_all

REPO = Path(__file__).resolve().parents[2]
HOLD = """
import sys, time
from ntkdist.store import Lease
with Lease(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def holder_process(location: str) -> subprocess.Popen:
    """Another process that takes the lease of ``location`` and keeps it until killed."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, location], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    assert process.stdout.readline().strip() == "held"
    return process


def test_second_writer_is_refused_naming_the_first_and_a_dead_ones_lease_is_taken_over(tmp_path):
    store = make_store(tmp_path / "r.zarr")
    write_all(store, K := symmetric(10))
    other = holder_process(store.location)
    try:
        expected = rf"another writer holds.*{getpass.getuser()}@{socket.gethostname()} pid {other.pid}, since"
        with pytest.raises(StoreError, match=expected):
            store.lease().acquire()
        # Readers never need the lease.
        assert np.array_equal(RunStore.open(store.location).read_gram(), K)
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()
    with pytest.warns(UserWarning, match=rf"taking over the lease of .*pid {other.pid}.*no longer exists"):
        lease = store.lease().acquire()
    held = json.loads((tmp_path / "r.zarr" / "lease.json").read_text())
    assert held["pid"] == os.getpid() and held["token"] == lease.record["token"]
    lease.release()
    assert not (tmp_path / "r.zarr" / "lease.json").exists()


def test_every_writing_stage_holds_the_lease(make_config):
    from ntkdist import pipeline

    config = make_config(data={"n": 20, "dim": 3}, kernel={"block": 8})
    other = holder_process(config.store_location)  # another run of the same store, before this one prepares it
    try:
        with pytest.raises(StoreError, match=rf"another writer holds.*pid {other.pid}"):
            pipeline.prepare(config)
        assert os.listdir(config.store_location) == ["lease.json"]  # nothing of this run was written
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()
    with pytest.warns(UserWarning, match="no longer exists"):
        assert not pipeline.prepare(config)["resumed"]
    assert not Path(config.store_location, "lease.json").exists()  # given back when the stage ended
    other = holder_process(config.store_location)
    try:
        with pytest.raises(StoreError, match=rf"another writer holds.*pid {other.pid}"):
            pipeline.build(config)
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()


def test_lease_with_an_old_heartbeat_is_stale_and_a_live_one_is_renewed(tmp_path):
    store = make_store(tmp_path / "r.zarr")
    old = {"user": "someone", "host": "elsewhere", "pid": 1, "started": "2020-01-01T00:00:00+00:00",
           "heartbeat": "2020-01-01T00:00:00+00:00", "token": "x"}
    (tmp_path / "r.zarr" / "lease.json").write_text(json.dumps(old))
    with pytest.warns(StaleLeaseWarning, match=r"someone@elsewhere pid 1.*heartbeat is \d+ s old"):
        lease = Lease(store.location, heartbeat_seconds=0.05).acquire()
    first = lease.record["heartbeat"]
    deadline = time.monotonic() + 5
    while json.loads((tmp_path / "r.zarr" / "lease.json").read_text())["heartbeat"] == first:
        assert time.monotonic() < deadline, "the heartbeat was never renewed"
        time.sleep(0.1)
    lease.release()


def test_overwrite_keeps_the_writers_lease(tmp_path):
    location = str(tmp_path / "r.zarr")
    with Lease(location):  # a writer takes the lease before it creates the store
        make_store(location)
        with pytest.raises(StoreError, match="already exists"):
            make_store(location)
        store = RunStore.create(location, n=6, dim=2, block=4, dtype="float64", config={}, fingerprint="g",
                                versions={}, overwrite=True)
        assert store.n == 6 and (tmp_path / "r.zarr" / "lease.json").is_file()
        with pytest.raises(StoreError, match="another writer holds"):
            store.lease().acquire()
    assert sorted(p.name for p in (tmp_path / "r.zarr").iterdir()) == ["gram", "inputs", "manifest", "zarr.json"]


def test_lease_on_s3_refuses_a_second_writer(s3_location):
    store = make_store(s3_location)
    with store.lease():
        with pytest.raises(StoreError, match=rf"{s3_location}: another writer holds.*pid {os.getpid()}"):
            RunStore.open(s3_location, mode="r+").lease().acquire()
        store = RunStore.create(s3_location, n=6, dim=2, block=4, dtype="float64", config={}, fingerprint="g",
                                versions={}, overwrite=True)
        with pytest.raises(StoreError, match="another writer holds"):
            store.lease().acquire()
    with store.lease():  # released: free again
        pass
