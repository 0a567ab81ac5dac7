"""The query plans of the vector searches a piece of code sends, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

HNSW_INDEX = "ix_chunks_embedding_hnsw"


@contextmanager
def plans_of_vector_queries(engine: AsyncEngine) -> Iterator[list[list[str]]]:
    """EXPLAIN of every vector search (``ORDER BY … <=> …``) sent through `engine` inside.

    Each is explained right after it ran, on its connection and in its transaction, so the
    settings it set for that transaction (SET LOCAL ef_search, iterative scans) are the ones
    in effect; the last line of each plan names them.
    """
    plans: list[list[str]] = []

    def explain(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if "<=>" not in statement or "ORDER BY" not in statement:
            return
        explainer = conn.connection.cursor()
        try:
            explainer.execute(f"EXPLAIN (COSTS OFF) {statement}", parameters)
            plan = [str(row[0]) for row in explainer.fetchall()]
            explainer.execute(
                "SELECT current_setting('hnsw.ef_search'), current_setting('hnsw.iterative_scan')"
            )
            ef_search, iterative = explainer.fetchone()
        finally:
            explainer.close()
        plans.append([*plan, f"ef_search={ef_search} iterative_scan={iterative}"])

    event.listen(engine.sync_engine, "after_cursor_execute", explain)
    try:
        yield plans
    finally:
        event.remove(engine.sync_engine, "after_cursor_execute", explain)


def uses_hnsw(plan: Sequence[str]) -> bool:
    """The plan reads the chunks through the HNSW index."""
    return any(f"Index Scan using {HNSW_INDEX}" in line for line in plan)
