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

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, func, literal_column
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.discover import RejectedRow, ScrapedPost
from schemas.discover_tables import Post, PostSnapshot, WatchedAccount

_COUNTS = ("views", "likes", "comments", "shares", "saves")
_KEPT_WHEN_MISSING = ("url", "video_url", "caption", "posted_at", "duration_s", *_COUNTS)


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
    """One post per platform id: the most views, the later on a tie; in key order, so
    concurrent batches lock rows in the same order and cannot deadlock."""
    best: dict[tuple[str, str], ScrapedPost] = {}
    for post in posts:
        kept = best.get(_key(post))
        if kept is None or _views_rank(post) >= _views_rank(kept):
            best[_key(post)] = post
    return [best[key] for key in sorted(best)]


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

    post_rows = [
        {
            "id": uuid.uuid4(),
            "tenant_id": tenant_id,
            "account_id": account_ids[(post.platform.value, post.account)],
            "platform": post.platform.value,
            "platform_post_id": post.post_id,
            "url": post.url,
            "video_url": post.video_url,
            "caption": post.caption,
            "posted_at": post.posted_at,
            "duration_s": post.duration_s,
            "is_video": post.is_video,
            "views": post.views,
            "likes": post.likes,
            "comments": post.comments,
            "shares": post.shares,
            "saves": post.saves,
            "first_scrape_id": scrape_id,
        }
        for post in unique
    ]
    statement = insert(Post)
    known = Post.__table__.c
    updates: dict[str, Any] = {
        name: func.coalesce(statement.excluded[name], known[name]) for name in _KEPT_WHEN_MISSING
    }
    updates["account_id"] = statement.excluded.account_id
    updates["is_video"] = statement.excluded.is_video
    updates["updated_at"] = func.now()
    statement = statement.on_conflict_do_update(
        index_elements=["tenant_id", "platform", "platform_post_id"], set_=updates
    )
    returned = await session.execute(
        statement.returning(
            Post.id,
            Post.platform,
            Post.platform_post_id,
            literal_column("(xmax = 0)", Boolean).label("inserted"),
        ),
        post_rows,
    )
    post_ids: dict[tuple[str, str], uuid.UUID] = {}
    new_ids: list[uuid.UUID] = []
    for post_id, platform, platform_post_id, inserted in returned.all():
        post_ids[(platform, platform_post_id)] = post_id
        if inserted:
            new_ids.append(post_id)

    snapshot_rows = [
        {
            "post_id": post_ids[_key(post)],
            "scrape_id": scrape_id,
            "recorded_at": recorded_at,
            "views": post.views,
            "likes": post.likes,
            "comments": post.comments,
            "shares": post.shares,
            "saves": post.saves,
            "followers": post.followers,
        }
        for post in unique
    ]
    snapshot = insert(PostSnapshot)
    snapshot_known = PostSnapshot.__table__.c
    snapshot_updates: dict[str, Any] = {
        name: func.coalesce(snapshot.excluded[name], snapshot_known[name])
        for name in (*_COUNTS, "followers")
    }
    snapshot_updates["recorded_at"] = snapshot.excluded.recorded_at
    await session.execute(
        snapshot.on_conflict_do_update(
            index_elements=["post_id", "scrape_id"], set_=snapshot_updates
        ),
        snapshot_rows,
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
    rows = [
        {
            "id": uuid.uuid4(),
            "tenant_id": tenant_id,
            "platform": platform,
            "handle": handle,
            "followers": count,
            "last_scraped_at": recorded_at,
        }
        for (platform, handle), count in sorted(followers.items())
    ]
    statement = insert(WatchedAccount)
    known = WatchedAccount.__table__.c
    statement = statement.on_conflict_do_update(
        index_elements=["tenant_id", "platform", "handle"],
        set_={
            "followers": func.coalesce(statement.excluded.followers, known.followers),
            "last_scraped_at": func.greatest(
                statement.excluded.last_scraped_at, known.last_scraped_at
            ),
        },
    )
    returned = await session.execute(
        statement.returning(WatchedAccount.id, WatchedAccount.platform, WatchedAccount.handle),
        rows,
    )
    return {(platform, handle): account_id for account_id, platform, handle in returned.all()}


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
