"""The activity classes as `workers/pools.py` builds them, on a real database and storage.

* `world` — per test: a tenant in a database migrated once per module, local storage, a
  scratch directory, settings, and a one-thread executor (so `executor_is_free` proves
  the canceled work's thread has ended).
* `long_media` (session) — a 30-minute video (720p picture, 7.1-channel 96 kHz sound)
  that ffmpeg needs many seconds to read, built in about a second by looping a short
  segment with stream copy: the process is really running when a test cancels it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.core.db import SessionFactory, create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.core.settings import Settings
from reelflow.core.storage import LocalStorage
from reelflow.core.tenants import create_tenant
from schemas.tables import Video
from tests.media.media_helpers import encode_clip, ffmpeg


@pytest.fixture(scope="module")
def migrated_url(database_url: str) -> str:
    upgrade_database(database_url)
    return database_url


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    db = create_engine(migrated_url, pool_size=4)
    try:
        yield db
    finally:
        await db.dispose()


@dataclass
class World:
    settings: Settings
    sessions: SessionFactory
    storage: LocalStorage
    scratch: Path
    executor: ThreadPoolExecutor
    tenant_id: uuid.UUID
    home: Path

    async def add_video(
        self, source: Path | None = None, *, origin: str = "upload", **values: object
    ) -> tuple[str, str]:
        """A video row (and its stored source, if given); returns `(video_id, source_key)`."""
        video_id = uuid.uuid4()
        suffix = source.suffix if source is not None else ".mp4"
        key = f"tenants/{self.tenant_id}/videos/{video_id}/source{suffix}"
        if source is not None:
            self.storage.put_file(key, source, content_type="video/mp4")
        async with self.sessions.begin() as session:
            session.add(
                Video(
                    id=video_id,
                    tenant_id=self.tenant_id,
                    title="a test video",
                    origin=origin,
                    source_key=key,
                    status="processing",
                    stage="queued",
                    **values,
                )
            )
        return str(video_id), key

    async def video(self, video_id: str) -> Video:
        async with self.sessions() as session:
            row = await session.get(Video, uuid.UUID(video_id))
        assert row is not None
        return row

    def scratch_files(self) -> list[str]:
        """Files left in the scratch directory (not directories)."""
        if not self.scratch.exists():
            return []
        return sorted(
            str(p.relative_to(self.scratch)) for p in self.scratch.rglob("*") if p.is_file()
        )


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="activity-test")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@pytest_asyncio.fixture(loop_scope="session")
async def world(
    migrated_url: str, engine: AsyncEngine, tmp_path: Path, executor: ThreadPoolExecutor
) -> World:
    sessions = session_factory(engine)
    async with sessions.begin() as session:
        tenant = await create_tenant(session, name="activity-tests", plan="pro")
    settings = Settings(
        environment="test",
        database_url=migrated_url,
        reelflow_home=tmp_path,
        storage_url=(tmp_path / "media").as_uri(),
    )
    return World(
        settings=settings,
        sessions=sessions,
        storage=LocalStorage(tmp_path / "media"),
        scratch=tmp_path / "scratch",
        executor=executor,
        tenant_id=tenant.tenant_id,
        home=tmp_path,
    )


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("activity-media")


@pytest.fixture(scope="session")
def short_clip(media_dir: Path) -> Path:
    """Two seconds of test pattern with a tone: everything finishes at once."""
    return encode_clip(media_dir / "short.mp4", "-c:v", "libx264", seconds=2.0)


LONG_MEDIA_MINUTES = 30


@pytest.fixture(scope="session")
def long_media(media_dir: Path) -> Path:
    """30 minutes: decoding its sound or scanning its picture takes ffmpeg 10 s or more."""
    segment = media_dir / "segment.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=s=1280x720:r=24:d=10",
        "-f", "lavfi", "-i", "sine=f=440:r=96000:d=10",
        "-filter_complex", "[1:a]pan=7.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0|c6=c0|c7=c0[a]",
        "-map", "0:v", "-map", "[a]",
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "40", "-g", "240",
        "-c:a", "aac", "-b:a", "128k",
        str(segment),
    )  # fmt: skip
    looped = media_dir / "long.mp4"
    loops = LONG_MEDIA_MINUTES * 6 - 1
    ffmpeg("-stream_loop", str(loops), "-i", str(segment), "-c", "copy", str(looped))
    segment.unlink()
    return looped
