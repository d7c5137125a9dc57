"""The CUDA source of the GPU engine, compiled for the host: its per-pair arithmetic checked without a GPU.

``fused_gpu.cu`` is written to compile both with NVRTC (CuPy) and with a host C++ compiler; the host build runs
the same ``ntk_fused_pair`` over the whole grid, which this test compares with the NumPy engine.
"""

from __future__ import annotations

import numpy as np
import pytest

import ntkdist
from ntkdist.kernels import MLP

from ..helpers import assert_kernel_close, build_cuda_host_library, cuda_host_gram as host_gram


@pytest.fixture(scope="module")
def host_library(tmp_path_factory):
    library = build_cuda_host_library(tmp_path_factory.mktemp("cu"))
    if library is None:
        pytest.skip("no host C++ compiler to build the CUDA source for the CPU")
    return library


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


def test_cuda_source_compiles_for_the_device(tmp_path):
    """The device branch (``__CUDACC_RTC__``, what NVRTC sees) compiles to PTX with the coefficients inlined:
    no local-memory array for the arcsine polynomial. Needs nvcc, not a GPU."""
    import shutil
    import subprocess

    from ntkdist.kernels import fused_gpu

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc to compile the CUDA source for the device")
    source = tmp_path / "fused_gpu.cu"
    source.write_text("#define __CUDACC_RTC__ 1\n" + fused_gpu.cuda_source("float"))
    ptx = tmp_path / "fused_gpu.ptx"
    subprocess.run([nvcc, "-std=c++14", "--fmad=false", "-arch=sm_80", "-ptx", str(source), "-o", str(ptx)],
                   check=True, capture_output=True, timeout=300)
    text = ptx.read_text()
    assert ".entry ntk_fused_gram" in text
    assert ".local" not in text
