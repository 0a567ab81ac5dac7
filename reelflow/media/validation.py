"""Check a generated video against what was ordered: length, shape, sound, picture, size.

A provider can return anything: a clip of the wrong length or shape, no sound track, black
frames, a 0-byte file, an HTML error page or garbage. `validate_video` turns each of those
into a failed, readable `Check` in a `ValidationReport`, never an exception, so the
generation workflow can record the attempt and fall back to another provider.

Exceptions are kept for problems on our side (ffmpeg missing or timing out), which a
retry of the activity can fix, and for caller bugs (a relative or missing path).

Everything here blocks (subprocesses): call it from sync activities on a thread pool.
ffmpeg only ever reads the local file, through the same protocol and demuxer whitelists
as `reelflow.media.ffmpeg`.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from reelflow.media.ffmpeg import (
    ALLOWED_DEMUXERS,
    MediaLimits,
    MediaRejected,
    ProbeReport,
    extract_thumbnail,
    probe_video,
    require_tool,
    run_tool,
    stderr_tail,
)

logger = logging.getLogger(__name__)

ASPECT_RATIOS: tuple[str, ...] = ("16:9", "9:16", "1:1")
"""The aspect ratios reelflow generates (seed 001)."""

RESOLUTIONS: tuple[str, ...] = ("480p", "720p", "1080p")
"""Named resolutions: the number is the short side of the picture in pixels."""

DEFAULT_DURATION_TOLERANCE_S = 0.5
DEFAULT_MAX_BLACK_RATIO = 0.5
"""More than half the running time black means the generation failed (seed 003)."""

MIN_VIDEO_BYTES = 4 * 1024
"""A real clip of a second or more is tens of KB; anything under 4 KB is an error body."""

ASPECT_TOLERANCE = 0.03
"""Relative slack on width/height: 854x480 is "16:9" and encoders pad to multiples of 16."""

RESOLUTION_TOLERANCE = 0.03
"""Relative slack on the short side: a 720p provider may deliver 704 rows (16-aligned)."""

BLACKDETECT_TIMEOUT_S = 300.0

_BLACK_PIXEL_THRESHOLD = 0.10
"""blackdetect `pix_th`: luma under 10 % of the range counts as a black pixel."""

_ANALYSIS_WIDTH = 320
"""Frames are scaled down before blackdetect; a black frame is black at any size."""

_BLACK_DURATION = re.compile(r"black_duration:\s*([0-9.]+)")

_PROBE_MAX_DURATION_S = 24 * 3600.0
_PROBE_MAX_WIDTH = 7680
_PROBE_MAX_HEIGHT = 4320
_PROBE_MAX_STREAMS = 8


@dataclass(frozen=True)
class ExpectedVideo:
    """What the provider was asked for.

    Attributes:
        duration_s: Requested length in seconds.
        aspect_ratio: ``"W:H"``, e.g. ``"16:9"``.
        resolution: ``"<short side>p"``, e.g. ``"720p"``.
        tolerance_s: Accepted difference between the real and the requested length.
    """

    duration_s: float
    aspect_ratio: str
    resolution: str
    tolerance_s: float = DEFAULT_DURATION_TOLERANCE_S


@dataclass(frozen=True)
class Check:
    """One validation check, written for a person reading the generation's history.

    Attributes:
        name: Stable identifier: ``file_size``, ``readable``, ``duration``,
            ``aspect_ratio``, ``resolution``, ``audio_track`` or ``black_frames``.
        passed: Whether the video meets this check.
        expected: What was required, e.g. ``"8.00 s ± 0.50 s"``.
        actual: What the file has, e.g. ``"3.00 s"``.
        message: A sentence saying what was found.
    """

    name: str
    passed: bool
    expected: str
    actual: str
    message: str


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of `validate_video`.

    Attributes:
        passed: True only if every check passed.
        checks: The checks that ran, in order. When the file cannot be read at all, the
            checks that need its contents are left out rather than reported as failing.
    """

    passed: bool
    checks: list[Check] = field(default_factory=list)

    @property
    def failed_checks(self) -> list[Check]:
        """The checks that did not pass."""
        return [check for check in self.checks if not check.passed]

    def check(self, name: str) -> Check | None:
        """The check called `name`, if it ran."""
        return next((check for check in self.checks if check.name == name), None)

    def summary(self) -> str:
        """One line: ``"passed"`` or the failed checks' messages, for a run's error field."""
        if self.passed:
            return "passed"
        return "; ".join(f"{check.name}: {check.message}" for check in self.failed_checks)


# --- Shapes -------------------------------------------------------------------------------


def parse_aspect_ratio(aspect_ratio: str) -> Fraction:
    """``"16:9"`` → ``Fraction(16, 9)``.

    Raises:
        ValueError: Not two positive integers separated by a colon.
    """
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", aspect_ratio)
    if match is None or int(match.group(1)) == 0 or int(match.group(2)) == 0:
        raise ValueError(f"aspect ratio must look like '16:9', got {aspect_ratio!r}")
    return Fraction(int(match.group(1)), int(match.group(2)))


def parse_resolution(resolution: str) -> int:
    """``"720p"`` → 720, the short side in pixels.

    Raises:
        ValueError: Not a positive number followed by ``p``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*[pP]\s*", resolution)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"resolution must look like '720p', got {resolution!r}")
    return int(match.group(1))


def frame_size(aspect_ratio: str, resolution: str) -> tuple[int, int]:
    """Width and height of a picture with this aspect ratio and named resolution.

    The short side is the resolution's number; the long side follows from the ratio,
    rounded to an even number because H.264 with 4:2:0 chroma needs even dimensions
    (``16:9`` at ``480p`` is 854x480).

    Raises:
        ValueError: Either value is malformed.
    """
    ratio = parse_aspect_ratio(aspect_ratio)
    short = parse_resolution(resolution)
    if ratio >= 1:
        return _even(short * ratio), short
    return short, _even(short / ratio)


def _even(value: Fraction) -> int:
    return max(2, round(value / 2) * 2)


# --- Validation ---------------------------------------------------------------------------


def validate_video(
    path: Path,
    expected: ExpectedVideo,
    *,
    max_bytes: int,
    min_bytes: int = MIN_VIDEO_BYTES,
    max_black_ratio: float = DEFAULT_MAX_BLACK_RATIO,
) -> ValidationReport:
    """Check a downloaded video against the request; bad files give a failed report.

    Args:
        path: Absolute path of the local file we downloaded.
        expected: What was requested.
        max_bytes: Largest acceptable file; larger files are not opened.
        min_bytes: Smallest plausible video; smaller files are not opened.
        max_black_ratio: Largest accepted share of the running time that is black.

    Returns:
        The report; ``passed`` is True only when every check passed.

    Raises:
        MediaToolError: ffprobe/ffmpeg is missing, timed out or crashed (our side: retry).
        ValueError: `path` is not absolute, or `expected` is malformed.
        FileNotFoundError: `path` does not exist.
    """
    if not path.is_absolute():
        raise ValueError(f"media paths must be absolute local paths, got {str(path)!r}")
    ratio = parse_aspect_ratio(expected.aspect_ratio)
    short_side = parse_resolution(expected.resolution)
    size = path.stat().st_size

    checks = [_size_check(size, min_bytes, max_bytes)]
    if not checks[0].passed:
        # A 0-byte file, an error page or a file over the limit: nothing worth decoding.
        return ValidationReport(passed=False, checks=checks)

    limits = MediaLimits(
        max_bytes=max_bytes,
        max_duration_s=_PROBE_MAX_DURATION_S,
        max_width=_PROBE_MAX_WIDTH,
        max_height=_PROBE_MAX_HEIGHT,
        max_streams=_PROBE_MAX_STREAMS,
    )
    try:
        probe = probe_video(path, limits)
    except MediaRejected as exc:
        checks.append(
            Check(
                name="readable",
                passed=False,
                expected="a complete MP4, MOV, WebM, MKV or AVI video",
                actual=exc.code,
                message=exc.message,
            )
        )
        return ValidationReport(passed=False, checks=checks)
    checks.append(
        Check(
            name="readable",
            passed=True,
            expected="a complete MP4, MOV, WebM, MKV or AVI video",
            actual=f"{probe.container} ({probe.video_codec})",
            message=f"A {probe.container} file with {probe.video_codec} video.",
        )
    )
    checks.append(_duration_check(probe, expected))
    checks.append(_aspect_check(probe, expected.aspect_ratio, ratio))
    checks.append(_resolution_check(probe, expected.resolution, short_side))
    checks.append(_audio_check(probe))
    checks.append(_black_check(path, probe, max_black_ratio))
    report = ValidationReport(passed=all(check.passed for check in checks), checks=checks)
    logger.info("validated %s: %s", path.name, report.summary())
    return report


def first_non_black_thumbnail(path: Path, dest: Path, *, max_width: int = 640) -> Path:
    """Write a JPEG thumbnail of an early frame that is not black.

    `reelflow.media.ffmpeg.extract_thumbnail` already skips frames that are mostly black and
    picks a representative one among the first seconds; a video that is black throughout
    still gets its first frame.

    Args:
        path: A video that passed `validate_video`.
        dest: Absolute path of the JPEG to write; replaced atomically.
        max_width: Downscale wider frames to this width.

    Returns:
        `dest`.

    Raises:
        MediaToolError: No frame could be decoded, or ffmpeg is missing or failed.
    """
    extract_thumbnail(path, dest, 0.0, max_width=max_width)
    return dest


# --- Individual checks --------------------------------------------------------------------


def _size_check(size: int, min_bytes: int, max_bytes: int) -> Check:
    expected = f"{_fmt_bytes(min_bytes)} to {_fmt_bytes(max_bytes)}"
    actual = _fmt_bytes(size)
    if size == 0:
        message = "The provider returned an empty (0-byte) file."
    elif size < min_bytes:
        message = f"The file is only {actual}, too small to be a video (likely an error message)."
    elif size > max_bytes:
        message = f"The file is {actual}, over the {_fmt_bytes(max_bytes)} limit."
    else:
        return Check("file_size", True, expected, actual, f"The file is {actual}.")
    return Check("file_size", False, expected, actual, message)


def _duration_check(probe: ProbeReport, expected: ExpectedVideo) -> Check:
    want = f"{expected.duration_s:.2f} s ± {expected.tolerance_s:.2f} s"
    got = f"{probe.duration_s:.2f} s"
    if abs(probe.duration_s - expected.duration_s) <= expected.tolerance_s:
        return Check("duration", True, want, got, f"The video is {got} long.")
    return Check(
        "duration",
        False,
        want,
        got,
        f"The video is {got} long; {expected.duration_s:g} s was requested.",
    )


def _aspect_check(probe: ProbeReport, name: str, ratio: Fraction) -> Check:
    actual_ratio = probe.width / probe.height
    got = f"{probe.width}x{probe.height} ({actual_ratio:.3f})"
    want = f"{name} ({float(ratio):.3f})"
    if math.isclose(actual_ratio, float(ratio), rel_tol=ASPECT_TOLERANCE):
        return Check(
            "aspect_ratio", True, want, got, f"The picture is {probe.width}x{probe.height}."
        )
    return Check(
        "aspect_ratio",
        False,
        want,
        got,
        f"The picture is {probe.width}x{probe.height}, not {name}.",
    )


def _resolution_check(probe: ProbeReport, name: str, short_side: int) -> Check:
    actual_short = min(probe.width, probe.height)
    got = f"{actual_short}p ({probe.width}x{probe.height})"
    want = f"{name} (short side {short_side} px)"
    if math.isclose(actual_short, short_side, rel_tol=RESOLUTION_TOLERANCE):
        return Check("resolution", True, want, got, f"The picture is {actual_short}p.")
    return Check(
        "resolution",
        False,
        want,
        got,
        f"The picture is {actual_short}p ({probe.width}x{probe.height}); {name} was requested.",
    )


def _audio_check(probe: ProbeReport) -> Check:
    if probe.has_audio:
        codec = probe.audio_codec or "unknown codec"
        return Check("audio_track", True, "an audio track", codec, f"Audio track: {codec}.")
    return Check("audio_track", False, "an audio track", "none", "The video has no audio track.")


def _black_check(path: Path, probe: ProbeReport, max_black_ratio: float) -> Check:
    want = f"at most {max_black_ratio:.0%} black"
    try:
        black_s = black_seconds(path)
    except _UndecodableVideo as exc:
        return Check(
            "black_frames",
            False,
            want,
            "undecodable",
            f"The video track cannot be decoded: {exc}",
        )
    ratio = min(1.0, black_s / probe.duration_s) if probe.duration_s > 0 else 1.0
    got = f"{ratio:.0%} black ({black_s:.2f} s of {probe.duration_s:.2f} s)"
    if ratio <= max_black_ratio:
        return Check("black_frames", True, want, got, f"{ratio:.0%} of the video is black.")
    return Check(
        "black_frames",
        False,
        want,
        got,
        f"{ratio:.0%} of the video is black frames (the generation likely failed).",
    )


class _UndecodableVideo(Exception):
    """ffmpeg could not decode a video that probed fine: a fault of the file."""


def black_seconds(path: Path) -> float:
    """Total running time of black stretches in the main video track (ffmpeg blackdetect).

    Each stretch ends at its last black frame's timestamp, so a fully black video reports
    one frame less than its length; that is well inside any sensible ratio threshold.

    Raises:
        MediaToolError: ffmpeg is missing or timed out.
        Cancelled: The activity running this was canceled (ffmpeg is stopped).
    """
    args = [
        require_tool("ffmpeg"),
        "-nostdin",
        "-hide_banner",
        "-nostats",
        # blackdetect reports at info level; errors are recognised by the exit status.
        "-v",
        "info",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        ",".join(ALLOWED_DEMUXERS),
        "-i",
        f"file:{path}",
        "-map",
        "0:V:0",
        "-vf",
        f"scale=w='min({_ANALYSIS_WIDTH},iw)':h=-2,blackdetect=d=0:pix_th={_BLACK_PIXEL_THRESHOLD}",
        "-an",
        "-f",
        "null",
        "-",
    ]
    result = run_tool(args, timeout_s=BLACKDETECT_TIMEOUT_S, what="ffmpeg (blackdetect)")
    if result.returncode != 0:
        raise _UndecodableVideo(stderr_tail(result.stderr) or f"ffmpeg exit {result.returncode}")
    return sum(float(match) for match in _BLACK_DURATION.findall(result.stderr))


def _fmt_bytes(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} bytes"
    for unit in ("KB", "MB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GB"
