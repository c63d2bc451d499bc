"""Versions under `shoal up`: a version entry's instances register as its service."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from procs import APPS
from test_up import nats_url, ps, running, shoal_cmd

from shoal.backbone import Backbone, NatsRegistry
from shoal.registry import Discovery

pytestmark = pytest.mark.integration

MANIFEST = """\
app: versions
services:
  greeter:
    asgi: echo:app
  greeter-v2:
    asgi: echo:app
    service: greeter
    version: v2
"""


async def registered_as_greeter(app_dir: Path) -> list[tuple[str, str, str]]:
    """(service, instance, version) of every ready instance of service ``greeter``."""
    backbone = await Backbone.connect(nats_url(app_dir))
    discovery = Discovery(NatsRegistry(backbone, "versions"))
    try:
        await discovery.start()
        await discovery.wait_for(lambda c: len(c.ready("greeter")) == 2, timeout=10)
        return sorted((r.service, r.instance, r.version) for r in discovery.ready("greeter"))
    finally:
        await discovery.aclose()
        await backbone.aclose()


def test_both_versions_register_as_one_service(tmp_path: Path) -> None:
    shutil.copy(APPS / "echo.py", tmp_path / "echo.py")
    (tmp_path / "shoal.yaml").write_text(MANIFEST)
    with running(tmp_path):
        rows = ps(tmp_path)
        # `shoal ps` keys rows by manifest entry; every instance is ready and has its address.
        assert sorted((r["service"], r["instance"], r["version"], r["state"]) for r in rows) == [
            ("greeter", "greeter-1", "v1", "ready"),
            ("greeter-v2", "greeter-v2-1", "v2", "ready"),
        ]
        assert all(r["address"] for r in rows), rows
        assert asyncio.run(registered_as_greeter(tmp_path)) == [
            ("greeter", "greeter-1", "v1"),
            ("greeter", "greeter-v2-1", "v2"),
        ]
        logs = shoal_cmd("logs", "greeter-v2", "-C", str(tmp_path))  # one file per entry
        assert logs.returncode == 0, logs.stderr
        assert "greeter-v2-1" in logs.stdout
        assert "greeter-1 " not in logs.stdout
