"""The spectrum flow end to end: Prefect's test server, a real local Ray, real zarr stores."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

import ntkdist


@pytest.fixture
def flow_env(prefect_server, ray_local):
    from flows.spectrum import spectrum_flow

    return spectrum_flow


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_flow_writes_gram_spectrum_and_report(flow_env, make_config, dtype):
    config = make_config(data={"n": 300, "dim": 3}, kernel={"dtype": dtype, "block": 128},
                         network={"depth": 2, "bias_var": 0.1})
    result = flow_env(config.to_dict())
    store = config.store_path
    assert result["store"] == str(store)

    inputs = zarr.open_array(str(store / "inputs"), mode="r")[:]
    gram = zarr.open_array(str(store / "gram"), mode="r")[:]
    expected = ntkdist.ntk(inputs, net=config.net)
    assert gram.dtype == np.dtype(dtype)
    assert np.array_equal(gram, expected.astype(dtype))

    spectrum = xr.open_zarr(str(store), group="spectrum")
    values = spectrum["eigenvalue"].values
    assert spectrum["eigenvalue"].dims == ("mode",) and len(values) == 300
    assert np.all(np.diff(values) <= 0)
    reference = np.linalg.eigvalsh(gram.astype(np.float64))[::-1]
    np.testing.assert_allclose(values, reference, rtol=1e-10, atol=0)
    assert spectrum.attrs["config"] == config.to_dict()
    assert {"numpy", "zarr", "ray", "prefect", "ntkdist"} <= set(spectrum.attrs["versions"])

    with open(result["plot"], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    summary = open(result["summary"]).read()
    assert f"{values[0]:.6e}" in summary and "λ_min" in summary


def test_flow_keeps_top_k_and_resumes(flow_env, make_config):
    config = make_config(data={"n": 260}, solver={"k": 12}, kernel={"kind": "nngp", "block": 100})
    first = flow_env(config.to_dict())
    assert first["build"]["resumed"] is False and first["build"]["computed_blocks"] == 6
    second = flow_env(config.to_dict())
    assert second["build"]["resumed"] is True and second["solve"]["resumed"] is True
    values = xr.open_zarr(str(config.store_path), group="spectrum")["eigenvalue"].values
    K = ntkdist.nngp(zarr.open_array(str(config.store_path / "inputs"))[:], net=config.net)
    np.testing.assert_allclose(values, np.linalg.eigvalsh(K)[::-1][:12], rtol=1e-10)


def test_flow_publishes_the_summary_as_an_artifact(flow_env, make_config):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    config = make_config(run={"name": "Artifact_Run"}, data={"n": 120})
    flow_env(config.to_dict())
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ntkdist-artifact-run"])))
    assert artifacts and "λ_max" in artifacts[0].data
