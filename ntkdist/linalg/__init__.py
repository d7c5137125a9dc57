"""Linear algebra: the operator protocol and the eigensolvers. Never imports ray, prefect or zarr."""

from .exact import exact_eigenvalues
from .operator import DenseOperator, SymmetricOperator

__all__ = ["DenseOperator", "SymmetricOperator", "exact_eigenvalues"]
