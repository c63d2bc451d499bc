"""The ``shoal`` command line: one module per command, registered on one typer app."""

from __future__ import annotations

from shoal.cli import apply as _apply  # noqa: F401  (registers the command)
from shoal.cli import backbone as _backbone  # noqa: F401  (registers the command)
from shoal.cli import config as _config  # noqa: F401  (registers the commands)
from shoal.cli import dashboard as _dashboard  # noqa: F401  (registers the command)
from shoal.cli import events as _events  # noqa: F401  (registers the command)
from shoal.cli import ops as _ops  # noqa: F401  (registers the command)
from shoal.cli import security as _security  # noqa: F401  (registers the command)
from shoal.cli import serve as _serve  # noqa: F401  (registers the command)
from shoal.cli import stat as _stat  # noqa: F401  (registers the command)
from shoal.cli import trace as _trace  # noqa: F401  (registers the command)
from shoal.cli import up as _up  # noqa: F401  (registers the command)
from shoal.cli import validate as _validate  # noqa: F401  (registers the command)
from shoal.cli._app import app as app
from shoal.cli._app import main as main

__all__ = ["app", "main"]
