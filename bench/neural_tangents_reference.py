"""neural-tangents, the field's reference library, run as a peer: kernels for comparison and its speed.

neural-tangents does not import with current JAX, so it is never a dependency of ntkdist; it runs in its own
virtual environment (``make .venv-nt``: jax 0.4.26, neural-tangents 0.6.5, float64 enabled) and talks to
ntkdist through files:

    .venv-nt/bin/python bench/neural_tangents_reference.py kernels CASES.json INPUTS.npz OUT.npz
    .venv-nt/bin/python bench/neural_tangents_reference.py speed N DIM DEPTH REPEAT [float32|float64] [ACTIVATION]
    .venv-nt/bin/python bench/neural_tangents_reference.py serve [float32|float64]
    .venv-nt/bin/python bench/neural_tangents_reference.py empirical INPUTS.npz OUT.npz [INPUTS2.npz OUT2.npz …]

``kernels`` evaluates ``stax`` ``kernel_fn`` for each case of CASES.json (a list of {"activation", "depth",
"weight_var", "bias_var", "kind", optional "inputs": [x_name, y_name]}) on arrays of INPUTS.npz (default X and
Y), in float64; ``speed`` times the jitted
NTK (ReLU unless ACTIVATION is given; float32 by default, the configuration the kernel-engine issue quotes;
float64 with jax_enable_x64, the precision ntkdist computes in) and prints entries/s. ``serve`` answers timing
requests, one JSON line in ({"n", "dim", "depth", "activation", "weight_var", "bias_var"}), one JSON line out
({"seconds", "cpu_seconds"}: wall time, and CPU time over all threads; with "kind": "nngp" in the request, of
the NNGP; with "width", of the empirical NTK of one network of that width instead): `bench.kernels --peer` keeps
it running so that it can alternate ntkdist and the peer, run by run, under the same machine load (each case is
jitted and warmed up on its first request). ``empirical`` evaluates the empirical NTK and NNGP of the network
whose weights INPUTS.npz holds (`empirical`), in float64.
This file imports nothing from ntkdist. neural_tangents/__init__.py imports its ``experimental`` package, whose
TensorFlow interop pulls in TensorFlow; nothing here uses it, so it is replaced by an empty module before the
import (the peer environment then needs no TensorFlow: see the Makefile's .venv-nt).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import types

sys.modules.setdefault("neural_tangents.experimental", types.ModuleType("neural_tangents.experimental"))

#: Gauss–Hermite degree of stax.ElementwiseNumerical for activations without a closed form in stax (tanh,
#: sigmoid, softplus). Measured for a depth-2 tanh NTK (w = 2.29, inputs of norm ≲ 1.5, d = 6) against a
#: composite Gauss–Legendre reference: the default 25 is off by 1e-1 (relative to √(K_ii K_jj)), 64 by 7e-3,
#: 120 by 4e-4, 200 by 1e-5, 400 by 1e-8. 400 makes the peer accurate enough for a 1e-7 comparison.
NUMERICAL_DEGREE = 400


def _stax_activation(stax, spec: str):
    name, _, args = spec.partition("(")
    values = [float(a) for a in args.rstrip(")").split(",") if a.strip()]
    if name == "relu":
        return stax.Relu()
    if name == "leaky_relu":
        return stax.LeakyRelu(values[0])
    if name == "abs":
        return stax.Abs()
    if name == "abrelu":
        return stax.ABRelu(values[0], values[1])
    if name == "erf":
        return stax.Erf()
    if name == "gelu":
        return stax.Gelu(approximate=False)
    if name == "sin":
        return stax.Sin()
    if name == "identity":
        return stax.Identity()
    if name == "polynomial":
        return stax.Polynomial(values)
    numerical = {"tanh": "tanh", "sigmoid": "sigmoid", "softplus": "softplus"}
    if name in numerical:
        import jax

        fn = {"tanh": jax.numpy.tanh, "sigmoid": jax.nn.sigmoid, "softplus": jax.nn.softplus}[name]
        return stax.ElementwiseNumerical(fn, deg=NUMERICAL_DEGREE)
    raise ValueError(f"no stax counterpart for activation {spec!r}")


def network(stax, activation: str, depth: int, weight_var: float, bias_var: float, widths=None):
    """stax.serial of ``depth`` × (Dense, activation) and a Dense readout of width 1, NTK parameterization.
    ``widths`` (one per hidden layer) matter only to the finite-width functions (default 512)."""
    w_std, b_std = weight_var ** 0.5, bias_var ** 0.5
    layers = []
    for width in widths or [512] * depth:
        layers += [stax.Dense(int(width), W_std=w_std, b_std=b_std, parameterization="ntk"),
                   _stax_activation(stax, activation)]
    layers.append(stax.Dense(1, W_std=w_std, b_std=b_std, parameterization="ntk"))
    return stax.serial(*layers)


def _stax_params(weights, biases):
    """stax's parameter list for `network` from W_1 … W_{L+1} (input × output) and β_1 … β_{L+1}: (W, β) for each
    Dense layer and () for each activation (ntkdist's `SampledWeights` store them in this layout)."""
    params = []
    for W, beta in zip(weights, biases):
        params += [(W, beta), ()]
    return params[:-1]


def _empirical_fns(apply_fn):
    """The empirical NTK and NNGP of ``apply_fn``, traced over the width-1 output.

    The NTK by Jacobian contraction (neural-tangents' default): the fastest of its implementations that runs with
    the JAX it imports with. Structured derivatives (Novak et al. 2022) fails under JAX 0.4.26 (``jax.interpreters.ad``
    has no ``source_info_util``), and NTK-vector products took 118 s against 33 s (N = 2000, d = 64, width 512,
    depth 3, ReLU, float32, on the development machine)."""
    import neural_tangents as nt

    ntk_fn = nt.empirical_ntk_fn(apply_fn, vmap_axes=0, implementation=nt.NtkImplementation.JACOBIAN_CONTRACTION)
    return ntk_fn, nt.empirical_nngp_fn(apply_fn)


def empirical(*paths: str) -> None:
    """The empirical NTK and NNGP of given networks (float64), for each pair INPUTS.npz OUT.npz of ``paths``:
    INPUTS.npz holds X, optionally Y, W1 … W{L+1}, b1 … b{L+1}, activation, weight_var and bias_var; OUT.npz gets
    ntk and nngp."""
    import jax

    jax.config.update("jax_enable_x64", True)
    for inputs_path, out_path in zip(paths[::2], paths[1::2]):
        _empirical_one(inputs_path, out_path)


def _empirical_one(inputs_path: str, out_path: str) -> None:
    import jax
    import numpy as np
    from neural_tangents import stax

    data = np.load(inputs_path, allow_pickle=False)
    layers = sum(1 for name in data.files if name.startswith("W"))
    weights = [jax.numpy.asarray(data[f"W{l}"]) for l in range(1, layers + 1)]
    biases = [jax.numpy.asarray(data[f"b{l}"]) for l in range(1, layers + 1)]
    _, apply_fn, _ = network(stax, str(data["activation"]), layers - 1, float(data["weight_var"]),
                             float(data["bias_var"]), [W.shape[1] for W in weights[:-1]])
    ntk_fn, nngp_fn = _empirical_fns(apply_fn)
    params = _stax_params(weights, biases)
    X = jax.numpy.asarray(data["X"])
    Y = jax.numpy.asarray(data["Y"]) if "Y" in data.files else None
    np.savez(out_path, ntk=np.asarray(ntk_fn(X, Y, params)), nngp=np.asarray(nngp_fn(X, Y, params)))


def kernels(cases_path: str, inputs_path: str, out_path: str) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from neural_tangents import stax

    with open(cases_path) as fh:
        cases = json.load(fh)
    data = np.load(inputs_path, allow_pickle=False)
    arrays = {name: jax.numpy.asarray(data[name], dtype=jax.numpy.float64) for name in data.files}
    results = {}
    for index, case in enumerate(cases):
        _, _, kernel_fn = network(stax, case["activation"], case["depth"], case["weight_var"], case["bias_var"])
        x_name, y_name = case.get("inputs", ["X", "Y" if "Y" in arrays else None])
        value = kernel_fn(arrays[x_name], arrays[y_name] if y_name else None, case["kind"])
        results[f"case{index}"] = np.asarray(value, dtype=np.float64)
    np.savez(out_path, **results)


def _timed_kernel(n: int, dim: int, depth: int, activation: str, weight_var: float, bias_var: float, dtype: str,
                  kind: str = "ntk"):
    """A function that runs the jitted NTK (or NNGP) of the full N × N Gram once and returns its wall time (warmed
    up)."""
    import jax
    import numpy as np
    from neural_tangents import stax

    _, _, kernel_fn = network(stax, activation, depth, weight_var, bias_var)
    kernel_fn = jax.jit(kernel_fn, static_argnames="get")
    X = jax.numpy.asarray(np.random.default_rng(0).standard_normal((n, dim)), dtype=dtype)

    def once() -> tuple[float, float]:
        """(wall seconds, CPU seconds of the process over all its threads)."""
        start, cpu = time.perf_counter(), time.process_time()
        kernel_fn(X, None, kind).block_until_ready()
        return time.perf_counter() - start, time.process_time() - cpu

    once()  # compilation
    return once


def _timed_empirical(n: int, dim: int, depth: int, activation: str, weight_var: float, bias_var: float, width: int,
                     dtype: str):
    """A function that runs the jitted empirical NTK of one network drawn by stax's init_fn on the full N × N Gram
    once and returns (wall seconds, CPU seconds) (warmed up)."""
    import jax
    import numpy as np
    from neural_tangents import stax

    init_fn, apply_fn, _ = network(stax, activation, depth, weight_var, bias_var, [width] * depth)
    _, params = init_fn(jax.random.PRNGKey(0), (-1, dim))
    params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)
    ntk_fn = jax.jit(_empirical_fns(apply_fn)[0])
    X = jax.numpy.asarray(np.random.default_rng(0).standard_normal((n, dim)), dtype=dtype)

    def once() -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        ntk_fn(X, None, params).block_until_ready()
        return time.perf_counter() - start, time.process_time() - cpu

    once()  # compilation
    return once


def speed(n: int, dim: int, depth: int, repeat: int, dtype: str = "float32", activation: str = "relu") -> None:
    import jax

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    once = _timed_kernel(n, dim, depth, activation, 2.0, 0.0, dtype)
    times = [once()[0] for _ in range(repeat)]
    median = statistics.median(times)
    print(json.dumps({"n": n, "dim": dim, "depth": depth, "activation": activation, "dtype": dtype,
                      "median_s": median, "times": times, "entries_per_s": n * n / median, "jax": jax.__version__}))


def serve(dtype: str = "float32") -> None:
    import jax

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    kernels_by_case = {}
    print(json.dumps({"ready": True, "jax": jax.__version__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        key = tuple(request[k] for k in ("n", "dim", "depth", "activation", "weight_var", "bias_var"))
        width = request.get("width")  # given: the empirical NTK of one network of this width
        kind = request.get("kind", "ntk")
        if (key, width, kind) not in kernels_by_case:
            kernels_by_case[key, width, kind] = (_timed_kernel(*key, dtype, kind) if width is None else
                                                 _timed_empirical(*key, width, dtype))
        wall, cpu = kernels_by_case[key, width, kind]()
        print(json.dumps({"seconds": wall, "cpu_seconds": cpu}), flush=True)


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "kernels":
        kernels(*rest)
    elif command == "speed":
        speed(*(int(v) for v in rest[:4]), *rest[4:])
    elif command == "empirical":
        empirical(*rest)
    elif command == "serve":
        serve(*rest)
    else:
        raise SystemExit(f"unknown command {command!r}")
