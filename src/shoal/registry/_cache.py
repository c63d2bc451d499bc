"""The endpoint cache a client keeps from a registry watch. No I/O here.

Expiry is computed on read from an injected monotonic clock: an entry is live
for ``record.ttl`` seconds after the last time it was written. While the watch
is disconnected the cache is *frozen*: time stops for expiry, so a client keeps
serving from its last known endpoints until the backbone is back (static
stability), then a fresh snapshot replaces everything. Entries that were live
when the cache froze get one more TTL of grace after the thaw unless the new
snapshot deletes them, because instances re-heartbeat only once they have
reconnected themselves, which may be just after this client.
"""

from __future__ import annotations

import asyncio
import time

from shoal.registry._records import Delete, InstanceRecord, Put, RegistryUpdate, Synced
from shoal.types import Clock

__all__ = ["EndpointCache"]


class EndpointCache:
    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        # service -> instance -> (record, expires_at)
        self._live: dict[str, dict[str, tuple[InstanceRecord, float]]] = {}
        self._staging: dict[str, dict[str, tuple[InstanceRecord, float]]] | None = None
        self._staged_deletes: set[tuple[str, str]] = set()
        self._frozen_at: float | None = None
        self._changed = asyncio.Event()
        self.generation = 0
        """Bumps on every change that a reader could observe (not on expiry)."""
        self.synced = False

    # -- writing (from the watch) --------------------------------------------

    def begin_sync(self) -> None:
        """A new watch starts: collect its snapshot aside until ``Synced``."""
        self._staging = {}
        self._staged_deletes = set()

    def apply(self, update: RegistryUpdate) -> None:
        target = self._staging if self._staging is not None else self._live
        if isinstance(update, Put):
            rec = update.record
            expires = self._clock() + max(rec.ttl - max(update.age, 0.0), 0.0)
            target.setdefault(rec.service, {})[rec.instance] = (rec, expires)
        elif isinstance(update, Delete):
            if self._staging is not None:
                self._staged_deletes.add((update.service, update.instance))
            instances = target.get(update.service)
            if instances is not None:
                instances.pop(update.instance, None)
                if not instances:
                    del target[update.service]
        elif isinstance(update, Synced):
            if self._staging is not None:
                if self._frozen_at is not None:
                    self._carry_over(self._staging)
                self._live, self._staging = self._staging, None
            self._frozen_at = None
            self.synced = True
        self._notify()

    def _carry_over(self, fresh: dict[str, dict[str, tuple[InstanceRecord, float]]]) -> None:
        """Give entries live at the freeze one TTL of grace past the thaw."""
        frozen_at = self._frozen_at if self._frozen_at is not None else self._clock()
        now = self._clock()
        for service, entries in self._live.items():
            for instance, (rec, expires) in entries.items():
                if expires <= frozen_at or (service, instance) in self._staged_deletes:
                    continue
                target = fresh.setdefault(service, {})
                current = target.get(instance)
                grace = now + rec.ttl
                if current is None or current[1] < grace:
                    target[instance] = (current[0] if current else rec, grace)

    def freeze(self) -> None:
        """The watch is lost: stop expiring entries until the next snapshot."""
        if self._frozen_at is None:
            self._frozen_at = self._clock()
        self._staging = None

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    # -- reading -------------------------------------------------------------

    def _now(self) -> float:
        return self._frozen_at if self._frozen_at is not None else self._clock()

    def instances(self, service: str) -> list[InstanceRecord]:
        """Every unexpired instance of ``service`` in any state."""
        entries = self._live.get(service)
        if not entries:
            return []
        now = self._now()
        return [rec for rec, expires in entries.values() if expires > now]

    def ready(self, service: str) -> list[InstanceRecord]:
        """Unexpired instances of ``service`` that take traffic."""
        return [rec for rec in self.instances(service) if rec.state == "ready"]

    def services(self) -> list[str]:
        return sorted(s for s in self._live if self.instances(s))

    def change_event(self) -> asyncio.Event:
        """An event set at the next change (a new snapshot, a put or a delete).

        Take it *before* checking the state you wait on, so no change slips between.
        """
        return self._changed

    def _notify(self) -> None:
        self.generation += 1
        self._changed.set()
        self._changed = asyncio.Event()
