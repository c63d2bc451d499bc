"""An app module whose import fails inside, as a user's typo would."""

from __future__ import annotations

import not_a_real_dependency_xyz  # type: ignore[import-not-found]  # noqa: F401

app = None
