"""Driving one saga run forward (or back) while holding its lease.

Every transition is one ETag-checked write of the run's record, made before the next
action or compensation starts; the write also renews the owner's lease. A write that
finds the ETag changed means another instance took the run over (our lease had
expired): the driver stops at once with :class:`LostLease`, and the other instance
carries on from the stored progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.exceptions import ConcurrencyError, StateError
from shoal.mesh._deadline import set_deadline
from shoal.saga._model import SagaContext, SagaRecord, Step, StepFailure, failure, jsonable
from shoal.state import StateStore

__all__ = ["Driver", "LostLease", "Plan", "open_key", "record_key"]

log = logging.getLogger("shoal.saga")

PREFIX = "_shoal/saga/"
OPEN_PREFIX = "_shoal/saga-open/"


def record_key(saga: str, saga_id: str) -> str:
    return f"{PREFIX}{saga}/{saga_id}"


def open_key(saga: str, saga_id: str) -> str:
    """The index entry of a run that has not finished (or has failed), for resume."""
    return f"{OPEN_PREFIX}{saga}/{saga_id}"


class LostLease(Exception):
    """Another instance owns the run now; this one must not touch it again."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A saga's definition and its timing, as the driver needs them."""

    name: str
    steps: Sequence[Step]
    lease: float
    action_attempts: int
    compensation_attempts: int
    backoff: float
    max_backoff: float
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[object]]

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th failed compensation."""
        return float(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))


class Driver:
    """Runs one saga run to its end, as its owner."""

    def __init__(
        self, plan: Plan, store: StateStore, record: SagaRecord, etag: str, owner: str
    ) -> None:
        self._plan = plan
        self._store = store
        self._key = record_key(plan.name, record.id)
        self._record = record
        self._etag = etag
        self._owner = owner
        self._lock = asyncio.Lock()
        self._lost = False

    async def drive(self) -> SagaRecord:
        """Run forward, or back through the compensations, until the run has finished."""
        record = self._record
        while not record.finished:
            if record.status == "running":
                await self._forward()
            else:
                await self._backward()
        return record

    async def _forward(self) -> None:
        record, steps = self._record, self._plan.steps
        if record.done >= len(steps):
            record.status = "completed"
            await self._write()
            log.info("saga %s %s completed", self._plan.name, record.id)
            return
        step = steps[record.done]
        started = record.attempts.get(step.name, 0)
        if started >= self._plan.action_attempts:
            record.error = StepFailure(
                step.name,
                "SagaError",
                f"started {started} times without finishing: the instance running it "
                "stopped each time",
            )
            record.status = "compensating"
            await self._write()
            return
        record.attempts[step.name] = started + 1
        await self._write()  # ours still, and the attempt counted, before the action
        context = SagaContext(record.saga, record.id, step.name, record.input, dict(record.results))
        try:
            result = jsonable(
                await self._guarded(lambda: step.action(context)),
                f"the result of saga {record.saga!r} step {step.name!r}",
            )
        except LostLease:
            raise
        except Exception as exc:
            record.error = failure(step.name, exc)
            record.status = "compensating"
            log.warning("saga %s %s: %s; compensating", self._plan.name, record.id, record.error)
        else:
            record.results[step.name] = result
            record.done += 1
        await self._write()

    async def _backward(self) -> None:
        record = self._record
        pending = [
            (s, s.compensate)
            for s in reversed(self._plan.steps[: record.done])
            if s.compensate is not None and s.name not in record.undone
        ]
        if not pending:
            record.status = "compensated"
            await self._write()
            log.info("saga %s %s compensated", self._plan.name, record.id)
            return
        step, compensate = pending[0]
        counter = f"undo:{step.name}"
        attempt = record.attempts.get(counter, 0) + 1
        if attempt > self._plan.compensation_attempts:  # a crash after the last attempt
            record.status = "failed"
            await self._write()
            return
        record.attempts[counter] = attempt
        await self._write()
        context = SagaContext(
            record.saga, record.id, step.name, record.input, dict(record.results), record.error
        )
        try:
            await self._guarded(lambda: compensate(context), undo=True)
        except LostLease:
            raise
        except Exception as exc:
            record.compensation_error = failure(step.name, exc)
            if attempt >= self._plan.compensation_attempts:
                record.status = "failed"
                await self._write()
                log.error(
                    "saga %s %s failed: compensating %r failed %d times, last: %s",
                    self._plan.name,
                    record.id,
                    step.name,
                    attempt,
                    record.compensation_error,
                )
                return
            await self._write()
            delay = self._plan.delay(attempt)
            log.warning(
                "saga %s %s: compensating %r failed (attempt %d of %d), again in %.1f s: %s",
                self._plan.name,
                record.id,
                step.name,
                attempt,
                self._plan.compensation_attempts,
                delay,
                record.compensation_error,
            )
            await self._guarded(lambda: self._plan.sleep(delay), undo=True)
            return
        record.undone.append(step.name)
        await self._write()

    async def _guarded(self, work: Callable[[], Awaitable[Any]], *, undo: bool = False) -> Any:
        """Await ``work()`` while renewing the lease; if the lease is lost meanwhile, the
        work is cancelled and LostLease raised. Undoing is not bound by the deadline of
        the request that started the run: it must not be cut short because the caller
        stopped waiting."""

        async def call() -> Any:
            if undo:
                set_deadline(None)  # in this task's own copy of the context
            return await work()

        task = asyncio.ensure_future(call())  # copies the context: the trace goes along
        renewer = asyncio.create_task(self._renew(task))
        try:
            return await task
        except asyncio.CancelledError:
            if self._lost and not task_cancelling():
                raise LostLease(self._record.id) from None
            raise
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _renew(self, work: asyncio.Future[Any]) -> None:
        """Every third of the lease, on the event loop's own clock, renew the lease."""
        while True:
            await asyncio.sleep(self._plan.lease / 3)
            try:
                await self._write()
            except LostLease:
                self._lost = True
                work.cancel()
                return
            except StateError as exc:  # the store is away for now: the lease may run out
                log.warning(
                    "saga %s %s: lease not renewed: %s", self._plan.name, self._record.id, exc
                )

    async def _write(self) -> None:
        """Store the record, with the ETag last written (LostLease if it changed)."""
        async with self._lock:
            record = self._record
            now = self._plan.clock()
            record.updated = now
            if record.finished:
                record.owner, record.lease_until = None, 0.0
            else:
                record.owner, record.lease_until = self._owner, now + self._plan.lease
            try:
                async with self._store.transaction() as tx:
                    etag = tx.set(self._key, record.to_json(), etag=self._etag)
                    if record.status in ("completed", "compensated"):
                        tx.delete(open_key(record.saga, record.id))
            except ConcurrencyError:
                self._lost = True
                log.warning(
                    "saga %s %s: another instance took the run over; leaving it to that one",
                    self._plan.name,
                    record.id,
                )
                raise LostLease(record.id) from None
            self._etag = etag


def task_cancelling() -> int:
    task = asyncio.current_task()
    return 0 if task is None else task.cancelling()
