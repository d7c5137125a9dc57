"""Shared fixtures: one real local Ray (2 CPUs) and one Prefect test server per session, run configs on disk."""

from __future__ import annotations

import os

import pytest

# Keep Prefect local and quiet in every test process (and in the subprocesses the CLI tests start).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ntkdist")


def _cupy_device_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _cupy_device_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_local():
    """A real embedded Ray instance with 2 CPUs and no GPUs, shared by the whole session."""
    import ray

    from ntkdist.cluster import start_local_ray

    if not ray.is_initialized():
        start_local_ray(num_cpus=2, num_gpus=0)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_server():
    """Prefect's test harness: a temporary API server and database, one per session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def make_config(tmp_path):
    """Build a validated Config for a small run whose store lives in the test's temporary directory."""
    from ntkdist.config import Config

    def make(**sections):
        raw = {
            "run": {"name": "t", "store": str(tmp_path / "run.zarr")},
            "data": {"source": "sphere", "n": 300, "dim": 3, "seed": 1},
            "network": {"depth": 2, "activation": "relu"},
            "kernel": {"block": 128},
            "cluster": {"workers": 2, "device": "cpu"},
        }
        for name, values in sections.items():
            raw.setdefault(name, {}).update(values)
        return Config.from_dict(raw)

    return make


@pytest.fixture
def written_store():
    """Prepare a run's store and write its Gram blocks directly (no Ray), recording the build; returns K."""
    def write(config):
        import ntkdist
        from ntkdist import pipeline
        from ntkdist.store import RunStore

        pipeline.prepare(config)
        store = RunStore.open(config.store_path, mode="r+")
        K = ntkdist.ntk(store.inputs[:], net=config.net)
        for i, j in store.upper_blocks():
            store.record_blocks([store.write_block(i, j, K[store.block_slice(i), store.block_slice(j)])])
        store.mark_stage("build")
        return K

    return write
