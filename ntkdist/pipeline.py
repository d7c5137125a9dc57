"""The stages of a spectrum run, each a plain function of the configuration that reads and writes the store.

    prepare  load or generate X ─► validate ─► create (or resume) the store ─► inputs
    build    Ray actor pool ─► gram blocks + manifest
    solve    eigenvalues ─► spectrum (xarray)
    compare  ntkdist.theory predictions for the same network and data ─► theory_* variables of the spectrum
    report   PNG + markdown beside the store (under the local storage root for a store in object storage)

Each stage records itself in the store when its last write is done and is skipped when the store already
records it, so a crashed or killed run resumes at the first unfinished stage (and, inside build, at the first
unfinished block). A stage that writes holds the store's writer lease (`ntkdist.store.Lease`), so a second run of
the same store is refused while one is writing. The Prefect flow in ``flows/spectrum.py`` calls these functions,
one per task.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import datasets
from .config import Config, check_solver_size, storage_root
from .errors import DataError, StoreError
from .kernels import ARITHMETIC_REVISION
from .store import KERNEL_ARITHMETIC, Lease, RunStore, store_exists

log = logging.getLogger("ntkdist.pipeline")

_VERSIONED = ("ntkdist", "numpy", "scipy", "zarr", "xarray", "ray", "prefect", "numba", "cupy-cuda12x")


def package_versions() -> dict[str, str]:
    """Versions of Python, of the packages a run's numbers depend on, and of the kernel engines' arithmetic
    (`ntkdist.kernels.ARITHMETIC_REVISION`, as ``kernel_arithmetic``), recorded in the store."""
    found = {"python": platform.python_version(), KERNEL_ARITHMETIC: str(ARITHMETIC_REVISION)}
    for name in _VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def load_dataset(config: Config) -> datasets.Dataset:
    """The run's data set, validated (raises `DataError` naming the ``[data]`` key at fault)."""
    data = config.data
    if data.source == "sphere":
        return datasets.uniform_sphere(data.n, data.dim, data.seed, data.radius)
    if data.source == "gaussian":
        return datasets.isotropic_gaussian(data.n, data.dim, data.seed)
    return datasets.npy_file(config.data_path, n=data.n, dim=data.dim)


# -- prepare -------------------------------------------------------------------------------------------------------
def preflight(config: Config, *, overwrite: bool = False) -> str:
    """Every check that can fail on bad input, before anything is written; returns the data digest.

    Loads (and for files, scans) the data, checks that the Ray cluster can host the ``[cluster]`` workers
    (`check_cluster`), and checks that an existing store at the run's path was made by the same data, network and
    kernel. Raises `UserError` subclasses naming the field at fault.
    """
    dataset = load_dataset(config)
    try:
        check_solver_size(config.solver, dataset.n)
    except ValueError as exc:
        raise DataError(f"{exc} (the data has {dataset.n} points)") from None
    if config.solver.resolved_method(dataset.n) == "exact":
        # The matrix and LAPACK's copy of it, in float64.
        need, have = 16 * dataset.n ** 2, _physical_memory()
        if have and need > 0.8 * have:
            raise DataError(f"[solver] method: \"exact\" needs about {need / 2**30:.0f} GiB for the {dataset.n}×"
                            f"{dataset.n} matrix and LAPACK's copy, more than this machine's {have / 2**30:.0f} GiB; "
                            "use method = \"krylov\" (or \"auto\")")
    check_cluster(config, dataset.n)
    data_digest = datasets.digest(dataset)
    _existing_store(config, config.kernel_fingerprint(data_digest), overwrite)
    return data_digest


def check_cluster(config: Config, n: int) -> dict:
    """The Ray resources of one worker, after checking that the run's Ray cluster can host its workers.

    Every run needs Ray (the build, or a matrix-free solve). The workers that will run are ``[cluster] workers``,
    at most one per block row of the N×N matrix; for an embedded instance the cluster is this machine (nothing
    is started), otherwise the connected cluster or the one at ``[cluster] address``.

    Raises
    ------
    ConfigError
        device = "gpu" without GPUs, more workers than GPUs (or CPUs), or more CPUs asked than there are.
    """
    from .cluster import cluster_resources, worker_resources

    cluster = config.cluster
    blocks = -(-n // min(config.kernel.block, n))
    return worker_resources(cluster_resources(cluster.address), cluster.device, min(cluster.workers, blocks),
                            cluster.cpus_per_worker)


def _physical_memory() -> int:
    """Bytes of physical memory of this machine (0 when the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _holds_the_lease(stage):
    """Run a stage that writes while holding the run store's writer lease (`ntkdist.store.lease`): a second
    writer of the same store is refused naming this one; the lease is given back when the stage ends."""
    @functools.wraps(stage)
    def run(config: Config, *args, **kwargs):
        with Lease(config.store_location):
            return stage(config, *args, **kwargs)

    return run


def _existing_store(config: Config, fingerprint: str, overwrite: bool) -> RunStore | None:
    """The store already at the run's location if it may be resumed; None if there is none or it will be
    replaced."""
    location = config.store_location
    if overwrite or not store_exists(location):
        return None
    store = RunStore.open(location, mode="r+")
    if store.fingerprint != fingerprint:
        raise StoreError(
            f"[run] store: {location} holds a run of a different data set, network or kernel; give this run "
            "another [run] name or store, or pass --overwrite to replace it"
        )
    return store


@_holds_the_lease
def prepare(config: Config, *, overwrite: bool = False, data_digest: str | None = None) -> dict:
    """Validate the data and create the run store with its inputs, or check and reuse an existing one.

    A store made by a different configuration of data, network or kernel is never reused silently: it is an
    error unless ``overwrite`` is set. A store whose prepare stage never finished is recreated.
    """
    start = time.perf_counter()
    if data_digest is None:
        data_digest = preflight(config, overwrite=overwrite)
    dataset = load_dataset(config)
    fingerprint = config.kernel_fingerprint(data_digest)
    location = config.store_location
    block = min(config.kernel.block, dataset.n)

    store = _existing_store(config, fingerprint, overwrite)
    if store is not None:
        if store.stage("prepare") is not None:
            log.info("resuming %s", location)
            return {"store": location, "resumed": True, "n": store.n, "dim": store.dim}
        overwrite = True  # a prepare that never finished: nothing in it is worth keeping

    store = RunStore.create(
        location, n=dataset.n, dim=dataset.dim, block=block, dtype=config.kernel.dtype,
        config=config.to_dict(), fingerprint=fingerprint, versions=package_versions(), overwrite=overwrite,
    )
    row = 0
    # Chunk-aligned writes: whole input chunks per step.
    for chunk in dataset.iter_chunks(rows=max(block, datasets.ROW_CHUNK // block * block)):
        store.inputs[row:row + len(chunk)] = chunk
        row += len(chunk)
    store.mark_stage("prepare", data=dataset.description, data_sha256=data_digest,
                     seconds=round(time.perf_counter() - start, 3))
    return {"store": location, "resumed": False, "n": dataset.n, "dim": dataset.dim}


def _open_after(config: Config, stage: str) -> RunStore:
    store = RunStore.open(config.store_location, mode="r+")
    if store.stage(stage) is None:
        raise StoreError(f"{config.store_location}: the {stage} stage has not finished; run the whole flow "
                         "(`ntkdist run CONFIG.toml`) so it completes first")
    return store


# -- build ---------------------------------------------------------------------------------------------------------
@_holds_the_lease
def build(config: Config) -> dict:
    """Compute the missing Gram blocks on a Ray actor pool (embedded local Ray unless an address is given), with a
    progress bar on a terminal and a progress artifact inside a Prefect flow run (`ntkdist.cluster.BuildProgress`);
    record the bound on the float32 storage error (`RunStore.record_gram_error_bound`)."""
    from .cluster import BuildProgress, build_gram, ray_session

    store = _open_after(config, "prepare")
    record = store.stage("build")
    if record is not None and record.get("matrix_free") and config.solver.operator != "matrix_free":
        # An earlier matrix-free run of the same data stored no Gram matrix; this run needs one.
        store.clear_stages("build", "solve", "compare", "report")
        record = None
    if record is not None:
        return {"store": store.location, "resumed": True, **record}
    if config.solver.operator == "matrix_free":
        # The solve recomputes every panel from the inputs on each pass: nothing to build or store.
        info = {"matrix_free": True, "computed_blocks": 0, "skipped_blocks": 0, "seconds": 0.0}
        store.mark_stage("build", **info)
        return {"store": store.location, "resumed": False, **info}
    cluster = config.cluster
    embedded_cpus = None
    if not cluster.address:
        embedded_cpus = max(os.cpu_count() or 1, 1)
    sketch_rank = _ride_along_sketch_rank(config, store.n)
    with ray_session(cluster.address, num_cpus=embedded_cpus):
        built = build_gram(store.location, net=config.net, kind=config.kernel.kind, workers=cluster.workers,
                           device=cluster.device, cpus_per_worker=cluster.cpus_per_worker,
                           width=config.network.width, seed=config.network.seed,
                           sketch_rank=sketch_rank, sketch_seed=config.solver.seed,
                           progress=BuildProgress(f"build {config.run.name}"))
    missing = store.missing_blocks()
    if missing:
        raise RuntimeError(f"build finished with {len(missing)} blocks unrecorded, e.g. {missing[:3]}")
    info = {"computed_blocks": built.computed, "skipped_blocks": built.skipped,
            "seconds": round(built.seconds, 3), "entries_per_second": round(built.entries_per_second),
            "workers": [{k: w[k] for k in ("pid", "note", "threads")} for w in built.workers],
            "sketch": built.sketch, "gram_error_bound": store.record_gram_error_bound(),
            # What the pool survived: blocks requeued after a lost worker, actors Ray restarted, actors replaced.
            "faults": {"requeued": built.requeued, "restarts": built.restarts, "replaced": built.replaced}}
    store.mark_stage("build", **info)
    return {"store": store.location, "resumed": False, **info}


def _ride_along_sketch_rank(config: Config, n: int) -> int | None:
    """Columns of the Nyström sketch the build gathers for ``method = "nystrom"`` (rank + held-out test vectors),
    or None when the run's solve does not use one."""
    from .linalg.nystrom import DEFAULT_TEST_VECTORS, default_rank

    if config.solver.resolved_method(n) != "nystrom":
        return None
    return default_rank(n, config.solver.resolved_k(n)) + DEFAULT_TEST_VECTORS


def _gathered_top(config: Config, store: RunStore, operator_error: float):
    """The top-k from the sketch the build gathered, or None (no sketch, another seed or rank, or incomplete)."""
    from .cluster import read_sketch
    from .linalg.nystrom import DEFAULT_TEST_VECTORS, nystrom_from_gathered_sketch

    rank = _ride_along_sketch_rank(config, store.n)
    sketch = read_sketch(store) if rank is not None else None
    if sketch is None or not sketch["complete"] or sketch["rank"] != rank or sketch["seed"] != config.solver.seed:
        return None
    return nystrom_from_gathered_sketch(sketch["omega"], sketch["Y"], config.solver.resolved_k(store.n),
                                        test_vectors=DEFAULT_TEST_VECTORS, operator_error=operator_error,
                                        vectors=config.solver.vectors)


# -- solve ---------------------------------------------------------------------------------------------------------
@_holds_the_lease
def solve(config: Config) -> dict:
    """The spectrum of the Gram matrix through an operator, written as the ``spectrum`` group (xarray).

    The exact method reads the stored matrix into memory (it only runs where that fits); every other method
    multiplies through `operator_for` — actors holding, streaming or recomputing their block-row panels — and the
    driver holds nothing larger than a few N×b blocks.
    """
    from .linalg.spectrum import solve_spectrum
    from .store.spectrum import spectrum_dataset
    from .theory.bounds import effective_rank

    store = _open_after(config, "build")
    record = store.stage("solve")
    if record is not None and record.get("solver") == config.solver.model_dump(mode="json"):
        return {"store": store.location, "resumed": True, **record}
    store.clear_stages("solve", "compare", "report")
    store.delete_spectrum()
    start = time.perf_counter()
    solver = config.solver
    n = store.n
    method = solver.resolved_method(n)
    k = solver.resolved_k(n)
    from .cluster import PassProgress
    from .linalg.passes import PassLog

    # A bar over the passes (on a terminal; the exact method makes none).
    progress = PassProgress(solver.max_passes, f"solve {config.run.name}", show=False if method == "exact" else None)
    with operator_for(config, store) as (operator, operator_kind):
        # Single-pass Nyström whose pass was the build: its sketch is in the store already.
        top = _gathered_top(config, store, operator.error_bound) if method == "nystrom" else None
        try:
            solution = solve_spectrum(operator, method=method, k=k, tol=solver.tol, max_passes=solver.max_passes,
                                      smallest=solver.smallest, density_bins=DENSITY_BINS if solver.density else 0,
                                      vectors=solver.vectors, seed=solver.seed, top=top, log=PassLog(on_pass=progress),
                                      driver_memory_bytes=int(solver.driver_memory_gb * 2**30))
        finally:
            progress.close()
    dataset = spectrum_dataset(solution, kind=config.kernel.kind,
                               effective_rank=effective_rank(solution.top.values, trace=solution.trace), attrs={
        "title": f"ntkdist spectrum of run {config.run.name}",
        "kind": config.kernel.kind,
        "n": n,
        "dim": store.dim,
        "network": config.net.describe(),
        "solver": method,
        "tol": solver.tol,
        "seed": solver.seed,
        "operator": operator_kind,
        "stored_dtype": config.kernel.dtype,
        "config": config.to_dict(),
        "versions": package_versions(),
        "store_fingerprint": store.fingerprint,
    })
    store.write_spectrum(dataset)
    seconds = round(time.perf_counter() - start, 3)
    values = solution.top.values
    info = {"solver": solver.model_dump(mode="json"), "method": method, "operator": operator_kind,
            "modes": len(values), "passes": solution.passes, "seconds_per_pass": round(solution.seconds_per_pass, 4),
            "seconds": seconds, "lambda_max": float(values[0]), "lambda_min": solution.lambda_min}
    store.mark_stage("solve", **info)
    return {"store": store.location, "resumed": False, **info}


#: Bins of the stored spectral density.
DENSITY_BINS = 60


def resolved_operator(config: Config, n: int) -> str:
    """The operator kind a solve uses: "dense" for the exact method, else memory, stored or matrix_free."""
    solver = config.solver
    if solver.resolved_method(n) == "exact":
        return "dense"
    if solver.operator != "auto":
        return solver.operator
    # Each actor holds an equal share of the N×N panels; hold them when the share fits the budget.
    itemsize = 4 if config.kernel.dtype == "float32" else 8
    share = n * n * itemsize / max(1, config.cluster.workers)
    return "memory" if share <= config.cluster.memory_budget_gb * 2**30 else "stored"


@contextlib.contextmanager
def operator_for(config: Config, store: RunStore):
    """The operator of the run's Gram matrix and its kind (a context: actors are stopped on exit)."""
    kind = resolved_operator(config, store.n)
    if kind == "dense":
        from .linalg import DenseOperator

        # In its stored dtype: a float32 matrix keeps its storage error bound (the operator promotes per block).
        yield DenseOperator(store.read_gram(dtype=store.gram.dtype), error_bound=store.gram_error_bound), kind
        return
    from .cluster import RayGramOperator, ray_session

    cluster = config.cluster
    with ray_session(cluster.address, num_cpus=None if cluster.address else max(os.cpu_count() or 1, 1)):
        with RayGramOperator(store.location, mode=kind, net=config.net, kind=config.kernel.kind,
                             workers=cluster.workers, device=cluster.device, cpus_per_worker=cluster.cpus_per_worker,
                             memory_budget=int(cluster.memory_budget_gb * 2**30)) as operator:
            yield operator, kind


# -- compare -------------------------------------------------------------------------------------------------------
#: Passes over K the compare stage may spend (the centred effective rank, Murray Thm 4.3), and the largest N for
#: which it streams a stored Gram matrix to do so; matrix-free runs spend none (each pass recomputes N² entries).
COMPARE_PASSES = 8
COMPARE_STREAM_MAX_N = 60_000


@_holds_the_lease
def compare(config: Config) -> dict:
    """Hold the computed spectrum against every theoretical prediction that applies (``theory_*`` variables).

    Sphere eigenvalues for uniform sphere data, λ_min lower/upper bounds against the solver's certified λ_min,
    effective-rank bounds, the generic λ_k bound and the positivity verdict, each with attrs citing paper and
    equation (`ntkdist.theory.compare`). Nothing here loads the Gram matrix beyond what the exact solver already
    held: bounds that need dense N×N spectra run only below ``max_n``; the centred effective rank takes at most
    `COMPARE_PASSES` products through an operator; what did not fit is listed, with the reason, in the dataset's
    ``theory`` attrs and the report.
    """
    from .linalg import DenseOperator
    from .store import StoredGramOperator, theory_variables
    from .theory.compare import compare_spectrum

    store = _open_after(config, "solve")
    record = store.stage("compare")
    if record is not None:
        return {"store": store.location, "resumed": True, **record}
    store.clear_stages("compare", "report")
    start = time.perf_counter()
    spectrum = store.read_spectrum().load()
    data = config.data
    n = store.n
    kind = spectrum.attrs.get("operator", resolved_operator(config, n))
    operator, pass_budget = None, 0
    if kind == "dense":
        operator = DenseOperator(store.read_gram(dtype=store.gram.dtype), error_bound=store.gram_error_bound)
        pass_budget = COMPARE_PASSES
    elif kind in ("memory", "stored") and n <= COMPARE_STREAM_MAX_N:
        operator, pass_budget = StoredGramOperator(store), COMPARE_PASSES
    optional = {name: float(spectrum[name].values) for name in ("lambda_min", "lambda_min_error")
                if name in spectrum}
    comparison = compare_spectrum(
        store.inputs[:], config.net, kind=config.kernel.kind, eigenvalues=spectrum["eigenvalue"].values,
        eigenvalue_error=spectrum["eigenvalue_error"].values if "eigenvalue_error" in spectrum else None,
        trace=float(spectrum["trace"].values) if "trace" in spectrum else float(store.diagonal().sum()),
        operator=operator, pass_budget=pass_budget, seed=config.solver.seed,
        sphere_radius=data.radius if data.source == "sphere" else None, **optional,
    )
    del operator
    result = theory_variables(comparison)
    _write_theory(store, spectrum, result)
    seconds = round(time.perf_counter() - start, 3)
    info = {"predictions": len(result.variables), "skipped": len(result.skipped),
            "eigendecompositions": result.eigendecompositions, "passes": result.passes,
            "pass_budget": result.pass_budget, "seconds": seconds}
    store.mark_stage("compare", **info)
    return {"store": store.location, "resumed": False, **info}


def _write_theory(store: RunStore, spectrum, result) -> None:
    """Add the ``theory_*`` variables (and the comparison summary) to the stored spectrum."""
    from .store import theory_dataset

    store.add_to_spectrum(theory_dataset(result, spectrum.attrs), replace_prefix="theory_")


# -- report --------------------------------------------------------------------------------------------------------
def report_paths(config: Config) -> dict[str, Path]:
    """Where the report of a run goes: beside a local store, named after it; for a store in object storage, under
    the local storage root (``$NTKDIST_STORAGE/runs``), named after the URL's last part (storage/README.md)."""
    location = config.store_location
    if "://" in location:
        base = storage_root().resolve() / "runs" / Path(location.rsplit("/", 1)[-1]).with_suffix("")
    else:
        base = Path(location).with_suffix("")
    return {"plot": base.with_name(base.name + ".spectrum.png"), "density": base.with_name(base.name + ".density.png"),
            "trace_share": base.with_name(base.name + ".trace-share.png"),
            "summary": base.with_name(base.name + ".summary.md")}


@_holds_the_lease
def report(config: Config) -> dict:
    """The figures (`ntkdist.figures`: the spectrum with error bars and theory, the spectral density when the solve
    estimated it, the cumulative trace share) and a markdown summary, beside the store (`report_paths`)."""
    from .figures import plot_density, plot_spectrum, plot_trace_share, summary_markdown

    store = _open_after(config, "solve")
    spectrum = store.read_spectrum().load()
    values = spectrum["eigenvalue"].values
    title = spectrum.attrs["title"]
    paths = report_paths(config)
    errors = spectrum["eigenvalue_error"].values if "eigenvalue_error" in spectrum else None
    plot_spectrum(values, paths["plot"], title=title, kind=config.kernel.kind, theory=spectrum, errors=errors)
    trace = float(spectrum["trace"].values) if "trace" in spectrum else float(store.diagonal().sum())
    plot_trace_share(values, trace, paths["trace_share"], title=title)
    if plot_density(spectrum, paths["density"], title=title) is None:
        paths["density"].unlink(missing_ok=True)  # a figure of an earlier solve would mislead
        del paths["density"]
    text = summary_markdown(config, store, spectrum, paths)
    paths["summary"].write_text(text)
    files = {name: str(path) for name, path in paths.items()}
    store.mark_stage("report", **files)
    return {"store": store.location, **files, "markdown": text}


def run_all(config: Config, *, overwrite: bool = False) -> dict:
    """All stages in order, without Prefect (what the flow does, for scripts and notebooks)."""
    results = {"prepare": prepare(config, overwrite=overwrite)}
    results["build"] = build(config)
    results["solve"] = solve(config)
    results["compare"] = compare(config)
    results["report"] = report(config)
    return results
