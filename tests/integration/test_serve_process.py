"""`shoal serve` as a real process: errors users make, and a graceful drain."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from procs import APPS, SHOAL, ServeProcess, serve_env

from shoal.backbone import EmbeddedNats
from shoal.registry import Discovery

pytestmark = pytest.mark.integration


def run_serve(args: list[str], nats: EmbeddedNats) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHOAL, "serve", *args],
        env=serve_env(nats.url),
        cwd=APPS,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nothere.main:app", "cannot import 'nothere.main:app': no module named 'nothere' under"),
        ("echo:nope", "cannot import 'echo:nope': module 'echo' has no attribute 'nope'"),
        (
            "broken:app",
            "module 'broken' imports 'not_a_real_dependency_xyz', which is not installed",
        ),
        ("echo", "'echo' is not an import path of the form MODULE:APP"),
    ],
)
def test_bad_import_path_exits_non_zero_with_the_reason(
    nats_server: EmbeddedNats, target: str, message: str
) -> None:
    result = run_serve([target], nats_server)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_port_in_use_exits_non_zero_with_the_reason(nats_server: EmbeddedNats) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        result = run_serve(["echo:app", "--port", str(port)], nats_server)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_unreachable_backbone_is_explained(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = serve_env(f"nats://127.0.0.1:{port}")
    result = subprocess.run(
        [*SHOAL, "serve", "echo:app"], env=env, cwd=APPS, capture_output=True, text=True,
        timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot reach NATS at nats://127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


async def test_sigterm_deregisters_first_finishes_in_flight_and_exits_zero(
    nats_server: EmbeddedNats, itest_view: Discovery, tmp_path: Path
) -> None:
    discovery = itest_view
    proc = ServeProcess(
        ["echo:app"], serve_env(nats_server.url, SHOAL_SERVICE="echo"), tmp_path / "s.log"
    )
    try:
        await discovery.wait_for(lambda c: len(c.ready("echo")) == 1, timeout=20)
        record = discovery.ready("echo")[0]
        async with httpx.AsyncClient(base_url=f"http://{record.address}") as http:
            in_flight = asyncio.create_task(http.get("/slow/1.0"))
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            await asyncio.to_thread(lambda: proc.proc.send_signal(15))
            await discovery.wait_for(lambda c: not c.instances("echo"), timeout=2)
            deregistered_after = time.monotonic() - t0
            response = await in_flight
        assert response.status_code == 200
        assert response.headers["shoal-instance"] == record.instance
        assert deregistered_after < 0.5
        assert await asyncio.to_thread(proc.proc.wait, 15) == 0
    finally:
        proc.stop()


async def test_sigterm_with_the_backbone_gone_still_exits_zero_promptly(
    nats_server: EmbeddedNats, itest_view: Discovery, tmp_path: Path
) -> None:
    discovery = itest_view
    env = serve_env(nats_server.url, SHOAL_SERVICE="echo")
    proc = ServeProcess(["echo:app"], env, tmp_path / "s.log")
    try:
        await discovery.wait_for(lambda c: len(c.ready("echo")) == 1, timeout=20)
        nats_server.kill()
        await asyncio.sleep(1.0)  # heartbeats are failing now
        t0 = time.monotonic()
        proc.proc.send_signal(15)
        code = await asyncio.to_thread(proc.proc.wait, 20)
        assert code == 0, proc.output()
        assert time.monotonic() - t0 < 10.0
    finally:
        proc.stop()
