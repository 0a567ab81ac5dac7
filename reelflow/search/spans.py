"""Where inside a chunk a match is: the transcript segments that carry the matching words.

A chunk is 30-60 s of transcript; a search result or a chat reference that only gives the
chunk's start sends the viewer to the wrong sentence. The chunk's own segments (one query
for all hits) are compared with the words that matched (the search query, or the part of a
chat answer that cites the chunk), and the best run of consecutive segments gives the
precise span. Words are compared after case folding and a crude suffix strip, without stop
words; a chunk none of whose segments shares a word keeps its whole span.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.tables import TranscriptSegment

SPAN_TOLERANCE_S = 0.05
"""Slack on span edges: chunk times are segment times, rounded to milliseconds."""

_WORD = re.compile(r"\w+", re.UNICODE)
_STOP_WORDS = (
    "a an and are as at be but by did do does for from had has have he her his how i if in "
    "into is it its me my no not of on or our she so than that the their them then there "
    "these they this to was we were what when where which who why will with you your"
)
_STOP = frozenset(_STOP_WORDS.split(" "))


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class Span:
    """The consecutive segments that carry a match."""

    start_s: float
    end_s: float
    text: str


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def terms(text: str) -> set[str]:
    """Content words of ``text``: folded, stop words dropped, suffixes stripped."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return {_stem(w) for w in _WORD.findall(folded) if w not in _STOP}


def best_span(segments: Sequence[Segment], claim: str) -> Span | None:
    """The run of consecutive `segments` that best carries the words of `claim`.

    The segment sharing the most words with `claim` (the earlier on a tie) is extended to
    its neighbours while they share at least half their own words with it, so a quote that
    runs over two segments gets both. None when no segment shares a word.
    """
    wanted = terms(claim)
    if not wanted or not segments:
        return None
    shared = [len(terms(s.text) & wanted) for s in segments]
    best = max(range(len(segments)), key=lambda i: (shared[i], -i))
    if shared[best] == 0:
        return None

    def carries(i: int) -> bool:
        own = terms(segments[i].text)
        return bool(own) and len(own & wanted) * 2 >= len(own)

    first = last = best
    while first > 0 and carries(first - 1):
        first -= 1
    while last + 1 < len(segments) and carries(last + 1):
        last += 1
    run = segments[first : last + 1]
    return Span(run[0].start_s, run[-1].end_s, " ".join(s.text.strip() for s in run))


async def segments_in_spans(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    spans: Sequence[tuple[uuid.UUID, float, float]],
) -> dict[uuid.UUID, list[Segment]]:
    """Every segment of the tenant overlapping any ``(video_id, start_s, end_s)``, per video
    in transcript order (one query)."""
    if not spans:
        return {}
    conditions = [
        and_(
            TranscriptSegment.video_id == video_id,
            TranscriptSegment.start_s <= end_s + SPAN_TOLERANCE_S,
            TranscriptSegment.end_s >= start_s - SPAN_TOLERANCE_S,
        )
        for video_id, start_s, end_s in spans
    ]
    rows = await session.execute(
        select(
            TranscriptSegment.video_id,
            TranscriptSegment.start_s,
            TranscriptSegment.end_s,
            TranscriptSegment.text,
        )
        .where(TranscriptSegment.tenant_id == tenant_id, or_(*conditions))
        .order_by(TranscriptSegment.video_id, TranscriptSegment.window_index, TranscriptSegment.seq)
    )
    by_video: defaultdict[uuid.UUID, list[Segment]] = defaultdict(list)
    for row in rows:
        by_video[row.video_id].append(Segment(row.start_s, row.end_s, row.text))
    return dict(by_video)


def within(segments: Sequence[Segment], start_s: float, end_s: float) -> list[Segment]:
    """The segments overlapping ``[start_s, end_s]``."""
    low, high = start_s - SPAN_TOLERANCE_S, end_s + SPAN_TOLERANCE_S
    return [s for s in segments if s.start_s <= high and s.end_s >= low]


async def match_spans(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    chunks: Sequence[tuple[uuid.UUID, float, float]],
    claim: str,
) -> list[Span | None]:
    """For each ``(video_id, start_s, end_s)`` chunk, the segments inside it carrying
    `claim`'s words (None where none does)."""
    by_video = await segments_in_spans(session, tenant_id, chunks)
    return [
        best_span(within(by_video.get(video_id, []), start_s, end_s), claim)
        for video_id, start_s, end_s in chunks
    ]
