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


# --- MP4 boxes ----------------------------------------------------------------------------


def _box_children(data: bytes | bytearray, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """`(type, offset, size)` of the boxes in `data[start:end]` (32-bit sizes only)."""
    found = []
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        assert size >= 8, f"unexpected box size {size} at {offset}"
        found.append((kind, offset, size))
        offset += size
    return found


def point_track_at_external_file(
    source: Path, dest: Path, target: str, *, handler: bytes = b"soun"
) -> Path:
    """Copy an MP4, making one track's data reference an external file (a Mac alias).

    Replaces `moov/trak/mdia/minf/dinf/dref` of the first track with handler `handler`
    (`soun` or `vide`) by one `alis` entry, without the self-contained flag, whose absolute
    path is `target`: the shape ffmpeg's mov demuxer reads as "this track's samples are in
    another file". The parents' sizes are fixed up; `source` must keep its `moov` after
    `mdat` (no faststart), so no chunk offset moves.
    """
    data = bytearray(source.read_bytes())
    top = _box_children(data, 0, len(data))
    names = [kind for kind, _, _ in top]
    assert names.index(b"moov") > names.index(b"mdat"), "needs moov after mdat"
    _, moov, moov_size = next(box for box in top if box[0] == b"moov")
    ancestors = [moov]
    for kind, offset, size in _box_children(data, moov + 8, moov + moov_size):
        if (
            kind == b"trak"
            and bytes(data[offset : offset + size]).find(b"hdlr\0\0\0\0\0\0\0\0" + handler) > 0
        ):
            trak, trak_end = offset, offset + size
            break
    else:
        raise AssertionError(f"no {handler!r} track")
    ancestors.append(trak)
    parent, parent_end = trak, trak_end
    for name in (b"mdia", b"minf", b"dinf", b"dref"):
        _, offset, size = next(
            box for box in _box_children(data, parent + 8, parent_end) if box[0] == name
        )
        ancestors.append(offset)
        parent, parent_end = offset, offset + size
    dref, dref_size = ancestors.pop(), parent_end - parent

    # The alias record as ffmpeg reads it: fixed fields (volume, file name, levels), then
    # tagged fields; tag 2 is the absolute path, -1 ends the list.
    path = target.encode()
    alias = bytes(10) + bytes(1) + bytes(27) + bytes(12) + bytes(1) + bytes(63) + bytes(16)
    alias += struct.pack(">hh", 1, 1) + bytes(16)
    alias += struct.pack(">hH", 2, len(path)) + path + bytes(len(path) % 2)
    alias += struct.pack(">hH", -1, 0)
    entry = struct.pack(">I4sI", 12 + len(alias), b"alis", 0) + alias  # flags 0: external
    new_dref = struct.pack(">I4sII", 16 + len(entry), b"dref", 0, 1) + entry
    delta = len(new_dref) - dref_size
    data[dref : dref + dref_size] = new_dref
    for offset in ancestors:
        (size,) = struct.unpack(">I", data[offset : offset + 4])
        data[offset : offset + 4] = struct.pack(">I", size + delta)
    dest.write_bytes(bytes(data))
    return dest
