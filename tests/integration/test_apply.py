"""Traffic policy changed live under `shoal up`: by `shoal apply` and by editing shoal.yaml."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from procs import APPS
from test_up import nats_url, ps, running, shoal_cmd

from shoal.backbone import Backbone, NatsPolicies
from shoal.control import ControlClient
from shoal.exceptions import ShoalError

pytestmark = pytest.mark.integration

MANIFEST = """\
app: applytest
services:
  echo:
    asgi: echo:app
    timeout: {timeout}
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    shutil.copy(APPS / "echo.py", tmp_path / "echo.py")
    (tmp_path / "shoal.yaml").write_text(MANIFEST.format(timeout="9s"))
    return tmp_path


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def until_in_file(path: Path, text: str, timeout: float = 5.0) -> str:
    """The file's text once it contains ``text``; TimeoutError after ``timeout`` s."""
    async with asyncio.timeout(timeout):
        while True:
            content = read(path)
            if text in content:
                return content
            await asyncio.sleep(0.05)


async def until_timeout_is(policies: NatsPolicies, expected: float, wait: float = 5.0) -> None:
    """Until the watcher sees ``echo``'s timeout at ``expected`` (``wait`` s at most)."""
    async with asyncio.timeout(wait):
        while policies.get("echo").timeout != expected:
            await policies.wait_for_generation(policies.generation + 1, wait)


async def shoal(*args: str) -> tuple[int, str, str]:
    result = await asyncio.to_thread(shoal_cmd, *args)
    return result.returncode, result.stdout, result.stderr


async def test_apply_and_file_edits_change_the_policy_in_running_processes(
    app_dir: Path,
) -> None:
    manifest = app_dir / "shoal.yaml"
    shown = str(manifest)
    instance_log = app_dir / ".shoal" / "logs" / "echo.log"
    supervisor_log = app_dir / ".shoal" / "logs" / "shoal.log"
    with running(app_dir):
        backbone = await Backbone.connect(nats_url(app_dir))
        watcher = NatsPolicies(backbone, "applytest")
        try:
            await watcher.start()
            assert watcher.get("echo").timeout == 9.0  # published at `shoal up`

            # Same size, same mtime: invisible to the file watch, so `shoal apply` does it.
            before = os.stat(manifest)
            manifest.write_text(MANIFEST.format(timeout="2s"))
            os.utime(manifest, ns=(before.st_atime_ns, before.st_mtime_ns))
            code, out, err = await shoal("apply", str(app_dir))
            assert code == 0, out + err
            assert out.strip() == "applied: echo"
            await until_timeout_is(watcher, 2.0)
            # ... and the running instance's own process has it too.
            await until_in_file(instance_log, "shoal.policies: traffic policy updated: echo")
            await until_in_file(supervisor_log, "applied traffic policy: echo")

            # An invalid manifest: refused by `shoal apply`, the file watch and the API alike.
            manifest.write_text(MANIFEST.format(timeout="soon"))
            code, out, err = await shoal("apply", str(app_dir))
            assert code == 1
            assert err == (await shoal("validate", str(app_dir)))[2]
            assert f"{shown}:5:14: services.echo.timeout: expected a duration" in err
            log = await until_in_file(supervisor_log, "nothing applied")
            assert f"{shown}:5:14: services.echo.timeout:" in log
            with ControlClient(app_dir) as control, pytest.raises(ShoalError) as refused:
                control.request("POST", "/v1/apply")
            assert f"{shown}:5:14: services.echo.timeout:" in str(refused.value)
            assert watcher.get("echo").timeout == 2.0

            # A valid edit is applied by the file watch alone; replicas only reported.
            seen = watcher.generation
            manifest.write_text(MANIFEST.format(timeout="3s") + "    replicas: 2\n")
            await until_timeout_is(watcher, 3.0)
            assert watcher.generation == seen + 1
            log = await until_in_file(supervisor_log, "echo: replicas 1 -> 2")
            assert "run `shoal scale echo=2`" in log
            assert [r["instance"] for r in ps(app_dir)] == ["echo-1"]

            code, out, err = await shoal("apply", str(app_dir), "--json")
            assert code == 0, err
            assert json.loads(out) == {"changed": [], "not_applied": []}
        finally:
            await watcher.aclose()
            await backbone.aclose()


def test_apply_without_a_running_app_says_how_to_start_it(app_dir: Path) -> None:
    result = shoal_cmd("apply", str(app_dir))
    assert result.returncode == 1
    assert f"no app is running in {app_dir}" in result.stderr
    assert "shoal up" in result.stderr
    assert "Traceback" not in result.stderr
