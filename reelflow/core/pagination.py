"""Keyset pages, newest first: the one order every list of the product pages in.

Lists order by `(created_at, id)` descending; the id breaks ties, so rows created in the
same microsecond are neither skipped nor repeated. A page is fetched as `limit + 1` rows so
the caller knows whether another follows without counting. The API signs the key of the
last row into an opaque cursor (`api/pagination.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import ColumnElement, Select, literal, tuple_
from sqlalchemy.orm import QueryableAttribute

T = TypeVar("T")
Row = TypeVar("Row")
Column = ColumnElement[T] | QueryableAttribute[T]
"""A mapped attribute (`Post.created_at`) or a column of a subquery (`runs.c.created_at`)."""
Query = TypeVar("Query", bound="Select[*tuple[Any, ...]]")


@dataclass(frozen=True)
class PageKey:
    """Where the next page starts: strictly after this `(created_at, id)`."""

    created_at: datetime
    id: uuid.UUID


class Position(Protocol):
    """What a page starts after: a row's `(created_at, id)` (`PageKey` is one)."""

    @property
    def created_at(self) -> datetime: ...

    @property
    def id(self) -> uuid.UUID: ...


def newest_first(
    query: Query,
    created_at: Column[datetime],
    row_id: Column[Any],
    *,
    after: Position | None,
    limit: int,
) -> Query:
    """`query` ordered newest first, starting after `after`, one row more than `limit`."""
    if after is not None:
        query = query.where(
            tuple_(created_at, row_id) < tuple_(literal(after.created_at), literal(after.id))
        )
    return query.order_by(created_at.desc(), row_id.desc()).limit(limit + 1)


def split_page(
    rows: Sequence[Row], limit: int, key: Callable[[Row], PageKey]
) -> tuple[list[Row], PageKey | None]:
    """The first `limit` of `rows` (fetched by `newest_first`) and the key after them."""
    page = list(rows[:limit])
    if len(rows) <= limit or not page:
        return page, None
    return page, key(page[-1])
