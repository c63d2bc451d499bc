"""MeshTransport over real sockets, with an in-memory registry: choice, fail-fast, failover."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

import shoal
from asgi_server import HOST, serve_asgi
from shoal.mesh import is_service_host
from shoal.registry import Discovery, InstanceRecord, InstanceState, MemoryRegistry
from shoal.runtime._inbound import Inbound, InstanceStatus
from shoal.types import Receive, Scope, Send


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


def record(instance: str, port: int, state: InstanceState = "ready") -> InstanceRecord:
    return InstanceRecord(
        app="t", service="svc", instance=instance, host=HOST, port=port, state=state,
        started_at=time.time(), ttl=30,
    )  # fmt: skip


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def registry() -> AsyncIterator[tuple[MemoryRegistry, Discovery]]:
    memory = MemoryRegistry()
    discovery = Discovery(memory)
    await discovery.start()
    yield memory, discovery
    await discovery.aclose()


async def publish(memory: MemoryRegistry, discovery: Discovery, *records: InstanceRecord) -> None:
    for rec in records:
        await memory.put(rec)
    await discovery.wait_for(lambda c: len(c.instances("svc")) == len(records), timeout=2)


def test_service_hosts_are_bare_labels() -> None:
    assert is_service_host("catalog")
    assert is_service_host("legacy-billing")
    for host in ("localhost", "example.com", "127.0.0.1", "::1", ""):
        assert not is_service_host(host), host


async def test_requests_spread_over_ready_instances_and_name_who_answered(
    registry: tuple[MemoryRegistry, Discovery],
) -> None:
    memory, discovery = registry
    statuses = [InstanceStatus(record(f"svc-{i}", 1)) for i in range(2)]
    async with (
        serve_asgi(Inbound(hello, statuses[0])) as p0,
        serve_asgi(Inbound(hello, statuses[1])) as p1,
    ):
        await publish(memory, discovery, record("svc-0", p0), record("svc-1", p1))
        async with shoal.client(discovery=discovery) as http:
            responses = [await http.get(f"http://svc/n/{i}") for i in range(200)]
    assert responses[5].text == "/n/5"
    spread = Counter(r.headers["shoal-instance"] for r in responses)
    assert set(spread) == {"svc-0", "svc-1"}
    assert {r.extensions["shoal.instance"] for r in responses} == {"svc-0", "svc-1"}


async def test_no_ready_instance_fails_at_once_and_says_why(
    registry: tuple[MemoryRegistry, Discovery],
) -> None:
    memory, discovery = registry
    async with shoal.client(discovery=discovery) as http:
        started = time.perf_counter()
        with pytest.raises(shoal.NoEndpointsError, match="none is registered"):
            await http.get("http://svc/")
        assert time.perf_counter() - started < 0.1
        await publish(
            memory, discovery, record("svc-0", 1, "starting"), record("svc-1", 1, "draining")
        )
        with pytest.raises(httpx.ConnectError, match=r"2 registered \(1 draining, 1 starting\)"):
            await http.get("http://svc/")


async def test_refused_connection_fails_over_and_marks_the_instance_down(
    registry: tuple[MemoryRegistry, Discovery],
) -> None:
    memory, discovery = registry
    async with serve_asgi(hello) as port:
        await publish(memory, discovery, record("dead", closed_port()), record("alive", port))
        async with shoal.client(discovery=discovery) as http:
            responses = [await http.get("http://svc/x") for _ in range(50)]
            transport = http._transport
    assert all(r.status_code == 200 for r in responses)
    assert {r.extensions["shoal.instance"] for r in responses} == {"alive"}
    assert transport.balancer.is_down("dead")  # type: ignore[attr-defined]


async def test_every_instance_refusing_is_one_clear_error(
    registry: tuple[MemoryRegistry, Discovery],
) -> None:
    memory, discovery = registry
    await publish(memory, discovery, record("a", closed_port()), record("b", closed_port()))
    async with shoal.client(discovery=discovery) as http:
        with pytest.raises(
            shoal.EndpointsUnreachableError, match="every instance of service 'svc'"
        ):
            await http.get("http://svc/")


async def test_other_hosts_pass_through_unchanged(
    registry: tuple[MemoryRegistry, Discovery],
) -> None:
    _, discovery = registry
    async with serve_asgi(hello) as port, shoal.client(discovery=discovery) as http:
        response = await http.get(f"http://{HOST}:{port}/plain")
    assert response.text == "/plain"
    assert "shoal.instance" not in response.extensions


async def test_answer_cut_short_sends_idempotent_calls_elsewhere_but_not_posts(
    registry: tuple[MemoryRegistry, Discovery],
) -> None:
    memory, discovery = registry

    async def dies_mid_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()
        writer.close()

    dying = await asyncio.start_server(dies_mid_answer, HOST, 0)
    dying_port = dying.sockets[0].getsockname()[1]
    try:
        async with serve_asgi(hello) as port:
            await publish(memory, discovery, record("dying", dying_port), record("alive", port))
            async with shoal.client(discovery=discovery) as http:
                answers = [await http.get("http://svc/x") for _ in range(20)]
                assert {r.extensions["shoal.instance"] for r in answers} == {"alive"}
                assert all(r.text == "/x" for r in answers)
                http._transport.balancer.forget(())  # type: ignore[attr-defined]
                for dest in http._transport.destinations.values():  # type: ignore[attr-defined]
                    dest.outlier.forget(())
                failed = 0
                for _ in range(50):  # p2c reaches the dying instance soon enough
                    try:
                        await http.post("http://svc/x", content=b"pay once")
                    except httpx.TransportError:
                        failed += 1
                assert failed > 0, "a cut-off POST must surface, not be sent again"
    finally:
        dying.close()
        await dying.wait_closed()
