"""The tables of Gaussian expectations one layer of the finite-width recursions reads.

For the pre-activation covariance K of one layer over m sample points, `LayerExpectations` holds (σ = φ(z),
σ' = φ'(z), indices over sample points, ⟨·⟩ = E over z ~ N(0, K)):

* ``ss[a, b] = ⟨σ_a σ_b⟩``, ``pp[a, b] = ⟨σ'_a σ'_b⟩``;
* ``ssss[a, b, c, d] = ⟨σ_a σ_b σ_c σ_d⟩``, ``sspp = ⟨σ_a σ_b σ'_c σ'_d⟩``, ``pppp = ⟨σ'_a σ'_b σ'_c σ'_d⟩``;
* ``ss_hessian[a, b, g, h] = ⟨∂_g ∂_h (σ_a σ_b)⟩`` and ``pp_hessian`` the same for σ'_a σ'_b;
* ``ss_fourth[a, b, g, h, i, j] = ⟨∂_g ∂_h ∂_i ∂_j (σ_a σ_b)⟩`` and ``pp_fourth``;
* ``sp_gradient[a, c, g] = ⟨∂_g (σ_a σ'_c)⟩``.

Each expectation runs over the distinct sample points its integrand depends on (derivatives by Stein's lemma,
see `ntkdist.theory.finite_width.gaussian`); a function of points a, b has no derivative in any other point.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from .gaussian import gaussian_rule, has_kink_at_zero, hermite_weights


class _PointValues:
    """φ and φ' at the integration nodes of each set of distinct points, computed once per set."""

    def __init__(self, activation, cov: np.ndarray):
        self.activation = activation
        self.cov = cov
        self.kinked = has_kink_at_zero(activation)
        self._cache: dict = {}

    def on(self, points: tuple):
        if points not in self._cache:
            sub = self.cov[np.ix_(points, points)]
            z, w = gaussian_rule(sub, self.kinked)
            values = {"s": np.asarray(self.activation(z), dtype=np.float64),
                      "p": np.asarray(self.activation.derivative(z), dtype=np.float64)}
            self._cache[points] = (z, w, values, sub)
        return self._cache[points]

    def integrand(self, factors):
        """The distinct points of Π f_k(z_{a_k}) (factors (a_k, kind_k), "s" for σ, "p" for σ'), its rule and
        its values at the nodes."""
        points = tuple(sorted({a for a, _ in factors}))
        z, w, values, sub = self.on(points)
        column = {a: i for i, a in enumerate(points)}
        product = np.ones_like(w)
        for a, kind in factors:
            product = product * values[kind][:, column[a]]
        return points, z, w, sub, product

    def moment(self, factors) -> float:
        """⟨Π f_k(z_{a_k})⟩."""
        _, _, w, _, product = self.integrand(factors)
        return float(w @ product)

    def derivative(self, factors, order: int, size: int) -> np.ndarray:
        """⟨∂^order Π f_k⟩ as a dense tensor over all ``size`` sample points (zero off the points involved)."""
        points, z, w, sub, product = self.integrand(factors)
        local = np.tensordot(w * product, hermite_weights(z, sub, order), axes=(0, 0))
        dense = np.zeros((size,) * order)
        dense[np.ix_(*([points] * order))] = local
        return dense


def _symmetric_table(values: _PointValues, size: int, kinds: str) -> np.ndarray:
    """⟨Π_k f_{kinds[k]}(z_{a_k})⟩ over all index tuples, each distinct product integrated once."""
    table = np.empty((size,) * len(kinds))
    seen: dict = {}
    for index in product(range(size), repeat=len(kinds)):
        key = tuple(sorted(zip(index, kinds)))
        if key not in seen:
            seen[key] = values.moment(key)
        table[index] = seen[key]
    return table


@dataclass(frozen=True)
class LayerExpectations:
    """The expectation tables of one layer (module doc for each field)."""

    ss: np.ndarray
    pp: np.ndarray
    ssss: np.ndarray
    sspp: np.ndarray
    pppp: np.ndarray
    ss_hessian: np.ndarray
    pp_hessian: np.ndarray
    ss_fourth: np.ndarray
    pp_fourth: np.ndarray
    sp_gradient: np.ndarray


def layer_expectations(activation, cov: np.ndarray) -> LayerExpectations:
    """All tables for pre-activation covariance ``cov`` (m × m) and activation φ."""
    size = cov.shape[0]
    values = _PointValues(activation, np.asarray(cov, dtype=np.float64))
    derivatives = {}
    for kind in ("ss", "pp"):
        hessian = np.zeros((size,) * 4)
        fourth = np.zeros((size,) * 6)
        for a, b in product(range(size), repeat=2):
            factors = ((a, kind[0]), (b, kind[1]))
            hessian[a, b] = values.derivative(factors, 2, size)
            fourth[a, b] = values.derivative(factors, 4, size)
        derivatives[kind] = (hessian, fourth)
    gradient = np.zeros((size,) * 3)
    for a, c in product(range(size), repeat=2):
        gradient[a, c] = values.derivative(((a, "s"), (c, "p")), 1, size)
    return LayerExpectations(
        ss=_symmetric_table(values, size, "ss"), pp=_symmetric_table(values, size, "pp"),
        ssss=_symmetric_table(values, size, "ssss"), sspp=_symmetric_table(values, size, "sspp"),
        pppp=_symmetric_table(values, size, "pppp"),
        ss_hessian=derivatives["ss"][0], pp_hessian=derivatives["pp"][0],
        ss_fourth=derivatives["ss"][1], pp_fourth=derivatives["pp"][1], sp_gradient=gradient)
