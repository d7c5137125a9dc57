"""Where a run store lives: a local directory or an object-store URL (``s3://bucket/prefix/run.zarr``).

Object storage goes through zarr's own `zarr.storage.FsspecStore` over s3fs, the path that plain
``zarr.open_array("s3://…")``, ``dask.array.from_zarr`` and ``xarray.open_zarr`` take too, so ntkdist and the
readers downstream share one code path and one credential chain. Credentials and the endpoint come only from the
standard environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``,
``AWS_DEFAULT_REGION``, …) and the usual config files (``~/.aws/credentials``, ``~/.aws/config``); nothing here
writes them anywhere (see ``storage/README.md``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import zarr
from zarr.core.sync import sync

from ..errors import StoreError

#: The writer's lease object at the root of a store (`ntkdist.store.lease`).
LEASE = "lease.json"
#: URL schemes a run store may live under (local paths need none).
URL_SCHEMES = ("s3",)
_CREDENTIALS_FIX = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a server other "
                    "than AWS) in the environment, or a profile in ~/.aws/credentials")


def normalize_location(location) -> str:
    """An absolute local path, or the URL as given (without a trailing slash).

    Raises
    ------
    StoreError
        For a URL whose scheme is not one of `URL_SCHEMES`.
    """
    text = str(location)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        if scheme not in URL_SCHEMES:
            raise StoreError(f"store {text}: {scheme}:// is not supported; use a local path or an s3:// URL")
        return text.rstrip("/")
    return str(Path(text).expanduser().resolve())


def is_remote(location: str) -> bool:
    """True for an object-store URL, False for a local path."""
    return "://" in location


def _storage_options() -> dict:
    # botocore honours AWS_ENDPOINT_URL by itself; passing it on as well keys fsspec's cache of filesystems by the
    # endpoint, so a process that talks to two servers in turn never reuses the first one's client.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return {"endpoint_url": endpoint} if endpoint else {}


def object_filesystem():
    """The (cached) synchronous s3fs filesystem, for the few objects ntkdist handles outside zarr (the lease)."""
    import fsspec

    return fsspec.filesystem("s3", **_storage_options())


def zarr_store(location: str, *, read_only: bool = False) -> zarr.abc.store.Store:
    """The zarr store object for a location (a `LocalStore`, or an `FsspecStore` for a URL)."""
    if is_remote(location):
        return zarr.storage.FsspecStore.from_url(location, storage_options=_storage_options(), read_only=read_only)
    return zarr.storage.LocalStore(location, read_only=read_only)


def store_exists(location: str) -> bool:
    """Whether anything is stored at the location (a local path that exists, or any object under the URL) besides
    a writer's lease (``lease.json``: a writer takes it before it creates the store).

    Raises
    ------
    StoreError
        When the object store refuses: a missing bucket, or missing or wrong credentials.
    """
    if not is_remote(location):
        path = Path(location)
        return path.exists() and (not path.is_dir() or any(entry.name != LEASE for entry in path.iterdir()))
    with storage_errors(location):
        store = zarr_store(location, read_only=True)
        # is_empty first: it raises for a missing bucket, where a listing would just be empty.
        return not sync(store.is_empty("")) and any(entry != LEASE for entry in sync(_list_dir(store)))


async def _list_dir(store) -> list[str]:
    return [entry async for entry in store.list_dir("")]


def clear_keeping_lease(location: str) -> None:
    """Delete everything at the location except the writer's lease (how ``--overwrite`` replaces a store while
    its writer keeps holding it)."""
    if not is_remote(location):
        path = Path(location)
        for entry in path.iterdir() if path.is_dir() else ():
            if entry.name != LEASE:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        return
    with storage_errors(location):
        store = zarr_store(location)
        for entry in sync(_list_dir(store)):
            if entry != LEASE:
                sync(store.delete_dir(entry))  # a prefix: everything below it
                sync(store.delete(entry))  # an object of that name (zarr.json)


@contextlib.contextmanager
def storage_errors(location: str):
    """Turn the object store's refusals (no bucket, no or bad credentials) into a `StoreError` naming the URL."""
    try:
        yield
    except StoreError:
        raise
    except Exception as error:
        if not is_remote(location):
            raise
        bucket = location.split("://", 1)[1].split("/", 1)[0]
        if isinstance(error, FileNotFoundError):
            raise StoreError(f"store {location}: the bucket {bucket!r} does not exist (or is not visible with "
                             "these credentials); create it, or choose another [run] store") from error
        if isinstance(error, PermissionError) or type(error).__name__ in ("NoCredentialsError", "ClientError"):
            raise StoreError(f"store {location}: access denied ({type(error).__name__}); "
                             f"{_CREDENTIALS_FIX}") from error
        raise
