"""Small helpers for the generation tests: run ffmpeg, look at pictures, make and await jobs."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from reelflow.generation.providers.base import GenerationJobRequest, JobStatus, VideoProvider

PROMPT = "A cat surfs a 100% {perfect} wave: it's 'rad'; drawtext=x \\ [done] %{pts}"
"""A prompt full of filtergraph and drawtext metacharacters: it must render as text."""


def job_request(
    key: str = "gen-1/attempt-1",
    *,
    prompt: str = PROMPT,
    duration_s: int = 1,
    aspect_ratio: str = "16:9",
    resolution: str = "480p",
) -> GenerationJobRequest:
    return GenerationJobRequest(
        prompt=prompt,
        duration_s=duration_s,
        aspect_ratio=aspect_ratio,
        resolution=resolution,
        idempotency_key=key,
    )


def wait_for(
    provider: VideoProvider, job_id: str, *, timeout_s: float = 60.0, poll_s: float = 0.05
) -> JobStatus:
    """Poll until the job is terminal; fail with TimeoutError after `timeout_s` (real) seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = provider.status(job_id)
        if status.terminal:
            return status
        if time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id} is still {status.state}")
        time.sleep(poll_s)


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly (overwriting outputs); fail the test with its stderr."""
    binary = shutil.which("ffmpeg")
    assert binary is not None, "ffmpeg is not installed: run deploy/bootstrap.sh"
    result = subprocess.run(
        [binary, "-nostdin", "-hide_banner", "-v", "error", "-y", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def mean_luma(image: Path) -> float:
    """Average 8-bit gray level of an image (or a video's first frame)."""
    binary = shutil.which("ffmpeg")
    assert binary is not None
    raw = subprocess.run(
        [binary, "-nostdin", "-v", "error", "-i", str(image), "-frames:v", "1",
         "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True,
        check=True,
    ).stdout  # fmt: skip
    assert raw
    return sum(raw) / len(raw)


def black_then_picture(dest: Path, black_s: float, picture_s: float) -> Path:
    """A 320x240 clip: `black_s` seconds of black, then a bright test pattern, with a tone."""
    total = black_s + picture_s
    ffmpeg(
        "-f", "lavfi", "-i", f"color=c=black:s=320x240:r=12:d={black_s}",
        "-f", "lavfi", "-i", f"testsrc2=s=320x240:r=12:d={picture_s}",
        "-f", "lavfi", "-i", f"sine=f=330:d={total}",
        "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]",
        "-map", "[v]", "-map", "2:a", "-c:v", "libx264", "-preset", "ultrafast",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-t", str(total), str(dest),
    )  # fmt: skip
    return dest
