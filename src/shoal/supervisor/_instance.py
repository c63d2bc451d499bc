"""One instance under supervision: spawn it, pump its output, restart it when it dies.

ASGI instances run `shoal serve` and register themselves once ready. Command
instances get ``$PORT``; the supervisor probes that port and registers them on
their behalf (plaintext for now; a sidecar comes later).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from shoal._net import accepts
from shoal.exceptions import RegistryError, ShoalError
from shoal.registry._records import InstanceRecord
from shoal.runtime._bootstrap import BOOTSTRAP_FD_ENV
from shoal.runtime._inbound import InstanceStatus
from shoal.runtime._registration import Registration
from shoal.supervisor._backoff import Backoff
from shoal.supervisor._logs import LogSink
from shoal.types import RegistryBackend

__all__ = ["InstancePlan", "SupervisedInstance"]


@dataclasses.dataclass(frozen=True)
class InstancePlan:
    """How to run one instance."""

    app: str
    service: str
    """The mesh service it registers as."""
    instance: str
    version: str
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path
    port: int | None = None
    """For command services: the ``$PORT`` the program must listen on."""
    registry_ttl: float = 2.5
    entry: str = ""
    """The manifest entry it runs (its log file's name); ``service`` if not given."""
    sidecar: tuple[tuple[str, ...], dict[str, str]] | None = None
    """For command services under mTLS: the argv and environment of the sidecar that
    registers the instance and forwards to ``port`` (see ``shoal.sidecar``)."""

    def __post_init__(self) -> None:
        if not self.entry:
            object.__setattr__(self, "entry", self.service)


def asgi_argv(target: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "shoal", "serve", target)


class SupervisedInstance:
    def __init__(
        self,
        plan: InstancePlan,
        logs: LogSink,
        registry: RegistryBackend,
        *,
        on_change: Callable[[], None] = lambda: None,
        on_output: Callable[[str, str, str], str] = lambda _service, _instance, line: line,
        stop_timeout: float = 15.0,
        bootstrap: Callable[[], bytes] | None = None,
    ) -> None:
        self.plan = plan
        self.logs = logs
        self.registry = registry
        self.on_change = on_change
        self.on_output = on_output
        """(service, instance, line) -> the line as shown: each line the processes write."""
        self.stop_timeout = stop_timeout
        self.bootstrap = bootstrap
        """Secrets for each spawn (a fresh bootstrap token, NATS credentials), sent through a
        pipe the child inherits: never in its argv or environment, so never in `ps`."""
        self.backoff = Backoff()
        self.state = "starting"  # starting | running | backoff | crash-loop | stopping | stopped
        self.restarts = 0
        self.pid: int | None = None
        self.started_at: float | None = None
        self.last_exit: int | None = None
        self.ready_by_probe = False
        self._proc: asyncio.subprocess.Process | None = None
        self._sidecar: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.plan.instance

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"instance {self.name}")

    async def stop(self, *, force: bool = False) -> None:
        """SIGTERM (the instance drains itself), SIGKILL after ``stop_timeout``."""
        self._stopping.set()
        self.state = "stopping"
        self.on_change()
        # The sidecar first: it deregisters and drains before the program goes away.
        for proc in (self._sidecar, self._proc):
            if proc is not None:
                await _terminate(proc, 0.5 if force else self.stop_timeout, force=force)
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=5.0)
        self.state = "stopped"
        self.on_change()

    # -- the life loop -------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            began = time.monotonic()
            code = await self._run_once()
            self.last_exit = code
            if self._stopping.is_set():
                return
            delay = self.backoff.after_exit(time.monotonic() - began)
            self.restarts += 1
            self.state = "crash-loop" if self.backoff.crash_looping else "backoff"
            self.logs.line(
                self.plan.entry,
                self.name,
                f"[shoal] exited with code {code}; restarting in {delay:.0f} s",
            )
            self.on_change()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _start(
        self, argv: tuple[str, ...], env: dict[str, str], secrets: bytes | None
    ) -> asyncio.subprocess.Process | None:
        """Spawn one process (its secrets through a pipe); None, logged, if it cannot start."""
        env = {**env, "PYTHONUNBUFFERED": "1"}
        secret_fd: int | None = None
        try:
            if secrets is not None:
                secret_fd = _secret_pipe(secrets)
                env[BOOTSTRAP_FD_ENV] = str(secret_fd)
            return await asyncio.create_subprocess_exec(
                *argv,
                cwd=self.plan.cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                pass_fds=() if secret_fd is None else (secret_fd,),
            )
        except (OSError, ShoalError) as exc:
            self.logs.line(self.plan.entry, self.name, f"[shoal] cannot start {argv[0]}: {exc}")
            return None
        finally:
            if secret_fd is not None:
                os.close(secret_fd)

    async def _run_once(self) -> int:
        plan = self.plan
        secrets = self.bootstrap() if self.bootstrap is not None else None
        proc = await self._start(plan.argv, plan.env, None if plan.sidecar else secrets)
        if proc is None:
            return 127
        self._proc = proc
        self.pid = proc.pid
        self.started_at = time.time()
        if self.state not in ("crash-loop",):
            self.state = "running"
        self.on_change()
        sidecar = None
        if plan.sidecar is not None:
            sidecar = self._sidecar = await self._start(*plan.sidecar, secrets)
            if sidecar is None:
                await _terminate(proc, self.stop_timeout)
                return 127
        probe = (
            asyncio.create_task(self._probe_and_register())
            if plan.port and plan.sidecar is None
            else None
        )
        main = asyncio.create_task(self._pump_and_wait(proc))
        side = asyncio.create_task(self._pump_and_wait(sidecar, "sidecar | ")) if sidecar else None
        try:
            await asyncio.wait(
                {main} if side is None else {main, side}, return_when=asyncio.FIRST_COMPLETED
            )
            if not main.done():  # the sidecar died: the pair restarts together
                self.logs.line(plan.entry, self.name, "[shoal] the sidecar exited; restarting both")
                await _terminate(proc, self.stop_timeout)
            return await main
        finally:
            if sidecar is not None:
                await _terminate(sidecar, self.stop_timeout)
            if side is not None:
                await asyncio.wait({side}, timeout=3.0)
            if probe is not None:
                probe.cancel()
                await asyncio.wait({probe}, timeout=3.0)
            self.ready_by_probe = False
            self.pid = None
            self._sidecar = None

    async def _pump_and_wait(self, proc: asyncio.subprocess.Process, prefix: str = "") -> int:
        await self._pump(proc, prefix)
        return await proc.wait()

    async def _pump(self, proc: asyncio.subprocess.Process, prefix: str = "") -> None:
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except ValueError:  # a line longer than the stream limit: take what is there
                raw = await proc.stdout.read(65536)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip()
            shown = self.on_output(self.plan.service, self.name, line)
            for part in shown.split("\n"):  # a structured line may show a traceback
                self.logs.line(self.plan.entry, self.name, prefix + part)

    async def _probe_and_register(self) -> None:
        """Command services: wait until $PORT accepts, then register on their behalf."""
        port = self.plan.port
        assert port is not None
        while not await accepts("127.0.0.1", port):  # noqa: ASYNC110 - polling a port
            await asyncio.sleep(0.1)
        record = InstanceRecord(
            app=self.plan.app,
            service=self.plan.service,
            instance=self.name,
            version=self.plan.version,
            host="127.0.0.1",
            port=port,
            started_at=time.time(),
            pid=self.pid,
            ttl=self.plan.registry_ttl,
            labels={"kind": "command"},
        )
        registration = Registration(
            self.registry, InstanceStatus(record), self.plan.registry_ttl / 3
        )
        with contextlib.suppress(RegistryError):  # the heartbeat retries
            await registration.register()
        self.ready_by_probe = True
        self.on_change()
        try:
            await asyncio.Event().wait()  # until cancelled when the process exits
        finally:
            await registration.deregister()


async def _terminate(
    proc: asyncio.subprocess.Process, timeout: float, *, force: bool = False
) -> None:
    """SIGTERM (SIGKILL if ``force``), then SIGKILL after ``timeout``; returns once it is gone."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL if force else signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def _secret_pipe(data: bytes) -> int:
    """The read end of a pipe that holds ``data`` (a few KiB at most: it fits the buffer)."""
    read, write = os.pipe()
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(write, view) :]
    except OSError:
        os.close(read)
        raise
    finally:
        os.close(write)
    return read


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env() -> dict[str, str]:
    """The supervisor's environment without shoal's own variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
