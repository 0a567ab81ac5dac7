"""Versions of a video and whether they did better; a discover script's prediction against
what its video did.

* **The chain** (`version_history`): from the first original through every improvement
  (`videos.improved_from_video_id`) to the newest, each with its latest numbers
  (`reelflow.improve.aggregates.video_summary`). A version improved more than once has
  several children: the chain follows the newest, the others are listed as `branches`.
* **The comparison** (`compare_versions`): two versions of one chain side by side, with
  deltas, once both have metrics.
* **Predicted vs actual** (`script_performance`): a script's predicted viral score (0–10)
  against its published post's outlier score (views ÷ the account's median), or, before
  the post is scored, its produced video's "× your usual".
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.core.errors import DomainError
from reelflow.improve.aggregates import video_summary
from reelflow.improve.performance import require_video
from schemas.discover_tables import Post, Script
from schemas.failures import FailureCode
from schemas.improve import VideoPerformanceSummary
from schemas.improvement import (
    MetricComparison,
    ScriptPerformance,
    VersionComparison,
    VersionHistory,
    VersionMetrics,
    VideoVersion,
)
from schemas.improvement_run_tables import Improvement
from schemas.tables import Video

MAX_CHAIN = 200
"""Versions followed in one direction: a bound, should a link ever loop."""
AS_PREDICTED_FACTOR = 1.5
"""Actual within 1.5× of the prediction (either way) counts as predicted."""


class NotAVersion(ValueError):
    """The two videos are not versions of one original."""


# --- metrics -------------------------------------------------------------------------------


def version_metrics(summary: VideoPerformanceSummary) -> VersionMetrics:
    """A version's latest numbers: total views, engagement, completion and × usual.

    Completion is the mean of the platforms' latest completion rates that are known;
    × usual is the best platform's (the one the summary calls best).
    """
    if summary.snapshots == 0:
        return VersionMetrics(snapshots=0)
    completions = [p.completion_rate for p in summary.platforms if p.completion_rate is not None]
    best = next((p for p in summary.platforms if p.platform == summary.best_platform), None)
    return VersionMetrics(
        snapshots=summary.snapshots,
        views=summary.totals.get("views"),
        engagement_rate=summary.engagement_rate,
        completion_rate=round(sum(completions) / len(completions), 4) if completions else None,
        times_usual=best.times_usual if best is not None else None,
        best_platform=summary.best_platform.value if summary.best_platform else None,
        last_recorded_at=summary.last_recorded_at,
    )


async def _version(
    session: AsyncSession, tenant_id: uuid.UUID, video: Video, version: int
) -> VideoVersion:
    summary = await video_summary(session, tenant_id=tenant_id, video_id=video.id)
    improvement_id = await session.scalar(
        select(Improvement.id)
        .where(Improvement.tenant_id == tenant_id, Improvement.new_video_id == video.id)
        .limit(1)
    )
    return VideoVersion(
        video_id=video.id,
        version=version,
        iteration=video.improvement_iteration or 0,
        title=video.title,
        status=video.status,
        improved_from_video_id=video.improved_from_video_id,
        improvement_id=improvement_id,
        created_at=video.created_at,
        metrics=version_metrics(summary),
    )


# --- the chain -----------------------------------------------------------------------------


async def _children(
    session: AsyncSession, tenant_id: uuid.UUID, video_id: uuid.UUID
) -> list[Video]:
    """Videos improved from `video_id`, newest first."""
    rows = await session.scalars(
        select(Video)
        .where(Video.tenant_id == tenant_id, Video.improved_from_video_id == video_id)
        .order_by(Video.created_at.desc(), Video.id)
    )
    return list(rows.all())


async def _chain(
    session: AsyncSession, tenant_id: uuid.UUID, video: Video
) -> tuple[list[Video], list[uuid.UUID]]:
    """The path from the root original through `video` to its newest descendant, and the
    videos branching off it."""
    upward: list[Video] = [video]
    seen = {video.id}
    current = video
    while current.improved_from_video_id is not None and len(upward) < MAX_CHAIN:
        parent = await session.scalar(
            select(Video).where(
                Video.id == current.improved_from_video_id, Video.tenant_id == tenant_id
            )
        )
        if parent is None or parent.id in seen:
            break
        upward.append(parent)
        seen.add(parent.id)
        current = parent
    chain = list(reversed(upward))
    current = video
    for _ in range(MAX_CHAIN):
        children = [c for c in await _children(session, tenant_id, current.id) if c.id not in seen]
        if not children:
            break
        current = children[0]
        chain.append(current)
        seen.add(current.id)
    on_chain = {v.id for v in chain}
    branches: list[uuid.UUID] = []
    for member in chain:
        for child in await _children(session, tenant_id, member.id):
            if child.id not in on_chain:
                branches.append(child.id)
    return chain, branches


async def version_history(
    session: AsyncSession, *, tenant_id: uuid.UUID, video_id: uuid.UUID
) -> VersionHistory:
    """The chain of versions `video_id` belongs to, oldest first, each with its metrics.

    Raises:
        DomainError: `VIDEO_NOT_FOUND` (also for another tenant's video).
    """
    video = await require_video(session, tenant_id, video_id)
    chain, branches = await _chain(session, tenant_id, video)
    versions = [
        await _version(session, tenant_id, member, number)
        for number, member in enumerate(chain, start=1)
    ]
    return VersionHistory(video_id=video_id, versions=versions, branches=branches)


def _comparison(name: str, base: float | None, other: float | None) -> MetricComparison:
    delta = None if base is None or other is None else other - base
    change = None if delta is None or not base else delta / base
    return MetricComparison(
        name=name,
        base=base,
        other=other,
        delta=None if delta is None else round(delta, 6),
        change=None if change is None else round(change, 4),
    )


async def compare_versions(
    session: AsyncSession, *, tenant_id: uuid.UUID, video_id: uuid.UUID, other_id: uuid.UUID
) -> VersionComparison:
    """`video_id` and `other_id` side by side: views, engagement, completion, × usual.

    Raises:
        DomainError: `VIDEO_NOT_FOUND` for either (also another tenant's).
        NotAVersion: the two do not descend from the same original.
    """
    video = await require_video(session, tenant_id, video_id)
    other = await require_video(session, tenant_id, other_id)
    chain, _ = await _chain(session, tenant_id, video)
    roots = {chain[0].id}
    other_chain, _ = await _chain(session, tenant_id, other)
    if other_chain[0].id not in roots:
        raise NotAVersion(
            f"video {other_id} is not a version of video {video_id}: they descend from "
            "different originals"
        )
    positions = {member.id: number for number, member in enumerate(other_chain, start=1)}
    numbers = {member.id: number for number, member in enumerate(chain, start=1)}
    base = await _version(session, tenant_id, video, numbers.get(video.id, 1))
    compared = await _version(
        session, tenant_id, other, positions.get(other.id, numbers.get(other.id, 1))
    )
    a, b = base.metrics, compared.metrics
    metrics = [
        _comparison("views", _float(a.views), _float(b.views)),
        _comparison("engagement_rate", a.engagement_rate, b.engagement_rate),
        _comparison("completion_rate", a.completion_rate, b.completion_rate),
        _comparison("times_usual", a.times_usual, b.times_usual),
    ]
    missing = [v for v in (base, compared) if v.metrics.snapshots == 0]
    message = None
    if missing:
        names = " and ".join(f"version {v.version} ({v.video_id})" for v in missing)
        message = f"{names} has no metrics yet: add some to compare"
    return VersionComparison(
        base=base, other=compared, comparable=not missing, metrics=metrics, message=message
    )


def _float(value: int | None) -> float | None:
    return None if value is None else float(value)


# --- predicted vs actual -------------------------------------------------------------------


def predicted_ratio(viral_score: float) -> float:
    """A viral score read as "× the usual": s predicts s× (10 ↔ the 10× tier), at least 1×."""
    return max(1.0, min(viral_score, 10.0))


def verdict(predicted: float, actual: float) -> str:
    """How the actual ratio compares with the predicted one (within 1.5× is as predicted)."""
    if actual >= predicted * AS_PREDICTED_FACTOR:
        return "outperformed"
    if actual * AS_PREDICTED_FACTOR <= predicted:
        return "underperformed"
    return "as_predicted"


async def script_performance(
    session: AsyncSession, *, tenant_id: uuid.UUID, script_id: uuid.UUID
) -> ScriptPerformance:
    """The script's predicted viral score against what its post or its video did.

    Raises:
        DomainError: `OBJECT_NOT_FOUND` (also for another tenant's script).
    """
    script = await session.scalar(
        select(Script).where(Script.id == script_id, Script.tenant_id == tenant_id)
    )
    if script is None:
        raise DomainError(FailureCode.OBJECT_NOT_FOUND, f"no script with id {script_id}")
    outlier: float | None = None
    if script.published_post_id is not None:
        outlier = await session.scalar(
            select(Post.outlier_score).where(
                Post.id == script.published_post_id, Post.tenant_id == tenant_id
            )
        )
    times_usual: float | None = None
    if script.produced_video_id is not None:
        produced = await session.scalar(
            select(Video.id).where(
                Video.id == script.produced_video_id, Video.tenant_id == tenant_id
            )
        )
        if produced is not None:
            summary = await video_summary(session, tenant_id=tenant_id, video_id=produced)
            times_usual = version_metrics(summary).times_usual
    actual, source = (
        (outlier, "published_post")
        if outlier is not None
        else (times_usual, "produced_video")
        if times_usual is not None
        else (None, None)
    )
    predicted = script.predicted_viral_score
    predicted_as_ratio = None if predicted is None else predicted_ratio(predicted)
    message = None
    if actual is None:
        if script.produced_video_id is None and script.published_post_id is None:
            message = "the script has no produced video or published post yet"
        else:
            message = "nothing measured yet: the post is not scored and the video has no metrics"
    elif predicted is None:
        message = "the script has no predicted viral score (its source video was not analyzed)"
    return ScriptPerformance(
        script_id=script.id,
        title=script.title,
        predicted_viral_score=predicted,
        produced_video_id=script.produced_video_id,
        published_post_id=script.published_post_id,
        actual_outlier_score=outlier,
        actual_times_usual=times_usual,
        actual=actual,
        actual_source=source,
        predicted_as_ratio=predicted_as_ratio,
        verdict=(
            verdict(predicted_as_ratio, actual)
            if predicted_as_ratio is not None and actual is not None
            else None
        ),
        message=message,
    )
