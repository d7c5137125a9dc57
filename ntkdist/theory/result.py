"""Theory results as typed values: one frozen `TheoryResult` per prediction or bound, and `Computed` intervals.

Every prediction of `ntkdist.theory` — a bound on λ_min, λ_k or an effective rank, the sphere eigenvalues, the
positivity verdict, the polynomial rank bound — is a `TheoryResult`: its value, the paper and equation it comes
from, the conditions under which it applies, its cost, and, once held against a computed number
(`TheoryResult.against`), that number as a `Computed` interval and whether the prediction holds.

This module knows nothing of how results are stored (``ntkdist.store.theory_variables`` maps them to the
spectrum dataset); it holds only the type and the two rules every comparison shares (`holds`, `ratio`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

MURRAY = "Murray, Jin, Bowman, Montúfar 2023, arXiv 2211.07844"
NGUYEN = "Nguyen, Mondelli, Montúfar 2021, arXiv 2012.11654"
STAX_CONVENTION = ("stax NTK parameterization: Σ¹ = weight_var·⟨x,y⟩/d + bias_var, depth hidden layers + linear "
                   "readout; Gram K = [Θ(x_i, x_j)] not divided by N")


@dataclass(frozen=True)
class Computed:
    """A computed quantity as an interval: ``value`` and the range [lower, upper] the true one lies in.

    For λ_min from a solver: ``value`` is its Rayleigh quotient θ (a certified upper bound on λ_min of the
    operator's matrix), ``upper`` = θ + the operator's error bound + rounding, ``lower`` = θ − ``error`` −
    rounding. A lower-bound prediction *holds* when it is ≤ ``upper``, an upper-bound prediction when it is ≥
    ``lower`` (a violation is then certain, up to what ``source`` says is probabilistic).
    """

    value: float
    lower: float
    upper: float
    error: float | None
    source: str


def holds(side: str, theory: float, computed: Computed | None) -> bool | None:
    """Whether a ``side`` ("lower"/"upper") prediction agrees with the interval ``computed``; None if undecidable.

    Estimates and verdicts (any other side) are listed against the computed value, never judged here.
    """
    if computed is None or not math.isfinite(theory) or side not in ("lower", "upper"):
        return None
    return bool(theory <= computed.upper) if side == "lower" else bool(theory >= computed.lower)


def ratio(theory: float, computed: float | None) -> float | None:
    """theory / computed, None when either is missing, not finite, or computed is 0."""
    if computed is None or not math.isfinite(theory) or computed == 0.0:
        return None
    return theory / computed


@dataclass(frozen=True)
class TheoryResult:
    """One prediction or bound of a spectral quantity of K = [Θ(x_i, x_j)] (stax convention), typed.

    Attributes
    ----------
    name : str
        Short identifier, e.g. ``"hermite_lambda_min"``, ``"sphere_eigenvalue"``, ``"positivity"``.
    quantity : str
        ``"lambda_min"``, ``"lambda_k"``, ``"effective_rank"`` (Tr K/λ_1), ``"centred_effective_rank"``,
        ``"rank"``, ``"eigenvalue"``, or a description (sphere clusters).
    side : str
        ``"lower"`` or ``"upper"`` (a bound), ``"estimate"`` (a prediction), ``"status"`` (a verdict).
    value : float, ndarray or str
        The bound (NaN where it does not apply); an array over ``k`` for ``lambda_k`` bounds and over the modes
        for the sphere eigenvalues; the status for a verdict.
    applies : bool
        Whether the hypotheses hold for this network and data.
    conditions : str
        The assumptions under which it applies (activation, bias, data normalisation), in words.
    reason : str
        Why it applies or not here.
    paper : str
        The paper whose result this is; ``""`` for textbook linear algebra and derived results, whose
        ``equation`` then names what they rest on.
    equation : str
        Theorem or equation and the inequality itself.
    convention : str
        The convention of ``value`` (the stax Gram; says what was converted).
    k : ndarray or None
        Indices (1 = largest) for ``lambda_k`` bounds.
    cost : float
        Dense N×N eigen-decompositions used.
    work : str
        Time and memory in O(·) and the size limit, in words.
    details : dict
        Intermediate numbers (coefficients used, the m or r chosen, …).
    computed : Computed, tuple of Computed or None, or None
        What it was held against (one per k for ``lambda_k``); None before `against`.
    compared_with : str
        What ``computed`` is, in words.
    holds : bool, tuple or None
        Whether the prediction agrees with ``computed`` (one per k for ``lambda_k``); None when undecided.
    """

    name: str
    quantity: str
    side: str
    value: float | np.ndarray | str
    applies: bool
    conditions: str
    reason: str
    paper: str
    equation: str
    convention: str = STAX_CONVENTION
    k: np.ndarray | None = None
    cost: float = 0.0
    work: str = ""
    details: dict = field(default_factory=dict)
    computed: Computed | tuple | None = None
    compared_with: str = ""
    holds: bool | tuple | None = None

    @property
    def citation(self) -> str:
        """Paper and equation in one line, as a reader cites it."""
        return f"{self.paper}, {self.equation}" if self.paper else self.equation

    @property
    def ratio(self):
        """value / computed value (a list over ``k`` for ``lambda_k`` bounds)."""
        if self.quantity == "lambda_k":
            return [ratio(float(v), None if c is None else c.value) for v, c in zip(self.value, self.computed)]
        return ratio(float(self.value), None if self.computed is None else self.computed.value)

    def against(self, computed, compared_with: str, agrees: bool | None = None) -> "TheoryResult":
        """This result held against ``computed`` (a `Computed`, or one per k for ``lambda_k``).

        ``agrees`` overrides the rule of `holds` for verdicts, whose agreement is their own business.
        """
        if self.quantity == "lambda_k":
            computed = tuple(computed)
            verdict = tuple(holds(self.side, float(v), c) for v, c in zip(self.value, computed))
        elif self.side == "status":
            verdict = agrees
        else:
            verdict = holds(self.side, float(self.value), computed)
        return replace(self, computed=computed, compared_with=compared_with, holds=verdict)


#: The name the bounds were first published under; the same type.
Bound = TheoryResult


def not_applicable(name, quantity, side, conditions, reason, paper, equation, k=None) -> TheoryResult:
    """A result whose hypotheses fail here: NaN value(s) and the reason."""
    value = np.full(len(k), np.nan) if k is not None else float("nan")
    return TheoryResult(name, quantity, side, value, False, conditions, reason, paper, equation,
                        k=None if k is None else np.asarray(k, dtype=np.int64))
