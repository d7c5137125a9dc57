"""The spectrum flow end to end: Prefect's test server, a real local Ray, real zarr stores."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import ntkdist

from ..helpers import assert_every_bound_holds


@pytest.fixture
def flow_env(prefect_server, ray_local):
    from flows.spectrum import spectrum_flow

    return spectrum_flow


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_flow_writes_gram_spectrum_and_report(flow_env, make_config, dtype):
    config = make_config(data={"n": 300, "dim": 3}, kernel={"dtype": dtype, "block": 128},
                         network={"depth": 2, "bias_var": 0.1})
    result = flow_env(config.to_dict())
    store = config.store_location
    assert result["store"] == store

    inputs = zarr.open_array(f"{store}/inputs", mode="r")[:]
    gram = zarr.open_array(f"{store}/gram", mode="r")[:]
    expected = ntkdist.ntk(inputs, net=config.net)
    assert gram.dtype == np.dtype(dtype)
    assert np.array_equal(gram, expected.astype(dtype))

    spectrum = xr.open_zarr(store, group="spectrum")
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
    values = xr.open_zarr(config.store_location, group="spectrum")["eigenvalue"].values
    K = ntkdist.nngp(zarr.open_array(f"{config.store_location}/inputs")[:], net=config.net)
    np.testing.assert_allclose(values, np.linalg.eigvalsh(K)[::-1][:12], rtol=1e-10)


def test_flow_publishes_the_summary_as_an_artifact(flow_env, make_config):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    config = make_config(run={"name": "Artifact_Run"}, data={"n": 120})
    result = flow_env(config.to_dict())
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ntkdist-artifact-run"])))
    assert artifacts and "λ_max" in artifacts[0].data
    # Each figure of the report is an image artifact carrying its PNG (the UI cannot open the runner's files).
    figures = [name for name in ("plot", "density", "trace_share") if Path(result[name]).is_file()]
    assert {"plot", "trace_share"} <= set(figures)  # the density only when the solve estimated it
    figure_keys = [f"ntkdist-artifact-run-{name.replace('_', '-')}" for name in figures]
    with get_client(sync_client=True) as client:
        images = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=figure_keys)))
    assert sorted({a.key for a in images}) == sorted(figure_keys)
    for image in images:
        assert image.type == "image" and image.data.startswith("data:image/png;base64,")
        assert base64.b64decode(image.data.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_flow_compares_the_spectrum_with_theory(flow_env, make_config):
    config = make_config(data={"n": 600, "dim": 3}, network={"depth": 2, "bias_var": 0.1}, kernel={"block": 256})
    result = flow_env(config.to_dict())
    assert result["compare"]["predictions"] >= 8 and result["compare"]["eigendecompositions"] <= 1

    spectrum = xr.open_zarr(config.store_location, group="spectrum")
    theory = [name for name in spectrum.data_vars if name.startswith("theory_")]
    for name in ("theory_sphere_eigenvalue", "theory_sphere_degree", "theory_lambda_min_lower_hermite",
                 "theory_lambda_min_upper_interlacing", "theory_effective_rank_upper", "theory_lambda_k_upper",
                 "theory_positive_definite"):
        assert name in theory, name
    for name in theory:
        attrs = spectrum[name].attrs
        assert "citation" in attrs and "convention" in attrs, name
    assert "Murray" in spectrum["theory_sphere_eigenvalue"].attrs["citation"]
    assert spectrum["theory_sphere_eigenvalue"].dims == ("mode",)

    # the sphere prediction N·μ_k matches the computed top eigenvalues, degree by degree (cluster means)
    values = spectrum["eigenvalue"].values
    predicted = spectrum["theory_sphere_eigenvalue"].values
    degree = spectrum["theory_sphere_degree"].values
    checked = 0
    for k in dict.fromkeys(degree[:40]):
        where = degree == k
        if predicted[where].mean() < 1e-2 * predicted[0]:
            continue
        assert values[where].mean() == pytest.approx(predicted[where].mean(), rel=0.04), k
        checked += 1
    assert checked >= 4

    # every bound holds against the computed spectrum, and the report lists them with their tightness
    table = spectrum.attrs["theory"]["table"]
    assert_every_bound_holds(table)
    summary = open(result["summary"]).read()
    assert "## Theory against the computed spectrum" in summary and "theory/computed" in summary
    for row in table:
        assert row["prediction"] in summary
    hermite = next(row for row in table if row["prediction"] == "theory_lambda_min_lower_hermite")
    assert f"{hermite['ratio']:.4g}" in summary
    assert "skipped `theory_lambda_min_lower_layer_sum`" in summary

    # resumed: compare is recorded and skipped the second time
    again = flow_env(config.to_dict())
    assert again["compare"]["resumed"] is True


def test_compare_stage_appends_theory_and_recovers_from_a_crash(make_config, written_store):
    """The compare stage alone (no Prefect, no Ray: the Gram blocks are written directly)."""
    from ntkdist import pipeline
    from ntkdist.store import RunStore

    config = make_config(data={"n": 200, "dim": 3}, kernel={"block": 100}, network={"bias_var": 0.1})
    written_store(config)
    pipeline.solve(config)
    before = xr.open_zarr(config.store_location, group="spectrum").load()

    first = pipeline.compare(config)
    assert first["resumed"] is False and first["predictions"] >= 8
    after = xr.open_zarr(config.store_location, group="spectrum").load()
    np.testing.assert_array_equal(after["eigenvalue"].values, before["eigenvalue"].values)
    assert after.attrs["title"] == before.attrs["title"] and after.attrs["theory"]["table"]
    assert "theory_sphere_eigenvalue" in after and "theory_k" in after.coords

    # a compare that wrote its variables but crashed before it was recorded is redone from scratch
    RunStore.open(config.store_location, mode="r+").clear_stages("compare")  # a fresh handle: attrs are cached
    again = pipeline.compare(config)
    assert again["resumed"] is False
    redone = xr.open_zarr(config.store_location, group="spectrum").load()
    assert sorted(redone.variables) == sorted(after.variables)
    xr.testing.assert_identical(redone.drop_attrs(), after.drop_attrs())
    assert pipeline.compare(config)["resumed"] is True
