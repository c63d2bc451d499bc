"""The dashboard's side of the control API: its static page, and how a browser logs in.

A browser cannot send the bearer token, so the CLI trades it for a link:

POST /v1/dashboard/ticket          (bearer token) -> {"url": ".../dashboard/login?ticket=T"}
GET  /dashboard/login?ticket=T     T is single-use and lasts 120 s: sets a session cookie
                                   (HttpOnly, SameSite=Strict) and redirects to the page
GET  /dashboard/, /dashboard/static/...   the page (bearer token or session cookie)

The cookie also admits ``GET /v1/*`` (what the page reads), never a POST: a page
elsewhere cannot make the browser scale or stop the app with it. Cookies ignore
ports, so the cookie is named after the control API's port: two apps on one
machine keep their own sessions. Files are served from a list made at start-up
of what the package ships, so no path can reach outside it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from http.cookies import CookieError, SimpleCookie
from importlib.resources import files
from importlib.resources.abc import Traversable
from urllib.parse import parse_qs, urlsplit

from shoal._asgi import send_json
from shoal.types import Scope, Send

__all__ = ["TICKET_SECONDS", "Dashboard"]

TICKET_SECONDS = 120.0
SESSION_SECONDS = 24 * 3600.0
_MAX_PENDING = 64  # tickets or sessions kept at once; the oldest go first

_CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
}
_CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    b"frame-ancestors 'none'"
)
_PAGE_HEADERS = [
    (b"content-security-policy", _CSP),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_NEW_LINK = "Run <code>shoal dashboard</code> in the app's directory for a new link."


class _Passes:
    """Random secrets that expire; only their hashes are kept."""

    def __init__(self, lifetime: float, clock: Callable[[], float]) -> None:
        self._lifetime = lifetime
        self._clock = clock
        self._expiry: dict[bytes, float] = {}

    def issue(self) -> str:
        now = self._clock()
        self._expiry = {k: t for k, t in self._expiry.items() if t > now}
        while len(self._expiry) >= _MAX_PENDING:
            del self._expiry[min(self._expiry, key=self._expiry.__getitem__)]
        secret = secrets.token_urlsafe(32)
        self._expiry[_digest(secret)] = now + self._lifetime
        return secret

    def valid(self, secret: str) -> bool:
        expiry = self._expiry.get(_digest(secret))
        return expiry is not None and expiry > self._clock()

    def spend(self, secret: str) -> bool:
        """True once for a valid secret; it is gone afterwards."""
        expiry = self._expiry.pop(_digest(secret), None)
        return expiry is not None and expiry > self._clock()


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Dashboard:
    """Serves the page and its login for the control API at ``control_url``.

    ``clock`` (monotonic seconds) is injectable so expiry is tested without waiting.
    """

    def __init__(self, control_url: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.control_url = control_url.rstrip("/")
        self.cookie = f"shoal_session_{urlsplit(self.control_url).port or 0}"
        self._tickets = _Passes(TICKET_SECONDS, clock)
        self._sessions = _Passes(SESSION_SECONDS, clock)
        self._files = _static_files()

    def ticket_url(self) -> str:
        """A one-time login link, valid for :data:`TICKET_SECONDS`."""
        return f"{self.control_url}/dashboard/login?ticket={self._tickets.issue()}"

    def admits(self, scope: Scope) -> bool:
        """True for a GET with a live session cookie (what the page may do without the token)."""
        if scope["method"] != "GET":
            return False
        session = _cookie(scope, self.cookie)
        return session is not None and self._sessions.valid(session)

    async def handle(self, scope: Scope, send: Send, *, bearer: bool) -> bool:
        """Answer the dashboard's own paths; False for any other path (the API's)."""
        path, method = scope["path"], scope["method"]
        if (method, path) == ("POST", "/v1/dashboard/ticket"):
            if not bearer:
                return False  # the API answers 401
            await send_json(send, 200, {"url": self.ticket_url()})
            return True
        if path == "/dashboard":
            await _redirect(send, "/dashboard/")
            return True
        if not path.startswith("/dashboard/"):
            return False
        if method != "GET":
            await _page(send, 405, "Method not allowed", "The dashboard only reads.")
        elif path == "/dashboard/login":
            await self._login(scope, send)
        elif not (bearer or self.admits(scope)):
            await _page(send, 401, "Not logged in", f"This browser has no session. {_NEW_LINK}")
        else:
            await self._static(path.removeprefix("/dashboard/") or "index.html", send)
        return True

    async def _login(self, scope: Scope, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        ticket = (query.get("ticket") or [""])[-1]
        if not ticket or not self._tickets.spend(ticket):
            await _page(
                send,
                403,
                "This link does not work",
                f"Dashboard links work once, within {TICKET_SECONDS:.0f} seconds. {_NEW_LINK}",
            )
            return
        cookie = f"{self.cookie}={self._sessions.issue()}; HttpOnly; SameSite=Strict; Path=/"
        await _redirect(send, "/dashboard/", [(b"set-cookie", cookie.encode())])

    async def _static(self, name: str, send: Send) -> None:
        source = self._files.get(name)
        if source is None:
            await _page(send, 404, "Not found", "The dashboard has no such file.")
            return
        body = source.read_bytes()
        cache = b"private, max-age=86400" if name.startswith("static/vendor/") else b"no-cache"
        headers = [
            (b"content-type", _CONTENT_TYPES[_suffix(name)]),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", cache),
            *_PAGE_HEADERS,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _static_files() -> dict[str, Traversable]:
    """``index.html`` and ``static/...`` -> the shipped file; nothing else is served."""
    root = files("shoal.dashboard") / "static"
    found: dict[str, Traversable] = {}
    pending: list[tuple[str, Traversable]] = [("static/", root)]
    while pending:
        prefix, folder = pending.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                pending.append((f"{prefix}{entry.name}/", entry))
            elif _suffix(entry.name) in _CONTENT_TYPES:
                found[prefix + entry.name] = entry
    if "static/index.html" in found:
        found["index.html"] = found.pop("static/index.html")
    return found


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:] if dot > name.rfind("/") else ""


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope["headers"]:
        if key != b"cookie":
            continue
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(value.decode("latin-1"))
        except CookieError:
            continue
        if name in jar:
            return jar[name].value
    return None


async def _redirect(send: Send, location: str, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", location.encode()),
                (b"content-length", b"0"),
                (b"cache-control", b"no-store"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def _page(send: Send, status: int, title: str, message_html: str) -> None:
    """A small HTML answer; ``message_html`` is shoal's own text, never request data."""
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>shoal: {title}</title><h1>{title}</h1><p>{message_html}</p></html>"
    ).encode()
    headers = [
        (b"content-type", _CONTENT_TYPES[".html"]),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *_PAGE_HEADERS,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
