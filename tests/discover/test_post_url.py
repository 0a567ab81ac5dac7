"""A single post URL read with yt-dlp behind the SSRF guard, against a local web server.

yt-dlp's site extractors only speak to instagram.com and tiktok.com, so the tests serve a post
page that its generic extractor reads (schema.org JSON-LD, as many video pages carry) and map
that extractor to a platform explicitly; production runs the two site extractors only, which
the test of an unsupported URL shows.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from reelflow.core.errors import DomainError
from reelflow.discover.post_url import post_from_info, read_post
from schemas.discover import Platform
from schemas.failures import FailureCode

LOCAL = ("127.0.0.1",)
AS_TIKTOK = {"Generic": Platform.TIKTOK}


def post_page(base: str) -> bytes:
    video = {
        "@context": "https://schema.org",
        "@type": "VideoObject",
        "name": "Morning routine",
        "description": "Morning routine #fyp",
        "contentUrl": f"{base}/media/7401.mp4",
        "uploadDate": "2025-08-11T13:22:59Z",
        "duration": "PT25S",
        "author": {"@type": "Person", "name": "@Pixxie_Official"},
        "interactionStatistic": [
            _counter("WatchAction", 108_442),
            _counter("LikeAction", 7_292),
            _counter("CommentAction", 8),
        ],
    }
    return (
        "<html><head><title>Morning routine</title>"
        f'<script type="application/ld+json">{json.dumps(video)}</script>'
        "</head><body>post</body></html>"
    ).encode()


def _counter(action: str, count: int) -> dict[str, Any]:
    return {
        "@type": "InteractionCounter",
        "interactionType": f"https://schema.org/{action}",
        "userInteractionCount": count,
    }


class PostSite:
    """Serves `/post/7401` (a post page), its media file, and 404/410/503 pages."""

    def __init__(self) -> None:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

            def do_GET(self) -> None:
                status, kind, body = site.answer(self.path)
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def do_HEAD(self) -> None:
                status, kind, body = site.answer(self.path)
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def answer(self, path: str) -> tuple[int, str, bytes]:
        if path == "/post/7401":
            return 200, "text/html; charset=utf-8", post_page(self.url)
        if path.startswith("/media/"):
            return 200, "video/mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(64)
        if path == "/post/gone":
            return 410, "text/html", b"<html>This post has been removed</html>"
        if path == "/post/busy":
            return 503, "text/html", b"<html>try later</html>"
        return 404, "text/html", b"<html>Sorry, this page isn't available.</html>"

    def __enter__(self) -> PostSite:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def site() -> Iterator[PostSite]:
    with PostSite() as running:
        yield running


def test_a_post_page_becomes_a_post_with_its_counts(site: PostSite) -> None:
    post = read_post(f"{site.url}/post/7401", allowed_hosts=LOCAL, extractors=AS_TIKTOK)

    assert post.platform is Platform.TIKTOK
    assert post.post_id == "7401"
    assert post.account == "pixxie_official"
    assert post.posted_at == datetime(2025, 8, 11, 13, 22, 59, tzinfo=UTC)
    assert (post.views, post.likes, post.comments) == (108_442, 7_292, 8)
    assert (post.shares, post.saves) == (None, None)  # not reported, not zero
    assert post.duration_s == 25.0
    assert post.caption == "Morning routine #fyp"
    assert post.url == f"{site.url}/post/7401"


def test_a_local_address_is_refused_without_the_test_allowlist(site: PostSite) -> None:
    with pytest.raises(DomainError) as failure:
        read_post(f"{site.url}/post/7401", extractors=AS_TIKTOK)
    assert failure.value.code is FailureCode.URL_NOT_ALLOWED
    assert "loopback" in str(failure.value)


def test_a_removed_or_missing_post_is_unavailable(site: PostSite) -> None:
    for path in ("/post/gone", "/post/nothing-here"):
        with pytest.raises(DomainError) as failure:
            read_post(f"{site.url}{path}", allowed_hosts=LOCAL, extractors=AS_TIKTOK)
        assert failure.value.code is FailureCode.POST_UNAVAILABLE, path


def test_a_site_that_does_not_answer_properly_is_worth_retrying(site: PostSite) -> None:
    with pytest.raises(DomainError) as failure:
        read_post(f"{site.url}/post/busy", allowed_hosts=LOCAL, extractors=AS_TIKTOK)
    assert failure.value.code is FailureCode.IMPORT_UNAVAILABLE
    assert failure.value.retryable


def test_production_extractors_refuse_a_page_that_is_not_a_post(site: PostSite) -> None:
    # Same page, default extractors (Instagram and TikTok only): no generic scraping.
    with pytest.raises(DomainError) as failure:
        read_post(f"{site.url}/post/7401", allowed_hosts=LOCAL)
    assert failure.value.code is FailureCode.IMPORT_FAILED
    assert "Instagram or TikTok" in str(failure.value)


def test_metadata_without_id_or_from_another_site_is_refused() -> None:
    instagram: dict[str, Any] = {
        "extractor_key": "Instagram",
        "id": "DNN1r3NSBlA",
        "channel": "Pixxie_Official",
        "uploader": "PiXXiE",
        "uploader_id": "44294240959",
        "view_count": -5,
        "like_count": 7292,
        "timestamp": 1754918579,
    }
    post = post_from_info(instagram, {"Instagram": Platform.INSTAGRAM})
    assert (post.platform, post.account, post.views, post.likes) == (
        Platform.INSTAGRAM,
        "pixxie_official",  # the username, not the display name or the numeric id
        None,  # a negative count is unreadable, not a count
        7292,
    )

    tiktok = {
        "extractor_key": "TikTok",
        "id": "7106594312292453675",
        "uploader": "leenabhushan",
        "uploader_id": "6691488002098119685",
        "channel": "Leena Bhushan",
        "view_count": 1_200_000,
        "repost_count": 310,
        "save_count": 4_100,
        "channel_follower_count": 52_000,
        "duration": 12,
    }
    post = post_from_info(tiktok, {"TikTok": Platform.TIKTOK})
    assert (post.account, post.views, post.shares, post.saves, post.followers) == (
        "leenabhushan",
        1_200_000,
        310,
        4_100,
        52_000,
    )

    cases: list[tuple[dict[str, Any], str]] = [
        ({**instagram, "id": None}, "no id"),
        ({**instagram, "extractor_key": "Youtube"}, "supported platform"),
        (
            {
                key: v
                for key, v in instagram.items()
                if key not in ("channel", "uploader", "uploader_id")
            },
            "no account",
        ),
        ({"_type": "playlist", "entries": []}, "single post"),
    ]
    for info, reason in cases:
        with pytest.raises(DomainError) as failure:
            post_from_info(info, {"Instagram": Platform.INSTAGRAM})
        assert failure.value.code is FailureCode.IMPORT_FAILED
        assert reason in str(failure.value)
