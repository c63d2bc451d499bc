"""Traffic policy: how callers treat a service, as written under it in ``shoal.yaml``.

One :class:`ServicePolicy` per service says what every caller applies when it
calls that service (deadline, retries and their budget, outlier ejection, the
outbound concurrency cap, version routing, mirroring, fault injection, per-route
overrides) and what the service's own instances apply to what they receive
(adaptive concurrency limit, rate limits per caller). The same models parse the
YAML (durations such as ``250ms``) and travel as JSON to every process, which
applies them live. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
)

from shoal.manifest._authz import AuthzPolicy
from shoal.manifest._checks import Version, between, problem

__all__ = [
    "AbortFault",
    "BackoffPolicy",
    "BudgetPolicy",
    "DelayFault",
    "Duration",
    "FaultPolicy",
    "HeaderMatch",
    "LimitsPolicy",
    "MirrorPolicy",
    "OutlierPolicy",
    "RetryPolicy",
    "RoutePolicy",
    "ServicePolicy",
    "TrafficPolicy",
    "DEFAULT_POLICY",
    "parse_duration",
]

_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}
_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "POST", "PATCH", "TRACE"})
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


def parse_duration(value: object) -> object:
    """``250ms``, ``1.5s``, ``2m`` or a number of seconds, as seconds (a float)."""
    if isinstance(value, bool):
        raise problem("expected a duration such as 250ms, 2s or 1m, got true/false")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
        raise problem(f"expected a duration such as 250ms, 2s or 1m, got {value!r}")
    return value


def _positive(value: float) -> float:
    if value <= 0:
        raise problem(f"must be more than 0, got {value:g}")
    if value > 86400:
        raise problem(f"must be at most a day (86400s), got {value:g}s")
    return value


def _rate(value: float) -> float:
    if not 0 < value <= 1e9:
        raise problem(f"must be a number of requests per second above 0, got {value:g}")
    return value


def _percent(value: float) -> float:
    if not 0 <= value <= 100:
        raise problem(f"must be a percentage between 0 and 100, got {value:g}")
    return value


def _method(value: str) -> str:
    upper = value.upper()
    if upper not in _METHODS:
        raise problem(f"unknown HTTP method {value!r} (methods: {', '.join(sorted(_METHODS))})")
    return upper


def _header_name(value: str) -> str:
    if not _HEADER_NAME.fullmatch(value):
        raise problem(f"not a valid header name: {value!r}", at_key=True)
    return value.lower()


def _route_path(value: str) -> str:
    if not value.startswith("/"):
        raise problem(f"must start with '/', got {value!r} (try {'/' + value!r})")
    return value


def _caller(value: str) -> str:
    if value != "*" and not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", value):
        raise problem(f"expected a caller service name or '*', got {value!r}", at_key=True)
    return value


def _no_bool(value: object) -> object:
    if isinstance(value, bool):
        raise problem("expected a number, got true/false")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]
Percent = Annotated[float, BeforeValidator(_no_bool), AfterValidator(_percent)]
Method = Annotated[StrictStr, AfterValidator(_method)]
HeaderName = Annotated[StrictStr, AfterValidator(_header_name)]
Caller = Annotated[StrictStr, AfterValidator(_caller)]
Rate = Annotated[float, BeforeValidator(_no_bool), AfterValidator(_rate)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackoffPolicy(_Model):
    """Full-jitter backoff between attempts: uniform in [0, min(cap, base * 2**(n-1))]."""

    base: Duration = 0.025
    cap: Duration = 0.25


class BudgetPolicy(_Model):
    """Retries may add at most ``percent`` of requests plus ``min_per_second`` over ``window``."""

    percent: Percent = 20.0
    min_per_second: Annotated[float, Field(ge=0, le=1_000_000)] = 10.0
    window: Duration = 10.0


class RetryPolicy(_Model):
    """At most ``attempts`` tries in all (1 turns retries off), inside the deadline.

    ``per_try_timeout`` (off by default) gives each try of a request that is safe to
    repeat its own timeout, after which it is retried on another instance: a hung
    instance then costs one short wait instead of the caller's whole deadline."""

    attempts: Annotated[StrictInt, between(1, 10)] = 3
    backoff: BackoffPolicy = BackoffPolicy()
    budget: BudgetPolicy = BudgetPolicy()
    per_try_timeout: Duration | None = None


class OutlierPolicy(_Model):
    """Eject an instance after ``failures`` consecutive failures (5xx or connect errors)."""

    failures: Annotated[StrictInt, between(1, 1000)] = 5
    ejection: Duration = 30.0
    max_ejection: Duration = 300.0
    max_ejected_percent: Percent = 50.0


class LimitsPolicy(_Model):
    """Caps: ``concurrency`` per caller process (outbound bulkhead); the instances' own
    adaptive concurrency limit (``adaptive``); requests per second per caller (``rate``,
    ``"*"`` for every caller not named)."""

    concurrency: Annotated[StrictInt, between(1, 1_000_000)] = 1024
    adaptive: StrictBool = True
    rate: dict[Caller, Rate] = Field(default_factory=dict)


class RoutePolicy(_Model):
    """Overrides for requests whose path starts with ``path`` (and method in ``methods``)."""

    path: Annotated[StrictStr, AfterValidator(_route_path)]
    methods: tuple[Method, ...] = ()
    timeout: Duration | None = None
    attempts: Annotated[StrictInt, between(1, 10)] | None = None
    idempotent: StrictBool | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        prefix = self.path
        return path == prefix or path.startswith(prefix if prefix.endswith("/") else prefix + "/")


class HeaderMatch(_Model):
    """Requests carrying every header in ``headers`` (exact values) go to ``version``."""

    headers: dict[HeaderName, StrictStr]
    version: Version

    def matches(self, headers: Mapping[str, str]) -> bool:
        return all(headers.get(name) == value for name, value in self.headers.items())


class MirrorPolicy(_Model):
    """Send ``percent`` of requests also to ``version``; its answer is only compared."""

    version: Version
    percent: Percent = 100.0


class DelayFault(_Model):
    percent: Percent
    duration: Duration


class AbortFault(_Model):
    percent: Percent
    status: Annotated[StrictInt, between(400, 599)] = 503


class FaultPolicy(_Model):
    """Injected faults: delay ``delay.percent`` of requests, abort ``abort.percent``."""

    delay: DelayFault | None = None
    abort: AbortFault | None = None


class TrafficPolicy(_Model):
    """Which version answers: header matches first, then the weighted ``split``."""

    split: dict[Version, Annotated[StrictInt, between(0, 100)]] = Field(default_factory=dict)
    match: tuple[HeaderMatch, ...] = ()
    mirror: MirrorPolicy | None = None
    faults: FaultPolicy | None = None


class ServicePolicy(_Model):
    """Everything callers and instances of one service apply; defaults are shoal's."""

    timeout: Duration = 10.0
    retries: RetryPolicy = RetryPolicy()
    outlier: OutlierPolicy = OutlierPolicy()
    limits: LimitsPolicy = LimitsPolicy()
    routes: tuple[RoutePolicy, ...] = ()
    traffic: TrafficPolicy = TrafficPolicy()
    authz: AuthzPolicy = AuthzPolicy()

    def route(self, method: str, path: str) -> RoutePolicy | None:
        """The first route rule that applies to ``method path``, if any."""
        return next((r for r in self.routes if r.matches(method, path)), None)

    @classmethod
    def from_json(cls, data: str | bytes) -> ServicePolicy:
        return cls.model_validate_json(data)

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_defaults=True).encode()


DEFAULT_POLICY = ServicePolicy()
