"""`probe_video`: good uploads are described correctly, bad ones get the right reason."""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
from pathlib import Path

import pytest

from reelflow.core.settings import Settings
from reelflow.dev.samples import SpeechVideo
from reelflow.media.ffmpeg import MediaLimits, MediaRejected, extract_thumbnail, probe_video
from tests.media.media_helpers import encode_clip, ffmpeg, gray_frame, rotate_mp4_90


def rejected(path: Path, limits: MediaLimits) -> MediaRejected:
    with pytest.raises(MediaRejected) as info:
        probe_video(path, limits)
    assert info.value.message, "a rejection must say what to do"
    return info.value


# --- Good files ---------------------------------------------------------------------------


def test_speech_video_is_described_correctly(
    speech_video: SpeechVideo, limits: MediaLimits
) -> None:
    report = probe_video(speech_video.path, limits)

    assert report.container == "mp4"
    assert report.duration_s == pytest.approx(speech_video.duration_s, abs=0.1)
    assert report.has_audio is True
    assert report.video_codec == "h264"
    assert report.audio_codec == "aac"
    assert (report.width, report.height) == (640, 360)
    assert report.fps == pytest.approx(24.0)
    assert report.stream_count == 2
    assert report.size_bytes == speech_video.path.stat().st_size


def test_video_without_audio_track_is_accepted(
    silent_video: SpeechVideo, limits: MediaLimits
) -> None:
    report = probe_video(silent_video.path, limits)

    assert report.has_audio is False
    assert report.audio_codec is None
    assert report.duration_s == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize(
    ("name", "codec_args", "audio_args", "container", "video_codec", "audio_codec"),
    [
        ("clip.webm", ("-c:v", "libvpx-vp9", "-deadline", "realtime"), ("-c:a", "libopus"),
         "webm", "vp9", "opus"),
        ("clip.mkv", ("-c:v", "libx264", "-preset", "ultrafast"), ("-c:a", "flac"),
         "matroska", "h264", "flac"),
        ("clip.avi", ("-c:v", "mpeg4"), ("-c:a", "pcm_s16le"), "avi", "mpeg4", "pcm_s16le"),
        ("clip.mov", ("-c:v", "libx264", "-preset", "ultrafast"), ("-c:a", "aac"),
         "mov", "h264", "aac"),
    ],
)  # fmt: skip
def test_other_accepted_formats(
    tmp_path: Path,
    limits: MediaLimits,
    name: str,
    codec_args: tuple[str, ...],
    audio_args: tuple[str, ...],
    container: str,
    video_codec: str,
    audio_codec: str,
) -> None:
    clip = encode_clip(tmp_path / name, *codec_args, audio=audio_args)

    report = probe_video(clip, limits)

    assert (report.container, report.video_codec, report.audio_codec) == (
        container,
        video_codec,
        audio_codec,
    )
    assert report.duration_s == pytest.approx(1.0, abs=0.15)


def test_browser_recording_without_duration(tmp_path: Path, limits: MediaLimits) -> None:
    # MediaRecorder (and any live muxer) writes WebM with no duration in the header.
    recording = encode_clip(
        tmp_path / "recording.webm",
        "-c:v", "libvpx", "-deadline", "realtime", "-live", "1",
        audio=("-c:a", "libopus"),
        seconds=2.0,
    )  # fmt: skip

    report = probe_video(recording, limits)

    assert report.container == "webm"
    assert report.duration_s == pytest.approx(2.0, abs=0.15)


def test_portrait_video_gets_the_same_allowance_as_landscape(
    tmp_path: Path, limits: MediaLimits
) -> None:
    clip = encode_clip(tmp_path / "portrait.mp4", "-c:v", "libx264", size="180x320")
    landscape_only = dataclasses.replace(limits, max_width=320, max_height=180)

    report = probe_video(clip, landscape_only)

    assert (report.width, report.height) == (180, 320)


def test_rotated_phone_video_reports_its_displayed_size(
    tmp_path: Path, limits: MediaLimits
) -> None:
    # Phones store portrait video as landscape frames plus a rotation flag.
    clip = encode_clip(tmp_path / "phone.mp4", "-c:v", "libx264")
    rotate_mp4_90(clip)

    report = probe_video(clip, limits)

    assert (report.width, report.height) == (240, 320)


def test_limits_come_from_settings() -> None:
    settings = Settings(
        max_upload_bytes=1234, max_duration_s=56.0, max_width=78, max_height=90, max_streams=3
    )

    assert MediaLimits.from_settings(settings) == MediaLimits(
        max_bytes=1234, max_duration_s=56.0, max_width=78, max_height=90, max_streams=3
    )


# --- Files that are not (whole) videos ----------------------------------------------------


def test_empty_file(tmp_path: Path, limits: MediaLimits) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()

    error = rejected(empty, limits)

    assert error.code == "empty_file"
    assert "0 bytes" in error.message


def test_random_bytes_named_mp4(tmp_path: Path, limits: MediaLimits) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(64 * 1024))

    assert rejected(junk, limits).code == "not_a_video"


def test_text_file_named_mp4(tmp_path: Path, limits: MediaLimits) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("Meeting notes\nThis is not a video at all.\n" * 50)

    error = rejected(text, limits)

    assert error.code == "not_a_video"
    assert "MP4" in error.message  # tells the user what to upload instead


def test_image_named_mp4(tmp_path: Path, limits: MediaLimits) -> None:
    image = tmp_path / "photo.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x64", "-frames:v", "1", "-f", "image2", str(image))

    error = rejected(image, limits)

    assert error.code == "not_a_video"
    assert "image" in error.message


def test_audio_only_file(tmp_path: Path, limits: MediaLimits) -> None:
    audio = tmp_path / "podcast.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(audio))

    error = rejected(audio, limits)

    assert error.code == "not_a_video"
    assert "no video track" in error.message


def test_playlist_pointing_at_local_files_is_not_followed(
    tmp_path: Path, limits: MediaLimits
) -> None:
    # The classic ffmpeg local-file-read trick: an HLS playlist disguised as a video.
    playlist = tmp_path / "evil.mp4"
    playlist.write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
    )

    assert rejected(playlist, limits).code == "not_a_video"


def test_truncated_faststart_mp4(
    tmp_path: Path, speech_video: SpeechVideo, limits: MediaLimits
) -> None:
    # Index first: the cut file still probes with the full duration; only the end is gone.
    data = speech_video.path.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])

    error = rejected(half, limits)

    assert error.code == "truncated_file"
    assert "upload the complete file" in error.message


def test_truncated_mp4_without_index(
    tmp_path: Path, speech_video: SpeechVideo, limits: MediaLimits
) -> None:
    # Index last (what cameras and most editors write): a cut file has no `moov` at all.
    index_last = tmp_path / "index_last.mp4"
    ffmpeg("-i", str(speech_video.path), "-c", "copy", str(index_last))
    data = index_last.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])

    assert probe_video(index_last, limits).has_audio  # the uncut file is fine
    assert rejected(half, limits).code == "truncated_file"


def test_truncated_matroska(tmp_path: Path, limits: MediaLimits) -> None:
    clip = encode_clip(tmp_path / "clip.mkv", "-c:v", "libx264", seconds=3.0)
    data = clip.read_bytes()
    half = tmp_path / "half.mkv"
    half.write_bytes(data[: len(data) // 2])

    assert rejected(half, limits).code == "truncated_file"


# --- Formats and codecs we do not take ----------------------------------------------------


def test_unsupported_video_codec(tmp_path: Path, limits: MediaLimits) -> None:
    clip = encode_clip(tmp_path / "mjpeg.mov", "-c:v", "mjpeg")

    error = rejected(clip, limits)

    assert error.code == "unsupported_codec"
    assert "'mjpeg'" in error.message
    assert "H.264" in error.message


def test_prores_is_unsupported(tmp_path: Path, limits: MediaLimits) -> None:
    clip = encode_clip(tmp_path / "prores.mov", "-c:v", "prores_ks", size="128x96", seconds=0.5)

    error = rejected(clip, limits)

    assert error.code == "unsupported_codec"
    assert "'prores'" in error.message


def test_unsupported_audio_codec(tmp_path: Path, limits: MediaLimits) -> None:
    clip = encode_clip(tmp_path / "mp2.mkv", "-c:v", "libx264", audio=("-c:a", "mp2"))

    error = rejected(clip, limits)

    assert error.code == "unsupported_codec"
    assert "'mp2'" in error.message


@pytest.mark.parametrize(("name", "fmt"), [("clip.flv", "flv"), ("clip.ts", "mpegts")])
def test_unsupported_container(tmp_path: Path, limits: MediaLimits, name: str, fmt: str) -> None:
    clip = encode_clip(tmp_path / name, "-c:v", "libx264", "-f", fmt)

    error = rejected(clip, limits)

    assert error.code == "unsupported_container"
    assert "MP4" in error.message


# --- Limits -------------------------------------------------------------------------------


def test_too_large(speech_video: SpeechVideo, limits: MediaLimits) -> None:
    size = speech_video.path.stat().st_size
    tight = dataclasses.replace(limits, max_bytes=size - 1)

    assert rejected(speech_video.path, tight).code == "too_large"
    assert probe_video(speech_video.path, dataclasses.replace(limits, max_bytes=size))


def test_too_long(speech_video: SpeechVideo, limits: MediaLimits) -> None:
    tight = dataclasses.replace(limits, max_duration_s=2.0)

    error = rejected(speech_video.path, tight)

    assert error.code == "too_long"
    assert "2.0 s" in error.message  # the limit, in words a person reads


def test_resolution_too_high(speech_video: SpeechVideo, limits: MediaLimits) -> None:
    tight = dataclasses.replace(limits, max_width=320, max_height=180)

    error = rejected(speech_video.path, tight)

    assert error.code == "resolution_too_high"
    assert "640x360" in error.message


def test_too_many_streams(speech_video: SpeechVideo, limits: MediaLimits) -> None:
    tight = dataclasses.replace(limits, max_streams=1)

    assert rejected(speech_video.path, tight).code == "too_many_streams"


# --- Paths and errors ---------------------------------------------------------------------


def test_relative_and_missing_paths_are_refused(
    tmp_path: Path, speech_video: SpeechVideo, limits: MediaLimits, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(speech_video.path.parent)
    with pytest.raises(ValueError, match="absolute"):
        probe_video(Path(speech_video.path.name), limits)
    with pytest.raises(FileNotFoundError):
        probe_video(tmp_path / "missing.mp4", limits)
    with pytest.raises(ValueError, match="regular file"):
        probe_video(tmp_path, limits)


def test_missing_ffprobe_says_how_to_fix_it(
    speech_video: SpeechVideo, limits: MediaLimits, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)

    with pytest.raises(RuntimeError, match=r"ffprobe is not installed: run deploy/bootstrap\.sh"):
        probe_video(speech_video.path, limits)


def test_rejection_survives_pickling() -> None:
    error = MediaRejected("too_long", "The video is 4 h long; the limit is 3 h.")

    copy = pickle.loads(pickle.dumps(error))

    assert (copy.code, copy.message, str(copy)) == (error.code, error.message, error.message)


@pytest.fixture
def cover(tmp_path: Path) -> Path:
    image = tmp_path / "cover.png"
    ffmpeg("-f", "lavfi", "-i", "color=red:s=64x64", "-frames:v", "1", str(image))
    return image


def add_cover(source: Path, source_streams: int, cover: Path, dest: Path) -> Path:
    """Embed `cover` as cover art: a one-picture PNG "video" stream flagged attached_pic."""
    index = str(source_streams)  # the cover is the stream after the source's streams
    ffmpeg(
        "-i", str(source), "-i", str(cover), "-map", "0", "-map", "1", "-c", "copy",
        f"-c:{index}", "png", f"-disposition:{index}", "attached_pic", str(dest),
    )  # fmt: skip
    return dest


def test_video_with_cover_art(tmp_path: Path, cover: Path, limits: MediaLimits) -> None:
    clip = encode_clip(tmp_path / "clip.mp4", "-c:v", "libx264")
    with_cover = add_cover(clip, 2, cover, tmp_path / "with_cover.mp4")

    report = probe_video(with_cover, limits)

    assert (report.video_codec, report.width, report.height) == ("h264", 320, 240)
    assert report.stream_count == 3
    thumbnail = tmp_path / "thumb.jpg"
    extract_thumbnail(with_cover, thumbnail, at_s=0.5)
    assert gray_frame(thumbnail)[:2] == (320, 240)


def test_audio_with_cover_art_is_not_a_video(
    tmp_path: Path, cover: Path, limits: MediaLimits
) -> None:
    song = tmp_path / "song.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(song))
    with_cover = add_cover(song, 1, cover, tmp_path / "song_with_cover.m4a")

    error = rejected(with_cover, limits)

    assert error.code == "not_a_video"
    assert "no video track" in error.message
