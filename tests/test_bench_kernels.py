"""bench/kernels.py side by side with neural-tangents on a tiny case: every ntkdist variant (output precision, store
mode) is timed against the same peer runs, the ratios are of those medians, and the NNGP and the empirical NTK are
timed likewise; bench/fused_tile.py and bench/small_calls.py print their rows."""

from __future__ import annotations

import json
import statistics

import pytest

from bench import kernels as bench_kernels
from tests.kernels.test_neural_tangents import peer_python


def peer_results(tmp_path, *args: str) -> list[dict]:
    """The JSON results of ``bench.kernels --peer --rounds 2`` with ``args``, against the real peer."""
    out = tmp_path / "peer.json"
    bench_kernels.main(["--peer", "--rounds", "2", *args, "--peer-python", peer_python(), "--json", str(out)])
    return json.loads(out.read_text())["results"]


@pytest.mark.slow
def test_every_output_precision_and_store_mode_shares_the_peer_runs(tmp_path):
    results = peer_results(tmp_path, "--case", "300,8,2,relu", "--dtype", "both", "--stores", "both")
    assert [(r["ntkdist_dtype"], r["stream_stores"]) for r in results] == [
        ("float64", "auto"), ("float64", "never"), ("float32", "auto"), ("float32", "never")]
    assert all(r["peer_s"] == results[0]["peer_s"] for r in results) and len(results[0]["peer_s"]) == 2
    for r in results:
        assert r["ratio"] == pytest.approx(statistics.median(r["peer_s"]) / statistics.median(r["ntkdist_s"]))
        assert r["ntkdist_entries_per_s"] == pytest.approx(300 * 300 / r["ntkdist_median_s"])
        assert r["best_ratio"] == pytest.approx(min(r["peer_s"]) / min(r["ntkdist_s"]))


@pytest.mark.slow
def test_the_empirical_ntk_is_timed_against_the_peers(tmp_path):
    [result] = peer_results(tmp_path, "--case", "300,8,2,relu", "--width", "32")
    assert result["width"] == 32 and len(result["peer_s"]) == len(result["ntkdist_s"]) == 2
    assert result["flops_per_pair"] == bench_kernels.empirical_flops_per_pair(8, 2, 32)
    assert result["ratio"] == pytest.approx(statistics.median(result["peer_s"]) / result["ntkdist_median_s"])


@pytest.mark.slow
def test_the_nngp_is_timed_against_the_peers(tmp_path):
    [result] = peer_results(tmp_path, "--case", "300,8,2,erf", "--kind", "nngp")
    assert result["kind"] == "nngp" and result["width"] is None and len(result["peer_s"]) == 2


def test_both_precisions_need_the_peer(capsys):
    with pytest.raises(SystemExit):
        bench_kernels.main(["--dtype", "both", "--case", "300,8,2,relu"])
    assert "--dtype both: only with --peer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_kernels.main(["--stores", "both", "--case", "300,8,2,relu"])
    assert "--stores: only with --peer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_kernels.main(["--peer", "--kind", "nngp", "--width", "64", "--case", "300,8,2,relu"])
    assert "--kind nngp: only with --peer, and not with --width" in capsys.readouterr().err


def test_fused_tile_times_the_product_each_depth_the_mirror_and_the_writes(capsys):
    from bench import fused_tile

    assert fused_tile.main(["--activation", "erf", "--depths", "1,2", "--repeat", "2", "--n", "600"]) == 0
    rows = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and line.split("|")[2].strip().replace(".", "").isdigit()}
    assert set(rows) == {"input product (GEMM)", "fused_tile, erf depth 1", "fused_tile, erf depth 2",
                         "mirror transpose", "tile + mirror to cold memory, ordinary stores",
                         "tile + mirror to cold memory, streaming stores"}
    assert all(value > 0 for value in rows.values())


def test_small_calls_prints_a_median_per_size(capsys):
    from bench import small_calls

    assert small_calls.main(["--repeat", "2", "--sizes", "16,300"]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and
            line.split("|")[1].strip().isdigit()]
    assert [int(row[1]) for row in rows] == [16, 300] and all(float(row[2]) > 0 for row in rows)
