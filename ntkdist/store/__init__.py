"""The store: the zarr layout of a run, its manifest and integrity checks, and readers for downstream users.

Never imported by the math rooms (kernels, theory, linalg).
"""

from .run_store import FORMAT_VERSION, STAGES, RunStore, block_checksum
from .readers import open_gram, open_inputs, open_spectrum
from .operator import StoredGramOperator

__all__ = ["FORMAT_VERSION", "STAGES", "RunStore", "StoredGramOperator", "block_checksum", "open_gram", "open_inputs", "open_spectrum"]
