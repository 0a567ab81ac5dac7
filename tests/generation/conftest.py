"""Fixtures for the generation tests: a few rendered clips."""

from __future__ import annotations

from pathlib import Path

import pytest

from reelflow.generation.providers.local import render_video


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
