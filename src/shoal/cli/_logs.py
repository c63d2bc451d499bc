"""Reading the app's logs from disk: merged by time, filtered, optionally followed.

Two sources, both under ``DIR/.shoal/``, both readable whether the app is up or not:
the files in ``logs/`` (every line as shown, by manifest entry, with the
supervisor's own lines) and the log records in ``telemetry.db``, which
:func:`print_records` filters by level, text and trace id.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path

from shoal.cli._app import stdout
from shoal.exceptions import ShoalError
from shoal.telemetry import LogRecord, TelemetryStore
from shoal.telemetry._records import LEVELS

__all__ = ["LogFilter", "format_record", "parse_since", "print_logs", "print_records"]

RECORDS = 1000
"""How many records (the newest that match) `shoal logs` prints from the store."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not match:
        raise ShoalError(f"--since takes a duration like 30s, 5m, 2h or 1d, got {text!r}")
    return now - dt.timedelta(seconds=float(match[1]) * _UNITS[match[2]])


def _files(logdir: Path, service: str | None) -> list[Path]:
    if not logdir.is_dir():
        raise ShoalError(f"no logs in {logdir}: has the app run here (`shoal up`)?")
    pattern = f"{service}.log" if service else "*.log"
    files = sorted(logdir.glob(pattern))
    if service and not files:
        known = ", ".join(sorted(p.stem for p in logdir.glob("*.log"))) or "none"
        raise ShoalError(f"no logs for service {service!r} (services with logs: {known})")
    return files


def print_logs(directory: Path, service: str | None, *, follow: bool, since: str | None) -> int:
    logdir = directory / ".shoal" / "logs"
    files = _files(logdir, service)
    cutoff = parse_since(since, dt.datetime.now(dt.UTC)).isoformat() if since else ""
    cutoff = cutoff.replace("+00:00", "Z")
    lines: list[str] = []
    offsets: dict[Path, int] = {}
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines.extend(line.rstrip("\n") for line in fh if line[:24] >= cutoff)
            offsets[path] = fh.tell()
    for line in sorted(lines, key=lambda text: text[:24]):  # stable: merges services by time
        stdout.print(line, markup=False, highlight=False)
    while follow:
        time.sleep(0.25)
        for path in _files(logdir, service):
            size = path.stat().st_size
            start = offsets.get(path, 0)
            if size < start:  # rotated
                start = 0
            if size > start:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    fh.seek(start)
                    for line in fh:
                        stdout.print(line.rstrip("\n"), markup=False, highlight=False)
                    offsets[path] = fh.tell()
    return 0


class LogFilter:
    """What `shoal logs` keeps of the stored records; ShoalError, naming the option, if bad."""

    def __init__(
        self,
        service: str | None = None,
        *,
        level: str | None = None,
        text: str | None = None,
        trace_id: str | None = None,
        since: str | None = None,
    ) -> None:
        self.service = service
        word = level.lower() if level else None
        if word is not None and word not in LEVELS:
            raise ShoalError(f"--level takes one of {', '.join(LEVELS)}, got {level!r}")
        self.level = word
        self.text = text or None
        self.trace_id = trace_id.lower() if trace_id else None
        if self.trace_id is not None and not re.fullmatch(r"[0-9a-f]{32}", self.trace_id):
            raise ShoalError(
                f"--trace takes a whole trace id, 32 hex digits, got {trace_id!r} "
                "(`shoal trace` lists them; `shoal logs --json` shows them in full)"
            )
        cutoff = parse_since(since, dt.datetime.now(dt.UTC)) if since else None
        self.since_ns = int(cutoff.timestamp() * 1e9) if cutoff is not None else None

    def query(self, store: TelemetryStore, since_ns: int | None, limit: int) -> list[LogRecord]:
        """The newest ``limit`` matching records at or after ``since_ns``, oldest first."""
        records = store.logs(
            service=self.service,
            level=self.level,
            text=self.text,
            trace_id=self.trace_id,
            since_ns=since_ns,
            limit=limit,
        )
        records.reverse()
        return records


def format_record(record: LogRecord) -> str:
    """``2024-05-01T12:00:00.123Z orders-1 info     order placed  trace=4bf92f35``"""
    when = dt.datetime.fromtimestamp(record.time_ns / 1e9, dt.UTC)
    stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    text = f"{stamp} {record.instance} {record.level:<8} {record.message}"
    return text + (f"  trace={record.trace_id[:8]}" if record.trace_id else "")


def print_records(directory: Path, where: LogFilter, *, follow: bool, as_json: bool) -> int:
    """Print the stored log records that match, oldest first; ``follow``: then new ones."""
    path = directory / ".shoal" / "telemetry.db"
    if not path.is_file():
        raise ShoalError(
            f"no log records in {path.parent}: has the app run here? Start it with "
            f"`shoal up {directory}` (records are kept there for 7 days)"
        )
    with TelemetryStore(path) as store:
        if where.service is not None and where.service not in store.services():
            known = ", ".join(store.services()) or "none yet"
            raise ShoalError(
                f"no log records of service {where.service!r} in {path} (services: {known})"
            )
        seen: set[tuple[object, ...]] = set()  # the records of the newest instant printed
        since_ns = where.since_ns
        while True:
            for record in where.query(store, since_ns, RECORDS):
                key = (record.time_ns, record.instance, record.message, record.span_id)
                if key in seen:  # that instant is asked for again: more may have come
                    continue
                if as_json:
                    line = json.dumps(record.model_dump(mode="json"), ensure_ascii=False)
                else:
                    line = format_record(record)
                stdout.print(line, markup=False, highlight=False)
                if since_ns is None or record.time_ns > since_ns:
                    since_ns, seen = record.time_ns, set()
                seen.add(key)
            if not follow:
                return 0
            time.sleep(0.5)
