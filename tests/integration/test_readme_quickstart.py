"""The README's quick-start demo command, run exactly as written in a fresh clone and venv."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]


def quickstart_command(marker: str) -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- quickstart:{marker} -->\n```bash\n(.+?)\n```", readme)
    assert match, f"README has no quickstart:{marker} block"
    return match.group(1)


def test_the_readme_test_command_is_what_ci_runs() -> None:
    assert quickstart_command("test") == "bash scripts/test.sh"
    assert "exec bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.timeout(600)
def test_the_readme_demo_command_installs_and_runs_the_shop(tmp_path: Path) -> None:
    clone = tmp_path / "shoal"
    shutil.copytree(
        ROOT, clone,
        ignore=shutil.ignore_patterns(".venv", ".git", ".shoal", "__pycache__", "*_cache"),
    )  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOAL_", "VIRTUAL_ENV"))}
    env["SHOAL_GATEWAY_PORT"] = str(port)  # a free port instead of the manifest's 8080
    log = open(tmp_path / "demo.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["bash", "-c", quickstart_command("demo")], cwd=clone, env=env, stdout=log,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 480
        answer = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/catalog/products", timeout=2)
                if answer.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        output = (tmp_path / "demo.log").read_text(errors="replace")
        assert answer is not None, output[-3000:]
        assert answer.status_code == 200, output[-3000:]
        assert "products" in answer.json()
        time.sleep(1.0)  # let the live view finish and print the URLs
        output = (tmp_path / "demo.log").read_text(errors="replace")
        assert f"gateway      http://127.0.0.1:{port}" in output
    finally:
        if proc.poll() is None:
            # Ctrl-C reaches the foreground process group: the shell and `shoal up`
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
    assert proc.returncode == 0, (tmp_path / "demo.log").read_text(errors="replace")[-3000:]
    assert not (clone / "examples" / "shop" / ".shoal" / "control.json").exists()
