"""`shoal backbone [DIR]`: run the app's embedded NATS in the foreground.

`shoal up` starts it for you; this is for running instances by hand with
`shoal serve`, which finds it through DIR/.shoal/nats.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import typer

from shoal.cli._app import app, run_guarded, stdout

__all__ = ["backbone"]


@app.command()
def backbone(
    directory: str = typer.Argument(".", metavar="[DIR]", help="The app's directory."),
    port: int | None = typer.Option(
        None, "--port", help="Port to listen on (default: a free one)."
    ),
) -> None:
    """Run the app's embedded NATS backbone until Ctrl-C (`shoal serve` finds it)."""
    from pathlib import Path

    from shoal.backbone import EmbeddedNats

    async def main() -> int:
        server = EmbeddedNats(Path(directory), port=port)
        await server.start()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        stdout.print(
            f"backbone ready: {server.display_url} (pid {server.pid}, data {server.state_dir})\n"
            f"`shoal serve` run in {server.app_dir} connects to it by itself; Ctrl-C stops it."
        )
        try:
            while not stopping.is_set():
                server.check()  # raises if the server died
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), 0.5)
        finally:
            await server.stop()
        stdout.print("backbone stopped")
        return 0

    run_guarded(lambda: asyncio.run(main()))
