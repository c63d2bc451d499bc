"""Traffic rules under `shoal up`: header routing to a version, live timeout and fault changes,
explained by `shoal call --explain` and by the gateway's `shoal-reason`."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import httpx
import pytest
from procs import APPS
from test_up import running, shoal_cmd

pytestmark = pytest.mark.integration

MANIFEST = """\
app: traffic
services:
  greeter:
    asgi: echo:app
    traffic:
      split: {{v1: 100, v2: 0}}
      match:
        - headers: {{x-canary: "1"}}
          version: v2
{extra}
  greeter-v2:
    asgi: echo:app
    service: greeter
    version: v2
gateway:
  port: {port}
  routes:
    - {{prefix: /greet, service: greeter, strip_prefix: true}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write(app_dir: Path, port: int, extra: str = "") -> None:
    (app_dir / "shoal.yaml").write_text(MANIFEST.format(port=port, extra=extra))


def apply(app_dir: Path) -> None:
    """`shoal apply` (the supervisor's file watch may have applied the edit first)."""
    result = shoal_cmd("apply", str(app_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "applied: greeter" in result.stdout or "no policy changed" in result.stdout


def call(app_dir: Path, *args: str) -> tuple[int, str]:
    result = shoal_cmd("call", "greeter", *args, "--explain", "-C", str(app_dir))
    return result.returncode, result.stdout + result.stderr


def test_canary_header_live_timeout_and_injected_fault(tmp_path: Path) -> None:
    shutil.copy(APPS / "echo.py", tmp_path / "echo.py")
    port = free_port()
    write(tmp_path, port)
    with running(tmp_path), httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
        code, out = call(tmp_path, "/hi", "-H", "x-canary: 1")
        assert code == 0, out
        assert "greeter-v2-1 /hi" in out
        assert "header match (x-canary: 1)" in out
        code, out = call(tmp_path, "/hi")
        assert code == 0, out
        assert "greeter-1 /hi" in out

        write(tmp_path, port, "    timeout: 300ms")
        apply(tmp_path)
        started = time.perf_counter()
        response = http.get("/greet/slow/3")
        waited = time.perf_counter() - started
        assert response.status_code == 504, response.text
        assert response.headers["shoal-reason"] == "timeout"
        assert waited < 1.5
        code, out = call(tmp_path, "/slow/3")
        assert code == 1
        assert "timed out" in out
        assert "no answer within its timeout of 0.3s" in out

        write(tmp_path, port, "      faults: {abort: {percent: 100, status: 503}}")
        apply(tmp_path)
        response = http.get("/greet/hi")
        assert response.status_code == 503
        assert response.headers["shoal-reason"] == "fault-injected"
        code, out = call(tmp_path, "/hi")
        assert code == 1
        assert "abort 503" in out
        assert "fault-injected" in out
