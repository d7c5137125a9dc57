"""What theory says of a network before any data: the ``ntkdist theory`` command's content, JSON-ready.

Each part is computed by its own module; this only gathers them for inputs on the sphere of radius ``radius``
in R^dim:

* the power series Θ(ρ) = Σ_p κ_p ρ^p (Murray et al. 2023, Thm 3.1; `power_series`);
* the eigenvalues μ_k of the kernel's integral operator on Unif(S^{dim−1}) with their multiplicities
  (Murray et al. 2023, Thm 4.6; `sphere_eigenvalues`), and for ``n`` points the Gram eigenvalues they predict,
  n·μ_k, each repeated N(dim, k) times (the staircase a run's report overlays);
* the predicted decay of κ_p and μ_k (Lemma 3.2, Cor. 4.7; `decay_prediction`);
* positive definiteness on any data (Carvalho et al.; `positivity_without_data`).
"""

from __future__ import annotations

import math

import numpy as np

from ..kernels import MLP
from .positivity import positivity_without_data
from .power_series import power_series
from .sphere import decay_prediction, sphere_eigenvalues


def network_summary(net: MLP, *, dim: int, kind: str = "ntk", radius: float = 1.0, order: int = 8,
                    max_degree: int = 8, n: int | None = None) -> dict:
    """The power series to ``order``, the sphere eigenvalues to ``max_degree`` (and for ``n`` points the
    staircase n·μ_k), the decay regime and the positivity statement of ``net`` on the sphere of ``radius`` in
    R^dim, as plain Python values."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n: must be a whole number ≥ 1 (the number of data points), got {n!r}")
    series = power_series(net, order, dim=dim, kind=kind, radius=radius)
    sphere = sphere_eigenvalues(net, dim, max_degree, kind, radius=radius)
    decay = decay_prediction(net, dim, kind, radius=radius)
    eigen = [{"degree": int(k), "eigenvalue": float(mu), "multiplicity": int(m), "error_bound": float(err)}
             for k, mu, m, err in zip(sphere.degree, sphere.eigenvalue, sphere.multiplicity, sphere.error_bound)]
    if n is not None:
        for row in eigen:
            row["gram_eigenvalue"] = n * row["eigenvalue"]
    return {
        "network": net.describe(), "kind": kind, "dim": int(dim), "radius": float(radius), "n": n,
        "power_series": {"coefficients": [float(c) for c in series.coefficients], "tail": float(series.tail),
                         "total": float(series.total),
                         "reference": "Murray, Jin, Bowman, Montúfar 2023 (arXiv 2211.07844), Theorem 3.1"},
        "sphere": {"eigenvalues": eigen, "method": sphere.method,
                   "reference": "Murray et al. 2023, Theorem 4.6 (Azevedo & Menegatto 2015)"},
        "decay": {"regime": decay.regime, "coefficient_rate": _number(decay.coefficient_rate),
                  "eigenvalue_rate": _number(decay.eigenvalue_rate), "odd_vanish": bool(decay.odd_vanish),
                  "tight": bool(decay.tight), "reference": decay.reference},
        "positivity": positivity_without_data(net, dim, kind=kind),
    }


def _number(value):
    """A float for JSON, None for a missing or non-finite one."""
    if value is None:
        return None
    value = float(np.asarray(value))
    return value if math.isfinite(value) else None
