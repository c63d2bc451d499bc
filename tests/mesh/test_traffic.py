"""Traffic rules through MeshTransport over real sockets: split, header match, faults, mirror."""

from __future__ import annotations

import asyncio
import logging
import random
import statistics
import time
from collections import Counter
from collections.abc import Mapping

import httpx
import pytest

from asgi_server import HOST, serve_asgi
from shoal.manifest import ServicePolicy
from shoal.manifest._policy import TrafficPolicy
from shoal.mesh import MeshTransport, StaticPolicies
from shoal.mesh._routing import choose_version, decide_faults
from shoal.registry import Discovery, InstanceRecord, MemoryRegistry
from shoal.types import Receive, Scope, Send

N = 10_000


class Version:
    """An app that answers its version (or ``body``) and remembers mirrored copies."""

    def __init__(self, version: str, body: bytes | None = None) -> None:
        self.version = version
        self.body = body if body is not None else b"same answer"
        self.hits = 0
        self.mirrored = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.hits += 1
        if (b"shoal-mirror", b"1") in scope["headers"]:
            self.mirrored += 1
        headers = [(b"x-version", self.version.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def record(version: str, port: int) -> InstanceRecord:
    return InstanceRecord(
        app="t", service="svc", instance=f"svc-{version}", host=HOST, port=port,
        state="ready", started_at=time.time(), ttl=60, version=version,
    )  # fmt: skip


async def two_versions(
    pair: tuple[MemoryRegistry, Discovery], v1_port: int, v2_port: int
) -> Discovery:
    memory, found = pair
    for version, port in (("v1", v1_port), ("v2", v2_port)):
        await memory.put(record(version, port))
    await found.wait_for(lambda c: len(c.ready("svc")) == 2, timeout=2)
    return found


def client(found: Discovery, traffic: Mapping[str, object], seed: int = 11) -> httpx.AsyncClient:
    policy = ServicePolicy.model_validate({"traffic": traffic})
    transport = MeshTransport(
        found, policies=StaticPolicies({"svc": policy}), rng=random.Random(seed)
    )
    return httpx.AsyncClient(transport=transport)


async def many(http: httpx.AsyncClient, n: int, **kwargs: object) -> list[httpx.Response]:
    """``n`` GETs, 16 at a time."""
    out: list[httpx.Response] = []
    for start in range(0, n, 16):
        batch = [http.get("http://svc/x", **kwargs) for _ in range(min(16, n - start))]  # type: ignore[arg-type]
        out += await asyncio.gather(*batch)
    return out


def share(responses: list[httpx.Response], version: str) -> float:
    hits = sum(1 for r in responses if r.headers.get("x-version") == version)
    return hits / len(responses) * 100


async def test_a_90_10_split_over_10000_requests_lands_within_2_points(
    discovery: tuple[MemoryRegistry, Discovery],
) -> None:
    v1, v2 = Version("v1"), Version("v2")
    async with serve_asgi(v1) as p1, serve_asgi(v2) as p2:
        found = await two_versions(discovery, p1, p2)
        async with client(found, {"split": {"v1": 90, "v2": 10}}) as http:
            responses = await many(http, N)
    assert all(r.status_code == 200 for r in responses)
    assert abs(share(responses, "v2") - 10) <= 2
    assert v1.hits + v2.hits == N


async def test_a_header_match_always_wins_over_the_split(
    discovery: tuple[MemoryRegistry, Discovery],
) -> None:
    traffic = {
        "split": {"v1": 100, "v2": 0},
        "match": [{"headers": {"x-canary": "1"}, "version": "v2"}],
    }
    async with serve_asgi(Version("v1")) as p1, serve_asgi(Version("v2")) as p2:
        found = await two_versions(discovery, p1, p2)
        async with client(found, traffic) as http:
            canary = await many(http, 500, headers={"X-Canary": "1"})
            plain = await many(http, 500)
            other = await many(http, 100, headers={"X-Canary": "2"})
    assert share(canary, "v2") == 100
    assert share(plain, "v1") == 100
    assert share(other, "v1") == 100


async def test_fault_percentages_land_within_2_points(
    discovery: tuple[MemoryRegistry, Discovery],
) -> None:
    faults = {"abort": {"percent": 10, "status": 503}, "delay": {"percent": 20, "duration": "1ms"}}
    async with serve_asgi(Version("v1")) as p1, serve_asgi(Version("v2")) as p2:
        found = await two_versions(discovery, p1, p2)
        async with client(found, {"faults": faults}) as http:
            responses = await many(http, N)
    aborted = [r for r in responses if r.headers.get("shoal-reason") == "fault-injected"]
    assert {r.status_code for r in aborted} == {503}
    assert abs(len(aborted) / N * 100 - 10) <= 2
    delayed = sum(
        any(a.outcome.startswith("delay") for a in r.extensions["shoal.attempts"])
        for r in responses
    )
    assert abs(delayed / N * 100 - 20) <= 2


async def test_mirroring_leaves_the_primary_answer_and_latency_alone_and_counts_mismatches(
    discovery: tuple[MemoryRegistry, Discovery],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """All traffic to v1, every request mirrored to v2, which answers differently."""
    v1, v2 = Version("v1"), Version("v2", body=b"a different answer")
    traffic = {"mirror": {"version": "v2", "percent": 100}}

    async def p50(http: httpx.AsyncClient) -> tuple[float, list[httpx.Response]]:
        latencies, responses = [], []
        for _ in range(300):
            started = time.perf_counter()
            responses.append(await http.get("http://svc/x"))
            latencies.append(time.perf_counter() - started)
        return statistics.median(latencies), responses

    async with serve_asgi(v1) as p1, serve_asgi(v2) as p2:
        found = await two_versions(discovery, p1, p2)
        async with client(found, {"split": {"v1": 100}}) as plain_http:
            plain_p50, _ = await p50(plain_http)
        with caplog.at_level(logging.WARNING, "shoal.mesh.mirror"):
            async with client(found, traffic) as http:
                mirrored_p50, responses = await p50(http)
                transport = http._transport
                assert isinstance(transport, MeshTransport)
                for _ in range(200):  # the last copies may still be under way
                    if transport.mirror.stats_of("svc").mismatched == 300:
                        break
                    await asyncio.sleep(0.01)
                stats = transport.mirror.stats_of("svc")
    assert {r.text for r in responses} == {"same answer"}
    assert {r.headers["x-version"] for r in responses} == {"v1"}
    assert abs(mirrored_p50 - plain_p50) < 0.001
    assert v2.mirrored == 300
    assert (stats.sent, stats.mismatched, stats.matched, stats.failed) == (300, 300, 0, 0)
    assert "mirror mismatch for GET /x on svc" in caplog.text


async def test_mirrored_copies_of_identical_answers_match(
    discovery: tuple[MemoryRegistry, Discovery],
) -> None:
    async with serve_asgi(Version("v1")) as p1, serve_asgi(Version("v2")) as p2:
        found = await two_versions(discovery, p1, p2)
        async with client(found, {"mirror": {"version": "v2", "percent": 50}}) as http:
            responses = await many(http, 400)
            transport = http._transport
            assert isinstance(transport, MeshTransport)
            await asyncio.sleep(0.2)
            stats = transport.mirror.stats_of("svc")
    assert share(responses, "v1") == 100  # the shadow version gets copies only
    assert stats.mismatched == 0
    assert abs(stats.matched / 400 * 100 - 50) <= 8


def test_split_and_fault_draws_match_their_percentages_over_100000_draws() -> None:
    rng = random.Random(3)
    traffic = TrafficPolicy.model_validate({"split": {"v1": 90, "v2": 10}})
    versions = Counter(choose_version(traffic, {}, rng)[0] for _ in range(100_000))
    assert abs(versions["v2"] / 1000 - 10) <= 0.5
    faults = TrafficPolicy.model_validate(
        {"faults": {"abort": {"percent": 5}, "delay": {"percent": 30, "duration": "1s"}}}
    ).faults
    draws = [decide_faults(faults, rng) for _ in range(100_000)]
    assert abs(sum(d[1] is not None for d in draws) / 1000 - 5) <= 0.5
    assert abs(sum(d[0] > 0 for d in draws) / 1000 - 30) <= 0.5
