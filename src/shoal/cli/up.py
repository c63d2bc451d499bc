"""`shoal up [DIR]` and `shoal down [DIR]`: run a whole app locally with one command."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table
from rich.text import Text

from shoal.cli._app import app, fail, run_guarded, stderr, stdout
from shoal.cli.dashboard import dashboard_link, dashboard_link_async
from shoal.cli.validate import load_or_report

__all__ = ["down", "up"]

_COLOURS = [
    "cyan",
    "magenta",
    "green",
    "yellow",
    "blue",
    "bright_red",
    "bright_cyan",
    "bright_green",
]
DirArg = Annotated[str, typer.Argument(metavar="[DIR]", help="The app's directory.")]


@app.command()
def up(
    directory: DirArg = ".",
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Return once everything is ready.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for readiness with --detach.")
    ] = 60.0,
    supervise: Annotated[bool, typer.Option("--supervise", hidden=True)] = False,
) -> None:
    """Start the app described by DIR/shoal.yaml: NATS, control API, every replica, the gateway."""
    manifest = load_or_report(directory)
    if manifest is None:
        raise typer.Exit(1)
    from shoal.supervisor._run import check_not_running, run_app
    from shoal.supervisor._supervisor import check_gateway_port

    def body() -> int:
        check_not_running(manifest)
        check_gateway_port(manifest)
        if supervise:
            return _run(run_app(manifest))
        if detach:
            return _detach(Path(directory), timeout)
        return _run(_foreground(manifest))

    run_guarded(body)


def _run(main: object) -> int:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return int(runner.run(main))  # type: ignore[arg-type]


async def _foreground(manifest: object) -> int:
    from shoal.manifest import Manifest
    from shoal.supervisor._run import run_app
    from shoal.supervisor._supervisor import Supervisor

    assert isinstance(manifest, Manifest)
    colours: dict[str, str] = {}

    def console(instance: str, line: str) -> None:
        service = instance.rsplit("-", 1)[0]
        colour = colours.setdefault(service, _COLOURS[len(colours) % len(_COLOURS)])
        # one print per line: the live view refreshes from another thread
        stdout.print(Text.assemble((f"{instance:>14} | ", colour), line), highlight=False)

    async def started(sup: Supervisor, urls: dict[str, str]) -> None:
        with Live(_table(sup), console=stdout, refresh_per_second=8, transient=True) as live:
            deadline = time.monotonic() + 120
            while sup.not_ready() and time.monotonic() < deadline:
                live.update(_table(sup))
                await asyncio.sleep(0.1)
        stdout.print(_table(sup))
        pending = sup.not_ready()
        if pending:
            names = ", ".join(f"{i.name} ({i.state})" for i in pending)
            stderr.print(f"not ready: {names} — the rest keeps running; see `shoal ps`")
        stdout.print(_urls(urls, await dashboard_link_async(sup.directory)))
        stdout.print("[dim]Ctrl-C stops the app gracefully; a second Ctrl-C stops it at once.[/]")

    return await run_app(manifest, console=console, on_started=started)


def _table(sup: object) -> Table:
    from shoal.supervisor._supervisor import Supervisor

    assert isinstance(sup, Supervisor)
    table = Table(title=f"app {sup.app}", title_justify="left", box=None, pad_edge=False)
    for column in ("service", "instance", "state", "address", "pid", "restarts"):
        table.add_column(column)
    for row in sup.ps():
        state = row["state"]
        style = {"ready": "green", "crash-loop": "red", "backoff": "yellow"}.get(state, "")
        table.add_row(
            row["service"], row["instance"], f"[{style}]{state}[/]" if style else state,
            row["address"] or "-", str(row["pid"] or "-"), str(row["restarts"]),
        )  # fmt: skip
    return table


def _urls(urls: dict[str, str], dashboard: str | None = None) -> str:
    lines = []
    if urls.get("gateway"):
        lines.append(f"gateway      {urls['gateway']}")
    lines.append(f"control API  {urls['control']}")
    if dashboard:
        lines.append(f"dashboard    {dashboard}")
        lines.append("             (works once, for 2 minutes; `shoal dashboard` gives another)")
    return "\n".join(lines)


def _detach(directory: Path, timeout: float) -> int:
    from shoal.control._state import ControlClient, pid_alive, read_control

    state = directory / ".shoal"
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(state / "supervisor.log", "ab") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "shoal", "up", str(directory), "--supervise"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    with stdout.status(f"starting {directory} ..."):
        while True:
            info = read_control(directory)
            if info and int(info.get("pid", 0)) == daemon.pid:
                break
            if daemon.poll() is not None or time.monotonic() > deadline:
                tail = (state / "supervisor.log").read_text(errors="replace").splitlines()[-12:]
                raise fail("the supervisor did not start:\n" + "\n".join(tail))
            time.sleep(0.05)
        with ControlClient(directory) as control:
            while True:
                status = control.request("GET", "/v1/status")
                if status["ready"]:
                    break
                broken = [r for r in status["not_ready"] if r["state"] == "crash-loop"]
                if broken or time.monotonic() > deadline or not pid_alive(daemon.pid):
                    raise fail(_not_ready_report(directory, status["not_ready"], timeout))
                time.sleep(0.1)
    stdout.print(f"app {status['app']} is ready (supervisor pid {daemon.pid})")
    stdout.print(_urls(status, dashboard_link(directory)))
    return 0


def _not_ready_report(directory: Path, rows: list[dict[str, object]], timeout: float) -> str:
    lines = [f"app in {directory} is not ready:"]
    for row in rows:
        lines.append(
            f"  {row['service']}/{row['instance']}: {row['state']} (restarts {row['restarts']})"
        )
        for text in row.get("last_lines") or []:  # type: ignore[attr-defined]
            lines.append(f"      {text}")
    lines.append(
        f"the app keeps running; inspect with `shoal ps {directory}` and "
        f"`shoal logs`, stop it with `shoal down {directory}`"
    )
    return "\n".join(lines)


@app.command()
def down(directory: DirArg = ".") -> None:
    """Stop the app running from DIR gracefully: gateway, then services, then NATS."""
    from shoal.control._state import ControlClient, pid_alive

    def body() -> int:
        with ControlClient(Path(directory)) as control:
            pid = int(control.info["pid"])
            control.request("POST", "/v1/down")
        deadline = time.monotonic() + 60
        with stdout.status("stopping ..."):
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
        if pid_alive(pid):
            raise fail(f"the supervisor (pid {pid}) is still stopping after 60 s")
        stdout.print(f"stopped the app in {directory}")
        return 0

    run_guarded(body)
