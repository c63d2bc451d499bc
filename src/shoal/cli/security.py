"""``shoal ca rotate``, ``shoal ca show`` and ``shoal check``: the app's certificate authority."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from shoal.cli._app import app, fail, run_guarded, stderr, stdout
from shoal.cli.validate import load_or_report

__all__ = ["ca", "check"]

ca = typer.Typer(
    name="ca",
    help="The app's certificate authority: show it, rotate its root.",
    no_args_is_help=True,
)
app.add_typer(ca)

_DIR = typer.Argument(metavar="[DIR]", help="The app's directory (holding shoal.yaml).")


def _app_dir(directory: str) -> Path:
    given = Path(directory)
    return given if given.is_dir() else given.parent


@ca.command("rotate")
def rotate(
    directory: Annotated[str, _DIR] = ".",
    as_json: Annotated[bool, typer.Option("--json", help="Print the steps as JSON.")] = False,
) -> None:
    """Roll the root CA of the running app, with no failed request.

    Every instance first trusts the old and the new root, then renews its
    certificate from the new intermediate, then the old root is dropped. Each
    step waits until every instance reports it has followed.
    """
    from shoal.control import ControlClient

    def body() -> int:
        with ControlClient(_app_dir(directory), timeout=300.0) as control:
            result: dict[str, Any] = control.request("POST", "/v1/ca/rotate")
        if as_json:
            stdout.print(json.dumps(result), markup=False)
            return 0
        for step in result["steps"]:
            stdout.print(f"{step['step']}: {step['seconds']:.2f} s", markup=False)
        stdout.print(
            f"rotated the root {result['old_root']} -> {result['new_root']} "
            f"in {result['seconds']:.2f} s (trust bundle {result['bundle']})",
            markup=False,
        )
        return 0

    run_guarded(body)


@ca.command("show")
def show(
    directory: Annotated[str, _DIR] = ".",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The running app's CA certificates, expiry, and certificates issued and refused."""
    from shoal.control import ControlClient

    def body() -> int:
        with ControlClient(_app_dir(directory)) as control:
            result: dict[str, Any] = control.request("GET", "/v1/ca")
        if as_json or not result.get("tls"):
            stdout.print(json.dumps(result), markup=False)
            return 0
        stdout.print(f"trust domain {result['trust_domain']}, bundle {result['bundle']}")
        for cert in result["certificates"]:
            stdout.print(
                f"  {cert['role']:<12} {cert['name']:<32} expires {cert['not_after']} "
                f"({cert['days_left']} days)  {cert['fingerprint']}",
                markup=False,
            )
        refused = ", ".join(f"{k} {v}" for k, v in result["refused"].items()) or "none"
        stdout.print(f"issued {result['issued']} certificates; refused: {refused}", markup=False)
        return 0

    run_guarded(body)


@app.command()
def check(
    directory: Annotated[str, _DIR] = ".",
    warn_days: Annotated[
        float, typer.Option("--warn-days", help="Warn when a CA certificate expires this soon.")
    ] = 30.0,
) -> None:
    """Check the app: its manifest, and its CA (warn 30 days before expiry, fail once expired)."""
    from shoal.control._ca import check_expiry

    if load_or_report(directory, as_json=False) is None:
        raise typer.Exit(1)
    found = check_expiry(_app_dir(directory).resolve(), warn_days=warn_days)
    for level, message in found:
        stderr.print(f"{level}: {message}", markup=False)
    if any(level == "error" for level, _ in found):
        raise fail("check failed", code=1)
    stdout.print("ok" + (" (with warnings)" if found else ""), markup=False)
