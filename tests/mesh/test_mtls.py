"""Mutual TLS on a mesh hop, over real loopback sockets: who the listener and the pool refuse.

Each server is shoal's own ``_Server`` (uvicorn behind :class:`MtlsListener`), in
the test's event loop; each client is an :class:`Http11Pool`. A refused handshake
must fail the client's request, be logged on ``shoal.mesh.tls`` with its reason
and counted by the listener, and never reach the app. The cases that matter
most run again on uvloop, the loop ``shoal serve`` uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest
import uvicorn
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shoal.control._ca import CertificateAuthority, new_key_and_csr, spiffe_id
from shoal.mesh._http11 import ConnectFailedError, Http11Pool
from shoal.mesh._peer import PEER_KEY, Peer, peer_of
from shoal.mesh._tls import Credentials, client_context, server_context
from shoal.runtime._identity import WorkloadIdentity
from shoal.runtime._serve import _Server
from shoal.runtime._tls_listener import MtlsListener

HOST = "127.0.0.1"
APP = "shop"
LOGGER = "shoal.mesh.tls"

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# --- identities ----------------------------------------------------------------------


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Identity:
    """What the listener and the pool need of a workload identity, from fixed credentials."""

    def __init__(
        self,
        creds: Credentials,
        *,
        client: ssl.SSLContext | None = None,
        server: ssl.SSLContext | None = None,
    ) -> None:
        self.creds = creds
        self.trust_domain = creds.trust_domain
        self.service = creds.spiffe_id.rsplit("/", 1)[-1]
        self._server = server or server_context(creds)
        self._client = client or client_context(creds)

    def server_context(self) -> ssl.SSLContext:
        return self._server

    def client_context(self) -> ssl.SSLContext:
        return self._client


def svid(
    ca: CertificateAuthority,
    service: str,
    *,
    lifetime: float = 3600.0,
    clock: Callable[[], datetime] | None = None,
    bundle: Sequence[x509.Certificate] | None = None,
    trust_domain: str | None = None,
) -> Identity:
    """An identity of ``service`` issued by ``ca`` (trusting ``bundle``, by default ``ca``'s)."""
    key, csr = new_key_and_csr(service)
    chain = ca.issue(csr, service, lifetime=lifetime, clock=clock)
    creds = Credentials(
        key_pem=_key_pem(key),
        chain=tuple(chain),
        bundle=tuple(bundle if bundle is not None else ca.bundle()),
        trust_domain=trust_domain or ca.trust_domain,
        spiffe_id=spiffe_id(ca.app, service),
    )
    return Identity(creds)


def forged(
    uris: Sequence[str],
    *,
    signer: CertificateAuthority | None,
    bundle: Sequence[x509.Certificate],
    trust_domain: str,
) -> Identity:
    """An identity with a hand-made leaf naming ``uris``: signed by ``signer``'s intermediate
    (with its private key, as only a test may), or self-signed if ``signer`` is None."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")])
    issuer_key = key if signer is None else signer._intermediate_key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if signer is None else signer.intermediate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    leaf = builder.sign(issuer_key, hashes.SHA256())
    chain = (leaf,) if signer is None else (leaf, signer.intermediate)
    creds = Credentials(
        key_pem=_key_pem(key),
        chain=chain,
        bundle=tuple(bundle),
        trust_domain=trust_domain,
        spiffe_id=uris[0] if uris else "",
    )
    return Identity(creds)


def _hours_ago(hours: float) -> Callable[[], datetime]:
    return lambda: datetime.now(UTC) - timedelta(hours=hours)


# --- a server ------------------------------------------------------------------------


class App:
    """An ASGI app that records the scope of every request it serves and names the caller."""

    def __init__(self) -> None:
        self.scopes: list[Message] = []

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.scopes.append(scope)
        peer = peer_of(scope)
        body = (peer.service if peer is not None else "nobody").encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Served:
    def __init__(self, app: App, port: int, listener: MtlsListener) -> None:
        self.app = app
        self.port = port
        self.listener = listener

    @property
    def refusals(self) -> dict[str, int]:
        return self.listener.refusals.counts

    async def refused(self, reason: str, timeout: float = 5.0) -> None:
        """Wait until the listener has counted a refusal for ``reason``."""
        async with asyncio.timeout(timeout):
            while reason not in self.refusals:  # noqa: ASYNC110 - the listener has no event
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def mtls_server(identity: Identity) -> AsyncIterator[Served]:
    """shoal's server, serving a recording app over mTLS as ``identity``, until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind((HOST, 0))
    sock.listen(128)
    sock.setblocking(False)
    app = App()
    config = uvicorn.Config(
        app,
        loop="none",
        http="httptools",
        ws="none",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )

    async def started() -> None:
        pass

    server = _Server(config, started, cast(WorkloadIdentity, identity))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10.0):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("the server stopped before it started")
                await asyncio.sleep(0.005)
        assert server.listener is not None
        yield Served(app, sock.getsockname()[1], server.listener)
    finally:
        server.should_exit = True
        await task
        sock.close()


async def call(
    served: Served,
    client: Identity | None,
    *,
    identity: str = spiffe_id(APP, "b"),
    headers: Sequence[tuple[str, str]] = (),
    requests: int = 1,
) -> list[httpx.Response]:
    """Send ``requests`` GETs to ``served`` over mTLS as ``client``, from a fresh pool."""
    pool = Http11Pool(tls=lambda: client)
    try:
        responses = []
        for i in range(requests):
            request = httpx.Request("GET", f"http://b/{i}", headers=list(headers))
            response = await pool.send(HOST, served.port, request, identity=identity)
            await response.aread()
            responses.append(response)
        return responses
    finally:
        await pool.aclose()


# --- fixtures ------------------------------------------------------------------------


class Mesh:
    """The app's CA and, for the other app, another; the identities the cases need."""

    def __init__(self) -> None:
        self.ca = CertificateAuthority.create(APP)
        self.other = CertificateAuthority.create("bank")

    def svid(self, service: str, **kwargs: Any) -> Identity:
        return svid(self.ca, service, **kwargs)


@pytest.fixture
def mesh() -> Mesh:
    return Mesh()


@pytest.fixture
async def served(mesh: Mesh) -> AsyncIterator[Served]:
    async with mtls_server(mesh.svid("b")) as running:
        yield running


@pytest.fixture
def tls_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        yield caplog


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.getMessage().startswith("refused a connection from ")
    ]


async def assert_refused(
    served: Served,
    caplog: pytest.LogCaptureFixture,
    reason: str,
    attempt: Awaitable[object],
) -> BaseException:
    """``attempt`` fails; the server counted and logged ``reason``; the app saw nothing."""
    with pytest.raises((ConnectFailedError, httpx.TransportError)) as info:
        await attempt
    await served.refused(reason)
    assert served.refusals == {reason: 1}
    lines = refusal_lines(caplog)
    assert len(lines) == 1, lines
    assert f": {reason} (" in lines[0]
    assert lines[0].startswith(f"refused a connection from {HOST}:")
    assert served.app.scopes == []
    return info.value


# --- the happy path ------------------------------------------------------------------


async def test_the_app_sees_the_proven_caller_in_the_scope(
    mesh: Mesh, served: Served, tls_log: pytest.LogCaptureFixture
) -> None:
    responses = await call(served, mesh.svid("a"), requests=2)
    assert [r.status_code for r in responses] == [200, 200]
    assert [r.content for r in responses] == [b"a", b"a"]
    expected = Peer(spiffe_id(APP, "a"), "a")
    # Both requests of the keep-alive connection carry it, not just the first.
    assert [scope[PEER_KEY] for scope in served.app.scopes] == [expected, expected]
    assert served.refusals == {}
    assert refusal_lines(tls_log) == []


async def test_no_header_can_spoof_the_caller(mesh: Mesh, served: Served) -> None:
    admin = spiffe_id(APP, "admin")
    spoofs = [
        ("shoal.peer", admin),
        ("shoal-peer", admin),
        ("x-shoal-peer", "admin"),
        ("x-forwarded-client-cert", f"By={spiffe_id(APP, 'b')};URI={admin}"),
        ("x-spiffe-id", admin),
    ]
    (response,) = await call(served, mesh.svid("a"), headers=spoofs)
    assert response.content == b"a"
    (scope,) = served.app.scopes
    assert scope[PEER_KEY] == Peer(spiffe_id(APP, "a"), "a")
    assert peer_of(scope) == Peer(spiffe_id(APP, "a"), "a")
    # The spoofed headers arrive as headers, and nothing more.
    assert (b"shoal.peer", admin.encode()) in scope["headers"]


# --- (a) (e) validity ----------------------------------------------------------------


async def test_an_expired_client_certificate_is_refused(
    mesh: Mesh, served: Served, tls_log: pytest.LogCaptureFixture
) -> None:
    expired = mesh.svid("a", clock=_hours_ago(2), lifetime=60)
    await assert_refused(served, tls_log, "expired", call(served, expired))


async def test_a_not_yet_valid_client_certificate_is_refused(
    mesh: Mesh, served: Served, tls_log: pytest.LogCaptureFixture
) -> None:
    early = mesh.svid("a", clock=_hours_ago(-2))
    await assert_refused(served, tls_log, "not-yet-valid", call(served, early))


# --- (b) (d) whose chain -------------------------------------------------------------


async def test_a_client_certificate_from_another_apps_ca_is_refused(
    mesh: Mesh, served: Served, tls_log: pytest.LogCaptureFixture
) -> None:
    # It trusts our root (so it accepts the server) but its SVID is bank's.
    stranger = svid(mesh.other, "a", bundle=mesh.ca.bundle(), trust_domain=mesh.ca.trust_domain)
    await assert_refused(served, tls_log, "untrusted-chain", call(served, stranger))


async def test_a_trusted_chain_naming_another_trust_domain_is_refused(
    mesh: Mesh, tls_log: pytest.LogCaptureFixture
) -> None:
    both = [*mesh.ca.bundle(), *mesh.other.bundle()]
    stranger = svid(mesh.other, "a", bundle=both, trust_domain=mesh.ca.trust_domain)
    async with mtls_server(svid(mesh.ca, "b", bundle=both)) as served:
        await assert_refused(served, tls_log, "foreign-trust-domain", call(served, stranger))


async def test_a_trusted_ca_cannot_sign_an_identity_in_our_trust_domain(
    mesh: Mesh, tls_log: pytest.LogCaptureFixture
) -> None:
    # bank's intermediate is name-constrained to bank.shoal: OpenSSL refuses a shop.shoal URI.
    both = [*mesh.ca.bundle(), *mesh.other.bundle()]
    impostor = forged(
        [spiffe_id(APP, "a")], signer=mesh.other, bundle=both, trust_domain=mesh.ca.trust_domain
    )
    async with mtls_server(svid(mesh.ca, "b", bundle=both)) as served:
        await assert_refused(served, tls_log, "foreign-trust-domain", call(served, impostor))


async def test_a_self_signed_certificate_with_a_spiffe_id_is_refused(
    mesh: Mesh, served: Served, tls_log: pytest.LogCaptureFixture
) -> None:
    self_signed = forged(
        [spiffe_id(APP, "a")], signer=None, bundle=mesh.ca.bundle(), trust_domain=APP + ".shoal"
    )
    await assert_refused(served, tls_log, "untrusted-chain", call(served, self_signed))


# --- (c) what the leaf says ----------------------------------------------------------


async def test_an_svid_with_two_uri_sans_is_refused(
    mesh: Mesh, served: Served, tls_log: pytest.LogCaptureFixture
) -> None:
    two = forged(
        [spiffe_id(APP, "a"), spiffe_id(APP, "admin")],
        signer=mesh.ca,
        bundle=mesh.ca.bundle(),
        trust_domain=mesh.ca.trust_domain,
    )
    await assert_refused(served, tls_log, "uri-san-count", call(served, two))


async def test_an_svid_with_no_uri_san_is_refused(
    mesh: Mesh, served: Served, tls_log: pytest.LogCaptureFixture
) -> None:
    none = forged([], signer=mesh.ca, bundle=mesh.ca.bundle(), trust_domain=mesh.ca.trust_domain)
    await assert_refused(served, tls_log, "uri-san-count", call(served, none))


# --- (f) (g) no TLS, no certificate, old TLS -----------------------------------------


async def test_plaintext_http_to_the_mtls_port_is_refused(
    mesh: Mesh, served: Served, tls_log: pytest.LogCaptureFixture
) -> None:
    pool = Http11Pool()
    request = httpx.Request("GET", "http://b/", headers={"shoal-peer": spiffe_id(APP, "a")})
    try:
        await assert_refused(served, tls_log, "plaintext", pool.send(HOST, served.port, request))
    finally:
        await pool.aclose()


async def test_bytes_that_are_not_tls_are_refused(
    served: Served, tls_log: pytest.LogCaptureFixture
) -> None:
    async def garbage() -> bytes:
        reader, writer = await asyncio.open_connection(HOST, served.port)
        try:
            writer.write(b"\x00\x01\x02 not a client hello\r\n\r\n" * 8)
            data = await reader.read()
        finally:
            writer.close()
        if not data:  # the server closed without a word: what a refusal looks like
            raise httpx.RemoteProtocolError("closed")
        return data

    await assert_refused(served, tls_log, "not-tls", garbage())


async def test_a_tls_client_without_a_certificate_is_refused(
    mesh: Mesh, served: Served, tls_log: pytest.LogCaptureFixture
) -> None:
    a = mesh.svid("a")
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.minimum_version = ssl.TLSVersion.TLSv1_3
    anonymous.load_verify_locations(cadata=mesh.ca.bundle_pem().decode("ascii"))
    await assert_refused(
        served, tls_log, "no-certificate", call(served, Identity(a.creds, client=anonymous))
    )


async def test_a_tls_1_2_client_is_refused(
    mesh: Mesh, served: Served, tls_log: pytest.LogCaptureFixture
) -> None:
    a = mesh.svid("a")
    old = client_context(a.creds)
    old.minimum_version = ssl.TLSVersion.TLSv1_2
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    error = await assert_refused(
        served, tls_log, "old-tls-version", call(served, Identity(a.creds, client=old))
    )
    # The handshake itself fails, so the client knows nothing was sent.
    assert isinstance(error, ConnectFailedError)


# --- (h) (i) (j) the client refuses the server ---------------------------------------


async def test_a_server_proving_another_identity_is_not_sent_the_request(
    mesh: Mesh, served: Served, tls_log: pytest.LogCaptureFixture
) -> None:
    # served holds b's SVID; the caller meant to reach a.
    with pytest.raises(ConnectFailedError) as info:
        await call(served, mesh.svid("c"), identity=spiffe_id(APP, "a"))
    assert info.value.reason == "identity-mismatch"
    assert spiffe_id(APP, "b") in str(info.value)
    await asyncio.sleep(0.1)  # were anything sent, it would be served by now
    assert served.app.scopes == []
    # The server may count the client's hang-up mid-handshake, but logs no refusal for it.
    assert set(served.refusals) <= {"hung-up"}
    assert refusal_lines(tls_log) == []


async def test_a_server_with_an_expired_certificate_is_refused(
    mesh: Mesh, tls_log: pytest.LogCaptureFixture
) -> None:
    async with mtls_server(mesh.svid("b", clock=_hours_ago(2), lifetime=60)) as served:
        with pytest.raises(ConnectFailedError) as info:
            await call(served, mesh.svid("a"))
        assert info.value.reason == "expired"
        assert served.app.scopes == []


async def test_a_server_from_another_apps_ca_is_refused(mesh: Mesh) -> None:
    stranger = svid(mesh.other, "b", bundle=mesh.ca.bundle(), trust_domain=mesh.ca.trust_domain)
    async with mtls_server(stranger) as served:
        with pytest.raises(ConnectFailedError) as info:
            await call(served, mesh.svid("a"))
        assert info.value.reason == "untrusted-chain"
        assert served.app.scopes == []


async def test_without_an_identity_the_pool_does_not_connect(served: Served) -> None:
    with pytest.raises(ConnectFailedError) as info:
        await call(served, None)
    assert info.value.reason == "no-identity"
    await asyncio.sleep(0.1)
    assert served.refusals == {}
    assert served.app.scopes == []


# --- the same, on uvloop -------------------------------------------------------------

Case = Callable[[Mesh, Served, pytest.LogCaptureFixture], Awaitable[None]]
UVLOOP_CASES: list[Case] = [
    test_the_app_sees_the_proven_caller_in_the_scope,
    test_an_expired_client_certificate_is_refused,
    test_a_client_certificate_from_another_apps_ca_is_refused,
    test_an_svid_with_two_uri_sans_is_refused,
    test_a_tls_client_without_a_certificate_is_refused,
    test_a_tls_1_2_client_is_refused,
    test_plaintext_http_to_the_mtls_port_is_refused,
    test_a_server_proving_another_identity_is_not_sent_the_request,
]


@pytest.fixture
def uvloop_runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        yield runner


@pytest.mark.parametrize("case", UVLOOP_CASES, ids=lambda case: case.__name__[5:])
def test_case_on_uvloop(
    uvloop_runner: asyncio.Runner, tls_log: pytest.LogCaptureFixture, case: Case
) -> None:
    async def run() -> None:
        mesh = Mesh()
        async with mtls_server(mesh.svid("b")) as served:
            await case(mesh, served, tls_log)

    uvloop_runner.run(run())
