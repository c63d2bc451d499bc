"""Fixtures shared by every test: an embedded NATS server on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shoal.backbone import EmbeddedNats


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
