"""Streaming request bodies straight into storage, enforcing size limits as bytes arrive.

Starlette's form parsing spools a whole upload to a temporary file before the route runs,
so a 50 GB body would be read (and written to disk) before anyone could say "too large".
Here the body is read chunk by chunk from `request.stream()`; multipart bodies go through
`python_multipart`'s incremental parser, and the file's bytes are handed to a worker thread
running the blocking `Storage.put_stream`. The moment a limit is passed the request is
answered and the storage write is aborted; storage guarantees nothing partial is kept.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import anyio
import anyio.from_thread
import anyio.to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from api.errors import ApiError, payload_too_large
from reelflow.core.storage import ObjectTooLarge, Storage

logger = logging.getLogger(__name__)

_PIPE_CHUNKS = 8
"""Chunks buffered between the request and the storage thread (back-pressure beyond it)."""

_UPLOAD_THREADS = 200
"""Concurrent uploads; they get their own thread pool so they cannot starve other work."""

# One limiter per event loop: a limiter's waiters belong to the loop that created them.
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def _limiter() -> anyio.CapacityLimiter:
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(_UPLOAD_THREADS)
    return limiter


class _Aborted(Exception):
    """Raised inside `put_stream` so that the half-received object is discarded."""


class StorageSink:
    """Feeds bytes from the event loop into `Storage.put_stream` running in a thread.

    Use `send` for each chunk, then exactly one of `finish` (keep the object) or `abort`
    (discard it). The thread pulls chunks from a small bounded buffer, so a slow storage
    backend slows the client down instead of filling memory.
    """

    def __init__(
        self, storage: Storage, key: str, *, max_bytes: int, content_type: str | None = None
    ) -> None:
        self.key = key
        self._storage = storage
        self._max_bytes = max_bytes
        self._content_type = content_type
        self._send, self._receive = anyio.create_memory_object_stream[bytes](_PIPE_CHUNKS)
        self._aborted = False
        self._task: asyncio.Task[int] = asyncio.create_task(
            anyio.to_thread.run_sync(self._run, limiter=_limiter())
        )

    def _chunks(self) -> Iterator[bytes]:
        while True:
            try:
                chunk = anyio.from_thread.run(self._receive.receive)
            except anyio.EndOfStream:
                if self._aborted:
                    raise _Aborted from None
                return
            yield chunk

    def _run(self) -> int:
        try:
            return self._storage.put_stream(
                self.key, self._chunks(), self._max_bytes, self._content_type
            )
        finally:
            # Wakes a sender blocked on a full buffer if storage gave up early.
            anyio.from_thread.run_sync(self._receive.close)

    async def send(self, data: bytes) -> None:
        """Queue a chunk for storage; raises what storage raised if it stopped early."""
        try:
            await self._send.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._task
            raise RuntimeError("storage stopped reading the upload") from None

    async def finish(self) -> int:
        """Complete the object and return its size."""
        self._send.close()
        return await self._task

    async def abort(self) -> None:
        """Discard the object; nothing is left under the key."""
        self._aborted = True
        self._send.close()
        with anyio.CancelScope(shield=True):
            try:
                await self._task
            except _Aborted:
                pass
            except Exception:
                # The request already failed for a reason the client will see.
                logger.warning("storage write of %s failed while aborting", self.key, exc_info=True)


def _declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    try:
        length = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_request", "Content-Length is not a number") from None
    if length < 0:
        raise ApiError(400, "invalid_request", "Content-Length is negative")
    return length


def _disconnected() -> ApiError:
    return ApiError(400, "incomplete_body", "the client disconnected before the body was complete")


# --- raw bodies (PUT to a signed URL) -------------------------------------------------------


async def receive_raw_body(
    request: Request,
    storage: Storage,
    *,
    key: str,
    expected_bytes: int,
    content_type: str | None = None,
) -> int:
    """Store the request body under `key` if and only if it is exactly `expected_bytes` long.

    Raises:
        ApiError: 413 as soon as the body is longer, 400 `size_mismatch` when it is shorter;
            in both cases nothing is stored.
    """
    declared = _declared_length(request)
    if declared is not None and declared > expected_bytes:
        raise payload_too_large(expected_bytes)
    if declared is not None and declared < expected_bytes:
        raise _size_mismatch(declared, expected_bytes)
    sink: StorageSink | None = None
    received = 0
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            received += len(chunk)
            if received > expected_bytes:
                raise payload_too_large(expected_bytes)
            if sink is None:
                sink = StorageSink(
                    storage, key, max_bytes=expected_bytes, content_type=content_type
                )
            await sink.send(chunk)
        if received != expected_bytes:
            raise _size_mismatch(received, expected_bytes)
        assert sink is not None  # expected_bytes >= 1, so some bytes arrived
        return await sink.finish()
    except ClientDisconnect:
        if sink is not None:
            await sink.abort()
        raise _disconnected() from None
    except ObjectTooLarge:
        # Storage's own limit (the same one): it already discarded the object.
        raise payload_too_large(expected_bytes) from None
    except BaseException:
        if sink is not None:
            await sink.abort()
        raise


def _size_mismatch(received: int, expected: int) -> ApiError:
    return ApiError(
        400,
        "size_mismatch",
        f"the body has {received} bytes but the upload was declared as {expected} bytes",
    )


# --- multipart/form-data --------------------------------------------------------------------


@dataclass(frozen=True)
class _FileStarted:
    filename: str
    content_type: str | None


@dataclass(frozen=True)
class _FileData:
    data: bytes


_Event = _FileStarted | _FileData


class _FormError(Exception):
    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.api_error = ApiError(status_code, code, message)


class MultipartReader:
    """Incremental multipart/form-data parser: keeps small text fields, streams one file.

    `feed` returns what happened to the file part in that chunk; text fields collect in
    `fields`. Parts that are neither the expected file nor a text field are skipped.
    """

    def __init__(
        self, boundary: bytes, *, file_field: str, max_field_bytes: int, max_parts: int = 16
    ) -> None:
        self.fields: dict[str, str] = {}
        self.ended = False
        self._file_field = file_field
        self._max_field_bytes = max_field_bytes
        self._max_parts = max_parts
        self._parts = 0
        self._file_seen = False
        self._events: list[_Event] = []
        self._file_buffer: list[bytes] = []
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._kind: str = "skip"
        self._field_name = ""
        self._field_value = bytearray()
        try:
            self._parser = MultipartParser(
                boundary,
                callbacks={
                    "on_part_begin": self._on_part_begin,
                    "on_header_field": self._on_header_field,
                    "on_header_value": self._on_header_value,
                    "on_header_end": self._on_header_end,
                    "on_headers_finished": self._on_headers_finished,
                    "on_part_data": self._on_part_data,
                    "on_part_end": self._on_part_end,
                    "on_end": self._on_end,
                },
            )
        except (ValueError, MultipartParseError) as exc:
            raise ApiError(400, "invalid_request", f"bad multipart boundary: {exc}") from None

    def feed(self, data: bytes) -> list[_Event]:
        """Parse the next chunk of the body."""
        try:
            self._parser.write(data)
        except _FormError as exc:
            raise exc.api_error from None
        except (MultipartParseError, ValueError) as exc:
            raise ApiError(400, "invalid_request", f"malformed multipart body: {exc}") from None
        self._flush_file_data()
        events, self._events = self._events, []
        return events

    def close(self) -> None:
        """Check that the body ended with the closing boundary."""
        self._parser.finalize()
        if not self.ended:
            raise ApiError(400, "invalid_request", "the multipart body ended early")

    def _flush_file_data(self) -> None:
        if self._file_buffer:
            self._events.append(_FileData(b"".join(self._file_buffer)))
            self._file_buffer = []

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > self._max_parts:
            raise _FormError(400, "invalid_request", "too many parts in the multipart body")
        self._headers = {}
        self._kind = "skip"

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]
        if len(self._header_name) > 200:
            raise _FormError(400, "invalid_request", "multipart header name too long")

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        if len(self._header_value) > 4096:
            raise _FormError(400, "invalid_request", "multipart header too long")

    def _on_header_end(self) -> None:
        self._headers[self._header_name.decode("latin-1").strip().lower()] = bytes(
            self._header_value
        ).strip()
        self._header_name = bytearray()
        self._header_value = bytearray()

    def _on_headers_finished(self) -> None:
        disposition, params = parse_options_header(self._headers.get("content-disposition"))
        if disposition != b"form-data" or b"name" not in params:
            return  # not a form field: skip its data
        name = params[b"name"].decode("utf-8", errors="replace")
        if name == self._file_field:
            # The file part, with or without a filename (not every client sends one).
            if self._file_seen:
                raise _FormError(400, "invalid_request", f"send only one `{name}` part")
            self._file_seen = True
            self._kind = "file"
            raw_type = self._headers.get("content-type", b"").decode("latin-1")
            content_type = raw_type.split(";", 1)[0].strip().lower() or None
            self._events.append(
                _FileStarted(
                    filename=params.get(b"filename", b"").decode("utf-8", errors="replace"),
                    content_type=content_type,
                )
            )
        elif b"filename" in params:
            return  # some other file: not ours to store
        else:
            self._kind = "field"
            self._field_name = name
            self._field_value = bytearray()

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._kind == "file":
            self._file_buffer.append(data[start:end])
        elif self._kind == "field":
            self._field_value += data[start:end]
            if len(self._field_value) > self._max_field_bytes:
                raise _FormError(
                    413,
                    "payload_too_large",
                    f"form field `{self._field_name}` is longer than {self._max_field_bytes} bytes",
                )

    def _on_part_end(self) -> None:
        if self._kind == "field":
            try:
                value = self._field_value.decode("utf-8")
            except UnicodeDecodeError:
                raise _FormError(
                    400, "invalid_request", f"form field `{self._field_name}` is not UTF-8"
                ) from None
            self.fields.setdefault(self._field_name, value)
        self._kind = "skip"

    def _on_end(self) -> None:
        self.ended = True


@dataclass
class StoredFile:
    """The file part of a form; `key` is None when it was empty (then nothing is stored)."""

    filename: str
    content_type: str | None
    key: str | None = None
    size: int = 0


@dataclass
class ReceivedForm:
    """Text fields and the stored file of a multipart upload."""

    fields: dict[str, str] = field(default_factory=dict)
    file: StoredFile | None = None


MULTIPART_OVERHEAD_BYTES = 64 * 1024
"""Room for boundaries, part headers and text fields on top of the file size limit, so a
file of exactly the limit is accepted while a body clearly above it is refused at once."""


def multipart_boundary(request: Request) -> bytes:
    """The boundary of a multipart/form-data request, or 415/400."""
    media_type, params = parse_options_header(request.headers.get("content-type"))
    if media_type != b"multipart/form-data":
        raise ApiError(415, "unsupported_media_type", "send the video as multipart/form-data")
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "invalid_request", "the multipart Content-Type has no boundary")
    return boundary


async def receive_form_upload(
    request: Request,
    storage: Storage,
    *,
    file_field: str,
    key_for: Callable[[StoredFile], str],
    max_file_bytes: int,
    max_field_bytes: int = 4096,
    check_file: Callable[[StoredFile], None] | None = None,
) -> ReceivedForm:
    """Parse a multipart body as it streams, storing its file part under `key_for(file)`.

    The file is written only when the whole body was well-formed and within limits;
    otherwise the storage write is aborted and nothing is kept. `check_file` sees the file
    part's name and type as soon as its headers arrive, before any byte is stored, and may
    refuse it by raising `ApiError`.

    Raises:
        ApiError: 413 when the Content-Length or the streamed file passes `max_file_bytes`
            (checked per received chunk, before the rest is read); 400/415 for bodies that
            are not well-formed multipart.
    """
    max_body_bytes = max_file_bytes + MULTIPART_OVERHEAD_BYTES
    declared = _declared_length(request)
    if declared is not None and declared > max_body_bytes:
        raise payload_too_large(max_file_bytes)
    reader = MultipartReader(
        multipart_boundary(request), file_field=file_field, max_field_bytes=max_field_bytes
    )
    form = ReceivedForm()
    sink: StorageSink | None = None
    body_bytes = 0
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            body_bytes += len(chunk)
            if body_bytes > max_body_bytes:
                raise payload_too_large(max_file_bytes)
            for event in reader.feed(chunk):
                if isinstance(event, _FileStarted):
                    form.file = StoredFile(filename=event.filename, content_type=event.content_type)
                    if check_file is not None:
                        check_file(form.file)
                elif isinstance(event, _FileData):
                    assert form.file is not None
                    form.file.size += len(event.data)
                    if form.file.size > max_file_bytes:
                        raise payload_too_large(max_file_bytes)
                    if sink is None:
                        # Started on the first byte: an empty file never touches storage.
                        form.file.key = key_for(form.file)
                        sink = StorageSink(
                            storage,
                            form.file.key,
                            max_bytes=max_file_bytes,
                            content_type=form.file.content_type,
                        )
                    await sink.send(event.data)
        reader.close()
        form.fields = reader.fields
        if sink is not None:
            await sink.finish()
        return form
    except ClientDisconnect:
        if sink is not None:
            await sink.abort()
        raise _disconnected() from None
    except ObjectTooLarge:
        # Storage's own limit (the same one): it already discarded the object.
        raise payload_too_large(max_file_bytes) from None
    except BaseException:
        if sink is not None:
            await sink.abort()
        raise
