"""Readers of a stored Gram matrix (`open_gram`, `iter_gram_blocks`) on real zarr stores, and the README's
snippets run as written against a small built store."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import ntkdist
from ntkdist.errors import StoreError
from ntkdist.store import RunStore

REPO = Path(__file__).resolve().parents[2]
#: A README code block the tests run: the marker, then a fenced python block.
SNIPPET = re.compile(r"<!-- run-by-tests -->\n```python\n(.*?)```", re.S)
#: The store path the README's snippets name, replaced by a built store's.
README_STORE = "storage/runs/demo.zarr"


@pytest.fixture
def small_store(make_config, written_store):
    """A finished store of n = 50 in blocks of 16 (4×4 blocks, the last short) and its dense K."""
    config = make_config(data={"n": 50, "dim": 3}, kernel={"block": 16})
    K = written_store(config)
    return config.store_location, K


def test_open_gram_equals_the_dense_kernel_on_random_sub_blocks(small_store):
    path, K = small_store
    gram = ntkdist.open_gram(path)
    assert gram.chunks == ((16, 16, 16, 2),) * 2 and gram.dtype == np.float64
    rng = np.random.default_rng(0)
    for _ in range(5):
        i, j = np.sort(rng.choice(51, 2, replace=False))
        k, l = np.sort(rng.choice(51, 2, replace=False))
        assert np.array_equal(gram[i:j, k:l].compute(), K[i:j, k:l])


def test_the_xarray_form_is_labelled_by_sample(small_store):
    path, K = small_store
    labelled = ntkdist.open_gram(path, coords=True)
    assert labelled.dims == ("sample_i", "sample_j") and labelled.name == "gram"
    assert np.array_equal(labelled["sample_i"].values, np.arange(50))
    assert np.array_equal(labelled["sample_j"].values, np.arange(50))
    picked = labelled.sel(sample_i=[3, 40], sample_j=slice(10, 19)).compute()
    assert np.array_equal(picked.values, K[[3, 40], 10:20])
    assert labelled.attrs["n"] == 50 and labelled.attrs["block"] == 16 and labelled.attrs["kind"] == "ntk"


def test_the_iterator_yields_each_finished_upper_block_once(small_store):
    path, K = small_store
    store = RunStore.open(path)
    seen = []
    for rows, cols, values in ntkdist.iter_gram_blocks(path):
        seen.append((rows.start // 16, cols.start // 16))
        assert np.array_equal(values, K[rows, cols])
    assert seen == store.upper_blocks()


def test_blocks_the_manifest_does_not_list_read_nan_even_with_their_chunks_written(small_store):
    path, K = small_store
    store = RunStore.open(path, mode="r+")
    record = store.write_block(0, 2, K[0:16, 32:48])  # its chunks are on disk...
    store.forget_blocks([(0, 2)])  # ...but the manifest no longer lists it, as during a build
    partial = ntkdist.open_gram(path, require_complete=False)
    store.record_blocks([record])  # recorded after the open: not in the snapshot the reader took
    values = partial.compute()
    unlisted = np.zeros((50, 50), dtype=bool)
    unlisted[0:16, 32:48] = unlisted[32:48, 0:16] = True
    assert np.isnan(values[unlisted]).all() and np.array_equal(values[~unlisted], K[~unlisted])
    store.forget_blocks([(1, 3)])
    assert (1, 3) not in [(r.start // 16, c.start // 16) for r, c, _ in ntkdist.iter_gram_blocks(path)]
    store.clear_stages("build")
    with pytest.raises(StoreError, match="incomplete .1 of 10 blocks missing"):
        ntkdist.open_gram(path)


@pytest.fixture
def small_s3_store(make_config, written_store, s3_location):
    """The same store in the loopback S3 server."""
    config = make_config(run={"store": s3_location}, data={"n": 50, "dim": 3}, kernel={"block": 16})
    K = written_store(config)
    return config.store_location, K


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_readme_snippets_run_against_a_built_store(where, request):
    # Plain zarr, dask and xarray read the store as the README shows, on a local disk and in object storage
    # (the S3 endpoint and credentials come from the standard AWS environment the fixture sets).
    path, K = request.getfixturevalue("small_store" if where == "local" else "small_s3_store")
    store = RunStore.open(path, mode="r+")
    store.write_spectrum(xr.Dataset({"eigenvalue": ("mode", np.linalg.eigvalsh(K)[::-1])},
                                    coords={"mode": np.arange(1, 51)}))
    snippets = SNIPPET.findall((REPO / "README.md").read_text(encoding="utf-8"))
    assert len(snippets) == 4 and all(README_STORE in code for code in snippets)
    results = {}
    for code in snippets:
        scope = {}
        exec(compile(code.replace(README_STORE, str(path)), "README.md", "exec"), scope)
        results.update(scope)
    assert np.array_equal(results["corner"], K[0:10, 20:30])
    assert np.allclose(results["row_sums"], K.sum(axis=1), rtol=1e-14)
    assert np.array_equal(results["first"].values, K[0]) and np.isclose(results["trace"], np.trace(K), rtol=1e-14)
    assert np.array_equal(results["top"], np.linalg.eigvalsh(K)[::-1][:5])
