"""Eigensolvers side by side: ntkdist against LAPACK, ARPACK, dask and scipy's LOBPCG, in one run per case.

    python -m bench.solvers dense --n 20000 --dim 16            # top-100 and λ_min, every peer (≈ 15 min)
    python -m bench.solvers dense --n 20000 --dim 64 --tol 1e-6 --max-passes 40 --repeat 1 --max-basis 4600
                                                                 # the 2080-fold cluster (≈ 30 min)
    python -m bench.solvers dense --n 8000 --dim 16 --quick      # a few minutes: no LAPACK reference subset
    python -m bench.solvers matrix-free --n 100000 --dim 16 --tol 1e-6 --max-passes 8   # ≤ 45 min on two cores

Every case is the depth-3 ReLU NTK (stax convention, weight_var 2, no bias) of N i.i.d. standard Gaussian points
in R^d. Results are printed as a table and written as JSON (``--json``); BENCHMARKS.md records them.

dense
    The Gram matrix is built into a run store by the build stage (chunks 2048²) and read into memory. Timed:
    ntkdist's top-k (block Krylov) on the in-memory matrix and on the store (`StoredGramOperator`);
    ``scipy.linalg.eigh(subset_by_index)`` (LAPACK ``syevr``, the reference); ``scipy.sparse.linalg.eigsh``
    (ARPACK); ``dask.array.linalg.svd_compressed`` over the same zarr store with as many passes as ntkdist used;
    λ_min by ntkdist (LOBPCG, Nyström-preconditioned) against ``scipy.sparse.linalg.lobpcg`` with its defaults;
    PRIMME when it imports. λ_min's reference is certified by two Cholesky factorisations of K − σI, which
    bracket λ_min without a second LAPACK eigen-decomposition.
matrix-free
    Ray actors recompute their block-row panels from X on every pass (the Gram matrix is never stored): top-100,
    λ_min and the density share each pass. Recorded: time per pass against the kernel-only time of N² entries
    plus the GEMM time of that pass's block, and the driver's peak memory: private (RssAnon), shared (RssShmem:
    Ray object-store pages it maps) and RSS. The solvers are sized by ``--driver-memory-gb`` as ``ntkdist run``
    sizes them from ``[solver] driver_memory_gb``, unless ``--rank``, ``--deflate`` or ``--max-basis`` say
    otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from ntkdist.kernels import MLP, gram_block
from ntkdist.linalg import DenseOperator

NET = MLP(depth=3, activation="relu", weight_var=2.0, bias_var=0.0)
CHUNK = 2048


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__}


def peak_rss_mib() -> float:
    """Peak resident set of this process (the driver), MiB. It includes shared pages the process has mapped,
    such as Ray object-store buffers read zero-copy."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class AnonymousMemoryPeak:
    """Samples this process's resident memory in /proc/self/status every 0.2 s: RssAnon (private: the driver's own
    arrays), RssShmem (shared pages it has mapped: Ray object-store buffers it wrote or read zero-copy) and VmRSS
    (their sum plus mapped files). Peaks in KiB; ``peak_kib`` is the private one."""

    FIELDS = ("RssAnon", "RssShmem", "VmRSS")

    def __init__(self, interval: float = 0.2, every: float = 1.0):
        import threading

        self.peaks = dict.fromkeys(self.FIELDS, 0)
        # (seconds since start, RssAnon MiB, RssShmem MiB) every ``every`` s: where in the run the peak falls.
        self.timeline: list[tuple[float, float, float]] = []
        self._every = every
        self._start = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    @property
    def peak_kib(self) -> int:
        return self.peaks["RssAnon"]

    @classmethod
    def current_kib(cls) -> dict:
        out = dict.fromkeys(cls.FIELDS, 0)
        with open("/proc/self/status") as fh:
            for line in fh:
                name = line.split(":", 1)[0]
                if name in out:
                    out[name] = int(line.split()[1])
        return out

    def _sample(self):
        current = self.current_kib()
        for name, value in current.items():
            self.peaks[name] = max(self.peaks[name], value)
        now = time.perf_counter() - self._start
        if not self.timeline or now - self.timeline[-1][0] >= self._every:
            self.timeline.append((round(now, 1), round(current["RssAnon"] / 1024, 1),
                                  round(current["RssShmem"] / 1024, 1)))

    def _run(self, interval):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def relative_errors(values, reference) -> np.ndarray:
    values, reference = np.asarray(values, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    return np.abs(values - reference) / np.abs(reference)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


# -- peers -----------------------------------------------------------------------------------------------------------
def lapack_top(K, k):
    n = K.shape[0]
    return scipy.linalg.eigh(K, eigvals_only=True, driver="evr", subset_by_index=(n - k, n - 1))[::-1]


def arpack_top(K, k, tol):
    return np.sort(scipy.sparse.linalg.eigsh(K, k=k, which="LA", tol=tol, return_eigenvectors=False))[::-1]


def dask_top(gram_location, k, passes, oversample, seed):
    """``svd_compressed`` over the zarr store; each power iteration reads K twice (K·Q and Kᵀ·Q)."""
    import dask
    import dask.array as da

    A = da.from_zarr(str(gram_location))
    # Passes of svd_compressed: one for the sketch, two per power iteration, one for the final projection.
    power = max(0, (passes - 2) // 2)
    with dask.config.set(scheduler="threads"):
        _, s, _ = da.linalg.svd_compressed(A, k=k, n_power_iter=power, n_oversamples=oversample, seed=seed,
                                           compute=False)
        s = s.compute()
    return np.sort(np.asarray(s))[::-1][:k], 2 + 2 * power


def scipy_lobpcg_defaults(K, seed):
    X = np.random.default_rng(seed).standard_normal((K.shape[0], 1))
    values = scipy.sparse.linalg.lobpcg(K, X, largest=False)[0]
    return float(values[0])


def primme_top(K, k, tol):
    try:
        import primme
    except ImportError:
        return None
    values = primme.eigsh(K, k=k, which="LA", tol=tol, return_eigenvectors=False)
    return np.sort(values)[::-1]


def certify_lambda_min(K, lower: float) -> bool:
    """True when K − lower·I is positive definite (a Cholesky factorisation succeeds), so λ_min > lower."""
    shifted = K.copy()
    shifted[np.diag_indices_from(shifted)] -= lower
    try:
        scipy.linalg.cholesky(shifted, lower=True, overwrite_a=True, check_finite=False)
        return True
    except np.linalg.LinAlgError:
        return False


# -- cases -----------------------------------------------------------------------------------------------------------
def build_store(workdir: Path, n: int, dim: int, seed: int):
    """The case's Gram matrix built into a run store by the real build stage (embedded Ray)."""
    from ntkdist import pipeline
    from ntkdist.config import Config
    from ntkdist.store import RunStore

    config = Config.from_dict({
        "run": {"name": "bench", "store": str(workdir / "bench.zarr")},
        "data": {"source": "gaussian", "n": n, "dim": dim, "seed": seed},
        "network": {"depth": NET.depth, "activation": "relu", "weight_var": NET.weight_var, "bias_var": NET.bias_var},
        "kernel": {"block": CHUNK},
        "solver": {"method": "krylov", "k": 100},
    })
    pipeline.prepare(config)
    start = time.perf_counter()
    pipeline.build(config)
    return RunStore.open(config.store_location), time.perf_counter() - start


def dense_case(n: int, dim: int, *, k: int, tol: float, seed: int, quick: bool, max_passes: int,
               repeat: int = 3, max_basis: int | None = None) -> dict:
    from ntkdist.linalg.krylov import topk_eigenpairs
    from ntkdist.linalg.lobpcg import smallest_eigenpairs
    from ntkdist.store import StoredGramOperator

    out = {"case": "dense", "n": n, "dim": dim, "k": k, "tol": tol}
    workdir = Path(tempfile.mkdtemp(prefix="ntkdist-bench-"))
    try:
        store, out["build_seconds"] = build_store(workdir, n, dim, seed)
        gram_location = f"{store.location}/gram"
        K = store.read_gram()

        options = {} if max_basis is None else {"max_basis": max_basis}
        runs = [timed(topk_eigenpairs, DenseOperator(K), k, seed=seed, tol=tol, max_passes=max_passes, **options)
                for _ in range(repeat)]
        ours = runs[0][0]
        seconds = float(np.median([t for _, t in runs]))
        out["ntkdist_memory"] = {"seconds": seconds, "seconds_each": [t for _, t in runs], "passes": ours.passes,
                                 "converged": ours.converged, "info": _plain(ours.info)}
        stored, seconds = timed(topk_eigenpairs, StoredGramOperator(store), k, seed=seed, tol=tol,
                                max_passes=max_passes, **options)
        out["ntkdist_stored"] = {"seconds": seconds, "passes": stored.passes, "converged": stored.converged}

        if quick:
            reference, seconds = np.linalg.eigvalsh(K)[::-1][:k], None
        else:
            reference, seconds = timed(lapack_top, K, k)
        out["lapack_subset"] = {"seconds": seconds}
        err = relative_errors(ours.values, reference)
        out["ntkdist_memory"].update(max_rel_error=float(err.max()),
                                     bound_holds=bool(np.all(np.abs(ours.values - reference) <= ours.errors)),
                                     max_rel_bound=float(np.max(ours.errors / np.abs(ours.values))))
        out["ntkdist_stored"]["max_rel_error"] = float(relative_errors(stored.values, reference).max())

        arpack, seconds = timed(arpack_top, K, k, tol)
        out["arpack_eigsh"] = {"seconds": seconds, "max_rel_error": float(relative_errors(arpack, reference).max())}

        block = int(ours.info.get("block", k + 50))
        (dask_values, dask_passes), seconds = timed(dask_top, gram_location, k, ours.passes, block - k, seed)
        out["dask_svd_compressed"] = {"seconds": seconds, "passes": dask_passes,
                                      "max_rel_error": float(relative_errors(dask_values, reference).max()),
                                      "rel_error_k": float(relative_errors(dask_values, reference)[-1])}
        primme, seconds = timed(primme_top, K, k, tol)
        out["primme"] = ({"seconds": seconds, "max_rel_error": float(relative_errors(primme, reference).max())}
                         if primme is not None else {"skipped": "primme does not import"})

        small, seconds = timed(smallest_eigenpairs, DenseOperator(K), 1, seed=seed, tol=1e-8,
                               max_passes=max(max_passes, 120))
        lam, lam_err = float(small.values[0]), float(small.errors[0])
        out["ntkdist_lambda_min"] = {"seconds": seconds, "passes": small.passes, "value": lam, "error_bound": lam_err,
                                     "converged": small.converged, "info": _plain(small.info)}
        certified, seconds = timed(certify_lambda_min, K, lam - lam_err)
        out["ntkdist_lambda_min"]["cholesky_certifies_lower"] = certified
        out["ntkdist_lambda_min"]["cholesky_seconds"] = seconds
        scipy_value, seconds = timed(scipy_lobpcg_defaults, K, seed)
        out["scipy_lobpcg_defaults"] = {"seconds": seconds, "value": scipy_value,
                                        "rel_error_vs_ntkdist": abs(scipy_value - lam) / lam}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out["ratio_lapack_over_ntkdist"] = (out["lapack_subset"]["seconds"] / out["ntkdist_memory"]["seconds"]
                                        if out["lapack_subset"]["seconds"] else None)
    out["driver_peak_rss_mib"] = peak_rss_mib()
    return out


def matrix_free_case(n: int, dim: int, *, k: int, tol: float, seed: int, max_passes: int, workers: int,
                     smallest: int, bins: int, rank: int | None, deflate: int | None, max_basis: int | None,
                     driver_memory_gb: float) -> dict:
    import ray

    from ntkdist.cluster import RayGramOperator, start_local_ray
    from ntkdist.linalg.spectrum import memory_shares, solve_spectrum

    X = np.random.default_rng(seed).standard_normal((n, dim))
    budget = int(driver_memory_gb * 2**30)
    shares = memory_shares(n, k, smallest, budget)
    # Sizes not given on the command line come from the driver-memory budget, as `ntkdist run` sizes them.
    top_options = {} if max_basis is None else {"max_basis": max_basis}
    bottom_options = {} if rank is None else {"rank": rank}
    density_options = {} if deflate is None else {"deflate": deflate}
    out = {"case": "matrix-free", "n": n, "dim": dim, "k": k, "tol": tol, "max_passes": max_passes,
           "driver_memory_gb": driver_memory_gb,
           "preconditioner_rank": rank or shares["rank"], "density_deflation": shares["deflate"] if deflate is None
           else deflate, "krylov_max_basis": max_basis or shares["max_basis"], "krylov_max_block": shares["max_block"]}
    start_local_ray(num_cpus=os.cpu_count())
    try:
        with AnonymousMemoryPeak() as memory:
            with RayGramOperator(X=X, mode="matrix_free", net=NET, kind="ntk", workers=workers) as operator:
                operator.matmat = _timed_passes(operator.matmat, memory, out.setdefault("pass_spans", []))
                solution, seconds = timed(solve_spectrum, operator, method="krylov", k=k, tol=tol,
                                          max_passes=max_passes, smallest=smallest, density_bins=bins, seed=seed,
                                          top_options=top_options, bottom_options=bottom_options,
                                          density_options=density_options, driver_memory_bytes=budget)
        out["driver_peak_rss_mib"] = peak_rss_mib()
        out["driver_peak_private_mib"] = memory.peaks["RssAnon"] / 1024
        out["driver_peak_shared_mib"] = memory.peaks["RssShmem"] / 1024
        out["driver_peak_vmrss_sampled_mib"] = memory.peaks["VmRSS"] / 1024
        out["driver_memory_timeline"] = memory.timeline
    finally:
        ray.shutdown()
    # The peers of a pass, measured after the solve (so their arrays never count in the driver's peak): the
    # kernel-only time of N² entries, from one panel of CHUNK rows against all N columns (the shapes the
    # operator uses), scaled by N/CHUNK; and the GEMM time of that panel against each pass's block, scaled.
    widths = solution.info["pass_widths"]
    panel = X[:CHUNK]
    gram_block(panel[:256], X[:CHUNK], net=NET)  # warm-up (compilation)
    K_panel, panel_seconds = timed(gram_block, panel, X, net=NET)
    out["kernel_only_seconds_n2"] = panel_seconds * n / CHUNK
    gemm = {}
    for width in sorted(set(widths)):
        V = np.random.default_rng(0).standard_normal((n, width))
        gemm[width] = timed(np.matmul, K_panel, V)[1] * n / CHUNK
        del V
    del K_panel
    out["gemm_seconds_per_width"] = {str(w): s for w, s in gemm.items()}
    out["ratio_pass_over_kernel_plus_gemm"] = [
        s / (out["kernel_only_seconds_n2"] + gemm[w]) for w, s in zip(widths, solution.info["pass_seconds"])]
    out["seconds"] = seconds
    out["passes"] = solution.passes
    out["pass_widths"] = widths
    out["pass_seconds"] = solution.info["pass_seconds"]
    out["seconds_per_pass"] = solution.seconds_per_pass
    top = solution.top
    out["top"] = {"lambda_1": float(top.values[0]), "lambda_k": float(top.values[-1]),
                  "max_rel_bound": float(np.max(top.errors / np.abs(top.values))),
                  "converged": top.converged, "passes": top.passes, "info": _plain(top.info)}
    if solution.bottom is not None:
        out["lambda_min"] = {"value": solution.lambda_min, "error_bound": solution.lambda_min_error,
                             "passes": solution.bottom.passes, "converged": solution.bottom.converged}
    if solution.density is not None:
        out["density"] = {"max_cdf_error": float(np.max(solution.density.cdf_error)),
                          "passes": solution.density.passes}
    out["trace"] = solution.trace
    return out


def _timed_passes(matmat, memory: AnonymousMemoryPeak, spans: list):
    """``matmat`` that records when each pass starts and ends, on the memory timeline's clock."""

    def timed_matmat(V):
        start = time.perf_counter() - memory._start
        out = matmat(V)
        spans.append((round(start, 1), round(time.perf_counter() - memory._start, 1), int(V.shape[1])))
        return out

    return timed_matmat


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=("dense", "matrix-free"))
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--tol", type=float, default=1e-8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-passes", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="dense: skip the LAPACK subset timing")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--smallest", type=int, default=1)
    parser.add_argument("--bins", type=int, default=60)
    parser.add_argument("--rank", type=int, default=None,
                        help="matrix-free: rank of LOBPCG's Nyström preconditioner (default: from --driver-memory-gb)")
    parser.add_argument("--deflate", type=int, default=None,
                        help="matrix-free: SLQ's deflated top subspace (default: from --driver-memory-gb)")
    parser.add_argument("--max-basis", type=int, default=None,
                        help="Krylov basis columns before a thick restart (default: from --driver-memory-gb "
                             "for matrix-free, the solver's own for dense)")
    parser.add_argument("--driver-memory-gb", type=float, default=1.5,
                        help="matrix-free: the solvers' memory budget in the driver, as [solver] driver_memory_gb")
    parser.add_argument("--repeat", type=int, default=3, help="dense: runs of ntkdist's top-k (median reported)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.case == "dense":
        result = dense_case(args.n, args.dim, k=args.k, tol=args.tol, seed=args.seed, quick=args.quick,
                            max_passes=args.max_passes, repeat=args.repeat,
                            max_basis=args.max_basis)
    else:
        result = matrix_free_case(args.n, args.dim, k=args.k, tol=args.tol, seed=args.seed,
                                  max_passes=args.max_passes, workers=args.workers, smallest=args.smallest,
                                  bins=args.bins, rank=args.rank, deflate=args.deflate, max_basis=args.max_basis,
                                  driver_memory_gb=args.driver_memory_gb)
    result["machine"] = machine()
    text = json.dumps(result, indent=2, default=float)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
