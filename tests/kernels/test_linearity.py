"""Hessian–vector products, the Hessian's norm, gradient descent and the tangent Gram of ψ(f).

Independent references: the per-layer empirical NTK (Θ̂(x, x) = ‖∇f(x)‖²), central finite differences of the
gradient (for H·v), the dense Hessian from second differences of the network's output alone (no gradient code),
and dense ``eigvalsh`` of that Hessian (for the norm).
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from ntkdist.kernels import MLP, empirical_ntk, forward, sample_weights
from ntkdist.kernels.linearity import (
    OUTPUT_MAPS, ParameterVector, gradient_descent, gradient_of_outputs, hessian_norm, hessian_operator,
    hessian_vector_product, kernel_ascent_direction, kernel_change_in_ball, random_direction, relative_change,
    squared_loss_gradient, tangent_gram, with_parameters,
)

CASES = [("tanh", "identity"), ("erf", "tanh"), ("gelu", "sigmoid"), ("relu", "identity")]


def tiny(activation="tanh", widths=(4, 3), dim=3, seed=1):
    net = MLP(depth=len(widths), activation=activation, weight_var=1.5, bias_var=0.2)
    return sample_weights(net, dim=dim, width=list(widths), seed=seed)


X_TINY = np.array([0.4, -0.9, 0.7])


def shifted(params, direction, step):
    return with_parameters(params, ParameterVector.of(params).scaled_add(step, direction))


def output_of(params, x, output):
    return OUTPUT_MAPS[output].value(forward(params, np.atleast_2d(x)).output[0])


def dense_hessian_by_second_differences(params, x, output, h=1e-4):
    """H_jk ≈ [F(θ+h e_j+h e_k) − F(θ+h e_j−h e_k) − F(θ−h e_j+h e_k) + F(θ−h e_j−h e_k)] / 4h², from outputs only."""
    size = params.num_parameters
    basis = [ParameterVector.from_flat(e, params) for e in np.eye(size)]
    H = np.empty((size, size))
    for j in range(size):
        for k in range(j, size):
            total = 0.0
            for sj, sk, sign in ((1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)):
                moved = ParameterVector.of(params).scaled_add(sj * h, basis[j]).scaled_add(sk * h, basis[k])
                total += sign * output_of(with_parameters(params, moved), x, output)
            H[j, k] = H[k, j] = total / (4 * h * h)
    return H


def test_gradient_norm_is_the_empirical_ntk_diagonal():
    params = tiny(widths=(7, 5))
    X = np.array([[0.4, -0.9, 0.7], [1.2, 0.1, -0.3]])
    theta = empirical_ntk(X, net=params.net, width=[7, 5], seed=1)
    for i in range(2):
        gradient, _ = gradient_of_outputs(params, X[i])
        assert gradient.dot(gradient) == pytest.approx(theta[i, i], rel=1e-12)


@pytest.mark.parametrize("activation, output", CASES)
def test_hvp_matches_central_differences_of_the_gradient(activation, output):
    params = tiny(activation, widths=(6, 5))
    for seed in range(3):
        v = random_direction(params, seed)
        hv = hessian_vector_product(params, X_TINY, v, output).flat()
        eps = 1e-5  # central difference: truncation ~ eps²·|∇³f| ~ 1e-10, rounding ~ 1e-16/eps ~ 1e-11
        plus, _ = gradient_of_outputs(shifted(params, v, eps), X_TINY, output=output)
        minus, _ = gradient_of_outputs(shifted(params, v, -eps), X_TINY, output=output)
        reference = (plus.flat() - minus.flat()) / (2 * eps)
        assert np.linalg.norm(hv - reference) <= 1e-6 * np.linalg.norm(reference)


@pytest.mark.parametrize("activation, output", [("tanh", "identity"), ("erf", "tanh")])
def test_hvp_columns_form_the_dense_hessian_of_second_differences(activation, output):
    params = tiny(activation)
    assert params.num_parameters <= 200
    reference = dense_hessian_by_second_differences(params, X_TINY, output)
    product = hessian_operator(params, X_TINY, output)
    H = np.array([product(ParameterVector.from_flat(e, params)).flat() for e in np.eye(params.num_parameters)])
    # Second differences: truncation ~ h²·|∂⁴F| ~ 1e-8 and rounding ~ ε/h² ~ 1e-8, against entries of O(0.1–1).
    assert np.linalg.norm(H - reference) <= 1e-6 * np.linalg.norm(reference)
    np.testing.assert_allclose(H, H.T, rtol=0, atol=1e-14 * np.abs(H).max())


@pytest.mark.parametrize("output", ["identity", "tanh"])
def test_hessian_is_symmetric_to_rounding_at_width_64(output):
    params = tiny("tanh", widths=(64, 64), dim=5)
    x = np.linspace(-1, 1, 5)
    u, v = random_direction(params, 1), random_direction(params, 2)
    product = hessian_operator(params, x, output)
    uhv, vhu = u.dot(product(v)), v.dot(product(u))
    assert abs(uhv - vhu) <= 1e-12 * np.sqrt(product(v).dot(product(v)))


@pytest.mark.parametrize("activation, output", [("tanh", "identity"), ("erf", "tanh"), ("relu", "identity")])
def test_hessian_norm_matches_dense_eigvalsh(activation, output):
    params = tiny(activation, widths=(5, 4))
    product = hessian_operator(params, X_TINY, output)
    H = np.array([product(ParameterVector.from_flat(e, params)).flat() for e in np.eye(params.num_parameters)])
    exact = np.abs(np.linalg.eigvalsh(H)).max()
    assert hessian_norm(params, X_TINY, output=output, tol=1e-10) == pytest.approx(exact, rel=1e-8)


def test_nonlinear_output_adds_the_rank_one_term():
    """H_ψ(f) = ψ'(f)·H_f + ψ''(f)·∇f∇fᵀ, checked on dense matrices."""
    params = tiny("tanh")
    size = params.num_parameters
    dense = {name: np.array([hessian_operator(params, X_TINY, name)(ParameterVector.from_flat(e, params)).flat()
                             for e in np.eye(size)]) for name in ("identity", "sigmoid")}
    gradient, _ = gradient_of_outputs(params, X_TINY)
    g = gradient.flat()
    f = forward(params, X_TINY[None]).output[0]
    psi = OUTPUT_MAPS["sigmoid"]
    np.testing.assert_allclose(dense["sigmoid"], psi.first(f) * dense["identity"] + psi.second(f) * np.outer(g, g),
                               rtol=0, atol=1e-14 * np.abs(dense["sigmoid"]).max())


def test_output_map_derivatives_match_finite_differences():
    z = np.linspace(-3, 3, 13)
    for psi in OUTPUT_MAPS.values():
        h = 1e-5
        np.testing.assert_allclose(psi.first(z), (psi.value(z + h) - psi.value(z - h)) / (2 * h), atol=1e-9)
        np.testing.assert_allclose(psi.second(z), (psi.first(z + h) - psi.first(z - h)) / (2 * h), atol=1e-9)


@pytest.mark.parametrize("output", ["identity", "tanh"])
def test_loss_gradient_is_the_derivative_of_the_loss(output):
    params = tiny("tanh", widths=(8, 6))
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((5, 3)), 0.5 * rng.standard_normal(5)
    loss, gradient = squared_loss_gradient(params, X, y, output)
    v = random_direction(params, 4)
    eps = 1e-6
    slope = (squared_loss_gradient(shifted(params, v, eps), X, y, output)[0]
             - squared_loss_gradient(shifted(params, v, -eps), X, y, output)[0]) / (2 * eps)
    assert gradient.dot(v) == pytest.approx(slope, rel=1e-7)
    values = OUTPUT_MAPS[output].value(forward(params, X).output)
    assert loss == pytest.approx(0.5 * np.mean((values - y) ** 2), rel=1e-14)


def test_gradient_descent_fits_and_moves_the_kernel_less_when_wider():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 3))
    y = 0.5 * np.sin(X[:, 0])
    changes = []
    for width in (32, 512):
        params = tiny("tanh", widths=(width, width), seed=3)
        with threadpool_limits(limits=1, user_api="blas"):  # 8 rows: one thread is fastest
            trained, losses = gradient_descent(params, X, y, learning_rate=1.0, steps=100)
        assert losses[-1] < 0.05 * losses[0] and np.all(np.diff(losses) <= 1e-12)
        changes.append(relative_change(tangent_gram(params, X), tangent_gram(trained, X)))
    assert changes[1] < changes[0] / 4  # 16× the width: 1/m would give 1/16, the bound 1/√m gives 1/4


def test_tangent_gram_of_psi_is_the_gram_of_its_gradients():
    params = tiny("erf", widths=(6, 5))
    X = np.array([[0.4, -0.9, 0.7], [1.2, 0.1, -0.3], [-0.5, 0.5, 0.2]])
    J = np.array([gradient_of_outputs(params, x, output="tanh")[0].flat() for x in X])
    np.testing.assert_allclose(tangent_gram(params, X, "tanh"), J @ J.T, rtol=1e-12)


@pytest.mark.parametrize("output", ["identity", "tanh"])
def test_kernel_ascent_direction_is_the_normalised_gradient_of_the_kernel_trace(output):
    """u = ∇ tr Θ̃ / ‖∇ tr Θ̃‖, against central differences of tr Θ̃ along every coordinate of a tiny net; the ball's
    change along it is the relative change of the Gram at θ + R·u, and beats a random direction of the ball."""
    params = tiny("tanh", widths=(5, 4))
    X = np.array([[0.4, -0.9, 0.7], [1.2, 0.1, -0.3], [-0.5, 0.5, 0.2]])
    u = kernel_ascent_direction(params, X, output)
    flat, h = ParameterVector.of(params).flat(), 1e-5
    trace = np.empty(flat.size)
    for k in range(flat.size):
        step = np.zeros(flat.size)
        step[k] = h
        up, down = (with_parameters(params, ParameterVector.from_flat(flat + s * step, params)) for s in (1, -1))
        trace[k] = (np.trace(tangent_gram(up, X, output)) - np.trace(tangent_gram(down, X, output))) / (2 * h)
    np.testing.assert_allclose(u.flat(), trace / np.linalg.norm(trace), atol=1e-7)
    radius = 0.5
    moved = with_parameters(params, ParameterVector.of(params).scaled_add(radius, u))
    expected = relative_change(tangent_gram(params, X, output), tangent_gram(moved, X, output))
    assert kernel_change_in_ball(params, X, radius, output) == pytest.approx(expected, rel=1e-12)
    random = [relative_change(tangent_gram(params, X, output),
                              tangent_gram(shifted(params, random_direction(params, seed), radius), X, output))
              for seed in range(5)]
    assert kernel_change_in_ball(params, X, radius, output) > max(random)
    with pytest.raises(ValueError, match="radius"):
        kernel_change_in_ball(params, X, 0.0)


def test_bad_input_names_the_field():
    params = tiny()
    v = random_direction(params, 0)
    with pytest.raises(ValueError, match="output: unknown output map"):
        hessian_vector_product(params, X_TINY, v, "softmax")
    with pytest.raises(ValueError, match="x: expected finite inputs"):
        hessian_vector_product(params, np.ones(4), v)
    with pytest.raises(ValueError, match="x: one input"):
        hessian_norm(params, np.ones((2, 3)))
    with pytest.raises(ValueError, match="learning_rate: gradient descent diverged"):
        gradient_descent(params, np.ones((2, 3)), np.array([1e3, -1e3]), learning_rate=1e6, steps=50)
    with pytest.raises(ValueError, match="y: expected one target per input"):
        squared_loss_gradient(params, np.ones((2, 3)), np.ones(3))
