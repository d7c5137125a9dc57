"""The Gram build side by side: compute only, into a store on local disk, and into a loopback S3 server.

    python -m bench.build --n 50000 --dim 64 --depth 3 --repeats 3 --json bench/results/build-50000.json
    python -m bench.build --n 6000 --dim 64 --repeats 1          # seconds: while developing

The case: the depth-``--depth`` ReLU NTK (stax convention, weight_var 2, no bias) of N i.i.d. standard Gaussian
points in R^d, stored as float32 in blocks of ``--block``, built by ``--workers`` CPU actors of one embedded Ray
instance. Each repeat times three legs, each on a fresh store of the same inputs:

compute only
    The same pool (`GramBlockWorker` actors with the same resources and threads, two tasks in flight per actor,
    tasks as `plan_tasks` makes them) computes every upper block and discards it: no write, no record.
local store
    `build_gram` into a store on local disk (``--dir``, default a temporary directory).
S3
    `build_gram` into ``s3://BUCKET/…`` on a `moto_server` started by this script on 127.0.0.1 with dummy
    credentials (set in the environment before Ray starts, so the actors inherit them). Skipped, with the
    reason printed, when `RunStore.create` does not accept URLs.

Reported per leg (median over the repeats): wall time of the blocks (every actor started and answering, in both
kinds of leg: `BuildReport.block_seconds`; ``wall_seconds`` also counts starting the actors), entries/s (both
triangles: what is stored), MB/s of float32 Gram bytes, the driver's peak RSS (VmHWM of this process, reset
before each leg through /proc/self/clear_refs) and the CPU time the hypervisor took from the machine during the
leg (steal: on a virtual machine, writing to its disk costs the computing cores; `bench.io_cost` measures how
much a MB); the ratio of each store leg to compute only, with the issue's acceptance (ratio ≤ 1.30, driver peak
< 1.5 GB). BENCHMARKS.md records the results.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.io_cost import cpu_jiffies, write_json
from ntkdist.cluster import GramBlockWorker, build_gram, get, plan_tasks, ray_session, resources_per_worker
from ntkdist.kernels import MLP
from ntkdist.store import BlockRecord, RunStore

DTYPE = "float32"
#: Acceptance of the issue: a store build costs at most this much over compute only, and the driver stays small.
MAX_RATIO = 1.30
MAX_DRIVER_BYTES = 1.5e9
BUCKET = "ntkdist-bench"


# -- the compute-only pool -----------------------------------------------------------------------------------------
class _DiscardingStore:
    """A run store whose `write_block` drops the block: the rest (inputs, block slices, dtype) is the real one."""

    def __init__(self, store: RunStore):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def write_block(self, i: int, j: int, values: np.ndarray) -> BlockRecord:
        return BlockRecord(i, j, 0, 0.0)


class ComputeOnlyWorker(GramBlockWorker):
    """A `GramBlockWorker` that computes each block exactly as a build does and then discards it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._store = _DiscardingStore(self._store)


def compute_only(location: str, net: MLP, workers: int) -> float:
    """Seconds for a pool of `ComputeOnlyWorker` actors to compute every upper block (actors started first)."""
    import ray

    store = RunStore.open(location)
    resources = resources_per_worker("cpu", workers, None)
    Actor = ray.remote(ComputeOnlyWorker)
    actors = [Actor.options(**resources).remote(location, net, "ntk", "cpu", max(1, int(resources["num_cpus"])))
              for _ in range(workers)]
    get([a.describe.remote() for a in actors])
    queue = list(reversed(plan_tasks(store.upper_blocks())))
    start = time.perf_counter()
    in_flight = {}
    for actor in actors * 2:  # two tasks in flight per actor, as build_gram keeps
        if queue:
            in_flight[actor.build.remote(queue.pop())] = actor
    while in_flight:
        [ref], _ = ray.wait(list(in_flight), num_returns=1)
        actor = in_flight.pop(ref)
        get(ref)
        if queue:
            in_flight[actor.build.remote(queue.pop())] = actor
    seconds = time.perf_counter() - start
    for actor in actors:
        ray.kill(actor)
    return seconds


# -- stores --------------------------------------------------------------------------------------------------------
def new_store(location, X: np.ndarray, block: int) -> RunStore:
    """A fresh float32 run store at ``location`` holding the inputs (what the prepare stage makes)."""
    store = RunStore.create(location, n=len(X), dim=X.shape[1], block=block, dtype=DTYPE, config={},
                            fingerprint="bench-build", versions={}, overwrite=True)
    for start in range(0, len(X), block * 8):
        store.inputs[start:start + block * 8] = X[start:start + block * 8]
    return store


def timed_build(location, net: MLP, workers: int) -> float:
    """Seconds of the build's blocks: from every actor ready to the last record (as `compute_only` times its
    pool; starting the actors is in the leg's ``wall_seconds``)."""
    report = build_gram(location, net=net, kind="ntk", workers=workers, device="cpu")
    return report.block_seconds


@contextlib.contextmanager
def _working_directory(path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def url_support_missing(url: str) -> str | None:
    """Why `RunStore.create` cannot make a store at ``url`` (None when it can), tried in an empty working
    directory: a RunStore that takes only paths makes a local directory named ``s3:`` there instead."""
    with tempfile.TemporaryDirectory() as scratch, _working_directory(scratch):
        try:
            RunStore.create(f"{url}/probe", n=1, dim=1, block=1, dtype=DTYPE, config={}, fingerprint="probe",
                            versions={}, overwrite=True)
        except Exception as exc:  # any refusal is the reason to print
            return f"RunStore.create refused {url}: {exc}"
        if any(Path(scratch).iterdir()):
            return "RunStore.create does not accept object-store URLs yet (it made a local directory 's3:')"
    return None


# -- the loopback S3 server ----------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def loopback_s3():
    """A `moto_server` on 127.0.0.1 with bucket `BUCKET`; the AWS_* variables point at it (dummy credentials)."""
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    settings = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": endpoint}
    before = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        import boto3

        deadline = time.monotonic() + 30
        while True:
            try:
                boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
                break
            except Exception:  # not listening yet
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"moto_server did not start on {endpoint}") from None
                time.sleep(0.2)
        yield f"s3://{BUCKET}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # it holds every object in memory: 10 GB at N = 50000 take long to free
            server.kill()
            server.wait()
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- measuring -----------------------------------------------------------------------------------------------------
def reset_peak_rss() -> None:
    """Reset this process's VmHWM to its current RSS (Linux: "5" to /proc/self/clear_refs)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(leg) -> dict:
    """Run one leg (a callable returning its seconds) with the driver's peak RSS reset before it, and the CPU time
    the hypervisor took from this machine meanwhile (steal; `bench.io_cost` says what writing costs in it)."""
    reset_peak_rss()
    before = cpu_jiffies()
    start = time.perf_counter()
    seconds = leg()
    wall = time.perf_counter() - start
    steal = (cpu_jiffies()["steal"] - before["steal"]) / os.sysconf("SC_CLK_TCK")
    return {"seconds": seconds, "wall_seconds": wall, "driver_peak_rss_bytes": peak_rss_bytes(),
            "steal_seconds": steal}


def summarise(runs: list[dict], entries: int, itemsize: int) -> dict:
    seconds = statistics.median(r["seconds"] for r in runs)
    return {"seconds": seconds, "seconds_all": [r["seconds"] for r in runs],
            "wall_seconds": statistics.median(r["wall_seconds"] for r in runs), "entries_per_second": entries / seconds,
            "megabytes_per_second": entries * itemsize / seconds / 1e6,
            "driver_peak_rss_bytes": max(r["driver_peak_rss_bytes"] for r in runs),
            "steal_seconds": statistics.median(r["steal_seconds"] for r in runs)}


def run_legs(args, X: np.ndarray, net: MLP, scratch: Path, s3_root: str | None) -> dict[str, list[dict]]:
    """Each repeat: the three legs on fresh stores of the same inputs (the S3 leg only with an ``s3_root``)."""
    legs = {"compute_only": [], "local_store": [], "s3_store": []}
    for repeat in range(args.repeats):
        local = scratch / f"run-{repeat}.zarr"
        new_store(local, X, args.block)
        legs["compute_only"].append(measure(lambda: compute_only(str(local), net, args.workers)))
        legs["local_store"].append(measure(lambda: timed_build(local, net, args.workers)))
        if s3_root is not None:
            remote = f"{s3_root}/run-{repeat}.zarr"
            new_store(remote, X, args.block)
            legs["s3_store"].append(measure(lambda: timed_build(remote, net, args.workers)))
        shutil.rmtree(local, ignore_errors=True)
        print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(
            f"{name} {runs[-1]['seconds']:.2f} s" for name, runs in legs.items() if runs), flush=True)
    return legs


def run(args) -> dict:
    """Every leg, each repeat on a fresh store of the same inputs; the medians, ratios and acceptance."""
    X = np.random.default_rng(args.seed).standard_normal((args.n, args.dim))
    net = MLP(depth=args.depth, activation="relu", weight_var=2.0, bias_var=0.0)
    entries, itemsize = args.n * args.n, np.dtype(DTYPE).itemsize
    scratch = Path(tempfile.mkdtemp(prefix="bench-build-", dir=args.dir))
    results = {"case": {"n": args.n, "dim": args.dim, "depth": args.depth, "block": args.block, "dtype": DTYPE,
                        "workers": args.workers, "repeats": args.repeats, "activation": "relu"},
               "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "python": platform.python_version()}}
    with contextlib.ExitStack() as stack:
        s3_root = None if args.no_s3 else stack.enter_context(loopback_s3())
        skip_s3 = "--no-s3" if s3_root is None else url_support_missing(s3_root)
        # Started after the AWS_* variables are set, so the actors inherit them (an instance this process is already
        # connected to is used as it is).
        stack.enter_context(ray_session("", num_cpus=args.workers))
        stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        # An untimed build of two block rows first: whatever the first actors pay once (numba compiling the
        # kernels into its cache, Ray's first worker processes) no leg pays.
        new_store(scratch / "warm-up.zarr", X[:2 * args.block], args.block)
        timed_build(scratch / "warm-up.zarr", net, args.workers)
        legs = run_legs(args, X, net, scratch, None if skip_s3 else s3_root)
    for name, runs in legs.items():
        if runs:
            results[name] = summarise(runs, entries, itemsize)
    if skip_s3 is not None:
        results["s3_store"] = {"skipped": skip_s3}
    compute = results["compute_only"]["seconds"]
    for name in ("local_store", "s3_store"):
        if "seconds" in results[name]:
            leg = results[name]
            leg["ratio_to_compute_only"] = leg["seconds"] / compute
            leg["acceptance"] = {"ratio_at_most_1.30": leg["ratio_to_compute_only"] <= MAX_RATIO,
                                 "driver_peak_under_1.5GB": leg["driver_peak_rss_bytes"] < MAX_DRIVER_BYTES}
    return results


def print_table(results: dict) -> None:
    print(f"\nN = {results['case']['n']}, d = {results['case']['dim']}, depth {results['case']['depth']}, relu, "
          f"float32, block {results['case']['block']}, {results['case']['workers']} workers; medians of "
          f"{results['case']['repeats']}")
    print(f"{'leg':<14}{'s':>9}{'wall s':>9}{'M entries/s':>13}{'MB/s':>9}{'÷ compute':>11}{'driver peak MB':>16}"
          f"{'steal s':>9}")
    for name in ("compute_only", "local_store", "s3_store"):
        leg = results[name]
        if "skipped" in leg:
            print(f"{name:<14}skipped: {leg['skipped']}")
            continue
        ratio = leg.get("ratio_to_compute_only", 1.0)
        print(f"{name:<14}{leg['seconds']:>9.2f}{leg['wall_seconds']:>9.2f}{leg['entries_per_second'] / 1e6:>13.1f}"
              f"{leg['megabytes_per_second']:>9.1f}{ratio:>11.3f}{leg['driver_peak_rss_bytes'] / 1e6:>16.0f}"
              f"{leg['steal_seconds']:>9.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--block", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default=None, help="where the local stores go (default: a temporary directory)")
    parser.add_argument("--no-s3", action="store_true", help="skip the loopback S3 leg")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    results = run(args)
    print_table(results)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
