"""Helpers shared by several test modules (import them from here, never from another test module)."""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

import mpmath as mp
import numpy as np

from ntkdist.kernels.activations import ABReLU, Activation, PairMoments, get_activation
from ntkdist.store import RunStore


# ============================================================================ kernels: references and comparisons
def _mp_dot(a, b):
    return mp.fsum(mp.mpf(float(p)) * mp.mpf(float(q)) for p, q in zip(a, b))


def mp_kernels(x, y, *, depth, activation, w, b, dps: int = 40):
    """(NNGP, NTK) of the stax network at the pair (x, y): the closed-form recursion in ``dps`` digits (40).

    ``activation``: the ABReLU family (``"relu"``, ``"leaky_relu(0.1)"``, ``"abs"``, ``"abrelu(a, b)"`` or an
    `ABReLU`), from the arc-cosine kernel of degree 1 (Cho & Saul 2009) through φ = αx + β|x|; or ``"erf"``,
    Williams (1997). The inner products of the float64 inputs are exact at this precision.
    """
    with mp.workdps(dps):
        return _mp_kernels(x, y, depth=depth, activation=get_activation(activation), w=w, b=b)


def _mp_kernels(x, y, *, depth, activation, w, b):
    d = len(x)
    w, b = mp.mpf(w), mp.mpf(b)
    s_xy = w * _mp_dot(x, y) / d + b
    s_xx = w * _mp_dot(x, x) / d + b
    s_yy = w * _mp_dot(y, y) / d + b
    theta = s_xy
    for _ in range(depth):
        if isinstance(activation, ABReLU):
            slope_a, slope_b = mp.mpf(activation.a), mp.mpf(activation.b)
            beta_term = 2 * ((slope_b - slope_a) / 2) ** 2 / mp.pi
            scale = mp.sqrt(s_xx * s_yy)
            c = s_xy / scale if scale != 0 else mp.mpf(0)
            c = max(min(c, mp.mpf(1)), mp.mpf(-1))
            angle = mp.acos(c)
            e_xy = scale * (slope_a * slope_b * c + beta_term * (mp.sin(angle) + (mp.pi - angle) * c))
            de_xy = slope_a * slope_b + beta_term * (mp.pi - angle)
            second = (slope_a ** 2 + slope_b ** 2) / 2
            e_xx, e_yy = s_xx * second, s_yy * second
        elif activation.name == "erf":
            e_xy = 2 / mp.pi * mp.asin(2 * s_xy / mp.sqrt((1 + 2 * s_xx) * (1 + 2 * s_yy)))
            de_xy = 4 / mp.pi / mp.sqrt((1 + 2 * s_xx) * (1 + 2 * s_yy) - 4 * s_xy**2)
            e_xx = 2 / mp.pi * mp.asin(2 * s_xx / (1 + 2 * s_xx))
            e_yy = 2 / mp.pi * mp.asin(2 * s_yy / (1 + 2 * s_yy))
        else:
            raise ValueError(f"activation: mp_kernels has no reference for {activation.describe()}")
        s_xy, s_xx, s_yy = w * e_xy + b, w * e_xx + b, w * e_yy + b
        theta = s_xy + w * de_xy * theta
    return float(s_xy), float(theta)


def build_cuda_host_library(directory):
    """``fused_gpu.cu`` (the text of `fused_gpu.cuda_source`) compiled for the host as a ctypes library, or None
    when there is no C++ compiler. The host build runs the same ``ntk_fused_pair`` over the whole grid."""
    import ctypes
    import shutil
    import subprocess
    from pathlib import Path

    from ntkdist.kernels import fused_gpu

    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        return None
    source = Path(directory) / "fused_gpu_host.cu"
    source.write_text(fused_gpu.cuda_source("double"))
    target = Path(directory) / "fused_gpu_host.so"
    subprocess.run([compiler, "-O2", "-std=c++14", "-shared", "-fPIC", "-x", "c++", str(source), "-o", str(target)],
                   check=True, capture_output=True)
    library = ctypes.CDLL(str(target))
    library.ntk_fused_gram_host.restype = None
    return library


def cuda_host_gram(library, X, Y, net, kind):
    """The (n, m) kernel of the host-compiled CUDA source (Y None: symmetric), fed as `fused_gpu.gram` feeds the
    GPU: the same layer tables, unit rows and constants."""
    import ctypes

    from ntkdist.kernels import fused_gpu
    from ntkdist.kernels.analytic import layer_tables
    from ntkdist.kernels.gram import NEAR_PARALLEL, row_sq_norms, unit_rows

    symmetric = Y is None
    Y = X if symmetric else Y
    sq_x, sq_y = row_sq_norms(X), row_sq_norms(Y)
    dim = X.shape[1]
    tables_x = layer_tables(sq_x, dim, net.depth, net.weight_var, net.bias_var, net.activation)
    tables_y = layer_tables(sq_y, dim, net.depth, net.weight_var, net.bias_var, net.activation)
    inner = np.ascontiguousarray(X @ Y.T)
    act_kind, ab, alpha2, beta2, _ = fused_gpu.activation_parameters(net.activation)
    n, m = len(X), len(Y)
    out = np.empty((n, m))
    arrays = [inner, unit_rows(X, sq_x), unit_rows(Y, sq_y), sq_x, sq_y, *tables_x, *tables_y, out]
    arrays = [np.ascontiguousarray(a, dtype=np.float64) for a in arrays]
    ptr = [a.ctypes.data_as(ctypes.c_void_p) for a in arrays]
    library.ntk_fused_gram_host(
        ptr[0], ctypes.c_longlong(m), ptr[1], ptr[2], ctypes.c_int(dim), ptr[3], ptr[4],
        *ptr[5:9], ctypes.c_int(n), *ptr[9:13], ctypes.c_int(m),
        ctypes.c_int(net.depth), ctypes.c_double(net.weight_var), ctypes.c_double(net.bias_var),
        ctypes.c_int(act_kind), ctypes.c_double(ab), ctypes.c_double(alpha2), ctypes.c_double(beta2),
        ctypes.c_double(NEAR_PARALLEL), ctypes.c_int(kind == "ntk"), ctypes.c_int(symmetric),
        ptr[13], ctypes.c_longlong(m))
    return arrays[13]


def tricky_inputs(rng, d=5):
    """Mixed norms over four orders of magnitude, a zero row, a parallel pair, and a pair 1e-9 apart."""
    X = rng.standard_normal((9, d)) * rng.uniform(0.01, 30.0, size=(9, 1))
    X[2] = 0.0
    X[4] = 3.7 * X[5]
    X[6] = X[7] + 1e-9 * rng.standard_normal(d)
    X[8] = -0.2 * X[0]
    return X


def assert_kernel_close(got, ref, scale, *, rtol=1e-12, sizable=1e-2):
    """Entrywise: within ``rtol`` of √(K_ii K_jj) everywhere, and within ``rtol`` of the entry itself wherever
    the entry is not a cancellation far below its scale (``|K_ij| > sizable·√(K_ii K_jj)``).

    An entry 1e-16 of its scale (x against −0.2x, antiparallel only up to the rounding of the inputs, or a
    difference of two nearly equal terms of the recursion) cannot be relatively accurate in any float64
    arithmetic; its error must still be at the rounding of its scale, which is what eigenvalues feel.
    """
    error = np.abs(got - ref)
    assert np.all(error <= rtol * scale), error.max()
    big = np.abs(ref) > sizable * scale
    assert np.all(error[big] <= rtol * np.abs(ref)[big]), (error[big] / np.abs(ref)[big]).max()


# ================================================================================= theory: activations and data
class Quadratic(Activation):
    """φ(x) = c0 + c1·x + c2·x², with Isserlis' closed forms (a test-local polynomial activation)."""

    polynomial_degree = 2

    def __init__(self, c0=0.0, c1=0.0, c2=1.0):
        self.c = (float(c0), float(c1), float(c2))
        self.name = f"quadratic{self.c}"

    def describe(self):
        return self.name

    def __call__(self, x):
        c0, c1, c2 = self.c
        return c0 + c1 * x + c2 * x * x

    def derivative(self, x):
        return self.c[1] + 2.0 * self.c[2] * x

    def second_moment(self, q):
        c0, c1, c2 = self.c
        return c0 * c0 + (2.0 * c0 * c2 + c1 * c1) * q + 3.0 * c2 * c2 * q * q

    def derivative_second_moment(self, q):
        return self.c[1] ** 2 + 4.0 * self.c[2] ** 2 * q

    def pair_moments(self, qx, qy, c, e, f):
        c0, c1, c2 = self.c
        s = c * np.sqrt(qx * qy)
        cov = c0 * c0 + c0 * c2 * (qx + qy) + c1 * c1 * s + c2 * c2 * (qx * qy + 2.0 * s * s)
        root = np.sqrt(self.second_moment(qx) * self.second_moment(qy))
        return PairMoments(cov, c1 * c1 + 4.0 * c2 * c2 * s, np.maximum(root - cov, 0.0),
                           np.maximum(root + cov, 0.0))


def sphere(n, d, seed, radius=1.0):
    g = np.random.default_rng(seed).standard_normal((n, d))
    return radius * g / np.linalg.norm(g, axis=1, keepdims=True)


def gaussian(n, d, seed):
    return np.random.default_rng(seed).standard_normal((n, d))


# ====================================================================== theory against a computed spectrum (table)
def undecidable(row: dict) -> str | None:
    """Why a row of a comparison table (`ntkdist.theory.compare`) cannot be decided, or None when it must be.

    A sphere-cluster row is an estimate, not a bound; a bound on a quantity the run did not compute (λ_k beyond
    the computed k, λ_min with smallest = 0) has nothing to be held against; the positivity theorem may give no
    verdict ("not_guaranteed"), or the computed λ_min may lie within its error of rounding.
    """
    if row["side"] == "estimate":
        return "an estimate (a cluster mean), not a bound"
    computed = row.get("computed")
    if computed is None or (isinstance(computed, float) and math.isnan(computed)):
        return "nothing computed to hold it against"
    if row["prediction"] == "positivity" and row["theory"] == "not_guaranteed":
        return "the theorem gives no verdict"
    return None


def assert_every_bound_holds(table: list[dict], *, inconclusive: tuple[str, ...] = ()) -> None:
    """Every decidable row of the table holds (``holds is True``); every other row says so (``holds is None``).

    ``inconclusive`` names predictions allowed to be undecided although computed (e.g. "positivity" when λ_min
    is within its certified error of rounding): they must be True or None, never False.
    """
    assert table, "an empty comparison table"
    for row in table:
        reason = undecidable(row)
        if reason is not None:
            assert row["holds"] is None, (reason, row)
        elif row["prediction"] in inconclusive:
            assert row["holds"] in (True, None), row
        else:
            assert row["holds"] is True, row


# ============================================================================ run stores and object storage
#: The dummy secret key the loopback S3 server gets (`s3_server`); no object of a store may contain it.
S3_TEST_SECRET = "ntkdist-test-secret-never-stored"


def assert_holds_no_secret(location: str, endpoint: str) -> int:
    """Read back every object of a store in the loopback S3 server and check none contains the credentials;
    returns how many objects were read."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    keys = fs.find(location)
    for key in keys:
        body = fs.cat_file(key)
        assert S3_TEST_SECRET.encode() not in body and os.environ["AWS_ACCESS_KEY_ID"].encode() not in body, key
    return len(keys)


def make_store(path, n=10, dim=3, block=4, dtype="float64"):
    return RunStore.create(path, n=n, dim=dim, block=block, dtype=dtype, config={"run": {"name": "x"}},
                           fingerprint="f" * 64, versions={"numpy": np.__version__})


def symmetric(n, seed=0):
    a = np.random.default_rng(seed).standard_normal((n, n))
    return a + a.T


def write_all(store, matrix):
    for i, j in store.upper_blocks():
        store.record_blocks([store.write_block(i, j, matrix[store.block_slice(i), store.block_slice(j)])])



def start_moto_server(extra_env: dict | None = None):
    """Start moto's S3-compatible server on a free loopback port; returns (process, endpoint URL) once it answers."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, **(extra_env or {})})
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return process, endpoint
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"moto_server did not start on {endpoint}")
            time.sleep(0.1)



# ============================================================================ runs in subprocesses
def write_cpu_run_config(tmp_path: Path, name: str, *, n: int, block: int, depth: int = 2) -> tuple[Path, Path]:
    """A run configuration on the unit sphere in R³ (a ReLU network, one CPU worker) and the store it names, both
    under ``tmp_path``; for tests that start `ntkdist run` as a user would."""
    store = tmp_path / f"{name}.zarr"
    config = tmp_path / f"{name}.toml"
    config.write_text(textwrap.dedent(f"""
        [run]
        name = "{name}"
        store = "{store}"
        [data]
        source = "sphere"
        n = {n}
        dim = 3
        [network]
        depth = {depth}
        [kernel]
        block = {block}
        [cluster]
        workers = 1
        device = "cpu"
    """))
    return config, store


def descendants(pid: int) -> dict[int, str]:
    """{pid: command name} of every process below ``pid``, from /proc (Linux; psutil is not among the test
    dependencies)."""
    parents: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        parents[int(entry.name)] = (int(stat[stat.rindex(")") + 2:].split()[1]), name)
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, name) in parents.items():
            if ppid == parent and child not in found:
                found[child] = name
                frontier.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"
