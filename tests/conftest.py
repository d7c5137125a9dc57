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


def pytest_configure(config):
    """Give the test run its id before pytest-xdist starts any worker (they inherit it: `tests/background.py`);
    in a pytest-xdist worker, one BLAS thread.

    Why one: `make test` runs two worker processes on two cores. OpenBLAS threads spin while they wait for work, so
    two processes with two BLAS threads each fight over the cores and the dense tests ran 3–4 times slower than
    alone. The environment variables carry the limit into subprocesses and Ray workers started from the tests.
    """
    from . import background

    background.begin_run()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, "1")
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")


def pytest_collection_finish(session):
    """Start the slow reference computations the selected tests need, in the background (`tests/background.py`)."""
    from . import background

    fixtures = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    if "relu_ntk_8000" in fixtures:
        background.start_eigvalsh_8000()
    if "comparison" in fixtures and any("test_neural_tangents" in item.nodeid for item in session.items):
        from .kernels.test_neural_tangents import peer_python_or_none, start_peer

        python = peer_python_or_none()
        if python:
            start_peer(python)


def pytest_sessionfinish(session, exitstatus):
    from . import background

    background.stop_all()


def pytest_collection_modifyitems(config, items):
    if _cupy_device_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto) on loopback for the whole session, with one bucket ``ntkdist-test``.

    Dummy credentials and ``AWS_ENDPOINT_URL`` go into ``os.environ`` before anything else starts, so the Ray
    workers started after it (`ray_local` depends on this fixture) reach the same server. Yields the endpoint.
    """
    import s3fs

    from .helpers import S3_TEST_SECRET, start_moto_server

    process, endpoint = start_moto_server()
    os.environ.update({"AWS_ACCESS_KEY_ID": "ntkdist-test-key", "AWS_SECRET_ACCESS_KEY": S3_TEST_SECRET,
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint})
    s3fs.S3FileSystem(endpoint_url=endpoint).mkdir("ntkdist-test")
    yield endpoint
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def s3_location(s3_server, request):
    """A fresh ``s3://ntkdist-test/<unique prefix>/run.zarr`` on the loopback server, one per test."""
    import uuid

    import re

    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:40]
    return f"s3://ntkdist-test/{name}-{uuid.uuid4().hex[:8]}/run.zarr"


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """A real embedded Ray instance with 2 CPUs and no GPUs, shared by the whole session (started after the
    loopback S3 server, so that its workers inherit the server's endpoint and dummy credentials)."""
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
        store = RunStore.open(config.store_location, mode="r+")
        K = ntkdist.ntk(store.inputs[:], net=config.net)
        for i, j in store.upper_blocks():
            store.record_blocks([store.write_block(i, j, K[store.block_slice(i), store.block_slice(j)])])
        store.mark_stage("build")
        return K

    return write
