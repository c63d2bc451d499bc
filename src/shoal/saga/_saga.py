""":class:`Saga`: a named sequence of steps, run durably in the service's state."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from shoal.exceptions import ConcurrencyError, SagaError
from shoal.saga._driver import (
    OPEN_PREFIX,
    Driver,
    LostLease,
    Plan,
    open_key,
    record_key,
)
from shoal.saga._model import (
    SagaOutcome,
    SagaRecord,
    Step,
    check_id,
    check_name,
    jsonable,
)
from shoal.saga._registry import register
from shoal.state import StateStore
from shoal.state._current import state as service_state

__all__ = ["Saga"]

log = logging.getLogger("shoal.saga")

RESUME_CONCURRENCY = 16
OWNER = f"{os.environ.get('SHOAL_INSTANCE') or socket.gethostname()}/{os.getpid()}/" + (
    secrets.token_hex(4)
)
"""This process, as a lease owner in a saga's record: ``instance/pid/random``."""


class Saga:
    """A sequence of steps, each an action and optionally its compensation, whose
    progress is stored in the service's state so that a run survives a crash.

    ``await saga.run(saga_id, data)`` runs the steps in order; if an action raises, the
    compensations of the steps already completed run in reverse, each retried with
    backoff (``compensation_attempts`` tries, ``backoff`` seconds doubling up to
    ``max_backoff``) before the run is marked ``failed``. Only one instance drives a
    run at a time: it holds a lease of ``lease`` seconds, renewed while it works, and
    another instance takes over only once the lease has run out.

    ``store`` is the StateStore to keep progress in; by default ``shoal.state()``, the
    service's own, looked up at the first run. Sagas register themselves by name when
    created (at import, as module globals): under ``shoal serve``, each instance resumes
    the unfinished runs of every registered saga after its app has started, and sweeps
    for runs orphaned by a stopped instance every ``lease`` seconds.

    ``clock`` (wall time: leases are compared across processes) and ``sleep`` (between
    compensation attempts and while another instance holds a run) are for tests.
    """

    def __init__(
        self,
        name: str,
        steps: Iterable[Step],
        *,
        store: StateStore | None = None,
        lease: float = 15.0,
        action_attempts: int = 3,
        compensation_attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        owner: str = OWNER,
    ) -> None:
        check_name("saga", name)
        steps = list(steps)
        if not steps or not all(isinstance(s, Step) for s in steps):
            raise SagaError(f"saga {name!r}: steps must be a non-empty list of shoal.Step")
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise SagaError(f"saga {name!r}: step names repeat in {names}; make them unique")
        for what, value, low in (
            ("lease", lease, 0.0),
            ("backoff", backoff, 0.0),
            ("max_backoff", max_backoff, 0.0),
            ("action_attempts", action_attempts, 1),
            ("compensation_attempts", compensation_attempts, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
                raise SagaError(f"saga {name!r}: {what}={value!r} must be a number >= {low}")
        if lease <= 0:
            raise SagaError(f"saga {name!r}: lease={lease!r} must be > 0 seconds")
        self.name = name
        self.steps: tuple[Step, ...] = tuple(steps)
        self.owner = owner
        self._store = store
        self._plan = Plan(
            name,
            self.steps,
            float(lease),
            int(action_attempts),
            int(compensation_attempts),
            float(backoff),
            float(max_backoff),
            clock,
            sleep,
        )
        register(self)

    def __repr__(self) -> str:
        return f"Saga({self.name!r}, steps={[s.name for s in self.steps]})"

    @property
    def lease(self) -> float:
        return self._plan.lease

    @property
    def store(self) -> StateStore:
        """Where this saga keeps its runs (``shoal.state()`` unless one was given)."""
        if self._store is None:
            self._store = service_state()
        return self._store

    async def run(self, saga_id: str, data: Any = None) -> SagaOutcome:
        """Run the saga once for ``saga_id`` with input ``data`` (JSON data).

        Returns the outcome: ``completed`` with every step's result, or ``compensated``
        with the error that caused it. A second run of the same id returns the stored
        outcome (waiting for the first if another instance is still on it). Raises
        SagaError if the run could not be compensated (``exc.outcome`` says how), or if
        ``saga_id`` was already run with different data; StateError if the store cannot
        be reached (the run stays stored, and is resumed once the lease runs out).
        """
        check_id(self.name, saga_id)
        data = jsonable(data, f"the input of saga {self.name!r} {saga_id!r}")
        store, key = self.store, record_key(self.name, saga_id)
        while True:
            item = await store.get_item(key)
            if item is None:
                created = await self._create(store, saga_id, data)
                if created is None:
                    continue  # another instance created it first: see who owns it
                record, etag = created
            else:
                record = SagaRecord.from_json(item.value, f"{store.backend.where} {key}")
                if record.input != data:
                    raise SagaError(
                        f"saga {self.name!r} {saga_id!r} was already run with other data "
                        f"({record.input!r}, not {data!r}); use a new id for a new run"
                    )
                if record.finished:
                    return _outcome(record)
                if record.lease_until > self._plan.clock():
                    await self._plan.sleep(min(0.2, self._plan.lease / 4))
                    continue  # another instance is driving it: wait for its outcome
                taken = await self._take(store, record, item.etag)
                if taken is None:
                    continue
                etag = taken
            try:
                return _outcome(await self._drive(store, record, etag))
            except LostLease:
                continue

    async def resume(self) -> list[SagaOutcome]:
        """Finish every unfinished run of this saga that no live instance is driving
        (its lease is free or has expired); the outcomes of the runs finished here,
        ``failed`` ones included."""
        store = self.store
        prefix = f"{OPEN_PREFIX}{self.name}/"
        gate = asyncio.Semaphore(RESUME_CONCURRENCY)

        async def one(saga_id: str) -> SagaOutcome | None:
            async with gate:
                return await self._resume_one(store, saga_id)

        ids = [key[len(prefix) :] for key, _ in await store.list(prefix, limit=1000)]
        done = await asyncio.gather(*(one(i) for i in ids), return_exceptions=True)
        errors = [d for d in done if isinstance(d, BaseException)]
        for error in errors[1:]:
            log.warning("saga %s: a run could not be resumed: %s", self.name, error)
        if errors:
            raise errors[0]
        return [d for d in done if isinstance(d, SagaOutcome)]

    async def get(self, saga_id: str) -> SagaRecord | None:
        """The stored record of run ``saga_id`` (its status, results, errors, attempts,
        owner and lease), or None if it never started."""
        check_id(self.name, saga_id)
        key = record_key(self.name, saga_id)
        value = await self.store.get(key)
        return None if value is None else SagaRecord.from_json(value, key)

    async def unfinished(self) -> list[SagaRecord]:
        """The runs not (yet) completed or compensated: running, compensating, and
        ``failed`` ones, which stay listed until someone deals with them."""
        prefix = f"{OPEN_PREFIX}{self.name}/"
        keys = [record_key(self.name, k[len(prefix) :]) for k, _ in await self.store.list(prefix)]
        found = await self.store.get_many(keys)
        return [SagaRecord.from_json(found[k], k) for k in keys if k in found]

    async def _resume_one(self, store: StateStore, saga_id: str) -> SagaOutcome | None:
        key = record_key(self.name, saga_id)
        item = await store.get_item(key)
        if item is None:
            await store.delete(open_key(self.name, saga_id))  # an index entry left behind
            return None
        record = SagaRecord.from_json(item.value, f"{store.backend.where} {key}")
        if record.finished or record.lease_until > self._plan.clock():
            return None  # failed (kept for people to see), or someone is on it
        etag = await self._take(store, record, item.etag)
        if etag is None:
            return None
        log.info("saga %s %s: resuming (%s)", self.name, saga_id, record.status)
        try:
            return (await self._drive(store, record, etag)).outcome()
        except LostLease:
            return None

    async def _drive(self, store: StateStore, record: SagaRecord, etag: str) -> SagaRecord:
        if record.steps != [s.name for s in self.steps]:
            raise SagaError(
                f"saga {self.name!r} {record.id!r} was started with steps {record.steps}, "
                f"but the saga now has {[s.name for s in self.steps]}; finish old runs "
                "before changing the steps, or give the new definition a new name"
            )
        return await Driver(self._plan, store, record, etag, self.owner).drive()

    async def _take(self, store: StateStore, record: SagaRecord, etag: str) -> str | None:
        """Become the run's owner (its lease is free or expired); its new ETag, or None
        if another instance wrote it first."""
        previous = record.owner
        now = self._plan.clock()
        record.owner, record.lease_until, record.updated = self.owner, now + self.lease, now
        try:
            etag = await store.set(record_key(self.name, record.id), record.to_json(), etag=etag)
        except ConcurrencyError:
            return None
        if previous is not None:
            log.info("saga %s %s: taken over from %s", self.name, record.id, previous)
        return etag

    async def _create(
        self, store: StateStore, saga_id: str, data: Any
    ) -> tuple[SagaRecord, str] | None:
        """Store a new run, owned by this instance; None if one appeared meanwhile.

        The record is written create-only (``absent=True``) with its open-index entry,
        in one transaction: of instances that all saw the run absent, exactly one
        commits; the others get ConcurrencyError and go back to read who owns it.
        """
        now = self._plan.clock()
        record = SagaRecord(
            saga=self.name,
            id=saga_id,
            input=data,
            steps=[s.name for s in self.steps],
            owner=self.owner,
            lease_until=now + self.lease,
            created=now,
            updated=now,
        )
        try:
            async with store.transaction() as tx:
                etag = tx.set(record_key(self.name, saga_id), record.to_json(), absent=True)
                tx.set(open_key(self.name, saga_id), {"since": now})
        except ConcurrencyError:
            return None
        return record, etag


def _outcome(record: SagaRecord) -> SagaOutcome:
    outcome = record.outcome()
    if outcome.status == "failed":
        undone = [s for s in record.steps[: record.done] if s not in record.undone]
        raise SagaError(
            f"saga {record.saga!r} {record.id!r} could not be compensated: "
            f"{outcome.compensation_error} (attempts: {record.attempts}); steps not undone: "
            f"{undone}; it was compensating because {outcome.error}. The record is kept "
            "under the saga's unfinished runs; fix the cause and undo by hand",
            outcome=outcome,
        )
    return outcome
