"""The one exception tree of shoal.

Every error shoal raises on purpose derives from :class:`ShoalError`, so a user
can catch them all in one place. Errors of dependencies (nats-py, httpx, OS
errors) are translated at the edge with ``raise ... from exc``.

    ShoalError
    ├── ManifestError           shoal.yaml is missing or invalid (lists every problem)
    ├── BackboneError           the NATS backbone cannot start, died, or is unreachable
    ├── RegistryError           the service registry refused an operation
    ├── IdentityError           the certificate authority or an identity cannot be used
    │   └── SvidRejectedError   a presented certificate chain is not a valid SVID (``reason``)
    ├── TelemetryError          the telemetry store under DIR/.shoal/ cannot be used
    ├── StateError              a state store cannot be used, or a key or value is invalid
    │   └── ConcurrencyError    a write's ETag is stale, or a create-only key exists (``key``)
    ├── ConfigError             a config value, model or secret cannot be used, or no runtime
    ├── SagaError               a saga is misdefined, or a run was neither completed nor undone
    ├── EventsError             an event cannot be published or consumed as asked (topic, payload)
    │   └── PublishError        JetStream did not acknowledge a publish within its timeout
    ├── ServeError              an instance cannot be served
    │   ├── AppImportError      MODULE:APP does not name an importable ASGI app
    │   └── PortInUseError      the port to listen on is taken
    └── TransportError          a mesh call failed (also an ``httpx.TransportError``)
        ├── NoEndpointsError    no ready instance of the service (``no-endpoints``)
        ├── EndpointsUnreachableError
        │                       every instance refused or reset the connection
        ├── BreakerOpenError    every instance is ejected as an outlier (``breaker-open``)
        ├── OverloadedError     the caller's cap on concurrent calls is reached (``overloaded``)
        ├── BudgetExhaustedError
        │                       a retry was needed but the retry budget is spent
        ├── UpstreamError       the instance broke off its answer (``upstream-error``)
        └── CallTimeoutError    the call's own timeout passed (``timeout``)
            └── DeadlineExceededError
                                the deadline inherited from the caller's caller passed

Mesh transport errors also derive from the matching httpx exception, so code
written against plain httpx (``except httpx.ConnectError``) keeps working.
Each carries ``reason``, the machine-readable ``shoal-reason`` value, and
``attempts``, what the mesh tried before giving up (``shoal call --explain``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from shoal.mesh._attempts import Attempt
    from shoal.saga._model import SagaOutcome

__all__ = [
    "AppImportError",
    "BackboneError",
    "BreakerOpenError",
    "BudgetExhaustedError",
    "CallTimeoutError",
    "ConcurrencyError",
    "ConfigError",
    "DeadlineExceededError",
    "EndpointsUnreachableError",
    "EventsError",
    "IdentityError",
    "ManifestError",
    "ManifestProblem",
    "NoEndpointsError",
    "OverloadedError",
    "PortInUseError",
    "PublishError",
    "RegistryError",
    "SagaError",
    "ServeError",
    "ShoalError",
    "StateError",
    "SvidRejectedError",
    "TelemetryError",
    "TransportError",
    "UpstreamError",
]


class ShoalError(Exception):
    """Root of every error shoal raises on purpose."""


class ManifestProblem:
    """One problem in a manifest, located at ``path:line:col`` (``path`` alone if line is 0)."""

    __slots__ = ("column", "field", "line", "message", "path")

    def __init__(self, path: str, line: int, column: int, field: str, message: str) -> None:
        self.path = path
        self.line = line
        self.column = column
        self.field = field
        self.message = message

    def __str__(self) -> str:
        # line 0: the problem has no position (e.g. the file is missing)
        where = f"{self.path}:{self.line}:{self.column}" if self.line > 0 else self.path
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )

    def __repr__(self) -> str:
        return f"ManifestProblem({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ManifestProblem) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


class ManifestError(ShoalError):
    """The manifest is missing or invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[ManifestProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class BackboneError(ShoalError):
    """The NATS backbone could not be started, died, or cannot be reached."""


class RegistryError(ShoalError):
    """The service registry refused an operation."""


class EventsError(ShoalError):
    """An event cannot be published or consumed as asked: a bad topic, payload or header,
    no runtime to publish from, or a subscription that cannot work."""


class PublishError(EventsError):
    """JetStream did not acknowledge a publish within its timeout (the event may or may
    not be stored; publishing it again with the same id stores it at most once)."""


class IdentityError(ShoalError):
    """The certificate authority, a CSR or a workload identity cannot be used."""


class SvidRejectedError(IdentityError):
    """A presented certificate chain is not a valid SVID of the trust domain.

    ``reason`` says why, one of ``expired``, ``not-yet-valid``,
    ``foreign-trust-domain``, ``uri-san-count``, ``untrusted-chain``, ``not-an-svid``.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class TelemetryError(ShoalError):
    """The telemetry store (traces, logs, metrics) cannot be opened, read or written."""


class StateError(ShoalError):
    """A state store cannot be opened or reached, or a key or value cannot be stored."""


class ConfigError(ShoalError):
    """Configuration or a secret cannot be used: outside `shoal serve`, a value that does not
    fit the model asked for, an unknown service or key, a secret that is absent."""


class ConcurrencyError(StateError):
    """A write's condition failed: its ETag is no longer current (the key was changed or
    deleted since it was read), or a create-only write (``absent=True``) found the key
    already there. ``key`` names it; read it again and retry."""

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class SagaError(ShoalError):
    """A saga or one of its steps is misdefined, its stored record cannot be used, or a
    run could be neither completed nor compensated (``outcome`` then says how it ended:
    the failure that caused compensation and the compensation's own error)."""

    def __init__(self, message: str, *, outcome: SagaOutcome | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome


class ServeError(ShoalError):
    """An instance could not be served."""


class AppImportError(ServeError):
    """``MODULE:APP`` does not name an importable ASGI application."""


class PortInUseError(ServeError):
    """The address to listen on is already taken."""


class TransportError(ShoalError, httpx.TransportError):
    """A mesh call failed before a response arrived."""

    reason = "transport-error"
    status = 502
    """The HTTP status a proxy or a service answers with when this error stops a call."""

    def __init__(
        self,
        message: str,
        *,
        request: httpx.Request | None = None,
        attempts: Sequence[Attempt] = (),
    ) -> None:
        super().__init__(message, request=request)
        self.attempts: list[Attempt] = list(attempts)


class NoEndpointsError(TransportError, httpx.ConnectError):
    """The service has no ready instance; the call fails at once instead of hanging."""

    reason = "no-endpoints"
    status = 503


class EndpointsUnreachableError(TransportError, httpx.ConnectError):
    """Every known instance of the service refused or reset the connection."""

    reason = "endpoints-unreachable"
    status = 503


class BreakerOpenError(TransportError, httpx.ConnectError):
    """Every instance of the service is ejected after repeated failures; the call fails
    at once instead of adding load to a failing service."""

    reason = "breaker-open"
    status = 503


class OverloadedError(TransportError, httpx.PoolTimeout):
    """This process already has the most concurrent calls to the service it may have."""

    reason = "overloaded"
    status = 503


class BudgetExhaustedError(TransportError, httpx.NetworkError):
    """An attempt failed and a retry would have helped, but the retry budget is spent."""

    reason = "budget-exhausted"
    status = 503


class UpstreamError(TransportError, httpx.ReadError):
    """The instance broke off its answer, and the request was not safe to repeat."""

    reason = "upstream-error"


class CallTimeoutError(TransportError, httpx.TimeoutException):
    """The call's own timeout (the service's or route's ``timeout``) passed."""

    reason = "timeout"
    status = 504


class DeadlineExceededError(CallTimeoutError):
    """The deadline this call inherited (from the request being handled) passed."""

    reason = "deadline-exceeded"
