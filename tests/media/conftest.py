"""Fixtures for the media tests: real speech videos, made once per session.

Generating media takes a few hundred milliseconds per file, so the files every test
only reads are session-scoped; tests that damage a file copy it first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reelflow.dev.samples import SpeechVideo, make_silent_video, make_speech_video
from reelflow.media.ffmpeg import MediaLimits
from tests.media.media_helpers import SENTENCES


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def speech_video(media_dir: Path) -> SpeechVideo:
    return make_speech_video(media_dir / "speech.mp4", SENTENCES)


@pytest.fixture(scope="session")
def silent_video(media_dir: Path) -> SpeechVideo:
    return make_silent_video(media_dir / "silent.mp4", 2.0)


@pytest.fixture
def limits() -> MediaLimits:
    """Generous limits: the production defaults from seed 004."""
    return MediaLimits(
        max_bytes=500 * 1024 * 1024,
        max_duration_s=3 * 60 * 60,
        max_width=7680,
        max_height=4320,
        max_streams=8,
    )
