"""The embedded default answerer: no model, it quotes the best-matching transcript sentences."""

from __future__ import annotations

import re
from dataclasses import dataclass

from reelflow.chat.answerers import (
    NOTHING_INDEXED,
    OFFLINE_MODEL,
    AnswerRequest,
    AnswerStream,
    Finished,
    Passage,
    TextDelta,
    build_prompt,
    estimate_prompt_tokens,
    estimate_tokens,
    format_timestamp,
)

OFFLINE_NOTICE = "No language model is configured, so this answer quotes the transcripts directly."

_WORDS = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
_STOPWORDS = frozenset({
    "a", "about", "above", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as",
    "at", "be", "because", "been", "before", "being", "between", "both", "but", "by", "can",
    "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from",
    "further", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his", "how",
    "i", "if", "in", "into", "is", "it", "its", "itself", "just", "let", "me", "more", "most",
    "my", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our",
    "ours", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that",
    "the", "their", "theirs", "them", "then", "there", "these", "they", "this", "those", "through",
    "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where",
    "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours",
    "video", "videos", "say", "said", "says", "talk", "talks", "tell", "tells"
})  # fmt: skip
_MAX_QUOTES = 3
_MAX_QUOTES_PER_PASSAGE = 2
_MAX_QUOTE_WORDS = 45


def _stem(word: str) -> str:
    # Just enough to match "pipelines"/"pipeline" and "editing"/"edit"; no dictionary.
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _terms(text: str) -> set[str]:
    return {_stem(w) for w in (m.lower() for m in _WORDS.findall(text)) if w not in _STOPWORDS}


def _sentences(text: str) -> list[str]:
    """Sentences of a transcript; unpunctuated stretches are cut into shorter quotes."""
    result: list[str] = []
    for sentence in _SENTENCE_END.split(" ".join(text.split())):
        words = sentence.split()
        for start in range(0, len(words), _MAX_QUOTE_WORDS):
            piece = " ".join(words[start : start + _MAX_QUOTE_WORDS])
            if piece:
                result.append(piece)
    return result


@dataclass(frozen=True)
class _Quote:
    passage: Passage
    rank: int
    position: int
    text: str
    score: int


class OfflineAnswerer:
    """The embedded default: an extractive answer quoted from the passages, no model.

    It picks the transcript sentences that share the most words with the question
    (ties go to the more relevant passage, then the earlier sentence), quotes them with
    their ``[n]`` citations, and starts by saying that no language model is configured.
    Token counts are :func:`estimate_tokens` estimates; the provider is ``local``, so they
    cost nothing.
    """

    provider = "local"
    model = OFFLINE_MODEL

    def stream(self, request: AnswerRequest) -> AnswerStream:
        """See :meth:`Answerer.stream`; never raises a provider error."""
        text, stop_reason = self.compose(request)
        for piece in re.findall(r"\S+\s*", text):
            yield TextDelta(piece)
        yield Finished(
            input_tokens=estimate_prompt_tokens(build_prompt(request)),
            output_tokens=estimate_tokens(text),
            stop_reason=stop_reason,
            usage_estimated=True,
        )

    def compose(self, request: AnswerRequest) -> tuple[str, str]:
        """The whole reply and its stop reason (``end_turn`` or ``max_tokens``)."""
        if not request.passages:
            return NOTHING_INDEXED, "end_turn"
        quotes = self._pick(request)
        matched = any(q.score > 0 for q in quotes)
        lead = (
            "These transcript passages match your question best:"
            if matched
            else "No passage uses the words of your question; these are the closest ones found:"
        )
        budget = request.max_output_tokens
        if estimate_tokens(OFFLINE_NOTICE) > budget:
            return self._truncate(OFFLINE_NOTICE, budget), "max_tokens"
        text = f"{OFFLINE_NOTICE}\n\n{lead}"
        lines: list[str] = []
        stop_reason = "end_turn"
        for quote in quotes:
            p = quote.passage
            title = p.title.strip() or "Untitled video"
            line = (
                f'\n- "{quote.text}" ({title}, {format_timestamp(p.start_s)}–'
                f"{format_timestamp(p.end_s)}) [{p.ref}]"
            )
            if estimate_tokens(text + "".join(lines) + line) > budget:
                stop_reason = "max_tokens"
                break
            lines.append(line)
        if not lines:
            # A lead-in announcing quotes that do not follow would only confuse.
            return OFFLINE_NOTICE, stop_reason
        return text + "".join(lines), stop_reason

    @staticmethod
    def _truncate(text: str, budget: int) -> str:
        words: list[str] = []
        for word in text.split(" "):
            if estimate_tokens(" ".join([*words, word])) > budget:
                break
            words.append(word)
        return " ".join(words)

    @staticmethod
    def _pick(request: AnswerRequest) -> list[_Quote]:
        wanted = _terms(request.question)
        candidates = [
            _Quote(passage, rank, position, sentence, len(wanted & _terms(sentence)))
            for rank, passage in enumerate(request.passages)
            for position, sentence in enumerate(_sentences(passage.text))
        ]
        if not candidates:
            return []
        if not any(c.score for c in candidates):
            # Nothing shares a word with the question: fall back on retrieval's order,
            # one opening sentence from each of the most relevant passages.
            firsts = [c for c in candidates if c.position == 0]
            return firsts[:_MAX_QUOTES]
        ranked = sorted(
            (c for c in candidates if c.score > 0),
            key=lambda c: (-c.score, c.rank, c.position),
        )
        chosen: list[_Quote] = []
        per_passage: dict[int, int] = {}
        for quote in ranked:
            if per_passage.get(quote.rank, 0) >= _MAX_QUOTES_PER_PASSAGE:
                continue
            chosen.append(quote)
            per_passage[quote.rank] = per_passage.get(quote.rank, 0) + 1
            if len(chosen) == _MAX_QUOTES:
                break
        # Read in the order the passages were ranked, and in speaking order within one.
        return sorted(chosen, key=lambda c: (c.rank, c.position))
