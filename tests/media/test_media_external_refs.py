"""Files that point outside themselves, and tools that may only read what we wrote.

Found from outside: an MP4 whose audio track's data reference (`dref`) names another file
probed fine, extracted a WAV with no samples, and every transcription window then failed
with a `ValueError` until the retries ran out. Now probe and extraction refuse it, once,
as `unreadable_media`; and every ffmpeg/ffprobe command reads only `file:` inputs under
`-protocol_whitelist file`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from reelflow.media import ffmpeg
from reelflow.media.ffmpeg import (
    MediaLimits,
    MediaRejected,
    extract_audio,
    extract_thumbnail,
    isobmff_external_references,
    probe_video,
    require_local_inputs,
)
from reelflow.media.validation import ExpectedVideo, validate_video
from schemas.failures import FailureCode
from tests.media.media_helpers import (
    encode_clip,
    point_track_at_external_file,
)
from tests.media.media_helpers import (
    ffmpeg as run_ffmpeg,
)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file the upload names; nothing may ever read it."""
    path = tmp_path / "elsewhere" / "secret.aac"
    path.parent.mkdir()
    path.write_bytes(b"not for you" * 100)
    return path


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    # ffmpeg writes moov after mdat by default, so growing moov moves no media data.
    return encode_clip(tmp_path / "clip.mp4", "-c:v", "libx264", seconds=2.0)


@pytest.fixture
def external_audio(clip: Path, secret: Path, tmp_path: Path) -> Path:
    return point_track_at_external_file(clip, tmp_path / "external-audio.mp4", str(secret))


def raw_ffprobe_streams(path: Path) -> list[str]:
    ffprobe_bin = shutil.which("ffprobe")
    assert ffprobe_bin is not None
    out = subprocess.run(
        [ffprobe_bin, "-v", "error", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [s["codec_type"] for s in json.loads(out)["streams"]]


def test_the_crafted_file_looks_like_a_normal_video_to_ffprobe(external_audio: Path) -> None:
    # The reproduction: nothing about the file itself is broken; ffprobe lists both tracks
    # (and says nothing at its error level), so the old probe accepted it.
    assert raw_ffprobe_streams(external_audio) == ["video", "audio"]
    assert isobmff_external_references(external_audio) == ["a 'alis' data reference"]


def test_probe_rejects_a_track_stored_in_another_file(
    external_audio: Path, limits: MediaLimits
) -> None:
    with pytest.raises(MediaRejected) as excinfo:
        probe_video(external_audio, limits)

    assert excinfo.value.code == FailureCode.UNREADABLE_MEDIA.value == "unreadable_media"
    message = excinfo.value.message
    assert "another file" in message and "self-contained" in message
    assert "ValueError" not in message and "dref" not in message.lower()


def test_a_video_track_stored_elsewhere_is_refused_too(
    clip: Path, secret: Path, tmp_path: Path, limits: MediaLimits
) -> None:
    external_video = point_track_at_external_file(
        clip, tmp_path / "external-video.mp4", str(secret), handler=b"vide"
    )
    with pytest.raises(MediaRejected) as excinfo:
        probe_video(external_video, limits)
    assert excinfo.value.code == "unreadable_media"


def test_extraction_refuses_it_before_running_ffmpeg(
    external_audio: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with recording_tool_commands(monkeypatch) as commands:
        with pytest.raises(MediaRejected) as audio:
            extract_audio(external_audio, tmp_path / "audio.wav")
        with pytest.raises(MediaRejected) as thumbnail:
            extract_thumbnail(external_audio, tmp_path / "thumb.jpg", at_s=0.5)

    assert audio.value.code == thumbnail.value.code == "unreadable_media"
    assert commands == []
    assert not (tmp_path / "audio.wav").exists()


def test_ffprobe_warning_and_empty_audio_are_second_lines_of_defence(
    external_audio: Path, tmp_path: Path, limits: MediaLimits, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Should the box walk miss a reference (a compressed movie box, a layout it does not
    # know), ffprobe's "skipped external track" warning and the sample count still catch it.
    monkeypatch.setattr(ffmpeg, "_reject_external_references", lambda path: None)

    with pytest.raises(MediaRejected) as probed:
        probe_video(external_audio, limits)
    with pytest.raises(MediaRejected) as extracted:
        extract_audio(external_audio, tmp_path / "audio.wav")

    assert probed.value.code == extracted.value.code == "unreadable_media"
    assert "no sound that can be read" in extracted.value.message


def test_generated_video_validation_reports_it_as_unreadable(
    clip: Path, secret: Path, tmp_path: Path
) -> None:
    external = point_track_at_external_file(clip, tmp_path / "gen.mp4", str(secret))
    report = validate_video(
        external,
        ExpectedVideo(duration_s=2.0, aspect_ratio="4:3", resolution="240p"),
        max_bytes=10_000_000,
        min_bytes=1,
    )
    readable = report.check("readable")
    assert readable is not None and not readable.passed
    assert readable.actual == "unreadable_media"


def test_self_contained_references_are_fine(tmp_path: Path, limits: MediaLimits) -> None:
    mp4 = encode_clip(tmp_path / "clip.mp4", "-c:v", "libx264")
    # QuickTime writes its self-reference as an "alis" entry flagged self-contained.
    mov = encode_clip(tmp_path / "clip.mov", "-c:v", "libx264")
    data = mov.read_bytes()
    self_reference = b"\x00\x00\x00\x0curl \x00\x00\x00\x01"
    assert data.count(self_reference) == 2
    mov.write_bytes(data.replace(self_reference, b"\x00\x00\x00\x0calis\x00\x00\x00\x01"))
    for path in (mp4, mov):
        assert isobmff_external_references(path) == []
        assert probe_video(path, limits).has_audio


def test_a_url_reference_without_the_self_contained_flag_is_found(clip: Path) -> None:
    data = bytearray(clip.read_bytes())
    url = data.find(b"\x00\x00\x00\x0curl \x00\x00\x00\x01")
    assert url > 0
    # Same size, flag cleared: a bare "url " entry with no location still means "here".
    data[url + 8 : url + 12] = b"\x00\x00\x00\x00"
    clip.write_bytes(bytes(data))
    assert isobmff_external_references(clip) == []


# --- every tool invocation reads local files only -----------------------------------------


@contextmanager
def recording_tool_commands(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    commands: list[list[str]] = []
    real_popen = subprocess.Popen

    def spy(args: list[str], *rest: Any, **kwargs: Any) -> subprocess.Popen[Any]:
        commands.append(list(args))
        return real_popen(args, *rest, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(subprocess, "Popen", spy)
        yield commands


def _inputs(command: list[str]) -> list[tuple[str, str | None, str | None]]:
    """`(input, its -f, its -protocol_whitelist)` for each `-i` of an ffmpeg/ffprobe call."""
    found = []
    fmt = whitelist = None
    for flag, value in zip(command, [*command[1:], ""], strict=True):
        if flag == "-f":
            fmt = value
        elif flag == "-protocol_whitelist":
            whitelist = value
        elif flag == "-i":
            found.append((value, fmt, whitelist))
            fmt = whitelist = None
    return found


def test_every_tool_call_reads_only_whitelisted_local_files(
    tmp_path: Path, limits: MediaLimits, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = encode_clip(tmp_path / "clip.webm", "-c:v", "libvpx-vp9", audio=("-c:a", "libopus"))
    no_duration = tmp_path / "no-duration.mkv"
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240:r=12:d=1", "-c:v", "libx264",
               "-f", "matroska", "-live", "1", str(no_duration))  # fmt: skip

    with recording_tool_commands(monkeypatch) as commands:
        probe_video(video, limits)
        probe_video(no_duration, limits)
        extract_audio(video, tmp_path / "audio.wav")
        extract_thumbnail(video, tmp_path / "thumb.jpg", at_s=0.5)
        validate_video(
            video,
            ExpectedVideo(duration_s=1.0, aspect_ratio="4:3", resolution="240p"),
            max_bytes=10_000_000,
            min_bytes=1,
        )

    assert {Path(command[0]).name for command in commands} == {"ffmpeg", "ffprobe"}
    assert len(commands) >= 8  # probes, tail checks, extraction, thumbnail, blackdetect
    for command in commands:
        inputs = _inputs(command)
        assert inputs, command
        for source, _fmt, whitelist in inputs:
            assert whitelist == "file" and source.startswith("file:/"), command


@pytest.mark.parametrize(
    "command",
    [
        ["ffmpeg", "-i", "/tmp/x.mp4", "out.wav"],
        ["ffmpeg", "-protocol_whitelist", "file", "-i", "/tmp/x.mp4", "out.wav"],
        ["ffmpeg", "-protocol_whitelist", "file,http,tcp", "-i", "file:/tmp/x.mp4", "-"],
        ["ffmpeg", "-protocol_whitelist", "file", "-i", "http://example.com/x.mp4", "-"],
        # The whitelist covers the input it precedes, not the next one.
        ["ffmpeg", "-protocol_whitelist", "file", "-i", "file:/a.mp4", "-i", "file:/b.mp4"],
        ["ffmpeg", "-f", "lavfi", "-i", "movie=/etc/passwd", "-"],
        ["ffmpeg", "-f", "lavfi", "-i", "amovie=file.wav,volume=2", "-"],
    ],
)
def test_other_inputs_are_refused(command: list[str]) -> None:
    with pytest.raises(ValueError):
        require_local_inputs(command)


def test_generated_and_whitelisted_inputs_pass() -> None:
    require_local_inputs(
        ["ffmpeg", "-f", "lavfi", "-i", "testsrc2=d=1", "-f", "lavfi", "-i", "sine=d=1",
         "-protocol_whitelist", "file", "-i", "file:/tmp/x.mp4", "-f", "mp4", "file:/tmp/o.mp4"]
    )  # fmt: skip
