"""Run stores in object storage: a real S3-compatible server (moto) on loopback, started by `s3_server`."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr
import zarr

from ntkdist.cluster.verify import verify_in_process
from ntkdist.errors import StoreError
from ntkdist.kernels import MLP
from ntkdist.store import RunStore, block_checksum, open_spectrum

from ..helpers import assert_holds_no_secret, make_store, start_moto_server, symmetric, write_all


def test_s3_store_round_trip(s3_location):
    store = make_store(s3_location)
    assert store.location == s3_location
    K = symmetric(10)
    write_all(store, K)
    store.mark_stage("prepare", seconds=1.0)
    store.write_spectrum(xr.Dataset({"eigenvalue": ("mode", np.array([3.0, 2.0]))}, coords={"mode": [1, 2]}))
    store.mark_stage("solve", modes=2)

    reopened = RunStore.open(s3_location)
    # The stored checks of `ntkdist verify` (CRC-32, Σ K², mirrors, NaN); no entry is recomputed: K is not a kernel.
    assert verify_in_process(s3_location, net=MLP(depth=1), kind="ntk", sample=0) == []
    assert reopened.missing_blocks() == []
    assert np.array_equal(reopened.read_gram(), K)
    assert reopened.stage("prepare")["seconds"] == 1.0
    # Readers that never import ntkdist: plain zarr and xarray through fsspec, the same credential chain.
    gram = zarr.open_array(f"{s3_location}/gram", mode="r")
    assert np.array_equal(gram[4:8, 0:10], K[4:8]) and gram.compressors == ()  # raw chunks: storage/README.md
    blocks = zarr.open_array(f"{s3_location}/manifest/blocks", mode="r")[:]
    assert blocks[1, 2] == block_checksum(K[4:8, 8:10])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # consolidated metadata is current: no fallback warning
        assert list(xr.open_zarr(s3_location, group="spectrum")["eigenvalue"].values) == [3.0, 2.0]
    assert open_spectrum(s3_location)["eigenvalue"].dims == ("mode",)

    reopened = RunStore.open(s3_location, mode="r+")
    reopened.delete_spectrum()
    with pytest.raises(StoreError, match="no spectrum"):
        reopened.read_spectrum()
    with pytest.raises(StoreError, match="already exists"):
        make_store(s3_location)


def test_s3_store_holds_no_credentials(s3_location, s3_server):
    store = make_store(s3_location)
    write_all(store, symmetric(10))
    store.mark_stage("prepare", seconds=0.0)
    assert assert_holds_no_secret(s3_location, s3_server) > 10


def test_missing_bucket_names_the_url_and_the_fix(s3_server):
    url = "s3://no-such-bucket-ntkdist/run.zarr"
    with pytest.raises(StoreError, match=r"s3://no-such-bucket-ntkdist/run.zarr.*bucket .*does not exist.*create"):
        make_store(url)
    with pytest.raises(StoreError, match=r"no-such-bucket-ntkdist.*does not exist"):
        RunStore.open(url)


@pytest.mark.slow
def test_bad_credentials_name_the_url_and_the_fix(s3_server, monkeypatch):
    """A second server that checks credentials (moto's IAM mode) refuses the dummy key."""
    process, endpoint = start_moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        with pytest.raises(StoreError, match=r"s3://ntkdist-test/x/run.zarr: access denied.*AWS_SECRET_ACCESS_KEY"):
            RunStore.open("s3://ntkdist-test/x/run.zarr")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_unsupported_scheme_is_refused():
    with pytest.raises(StoreError, match=r"gs:// is not supported.*s3://"):
        RunStore.open("gs://bucket/run.zarr")
