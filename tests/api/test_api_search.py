"""`GET /v1/search`: pgvector search, tenant-scoped, validated."""

from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from reelflow.core.db import session_factory
from reelflow.core.pricing import price_for
from schemas.tables import Chunk, LedgerEntry
from tests.api.api_support import BagOfWordsEmbedder, TenantKey, assert_error


async def upload(
    api: httpx.AsyncClient, tenant: TenantKey, collection_id: uuid.UUID | None = None
) -> uuid.UUID:
    data = {"title": "searchable"}
    if collection_id is not None:
        data["collection_id"] = str(collection_id)
    response = await api.post(
        "/v1/videos",
        headers=tenant.headers,
        data=data,
        files={"file": ("s.mp4", b"video bytes", "video/mp4")},
    )
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["video_id"])


async def index(
    engine: AsyncEngine,
    embedder: BagOfWordsEmbedder,
    tenant: TenantKey,
    video_id: uuid.UUID,
    texts: list[str],
    *,
    collection_id: uuid.UUID | None = None,
    model: str | None = None,
) -> list[uuid.UUID]:
    """Store chunks the way the indexing activity does: vector plus the model that made it."""
    vectors = embedder.embed(texts).vectors
    ids = [uuid.uuid4() for _ in texts]
    async with session_factory(engine)() as session:
        session.add_all(
            Chunk(
                id=chunk_id,
                tenant_id=tenant.tenant_id,
                video_id=video_id,
                collection_id=collection_id,
                chunk_index=i,
                start_s=i * 30.0,
                end_s=i * 30.0 + 30.0,
                text=text,
                word_count=len(text.split()),
                embedding_model=model or embedder.model_name,
                embedding=vector.tolist(),
            )
            for i, (chunk_id, text, vector) in enumerate(zip(ids, texts, vectors, strict=True))
        )
        await session.commit()
    return ids


TEXTS = [
    "welcome to the channel today we bake sourdough bread",
    "the starter needs flour water and patience",
    "now we shape the dough and let it proof overnight",
    "bake the loaf in a hot dutch oven for forty minutes",
]


async def test_results_are_ranked_by_cosine_similarity(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine, embedder: BagOfWordsEmbedder
) -> None:
    video_id = await upload(api, alice)
    ids = await index(api_engine, embedder, alice, video_id, TEXTS)
    response = await api.get(
        "/v1/search", params={"q": "bake the loaf in a dutch oven", "k": 2}, headers=alice.headers
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 2
    best = results[0]
    assert best["chunk_id"] == str(ids[3])
    assert best["video_id"] == str(video_id)
    assert (best["start_s"], best["end_s"]) == (90.0, 120.0)
    assert best["text"] == TEXTS[3]
    assert results[0]["score"] > results[1]["score"] > 0
    assert best["score"] <= 1.0
    # The query went through the injected embedder, once.
    assert embedder.calls[-1] == ["bake the loaf in a dutch oven"]


async def test_identical_text_scores_one(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine, embedder: BagOfWordsEmbedder
) -> None:
    video_id = await upload(api, alice)
    await index(api_engine, embedder, alice, video_id, TEXTS)
    response = await api.get("/v1/search", params={"q": TEXTS[1], "k": 1}, headers=alice.headers)
    (hit,) = response.json()["results"]
    assert hit["text"] == TEXTS[1]
    assert hit["score"] == pytest.approx(1.0, abs=1e-5)


async def test_default_k_is_five(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine, embedder: BagOfWordsEmbedder
) -> None:
    video_id = await upload(api, alice)
    await index(api_engine, embedder, alice, video_id, [f"the line number {i}" for i in range(8)])
    response = await api.get("/v1/search", params={"q": "the line"}, headers=alice.headers)
    assert len(response.json()["results"]) == 5


async def test_other_tenants_and_other_models_are_never_returned(
    api: httpx.AsyncClient,
    alice: TenantKey,
    bob: TenantKey,
    api_engine: AsyncEngine,
    embedder: BagOfWordsEmbedder,
) -> None:
    alice_video = await upload(api, alice)
    bob_video = await upload(api, bob)
    alice_ids = await index(api_engine, embedder, alice, alice_video, ["sourdough starter tips"])
    await index(api_engine, embedder, bob, bob_video, ["sourdough starter tips exactly"])
    # Same tenant, but vectors from another model live in another space.
    await index(
        api_engine,
        embedder,
        alice,
        await upload(api, alice),
        ["sourdough starter tips"],
        model="openai/text-embedding-3-small",
    )
    response = await api.get(
        "/v1/search", params={"q": "sourdough starter tips", "k": 50}, headers=alice.headers
    )
    assert [r["chunk_id"] for r in response.json()["results"]] == [str(alice_ids[0])]


async def test_video_and_collection_filters(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine, embedder: BagOfWordsEmbedder
) -> None:
    collection = uuid.uuid4()
    in_collection = await upload(api, alice, collection)
    elsewhere = await upload(api, alice)
    first = await index(
        api_engine, embedder, alice, in_collection, ["knead the dough"], collection_id=collection
    )
    second = await index(api_engine, embedder, alice, elsewhere, ["knead the dough again"])

    by_video = await api.get(
        "/v1/search",
        params={"q": "knead dough", "video_id": str(elsewhere)},
        headers=alice.headers,
    )
    assert [r["chunk_id"] for r in by_video.json()["results"]] == [str(second[0])]
    by_collection = await api.get(
        "/v1/search",
        params={"q": "knead dough", "collection_id": str(collection)},
        headers=alice.headers,
    )
    assert [r["chunk_id"] for r in by_collection.json()["results"]] == [str(first[0])]


async def test_video_of_another_tenant_is_404(
    api: httpx.AsyncClient, alice: TenantKey, bob: TenantKey
) -> None:
    bob_video = await upload(api, bob)
    response = await api.get(
        "/v1/search", params={"q": "anything", "video_id": str(bob_video)}, headers=alice.headers
    )
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"q": ""},
        {"q": "   "},
        {"q": "x" * 1001},
        {"q": "ok", "k": "0"},
        {"q": "ok", "k": "51"},
        {"q": "ok", "k": "many"},
        {"q": "ok", "video_id": "not-a-uuid"},
        {"q": "ok", "collection_id": "not-a-uuid"},
    ],
)
async def test_bad_search_parameters_are_422(
    api: httpx.AsyncClient, alice: TenantKey, embedder: BagOfWordsEmbedder, params: dict[str, str]
) -> None:
    response = await api.get("/v1/search", params=params, headers=alice.headers)
    assert_error(response, 422, "invalid_request")
    assert embedder.calls == []


async def test_search_needs_an_api_key(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/v1/search", params={"q": "x"}), 401, "unauthorized")


async def test_a_thousand_character_query_is_fine(api: httpx.AsyncClient, alice: TenantKey) -> None:
    response = await api.get("/v1/search", params={"q": "y" * 1000}, headers=alice.headers)
    assert response.status_code == 200
    assert response.json() == {"results": []}


# --- modes -------------------------------------------------------------------------------------

CODES = [
    "the XK-4471 driver ships with two batteries",
    "the XK-4417 driver ships with two batteries",
    "the XK-7144 driver ships with two batteries",
]


async def test_text_mode_matches_words_without_embedding_the_query(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine, embedder: BagOfWordsEmbedder
) -> None:
    video_id = await upload(api, alice)
    ids = await index(api_engine, embedder, alice, video_id, [*TEXTS, *CODES])
    embedder.calls.clear()
    response = await api.get(
        "/v1/search", params={"q": "XK-4417", "mode": "text"}, headers=alice.headers
    )
    assert response.status_code == 200, response.text
    (hit,) = response.json()["results"]
    assert hit["chunk_id"] == str(ids[len(TEXTS) + 1])
    assert (hit["score"], hit["similarity"], hit["text_match"]) == (1.0, None, True)
    assert embedder.calls == []
    assert await ledger_rows(api_engine, alice) == []


@pytest.mark.parametrize("mode", [None, "hybrid", "vector"])
async def test_hybrid_is_the_default_and_vector_mode_is_similarity_only(
    api: httpx.AsyncClient,
    alice: TenantKey,
    api_engine: AsyncEngine,
    embedder: BagOfWordsEmbedder,
    mode: str | None,
) -> None:
    video_id = await upload(api, alice)
    ids = await index(api_engine, embedder, alice, video_id, [*TEXTS, *CODES])
    params = {"q": "which driver is XK-7144", "k": "3"} | ({"mode": mode} if mode else {})
    response = await api.get("/v1/search", params=params, headers=alice.headers)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0]["chunk_id"] == str(ids[len(TEXTS) + 2])
    assert all(r["similarity"] is not None for r in results)
    if mode == "vector":
        assert all(r["score"] == r["similarity"] and not r["text_match"] for r in results)
    else:
        assert results[0]["text_match"] and results[0]["score"] == 1.0
        assert [r["text_match"] for r in results[1:]] == [False, False]


async def test_an_unknown_mode_is_422(api: httpx.AsyncClient, alice: TenantKey) -> None:
    response = await api.get(
        "/v1/search", params={"q": "x", "mode": "fuzzy"}, headers=alice.headers
    )
    assert_error(response, 422, "invalid_request")


# --- pricing -----------------------------------------------------------------------------------


async def ledger_rows(engine: AsyncEngine, tenant: TenantKey) -> list[LedgerEntry]:
    async with session_factory(engine)() as session:
        rows = await session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.tenant_id == tenant.tenant_id)
            .order_by(LedgerEntry.id)
        )
        return list(rows)


async def test_each_search_records_its_query_embedding_once_and_usage_shows_it(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine, embedder: BagOfWordsEmbedder
) -> None:
    video_id = await upload(api, alice)
    await index(api_engine, embedder, alice, video_id, TEXTS)
    for _ in range(2):  # the same query twice is two searches, two rows
        response = await api.get("/v1/search", params={"q": "bake the loaf"}, headers=alice.headers)
        assert response.status_code == 200, response.text
    rows = await ledger_rows(api_engine, alice)
    assert len(rows) == 2 and rows[0].idempotency_key != rows[1].idempotency_key
    for row in rows:
        assert row.idempotency_key.startswith("search/")
        assert (row.step, row.provider, row.operation, row.model) == (
            "search.embedding",
            "local",
            "embedding",
            "bag-of-words",
        )
        assert (row.units, row.unit, row.cost_usd) == (Decimal(3), "token", Decimal(0))
        assert row.compute_seconds >= 0
    usage = await api.get(
        "/v1/usage", params={"group_by": "provider,operation"}, headers=alice.headers
    )
    assert usage.status_code == 200, usage.text
    groups = [
        (g["provider"], g["operation"], g["units"], g["calls"]) for g in usage.json()["groups"]
    ]
    assert groups == [("local", "embedding", 6.0, 2)]
    assert usage.json()["total_usd"] == 0.0


async def test_a_paid_embedder_is_priced_from_the_price_table(
    api: httpx.AsyncClient, alice: TenantKey, api_engine: AsyncEngine, embedder: BagOfWordsEmbedder
) -> None:
    embedder.provider = "openai"
    embedder.model_name = "openai/text-embedding-3-small"
    response = await api.get(
        "/v1/search", params={"q": "four words of query"}, headers=alice.headers
    )
    assert response.status_code == 200, response.text
    (row,) = await ledger_rows(api_engine, alice)
    assert (row.provider, row.model, row.units) == ("openai", "text-embedding-3-small", Decimal(4))
    assert (
        row.cost_usd
        == 4 * price_for("openai", "embedding", "text-embedding-3-small").unit_price_usd
    )
    assert row.cost_usd > 0 and row.compute_seconds == 0


# --- hostile queries ---------------------------------------------------------------------------

HOSTILE_QUERIES = [
    "the and of to a",
    "?!.,;:'\"",
    "&|!():*",
    "a & | b ! ( ) : * <-> <2> 'c' \"d",
    "!!!(((XK-4471:*))) | & |",
    "-XK-4471 -",
    '"unterminated',
    "or or and not",
    "bake " * 200,
    "ǅ İ ß ﬁ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🔨",
]


@pytest.mark.parametrize("mode", ["hybrid", "text", "vector"])
@pytest.mark.parametrize("q", HOSTILE_QUERIES, ids=range(len(HOSTILE_QUERIES)))
async def test_hostile_queries_answer_200(
    api: httpx.AsyncClient,
    alice: TenantKey,
    api_engine: AsyncEngine,
    embedder: BagOfWordsEmbedder,
    q: str,
    mode: str,
) -> None:
    video_id = await upload(api, alice)
    await index(api_engine, embedder, alice, video_id, [*TEXTS, *CODES])
    response = await api.get(
        "/v1/search", params={"q": q, "mode": mode, "k": "50"}, headers=alice.headers
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    if q.startswith("bake"):
        assert results and results[0]["text_match"] is (mode != "vector")


@pytest.mark.parametrize(
    "q", ["", "   \t ", "x" * 10_240, "bread\x00"], ids=["empty", "blank", "10kb", "nul"]
)
async def test_unsearchable_queries_are_422(
    api: httpx.AsyncClient, alice: TenantKey, embedder: BagOfWordsEmbedder, q: str
) -> None:
    response = await api.get("/v1/search", params={"q": q}, headers=alice.headers)
    assert_error(response, 422, "invalid_request")
    assert embedder.calls == []


async def test_a_query_that_is_not_utf8_is_answered_not_crashed(
    api: httpx.AsyncClient, alice: TenantKey
) -> None:
    response = await api.get("/v1/search?q=%ED%A0%80%FF%26%7C", headers=alice.headers)
    if response.status_code != 200:
        assert_error(response, 422, "invalid_request")
