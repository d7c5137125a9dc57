"""Finite-width corrections (ntkdist.theory.finite_width) against closed forms and Monte Carlo over networks.

Monte Carlo: scalar-output MLPs in ntkdist's stax convention sampled in plain NumPy (vectorised over networks),
the empirical NTK from the per-layer factorisation Θ̂ = Σ_l (C_W/n_{l−1} h^{l−1}·h^{l−1} + C_b)(g^l·g^l), with
g^l = ∂f/∂z^l. Every statistical assertion is at 3σ with σ the standard error of the sample (stated per test);
seeds are fixed.
"""

from __future__ import annotations

import numpy as np
import pytest

from ntkdist.kernels import MLP, get_activation, nngp, ntk
from ntkdist.theory import FiniteWidthCorrections, finite_width_corrections
from ntkdist.theory.finite_width.expectations import layer_expectations
from ntkdist.theory.finite_width.gaussian import gaussian_rule, has_kink_at_zero

GELU_CW = 1.98305826  # the paper's critical GeLU setting (Guillen et al. §5, Fig. 1)
#: Inputs of the paper's ReLU experiment (its eqs. (121)–(122)).
RELU_PAIR = np.array([[-0.98952, -0.59925], [-0.17877, 2.25368]])
#: Two fixed inputs in R⁴ at the paper's scale (standard normal × 0.53).
GELU_PAIR = 0.53 * np.random.default_rng(116).standard_normal((2, 4))


def sample_networks(x, activation, depth, width, weight_var, bias_var, networks, seed, outputs=1, chunk=2000):
    """Outputs z (networks, outputs, m) and stax NTKs Θ̂ (networks, outputs, outputs, m, m) of sampled MLPs."""
    rng = np.random.default_rng(seed)
    m, d = x.shape
    z_samples, ntk_samples = [], []
    for start in range(0, networks, chunk):
        s = min(chunk, networks - start)
        h, fan_in = np.broadcast_to(x.T, (s, d, m)), d
        inputs, preactivations, weights = [], [], []
        for layer in range(depth + 1):
            out = width if layer < depth else outputs
            w = rng.standard_normal((s, out, fan_in))
            z = np.sqrt(weight_var / fan_in) * (w @ h) + np.sqrt(bias_var) * rng.standard_normal((s, out, 1))
            inputs.append(h), preactivations.append(z), weights.append(w)
            h, fan_in = activation(z), out
        # g[s, i, a, o] = ∂f_o(x_a)/∂z_i of the current layer, from the readout (identity) down.
        g = np.broadcast_to(np.eye(outputs)[None, :, None, :], (s, outputs, m, outputs))
        theta = np.zeros((s, outputs, outputs, m, m))
        for layer in range(depth, -1, -1):
            fan = inputs[layer].shape[1]
            features = weight_var / fan * np.einsum("sia,sib->sab", inputs[layer], inputs[layer]) + bias_var
            theta += features[:, None, None] * np.einsum("siao,sibp->sopab", g, g)
            if layer:
                back = np.sqrt(weight_var / fan) * (weights[layer].transpose(0, 2, 1) @ g.reshape(s, -1, m * outputs))
                g = activation.derivative(preactivations[layer - 1])[..., None] * back.reshape(s, fan, m, outputs)
        z_samples.append(preactivations[-1])
        ntk_samples.append(theta)
    return np.concatenate(z_samples), np.concatenate(ntk_samples)


def sample_kernels(x, activation, depth, width, weight_var, bias_var, networks, seed):
    """z(x_a)z(x_b) and the stax NTK of ``networks`` sampled scalar-output MLPs: two (networks, m, m) arrays."""
    z, theta = sample_networks(x, activation, depth, width, weight_var, bias_var, networks, seed)
    return z[:, 0, :, None] * z[:, 0, None, :], theta[:, 0, 0]


def mean_and_error(samples):
    return samples.mean(axis=0), samples.std(axis=0, ddof=1) / np.sqrt(len(samples))


# ---------------------------------------------------------------------------------------------------- quadrature


@pytest.mark.parametrize("spec", ["relu", "gelu", "erf", "abs"])
def test_pair_expectations_match_closed_forms(spec):
    """1- and 2-point rules against the kernel engine's closed-form pair moments, to 1e-12 (kinks included)."""
    phi = get_activation(spec)
    for cov in (np.array([[1.3, -0.4], [-0.4, 0.7]]), np.array([[2.0, 1.99], [1.99, 2.0]])):
        e = layer_expectations(phi, cov)
        q = np.diag(cov)
        c = cov[0, 1] / np.sqrt(q[0] * q[1])
        pm = phi.pair_moments(q[0], q[1], c, 1.0 - c, 1.0 + c)
        assert e.ss[0, 1] == pytest.approx(pm.cov, rel=1e-12, abs=1e-13)
        assert e.pp[0, 1] == pytest.approx(pm.dcov, rel=1e-12, abs=1e-13)
        assert e.ss[0, 0] == pytest.approx(phi.second_moment(q[0]), rel=1e-12)
        assert e.pp[1, 1] == pytest.approx(phi.derivative_second_moment(q[1]), rel=1e-12)
        # ssss on a pair reduces to two points: ⟨σ_0² σ_1²⟩ is symmetric under index permutations.
        assert e.ssss[0, 0, 1, 1] == pytest.approx(e.ssss[0, 1, 0, 1], rel=1e-14)


def test_stein_derivatives_match_price_theorem():
    """⟨∂_0∂_1(σ_0σ_1)⟩ = ⟨σ'_0σ'_1⟩ (Price), and for ReLU ⟨∂_0²∂_1²(σ_0σ_1)⟩ = ⟨δ(z_0)δ(z_1)⟩ = 1/(2π√det K)."""
    cov = np.array([[1.3, -0.4], [-0.4, 0.7]])
    for spec in ("relu", "gelu"):
        e = layer_expectations(get_activation(spec), cov)
        assert e.ss_hessian[0, 1, 0, 1] == pytest.approx(e.pp[0, 1], rel=1e-11)
    relu = layer_expectations(get_activation("relu"), cov)
    density_at_zero = 1.0 / (2.0 * np.pi * np.sqrt(np.linalg.det(cov)))
    assert relu.ss_fourth[0, 1, 0, 0, 1, 1] == pytest.approx(density_at_zero, rel=1e-10)
    # ⟨∂_0²(σ_0²)⟩ = 2⟨σ'_0² + σ_0σ''_0⟩ = 2·½ = 1 for ReLU (σ(0) = 0 kills the delta).
    assert relu.ss_hessian[0, 0, 0, 0] == pytest.approx(1.0, rel=1e-11)


@pytest.mark.parametrize("spec", ["relu", "abs", "gelu", "erf"])
def test_three_and_four_point_rules(spec):
    """Three and four distinct points: every pair moment to 1e-10 against the closed forms, kinked φ included.

    Kinked φ take the sequential rule (a Gauss–Hermite tensor rule would be off by ~2e-3 for ReLU), smooth ones
    Gauss–Hermite.
    """
    phi = get_activation(spec)
    assert has_kink_at_zero(phi) == (spec in ("relu", "abs"))
    cov = np.array([[1.0, 0.3, 0.2, 0.1], [0.3, 1.5, 0.4, -0.2], [0.2, 0.4, 0.8, 0.1], [0.1, -0.2, 0.1, 1.1]])
    for dim in (3, 4):
        z, w = gaussian_rule(cov[:dim, :dim], has_kink_at_zero(phi))
        for i, j in ((0, 1), (1, 2), (dim - 2, dim - 1)):
            c = cov[i, j] / np.sqrt(cov[i, i] * cov[j, j])
            exact = phi.pair_moments(cov[i, i], cov[j, j], c, 1.0 - c, 1.0 + c)
            assert abs(w @ (phi(z[:, i]) * phi(z[:, j])) - exact.cov) < 1e-10
            assert abs(w @ (phi.derivative(z[:, i]) * phi.derivative(z[:, j])) - exact.dcov) < 1e-10
    # The tensor Gauss–Hermite rule does not resolve the kink: the reason for the sequential one.
    if spec == "relu":
        z, w = gaussian_rule(cov[:3, :3], kinked=False)
        c = 0.3 / np.sqrt(1.5)
        assert abs(w @ (phi(z[:, 0]) * phi(z[:, 1])) - phi.pair_moments(1.0, 1.5, c, 1 - c, 1 + c).cov) > 1e-4


# ---------------------------------------------------------------------------------------------------- unit checks


def test_infinite_width_part_is_the_kernel_engine():
    for spec, bias in (("relu", 0.0), ("gelu", 0.3), ("erf", 0.1)):
        net = MLP(depth=2, activation=spec, weight_var=1.7, bias_var=bias)
        r = finite_width_corrections(RELU_PAIR, spec, 2, 1.7, bias)
        np.testing.assert_allclose(r.ntk, ntk(RELU_PAIR, net=net), rtol=1e-12)
        np.testing.assert_allclose(r.nngp, nngp(RELU_PAIR, net=net), rtol=1e-12)


def test_first_layer_has_no_corrections():
    r = finite_width_corrections(GELU_PAIR, "gelu", 0, GELU_CW)
    for name in ("nngp_correction", "ntk_correction", "v", "d", "f", "a", "b"):
        assert not np.any(getattr(r, name)), name


def test_linear_activation_has_no_mean_corrections():
    """φ(z) = z: means exact at every depth; V and B at layer 2 are the Wishart closed forms."""
    x = np.random.default_rng(3).standard_normal((2, 5))
    for depth in (1, 3):
        r = finite_width_corrections(x, "identity", depth, 1.5, 0.2)
        assert np.abs(r.nngp_correction).max() < 1e-11
        assert np.abs(r.ntk_correction).max() < 1e-11
    r = finite_width_corrections(x, "identity", 1, 1.5, 0.2)
    k1 = 0.2 + 1.5 * x @ x.T / 5
    wishart = 1.5**2 * (np.einsum("ac,bd->abcd", k1, k1) + np.einsum("ad,bc->abcd", k1, k1))
    np.testing.assert_allclose(r.v, wishart, rtol=1e-10)
    np.testing.assert_allclose(r.b, 1.5**2 * np.einsum("ab,cd->abcd", k1, k1), rtol=1e-10)


def test_conventions_differ_by_weight_var():
    """Without bias and with one C_W the stax NTK is C_W times the paper's: Θ, Θ¹, D, F by C_W, A, B by C_W²."""
    stax = finite_width_corrections(RELU_PAIR, "gelu", 3, GELU_CW)
    paper = finite_width_corrections(RELU_PAIR, "gelu", 3, GELU_CW, convention="paper")
    for name, power in (("ntk", 1), ("ntk_correction", 1), ("d", 1), ("f", 1), ("a", 2), ("b", 2), ("v", 0)):
        np.testing.assert_allclose(getattr(stax, name), GELU_CW**power * getattr(paper, name), rtol=1e-10,
                                   atol=1e-13, err_msg=name)


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="inputs"):
        finite_width_corrections(np.ones((2, 3)), "relu", 2)  # parallel inputs: singular covariance
    with pytest.raises(ValueError, match="depth"):
        finite_width_corrections(RELU_PAIR, "relu", -1)
    with pytest.raises(ValueError, match="convention"):
        finite_width_corrections(RELU_PAIR, "relu", 2, convention="ntk")
    with pytest.raises(ValueError, match="width"):
        finite_width_corrections(RELU_PAIR, "relu", 1).ntk_mean(0)


# ---------------------------------------------------------------------------------------------------- ReLU


def test_relu_diagonal_is_exact_and_off_diagonal_matches_monte_carlo():
    """4-layer ReLU, C_W = 2, no bias (paper Thm 5.2, Fig. 3): Θ¹(x, x) = 0, Θ¹(x0, x1) < 0.

    Monte Carlo: 40 000 networks at n = 20; σ = standard error of the sample mean; 3σ.
    """
    theory = finite_width_corrections(RELU_PAIR, "relu", 3, 2.0, convention="paper")
    assert np.abs(np.diag(theory.ntk_correction)).max() < 1e-10
    assert np.abs(np.diag(theory.nngp_correction)).max() < 1e-10
    assert -1.3 < theory.ntk_correction[0, 1] < -1.15  # n(Θ̄ − Θ) ≈ −1.2…−1.3 in the paper's convention
    width, weight_var = 20, 2.0
    _, thetas = sample_kernels(RELU_PAIR, get_activation("relu"), 3, width, weight_var, 0.0, 40_000, seed=7)
    mean, error = mean_and_error(thetas / weight_var)  # stax → the paper's convention (÷ C_W)
    residual = mean - theory.ntk_mean(width)
    assert np.all(np.abs(residual) < 3 * error), (residual, error)
    # The off-diagonal correction is resolved: the infinite-width value alone is off by more than 3σ.
    assert abs(mean[0, 1] - theory.ntk[0, 1]) > 3 * error[0, 1]


def test_scale_invariant_activations_have_exact_diagonals_and_smooth_ones_do_not():
    """The paper's Fig. 3 controls: leaky ReLU's diagonal is exact too (Thm 5.2), GELU's is not; both correct the
    off-diagonal."""
    leaky = finite_width_corrections(RELU_PAIR, "leaky_relu(0.1)", 3, 2.0 / 1.01)
    gelu = finite_width_corrections(RELU_PAIR, "gelu", 3, GELU_CW)
    assert np.abs(np.diag(leaky.ntk_correction)).max() < 1e-10
    assert np.abs(np.diag(leaky.nngp_correction)).max() < 1e-10
    assert abs(leaky.ntk_correction[0, 1]) > 0.1
    assert np.all(np.abs(gelu.ntk_correction) > 0.1)


# ---------------------------------------------------------------------------------------------------- GeLU


@pytest.fixture(scope="module")
def gelu_samples():
    """4-layer GeLU at C_W ≈ 1.983, no bias: sampled kernels at n = 20, 40, 80 (20 000 networks each)."""
    phi = get_activation("gelu")
    return {n: sample_kernels(GELU_PAIR, phi, 3, n, GELU_CW, 0.0, 20_000, seed=n) for n in (20, 40, 80)}


@pytest.mark.slow
def test_gelu_means_match_first_order_theory(gelu_samples):
    """K + K¹/n and Θ + Θ¹/n match sampled means at n = 20, 40, 80 within 3σ (σ = standard error of the mean).

    The residual shrinks faster than 1/n: n·(mean − K) estimates the 1/n coefficient at each width; its
    inverse-variance average over the widths agrees with K¹ (Θ¹) within 3σ, and is resolved (3σ < |K¹|), so
    the infinite-width value alone, or a wrong coefficient, fails.
    """
    theory = finite_width_corrections(GELU_PAIR, "gelu", 3, GELU_CW)
    for kind, mean_at, infinite, correction in (
            (0, theory.nngp_mean, theory.nngp, theory.nngp_correction),
            (1, theory.ntk_mean, theory.ntk, theory.ntk_correction)):
        coefficients, weights = [], []
        for width, samples in gelu_samples.items():
            mean, error = mean_and_error(samples[kind])
            assert np.all(np.abs(mean - mean_at(width)) < 3 * error), (width, mean - mean_at(width), error)
            coefficients.append(width * (mean - infinite))
            weights.append(1.0 / (width * error) ** 2)
        pooled = sum(w * c for w, c in zip(weights, coefficients)) / sum(weights)
        sigma = 1.0 / np.sqrt(sum(weights))
        assert np.all(np.abs(pooled - correction) < 3 * sigma), (kind, pooled, correction, sigma)
        assert np.all(3 * sigma < np.abs(correction)), (kind, sigma, correction)


@pytest.mark.slow
def test_gelu_ntk_covariance_matches_a_plus_2b(gelu_samples):
    """n·Cov(Θ̂_ab, Θ̂_cd) → A_abcd + B_abcd + B_abdc; on the diagonal Var Θ̂(x, x)·n → A + 2B (scalar output).

    The O(1/n²) term is removed by Richardson extrapolation from n = 40, 80: 2·(80·Var₈₀) − 40·Var₄₀. σ from
    the sampling variance of a sample (co)variance, (m₄ − s⁴)/N per width, propagated; 3σ.
    """
    theory = finite_width_corrections(GELU_PAIR, "gelu", 3, GELU_CW)
    entries = [(0, 0), (0, 1), (1, 1)]
    for (a, b) in entries:
        for (c, d) in entries:
            estimates, variances = [], []
            for width in (40, 80):
                thetas = gelu_samples[width][1]
                u = thetas[:, a, b] - thetas[:, a, b].mean()
                v = thetas[:, c, d] - thetas[:, c, d].mean()
                product = u * v
                estimates.append(width * product.mean())
                variances.append(width**2 * product.var(ddof=1) / len(product))
            extrapolated = 2 * estimates[1] - estimates[0]
            sigma = np.sqrt(4 * variances[1] + variances[0])
            predicted = theory.ntk_covariance(1.0)[a, b, c, d]
            assert abs(extrapolated - predicted) < 3 * sigma, ((a, b, c, d), extrapolated, predicted, sigma)
    # The diagonal variance is the paper's A + 2B.
    diagonal = theory.a[0, 0, 0, 0] + 2 * theory.b[0, 0, 0, 0]
    assert theory.ntk_variance(1.0)[0, 0] == pytest.approx(diagonal, rel=1e-14)


def test_result_type_names_its_fields():
    r = finite_width_corrections(GELU_PAIR, "gelu", 2, GELU_CW)
    assert isinstance(r, FiniteWidthCorrections)
    assert r.activation == "gelu" and r.depth == 2 and r.convention == "stax"
    np.testing.assert_allclose(r.ntk_mean(50.0), r.ntk + r.ntk_correction / 50.0)


# ---------------------------------------------------------------------------------------------------- tensors


def tensor_products(z, theta):
    """Per-network products whose means are V, D, F, A, B divided by n (two output neurons o ≠ p).

    V = n·Cov(z_o z_o, z_p z_p), D = n·Cov(z_o z_o, Θ̂_pp), F = n·E[z_o z_p Θ̂_op], A = n·Cov(Θ̂_oo, Θ̂_pp),
    B = n·E[Θ̂_op Θ̂_op] (the definitions of docs/theory.md §8.2 with i1 … i4 set to o, p), each averaged over the
    two orders (o, p) = (0, 1), (1, 0).
    """
    def centred(u):
        return u - u.mean(axis=0)

    def outer(u, v):
        return u[:, :, :, None, None] * v[:, None, None]

    products = dict.fromkeys("vdfab", 0.0)
    for o, p in ((0, 1), (1, 0)):
        zz_o = z[:, o, :, None] * z[:, o, None, :]
        zz_p = z[:, p, :, None] * z[:, p, None, :]
        zz_op = z[:, o, :, None] * z[:, p, None, :]
        terms = {"v": outer(centred(zz_o), centred(zz_p)), "d": outer(centred(zz_o), centred(theta[:, p, p])),
                 "f": outer(zz_op, theta[:, o, p]), "a": outer(centred(theta[:, o, o]), centred(theta[:, p, p])),
                 "b": outer(theta[:, o, p], theta[:, o, p])}
        for name, value in terms.items():
            products[name] = products[name] + 0.5 * value
    return products


def tensor_estimates(depth, width, networks, seed):
    """n × the mean of each product and its standard error, for the GELU pair at C_W ≈ 1.983."""
    z, theta = sample_networks(GELU_PAIR, get_activation("gelu"), depth, width, GELU_CW, 0.0, networks, seed,
                               outputs=2)
    return {name: (width * value.mean(axis=0), width * value.std(axis=0, ddof=1) / np.sqrt(len(value)))
            for name, value in tensor_products(z, theta).items()}


@pytest.mark.slow
def test_four_point_tensors_match_monte_carlo():
    """V, D, F, A, B, every one of the 16 entries on a pair, against networks with two output neurons; 3σ.

    Depth 1: the output is layer 2, whose inputs are exactly Gaussian and i.i.d. over neurons, so the estimators
    are exactly the tensors over n at any width (n = 10, 40 000 networks). Depth 2: the propagation terms too,
    with the O(1/n²) term removed by Richardson extrapolation from n = 40, 80 (20 000 networks each). σ is the
    standard error of the mean product, propagated. The transposed index order of F and B (the paper's F_{1324}
    read as ours) is rejected, so the test sees where the indices go.
    """
    exact = finite_width_corrections(GELU_PAIR, "gelu", 1, GELU_CW)
    estimates = tensor_estimates(1, 10, 40_000, seed=11)
    for name in "vdfab":
        value, error = estimates[name]
        assert np.all(np.abs(value - getattr(exact, name)) < 3 * error), (name, value, getattr(exact, name), error)
    theory = finite_width_corrections(GELU_PAIR, "gelu", 2, GELU_CW)
    coarse, fine = tensor_estimates(2, 40, 20_000, seed=40), tensor_estimates(2, 80, 20_000, seed=80)
    for name in "vdfab":
        extrapolated = 2 * fine[name][0] - coarse[name][0]
        sigma = np.sqrt(4 * fine[name][1] ** 2 + coarse[name][1] ** 2)
        tensor = getattr(theory, name)
        assert np.all(np.abs(extrapolated - tensor) < 3 * sigma), (name, extrapolated, tensor, sigma)
        if name in "fb":
            assert np.any(np.abs(extrapolated - tensor.transpose(0, 2, 1, 3)) > 3 * sigma), name


@pytest.mark.slow
def test_four_distinct_points_with_relu_match_monte_carlo():
    """Entries over four distinct points (the sequential rule for ReLU's kink in four dimensions), at depth 1.

    The output is layer 2: its tensors are exact at any width, so n = 8 with 100 000 two-output networks
    suffices. Checked: V, D, F, A, B at the three orderings (0,1,2,3), (0,2,1,3), (0,3,1,2) and the scalar-output
    covariance Cov(Θ̂(x0, x1), Θ̂(x2, x3)), each within 3σ (σ = standard error of the mean product); of each
    tensor at least one of the three entries is resolved from zero at 3σ.
    """
    # Correlated (a shared direction plus distinct parts) so that every tensor is well above the noise.
    x = np.array([[1.3, 0.6, 0.7, 0.5], [0.6, -0.2, 0.5, 0.6], [0.7, 0.5, 1.6, 0.7], [0.5, 0.6, 0.7, 1.2]])
    width, weight_var = 8, 2.0
    theory = finite_width_corrections(x, "relu", 1, weight_var)
    z, theta = sample_networks(x, get_activation("relu"), 1, width, weight_var, 0.0, 100_000, seed=4, outputs=2)
    products = tensor_products(z, theta)
    for name in "vdfab":
        significance = []
        for index in ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2)):
            sample = width * products[name][(slice(None), *index)]
            mean, error = sample.mean(), sample.std(ddof=1) / np.sqrt(len(sample))
            expected = getattr(theory, name)[index]
            assert abs(mean - expected) < 3 * error, (name, index, mean, expected, error)
            significance.append(abs(expected) / error)
        assert max(significance) > 3, (name, significance)  # some entry of each tensor is resolved from 0
    u = theta[:, 0, 0, 0, 1] - theta[:, 0, 0, 0, 1].mean()
    v = theta[:, 0, 0, 2, 3] - theta[:, 0, 0, 2, 3].mean()
    covariance, error = width * (u * v).mean(), width * (u * v).std(ddof=1) / np.sqrt(len(u))
    assert abs(covariance - theory.ntk_covariance(1.0)[0, 1, 2, 3]) < 3 * error
