"""Authorization at the door, over real sockets: the rule matrix and the path-bypass corpus.

In the style of Linkerd's and Istio's end-to-end policy tests: a real HTTP server runs
the real :class:`InboundGuard` with ``authenticate=True``; each request says which
service it comes from and the status, ``shoal-reason`` and the app's own view are
checked. The mTLS listener is stood in for by :func:`with_test_peer`, which sets the
authenticated peer from a test-only header the way the listener does from the
client certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from asgi_server import HOST, serve_asgi
from shoal.manifest import Manifest, ServicePolicy
from shoal.manifest._authz import AuthzPolicy
from shoal.mesh import StaticPolicies
from shoal.mesh._authz import Decision, authorize
from shoal.mesh._guard import InboundGuard
from shoal.mesh._peer import PEER_KEY, Peer
from shoal.types import ASGIApp, Receive, Scope, Send

SERVICE = "catalog"
TEST_PEER = b"x-test-peer"
ADMIN = "/admin"
KNOWN = ("/items", "/reports", "/other")


class App:
    """Routes like Starlette, on ``scope["path"]``: an admin handler, a few pages, else 404."""

    def __init__(self) -> None:
        self.admin_hits = 0
        self.seen: list[tuple[str, bytes, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        self.seen.append((path, scope["raw_path"], scope["query_string"]))
        if path == ADMIN or path.startswith(ADMIN + "/"):
            self.admin_hits += 1
            status, body = 200, b"admin"
        elif any(path == page or path.startswith(page + "/") for page in KNOWN):
            status, body = 200, path.encode()
        else:
            status, body = 404, b"not found"
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})


def with_test_peer(app: ASGIApp) -> ASGIApp:
    """Stand-in for the mTLS listener: the peer named in ``x-test-peer``, else none."""

    async def listener(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == TEST_PEER:
                    service = value.decode()
                    peer = Peer(f"spiffe://shop.shoal/svc/{service}", service)
                    scope = {**scope, PEER_KEY: peer}
        await app(scope, receive, send)

    return listener


def catalog_policy(rules: list[dict[str, Any]], default: str = "allow-mesh") -> ServicePolicy:
    """The catalog's policy as ``shoal.yaml`` would give it (rule names defaulted and all)."""
    services = {name: {"asgi": f"{name}.main:app"} for name in ("catalog", "orders", "billing")}
    manifest = Manifest.model_validate(
        {
            "app": "shop",
            "services": services,
            "gateway": {},
            "default_policy": default,
            "policies": [{"target": SERVICE, **rule} for rule in rules],
        }
    )
    return manifest.policies()[SERVICE]


@contextlib.asynccontextmanager
async def guarded(
    policies: StaticPolicies, app: App | None = None, **kwargs: Any
) -> AsyncIterator[tuple[App, str]]:
    """Serve ``app`` behind the authenticating guard; yields the app and the base URL."""
    app = app or App()
    guard = InboundGuard(app, SERVICE, policies, authenticate=True, **kwargs)
    async with serve_asgi(with_test_peer(guard)) as port:
        yield app, f"http://{HOST}:{port}"


async def call(
    http: httpx.AsyncClient, base: str, caller: str | None, method: str, path: str
) -> tuple[int, str | None]:
    headers = {} if caller is None else {"x-test-peer": caller}
    response = await http.request(method, base + path, headers=headers)
    return response.status_code, response.headers.get("shoal-reason")


@dataclass(frozen=True)
class Case:
    rules: list[dict[str, Any]]
    requests: list[tuple[str | None, str, str, int, str | None]]
    """(caller, method, path, status, shoal-reason)."""
    default: str = "allow-mesh"


OK = 200
DENIED = 403
NO_ALLOW = "denied:no-allow-match"
UNAUTHENTICATED = "denied:unauthenticated"
DEFAULT = "denied:default-policy"

MATRIX = {
    "allow": Case(
        [{"name": "orders-reads", "from": ["orders"]}],
        [
            ("orders", "GET", "/items", OK, None),
            ("billing", "GET", "/items", DENIED, NO_ALLOW),
            ("gateway", "GET", "/items", DENIED, NO_ALLOW),
        ],
    ),
    "deny": Case(
        [{"name": "no-billing", "action": "deny", "from": ["billing"]}],
        [
            ("billing", "GET", "/items", DENIED, "denied:no-billing"),
            ("orders", "GET", "/items", OK, None),  # only deny rules: the default decides
        ],
    ),
    "deny-beats-allow": Case(
        [
            {"name": "orders-all", "from": ["orders"]},
            {"name": "no-deletes", "action": "deny", "methods": ["DELETE"]},
        ],
        [
            ("orders", "GET", "/items", OK, None),
            ("orders", "DELETE", "/items", DENIED, "denied:no-deletes"),
        ],
    ),
    "unmatched-under-allow-is-denied": Case(
        [{"from": ["orders"], "methods": ["GET"], "paths": ["/items"]}],
        [
            ("orders", "GET", "/items", OK, None),
            ("orders", "GET", "/reports", DENIED, NO_ALLOW),
            ("billing", "GET", "/items", DENIED, NO_ALLOW),
        ],
    ),
    "default-allow-mesh": Case(
        [],
        [
            ("orders", "GET", "/items", OK, None),
            ("billing", "POST", "/reports", OK, None),
            (None, "GET", "/items", DENIED, UNAUTHENTICATED),
        ],
    ),
    "default-deny": Case(
        [],
        [
            ("orders", "GET", "/items", DENIED, DEFAULT),
            (None, "GET", "/items", DENIED, UNAUTHENTICATED),
        ],
        default="deny",
    ),
    "default-deny-with-an-allow-rule": Case(
        [{"from": ["orders"]}],
        [
            ("orders", "GET", "/items", OK, None),
            ("billing", "GET", "/items", DENIED, NO_ALLOW),
        ],
        default="deny",
    ),
    "default-deny-with-only-deny-rules": Case(
        [{"name": "no-billing", "action": "deny", "from": ["billing"]}],
        [
            ("billing", "GET", "/items", DENIED, "denied:no-billing"),
            ("orders", "GET", "/items", DENIED, DEFAULT),
        ],
        default="deny",
    ),
    "unauthenticated-denied-even-from-star": Case(
        [{"name": "anyone", "from": ["*"]}],
        [
            ("orders", "GET", "/items", OK, None),
            ("gateway", "GET", "/items", OK, None),
            (None, "GET", "/items", DENIED, UNAUTHENTICATED),
        ],
    ),
    "unauthenticated-denied-by-a-rule-without-from": Case(
        [{"paths": ["/items"]}],
        [
            ("billing", "GET", "/items", OK, None),
            (None, "GET", "/items", DENIED, UNAUTHENTICATED),
        ],
    ),
    "methods": Case(
        [{"methods": ["GET", "HEAD"]}],
        [
            ("orders", "GET", "/items", OK, None),
            ("orders", "HEAD", "/items", OK, None),
            ("orders", "POST", "/items", DENIED, NO_ALLOW),
            ("orders", "DELETE", "/items", DENIED, NO_ALLOW),
        ],
    ),
    "prefixes-on-segment-boundaries": Case(
        [{"paths": ["/items"]}, {"paths": ["/reports/"]}],
        [
            ("orders", "GET", "/items", OK, None),
            ("orders", "GET", "/items/", OK, None),
            ("orders", "GET", "/items/42", OK, None),
            ("orders", "GET", "/itemsx", DENIED, NO_ALLOW),
            ("orders", "GET", "/item", DENIED, NO_ALLOW),
            ("orders", "GET", "/other/items", DENIED, NO_ALLOW),
            ("orders", "GET", "/ITEMS", DENIED, NO_ALLOW),  # case-sensitive
            ("orders", "GET", "/reports", OK, None),  # a trailing '/' in a rule changes nothing
            ("orders", "GET", "/reports/q1", OK, None),
            ("orders", "GET", "/reportsx", DENIED, NO_ALLOW),
        ],
    ),
    "requirements-in-one-rule-are-anded": Case(
        [{"from": ["orders"], "methods": ["POST"], "paths": ["/items"]}],
        [
            ("orders", "POST", "/items/1", OK, None),
            ("orders", "GET", "/items/1", DENIED, NO_ALLOW),
            ("billing", "POST", "/items/1", DENIED, NO_ALLOW),
            ("orders", "POST", "/reports", DENIED, NO_ALLOW),
        ],
    ),
    "values-in-one-list-are-ored": Case(
        [{"from": ["orders", "billing"], "paths": ["/items", "/reports"]}],
        [
            ("orders", "GET", "/items", OK, None),
            ("billing", "GET", "/reports", OK, None),
            ("gateway", "GET", "/items", DENIED, NO_ALLOW),
            ("orders", "GET", "/other", DENIED, NO_ALLOW),
        ],
    ),
    "two-rules-are-ored": Case(
        [{"from": ["orders"], "paths": ["/items"]}, {"from": ["billing"], "paths": ["/reports"]}],
        [
            ("orders", "GET", "/items", OK, None),
            ("billing", "GET", "/reports", OK, None),
            ("orders", "GET", "/reports", DENIED, NO_ALLOW),
            ("billing", "GET", "/items", DENIED, NO_ALLOW),
        ],
    ),
    "deny-on-a-path-for-one-caller-and-method": Case(
        [{"action": "deny", "from": ["gateway"], "methods": ["POST"], "paths": ["/reports"]}],
        [
            ("gateway", "POST", "/reports/q1", DENIED, "denied:policies[0]"),  # default name
            ("gateway", "GET", "/reports/q1", OK, None),
            ("orders", "POST", "/reports/q1", OK, None),
            ("gateway", "POST", "/items", OK, None),
        ],
    ),
}


@pytest.mark.parametrize("case", MATRIX.values(), ids=MATRIX.keys())
async def test_authorization_matrix(case: Case) -> None:
    policies = StaticPolicies({SERVICE: catalog_policy(case.rules, case.default)})
    async with guarded(policies) as (app, base), httpx.AsyncClient() as http:
        got = [
            (caller, method, path, *await call(http, base, caller, method, path))
            for caller, method, path, _, _ in case.requests
        ]
    assert got == case.requests
    allowed = [(path, path.encode(), b"") for _, _, path, status, _ in got if status == OK]
    assert app.seen == allowed  # a denied request never reaches the app


async def test_a_denial_is_explained_in_the_body() -> None:
    policies = StaticPolicies(
        {SERVICE: catalog_policy([{"name": "orders-only", "from": ["orders"]}])}
    )
    async with guarded(policies) as (_, base), httpx.AsyncClient() as http:
        denied = await http.delete(f"{base}/items/7", headers={"x-test-peer": "billing"})
        anonymous = await http.get(f"{base}/items")
    assert denied.status_code == 403
    assert denied.json() == {
        "error": "service 'billing' may not DELETE '/items/7' on service 'catalog': "
        "no allow rule for the service matches the request",
        "reason": "denied:no-allow-match",
    }
    assert anonymous.json()["error"].startswith("an unauthenticated caller may not GET")


async def test_policy_changes_apply_to_the_next_request() -> None:
    policies = StaticPolicies()
    async with guarded(policies) as (app, base), httpx.AsyncClient() as http:
        before = await call(http, base, "billing", "GET", "/items")
        policies.set(
            SERVICE,
            catalog_policy([{"name": "cut-billing", "action": "deny", "from": ["billing"]}]),
        )
        during = await call(http, base, "billing", "GET", "/items")
        policies.set(SERVICE, catalog_policy([], default="deny"))
        locked = await call(http, base, "orders", "GET", "/items")
        policies.set(SERVICE, ServicePolicy())
        after = await call(http, base, "billing", "GET", "/items")
    assert [before, during, locked, after] == [
        (200, None),
        (403, "denied:cut-billing"),
        (403, DEFAULT),
        (200, None),
    ]
    assert len(app.seen) == 2


async def test_the_app_gets_the_normalised_path_that_was_checked() -> None:
    async with guarded(StaticPolicies()) as (app, base):
        port = int(base.rsplit(":", 1)[1])
        status, _ = await raw_get(port, b"//items/./a%20b/x/..;p/%63?q=%2F&r=..")
    assert status == 200
    assert app.seen == [("/items/a b/c", b"/items/a%20b/c", b"q=%2F&r=..")]


async def test_the_rate_limit_counts_the_authenticated_caller_not_the_header() -> None:
    policy = ServicePolicy.model_validate({"limits": {"rate": {"orders": 3, "*": 1000}}})
    async with guarded(StaticPolicies({SERVICE: policy})) as (_, base), httpx.AsyncClient() as http:
        headers = {"x-test-peer": "orders", "shoal-caller": "billing"}
        statuses = [
            (await http.get(f"{base}/items", headers=headers)).status_code for _ in range(8)
        ]
    assert statuses.count(429) >= 3


async def test_without_authenticate_there_is_no_authorization_and_no_normalisation() -> None:
    app = App()
    policy = catalog_policy([], default="deny")
    guard = InboundGuard(app, SERVICE, StaticPolicies({SERVICE: policy}))
    async with serve_asgi(guard) as port:
        status, _ = await raw_get(port, b"/x/../items/%61")
    # Plaintext dev mode: no identity, so no authorization (default_policy deny is not
    # enforced) and the path is passed on as the server decoded it, unnormalised.
    assert status == 404
    assert app.seen == [("/x/../items/a", b"/x/../items/%61", b"")]


async def test_denials_are_logged_at_most_once_per_reason_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    policies = StaticPolicies(
        {SERVICE: catalog_policy([{"name": "orders-only", "from": ["orders"]}])}
    )
    caplog.set_level(logging.INFO, logger="shoal.mesh.authz")
    async with guarded(policies, clock=lambda: now[0]) as (_, base), httpx.AsyncClient() as http:
        for _ in range(3):
            await call(http, base, "billing", "POST", "/items/1")
        await call(http, base, None, "GET", "/items")
        now[0] += 1.5
        await call(http, base, "billing", "POST", "/items/2")
    lines = [r.getMessage() for r in caplog.records if r.name == "shoal.mesh.authz"]
    assert lines == [
        "POST '/items/1' from service 'billing' to service 'catalog': denied:no-allow-match",
        "GET '/items' from an unauthenticated caller to service 'catalog': denied:unauthenticated",
        "POST '/items/2' from service 'billing' to service 'catalog': denied:no-allow-match "
        "(2 more like it held back)",
    ]


def test_the_evaluator_answers_with_the_deciding_rule() -> None:
    policy = catalog_policy(
        [{"name": "ro", "methods": ["GET"]}, {"name": "x", "action": "deny", "paths": ["/x"]}]
    )
    authz = policy.authz
    assert authorize(authz, "orders", "GET", "/items") == Decision(True, "allowed:ro", "ro")
    assert authorize(authz, "orders", "GET", "/x/1") == Decision(False, "denied:x", "x")
    assert authorize(authz, "orders", "PUT", "/items") == Decision(False, NO_ALLOW)
    assert authorize(authz, None, "GET", "/items") == Decision(False, UNAUTHENTICATED)
    assert authorize(AuthzPolicy(), "orders", "GET", "/") == Decision(
        True, "allowed:default-policy"
    )
    assert authorize(AuthzPolicy(default="deny"), "orders", "GET", "/") == Decision(False, DEFAULT)


# --- the path-normalisation corpus: no spelling of /admin reaches the admin handler ---------

NO_ADMIN = (403, "denied:no-admin")  # normalised to /admin (or under it): the deny catches it
BAD_PATH = (400, "bad-path")  # refused by the guard before any rule or the app
UNPARSABLE = (400, None)  # refused by the HTTP server itself: not even a request
NOT_ADMIN = (404, None)  # genuinely another path: the app answers it, not its admin handler

CORPUS: dict[bytes, tuple[int, str | None]] = {
    # the plain spellings
    b"/admin": NO_ADMIN,
    b"/admin/": NO_ADMIN,
    b"/admin/users/1": NO_ADMIN,
    b"/admin?x=1": NO_ADMIN,
    b"http://catalog/admin": NO_ADMIN,  # absolute form
    # percent-encoded letters are decoded once
    b"/%61dmin": NO_ADMIN,
    b"/adm%69n": NO_ADMIN,
    b"/%61%64%6D%69%6E/x": NO_ADMIN,
    b"/%61dmin?x=%2F": NO_ADMIN,
    # dot segments, plain and encoded
    b"/./admin": NO_ADMIN,
    b"/admin/.": NO_ADMIN,
    b"/admin/./x": NO_ADMIN,
    b"/x/../admin": NO_ADMIN,
    b"/x/y/../../admin": NO_ADMIN,
    b"/../admin": NO_ADMIN,
    b"/../../../admin/x": NO_ADMIN,
    b"/x/%2e%2e/admin": NO_ADMIN,
    b"/x/%2E%2E/admin": NO_ADMIN,
    b"/x/.%2e/admin": NO_ADMIN,
    b"/%2e/admin": NO_ADMIN,
    b"/admin/%2e": NO_ADMIN,
    b"/ADMIN/../admin": NO_ADMIN,
    # repeated slashes
    b"//admin": NO_ADMIN,
    b"///admin//x": NO_ADMIN,
    b"/x//..//admin": NO_ADMIN,
    # ;params, Tomcat style
    b"/admin;x": NO_ADMIN,
    b"/admin;jsessionid=1/x": NO_ADMIN,
    b"/x/..;/admin": NO_ADMIN,
    b"/;x/admin": NO_ADMIN,
    b"/x;a=b/..;c=d/admin": NO_ADMIN,
    # trailing dots and spaces (Windows strips them)
    b"/admin.": NO_ADMIN,
    b"/admin...": NO_ADMIN,
    b"/admin%2e": NO_ADMIN,
    b"/admin%20": NO_ADMIN,
    b"/admin.%20/x": NO_ADMIN,
    b"/admin./": NO_ADMIN,
    # encoded slashes and backslashes
    b"/admin%2Fx": BAD_PATH,
    b"/%2Fadmin": BAD_PATH,
    b"/x/..%2Fadmin": BAD_PATH,
    b"/x/%2e%2e%2fadmin": BAD_PATH,
    b"/%5Cadmin": BAD_PATH,
    b"/x/..%5cadmin": BAD_PATH,
    b"/x\\..\\admin": BAD_PATH,
    b"/admin\\": BAD_PATH,
    # double encoding
    b"/%2561dmin": BAD_PATH,
    b"/admin%252F": BAD_PATH,
    b"/x/%252e%252e/admin": BAD_PATH,
    b"/x/%25%32%65%25%32%65/admin": BAD_PATH,
    # invalid escapes, controls, overlong UTF-8
    b"/admin%": BAD_PATH,
    b"/admin%zz": BAD_PATH,
    b"/%u0061dmin": BAD_PATH,
    b"/admin%00": BAD_PATH,
    b"/admin%00.html": BAD_PATH,
    b"/admin%0a": BAD_PATH,
    b"/admin%7f": BAD_PATH,
    b"/admin%c2%85": BAD_PATH,  # a C1 control (NEL)
    b"/%c0%ae%c0%ae/admin": BAD_PATH,  # overlong '.'
    b"/x/%c0%af../admin": BAD_PATH,  # overlong '/'
    b"/%e0%80%aeadmin": BAD_PATH,
    b"/admin%ff": BAD_PATH,
    # segments of dots and spaces only; no leading '/'
    b"/.../admin": BAD_PATH,
    b"/.%20/admin": BAD_PATH,
    b"*": BAD_PATH,
    # raw bytes the HTTP server refuses to parse
    b"/admin\x00": UNPARSABLE,
    b"/admin\t": UNPARSABLE,
    b"/adm\xc4\xb1n": UNPARSABLE,
    # other paths: the app answers, and not with its admin handler
    b"/ADMIN": NOT_ADMIN,  # case-sensitive, like the app's router
    b"/Admin/x": NOT_ADMIN,
    b"/administrator": NOT_ADMIN,
    b"/admin%3Bx": NOT_ADMIN,  # an encoded ';' is data: the path '/admin;x'
    b"/admin%3F": NOT_ADMIN,  # an encoded '?' is data: the path '/admin?'
    b"/adm%C4%B1n": NOT_ADMIN,  # dotless i
    b"/%EF%BD%81dmin": NOT_ADMIN,  # fullwidth a: not folded
    b"/admin/..": NOT_ADMIN,  # '/'
    b"/admin/../x": NOT_ADMIN,
}


async def raw_get(
    port: int, target: bytes, caller: str | None = "orders"
) -> tuple[int, str | None]:
    """Send ``GET target`` exactly as given, over a plain socket: (status, shoal-reason)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    peer = b"" if caller is None else TEST_PEER + b": " + caller.encode() + b"\r\n"
    request = b"GET " + target + b" HTTP/1.1\r\nhost: catalog\r\n" + peer
    writer.write(request + b"connection: close\r\n\r\n")
    try:
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    fields: Mapping[str, str] = dict(
        (name.lower(), value) for name, _, value in (line.partition(": ") for line in head[1:])
    )
    return int(head[0].split()[1]), fields.get("shoal-reason")


def test_the_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 45
    assert {NO_ADMIN, BAD_PATH, UNPARSABLE, NOT_ADMIN} == set(CORPUS.values())


async def test_no_spelling_of_a_denied_path_reaches_the_app() -> None:
    rules = [{"name": "no-admin", "action": "deny", "paths": [ADMIN]}]
    policies = StaticPolicies({SERVICE: catalog_policy(rules)})
    async with guarded(policies) as (app, base):
        port = int(base.rsplit(":", 1)[1])
        got = {target: await raw_get(port, target) for target in CORPUS}
    assert got == CORPUS
    assert app.admin_hits == 0
    assert all(not (path == ADMIN or path.startswith(ADMIN + "/")) for path, _, _ in app.seen)
    assert len(app.seen) == list(CORPUS.values()).count(NOT_ADMIN)


async def test_the_corpus_with_an_allow_rule_elsewhere_and_no_caller() -> None:
    """Denied as unauthenticated before the path is even matched; bad paths stay 400."""
    policies = StaticPolicies({SERVICE: catalog_policy([{"paths": ["/items"]}])})
    async with guarded(policies) as (app, base):
        port = int(base.rsplit(":", 1)[1])
        got = {target: await raw_get(port, target, caller=None) for target in CORPUS}
    expected = {
        target: outcome if outcome in (BAD_PATH, UNPARSABLE) else (403, UNAUTHENTICATED)
        for target, outcome in CORPUS.items()
    }
    assert got == expected
    assert app.seen == []
