"""Probe, validate and cut video files with ffprobe/ffmpeg; slice WAV audio with `wave`.

Everything here blocks (subprocesses, file I/O): call it from sync Temporal activities,
which run on a thread pool, never from the event loop.

Safety: ffmpeg and ffprobe only ever read absolute paths of local files we wrote. Inputs
are passed as `file:<path>` with `-protocol_whitelist file`, and every input is opened
with `-format_whitelist`, so a crafted upload cannot make ffmpeg follow a playlist
(HLS, concat) to other files or URLs, nor render a text file as video. `run_tool`, the
one way tools are started, refuses any other kind of input. An MP4/MOV whose track
refers to another file (a `dref` data reference) is rejected before ffprobe opens it.

Cancellation: inside a cancel scope (`reelflow.core.cancellation`, set up for activities
by `activities._support.run_blocking`) a running tool is terminated, then killed, when
the activity is canceled, and `Cancelled` is raised.

Rejections of the user's file raise `MediaRejected` (permanent: retrying cannot help).
Problems on our side (tool missing, timeout, crash) raise `MediaToolError`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import shutil
import struct
import subprocess
import wave
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

from reelflow.core import cancellation

if TYPE_CHECKING:
    from reelflow.core.settings import Settings

logger = logging.getLogger(__name__)

# --- Allow-lists ------------------------------------------------------------------------

ALLOWED_DEMUXERS: tuple[str, ...] = ("mov", "matroska", "avi")
"""ffmpeg demuxers we accept: MP4/MOV/M4V, WebM/MKV and AVI (the formats seed 004 lists)."""

_KNOWN_OTHER_CONTAINERS: Mapping[str, str] = {
    "flv": "FLV (Flash video)",
    "mpegts": "MPEG-TS",
    "mpeg": "MPEG program stream",
    "ogg": "Ogg",
    "asf": "ASF/WMV",
    "mxf": "MXF",
    "gif": "animated GIF",
    "rm": "RealMedia",
    "nut": "NUT",
    "ivf": "IVF",
    "h264": "a raw H.264 stream",
    "hevc": "a raw H.265 stream",
    "m4v": "a raw MPEG-4 stream",
    "mp3": "MP3",
    "wav": "WAV",
    "aac": "AAC",
    "flac": "FLAC",
    "aiff": "AIFF",
    "w64": "Wave64",
}
"""Demuxers ffprobe may open only so we can name the format in the rejection message.

They are all plain media formats that do not open other files; playlists (hls, concat,
dash), images and text stay off the list and fail as `not_a_video`.
"""

_PROBE_DEMUXERS = ",".join((*ALLOWED_DEMUXERS, *_KNOWN_OTHER_CONTAINERS))
_READ_DEMUXERS = ",".join(ALLOWED_DEMUXERS)

ALLOWED_VIDEO_CODECS: frozenset[str] = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4"})
ALLOWED_AUDIO_CODECS: frozenset[str] = frozenset(
    {"aac", "mp3", "opus", "vorbis", "flac", "alac", "ac3", "eac3"}
)
"""Plus every `pcm_*` codec (uncompressed audio, common in MOV and AVI)."""

_CODEC_NAMES: Mapping[str, str] = {
    "h264": "H.264",
    "hevc": "H.265",
    "vp8": "VP8",
    "vp9": "VP9",
    "av1": "AV1",
    "mpeg4": "MPEG-4 Part 2",
}

_SUPPORTED_VIDEO_HINT = "use H.264, H.265, VP8/9 or AV1 (for example: re-export as H.264 MP4)"
_SUPPORTED_AUDIO_HINT = "use AAC, MP3, Opus, Vorbis, FLAC or PCM audio"
_SUPPORTED_CONTAINER_HINT = "upload an MP4, MOV, WebM, MKV or AVI file"

# --- Timeouts (seconds) -----------------------------------------------------------------

PROBE_TIMEOUT_S = 60.0
TAIL_CHECK_TIMEOUT_S = 60.0
DEMUX_DURATION_TIMEOUT_S = 300.0
EXTRACT_AUDIO_TIMEOUT_S = 1800.0
THUMBNAIL_TIMEOUT_S = 60.0

TAIL_CHECK_WINDOW_S = 1.0
"""How much of the end of the video track is decoded to prove the file is complete."""

_TRUNCATION_MARKERS = (
    "partial file",
    "file ended prematurely",
    "stream ends prematurely",
    "moov atom not found",
)

_STDERR_TAIL_CHARS = 600

_MAIN_VIDEO = "0:V:0"
"""ffmpeg stream specifier: the first video stream that is not cover art (capital V)."""

AUDIO_SAMPLE_RATE = 16_000
"""Extracted audio is 16 kHz mono 16-bit PCM: what speech recognisers expect."""


# --- Errors -----------------------------------------------------------------------------


class MediaRejected(Exception):
    """The file cannot be ingested; the message tells the uploader what to do instead.

    Permanent: retrying with the same file gives the same answer.

    Attributes:
        code: A stable machine-readable reason, e.g. `empty_file`, `not_a_video`,
            `unsupported_container`, `unsupported_codec`, `too_large`, `too_long`,
            `resolution_too_high`, `too_many_streams`, `truncated_file`, `no_audio`,
            `unreadable_media` (a track stored in another file; audio with no samples).
            Every code is a `schemas.failures.FailureCode`.
        message: A sentence a person can act on.
    """

    def __init__(self, code: str, message: str) -> None:
        # Both go into args so the exception survives pickling (process pools, Temporal
        # failure conversion) with its code intact.
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class MediaToolError(RuntimeError):
    """ffmpeg/ffprobe failed for a reason on our side (missing, timed out, crashed)."""


class MediaToolMissing(MediaToolError):
    """ffmpeg or ffprobe is not installed on this machine."""


# --- Limits and report ------------------------------------------------------------------


@dataclass(frozen=True)
class MediaLimits:
    """What an uploaded video may be: size, length, picture size and stream count.

    Attributes:
        max_bytes: Largest accepted file size.
        max_duration_s: Longest accepted duration.
        max_width: Largest width of a landscape picture (a portrait picture may be as
            tall as this; limits apply to the long and short side, whatever the
            orientation).
        max_height: Largest height of a landscape picture.
        max_streams: Most streams (video, audio, subtitles, data) in the container.
    """

    max_bytes: int
    max_duration_s: float
    max_width: int
    max_height: int
    max_streams: int

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaLimits:
        """The ingest limits configured in `settings`."""
        return cls(
            max_bytes=settings.max_upload_bytes,
            max_duration_s=settings.max_duration_s,
            max_width=settings.max_width,
            max_height=settings.max_height,
            max_streams=settings.max_streams,
        )


@dataclass(frozen=True)
class ProbeReport:
    """What a valid video contains.

    Attributes:
        container: `mp4`, `mov`, `webm`, `matroska` or `avi`.
        duration_s: Length in seconds.
        size_bytes: File size.
        width: Displayed width (rotation metadata applied).
        height: Displayed height (rotation metadata applied).
        video_codec: ffmpeg codec name of the main video stream, e.g. `h264`.
        audio_codec: ffmpeg codec name of the first audio stream, or None.
        has_audio: Whether there is an audio stream to transcribe.
        stream_count: All streams in the container.
        fps: Average frame rate, when the container knows it.
    """

    container: str
    duration_s: float
    size_bytes: int
    width: int
    height: int
    video_codec: str
    audio_codec: str | None
    has_audio: bool
    stream_count: int
    fps: float | None


# --- Tools ------------------------------------------------------------------------------


def require_tool(name: str) -> str:
    """The absolute path of a media tool (`ffmpeg`, `ffprobe`, `espeak-ng`) on PATH.

    Raises:
        MediaToolMissing: The tool is not installed.
    """
    # Looked up on every call (it is cheap) so a worker started before ffmpeg was
    # installed picks it up without a restart.
    found = shutil.which(name)
    if found is None:
        raise MediaToolMissing(f"{name} is not installed: run deploy/bootstrap.sh")
    return found


def stderr_tail(text: str) -> str:
    """The last few hundred characters of a tool's stderr, for error messages."""
    text = text.strip()
    if len(text) <= _STDERR_TAIL_CHARS:
        return text
    return "…" + text[-_STDERR_TAIL_CHARS:]


def run_tool(
    args: Sequence[str], *, timeout_s: float, what: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a media tool with no stdin, capturing output; kill it after `timeout_s`.

    Every ffmpeg/ffprobe call goes through here. Inside a cancel scope (a canceled
    activity, see `reelflow.core.cancellation`) the process is terminated, then killed,
    and `Cancelled` is raised instead of a result.

    Raises:
        MediaToolError: The tool timed out.
        Cancelled: The current cancel scope was canceled.
        ValueError: An input is not a whitelisted local file (see `require_local_inputs`).
    """
    logger.debug("running %s: %s", what, " ".join(args))
    require_local_inputs(args)
    cancellation.raise_if_cancelled()
    process = subprocess.Popen(
        list(args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        cwd=cwd,
    )
    with process, cancellation.watch_process(process):
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
            cancellation.raise_if_cancelled()
            raise MediaToolError(
                f"{what} timed out after {timeout_s:.0f} s: {stderr_tail(stderr) or 'no output'}"
            ) from None
        except BaseException:
            # Interrupted (KeyboardInterrupt in a CLI): never leave the tool running.
            process.kill()
            process.wait()
            raise
    # A tool stopped by our signal "fails"; that is a cancellation, not a bad file.
    cancellation.raise_if_cancelled()
    return subprocess.CompletedProcess(list(args), process.returncode, stdout, stderr)


_GENERATED_INPUT_FORMATS = frozenset({"lavfi"})
_FILE_READING_FILTERS = re.compile(r"(?<![\w])a?movie\s*=")


def require_local_inputs(args: Sequence[str]) -> None:
    """Refuse a tool command that could read anything but a local file we name.

    Every `-i` must be a `file:` path opened under `-protocol_whitelist file` (so nothing
    inside the file, a playlist or an MP4 data reference, can reach another protocol),
    or a generated `lavfi` graph that does not load files (`movie=`/`amovie=`).

    Raises:
        ValueError: An input breaks the rule (a bug in the calling code).
    """
    input_format: str | None = None
    whitelist: str | None = None
    for index, arg in enumerate(args):
        value = args[index + 1] if index + 1 < len(args) else ""
        if arg == "-f":
            input_format = value
        elif arg == "-protocol_whitelist":
            whitelist = value
        elif arg == "-i":
            if input_format in _GENERATED_INPUT_FORMATS:
                if _FILE_READING_FILTERS.search(value):
                    raise ValueError("a generated input must not load files (movie=/amovie=)")
            elif whitelist != "file" or not value.startswith("file:"):
                raise ValueError(
                    f"media tool input {value!r} must be a file: path read with "
                    "-protocol_whitelist file"
                )
            # Input options apply to the next input only.
            input_format = whitelist = None


def _ffprobe_base() -> list[str]:
    return [require_tool("ffprobe"), "-hide_banner", "-v", "error"]


def _ffmpeg_base() -> list[str]:
    return [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-v", "error"]


def _input_args(path: Path, *, demuxers: str = _READ_DEMUXERS) -> list[str]:
    # `file:` makes the path unambiguous (never parsed as another protocol) and the two
    # whitelists keep ffmpeg inside this one local file.
    return [
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        demuxers,
        "-i",
        f"file:{path}",
    ]


def _require_local_file(path: Path) -> None:
    if not isinstance(path, Path):
        raise TypeError(f"expected a pathlib.Path, got {type(path).__name__}")
    if not path.is_absolute():
        raise ValueError(f"media paths must be absolute local paths, got {str(path)!r}")
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not path.is_file():
        raise ValueError(f"not a regular file: {path}")


def _require_absolute(path: Path) -> None:
    if not isinstance(path, Path) or not path.is_absolute():
        raise ValueError(f"output paths must be absolute local paths, got {str(path)!r}")


@contextmanager
def atomic_output(dest: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `dest`; rename it over `dest` only on success.

    Readers never see a half-written file, and a retried activity simply overwrites.

    Raises:
        ValueError: `dest` is not an absolute path.
    """
    _require_absolute(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.part")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


# --- Formatting helpers -----------------------------------------------------------------


def _fmt_bytes(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} bytes"
    for unit in ("KB", "MB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GB"


def _fmt_duration(seconds: float) -> str:
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{seconds:.1f} s"


# --- ffprobe JSON accessors -------------------------------------------------------------


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _as_float(value: object) -> float | None:
    if value is None:
        return None
    try:
        result = float(str(value))
    except ValueError:
        return None
    return result if math.isfinite(result) else None


def _as_int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _parse_rate(value: object) -> float | None:
    """`"30000/1001"` → 29.97; `"0/0"` and junk → None."""
    text = str(value or "")
    num, _, den = text.partition("/")
    n, d = _as_float(num), _as_float(den or "1")
    if n is None or d is None or d == 0 or n <= 0:
        return None
    return n / d


def _parse_clock(value: object) -> float | None:
    """Matroska's `DURATION` tag, `"01:02:03.500000000"` → 3723.5."""
    match = re.fullmatch(r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", str(value or "").strip())
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _stream_duration(stream: Mapping[str, Any]) -> float | None:
    duration = _as_float(stream.get("duration"))
    if duration is None:
        duration = _parse_clock(_as_dict(stream.get("tags")).get("DURATION"))
    return duration


def _rotation(stream: Mapping[str, Any]) -> int:
    for side in stream.get("side_data_list") or []:
        rotation = _as_float(_as_dict(side).get("rotation"))
        if rotation is not None:
            return round(rotation) % 360
    rotate = _as_float(_as_dict(stream.get("tags")).get("rotate"))
    return round(rotate) % 360 if rotate is not None else 0


# --- Probe ------------------------------------------------------------------------------


def probe_video(path: Path, limits: MediaLimits) -> ProbeReport:
    """Read a video's metadata and check it against our formats and `limits`.

    Args:
        path: Absolute path of a local file we wrote.
        limits: Size, duration, resolution and stream limits.

    Returns:
        The facts later stages need (duration, audio presence, codecs, size).

    Raises:
        MediaRejected: The file is empty, not a video, in a format or codec we do not
            accept, over a limit, cut short, or has a track stored in another file.
        MediaToolError: ffprobe/ffmpeg is missing, timed out or crashed.
        Cancelled: The activity running this was canceled (ffprobe/ffmpeg is stopped).
        ValueError: `path` is not an absolute path of a regular file.
        FileNotFoundError: `path` does not exist.
    """
    _require_local_file(path)
    size = path.stat().st_size
    if size == 0:
        raise MediaRejected("empty_file", "The file is 0 bytes: upload it again.")
    if size > limits.max_bytes:
        raise MediaRejected(
            "too_large",
            f"The file is {_fmt_bytes(size)}; the limit is {_fmt_bytes(limits.max_bytes)}: "
            "compress or trim it and upload again.",
        )

    # Before ffprobe opens it: a track that points at another file is refused outright.
    _reject_external_references(path)
    data = _ffprobe_json(path)
    fmt = _as_dict(data.get("format"))
    streams = [_as_dict(s) for s in data.get("streams") or []]
    demuxer = str(fmt.get("format_name") or "")

    video = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video"
            # Cover art in MP4/MKV/MP3 is a one-picture "video" stream; it is not video.
            and not _as_dict(s.get("disposition")).get("attached_pic")
        ),
        None,
    )
    if video is None:
        raise MediaRejected(
            "not_a_video",
            "The file has no video track (it looks like audio only): "
            f"{_SUPPORTED_CONTAINER_HINT} with video.",
        )
    if not any(name in ALLOWED_DEMUXERS for name in demuxer.split(",")):
        label = _KNOWN_OTHER_CONTAINERS.get(demuxer, repr(demuxer))
        raise MediaRejected(
            "unsupported_container",
            f"The file's format, {label}, is not supported: {_SUPPORTED_CONTAINER_HINT}.",
        )
    if len(streams) > limits.max_streams:
        raise MediaRejected(
            "too_many_streams",
            f"The file has {len(streams)} streams; at most {limits.max_streams} are "
            "allowed: export it with one video and one audio track.",
        )

    video_codec = str(video.get("codec_name") or "unknown")
    if video_codec not in ALLOWED_VIDEO_CODECS:
        raise MediaRejected(
            "unsupported_codec",
            f"Video codec {video_codec!r} is not supported; {_SUPPORTED_VIDEO_HINT}.",
        )
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    audio_codec = str(audio.get("codec_name") or "unknown") if audio is not None else None
    if audio_codec is not None and not (
        audio_codec in ALLOWED_AUDIO_CODECS or audio_codec.startswith("pcm_")
    ):
        raise MediaRejected(
            "unsupported_codec",
            f"Audio codec {audio_codec!r} is not supported; {_SUPPORTED_AUDIO_HINT}.",
        )

    width, height = _as_int(video.get("width")), _as_int(video.get("height"))
    if width <= 0 or height <= 0:
        raise MediaRejected(
            "not_a_video",
            "The video track has no picture size, so it cannot be played: export the video again.",
        )
    if _rotation(video) in (90, 270):
        width, height = height, width
    # Compare long side with long side so a portrait video gets the same allowance as
    # its landscape twin (limits are "8K", not "8K wide only").
    long_limit = max(limits.max_width, limits.max_height)
    short_limit = min(limits.max_width, limits.max_height)
    if max(width, height) > long_limit or min(width, height) > short_limit:
        raise MediaRejected(
            "resolution_too_high",
            f"The video is {width}x{height}; the limit is "
            f"{limits.max_width}x{limits.max_height}: export it at a lower resolution.",
        )

    duration = _as_float(fmt.get("duration")) or _stream_duration(video)
    if duration is None:
        # Browser recordings (MediaRecorder WebM) often carry no duration at all;
        # reading the packet timestamps is cheap (no decoding) and exact.
        duration = _demux_duration(path)
    if duration is None or duration <= 0:
        raise MediaRejected(
            "truncated_file",
            "The file contains no playable video; it looks cut short: "
            "upload the complete file again.",
        )
    if duration > limits.max_duration_s:
        raise MediaRejected(
            "too_long",
            f"The video is {_fmt_duration(duration)} long; the limit is "
            f"{_fmt_duration(limits.max_duration_s)}: trim or split it.",
        )

    video_end = _stream_duration(video) or duration
    _check_tail_decodes(path, video_end)

    report = ProbeReport(
        container=_container_label(demuxer, fmt, video_codec, audio_codec),
        duration_s=duration,
        size_bytes=size,
        width=width,
        height=height,
        video_codec=video_codec,
        audio_codec=audio_codec,
        has_audio=audio is not None,
        stream_count=len(streams),
        fps=_parse_rate(video.get("avg_frame_rate")) or _parse_rate(video.get("r_frame_rate")),
    )
    logger.info(
        "probed %s: %s %s/%s %dx%d %.2f s",
        path.name,
        report.container,
        report.video_codec,
        report.audio_codec,
        report.width,
        report.height,
        report.duration_s,
    )
    return report


def _ffprobe_json(path: Path) -> dict[str, Any]:
    args = [
        *_ffprobe_base(),
        # Warnings too: the demuxer says so when it skips a track stored in another file.
        "-v",
        "warning",
        "-show_format",
        "-show_streams",
        "-of",
        "json",
        *_input_args(path, demuxers=_PROBE_DEMUXERS),
    ]
    result = run_tool(args, timeout_s=PROBE_TIMEOUT_S, what="ffprobe")
    if result.returncode != 0:
        _raise_unreadable(path, result.stderr)
    if "external track" in result.stderr.lower():
        # Our own box walk missed it (a compressed movie box, say): still refuse.
        raise MediaRejected(
            "unreadable_media",
            "A track of the file refers to media stored in another file, which we never "
            "open: export the video as one self-contained file and upload it again.",
        )
    try:
        data = json.loads(result.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise MediaToolError(f"ffprobe printed invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MediaToolError("ffprobe printed JSON that is not an object")
    return data


def _raise_unreadable(path: Path, stderr: str) -> NoReturn:
    """Turn an ffprobe failure into the most helpful rejection."""
    lowered = stderr.lower()
    if "moov atom not found" in lowered and _isobmff_missing_index(path):
        raise MediaRejected(
            "truncated_file",
            "The MP4/MOV file is incomplete (its index, the 'moov' atom, is missing), so "
            "the upload or the recording was cut short: upload the complete file again.",
        )
    match = re.search(r"\[([\w,]+) @ [^\]]*\] Format not on whitelist", stderr)
    if match is not None:
        found = match.group(1)
        if found.endswith("_pipe") or found.startswith("image2"):
            kind = "an image"
        elif found in ("hls", "dash", "concat", "ffmetadata"):
            kind = "a playlist or list of other files"
        elif found == "tty":
            kind = "text"
        else:
            kind = f"a {found!r} file"
        raise MediaRejected(
            "not_a_video",
            f"The file is {kind}, not a video: {_SUPPORTED_CONTAINER_HINT}.",
        )
    if "invalid data found" in lowered or "moov atom not found" in lowered:
        raise MediaRejected(
            "not_a_video",
            f"The file is not a video we can read: {_SUPPORTED_CONTAINER_HINT}.",
        )
    raise MediaToolError(f"ffprobe could not read {path.name}: {stderr_tail(stderr)}")


# Box types are four printable ASCII bytes (QuickTime also uses 0xA9, "©").
_BOX_TYPE = re.compile(rb"[\x20-\x7e\xa9]{4}")


def _isobmff_missing_index(path: Path) -> bool:
    """True when `path` starts like an MP4/MOV (`ftyp` box) but has no `moov` box.

    That is the signature of an upload or recording cut off before the index was
    written, as opposed to a file that is not MP4 at all.
    """
    size = path.stat().st_size
    offset = 0
    saw_ftyp = False
    with path.open("rb") as fh:
        # Top-level boxes only; a real file has a handful, so bound the walk.
        for _ in range(4096):
            if offset + 8 > size:
                return saw_ftyp
            fh.seek(offset)
            header = fh.read(16)
            box_size, box_type = struct.unpack(">I4s", header[:8])
            if not _BOX_TYPE.fullmatch(box_type):
                return False
            if offset == 0 and box_type not in (b"ftyp", b"wide", b"free", b"mdat"):
                return False
            if box_type == b"ftyp":
                saw_ftyp = True
            if box_type == b"moov":
                return False
            if box_size == 1:
                if len(header) < 16:
                    return saw_ftyp
                (box_size,) = struct.unpack(">Q", header[8:16])
            elif box_size == 0:  # box runs to the end of the file
                return saw_ftyp
            if box_size < 8:
                return False
            offset += box_size
    return False


_DREF_PATH = (b"moov", b"trak", b"mdia", b"minf", b"dinf", b"dref")
_MAX_BOXES = 20_000
_SELF_CONTAINED = 0x000001
"""Data-entry flag: "the media data is in the same file as the movie box"."""


def _boxes(
    fh: BinaryIO, start: int, end: int, budget: list[int]
) -> Iterator[tuple[bytes, int, int]]:
    """`(type, payload_start, box_end)` of the ISO BMFF boxes in `[start, end)`."""
    offset = start
    while offset + 8 <= end and budget[0] > 0:
        budget[0] -= 1
        fh.seek(offset)
        header = fh.read(16)
        if len(header) < 8:
            return
        box_size, box_type = struct.unpack(">I4s", header[:8])
        payload = offset + 8
        if box_size == 1:
            if len(header) < 16:
                return
            (box_size,) = struct.unpack(">Q", header[8:16])
            payload = offset + 16
        elif box_size == 0:  # runs to the end of its parent
            box_size = end - offset
        if box_size < payload - offset or offset + box_size > end:
            return  # malformed: ffprobe will have its own opinion
        yield box_type, payload, offset + box_size
        offset += box_size


def isobmff_external_references(path: Path) -> list[str]:
    """The data references of an MP4/MOV whose media lives outside the file.

    Each track names where its samples are (`moov/trak/mdia/minf/dinf/dref`): normally
    "this file" (the self-contained flag). An entry without that flag that carries a URL or
    a Mac alias points at another file, which the demuxer would try to open. Returns a
    short description per such entry, `[]` for anything else (including non-MP4 files).
    """
    size = path.stat().st_size
    found: list[str] = []
    budget = [_MAX_BOXES]
    with path.open("rb") as fh:

        def walk(start: int, end: int, depth: int) -> None:
            for box_type, payload, box_end in _boxes(fh, start, end, budget):
                if box_type != _DREF_PATH[depth]:
                    continue
                if depth + 1 < len(_DREF_PATH):
                    walk(payload, box_end, depth + 1)
                    continue
                # dref: version/flags, entry count, then one box per entry.
                for entry_type, entry_payload, entry_end in _boxes(
                    fh, payload + 8, box_end, budget
                ):
                    fh.seek(entry_payload)
                    flags = int.from_bytes(fh.read(4)[1:4] or b"\0", "big")
                    has_location = entry_end - entry_payload > 4
                    if not flags & _SELF_CONTAINED and has_location:
                        name = entry_type.decode("latin-1").strip() or "?"
                        found.append(f"a {name!r} data reference")

        walk(0, size, 0)
    return found


def _reject_external_references(path: Path) -> None:
    external = isobmff_external_references(path)
    if external:
        logger.info("refusing %s: %s", path.name, ", ".join(external))
        raise MediaRejected(
            "unreadable_media",
            "A track of the file refers to media stored in another file (an MP4/MOV "
            "external data reference), which we never open: export the video as one "
            "self-contained file and upload it again.",
        )


def _container_label(
    demuxer: str, fmt: Mapping[str, Any], video_codec: str, audio_codec: str | None
) -> str:
    names = demuxer.split(",")
    if "mov" in names:
        brand = str(_as_dict(fmt.get("tags")).get("major_brand") or "").strip()
        return "mov" if brand == "qt" else "mp4"
    if "matroska" in names:
        # ffmpeg reports WebM and MKV alike; WebM is Matroska restricted to these codecs.
        webm_audio = audio_codec in (None, "opus", "vorbis")
        return "webm" if video_codec in ("vp8", "vp9", "av1") and webm_audio else "matroska"
    return names[0] if names else "unknown"


def _progress_value(stdout: str, key: str) -> str | None:
    value = None
    for line in stdout.splitlines():
        name, sep, rest = line.partition("=")
        if sep and name.strip() == key:
            value = rest.strip()
    return value


def _demux_duration(path: Path) -> float | None:
    """Duration from the last packet timestamp, reading (not decoding) the video track."""
    args = [
        *_ffmpeg_base(),
        *_input_args(path),
        "-map",
        _MAIN_VIDEO,
        "-c",
        "copy",
        "-f",
        "null",
        "-progress",
        "pipe:1",
        "-nostats",
        "-",
    ]
    result = run_tool(args, timeout_s=DEMUX_DURATION_TIMEOUT_S, what="ffmpeg (duration)")
    micros = _as_float(_progress_value(result.stdout, "out_time_us"))
    if result.returncode != 0 or micros is None or micros <= 0:
        return None
    return micros / 1_000_000


def _check_tail_decodes(path: Path, video_end_s: float) -> None:
    """Decode the last second of the video; reject files whose end is missing.

    A fast-start MP4 (index first) that was cut short still probes fine, with the full
    duration, because the index describes data that never arrived. Seeking to the end
    and decoding shows it: no frames, or ffmpeg reports a partial file.
    """
    seek = max(0.0, video_end_s - TAIL_CHECK_WINDOW_S)
    args = [
        *_ffmpeg_base(),
        # Start at the keyframe before `seek` and keep its frames: a variable-frame-rate
        # screen recording may have no frame inside the last second, and that is fine.
        "-noaccurate_seek",
        "-ss",
        f"{seek:.3f}",
        *_input_args(path),
        "-map",
        _MAIN_VIDEO,
        "-map",
        "0:a:0?",
        "-f",
        "null",
        "-progress",
        "pipe:1",
        "-nostats",
        "-",
    ]
    try:
        result = run_tool(args, timeout_s=TAIL_CHECK_TIMEOUT_S, what="ffmpeg (tail check)")
    except MediaToolError as exc:
        # A huge keyframe interval can make this slow; an unproven tail is not a reason to
        # reject a file that probed fine.
        logger.warning("skipping the tail check of %s: %s", path.name, exc)
        return
    stderr = result.stderr.lower()
    frames = _as_int(_progress_value(result.stdout, "frame") or "0")
    if any(marker in stderr for marker in _TRUNCATION_MARKERS) or (
        result.returncode == 0 and frames == 0
    ):
        raise MediaRejected(
            "truncated_file",
            "The end of the video is missing (the file was cut short during upload or "
            "export): upload the complete file again.",
        )
    if result.returncode != 0:
        raise MediaToolError(f"ffmpeg could not decode {path.name}: {stderr_tail(result.stderr)}")
    if result.stderr.strip():
        logger.warning(
            "decode warnings at the end of %s: %s", path.name, stderr_tail(result.stderr)
        )


# --- Extraction -------------------------------------------------------------------------


def extract_audio(
    source: Path, dest_wav: Path, *, timeout_s: float = EXTRACT_AUDIO_TIMEOUT_S
) -> float:
    """Write the first audio track of `source` as 16 kHz mono 16-bit PCM WAV.

    Args:
        source: A video that passed `probe_video`.
        dest_wav: Absolute path of the WAV to write; replaced atomically.
        timeout_s: Kill ffmpeg after this long.

    Returns:
        The duration of the written audio in seconds.

    Raises:
        MediaRejected: `no_audio` when the video has no audio track; `unreadable_media`
            when a track refers to another file or the audio track yields no samples.
        MediaToolError: ffmpeg is missing, timed out or failed.
        Cancelled: The activity running this was canceled (ffmpeg is stopped).
    """
    _require_local_file(source)
    _reject_external_references(source)
    with atomic_output(dest_wav) as tmp:
        args = [
            *_ffmpeg_base(),
            *_input_args(source),
            "-map",
            "0:a:0",
            "-vn",
            "-sn",
            "-dn",
            "-ac",
            "1",
            "-ar",
            str(AUDIO_SAMPLE_RATE),
            "-c:a",
            "pcm_s16le",
            # No LIST/INFO chunk: a plain header that every WAV reader (and `wave`) reads.
            "-map_metadata",
            "-1",
            "-fflags",
            "+bitexact",
            "-f",
            "wav",
            "-y",
            f"file:{tmp}",
        ]
        result = run_tool(args, timeout_s=timeout_s, what="ffmpeg (extract audio)")
        if result.returncode != 0:
            if "matches no streams" in result.stderr:
                raise MediaRejected(
                    "no_audio",
                    "The video has no audio track, so there is nothing to transcribe: "
                    "upload a version with sound.",
                )
            raise MediaToolError(
                f"ffmpeg could not extract audio from {source.name}: {stderr_tail(result.stderr)}"
            )
        duration = wav_duration(tmp)
        if duration <= 0:
            # ffmpeg "succeeds" with a header and no samples when the audio track's
            # packets cannot be read; transcribing nothing would only fail later.
            raise MediaRejected(
                "unreadable_media",
                "The audio track holds no sound that can be read: export the video "
                "again with its audio and upload it.",
            )
    logger.info("extracted %.2f s of audio from %s", duration, source.name)
    return duration


_NOT_BLACK = (
    # Tag each frame with its share of near-black pixels and keep only frames under 90%,
    # then let `thumbnail` pick the most representative of the rest.
    "blackframe=amount=0:threshold=32,"
    "metadata=mode=select:key=lavfi.blackframe.pblack:value=90:function=less,"
    "thumbnail=48"
)


def extract_thumbnail(
    source: Path,
    dest_jpg: Path,
    at_s: float,
    *,
    max_width: int = 640,
    timeout_s: float = THUMBNAIL_TIMEOUT_S,
) -> None:
    """Write a JPEG thumbnail of `source`, preferring a frame that is not black.

    Looks at up to ten seconds from `at_s` for a representative non-black frame, then
    from the start; if the whole video is dark, takes the frame at `at_s` (or the first).

    Args:
        source: A video that passed `probe_video`.
        dest_jpg: Absolute path of the JPEG to write; replaced atomically.
        at_s: Where to look first, in seconds.
        max_width: Downscale wider frames to this width, keeping the aspect ratio.
        timeout_s: Kill each ffmpeg attempt after this long.

    Raises:
        MediaRejected: `unreadable_media` when a track refers to another file.
        MediaToolError: No frame could be decoded, or ffmpeg is missing or failed.
        Cancelled: The activity running this was canceled (ffmpeg is stopped).
    """
    _require_local_file(source)
    _reject_external_references(source)
    if max_width < 2:
        raise ValueError("max_width must be at least 2")
    at_s = at_s if math.isfinite(at_s) and at_s > 0 else 0.0
    scale = f"scale=w='min({max_width},iw)':h=-2"
    attempts = [(at_s, f"{scale},{_NOT_BLACK}"), (0.0, f"{scale},{_NOT_BLACK}"), (at_s, scale)]
    attempts.append((0.0, scale))
    errors: list[str] = []
    with atomic_output(dest_jpg) as tmp:
        for start, filters in dict.fromkeys(attempts):
            args = [
                *_ffmpeg_base(),
                "-ss",
                f"{start:.3f}",
                "-t",
                "10",
                *_input_args(source),
                "-map",
                _MAIN_VIDEO,
                "-vf",
                f"{filters},format=yuvj420p",
                "-frames:v",
                "1",
                "-q:v",
                "3",
                "-f",
                "image2",
                "-update",
                "1",
                "-y",
                f"file:{tmp}",
            ]
            result = run_tool(args, timeout_s=timeout_s, what="ffmpeg (thumbnail)")
            # ffmpeg exits 0 without writing anything when no frame passes the filters.
            if result.returncode == 0 and tmp.exists() and tmp.stat().st_size > 0:
                return
            if result.stderr.strip():
                errors.append(stderr_tail(result.stderr))
        raise MediaToolError(
            f"could not take a thumbnail of {source.name}: {errors[-1] if errors else 'no frames'}"
        )


# --- WAV --------------------------------------------------------------------------------


def wav_duration(path: Path) -> float:
    """Duration of a PCM WAV file in seconds."""
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


def read_wav_segment(wav: Path, start_s: float, end_s: float, dest: Path) -> float:
    """Copy `[start_s, end_s)` of a PCM WAV into a new WAV at `dest` (atomically).

    The window is clamped to the file, so the last segment of a plan may end at the
    nominal duration even if the audio is a few milliseconds shorter.

    Args:
        wav: Source WAV (e.g. from `extract_audio`).
        start_s: Window start in seconds.
        end_s: Window end in seconds; must be after `start_s`.
        dest: Absolute path of the WAV to write.

    Returns:
        The duration of the written slice in seconds.

    Raises:
        ValueError: The window is empty, reversed, not finite or starts past the end.
    """
    if not (math.isfinite(start_s) and math.isfinite(end_s)) or end_s <= start_s:
        raise ValueError(f"invalid window [{start_s}, {end_s})")
    with wave.open(str(wav), "rb") as src:
        rate = src.getframerate()
        total = src.getnframes()
        first = min(max(0, round(start_s * rate)), total)
        last = min(max(0, round(end_s * rate)), total)
        if last <= first:
            raise ValueError(
                f"window [{start_s}, {end_s}) is outside the audio ({total / rate:.3f} s)"
            )
        with atomic_output(dest) as tmp:
            with wave.open(str(tmp), "wb") as out:
                out.setnchannels(src.getnchannels())
                out.setsampwidth(src.getsampwidth())
                out.setframerate(rate)
                src.setpos(first)
                remaining = last - first
                # Stream in ~1 s blocks: a window may be minutes of audio.
                while remaining > 0:
                    block = src.readframes(min(remaining, rate))
                    if not block:
                        break
                    out.writeframes(block)
                    remaining -= len(block) // (src.getsampwidth() * src.getnchannels())
            written = wav_duration(tmp)
    return written
