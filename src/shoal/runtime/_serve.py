"""`shoal serve`: run one instance of an ASGI app inside the mesh runtime.

Order of life: import the app, bind the port (clear errors for both before
anything else starts), connect to the backbone, start discovery and the live
traffic policies (both published to the process, see ``_context``) and load the
live configuration, serve with uvicorn (uvloop, httptools); once the app's
startup has completed, start the building blocks (outbox relay, event
consumers, saga resumption: ``_blocks``), register as ready and heartbeat. On
SIGTERM or SIGINT: deregister first, give watchers a moment to drop this
instance, then let uvicorn finish in-flight requests within the drain timeout,
and exit 0. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import math
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from shoal.backbone._connection import Backbone, inbox_prefix
from shoal.backbone._policies import NatsPolicies
from shoal.backbone._registry import NatsRegistry
from shoal.config._runtime import instance_key
from shoal.exceptions import PortInUseError, ServeError
from shoal.registry._discovery import Discovery
from shoal.registry._records import InstanceRecord
from shoal.runtime._blocks import BuildingBlocks
from shoal.runtime._bootstrap import read_bootstrap
from shoal.runtime._context import (
    set_current_discovery,
    set_current_identity,
    set_current_policies,
)
from shoal.runtime._identity import WorkloadIdentity
from shoal.runtime._inbound import Inbound, InstanceStatus
from shoal.runtime._loader import import_app
from shoal.runtime._logging import install_logging
from shoal.runtime._metrics_ship import MetricsShipper
from shoal.runtime._registration import Registration
from shoal.runtime._settings import RuntimeSettings
from shoal.runtime._telemetry import install_tracing
from shoal.runtime._tls_listener import MtlsListener
from shoal.types import ASGIApp

__all__ = ["bind_socket", "run_instance"]

log = logging.getLogger("shoal.runtime")

GATEWAY_SERVICE = "gateway"
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
    secrets = read_bootstrap()  # first: the app must never see them
    if secrets.get("nats_url"):
        settings = dataclasses.replace(settings, nats_url=secrets["nats_url"])
    _check_outward_tls(settings)
    os.environ.update(settings.identity_env())
    app = import_app(target, settings.app_dir)
    sock = bind_socket(settings.host, settings.port)
    try:
        given = secrets.get("secret_key")
        key = instance_key(settings.app, settings.service, given, settings.app_dir)
        return _run(_serve(app, sock, settings, log_level, secrets.get("token"), key))
    finally:
        sock.close()


def _check_outward_tls(settings: RuntimeSettings) -> None:
    """A clear error now, not uvicorn's traceback later, for unusable outward TLS files."""
    if not settings.tls_cert and not settings.tls_key:
        return
    if not (settings.tls_cert and settings.tls_key):
        raise ServeError("SHOAL_TLS_CERT and SHOAL_TLS_KEY go together: set both, or neither")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            settings.tls_cert, settings.tls_key
        )
    except (OSError, ssl.SSLError) as exc:
        raise ServeError(
            f"cannot serve TLS with {settings.tls_cert} and {settings.tls_key}: "
            f"{getattr(exc, 'strerror', None) or exc} (a PEM certificate chain and its "
            "unencrypted private key)"
        ) from exc


def _run(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


class _Server(uvicorn.Server):
    """uvicorn, with shoal's signal handling, its mTLS listener, and a hook once started."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_started: Callable[[], Awaitable[None]],
        identity: WorkloadIdentity | None = None,
    ) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._identity = identity
        self.listener: MtlsListener | None = None
        self.blocks: BuildingBlocks | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # shoal installs its own handlers: deregistration comes first

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self._identity is None or not sockets:
            await super().startup(sockets=sockets)
        else:
            await self.lifespan.startup()
            if self.lifespan.should_exit:
                sys.exit(STARTUP_FAILURE)
            self.listener = MtlsListener(
                sockets[0],
                self._identity,
                lambda: (self.config, self.server_state, self.lifespan.state),
            )
            self.listener.start()
            self.servers = [self.listener]  # type: ignore[list-item]  # close, wait_closed
            self.started = True
        if self.started and not self.should_exit:
            await self._on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.blocks is not None:  # handlers finish before the app's shutdown runs
            await self.blocks.drain(self.config.timeout_graceful_shutdown or 0)
        await super().shutdown(sockets)


async def _serve(
    app: ASGIApp,
    sock: socket.socket,
    settings: RuntimeSettings,
    log_level: str,
    token: str | None = None,
    secret_key: bytes | None = None,
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
    backbone = await Backbone.connect(
        settings.nats_url,
        name=f"{settings.app}/{settings.instance}",
        inbox_prefix=inbox_prefix(settings.service),
    )
    discovery = Discovery(NatsRegistry(backbone, settings.app))
    policies = NatsPolicies(backbone, settings.app)
    registration = Registration(
        NatsRegistry(backbone, settings.app), status, settings.heartbeat_interval
    )
    unsubscribe = backbone.on_back(registration.refresh_now)
    blocks = BuildingBlocks(backbone, settings, secret_key)
    identity: WorkloadIdentity | None = None
    install_logging(settings.app, settings.service, settings.instance, default_level=log_level)
    shipper = install_tracing(backbone, settings.app, settings.service, settings.instance)
    shipper.start()
    metrics = MetricsShipper(backbone, settings.app, settings.service, settings.instance)
    metrics.start()
    try:
        if settings.tls:
            identity = await _identity(backbone, settings, token, status, registration)
        # The gateway's own port faces outside clients: plaintext (or their TLS), not mTLS.
        authenticate = identity is not None and settings.service != GATEWAY_SERVICE
        await asyncio.gather(discovery.start(), policies.start(), blocks.load())
        set_current_discovery(discovery)
        set_current_policies(policies)
        config = uvicorn.Config(
            Inbound(blocks.wrap(app), status, authenticate=authenticate),
            loop="none",
            http="httptools",
            ws="none",
            lifespan="auto",
            log_level=log_level,
            log_config=None,  # the root logger's JSON handler (install_logging)
            access_log=False,
            server_header=False,
            # X-Forwarded-* from a client is data, not the peer's address: the gateway is the
            # edge (it sets them itself) and services see the mesh caller.
            proxy_headers=False,
            ssl_certfile=settings.tls_cert or None,
            ssl_keyfile=settings.tls_key or None,
            timeout_graceful_shutdown=math.ceil(settings.drain_timeout),
            timeout_keep_alive=30,
        )

        async def started() -> None:
            await blocks.start()
            await registration.register()
            log.info(
                "serving %s/%s (app %s) on %s://%s:%d",
                settings.service,
                settings.instance,
                settings.app,
                "mtls" if authenticate else "https" if settings.tls_cert else "http",
                host,
                port,
            )

        server = _Server(config, started, identity if authenticate else None)
        server.blocks = blocks
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
        set_current_identity(None)
        await blocks.aclose()
        if identity is not None:
            await identity.aclose()
        await shipper.aclose()
        await metrics.aclose()
        await policies.aclose()
        await discovery.aclose()
        await backbone.aclose()


async def _identity(
    backbone: Backbone,
    settings: RuntimeSettings,
    token: str | None,
    status: InstanceStatus,
    registration: Registration,
) -> WorkloadIdentity:
    """Obtain this instance's SVID, keep it current, and say in the registry what it holds."""
    identity = WorkloadIdentity(backbone, settings.app, settings.service)
    await identity.obtain(token)

    def report() -> None:
        creds = identity.credentials
        status.record = status.record.model_copy(
            update={
                "tls": settings.service != GATEWAY_SERVICE,
                "trust": identity.bundle_generation,
                "issuer": creds.issuer_fingerprint,
            }
        )
        if status.state != "starting":
            registration.refresh_now()

    report()
    identity.on_change(report)
    identity.start()
    set_current_identity(identity)
    return identity


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
