"""JWT validation on gateway routes: the verifier alone, then through the real gateway."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from test_gateway import drive_lifespan, echo, upstream

import shoal
from asgi_server import HOST, serve_asgi
from shoal.gateway import USER_HEADER, Gateway, user_claims
from shoal.gateway._headers import request_headers
from shoal.gateway._jwks import CACHE_TTL, REFETCH_INTERVAL, JwksUnavailableError, parse_jwks
from shoal.gateway._jwt import LEEWAY, JwtRejectedError, JwtVerifier
from shoal.gateway._routes import RouteTable
from shoal.gateway._user import encode_claims
from shoal.manifest import RouteSpec
from shoal.manifest._jwt import JwtSpec
from shoal.registry import Discovery, MemoryRegistry
from shoal.types import ASGIApp, Receive, Scope, Send

Mesh = tuple[MemoryRegistry, Discovery]

ISSUER = "https://login.example.com"
AUDIENCE = "shop"
NOW = float(int(time.time()))

RSA_1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_1 = ec.generate_private_key(ec.SECP256R1())
ED_1 = ed25519.Ed25519PrivateKey.generate()


def jwk(key: Any, kid: str | None, **extra: str) -> dict[str, Any]:
    """The public JWK of a private key."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    assert isinstance(data, dict)
    return {**data, **({"kid": kid} if kid else {}), **extra}


KEYS = [jwk(RSA_1, "rsa-1"), jwk(RSA_2, "rsa-2"), jwk(EC_1, "ec-1"), jwk(ED_1, "ed-1")]


def claims(**changes: Any) -> dict[str, Any]:
    """Good claims, with ``changes`` (a value of None leaves the claim out)."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": NOW,
        "exp": NOW + 600,
        "roles": ["buyer"],
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def token(
    payload: dict[str, Any] | None = None,
    *,
    key: Any = RSA_1,
    alg: str = "RS256",
    kid: str | None = "rsa-1",
) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims() if payload is None else payload, key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any]) -> str:
    return b64(json.dumps(value).encode())


def bearer(value: str) -> str:
    return f"Bearer {value}"


def write_jwks(directory: Path, keys: list[dict[str, Any]], name: str = "jwks.json") -> Path:
    path = directory / name
    path.write_text(json.dumps({"keys": keys}), encoding="utf-8")
    return path


def verifier(directory: Path, keys: list[dict[str, Any]] | None = None, **spec: Any) -> JwtVerifier:
    write_jwks(directory, KEYS if keys is None else keys)
    settings: dict[str, Any] = {"jwks": "jwks.json", "issuer": ISSUER, "audience": AUDIENCE}
    settings.update(spec)
    return JwtVerifier(JwtSpec(**settings), directory, clock=lambda: NOW)


async def rejection(check: JwtVerifier, authorization: str | None) -> str:
    with pytest.raises(JwtRejectedError) as caught:
        await check.verify(authorization)
    return caught.value.reason


# --- the verifier: what passes ------------------------------------------------------


async def test_a_valid_token_gives_its_claims(tmp_path: Path) -> None:
    check = verifier(tmp_path)
    assert await check.verify(bearer(token())) == claims()
    assert await check.verify("bearer  " + token()) == claims()  # the scheme is case-blind


@pytest.mark.parametrize(
    ("key", "alg", "kid"),
    [
        (RSA_2, "RS384", "rsa-2"),
        (RSA_1, "PS256", "rsa-1"),
        (EC_1, "ES256", "ec-1"),
        (ED_1, "EdDSA", "ed-1"),
    ],
)
async def test_each_asymmetric_family_verifies_with_a_key_of_its_kind(
    tmp_path: Path, key: Any, alg: str, kid: str
) -> None:
    check = verifier(tmp_path, algorithms=[alg])
    assert await check.verify(bearer(token(key=key, alg=alg, kid=kid))) == claims()


async def test_audience_may_be_one_of_several_either_side(tmp_path: Path) -> None:
    check = verifier(tmp_path, audience=["admin", "shop"])
    assert await check.verify(bearer(token(claims(aud=["shop", "other"]))))
    assert await rejection(check, bearer(token(claims(aud=["other"])))) == "wrong-audience"


async def test_issuer_and_audience_are_not_checked_when_not_set(tmp_path: Path) -> None:
    check = verifier(tmp_path, issuer=None, audience=None)
    loose = claims(iss="https://elsewhere.example", aud="anyone")
    assert await check.verify(bearer(token(loose))) == loose
    assert await check.verify(bearer(token(claims(iss=None, aud=None))))


async def test_a_token_just_past_its_expiry_passes_within_the_leeway(tmp_path: Path) -> None:
    check = verifier(tmp_path)
    assert await check.verify(bearer(token(claims(exp=NOW - LEEWAY + 1))))
    assert await check.verify(bearer(token(claims(nbf=NOW + LEEWAY - 1))))
    assert LEEWAY == 30


# --- the verifier: what does not ----------------------------------------------------


async def test_an_expired_token_is_rejected(tmp_path: Path) -> None:
    check = verifier(tmp_path)
    with pytest.raises(JwtRejectedError, match="expired 2m ago") as caught:
        await check.verify(bearer(token(claims(exp=NOW - 120))))
    assert caught.value.reason == "expired"
    assert await rejection(check, bearer(token(claims(exp=NOW - LEEWAY - 1)))) == "expired"


async def test_a_token_without_expiry_is_rejected(tmp_path: Path) -> None:
    check = verifier(tmp_path)
    assert await rejection(check, bearer(token(claims(exp=None)))) == "malformed"
    assert await rejection(check, bearer(token(claims(exp="tomorrow")))) == "malformed"


async def test_a_token_not_yet_valid_is_rejected(tmp_path: Path) -> None:
    check = verifier(tmp_path)
    assert await rejection(check, bearer(token(claims(nbf=NOW + 600)))) == "not-yet-valid"
    assert await rejection(check, bearer(token(claims(iat=NOW + 600)))) == "not-yet-valid"


async def test_a_token_for_another_audience_is_rejected(tmp_path: Path) -> None:
    check = verifier(tmp_path)
    assert await rejection(check, bearer(token(claims(aud="billing")))) == "wrong-audience"
    assert await rejection(check, bearer(token(claims(aud=None)))) == "wrong-audience"


async def test_a_token_from_another_issuer_is_rejected(tmp_path: Path) -> None:
    check = verifier(tmp_path)
    evil = claims(iss="https://login.example.com.evil.example")
    assert await rejection(check, bearer(token(evil))) == "wrong-issuer"
    assert await rejection(check, bearer(token(claims(iss=None)))) == "wrong-issuer"


async def test_an_unsigned_alg_none_token_is_rejected(tmp_path: Path) -> None:
    check = verifier(tmp_path)
    for header in ({"alg": "none"}, {"alg": "none", "kid": "rsa-1"}, {"alg": "None"}):
        unsigned = f"{segment(header)}.{segment(claims())}."
        assert await rejection(check, bearer(unsigned)) == "bad-algorithm"


async def test_hmac_signed_with_the_rsa_public_key_is_rejected(tmp_path: Path) -> None:
    """The classic confusion: HS256 "signed" with the public key's PEM as the secret."""
    pem = RSA_1.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    check = verifier(tmp_path)
    for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
        signing_input = f"{segment({'alg': alg, 'kid': 'rsa-1'})}.{segment(claims())}"
        mac = hmac.new(pem, signing_input.encode(), digest).digest()
        forged = f"{signing_input}.{b64(mac)}"
        assert await rejection(check, bearer(forged)) == "bad-algorithm"


async def test_a_key_is_used_only_with_its_own_algorithm(tmp_path: Path) -> None:
    check = verifier(tmp_path, algorithms=["RS256", "ES256", "EdDSA"])
    # An EC signature presented as coming from the RSA key, and the reverse.
    on_rsa = token(key=EC_1, alg="ES256", kid="rsa-1")
    on_ec = token(key=RSA_1, alg="RS256", kid="ec-1")
    assert await rejection(check, bearer(on_rsa)) == "bad-algorithm"
    assert await rejection(check, bearer(on_ec)) == "bad-algorithm"
    # A JWK that names its algorithm is used with that one only.
    pinned = verifier(tmp_path, [jwk(RSA_1, "rsa-1", alg="RS512")], algorithms=["RS256", "RS512"])
    assert await rejection(pinned, bearer(token())) == "bad-algorithm"
    assert await pinned.verify(bearer(token(alg="RS512")))


async def test_an_algorithm_the_route_does_not_allow_is_rejected(tmp_path: Path) -> None:
    check = verifier(tmp_path, algorithms=["ES256"])
    with pytest.raises(JwtRejectedError, match=r"alg 'RS256' is not allowed \(ES256\)"):
        await check.verify(bearer(token()))


def tamper(value: str, part: int, index: int) -> str:
    parts = value.split(".")
    chars = list(parts[part])
    chars[index] = "A" if chars[index] != "A" else "B"
    parts[part] = "".join(chars)
    return ".".join(parts)


async def test_a_tampered_token_is_rejected(tmp_path: Path) -> None:
    check = verifier(tmp_path, algorithms=["RS256", "ES256"])
    good = token()
    assert await rejection(check, bearer(tamper(good, 1, 5))) == "bad-signature"
    assert await rejection(check, bearer(tamper(good, 2, 5))) == "bad-signature"
    header, _, signature = good.split(".")
    promoted = f"{header}.{segment(claims(sub='admin', roles=['admin']))}.{signature}"
    assert await rejection(check, bearer(promoted)) == "bad-signature"
    ec_good = token(key=EC_1, alg="ES256", kid="ec-1")
    assert await rejection(check, bearer(tamper(ec_good, 1, 5))) == "bad-signature"


async def test_a_token_signed_by_another_key_with_a_known_kid_is_rejected(tmp_path: Path) -> None:
    check = verifier(tmp_path)
    assert await rejection(check, bearer(token(key=RSA_2, kid="rsa-1"))) == "bad-signature"


async def test_the_key_is_chosen_by_kid(tmp_path: Path) -> None:
    check = verifier(tmp_path)
    assert await check.verify(bearer(token(key=RSA_2, kid="rsa-2")))
    assert await rejection(check, bearer(token(kid="rsa-9"))) == "unknown-key"
    # No kid: only a JWKS with a single key can say which.
    assert await rejection(check, bearer(token(kid=None))) == "unknown-key"
    single = verifier(tmp_path, [jwk(RSA_1, None)])
    assert await single.verify(bearer(token(kid=None))) == claims()
    assert await rejection(single, bearer(token(kid="rsa-1"))) == "unknown-key"


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "missing-token"),
        ("", "missing-token"),
        ("Bearer", "missing-token"),
        ("Bearer   ", "missing-token"),
        ("Basic YWxpY2U6c2VjcmV0", "missing-token"),
        ("Bearer abc", "malformed"),
        ("Bearer a.b", "malformed"),
        ("Bearer a.b.c", "malformed"),
        ("Bearer !!!.e30.", "malformed"),
        (f"Bearer {segment({'kid': 'rsa-1'})}.e30.", "malformed"),  # no alg
        (f"Bearer {segment({'alg': 'RS256', 'kid': 7})}.e30.", "malformed"),
        (f"Bearer {b64(b'[1]')}.e30.", "malformed"),
    ],
)
async def test_missing_or_unreadable_tokens_are_rejected(
    tmp_path: Path, authorization: str | None, reason: str
) -> None:
    assert await rejection(verifier(tmp_path), authorization) == reason


# --- JWKS files ---------------------------------------------------------------------


def test_a_missing_jwks_file_is_an_error_naming_it(tmp_path: Path) -> None:
    spec = JwtSpec(jwks="keys/jwks.json")
    with pytest.raises(shoal.ManifestError) as caught:
        JwtVerifier(spec, tmp_path, prefix="/api")
    assert str(caught.value) == (
        f"{tmp_path / 'keys' / 'jwks.json'}: the JWKS of gateway route '/api': "
        "no such file (jwks: is relative to the app directory)"
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{", "not valid JSON"),
        ('{"kty": "RSA"}', 'expected a JWKS: a JSON object {"keys": [...]}'),
        ('{"keys": []}', "holds no signature key"),
        (
            json.dumps({"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}),
            "keys[0] (kid 's'): a symmetric (shared secret) key: only public keys are accepted",
        ),
        (
            json.dumps({"keys": [jwk(RSA_2, "ok"), {**jwk(RSA_1, "p"), "d": "AQAB"}]}),
            "keys[1] (kid 'p'): a private key: a JWKS for verifying holds public keys only",
        ),
        (json.dumps({"keys": [{"kty": "RSA", "n": "AQAB"}]}), "keys[0]: not a valid RSA key"),
        (json.dumps({"keys": [{"kty": "XYZ"}]}), "unsupported key type (kty) 'XYZ'"),
        (
            json.dumps({"keys": [jwk(RSA_1, "k", alg="HS256")]}),
            "alg 'HS256' is not an asymmetric signature algorithm",
        ),
    ],
)
def test_a_bad_jwks_file_is_an_error_saying_what_is_wrong(
    tmp_path: Path, content: str, problem: str
) -> None:
    (tmp_path / "jwks.json").write_text(content, encoding="utf-8")
    with pytest.raises(shoal.ManifestError, match="the JWKS of gateway route") as caught:
        JwtVerifier(JwtSpec(jwks="jwks.json"), tmp_path)
    assert problem in str(caught.value)


def test_short_rsa_keys_and_encryption_keys_are_left_out() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    doc = {"keys": [jwk(weak, "weak"), jwk(RSA_1, "enc", use="enc"), jwk(EC_1, "ok")]}
    keys, problems = parse_jwks(json.dumps(doc).encode())
    assert [key.kid for key in keys.keys] == ["ok"]
    assert problems == ["keys[0] (kid 'weak'): an RSA key of 1024 bits: at least 2048 needed"]


# --- JWKS URLs ----------------------------------------------------------------------


class JwksServer:
    """Serves a JWKS at /jwks, counting requests; ``failing`` makes it answer 500."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.requests = 0
        self.failing = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.requests += 1
        status, body = (500, b"down") if self.failing else (200, json.dumps({"keys": self.keys}))
        payload = body if isinstance(body, bytes) else body.encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def url_verifier(server: JwksServer, clock: Clock, **spec: Any) -> AsyncIterator[JwtVerifier]:
    async with serve_asgi(server) as port:
        settings = JwtSpec(jwks=f"http://{HOST}:{port}/jwks", **spec)
        check = JwtVerifier(settings, Path("/nonexistent"), clock=clock)
        try:
            yield check
        finally:
            await check.aclose()


async def test_a_jwks_url_is_fetched_on_first_use_and_cached() -> None:
    server, clock = JwksServer([jwk(RSA_1, "rsa-1")]), Clock()
    async with url_verifier(server, clock) as check:
        assert server.requests == 0
        assert await check.verify(bearer(token())) == claims()
        clock.now += CACHE_TTL - 1
        assert await check.verify(bearer(token()))
        assert server.requests == 1
        clock.now += 1  # stale now: fetched again
        assert await check.verify(bearer(token()))
        assert server.requests == 2


async def test_an_unknown_kid_fetches_the_jwks_again_at_most_every_30s() -> None:
    server, clock = JwksServer([jwk(RSA_1, "rsa-1")]), Clock()
    async with url_verifier(server, clock) as check:
        assert await check.verify(bearer(token()))
        server.keys = [jwk(RSA_1, "rsa-1"), jwk(RSA_2, "rsa-2")]  # the issuer rotates
        clock.now += REFETCH_INTERVAL
        assert await check.verify(bearer(token(key=RSA_2, kid="rsa-2")))
        assert server.requests == 2
        # A stream of tokens with made-up kids does not hammer the issuer.
        for kid in ("x1", "x2", "x3"):
            assert await rejection(check, bearer(token(kid=kid))) == "unknown-key"
        assert server.requests == 2
        clock.now += REFETCH_INTERVAL - 1
        assert await rejection(check, bearer(token(kid="x4"))) == "unknown-key"
        assert server.requests == 2
        clock.now += 1
        assert await rejection(check, bearer(token(kid="x5"))) == "unknown-key"
        assert server.requests == 3


async def test_a_failed_fetch_keeps_the_cached_keys(caplog: pytest.LogCaptureFixture) -> None:
    server, clock = JwksServer([jwk(RSA_1, "rsa-1")]), Clock()
    async with url_verifier(server, clock) as check:
        assert await check.verify(bearer(token()))
        server.failing = True
        clock.now += CACHE_TTL
        assert await check.verify(bearer(token())) == claims()
        assert server.requests == 2
        assert "HTTP 500 (keeping the keys held)" in caplog.text
        clock.now += 1  # no new attempt at once
        assert await check.verify(bearer(token()))
        assert server.requests == 2


async def test_without_any_keys_fetched_the_route_is_unavailable() -> None:
    server, clock = JwksServer([jwk(RSA_1, "rsa-1")]), Clock()
    server.failing = True
    async with url_verifier(server, clock) as check:
        with pytest.raises(JwksUnavailableError, match="cannot be fetched"):
            await check.verify(bearer(token()))
        server.failing = False
        with pytest.raises(JwksUnavailableError):  # not tried again at once
            await check.verify(bearer(token()))
        assert server.requests == 1
        clock.now += 5
        assert await check.verify(bearer(token())) == claims()
        assert server.requests == 2


async def test_a_jwks_url_nobody_listens_on_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        closed = sock.getsockname()[1]
    spec = JwtSpec(jwks=f"http://{HOST}:{closed}/jwks")
    check = JwtVerifier(spec, Path("/nonexistent"), clock=Clock())
    try:
        with pytest.raises(JwksUnavailableError):
            await check.verify(bearer(token()))
    finally:
        await check.aclose()


# --- the shoal-user header ----------------------------------------------------------


def test_user_claims_reads_the_header_from_a_scope_or_headers() -> None:
    value = encode_claims({"sub": "zoë", "roles": ["a"]})
    assert b"=" not in value
    scope: Scope = {"type": "http", "headers": [(b"shoal-user", value)]}
    assert user_claims(scope) == {"sub": "zoë", "roles": ["a"]}
    assert user_claims({"Shoal-User": value.decode()}) == {"sub": "zoë", "roles": ["a"]}
    assert user_claims({"type": "http", "headers": []}) is None
    assert user_claims({"shoal-user": "not base64 json"}) is None
    assert user_claims({"shoal-user": b64(b"[1, 2]")}) is None
    assert USER_HEADER == "shoal-user"


def test_request_headers_always_drop_a_client_shoal_user() -> None:
    match = RouteTable([RouteSpec(prefix="/", service="svc")]).match(b"/x")
    assert match is not None
    scope: Scope = {"type": "http", "headers": [(b"shoal-user", b"e30"), (b"x-a", b"1")]}
    assert request_headers(scope, match)[:1] == [(b"x-a", b"1")]
    assert (b"shoal-user", b"e30") not in request_headers(scope, match)
    with_user = request_headers(scope, match, user=b"eyJ9")
    assert [v for n, v in with_user if n == b"shoal-user"] == [b"eyJ9"]


def test_request_headers_never_pass_on_a_dashboard_session_cookie() -> None:
    match = RouteTable([RouteSpec(prefix="/", service="svc")]).match(b"/x")
    assert match is not None

    def cookie(value: bytes) -> list[bytes]:
        scope: Scope = {"type": "http", "headers": [(b"cookie", value)]}
        return [v for n, v in request_headers(scope, match) if n == b"cookie"]

    assert cookie(b"a=1; shoal_session_4180=secret; b=2") == [b"a=1; b=2"]
    assert cookie(b"shoal_session_4180=secret") == []
    assert cookie(b"a=1") == [b"a=1"]


# --- through the gateway ------------------------------------------------------------


@contextlib.asynccontextmanager
async def jwt_gateway(
    mesh: Mesh, app_dir: Path, *routes: RouteSpec
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway over ``routes`` (JWKS files in ``app_dir``), served on a free port."""
    async with shoal.client(discovery=mesh[1], timeout=5) as through_mesh:
        gate = Gateway(routes, client=through_mesh, app_dir=app_dir)
        try:
            async with (
                serve_asgi(gate) as port,
                httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=10) as http,
            ):
                yield http
        finally:
            await gate.aclose()  # closes the clients fetching JWKS URLs


def counting(calls: list[str]) -> ASGIApp:
    """The echo service, noting each path it is asked for."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["path"])
        await echo(scope, receive, send)

    return app


def secured(prefix: str = "/api", **spec: Any) -> RouteSpec:
    settings: dict[str, Any] = {"jwks": "keys/jwks.json", "issuer": ISSUER, "audience": AUDIENCE}
    settings.update(spec)
    return RouteSpec(prefix=prefix, service="orders", jwt=JwtSpec(**settings))


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "keys").mkdir()
    write_jwks(tmp_path / "keys", KEYS)
    return tmp_path


def now_claims(**changes: Any) -> dict[str, Any]:
    """Claims valid now by the real clock (the gateway's own)."""
    moment = float(int(time.time()))
    return claims(**{"iat": moment, "exp": moment + 600, **changes})


async def test_a_valid_token_reaches_the_service_with_its_claims(
    discovery: Mesh, app_dir: Path
) -> None:
    good = now_claims()
    async with upstream(discovery, "orders"), jwt_gateway(discovery, app_dir, secured()) as http:
        response = await http.get("/api/orders", headers={"authorization": bearer(token(good))})
    assert response.status_code == 200
    seen = response.json()["headers"]
    assert user_claims(seen) == good
    assert seen["authorization"] == bearer(token(good))  # kept for services that want it


BAD_TOKENS = [
    pytest.param(None, "missing-token", id="missing"),
    pytest.param(token(now_claims(exp=time.time() - 3600)), "expired", id="expired"),
    pytest.param(token(now_claims(aud="billing")), "wrong-audience", id="wrong-audience"),
    pytest.param(token(now_claims(iss="https://evil.example")), "wrong-issuer", id="wrong-issuer"),
    pytest.param(
        f"{segment({'alg': 'none'})}.{segment(now_claims(sub='admin'))}.",
        "bad-algorithm",
        id="alg-none",
    ),
    pytest.param(tamper(token(now_claims()), 1, 5), "bad-signature", id="tampered"),
    pytest.param(token(now_claims(), kid="nope"), "unknown-key", id="unknown-kid"),
    pytest.param("abc", "malformed", id="malformed"),
]


@pytest.mark.parametrize(("presented", "reason"), BAD_TOKENS)
async def test_a_bad_token_is_401_and_never_reaches_the_service(
    discovery: Mesh, app_dir: Path, presented: str | None, reason: str
) -> None:
    calls: list[str] = []
    headers = {"authorization": bearer(presented)} if presented else {}
    async with (
        upstream(discovery, "orders", counting(calls)),
        jwt_gateway(discovery, app_dir, secured()) as http,
    ):
        response = await http.post("/api/orders", headers=headers, content=b"order")
    assert calls == []
    assert response.status_code == 401
    assert response.headers["shoal-reason"] == f"unauthenticated:{reason}"
    assert response.headers["shoal-route"] == "/api"
    body = response.json()
    assert (body["reason"], body["route"]) == (reason, "/api")
    challenge = response.headers["www-authenticate"]
    if reason == "missing-token":
        assert challenge == "Bearer"
    else:
        assert challenge == f'Bearer error="invalid_token", error_description="{body["error"]}"'


async def test_hmac_confusion_is_401_through_the_gateway(discovery: Mesh, app_dir: Path) -> None:
    pem = RSA_1.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{segment({'alg': 'HS256', 'kid': 'rsa-1'})}.{segment(now_claims())}"
    forged = f"{signing_input}.{b64(hmac.new(pem, signing_input.encode(), 'sha256').digest())}"
    async with upstream(discovery, "orders"), jwt_gateway(discovery, app_dir, secured()) as http:
        response = await http.get("/api/x", headers={"authorization": bearer(forged)})
    assert response.status_code == 401
    assert response.headers["shoal-reason"] == "unauthenticated:bad-algorithm"


async def test_a_spoofed_shoal_user_header_never_reaches_a_service(
    discovery: Mesh, app_dir: Path
) -> None:
    spoof = encode_claims({"sub": "admin", "roles": ["admin"]}).decode()
    good = now_claims()
    routes = (secured(), RouteSpec(prefix="/open", service="orders"))
    async with upstream(discovery, "orders"), jwt_gateway(discovery, app_dir, *routes) as http:
        open_route = await http.get("/open/x", headers={"shoal-user": spoof})
        both = {"shoal-user": spoof, "authorization": bearer(token(good))}
        secure_route = await http.get("/api/x", headers=both)
        spoof_only = await http.get("/api/x", headers={"shoal-user": spoof})
    assert open_route.status_code == 200
    assert "shoal-user" not in open_route.json()["headers"]
    assert secure_route.status_code == 200
    seen = secure_route.json()["headers"]
    assert user_claims(seen) == good
    assert seen["shoal-user"] == encode_claims(good).decode()  # one value: the gateway's
    assert spoof_only.status_code == 401
    assert spoof_only.headers["shoal-reason"] == "unauthenticated:missing-token"


async def test_two_authorization_headers_are_401(discovery: Mesh, app_dir: Path) -> None:
    good = bearer(token(now_claims()))
    async with upstream(discovery, "orders"), jwt_gateway(discovery, app_dir, secured()) as http:
        response = await http.get(
            "/api/x", headers=[("authorization", good), ("authorization", good)]
        )
    assert response.status_code == 401
    assert response.headers["shoal-reason"] == "unauthenticated:malformed"


async def test_the_gateway_fetches_a_jwks_url_and_answers_503_without_keys(
    discovery: Mesh, tmp_path: Path
) -> None:
    server, down = JwksServer([jwk(EC_1, "ec-1")]), JwksServer([])
    down.failing = True
    good = {"authorization": bearer(token(now_claims(), key=EC_1, alg="ES256", kid="ec-1"))}
    async with serve_asgi(server) as up_port, serve_asgi(down) as down_port:
        routes = (
            secured("/api", jwks=f"http://{HOST}:{up_port}/jwks", algorithms=["ES256"]),
            secured("/down", jwks=f"http://{HOST}:{down_port}/jwks"),
        )
        async with upstream(discovery, "orders"), jwt_gateway(discovery, tmp_path, *routes) as http:
            fetched = await http.get("/api/x", headers=good)
            cached = await http.get("/api/y", headers=good)
            unavailable = await http.get("/down/x", headers=good)
    assert (fetched.status_code, cached.status_code, server.requests) == (200, 200, 1)
    assert user_claims(cached.json()["headers"]) == now_claims() | {"iat": ANY, "exp": ANY}
    assert unavailable.status_code == 503
    assert unavailable.headers["shoal-reason"] == "jwks-unavailable"
    assert unavailable.headers["retry-after"] == "5"
    assert down.requests == 1


async def test_a_missing_jwks_file_fails_gateway_startup_naming_it(tmp_path: Path) -> None:
    failed = await drive_lifespan(Gateway([secured()], app_dir=tmp_path))
    assert failed[0]["type"] == "lifespan.startup.failed"
    assert str(tmp_path / "keys" / "jwks.json") in failed[0]["message"]
    assert "no such file" in failed[0]["message"]
