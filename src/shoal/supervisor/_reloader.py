"""Changing a running app's traffic policy and config: re-read ``shoal.yaml``, validate, publish.

Triggered by `shoal apply` (through the control API) or by the manifest file
changing on disk (its modification time and size, polled). An invalid manifest
changes nothing: every problem is reported and the policies in force stay.
Traffic policy and each service's ``config:`` are applied live; other changes
(replicas, new services, a new command) are reported with the command that applies them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from shoal.exceptions import ManifestError, ShoalError
from shoal.manifest import Manifest, ServicePolicy, ServiceSpec, load_manifest

__all__ = ["ApplyResult", "ManifestReloader", "PolicyPublisher", "not_applied"]

_POLICY_FIELDS = frozenset(ServicePolicy.model_fields)


class ConfigPublisher(Protocol):
    """Where each service's ``config:`` goes (``ConfigAdmin``); returns the services changed."""

    async def publish(self, manifest: Manifest) -> list[str]: ...


class PolicyPublisher(Protocol):
    """Where the policies go (``NatsPolicies``); returns the services whose policy changed."""

    async def publish(self, policies: Mapping[str, ServicePolicy]) -> list[str]: ...


@dataclasses.dataclass(frozen=True)
class ApplyResult:
    changed: list[str]
    """Services whose traffic policy changed, sorted."""
    not_applied: list[str]
    """One note per manifest entry whose other changes need `shoal scale` or a restart."""

    def to_json(self) -> dict[str, list[str]]:
        return {"changed": self.changed, "not_applied": self.not_applied}


def _spec_changes(old: ServiceSpec, new: ServiceSpec) -> list[str]:
    """The fields other than traffic policy and replicas that differ."""
    return [
        name
        for name in ServiceSpec.model_fields
        if name not in _POLICY_FIELDS and name not in ("replicas", "config")
        if getattr(old, name) != getattr(new, name)
    ]


def not_applied(old: Manifest, new: Manifest) -> list[str]:
    """What changed from ``old`` to ``new`` besides traffic policy, and how to apply it."""
    notes: list[str] = []
    if new.app != old.app:
        notes.append(f"app: renamed {old.app!r} to {new.app!r}: restart the app")
    for name, spec in new.services.items():
        before = old.services.get(name)
        if before is None:
            notes.append(
                f"{name}: new service, not started: run `shoal scale {name}={spec.replicas}`"
            )
            continue
        if spec.replicas != before.replicas:
            notes.append(
                f"{name}: replicas {before.replicas} -> {spec.replicas}: "
                f"run `shoal scale {name}={spec.replicas}`"
            )
        fields = _spec_changes(before, spec)
        if fields:
            notes.append(f"{name}: {', '.join(fields)} changed: run `shoal restart {name}`")
    for name in old.services.keys() - new.services.keys():
        notes.append(f"{name}: removed, still running: restart the app to stop it")
    if new.gateway != old.gateway:
        notes.append("gateway: changed: restart the app")
    return sorted(notes)


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


class ManifestReloader:
    """Applies the manifest's traffic policy on demand and whenever its file changes.

    ``say`` writes one line of the supervisor's own log; ``on_applied`` receives
    each valid manifest read (the supervisor takes it for `scale` and `restart`).
    """

    def __init__(
        self,
        manifest: Manifest,
        policies: PolicyPublisher,
        say: Callable[[str], None],
        *,
        on_applied: Callable[[Manifest], None] | None = None,
        interval: float = 1.0,
        config: ConfigPublisher | None = None,
    ) -> None:
        self.manifest = manifest
        self.path = manifest.path
        self._policies = policies
        self._say = say
        self._on_applied = on_applied
        self._config = config
        self.interval = interval
        self._seen = _signature(self.path)
        self._lock = asyncio.Lock()

    async def apply(self) -> ApplyResult:
        """Re-read the manifest and publish its policies; raises ``ManifestError`` if invalid."""
        async with self._lock:
            self._seen = _signature(self.path)
            try:
                new = load_manifest(self.path)
            except ManifestError as exc:
                for problem in exc.problems:
                    self._say(str(problem))
                count = len(exc.problems)
                self._say(
                    f"{count} problem{'s' if count != 1 else ''} in {self.path}: "
                    "nothing applied; the traffic policy in force stays"
                )
                raise
            changed = await self._policies.publish(new.policies())
            if self._config is not None:  # says what it changed itself
                await self._config.publish(new)
            notes = not_applied(self.manifest, new)
            self.manifest = new
            if self._on_applied is not None:
                self._on_applied(new)
            self._report(changed, notes)
            return ApplyResult(changed, notes)

    def _report(self, changed: list[str], notes: list[str]) -> None:
        if changed:
            self._say(f"applied traffic policy: {', '.join(changed)}")
        if notes:
            self._say("not applied live (needs `shoal scale` or a restart): " + "; ".join(notes))
        if not changed and not notes:
            self._say(f"re-read {self.path}: no traffic policy changed")

    async def run(self) -> None:
        """Poll the file every ``interval`` seconds; apply when it changed. Runs until cancelled."""
        failed = ""
        while True:
            await asyncio.sleep(self.interval)
            now = _signature(self.path)
            if now is None or now == self._seen:
                continue  # a missing file is an editor mid-save, or a mistake: keep going
            try:
                await self.apply()
            except ManifestError:
                failed = ""  # reported; the next change is tried again
            except ShoalError as exc:  # NATS is away: try again at the next poll
                self._seen = None
                if str(exc) != failed:
                    failed = str(exc)
                    self._say(f"could not apply {self.path}: {exc}; retrying")
            else:
                failed = ""
