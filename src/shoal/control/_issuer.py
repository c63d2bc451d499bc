"""The app's certificate issuer: answers SVID requests over NATS and publishes the trust bundle.

Runs in the supervisor (see :mod:`shoal.backbone._trust` for the subjects). Who
may have which identity:

* a spawned instance, once, with the bootstrap token the supervisor minted for
  it (single use, 2 minutes, bound to one service);
* the holder of a current SVID, for the same service (renewal): the request
  carries the chain and a signature over the new CSR by the current key;
* the operator, through the ``issue`` subject that only the admin NATS user may
  publish to (a hand-run `shoal serve`, the CLI).

Rotation (:meth:`Issuer.rotate`) rolls the root with zero failed handshakes:
trust old and new roots everywhere, switch signing to the new intermediate and
have every instance renew, then drop the old root; each step waits until every
instance in the registry reports it has taken the previous one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import nats.errors
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nats.js import api

from shoal.backbone._connection import Backbone
from shoal.backbone._kv import open_bucket
from shoal.backbone._trust import TRUST_KEY, TrustState, ca_subject, trust_bucket_name
from shoal.control._ca import DEFAULT_SVID_LIFETIME, CertificateAuthority
from shoal.control._svid import service_of, verify_svid
from shoal.exceptions import IdentityError, ShoalError
from shoal.registry._records import InstanceRecord

__all__ = ["BOOTSTRAP_TTL", "Issuer", "fingerprint"]

log = logging.getLogger("shoal.ca")

BOOTSTRAP_TTL = 120.0
"""Seconds a bootstrap token stays usable (an instance asks within a second or two)."""


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()[:16]


def _pem(certs: Sequence[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)


class _Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Issuer:
    """Issues SVIDs from ``ca`` to the app's instances; keeps the trust bucket current."""

    def __init__(
        self,
        backbone: Backbone,
        ca: CertificateAuthority,
        directory: Path,
        *,
        lifetime: float = DEFAULT_SVID_LIFETIME,
        clock: Callable[[], float] = time.monotonic,
        say: Callable[[str], None] = lambda text: None,
    ) -> None:
        self._backbone = backbone
        self.ca = ca
        self.app = ca.app
        self.directory = directory
        self.lifetime = lifetime
        self._clock = clock
        self._say = say
        self._tokens: dict[str, tuple[str, float]] = {}
        self._roots: list[x509.Certificate] = [ca.root]
        self._generation = 0
        self._subs: list[Any] = []
        self.issued = 0
        self.refused: dict[str, int] = {}
        self._rotating = asyncio.Lock()

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def roots(self) -> list[x509.Certificate]:
        return list(self._roots)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Publish the trust bundle and answer requests."""
        kv = await self._bucket()
        with contextlib.suppress(Exception):  # carry the generation on across restarts
            entry = await kv.get(TRUST_KEY)
            if entry.value:
                self._generation = TrustState.model_validate_json(entry.value).generation
        await self._publish()
        nc = self._backbone.nc
        for verb, handler in (
            ("bootstrap", self._bootstrap),
            ("renew", self._renew),
            ("issue", self._issue),
        ):
            self._subs.append(
                await nc.subscribe(ca_subject(self.app, verb), cb=self._serve(handler))
            )
        await nc.flush()

    async def aclose(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # -- tokens ----------------------------------------------------------------------

    def mint(self, service: str) -> str:
        """A single-use bootstrap token for one instance of ``service``."""
        now = self._clock()
        for token, (_, expires) in list(self._tokens.items()):
            if expires < now:
                del self._tokens[token]
        token = secrets.token_urlsafe(24)
        self._tokens[token] = (service, now + BOOTSTRAP_TTL)
        return token

    # -- requests --------------------------------------------------------------------

    def _serve(
        self, handler: Callable[[dict[str, Any]], tuple[str, x509.CertificateSigningRequest]]
    ) -> Callable[[Any], Awaitable[None]]:
        async def on_request(msg: Any) -> None:
            try:
                body = json.loads(msg.data)
                if not isinstance(body, dict):
                    raise _Refused("bad-request", "the request is not a JSON object")
                service, csr = handler(body)
                chain = self.ca.issue(csr, service, lifetime=self.lifetime)
                self.issued += 1
                reply: dict[str, Any] = {
                    "chain": _pem(chain),
                    "bundle": _pem(self._roots),
                    "generation": self._generation,
                }
            except _Refused as exc:
                self.refused[exc.reason] = self.refused.get(exc.reason, 0) + 1
                log.warning("refused a certificate request on %s: %s", msg.subject, exc)
                reply = {"error": str(exc), "reason": exc.reason}
            except (ValueError, KeyError, TypeError, IdentityError) as exc:
                self.refused["bad-request"] = self.refused.get("bad-request", 0) + 1
                reply = {"error": f"bad request: {exc}", "reason": "bad-request"}
            if msg.reply:
                with contextlib.suppress(nats.errors.Error, OSError):
                    await msg.respond(json.dumps(reply).encode())

        return on_request

    def _bootstrap(self, body: dict[str, Any]) -> tuple[str, x509.CertificateSigningRequest]:
        token = str(body.get("token", ""))
        found = self._tokens.pop(token, None)
        if found is None or found[1] < self._clock():
            raise _Refused(
                "bad-token",
                "the bootstrap token is unknown, used already or expired "
                "(each spawned instance gets one, good once)",
            )
        return found[0], _csr(body)

    def _renew(self, body: dict[str, Any]) -> tuple[str, x509.CertificateSigningRequest]:
        chain = x509.load_pem_x509_certificates(str(body["chain"]).encode("ascii"))
        try:
            uri = verify_svid(chain, self._roots, trust_domain=self.ca.trust_domain)
        except IdentityError as exc:
            raise _Refused("bad-certificate", f"renewal with an invalid SVID: {exc}") from exc
        csr = _csr(body)
        public = chain[0].public_key()
        try:
            if not isinstance(public, ec.EllipticCurvePublicKey):
                raise InvalidSignature
            proof = base64.b64decode(str(body["proof"]), validate=True)
            public.verify(
                proof, csr.public_bytes(serialization.Encoding.DER), ec.ECDSA(hashes.SHA256())
            )
        except (InvalidSignature, ValueError) as exc:
            raise _Refused(
                "bad-proof", "the renewal is not signed by the current certificate's key"
            ) from exc
        return service_of(uri, self.ca.trust_domain), csr

    def _issue(self, body: dict[str, Any]) -> tuple[str, x509.CertificateSigningRequest]:
        return str(body["service"]), _csr(body)

    # -- the trust bundle ------------------------------------------------------------

    async def _bucket(self) -> Any:
        return await open_bucket(
            self._backbone,
            api.KeyValueConfig(
                bucket=trust_bucket_name(self.app),
                description=f"shoal trust bundle of app {self.app}",
                history=5,
                storage=api.StorageType.FILE,
            ),
        )

    async def _publish(self) -> int:
        self._generation += 1
        state = TrustState(
            roots=tuple(_pem([root]) for root in self._roots),
            generation=self._generation,
            issuer=fingerprint(self.ca.intermediate),
        )
        kv = await self._bucket()
        await kv.put(TRUST_KEY, state.model_dump_json().encode())
        return self._generation

    # -- rotation --------------------------------------------------------------------

    async def rotate(
        self,
        instances: Callable[[], Sequence[InstanceRecord]],
        *,
        step_timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Roll the root; returns what happened, step by step, with timings."""
        async with self._rotating:
            began = time.monotonic()
            steps: list[dict[str, Any]] = []
            old = self.ca
            new = CertificateAuthority.create(self.app)

            async def step(name: str, done: Callable[[InstanceRecord], bool]) -> None:
                t0 = time.monotonic()
                waiting = await _until(instances, done, step_timeout)
                steps.append(
                    {"step": name, "seconds": round(time.monotonic() - t0, 3), "waiting": waiting}
                )
                if waiting:
                    raise ShoalError(
                        f"rotation stopped at {name!r}: {', '.join(waiting)} did not follow "
                        f"within {step_timeout:g} s; the old root stays trusted, run "
                        "`shoal ca rotate` again once they are healthy"
                    )

            self._roots = [old.root, new.root]
            trusted = await self._publish()
            self._say(f"ca rotate: trusting the old and the new root (bundle {trusted})")
            await step("trust both roots", lambda r: r.trust >= trusted)
            self.ca = new
            new.save(self.directory)
            await self._publish()
            signer = fingerprint(new.intermediate)
            self._say("ca rotate: the new intermediate signs; every instance renews")
            await step("re-issue every SVID", lambda r: r.issuer == signer)
            self._roots = [new.root]
            final = await self._publish()
            self._say(f"ca rotate: dropped the old root (bundle {final})")
            await step("drop the old root", lambda r: r.trust >= final)
            return {
                "old_root": fingerprint(old.root),
                "new_root": fingerprint(new.root),
                "bundle": final,
                "seconds": round(time.monotonic() - began, 3),
                "steps": steps,
            }


def _csr(body: dict[str, Any]) -> x509.CertificateSigningRequest:
    try:
        return x509.load_pem_x509_csr(str(body["csr"]).encode("ascii"))
    except ValueError as exc:
        raise _Refused("bad-request", f"unreadable CSR: {exc}") from exc


async def _until(
    instances: Callable[[], Sequence[InstanceRecord]],
    done: Callable[[InstanceRecord], bool],
    timeout: float,
) -> list[str]:
    """Wait until ``done`` holds for every instance holding an SVID; those still waiting."""
    deadline = time.monotonic() + timeout
    while True:
        waiting = sorted(r.instance for r in instances() if r.issuer and not done(r))
        if not waiting or time.monotonic() >= deadline:
            return waiting
        await asyncio.sleep(0.1)
