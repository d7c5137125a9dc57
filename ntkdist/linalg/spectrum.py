"""One call for a run's whole spectrum: top-k, the smallest, the density, trace and effective rank.

`solve_spectrum` composes the solver programs (`ntkdist.linalg.krylov`, `.lobpcg`, `.density`, `.nystrom`) and
runs them together with `run_programs`, so top-k, λ_min and the density advance on one wide block per pass over
K. `exact_spectrum` is the dense path for matrices that fit in memory (LAPACK), reported in the same form.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

from .density import default_deflation, density_from_eigenvalues, slq_program
from .krylov import block_krylov_program, default_block
from .lobpcg import default_block as default_lobpcg_block
from .lobpcg import default_rank, lobpcg_program
from .nystrom import nystrom_program
from .operator import DenseOperator, SymmetricOperator
from .passes import DensityResult, Diagonal, EigenResult, PassLog, run_programs
from .summaries import trace as exact_trace

logger = logging.getLogger("ntkdist.linalg")

METHODS = ("exact", "krylov", "nystrom")
#: Default memory for the solvers' arrays in the driver. With the interpreter, Ray and Prefect (about 0.2 GB) and
#: at most two slabs of Ray's object store mapped, the driver peaked at 1.63 GB at N = 10⁵ (BENCHMARKS.md, run 4).
DRIVER_MEMORY_BYTES = 3 * 2**29


@dataclass
class SpectrumSolution:
    """Everything the solve stage computes, before it becomes the ``spectrum`` dataset.

    top : the k largest eigenvalues (descending) with certified errors.
    bottom : the m smallest (ascending) with errors; ``bottom.values[0]`` is λ_min's certified upper bound.
    density : the spectral density (exact histogram for the exact method, SLQ otherwise).
    diagonal, trace : K_ii (read once) and Tr K (exactly rounded sum).
    passes, seconds_per_pass : passes over K taken by all solvers together (shared), median time per pass.
    operator_error : the operator's ``error_bound`` (included in every error).
    """

    method: str
    top: EigenResult
    bottom: EigenResult | None
    density: DensityResult | None
    diagonal: np.ndarray
    trace: float
    passes: int
    seconds_per_pass: float
    operator_error: float
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def lambda_min(self) -> float | None:
        """Certified upper bound on λ_min (a Rayleigh quotient), or None when the smallest were not computed."""
        return None if self.bottom is None else float(self.bottom.values[0])

    @property
    def lambda_min_error(self) -> float | None:
        return None if self.bottom is None else float(self.bottom.errors[0])


def exact_spectrum(matrix, *, k: int | None = None, smallest: int = 1, density_bins: int = 0,
                   vectors: bool = False, operator_error: float = 0.0) -> SpectrumSolution:
    """Every eigenvalue by LAPACK's divide and conquer (``syevd``), reported like the iterative solvers.

    The error of each eigenvalue is the backward-stability bound of LAPACK's symmetric eigensolvers,
    |λ̂ − λ| ≤ p(N)·ε·‖K‖₂ (LAPACK Users' Guide, 3rd ed., §4.7.1), taking p(N) = N (p is "a modestly growing
    function of N"; N is the conservative choice) and ‖K‖₂ = max |λ̂|, plus the operator's storage error (Weyl). float32 input is promoted to float64, so the
    eigenvalues are those of the stored matrix computed in double precision.
    """
    start = time.perf_counter()
    operator = matrix if isinstance(matrix, DenseOperator) else DenseOperator(matrix)
    dense = np.asarray(operator.matrix, dtype=np.float64)
    n = dense.shape[0]
    k = n if k is None else min(k, n)
    if vectors:
        ascending, basis = scipy.linalg.eigh(dense, driver="evd", check_finite=True)
    else:
        ascending, basis = scipy.linalg.eigh(dense, eigvals_only=True, driver="evd", check_finite=True), None
    diagonal = np.diagonal(dense).copy()
    del dense
    error = n * np.finfo(np.float64).eps * float(np.max(np.abs(ascending))) + operator_error

    def result(index, order) -> EigenResult:
        values = ascending[index]
        return EigenResult(method="exact", values=values, errors=np.full(values.size, error),
                           residual_norms=np.zeros(values.size), gap_certified=np.zeros(values.size, dtype=bool),
                           passes=0, converged=True,
                           vectors=None if basis is None else basis[:, index], info={"order": order})

    top = result(np.arange(n - 1, n - 1 - k, -1), "descending")
    bottom = result(np.arange(min(max(smallest, 0), n)), "ascending") if smallest > 0 else None
    density = density_from_eigenvalues(ascending, bins=density_bins) if density_bins > 0 else None
    seconds = time.perf_counter() - start
    return SpectrumSolution(method="exact", top=top, bottom=bottom, density=density, diagonal=diagonal,
                            trace=exact_trace(diagonal), passes=0, seconds_per_pass=0.0,
                            operator_error=operator_error, seconds=seconds)


def solve_spectrum(operator: SymmetricOperator, *, method: str, k: int, tol: float, max_passes: int,
                   smallest: int = 1, density_bins: int = 0, vectors: bool = False, seed: int = 0,
                   log: PassLog | None = None, top_options: dict | None = None, bottom_options: dict | None = None,
                   density_options: dict | None = None, top: EigenResult | None = None,
                   driver_memory_bytes: int = DRIVER_MEMORY_BYTES) -> SpectrumSolution:
    """Top-k, the smallest and the density of a symmetric PSD operator, sharing every pass over K.

    Parameters
    ----------
    method : {"exact", "krylov", "nystrom"}
        "exact" needs a `DenseOperator`; "krylov" runs randomized block Krylov (top), LOBPCG (smallest) and
        stochastic Lanczos quadrature (density) together; "nystrom" takes the top from a single-pass Nyström
        sketch (one pass) and runs the smallest and the density as for "krylov".
    k, smallest : how many of the largest and of the smallest eigenvalues.
    tol : relative tolerance on every certified eigenvalue error.
    max_passes : the budget of passes over K, shared by all solvers.
    density_bins : bins of the density (0: no density).
    seed : every random choice (start blocks, probes, sketches) derives from it.
    top_options, bottom_options, density_options : dict, optional
        Passed on to `block_krylov_program` (e.g. ``block``, ``max_basis``), `lobpcg_program` (``rank`` of the
        Nyström preconditioner, ``block``) and `slq_program` (``steps``, ``probes``, ``deflate``). At N ~ 10⁵ with a
        budget of a few passes, the width of the first pass (Krylov block + preconditioner sketch + density
        deflation) sets its GEMM time and the driver's memory: size them together.
    driver_memory_bytes : int
        What the driver may spend on the solvers' N×b arrays; sets the defaults of the Krylov basis before a
        restart, the preconditioner's rank and the density's deflated subspace (`memory_shares`). Options given
        explicitly win.
    top : EigenResult, optional
        The top of the spectrum when it is already known — a single-pass Nyström sketch gathered during the
        build (`ntkdist.linalg.nystrom.nystrom_from_gathered_sketch`): no pass is spent on it.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if method == "exact":
        if not isinstance(operator, DenseOperator):
            raise ValueError("method: \"exact\" needs the matrix in memory (a DenseOperator)")
        return exact_spectrum(operator, k=k, smallest=smallest, density_bins=density_bins, vectors=vectors,
                              operator_error=operator.error_bound)
    start = time.perf_counter()
    n = operator.shape[0]
    eta = operator.error_bound
    seeds = np.random.SeedSequence(seed).spawn(3)
    shares = memory_shares(n, k, smallest, driver_memory_bytes)
    if not shares["fits"]:
        logger.warning("driver_memory_bytes = %d is below what the solvers need at N = %d with k = %d even at their "
                       "smallest sizes; the driver may use more (raise [solver] driver_memory_gb to at least %.1f)",
                       driver_memory_bytes, n, k, minimum_driver_memory_gib(n, k, smallest))
    top_options = ({"max_basis": shares["max_basis"], "max_block": shares["max_block"], **(top_options or {})}
                   if method == "krylov" else top_options)
    bottom_options = {"rank": shares["rank"], **(bottom_options or {})}
    density_options = {"deflate": shares["deflate"], **(density_options or {})}
    programs = {}
    if top is not None:
        pass
    elif method == "krylov":
        programs["top"] = block_krylov_program(n, k, seed=_int(seeds[0]), tol=tol, max_passes=max_passes,
                                               vectors=vectors, operator_error=eta, **(top_options or {}))
    else:
        programs["top"] = nystrom_program(n, k, seed=_int(seeds[0]), operator_error=eta, vectors=vectors,
                                          **(top_options or {}))
    if smallest > 0:
        programs["bottom"] = lobpcg_program(n, smallest, seed=_int(seeds[1]), tol=tol, max_passes=max_passes,
                                            operator_error=eta, vectors=vectors, **(bottom_options or {}))
    if density_bins > 0:
        density = {"steps": min(max_passes, 40), "probes": 30, **(density_options or {})}
        programs["density"] = slq_program(n, seed=_int(seeds[2]), bins=density_bins, max_passes=max_passes,
                                          **density)
    programs["diagonal"] = _diagonal_program()
    log = PassLog() if log is None else log
    results = run_programs(operator, programs, max_passes=max_passes, log=log)
    diagonal = results["diagonal"]
    return SpectrumSolution(method=method, top=top if top is not None else results["top"], bottom=results.get("bottom"),
                            density=results.get("density"), diagonal=diagonal, trace=exact_trace(diagonal),
                            passes=log.passes, seconds_per_pass=log.seconds_per_pass, operator_error=eta,
                            seconds=time.perf_counter() - start,
                            info={"pass_widths": list(log.widths), "pass_seconds": [round(s, 4) for s in log.seconds]})


def memory_shares(n: int, k: int, smallest: int, memory_bytes: int, probes: int = 30) -> dict:
    """Sizes of the solvers' N-row arrays that keep the driver's peak under ``memory_bytes``.

    The driver's peak, counted in float64 columns of length N, for a Krylov block b (growing to at most w at a
    cluster), a LOBPCG block c, p probes, a Krylov basis of at most B columns, a preconditioner of rank r and a
    deflation of rank d, is at most

        (3b + 12c + 4p) + 2B + 2r + 4d + 5(w − b)

    — measured with tracemalloc against a synthetic operator by varying one size at a time (each coefficient
    rounded up; ``tests/linalg/test_spectrum_memory.py`` holds the peak to the budget). What the terms are: Q and
    K·Q of the basis; the preconditioner's U, and its sketch Ω with K·Ω in the first pass; the deflated Q, K·Q
    and Ritz vectors and their share of the early, wide passes; the window's Ritz vectors and residuals, the
    LOBPCG blocks [X, W, P] and their products, the probes and Lanczos blocks; and each pass's wide block and its
    product.

    The fixed widths are taken first from 95 % of C = memory/(8N) columns; the top-k comes first, so of the rest
    B gets 36 %, r 5 %, d 3 % and the growth w − b 1.2 %, each capped by its own default, and B is never below
    two blocks (a thick restart keeps the window — the k wanted pairs and their guards — and adds a block; with
    B = b + k it could keep only the k, and at N = 10⁵ the top-100 then stalls at 3e-2, BENCHMARKS.md). At
    N = 10⁵ and 1.5 GiB: B = 392, r = 54, d = 32, growth to 163. ``fits`` is False when the floors alone exceed
    the budget.
    """
    columns = 0.95 * memory_bytes / (8 * n)
    block = default_block(k, n)
    lobpcg_block = default_lobpcg_block(max(smallest, 1), n)
    rest = max(0.0, columns - (3 * block + 12 * lobpcg_block + 4 * probes))
    max_basis = int(min(n, max(2 * block, block + k, 0.36 * rest)))
    rank = int(max(1, min(default_rank(n, max(smallest, 1)), 0.05 * rest)))
    deflate = int(max(0, min(default_deflation(n), 0.03 * rest)))
    max_block = int(max(block, min(block + 0.012 * rest, max_basis // 2)))
    need = 3 * block + 12 * lobpcg_block + 4 * probes + 2 * max_basis + 2 * rank + 4 * deflate + 5 * (max_block - block)
    return {"max_basis": max_basis, "max_block": max_block, "rank": rank, "deflate": deflate,
            "fits": bool(need <= columns)}


def minimum_driver_memory_gib(n: int, k: int, smallest: int) -> float:
    """The smallest driver budget, in GiB rounded up to 0.1, at which `memory_shares` fits (for the warning that
    tells the user what to set)."""
    def fits(tenths: int) -> bool:
        return memory_shares(n, k, smallest, tenths * 2**30 // 10)["fits"]

    high = 1
    while not fits(high):
        high *= 2
    low = high // 2  # does not fit (or is 0)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high / 10


def _diagonal_program():
    """The diagonal, read once through the same driver (so every consumer shares one read)."""
    diagonal = yield Diagonal()
    return np.asarray(diagonal, dtype=np.float64)


def _int(seed_sequence: np.random.SeedSequence) -> int:
    return int(seed_sequence.generate_state(1)[0])
