"""ntkdist: NTK and NNGP Gram matrices of deep fully-connected networks at scale, their spectra, and theory.

The top level re-exports the math a user reaches for first (``ntkdist.activations`` is
`ntkdist.kernels.activations`, the home of the activation constructors) and the readers of a stored Gram matrix
(`open_gram`, `iter_gram_blocks` from `ntkdist.store`); the workflow lives in `ntkdist.config`,
`ntkdist.cluster`, `ntkdist.store` and the Prefect flows in ``flows/``.
"""

from importlib.metadata import PackageNotFoundError, version as _version

from .kernels import MLP, activations, empirical_ntk, gram_block, nngp, ntk
from .store import iter_gram_blocks, open_gram

try:
    __version__ = _version("ntkdist")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["MLP", "activations", "empirical_ntk", "gram_block", "iter_gram_blocks", "nngp", "ntk", "open_gram",
           "__version__"]
