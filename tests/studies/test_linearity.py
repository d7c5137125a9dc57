"""The linearity study's configuration (the flow end to end, with the slopes: tests/flows/test_linearity_flow.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ntkdist.errors import ConfigError
from ntkdist.studies.linearity import LinearityConfig, hidden_widths, load_linearity_config, training_data

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "linearity.toml"


def config(**sections):
    raw = {"study": {"kind": "linearity", "name": "t"}, "sweep": {"widths": [8, 16, 32]}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return LinearityConfig.from_dict(raw)


def test_defaults_and_derived_values():
    cfg = config(network={"depth": 3}, sweep={"bottleneck_width": 4, "bottleneck_layer": 1})
    assert cfg.net.depth == 3 and cfg.net.activation.describe() == "tanh"
    assert hidden_widths(cfg, "bottleneck", 64) == [64, 4, 64]
    assert hidden_widths(cfg, "linear", 64) == [64, 64, 64]
    X, y = training_data(cfg)
    assert X.shape == (16, 5) and np.all(np.abs(y) <= 0.8)
    assert np.array_equal(training_data(cfg)[0], X)  # reproducible from the seed


@pytest.mark.parametrize("sections, message", [
    ({"sweep": {"widths": [8, 16, 32], "seedz": 3}}, r"\[sweep\] seedz is not a known key of \[sweep\] \(known: "),
    ({"sweep": {"widths": [8, 8, 16]}}, r"\[sweep\] widths: give at least three distinct widths"),
    ({"network": {"depth": 1}}, r"\[sweep\] bottleneck_layer: a bottleneck needs depth ≥ 2"),
    ({"sweep": {"widths": [8, 16, 32], "bottleneck_layer": 2}}, r"bottleneck_layer: must be in −2 … 1"),
    ({"hessian": {"points": 20}}, r"\[hessian\] points: at most \[data\] n = 16"),
    ({"network": {"activation": "swish"}}, r"\[network\] activation: unknown activation 'swish'"),
    ({"sweep": {"widths": [8, 16, 32], "output": "softmax"}}, r"\[sweep\] output"),
    ({"training": {"learning_rate": -1.0}}, r"\[training\] learning_rate"),
    ({"studies": {}}, r"\[studies\] is not a known section \(known: study, data, network, sweep, training, hessian\)"),
])
def test_bad_configuration_names_the_key(sections, message):
    with pytest.raises(ConfigError, match=message):
        config(**sections)


def test_example_loads(tmp_path):
    cfg = load_linearity_config(EXAMPLE)
    assert cfg.study.name == "linearity" and len(cfg.sweep.widths) >= 4
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_linearity_config(tmp_path / "missing.toml")
