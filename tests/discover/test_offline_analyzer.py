"""The offline analyzer on real videos whose cuts and speech are known."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from reelflow.core.cancellation import Cancelled, CancelScope
from reelflow.dev.samples import SpeechVideo, Utterance, make_script_video
from reelflow.discover.analyzers import TranscriptForAnalysis
from reelflow.discover.offline_analyzer import OfflineAnalyzer, heuristic_call_to_action
from reelflow.media.ffmpeg import require_tool, run_tool

FPS = 12
FRAME_S = 1 / FPS
COLOURS = ("0x1d3557", "0xf4d35e", "0x1b4332", "0xe9ecef")
"""Dark and light in turn. The scene score is a frame difference, so colours of similar
brightness barely register: red (0xd62828) to teal (0x2a9d8f) scores 0.25, under the 0.3
threshold, and would be one scene to the analyzer."""
SEGMENTS_S = (2.0, 1.5, 2.0)
"""Lengths of the first colour segments; the last colour fills the rest of the video."""
KNOWN_CUTS = (2.0, 3.5, 5.5)

SCRIPT = (
    Utterance("Stop scrolling right now.", pause_before_s=0.3),
    Utterance("This blender crushes ice in ten seconds flat.", pause_before_s=2.0),
    Utterance("It is quiet enough for early mornings.", pause_before_s=0.5),
    Utterance("Follow for more kitchen tips.", pause_before_s=0.5),
)


@dataclass(frozen=True)
class CutVideo:
    path: Path
    silent_path: Path
    speech: SpeechVideo


def _render_cuts(dest: Path, duration_s: float, audio_from: Path | None) -> None:
    lengths = [*SEGMENTS_S, duration_s - sum(SEGMENTS_S)]
    args = [require_tool("ffmpeg"), "-nostdin", "-hide_banner", "-v", "error"]
    for colour, length in zip(COLOURS, lengths, strict=True):
        args += ["-f", "lavfi", "-i", f"color=c={colour}:s=320x180:r={FPS}:d={length:.4f}"]
    graph = "".join(f"[{i}:v]" for i in range(len(lengths))) + f"concat=n={len(lengths)}:v=1:a=0[v]"
    if audio_from is not None:
        args += ["-protocol_whitelist", "file", "-i", f"file:{audio_from}"]
    args += ["-filter_complex", graph, "-map", "[v]"]
    if audio_from is not None:
        args += ["-map", f"{len(lengths)}:a", "-c:a", "copy"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-y"]
    args += ["-f", "mp4", f"file:{dest}"]
    result = run_tool(args, timeout_s=120, what="ffmpeg (test video)")
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def cut_video(tmp_path_factory: pytest.TempPathFactory) -> CutVideo:
    workdir = tmp_path_factory.mktemp("offline-analyzer")
    speech = make_script_video(workdir / "speech.mp4", SCRIPT)
    assert speech.duration_s > sum(SEGMENTS_S) + 1
    # Speech starts after the hook window only with the second sentence.
    assert speech.spoken[0].end_s < 3.0 < speech.spoken[1].start_s
    path = workdir / "cuts.mp4"
    _render_cuts(path, speech.duration_s, speech.path)
    silent = workdir / "cuts-silent.mp4"
    _render_cuts(silent, speech.duration_s, None)
    return CutVideo(path=path, silent_path=silent, speech=speech)


def transcript_of(speech: SpeechVideo) -> TranscriptForAnalysis:
    segments = [(line.start_s, line.end_s, line.text) for line in speech.spoken]
    return TranscriptForAnalysis(
        text=" ".join(line.text for line in speech.spoken), segments=segments
    )


class KeyframeStore:
    def __init__(self) -> None:
        self.stored: list[tuple[int, bytes]] = []

    def __call__(self, index: int, path: Path) -> str:
        self.stored.append((index, path.read_bytes()))
        return f"analyses/test/keyframes/{index:03d}.jpg"


def assert_close(found: Sequence[float], expected: Sequence[float], tolerance_s: float) -> None:
    assert len(found) == len(expected), (found, expected)
    for got, want in zip(found, expected, strict=True):
        assert abs(got - want) <= tolerance_s, (found, expected)


def test_scenes_hook_pacing_and_cta_from_measurements(cut_video: CutVideo) -> None:
    speech = cut_video.speech
    keyframes = KeyframeStore()

    result = OfflineAnalyzer().analyze(
        cut_video.path,
        duration_s=speech.duration_s,
        transcript=transcript_of(speech),
        keyframe_sink=keyframes,
    )
    analysis = result.analysis

    assert (result.analyzer, result.model, result.usage) == (
        "offline",
        "ffmpeg-scenes+transcript",
        None,
    )
    # Scenes start at the known hard cuts, within two frames.
    starts = [scene.start_s for scene in analysis.scenes]
    assert starts[0] == 0.0
    assert_close(starts[1:], KNOWN_CUTS, 2 * FRAME_S)
    assert analysis.scenes[-1].end_s == pytest.approx(speech.duration_s, abs=0.01)
    # One JPEG per scene, its key on the scene.
    assert [index for index, _ in keyframes.stored] == [0, 1, 2, 3]
    assert all(data[:2] == b"\xff\xd8" for _, data in keyframes.stored)
    assert [scene.keyframe_key for scene in analysis.scenes] == [
        f"analyses/test/keyframes/{i:03d}.jpg" for i in range(4)
    ]

    # The hook is what is said in the first three seconds: the first sentence.
    assert analysis.hook.text == SCRIPT[0].text
    assert (analysis.hook.start_s, analysis.hook.end_s) == (0.0, 3.0)
    assert analysis.scenes[0].audio == SCRIPT[0].text
    assert analysis.call_to_action == SCRIPT[-1].text
    assert analysis.transcript_excerpt is not None
    assert analysis.transcript_excerpt.startswith("Stop scrolling right now.")

    minutes = speech.duration_s / 60
    assert analysis.pacing.cuts_per_minute == pytest.approx(3 / minutes, rel=0.01)
    assert analysis.pacing.average_scene_s == pytest.approx(speech.duration_s / 4, rel=0.01)
    words = sum(len(u.text.split()) for u in SCRIPT)
    spoken_minutes = sum(line.end_s - line.start_s for line in speech.spoken) / 60
    assert analysis.pacing.words_per_minute == pytest.approx(words / spoken_minutes, rel=0.01)
    # espeak speech at a normal level: well above silence, below full scale.
    assert analysis.loudness_lufs is not None
    assert -45 < analysis.loudness_lufs < -5

    # What it cannot judge is said, not left silently empty; scores are not invented.
    assert analysis.viral_score is None and analysis.hook_score is None
    unfilled = {field.field for field in analysis.unfilled}
    assert {
        "emotional_triggers",
        "viral_patterns",
        "scenes.shot",
        "scenes.on_screen_text",
        "hook.technique",
        "viral_score",
        "hook_score",
    } <= unfilled
    assert "hook.text" not in unfilled and "call_to_action" not in unfilled


def test_without_speech_or_sound_it_says_what_it_could_not_fill(cut_video: CutVideo) -> None:
    result = OfflineAnalyzer().analyze(
        cut_video.silent_path,
        duration_s=cut_video.speech.duration_s,
        transcript=None,
        keyframe_sink=None,
    )
    analysis = result.analysis

    assert_close([s.start_s for s in analysis.scenes[1:]], KNOWN_CUTS, 2 * FRAME_S)
    assert analysis.hook.text is None and analysis.call_to_action is None
    assert analysis.loudness_lufs is None
    assert analysis.pacing.words_per_minute is None
    assert all(scene.keyframe_key is None for scene in analysis.scenes)
    reasons = {field.field: field.reason for field in analysis.unfilled}
    assert reasons["hook.text"] == "no transcript was available"
    assert "sound" in reasons["loudness_lufs"]
    assert "heuristic" in reasons["call_to_action"]
    assert "scenes.keyframe_key" in reasons


def test_cancellation_stops_before_the_next_step(cut_video: CutVideo) -> None:
    scope = CancelScope()
    keyframes_seen: list[int] = []

    def sink(index: int, path: Path) -> str:
        keyframes_seen.append(index)
        scope.cancel()  # canceled while keyframes are being taken
        return f"k/{index}"

    with pytest.raises(Cancelled):
        scope.run(
            lambda: OfflineAnalyzer().analyze(
                cut_video.path,
                duration_s=cut_video.speech.duration_s,
                transcript=transcript_of(cut_video.speech),
                keyframe_sink=sink,
            )
        )
    assert keyframes_seen == [0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Great results. Follow for part two!", "Follow for part two!"),
        ("It works. The link is in my bio.", "The link is in my bio."),
        ("Try it tonight.", "Try it tonight."),
        ("Don't miss the next one.", "Don't miss the next one."),
        ("This is how I make coffee. It was nice.", None),
        ("", None),
    ],
)
def test_call_to_action_heuristic(text: str, expected: str | None) -> None:
    assert heuristic_call_to_action(text) == expected


def test_an_unknown_duration_is_read_from_the_container(cut_video: CutVideo) -> None:
    analysis = (
        OfflineAnalyzer()
        .analyze(cut_video.silent_path, duration_s=0.0, transcript=None, keyframe_sink=None)
        .analysis
    )
    assert_close([s.start_s for s in analysis.scenes[1:]], KNOWN_CUTS, 2 * FRAME_S)
    assert analysis.scenes[-1].end_s == pytest.approx(cut_video.speech.duration_s, abs=0.1)
