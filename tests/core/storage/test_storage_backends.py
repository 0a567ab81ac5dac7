"""One behavioural suite for every storage backend (local directory and S3 over HTTP)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import reelflow.core.s3_storage as s3_module
from reelflow.core.s3_storage import S3Storage
from reelflow.core.settings import Settings
from reelflow.core.storage import (
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    ObjectTooLarge,
    Storage,
    build_storage,
)
from tests.core.storage.storage_helpers import Backend

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MiB = 1024 * 1024
KEY = "tenants/t1/videos/v1/source.mp4"


def payload(size: int) -> bytes:
    """Deterministic, non-repeating-looking bytes so misplaced ranges are caught."""
    return bytes((i * 31 + i // 251) % 256 for i in range(size))


def read_all(storage: Storage, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(storage.iter_bytes(key, start=start, end=end))


# --- round trips ----------------------------------------------------------------------


def test_put_bytes_round_trip(storage: Storage) -> None:
    data = payload(10_000)
    storage.put_bytes(KEY, data, content_type="video/mp4")

    assert storage.exists(KEY)
    assert storage.size(KEY) == len(data)
    assert read_all(storage, KEY) == data


def test_put_file_and_download_to_round_trip_large(storage: Storage, tmp_path: Path) -> None:
    # Bigger than one multipart part so S3 exercises the managed multipart path.
    data = os.urandom(6 * MiB + 123)
    source = tmp_path / "in.bin"
    source.write_bytes(data)

    storage.put_file(KEY, source, content_type="video/mp4")
    dest = tmp_path / "out" / "copy.bin"
    storage.download_to(KEY, dest)

    assert storage.size(KEY) == len(data)
    assert dest.read_bytes() == data


def test_put_replaces_existing_object(storage: Storage) -> None:
    storage.put_bytes(KEY, b"old contents that are longer")
    storage.put_bytes(KEY, b"new")

    assert read_all(storage, KEY) == b"new"
    assert storage.size(KEY) == 3


def test_empty_object_round_trip(storage: Storage, tmp_path: Path) -> None:
    storage.put_bytes(KEY, b"")
    dest = tmp_path / "empty.bin"
    storage.download_to(KEY, dest)

    assert storage.exists(KEY)
    assert storage.size(KEY) == 0
    assert read_all(storage, KEY) == b""
    assert dest.read_bytes() == b""


def test_put_file_missing_source_stores_nothing(backend: Backend, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        backend.storage.put_file(KEY, tmp_path / "does-not-exist.mp4")

    assert not backend.storage.exists(KEY)
    assert backend.leftovers() == []


# --- ranges ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, None),
        (0, 1),
        (5, 6),
        (100, 2_000),
        (1_000, None),
        (2_999, 3_000),
        (0, 3_000),
        (1_234, 50_000),  # end past the object is clamped
        (3_000, None),  # start at the end: nothing
        (9_999, None),  # start past the end: nothing
        (10, 10),  # empty range
    ],
)
def test_iter_bytes_range_matches_slice(storage: Storage, start: int, end: int | None) -> None:
    data = payload(3_000)
    storage.put_bytes(KEY, data)

    assert read_all(storage, KEY, start=start, end=end) == data[start:end]


def test_iter_bytes_respects_chunk_size(storage: Storage) -> None:
    data = payload(10_000)
    storage.put_bytes(KEY, data)

    chunks = list(storage.iter_bytes(KEY, start=10, end=9_010, chunk_size=1_000))

    assert b"".join(chunks) == data[10:9_010]
    assert len(chunks) >= 9
    assert all(0 < len(c) <= 1_000 for c in chunks)


@pytest.mark.parametrize(("start", "end"), [(-1, None), (10, 5)])
def test_iter_bytes_rejects_bad_ranges(storage: Storage, start: int, end: int | None) -> None:
    storage.put_bytes(KEY, b"0123456789abcdef")

    with pytest.raises(ValueError):
        storage.iter_bytes(KEY, start=start, end=end)


def test_iter_bytes_can_be_closed_early(storage: Storage) -> None:
    storage.put_bytes(KEY, payload(5_000))
    chunks = storage.iter_bytes(KEY, chunk_size=100)

    first = next(chunks)
    close = getattr(chunks, "close", None)
    assert close is not None
    close()

    assert first == payload(100)
    # The object is still readable afterwards (nothing was left locked or half-read).
    assert read_all(storage, KEY) == payload(5_000)


# --- put_stream -----------------------------------------------------------------------


def test_put_stream_returns_bytes_written(storage: Storage) -> None:
    data = payload(50_000)
    chunks = (data[i : i + 4_096] for i in range(0, len(data), 4_096))

    written = storage.put_stream(KEY, chunks, max_bytes=50_000, content_type="video/mp4")

    assert written == 50_000
    assert read_all(storage, KEY) == data


def test_put_stream_multipart_sized_round_trip(storage: Storage) -> None:
    # 12 MiB in 1 MiB chunks: several 5 MiB parts plus a short last part on S3.
    blocks = [os.urandom(MiB) for _ in range(12)]

    written = storage.put_stream(KEY, iter(blocks), max_bytes=20 * MiB)

    assert written == 12 * MiB
    assert storage.size(KEY) == 12 * MiB
    assert read_all(storage, KEY) == b"".join(blocks)


def test_put_stream_single_huge_chunk(storage: Storage) -> None:
    data = os.urandom(11 * MiB)

    assert storage.put_stream(KEY, [data], max_bytes=len(data)) == len(data)
    assert read_all(storage, KEY) == data


def test_put_stream_empty_stream_stores_empty_object(storage: Storage) -> None:
    assert storage.put_stream(KEY, iter(()), max_bytes=10) == 0
    assert storage.exists(KEY)
    assert storage.size(KEY) == 0


def test_put_stream_exactly_at_limit_is_allowed(storage: Storage) -> None:
    assert storage.put_stream(KEY, [b"12345", b"67890"], max_bytes=10) == 10
    assert read_all(storage, KEY) == b"1234567890"


def test_put_stream_overflow_small_leaves_nothing(backend: Backend) -> None:
    with pytest.raises(ObjectTooLarge) as excinfo:
        backend.storage.put_stream(KEY, [b"12345", b"67890", b"x"], max_bytes=10)

    assert excinfo.value.max_bytes == 10
    assert "10 bytes" in str(excinfo.value)
    assert not backend.storage.exists(KEY)
    assert backend.leftovers() == []


def test_put_stream_overflow_after_parts_uploaded_leaves_nothing(backend: Backend) -> None:
    # The limit is crossed after more than one S3 part has already been uploaded.
    blocks = (os.urandom(MiB) for _ in range(14))

    with pytest.raises(ObjectTooLarge):
        backend.storage.put_stream(KEY, blocks, max_bytes=13 * MiB - 1)

    assert not backend.storage.exists(KEY)
    assert backend.leftovers() == []


def test_put_stream_stops_reading_as_soon_as_limit_is_exceeded(storage: Storage) -> None:
    consumed = 0

    def endless() -> Iterator[bytes]:
        nonlocal consumed
        for _ in itertools.count():
            consumed += 1
            yield b"x" * 1_000

    with pytest.raises(ObjectTooLarge):
        storage.put_stream(KEY, endless(), max_bytes=10_500)

    assert consumed == 11


def test_put_stream_failed_overwrite_keeps_previous_object(backend: Backend) -> None:
    backend.storage.put_bytes(KEY, b"previous version")

    with pytest.raises(ObjectTooLarge):
        backend.storage.put_stream(KEY, [b"a" * 6 * MiB, b"b" * 6 * MiB], max_bytes=10 * MiB)

    assert read_all(backend.storage, KEY) == b"previous version"
    assert len(backend.leftovers()) == 1


def test_put_stream_source_error_leaves_nothing(backend: Backend) -> None:
    def broken() -> Iterator[bytes]:
        yield os.urandom(6 * MiB)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        backend.storage.put_stream(KEY, broken(), max_bytes=100 * MiB)

    assert not backend.storage.exists(KEY)
    assert backend.leftovers() == []


# --- missing keys ---------------------------------------------------------------------


def test_missing_key_behaviour(storage: Storage, tmp_path: Path) -> None:
    missing = "tenants/t1/videos/nope/source.mp4"
    dest = tmp_path / "dest.mp4"

    assert not storage.exists(missing)
    with pytest.raises(ObjectNotFound) as excinfo:
        storage.size(missing)
    assert isinstance(excinfo.value, KeyError)
    assert missing in str(excinfo.value)
    with pytest.raises(ObjectNotFound):
        storage.iter_bytes(missing)
    with pytest.raises(ObjectNotFound):
        storage.iter_bytes(missing, start=3, end=3)
    with pytest.raises(ObjectNotFound):
        storage.download_to(missing, dest)
    assert not dest.exists()
    assert list(tmp_path.glob("*dest*")) == []
    storage.delete(missing)  # deleting what is not there is fine (retries)


def test_delete_removes_object(backend: Backend) -> None:
    backend.storage.put_bytes(KEY, b"bye")
    backend.storage.delete(KEY)
    backend.storage.delete(KEY)

    assert not backend.storage.exists(KEY)
    assert backend.leftovers() == []


def test_prefix_directory_is_not_an_object(storage: Storage) -> None:
    storage.put_bytes(KEY, b"data")

    assert not storage.exists("tenants/t1/videos")
    with pytest.raises(ObjectNotFound):
        storage.size("tenants/t1/videos")


# --- invalid keys ---------------------------------------------------------------------

BAD_KEYS = [
    "",
    "/etc/passwd",
    "../outside.mp4",
    "tenants/../../outside.mp4",
    "tenants/t1/..",
    "./tenants/t1",
    "tenants//t1/x.mp4",
    "tenants/t1/",
    "tenants\\t1\\x.mp4",
    "tenants/t1/\x00.mp4",
    "tenants/t1/line\nbreak.mp4",
]

OPERATIONS: dict[str, Callable[[Storage, str, Path], object]] = {
    "put_bytes": lambda s, k, p: s.put_bytes(k, b"x"),
    "put_file": lambda s, k, p: s.put_file(k, p),
    "put_stream": lambda s, k, p: s.put_stream(k, [b"x"], 10),
    "download_to": lambda s, k, p: s.download_to(k, p.parent / "out.bin"),
    "exists": lambda s, k, p: s.exists(k),
    "size": lambda s, k, p: s.size(k),
    "delete": lambda s, k, p: s.delete(k),
    "iter_bytes": lambda s, k, p: s.iter_bytes(k),
}


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_invalid_keys_are_rejected_before_any_io(
    backend: Backend, tmp_path: Path, key: str, operation: str
) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(b"x")

    with pytest.raises(InvalidKey) as excinfo:
        OPERATIONS[operation](backend.storage, key, source)

    assert isinstance(excinfo.value, ValueError)
    assert backend.leftovers() == []
    assert not (tmp_path / "out.bin").exists()


@pytest.mark.parametrize("prefix", ["", "/", "../x", "a//b", "a\\b", ".."])
def test_delete_prefix_rejects_invalid_prefixes(backend: Backend, prefix: str) -> None:
    backend.storage.put_bytes(KEY, b"keep me")

    with pytest.raises(InvalidKey):
        backend.storage.delete_prefix(prefix)

    assert backend.storage.exists(KEY)


def test_local_symlink_escaping_root_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "media"
    outside = tmp_path / "outside"
    outside.mkdir()
    storage = LocalStorage(root)
    (root / "tenants").mkdir()
    (root / "tenants" / "evil").symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidKey):
        storage.put_bytes("tenants/evil/x.mp4", b"x")

    assert list(outside.iterdir()) == []


# --- delete_prefix --------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["tenants/t1", "tenants/t1/"])
def test_delete_prefix_deletes_only_that_subtree(backend: Backend, prefix: str) -> None:
    storage = backend.storage
    doomed = [
        "tenants/t1/videos/v1/source.mp4",
        "tenants/t1/videos/v1/audio.wav",
        "tenants/t1/videos/v2/source.mp4",
        "tenants/t1/exports/a.json",
    ]
    kept = ["tenants/t10/videos/v1/source.mp4", "tenants/t1x.mp4", "tenants/t2/a.mp4"]
    for key in doomed + kept:
        storage.put_bytes(key, key.encode())

    storage.delete_prefix(prefix)
    storage.delete_prefix(prefix)  # idempotent

    assert [k for k in doomed if storage.exists(k)] == []
    assert [k for k in kept if storage.exists(k)] == kept
    assert all(read_all(storage, k) == k.encode() for k in kept)


def test_delete_prefix_on_missing_prefix_is_a_no_op(storage: Storage) -> None:
    storage.delete_prefix("tenants/nobody")


def test_delete_prefix_many_objects(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    # Shrink S3's DeleteObjects batch so several batches run without thousands of objects.
    monkeypatch.setattr(s3_module, "_DELETE_BATCH", 7)
    count = 30
    keys = [f"tenants/t1/frames/{i:05d}.jpg" for i in range(count)]
    for key in keys:
        backend.storage.put_bytes(key, b"j")
    backend.storage.put_bytes("tenants/t2/frames/00000.jpg", b"j")

    backend.storage.delete_prefix("tenants/t1/frames")

    assert backend.leftovers() in (
        ["tenants/t2/frames/00000.jpg"],
        ["media/tenants/t2/frames/00000.jpg"],
    )


# --- S3 specifics ---------------------------------------------------------------------


def test_s3_keys_live_under_prefix_with_content_type(s3_client: S3Client, bucket: str) -> None:
    storage = S3Storage(s3_client, bucket, "/deploy/media/")
    storage.put_bytes(KEY, b"abc", content_type="video/mp4")
    storage.put_stream("tenants/t1/a.webm", [b"x"], max_bytes=1, content_type="video/webm")

    head = s3_client.head_object(Bucket=bucket, Key=f"deploy/media/{KEY}")
    stream_head = s3_client.head_object(Bucket=bucket, Key="deploy/media/tenants/t1/a.webm")
    assert head["ContentType"] == "video/mp4"
    assert head["ContentLength"] == 3
    assert stream_head["ContentType"] == "video/webm"


def test_s3_rejects_unsafe_prefix(s3_client: S3Client, bucket: str) -> None:
    with pytest.raises(InvalidKey):
        S3Storage(s3_client, bucket, "media/../other")


# --- local specifics ------------------------------------------------------------------


def test_local_write_failure_never_exposes_partial_object(tmp_path: Path) -> None:
    root = tmp_path / "media"
    storage = LocalStorage(root)
    storage.put_bytes(KEY, b"complete old version")

    def crash_midway() -> Iterator[bytes]:
        yield b"half of the new"
        raise KeyboardInterrupt  # even a hard interrupt must not publish a partial file

    with pytest.raises(KeyboardInterrupt):
        storage.put_stream(KEY, crash_midway(), max_bytes=1_000)

    assert (root / KEY).read_bytes() == b"complete old version"
    assert [p.name for p in (root / KEY).parent.iterdir()] == ["source.mp4"]


# --- construction from settings -------------------------------------------------------


def test_build_storage_file_url(tmp_path: Path) -> None:
    root = tmp_path / "media root"
    settings = Settings(environment="test", storage_url=root.as_uri())

    storage = build_storage(settings)
    storage.put_bytes(KEY, b"local")

    assert isinstance(storage, LocalStorage)
    assert isinstance(storage, Storage)
    assert (root / KEY).read_bytes() == b"local"


def test_build_storage_defaults_to_media_under_home(tmp_path: Path) -> None:
    settings = Settings(environment="test", storage_url="", reelflow_home=tmp_path / "home")

    storage = build_storage(settings)
    storage.put_bytes(KEY, b"home")

    assert (tmp_path / "home" / "media" / KEY).read_bytes() == b"home"


def test_build_storage_s3_url_talks_to_endpoint(
    aws_env: None, moto_endpoint: str, s3_client: S3Client, bucket: str
) -> None:
    settings = Settings(
        environment="test",
        storage_url=f"s3://{bucket}/reelflow/media",
        s3_endpoint_url=moto_endpoint,
        s3_region="us-east-1",
    )

    storage = build_storage(settings)
    storage.put_bytes(KEY, b"remote")

    assert isinstance(storage, S3Storage)
    assert isinstance(storage, Storage)
    assert storage.size(KEY) == 6
    obj = s3_client.get_object(Bucket=bucket, Key=f"reelflow/media/{KEY}")
    assert obj["Body"].read() == b"remote"
