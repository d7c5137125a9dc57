"""ntkdist's kernels against neural-tangents ``stax`` (float64), the field's reference library, run as a peer.

neural-tangents needs an old JAX, so it lives in its own environment (``make test`` builds ``.venv-nt`` and
points ``NTKDIST_NT_PYTHON`` at it) and is driven through ``bench/neural_tangents_reference.py`` with files.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

import ntkdist
from ntkdist.kernels import MLP, available_activations

from .. import background
from ..helpers import assert_kernel_close

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "neural_tangents_reference.py"

#: Activations with a closed form in both libraries (compared to 1e-10), and those neural-tangents integrates
#: numerically (ElementwiseNumerical at Gauss–Hermite degree 400, see bench/neural_tangents_reference.py;
#: compared to 1e-7).
CLOSED = ["relu", "leaky_relu(0.1)", "abs", "abrelu(-0.3, 1.7)", "erf", "gelu", "sin", "identity",
          "polynomial(0.2, 1.0, 0.5)"]
NUMERICAL = ["tanh", "sigmoid", "softplus"]


def peer_python_or_none() -> str | None:
    candidate = os.environ.get("NTKDIST_NT_PYTHON") or str(REPO / ".venv-nt" / "bin" / "python")
    return candidate if Path(candidate).exists() else None


def peer_python() -> str:
    candidate = peer_python_or_none()
    if candidate is None:
        pytest.skip("the neural-tangents peer environment is not built (`make test` builds .venv-nt)")
    return candidate


def known(spec: str) -> bool:
    return spec.split("(")[0] in available_activations()


def comparison_cases() -> tuple[dict, list[dict]]:
    """The inputs and the cases compared with the peer (seeded: the same on every call)."""
    rng = np.random.default_rng(2024)
    inputs = {
        "X": rng.standard_normal((24, 6)) * rng.uniform(0.05, 12.0, size=(24, 1)),
        "Y": rng.standard_normal((9, 6)) * rng.uniform(0.1, 5.0, size=(9, 1)),
        # The series activations are compared at moderate variances (q ≲ 5): their series (and neural-tangents'
        # 64-node quadrature) resolve φ(√q·) only so far (see ntkdist.kernels.activations).
        "Xs": rng.standard_normal((16, 6)) * rng.uniform(0.1, 1.5, size=(16, 1)),
        "Ys": rng.standard_normal((7, 6)) * rng.uniform(0.1, 1.5, size=(7, 1)),
    }
    inputs["X"][5] = 0.0
    cases = []
    for spec in [s for s in CLOSED + NUMERICAL if known(s)]:
        names = ["Xs", "Ys"] if spec in NUMERICAL else ["X", "Y"]
        # The peer integrates the numerical activations on a 400² Gauss–Hermite grid per layer, about 2 s a
        # layer on two cores: depths 1–3 compare their layer map and its composition; depth 4–5 composition is
        # compared on the closed forms.
        for depth in ((1, 2, 3) if spec in NUMERICAL else (1, 2, 3, 4, 5)):
            weight_var = float(rng.uniform(0.5, 2.5))
            bias_var = float(rng.choice([0.0, rng.uniform(0.05, 1.0)]))
            for kind in ("ntk", "nngp"):
                cases.append({"activation": spec, "depth": depth, "weight_var": weight_var, "bias_var": bias_var,
                              "kind": kind, "inputs": names})
    return inputs, cases


def start_peer(python: str) -> background.Job:
    """The peer's run over `comparison_cases`, in the background (started when collection ends, or now)."""
    inputs, cases = comparison_cases()
    work = Path(tempfile.mkdtemp(prefix="nt-inputs-", dir=background.run_directory()))  # removed with the run
    (work / "cases.json").write_text(json.dumps(cases))
    np.savez(work / "inputs.npz", **inputs)
    return background.start("nt_peer", [python, str(SCRIPT), "kernels", str(work / "cases.json"),
                                        str(work / "inputs.npz"), "{output}"], "nt_peer.npz")


@pytest.fixture(scope="module")
def comparison():
    job = start_peer(peer_python())
    inputs, cases = comparison_cases()
    results = np.load(job.result(timeout=600), allow_pickle=False)
    return inputs, cases, {key: results[key] for key in results.files}


@pytest.mark.slow
def test_every_activation_matches_stax(comparison):
    inputs, cases, results = comparison
    assert cases, "no activation to compare"
    for index, case in enumerate(cases):
        X, Y = (inputs[name] for name in case["inputs"])
        net = MLP(depth=case["depth"], activation=case["activation"], weight_var=case["weight_var"],
                  bias_var=case["bias_var"])
        ours = ntkdist.gram_block(X, Y, net=net, kind=case["kind"])
        diag_x = np.diag(ntkdist.gram_block(X, net=net, kind=case["kind"]))
        diag_y = np.diag(ntkdist.gram_block(Y, net=net, kind=case["kind"]))
        scale = np.sqrt(np.outer(np.abs(diag_x), np.abs(diag_y)))
        rtol = 1e-7 if case["activation"] in NUMERICAL else 1e-10
        theirs = results[f"case{index}"]
        # neural-tangents' Polynomial divides by the input variance: NaN on zero rows (ours is finite there).
        undefined = np.isnan(theirs)
        zero_rows = np.outer(np.all(X == 0, axis=1), np.ones(len(Y), bool)) | np.all(Y == 0, axis=1)[None, :]
        assert np.all(zero_rows[undefined]) and np.all(np.isfinite(ours))
        theirs = np.where(undefined, ours, theirs)
        try:
            assert_kernel_close(ours, theirs, scale, rtol=rtol)
        except AssertionError as exc:
            raise AssertionError(f"{case}: {exc}") from None


def test_the_comparison_covers_every_closed_form_activation_we_have(comparison):
    _, cases, _ = comparison
    compared = {c["activation"].split("(")[0] for c in cases}
    assert {spec.split("(")[0] for spec in CLOSED + NUMERICAL} <= compared


@pytest.mark.slow
def test_the_empirical_ntk_and_nngp_match_neural_tangents_with_the_same_weights(tmp_path):
    """One sampled network, the same weights in both libraries (`SampledWeights` keep stax's layout, input ×
    output, with the NTK parameterization's scales applied in the forward pass): Θ̂ and f(x)f(y) from
    neural-tangents' ``empirical_ntk_fn`` (Jacobian contraction) and ``empirical_nngp_fn`` agree with ours to
    1e-11 (rounding: the two sum in different orders), for unequal widths, with and without bias, on symmetric and
    rectangular Grams. A difference of convention (a scale, a transposed weight, a missing bias term) is O(1)."""
    import subprocess

    from ntkdist.kernels.empirical import empirical_gram_block, sample_weights

    rng = np.random.default_rng(31)
    X, Y = rng.standard_normal((40, 5)) * 1.5, rng.standard_normal((13, 5))
    cases = [("relu", (24, 17, 31), 1.8, 0.3, True), ("erf", (16, 40), 1.3, 0.0, False),
             ("gelu", (33,), 2.0, 0.5, False), ("tanh", (20, 12), 1.1, 0.2, True)]
    cases = [case for case in cases if known(case[0])]
    paths, networks = [], []
    for index, (activation, widths, weight_var, bias_var, rectangular) in enumerate(cases):
        net = MLP(depth=len(widths), activation=activation, weight_var=weight_var, bias_var=bias_var)
        params = sample_weights(net, dim=X.shape[1], width=widths, seed=index)
        arrays = {"X": X, "activation": np.array(activation), "weight_var": np.array(weight_var),
                  "bias_var": np.array(bias_var)}
        if rectangular:
            arrays["Y"] = Y
        for layer, (W, beta) in enumerate(zip(params.weights, params.biases), start=1):
            arrays[f"W{layer}"], arrays[f"b{layer}"] = W, beta
        np.savez(tmp_path / f"in{index}.npz", **arrays)
        paths += [str(tmp_path / f"in{index}.npz"), str(tmp_path / f"out{index}.npz")]
        networks.append((params, Y if rectangular else None))
    subprocess.run([peer_python(), str(SCRIPT), "empirical", *paths], check=True, timeout=600)
    for index, (params, cols) in enumerate(networks):
        theirs = np.load(tmp_path / f"out{index}.npz", allow_pickle=False)
        for kind in ("ntk", "nngp"):
            ours = empirical_gram_block(X, cols, params=params, kind=kind)
            diag_x = np.diag(empirical_gram_block(X, params=params, kind=kind))
            diag_y = diag_x if cols is None else np.diag(empirical_gram_block(cols, params=params, kind=kind))
            scale = np.sqrt(np.outer(np.abs(diag_x), np.abs(diag_y)))
            assert theirs[kind].shape == ours.shape, (cases[index], kind)
            assert_kernel_close(ours, theirs[kind], scale, rtol=1e-11)
