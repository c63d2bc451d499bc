"""Traffic policies on the real embedded NATS: publish, watch, delete, restart, bad values."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from shoal.backbone import Backbone, EmbeddedNats, NatsPolicies
from shoal.manifest import DEFAULT_POLICY, ServicePolicy

WAIT = 5.0


@dataclass
class Pair:
    writer: NatsPolicies
    watcher: NatsPolicies


@pytest.fixture
async def pair(nats_server: EmbeddedNats) -> AsyncIterator[Pair]:
    """A publisher and a watcher of app "shop", each on its own connection."""
    writer_bb = await Backbone.connect(nats_server.url)
    watcher_bb = await Backbone.connect(nats_server.url)
    writer = NatsPolicies(writer_bb, "shop")
    watcher = NatsPolicies(watcher_bb, "shop", retry_delay=0.05)
    try:
        await watcher.start()
        yield Pair(writer, watcher)
    finally:
        await watcher.aclose()
        await writer.aclose()
        await writer_bb.aclose()
        await watcher_bb.aclose()


def policy(timeout: float, attempts: int = 3) -> ServicePolicy:
    return ServicePolicy.model_validate({"timeout": timeout, "retries": {"attempts": attempts}})


async def test_unknown_service_gets_the_defaults(pair: Pair) -> None:
    assert pair.watcher.get("catalog") is DEFAULT_POLICY
    assert pair.watcher.generation == 0


async def test_published_policy_is_seen_by_another_watcher(pair: Pair) -> None:
    seen = pair.watcher.generation
    changed = await pair.writer.publish({"orders": policy(2.0), "catalog": policy(0.5, 1)})
    assert changed == ["catalog", "orders"]
    await pair.watcher.wait_for_generation(seen + 2, WAIT)
    assert pair.watcher.get("catalog") == policy(0.5, 1)
    assert pair.watcher.get("orders").timeout == 2.0


async def test_publishing_the_same_policies_changes_nothing(pair: Pair) -> None:
    policies = {"catalog": policy(0.5), "orders": DEFAULT_POLICY}
    assert await pair.writer.publish(policies) == ["catalog", "orders"]
    assert await pair.writer.publish(policies) == []
    assert await pair.writer.publish({**policies, "orders": policy(3.0)}) == ["orders"]


async def test_new_watcher_loads_every_policy_at_start(
    pair: Pair, nats_server: EmbeddedNats
) -> None:
    await pair.writer.publish({"catalog": policy(0.5)})
    backbone = await Backbone.connect(nats_server.url)
    try:
        async with NatsPolicies(backbone, "shop") as late:
            assert late.get("catalog").timeout == 0.5
            assert late.snapshot() == {"catalog": policy(0.5)}
    finally:
        await backbone.aclose()


async def test_service_left_out_is_deleted_and_falls_back_to_the_defaults(pair: Pair) -> None:
    await pair.writer.publish({"catalog": policy(0.5), "orders": policy(2.0)})
    await pair.watcher.wait_for_generation(2, WAIT)
    assert await pair.writer.publish({"orders": policy(2.0)}) == ["catalog"]
    await pair.watcher.wait_for_generation(3, WAIT)
    assert pair.watcher.get("catalog") is DEFAULT_POLICY
    assert pair.watcher.get("orders").timeout == 2.0


async def test_policies_stay_in_force_through_a_nats_restart_and_resync(
    pair: Pair, nats_server: EmbeddedNats
) -> None:
    await pair.writer.publish({"catalog": policy(0.5), "orders": policy(2.0)})
    await pair.watcher.wait_for_generation(2, WAIT)
    nats_server.kill()
    assert pair.watcher.get("catalog").timeout == 0.5  # static stability: no I/O, last known
    await nats_server.start()
    assert await pair.writer.publish({"catalog": policy(0.75)}) == ["catalog", "orders"]
    # Whether the watcher sees the two changes live or in one fresh snapshot, it bumps.
    await pair.watcher.wait_for_generation(3, WAIT * 2)
    while (
        pair.watcher.get("orders") != DEFAULT_POLICY or pair.watcher.get("catalog").timeout != 0.75
    ):
        await pair.watcher.wait_for_generation(pair.watcher.generation + 1, WAIT)
    assert pair.watcher.snapshot() == {"catalog": policy(0.75)}


async def test_malformed_value_is_logged_once_and_the_last_good_policy_kept(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    await pair.writer.publish({"catalog": policy(0.5)})
    await pair.watcher.wait_for_generation(1, WAIT)
    kv = await pair.writer._bucket()
    with caplog.at_level(logging.WARNING, logger="shoal.policies"):
        await kv.put("catalog", b'{"timeout": "soon"}')
        await kv.put("catalog", b'{"timeout": "soon"}')
        await kv.put("orders", policy(2.0).to_json())  # delivered after both bad values
        await pair.watcher.wait_for_generation(2, WAIT)
    assert pair.watcher.get("catalog").timeout == 0.5
    assert pair.watcher.get("orders").timeout == 2.0
    warnings = [r.getMessage() for r in caplog.records if r.name == "shoal.policies"]
    assert len(warnings) == 1, warnings
    assert "ignoring the traffic policy of catalog in shoal-policy-shop: timeout" in warnings[0]
    # Publishing the good policy again repairs the bucket.
    assert await pair.writer.publish({"catalog": policy(0.5), "orders": policy(2.0)}) == ["catalog"]


async def test_publish_without_nats_is_a_backbone_error(nats_server: EmbeddedNats) -> None:
    from shoal.exceptions import BackboneError

    backbone = await Backbone.connect(nats_server.url)
    writer = NatsPolicies(backbone, "shop", op_timeout=0.2)
    try:
        nats_server.kill()
        with pytest.raises(BackboneError, match="could not publish the traffic policies"):
            await writer.publish({"catalog": policy(0.5)})
    finally:
        await writer.aclose()
        await backbone.aclose()
