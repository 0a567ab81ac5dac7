"""Bundled sample metrics for the demo: two weeks of TikTok numbers for two videos.

The numbers are shaped so the answer is known: the generated clip is shared far more than
the tenant's other video (a strength) but few viewers watch it to the end (a weakness), so
an improvement has something to keep and something to fix.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import datetime, timedelta

COLUMNS = (
    "video_id",
    "platform",
    "views",
    "likes",
    "comments",
    "shares",
    "saves",
    "completion_rate",
    "traffic_source",
    "recorded_at",
)


def _days(
    video_id: uuid.UUID,
    start: datetime,
    daily_views: int,
    *,
    share_rate: float,
    completion: float,
    traffic: str,
) -> list[list[object]]:
    rows: list[list[object]] = []
    views = 0
    for day in range(14):
        # Views grow fast at first and level off, as short videos usually do.
        views += int(daily_views * (0.8**day)) + 50
        rows.append(
            [
                video_id,
                "tiktok",
                views,
                views // 12,
                views // 150,
                int(views * share_rate),
                views // 60,
                completion,
                traffic,
                (start + timedelta(days=day)).isoformat(),
            ]
        )
    return rows


def sample_metrics_csv(generated: uuid.UUID, other: uuid.UUID, now: datetime) -> bytes:
    """The CSV `POST /v1/performance/import` takes: 14 daily snapshots per video, up to
    yesterday."""
    start = now - timedelta(days=15)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    writer.writerows(_days(generated, start, 9000, share_rate=0.04, completion=18.0, traffic="fyp"))
    writer.writerows(
        _days(other, start, 3000, share_rate=0.005, completion=46.0, traffic="profile")
    )
    return buffer.getvalue().encode()
