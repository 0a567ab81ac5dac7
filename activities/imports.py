"""Import activity: fetch a video from a URL (SSRF-guarded) into storage."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from concurrent.futures import Executor
from pathlib import Path, PurePosixPath

from sqlalchemy import update
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._support import run_blocking
from reelflow.core.db import SessionFactory
from reelflow.core.netguard import UrlNotAllowed
from reelflow.core.settings import Settings
from reelflow.core.storage import Storage
from reelflow.ingest.url_import import ImportFailed, download_url
from schemas.ingest import DownloadSourceInput, DownloadSourceOutput
from schemas.tables import Video

_ALLOWED_SUFFIXES = {".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"}


class ImportActivities:
    """Downloads on the I/O pool; the URL is re-checked here, not only in the API."""

    def __init__(
        self,
        *,
        storage: Storage,
        sessions: SessionFactory,
        settings: Settings,
        scratch_dir: Path,
        executor: Executor,
    ) -> None:
        self._storage = storage
        self._sessions = sessions
        self._max_bytes = settings.max_upload_bytes
        self._scratch = scratch_dir
        self._executor = executor

    @activity.defn
    async def download_source(self, input: DownloadSourceInput) -> DownloadSourceOutput:
        """Download the video behind `input.url` and store it as the asset's source."""
        video_id = uuid.UUID(input.video_id)
        base = f"tenants/{uuid.UUID(input.tenant_id)}/videos/{video_id}"

        def download() -> tuple[str, int]:
            self._scratch.mkdir(parents=True, exist_ok=True)
            workdir = Path(tempfile.mkdtemp(prefix="import-", dir=self._scratch))
            try:
                fetched = download_url(input.url, workdir, self._max_bytes)
                suffix = PurePosixPath(fetched.filename).suffix.lower()
                key = f"{base}/source{suffix if suffix in _ALLOWED_SUFFIXES else '.mp4'}"
                self._storage.put_file(key, fetched.path, content_type=fetched.content_type)
                return key, fetched.size_bytes
            finally:
                shutil.rmtree(workdir, ignore_errors=True)

        try:
            key, size = await run_blocking(self._executor, download, heartbeat_details="download")
        except UrlNotAllowed as exc:
            if exc.retryable:  # a DNS hiccup, not a refusal
                raise ApplicationError(str(exc), type="import_unavailable") from None
            raise ApplicationError(str(exc), type="url_not_allowed", non_retryable=True) from None
        except ImportFailed as exc:
            if exc.retryable:  # network errors, timeouts, 5xx from the source
                raise ApplicationError(str(exc), type="import_unavailable") from None
            raise ApplicationError(str(exc), type="import_failed", non_retryable=True) from None
        async with self._sessions.begin() as session:
            await session.execute(
                update(Video).where(Video.id == video_id).values(source_key=key, size_bytes=size)
            )
        return DownloadSourceOutput(source_key=key, size_bytes=size)
