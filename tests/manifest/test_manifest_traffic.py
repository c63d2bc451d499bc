"""Versions and traffic rules in ``shoal.yaml``: parsed into policies, checked across entries."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError
from test_manifest_errors import problems_in

from shoal.manifest import (
    DEFAULT_POLICY,
    Manifest,
    ServicePolicy,
    ServiceSpec,
    load_manifest,
    parse_duration,
)
from shoal.manifest._policy import (
    AbortFault,
    BackoffPolicy,
    BudgetPolicy,
    DelayFault,
    FaultPolicy,
    HeaderMatch,
    LimitsPolicy,
    MirrorPolicy,
    OutlierPolicy,
    RetryPolicy,
    RoutePolicy,
    TrafficPolicy,
)

README = Path(__file__).parents[2] / "README.md"

EVERY_RULE = """\
app: shop
services:
  catalog:
    asgi: catalog.main:app
    timeout: 2s
    retries:
      attempts: 4
      backoff: {base: 10ms, cap: 1s}
      budget: {percent: 10, min_per_second: 5, window: 30s}
    outlier: {failures: 3, ejection: 15s, max_ejection: 2m, max_ejected_percent: 30}
    limits:
      concurrency: 100
      adaptive: false
      rate: {orders: 100, gateway: 50, "*": 5.5}
    routes:
      - {path: /items, methods: [get, head], timeout: 250ms, attempts: 2, idempotent: true}
      - {path: /orders, methods: [post], idempotent: false}
    traffic:
      split: {v1: 90, v2: 10}
      match:
        - headers: {X-Canary: "1"}
          version: v2
      mirror: {version: v2, percent: 10}
      faults:
        delay: {percent: 5, duration: 1.5s}
        abort: {percent: 1, status: 503}
  catalog-v2:
    asgi: catalog.v2:app
    service: catalog
    version: v2
    replicas: 2
  orders:
    asgi: orders.main:app
gateway:
  routes:
    - {prefix: /api/catalog, service: catalog}
"""

CATALOG_POLICY = ServicePolicy(
    timeout=2.0,
    retries=RetryPolicy(
        attempts=4,
        backoff=BackoffPolicy(base=0.01, cap=1.0),
        budget=BudgetPolicy(percent=10.0, min_per_second=5.0, window=30.0),
    ),
    outlier=OutlierPolicy(failures=3, ejection=15.0, max_ejection=120.0, max_ejected_percent=30.0),
    limits=LimitsPolicy(
        concurrency=100, adaptive=False, rate={"orders": 100.0, "gateway": 50.0, "*": 5.5}
    ),
    routes=(
        RoutePolicy(
            path="/items", methods=("GET", "HEAD"), timeout=0.25, attempts=2, idempotent=True
        ),
        RoutePolicy(path="/orders", methods=("POST",), idempotent=False),
    ),
    traffic=TrafficPolicy(
        split={"v1": 90, "v2": 10},
        match=(HeaderMatch(headers={"x-canary": "1"}, version="v2"),),
        mirror=MirrorPolicy(version="v2", percent=10.0),
        faults=FaultPolicy(
            delay=DelayFault(percent=5.0, duration=1.5), abort=AbortFault(percent=1.0, status=503)
        ),
    ),
)


def write(directory: Path, text: str) -> Path:
    path = directory / "shoal.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_every_rule_parses_into_the_service_policy(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, EVERY_RULE))
    assert manifest.policies() == {"catalog": CATALOG_POLICY, "orders": DEFAULT_POLICY}
    assert manifest.services["catalog"].policy() == CATALOG_POLICY
    policy = manifest.policies()["catalog"]
    assert policy.routes[0].timeout == 0.25  # 250ms, in seconds
    assert policy.routes[0].methods == ("GET", "HEAD")  # upper-cased
    assert policy.traffic.match[0].headers == {"x-canary": "1"}  # header names lower-cased
    assert policy.route("GET", "/items/42") == policy.routes[0]
    assert policy.route("GET", "/orders") is None


def test_a_version_entry_registers_as_its_service(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, EVERY_RULE))
    assert manifest.services["catalog-v2"].service == "catalog"
    assert [manifest.service_of(entry) for entry in manifest.services] == [
        "catalog",
        "catalog",
        "orders",
    ]
    assert manifest.instances_total == 4


def test_nothing_written_means_the_default_policy(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, "app: shop\nservices:\n  orders: {asgi: o.m:app}\n"))
    assert manifest.policies() == {"orders": DEFAULT_POLICY}
    assert ServiceSpec(asgi="orders.main:app").policy() == DEFAULT_POLICY
    assert ServicePolicy() == DEFAULT_POLICY


@pytest.mark.parametrize("policy", [CATALOG_POLICY, DEFAULT_POLICY], ids=["every-rule", "default"])
def test_policy_round_trips_through_json(policy: ServicePolicy) -> None:
    assert ServicePolicy.from_json(policy.to_json()) == policy


def test_default_policy_travels_as_an_empty_object() -> None:
    assert DEFAULT_POLICY.to_json() == b"{}"


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("250ms", 0.25), ("1.5s", 1.5), ("2m", 120.0), ("3", 3.0), (2, 2.0), (0.5, 0.5)],
)
def test_durations_are_read_as_seconds(written: object, seconds: float) -> None:
    assert parse_duration(written) == seconds


def test_the_readme_manifest_reference_is_valid(tmp_path: Path) -> None:
    match = re.search(r"<!-- manifest:reference -->\n```yaml\n(.+?)```", README.read_text(), re.S)
    assert match, "README has no manifest:reference block"
    manifest = load_manifest(write(tmp_path, match.group(1)))
    assert manifest.service_of("catalog-v2") == "catalog"


def test_mirroring_to_the_version_with_all_traffic_is_allowed(tmp_path: Path) -> None:
    text = """\
    app: shop
    services:
      catalog:
        asgi: catalog.main:app
        traffic: {split: {v1: 100}, mirror: {version: v1}}
    """
    traffic = load_manifest(write(tmp_path, text)).policies()["catalog"].traffic
    assert traffic.mirror == MirrorPolicy(version="v1", percent=100.0)


def test_cross_checks_apply_to_models_built_in_python() -> None:
    with pytest.raises(ValidationError) as caught:
        Manifest(
            app="shop",
            services={
                "catalog": ServiceSpec(asgi="catalog.main:app"),
                "catalog-v2": ServiceSpec(asgi="catalog.v2:app", service="catalog", timeout=1),
            },
        )
    assert [(e["loc"], e["msg"]) for e in caught.value.errors()] == [
        (
            ("services", "catalog-v2", "version"),
            "version 'v1' (the default) of service 'catalog' is already run by entry 'catalog' "
            "(give this entry another version)",
        ),
        (
            ("services", "catalog-v2", "timeout"),
            "traffic rules for service 'catalog' go under its own entry 'catalog'",
        ),
    ]


CATALOG = """\
app: shop
services:
  catalog:
    asgi: catalog.main:app
"""

CASES = [
    pytest.param(
        CATALOG
        + """\
  catalog-v2:
    asgi: catalog.v2:app
    service: catalg
    version: v2
""",
        [
            "shoal.yaml:7:14: services.catalog-v2.service: unknown service 'catalg' "
            "(did you mean 'catalog'?)"
        ],
        id="version-of-unknown-service",
    ),
    pytest.param(
        CATALOG
        + """\
  orders:
    asgi: orders.main:app
    service: payments
""",
        [
            "shoal.yaml:7:14: services.orders.service: unknown service 'payments' "
            "(services: catalog)"
        ],
        id="version-of-unknown-service-listing-services",
    ),
    pytest.param(
        CATALOG
        + """\
  catalog-v2: {asgi: catalog.v2:app, service: catalog-v2, version: v2}
""",
        [
            "shoal.yaml:5:47: services.catalog-v2.service: an entry cannot be a version of "
            "itself (leave out 'service': an entry is its own service unless it names another)"
        ],
        id="version-of-itself",
    ),
    pytest.param(
        CATALOG
        + """\
  catalog-v2: {asgi: catalog.v2:app, service: catalog, version: v2}
  catalog-v3: {asgi: catalog.v3:app, service: catalog-v2, version: v3}
""",
        [
            "shoal.yaml:6:47: services.catalog-v3.service: 'catalog-v2' is a version of service "
            "'catalog', not a service of its own (did you mean 'catalog'?)"
        ],
        id="version-of-a-version",
    ),
    pytest.param(
        CATALOG
        + """\
  catalog-v2: {asgi: catalog.v2:app, service: catalog, version: v2}
  catalog-canary:
    asgi: catalog.v2:app
    service: catalog
    version: v2
""",
        [
            "shoal.yaml:9:5: services.catalog-canary.version: version 'v2' of service 'catalog' "
            "is already run by entry 'catalog-v2' (give this entry another version)"
        ],
        id="same-version-twice",
    ),
    pytest.param(
        CATALOG
        + """\
  catalog-old:
    asgi: catalog.old:app
    service: catalog
""",
        [
            "shoal.yaml:5:3: services.catalog-old.version: version 'v1' (the default) of service "
            "'catalog' is already run by entry 'catalog' (give this entry another version)"
        ],
        id="same-default-version-twice",
    ),
    pytest.param(
        CATALOG
        + """\
  catalog-v2:
    asgi: catalog.v2:app
    service: catalog
    version: v2
    timeout: 1s
    traffic:
      split: {v2: 100}
""",
        [
            "shoal.yaml:9:5: services.catalog-v2.timeout: traffic rules for service 'catalog' "
            "go under its own entry 'catalog'",
            "shoal.yaml:10:5: services.catalog-v2.traffic: traffic rules for service 'catalog' "
            "go under its own entry 'catalog'",
        ],
        id="traffic-rules-under-a-version-entry",
    ),
    pytest.param(
        """\
        app: shop
        services:
          catalog:
            asgi: catalog.main:app
            traffic:
              split: {v1: 80, v2: 10, v3: 10}
              match:
                - {headers: {x-canary: "1"}, version: v22}
              mirror: {version: v4}
          catalog-v2: {asgi: catalog.v2:app, service: catalog, version: v2}
        """,
        [
            "shoal.yaml:6:31: services.catalog.traffic.split.v3: unknown version 'v3' of "
            "service 'catalog' (versions: v1, v2)",
            "shoal.yaml:8:47: services.catalog.traffic.match[0].version: unknown version 'v22' "
            "of service 'catalog' (did you mean 'v2'? versions: v1, v2)",
            "shoal.yaml:9:25: services.catalog.traffic.mirror.version: unknown version 'v4' of "
            "service 'catalog' (versions: v1, v2)",
        ],
        id="traffic-to-unknown-versions",
    ),
    pytest.param(
        """\
        app: shop
        services:
          catalog:
            asgi: catalog.main:app
            traffic:
              split:
                v1: 90
                v2: 5
          catalog-v2: {asgi: catalog.v2:app, service: catalog, version: v2}
        """,
        ["shoal.yaml:6:7: services.catalog.traffic.split: weights must add up to 100, got 95"],
        id="split-weights-not-100",
    ),
    pytest.param(
        """\
        app: shop
        services:
          catalog:
            asgi: catalog.main:app
            limits:
              rate: {ordrs: 10, gateway: 100, "*": 1, billing: 5, catalog-v2: 5}
          catalog-v2: {asgi: catalog.v2:app, service: catalog, version: v2}
          orders: {asgi: orders.main:app}
        """,
        [
            "shoal.yaml:6:14: services.catalog.limits.rate.ordrs: unknown caller 'ordrs' "
            "(did you mean 'orders'?)",
            "shoal.yaml:6:47: services.catalog.limits.rate.billing: unknown caller 'billing' "
            "(callers: catalog, gateway, orders, or '*' for any other)",
            "shoal.yaml:6:59: services.catalog.limits.rate.catalog-v2: 'catalog-v2' is a version "
            "of service 'catalog', not a service of its own (did you mean 'catalog'?)",
        ],
        id="rate-limit-for-unknown-callers",
    ),
    pytest.param(
        CATALOG
        + """\
  catalog-v2: {asgi: catalog.v2:app, service: catalog, version: v2}
gateway:
  routes:
    - {prefix: /api/catalog, service: catalog-v2}
""",
        [
            "shoal.yaml:8:39: gateway.routes[0].service: 'catalog-v2' is a version of service "
            "'catalog', not a service of its own (did you mean 'catalog'?)"
        ],
        id="gateway-route-to-a-version-entry",
    ),
    pytest.param(
        """\
        app: shop
        services:
          catalog:
            asgi: catalog.main:app
            retries:
              backoff: {base: 2s, cap: 500ms}
            outlier: {ejection: 10m}
          orders:
            asgi: orders.main:app
            retries: {backoff: {cap: 10ms}}
            outlier: {ejection: 1m, max_ejection: 30s}
        """,
        [
            "shoal.yaml:6:23: services.catalog.retries.backoff.base: must be at most cap "
            "(500ms), got 2s",
            "shoal.yaml:7:25: services.catalog.outlier.ejection: must be at most max_ejection "
            "(5m, the default), got 10m",
            "shoal.yaml:10:30: services.orders.retries.backoff.cap: must be at least base "
            "(25ms, the default), got 10ms",
            "shoal.yaml:11:25: services.orders.outlier.ejection: must be at most max_ejection "
            "(30s), got 1m",
        ],
        id="backoff-and-ejection-out-of-order",
    ),
    pytest.param(
        """\
        app: shop
        services:
          catalog:
            asgi: catalog.main:app
            timeout: 2 days
            retries: {attempts: 0, backoff: {base: [1]}}
            limits: {rate: {"*": fast}}
            routes:
              - {path: items, methods: [fetch]}
            traffic:
              split: {v1: 150}
              match: [{headers: {"X Canary": "1"}, version: v1}]
              faults:
                abort: {percent: 1, status: 200}
                delay: {percent: 120, duration: 0}
        """,
        [
            "shoal.yaml:5:14: services.catalog.timeout: expected a duration such as 250ms, "
            "2s or 1m, got '2 days'",
            "shoal.yaml:6:25: services.catalog.retries.attempts: must be between 1 and 10, got 0",
            "shoal.yaml:6:44: services.catalog.retries.backoff.base: expected a number, got a list",
            "shoal.yaml:7:26: services.catalog.limits.rate.*: expected a number, got 'fast'",
            "shoal.yaml:9:16: services.catalog.routes[0].path: must start with '/', "
            "got 'items' (try '/items')",
            "shoal.yaml:9:33: services.catalog.routes[0].methods[0]: unknown HTTP method "
            "'fetch' (methods: DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, TRACE)",
            "shoal.yaml:11:19: services.catalog.traffic.split.v1: must be between 0 and 100, "
            "got 150",
            "shoal.yaml:12:26: services.catalog.traffic.match[0].headers.X Canary: not a valid "
            "header name: 'X Canary'",
            "shoal.yaml:14:37: services.catalog.traffic.faults.abort.status: must be between "
            "400 and 599, got 200",
            "shoal.yaml:15:26: services.catalog.traffic.faults.delay.percent: must be a "
            "percentage between 0 and 100, got 120",
            "shoal.yaml:15:41: services.catalog.traffic.faults.delay.duration: must be more "
            "than 0, got 0",
        ],
        id="bad-values-in-nested-rules",
    ),
    pytest.param(
        """\
        app: shop
        services:
          catalog:
            asgi: catalog.main:app
            retries: {attempt: 2}
            traffic:
              faults: {abort: {percent: 1, code: 503}}
        """,
        [
            "shoal.yaml:5:15: services.catalog.retries.attempt: unknown key "
            "(did you mean 'attempts'?)",
            "shoal.yaml:7:36: services.catalog.traffic.faults.abort.code: unknown key "
            "(valid keys: percent, status)",
        ],
        id="unknown-keys-in-nested-rules",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_bad_traffic_rules_are_reported_line_by_line(
    text: str, expected: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert problems_in(text, tmp_path, monkeypatch) == expected
