"""Mutual TLS for mesh hops: SSL contexts from a workload identity, checks after a handshake.

Both ends speak TLS 1.3 only, present their SVID (leaf and intermediate) and trust
the app's bundle (its roots). OpenSSL verifies the chain, the validity period and
the intermediate's name constraint; :func:`peer_of_connection` then checks what
OpenSSL does not: the leaf has exactly one URI SAN, a SPIFFE ID of this trust
domain. A client also checks that the server's SPIFFE ID is the service it meant
to call, so an instance of B can never answer for A.

The private key never touches a disk: contexts load it through an anonymous
memory file (``memfd_create``), which disappears when the descriptor is closed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import ssl
import tempfile
from collections.abc import Iterator
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from shoal.control._svid import check_leaf, service_of
from shoal.exceptions import SvidRejectedError
from shoal.mesh._peer import Peer

__all__ = [
    "HUNG_UP",
    "Credentials",
    "client_context",
    "describe_handshake_error",
    "handshake_reason",
    "peer_of_connection",
    "server_context",
]

# OpenSSL's X509_V_ERR_* codes, as SSLCertVerificationError.verify_code carries them.
_VERIFY_REASONS = {
    9: "not-yet-valid",
    10: "expired",
    2: "untrusted-chain",
    7: "untrusted-chain",
    18: "untrusted-chain",
    19: "untrusted-chain",
    20: "untrusted-chain",
    21: "untrusted-chain",
    24: "not-an-svid",  # invalid CA
    26: "not-an-svid",  # unsupported purpose
    47: "foreign-trust-domain",  # permitted subtree violation (the name constraint)
    48: "foreign-trust-domain",
}
# The alert a peer sends when it rejects *our* certificate, by OpenSSL reason name.
_ALERTS = {
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "peer-rejected:expired",
    "TLSV1_ALERT_UNKNOWN_CA": "peer-rejected:untrusted-chain",
    "SSLV3_ALERT_BAD_CERTIFICATE": "peer-rejected:bad-certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "peer-rejected:bad-certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "peer-rejected:no-certificate",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no-certificate",
    "HTTP_REQUEST": "plaintext",
    "WRONG_VERSION_NUMBER": "not-tls",
    "UNSUPPORTED_PROTOCOL": "old-tls-version",
    "TLSV1_ALERT_PROTOCOL_VERSION": "old-tls-version",
}


HUNG_UP = "hung-up"
"""The peer closed or reset the connection during the handshake: no verdict of ours."""


@dataclasses.dataclass(frozen=True, slots=True)
class Credentials:
    """One issued identity: the key, its SVID chain and the bundle that was trusted with it."""

    key_pem: bytes
    chain: tuple[x509.Certificate, ...]
    """Leaf first, then the intermediate."""
    bundle: tuple[x509.Certificate, ...]
    """The trusted roots."""
    trust_domain: str
    spiffe_id: str

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    @property
    def bundle_pem(self) -> str:
        return "".join(
            c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in self.bundle
        )

    @property
    def issuer_fingerprint(self) -> str:
        """Who signed the leaf (the intermediate's SHA-256, 16 hex digits)."""
        return self.chain[1].fingerprint(hashes.SHA256()).hex()[:16] if len(self.chain) > 1 else ""

    def with_bundle(self, bundle: tuple[x509.Certificate, ...]) -> Credentials:
        return dataclasses.replace(self, bundle=bundle)


@contextlib.contextmanager
def _secret_file(data: bytes) -> Iterator[str]:
    """A path that reads as ``data`` for as long as the block runs, backed by memory."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("shoal-svid", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="shoal-svid-") as folder:  # pragma: no cover - macOS
        path = os.path.join(folder, "svid.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            yield path
        finally:
            os.unlink(path)


def _configure(ctx: ssl.SSLContext, creds: Credentials) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    with _secret_file(creds.chain_pem + creds.key_pem) as path:
        ctx.load_cert_chain(path)
    ctx.load_verify_locations(cadata=creds.bundle_pem)
    return ctx


def server_context(creds: Credentials) -> ssl.SSLContext:
    """For a service's listener: TLS 1.3, a client certificate required, chaining to the bundle."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.num_tickets = 0  # asyncio clients cannot resume sessions; tickets would be waste
    return _configure(ctx, creds)


def client_context(creds: Credentials) -> ssl.SSLContext:
    """For mesh calls: TLS 1.3, presenting our SVID; the server's name is checked by SPIFFE ID."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # SVIDs carry no DNS names: peer_of_connection checks the URI
    return _configure(ctx, creds)


def peer_of_connection(ssl_object: Any, trust_domain: str) -> Peer:
    """The verified peer of a finished handshake, or :class:`SvidRejectedError`."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise SvidRejectedError("the peer presented no certificate", reason="no-certificate")
    uri = check_leaf(x509.load_der_x509_certificate(der), trust_domain)
    return Peer(uri, service_of(uri, trust_domain))


def handshake_reason(exc: BaseException) -> str:
    """A short word for why a TLS handshake failed (for logs and ``shoal-reason``)."""
    if isinstance(exc, SvidRejectedError):
        return exc.reason
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY_REASONS.get(exc.verify_code, "untrusted-chain")
    if isinstance(exc, ssl.SSLError):
        return _ALERTS.get(exc.reason or "", "tls-error")
    if isinstance(exc, TimeoutError):
        return "handshake-timeout"
    if isinstance(exc, ConnectionError | EOFError):
        return HUNG_UP
    return "tls-error"


def describe_handshake_error(exc: BaseException) -> str:
    """What went wrong, in words: OpenSSL's verify message or the alert's name."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return str(exc.verify_message)
    if isinstance(exc, ssl.SSLError):
        return (exc.reason or str(exc)).lower().replace("_", " ")
    return str(exc) or type(exc).__name__
