"""The fused CPU engine: its polynomial arcsine, and agreement with the reference (array) engine and 40 digits."""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest

import ntkdist
from ntkdist.kernels import MLP
from ntkdist.kernels.activations import Activation
from ntkdist.kernels.fused_cpu import asin_given_cosine, asin_half

from ..helpers import assert_kernel_close, mp_kernels, tricky_inputs

mp.mp.dps = 40


def test_polynomial_arcsine_is_accurate_to_rounding():
    x = np.concatenate([np.linspace(0.0, np.sqrt(0.5), 3001), np.geomspace(1e-300, 1e-3, 200)])
    got = np.array([asin_half(v) for v in x])
    ref = np.array([float(mp.asin(mp.mpf(v))) for v in x])
    assert np.all(np.abs(got - ref) <= 2.5e-16 * np.abs(ref))
    # Over [−1, 1], given the cosine √(1 − x²) rounded once (as the erf layer derives it from √det): within 4e-16.
    x = np.concatenate([-np.linspace(0, 1, 2001), np.linspace(0, 1, 2001), 1 - np.geomspace(1e-16, 1e-3, 100)])
    cosine = np.array([float(mp.sqrt(1 - mp.mpf(v) ** 2)) for v in x])
    got = np.array([asin_given_cosine(v, c) for v, c in zip(x, cosine)])
    ref = np.array([float(mp.asin(mp.mpf(v))) for v in x])
    assert np.all(np.abs(got - ref) <= 4e-16 * np.maximum(np.abs(ref), 1e-300))


@pytest.mark.parametrize("activation", ["relu", "leaky_relu(0.2)", "abs", "abrelu(-0.5, 2.0)", "erf"])
@pytest.mark.parametrize("bias_var", [0.0, 0.4])
def test_fused_engine_agrees_with_the_array_engine(activation, bias_var):
    rng = np.random.default_rng(11)
    X = rng.standard_normal((600, 7)) * rng.uniform(0.05, 8.0, size=(600, 1))
    X[3] = 0.0
    X[10] = 2.5 * X[11]
    X[12] = -X[13]
    X[14] = X[15] + 1e-10
    for depth in (1, 2, 5):
        net = MLP(depth=depth, activation=activation, weight_var=1.7, bias_var=bias_var)
        for kind in ("ntk", "nngp"):
            ref = ntkdist.gram_block(X, net=net, kind=kind, engine="array")
            got = ntkdist.gram_block(X, net=net, kind=kind, engine="fused")
            scale = np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
            assert_kernel_close(got, ref, scale, rtol=1e-13, sizable=1e-2)
            assert np.array_equal(got, got.T)


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_fused_engine_matches_40_digits_on_tricky_inputs(activation):
    rng = np.random.default_rng(12)
    X = tricky_inputs(rng)
    net = MLP(depth=3, activation=activation, weight_var=1.3, bias_var=0.2)
    got = ntkdist.ntk(X, net=net, engine="fused")
    ref = np.array([[mp_kernels(x, y, depth=3, activation=activation, w=1.3, b=0.2)[1] for y in X] for x in X])
    assert_kernel_close(got, ref, np.sqrt(np.outer(np.diag(ref), np.diag(ref))), sizable=1e-6)


@pytest.mark.parametrize("engine", ["fused", "array"])
@pytest.mark.parametrize("bias_var", [0.0, 0.3])
def test_erf_holds_its_accuracy_from_tiny_to_huge_inputs(engine, bias_var):
    """At input norms from 1e-60 to 1e76 (first-layer variances 1e-120 to 1e152) every erf entry is finite and
    within 4(depth + 1) units of rounding of √(K_ii K_jj) of the recursion in 400 digits (enough for the cancellation
    in det at q = 1e152). Two things it checks: the fused layer's products are scaled (`fused_cpu._erf_layer`;
    unscaled they overflowed from q ≈ 1e77), and both engines take every arcsine as an arctan2 of its sine and
    cosine (`closed_form_activations.Erf`): with arcsin(2q/(1 + 2q)) the diagonal was 3e-10 off at norm 1e10."""
    depth = 2
    net = MLP(depth=depth, activation="erf", weight_var=1.0, bias_var=bias_var)
    X = np.random.default_rng(5).standard_normal((5, 4))
    for scale in (1e-60, 1e-3, 1.0, 1e3, 1e6, 1e10, 1e20, 1e40, 1e76):
        points = X * scale
        got = ntkdist.ntk(points, net=net, engine=engine)
        assert np.isfinite(got).all(), scale
        ref = np.array([[float(mp_kernels(x, y, depth=depth, activation="erf", w=1.0, b=bias_var, dps=400)[1])
                         for y in points] for x in points])
        size = np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
        assert (np.abs(got - ref) <= 4 * (depth + 1) * 2.0**-53 * size).all(), scale


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (4, 4), (7, 256), (255, 130), (256, 256)])
def test_tile_mirror_is_the_exact_transpose(shape):
    from ntkdist.kernels.fused_cpu import transpose_into

    out = np.full((600, 600), np.nan)
    source = out[:shape[0], 300:300 + shape[1]]  # strided views, as tiles of a larger output are
    source[:] = np.random.default_rng(sum(shape)).standard_normal(shape)
    target = out[300:300 + shape[1], :shape[0]]
    transpose_into(source, target)
    assert np.array_equal(target, source.T)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (8, 8), (9, 17), (255, 130), (256, 256)])
@pytest.mark.parametrize("offset", [0, 1, 5, 8])
def test_streamed_tiles_are_the_exact_copy_and_transpose(dtype, shape, offset):
    """Streaming stores write whole cache lines and plain stores the partial ones at a row's ends: whatever the
    alignment of the target's rows (an odd offset and row length put every row on a different one), the target
    receives exactly the tile, or its transpose, and nothing around it is touched."""
    from ntkdist.kernels.streaming_stores import stream_into, stream_transposed_into

    rng = np.random.default_rng(sum(shape) + offset)
    source = rng.standard_normal(shape).astype(dtype)
    out = np.full((601, 603), np.nan, dtype)
    rows, cols = slice(offset, offset + shape[0]), slice(300 + offset, 300 + offset + shape[1])
    stream_into(source, out[rows, cols])
    assert np.array_equal(out[rows, cols], source)
    mirror_rows, mirror_cols = slice(300 + offset, 300 + offset + shape[1]), slice(offset, offset + shape[0])
    stream_transposed_into(source, out[mirror_rows, mirror_cols], np.empty((8, 256), dtype))
    assert np.array_equal(out[mirror_rows, mirror_cols], source.T)
    untouched = np.ones(out.shape, bool)
    untouched[rows, cols] = untouched[mirror_rows, mirror_cols] = False
    assert np.isnan(out[untouched]).all()
    # Rows that are strided, or not aligned to their item size, are copied by ordinary stores.
    strided = np.full((shape[0], 2 * shape[1]), np.nan, dtype)
    stream_into(source, strided[:, ::2])
    assert np.array_equal(strided[:, ::2], source) and np.isnan(strided[:, 1::2]).all()
    raw = np.zeros(source.nbytes + 64, np.uint8)
    unaligned = raw[1:1 + source.nbytes].view(dtype).reshape(shape)
    stream_into(source, unaligned)
    assert np.array_equal(unaligned, source)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_streamed_and_in_place_outputs_are_identical(monkeypatch, dtype):
    """A large output is streamed out of its tiles (`output_memory.streams_output`), a small one written in place:
    the same bits either way, symmetric or not, with a ragged last tile, from the fused engine (per-thread tiles),
    the array engine and the empirical kernel (`tiles.store_tile`)."""
    from ntkdist.kernels.empirical import empirical_ntk

    rng = np.random.default_rng(14)
    X = rng.standard_normal((700, 9))
    net = MLP(depth=2, activation="erf", bias_var=0.3)
    results = {}
    for mode in ("never", "always"):
        monkeypatch.setenv("NTKDIST_STREAM_STORES", mode)
        results[mode] = (ntkdist.ntk(X, net=net, dtype=dtype, threads=2),
                         ntkdist.nngp(X[:300], X[1:], net=MLP(depth=3, bias_var=0.1), dtype=dtype, threads=2),
                         ntkdist.ntk(X[:300], net=MLP(depth=2, activation="tanh"), dtype=dtype, engine="array"),
                         empirical_ntk(X[:300], net=net, width=32, seed=1, dtype=dtype),
                         empirical_ntk(X[:200], X[5:], net=net, width=32, seed=1, dtype=dtype))
    for never, always in zip(results["never"], results["always"]):
        assert np.array_equal(never, always)
    assert np.array_equal(results["always"][0], results["always"][0].T)


def test_results_do_not_depend_on_threads_or_blocks():
    rng = np.random.default_rng(13)
    X = rng.standard_normal((900, 16))
    net = MLP(depth=2, bias_var=0.1)
    one = ntkdist.ntk(X, net=net, threads=1)
    assert np.array_equal(one, ntkdist.ntk(X, net=net, threads=2))
    rows = ntkdist.ntk(X[:333], X, net=net, threads=2)
    assert np.array_equal(rows, one[:333])
    # Columns shifted by an odd offset land in other SIMD lanes and in the vector loops' scalar remainders: the
    # explicit FMAs round the same in both, so every entry is unchanged.
    for start in (1, 3, 7):
        assert np.array_equal(ntkdist.ntk(X[100:401], X[start:], net=net), one[100:401, start:])
    erf = MLP(depth=3, activation="erf", bias_var=0.2)
    assert np.array_equal(ntkdist.ntk(X[5:300], X[3:], net=erf), ntkdist.ntk(X, net=erf)[5:300, 3:])


def test_engines_are_chosen_and_refused_clearly():
    class Cube(Activation):
        name = "cube"

        def __call__(self, x):
            return x**3

        def derivative(self, x):
            return 3 * x**2

        def second_moment(self, q):
            return 15 * q**3

        def derivative_second_moment(self, q):
            return 27 * q**2

        def pair_moments(self, qx, qy, c, e, f):  # pragma: no cover - never reached
            raise AssertionError

    with pytest.raises(ValueError, match="engine: \"fused\" has no cube kernel"):
        ntkdist.ntk(np.ones((2, 2)), net=MLP(depth=1, activation=Cube()), engine="fused")
    with pytest.raises(ValueError, match="engine: must be one of"):
        ntkdist.ntk(np.ones((2, 2)), net=MLP(depth=1), engine="gpu")
