"""``shoal trace [TRACE_ID]``: recent traces, or one as a waterfall in the terminal."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any
from urllib.parse import urlencode

import typer
from rich.table import Table
from rich.text import Text

from shoal.cli._app import DirOpt, app, fail, run_guarded, stdout
from shoal.cli.ops import _control

__all__ = ["trace", "waterfall"]

_BAR = 40


def _ms(ns: int) -> str:
    ms = ns / 1e6
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def waterfall(spans: list[dict[str, Any]], width: int = _BAR) -> list[Text]:
    """One line a span: depth-indented name, service, duration and a bar on the trace's time."""
    by_id = {s["span_id"]: s for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in sorted(spans, key=lambda s: s["start_ns"]):
        parent = span["parent_id"] if span["parent_id"] in by_id else None
        children.setdefault(parent, []).append(span)
    begin = min(s["start_ns"] for s in spans)
    total = max(max(s["end_ns"] for s in spans) - begin, 1)
    lines: list[Text] = []

    def walk(span: dict[str, Any], depth: int) -> None:
        offset = round((span["start_ns"] - begin) / total * width)
        length = max(1, round((span["end_ns"] - span["start_ns"]) / total * width))
        bar = " " * offset + "█" * min(length, width - offset)
        style = "red" if span["status"] == "error" else "cyan" if span["kind"] == "server" else ""
        label = f"{'  ' * depth}{span['name']}"
        attempt = span["attributes"].get("shoal.attempt")
        if attempt and attempt > 1:
            label += f" (attempt {attempt})"
        line = Text(f"{label[:48]:<48} {span['service'][:14]:<14} ")
        line.append(f"{_ms(span['end_ns'] - span['start_ns']):>10} ")
        line.append(f"{bar:<{width}}", style=style or None)
        if span["status"] == "error" and span.get("status_message"):
            line.append(f"  {span['status_message'][:60]}", style="red")
        lines.append(line)
        for child in children.get(span["span_id"], []):
            walk(child, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    return lines


@app.command()
def trace(
    trace_id: Annotated[
        str | None, typer.Argument(help="A trace id (or its first characters); none: list.")
    ] = None,
    directory: DirOpt = ".",
    service: Annotated[
        str | None, typer.Option("--service", "-s", help="Only traces through it.")
    ] = None,
    errors: Annotated[bool, typer.Option("--errors", help="Only traces with an error.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many traces to list.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Recent traces of the running app, or one of them as a waterfall."""

    def body() -> int:
        with _control(directory) as control:
            query = {"limit": str(limit if trace_id is None else 200)}
            if service:
                query["service"] = service
            if errors:
                query["errors"] = "1"
            listed: list[dict[str, Any]] = control.request("GET", "/v1/traces?" + urlencode(query))
            if trace_id is None:
                return _list(listed, as_json)
            wanted = trace_id.lower()
            found = [t["trace_id"] for t in listed if t["trace_id"].startswith(wanted)]
            full = found[0] if len(found) == 1 else wanted
            if len(found) > 1:
                raise fail(f"{trace_id!r} is the start of {len(found)} traces; give more of it")
            spans: list[dict[str, Any]] = control.request("GET", f"/v1/traces/{full}")
        if as_json:
            stdout.print(json.dumps(spans), markup=False)
            return 0
        begin = min(s["start_ns"] for s in spans)
        end = max(s["end_ns"] for s in spans)
        stdout.print(f"trace {full}: {len(spans)} spans, {_ms(end - begin)}", markup=False)
        for line in waterfall(spans):
            stdout.print(line, soft_wrap=True)
        return 0

    run_guarded(body)


def _list(traces: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        stdout.print(json.dumps(traces), markup=False)
        return 0
    if not traces:
        stdout.print("no traces yet: send the app a request", markup=False)
        return 0
    table = Table(box=None, pad_edge=False)
    for column in ("trace", "root", "duration", "spans", "errors", "services", "age"):
        table.add_column(column)
    now = time.time_ns()
    for t in traces:
        table.add_row(
            t["trace_id"][:12],
            f"{t['root_service']}: {t['root_name']}",
            f"{t['duration_ms']:.1f} ms",
            str(t["span_count"]),
            Text(str(t["error_count"]), style="red" if t["error_count"] else ""),
            ", ".join(t["services"]),
            f"{(now - t['start_ns']) / 1e9:.0f}s",
        )
    stdout.print(table)
    return 0
