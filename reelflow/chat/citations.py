"""References of a chat answer, each checked against the stored transcript before it is shown.

An answer cites passages as ``[n]`` (see ``reelflow.chat.answerers``). Its references are the
passages it cites, in the order first cited; an answer that cites none (a model that ignored
the instruction) gets the top passages it was given instead, since those are what it rests on.

**Verification.** A reference says "video V says TEXT between START and END". Chunks are
concatenations of whole transcript segments (a segment too long for one chunk is split by
words, with its time span shared out), so the claim holds exactly when TEXT occurs in the
concatenated text of V's segments whose times overlap [START, END]. Both sides are
normalized first (Unicode compatibility forms, case, punctuation and spacing), so a
re-punctuated transcript still matches while a changed word, a shifted time span or another
video does not. References that fail are dropped and counted.

**Precision.** After verification each confirmed reference is narrowed from its 30-60 s chunk to the
transcript segments that carry what the answer says with it (the answer's text from the
start of the line, or the previous citation, up to ``[n]``; see
:func:`reelflow.search.spans.best_span`): its ``start_s`` is the start of the sentence it
quotes. A reference whose segments share no word with that text keeps the chunk's span.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.chat.answerers import format_timestamp
from reelflow.search.spans import best_span, segments_in_spans, within
from schemas.tables import TranscriptSegment

FALLBACK_REFERENCES = 3
"""References given to an answer that cites nothing: the top passages it was sent."""
SPAN_TOLERANCE_S = 0.05
"""Slack on span edges: chunk times are segment times, rounded to milliseconds."""

_CITATION = re.compile(r"\[\s*(\d{1,4}(?:\s*,\s*\d{1,4})*)\s*\]")
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Reference:
    """A cited video moment.

    Attributes:
        video_id: The video.
        title: Its title.
        start_s: Start of the cited span, in seconds.
        end_s: End of the cited span, in seconds.
        text: The transcript text the span is claimed to contain.
        score: The passage's relevance score.
    """

    video_id: uuid.UUID
    title: str
    start_s: float
    end_s: float
    text: str
    score: float

    @property
    def timestamp(self) -> str:
        """The start as ``m:ss``, or ``h:mm:ss`` from an hour on."""
        return format_timestamp(self.start_s)


def cited_refs(answer: str, valid: Collection[int]) -> list[int]:
    """The passage numbers ``answer`` cites, in order of first citation, each once.

    ``[2]``, ``[1][3]`` and ``[1, 3]`` are citations; numbers outside ``valid`` (a model
    citing a passage it was not given) are ignored.
    """
    seen: dict[int, None] = {}
    for match in _CITATION.finditer(answer):
        for part in match.group(1).split(","):
            ref = int(part)
            if ref in valid:
                seen.setdefault(ref, None)
    return list(seen)


def select_references(
    answer: str, passages: Sequence[Reference], fallback: int = FALLBACK_REFERENCES
) -> list[Reference]:
    """The references of ``answer``, where ``passages[i]`` was sent as ``[i + 1]``."""
    refs = cited_refs(answer, range(1, len(passages) + 1))
    if refs:
        return [passages[ref - 1] for ref in refs]
    return list(passages[:fallback])


def normalize(text: str) -> str:
    """Compatibility-folded, case-folded words separated by single spaces."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NOT_WORD.sub(" ", folded).split())


def supported(reference: Reference, segments: Sequence[tuple[float, float, str]]) -> bool:
    """Whether ``reference.text`` occurs in the segments overlapping its span.

    Args:
        reference: The claim.
        segments: ``(start_s, end_s, text)`` of the reference's video, in transcript order.
    """
    claim = normalize(reference.text)
    if not claim or reference.end_s < reference.start_s:
        return False
    low = reference.start_s - SPAN_TOLERANCE_S
    high = reference.end_s + SPAN_TOLERANCE_S
    spoken = normalize(
        " ".join(text for start, end, text in segments if start <= high and end >= low)
    )
    # Padding with spaces makes the match whole-word: "read" is not found in "bread".
    return f" {claim} " in f" {spoken} "


async def verify_references(
    session: AsyncSession, tenant_id: uuid.UUID, references: Sequence[Reference]
) -> tuple[list[Reference], int]:
    """Keep the references the tenant's stored transcripts confirm.

    One query reads the segments overlapping every reference's span.

    Returns:
        The confirmed references in their original order, and how many were dropped.
    """
    if not references:
        return [], 0
    spans = [
        and_(
            TranscriptSegment.video_id == ref.video_id,
            TranscriptSegment.start_s <= ref.end_s + SPAN_TOLERANCE_S,
            TranscriptSegment.end_s >= ref.start_s - SPAN_TOLERANCE_S,
        )
        for ref in references
    ]
    rows = await session.execute(
        select(
            TranscriptSegment.video_id,
            TranscriptSegment.start_s,
            TranscriptSegment.end_s,
            TranscriptSegment.text,
        )
        .where(TranscriptSegment.tenant_id == tenant_id, or_(*spans))
        # Transcript order, as chunks were cut from it.
        .order_by(TranscriptSegment.video_id, TranscriptSegment.window_index, TranscriptSegment.seq)
    )
    by_video: defaultdict[uuid.UUID, list[tuple[float, float, str]]] = defaultdict(list)
    for row in rows:
        by_video[row.video_id].append((row.start_s, row.end_s, row.text))
    kept = [ref for ref in references if supported(ref, by_video.get(ref.video_id, ()))]
    return kept, len(references) - len(kept)


def citing_text(answer: str) -> dict[int, str]:
    """For each passage number the answer cites, the words it says with the citation.

    That is the text from the start of the line, or from the previous citation, up to
    ``[n]``; ``[1][3]`` or ``[1, 3]`` give both numbers the same text. Several citations of
    one number are joined.
    """
    claims: dict[int, list[str]] = {}
    for line in answer.splitlines():
        position = 0
        said = ""
        for match in _CITATION.finditer(line):
            before = line[position : match.start()]
            if normalize(before):
                said = before
            for part in match.group(1).split(","):
                claims.setdefault(int(part), []).append(said)
            position = match.end()
    return {ref: " ".join(parts) for ref, parts in claims.items()}


async def narrow_to_quotes(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    answer: str,
    passages: Sequence[Reference],
    selected: Sequence[Reference],
) -> list[Reference]:
    """`selected` (from `passages`, sent as ``[1..n]``), each narrowed to the segments of
    its span that carry what `answer` says with it; one that cites nothing is narrowed by
    the whole answer."""
    if not selected:
        return []
    claims = citing_text(answer)
    by_video = await segments_in_spans(
        session, tenant_id, [(r.video_id, r.start_s, r.end_s) for r in selected]
    )
    narrowed: list[Reference] = []
    for reference in selected:
        number = next((i for i, p in enumerate(passages, start=1) if p is reference), None)
        claim = claims.get(number, "") if number is not None else ""
        segments = within(by_video.get(reference.video_id, []), reference.start_s, reference.end_s)
        span = best_span(segments, claim or answer)
        if span is None:
            narrowed.append(reference)
        else:
            narrowed.append(
                replace(reference, start_s=span.start_s, end_s=span.end_s, text=span.text)
            )
    return narrowed
