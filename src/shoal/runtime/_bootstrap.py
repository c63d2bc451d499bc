"""Secrets an instance gets from the supervisor that spawned it, through an inherited pipe.

The supervisor writes one JSON object into a pipe and passes its read end as
``SHOAL_BOOTSTRAP_FD``: the bootstrap token for the first certificate, the
NATS URL with the instance's credentials and its service's secret key (see
``shoal.config._crypto``). None is in the argv or the environment, so none
shows in `ps`, ``/proc/PID/environ`` or the app's ``os.environ``.
"""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping

from shoal.exceptions import ServeError

__all__ = ["BOOTSTRAP_FD_ENV", "encode_bootstrap", "read_bootstrap"]

BOOTSTRAP_FD_ENV = "SHOAL_BOOTSTRAP_FD"


def encode_bootstrap(*, token: str = "", nats_url: str = "", secret_key: str = "") -> bytes:
    return json.dumps({"token": token, "nats_url": nats_url, "secret_key": secret_key}).encode()


def read_bootstrap(env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The secrets passed by the supervisor (``{}`` if none); the variable is removed."""
    env = os.environ if env is None else env
    text = env.pop(BOOTSTRAP_FD_ENV, "")
    if not text:
        return {}
    try:
        fd = int(text)
    except ValueError:
        raise ServeError(f"{BOOTSTRAP_FD_ENV} must be a file descriptor, got {text!r}") from None
    chunks: list[bytes] = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError as exc:
        raise ServeError(
            f"cannot read the supervisor's secrets from descriptor {fd}: {exc.strerror}"
        ) from exc
    finally:
        os.close(fd)
    try:
        data = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise ServeError(f"unreadable secrets from the supervisor: {exc}") from exc
    if not isinstance(data, dict):
        raise ServeError("unreadable secrets from the supervisor: not a JSON object")
    return {str(k): str(v) for k, v in data.items() if v}
