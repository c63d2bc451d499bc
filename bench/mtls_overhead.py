"""What mutual TLS costs a mesh call: the same server with mTLS on and off.

Servers: two uvicorn processes configured as `shoal serve` configures them (uvloop,
httptools, no access log, shoal's ``Inbound`` middleware), answering the
benchmark's 33-byte JSON body. **plain** serves plaintext; **mtls** serves through
shoal's own listener (``_Server`` with ``MtlsListener``: TLS 1.3, a client
certificate required, the caller's SVID checked, ``authenticate`` on in the
guard) with an SVID it makes a key and gets signed for itself from a throwaway
CA, which also signs the client's. No supervisor, no NATS.

Phases, each run against plain and against mtls, the two in alternating order
(ABBA) round after round; every figure is the median of ROUNDS rounds:

* keep-alive: CONCURRENCY workers call back to back for SECONDS over shoal's
  HTTP/1.1 pool (``Http11Pool.send``; for mtls with ``identity=`` the server's
  SPIFFE ID). Requests/s, p50/p99 latency, CPU per call of client and server.
* mesh: the same through ``shoal.client()``, by service name, with an in-memory
  discovery whose record of the mtls server says ``tls=True`` (the transport then
  presents this process's identity) and shoal's default policies.
* new connections: the same workers, but every request on a new connection (a
  pool that keeps no idle connection): connections/s and CPU per connection,
  i.e. TCP setup plus, for mtls, the TLS 1.3 handshake with both certificates.
* one new connection at a time (SECONDS/2 a round): latency of a call on a new connection.

Also printed: the median ratio of adjacent rounds (cancels slow drift). By default
the client is pinned to CPU 0 and the servers to CPU 1 (``--no-pin`` lets the
scheduler place them).

    python bench/mtls_overhead.py [--seconds 1.5] [--concurrency 16] [--rounds 9]
                                  [--no-pin] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import httpx
import uvicorn
import uvloop
from _asgi_hello import app as hello_app
from _machine import cpu_steal, source_state, stop_processes
from cryptography.hazmat.primitives import serialization

import shoal
from shoal.control._ca import CertificateAuthority, new_key_and_csr, spiffe_id
from shoal.mesh import StaticPolicies
from shoal.mesh._http11 import ConnectFailedError, Http11Pool
from shoal.mesh._tls import Credentials, client_context, server_context
from shoal.registry import Discovery, InstanceRecord, MemoryRegistry
from shoal.runtime._context import set_current_identity
from shoal.runtime._identity import WorkloadIdentity
from shoal.runtime._inbound import Inbound, InstanceStatus
from shoal.runtime._serve import _Server, bind_socket
from shoal.types import ASGIApp

APP = "bench"
SERVICES = {"plain": "hello-plain", "mtls": "hello"}
CLIENT_SERVICE = "caller"
MODES = ("plain", "mtls")
TICK = os.sysconf("SC_CLK_TCK")
Call = Callable[[], Awaitable[httpx.Response]]


class Identity:
    """What shoal's listener and pool use of a workload identity, from a CA at hand."""

    def __init__(self, ca: CertificateAuthority, service: str) -> None:
        key, csr = new_key_and_csr(service)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        creds = Credentials(
            key_pem,
            tuple(ca.issue(csr, service)),
            tuple(ca.bundle()),
            ca.trust_domain,
            spiffe_id(ca.app, service),
        )
        self.trust_domain = ca.trust_domain
        self._server = server_context(creds)
        self._client = client_context(creds)

    def server_context(self) -> ssl.SSLContext:
        return self._server

    def client_context(self) -> ssl.SSLContext:
        return self._client


# -- the servers -----------------------------------------------------------------


async def serve(mode: str, ca_dir: Path) -> None:
    """One server as `shoal serve` runs it, plaintext or mTLS; prints its port once serving."""
    tls = mode == "mtls"
    service = SERVICES[mode]
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    record = InstanceRecord(
        app=APP, service=service, instance=f"{service}-{port}", host="127.0.0.1", port=port,
        state="ready", started_at=time.time(), pid=os.getpid(), tls=tls,
    )  # fmt: skip
    identity = Identity(CertificateAuthority.load_or_create(ca_dir, APP), service) if tls else None
    config = uvicorn.Config(
        Inbound(
            cast(ASGIApp, hello_app),
            InstanceStatus(record),
            policies=StaticPolicies(),
            authenticate=tls,
        ),
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

    server = _Server(config, started, cast(WorkloadIdentity | None, identity))
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGTERM, lambda: setattr(server, "should_exit", True)
    )
    await server.serve(sockets=[sock])


@contextmanager
def servers(ca_dir: Path) -> Iterator[dict[str, tuple[int, int]]]:
    """The plain and the mtls server: mode -> (port, pid). Stopped by pid on the way out."""
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for mode in MODES:
            procs[mode] = subprocess.Popen(
                [sys.executable, __file__, "--serve", mode, "--ca", str(ca_dir)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                text=True,
            )
        found = {}
        for mode, proc in procs.items():
            line = proc.stdout.readline() if proc.stdout is not None else ""
            if not line.startswith("PORT "):
                raise RuntimeError(f"{mode} server {proc.pid} did not start: {line!r}")
            found[mode] = int(line.split()[1]), proc.pid
        yield found
    finally:
        stop_processes(list(procs.values()))


# -- the client ------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc, 10 ms steps)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (Linux /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # guest time is counted in user already
    return (total - fields[3] - fields[4]) / TICK, total / TICK


def others_share(pids: Iterable[int]) -> Callable[[], float]:
    """Starts counting; the returned function gives the share of the machine's CPU that
    processes other than this one and ``pids`` used since (other work on a shared VM)."""
    pids = list(pids)

    def ours() -> float:
        return time.process_time() + sum(cpu_seconds(pid) for pid in pids)

    busy, total = machine_cpu()
    mine = ours()

    def share() -> float:
        now_busy, now_total = machine_cpu()
        return max(0.0, (now_busy - busy) - (ours() - mine)) / max(now_total - total, 1e-9)

    return share


async def closed_loop(
    call: Call, concurrency: int, seconds: float, pids: Iterable[int] = ()
) -> dict[str, float]:
    """``concurrency`` workers call back to back for ``seconds``: rate, latency, errors,
    and the CPU time per call of this process and of the processes ``pids``."""
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
            except (httpx.HTTPError, ConnectFailedError):
                errors += 1
                continue
            latencies.append(clock() - start)
            if response.status_code != 200:
                raise RuntimeError(f"benchmark call failed: {response.status_code}")

    pids = list(pids)
    cpu = time.process_time(), sum(cpu_seconds(pid) for pid in pids)
    start = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = clock() - start
    done = max(len(latencies), 1)
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
        "client_us": (time.process_time() - cpu[0]) / done * 1e6,
        "server_us": (sum(cpu_seconds(pid) for pid in pids) - cpu[1]) / done * 1e6,
        "errors": errors,
    }


def pool_call(pool: Http11Pool, mode: str, port: int) -> Call:
    """A GET to one server straight through shoal's pool (mTLS for ``mtls``)."""
    service = SERVICES[mode]
    identity = spiffe_id(APP, service) if mode == "mtls" else ""

    def call() -> Awaitable[httpx.Response]:
        request = httpx.Request("GET", f"http://{service}/item")
        return pool.send("127.0.0.1", port, request, identity=identity)

    return call


def mesh_call(http: httpx.AsyncClient, mode: str) -> Call:
    """A GET through ``shoal.client()`` by service name."""
    url = f"http://{SERVICES[mode]}/item"
    return lambda: http.get(url)


async def settle() -> None:
    """Start each phase from the same state: garbage collected, sockets quiet."""
    gc.collect()
    await asyncio.sleep(0.1)


PHASES = ("keep-alive", "mesh", "new connections", "one new connection at a time")
Rounds = dict[str, dict[str, list[dict[str, float]]]]


async def measure(
    calls: dict[str, dict[str, Call]], pids: list[int], args: argparse.Namespace
) -> Rounds:
    """ROUNDS rounds of every phase, plain and mtls alternating ABBA; each round's figures."""
    for phase in PHASES:  # warm up pools, code paths, the servers' adaptive limits
        for mode in MODES:
            await closed_loop(calls[phase][mode], args.concurrency, min(args.seconds, 0.5))
    gc.collect()
    gc.freeze()  # the long-lived heap out of the collector's way: less noise per round
    rounds: Rounds = {phase: {mode: [] for mode in MODES} for phase in PHASES}
    for i in range(args.rounds):
        others = others_share(pids)
        order = MODES if i % 2 == 0 else MODES[::-1]
        for phase in PHASES:
            serial = phase == PHASES[-1]
            for mode in order:
                await settle()
                figures = await closed_loop(
                    calls[phase][mode],
                    1 if serial else args.concurrency,
                    args.seconds / 2 if serial else args.seconds,
                    pids,
                )
                rounds[phase][mode].append(figures)
        print(
            f"  round {i + 1:>2}, mtls/plain per s: "
            + " | ".join(brief(rounds, phase) for phase in PHASES)
            + f" | other processes {others():.0%} of the CPU"
        )
    return rounds


def brief(rounds: Rounds, phase: str) -> str:
    plain, mtls = (rounds[phase][mode][-1] for mode in MODES)
    return f"{phase} {mtls['rps']:,.0f}/{plain['rps']:,.0f}"


async def main(args: argparse.Namespace) -> None:
    print(source_state())
    print(
        f"machine: {os.cpu_count()} CPUs, {cpu_model()}; Python {platform.python_version()}, "
        f"{ssl.OPENSSL_VERSION}"
    )
    if args.pin:  # the client on one core, the servers on the other: no migrations
        os.sched_setaffinity(0, {0})
    os.environ["SHOAL_SERVICE"] = CLIENT_SERVICE
    with tempfile.TemporaryDirectory(prefix="shoal-bench-mtls-") as tmp:
        ca = CertificateAuthority.load_or_create(Path(tmp), APP)  # the servers load it
        client_identity = Identity(ca, CLIENT_SERVICE)
        set_current_identity(cast(WorkloadIdentity, client_identity))
        with servers(Path(tmp)) as found:
            if args.pin:
                for _, pid in found.values():
                    os.sched_setaffinity(pid, {1})
            rounds = await run_client(client_identity, found, args)
    report(rounds, args)


async def run_client(
    identity: Identity, found: dict[str, tuple[int, int]], args: argparse.Namespace
) -> Rounds:
    registry = MemoryRegistry()
    for mode, (port, _) in found.items():
        service = SERVICES[mode]
        await registry.put(
            InstanceRecord(
                app=APP, service=service, instance=f"{service}-{port}", host="127.0.0.1",
                port=port, state="ready", started_at=time.time(), ttl=3600, tls=mode == "mtls",
            )
        )  # fmt: skip
    discovery = Discovery(registry)
    await discovery.start()
    keep = Http11Pool(tls=lambda: identity)
    fresh = Http11Pool(tls=lambda: identity, max_idle_per_endpoint=0)
    try:
        async with shoal.client(discovery=discovery, policies=StaticPolicies()) as http:
            mesh = {mode: mesh_call(http, mode) for mode in MODES}
            calls = {
                "keep-alive": {m: pool_call(keep, m, found[m][0]) for m in MODES},
                "mesh": mesh,
                "new connections": {m: pool_call(fresh, m, found[m][0]) for m in MODES},
                "one new connection at a time": {
                    m: pool_call(fresh, m, found[m][0]) for m in MODES
                },
            }
            pids = [pid for _, pid in found.values()]
            steal, others = cpu_steal(), others_share(pids)
            rounds = await measure(calls, pids, args)
            stolen, total = (b - a for a, b in zip(steal, cpu_steal(), strict=True))
            print(
                f"CPU steal during the rounds: {stolen / max(total, 1):.1%}; other processes "
                f"on the machine used {others():.0%} of its CPU"
            )
    finally:
        await keep.aclose()
        await fresh.aclose()
        await discovery.aclose()
    return rounds


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown CPU"


def report(rounds: Rounds, args: argparse.Namespace) -> None:
    med: dict[str, dict[str, dict[str, float]]] = {}
    print(
        f"median of {args.rounds} rounds, {args.concurrency} workers, {args.seconds:g} s a phase "
        f"(mtls | plain; CPU per call client+server):"
    )
    for phase in PHASES:
        med[phase] = {}
        for mode in MODES:
            rs = rounds[phase][mode]
            med[phase][mode] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        t, p = med[phase]["mtls"], med[phase]["plain"]
        paired = sorted(
            a["rps"] / b["rps"]
            for a, b in zip(rounds[phase]["mtls"], rounds[phase]["plain"], strict=True)
        )
        print(
            f"  {phase:>28}: {t['rps']:>6,.0f} | {p['rps']:>6,.0f} /s, ratio "
            f"{t['rps'] / p['rps']:.3f} (adjacent rounds: median {statistics.median(paired):.3f}, "
            f"range {paired[0]:.3f}-{paired[-1]:.3f}); p50 {t['p50']:.2f} | {p['p50']:.2f} ms, "
            f"p99 {t['p99']:.2f} | {p['p99']:.2f} ms; "
            + (  # one at a time, too few calls a round for CPU figures in 10 ms ticks
                ""
                if phase == PHASES[-1]
                else f"CPU {t['client_us']:.0f}+{t['server_us']:.0f} | "
                f"{p['client_us']:.0f}+{p['server_us']:.0f} us; "
            )
            + f"errors {sum(r['errors'] for r in rounds[phase]['mtls']):.0f} | "
            f"{sum(r['errors'] for r in rounds[phase]['plain']):.0f}"
        )
    new, one = med["new connections"], med["one new connection at a time"]
    added = {
        mode: new["mtls"][f"{mode}_us"] - new["plain"][f"{mode}_us"]
        for mode in ("client", "server")
    }
    print(
        f"an mTLS connection costs {added['client'] / 1000:.2f} ms of client CPU and "
        f"{added['server'] / 1000:.2f} ms of server CPU more than a plaintext one; a call on a "
        f"new connection takes {one['mtls']['p50'] - one['plain']['p50']:.2f} ms longer (p50)"
    )
    cpu = {
        phase: {mode: m["client_us"] + m["server_us"] for mode, m in med[phase].items()}
        for phase in PHASES
    }
    results = [
        ("mtls_keepalive_rps", med["keep-alive"], "rps", "req/s"),
        ("mtls_keepalive_p99", med["keep-alive"], "p99", "ms"),
        ("mtls_keepalive_cpu", {m: {"cpu": cpu["keep-alive"][m]} for m in MODES}, "cpu", "us"),
        ("mtls_mesh_rps", med["mesh"], "rps", "req/s"),
        ("mtls_mesh_p99", med["mesh"], "p99", "ms"),
        ("mtls_handshakes_per_s", new, "rps", "conn/s"),
        ("mtls_handshake_cpu", {m: {"cpu": cpu["new connections"][m]} for m in MODES}, "cpu", "us"),
        ("mtls_new_connection_p50", one, "p50", "ms"),
    ]
    for name, figures, key, unit in results:
        value, baseline = figures["mtls"][key], figures["plain"][key]
        ratio = value / baseline
        print(f"RESULT {name} {value:.4g} {unit} baseline={baseline:.4g} ratio={ratio:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=1.5, help="per phase and round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="client on CPU 0, servers on CPU 1 (default: yes)",
    )
    parser.add_argument("--quick", action="store_true", help="a ~20 s smoke test")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--ca", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.seconds, arguments.rounds = 0.5, 3
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        if arguments.serve:
            runner.run(serve(arguments.serve, arguments.ca))
        else:
            runner.run(main(arguments))
