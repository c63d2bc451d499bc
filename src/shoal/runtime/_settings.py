"""How an instance is configured: environment variables, overridable by flags.

The supervisor, a developer at a shell and a Kubernetes container all start an
instance the same way, so every setting has a ``SHOAL_*`` variable.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from shoal.backbone._server import read_connection_file
from shoal.exceptions import BackboneError, ServeError

__all__ = ["RuntimeSettings"]

_N = TypeVar("_N", int, float)
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _dns_label(text: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return label or "service"


@dataclasses.dataclass(frozen=True, slots=True)
class RuntimeSettings:
    app: str
    service: str
    instance: str
    version: str
    host: str
    port: int
    nats_url: str
    app_dir: Path
    drain_timeout: float = 10.0
    registry_ttl: float = 2.5
    advertise_host: str | None = None
    tls_cert: str = ""
    tls_key: str = ""
    """PEM files to serve TLS outward with (the gateway's public port), if any."""
    tls: bool = True
    """Serve mutual TLS with an SVID from the app's CA (``SHOAL_TLS=off``: plaintext, for
    development against a bare NATS with no supervisor)."""

    def identity_env(self) -> dict[str, str]:
        """Who this instance is, as environment variables."""
        return {
            "SHOAL_APP": self.app,
            "SHOAL_SERVICE": self.service,
            "SHOAL_INSTANCE": self.instance,
            "SHOAL_VERSION": self.version,
            "SHOAL_APP_DIR": str(self.app_dir),
        }

    @property
    def heartbeat_interval(self) -> float:
        return self.registry_ttl / 3

    @classmethod
    def from_env(
        cls,
        target: str = "",
        env: Mapping[str, str] | None = None,
        **overrides: object,
    ) -> RuntimeSettings:
        """Settings from ``env`` (default ``os.environ``); non-None ``overrides`` win."""
        env = os.environ if env is None else env
        given = {k: v for k, v in overrides.items() if v is not None}

        def pick(name: str, var: str, default: str) -> str:
            if name in given:  # a flag wins, even a falsy one such as --port 0
                return str(given[name])
            return env.get(var) or default

        app_dir = Path(pick("app_dir", "SHOAL_APP_DIR", os.getcwd())).resolve()
        module = target.partition(":")[0]
        service = pick("service", "SHOAL_SERVICE", _dns_label(module.split(".")[0] or "service"))
        app = pick("app", "SHOAL_APP", _dns_label(app_dir.name) if app_dir.name else "default")
        for what, value in (("service", service), ("app", app)):
            if not _LABEL.match(value):
                raise ServeError(
                    f"{what} name {value!r} is not a DNS label (lowercase letters, digits and "
                    "'-', starting and ending with a letter or digit, at most 63 characters)"
                )
        return cls(
            app=app,
            service=service,
            instance=pick("instance", "SHOAL_INSTANCE", f"{service}-{secrets.token_hex(3)}"),
            version=pick("version", "SHOAL_VERSION", "v1"),
            host=pick("host", "SHOAL_HOST", "127.0.0.1"),
            port=_number(pick("port", "SHOAL_PORT", "0"), "port", int),
            nats_url=str(
                given.get("nats_url") or env.get("SHOAL_NATS_URL") or _local_nats(app_dir)
            ),
            app_dir=app_dir,
            drain_timeout=_number(
                pick("drain_timeout", "SHOAL_DRAIN_TIMEOUT", "10"), "drain timeout", float
            ),
            registry_ttl=_number(
                pick("registry_ttl", "SHOAL_REGISTRY_TTL", "2.5"), "registry TTL", float
            ),
            advertise_host=str(given.get("advertise_host") or env.get("SHOAL_ADVERTISE_HOST") or "")
            or None,
            tls=_switch(pick("tls", "SHOAL_TLS", "on"), "SHOAL_TLS"),
            tls_cert=pick("tls_cert", "SHOAL_TLS_CERT", ""),
            tls_key=pick("tls_key", "SHOAL_TLS_KEY", ""),
        )


def _number(text: str, what: str, kind: type[_N]) -> _N:
    try:
        value = kind(text)
    except ValueError:
        raise ServeError(f"{what} must be a number, got {text!r}") from None
    if value < 0:
        raise ServeError(f"{what} must not be negative, got {text!r}")
    return value


def _switch(text: str, what: str) -> bool:
    value = text.strip().lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise ServeError(f"{what} must be on or off, got {text!r}")


def _local_nats(app_dir: Path) -> str:
    info = read_connection_file(app_dir)
    if info and isinstance(info.get("url"), str):
        return str(info["url"])
    raise BackboneError(
        f"no NATS backbone for {app_dir}: none is running there (no .shoal/nats.json); "
        "start the app with `shoal up`, or set SHOAL_NATS_URL"
    )
