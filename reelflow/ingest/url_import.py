"""Download a user-supplied video URL to a local directory, safely and within a size limit.

Two kinds of URL are supported:

* **Direct media files** (the server answers with ``video/*``, ``audio/*`` or a generic
  binary type, or the path ends in a media extension). They are streamed through the
  SSRF-guarded client from :mod:`reelflow.core.netguard`: every redirect hop is checked, the
  connection is pinned to the checked IP, and the size limit is enforced while streaming.
* **Pages on supported video sites** (YouTube, Vimeo, ...). They go through yt-dlp,
  restricted to its site-specific extractors: the ``generic`` extractor, which would scrape
  any page for embedded media, is disabled. Playlists are refused.

This module is blocking; it runs inside a Temporal activity on a thread pool. Inside a
cancel scope (:mod:`reelflow.core.cancellation`) a canceled import stops: the direct
download between reads (its socket is shut if the server is silent) and yt-dlp at its next
progress callback, raising :class:`~reelflow.core.cancellation.Cancelled`.

Residual risk (yt-dlp path): the page URL and the media URL that yt-dlp selected are checked
by :func:`reelflow.core.netguard.check_url` before yt-dlp downloads anything, but yt-dlp then
uses its own HTTP stack. Its requests are not pinned to the checked IP (a DNS answer that
changes between our check and its connect is not caught), HTTP redirects it follows while
extracting or downloading are not re-checked, and for segmented formats (HLS/DASH) only the
manifest and fragment base URLs are checked, not every segment URL. Progressive single-file
HTTPS formats are preferred partly to keep that surface small. Workers should still run with
egress rules that block private ranges and the metadata endpoint as a second line of defence.
"""

from __future__ import annotations

import email.message
import fcntl
import json
import logging
import mimetypes
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

import httpx
import yt_dlp
from yt_dlp.postprocessor.common import PostProcessor

from reelflow.core import cancellation
from reelflow.core.netguard import (
    Resolver,
    UrlNotAllowed,
    check_url,
    guarded_client,
    open_guarded,
    system_resolver,
)
from reelflow.core.storage import ObjectTooLarge

logger = logging.getLogger(__name__)

__all__ = [
    "MEDIA_EXTENSIONS",
    "DownloadedMedia",
    "ImportFailed",
    "MediaTooLarge",
    "ObjectTooLarge",
    "ResumePoint",
    "UrlNotAllowed",
    "download_url",
    "resumable_workdir",
]

MEDIA_EXTENSIONS = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".wmv",
        ".flv",
        ".mpeg",
        ".mpg",
        ".ts",
        ".3gp",
        ".ogv",
        ".mp3",
        ".m4a",
        ".aac",
        ".wav",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
    }
)
_BINARY_TYPES = frozenset(
    {"application/octet-stream", "binary/octet-stream", "application/mp4", "application/ogg"}
)
_PAGE_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_CHUNK = 256 * 1024
_MAX_FILENAME = 120

YTDLP_FORMAT = (
    # A single progressive MP4 with audio, at most 1080p, that fits; then looser fallbacks.
    "b[ext=mp4][height<=?1080][filesize<?{max}][protocol~='^https?$']"
    "/b[ext=mp4][height<=?1080][filesize<?{max}]"
    "/b[height<=?1080][filesize<?{max}]"
    "/b[height<=?1080]"
)


@dataclass(frozen=True)
class DownloadedMedia:
    """A media file downloaded into the destination directory.

    Attributes:
        path: Where the file is on disk (inside ``dest_dir``).
        filename: A safe, human-meaningful file name (same as ``path.name``).
        content_type: Media type from the server or guessed from the extension.
        size_bytes: Size of the file on disk.
        final_url: The URL the bytes came from, after redirects (for the page URL on the
            yt-dlp path, the page that was imported).
    """

    path: Path
    filename: str
    content_type: str | None
    size_bytes: int
    final_url: str


class ImportFailed(Exception):
    """The URL could not be imported; ``message`` is readable by the user.

    ``retryable`` is True for failures that may go away on their own (network errors,
    timeouts, 5xx answers), so the caller can decide whether to retry.
    """

    code = "import_failed"

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class MediaTooLarge(ImportFailed, ObjectTooLarge):
    """The media is over the size limit; nothing was kept. Never worth retrying."""

    def __init__(self, max_bytes: int) -> None:
        message = f"the video is larger than the import limit of {_human_size(max_bytes)}"
        Exception.__init__(self, message)
        self.message = message
        self.retryable = False
        self.max_bytes = max_bytes


def _human_size(size: int) -> str:
    if size >= 1024 * 1024 and size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MiB"
    return f"{size} bytes"


def download_url(
    url: str,
    dest_dir: Path,
    max_bytes: int,
    *,
    resolve: Resolver = system_resolver,
    client: httpx.Client | None = None,
    resume: ResumePoint | None = None,
    keep_partial: bool = False,
    allowed_hosts: Collection[str] = (),
) -> DownloadedMedia:
    """Download the media behind ``url`` into ``dest_dir``, refusing more than ``max_bytes``.

    The URL is checked by the SSRF guard before any request is made. ``dest_dir`` should be
    a directory dedicated to this import; on failure nothing is left in it by this call,
    except with ``keep_partial`` after a failure worth retrying (see below).

    Resuming (direct media only): while a direct download runs, every
    :data:`CHECKPOINT_BYTES` the bytes so far are flushed to disk and recorded with
    :func:`reelflow.core.cancellation.record_progress` as ``partial`` (a
    :class:`ResumePoint` as a dict), when the server named the file with a strong ETag or
    a Last-Modified date. Called again with that ``resume`` and the same ``dest_dir``, the
    download asks for the rest only (``Range`` with ``If-Range``, so a file that changed
    on the server is sent whole instead) and appends it; anything that does not line up
    (no partial file of that length, another validator, a range that does not start where
    we stopped, another total size) starts from zero.

    Args:
        url: The URL the user asked to import.
        dest_dir: Directory for the downloaded file (created if missing).
        max_bytes: Largest file accepted.
        resolve: Host name resolver (tests inject one).
        client: HTTP client for direct downloads; defaults to a new
            :func:`reelflow.core.netguard.guarded_client`. Pass a guarded client: an arbitrary
            client still gets every hop checked but not the IP pinning.
        resume: Where an earlier attempt's direct download stopped (its last checkpoint).
        keep_partial: Keep the partial direct download in ``dest_dir`` when the failure is
            worth retrying (network errors, timeouts), so a retry can resume it.
        allowed_hosts: Test only (``Settings.import_test_allowed_hosts``): hosts the SSRF
            guard lets through although they are local; see
            :func:`reelflow.core.netguard.check_url`.

    Returns:
        What was downloaded and where.

    Raises:
        UrlNotAllowed: The URL, a redirect target or the extracted media URL is not allowed.
        MediaTooLarge: The media is larger than ``max_bytes`` (also an
            :class:`ImportFailed` and a :class:`reelflow.core.storage.ObjectTooLarge`).
        ImportFailed: Anything else went wrong (unsupported page, HTTP error, network).
    """
    if max_bytes < 1:
        raise ValueError("max_bytes must be positive")
    checked = check_url(url, resolve, allowed_hosts=allowed_hosts)
    dest_dir.mkdir(parents=True, exist_ok=True)
    host = checked.host
    logger.info("importing media from host %s", host)

    http = client if client is not None else guarded_client(resolve, allowed_hosts=allowed_hosts)
    status: int | None = None
    partial = _Partial.open(dest_dir, resume)
    # Media is already compressed; asking for identity also avoids decompression bombs.
    headers = {"Accept-Encoding": "identity", **partial.request_headers()}
    cancellation.raise_if_cancelled()
    try:
        with open_guarded(
            http, checked.url, resolve=resolve, headers=headers, allowed_hosts=allowed_hosts
        ) as response:
            status = response.status_code
            if response.is_success and _is_direct_media(response):
                # A canceled import stops even while the server sends nothing at all.
                with cancellation.on_cancel(lambda: _abort_stream(response)):
                    return _save_response(response, partial, max_bytes)
    except httpx.TimeoutException:
        cancellation.raise_if_cancelled()
        partial.keep_if(keep_partial)
        raise ImportFailed(f"the server at {host} did not answer in time", retryable=True) from None
    except httpx.HTTPError as exc:
        # Our own cancel shuts the socket, which reads as a network error: it is not one.
        cancellation.raise_if_cancelled()
        partial.keep_if(keep_partial)
        raise ImportFailed(
            f"could not download from {host}: {_describe_http_error(exc)}", retryable=True
        ) from None
    finally:
        partial.discard_unless_kept()
        if client is None:
            http.close()

    return _download_with_ytdlp(checked.url, dest_dir, max_bytes, resolve, status, allowed_hosts)


# --------------------------------------------------------------------------------------
# Direct media
# --------------------------------------------------------------------------------------


def _abort_stream(response: httpx.Response) -> None:
    """Unblock a thread reading `response` by shutting its socket (from another thread).

    Closing is not enough: a thread blocked in `recv` on a closed descriptor stays blocked,
    while `shutdown` wakes it with end-of-file at once.
    """
    stream = response.extensions.get("network_stream")
    get_extra_info = getattr(stream, "get_extra_info", None)
    sock = get_extra_info("socket") if callable(get_extra_info) else None
    if isinstance(sock, socket.socket):
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _media_type(response: httpx.Response) -> str:
    return str(response.headers.get("content-type", "")).split(";", 1)[0].strip().lower()


def _is_direct_media(response: httpx.Response) -> bool:
    media_type = _media_type(response)
    if media_type.startswith(("video/", "audio/")) or media_type in _BINARY_TYPES:
        return True
    if media_type in _PAGE_TYPES:
        return False
    return PurePosixPath(unquote(response.url.path)).suffix.lower() in MEDIA_EXTENSIONS


def _describe_http_error(exc: httpx.HTTPError) -> str:
    text = str(exc).strip()
    # httpx messages may embed the full URL (with tokens); keep only the error kind then.
    if not text or "://" in text:
        return type(exc).__name__
    return text


def safe_filename(name: str, default_stem: str = "download") -> str:
    """Reduce ``name`` to a short, portable file name (letters, digits, ``._-``).

    Args:
        name: Untrusted name (from a header, URL or video title).
        default_stem: Used when nothing usable remains.

    Returns:
        A name with no path separators, no leading dot and at most 120 characters.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._-")
    if not cleaned:
        cleaned = default_stem
    stem, dot, ext = cleaned.rpartition(".")
    if dot and 0 < len(ext) <= 8:
        return f"{stem[: _MAX_FILENAME - len(ext) - 1].rstrip('._-') or default_stem}.{ext}"
    return cleaned[:_MAX_FILENAME]


def _filename_for(response: httpx.Response, media_type: str) -> str:
    name = ""
    disposition = response.headers.get("content-disposition")
    if disposition:
        parsed = email.message.Message()
        parsed["content-disposition"] = disposition
        name = str(parsed.get_filename() or "")
    if not name:
        name = unquote(PurePosixPath(response.url.path).name)
    filename = safe_filename(name)
    if PurePosixPath(filename).suffix.lower() not in MEDIA_EXTENSIONS:
        guessed = mimetypes.guess_extension(media_type) if media_type else None
        if guessed in MEDIA_EXTENSIONS:
            filename = safe_filename(f"{filename}{guessed}")
    return filename


def _content_type_for(media_type: str, filename: str) -> str | None:
    if media_type and media_type not in _BINARY_TYPES:
        return media_type
    guessed, _encoding = mimetypes.guess_type(filename)
    return guessed or media_type or None


CHECKPOINT_BYTES = 8 * 1024 * 1024
"""A resumable direct download is flushed to disk and checkpointed this often."""

_PARTIAL = ".partial"
_PARTIAL_META = ".partial.json"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


@dataclass(frozen=True)
class ResumePoint:
    """Where a direct download stopped: bytes on disk, and what identifies the remote file.

    Attributes:
        bytes_done: Bytes written and flushed to the partial file at the last checkpoint.
        validator: The response's strong ETag, or its Last-Modified date (sent back as
            ``If-Range``: a file that changed on the server is then sent whole).
        size_bytes: The whole file's length, as the server declared it.
    """

    bytes_done: int
    validator: str
    size_bytes: int

    @classmethod
    def from_progress(cls, value: object) -> ResumePoint | None:
        """Read one back from heartbeat progress; None for anything malformed."""
        if not isinstance(value, dict):
            return None
        done, validator, size = (value.get(k) for k in ("bytes_done", "validator", "size_bytes"))
        if not (isinstance(done, int) and isinstance(size, int) and 0 < done < size):
            return None
        if not isinstance(validator, str) or not validator or len(validator) > 200:
            return None
        return cls(bytes_done=done, validator=validator, size_bytes=size)

    def as_progress(self) -> dict[str, Any]:
        return {
            "bytes_done": self.bytes_done,
            "validator": self.validator,
            "size_bytes": self.size_bytes,
        }


STALE_PARTIAL_S = 24 * 3600.0
"""Import directories untouched this long are someone's abandoned partial downloads."""


@contextmanager
def resumable_workdir(root: Path, name: str) -> Iterator[Path]:
    """A directory of `root` for one import, kept after a retryable failure for a resume.

    The same `name` (the video id) gives the same directory, so a retried attempt on this
    host finds the partial download. An exclusive lock keeps two attempts out of it at
    once. On success, on a final failure and on cancellation the directory is removed;
    after a failure worth retrying it stays. Directories of other imports left alone for
    :data:`STALE_PARTIAL_S` are removed on the way in.

    Raises:
        ImportFailed: Another attempt of the same import is still running here (retryable).
    """
    root.mkdir(parents=True, exist_ok=True)
    _prune_stale(root)
    workdir = root / safe_filename(name, default_stem="import")
    workdir.mkdir(exist_ok=True)
    lock = os.open(workdir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    keep = False
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            keep = True  # not ours to remove
            raise ImportFailed(
                "an earlier attempt of this import is still running", retryable=True
            ) from None
        try:
            yield workdir
        except ImportFailed as exc:
            keep = exc.retryable
            raise
    finally:
        os.close(lock)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _prune_stale(root: Path) -> None:
    now = time.time()
    for entry in root.iterdir():
        with suppress(OSError):
            if entry.is_dir() and now - entry.stat().st_mtime > STALE_PARTIAL_S:
                shutil.rmtree(entry, ignore_errors=True)


def _validator(response: httpx.Response) -> str | None:
    etag = str(response.headers.get("etag", ""))
    if etag.startswith('"') and etag.endswith('"') and len(etag) > 2:
        return etag  # strong ETags only: If-Range ignores weak ones
    last_modified = str(response.headers.get("last-modified", ""))
    return last_modified or None


class _Partial:
    """The partial file of one direct download in its import directory."""

    def __init__(self, dest_dir: Path, resume: ResumePoint | None) -> None:
        self.dest_dir = dest_dir
        self.path = dest_dir / _PARTIAL
        self.resume = resume
        self._keep = False

    @classmethod
    def open(cls, dest_dir: Path, resume: ResumePoint | None) -> _Partial:
        """Use the partial file only if it really holds `resume.bytes_done` bytes of it."""
        meta = dest_dir / _PARTIAL_META
        try:
            recorded = json.loads(meta.read_text(encoding="utf-8")) if resume else None
            on_disk = (dest_dir / _PARTIAL).stat().st_size if resume else 0
        except (OSError, ValueError):
            recorded, on_disk = None, 0
        if (
            resume is None
            or not isinstance(recorded, dict)
            or recorded.get("validator") != resume.validator
            or recorded.get("size_bytes") != resume.size_bytes
            or on_disk < resume.bytes_done
        ):
            resume = None
        partial = cls(dest_dir, resume)
        if resume is None:
            partial.clear()
        else:
            # Verified: say so at once, so this attempt's heartbeats keep the resume point
            # even if it dies before its own first checkpoint.
            cancellation.record_progress(partial=resume.as_progress())
        return partial

    def request_headers(self) -> dict[str, str]:
        if self.resume is None:
            return {}
        return {"Range": f"bytes={self.resume.bytes_done}-", "If-Range": self.resume.validator}

    def start_offset(self, response: httpx.Response) -> int:
        """Where the response's bytes go in the file: the resume point, or 0 (start over)."""
        if response.status_code != 206:
            return 0  # the whole file (a server that ignores Range, or a changed file)
        if self.resume is None:
            raise ImportFailed("the server sent part of the file when asked for all of it")
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
        if (
            match is None
            or int(match.group(1)) != self.resume.bytes_done
            or int(match.group(3)) != self.resume.size_bytes
            or _validator(response) not in (None, self.resume.validator)
        ):
            raise ImportFailed(
                "the server sent a part of the file that does not continue the download",
                retryable=True,
            )
        return self.resume.bytes_done

    def write_meta(self, validator: str, size_bytes: int) -> None:
        meta = {"validator": validator, "size_bytes": size_bytes}
        (self.dest_dir / _PARTIAL_META).write_text(json.dumps(meta), encoding="utf-8")

    def keep_if(self, keep: bool) -> None:
        self._keep = keep

    def clear(self) -> None:
        for name in (_PARTIAL, _PARTIAL_META):
            with suppress(FileNotFoundError):
                (self.dest_dir / name).unlink()

    def discard_unless_kept(self) -> None:
        if not self._keep:
            self.clear()


def _save_response(response: httpx.Response, partial: _Partial, max_bytes: int) -> DownloadedMedia:
    offset = partial.start_offset(response)
    declared = response.headers.get("content-length", "")
    total = offset + int(declared) if declared.isdigit() else None
    if total is not None and total > max_bytes:
        raise MediaTooLarge(max_bytes)

    media_type = _media_type(response)
    filename = _filename_for(response, media_type)
    target = partial.dest_dir / filename
    validator = _validator(response)
    checkpoints = validator is not None and total is not None
    if checkpoints:
        assert validator is not None and total is not None
        partial.write_meta(validator, total)
    # Chunks as they arrive (not re-chunked to a fixed size), so a slow server still lets
    # the size limit and a cancellation act between small reads.
    chunks = response.iter_bytes()
    with partial.path.open("r+b" if offset else "wb") as handle:
        handle.truncate(offset)
        handle.seek(offset)
        written = offset
        checkpoint = offset
        for chunk in chunks:
            cancellation.raise_if_cancelled()
            written += len(chunk)
            if written > max_bytes:
                raise MediaTooLarge(max_bytes)
            handle.write(chunk)
            if checkpoints and written - checkpoint >= CHECKPOINT_BYTES:
                # On disk for good before we say so: a retry may rely on these bytes.
                handle.flush()
                os.fsync(handle.fileno())
                checkpoint = written
                assert validator is not None and total is not None
                cancellation.record_progress(
                    partial=ResumePoint(written, validator, total).as_progress()
                )
    if total is not None and written != total:
        raise ImportFailed(
            f"the server at {response.url.host} sent {written} of {total} bytes", retryable=True
        )
    os.replace(partial.path, target)
    partial.clear()
    logger.info("downloaded %d bytes from host %s (%d resumed)", written, response.url.host, offset)
    return DownloadedMedia(
        path=target,
        filename=filename,
        content_type=_content_type_for(media_type, filename),
        size_bytes=written,
        final_url=str(response.url),
    )


# --------------------------------------------------------------------------------------
# Video sites through yt-dlp
# --------------------------------------------------------------------------------------


class _YtdlpLogger:
    """Sends yt-dlp's chatter to our log at debug level; errors surface as exceptions."""

    def debug(self, msg: str) -> None:
        logger.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        logger.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        logger.debug("yt-dlp warning: %s", msg)

    def error(self, msg: str) -> None:
        logger.debug("yt-dlp error: %s", msg)


class _Guard:
    """Shared by yt-dlp callbacks; remembers our own exception if yt-dlp wraps it."""

    def __init__(
        self, resolve: Resolver, max_bytes: int, allowed_hosts: Collection[str] = ()
    ) -> None:
        self.resolve = resolve
        self.max_bytes = max_bytes
        self.allowed_hosts = tuple(allowed_hosts)
        self.error: UrlNotAllowed | MediaTooLarge | None = None

    def check_media_urls(self, info: dict[str, Any]) -> None:
        try:
            seen: set[tuple[str, str, int | None]] = set()
            for media_url in _media_urls(info):
                try:
                    parsed = httpx.URL(media_url)
                except httpx.InvalidURL:
                    raise UrlNotAllowed("the video site returned a malformed media URL") from None
                origin = (parsed.scheme, parsed.host, parsed.port)
                if origin in seen:
                    continue  # one check per origin keeps long fragment lists cheap
                seen.add(origin)
                check_url(media_url, self.resolve, allowed_hosts=self.allowed_hosts)
        except UrlNotAllowed as exc:
            self.error = exc
            raise

    def progress(self, status: dict[str, Any]) -> None:
        # yt-dlp calls this after every block it reads: the place to stop a canceled import.
        cancellation.raise_if_cancelled()
        downloaded = status.get("downloaded_bytes") or 0
        total = status.get("total_bytes") or 0
        if downloaded > self.max_bytes or total > self.max_bytes:
            # yt-dlp only enforces max_filesize when the size is announced up front.
            self.error = MediaTooLarge(self.max_bytes)
            raise self.error


def _media_urls(info: dict[str, Any]) -> list[str]:
    """Every URL yt-dlp is about to fetch media from, as far as the info dict says."""
    urls: list[str] = []
    formats = info.get("requested_formats") or [info]
    for fmt in formats:
        for field in ("url", "manifest_url", "fragment_base_url"):
            value = fmt.get(field)
            if isinstance(value, str) and value:
                urls.append(value)
        for fragment in fmt.get("fragments") or []:
            value = fragment.get("url") if isinstance(fragment, dict) else None
            if isinstance(value, str) and value.startswith(("http://", "https://")):
                urls.append(value)
    if not urls:
        raise UrlNotAllowed("the video site did not return a media URL")
    return urls


class _CheckMediaUrlPP(PostProcessor):  # type: ignore[misc]
    """Runs right before yt-dlp downloads (``before_dl``) and checks the chosen URLs."""

    def __init__(self, guard: _Guard) -> None:
        super().__init__(None)
        self._guard = guard

    def run(self, info: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        self._guard.check_media_urls(info)
        return [], info


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


_TRANSIENT_HINTS = ("timed out", "HTTP Error 5", "Connection reset", "Temporary failure")


def _ytdlp_failure(exc: BaseException, page_status: int | None) -> ImportFailed:
    """Turn a yt-dlp error into a short message a user can act on."""
    text = _ANSI.sub("", str(exc)).strip()
    text = re.sub(r"^ERROR:\s*", "", text)
    if "No suitable extractor" in text or "Unsupported URL" in text:
        if page_status is not None and not 200 <= page_status < 300:
            return ImportFailed(
                f"the server answered HTTP {page_status} and the page is not a video file",
                retryable=page_status >= 500,
            )
        return ImportFailed(
            "no video found: the URL is neither a media file nor a page from a supported video site"
        )
    if "Requested format is not available" in text:
        return ImportFailed(
            "the video site offers no format we can import (single file, up to 1080p)"
        )
    return ImportFailed(
        f"the video site could not be imported: {text[:300]}",
        retryable=any(hint in text for hint in _TRANSIENT_HINTS),
    )


def _ytdlp_params(work: Path, max_bytes: int, guard: _Guard) -> dict[str, Any]:
    return {
        # Site-specific extractors only: "generic" would follow any page to any host.
        "allowed_extractors": ["default", "-generic"],
        "noplaylist": True,
        # Playlist entries are listed, not downloaded; we then refuse the playlist.
        "extract_flat": "in_playlist",
        "max_filesize": max_bytes,
        "format": YTDLP_FORMAT.format(max=max_bytes),
        "paths": {"home": str(work), "temp": str(work)},
        "outtmpl": {"default": "%(id).60B.%(ext)s"},
        "restrictfilenames": True,
        "windowsfilenames": True,
        "overwrites": True,
        "continuedl": False,
        "cachedir": False,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "color": {"stdout": "no_color", "stderr": "no_color"},
        "logger": _YtdlpLogger(),
        "progress_hooks": [guard.progress],
        "socket_timeout": 30,
        "retries": 3,
        "fragment_retries": 3,
        "concurrent_fragment_downloads": 1,
        "writeinfojson": False,
        "writethumbnail": False,
        "writesubtitles": False,
    }


def _download_with_ytdlp(
    url: str,
    dest_dir: Path,
    max_bytes: int,
    resolve: Resolver,
    page_status: int | None,
    allowed_hosts: Collection[str] = (),
) -> DownloadedMedia:
    cancellation.raise_if_cancelled()
    work = Path(tempfile.mkdtemp(prefix=".ytdlp-", dir=dest_dir))
    guard = _Guard(resolve, max_bytes, allowed_hosts)
    try:
        try:
            with yt_dlp.YoutubeDL(_ytdlp_params(work, max_bytes, guard)) as ydl:
                ydl.add_post_processor(_CheckMediaUrlPP(guard), when="before_dl")
                info = ydl.extract_info(url, download=True)
        except (UrlNotAllowed, MediaTooLarge):
            raise
        except Exception as exc:
            if guard.error is not None:
                raise guard.error from None
            raise _ytdlp_failure(exc, page_status) from None
        if not isinstance(info, dict):
            raise ImportFailed("the video site returned nothing to download")
        return _finish_ytdlp(info, work, dest_dir, url, max_bytes)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _finish_ytdlp(
    info: dict[str, Any], work: Path, dest_dir: Path, url: str, max_bytes: int
) -> DownloadedMedia:
    if info.get("_type") in ("playlist", "multi_video"):
        raise ImportFailed("this URL is a playlist; import the URL of a single video instead")
    downloads = info.get("requested_downloads") or []
    filepath = downloads[0].get("filepath") if downloads else None
    produced = Path(filepath) if isinstance(filepath, str) else None
    if produced is None or not produced.is_file() or not produced.is_relative_to(work):
        announced = info.get("filesize") or info.get("filesize_approx") or 0
        if announced > max_bytes:
            raise MediaTooLarge(max_bytes)
        raise ImportFailed("the video site did not deliver a file")
    size = produced.stat().st_size
    if size > max_bytes:
        raise MediaTooLarge(max_bytes)

    ext = produced.suffix or ".mp4"
    # A title is not a path: "Part 1/2" must not lose everything before the slash.
    title = re.sub(r"[/\\]+", "_", str(info.get("title") or info.get("id") or "video"))
    filename = safe_filename(f"{title}{ext}", default_stem="video")
    target = dest_dir / filename
    os.replace(produced, target)
    logger.info("downloaded %d bytes via yt-dlp extractor %s", size, info.get("extractor_key"))
    content_type, _encoding = mimetypes.guess_type(filename)
    return DownloadedMedia(
        path=target,
        filename=filename,
        content_type=content_type,
        size_bytes=size,
        final_url=str(info.get("webpage_url") or url),
    )
