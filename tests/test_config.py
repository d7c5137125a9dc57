"""The configuration schema: the documented example and the demo validate; defaults resolve as documented."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from ntkdist.config import Config, load_config
from ntkdist.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_demo_config_is_the_documented_default_job():
    config = load_config(REPO / "examples" / "demo.toml")
    assert (config.data.source, config.data.n, config.data.dim) == ("sphere", 4000, 3)
    assert (config.network.activation, config.network.depth) == ("relu", 2)
    assert config.store_location == str((Path.cwd() / "storage" / "runs" / "demo.zarr").resolve())


def test_readme_example_config_validates():
    text = (REPO / "README.md").read_text()
    block = re.search(r"```toml\n(.*?)```", text, re.S).group(1)
    config = Config.from_dict(tomllib.loads(block))
    assert config.solver.k == 500 and config.data.source == "npy"


def test_storage_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NTKDIST_STORAGE", str(tmp_path))
    config = Config.from_dict({"run": {"name": "x"}, "data": {"source": "gaussian", "n": 5, "dim": 2},
                               "network": {"depth": 1}})
    assert config.store_location == str(tmp_path / "runs" / "x.zarr")


def test_store_is_a_local_path_or_an_s3_url():
    base = {"data": {"source": "gaussian", "n": 5, "dim": 2}, "network": {"depth": 1}}
    config = Config.from_dict({"run": {"name": "x", "store": "s3://bucket/runs/x.zarr/"}, **base})
    assert config.store_location == "s3://bucket/runs/x.zarr"
    for bad in ("gs://bucket/x.zarr", "s3:///x.zarr"):
        with pytest.raises(ConfigError, match=r"\[run\] store.*s3://bucket"):
            Config.from_dict({"run": {"name": "x", "store": bad}, **base})


def test_fingerprint_changes_with_what_determines_the_gram_only():
    base = {"run": {"name": "x"}, "data": {"source": "gaussian", "n": 5, "dim": 2}, "network": {"depth": 1}}
    a = Config.from_dict(base).kernel_fingerprint("d")
    assert Config.from_dict({**base, "solver": {"k": 3}}).kernel_fingerprint("d") == a
    assert Config.from_dict({**base, "cluster": {"workers": 7}}).kernel_fingerprint("d") == a
    assert Config.from_dict({**base, "network": {"depth": 2}}).kernel_fingerprint("d") != a
    assert Config.from_dict({**base, "kernel": {"dtype": "float32"}}).kernel_fingerprint("d") != a
    assert Config.from_dict(base).kernel_fingerprint("other data") != a


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        Config.from_dict({"run": {"name": "x"}, "data": {"source": "gaussian", "n": 0, "dim": 2},
                          "network": {"depth": 1, "weight_var": -1.0}}, source="c.toml")
    message = str(info.value)
    assert "[data] n" in message and "[network] weight_var" in message and message.startswith("Invalid configuration c.toml")


def test_finite_width_kinds_need_a_width_and_only_they_take_one():
    base = {"run": {"name": "x"}, "data": {"source": "gaussian", "n": 5, "dim": 2}}
    ok = Config.from_dict({**base, "network": {"depth": 2, "width": [64, 32], "seed": 3},
                           "kernel": {"kind": "empirical_ntk"}})
    assert ok.network.width == [64, 32]
    fingerprint = ok.kernel_fingerprint("d")
    other_seed = Config.from_dict({**base, "network": {"depth": 2, "width": [64, 32], "seed": 4},
                                   "kernel": {"kind": "empirical_ntk"}})
    assert other_seed.kernel_fingerprint("d") != fingerprint
    for network, kernel, needle in [
        ({"depth": 2}, {"kind": "empirical_ntk"}, "[network] width: required"),
        ({"depth": 2, "width": 64}, {"kind": "ntk"}, "only used with"),
        ({"depth": 2, "width": [8, 8, 8]}, {"kind": "empirical_nngp"}, "one per hidden layer"),
        ({"depth": 2, "width": 0}, {"kind": "empirical_ntk"}, "[network] width"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(needle)):
            Config.from_dict({**base, "network": network, "kernel": kernel})


def test_a_resolved_config_validates_again_unchanged():
    for extra in ({}, {"network": {"depth": 2, "width": 16, "seed": 2}, "kernel": {"kind": "empirical_nngp"}}):
        raw = {"run": {"name": "x"}, "data": {"source": "gaussian", "n": 5, "dim": 2}, "network": {"depth": 2},
               **extra}
        config = Config.from_dict(raw)
        assert Config.from_dict(config.to_dict()) == config


# -- [solver] ------------------------------------------------------------------------------------------------------
def _solver_config(n=100_000, **solver):
    return {"run": {"name": "x"}, "data": {"source": "gaussian", "n": n, "dim": 16}, "network": {"depth": 3},
            "solver": solver}


def test_solver_defaults_resolve_by_size():
    small = Config.from_dict(_solver_config(n=2000))
    assert small.solver.method == "auto" and small.solver.resolved_method(2000) == "exact"
    assert small.solver.resolved_k(2000) == 2000
    large = Config.from_dict(_solver_config(n=300_000))
    assert large.solver.resolved_method(300_000) == "krylov" and large.solver.resolved_k(300_000) == 100
    assert (large.solver.tol, large.solver.smallest, large.solver.density) == (1e-8, 1, True)


def test_krylov_at_sixty_thousand_is_not_refused():
    config = Config.from_dict(_solver_config(n=60_000, method="krylov", k=100, operator="matrix_free"))
    assert config.solver.operator == "matrix_free"


@pytest.mark.parametrize("solver, needle", [
    ({"method": "krylov", "k": 100}, "[solver] k"),                       # k ≥ N for an iterative method
    ({"method": "exact"}, "[solver] method"),                             # exact beyond memory
    ({"tol": 0.0}, "[solver] tol"),
    ({"tol": -1e-8}, "[solver] tol"),
    ({"max_passes": 0}, "[solver] max_passes"),
    ({"method": "lanczos"}, "[solver] method"),
    ({"operator": "disk"}, "[solver] operator"),
    ({"method": "exact", "operator": "matrix_free"}, "[solver] method"),
    ({"method": "krylov", "smallest": 40}, "[solver] smallest"),
    ({"method": "exact", "smallest": 101}, "[solver] smallest"),
])
def test_bad_solver_settings_name_the_key(solver, needle):
    n = 100 if solver.get("k") == 100 or "smallest" in solver else 60_000
    with pytest.raises(ConfigError) as info:
        Config.from_dict(_solver_config(n=n, **solver))
    assert needle in str(info.value)


def test_matrix_free_refuses_the_empirical_kinds():
    raw = _solver_config(n=500, operator="matrix_free")
    raw["network"] = {"depth": 2, "width": 64}
    raw["kernel"] = {"kind": "empirical_ntk"}
    with pytest.raises(ConfigError, match=r"\[solver\] operator"):
        Config.from_dict(raw)


def test_readme_carries_the_generated_config_reference():
    from ntkdist.config import SECTIONS, config_reference

    text = (REPO / "README.md").read_text()
    carried = re.search(r"<!-- config-reference:start -->\n(.*?)<!-- config-reference:end -->", text, re.S).group(1)
    assert carried.strip() == config_reference().strip(), "regenerate it: python -m ntkdist.config"
    for section in SECTIONS.values():
        assert all(field.description for field in section.model_fields.values())
    # Every key of the annotated example above it is a key of the schema, and the reverse.
    block = re.search(r"```toml\n(.*?)```", text, re.S).group(1)
    example = tomllib.loads(re.sub(r"^# ", "", block, flags=re.M))  # the commented-out keys too
    assert {name: set(keys) for name, keys in example.items()} == {
        name: set(section.model_fields) for name, section in SECTIONS.items()}
