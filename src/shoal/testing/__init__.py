"""Helpers for users' own tests: an in-memory registry and a manual clock."""

from __future__ import annotations

from shoal.registry._memory import MemoryRegistry as MemoryRegistry
from shoal.testing._clock import ManualClock as ManualClock

__all__ = ["ManualClock", "MemoryRegistry"]
