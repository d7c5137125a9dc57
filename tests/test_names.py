"""Names that explain themselves: the clashes the house issue found stay gone.

Each check failed on the tree before the rename (two ``activations`` modules, ``ReLU()`` functions that looked
like classes, a module ``ntkdist.report`` beside the stage ``pipeline.report``, three network types with no
stated relation).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import ntkdist
from ntkdist import pipeline
from ntkdist.kernels import MLP, activations

PACKAGE = Path(ntkdist.__file__).parent
CONSTRUCTORS = ("relu", "leaky_relu", "abs", "abrelu", "erf", "gelu", "tanh", "sigmoid", "softplus", "sin", "cos",
                "identity", "polynomial", "custom")


def test_activation_constructors_have_one_home():
    homes = [p.relative_to(PACKAGE) for p in PACKAGE.rglob("activations.py")]
    assert homes == [Path("kernels/activations.py")]
    assert ntkdist.activations is activations


def test_constructors_are_lowercase_functions_spelled_as_in_a_config():
    for name in CONSTRUCTORS:
        constructor = getattr(activations, name)
        assert inspect.isfunction(constructor) and name.islower(), name
    for spec, made in [("relu", activations.relu()), ("leaky_relu(0.1)", activations.leaky_relu(0.1)),
                       ("abs", activations.abs()), ("erf", activations.erf())]:
        assert activations.get_activation(spec).describe() == made.describe()
    for old in ("ReLU", "LeakyReLU", "Abs"):
        assert not hasattr(activations, old) and not hasattr(ntkdist, old)


def test_no_module_shares_a_name_with_a_pipeline_stage_it_is_not():
    assert inspect.isfunction(pipeline.report) and not (PACKAGE / "report.py").exists()
    assert (PACKAGE / "figures.py").exists()


def test_the_network_views_are_made_from_an_mlp():
    from ntkdist.kernels.empirical import SampledWeights, sample_weights
    from ntkdist.theory.power_series import LayerComposition, layer_composition

    net = MLP(depth=2)
    assert isinstance(sample_weights(net, dim=3, width=4, seed=0), SampledWeights)
    assert isinstance(layer_composition(net, 3), LayerComposition)
    for view in (SampledWeights, LayerComposition):
        assert "MLP" in (view.__doc__ or ""), f"{view.__name__} does not say it is a view of an MLP"
