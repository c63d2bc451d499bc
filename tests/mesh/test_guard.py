"""The inbound guard over real sockets: deadlines, rate limits, load shedding, explained errors."""

from __future__ import annotations

import asyncio
import time

import httpx

import shoal
from asgi_server import HOST, serve_asgi
from shoal.manifest import ServicePolicy
from shoal.mesh import StaticPolicies
from shoal.mesh._guard import InboundGuard
from shoal.mesh._limiter import AdaptiveLimiter
from shoal.types import Receive, Scope, Send


class Work:
    """An app that takes ``seconds`` per request and counts the requests it started."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.started = 0
        self.finished = 0
        self.remaining: list[float | None] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.started += 1
        self.remaining.append(shoal.mesh.remaining())
        await asyncio.sleep(self.seconds)
        self.finished += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})


def guarded(app: Work, policy: ServicePolicy | None = None, **kwargs: object) -> InboundGuard:
    policies = StaticPolicies({"svc": policy or ServicePolicy()})
    return InboundGuard(app, "svc", policies, **kwargs)  # type: ignore[arg-type]


async def test_a_request_that_arrives_past_its_deadline_is_refused_before_the_app_runs() -> None:
    work = Work()
    async with serve_asgi(guarded(work)) as port, httpx.AsyncClient() as http:
        response = await http.get(f"http://{HOST}:{port}/", headers={"shoal-timeout": "0"})
    assert response.status_code == 504
    assert response.headers["shoal-reason"] == "deadline-exceeded"
    assert work.started == 0


async def test_the_deadline_is_restored_for_the_app_and_enforced_on_it() -> None:
    work = Work(seconds=5)
    async with serve_asgi(guarded(work)) as port, httpx.AsyncClient() as http:
        started = time.perf_counter()
        response = await http.get(f"http://{HOST}:{port}/", headers={"shoal-timeout": "150"})
        waited = time.perf_counter() - started
    assert response.status_code == 504
    assert response.headers["shoal-reason"] == "deadline-exceeded"
    assert 0.15 <= waited < 0.25
    assert work.finished == 0
    remaining = work.remaining[0]
    assert remaining is not None
    assert 0.13 < remaining <= 0.15


async def test_requests_past_the_concurrency_limit_are_shed_with_retry_after() -> None:
    work = Work(seconds=0.3)
    limiter = AdaptiveLimiter(initial_limit=4, min_limit=4, max_limit=4)
    async with serve_asgi(guarded(work, limiter=limiter)) as port, httpx.AsyncClient() as http:
        url = f"http://{HOST}:{port}/"
        responses = await asyncio.gather(*(http.get(url) for _ in range(10)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 4 + [503] * 6
    shed = [r for r in responses if r.status_code == 503]
    assert {r.headers["shoal-reason"] for r in shed} == {"overloaded"}
    assert all(int(r.headers["retry-after"]) >= 1 for r in shed)
    assert work.started == 4


async def test_a_caller_over_its_rate_limit_gets_429_and_others_do_not() -> None:
    work = Work()
    policy = ServicePolicy.model_validate({"limits": {"rate": {"orders": 5}}})
    async with serve_asgi(guarded(work, policy)) as port, httpx.AsyncClient() as http:
        url = f"http://{HOST}:{port}/"
        orders = [await http.get(url, headers={"shoal-caller": "orders"}) for _ in range(8)]
        others = [await http.get(url, headers={"shoal-caller": "catalog"}) for _ in range(8)]
    assert [r.status_code for r in orders].count(429) >= 2
    limited = next(r for r in orders if r.status_code == 429)
    assert limited.headers["shoal-reason"] == "rate-limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert all(r.status_code == 200 for r in others)


async def test_a_mesh_error_the_app_lets_escape_is_answered_with_its_reason() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise shoal.BreakerOpenError("every instance of 'payments' is ejected")

    guard = InboundGuard(app, "svc", StaticPolicies())
    async with serve_asgi(guard) as port, httpx.AsyncClient() as http:
        response = await http.get(f"http://{HOST}:{port}/")
    assert response.status_code == 503
    assert response.headers["shoal-reason"] == "breaker-open"
    assert "payments" in response.json()["error"]


async def test_an_app_that_raises_does_not_talk_the_limit_down() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("bad input")

    limiter = AdaptiveLimiter(initial_limit=20, min_limit=4, max_limit=100)
    guard = InboundGuard(app, "svc", StaticPolicies(), limiter=limiter)
    async with serve_asgi(guard) as port, httpx.AsyncClient() as http:
        for _ in range(50):
            assert (await http.get(f"http://{HOST}:{port}/")).status_code == 500
    assert limiter.limit >= 20
    assert limiter.in_flight == 0
