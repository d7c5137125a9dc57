"""Power laws fitted on log–log axes, with the standard error of the slope: how fast a quantity scales.

No paper: this is the weighted least-squares line through (log x, log y) that every scaling statement in ntkdist
is tested and reported with: the finite-width corrections shrinking like 1/n, the Hessian's norm like 1/√n
(Liu, Zhu, Belkin 2020), λ_min growing linearly in the wide layer (Nguyen et al. 2021, Thm 4.1), the sphere
coefficients decaying like k^{−e} (Murray et al. 2023).

**Errors.** A measured y with standard error σ_y has log-scale error σ_y / y (first order; exact enough while
σ_y ≪ y, and `fit_log_log` refuses points whose relative error exceeds `MAX_RELATIVE_ERROR`, where it is not).
With errors given, the points are weighted by 1/σ², and the slope's standard error is the larger of the one the
stated errors imply and the one the scatter about the line implies (the fit's χ²/dof > 1 means the stated errors
missed something, e.g. the curvature of higher orders, and the slope is no better known than the scatter says).
Without errors, the slope's error comes from the scatter alone (ordinary least squares).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

#: Largest σ_y / y a point may have: beyond it the log of y is no longer Gaussian enough for σ_y / y to be its error.
MAX_RELATIVE_ERROR = 0.5


@dataclass(frozen=True)
class LogLogFit:
    """log y ≈ intercept + slope·log x, fitted by `fit_log_log`.

    Attributes
    ----------
    slope, slope_error : float
        The exponent and its standard error (see the module docstring for which error).
    intercept : float
        log of the prefactor C in y ≈ C·x^slope.
    chi2_per_dof : float
        Weighted χ² of the residuals over the degrees of freedom (points − 2); nan with two points. Near 1 when
        the stated errors explain the scatter; without stated errors, it is the residual variance of log y.
    points : int
        The number of points fitted.
    """

    slope: float
    slope_error: float
    intercept: float
    chi2_per_dof: float
    points: int

    @property
    def prefactor(self) -> float:
        """C in y ≈ C·x^slope."""
        return math.exp(self.intercept)

    def predict(self, x) -> np.ndarray:
        """C·x^slope at ``x``."""
        return np.exp(self.intercept + self.slope * np.log(np.asarray(x, dtype=float)))

    def agrees_with(self, slope: float, sigmas: float = 3.0) -> bool:
        """Whether ``slope`` lies within ``sigmas`` standard errors of the fitted slope."""
        return abs(self.slope - slope) <= sigmas * self.slope_error


def fit_log_log(x, y, y_error=None) -> LogLogFit:
    """Fit y ≈ C·x^slope by (weighted) least squares on log–log axes; ``y_error`` are standard errors of y.

    Every x and y must be positive and finite (a power law has no log otherwise); at least two distinct x are
    needed, three for a scatter-based error.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ConfigError(f"fit_log_log: x has {x.size} points and y has {y.size}; give one y per x")
    if not (np.all(np.isfinite(x)) and np.all(x > 0) and np.all(np.isfinite(y)) and np.all(y > 0)):
        raise ConfigError("fit_log_log: every x and y must be positive and finite (a power law is fitted on "
                          "log–log axes); drop or take the absolute value of the points that are not")
    if np.unique(x).size < 2:
        raise ConfigError("fit_log_log: needs at least two distinct x values")
    log_x, log_y = np.log(x), np.log(y)
    if y_error is None:
        weights = np.ones_like(log_y)
    else:
        relative = np.asarray(y_error, dtype=float).ravel() / y
        if relative.shape != y.shape or not np.all(np.isfinite(relative)) or np.any(relative <= 0):
            raise ConfigError("fit_log_log: y_error must hold one positive, finite standard error per y")
        if np.any(relative > MAX_RELATIVE_ERROR):
            raise ConfigError(f"fit_log_log: some points have errors above {MAX_RELATIVE_ERROR:.0%} of their value; "
                              "average more samples for them or leave them out")
        weights = 1.0 / relative**2
    design = np.stack([np.ones_like(log_x), log_x], axis=1)
    normal = design.T @ (weights[:, None] * design)
    intercept, slope = np.linalg.solve(normal, design.T @ (weights * log_y))
    residuals = log_y - (intercept + slope * log_x)
    dof = x.size - 2
    chi2_per_dof = float(np.sum(weights * residuals**2) / dof) if dof > 0 else math.nan
    slope_variance = np.linalg.inv(normal)[1, 1]
    if y_error is None:
        scale = chi2_per_dof if dof > 0 else math.inf
    else:
        scale = max(1.0, chi2_per_dof) if dof > 0 else 1.0
    return LogLogFit(float(slope), float(math.sqrt(slope_variance * scale)), float(intercept), chi2_per_dof,
                     int(x.size))
