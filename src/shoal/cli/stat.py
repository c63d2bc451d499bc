"""``shoal stat`` and ``shoal top``: golden metrics per service (and edge) in the terminal."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from shoal.cli._app import DirOpt, app, run_guarded, stdout
from shoal.cli.ops import _control

__all__ = ["stat", "stat_tables", "top"]

WindowOpt = Annotated[
    float, typer.Option("--window", "-w", min=1, max=900, help="Seconds to measure over.")
]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms" if value < 1000 else f"{value / 1000:.2f}s"


def _success(value: float | None) -> Text:
    if value is None:
        return Text("-")
    style = "green" if value >= 0.995 else "yellow" if value >= 0.95 else "red"
    return Text(f"{value * 100:.2f}%", style=style)


def stat_tables(stat: dict[str, Any], *, edges: bool = True) -> list[Table]:
    """The services table (like ``linkerd viz stat``) and, if asked, the edges table."""
    services = Table(box=None, pad_edge=False, title_justify="left")
    for column in ("service", "inst", "success", "rps", "p50", "p90", "p99", "inflight"):
        if column == "service":
            services.add_column(column.upper())
        else:
            services.add_column(column.upper(), justify="right")
    services.add_column("ERRORS")
    for row in stat["services"]:
        errors = ", ".join(f"{why} {n}" for why, n in row["errors"].items())
        services.add_row(
            row["service"],
            str(row["instances"]),
            _success(row["success"]),
            f"{row['rps']:.1f}",
            _ms(row["p50_ms"]),
            _ms(row["p90_ms"]),
            _ms(row["p99_ms"]),
            str(row["in_flight"]),
            Text(errors, style="red" if errors else ""),
        )
    tables = [services]
    if edges and stat["edges"]:
        table = Table(box=None, pad_edge=False)
        for column in ("from", "to", "success", "rps", "p99"):
            if column in ("from", "to"):
                table.add_column(column.upper())
            else:
                table.add_column(column.upper(), justify="right")
        for edge in stat["edges"]:
            table.add_row(
                edge["source"],
                edge["target"],
                _success(edge["success"]),
                f"{edge['rps']:.1f}",
                _ms(edge["p99_ms"]),
            )
        tables.append(table)
    return tables


def _fetch(directory: str, window: float) -> dict[str, Any]:
    with _control(directory) as control:
        found: dict[str, Any] = control.request("GET", f"/v1/stat?window={window:g}")
    return found


@app.command()
def stat(
    directory: DirOpt = ".",
    window: WindowOpt = 60,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Golden metrics of the running app: per service, and per edge (caller -> callee)."""

    def body() -> int:
        found = _fetch(directory, window)
        if as_json:
            stdout.print(json.dumps(found), markup=False)
            return 0
        stdout.print(f"last {found['window_s']:g}s", style="dim")
        for table in stat_tables(found):
            stdout.print(table)
            stdout.print()
        return 0

    run_guarded(body)


@app.command()
def top(
    directory: DirOpt = ".",
    window: WindowOpt = 10,
    interval: Annotated[
        float, typer.Option("--interval", "-i", min=0.2, help="Seconds between refreshes.")
    ] = 2.0,
    count: Annotated[
        int, typer.Option("--count", "-n", min=0, help="Refreshes before exiting (0: forever).")
    ] = 0,
) -> None:
    """A live table per service (success, rps, latency), refreshed until Ctrl-C."""

    def view() -> Group:
        found = _fetch(directory, window)
        stamp = time.strftime("%H:%M:%S")
        heading = Text(f"{stamp}  last {found['window_s']:g}s  (Ctrl-C quits)", style="dim")
        return Group(heading, *stat_tables(found))

    def body() -> int:
        shown = 0
        with Live(view(), console=stdout, auto_refresh=False) as live:
            try:
                while count == 0 or shown < count - 1:
                    time.sleep(interval)
                    live.update(view(), refresh=True)
                    shown += 1
            except KeyboardInterrupt:
                pass
        return 0

    run_guarded(body)
