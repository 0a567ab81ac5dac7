"""Fixtures for the generation tests: a fake Sora server and a few rendered clips."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from reelflow.generation.capabilities import render_video
from tests.generation.sora_server import FakeSoraServer


@pytest.fixture
def fake_sora() -> Iterator[FakeSoraServer]:
    server = FakeSoraServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sora_client(fake_sora: FakeSoraServer) -> openai.OpenAI:
    # Retries deliberately left on: SoraProvider must switch them off itself.
    return openai.OpenAI(
        api_key="sk-test-key", base_url=fake_sora.base_url, max_retries=3, timeout=10.0
    )


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("generation-clips")


@pytest.fixture(scope="session")
def sora_like_clip(clip_dir: Path) -> Path:
    """What a Sora job for 4 s at 720p 16:9 should deliver (rendered locally, 12 fps)."""
    return render_video(
        clip_dir / "sora-like.mp4",
        prompt="A lighthouse at dusk",
        duration_s=4,
        aspect_ratio="16:9",
        resolution="720p",
        fps=12,
    )


@pytest.fixture(scope="session")
def portrait_clip(clip_dir: Path) -> Path:
    """A good 2 s 9:16 480p clip with sound."""
    return render_video(
        clip_dir / "portrait.mp4",
        prompt="Portrait clip",
        duration_s=2,
        aspect_ratio="9:16",
        resolution="480p",
        fps=12,
    )
