"""The telemetry store: spans, logs and metric points of an app in one SQLite file.

It lives under ``DIR/.shoal/`` so traces and logs outlast ``shoal down``; retention
by age and by size keeps it from growing without bound. Delivery upstream is
at-least-once, so adding a record that is already stored does nothing.

The store is synchronous and not thread-safe: SQLite calls block, so the supervisor
uses :class:`~shoal.telemetry.AsyncTelemetryStore`, which runs them on one thread.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from shoal.exceptions import TelemetryError
from shoal.telemetry._queries import (
    LOG_COLUMNS,
    SPAN_COLUMNS,
    check_limit,
    contains,
    dumps,
    failures_query,
    labels_json,
    log_from_row,
    log_row,
    logs_query,
    span_from_row,
    span_row,
    summary_from_row,
    trace_query,
    traces_query,
)
from shoal.telemetry._records import LogLevel, LogRecord, MetricPoint, SpanRecord, TraceSummary
from shoal.telemetry._schema import connect
from shoal.telemetry._summary import SpanOutline, summarize

__all__ = ["TelemetryStore"]


class TelemetryStore:
    """Spans, logs and metric points persisted in the SQLite file ``path``.

    ``max_age`` (seconds) and ``max_bytes`` bound what :meth:`enforce_retention`
    keeps; ``clock`` (unix seconds) is injectable so tests need not wait a week.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_age: float = 7 * 86400,
        max_bytes: int = 256 * 2**20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_age <= 0 or max_bytes <= 0:
            raise ValueError("max_age and max_bytes must be positive")
        self.path = path
        self.max_age = max_age
        self.max_bytes = max_bytes
        self._clock = clock
        self._conn: sqlite3.Connection | None = connect(path)
        self._conn.create_function("shoal_contains", 2, contains, deterministic=True)

    # -- writing -------------------------------------------------------------------------

    def add_spans(self, spans: Sequence[SpanRecord]) -> int:
        """Store ``spans`` (one transaction); returns how many were new."""
        if not spans:
            return 0
        with self._transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                f"INSERT OR IGNORE INTO spans ({SPAN_COLUMNS}) VALUES ({_marks(12)})",
                [span_row(s) for s in spans],
            )
            added = conn.total_changes - before
            if added:
                for trace_id in sorted({s.trace_id for s in spans}):
                    _resummarize(conn, trace_id)
                _see_services(conn, {s.service for s in spans})
        return added

    def add_logs(self, logs: Sequence[LogRecord]) -> int:
        """Store ``logs`` (one transaction); returns how many were new."""
        if not logs:
            return 0
        with self._transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                f"INSERT OR IGNORE INTO logs (key, {LOG_COLUMNS}) VALUES ({_marks(9)})",
                [log_row(r) for r in logs],
            )
            added = conn.total_changes - before
            if added:
                _see_services(conn, {r.service for r in logs})
        return added

    def add_metrics(self, points: Sequence[MetricPoint]) -> int:
        """Store ``points`` (one transaction); returns how many were new.

        A point is a duplicate if its series and time are already stored.
        """
        if not points:
            return 0
        with self._transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO metrics (name, service, time_ns, labels, value) "
                "VALUES (?, ?, ?, ?, ?)",
                [(p.name, p.service, p.time_ns, labels_json(p.labels), p.value) for p in points],
            )
            return conn.total_changes - before

    # -- reading -------------------------------------------------------------------------

    def trace(self, trace_id: str) -> list[SpanRecord]:
        """Every stored span of the trace, earliest first; [] for an unknown trace."""
        with self._translated() as conn:
            rows = conn.execute(*trace_query(trace_id)).fetchall()
        return [span_from_row(row) for row in rows]

    def traces(
        self,
        *,
        service: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        errors_only: bool = False,
        min_duration_ms: float | None = None,
        limit: int = 50,
    ) -> list[TraceSummary]:
        """Summaries of the traces that started in [since_ns, until_ns), newest first.

        ``service`` keeps traces with a span of that service anywhere in them.
        """
        query = traces_query(
            service=service,
            since_ns=since_ns,
            until_ns=until_ns,
            errors_only=errors_only,
            min_duration_ms=min_duration_ms,
            limit=limit,
        )
        with self._translated() as conn:
            rows = conn.execute(*query).fetchall()
        return [summary_from_row(row) for row in rows]

    def failures(self, limit: int = 50) -> list[SpanRecord]:
        """Failed spans that carry the mesh's explanation (``shoal.reason``), newest first."""
        with self._translated() as conn:
            rows = conn.execute(*failures_query(limit)).fetchall()
        return [span_from_row(row) for row in rows]

    def logs(
        self,
        *,
        service: str | None = None,
        level: LogLevel | None = None,
        text: str | None = None,
        trace_id: str | None = None,
        since_ns: int | None = None,
        limit: int = 200,
    ) -> list[LogRecord]:
        """Log records, newest first; ``level`` is a minimum, ``text`` a substring (any case)."""
        query = logs_query(
            service=service,
            level=level,
            text=text,
            trace_id=trace_id,
            since_ns=since_ns,
            limit=limit,
        )
        with self._translated() as conn:
            rows = conn.execute(*query).fetchall()
        return [log_from_row(row) for row in rows]

    def metrics(
        self,
        name: str,
        *,
        service: str | None = None,
        since_ns: int | None = None,
        limit: int = 1000,
    ) -> list[MetricPoint]:
        """The newest ``limit`` points named ``name``, oldest first (ready to plot)."""
        check_limit(limit)
        where: list[str] = ["name = ?"]
        params: list[Any] = [name]
        if service is not None:
            where.append("service = ?")
            params.append(service)
        if since_ns is not None:
            where.append("time_ns >= ?")
            params.append(since_ns)
        sql = (
            "SELECT time_ns, name, service, labels, value FROM metrics "
            f"WHERE {' AND '.join(where)} ORDER BY time_ns DESC, labels DESC LIMIT ?"
        )
        with self._translated() as conn:
            rows = conn.execute(sql, [*params, limit]).fetchall()
        return [
            MetricPoint(time_ns=t, name=n, service=s, labels=json.loads(labels), value=v)
            for t, n, s, labels, v in reversed(rows)
        ]

    def services(self) -> list[str]:
        """The services with spans or logs in the store, sorted."""
        with self._translated() as conn:
            rows = conn.execute("SELECT name FROM services ORDER BY name").fetchall()
        return [name for (name,) in rows]

    def size_bytes(self) -> int:
        """Bytes of the file in use by data (what ``max_bytes`` bounds)."""
        with self._translated() as conn:
            return _used_bytes(conn)

    # -- retention -----------------------------------------------------------------------

    def enforce_retention(self) -> int:
        """Delete what is older than ``max_age``, then the oldest until under ``max_bytes``.

        Spans go by whole traces, so a trace is never left half shown. Returns the
        number of spans, log records and metric points deleted.
        """
        cutoff = int((self._clock() - self.max_age) * 1e9)
        with self._transaction() as conn:
            # a trace goes once its last span is older than the cutoff
            deleted = _delete_traces(
                conn, "SELECT trace_id FROM traces WHERE start_ns < ?1 AND end_ns < ?1", cutoff
            )
            deleted += conn.execute("DELETE FROM logs WHERE time_ns < ?", (cutoff,)).rowcount
            deleted += conn.execute("DELETE FROM metrics WHERE time_ns < ?", (cutoff,)).rowcount
        with self._translated() as conn:
            _vacuum(conn)
            while _used_bytes(conn) > self.max_bytes:
                with self._transaction():
                    freed = _delete_oldest_tenth(conn)
                _vacuum(conn)
                if not freed:
                    break  # nothing left to delete: the empty schema alone is over max_bytes
                deleted += freed
            if deleted:
                with self._transaction():
                    _forget_services(conn)
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # shrink on disk
        return deleted

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the file; later calls raise :class:`TelemetryError`. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA optimize")  # what SQLite asks of long-lived connections
        conn.close()

    def __enter__(self) -> TelemetryStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def _translated(self) -> Iterator[sqlite3.Connection]:
        """The connection; SQLite errors become :class:`TelemetryError` naming the file."""
        if self._conn is None:
            raise TelemetryError(f"{self.path}: the telemetry store is closed")
        try:
            yield self._conn
        except sqlite3.Error as exc:
            raise TelemetryError(f"{self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._translated() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")


# -- bookkeeping inside a transaction ------------------------------------------------------


def _resummarize(conn: sqlite3.Connection, trace_id: str) -> None:
    """Rewrite the summary rows of a trace from all of its spans stored so far."""
    rows = conn.execute(
        "SELECT span_id, parent_id, name, service, start_ns, end_ns, status "
        "FROM spans WHERE trace_id = ?",
        (trace_id,),
    ).fetchall()
    s = summarize(trace_id, (SpanOutline(*row) for row in rows))
    end_ns = max(row[5] for row in rows)
    conn.execute(
        "INSERT OR REPLACE INTO traces (trace_id, start_ns, end_ns, span_count, error_count, "
        "root_service, root_name, services) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            trace_id,
            s.start_ns,
            end_ns,
            s.span_count,
            s.error_count,
            s.root_service,
            s.root_name,
            dumps(s.services),
        ),
    )
    conn.execute("DELETE FROM trace_services WHERE trace_id = ?", (trace_id,))
    conn.executemany(
        "INSERT INTO trace_services (trace_id, service, start_ns) VALUES (?, ?, ?)",
        [(trace_id, service, s.start_ns) for service in s.services],
    )


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _see_services(conn: sqlite3.Connection, services: set[str]) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO services (name) VALUES (?)", [(s,) for s in sorted(services)]
    )


def _forget_services(conn: sqlite3.Connection) -> None:
    conn.execute(
        "DELETE FROM services WHERE NOT EXISTS "
        "(SELECT 1 FROM trace_services WHERE trace_services.service = services.name) "
        "AND NOT EXISTS (SELECT 1 FROM logs WHERE logs.service = services.name)"
    )


def _delete_traces(conn: sqlite3.Connection, select_ids: str, *params: Any) -> int:
    """Delete the traces ``select_ids`` yields, all their rows; returns spans deleted."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (trace_id TEXT PRIMARY KEY)")
    conn.execute("DELETE FROM temp.doomed")
    conn.execute(f"INSERT INTO temp.doomed (trace_id) {select_ids}", params)
    spans = conn.execute(
        "DELETE FROM spans WHERE trace_id IN (SELECT trace_id FROM temp.doomed)"
    ).rowcount
    conn.execute("DELETE FROM trace_services WHERE trace_id IN (SELECT trace_id FROM temp.doomed)")
    conn.execute("DELETE FROM traces WHERE trace_id IN (SELECT trace_id FROM temp.doomed)")
    conn.execute("DELETE FROM temp.doomed")
    return spans


def _delete_oldest_tenth(conn: sqlite3.Connection) -> int:
    """Delete the oldest tenth (at least one) of traces, log records and metric points."""
    deleted = 0
    (traces,) = conn.execute("SELECT count(*) FROM traces").fetchone()
    if traces:
        deleted += _delete_traces(
            conn,
            "SELECT trace_id FROM traces ORDER BY start_ns, trace_id LIMIT ?",
            math.ceil(traces / 10),
        )
    for table in ("logs", "metrics"):
        (rows,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        if rows:
            deleted += conn.execute(
                f"DELETE FROM {table} WHERE rowid IN "
                f"(SELECT rowid FROM {table} ORDER BY time_ns, rowid LIMIT ?)",
                (math.ceil(rows / 10),),
            ).rowcount
    return deleted


def _vacuum(conn: sqlite3.Connection) -> None:
    """Hand the pages that deletes freed back to the file system (auto_vacuum=INCREMENTAL)."""
    # Not execute(): each step of this pragma frees one page, and execute() takes one step.
    conn.executescript("PRAGMA incremental_vacuum;")


def _used_bytes(conn: sqlite3.Connection) -> int:
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (free,) = conn.execute("PRAGMA freelist_count").fetchone()
    (size,) = conn.execute("PRAGMA page_size").fetchone()
    return int((pages - free) * size)
