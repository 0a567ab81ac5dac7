"""Tables of plans, billing, usage periods, rate limits and API keys (migration `0008`).

Declared on `schemas.tables.Base`, which imports this module at its end.
"""

from __future__ import annotations

from schemas.tables import Base as Base
