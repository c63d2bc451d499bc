"""`shoal dashboard [-C DIR]`: open the running app's dashboard with a one-time link."""

from __future__ import annotations

import json
import os
import sys
import webbrowser
from pathlib import Path
from typing import Annotated

import httpx
import typer

from shoal.cli._app import app, run_guarded, stdout
from shoal.exceptions import ShoalError

__all__ = ["dashboard", "dashboard_link", "dashboard_link_async"]

_TICKET = "/v1/dashboard/ticket"


@app.command()
def dashboard(
    directory: Annotated[str, typer.Option("--dir", "-C", help="The app's directory.")] = ".",
    no_open: Annotated[
        bool, typer.Option("--no-open", help="Print the link instead of opening a browser.")
    ] = False,
) -> None:
    """Open the dashboard of the app running from DIR (the link works once, for 2 minutes)."""

    def body() -> int:
        url = dashboard_link(Path(directory))
        if not no_open and _has_display() and webbrowser.open(url):
            stdout.print(f"opened the dashboard in a browser; if it did not show, open:\n{url}")
        else:
            stdout.print(f"dashboard (a one-time link, valid for 2 minutes):\n{url}")
        return 0

    run_guarded(body)


def dashboard_link(directory: Path) -> str:
    """A one-time login link to the dashboard of the app running in ``directory``."""
    from shoal.control._state import ControlClient

    with ControlClient(directory) as control:
        answer = control.request("POST", _TICKET)
    if not isinstance(answer, dict) or "url" not in answer:
        raise ShoalError(
            f"the app in {directory} did not give a dashboard link; "
            "is it run by an older shoal? Restart it with `shoal down` and `shoal up`"
        )
    return str(answer["url"])


async def dashboard_link_async(directory: Path) -> str | None:
    """The same from inside the supervisor's own event loop (``shoal up``); None if none."""
    from shoal.control._state import read_control

    info = read_control(directory)
    if info is None:
        return None
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=5.0) as http:
            response = await http.post(
                str(info["url"]) + _TICKET, headers={"authorization": f"Bearer {info['token']}"}
            )
        url = response.json().get("url") if response.status_code == 200 else None
    except (httpx.HTTPError, json.JSONDecodeError, AttributeError):
        return None
    return str(url) if url else None


def _has_display() -> bool:
    """A browser can show up: a desktop session, or macOS and Windows (always)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
