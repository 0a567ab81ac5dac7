"""A synthetic Apify dataset for the demo and the tests: two accounts, their posts, and the
videos of the posts that did far better than usual, rendered locally (no network).

The export has the shapes Apify writes: `apify/instagram-scraper` rows (`shortCode`,
`ownerUsername`, `videoPlayCount`, ISO `timestamp`) and `clockworks/tiktok-scraper` rows
(`authorMeta.name`, `playCount`, `createTime` in seconds), plus the bad rows a real export
carries (an error row for a private account, counts written as "1.2K"). The numbers are
chosen so the answer is known: exactly two posts are outliers, one of each tier below.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

INSTAGRAM_ACCOUNT = "glowlab.demo"
TIKTOK_ACCOUNT = "deskfit.demo"


@dataclass(frozen=True)
class SampleOutlier:
    """A post the sample makes an outlier, with what its video says."""

    clip: str
    """File name (without `.mp4`) under the demo's video server."""
    platform: str
    post_id: str
    tier: str
    ratio: float
    """Views ÷ the account's median views, as the outlier score must find it."""
    sentences: Sequence[str]


OUTLIERS: tuple[SampleOutlier, ...] = (
    SampleOutlier(
        clip="glowlab-serum",
        platform="instagram",
        post_id="DEMO005",
        tier="10x",
        ratio=12.5,
        sentences=(
            "Stop scrolling if your skin looks tired every morning.",
            "I tried one drop of this serum for seven days.",
            "By day three the redness was gone and my makeup sat better.",
            "Follow for the full routine and grab the link in my bio.",
        ),
    ),
    SampleOutlier(
        clip="deskfit-posture",
        platform="tiktok",
        post_id="7400000000000000004",
        tier="5x",
        ratio=5.2,
        sentences=(
            "Your back hurts because of how you sit, not how long.",
            "Here is the two minute desk stretch physios actually use.",
            "Roll your shoulders back, then hold for ten seconds.",
            "Save this and try it before your next meeting.",
        ),
    ),
)

# (days ago, views) per account. Each outlier's baseline is the account's posts before it:
# median 1 200 on Instagram (15 000 is 12.5x) and 5 000 on TikTok (26 000 is 5.2x).
_INSTAGRAM_POSTS: tuple[tuple[float, int], ...] = (
    (27, 1100),
    (24, 1300),
    (21, 900),
    (18, 1200),
    (15, 1250),
    (12, 15000),
    (9, 1150),
    (6, 1400),
)
_TIKTOK_POSTS: tuple[tuple[float, int], ...] = (
    (26, 4800),
    (22, 5200),
    (19, 4600),
    (16, 5400),
    (13, 26000),
    (10, 5300),
    (7, 4900),
)


def sample_export(video_base_url: str, now: datetime) -> str:
    """The dataset as JSONL, with video URLs under `video_base_url` and times before `now`.

    Returns:
        The file's text: 15 usable posts (two of them outliers), one post too recent to
        compare, one repeated row, and one error row Apify writes for a private account.
    """
    base = video_base_url.rstrip("/")
    outlier_by_id = {outlier.post_id: outlier for outlier in OUTLIERS}
    rows: list[dict[str, object]] = []
    for index, (days_ago, views) in enumerate(_INSTAGRAM_POSTS):
        # Instagram posts are known by their short code, as in their URLs.
        outlier = outlier_by_id.get(f"DEMO{index:03d}")
        rows.append(
            {
                "id": f"33000000000000000{index:02d}",
                "shortCode": f"DEMO{index:03d}",
                "type": "Video",
                "url": f"https://www.instagram.com/p/DEMO{index:03d}/",
                "caption": outlier.sentences[0] if outlier else f"Morning routine, day {index}",
                "timestamp": (now - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z"),
                "ownerUsername": INSTAGRAM_ACCOUNT,
                "videoPlayCount": views,
                "videoViewCount": views // 2,
                # Counts arrive as text in some exports; the importer reads "1.2K" as 1200.
                "likesCount": "1.2K" if index == 2 else views // 20,
                "commentsCount": views // 200,
                "videoDuration": 14.0,
                "videoUrl": f"{base}/{outlier.clip}.mp4" if outlier else f"{base}/missing.mp4",
            }
        )
    for index, (days_ago, plays) in enumerate(_TIKTOK_POSTS):
        post_id = f"74000000000000000{index:02d}"
        outlier = outlier_by_id.get(post_id)
        created = now - timedelta(days=days_ago)
        rows.append(
            {
                "id": post_id,
                "text": outlier.sentences[0] if outlier else f"Desk stretch #{index}",
                "createTime": int(created.timestamp()),
                "webVideoUrl": f"https://www.tiktok.com/@{TIKTOK_ACCOUNT}/video/{post_id}",
                "authorMeta": {"name": TIKTOK_ACCOUNT, "fans": 48000},
                "playCount": plays,
                "diggCount": plays // 15,
                "shareCount": plays // 300,
                "commentCount": plays // 250,
                "collectCount": plays // 120,
                "videoMeta": {"duration": 21},
                "videoUrl": f"{base}/{outlier.clip}.mp4" if outlier else f"{base}/missing.mp4",
            }
        )
    # Too recent to compare: a huge count after 10 hours says nothing yet.
    rows.append(
        {
            "id": "7400000000000000099",
            "text": "Posted this morning",
            "createTime": int((now - timedelta(hours=10)).timestamp()),
            "authorMeta": {"name": TIKTOK_ACCOUNT, "fans": 48000},
            "playCount": 90000,
            "diggCount": 4000,
            "videoUrl": f"{base}/missing.mp4",
        }
    )
    rows.append(dict(rows[0]))  # exports repeat rows; the importer keeps one
    rows.append(
        {
            "error": "not_found",
            "errorDescription": "Profile is private or does not exist: privatepage.demo",
        }
    )
    return "".join(json.dumps(row) + "\n" for row in rows)


@contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """Serve `root` over HTTP on 127.0.0.1 (a free port) while the block runs; the URL base."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
