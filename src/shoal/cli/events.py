"""``shoal events`` and ``shoal events replay``: streams, consumers, dead letters."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from shoal.cli._app import DirOpt, app, run_guarded, stdout
from shoal.cli.ops import _control

__all__ = ["events", "replay"]

events = typer.Typer(
    name="events",
    help="Event streams, consumers and dead letters; `shoal events replay` sends dead "
    "letters back.",
    invoke_without_command=True,
)
app.add_typer(events)


def _print(value: Any) -> None:
    stdout.print(json.dumps(value, indent=2), markup=False, highlight=False)


@events.callback()
def show(
    ctx: typer.Context,
    directory: DirOpt = ".",
    as_json: Annotated[bool, typer.Option("--json", help="JSON, for scripts.")] = False,
) -> None:
    """Streams (messages, bytes), consumers per service and topic, dead letters."""
    if ctx.invoked_subcommand is not None:
        return

    def body() -> int:
        with _control(directory) as control:
            info: dict[str, Any] = control.request("GET", "/v1/events")
        if as_json:
            _print(info)
            return 0
        streams = Table(box=None, pad_edge=False, title="streams", title_justify="left")
        for key in ("stream", "messages", "bytes", "consumers"):
            streams.add_column(key, justify="left" if key == "stream" else "right")
        for s in info["streams"]:
            streams.add_row(
                s["name"] if s["exists"] else f"{s['name']} (missing)",
                str(s["messages"]), str(s["bytes"]), str(s["consumers"]),
            )  # fmt: skip
        stdout.print(streams)
        consumers = Table(box=None, pad_edge=False, title="consumers", title_justify="left")
        for key in ("service", "topic", "pending", "ack pending", "redelivered"):
            consumers.add_column(key, justify="left" if key in ("service", "topic") else "right")
        for c in info["consumers"]:
            consumers.add_row(
                c["service"], c["topic"], str(c["pending"]), str(c["ack_pending"]),
                str(c["redelivered"]),
            )  # fmt: skip
        stdout.print(consumers if info["consumers"] else "consumers: none")
        dead = info["dead_letters"]
        stdout.print(f"dead letters: {dead['count']}", markup=False)
        for d in dead["recent"]:
            stdout.print(
                f"  {d['id']}  {d['service']} <- {d['topic']} (from {d['source']}), "
                f"{d['deliveries']} deliveries, {d['failed_at']}: {d['error']}",
                markup=False,
            )
        if dead["count"]:
            stdout.print("replay with `shoal events replay ID...` or `--all`", markup=False)
        return 0

    run_guarded(body)


@events.command()
def replay(
    ids: Annotated[
        list[str] | None, typer.Argument(metavar="[ID]...", help="Event ids to replay.")
    ] = None,
    service: Annotated[str | None, typer.Option(help="Only this subscriber's.")] = None,
    topic: Annotated[str | None, typer.Option(help="Only this topic's.")] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Every dead letter (of --service/--topic).")
    ] = False,
    directory: DirOpt = ".",
    as_json: Annotated[bool, typer.Option("--json", help="JSON, for scripts.")] = False,
) -> None:
    """Send dead letters back to the subscriber they failed in; remove them from the DLQ."""

    def body() -> int:
        request = {"service": service, "topic": topic, "ids": ids or [], "all": replay_all}
        with _control(directory) as control:
            result: dict[str, Any] = control.request("POST", "/v1/events/replay", request)
        if as_json:
            _print(result)
            return 0
        replayed = result["replayed"]
        for d in replayed:
            stdout.print(f"replayed {d['id']} to {d['service']} ({d['topic']})", markup=False)
        stdout.print(f"{len(replayed)} dead letter(s) replayed", markup=False)
        return 0

    run_guarded(body)
