"""The local orchestrator behind `shoal up`: spawning, readiness, restarts, scaling, rolling."""

from __future__ import annotations

from shoal.supervisor._run import run_app as run_app
from shoal.supervisor._supervisor import Supervisor as Supervisor

__all__ = ["Supervisor", "run_app"]
