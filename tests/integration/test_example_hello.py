"""examples/hello runs as the README shows: instances by hand, a call across the mesh."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from procs import ServeProcess, serve_env

import shoal
from shoal.backbone import Backbone, EmbeddedNats, NatsRegistry
from shoal.registry import Discovery

pytestmark = pytest.mark.integration

HELLO = Path(__file__).parents[2] / "examples" / "hello"


async def test_frontend_reaches_both_greeters_through_the_mesh(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    procs = [
        ServeProcess(
            ["greeter:app" if i < 2 else "frontend:app"],
            serve_env(
                nats_server.url,
                app="hello",
                SHOAL_APP_DIR=str(HELLO),
                SHOAL_INSTANCE=f"{'greeter' if i < 2 else 'frontend'}-{i}",
            ),
            tmp_path / f"{i}.log",
            cwd=HELLO,
        )
        for i in range(3)
    ]
    backbone = await Backbone.connect(nats_server.url)
    discovery = Discovery(NatsRegistry(backbone, "hello"))
    try:
        await discovery.start()
        await discovery.wait_for(
            lambda c: len(c.ready("greeter")) == 2 and len(c.ready("frontend")) == 1, timeout=30
        )
        async with shoal.client(discovery=discovery) as http:
            replies = [(await http.get(f"http://frontend/hello/ada{i}")).json() for i in range(40)]
        assert replies[3] == {
            "greeting": "Hello, ada3!",
            "from": replies[3]["from"],
            "via": "frontend",
        }
        assert set(Counter(r["from"] for r in replies)) == {"greeter-0", "greeter-1"}
    finally:
        for proc in procs:
            proc.stop()
        await discovery.aclose()
        await backbone.aclose()
