"""The command line for daily use: ls, info, report, export and theory, each with --json, on real stores."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import xarray as xr

import ntkdist
from ntkdist import pipeline
from ntkdist.cli import EXIT_CODES, build_parser, main
from ntkdist.config import Config
from ntkdist.store import RunStore, open_inputs, open_spectrum
from ntkdist.theory import harmonic_multiplicity


def run_main(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def small_config(store, **data):
    return Config.from_dict({"run": {"name": store.stem, "store": str(store)},
                             "data": {"source": "sphere", "seed": 1, **data},
                             "network": {"depth": 2, "activation": "relu"}, "kernel": {"block": 64},
                             "solver": {"k": 12}, "cluster": {"workers": 2, "device": "cpu"}})


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    """A run solved and reported without Ray (blocks written directly), and one only prepared beside it."""
    root = tmp_path_factory.mktemp("daily")
    config = small_config(root / "runs" / "solved.zarr", n=200, dim=4)
    pipeline.prepare(config)
    store = RunStore.open(config.store_location, mode="r+")
    K = ntkdist.ntk(store.inputs[:], net=config.net)
    store.record_blocks([store.write_block(i, j, K[store.block_slice(i), store.block_slice(j)])
                         for i, j in store.upper_blocks()])
    store.mark_stage("build")
    pipeline.solve(config)
    pipeline.compare(config)
    pipeline.report(config)
    half = small_config(root / "runs" / "nested" / "half.zarr", n=100, dim=3)
    pipeline.prepare(half)
    return config, K, half, root


def test_ls_lists_every_run_with_its_status_and_spectrum(capsys, solved):
    config, K, half, root = solved
    code, out, _ = run_main(capsys, "ls", str(root / "runs"), "--json")
    assert code == 0
    runs = {run["location"]: run for run in json.loads(out)["runs"]}
    assert set(runs) == {config.store_location, half.store_location}  # found at any depth, never inside a store
    done = runs[config.store_location]
    assert (done["n"], done["status"], done["kind"], done["blocks_written"]) == (200, "report", "ntk", 10)
    assert done["spectrum"]["lambda_1"] == pytest.approx(np.linalg.eigvalsh(K)[-1], rel=1e-10)
    assert done["spectrum"]["trace"] == pytest.approx(np.trace(K), rel=1e-12)
    assert runs[half.store_location]["status"] == "prepared" and runs[half.store_location]["spectrum"] is None
    code, out, _ = run_main(capsys, "ls", str(root / "runs"))
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["store", "N"] and len(lines) == 3
    assert "relu × 2" in out and "λ1" in out


def test_info_json_names_the_stages(capsys, solved):
    config, _, _, _ = solved
    code, out, _ = run_main(capsys, "info", config.store_location, "--json")
    info = json.loads(out)
    assert code == 0 and info["n"] == 200 and info["block"] == 64
    assert all(info["stages"][name] for name in ("prepare", "build", "solve", "compare", "report"))


def test_report_redraws_from_the_store_alone(capsys, solved):
    config, _, _, _ = solved
    paths = pipeline.report_paths(config)
    for path in paths.values():
        path.unlink()
    code, out, _ = run_main(capsys, "report", config.store_location, "--json")
    assert code == 0 and json.loads(out)["plot"] == str(paths["plot"])
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "λ" in paths["summary"].read_text()


def test_export_netcdf_and_npy_round_trip(tmp_path, capsys, solved):
    config, K, _, _ = solved
    code, out, _ = run_main(capsys, "export", config.store_location, "--format", "netcdf",
                            "--out", str(tmp_path / "s.nc"), "--json")
    assert code == 0 and json.loads(out)["files"] == [str(tmp_path / "s.nc")]
    with xr.open_dataset(tmp_path / "s.nc") as exported:
        stored = open_spectrum(config.store_location)
        assert np.array_equal(exported["eigenvalue"].values, stored["eigenvalue"].values)
    code, out, _ = run_main(capsys, "export", config.store_location, "--format", "npy", "--out", str(tmp_path / "npy"))
    assert code == 0
    gram = np.load(tmp_path / "npy" / "gram.npy", mmap_mode="r", allow_pickle=False)
    assert np.array_equal(gram, K)
    assert np.array_equal(np.load(tmp_path / "npy" / "eigenvalue.npy"), stored["eigenvalue"].values)
    assert np.array_equal(np.load(tmp_path / "npy" / "inputs.npy"), open_inputs(config.store_location)[:])


def test_export_of_an_unfinished_gram_says_what_to_do(tmp_path, capsys, solved):
    _, _, half, _ = solved
    code, _, err = run_main(capsys, "export", half.store_location, "--format", "npy", "--out", str(tmp_path / "x"))
    assert code == 2 and "not complete" in err and "--no-gram" in err
    code, _, _ = run_main(capsys, "export", half.store_location, "--format", "npy", "--out", str(tmp_path / "x"),
                          "--no-gram")
    assert code == 0 and (tmp_path / "x" / "inputs.npy").exists() and not (tmp_path / "x" / "gram.npy").exists()


def test_theory_without_data_agrees_with_the_kernel_itself(capsys):
    code, out, _ = run_main(capsys, "theory", "--activation", "erf", "--depth", "2", "--bias-var", "0.1", "--dim",
                            "5", "--order", "40", "--degrees", "6", "--n", "1000", "--json")
    summary = json.loads(out)
    assert code == 0
    net = ntkdist.MLP(depth=2, activation="erf", bias_var=0.1)
    # The series at ρ = cos θ against the kernel of two unit vectors at that angle (erf: geometric decay, so 40
    # terms leave the tail far below the tolerance).
    theta = 1.1
    x = np.array([[1.0, 0, 0, 0, 0], [math.cos(theta), math.sin(theta), 0, 0, 0]])
    series = sum(c * math.cos(theta) ** p for p, c in enumerate(summary["power_series"]["coefficients"]))
    assert series == pytest.approx(ntkdist.ntk(x, net=net)[0, 1], rel=1e-9)
    rows = summary["sphere"]["eigenvalues"]
    assert [row["multiplicity"] for row in rows] == [harmonic_multiplicity(5, k) for k in range(7)]
    assert all(row["gram_eigenvalue"] == pytest.approx(1000 * row["eigenvalue"]) for row in rows)
    assert "strictly positive definite" in summary["positivity"]["statement"]


def test_theory_of_a_polynomial_gives_the_rank_bound(capsys):
    code, out, _ = run_main(capsys, "theory", "--activation", "identity", "--depth", "2", "--dim", "3", "--json")
    positivity = json.loads(out)["positivity"]
    assert code == 0 and positivity["polynomial_degree"] == 1 and positivity["rank_bound"] == math.comb(3 + 1, 1)


@pytest.mark.parametrize("args, needle", [
    (("theory", "--weight-var", "-1"), "--weight-var: must be > 0"),
    (("theory", "--activation", "nope"), "--activation: unknown activation 'nope'"),
    (("ls", "/nonexistent-ntkdist-root"), "not a directory"),
    (("info", "/nonexistent-ntkdist-root/x.zarr"), "no run store here"),
])
def test_bad_input_is_one_paragraph_and_status_2(capsys, args, needle):
    code, out, err = run_main(capsys, *args)
    assert code == 2 and out == "" and needle in err and "\n" not in err.strip()


def test_every_subcommand_shows_an_example_and_the_exit_codes_are_in_the_help():
    parser = build_parser()
    text = parser.format_help()
    assert all(f"{code}  {meaning}" in text for code, meaning in EXIT_CODES.items())
    subparsers = next(action for action in parser._actions if action.dest == "command").choices
    for name, sub in subparsers.items():
        assert f"ntkdist {name}" in sub.format_help().split("example:")[1], name


def test_ls_finds_runs_one_level_below_an_s3_prefix(capsys, s3_location):
    from pathlib import PurePosixPath

    config = Config.from_dict({**small_config(PurePosixPath("x.zarr"), n=50, dim=3).to_dict(),
                               "run": {"name": "s3", "store": s3_location}})
    pipeline.prepare(config)
    prefix = s3_location.rsplit("/", 1)[0]
    code, out, _ = run_main(capsys, "ls", prefix, "--json")
    [run] = json.loads(out)["runs"]
    assert code == 0 and run["location"] == s3_location and run["status"] == "prepared" and run["n"] == 50
    code, out, _ = run_main(capsys, "ls", s3_location, "--json")  # the store itself
    assert [run["location"] for run in json.loads(out)["runs"]] == [s3_location]


def test_the_report_draws_each_figure_from_the_stored_spectrum(solved):
    import matplotlib.image

    config, K, _, _ = solved
    paths = pipeline.report_paths(config)
    assert set(json.loads(json.dumps(RunStore.open(config.store_location).stage("report")))) >= {
        "plot", "trace_share", "summary"}
    for name in ("plot", "trace_share"):
        image = matplotlib.image.imread(paths[name])
        assert image.shape[0] > 300 and image.shape[1] > 600  # drawn at 120 dpi, 6.4 inches wide
        assert image[..., :3].std() > 0.05  # not a blank canvas
    text = paths["summary"].read_text()
    assert str(paths["trace_share"]) in text and "effective rank" in text


def test_lambda_min_band_is_the_best_bound_on_each_side():
    from ntkdist.figures import lambda_min_band

    bounds = xr.Dataset({
        "theory_lambda_min_lower_a": ((), 0.1, {"bound": "lower"}),
        "theory_lambda_min_lower_b": ((), 0.3, {"bound": "lower"}),
        "theory_lambda_min_upper_c": ((), 0.9, {"bound": "upper"}),
        "theory_lambda_min_upper_d": ((), 0.5, {"bound": "upper"}),
        "theory_lambda_min_lower_e": ((), np.nan, {"bound": "lower"}),
    })
    assert lambda_min_band(bounds) == (0.3, 0.5)
    assert lambda_min_band(bounds.drop_vars(["theory_lambda_min_upper_c", "theory_lambda_min_upper_d"])) is None


def test_the_lambda_min_band_is_drawn_only_between_positive_bounds():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ntkdist.figures import _overlay_theory

    def labels_and_bands(lower: float):
        fig, ax = plt.subplots()
        ax.set_xscale("log")
        ax.set_yscale("log")
        _overlay_theory(ax, xr.Dataset({
            "theory_lambda_min_lower_a": ((), lower, {"bound": "lower"}),
            "theory_lambda_min_upper_b": ((), 0.5, {"bound": "upper"}),
        }), modes=100)
        labels = ax.get_legend_handles_labels()[1]
        bands = [c.get_paths()[0].vertices[:, 1] for c in ax.collections if "band" in (c.get_label() or "")]
        plt.close(fig)
        return labels, bands

    labels, bands = labels_and_bands(0.3)
    assert "λ_min lies in this band (best bounds)" in labels
    assert len(bands) == 1 and bands[0].min() == pytest.approx(0.3) and bands[0].max() == pytest.approx(0.5)
    labels, bands = labels_and_bands(0.0)  # a trivial lower bound: no invented lower edge
    assert bands == [] and "λ_min lies below this line (every lower bound is 0 here)" in labels


def test_the_spectrum_legend_sits_below_the_axes_and_counts_what_is_not_drawn(tmp_path, monkeypatch):
    from ntkdist import figures

    drawn = {}

    def keep(fig, path):
        ax = fig.axes[0]
        drawn["labels"] = ax.get_legend_handles_labels()[1]
        drawn["texts"] = [t.get_text() for t in ax.texts]
        fig.canvas.draw()
        legend, axes = ax.get_legend().get_window_extent(), ax.get_window_extent()
        drawn["legend_below"] = legend.y1 <= axes.y0
        return path

    monkeypatch.setattr(figures, "_save", keep)
    figures.plot_spectrum(np.array([5.0, 2.0, 1.0, 1e-3, 0.0, -1e-14]), tmp_path / "s.png", title="t")
    assert "2 eigenvalue(s) ≤ 0 not shown" in drawn["labels"] and drawn["texts"] == []
    assert drawn["legend_below"]  # so it can hide no eigenvalue or bound


def test_theory_json_for_a_depth_3_relu_network_in_d_10_is_sphere_eigenvalues(capsys):
    from ntkdist.theory import sphere_eigenvalues

    code, out, _ = run_main(capsys, "theory", "--activation", "relu", "--depth", "3", "--dim", "10", "--degrees",
                            "12", "--json")
    rows = json.loads(out)["sphere"]["eigenvalues"]
    expected = sphere_eigenvalues(ntkdist.MLP(depth=3, activation="relu"), 10, 12)
    assert code == 0 and [row["eigenvalue"] for row in rows] == expected.eigenvalue.tolist()
    assert [row["multiplicity"] for row in rows] == expected.multiplicity.tolist()
