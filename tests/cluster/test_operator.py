"""The actor-panel operator on a real local Ray (2 CPUs), against dense products of a real NTK Gram matrix."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import ntkdist
from ntkdist.cluster import GramPanelWorker, RayGramOperator
from ntkdist.cluster.operator import SLAB_ROWS
from ntkdist.linalg import SymmetricOperator, float32_storage_error
from ntkdist.store import RunStore

NET = ntkdist.MLP(depth=3, bias_var=0.1)
N, DIM, BLOCK = 300, 5, 64  # five panels, the last one short


def inputs(seed=0):
    return np.random.default_rng(seed).standard_normal((N, DIM))


@pytest.fixture(scope="module")
def gram():
    return ntkdist.ntk(inputs(), net=NET)


def stored(path, K, dtype="float64"):
    """A run store holding K, written block by block as the build writes it."""
    store = RunStore.create(path, n=N, dim=DIM, block=BLOCK, dtype=dtype, config={"run": {"name": "op"}},
                            fingerprint="f" * 64, versions={"numpy": np.__version__})
    store.inputs[:] = inputs()
    for i, j in store.upper_blocks():
        store.record_blocks([store.write_block(i, j, K[store.block_slice(i), store.block_slice(j)])])
    return store


def probe(b=6, seed=1):
    return np.random.default_rng(seed).standard_normal((N, b))


def relative_error(Y, expected):
    return np.max(np.abs(Y - expected)) / np.max(np.abs(expected))


def test_memory_and_stored_modes_are_the_dense_product_bit_for_bit_alike_for_one_or_four_actors(
        ray_local, tmp_path, gram):
    store = stored(tmp_path / "r.zarr", gram)
    V = probe()
    index = np.array([299, 0, 70, 64, 70, 200])
    with RayGramOperator(store, mode="memory", workers=1) as held:
        assert isinstance(held, SymmetricOperator) and held.mode == "memory" and held.fallback_reasons == []
        Y = held.matmat(V)
        assert Y.dtype == np.float64 and relative_error(Y, gram @ V) < 1e-13
        held.matmat(V[:, :1])
        assert held.passes == 2 and len(held.pass_seconds) == 2
        assert held.error_bound == 0.0 and held.read_passes == 0
        assert np.array_equal(held.diagonal(), np.diagonal(gram))
        assert np.array_equal(held.columns(index), gram[:, index])
        assert held.passes == 2
    # Four actors on two CPUs (half a CPU each), streaming: same panels, same GEMM shapes, same order of sums.
    with RayGramOperator(store, mode="stored", workers=4, cpus_per_worker=0.5) as four:
        assert four.mode == "stored" and len(four.workers) == 4
        assert [w["panels"] for w in four.workers] == [[0, 4], [1], [2], [3]]
        assert np.array_equal(four.matmat(V), Y)
        assert np.array_equal(four.columns(index), gram[:, index])
        assert np.array_equal(four.diagonal(), np.diagonal(gram))
    # Panels over the memory budget: the actor streams them instead, and the product does not change.
    with RayGramOperator(store, mode="memory", workers=1, memory_budget=10 * N * 8) as tight:
        assert tight.requested_mode == "memory" and tight.mode == "stored"
        assert len(tight.fallback_reasons) == 1 and "memory_budget" in tight.fallback_reasons[0]
        assert np.array_equal(tight.matmat(V), Y)


def test_matrix_free_is_the_dense_product_for_one_or_four_actors_and_repeats_bit_for_bit(ray_local, tmp_path, gram):
    store = stored(tmp_path / "r.zarr", gram)  # matrix-free reads only its inputs
    V = probe()
    index = np.array([299, 0, 70, 64, 70, 200, 127, 128])
    with RayGramOperator(store, net=NET, mode="matrix_free", workers=1) as one:
        assert one.mode == "matrix_free" and one.error_bound == 0.0
        Y = one.matmat(V)
        assert relative_error(Y, gram @ V) < 1e-13
        # Diagonal and columns are the very entries the products use (each pair with its lower index as row).
        assert np.array_equal(one.diagonal(), np.diagonal(gram))
        assert np.array_equal(one.columns(index), gram[:, index])
        assert one.passes == 1
    with RayGramOperator(store, net=NET, mode="matrix_free", workers=4, cpus_per_worker=0.5) as four:
        assert four.jobs_of == [[0], [1], [2], [3, 4]]  # five panels, largest first, snaking back
        Y4 = four.matmat(V)
        # Another actor count adds the transposed contributions in another order: equal to rounding.
        assert relative_error(Y4, Y) < 1e-15
        assert np.array_equal(four.matmat(V), Y4)  # the same actor count repeats bit for bit
        assert relative_error(four.matmat(V[:, 2:3]), gram @ V[:, 2:3]) < 1e-13
        assert four.passes == 3


def test_matrix_free_from_X_needs_no_gram_store(ray_local, gram):
    X = inputs()
    V = probe(4)
    with RayGramOperator(X=X, net=NET, mode="matrix_free", block=128, workers=1) as op:
        assert op.store is None and op.dtype == np.float64 and op.error_bound == 0.0
        Y = op.matmat(V)
        assert relative_error(Y, gram @ V) < 1e-13
        assert np.array_equal(op.diagonal(), np.diagonal(gram))
        assert np.array_equal(op.columns(np.array([5, 130, 255, 299])), gram[:, [5, 130, 255, 299]])
    # X already in the object store; memory mode without a store computes the panels once from X.
    with RayGramOperator(X=ray_local.put(X), net=NET, mode="memory", block=128, workers=1) as held:
        assert held.mode == "memory" and held.shape == (N, N)
        assert relative_error(held.matmat(V), gram @ V) < 1e-13


def test_memory_from_X_over_budget_recomputes(gram):
    # The actor class in this process (no Ray): its memory check and its matrix-free fallback.
    kwargs = dict(n=N, block=128, panels=[0, 2], mode="memory", store_location=None, use_gram=False, X=inputs(),
                  net=NET, kind="ntk", device="cpu", threads=1)
    worker = GramPanelWorker(**kwargs, memory_budget=(128 + 44) * N * 8 - 1)
    assert worker.mode == "matrix_free" and "recomputing" in worker.reason
    held = GramPanelWorker(**kwargs, memory_budget=(128 + 44) * N * 8)
    assert held.mode == "memory"
    V = probe(2)
    held.begin_pass(2)
    held.receive_rows(0, V[:100])
    held.receive_rows(100, V[100:])
    held.product()
    Y = held.accumulated(0, N)
    for i in (0, 2):
        rows = slice(128 * i, min(128 * (i + 1), N))
        assert relative_error(Y[rows], gram[rows] @ V) < 1e-13
    assert not Y[128:256].any()  # panel 1 is another actor's: its rows stay exactly zero here
    held.end_pass()
    worker.begin_pass(2)
    worker.receive_rows(0, V)
    worker.panel_job(0)
    A = worker.accumulated(0, N)
    assert relative_error(A[:128], gram[:128] @ V) < 1e-13
    assert relative_error(A[128:], gram[128:, :128] @ V[:128]) < 1e-13  # the transposed half stays here
    worker.panel_job(2)  # the next job adds into the same accumulator
    A = worker.accumulated(0, N)
    assert relative_error(A[256:], gram[256:, :128] @ V[:128] + gram[256:, 256:] @ V[256:]) < 1e-13
    worker.end_pass()


def test_float32_store_bound_contains_the_storage_error(ray_local, tmp_path, gram):
    store = stored(tmp_path / "r.zarr", gram, dtype="float32")
    K32 = gram.astype(np.float32).astype(np.float64)
    V = probe(3)
    with RayGramOperator(store, mode="stored", workers=1) as op:
        assert op.dtype == np.float32
        assert relative_error(op.matmat(V), K32 @ V) < 1e-13
        bound = op.error_bound  # ‖K₃₂‖_F came with the first product's read
        assert op.read_passes == 0
        assert bound == pytest.approx(float32_storage_error(np.linalg.norm(K32)), rel=1e-12)
        assert 0 < np.linalg.norm(K32 - gram, 2) <= bound
    fresh = RayGramOperator(store, mode="memory", workers=1)
    assert fresh.error_bound == pytest.approx(bound, rel=1e-12)  # from the memory load: no read pass
    assert fresh.read_passes == 0 and fresh.passes == 0
    with pytest.raises(ValueError, match="V: expected shape"):
        fresh.matmat(np.ones((N - 1, 2)))
    fresh.close()
    fresh.close()
    with pytest.raises(RuntimeError, match="closed"):
        fresh.matmat(probe())


def test_bad_arguments(ray_local, tmp_path, gram):
    with pytest.raises(ValueError, match="mode"):
        RayGramOperator(X=inputs(), net=NET, mode="dense")
    with pytest.raises(ValueError, match="stored"):
        RayGramOperator(X=inputs(), net=NET, mode="stored")
    with pytest.raises(ValueError, match="net"):
        RayGramOperator(X=inputs(), mode="matrix_free")
    with pytest.raises(ValueError, match="X"):
        RayGramOperator(net=NET, mode="matrix_free")
    store = stored(tmp_path / "r.zarr", gram)
    store.forget_blocks([(0, 3)])
    with pytest.raises(ValueError, match="incomplete"):
        RayGramOperator(store, mode="stored")


# -- the single-pass Nyström sketch riding along the build (builder.build_gram(sketch_rank=…)) ---------------------
def test_build_gathers_the_sketch_once_per_block_across_resumes(ray_local, make_config):
    from ntkdist import pipeline
    from ntkdist.cluster import GramBlockWorker, build_gram, read_sketch, sketch_omega

    config = make_config(data={"n": 200, "dim": 4, "source": "gaussian"}, kernel={"block": 64, "dtype": "float32"},
                         network={"depth": 3})
    pipeline.prepare(config)
    store = RunStore.open(config.store_location, mode="r+")
    # A crash after three blocks were written and recorded, before the sketch was asked for / checkpointed.
    K = ntkdist.ntk(store.inputs[:], net=config.net, dtype="float32").astype(np.float64)
    for i, j in [(0, 0), (0, 3), (2, 3)]:
        store.record_blocks([store.write_block(i, j, K[store.block_slice(i), store.block_slice(j)])])
    report = build_gram(store.location, net=config.net, kind="ntk", workers=1, device="cpu", sketch_rank=5,
                        sketch_seed=7)
    assert report.computed == 7 and report.skipped == 3
    assert report.sketch == {"rank": 5, "seed": 7, "added": 10, "complete": True}
    sketch = read_sketch(store)
    omega = sketch_omega(200, 64, 5, 7)
    assert np.array_equal(sketch["omega"], omega) and sketch["complete"]
    assert relative_error(sketch["Y"], K @ omega) < 1e-13  # K as stored (float32), products in float64
    # Blocks lost and rebuilt after the sketch took them are not added again; a finished build adds nothing.
    for i, j in [(1, 2), (3, 3)]:
        store.forget_blocks([(i, j)])
    again = build_gram(store.location, net=config.net, kind="ntk", workers=1, device="cpu", sketch_rank=5,
                       sketch_seed=7)
    assert again.computed == 2 and again.sketch["added"] == 0
    assert np.array_equal(read_sketch(store)["Y"], sketch["Y"])
    # Without a sketch the build records nothing of it (and here finds nothing to do).
    assert build_gram(store.location, net=config.net, kind="ntk", workers=1, device="cpu").sketch is None
    worker = GramBlockWorker(store.location, config.net, "ntk", "cpu", 1)
    assert "sketch" not in worker.build([(1, 3)])[0]


def test_one_and_four_actors_give_the_same_spectrum(ray_local, gram):
    """The acceptance check of the actor count: the whole solve (top-k, λ_min, density) through one matrix-free
    actor and through four gives the same eigenvalues (to 1e-12 relative; the products agree to rounding) for a fixed seed."""
    from ntkdist.linalg.spectrum import solve_spectrum

    X = inputs()
    spectra = []
    for workers, cpus in ((1, None), (4, 0.5)):
        with RayGramOperator(X=X, net=NET, mode="matrix_free", block=BLOCK, workers=workers,
                             cpus_per_worker=cpus) as operator:
            spectra.append(solve_spectrum(operator, method="krylov", k=10, tol=1e-10, max_passes=40, smallest=1,
                                          density_bins=10, seed=7, density_options={"steps": 6, "deflate": 10}))
    one, four = spectra
    np.testing.assert_allclose(four.top.values, one.top.values, rtol=1e-12, atol=0)
    np.testing.assert_allclose(four.bottom.values, one.bottom.values, rtol=1e-12, atol=0)
    np.testing.assert_allclose(four.density.mass, one.density.mass, rtol=1e-12, atol=1e-15)
    assert one.passes == four.passes
    exact = np.linalg.eigvalsh(gram)
    np.testing.assert_allclose(one.top.values, exact[::-1][:10], rtol=1e-9)


def _resident_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status (Linux)")
def test_object_store_pages_leave_the_driver_and_their_data_stays(ray_local):
    """A 160 MB object read zero-copy counts in the driver's RssShmem until released; after the release the
    pages are gone from the driver and the object still reads back exactly (the store kept the data)."""
    import ray

    from ntkdist.cluster.runtime import release_object_store_pages

    values = np.random.default_rng(0).standard_normal(20_000_000)
    ref = ray.put(values)
    del values
    release_object_store_pages()
    view = ray.get(ref)
    total = float(view.sum())
    before = _resident_kib("RssShmem")
    assert before >= 150_000, "reading the object did not map it"
    assert release_object_store_pages() >= 160_000_000
    assert _resident_kib("RssShmem") < 20_000
    assert float(view.sum()) == total and np.array_equal(view, np.random.default_rng(0).standard_normal(20_000_000))


def test_a_pass_keeps_at_most_a_few_slabs_of_the_object_store_in_the_driver(ray_local):
    """N = 12000, b = 100: V and each actor's share of K·V are 9.6 MB (two slabs each); the driver holds their
    slabs only while it copies them (without the release it kept about twice V)."""
    X = np.random.default_rng(1).standard_normal((12_000, 3))
    V = np.random.default_rng(2).standard_normal((12_000, 100))
    with RayGramOperator(X=X, mode="matrix_free", net=ntkdist.MLP(depth=1), kind="nngp", workers=2,
                         cpus_per_worker=1.0) as operator:
        operator.matmat(V[:, :2])  # compile the kernel in the actors
        from ntkdist.cluster.runtime import release_object_store_pages

        release_object_store_pages()
        before = _resident_kib("RssShmem")
        operator.matmat(V)
        grown = _resident_kib("RssShmem") - before
    slab = SLAB_ROWS * 100 * 8 // 1024
    assert grown <= 2 * slab, f"the driver kept {grown} KiB of object-store pages (one slab is {slab} KiB)"
