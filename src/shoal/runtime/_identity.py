"""This process's workload identity: its own key, the SVID the app's CA issued, the trust bundle.

An instance makes its key in memory (it never leaves the process), sends a CSR
with its single-use bootstrap token, and gets ``[leaf, intermediate]`` back.
It renews at half the certificate's lifetime, give or take 5 % at random (so
replicas started together do not renew together), authenticated by the current
certificate; a failed renewal is retried with backoff until the old one expires.
It watches the trust bucket: a new bundle applies to the next handshake, and an
SVID from an intermediate that no longer signs is renewed at once (rotation).

Contexts are rebuilt only when something changed; open connections keep theirs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import ssl
import time
from collections.abc import Callable

import nats.errors
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from shoal.backbone._connection import Backbone
from shoal.backbone._kv import KvChange, watch_bucket
from shoal.backbone._trust import (
    TRUST_KEY,
    TrustState,
    ca_subject,
    decode_reply,
    trust_bucket_name,
)
from shoal.control._ca import BACKDATE, new_key_and_csr, spiffe_id, trust_domain
from shoal.exceptions import IdentityError, ShoalError
from shoal.mesh._tls import Credentials, client_context, server_context

__all__ = ["WorkloadIdentity", "load_pem_chain"]

log = logging.getLogger("shoal.identity")

RENEW_AT = 0.5
RENEW_JITTER = 0.05
_REQUEST_TIMEOUT = 5.0


def load_pem_chain(pem: str | bytes) -> tuple[x509.Certificate, ...]:
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    return tuple(x509.load_pem_x509_certificates(data))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class WorkloadIdentity:
    """The SVID of one process (an instance of ``service`` in ``app``), kept current."""

    def __init__(
        self,
        backbone: Backbone,
        app: str,
        service: str,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._backbone = backbone
        self.app = app
        self.service = service
        self.trust_domain = trust_domain(app)
        self.spiffe_id = spiffe_id(app, service)
        self._rng = rng or random.Random()
        self._clock = clock
        self._creds: Credentials | None = None
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._server: ssl.SSLContext | None = None
        self._client: ssl.SSLContext | None = None
        self._issuer = ""
        self._renew_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: list[Callable[[], None]] = []
        self.bundle_generation = 0
        self.renewals = 0

    # -- reading ---------------------------------------------------------------------

    @property
    def credentials(self) -> Credentials:
        if self._creds is None:
            raise IdentityError(f"{self.spiffe_id}: no certificate yet (obtain() first)")
        return self._creds

    def server_context(self) -> ssl.SSLContext:
        if self._server is None:
            self._server = server_context(self.credentials)
        return self._server

    def client_context(self) -> ssl.SSLContext:
        if self._client is None:
            self._client = client_context(self.credentials)
        return self._client

    def expires_at(self) -> float:
        return self.credentials.leaf.not_valid_after_utc.timestamp()

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each new certificate or bundle."""
        self._listeners.append(callback)

    # -- obtaining -------------------------------------------------------------------

    async def obtain(self, token: str | None) -> None:
        """The first SVID: with the bootstrap token, else through the operator's subject."""
        key, csr = new_key_and_csr(self.service)
        csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode("ascii")
        if token:
            verb, body = "bootstrap", {"token": token, "csr": csr_pem}
        else:
            verb, body = "issue", {"service": self.service, "csr": csr_pem}
        reply = await self._request(verb, body)
        self._install(key, reply)

    async def renew(self) -> None:
        """A new key and SVID, authenticated by the current ones."""
        current = self.credentials
        assert self._key is not None
        key, csr = new_key_and_csr(self.service)
        csr_der = csr.public_bytes(serialization.Encoding.DER)
        proof = self._key.sign(csr_der, ec.ECDSA(hashes.SHA256()))
        reply = await self._request(
            "renew",
            {
                "chain": current.chain_pem.decode("ascii"),
                "csr": csr.public_bytes(serialization.Encoding.PEM).decode("ascii"),
                "proof": base64.b64encode(proof).decode("ascii"),
            },
        )
        self._install(key, reply)
        self.renewals += 1

    async def _request(self, verb: str, body: dict[str, str]) -> dict[str, object]:
        subject = ca_subject(self.app, verb)
        try:
            msg = await self._backbone.nc.request(
                subject, json.dumps(body).encode(), timeout=_REQUEST_TIMEOUT
            )
        except nats.errors.NoRespondersError:
            raise IdentityError(
                f"{self.spiffe_id}: no certificate authority answers on {subject}: "
                "start the app with `shoal up` (its supervisor runs the CA), "
                "or set SHOAL_TLS=off to serve plaintext for development"
            ) from None
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            refusal = self._backbone.last_refusal
            if subject in refusal:
                raise IdentityError(
                    f"{self.spiffe_id}: NATS does not let this process ask for that ({refusal}); "
                    "an instance may only bootstrap and renew its own certificate"
                ) from exc
            raise IdentityError(
                f"{self.spiffe_id}: the certificate authority did not answer on {subject}: "
                f"{exc or type(exc).__name__}"
            ) from exc
        reply = decode_reply(msg.data)
        if "error" in reply:
            raise IdentityError(f"{self.spiffe_id}: {verb} refused: {reply['error']}")
        return reply

    def _install(self, key: ec.EllipticCurvePrivateKey, reply: dict[str, object]) -> None:
        try:
            chain = load_pem_chain(str(reply["chain"]))
            bundle = load_pem_chain(str(reply["bundle"]))
            generation = int(str(reply.get("generation", 0)))
        except (KeyError, ValueError) as exc:
            raise IdentityError(f"{self.spiffe_id}: unreadable certificate reply: {exc}") from exc
        if len(chain) < 2 or chain[0].public_key() != key.public_key():
            raise IdentityError(f"{self.spiffe_id}: the CA returned a certificate for another key")
        try:
            san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
            uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        if uris != [self.spiffe_id]:
            raise IdentityError(
                f"{self.spiffe_id}: the CA issued {', '.join(uris) or 'no SPIFFE ID'} instead "
                "(a bootstrap token names the service it is for)"
            )
        creds = Credentials(
            key_pem=_key_pem(key),
            chain=chain,
            bundle=bundle,
            trust_domain=self.trust_domain,
            spiffe_id=self.spiffe_id,
        )
        self._key = key
        self.bundle_generation = max(self.bundle_generation, generation)
        self._set(creds)

    def _set(self, creds: Credentials) -> None:
        # Build both contexts first: a bad certificate must not replace a good one.
        server, client = server_context(creds), client_context(creds)
        self._creds, self._server, self._client = creds, server, client
        self._notify()

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()

    # -- keeping it current ----------------------------------------------------------

    def start(self) -> None:
        """Renew before expiry and follow the trust bundle, until :meth:`aclose`."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._renewing(), name="shoal-svid-renew"),
                asyncio.create_task(self._following(), name="shoal-trust-watch"),
            ]

    async def aclose(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    def renew_delay(self) -> float:
        """Seconds from now until the planned renewal: half the lifetime, jittered."""
        leaf = self.credentials.leaf
        issued = leaf.not_valid_before_utc.timestamp() + BACKDATE.total_seconds()
        lifetime = leaf.not_valid_after_utc.timestamp() - issued
        fraction = RENEW_AT + self._rng.uniform(-RENEW_JITTER, RENEW_JITTER)
        return max(0.0, issued + lifetime * fraction - self._clock())

    async def _renewing(self) -> None:
        failures = 0
        while True:
            delay = self.renew_delay() if failures == 0 else min(30.0, 0.5 * 2**failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._renew_now.wait(), delay)
            self._renew_now.clear()
            try:
                await self.renew()
            except ShoalError as exc:
                failures += 1
                left = self.expires_at() - self._clock()
                log.warning("certificate renewal failed (%s); %.0f s before it expires", exc, left)
                continue
            failures = 0
            left = self.expires_at() - self._clock()
            log.info("renewed the certificate of %s (valid %.0f s)", self.spiffe_id, left)

    async def _following(self) -> None:
        bucket = trust_bucket_name(self.app)

        async def ensure() -> None:
            await self._backbone.js.key_value(bucket)

        while True:
            try:
                async with contextlib.aclosing(watch_bucket(self._backbone, bucket, ensure)) as ev:
                    async for event in ev:
                        if isinstance(event, KvChange) and event.key == TRUST_KEY and event.value:
                            self._trust(event.value)
            except ShoalError as exc:
                log.debug("trust bundle watch ended: %s", exc)
            except Exception as exc:  # a missing bucket and the like: keep what we have
                log.debug("trust bundle watch failed: %s", exc)
            await asyncio.sleep(1.0)

    def _trust(self, value: bytes) -> None:
        try:
            state = TrustState.model_validate_json(value)
            roots = tuple(c for pem in state.roots for c in load_pem_chain(pem))
        except (ValidationError, ValueError) as exc:
            log.warning("ignoring an unreadable trust bundle: %s", exc)
            return
        creds = self._creds
        if creds is None or state.generation < self.bundle_generation:
            return
        self.bundle_generation = state.generation
        if roots and roots != creds.bundle:
            self._set(creds.with_bundle(roots))
            log.info("trust bundle %d applied (%d roots)", state.generation, len(roots))
        else:
            self._notify()
        if state.issuer and state.issuer != creds.issuer_fingerprint:
            self._renew_now.set()  # our SVID comes from an intermediate that no longer signs
