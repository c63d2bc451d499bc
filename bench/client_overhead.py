"""What the mesh client costs: plain httpx (direct) vs shoal.client() (mesh), one server.

The server is one `shoal serve` process (uvicorn, uvloop, httptools) registered
in an embedded NATS; both clients call the same server, so only the client side
differs. First open loop: requests start on a fixed schedule and latency counts
from the scheduled start (no coordinated omission). Then saturation: a closed
loop of CONCURRENCY workers for SECONDS. Each phase alternates direct and mesh
ROUNDS times and keeps the median round.

    python bench/client_overhead.py [--seconds 3] [--rates 500,1000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
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
        address = discovery.ready("hello")[0].address
        async with (
            httpx.AsyncClient(
                base_url=f"http://{address}",
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
            ) as direct,
            shoal.client(discovery=discovery) as mesh,
        ):
            calls: dict[str, Call] = {
                "direct": lambda: direct.get("/item"),
                "mesh": lambda: mesh.get("http://hello/item"),
            }
            for call in calls.values():  # warm up pools and code paths
                await saturate(call, args.concurrency, 0.5)
            results: list[tuple[str, float, str, float, float]] = []
            for rate in args.rates:
                rounds: dict[str, list[dict[str, float]]] = {"direct": [], "mesh": []}
                for _ in range(args.rounds):
                    for name, call in calls.items():
                        rounds[name].append(await open_loop(call, rate, args.seconds))
                med = {
                    name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                    for name, rs in rounds.items()
                }
                d, m = med["direct"], med["mesh"]
                print(
                    f"open loop {rate:>5.0f}/s  direct p50 {d['p50']:.3f} p99 {d['p99']:.3f} "
                    f"max {d['max']:.2f} ms | mesh p50 {m['p50']:.3f} p99 {m['p99']:.3f} "
                    f"max {m['max']:.2f} ms | added p99 {m['p99'] - d['p99']:+.3f} ms "
                    f"errors {d['errors']:.0f}/{m['errors']:.0f}"
                )
                for q in ("p50", "p99"):
                    results.append((f"open_{int(rate)}rps_{q}", m[q], "ms", d[q], m[q] / d[q]))
                results.append(
                    (f"open_{int(rate)}rps_added_p99", m["p99"] - d["p99"], "ms", 0.0, 0.0)
                )
            sat: dict[str, list[float]] = {"direct": [], "mesh": []}
            for _ in range(args.rounds):
                for name, call in calls.items():
                    sat[name].append(await saturate(call, args.concurrency, args.seconds))
            d_rps, m_rps = statistics.median(sat["direct"]), statistics.median(sat["mesh"])
            print(
                f"saturation c={args.concurrency}: direct {d_rps:,.0f} req/s | "
                f"mesh {m_rps:,.0f} req/s | ratio {m_rps / d_rps:.2f}"
            )
            results.append(("saturation_throughput", m_rps, "req/s", d_rps, m_rps / d_rps))
        for name, value, unit, base, ratio in results:
            print(f"RESULT {name} {value:.4g} {unit} baseline={base:.4g} ratio={ratio:.3f}")
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
