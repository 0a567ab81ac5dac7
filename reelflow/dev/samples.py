"""Make sample videos with real, synthesized speech, for tests, demos and benchmarks.

Speech comes from espeak-ng, one WAV per sentence, laid end to end with silent gaps; the
exact start and end of every sentence in the result is recorded, so a transcription or
search test can check timestamps against the truth. ffmpeg renders a plain background
with each sentence drawn on screen while it is spoken, and encodes H.264 + AAC MP4 with
the index first (`+faststart`), like most uploads.

All functions block (subprocesses); none touches the network.
"""

from __future__ import annotations

import array
import itertools
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import wave
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from reelflow.media.ffmpeg import MediaToolError, atomic_output, require_tool, stderr_tail

logger = logging.getLogger(__name__)

ESPEAK_TIMEOUT_S = 60.0
BACKGROUND = "0x1d3557"
"""A dark blue: not black, so thumbnails and black-frame checks see a real picture."""

_SILENCE_THRESHOLD = 200
"""Samples quieter than this (of 32767) at a clip's edges are silence, not speech."""


@dataclass(frozen=True)
class SpokenLine:
    """One sentence and exactly when it is audible in the video.

    Attributes:
        start_s: First audible sample, seconds from the start of the video.
        end_s: Last audible sample, seconds from the start of the video.
        text: What is said.
    """

    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class SpeechVideo:
    """A generated video and its ground truth.

    Attributes:
        path: The MP4 file.
        duration_s: Length of the sound track (and the video) in seconds.
        spoken: The sentences in order, with their times.
    """

    path: Path
    duration_s: float
    spoken: list[SpokenLine]


@dataclass(frozen=True)
class _Clip:
    text: str
    pcm: bytes
    """Mono 16-bit little-endian samples."""
    rate: int


def _synthesize(
    text: str, voice: str, workdir: Path, index: int, words_per_minute: int | None = None
) -> _Clip:
    """Speak `text` with espeak-ng and trim the silence espeak puts around it."""
    if not text.strip():
        raise ValueError("sentences must not be empty")
    out = workdir / f"speech_{index:05d}.wav"
    # Text goes through stdin so a sentence starting with "-" is never read as an option.
    args = [require_tool("espeak-ng"), "-v", voice, "--stdin", "-w", str(out)]
    if words_per_minute is not None:
        args += ["-s", str(words_per_minute)]
    try:
        result = subprocess.run(
            args,
            input=text,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=ESPEAK_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise MediaToolError(f"espeak-ng timed out on {text[:40]!r}") from None
    if result.returncode != 0 or not out.exists():
        raise MediaToolError(f"espeak-ng failed (voice {voice!r}): {stderr_tail(result.stderr)}")
    with wave.open(str(out), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise MediaToolError("espeak-ng did not write mono 16-bit audio")
        rate = wav.getframerate()
        pcm = wav.readframes(wav.getnframes())
    return _Clip(text=text, pcm=_trim_silence(pcm), rate=rate)


def _trim_silence(pcm: bytes) -> bytes:
    samples = array.array("h")
    samples.frombytes(pcm)
    if sys.byteorder == "big":  # pragma: no cover - WAV is little-endian
        samples.byteswap()
    first = next((i for i, s in enumerate(samples) if abs(s) > _SILENCE_THRESHOLD), None)
    if first is None:
        return pcm  # nothing audible: keep the clip as espeak made it
    last = next(i for i in range(len(samples) - 1, -1, -1) if abs(samples[i]) > _SILENCE_THRESHOLD)
    return pcm[first * 2 : (last + 1) * 2]


def _synthesize_all(
    texts: Sequence[str], voice: str, workdir: Path, first_index: int = 0
) -> list[_Clip]:
    # espeak-ng is single-threaded; running one per core (up to 4) cuts a long script's
    # synthesis time by about the core count.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(
            pool.map(
                lambda it: _synthesize(it[1], voice, workdir, it[0]),
                enumerate(texts, start=first_index),
            )
        )


def _lay_out(clips: Sequence[_Clip], gap_s: float) -> tuple[bytes, int, list[SpokenLine]]:
    """Concatenate clips with `gap_s` of silence between them (half a gap at each end)."""
    if not clips:
        raise ValueError("at least one sentence is needed")
    rate = clips[0].rate
    if any(c.rate != rate for c in clips):
        raise MediaToolError("espeak-ng returned clips at different sample rates")
    gap = b"\x00\x00" * round(gap_s * rate)
    edge = b"\x00\x00" * round(gap_s * rate / 2)
    parts = [edge]
    spoken: list[SpokenLine] = []
    position = len(edge) // 2
    for i, clip in enumerate(clips):
        if i:
            parts.append(gap)
            position += len(gap) // 2
        frames = len(clip.pcm) // 2
        # Times from sample counts, so they are exact in the WAV (and the AAC track,
        # whose encoder delay MP4 edit lists cancel).
        spoken.append(SpokenLine(position / rate, (position + frames) / rate, clip.text))
        parts.append(clip.pcm)
        position += frames
    parts.append(edge)
    return b"".join(parts), rate, spoken


def _write_wav(path: Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


def _drawtext_filters(
    spoken: Sequence[SpokenLine], workdir: Path, width: int, height: int
) -> list[str]:
    font_size = max(10, height // 14)
    chars_per_line = max(12, int(width / (font_size * 0.6)))
    filters = []
    for i, line in enumerate(spoken):
        # Text goes in a file and ffmpeg runs inside `workdir`, so neither the sentence
        # nor the temp path needs filtergraph escaping; expansion=none keeps "%" literal.
        name = f"caption_{i:05d}.txt"
        (workdir / name).write_text(textwrap.fill(line.text, chars_per_line), encoding="utf-8")
        filters.append(
            f"drawtext=textfile={name}:expansion=none:fontcolor=white:fontsize={font_size}"
            f":line_spacing={font_size // 4}:x=(w-text_w)/2:y=(h-text_h)/2"
            f":enable='between(t,{line.start_s:.3f},{line.end_s:.3f})'"
        )
    return filters


def _check_frame(width: int, height: int, fps: int) -> None:
    # H.264 with 4:2:0 chroma needs even dimensions; checked before any synthesis work.
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise ValueError("width and height must be even and at least 16")
    if fps < 1:
        raise ValueError("fps must be at least 1")


def _encode(
    dest: Path,
    *,
    workdir: Path,
    source: str,
    duration_s: float,
    width: int,
    height: int,
    fps: int,
    wav: Path | None,
    filters: Sequence[str],
    preset: str,
) -> None:
    """Render `source` (a lavfi video source) with `filters`, plus `wav` if given, to MP4."""
    _check_frame(width, height, fps)
    sep = ":" if "=" in source else "="
    graph = ",".join([f"{source}{sep}s={width}x{height}:r={fps}", *filters, "format=yuv420p"])
    ffmpeg = require_tool("ffmpeg")
    with atomic_output(dest) as tmp:
        args = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error"]
        args += ["-f", "lavfi", "-i", graph]
        if wav is not None:
            args += ["-i", wav.name]
        args += ["-map", "0:v"]
        if wav is not None:
            args += ["-map", "1:a", "-c:a", "aac", "-b:a", "64k"]
        args += [
            "-c:v",
            "libx264",
            "-preset",
            preset,
            "-tune",
            "stillimage",
            "-crf",
            "30",
            # A keyframe every 2 s keeps seeks (probe tail check, thumbnails) cheap.
            "-g",
            str(fps * 2),
            "-t",
            f"{duration_s:.6f}",
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
            "-y",
            f"file:{tmp}",
        ]
        timeout = max(120.0, duration_s * 2)
        # Relative input names: run inside the scratch directory.
        result = _run_in(args, cwd=workdir, timeout_s=timeout)
        if result != "":
            raise MediaToolError(f"ffmpeg could not render {dest.name}: {result}")


def _run_in(args: Sequence[str], *, cwd: Path, timeout_s: float) -> str:
    """Run ffmpeg in `cwd`; return "" on success or the stderr tail on failure."""
    try:
        result = subprocess.run(
            list(args),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout_s:.0f} s"
    return (
        ""
        if result.returncode == 0
        else (stderr_tail(result.stderr) or f"exit {result.returncode}")
    )


def _render_speech(
    dest: Path,
    clips: Sequence[_Clip],
    *,
    width: int,
    height: int,
    fps: int,
    gap_s: float,
    with_audio: bool,
    preset: str,
) -> SpeechVideo:
    pcm, rate, spoken = _lay_out(clips, gap_s)
    duration = len(pcm) / 2 / rate
    with tempfile.TemporaryDirectory(prefix="reelflow-render-") as scratch:
        workdir = Path(scratch)
        wav = workdir / "speech.wav"
        _write_wav(wav, pcm, rate)

        def render(filters: Sequence[str]) -> None:
            _encode(
                dest,
                workdir=workdir,
                source=f"color=c={BACKGROUND}",
                duration_s=duration,
                width=width,
                height=height,
                fps=fps,
                wav=wav if with_audio else None,
                filters=filters,
                preset=preset,
            )

        try:
            render(_drawtext_filters(spoken, workdir, width, height))
        except MediaToolError as exc:
            # drawtext needs a font; a machine without fonts still gets a usable video.
            logger.warning("rendering captions failed, rendering without them: %s", exc)
            render(())
    logger.info("rendered %s: %.2f s, %d sentences", dest.name, duration, len(spoken))
    return SpeechVideo(path=dest, duration_s=duration, spoken=spoken)


def make_speech_video(
    dest: Path,
    sentences: Sequence[str],
    *,
    width: int = 640,
    height: int = 360,
    fps: int = 24,
    gap_s: float = 0.6,
    with_audio: bool = True,
    voice: str = "en-us",
) -> SpeechVideo:
    """Render an MP4 in which each sentence is spoken (and shown) in turn.

    Args:
        dest: Absolute path of the MP4 to write; replaced atomically.
        sentences: What to say, in order.
        width: Frame width (even).
        height: Frame height (even).
        fps: Frame rate.
        gap_s: Silence between sentences; half of it also leads in and trails out.
        with_audio: False renders the captions only, with no audio track; the timings
            still say when each caption is on screen.
        voice: An espeak-ng voice, e.g. `en-us` or `en-gb`.

    Returns:
        The file, its duration and each sentence's exact start and end.

    Raises:
        ValueError: No sentences, an empty sentence, or bad dimensions.
        MediaToolError: espeak-ng or ffmpeg is missing or failed.
    """
    if not sentences or any(not sentence.strip() for sentence in sentences):
        raise ValueError("sentences must be a non-empty list of non-empty strings")
    if gap_s < 0:
        raise ValueError("gap_s must not be negative")
    _check_frame(width, height, fps)
    with tempfile.TemporaryDirectory(prefix="reelflow-speech-") as scratch:
        clips = _synthesize_all(sentences, voice, Path(scratch))
    return _render_speech(
        dest,
        clips,
        width=width,
        height=height,
        fps=fps,
        gap_s=gap_s,
        with_audio=with_audio,
        preset="veryfast",
    )


@dataclass(frozen=True)
class Utterance:
    """One sentence of a script video: what is said, by which voice, after how long a pause.

    Attributes:
        text: What is said.
        voice: An espeak-ng voice, e.g. `en-us`, `en-gb`, or `en-us+f3` for a variant.
        words_per_minute: Speaking rate; None is espeak-ng's default (175).
        pause_before_s: Silence before this sentence (the first one's is the lead-in).
    """

    text: str
    voice: str = "en-us"
    words_per_minute: int | None = None
    pause_before_s: float = 0.6


def make_script_video(
    dest: Path,
    script: Sequence[Utterance],
    *,
    noise_below_speech_db: float | None = None,
    width: int = 320,
    height: int = 180,
    fps: int = 12,
) -> SpeechVideo:
    """Render an MP4 of a spoken script whose every sentence's text and time are known.

    For transcription benchmarks: voices and rates may change per sentence, pauses may be
    long, and a steady noise bed can sit under the speech. Captions are left out (hundreds
    of drawtext filters make long videos slow to encode).

    Args:
        dest: Absolute path of the MP4 to write; replaced atomically.
        script: The sentences in order.
        noise_below_speech_db: Mix a deterministic noise bed this many dB below the
            speech's RMS level (e.g. 10); None for clean speech.
        width: Frame width (even).
        height: Frame height (even).
        fps: Frame rate.

    Returns:
        The file, its duration and each sentence's exact start and end.
    """
    if not script or any(not line.text.strip() for line in script):
        raise ValueError("the script must be a non-empty list of non-empty sentences")
    if any(line.pause_before_s < 0 for line in script):
        raise ValueError("pauses must not be negative")
    _check_frame(width, height, fps)
    with tempfile.TemporaryDirectory(prefix="reelflow-script-") as scratch:
        workdir = Path(scratch)
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            clips = list(
                pool.map(
                    lambda it: _synthesize(
                        it[1].text, it[1].voice, workdir, it[0], it[1].words_per_minute
                    ),
                    enumerate(script),
                )
            )
        rate = clips[0].rate
        if any(c.rate != rate for c in clips):
            raise MediaToolError("espeak-ng returned clips at different sample rates")
        parts: list[bytes] = []
        spoken: list[SpokenLine] = []
        position = 0
        for line, clip in zip(script, clips, strict=True):
            pause = b"\x00\x00" * round(line.pause_before_s * rate)
            parts.append(pause)
            position += len(pause) // 2
            frames = len(clip.pcm) // 2
            spoken.append(SpokenLine(position / rate, (position + frames) / rate, clip.text))
            parts.append(clip.pcm)
            position += frames
        parts.append(b"\x00\x00" * round(0.5 * rate))
        pcm = b"".join(parts)
        if noise_below_speech_db is not None:
            pcm = _with_noise_bed(pcm, spoken, rate, noise_below_speech_db)
        duration = len(pcm) / 2 / rate
        wav = workdir / "speech.wav"
        _write_wav(wav, pcm, rate)
        _encode(
            dest,
            workdir=workdir,
            source=f"color=c={BACKGROUND}",
            duration_s=duration,
            width=width,
            height=height,
            fps=fps,
            wav=wav,
            filters=(),
            preset="ultrafast",
        )
    logger.info("rendered %s: %.1f s, %d sentences", dest.name, duration, len(spoken))
    return SpeechVideo(path=dest, duration_s=duration, spoken=spoken)


def _with_noise_bed(pcm: bytes, spoken: Sequence[SpokenLine], rate: int, below_db: float) -> bytes:
    """`pcm` with low-passed noise mixed in at `below_db` under the speech's RMS level."""
    import numpy as np  # the embedded stack imports this module; numpy only when asked

    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    speech = np.concatenate(
        [samples[round(s.start_s * rate) : round(s.end_s * rate)] for s in spoken]
    )
    speech_rms = float(np.sqrt(np.mean(speech**2))) if speech.size else 1000.0
    noise = np.random.default_rng(0).standard_normal(samples.size)
    # A short moving average takes the hiss off, like a room or street bed rather than tape.
    noise = np.convolve(noise, np.ones(8) / 8, mode="same")
    noise *= speech_rms * 10 ** (-below_db / 20) / float(np.sqrt(np.mean(noise**2)))
    mixed = np.clip(samples + noise, -32768, 32767).astype("<i2")
    return mixed.tobytes()


def make_silent_video(
    dest: Path,
    duration_s: float,
    *,
    width: int = 640,
    height: int = 360,
    fps: int = 24,
) -> SpeechVideo:
    """Render an MP4 with a moving test pattern and no audio track at all.

    Args:
        dest: Absolute path of the MP4 to write; replaced atomically.
        duration_s: Length in seconds.
        width: Frame width (even).
        height: Frame height (even).
        fps: Frame rate.

    Returns:
        The file and its duration; `spoken` is empty.
    """
    if not duration_s > 0:
        raise ValueError("duration_s must be positive")
    with tempfile.TemporaryDirectory(prefix="reelflow-silent-") as scratch:
        _encode(
            dest,
            workdir=Path(scratch),
            source="testsrc2",
            duration_s=duration_s,
            width=width,
            height=height,
            fps=fps,
            wav=None,
            filters=(),
            preset="veryfast",
        )
    return SpeechVideo(path=dest, duration_s=duration_s, spoken=[])


_TOPICS = (
    "Temporal workflows survive worker crashes because every step is recorded in history.",
    "A good hook in the first three seconds decides whether viewers keep watching.",
    "Vector search finds passages by meaning rather than by exact words.",
    "Whisper turns speech into text with timestamps for every segment.",
    "Short videos perform best when the caption repeats the main promise.",
    "Retry policies should give up on errors that can never succeed.",
    "The cost ledger records every paid call exactly once, even after retries.",
    "Thumbnails with a clear face and bold text earn more clicks.",
    "Chunking a transcript with overlap keeps sentences from being cut in half.",
    "Outlier detection spots videos that beat a creator's usual view count.",
    "Postgres with pgvector stores embeddings next to the rest of the data.",
    "Heartbeats let a long activity report progress and be cancelled quickly.",
    "Vertical video at nine by sixteen fills the whole phone screen.",
    "Background music should stay quiet under the narration.",
    "A weekly upload schedule builds a habit in the audience.",
    "Each tenant sees only its own videos, transcripts and costs.",
)


def long_script() -> Iterator[str]:
    """An endless, deterministic script of distinct sentences for long test videos."""
    for n in itertools.count(1):
        for topic in _TOPICS:
            yield f"Part {n}. {topic}"


def make_long_speech_video(
    dest: Path,
    minutes: float,
    *,
    width: int = 320,
    height: int = 180,
    fps: int = 5,
    gap_s: float = 0.6,
    voice: str = "en-us",
) -> SpeechVideo:
    """Render a speech video of at least `minutes` minutes, quickly, for benchmarks.

    Sentences come from `long_script()`, so every sentence is different and searchable.
    Small frames, a low frame rate and the `ultrafast` preset keep rendering to seconds
    for a several-minute video.

    Args:
        dest: Absolute path of the MP4 to write; replaced atomically.
        minutes: Minimum length in minutes.
        width: Frame width (even).
        height: Frame height (even).
        fps: Frame rate.
        gap_s: Silence between sentences.
        voice: An espeak-ng voice.

    Returns:
        The file, its duration and each sentence's exact start and end.
    """
    if not minutes > 0:
        raise ValueError("minutes must be positive")
    _check_frame(width, height, fps)
    target_s = minutes * 60
    clips: list[_Clip] = []
    spoken_s = 0.0
    script = long_script()
    with tempfile.TemporaryDirectory(prefix="reelflow-long-") as scratch:
        while spoken_s < target_s:
            # Synthesize in batches until the script (plus its gaps) is long enough.
            texts = list(itertools.islice(script, 16))
            batch = _synthesize_all(texts, voice, Path(scratch), first_index=len(clips))
            for clip in batch:
                if spoken_s >= target_s:
                    break
                clips.append(clip)
                spoken_s += len(clip.pcm) / 2 / clip.rate + gap_s
    return _render_speech(
        dest,
        clips,
        width=width,
        height=height,
        fps=fps,
        gap_s=gap_s,
        with_audio=True,
        preset="ultrafast",
    )
