"""Tables: API keys with names, scopes and rotation; request rate windows (migration `0011`).

Declared on `schemas.tables.Base`, which imports this module at its end.
"""

from __future__ import annotations

from schemas.tables import Base as Base
