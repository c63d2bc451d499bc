"""What a benchmark prints about what it measured: the commit, and the hypervisor's share."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["cpu_steal", "source_state"]

HERE = Path(__file__).parent


def source_state() -> str:
    """The commit measured, and whether src/ had uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=HERE, capture_output=True, text=True
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
