"""The S3 storage backend (boto3; any S3-compatible endpoint).

Apart from `reelflow.core.storage` so that boto3, which takes about a second to import, is
loaded only by processes configured for S3.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from reelflow.core.storage import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_PART_SIZE,
    MIN_PART_SIZE,
    ObjectNotFound,
    ObjectTooLarge,
    StorageError,
    atomic_file,
    check_range,
    validate_key,
    validate_prefix,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

    from reelflow.core.settings import Settings

logger = logging.getLogger(__name__)

_MAX_PARTS = 10_000
_DELETE_BATCH = 1000  # DeleteObjects accepts at most 1000 keys per call.
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})

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
        self.prefix = validate_prefix(prefix.strip("/")) if prefix.strip("/") else ""
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
            with atomic_file(dest) as handle:
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
        full_prefix = self._full(validate_prefix(prefix)) + "/"
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
        check_range(start, end)
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
