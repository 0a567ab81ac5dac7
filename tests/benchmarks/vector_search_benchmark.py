"""Vector search benchmark: recall and latency of the production HNSW query at 100k chunks.

Run:  .venv/bin/python tests/benchmarks/vector_search_benchmark.py [--json out.json]

What it does, all in one run so every ratio compares figures taken under the same load:

1. Generates clustered 384-d unit vectors (Gaussian clusters around random unit centres,
   seeded) plus held-out queries drawn from the same clusters.
2. Starts a throwaway PostgreSQL + pgvector, migrates it, and bulk-loads the vectors into
   the real ``chunks`` table (binary COPY; one tenant, a few videos of very different
   sizes). The migration's HNSW index is dropped before the load and rebuilt from its own
   definition afterwards, so the build is timed exactly as the migration declares it.
3. Exact top-10 by brute force in numpy: the ground truth for recall.
4. The production query path, `reelflow.search.vectors.search_chunks`, the one vector
   query behind both `GET /v1/search` and chat retrieval (tenant-scoped
   ``ORDER BY embedding <=> q LIMIT k`` with the ef_search and iterative-scan settings it
   applies), timed per call, against the same call with index scans disabled (an exact
   scan in PostgreSQL: the same-run latency baseline).
5. An ef_search sweep, EXPLAIN of the production statement, and video-scoped searches
   (a selective filter on top of the HNSW scan, the same situation as a small tenant in a
   shared table) with ``hnsw.iterative_scan`` off / strict_order / relaxed_order: one video
   at a time as `GET /v1/search` filters, and a list of videos as chat does.

6. Hybrid search (`reelflow.search.hybrid.find_chunks`, what `GET /v1/search` and chat run
   by default: the same vector query plus Postgres full-text search, fused): p95 latency at
   the same table size against the vector-only production path of the same run. Every chunk
   holds ~120 words drawn from an English vocabulary with a Zipf distribution (common words
   very common, as in speech), so the text half meets realistic posting-list sizes.
7. Exact-term recall, vector vs hybrid: a second tenant in the same table holds passages
   embedded with the real local MiniLM model, each with one exact fact (a product code, a
   year, a street name) among everyday sentences; each fact is asked for by its term alone
   and as a short question, and recall@1 / recall@10 are printed for both modes.

Nothing is asserted: figures are reported with their target and whether it was met.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector.psycopg import register_vector
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

import reelflow.search.vectors as search_module
from reelflow.core.db import SessionFactory, create_engine, session_factory
from reelflow.core.migrate import upgrade_database
from reelflow.search.hybrid import find_chunks
from reelflow.search.minilm import LocalMiniLMEmbedder, default_minilm_dir
from reelflow.search.vectors import search_chunks
from schemas.tables import EMBEDDING_DIMENSIONS, Chunk
from tests.benchmarks.common import (
    machine,
    median,
    percentile,
    report,
    throwaway_postgres,
    verdict,
    write_json,
)
from tests.support import libpq_url

FloatArray = npt.NDArray[np.float32]

K = 10
RECALL_TARGET = 0.95
P95_TARGET_MS = 20.0
HNSW_INDEX = "ix_chunks_embedding_hnsw"
GIN_INDEX = "ix_chunks_search_vector"
HYBRID_P95_TARGET_MS = 100.0
MODEL = LocalMiniLMEmbedder.model_name
# Very different video sizes, so video-scoped searches span filter selectivities from
# "almost everything passes" to "almost nothing does" (0.5 % of rows).
VIDEO_SHARES = (0.70, 0.25, 0.045, 0.005)
ITERATIVE_MODES = ("off", "strict_order", "relaxed_order")
# Column types of the binary COPY below, in its column order.
COPY_COLUMNS = (
    ("id", "uuid"),
    ("tenant_id", "uuid"),
    ("video_id", "uuid"),
    ("chunk_index", "int4"),
    ("start_s", "float8"),
    ("end_s", "float8"),
    ("text", "text"),
    ("word_count", "int4"),
    ("embedding_model", "varchar"),
    ("embedding", "vector"),
)
_ITERATIVE_IN_SEARCH = re.compile(r"set_config\('hnsw\.iterative_scan',\s*'(\w+)'")


# --- data ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    vectors: FloatArray  # (rows, 384), unit length
    queries: FloatArray  # (queries, 384), unit length, not in the table
    video_of_row: npt.NDArray[np.int64]  # index into VIDEO_SHARES
    ids: list[uuid.UUID]
    texts: list[str]  # Zipf-distributed English words, one passage per row
    query_texts: list[str]  # a few words per query, drawn the same way


def unit(x: FloatArray) -> FloatArray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    result: FloatArray = (x / np.maximum(norms, 1e-12)).astype(np.float32)
    return result


def make_dataset(
    rows: int, queries: int, clusters: int, noise: float, seed: int, words: int = 120
) -> Dataset:
    """Gaussian clusters on the unit sphere, queries held out from the same clusters.

    A point is ``normalize(centre + noise * g / sqrt(d))``; the noise term has norm about
    `noise`, so a point's cosine to its centre is about ``1 / sqrt(1 + noise**2)`` and two
    points of one cluster have a cosine of about ``1 / (1 + noise**2)`` — the range real
    sentence embeddings of one topic show.
    """
    rng = np.random.default_rng(seed)
    d = EMBEDDING_DIMENSIONS
    centres = unit(rng.standard_normal((clusters, d), dtype=np.float32))
    # Uneven cluster sizes, like topics in real transcripts.
    weights = rng.dirichlet(np.full(clusters, 2.0))
    total = rows + queries
    labels = rng.choice(clusters, size=total, p=weights)
    points = centres[labels] + np.float32(noise / np.sqrt(d)) * rng.standard_normal(
        (total, d), dtype=np.float32
    )
    points = unit(points)
    order = rng.permutation(total)
    data, held_out = points[order[:rows]], points[order[rows:]]
    video_of_row = rng.choice(len(VIDEO_SHARES), size=rows, p=np.array(VIDEO_SHARES))
    ids = [uuid.UUID(bytes=rng.bytes(16), version=4) for _ in range(rows)]
    vocabulary = english_vocabulary()
    texts = zipf_texts(rng, vocabulary, rows, words)
    query_texts = zipf_texts(rng, vocabulary, queries, 4)
    return Dataset(
        vectors=data,
        queries=held_out,
        video_of_row=video_of_row,
        ids=ids,
        texts=texts,
        query_texts=query_texts,
    )


def english_vocabulary() -> list[str]:
    """Whole English words of the bundled MiniLM vocabulary (about 20k), in vocabulary order.

    BERT's vocabulary lists frequent words before rare ones only roughly, which is enough for
    a Zipf draw to give realistic posting-list sizes: a few words in most passages, most
    words in a handful.
    """
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(default_minilm_dir() / "tokenizer.json")).get_vocab()
    words = [w for w, _ in sorted(vocab.items(), key=lambda item: item[1])]
    return [w for w in words if w.isascii() and w.isalpha() and len(w) >= 2]


def zipf_texts(
    rng: np.random.Generator, vocabulary: Sequence[str], count: int, words: int
) -> list[str]:
    ranks = (rng.zipf(1.15, size=(count, words)) - 1) % len(vocabulary)
    return [" ".join(vocabulary[r] for r in row) for row in ranks]


def exact_top_k(vectors: FloatArray, queries: FloatArray, k: int) -> npt.NDArray[np.int64]:
    """Row indexes of the k nearest rows by cosine distance, nearest first."""
    scores = queries @ vectors.T  # unit vectors: cosine similarity
    part = np.argpartition(-scores, kth=min(k, vectors.shape[0] - 1), axis=1)[:, :k]
    rows = np.arange(queries.shape[0])[:, None]
    order = np.argsort(-scores[rows, part], axis=1)
    result: npt.NDArray[np.int64] = part[rows, order].astype(np.int64)
    return result


# --- loading ---------------------------------------------------------------------------------


@dataclass
class LoadStats:
    copy_s: float = 0.0
    analyze_s: float = 0.0
    index_build_s: float = 0.0
    index_def: str = ""
    gin_build_s: float = 0.0
    gin_def: str = ""
    index_mb: float = 0.0
    table_mb: float = 0.0
    build_notices: list[str] = field(default_factory=list)
    server: dict[str, str] = field(default_factory=dict)


def load(conninfo: str, data: Dataset, maintenance_work_mem: str) -> tuple[LoadStats, uuid.UUID]:
    """Load one tenant, its videos and every vector into `chunks`; rebuild the HNSW index."""
    stats = LoadStats()
    tenant_id = uuid.uuid4()
    video_ids = [uuid.uuid4() for _ in VIDEO_SHARES]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        register_vector(conn)
        conn.add_notice_handler(lambda diag: stats.build_notices.append(str(diag.message_primary)))
        conn.execute(
            "INSERT INTO tenants (id, name, plan) VALUES (%s, 'bench', 'pro')", (tenant_id,)
        )
        for i, video_id in enumerate(video_ids):
            conn.execute(
                "INSERT INTO videos (id, tenant_id, title, origin, source_key, status, stage,"
                " progress, cost_usd, chunk_count, embedding_model)"
                " VALUES (%s, %s, %s, 'upload', %s, 'completed', 'completed', 1.0, 0, %s, %s)",
                (
                    video_id,
                    tenant_id,
                    f"bench video {i}",
                    f"tenants/{tenant_id}/videos/{video_id}/source.mp4",
                    int((data.video_of_row == i).sum()),
                    MODEL,
                ),
            )
        row = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'chunks' AND indexname = %s",
            (HNSW_INDEX,),
        ).fetchone()
        if row is None:
            raise RuntimeError(f"the migration did not create {HNSW_INDEX}")
        stats.index_def = str(row[0])
        # Bulk load without the index, then build it once: the usual way to (re)index a
        # large table, and the only way to time the build on its own.
        conn.execute(f"DROP INDEX {HNSW_INDEX}")
        gin = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'chunks' AND indexname = %s",
            (GIN_INDEX,),
        ).fetchone()
        if gin is None:
            raise RuntimeError(f"the migration did not create {GIN_INDEX}")
        stats.gin_def = str(gin[0])
        conn.execute(f"DROP INDEX {GIN_INDEX}")

        started = time.perf_counter()
        next_index = [0] * len(VIDEO_SHARES)
        columns = ", ".join(name for name, _ in COPY_COLUMNS)
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY chunks ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types([kind for _, kind in COPY_COLUMNS])
            for i in range(data.vectors.shape[0]):
                video = int(data.video_of_row[i])
                index = next_index[video]
                next_index[video] += 1
                copy.write_row(
                    (
                        data.ids[i],
                        tenant_id,
                        video_ids[video],
                        index,
                        index * 30.0,
                        index * 30.0 + 30.0,
                        data.texts[i],
                        len(data.texts[i].split()),
                        MODEL,
                        data.vectors[i],
                    )
                )
        stats.copy_s = time.perf_counter() - started

        started = time.perf_counter()
        conn.execute("ANALYZE chunks")
        stats.analyze_s = time.perf_counter() - started

        conn.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
        started = time.perf_counter()
        conn.execute(stats.index_def)
        stats.index_build_s = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute(stats.gin_def)
        stats.gin_build_s = time.perf_counter() - started
        conn.execute("ANALYZE chunks")

        size = conn.execute(
            "SELECT pg_relation_size(%s::regclass), pg_total_relation_size('chunks')",
            (HNSW_INDEX,),
        ).fetchone()
        assert size is not None
        stats.index_mb = size[0] / 1e6
        stats.table_mb = size[1] / 1e6
        settings = conn.execute(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)",
            (
                [
                    "server_version",
                    "shared_buffers",
                    "work_mem",
                    "maintenance_work_mem",
                    "max_parallel_maintenance_workers",
                    "max_parallel_workers_per_gather",
                    "hnsw.ef_search",
                    "hnsw.iterative_scan",
                    "hnsw.max_scan_tuples",
                    "hnsw.scan_mem_multiplier",
                ],
            ),
        ).fetchall()
        stats.server = {name: f"{value}{unit or ''}" for name, value, unit in settings}
        version = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        stats.server["pgvector"] = str(version[0]) if version else "?"
        stats.server["maintenance_work_mem (index build)"] = maintenance_work_mem
    return stats, tenant_id


# --- searching -----------------------------------------------------------------------------


def production_iterative_mode() -> str:
    """The iterative-scan mode `reelflow.search.vectors` sets, read from its statement."""
    match = _ITERATIVE_IN_SEARCH.search(str(search_module._TUNE_SCAN.text))
    return match.group(1) if match else "not set"


@contextmanager
def search_knobs(ef_search: int | None = None, iterative_scan: str | None = None) -> Iterator[None]:
    """Vary one setting of `search_chunks` while keeping the rest of its code path.

    The function reads `EF_SEARCH` and its tuning statement at call time, so swapping the
    module globals changes exactly the knob under test and nothing else.
    """
    saved_ef, saved_tune = search_module.EF_SEARCH, search_module._TUNE_SCAN
    try:
        if ef_search is not None:
            search_module.EF_SEARCH = ef_search
        if iterative_scan is not None:
            sql = str(saved_tune.text)
            if not _ITERATIVE_IN_SEARCH.search(sql):
                raise RuntimeError("reelflow.search.vectors no longer sets hnsw.iterative_scan")
            search_module._TUNE_SCAN = text(
                _ITERATIVE_IN_SEARCH.sub(
                    f"set_config('hnsw.iterative_scan', '{iterative_scan}'", sql
                )
            )
        yield
    finally:
        search_module.EF_SEARCH, search_module._TUNE_SCAN = saved_ef, saved_tune


@dataclass
class RunStats:
    label: str
    latencies_ms: list[float]
    recall: float
    short_results: int  # queries that returned fewer than K rows (where K rows exist)
    mean_rows: float

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p95(self) -> float:
        return percentile(self.latencies_ms, 95)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)

    def line(self) -> str:
        return (
            f"{self.label:<48} recall@{K} {self.recall:.4f} | p50 {self.p50:7.2f} ms"
            f" | p95 {self.p95:7.2f} ms | p99 {self.p99:7.2f} ms"
            f" | rows/query {self.mean_rows:5.2f} | short results {self.short_results}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "recall_at_10": round(self.recall, 5),
            "p50_ms": round(self.p50, 3),
            "p95_ms": round(self.p95, 3),
            "p99_ms": round(self.p99, 3),
            "mean_rows": round(self.mean_rows, 3),
            "short_results": self.short_results,
        }


async def run_queries(
    sessions: SessionFactory,
    *,
    label: str,
    tenant_id: uuid.UUID,
    queries: FloatArray,
    truth: npt.NDArray[np.int64],
    row_of_id: dict[uuid.UUID, int],
    video_ids: tuple[uuid.UUID, ...] | None = None,
    exact_scan: bool = False,
) -> RunStats:
    """Time `search_chunks` once per query, as an API request would call it.

    Each call is its own transaction (begin, tune, select, commit), like a request.
    `exact_scan` disables index scans for the transaction, so PostgreSQL answers with a
    sequential (or bitmap) scan and a top-N sort: exact, and the latency baseline.
    """
    latencies: list[float] = []
    hits_found = 0
    rows_returned = 0
    short = 0
    for qi in range(queries.shape[0]):
        vector = queries[qi].tolist()
        started = time.perf_counter()
        async with sessions.begin() as session:
            if exact_scan:
                await session.execute(text("SET LOCAL enable_indexscan = off"))
            hits = await search_chunks(
                session,
                tenant_id=tenant_id,
                query_vector=vector,
                k=K,
                embedding_model=MODEL,
                video_ids=video_ids,
            )
        latencies.append((time.perf_counter() - started) * 1000)
        expected = {int(i) for i in truth[qi]}
        got = {row_of_id[h.chunk_id] for h in hits}
        hits_found += len(expected & got)
        rows_returned += len(hits)
        if len(hits) < min(K, len(expected)):
            short += 1
    possible = sum(len(set(map(int, t))) for t in truth)
    return RunStats(
        label=label,
        latencies_ms=latencies,
        recall=hits_found / possible if possible else float("nan"),
        short_results=short,
        mean_rows=rows_returned / max(1, queries.shape[0]),
    )


async def explain_production(
    engine: AsyncEngine,
    sessions: SessionFactory,
    *,
    tenant_id: uuid.UUID,
    query: FloatArray,
    video_ids: tuple[uuid.UUID, ...] | None = None,
    exact_scan: bool = False,
) -> list[str]:
    """EXPLAIN ANALYZE of the exact statement `search_chunks` sends, with its settings.

    The statement and parameters are captured from a real call, then explained in the same
    transaction, where the call's SET LOCAL settings (ef_search, iterative scan) still hold.
    """
    captured: list[tuple[str, Any]] = []

    def capture(
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if "ORDER BY" in statement and "<=>" in statement:
            captured.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with sessions.begin() as session:
            if exact_scan:
                await session.execute(text("SET LOCAL enable_indexscan = off"))
            await search_chunks(
                session,
                tenant_id=tenant_id,
                query_vector=query.tolist(),
                k=K,
                embedding_model=MODEL,
                video_ids=video_ids,
            )
            if not captured:
                return ["(no statement captured)"]
            statement, parameters = captured[-1]
            conn = await session.connection()
            result = await conn.exec_driver_sql(
                f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) {statement}", parameters
            )
            plan = shorten_plan([str(r[0]) for r in result])
            settings = await session.execute(
                text(
                    "SELECT current_setting('hnsw.ef_search'),"
                    " current_setting('hnsw.iterative_scan')"
                )
            )
            ef, mode = settings.one()
            plan.append(f"(in effect: hnsw.ef_search={ef}, hnsw.iterative_scan={mode})")
            return plan
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)


_VECTOR_LITERAL = re.compile(r"'\[[^\]]{60,}\]'")


def shorten_plan(plan: Sequence[str]) -> list[str]:
    """Plan lines with the 384-float query literal elided, so the plan stays readable."""
    return [_VECTOR_LITERAL.sub("'[...query vector...]'", line) for line in plan]


def execution_ms(plan: Sequence[str]) -> float:
    """Server-side execution time reported by EXPLAIN ANALYZE."""
    for line in plan:
        match = re.search(r"Execution Time: ([\d.]+) ms", line)
        if match:
            return float(match.group(1))
    return float("nan")


async def server_time_ms(
    engine: AsyncEngine,
    sessions: SessionFactory,
    *,
    tenant_id: uuid.UUID,
    queries: FloatArray,
    exact_scan: bool = False,
) -> float:
    """Median server-side execution time over `queries` (EXPLAIN ANALYZE, timing off)."""
    times = []
    for qi in range(queries.shape[0]):
        plan = await explain_production(
            engine, sessions, tenant_id=tenant_id, query=queries[qi], exact_scan=exact_scan
        )
        times.append(execution_ms(plan))
    return median(times)


def plan_access(plan: Sequence[str]) -> str:
    """A short name for how the plan reads `chunks`."""
    joined = "\n".join(plan)
    if HNSW_INDEX in joined:
        return "HNSW index scan"
    if "Seq Scan" in joined:
        return "seq scan + sort (exact)"
    match = re.search(r"(Bitmap Heap Scan|Index Scan|Index Only Scan) .*?using (\w+)", joined)
    if match:
        return f"{match.group(1)} on {match.group(2)} + sort (exact)"
    if "Bitmap Heap Scan" in joined:
        return "bitmap scan + sort (exact)"
    return "other"


# --- main ----------------------------------------------------------------------------------


async def search_phase(
    url: str, data: Dataset, tenant_id: uuid.UUID, args: argparse.Namespace
) -> dict[str, Any]:
    engine = create_engine(url, pool_size=2)
    sessions = session_factory(engine)
    row_of_id = {chunk_id: i for i, chunk_id in enumerate(data.ids)}
    summary: dict[str, Any] = {}
    try:
        started = time.perf_counter()
        truth = exact_top_k(data.vectors, data.queries, K)
        numpy_ms = (time.perf_counter() - started) * 1000 / data.queries.shape[0]
        report(
            f"exact top-{K} in numpy (brute force, all {data.vectors.shape[0]} rows):"
            f" {numpy_ms:.2f} ms/query amortised over a {data.queries.shape[0]}-query batch"
        )
        summary["numpy_exact_ms_per_query"] = round(numpy_ms, 3)

        # Warm the connection pool, the planner and the index pages before any timing.
        warm = data.queries[: min(20, data.queries.shape[0])]
        await run_queries(
            sessions,
            label="warm-up",
            tenant_id=tenant_id,
            queries=warm,
            truth=truth[: warm.shape[0]],
            row_of_id=row_of_id,
        )

        ef_default = search_module.EF_SEARCH
        mode_default = production_iterative_mode()
        report()
        report(
            f"production path: reelflow.search.vectors.search_chunks (ef_search={ef_default},"
            f" iterative_scan={mode_default}), tenant-scoped, k={K},"
            f" {data.queries.shape[0]} queries, one transaction per query"
        )
        production = await run_queries(
            sessions,
            label=f"HNSW production (ef_search={ef_default})",
            tenant_id=tenant_id,
            queries=data.queries,
            truth=truth,
            row_of_id=row_of_id,
        )
        report(production.line())
        exact = await run_queries(
            sessions,
            label="exact scan in Postgres (enable_indexscan=off)",
            tenant_id=tenant_id,
            queries=data.queries,
            truth=truth,
            row_of_id=row_of_id,
            exact_scan=True,
        )
        report(exact.line())
        report(
            f"  (exact-scan recall vs numpy is {exact.recall:.4f}: below 1.0000 only through"
            " float ties)"
        )
        exact_plan = await explain_production(
            engine, sessions, tenant_id=tenant_id, query=data.queries[0], exact_scan=True
        )
        report(f"  exact-scan plan: {plan_access(exact_plan)}")
        sample = data.queries[: args.server_time_queries]
        hnsw_server = await server_time_ms(engine, sessions, tenant_id=tenant_id, queries=sample)
        exact_server = await server_time_ms(
            engine, sessions, tenant_id=tenant_id, queries=sample, exact_scan=True
        )
        report(
            f"  server-side execution (EXPLAIN ANALYZE, median of {sample.shape[0]}):"
            f" HNSW {hnsw_server:.2f} ms, exact scan {exact_server:.2f} ms; the rest of the"
            " HNSW latency is the round trips (pool ping, tune, select, commit) and SQLAlchemy"
        )
        summary["exact_scan_access"] = plan_access(exact_plan)
        summary["server_ms_median"] = {
            "hnsw": round(hnsw_server, 3),
            "exact_scan": round(exact_server, 3),
        }
        ratio = production.p95 / exact.p95 if exact.p95 else float("nan")
        report(
            f"ratio HNSW p95 / exact-scan p95: {ratio:.3f}"
            f" ({exact.p95 / production.p95:.1f}x faster than the exact scan)"
        )
        report(
            f"target recall@{K} >= {RECALL_TARGET}: {production.recall:.4f}"
            f" -> {verdict(production.recall >= RECALL_TARGET)}"
        )
        report(
            f"target p95 <= {P95_TARGET_MS:.0f} ms: {production.p95:.2f} ms"
            f" -> {verdict(production.p95 <= P95_TARGET_MS)}"
        )
        summary["production"] = {
            "ef_search": ef_default,
            "iterative_scan": mode_default,
            **production.as_dict(),
            "recall_target": RECALL_TARGET,
            "recall_met": production.recall >= RECALL_TARGET,
            "p95_target_ms": P95_TARGET_MS,
            "p95_met": production.p95 <= P95_TARGET_MS,
        }
        summary["exact_scan"] = exact.as_dict()
        summary["ratio_hnsw_p95_to_exact_p95"] = round(ratio, 4)

        report()
        report("ef_search sweep (production path, only EF_SEARCH varied):")
        sweep: dict[str, Any] = {}
        for ef in args.ef_sweep:
            with search_knobs(ef_search=ef):
                stats = await run_queries(
                    sessions,
                    label=f"  ef_search={ef}",
                    tenant_id=tenant_id,
                    queries=data.queries,
                    truth=truth,
                    row_of_id=row_of_id,
                )
                server_ms = await server_time_ms(
                    engine,
                    sessions,
                    tenant_id=tenant_id,
                    queries=data.queries[: args.server_time_queries],
                )
            report(
                stats.line()
                + f" | server {server_ms:5.2f} ms"
                + f" | recall {verdict(stats.recall >= RECALL_TARGET)}"
                + f" | p95 {verdict(stats.p95 <= P95_TARGET_MS)}"
            )
            sweep[str(ef)] = {**stats.as_dict(), "server_ms_median": round(server_ms, 3)}
        summary["ef_sweep"] = sweep

        report()
        report("EXPLAIN ANALYZE of the production statement (tenant-scoped):")
        plan = await explain_production(
            engine, sessions, tenant_id=tenant_id, query=data.queries[0]
        )
        for line in plan:
            report(f"  | {line}")
        summary["explain_tenant_scoped"] = plan
        summary["tenant_scoped_access"] = plan_access(plan)
        report(f"  -> {plan_access(plan)}")

        summary["filtered"] = await filtered_phase(
            engine, sessions, data, tenant_id, truth_for=row_of_id, args=args
        )
    finally:
        await engine.dispose()
    return summary


async def filtered_phase(
    engine: AsyncEngine,
    sessions: SessionFactory,
    data: Dataset,
    tenant_id: uuid.UUID,
    *,
    truth_for: dict[uuid.UUID, int],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Video-scoped searches: a selective WHERE clause on top of the HNSW scan.

    The HNSW scan yields ef_search candidates and the filter then drops those of other
    videos; without iterative scans the query can return fewer than k rows. A small tenant
    in a shared table is the same situation with `tenant_id` as the filter.
    """
    efs = list(dict.fromkeys(args.filter_ef or [search_module.EF_SEARCH, max(args.ef_sweep)]))
    report()
    report(
        f"video-scoped searches ({args.filter_queries} queries each), by ef_search and"
        " hnsw.iterative_scan mode:"
    )
    video_ids = await video_ids_by_index(sessions, tenant_id, data)
    queries = data.queries[: args.filter_queries]
    # Each video alone (`GET /v1/search?video_id=`), then the two small ones as a list (a chat
    # scope of several videos): the same function, filtering `video_id IN (...)`.
    scopes: list[tuple[str, tuple[int, ...]]] = [
        (f"video {i}", (i,)) for i in range(len(video_ids))
    ]
    scopes.append(("videos 2+3 (a list, as chat scopes it)", (2, 3)))
    results: dict[str, Any] = {}
    for label, members in scopes:
        rows = np.flatnonzero(np.isin(data.video_of_row, members))
        share = rows.size / data.vectors.shape[0]
        local_truth = exact_top_k(data.vectors[rows], queries, K)
        truth = rows[local_truth]
        scope = tuple(video_ids[i] for i in members)
        report(f"  {label}: {rows.size} rows ({share:.1%} of the table)")
        per_mode: dict[str, Any] = {}
        for ef in efs:
            for mode in ITERATIVE_MODES:
                with search_knobs(ef_search=ef, iterative_scan=mode):
                    plan = await explain_production(
                        engine, sessions, tenant_id=tenant_id, query=queries[0], video_ids=scope
                    )
                    stats = await run_queries(
                        sessions,
                        label=f"    ef_search={ef} iterative_scan={mode}",
                        tenant_id=tenant_id,
                        queries=queries,
                        truth=truth,
                        row_of_id=truth_for,
                        video_ids=scope,
                    )
                access = plan_access(plan)
                report(f"{stats.line()} | plan: {access}")
                per_mode[f"ef{ef}_{mode}"] = {**stats.as_dict(), "access": access}
                if args.verbose_plans:
                    for line in plan:
                        report(f"      | {line}")
        key = "video_" + "_".join(str(i) for i in members)
        results[key] = {"rows": int(rows.size), "share": share, "modes": per_mode}
    return results


# --- hybrid search -------------------------------------------------------------------------


async def timed_search(
    sessions: SessionFactory,
    *,
    tenant_id: uuid.UUID,
    query: str,
    vector: Sequence[float] | None,
    mode: str,
    k: int = K,
) -> tuple[float, list[uuid.UUID], int]:
    """One search as `GET /v1/search` runs it, in its own transaction: (ms, ids, text hits)."""
    started = time.perf_counter()
    async with sessions.begin() as session:
        hits = await find_chunks(
            session,
            tenant_id=tenant_id,
            query=query,
            query_vector=vector,
            k=k,
            embedding_model=MODEL,
            mode=mode,  # type: ignore[arg-type]
        )
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, [h.chunk_id for h in hits], sum(h.text_rank is not None for h in hits)


async def hybrid_phase(
    url: str, data: Dataset, tenant_id: uuid.UUID, args: argparse.Namespace
) -> dict[str, Any]:
    """Hybrid latency against vector-only on the same table and queries, then exact terms."""
    engine = create_engine(url, pool_size=2)
    sessions = session_factory(engine)
    summary: dict[str, Any] = {}
    try:
        n = min(args.hybrid_queries, data.queries.shape[0])
        rng = np.random.default_rng(args.seed + 1)
        long_queries = zipf_texts(rng, english_vocabulary(), n, 10)
        report()
        report(
            f"hybrid search (reelflow.search.hybrid.find_chunks) at {data.vectors.shape[0]} chunks,"
            f" k={K}, {n} queries; modes interleaved per query so they share the machine's load"
        )
        for label, texts in (
            ("4-word queries", data.query_texts[:n]),
            ("10-word queries", long_queries),
        ):
            for qi in range(min(20, n)):  # warm-up
                for mode in ("vector", "hybrid"):
                    await timed_search(
                        sessions,
                        tenant_id=tenant_id,
                        query=texts[qi],
                        vector=data.queries[qi].tolist(),
                        mode=mode,
                    )
            latencies: dict[str, list[float]] = {"vector": [], "text": [], "hybrid": []}
            text_hits = 0
            for qi in range(n):
                for mode in ("vector", "text", "hybrid"):
                    ms, _, matched = await timed_search(
                        sessions,
                        tenant_id=tenant_id,
                        query=texts[qi],
                        vector=data.queries[qi].tolist(),
                        mode=mode,
                    )
                    latencies[mode].append(ms)
                    if mode == "text":
                        text_hits += matched
            p95 = {mode: percentile(values, 95) for mode, values in latencies.items()}
            p50 = {mode: percentile(values, 50) for mode, values in latencies.items()}
            ratio = p95["hybrid"] / p95["vector"] if p95["vector"] else float("nan")
            report(
                f"  {label}: p50/p95 ms vector {p50['vector']:.2f}/{p95['vector']:.2f},"
                f" text {p50['text']:.2f}/{p95['text']:.2f},"
                f" hybrid {p50['hybrid']:.2f}/{p95['hybrid']:.2f};"
                f" hybrid p95 / vector p95 = {ratio:.2f};"
                f" text rows per query {text_hits / n:.1f}"
            )
            report(
                f"  target hybrid p95 <= {HYBRID_P95_TARGET_MS:.0f} ms: {p95['hybrid']:.2f} ms"
                f" -> {verdict(p95['hybrid'] <= HYBRID_P95_TARGET_MS)}"
            )
            summary[label.replace(" ", "_").replace("-", "_")] = {
                "p50_ms": {m: round(v, 3) for m, v in p50.items()},
                "p95_ms": {m: round(v, 3) for m, v in p95.items()},
                "ratio_hybrid_p95_to_vector_p95": round(ratio, 3),
                "text_rows_per_query": round(text_hits / n, 2),
                "p95_target_ms": HYBRID_P95_TARGET_MS,
                "p95_met": p95["hybrid"] <= HYBRID_P95_TARGET_MS,
            }
        summary["exact_terms"] = await exact_term_phase(sessions, args)
    finally:
        await engine.dispose()
    return summary


FILLER = (
    "Customers love our weekend workshops on sanding, staining and finishing furniture.",
    "Always wear eye protection and gloves when you cut metal or sand painted surfaces.",
    "A sharp blade is safer than a dull one because it needs less force to cut.",
    "We test every cordless tool on a full day of work before it goes into the catalogue.",
    "Batteries last longer when you store them half charged in a cool dry room.",
    "The delivery vans leave the warehouse at six every morning except on Sundays.",
    "Most of our staff worked on building sites for years before they joined the shop.",
    "Ask at the counter if you need a ladder, a scaffold tower or a cement mixer.",
    "Our return policy gives you thirty days to bring back anything that does not fit.",
    "Good clamps make a better joint than expensive glue, so buy them before anything else.",
    "The paint section mixes any colour while you wait, in tins from half a litre up.",
    "In winter we stock heaters, de-icer and snow shovels near the main entrance.",
    "Measure twice and cut once, especially when the timber is expensive hardwood.",
    "Our apprentices learn to sharpen chisels on water stones in their first week.",
    "Hang heavy shelves on wall plugs that match the wall, brick or plasterboard.",
    "The garden department sells hoses, sprinklers and raised beds all year round.",
)
_SYLLABLES = (
    *("quill", "thistle", "bracken", "marrow", "pember", "wren", "ash", "fox", "holly"),
    *("birch", "alder", "elm", "rook", "lark", "mere", "dun", "thorn", "brook", "stan"),
    *("wick", "ford", "hurst", "ley", "combe", "gate", "field", "more", "dale", "wood"),
)
_STREET_KINDS = ("Lane", "Road", "Street", "Avenue", "Close")


def exact_term_corpus(
    rng: np.random.Generator, per_kind: int
) -> tuple[list[str], list[tuple[int, str, str]]]:
    """Passages (six everyday sentences and at most one fact) and, per fact, its passage
    index, the term alone and a short question naming it."""
    codes = sorted(
        {
            f"{a}{b}-{rng.integers(1000, 10000)}"
            for a, b in zip(
                rng.choice(list("BKMQRTXZ"), 4 * per_kind),
                rng.choice(list("FJKLPVW"), 4 * per_kind),
                strict=True,
            )
        }
    )
    codes = [str(c) for c in rng.permutation(codes)[:per_kind]]
    years = [int(y) for y in rng.choice(np.arange(1900, 2026), size=per_kind, replace=False)]
    streets: list[str] = []
    while len(streets) < per_kind:
        a, b = rng.choice(_SYLLABLES, 2, replace=False)
        name = f"{str(a).capitalize()}{b} {_STREET_KINDS[int(rng.integers(len(_STREET_KINDS)))]}"
        if name not in streets:
            streets.append(name)
    facts: list[tuple[str, str, str]] = []
    facts += [
        (f"The {c} impact driver is the model our roofers prefer.", c, f"which driver is the {c}")
        for c in codes
    ]
    facts += [
        (f"The shop ran its first winter sale in {y}.", str(y), f"winter sale in {y}")
        for y in years
    ]
    facts += [
        (f"Our next store opens on {s}, beside the bakery.", s, f"the store on {s}")
        for s in streets
    ]
    passages: list[str] = []
    asked: list[tuple[int, str, str]] = []
    for fact, term, question in facts:
        sentences = [str(x) for x in rng.choice(FILLER, 6, replace=False)]
        sentences.insert(int(rng.integers(7)), fact)
        asked.append((len(passages), term, question))
        passages.append(" ".join(sentences))
    for _ in range(len(facts)):  # as many passages with no fact at all
        passages.append(" ".join(str(x) for x in rng.choice(FILLER, 7, replace=False)))
    return passages, asked


async def exact_term_phase(sessions: SessionFactory, args: argparse.Namespace) -> dict[str, Any]:
    """Recall of exact terms (code, year, street) by vector and hybrid, real MiniLM vectors."""
    rng = np.random.default_rng(args.seed + 2)
    passages, asked = exact_term_corpus(rng, args.exact_facts)
    embedder = LocalMiniLMEmbedder()
    started = time.perf_counter()
    vectors = embedder.embed(passages).vectors
    embed_s = time.perf_counter() - started
    tenant_id, video_id = uuid.uuid4(), uuid.uuid4()
    ids = [uuid.uuid4() for _ in passages]
    async with sessions.begin() as session:
        await session.execute(
            text("INSERT INTO tenants (id, name, plan) VALUES (:t, 'exact', 'pro')"),
            {"t": tenant_id},
        )
        await session.execute(
            text(
                "INSERT INTO videos (id, tenant_id, title, origin, source_key, status, stage,"
                " progress, cost_usd, chunk_count, embedding_model) VALUES (:v, :t, 'shop',"
                " 'upload', 'k', 'completed', 'completed', 1.0, 0, :n, :m)"
            ),
            {"v": video_id, "t": tenant_id, "n": len(passages), "m": MODEL},
        )
        session.add_all(
            Chunk(
                id=ids[i],
                tenant_id=tenant_id,
                video_id=video_id,
                chunk_index=i,
                start_s=i * 40.0,
                end_s=i * 40.0 + 40.0,
                text=passage,
                word_count=len(passage.split()),
                embedding_model=MODEL,
                embedding=vectors[i].tolist(),
            )
            for i, passage in enumerate(passages)
        )
    report()
    report(
        f"exact-term recall: {len(passages)} passages of a second tenant in the same table,"
        f" embedded with {MODEL} ({embed_s:.1f} s); {len(asked)} facts"
        f" ({args.exact_facts} product codes, years and street names each), asked by the term"
        " alone and as a short question"
    )
    results: dict[str, Any] = {}
    for form in ("term", "question"):
        queries = [term if form == "term" else question for _, term, question in asked]
        query_vectors = embedder.embed(queries).vectors
        for mode in ("vector", "hybrid"):
            at1 = at10 = 0
            for (row, _, _), query, vector in zip(asked, queries, query_vectors, strict=True):
                _, found, _ = await timed_search(
                    sessions, tenant_id=tenant_id, query=query, vector=vector.tolist(), mode=mode
                )
                at1 += bool(found[:1] == [ids[row]])
                at10 += ids[row] in found
            r1, r10 = at1 / len(asked), at10 / len(asked)
            report(f"  {form:<8} {mode:<6}: recall@1 {r1:.3f}, recall@{K} {r10:.3f}")
            results[f"{form}_{mode}"] = {"recall_at_1": round(r1, 4), "recall_at_10": round(r10, 4)}
    return results


async def video_ids_by_index(
    sessions: SessionFactory, tenant_id: uuid.UUID, data: Dataset
) -> list[uuid.UUID]:
    """The loaded videos in VIDEO_SHARES order (titles carry the index)."""
    async with sessions() as session:
        result = await session.execute(
            text("SELECT id, title FROM videos WHERE tenant_id = :t"), {"t": tenant_id}
        )
        by_title = {str(title): vid for vid, title in result}
    return [by_title[f"bench video {i}"] for i in range(len(VIDEO_SHARES))]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000, help="vectors in the table")
    parser.add_argument("--queries", type=int, default=200, help="held-out query vectors")
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument(
        "--noise",
        type=float,
        default=0.8,
        help="norm of the Gaussian noise around a cluster centre (centre has norm 1)",
    )
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--ef-sweep", type=int, nargs="+", default=[40, 64, 100, 200])
    parser.add_argument(
        "--filter-queries", type=int, default=50, help="queries per video-scoped run"
    )
    parser.add_argument(
        "--maintenance-work-mem",
        default="1GB",
        help="for the index build; below ~250MB the 100k graph spills and the build crawls",
    )
    parser.add_argument(
        "--filter-ef",
        type=int,
        nargs="+",
        default=None,
        help="ef_search values for the video-scoped runs (default: production and sweep max)",
    )
    parser.add_argument(
        "--server-time-queries",
        type=int,
        default=30,
        help="queries per EXPLAIN ANALYZE server-time median",
    )
    parser.add_argument(
        "--words-per-chunk", type=int, default=120, help="words of synthetic text per chunk"
    )
    parser.add_argument(
        "--hybrid-queries", type=int, default=200, help="queries per hybrid latency run"
    )
    parser.add_argument(
        "--exact-facts",
        type=int,
        default=60,
        help="facts per kind (codes, years, streets) in the MiniLM exact-term corpus",
    )
    parser.add_argument("--verbose-plans", action="store_true", help="print every plan")
    parser.add_argument("--json", type=Path, default=None, help="also write a JSON summary")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    host = machine()
    report(host.line())
    report(
        f"dataset: {args.rows} rows + {args.queries} held-out queries, {EMBEDDING_DIMENSIONS}-d"
        f" unit vectors, {args.clusters} Gaussian clusters, noise {args.noise}, seed {args.seed}"
    )
    started = time.perf_counter()
    data = make_dataset(
        args.rows, args.queries, args.clusters, args.noise, args.seed, args.words_per_chunk
    )
    report(f"generated in {time.perf_counter() - started:.1f} s")
    summary: dict[str, Any] = {
        "benchmark": "vector_search",
        "machine": host.as_dict(),
        "dataset": {
            "rows": args.rows,
            "queries": args.queries,
            "clusters": args.clusters,
            "noise": args.noise,
            "seed": args.seed,
            "video_shares": list(VIDEO_SHARES),
        },
    }
    with throwaway_postgres("reelflow_vector_bench") as server:
        upgrade_database(server.url)
        stats, tenant_id = load(libpq_url(server.url), data, args.maintenance_work_mem)
        report(
            "server: "
            + ", ".join(f"{name}={value}" for name, value in sorted(stats.server.items()))
        )
        report(f"COPY {args.rows} rows into chunks: {stats.copy_s:.1f} s")
        report(f"index: {stats.index_def}")
        report(
            f"HNSW index build: {stats.index_build_s:.1f} s"
            f" ({args.rows / stats.index_build_s:.0f} rows/s); index {stats.index_mb:.0f} MB,"
            f" chunks table with indexes {stats.table_mb:.0f} MB"
        )
        report(
            f"full-text GIN index build: {stats.gin_build_s:.1f} s"
            f" (search_vector generated during the COPY)"
        )
        for notice in stats.build_notices:
            report(f"  notice during load/build: {notice}")
        summary["load"] = {
            "copy_s": round(stats.copy_s, 2),
            "analyze_s": round(stats.analyze_s, 2),
            "index_build_s": round(stats.index_build_s, 2),
            "gin_build_s": round(stats.gin_build_s, 2),
            "index_mb": round(stats.index_mb, 1),
            "table_mb": round(stats.table_mb, 1),
            "index_def": stats.index_def,
            "notices": stats.build_notices,
            "server": stats.server,
        }
        summary.update(asyncio.run(search_phase(server.url, data, tenant_id, args)))
        summary["hybrid"] = asyncio.run(hybrid_phase(server.url, data, tenant_id, args))
    write_json(args.json, summary)


if __name__ == "__main__":
    main()
