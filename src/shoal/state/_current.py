"""``shoal.state()``: the state store of the service this process runs.

Under `shoal up` the supervisor tells each instance its service's backend through
``SHOAL_STATE_BACKEND`` and ``SHOAL_STATE_URL`` (from ``state:`` in shoal.yaml);
``shoal serve`` by hand reads the same variables, SQLite in the app directory when
they are unset. The store opens on its first operation, so a service that never
touches its state opens nothing, and a store that cannot open (a server down) says
so on that operation and tries again on the next.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shoal.exceptions import StateError
from shoal.state._api import StateStore
from shoal.state._backend import OutboxRecord, StateBackend, Write
from shoal.state._sqlite import open_sqlite, state_file

__all__ = [
    "BACKEND_ENV",
    "URL_ENV",
    "StateTarget",
    "close_state",
    "open_state",
    "state",
    "state_opened",
]

BACKEND_ENV = "SHOAL_STATE_BACKEND"
URL_ENV = "SHOAL_STATE_URL"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class StateTarget:
    """Which store: the service's namespace and its engine (``url`` unexpanded)."""

    app: str
    service: str
    app_dir: Path
    backend: str = "sqlite"
    url: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StateTarget:
        env = os.environ if env is None else env
        service = env.get("SHOAL_SERVICE", "")
        if not service:
            raise StateError(
                "shoal.state() needs to know which service this is: run the app under "
                "`shoal up` or `shoal serve`, or set SHOAL_SERVICE (and SHOAL_APP_DIR)"
            )
        backend = env.get(BACKEND_ENV) or "sqlite"
        if backend not in ("sqlite", "postgres", "redis"):
            raise StateError(f"{BACKEND_ENV} must be sqlite, postgres or redis, got {backend!r}")
        app_dir = Path(env.get("SHOAL_APP_DIR") or os.getcwd())
        app = env.get("SHOAL_APP") or "default"
        return cls(app, service, app_dir, backend, env.get(URL_ENV, ""))

    def may_hold_data(self) -> bool:
        """Whether the store may hold anything yet (without opening it): an SQLite file
        exists only once the service has used its state."""
        return self.backend != "sqlite" or state_file(self.app_dir, self.service).exists()

    def expanded_url(self, env: Mapping[str, str] | None = None) -> str:
        """``url`` with each ``${NAME}`` replaced from the environment."""
        env = os.environ if env is None else env

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise StateError(
                    f"service {self.service!r}: the {self.backend} state url names ${{{name}}}, "
                    f"which is not set in this instance's environment; set {name} (e.g. in "
                    "the environment `shoal up` runs in, or the service's `env:`)"
                )
            return env[name]

        return _VAR.sub(value, self.url)


async def open_state(target: StateTarget) -> StateStore:
    """Open the store ``target`` names (what ``shoal.state()`` does on first use)."""
    if target.backend == "postgres":  # the drivers are imported only by the services using them
        from shoal.state._postgres import open_postgres

        return await open_postgres(target.expanded_url(), target.app, target.service)
    if target.backend == "redis":
        from shoal.state._redis import open_redis

        return await open_redis(target.expanded_url(), target.app, target.service)
    return await open_sqlite(target.app_dir, target.service)


class _LazyBackend:
    """A backend that opens the real one on the first operation."""

    def __init__(self, target: StateTarget) -> None:
        self.target = target
        self.name = target.backend
        self.where = f"the state store of {target.service!r} ({target.backend}, not yet opened)"
        self._real: StateBackend | None = None
        self._lock: asyncio.Lock | None = None
        self._closed = False

    @property
    def opened(self) -> bool:
        return self._real is not None

    async def _backend(self) -> StateBackend:
        if self._real is not None:
            return self._real
        if self._closed:
            raise StateError(f"{self.where} is closed (the instance is stopping)")
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._real is None:
                self._real = (await open_state(self.target)).backend
                self.where = self._real.where
        return self._real

    async def get(self, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
        return await (await self._backend()).get(keys)

    async def list(self, prefix: str, limit: int) -> builtins.list[tuple[str, str]]:
        return await (await self._backend()).list(prefix, limit)

    async def commit(
        self, writes: Sequence[Write], outbox: Sequence[OutboxRecord] = ()
    ) -> builtins.list[bool]:
        return await (await self._backend()).commit(writes, outbox)

    async def outbox_pending(self, limit: int) -> builtins.list[OutboxRecord]:
        return await (await self._backend()).outbox_pending(limit)

    async def outbox_remove(self, ids: Sequence[str]) -> None:
        await (await self._backend()).outbox_remove(ids)

    async def aclose(self) -> None:
        self._closed = True
        real, self._real = self._real, None
        if real is not None:
            await real.aclose()


_store: StateStore | None = None


def state() -> StateStore:
    """The state store of this process's service: its own keys, no other service's.

    ``store = shoal.state()`` anywhere in a service; the backend is the one ``state:``
    in shoal.yaml names (SQLite by default). The store opens on first use; the
    runtime closes it when the instance stops. Raises StateError outside a service.
    """
    global _store
    if _store is None:
        _store = StateStore(_LazyBackend(StateTarget.from_env()))
    return _store


def state_opened() -> bool:
    """Whether ``shoal.state()`` was used in this process and its store is open."""
    backend = _store.backend if _store is not None else None
    return isinstance(backend, _LazyBackend) and backend.opened


async def close_state() -> None:
    """Close the store ``shoal.state()`` handed out, if any (the runtime, at exit)."""
    global _store
    store, _store = _store, None
    if store is not None:
        await store.aclose()
