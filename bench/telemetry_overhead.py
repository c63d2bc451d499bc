"""What tracing costs a mesh call: telemetry off, 1 % sampled and 100 % sampled.

Three server processes, one per mode, configured as `shoal serve` configures
uvicorn (uvloop, httptools, no access log, shoal's ``Inbound`` middleware,
plaintext), answer the benchmark's 33-byte JSON body. Three client processes,
one per mode, call their server through ``shoal.client()`` by service name (an
in-memory discovery, ``StaticPolicies``). A process can install only one tracer
provider, hence a client and a server process per mode:

* **off**: no tracer provider anywhere (the OpenTelemetry API's no-op spans).
* **1%** / **100%**: both processes install tracing as ``shoal serve`` does
  (``install_tracing``: ``SHOAL_TRACE_SAMPLE`` 0.01 / 1.0, parent-based ratio
  sampler, the ``SpanShipper`` publishing JSON batches every 0.5 s) on a real
  Backbone to an embedded nats-server started here; this process subscribes to
  the span subject as the supervisor would, and counts what arrives.

This process orchestrates: the clients run phases on command and print their
figures as JSON. A phase is CONCURRENCY workers calling back to back for
SECONDS (closed loop). Round after round every mode runs one phase, the order
alternating (off 1% 100%, then 100% 1% off); figures are medians of ROUNDS
rounds. CPU per call is ``time.process_time()`` of the client and of its server
(read by the server itself), each after flushing its queued spans, so the
phase's shipping is counted. Then one 100 % phase under cProfile (client) splits
the added CPU between the OpenTelemetry SDK and shoal's conversion and shipping,
and a micro-benchmark (no profiler) times a span's pieces one by one, and a
server+client span pair through shoal's light span path against the same pair
made with the OpenTelemetry SDK (shoal's path before ``mesh._spans``).

The clients are pinned to CPU 0 and the servers to CPU 1 (``--no-pin`` lets the
scheduler place them); nats-server and this process are not pinned.

    python bench/telemetry_overhead.py [--seconds 2.5] [--concurrency 16] [--rounds 7]
                                       [--no-pin] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import functools
import gc
import json
import os
import platform
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import IO, Any, cast

import httpx
import nats
import uvicorn
import uvloop
from _asgi_hello import app as hello_app
from _machine import cpu_steal, source_state, stop_processes
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import shoal
from shoal.backbone import Backbone, EmbeddedNats
from shoal.exceptions import ShoalError
from shoal.mesh import StaticPolicies
from shoal.mesh._http11 import ConnectFailedError, Http11Pool
from shoal.mesh._spans import SpanData, Tracing, set_active
from shoal.mesh._tracing import client_span, server_span
from shoal.registry import Discovery, InstanceRecord, MemoryRegistry
from shoal.runtime._inbound import Inbound, InstanceStatus
from shoal.runtime._serve import _Server, bind_socket
from shoal.runtime._telemetry import (
    SpanShipper,
    data_to_json,
    data_to_readable,
    install_tracing,
    span_subject,
    span_to_json,
    tracing_resource,
)
from shoal.types import ASGIApp, Receive, Scope, Send

APP = "bench"
SERVICE = "hello"
CLIENT_SERVICE = "caller"
MODES = ("off", "1%", "100%")
SAMPLE = {"1%": "0.01", "100%": "1.0"}
SLUG = {"off": "off", "1%": "1pct", "100%": "100pct"}
BENCH = "/_bench/"  # answered before Inbound: no span, the same in every mode
STATS_PATH = BENCH + "stats"
TICK = os.sysconf("SC_CLK_TCK")
Figures = dict[str, float]
Call = Callable[[], Awaitable[httpx.Response]]


# -- the servers -----------------------------------------------------------------


def with_stats(inner: ASGIApp, shipper: SpanShipper | None) -> ASGIApp:
    """``inner``, and beside it ``BENCH``: ``stats`` (this process's CPU time and spans
    shipped, read after shipping what is queued), ``profile/on`` and ``profile/off``."""
    profiler = cProfile.Profile()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(BENCH):
            await inner(scope, receive, send)
            return
        answer: dict[str, float] = {}
        if scope["path"] == STATS_PATH:
            if shipper is not None:
                await shipper.flush()
            shipped = shipper.shipped if shipper is not None else 0
            answer = {"cpu": time.process_time(), "shipped": shipped}
        elif scope["path"].endswith("/on"):
            profiler.enable()
        else:
            profiler.disable()
            answer = profile_totals(pstats.Stats(profiler), SERVER_ENTRIES)
        body = json.dumps(answer).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def tracing(mode: str, nats_url: str, instance: str) -> tuple[Backbone, SpanShipper] | None:
    """For a traced mode, install tracing as ``shoal serve`` does and start shipping."""
    if mode == "off":
        return None
    backbone = await Backbone.connect(nats_url, name=f"{APP}/{instance}")
    shipper = install_tracing(backbone, APP, instance.rsplit("-", 1)[0], instance)
    shipper.start()
    return backbone, shipper


async def untrace(traced: tuple[Backbone, SpanShipper] | None) -> None:
    if traced is not None:
        await traced[1].aclose()
        await traced[0].aclose()


async def serve(mode: str, nats_url: str) -> None:
    """One server as `shoal serve` runs it, plaintext; prints its port once serving."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    record = InstanceRecord(
        app=APP, service=SERVICE, instance=f"{SERVICE}-{SLUG[mode]}", host="127.0.0.1",
        port=port, state="ready", started_at=time.time(), pid=os.getpid(),
    )  # fmt: skip
    traced = await tracing(mode, nats_url, record.instance)
    inbound = Inbound(cast(ASGIApp, hello_app), InstanceStatus(record), policies=StaticPolicies())
    config = uvicorn.Config(
        with_stats(inbound, traced[1] if traced else None),
        loop="none",
        http="httptools",
        ws="none",
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_keep_alive=30,
    )

    async def started() -> None:
        print(f"PORT {port}", flush=True)

    server = _Server(config, started, None)
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGTERM, lambda: setattr(server, "should_exit", True)
    )
    try:
        await server.serve(sockets=[sock])
    finally:
        await untrace(traced)


# -- the clients -----------------------------------------------------------------


async def closed_loop(call: Call, concurrency: int, seconds: float) -> Figures:
    """``concurrency`` workers call back to back for ``seconds``: rate, latency, errors."""
    clock = time.perf_counter
    latencies: list[float] = []
    errors = 0
    end = clock() + seconds

    async def worker() -> None:
        nonlocal errors
        while clock() < end:
            start = clock()
            try:
                response = await call()
                await response.aread()
            except (httpx.HTTPError, ConnectFailedError, ShoalError):
                errors += 1
                continue
            latencies.append(clock() - start)
            if response.status_code != 200:
                raise RuntimeError(f"benchmark call failed: {response.status_code}")

    start = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = clock() - start
    latencies.sort()
    return {
        "calls": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
        "errors": errors,
    }


class Client:
    """One mode's client: the mesh client, its shipper (if traced), its server's figures."""

    def __init__(self, http: httpx.AsyncClient, port: int, shipper: SpanShipper | None) -> None:
        self.http = http
        self.port = port
        self.shipper = shipper
        self.stats_pool = Http11Pool()
        self.calls = 0

    async def server_stats(self, path: str = STATS_PATH) -> dict[str, float]:
        request = httpx.Request("GET", f"http://{SERVICE}{path}")
        response = await self.stats_pool.send("127.0.0.1", self.port, request)
        return cast(dict[str, float], json.loads(await response.aread()))

    async def mark(self) -> tuple[float, float, dict[str, float]]:
        """(CPU, spans shipped) of this process and its server's stats, queues flushed."""
        if self.shipper is not None:
            await self.shipper.flush()
        shipped = self.shipper.shipped if self.shipper is not None else 0
        return time.process_time(), shipped, await self.server_stats()

    async def phase(self, concurrency: int, seconds: float) -> Figures:
        """One closed-loop phase with CPU per call and spans shipped on either side."""
        gc.collect()
        await asyncio.sleep(0.1)
        url = f"http://{SERVICE}/item"
        cpu, shipped, server = await self.mark()
        figures = await closed_loop(lambda: self.http.get(url), concurrency, seconds)
        cpu2, shipped2, server2 = await self.mark()
        calls = max(figures["calls"], 1)
        self.calls += int(figures["calls"])
        return figures | {
            "client_us": (cpu2 - cpu) / calls * 1e6,
            "server_us": (server2["cpu"] - server["cpu"]) / calls * 1e6,
            "client_spans": shipped2 - shipped,
            "server_spans": server2["shipped"] - server["shipped"],
        }

    async def profile(self, concurrency: int, seconds: float) -> dict[str, Any]:
        """One phase with the client and its server under cProfile: µs a call in each
        tracing entry point and its parts."""
        await self.server_stats(BENCH + "profile/on")
        profiler = cProfile.Profile()
        profiler.enable()
        figures = await self.phase(concurrency, seconds)
        profiler.disable()
        server = await self.server_stats(BENCH + "profile/off")
        client = profile_totals(pstats.Stats(profiler), CLIENT_ENTRIES)
        per = 1e6 / max(figures["calls"], 1)
        return {
            "figures": figures,
            "client": {k: v * per for k, v in client.items()},
            "server": {k: v * per for k, v in server.items()},
        }

    async def done(self) -> dict[str, float]:
        _, shipped, server = await self.mark()
        return {"calls": self.calls, "client_shipped": shipped, "server_shipped": server["shipped"]}


async def client(mode: str, nats_url: str, port: int) -> None:
    """A client process: runs phases as stdin asks, answers each with one JSON line."""
    os.environ["SHOAL_SERVICE"] = CLIENT_SERVICE
    traced = await tracing(mode, nats_url, f"{CLIENT_SERVICE}-{SLUG[mode]}")
    registry = MemoryRegistry()
    await registry.put(
        InstanceRecord(
            app=APP, service=SERVICE, instance=f"{SERVICE}-{SLUG[mode]}", host="127.0.0.1",
            port=port, state="ready", started_at=time.time(), ttl=3600,
        )
    )  # fmt: skip
    discovery = Discovery(registry)
    await discovery.start()
    loop = asyncio.get_running_loop()
    try:
        async with shoal.client(discovery=discovery, policies=StaticPolicies()) as http:
            me = Client(http, port, traced[1] if traced else None)
            print("READY", flush=True)
            while True:
                words = (await loop.run_in_executor(None, sys.stdin.readline)).split()
                if not words or words[0] == "quit":
                    print(json.dumps(await me.done()), flush=True)
                    break
                command, concurrency, seconds = words[0], int(words[1]), float(words[2])
                answer: Any
                if command == "run":
                    answer = await me.phase(concurrency, seconds)
                elif command == "freeze":  # after the warm-up: the heap out of gc's way
                    gc.collect()
                    gc.freeze()
                    answer = {}
                elif command == "profile":
                    answer = await me.profile(concurrency, seconds)
                else:
                    answer = micro(int(seconds))
                print(json.dumps(answer), flush=True)
            await me.stats_pool.aclose()
    finally:
        await discovery.aclose()
        await untrace(traced)


# -- where the time goes -----------------------------------------------------------

# Entry points from shoal's code into tracing, disjoint: (label, file suffix, function).
# Then their parts; a part's figure includes what it calls (cumtime), and the
# outermost of nested same-named functions (ParentBased -> TraceIdRatioBased) counts.
CLIENT_ENTRIES = [
    ("shoal: client_span()", "mesh/_tracing.py", "client_span"),
    ("shoal: ClientSpan.headers()", "mesh/_tracing.py", "headers"),
    ("shoal: ClientSpan.answered()", "mesh/_tracing.py", "answered"),
]
SERVER_ENTRIES = [
    ("shoal: server_span()", "mesh/_tracing.py", "server_span"),
    ("shoal: ServerSpan.forward()", "mesh/_tracing.py", "forward"),
    ("shoal: ServerSpan.end()", "mesh/_tracing.py", "end"),
]
SHIPPING = [
    ("shoal: SpanShipper.flush()", "runtime/_telemetry.py", "flush"),
    ("nats-py flusher task (socket writes)", "nats/aio/client.py", "_flusher"),
]
DETAILS = [
    ("  propagator extract", "propagation/tracecontext.py", "extract"),
    ("  SDK Tracer.start_span", "sdk/trace/__init__.py", "start_span"),
    ("    sampler should_sample", "sdk/trace/sampling.py", "should_sample"),
    ("    id generation, trace", "sdk/trace/id_generator.py", "generate_trace_id"),
    ("    id generation, span", "sdk/trace/id_generator.py", "generate_span_id"),
    ("    BoundedAttributes", "opentelemetry/attributes/__init__.py", "__init__"),
    ("    Span.start", "sdk/trace/__init__.py", "start"),
    ("  context attach", "opentelemetry/context/__init__.py", "attach"),
    ("  context detach", "opentelemetry/context/__init__.py", "detach"),
    ("  propagator inject", "propagation/tracecontext.py", "inject"),
    ("  SDK Span.set_attribute", "sdk/trace/__init__.py", "set_attribute"),
    ("  SDK Span.set_status", "sdk/trace/__init__.py", "set_status"),
    ("  SDK Span.end", "sdk/trace/__init__.py", "end"),
    ("    SpanShipper.on_end (shoal)", "runtime/_telemetry.py", "on_end"),
    ("  span_to_json (shoal)", "runtime/_telemetry.py", "span_to_json"),
    ("  light: traceparent parse", "mesh/_spans.py", "parse_traceparent"),
    ("  light: SpanData()", "mesh/_spans.py", "__init__"),
    ("  light: ids", "mesh/_spans.py", "new_span_id"),
    ("  light: data_to_json (shoal)", "runtime/_telemetry.py", "data_to_json"),
    ("  json.dumps", "json/__init__.py", "dumps"),
    ("  nats publish", "nats/aio/client.py", "publish"),
]
OWN = "shoal's own lines in the entry points"
Entry = tuple[str, str, str]


def profile_totals(stats: pstats.Stats, entries: list[Entry]) -> dict[str, float]:
    """Seconds in each tracing entry point and its parts, and in all the profile."""
    table = cast(dict[tuple[str, int, str], tuple[int, int, float, float, Any]], stats.stats)  # type: ignore[attr-defined]

    def find(suffix: str, name: str, inclusive: bool = True) -> float:
        found = [
            (v[3] if inclusive else v[2])
            for (path, _, func), v in table.items()
            if func == name and path.endswith(suffix)
        ]
        if name == "should_sample":
            return max(found, default=0.0)
        return sum(found)

    totals = {"profile total": sum(v[2] for v in table.values())}
    for label, suffix, name in [*entries, *SHIPPING, *DETAILS]:
        totals[label] = find(suffix, name)
    totals[OWN] = sum(find(s, n, inclusive=False) for _, s, n in entries)
    return totals


class Collect(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def best(fn: Callable[[], None], n: int, repeat: int = 5) -> float:
    """µs per iteration of ``fn`` run ``n`` times, best of ``repeat``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) / n * 1e6


def micro(n: int) -> dict[str, float]:
    """A client span's life in the SDK, shipping and OTLP encoding, and a server+client span
    pair through shoal's light path against the same pair made with the SDK (µs a span,
    or a pair)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    propagator = TraceContextTextMapPropagator()
    out: dict[str, float] = {}
    collected: dict[float, Collect] = {}
    for ratio in (1.0, 0.0):
        sink = collected[ratio] = Collect()
        provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
        provider.add_span_processor(sink)
        tracer = provider.get_tracer("shoal")

        def life(tracer: trace.Tracer = tracer, sink: Collect = sink) -> None:
            sink.spans.clear()
            for _ in range(n):
                span = tracer.start_span(
                    "GET hello",
                    kind=SpanKind.CLIENT,
                    attributes={
                        "http.request.method": "GET",
                        "server.address": "127.0.0.1:8000",
                        "shoal.service": "hello",
                        "shoal.instance": "hello-1",
                        "shoal.attempt": 1,
                    },
                )
                carrier: dict[str, str] = {}
                propagator.inject(carrier, context=trace.set_span_in_context(span))
                if span.is_recording():
                    span.set_attribute("http.response.status_code", 200)
                    span.end()

        label = "sampled" if ratio else "not sampled"
        out[f"SDK client span, {label}: start, inject traceparent, attributes, end"] = best(life, n)
    spans = collected[1.0].spans

    def to_json() -> None:
        for i in range(0, len(spans), 512):
            json.dumps(
                [span_to_json(s, "caller", "caller-1") for s in spans[i : i + 512]],
                separators=(",", ":"),
            ).encode()

    def to_otlp_sdk() -> None:
        for i in range(0, len(spans), 512):
            encode_spans(spans[i : i + 512]).SerializeToString()

    out["shoal shipping: span_to_json + json.dumps"] = best(to_json, len(spans))
    out["OTLP protobuf from SDK spans (the SDK exporter's encoder)"] = best(to_otlp_sdk, len(spans))

    light: collections.deque[SpanData] = collections.deque(maxlen=20_000)
    previous = set_active(Tracing(1.0, light.append))
    try:
        for _ in range(3):  # some to convert below, as the 100 % run ships them
            light_pair(1, TRACEPARENT)
    finally:
        set_active(previous)
    records = (list(light) * (n // len(light) + 1))[:n]  # the same few, n times over
    resource = tracing_resource(APP, "caller", "caller-1")

    def light_json() -> None:
        for i in range(0, len(records), 512):
            json.dumps(
                [data_to_json(s, "caller", "caller-1") for s in records[i : i + 512]],
                separators=(",", ":"),
            ).encode()

    def light_otlp() -> None:
        for i in range(0, len(records), 512):
            batch = [data_to_readable(s, resource) for s in records[i : i + 512]]
            encode_spans(batch).SerializeToString()

    out["light shipping: data_to_json + json.dumps"] = best(light_json, len(records))
    out["OTLP protobuf from light spans (to ReadableSpan, the SDK's encoder)"] = best(
        light_otlp, len(records)
    )
    for sampled in (True, False):
        label = "sampled" if sampled else "not sampled"
        flag = b"01" if sampled else b"00"
        parent = TRACEPARENT[:-2] + flag
        pairs: collections.deque[SpanData] = collections.deque(maxlen=20_000)
        previous = set_active(Tracing(1.0, pairs.append))
        try:
            figure = best(functools.partial(light_pair, n, parent), n)
        finally:
            set_active(previous)
        out[f"pair, light (shoal's path), {label}: server+client span, forward, headers"] = figure
        provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(1.0)))
        provider.add_span_processor(Collect())
        tracer = provider.get_tracer("shoal")
        out[f"pair, SDK (shoal's old path), {label}: the same"] = best(
            functools.partial(sdk_pair, tracer, n, parent), n
        )
    return out


TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
PAIR_SCOPE: Scope = {
    "type": "http",
    "method": "GET",
    "path": "/item",
    "headers": [(b"host", b"hello"), (b"user-agent", b"python-httpx"), (b"x-shoal-caller", b"c")],
}


def light_pair(n: int, traceparent: bytes) -> None:
    """A request's server span (from a caller's ``traceparent``) and one mesh call's
    client span inside it, through shoal's own functions."""
    scope = {**PAIR_SCOPE, "headers": [*PAIR_SCOPE["headers"], (b"traceparent", traceparent)]}
    for _ in range(n):
        span = server_span(scope, "hello", "caller")
        span.forward(scope)
        client = client_span("GET", "hello", "hello-1", "127.0.0.1:8000", 1)
        client.headers()
        client.answered(200, None)
        span.status = 200
        span.end()


def sdk_pair(tracer: trace.Tracer, n: int, traceparent: bytes) -> None:
    """The same pair as shoal made it with the OpenTelemetry SDK before the light path
    (``git show bfdce54:src/shoal/mesh/_tracing.py``)."""
    propagator = TraceContextTextMapPropagator()
    scope = {**PAIR_SCOPE, "headers": [*PAIR_SCOPE["headers"], (b"traceparent", traceparent)]}
    names = frozenset({b"traceparent", b"tracestate"})
    for _ in range(n):
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        parent = propagator.extract(carrier)
        span = tracer.start_span(
            "GET /item",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": "GET", "url.path": "/item", "shoal.service": "hello",
                "shoal.caller": "caller",
            },
        )  # fmt: skip
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        out: dict[str, str] = {}
        propagator.inject(out, context=trace.set_span_in_context(span))
        headers = [(k, v) for k, v in scope["headers"] if k not in names]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out.items()]
        _ = {**scope, "headers": headers}
        client = tracer.start_span(
            "GET hello",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "GET", "server.address": "127.0.0.1:8000",
                "shoal.service": "hello", "shoal.instance": "hello-1", "shoal.attempt": 1,
            },
        )  # fmt: skip
        out = {}
        propagator.inject(out, context=trace.set_span_in_context(client))
        if client.is_recording():
            client.set_attribute("http.response.status_code", 200)
            client.end()
        if span.is_recording():
            span.set_attribute("http.response.status_code", 200)
            span.end()
        otel_context.detach(token)


# -- orchestration ------------------------------------------------------------------


class Child:
    """A subprocess that answers a line of JSON to each command line."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )

    async def line(self) -> str:
        out = cast(IO[str], self.proc.stdout)
        text = await asyncio.to_thread(out.readline)
        if not text:
            raise RuntimeError(f"{self.proc.args!r} (pid {self.proc.pid}) ended")
        return text

    async def ask(self, command: str, concurrency: int = 0, seconds: float = 0) -> Any:
        stdin = cast(IO[str], self.proc.stdin)
        stdin.write(f"{command} {concurrency} {seconds}\n")
        stdin.flush()
        return json.loads(await self.line())


def env_for(mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP")}
    env.pop("SHOAL_TRACE_SAMPLE", None)
    if mode in SAMPLE:
        env["SHOAL_TRACE_SAMPLE"] = SAMPLE[mode]
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc, 10 ms steps)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (Linux /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])
    return (total - fields[3] - fields[4]) / TICK, total / TICK


def others_share(pids: Iterable[int]) -> Callable[[], float]:
    """The share of the machine's CPU that processes other than ours use from now on."""
    pids = list(pids)

    def ours() -> float:
        return time.process_time() + sum(cpu_seconds(pid) for pid in pids)

    busy, total = machine_cpu()
    mine = ours()

    def share() -> float:
        now_busy, now_total = machine_cpu()
        return max(0.0, (now_busy - busy) - (ours() - mine)) / max(now_total - total, 1e-9)

    return share


Rounds = dict[str, list[Figures]]


async def main(args: argparse.Namespace) -> None:
    print(source_state())
    print(
        f"machine: {os.cpu_count()} CPUs, {cpu_model()}; Python {platform.python_version()}; "
        f"opentelemetry-sdk {otel_version()}"
    )
    received: collections.Counter[str] = collections.Counter()
    servers: dict[str, Child] = {}
    clients: dict[str, Child] = {}
    with tempfile.TemporaryDirectory(prefix="shoal-bench-telemetry-") as tmp:
        backbone = EmbeddedNats(tmp)
        await backbone.start()
        watcher = await nats.connect(backbone.url)
        try:

            async def count(msg: Any) -> None:  # as the supervisor would receive them
                data: bytes = msg.data
                at = data.find(b'"instance":"') + 12
                received[data[at : data.find(b'"', at)].decode()] += data.count(b'"trace_id"')

            await watcher.subscribe(span_subject(APP), cb=count)
            for mode in MODES:
                servers[mode] = Child(["--serve", mode, "--nats", backbone.url], env_for(mode))
            for mode in MODES:
                port = int((await servers[mode].line()).split()[1])
                argv = ["--client", mode, "--nats", backbone.url, "--port", str(port)]
                clients[mode] = Child(argv, env_for(mode))
                if args.pin:
                    os.sched_setaffinity(servers[mode].proc.pid, {1})
                    os.sched_setaffinity(clients[mode].proc.pid, {0})
            for mode in MODES:
                if (await clients[mode].line()).strip() != "READY":
                    raise RuntimeError(f"the {mode} client did not start")
            pids = [c.proc.pid for c in [*servers.values(), *clients.values()]]
            rounds = await measure(clients, [*pids, cast(int, backbone.pid)], args)
            profile = await clients["100%"].ask("profile", args.concurrency, args.seconds)
            micro_figures = await clients["100%"].ask("micro", 0, 2000 if args.quick else 20000)
            totals = {mode: await clients[mode].ask("quit") for mode in MODES}
            await asyncio.sleep(0.5)  # the last batches on their way to the watcher
        finally:
            stop_processes([c.proc for c in [*clients.values(), *servers.values()]])
            await watcher.close()
            await backbone.stop()
    report(rounds, profile, micro_figures, totals, received, args)


async def measure(clients: dict[str, Child], pids: list[int], args: argparse.Namespace) -> Rounds:
    for mode in MODES:  # warm up pools, code paths, the servers' adaptive limits
        await clients[mode].ask("run", args.concurrency, min(args.seconds, 1.0))
        await clients[mode].ask("freeze")
    rounds: Rounds = {mode: [] for mode in MODES}
    steal, others = cpu_steal(), others_share(pids)
    for i in range(args.rounds):
        share = others_share(pids)
        order = MODES if i % 2 == 0 else MODES[::-1]
        for mode in order:
            rounds[mode].append(await clients[mode].ask("run", args.concurrency, args.seconds))
        last = {mode: rounds[mode][-1] for mode in MODES}
        print(
            f"  round {i + 1:>2} ({' '.join(order)}): req/s "
            + " | ".join(f"{m} {last[m]['rps']:,.0f}" for m in MODES)
            + "; CPU/call "
            + " | ".join(
                f"{m} {last[m]['client_us']:.0f}+{last[m]['server_us']:.0f} µs" for m in MODES
            )
            + f"; other processes {share():.0%} of the CPU",
            flush=True,
        )
    stolen, total = (b - a for a, b in zip(steal, cpu_steal(), strict=True))
    print(
        f"CPU steal during the rounds: {stolen / max(total, 1):.1%}; other processes on the "
        f"machine used {others():.0%} of its CPU"
    )
    return rounds


def report(
    rounds: Rounds,
    profile: dict[str, Any],
    micro_figures: dict[str, float],
    totals: dict[str, dict[str, float]],
    received: collections.Counter[str],
    args: argparse.Namespace,
) -> None:
    med = {m: {k: statistics.median(r[k] for r in rounds[m]) for k in rounds[m][0]} for m in MODES}
    cpu = {m: med[m]["client_us"] + med[m]["server_us"] for m in MODES}
    print(
        f"median of {args.rounds} rounds, {args.concurrency} workers, {args.seconds:g} s a phase; "
        "CPU per call client+server:"
    )
    for mode in MODES:
        f = med[mode]
        paired = sorted(
            a["rps"] / b["rps"] for a, b in zip(rounds[mode], rounds["off"], strict=True)
        )
        spans = (
            sum(r["client_spans"] for r in rounds[mode]),
            sum(r["server_spans"] for r in rounds[mode]),
        )
        calls = sum(r["calls"] for r in rounds[mode])
        print(
            f"  {mode:>4}: {f['rps']:>6,.0f} req/s, ratio {f['rps'] / med['off']['rps']:.3f} "
            f"(same round: median {statistics.median(paired):.3f}, range {paired[0]:.3f}-"
            f"{paired[-1]:.3f}); p50 {f['p50']:.2f} ms, p99 {f['p99']:.2f} ms; CPU "
            f"{f['client_us']:.0f}+{f['server_us']:.0f} = {cpu[mode]:.0f} µs "
            f"(+{cpu[mode] - cpu['off']:.0f}); spans shipped per call client/server "
            f"{spans[0] / max(calls, 1):.4f}/{spans[1] / max(calls, 1):.4f}; "
            f"errors {sum(r['errors'] for r in rounds[mode]):.0f}"
        )
    print("spans over the whole run (warm-up and profile included):")
    for mode in MODES:
        t = totals[mode]
        got = received[f"{CLIENT_SERVICE}-{SLUG[mode]}"], received[f"{SERVICE}-{SLUG[mode]}"]
        print(
            f"  {mode:>4}: {t['calls']:.0f} calls; shipped client {t['client_shipped']:.0f}, "
            f"server {t['server_shipped']:.0f}; received over NATS {got[0]} + {got[1]}"
        )
    for side, entries in (("client", CLIENT_ENTRIES), ("server", SERVER_ENTRIES)):
        print_profile(side, entries, profile, med, args)
    print("micro-benchmark, µs a span or pair (best of 5, no profiler, the 100 % client):")
    for label, value in micro_figures.items():
        print(f"  {label:<78} {value:6.2f}")
    results = [
        ("telemetry_1pct_rps", "1%", med["1%"]["rps"], med["off"]["rps"], "req/s"),
        ("telemetry_100pct_rps", "100%", med["100%"]["rps"], med["off"]["rps"], "req/s"),
        ("telemetry_1pct_cpu_per_call", "1%", cpu["1%"], cpu["off"], "us"),
        ("telemetry_100pct_cpu_per_call", "100%", cpu["100%"], cpu["off"], "us"),
        ("telemetry_1pct_p99", "1%", med["1%"]["p99"], med["off"]["p99"], "ms"),
        ("telemetry_100pct_p99", "100%", med["100%"]["p99"], med["off"]["p99"], "ms"),
    ]
    for name, _, value, baseline, unit in results:
        print(
            f"RESULT {name} {value:.4g} {unit} baseline={baseline:.4g} ratio={value / baseline:.3f}"
        )


def print_profile(
    side: str,
    entries: list[Entry],
    profile: dict[str, Any],
    med: dict[str, Figures],
    args: argparse.Namespace,
) -> None:
    split: dict[str, float] = profile[side]
    profiled = profile["figures"][f"{side}_us"]
    scale = med["100%"][f"{side}_us"] / profiled
    traced = sum(split[label] for label, _, _ in [*entries, *SHIPPING])
    print(
        f"{side} CPU at 100 %, one {args.seconds:g} s phase under cProfile "
        f"({profile['figures']['calls']:.0f} calls; {profiled:.0f} µs a call profiled against "
        f"{med['100%'][f'{side}_us']:.0f} µs unprofiled: x{scale:.2f} to scale): "
        "µs a call, profiled (scaled)"
    )
    for label, value in split.items():
        if label != "profile total" and (value or not label.startswith(" ")):
            print(f"  {label:<52} {value:6.1f} ({value * scale:5.1f})")
    added = med["100%"][f"{side}_us"] - med["off"][f"{side}_us"]
    print(
        f"  tracing entry points and shipping together: {traced:.1f} ({traced * scale:.1f}) µs; "
        f"{side} CPU that 100 % adds over off, measured: {added:.1f} µs"
    )


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown CPU"


def otel_version() -> str:
    from importlib.metadata import version

    return version("opentelemetry-sdk")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.5, help="per phase and round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="clients on CPU 0, servers on CPU 1 (default: yes)",
    )
    parser.add_argument("--quick", action="store_true", help="a ~20 s smoke test")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--client", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--nats", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.seconds, arguments.rounds = 0.5, 3
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        if arguments.serve:
            runner.run(serve(arguments.serve, arguments.nats))
        elif arguments.client:
            runner.run(client(arguments.client, arguments.nats, arguments.port))
        else:
            runner.run(main(arguments))
