"""Monte Carlo over sampled finite-width networks on Ray: means and covariances of the empirical NTK and NNGP.

For m points X, an `MLP` and a list of hidden widths, ``networks`` networks per width are drawn and their
kernels Θ̂ (NTK parameterization) and K̂ = f fᵀ computed on X (`ntkdist.kernels.sampled`). The work is cut into
fixed tasks of `NETWORKS_PER_TASK` consecutive network indices of one width; a pool of actors
(`ntkdist.cluster.dispatch.TaskPool`, which survives lost workers) reduces each task to `Moments` of the
upper entries (count, mean, centred sums of products: P + P² numbers per kernel, P = m(m+1)/2, never the
samples), and the driver merges them per width in task order (Chan et al.'s pairwise update). Network
``index`` of width ``n`` comes from seed `network_seed` (seed, n, index), so the same configuration gives the
same bits with 1 actor or 30.

The result is an xarray Dataset (`monte_carlo_kernels`), with the 1/n theory of Guillen, Misof, Gerken 2025
beside the measured statistics:

    ntk, nngp            (width, pair, statistic)   statistic ∈ STATISTICS
    ntk_covariance,      (width, pair, other_pair)  sample covariance of the upper entries
    nngp_covariance
    inputs               (point, feature)
    coords: width, pair ("i-j"), i(pair), j(pair), other_pair, statistic, networks(width)

Write it with `write_netcdf`.
"""

from __future__ import annotations

import functools
import logging
import os
import time

import numpy as np

from ..kernels import MLP
from ..kernels.sampled import network_seed, sampled_network_kernels
from ..theory.finite_width.monte_carlo import Moments, merge_in_order, pair_theory, upper_pairs
from .builder import MAX_RESTARTS, cluster_has_room, resources_per_worker
from .dispatch import Slot, TaskPool
from .runtime import get

log = logging.getLogger("ntkdist.cluster")

#: Networks per task: enough to amortise a remote call (a network on a few points costs ~1 ms), few enough to
#: spread a width over the actors. Part of the result's definition only through the merge order, which is fixed.
NETWORKS_PER_TASK = 64
#: The statistics along the dataset's ``statistic`` dimension.
STATISTICS = ("mean", "std_error", "variance", "theory_mean", "theory_variance", "infinite")
SEED_RULE = "network index k of width n is drawn from seed network_seed(seed, n, k) = SeedSequence((seed, n, k))"


class KernelSampler:
    """Draws networks and reduces their kernels on fixed points to `Moments` (a Ray actor; plain class in process)."""

    def __init__(self, X: np.ndarray, net: MLP, seed: int):
        self._X = np.asarray(X, dtype=np.float64)
        self._net = net
        self._seed = int(seed)
        self._rows, self._cols = upper_pairs(self._X.shape[0])

    def describe(self) -> dict:
        return {"pid": os.getpid(), "node": None}

    def sample(self, items: list[tuple[int, int, int]]) -> list[dict]:
        """For each (width, first index, count): the `Moments` of Θ̂ and K̂ over those networks."""
        out = []
        for width, first, count in items:
            ntk, nngp = [], []
            for index in range(first, first + count):
                kernels = sampled_network_kernels(self._X, self._net, width=width,
                                                  seed=network_seed(self._seed, width, index))
                ntk.append(kernels.ntk[self._rows, self._cols])
                nngp.append(kernels.nngp[self._rows, self._cols])
            out.append({"width": width, "first": first, "ntk": Moments.of_samples(ntk),
                        "nngp": Moments.of_samples(nngp)})
        return out


def plan_monte_carlo(widths, networks: int, per_task: int = NETWORKS_PER_TASK) -> list[tuple[int, int, int]]:
    """The fixed tasks (width, first index, count) covering ``networks`` networks of every width."""
    return [(int(w), first, min(per_task, networks - first)) for w in widths for first in range(0, networks, per_task)]


def _validate(X, widths, networks: int) -> tuple[np.ndarray, list[int]]:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1 or not np.all(np.isfinite(X)):
        raise ValueError(f"X: must be a finite (m, d) array of points, got shape {X.shape}")
    widths = [int(w) for w in widths]
    if not widths or any(w < 1 for w in widths) or len(set(widths)) != len(widths):
        raise ValueError(f"widths: must be distinct positive integers, got {widths}")
    if isinstance(networks, bool) or not isinstance(networks, (int, np.integer)) or networks < 2:
        raise ValueError(f"networks: need at least 2 sampled networks per width (for a variance), got {networks!r}")
    return X, sorted(widths)


def sample_moments(X, net: MLP, widths, *, networks: int, seed: int = 0, workers: int = 2,
                   per_task: int = NETWORKS_PER_TASK, cpus_per_worker: float | None = None) -> dict:
    """{width: {"ntk": Moments, "nngp": Moments}} over ``networks`` networks per width, on a pool of Ray actors.

    Ray must be initialised (`ntkdist.cluster.ray_session`). The result does not depend on ``workers``.
    """
    X, widths = _validate(X, widths, networks)
    tasks = plan_monte_carlo(widths, int(networks), per_task)
    workers = max(1, min(int(workers), len(tasks)))
    resources = resources_per_worker("cpu", workers, cpus_per_worker)
    start_actor = functools.partial(_start_sampler, X, net, int(seed), resources)
    slots = [Slot(start_actor()) for _ in range(workers)]
    pool = TaskPool(slots, start_actor=start_actor, has_room=lambda: cluster_has_room(resources))
    parts: dict[tuple[int, int], dict] = {}
    started = time.perf_counter()
    try:
        for slot, info in zip(slots, get([slot.actor.describe.remote() for slot in slots])):
            slot.info = info
        pool.run([("sample", [task]) for task in tasks],
                 lambda records: parts.update({(r["width"], r["first"]): r for r in records}))
    finally:
        pool.kill_all()
    log.info("Monte Carlo: %d networks × %d widths on %d actors in %.1f s", networks, len(widths), workers,
             time.perf_counter() - started)
    return {w: {kind: merge_in_order(parts[(w, first)][kind] for _, first, _ in plan_monte_carlo([w], networks, per_task))
                for kind in ("ntk", "nngp")}
            for w in widths}


def _start_sampler(X, net, seed, resources):
    import ray

    return ray.remote(KernelSampler).options(max_restarts=MAX_RESTARTS, max_task_retries=0, **resources).remote(
        X, net, seed)


def monte_carlo_kernels(X, net: MLP, widths, *, networks: int, seed: int = 0, workers: int = 2,
                        per_task: int = NETWORKS_PER_TASK, theory: bool = True, cpus_per_worker: float | None = None):
    """Empirical NTK and NNGP means, variances and covariances over sampled networks, against the 1/n theory.

    Parameters
    ----------
    X : (m, d) array
        The points (a few: the covariance has P² entries, P = m(m+1)/2; the theory costs ~2 s per pair at depth 3).
    net : MLP
        Architecture, activation and variances; every hidden layer has the width of the row.
    widths : sequence of int
        Hidden widths n.
    networks : int
        Networks sampled per width (≥ 2). Standard errors shrink like 1/√networks.
    seed : int
        Base seed: network k of width n is drawn from `network_seed` (seed, n, k).
    workers : int
        Ray actors (Ray must be initialised). The result is the same for any number.
    theory : bool
        Fill ``theory_mean`` and ``theory_variance`` from `pair_theory` (else NaN; ``infinite`` is always filled).

    Returns
    -------
    xarray.Dataset
        Layout in the module docstring. ``theory_mean`` = K + K¹/n (Θ + Θ¹/n); ``theory_variance`` =
        (A + B + Bᵀ)/n for Θ̂ and K_aaK_bb + K_ab² + O(1/n) terms for K̂ (`pair_theory`); ``std_error`` is the
        standard error of the mean, √(variance/networks).
    """
    import xarray as xr

    from ..kernels import nngp as nngp_kernel, ntk as ntk_kernel

    X, widths = _validate(X, widths, networks)
    moments = sample_moments(X, net, widths, networks=networks, seed=seed, workers=workers, per_task=per_task,
                             cpus_per_worker=cpus_per_worker)
    rows, cols = upper_pairs(X.shape[0])
    n = np.array(widths, dtype=np.float64)[:, None]
    infinite = {"ntk": ntk_kernel(X, net=net)[rows, cols], "nngp": nngp_kernel(X, net=net)[rows, cols]}
    nan = np.full((len(widths), rows.size), np.nan)
    predicted = {"ntk": (nan, nan), "nngp": (nan, nan)}
    if theory:
        t = pair_theory(X, net)
        predicted = {"ntk": (t.ntk_mean(n), t.ntk_var(n)), "nngp": (t.nngp_mean(n), t.nngp_var(n))}
    labels = [f"{i}-{j}" for i, j in zip(rows, cols)]
    data = {}
    for kind in ("ntk", "nngp"):
        per_width = [moments[w][kind] for w in widths]
        stacked = np.stack([np.stack([m.mean for m in per_width]), np.stack([m.std_error for m in per_width]),
                            np.stack([m.variance for m in per_width]), predicted[kind][0], predicted[kind][1],
                            np.broadcast_to(infinite[kind], nan.shape)], axis=-1)
        data[kind] = (("width", "pair", "statistic"), stacked, {"long_name": _LONG_NAMES[kind]})
        data[f"{kind}_covariance"] = (("width", "pair", "other_pair"), np.stack([m.covariance for m in per_width]),
                                      {"long_name": f"sample covariance of the upper entries of {kind}"})
    data["inputs"] = (("point", "feature"), X)
    coords = {"width": widths, "pair": labels, "i": ("pair", rows), "j": ("pair", cols), "other_pair": labels,
              "statistic": list(STATISTICS), "networks": ("width", [moments[w]["ntk"].count for w in widths])}
    attrs = {"activation": net.activation.describe(), "depth": net.depth, "weight_var": net.weight_var,
             "bias_var": net.bias_var, "seed": int(seed), "seed_rule": SEED_RULE,
             "convention": "ntkdist NTK parameterization (neural-tangents stax); all hidden layers of the same width",
             "theory": "Guillen, Misof, Gerken 2025 (arXiv 2508.11522): K + K1/n, Theta + Theta1/n, (A + 2B)/n"}
    return xr.Dataset(data, coords=coords, attrs=attrs)


_LONG_NAMES = {"ntk": "empirical NTK entry Theta(x_i, x_j) of sampled networks",
               "nngp": "empirical NNGP entry f(x_i) f(x_j) of sampled networks"}


def write_netcdf(dataset, path) -> None:
    """Write a `monte_carlo_kernels` Dataset as netCDF (read it back with ``xarray.open_dataset(path)``)."""
    dataset.to_netcdf(path)
