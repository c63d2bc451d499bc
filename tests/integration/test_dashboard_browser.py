"""The dashboard in a real browser: the demo shop under `shoal up`, ~30 orders through the
gateway, a one-time link opened in headless Chromium (Playwright with Debian's `chromium`);
the graph shows every service and every edge, a trace opens as a waterfall. Beside the shop
runs `flaky` (tests/integration/apps/events_app.py): it publishes an event its own handler
fails on until it is dead-lettered, and has config values (one from shoal.yaml, one
overridden) and a secret; the page shows the consumer, the dead letter with its error, the
values with their source and the secret's name, never its value. The page's screenshot is
kept as `test-artifacts/dashboard.png`.

Without Chromium or Playwright the test skips, saying which is missing; under CI
(``CI`` set, where `scripts/test.sh` installs both) it fails instead."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
from procs import APPS
from test_security_up import _shoal, _up

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
SHOP = ROOT / "examples" / "shop"
SCREENSHOT = ROOT / "test-artifacts" / "dashboard.png"
SERVICES = {"gateway", "catalog", "inventory", "payments", "orders"}
EDGES = {"gateway->orders", "orders->catalog", "orders->inventory", "orders->payments"}
FLAKY = """\
  flaky:
    asgi: events_app:app
    env: {{EVENTS_OUT: "{out}", EVENTS_TOPIC: order.created}}
    config: {{greeting: hello, page_size: 20}}
"""
SECRET_VALUE = "sk-live-do-not-show-4242"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _missing(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser test (scripts/test.sh installs it)")
    pytest.skip(reason)


def _chromium() -> str:
    named = os.environ.get("SHOAL_CHROMIUM")
    if named:
        if not os.access(named, os.X_OK):
            _missing(f"SHOAL_CHROMIUM={named} is not an executable file")
        return named
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    _missing(
        "no Chromium: install Debian's `chromium` package (apt-get install chromium) "
        "or set SHOAL_CHROMIUM to a Chromium executable"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _control(app_dir: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((app_dir / ".shoal" / "control.json").read_text())
    return info


def _with_flaky(app_dir: Path) -> None:
    """Add the `flaky` events service to the shop's copy (before its `gateway:` section)."""
    shutil.copy(APPS / "events_app.py", app_dir / "events_app.py")
    manifest = app_dir / "shoal.yaml"
    text = manifest.read_text()
    assert "\ngateway:" in text
    manifest.write_text(text.replace("\ngateway:", "\n" + FLAKY.format(out=app_dir) + "gateway:"))


def _control_call(app_dir: Path, method: str, path: str, body: dict[str, Any]) -> None:
    info = _control(app_dir)
    answer = httpx.request(
        method,
        info["url"] + path,
        json=body,
        headers={"authorization": f"Bearer {info['token']}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text


def _wait_for_edges(app_dir: Path) -> None:
    """Until /v1/stat has every edge (instances ship their metrics every 2 s; 30 s at most)."""
    info = _control(app_dir)
    deadline = time.monotonic() + 30
    seen: set[str] = set()
    while time.monotonic() < deadline:
        answer = httpx.get(
            info["url"] + "/v1/stat?window=60",
            headers={"authorization": f"Bearer {info['token']}"},
            timeout=10,
        )
        if answer.status_code == 200:
            seen = {f"{e['source']}->{e['target']}" for e in answer.json()["edges"]}
            if seen >= EDGES:
                return
        time.sleep(0.5)
    raise AssertionError(f"edges in /v1/stat after 30 s: {sorted(seen)}")


@pytest.mark.timeout(240)
def test_dashboard_shows_the_graph_and_a_trace_waterfall(tmp_path: Path) -> None:
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed (pip install -e '.[dev]' installs it)")

    app_dir = tmp_path / "shop"
    shutil.copytree(SHOP, app_dir, ignore=shutil.ignore_patterns(".shoal"))
    _with_flaky(app_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    port = _free_port()
    env["SHOAL_GATEWAY_PORT"] = str(port)
    with _up(app_dir, env):
        call = _shoal("call", "flaky", "/publish?topic=order.created", "-C", str(app_dir), env=env)
        assert call.returncode == 0, call.stdout + call.stderr
        event_id = call.stdout.strip().splitlines()[-1]
        _control_call(app_dir, "POST", "/v1/config/flaky/values", {"values": {"page_size": 50}})
        _control_call(app_dir, "PUT", "/v1/secrets/flaky/api_key", {"value": SECRET_VALUE})
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as gateway:
            for _ in range(30):
                order = gateway.post("/api/orders", json={"product_id": "sticker", "quantity": 1})
                assert order.status_code in (200, 201), order.text
        _wait_for_edges(app_dir)
        info = _control(app_dir)
        ticket = httpx.post(
            info["url"] + "/v1/dashboard/ticket",
            headers={"authorization": f"Bearer {info['token']}"},
            timeout=10,
        )
        assert ticket.status_code == 200, ticket.text
        link = ticket.json()["url"]

        problems: list[str] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=executable, headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1800})
                page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
                page.on(
                    "console",
                    lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None,
                )
                page.goto(link)
                assert page.url.endswith("/dashboard/"), page.url  # the ticket became a cookie

                # the graph: every service and edge, in the hidden list and in cytoscape itself
                wanted = sorted(SERVICES | EDGES)
                page.wait_for_function(
                    """(wanted) => {
                        const ids = [...document.querySelectorAll('#graph-elements li')]
                            .map((li) => li.dataset.id);
                        return wanted.every((id) => ids.includes(id));
                    }""",
                    arg=wanted,
                    timeout=30_000,
                )
                in_graph = page.evaluate("() => window.shoalGraph.elements().map((e) => e.id())")
                assert set(wanted) <= set(in_graph), in_graph
                labels = page.evaluate(
                    "() => window.shoalGraph.edges().map((e) => e.data('label'))"
                )
                assert all("rps" in label and "p99" in label for label in labels), labels

                # a trace: click it in the list, its waterfall shows every hop
                page.locator("[data-testid=trace-row]").first.click(timeout=15_000)
                page.wait_for_function(
                    "() => document.querySelectorAll('[data-testid=span-row]').length >= 5",
                    timeout=15_000,
                )
                rows = page.locator("[data-testid=span-row]")
                services = set(rows.evaluate_all("(rs) => rs.map((r) => r.dataset.service)"))
                assert {"gateway", "orders"} <= services, services
                rows.nth(1).click()
                assert page.locator("#span-detail").is_visible()

                _check_events_and_config(page, event_id)

                SCREENSHOT.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(SCREENSHOT), full_page=True)
            finally:
                browser.close()
        assert not problems, problems  # no script error, nothing the CSP refused


def _check_events_and_config(page: Any, event_id: str) -> None:
    """The events and configuration sections: what `flaky` did, and no secret value."""
    consumer = page.locator("[data-testid=consumer-row][data-service=flaky]")
    consumer.wait_for(timeout=15_000)
    assert consumer.get_attribute("data-topic") == "order.created"
    assert page.locator("[data-testid=events-empty]").is_hidden()
    # the handler fails 3 times in about 0.3 s: the dead letter is there within a refresh
    letter = page.locator(f"[data-testid=dead-letter-row][data-id='{event_id}']")
    letter.wait_for(timeout=15_000)
    cells = letter.locator("td").all_text_contents()
    assert cells[1:5] == ["flaky", "order.created from flaky", event_id, "3"], cells
    assert cells[5] == "RuntimeError: cannot handle {'from': 'flaky'}", cells
    assert cells[6] == f"shoal events replay --service flaky {event_id}", cells

    def stream(name: str) -> str:
        shown = page.locator(f"[data-testid=event-stream][data-stream={name}] b").text_content()
        return shown or ""

    # flaky's event and the shop's orders.paid events (one an order); one dead letter
    assert re.fullmatch(r"\d+ messages · [\d.]+ (B|KiB)", stream("shoal-events-shop")), stream(
        "shoal-events-shop"
    )
    assert re.fullmatch(r"1 message · \d+ B", stream("shoal-dlq-shop")), stream("shoal-dlq-shop")
    paid = page.locator("[data-testid=consumer-row][data-service=catalog]")
    assert paid.get_attribute("data-topic") == "orders.paid"

    flaky = page.locator("[data-testid=config-service][data-service=flaky]")
    flaky.wait_for(timeout=15_000)
    rows = {
        row.get_attribute("data-key"): row.locator("td").all_text_contents()
        for row in flaky.locator("[data-testid=config-row]").all()
    }
    assert rows == {
        "greeting": ["greeting", '"hello"', "manifest"],
        "page_size": ["page_size", "50", "override"],
    }, rows
    assert flaky.locator("[data-testid=secret-name]").all_text_contents() == ["api_key"]
    flaky.locator("[data-testid=config-history] summary").click()
    flaky.locator("[data-testid=config-history] td", has_text="50").first.wait_for(timeout=10_000)
    assert "inventory" in (page.locator("[data-testid=config-bare]").text_content() or "")
    assert SECRET_VALUE not in page.content()
