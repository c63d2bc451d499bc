"""What the mesh client costs: plain httpx (direct) vs shoal.client() (mesh), one server.

The server is one `shoal serve` process (uvicorn, uvloop, httptools) registered
in an embedded NATS; every client calls the same server, so only the client side
differs. Three clients: `mesh` (shoal.client(), by service name), `direct` (plain
httpx.AsyncClient to the address: the issue's baseline) and `pool` (an
httpx.AsyncClient on shoal's HTTP/1.1 pool, to the address, without discovery or
balancing), which isolates what the mesh layer itself adds.

First open loop: requests start on a fixed schedule and latency counts from the
scheduled start (no coordinated omission). Then saturation: a closed loop of
CONCURRENCY workers for SECONDS. mesh and pool alternate ROUNDS times; plain
httpx runs after them in phases of its own. Each figure is the median round.

    python bench/client_overhead.py [--seconds 3] [--rates 200,500,1000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import uvloop

import shoal
from shoal.backbone import Backbone, EmbeddedNats, NatsRegistry
from shoal.mesh._http11 import Http11Pool
from shoal.registry import Discovery

HERE = Path(__file__).parent
Call = Callable[[], Awaitable[httpx.Response]]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def open_loop(call: Call, rate: float, seconds: float) -> dict[str, float]:
    """Start one request every 1/rate s; latency from its scheduled start."""
    clock = time.perf_counter  # uvloop's loop.time() only has millisecond resolution
    n = int(rate * seconds)
    latencies: list[float] = []
    errors = 0

    async def one(scheduled: float) -> None:
        nonlocal errors
        try:
            response = await call()
        except httpx.HTTPError:
            errors += 1
            return
        if response.status_code != 200:
            errors += 1
        latencies.append(clock() - scheduled)

    tasks = []
    start = clock() + 0.01
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    return {
        "p50": pct(latencies, 0.50) * 1000,
        "p99": pct(latencies, 0.99) * 1000,
        "max": max(latencies) * 1000,
        "errors": errors,
    }


async def saturate(call: Call, concurrency: int, seconds: float) -> float:
    """Requests per second with ``concurrency`` workers calling back to back."""
    clock = time.perf_counter
    done = 0
    end = clock() + seconds

    async def worker() -> None:
        nonlocal done
        while clock() < end:
            response = await call()
            if response.status_code != 200:
                raise RuntimeError(f"benchmark call failed: {response.status_code}")
            done += 1

    start = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (clock() - start)


class _DirectPool(httpx.AsyncBaseTransport):
    """shoal's HTTP/1.1 pool aimed at one address: the mesh minus discovery and balancing."""

    def __init__(self, host: str, port: int) -> None:
        self._pool = Http11Pool()
        self._host, self._port = host, port

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._pool.send(self._host, self._port, request)

    async def aclose(self) -> None:
        await self._pool.aclose()


async def settle() -> None:
    """Start each phase from the same state: garbage collected, sockets quiet."""
    gc.collect()
    await asyncio.sleep(0.3)


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    nats = EmbeddedNats(tmp)
    await nats.start()
    env = {
        **os.environ,
        "SHOAL_NATS_URL": nats.url,
        "SHOAL_APP": "bench",
        "SHOAL_SERVICE": "hello",
        "SHOAL_APP_DIR": str(HERE),
    }
    server = subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
        [sys.executable, "-m", "shoal", "serve", "_asgi_hello:app", "--log-level", "warning"],
        env=env,
        cwd=HERE,
    )
    backbone = await Backbone.connect(nats.url)
    discovery = Discovery(NatsRegistry(backbone, "bench"))
    try:
        await discovery.start()
        await discovery.wait_for(lambda c: len(c.ready("hello")) == 1, timeout=30)
        record = discovery.ready("hello")[0]
        address = record.address
        async with (
            httpx.AsyncClient(transport=_DirectPool(record.host, record.port)) as pool,
            httpx.AsyncClient(
                base_url=f"http://{address}",
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
            ) as direct,
            shoal.client(discovery=discovery) as mesh,
        ):
            # plain httpx last in each round: past its capacity it builds a backlog
            calls: dict[str, Call] = {
                "mesh": lambda: mesh.get("http://hello/item"),
                "pool": lambda: pool.get(f"http://{address}/item"),
                "direct": lambda: direct.get("/item"),
            }
            for call in calls.values():  # warm up pools and code paths
                await saturate(call, args.concurrency, 0.5)
            # mesh and pool alternate round by round; plain httpx runs afterwards in
            # phases of its own, because past its capacity its backlog of seconds
            # would disturb whatever ran next.
            order = [["mesh", "pool"], ["direct"]]
            med: dict[float, dict[str, dict[str, float]]] = {rate: {} for rate in args.rates}
            rps: dict[str, float] = {}
            for group in order:
                for rate in args.rates:
                    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in group}
                    for _ in range(args.rounds):
                        for name in group:
                            await settle()
                            rounds[name].append(await open_loop(calls[name], rate, args.seconds))
                    for name, rs in rounds.items():
                        med[rate][name] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                sat: dict[str, list[float]] = {name: [] for name in group}
                for _ in range(args.rounds):
                    for name in group:
                        await settle()
                        sat[name].append(
                            await saturate(calls[name], args.concurrency, args.seconds)
                        )
                rps.update({name: statistics.median(values) for name, values in sat.items()})
            results: list[tuple[str, float, str, float, float]] = []
            for rate in args.rates:
                m, p, d = med[rate]["mesh"], med[rate]["pool"], med[rate]["direct"]
                print(
                    f"open loop {rate:>5.0f}/s  p50/p99/max ms: mesh {m['p50']:.3f}/{m['p99']:.3f}/"
                    f"{m['max']:.2f} | pool {p['p50']:.3f}/{p['p99']:.3f}/{p['max']:.2f} | "
                    f"httpx {d['p50']:.3f}/{d['p99']:.3f}/{d['max']:.2f} | errors "
                    f"{m['errors']:.0f}/{p['errors']:.0f}/{d['errors']:.0f}"
                )
                for q in ("p50", "p99"):
                    for ref, label in ((d, "httpx"), (p, "pool")):
                        ratio = m[q] / ref[q]
                        results.append(
                            (f"open_{int(rate)}rps_{q}_vs_{label}", m[q], "ms", ref[q], ratio)
                        )
                added = m["p99"] - p["p99"]
                results.append(
                    (f"open_{int(rate)}rps_mesh_added_p99", added, "ms", 0.2, added / 0.2)
                )
            print(
                f"saturation c={args.concurrency}: mesh {rps['mesh']:,.0f} req/s | "
                f"pool {rps['pool']:,.0f} req/s | httpx {rps['direct']:,.0f} req/s"
            )
            for key, label in (("direct", "httpx"), ("pool", "pool")):
                ratio = rps["mesh"] / rps[key]
                results.append(
                    (f"saturation_rps_vs_{label}", rps["mesh"], "req/s", rps[key], ratio)
                )
        for name, value, unit, baseline, ratio in results:
            print(f"RESULT {name} {value:.4g} {unit} baseline={baseline:.4g} ratio={ratio:.3f}")
    finally:
        server.terminate()
        server.wait(timeout=15)
        await discovery.aclose()
        await backbone.aclose()
        await nats.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--rates", type=lambda s: [float(x) for x in s.split(",")], default=[200.0, 500.0, 1000.0]
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(parser.parse_args()))
