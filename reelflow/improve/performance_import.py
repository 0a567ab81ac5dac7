"""Bulk import of performance snapshots from CSV, JSON or JSONL, streamed.

Columns (CSV header, or JSON keys): `video_id, platform, views, likes, comments, shares,
saves, watch_time_seconds, completion_rate, traffic_source, recorded_at, post_id`. Only
`video_id`, `platform`, `views` and `recorded_at` are required; a missing optional column or
an empty cell means 0 for counts and nothing for the rest. Columns the importer does not know
are listed in the report and not read.

What the importer promises:

* **Streamed.** The file is read in chunks by a worker thread, 5 000 rows at a time; rows
  are checked one by one and sent to PostgreSQL with `COPY` into a temporary table, so a
  200k-row file costs the memory of one batch. Only the first `MAX_LISTED_REJECTIONS`
  rejected lines are kept for the report (all are counted).
* **A report per line.** Each rejected line has its number (the CSV line the row starts on,
  header = 1; the JSONL line; the JSON record) and a reason: a value that does not parse or
  breaks a rule of `reelflow.improve.performance`, a video or post that is not the tenant's,
  a row repeating an earlier line's video, platform and time, or a row disagreeing with a
  snapshot already stored at that time (change that one instead).
* **Idempotent.** Rows are inserted with `ON CONFLICT DO NOTHING` on the unique key; a row
  identical to a stored snapshot counts as `unchanged`. Importing a file twice changes
  nothing the second time.
* **All or nothing for the file.** The accepted rows are written in the caller's
  transaction. A file that is not CSV/JSON at all (binary data, no known header column, a
  missing required column, JSON that breaks off) raises `INVALID_DATASET` and the caller's
  rollback leaves nothing behind; a single unreadable CSV row or JSONL line is only that
  line's rejection.
* **CSV dialects.** A UTF-8 byte-order mark is skipped; the separator is sniffed from the
  header (`,`, `;`, tab or `|`: whichever splits it into the most known column names);
  quoted fields may hold separators and newlines.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, Literal

import anyio.to_thread
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.core.errors import DomainError
from reelflow.discover.datasets import _json_records, _jsonl_records, _Rewound
from reelflow.improve.performance import (
    SOURCE_IMPORT,
    as_utc,
    forget_tenant_latest,
    snapshot_problem,
)
from schemas.discover import Platform, RejectedRow
from schemas.failures import FailureCode
from schemas.improve import ImportRejection, ImportReport, PerformanceIn, TrafficSource

ImportFormat = Literal["csv", "json", "jsonl"]

COLUMNS = (
    "video_id",
    "platform",
    "views",
    "likes",
    "comments",
    "shares",
    "saves",
    "watch_time_seconds",
    "completion_rate",
    "traffic_source",
    "recorded_at",
    "post_id",
)
REQUIRED_COLUMNS = ("video_id", "platform", "views", "recorded_at")
BATCH_ROWS = 5_000
MAX_LISTED_REJECTIONS = 1_000
HEAD_BYTES = 64 * 1024
MAX_REASON_CHARS = 300
_SEPARATORS = (",", ";", "\t", "|")
_EXTENSIONS: dict[str, ImportFormat] = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}

Row = tuple[Any, ...]
"""A checked row in `COPY` column order: line, then `COLUMNS`."""


@dataclass
class _Parsed:
    """What reading the file produced so far: rows for the database and rejected lines."""

    lines: int = 0
    rejected: int = 0
    rejections: list[ImportRejection] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    def reject(self, line: int, reason: str) -> None:
        self.rejected += 1
        if len(self.rejections) < MAX_LISTED_REJECTIONS:
            clipped = reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS] + "…"
            self.rejections.append(ImportRejection(line=line, reason=clipped))


def detect_format(filename: str | None, head: bytes) -> ImportFormat:
    """The file's format, by extension, else by its first bytes.

    Raises:
        DomainError: `INVALID_DATASET` for an empty or binary file.
    """
    if b"\x00" in head:
        raise DomainError(
            FailureCode.INVALID_DATASET,
            "The file is binary data, not CSV or JSON; nothing was imported.",
        )
    body = head.removeprefix(codecs.BOM_UTF8).decode("utf-8", errors="replace").lstrip()
    if not body:
        raise DomainError(FailureCode.INVALID_DATASET, "The file is empty; nothing was imported.")
    if filename:
        lowered = filename.lower()
        for extension, fmt in _EXTENSIONS.items():
            if lowered.endswith(extension):
                return fmt
    if body.startswith("["):
        return "json"
    if body.startswith("{"):
        try:
            json.loads(body.split("\n", 1)[0])
        except ValueError:
            return "json"
        return "jsonl"
    return "csv"


def _cell(value: Any) -> Any:
    """An empty CSV cell or JSON null is an absent value."""
    if value is None:
        return None
    if isinstance(value, str):
        stripped = value.strip()
        return stripped or None
    return value


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:4]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def check_record(record: Mapping[str, Any], *, line: int, now: datetime) -> Row | str:
    """One row as COPY values, or the reason it is rejected."""
    values = {name: _cell(record.get(name)) for name in COLUMNS}
    missing = [name for name in REQUIRED_COLUMNS if values[name] is None]
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        video_id = uuid.UUID(str(values.pop("video_id")))
    except ValueError:
        return f"video_id {str(record.get('video_id'))[:60]!r} is not a UUID"
    fields = {name: value for name, value in values.items() if value is not None}
    try:
        snapshot = _fast_snapshot(fields)
    except (ValueError, TypeError, KeyError):
        snapshot = None
    if snapshot is not None:
        problem = snapshot_problem(snapshot, now=now)
        return problem if problem is not None else _row(line, video_id, snapshot)
    try:
        snapshot = PerformanceIn.model_validate(fields)
    except ValidationError as exc:
        return _describe(exc)
    problem = snapshot_problem(snapshot, now=now)
    return problem if problem is not None else _row(line, video_id, snapshot)


_PLATFORMS = {platform.value: platform for platform in Platform}
_SOURCES = {source.value: source for source in TrafficSource}
_COUNT_FIELDS = ("views", "likes", "comments", "shares", "saves")


def _fast_snapshot(fields: Mapping[str, Any]) -> PerformanceIn | None:
    """The common, well-formed row without pydantic's validation (a third of the import's
    time at 200k rows); None sends anything unusual to the validating path, which also
    words the rejection."""
    counts: dict[str, int] = {}
    for name in _COUNT_FIELDS:
        raw = fields.get(name, 0)
        if isinstance(raw, str):
            if not raw.isdigit():
                return None
            raw = int(raw)
        if type(raw) is not int or raw < 0:
            return None
        counts[name] = raw
    watch = fields.get("watch_time_seconds")
    completion = fields.get("completion_rate")
    watch_s = None if watch is None else float(watch)
    rate = None if completion is None else float(completion)
    if (watch_s is not None and not watch_s >= 0) or (rate is not None and not 0 <= rate <= 100):
        return None
    raw_source = fields.get("traffic_source")
    source = None if raw_source is None else _SOURCES.get(str(raw_source))
    platform = _PLATFORMS.get(str(fields["platform"]))
    recorded = fields["recorded_at"]
    if platform is None or (raw_source is not None and source is None):
        return None
    if isinstance(recorded, str):
        recorded = datetime.fromisoformat(recorded)
    if not isinstance(recorded, datetime):
        return None
    post = fields.get("post_id")
    return PerformanceIn.model_construct(
        platform=platform,
        watch_time_seconds=watch_s,
        completion_rate=rate,
        traffic_source=source,
        recorded_at=recorded,
        post_id=None if post is None else uuid.UUID(str(post)),
        views=counts["views"],
        likes=counts["likes"],
        comments=counts["comments"],
        shares=counts["shares"],
        saves=counts["saves"],
    )


def _row(line: int, video_id: uuid.UUID, snapshot: PerformanceIn) -> Row:
    return (
        line,
        video_id,
        snapshot.platform.value,
        snapshot.views,
        snapshot.likes,
        snapshot.comments,
        snapshot.shares,
        snapshot.saves,
        snapshot.watch_time_seconds,
        snapshot.completion_rate,
        snapshot.traffic_source.value if snapshot.traffic_source else None,
        as_utc(snapshot.recorded_at),
        snapshot.post_id,
    )


# --- reading ------------------------------------------------------------------------------------


def _header_separator(header_line: str) -> str:
    known = set(COLUMNS)

    def score(separator: str) -> int:
        return sum(1 for name in header_line.split(separator) if name.strip().strip('"') in known)

    best = max(_SEPARATORS, key=score)
    if score(best) == 0:
        raise DomainError(
            FailureCode.INVALID_DATASET,
            "The CSV header names none of the columns "
            f"({', '.join(COLUMNS)}); nothing was imported.",
        )
    return best


def _csv_records(stream: BinaryIO, parsed: _Parsed) -> Iterator[tuple[int, Mapping[str, Any]]]:
    wrapper = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
    try:
        first = wrapper.readline()
        skipped = 0
        while first and not first.strip():
            skipped += 1
            first = wrapper.readline()
        separator = _header_separator(first)
        header = [name.strip() for name in next(csv.reader([first], delimiter=separator))]
        missing = [name for name in REQUIRED_COLUMNS if name not in header]
        if missing:
            raise DomainError(
                FailureCode.INVALID_DATASET,
                f"The CSV header lacks the required column(s) {', '.join(missing)}; "
                "nothing was imported.",
            )
        parsed.ignored_columns = [name for name in header if name and name not in COLUMNS]
        header_lines = skipped + 1
        reader = csv.reader(wrapper, delimiter=separator)
        last_line = header_lines
        while True:
            start = last_line + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                last_line = header_lines + reader.line_num
                parsed.lines += 1
                parsed.reject(start, f"the CSV row cannot be read: {exc}")
                continue
            last_line = header_lines + reader.line_num
            if not cells or all(not cell.strip() for cell in cells):
                continue
            parsed.lines += 1
            if len(cells) > len(header):
                parsed.reject(
                    start,
                    f"the row has {len(cells)} fields but the header has {len(header)} "
                    "(an unquoted separator inside a value?)",
                )
                continue
            yield start, dict(zip(header, cells, strict=False))
    finally:
        wrapper.detach()


def _json_like_records(
    stream: BinaryIO, fmt: ImportFormat, parsed: _Parsed
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    records = _json_records(stream) if fmt == "json" else _jsonl_records(stream)
    seen_keys: set[str] = set()
    try:
        for line, record in records:
            parsed.lines += 1
            if isinstance(record, RejectedRow):
                parsed.reject(record.line, record.reason)
                continue
            if not isinstance(record, Mapping):
                parsed.reject(line, "the record is not an object")
                continue
            seen_keys.update(str(key) for key in record)
            yield line, record
    except DomainError as exc:
        raise DomainError(
            FailureCode.INVALID_DATASET,
            exc.message.replace("dataset", "file").replace(
                "No posts were imported.", "Nothing was imported."
            ),
        ) from None
    parsed.ignored_columns = sorted(seen_keys - set(COLUMNS))


def iter_rows(
    stream: BinaryIO, fmt: ImportFormat, parsed: _Parsed, *, now: datetime
) -> Iterator[Row]:
    """Checked rows of the file in order; rejected lines go to `parsed`."""
    records = (
        _csv_records(stream, parsed) if fmt == "csv" else _json_like_records(stream, fmt, parsed)
    )
    for line, record in records:
        checked = check_record(record, line=line, now=now)
        if isinstance(checked, str):
            parsed.reject(line, checked)
        else:
            yield checked


# --- writing ------------------------------------------------------------------------------------

_STAGE_COLUMNS = ", ".join(("line", *COLUMNS))

_REJECT_UNKNOWN_VIDEOS = """
    UPDATE {t} s SET reason = 'no video with id ' || s.video_id || ' (for this tenant)'
    WHERE NOT EXISTS (SELECT 1 FROM videos v WHERE v.id = s.video_id AND v.tenant_id = :tenant)
"""
_REJECT_UNKNOWN_POSTS = """
    UPDATE {t} s SET reason = 'no post with id ' || s.post_id || ' (for this tenant)'
    WHERE s.reason IS NULL AND s.post_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM posts p WHERE p.id = s.post_id AND p.tenant_id = :tenant)
"""
_REJECT_REPEATS = """
    UPDATE {t} s SET reason = 'repeats the video, platform and recorded_at of line ' || d.first
    FROM (
        SELECT line, min(line) OVER (PARTITION BY video_id, platform, recorded_at) AS first
        FROM {t} WHERE reason IS NULL
    ) d
    WHERE s.line = d.line AND d.first <> d.line
"""
_REJECT_CONFLICTS = """
    UPDATE {t} s SET reason = 'a different snapshot is already stored for this video, '
        || 'platform and recorded_at; change that one instead'
    FROM video_performance vp
    WHERE s.reason IS NULL AND vp.video_id = s.video_id AND vp.platform = s.platform
      AND vp.recorded_at = s.recorded_at
      AND (vp.views, vp.likes, vp.comments, vp.shares, vp.saves, vp.watch_time_seconds,
           vp.completion_rate, vp.traffic_source, vp.post_id)
          IS DISTINCT FROM
          (s.views, s.likes, s.comments, s.shares, s.saves, s.watch_time_seconds,
           s.completion_rate, s.traffic_source, s.post_id)
"""
_MARK_UNCHANGED = """
    UPDATE {t} s SET unchanged = true
    FROM video_performance vp
    WHERE s.reason IS NULL AND vp.video_id = s.video_id AND vp.platform = s.platform
      AND vp.recorded_at = s.recorded_at
"""
_INSERT_ACCEPTED = """
    INSERT INTO video_performance (
        id, tenant_id, source, video_id, platform, views, likes, comments, shares, saves,
        watch_time_seconds, completion_rate, traffic_source, recorded_at, post_id
    )
    SELECT gen_random_uuid(), :tenant, :source, video_id, platform, views, likes, comments,
           shares, saves, watch_time_seconds, completion_rate, traffic_source, recorded_at,
           post_id
    FROM {t} WHERE reason IS NULL AND NOT unchanged
    ON CONFLICT (video_id, platform, recorded_at) DO NOTHING
"""


async def import_snapshots(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    stream: BinaryIO,
    filename: str | None,
    now: datetime,
) -> ImportReport:
    """Import every good line of `stream` in the caller's transaction; report every line.

    The caller commits (or rolls back to discard the import).

    Raises:
        DomainError: `INVALID_DATASET` when the file as a whole is not a usable CSV or JSON
            file; the caller must roll back (some rows may be staged).
    """
    head = stream.read(HEAD_BYTES)
    fmt = detect_format(filename, head)
    stream = io.BufferedReader(_Rewound(head, stream), buffer_size=HEAD_BYTES)
    parsed = _Parsed()
    rows = iter_rows(stream, fmt, parsed, now=now)

    def next_batch() -> list[Row]:
        batch: list[Row] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= BATCH_ROWS:
                break
        return batch

    stage = f"performance_import_{uuid.uuid4().hex[:12]}"
    await session.execute(
        text(
            f"CREATE UNLOGGED TABLE {stage} ("
            "line int, video_id uuid, platform text, views bigint, likes bigint, "
            "comments bigint, shares bigint, saves bigint, watch_time_seconds float8, "
            "completion_rate float8, traffic_source text, recorded_at timestamptz, "
            "post_id uuid, reason text, unchanged bool NOT NULL DEFAULT false)"
        )
    )
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    pg: Any = raw.driver_connection  # psycopg.AsyncConnection, in the session's transaction
    staged = 0
    async with pg.cursor() as cursor:
        while batch := await anyio.to_thread.run_sync(next_batch):
            async with cursor.copy(f"COPY {stage} ({_STAGE_COLUMNS}) FROM STDIN") as copy:
                for row in batch:
                    await copy.write_row(row)
            staged += len(batch)
    inserted = 0
    db_rejections: list[ImportRejection] = []
    db_rejected = 0
    if staged:
        params = {"tenant": tenant_id, "source": SOURCE_IMPORT}
        await session.execute(text(f"ANALYZE {stage}"))
        for statement in (
            _REJECT_UNKNOWN_VIDEOS,
            _REJECT_UNKNOWN_POSTS,
            _REJECT_REPEATS,
            _REJECT_CONFLICTS,
            _MARK_UNCHANGED,
        ):
            await session.execute(text(statement.format(t=stage)), params)
        result = await session.execute(text(_INSERT_ACCEPTED.format(t=stage)), params)
        inserted = max(int(getattr(result, "rowcount", 0) or 0), 0)
        forget_tenant_latest(tenant_id)
        db_rejected = int(
            await session.scalar(text(f"SELECT count(*) FROM {stage} WHERE reason IS NOT NULL"))
            or 0
        )
        listed = await session.execute(
            text(
                f"SELECT line, reason FROM {stage} WHERE reason IS NOT NULL "
                f"ORDER BY line LIMIT {MAX_LISTED_REJECTIONS}"
            )
        )
        db_rejections = [ImportRejection(line=row.line, reason=row.reason) for row in listed]
    await session.execute(text(f"DROP TABLE {stage}"))
    rejections = sorted([*parsed.rejections, *db_rejections], key=lambda r: r.line)
    rejected = parsed.rejected + db_rejected
    accepted = staged - db_rejected
    return ImportReport(
        format=fmt,
        lines=parsed.lines,
        accepted=accepted,
        inserted=inserted,
        unchanged=accepted - inserted,
        rejected=rejected,
        rejections=rejections[:MAX_LISTED_REJECTIONS],
        rejections_truncated=rejected > MAX_LISTED_REJECTIONS,
        ignored_columns=parsed.ignored_columns,
    )
