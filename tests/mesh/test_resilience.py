"""Retries, budgets, ejection, bulkheads and deadlines, through MeshTransport over real sockets."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import httpx
import pytest

import shoal
from asgi_server import HOST, serve_asgi
from shoal.manifest import ServicePolicy
from shoal.mesh import MeshTransport, StaticPolicies
from shoal.registry import Discovery, InstanceRecord, MemoryRegistry
from shoal.types import Receive, Scope, Send


class Upstream:
    """An ASGI app answering ``status`` (after ``delay``), counting the requests it saw."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.hits = 0
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.hits += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok" if self.status < 400 else b"no"})


def record(instance: str, port: int, version: str = "v1") -> InstanceRecord:
    return InstanceRecord(
        app="t", service="svc", instance=instance, host=HOST, port=port, state="ready",
        started_at=time.time(), ttl=60, version=version,
    )  # fmt: skip


async def publish(pair: tuple[MemoryRegistry, Discovery], *records: InstanceRecord) -> None:
    memory, found = pair
    for rec in records:
        await memory.put(rec)
    await found.wait_for(lambda c: len(c.instances("svc")) == len(records), timeout=2)


def fast_retries(**overrides: object) -> ServicePolicy:
    """Default policy with 1 ms backoff, so retry tests do not wait."""
    data: dict[str, object] = {"retries": {"backoff": {"base": "1ms", "cap": "1ms"}}}
    data.update(overrides)
    return ServicePolicy.model_validate(data)


def mesh(found: Discovery, policy: ServicePolicy, seed: int = 7) -> httpx.AsyncClient:
    transport = MeshTransport(
        found, policies=StaticPolicies({"svc": policy}), rng=random.Random(seed), caller="tester"
    )
    return httpx.AsyncClient(transport=transport)


async def test_safe_request_is_retried_on_503_and_the_attempts_explain_it(
    discovery: tuple[MemoryRegistry, Discovery],
) -> None:
    bad, good = Upstream(503), Upstream(200)
    async with serve_asgi(bad) as p_bad, serve_asgi(good) as p_good:
        await publish(discovery, record("bad", p_bad), record("good", p_good))
        async with mesh(discovery[1], fast_retries()) as http:
            for _ in range(20):
                response = await http.get("http://svc/x")
                assert response.status_code == 200
                attempts = response.extensions["shoal.attempts"]
                assert attempts[-1].instance == "good"
                assert attempts[-1].decision == "returned"
                if len(attempts) > 1:
                    assert attempts[0].outcome == "503"
                    assert attempts[0].decision.startswith("retry after")


async def test_post_without_idempotency_is_never_retried_but_with_a_key_it_is(
    discovery: tuple[MemoryRegistry, Discovery],
) -> None:
    bad = Upstream(503)
    async with serve_asgi(bad) as port:
        await publish(discovery, record("bad", port))
        async with mesh(discovery[1], fast_retries()) as http:
            response = await http.post("http://svc/orders", content=b"{}")
            assert response.status_code == 503
            assert bad.hits == 1
            keyed = await http.post(
                "http://svc/orders", content=b"{}", headers={"idempotency-key": "k"}
            )
            assert bad.hits == 4
    assert keyed.status_code == 503
    assert keyed.headers["shoal-reason"] == "upstream-error"
    assert [a.outcome for a in keyed.extensions["shoal.attempts"]] == ["503"] * 3
    assert keyed.extensions["shoal.attempts"][-1].decision == "gave up: 3 attempts used"


async def test_a_body_over_64_kib_is_never_sent_twice(
    discovery: tuple[MemoryRegistry, Discovery],
) -> None:
    bad = Upstream(503)
    async with serve_asgi(bad) as port:
        await publish(discovery, record("bad", port))
        async with mesh(discovery[1], fast_retries()) as http:
            response = await http.put("http://svc/blob", content=b"x" * 70 * 1024)
    assert response.status_code == 503
    assert bad.hits == 1
    assert len(bad.bodies[0]) == 70 * 1024


async def test_route_declared_idempotent_makes_a_post_retryable(
    discovery: tuple[MemoryRegistry, Discovery],
) -> None:
    bad = Upstream(502)
    policy = fast_retries(routes=[{"path": "/search", "methods": ["POST"], "idempotent": True}])
    async with serve_asgi(bad) as port:
        await publish(discovery, record("bad", port))
        async with mesh(discovery[1], policy) as http:
            assert (await http.post("http://svc/search", content=b"q")).status_code == 502
            assert bad.hits == 3
            await http.post("http://svc/other", content=b"q")
            assert bad.hits == 4


async def test_retries_stop_at_the_budget_when_the_upstream_always_fails(
    discovery: tuple[MemoryRegistry, Discovery],
) -> None:
    """min_per_second 0 and 20%: over 200 calls at most 40 retries, then budget-exhausted.
    (Ejection is set out of reach so that the one instance keeps being called.)"""
    bad = Upstream(503)
    policy = fast_retries(retries={"backoff": {"base": "1ms", "cap": "1ms"},
                                   "budget": {"percent": 20, "min_per_second": 0}},
                          outlier={"failures": 1000})  # fmt: skip
    outcomes: Counter[str] = Counter()
    async with serve_asgi(bad) as port:
        await publish(discovery, record("bad", port))
        async with mesh(discovery[1], policy) as http:
            for _ in range(200):
                try:
                    outcomes[(await http.get("http://svc/x")).headers["shoal-reason"]] += 1
                except shoal.TransportError as exc:
                    outcomes[exc.reason] += 1
    retries = bad.hits - 200
    assert 0 < retries <= 0.2 * 200 + 1
    assert outcomes["budget-exhausted"] > 100
    assert outcomes["budget-exhausted"] + outcomes["upstream-error"] == 200


async def test_a_failing_endpoint_is_ejected_and_the_calls_succeed(
    discovery: tuple[MemoryRegistry, Discovery],
) -> None:
    """Retries off, so every failure shows: after ejection >= 99.9% of 1000 succeed.

    The bad instance fails fast and the good one takes 2 ms, so a latency-aware
    balancer alone would favour the bad one: ejection is what saves the calls."""
    bad, good = Upstream(500), Upstream(200, delay=0.002)
    policy = ServicePolicy.model_validate({"retries": {"attempts": 1}})
    async with serve_asgi(bad) as p_bad, serve_asgi(good) as p_good:
        await publish(discovery, record("bad", p_bad), record("good", p_good))
        async with mesh(discovery[1], policy) as http:
            transport = http._transport
            assert isinstance(transport, MeshTransport)
            for _ in range(200):
                await http.get("http://svc/warmup")
                if transport.destinations["svc"].outlier.ejected():
                    break
            assert "bad" in transport.destinations["svc"].outlier.ejected()
            statuses = Counter([(await http.get("http://svc/x")).status_code for _ in range(1000)])
    assert statuses[200] / 1000 >= 0.999


async def test_when_every_instance_is_ejected_calls_fail_fast_with_breaker_open(
    discovery: tuple[MemoryRegistry, Discovery],
) -> None:
    a, b = Upstream(500), Upstream(500)
    policy = ServicePolicy.model_validate({"retries": {"attempts": 1}})
    async with serve_asgi(a) as pa, serve_asgi(b) as pb:
        await publish(discovery, record("a", pa), record("b", pb))
        async with mesh(discovery[1], policy) as http:
            for _ in range(10):
                await http.get("http://svc/x")
            hits = a.hits + b.hits
            started = time.perf_counter()
            with pytest.raises(shoal.BreakerOpenError) as caught:
                await http.get("http://svc/x")
            assert time.perf_counter() - started < 0.1
    assert a.hits + b.hits == hits
    assert caught.value.reason == "breaker-open"


async def test_the_request_past_the_bulkhead_fails_at_once_with_overloaded(
    discovery: tuple[MemoryRegistry, Discovery],
) -> None:
    slow = Upstream(200, delay=0.5)
    policy = ServicePolicy.model_validate({"limits": {"concurrency": 2}})
    async with serve_asgi(slow) as port:
        await publish(discovery, record("slow", port))
        async with mesh(discovery[1], policy) as http:
            held = [asyncio.create_task(http.get("http://svc/x")) for _ in range(2)]
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            with pytest.raises(shoal.OverloadedError, match="2 calls in flight"):
                await http.get("http://svc/x")
            # at once: the two held calls (500 ms each) are still under way
            assert time.perf_counter() - started < 0.1
            assert not any(task.done() for task in held)
            assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
            assert (await http.get("http://svc/x")).status_code == 200


async def test_the_service_timeout_bounds_a_call_to_a_hung_instance(
    discovery: tuple[MemoryRegistry, Discovery],
) -> None:
    hung = Upstream(200, delay=1)
    policy = ServicePolicy.model_validate({"timeout": "200ms"})
    async with serve_asgi(hung) as port:
        await publish(discovery, record("hung", port))
        async with mesh(discovery[1], policy) as http:
            started = time.perf_counter()
            with pytest.raises(shoal.CallTimeoutError) as caught:
                await http.get("http://svc/x")
            waited = time.perf_counter() - started
    assert 0.2 <= waited < 0.3
    assert caught.value.reason == "timeout"
    assert caught.value.attempts[-1].outcome == "timed out"


async def test_the_remaining_time_travels_in_the_shoal_timeout_header(
    discovery: tuple[MemoryRegistry, Discovery],
) -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(dict(scope["headers"]).get(b"shoal-timeout", b"").decode())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with serve_asgi(app) as port:
        await publish(discovery, record("one", port))
        async with mesh(discovery[1], ServicePolicy.model_validate({"timeout": "2s"})) as http:
            await http.get("http://svc/x")
            with shoal.deadline(0.5):
                await http.get("http://svc/x")
    assert 1900 <= int(seen[0]) <= 2000
    assert 400 <= int(seen[1]) <= 500


async def test_a_route_timeout_overrides_the_service_timeout(
    discovery: tuple[MemoryRegistry, Discovery],
) -> None:
    slow = Upstream(200, delay=0.3)
    policy = ServicePolicy.model_validate(
        {"timeout": "2s", "routes": [{"path": "/quick", "timeout": "100ms"}]}
    )
    async with serve_asgi(slow) as port:
        await publish(discovery, record("slow", port))
        async with mesh(discovery[1], policy) as http:
            with pytest.raises(shoal.CallTimeoutError, match=r"timeout of 0\.1s"):
                await http.get("http://svc/quick/item")
            assert (await http.get("http://svc/other")).status_code == 200


async def test_after_one_timeout_a_hung_instance_is_avoided(
    discovery: tuple[MemoryRegistry, Discovery],
) -> None:
    hung, good = Upstream(200, delay=1), Upstream(200)
    policy = ServicePolicy.model_validate({"timeout": "100ms", "retries": {"attempts": 1}})
    async with serve_asgi(hung) as p_hung, serve_asgi(good) as p_good:
        await publish(discovery, record("hung", p_hung), record("good", p_good))
        async with mesh(discovery[1], policy) as http:
            timeouts = 0
            for _ in range(20):  # until the hung one has been tried once
                try:
                    await http.get("http://svc/x")
                except shoal.CallTimeoutError:
                    timeouts += 1
                    break
            assert timeouts == 1
            answered: Counter[str] = Counter()
            for _ in range(50):
                answered[(await http.get("http://svc/x")).extensions["shoal.instance"]] += 1
    assert answered == {"good": 50}


async def test_a_per_try_timeout_sends_a_safe_request_on_past_a_hung_instance(
    discovery: tuple[MemoryRegistry, Discovery],
) -> None:
    hung, good = Upstream(200, delay=1), Upstream(200)
    policy = fast_retries(
        timeout="2s", retries={"per_try_timeout": "50ms", "backoff": {"base": "1ms", "cap": "1ms"}}
    )
    async with serve_asgi(hung) as p_hung, serve_asgi(good) as p_good:
        await publish(discovery, record("hung", p_hung), record("good", p_good))
        async with mesh(discovery[1], policy) as http:
            started = time.perf_counter()
            responses = [await http.get("http://svc/x") for _ in range(20)]
            took = time.perf_counter() - started
            post = await http.post("http://svc/x", content=b"not safe to repeat")
    assert {r.status_code for r in responses} == {200}
    assert {r.extensions["shoal.instance"] for r in responses} == {"good"}
    tries = [[a for a in r.extensions["shoal.attempts"] if a.instance] for r in responses]
    detours = [t for t in tries if len(t) > 1]
    assert detours, "the hung instance was never tried"
    assert detours[0][-2].outcome == "timed out"
    assert "per-try timeout of 0.05s" in detours[0][-2].decision
    assert took < 1.0
    assert post.status_code == 200  # a POST waits for its answer: no per-try timeout
