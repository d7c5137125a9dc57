"""The writer's lease of a run store: ``<store>/lease.json`` names the one process allowed to write.

A writer takes the lease before it writes and gives it back when done; a daemon thread renews its ``heartbeat``
meanwhile. A second writer is refused with a `StoreError` naming the holder (user@host, pid, since when). A lease
is stale, and is taken over with a warning, when its heartbeat is older than ``stale_after`` seconds, or when it
was taken on this host by a process that no longer exists (a killed run is resumed at once on the same machine).
Readers never look at it.

Taking the lease is an exclusive create: a hard link of the written record on a local disk, a conditional put
(``If-None-Match: *``) on object storage, and on both the lease is read back and its random token compared, so of
two writers that race only one goes on. The race that remains: two writers that both find the same stale lease
both delete it, and the second delete can remove the first writer's fresh lease just before the second creates
its own; the first writer's next heartbeat then finds a token not its own and logs an error. Both would have had
to wait out the same stale lease within the same fraction of a second.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import json
import logging
import os
import secrets
import socket
import threading
import warnings
from pathlib import Path

from ..errors import StaleLeaseWarning, StoreError
from .location import LEASE, is_remote, normalize_location, object_filesystem, storage_errors

log = logging.getLogger("ntkdist.store")

#: How often the holder renews its heartbeat.
HEARTBEAT_SECONDS = 30.0
#: A lease whose heartbeat is older than this is stale (ten missed heartbeats).
STALE_AFTER_SECONDS = 300.0


class _LeaseFile:
    """Create-exclusively, overwrite, read and delete one small object, locally or in object storage."""

    def __init__(self, location: str):
        self.location = location
        self.key = f"{location}/{LEASE}"
        self.made_directory = False

    def create(self, data: bytes) -> bool:
        """Write ``data`` if there is no lease yet; False if there is one."""
        if is_remote(self.location):
            try:
                object_filesystem().pipe_file(self.key, data, mode="create")
            except FileExistsError:
                return False
            return True
        path = Path(self.key)
        if not path.parent.exists():
            path.parent.mkdir(parents=True)
            self.made_directory = True  # removed again with the lease if the writer leaves nothing in it
        partial = Path(f"{self.key}.{secrets.token_hex(4)}.partial")
        partial.write_bytes(data)
        try:
            os.link(partial, path)  # exclusive and whole: fails if a lease exists, never shows a half-written one
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: an exclusive create, written just after
            return self._create_exclusive(path, data)
        finally:
            partial.unlink()
        return True

    @staticmethod
    def _create_exclusive(path: Path, data: bytes) -> bool:
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        return True

    def overwrite(self, data: bytes) -> None:
        if is_remote(self.location):
            object_filesystem().pipe_file(self.key, data)
            return
        partial = Path(f"{self.key}.{secrets.token_hex(4)}.partial")
        partial.write_bytes(data)
        partial.replace(self.key)  # readers see the old or the new record, never half of one

    def read(self) -> dict | None:
        try:
            raw = (object_filesystem().cat_file(self.key) if is_remote(self.location)
                   else Path(self.key).read_bytes())
        except FileNotFoundError:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return {}  # torn or foreign content: treated as stale below

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if is_remote(self.location):
                object_filesystem().rm_file(self.key)
            else:
                Path(self.key).unlink()
        if self.made_directory:
            with contextlib.suppress(OSError):  # not empty: the writer created the store there
                Path(self.location).rmdir()


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a name
        return f"uid {os.getuid()}"


def _describe(holder: dict) -> str:
    return (f"{holder.get('user', '?')}@{holder.get('host', '?')} pid {holder.get('pid', '?')}, "
            f"since {holder.get('started', '?')}, last heartbeat {holder.get('heartbeat', '?')}")


def _pid_is_gone(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, TypeError, ValueError, OverflowError):
        return False  # alive under another user, or not a pid we can judge
    return False


def stale_reason(holder: dict, stale_after: float) -> str | None:
    """Why a lease record is stale, or None while its holder counts as alive."""
    try:
        beat = _dt.datetime.fromisoformat(holder["heartbeat"])
    except (KeyError, TypeError, ValueError):
        return "it is unreadable"
    age = (_now() - beat).total_seconds()
    if age > stale_after:
        return f"its last heartbeat is {age:.0f} s old (stale after {stale_after:.0f} s)"
    if holder.get("host") == socket.gethostname() and _pid_is_gone(holder.get("pid")):
        return f"its process {holder.get('pid')} on this host no longer exists"
    return None


class Lease:
    """A held lease: renews its heartbeat from a daemon thread until `release`."""

    def __init__(self, location: str, *, heartbeat_seconds: float = HEARTBEAT_SECONDS,
                 stale_after: float = STALE_AFTER_SECONDS):
        self.location = location = normalize_location(location)
        self._file = _LeaseFile(location)
        self._heartbeat_seconds = heartbeat_seconds
        self._stale_after = stale_after
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        started = _now().isoformat(timespec="seconds")
        self.record = {"user": _user(), "host": socket.gethostname(), "pid": os.getpid(),
                       "started": started, "heartbeat": started, "token": secrets.token_hex(16)}

    def acquire(self) -> "Lease":
        """Take the lease, taking over a stale one with a warning.

        Raises
        ------
        StoreError
            If another live writer holds it (the message names it and how to proceed).
        """
        with storage_errors(self.location):
            if not self._file.create(self._encoded()):
                holder = self._file.read() or {}
                reason = stale_reason(holder, self._stale_after)
                if reason is None:
                    raise StoreError(
                        f"{self.location}: another writer holds the store's lease ({_describe(holder)}); wait for "
                        f"it to finish, stop it, or, if it is dead on another host, delete {LEASE} from the store "
                        f"(a lease is stale after {self._stale_after:.0f} s without a heartbeat)")
                message = f"{self.location}: taking over the lease of {_describe(holder)}: {reason}"
                log.warning("%s", message)
                warnings.warn(message, StaleLeaseWarning, stacklevel=3)
                self._file.delete()
                if not self._file.create(self._encoded()):
                    raise StoreError(f"{self.location}: another writer took the stale lease first "
                                     f"({_describe(self._file.read() or {})}); wait for it to finish")
            self._check_still_held()
        self._thread = threading.Thread(target=self._beat, name=f"ntkdist-lease-{self.location}", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still this writer's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = self._file.read()
        if holder is not None and holder.get("token") == self.record["token"]:
            self._file.delete()

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    def _encoded(self) -> bytes:
        return json.dumps(self.record, indent=1).encode()

    def _check_still_held(self) -> None:
        holder = self._file.read() or {}
        if holder.get("token") != self.record["token"]:
            raise StoreError(f"{self.location}: another writer took the lease at the same moment "
                             f"({_describe(holder)}); wait for it to finish")

    def _beat(self) -> None:
        while not self._stop.wait(self._heartbeat_seconds):
            try:
                if (self._file.read() or {}).get("token") != self.record["token"]:
                    log.error("%s: this writer's lease was taken over by another; stop one of the two writers",
                              self.location)
                    return
                self.record["heartbeat"] = _now().isoformat(timespec="seconds")
                self._file.overwrite(self._encoded())
            except OSError as error:  # a lost connection: try again at the next beat
                log.warning("%s: could not renew the lease (%s)", self.location, error)
