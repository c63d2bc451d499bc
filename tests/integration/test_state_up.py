"""``shoal.state()`` under `shoal up`: each service's own store, on the backend shoal.yaml names."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from procs import APPS
from test_up import running, shoal_cmd

from servers import POSTGRES_DSN, drop_postgres_app, new_app, require_postgres
from shoal.state import StateTarget, open_state

pytestmark = pytest.mark.integration


def call(app_dir: Path, service: str, path: str, method: str = "GET") -> dict[str, object]:
    result = shoal_cmd("call", service, path, "-X", method, "-C", str(app_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    body = result.stdout.strip().splitlines()[-1]
    data: dict[str, object] = json.loads(body)
    return data


def test_each_service_counts_in_its_own_store_on_its_own_backend(tmp_path: Path) -> None:
    asyncio.run(require_postgres())
    app = new_app()
    shutil.copy(APPS / "counter.py", tmp_path / "counter.py")
    (tmp_path / "shoal.yaml").write_text(
        f"app: {app}\n"
        "services:\n"
        "  ledger:\n"
        "    asgi: counter:app\n"
        "    replicas: 2\n"
        f"    state: {{backend: postgres, url: '{POSTGRES_DSN}'}}\n"
        "  notes:\n"
        "    asgi: counter:app\n"
    )
    try:
        with running(tmp_path):
            for n in range(1, 7):  # spread over both replicas by the balancer
                answer = call(tmp_path, "ledger", "/incr/hits", "POST")
                assert answer == {"key": "hits", "value": n, "backend": "postgres"}
            assert call(tmp_path, "notes", "/incr/hits", "POST")["value"] == 1
            assert call(tmp_path, "notes", "/incr/hits", "POST")["backend"] == "sqlite"
            assert call(tmp_path, "ledger", "/get/hits") == {"key": "hits", "value": 6}
            log = (tmp_path / ".shoal" / "logs" / "ledger.log").read_text()
            assert {"serving ledger/ledger-1", "serving ledger/ledger-2"} <= set(
                re.findall(r"serving ledger/ledger-\d", log)
            )  # both replicas, one count

        async def stored() -> object:
            store = await open_state(StateTarget(app, "ledger", tmp_path, "postgres", POSTGRES_DSN))
            try:
                return await store.get("hits")
            finally:
                await store.aclose()

        assert asyncio.run(stored()) == 6  # in PostgreSQL, namespaced by app and service
        db = sqlite3.connect(tmp_path / ".shoal" / "state" / "notes.db")
        try:
            assert db.execute("SELECT value FROM state WHERE key = 'hits'").fetchone() == ("2",)
        finally:
            db.close()
        assert not (tmp_path / ".shoal" / "state" / "ledger.db").exists()
    finally:
        asyncio.run(drop_postgres_app(app))
