"""validate_video and first_non_black_thumbnail on real files and on garbage."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from reelflow.media.validation import (
    ExpectedVideo,
    first_non_black_thumbnail,
    frame_size,
    validate_video,
)
from tests.generation.helpers import black_then_picture, mean_luma

MAX_BYTES = 50 * 1024 * 1024
PORTRAIT = ExpectedVideo(duration_s=2, aspect_ratio="9:16", resolution="480p")


@pytest.mark.parametrize(
    ("aspect_ratio", "resolution", "size"),
    [
        ("16:9", "480p", (854, 480)),
        ("16:9", "720p", (1280, 720)),
        ("16:9", "1080p", (1920, 1080)),
        ("9:16", "1080p", (1080, 1920)),
        ("1:1", "720p", (720, 720)),
    ],
)
def test_frame_size(aspect_ratio: str, resolution: str, size: tuple[int, int]) -> None:
    assert frame_size(aspect_ratio, resolution) == size


@pytest.mark.parametrize(
    ("aspect_ratio", "resolution"), [("16x9", "720p"), ("16:0", "720p"), ("16:9", "HD")]
)
def test_frame_size_rejects_malformed_values(aspect_ratio: str, resolution: str) -> None:
    with pytest.raises(ValueError):
        frame_size(aspect_ratio, resolution)


def test_good_clip_passes(portrait_clip: Path) -> None:
    report = validate_video(portrait_clip, PORTRAIT, max_bytes=MAX_BYTES)
    assert report.passed
    assert report.summary() == "passed"
    assert report.failed_checks == []


def test_wrong_aspect_ratio_is_named(portrait_clip: Path) -> None:
    expected = ExpectedVideo(duration_s=2, aspect_ratio="16:9", resolution="480p")

    report = validate_video(portrait_clip, expected, max_bytes=MAX_BYTES)

    assert [c.name for c in report.failed_checks] == ["aspect_ratio"]
    check = report.check("aspect_ratio")
    assert check is not None
    assert check.expected == "16:9 (1.778)"
    assert check.actual == "480x854 (0.562)"
    assert check.message == "The picture is 480x854, not 16:9."


def test_wrong_resolution_is_named(portrait_clip: Path) -> None:
    expected = ExpectedVideo(duration_s=2, aspect_ratio="9:16", resolution="1080p")

    report = validate_video(portrait_clip, expected, max_bytes=MAX_BYTES)

    assert [c.name for c in report.failed_checks] == ["resolution"]
    assert "480p (480x854); 1080p was requested" in report.summary()


def test_duration_tolerance_is_respected(portrait_clip: Path) -> None:
    loose = ExpectedVideo(duration_s=2.4, aspect_ratio="9:16", resolution="480p")
    tight = ExpectedVideo(duration_s=2.4, aspect_ratio="9:16", resolution="480p", tolerance_s=0.2)
    assert validate_video(portrait_clip, loose, max_bytes=MAX_BYTES).passed
    report = validate_video(portrait_clip, tight, max_bytes=MAX_BYTES)
    assert [c.name for c in report.failed_checks] == ["duration"]


def test_file_over_the_limit_is_not_opened(portrait_clip: Path) -> None:
    report = validate_video(portrait_clip, PORTRAIT, max_bytes=10 * 1024)
    assert not report.passed
    assert [c.name for c in report.checks] == ["file_size"]
    assert "over the 10.0 KB limit" in report.checks[0].message


def test_large_html_page_is_not_a_video(tmp_path: Path) -> None:
    page = tmp_path / "error.mp4"
    body = "<p>Service unavailable, please retry later.</p>\n" * 400
    page.write_text(f"<!DOCTYPE html><html><body>{body}</body></html>", encoding="utf-8")

    report = validate_video(page, PORTRAIT, max_bytes=MAX_BYTES)

    assert not report.passed
    assert [c.name for c in report.checks] == ["file_size", "readable"]
    readable = report.checks[1]
    assert not readable.passed
    assert readable.actual == "not_a_video"
    assert "not a video" in readable.message


def test_random_bytes_are_not_a_video(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(32 * 1024))
    report = validate_video(junk, PORTRAIT, max_bytes=MAX_BYTES)
    assert [c.name for c in report.failed_checks] == ["readable"]


def test_truncated_video_fails_readably(portrait_clip: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    data = portrait_clip.read_bytes()
    cut.write_bytes(data[: len(data) // 2])

    report = validate_video(cut, PORTRAIT, max_bytes=MAX_BYTES)

    assert not report.passed
    readable = report.check("readable")
    assert readable is not None and not readable.passed
    assert readable.actual in ("truncated_file", "not_a_video")


def test_mostly_black_video_fails_and_partly_black_passes(tmp_path: Path) -> None:
    mostly = black_then_picture(tmp_path / "mostly.mp4", black_s=2.0, picture_s=1.0)
    partly = black_then_picture(tmp_path / "partly.mp4", black_s=1.0, picture_s=2.0)
    expected = ExpectedVideo(duration_s=3, aspect_ratio="4:3", resolution="240p")

    mostly_report = validate_video(mostly, expected, max_bytes=MAX_BYTES)
    partly_report = validate_video(partly, expected, max_bytes=MAX_BYTES)

    assert [c.name for c in mostly_report.failed_checks] == ["black_frames"]
    black = mostly_report.check("black_frames")
    assert black is not None and black.actual.startswith("67% black")
    assert partly_report.passed, partly_report.summary()
    strict = validate_video(partly, expected, max_bytes=MAX_BYTES, max_black_ratio=0.2)
    assert [c.name for c in strict.failed_checks] == ["black_frames"]


def test_thumbnail_skips_the_black_opening(tmp_path: Path) -> None:
    video = black_then_picture(tmp_path / "intro.mp4", black_s=1.0, picture_s=1.0)
    assert mean_luma(video) < 20  # the first frame really is black

    thumb = first_non_black_thumbnail(video, tmp_path / "thumb.jpg")

    assert thumb == tmp_path / "thumb.jpg"
    assert mean_luma(thumb) > 60


def test_caller_errors_still_raise(tmp_path: Path, portrait_clip: Path) -> None:
    with pytest.raises(FileNotFoundError):
        validate_video(tmp_path / "missing.mp4", PORTRAIT, max_bytes=MAX_BYTES)
    relative = Path(os.path.relpath(portrait_clip))
    with pytest.raises(ValueError, match="absolute"):
        validate_video(relative, PORTRAIT, max_bytes=MAX_BYTES)
    copy = tmp_path / "copy.mp4"
    shutil.copyfile(portrait_clip, copy)
    with pytest.raises(ValueError, match="aspect ratio"):
        validate_video(copy, ExpectedVideo(2, "wide", "480p"), max_bytes=MAX_BYTES)
