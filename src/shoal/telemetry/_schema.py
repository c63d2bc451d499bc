"""The telemetry database file: creating it owner-only, its schema, and its version.

Spans are kept as they arrived; ``traces`` and ``trace_services`` hold one summary
row per trace (and per service in it), rewritten whenever spans of that trace
arrive. Trace lists then walk a small index in time order and stop at ``limit``
instead of grouping a million spans on every dashboard refresh.

``PRAGMA user_version`` carries the schema version: 0 is a new file, a higher
version than :data:`SCHEMA_VERSION` was written by a newer shoal and is left alone,
a lower one is brought up to date by the steps of :data:`_MIGRATIONS` it lacks.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from shoal.exceptions import TelemetryError

__all__ = ["SCHEMA_VERSION", "connect"]

SCHEMA_VERSION = 2

_SCHEMA = (
    """CREATE TABLE spans (
        trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_id TEXT,
        name TEXT NOT NULL, kind TEXT NOT NULL, service TEXT NOT NULL, instance TEXT NOT NULL,
        start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,
        status TEXT NOT NULL, status_message TEXT NOT NULL, attributes TEXT NOT NULL)""",
    # unique: a span delivered twice (at-least-once upstream) is stored once
    "CREATE UNIQUE INDEX spans_by_trace ON spans (trace_id, span_id)",
    """CREATE TABLE traces (
        trace_id TEXT PRIMARY KEY, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,
        span_count INTEGER NOT NULL, error_count INTEGER NOT NULL,
        root_service TEXT NOT NULL, root_name TEXT NOT NULL, services TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX traces_by_start ON traces (start_ns)",
    """CREATE TABLE trace_services (
        trace_id TEXT NOT NULL, service TEXT NOT NULL, start_ns INTEGER NOT NULL,
        PRIMARY KEY (trace_id, service)
    ) WITHOUT ROWID""",
    "CREATE INDEX trace_services_by_service ON trace_services (service, start_ns)",
    """CREATE TABLE logs (
        key INTEGER NOT NULL, time_ns INTEGER NOT NULL, service TEXT NOT NULL,
        instance TEXT NOT NULL, level INTEGER NOT NULL, message TEXT NOT NULL,
        trace_id TEXT, span_id TEXT, fields TEXT NOT NULL)""",
    # key: a hash of the whole record, so a log line delivered twice is stored once
    "CREATE UNIQUE INDEX logs_by_key ON logs (key)",
    "CREATE INDEX logs_by_time ON logs (time_ns)",
    "CREATE INDEX logs_by_service ON logs (service, time_ns)",
    "CREATE INDEX logs_by_trace ON logs (trace_id) WHERE trace_id IS NOT NULL",
    """CREATE TABLE metrics (
        name TEXT NOT NULL, service TEXT NOT NULL, time_ns INTEGER NOT NULL,
        labels TEXT NOT NULL, value REAL NOT NULL)""",
    "CREATE UNIQUE INDEX metrics_by_series ON metrics (name, service, time_ns, labels)",
    "CREATE INDEX metrics_by_time ON metrics (time_ns)",
    # services seen in spans or logs, so listing them does not scan either
    "CREATE TABLE services (name TEXT PRIMARY KEY) WITHOUT ROWID",
)

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 2: failed spans in time order (the dashboard's "recent explained failures")
    2: ("CREATE INDEX spans_failed_by_end ON spans (end_ns) WHERE status = 'error'",),
}
"""What brings a file of version ``n - 1`` to version ``n`` (a new file gets them all)."""


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if need be) the telemetry database at ``path``, schema up to date.

    The connection is in autocommit mode: the store opens its own transactions.
    """
    _create_private(path)
    try:
        conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise TelemetryError(f"{path}: cannot open the telemetry database ({exc})") from exc
    try:
        _prepare(conn, path)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise TelemetryError(
            f"{path}: not a usable telemetry database ({exc}); "
            "delete the file and shoal starts a new one (the telemetry in it is lost)"
        ) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _create_private(path: Path) -> None:
    """Telemetry holds request details: the folder and the file are the owner's alone."""
    folder = path.parent
    try:
        if not folder.is_dir():
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.chmod(0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise TelemetryError(f"{path}: cannot create the telemetry database ({exc})") from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        path.chmod(0o600)


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    version = _user_version(conn)  # the first read: a file that is not SQLite fails here
    if version > SCHEMA_VERSION:
        raise TelemetryError(
            f"{path}: telemetry schema version {version} was written by a newer shoal "
            f"(this one reads version {SCHEMA_VERSION}); upgrade shoal, or delete the "
            "file and shoal starts a new one (the telemetry in it is lost)"
        )
    # auto_vacuum only takes on a file without tables, so it comes before anything else;
    # it lets retention hand freed pages back to the file system.
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across a crash of shoal
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_size_limit = 8388608")  # a checkpointed WAL shrinks to 8 MiB
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = _user_version(conn)  # re-read: another process may have got here first
        if current == 0:
            for statement in _SCHEMA:
                conn.execute(statement)
        for step in range(max(current, 1) + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[step]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])
