"""A valid manifest loads into models with defaults applied and knows where it lives."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

import shoal.manifest
from shoal.manifest import (
    MANIFEST_FILENAME,
    GatewaySpec,
    Manifest,
    RouteSpec,
    ServiceSpec,
    find_manifest,
    load_manifest,
)

SHOP = """\
# The demo shop.
app: shop
services:
  catalog:
    asgi: catalog.main:app
    replicas: 2
    version: v2
    env: {LOG_LEVEL: info, WORKERS: 4, RATIO: 0.5, DEBUG: false}
  orders:
    asgi: orders.main:app
  legacy-billing:
    command: node server.js --mode 'strict mode'
    port: 9000
  worker:
    command: ["python", "-m", "worker"]
    replicas: 0
gateway:
  routes:
    - {prefix: /api/catalog, service: catalog}
    - prefix: /billing
      service: legacy-billing
      strip_prefix: true
"""


def write(directory: Path, text: str) -> Path:
    path = directory / MANIFEST_FILENAME
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_public_names() -> None:
    assert sorted(shoal.manifest.__all__) == [
        "DEFAULT_POLICY",
        "GatewaySpec",
        "MANIFEST_FILENAME",
        "Manifest",
        "RouteSpec",
        "ServicePolicy",
        "ServiceSpec",
        "StateSpec",
        "find_manifest",
        "load_manifest",
        "parse_duration",
    ]
    assert MANIFEST_FILENAME == "shoal.yaml"


def test_valid_manifest_loads_with_defaults_applied(tmp_path: Path) -> None:
    write(tmp_path, SHOP)
    manifest = load_manifest(tmp_path)

    assert manifest.app == "shop"
    assert list(manifest.services) == ["catalog", "orders", "legacy-billing", "worker"]
    assert manifest.services["catalog"] == ServiceSpec(
        asgi="catalog.main:app",
        replicas=2,
        version="v2",
        env={"LOG_LEVEL": "info", "WORKERS": "4", "RATIO": "0.5", "DEBUG": "false"},
    )
    orders = manifest.services["orders"]
    assert (orders.kind, orders.replicas, orders.version, orders.env) == ("asgi", 1, "v1", {})
    assert (orders.command, orders.port) == (None, None)
    billing = manifest.services["legacy-billing"]
    assert billing.kind == "command"
    assert billing.command == ("node", "server.js", "--mode", "strict mode")
    assert billing.port == 9000
    assert manifest.services["worker"].command == ("python", "-m", "worker")
    assert manifest.gateway == GatewaySpec(
        port=8080,
        routes=(
            RouteSpec(prefix="/api/catalog", service="catalog", strip_prefix=False),
            RouteSpec(prefix="/billing", service="legacy-billing", strip_prefix=True),
        ),
    )
    assert manifest.instances_total == 4


def test_manifest_knows_its_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, SHOP)
    monkeypatch.chdir(tmp_path)
    for given in (".", "shoal.yaml", tmp_path, tmp_path / "shoal.yaml"):
        manifest = load_manifest(given)
        assert manifest.path == tmp_path / "shoal.yaml"
        assert manifest.path.is_absolute()
        assert manifest.directory == tmp_path


def test_a_manifest_file_may_have_another_name(tmp_path: Path) -> None:
    path = tmp_path / "staging.yaml"
    path.write_text("app: shop\nservices:\n  orders: {asgi: orders.main:app}\n")
    manifest = load_manifest(path)
    assert manifest.path == path
    assert manifest.directory == tmp_path


def test_minimal_manifest_has_no_gateway(tmp_path: Path) -> None:
    write(tmp_path, "app: shop\nservices:\n  orders: {asgi: orders.main:app}\n")
    manifest = load_manifest(tmp_path)
    assert manifest.gateway is None
    assert manifest.instances_total == 1


def test_gateway_defaults(tmp_path: Path) -> None:
    write(tmp_path, "app: shop\nservices:\n  orders: {asgi: orders.main:app}\ngateway: {}\n")
    assert load_manifest(tmp_path).gateway == GatewaySpec(port=8080, routes=())


def test_yaml_anchors_and_merge_keys_are_followed(tmp_path: Path) -> None:
    text = """\
    app: shop
    services:
      orders: &python
        asgi: orders.main:app
        env: {LOG_LEVEL: debug}
      catalog:
        <<: *python
        asgi: catalog.main:app
    """
    manifest = load_manifest(write(tmp_path, text))
    assert manifest.services["catalog"].asgi == "catalog.main:app"
    assert manifest.services["catalog"].env == {"LOG_LEVEL": "debug"}


def test_find_manifest_keeps_the_path_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shop").mkdir()
    monkeypatch.chdir(tmp_path)
    assert find_manifest(".") == Path("shoal.yaml")
    assert find_manifest("shop") == Path("shop/shoal.yaml")
    assert find_manifest("shop/other.yaml") == Path("shop/other.yaml")
    assert find_manifest("missing") == Path("missing")


def test_models_are_frozen_and_strict() -> None:
    spec = ServiceSpec(asgi="orders.main:app")
    with pytest.raises(ValidationError):
        spec.replicas = 3
    with pytest.raises(ValidationError) as caught:
        ServiceSpec.model_validate({"asgi": "orders.main:app", "replicas": "2"})
    assert [e["type"] for e in caught.value.errors()] == ["int_type"]


def test_models_check_across_fields_when_built_in_python() -> None:
    with pytest.raises(ValidationError, match="set either 'asgi' or 'command', not both"):
        ServiceSpec(asgi="orders.main:app", command=("node",))
    with pytest.raises(ValidationError) as caught:
        Manifest(
            app="shop",
            services={"orders": ServiceSpec(asgi="orders.main:app")},
            gateway=GatewaySpec(routes=(RouteSpec(prefix="/", service="order"),)),
        )
    [error] = caught.value.errors()
    assert error["loc"] == ("gateway", "routes", 0, "service")
    assert error["msg"] == "unknown service 'order' (did you mean 'orders'?)"
