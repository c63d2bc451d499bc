"""Fixtures shared by every test: an embedded NATS server on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shoal.backbone import Backbone, EmbeddedNats, NatsRegistry
from shoal.registry import Discovery, MemoryRegistry


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def itest_view(nats_server: EmbeddedNats) -> AsyncIterator[Discovery]:
    """A client's view of the registry of app "itest" (what integration tests serve)."""
    backbone = await Backbone.connect(nats_server.url)
    discovery = Discovery(NatsRegistry(backbone, "itest"))
    try:
        await discovery.start()
        yield discovery
    finally:
        await discovery.aclose()
        await backbone.aclose()


@pytest.fixture
async def discovery() -> AsyncIterator[tuple[MemoryRegistry, Discovery]]:
    """An in-memory registry and a discovery watching it."""
    memory = MemoryRegistry()
    found = Discovery(memory)
    await found.start()
    yield memory, found
    await found.aclose()
