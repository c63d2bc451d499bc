"""Traffic policies on a JetStream key-value bucket, applied live in every process.

Bucket ``shoal-policy-<app>``, key the service name, value
``ServicePolicy.to_json()``. The supervisor publishes the manifest's policies;
every process keeps a watch and answers ``get`` from memory. While NATS is away
the last known policies stay in force (static stability); once it is back a
fresh snapshot replaces them in one step. A value that does not parse is logged
once and the service keeps its last good policy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import nats.errors
from nats.js import api
from nats.js.kv import KeyValue
from pydantic import ValidationError

from shoal.backbone._connection import Backbone
from shoal.backbone._follower import BucketFollower
from shoal.backbone._kv import KvChange, open_bucket, read_bucket
from shoal.exceptions import BackboneError, ShoalError
from shoal.manifest._policy import DEFAULT_POLICY, ServicePolicy

__all__ = ["NatsPolicies", "policy_bucket_name"]

log = logging.getLogger("shoal.policies")

_HISTORY = 5


def policy_bucket_name(app: str) -> str:
    return f"shoal-policy-{app}"


class NatsPolicies(BucketFollower[dict[str, ServicePolicy]]):
    """Implements the ``PolicySource`` protocol from a watched NATS KV bucket."""

    what = "the traffic policies"

    def __init__(
        self,
        backbone: Backbone,
        app: str,
        *,
        op_timeout: float = 2.0,
        retry_delay: float = 0.2,
    ) -> None:
        super().__init__(backbone, policy_bucket_name(app), retry_delay=retry_delay)
        self.app = app
        self._op_timeout = op_timeout
        self._kv: KeyValue | None = None
        self._policies: dict[str, ServicePolicy] = {}
        self._rejected: dict[str, bytes] = {}  # the bad value last logged, per service

    # -- reading ---------------------------------------------------------------------

    def get(self, service: str) -> ServicePolicy:
        """The policy of ``service`` as last seen; shoal's defaults if it has none. No I/O."""
        return self._policies.get(service, DEFAULT_POLICY)

    def snapshot(self) -> dict[str, ServicePolicy]:
        """Every service with a published policy, as last seen."""
        return dict(self._policies)

    # -- lifecycle -------------------------------------------------------------------

    async def aclose(self) -> None:
        await super().aclose()
        self._kv = None

    async def __aenter__(self) -> NatsPolicies:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- writing ---------------------------------------------------------------------

    async def publish(self, policies: Mapping[str, ServicePolicy]) -> list[str]:
        """Make the bucket hold exactly ``policies``; returns the services changed, sorted.

        Puts the policies whose stored value differs and deletes services that are
        no longer given. Raises :class:`BackboneError` if NATS does not answer.
        """
        wanted = {service: policy.to_json() for service, policy in policies.items()}
        try:
            async with asyncio.timeout(self._op_timeout * (2 + len(wanted))):
                stored = await read_bucket(self._backbone, self.bucket, self._bucket)
                kv = await self._bucket()
                changed = sorted(
                    {s for s, data in wanted.items() if stored.get(s) != data}
                    | (stored.keys() - wanted.keys())
                )
                for service in changed:
                    if service in wanted:
                        await kv.put(service, wanted[service])
                    else:
                        await kv.delete(service)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            self._kv = None
            raise BackboneError(
                f"could not publish the traffic policies to {self.bucket}: "
                f"{exc or type(exc).__name__}"
            ) from exc
        except BackboneError:
            self._kv = None
            raise
        return changed

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await open_bucket(
                self._backbone,
                api.KeyValueConfig(
                    bucket=self.bucket,
                    description=f"shoal traffic policies of app {self.app}",
                    history=_HISTORY,
                    storage=api.StorageType.FILE,
                ),
            )
        return self._kv

    # -- following the bucket --------------------------------------------------------

    async def _ensure(self) -> object:
        return await self._bucket()

    def _watch_failed(self, exc: ShoalError) -> float:
        self._kv = None
        log.warning("traffic policy watch failed: %s; retrying", exc)
        return self._retry_delay

    def _new_snapshot(self) -> dict[str, ServicePolicy]:
        return {}

    def _decode(self, service: str, value: bytes) -> ServicePolicy | None:
        """The policy in ``value``, or None (logged once per bad value) if it does not parse."""
        try:
            policy = ServicePolicy.from_json(value)
        except ValidationError as exc:
            if self._rejected.get(service) != value:
                self._rejected[service] = value
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "value"
                log.warning(
                    "ignoring the traffic policy of %s in %s: %s: %s; keeping the last good one",
                    service,
                    self.bucket,
                    where,
                    first["msg"],
                )
            return None
        self._rejected.pop(service, None)
        return policy

    def _stage(self, staged: dict[str, ServicePolicy], change: KvChange) -> None:
        if change.value is None:
            staged.pop(change.key, None)
            return
        policy = self._decode(change.key, change.value)
        if policy is None:  # keep the last good one, if there was one
            policy = staged.get(change.key, self._policies.get(change.key))
        if policy is not None:
            staged[change.key] = policy

    def _install(self, snapshot: dict[str, ServicePolicy]) -> None:
        first = not self._synced.is_set()
        if snapshot != self._policies:
            services = snapshot.keys() | self._policies.keys()
            changed = [s for s in services if snapshot.get(s) != self._policies.get(s)]
            # Unchanged policies keep their identity: readers may compare with `is`.
            self._policies = {
                s: p if s in changed else self._policies[s] for s, p in snapshot.items()
            }
            if not first:
                log.info("traffic policy updated: %s", ", ".join(sorted(changed)))
            self._bump()

    def _apply(self, change: KvChange) -> None:
        if change.value is None:
            if self._policies.pop(change.key, None) is None:
                return
            log.info("traffic policy removed: %s (shoal's defaults apply)", change.key)
        else:
            policy = self._decode(change.key, change.value)
            if policy is None or self._policies.get(change.key) == policy:
                return
            self._policies[change.key] = policy
            log.info("traffic policy updated: %s", change.key)
        self._bump()
