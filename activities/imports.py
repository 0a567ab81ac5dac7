"""Import activity: fetch a video from a URL (SSRF-guarded) into storage."""

from __future__ import annotations

import uuid
from concurrent.futures import Executor
from pathlib import Path, PurePosixPath

from sqlalchemy import update
from temporalio import activity

from activities._support import (
    previous_progress,
    record_progress,
    resumable_part,
    run_blocking,
)
from reelflow.core.db import SessionFactory
from reelflow.core.settings import Settings
from reelflow.core.storage import Storage
from reelflow.ingest.url_import import ResumePoint, download_url, resumable_workdir
from schemas.ingest import DownloadSourceInput, DownloadSourceOutput
from schemas.ingest_activities import DOWNLOAD_SOURCE
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
        self._allowed_hosts = tuple(settings.import_test_allowed_hosts)
        self._scratch = scratch_dir
        self._executor = executor

    @activity.defn(name=DOWNLOAD_SOURCE.name)
    async def download_source(self, input: DownloadSourceInput) -> DownloadSourceOutput:
        """Download the video behind `input.url` and store it as the asset's source."""
        video_id = uuid.UUID(input.video_id)
        base = f"tenants/{uuid.UUID(input.tenant_id)}/videos/{video_id}"

        # A retried attempt whose predecessor stored the file (and then failed, say on the
        # database) does not download it again: its heartbeat names the key and size, and
        # storage confirms both.
        earlier = previous_progress()
        claimed = earlier.get("source")
        claimed_key = claimed.get("key") if isinstance(claimed, dict) else None
        stored = (
            resumable_part(self._storage, earlier, "source", claimed_key)
            if isinstance(claimed_key, str)
            and claimed_key in {f"{base}/source{suffix}" for suffix in _ALLOWED_SUFFIXES}
            else None
        )

        # A direct download interrupted by a network error resumes where its last
        # checkpoint (flushed to this host's disk) says, if it is here and still matches.
        resume = ResumePoint.from_progress(earlier.get("partial"))

        def download() -> tuple[str, int]:
            if stored is not None:
                return str(stored["key"]), int(stored["size_bytes"])
            with resumable_workdir(self._scratch / "imports", str(video_id)) as workdir:
                fetched = download_url(
                    input.url,
                    workdir,
                    self._max_bytes,
                    resume=resume,
                    keep_partial=True,
                    allowed_hosts=self._allowed_hosts,
                )
                suffix = PurePosixPath(fetched.filename).suffix.lower()
                key = f"{base}/source{suffix if suffix in _ALLOWED_SUFFIXES else '.mp4'}"
                self._storage.put_file(key, fetched.path, content_type=fetched.content_type)
                record_progress(source={"key": key, "size_bytes": fetched.size_bytes})
                return key, fetched.size_bytes

        # A refused URL or a failed download is translated by the worker's interceptor:
        # a DNS hiccup or a 5xx from the source is retried, a refusal is final.
        key, size = await run_blocking(
            self._executor,
            download,
            heartbeat_details="download",
            progress={"source": stored} if stored is not None else None,
        )
        async with self._sessions.begin() as session:
            await session.execute(
                update(Video).where(Video.id == video_id).values(source_key=key, size_bytes=size)
            )
        return DownloadSourceOutput(source_key=key, size_bytes=size)
