"""Http11Pool against a real uvicorn server, and raw servers that misbehave on purpose.

Every test takes ``(server, pool)`` so that ``test_case_on_uvloop`` can run the
same coroutines again on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import uvloop

from asgi_server import serve_asgi
from shoal.mesh._http11 import ConnectFailedError, Http11Pool

HOST = "127.0.0.1"
BIG_CHUNK = 64 * 1024
BIG_CHUNKS = 80  # 5 MiB

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class App:
    """A raw ASGI app; records the client address of every connection it serves."""

    def __init__(self) -> None:
        self.clients: set[tuple[str, int]] = set()

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.clients.add(tuple(scope["client"]))
        path: str = scope["path"]
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if path == "/slow":
            await asyncio.sleep(0.5)
        status, headers, chunks, pause = self._route(scope, path, body)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for i, chunk in enumerate(chunks):
            if pause and i == 1:
                await asyncio.sleep(pause)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    def _route(
        self, scope: Message, path: str, body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], list[bytes], float]:
        if path == "/echo":
            seen = dict(scope["headers"])
            headers = [
                (b"x-transfer-encoding", seen.get(b"transfer-encoding", b"")),
                (b"x-content-length", seen.get(b"content-length", b"")),
            ]
            return 200, headers, [body], 0
        if path == "/big":
            length = str(BIG_CHUNK * BIG_CHUNKS).encode()
            return 200, [(b"content-length", length)], [b"x" * BIG_CHUNK] * BIG_CHUNKS, 0
        if path.startswith("/status/"):
            return int(path.removeprefix("/status/")), [], [], 0
        if path == "/head":
            return 200, [(b"content-length", b"100")], [b"y" * 100], 0
        if path == "/close":
            return 200, [(b"connection", b"close")], [b"bye"], 0
        if path == "/stall":
            return 200, [(b"content-length", b"8")], [b"1234", b"5678"], 0.5
        return 200, [(b"x-test", b"yes"), (b"content-type", b"text/plain")], [b"hello"], 0


class Server:
    def __init__(self, app: App, port: int) -> None:
        self.app = app
        self.port = port

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    @property
    def connections(self) -> int:
        return len(self.app.clients)


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Server]:
    app = App()
    async with serve_asgi(app) as port:
        yield Server(app, port)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with serving() as running:
        yield running


@pytest.fixture
async def pool(server: Server) -> AsyncIterator[Http11Pool]:
    pool = Http11Pool()
    yield pool
    await pool.aclose()


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[int]:
    """A bare TCP server; ``handler`` gets each connection and its index."""
    counter = itertools.count()
    tasks: set[asyncio.Task[None]] = set()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            tasks.add(task)
        try:
            await handler(reader, writer, next(counter))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    listener = await asyncio.start_server(on_client, HOST, 0)
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        listener.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await listener.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one request (head and Content-Length body); return its head."""
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            await reader.readexactly(int(value))
    return head


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def get(server: Server | int, path: str = "/", **kwargs: Any) -> httpx.Request:
    port = server if isinstance(server, int) else server.port
    return httpx.Request("GET", f"http://{HOST}:{port}{path}", **kwargs)


async def send(pool: Http11Pool, request: httpx.Request) -> httpx.Response:
    return await pool.send(HOST, request.url.port or 80, request)


# --- against uvicorn -------------------------------------------------------------------


async def test_get_round_trip_returns_status_headers_and_body(
    server: Server, pool: Http11Pool
) -> None:
    response = await send(pool, get(server, "/path?q=1"))
    assert response.status_code == 200
    assert response.headers["x-test"] == "yes"
    assert response.http_version == "HTTP/1.1"
    assert response.reason_phrase == "OK"
    assert await response.aread() == b"hello"


async def test_sequential_requests_reuse_one_connection(server: Server, pool: Http11Pool) -> None:
    for _ in range(100):
        response = await send(pool, get(server))
        assert await response.aread() == b"hello"
    assert server.connections == 1


async def test_post_with_content_length_body(server: Server, pool: Http11Pool) -> None:
    request = httpx.Request("POST", server.url("/echo"), content=b"x" * 100_000)
    response = await send(pool, request)
    assert response.headers["x-content-length"] == "100000"
    assert await response.aread() == b"x" * 100_000


async def test_post_with_chunked_async_generator_body(server: Server, pool: Http11Pool) -> None:
    async def body() -> AsyncIterator[bytes]:
        for i in range(5):
            yield str(i).encode() * 1000

    response = await send(pool, httpx.Request("POST", server.url("/echo"), content=body()))
    assert response.headers["x-transfer-encoding"] == "chunked"
    assert await response.aread() == b"".join(str(i).encode() * 1000 for i in range(5))


async def test_streamed_body_with_content_length_is_sent_raw(
    server: Server, pool: Http11Pool
) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"def"

    request = httpx.Request(
        "PUT", server.url("/echo"), headers={"Content-Length": "6"}, content=body()
    )
    response = await send(pool, request)
    assert response.headers["x-transfer-encoding"] == ""
    assert await response.aread() == b"abcdef"


async def test_body_stream_without_framing_headers_is_sent_chunked(
    server: Server, pool: Http11Pool
) -> None:
    class Body(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"no "
            yield b"length"

    request = httpx.Request("POST", server.url("/echo"), stream=Body())
    assert "transfer-encoding" not in request.headers
    response = await send(pool, request)
    assert response.headers["x-transfer-encoding"] == "chunked"
    assert await response.aread() == b"no length"


async def test_large_body_streams_incrementally_with_flow_control(
    server: Server, pool: Http11Pool
) -> None:
    response = await send(pool, get(server, "/big"))
    await asyncio.sleep(0.2)  # let the server push; reading pauses at ~256 KiB unread
    assert response.num_bytes_downloaded == 0
    buffered = sum(len(chunk) for chunk in getattr(response.stream, "chunks", ()))
    assert buffered < 1024 * 1024
    sizes = [len(chunk) async for chunk in response.aiter_raw()]
    assert sum(sizes) == BIG_CHUNK * BIG_CHUNKS
    assert len(sizes) > 1
    assert (await send(pool, get(server))).status_code == 200
    assert server.connections == 1


async def test_head_with_content_length_does_not_wait_for_a_body(
    server: Server, pool: Http11Pool
) -> None:
    async with asyncio.timeout(2):
        response = await send(pool, httpx.Request("HEAD", server.url("/head")))
        assert response.headers["content-length"] == "100"
        assert await response.aread() == b""
        assert await (await send(pool, get(server))).aread() == b"hello"
    assert server.connections == 1


@pytest.mark.parametrize("status", [204, 304])
async def test_bodiless_statuses_complete_and_keep_the_connection(
    server: Server, pool: Http11Pool, status: int
) -> None:
    async with asyncio.timeout(2):
        response = await send(pool, get(server, f"/status/{status}"))
        assert response.status_code == status
        assert await response.aread() == b""
        assert await (await send(pool, get(server))).aread() == b"hello"
    assert server.connections == 1


async def test_closing_a_stream_early_closes_its_connection(
    server: Server, pool: Http11Pool
) -> None:
    response = await send(pool, get(server, "/big"))
    async for _ in response.aiter_raw():
        break
    await response.aclose()
    assert await (await send(pool, get(server))).aread() == b"hello"
    assert server.connections == 2


async def test_read_timeout_waiting_for_the_head(server: Server, pool: Http11Pool) -> None:
    timeout = httpx.Timeout(5.0, read=0.1).as_dict()
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await send(pool, get(server, "/slow", extensions={"timeout": timeout}))
    assert time.monotonic() - started < 0.4


async def test_read_timeout_between_body_chunks(server: Server, pool: Http11Pool) -> None:
    timeout = httpx.Timeout(5.0, read=0.1).as_dict()
    response = await send(pool, get(server, "/stall", extensions={"timeout": timeout}))
    assert response.status_code == 200
    with pytest.raises(httpx.ReadTimeout):
        await response.aread()
    assert await (await send(pool, get(server))).aread() == b"hello"
    assert server.connections == 2


async def test_concurrent_requests_use_at_most_one_connection_each(
    server: Server, pool: Http11Pool
) -> None:
    async def one() -> bytes:
        return await (await send(pool, get(server))).aread()

    for _ in range(2):
        assert await asyncio.gather(*(one() for _ in range(50))) == [b"hello"] * 50
    assert 1 <= server.connections <= 50


async def test_connection_close_response_is_not_reused(server: Server, pool: Http11Pool) -> None:
    for _ in range(2):
        assert await (await send(pool, get(server, "/close"))).aread() == b"bye"
    assert server.connections == 2


async def test_drop_endpoint_closes_idle_connections(server: Server, pool: Http11Pool) -> None:
    await (await send(pool, get(server))).aread()
    pool.drop_endpoint(HOST, server.port)
    await (await send(pool, get(server))).aread()
    assert server.connections == 2


async def test_send_after_aclose_raises(server: Server, pool: Http11Pool) -> None:
    await (await send(pool, get(server))).aread()
    await pool.aclose()
    with pytest.raises(RuntimeError):
        await send(pool, get(server))


async def test_works_as_an_httpx_async_client_transport(server: Server, pool: Http11Pool) -> None:
    class Transport(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return await pool.send(HOST, server.port, request)

    async with httpx.AsyncClient(transport=Transport()) as client:
        assert (await client.get(server.url("/"))).text == "hello"
        assert (await client.post(server.url("/echo"), json={"a": 1})).json() == {"a": 1}
        async with client.stream("GET", server.url("/big")) as response:
            assert len(await response.aread()) == BIG_CHUNK * BIG_CHUNKS
    assert server.connections == 1


async def test_connection_refused_raises_connect_failed_quickly(
    server: Server, pool: Http11Pool
) -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConnectFailedError) as caught:
        await send(pool, get(port))
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    assert time.monotonic() - started < 1


@pytest.mark.skipif(
    sys.platform != "linux", reason="relies on Linux dropping SYNs to a full backlog"
)
async def test_connect_timeout_raises_connect_failed(server: Server, pool: Http11Pool) -> None:
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind((HOST, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):  # fill the accept queue; later SYNs are dropped
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect((HOST, port))
        timeout = httpx.Timeout(5.0, connect=0.2).as_dict()
        with pytest.raises(ConnectFailedError) as caught:
            await send(pool, get(port, extensions={"timeout": timeout}))
    assert isinstance(caught.value.__cause__, TimeoutError)


# --- against raw servers ---------------------------------------------------------------


async def test_idle_connection_closed_by_server_leaves_the_pool(
    server: Server, pool: Http11Pool
) -> None:
    closed = asyncio.Event()

    async def one_response_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        if index == 0:
            closed.set()

    async with raw_server(one_response_then_close) as port:
        assert await (await send(pool, get(port))).aread() == b"ok"
        await closed.wait()
        await asyncio.sleep(0.05)  # the client sees the FIN
        # A POST is never retried: it succeeds only if the dead connection was dropped.
        request = httpx.Request("POST", f"http://{HOST}:{port}/", content=b"data")
        assert await (await send(pool, request)).aread() == b"ok"


def _stale_after_first_response() -> Handler:
    """Connection 0 answers once, then closes on the next request without answering."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        while index != 0:
            await read_request(reader)
            writer.write(OK)
            await writer.drain()
        await read_request(reader)

    return handler


async def test_idempotent_request_on_a_stale_connection_is_retried(
    server: Server, pool: Http11Pool
) -> None:
    async with raw_server(_stale_after_first_response()) as port:
        await (await send(pool, get(port))).aread()
        assert await (await send(pool, get(port))).aread() == b"ok"


async def test_post_on_a_stale_connection_is_not_retried(server: Server, pool: Http11Pool) -> None:
    async with raw_server(_stale_after_first_response()) as port:
        await (await send(pool, get(port))).aread()
        request = httpx.Request("POST", f"http://{HOST}:{port}/", content=b"once")
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await send(pool, request)


def scripted(responses: dict[bytes, bytes]) -> Handler:
    """Answer each request by method: ``responses[method]`` (raw bytes), on one connection."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        while True:
            head = await read_request(reader)
            method = head.split(b" ", 1)[0]
            writer.write(responses[method])
            await writer.drain()
            if method == b"CLOSE":
                return

    return handler


@pytest.mark.parametrize(
    "head_response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    ],
    ids=["content-length", "chunked", "unframed"],
)
async def test_head_response_framing_is_ignored_and_connection_reused(
    server: Server, pool: Http11Pool, head_response: bytes
) -> None:
    connections = itertools.count()

    handler = scripted({b"HEAD": head_response, b"GET": OK})

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int) -> None:
        next(connections)
        await handler(reader, writer, i)

    async with raw_server(counting) as port, asyncio.timeout(2):
        for _ in range(3):
            response = await send(pool, httpx.Request("HEAD", f"http://{HOST}:{port}/"))
            assert await response.aread() == b""
            assert await (await send(pool, get(port))).aread() == b"ok"
    assert next(connections) == 1


async def test_interim_100_continue_is_skipped(server: Server, pool: Http11Pool) -> None:
    handler = scripted({b"GET": b"HTTP/1.1 100 Continue\r\n\r\n" + OK})
    async with raw_server(handler) as port, asyncio.timeout(2):
        response = await send(pool, get(port))
        assert response.status_code == 200
        assert await response.aread() == b"ok"


async def test_malformed_response_raises_remote_protocol_error(
    server: Server, pool: Http11Pool
) -> None:
    async with raw_server(scripted({b"GET": b"NOT HTTP AT ALL\r\n\r\n"})) as port:
        with pytest.raises(httpx.RemoteProtocolError):
            await send(pool, get(port))


async def test_connection_lost_mid_body_raises_read_error(server: Server, pool: Http11Pool) -> None:
    truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)
        writer.write(truncated)
        await writer.drain()

    async with raw_server(handler) as port:
        response = await send(pool, get(port))
        with pytest.raises(httpx.ReadError):
            await response.aread()


async def test_body_delimited_by_connection_close(server: Server, pool: Http11Pool) -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()

    async with raw_server(handler) as port:
        assert await (await send(pool, get(port))).aread() == b"until the end"


async def _expect_write_timeout(pool: Http11Pool, *, streamed: bool) -> None:
    async def never_reads(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await asyncio.sleep(10)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(512):
            yield b"z" * 65536

    content = body() if streamed else b"z" * (512 * 65536)
    timeout = httpx.Timeout(5.0, write=0.2).as_dict()
    async with raw_server(never_reads) as port:
        request = httpx.Request(
            "POST", f"http://{HOST}:{port}/", content=content, extensions={"timeout": timeout}
        )
        with pytest.raises(httpx.WriteTimeout):
            await send(pool, request)


async def test_write_timeout_streamed_body_server_not_reading(
    server: Server, pool: Http11Pool
) -> None:
    await _expect_write_timeout(pool, streamed=True)


async def test_write_timeout_in_memory_body_server_not_reading(
    server: Server, pool: Http11Pool
) -> None:
    await _expect_write_timeout(pool, streamed=False)


async def test_request_head_goes_out_exactly_as_httpx_built_it(
    server: Server, pool: Http11Pool
) -> None:
    heads: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int) -> None:
        heads.append(await read_request(reader))
        writer.write(OK)
        await writer.drain()

    async with raw_server(record) as port:
        request = get(port, "/p%20q?x=1&y", headers=[("X-Mixed-Case", "v"), ("x-dup", "1")])
        request.headers.raw.append((b"x-dup", b"2"))
        await (await send(pool, request)).aread()
    expected = b"GET /p%20q?x=1&y HTTP/1.1\r\n" + b"".join(
        name + b": " + value + b"\r\n" for name, value in request.headers.raw
    )
    assert heads == [expected + b"\r\n"]
    assert b"X-Mixed-Case: v\r\n" in heads[0]


async def test_transfer_encoding_other_than_chunked_is_refused(
    server: Server, pool: Http11Pool
) -> None:
    request = httpx.Request(
        "POST", server.url("/echo"), headers={"Transfer-Encoding": "gzip"}, content=b"x"
    )
    with pytest.raises(httpx.LocalProtocolError):
        await send(pool, request)


# --- the same, on uvloop ---------------------------------------------------------------

Case = Callable[[Server, Http11Pool], Awaitable[None]]
UVLOOP_CASES: list[Case] = [
    test_get_round_trip_returns_status_headers_and_body,
    test_sequential_requests_reuse_one_connection,
    test_post_with_chunked_async_generator_body,
    test_large_body_streams_incrementally_with_flow_control,
    test_head_with_content_length_does_not_wait_for_a_body,
    test_closing_a_stream_early_closes_its_connection,
    test_read_timeout_between_body_chunks,
    test_concurrent_requests_use_at_most_one_connection_each,
    test_connection_refused_raises_connect_failed_quickly,
    *([test_connect_timeout_raises_connect_failed] if sys.platform == "linux" else []),
    test_idle_connection_closed_by_server_leaves_the_pool,
    test_idempotent_request_on_a_stale_connection_is_retried,
    test_post_on_a_stale_connection_is_not_retried,
    test_connection_lost_mid_body_raises_read_error,
    test_write_timeout_streamed_body_server_not_reading,
    test_write_timeout_in_memory_body_server_not_reading,
]


@pytest.fixture
def uvloop_runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        yield runner


@pytest.mark.parametrize("case", UVLOOP_CASES, ids=lambda case: case.__name__[5:])
def test_case_on_uvloop(uvloop_runner: asyncio.Runner, case: Case) -> None:
    async def run() -> None:
        async with serving() as running:
            pool = Http11Pool()
            try:
                await case(running, pool)
            finally:
                await pool.aclose()

    uvloop_runner.run(run())
