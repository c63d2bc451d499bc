"""Failover under load: one of three replicas SIGKILLed, then one that hangs.

Three real `shoal serve` replicas of this module's ``app`` (a GET answers after
1 ms of simulated I/O; ``POST /hang`` makes that replica never answer a request
again, while it keeps heartbeating) register in an embedded NATS. One
``shoal.client()``, with its own discovery from NATS, drives an open loop of
RATE GET/s: each request starts on schedule as a task of its own, latency counts
from the scheduled start (no coordinated omission). Each phase: 1 s warm-up,
BEFORE s steady, the fault, AFTER s more.

* kill: default policy (10 s timeout). Reports failed GETs, the time from the
  SIGKILL to the last request that had an attempt on the dead replica (from
  ``response.extensions["shoal.attempts"]``), p50/p99 before and after. Baseline
  of that time: when a separate discovery watcher saw the dead replica drop out
  of the registry in the same run (its TTL running out), i.e. what discovery
  alone would take.
* hang: three fresh replicas of another service, service timeout TIMEOUT s
  (``ServicePolicy``). Reports failed GETs, the longest any call waited, when the
  hung replica was ejected (``outlier.ejected()``, polled every 5 ms) and how
  many attempts went to it.

    python bench/failover.py [--rate 500] [--before 4] [--after 6] [--timeout 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
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

clock = time.perf_counter  # uvloop's loop.time() only has millisecond resolution

# -- the replicas' app -----------------------------------------------------------

BODY = b'{"item": 42}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
_state = {"hanging": False}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """GET: answer after WORK s. POST /hang: from now on, no request is ever answered."""
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

    def touched(self, instance: str) -> int:
        return sum(1 for a in self.attempts if a.instance == instance)


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


async def at(when: float, action: Callable[[], Awaitable[None]]) -> float:
    """Run ``action`` at ``when`` (on ``clock``); return when it had been done."""
    await asyncio.sleep(max(when - clock(), 0))
    await action()
    return clock()


async def first_time(after: Awaitable[float], holds: Callable[[], bool], limit: float) -> float:
    """When ``holds()`` first became true (polled every POLL s), once ``after`` is done."""
    end = await after + limit
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
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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


def split(samples: list[Sample], when: float) -> tuple[list[Sample], list[Sample]]:
    return [s for s in samples if s.started < when], [s for s in samples if s.started >= when]


def failures(samples: Sequence[Sample]) -> Counter[str]:
    return Counter(s.outcome for s in samples if not s.ok)


def describe(label: str, samples: Sequence[Sample]) -> str:
    failed = failures(samples)
    shown = ", ".join(f"{n} {what}" for what, n in failed.most_common()) or "none failed"
    return (
        f"  {label}: {len(samples)} GETs, p50 {latency_ms(samples, 0.5):.2f} ms, "
        f"p99 {latency_ms(samples, 0.99):.2f} ms, max {latency_ms(samples, 1.0):.1f} ms; "
        f"{shown}"
    )


def victim_attempts(samples: Sequence[Sample], victim: str) -> Counter[str]:
    return Counter(a.outcome for s in samples for a in s.attempts if a.instance == victim)


# -- the phases ------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """The measured loop of one phase: the samples, when the fault was done, when the
    watched-for consequence was first seen (inf: not within the phase)."""

    samples: list[Sample]
    start: float
    fault_at: float
    seen_at: float


@dataclasses.dataclass
class Bench:
    args: argparse.Namespace
    nats_url: str
    watcher: Discovery
    logs: Path

    async def ready(self, service: str) -> None:
        await self.watcher.wait_for(lambda c: len(c.ready(service)) == REPLICAS, timeout=30)

    def present(self, service: str) -> set[str]:
        return {r.instance for r in self.watcher.instances(service)}

    async def load(
        self,
        http: httpx.AsyncClient,
        service: str,
        fault: Callable[[], Awaitable[None]],
        consequence: Callable[[], bool],
    ) -> Run:
        """Warm up; then the measured loop, ``fault`` done BEFORE s into it, and
        ``consequence`` polled from then on."""
        args = self.args
        url = f"http://{service}/item"
        await open_loop(http, url, args.rate, clock() + 0.01, 1.0)
        await asyncio.sleep(0.3)
        start = clock() + 0.01
        fault_task = asyncio.create_task(at(start + args.before, fault))
        seen = asyncio.create_task(first_time(fault_task, consequence, args.after))
        samples = await open_loop(http, url, args.rate, start, args.before + args.after)
        return Run(samples, start, await fault_task, await seen)

    async def kill(self) -> list[str]:
        service = "svc-kill"
        with replicas(service, self.nats_url, self.logs) as procs:
            await self.ready(service)
            victim, proc = f"{service}-1", procs[1]

            async def sigkill() -> None:
                os.kill(proc.pid, signal.SIGKILL)

            def gone() -> bool:
                return victim not in self.present(service)

            async with shoal.client(nats_url=self.nats_url, app=APP) as http:
                run = await self.load(http, service, sigkill, gone)
            proc.wait(timeout=10)
        return report_kill(run, victim)

    async def hang(self) -> list[str]:
        service = "svc-hang"
        policy = ServicePolicy.model_validate({"timeout": self.args.timeout})
        policies = StaticPolicies({service: policy})
        with replicas(service, self.nats_url, self.logs):
            await self.ready(service)
            victim = f"{service}-1"
            record = next(r for r in self.watcher.ready(service) if r.instance == victim)

            async def hang() -> None:
                async with httpx.AsyncClient() as direct:
                    (await direct.post(f"http://{record.address}/hang")).raise_for_status()

            async with shoal.client(nats_url=self.nats_url, app=APP, policies=policies) as http:
                transport = http._transport  # the MeshTransport that shoal.client() built
                if not isinstance(transport, MeshTransport):
                    raise TypeError(f"shoal.client() transport is {type(transport).__name__}")

                def ejected() -> bool:
                    dest = transport.destinations.get(service)
                    return dest is not None and victim in dest.outlier.ejected()

                run = await self.load(http, service, hang, ejected)
        return report_hang(run, victim, policy)


# -- reports ---------------------------------------------------------------------


def report_kill(run: Run, victim: str) -> list[str]:
    killed_at = run.fault_at
    before, after = split(run.samples, killed_at)
    touched = [s for s in run.samples if s.ended >= killed_at and s.touched(victim)]
    last = max(touched, key=lambda s: s.started) if touched else None
    last_sent = (last.started - killed_at) if last else 0.0
    gone = run.seen_at - killed_at
    print(f"kill: SIGKILL {victim} {killed_at - run.start:.3f} s into {len(run.samples)} GETs")
    print(describe("before", before))
    print(describe("after ", after))
    print(describe("first second after", [s for s in after if s.started < killed_at + 1]))
    outcomes = victim_attempts(touched, victim)
    print(
        f"  {len(touched)} GETs answered after the kill had an attempt on {victim} "
        f"({', '.join(f'{n}x {o}' for o, n in outcomes.most_common()) or 'none'})"
    )
    if last is not None:
        print(
            f"  last of them started {last_sent * 1000:+.1f} ms after the kill, answered "
            f"{(last.ended - killed_at) * 1000:+.1f} ms after it ({last.outcome})"
        )
    print(f"  discovery dropped {victim} {gone:.3f} s after the kill (registry TTL 2.5 s)")
    failed_before, failed_after = sum(failures(before).values()), sum(failures(after).values())
    return [
        result("failover_kill_get_failures", failed_after, "requests", failed_before),
        result("failover_dead_endpoint_time", max(last_sent, 0.0), "s", gone),
        result("failover_kill_p50_after", latency_ms(after, 0.5), "ms", latency_ms(before, 0.5)),
        result("failover_kill_p99_after", latency_ms(after, 0.99), "ms", latency_ms(before, 0.99)),
    ]


def report_hang(run: Run, victim: str, policy: ServicePolicy) -> list[str]:
    timeout, threshold = policy.timeout, policy.outlier.failures
    hung_at = run.fault_at
    before, after = split(run.samples, hung_at)
    waits = [s.ended - s.started for s in after]
    wait_before = max(s.ended - s.started for s in before)
    ejected = run.seen_at - hung_at
    hit = [s for s in run.samples if s.ended >= hung_at and s.touched(victim)]
    attempts = sum(s.touched(victim) for s in hit)
    into = hung_at - run.start
    print(f"hang: {victim} stops answering {into:.3f} s in; service timeout {timeout:g} s")
    print(describe("before", before))
    print(describe("after ", after))
    slow = sum(1 for w in waits if w > timeout)
    print(
        f"  longest client wait {max(waits):.3f} s (before the hang {wait_before * 1000:.1f} ms); "
        f"{slow} calls waited longer than the {timeout:g} s timeout"
    )
    outcomes = victim_attempts(hit, victim)
    print(
        f"  {attempts} attempts of {len(hit)} GETs went to {victim} after the hang "
        f"({', '.join(f'{n}x {o}' for o, n in outcomes.most_common()) or 'none'})"
    )
    when = f"{ejected:.3f} s after the hang" if math.isfinite(ejected) else "not within the phase"
    print(f"  {victim} ejected: {when}")
    failed_before, failed_after = sum(failures(before).values()), sum(failures(after).values())
    return [
        result("failover_hang_get_failures", failed_after, "requests", failed_before),
        result("failover_hang_max_wait", max(waits), "s", timeout),
        result("failover_hang_ejection_time", ejected, "s", timeout),
        result("failover_hang_attempts_to_hung", attempts, "attempts", threshold),
        result("failover_hang_p99_after", latency_ms(after, 0.99), "ms", latency_ms(before, 0.99)),
    ]


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    nats = EmbeddedNats(tmp)
    await nats.start()
    backbone = await Backbone.connect(nats.url)
    watcher = Discovery(NatsRegistry(backbone, APP))
    results: list[str] = []
    try:
        await watcher.start()
        bench = Bench(args, nats.url, watcher, tmp)
        if "kill" in args.phases:
            results += await bench.kill()
        if "hang" in args.phases:
            results += await bench.hang()
    finally:
        await watcher.aclose()
        await backbone.aclose()
        await nats.stop()
    print(f"(replica logs in {tmp})")
    for line in results:
        print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=500.0, help="GETs per second")
    parser.add_argument("--before", type=float, default=4.0, help="seconds before the fault")
    parser.add_argument("--after", type=float, default=6.0, help="seconds after the fault")
    parser.add_argument("--timeout", type=float, default=1.0, help="service timeout, hang phase")
    parser.add_argument("--phases", default="kill,hang", help="kill, hang or both")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(parser.parse_args()))
