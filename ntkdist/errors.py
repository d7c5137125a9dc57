"""Errors that are the user's to fix.

A `UserError` carries one paragraph naming the offending field and the fix. The command line prints it without a
traceback and exits with status 2; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: the message names the field and says how to fix it."""


class ConfigError(UserError):
    """The run configuration is invalid (unknown key, wrong type, impossible value)."""


class DataError(UserError):
    """The data set is invalid (NaN/inf, wrong shape, dimension mismatch)."""


class StoreError(UserError):
    """A run store is missing, incomplete, corrupt, or belongs to a different configuration."""


class ClusterError(UserError):
    """The Ray cluster cannot run the work: no worker is left that can run it, or a task keeps losing its worker."""


class StaleLeaseWarning(UserWarning):
    """A writer took over the lease of a dead or silent one (the message names it and why its lease was stale).

    The same text is logged on the ``ntkdist.store`` logger, which is what a run's log and Prefect's UI show; the
    command line therefore ignores this warning, so that it prints the take-over once.
    """
