"""Reverse communication: solvers ask for products, one driver owns the loop over K and shares its passes.

Why this design
---------------
At N = 10⁵–10⁶ a pass over K (N² kernel entries recomputed, or N² numbers read from a store) costs minutes,
while the arithmetic a solver does on its N×b block costs seconds. So the solvers of one run — top-k by block
Krylov, λ_min by LOBPCG, the density by stochastic Lanczos — must *share* passes: each pass multiplies one wide
block [V_topk | V_lmin | V_density] and hands every solver its slice of K·V.

Each solver is therefore written as a *program*: a Python generator that yields a request and receives the answer
(as ARPACK's ``ido`` loop does, without the flags)::

    def program(n, ...):
        Y = yield Product(V)        # one pass: the driver returns K·V (float64)
        C = yield Columns(index)    # K[:, index] (Nyström sampling; not a pass)
        d = yield Diagonal()        # K_ii (not a pass)
        ...
        return SpectrumResult(...)

`run_programs` advances every program until each has asked for a product, multiplies all the asked-for blocks
in one ``operator.matmat`` call, hands each program its columns of the result, and repeats until every program
has returned. A program that needs no product this round (it is waiting for nothing) simply is not in the next
pass. A generator is the natural form in Python: the solver's state lives in its local variables, the control
flow reads like the textbook algorithm, and the driver stays twenty lines.

The pass budget belongs to each program (it knows when to stop and what to report when it runs out); the
driver also enforces an overall budget, closing every program that is still asking when it is spent — a program
must catch `PassBudgetExhausted` thrown into it and return its best certified result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator

import numpy as np

from .operator import SymmetricOperator


# -- requests ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Product:
    """Ask for K·block, block of shape (N, b). Costs one pass (shared with the other programs' products)."""

    block: np.ndarray


@dataclass(frozen=True)
class Columns:
    """Ask for K[:, index] (N·|index| entries; not a pass)."""

    index: np.ndarray


@dataclass(frozen=True)
class Diagonal:
    """Ask for the diagonal K_ii (not a pass)."""


class PassBudgetExhausted(Exception):
    """Thrown into a program when the run's overall pass budget is spent: return the best result so far."""


Program = Generator[Any, np.ndarray, Any]


# -- results -------------------------------------------------------------------------------------------------------
@dataclass
class PassLog:
    """What the driver did: one entry per pass (its width and wall time); ``on_pass(width, seconds)``, if given,
    is called after each pass (a progress bar)."""

    widths: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    on_pass: Callable[[int, float], None] | None = field(default=None, repr=False)

    @property
    def passes(self) -> int:
        return len(self.seconds)

    @property
    def seconds_per_pass(self) -> float:
        return float(np.median(self.seconds)) if self.seconds else 0.0


@dataclass
class EigenResult:
    """Eigenvalues with certified error bounds, as every eigensolver returns them.

    values : (m,) float64
        Ritz values, in the order the solver states (descending for the top, ascending for the smallest).
    errors : (m,) float64
        ``|λ − value| ≤ error`` for the matching eigenvalue λ of the *requested* matrix (storage error included,
        by Weyl); see `ntkdist.linalg.certify` for what is rigorous and what is probabilistic.
    residual_norms : (m,) float64
        ‖K u − θ u‖ of each unit Ritz vector.
    gap_certified : (m,) bool
        Where the Kato–Temple (quadratic) bound was used.
    passes : int
        Passes over K this solver took part in.
    seconds_per_pass : float
        Median wall time of those passes (filled by the driver; shared passes are counted whole).
    converged : bool
        Every requested value reached the tolerance.
    vectors : (N, m) float64, optional
    info : dict
        Solver details worth recording (block size, locked counts, how a cluster was handled, …).
    """

    method: str
    values: np.ndarray
    errors: np.ndarray
    residual_norms: np.ndarray
    gap_certified: np.ndarray
    passes: int
    converged: bool
    seconds_per_pass: float = 0.0
    vectors: np.ndarray | None = None
    info: dict = field(default_factory=dict)


@dataclass
class DensityResult:
    """A spectral density estimate: probability mass per bin of the eigenvalue distribution (Σ mass = 1).

    edges : (bins + 1,) bin edges; mass : (bins,) estimated fraction of eigenvalues per bin;
    cdf_error : estimated error of the CDF at each edge (probabilistic: probe variance plus quadrature);
    nodes, weights : the Gauss quadrature nodes and weights averaged over probes (the raw estimate).
    """

    method: str
    edges: np.ndarray
    mass: np.ndarray
    cdf_error: np.ndarray
    passes: int
    seconds_per_pass: float = 0.0
    nodes: np.ndarray | None = None
    weights: np.ndarray | None = None
    info: dict = field(default_factory=dict)


# -- the driver ----------------------------------------------------------------------------------------------------
def run_programs(operator: SymmetricOperator, programs: dict[str, Program], *,
                 max_passes: int | None = None, log: PassLog | None = None) -> dict[str, Any]:
    """Advance every program together, one shared ``matmat`` per pass; returns each program's result by name.

    Parameters
    ----------
    operator : SymmetricOperator
    programs : dict of name → generator
        Generators that yield `Product`, `Columns` or `Diagonal` requests and return their result.
    max_passes : int, optional
        Overall budget: when spent, `PassBudgetExhausted` is thrown into every program still asking for a
        product, and each must return.
    log : PassLog, optional
        Filled with the width and wall time of every pass (a fresh one is made when not given).

    Returns
    -------
    dict of name → whatever each program returned; results with a ``seconds_per_pass`` attribute get the
    median time of the passes they took part in.
    """
    log = PassLog() if log is None else log
    n = operator.shape[0]
    results: dict[str, Any] = {}
    pending: dict[str, Product] = {}
    took_part: dict[str, list[float]] = {name: [] for name in programs}
    diagonal_cache: list[np.ndarray] = []

    def advance(name: str, program: Program, reply=None, throw: Exception | None = None) -> None:
        """Run one program until it asks for a product (parked in ``pending``) or returns."""
        try:
            request = program.throw(throw) if throw is not None else program.send(reply)
            while not isinstance(request, Product):
                if isinstance(request, Columns):
                    request = program.send(operator.columns(np.asarray(request.index, dtype=np.int64)))
                elif isinstance(request, Diagonal):
                    if not diagonal_cache:
                        diagonal_cache.append(operator.diagonal())
                    request = program.send(diagonal_cache[0])
                else:
                    raise TypeError(f"program {name!r} yielded {type(request).__name__}; expected Product, "
                                    "Columns or Diagonal")
            block = np.asarray(request.block, dtype=np.float64)
            if block.ndim != 2 or block.shape[0] != n:
                raise ValueError(f"program {name!r} asked for a product with a block of shape {block.shape}; "
                                 f"expected ({n}, b)")
            pending[name] = Product(block)
        except StopIteration as stop:
            results[name] = stop.value
            pending.pop(name, None)

    for name, program in programs.items():
        advance(name, program)
    passes = 0  # this call's own (a log handed in may already hold earlier passes)
    while pending:
        if max_passes is not None and passes >= max_passes:
            for name in list(pending):
                pending.pop(name)
                advance(name, programs[name], throw=PassBudgetExhausted(f"{max_passes} passes"))
            continue
        names, replies, seconds = _shared_pass(operator, pending, log)
        passes += 1
        for name in names:
            took_part[name].append(seconds)
            reply = replies.pop(0)
            advance(name, programs[name], reply)
            del reply
    for name, result in results.items():
        if hasattr(result, "seconds_per_pass") and took_part[name]:
            result.seconds_per_pass = float(np.median(took_part[name]))
    return results


def _shared_pass(operator: SymmetricOperator, pending: dict[str, Product],
                 log: PassLog) -> tuple[list[str], list[np.ndarray], float]:
    """One ``matmat`` on the pending blocks side by side (``pending`` is emptied); returns the programs' names,
    each one's columns of the product and the seconds the pass took, and records the pass in ``log``."""
    names = list(pending)
    widths = [pending[name].block.shape[1] for name in names]
    wide = np.concatenate([pending[name].block for name in names], axis=1)
    pending.clear()
    start = time.perf_counter()
    product = operator.matmat(wide)
    seconds = time.perf_counter() - start
    del wide
    log.widths.append(int(sum(widths)))
    log.seconds.append(seconds)
    if log.on_pass is not None:
        log.on_pass(log.widths[-1], seconds)
    # Every program's columns are copied out and the product freed before any program computes: its
    # arithmetic (a Krylov restart, a Rayleigh–Ritz step) then never shares the driver with the wide product.
    replies, offset = [], 0
    for width in widths:
        replies.append(np.ascontiguousarray(product[:, offset:offset + width]))
        offset += width
    del product
    return names, replies, seconds


def run_program(operator: SymmetricOperator, program: Program, *, max_passes: int | None = None):
    """Run a single program to completion (the plain-function form of every solver)."""
    return run_programs(operator, {"program": program}, max_passes=max_passes)["program"]
