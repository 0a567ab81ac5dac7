"""Apify dataset items → `ScrapedPost`: export files (JSON, JSONL, CSV) and API items alike.

Every item, whether read from an export file or from `GET /v2/datasets/{id}/items`, goes
through `normalize_item`, so both sources agree on ids, handles, counts and times.

Files are streamed: `iter_dataset` holds one record (plus a bounded read buffer) at a time,
also for a JSON array, so a 100k-row export costs about as much memory as a 100-row one. What
it does keep is one small entry per distinct post id, to find repeats.

Choices, per platform:

* **Instagram** (`apify/instagram-scraper`). The post id is the `shortCode` (or the code in
  the post URL `/p/…/`, `/reel/…/`), not the numeric `id`: it is what the post URL and yt-dlp
  name the post by, so a post met in a dataset and as a single post URL is one row.
  `views` is `videoPlayCount` (plays), never `videoViewCount`. Plays are what Instagram shows
  on a reel today and, like TikTok's `playCount`, count replays, so the two platforms' views
  mean the same thing. The two counts differ 5–9× on the same reel, so a post reporting only
  `videoViewCount` gets `views = None` rather than a number from the other scale: mixed into
  one account's median it would make false outliers (or hide real ones).
  Followers are not on post items; they are read from `ownerFollowersCount` or
  `owner.followersCount` when an export carries them. Shares and saves are not reported.
* **TikTok** (`clockworks/tiktok-scraper`). The post id is `id` (or the number in
  `webVideoUrl`); `views` is `playCount`, likes `diggCount`, comments `commentCount`, shares
  `shareCount`, saves `collectCount`, followers `authorMeta.fans`. Slideshows (`isSlideshow`,
  or a zero `videoMeta.duration` when the flag is absent) are not videos.

Values, for both:

* Counts may be numbers or strings such as `"1,234"`, `"1.2M"`, `"3.4K"`, `"12 k"`. A count
  that is missing stays None; one that is unreadable or negative (Instagram writes `-1` for
  hidden likes) becomes None too, never an error.
* Times may be unix seconds, milliseconds (told apart by magnitude) or ISO-8601 with `Z` or an
  offset; an ISO time without an offset is taken as UTC, which is what Apify writes. All come
  out as aware UTC datetimes.
* Handles are lowercase, without `@`.

Rows that are not used come out as `RejectedRow`s with their reason: Apify's error rows
(`{"error": …, "errorDescription": …}` for private or missing accounts and posts), rows
without a post id or account, and repeats. A post id repeated within one dataset is kept
once: the row with the most views (the freshest count; on a tie the first), and each other
row is reported as a repeat. Because files are streamed, a later row with more views is
yielded again and supersedes the earlier one (`reelflow.discover.posts.import_posts`
counts it once).

`RejectedRow.line` is the JSONL line, the CSV line the row starts on (the header is line 1),
or the record's position in a JSON array, all from 1. A JSONL line or CSV row that cannot be
read is rejected and the rest goes on; a JSON array that stops being valid JSON cannot be
resynchronised, so it fails the whole file (`INVALID_DATASET`).
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from pydantic import ValidationError

from reelflow.core.errors import DomainError
from schemas.discover import Platform, RejectedRow, ScrapedPost
from schemas.failures import FailureCode

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

DatasetFormat = Literal["json", "jsonl", "csv"]

READ_CHUNK_BYTES = 64 * 1024
MAX_RECORD_BYTES = 16 * 1024 * 1024
"""A JSON record larger than this is taken as a broken file rather than buffered further."""
FAULT_DISTANCE_CHARS = 1024 * 1024
"""How far before the buffer's end a JSON error must be to be a fault, not a cut record."""
MAX_REASON_CHARS = 300
_BIGINT_MAX = 2**63 - 1

_EXTENSIONS: dict[str, DatasetFormat] = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
}
_UTF8_BOM = codecs.BOM_UTF8


# --- format --------------------------------------------------------------------------------


def detect_format(filename: str | None, head: bytes) -> DatasetFormat:
    """The export format of a dataset file: by its extension, else by its first bytes.

    Args:
        filename: the uploaded file's name, if known.
        head: the first bytes of the file (a few KiB are plenty).

    Raises:
        DomainError: `INVALID_DATASET` when the file is empty or none of the three formats.
    """
    if filename:
        lowered = filename.lower().rsplit("/", 1)[-1]
        for extension, fmt in _EXTENSIONS.items():
            if lowered.endswith(extension):
                return fmt
    text = head.removeprefix(_UTF8_BOM).decode("utf-8", errors="replace").lstrip()
    if not text:
        raise DomainError(FailureCode.INVALID_DATASET, "The dataset file is empty.")
    if text.startswith("["):
        return "json"
    if text.startswith("{"):
        first_line = text.split("\n", 1)[0].strip()
        try:
            json.loads(first_line)
        except ValueError:
            # An object spread over several lines: one pretty-printed JSON document.
            return "json"
        return "jsonl"
    first_line = text.split("\n", 1)[0]
    if "," in first_line and "\x00" not in text and "\ufffd" not in first_line:
        return "csv"
    raise DomainError(
        FailureCode.INVALID_DATASET,
        "The dataset file is not an Apify export in JSON, JSONL or CSV "
        f"(it starts with {text[:40]!r}).",
    )


# --- reading files -------------------------------------------------------------------------


def iter_dataset(
    stream: BinaryIO, fmt: DatasetFormat, *, platform: Platform | None = None
) -> Iterator[ScrapedPost | RejectedRow]:
    """Every row of an export file as a post or a rejected row, in file order, streamed.

    Args:
        stream: the file, opened in binary mode; it is read once and not closed.
        fmt: its format (`detect_format`).
        platform: the platform all rows belong to, if known; otherwise each row's fields
            tell.

    Raises:
        DomainError: `INVALID_DATASET` for a JSON file that is not valid JSON (rows before the
            fault have been yielded; the importer's transaction drops them).
    """
    if fmt == "jsonl":
        # A JSON array saved as .jsonl would otherwise be one rejected line per line.
        head = stream.read(READ_CHUNK_BYTES)
        stream = io.BufferedReader(_Rewound(head, stream), buffer_size=READ_CHUNK_BYTES)
        if head.removeprefix(_UTF8_BOM).lstrip().startswith(b"["):
            fmt = "json"
    if fmt == "json":
        items: Iterator[tuple[int, Any]] = _json_records(stream)
    elif fmt == "jsonl":
        items = _jsonl_records(stream)
    elif fmt == "csv":
        items = _csv_records(stream)
    else:
        raise DomainError(FailureCode.INVALID_DATASET, f"Unknown dataset format {fmt!r}.")
    repeats = RepeatFilter()
    for line, item in items:
        if isinstance(item, RejectedRow):
            yield item
            continue
        if not isinstance(item, Mapping):
            yield RejectedRow(line=line, reason="The record is not an object.")
            continue
        row = normalize_item(item, platform=platform, line=line)
        if isinstance(row, RejectedRow):
            yield row
        else:
            yield from repeats.admit(row, line=line)


def iter_items(
    items: Iterable[Mapping[str, Any]], *, platform: Platform | None = None, start: int = 1
) -> Iterator[ScrapedPost | RejectedRow]:
    """Items read from the Apify dataset API (already decoded), numbered from `start`,
    normalised and filtered for repeats like a file's rows.

    Pass the whole run's items (e.g. `DatasetClient.iterate_items()`), not one page at a
    time: repeats are found within one call.
    """
    repeats = RepeatFilter()
    for line, item in enumerate(items, start=start):
        row = normalize_item(item, platform=platform, line=line)
        if isinstance(row, RejectedRow):
            yield row
        else:
            yield from repeats.admit(row, line=line)


class RepeatFilter:
    """Keeps one post per platform and post id: the one with the most views.

    `admit` yields the post when it is the first or better than the one kept (it then
    supersedes it downstream) and a `RejectedRow` for whichever row is dropped.
    """

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str], tuple[int, int]] = {}

    def admit(self, post: ScrapedPost, *, line: int) -> Iterator[ScrapedPost | RejectedRow]:
        key = (post.platform.value, post.post_id)
        views = -1 if post.views is None else post.views
        kept = self._kept.get(key)
        if kept is None:
            self._kept[key] = (line, views)
            yield post
            return
        kept_line, kept_views = kept
        if views > kept_views:
            self._kept[key] = (line, views)
            yield RejectedRow(
                line=kept_line,
                reason=f"Post {post.post_id} is repeated at line {line} with more views; "
                "that row is kept.",
            )
            yield post
        else:
            yield RejectedRow(
                line=line,
                reason=f"Post {post.post_id} is repeated; line {kept_line} is kept "
                "(it has at least as many views).",
            )


def _read_text_chunks(stream: BinaryIO) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    while True:
        chunk = stream.read(READ_CHUNK_BYTES)
        if not chunk:
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
            return
        text = decoder.decode(chunk)
        if text:
            yield text


_WHITESPACE = re.compile(r"[ \t\r\n]*")


def _json_records(stream: BinaryIO) -> Iterator[tuple[int, Any]]:
    """Records of a JSON array (or of a stream of concatenated JSON objects), one at a time.

    `json.JSONDecoder.raw_decode` parses one value from a sliding buffer; when the buffer
    ends inside a value, more is read and the value is parsed again from its start.
    """
    decoder = json.JSONDecoder()
    chunks = _read_text_chunks(stream)
    buffer = ""
    pos = 0
    eof = False

    def fill() -> bool:
        nonlocal buffer, pos, eof
        if eof:
            return False
        chunk = next(chunks, None)
        if chunk is None:
            eof = True
            return False
        buffer = buffer[pos:] + chunk
        pos = 0
        return True

    def skip_whitespace() -> bool:
        """Move past whitespace; False at the end of the file."""
        nonlocal pos
        while True:
            match = _WHITESPACE.match(buffer, pos)
            pos = match.end() if match else pos
            if pos < len(buffer):
                return True
            if not fill():
                return False

    if not skip_whitespace():
        raise DomainError(FailureCode.INVALID_DATASET, "The dataset file is empty.")
    in_array = buffer[pos] == "["
    if in_array:
        pos += 1
    elif buffer[pos] != "{":
        raise DomainError(
            FailureCode.INVALID_DATASET,
            "The JSON dataset is neither an array of items nor a sequence of objects.",
        )
    record = 0
    while True:
        if not skip_whitespace():
            if in_array:
                raise _broken_json(record + 1, "the array is not closed (truncated file?)")
            return
        if in_array and buffer[pos] == "]":
            pos += 1
            if skip_whitespace():
                raise _broken_json(record + 1, "there is more data after the array")
            return
        if in_array and record > 0:
            if buffer[pos] != ",":
                raise _broken_json(record + 1, "a ',' or ']' is missing between records")
            pos += 1
            if not skip_whitespace():
                raise _broken_json(record + 1, "the array is not closed (truncated file?)")
        record += 1
        while True:
            try:
                value, end = decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError as exc:
                # A record cut by the end of the buffer fails near that end; a fault far
                # before it is in the file itself, and reading on would only grow the buffer.
                if len(buffer) - exc.pos > FAULT_DISTANCE_CHARS:
                    raise _broken_json(record, exc.msg) from None
                if len(buffer) - pos > MAX_RECORD_BYTES:
                    raise _broken_json(record, "the record is too large") from None
                if fill():
                    continue
                raise _broken_json(record, exc.msg) from None
            # A number at the very end of the buffer may continue in the next chunk.
            if end == len(buffer) and not isinstance(value, dict | list | str) and fill():
                continue
            break
        pos = end
        yield record, value


def _broken_json(record: int, why: str) -> DomainError:
    return DomainError(
        FailureCode.INVALID_DATASET,
        f"The JSON dataset is broken at record {record}: {why}. No posts were imported.",
    )


def _jsonl_records(stream: BinaryIO) -> Iterator[tuple[int, Any]]:
    number = 0
    while True:
        raw = stream.readline(MAX_RECORD_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_RECORD_BYTES and not raw.endswith(b"\n"):
            # Skip the rest of the line without holding it.
            while (more := stream.readline(READ_CHUNK_BYTES)) and not more.endswith(b"\n"):
                pass
            reason = f"The line is longer than {MAX_RECORD_BYTES // (1024 * 1024)} MiB."
            yield number, RejectedRow(line=number, reason=reason)
            continue
        data = raw.removeprefix(_UTF8_BOM) if number == 1 else raw
        text = data.decode("utf-8", errors="replace").strip()
        if not text:
            continue
        try:
            yield number, json.loads(text)
        except ValueError as exc:
            message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            yield number, RejectedRow(line=number, reason=f"The line is not valid JSON: {message}.")


class _Rewound(io.RawIOBase):
    """A stream whose first bytes were read to look at them, serving them again first."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        super().__init__()
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            data, self._head = self._head[: len(view)], self._head[len(view) :]
        else:
            data = self._rest.read(len(view))
        view[: len(data)] = data
        return len(data)


def _csv_records(stream: BinaryIO) -> Iterator[tuple[int, Any]]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
    try:
        reader = csv.reader(text)
        header: list[str] | None = None
        last_line = 0
        while True:
            start = last_line + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                last_line = reader.line_num
                yield start, RejectedRow(line=start, reason=f"The CSV row cannot be read: {exc}.")
                continue
            last_line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if header is None:
                header = [name.strip() for name in row]
                continue
            yield (
                start,
                {name: cell for name, cell in zip(header, row, strict=False) if name and cell},
            )
    finally:
        # The caller owns the stream: detach so the wrapper does not close it.
        text.detach()


# --- one item ------------------------------------------------------------------------------


def normalize_item(
    item: Mapping[str, Any], *, platform: Platform | None, line: int
) -> ScrapedPost | RejectedRow:
    """One Apify dataset item (nested, `/`-flattened or dot-flattened) as a post.

    Args:
        item: the item as the export file or the dataset API gave it.
        platform: the platform, if the caller knows it; otherwise inferred from the fields.
        line: the row's line or record number, for the `RejectedRow`.
    """
    if any(isinstance(key, str) and ("/" in key or "." in key) for key in item):
        item = unflatten(item)
    error = item.get("error")
    if error:
        return RejectedRow(line=line, reason=_error_reason(item, error))
    resolved = platform or infer_platform(item)
    if resolved is None:
        return RejectedRow(
            line=line,
            reason="Cannot tell the platform: the row has neither Instagram fields "
            "(shortCode, ownerUsername) nor TikTok fields (authorMeta, webVideoUrl).",
        )
    fields = _instagram(item) if resolved is Platform.INSTAGRAM else _tiktok(item)
    if isinstance(fields, str):
        return RejectedRow(line=line, reason=fields)
    try:
        return ScrapedPost(platform=resolved, **fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        return RejectedRow(line=line, reason=_clip(f"The row has invalid values: {problems}."))


def infer_platform(item: Mapping[str, Any]) -> Platform | None:
    """The platform an (unflattened) item comes from, by its fields; None when unclear."""
    if any(key in item for key in ("authorMeta", "webVideoUrl", "diggCount", "createTimeISO")):
        return Platform.TIKTOK
    if any(key in item for key in ("shortCode", "ownerUsername", "likesCount", "videoPlayCount")):
        return Platform.INSTAGRAM
    url = item.get("url") or item.get("inputUrl")
    if isinstance(url, str):
        if "tiktok.com" in url:
            return Platform.TIKTOK
        if "instagram.com" in url:
            return Platform.INSTAGRAM
    return None


def _error_reason(item: Mapping[str, Any], error: Any) -> str:
    description = item.get("errorDescription")
    subject = item.get("url") or item.get("inputUrl") or item.get("username")
    reason = f"The scraper reported an error: {error}"
    if description:
        reason += f" ({description})"
    if isinstance(subject, str) and subject:
        reason += f" for {subject}"
    return _clip(reason + ".")


_IG_CODE = re.compile(r"instagram\.com/(?:[^/?#]+/)?(?:p|reels?|tv)/([A-Za-z0-9_-]+)")
_IG_PROFILE = re.compile(r"instagram\.com/([A-Za-z0-9_.]+)/?(?:[?#]|$)")
_IG_NOT_PROFILES = frozenset({"p", "reel", "reels", "tv", "explore", "stories"})


def _instagram(item: Mapping[str, Any]) -> dict[str, Any] | str:
    url = _text(item.get("url"))
    code = _text(item.get("shortCode"))
    if code is None and url is not None:
        match = _IG_CODE.search(url)
        code = match.group(1) if match else None
    if code is None:
        if "followersCount" in item and "latestPosts" in item:
            return "A profile item (resultsType 'details'), not a post."
        return "No post id: the row has no shortCode and no post URL."
    owner = item.get("owner")
    owner = owner if isinstance(owner, Mapping) else {}
    account = normalize_handle(item.get("ownerUsername")) or normalize_handle(owner.get("username"))
    if account is None:
        input_url = _text(item.get("inputUrl"))
        match = _IG_PROFILE.search(input_url) if input_url else None
        if match and match.group(1).lower() not in _IG_NOT_PROFILES:
            account = normalize_handle(match.group(1))
    if account is None:
        return f"Post {code} has no account (ownerUsername)."
    kind = _text(item.get("type"))
    product_type = _text(item.get("productType"))
    video_url = _text(item.get("videoUrl"))
    is_video = (
        kind == "Video"
        or product_type in ("clips", "igtv")
        or video_url is not None
        or any(item.get(k) is not None for k in ("videoDuration", "videoPlayCount"))
    )
    return {
        "post_id": code,
        "account": account,
        "url": url or f"https://www.instagram.com/p/{code}/",
        "video_url": video_url,
        "caption": _text(item.get("caption")),
        "posted_at": parse_timestamp(item.get("timestamp"))
        or parse_timestamp(item.get("takenAtTimestamp")),
        "duration_s": parse_seconds(item.get("videoDuration")),
        "views": parse_count(item.get("videoPlayCount")),
        "likes": parse_count(item.get("likesCount")),
        "comments": parse_count(item.get("commentsCount")),
        "shares": None,
        "saves": None,
        "followers": _first_count(item.get("ownerFollowersCount"), owner.get("followersCount")),
        "is_video": is_video,
    }


_TT_VIDEO = re.compile(r"tiktok\.com/@([^/?#]+)/(?:video|photo)/(\d+)")


def _tiktok(item: Mapping[str, Any]) -> dict[str, Any] | str:
    web_url = _text(item.get("webVideoUrl"))
    url_match = _TT_VIDEO.search(web_url) if web_url else None
    post_id = _text(item.get("id"))
    if post_id is None and url_match:
        post_id = url_match.group(2)
    if post_id is None:
        return "No post id: the row has no id and no webVideoUrl."
    author = item.get("authorMeta")
    author = author if isinstance(author, Mapping) else {}
    account = normalize_handle(author.get("name")) or normalize_handle(author.get("uniqueId"))
    if account is None and url_match:
        account = normalize_handle(url_match.group(1))
    if account is None:
        return f"Post {post_id} has no account (authorMeta.name)."
    video_meta = item.get("videoMeta")
    video_meta = video_meta if isinstance(video_meta, Mapping) else {}
    duration = parse_seconds(video_meta.get("duration"))
    slideshow = parse_bool(item.get("isSlideshow"))
    is_video = not slideshow if slideshow is not None else duration != 0
    media_urls = item.get("mediaUrls")
    first_media = media_urls[0] if isinstance(media_urls, list) and media_urls else None
    return {
        "post_id": post_id,
        "account": account,
        "url": web_url or f"https://www.tiktok.com/@{account}/video/{post_id}",
        "video_url": _text(item.get("videoUrl")) or _text(first_media),
        "caption": _text(item.get("text")),
        "posted_at": parse_timestamp(item.get("createTimeISO"))
        or parse_timestamp(item.get("createTime")),
        "duration_s": duration if duration else None,
        "views": parse_count(item.get("playCount")),
        "likes": parse_count(item.get("diggCount")),
        "comments": parse_count(item.get("commentCount")),
        "shares": parse_count(item.get("shareCount")),
        "saves": parse_count(item.get("collectCount")),
        "followers": parse_count(author.get("fans")),
        "is_video": is_video,
    }


# --- values --------------------------------------------------------------------------------


def unflatten(item: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dicts and lists from `/`-flattened (`latestComments/0/text`) or dot-flattened
    (`authorMeta.name`) keys; numeric parts become list positions."""
    root: dict[str, Any] = {}
    for key, value in item.items():
        parts = _key_path(key) if isinstance(key, str) else (key,)
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                # A nested value wins over an empty (or scalar) column of the same name.
                child = {}
                node[part] = child
            node = child
        leaf = parts[-1]
        if not isinstance(node.get(leaf), dict):
            node[leaf] = value
    for key, value in root.items():
        if isinstance(value, dict):
            root[key] = _lists_from_positions(value)
    return root


@functools.lru_cache(maxsize=4096)
def _key_path(key: str) -> tuple[str, ...]:
    """A CSV's columns repeat on every row: split each name once."""
    return tuple(_KEY_SEPARATORS.split(key))


_KEY_SEPARATORS = re.compile(r"[/.]")


def _lists_from_positions(node: dict[str, Any]) -> dict[str, Any] | list[Any]:
    for key, value in node.items():
        if isinstance(value, dict):
            node[key] = _lists_from_positions(value)
    if node and all(key.isdigit() for key in node):
        return [node[key] for key in sorted(node, key=int)]
    return node


_COUNT = re.compile(r"^(\d[\d,]*(?:\.\d+)?|\.\d+)\s*([kmb])?$", re.IGNORECASE)
_GROUPED = re.compile(r"^\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_DECIMAL_COMMA = re.compile(r"^\d+,\d+$")
_SUFFIX = {"k": 1_000, "m": 1_000_000, "b": 1_000_000_000}


def parse_count(value: Any) -> int | None:
    """A non-negative count from a number or a string like "1,234", "1.2M", "12 k".

    None when missing, unreadable, negative or beyond a 64-bit integer.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= _BIGINT_MAX else None
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0 or value > _BIGINT_MAX:
            return None
        return round(value)
    if not isinstance(value, str):
        return None
    text = value.strip().replace("\u00a0", " ").replace("\u202f", " ")
    match = _COUNT.match(text)
    if match is None:
        return None
    number, suffix = match.group(1), match.group(2)
    if "," in number:
        if _GROUPED.match(number):
            number = number.replace(",", "")
        elif suffix and _DECIMAL_COMMA.match(number):
            number = number.replace(",", ".")
        else:
            return None
    try:
        amount = Decimal(number) * _SUFFIX[suffix.lower()] if suffix else Decimal(number)
    except InvalidOperation:
        return None
    count = int(amount.to_integral_value())
    return count if count <= _BIGINT_MAX else None


_MS_FROM = 1e11
"""Unix seconds reach 1e11 only in the year 5138, while milliseconds passed it in 1973."""
_US_FROM = 1e14
_NS_FROM = 1e17


def parse_timestamp(value: Any) -> datetime | None:
    """An aware UTC datetime from unix seconds, milliseconds or an ISO-8601 string."""
    if value is None or isinstance(value, bool):
        return None
    number: float | None = None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            number = float(text)
        except ValueError:
            return _parse_iso(text)
    else:
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    if number >= _NS_FROM:
        number /= 1e9
    elif number >= _US_FROM:
        number /= 1e6
    elif number >= _MS_FROM:
        number /= 1e3
    try:
        return datetime.fromtimestamp(number, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _parse_iso(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_seconds(value: Any) -> float | None:
    """A non-negative duration in seconds; None when missing or unreadable."""
    if value is None or isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def parse_bool(value: Any) -> bool | None:
    """True/False from a JSON boolean or a CSV cell ("true", "FALSE", "1", "0")."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
    if isinstance(value, int):
        return bool(value)
    return None


def normalize_handle(value: Any) -> str | None:
    """An account handle as stored: stripped, without `@`, lowercase; None when empty."""
    if not isinstance(value, str):
        return None
    handle = value.strip().lstrip("@").strip().lower()
    if not handle or any(ch.isspace() for ch in handle):
        return None
    return handle


def _first_count(*values: Any) -> int | None:
    for value in values:
        count = parse_count(value)
        if count is not None:
            return count
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        stripped = value.strip()
        return stripped or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"
