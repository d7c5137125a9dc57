"""User errors stop before any compute with one paragraph naming the field, exit status 2, and no store."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ntkdist.cli import main

REPO = Path(__file__).resolve().parents[1]


def write_config(tmp_path, data_section: str, extra: str = "") -> Path:
    path = tmp_path / "run.toml"
    path.write_text(textwrap.dedent(f"""
        [run]
        name = "bad"
        store = "{tmp_path / 'bad.zarr'}"
        [data]
        {data_section}
        [network]
        depth = 2
        {extra}
    """))
    return path


def run_main(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(tmp_path, code, err, *needles):
    assert code == 2
    message = err.strip()
    assert message.startswith("ntkdist: error:") and "\n" not in message and "Traceback" not in message
    for needle in needles:
        assert needle in message, message
    assert not (tmp_path / "bad.zarr").exists()


def test_unknown_key_is_named(tmp_path, capsys):
    path = write_config(tmp_path, 'source = "sphere"\nn = 10\ndim = 3\nsed = 4')
    code, _, err = run_main(capsys, "run", str(path))
    assert_user_error(tmp_path, code, err, "[data] sed is not a known key", "seed")


def test_negative_n_is_named(tmp_path, capsys):
    path = write_config(tmp_path, 'source = "gaussian"\nn = -5\ndim = 3')
    code, _, err = run_main(capsys, "run", str(path))
    assert_user_error(tmp_path, code, err, "[data] n", "greater than or equal to 1", "-5")


def test_nan_in_npy_data_is_named_with_its_row(tmp_path, capsys):
    X = np.random.default_rng(0).standard_normal((20, 4))
    X[13, 2] = np.nan
    np.save(tmp_path / "x.npy", X)
    path = write_config(tmp_path, f'source = "npy"\npath = "{tmp_path / "x.npy"}"')
    code, _, err = run_main(capsys, "run", str(path))
    assert_user_error(tmp_path, code, err, "[data] path", "row 13", "column 2")


def test_dimension_mismatch_is_named(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.ones((20, 4)))
    path = write_config(tmp_path, f'source = "npy"\npath = "{tmp_path / "x.npy"}"\ndim = 5')
    code, _, err = run_main(capsys, "run", str(path))
    assert_user_error(tmp_path, code, err, "[data] dim", "4 columns")


def test_pickled_npy_is_refused_not_unpickled(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    path = write_config(tmp_path, f'source = "npy"\npath = "{tmp_path / "x.npy"}"')
    code, _, err = run_main(capsys, "run", str(path))
    assert_user_error(tmp_path, code, err, "[data] path", "unpickling")


@pytest.mark.parametrize("data, extra, needle", [
    ('source = "sphere"\nn = 10\ndim = 1', "", "[data] dim"),
    ('source = "sphere"\nn = 10', "", "[data] dim: required"),
    ('source = "sphere"\nn = 10\ndim = 3', "[solver]\nk = 11", "[solver] k"),
    ('source = "sphere"\nn = 10\ndim = 3', '[kernel]\ndtype = "float16"', "[kernel] dtype"),
    ('source = "sphere"\nn = 10\ndim = 3', "[cluster]\nworkers = 0", "[cluster] workers"),
    ('source = "sphere"\nn = 10\ndim = 3', "[network2]\ndepth = 1", "[network2] is not a known section"),
    ('source = "sphere"\nn = 10.5\ndim = 3', "", "[data] n"),
])
def test_impossible_values_are_named(tmp_path, capsys, data, extra, needle):
    path = write_config(tmp_path, data, extra)
    code, _, err = run_main(capsys, "run", str(path))
    assert_user_error(tmp_path, code, err, needle)


def test_missing_file_and_broken_toml(tmp_path, capsys):
    code, _, err = run_main(capsys, "run", str(tmp_path / "nope.toml"))
    assert code == 2 and "no such configuration file" in err
    (tmp_path / "broken.toml").write_text("[run\nname=")
    code, _, err = run_main(capsys, "check", str(tmp_path / "broken.toml"))
    assert code == 2 and "not valid TOML" in err


def test_console_script_prints_no_traceback(tmp_path):
    path = write_config(tmp_path, 'source = "sphere"\nn = 0\ndim = 3')
    out = subprocess.run([sys.executable, "-m", "ntkdist.cli", "run", str(path)], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "[data] n" in out.stderr
    assert not (tmp_path / "bad.zarr").exists()


def test_check_prints_resolved_config(tmp_path, capsys):
    path = write_config(tmp_path, 'source = "sphere"\nn = 10\ndim = 3')
    code, out, _ = run_main(capsys, "check", str(path))
    assert code == 0 and '"block": 2048' in out and str(tmp_path / "bad.zarr") in out


def test_info_on_a_missing_store_is_one_paragraph(tmp_path, capsys):
    code, _, err = run_main(capsys, "info", str(tmp_path / "bad.zarr"))
    assert_user_error(tmp_path, code, err, "no run store here", "ntkdist run CONFIG.toml")


def test_run_refuses_a_store_of_another_configuration(tmp_path, capsys):
    from ntkdist import pipeline
    from ntkdist.config import load_config
    from ntkdist.store import RunStore

    first = write_config(tmp_path, 'source = "sphere"\nn = 10\ndim = 3\nseed = 1')
    pipeline.prepare(load_config(first))
    fingerprint = RunStore.open(tmp_path / "bad.zarr").fingerprint
    other = write_config(tmp_path, 'source = "sphere"\nn = 10\ndim = 3\nseed = 2')
    code, _, err = run_main(capsys, "run", str(other))
    assert code == 2
    message = err.strip()
    assert message.startswith("ntkdist: error: [run] store:") and "\n" not in message and "Traceback" not in message
    assert "--overwrite" in message
    assert RunStore.open(tmp_path / "bad.zarr").fingerprint == fingerprint


def test_run_refuses_a_cluster_that_cannot_host_the_workers(tmp_path, capsys):
    """Checked before the flow starts: no Prefect server, no Ray actors, no store."""
    path = write_config(tmp_path, 'source = "sphere"\nn = 10\ndim = 3',
                        '[cluster]\nworkers = 1\ndevice = "cpu"\ncpus_per_worker = 100000.0')
    code, _, err = run_main(capsys, "run", str(path))
    assert_user_error(tmp_path, code, err, "[cluster] cpus_per_worker", "lower workers or cpus_per_worker")


def test_a_user_error_message_is_printed_as_one_line(capsys):
    from ntkdist.cli import _paragraph
    from ntkdist.errors import StoreError

    assert _paragraph(StoreError("first line\n  second  line\n")) == "first line second line"


def test_study_configurations_and_spectrum_configurations_point_at_each_other(tmp_path, capsys):
    """`ntkdist study` needs a [study] kind; `ntkdist run` on a study's file names `ntkdist study`."""
    code, _, err = run_main(capsys, "run", str(REPO / "examples" / "linearity.toml"))
    assert code == 2 and "ntkdist study" in err and "[study]" in err
    code, _, err = run_main(capsys, "study", str(REPO / "examples" / "demo.toml"))
    assert code == 2 and "[study] kind must be one of finite_width, linearity" in err and "ntkdist run" in err
    wrong = tmp_path / "wrong.toml"
    wrong.write_text((REPO / "examples" / "linearity.toml").read_text().replace('kind = "linearity"',
                                                                              'kind = "finite_width"'))
    code, _, err = run_main(capsys, "study", str(wrong))
    assert code == 2 and "[sweep] is not a known section" in err
    code, _, err = run_main(capsys, "study", str(tmp_path / "missing.toml"))
    assert code == 2 and "no such configuration file" in err


def test_store_and_ray_address_override_the_configuration(tmp_path, capsys):
    """`--store` and `--ray-address` (run and check) replace [run] store and [cluster] address, validated like keys."""
    path = write_config(tmp_path, 'source = "sphere"\nn = 10\ndim = 3')
    code, out, _ = run_main(capsys, "check", str(path), "--ray-address", "auto", "--store", str(tmp_path / "o.zarr"))
    resolved = json.loads(out[:out.rindex("}") + 1])
    assert code == 0 and resolved["cluster"]["address"] == "auto" and resolved["run"]["store"] == str(tmp_path / "o.zarr")
    for address in ("127.0.0.1:6379", "ray://127.0.0.1:10001", ""):
        code, out, _ = run_main(capsys, "check", str(path), "--ray-address", address)
        assert code == 0 and json.loads(out[:out.rindex("}") + 1])["cluster"]["address"] == address
    code, _, err = run_main(capsys, "run", str(path), "--ray-address", "somewhere")
    assert code == 2 and "[cluster] address" in err and "host:port" in err
    assert not (tmp_path / "bad.zarr").exists()
