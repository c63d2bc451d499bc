"""One NATS connection per process, with reconnect events shoal's parts listen to."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from shoal.exceptions import BackboneError

__all__ = ["Backbone", "inbox_prefix", "redact", "without_credentials"]


def inbox_prefix(service: str) -> str:
    """Where ``service``'s replies arrive: ``_INBOX_<service>``, its alone."""
    return f"_INBOX_{service}"


log = logging.getLogger("shoal.backbone")


def without_credentials(url: str) -> str:
    """``url`` with no user or password at all (for an environment variable)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


class Backbone:
    """A NATS connection that reconnects forever and tells listeners when it drops."""

    def __init__(self, nc: NatsClient, url: str) -> None:
        self.nc = nc
        self.url = url
        self.js: JetStreamContext = nc.jetstream(timeout=2.0)
        self._connected = asyncio.Event()
        self._connected.set()
        self._on_lost: set[Callable[[], None]] = set()
        self._on_back: set[Callable[[], None]] = set()
        self._closing = False
        self.last_refusal = ""
        """The last permissions violation NATS reported to this connection, if any."""

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str = "shoal",
        timeout: float = 5.0,
        inbox_prefix: str = "_INBOX",
    ) -> Backbone:
        """Connect to ``url``, retrying for up to ``timeout`` seconds.

        Replies come to subjects under ``inbox_prefix``: a service's own NATS user may
        subscribe only under its own (see ``inbox_prefix``), so it reads no one else's.
        """
        holder: list[Backbone] = []

        async def disconnected() -> None:
            if holder:
                holder[0]._lost()

        async def reconnected() -> None:
            if holder:
                holder[0]._back()

        async def error(exc: Exception) -> None:
            text = str(exc)
            if "permissions violation" in text.lower() and holder:
                holder[0].last_refusal = text  # NATS tells it apart only here, asynchronously
                log.warning("%s", text)
            else:
                log.debug("nats: %s", exc)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                nc = await nats.connect(
                    url,
                    name=name,
                    connect_timeout=min(2.0, timeout),
                    allow_reconnect=True,
                    # nats-py retries the *first* connect forever when this is -1;
                    # connect with a bound, then reconnect forever (set below).
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0.25,
                    ping_interval=5,
                    max_outstanding_pings=2,
                    disconnected_cb=disconnected,
                    reconnected_cb=reconnected,
                    error_cb=error,
                    inbox_prefix=inbox_prefix,
                )
                break
            except (TimeoutError, OSError, nats.errors.Error) as exc:
                if loop.time() >= deadline:
                    raise BackboneError(
                        f"cannot reach NATS at {redact(url)}: {exc or type(exc).__name__}; "
                        "start the app with `shoal up`, or set SHOAL_NATS_URL to a running server"
                    ) from exc
                await asyncio.sleep(0.1)
        nc.options["max_reconnect_attempts"] = -1
        backbone = cls(nc, url)
        holder.append(backbone)
        return backbone

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def on_lost(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when the connection drops; returns an unsubscribe function."""
        self._on_lost.add(callback)
        return lambda: self._on_lost.discard(callback)

    def on_back(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._on_back.add(callback)
        return lambda: self._on_back.discard(callback)

    def _lost(self) -> None:
        if self._closing:
            return
        if self._connected.is_set():
            log.warning("lost the NATS backbone at %s; serving from cached state", redact(self.url))
        self._connected.clear()
        for cb in list(self._on_lost):
            cb()

    def _back(self) -> None:
        log.info("NATS backbone at %s is back", redact(self.url))
        self._connected.set()
        for cb in list(self._on_back):
            cb()

    async def aclose(self) -> None:
        self._closing = True
        self._on_lost.clear()
        self._on_back.clear()
        if self.nc.is_closed:
            return
        # close(), not drain(): every write shoal makes is an acknowledged request,
        # so nothing is pending, and drain() costs up to seconds at shutdown.
        try:
            await asyncio.wait_for(self.nc.close(), 2.0)
        except Exception as exc:  # closing must not fail: nats-py raises from dead transports
            log.debug("closing the NATS connection: %r", exc)

    def __repr__(self) -> str:
        return f"Backbone({redact(self.url)!r}, connected={self.connected})"
