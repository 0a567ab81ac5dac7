"""Where the speech is, and transcription windows cut at the silences between it.

Fixed windows cut words in half at every boundary, and a boundary inside a sentence loses
it from both sides. The plan here finds voiced regions with the Silero detector shipped
inside faster-whisper (its ONNX model is in the wheel, nothing downloads) and places each
window boundary in the middle of a pause, as close to the target window length as the
pauses allow. The plan is computed once per extracted audio file and stored, so every
retry transcribes exactly the same windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

SAMPLE_RATE = 16_000

PLAN_VERSION = 1
"""Stored with the plan, so a later planner can tell plans it did not make."""

# The decoder's own filter drops only pauses of a second or more: shorter ones carry the
# rhythm Whisper reads sentences from.
_MIN_SILENCE_MS = 1000
# The planner ends a region at pauses from half a second, the usual gap between
# sentences (espeak: 0.6 s), far longer than the gaps between words, so windows can be
# cut between sentences even in continuous talk.
_PLAN_MIN_SILENCE_MS = 500
# Padding kept around each region, so a boundary never clips a soft onset or tail.
_SPEECH_PAD_MS = 400
_PLAN_SPEECH_PAD_MS = 200
# A window may stretch or shrink this much around the target to reach a pause.
_WINDOW_SLACK = 0.5


Window = tuple[float, float]


@dataclass(frozen=True)
class SpeechPlan:
    """Voiced regions of one audio file and the windows to transcribe it in.

    Attributes:
        audio_duration_s: Length of the decoded audio the plan was made on.
        voiced: Voiced regions in time order, seconds from the start.
        windows: Contiguous windows covering ``[0, audio_duration_s]``.
    """

    audio_duration_s: float
    voiced: list[Window]
    windows: list[Window]

    def to_json(self) -> dict[str, Any]:
        """What the ``videos.transcription_plan`` column stores."""
        return {
            "version": PLAN_VERSION,
            "audio_duration_s": self.audio_duration_s,
            "voiced": [list(region) for region in self.voiced],
            "windows": [list(window) for window in self.windows],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SpeechPlan | None:
        """The stored plan, or ``None`` for a plan of another version."""
        if data.get("version") != PLAN_VERSION:
            return None
        return cls(
            audio_duration_s=float(data["audio_duration_s"]),
            voiced=[(float(s), float(e)) for s, e in data["voiced"]],
            windows=[(float(s), float(e)) for s, e in data["windows"]],
        )


def speech_detector_options(max_speech_s: float | None = None, *, planning: bool = False) -> Any:
    """Silero settings of the decoder's filter, or (``planning``) of the window planner."""
    # Imported here: faster-whisper pulls in CTranslate2 and onnxruntime.
    from faster_whisper.vad import VadOptions

    return VadOptions(
        min_silence_duration_ms=_PLAN_MIN_SILENCE_MS if planning else _MIN_SILENCE_MS,
        speech_pad_ms=_PLAN_SPEECH_PAD_MS if planning else _SPEECH_PAD_MS,
        max_speech_duration_s=max_speech_s if max_speech_s else float("inf"),
    )


def voiced_regions(
    audio: npt.NDArray[np.float32], *, max_speech_s: float | None = None
) -> list[Window]:
    """Voiced regions of 16 kHz mono samples, in seconds, rounded to milliseconds.

    ``max_speech_s`` splits longer regions at their longest inner pause (or, with no pause
    at all, where the length runs out), so every region fits in a window.
    """
    from faster_whisper.vad import get_speech_timestamps

    if len(audio) == 0:
        return []
    stamps = get_speech_timestamps(audio, speech_detector_options(max_speech_s, planning=True))
    return [
        (round(stamp["start"] / SAMPLE_RATE, 3), round(stamp["end"] / SAMPLE_RATE, 3))
        for stamp in stamps
    ]


def plan_speech_windows(voiced: list[Window], duration_s: float, target_s: float) -> list[Window]:
    """Contiguous windows over ``[0, duration_s]`` whose boundaries fall outside speech.

    Each boundary is ``target_s`` after the window's start when that instant is silent;
    otherwise the middle of the pause nearest to it within ±50 %, or failing that the
    next pause. Pure and deterministic.
    """
    if duration_s <= 0:
        return []
    if target_s <= 0:
        raise ValueError("target_s must be positive")
    silences: list[Window] = []
    heard_until = 0.0
    for start, end in voiced:
        # Regions that touch were split by the detector at a short pause (≥ 0.1 s) inside
        # a stretch longer than a window: the zero-length gap is still a place to cut.
        if start >= heard_until:
            silences.append((heard_until, start))
        heard_until = max(heard_until, end)
    if heard_until < duration_s:
        silences.append((heard_until, duration_s))
    middles = sorted({round((a + b) / 2, 3) for a, b in silences if 0.0 < (a + b) / 2 < duration_s})

    windows: list[Window] = []
    start = 0.0
    while duration_s - start > target_s * (1 + _WINDOW_SLACK / 2):
        ideal = round(start + target_s, 3)
        near = [c for c in middles if abs(c - ideal) <= target_s * _WINDOW_SLACK]
        later = [c for c in middles if c > start + target_s * _WINDOW_SLACK]
        if any(a < ideal < b for a, b in silences):
            cut = ideal
        elif near:
            cut = min(near, key=lambda c: (abs(c - ideal), c))
        elif later:
            cut = later[0]
        else:
            break
        if duration_s - cut < target_s * _WINDOW_SLACK / 2:
            # A sliver of a window costs a model call for a second of audio.
            break
        windows.append((round(start, 3), cut))
        start = cut
    windows.append((round(start, 3), round(duration_s, 3)))
    return windows


def unheard(voiced: list[Window], heard: list[Window], *, min_s: float) -> list[Window]:
    """Parts of the voiced regions, at least ``min_s`` long, that no heard span overlaps.

    Pure: the hole check after a window is decoded (``heard`` are its segments' spans).
    """
    holes: list[Window] = []
    spans = sorted(heard)
    for start, end in voiced:
        cursor = start
        for a, b in spans:
            if b <= cursor or a >= end:
                continue
            if a - cursor >= min_s:
                holes.append((round(cursor, 3), round(a, 3)))
            cursor = max(cursor, b)
        if end - cursor >= min_s:
            holes.append((round(cursor, 3), round(end, 3)))
    return holes


def plan_speech(wav_path: Path, target_s: float) -> SpeechPlan:
    """Read a 16 kHz mono WAV, find its speech and plan its windows (blocking, CPU)."""
    from faster_whisper import decode_audio

    from reelflow.ingest.transcription import read_pcm16_mono

    audio: Any = read_pcm16_mono(wav_path)
    if audio is None:
        audio = decode_audio(str(wav_path), sampling_rate=SAMPLE_RATE)
    duration = round(len(audio) / SAMPLE_RATE, 3)
    voiced = voiced_regions(audio, max_speech_s=target_s)
    return SpeechPlan(
        audio_duration_s=duration,
        voiced=voiced,
        windows=plan_speech_windows(voiced, duration, target_s),
    )


@dataclass(frozen=True)
class Coverage:
    """How much of the voiced audio has text, and where it has none.

    Attributes:
        share: Voiced seconds with text ÷ voiced seconds (1.0 with no voice at all).
        gaps: ``(start_s, end_s, reason)`` of voiced stretches without text, in time order.
    """

    share: float
    gaps: list[tuple[float, float, str]]


def coverage_of(stored: dict[str, Any] | None) -> Coverage | None:
    """Coverage from a stored plan and its per-window gaps.

    ``None`` without a plan, or while a window has not recorded its gaps yet (an
    unfinished window has unknown holes, not none).
    """
    plan = SpeechPlan.from_json(stored) if stored else None
    if plan is None or stored is None:
        return None
    if len(stored.get("gaps") or {}) < len(plan.windows):
        return None
    gaps = sorted(
        (float(start), float(end), str(reason))
        for window_gaps in (stored.get("gaps") or {}).values()
        for start, end, reason in window_gaps
    )
    voiced_s = sum(end - start for start, end in plan.voiced)
    missing_s = sum(end - start for start, end, _ in gaps)
    share = 1.0 if voiced_s <= 0 else max(0.0, 1.0 - missing_s / voiced_s)
    return Coverage(share=round(share, 4), gaps=gaps)
