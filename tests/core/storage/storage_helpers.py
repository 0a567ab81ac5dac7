"""Shared test helpers for the storage suite (imported by the conftest and the tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reelflow.core.storage import Storage

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclass
class Backend:
    """A storage under test plus a way to look behind it for leftovers."""

    name: str
    storage: Storage
    local_root: Path | None = None
    s3_client: S3Client | None = None
    bucket: str | None = None

    def leftovers(self) -> list[str]:
        """Everything physically present: files on disk, or objects and pending uploads."""
        if self.local_root is not None:
            return sorted(
                str(p.relative_to(self.local_root))
                for p in self.local_root.rglob("*")
                if not p.is_dir()
            )
        assert self.s3_client is not None and self.bucket is not None
        objects = self.s3_client.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        uploads = self.s3_client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return sorted([o["Key"] for o in objects] + [f"(upload) {u['Key']}" for u in uploads])
