"""`shoal serve MODULE:APP`: run one instance, as the supervisor and containers do."""

from __future__ import annotations

import logging

import typer

from shoal.cli._app import app, run_guarded

__all__ = ["serve"]


@app.command()
def serve(
    target: str = typer.Argument(..., metavar="MODULE:APP", help="Import path of the ASGI app."),
    port: int | None = typer.Option(None, "--port", "-p", help="Port (env SHOAL_PORT; 0 = free)."),
    host: str | None = typer.Option(None, "--host", help="Address (env SHOAL_HOST; 127.0.0.1)."),
    service: str | None = typer.Option(None, "--service", help="Service name (env SHOAL_SERVICE)."),
    app_name: str | None = typer.Option(None, "--app", help="App name (env SHOAL_APP)."),
    app_dir: str | None = typer.Option(
        None, "--app-dir", help="Directory put first on the import path (env SHOAL_APP_DIR; cwd)."
    ),
    drain_timeout: float | None = typer.Option(
        None,
        "--drain-timeout",
        help="Seconds to finish in-flight requests (env SHOAL_DRAIN_TIMEOUT; 10).",
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Run one instance of an ASGI app in the mesh: register, heartbeat, drain on SIGTERM."""
    from shoal.runtime._serve import run_instance
    from shoal.runtime._settings import RuntimeSettings

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per mesh call

    def body() -> int:
        settings = RuntimeSettings.from_env(
            target,
            port=port,
            host=host,
            service=service,
            app=app_name,
            app_dir=app_dir,
            drain_timeout=drain_timeout,
        )
        return run_instance(target, settings, log_level=log_level)

    run_guarded(body)
