"""Monte Carlo over sampled networks on Ray (ntkdist.cluster.finite_width): the means against Guillen et al.'s
K + K¹/n and Θ + Θ¹/n, independence of the actor count, and the Dataset's layout (netCDF round trip).

Statistics: σ = the standard error of the sample mean over the networks of one width; 3σ; fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from ntkdist.cluster.finite_width import STATISTICS, monte_carlo_kernels, write_netcdf
from ntkdist.kernels import MLP

GELU = MLP(depth=3, activation="gelu", weight_var=1.98305826)  # the paper's critical 4-layer GeLU, no bias
POINTS = 0.53 * np.random.default_rng(116).standard_normal((2, 4))


@pytest.mark.slow  # ~25 s on two busy cores: 6000 networks and the pair's recursions
def test_gelu_means_match_first_order_theory(ray_local):
    """At n = 20 and 40 (3000 networks each), every sampled NTK and NNGP mean is within 3σ of K + K¹/n (Θ + Θ¹/n),
    and the NTK diagonal at n = 20 is resolved from the infinite-width value (> 3σ away), so the test has power."""
    ds = monte_carlo_kernels(POINTS, GELU, [20, 40], networks=3000, seed=3, workers=2)
    for kind in ("ntk", "nngp"):
        s = ds[kind]
        residual = s.sel(statistic="mean") - s.sel(statistic="theory_mean")
        assert (abs(residual) < 3 * s.sel(statistic="std_error")).all(), (kind, residual.values)
    diagonal = ds["ntk"].sel(width=20, pair=["0-0", "1-1"])
    gap = diagonal.sel(statistic="mean") - diagonal.sel(statistic="infinite")
    assert (gap > 3 * diagonal.sel(statistic="std_error")).all(), gap.values


def test_result_does_not_depend_on_the_number_of_actors(ray_local, tmp_path):
    """Same seeds, 1 and 3 actors: the same bits (fixed tasks merged in a fixed order). Also the layout."""
    net = MLP(depth=2, activation="tanh", weight_var=1.5, bias_var=0.1)
    x = np.random.default_rng(1).standard_normal((3, 2))
    one = monte_carlo_kernels(x, net, [8, 16], networks=150, seed=5, workers=1, per_task=32, theory=False)
    three = monte_carlo_kernels(x, net, [16, 8], networks=150, seed=5, workers=3, per_task=32, theory=False)
    for name in ("ntk", "nngp", "ntk_covariance", "nngp_covariance"):
        assert np.array_equal(one[name].values, three[name].values, equal_nan=True), name

    assert dict(one["ntk"].sizes) == {"width": 2, "pair": 6, "statistic": len(STATISTICS)}
    assert dict(one["ntk_covariance"].sizes) == {"width": 2, "pair": 6, "other_pair": 6}
    assert list(one["pair"].values) == ["0-0", "0-1", "0-2", "1-1", "1-2", "2-2"]
    assert list(one["i"].values) == [0, 0, 0, 1, 1, 2] and list(one["j"].values) == [0, 1, 2, 1, 2, 2]
    assert list(one["networks"].values) == [150, 150]
    assert one["ntk"].sel(statistic="theory_mean").isnull().all()  # theory=False
    # The covariance's diagonal is the variance; the standard error is √(variance / networks).
    cov = one["ntk_covariance"].values
    variance = one["ntk"].sel(statistic="variance").values
    np.testing.assert_allclose(np.diagonal(cov, axis1=1, axis2=2), variance, rtol=1e-14)
    np.testing.assert_allclose(one["ntk"].sel(statistic="std_error").values, np.sqrt(variance / 150), rtol=1e-14)
    path = tmp_path / "mc.nc"
    write_netcdf(one, path)
    with xr.open_dataset(path) as back:
        xr.testing.assert_identical(back.load(), one)


def test_bad_input_names_the_field(ray_local):
    with pytest.raises(ValueError, match="networks"):
        monte_carlo_kernels(POINTS, GELU, [20], networks=1)
    with pytest.raises(ValueError, match="widths"):
        monte_carlo_kernels(POINTS, GELU, [20, 20], networks=10)
