"""Building into a run store in object storage: real Ray actors writing to the loopback S3 server (moto)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import zarr

import ntkdist
from ntkdist import pipeline
from ntkdist.cluster import build_gram, read_sketch, sketch_omega, verify_store
from ntkdist.store import RunStore

from ..helpers import S3_TEST_SECRET, assert_holds_no_secret


def test_build_into_s3_equals_the_dense_ntk(ray_local, make_config, s3_location):
    config = make_config(run={"store": s3_location}, data={"n": 200, "dim": 4, "source": "gaussian"},
                         kernel={"block": 64}, network={"depth": 3, "bias_var": 0.2})
    pipeline.prepare(config)
    store = RunStore.open(s3_location, mode="r+")
    report = build_gram(store.location, net=config.net, kind="ntk", workers=2, device="cpu", sketch_rank=3,
                        sketch_seed=7)
    assert report.computed == len(store.upper_blocks())
    K = ntkdist.ntk(store.inputs[:], net=config.net)
    assert np.array_equal(store.gram[:], K)
    # The round trip users make: reopen, verify over actors, read as dask (ntkdist) and as plain zarr (no ntkdist).
    verified = verify_store(s3_location, net=config.net, kind="ntk", workers=2, sample=64)
    assert verified.ok and verified.bad_blocks == []
    gram = ntkdist.open_gram(s3_location)
    assert np.array_equal(gram[10:150, 60:190].compute(), K[10:150, 60:190])
    assert np.array_equal(zarr.open_array(f"{s3_location}/gram", mode="r")[70:140, 0:64], K[70:140, 0:64])
    sketch = read_sketch(RunStore.open(s3_location))  # the ride-along sketch lives in the same bucket
    assert sketch["complete"]
    np.testing.assert_allclose(sketch["Y"], K @ sketch_omega(200, 64, 3, 7), rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_whole_run_on_s3_writes_its_report_under_the_local_storage_root(ray_local, make_config, s3_location,
                                                                         s3_server, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="ntkdist")
    monkeypatch.setenv("NTKDIST_STORAGE", str(tmp_path / "storage"))
    config = make_config(run={"store": s3_location}, data={"n": 150, "dim": 3}, kernel={"block": 64})
    results = pipeline.run_all(config)
    assert results["build"]["store"] == s3_location
    store = RunStore.open(s3_location)
    K = ntkdist.ntk(store.inputs[:], net=config.net)
    values = store.read_spectrum()["eigenvalue"].values
    np.testing.assert_allclose(values, np.linalg.eigvalsh(K)[::-1], rtol=1e-10)
    assert results["report"]["plot"] == str(tmp_path / "storage" / "runs" / "run.spectrum.png")
    assert (tmp_path / "storage" / "runs" / "run.summary.md").read_text().count(s3_location) >= 1
    assert pipeline.prepare(config)["resumed"] and pipeline.build(config)["resumed"]  # a re-run finds it and resumes
    # No credential in any object (attrs, stage records, spectrum, sketch) nor in ntkdist's log.
    assert assert_holds_no_secret(s3_location, s3_server) > 20
    assert S3_TEST_SECRET not in caplog.text
