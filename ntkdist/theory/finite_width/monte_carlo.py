"""Streaming sample moments of kernel entries over sampled networks, and the 1/n theory they are held against.

Monte Carlo over networks (`ntkdist.cluster.finite_width`) reduces each network's m × m kernel to the vector of
its P = m(m+1)/2 upper entries (i ≤ j, row-major: `upper_pairs`). Workers reduce fixed chunks of networks to
`Moments` (count, mean, centred sums of products); the driver merges the chunks in a fixed order with the
pairwise update of Chan, Golub and LeVeque 1979 ("Updating formulae and a pairwise algorithm for computing
sample variances", eq. 2.1b), exact in exact arithmetic and stable in float64 (no sums of squares of uncentred
values are ever subtracted). A fixed chunking and merge order makes the result the same bits whatever the
number of workers.

`pair_theory` gives, per entry, the infinite-width value, the mean to O(1/n) and the variance to O(1/n) from
`finite_width_corrections` (Guillen, Misof, Gerken 2025), computed pair by pair: an entry's statistics involve
its two points only, and the cost of the recursions grows like m⁶ in the number of points at once (one pair,
depth 3: ~2 s; six points: ~6 min).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import finite_width_corrections


def upper_pairs(m: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices (i ≤ j) of the P = m(m+1)/2 upper entries of an m × m matrix, row-major."""
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m: must be a positive number of points, got {m!r}")
    return np.triu_indices(int(m))


@dataclass(frozen=True)
class Moments:
    """Count, mean and centred sum of products Σ_s (v_s − mean)(v_s − mean)ᵀ of sample vectors (float64)."""

    count: int
    mean: np.ndarray
    comoment: np.ndarray

    @classmethod
    def of_samples(cls, samples) -> "Moments":
        """The moments of the rows of ``samples`` (count × P), two-pass (mean first, then centred products)."""
        v = np.asarray(samples, dtype=np.float64)
        if v.ndim != 2 or v.shape[0] < 1:
            raise ValueError(f"samples: must be a (count ≥ 1, P) array, got shape {v.shape}")
        mean = v.mean(axis=0)
        centred = v - mean
        return cls(v.shape[0], mean, centred.T @ centred)

    def merge(self, other: "Moments") -> "Moments":
        """The moments of both sample sets together (Chan, Golub, LeVeque 1979, eq. 2.1b)."""
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        comoment = self.comoment + other.comoment + np.outer(delta, delta) * (self.count * other.count / count)
        return Moments(count, mean, comoment)

    @property
    def covariance(self) -> np.ndarray:
        """The unbiased sample covariance (P × P); needs two samples."""
        if self.count < 2:
            raise ValueError("networks: a covariance needs at least two sampled networks per width")
        return self.comoment / (self.count - 1)

    @property
    def variance(self) -> np.ndarray:
        return np.diag(self.covariance).copy()

    @property
    def std_error(self) -> np.ndarray:
        """Standard error of the mean of each entry, √(variance / count)."""
        return np.sqrt(self.variance / self.count)


def merge_in_order(parts) -> Moments:
    """Merge `Moments` left to right (the caller fixes the order, and with it the bits of the result)."""
    parts = list(parts)
    if not parts:
        raise ValueError("parts: nothing to merge; sample at least one network")
    total = parts[0]
    for part in parts[1:]:
        total = total.merge(part)
    return total


@dataclass(frozen=True)
class PairTheory:
    """Per upper entry (i ≤ j, `upper_pairs` order): infinite-width value and 1/n coefficients of mean and variance.

    E[Θ̂_ij] = ntk + ntk_correction/n + O(1/n²), Var Θ̂_ij = ntk_variance/n + O(1/n²), and likewise for the
    NNGP entry K̂_ij = f(x_i)f(x_j), whose variance is O(1): Var K̂_ij = nngp_variance + nngp_variance_correction/n.
    """

    ntk: np.ndarray
    ntk_correction: np.ndarray
    ntk_variance: np.ndarray
    nngp: np.ndarray
    nngp_correction: np.ndarray
    nngp_variance: np.ndarray
    nngp_variance_correction: np.ndarray

    def ntk_mean(self, width) -> np.ndarray:
        return self.ntk + self.ntk_correction / width

    def nngp_mean(self, width) -> np.ndarray:
        return self.nngp + self.nngp_correction / width

    def ntk_var(self, width) -> np.ndarray:
        return self.ntk_variance / width

    def nngp_var(self, width) -> np.ndarray:
        return self.nngp_variance + self.nngp_variance_correction / width


def _entry_statistics(r, a: int, b: int) -> tuple:
    """The seven statistics of entry (a, b) of one `FiniteWidthCorrections` (points a, b of its inputs).

    NTK variance: (A_abab + B_abab + B_abba)/n (`FiniteWidthCorrections.ntk_covariance`). NNGP variance of the
    scalar output's z_a z_b: Wick's theorem with the 1/n cumulant, E[z_a z_b z_a z_b] = 2K̄_ab² + K̄_aa K̄_bb +
    (2V_(ab)(ab) + V_(aa)(bb))/n with K̄ = K + K¹/n (Guillen et al. eq. (44), one neuron), so
    Var = K_aa K_bb + K_ab² + [K¹_aa K_bb + K_aa K¹_bb + 2K_ab K¹_ab + 2V_abab + V_aabb]/n + O(1/n²).
    """
    K, K1, V = r.nngp, r.nngp_correction, r.v
    ntk_variance = r.a[a, b, a, b] + r.b[a, b, a, b] + r.b[a, b, b, a]
    nngp_variance = K[a, a] * K[b, b] + K[a, b] ** 2
    nngp_variance_correction = (K1[a, a] * K[b, b] + K[a, a] * K1[b, b] + 2 * K[a, b] * K1[a, b]
                                + 2 * V[a, b, a, b] + V[a, a, b, b])
    return (r.ntk[a, b], r.ntk_correction[a, b], ntk_variance, K[a, b], K1[a, b], nngp_variance,
            nngp_variance_correction)


def pair_theory(X, net) -> PairTheory:
    """`PairTheory` of every upper entry of the m points X for the network ``net`` (an `ntkdist.kernels.MLP`).

    Equal hidden widths n, ntkdist's stax convention (`finite_width_corrections`, ``convention="stax"``). Each
    off-diagonal entry from the two-point recursions of its pair, each diagonal entry from its point alone.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X: must be an (m, d) array of points, got shape {X.shape}")
    args = (net.activation, net.depth, net.weight_var, net.bias_var)
    rows, cols = upper_pairs(X.shape[0])
    single = {i: finite_width_corrections(X[[i]], *args) for i in range(X.shape[0])}
    values = []
    for i, j in zip(rows, cols):
        if i == j:
            values.append(_entry_statistics(single[i], 0, 0))
        else:
            values.append(_entry_statistics(finite_width_corrections(X[[i, j]], *args), 0, 1))
    return PairTheory(*(np.array(column) for column in zip(*values)))
