"""Every example configuration in examples/ runs end to end (prepare, build on Ray, solve, compare, report) at a
small N, and shows what its comment says it shows."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from ntkdist import pipeline
from ntkdist.config import Config, load_config
from ntkdist.store import RunStore

REPO = Path(__file__).resolve().parents[1]
#: Spectrum-run examples; demo.toml is tested by test_config, study configs (a [study] table) by tests/studies.
EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.toml")
                  if p.name != "demo.toml" and "study" not in tomllib.loads(p.read_text()))
SMALL_N = 300


def small(path: Path, store: Path) -> Config:
    """The example as written, with N cut to `SMALL_N` (generated data only) and its store under ``store``."""
    raw = load_config(path).to_dict()
    raw["run"]["store"] = str(store)
    if raw["data"]["source"] != "npy":
        raw["data"]["n"] = min(raw["data"]["n"], SMALL_N)
    if raw["solver"].get("k") is not None:
        raw["solver"]["k"] = min(raw["solver"]["k"], 40)
    raw["kernel"]["block"] = min(raw["kernel"]["block"], 128)
    return Config.from_dict(raw, source=str(path))


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_and_shows_what_it_says(path, tmp_path, ray_local, monkeypatch):
    monkeypatch.chdir(REPO)  # the examples' relative paths are relative to the repository root
    config = small(path, tmp_path / "run.zarr")
    results = pipeline.run_all(config)
    assert Path(results["report"]["plot"]).stat().st_size > 10_000
    spectrum = RunStore.open(config.store_location).read_spectrum().load()
    values = spectrum["eigenvalue"].values
    assert values[0] > 0 and np.all(np.diff(values) <= 0)
    name = path.stem
    if name.startswith("sphere-"):
        predicted = spectrum["theory_sphere_eigenvalue"].values[:9]  # degrees 0 and 1: 1 + 3 eigenvalues
        assert np.allclose(values[:4], predicted[:4], rtol=0.35)  # N = 300 points: the staircase within sampling
    elif name == "polynomial-rank":
        assert int(spectrum["theory_rank_upper"].values) == 35  # Carvalho et al.'s bound for data in R³
        # On S² the degree-≤4 polynomials are the harmonics of degree ≤ 4: rank 1 + 3 + 5 + 7 + 9 = 25 exactly.
        assert values[25] < 1e-10 * values[0] < values[24]
    elif name == "digits":
        assert spectrum.attrs["n"] == 1797
    elif name == "float32-large":
        store = RunStore.open(config.store_location)
        assert store.dtype == "float32" and store.gram_error_bound > 0
    elif name == "scale-matrix-free":
        assert spectrum.attrs["operator"] == "matrix_free"
        assert not (tmp_path / "run.zarr" / "gram" / "c").exists()  # the Gram matrix was never stored
    elif name == "empirical":
        assert config.kernel.kind == "empirical_ntk"
