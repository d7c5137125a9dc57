"""The empirical neural tangent kernel of one sampled finite-width network.

The network is the `MLP` of ``net`` at a finite width, in the NTK parameterization of neural-tangents ``stax``
(Jacot et al. 2018; Lee et al. 2019): with σ_w² = weight_var, σ_b² = bias_var, layer sizes
n_0 = d, n_1 … n_L (L = depth hidden layers) and n_{L+1} = 1,

    h_l(x) = (σ_w/√n_{l−1})·a_{l−1}(x) W_l + σ_b·β_l,   a_0 = x,   a_l = φ(h_l),   f(x) = h_{L+1}(x),

every entry of W_l (n_{l−1} × n_l, input × output, as ``stax`` stores it) and β_l (n_l) i.i.d. N(0, 1).
The empirical NTK is Θ̂(x, y) = Σ_θ ∂f(x)/∂θ · ∂f(y)/∂θ over every weight and bias, readout included.

It is never formed from per-parameter Jacobians. With the backward signals δ_l(x) = ∂f/∂h_l(x),

    δ_{L+1} = 1,   δ_l = φ'(h_l) ⊙ (σ_w/√n_l)·δ_{l+1} W_{l+1}ᵀ,

the derivatives of f by W_l and β_l are the outer product (σ_w/√n_{l−1})·a_{l−1} ⊗ δ_l and σ_b·δ_l, so each
layer contributes a product of two small Gram matrices (the structured-derivative form of a Dense layer,
Novak, Sohl-Dickstein & Schoenholz 2022, "Fast Finite Width Neural Tangent Kernel"):

    Θ̂(x, y) = Σ_{l=1}^{L+1} ⟨δ_l(x), δ_l(y)⟩ · (σ_w²·⟨a_{l−1}(x), a_{l−1}(y)⟩/n_{l−1} + σ_b²).

With one hidden layer Θ̂ is an average over i.i.d. hidden units, so for ``depth=1`` E[Θ̂] equals the analytic
`ntk` exactly at any width; deeper, E[Θ̂] − Θ = O(1/width) and Θ̂ → Θ as the widths grow (Jacot et al. 2018,
Thm 1; Hanin & Nica 2019 for the 1/width corrections).

Determinism, as in `ntkdist.kernels.gram`: every point's features (the a_l and δ_l) come from a forward and
backward pass over a zero-padded tile of exactly ``TILE`` rows, and every entry of the kernel from Gram products
of two such tiles; BLAS results depend on the shapes of a call, not on which rows share it. So a point's features
and an entry's value are the same whichever block, tile or run computes them, blocks assemble bit for bit into
the whole Gram matrix, and the symmetric Gram is computed once per pair (lower index as the row) and mirrored.
The network is drawn from the seed and the architecture alone, never from the data.

Memory: the features of a panel of rows are held while all column tiles stream past (each computed once per
panel); the panel is as many tiles as fit in ``FEATURE_BYTES``, so the memory is bounded whatever N is, and a
Gram matrix whose features fit in one panel runs every forward pass once.

Everything runs on the array module of the input (NumPy or CuPy); sampling is on the host with NumPy, so a seed
gives the same network on either.

The mathematics, with its conventions, errata and tests: docs/theory.md §8.1.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._xp import array_module, to_numpy
from .gram import validate_inputs
from .network import MLP
from .output_memory import output_array, streams_output
from .tiles import check_kind_dtype, gemm_operand, padded, store_tile

#: Rows of one tile, for the forward/backward pass and for each side of a Gram product. Fixed, so that every
#: point's features and every entry have the same arithmetic in every call (a different size rounds the products
#: differently, so it changes the bits of stored blocks). Smaller than the analytic engine's 256 because padding
#: costs more here: each padded row runs the whole forward and backward pass. Measured (2-core Xeon, one BLAS
#: thread, depth-2 ReLU, width 512, d = 64, under load): N = 300 takes 0.46–0.51 s at 128 and 0.68–0.72 s at 256
#: (384 against 512 padded rows); at N = 1000 (1024 rows either way) the two were within the noise (1.0–1.6 s).
#: (Not yet measured on GPUs, where larger tiles would cut kernel launches; bits are only promised within one
#: backend.)
TILE = 128
#: Bytes of features (the a_l and δ_l of every layer) a row panel may hold; whole tiles, at least one.
FEATURE_BYTES = 512 * 2**20


@dataclass(frozen=True, eq=False)
class SampledWeights:
    """The weights and biases of one finite-width draw of an `MLP`, made by `sample_weights`.

    The `MLP` describes the network (depth, activation, variances: all the infinite-width kernels need); this is
    one random instance of it at the given widths, which the empirical (finite-width) NTK and NNGP evaluate.

    Attributes
    ----------
    net : MLP
        Depth, activation and variances. Replacing it (``dataclasses.replace(params, net=other)``) reuses the
        same standard-normal draws for another activation or other variances of the same depth.
    dim : int
        Input dimension d.
    widths : tuple of int
        Hidden widths n_1 … n_L.
    seed : int
    weights : tuple of arrays
        W_1 … W_{L+1}, W_l of shape (n_{l−1}, n_l) (input × output; W_{L+1} is (n_L, 1)), entries N(0, 1).
    biases : tuple of arrays
        β_1 … β_{L+1}, β_l of shape (n_l,), entries N(0, 1). The scales σ_w/√n and σ_b are applied in the
        forward pass (NTK parameterization), not stored.
    """

    net: MLP
    dim: int
    widths: tuple
    seed: int
    weights: tuple
    biases: tuple

    def __post_init__(self):
        if not isinstance(self.net, MLP):
            raise ValueError(f"net: expected an ntkdist MLP, got {type(self.net).__name__}")
        if len(self.widths) != self.net.depth:
            raise ValueError(
                f"net: has depth {self.net.depth} but the sampled network has {len(self.widths)} hidden layers; "
                "sample a network of that depth"
            )
        sizes = self.layer_sizes
        if len(self.weights) != len(sizes) - 1 or len(self.biases) != len(sizes) - 1:
            raise ValueError(f"weights, biases: expected {len(sizes) - 1} layers each (depth + readout)")
        for layer, (W, beta) in enumerate(zip(self.weights, self.biases), start=1):
            if tuple(W.shape) != (sizes[layer - 1], sizes[layer]) or tuple(beta.shape) != (sizes[layer],):
                raise ValueError(
                    f"weights, biases: layer {layer} has shapes {tuple(W.shape)}, {tuple(beta.shape)}; expected "
                    f"{(sizes[layer - 1], sizes[layer])}, {(sizes[layer],)}"
                )

    @property
    def layer_sizes(self) -> tuple:
        """(d, n_1, …, n_L, 1)."""
        return (self.dim, *self.widths, 1)

    @property
    def num_parameters(self) -> int:
        """Number of weights and biases, readout included (the length of a per-parameter Jacobian row)."""
        sizes = self.layer_sizes
        return sum((sizes[i] + 1) * sizes[i + 1] for i in range(len(sizes) - 1))

    def to(self, xp) -> "SampledWeights":
        """The same network with its arrays in the array module ``xp`` (itself if they are there already)."""
        if all(array_module(a) is xp for a in (*self.weights, *self.biases)):
            return self
        move = to_numpy if xp is np else xp.asarray
        return SampledWeights(self.net, self.dim, self.widths, self.seed,
                              tuple(move(W) for W in self.weights), tuple(move(b) for b in self.biases))


class ForwardPass(NamedTuple):
    """The forward pass of a `SampledWeights` on N points."""

    output: object
    """f(x), shape (N,)."""
    pre_activations: tuple
    """h_1 … h_{L+1}, h_l of shape (N, n_l); h_{L+1} is (N, 1) and equals ``output``."""
    post_activations: tuple
    """a_0 = x, a_1 = φ(h_1), …, a_L, a_l of shape (N, n_l): the inputs of the L + 1 Dense layers."""


def _integer_at_least(value, minimum: int, message: str) -> int:
    """``value`` as an int ≥ ``minimum`` (bools and non-integers refused), else ValueError(message)."""
    if isinstance(value, bool):
        raise ValueError(message)
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(message) from None
    if number < minimum:
        raise ValueError(message)
    return number


def _check_seed(seed) -> int:
    return _integer_at_least(seed, 0, f"seed: must be a non-negative integer, got {seed!r}")


def _check_widths(width, depth: int) -> tuple:
    def one(value, where):
        return _integer_at_least(value, 1, f"width: {where} must be an integer ≥ 1, got {value!r}")

    if isinstance(width, (str, bytes)):
        raise ValueError(f"width: expected an integer or a sequence of {depth} integers, got {width!r}")
    try:
        values = list(width)
    except TypeError:
        return (one(width, "the width"),) * depth
    if len(values) != depth:
        raise ValueError(f"width: got {len(values)} widths for a network of depth {depth}; give one per hidden layer")
    return tuple(one(v, f"entry {i}") for i, v in enumerate(values))


def sample_weights(net: MLP, *, dim: int, width, seed: int) -> SampledWeights:
    """Draw the parameters of one finite-width network of the architecture of ``net``.

    Parameters
    ----------
    net : MLP
    dim : int
        Input dimension d (≥ 1).
    width : int or sequence of ``net.depth`` ints
        Hidden widths, each ≥ 1.
    seed : int
        Non-negative. Layer l draws W_l then β_l from its own stream ``SeedSequence(seed).spawn(depth + 1)[l−1]``,
        so a layer's parameters depend on the seed and its own shape only.

    Returns
    -------
    SampledWeights
        NumPy float64 arrays (kernels move them to the array module of their input).
    """
    if not isinstance(net, MLP):
        raise ValueError(f"net: expected an ntkdist MLP, got {type(net).__name__}")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim: must be an integer ≥ 1 (the input dimension), got {dim!r}")
    widths = _check_widths(width, net.depth)
    seed = _check_seed(seed)
    sizes = (int(dim), *widths, 1)
    streams = np.random.SeedSequence(seed).spawn(len(sizes) - 1)
    weights, biases = [], []
    for stream, n_in, n_out in zip(streams, sizes[:-1], sizes[1:]):
        rng = np.random.default_rng(stream)
        weights.append(rng.standard_normal((n_in, n_out)))
        biases.append(rng.standard_normal(n_out))
    return SampledWeights(net, int(dim), widths, seed, tuple(weights), tuple(biases))


# --------------------------------------------------------------------------------------------------------------
# One tile: the forward and backward pass of exactly TILE rows.

def _tile_forward(params: SampledWeights, X_tile):
    """Pre-activations h_1 … h_{L+1} and layer inputs a_0 … a_L of one (TILE, d) tile."""
    net = params.net
    sw, sb = math.sqrt(net.weight_var), math.sqrt(net.bias_var)
    sizes = params.layer_sizes
    pre, post = [], [X_tile]
    a = X_tile
    for layer, (W, beta) in enumerate(zip(params.weights, params.biases)):
        h = (sw / math.sqrt(sizes[layer])) * (a @ W) + sb * beta
        pre.append(h)
        if layer < net.depth:
            a = net.activation(h)
            post.append(a)
    return pre, post


def _tile_backward(params: SampledWeights, pre):
    """δ_1 … δ_L = ∂f/∂h_l of one tile from its pre-activations (δ_{L+1} = 1 is implicit)."""
    net = params.net
    sw = math.sqrt(net.weight_var)
    sizes = params.layer_sizes
    depth = net.depth
    deltas = [None] * depth
    # Readout: ∂f/∂a_L = (σ_w/√n_L)·W_{L+1}[:, 0], the same for every row.
    upstream = ((sw / math.sqrt(sizes[depth])) * params.weights[depth][:, 0])[None, :]
    for layer in range(depth - 1, -1, -1):
        delta = net.activation.derivative(pre[layer]) * upstream
        deltas[layer] = delta
        if layer > 0:
            upstream = (sw / math.sqrt(sizes[layer])) * (delta @ params.weights[layer].T)
    return deltas


class _TileFeatures(NamedTuple):
    inputs: list  # a_0 … a_L, each (TILE, n_l)
    deltas: list  # δ_1 … δ_L, each (TILE, n_l); empty for kind="nngp"
    output: object  # f, (TILE,)


def _tile_features(params, X_tile, kind):
    pre, post = _tile_forward(params, X_tile)
    deltas = _tile_backward(params, pre) if kind == "ntk" else []
    return _TileFeatures(post, deltas, pre[-1][:, 0])


def _feature_bytes_per_row(params, kind) -> int:
    sizes = params.layer_sizes
    floats = sum(sizes[:-1]) + 1 + (sum(sizes[1:-1]) if kind == "ntk" else 0)
    return 8 * floats


def _tile_kernel(params, kind, rows: _TileFeatures, cols: _TileFeatures):
    """The (TILE, TILE) kernel between two tiles of features: Σ_l ⟨δ_l, δ_l⟩·(σ_w²⟨a_{l−1}, a_{l−1}⟩/n_{l−1} + σ_b²)."""
    if kind == "nngp":
        return rows.output[:, None] * cols.output[None, :]
    net = params.net
    w, b = net.weight_var, net.bias_var
    sizes = params.layer_sizes
    theta = None
    for layer in range(net.depth + 1):
        term = (w / sizes[layer]) * (rows.inputs[layer] @ cols.inputs[layer].T) + b
        if layer < net.depth:
            term = (rows.deltas[layer] @ cols.deltas[layer].T) * term
        theta = term if theta is None else theta + term
    return theta


def _check_dim(params, X, name):
    if X.shape[1] != params.dim:
        raise ValueError(
            f"{name}: has {X.shape[1]} features but the sampled network takes inputs of dimension {params.dim}; "
            "sample the network with dim equal to the input dimension"
        )


# --------------------------------------------------------------------------------------------------------------
# Public functions.

def forward(params: SampledWeights, X) -> ForwardPass:
    """The forward pass of a sampled network, tile by tile (each row's values do not depend on the other rows).

    Parameters
    ----------
    params : SampledWeights
    X : (N, d) array, NumPy or CuPy

    Returns
    -------
    ForwardPass
        Output and per-layer pre- and post-activations, in the array module of X. Holds O(N × width × depth)
        numbers: for large N use `empirical_gram_block`, which streams tiles.
    """
    X, _ = validate_inputs(X)
    _check_dim(params, X, "X")
    xp = array_module(X)
    params = params.to(xp)
    n = X.shape[0]
    sizes = params.layer_sizes
    pre = [xp.empty((n, s), dtype=xp.float64) for s in sizes[1:]]
    post = [X] + [xp.empty((n, s), dtype=xp.float64) for s in sizes[1:-1]]
    Xp = padded(X, TILE)
    for i0 in range(0, n, TILE):
        i1 = min(i0 + TILE, n)
        tile_pre, tile_post = _tile_forward(params, Xp[i0:i0 + TILE])
        for full, part in zip(pre, tile_pre):
            full[i0:i1] = part[:i1 - i0]
        for full, part in zip(post[1:], tile_post[1:]):
            full[i0:i1] = part[:i1 - i0]
    return ForwardPass(pre[-1][:, 0], tuple(pre), tuple(post))


def backward_signals(params: SampledWeights, forward_pass: ForwardPass) -> tuple:
    """δ_l = ∂f/∂h_l for l = 1 … L + 1, from a `forward` pass (δ_{L+1} is ones of shape (N, 1)).

    With them Θ̂(x, y) = Σ_l ⟨δ_l(x), δ_l(y)⟩·(σ_w²·⟨a_{l−1}(x), a_{l−1}(y)⟩/n_{l−1} + σ_b²); per tile they equal
    what `empirical_ntk` uses.
    """
    pre = forward_pass.pre_activations
    xp = array_module(pre[0])
    params = params.to(xp)
    n = pre[0].shape[0]
    sizes = params.layer_sizes
    deltas = [xp.empty((n, s), dtype=xp.float64) for s in sizes[1:-1]]
    for i0 in range(0, n, TILE):
        i1 = min(i0 + TILE, n)
        tile_pre = [padded(h[i0:i1], TILE) for h in pre]
        for full, part in zip(deltas, _tile_backward(params, tile_pre)):
            full[i0:i1] = part[:i1 - i0]
    return (*deltas, xp.ones((n, 1), dtype=xp.float64))


def empirical_gram_block(X_rows, X_cols=None, *, params: SampledWeights, kind: str = "ntk",
                         dtype: str = "float64"):
    """The empirical kernel of one sampled network between two sets of points (a worker's entry point).

    Parameters
    ----------
    X_rows : (n, d) array
        NumPy or CuPy; the result lives in the same array module.
    X_cols : (m, d) array or None
        None means ``X_rows`` itself: the symmetric Gram, each pair computed once (lower index as the row) and
        mirrored, so it is exactly symmetric.
    params : SampledWeights
        From `sample_weights`; moved to the array module of the inputs if it is not there.
    kind : {"ntk", "nngp"}
        ``"ntk"``: Θ̂(x, y), the sum over all parameters of ∂f(x)/∂θ·∂f(y)/∂θ. ``"nngp"``: f(x)·f(y), the
        outer product of the outputs (neural-tangents' ``empirical_nngp_fn``); its mean over seeds is the NNGP of
        a network of this width (exactly `ntkdist.nngp` for ``depth=1``).
    dtype : {"float64", "float32"}
        Storage precision of the result; the arithmetic is float64 in either case.

    Returns
    -------
    (n, m) array, the Gram matrix itself (not divided by n).
    """
    check_kind_dtype(kind, dtype)
    if not isinstance(params, SampledWeights):
        raise ValueError(f"params: expected a SampledWeights from sample_weights, got {type(params).__name__}")
    symmetric = X_cols is None
    X, Y = validate_inputs(X_rows, None if symmetric else X_cols)
    _check_dim(params, X, "X_rows")
    if symmetric:
        Y = X
    else:
        _check_dim(params, Y, "X_cols")
    xp = array_module(X)
    n, m = X.shape[0], Y.shape[0]
    out = output_array(xp, (n, m), dtype)
    if n == 0 or m == 0:
        return out
    params = params.to(xp)
    stream = streams_output(out.nbytes)
    Xp = padded(X, TILE)
    Yp = Xp if symmetric else padded(Y, TILE)
    panel_tiles = max(1, FEATURE_BYTES // (_feature_bytes_per_row(params, kind) * TILE))
    for p0 in range(0, n, panel_tiles * TILE):
        p1 = min(p0 + panel_tiles * TILE, n)
        panel = {i0: _tile_features(params, Xp[i0:i0 + TILE], kind) for i0 in range(p0, p1, TILE)}
        for j0 in range(p0 if symmetric else 0, m, TILE):
            j1 = min(j0 + TILE, m)
            if symmetric and j0 in panel:
                cols = panel[j0]  # the same tile of the same data: the same features
            else:
                cols = _tile_features(params, Yp[j0:j0 + TILE], kind)
            for i0, rows in panel.items():
                if symmetric and j0 < i0:
                    continue
                i1 = min(i0 + TILE, n)
                diagonal = symmetric and i0 == j0
                cols_here = _TileFeatures([gemm_operand(a, diagonal) for a in cols.inputs],
                                          [gemm_operand(d, diagonal) for d in cols.deltas],
                                          gemm_operand(cols.output, diagonal))
                tile = _tile_kernel(params, kind, rows, cols_here)[:i1 - i0, :j1 - j0]
                store_tile(out, tile, i0, j0, symmetric, stream)
    return out


def empirical_ntk(X, Y=None, *, net: MLP, width, seed: int, dtype: str = "float64"):
    """The NTK Θ̂(x_i, y_j) of one finite-width network of the architecture of ``net``, drawn from ``seed``.

    Parameters
    ----------
    X, Y, dtype
        As for the infinite-width `ntkdist.kernels.gram.ntk`: (n, d) and (m, d) NumPy or CuPy arrays, Y None for
        the symmetric Gram of X; dtype is the precision of the returned array (arithmetic is float64).
    net : MLP
        Depth, activation, weight_var = σ_w², bias_var = σ_b² (NTK parameterization of ``stax``).
    width : int or sequence of ``net.depth`` ints
        Hidden widths.
    seed : int
        The network depends on (net, d, width, seed) only, never on X: blocks computed separately assemble
        bit for bit into the whole Gram matrix.

    Returns
    -------
    (n, m) array in the array module of X.
    """
    X, Y = validate_inputs(X, Y)
    params = sample_weights(net, dim=X.shape[1], width=width, seed=seed)
    return empirical_gram_block(X, Y, params=params, kind="ntk", dtype=dtype)


def empirical_nngp(X, Y=None, *, net: MLP, width, seed: int, dtype: str = "float64"):
    """f(x_i)·f(y_j) of one sampled network (the rank-one empirical NNGP); arguments as `empirical_ntk`."""
    X, Y = validate_inputs(X, Y)
    params = sample_weights(net, dim=X.shape[1], width=width, seed=seed)
    return empirical_gram_block(X, Y, params=params, kind="nngp", dtype=dtype)
