"""The saga state machine against a real SQLite store, with an injected clock and sleep:
order, reverse compensation, the retry bound, leases and takeover, idempotent runs."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

import shoal
from shoal.mesh._deadline import current_deadline
from shoal.saga import SagaContext, SagaError, Step, registered
from shoal.saga._registry import unregister
from shoal.state import (
    StateBackend,
    StateError,
    StateStore,
    open_postgres,
    open_redis,
    open_sqlite,
)

NAME = "test-order"
POSTGRES = os.environ.get("SHOAL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("SHOAL_TEST_REDIS", "redis://127.0.0.1:6379/0")


class FakeTime:
    """Epoch seconds that move only when a saga sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class Refused(Exception):
    status_code = 402


class Shop:
    """Steps that write down what they did, in order, and fail where told to."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.contexts: list[SagaContext] = []
        self.fail: set[str] = set()
        self.undo_failures: dict[str, int] = {}  # step -> how many more undo calls fail
        self.gates: dict[str, asyncio.Event] = {}  # step -> its next call waits for this
        self.arrived: dict[str, asyncio.Event] = {}  # step -> set when that call waits
        self.cancelled: list[str] = []  # the calls cancelled while they waited

    def hold(self, step: str) -> tuple[asyncio.Event, asyncio.Event]:
        """Make the next call of ``step`` (``undo:x`` for a compensation) wait for the
        first event; the second is set once it waits."""
        self.gates[step], self.arrived[step] = asyncio.Event(), asyncio.Event()
        return self.gates[step], self.arrived[step]

    async def _gate(self, step: str) -> None:
        gate = self.gates.pop(step, None)
        if gate is not None:
            self.arrived[step].set()
            try:
                await gate.wait()
            except asyncio.CancelledError:
                self.cancelled.append(step)
                raise

    def step(self, name: str, *, undo: bool = True) -> Step:
        async def action(ctx: SagaContext) -> Any:
            self.calls.append(name)
            self.contexts.append(ctx)
            await self._gate(name)
            if name in self.fail:
                raise Refused(f"{name} refused")
            return {"step": name, "seen": sorted(ctx.results)}

        async def compensate(ctx: SagaContext) -> None:
            self.calls.append(f"undo:{name}")
            self.contexts.append(ctx)
            await self._gate(f"undo:{name}")
            if self.undo_failures.get(name, 0) > 0:
                self.undo_failures[name] -= 1
                raise RuntimeError(f"cannot undo {name} now")

        return Step(name, action, compensate=compensate if undo else None)

    def steps(self) -> list[Step]:
        return [self.step("reserve"), self.step("charge"), self.step("confirm", undo=False)]


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    """The service's store on each backend (the machine's local PostgreSQL and Redis:
    absent, a failure under CI and a skip elsewhere), in an app of its own."""
    app = f"t{uuid.uuid4().hex[:12]}"
    try:
        if request.param == "postgres":
            opened = await open_postgres(POSTGRES, app, "orders", max_connections=4)
        elif request.param == "redis":
            opened = await open_redis(REDIS, app, "orders")
        else:
            opened = await open_sqlite(tmp_path, "orders")
    except StateError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{request.param} is needed under CI: {exc}")
        pytest.skip(f"{request.param} is not available: {exc}")
    try:
        yield opened
    finally:
        if request.param == "redis":  # drop what the test wrote
            for key, _ in await opened.list("", limit=10_000):
                await opened.delete(key)
        await opened.aclose()
        if request.param == "postgres":
            conn = await asyncpg.connect(POSTGRES, timeout=3)
            try:
                await conn.execute(f'DROP TABLE shoal_state."{app}", shoal_outbox."{app}"')
            finally:
                await conn.close()


@pytest.fixture(autouse=True)
def forget_sagas() -> Iterator[None]:
    yield
    unregister(NAME)


def saga(
    store: StateStore, time: FakeTime, steps: list[Step], owner: str = "a", **kw: Any
) -> shoal.Saga:
    return shoal.Saga(
        NAME, steps, store=store, clock=time.clock, sleep=time.sleep, owner=owner, **kw
    )


async def test_steps_run_in_order_each_seeing_the_results_before_it(store: StateStore) -> None:
    shop, time = Shop(), FakeTime()
    outcome = await saga(store, time, shop.steps()).run("ord-1", {"qty": 2})
    assert outcome.status == "completed"
    assert outcome.completed
    assert outcome.error is None
    assert shop.calls == ["reserve", "charge", "confirm"]
    assert outcome.results == {
        "reserve": {"step": "reserve", "seen": []},
        "charge": {"step": "charge", "seen": ["reserve"]},
        "confirm": {"step": "confirm", "seen": ["charge", "reserve"]},
    }
    assert [c.idempotency_key for c in shop.contexts] == [
        f"{NAME}/ord-1/reserve",
        f"{NAME}/ord-1/charge",
        f"{NAME}/ord-1/confirm",
    ]
    assert all(c.data == {"qty": 2} and c.id == "ord-1" for c in shop.contexts)
    record = await store.get(f"_shoal/saga/{NAME}/ord-1")
    assert record["status"] == "completed"
    assert record["attempts"] == {"reserve": 1, "charge": 1, "confirm": 1}
    assert (record["owner"], record["lease_until"]) == (None, 0.0)
    assert await store.list("_shoal/saga-open/") == []  # nothing left to resume


async def test_a_failing_step_undoes_the_completed_ones_in_reverse(store: StateStore) -> None:
    shop, time = Shop(), FakeTime()
    steps = [shop.step("hold"), *shop.steps()]
    shop.fail.add("confirm")
    outcome = await saga(store, time, steps).run("ord-2")
    assert outcome.status == "compensated"
    # confirm failed: its own compensation (it has none here) is not run, the others are
    assert shop.calls == [
        *("hold", "reserve", "charge", "confirm"),
        *("undo:charge", "undo:reserve", "undo:hold"),
    ]
    assert outcome.error is not None
    assert (outcome.error.step, outcome.error.type) == ("confirm", "Refused")
    assert (outcome.error.message, outcome.error.status) == ("confirm refused", 402)
    undo_charge = shop.contexts[4]
    assert undo_charge.error == outcome.error
    assert undo_charge.result == {"step": "charge", "seen": ["hold", "reserve"]}
    record = await shoal.Saga(NAME, steps, store=store).get("ord-2")
    assert record is not None
    assert record.undone == ["charge", "reserve", "hold"]
    assert record.status == "compensated"


async def test_the_first_step_failing_has_nothing_to_undo(store: StateStore) -> None:
    shop, time = Shop(), FakeTime()
    shop.fail.add("reserve")
    outcome = await saga(store, time, shop.steps()).run("ord-3")
    assert (outcome.status, shop.calls, dict(outcome.results)) == (
        "compensated",
        ["reserve"],
        {},
    )


async def test_a_compensation_is_retried_with_backoff_until_it_succeeds(
    store: StateStore,
) -> None:
    shop, time = Shop(), FakeTime()
    shop.fail.add("confirm")
    shop.undo_failures["reserve"] = 2
    outcome = await saga(store, time, shop.steps()).run("ord-4")
    assert outcome.status == "compensated"
    assert shop.calls[3:] == ["undo:charge", "undo:reserve", "undo:reserve", "undo:reserve"]
    assert time.sleeps == [0.5, 1.0]
    assert outcome.compensation_error is not None  # the last failure, kept for the record
    assert outcome.compensation_error.message == "cannot undo reserve now"


async def test_a_compensation_that_keeps_failing_marks_the_run_failed_and_raises(
    store: StateStore,
) -> None:
    shop, time = Shop(), FakeTime()
    shop.fail.add("confirm")
    shop.undo_failures["reserve"] = 99
    orders = saga(store, time, shop.steps(), compensation_attempts=4, max_backoff=1.5)
    with pytest.raises(SagaError, match="could not be compensated") as caught:
        await orders.run("ord-5")
    assert shop.calls.count("undo:reserve") == 4
    assert time.sleeps == [0.5, 1.0, 1.5]  # doubling, capped at max_backoff
    outcome = caught.value.outcome
    assert outcome is not None
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error.step == "confirm"
    assert outcome.compensation_error is not None
    assert outcome.compensation_error.step == "reserve"
    assert "steps not undone: ['reserve']" in str(caught.value)
    # never dropped: listed as unfinished, not resumed again, and run() says the same
    assert [r.status for r in await orders.unfinished()] == ["failed"]
    assert await orders.resume() == []
    with pytest.raises(SagaError, match="could not be compensated"):
        await orders.run("ord-5")
    assert shop.calls.count("undo:reserve") == 4


async def test_running_an_id_again_returns_the_stored_outcome(store: StateStore) -> None:
    shop, time = Shop(), FakeTime()
    orders = saga(store, time, shop.steps())
    first = await orders.run("ord-6", {"qty": 1})
    again = await orders.run("ord-6", {"qty": 1})
    assert again == first
    assert shop.calls == ["reserve", "charge", "confirm"]  # not run twice
    with pytest.raises(SagaError, match="already run with other data"):
        await orders.run("ord-6", {"qty": 5})


class SlowReads:
    """A backend whose reads answer ``delay`` seconds late, so two instances both see a
    run absent; with different delays, the quicker one creates and drives it before the
    slower one tries to create it."""

    def __init__(self, backend: StateBackend, delay: float = 0.02) -> None:
        self._backend = backend
        self._delay = delay
        self.name, self.where = backend.name, backend.where

    async def get(self, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
        found = await self._backend.get(keys)
        await asyncio.sleep(self._delay)
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


async def test_instances_starting_the_same_id_at_once_run_it_once(
    store: StateStore,
) -> None:
    shop, time = Shop(), FakeTime()
    slow = StateStore(SlowReads(store.backend))
    slower = StateStore(SlowReads(store.backend, 0.1))
    a = saga(slow, time, shop.steps(), owner="a")
    b = saga(slow, time, shop.steps(), owner="b")
    late = saga(slower, time, shop.steps(), owner="late")
    outcomes = await asyncio.gather(*(s.run(f"ord-{n}") for n in range(3) for s in (a, b, late)))
    assert all(o.completed for o in outcomes)
    assert sorted(c.id for c in shop.contexts if c.step == "reserve") == [
        f"ord-{n}" for n in range(3)
    ]


async def crash_during(orders: shoal.Saga, shop: Shop, step: str, saga_id: str) -> None:
    """Run ``saga_id`` until ``step`` has started, then cancel it: nothing more is written,
    as when the process is killed."""
    _, arrived = shop.hold(step)  # never released
    task = asyncio.create_task(orders.run(saga_id))
    await arrived.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_crashed_run_is_resumed_by_another_instance_once_its_lease_expires(
    store: StateStore,
) -> None:
    shop, time = Shop(), FakeTime()
    a = saga(store, time, shop.steps(), owner="a", lease=10)
    await crash_during(a, shop, "charge", "ord-7")
    b = saga(store, time, shop.steps(), owner="b", lease=10)
    assert await b.resume() == []  # a's lease still holds
    record = await b.get("ord-7")
    assert record is not None
    assert (record.status, record.owner, record.done) == ("running", "a", 1)
    time.now += 10.5
    (outcome,) = await b.resume()
    assert outcome.completed
    assert shop.calls == ["reserve", "charge", "charge", "confirm"]  # charge repeated
    record = await b.get("ord-7")
    assert record is not None
    assert record.attempts == {"reserve": 1, "charge": 2, "confirm": 1}
    assert await b.unfinished() == []


async def test_a_second_run_waits_for_the_owner_and_takes_over_if_it_died(
    store: StateStore,
) -> None:
    shop, time = Shop(), FakeTime()
    a = saga(store, time, shop.steps(), owner="a", lease=2)
    await crash_during(a, shop, "reserve", "ord-8")
    b = saga(store, time, shop.steps(), owner="b", lease=2)
    outcome = await b.run("ord-8")  # polls (fake sleeps) until a's lease runs out
    assert outcome.completed
    assert 1.9 <= sum(time.sleeps) <= 2.5  # about the lease, in steps of 0.2 s
    assert shop.calls == ["reserve", "reserve", "charge", "confirm"]


async def test_a_crash_while_compensating_resumes_the_compensation(store: StateStore) -> None:
    shop, time = Shop(), FakeTime()
    shop.fail.add("confirm")
    a = saga(store, time, shop.steps(), owner="a", lease=5)
    await crash_during(a, shop, "undo:charge", "ord-9")
    time.now += 6
    (outcome,) = await saga(store, time, shop.steps(), owner="b", lease=5).resume()
    assert outcome.status == "compensated"
    assert shop.calls[3:] == ["undo:charge", "undo:charge", "undo:reserve"]


async def test_an_owner_that_lost_its_lease_stops_and_reports_the_new_owners_outcome(
    store: StateStore,
) -> None:
    shop, time = Shop(), FakeTime()
    a = saga(store, time, shop.steps(), owner="a", lease=5)
    gate, arrived = shop.hold("charge")
    stalled = asyncio.create_task(a.run("ord-10"))
    await arrived.wait()
    time.now += 6  # a stalls past its lease (its renewal runs on the loop's clock: not yet)
    b = saga(store, time, shop.steps(), owner="b", lease=5)
    (taken,) = await b.resume()
    assert taken.completed
    gate.set()  # a's charge returns now; its progress write finds b's ETag
    assert await stalled == taken
    assert shop.calls == ["reserve", "charge", "charge", "confirm"]  # confirm once: by b


async def test_a_step_that_never_finishes_is_given_up_after_its_attempts(
    store: StateStore,
) -> None:
    shop, time = Shop(), FakeTime()
    orders = saga(store, time, shop.steps(), lease=1, action_attempts=2)
    await crash_during(orders, shop, "charge", "ord-11")
    time.now += 2
    await crash_during(orders, shop, "charge", "ord-11")  # the run() resumes it, crashes again
    time.now += 2
    (outcome,) = await orders.resume()
    assert outcome.status == "compensated"
    assert outcome.error is not None
    assert outcome.error.step == "charge"
    assert "started 2 times without finishing" in outcome.error.message
    assert shop.calls[-1] == "undo:reserve"


async def test_the_lease_is_renewed_while_a_long_step_runs(tmp_path: Path) -> None:
    """Real time: a 1 s lease, a step of 2.5 s; another instance never gets in."""
    async with await open_sqlite(tmp_path, "orders") as store:
        shop = Shop()
        a = shoal.Saga(NAME, shop.steps(), store=store, lease=1.0, owner="a")
        b = shoal.Saga(NAME, shop.steps(), store=store, lease=1.0, owner="b")
        gate, _ = shop.hold("charge")
        running = asyncio.create_task(a.run("ord-12"))
        for _ in range(10):
            await asyncio.sleep(0.25)
            assert await b.resume() == []
        gate.set()
        assert (await running).completed
        record = await a.get("ord-12")
        assert record is not None
        assert record.attempts["charge"] == 1


async def test_results_and_input_must_be_json(store: StateStore) -> None:
    time = FakeTime()

    async def opaque(ctx: SagaContext) -> object:
        return object()

    orders = saga(store, time, [Step("opaque", opaque)])
    with pytest.raises(SagaError, match="input of saga 'test-order' 'x' is not JSON"):
        await orders.run("x", {"when": object()})
    outcome = await orders.run("y")
    assert outcome.status == "compensated"
    assert outcome.error is not None
    assert "the result of saga 'test-order' step 'opaque' is not JSON" in outcome.error.message


def test_bad_definitions_are_refused_with_what_to_do(store: StateStore) -> None:
    shop = Shop()
    with pytest.raises(SagaError, match="saga name 'Place Order' is not valid"):
        shoal.Saga("Place Order", shop.steps(), store=store)
    with pytest.raises(SagaError, match="non-empty list"):
        shoal.Saga(NAME, [], store=store)
    with pytest.raises(SagaError, match="step names repeat"):
        shoal.Saga(NAME, [shop.step("a"), shop.step("a")], store=store)
    with pytest.raises(SagaError, match="not callable"):
        Step("a", "reserve")  # type: ignore[arg-type]
    with pytest.raises(SagaError, match="lease=0"):
        shoal.Saga(NAME, shop.steps(), store=store, lease=0)
    shoal.Saga(NAME, shop.steps(), store=store)
    assert NAME in [s.name for s in registered()]
    with pytest.raises(SagaError, match="already defined in this process with steps"):
        shoal.Saga(NAME, shop.steps()[:2], store=store)


async def test_ids_are_checked(store: StateStore) -> None:
    orders = saga(store, FakeTime(), Shop().steps())
    for bad in ("", "x" * 201, "a\nb", 7):
        with pytest.raises(SagaError, match="is not valid"):
            await orders.run(bad)  # type: ignore[arg-type]


async def test_undoing_is_not_bound_by_the_callers_deadline(store: StateStore) -> None:
    seen: dict[str, float | None] = {}

    async def act(ctx: SagaContext) -> None:
        seen[ctx.step] = current_deadline()
        if ctx.step == "b":
            raise RuntimeError("no")

    async def undo(ctx: SagaContext) -> None:
        seen[f"undo:{ctx.step}"] = current_deadline()

    orders = saga(store, FakeTime(), [Step("a", act, compensate=undo), Step("b", act)])
    with shoal.deadline(5):
        outcome = await orders.run("ord-13")
    assert outcome.status == "compensated"
    assert seen["a"] is not None
    assert seen["b"] is not None
    assert seen["undo:a"] is None


async def test_losing_the_lease_mid_step_cancels_the_step_and_reports_the_new_owners_outcome(
    tmp_path: Path,
) -> None:
    """Real time: a 0.3 s lease renewed every 0.1 s; the record is taken from under it."""
    async with await open_sqlite(tmp_path, "orders") as store:
        shop = Shop()
        a = shoal.Saga(NAME, shop.steps(), store=store, lease=0.3, owner="a")
        _, arrived = shop.hold("charge")
        running = asyncio.create_task(a.run("ord-14"))
        await arrived.wait()
        key = f"_shoal/saga/{NAME}/ord-14"
        taken = await store.get(key) | {"owner": "b", "lease_until": 4_000_000_000.0}
        await store.set(key, taken)  # another instance took it over
        for _ in range(100):  # a's next renewal finds out and cancels its step
            if shop.cancelled:
                break
            await asyncio.sleep(0.05)
        assert shop.cancelled == ["charge"]
        assert not running.done()  # a now waits for b's outcome
        finished = taken | {"status": "completed", "owner": None, "lease_until": 0.0}
        finished["results"] = {"reserve": 1, "charge": 2, "confirm": 3}
        finished["done"] = 3
        await store.set(key, finished)
        outcome = await asyncio.wait_for(running, 5)
        assert outcome.results == {"reserve": 1, "charge": 2, "confirm": 3}
        assert shop.calls == ["reserve", "charge"]  # a never went on to confirm
