"""Where instance output goes: a rotating file per service, the console, a tail in memory."""

from __future__ import annotations

import collections
import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["LogSink", "ServiceLog"]

MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3

ConsoleWriter = Callable[[str, str], None]
"""(instance, line) -> None: show a line on the supervisor's console."""


class ServiceLog:
    """Appends lines of one service's instances to ``logs/<service>.log``, rotating by size."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._size = self._fh.tell()

    def write(self, instance: str, line: str) -> None:
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        text = f"{stamp} {instance} {line}\n"
        if self._size + len(text) > self.max_bytes:
            self._rotate()
        self._fh.write(text)
        self._fh.flush()
        self._size += len(text)

    def _rotate(self) -> None:
        self._fh.close()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._size = 0

    def close(self) -> None:
        self._fh.close()


class LogSink:
    """All the app's instance output: files under ``DIR/.shoal/logs/``, console, last lines."""

    def __init__(
        self, directory: Path, console: ConsoleWriter | None = None, keep: int = 20
    ) -> None:
        self.directory = directory
        self.console = console
        self._files: dict[str, ServiceLog] = {}
        self._tails: dict[str, collections.deque[str]] = {}
        self._keep = keep

    def line(self, service: str, instance: str, text: str) -> None:
        log = self._files.get(service)
        if log is None:
            log = self._files[service] = ServiceLog(self.directory / f"{service}.log")
        log.write(instance, text)
        self._tails.setdefault(instance, collections.deque(maxlen=self._keep)).append(text)
        if self.console is not None:
            self.console(instance, text)

    def tail(self, instance: str) -> list[str]:
        return list(self._tails.get(instance, ()))

    def close(self) -> None:
        for log in self._files.values():
            log.close()
        self._files.clear()
