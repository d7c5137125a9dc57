"""`solve_spectrum` keeps the driver's arrays under ``driver_memory_bytes`` (the model of `memory_shares`).

NumPy reports its allocations to tracemalloc, so the peak of every array the solvers and the pass driver hold at
once is measured exactly. The operator is synthetic (a diagonal plus a rank-400 part with a 1/i spectrum, like
an NTK's top above a bulk), so a pass costs little and the solvers' own arrays are all that is measured; the
budgets put the same number of N-columns in play as the N = 10⁵ benchmark at its default budget.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from ntkdist.linalg.spectrum import memory_shares, minimum_driver_memory_gib, solve_spectrum


class LowRankPlusDiagonal:
    """K = U diag(s) Uᵀ + D: s_i = 10⁴/i (i ≤ 400), D_ii ∈ [0.3, 1.3]; products in O(N·400·b)."""

    def __init__(self, n: int, rank: int = 400, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.U, _ = np.linalg.qr(rng.standard_normal((n, rank)))
        self.s = 1e4 / np.arange(1, rank + 1)
        self.d = 0.3 + rng.random(n)
        self.shape = (n, n)
        self.dtype = np.dtype(np.float64)
        self.passes = 0
        self.error_bound = 0.0

    def matmat(self, V):
        """Allocates the product and nothing else of its size, as `RayGramOperator` does (its Y)."""
        self.passes += 1
        out = self.U @ (self.s[:, None] * (self.U.T @ V))
        for start in range(0, len(out), 4096):
            rows = slice(start, start + 4096)
            out[rows] += self.d[rows, None] * V[rows]
        return out

    def diagonal(self):
        return np.einsum("ij,j,ij->i", self.U, self.s, self.U) + self.d

    def columns(self, index):
        out = self.U @ (self.s[:, None] * self.U[index].T)
        out[index, np.arange(len(index))] += self.d[index]
        return out


@pytest.mark.slow
@pytest.mark.parametrize("k, smallest, bins, memory_mib", [
    (100, 1, 50, 307),   # N = 2·10⁴ with the column count of N = 10⁵ at the default 1.5 GiB: the floors decide
    (20, 5, 30, 900),    # a larger budget: a stronger preconditioner, a deeper deflation, room for block growth
])
def test_solvers_stay_within_the_driver_memory_budget(k, smallest, bins, memory_mib):
    n = 20000
    operator = LowRankPlusDiagonal(n)
    budget = memory_mib * 2**20
    shares = memory_shares(n, k, smallest, budget)
    tracemalloc.start()
    try:
        solution = solve_spectrum(operator, method="krylov", k=k, tol=1e-10, max_passes=8, smallest=smallest,
                                  density_bins=bins, seed=3, driver_memory_bytes=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert solution.passes == 8  # the budget was spent: every program held its largest state
    assert solution.top.info["max_basis"] == shares["max_basis"]
    assert peak <= budget, f"peak {peak / 2**20:.0f} MiB over the {memory_mib} MiB budget"


def test_a_budget_below_the_floors_is_flagged(caplog):
    """At N = 3·10⁵ 1.5 GiB cannot hold even the Krylov floor (two blocks of 150, and their products): the shares
    say so and the solve warns, naming the setting to raise."""
    tight = memory_shares(300_000, 100, 1, 3 * 2**29)
    assert not tight["fits"] and tight["max_basis"] == 300
    assert memory_shares(100_000, 100, 1, 3 * 2**29)["fits"]
    operator = LowRankPlusDiagonal(2000, rank=50)
    with caplog.at_level("WARNING", logger="ntkdist.linalg"):
        solve_spectrum(operator, method="krylov", k=10, tol=1e-8, max_passes=2, smallest=0,
                       driver_memory_bytes=2**20)
    assert "driver_memory_gb" in caplog.text
    assert f"to at least {minimum_driver_memory_gib(2000, 10, 0):.1f}" in caplog.text  # says what to set


@pytest.mark.parametrize("n, k, smallest", [(100_000, 200, 1), (300_000, 100, 1), (2000, 10, 0)])
def test_the_suggested_driver_memory_is_the_smallest_that_fits(n, k, smallest):
    """What the warning suggests fits, and 0.1 GiB less does not (float32-large's N = 10⁵, k = 200: 2.2 GiB)."""
    gib = minimum_driver_memory_gib(n, k, smallest)
    assert memory_shares(n, k, smallest, round(gib * 10) * 2**30 // 10)["fits"]
    assert gib == 0.1 or not memory_shares(n, k, smallest, (round(gib * 10) - 1) * 2**30 // 10)["fits"]
