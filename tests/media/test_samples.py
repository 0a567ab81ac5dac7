"""Sample videos: the recorded sentence timings are the truth about the sound and picture."""

from __future__ import annotations

import array
import itertools
import math
import wave
from pathlib import Path

import pytest

from reelflow.dev.samples import SpeechVideo, make_long_speech_video, make_speech_video
from reelflow.media.ffmpeg import MediaLimits, extract_audio, probe_video, wav_duration
from tests.media.media_helpers import SENTENCES, gray_frame


@pytest.fixture(scope="session")
def speech_samples(speech_video: SpeechVideo, media_dir: Path) -> tuple[array.array[int], int]:
    """The speech video's sound as heard after AAC encoding, as 16 kHz samples."""
    wav = media_dir / "samples_speech.wav"
    extract_audio(speech_video.path, wav)
    with wave.open(str(wav), "rb") as reader:
        samples = array.array("h")
        samples.frombytes(reader.readframes(reader.getnframes()))
        return samples, reader.getframerate()


def rms(samples: array.array[int], rate: int, start_s: float, end_s: float) -> float:
    window = samples[int(start_s * rate) : int(end_s * rate)]
    return math.sqrt(sum(s * s for s in window) / max(1, len(window)))


def test_timings_are_ordered_and_inside_the_video(speech_video: SpeechVideo) -> None:
    lines = speech_video.spoken

    assert [line.text for line in lines] == list(SENTENCES)
    assert lines[0].start_s > 0
    assert lines[-1].end_s < speech_video.duration_s
    for line in lines:
        assert line.end_s - line.start_s > 1.0, "each sentence takes a while to say"
    for before, after in itertools.pairwise(lines):
        assert after.start_s - before.end_s == pytest.approx(0.6, abs=1e-3)


def test_duration_matches_the_sound_track(
    speech_video: SpeechVideo, media_dir: Path, limits: MediaLimits
) -> None:
    wav = media_dir / "duration_check.wav"

    extracted = extract_audio(speech_video.path, wav)

    assert wav_duration(wav) == pytest.approx(speech_video.duration_s, abs=0.05)
    assert extracted == pytest.approx(speech_video.duration_s, abs=0.05)
    assert probe_video(speech_video.path, limits).duration_s == pytest.approx(
        speech_video.duration_s, abs=0.05
    )


def test_speech_is_audible_exactly_when_recorded(
    speech_video: SpeechVideo, speech_samples: tuple[array.array[int], int]
) -> None:
    samples, rate = speech_samples
    lines = speech_video.spoken
    # Margins absorb AAC's smearing of a few milliseconds around each edge.
    silences = [(0.0, lines[0].start_s - 0.05)]
    silences += [(a.end_s + 0.05, b.start_s - 0.05) for a, b in itertools.pairwise(lines)]
    silences.append((lines[-1].end_s + 0.05, speech_video.duration_s - 0.05))

    for line in lines:
        assert rms(samples, rate, line.start_s, line.end_s) > 1000, line.text
    for start, end in silences:
        assert rms(samples, rate, start, end) < 50, (start, end)


def test_sentence_bounds_are_tight(
    speech_video: SpeechVideo, speech_samples: tuple[array.array[int], int]
) -> None:
    # The recorded start and end are where the voice is, not where espeak's padding is.
    samples, rate = speech_samples

    def peak(start_s: float, end_s: float) -> int:
        return max(abs(s) for s in samples[int(start_s * rate) : int(end_s * rate)])

    for line in speech_video.spoken:
        assert peak(line.start_s, line.start_s + 0.05) > 100, line.text
        assert peak(line.end_s - 0.05, line.end_s) > 100, line.text


def test_caption_is_on_screen_while_spoken(speech_video: SpeechVideo) -> None:
    first, second = speech_video.spoken
    gap = (first.end_s + second.start_s) / 2

    _, _, during = gray_frame(speech_video.path, at_s=(first.start_s + first.end_s) / 2)
    _, _, between = gray_frame(speech_video.path, at_s=gap)

    assert sum(1 for p in during if p > 200) > 500, "white caption text is drawn"
    assert sum(1 for p in between if p > 200) == 0, "no caption between sentences"


def test_video_without_audio_track(tmp_path: Path, limits: MediaLimits) -> None:
    video = make_speech_video(tmp_path / "captions.mp4", ["Only captions here."], with_audio=False)

    report = probe_video(video.path, limits)

    assert report.has_audio is False
    assert report.duration_s == pytest.approx(video.duration_s, abs=0.1)
    assert len(video.spoken) == 1


def test_sentences_that_look_like_options_or_markup_are_spoken(tmp_path: Path) -> None:
    text = "--help: 100% of {braces} and 'quotes' stay text."

    video = make_speech_video(tmp_path / "odd.mp4", [text], width=320, height=180)

    assert video.spoken[0].text == text
    assert video.spoken[0].end_s - video.spoken[0].start_s > 1.0


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_speech_video(tmp_path / "none.mp4", [])
    with pytest.raises(ValueError):
        make_speech_video(tmp_path / "blank.mp4", ["   "])
    with pytest.raises(ValueError):
        make_speech_video(tmp_path / "odd.mp4", ["Hi."], width=321)
    assert list(tmp_path.iterdir()) == []


def test_long_video_reaches_the_requested_length(tmp_path: Path, limits: MediaLimits) -> None:
    video = make_long_speech_video(tmp_path / "long.mp4", 0.25)

    report = probe_video(video.path, limits)

    assert report.duration_s >= 15.0
    assert report.duration_s == pytest.approx(video.duration_s, abs=0.1)
    texts = [line.text for line in video.spoken]
    assert len(set(texts)) == len(texts), "every sentence is different, so each is findable"
    assert all(a.end_s < b.start_s for a, b in itertools.pairwise(video.spoken))
