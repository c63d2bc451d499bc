"""The supervisor: runs every replica of every service of one app, and nothing in the request path.

Start: the embedded NATS (or ``SHOAL_NATS_URL``), a registry watch, the
manifest's traffic policies published, then every instance in parallel, the
gateway last; then the manifest file is watched and its policies applied live.
Readiness comes from the registry (an ASGI instance registers itself once its
app has started; command instances are probed and registered by the supervisor).
Stop: gateway first, then services (each drains itself on SIGTERM), then NATS.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shoal.backbone._connection import Backbone, without_credentials
from shoal.backbone._policies import NatsPolicies
from shoal.backbone._registry import NatsRegistry
from shoal.backbone._server import EmbeddedNats
from shoal.config._admin import ConfigAdmin
from shoal.control._ca import DEFAULT_SVID_LIFETIME, CertificateAuthority, describe_certificate
from shoal.control._devcert import dev_certificate
from shoal.control._issuer import Issuer
from shoal.events import ensure_streams
from shoal.exceptions import ShoalError
from shoal.manifest import Manifest, ServiceSpec
from shoal.registry._discovery import Discovery
from shoal.registry._records import InstanceRecord
from shoal.runtime._bootstrap import encode_bootstrap
from shoal.runtime._logging import LEVEL_ENV
from shoal.runtime._serve import bind_socket
from shoal.runtime._telemetry import SAMPLE_ENV
from shoal.sidecar import PORT_ENV as SIDECAR_PORT_ENV
from shoal.state._current import BACKEND_ENV as STATE_BACKEND_ENV
from shoal.state._current import URL_ENV as STATE_URL_ENV
from shoal.supervisor._instance import (
    InstancePlan,
    SupervisedInstance,
    asgi_argv,
    base_env,
    free_port,
)
from shoal.supervisor._logs import ConsoleWriter, LogSink
from shoal.supervisor._metrics import MetricsAggregator
from shoal.supervisor._metrics_history import MetricHistory
from shoal.supervisor._reloader import ApplyResult, ManifestReloader
from shoal.supervisor._telemetry import TelemetryCollector

__all__ = ["GATEWAY", "SHOAL_LOG", "Supervisor", "check_gateway_port", "gateway_port"]

GATEWAY = "gateway"
SHOAL_LOG = "shoal"
"""The supervisor's own lines: ``.shoal/logs/shoal.log``, shown as instance ``shoal``."""


def gateway_port(manifest: Manifest) -> int | None:
    """The gateway's port: ``SHOAL_GATEWAY_PORT`` if set, else the manifest's."""
    if manifest.gateway is None:
        return None
    override = os.environ.get("SHOAL_GATEWAY_PORT", "")
    if override:
        if not override.isdigit() or not 0 < int(override) < 65536:
            raise ShoalError(f"SHOAL_GATEWAY_PORT must be a port number, got {override!r}")
        return int(override)
    return manifest.gateway.port


def _svid_lifetime() -> float:
    """``SHOAL_SVID_LIFETIME`` seconds (tests and drills use short ones), else 24 hours."""
    text = os.environ.get("SHOAL_SVID_LIFETIME", "")
    if not text:
        return DEFAULT_SVID_LIFETIME
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value < 10:
        raise ShoalError(
            f"SHOAL_SVID_LIFETIME must be a number of seconds, 10 or more, not {text!r}"
        )
    return value


def gateway_tls_env(manifest: Manifest) -> dict[str, str]:
    """``SHOAL_TLS_CERT``/``SHOAL_TLS_KEY`` for the gateway's outward TLS, if it has any.

    Raises ShoalError, naming the manifest, when a given file cannot be read.
    """
    tls = manifest.gateway.tls if manifest.gateway is not None else None
    if tls is None:
        return {}
    if tls.dev or tls.cert is None or tls.key is None:
        cert, key = dev_certificate(manifest.directory, manifest.app)
    else:
        cert, key = manifest.directory / tls.cert, manifest.directory / tls.key
        for what, path in (("cert", cert), ("key", key)):
            if not path.is_file() or not os.access(path, os.R_OK):
                raise ShoalError(
                    f"{manifest.path}: gateway.tls.{what}: cannot read {path}; give the path of "
                    "a PEM file (relative to the app directory), or use `tls: dev` for a "
                    "development certificate"
                )
    return {"SHOAL_TLS_CERT": str(cert), "SHOAL_TLS_KEY": str(key)}


def state_env(manifest: Manifest, service: str) -> dict[str, str]:
    """Where ``shoal.state()`` of mesh service ``service`` stores: its own entry's ``state:``
    (version entries share their service's state, so they share its backend too)."""
    spec = manifest.services.get(service)
    if spec is None:
        return {}
    return {STATE_BACKEND_ENV: spec.state.backend, STATE_URL_ENV: spec.state.url or ""}


def check_gateway_port(manifest: Manifest) -> None:
    """Fail early, with the manifest's words, when the gateway's port is taken."""
    port = gateway_port(manifest)
    if port is None:
        return
    try:
        bind_socket("127.0.0.1", port).close()
    except ShoalError as exc:
        raise ShoalError(
            f"{manifest.path}: gateway.port {port} is in use; stop the process holding "
            "it, or choose another gateway.port in shoal.yaml (or set SHOAL_GATEWAY_PORT)"
        ) from exc


class Supervisor:
    def __init__(
        self,
        manifest: Manifest,
        *,
        console: ConsoleWriter | None = None,
        manifest_poll: float = 1.0,
    ) -> None:
        self.manifest = manifest
        self.app = manifest.app
        self.directory = manifest.directory
        self.state_dir = self.directory / ".shoal"
        self.logs = LogSink(self.state_dir / "logs", console)
        self.instances: dict[str, list[SupervisedInstance]] = {}
        self._counters: dict[str, itertools.count[int]] = {}
        self._nats: EmbeddedNats | None = None
        self._backbone: Backbone | None = None
        self.discovery: Discovery | None = None
        self._registry: NatsRegistry | None = None
        self.nats_url = ""
        self.changed = asyncio.Event()
        self._locks: dict[str, asyncio.Lock] = {}
        self._policies: NatsPolicies | None = None
        self._reloader: ManifestReloader | None = None
        self._reload_task: asyncio.Task[None] | None = None
        self._manifest_poll = manifest_poll
        self.tls = os.environ.get("SHOAL_TLS", "on").strip().lower() not in ("off", "0", "false")
        """Instances serve mTLS with SVIDs from the app's CA (``SHOAL_TLS=off``: plaintext)."""
        self.issuer: Issuer | None = None
        self.telemetry: TelemetryCollector | None = None
        self.metrics: MetricsAggregator | None = None
        self._history_task: asyncio.Task[None] | None = None
        self.config_admin: ConfigAdmin | None = None
        """`shoal config` and `shoal secret`: the config buckets and the app key."""

    @property
    def backbone(self) -> Backbone:
        """The supervisor's (admin) NATS connection; exists once :meth:`start` has run."""
        if self._backbone is None:
            raise ShoalError("the supervisor has not started: no NATS connection yet")
        return self._backbone

    # -- start ---------------------------------------------------------------------

    async def start(self) -> None:
        check_gateway_port(self.manifest)
        gateway_tls_env(self.manifest)  # unreadable files stop the start, with the manifest's words
        url = os.environ.get("SHOAL_NATS_URL")
        if not url:
            self._nats = EmbeddedNats(self.directory)
            await self._nats.add_services(self.app, self._mesh_services())
            await self._nats.start()
            url = self._nats.url
        self.nats_url = url
        self._backbone = await Backbone.connect(url, name=f"{self.app}/supervisor")
        await ensure_streams(self._backbone, self.app)  # before any instance publishes
        self._registry = NatsRegistry(self._backbone, self.app)
        self.discovery = Discovery(NatsRegistry(self._backbone, self.app))
        await self.discovery.start()
        self.telemetry = TelemetryCollector(self._backbone, self.app, self.state_dir)
        await self.telemetry.start()
        self.metrics = MetricsAggregator(self._backbone, self.app)
        await self.metrics.start()
        history = MetricHistory(self.metrics, self.telemetry.store, self.instance_counts)
        self._history_task = asyncio.create_task(history.run(), name="shoal-metric-history")
        self._policies = NatsPolicies(self._backbone, self.app)
        await self._policies.publish(self.manifest.policies())
        self.config_admin = ConfigAdmin(self._backbone, self.manifest, self.state_dir, self.say)
        await self.config_admin.publish(self.manifest)
        if self.tls:
            ca = await asyncio.to_thread(
                CertificateAuthority.load_or_create, self.directory, self.app
            )
            self.issuer = Issuer(
                self._backbone, ca, self.directory, lifetime=_svid_lifetime(), say=self.say
            )
            await self.issuer.start()
        for name, spec in self.manifest.services.items():
            self.instances[name] = []
            for _ in range(spec.replicas):
                self._spawn(name, spec)
        if self.manifest.gateway is not None:
            self.instances[GATEWAY] = []
            self._spawn(GATEWAY, None)
        self._reloader = ManifestReloader(
            self.manifest,
            self._policies,
            self.say,
            on_applied=self._adopt,
            interval=self._manifest_poll,
            config=self.config_admin,
        )
        self._reload_task = asyncio.create_task(self._reloader.run(), name="shoal-manifest-watch")

    def _plan(self, service: str, spec: ServiceSpec | None) -> InstancePlan:
        """How to run the next instance of entry ``service`` (named ``<entry>-<n>``).

        It registers as the entry's mesh service: a version entry's instances
        (``catalog-v2: {service: catalog}``) join ``catalog``'s.
        """
        counter = self._counters.setdefault(service, itertools.count(1))
        instance = f"{service}-{next(counter)}"
        mesh = service if spec is None else self.manifest.service_of(service)
        env = base_env()
        env.update(
            {
                "SHOAL_APP": self.app,
                "SHOAL_SERVICE": mesh,
                "SHOAL_INSTANCE": instance,
                # The credentials go through the bootstrap pipe (see _bootstrap), not here.
                "SHOAL_NATS_URL": without_credentials(self.nats_url),
                "SHOAL_APP_DIR": str(self.directory),
                "SHOAL_TLS": "on" if self.tls else "off",
            }
        )
        for name in (SAMPLE_ENV, LEVEL_ENV):
            if os.environ.get(name):
                env[name] = os.environ[name]
        if spec is None:  # the gateway
            env["SHOAL_PORT"] = str(gateway_port(self.manifest))
            env["SHOAL_VERSION"] = "v1"
            env.update(gateway_tls_env(self.manifest))
            argv = asgi_argv("shoal.gateway:app")
            return InstancePlan(self.app, service, instance, "v1", argv, env, self.directory)
        env["SHOAL_VERSION"] = spec.version
        env.update(state_env(self.manifest, mesh))
        env.update(spec.env)
        if spec.asgi is not None:
            env["SHOAL_PORT"] = "0"
            argv = asgi_argv(spec.asgi)
            return InstancePlan(
                self.app, mesh, instance, spec.version, argv, env, self.directory, entry=service
            )
        assert spec.command is not None
        port = spec.port or free_port()
        env["PORT"] = str(port)
        # argv gets no shell: expand $PORT / ${PORT} ourselves, as Procfile runners do
        argv = tuple(
            a.replace("${PORT}", str(port)).replace("$PORT", str(port)) for a in spec.command
        )
        sidecar = None
        if self.tls:  # the program serves plaintext on loopback; its sidecar is the instance
            sidecar_env = {**env, "SHOAL_PORT": "0", SIDECAR_PORT_ENV: str(port)}
            sidecar = (asgi_argv("shoal.sidecar:app"), sidecar_env)
        return InstancePlan(
            self.app,
            mesh,
            instance,
            spec.version,
            argv,
            env,
            self.directory,
            port,
            entry=service,
            sidecar=sidecar,
        )

    def _spawn(self, service: str, spec: ServiceSpec | None) -> SupervisedInstance:
        assert self._registry is not None
        plan = self._plan(service, spec)
        inst = SupervisedInstance(
            plan,
            self.logs,
            self._registry,
            on_change=self._notify,
            on_output=self._output,
            bootstrap=self._secrets_for(plan.service)
            if plan.port is None or plan.sidecar is not None
            else None,
        )
        self.instances[service].append(inst)
        inst.start()
        return inst

    def _secrets_for(self, service: str) -> Callable[[], bytes]:
        """What each spawn of an ASGI instance of ``service`` gets through its pipe."""

        def secrets() -> bytes:
            token = self.issuer.mint(service) if self.issuer is not None else ""
            nats = self._nats
            url = nats.service_url(service) if nats and nats.has_service(service) else self.nats_url
            admin = self.config_admin
            key = admin.service_key(service) if admin is not None else ""
            return encode_bootstrap(token=token, nats_url=url, secret_key=key)

        return secrets

    def _mesh_services(self) -> list[str]:
        names = {self.manifest.service_of(name) for name in self.manifest.services}
        if self.manifest.gateway is not None:
            names.add(GATEWAY)
        return sorted(names)

    async def _ensure_nats_user(self, entry: str) -> None:
        """A service that came with a changed manifest gets its NATS user before it spawns."""
        if self._nats is not None and entry in self.manifest.services:
            service = self.manifest.service_of(entry)
            if not self._nats.has_service(service):
                await self._nats.add_services(self.app, [service])

    def records(self) -> list[InstanceRecord]:
        """Every instance in the registry, as last seen."""
        if self.discovery is None:
            return []
        cache = self.discovery.cache
        return [r for s in cache.services() for r in cache.instances(s)]

    async def rotate_ca(self) -> dict[str, Any]:
        """Roll the app's root CA under load (see ``Issuer.rotate``)."""
        if self.issuer is None:
            raise ShoalError(f"app {self.app!r} runs without mTLS (SHOAL_TLS=off): no CA to rotate")
        return await self.issuer.rotate(self.records)

    def ca_status(self) -> dict[str, Any]:
        if self.issuer is None:
            return {"tls": False}
        ca = self.issuer.ca
        return {
            "tls": True,
            "trust_domain": ca.trust_domain,
            "certificates": [
                describe_certificate(c) for c in (*self.issuer.roots, ca.intermediate)
            ],
            "bundle": self.issuer.generation,
            "issued": self.issuer.issued,
            "refused": dict(self.issuer.refused),
        }

    def _notify(self) -> None:
        self.changed.set()

    def _output(self, service: str, instance: str, line: str) -> str:
        """A line an instance wrote: to the telemetry store as a log record; returns it as shown."""
        if self.telemetry is None:
            return line
        return self.telemetry.log(service, instance, "combined", line)

    def say(self, text: str) -> None:
        """One line of the supervisor's own log (and the console of `shoal up`)."""
        self.logs.line(SHOAL_LOG, SHOAL_LOG, text)

    # -- live changes --------------------------------------------------------------

    async def apply(self) -> ApplyResult:
        """Re-read the manifest and publish its traffic policy; ``ManifestError`` if invalid.

        Other changes are not applied: the result says which `shoal scale` or
        `shoal restart` applies them (both then use the new manifest).
        """
        if self._reloader is None:
            raise ShoalError(f"app {self.app!r} is still starting; try again in a moment")
        return await self._reloader.apply()

    def _adopt(self, manifest: Manifest) -> None:
        self.manifest = manifest

    # -- readiness -----------------------------------------------------------------

    def is_ready(self, inst: SupervisedInstance) -> bool:
        if inst.state in ("stopping", "stopped"):
            return False
        if inst.plan.port is not None and inst.plan.sidecar is None:
            return inst.ready_by_probe
        assert self.discovery is not None
        return any(r.instance == inst.name for r in self.discovery.ready(inst.plan.service))

    def not_ready(self) -> list[SupervisedInstance]:
        return [i for insts in self.instances.values() for i in insts if not self.is_ready(i)]

    async def wait_ready(self, timeout: float) -> list[SupervisedInstance]:
        """Wait until every instance is ready; returns those that are not after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (pending := self.not_ready()) and time.monotonic() < deadline:
            if any(i.state == "crash-loop" for i in pending):
                return pending
            await asyncio.sleep(0.05)
        return self.not_ready()

    # -- scale, restart -----------------------------------------------------------

    async def scale(self, service: str, replicas: int) -> None:
        spec = self._spec(service)
        if not 0 <= replicas <= 64:
            raise ShoalError(f"replicas must be between 0 and 64, got {replicas}")
        await self._ensure_nats_user(service)
        async with self._lock(service):
            current = self.instances.setdefault(service, [])  # new in the manifest: none yet
            while len(current) < replicas:
                self._spawn(service, spec)
            if len(current) > replicas:
                victims = current[replicas:]
                del current[replicas:]
                await asyncio.gather(*(v.stop() for v in victims))

    async def restart(self, service: str, *, ready_timeout: float = 60.0) -> None:
        """Rolling: start a new instance, wait until it is ready, then drain an old one."""
        spec = self._spec(service)
        await self._ensure_nats_user(service)
        async with self._lock(service):
            for old in list(self.instances[service]):
                new = self._spawn(service, spec)
                deadline = time.monotonic() + ready_timeout
                while not self.is_ready(new):
                    if time.monotonic() > deadline or new.state == "crash-loop":
                        self.instances[service].remove(new)
                        await new.stop(force=True)
                        raise ShoalError(
                            f"rolling restart of {service!r} stopped: {new.name} did not become "
                            f"ready; last lines:\n" + "\n".join(self.logs.tail(new.name)[-8:])
                        )
                    await asyncio.sleep(0.05)
                self.instances[service].remove(old)
                await old.stop()

    def _spec(self, service: str) -> ServiceSpec | None:
        if service == GATEWAY and GATEWAY in self.instances:
            return None
        spec = self.manifest.services.get(service)
        if spec is None:
            known = ", ".join(sorted(self.manifest.services))
            raise ShoalError(f"no service {service!r} in app {self.app!r} (services: {known})")
        return spec

    def _lock(self, service: str) -> asyncio.Lock:
        return self._locks.setdefault(service, asyncio.Lock())

    # -- stop ----------------------------------------------------------------------

    async def stop(self, *, force: bool = False) -> None:
        """Gateway first, then every service in parallel, then the backbone."""
        if self._reload_task is not None:
            self._reload_task.cancel()
            await asyncio.wait({self._reload_task}, timeout=5.0)
        gateway = self.instances.get(GATEWAY, [])
        await asyncio.gather(*(i.stop(force=force) for i in gateway))
        rest = [i for name, insts in self.instances.items() if name != GATEWAY for i in insts]
        await asyncio.gather(*(i.stop(force=force) for i in rest))
        if self.issuer is not None:
            await self.issuer.aclose()
        if self._history_task is not None:
            self._history_task.cancel()
            await asyncio.wait({self._history_task}, timeout=5.0)
        if self.metrics is not None:
            await self.metrics.aclose()
        if self.telemetry is not None:
            await self.telemetry.aclose()
        if self.discovery is not None:
            await self.discovery.aclose()
        if self._backbone is not None:
            await self._backbone.aclose()
        if self._nats is not None:
            await self._nats.stop()
        self.logs.close()

    # -- reporting -----------------------------------------------------------------

    def instance_counts(self) -> dict[str, int]:
        """Running instances per mesh service."""
        counts: dict[str, int] = {}
        for insts in self.instances.values():
            for inst in insts:
                if inst.pid:
                    counts[inst.plan.service] = counts.get(inst.plan.service, 0) + 1
        return counts

    def ps(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        now = time.time()
        for service, insts in self.instances.items():
            for inst in insts:
                record = self._record(inst)
                ready = self.is_ready(inst)
                state = inst.state
                if state == "running":
                    state = "ready" if ready else "starting"
                rows.append(
                    {
                        "service": service,
                        "instance": inst.name,
                        "version": inst.plan.version,
                        "state": state,
                        "health": "ready" if ready else "not ready",
                        "address": record.address if record else None,
                        "pid": inst.pid,
                        "restarts": inst.restarts,
                        "uptime": round(now - inst.started_at, 1)
                        if inst.started_at and inst.pid
                        else 0.0,
                        "last_lines": self.logs.tail(inst.name)[-8:]
                        if state in ("crash-loop", "backoff")
                        else [],
                    }
                )
        return rows

    def _record(self, inst: SupervisedInstance) -> Any:
        if self.discovery is None:
            return None
        for record in self.discovery.instances(inst.plan.service):
            if record.instance == inst.name:
                return record
        return None

    @property
    def nats_display_url(self) -> str:
        return self._nats.display_url if self._nats else "external"

    def state_path(self, name: str) -> Path:
        return self.state_dir / name
