"""The CUDA source of the GPU engine, compiled for the host: its per-pair arithmetic checked without a GPU.

``fused_gpu.cu`` is written to compile both with NVRTC (CuPy) and with a host C++ compiler; the host build runs
the same ``ntk_fused_pair`` over the whole grid, which this test compares with the NumPy engine.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import ntkdist
from ntkdist.kernels import MLP, fused_gpu
from ntkdist.kernels.gram import NEAR_PARALLEL, row_sq_norms

from ..helpers import assert_kernel_close

SOURCE = Path(fused_gpu.__file__).with_name("fused_gpu.cu")


@pytest.fixture(scope="module")
def host_library(tmp_path_factory):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no host C++ compiler to build the CUDA source for the CPU")
    target = tmp_path_factory.mktemp("cu") / "fused_gpu_host.so"
    subprocess.run([compiler, "-O2", "-std=c++14", "-shared", "-fPIC", "-x", "c++", str(SOURCE), "-o", str(target)],
                   check=True, capture_output=True)
    library = ctypes.CDLL(str(target))
    library.ntk_fused_gram_host.restype = None
    return library


def host_gram(library, X, Y, net, kind):
    symmetric = Y is None
    Y = X if symmetric else Y
    sq_x, sq_y = row_sq_norms(X), row_sq_norms(Y)
    dim = X.shape[1]
    tables_x = fused_gpu.layer_tables(sq_x, dim, net.depth, net.weight_var, net.bias_var, net.activation)
    tables_y = fused_gpu.layer_tables(sq_y, dim, net.depth, net.weight_var, net.bias_var, net.activation)
    x_hat = X / np.sqrt(np.where(sq_x > 0, sq_x, 1.0))[:, None]
    y_hat = Y / np.sqrt(np.where(sq_y > 0, sq_y, 1.0))[:, None]
    inner = np.ascontiguousarray(X @ Y.T)
    act_kind, ab, alpha2, beta2, _ = fused_gpu.activation_parameters(net.activation)
    n, m = len(X), len(Y)
    out = np.empty((n, m))
    arrays = [inner, x_hat, y_hat, sq_x, sq_y, *tables_x, *tables_y, out]
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


@pytest.mark.parametrize("activation", ["relu", "leaky_relu(0.1)", "abs", "erf"])
@pytest.mark.parametrize("bias_var", [0.0, 0.3])
def test_cuda_source_arithmetic_matches_the_numpy_engine(host_library, activation, bias_var):
    rng = np.random.default_rng(21)
    X = rng.standard_normal((150, 6)) * rng.uniform(0.05, 6.0, size=(150, 1))
    X[2] = 0.0
    X[4] = 3.0 * X[5]
    X[6] = -X[7]
    X[8] = X[9] + 1e-11
    for depth in (1, 3):
        net = MLP(depth=depth, activation=activation, weight_var=1.6, bias_var=bias_var)
        for kind in ("ntk", "nngp"):
            got = host_gram(host_library, X, None, net, kind)
            assert np.array_equal(got, got.T)
            ref = ntkdist.gram_block(X, net=net, kind=kind, engine="array")
            assert_kernel_close(got, ref, np.sqrt(np.outer(np.diag(ref), np.diag(ref))), rtol=1e-13)
            rect = host_gram(host_library, X[:40], X[30:], net, kind)
            assert_kernel_close(rect, ref[:40, 30:], np.sqrt(np.outer(np.diag(ref)[:40], np.diag(ref)[30:])),
                                rtol=1e-13)
