"""The issuer and the workload identity, against a real NATS: who gets which SVID, and when.

A real :class:`Issuer` answers on ``shoal.<app>.ca.*`` and keeps the trust bucket;
real :class:`WorkloadIdentity` objects ask it. Requests an identity would never
send (forged proofs, borrowed chains, spent tokens) are sent by hand.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shoal.backbone import Backbone, EmbeddedNats
from shoal.backbone._connection import inbox_prefix
from shoal.backbone._trust import TRUST_KEY, TrustState, ca_subject, trust_bucket_name
from shoal.control._ca import BACKDATE, CertificateAuthority, new_key_and_csr, spiffe_id
from shoal.control._issuer import BOOTSTRAP_TTL, Issuer, fingerprint
from shoal.control._svid import verify_svid
from shoal.exceptions import IdentityError
from shoal.registry._records import InstanceRecord
from shoal.runtime._identity import WorkloadIdentity

APP = "shop"
LIFETIME = 3600.0


class Clock:
    """The issuer's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def backbone(nats_server: EmbeddedNats) -> AsyncIterator[Backbone]:
    connection = await Backbone.connect(nats_server.url)
    try:
        yield connection
    finally:
        await connection.aclose()


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    path = tmp_path / "app"
    path.mkdir()
    return path


@pytest.fixture
async def issuer(backbone: Backbone, app_dir: Path, clock: Clock) -> AsyncIterator[Issuer]:
    running = Issuer(
        backbone, CertificateAuthority.create(APP), app_dir, lifetime=LIFETIME, clock=clock
    )
    await running.start()
    try:
        yield running
    finally:
        await running.aclose()


@pytest.fixture
async def identities(backbone: Backbone) -> AsyncIterator[Callable[..., WorkloadIdentity]]:
    """Makes workload identities of the app; closes them all at the end."""
    made: list[WorkloadIdentity] = []

    def make(service: str, **kwargs: Any) -> WorkloadIdentity:
        identity = WorkloadIdentity(backbone, APP, service, **kwargs)
        made.append(identity)
        return identity

    try:
        yield make
    finally:
        for identity in made:
            await identity.aclose()


async def ask(backbone: Backbone, verb: str, body: dict[str, str]) -> dict[str, Any]:
    """Send one request to the issuer by hand; its reply."""
    msg = await backbone.nc.request(ca_subject(APP, verb), json.dumps(body).encode(), timeout=5.0)
    reply = json.loads(msg.data)
    assert isinstance(reply, dict)
    return reply


def pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def sign(key: ec.EllipticCurvePrivateKey, csr: x509.CertificateSigningRequest) -> str:
    der = csr.public_bytes(serialization.Encoding.DER)
    return base64.b64encode(key.sign(der, ec.ECDSA(hashes.SHA256()))).decode("ascii")


def uri_of(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - what is awaited has no event
            await asyncio.sleep(0.02)


def leaf_of(reply: dict[str, Any]) -> x509.Certificate:
    return x509.load_pem_x509_certificates(str(reply["chain"]).encode("ascii"))[0]


# --- bootstrap -----------------------------------------------------------------------


async def test_bootstrap_with_a_minted_token_issues_the_tokens_service(
    issuer: Issuer, identities: Callable[..., WorkloadIdentity]
) -> None:
    identity = identities("catalog")
    await identity.obtain(issuer.mint("catalog"))
    creds = identity.credentials
    assert uri_of(creds.leaf) == [spiffe_id(APP, "catalog")]
    assert creds.chain[1] == issuer.ca.intermediate
    assert creds.bundle == (issuer.ca.root,)
    assert verify_svid(creds.chain, creds.bundle, trust_domain="shop.shoal") == spiffe_id(
        APP, "catalog"
    )
    assert identity.bundle_generation == issuer.generation == 1
    assert issuer.issued == 1


async def test_the_token_not_the_csr_names_the_service(issuer: Issuer, backbone: Backbone) -> None:
    token = issuer.mint("catalog")
    _key, csr = new_key_and_csr("admin")  # asks to be admin
    reply = await ask(backbone, "bootstrap", {"token": token, "csr": pem(csr)})
    assert uri_of(leaf_of(reply)) == [spiffe_id(APP, "catalog")]


async def test_a_token_is_good_once(
    issuer: Issuer, backbone: Backbone, identities: Callable[..., WorkloadIdentity]
) -> None:
    token = issuer.mint("catalog")
    await identities("catalog").obtain(token)
    with pytest.raises(IdentityError, match=r"bootstrap refused: .*used already"):
        await identities("catalog").obtain(token)
    _key, csr = new_key_and_csr("catalog")
    reply = await ask(backbone, "bootstrap", {"token": token, "csr": pem(csr)})
    assert reply["reason"] == "bad-token"
    assert "chain" not in reply
    assert issuer.refused == {"bad-token": 2}
    assert issuer.issued == 1


async def test_a_token_sent_twice_at_once_is_honoured_once(
    issuer: Issuer, backbone: Backbone
) -> None:
    token = issuer.mint("catalog")
    csrs = [new_key_and_csr("catalog")[1] for _ in range(5)]
    replies = await asyncio.gather(
        *(ask(backbone, "bootstrap", {"token": token, "csr": pem(csr)}) for csr in csrs)
    )
    assert sorted("chain" in reply for reply in replies) == [False] * 4 + [True]


async def test_an_unknown_token_is_refused(issuer: Issuer, backbone: Backbone) -> None:
    issuer.mint("catalog")
    _key, csr = new_key_and_csr("catalog")
    for token in ("", "not-a-token"):
        reply = await ask(backbone, "bootstrap", {"token": token, "csr": pem(csr)})
        assert reply["reason"] == "bad-token"
    assert issuer.issued == 0


async def test_an_expired_token_is_refused(
    issuer: Issuer, clock: Clock, identities: Callable[..., WorkloadIdentity]
) -> None:
    late = issuer.mint("catalog")
    on_time = issuer.mint("catalog")
    clock.now += BOOTSTRAP_TTL - 1
    await identities("catalog").obtain(on_time)
    clock.now += 2
    with pytest.raises(IdentityError, match="bootstrap refused"):
        await identities("catalog").obtain(late)
    assert issuer.refused == {"bad-token": 1}


async def test_an_unreadable_request_is_refused(issuer: Issuer, backbone: Backbone) -> None:
    msg = await backbone.nc.request(ca_subject(APP, "bootstrap"), b"[1, 2]", timeout=5.0)
    assert json.loads(msg.data)["reason"] == "bad-request"
    token = issuer.mint("catalog")
    reply = await ask(backbone, "bootstrap", {"token": token, "csr": "not a CSR"})
    assert reply["reason"] == "bad-request"


# --- renewal -------------------------------------------------------------------------


async def test_renewal_issues_a_new_key_and_svid_of_the_same_service(
    issuer: Issuer, identities: Callable[..., WorkloadIdentity]
) -> None:
    identity = identities("catalog")
    await identity.obtain(issuer.mint("catalog"))
    before = identity.credentials
    await identity.renew()
    after = identity.credentials
    assert identity.renewals == 1
    assert uri_of(after.leaf) == [spiffe_id(APP, "catalog")]
    assert after.leaf.serial_number != before.leaf.serial_number
    assert after.leaf.public_key() != before.leaf.public_key()
    assert after.key_pem != before.key_pem
    await identity.renew()  # the renewed SVID renews in turn
    assert identity.renewals == 2
    assert issuer.issued == 3


async def test_the_identity_renews_by_itself_at_half_its_lifetime(
    backbone: Backbone, app_dir: Path, identities: Callable[..., WorkloadIdentity]
) -> None:
    short = Issuer(backbone, CertificateAuthority.create(APP), app_dir, lifetime=3.0)
    await short.start()
    try:
        identity = identities("catalog")
        await identity.obtain(short.mint("catalog"))
        first = identity.credentials.leaf.serial_number
        identity.start()
        await until(lambda: identity.renewals > 0, timeout=15.0)
        assert identity.credentials.leaf.serial_number != first
        assert uri_of(identity.credentials.leaf) == [spiffe_id(APP, "catalog")]
    finally:
        await short.aclose()


async def test_renewal_with_a_proof_by_another_key_is_refused(
    issuer: Issuer, backbone: Backbone, identities: Callable[..., WorkloadIdentity]
) -> None:
    identity = identities("catalog")
    await identity.obtain(issuer.mint("catalog"))
    chain = identity.credentials.chain_pem.decode("ascii")
    new_key, csr = new_key_and_csr("catalog")
    stranger = ec.generate_private_key(ec.SECP256R1())
    for proof in (
        sign(stranger, csr),
        sign(new_key, csr),  # the new key vouching for itself
        base64.b64encode(b"not a signature").decode("ascii"),
        "%%% not base64 %%%",
    ):
        reply = await ask(backbone, "renew", {"chain": chain, "csr": pem(csr), "proof": proof})
        assert reply["reason"] == "bad-proof", proof
        assert "chain" not in reply
    assert issuer.refused == {"bad-proof": 4}


async def test_a_proof_signed_over_another_csr_is_refused(
    issuer: Issuer, backbone: Backbone, identities: Callable[..., WorkloadIdentity]
) -> None:
    identity = identities("catalog")
    await identity.obtain(issuer.mint("catalog"))
    current = serialization.load_pem_private_key(identity.credentials.key_pem, password=None)
    assert isinstance(current, ec.EllipticCurvePrivateKey)
    _key, signed = new_key_and_csr("catalog")
    _other_key, sent = new_key_and_csr("catalog")
    body = {
        "chain": identity.credentials.chain_pem.decode("ascii"),
        "csr": pem(sent),
        "proof": sign(current, signed),
    }
    assert (await ask(backbone, "renew", body))["reason"] == "bad-proof"
    body["proof"] = sign(current, sent)  # the same, done right
    assert uri_of(leaf_of(await ask(backbone, "renew", body))) == [spiffe_id(APP, "catalog")]


async def test_another_services_chain_does_not_renew_into_that_service(
    issuer: Issuer, backbone: Backbone, identities: Callable[..., WorkloadIdentity]
) -> None:
    # catalog holds its own SVID and has seen payments' chain (certificates are public).
    catalog, payments = identities("catalog"), identities("payments")
    await catalog.obtain(issuer.mint("catalog"))
    await payments.obtain(issuer.mint("payments"))
    own_key = serialization.load_pem_private_key(catalog.credentials.key_pem, password=None)
    assert isinstance(own_key, ec.EllipticCurvePrivateKey)
    _new_key, csr = new_key_and_csr("payments")
    body = {
        "chain": payments.credentials.chain_pem.decode("ascii"),
        "csr": pem(csr),
        "proof": sign(own_key, csr),
    }
    reply = await ask(backbone, "renew", body)
    assert reply["reason"] == "bad-proof"
    assert "chain" not in reply
    assert issuer.issued == 2


async def test_renewal_with_an_svid_the_bundle_does_not_trust_is_refused(
    issuer: Issuer, backbone: Backbone
) -> None:
    other = CertificateAuthority.create(APP)  # same app name, another CA
    key, csr = new_key_and_csr("catalog")
    chain = other.issue(csr, "catalog")
    _new_key, new_csr = new_key_and_csr("catalog")
    body = {
        "chain": "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain),
        "csr": pem(new_csr),
        "proof": sign(key, new_csr),
    }
    reply = await ask(backbone, "renew", body)
    assert reply["reason"] == "bad-certificate"
    assert "untrusted-chain" in reply["error"]


async def test_renewal_with_an_expired_svid_is_refused(issuer: Issuer, backbone: Backbone) -> None:
    key, csr = new_key_and_csr("catalog")
    past = datetime.now(UTC) - timedelta(hours=2)
    chain = issuer.ca.issue(csr, "catalog", lifetime=60, clock=lambda: past)
    _new_key, new_csr = new_key_and_csr("catalog")
    body = {
        "chain": "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain),
        "csr": pem(new_csr),
        "proof": sign(key, new_csr),
    }
    reply = await ask(backbone, "renew", body)
    assert reply["reason"] == "bad-certificate"
    assert "expired" in reply["error"]


# --- when to renew -------------------------------------------------------------------


async def test_renew_delay_is_half_the_lifetime_give_or_take_five_percent(
    issuer: Issuer, identities: Callable[..., WorkloadIdentity]
) -> None:
    fractions = []
    for seed in range(40):
        now = [0.0]
        identity = identities("catalog", rng=random.Random(seed), clock=lambda now=now: now[0])
        await identity.obtain(issuer.mint("catalog"))
        leaf = identity.credentials.leaf
        issued = leaf.not_valid_before_utc.timestamp() + BACKDATE.total_seconds()
        lifetime = leaf.not_valid_after_utc.timestamp() - issued
        assert abs(lifetime - LIFETIME) <= 1.0  # certificates count whole seconds
        now[0] = issued
        for _ in range(5):
            fraction = identity.renew_delay() / lifetime
            assert 0.45 <= fraction <= 0.55, (seed, fraction)
            fractions.append(fraction)
        now[0] = issued + lifetime  # past the planned renewal: at once
        assert identity.renew_delay() == 0.0
    # It is jittered: replicas started together do not renew together.
    assert max(fractions) - min(fractions) > 0.05


# --- the trust bundle ----------------------------------------------------------------


async def test_the_trust_bucket_holds_the_bundle(issuer: Issuer, backbone: Backbone) -> None:
    kv = await backbone.js.key_value(trust_bucket_name(APP))
    entry = await kv.get(TRUST_KEY)
    assert entry.value is not None
    state = TrustState.model_validate_json(entry.value)
    roots = [x509.load_pem_x509_certificate(root.encode("ascii")) for root in state.roots]
    assert roots == [issuer.ca.root]
    assert state.generation == issuer.generation == 1
    assert state.issuer == fingerprint(issuer.ca.intermediate)


async def test_a_restarted_issuer_carries_the_generation_on(
    issuer: Issuer, backbone: Backbone, app_dir: Path
) -> None:
    again = Issuer(backbone, issuer.ca, app_dir)
    await again.start()
    try:
        assert again.generation == 2
    finally:
        await again.aclose()


async def test_an_identity_applies_a_new_bundle_from_the_bucket(
    issuer: Issuer, identities: Callable[..., WorkloadIdentity]
) -> None:
    identity = identities("catalog")
    await identity.obtain(issuer.mint("catalog"))
    changes: list[int] = []
    identity.on_change(lambda: changes.append(identity.bundle_generation))
    old_server = identity.server_context()
    identity.start()
    extra = CertificateAuthority.create(APP).root
    issuer._roots = [issuer.ca.root, extra]
    published = await issuer._publish()
    await until(lambda: identity.bundle_generation >= published)
    assert identity.credentials.bundle == (issuer.ca.root, extra)
    assert identity.server_context() is not old_server  # the next handshake trusts both
    assert published in changes
    assert identity.renewals == 0  # the same intermediate signs: nothing to renew


async def test_rotation_moves_an_identity_to_the_new_root(
    issuer: Issuer, identities: Callable[..., WorkloadIdentity], app_dir: Path
) -> None:
    identity = identities("catalog")
    await identity.obtain(issuer.mint("catalog"))
    identity.start()
    old = issuer.ca

    def instances() -> list[InstanceRecord]:
        return [
            InstanceRecord(
                app=APP,
                service="catalog",
                instance="catalog-1",
                host="127.0.0.1",
                port=1,
                started_at=0.0,
                tls=True,
                trust=identity.bundle_generation,
                issuer=identity.credentials.issuer_fingerprint,
            )
        ]

    result = await issuer.rotate(instances, step_timeout=30.0)
    new = issuer.ca
    assert new is not old
    assert [step["waiting"] for step in result["steps"]] == [[], [], []]
    assert result["new_root"] == fingerprint(new.root)
    creds = identity.credentials
    assert creds.bundle == (new.root,)
    assert creds.chain[1] == new.intermediate
    assert identity.renewals == 1
    assert verify_svid(creds.chain, [new.root], trust_domain="shop.shoal") == spiffe_id(
        APP, "catalog"
    )
    assert CertificateAuthority.load_or_create(app_dir, APP).root == new.root


# --- secrets -------------------------------------------------------------------------


class Spy:
    """Everything published on the NATS server, as another client sees it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []

    async def on_message(self, msg: Any) -> None:
        self.seen.append((msg.subject, bytes(msg.data)))

    def subjects(self) -> set[str]:
        return {subject for subject, _ in self.seen}

    def replies(self) -> int:
        """How many of the issuer's replies carrying a chain it has seen."""
        return sum(s.startswith("_INBOX.") and b'"chain"' in data for s, data in self.seen)


@pytest.fixture
async def spy(nats_server: EmbeddedNats) -> AsyncIterator[Spy]:
    connection = await Backbone.connect(nats_server.url)
    watcher = Spy()
    try:
        await connection.nc.subscribe(">", cb=watcher.on_message)
        await connection.nc.flush()
        yield watcher
    finally:
        await connection.aclose()


def _secrets(key_pem: bytes) -> Iterator[bytes]:
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    yield b"PRIVATE KEY"
    body = b"".join(key_pem.splitlines()[1:-1])
    yield body
    yield body[20:60]
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    yield der
    yield key.private_numbers().private_value.to_bytes(32, "big")


async def test_no_private_key_is_ever_published(
    spy: Spy, issuer: Issuer, identities: Callable[..., WorkloadIdentity]
) -> None:
    identity = identities("catalog")
    await identity.obtain(issuer.mint("catalog"))
    keys = [identity.credentials.key_pem]
    await identity.renew()
    keys.append(identity.credentials.key_pem)
    await identities("admin").obtain(None)  # the operator's path
    requests = {ca_subject(APP, verb) for verb in ("bootstrap", "renew", "issue")}
    await until(lambda: requests <= spy.subjects() and spy.replies() >= 3)
    # The spy does see the payloads: the CSRs go out, and the chains come back.
    assert all(b"CERTIFICATE REQUEST" in data for subject, data in spy.seen if subject in requests)
    ca_keys = [
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        for key in (issuer.ca._root_key, issuer.ca._intermediate_key)
    ]
    for key_pem in keys + ca_keys:
        for secret in _secrets(key_pem):
            leaks = [subject for subject, data in spy.seen if secret in data]
            assert leaks == [], secret[:16]
    for subject, data in spy.seen:
        assert b"PRIVATE" not in data, subject


# --- NATS permissions ----------------------------------------------------------------


async def test_a_service_user_can_bootstrap_and_renew_but_not_issue(
    nats_server: EmbeddedNats, issuer: Issuer
) -> None:
    await nats_server.add_services(APP, ["catalog"])
    connection = await Backbone.connect(
        nats_server.service_url("catalog"), inbox_prefix=inbox_prefix("catalog")
    )
    try:
        identity = WorkloadIdentity(connection, APP, "catalog")
        await identity.obtain(issuer.mint("catalog"))
        await identity.renew()
        assert identity.renewals == 1
        other = WorkloadIdentity(connection, APP, "payments")
        with pytest.raises(IdentityError, match="NATS does not let this process ask"):
            await other.obtain(None)
        assert issuer.issued == 2
    finally:
        await connection.aclose()
