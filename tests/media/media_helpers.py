"""Small ffmpeg helpers for the media tests: make odd inputs, look at pictures."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

SENTENCES = (
    "Reelflow turns every upload into a searchable transcript.",
    "The second sentence talks about durable workflows.",
)
"""What the session's speech video says."""


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


def encode_clip(
    dest: Path,
    *vcodec: str,
    audio: tuple[str, ...] = ("-c:a", "aac"),
    size: str = "320x240",
    seconds: float = 1.0,
) -> Path:
    """A short test-pattern clip with a tone, encoded with the given codec options."""
    args = ["-f", "lavfi", "-i", f"testsrc2=s={size}:r=12:d={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", *audio]
    ffmpeg(*args, *vcodec, "-t", str(seconds), str(dest))
    return dest


def gray_frame(video_or_image: Path, at_s: float | None = None) -> tuple[int, int, bytes]:
    """Decode one frame as 8-bit gray: `(width, height, pixels)`."""
    ffprobe_bin, ffmpeg_bin = shutil.which("ffprobe"), shutil.which("ffmpeg")
    assert ffprobe_bin is not None and ffmpeg_bin is not None
    size_args = ["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height"]
    probe = subprocess.run(
        [ffprobe_bin, *size_args, "-of", "csv=p=0", str(video_or_image)],
        capture_output=True,
        text=True,
        check=True,
    )
    width, height = (int(v) for v in probe.stdout.strip().split(",")[:2])
    seek = ["-ss", f"{at_s:.3f}"] if at_s is not None else []
    output = ["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"]
    raw = subprocess.run(
        [ffmpeg_bin, "-nostdin", "-v", "error", *seek, "-i", str(video_or_image), *output],
        capture_output=True,
        check=True,
    ).stdout
    assert len(raw) == width * height
    return width, height, raw


def mean(pixels: bytes) -> float:
    return sum(pixels) / len(pixels)


def rotate_mp4_90(path: Path) -> None:
    """Mark an MP4's video as "display rotated by 90°", the way phones store portrait video.

    Rewrites the transformation matrix of the first track header (`tkhd`) in place; the
    pictures themselves stay landscape.
    """
    data = bytearray(path.read_bytes())
    tkhd = data.find(b"tkhd")
    assert tkhd > 0 and data[tkhd + 4] == 0, "expected a version-0 track header"
    # After type: version/flags, created, modified, track id, reserved, duration (4 each),
    # reserved (8), layer, alternate group, volume, reserved (2 each) = 40 bytes.
    matrix_at = tkhd + 4 + 40
    matrix = (0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    data[matrix_at : matrix_at + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))
