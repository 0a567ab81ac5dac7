"""One post from its URL: yt-dlp reads the post's metadata (no download) for a scrape.

Only Instagram and TikTok posts are read: yt-dlp runs with their site extractors alone (and
TikTok's short-link resolver), never the ``generic`` one, which would scrape any page of any
host. The URL passes the SSRF guard first (:func:`reelflow.core.netguard.check_url`); as in
``reelflow.ingest.url_import``, yt-dlp then fetches the page with its own HTTP stack, so its
connection is not pinned to the checked address and its redirects are not re-checked.

Account handles per platform (yt-dlp's field names): Instagram's username is ``channel``
(``uploader`` is the display name, ``uploader_id`` the numeric id); TikTok's is ``uploader``
(``channel`` is the nickname). Views are yt-dlp's ``view_count`` (TikTok: plays).

Tests read posts from a local server through the generic extractor: they pass
``extractors={"Generic": <platform>}`` and the server in ``allowed_hosts``. Production code
passes neither, so neither the generic extractor nor a local host is ever reachable.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import yt_dlp
from yt_dlp.extractor import get_info_extractor

from reelflow.core.errors import DomainError
from reelflow.core.netguard import Resolver, UrlNotAllowed, check_url, system_resolver
from reelflow.discover.apify_source import normalize_handle
from schemas.discover import Platform, ScrapedPost
from schemas.failures import FailureCode

logger = logging.getLogger(__name__)

POST_EXTRACTORS: Mapping[str, Platform] = {
    "Instagram": Platform.INSTAGRAM,
    "TikTok": Platform.TIKTOK,
}
"""yt-dlp extractor key → the platform its posts belong to."""

_RESOLVERS = ("vm.tiktok",)
"""Extractors that only turn a short link into a post URL another extractor reads."""

_HANDLE_FIELDS: Mapping[Platform, Sequence[str]] = {
    Platform.INSTAGRAM: ("channel", "uploader_id", "uploader"),
    Platform.TIKTOK: ("uploader", "uploader_id", "channel"),
}

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GONE_HINTS = (
    "HTTP Error 404",
    "HTTP Error 410",
    "private",
    "not available",
    "unavailable",
    "has been removed",
    "been deleted",
    "does not exist",
    "no longer",
)
_TRANSIENT_HINTS = (
    "timed out",
    "HTTP Error 5",
    "HTTP Error 429",
    "Connection reset",
    "Connection refused",
    "Temporary failure",
)


class _QuietLogger:
    """yt-dlp's chatter goes to our debug log; failures surface as exceptions."""

    def debug(self, msg: str) -> None:
        logger.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        logger.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        logger.debug("yt-dlp warning: %s", msg)

    def error(self, msg: str) -> None:
        logger.debug("yt-dlp error: %s", msg)


def read_post(
    url: str,
    *,
    allowed_hosts: Collection[str] = (),
    extractors: Mapping[str, Platform] = POST_EXTRACTORS,
    resolve: Resolver = system_resolver,
) -> ScrapedPost:
    """Read one post's metadata (counts, author, time, duration) from its URL.

    Args:
        url: The post's URL as a user pasted it.
        allowed_hosts: Test only (``Settings.import_test_allowed_hosts``): local hosts the
            SSRF guard lets through.
        extractors: yt-dlp extractor key → platform; only these extractors run. Tests add
            ``"Generic"``; production keeps the default.
        resolve: Host name resolver for the SSRF check.

    Returns:
        The post, normalised like a dataset row.

    Raises:
        DomainError: `URL_NOT_ALLOWED` for a URL the guard refuses (a private address);
            `POST_UNAVAILABLE` for a deleted or private post; `IMPORT_FAILED` for a URL that
            is not a supported platform's post or whose metadata lacks an id or an account;
            `IMPORT_UNAVAILABLE` when the site did not answer or answered 5xx/429.
    """
    try:
        checked = check_url(url, resolve, allowed_hosts=allowed_hosts)
    except UrlNotAllowed as exc:
        code = FailureCode.IMPORT_UNAVAILABLE if exc.retryable else FailureCode.URL_NOT_ALLOWED
        raise DomainError(code, exc.reason) from None
    try:
        with yt_dlp.YoutubeDL(_params(extractors)) as ydl:
            info = ydl.extract_info(checked.url, download=False)
    except Exception as exc:
        raise _failure(exc) from None
    if not isinstance(info, dict):
        raise DomainError(FailureCode.IMPORT_FAILED, "the site returned nothing for this URL")
    post = post_from_info(info, extractors)
    logger.info("read %s post %s", post.platform.value, post.post_id)
    return post


def post_from_info(info: Mapping[str, Any], extractors: Mapping[str, Platform]) -> ScrapedPost:
    """Map yt-dlp's info dict onto a post.

    Raises:
        DomainError: `IMPORT_FAILED` for a playlist, an extractor that is not a post
            platform's, or a missing id or account.
    """
    if info.get("_type") in ("playlist", "multi_video"):
        raise DomainError(
            FailureCode.IMPORT_FAILED, "this URL lists several posts; paste a single post's URL"
        )
    extractor = str(info.get("extractor_key") or info.get("extractor") or "")
    platform = extractors.get(extractor)
    if platform is None:
        supported = ", ".join(sorted(p.value for p in set(extractors.values())))
        raise DomainError(
            FailureCode.IMPORT_FAILED,
            f"this URL is not a post of a supported platform ({supported})",
        )
    post_id = _text(info.get("id"))
    if post_id is None:
        raise DomainError(FailureCode.IMPORT_FAILED, "the post's metadata has no id")
    account = next(
        (
            handle
            for field in _HANDLE_FIELDS[platform]
            if (handle := normalize_handle(_text(info.get(field)) or ""))
        ),
        None,
    )
    if account is None:
        raise DomainError(FailureCode.IMPORT_FAILED, "the post's metadata names no account")
    timestamp = info.get("timestamp")
    duration = info.get("duration")
    return ScrapedPost(
        platform=platform,
        post_id=post_id[:200],
        account=account[:200],
        url=_text(info.get("webpage_url")),
        # Media URLs of both platforms are signed and expire within hours: the download
        # step reads the post URL again instead.
        video_url=None,
        caption=_text(info.get("description")),
        posted_at=(
            datetime.fromtimestamp(timestamp, UTC)
            if isinstance(timestamp, int | float) and not isinstance(timestamp, bool)
            else None
        ),
        duration_s=float(duration) if isinstance(duration, int | float) and duration > 0 else None,
        views=_count(info.get("view_count")),
        likes=_count(info.get("like_count")),
        comments=_count(info.get("comment_count")),
        shares=_count(info.get("repost_count")),
        saves=_count(info.get("save_count")),
        followers=_count(info.get("channel_follower_count")),
        is_video=bool(info.get("formats") or info.get("url") or _is_number(duration)),
    )


def _params(extractors: Mapping[str, Platform]) -> dict[str, Any]:
    names = [get_info_extractor(key).IE_NAME for key in extractors]
    return {
        # Exact names (they are matched as regular expressions, case-insensitively).
        "allowed_extractors": [re.escape(name) for name in [*names, *_RESOLVERS]],
        "noplaylist": True,
        "extract_flat": "in_playlist",
        "skip_download": True,
        "cachedir": False,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "color": {"stdout": "no_color", "stderr": "no_color"},
        "logger": _QuietLogger(),
        "socket_timeout": 30,
        "retries": 1,
    }


def _failure(exc: BaseException) -> DomainError:
    text = re.sub(r"^ERROR:\s*", "", _ANSI.sub("", str(exc)).strip())
    if "Unsupported URL" in text or "No suitable extractor" in text:
        return DomainError(
            FailureCode.IMPORT_FAILED, "this URL is not an Instagram or TikTok post's URL"
        )
    if any(hint in text for hint in _TRANSIENT_HINTS):
        return DomainError(
            FailureCode.IMPORT_UNAVAILABLE, f"the site did not answer properly: {text[:300]}"
        )
    if any(hint.lower() in text.lower() for hint in _GONE_HINTS):
        return DomainError(
            FailureCode.POST_UNAVAILABLE,
            f"the post is deleted, private or unavailable: {text[:300]}",
        )
    return DomainError(FailureCode.IMPORT_FAILED, f"the post could not be read: {text[:300]}")


def _text(value: object) -> str | None:
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value).strip()
        return text or None
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: object) -> int | None:
    if _is_number(value):
        assert isinstance(value, int | float)
        return int(value) if value >= 0 else None
    return None
