"""The linearity flow end to end on examples/linearity.toml (real Prefect), and the slopes the example must show
(fixed seeds; every statement with its 3σ)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from ntkdist.studies.linearity import fitted_slopes, per_width

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "linearity.toml"


@pytest.mark.slow
def test_flow_on_the_example_shows_the_transition_to_linearity(prefect_server, tmp_path, capsys):
    """`ntkdist study CONFIG --json` on the example (its output folder moved under tmp_path). About 10–30 s on two
    cores (the example's sweep) plus the flow's start."""
    from ntkdist.cli import main

    path = tmp_path / "linearity.toml"
    path.write_text(EXAMPLE.read_text().replace("[study]\n", f'[study]\noutput = "{tmp_path / "out"}"\n', 1))
    environment = dict(os.environ)
    assert main(["study", str(path), "--json"]) == 0
    assert dict(os.environ) == environment  # --json's quiet settings were for that command only
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "linearity" and result["output"] == str(tmp_path / "out")

    ds = xr.open_dataset(result["dataset"], engine="scipy").load()
    assert ds["hessian_norm"].dims == ("variant", "width", "seed", "point")
    assert ds["ntk_change"].dims == ("variant", "width", "seed")
    assert ds["variant"].values.tolist() == ["linear", "nonlinear_output", "bottleneck"]
    assert np.all(ds["loss_final"].values < 0.1 * ds["loss_initial"].values)  # every network trained
    for name in ("hessian_norm", "ntk_change", "ntk_change_ball"):
        with open(result[name], "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "Liu et al. 2020, Thm 3.2" in Path(result["report"]).read_text()

    fits = fitted_slopes(ds)
    # Liu, Zhu & Belkin: ‖H‖ = Õ(m^(−1/2)) with a linear output. The acceptance is −0.5 ± 0.1.
    hessian = fits[("hessian_norm", "linear")]
    assert abs(hessian.slope + 0.5) < 0.1 and hessian.slope_error < 0.05
    # Õ(1/√m) is √(log m / m) here (docs/linearity.md §4): the fits of ‖H‖ and ‖H‖/√(log m) bracket −1/2.
    log_corrected = fits[("hessian_norm_log", "linear")]
    assert log_corrected.slope < -0.5 < hessian.slope and abs(log_corrected.slope + 0.5) < 0.1
    # The tangent kernel's change in gradient descent falls like 1/m (Dyer & Gur-Ari 2020), faster than Liu et
    # al.'s bound 1/√m over every direction of the ball: within 3σ of −1, and below −1/2 by more than 3σ.
    change = fits[("ntk_change", "linear")]
    assert change.agrees_with(-1.0) and change.slope + 3 * change.slope_error < -0.5
    # Liu et al.'s own quantity, the change over the ball of radius R (here along its steepest direction for the
    # kernel's trace), falls like 1/√m: the issue's −0.5 ± 0.15, and within 3σ of −1/2.
    ball = fits[("ntk_change_ball", "linear")]
    assert abs(ball.slope + 0.5) < 0.15 and ball.agrees_with(-0.5), ball
    assert fits[("ntk_change_ball", "nonlinear_output")].agrees_with(0.0)
    # A non-linear output and a bottleneck: no transition. Both stay O(1) at every width.
    for variant in ("nonlinear_output", "bottleneck"):
        for quantity in ("hessian_norm", "ntk_change"):
            assert fits[(quantity, variant)].agrees_with(0.0), (quantity, variant)
    assert abs(fits[("ntk_change", "nonlinear_output")].slope) < 0.15
    widest = {v: per_width(ds, "ntk_change", v)[1][-1] for v in ("linear", "nonlinear_output", "bottleneck")}
    assert widest["nonlinear_output"] > 10 * widest["linear"] and widest["bottleneck"] > 10 * widest["linear"]
