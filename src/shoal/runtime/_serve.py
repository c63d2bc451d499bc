"""`shoal serve`: run one instance of an ASGI app inside the mesh runtime.

Order of life: import the app, bind the port (clear errors for both before
anything else starts), connect to the backbone, start discovery and the live
traffic policies (both published to the process, see ``_context``), serve with
uvicorn (uvloop, httptools); once the app's startup has completed, register
as ready and heartbeat. On SIGTERM or SIGINT: deregister first, give watchers a
moment to drop this instance, then let uvicorn finish in-flight requests within
the drain timeout, and exit 0. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import uvicorn

from shoal.backbone._connection import Backbone
from shoal.backbone._policies import NatsPolicies
from shoal.backbone._registry import NatsRegistry
from shoal.exceptions import PortInUseError, ServeError
from shoal.registry._discovery import Discovery
from shoal.registry._records import InstanceRecord
from shoal.runtime._context import set_current_discovery, set_current_policies
from shoal.runtime._inbound import Inbound, InstanceStatus
from shoal.runtime._loader import import_app
from shoal.runtime._registration import Registration
from shoal.runtime._settings import RuntimeSettings
from shoal.types import ASGIApp

__all__ = ["bind_socket", "run_instance"]

log = logging.getLogger("shoal.runtime")

DEREGISTER_GRACE = 0.25
"""Seconds between deregistering and closing the listener, so watchers stop routing here."""


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only then.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"cannot listen on {host}:{port}: the port is in use; "
                "stop the process holding it, or choose another with --port (0 picks a free one)"
            ) from exc
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def run_instance(target: str, settings: RuntimeSettings, *, log_level: str = "info") -> int:
    """Serve ``target`` until signalled; returns the exit code.

    The resolved identity is exported to the environment first, so the app (and
    anything it spawns) can read ``SHOAL_SERVICE``, ``SHOAL_INSTANCE``, etc.
    """
    os.environ.update(settings.identity_env())
    app = import_app(target, settings.app_dir)
    sock = bind_socket(settings.host, settings.port)
    try:
        return _run(_serve(app, sock, settings, log_level))
    finally:
        sock.close()


def _run(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


class _Server(uvicorn.Server):
    """uvicorn, with shoal's signal handling and a hook once the app has started."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # shoal installs its own handlers: deregistration comes first

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            await self._on_started()


async def _serve(
    app: ASGIApp, sock: socket.socket, settings: RuntimeSettings, log_level: str
) -> int:
    host, port = sock.getsockname()[:2]
    record = InstanceRecord(
        app=settings.app,
        service=settings.service,
        instance=settings.instance,
        version=settings.version,
        host=settings.advertise_host or host,
        port=port,
        started_at=time.time(),
        pid=os.getpid(),
        ttl=settings.registry_ttl,
    )
    status = InstanceStatus(record)
    backbone = await Backbone.connect(settings.nats_url, name=f"{settings.app}/{settings.instance}")
    discovery = Discovery(NatsRegistry(backbone, settings.app))
    policies = NatsPolicies(backbone, settings.app)
    registration = Registration(
        NatsRegistry(backbone, settings.app), status, settings.heartbeat_interval
    )
    unsubscribe = backbone.on_back(registration.refresh_now)
    try:
        await asyncio.gather(discovery.start(), policies.start())
        set_current_discovery(discovery)
        set_current_policies(policies)
        config = uvicorn.Config(
            Inbound(app, status),
            loop="none",
            http="httptools",
            ws="none",
            lifespan="auto",
            log_level=log_level,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=math.ceil(settings.drain_timeout),
            timeout_keep_alive=30,
        )

        async def started() -> None:
            await registration.register()
            log.info(
                "serving %s/%s (app %s) on http://%s:%d",
                settings.service,
                settings.instance,
                settings.app,
                host,
                port,
            )

        server = _Server(config, started)
        _install_signal_handlers(server, registration)
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:  # uvicorn exits this way when the app's startup fails
            raise ServeError(
                f"{settings.service}/{settings.instance}: the app's startup (lifespan) failed; "
                "see the log above"
            ) from exc
        if status.state != "draining":
            await registration.deregister()
        return 0
    finally:
        unsubscribe()
        set_current_discovery(None)
        set_current_policies(None)
        await policies.aclose()
        await discovery.aclose()
        await backbone.aclose()


def _install_signal_handlers(server: _Server, registration: Registration) -> None:
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[Any]] = []

    async def drain() -> None:
        try:
            async with asyncio.timeout(5.0):  # a lost backbone must not hold the exit
                await registration.deregister()
                await asyncio.sleep(DEREGISTER_GRACE)
        except TimeoutError:
            log.warning("deregistration did not finish; stopping anyway")
        finally:
            server.should_exit = True

    def on_signal(signum: int) -> None:
        if tasks or server.should_exit:
            log.warning("second %s: stopping now", signal.Signals(signum).name)
            server.force_exit = True
            server.should_exit = True
            return
        log.info("%s: draining", signal.Signals(signum).name)
        if not server.started:
            server.should_exit = True
            return
        tasks.append(asyncio.create_task(drain(), name="shoal-drain"))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
