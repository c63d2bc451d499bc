"""``shoal apply [DIR]``: apply the manifest's traffic policy to the running app, live."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from shoal.cli._app import app, run_guarded, stdout
from shoal.cli.validate import load_or_report

__all__ = ["apply"]


def _app_dir(directory: str) -> Path:
    given = Path(directory)
    return given if given.is_dir() else given.parent


def _report(result: dict[str, Any]) -> None:
    changed: list[str] = result["changed"]
    lines = [f"applied: {', '.join(changed)}" if changed else "no policy changed"]
    notes: list[str] = result["not_applied"]
    if notes:
        lines.append("not applied live (needs `shoal scale` or a restart):")
        lines.extend(f"  {note}" for note in notes)
    for line in lines:
        stdout.print(line, markup=False, highlight=False)


@app.command()
def apply(
    directory: Annotated[
        str,
        typer.Argument(
            metavar="[DIR]",
            help="The app's directory (holding shoal.yaml), or the manifest file itself.",
        ),
    ] = ".",
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"changed": [...], "not_applied": [...]}.')
    ] = False,
) -> None:
    """Validate shoal.yaml, then apply its traffic policy to the running app without restarts.

    Timeouts, retries, outlier ejection, limits, routes, traffic splits and each
    service's `config:` change live in every process. Other changes (replicas, new
    services, commands) are listed with the `shoal scale` or `shoal restart` that applies them.
    """
    from shoal.control import ControlClient

    if load_or_report(directory, as_json=as_json) is None:
        raise typer.Exit(1)

    def body() -> int:
        with ControlClient(_app_dir(directory), timeout=30.0) as control:
            result: dict[str, Any] = control.request("POST", "/v1/apply")
        if as_json:
            stdout.print(json.dumps(result, indent=2), markup=False, highlight=False)
        else:
            _report(result)
        return 0

    run_guarded(body)
