"""`shoal up` end to end: real supervisor, real NATS, real instances, real commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from procs import APPS, SHOAL

import shoal

pytestmark = pytest.mark.integration

MANIFEST = """\
app: uptest
services:
  echo:
    asgi: echo:app
    replicas: 2
  files:
    command: ["{python}", "-m", "http.server", "$PORT", "--bind", "127.0.0.1"]
"""


def shoal_cmd(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    if "SHOAL_GATEWAY_PORT" in os.environ:
        env["SHOAL_GATEWAY_PORT"] = os.environ["SHOAL_GATEWAY_PORT"]
    return subprocess.run(
        [*SHOAL, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def ps(app_dir: Path) -> list[dict[str, Any]]:
    result = shoal_cmd("ps", str(app_dir), "--json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


@contextlib.contextmanager
def running(app_dir: Path) -> Iterator[Path]:
    """`shoal up --detach` now, `shoal down` (and a kill by pid, if need be) after."""
    result = shoal_cmd("up", str(app_dir), "--detach")
    pids: set[int] = set()
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield app_dir
    finally:
        control = app_dir / ".shoal" / "control.json"
        if control.exists():
            supervisor = json.loads(control.read_text())["pid"]
            with contextlib.suppress(Exception):
                pids = {r["pid"] for r in ps(app_dir) if r["pid"]} | {supervisor}
            shoal_cmd("down", str(app_dir))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    shutil.copy(APPS / "echo.py", tmp_path / "echo.py")
    (tmp_path / "shoal.yaml").write_text(MANIFEST.format(python=sys.executable))
    return tmp_path


def nats_url(app_dir: Path) -> str:
    return str(json.loads((app_dir / ".shoal" / "nats.json").read_text())["url"])


async def kill_and_wait_for_restart(app_dir: Path, instance: str) -> float:
    """SIGKILL ``instance``; seconds until the supervisor has it ready again (10 s at most)."""
    victim = next(r for r in ps(app_dir) if r["instance"] == instance)
    os.kill(victim["pid"], signal.SIGKILL)
    killed = time.monotonic()
    while True:
        await asyncio.sleep(0.2)
        row = next(r for r in ps(app_dir) if r["instance"] == instance)
        if row["restarts"] == victim["restarts"] + 1 and row["state"] == "ready":
            return time.monotonic() - killed
        assert time.monotonic() - killed < 10, row


async def call_stream(
    app_dir: Path, stop: asyncio.Event, seen: Counter[str], failures: list[str]
) -> None:
    async with shoal.client(nats_url=nats_url(app_dir), app="uptest") as http:
        for _ in range(20_000):
            if stop.is_set():
                return
            try:
                response = await http.get("http://echo/x")
                seen[response.headers.get("shoal-instance", "?")] += 1
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
            except Exception as exc:  # any failure is the finding, whatever its type
                failures.append(repr(exc))
            await asyncio.sleep(0.005)


def test_up_ps_kill_scale_and_down(app_dir: Path) -> None:
    with running(app_dir):
        rows = ps(app_dir)
        assert sorted(r["instance"] for r in rows) == ["echo-1", "echo-2", "files-1"]
        assert all(r["state"] == "ready" and r["health"] == "ready" for r in rows), rows
        assert set(rows[0]) >= {"service", "instance", "version", "state", "health", "address",
                                "pid", "restarts", "uptime"}  # fmt: skip
        ports = {int(r["address"].rsplit(":", 1)[1]) for r in rows}
        files = shoal_cmd("call", "files", "/", "-C", str(app_dir))
        assert files.returncode == 0, files.stdout + files.stderr
        assert "200 OK" in files.stdout

        # SIGKILL one instance: restarted and ready within 5 s; calls never fail meanwhile.
        async def kill_one() -> tuple[float, list[str]]:
            seen: Counter[str] = Counter()
            failures: list[str] = []
            stop = asyncio.Event()
            calls = asyncio.create_task(call_stream(app_dir, stop, seen, failures))
            await asyncio.sleep(0.5)
            back = await kill_and_wait_for_restart(app_dir, "echo-1")
            stop.set()
            await calls
            return back, failures

        back, failures = asyncio.run(kill_one())
        assert failures == []
        assert back < 5.0

        assert shoal_cmd("scale", "echo=3", "-C", str(app_dir)).returncode == 0
        deadline = time.monotonic() + 20
        while len([r for r in ps(app_dir) if r["service"] == "echo" and r["state"] == "ready"]) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert shoal_cmd("scale", "echo=1", "-C", str(app_dir)).returncode == 0
        assert [r["instance"] for r in ps(app_dir) if r["service"] == "echo"] == ["echo-1"]
        pids = {r["pid"] for r in ps(app_dir)}
        result = shoal_cmd("down", str(app_dir))
        assert result.returncode == 0, result.stderr
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for port in ports:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listening"
    assert not (app_dir / ".shoal" / "control.json").exists()


def test_rolling_restart_under_a_constant_stream_fails_no_request(app_dir: Path) -> None:
    with running(app_dir):

        async def roll() -> tuple[Counter[str], list[str]]:
            seen: Counter[str] = Counter()
            failures: list[str] = []
            stop = asyncio.Event()
            calls = asyncio.create_task(call_stream(app_dir, stop, seen, failures))
            await asyncio.sleep(0.5)
            result = await asyncio.to_thread(shoal_cmd, "restart", "echo", "-C", str(app_dir))
            assert result.returncode == 0, result.stdout + result.stderr
            for _ in range(100):  # until both new instances have answered, 5 s at most
                if {"echo-3", "echo-4"} <= set(seen):
                    break
                await asyncio.sleep(0.05)
            stop.set()
            await calls
            return seen, failures

        seen, failures = asyncio.run(roll())
        assert failures == [], (failures, seen)
        assert {"echo-1", "echo-2"} <= set(seen), seen
        assert {"echo-3", "echo-4"} <= set(seen), seen
        assert sorted(r["instance"] for r in ps(app_dir) if r["service"] == "echo") == [
            "echo-3",
            "echo-4",
        ]


def test_second_up_of_a_running_app_says_so(app_dir: Path) -> None:
    with running(app_dir):
        again = shoal_cmd("up", str(app_dir), "--detach")
        assert again.returncode == 1
        assert "is already running" in again.stderr
        assert f"shoal down {app_dir}" in again.stderr


def test_service_whose_import_fails_is_named_and_shown_as_crash_loop(app_dir: Path) -> None:
    shutil.copy(APPS / "broken.py", app_dir / "broken.py")
    manifest = app_dir / "shoal.yaml"
    manifest.write_text(manifest.read_text() + "  broken:\n    asgi: broken:app\n")
    result = shoal_cmd("up", str(app_dir), "--detach", "--timeout", "30")
    try:
        assert result.returncode == 1
        assert "broken/broken-1: crash-loop" in result.stderr
        assert "not_a_real_dependency_xyz" in result.stderr
        assert "Traceback" not in result.stderr
        rows = {r["instance"]: r for r in ps(app_dir)}
        assert rows["broken-1"]["state"] == "crash-loop"
        assert rows["echo-1"]["state"] == "ready"  # the rest keeps running
    finally:
        shoal_cmd("down", str(app_dir))


def test_bad_manifest_prints_the_validate_errors_and_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "shoal.yaml").write_text(
        "app: x\nservices:\n  a:\n    asgi: a:app\n    replcas: 2\n"
    )
    up = shoal_cmd("up", str(tmp_path), "--detach")
    validate = shoal_cmd("validate", str(tmp_path))
    assert up.returncode == 1
    assert up.stderr == validate.stderr
    assert "replcas: unknown key (did you mean 'replicas'?)" in up.stderr
    assert not (tmp_path / ".shoal").exists()


SHOP = Path(__file__).parents[2] / "examples" / "shop"


def test_demo_through_the_gateway_survives_a_killed_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_dir = tmp_path / "shop"
    shutil.copytree(SHOP, app_dir, ignore=shutil.ignore_patterns(".shoal", "__pycache__"))
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    gateway_port = port.getsockname()[1]
    port.close()
    monkeypatch.setenv("SHOAL_GATEWAY_PORT", str(gateway_port))
    with running(app_dir):
        rows = ps(app_dir)
        assert {r["service"] for r in rows} == {
            "catalog",
            "inventory",
            "payments",
            "orders",
            "gateway",
        }
        assert all(r["state"] == "ready" for r in rows), rows
        base = f"http://127.0.0.1:{gateway_port}"
        with httpx.Client(base_url=base, trust_env=False, timeout=10) as http:
            assert http.get("/api/catalog/products").status_code == 200
            assert http.get("/api/inventory/stock").status_code == 200
            order = http.post("/api/orders", json={"product_id": "tee", "quantity": 1})
            assert order.status_code in (200, 201), order.text
            assert http.get(f"/api/orders/{order.json()['id']}").status_code == 200
            missing = http.get("/nowhere")
            assert missing.status_code == 404
            assert missing.headers["shoal-reason"] == "no-route"

        async def kill_catalog() -> tuple[list[str], float]:
            failures: list[str] = []
            stop = asyncio.Event()

            async def stream() -> None:
                async with httpx.AsyncClient(base_url=base, trust_env=False) as http:
                    for _ in range(20_000):
                        if stop.is_set():
                            return
                        response = await http.get("/api/catalog/products")
                        if response.status_code != 200:
                            failures.append(f"{response.status_code} {response.text[:200]}")
                        await asyncio.sleep(0.005)

            calls = asyncio.create_task(stream())
            await asyncio.sleep(0.5)
            back = await kill_and_wait_for_restart(app_dir, "catalog-1")
            stop.set()
            await calls
            return failures, back

        failures, back = asyncio.run(kill_catalog())
        assert failures == []
        assert back < 5.0
