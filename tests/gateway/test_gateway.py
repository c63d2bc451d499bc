"""The gateway over real sockets: a real server in front, the mesh behind, in-memory registry."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import shoal
from asgi_server import HOST, serve_asgi
from shoal.gateway import Gateway, create_gateway, load_routes
from shoal.gateway._headers import request_headers
from shoal.gateway._routes import RouteTable
from shoal.manifest import RouteSpec
from shoal.registry import Discovery, InstanceRecord, MemoryRegistry
from shoal.runtime._inbound import Inbound, InstanceStatus
from shoal.types import ASGIApp, Message, Receive, Scope, Send

MiB = 1024 * 1024


# --- upstream services --------------------------------------------------------------


async def read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Says what it received; sends hop-by-hop headers the gateway must not pass on."""
    body = await read_body(receive)
    if scope["path"].endswith("/slow"):
        await asyncio.sleep(1.0)
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode()
        headers[key] = f"{headers[key]}, {value.decode()}" if key in headers else value.decode()
    payload = json.dumps(
        {
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": scope["raw_path"].decode(),
            "query": scope["query_string"].decode(),
            "headers": headers,
            "body_size": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"x-upstream", b"yes"),
                (b"keep-alive", b"timeout=5"),
                (b"connection", b"x-hop-response"),
                (b"x-hop-response", b"secret"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


@contextlib.asynccontextmanager
async def upstream(
    mesh: tuple[MemoryRegistry, Discovery], service: str, app: ASGIApp = echo
) -> AsyncIterator[int]:
    """Serve ``app`` as the one instance ``<service>-0`` of ``service``."""
    memory, discovery = mesh
    status = InstanceStatus(record(service, 1))
    async with serve_asgi(Inbound(app, status)) as port:
        await memory.put(record(service, port))
        await discovery.wait_for(lambda c: bool(c.ready(service)), timeout=2)
        yield port


def record(service: str, port: int) -> InstanceRecord:
    return InstanceRecord(
        app="t", service=service, instance=f"{service}-0", host=HOST, port=port,
        state="ready", started_at=time.time(), ttl=30,
    )  # fmt: skip


def route(prefix: str, service: str, *, strip: bool = False) -> RouteSpec:
    return RouteSpec(prefix=prefix, service=service, strip_prefix=strip)


@pytest.fixture
async def mesh() -> AsyncIterator[tuple[MemoryRegistry, Discovery]]:
    memory = MemoryRegistry()
    discovery = Discovery(memory)
    await discovery.start()
    yield memory, discovery
    await discovery.aclose()


@contextlib.asynccontextmanager
async def gateway(
    mesh: tuple[MemoryRegistry, Discovery], *routes: RouteSpec, timeout: float = 5.0
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway served by uvicorn on a free port, and a plain client pointed at it."""
    async with (
        shoal.client(discovery=mesh[1], timeout=timeout) as through_mesh,
        serve_asgi(create_gateway(routes, client=through_mesh)) as port,
        httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=10) as http,
    ):
        yield http


# --- routing ------------------------------------------------------------------------


async def test_longest_matching_prefix_wins(mesh: tuple[MemoryRegistry, Discovery]) -> None:
    routes = (route("/", "front"), route("/api/catalog", "catalog"), route("/api", "api"))
    async with (
        upstream(mesh, "front"),
        upstream(mesh, "api"),
        upstream(mesh, "catalog"),
        gateway(mesh, *routes) as http,
    ):
        answers = {p: await http.get(p) for p in ("/api/catalog/items", "/api/orders", "/x")}
    took = {p: (r.headers["shoal-route"], r.headers["shoal-instance"]) for p, r in answers.items()}
    assert took == {
        "/api/catalog/items": ("/api/catalog", "catalog-0"),
        "/api/orders": ("/api", "api-0"),
        "/x": ("/", "front-0"),
    }


async def test_prefixes_match_whole_path_segments(mesh: tuple[MemoryRegistry, Discovery]) -> None:
    async with upstream(mesh, "catalog"), gateway(mesh, route("/api/catalog", "catalog")) as http:
        status = {
            path: (await http.get(path)).status_code
            for path in (
                "/api/catalog",
                "/api/catalog/",
                "/api/catalog/items",
                "/api/%63atalog/items",  # an encoded letter is the same letter
                "/api/catalogue",
                "/api%2Fcatalog/items",  # an encoded slash is not a separator
                "/api",
            )
        }
    assert status == {
        "/api/catalog": 200,
        "/api/catalog/": 200,
        "/api/catalog/items": 200,
        "/api/%63atalog/items": 200,
        "/api/catalogue": 404,
        "/api%2Fcatalog/items": 404,
        "/api": 404,
    }


def test_route_table_prefers_depth_and_keeps_the_first_of_duplicate_prefixes() -> None:
    table = RouteTable(
        [route("/a/", "first"), route("/a", "second"), route("/a/b", "deep", strip=True)]
    )
    assert table.prefixes == ["/a", "/a/b"]
    assert [(m.route.service, m.path) for m in map(table.match, [b"/a/x", b"/a/b/c/"]) if m] == [
        ("first", b"/a/x"),
        ("deep", b"/c/"),
    ]
    assert table.match(b"*") is None
    with pytest.raises(ValueError, match="not a service name"):
        RouteTable([route("/", "example.com")])


async def test_strip_prefix_sends_the_rest_and_keeps_the_query(
    mesh: tuple[MemoryRegistry, Discovery],
) -> None:
    routes = (route("/api/catalog", "catalog", strip=True), route("/keep", "catalog"))
    async with upstream(mesh, "catalog"), gateway(mesh, *routes) as http:
        items = (await http.get("/api/catalog/items/a%2Fb?x=1&y=a%20b")).json()
        root = (await http.get("/api/catalog")).json()
        kept = (await http.get("/keep/items?q=1")).json()
    assert (items["raw_path"], items["query"]) == ("/items/a%2Fb", "x=1&y=a%20b")
    assert items["headers"]["x-forwarded-prefix"] == "/api/catalog"
    assert root["path"] == "/"
    assert (kept["path"], kept["query"]) == ("/keep/items", "q=1")
    assert "x-forwarded-prefix" not in kept["headers"]


# --- what crosses the gateway --------------------------------------------------------


async def test_request_bodies_stream_through_with_or_without_a_length(
    mesh: tuple[MemoryRegistry, Discovery],
) -> None:
    body = bytes(range(256)) * (12 * MiB // 256)  # above any in-memory limit one might set

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), MiB):
            yield body[start : start + MiB]

    async with upstream(mesh, "orders"), gateway(mesh, route("/", "orders")) as http:
        sized = (await http.post("/orders", content=body)).json()
        chunked = (await http.put("/orders/1", content=chunks())).json()
        small = (await http.patch("/orders/2", json={"n": 1})).json()
    digest = hashlib.sha256(body).hexdigest()
    assert (sized["method"], sized["body_size"], sized["body_sha256"]) == (
        "POST",
        len(body),
        digest,
    )
    assert sized["headers"]["content-length"] == str(len(body))
    assert (chunked["method"], chunked["body_size"], chunked["body_sha256"]) == (
        "PUT",
        len(body),
        digest,
    )
    assert chunked["headers"]["transfer-encoding"] == "chunked"
    assert (small["method"], small["body_size"]) == ("PATCH", len(b'{"n":1}'))


async def test_headers_cross_but_hop_by_hop_ones_stay_behind(
    mesh: tuple[MemoryRegistry, Discovery],
) -> None:
    async with upstream(mesh, "catalog"), gateway(mesh, route("/", "catalog")) as http:
        response = await http.get(
            "/h",
            headers={
                "x-custom": "kept",
                "authorization": "Bearer t",
                "connection": "x-drop-me",
                "x-drop-me": "1",
                "keep-alive": "timeout=5",
                "proxy-authorization": "secret",
                "te": "trailers",
            },
        )
    seen = response.json()["headers"]
    assert seen["x-custom"] == "kept"
    assert seen["authorization"] == "Bearer t"
    assert seen["host"] == "catalog"
    for name in ("connection", "x-drop-me", "keep-alive", "proxy-authorization", "te"):
        assert name not in seen, name
    assert seen["x-forwarded-for"] == HOST
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == http.base_url.netloc.decode()
    assert response.headers["x-upstream"] == "yes"
    assert response.headers["shoal-instance"] == "catalog-0"
    assert response.headers["shoal-route"] == "/"
    assert "x-hop-response" not in response.headers
    assert "keep-alive" not in response.headers
    assert len(response.headers.get_list("date")) == 1


def test_forwarded_headers_extend_the_chain_and_replace_client_claims() -> None:
    table = RouteTable([route("/api", "api", strip=True)])
    match = table.match(b"/api/x")
    assert match is not None
    scope: Scope = {
        "type": "http",
        "scheme": "https",
        "client": ("203.0.113.7", 50000),
        "headers": [
            (b"host", b"shop.example"),
            (b"x-forwarded-for", b"10.0.0.1"),
            (b"x-forwarded-proto", b"http"),
            (b"x-forwarded-host", b"evil.example"),
            (b"x-forwarded-prefix", b"/evil"),
            (b"proxy-connection", b"keep-alive"),
            (b"expect", b"100-continue"),
        ],
    }
    assert request_headers(scope, match) == [
        (b"x-forwarded-for", b"10.0.0.1, 203.0.113.7"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"shop.example"),
        (b"x-forwarded-prefix", b"/api"),
    ]


async def test_head_requests_get_the_head_only(mesh: tuple[MemoryRegistry, Discovery]) -> None:
    async with upstream(mesh, "catalog"), gateway(mesh, route("/", "catalog")) as http:
        response = await http.head("/h")
    assert response.status_code == 200
    assert int(response.headers["content-length"]) > 0
    assert response.content == b""


async def test_a_large_response_streams_back_before_the_service_has_finished(
    mesh: tuple[MemoryRegistry, Discovery],
) -> None:
    chunk = b"x" * (64 * 1024)
    first_seen = asyncio.Event()

    async def big(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await asyncio.wait_for(first_seen.wait(), timeout=5)  # only once the client has it
        for _ in range(16 * MiB // len(chunk) - 1):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    received = 0
    async with (
        upstream(mesh, "files", big),
        gateway(mesh, route("/", "files")) as http,
        http.stream("GET", "/big") as response,
    ):
        async for data in response.aiter_raw():
            received += len(data)
            first_seen.set()
    assert response.status_code == 200
    assert response.headers["transfer-encoding"] == "chunked"
    assert received == 16 * MiB


async def test_a_client_that_leaves_stops_the_upstream_exchange(
    mesh: tuple[MemoryRegistry, Discovery],
) -> None:
    upstream_saw_disconnect = asyncio.Event()

    async def endless(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        gone = asyncio.ensure_future(receive())  # http.disconnect, when the gateway lets go
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while not gone.done():
            await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
            await asyncio.sleep(0.01)
        upstream_saw_disconnect.set()

    async with upstream(mesh, "events", endless), gateway(mesh, route("/", "events")) as http:
        async with http.stream("GET", "/events") as response:
            async for _ in response.aiter_raw():
                break
        await asyncio.wait_for(upstream_saw_disconnect.wait(), timeout=5)


# --- failures explain themselves -----------------------------------------------------


async def test_a_path_without_a_route_is_404_listing_the_routes(
    mesh: tuple[MemoryRegistry, Discovery],
) -> None:
    routes = (route("/api/catalog", "catalog"), route("/api/orders", "orders"))
    async with gateway(mesh, *routes) as http:
        response = await http.get("/x")
    assert response.status_code == 404
    assert response.headers["shoal-reason"] == "no-route"
    assert response.json() == {
        "error": "no route for /x",
        "routes": ["/api/catalog", "/api/orders"],
    }


async def test_a_service_without_ready_instances_is_503_with_the_reason(
    mesh: tuple[MemoryRegistry, Discovery],
) -> None:
    async with gateway(mesh, route("/api", "ghost")) as http:
        response = await http.get("/api/x")
    assert response.status_code == 503
    assert response.headers["shoal-reason"] == "no-endpoints"
    assert response.headers["shoal-route"] == "/api"
    body = response.json()
    assert (body["service"], body["reason"], body["route"]) == ("ghost", "no-endpoints", "/api")
    assert "no ready instance of service 'ghost'" in body["error"]


async def test_instances_that_all_refuse_are_503_endpoints_unreachable(
    mesh: tuple[MemoryRegistry, Discovery],
) -> None:
    memory, discovery = mesh
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        closed = int(sock.getsockname()[1])
    await memory.put(record("dead", closed))
    await discovery.wait_for(lambda c: bool(c.ready("dead")), timeout=2)
    async with gateway(mesh, route("/", "dead")) as http:
        response = await http.post("/x", content=b"never sent")
    assert response.status_code == 503
    assert response.headers["shoal-reason"] == "endpoints-unreachable"
    assert response.json()["service"] == "dead"


async def test_a_slow_service_is_504_timeout(mesh: tuple[MemoryRegistry, Discovery]) -> None:
    async with upstream(mesh, "slow"), gateway(mesh, route("/", "slow"), timeout=0.2) as http:
        response = await http.get("/slow")
    assert response.status_code == 504
    assert response.headers["shoal-reason"] == "timeout"
    assert "did not answer in time" in response.json()["error"]


async def test_a_service_that_hangs_up_is_502_upstream_error(
    mesh: tuple[MemoryRegistry, Discovery],
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    memory, discovery = mesh
    server = await asyncio.start_server(hang_up, HOST, 0)
    async with server:
        await memory.put(record("rude", server.sockets[0].getsockname()[1]))
        await discovery.wait_for(lambda c: bool(c.ready("rude")), timeout=2)
        async with gateway(mesh, route("/", "rude")) as http:
            response = await http.get("/x")
    assert response.status_code == 502
    assert response.headers["shoal-reason"] == "upstream-error"
    body = response.json()
    assert "Traceback" not in response.text
    assert body["service"] == "rude"
    assert "failed before answering" in body["error"]


async def test_a_failure_of_the_gateway_itself_is_500_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug")

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(broken)) as through_nothing,
        serve_asgi(create_gateway([route("/", "svc")], client=through_nothing)) as port,
        httpx.AsyncClient(base_url=f"http://{HOST}:{port}") as http,
    ):
        response = await http.get("/x")
    assert response.status_code == 500
    assert response.headers["shoal-reason"] == "gateway-error"
    assert "Traceback" not in response.text
    assert "RuntimeError" in response.json()["error"]
    assert "a bug" in caplog.text  # the details go to the log


async def test_websockets_are_closed_as_not_supported() -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await create_gateway([route("/", "svc")])({"type": "websocket", "path": "/"}, receive, send)
    assert sent == [
        {
            "type": "websocket.close",
            "code": 1011,
            "reason": "the shoal gateway does not proxy websockets yet",
        }
    ]


# --- where routes come from ---------------------------------------------------------


def test_routes_come_from_the_environment_before_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "shoal.yaml").write_text(
        "app: shop\nservices:\n  catalog: {asgi: 'catalog:app'}\n"
        "gateway:\n  routes:\n    - {prefix: /api/catalog, service: catalog, strip_prefix: true}\n"
    )
    from_manifest = load_routes({"SHOAL_APP_DIR": str(tmp_path)})
    assert from_manifest == (route("/api/catalog", "catalog", strip=True),)
    from_env = load_routes(
        {
            "SHOAL_APP_DIR": str(tmp_path),
            "SHOAL_GATEWAY_ROUTES": '[{"prefix": "/", "service": "a"}]',
        }
    )
    assert from_env == (route("/", "a"),)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("[{", "SHOAL_GATEWAY_ROUTES: not valid JSON"),
        ('[{"prefix": "api", "service": "a"}]', "SHOAL_GATEWAY_ROUTES: routes[0].prefix: "),
        ('[{"prefix": "/", "service": "a", "strip": true}]', "routes[0].strip: "),
    ],
)
def test_bad_routes_in_the_environment_say_what_is_wrong(value: str, problem: str) -> None:
    with pytest.raises(shoal.ManifestError, match=re.escape(problem)):
        load_routes({"SHOAL_GATEWAY_ROUTES": value})


def test_a_manifest_without_a_gateway_section_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "shoal.yaml").write_text("app: shop\nservices:\n  a: {asgi: 'a:app'}\n")
    with pytest.raises(shoal.ManifestError, match="no gateway section"):
        load_routes({"SHOAL_APP_DIR": str(tmp_path)})


async def drive_lifespan(app: ASGIApp) -> list[Message]:
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    for kind in ("lifespan.startup", "lifespan.shutdown"):
        inbox.put_nowait({"type": kind})
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await asyncio.wait_for(app({"type": "lifespan"}, inbox.get, send), timeout=5)
    return sent


async def test_lifespan_loads_the_routes_and_fails_startup_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHOAL_GATEWAY_ROUTES", raising=False)
    monkeypatch.setenv("SHOAL_APP_DIR", str(tmp_path))
    failed = await drive_lifespan(Gateway())
    assert failed[0]["type"] == "lifespan.startup.failed"
    assert "the gateway cannot start" in failed[0]["message"]
    assert "shoal.yaml" in failed[0]["message"]
    monkeypatch.setenv("SHOAL_GATEWAY_ROUTES", '[{"prefix": "/", "service": "a"}]')
    started = await drive_lifespan(Gateway())
    assert [m["type"] for m in started] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


def test_the_gateway_package_exports_are_pinned() -> None:
    import shoal.gateway

    assert sorted(shoal.gateway.__all__) == [
        "Gateway",
        "ROUTES_ENV",
        "USER_HEADER",
        "app",
        "create_gateway",
        "load_routes",
        "parse_routes",
        "user_claims",
    ]
    assert isinstance(shoal.gateway.app, Gateway)
