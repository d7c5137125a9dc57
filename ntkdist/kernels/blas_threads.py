"""One BLAS thread inside the engines' own parallel loops, limited cheaply.

The engines run tiles on their own threads (one per CPU) and call BLAS on small fixed-shape products inside each;
a multi-threaded BLAS there spends its time waiting for its own threads. ``threadpoolctl.threadpool_limits``
limits it, but finds the loaded BLAS libraries anew on every call (walking the process's shared objects: 1.2 ms
on the development machine, the whole cost of an `ntkdist.ntk` call on 16 points). `blas_controller` finds them
once and again only after modules were imported (a new BLAS arrives with an extension module: numpy's, scipy's),
and `one_blas_thread` limits through it (13 µs).
"""

from __future__ import annotations

import sys
import threading

_LOCK = threading.Lock()
_FOUND = {"modules": -1, "controller": None}


def blas_controller():
    """threadpoolctl's controller of the BLAS libraries loaded in this process (cached; see module docstring)."""
    with _LOCK:
        if _FOUND["modules"] != len(sys.modules):
            from threadpoolctl import ThreadpoolController

            _FOUND["controller"] = ThreadpoolController().select(user_api="blas")
            _FOUND["modules"] = len(sys.modules)
        return _FOUND["controller"]


def one_blas_thread():
    """A context manager that runs its body with every loaded BLAS on one thread, restoring them after: the same
    as ``threadpool_limits(limits=1, user_api="blas")``."""
    return blas_controller().limit(limits=1)
