"""Commands for a running app: `ps`, `scale`, `restart`, `call`, `logs`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from shoal.cli._app import DirOpt, app, fail, run_guarded, stdout

if TYPE_CHECKING:
    from shoal.mesh import Attempt

__all__ = ["call", "logs", "ps", "restart", "scale"]

PS_KEYS = (
    "service",
    "instance",
    "version",
    "state",
    "health",
    "address",
    "pid",
    "restarts",
    "uptime",
)


def _control(directory: str) -> Any:
    from shoal.control import ControlClient

    return ControlClient(Path(directory), timeout=120.0)


@app.command()
def ps(
    directory: Annotated[str, typer.Argument(metavar="[DIR]", help="The app's directory.")] = ".",
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list, for scripts.")] = False,
) -> None:
    """One row per instance: service, instance, version, state, health, address, pid, ..."""

    def body() -> int:
        with _control(directory) as control:
            rows: list[dict[str, Any]] = control.request("GET", "/v1/ps")
        if as_json:
            stdout.print(json.dumps([{k: r[k] for k in PS_KEYS} for r in rows], indent=2),
                         markup=False, highlight=False)  # fmt: skip
            return 0
        table = Table(box=None, pad_edge=False)
        for key in PS_KEYS:
            numeric = key in ("pid", "restarts", "uptime")
            table.add_column(
                key, justify="right" if numeric else "left", no_wrap=key in ("instance", "address")
            )
        for r in rows:
            colour = {"ready": "green", "crash-loop": "red", "backoff": "yellow"}.get(
                r["state"], ""
            )
            state = f"[{colour}]{r['state']}[/]" if colour else r["state"]
            table.add_row(
                r["service"], r["instance"], r["version"], state, r["health"], r["address"] or "-",
                str(r["pid"] or "-"), str(r["restarts"]), _uptime(r["uptime"]),
            )  # fmt: skip
        stdout.print(table)
        return 0

    run_guarded(body)


def _uptime(seconds: float) -> str:
    if not seconds:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


@app.command()
def scale(
    assignment: Annotated[str, typer.Argument(metavar="SERVICE=N", help="e.g. catalog=3")],
    directory: DirOpt = ".",
) -> None:
    """Change a service's replicas live; scaling down drains instances before stopping them."""

    def body() -> int:
        service, sep, count = assignment.partition("=")
        if not sep or not count.strip().isdigit():
            raise fail(f"expected SERVICE=N (e.g. catalog=3), got {assignment!r}", code=2)
        with _control(directory) as control:
            rows = control.request(
                "POST", "/v1/scale", {"service": service, "replicas": int(count)}
            )
        stdout.print(
            f"{service}: {len(rows)} instance(s): " + ", ".join(r["instance"] for r in rows)
        )
        return 0

    run_guarded(body)


@app.command()
def restart(
    service: Annotated[str, typer.Argument(help="The service to roll.")],
    directory: DirOpt = ".",
) -> None:
    """Rolling restart: start a new instance, wait until ready, drain an old one; repeat."""

    def body() -> int:
        started = time.monotonic()
        with _control(directory) as control:
            rows = control.request("POST", "/v1/restart", {"service": service})
        names = ", ".join(r["instance"] for r in rows)
        stdout.print(f"{service}: rolled in {time.monotonic() - started:.1f} s; now {names}")
        return 0

    run_guarded(body)


@app.command()
def call(
    service: Annotated[str, typer.Argument(help="Service name.")],
    path: Annotated[str, typer.Argument(help="Path, e.g. /items?limit=3")] = "/",
    method: Annotated[str, typer.Option("-X", "--request", help="HTTP method.")] = "GET",
    data: Annotated[str | None, typer.Option("-d", "--data", help="Request body.")] = None,
    header: Annotated[
        list[str] | None, typer.Option("-H", "--header", help="'Name: value', repeatable.")
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Print every attempt: where, how long, what next.")
    ] = False,
    directory: DirOpt = ".",
) -> None:
    """One request through the mesh; prints status, headers, body and which instance answered."""
    import asyncio

    import httpx

    import shoal
    from shoal.control._state import read_control

    def body() -> int:
        info = read_control(Path(directory))
        app_dir = Path(directory).resolve()
        if info is None:
            raise fail(f"no app is running in {directory}; start it with `shoal up {directory}`")
        headers = {}
        for item in header or []:
            name, sep, value = item.partition(":")
            if not sep:
                raise fail(f"a header is 'Name: value', got {item!r}", code=2)
            headers[name.strip()] = value.strip()

        async def go() -> httpx.Response:
            from shoal.backbone._server import read_connection_file

            nats = read_connection_file(app_dir)
            url = str(nats["url"]) if nats else None
            async with shoal.client(nats_url=url, app=str(info["app"])) as http:
                target = path if path.startswith("/") else "/" + path
                content = data.encode() if data is not None else None
                try:
                    response = await http.request(
                        method.upper(),
                        f"http://{service}{target}",
                        content=content,
                        headers=headers,
                    )
                except shoal.TransportError as exc:
                    if explain:
                        _print_attempts(exc.attempts)
                    raise
                await response.aread()
                return response

        response = asyncio.run(go())
        if explain:
            _print_attempts(response.extensions.get("shoal.attempts", []))
        answered = response.headers.get("shoal-instance") or response.extensions.get(
            "shoal.instance"
        )
        stdout.print(f"[bold]{response.status_code} {response.reason_phrase}[/]  from {answered}")
        for name, value in response.headers.items():
            stdout.print(f"[dim]{name}:[/] {value}", highlight=False)
        stdout.print()
        stdout.print(response.text, markup=False, highlight=False)
        return 0 if response.status_code < 400 else 1

    run_guarded(body)


def _print_attempts(attempts: list[Attempt]) -> None:
    for number, attempt in enumerate(attempts, 1):
        stdout.print(f"[cyan]{number:>2}[/] {attempt.describe()}", highlight=False)
    stdout.print()


@app.command()
def logs(
    service: Annotated[str | None, typer.Argument(help="Only this service.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    since: Annotated[
        str | None, typer.Option("--since", help="Only lines newer than e.g. 30s, 5m, 2h.")
    ] = None,
    level: Annotated[
        str | None,
        typer.Option("--level", help="Only this level and worse: debug, info, warning, error."),
    ] = None,
    grep: Annotated[
        str | None,
        typer.Option("--grep", metavar="TEXT", help="Only messages with TEXT (any case)."),
    ] = None,
    trace_id: Annotated[
        str | None, typer.Option("--trace", metavar="ID", help="Only lines of this trace.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON log record a line, for scripts.")
    ] = False,
    directory: DirOpt = ".",
) -> None:
    """Aggregated logs of the app's instances, from DIR/.shoal/ (up or down).

    Without --level, --grep, --trace or --json: every line as shown, from the files in
    DIR/.shoal/logs/ (SERVICE is a manifest entry). With them: the log records in
    DIR/.shoal/telemetry.db, oldest first (the newest 1000 that match; SERVICE is the
    mesh service, which version entries share).
    """
    from shoal.cli._logs import LogFilter, print_logs, print_records

    def body() -> int:
        if not (level or grep or trace_id or as_json):
            return print_logs(Path(directory), service, follow=follow, since=since)
        where = LogFilter(service, level=level, text=grep, trace_id=trace_id, since=since)
        return print_records(Path(directory), where, follow=follow, as_json=as_json)

    run_guarded(body)
