"""Authorization policies in ``shoal.yaml``: parsed, checked against the services, published."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError
from test_manifest_errors import problems_in

from shoal.manifest import DEFAULT_POLICY, Manifest, ServicePolicy, ServiceSpec, load_manifest
from shoal.manifest._authz import AuthzPolicy, AuthzRule

SHOP = """\
app: shop
default_policy: deny
policies:
  - name: orders-reads-catalog
    target: catalog
    action: allow
    from: [orders, gateway]
    methods: [GET, HEAD]
    paths: [/items, /admin]
  - target: catalog
    action: deny
    paths: [/admin]
  - target: orders
    from: ["*"]
    paths: [/x/../orders/, "/caf%C3%A9"]
services:
  catalog:
    asgi: catalog.main:app
  catalog-v2: {asgi: catalog.v2:app, service: catalog, version: v2}
  orders:
    asgi: orders.main:app
  payments:
    asgi: payments.main:app
gateway:
  routes:
    - {prefix: /api/catalog, service: catalog}
"""


def rule(**fields: object) -> AuthzRule:
    """A rule as validated from ``shoal.yaml`` (``from_`` is written ``from``)."""
    if "from_" in fields:
        fields["from"] = fields.pop("from_")
    return AuthzRule.model_validate(fields)


CATALOG_READS = rule(
    name="orders-reads-catalog",
    target="catalog",
    from_=["orders", "gateway"],
    methods=["GET", "HEAD"],
    paths=["/items", "/admin"],
)
NO_ADMIN = rule(name="policies[1]", target="catalog", action="deny", paths=["/admin"])
ORDERS_ANYONE = rule(name="policies[2]", target="orders", from_=["*"], paths=["/orders/", "/café"])


def write(directory: Path, text: str) -> Path:
    path = directory / "shoal.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_policies_parse_into_rules(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, SHOP))
    assert manifest.default_policy == "deny"
    first, second, third = manifest.authz_rules
    assert first == CATALOG_READS
    assert first.action == "allow"
    assert first.from_ == ("orders", "gateway")
    assert (second.name, second.action, second.from_, second.methods) == (None, "deny", None, None)
    assert third.paths == ("/orders/", "/café")  # normalised at load, like request paths


def test_each_service_gets_the_default_and_the_rules_that_target_it(tmp_path: Path) -> None:
    policies = load_manifest(write(tmp_path, SHOP)).policies()
    assert list(policies) == ["catalog", "orders", "payments"]  # version entries have none
    assert policies["catalog"].authz == AuthzPolicy(default="deny", rules=(CATALOG_READS, NO_ADMIN))
    assert policies["orders"].authz == AuthzPolicy(default="deny", rules=(ORDERS_ANYONE,))
    assert policies["payments"].authz == AuthzPolicy(default="deny")
    assert policies["payments"] == ServicePolicy(authz=AuthzPolicy(default="deny"))


def test_nothing_written_means_allow_mesh_and_no_rules(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, "app: shop\nservices:\n  orders: {asgi: o.m:app}\n"))
    assert manifest.default_policy == "allow-mesh"
    assert manifest.authz_rules == ()
    assert manifest.policies() == {"orders": DEFAULT_POLICY}
    assert DEFAULT_POLICY.authz == AuthzPolicy(default="allow-mesh", rules=())
    assert rule(target="orders") == AuthzRule.model_validate(
        {"target": "orders", "action": "allow"}
    )


@pytest.mark.parametrize("service", ["catalog", "orders", "payments"])
def test_policies_round_trip_through_json(tmp_path: Path, service: str) -> None:
    policy = load_manifest(write(tmp_path, SHOP)).policies()[service]
    assert ServicePolicy.from_json(policy.to_json()) == policy
    assert AuthzPolicy.from_json(policy.authz.to_json()) == policy.authz


def test_the_json_spells_from_as_in_the_manifest() -> None:
    policy = AuthzPolicy(rules=(ORDERS_ANYONE,))
    assert policy.to_json() == (
        b'{"rules":[{"name":"policies[2]","target":"orders","from":["*"],'
        b'"paths":["/orders/","/caf\xc3\xa9"]}]}'
    )
    assert AuthzPolicy().to_json() == b"{}"
    assert DEFAULT_POLICY.to_json() == b"{}"


def test_cross_checks_apply_to_models_built_in_python() -> None:
    with pytest.raises(ValidationError) as caught:
        Manifest(
            app="shop",
            services={"catalog": ServiceSpec(asgi="catalog.main:app")},
            policies=(rule(target="catalog", from_=["orders"]),),
        )
    assert [(e["loc"], e["msg"]) for e in caught.value.errors()] == [
        (("policies", 0, "from", 0), "unknown caller 'orders' (callers: catalog, or '*' for any)")
    ]


SERVICES = """\
services:
  catalog:
    asgi: catalog.main:app
  catalog-v2: {asgi: catalog.v2:app, service: catalog, version: v2}
  orders:
    asgi: orders.main:app
"""


CASES = [
    pytest.param(
        """\
        app: shop
        policies:
          - target: catalg
          - target: catalog-v2
          - target: gateway
          - target: Catalog
          - from: [orders]
        """,
        [
            "shoal.yaml:3:13: policies[0].target: unknown service 'catalg' "
            "(did you mean 'catalog'?)",
            "shoal.yaml:4:13: policies[1].target: 'catalog-v2' is a version of service "
            "'catalog', not a service of its own (did you mean 'catalog'?)",
            "shoal.yaml:5:13: policies[2].target: the gateway cannot be a target: it takes "
            "outside traffic, which has no mesh identity to authorize (protect it with JWT; "
            "rules protect the services behind it)",
            "shoal.yaml:6:13: policies[3].target: not a valid service name: use lowercase "
            "letters, digits and '-', starting and ending with a letter or digit, at most 63 "
            "characters (try 'catalog')",
            "shoal.yaml:7:5: policies[4].target: required key is missing",
        ],
        id="bad-targets",
    ),
    pytest.param(
        """\
        app: shop
        policies:
          - target: catalog
            from: [ordrs, gateway, catalog-v2, payments, "*", Orders]
          - {target: orders, from: []}
          - {target: orders, from: gateway}
        """,
        [
            "shoal.yaml:4:12: policies[0].from[0]: unknown caller 'ordrs' (did you mean 'orders'?)",
            "shoal.yaml:4:19: policies[0].from[1]: unknown caller 'gateway' "
            "(the manifest has no gateway)",
            "shoal.yaml:4:28: policies[0].from[2]: 'catalog-v2' is a version of service "
            "'catalog', not a service of its own (did you mean 'catalog'?)",
            "shoal.yaml:4:40: policies[0].from[3]: unknown caller 'payments' "
            "(callers: catalog, orders, or '*' for any)",
            "shoal.yaml:4:55: policies[0].from[5]: expected the name of a calling service "
            "or '*', got 'Orders' (try 'orders')",
            "shoal.yaml:5:28: policies[1].from: an empty list matches nothing: leave the key "
            "out to match any authenticated caller",
            "shoal.yaml:6:28: policies[2].from: expected a list, got 'gateway' (write [gateway])",
        ],
        id="bad-callers",
    ),
    pytest.param(
        """\
        app: shop
        policies:
          - {target: catalog, methods: [GET, get, GTE, BREW]}
          - {target: catalog, methods: []}
        """,
        [
            "shoal.yaml:3:38: policies[0].methods[1]: methods are written in uppercase: "
            "did you mean 'GET'?",
            "shoal.yaml:3:43: policies[0].methods[2]: unknown HTTP method 'GTE' (did you mean "
            "'GET'? methods: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE, CONNECT)",
            "shoal.yaml:3:48: policies[0].methods[3]: unknown HTTP method 'BREW' "
            "(methods: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE, CONNECT)",
            "shoal.yaml:4:32: policies[1].methods: an empty list matches nothing: leave the "
            "key out to match any method",
        ],
        id="bad-methods",
    ),
    pytest.param(
        """\
        app: shop
        policies:
          - target: catalog
            paths:
              - items
              - /a%2Fb
              - /a/%252e
              - /x?y=1
              - /.../x
              - /ok/../fine
        """,
        [
            "shoal.yaml:5:9: policies[0].paths[0]: must start with '/', got 'items' (try '/items')",
            "shoal.yaml:6:9: policies[0].paths[1]: not a usable path prefix: it contains an "
            "encoded slash (%2F) or backslash (%5C), got '/a%2Fb'",
            "shoal.yaml:7:9: policies[0].paths[2]: not a usable path prefix: it is double "
            "percent-encoded (%25 decodes to an escape), got '/a/%252e'",
            "shoal.yaml:8:9: policies[0].paths[3]: a path prefix holds no query or fragment "
            "('?', '#'), got '/x?y=1'",
            "shoal.yaml:9:9: policies[0].paths[4]: not a usable path prefix: the segment "
            "'...' is only dots and spaces, got '/.../x'",
        ],
        id="bad-paths",
    ),
    pytest.param(
        """\
        app: shop
        default_policy: allow_mesh
        polices: []
        policies:
          - {name: reads, target: catalog, action: alow}
          - {name: reads, target: orders}
          - {name: "policies[3]", target: orders}
          - {target: orders, frm: [orders]}
          - {name: "no spaces", target: orders}
        """,
        [
            "shoal.yaml:2:17: default_policy: expected 'allow-mesh' or 'deny', "
            "got 'allow_mesh' (did you mean 'allow-mesh'?)",
            "shoal.yaml:3:1: polices: unknown key (did you mean 'policies'?)",
            "shoal.yaml:5:44: policies[0].action: expected 'allow' or 'deny', got 'alow' "
            "(did you mean 'allow'?)",
            "shoal.yaml:6:12: policies[1].name: rule name 'reads' is already used by "
            "policies[0] (give each rule its own name)",
            "shoal.yaml:8:5: policies[3]: this rule's default name 'policies[3]' is already "
            "used by policies[2] (give each rule its own name)",
            "shoal.yaml:8:22: policies[3].frm: unknown key (did you mean 'from'?)",
            "shoal.yaml:9:12: policies[4].name: not a valid rule name: use letters, digits, "
            "'-', '_' and '.', starting and ending with a letter or digit, at most 63 "
            "characters, got 'no spaces'",
        ],
        id="bad-names-keys-and-choices",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_bad_policies_are_reported_line_by_line(
    text: str, expected: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert problems_in(textwrap.dedent(text) + SERVICES, tmp_path, monkeypatch) == expected


def test_the_gateway_may_call_when_there_is_one(tmp_path: Path) -> None:
    text = SERVICES + "gateway: {}\npolicies:\n  - {target: catalog, from: [gateway]}\n"
    manifest = load_manifest(write(tmp_path, "app: shop\n" + text))
    assert manifest.policies()["catalog"].authz.rules[0].from_ == ("gateway",)
