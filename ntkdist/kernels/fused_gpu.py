"""The fused GPU path: CuPy, one CUDA thread per pair, the whole depth recursion in registers.

The input products are float64 cuBLAS GEMMs (IEEE double on every GPU; float32 inputs are promoted by
`gram.validate_inputs`, so no product can fall to TF32). The per-pair recursion is ``fused_gpu.cu``: it reads the
per-point layer tables of `analytic.layer_tables` and the constants of the Python definitions
(`cuda_source`), and where it restates a formula in CUDA a comment names the Python definition it mirrors. Its
arithmetic is checked on the CPU by compiling the same source as C++ (tests/kernels/test_fused_gpu_source.py,
tests/kernels/test_engines_agree.py), and on a GPU by the ``gpu``-marked tests.

Large Gram matrices are computed in square panels of ``GPU_PANEL`` rows so that the float64 product of a panel,
not of the whole matrix, is what lives on the device besides the output. Symmetric Gram matrices compute the
upper panels and mirror them; inside a diagonal panel each pair is computed with the lower index as the row.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

from .activations import ABReLU, Erf
from .analytic import layer_tables
from .gram import unit_rows

#: Rows (and columns) of one panel: its float64 product is 512 MiB.
GPU_PANEL = 8192
_SOURCE = Path(__file__).with_name("fused_gpu.cu")
_OUT_TYPES = {"float64": "double", "float32": "float"}


def supports(activation) -> bool:
    return type(activation) in (ABReLU, Erf)


def cuda_source(out_type: str = "double") -> str:
    """The text of ``fused_gpu.cu`` with what it takes from the Python definitions prepended: the output type
    (``OUT_T``), the arcsine polynomial's coefficients (``NTK_ASIN_P``, highest degree first) and the erf layer's
    least scale (``NTK_ERF_TINY_SCALE``), both from `fused_cpu`, printed with ``repr`` so they are the same
    float64 numbers."""
    from .fused_cpu import _ASIN_P, _ERF_TINY_SCALE

    coefficients = ", ".join(repr(float(c)) for c in reversed(_ASIN_P))
    return (f"#define OUT_T {out_type}\n#define NTK_ASIN_P {coefficients}\n"
            f"#define NTK_ERF_TINY_SCALE {float(_ERF_TINY_SCALE)!r}\n" + _SOURCE.read_text())


@functools.lru_cache(maxsize=None)
def _kernel(dtype: str):
    import cupy

    # --fmad=false: no contraction into FMAs, so the GPU rounds like the CPU engines (the tests compare them).
    return cupy.RawKernel(cuda_source(_OUT_TYPES[dtype]), "ntk_fused_gram", options=("--std=c++14", "--fmad=false"))


def activation_parameters(activation):
    from .fused_cpu import activation_parameters as cpu_parameters

    return cpu_parameters(activation)


def gram(X, Y, *, net, kind: str, dtype: str, sq_x, sq_y, near: float):
    """The (n, m) kernel of CuPy inputs (Y None: symmetric), in ``dtype``."""
    import cupy

    symmetric = Y is None
    if symmetric:
        Y, sq_y = X, sq_x
    n, m = X.shape[0], Y.shape[0]
    dim = X.shape[1]
    out = cupy.empty((n, m), dtype=dtype)
    act_kind, ab, alpha2, beta2, _ = activation_parameters(net.activation)
    w, b = float(net.weight_var), float(net.bias_var)
    tables_x = layer_tables(sq_x, dim, net.depth, w, b, net.activation)
    tables_y = tables_x if symmetric else layer_tables(sq_y, dim, net.depth, w, b, net.activation)

    x_hat = cupy.ascontiguousarray(unit_rows(X, sq_x))
    y_hat = x_hat if symmetric else cupy.ascontiguousarray(unit_rows(Y, sq_y))
    kernel = _kernel(dtype)
    block = (32, 8, 1)
    for i0 in range(0, n, GPU_PANEL):
        i1 = min(i0 + GPU_PANEL, n)
        for j0 in range(i0 if symmetric else 0, m, GPU_PANEL):
            j1 = min(j0 + GPU_PANEL, m)
            inner = cupy.ascontiguousarray(X[i0:i1] @ Y[j0:j1].T)
            rows = [cupy.ascontiguousarray(t[:, i0:i1]) for t in tables_x]
            cols = [cupy.ascontiguousarray(t[:, j0:j1]) for t in tables_y]
            target = out[i0:i1, j0:j1]
            grid = (math.ceil((j1 - j0) / block[0]), math.ceil((i1 - i0) / block[1]), 1)
            kernel(grid, block, (
                inner, cupy.int64(inner.shape[1]), x_hat[i0:i1], y_hat[j0:j1], cupy.int32(dim),
                cupy.ascontiguousarray(sq_x[i0:i1]), cupy.ascontiguousarray(sq_y[j0:j1]),
                *rows, cupy.int32(i1 - i0), *cols, cupy.int32(j1 - j0),
                cupy.int32(net.depth), cupy.float64(w), cupy.float64(b), cupy.int32(act_kind), cupy.float64(ab),
                cupy.float64(alpha2), cupy.float64(beta2), cupy.float64(near), cupy.int32(kind == "ntk"),
                cupy.int32(symmetric and i0 == j0), target, cupy.int64(m),
            ))
            if symmetric and j0 != i0:
                out[j0:j1, i0:i1] = target.T
    return out
