"""``jwt:`` on a gateway route: parsed into a JwtSpec; unsafe algorithms refused where written."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from test_manifest_errors import problems_in

from shoal.gateway import parse_routes
from shoal.manifest import RouteSpec, load_manifest
from shoal.manifest._jwt import DEFAULT_ALGORITHMS, JwtSpec

HEAD = """\
app: shop
services:
  orders: {asgi: orders.main:app}
gateway:
  routes:
"""


def manifest_with(routes: str, directory: Path) -> str:
    text = HEAD + textwrap.indent(textwrap.dedent(routes), "    ")
    (directory / "shoal.yaml").write_text(text, encoding="utf-8")
    return text


def test_a_route_with_jwt_loads_every_setting(tmp_path: Path) -> None:
    manifest_with(
        """\
        - prefix: /api
          service: orders
          jwt:
            jwks: keys/jwks.json
            issuer: https://login.example.com
            audience: shop
            algorithms: [RS256, ES384, EdDSA, RS256]
        - prefix: /admin
          service: orders
          jwt: {jwks: "https://login.example.com/.well-known/jwks.json", audience: [a, b]}
        - {prefix: /, service: orders}
        """,
        tmp_path,
    )
    gateway = load_manifest(tmp_path).gateway
    assert gateway is not None
    api, admin, front = gateway.routes
    assert api.jwt == JwtSpec(
        jwks="keys/jwks.json",
        issuer="https://login.example.com",
        audience=("shop",),
        algorithms=("RS256", "ES384", "EdDSA"),  # duplicates dropped
    )
    assert not api.jwt.is_url
    assert admin.jwt is not None
    assert admin.jwt.is_url
    assert (admin.jwt.issuer, admin.jwt.audience) == (None, ("a", "b"))
    assert admin.jwt.algorithms == DEFAULT_ALGORITHMS == ("RS256", "ES256")
    assert front.jwt is None


def test_jwt_settings_also_come_through_the_routes_environment_variable() -> None:
    routes = parse_routes(
        '[{"prefix": "/api", "service": "orders", '
        '"jwt": {"jwks": "http://127.0.0.1:8000/jwks", "algorithms": ["ES256"]}}]'
    )
    assert routes == (
        RouteSpec(
            prefix="/api",
            service="orders",
            jwt=JwtSpec(jwks="http://127.0.0.1:8000/jwks", algorithms=("ES256",)),
        ),
    )


ALGORITHMS = ["RS256", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_asymmetric_algorithms_are_accepted(algorithm: str) -> None:
    assert JwtSpec(jwks="jwks.json", algorithms=(algorithm,)).algorithms == (algorithm,)


def test_unsafe_or_unknown_algorithms_are_reported_at_their_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = HEAD + textwrap.indent(
        textwrap.dedent(
            """\
            - prefix: /api
              service: orders
              jwt:
                jwks: keys/jwks.json
                algorithms: [RS256, none, HS256, rs512, XY99]
            """
        ),
        "    ",
    )
    assert problems_in(text, tmp_path, monkeypatch) == [
        "shoal.yaml:10:29: gateway.routes[0].jwt.algorithms[1]: 'none' means an unsigned "
        "token, which anyone can forge: never accepted",
        "shoal.yaml:10:35: gateway.routes[0].jwt.algorithms[2]: 'HS256' is a symmetric (HMAC) "
        "algorithm: its key is a shared secret, which would have to sit in the JWKS file or be "
        "served from the JWKS URL; use an asymmetric algorithm (RS256, ES256, ...)",
        "shoal.yaml:10:42: gateway.routes[0].jwt.algorithms[3]: unknown algorithm 'rs512' "
        "(did you mean 'RS512'? allowed: RS256, RS384, RS512, PS256, PS384, PS512, ES256, "
        "ES384, ES512, EdDSA)",
        "shoal.yaml:10:49: gateway.routes[0].jwt.algorithms[4]: unknown algorithm 'XY99' "
        "(allowed: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA)",
    ]


def test_missing_jwks_and_other_bad_settings_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = HEAD + textwrap.indent(
        textwrap.dedent(
            """\
            - prefix: /a
              service: orders
              jwt: {issuer: https://login.example.com, audince: shop}
            - prefix: /b
              service: orders
              jwt:
                jwks: http://login.example.com/jwks
                issuer: ""
                audience: []
                algorithms: []
            - prefix: /c
              service: orders
              jwt: {jwks: "ftp://login.example.com/jwks", audience: 7}
            """
        ),
        "    ",
    )
    assert problems_in(text, tmp_path, monkeypatch) == [
        "shoal.yaml:8:7: gateway.routes[0].jwt.jwks: required key is missing",
        "shoal.yaml:8:48: gateway.routes[0].jwt.audince: unknown key (did you mean 'audience'?)",
        "shoal.yaml:12:15: gateway.routes[1].jwt.jwks: the keys must not travel in clear: use "
        "https (got 'http://login.example.com/jwks'; plain http is accepted only for localhost)",
        "shoal.yaml:13:17: gateway.routes[1].jwt.issuer: must not be empty",
        "shoal.yaml:14:19: gateway.routes[1].jwt.audience: needs at least one audience "
        "(or leave 'audience' out)",
        "shoal.yaml:15:21: gateway.routes[1].jwt.algorithms: needs at least one algorithm "
        "(the default is ['RS256', 'ES256'])",
        "shoal.yaml:18:19: gateway.routes[2].jwt.jwks: expected a file path or an http(s) URL, "
        "got 'ftp://login.example.com/jwks'",
        "shoal.yaml:18:61: gateway.routes[2].jwt.audience: expected a string or a list of "
        "strings, got 7",
    ]


@pytest.mark.parametrize(
    ("jwks", "is_url"),
    [
        ("keys/jwks.json", False),
        ("/etc/shop/jwks.json", False),
        ("https://login.example.com/.well-known/jwks.json", True),
        ("http://localhost:8080/jwks", True),
        ("http://127.0.0.1/jwks", True),
        ("http://[::1]:9000/jwks", True),
    ],
)
def test_jwks_is_a_file_or_a_url(jwks: str, is_url: bool) -> None:
    assert JwtSpec(jwks=jwks).is_url is is_url
