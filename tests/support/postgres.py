"""Databases on the test PostgreSQL server."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

from reelflow.dev.stack import POSTGRES_SUPERUSER, DevStackError, EmbeddedPostgres, ensure_database


def libpq_url(sqlalchemy_url: str) -> str:
    """``postgresql+psycopg://…`` → ``postgresql://…`` for `psycopg.connect`."""
    scheme, sep, rest = sqlalchemy_url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


def create_database(port: int, name: str, *, host: str = "127.0.0.1") -> None:
    """Create database ``name`` with the ``vector`` extension (idempotent)."""
    ensure_database(port, name, host=host)


def drop_database(port: int, name: str, *, host: str = "127.0.0.1") -> None:
    """Drop database ``name``, disconnecting anyone still connected (a leaked pool)."""
    with psycopg.connect(
        host=host, port=port, user=POSTGRES_SUPERUSER, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


TEST_CLUSTER_PREFIX = "reelflow-test-pg-"
"""Temp directories holding test clusters start with this (see `reap_orphaned_clusters`)."""
_ABANDONED_AFTER_S = 3600.0


def reap_orphaned_clusters(prefix: str = TEST_CLUSTER_PREFIX) -> list[Path]:
    """Stop and delete test clusters whose test session was killed.

    A session killed with SIGKILL (or by a crash) never tears down its fixtures, leaving a
    postmaster running in ``<tmp>/<prefix>*/data`` (or ``…/postgres`` for a stack home).
    Clusters run by a live session are left alone; so is a young directory with no
    server, which may be a session starting up.

    Returns:
        The directories removed.
    """
    removed: list[Path] = []
    for root in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        # `data` for bare clusters, `postgres` for whole EmbeddedStack homes.
        clusters = [d for d in (root / "data", root / "postgres") if d.is_dir()]
        stopped = False
        try:
            for cluster in clusters:
                stopped = EmbeddedPostgres(cluster, _lock_port(cluster)).stop_orphan() or stopped
        except DevStackError:
            continue  # a live session's cluster
        except OSError:
            continue  # vanished or unreadable: someone else's business
        lock_gone = not any((d / "postmaster.pid").exists() for d in clusters)
        try:
            abandoned = time.time() - root.stat().st_mtime > _ABANDONED_AFTER_S
        except OSError:
            continue
        if stopped or (lock_gone and abandoned):
            shutil.rmtree(root, ignore_errors=True)
            removed.append(root)
    return removed


def _lock_port(data_dir: Path) -> int:
    # postmaster.pid line 4 is the port; only used to locate the socket directory.
    try:
        return int(((data_dir / "postmaster.pid").read_text().splitlines() + [""] * 4)[3])
    except (OSError, ValueError):
        return 5432
