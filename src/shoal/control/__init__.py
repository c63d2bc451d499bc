"""The control API of a running app, and the client the CLI uses."""

from __future__ import annotations

from shoal.control._state import ControlClient as ControlClient
from shoal.control._state import read_control as read_control

__all__ = ["ControlClient", "read_control"]
