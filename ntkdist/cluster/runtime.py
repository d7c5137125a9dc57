"""Connecting to Ray: an embedded local instance bound to loopback, or an existing cluster by address."""

from __future__ import annotations

import contextlib
import logging
import os
import re

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

    # Ray turns its token authentication on for a new local instance and logs a warning saying so on every run;
    # that is the setting we want (loopback only, and a token), so the notice is dropped, nothing else.
    logging.getLogger(_RAY_AUTH_LOGGER).addFilter(_drop_token_auth_notice)
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


#: The logger of Ray's "Token authentication is enabled for this Ray cluster" notice.
_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def _drop_token_auth_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token authentication is enabled")


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


def local_gpu_count() -> int | None:
    """GPUs an embedded Ray instance would find on this machine (CUDA_VISIBLE_DEVICES respected), or None when
    Ray's detection cannot be asked (then nothing is assumed)."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        manager = get_accelerator_manager_for_resource("GPU")
        count = int(manager.get_current_node_num_accelerators())
        visible = manager.get_current_process_visible_accelerator_ids()
    except Exception:  # a private Ray API: if it moves, skip the check rather than guess
        return None
    return count if visible is None else min(count, len(visible))


def cluster_resources(address: str = "") -> dict:
    """The CPUs and GPUs the run's Ray cluster offers, without building anything.

    The instance this process is connected to, if any; else, for ``address = ""``, what the embedded instance
    would have (this machine's CPUs and GPUs, as `ntkdist.pipeline` starts it; no Ray is started); else a
    short connection to the cluster at ``address``. A GPU count that cannot be determined is left out.
    """
    import ray

    if ray.is_initialized():
        return {"GPU": 0.0, **ray.cluster_resources()}  # Ray lists no "GPU" for a cluster without GPUs
    if not address:
        found = {"CPU": float(max(os.cpu_count() or 1, 1))}
        gpus = local_gpu_count()
        if gpus is not None:
            found["GPU"] = float(gpus)
        return found
    with ray_session(address):
        return {"GPU": 0.0, **ray.cluster_resources()}


def get(refs, *, timeout: float | None = None):
    """`ray.get`, with errors raised in actors and tasks as the user should see them.

    A `ntkdist.errors.UserError` raised in an actor (in a method or in its constructor) or a task is re-raised
    here as itself: the same class and the actor's message, not a `RayTaskError` carrying the remote traceback.
    Every other error is re-raised as Ray delivered it: a `RayTaskError` that is also an instance of the original
    class, with the original exception as ``.cause`` and the remote traceback in its message (or an
    `ActorDiedError` naming the constructor's error).
    """
    import ray
    from ray.exceptions import ActorDiedError, RayTaskError

    from ..errors import UserError

    try:
        return ray.get(refs, timeout=timeout)
    except RayTaskError as exc:
        cause = exc
        while isinstance(cause, RayTaskError) and getattr(cause, "cause", None) is not None:
            cause = cause.cause
        if isinstance(cause, UserError) and not isinstance(cause, RayTaskError):
            raise cause.with_traceback(None) from None
        raise
    except ActorDiedError as exc:
        user_error = _constructor_user_error(exc)
        if user_error is not None:
            raise user_error from None
        raise


def _constructor_user_error(exc) -> Exception | None:
    """The UserError an actor's constructor raised, rebuilt from the `ActorDiedError` that reports it, or None.

    Ray keeps only the text of a failed constructor (its traceback, ending in ``ntkdist.errors.NAME: message``),
    not the exception, so the class is looked up by that name among `ntkdist.errors`' UserErrors.
    """
    from .. import errors

    if not getattr(exc, "actor_init_failed", False):
        return None
    text = str(exc)
    found = list(re.finditer(r"^ntkdist\.errors\.(\w+): ", text, flags=re.M))
    if not found:
        return None
    cls = getattr(errors, found[-1].group(1), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.UserError)):
        return None
    return cls(text[found[-1].end():].strip())
