"""``shoal config set|get|history|unset`` and ``shoal secret set|list|delete``: live settings."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from shoal.cli._app import DirOpt, app, fail, run_guarded, stderr, stdout

__all__ = ["config_app", "secret_app"]

config_app = typer.Typer(
    name="config",
    help="A service's live configuration: shoal.yaml's `config:` with overrides on top.",
    no_args_is_help=True,
)
secret_app = typer.Typer(
    name="secret",
    help="A service's secrets: encrypted with the app's key, readable by that service only.",
    no_args_is_help=True,
)
app.add_typer(config_app)
app.add_typer(secret_app)

ServiceArg = Annotated[
    str, typer.Argument(metavar="SERVICE", help="The service (as named in shoal.yaml).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON, for scripts.")]


def _request(directory: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    from shoal.control import ControlClient

    with ControlClient(Path(directory), timeout=30.0) as control:
        return control.request(method, path, body)


def _check_key(what: str, key: str) -> str:
    from shoal.config._layout import key_problem

    problem = key_problem(what, key)
    if problem:
        raise fail(f"error: {problem}", code=2)
    return key


def _path(*parts: str) -> str:
    return "/v1/" + "/".join(quote(p, safe="") for p in parts)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


@config_app.command("set")
def config_set(
    service: ServiceArg,
    assignments: Annotated[
        list[str],
        typer.Argument(
            metavar="KEY=VALUE...", help="VALUE is JSON if it parses (3, true, [1]), else text."
        ),
    ],
    directory: DirOpt = ".",
) -> None:
    """Override config values live; every instance of SERVICE sees them within milliseconds."""
    from shoal.config._layout import parse_assignment

    def body() -> int:
        values: dict[str, Any] = {}
        for text in assignments:
            try:
                key, value = parse_assignment(text)
            except ValueError as exc:
                raise fail(f"error: {exc}", code=2) from None
            values[key] = value
        result = _request(directory, "POST", _path("config", service, "values"), {"values": values})
        for key, revision in result["revisions"].items():
            stdout.print(
                f"{service}: {key} = {_json(values[key])} (revision {revision})", markup=False
            )
        return 0

    run_guarded(body)


@config_app.command("get")
def config_get(
    service: ServiceArg,
    key: Annotated[str | None, typer.Argument(help="Only this key.")] = None,
    as_json: JsonOpt = False,
    directory: DirOpt = ".",
) -> None:
    """Current values and where each comes from: `manifest` (shoal.yaml) or `override`."""

    def body() -> int:
        parts = ["config", service, "values"] + ([_check_key("config key", key)] if key else [])
        rows: dict[str, Any] = _request(directory, "GET", _path(*parts))
        if as_json:
            stdout.print(_json(rows), markup=False)
            return 0
        if not rows:
            stdout.print(f"{service} has no config", markup=False)
            return 0
        table = Table(box=None, pad_edge=False)
        for column in ("key", "value", "source"):
            table.add_column(column, overflow="fold")
        for name, row in rows.items():
            table.add_row(name, _json(row["value"]), row["source"])
        stdout.print(table)
        return 0

    run_guarded(body)


@config_app.command("history")
def config_history(
    service: ServiceArg,
    key: Annotated[str | None, typer.Argument(help="Only this key.")] = None,
    as_json: JsonOpt = False,
    directory: DirOpt = ".",
) -> None:
    """Every change kept (the last 64 a key): revision, time, key, source, operation, value."""

    def body() -> int:
        parts = ["config", service, "history"] + ([_check_key("config key", key)] if key else [])
        rows: list[dict[str, Any]] = _request(directory, "GET", _path(*parts))
        if as_json:
            stdout.print(_json(rows), markup=False)
            return 0
        table = Table(box=None, pad_edge=False)
        for column in ("revision", "time", "key", "source", "operation", "value"):
            table.add_column(column, justify="right" if column == "revision" else "left")
        for row in rows:
            value = "-" if row["operation"] == "unset" else _json(row["value"])
            table.add_row(
                str(row["revision"]), _when(row["time"]), row["key"], row["source"],
                row["operation"], value,
            )  # fmt: skip
        stdout.print(table)
        return 0

    run_guarded(body)


@config_app.command("unset")
def config_unset(
    service: ServiceArg,
    key: Annotated[str, typer.Argument(help="The key whose override to remove.")],
    directory: DirOpt = ".",
) -> None:
    """Remove a live override: the value from shoal.yaml applies again (if it has one)."""

    def body() -> int:
        path = _path("config", service, "values", _check_key("config key", key))
        result = _request(directory, "DELETE", path)
        if result["source"] is None:
            stdout.print(f"{service}: {key} removed (shoal.yaml has no value for it)", markup=False)
        else:
            shown = _json(result["value"])
            stdout.print(f"{service}: {key} = {shown} again (from shoal.yaml)", markup=False)
        return 0

    run_guarded(body)


def _read_secret(name: str) -> str:
    if sys.stdin.isatty():
        value: str = typer.prompt(f"value of {name}", hide_input=True, confirmation_prompt=True)
        return value
    text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text


@secret_app.command("set")
def secret_set(
    service: ServiceArg,
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="The secret's name. NAME=VALUE also works, but the value then lands in your "
            "shell history and in `ps` while the command runs: prefer the prompt or stdin.",
        ),
    ],
    directory: DirOpt = ".",
) -> None:
    """Store a secret for SERVICE, read from a hidden prompt or from stdin (never printed).

    Encrypted (AES-GCM) with a key derived from the app's key in DIR/.shoal/app.key;
    only SERVICE's instances can read it, with `shoal.secret(NAME)`.
    """

    def body() -> int:
        secret_name, sep, value = name.partition("=")
        _check_key("secret", secret_name)
        if sep:
            stderr.print("note: a value on the command line can be seen in shell history and ps")
        else:
            value = _read_secret(secret_name)
        result = _request(
            directory, "PUT", _path("secrets", service, secret_name), {"value": value}
        )
        stdout.print(
            f"{service}: secret {secret_name} stored (revision {result['revision']})", markup=False
        )
        return 0

    run_guarded(body)


@secret_app.command("list")
def secret_list(service: ServiceArg, as_json: JsonOpt = False, directory: DirOpt = ".") -> None:
    """The names of SERVICE's secrets and when each was set (never the values)."""

    def body() -> int:
        rows: list[dict[str, Any]] = _request(directory, "GET", _path("secrets", service))
        if as_json:
            stdout.print(_json(rows), markup=False)
            return 0
        if not rows:
            stdout.print(f"{service} has no secrets", markup=False)
        for row in rows:
            stdout.print(f"{row['name']}  {_when(row['time'])}", markup=False)
        return 0

    run_guarded(body)


@secret_app.command("delete")
def secret_delete(
    service: ServiceArg,
    name: Annotated[str, typer.Argument(help="The secret to delete.")],
    directory: DirOpt = ".",
) -> None:
    """Delete a secret and every earlier version of it."""

    def body() -> int:
        _request(directory, "DELETE", _path("secrets", service, _check_key("secret", name)))
        stdout.print(f"{service}: secret {name} deleted", markup=False)
        return 0

    run_guarded(body)
