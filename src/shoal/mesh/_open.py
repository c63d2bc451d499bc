"""Opening discovery for a client outside `shoal serve` (scripts, tests, a REPL)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from shoal.backbone._connection import Backbone
from shoal.backbone._policies import NatsPolicies
from shoal.backbone._registry import NatsRegistry
from shoal.backbone._server import read_connection_file
from shoal.exceptions import BackboneError, IdentityError, ShoalError
from shoal.mesh._policies import PolicySource
from shoal.registry._discovery import Discovery
from shoal.runtime._context import current_discovery, current_policies
from shoal.runtime._identity import WorkloadIdentity

__all__ = ["OPERATOR_SERVICE", "NatsOpener", "default_opener"]

OPERATOR_SERVICE = "shoal-cli"


class NatsOpener:
    """Discovery and traffic policies: the serving process's own, or a watch of their own."""

    def __init__(self, url: str | None = None, app: str | None = None) -> None:
        self._url = url
        self._app = app
        self._backbone: Backbone | None = None
        self._discovery: Discovery | None = None
        self._policies: NatsPolicies | None = None
        self._source: PolicySource | None = None
        self._identity: WorkloadIdentity | None = None

    async def open(self) -> Discovery:
        shared = current_discovery()
        shared_policies = current_policies()
        if shared is not None and shared_policies is not None and self._url is None:
            self._source = shared_policies
            return shared  # inside `shoal serve`: one watch per process
        app_dir = Path(os.environ.get("SHOAL_APP_DIR") or os.getcwd())
        url = self._url or os.environ.get("SHOAL_NATS_URL")
        if not url:
            info = read_connection_file(app_dir)
            url = str(info["url"]) if info and "url" in info else None
        if not url:
            raise BackboneError(
                "shoal.client() found no backbone: set SHOAL_NATS_URL, run inside `shoal serve`, "
                f"or run from the directory of a running app (no .shoal/nats.json in {app_dir})"
            )
        app = self._app or os.environ.get("SHOAL_APP") or app_dir.name
        self._backbone = await Backbone.connect(url, name=f"{app}/client")
        self._discovery = Discovery(NatsRegistry(self._backbone, app))
        self._policies = self._source = NatsPolicies(self._backbone, app)
        await asyncio.gather(
            self._discovery.start(), self._policies.start(), self._obtain_identity(app)
        )
        return self._discovery

    async def _obtain_identity(self, app: str) -> None:
        """An SVID through the operator's subject, if the app has a CA (else plaintext only).

        A script with the app's NATS credentials acts for the operator: it is
        ``SHOAL_SERVICE`` if set, else ``shoal-cli``, and authorization rules apply to it.
        """
        service = os.environ.get("SHOAL_SERVICE") or OPERATOR_SERVICE
        assert self._backbone is not None
        identity = WorkloadIdentity(self._backbone, app, service)
        try:
            await identity.obtain(None)
        except IdentityError:
            return  # no CA answers: an app without mTLS (SHOAL_TLS=off) or a bare backbone
        identity.start()
        self._identity = identity

    def identity(self) -> WorkloadIdentity | None:
        """The SVID this client presents, if it obtained one."""
        return self._identity

    def policy_source(self) -> PolicySource:
        """The live traffic policies; valid once ``open()`` has returned."""
        if self._source is None:
            raise ShoalError("the traffic policies are not open yet: await open() first")
        return self._source

    async def aclose(self) -> None:
        if self._identity is not None:
            await self._identity.aclose()
        if self._policies is not None:
            await self._policies.aclose()
        if self._discovery is not None:
            await self._discovery.aclose()
        if self._backbone is not None:
            await self._backbone.aclose()


def default_opener() -> NatsOpener:
    return NatsOpener()
