"""The small JSON files under ``DIR/.shoal/``: written owner-only and atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from shoal.exceptions import ShoalError

__all__ = ["read_state", "write_private"]


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_state(
    path: Path, *, error: type[ShoalError] = ShoalError, advice: str
) -> dict[str, Any] | None:
    """The JSON object in ``path``; None if there is no such file; ``error`` if it is unreadable."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise error(f"{path}: unreadable ({exc}); {advice}") from exc
    return data if isinstance(data, dict) else None
