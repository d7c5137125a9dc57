"""The store: the zarr layout of a run, its manifest and integrity checks, the mapping of solver and theory results to
the spectrum dataset, and readers for downstream users.

Never imported by the math rooms (kernels, theory, linalg).
"""

from .run_store import FORMAT_VERSION, STAGES, BlockRecord, RunStore, block_checksum
from .lease import Lease
from .location import is_remote, store_exists
from .readers import iter_gram_blocks, open_gram, open_inputs, open_spectrum
from .operator import StoredGramOperator
from .spectrum import export_netcdf, spectrum_dataset
from .theory_variables import theory_dataset, theory_variables
from .catalog import RunSummary, export_npy, find_runs, summarize_run

__all__ = ["FORMAT_VERSION", "STAGES", "BlockRecord", "Lease", "RunStore", "RunSummary", "StoredGramOperator",
           "block_checksum", "export_netcdf", "export_npy", "find_runs", "summarize_run", "is_remote", "iter_gram_blocks", "open_gram", "open_inputs", "open_spectrum", "spectrum_dataset",
           "store_exists", "theory_dataset", "theory_variables"]
