"""Turn timed transcript segments into overlapping, timed chunks for embedding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TimedText:
    """A transcript segment: text spoken between `start_s` and `end_s`."""

    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class TextChunk:
    """A chunk with the time span of the speech it contains."""

    index: int
    start_s: float
    end_s: float
    text: str
    word_count: int


@dataclass(frozen=True)
class ChunkSizes:
    """Word counts (seed 004: 500–1000 words with 100 words of overlap)."""

    target_words: int
    max_words: int
    overlap_words: int

    def __post_init__(self) -> None:
        if not 0 < self.target_words <= self.max_words:
            raise ValueError("chunk sizes need 0 < target_words <= max_words")
        if not 0 <= self.overlap_words < self.target_words:
            raise ValueError("chunk overlap must be smaller than the target size")

    def capped(self, max_words: int) -> ChunkSizes:
        """The same proportions, shrunk to fit an embedder that reads at most `max_words`."""
        if max_words >= self.max_words:
            return self
        scale = max_words / self.max_words
        target = max(1, min(max_words, round(self.target_words * scale)))
        overlap = min(target - 1, round(self.overlap_words * scale))
        return ChunkSizes(target_words=target, max_words=max_words, overlap_words=overlap)


def _split_long(segment: TimedText, max_words: int) -> list[TimedText]:
    """Split a segment longer than a chunk, spreading its time span over the words."""
    words = segment.text.split()
    if len(words) <= max_words:
        return [segment]
    span = segment.end_s - segment.start_s
    pieces = []
    for start in range(0, len(words), max_words):
        part = words[start : start + max_words]
        begin = segment.start_s + span * start / len(words)
        end = segment.start_s + span * (start + len(part)) / len(words)
        pieces.append(TimedText(round(begin, 3), round(end, 3), " ".join(part)))
    return pieces


def build_chunks(segments: Sequence[TimedText], sizes: ChunkSizes) -> list[TextChunk]:
    """Group whole segments into chunks of about `target_words`, never over `max_words`.

    Consecutive chunks share their boundary segments (up to `overlap_words`), so a
    sentence cut at a chunk edge is still found whole in one of them. Each chunk's span
    runs from its first segment's start to its last segment's end.
    """
    pieces = [
        piece
        for segment in segments
        if segment.text.strip()
        for piece in _split_long(segment, sizes.max_words)
    ]
    groups: list[list[TimedText]] = []
    current: list[TimedText] = []
    carried = 0  # leading pieces of `current` repeated from the previous chunk
    for piece in pieces:
        if _words(current) + _words([piece]) > sizes.max_words:
            if len(current) > carried:
                groups.append(current)
                current = _overlap_tail(current, sizes.overlap_words)
                carried = len(current)
            if _words(current) + _words([piece]) > sizes.max_words:
                current, carried = [], 0
        current.append(piece)
        if _words(current) >= sizes.target_words:
            groups.append(current)
            current = _overlap_tail(current, sizes.overlap_words)
            carried = len(current)
    fresh = current[carried:]
    if fresh:
        # A short tail reads better appended to the last chunk than as a chunk of its own.
        if (
            groups
            and _words(fresh) < sizes.target_words / 4
            and _words(groups[-1]) + _words(fresh) <= sizes.max_words
        ):
            groups[-1].extend(fresh)
        else:
            groups.append(current)
    return [
        TextChunk(
            index=index,
            start_s=group[0].start_s,
            end_s=group[-1].end_s,
            text=" ".join(p.text.strip() for p in group),
            word_count=_words(group),
        )
        for index, group in enumerate(groups)
    ]


def _words(pieces: Sequence[TimedText]) -> int:
    return sum(len(p.text.split()) for p in pieces)


def _overlap_tail(group: list[TimedText], overlap_words: int) -> list[TimedText]:
    tail: list[TimedText] = []
    for piece in reversed(group):
        if _words(tail) + _words([piece]) > overlap_words:
            break
        tail.insert(0, piece)
    # A chunk made only of overlap would repeat the previous one.
    return [] if len(tail) == len(group) else tail
