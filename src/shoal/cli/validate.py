"""``shoal validate [DIR]``: check the manifest only, report every problem."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from shoal.cli._app import app, run_guarded, stderr, stdout
from shoal.exceptions import ManifestError, ManifestProblem
from shoal.manifest import Manifest, find_manifest, load_manifest

__all__ = ["validate"]


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _summary(manifest: Manifest) -> str:
    services = _plural(len(manifest.services), "service")
    instances = _plural(manifest.instances_total, "instance")
    return f"app {manifest.app!r}, {services}, {instances}"


def _problem_json(problem: ManifestProblem) -> dict[str, object]:
    positioned = problem.line > 0
    return {
        "path": problem.path,
        "line": problem.line if positioned else None,
        "column": problem.column if positioned else None,
        "field": problem.field,
        "message": problem.message,
    }


def _print(console_line: str, *, to_stderr: bool = False) -> None:
    console = stderr if to_stderr else stdout
    console.print(console_line, markup=False, emoji=False, highlight=False)


def _report_json(shown: str, manifest: Manifest | None, problems: list[ManifestProblem]) -> None:
    payload: dict[str, object] = {
        "valid": manifest is not None,
        "path": shown,
        "problems": [_problem_json(p) for p in problems],
    }
    if manifest is not None:
        payload |= {
            "app": manifest.app,
            "services": len(manifest.services),
            "instances": manifest.instances_total,
        }
    _print(json.dumps(payload, indent=2))


def load_or_report(directory: str, *, as_json: bool = False) -> Manifest | None:
    """Load the manifest, or print every problem (as `shoal validate` does) and return None."""
    shown = str(find_manifest(directory))
    try:
        return load_manifest(directory)
    except ManifestError as exc:
        if as_json:
            _report_json(shown, None, exc.problems)
        else:
            for problem in exc.problems:
                _print(str(problem), to_stderr=True)
            _print(f"{_plural(len(exc.problems), 'problem')} in {shown}", to_stderr=True)
        return None


def _check(directory: str, as_json: bool) -> int:
    shown = str(find_manifest(directory))
    manifest = load_or_report(directory, as_json=as_json)
    if manifest is None:
        return 1
    if as_json:
        _report_json(shown, manifest, [])
    else:
        _print(f"{shown}: valid ({_summary(manifest)})")
    return 0


@app.command()
def validate(
    directory: Annotated[
        str,
        typer.Argument(
            metavar="DIR",
            help="The app's directory (holding shoal.yaml), or the manifest file itself.",
            show_default=False,
        ),
    ] = ".",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON on stdout.")
    ] = False,
) -> None:
    """Check the manifest only: print every problem as FILE:LINE:COL: field: message."""
    run_guarded(lambda: _check(directory, as_json))
