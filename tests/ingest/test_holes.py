"""A voiced stretch the first decode left without text is decoded again, or reported."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from reelflow.ingest.speech_plan import unheard
from reelflow.ingest.transcription import (
    NO_TEXT_AFTER_RETRY,
    LocalWhisperTranscriber,
    TranscribedSegment,
    TranscriptGap,
)

SCRIPT = (
    "Reelflow keeps every sentence of a long talk. "
    "The harbour crane lifted seventeen orange containers before noon. "
    "A quiet library opens its doors at nine every morning. "
    "Durable workflows survive a crashed worker without losing a step. "
    "Viewers remember the last thing they hear in a video."
)


class LosesTheMiddle(LocalWhisperTranscriber):
    """A first decode that lost everything after the first sentence, as tiny.en did."""

    def _fill_holes(
        self, audio: Any, segments: list[TranscribedSegment], offset_s: float
    ) -> tuple[list[TranscribedSegment], list[TranscriptGap]]:
        return super()._fill_holes(audio, segments[:1], offset_s)


class NeverHears(LosesTheMiddle):
    def _decode_alone(self, clip: Any) -> Iterable[Any]:
        return []


def _words(segments: list[TranscribedSegment]) -> set[str]:
    return set(re.findall(r"[a-z]+", " ".join(s.text for s in segments).lower()))


@pytest.fixture(scope="module")
def talk(speak: Callable[[str, Path], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speak(SCRIPT, tmp_path_factory.mktemp("holes") / "talk.wav")


def test_a_lost_stretch_is_decoded_again_on_its_own(talk: Path) -> None:
    complete = LocalWhisperTranscriber().transcribe(talk, offset_s=100.0)
    assert len(complete.segments) >= 2, "the script decodes into several segments"

    result = LosesTheMiddle().transcribe(talk, offset_s=100.0)

    lost = _words(complete.segments[1:]) - _words(complete.segments[:1])
    recovered = lost & _words(result.segments)
    # Decoded alone, without the first sentence as context, a few words come out
    # differently (tiny.en); without the second decode none would come back at all.
    assert len(recovered) >= 0.6 * len(lost), sorted(lost - recovered)
    assert result.gaps == ()
    starts = [s.start_s for s in result.segments]
    assert starts == sorted(starts) and starts[0] >= 100.0


def test_what_stays_empty_is_reported_as_a_gap(talk: Path) -> None:
    result = NeverHears().transcribe(talk, offset_s=100.0)

    assert result.gaps, "the lost sentences are reported"
    for gap in result.gaps:
        assert gap.reason == NO_TEXT_AFTER_RETRY
        assert 100.0 <= gap.start_s < gap.end_s <= 100.0 + result.audio_seconds + 0.01
    first_end = result.segments[0].end_s
    assert sum(g.end_s - g.start_s for g in result.gaps) >= 3.0
    assert all(g.start_s >= first_end - 0.5 for g in result.gaps)


def test_unheard_finds_the_voiced_parts_without_text() -> None:
    voiced = [(0.0, 10.0), (12.0, 30.0)]
    heard = [(0.5, 9.0), (12.0, 15.0), (25.0, 29.5)]

    assert unheard(voiced, heard, min_s=3.0) == [(15.0, 25.0)]
    assert unheard(voiced, [], min_s=3.0) == voiced
    assert unheard([(0.0, 2.0)], [], min_s=3.0) == []
