"""Reading the app's logs from disk: merged by time, filtered, optionally followed."""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

from shoal.cli._app import stdout
from shoal.exceptions import ShoalError

__all__ = ["parse_since", "print_logs"]

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
