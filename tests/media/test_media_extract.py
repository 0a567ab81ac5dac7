"""Audio extraction, thumbnails and WAV slicing produce what the next stages read."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from reelflow.dev.samples import SpeechVideo
from reelflow.media.ffmpeg import (
    MediaRejected,
    extract_audio,
    extract_thumbnail,
    read_wav_segment,
    wav_duration,
)
from tests.media.media_helpers import ffmpeg, gray_frame, mean


@pytest.fixture(scope="session")
def speech_wav(speech_video: SpeechVideo, media_dir: Path) -> Path:
    wav = media_dir / "speech.wav"
    extract_audio(speech_video.path, wav)
    return wav


def test_extract_audio_gives_16khz_mono_pcm(speech_video: SpeechVideo, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "audio.wav"

    seconds = extract_audio(speech_video.path, dest)

    with wave.open(str(dest), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        assert wav.getnframes() / 16000 == pytest.approx(seconds)
    assert seconds == pytest.approx(speech_video.duration_s, abs=0.1)
    assert list(dest.parent.iterdir()) == [dest], "no temporary files are left behind"


def test_extract_audio_replaces_an_existing_file(speech_video: SpeechVideo, tmp_path: Path) -> None:
    dest = tmp_path / "audio.wav"
    dest.write_bytes(b"stale bytes from an earlier, interrupted attempt")

    extract_audio(speech_video.path, dest)

    assert wav_duration(dest) == pytest.approx(speech_video.duration_s, abs=0.1)


def test_extract_audio_without_audio_track(silent_video: SpeechVideo, tmp_path: Path) -> None:
    dest = tmp_path / "audio.wav"

    with pytest.raises(MediaRejected) as info:
        extract_audio(silent_video.path, dest)

    assert info.value.code == "no_audio"
    assert list(tmp_path.iterdir()) == [], "neither the WAV nor a temporary file exists"


def test_thumbnail_is_a_downscaled_jpeg(tmp_path: Path) -> None:
    wide = tmp_path / "wide.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=1280x720:r=5:d=1", "-c:v", "libx264", str(wide))
    dest = tmp_path / "thumb.jpg"

    extract_thumbnail(wide, dest, at_s=1.0)

    assert dest.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG signature
    width, height, _ = gray_frame(dest)
    assert (width, height) == (640, 360)


def test_thumbnail_skips_black_frames(tmp_path: Path) -> None:
    # Two seconds of black, then the picture: a fade-in intro, as many videos have.
    video = tmp_path / "fade_in.mp4"
    ffmpeg(
        "-f", "lavfi", "-i",
        "color=black:s=320x240:r=10:d=2[a];testsrc2=s=320x240:r=10:d=2[b];"
        "[a][b]concat=n=2:v=1:a=0",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", str(video),
    )  # fmt: skip
    dest = tmp_path / "thumb.jpg"

    extract_thumbnail(video, dest, at_s=0.0)

    _, _, first_frame = gray_frame(video, at_s=0.0)
    _, _, thumb = gray_frame(dest)
    assert mean(first_frame) < 5, "the test video must start black"
    assert mean(thumb) > 40


def test_thumbnail_past_the_end_falls_back_to_the_start(
    silent_video: SpeechVideo, tmp_path: Path
) -> None:
    dest = tmp_path / "thumb.jpg"

    extract_thumbnail(silent_video.path, dest, at_s=60.0)

    assert gray_frame(dest)[:2] == (640, 360)


def test_wav_segment_is_an_exact_slice(speech_wav: Path, tmp_path: Path) -> None:
    dest = tmp_path / "slice.wav"

    seconds = read_wav_segment(speech_wav, 1.0, 2.5, dest)

    assert seconds == pytest.approx(1.5)
    assert wav_duration(dest) == pytest.approx(1.5)
    with wave.open(str(speech_wav), "rb") as src, wave.open(str(dest), "rb") as part:
        assert (part.getframerate(), part.getnchannels(), part.getsampwidth()) == (16000, 1, 2)
        src.setpos(16000)
        assert part.readframes(part.getnframes()) == src.readframes(24000)


def test_wav_segment_is_clamped_to_the_audio(speech_wav: Path, tmp_path: Path) -> None:
    total = wav_duration(speech_wav)

    seconds = read_wav_segment(speech_wav, total - 1.0, total + 30.0, tmp_path / "tail.wav")

    assert seconds == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(("start", "end"), [(2.0, 2.0), (3.0, 1.0), (500.0, 600.0)])
def test_wav_segment_rejects_empty_windows(
    speech_wav: Path, tmp_path: Path, start: float, end: float
) -> None:
    with pytest.raises(ValueError):
        read_wav_segment(speech_wav, start, end, tmp_path / "bad.wav")
    assert not (tmp_path / "bad.wav").exists()
