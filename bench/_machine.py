"""Shared by the benchmarks: what they print about what they measured (the commit, the
hypervisor's share of the CPU), and stopping the processes they started."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["cpu_steal", "source_state", "stop_processes"]

HERE = Path(__file__).parent


def source_state() -> str:
    """The commit measured, and whether src/ had uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", ":/src"],
            cwd=HERE,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
    except OSError:
        return "unknown source state"
    return f"shoal at {commit}" + (
        f" + uncommitted: {', '.join(d[3:] for d in dirty)}" if dirty else ""
    )


def cpu_steal() -> tuple[int, int]:
    """(steal, total) CPU ticks of the machine so far: what the hypervisor took elsewhere."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[7], sum(fields)


def stop_processes(procs: Sequence[subprocess.Popen[Any]], *, wake: bool = False) -> None:
    """SIGTERM each process still running (SIGCONT first with ``wake``, for a frozen one),
    then wait up to 10 s each and SIGKILL what is left."""
    for proc in procs:
        if proc.poll() is None:
            if wake:
                proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
