"""Close pairs of points without the O(N²d) all-pairs scan: a sort along random projections.

The positivity verdict (coincident, proportional and antipodal inputs, the closest relative separation) and the
interlacing bound (a principal submatrix on near pairs) need the pairs of rows that are close. Scanning all
N(N − 1)/2 pairs costs O(N²d) time (10¹² pairs at N = 10⁶); this module finds them from one sort.

**Method (exact).** For a unit vector w, |w·p_i − w·p_j| ≤ ‖p_i − p_j‖ (Cauchy–Schwarz). So every pair within
``radius`` lies within ``radius`` of each other in the sorted order of the projections w·p_i: sort once, take for
each point the window of points whose projection lies within ``radius`` above it (a binary search), drop the
candidates that a second and third projection already separate, and check the rest with the true distance. The
projections are widened by their rounding error (γ_d·‖p‖), so **no pair within the radius is missed** — the
search is exact, not sampled; its randomness (the directions, from ``seed``) affects only its cost.

**Cost.** O(N log N + N·d) for the projections and the sort, plus O(C·d) for the C candidates that pass the
three projection filters, in chunks of bounded memory (`CHUNK` pairs at a time, never N×N). For data without
dense clusters C ≈ N²·radius·ρ² (ρ the density of the projected points), which is tiny for the radii used here
(1e-12 for proportional inputs, 2e-6 for the separation caveat): at N = 10⁶, d = 16 a few thousand candidates.
C is large only when many points are truly within the radius of one another (then they are the answer) or, with
probability zero for random directions, when the data lie in a subspace orthogonal to them.

A kd-tree (``scipy.spatial.cKDTree``) gives the same guarantee; measured on this machine it was the slower of
the two for these tiny radii (``query_pairs(1e-9)`` on 10⁵ unit rows in R¹⁶: 19 s; its nearest-neighbour query
degrades to the brute-force scan in dimension 16–64), so the projection sort is used.

`near_pairs` is the one front door of the interlacing bound: the exact all-pairs scan, streamed in row blocks,
up to `ntkdist.theory.estimates.STREAM_MAX_N` points, and `near_pair_candidates` above.
"""

from __future__ import annotations

import numpy as np

from .estimates import STREAM_MAX_N, as_data, block_rows

#: Candidate pairs checked at a time (bounds the memory of the search: a few arrays of this length).
CHUNK = 1 << 20
_EPS = np.finfo(np.float64).eps


def _directions(dim: int, count: int, seed: int) -> np.ndarray:
    W = np.random.default_rng(seed).standard_normal((dim, count))
    return W / np.linalg.norm(W, axis=0, keepdims=True)


def _window_pairs(order: np.ndarray, ends: np.ndarray, start: int, stop: int):
    """All (a, b) with start ≤ a < stop and a < b < ends[a], as positions in the sorted order."""
    counts = ends[start:stop] - np.arange(start, stop) - 1
    total = int(counts.sum())
    if total == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    a = np.repeat(np.arange(start, stop, dtype=np.int64), counts)
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    b = a + 1 + (np.arange(total, dtype=np.int64) - offsets)
    return order[a], order[b]


def pairs_within(points, radius: float, *, seed: int = 0, chunk: int = CHUNK):
    """Every pair i < j with ‖p_i − p_j‖ ≤ ``radius``, exactly (see the module docstring for the guarantee).

    Parameters
    ----------
    points : (N, d) array
    radius : float
        Euclidean distance, ≥ 0.
    seed : int
        Seed of the projection directions (affects the cost only, never the result).
    chunk : int
        Candidate pairs checked at a time.

    Returns
    -------
    i, j : (P,) int64 arrays, i < j
    distance : (P,) float64, ‖p_i − p_j‖ computed as the norm of the difference
    candidates : int
        How many pairs passed the projection filters (the O(C·d) part of the cost).
    """
    P = np.asarray(points, dtype=np.float64)
    n, dim = P.shape
    empty = np.empty(0, dtype=np.int64)
    if n < 2 or radius < 0:
        return empty, empty, np.empty(0), 0
    W = _directions(dim, 3, seed)
    proj = P @ W
    # |fl(w·p) − w·p| ≤ γ_d‖w‖‖p‖: widen the windows so that rounding never drops a pair
    scale = float(np.sqrt(np.einsum("ij,ij->i", P, P)).max()) if n else 0.0
    reach = float(radius) + 4.0 * (dim + 2) * _EPS * scale + 1e-300
    order = np.argsort(proj[:, 0], kind="stable")
    first = proj[order, 0]
    ends = np.searchsorted(first, first + reach, side="right")
    counts = ends - np.arange(n) - 1
    found_i, found_j, found_d = [], [], []
    candidates = 0
    start = 0
    cumulative = np.cumsum(counts)
    while start < n:
        # positions start..stop whose windows hold about `chunk` candidates together
        base = cumulative[start - 1] if start else 0
        stop = int(np.searchsorted(cumulative, base + chunk, side="right"))
        stop = min(max(stop, start + 1), n)
        i, j = _window_pairs(order, ends, start, stop)
        start = stop
        if i.size == 0:
            continue
        keep = (np.abs(proj[i, 1] - proj[j, 1]) <= reach) & (np.abs(proj[i, 2] - proj[j, 2]) <= reach)
        i, j = i[keep], j[keep]
        candidates += int(i.size)
        if i.size == 0:
            continue
        diff = P[i] - P[j]
        dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        close = dist <= radius
        lo, hi = np.minimum(i[close], j[close]), np.maximum(i[close], j[close])
        found_i.append(lo)
        found_j.append(hi)
        found_d.append(dist[close])
    if not found_i:
        return empty, empty, np.empty(0), candidates
    i, j, d = np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)
    order = np.lexsort((j, i))
    return i[order], j[order], d[order], candidates


def signed_pairs_within(points, radius: float, *, seed: int = 0, chunk: int = CHUNK):
    """Pairs i < j with ‖p_i − p_j‖ ≤ radius (sign +1) or ‖p_i + p_j‖ ≤ radius (sign −1), exactly.

    One `pairs_within` on [P; −P]: a pair inside one half is a ``−`` distance (kept once), a pair across the
    halves (i, N + j) is a ``+`` distance of p_i and p_j; i = j across the halves (‖2p_i‖ ≤ radius) is dropped.

    Returns
    -------
    i, j : int64 arrays (i < j); sign : int8 array (+1 difference, −1 sum); distance; candidates
    """
    P = np.asarray(points, dtype=np.float64)
    n = P.shape[0]
    i, j, d, candidates = pairs_within(np.vstack([P, -P]), radius, seed=seed, chunk=chunk)
    same = (i < n) & (j < n)
    cross = (i < n) & (j >= n) & (j - n != i)
    ci, cj = i[cross], j[cross] - n
    lo, hi = np.minimum(ci, cj), np.maximum(ci, cj)
    # (i, N + j) and (j, N + i) are the same sum pair: keep one
    key = np.unique(np.stack([lo, hi], axis=1), axis=0, return_index=True)[1] if lo.size else np.empty(0, int)
    lo, hi, dc = lo[key], hi[key], d[cross][key]
    out_i = np.concatenate([i[same], lo])
    out_j = np.concatenate([j[same], hi])
    sign = np.concatenate([np.ones(int(same.sum()), dtype=np.int8), -np.ones(lo.size, dtype=np.int8)])
    dist = np.concatenate([d[same], dc])
    return out_i, out_j, sign, dist, candidates


def near_pair_candidates(points, count: int, *, neighbours: int = 8, projections: int = 4, seed: int = 0):
    """The ``count`` pairs with the smallest min(‖p_i − p_j‖, ‖p_i + p_j‖) among neighbours in sorted projections.

    A heuristic (no optimality guarantee): for each of ``projections`` random directions, [P; −P] is sorted by its
    projection and each point is paired with the next ``neighbours`` points in that order; the true distances of
    those O(N·neighbours·projections) pairs are computed and the ``count`` smallest kept. Used where any set of
    pairs gives a valid result (Cauchy interlacing on a principal submatrix) and only its quality depends on the
    pairs being near. Cost O(projections·(N log N + N·neighbours·d)), memory O(N·neighbours).

    Returns an (m, 2) int64 array of pairs i < j, m ≤ count, nearest first.
    """
    P = np.asarray(points, dtype=np.float64)
    n, dim = P.shape
    if n < 2 or count <= 0:
        return np.empty((0, 2), dtype=np.int64)
    both = np.vstack([P, -P])
    W = _directions(dim, projections, seed)
    rows = max(1, CHUNK // (4 * dim))
    best_d = np.empty(0)
    best_i = np.empty(0, dtype=np.int64)
    best_j = np.empty(0, dtype=np.int64)

    def compact(d, i, j, keep):
        order = np.argsort(d, kind="stable")
        d, i, j = d[order], i[order], j[order]
        first = np.unique(np.stack([i, j], axis=1), axis=0, return_index=True)[1]  # smallest distance per pair
        first = np.sort(first)[:keep]
        return d[first], i[first], j[first]

    for column in range(projections):
        order = np.argsort(both @ W[:, column], kind="stable")
        for step in range(1, neighbours + 1):
            for start in range(0, 2 * n - step, rows):
                a = order[start:min(start + rows, 2 * n - step)]
                b = order[start + step:min(start + rows, 2 * n - step) + step]
                i, j = a % n, b % n
                valid = i != j
                a, b, i, j = a[valid], b[valid], i[valid], j[valid]
                diff = both[a] - both[b]
                dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
                best_d = np.concatenate([best_d, dist])
                best_i = np.concatenate([best_i, np.minimum(i, j)])
                best_j = np.concatenate([best_j, np.maximum(i, j)])
                if best_d.size > max(4 * count, rows):
                    best_d, best_i, best_j = compact(best_d, best_i, best_j, count)
    if best_d.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    best_d, best_i, best_j = compact(best_d, best_i, best_j, count)
    return np.stack([best_i, best_j], axis=1).astype(np.int64)


def near_pairs(X, count: int, *, exact_max_n: int = STREAM_MAX_N) -> np.ndarray:
    """Indices of ``count`` pairs (i < j) with small min(‖x_i − x_j‖, ‖x_i + x_j‖), nearest first.

    Sums are included because odd/even activations without bias make x and −x as degenerate as x and x.
    N ≤ ``exact_max_n``: the exact ``count`` smallest, streamed over row blocks (O(N²d) time, bounded memory).
    Above: neighbours in sorted random projections (`near_pair_candidates`,
    O(N log N + N·d) per direction), a heuristic without optimality guarantee — fine for its one use, the
    interlacing bound, which holds for any set of pairs.
    """
    X = as_data(X)
    n = X.shape[0]
    if n > exact_max_n:
        return near_pair_candidates(X, count)
    sq = np.einsum("ij,ij->i", X, X)
    best_d = np.empty(0)
    best_i = np.empty(0, dtype=np.int64)
    best_j = np.empty(0, dtype=np.int64)
    step = block_rows(n)
    for start in range(0, n, step):
        stop = min(start + step, n)
        dist = sq[start:stop, None] + sq[None, :] - 2.0 * np.abs(X[start:stop] @ X.T)
        dist[np.arange(stop - start)[:, None] + start >= np.arange(n)[None, :]] = np.inf  # pairs i < j only
        flat = dist.ravel()
        take = min(count, int(np.isfinite(flat).sum()))
        if take == 0:
            continue
        part = np.argpartition(flat, take - 1)[:take]
        i, j = np.unravel_index(part, dist.shape)
        best_d = np.concatenate([best_d, flat[part]])
        best_i = np.concatenate([best_i, i + start])
        best_j = np.concatenate([best_j, j])
        if best_d.size > count:
            keep = np.argpartition(best_d, count - 1)[:count]
            best_d, best_i, best_j = best_d[keep], best_i[keep], best_j[keep]
    order = np.argsort(best_d, kind="stable")
    return np.stack([best_i[order], best_j[order]], axis=1)
