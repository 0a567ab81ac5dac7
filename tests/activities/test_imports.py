"""`ImportActivities` in `ActivityEnvironment`: heartbeats, resume, cancellation of downloads.

The remote host is `trickle_server` on 127.0.0.1: the guard's address policy is relaxed
for loopback only, and downloads go over real sockets — the direct path through the
guarded httpx client, the video-site path through yt-dlp's own HTTP downloader with a
site extractor registered for the local server (yt-dlp never sees the real web).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yt_dlp
from yt_dlp.extractor.common import InfoExtractor

from activities.imports import ImportActivities
from reelflow.ingest import url_import
from reelflow.ingest.url_import import ImportFailed
from schemas.ingest import DownloadSourceInput
from tests.activities.conftest import World
from tests.activities.support import (
    CANCEL_BOUND_S,
    activity_env,
    cancel_and_wait,
    executor_is_free,
    start,
)
from tests.activities.trickle_server import Trickle, loopback_allowed, trickle_server

__all__ = ["loopback_allowed"]

pytestmark = pytest.mark.usefixtures("loopback_allowed")


class LocalSiteIE(InfoExtractor):  # type: ignore[misc]
    """A site extractor for the local server's `/watch/<id>` pages, as yt-dlp has for real
    sites; the media it names is the server's slow `/media/<id>.mp4`."""

    IE_NAME = "localsite"
    _VALID_URL = r"http://127\.0\.0\.1:(?P<port>\d+)/watch/(?P<id>[a-z0-9]+)"

    def _real_extract(self, url: str) -> dict[str, Any]:
        port, video_id = self._match_valid_url(url).group("port", "id")
        return {
            "id": video_id,
            "title": "A talk",
            "formats": [
                {
                    "format_id": "720p",
                    "url": f"http://127.0.0.1:{port}/media/{video_id}.mp4",
                    "ext": "mp4",
                    "height": 720,
                    "vcodec": "avc1",
                    "acodec": "mp4a",
                    "protocol": "http",
                }
            ],
        }


@pytest.fixture
def local_site(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        yt_dlp.YoutubeDL,
        "add_default_info_extractors",
        lambda self: self.add_info_extractor(LocalSiteIE()),
    )


@pytest.fixture
def slow_server() -> Iterator[Trickle]:
    with trickle_server(Trickle()) as server:
        yield server


def import_activities(world: World) -> ImportActivities:
    return ImportActivities(
        storage=world.storage,
        sessions=world.sessions,
        settings=world.settings,
        scratch_dir=world.scratch,
        executor=world.executor,
    )


def import_input(world: World, video_id: str, url: str) -> DownloadSourceInput:
    return DownloadSourceInput(tenant_id=str(world.tenant_id), video_id=video_id, url=url)


# --- heartbeats and resume ------------------------------------------------------------------


async def test_a_download_heartbeats_and_reports_the_stored_source(
    world: World, short_clip: Path
) -> None:
    payload = short_clip.read_bytes()
    video_id, _ = await world.add_video(origin="import")
    env, heartbeats = activity_env()

    with trickle_server(Trickle(payload=payload)) as server:
        out = await env.run(
            import_activities(world).download_source,
            import_input(world, video_id, server.url("/clip.mp4")),
        )

    assert out.size_bytes == len(payload)
    assert out.source_key == f"tenants/{world.tenant_id}/videos/{video_id}/source.mp4"
    final = await heartbeats.wait_for(lambda d: "source" in d["done"], timeout=5)
    assert final["step"] == "download"
    assert final["done"]["source"] == {"key": out.source_key, "size_bytes": len(payload)}
    row = await world.video(video_id)
    assert (row.source_key, row.size_bytes) == (out.source_key, len(payload))
    assert world.scratch_files() == []


async def test_a_retry_after_the_source_was_stored_does_not_download_again(
    world: World, short_clip: Path
) -> None:
    payload = short_clip.read_bytes()
    video_id, _ = await world.add_video(origin="import")
    with trickle_server(Trickle(payload=payload)) as server:
        env, heartbeats = activity_env()
        first = await env.run(
            import_activities(world).download_source,
            import_input(world, video_id, server.url("/clip.mp4")),
        )
        last = await heartbeats.wait_for(lambda d: "source" in d["done"], timeout=5)

        retry_env, _ = activity_env(heartbeat_details=[last], attempt=2)
        second = await retry_env.run(
            import_activities(world).download_source,
            import_input(world, video_id, server.url("/clip.mp4")),
        )

    assert second == first
    assert server.requests == ["/clip.mp4"], "the retry downloaded the file again"


@pytest.mark.parametrize(
    "claim",
    [
        {"size_bytes": 1},  # storage holds something else
        {"key": "tenants/someone/videos/else/source.mp4"},  # not this video's source
    ],
)
async def test_a_claimed_source_that_storage_does_not_confirm_is_downloaded(
    world: World, short_clip: Path, claim: dict[str, Any]
) -> None:
    payload = short_clip.read_bytes()
    video_id, _ = await world.add_video(origin="import")
    key = f"tenants/{world.tenant_id}/videos/{video_id}/source.mp4"
    world.storage.put_bytes(key, payload)
    source: dict[str, Any] = {"key": key, "size_bytes": len(payload), **claim}
    details = {"step": "download", "done": {"source": source}}
    env, _ = activity_env(heartbeat_details=[details], attempt=2)

    with trickle_server(Trickle(payload=payload)) as server:
        out = await env.run(
            import_activities(world).download_source,
            import_input(world, video_id, server.url("/clip.mp4")),
        )

    assert server.requests == ["/clip.mp4"]
    assert out.size_bytes == len(payload)


async def test_a_retry_resumes_a_broken_direct_download_from_what_is_on_disk(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(url_import, "CHECKPOINT_BYTES", 256 * 1024)
    payload = bytes(range(256)) * 8192  # 2 MiB, every byte position distinct mod 256
    video_id, _ = await world.add_video(origin="import")

    with trickle_server(
        Trickle(payload=payload, etag='"talk-v1"', drop_after_bytes=1_300_000)
    ) as server:
        url = server.url("/clip.mp4")
        env, heartbeats = activity_env()
        with pytest.raises(ImportFailed) as failed:
            await env.run(
                import_activities(world).download_source, import_input(world, video_id, url)
            )
        assert failed.value.retryable  # the interceptor retries it as import_unavailable
        # The last heartbeat (sent as the attempt failed) holds the last checkpoint.
        bytes_done = heartbeats.last["done"]["partial"]["bytes_done"]
        assert 256 * 1024 <= bytes_done <= 1_300_000

        retry, retry_heartbeats = activity_env(heartbeat_details=[heartbeats.last], attempt=2)
        out = await retry.run(
            import_activities(world).download_source, import_input(world, video_id, url)
        )

    assert server.ranges == [None, f"bytes={bytes_done}-"]
    stored = world.home / "stored.mp4"
    world.storage.download_to(out.source_key, stored)
    assert stored.read_bytes() == payload
    assert retry_heartbeats.details[0]["done"]["partial"]["bytes_done"] == bytes_done
    assert world.scratch_files() == []


async def test_without_its_heartbeat_a_retry_downloads_everything_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(url_import, "CHECKPOINT_BYTES", 256 * 1024)
    payload = bytes(range(256)) * 8192
    video_id, _ = await world.add_video(origin="import")

    with trickle_server(
        Trickle(payload=payload, etag='"talk-v1"', drop_after_bytes=1_300_000)
    ) as server:
        url = server.url("/clip.mp4")
        env, _ = activity_env()
        with pytest.raises(ImportFailed):
            await env.run(
                import_activities(world).download_source, import_input(world, video_id, url)
            )
        retry, _ = activity_env(attempt=2)  # e.g. the last heartbeat never reached the server
        out = await retry.run(
            import_activities(world).download_source, import_input(world, video_id, url)
        )

    assert server.ranges == [None, None]
    assert out.size_bytes == len(payload)


# --- cancellation ---------------------------------------------------------------------------


async def cancel_import(world: World, server: Trickle, url: str) -> tuple[float, str]:
    """Start an import of `url`, cancel it mid-download; seconds until the host saw it end."""
    video_id, _ = await world.add_video(origin="import")
    env, heartbeats = activity_env()
    run = start(
        env.run(import_activities(world).download_source, import_input(world, video_id, url))
    )
    assert await asyncio.to_thread(server.first_bytes.wait, 30), "the download never started"
    await heartbeats.wait_for(lambda d: d["step"] == "download")
    canceled_at = time.monotonic()
    elapsed = await cancel_and_wait(env, run)
    assert elapsed < CANCEL_BOUND_S
    # The remote host sees the connection dropped: the download has stopped.
    assert await asyncio.to_thread(server.client_gone.wait, CANCEL_BOUND_S * 5)
    assert server.gone_at is not None
    await executor_is_free(world.executor)
    return server.gone_at - canceled_at, video_id


async def test_cancel_stops_a_direct_download_within_two_seconds(
    world: World, slow_server: Trickle
) -> None:
    stopped_after, video_id = await cancel_import(world, slow_server, slow_server.url("/clip.mp4"))

    assert stopped_after < CANCEL_BOUND_S
    assert not slow_server.sent_everything.is_set()
    assert world.scratch_files() == []  # no partial file left behind
    assert (await world.video(video_id)).size_bytes is None
    assert not world.storage.exists(f"tenants/{world.tenant_id}/videos/{video_id}/source.mp4")


async def test_cancel_stops_a_direct_download_whose_server_went_silent(world: World) -> None:
    # Headers and 64 KB, then nothing: the downloader is blocked reading the socket, and only
    # shutting the socket can wake it before the 30 s read timeout.
    with trickle_server(Trickle(stall_after_bytes=64 * 1024)) as server:
        stopped_after, _ = await cancel_import(world, server, server.url("/clip.mp4"))

    assert stopped_after < CANCEL_BOUND_S
    assert world.scratch_files() == []


@pytest.mark.usefixtures("local_site")
async def test_cancel_stops_a_ytdlp_download_within_two_seconds(
    world: World, slow_server: Trickle
) -> None:
    stopped_after, video_id = await cancel_import(
        world, slow_server, slow_server.url("/watch/talk1")
    )

    assert slow_server.requests[:2] == ["/watch/talk1", "/media/talk1.mp4"]
    assert stopped_after < CANCEL_BOUND_S
    assert not slow_server.sent_everything.is_set()
    assert world.scratch_files() == []  # yt-dlp's .part file is gone too
    assert (await world.video(video_id)).size_bytes is None


@pytest.mark.usefixtures("local_site")
async def test_a_ytdlp_download_that_is_not_canceled_completes(
    world: World, short_clip: Path
) -> None:
    payload = short_clip.read_bytes()
    video_id, _ = await world.add_video(origin="import")
    env, heartbeats = activity_env()

    with trickle_server(Trickle(payload=payload)) as server:
        out = await env.run(
            import_activities(world).download_source,
            import_input(world, video_id, server.url("/watch/talk2")),
        )

    assert server.requests == ["/watch/talk2", "/media/talk2.mp4"]
    assert out.size_bytes == len(payload)
    assert world.storage.size(out.source_key) == len(payload)
    final = await heartbeats.wait_for(lambda d: "source" in d["done"], timeout=5)
    assert final["done"]["source"]["key"] == out.source_key
