"""Run by test_fixtures_are_torn_down_on_sigterm through an inner pytest: holds the
session PostgreSQL until it is killed. Not collected on its own (no test_ prefix)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from reelflow.dev.stack import EmbeddedPostgres


def test_hold_postgres_until_terminated(postgres_server: EmbeddedPostgres) -> None:
    assert postgres_server.process is not None
    state = f"{postgres_server.process.pid} {postgres_server.data_dir.parent}"
    Path(os.environ["SIGTERM_PROBE_STATE"]).write_text(state)
    time.sleep(120)
