"""Performance snapshots of a video: add, list, change, remove, and take them from Discover.

A snapshot is what a platform showed for one video at one moment (seed 000's
`video_performance`). There is one per video, platform and `recorded_at`: a second snapshot at
the same moment is a `DUPLICATE_SNAPSHOT` (409), never a second row.

Rules beyond the types (`schemas.improve.PerformanceIn` already refuses negative counts,
completion rates outside 0–100 and unknown traffic sources):

* **Likes above views.** On TikTok every play is a view, replays and every surface included,
  and a like is given on a playing video, so likes > views means the numbers were mixed up:
  refused. On Instagram it happens for real: a reel is liked from the feed and the profile
  grid by people whose watch did not count as a view, views are counted organically only and
  lag likes by up to 48 h (Meta's insights documentation), so likes > views is accepted there.
  `LIKES_MAY_EXCEED_VIEWS` is the one place that says which platforms allow it.
* **Future times.** `recorded_at` may be at most `CLOCK_SKEW` ahead of our clock (a phone's
  clock running a little fast is not an error; a date next week is). A time without a zone is
  taken as UTC, which is what the platforms' exports write.
* **Another tenant's video** is a `VIDEO_NOT_FOUND`, exactly like a video that does not exist.

**Snapshots from the Discover pipeline.** `link_post` records that a video was published as a
scraped post (`video_post_links`) and copies the post's scrape snapshots. Later scrapes add
snapshots to the post; every read of the video's metrics (`list_snapshots`, and the
aggregates through `sync_linked_posts`) first copies the snapshots newer than the last one
copied. So the history is always current when read, it is stored once (charts, aggregates and
fingerprints read one table), and a copied snapshot the user deleted does not come back: only
snapshots newer than `synced_through` are copied. A scrape snapshot without a view count is
skipped; missing likes, comments, shares or saves (Instagram does not report shares and saves)
are stored as 0.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.core.errors import DomainError
from schemas.discover import Platform
from schemas.discover_tables import Post
from schemas.failures import FailureCode
from schemas.improve import PerformanceIn, PerformancePatch, PerformanceSnapshot, TrafficSource
from schemas.improve_tables import VideoPerformance, VideoPostLink
from schemas.tables import Video

CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future `recorded_at` may be before it is refused."""

LIKES_MAY_EXCEED_VIEWS: frozenset[Platform] = frozenset({Platform.INSTAGRAM})
"""Platforms whose likes can honestly exceed their views (see the module docstring)."""

SOURCE_MANUAL = "manual"
SOURCE_IMPORT = "import"
SOURCE_DISCOVER = "discover"

# --- the tenant's latest views, cached --------------------------------------------------------

TENANT_LATEST_TTL_S = 60.0
"""How long a tenant's latest views per video (its baselines and popularity) are reused.

Reading them probes the unique index once per video and platform: ~0.3 s for 10k videos,
twice the per-video summary's budget. A tenant's median moves slowly, so a minute-old value is
good enough for "x× your usual"; this process forgets it at once when it writes the tenant's
snapshots, other processes within the TTL. Fingerprints never use it."""

_tenant_latest: dict[uuid.UUID, tuple[float, object]] = {}


def cached_tenant_latest(tenant_id: uuid.UUID) -> object | None:
    """What `remember_tenant_latest` stored for the tenant, if still fresh."""
    entry = _tenant_latest.get(tenant_id)
    if entry is None or entry[0] < time.monotonic():
        return None
    return entry[1]


def remember_tenant_latest(tenant_id: uuid.UUID, value: object) -> None:
    if len(_tenant_latest) > 10_000:  # many tenants: start over rather than grow
        _tenant_latest.clear()
    _tenant_latest[tenant_id] = (time.monotonic() + TENANT_LATEST_TTL_S, value)


def forget_tenant_latest(tenant_id: uuid.UUID) -> None:
    """Called by every write of the tenant's snapshots."""
    _tenant_latest.pop(tenant_id, None)


def as_utc(moment: datetime) -> datetime:
    """An aware UTC time; a naive one is taken as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def snapshot_problem(snapshot: PerformanceIn, *, now: datetime) -> str | None:
    """Why `snapshot` cannot be true, or None when it can (the rules in the module docstring)."""
    if snapshot.likes > snapshot.views and snapshot.platform not in LIKES_MAY_EXCEED_VIEWS:
        return (
            f"likes ({snapshot.likes}) exceed views ({snapshot.views}), which cannot happen on "
            f"{snapshot.platform.value}: every like there comes from a counted view"
        )
    recorded = as_utc(snapshot.recorded_at)
    if recorded > as_utc(now) + CLOCK_SKEW:
        return (
            f"recorded_at {recorded.isoformat()} is in the future (now is "
            f"{as_utc(now).isoformat()})"
        )
    return None


def check_snapshot(snapshot: PerformanceIn, *, now: datetime) -> None:
    """Raise `INVALID_METRICS` when `snapshot_problem` finds one."""
    problem = snapshot_problem(snapshot, now=now)
    if problem is not None:
        raise DomainError(FailureCode.INVALID_METRICS, problem)


def to_snapshot(row: VideoPerformance) -> PerformanceSnapshot:
    return PerformanceSnapshot(
        id=row.id,
        video_id=row.video_id,
        created_at=row.created_at,
        platform=Platform(row.platform),
        views=row.views,
        likes=row.likes,
        comments=row.comments,
        shares=row.shares,
        saves=row.saves,
        watch_time_seconds=row.watch_time_seconds,
        completion_rate=row.completion_rate,
        traffic_source=TrafficSource(row.traffic_source) if row.traffic_source else None,
        recorded_at=row.recorded_at,
        post_id=row.post_id,
    )


async def require_video(session: AsyncSession, tenant_id: uuid.UUID, video_id: uuid.UUID) -> Video:
    """The tenant's video, or `VIDEO_NOT_FOUND` (also for another tenant's video)."""
    video = await session.scalar(
        select(Video).where(Video.id == video_id, Video.tenant_id == tenant_id)
    )
    if video is None:
        raise DomainError(FailureCode.VIDEO_NOT_FOUND, f"no video with id {video_id}")
    return video


async def require_post(session: AsyncSession, tenant_id: uuid.UUID, post_id: uuid.UUID) -> Post:
    post = await session.scalar(select(Post).where(Post.id == post_id, Post.tenant_id == tenant_id))
    if post is None:
        raise DomainError(FailureCode.POST_NOT_FOUND, f"no post with id {post_id}")
    return post


def _duplicate(video_id: uuid.UUID, platform: Platform | str, recorded_at: datetime) -> DomainError:
    return DomainError(
        FailureCode.DUPLICATE_SNAPSHOT,
        f"video {video_id} already has a {Platform(platform).value} snapshot recorded at "
        f"{as_utc(recorded_at).isoformat()}; change that one instead",
    )


async def add_snapshot(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    video_id: uuid.UUID,
    snapshot: PerformanceIn,
    now: datetime,
    source: str = SOURCE_MANUAL,
) -> PerformanceSnapshot:
    """Store one snapshot (the caller commits).

    Raises:
        DomainError: `VIDEO_NOT_FOUND`, `POST_NOT_FOUND`, `INVALID_METRICS`, or
            `DUPLICATE_SNAPSHOT` when the video has a snapshot on that platform at that time.
    """
    await require_video(session, tenant_id, video_id)
    check_snapshot(snapshot, now=now)
    if snapshot.post_id is not None:
        await require_post(session, tenant_id, snapshot.post_id)
    values = snapshot.model_dump()
    values["platform"] = snapshot.platform.value
    values["traffic_source"] = snapshot.traffic_source.value if snapshot.traffic_source else None
    values["recorded_at"] = as_utc(snapshot.recorded_at)
    statement = (
        insert(VideoPerformance)
        .values(id=uuid.uuid4(), tenant_id=tenant_id, video_id=video_id, source=source, **values)
        .on_conflict_do_nothing(index_elements=["video_id", "platform", "recorded_at"])
        .returning(VideoPerformance)
    )
    forget_tenant_latest(tenant_id)
    row = await session.scalar(statement, execution_options={"populate_existing": True})
    if row is None:
        raise _duplicate(video_id, snapshot.platform, snapshot.recorded_at)
    return to_snapshot(row)


async def list_snapshots(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    video_id: uuid.UUID,
    platform: Platform | None = None,
) -> list[PerformanceSnapshot]:
    """The video's snapshots, oldest first (platform order within one moment).

    Snapshots scrapes added to a linked post since the last read are copied first.

    Raises:
        DomainError: `VIDEO_NOT_FOUND`.
    """
    await require_video(session, tenant_id, video_id)
    await sync_linked_posts(session, tenant_id=tenant_id, video_ids=[video_id])
    query = select(VideoPerformance).where(
        VideoPerformance.video_id == video_id, VideoPerformance.tenant_id == tenant_id
    )
    if platform is not None:
        query = query.where(VideoPerformance.platform == platform.value)
    rows = await session.scalars(
        query.order_by(VideoPerformance.recorded_at, VideoPerformance.platform)
    )
    return [to_snapshot(row) for row in rows]


async def _owned_snapshot(
    session: AsyncSession, tenant_id: uuid.UUID, video_id: uuid.UUID, snapshot_id: uuid.UUID
) -> VideoPerformance:
    await require_video(session, tenant_id, video_id)
    row = await session.scalar(
        select(VideoPerformance).where(
            VideoPerformance.id == snapshot_id,
            VideoPerformance.video_id == video_id,
            VideoPerformance.tenant_id == tenant_id,
        )
    )
    if row is None:
        raise DomainError(
            FailureCode.SNAPSHOT_NOT_FOUND,
            f"video {video_id} has no performance snapshot with id {snapshot_id}",
        )
    return row


async def get_snapshot(
    session: AsyncSession, *, tenant_id: uuid.UUID, video_id: uuid.UUID, snapshot_id: uuid.UUID
) -> PerformanceSnapshot:
    return to_snapshot(await _owned_snapshot(session, tenant_id, video_id, snapshot_id))


async def update_snapshot(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    video_id: uuid.UUID,
    snapshot_id: uuid.UUID,
    patch: PerformancePatch,
    now: datetime,
) -> PerformanceSnapshot:
    """Change the fields `patch` sets; the result is checked like a new snapshot.

    Raises:
        DomainError: `VIDEO_NOT_FOUND`, `SNAPSHOT_NOT_FOUND`, `INVALID_METRICS`, or
            `DUPLICATE_SNAPSHOT` when the new `recorded_at` meets another snapshot.
    """
    row = await _owned_snapshot(session, tenant_id, video_id, snapshot_id)
    merged = to_snapshot(row).model_dump()
    merged.update(patch.model_dump(exclude_unset=True))
    try:
        candidate = PerformanceIn.model_validate(merged)
    except ValueError as exc:
        raise DomainError(FailureCode.INVALID_METRICS, str(exc)) from None
    check_snapshot(candidate, now=now)
    values = {
        "views": candidate.views,
        "likes": candidate.likes,
        "comments": candidate.comments,
        "shares": candidate.shares,
        "saves": candidate.saves,
        "watch_time_seconds": candidate.watch_time_seconds,
        "completion_rate": candidate.completion_rate,
        "traffic_source": candidate.traffic_source.value if candidate.traffic_source else None,
        "recorded_at": as_utc(candidate.recorded_at),
        "updated_at": func.now(),
    }
    forget_tenant_latest(tenant_id)
    # A statement in a savepoint, not dirty attributes: a clash with another snapshot's time
    # must fail only this change, not the caller's transaction.
    try:
        async with session.begin_nested():
            await session.execute(
                update(VideoPerformance).where(VideoPerformance.id == row.id).values(**values)
            )
    except IntegrityError:
        raise _duplicate(video_id, row.platform, candidate.recorded_at) from None
    await session.refresh(row)
    return to_snapshot(row)


async def delete_snapshot(
    session: AsyncSession, *, tenant_id: uuid.UUID, video_id: uuid.UUID, snapshot_id: uuid.UUID
) -> None:
    """Remove one snapshot (the caller commits).

    Raises:
        DomainError: `VIDEO_NOT_FOUND`, `SNAPSHOT_NOT_FOUND`.
    """
    row = await _owned_snapshot(session, tenant_id, video_id, snapshot_id)
    forget_tenant_latest(tenant_id)
    await session.delete(row)
    await session.flush()


# --- snapshots from the Discover pipeline -----------------------------------------------------

_SYNC_LINKED = text(
    """
    WITH links AS (
        SELECT l.video_id, l.post_id, l.synced_through
        FROM video_post_links l
        WHERE l.tenant_id = :tenant_id AND l.video_id = ANY(:video_ids)
    ), fresh AS (
        SELECT l.video_id, l.post_id, p.platform, s.recorded_at, s.views,
               coalesce(s.likes, 0) AS likes, coalesce(s.comments, 0) AS comments,
               coalesce(s.shares, 0) AS shares, coalesce(s.saves, 0) AS saves
        FROM links l
        JOIN posts p ON p.id = l.post_id
        JOIN post_snapshots s ON s.post_id = l.post_id
        WHERE s.views IS NOT NULL
          AND (l.synced_through IS NULL OR s.recorded_at > l.synced_through)
    ), inserted AS (
        INSERT INTO video_performance (
            id, tenant_id, video_id, platform, views, likes, comments, shares, saves,
            recorded_at, post_id, source
        )
        SELECT gen_random_uuid(), :tenant_id, video_id, platform, views, likes, comments,
               shares, saves, recorded_at, post_id, 'discover'
        FROM fresh
        ON CONFLICT (video_id, platform, recorded_at) DO NOTHING
        RETURNING 1
    ), advanced AS (  -- data-modifying CTEs run whether or not they are read
        UPDATE video_post_links l SET synced_through = m.latest
        FROM (SELECT video_id, post_id, max(recorded_at) AS latest FROM fresh
              GROUP BY video_id, post_id) m
        WHERE l.video_id = m.video_id AND l.post_id = m.post_id
    )
    SELECT count(*) FROM inserted
    """
).bindparams(bindparam("video_ids", type_=ARRAY(PG_UUID(as_uuid=True))))

_HAS_LINKS = text(
    "SELECT EXISTS (SELECT 1 FROM video_post_links WHERE tenant_id = :tenant_id "
    "AND video_id = ANY(:video_ids))"
).bindparams(bindparam("video_ids", type_=ARRAY(PG_UUID(as_uuid=True))))


async def sync_linked_posts(
    session: AsyncSession, *, tenant_id: uuid.UUID, video_ids: Sequence[uuid.UUID]
) -> int:
    """Copy scrape snapshots of the videos' linked posts newer than the last copied ones.

    Idempotent and safe under concurrent reads (the unique key absorbs a race). Returns how
    many snapshots were copied. The caller's transaction holds the copies; a read that is
    not committed simply copies them again next time.
    """
    params = {"tenant_id": tenant_id, "video_ids": list(video_ids)}
    if not video_ids or not await session.scalar(_HAS_LINKS, params):
        return 0
    copied = int(await session.scalar(_SYNC_LINKED, params) or 0)
    if copied:
        forget_tenant_latest(tenant_id)
    return copied


async def link_post(
    session: AsyncSession, *, tenant_id: uuid.UUID, video_id: uuid.UUID, post_id: uuid.UUID
) -> int:
    """Link a video to the discover post it was published as, and copy the post's snapshots.

    Linking again changes nothing. Returns the number of snapshots copied by this call.

    Raises:
        DomainError: `VIDEO_NOT_FOUND`, `POST_NOT_FOUND` (also for another tenant's post).
    """
    await require_video(session, tenant_id, video_id)
    await require_post(session, tenant_id, post_id)
    await session.execute(
        insert(VideoPostLink)
        .values(video_id=video_id, post_id=post_id, tenant_id=tenant_id)
        .on_conflict_do_nothing(index_elements=["video_id", "post_id"])
    )
    return await sync_linked_posts(session, tenant_id=tenant_id, video_ids=[video_id])
