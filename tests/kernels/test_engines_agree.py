"""Every kernel engine against one reference, table-driven: the same pairs, activations, depths and biases.

Engines: the NumPy reference path (``engine="array"``), the fused CPU engine (numba, ``engine="fused"``), the CUDA
source compiled for the host (the per-pair arithmetic of the GPU engine), and on a CUDA device CuPy with both
engines. Reference: the closed-form layer recursion in 40-digit arithmetic (`tests.helpers.mp_kernels`) on the
exact float64 inputs, so it is independent of every engine's formulas and of their rounding.

Pairs: a point against itself and against 0.5× itself (angle 0), and points at angles 1e-8, π/2, π − 1e-8 and π
(−0.5× itself) from it, the 1e-8 ones at equal and at unequal norms; every pair among them is checked.

Tolerance: `tolerance` = 4(depth + 1) units of rounding (u = 2⁻⁵³) of √(K_ii K_jj): 8.9e-16 at depth 1 (below the
1e-15 asked for), 1.8e-15 at depth 3 and 4.0e-15 at depth 8. 1e-15 cannot hold at every depth, in any of the engines,
NumPy included. Measured over this table (the largest error of each engine, in u): depth 1 4.9, depth 3 9.4 (1.04e-15,
the NumPy engine, abrelu(−0.4, 1.3) with bias; numba and the CUDA source 5.9), depth 8 22.7 (2.5e-15, the CUDA source
compiled for the host, erf without bias; numba 17.4, NumPy 17.2). That is 2–3u per layer, growing linearly with depth,
for every engine: each layer rounds its Σ, its Σ̇ and the correlation triple (ρ, 1 − ρ, 1 + ρ) it re-derives from Σ
and the per-point variances (about ten operations), and Θ is a sum of products of up to depth + 1 such factors, so
their relative errors add. (The scalar diagonal recursion, `analytic.diagonal_recursion`, which re-derives no
correlation, stays within 3u at depth 8 on the same points.) A wrong formula or a lost-digit angle shows up far above
this: an angle error of 1e-8, what arccos ρ gives near ρ = 1, moves Θ by ~1e-9 of its scale.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

import ntkdist
from ntkdist.kernels import MLP

from ..helpers import build_cuda_host_library, cuda_host_gram, mp_kernels

#: Every activation with a fused engine: the ABReLU family (relu, leaky_relu, abs, the general abrelu) and erf.
ACTIVATIONS = ("relu", "leaky_relu(0.1)", "abs", "abrelu(-0.4, 1.3)", "erf")
DEPTHS = (1, 3, 8)
BIASES = (0.0, 0.25)
WEIGHT_VAR = 1.6
#: u, the unit of rounding of float64.
ROUNDING = 2.0 ** -53


def tolerance(depth: int) -> float:
    """Allowed error over √(K_ii K_jj): 4 units of rounding per Dense layer (see the module docstring)."""
    return 4 * (depth + 1) * ROUNDING


def pair_inputs() -> np.ndarray:
    """Rows: x, 0.5x, and points at angles 1e-8 (norm of x, and half of it), π/2, π − 1e-8 and π from x."""
    x = np.array([1.3, 0.4, -0.7])
    norm = math.sqrt(float(x @ x))
    u = x / norm
    v = np.cross(u, [0.0, 0.0, 1.0])
    v /= math.sqrt(float(v @ v))

    def at(angle, radius):
        return radius * (math.cos(angle) * u + math.sin(angle) * v)

    # Powers of two scale x exactly, so 0.5x and −0.5x are at angles exactly 0 and π.
    return np.stack([x, 0.5 * x, at(1e-8, norm), at(1e-8, 0.5 * norm), at(math.pi / 2, 0.7 * norm),
                     at(math.pi - 1e-8, 0.5 * norm), -0.5 * x])


@functools.lru_cache(maxsize=None)
def reference(activation: str, depth: int, bias_var: float):
    """{kind: (n, n) kernel} of the 40-digit recursion."""
    X = pair_inputs()
    values = np.array([[mp_kernels(x, y, depth=depth, activation=activation, w=WEIGHT_VAR, b=bias_var) for y in X]
                       for x in X])
    return {"nngp": values[..., 0], "ntk": values[..., 1]}


# -- the engines: each (X, Y or None, net, kind) -> NumPy (n, m) float64 ----------------------------------------------
def _numpy_engine(X, Y, net, kind):
    return ntkdist.gram_block(X, Y, net=net, kind=kind, engine="array")


def _numba_engine(X, Y, net, kind):
    pytest.importorskip("numba", reason="the fused CPU engine needs numba")
    return ntkdist.gram_block(X, Y, net=net, kind=kind, engine="fused")


@functools.lru_cache(maxsize=1)
def _host_library():
    import tempfile

    return build_cuda_host_library(tempfile.mkdtemp(prefix="ntkdist-cu-"))


def _cuda_source_engine(X, Y, net, kind):
    library = _host_library()
    if library is None:
        pytest.skip("no host C++ compiler to build the CUDA source for the CPU")
    return cuda_host_gram(library, X, Y, net, kind)


def _cupy(engine):
    def run(X, Y, net, kind):
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() == 0:
                raise RuntimeError("no CUDA device")
        except Exception as error:  # ImportError, or CUDA without a device or driver
            pytest.skip(f"CuPy engines need CuPy and a CUDA device ({type(error).__name__}: {error})")
        on_device = ntkdist.gram_block(cupy.asarray(X), None if Y is None else cupy.asarray(Y), net=net, kind=kind,
                                       engine=engine)
        return cupy.asnumpy(on_device)

    return run


ENGINES = {
    "numpy": _numpy_engine,
    "numba": _numba_engine,
    "cuda-source-on-host": _cuda_source_engine,
    "cupy-fused": _cupy("fused"),
    "cupy-array": _cupy("array"),
}


@pytest.mark.parametrize("bias_var", BIASES)
@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("engine", list(ENGINES))
def test_engine_matches_the_40_digit_recursion(engine, activation, depth, bias_var):
    net = MLP(depth=depth, activation=activation, weight_var=WEIGHT_VAR, bias_var=bias_var)
    X = pair_inputs()
    for kind in ("ntk", "nngp"):
        ref = reference(activation, depth, bias_var)[kind]
        scale = np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
        got = ENGINES[engine](X, None, net, kind)
        assert np.array_equal(got, got.T), f"{engine}: the symmetric Gram is not exactly symmetric"
        rect = ENGINES[engine](X[:3], X[2:], net, kind)
        for name, value, expected, size in (("symmetric", got, ref, scale),
                                            ("rectangular", rect, ref[:3, 2:], scale[:3, 2:])):
            error = np.abs(value - expected) / size
            worst = np.unravel_index(np.argmax(error), error.shape)
            assert error.max() <= tolerance(depth), (
                f"{engine} {kind} {name}: error {error.max():.3g}·√(K_ii K_jj) at pair {worst} "
                f"(> {tolerance(depth):.3g})")
