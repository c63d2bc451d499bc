"""The names a service author imports are a promise: pin them."""

from __future__ import annotations

import shoal
import shoal.exceptions


def test_top_level_exports_are_pinned() -> None:
    assert sorted(shoal.__all__) == [
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
        "on_config_change",
        "publish",
        "secret",
        "state",
        "subscribe",
    ]
    for name in shoal.__all__:
        assert hasattr(shoal, name), name


def test_every_shoal_exception_derives_from_shoal_error() -> None:
    for name in shoal.exceptions.__all__:
        obj = getattr(shoal.exceptions, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, shoal.ShoalError), name


def test_mesh_errors_are_also_httpx_errors() -> None:
    import httpx

    assert issubclass(shoal.NoEndpointsError, httpx.ConnectError)
    assert issubclass(shoal.EndpointsUnreachableError, httpx.ConnectError)
    assert shoal.NoEndpointsError.reason == "no-endpoints"


def test_every_mesh_error_carries_a_reason_and_a_status() -> None:
    reasons = {}
    for name in shoal.exceptions.__all__:
        obj = getattr(shoal.exceptions, name)
        if isinstance(obj, type) and issubclass(obj, shoal.TransportError):
            assert 400 <= obj.status <= 599, name
            reasons[name] = obj.reason
    assert reasons == {
        "BreakerOpenError": "breaker-open",
        "BudgetExhaustedError": "budget-exhausted",
        "CallTimeoutError": "timeout",
        "DeadlineExceededError": "deadline-exceeded",
        "EndpointsUnreachableError": "endpoints-unreachable",
        "NoEndpointsError": "no-endpoints",
        "OverloadedError": "overloaded",
        "TransportError": "transport-error",
        "UpstreamError": "upstream-error",
    }
