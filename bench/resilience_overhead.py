"""What the resilience features cost on the hot path: all enabled vs all disabled.

Servers: SERVERS uvicorn processes (uvloop, httptools, as `shoal serve` runs
them) of the benchmark's trivial app wrapped in shoal's real inbound middleware
(``Inbound`` around ``InboundGuard``), each with an in-memory policy source the
benchmark switches between rounds. Client: ``shoal.client()`` with an in-memory
discovery of those servers and the same two policies, switched with them.

* disabled: everything off that can be: 1 attempt (no retries), outlier
  ejection after 1000 failures, a bulkhead of 1,000,000, no adaptive limit on
  the servers (their guard only parses headers), no rate limit, no traffic
  rules, no routes. The deadline cannot be turned off (10 s, never reached).
* enabled: shoal's defaults (3 attempts in a retry budget, ejection after 5
  failures, bulkhead 1024, adaptive concurrency limit on the servers) plus
  rules evaluated on every call that do not change the traffic: three routes
  (the last matches ``GET /item`` with the default timeout and attempts), a
  split ``{v1: 100}``, a header match that never matches, delay and abort
  faults at 0 %, a rate limit of 50,000/s for every caller (10x what is reached;
  the model refuses rates over 86,400/s).

Saturation: a closed loop of CONCURRENCY workers sends REQUESTS GETs per round;
enabled and disabled rounds alternate (ABBA), ROUNDS of each; figures are the
median rounds. Latency is per request, from send to answer; CPU per call is the
client's and the servers' user + system time over the round. Also printed: the
median ratio of adjacent rounds (cancels slow drift of the machine's speed).
By default the client is pinned to CPU 0 and the servers to CPU 1 (``--no-pin``
lets the scheduler place them). ``--control`` runs two identical disabled arms:
how far apart the same thing comes out on this machine.

    python bench/resilience_overhead.py [--rounds 20] [--requests 3000] [--concurrency 32]
                                        [--servers 2] [--no-pin] [--control]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import uvloop
from _machine import cpu_steal, source_state, stop_processes

import shoal
from shoal.manifest import ServicePolicy
from shoal.mesh import StaticPolicies
from shoal.registry import Discovery, InstanceRecord, MemoryRegistry
from shoal.runtime._inbound import Inbound, InstanceStatus
from shoal.runtime._serve import bind_socket

HERE = Path(__file__).parent
SERVICE = "hello"
MODE_PATH = "/_bench/mode/"

DISABLED = ServicePolicy.model_validate(
    {
        "retries": {"attempts": 1},
        "outlier": {"failures": 1000},
        "limits": {"concurrency": 1_000_000, "adaptive": False},
    }
)
ENABLED = ServicePolicy.model_validate(
    {
        "routes": [
            {"path": "/orders", "methods": ["POST"], "timeout": "2s", "attempts": 1},
            {"path": "/admin", "timeout": "30s"},
            {"path": "/item", "methods": ["GET"], "timeout": "10s", "attempts": 3},
        ],
        "traffic": {
            "split": {"v1": 100},
            "match": [{"headers": {"x-canary": "always-off"}, "version": "v2"}],
            "faults": {
                "delay": {"percent": 0, "duration": "100ms"},
                "abort": {"percent": 0, "status": 503},
            },
        },
        "limits": {"adaptive": True, "rate": {"*": 50_000}},
    }
)
MODES = {"enabled": ENABLED, "disabled": DISABLED}

BODY = b'{"item": 42, "name": "benchmark"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]

# -- the server ------------------------------------------------------------------


def server_app(policies: StaticPolicies) -> Any:
    """The trivial app; ``GET /_bench/mode/<mode>`` switches this process's policy."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith(MODE_PATH):
            policies.set(SERVICE, MODES[path[len(MODE_PATH) :]])
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": BODY})

    return app


async def serve() -> None:
    """One server, configured as `shoal serve` configures uvicorn; prints its port."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    record = InstanceRecord(
        app="bench", service=SERVICE, instance=f"{SERVICE}-{port}", host="127.0.0.1",
        port=port, state="ready", started_at=time.time(), pid=os.getpid(),
    )  # fmt: skip
    policies = StaticPolicies({SERVICE: DISABLED})
    config = uvicorn.Config(
        Inbound(server_app(policies), InstanceStatus(record), policies=policies),
        loop="none",
        http="httptools",
        ws="none",
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_keep_alive=30,
    )
    print(f"PORT {port}", flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


@contextmanager
def servers(count: int) -> Iterator[dict[int, int]]:
    """``count`` server processes: port -> pid. Stopped by pid on the way out."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for _ in range(count):
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--serve"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        ports = {}
        for proc in procs:
            line = proc.stdout.readline() if proc.stdout is not None else ""
            if not line.startswith("PORT "):
                raise RuntimeError(f"server {proc.pid} did not start: {line!r}")
            ports[int(line.split()[1])] = proc.pid
        yield ports
    finally:
        stop_processes(procs)


# -- the client ------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc, 10 ms steps)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def closed_loop(
    http: httpx.AsyncClient, requests: int, concurrency: int, pids: Iterable[int] = ()
) -> dict[str, float]:
    """``concurrency`` workers send ``requests`` GETs back to back: rate, latency, and the
    CPU time per request of this process and of the processes ``pids``."""
    clock = time.perf_counter
    latencies: list[float] = []
    left = requests
    retried = 0

    async def worker() -> None:
        nonlocal left, retried
        while left > 0:
            left -= 1
            start = clock()
            response = await http.get(f"http://{SERVICE}/item")
            latencies.append(clock() - start)
            if response.status_code != 200:
                raise RuntimeError(f"benchmark call failed: {response.status_code}")
            attempts = response.extensions["shoal.attempts"]
            if sum(1 for a in attempts if a.instance) > 1:
                retried += 1

    pids = list(pids)
    cpu = time.process_time(), sum(cpu_seconds(pid) for pid in pids)
    start = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = clock() - start
    client_cpu = time.process_time() - cpu[0]
    server_cpu = sum(cpu_seconds(pid) for pid in pids) - cpu[1]
    latencies.sort()
    return {
        "rps": requests / elapsed,
        "client_us": client_cpu / requests * 1e6,
        "server_us": server_cpu / requests * 1e6,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
        "retried": retried,
    }


class Switch:
    """Puts both sides in a mode: each server's policy, then the client's."""

    def __init__(self, direct: httpx.AsyncClient, client: StaticPolicies, ports: Iterable[int]):
        self._direct, self._client, self._ports = direct, client, list(ports)

    async def __call__(self, mode: str) -> None:
        for port in self._ports:
            response = await self._direct.get(f"http://127.0.0.1:{port}{MODE_PATH}{mode}")
            response.raise_for_status()
        self._client.set(SERVICE, MODES[mode])


async def settle() -> None:
    """Start each round from the same state: garbage collected, sockets quiet."""
    gc.collect()
    await asyncio.sleep(0.1)


async def main(args: argparse.Namespace) -> None:
    print(source_state())
    if args.pin:  # the client on one core, the servers on the other: no migrations
        os.sched_setaffinity(0, {0})
    os.environ["SHOAL_SERVICE"] = "bench"  # calls carry shoal-caller, as inside the mesh
    with servers(args.servers) as ports:
        if args.pin:
            for pid in ports.values():
                os.sched_setaffinity(pid, {1})
        registry = MemoryRegistry()
        for port in ports:
            await registry.put(
                InstanceRecord(
                    app="bench", service=SERVICE, instance=f"{SERVICE}-{port}", host="127.0.0.1",
                    port=port, state="ready", started_at=time.time(), ttl=3600,
                )
            )  # fmt: skip
        discovery = Discovery(registry)
        await discovery.start()
        policies = StaticPolicies({SERVICE: DISABLED})
        try:
            async with (
                httpx.AsyncClient() as direct,
                shoal.client(discovery=discovery, policies=policies) as http,
            ):
                steal = cpu_steal()
                rounds = await measure(http, Switch(direct, policies, ports), ports, args)
                stolen, total = (b - a for a, b in zip(steal, cpu_steal(), strict=True))
        finally:
            await discovery.aclose()
    print(f"CPU steal during the rounds: {stolen / max(total, 1):.1%}")
    report(rounds, args)


async def measure(
    http: httpx.AsyncClient, switch: Switch, ports: dict[int, int], args: argparse.Namespace
) -> dict[str, list[dict[str, float]]]:
    """ROUNDS rounds of each arm, alternating ABBA; the figures of each round, by arm."""
    arms = arms_of(args)
    for mode in set(arms.values()):  # warm up pools, code paths, the adaptive limit
        await switch(mode)
        await closed_loop(http, args.requests, args.concurrency)
    gc.collect()
    gc.freeze()  # the long-lived heap out of the collector's way: less noise per round
    rounds: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}
    for i in range(args.rounds):
        for arm in list(arms) if i % 2 == 0 else list(arms)[::-1]:
            await switch(arms[arm])
            await settle()
            figures = await closed_loop(http, args.requests, args.concurrency, ports.values())
            rounds[arm].append(figures)
            print(
                f"  round {i + 1:>2} {arm:>10}: {figures['rps']:,.0f} req/s, p50 "
                f"{figures['p50']:.2f} ms, p99 {figures['p99']:.2f} ms, CPU per call "
                f"client {figures['client_us']:.0f} us + servers {figures['server_us']:.0f} us, "
                f"{figures['retried']:.0f} calls retried"
            )
    return rounds


def arms_of(args: argparse.Namespace) -> dict[str, str]:
    """Arm label -> policy; the first arm is measured against the second (the baseline)."""
    if args.control:  # an A/A run: how far apart two identical arms come out
        return {"disabled-a": "disabled", "disabled-b": "disabled"}
    return {"enabled": "enabled", "disabled": "disabled"}


def report(rounds: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    (a, a_rounds), (b, b_rounds) = rounds.items()
    e = {k: statistics.median(r[k] for r in a_rounds) for k in a_rounds[0]}
    d = {k: statistics.median(r[k] for r in b_rounds) for k in b_rounds[0]}
    # rounds i of each arm ran next to each other: their ratio cancels slow drift
    paired = sorted(x["rps"] / y["rps"] for x, y in zip(a_rounds, b_rounds, strict=True))
    print(
        f"median of {args.rounds} rounds of {args.requests} GETs, {args.concurrency} workers, "
        f"{args.servers} server(s): {a} {e['rps']:,.0f} req/s, p50 {e['p50']:.2f} ms, "
        f"CPU/call {e['client_us']:.0f}+{e['server_us']:.0f} us | {b} {d['rps']:,.0f} req/s, "
        f"p50 {d['p50']:.2f} ms, CPU/call {d['client_us']:.0f}+{d['server_us']:.0f} us"
    )
    print(
        f"throughput ratio of adjacent rounds: median {statistics.median(paired):.3f}, "
        f"range {paired[0]:.3f}-{paired[-1]:.3f}"
    )
    suffix = "_control" if args.control else ""
    for name, key, unit in (
        ("resilience_throughput", "rps", "rps"),
        ("resilience_p50", "p50", "ms"),
        ("resilience_p99", "p99", "ms"),
        ("resilience_client_cpu", "client_us", "us"),
        ("resilience_server_cpu", "server_us", "us"),
    ):
        ratio = e[key] / d[key]
        print(f"RESULT {name}{suffix} {e[key]:.4g} {unit} baseline={d[key]:.4g} ratio={ratio:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="client on CPU 0, servers on CPU 1 (default: yes)",
    )
    parser.add_argument(
        "--control", action="store_true", help="A/A run: both arms disabled (the noise floor)"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve() if arguments.serve else main(arguments))
