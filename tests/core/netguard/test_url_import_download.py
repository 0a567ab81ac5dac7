"""URL imports: guarded direct downloads, size limits, and the yt-dlp path for video sites."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yt_dlp
from yt_dlp.extractor.common import InfoExtractor

from reelflow.core.cancellation import Cancelled, CancelScope
from reelflow.core.netguard import UrlNotAllowed, guarded_client
from reelflow.core.storage import ObjectTooLarge
from reelflow.ingest import url_import
from reelflow.ingest.url_import import (
    DownloadedMedia,
    ImportFailed,
    ResumePoint,
    _Guard,
    download_url,
)
from tests.core.netguard.netguard_fakes import (
    PUBLIC_IP,
    FakeResolver,
    FakeWeb,
    redirect,
    serve_bytes,
    serve_html,
)

VIDEO = bytes(range(256)) * 1200  # 307,200 bytes


def run_import(web: FakeWeb, url: str, dest: Path, max_bytes: int = 1_000_000) -> DownloadedMedia:
    resolver = FakeResolver()
    with guarded_client(resolver, transport=web.transport()) as client:
        return download_url(url, dest, max_bytes, resolve=resolver, client=client)


def files_in(directory: Path) -> list[str]:
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# --- refused before any request -------------------------------------------------------

PRODUCT_BAR_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://localhost:7233",
    "http://[::ffff:127.0.0.1]/",
    "file:///etc/passwd",
    "http://2130706433/",
    "ftp://videos.example.com/clip.mp4",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://0.0.0.0:8000/",
    "http://internal.example.com/clip.mp4",
]


@pytest.mark.parametrize("url", PRODUCT_BAR_URLS)
def test_bad_urls_are_refused_without_any_request(url: str, tmp_path: Path) -> None:
    web = FakeWeb()
    for host in ("videos.example.com", "internal.example.com"):
        web.route(host, serve_bytes(VIDEO))

    with pytest.raises(UrlNotAllowed) as excinfo:
        run_import(web, url, tmp_path / "dest")

    assert excinfo.value.code == "url_not_allowed"
    assert web.seen == []
    assert files_in(tmp_path / "dest") == []


def test_redirect_to_metadata_service_is_never_followed(tmp_path: Path) -> None:
    web = FakeWeb()
    web.route("videos.example.com", redirect("http://169.254.169.254/"))
    metadata_requests = 0

    def metadata(request: httpx.Request) -> httpx.Response:
        nonlocal metadata_requests
        metadata_requests += 1
        return httpx.Response(200, text="iam credentials")

    web.route("169.254.169.254", metadata)

    with pytest.raises(UrlNotAllowed, match="link-local"):
        run_import(web, "http://videos.example.com/clip.mp4", tmp_path / "dest")

    assert metadata_requests == 0
    assert web.hosts == ["videos.example.com"]
    assert all(seen.connect_host == PUBLIC_IP for seen in web.seen)
    assert files_in(tmp_path / "dest") == []


# --- direct media ---------------------------------------------------------------------


def test_direct_media_downloads_to_disk(tmp_path: Path) -> None:
    web = FakeWeb()
    web.route("videos.example.com", serve_bytes(VIDEO, "video/mp4"))
    dest = tmp_path / "dest"

    media = run_import(web, "https://videos.example.com/clips/intro%20take.mp4?sig=x", dest)

    assert media.path.parent == dest
    assert media.path.read_bytes() == VIDEO
    assert media.size_bytes == len(VIDEO)
    assert media.filename == media.path.name == "intro_take.mp4"
    assert media.content_type == "video/mp4"
    assert media.final_url == "https://videos.example.com/clips/intro%20take.mp4?sig=x"
    assert files_in(dest) == ["intro_take.mp4"]
    assert [(s.connect_host, s.host) for s in web.seen] == [(PUBLIC_IP, "videos.example.com")]


def test_direct_media_after_redirect_uses_content_disposition_name(tmp_path: Path) -> None:
    web = FakeWeb()
    web.route("videos.example.com", redirect("https://cdn.example.com/blob/9f8e7d"))
    web.route(
        "cdn.example.com",
        serve_bytes(
            VIDEO,
            "application/octet-stream",
            {"Content-Disposition": 'attachment; filename="../../Team Demo.MOV"'},
        ),
    )

    media = run_import(web, "http://videos.example.com/share/abc", tmp_path / "dest")

    assert media.filename == "Team_Demo.MOV"
    assert media.path == tmp_path / "dest" / "Team_Demo.MOV"
    assert media.content_type == "video/quicktime"
    assert media.final_url == "https://cdn.example.com/blob/9f8e7d"
    assert media.path.stat().st_size == len(VIDEO)
    assert web.hosts == ["videos.example.com", "cdn.example.com"]


def test_media_extension_without_media_type_is_direct(tmp_path: Path) -> None:
    web = FakeWeb()
    web.route("videos.example.com", serve_bytes(VIDEO, "text/plain"))

    media = run_import(web, "http://videos.example.com/raw/clip.webm", tmp_path / "dest")

    assert media.filename == "clip.webm"
    assert media.size_bytes == len(VIDEO)


def test_audio_without_extension_gets_one_from_its_type(tmp_path: Path) -> None:
    web = FakeWeb()
    web.route("videos.example.com", serve_bytes(VIDEO, "audio/mpeg"))

    media = run_import(web, "http://videos.example.com/stream", tmp_path / "dest")

    assert media.filename == "stream.mp3"
    assert media.content_type == "audio/mpeg"


def test_declared_size_over_limit_fails_before_download(tmp_path: Path) -> None:
    web = FakeWeb()
    web.route("videos.example.com", serve_bytes(VIDEO, "video/mp4"))
    dest = tmp_path / "dest"

    with pytest.raises(ObjectTooLarge) as excinfo:
        run_import(web, "http://videos.example.com/clip.mp4", dest, max_bytes=len(VIDEO) - 1)

    assert excinfo.value.max_bytes == len(VIDEO) - 1
    # Callers that only know about import failures still see a final, readable error.
    assert isinstance(excinfo.value, ImportFailed)
    assert not excinfo.value.retryable
    assert f"{len(VIDEO) - 1} bytes" in excinfo.value.message
    assert files_in(dest) == []


def test_undeclared_size_over_limit_stops_streaming_and_leaves_nothing(tmp_path: Path) -> None:
    sent_chunks = 0

    def long_stream() -> Iterator[bytes]:
        # 6.5 MB without a Content-Length; bounded so a broken limit fails instead of hanging.
        nonlocal sent_chunks
        for _ in range(100):
            sent_chunks += 1
            yield b"\0" * 65_536

    web = FakeWeb()
    web.route(
        "videos.example.com",
        lambda request: httpx.Response(
            200, headers={"Content-Type": "video/mp4"}, content=long_stream()
        ),
    )
    dest = tmp_path / "dest"

    with pytest.raises(ObjectTooLarge):
        run_import(web, "http://videos.example.com/live.mp4", dest, max_bytes=1_000_000)

    assert sent_chunks < 40  # stopped near 1 MB instead of reading forever
    assert files_in(dest) == []


def test_exactly_max_bytes_is_accepted(tmp_path: Path) -> None:
    web = FakeWeb()
    web.route("videos.example.com", serve_bytes(VIDEO, "video/mp4"))

    media = run_import(
        web, "http://videos.example.com/clip.mp4", tmp_path / "dest", max_bytes=len(VIDEO)
    )

    assert media.size_bytes == len(VIDEO)


def test_network_error_is_a_retryable_import_failure(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    web = FakeWeb()
    web.route("videos.example.com", refuse)

    with pytest.raises(ImportFailed) as excinfo:
        run_import(web, "http://videos.example.com/clip.mp4?token=secret", tmp_path / "dest")

    assert excinfo.value.retryable
    assert "videos.example.com" in excinfo.value.message
    assert "secret" not in excinfo.value.message
    assert files_in(tmp_path / "dest") == []


# --- pages: yt-dlp --------------------------------------------------------------------


def test_page_from_unsupported_site_fails_readably(tmp_path: Path) -> None:
    web = FakeWeb()
    web.route("videos.example.com", serve_html())

    with pytest.raises(ImportFailed, match="no video found") as excinfo:
        run_import(web, "https://videos.example.com/blog/post", tmp_path / "dest")

    assert not excinfo.value.retryable
    assert web.hosts == ["videos.example.com"]
    assert files_in(tmp_path / "dest") == []


def test_error_page_reports_the_http_status(tmp_path: Path) -> None:
    web = FakeWeb()
    web.route("videos.example.com", serve_html(status=404))

    with pytest.raises(ImportFailed, match="HTTP 404"):
        run_import(web, "https://videos.example.com/missing", tmp_path / "dest")


class FakeSiteIE(InfoExtractor):  # type: ignore[misc]
    """A site-specific extractor for videos.example.com, as yt-dlp has for real sites."""

    IE_NAME = "fakesite"
    _VALID_URL = r"https?://videos\.example\.com/(?P<kind>watch|list)/(?P<id>[a-z0-9]+)"
    media_url = "https://media.example.com/v/abc.mp4"

    def _real_extract(self, url: str) -> dict[str, Any]:
        kind, video_id = self._match_valid_url(url).group("kind", "id")
        if kind == "list":
            playlist: dict[str, Any] = self.playlist_result(
                [
                    self.url_result(f"https://videos.example.com/watch/{n}", FakeSiteIE)
                    for n in ("a1", "b2")
                ],
                video_id,
            )
            return playlist
        return {
            "id": video_id,
            "title": "Keynote: part 1/2",
            "formats": [
                {
                    "format_id": "720p",
                    "url": self.media_url,
                    "ext": "mp4",
                    "height": 720,
                    "vcodec": "avc1",
                    "acodec": "mp4a",
                }
            ],
        }


class YtdlpSpy:
    """Replaces yt-dlp's downloader step: records what it was asked to fetch."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.downloads: list[str] = []

    def dl(self, ydl: Any, name: str, info: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.downloads.append(info["url"])
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_bytes(self.payload)
        return True, True


@pytest.fixture
def fake_site(monkeypatch: pytest.MonkeyPatch) -> YtdlpSpy:
    """yt-dlp with only FakeSiteIE registered and no real network downloads."""
    spy = YtdlpSpy(VIDEO)
    monkeypatch.setattr(
        yt_dlp.YoutubeDL,
        "add_default_info_extractors",
        lambda self: self.add_info_extractor(FakeSiteIE()),
    )
    monkeypatch.setattr(
        yt_dlp.YoutubeDL, "dl", lambda self, name, info, *a, **k: spy.dl(self, name, info)
    )
    return spy


def site_web() -> FakeWeb:
    web = FakeWeb()
    web.route("videos.example.com", serve_html())
    return web


def test_supported_site_downloads_through_ytdlp(fake_site: YtdlpSpy, tmp_path: Path) -> None:
    dest = tmp_path / "dest"

    media = run_import(site_web(), "https://videos.example.com/watch/xyz9", dest)

    assert fake_site.downloads == [FakeSiteIE.media_url]
    assert media.path.read_bytes() == VIDEO
    assert media.size_bytes == len(VIDEO)
    assert media.filename == "Keynote_part_1_2.mp4"
    assert media.content_type == "video/mp4"
    assert media.final_url == "https://videos.example.com/watch/xyz9"
    assert files_in(dest) == ["Keynote_part_1_2.mp4"]


@pytest.mark.parametrize(
    "media_url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[::ffff:127.0.0.1]:8080/v.mp4",
        "https://internal.example.com/v.mp4",
    ],
)
def test_extracted_media_url_is_checked_before_ytdlp_downloads(
    fake_site: YtdlpSpy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, media_url: str
) -> None:
    monkeypatch.setattr(FakeSiteIE, "media_url", media_url)
    dest = tmp_path / "dest"

    with pytest.raises(UrlNotAllowed):
        run_import(site_web(), "https://videos.example.com/watch/xyz9", dest)

    assert fake_site.downloads == []
    assert files_in(dest) == []


def test_playlists_are_refused_without_downloading(fake_site: YtdlpSpy, tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match="playlist"):
        run_import(site_web(), "https://videos.example.com/list/pl1", tmp_path / "dest")

    assert fake_site.downloads == []
    assert files_in(tmp_path / "dest") == []


def test_ytdlp_result_over_limit_is_discarded(fake_site: YtdlpSpy, tmp_path: Path) -> None:
    dest = tmp_path / "dest"

    with pytest.raises(ObjectTooLarge):
        run_import(
            site_web(), "https://videos.example.com/watch/xyz9", dest, max_bytes=len(VIDEO) - 1
        )

    assert files_in(dest) == []


def test_server_error_page_is_a_retryable_failure(tmp_path: Path) -> None:
    web = FakeWeb()
    web.route("videos.example.com", serve_html(status=503))

    with pytest.raises(ImportFailed, match="HTTP 503") as excinfo:
        run_import(web, "https://videos.example.com/clip.mp4", tmp_path / "dest")

    assert excinfo.value.retryable
    assert files_in(tmp_path / "dest") == []


# --- cancellation (inside an activity's cancel scope) ------------------------------------------


def test_a_canceled_scope_makes_no_request(tmp_path: Path) -> None:
    web = FakeWeb()
    web.route("videos.example.com", serve_bytes(VIDEO, "video/mp4"))
    scope = CancelScope()
    scope.cancel()

    with pytest.raises(Cancelled):
        scope.run(lambda: run_import(web, "http://videos.example.com/clip.mp4", tmp_path / "d"))

    assert web.seen == []
    assert files_in(tmp_path / "d") == []


def test_cancel_mid_download_stops_reading_and_leaves_nothing(tmp_path: Path) -> None:
    scope = CancelScope()
    sent_chunks = 0

    def endless() -> Iterator[bytes]:
        nonlocal sent_chunks
        for _ in range(1000):  # bounded: a broken cancel fails instead of hanging
            sent_chunks += 1
            if sent_chunks == 5:
                scope.cancel()  # as the activity's event loop would, mid-stream
            yield b"\0" * 4096

    web = FakeWeb()
    web.route(
        "videos.example.com",
        lambda request: httpx.Response(
            200, headers={"Content-Type": "video/mp4"}, content=endless()
        ),
    )
    dest = tmp_path / "dest"

    with pytest.raises(Cancelled):
        scope.run(lambda: run_import(web, "http://videos.example.com/live.mp4", dest))

    assert sent_chunks <= 6
    assert files_in(dest) == []


def test_a_canceled_ytdlp_download_stops_at_its_next_progress_report() -> None:
    guard = _Guard(FakeResolver(), max_bytes=1_000_000)
    scope = CancelScope()
    status = {"status": "downloading", "downloaded_bytes": 4096, "total_bytes": 500_000}

    scope.run(lambda: guard.progress(status))  # not canceled: carries on
    scope.cancel()
    with pytest.raises(Cancelled):
        scope.run(lambda: guard.progress(status))
    guard.progress(status)  # outside any scope (a CLI import): nothing to cancel


# --- resuming a direct download --------------------------------------------------------------

ETAG = '"v1-abc"'


def ranged(data: bytes, *, etag: str = ETAG, break_after: int | None = None) -> Any:
    """Serves `data`, honouring `Range` with a matching `If-Range`; may cut the body short."""
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        wanted = request.headers.get("range")
        seen.append(wanted)
        start = 0
        if wanted and request.headers.get("if-range") == etag:
            start = int(wanted.removeprefix("bytes=").removesuffix("-"))
        body = data[start:]
        headers = {"Content-Type": "video/mp4", "ETag": etag, "Content-Length": str(len(body))}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"

        def stream() -> Iterator[bytes]:
            for offset in range(0, len(body), 16_384):
                if break_after is not None and offset >= break_after and not start:
                    raise httpx.ReadError("connection reset by peer")
                yield body[offset : offset + 16_384]

        return httpx.Response(206 if start else 200, headers=headers, content=stream())

    handler.seen = seen  # type: ignore[attr-defined]
    return handler


@pytest.fixture
def small_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(url_import, "CHECKPOINT_BYTES", 32_768)


def import_in_scope(
    web: FakeWeb, dest: Path, resume: ResumePoint | None = None
) -> tuple[DownloadedMedia | BaseException, dict[str, Any]]:
    """Run an import as an activity would (a scope, partials kept); result and progress."""
    scope = CancelScope()
    resolver = FakeResolver()

    def run() -> DownloadedMedia:
        with guarded_client(resolver, transport=web.transport()) as client:
            return download_url(
                "http://videos.example.com/talk.mp4",
                dest,
                10_000_000,
                resolve=resolver,
                client=client,
                resume=resume,
                keep_partial=True,
            )

    try:
        return scope.run(run), scope.progress()
    except ImportFailed as exc:
        return exc, scope.progress()


@pytest.mark.usefixtures("small_checkpoints")
def test_a_broken_download_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    web = FakeWeb()
    first_server = ranged(VIDEO, break_after=200_000)
    web.route("videos.example.com", first_server)
    dest = tmp_path / "import"

    failed, progress = import_in_scope(web, dest)

    assert isinstance(failed, ImportFailed) and failed.retryable
    point = ResumePoint.from_progress(progress["partial"])
    assert point is not None and point.validator == ETAG and point.size_bytes == len(VIDEO)
    assert 32_768 <= point.bytes_done <= 200_000
    assert files_in(dest) == [".partial", ".partial.json"]  # kept for the retry

    second_server = ranged(VIDEO)
    web.route("videos.example.com", second_server)
    media, progress = import_in_scope(web, dest, point)

    assert isinstance(media, DownloadedMedia)
    assert second_server.seen == [f"bytes={point.bytes_done}-"]
    assert media.path.read_bytes() == VIDEO
    assert media.size_bytes == len(VIDEO)
    assert files_in(dest) == ["talk.mp4"]
    # Verified, the point was recorded again, then moved on with new checkpoints.
    assert progress["partial"]["bytes_done"] > point.bytes_done


@pytest.mark.usefixtures("small_checkpoints")
def test_a_file_changed_on_the_server_is_downloaded_whole(tmp_path: Path) -> None:
    web = FakeWeb()
    web.route("videos.example.com", ranged(VIDEO, break_after=100_000))
    dest = tmp_path / "import"
    _, progress = import_in_scope(web, dest)
    point = ResumePoint.from_progress(progress["partial"])
    assert point is not None

    changed = bytes(reversed(VIDEO))
    server = ranged(changed, etag='"v2-def"')  # If-Range no longer matches: 200, all of it
    web.route("videos.example.com", server)
    media, _ = import_in_scope(web, dest, point)

    assert isinstance(media, DownloadedMedia)
    assert server.seen == [f"bytes={point.bytes_done}-"]
    assert media.path.read_bytes() == changed


@pytest.mark.parametrize(
    "tamper",
    [
        lambda dest: (dest / ".partial").write_bytes(b"short"),  # fewer bytes than claimed
        lambda dest: (dest / ".partial.json").write_text('{"validator": "\\"other\\""}'),
        lambda dest: (dest / ".partial").unlink(),
    ],
)
@pytest.mark.usefixtures("small_checkpoints")
def test_a_resume_point_the_disk_does_not_back_starts_over(tmp_path: Path, tamper: Any) -> None:
    web = FakeWeb()
    web.route("videos.example.com", ranged(VIDEO, break_after=100_000))
    dest = tmp_path / "import"
    _, progress = import_in_scope(web, dest)
    point = ResumePoint.from_progress(progress["partial"])
    assert point is not None
    tamper(dest)

    server = ranged(VIDEO)
    web.route("videos.example.com", server)
    media, _ = import_in_scope(web, dest, point)

    assert isinstance(media, DownloadedMedia)
    assert server.seen == [None]  # asked for the whole file
    assert media.path.read_bytes() == VIDEO


@pytest.mark.usefixtures("small_checkpoints")
def test_a_part_that_does_not_continue_the_file_is_refused(tmp_path: Path) -> None:
    web = FakeWeb()
    web.route("videos.example.com", ranged(VIDEO, break_after=100_000))
    dest = tmp_path / "import"
    _, progress = import_in_scope(web, dest)
    point = ResumePoint.from_progress(progress["partial"])
    assert point is not None

    def wrong_range(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            206,
            headers={"Content-Type": "video/mp4", "Content-Range": f"bytes 0-99/{len(VIDEO)}"},
            content=VIDEO[:100],
        )

    web.route("videos.example.com", wrong_range)
    failed, _ = import_in_scope(web, dest, point)

    assert isinstance(failed, ImportFailed) and failed.retryable
    assert files_in(dest) == []  # nothing trusted is left: the next attempt starts over


def test_no_checkpoints_without_a_validator(tmp_path: Path) -> None:
    web = FakeWeb()
    web.route("videos.example.com", serve_bytes(VIDEO, "video/mp4"))  # no ETag, no date
    media, progress = import_in_scope(web, tmp_path / "import")
    assert isinstance(media, DownloadedMedia)
    assert "partial" not in progress


@pytest.mark.parametrize(
    "value",
    [
        None,
        "12",
        {"bytes_done": 0, "validator": ETAG, "size_bytes": 10},
        {"bytes_done": 10, "validator": ETAG, "size_bytes": 10},
        {"bytes_done": 5, "validator": "", "size_bytes": 10},
        {"bytes_done": "5", "validator": ETAG, "size_bytes": 10},
    ],
)
def test_malformed_resume_points_are_ignored(value: object) -> None:
    assert ResumePoint.from_progress(value) is None
