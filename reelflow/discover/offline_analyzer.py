"""The embedded analyzer: `VideoAnalysis` from measurements, with no network and no model.

What it measures:

* scene cuts: ffmpeg's scene-change score (`select='gt(scene,0.3)'` + `showinfo`), a cut
  where a frame differs from the previous one by more than 30 %;
* one keyframe per scene (a JPEG from the middle of the scene), stored through the
  caller's `keyframe_sink`;
* loudness: integrated loudness (EBU R128, LUFS) of the sound track;
* pacing: cuts per minute, average scene length, and speech rate (words per minute of
  speaking time) from the ingest transcript;
* hook: the words spoken in the first 3 s; scene audio: the words spoken inside each scene;
  transcript excerpt: the start of the transcript;
* call to action, **heuristically**: the last sentence, when it starts with an imperative or
  names a typical action (follow, buy, link, try, shop, comment, subscribe, save).

Word times come from segment times, spreading a segment's words evenly over it (ingest
transcripts have segment, not word, timestamps).

What it cannot judge (emotional triggers, viral patterns, shot types, on-screen text, scene
descriptions, the hook's technique, viral and hook scores) is left empty and listed in
`unfilled` with the reason, so nobody mistakes an empty list for "none found".
"""

from __future__ import annotations

import itertools
import logging
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reelflow.core import cancellation
from reelflow.discover.analyzers import (
    AnalysisResult,
    KeyframeSink,
    TranscriptForAnalysis,
)
from reelflow.media.ffmpeg import (
    ALLOWED_DEMUXERS,
    MediaToolError,
    require_tool,
    run_tool,
    stderr_tail,
)
from schemas.discover import Hook, Pacing, Scene, UnfilledField, VideoAnalysis

logger = logging.getLogger(__name__)

ANALYZER_NAME = "offline"
MODEL_NAME = "ffmpeg-scenes+transcript"
PROMPT_VERSION = "offline-measure-v1"
"""Bump when a measurement changes (threshold, hook length, CTA rule)."""

SCENE_THRESHOLD = 0.3
"""ffmpeg scene score above which a frame starts a new scene (0..1)."""
HOOK_SECONDS = 3.0
EXCERPT_CHARS = 400
MIN_SCENE_S = 0.2
"""Cuts closer together than this are one transition (a flash, a dissolve), not two scenes."""

SCENE_TIMEOUT_S = 600.0
LOUDNESS_TIMEOUT_S = 600.0
KEYFRAME_TIMEOUT_S = 60.0

_PTS_TIME = re.compile(r"\bpts_time:\s*(-?\d+(?:\.\d+)?)")
_DURATION = re.compile(r"Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
_INTEGRATED = re.compile(r"\bI:\s*(-?\d+(?:\.\d+)?|-inf)\s*LUFS")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[\w'’-]+")
_CTA_WORDS = re.compile(
    r"\b(follow|buy|link|try|shop|comment|subscribe|save|order|get yours|sign up|download|"
    r"click|tap|share|like)\w*\b",
    re.IGNORECASE,
)
_IMPERATIVE_STARTS = frozenset(
    {
        "follow", "buy", "try", "shop", "comment", "subscribe", "save", "order", "get", "grab",
        "click", "tap", "check", "visit", "join", "sign", "download", "share", "like", "use",
        "start", "head", "go", "dm", "book", "watch", "learn", "don't", "dont",
    }
)  # fmt: skip


@dataclass(frozen=True)
class _TimedWord:
    at_s: float
    text: str


class OfflineAnalyzer:
    """`VideoAnalyzer` from ffmpeg measurements and the ingest transcript."""

    analyzer = ANALYZER_NAME
    model = MODEL_NAME

    def __init__(self, *, scene_threshold: float = SCENE_THRESHOLD) -> None:
        self._threshold = scene_threshold

    def analyze(
        self,
        video: Path,
        *,
        duration_s: float,
        transcript: TranscriptForAnalysis | None,
        keyframe_sink: KeyframeSink | None,
    ) -> AnalysisResult:
        """See :meth:`VideoAnalyzer.analyze`.

        Raises:
            MediaToolError: ffmpeg is missing or failed on a file the probe accepted.
            Cancelled: the cancel scope was canceled (a running ffmpeg is stopped).
        """
        cancellation.raise_if_cancelled()
        cuts, measured_s = _scene_pass(video, self._threshold)
        if duration_s <= 0 and measured_s is not None:
            duration_s = measured_s  # the catalog did not know it; the container does
        bounds = _scene_bounds(cuts, duration_s)
        cancellation.raise_if_cancelled()
        loudness = measure_loudness(video)
        words = _timed_words(transcript)

        unfilled: list[UnfilledField] = []
        scenes = [
            Scene(
                start_s=round(start, 3),
                end_s=round(end, 3),
                audio=_join(w.text for w in words if start <= w.at_s < end) or None,
            )
            for start, end in bounds
        ]
        missing_keyframes = (
            _store_keyframes(video, scenes, keyframe_sink) if keyframe_sink is not None else []
        )

        hook_end = min(HOOK_SECONDS, duration_s) if duration_s > 0 else HOOK_SECONDS
        hook_text = _join(w.text for w in words if w.at_s < hook_end) or None
        spoken_s = sum(max(0.0, end - start) for start, end, _ in _segments(transcript))
        minutes = duration_s / 60 if duration_s > 0 else 0.0
        pacing = Pacing(
            cuts_per_minute=round(len(cuts) / minutes, 2) if minutes > 0 else None,
            words_per_minute=round(len(words) / (spoken_s / 60), 1)
            if words and spoken_s > 0
            else None,
            average_scene_s=round(duration_s / len(bounds), 2) if bounds else None,
        )
        text = _transcript_text(transcript)
        cta = heuristic_call_to_action(text)

        if not words:
            why = (
                "no transcript was available"
                if transcript is None
                else "the transcript is empty (no speech)"
            )
            for name in (
                "hook.text",
                "transcript_excerpt",
                "pacing.words_per_minute",
                "scenes.audio",
            ):
                unfilled.append(UnfilledField(field=name, reason=why))
        elif hook_text is None:
            unfilled.append(
                UnfilledField(field="hook.text", reason="nothing is said in the first 3 s")
            )
        if cta is None:
            unfilled.append(
                UnfilledField(
                    field="call_to_action",
                    reason="heuristic: the last spoken sentence is not an imperative and names "
                    "no typical action (follow, buy, link, try, shop, comment, subscribe, save)",
                )
            )
        if loudness is None:
            unfilled.append(
                UnfilledField(field="loudness_lufs", reason="the video has no measurable sound")
            )
        if keyframe_sink is None:
            unfilled.append(
                UnfilledField(field="scenes.keyframe_key", reason="no keyframe storage was given")
            )
        elif missing_keyframes:
            numbers = ", ".join(str(index + 1) for index in missing_keyframes)
            unfilled.append(
                UnfilledField(
                    field="scenes.keyframe_key",
                    reason=f"ffmpeg could not take a still of scene(s) {numbers}",
                )
            )
        judgement = "needs a model that understands the video; the offline analyzer only measures"
        for name, what in (
            ("hook.technique", "naming the hook's technique"),
            ("scenes.shot", "framing and camera"),
            ("scenes.description", "describing what happens"),
            ("scenes.on_screen_text", "reading text in the picture"),
            ("emotional_triggers", "emotional triggers"),
            ("viral_patterns", "recognising a format"),
            ("viral_score", "a viral score"),
            ("hook_score", "a hook score"),
        ):
            unfilled.append(UnfilledField(field=name, reason=f"{what} {judgement}"))

        analysis = VideoAnalysis(
            hook=Hook(start_s=0.0, end_s=round(hook_end, 3), text=hook_text),
            scenes=scenes,
            transcript_excerpt=_excerpt(text) if words else None,
            pacing=pacing,
            call_to_action=cta,
            loudness_lufs=loudness,
            unfilled=unfilled,
        )
        return AnalysisResult(
            analysis=analysis,
            analyzer=ANALYZER_NAME,
            model=MODEL_NAME,
            prompt_version=PROMPT_VERSION,
            usage=None,
        )


# --- measurements ----------------------------------------------------------------------------


def _input_args(video: Path) -> list[str]:
    # The same whitelists as every other read (reelflow.media.ffmpeg): one local file only.
    return [
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        ",".join(ALLOWED_DEMUXERS),
        "-i",
        f"file:{video}",
    ]


def detect_scene_cuts(video: Path, *, threshold: float = SCENE_THRESHOLD) -> list[float]:
    """Times (s) at which a new scene starts, in order; the start of the video is not a cut.

    Raises:
        MediaToolError: ffmpeg failed.
    """
    return _scene_pass(video, threshold)[0]


def _scene_pass(video: Path, threshold: float) -> tuple[list[float], float | None]:
    """Scene cuts, and the duration ffmpeg reads from the container (None if it has none)."""
    args = [
        require_tool("ffmpeg"),
        "-nostdin",
        "-hide_banner",
        "-nostats",
        # showinfo writes its lines at info level.
        "-loglevel",
        "info",
        *_input_args(video),
        "-map",
        "0:V:0",
        "-an",
        "-vf",
        f"select='gt(scene,{threshold})',showinfo",
        "-f",
        "null",
        "-",
    ]
    result = run_tool(args, timeout_s=SCENE_TIMEOUT_S, what="ffmpeg (scene detection)")
    if result.returncode != 0:
        raise MediaToolError(f"scene detection failed: {stderr_tail(result.stderr)}")
    cuts: list[float] = []
    for line in result.stderr.splitlines():
        if "Parsed_showinfo" not in line:
            continue
        match = _PTS_TIME.search(line)
        if match is None:
            continue
        at = float(match.group(1))
        if at <= MIN_SCENE_S:
            continue  # the first frame always differs from "nothing"
        if cuts and at - cuts[-1] < MIN_SCENE_S:
            continue
        cuts.append(at)
    duration = _DURATION.search(result.stderr)
    measured = (
        int(duration.group(1)) * 3600 + int(duration.group(2)) * 60 + float(duration.group(3))
        if duration is not None
        else None
    )
    return cuts, measured


def measure_loudness(video: Path) -> float | None:
    """Integrated loudness (LUFS) of the first audio track, or None when there is no sound.

    Raises:
        MediaToolError: ffmpeg failed on a file that has audio.
    """
    args = [
        require_tool("ffmpeg"),
        "-nostdin",
        "-hide_banner",
        "-nostats",
        "-loglevel",
        "info",
        *_input_args(video),
        "-map",
        "0:a:0?",
        "-vn",
        "-af",
        "ebur128",
        "-f",
        "null",
        "-",
    ]
    result = run_tool(args, timeout_s=LOUDNESS_TIMEOUT_S, what="ffmpeg (loudness)")
    if result.returncode != 0:
        if "does not contain any stream" in result.stderr or "matches no streams" in result.stderr:
            return None
        raise MediaToolError(f"loudness measurement failed: {stderr_tail(result.stderr)}")
    # The summary comes last; earlier "I:" values are running figures.
    matches = _INTEGRATED.findall(result.stderr)
    if not matches or matches[-1] == "-inf":
        return None
    value = float(matches[-1])
    return None if value <= -70.0 else value  # -70 LUFS is the gate: silence


def _store_keyframes(video: Path, scenes: list[Scene], sink: KeyframeSink) -> list[int]:
    """Store a still from the middle of each scene; the indexes of scenes left without one."""
    missing: list[int] = []
    with tempfile.TemporaryDirectory(prefix="reelflow-keyframes-") as scratch:
        for index, scene in enumerate(scenes):
            cancellation.raise_if_cancelled()
            middle = scene.start_s + (scene.end_s - scene.start_s) / 2
            path = Path(scratch) / f"scene_{index:03d}.jpg"
            args = [
                require_tool("ffmpeg"),
                "-nostdin",
                "-hide_banner",
                "-v",
                "error",
                # Seeking before the input jumps to the nearest keyframe, then decodes to `middle`.
                "-ss",
                f"{middle:.3f}",
                *_input_args(video),
                "-map",
                "0:V:0",
                "-frames:v",
                "1",
                "-vf",
                "scale='min(720,iw)':-2",
                "-q:v",
                "3",
                "-f",
                "image2",
                "-y",
                f"file:{path}",
            ]
            result = run_tool(args, timeout_s=KEYFRAME_TIMEOUT_S, what="ffmpeg (keyframe)")
            if result.returncode != 0 or not path.exists() or path.stat().st_size == 0:
                logger.warning(
                    "no keyframe for scene %d of %s: %s",
                    index,
                    video.name,
                    stderr_tail(result.stderr),
                )
                missing.append(index)
                continue
            scenes[index] = scene.model_copy(update={"keyframe_key": sink(index, path)})
    return missing


def _scene_bounds(cuts: Sequence[float], duration_s: float) -> list[tuple[float, float]]:
    edges = [0.0, *(c for c in cuts if c < duration_s - MIN_SCENE_S), max(duration_s, 0.0)]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


# --- transcript --------------------------------------------------------------------------------


def _segments(transcript: TranscriptForAnalysis | None) -> list[tuple[float, float, str]]:
    if transcript is None:
        return []
    return [(s, e, t) for s, e, t in transcript.segments if t.strip()]


def _timed_words(transcript: TranscriptForAnalysis | None) -> list[_TimedWord]:
    """Every word with an estimated time: a segment's words spread evenly over the segment."""
    words: list[_TimedWord] = []
    for start, end, text in _segments(transcript):
        tokens = text.split()
        span = max(0.0, end - start)
        for i, token in enumerate(tokens):
            words.append(_TimedWord(start + span * (i + 0.5) / len(tokens), token))
    return words


def _transcript_text(transcript: TranscriptForAnalysis | None) -> str:
    if transcript is None:
        return ""
    text = transcript.text.strip()
    return text or _join(t for _, _, t in _segments(transcript))


def _join(parts: Iterable[str]) -> str:
    return " ".join(p.strip() for p in parts if p.strip())


def _excerpt(text: str) -> str:
    if len(text) <= EXCERPT_CHARS:
        return text
    return text[:EXCERPT_CHARS].rsplit(" ", 1)[0] + " …"


def heuristic_call_to_action(text: str) -> str | None:
    """The last sentence, if it reads like a call to action (a heuristic, not understanding).

    It qualifies when it starts with an imperative verb ("Follow…", "Try…", "Don't…") or
    names a typical action (follow, buy, link, try, shop, comment, subscribe, save…).
    """
    sentences = [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]
    if not sentences:
        return None
    last = sentences[-1]
    first_word = next(iter(_WORD.findall(last.lower())), "")
    if first_word in _IMPERATIVE_STARTS or _CTA_WORDS.search(last):
        return last
    return None
