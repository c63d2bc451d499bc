"""The typer application and the error boundary every command runs inside."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from shoal.exceptions import ShoalError

app = typer.Typer(
    name="shoal",
    help="shoal: a microservices platform for Python. Run `shoal COMMAND --help` for details.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

DirOpt = Annotated[str, typer.Option("--dir", "-C", help="The app's directory.")]
"""The ``--dir``/``-C`` option of every command that talks to a running app."""

_state: dict[str, bool] = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks on errors."),
) -> None:
    _state["debug"] = debug


def debug_enabled() -> bool:
    return _state["debug"]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` to stderr and return the Exit to raise."""
    stderr.print(message, markup=False)
    return typer.Exit(code)


def run_guarded(fn: Callable[[], int | None]) -> None:
    """Run a command body: a ShoalError becomes its message and exit 1, no traceback."""
    try:
        code = fn()
    except ShoalError as exc:
        if debug_enabled():
            raise
        raise fail(f"error: {exc}") from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if code:
        raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except ShoalError as exc:  # raised outside run_guarded
        if _state["debug"]:
            raise
        stderr.print(f"error: {exc}", markup=False)
        sys.exit(1)
