"""Structured logs under `shoal up`: the logs of a request are found by its trace id (API and
`shoal logs`), levels filter, and a command service's output is collected like the rest."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from procs import SHOAL
from test_security_up import _up
from test_tracing_up import _control, _free_port

pytestmark = pytest.mark.integration

SHOP = Path(__file__).parents[2] / "examples" / "shop"

# A command service that is no Python program of its own: a shell script's lines, one
# plain with a level word and one JSON in another logger's spelling, then a web server.
SHELL_SERVICE = """\
  shell:
    command:
      - sh
      - -c
      - >-
        echo '[warn] plain from a shell';
        echo '{{"severity": "ERROR", "msg": "json from a shell", "traceId": "{trace}"}}';
        exec {python} -m http.server $PORT --bind 127.0.0.1
"""


def _shoal_logs(app_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHOAL, "logs", *args, "-C", str(app_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _wait_for_logs(app_dir: Path, query: str, want: int = 1) -> list[dict[str, Any]]:
    """The records /v1/logs?<query> finds, once there are ``want`` of them (10 s at most)."""
    deadline = time.monotonic() + 10
    while True:
        status, records = _control(app_dir, f"/v1/logs?{query}")
        assert status == 200, records
        if len(records) >= want or time.monotonic() > deadline:
            return list(records)
        time.sleep(0.2)


def test_the_logs_of_a_request_are_found_by_its_trace_id(tmp_path: Path) -> None:
    app_dir = tmp_path / "shop"
    shutil.copytree(SHOP, app_dir, ignore=shutil.ignore_patterns(".shoal"))
    shell_trace = secrets.token_hex(16)
    manifest = app_dir / "shoal.yaml"
    text = manifest.read_text()
    assert text.count("\ngateway:") == 1
    manifest.write_text(
        text.replace(
            "\ngateway:",
            "\n" + SHELL_SERVICE.format(trace=shell_trace, python=sys.executable) + "gateway:",
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    port = _free_port()
    env["SHOAL_GATEWAY_PORT"] = str(port)
    trace_id = secrets.token_hex(16)
    with _up(app_dir, env):
        order = httpx.post(
            f"http://127.0.0.1:{port}/api/orders",
            json={"product_id": "tee", "quantity": 1},
            headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
            timeout=10,
        )
        assert order.status_code == 201, order.text
        order_id = order.json()["id"]
        instance = order.json()["answered_by"]["orders"]  # orders runs two replicas

        records = _wait_for_logs(app_dir, f"trace_id={trace_id}&service=orders")
        placed = [r for r in records if order_id in r["message"]]
        assert placed, records
        record = placed[0]
        assert record["service"] == "orders"
        assert record["instance"] == instance
        assert record["level"] == "info"
        assert record["trace_id"] == trace_id
        assert len(record["span_id"]) == 16
        assert record["fields"]["logger"] == "orders"

        # The command service's lines: a level word read from plain text, and foreign JSON.
        shell = _wait_for_logs(app_dir, "service=shell&level=warning", want=2)
        assert {(r["level"], r["message"]) for r in shell} >= {
            ("warning", "[warn] plain from a shell"),
            ("error", "json from a shell"),
        }
        assert [r["trace_id"] for r in shell if r["level"] == "error"] == [shell_trace]

        # Bad filters are the caller's mistake, said clearly.
        for query, words in (("level=loud", "level must be one of"), ("limit=0", "limit")):
            status, body = _control(app_dir, f"/v1/logs?{query}")
            assert status == 400, body
            assert words in json.dumps(body)

        # `shoal logs --trace` while the app is up: oldest first, one line each.
        found = _shoal_logs(app_dir, env, "--trace", trace_id)
        assert found.returncode == 0, found.stderr
        line = next(x for x in found.stdout.splitlines() if order_id in x)
        assert f" {instance} info " in line
        assert line.endswith(f"trace={trace_id[:8]}")

        # The console and the files show structured lines readably, not as JSON.
        orders_log = (app_dir / ".shoal" / "logs" / "orders.log").read_text()
        shown = next(x for x in orders_log.splitlines() if order_id in x)
        assert "INFO:" in shown
        assert f"trace={trace_id[:8]}" in shown
        assert '"level"' not in shown

    # ... and after `shoal down`, from the store left behind.
    errors = _shoal_logs(app_dir, env, "--level", "error")
    assert errors.returncode == 0, errors.stderr
    assert "json from a shell" in errors.stdout
    assert "plain from a shell" not in errors.stdout
    as_json = _shoal_logs(app_dir, env, "shell", "--grep", "FROM A SHELL", "--json")
    assert as_json.returncode == 0, as_json.stderr
    messages = [json.loads(x)["message"] for x in as_json.stdout.splitlines()]
    assert messages == ["[warn] plain from a shell", "json from a shell"]  # oldest first
    unknown = _shoal_logs(app_dir, env, "nosuch", "--level", "info")
    assert unknown.returncode == 1
    assert "no log records of service 'nosuch'" in unknown.stderr
    assert "orders" in unknown.stderr
