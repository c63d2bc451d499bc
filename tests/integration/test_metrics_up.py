"""Golden metrics under `shoal up`: after N requests with a known number of failures, the
counters, the success rate and the edges match exactly; the app's one scrape endpoint parses
with prometheus_client's parser; `shoal stat --json` and `shoal top` show the same."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from procs import SHOAL
from prometheus_client.parser import text_string_to_metric_families
from test_security_up import _up

pytestmark = pytest.mark.integration

STORE = """\
from fastapi import FastAPI, HTTPException

app = FastAPI()


@app.get("/items/{n}")
async def item(n: int) -> dict[str, int]:
    if n % 4 == 0:
        raise HTTPException(500, "every fourth item is broken")
    return {"n": n}
"""

FRONT = """\
import shoal
from fastapi import FastAPI, Response

app = FastAPI()
client = shoal.client()


@app.get("/show/{n}")
async def show(n: int) -> Response:
    answer = await client.get(f"http://store/items/{n}")
    return Response(answer.content, status_code=answer.status_code)
"""

MANIFEST = """\
app: metrictest
services:
  store:
    asgi: store:app
    replicas: 2
  front:
    asgi: front:app
gateway:
  port: {port}
  routes:
    - {{prefix: /, service: front}}
"""

N = 60
FAILING = N // 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(app_dir: Path, path: str) -> httpx.Response:
    info = json.loads((app_dir / ".shoal" / "control.json").read_text())
    return httpx.get(
        info["url"] + path, headers={"authorization": f"Bearer {info['token']}"}, timeout=10
    )


def _row(rows: list[dict[str, Any]], **match: str) -> dict[str, Any]:
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


def test_counters_success_rate_and_edges_match_what_was_sent(tmp_path: Path) -> None:
    port = _free_port()
    (tmp_path / "store.py").write_text(STORE)
    (tmp_path / "front.py").write_text(FRONT)
    (tmp_path / "shoal.yaml").write_text(MANIFEST.format(port=port))
    with _up(tmp_path, dict(os.environ)):
        statuses = [
            httpx.get(f"http://127.0.0.1:{port}/show/{n}", timeout=10).status_code
            for n in range(1, N + 1)
        ]
        assert statuses.count(500) == FAILING
        assert statuses.count(200) == N - FAILING

        deadline = time.monotonic() + 15  # instances ship every 2 s
        while True:
            stat = _get(tmp_path, "/v1/stat?window=600").json()
            services = {r["service"]: r for r in stat["services"]}
            done = all(
                services.get(name, {}).get("requests") == N
                for name in ("store", "front", "gateway")
            )  # each ships on its own 2 s beat: wait for all three
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.3)

        store = services["store"]
        assert store["requests"] == N
        assert store["success"] == (N - FAILING) / N
        assert store["errors"] == {"status 500": FAILING}
        assert store["instances"] == 2
        assert store["p50_ms"] is not None
        assert store["p99_ms"] >= store["p50_ms"]
        assert services["front"]["requests"] == N
        assert services["gateway"]["success"] == (N - FAILING) / N

        edge = _row(stat["edges"], source="front", target="store")
        assert edge["requests"] == N
        assert edge["success"] == (N - FAILING) / N
        assert _row(stat["edges"], source="gateway", target="front")["requests"] == N
        route = _row(stat["routes"], service="store", route="/items/{n}", method="GET")
        assert route["requests"] == N

        scrape = _get(tmp_path, "/v1/metrics")
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(scrape.text)}
        served = [
            s
            for s in families["http_server_request_duration_seconds"].samples
            if s.name.endswith("_count") and s.labels["shoal_service"] == "store"
        ]
        assert sum(s.value for s in served) == N
        assert sum(s.value for s in served if s.labels["http_response_status_code"] == "500") == (
            FAILING
        )
        assert {s.labels["shoal_instance"] for s in served} == {"store-1", "store-2"}
        assert {s.labels["shoal_caller"] for s in served} == {"front"}  # proven by mTLS
        ready = families["shoal_instance_ready"].samples
        assert {s.labels["shoal_instance"] for s in ready} >= {"store-1", "store-2", "front-1"}

        cli = subprocess.run(
            [*SHOAL, "stat", "-C", str(tmp_path), "--window", "600", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        by_cli = {r["service"]: r for r in json.loads(cli.stdout)["services"]}
        assert by_cli["store"]["requests"] == N

        top = subprocess.run(
            [*SHOAL, "top", "-C", str(tmp_path), "--window", "600", "--count", "1"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert top.returncode == 0, top.stderr
        assert "store" in top.stdout
        assert "75.00%" in top.stdout
