"""One mesh call, start to finish: deadline, faults, bulkhead, attempts, retries.

The order of a call:

1. its deadline: the nearer of the service's (or route's) ``timeout`` and the
   deadline inherited from the request being handled; already past → fail;
2. its version (header match, else weighted split) and injected faults
   (an abort answers at once with ``shoal-reason: fault-injected``);
3. a slot in the destination's bulkhead, or ``overloaded`` at once;
4. attempts: an eligible instance (not ejected, chosen by the balancer), the
   remaining time sent in ``shoal-timeout``; a refused connection goes
   elsewhere at once; a 502/503/504 or a cut-off answer is retried only when
   the request is safe to repeat, after full-jitter backoff, while the retry
   budget and the deadline allow. Every attempt is recorded for ``--explain``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

import httpx

from shoal.exceptions import (
    BreakerOpenError,
    BudgetExhaustedError,
    CallTimeoutError,
    DeadlineExceededError,
    EndpointsUnreachableError,
    OverloadedError,
    TransportError,
    UpstreamError,
)
from shoal.manifest._policy import RoutePolicy
from shoal.mesh import _deadline
from shoal.mesh._attempts import ATTEMPTS, Attempt
from shoal.mesh._backoff import full_jitter
from shoal.mesh._body import Whole, buffered, raw_header, replayable_size, small_body
from shoal.mesh._destination import Destination
from shoal.mesh._http11 import CONNECT_SECONDS, ConnectFailedError
from shoal.mesh._metrics import count_retry
from shoal.mesh._routing import choose_version, decide_faults
from shoal.mesh._tracing import client_span
from shoal.registry._records import InstanceRecord

if TYPE_CHECKING:
    from shoal.mesh._transport import MeshTransport

__all__ = ["CALLER_HEADER", "REASON_HEADER", "RETRYABLE_STATUS", "SAFE_METHODS", "Call"]

REASON_HEADER = "shoal-reason"
CALLER_HEADER = "shoal-caller"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRYABLE_STATUS = frozenset({502, 503, 504})
_TIMEOUT = _deadline.TIMEOUT_HEADER.encode()
_CALLER = CALLER_HEADER.encode()
_REASON = REASON_HEADER.encode()
RETRY_BODY_LIMIT = 64 * 1024
"""A request body larger than this is never sent twice."""
LATE_MARGIN = 0.005
"""An instance's 504 ``deadline-exceeded`` this close to our own deadline is our timeout."""
DOWN_FOR = 5.0
"""Seconds an instance that refused a connection is skipped (until it re-registers)."""


class Call:
    """The state of one call through :class:`MeshTransport`."""

    def __init__(
        self,
        transport: MeshTransport,
        request: httpx.Request,
        dest: Destination,
        candidates: list[InstanceRecord],
    ) -> None:
        self.t = transport
        self.request = request
        self.dest = dest
        self.candidates = candidates
        self.attempts: list[Attempt] = []
        policy = dest.policy
        self.route: RoutePolicy | None = policy.route(request.method, request.url.path)
        route = self.route
        self.max_attempts = (
            route.attempts if route and route.attempts is not None else policy.retries.attempts
        )
        self.safe = self._safe_to_repeat()
        self.per_try = policy.retries.per_try_timeout if self.safe else None
        """A per-try timeout applies only to requests that may be sent again."""
        timeout = route.timeout if route and route.timeout is not None else policy.timeout
        own = _deadline.now() + timeout
        inherited = _deadline.current_deadline()
        self.inherited = inherited is not None and inherited <= own
        self.deadline = inherited if inherited is not None and self.inherited else own
        self.timeout = timeout

    def _safe_to_repeat(self) -> bool:
        request = self.request
        size = replayable_size(request)
        if size is None or size > RETRY_BODY_LIMIT:
            return False
        if self.route is not None and self.route.idempotent is not None:
            return self.route.idempotent
        return request.method in SAFE_METHODS or "idempotency-key" in request.headers

    # -- errors ----------------------------------------------------------------

    def _fail(self, kind: type[TransportError], message: str) -> TransportError:
        service = self.dest.service
        return kind(
            f"{self.request.method} http://{service}{self.request.url.raw_path.decode()}: "
            f"{message}",
            request=self.request,
            attempts=self.attempts,
        )

    def _late(self) -> TransportError:
        if self.inherited:
            return self._fail(
                DeadlineExceededError,
                "the deadline of the request being handled passed (deadline-exceeded)",
            )
        return self._fail(CallTimeoutError, f"no answer within its timeout of {self.timeout:g}s")

    def _left(self) -> float:
        return self.deadline - _deadline.now()

    # -- the call --------------------------------------------------------------

    async def run(self) -> httpx.Response:
        if self._left() <= 0:
            self.attempts.append(Attempt("", outcome="deadline already passed", decision="gave up"))
            raise self._late()
        policy = self.dest.policy
        rng = self.t.rng
        version, why = choose_version(policy.traffic, self.request.headers, rng)
        if version is not None:
            self._narrow_to(version, why)
        elif policy.traffic.mirror is not None:  # the shadow version gets mirrored copies only
            shadow = policy.traffic.mirror.version
            self.candidates = [r for r in self.candidates if r.version != shadow] or self.candidates
        delay, abort = decide_faults(policy.traffic.faults, rng)
        if abort is not None:
            return self._aborted(abort)
        if delay > 0:
            await self._delay(delay)
        dest = self.dest
        if not dest.bulkhead.try_acquire():
            limit = dest.bulkhead.limit
            self.attempts.append(
                Attempt("", outcome=f"{limit} calls in flight", decision="refused")
            )
            raise self._fail(
                OverloadedError,
                f"this process already has {limit} calls in flight to the service "
                "(limits.concurrency); refusing at once instead of queueing",
            )
        try:
            return await self._attempts()
        finally:
            dest.bulkhead.release()

    def _narrow_to(self, version: str, why: str) -> None:
        subset = [r for r in self.candidates if r.version == version]
        if subset:
            self.candidates = subset
            self.attempts.append(Attempt("", outcome=f"version {version}", decision=why))
        else:
            note = f"no ready instance of version {version}; any version"
            self.attempts.append(Attempt("", outcome=note, decision=why))

    def _aborted(self, status: int) -> httpx.Response:
        self.attempts.append(Attempt("", outcome=f"abort {status}", decision="fault-injected"))
        body = b"fault injected by the mesh (traffic.faults.abort)\n"
        headers = {
            REASON_HEADER: "fault-injected",
            "content-type": "text/plain",
            "content-length": str(len(body)),
        }
        # a stream, not content=: a proxy relays it with aiter_raw like any other answer
        response = httpx.Response(status, headers=headers, stream=Whole(body), request=self.request)
        response.extensions[ATTEMPTS] = self.attempts
        return response

    async def _delay(self, seconds: float) -> None:
        left = self._left()
        self.attempts.append(
            Attempt("", outcome=f"delay {seconds * 1000:.0f} ms", decision="fault-injected")
        )
        if seconds >= left:
            await asyncio.sleep(max(left, 0))
            raise self._late()
        await asyncio.sleep(seconds)

    async def _attempts(self) -> httpx.Response:
        self.dest.budget.record_request()
        refused: set[str] = set()
        tried: set[str] = set()
        number = 0
        while True:
            number += 1
            record = self._pick(tried, refused)
            tried.add(record.instance)
            try:
                response = await self._send(record, number)
            except _Retry as retry:
                if retry.refused:
                    refused.add(record.instance)
                await self._before_retry(number, retry)
                count_retry(self.t.caller, self.dest.service)
                continue
            return response

    def _pick(self, tried: set[str], refused: set[str]) -> InstanceRecord:
        outlier = self.dest.outlier
        live = [r for r in self.candidates if r.instance not in refused]
        if not live:
            raise self._fail(
                EndpointsUnreachableError,
                f"every instance of service {self.dest.service!r} refused the connection "
                f"({_where(self.candidates)})",
            )
        eligible_ids = set(outlier.eligible([r.instance for r in live]))
        eligible = [r for r in live if r.instance in eligible_ids]
        if not eligible:
            ejected = outlier.ejected()
            detail = ", ".join(f"{i} for {s:.0f}s more" for i, s in sorted(ejected.items()))
            self.attempts.append(Attempt("", outcome="all instances ejected", decision="gave up"))
            raise self._fail(
                BreakerOpenError,
                f"every instance is ejected after repeated failures ({detail or 'probing'}); "
                "failing fast (breaker-open)",
            )
        balancer = self.t.balancer
        record = balancer.pick(eligible, tried) or balancer.pick(eligible)
        if record is None:  # every eligible one is marked down: try one anyway
            record = eligible[0]
        return record

    async def _send(self, record: InstanceRecord, number: int) -> httpx.Response:
        """One attempt, in a client span of its own (a retried call shows every try)."""
        span = client_span(
            self.request.method, self.dest.service, record.instance, record.address, number
        )
        try:
            response = await self._send_once(record, number, span.headers())
        except BaseException as exc:
            last = self.attempts[-1] if self.attempts else None
            outcome = last.outcome if last is not None and last.outcome else type(exc).__name__
            span.failed(outcome)
            raise
        found = raw_header(response, _REASON)
        span.answered(response.status_code, found.decode("latin-1") if found else None)
        return response

    async def _send_once(
        self, record: InstanceRecord, number: int, trace_headers: list[tuple[bytes, bytes]]
    ) -> httpx.Response:
        request = self.request
        left = self._left()
        if left <= 0:
            raise self._late()
        extra = [(_TIMEOUT, _deadline.format_timeout(left).encode()), *trace_headers]
        if self.t.caller:
            extra.append((_CALLER, self.t.caller_bytes))
        attempt = Attempt(record.instance, record.address, record.version, sent=_deadline.now())
        self.attempts.append(attempt)
        balancer, outlier = self.t.balancer, self.dest.outlier
        started = balancer.start(record.instance)
        outlier.started(record.instance)
        per_try = self.per_try if self.per_try is not None and self.per_try < left else None
        try:
            async with asyncio.timeout(left if per_try is None else per_try):
                response = await self.t.pool.send(
                    record.host, record.port, request, extra, identity=record.identity
                )
                if (self.safe or request.method in SAFE_METHODS) and small_body(response):
                    response = await buffered(response)
        except ConnectFailedError as exc:
            self._failed(record, attempt, started, f"connect failed: {exc}")
            balancer.mark_down(record.instance, DOWN_FOR)
            self.t.pool.drop_endpoint(record.host, record.port)
            raise self._retry_or_stop(attempt, number, "connect failed", refused=True) from exc
        except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
            self._failed(record, attempt, started, f"answer cut off: {exc}")
            self.t.pool.drop_endpoint(record.host, record.port)
            if not self.safe:
                attempt.decision = "gave up: not safe to repeat"
                raise self._fail(UpstreamError, f"{record.instance} broke off its answer") from exc
            raise self._retry_or_stop(attempt, number, "answer cut off") from exc
        except TimeoutError as exc:
            # a hung instance is recorded as slow as it is, so it is not chosen again at once
            self._failed(record, attempt, started, "timed out", sample=True)
            if per_try is not None:  # the try's own timeout: another instance may answer
                why = f"no answer within the per-try timeout of {per_try:g}s"
                raise self._retry_or_stop(attempt, number, why, timed_out=True) from exc
            attempt.decision = "gave up: deadline"
            raise self._late() from exc
        except httpx.TimeoutException as exc:  # the client's own read/write timeout
            self._failed(record, attempt, started, "timed out", sample=True)
            attempt.decision = "gave up: client timeout"
            message = f"{record.instance} did not answer in time ({type(exc).__name__}: {exc})"
            raise self._fail(CallTimeoutError, message) from exc
        except BaseException:
            balancer.abandon(record.instance)
            outlier.abandoned(record.instance)
            raise
        # Connecting (a TLS handshake, mostly) is not the instance's latency: like Linkerd's
        # balancer, which connects before it starts the clock, leave it out of the sample.
        connecting = response.extensions.get(CONNECT_SECONDS, 0.0)
        balancer.finish(record.instance, started + connecting)
        attempt.latency = _deadline.now() - attempt.sent
        status = response.status_code
        found = raw_header(response, _REASON)
        reason = found.decode("latin-1") if found is not None else None
        attempt.outcome = f"{status} {reason}" if reason else str(status)
        if reason == "deadline-exceeded" and self._left() < LATE_MARGIN:
            # The instance's clock for our own deadline ran out a moment before ours did:
            # the same as our timer firing, and a failure of the instance all the same.
            outlier.record(record.instance, False)
            attempt.outcome = f"timed out (it answered {attempt.outcome} at the deadline)"
            attempt.decision = "gave up: deadline"
            await response.aclose()
            raise self._late()
        # an inherited deadline that passed is not the instance's failure
        outlier.record(record.instance, status < 500 or reason == "deadline-exceeded")
        if reason == "deadline-exceeded":  # no retry can be in time
            attempt.decision = "returned: the deadline has passed"
        elif status in RETRYABLE_STATUS and self.safe and number < self.max_attempts:
            retry = self._retry_or_stop(attempt, number, attempt.outcome)
            await response.aclose()
            raise retry
        elif status in RETRYABLE_STATUS and self.safe:
            attempt.decision = f"gave up: {number} attempts used"
            if reason is None:
                response.headers[REASON_HEADER] = "upstream-error"
        else:
            attempt.decision = "returned"
        response.extensions[ATTEMPTS] = self.attempts
        response.extensions["shoal.instance"] = record.instance
        return response

    def _failed(
        self,
        record: InstanceRecord,
        attempt: Attempt,
        started: float,
        why: str,
        *,
        sample: bool = False,
    ) -> None:
        balancer = self.t.balancer
        if sample:
            balancer.finish(record.instance, started)
        else:
            balancer.abandon(record.instance)
        self.dest.outlier.record(record.instance, False)
        attempt.latency = _deadline.now() - attempt.sent
        attempt.outcome = why

    def _retry_or_stop(
        self,
        attempt: Attempt,
        number: int,
        why: str,
        *,
        refused: bool = False,
        timed_out: bool = False,
    ) -> Exception:
        """A retry marker when another attempt may be made, else the error to raise."""
        if number >= self.max_attempts:
            attempt.decision = f"gave up: {number} attempts used"
            if timed_out:
                return self._fail(CallTimeoutError, f"{number} attempts timed out ({why})")
            if refused:
                return self._fail(
                    EndpointsUnreachableError,
                    f"{number} attempts failed to connect ({_attempted(self.attempts)})",
                )
            return self._fail(
                UpstreamError, f"the service failed before answering, {number} attempts ({why})"
            )
        if not self.dest.budget.try_retry():
            attempt.decision = "gave up: retry budget exhausted"
            return self._fail(
                BudgetExhaustedError,
                f"{why}, and the retry budget is spent (retries may add "
                f"{self.dest.policy.retries.budget.percent:g}% of requests plus "
                f"{self.dest.policy.retries.budget.min_per_second:g}/s)",
            )
        return _Retry(why, refused=refused)

    async def _before_retry(self, number: int, retry: _Retry) -> None:
        attempt = self.attempts[-1]
        if retry.refused:  # nothing was sent: go elsewhere at once
            attempt.decision = f"retry at once elsewhere: {retry.why}"
            return
        backoff = self.dest.policy.retries.backoff
        pause = full_jitter(number, base=backoff.base, cap=backoff.cap, rng=self.t.rng)
        if pause >= self._left():
            attempt.decision = f"gave up: no time left for a retry after {pause * 1000:.0f} ms"
            raise self._late()
        attempt.decision = f"retry after {pause * 1000:.0f} ms: {retry.why}"
        await asyncio.sleep(pause)


class _Retry(Exception):
    """Internal: make another attempt."""

    def __init__(self, why: str, *, refused: bool) -> None:
        self.why = why
        self.refused = refused


def _where(records: Sequence[InstanceRecord]) -> str:
    return ", ".join(f"{r.instance} at {r.address}" for r in records) or "none"


def _attempted(attempts: Sequence[Attempt]) -> str:
    return "; ".join(f"{a.instance}: {a.outcome}" for a in attempts if a.instance)
