"""The one exception tree of shoal.

Every error shoal raises on purpose derives from :class:`ShoalError`, so a user
can catch them all in one place. Errors of dependencies (nats-py, httpx, OS
errors) are translated at the edge with ``raise ... from exc``.

    ShoalError
    ├── ManifestError           shoal.yaml is missing or invalid (lists every problem)
    ├── BackboneError           the NATS backbone cannot start, died, or is unreachable
    ├── RegistryError           the service registry refused an operation
    ├── ServeError              an instance cannot be served
    │   ├── AppImportError      MODULE:APP does not name an importable ASGI app
    │   └── PortInUseError      the port to listen on is taken
    └── TransportError          a mesh call failed (also an ``httpx.TransportError``)
        ├── NoEndpointsError    no ready instance of the service (``no-endpoints``)
        └── EndpointsUnreachableError
                                every instance refused or reset the connection

Mesh transport errors also derive from the matching httpx exception, so code
written against plain httpx (``except httpx.ConnectError``) keeps working.
Each carries ``reason``, the machine-readable ``shoal-reason`` value.
"""

from __future__ import annotations

import httpx

__all__ = [
    "AppImportError",
    "BackboneError",
    "EndpointsUnreachableError",
    "ManifestError",
    "ManifestProblem",
    "NoEndpointsError",
    "PortInUseError",
    "RegistryError",
    "ServeError",
    "ShoalError",
    "TransportError",
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


class ServeError(ShoalError):
    """An instance could not be served."""


class AppImportError(ServeError):
    """``MODULE:APP`` does not name an importable ASGI application."""


class PortInUseError(ServeError):
    """The address to listen on is already taken."""


class TransportError(ShoalError, httpx.TransportError):
    """A mesh call failed before a response arrived."""

    reason = "transport-error"


class NoEndpointsError(TransportError, httpx.ConnectError):
    """The service has no ready instance; the call fails at once instead of hanging."""

    reason = "no-endpoints"


class EndpointsUnreachableError(TransportError, httpx.ConnectError):
    """Every known instance of the service refused or reset the connection."""

    reason = "endpoints-unreachable"
