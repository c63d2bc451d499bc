"""Starting and stopping `shoal serve` processes for integration tests, by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

APPS = Path(__file__).parent / "apps"
SHOAL = [sys.executable, "-m", "shoal"]


class ServeProcess:
    """One `shoal serve` child; its output goes to a log file the test can read."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path = APPS) -> None:
        self.log = log
        self._fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*SHOAL, "serve", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self._fh.flush()
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.terminate(timeout=10)
        with contextlib.suppress(Exception):
            self.kill()
        self._fh.close()


def serve_env(nats_url: str, *, app: str = "itest", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    # A bare NATS with no supervisor has no CA: these instances serve plaintext.
    env.update(
        {
            "SHOAL_NATS_URL": nats_url,
            "SHOAL_APP": app,
            "SHOAL_APP_DIR": str(APPS),
            "SHOAL_TLS": "off",
        }
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def serving(
    count: int, nats_url: str, tmp: Path, *, service: str = "echo", **extra: str
) -> Iterator[list[ServeProcess]]:
    procs: list[ServeProcess] = []
    try:
        for i in range(count):
            env = serve_env(
                nats_url, SHOAL_SERVICE=service, SHOAL_INSTANCE=f"{service}-{i}", **extra
            )
            procs.append(ServeProcess(["echo:app"], env, tmp / f"{service}-{i}.log"))
        yield procs
    finally:
        for proc in procs:
            proc.stop()
