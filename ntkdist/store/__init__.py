"""The store: the zarr layout of a run, its manifest and integrity checks, the mapping of solver and theory results to
the spectrum dataset, and readers for downstream users.

Never imported by the math rooms (kernels, theory, linalg).
"""

from .run_store import FORMAT_VERSION, KERNEL_ARITHMETIC, STAGES, BlockRecord, RunStore
from .chunk_io import block_checksum, block_sum_squares, sum_squares_matches
from .lease import Lease
from .location import is_remote, store_exists
from .readers import iter_gram_blocks, open_gram, open_inputs, open_spectrum
from .operator import StoredGramOperator
from .spectrum import export_netcdf, spectrum_dataset
from .theory_variables import theory_dataset, theory_variables
from .catalog import RunSummary, export_npy, find_runs, summarize_run

__all__ = ["BlockRecord", "FORMAT_VERSION", "KERNEL_ARITHMETIC", "Lease", "RunStore", "RunSummary", "STAGES",
           "StoredGramOperator", "block_checksum", "block_sum_squares", "export_netcdf", "export_npy", "find_runs",
           "is_remote", "iter_gram_blocks", "open_gram", "open_inputs", "open_spectrum", "spectrum_dataset", "store_exists",
           "sum_squares_matches", "summarize_run", "theory_dataset", "theory_variables"]
