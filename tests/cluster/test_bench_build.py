"""bench/build.py on a tiny case: the compute-only pool computes every block and stores nothing, and a run reports
each leg, the ratio to compute only and the driver's peak."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from bench import build as bench_build
from ntkdist.kernels import MLP

NET = MLP(depth=2, activation="relu", weight_var=2.0)


@pytest.mark.slow
def test_compute_only_pool_computes_every_block_and_writes_none(ray_local, tmp_path):
    X = np.random.default_rng(0).standard_normal((250, 6))
    store = bench_build.new_store(tmp_path / "run.zarr", X, 100)
    seconds = bench_build.compute_only(str(tmp_path / "run.zarr"), NET, workers=2)
    assert seconds > 0
    assert len(store.missing_blocks()) == len(store.upper_blocks()) == 6
    assert not (tmp_path / "run.zarr" / "gram" / "c").exists()  # no Gram chunk was written
    assert np.array_equal(store.inputs[:], X)


@pytest.mark.slow
def test_a_run_reports_every_leg_against_compute_only(ray_local, tmp_path):
    out = tmp_path / "build.json"
    bench_build.main(["--n", "300", "--dim", "8", "--depth", "2", "--block", "100", "--repeats", "1", "--no-s3",
                      "--dir", str(tmp_path), "--json", str(out)])
    results = json.loads(out.read_text())
    for leg in ("compute_only", "local_store"):
        assert len(results[leg]["seconds_all"]) == 1 and results[leg]["entries_per_second"] > 0
        assert results[leg]["megabytes_per_second"] == pytest.approx(results[leg]["entries_per_second"] * 4 / 1e6)
        assert 0 < results[leg]["driver_peak_rss_bytes"] < 64 * 2**30
        assert results[leg]["wall_seconds"] >= results[leg]["seconds"]
    local = results["local_store"]
    assert local["ratio_to_compute_only"] == pytest.approx(local["seconds"] / results["compute_only"]["seconds"])
    assert set(local["acceptance"]) == {"ratio_at_most_1.30", "driver_peak_under_1.5GB"}
    assert results["s3_store"] == {"skipped": "--no-s3"}
    assert not any(tmp_path.glob("bench-build-*"))  # the scratch stores are gone


def test_the_loopback_s3_server_holds_the_bucket_and_the_environment_is_restored(monkeypatch):
    import boto3

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with bench_build.loopback_s3() as root:
        endpoint = os.environ["AWS_ENDPOINT_URL"]
        assert root == f"s3://{bench_build.BUCKET}" and endpoint.startswith("http://127.0.0.1:")
        client = boto3.client("s3", endpoint_url=endpoint)
        client.put_object(Bucket=bench_build.BUCKET, Key="k", Body=b"v")
        assert client.get_object(Bucket=bench_build.BUCKET, Key="k")["Body"].read() == b"v"
    assert "AWS_ENDPOINT_URL" not in os.environ


def test_io_cost_measures_a_writer_against_the_same_cores_alone(tmp_path):
    from bench import io_cost

    out = tmp_path / "io.json"
    io_cost.main(["--cores", "1", "--seconds", "1", "--rounds", "1", "--dir", str(tmp_path), "--json", str(out)])
    results = json.loads(out.read_text())
    [alone], [loaded] = results["alone"], results["with_writer"]
    assert alone["products"] > 0 and alone["bytes_written"] == 0
    assert loaded["bytes_written"] >= 2048 * 2048 * 4  # at least one whole chunk went through the build's writer
    assert results["write_mb_per_s"] == pytest.approx(loaded["bytes_written"] / 1e6)
    expected = 1e3 * (1 - loaded["products"] / alone["products"]) / (loaded["bytes_written"] / 1e6)
    assert results["core_ms_per_mb"] == pytest.approx(expected)
    assert list(tmp_path.iterdir()) == [out]  # the chunks are gone
