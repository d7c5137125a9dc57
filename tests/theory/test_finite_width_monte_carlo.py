"""Streaming moments (Chan et al.'s merge) against dense sample statistics, and the per-pair theory against the
all-points recursions."""

from __future__ import annotations

import numpy as np
import pytest

from ntkdist.kernels import MLP
from ntkdist.theory import finite_width_corrections
from ntkdist.theory.finite_width.monte_carlo import Moments, merge_in_order, pair_theory, upper_pairs


def test_merged_chunks_equal_the_statistics_of_all_samples():
    rng = np.random.default_rng(0)
    # Large mean, small spread: where summing uncentred squares would lose the digits.
    samples = 1e4 + rng.standard_normal((301, 6)) @ rng.standard_normal((6, 6))
    merged = merge_in_order(Moments.of_samples(samples[i:i + 64]) for i in range(0, 301, 64))
    assert merged.count == 301
    np.testing.assert_allclose(merged.mean, samples.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(merged.covariance, np.cov(samples.T), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(merged.std_error, samples.std(axis=0, ddof=1) / np.sqrt(301), rtol=1e-9)
    with pytest.raises(ValueError, match="networks"):
        Moments.of_samples(samples[:1]).covariance


def test_upper_pairs_are_row_major():
    rows, cols = upper_pairs(3)
    assert list(zip(rows, cols)) == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]


@pytest.mark.slow  # ~18 s: the three-point recursions
def test_pair_theory_equals_the_three_point_recursions():
    """Each entry's statistics involve its two points only: pair by pair equals all three points at once."""
    x = 0.53 * np.random.default_rng(116).standard_normal((3, 4))
    net = MLP(depth=2, activation="gelu", weight_var=1.9, bias_var=0.1)
    per_pair = pair_theory(x, net)
    r = finite_width_corrections(x, net.activation, 2, 1.9, 0.1)
    rows, cols = upper_pairs(3)
    np.testing.assert_allclose(per_pair.ntk, r.ntk[rows, cols], rtol=1e-10)
    np.testing.assert_allclose(per_pair.ntk_correction, r.ntk_correction[rows, cols], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(per_pair.nngp_correction, r.nngp_correction[rows, cols], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(per_pair.ntk_variance, r.ntk_variance(1.0)[rows, cols], rtol=1e-8, atol=1e-10)
    # Var K̂_aa = 2K̄_aa² + 3V_aaaa/n to O(1/n): the diagonal of the Wick formula.
    diag = rows == cols
    K, K1, V = r.nngp, r.nngp_correction, r.v
    a = rows[diag]
    np.testing.assert_allclose(per_pair.nngp_variance[diag], 2 * K[a, a] ** 2, rtol=1e-10)
    np.testing.assert_allclose(per_pair.nngp_variance_correction[diag], 4 * K[a, a] * K1[a, a] + 3 * V[a, a, a, a],
                               rtol=1e-8)
