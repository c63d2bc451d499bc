"""shoal: a microservices platform for Python.

The names a service author imports. Everything else lives in subpackages
(``shoal.registry``, ``shoal.backbone``, ``shoal.testing``, ...).
"""

from __future__ import annotations

from shoal.config import config as config
from shoal.config import on_config_change as on_config_change
from shoal.config import secret as secret
from shoal.events import Event as Event
from shoal.events import publish as publish
from shoal.events import subscribe as subscribe
from shoal.exceptions import AppImportError as AppImportError
from shoal.exceptions import BackboneError as BackboneError
from shoal.exceptions import BreakerOpenError as BreakerOpenError
from shoal.exceptions import BudgetExhaustedError as BudgetExhaustedError
from shoal.exceptions import CallTimeoutError as CallTimeoutError
from shoal.exceptions import ConcurrencyError as ConcurrencyError
from shoal.exceptions import ConfigError as ConfigError
from shoal.exceptions import DeadlineExceededError as DeadlineExceededError
from shoal.exceptions import EndpointsUnreachableError as EndpointsUnreachableError
from shoal.exceptions import EventsError as EventsError
from shoal.exceptions import ManifestError as ManifestError
from shoal.exceptions import NoEndpointsError as NoEndpointsError
from shoal.exceptions import OverloadedError as OverloadedError
from shoal.exceptions import PortInUseError as PortInUseError
from shoal.exceptions import PublishError as PublishError
from shoal.exceptions import RegistryError as RegistryError
from shoal.exceptions import SagaError as SagaError
from shoal.exceptions import ServeError as ServeError
from shoal.exceptions import ShoalError as ShoalError
from shoal.exceptions import StateError as StateError
from shoal.exceptions import TransportError as TransportError
from shoal.exceptions import UpstreamError as UpstreamError
from shoal.manifest import Manifest as Manifest
from shoal.manifest import load_manifest as load_manifest
from shoal.mesh import client as client
from shoal.mesh import deadline as deadline
from shoal.saga import Saga as Saga
from shoal.saga import SagaContext as SagaContext
from shoal.saga import SagaOutcome as SagaOutcome
from shoal.saga import Step as Step
from shoal.state._current import (
    state as state,  # shoal.state() (the subpackage: from shoal.state import ...)
)

__version__ = "0.1.0.dev0"

__all__ = [
    "AppImportError",
    "BackboneError",
    "BreakerOpenError",
    "BudgetExhaustedError",
    "CallTimeoutError",
    "ConcurrencyError",
    "ConfigError",
    "DeadlineExceededError",
    "EndpointsUnreachableError",
    "Event",
    "EventsError",
    "Manifest",
    "ManifestError",
    "NoEndpointsError",
    "OverloadedError",
    "PortInUseError",
    "PublishError",
    "RegistryError",
    "Saga",
    "SagaContext",
    "SagaError",
    "SagaOutcome",
    "ServeError",
    "ShoalError",
    "StateError",
    "Step",
    "TransportError",
    "UpstreamError",
    "__version__",
    "client",
    "config",
    "deadline",
    "load_manifest",
    "publish",
    "on_config_change",
    "secret",
    "state",
    "subscribe",
]
