"""What runs inside a service process: settings, serving, registration, heartbeat."""

from __future__ import annotations

from shoal.runtime._inbound import ADMIN_PREFIX as ADMIN_PREFIX
from shoal.runtime._inbound import INSTANCE_HEADER as INSTANCE_HEADER
from shoal.runtime._serve import run_instance as run_instance
from shoal.runtime._settings import RuntimeSettings as RuntimeSettings

__all__ = ["ADMIN_PREFIX", "INSTANCE_HEADER", "RuntimeSettings", "run_instance"]
