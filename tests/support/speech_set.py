"""A known-script speech set for transcription and retrieval benchmarks (no downloaded audio).

Six espeak-ng videos of 3 to 10 minutes, each with its sentences' exact text and times:
different voices and rates, one with a noise bed 10 dB under the speech, one with long
silences, one dense with technical words and numbers, one with two voices alternating.
Sentences are plain but their word combinations are unusual, so a transcript cannot be
right by guessing the common phrase. Everything is seeded: the same set every time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from reelflow.dev.samples import SpeechVideo, Utterance, make_script_video

_ADJECTIVES = (
    "amber", "quiet", "crooked", "velvet", "frozen", "patient", "copper", "hollow",
    "restless", "silver", "narrow", "gentle", "stubborn", "distant", "clever", "dusty",
)  # fmt: skip
_NOUNS = (
    "lighthouse", "orchard", "violin", "harbor", "lantern", "glacier", "bakery", "compass",
    "meadow", "tunnel", "kettle", "falcon", "library", "canyon", "ferry", "garden",
)  # fmt: skip
_PLACES = (
    "Lisbon", "the northern valley", "Oslo", "a mountain village", "Marseille",
    "the old market", "Quebec", "the river delta", "Kyoto", "the coastal road",
)  # fmt: skip
_VERBS = (
    "carried", "painted", "repaired", "counted", "delivered", "measured", "collected",
    "borrowed", "described", "protected",
)  # fmt: skip
_TECH = (
    "the Kubernetes scheduler", "a PostgreSQL index", "the HNSW graph", "an FFmpeg filter",
    "the Temporal worker", "a gRPC stream", "the JSON schema", "an S3 bucket",
    "the TLS handshake", "a Redis cache", "the GPU kernel", "an HTTP proxy",
)  # fmt: skip


def _plain(rng: random.Random) -> str:
    return (
        f"The {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} from {rng.choice(_PLACES)} "
        f"{rng.choice(_VERBS)} {rng.randint(3, 97)} {rng.choice(_NOUNS)}s before "
        f"{rng.choice(('dawn', 'noon', 'midnight', 'the storm', 'the winter'))}."
    )


def _technical(rng: random.Random) -> str:
    return (
        f"In {rng.randint(1990, 2030)}, {rng.choice(_TECH)} handled "
        f"{rng.randint(2, 900)} requests per second on port {rng.randint(1024, 9999)} "
        f"with version {rng.randint(1, 19)} point {rng.randint(0, 9)}."
    )


@dataclass(frozen=True)
class SpeechCase:
    """One video of the set, and what makes it hard."""

    name: str
    what: str
    script: tuple[Utterance, ...]
    noise_below_speech_db: float | None = None

    def build(self, directory: Path) -> SpeechVideo:
        return make_script_video(
            (directory / f"{self.name}.mp4").resolve(),
            self.script,
            noise_below_speech_db=self.noise_below_speech_db,
        )


def _script(
    seed: int,
    count: int,
    *,
    voices: tuple[str, ...] = ("en-us",),
    wpm: int | None = None,
    technical: bool = False,
    long_pause_every: int = 0,
) -> tuple[Utterance, ...]:
    rng = random.Random(seed)
    lines = []
    for index in range(count):
        pause = 0.7
        if long_pause_every and index and index % long_pause_every == 0:
            pause = rng.uniform(8.0, 25.0)
        text = _technical(rng) if technical else _plain(rng)
        lines.append(
            Utterance(
                text, voice=voices[index % len(voices)], words_per_minute=wpm, pause_before_s=pause
            )
        )
    return tuple(lines)


SPEECH_SET: tuple[SpeechCase, ...] = (
    SpeechCase("plain_us", "plain sentences, US voice, 11 min", _script(1, 145)),
    SpeechCase(
        "fast_gb",
        "British voice at 210 words per minute",
        _script(2, 90, voices=("en-gb",), wpm=210),
    ),
    SpeechCase(
        "noise_bed",
        "noise 10 dB under the speech",
        _script(3, 60),
        noise_below_speech_db=10.0,
    ),
    SpeechCase(
        "long_silences",
        "8-25 s of silence every 6 sentences",
        _script(4, 50, long_pause_every=6),
    ),
    SpeechCase(
        "technical",
        "technical words and numbers, 150 wpm",
        _script(5, 55, wpm=150, technical=True),
    ),
    SpeechCase(
        "two_voices",
        "a US and a British voice alternating",
        _script(6, 70, voices=("en-us", "en-gb+f3")),
    ),
)
