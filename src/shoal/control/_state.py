"""Where a running app's control API is: ``DIR/.shoal/control.json`` (mode 0600), and a client."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from shoal._statefiles import read_state, write_private
from shoal.exceptions import ShoalError

__all__ = ["CONTROL_FILE", "ControlClient", "pid_alive", "read_control", "write_control"]

CONTROL_FILE = "control.json"


def write_control(state_dir: Path, info: dict[str, Any]) -> None:
    write_private(state_dir / CONTROL_FILE, json.dumps(info))


def read_control(directory: Path) -> dict[str, Any] | None:
    path = directory / ".shoal" / CONTROL_FILE
    return read_state(path, advice="delete it if no app is running")


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs. A zombie (exited, not yet reaped by its parent) has stopped."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state letter follows the parenthesised command name
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


class ControlClient:
    """Talks to the control API of the app in ``directory`` (synchronously, for the CLI)."""

    def __init__(self, directory: Path, *, timeout: float = 10.0) -> None:
        self.directory = directory
        info = read_control(directory)
        if info is None or not pid_alive(int(info.get("pid", 0))):
            raise ShoalError(
                f"no app is running in {directory} (no live supervisor in .shoal/control.json); "
                f"start it with `shoal up {directory}`"
            )
        self.info = info
        self._http = httpx.Client(
            base_url=str(info["url"]),
            headers={"authorization": f"Bearer {info['token']}"},
            timeout=timeout,
            trust_env=False,
        )

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ShoalError(
                f"the control API of the app in {self.directory} at {self.info['url']} did not "
                f"answer ({exc}); is the supervisor (pid {self.info.get('pid')}) still running?"
            ) from exc
        data = response.json() if response.content else None
        if response.status_code >= 400:
            if not isinstance(data, dict):
                raise ShoalError(response.text)
            # an error may list its problems (an invalid manifest): one line each
            problems = [str(p) for p in data.get("problems", [])]
            raise ShoalError("\n".join([str(data.get("error")), *problems]))
        return data

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
