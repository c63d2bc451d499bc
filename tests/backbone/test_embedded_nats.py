"""The embedded NATS server: start, credentials, restart on its port, and each failure."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from pathlib import Path

import nats
import pytest

from shoal.backbone import EmbeddedNats
from shoal.exceptions import BackboneError


async def test_starts_on_loopback_with_private_credentials(nats_server: EmbeddedNats) -> None:
    state = nats_server.state_dir
    for name in ("nats.conf", "nats.creds.json", "nats.json"):
        assert stat.S_IMODE(os.stat(state / name).st_mode) == 0o600, name
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert nats_server.host == "127.0.0.1"
    info = json.loads((state / "nats.json").read_text())
    assert info["pid"] == nats_server.pid
    nc = await nats.connect(info["url"])
    try:
        account = await nc.jetstream().account_info()
        assert account.limits is not None
    finally:
        await nc.close()


async def test_wrong_credentials_are_refused(nats_server: EmbeddedNats) -> None:
    # Spoken at the protocol level: nats-py leaks its socket after an auth failure.
    reader, writer = await asyncio.open_connection("127.0.0.1", nats_server.port)
    try:
        assert (await reader.readline()).startswith(b"INFO ")
        writer.write(b'CONNECT {"user":"shoal","pass":"wrong","verbose":false}\r\nPING\r\n')
        await writer.drain()
        reply = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    assert reply.startswith(b"-ERR 'Authorization Violation'"), reply


async def test_restart_keeps_port_and_credentials(nats_server: EmbeddedNats) -> None:
    url = nats_server.url
    nats_server.kill()
    with pytest.raises(BackboneError, match="exited with code"):
        nats_server.check()
    await nats_server.start()
    assert nats_server.url == url


async def test_stop_leaves_nothing_running_or_listening(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path)
    await server.start()
    pid, port = server.pid, server.port
    await server.stop()
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port or 0)) != 0
    assert not (tmp_path / ".shoal" / "nats.json").exists()


async def test_pinned_port_in_use_is_explained(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        server = EmbeddedNats(tmp_path, port=port)
        with pytest.raises(BackboneError, match=f"127.0.0.1:{port}: the port is in use"):
            await server.start()
    assert not server.running()


async def test_missing_binary_is_explained(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path, binary=tmp_path / "no-such-nats-server")
    with pytest.raises(BackboneError, match=r"cannot run .*no-such-nats-server"):
        await server.start()


async def test_server_that_dies_at_start_shows_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "nats-server"
    fake.write_text("#!/bin/sh\necho 'nats-server: configuration is broken' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = EmbeddedNats(tmp_path, binary=fake)
    with pytest.raises(
        BackboneError, match=r"(?s)exited at start with code 3.*configuration is broken"
    ):
        await server.start()
