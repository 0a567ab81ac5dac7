"""Tables: Improvement runs and video version links (migration `0010`).

Declared on `schemas.tables.Base`, which imports this module at its end.
"""

from __future__ import annotations

from schemas.tables import Base as Base
