"""Config and secrets on a real embedded NATS: the supervisor's side writes, an instance's side
(under its service's own NATS user) watches; layers, models, callbacks, history, permissions,
ciphertext at rest, and a NATS restart."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import BaseModel, model_validator

import shoal
from shoal.backbone import Backbone, EmbeddedNats
from shoal.backbone._connection import inbox_prefix
from shoal.config._admin import ConfigAdmin
from shoal.config._crypto import derive_key, load_or_create_app_key
from shoal.config._layout import SECRET_PREFIX, bucket_name
from shoal.config._runtime import LiveConfig, _Layers
from shoal.exceptions import BackboneError, ConfigError
from shoal.manifest import load_manifest

APP = "shop"
MANIFEST = """\
app: shop
services:
  catalog:
    asgi: catalog:app
    config: {page_size: 20, greeting: hello}
  orders:
    asgi: orders:app
"""
SECRET = "s3cr3t-value-that-must-not-be-on-disk"


class Settings(BaseModel):
    page_size: int
    greeting: str = "hi"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    (tmp_path / "shoal.yaml").write_text(MANIFEST)
    nats = EmbeddedNats(tmp_path)
    await nats.add_services(APP, ["catalog", "orders"])
    await nats.start()
    try:
        yield nats
    finally:
        await nats.stop()


@pytest.fixture
async def admin(server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[ConfigAdmin]:
    backbone = await Backbone.connect(server.url)
    admin = ConfigAdmin(backbone, load_manifest(tmp_path), tmp_path / ".shoal")
    await admin.publish(load_manifest(tmp_path))
    try:
        yield admin
    finally:
        await backbone.aclose()


@pytest.fixture
async def as_service(server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Connect as ``service``'s own NATS user and open its LiveConfig (closed at the end)."""
    opened: list[Any] = []

    async def open_live(service: str, **kw: Any) -> tuple[Backbone, LiveConfig]:
        backbone = await Backbone.connect(
            server.service_url(service), inbox_prefix=inbox_prefix(service)
        )
        opened.append(backbone)
        key = derive_key(load_or_create_app_key(tmp_path / ".shoal"), APP, service)
        live = LiveConfig(backbone, APP, service, f"{service}-1", secret_key=key, **kw)
        opened.append(live)
        return backbone, live

    yield open_live
    for thing in reversed(opened):
        await thing.aclose()


async def _next(live: LiveConfig) -> None:
    await live.wait_for_generation(live.generation + 1, timeout=5.0)


async def test_manifest_values_overrides_and_unset(
    admin: ConfigAdmin, as_service: Callable[..., Any]
) -> None:
    seen: list[tuple[dict[str, Any], frozenset[str]]] = []

    def record(values: Mapping[str, Any], changed: frozenset[str]) -> None:
        seen.append((dict(values), changed))

    _, live = await as_service("catalog", callbacks=[record])
    await live.start()
    assert dict(live.values) == {"page_size": 20, "greeting": "hello"}
    with pytest.raises(TypeError):
        cast(Any, live.values)["page_size"] = 1

    waiting = asyncio.ensure_future(_next(live))
    await admin.set("catalog", {"limits": {"read": [1, 2]}})
    await waiting
    limits = live.values["limits"]
    assert limits == {"read": [1, 2]}
    assert json.dumps(limits) == '{"read": [1, 2]}'
    with pytest.raises(TypeError, match="read-only"):
        limits["read"].append(3)
    with pytest.raises(TypeError, match="read-only"):
        limits["write"] = 1
    mine = copy.deepcopy(limits)  # a writable copy
    mine["read"].append(3)
    assert live.values["limits"] == {"read": [1, 2]}
    seen.clear()

    waiting = asyncio.ensure_future(_next(live))
    await admin.set("catalog", {"page_size": 50, "beta": True})
    await waiting
    while len(seen) < 2:  # one change a key: two puts
        await _next(live)
    assert dict(live.values) == {
        "page_size": 50,
        "greeting": "hello",
        "beta": True,
        "limits": {"read": [1, 2]},
    }
    assert seen[-1][1] == {"beta"}
    assert seen[0][1] == {"page_size"}
    assert await admin.get("catalog") == {
        "beta": {"value": True, "source": "override"},
        "greeting": {"value": "hello", "source": "manifest"},
        "limits": {"value": {"read": [1, 2]}, "source": "override"},
        "page_size": {"value": 50, "source": "override"},
    }

    waiting = asyncio.ensure_future(_next(live))
    result = await admin.unset("catalog", "page_size")
    await waiting
    assert result["value"] == 20
    assert result["source"] == "manifest"
    assert live.values["page_size"] == 20
    assert seen[-1][1] == {"page_size"}
    assert seen[-1][0]["page_size"] == 20

    history = await admin.history("catalog", "page_size")
    assert [(r["source"], r["operation"], r["value"]) for r in history] == [
        ("manifest", "set", 20),
        ("override", "set", 50),
        ("override", "unset", None),
    ]
    assert all(r["time"] > 0 and r["key"] == "page_size" for r in history)
    assert [r["revision"] for r in history] == sorted(r["revision"] for r in history)
    assert {r["key"] for r in await admin.history("catalog")} == {
        "page_size",
        "greeting",
        "beta",
        "limits",
    }


async def test_admin_refuses_unknown_services_and_bad_keys(admin: ConfigAdmin) -> None:
    with pytest.raises(ConfigError, match=r"no service 'catalgo' in app 'shop' \(services: "):
        await admin.set("catalgo", {"a": 1})
    with pytest.raises(ConfigError, match="not a valid config key name"):
        await admin.set("catalog", {"a.b": 1})
    with pytest.raises(ConfigError, match="has no override of 'greeting'"):
        await admin.unset("catalog", "greeting")
    with pytest.raises(ConfigError, match="has no config key 'nope'"):
        await admin.get("catalog", "nope")


async def test_a_value_the_model_rejects_is_refused_and_the_last_good_one_stays(
    admin: ConfigAdmin, as_service: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    changes: list[frozenset[str]] = []
    _, live = await as_service("catalog", callbacks=[lambda _v, keys: changes.append(keys)])
    await live.start()
    assert live.model(Settings) == Settings(page_size=20, greeting="hello")

    await admin.set("catalog", {"page_size": "many"})
    await admin.set("catalog", {"greeting": "bonjour"})  # a later good change still applies
    while live.values["greeting"] != "bonjour":
        await _next(live)
    assert live.values["page_size"] == 20
    assert live.model(Settings) == Settings(page_size=20, greeting="bonjour")
    assert changes == [frozenset({"greeting"})]
    refusal = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refusal) == 1
    assert 'service catalog, instance catalog-1: refused page_size="many"' in refusal[0]
    assert "page_size: Input should be a valid integer" in refusal[0]
    assert "keeping the last good value 20" in refusal[0]

    await admin.set("catalog", {"page_size": 30})
    while live.values["page_size"] != 30:
        await _next(live)
    assert live.model(Settings).page_size == 30


async def test_config_is_a_clear_error_outside_an_instance() -> None:
    with pytest.raises(ConfigError, match=r"shoal.config\(\) works inside a service instance"):
        shoal.config()
    with pytest.raises(ConfigError, match=r"shoal.secret\(\) works inside"):
        shoal.secret("db_password")


async def test_secrets_are_readable_by_their_service_only_and_encrypted_at_rest(
    admin: ConfigAdmin, as_service: Callable[..., Any], tmp_path: Path
) -> None:
    _, catalog = await as_service("catalog")
    await catalog.start()
    waiting = asyncio.ensure_future(_next(catalog))
    await admin.set_secret("catalog", "db_password", SECRET)
    await waiting
    assert catalog.secret("db_password") == SECRET
    assert catalog.secret_names() == ["db_password"]
    with pytest.raises(ConfigError, match="service 'catalog' has no secret 'nope'"):
        catalog.secret("nope")
    rows = await admin.secrets("catalog")
    assert [r["name"] for r in rows] == ["db_password"]
    assert SECRET not in repr(rows)

    # At rest: nowhere in the NATS store (nor anywhere under .shoal/).
    files = [p for p in (tmp_path / ".shoal").rglob("*") if p.is_file()]
    assert any("nats" in str(p) for p in files)
    assert not [p for p in files if SECRET.encode() in p.read_bytes()]

    # Another service's user may not read catalog's bucket: NATS refuses it.
    orders_backbone, orders = await as_service("orders")
    await orders.start()
    thief = LiveConfig(orders_backbone, APP, "catalog", "orders-1")
    try:
        with pytest.raises(BackboneError):
            await thief.start(timeout=1.0)
    finally:
        await thief.aclose()
    assert "permissions violation" in orders_backbone.last_refusal.lower()
    stream = f"KV_{bucket_name(APP, 'catalog')}"
    assert f"$js.api.stream.info.{stream}".lower() in orders_backbone.last_refusal.lower()
    orders_backbone.last_refusal = ""
    with pytest.raises(Exception, match=r"(?i)timeout|permission"):  # the consumer itself
        await orders_backbone.js.subscribe(
            f"$KV.{bucket_name(APP, 'catalog')}.>", stream=stream, ordered_consumer=True
        )
    assert f"consumer.create.{stream}".lower() in orders_backbone.last_refusal.lower()
    with pytest.raises(Exception, match=r"(?i)timeout|permission"):
        await orders_backbone.js.get_msg(
            f"KV_{bucket_name(APP, 'catalog')}",
            subject=f"$KV.{bucket_name(APP, 'catalog')}.{SECRET_PREFIX}db_password",
            direct=True,
        )

    # A ciphertext moved into another service's bucket does not open with that service's key.
    entry = await (await admin.store.bucket("catalog")).get(SECRET_PREFIX + "db_password")
    assert entry.value is not None
    assert SECRET.encode() not in entry.value
    await admin.store.put_secret("orders", "db_password", entry.value)
    while "db_password" not in orders.secret_names():
        await _next(orders)
    with pytest.raises(ConfigError, match="does not decrypt with this service's key"):
        orders.secret("db_password")

    await admin.delete_secret("catalog", "db_password")
    while catalog.secret_names():
        await _next(catalog)
    assert await admin.secrets("catalog") == []


async def test_an_instance_keeps_its_config_through_a_nats_restart(
    server: EmbeddedNats, admin: ConfigAdmin, as_service: Callable[..., Any]
) -> None:
    backbone, live = await as_service("catalog", retry_delay=0.05)
    await live.start()
    await admin.set("catalog", {"page_size": 7})
    while live.values.get("page_size") != 7:
        await _next(live)

    await server.stop()
    for _ in range(100):
        if not backbone.connected:
            break
        await asyncio.sleep(0.05)
    assert not backbone.connected
    assert dict(live.values) == {"page_size": 7, "greeting": "hello"}  # static stability

    await server.start()  # same port, same store
    await backbone.wait_connected()
    admin.store.forget()
    for _ in range(3):  # the admin's connection may still be reconnecting
        try:
            await admin.set("catalog", {"page_size": 8})
            break
        except BackboneError:
            await asyncio.sleep(0.5)
    async with asyncio.timeout(10.0):
        while live.values.get("page_size") != 8:
            await _next(live)
    assert dict(live.values) == {"page_size": 8, "greeting": "hello"}


async def test_an_instance_whose_bucket_is_not_made_yet_starts_empty_and_catches_up(
    server: EmbeddedNats, admin: ConfigAdmin
) -> None:
    backbone = await Backbone.connect(server.url)
    live = LiveConfig(backbone, APP, "later", "later-1", retry_delay=0.05)
    try:
        await live.start(timeout=3.0)
        assert dict(live.values) == {}
        await admin.store.publish_manifest("later", {"mode": "fast"})
        async with asyncio.timeout(10.0):
            while dict(live.values) != {"mode": "fast"}:
                await _next(live)
    finally:
        await live.aclose()
        await backbone.aclose()


class Window(BaseModel):
    low: int
    high: int

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.low >= self.high:
            raise ValueError("low must be below high")
        return self


def test_changes_that_arrive_together_are_taken_together_if_the_model_takes_them() -> None:
    changes: list[frozenset[str]] = []
    live = LiveConfig(
        cast(Backbone, None), APP, "catalog", "catalog-1",
        callbacks=[lambda _v, keys: changes.append(keys)],
    )  # fmt: skip

    def snapshot(**values: int) -> None:  # what a re-watch after a NATS outage delivers
        layers = _Layers()
        layers.override = dict(values)
        live._install(layers)

    snapshot(low=10, high=20)
    assert live.model(Window) == Window(low=10, high=20)
    snapshot(low=30, high=40)  # low=30 alone would break the model; with high=40 it fits
    assert live.model(Window) == Window(low=30, high=40)
    assert changes == [frozenset({"low", "high"})]
    snapshot(low=50, high=45)  # no order of the two fits: high alone does, low is refused
    assert dict(live.values) == {"low": 30, "high": 45}
    assert changes[-1] == {"high"}
