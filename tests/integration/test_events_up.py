"""Events under `shoal up` (mTLS on, a NATS user per service): a service publishes through
`shoal.publish`, a handler that always fails is dead-lettered after its deliveries,
`shoal events` shows it with its error, `shoal events replay` brings it back to a fixed
handler; the trace runs from the publishing request through the event to each delivery;
and a service's NATS user cannot publish as another service."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from procs import APPS
from test_up import running, shoal_cmd

from shoal.backbone import Backbone
from shoal.backbone._server import read_connection_file
from shoal.events import Publisher
from shoal.exceptions import PublishError, ShoalError

pytestmark = pytest.mark.integration

APP = "evup"
MANIFEST = """\
app: evup
services:
  orders:
    asgi: events_app:app
    env: {{EVENTS_OUT: "{out}", EVENTS_TOPIC: order.created}}
  flaky:
    asgi: events_app:app
    env: {{EVENTS_OUT: "{out}", EVENTS_TOPIC: order.created}}
"""


def _events(app_dir: Path) -> dict[str, Any]:
    result = shoal_cmd("events", "--json", "-C", str(app_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    info: dict[str, Any] = json.loads(result.stdout)
    return info


def _dead_letters_shown(app_dir: Path) -> dict[str, Any] | None:
    info = _events(app_dir)
    return info if info["dead_letters"]["count"] else None


def _wait(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_dead_letters_show_in_shoal_events_and_replay_to_a_fixed_handler(
    tmp_path: Path,
) -> None:
    shutil.copy(APPS / "events_app.py", tmp_path / "events_app.py")
    (tmp_path / "shoal.yaml").write_text(MANIFEST.format(out=tmp_path))
    with running(tmp_path):
        call = shoal_cmd("call", "orders", "/publish?topic=order.created", "-C", str(tmp_path))
        assert call.returncode == 0, call.stdout + call.stderr
        event_id = call.stdout.strip().splitlines()[-1]
        info = _wait(
            "a dead letter", lambda: (i := _events(tmp_path))["dead_letters"]["count"] and i
        )
        (letter,) = info["dead_letters"]["recent"]
        assert letter["id"] == event_id
        assert letter["service"] == "flaky"
        assert letter["source"] == "orders"
        assert letter["topic"] == "order.created"
        assert letter["deliveries"] == 3
        assert letter["error"] == "RuntimeError: cannot handle {'from': 'orders'}"
        streams = {s["name"]: s for s in info["streams"]}
        assert streams["shoal-events-evup"]["messages"] == 1
        assert streams["shoal-dlq-evup"]["messages"] == 1
        (consumer,) = info["consumers"]
        assert (consumer["service"], consumer["topic"]) == ("flaky", "order.created")
        assert consumer["ack_pending"] == 0
        assert consumer["pending"] == 0
        _trace_crosses_the_event(tmp_path, letter["headers"]["traceparent"])
        table = shoal_cmd("events", "-C", str(tmp_path))
        assert "dead letters: 1" in table.stdout
        assert "RuntimeError: cannot handle" in table.stdout

        (tmp_path / "fixed").write_text("")
        replay = shoal_cmd("events", "replay", "--all", "-C", str(tmp_path), "--json")
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert [r["id"] for r in json.loads(replay.stdout)["replayed"]] == [event_id]
        handled = tmp_path / f"handled-{event_id}"
        _wait("the replayed event", handled.exists)
        assert handled.read_text() == "1"  # a fresh series of deliveries
        assert _events(tmp_path)["dead_letters"]["count"] == 0
        again = shoal_cmd("events", "replay", "nope", "-C", str(tmp_path))
        assert again.returncode == 1
        assert "no dead letter with id nope" in again.stderr + again.stdout

        asyncio.run(_cannot_publish_as_another_service(tmp_path))


def _trace_crosses_the_event(app_dir: Path, traceparent: str) -> None:
    """The request to orders, its producer span, and flaky's consumer spans: one trace."""
    from shoal.control import ControlClient

    trace_id = traceparent.split("-")[1]

    def spans() -> list[dict[str, Any]] | None:
        with ControlClient(app_dir, timeout=10.0) as control:
            try:
                found: list[dict[str, Any]] = control.request("GET", f"/v1/traces/{trace_id}")
            except ShoalError:  # not shipped yet: 404
                return None
        kinds = [s["kind"] for s in found]
        return found if kinds.count("consumer") == 3 and "producer" in kinds else None

    found = _wait("the event's spans", spans)
    (server,) = [s for s in found if s["kind"] == "server"]
    (producer,) = [s for s in found if s["kind"] == "producer"]
    consumers = [s for s in found if s["kind"] == "consumer"]
    assert (server["service"], producer["service"]) == ("orders", "orders")
    assert producer["parent_id"] == server["span_id"]
    assert producer["span_id"] == traceparent.split("-")[2]
    for consumer in consumers:
        assert consumer["service"] == "flaky"
        assert consumer["parent_id"] == producer["span_id"]
        assert consumer["status"] == "error"
    assert sorted(c["attributes"]["shoal.delivery"] for c in consumers) == [1, 2, 3]


async def _cannot_publish_as_another_service(app_dir: Path) -> None:
    creds = json.loads((app_dir / ".shoal" / "nats.creds.json").read_text())
    nats = read_connection_file(app_dir)
    assert nats is not None
    host = str(nats["display_url"]).removeprefix("nats://")
    url = f"nats://svc-orders:{creds['services']['orders']}@{host}"
    backbone = await Backbone.connect(url, inbox_prefix="_INBOX_orders")
    try:
        assert await Publisher(backbone, APP, "orders").publish("order.created", {"ok": 1})
        with pytest.raises(PublishError, match=r"(?i)permissions violation"):
            await Publisher(backbone, APP, "flaky", timeout=5.0).publish("order.created", {})
        replay = "shoal.evup.replay.flaky.order.created"  # only the admin replays
        with pytest.raises(TimeoutError):  # NATS drops it: no stream ever acks
            await backbone.js.publish(replay, b"{}", timeout=1.0)
        assert replay in backbone.last_refusal
    finally:
        await backbone.aclose()
