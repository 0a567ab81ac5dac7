"""Request rate limits per API key, shared by every API process through Postgres.

A fixed 10-second window per key, counted by one statement per request: an upsert on the
key's single `rate_limit_windows` row that either adds one to the current window or moves
the row to the new window with a count of one, and returns the count and the time left.
Postgres's row lock serializes the processes counting the same key, and its clock is the
only one consulted, so API hosts with skewed clocks agree on the windows. A key can never
get more than its limit accepted within one window (at most twice the limit across a
window boundary, the usual price of fixed windows).

The limit itself comes from the tenant's plan (`api.deps.limits_for`); this module, like
all of `reelflow.core`, knows no plans.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from reelflow.core.settings import Settings

WINDOW_S = 10
"""Plans state their request limits per 10 seconds (seed 003: 10 per 10 s on the free tier)."""


def rate_limits_on(settings: Settings) -> bool:
    """Whether requests are limited: `RATE_LIMITS_ENABLED`, or on outside the test environment."""
    if settings.rate_limits_enabled is not None:
        return settings.rate_limits_enabled
    return settings.environment != "test"


@dataclass(frozen=True)
class RateDecision:
    """One request counted against its key's window."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    """Whole seconds until the window ends (at least 1): `Retry-After` when refused."""

    def headers(self) -> dict[str, str]:
        """The IETF draft's `RateLimit-*` fields, plus `Retry-After` on a refusal."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_s)
        return headers


# `synchronous_commit` off for this transaction only: the commit does not wait for the WAL
# flush. A crash may forget the last few counts, which only lets a few requests more through;
# it cannot corrupt anything, and it makes counting about as cheap as the key lookup.
# GREATEST keeps the newest window when a slow request arrives with an older one, so a
# late statement never resets a window another process has already moved on.
_COUNT = text(
    """
    INSERT INTO rate_limit_windows AS w (key_id, window_start, hits)
    SELECT
        :key_id,
        to_timestamp(
            floor(extract(epoch FROM COALESCE(CAST(:now AS timestamptz), clock_timestamp()))
                  / :window) * :window),
        1
    FROM (SELECT set_config('synchronous_commit', 'off', true)) AS no_flush_wait
    ON CONFLICT (key_id) DO UPDATE SET
        hits = CASE WHEN EXCLUDED.window_start > w.window_start THEN 1 ELSE w.hits + 1 END,
        window_start = GREATEST(w.window_start, EXCLUDED.window_start)
    RETURNING hits,
        extract(epoch FROM window_start + make_interval(secs => :window)
                - COALESCE(CAST(:now AS timestamptz), clock_timestamp()))
    """
)


async def count_request(
    session: AsyncSession,
    key_id: uuid.UUID,
    *,
    limit: int,
    window_s: int = WINDOW_S,
    now: datetime | None = None,
) -> RateDecision:
    """Count one request of `key_id` and say whether it is within `limit` per window.

    Refused requests count too: a client hammering through its 429s stays refused until
    the window ends. The caller commits (the count is one statement; commit it promptly so
    other processes are not kept waiting on the row).

    Args:
        session: A session; the upsert runs in its transaction.
        key_id: The API key being counted.
        limit: Requests allowed per window.
        window_s: The window's length in seconds.
        now: The time to count at; None uses the database's clock (tests pass one).
    """
    row = (await session.execute(_COUNT, {"key_id": key_id, "window": window_s, "now": now})).one()
    hits, left = int(row[0]), float(row[1])
    return RateDecision(
        allowed=hits <= limit,
        limit=limit,
        remaining=max(0, limit - hits),
        reset_s=max(1, min(window_s, math.ceil(left))),
    )
