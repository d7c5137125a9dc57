"""Prefect flows of ntkdist: thin wrappers, each task calls one library function of `ntkdist.pipeline`."""
