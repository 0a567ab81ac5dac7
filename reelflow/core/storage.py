"""Media storage behind one small, synchronous interface: a local directory or S3.

Every process (API, workers, CLI) stores source videos, renders and derived files through
:class:`Storage`. The embedded stack uses :class:`LocalStorage`; production uses
:class:`S3Storage` against any S3-compatible endpoint. Both are blocking (boto3 is), so
async callers run them in a thread (``asyncio.to_thread``) and Temporal activities that use
them are sync activities on a thread pool.

Keys are relative POSIX paths such as ``tenants/<tenant>/videos/<video>/source.mp4``. They
are validated before any I/O so that a key built from user input can never escape the
storage root or the bucket prefix.

Guarantees shared by both backends:

* An object is either fully written under its key or not there at all: a crash or a failed
  upload never leaves a partial object visible under the final key.
* :meth:`Storage.put_stream` enforces a byte limit while streaming and leaves nothing behind
  when the limit is exceeded.
* Deleting a missing object is not an error, so deletes are safe to retry.

Errors specific to storage derive from :class:`StorageError`; transport failures (``OSError``,
``botocore`` errors) propagate unchanged so retry policies can see them.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol, runtime_checkable
from urllib.parse import urlsplit
from urllib.request import url2pathname

if TYPE_CHECKING:
    from reelflow.core.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 1024 * 1024
"""Read size for :meth:`Storage.iter_bytes`; large enough to keep syscalls/requests few."""

MIN_PART_SIZE = 5 * 1024 * 1024
"""S3 rejects multipart parts smaller than this (except the last one)."""

DEFAULT_PART_SIZE = 8 * 1024 * 1024


class StorageError(Exception):
    """Base class for storage errors that callers are expected to handle."""


class InvalidKey(StorageError, ValueError):
    """The key is not a safe relative POSIX path (``..``, absolute, backslash, empty segment)."""


class ObjectNotFound(StorageError, KeyError):
    """No object exists under the key."""

    code = "object_not_found"

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        # KeyError would render the repr of the key; callers show this message to users.
        return f"no stored object at {self.key!r}"


class ObjectTooLarge(StorageError):
    """A stream or download went over its byte limit; nothing was kept."""

    def __init__(self, max_bytes: int, what: str = "object") -> None:
        super().__init__(f"{what} is larger than the limit of {max_bytes} bytes")
        self.max_bytes = max_bytes


def validate_key(key: str) -> str:
    """Check that ``key`` is a safe, relative POSIX path and return it unchanged.

    Args:
        key: The candidate key, e.g. ``tenants/t1/videos/v1/source.mp4``.

    Returns:
        The same key.

    Raises:
        InvalidKey: If the key is empty, absolute, contains a backslash, a control
            character, an empty segment (``a//b``, trailing ``/``) or a ``.``/``..`` segment.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey("storage key must be a non-empty string")
    if key.startswith("/"):
        raise InvalidKey(f"storage key must be relative, got {key!r}")
    if "\\" in key:
        raise InvalidKey(f"storage key must not contain backslashes, got {key!r}")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        raise InvalidKey("storage key must not contain control characters")
    for segment in key.split("/"):
        if segment == "":
            raise InvalidKey(f"storage key must not contain empty segments, got {key!r}")
        if segment in (".", ".."):
            raise InvalidKey(f"storage key must not contain '.' or '..' segments, got {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    # A prefix names a "directory"; one trailing slash is accepted for convenience.
    stripped = prefix[:-1] if prefix.endswith("/") else prefix
    return validate_key(stripped)


def check_range(start: int, end: int | None) -> None:
    if start < 0:
        raise ValueError(f"range start must be >= 0, got {start}")
    if end is not None and end < start:
        raise ValueError(f"range end ({end}) must be >= start ({start})")


@runtime_checkable
class Storage(Protocol):
    """Blocking media storage addressed by relative POSIX keys.

    Ranges in :meth:`iter_bytes` are half-open like Python slices: ``start`` inclusive,
    ``end`` exclusive. An HTTP ``Range: bytes=a-b`` header maps to ``start=a, end=b + 1``.
    """

    def put_file(self, key: str, source: Path, content_type: str | None = None) -> None:
        """Store the contents of a local file under ``key``, replacing any existing object."""
        ...

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Store ``data`` under ``key``, replacing any existing object."""
        ...

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        max_bytes: int,
        content_type: str | None = None,
    ) -> int:
        """Store a stream of chunks under ``key``, refusing to go over ``max_bytes``.

        Returns:
            The number of bytes written.

        Raises:
            ObjectTooLarge: As soon as the stream exceeds ``max_bytes``; nothing is stored.
        """
        ...

    def download_to(self, key: str, dest: Path) -> None:
        """Copy the object to the local file ``dest`` (atomically replaced)."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    def size(self, key: str) -> int:
        """Size of the object in bytes; raises :class:`ObjectNotFound` if missing."""
        ...

    def delete(self, key: str) -> None:
        """Delete the object; deleting a missing object is a no-op."""
        ...

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object whose key starts with ``prefix + "/"``.

        ``tenants/t1`` deletes ``tenants/t1/...`` but never ``tenants/t10/...``.
        """
        ...

    def iter_bytes(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[bytes]:
        """Yield the bytes of ``[start, end)`` of the object in chunks.

        The object is opened before this returns, so a missing key raises
        :class:`ObjectNotFound` here rather than on first iteration. ``end`` past the end of
        the object is clamped; a ``start`` at or past the end yields nothing. Exhaust or
        ``close()`` the iterator to release the underlying file or connection promptly.
        """
        ...


# --------------------------------------------------------------------------------------
# Local directory
# --------------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform lets you open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_file(final: Path) -> Iterator[IO[bytes]]:
    """Yield a writable temp file that replaces ``final`` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, final)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(final.parent)


def _read_file_range(
    handle: IO[bytes], start: int, end: int | None, chunk_size: int
) -> Iterator[bytes]:
    try:
        handle.seek(start)
        remaining = None if end is None else end - start
        while remaining is None or remaining > 0:
            want = chunk_size if remaining is None else min(chunk_size, remaining)
            chunk = handle.read(want)
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
    finally:
        handle.close()


class LocalStorage:
    """Objects as files under a root directory, written atomically (temp file + rename).

    Content types are not recorded; readers infer them from the key's extension.
    """

    def __init__(self, root: Path) -> None:
        """Create the storage, creating ``root`` if needed.

        Args:
            root: Directory that holds every object; keys are paths relative to it.
        """
        self.root = root.expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*validate_key(key).split("/"))
        # Lexical validation already rules out "..", but a symlink planted inside the root
        # could still point outside it.
        if not path.resolve().is_relative_to(self.root):
            raise InvalidKey(f"storage key {key!r} resolves outside the storage root")
        return path

    def _existing_file(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(key)
        return path

    def put_file(self, key: str, source: Path, content_type: str | None = None) -> None:
        """See :meth:`Storage.put_file`."""
        target = self._path(key)
        with source.open("rb") as src, atomic_file(target) as dst:
            shutil.copyfileobj(src, dst, DEFAULT_CHUNK_SIZE)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """See :meth:`Storage.put_bytes`."""
        with atomic_file(self._path(key)) as dst:
            dst.write(data)

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        max_bytes: int,
        content_type: str | None = None,
    ) -> int:
        """See :meth:`Storage.put_stream`."""
        target = self._path(key)
        written = 0
        with atomic_file(target) as dst:
            for chunk in chunks:
                written += len(chunk)
                if written > max_bytes:
                    raise ObjectTooLarge(max_bytes)
                dst.write(chunk)
        return written

    def download_to(self, key: str, dest: Path) -> None:
        """See :meth:`Storage.download_to`."""
        source = self._existing_file(key)
        try:
            src = source.open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        with src, atomic_file(dest) as dst:
            shutil.copyfileobj(src, dst, DEFAULT_CHUNK_SIZE)

    def exists(self, key: str) -> bool:
        """See :meth:`Storage.exists`."""
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        """See :meth:`Storage.size`."""
        try:
            return self._existing_file(key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def delete(self, key: str) -> None:
        """See :meth:`Storage.delete`."""
        path = self._path(key)
        if path.is_dir():
            # A "directory" is not an object; deleting it is delete_prefix's job.
            return
        path.unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """See :meth:`Storage.delete_prefix`."""
        directory = self._path(validate_prefix(prefix))
        for _attempt in range(3):
            if not directory.is_dir() or directory.is_symlink():
                return
            try:
                shutil.rmtree(directory)
                return
            except FileNotFoundError:
                # Something else deleted part of the tree concurrently; go again.
                continue

    def iter_bytes(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[bytes]:
        """See :meth:`Storage.iter_bytes`."""
        check_range(start, end)
        path = self._existing_file(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        return _read_file_range(handle, start, end, chunk_size)


# --------------------------------------------------------------------------------------
# Construction from settings
# --------------------------------------------------------------------------------------


def build_storage(settings: Settings) -> Storage:
    """Pick and build the storage backend named by ``settings.resolved_storage_url``.

    Args:
        settings: The process settings; ``file:///abs/dir`` gives :class:`LocalStorage`,
            ``s3://bucket/prefix`` gives :class:`S3Storage` using ``s3_endpoint_url`` and
            ``s3_region``.

    Returns:
        A ready-to-use storage backend. The bucket is not created or checked here.

    Raises:
        StorageError: If the URL is not a usable ``file://`` or ``s3://`` URL.
    """
    url = settings.resolved_storage_url
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StorageError(
                f"STORAGE_URL must be a local file:// URL, got host {parts.netloc!r}"
            )
        root = Path(url2pathname(parts.path))
        if not root.is_absolute():
            raise StorageError("STORAGE_URL file:// path must be absolute")
        logger.info("media storage: local directory %s", root)
        return LocalStorage(root)
    if parts.scheme == "s3":
        bucket = parts.netloc
        if not bucket:
            raise StorageError("STORAGE_URL must name a bucket: s3://bucket/prefix")
        prefix = parts.path.strip("/")
        # Imported only for an S3 deployment: boto3 costs every process a second to load.
        from reelflow.core.s3_storage import S3Storage, build_s3_client

        try:
            storage = S3Storage(build_s3_client(settings), bucket, prefix)
        except InvalidKey as exc:
            raise StorageError(f"STORAGE_URL has an invalid prefix: {exc}") from None
        logger.info("media storage: s3 bucket %s prefix %r", bucket, prefix)
        return storage
    raise StorageError(f"STORAGE_URL must start with file:// or s3://, got {parts.scheme!r}")
