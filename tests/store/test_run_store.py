"""The run store on real zarr directories: layout, manifest, integrity checks, readers."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import xarray as xr
import zarr

from ntkdist.errors import StoreError
from ntkdist.store import RunStore, block_checksum, open_gram, open_spectrum

from ..helpers import make_store, symmetric, write_all


def test_layout_is_plain_zarr_v3(tmp_path):
    store = make_store(tmp_path / "r.zarr")
    K = symmetric(10)
    write_all(store, K)
    meta = json.loads((tmp_path / "r.zarr" / "zarr.json").read_text())
    assert meta["zarr_format"] == 3
    gram = zarr.open_array(str(tmp_path / "r.zarr" / "gram"), mode="r")
    assert gram.shape == (10, 10) and gram.chunks == (4, 4)
    assert np.array_equal(gram[:], K)
    manifest = zarr.open_array(str(tmp_path / "r.zarr" / "manifest" / "blocks"), mode="r")[:]
    for i, j in store.upper_blocks():
        assert manifest[i, j] == block_checksum(K[store.block_slice(i), store.block_slice(j)])
    assert np.all(manifest[np.tril_indices(3, -1)] == -1)


def test_unwritten_blocks_are_nan_and_listed_missing(tmp_path):
    store = make_store(tmp_path / "r.zarr")
    K = symmetric(10)
    store.record_blocks([store.write_block(0, 2, K[0:4, 8:10])])
    assert store.missing_blocks() == [(0, 0), (0, 1), (1, 1), (1, 2), (2, 2)]
    assert np.isnan(store.gram[0:4, 0:4]).all()
    assert np.array_equal(store.gram[8:10, 0:4], K[8:10, 0:4])
    with pytest.raises(StoreError, match="incomplete"):
        open_gram(tmp_path / "r.zarr")
    assert open_gram(tmp_path / "r.zarr", require_complete=False).shape == (10, 10)


def test_write_block_rejects_lower_blocks_and_wrong_shapes(tmp_path):
    store = make_store(tmp_path / "r.zarr")
    with pytest.raises(ValueError, match="upper blocks"):
        store.write_block(1, 0, np.zeros((4, 4)))
    with pytest.raises(ValueError, match="expected \\(2, 2\\)"):
        store.write_block(2, 2, np.zeros((4, 4)))


def test_float32_store_keeps_float32_bytes(tmp_path):
    store = make_store(tmp_path / "r.zarr", dtype="float32")
    K = symmetric(10)
    write_all(store, K)
    assert store.gram.dtype == np.float32
    assert np.array_equal(store.gram[:], K.astype(np.float32))
    manifest = store.manifest[:]
    for i, j in store.upper_blocks():
        assert manifest[i, j] == block_checksum(K[store.block_slice(i), store.block_slice(j)].astype(np.float32))


def test_stages_and_spectrum_round_trip(tmp_path):
    store = make_store(tmp_path / "r.zarr")
    assert store.stage("solve") is None
    store.mark_stage("prepare", seconds=1.0)
    ds = xr.Dataset({"eigenvalue": ("mode", np.array([3.0, 2.0, 1.0]))}, coords={"mode": [1, 2, 3]},
                    attrs={"config": {"run": {"name": "x"}}})
    store.write_spectrum(ds)
    store.mark_stage("solve", modes=3)
    reopened = RunStore.open(tmp_path / "r.zarr")
    assert reopened.stage("prepare")["seconds"] == 1.0 and reopened.stage("solve")["modes"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # xarray's fallback for unconsolidated metadata warns
        spectrum = xr.open_zarr(str(tmp_path / "r.zarr"), group="spectrum")
    assert list(spectrum["eigenvalue"].values) == [3.0, 2.0, 1.0]
    assert spectrum.attrs["config"] == {"run": {"name": "x"}}
    assert open_spectrum(tmp_path / "r.zarr")["eigenvalue"].dims == ("mode",)


def test_existing_store_is_not_overwritten_by_accident(tmp_path):
    make_store(tmp_path / "r.zarr")
    with pytest.raises(StoreError, match="already exists"):
        make_store(tmp_path / "r.zarr")
    with pytest.raises(StoreError, match="no run store"):
        RunStore.open(tmp_path / "nothing.zarr")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    with pytest.raises(StoreError, match="not an ntkdist run store"):
        RunStore.open(tmp_path / "other.zarr")


def test_meta_reads_what_is_stored_now_not_what_a_handle_was_opened_with(tmp_path):
    """Two handles on one store (the driver and an actor, or two stages): each sees the other's stage records,
    and recording a stage never drops one another handle recorded meanwhile."""
    make_store(tmp_path / "r.zarr")
    first = RunStore.open(tmp_path / "r.zarr", mode="r+")
    second = RunStore.open(tmp_path / "r.zarr", mode="r+")
    assert first.stage("build") is None
    second.mark_stage("build", computed_blocks=6)
    assert first.stage("build")["computed_blocks"] == 6
    assert first.meta["stages"].keys() == {"build"}
    first.mark_stage("solve")
    assert RunStore.open(tmp_path / "r.zarr").meta["stages"].keys() == {"build", "solve"}
    second.clear_stages("build")
    assert first.stage("build") is None and first.stage("solve") is not None
    # A read is a copy: changing it changes nothing stored.
    first.meta["stages"]["report"] = {}
    assert first.stage("report") is None
    # What never changes is read once.
    assert (first.n, first.dim, first.block, first.dtype, first.fingerprint) == (10, 3, 4, "float64", "f" * 64)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("where", ["local", "s3"])
def test_blocks_written_as_raw_chunks_read_back_through_plain_zarr(where, dtype, tmp_path, request):
    # Full-size chunks of the uncompressed gram are written as their bytes, edge chunks through zarr: plain zarr
    # must read both back bit for bit, and no temporary file may be left beside a chunk.
    location = str(tmp_path / "r.zarr") if where == "local" else request.getfixturevalue("s3_location")
    store = make_store(location, n=11, dim=2, block=4, dtype=dtype)
    K = symmetric(11).astype(dtype)
    write_all(store, K)
    assert np.array_equal(zarr.open_array(f"{location}/gram", mode="r")[:], K)
    if where == "local":
        assert not list((tmp_path / "r.zarr").rglob("*.partial"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (8, 8), (17, 130), (256, 129), (300, 2048), (1030, 611)])
def test_mirror_transpose_is_exact_for_every_shape(shape, dtype):
    from ntkdist.store.chunk_io import direct_write_buffer, transposed

    values = np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype)
    assert np.array_equal(transposed(values), values.T)
    into = direct_write_buffer(shape[::-1], dtype)
    assert transposed(values, out=into) is into and np.array_equal(into, values.T)
    assert into.ctypes.data % 4096 == 0  # page-aligned, as O_DIRECT needs


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (8, 8), (17, 130), (513, 1031)])
def test_block_sum_squares_is_the_sum_to_its_rounding_bound(shape, dtype):
    """Σ K² against the exact sum of squares (rational arithmetic): within the rounding bound of 8 running totals,
    (entries/8 + 8)·2⁻⁵³ relative, plus one rounding of each square for float64 (a float32's square is exact in
    float64)."""
    from fractions import Fraction

    from ntkdist.store import block_sum_squares

    values = (np.random.default_rng(sum(shape)).standard_normal(shape) * 3).astype(dtype)
    exact = float(sum(Fraction(float(v)) ** 2 for v in values.ravel()))
    entries = values.size
    bound = (entries / 8 + 8 + (dtype == "float64")) * 2.0 ** -53 * exact
    assert abs(block_sum_squares(values) - exact) <= bound
    assert block_sum_squares(values) == block_sum_squares(values.copy())  # a fixed order: the same bits each time


def test_recorded_sum_squares_verify_under_either_rule_and_nothing_else():
    """`sum_squares_matches` accepts Σ K² as `block_sum_squares` computes it and as stores before it recorded it
    (numpy's einsum in float64), and refuses a value one ulp away from both."""
    from ntkdist.store import block_sum_squares, sum_squares_matches

    values = np.random.default_rng(7).standard_normal((257, 300)).astype(np.float32)
    ours = block_sum_squares(values)
    einsum = float(np.einsum("ij,ij->", values, values, dtype=np.float64))
    assert sum_squares_matches(values, ours) and sum_squares_matches(values, einsum)
    for wrong in (np.nextafter(max(ours, einsum), np.inf), np.nextafter(min(ours, einsum), -np.inf)):
        assert not sum_squares_matches(values, wrong)


def test_block_checksum_is_the_standard_crc32_of_the_chunk_bytes():
    """The manifest's CRC-32 is zlib's (what ``zlib.crc32`` of a chunk file gives a reader without ntkdist), for
    C-ordered and strided blocks alike."""
    import zlib

    values = np.random.default_rng(3).standard_normal((300, 517)).astype(np.float32)
    assert block_checksum(values) == zlib.crc32(values.tobytes())
    strided = values[::2, 1::3]
    assert block_checksum(strided) == zlib.crc32(np.ascontiguousarray(strided).tobytes())
    assert block_checksum(values[:0]) == 0


def test_a_chunk_file_holds_the_bytes_whether_its_array_is_page_aligned_or_not(tmp_path):
    """`write_file_atomically` writes a page-aligned array (an engine's pooled output) as it is, copies any other
    into its aligned buffer first, and writes sizes that direct I/O cannot take through the page cache."""
    from ntkdist.kernels.output_memory import output_array
    from ntkdist.store.chunk_io import write_file_atomically

    aligned = output_array(np, (1024, 1024), "float32")
    aligned[:] = np.random.default_rng(0).standard_normal(aligned.shape)
    backing = np.random.default_rng(1).standard_normal(1024 * 1024 + 1).astype(np.float32)
    unaligned = backing[1:].reshape(1024, 1024)  # starts 4 bytes past an allocation: never page-aligned
    odd = np.arange(1000, dtype=np.float32)  # 4000 bytes: not a multiple of the 4096 direct I/O needs
    assert aligned.ctypes.data % 4096 == 0 and unaligned.ctypes.data % 4096 != 0
    for name, values in {"aligned": aligned, "unaligned": unaligned, "odd": odd}.items():
        path = tmp_path / name
        write_file_atomically(path, values)
        assert path.read_bytes() == values.tobytes(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aligned", "odd", "unaligned"]  # no partial files left
