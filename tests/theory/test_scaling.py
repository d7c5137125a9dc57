"""`fit_log_log`: exact power laws, the stated error of the slope against the scatter of repeated noisy fits."""

from __future__ import annotations

import numpy as np
import pytest

from ntkdist.errors import ConfigError
from ntkdist.theory import fit_log_log, fit_power_law


def test_an_exact_power_law_is_recovered_to_rounding():
    x = np.array([16.0, 32.0, 64.0, 128.0, 256.0])
    fit = fit_log_log(x, 3.0 * x**-0.5)
    assert fit.slope == pytest.approx(-0.5, abs=1e-12)
    assert fit.prefactor == pytest.approx(3.0, rel=1e-12)
    assert fit.slope_error < 1e-10
    assert fit_power_law(x, 3.0 * x**-0.5) == pytest.approx((0.5, 3.0), rel=1e-12)


def test_stated_errors_give_a_slope_error_that_matches_the_scatter_of_repeated_fits():
    """y = 2·x^{−1}·(1 + 0.05 ε): over 2000 noisy repeats the slopes scatter by the stated slope error (±10%),
    and the slope lies within 3 stated errors of −1 in at least 99% of them (Gaussian: 99.7%)."""
    rng = np.random.default_rng(7)
    x = np.array([20.0, 40.0, 80.0, 160.0, 320.0, 640.0])
    truth = 2.0 / x
    fits = [fit_log_log(x, truth * (1 + 0.05 * rng.standard_normal(x.size)), 0.05 * truth) for _ in range(2000)]
    slopes = np.array([f.slope for f in fits])
    stated = np.median([f.slope_error for f in fits])
    assert np.std(slopes) == pytest.approx(stated, rel=0.1)
    assert np.mean([f.agrees_with(-1.0) for f in fits]) >= 0.99


def test_errors_too_small_for_the_scatter_are_widened_by_the_scatter():
    x = np.array([10.0, 20.0, 40.0, 80.0, 160.0])
    y = x**-1.0 * np.array([1.2, 0.8, 1.2, 0.8, 1.2])
    tight = fit_log_log(x, y, 1e-4 * y)
    loose = fit_log_log(x, y)
    assert tight.chi2_per_dof > 1e4
    assert tight.slope_error == pytest.approx(loose.slope_error, rel=1e-9)


@pytest.mark.parametrize("x, y, err, field", [
    ([1.0, 2.0], [1.0, -1.0], None, "positive"),
    ([1.0, 1.0], [1.0, 2.0], None, "two distinct"),
    ([1.0, 2.0, 3.0], [1.0, 2.0], None, "one y per x"),
    ([1.0, 2.0], [1.0, 2.0], [0.9, 0.1], "errors above"),
    ([1.0, 2.0], [1.0, 2.0], [0.0, 0.1], "y_error"),
])
def test_bad_points_are_refused_with_the_reason(x, y, err, field):
    with pytest.raises(ConfigError, match=field):
        fit_log_log(x, y, err)
