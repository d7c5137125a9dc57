"""Errors a user can cause are `UserError`s raised before work starts, and reach the user as themselves from Ray.

Real Ray throughout: the session's embedded instance (2 CPUs, no GPUs), or a fresh one in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ntkdist import pipeline
from ntkdist.cluster import resources_per_worker, worker_resources
from ntkdist.cluster.runtime import get
from ntkdist.errors import ConfigError, DataError, UserError
from ntkdist.store import RunStore

REPO = Path(__file__).resolve().parents[2]


# -- capacity ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device, workers, cpus_per_worker, needle", [
    ("gpu", 1, None, "[cluster] device: \"gpu\" but the Ray cluster has no GPUs"),
    ("cpu", 3, 1.0, "[cluster] cpus_per_worker: 3 workers × 1 CPUs exceeds"),
    ("cpu", 2, 2.0, "[cluster] cpus_per_worker: 2 workers × 2 CPUs exceeds"),
])
def test_resources_per_worker_raises_a_config_error_naming_the_key(ray_local, device, workers, cpus_per_worker,
                                                                   needle):
    with pytest.raises(ConfigError) as caught:
        resources_per_worker(device, workers, cpus_per_worker)
    assert needle in str(caught.value)


def test_worker_resources_counts_gpus_and_lets_cpus_be_shared_on_purpose():
    assert worker_resources({"CPU": 8.0, "GPU": 2.0}, "gpu", 2, None) == {"num_gpus": 1, "num_cpus": 4.0}
    with pytest.raises(ConfigError, match=r"\[cluster\] workers: 3 GPU workers asked but the Ray cluster has 2 GPUs"):
        worker_resources({"CPU": 8.0, "GPU": 2.0}, "gpu", 3, None)
    # Four workers on two CPUs share them (half a CPU each), asked for or not; one CPU each is refused.
    assert worker_resources({"CPU": 2.0}, "cpu", 4, 0.5) == {"num_cpus": 0.5}
    assert worker_resources({"CPU": 2.0}, "cpu", 4, None) == {"num_cpus": 0.5}
    with pytest.raises(ConfigError, match=r"\[cluster\] cpus_per_worker: 4 workers × 1 CPUs exceeds"):
        worker_resources({"CPU": 2.0}, "cpu", 4, 1.0)
    # A GPU count that could not be determined is not held against device = "gpu".
    assert worker_resources({"CPU": 2.0}, "gpu", 1, None)["num_gpus"] == 1


@pytest.mark.parametrize("cluster, needle", [
    ({"device": "gpu"}, "[cluster] device"),
    ({"workers": 3, "cpus_per_worker": 1.0}, "[cluster] cpus_per_worker: 3 workers"),
    ({"workers": 2, "cpus_per_worker": 2.0}, "[cluster] cpus_per_worker"),
])
def test_preflight_refuses_a_cluster_that_cannot_host_the_workers(ray_local, make_config, cluster, needle):
    config = make_config(data={"n": 300}, kernel={"block": 100}, cluster=cluster)
    with pytest.raises(ConfigError) as caught:
        pipeline.preflight(config)
    assert needle in str(caught.value)
    assert not Path(config.store_location).exists()


def test_preflight_checks_the_workers_that_will_run(ray_local, make_config):
    # Three workers asked, but N = 300 in blocks of 150 gives two block rows: two workers run, and two fit.
    config = make_config(data={"n": 300}, kernel={"block": 150}, cluster={"workers": 3})
    assert pipeline.preflight(config)


def test_build_refuses_an_impossible_cluster_before_any_block(ray_local, make_config):
    good = make_config(data={"n": 300}, kernel={"block": 100})
    pipeline.prepare(good)
    bad = make_config(data={"n": 300}, kernel={"block": 100}, cluster={"device": "gpu"})
    with pytest.raises(ConfigError, match=r"\[cluster\] device"):
        pipeline.build(bad)
    store = RunStore.open(good.store_location)
    assert store.finished_blocks().sum() == 0 and store.stage("build") is None


def test_embedded_capacity_is_this_machine_without_starting_ray():
    script = textwrap.dedent("""
        import json, os, ray
        from ntkdist.cluster import cluster_resources
        found = cluster_resources("")
        print(json.dumps({"found": found, "cpus": os.cpu_count(), "started": ray.is_initialized()}))
    """)
    env = {**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["started"] is False
    assert result["found"]["CPU"] == result["cpus"] and result["found"].get("GPU", 0) == 0


# -- errors raised in actors ---------------------------------------------------------------------------------------
def test_a_user_error_in_an_actor_is_raised_as_itself(ray_local):
    ray = ray_local

    class Worker:
        def __init__(self, fail: bool = False):
            if fail:
                raise DataError("[data] path: row 3 holds NaN; clean the data")

        def config_error(self):
            raise ConfigError("[cluster] device: no GPU here; use device = \"cpu\"")

        def bug(self):
            raise RuntimeError("an ntkdist bug")

    Actor = ray.remote(num_cpus=0)(Worker)
    actor = Actor.remote()
    with pytest.raises(ConfigError) as caught:
        get(actor.config_error.remote())
    assert type(caught.value) is ConfigError
    assert str(caught.value) == "[cluster] device: no GPU here; use device = \"cpu\""

    # Its constructor: every call on the dead actor raises the constructor's error.
    broken = Actor.remote(fail=True)
    with pytest.raises(DataError) as caught:
        get([broken.config_error.remote()])
    assert type(caught.value) is DataError and str(caught.value) == "[data] path: row 3 holds NaN; clean the data"

    # Anything else is a bug: Ray's error, an instance of the original class, with the cause and the traceback.
    with pytest.raises(RuntimeError) as caught:
        get(actor.bug.remote())
    assert isinstance(caught.value, ray.exceptions.RayTaskError) and not isinstance(caught.value, UserError)
    assert type(caught.value.cause) is RuntimeError and str(caught.value.cause) == "an ntkdist bug"
    assert 'line' in str(caught.value) and 'raise RuntimeError("an ntkdist bug")' in str(caught.value)  # where
    ray.kill(actor)


def test_gpu_device_without_cupy_stops_the_build_with_a_config_error(tmp_path):
    """A fresh Ray with a logical GPU and no CuPy: the actor's ConfigError reaches the caller, one paragraph."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("CuPy can use a GPU here, so device = \"gpu\" succeeds")
    except Exception:
        pass
    script = textwrap.dedent(f"""
        import json
        from ntkdist import pipeline
        from ntkdist.cluster import start_local_ray, build_gram
        from ntkdist.config import Config
        start_local_ray(num_cpus=1, num_gpus=1)
        config = Config.from_dict({{"run": {{"name": "g", "store": "{tmp_path / 'g.zarr'}"}},
                                    "data": {{"source": "sphere", "n": 40, "dim": 3}},
                                    "network": {{"depth": 1}}, "kernel": {{"block": 40}},
                                    "cluster": {{"workers": 1, "device": "gpu"}}}})
        pipeline.prepare(config)
        try:
            build_gram(config.store_location, net=config.net, kind="ntk", workers=1, device="gpu")
        except Exception as exc:
            print(json.dumps({{"type": type(exc).__name__, "message": str(exc)}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["type"] == "ConfigError", result
    assert result["message"].startswith("[cluster] device: \"gpu\" but CuPy cannot use GPU")
    assert "Traceback" not in result["message"] and "\n" not in result["message"]
