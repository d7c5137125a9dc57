"""The array module of an array: NumPy, or CuPy when the array lives on a GPU.

Kernels are written once against the NumPy API and run on whichever module holds their input, so nothing in
`ntkdist.kernels` may call ``numpy`` directly on data: it asks ``array_module(x)`` instead.
"""

from __future__ import annotations

import numpy as np


def array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy

            return cupy
    return np


def to_numpy(a) -> np.ndarray:
    """Bring an array to host memory (a no-op for NumPy arrays)."""
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)
