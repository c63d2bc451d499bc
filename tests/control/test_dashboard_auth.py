"""The dashboard's login and serving: one-time tickets that expire, a session cookie that
reads (GET) but never acts (POST), only the shipped files, and a strict page policy."""

from __future__ import annotations

import json
import re
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from importlib.resources import files
from typing import Any

import pytest

from shoal.control._api import ControlAPI
from shoal.control._dashboard import TICKET_SECONDS, Dashboard
from shoal.testing import ManualClock

TOKEN = "s3cret-token"
URL = "http://127.0.0.1:4321"
BEARER = ("authorization", f"Bearer {TOKEN}")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    cookies: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.body.decode()


class FakeSupervisor:
    app = "shop"
    config_admin = None  # the config API answers "still starting"

    def __init__(self) -> None:
        self.scaled: list[tuple[str, int]] = []

    def ps(self) -> list[dict[str, Any]]:
        return [{"service": "orders", "instance": "orders-1", "health": "ready"}]

    def not_ready(self) -> list[Any]:
        return []

    async def scale(self, service: str, replicas: int) -> None:
        self.scaled.append((service, replicas))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def api(clock: ManualClock) -> ControlAPI:
    downs: list[bool] = []
    control = ControlAPI(
        FakeSupervisor(),  # type: ignore[arg-type]
        TOKEN,
        lambda: downs.append(True),
        {"control": URL},
    )
    control.dashboard = Dashboard(URL, clock=clock)
    return control


async def call(
    app: ControlAPI,
    method: str,
    path: str,
    *headers: tuple[str, str],
    query: str = "",
    body: bytes = b"",
) -> Answer:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query.encode(),
        "headers": [(k.encode(), v.encode()) for k, v in headers],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    await app(scope, receive, send)
    start = sent[0]
    raw = [(k.decode(), v.decode()) for k, v in start["headers"]]
    return Answer(
        status=start["status"],
        headers=dict(raw),
        body=b"".join(m.get("body", b"") for m in sent[1:]),
        cookies=[v for k, v in raw if k == "set-cookie"],
    )


async def ticket(app: ControlAPI) -> str:
    answer = await call(app, "POST", "/v1/dashboard/ticket", BEARER)
    assert answer.status == 200, answer.text
    url = json.loads(answer.body)["url"]
    match = re.fullmatch(re.escape(URL) + r"/dashboard/login\?ticket=([\w-]{40,})", url)
    assert match, url
    return match.group(1)


async def login(app: ControlAPI) -> tuple[str, str]:
    """A session cookie, as a (name, value) request header pair."""
    answer = await call(app, "GET", "/dashboard/login", query=f"ticket={await ticket(app)}")
    assert answer.status == 303
    jar: SimpleCookie = SimpleCookie()
    jar.load(answer.cookies[0])
    (name,) = jar.keys()
    return ("cookie", f"{name}={jar[name].value}")


async def test_a_ticket_needs_the_bearer_token(api: ControlAPI) -> None:
    assert (await call(api, "POST", "/v1/dashboard/ticket")).status == 401
    wrong = ("authorization", "Bearer nope")
    assert (await call(api, "POST", "/v1/dashboard/ticket", wrong)).status == 401
    assert await ticket(api)


async def test_a_ticket_logs_in_once_with_a_strict_http_only_cookie(api: ControlAPI) -> None:
    t = await ticket(api)
    answer = await call(api, "GET", "/dashboard/login", query=f"ticket={t}")
    assert answer.status == 303
    assert answer.headers["location"] == "/dashboard/"
    (cookie,) = answer.cookies
    assert cookie.startswith("shoal_session_4321=")
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes

    again = await call(api, "GET", "/dashboard/login", query=f"ticket={t}")
    assert again.status == 403
    assert "shoal dashboard" in again.text
    assert not again.cookies


@pytest.mark.parametrize("query", ["", "ticket=", "ticket=made-up", "ticket=<script>"])
async def test_a_missing_or_unknown_ticket_is_refused(api: ControlAPI, query: str) -> None:
    answer = await call(api, "GET", "/dashboard/login", query=query)
    assert answer.status == 403
    assert "shoal dashboard" in answer.text
    assert "<script>" not in answer.text  # the page never echoes the request


async def test_a_ticket_expires(api: ControlAPI, clock: ManualClock) -> None:
    fresh, stale = await ticket(api), await ticket(api)
    clock.advance(TICKET_SECONDS - 1)
    assert (await call(api, "GET", "/dashboard/login", query=f"ticket={fresh}")).status == 303
    clock.advance(2)
    assert (await call(api, "GET", "/dashboard/login", query=f"ticket={stale}")).status == 403


async def test_the_cookie_reads_the_api_and_the_page(api: ControlAPI) -> None:
    cookie = await login(api)
    ps = await call(api, "GET", "/v1/ps", cookie)
    assert ps.status == 200
    assert b"orders-1" in ps.body
    page = await call(api, "GET", "/dashboard/", cookie)
    assert page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert 'id="graph"' in page.text


async def test_the_cookie_cannot_act(api: ControlAPI) -> None:
    cookie = await login(api)
    supervisor = api.supervisor
    body = b'{"service": "orders", "replicas": 0}'
    for path in ("/v1/scale", "/v1/down", "/v1/apply", "/v1/dashboard/ticket"):
        answer = await call(
            api, "POST", path, cookie, ("content-type", "application/json"), body=body
        )
        assert answer.status == 401, path
    assert supervisor.scaled == []  # type: ignore[attr-defined]
    # the bearer token still acts
    answer = await call(api, "POST", "/v1/scale", BEARER, body=body)
    assert answer.status == 200
    assert supervisor.scaled == [("orders", 0)]  # type: ignore[attr-defined]


async def test_the_cookie_reads_config_and_secrets_but_never_changes_them(api: ControlAPI) -> None:
    """The page's events and configuration sections read; replay and config set stay CLI's."""
    cookie = await login(api)
    for path in ("/v1/config/orders/values", "/v1/config/orders/history", "/v1/secrets/orders"):
        answer = await call(api, "GET", path, cookie)
        assert answer.status == 400, path  # admitted: the (fake) app is still starting
        assert b"still starting" in answer.body
    writes = [
        ("POST", "/v1/events/replay"),
        ("POST", "/v1/config/orders/values"),
        ("DELETE", "/v1/config/orders/values/page_size"),
        ("PUT", "/v1/secrets/orders/api_key"),
        ("DELETE", "/v1/secrets/orders/api_key"),
    ]
    for method, path in writes:
        answer = await call(api, method, path, cookie, body=b'{"all": true, "value": "x"}')
        assert answer.status == 401, (method, path)
        if "/events/" not in path:  # the token is let through (the fake has no backbone)
            answer = await call(api, method, path, BEARER, body=b'{"values": {}, "value": "x"}')
            assert answer.status == 400, (method, path)
            assert b"still starting" in answer.body


async def test_no_session_no_page(api: ControlAPI, clock: ManualClock) -> None:
    for headers in [(), (("cookie", "shoal_session_4321=forged"),), (("cookie", "garbage;;=="),)]:
        page = await call(api, "GET", "/dashboard/", *headers)
        assert page.status == 401
        assert "shoal dashboard" in page.text
        assert (await call(api, "GET", "/v1/ps", *headers)).status == 401
    cookie = await login(api)
    clock.advance(25 * 3600)  # sessions last a day
    assert (await call(api, "GET", "/v1/ps", cookie)).status == 401


async def test_another_apps_cookie_does_not_count(api: ControlAPI) -> None:
    name, value = (await login(api))[1].split("=", 1)
    other = Dashboard("http://127.0.0.1:9999")
    assert other.cookie != name
    scope = {"method": "GET", "headers": [(b"cookie", f"{other.cookie}={value}".encode())]}
    assert not api.dashboard.admits(scope)


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/static/../../control/_api.py",
        "/dashboard/../control/_api.py",
        "/dashboard/static/%2e%2e/%2e%2e/control/_api.py",
        "/dashboard//etc/passwd",
        "/dashboard/static/vendor/uplot/LICENSE",
        "/dashboard/static/vendor/VERSIONS",
        "/dashboard/static/",
        "/dashboard/index.html/",
        "/dashboard/static/app.js.map",
    ],
)
async def test_only_shipped_page_files_are_served(api: ControlAPI, path: str) -> None:
    answer = await call(api, "GET", path, BEARER)
    assert answer.status == 404
    assert b"import" not in answer.body


async def test_static_files_have_their_types_and_cache_headers(api: ControlAPI) -> None:
    js = await call(api, "GET", "/dashboard/static/app.js", BEARER)
    assert js.status == 200
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert js.headers["cache-control"] == "no-cache"
    css = await call(api, "GET", "/dashboard/static/app.css", BEARER)
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    for vendored in (
        "cytoscape/cytoscape.min.js",
        "uplot/uPlot.iife.min.js",
        "uplot/uPlot.min.css",
    ):
        answer = await call(api, "GET", f"/dashboard/static/vendor/{vendored}", BEARER)
        assert answer.status == 200, vendored
        assert answer.headers["cache-control"] == "private, max-age=86400"
        assert int(answer.headers["content-length"]) == len(answer.body) > 1000


async def test_the_page_has_a_strict_content_security_policy(api: ControlAPI) -> None:
    page = await call(api, "GET", "/dashboard/", BEARER)
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    # no inline script: every <script> loads a file of the package, nothing from elsewhere
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts
    for attributes, content in scripts:
        assert content.strip() == ""
        assert re.search(r'src="static/[\w/.]+\.js"', attributes), attributes
    assert "http://" not in page.text
    assert "https://" not in page.text


def test_the_page_script_never_parses_data_as_html() -> None:
    """Every piece of data goes in as text (textContent, the page's `el` helper)."""
    script = (files("shoal.dashboard") / "static" / "app.js").read_text()
    sinks = r"\.(innerHTML|outerHTML|insertAdjacentHTML)\b|document\.write|\beval\(|new Function"
    assert not re.findall(sinks, script)
    assert "textContent" in script


async def test_dashboard_without_slash_redirects(api: ControlAPI) -> None:
    answer = await call(api, "GET", "/dashboard")
    assert answer.status == 303
    assert answer.headers["location"] == "/dashboard/"


async def test_the_page_only_reads(api: ControlAPI) -> None:
    answer = await call(api, "POST", "/dashboard/", BEARER)
    assert answer.status == 405
