"""Scraped posts into the catalog: accounts, posts upserted by platform id, one snapshot each.

`upsert_posts` writes one batch inside the caller's transaction; `import_posts` streams a
whole dataset through it in one transaction of its own, so a failure midway (a broken file,
a lost connection, a cancel) leaves no post of that scrape behind.

A post found again keeps what a newer scrape does not report: every count and text is
`COALESCE(new, known)`, so a row whose `views` was unreadable does not erase the views
already known. Each scrape also leaves one `post_snapshots` row per post, so growth over
time is known; the posts first seen by a scrape are the ones whose `first_scrape_id` is
that scrape, which is why `ImportReport` carries no list of new ids (it would grow with the
file; the query does not).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.discover import RejectedRow, ScrapedPost


@dataclass
class UpsertResult:
    """What one batch did: distinct posts in it, how many were new, how many known."""

    seen: int
    new: int
    updated: int
    new_post_ids: list[uuid.UUID]


@dataclass
class ImportReport:
    """What importing a dataset did.

    `rejected` holds the first `max_reported_rejections` rows that were not used (their
    total is `rejected_count`); the new posts are `posts.first_scrape_id = scrape_id`.
    """

    seen: int = 0
    new: int = 0
    updated: int = 0
    rejected_count: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)


def _key(post: ScrapedPost) -> tuple[str, str]:
    return (post.platform.value, post.post_id)


def _views_rank(post: ScrapedPost) -> int:
    return -1 if post.views is None else post.views


def _best_per_post(posts: Sequence[ScrapedPost]) -> list[ScrapedPost]:
    """One post per platform id: the most views, the first on a tie; in key order, so
    concurrent batches lock rows in the same order and cannot deadlock."""
    best: dict[tuple[str, str], ScrapedPost] = {}
    for post in posts:
        kept = best.get(_key(post))
        if kept is None or _views_rank(post) > _views_rank(kept):
            best[_key(post)] = post
    return [best[key] for key in sorted(best)]


# One statement per table per batch, its rows passed as one parameter (arrays expanded by
# `unnest`, or a JSON document by `json_to_recordset`, which psycopg sends without escaping
# each element in Python): the SQL text is the same whatever the batch size, so psycopg and
# PostgreSQL parse it once, and no batch nears the 65535-parameter limit of a multi-row VALUES.
# New rows get their ids from `gen_random_uuid()`.
#
# An account met again is written only when this batch changes it: every batch of a scrape
# names the same accounts with the same followers and time, and rewriting them each time
# would cost a row version per account per batch. The ones left alone are read instead (the
# statement's snapshot has them; one that a concurrent import created is read afterwards).
_UPSERT_ACCOUNTS = text(
    """
    WITH input AS (
        SELECT * FROM unnest(
            CAST(:platforms AS text[]), CAST(:handles AS text[]), CAST(:followers AS bigint[])
        ) AS r(platform, handle, followers)
    ), written AS (
        INSERT INTO watched_accounts AS a (
            id, tenant_id, platform, handle, followers, last_scraped_at
        )
        SELECT gen_random_uuid(), :tenant_id, i.platform, i.handle, i.followers, :recorded_at
        FROM input i
        ON CONFLICT (tenant_id, platform, handle) DO UPDATE SET
            followers = COALESCE(excluded.followers, a.followers),
            last_scraped_at = GREATEST(excluded.last_scraped_at, a.last_scraped_at)
        WHERE (excluded.followers IS NOT NULL AND a.followers IS DISTINCT FROM excluded.followers)
            OR a.last_scraped_at IS NULL OR a.last_scraped_at < excluded.last_scraped_at
        RETURNING a.id, a.platform, a.handle
    )
    SELECT id, platform, handle FROM written
    UNION ALL
    SELECT a.id, a.platform, a.handle
    FROM watched_accounts a JOIN input i ON a.platform = i.platform AND a.handle = i.handle
    WHERE a.tenant_id = :tenant_id
    """
)

_SELECT_ACCOUNTS = text(
    """
    SELECT a.id, a.platform, a.handle
    FROM watched_accounts a
    JOIN unnest(CAST(:platforms AS text[]), CAST(:handles AS text[])) AS i(platform, handle)
        ON a.platform = i.platform AND a.handle = i.handle
    WHERE a.tenant_id = :tenant_id
    """
)

_UPSERT_POSTS = text(
    """
    INSERT INTO posts AS p (
        id, tenant_id, account_id, platform, platform_post_id, url, video_url, caption,
        posted_at, duration_s, is_video, views, likes, comments, shares, saves, first_scrape_id
    )
    SELECT gen_random_uuid(), :tenant_id, r.account_id, r.platform, r.platform_post_id, r.url,
        r.video_url, r.caption, r.posted_at, r.duration_s, r.is_video, r.views, r.likes,
        r.comments, r.shares, r.saves, :scrape_id
    FROM json_to_recordset(CAST(:rows AS json)) AS r(
        account_id uuid, platform text, platform_post_id text, url text,
        video_url text, caption text, posted_at timestamptz, duration_s float8,
        is_video boolean, views bigint, likes bigint, comments bigint, shares bigint,
        saves bigint
    )
    ON CONFLICT (tenant_id, platform, platform_post_id) DO UPDATE SET
        account_id = excluded.account_id,
        url = COALESCE(excluded.url, p.url),
        video_url = COALESCE(excluded.video_url, p.video_url),
        caption = COALESCE(excluded.caption, p.caption),
        posted_at = COALESCE(excluded.posted_at, p.posted_at),
        duration_s = COALESCE(excluded.duration_s, p.duration_s),
        is_video = excluded.is_video,
        views = COALESCE(excluded.views, p.views),
        likes = COALESCE(excluded.likes, p.likes),
        comments = COALESCE(excluded.comments, p.comments),
        shares = COALESCE(excluded.shares, p.shares),
        saves = COALESCE(excluded.saves, p.saves),
        updated_at = now()
    RETURNING p.id, p.platform, p.platform_post_id, (p.xmax = 0) AS inserted
    """
)

_UPSERT_SNAPSHOTS = text(
    """
    INSERT INTO post_snapshots AS s (
        post_id, scrape_id, recorded_at, views, likes, comments, shares, saves, followers
    )
    SELECT r.post_id, :scrape_id, :recorded_at, r.views, r.likes, r.comments, r.shares,
        r.saves, r.followers
    FROM json_to_recordset(CAST(:rows AS json)) AS r(
        post_id uuid, views bigint, likes bigint, comments bigint, shares bigint,
        saves bigint, followers bigint
    )
    ON CONFLICT (post_id, scrape_id) DO UPDATE SET
        recorded_at = excluded.recorded_at,
        views = COALESCE(excluded.views, s.views),
        likes = COALESCE(excluded.likes, s.likes),
        comments = COALESCE(excluded.comments, s.comments),
        shares = COALESCE(excluded.shares, s.shares),
        saves = COALESCE(excluded.saves, s.saves),
        followers = COALESCE(excluded.followers, s.followers)
    """
)


def _storable(value: str | None) -> str | None:
    """Text PostgreSQL accepts: no NUL character, no lone UTF-16 surrogate (a JSON file can
    carry both as escapes; either would fail the whole batch)."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _posts_json(posts: Sequence[ScrapedPost], account_ids: dict[tuple[str, str], uuid.UUID]) -> str:
    return json.dumps(
        [
            {
                "account_id": str(account_ids[(post.platform.value, post.account)]),
                "platform": post.platform.value,
                "platform_post_id": _storable(post.post_id),
                "url": _storable(post.url),
                "video_url": _storable(post.video_url),
                "caption": _storable(post.caption),
                "posted_at": post.posted_at.isoformat() if post.posted_at else None,
                "duration_s": post.duration_s,
                "is_video": post.is_video,
                "views": post.views,
                "likes": post.likes,
                "comments": post.comments,
                "shares": post.shares,
                "saves": post.saves,
            }
            for post in posts
        ]
    )


async def upsert_posts(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    scrape_id: uuid.UUID,
    posts: Sequence[ScrapedPost],
    recorded_at: datetime,
) -> UpsertResult:
    """Upsert a batch of posts, their accounts and this scrape's snapshot of each.

    Accounts are created as needed (their followers and `last_scraped_at` updated), posts
    inserted or updated by (tenant, platform, post id), new ones marked with
    `first_scrape_id`, and one snapshot per post written for `scrape_id` (a second write for
    the same scrape replaces the first's counts where it has them). The caller owns the
    transaction. A post id given twice counts once (the one with the most views is written).
    """
    unique = _best_per_post(posts)
    if not unique:
        return UpsertResult(seen=0, new=0, updated=0, new_post_ids=[])
    account_ids = await _upsert_accounts(
        session, tenant_id=tenant_id, posts=unique, recorded_at=recorded_at
    )
    returned = await session.execute(
        _UPSERT_POSTS,
        {
            "tenant_id": tenant_id,
            "scrape_id": scrape_id,
            "rows": _posts_json(unique, account_ids),
        },
    )
    post_ids: dict[tuple[str, str | None], uuid.UUID] = {}
    new_ids: list[uuid.UUID] = []
    for post_id, platform, platform_post_id, inserted in returned.all():
        post_ids[(platform, platform_post_id)] = post_id
        if inserted:
            new_ids.append(post_id)
    snapshots = [
        {
            "post_id": str(post_ids[(post.platform.value, _storable(post.post_id))]),
            "views": post.views,
            "likes": post.likes,
            "comments": post.comments,
            "shares": post.shares,
            "saves": post.saves,
            "followers": post.followers,
        }
        for post in unique
    ]
    await session.execute(
        _UPSERT_SNAPSHOTS,
        {"scrape_id": scrape_id, "recorded_at": recorded_at, "rows": json.dumps(snapshots)},
    )
    return UpsertResult(
        seen=len(unique),
        new=len(new_ids),
        updated=len(unique) - len(new_ids),
        new_post_ids=new_ids,
    )


async def _upsert_accounts(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    posts: Sequence[ScrapedPost],
    recorded_at: datetime,
) -> dict[tuple[str, str], uuid.UUID]:
    followers: dict[tuple[str, str], int | None] = {}
    for post in posts:
        key = (post.platform.value, post.account)
        if post.followers is not None or key not in followers:
            followers[key] = post.followers
    ordered = sorted(followers.items())
    returned = await session.execute(
        _UPSERT_ACCOUNTS,
        {
            "tenant_id": tenant_id,
            "recorded_at": recorded_at,
            "platforms": [platform for (platform, _), _ in ordered],
            "handles": [handle for (_, handle), _ in ordered],
            "followers": [count for _, count in ordered],
        },
    )
    # The statement's snapshot shows an account both as written and as it was before.
    found = {(platform, handle): account_id for account_id, platform, handle in returned.all()}
    missing = [key for key, _ in ordered if key not in found]
    if missing:
        again = await session.execute(
            _SELECT_ACCOUNTS,
            {
                "tenant_id": tenant_id,
                "platforms": [platform for platform, _ in missing],
                "handles": [handle for _, handle in missing],
            },
        )
        found.update(
            ((platform, handle), account_id) for account_id, platform, handle in again.all()
        )
    return found


async def import_posts(
    session_factory: async_sessionmaker[AsyncSession],
    *,
    tenant_id: uuid.UUID,
    scrape_id: uuid.UUID,
    rows: Iterable[ScrapedPost | RejectedRow],
    recorded_at: datetime,
    batch_size: int = 1000,
    max_reported_rejections: int = 100,
) -> ImportReport:
    """Import a dataset's rows (`reelflow.discover.datasets.iter_dataset`) in one transaction.

    Posts are written in batches of `batch_size`; rejected rows are counted and the first
    `max_reported_rejections` kept with their reasons. Anything raised while reading or
    writing (a broken file included) rolls the whole import back and propagates.

    A post that comes again later in the rows (a repeat with more views supersedes the one
    yielded before it) is written again but counted once.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    report = ImportReport()
    counted: set[tuple[str, str]] = set()
    batch: list[ScrapedPost] = []

    async def flush(session: AsyncSession) -> None:
        result = await upsert_posts(
            session,
            tenant_id=tenant_id,
            scrape_id=scrape_id,
            posts=batch,
            recorded_at=recorded_at,
        )
        keys = {_key(post) for post in batch}
        # Written by an earlier batch of this import: found as "known" now, but not a
        # second post and not an update of an older scrape's post.
        again = len(keys & counted)
        counted.update(keys)
        report.seen += result.seen - again
        report.new += result.new
        report.updated += result.updated - again
        batch.clear()

    async with session_factory() as session, session.begin():
        for row in rows:
            if isinstance(row, RejectedRow):
                report.rejected_count += 1
                if len(report.rejected) < max_reported_rejections:
                    report.rejected.append(row)
                continue
            batch.append(row)
            if len(batch) >= batch_size:
                await flush(session)
        if batch:
            await flush(session)
    return report
