"""`ntkdist verify` over a real local Ray (2 CPUs) on real zarr stores: each kind of damage is caught and named,
a repair rebuilds exactly the bad blocks, and the CLI's exit codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from ntkdist import pipeline
from ntkdist.cli import main
from ntkdist.cluster import build_gram, verify_store
from ntkdist.cluster.verify import GPU_RELATIVE_TOLERANCE, entry_tolerance, sample_indices, verify_in_process
from ntkdist.store import RunStore


def small(make_config, **sections):
    """n = 40 in blocks of 16: 3×3 blocks, 6 upper, the last one short."""
    return make_config(**{"data": {"n": 40, "dim": 4, "source": "gaussian"}, "kernel": {"block": 16},
                          "network": {"depth": 3, "activation": "erf", "bias_var": 0.1}, **sections})


def verify(store, config, **options):
    return verify_store(store.location, net=config.net, kind=config.kernel.kind, width=config.network.width,
                        seed=config.network.seed, workers=2, **options)


def chunk_file(store, i, j):
    return Path(store.location) / "gram" / "c" / str(i) / str(j)


#: Entries of the upper blocks when every row is sampled (diagonal blocks are compared whole).
ALL_ENTRIES = (40 ** 2 + 2 * 16 ** 2 + 8 ** 2) // 2


def test_an_intact_store_verifies_with_every_entry_recomputed(ray_local, make_config, written_store):
    config = small(make_config)
    written_store(config)
    store = RunStore.open(config.store_location)
    report = verify(store, config, sample=store.n)
    assert report.ok, [str(b) for b in report.bad]
    assert report.blocks == 6 and report.sampled_entries == ALL_ENTRIES and report.comparison == "exact"


@pytest.mark.slow
def test_an_empirical_store_is_recomputed_with_the_network_the_builder_drew(ray_local, make_config):
    config = small(make_config, kernel={"block": 16, "kind": "empirical_ntk"},
                   network={"depth": 2, "width": 32, "seed": 5})
    pipeline.prepare(config)
    build_gram(config.store_location, net=config.net, kind="empirical_ntk", workers=2, device="cpu", width=32, seed=5)
    store = RunStore.open(config.store_location)
    assert verify(store, config, sample=store.n).ok
    other_draw = verify_store(store.location, net=config.net, kind="empirical_ntk", width=32, seed=6, sample=store.n)
    assert other_draw.bad_blocks == store.upper_blocks()


def test_each_kind_of_damage_is_caught_and_named(ray_local, make_config, written_store):
    config = small(make_config)
    written_store(config)
    store = RunStore.open(config.store_location, mode="r+")
    # A flipped byte in the compressed chunk of block (0, 1): a decode error or a CRC mismatch.
    raw = bytearray(chunk_file(store, 0, 1).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk_file(store, 0, 1).write_bytes(bytes(raw))
    chunk_file(store, 1, 1).unlink()  # a deleted chunk
    store.gram[32:40, 0:16] = 0.5  # a wrong mirror of block (0, 2)
    # A wrong value written with a consistent CRC and Σ K²: only the recomputation finds it.
    values = store.gram[16:32, 32:40]
    values[3, 5] += 1e-9
    store.record_blocks([store.write_block(1, 2, values)])
    report = verify(store, config, sample=store.n)
    reasons = {(b.i, b.j): " ".join(b.reasons) for b in report.bad}
    assert sorted(reasons) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert "cannot be read" in reasons[0, 1] or "CRC-32" in reasons[0, 1]
    assert "NaN" in reasons[1, 1] and "CRC-32" in reasons[1, 1]
    assert reasons[0, 2] == "its mirror (2, 0) is not its exact transpose"
    assert reasons[1, 2].startswith("1 of 128 sampled entries differ") and "K[19, 37]" in reasons[1, 2]


def test_a_float32_store_is_held_to_float32_rounding(ray_local, make_config, written_store):
    config = small(make_config, kernel={"block": 16, "dtype": "float32"})
    written_store(config)
    store = RunStore.open(config.store_location, mode="r+")
    values = store.gram[0:16, 0:16]
    values[2, 2] = np.nextafter(np.nextafter(values[2, 2], np.inf), np.inf)  # two float32 ulps off
    store.record_blocks([store.write_block(0, 0, values)])
    report = verify(store, config, sample=store.n)  # every other block is within rounding of a fresh evaluation
    assert report.bad_blocks == [(0, 0)] and report.comparison == "within float32 rounding 2^-24·|k|"


def test_a_store_built_on_gpus_is_held_to_the_documented_tolerance(make_config, written_store):
    config = small(make_config)
    written_store(config)
    store = RunStore.open(config.store_location, mode="r+")
    store.mark_stage("build", workers=[{"pid": 1, "note": "gpu 0", "threads": 1}])
    assert entry_tolerance(store) == (0.0, GPU_RELATIVE_TOLERANCE, "within 2^-36·max|k| (built on GPU)")
    values = store.gram[16:32, 16:32]
    scale = np.abs(values).max()
    values[1, 1] += 0.5 * GPU_RELATIVE_TOLERANCE * scale  # GPU-sized reassociation: accepted
    values[2, 3] += 2.0 * GPU_RELATIVE_TOLERANCE * scale  # beyond it: caught (in this process, no Ray)
    store.record_blocks([store.write_block(1, 1, values)])
    bad = verify_in_process(store.location, net=config.net, kind="ntk", sample=store.n)
    assert [(b.i, b.j) for b in bad] == [(1, 1)] and bad[0].reasons[0].startswith("1 of 256 sampled entries")


@pytest.mark.slow
def test_cli_exit_codes_and_a_repair_that_rebuilds_only_the_bad_blocks(ray_local, make_config, written_store,
                                                                       capsys):
    config = small(make_config)
    K = written_store(config)
    store = RunStore.open(config.store_location, mode="r+")
    assert main(["verify", str(store.location), "--sample", "40"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "intact" in out[0] and f"{ALL_ENTRIES} sampled entries" in out[0]
    chunk_file(store, 1, 2).unlink()
    store.gram[0:16, 16:32] = 1.0  # block (0, 1) overwritten, its mirror now stale
    untouched = {(i, j): chunk_file(store, i, j).read_bytes() for i in range(3) for j in range(3)
                 if {i, j} not in ({0, 1}, {1, 2})}
    assert main(["verify", str(store.location), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "2 bad blocks" in out and "  - block (0, 1): does not match its CRC-32" in out
    assert "  - block (1, 2): holds NaN" in out
    store.mark_stage("solve")
    zarr.open_group(str(Path(store.location) / "sketch"), mode="w")  # a ride-along sketch that summed the bad blocks
    assert main(["verify", str(store.location), "--repair"]) == 0
    out = capsys.readouterr().out
    assert "repair: rebuilt 2 blocks;" in out and "intact" in out.strip().splitlines()[-1]
    assert store.stage("solve") is None and not (Path(store.location) / "sketch").exists()
    assert all(chunk_file(store, i, j).read_bytes() == raw for (i, j), raw in untouched.items())
    assert np.array_equal(store.gram[:], K)


def test_cli_refuses_a_negative_sample_naming_the_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["verify", "any.zarr", "--sample", "-1"])
    assert exit_.value.code == 2 and "--sample: invalid whole number ≥ 0 value: '-1'" in capsys.readouterr().err


def test_sample_is_seeded_distinct_and_capped_at_n():
    first = sample_indices(1000, 50, seed=3)
    assert np.array_equal(first, sample_indices(1000, 50, seed=3)) and len(np.unique(first)) == 50
    assert not np.array_equal(first, sample_indices(1000, 50, seed=4))
    assert np.array_equal(sample_indices(7, 50, seed=0), np.arange(7))


def test_a_store_of_another_kernel_arithmetic_is_held_to_the_tolerance(make_config, written_store):
    """A float64 store records the revision of the kernel arithmetic that built it; another revision (or none
    recorded, as before the key existed) rounds differently, so its entries are compared within 2^-36·max|k|, and a
    value off by more than that is still named."""
    from ntkdist.kernels import ARITHMETIC_REVISION
    from ntkdist.store import KERNEL_ARITHMETIC

    config = small(make_config)
    written_store(config)
    store = RunStore.open(config.store_location, mode="r+")
    assert store.kernel_arithmetic == str(ARITHMETIC_REVISION) and entry_tolerance(store)[2] == "exact"
    group = zarr.open_group(store.location, mode="r+")
    meta = dict(group.attrs["ntkdist"])
    meta["versions"] = {k: v for k, v in meta["versions"].items() if k != KERNEL_ARITHMETIC}
    group.attrs["ntkdist"] = meta
    older = RunStore.open(config.store_location, mode="r+")
    assert older.kernel_arithmetic is None
    assert entry_tolerance(older) == (0.0, GPU_RELATIVE_TOLERANCE, "within 2^-36·max|k| (kernel arithmetic "
                                      f"unrecorded, this is {ARITHMETIC_REVISION})")
    values = older.gram[0:16, 16:32]
    values[4, 7] += 1e-14 * np.abs(values).max()  # a rounding-sized difference: accepted
    values[9, 2] += 1e-9 * np.abs(values).max()  # far beyond rounding: named
    older.record_blocks([older.write_block(0, 1, values)])
    bad = verify_in_process(older.location, net=config.net, kind=config.kernel.kind, sample=older.n)
    assert [(b.i, b.j) for b in bad] == [(0, 1)] and "1 of 256 sampled entries differ" in " ".join(bad[0].reasons)
