"""Apify dataset exports as a user uploads them: formats, field shapes and bad rows.

The fixture files are hand-written in Apify's export shapes (field names from real
`apify/instagram-scraper` and `clockworks/tiktok-scraper` items): a JSON array, JSONL, a CSV
with a BOM and `/`-flattened keys, and a CSV with dot-flattened keys.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import reelflow.discover.datasets as datasets
from reelflow.core.errors import DomainError
from reelflow.discover.datasets import (
    DatasetFormat,
    detect_format,
    iter_dataset,
    iter_items,
    normalize_handle,
    normalize_item,
    parse_count,
    parse_timestamp,
    unflatten,
)
from schemas.discover import Platform, RejectedRow, ScrapedPost
from schemas.failures import FailureCode

FIXTURES = Path(__file__).parent / "fixtures"
IG_JSON = "dataset_instagram-scraper_2025-11-15_00-31-39-764.json"
IG_CSV = "dataset_instagram-scraper_2025-11-16_08-00-00-000.csv"
TT_JSONL = "dataset_tiktok-scraper_2025-09-21_13-33-25-969.jsonl"
TT_CSV = "dataset_tiktok-scraper_flattened.csv"


def read(name: str, *, platform: Platform | None = None) -> list[ScrapedPost | RejectedRow]:
    path = FIXTURES / name
    with path.open("rb") as stream:
        fmt = detect_format(path.name, path.read_bytes()[:4096])
        return list(iter_dataset(stream, fmt, platform=platform))


def parse(data: bytes, fmt: DatasetFormat) -> list[ScrapedPost | RejectedRow]:
    return list(iter_dataset(io.BytesIO(data), fmt))


def posts_of(rows: list[ScrapedPost | RejectedRow]) -> dict[str, ScrapedPost]:
    return {row.post_id: row for row in rows if isinstance(row, ScrapedPost)}


def rejected_of(rows: list[ScrapedPost | RejectedRow]) -> dict[int, str]:
    return {row.line: row.reason for row in rows if isinstance(row, RejectedRow)}


def jsonl(*items: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def reel(code: str, plays: int | None = 100, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"shortCode": code, "ownerUsername": "chef", "type": "Video"}
    if plays is not None:
        item["videoPlayCount"] = plays
    return item | extra


# --- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "head", "expected"),
    [
        ("dataset_x.JSON", b"", "json"),
        ("export.jsonl", b"", "jsonl"),
        ("export.ndjson", b"", "jsonl"),
        ("uploads/dataset_x.csv", b"", "csv"),
        (None, b'\xef\xbb\xbf  [{"id": 1}]', "json"),
        ("upload.bin", b'{"id": "1", "text": "a"}\n{"id": "2"}\n', "jsonl"),
        (None, b'{\n  "id": "1",\n  "text": "pretty"\n}', "json"),
        (None, b"\xef\xbb\xbfid,text,playCount\n1,a,3\n", "csv"),
    ],
)
def test_the_format_comes_from_the_extension_then_the_first_bytes(
    filename: str | None, head: bytes, expected: str
) -> None:
    assert detect_format(filename, head) == expected


@pytest.mark.parametrize(
    ("head", "says"),
    [
        (b"", "empty"),
        (b"  \n\t", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not an Apify export"),
        (b"hello world\n", "not an Apify export"),
    ],
)
def test_a_file_in_no_known_format_is_refused_with_a_readable_reason(
    head: bytes, says: str
) -> None:
    with pytest.raises(DomainError) as caught:
        detect_format("upload.dat", head)
    assert caught.value.code is FailureCode.INVALID_DATASET
    assert says in caught.value.message


# --- the four export shapes ----------------------------------------------------------------


def test_instagram_json_export() -> None:
    rows = read(IG_JSON)
    posts = posts_of(rows)
    assert list(posts) == ["DNN1r3NSBlA", "DNN1aaaaaaa"]
    reel_post = posts["DNN1r3NSBlA"]
    assert reel_post.platform is Platform.INSTAGRAM
    assert reel_post.account == "pixxie_official"
    assert reel_post.url == "https://www.instagram.com/p/DNN1r3NSBlA/"
    assert reel_post.video_url is not None and reel_post.video_url.endswith("oe=689DE734")
    assert reel_post.posted_at == datetime(2025, 8, 11, 13, 22, 59, tzinfo=UTC)
    # Plays, not the 5x smaller legacy view count.
    assert (reel_post.views, reel_post.likes, reel_post.comments) == (108442, 7292, 8)
    assert (reel_post.shares, reel_post.saves) == (None, None)
    assert reel_post.duration_s == pytest.approx(25.433)
    assert reel_post.is_video

    photo = posts["DNN1aaaaaaa"]
    assert not photo.is_video
    assert photo.likes is None  # Instagram writes -1 when likes are hidden
    assert photo.posted_at == datetime(2025, 8, 10, 7, 0, tzinfo=UTC)

    rejected = rejected_of(rows)
    assert set(rejected) == {2, 4, 5}
    assert "not_found" in rejected[2] and "Post does not exist" in rejected[2]
    assert "No post id" in rejected[4]
    assert "repeated" in rejected[5] and "line 1" in rejected[5]


def test_instagram_csv_export_with_bom_slash_keys_and_multiline_cells() -> None:
    rows = read(IG_CSV)
    posts = posts_of(rows)
    assert list(posts) == ["C1aaaaaaaaa", "C1bbbbbbbbb"]
    first = posts["C1aaaaaaaaa"]
    assert first.caption == "Line one\nline two, with a comma"
    assert first.account == "chef.ana"
    assert (first.views, first.likes, first.comments, first.followers) == (45678, 1234, 1234, 52000)
    assert first.url == "https://www.instagram.com/reel/C1aaaaaaaaa/"

    second = posts["C1bbbbbbbbb"]
    assert second.account == "chef.ana"  # from owner/username
    assert second.posted_at == datetime(2025, 11, 1, 12, 26, 40, tzinfo=UTC)  # unix seconds
    # Only the legacy view count: no number from the other scale.
    assert second.views is None

    # The header is line 1, the first row spans lines 2-3, the row of empty cells is skipped.
    assert list(rejected_of(rows)) == [6]
    assert "no account" in rejected_of(rows)[6]


def test_tiktok_jsonl_export_with_string_counts_and_bad_lines() -> None:
    rows = read(TT_JSONL)
    posts = posts_of(rows)
    video = posts["7412345678901234567"]
    assert video.platform is Platform.TIKTOK
    assert video.account == "editguru"  # "@EditGuru"
    assert video.url == "https://www.tiktok.com/@editguru/video/7412345678901234567"
    assert video.posted_at == datetime(2024, 9, 21, 6, 26, 40, tzinfo=UTC)
    assert (video.views, video.likes, video.comments, video.shares, video.saves) == (
        1_200_000,
        12_345,
        150,
        3_400,
        12_000,
    )
    assert video.followers == 1_200_000
    assert video.duration_s == 31
    assert video.video_url is None  # mediaUrls stays [] without shouldDownloadVideos

    slideshow = posts["7412345678901234999"]
    assert not slideshow.is_video
    assert slideshow.posted_at == datetime(2024, 9, 21, 6, 26, 40, tzinfo=UTC)  # milliseconds
    assert (slideshow.views, slideshow.likes) == (None, None)  # "n/a" and -5

    rejected = rejected_of(rows)
    assert set(rejected) == {2, 4, 6, 7}  # line 3 is blank
    assert "private" in rejected[2]
    assert "No post id" in rejected[4]
    assert "not valid JSON" in rejected[6]
    assert "repeated" in rejected[7]


def test_tiktok_csv_export_with_dot_keys() -> None:
    posts = posts_of(read(TT_CSV))
    first = posts["7500000000000000001"]
    assert first.account == "dancecrew"
    assert (first.views, first.followers, first.duration_s) == (3400, 88000, 15)
    assert first.video_url == "https://cdn.example/v1.mp4"
    second = posts["7500000000000000002"]
    assert second.url == "https://www.tiktok.com/@dancecrew/video/7500000000000000002"
    assert (second.views, second.likes) == (1_500_000, None)
    assert second.posted_at == first.posted_at
    assert second.is_video


def test_a_known_platform_is_not_second_guessed() -> None:
    rows = parse(jsonl({"shortCode": "ABC", "ownerUsername": "x"}), "jsonl")
    assert posts_of(rows)["ABC"].platform is Platform.INSTAGRAM
    rows = list(iter_dataset(io.BytesIO(jsonl({"id": "5", "author": "x"})), "jsonl", platform=None))
    assert "Cannot tell the platform" in rejected_of(rows)[1]


# --- bad rows ------------------------------------------------------------------------------


def test_error_rows_are_rejected_with_the_scrapers_reason_even_with_an_id() -> None:
    rows = parse(
        jsonl(
            {"error": "Profile is private"},
            {"shortCode": "X1", "error": "rate_limited", "errorDescription": "Try later"},
        ),
        "jsonl",
    )
    assert rejected_of(rows) == {
        1: "The scraper reported an error: Profile is private.",
        2: "The scraper reported an error: rate_limited (Try later).",
    }


def test_rows_without_an_id_or_account_are_rejected() -> None:
    rows = parse(
        jsonl(
            {"ownerUsername": "chef", "videoPlayCount": 5},
            {"shortCode": "OK1"},
            {"authorMeta": {"fans": 3}, "playCount": 4},
        ),
        "jsonl",
    )
    reasons = rejected_of(rows)
    assert "No post id" in reasons[1]
    assert "no account" in reasons[2]
    assert "No post id" in reasons[3]
    # A profile item (resultsType "details") in an Instagram dataset says what it is.
    profile = normalize_item(
        {"followersCount": 10, "latestPosts": [], "username": "chef"},
        platform=Platform.INSTAGRAM,
        line=9,
    )
    assert isinstance(profile, RejectedRow) and "profile" in profile.reason


def test_an_id_too_long_to_store_is_rejected_not_raised() -> None:
    row = normalize_item({"id": "9" * 300, "authorMeta": {"name": "a"}}, platform=None, line=3)
    assert isinstance(row, RejectedRow)
    assert row.line == 3 and "post_id" in row.reason


def test_a_repeated_post_keeps_the_row_with_the_most_views() -> None:
    rows = parse(
        jsonl(reel("A", 100), reel("B", 5), reel("A", 300), reel("A", 300), reel("A", None)),
        "jsonl",
    )
    # A later row with more views supersedes: the earlier one is reported, the new one
    # yielded after it. Ties and rows without views keep what was kept.
    assert [
        (type(r).__name__, r.line if isinstance(r, RejectedRow) else r.views) for r in rows
    ] == [
        ("ScrapedPost", 100),
        ("ScrapedPost", 5),
        ("RejectedRow", 1),
        ("ScrapedPost", 300),
        ("RejectedRow", 4),
        ("RejectedRow", 5),
    ]
    assert "line 3" in rejected_of(rows)[1]


def test_a_row_that_is_not_an_object_is_rejected() -> None:
    rows = parse(b'[1, "text", {"shortCode": "Q", "ownerUsername": "a"}, null]', "json")
    assert list(posts_of(rows)) == ["Q"]
    assert set(rejected_of(rows)) == {1, 2, 4}


# --- values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "count"),
    [
        (1234, 1234),
        (12.0, 12),
        ("1234", 1234),
        ("1,234", 1234),
        ("1,234,567", 1_234_567),
        ("1.2M", 1_200_000),
        ("3.4K", 3_400),
        ("3.4k", 3_400),
        ("12 k", 12_000),
        ("1,5K", 1_500),
        ("2B", 2_000_000_000),
        (" 7 ", 7),
        ("12\u00a0k", 12_000),
        ("0", 0),
        (-1, None),
        ("-5", None),
        (-0.5, None),
        ("1,23", None),
        ("n/a", None),
        ("", None),
        (None, None),
        (True, None),
        (float("nan"), None),
        (2**70, None),
        ("99999999999B", None),
        ([1], None),
    ],
)
def test_counts_are_read_from_numbers_and_strings_and_never_crash(
    raw: object, count: int | None
) -> None:
    assert parse_count(raw) == count


@pytest.mark.parametrize(
    ("raw", "moment"),
    [
        (1726900000, datetime(2024, 9, 21, 6, 26, 40, tzinfo=UTC)),
        (1726900000.5, datetime(2024, 9, 21, 6, 26, 40, 500000, tzinfo=UTC)),
        (1726900000000, datetime(2024, 9, 21, 6, 26, 40, tzinfo=UTC)),
        ("1726900000", datetime(2024, 9, 21, 6, 26, 40, tzinfo=UTC)),
        ("1726900000123", datetime(2024, 9, 21, 6, 26, 40, 123000, tzinfo=UTC)),
        ("2025-08-11T13:22:59.000Z", datetime(2025, 8, 11, 13, 22, 59, tzinfo=UTC)),
        ("2025-08-11T15:22:59+02:00", datetime(2025, 8, 11, 13, 22, 59, tzinfo=UTC)),
        ("2025-08-11T13:22:59", datetime(2025, 8, 11, 13, 22, 59, tzinfo=UTC)),
        ("yesterday", None),
        (0, None),
        (-5, None),
        ("", None),
        (None, None),
        (False, None),
    ],
)
def test_times_in_seconds_milliseconds_or_iso_become_utc(
    raw: object, moment: datetime | None
) -> None:
    parsed = parse_timestamp(raw)
    assert parsed == moment
    if parsed is not None:
        assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("raw", "handle"),
    [("@EditGuru", "editguru"), (" Chef.Ana ", "chef.ana"), ("@", None), ("a b", None), (3, None)],
)
def test_handles_are_lowercase_without_at(raw: object, handle: str | None) -> None:
    assert normalize_handle(raw) == handle


def test_flattened_keys_become_nested_objects_and_lists() -> None:
    assert unflatten(
        {
            "latestComments/1/text": "b",
            "latestComments/0/text": "a",
            "owner/username": "x",
            "authorMeta.name": "y",
            "id": "1",
        }
    ) == {
        "latestComments": [{"text": "a"}, {"text": "b"}],
        "owner": {"username": "x"},
        "authorMeta": {"name": "y"},
        "id": "1",
    }


def test_api_items_are_normalised_like_file_rows() -> None:
    items: list[dict[str, Any]] = [
        {"id": "1", "authorMeta.name": "Dancer", "playCount": "2K"},
        {"id": "1", "authorMeta": {"name": "dancer"}, "playCount": 10},
        {"error": "not_found"},
    ]
    rows = list(iter_items(items, platform=Platform.TIKTOK, start=1001))
    assert posts_of(rows)["1"].views == 2000
    assert set(rejected_of(rows)) == {1002, 1003}


# --- streaming -----------------------------------------------------------------------------


class CountingStream(io.BytesIO):
    """Remembers how far the file had been read when each row came out."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.closed_by_reader = False

    def close(self) -> None:
        self.closed_by_reader = True
        super().close()


def generated_items(count: int) -> list[dict[str, Any]]:
    return [
        {
            "shortCode": f"C{i:06d}",
            "ownerUsername": f"acct{i % 7}",
            "caption": f'caption {i} with "quotes", unicode é✓ and a ] bracket {{}}',
            "videoPlayCount": i * 1000 + 7,
            "likesCount": 1.5e3 if i % 2 else i,
            "timestamp": "2025-08-11T13:22:59.000Z",
            "latestComments": [{"text": "nice"}],
        }
        for i in range(count)
    ]


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_a_json_array_is_split_correctly_across_any_read_size(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "READ_CHUNK_BYTES", chunk)
    items = generated_items(40)
    data = "\ufeff[\n " + ",\n ".join(json.dumps(i, ensure_ascii=False) for i in items) + "\n]\n"
    rows = parse(data.encode(), "json")
    posts = posts_of(rows)
    assert [p.post_id for p in posts.values()] == [i["shortCode"] for i in items]
    assert [p.views for p in posts.values()] == [i["videoPlayCount"] for i in items]
    assert posts["C000003"].likes == 1500
    assert posts["C000003"].caption == items[3]["caption"]


def test_concatenated_objects_in_a_json_file_are_read_like_jsonl() -> None:
    rows = parse(
        b'{"shortCode": "A", "ownerUsername": "x"}\n{"shortCode": "B", "ownerUsername": "x"}',
        "json",
    )
    assert list(posts_of(rows)) == ["A", "B"]


def test_rows_come_out_while_the_file_is_still_being_read() -> None:
    items = generated_items(5000)
    payloads: dict[DatasetFormat, bytes] = {
        "json": json.dumps(items).encode(),
        "jsonl": jsonl(*items),
        "csv": _csv_of(items),
    }
    for fmt, data in payloads.items():
        stream = CountingStream(data)
        rows = iter_dataset(stream, fmt)
        first = next(rows)
        assert isinstance(first, ScrapedPost), fmt
        # One row out, at most a couple of read chunks (and the CSV reader's buffer) in.
        assert stream.tell() < 3 * datasets.READ_CHUNK_BYTES < len(data), fmt
        assert sum(1 for _ in rows) == len(items) - 1, fmt
        assert not stream.closed_by_reader, fmt


def _csv_of(items: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["shortCode", "ownerUsername", "caption", "videoPlayCount", "latestComments/0/text"]
    )
    for i in items:
        writer.writerow(
            [i["shortCode"], i["ownerUsername"], i["caption"], i["videoPlayCount"], "nice"]
        )
    return out.getvalue().encode()


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b'[{"shortCode": "A", "ownerUsername": "x"}, {"shortCode": "B", "own', "record 2"),
        (b'[{"shortCode": "A", "ownerUsername": "x"} {"shortCode": "B"}]', "record 2"),
        (b'[{"shortCode": "A", "ownerUsername": "x"},', "not closed"),
        (b'[{"shortCode": "A", "ownerUsername": "x"}] trailing', "after the array"),
        (b'[{"shortCode": "A", "ownerUsername": x}]', "record 1"),
        (b'"just a string"', "neither an array"),
        (b"   ", "empty"),
    ],
)
def test_a_broken_json_file_fails_with_where_it_broke(data: bytes, says: str) -> None:
    with pytest.raises(DomainError) as caught:
        parse(data, "json")
    assert caught.value.code is FailureCode.INVALID_DATASET
    assert says in caught.value.message


def test_a_fault_early_in_a_huge_record_fails_without_reading_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(datasets, "FAULT_DISTANCE_CHARS", 1000)
    # An unclosed string swallows the rest of the file: stop once it is clearly broken.
    data = b'[{"shortCode": "A", "caption": "never closed, ' + b"x" * 5_000_000 + b"]"
    stream = CountingStream(data)
    with pytest.raises(DomainError):
        list(iter_dataset(stream, "json"))
    assert stream.tell() < 10 * datasets.READ_CHUNK_BYTES


def test_iterating_yields_the_rows_before_a_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "READ_CHUNK_BYTES", 16)
    seen: list[str] = []

    def rows() -> Iterator[ScrapedPost | RejectedRow]:
        return iter_dataset(
            io.BytesIO(b'[{"shortCode": "A", "ownerUsername": "x"}, {oops}]'), "json"
        )

    with pytest.raises(DomainError):
        for row in rows():
            assert isinstance(row, ScrapedPost)
            seen.append(row.post_id)
    assert seen == ["A"]


def test_a_json_array_saved_as_jsonl_is_read_as_json() -> None:
    data = (
        b'\xef\xbb\xbf[\n  {"shortCode": "A",\n   "ownerUsername": "x"},\n'
        b'  {"shortCode": "B", "ownerUsername": "x"}\n]'
    )
    rows = parse(data, "jsonl")
    assert list(posts_of(rows)) == ["A", "B"]
    assert rejected_of(rows) == {}


def test_an_overlong_jsonl_line_is_rejected_without_holding_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(datasets, "MAX_RECORD_BYTES", 1000)
    long_line = json.dumps(reel("LONG", caption="x" * 50_000)).encode() + b"\n"
    rows = parse(jsonl(reel("A")) + long_line + jsonl(reel("B")), "jsonl")
    assert list(posts_of(rows)) == ["A", "B"]
    assert list(rejected_of(rows)) == [2]
    assert "longer than" in rejected_of(rows)[2]
