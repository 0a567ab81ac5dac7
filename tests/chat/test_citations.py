"""References: which passages an answer cites, and the check against the stored transcript."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.chat.citations import (
    Reference,
    cited_refs,
    normalize,
    select_references,
    supported,
    verify_references,
)
from reelflow.core.db import session_factory
from reelflow.ingest.chunking import TimedText
from reelflow.search.minilm import LocalMiniLMEmbedder
from tests.chat.chat_support import Tenant, index_transcript, timed_lines

SEGMENTS = [
    (0.0, 3.8, "Knead the dough for ten minutes,"),
    (4.0, 7.8, "until it feels smooth and elastic."),
    (8.0, 11.8, "The oven should be very hot: about 230 degrees!"),
]


def ref(text: str, start_s: float, end_s: float, video_id: uuid.UUID | None = None) -> Reference:
    return Reference(
        video_id=video_id or uuid.uuid4(),
        title="Bread",
        start_s=start_s,
        end_s=end_s,
        text=text,
        score=0.8,
    )


def test_citations_are_read_in_order_of_first_use_and_only_for_given_passages() -> None:
    answer = "Knead it [2]. Bake hot [1][2]. Rest [ 3 , 1 ]. Also [7] and [0] and [x]."
    assert cited_refs(answer, range(1, 4)) == [2, 1, 3]
    assert cited_refs("no citations here", range(1, 4)) == []


def test_an_answer_citing_nothing_gets_the_top_passages() -> None:
    passages = [ref(f"p{i}", i, i + 1) for i in range(5)]
    assert select_references("Cites [4] then [2].", passages) == [passages[3], passages[1]]
    assert select_references("cites nothing", passages) == passages[:3]
    # A citation of a passage that was never sent counts as no citation.
    assert select_references("see [9]", passages) == passages[:3]


def test_normalization_ignores_case_punctuation_and_spacing_only() -> None:
    assert normalize("The OVEN —  should be\nvery hot: 230°!") == "the oven should be very hot 230"
    assert normalize("Ｆｕｌｌｗｉｄｔｈ") == "fullwidth"


def test_text_must_occur_in_the_segments_of_the_cited_span() -> None:
    # A chunk is whole segments joined with spaces; the check is whitespace/punctuation blind.
    chunk = "Knead the dough for ten minutes, until it feels smooth and elastic."
    assert supported(ref(chunk, 0.0, 7.8), SEGMENTS)
    assert supported(ref("the OVEN should be very hot about 230 degrees", 8.0, 11.8), SEGMENTS)
    # A changed word, or the right words at the wrong time, is not supported.
    assert not supported(ref(chunk.replace("ten", "five"), 0.0, 7.8), SEGMENTS)
    assert not supported(ref("The oven should be very hot", 0.0, 7.8), SEGMENTS)
    # Text spanning two segments needs both inside the span.
    assert not supported(ref(chunk, 4.0, 7.8), SEGMENTS)
    # Whole words only: "read" is not in "bread".
    assert not supported(ref("read", 0.0, 30.0), [(0.0, 2.0, "fresh bread")])
    assert not supported(ref("   ", 0.0, 11.8), SEGMENTS)
    assert not supported(ref(chunk, 7.8, 0.0), SEGMENTS)


async def test_verification_reads_the_tenants_stored_transcript(
    chat_engine: AsyncEngine, minilm: LocalMiniLMEmbedder, alice: Tenant, bob: Tenant
) -> None:
    lines = [TimedText(s, e, t) for s, e, t in SEGMENTS]
    video = await index_transcript(chat_engine, minilm, alice.tenant_id, "Bread", lines)
    others = await index_transcript(
        chat_engine,
        minilm,
        alice.tenant_id,
        "Bikes",
        timed_lines(["Pump the tyres to the pressure printed on the side."]),
    )
    good = ref("Knead the dough for ten minutes, until it feels smooth", 0.0, 7.8, video.video_id)
    tampered = ref("Knead the dough for two hours", 0.0, 7.8, video.video_id)
    shifted = ref("The oven should be very hot", 0.0, 3.8, video.video_id)
    wrong_video = ref("The oven should be very hot", 8.0, 11.8, others.video_id)
    async with session_factory(chat_engine)() as session:
        kept, dropped = await verify_references(
            session, alice.tenant_id, [tampered, good, shifted, wrong_video]
        )
        assert kept == [good] and dropped == 3
        # Another tenant's transcripts confirm nothing, even with the right video id.
        kept, dropped = await verify_references(session, bob.tenant_id, [good])
        assert kept == [] and dropped == 1
        assert await verify_references(session, alice.tenant_id, []) == ([], 0)
