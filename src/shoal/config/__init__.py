"""Live configuration and secrets of a service (see ``_layout`` for how they are stored)."""

from __future__ import annotations

from shoal.config._api import config as config
from shoal.config._api import on_config_change as on_config_change
from shoal.config._api import secret as secret

__all__ = ["config", "on_config_change", "secret"]
