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

import io
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit
from urllib.request import url2pathname

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

    from reelflow.core.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 1024 * 1024
"""Read size for :meth:`Storage.iter_bytes`; large enough to keep syscalls/requests few."""

MIN_PART_SIZE = 5 * 1024 * 1024
"""S3 rejects multipart parts smaller than this (except the last one)."""

DEFAULT_PART_SIZE = 8 * 1024 * 1024
_MAX_PARTS = 10_000
_DELETE_BATCH = 1000  # DeleteObjects accepts at most 1000 keys per call.
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


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


def _validate_prefix(prefix: str) -> str:
    # A prefix names a "directory"; one trailing slash is accepted for convenience.
    stripped = prefix[:-1] if prefix.endswith("/") else prefix
    return validate_key(stripped)


def _check_range(start: int, end: int | None) -> None:
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
def _atomic_file(final: Path) -> Iterator[IO[bytes]]:
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
        with source.open("rb") as src, _atomic_file(target) as dst:
            shutil.copyfileobj(src, dst, DEFAULT_CHUNK_SIZE)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """See :meth:`Storage.put_bytes`."""
        with _atomic_file(self._path(key)) as dst:
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
        with _atomic_file(target) as dst:
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
        with src, _atomic_file(dest) as dst:
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
        directory = self._path(_validate_prefix(prefix))
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
        _check_range(start, end)
        path = self._existing_file(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        return _read_file_range(handle, start, end, chunk_size)


# --------------------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------------------


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_not_found(exc: ClientError) -> bool:
    return _error_code(exc) in _NOT_FOUND_CODES


class S3Storage:
    """Objects in an S3 bucket (or any S3-compatible service) under an optional prefix.

    Uploads of files go through boto3's managed transfer (multipart above the part size);
    streamed uploads use an explicit multipart upload that is aborted on any error, so S3's
    all-or-nothing object semantics give the same guarantee as :class:`LocalStorage`.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = 4,
    ) -> None:
        """Wrap an existing boto3 S3 client.

        Args:
            client: A boto3 S3 client, built once by the caller and shared (it is
                thread-safe).
            bucket: Bucket name.
            prefix: Key prefix inside the bucket, e.g. ``reelflow/media``; may be empty.
            part_size: Multipart part size in bytes (at least 5 MiB, S3's minimum).
            max_concurrency: Parallel part uploads/downloads for managed transfers.
        """
        if not bucket:
            raise ValueError("bucket name must not be empty")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        self._client = client
        self.bucket = bucket
        self.prefix = _validate_prefix(prefix.strip("/")) if prefix.strip("/") else ""
        self._part_size = part_size
        self._transfer = TransferConfig(
            multipart_threshold=part_size,
            multipart_chunksize=part_size,
            max_concurrency=max_concurrency,
        )

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _full(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @staticmethod
    def _extra(content_type: str | None) -> dict[str, Any]:
        return {"ContentType": content_type} if content_type else {}

    def put_file(self, key: str, source: Path, content_type: str | None = None) -> None:
        """See :meth:`Storage.put_file`."""
        full = self._full(key)
        if not source.is_file():
            raise FileNotFoundError(f"no such file: {source}")
        self._client.upload_file(
            str(source),
            self.bucket,
            full,
            ExtraArgs=self._extra(content_type),
            Config=self._transfer,
        )

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """See :meth:`Storage.put_bytes`."""
        full = self._full(key)
        self._client.upload_fileobj(
            io.BytesIO(data),
            self.bucket,
            full,
            ExtraArgs=self._extra(content_type),
            Config=self._transfer,
        )

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        max_bytes: int,
        content_type: str | None = None,
    ) -> int:
        """See :meth:`Storage.put_stream`.

        Small streams (under one part) become a single PutObject; larger ones a multipart
        upload that is started lazily and aborted if anything goes wrong, including the
        limit being exceeded.
        """
        full = self._full(key)
        # Keep within S3's 10,000-part limit even for very large allowed sizes.
        part_size = max(self._part_size, math.ceil(max_bytes / _MAX_PARTS))
        written = 0
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[CompletedPartTypeDef] = []

        def upload_part(body: bytes) -> None:
            assert upload_id is not None
            number = len(parts) + 1
            result = self._client.upload_part(
                Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=body
            )
            parts.append({"ETag": result["ETag"], "PartNumber": number})

        try:
            for chunk in chunks:
                written += len(chunk)
                if written > max_bytes:
                    raise ObjectTooLarge(max_bytes)
                buffer += chunk
                while len(buffer) >= part_size:
                    if upload_id is None:
                        upload_id = self._client.create_multipart_upload(
                            Bucket=self.bucket, Key=full, **self._extra(content_type)
                        )["UploadId"]
                    upload_part(bytes(buffer[:part_size]))
                    del buffer[:part_size]
            if upload_id is None:
                self._client.put_object(
                    Bucket=self.bucket, Key=full, Body=bytes(buffer), **self._extra(content_type)
                )
            else:
                if buffer:
                    upload_part(bytes(buffer))
                self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            if upload_id is not None:
                self._abort(full, upload_id)
            raise
        return written

    def _abort(self, full_key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id
            )
        except Exception:
            # The original error matters more; a bucket lifecycle rule for incomplete
            # multipart uploads cleans up what we could not abort.
            logger.warning(
                "could not abort multipart upload for %s in bucket %s",
                full_key,
                self.bucket,
                exc_info=True,
            )

    def download_to(self, key: str, dest: Path) -> None:
        """See :meth:`Storage.download_to`."""
        full = self._full(key)
        try:
            with _atomic_file(dest) as handle:
                self._client.download_fileobj(self.bucket, full, handle, Config=self._transfer)
        except ClientError as exc:
            if _is_not_found(exc):
                raise ObjectNotFound(key) from None
            raise

    def _head(self, key: str) -> int:
        try:
            return self._client.head_object(Bucket=self.bucket, Key=self._full(key))[
                "ContentLength"
            ]
        except ClientError as exc:
            if _is_not_found(exc):
                raise ObjectNotFound(key) from None
            raise

    def exists(self, key: str) -> bool:
        """See :meth:`Storage.exists`."""
        try:
            self._head(key)
        except ObjectNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        """See :meth:`Storage.size`."""
        return self._head(key)

    def delete(self, key: str) -> None:
        """See :meth:`Storage.delete`."""
        self._client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def delete_prefix(self, prefix: str) -> None:
        """See :meth:`Storage.delete_prefix`."""
        full_prefix = self._full(_validate_prefix(prefix)) + "/"
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
            keys = [item["Key"] for item in page.get("Contents", [])]
            for start in range(0, len(keys), _DELETE_BATCH):
                batch = keys[start : start + _DELETE_BATCH]
                result = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
                errors = result.get("Errors", [])
                if errors:
                    first = errors[0]
                    raise StorageError(
                        f"could not delete {len(errors)} object(s) under {prefix!r}: "
                        f"{first.get('Code', '')} {first.get('Message', '')}".strip()
                    )

    def iter_bytes(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[bytes]:
        """See :meth:`Storage.iter_bytes`."""
        _check_range(start, end)
        full = self._full(key)
        if end is not None and end == start:
            self._head(key)  # an empty range of a missing object is still "not found"
            return iter(())
        if start == 0 and end is None:
            byte_range = ""
        else:
            # HTTP/S3 ranges are inclusive; ours are half-open.
            byte_range = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            if byte_range:
                response = self._client.get_object(Bucket=self.bucket, Key=full, Range=byte_range)
            else:
                response = self._client.get_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if _is_not_found(exc):
                raise ObjectNotFound(key) from None
            if _error_code(exc) == "InvalidRange":
                # The object exists but start is at/after its end: nothing to send.
                return iter(())
            raise
        body = response["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(chunk_size)
            finally:
                body.close()

        return chunks()


# --------------------------------------------------------------------------------------
# Construction from settings
# --------------------------------------------------------------------------------------


def build_s3_client(settings: Settings) -> S3Client:
    """Build the boto3 S3 client described by the settings.

    Credentials come from boto3's usual chain (environment, shared config, instance role);
    nothing secret is read or logged here. A custom endpoint (MinIO, Ceph, a local test
    server) gets path-style addressing because virtual-hosted buckets need wildcard DNS.
    """
    import boto3
    from botocore.config import Config

    endpoint = settings.s3_endpoint_url or None
    config = Config(
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=10,
        read_timeout=60,
        s3={"addressing_style": "path"} if endpoint else {},
    )
    session = boto3.session.Session()
    return session.client(
        "s3", endpoint_url=endpoint, region_name=settings.s3_region, config=config
    )


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
        try:
            storage = S3Storage(build_s3_client(settings), bucket, prefix)
        except InvalidKey as exc:
            raise StorageError(f"STORAGE_URL has an invalid prefix: {exc}") from None
        logger.info("media storage: s3 bucket %s prefix %r", bucket, prefix)
        return storage
    raise StorageError(f"STORAGE_URL must start with file:// or s3://, got {parts.scheme!r}")
