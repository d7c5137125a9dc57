"""Linear algebra: the operator protocol, the eigensolvers and their certified error bounds.

Never imports ray, prefect or zarr. Solvers are programs that ask for products (`ntkdist.linalg.passes`), so
several of them can share each pass over K.
"""

from .certify import certified_errors, kato_temple_bound, residual_bound, rounding_term
from .exact import exact_eigenvalues
from .operator import (DenseOperator, SymmetricOperator, as_linear_operator, float32_storage_error,
                       float32_storage_error_from_squares)
from .passes import (Columns, DensityResult, Diagonal, EigenResult, PassBudgetExhausted, PassLog, Product,
                     run_program, run_programs)
from .density import density_from_eigenvalues, slq_program, spectral_density
from .lobpcg import lobpcg_program, smallest_eigenpairs
from .nystrom import NystromPreconditioner, nystrom_preconditioner, nystrom_program, nystrom_spectrum
from .summaries import trace

__all__ = [
    "NystromPreconditioner", "density_from_eigenvalues", "lobpcg_program", "nystrom_preconditioner",
    "nystrom_program", "nystrom_spectrum", "slq_program", "smallest_eigenpairs", "spectral_density", "trace",
    "Columns", "DenseOperator", "DensityResult", "Diagonal", "EigenResult", "PassBudgetExhausted", "PassLog",
    "Product", "SymmetricOperator", "as_linear_operator", "certified_errors", "exact_eigenvalues",
    "float32_storage_error", "float32_storage_error_from_squares", "kato_temple_bound", "residual_bound",
    "rounding_term", "run_program", "run_programs",
]
