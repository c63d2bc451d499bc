"""Failover under load: one of three replicas SIGKILLed, hung, or frozen.

Three real `shoal serve` replicas of this module's ``app`` (a GET answers after
1 ms of simulated I/O; ``POST /hang`` makes that replica never answer a request
again, while it keeps heartbeating) register in an embedded NATS. One
``shoal.client()``, with its own discovery from NATS, drives an open loop of
RATE GET/s: each request starts on schedule as a task of its own, latency counts
from the scheduled start (no coordinated omission). Each phase has three fresh
replicas and a fresh client: 1 s warm-up, BEFORE s steady, the fault, AFTER s more.

* kill: SIGKILL one replica; default policy (10 s timeout). Reports failed GETs,
  the time from the kill to the last request that had an attempt on the dead
  replica (from ``response.extensions["shoal.attempts"]``), p50/p99 before and
  after. Baseline of that time: when a separate discovery watcher saw the dead
  replica leave the registry in the same run (its TTL running out), i.e. what
  discovery alone would take.
* hang: ``POST /hang`` to one replica (its process and heartbeats live on; its
  inbound guard answers 504 ``deadline-exceeded`` when the caller's deadline
  passes); service timeout TIMEOUT s. Reports failed GETs, the longest any call
  waited, when the hung replica was ejected (``outlier.ejected()``, polled every
  5 ms) and how many attempts went to it.
* freeze: SIGSTOP one replica (a stuck process: no answers, no heartbeats, but
  the kernel still accepts its connections); same figures as hang, plus when
  discovery dropped it.

    python bench/failover.py [--rate 500] [--before 4] [--after 6] [--timeout 1] [--per-try 0.1]
                             [--phases kill,hang,freeze]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import uvloop
from _machine import cpu_steal, source_state, stop_processes

import shoal
from shoal.backbone import Backbone, EmbeddedNats, NatsRegistry
from shoal.exceptions import TransportError
from shoal.manifest import ServicePolicy
from shoal.mesh import Attempt, MeshTransport, StaticPolicies
from shoal.registry import Discovery

HERE = Path(__file__).parent
APP = "bench"
REPLICAS = 3
WORK = 0.001
"""Seconds a replica takes to answer a GET (simulated I/O, not CPU: the machine has 2 cores)."""
POLL = 0.005
MARGIN = 0.05
"""Seconds past its deadline a call may take and still count as on time."""

clock = time.perf_counter  # uvloop's loop.time() only has millisecond resolution

# -- the replicas' app -----------------------------------------------------------

BODY = b'{"item": 42}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
_state = {"hanging": False}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """GET: answer after WORK s. POST /hang: from now on, no request is answered."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    if scope["method"] == "POST" and scope["path"] == "/hang":
        _state["hanging"] = True
    elif _state["hanging"]:
        await asyncio.Event().wait()  # never set: only a cancellation ends the request
    else:
        await asyncio.sleep(WORK)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


# -- load ------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Sample:
    """One GET: when it was due, started and ended, what came of it, where it went."""

    scheduled: float
    started: float = 0.0
    ended: float = 0.0
    outcome: str = ""
    attempts: list[Attempt] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome == "200"

    @property
    def wait(self) -> float:
        return self.ended - self.started

    def touched(self, instance: str) -> int:
        return sum(1 for a in self.attempts if a.instance == instance)

    def sent_to(self, instance: str) -> list[float]:
        """When each attempt on ``instance`` was sent: the call's start plus the time of
        the attempts before it (backoff pauses unknown, so possibly a little early)."""
        sent, at = [], self.started
        for attempt in self.attempts:
            if attempt.instance == instance:
                sent.append(at)
            at += attempt.latency
        return sent


async def get(http: httpx.AsyncClient, url: str, sample: Sample) -> None:
    sample.started = clock()
    try:
        response = await http.get(url)
    except httpx.HTTPError as exc:
        sample.ended = clock()
        reason = exc.reason if isinstance(exc, TransportError) else "-"
        sample.outcome = f"{type(exc).__name__} ({reason})"
        sample.attempts = list(exc.attempts) if isinstance(exc, TransportError) else []
        return
    sample.ended = clock()
    reason = response.headers.get("shoal-reason")
    sample.outcome = f"{response.status_code} {reason}" if reason else str(response.status_code)
    sample.attempts = list(response.extensions.get("shoal.attempts", ()))


async def open_loop(
    http: httpx.AsyncClient, url: str, rate: float, start: float, seconds: float
) -> list[Sample]:
    """One GET every 1/rate s from ``start``, each a task of its own; wait for all."""
    samples = [Sample(start + i / rate) for i in range(int(rate * seconds))]
    tasks = []
    for sample in samples:
        delay = sample.scheduled - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(get(http, url, sample)))
    await asyncio.gather(*tasks)
    return samples


async def first_time(after: Awaitable[object], holds: Callable[[], bool], limit: float) -> float:
    """When ``holds()`` first became true (polled every POLL s) within ``limit`` s of
    ``after`` being done; inf if it did not."""
    await after
    end = clock() + limit
    while clock() < end:
        if holds():
            return clock()
        await asyncio.sleep(POLL)
    return math.inf


# -- replicas --------------------------------------------------------------------


@contextlib.contextmanager
def replicas(service: str, nats_url: str, logs: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """REPLICAS `shoal serve` processes of ``service``; stopped by pid on the way out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env.update(SHOAL_NATS_URL=nats_url, SHOAL_APP=APP, SHOAL_APP_DIR=str(HERE))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(REPLICAS):
            with open(logs / f"{service}-{i}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "shoal", "serve", "failover:app"],
                        env={**env, "SHOAL_SERVICE": service, "SHOAL_INSTANCE": f"{service}-{i}"},
                        cwd=HERE,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield procs
    finally:
        stop_processes(procs, wake=True)  # a frozen one must run to take SIGTERM


# -- one phase -------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """One phase's measured loop: its samples, when the fault began and was done, and
    when each watched-for consequence was first seen (inf: not within the phase)."""

    samples: list[Sample]
    start: float
    fault_begun: float
    fault_done: float
    seen: dict[str, float]

    def before(self) -> list[Sample]:
        """Calls over before the fault began: the steady state."""
        return [s for s in self.samples if s.ended < self.fault_begun]

    def after(self) -> list[Sample]:
        """Calls in flight at the fault or started after it."""
        return [s for s in self.samples if s.ended >= self.fault_begun]

    def since(self, what: str) -> float:
        return self.seen[what] - self.fault_done


Fault = Callable[[], Awaitable[None]]


@dataclasses.dataclass
class Bench:
    args: argparse.Namespace
    nats_url: str
    watcher: Discovery
    logs: Path

    async def phase(self, name: str, fault: Callable[[Target], Fault]) -> list[str]:
        service = f"svc-{name}"
        retries = {"per_try_timeout": self.args.per_try} if self.args.per_try else {}
        policy = ServicePolicy.model_validate({"timeout": self.args.timeout, "retries": retries})
        policies = StaticPolicies({service: policy}) if name != "kill" else None
        with replicas(service, self.nats_url, self.logs) as procs:
            await self.watcher.wait_for(lambda c: len(c.ready(service)) == REPLICAS, timeout=30)
            victim = f"{service}-1"
            record = next(r for r in self.watcher.ready(service) if r.instance == victim)
            async with shoal.client(nats_url=self.nats_url, app=APP, policies=policies) as http:
                transport = http._transport  # the MeshTransport that shoal.client() built
                if not isinstance(transport, MeshTransport):
                    raise TypeError(f"shoal.client() transport is {type(transport).__name__}")
                target = Target(service, victim, record.address, procs[1], transport)
                run = await self.load(http, target, fault(target))
        if name == "kill":
            return report_kill(run, victim)
        return report_stuck(name, run, victim, policy)

    async def load(self, http: httpx.AsyncClient, target: Target, fault: Fault) -> Run:
        """Warm up; then the measured loop, ``fault`` done BEFORE s into it, and the
        target's consequences watched from then on."""
        args = self.args
        url = f"http://{target.service}/item"
        await open_loop(http, url, args.rate, clock() + 0.01, 1.0)
        await asyncio.sleep(0.3)
        # Keep the load generator's own full collections (40-70 ms over the imported
        # modules, measured) out of the figures: the long-lived heap is left unscanned.
        gc.collect()
        gc.freeze()
        start = clock() + 0.01
        begun: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        async def do_fault() -> float:
            await asyncio.sleep(start + args.before - clock())
            begun.set_result(clock())
            await fault()
            return clock()

        fault_task = asyncio.create_task(do_fault())
        watches = {
            name: asyncio.create_task(first_time(fault_task, holds, args.after))
            for name, holds in target.watches(self.watcher).items()
        }
        samples = await open_loop(http, url, args.rate, start, args.before + args.after)
        seen = {name: await task for name, task in watches.items()}
        gc.unfreeze()
        return Run(samples, start, begun.result(), await fault_task, seen)


@dataclasses.dataclass
class Target:
    """The service under test and the replica the fault hits."""

    service: str
    victim: str
    address: str
    proc: subprocess.Popen[bytes]
    transport: MeshTransport

    def watches(self, watcher: Discovery) -> dict[str, Callable[[], bool]]:
        def dropped() -> bool:
            return self.victim not in {r.instance for r in watcher.instances(self.service)}

        def ejected() -> bool:
            dest = self.transport.destinations.get(self.service)
            return dest is not None and self.victim in dest.outlier.ejected()

        return {"dropped": dropped, "ejected": ejected}


def sigkill(target: Target) -> Fault:
    async def fault() -> None:
        os.kill(target.proc.pid, signal.SIGKILL)

    return fault


def hang(target: Target) -> Fault:
    async def fault() -> None:
        # a bare request: a new httpx client would stall the loop ~50 ms building TLS context
        host, _, port = target.address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /hang HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        status = await reader.readline()
        writer.close()
        if b" 200 " not in status:
            raise RuntimeError(f"POST /hang to {target.victim} answered {status!r}")

    return fault


def sigstop(target: Target) -> Fault:
    async def fault() -> None:
        os.kill(target.proc.pid, signal.SIGSTOP)

    return fault


PHASES = {"kill": sigkill, "hang": hang, "freeze": sigstop}


# -- figures ---------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


def latency_ms(samples: Sequence[Sample], q: float) -> float:
    return pct([s.ended - s.scheduled for s in samples], q) * 1000


def ratio(value: float, baseline: float) -> float:
    """value / baseline; 1.0 when both are 0 (as good as the baseline), inf for n / 0."""
    if baseline == 0:
        return 1.0 if value == 0 else math.inf
    return value / baseline


def result(name: str, value: float, unit: str, baseline: float) -> str:
    r = ratio(value, baseline)
    return f"RESULT {name} {value:.4g} {unit} baseline={baseline:.4g} ratio={r:.3f}"


def failed(samples: Sequence[Sample]) -> int:
    return sum(1 for s in samples if not s.ok)


def tally(outcomes: Counter[str]) -> str:
    return ", ".join(f"{n}x {what}" for what, n in outcomes.most_common()) or "none"


def describe(label: str, samples: Sequence[Sample]) -> str:
    outcomes = Counter(s.outcome for s in samples if not s.ok)
    return (
        f"  {label}: {len(samples)} GETs, p50 {latency_ms(samples, 0.5):.2f} ms, "
        f"p99 {latency_ms(samples, 0.99):.2f} ms, max {latency_ms(samples, 1.0):.1f} ms; "
        f"failed: {tally(outcomes)}"
    )


def timeline(run: Run, victim: str) -> None:
    """Per second of the measured loop (by scheduled start): load, failures, tail, victim."""
    seconds = math.ceil(run.samples[-1].scheduled - run.start)
    for i in range(seconds):
        part = [s for s in run.samples if i <= s.scheduled - run.start < i + 1]
        mark = " <- fault" if i <= run.fault_done - run.start < i + 1 else ""
        print(
            f"    {i:>2}-{i + 1:<2}s {len(part):>4} GETs {failed(part):>3} failed, "
            f"p99 {latency_ms(part, 0.99):7.1f} ms, max {latency_ms(part, 1.0):7.1f} ms, "
            f"{sum(s.touched(victim) for s in part):>3} attempts on {victim}{mark}"
        )


def on_victim(samples: Sequence[Sample], victim: str) -> Counter[str]:
    return Counter(a.outcome for s in samples for a in s.attempts if a.instance == victim)


def when(seconds: float) -> str:
    return f"{seconds:.3f} s after the fault" if math.isfinite(seconds) else "not within the phase"


def report_kill(run: Run, victim: str) -> list[str]:
    before, after = run.before(), run.after()
    touched = [s for s in after if s.touched(victim)]
    last = max(touched, key=lambda s: max(s.sent_to(victim))) if touched else None
    last_sent = max(max(last.sent_to(victim)) - run.fault_done, 0.0) if last else 0.0
    gone = run.since("dropped")
    into = run.fault_done - run.start
    print(f"kill: SIGKILL {victim} {into:.3f} s into {len(run.samples)} GETs (default policy)")
    timeline(run, victim)
    print(describe("before", before))
    print(describe("after ", after))
    print(f"  attempts on {victim} from the kill on: {tally(on_victim(touched, victim))}")
    if last is not None:
        sent = max(last.sent_to(victim)) - run.fault_done
        print(
            f"  the last was sent {sent * 1000:+.1f} ms after the kill, in a call started "
            f"{(last.started - run.fault_done) * 1000:+.1f} ms and answered "
            f"{(last.ended - run.fault_done) * 1000:+.1f} ms after it ({last.outcome})"
        )
    print(f"  discovery dropped {victim}: {when(gone)} (registry TTL 2.5 s)")
    p50, p99 = latency_ms(after, 0.5), latency_ms(after, 0.99)
    return [
        result("failover_kill_get_failures", failed(after), "requests", failed(before)),
        result("failover_dead_endpoint_time", last_sent, "s", gone),
        result("failover_kill_p50_after", p50, "ms", latency_ms(before, 0.5)),
        result("failover_kill_p99_after", p99, "ms", latency_ms(before, 0.99)),
    ]


def report_stuck(name: str, run: Run, victim: str, policy: ServicePolicy) -> list[str]:
    timeout, threshold = policy.timeout, policy.outlier.failures
    before, after = run.before(), run.after()
    hit = [s for s in after if s.touched(victim)]
    hurt = on_victim(hit, victim)
    attempts = sum(n for outcome, n in hurt.items() if outcome != "200")
    late = sum(1 for s in after if s.wait > timeout + MARGIN)
    what = "hangs (POST /hang)" if name == "hang" else "freezes (SIGSTOP)"
    into = run.fault_done - run.start
    print(f"{name}: {victim} {what} {into:.3f} s in; service timeout {timeout:g} s")
    timeline(run, victim)
    print(describe("before", before))
    print(describe("after ", after))
    print(
        f"  longest client wait {max(s.wait for s in after):.3f} s (before the fault "
        f"{max(s.wait for s in before) * 1000:.1f} ms); {late} calls waited longer than "
        f"timeout + {MARGIN * 1000:.0f} ms"
    )
    print(
        f"  {attempts} failed attempts on {victim} from the fault on "
        f"({tally(hurt)}; a 200 was in flight at the fault)"
    )
    print(f"  {victim} ejected: {when(run.since('ejected'))}")
    print(f"  discovery dropped {victim}: {when(run.since('dropped'))}")
    p99 = latency_ms(after, 0.99)
    return [
        result(f"failover_{name}_get_failures", failed(after), "requests", failed(before)),
        result(f"failover_{name}_max_wait", max(s.wait for s in after), "s", timeout),
        result(f"failover_{name}_ejection_time", run.since("ejected"), "s", timeout),
        result(f"failover_{name}_attempts_to_stuck", attempts, "attempts", threshold),
        result(f"failover_{name}_p99_after", p99, "ms", latency_ms(before, 0.99)),
    ]


async def main(args: argparse.Namespace) -> None:
    print(source_state())
    steal = cpu_steal()
    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    nats = EmbeddedNats(tmp)
    await nats.start()
    backbone = await Backbone.connect(nats.url)
    watcher = Discovery(NatsRegistry(backbone, APP))
    results: list[str] = []
    try:
        await watcher.start()
        bench = Bench(args, nats.url, watcher, tmp)
        for name in args.phases.split(","):
            results += await bench.phase(name, PHASES[name])
    finally:
        await watcher.aclose()
        await backbone.aclose()
        await nats.stop()
    stolen, total = (b - a for a, b in zip(steal, cpu_steal(), strict=True))
    print(f"(replica logs in {tmp}; CPU steal during the run {stolen / max(total, 1):.1%})")
    for line in results:
        print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=500.0, help="GETs per second")
    parser.add_argument("--before", type=float, default=4.0, help="seconds before the fault")
    parser.add_argument("--after", type=float, default=6.0, help="seconds after the fault")
    parser.add_argument("--timeout", type=float, default=1.0, help="service timeout (hang, freeze)")
    parser.add_argument(
        "--per-try", type=float, default=0.0, help="per-try timeout in seconds (0: none)"
    )
    parser.add_argument("--phases", default="kill,hang,freeze", help="of kill, hang, freeze")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(parser.parse_args()))
