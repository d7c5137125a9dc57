"""Connecting to Ray: an embedded local instance bound to loopback, or an existing cluster by address."""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger("ntkdist.cluster")

# Ray ≤ 2.60 binds its gRPC servers to every interface unless it believes it runs a single-machine
# "cluster" (the mode it uses on macOS/Windows). That mode is what an embedded instance is, so we ask for it:
# every server then listens on 127.0.0.1 only (tests/cluster/test_runtime.py checks the sockets).
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def _loopback_only():
    import ray._private.ray_constants as ray_constants

    saved_env = os.environ.get(_LOOPBACK_ENV)
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_LOOPBACK_ENV] = "0"  # read by the Ray processes started now
    ray_constants.ENABLE_RAY_CLUSTER = False  # read by this process (already imported)
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_LOOPBACK_ENV, None)
        else:
            os.environ[_LOOPBACK_ENV] = saved_env


def start_local_ray(*, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Start an embedded single-machine Ray instance: loopback only, no dashboard.

    ``num_gpus`` may exceed the real devices: Ray then schedules on logical GPUs (how the tests exercise
    GPU placement on a CPU machine).
    """
    import ray

    with _loopback_only():
        ray.init(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
    log.info("started an embedded Ray instance (loopback only): %s", ray.cluster_resources())


@contextlib.contextmanager
def ray_session(address: str = "", *, num_cpus: int | None = None, num_gpus: int | None = None):
    """Use the Ray instance this process is connected to, else connect to ``address``, else start one.

    Parameters
    ----------
    address : str
        ``""`` starts an embedded local instance (stopped again on exit); anything else (``"auto"``,
        ``"host:port"``, ``"ray://host:port"``) is passed to ``ray.init``.
    num_cpus, num_gpus : int, optional
        Resources of an embedded instance (default: what the machine has).

    Yields
    ------
    bool
        True when this call started an embedded instance.
    """
    import ray

    if ray.is_initialized():
        yield False
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        started = False
    else:
        start_local_ray(num_cpus=num_cpus, num_gpus=num_gpus)
        started = True
    try:
        yield started
    finally:
        ray.shutdown()


def release_object_store_pages() -> int:
    """Drop this process's page-table entries for Ray's shared-memory object store; returns the bytes released.

    Every object the driver puts or reads zero-copy is mapped from the store's file in /dev/shm, and each page it
    touches then counts in its resident set (RssShmem) until the mapping goes, although the memory belongs to
    the store. Over one pass that is V and every actor's share of K·V: at N = 10⁵ with two actors, 0.4 GiB on
    top of the driver's own arrays (BENCHMARKS.md, run 3). ``madvise(MADV_DONTNEED)`` on a *shared* mapping
    only unmaps the pages from this process; the store keeps the data, and a later read maps it again
    (madvise(2)). Linux only; elsewhere, and for any mapping that is not shared, nothing is done.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            # address perms offset dev inode path: the store's file is /dev/shm/plasma… (deleted once mapped)
            if len(fields) < 6 or fields[1][3] != "s" or not fields[5].startswith("/dev/shm/plasma"):
                continue
            low, high = (int(address, 16) for address in fields[0].split("-"))
            if libc.madvise(low, high - low, _MADV_DONTNEED) == 0:
                released += high - low
    return released


_MADV_DONTNEED = 4  # <sys/mman.h> on Linux
