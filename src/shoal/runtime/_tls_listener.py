"""The mTLS listener of an instance: our own accept loop, uvicorn's HTTP protocol behind it.

uvicorn would wrap every accepted socket with one fixed ``SSLContext`` and drop
handshake failures silently (asyncio and uvloop log them only in debug mode).
shoal needs more, so it accepts connections itself (:class:`MtlsListener`) and,
per connection:

1. runs the TLS handshake (``loop.connect_accepted_socket``) with the identity's
   *current* server context, so a renewed certificate or a rotated trust bundle
   applies to the next connection with no restart;
2. on failure, logs who was refused and why (``expired``, ``untrusted-chain``,
   ``plaintext``, ...) and closes the socket; nothing reaches the app;
3. checks the client's SVID (exactly one URI SAN, in this trust domain) before
   uvicorn's httptools protocol sees the connection, and puts the proven caller
   into every request's scope under ``shoal.peer``.

(Wrapping a plain connection with ``loop.start_tls`` from a protocol's
``connection_made`` does not work under uvloop: it starts reading right after
``connection_made`` returns, and a ClientHello read then is lost.)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shoal._throttle import Throttle
from shoal.exceptions import SvidRejectedError
from shoal.mesh._metrics import count_refusal
from shoal.mesh._peer import PEER_KEY, Peer
from shoal.mesh._tls import (
    HUNG_UP,
    describe_handshake_error,
    handshake_reason,
    peer_of_connection,
)
from shoal.runtime._identity import WorkloadIdentity

__all__ = ["HANDSHAKE_TIMEOUT", "MtlsListener", "Refusals"]

log = logging.getLogger("shoal.mesh.tls")

HANDSHAKE_TIMEOUT = 10.0
_LOG_EVERY = 1.0
"""At most one refusal line per reason per second: a flood of bad clients cannot flood the log."""


class Refusals:
    """Counts refused connections by reason, and logs them (rate-limited)."""

    def __init__(self, service: str = "") -> None:
        self._throttle = Throttle(_LOG_EVERY)
        self._service = service
        self.counts: dict[str, int] = {}

    def note(self, reason: str, client: str, detail: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        count_refusal(self._service, reason)
        if reason == HUNG_UP:  # the client gave up (or refused *our* certificate): not a refusal
            log.debug("%s hung up during the TLS handshake (%s)", client, detail)
            return
        held = self._throttle.admit(reason)
        if held is None:
            return
        extra = f" ({held} more like it not logged)" if held else ""
        log.warning("refused a connection from %s: %s (%s)%s", client, reason, detail, extra)


class _PeerHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol, for a TLS connection whose client SVID it checks first."""

    def __init__(self, *args: Any, trust_domain: str, refusals: Refusals, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trust_domain = trust_domain
        self._refusals = refusals
        self._shoal_peer: Peer | None = None

    def connection_made(self, transport: Any) -> None:
        try:
            peer = peer_of_connection(transport.get_extra_info("ssl_object"), self._trust_domain)
        except SvidRejectedError as exc:
            name = transport.get_extra_info("peername")
            client = f"{name[0]}:{name[1]}" if name else "an unknown peer"
            self._refusals.note(exc.reason, client, str(exc))
            transport.abort()
            return
        self._shoal_peer = peer
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._shoal_peer is not None:  # else uvicorn never knew the connection
            super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[PEER_KEY] = self._shoal_peer  # type: ignore[literal-required]


class MtlsListener:
    """Accepts on ``sock``, handshakes with ``identity``, serves HTTP with uvicorn's protocol.

    Quacks like the ``asyncio.Server`` uvicorn keeps in ``Server.servers``: it
    calls ``close()`` and ``wait_closed()`` on it when shutting down.
    """

    def __init__(
        self,
        sock: socket.socket,
        identity: WorkloadIdentity,
        http: Callable[[], tuple[Any, Any, dict[str, Any]]],
    ) -> None:
        self._sock = sock
        self._identity = identity
        self._http = http  # () -> (config, server_state, app_state)
        self.refusals = Refusals(identity.service)
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._accept(), name="shoal-mtls-accept")

    def close(self) -> None:
        for task in (self._task, *self._pending):
            if task is not None:
                task.cancel()

    async def wait_closed(self) -> None:
        tasks = [t for t in (self._task, *self._pending) if t is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("cannot accept connections: %s; retrying in 0.5 s", exc.strerror)
                    await asyncio.sleep(0.5)
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(self._handshake(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _handshake(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            name = conn.getpeername()
            client = f"{name[0]}:{name[1]}"
        except OSError:
            client = "an unknown peer"
        config, server_state, app_state = self._http()

        def protocol() -> _PeerHttp:
            return _PeerHttp(
                config,
                server_state,
                app_state,
                loop,
                trust_domain=self._identity.trust_domain,
                refusals=self.refusals,
            )

        try:
            await loop.connect_accepted_socket(
                protocol,
                conn,
                ssl=self._identity.server_context(),
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            )
        except (OSError, TimeoutError, EOFError) as exc:
            self.refusals.note(handshake_reason(exc), client, describe_handshake_error(exc))
            with contextlib.suppress(OSError):
                conn.close()
