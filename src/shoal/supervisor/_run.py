"""Run an app in this process until told to stop: supervisor + control API + signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any

import uvicorn

from shoal.control._api import ControlAPI
from shoal.control._state import CONTROL_FILE, pid_alive, read_control, write_control
from shoal.exceptions import ShoalError
from shoal.manifest import Manifest
from shoal.runtime._serve import bind_socket
from shoal.supervisor._logs import ConsoleWriter
from shoal.supervisor._supervisor import Supervisor, gateway_port

__all__ = ["check_not_running", "run_app"]

log = logging.getLogger("shoal.supervisor")


def check_not_running(manifest: Manifest) -> None:
    info = read_control(manifest.directory)
    if info and pid_alive(int(info.get("pid", 0))):
        raise ShoalError(
            f"app {info.get('app', manifest.app)!r} in {manifest.directory} is already running "
            f"(supervisor pid {info['pid']}, control API {info.get('url')}); "
            f"stop it with `shoal down {manifest.directory}`"
        )


class _Quiet(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


async def run_app(
    manifest: Manifest,
    *,
    console: ConsoleWriter | None = None,
    on_started: Callable[[Supervisor, dict[str, str]], Coroutine[Any, Any, None]] | None = None,
) -> int:
    """Start everything, serve the control API, stop in order on a signal or `shoal down`."""
    check_not_running(manifest)
    supervisor = Supervisor(manifest, console=console)
    stopping = asyncio.Event()
    force = False

    def on_signal(signum: int) -> None:
        nonlocal force
        if stopping.is_set():
            log.warning("second %s: stopping at once", signal.Signals(signum).name)
            force = True
            supervisor.changed.set()
            return
        stopping.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    sock = bind_socket("127.0.0.1", 0)
    control_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    urls = {"control": control_url, "nats": ""}
    if manifest.gateway is not None:
        scheme = "http" if manifest.gateway.tls is None else "https"
        urls["gateway"] = f"{scheme}://127.0.0.1:{gateway_port(manifest)}"
    token = secrets.token_urlsafe(32)
    api = ControlAPI(supervisor, token, stopping.set, urls)
    config = uvicorn.Config(
        api, loop="none", http="httptools", ws="none", lifespan="off", log_level="warning",
        access_log=False,
    )  # fmt: skip
    server = _Quiet(config)
    server_task: asyncio.Task[None] | None = None
    try:
        await supervisor.start()
        urls["nats"] = supervisor.nats_display_url
        server_task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no started event
            await asyncio.sleep(0.01)
        write_control(
            supervisor.state_dir,
            {"app": manifest.app, "url": control_url, "token": token, "pid": os.getpid(),
             "started_at": time.time(), **{k: v for k, v in urls.items() if k != "control"}},
        )  # fmt: skip
        if on_started is not None:
            started: asyncio.Task[None] = asyncio.create_task(on_started(supervisor, urls))
            await asyncio.wait({started, asyncio.create_task(stopping.wait())},
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if started.done() and started.exception() is not None:
                raise started.exception()  # type: ignore[misc]
        await stopping.wait()
        return 0
    finally:
        with contextlib.suppress(OSError):
            (supervisor.state_dir / CONTROL_FILE).unlink()
        server.should_exit = True  # nothing needs the control API now: close it meanwhile
        stop = asyncio.create_task(supervisor.stop())
        while not stop.done():
            await asyncio.wait({stop}, timeout=0.1)
            if force and not stop.done():
                stop.cancel()
                await asyncio.wait({stop}, timeout=1.0)
                await supervisor.stop(force=True)
        if server_task is not None:
            await server_task
        sock.close()
