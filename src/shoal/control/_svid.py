"""Verifying a presented X.509 SVID chain: the reasons a handshake is rejected.

The checks are done by hand, not with ``cryptography.x509.verification``: its
verifiers refuse the intermediate's URI name constraint ("unsupported name
constraint"), its server verifier wants a DNS or IP name in the leaf, and its
errors do not tell an expired certificate from an untrusted one. The order is
the order of trust: first the chain must lead, signature by signature, to a
root of the bundle (``untrusted-chain``), and only then is anything the
certificates say believed: validity windows (``expired``, ``not-yet-valid``),
that the leaf is an end-entity certificate (``not-an-svid``), that it has
exactly one URI SAN (``uri-san-count``), and that this names a service in the
expected trust domain (``foreign-trust-domain``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import pairwise
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from shoal.exceptions import SvidRejectedError

__all__ = ["service_of", "verify_svid"]

_SERVICE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _describe(cert: x509.Certificate) -> str:
    subject = cert.subject.rfc4514_string() or "(empty subject)"
    return f"certificate {subject!r} (serial {cert.serial_number:x})"


def _reject(reason: str, message: str) -> SvidRejectedError:
    return SvidRejectedError(f"SVID rejected ({reason}): {message}", reason=reason)


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _check_issuer(issuer: x509.Certificate, below: int) -> str | None:
    """Why ``issuer`` may not sign a path with ``below`` intermediates under it, or None."""
    constraints = _basic_constraints(issuer)
    if constraints is None or not constraints.ca:
        return f"{_describe(issuer)} is not a CA certificate but signed another"
    if constraints.path_length is not None and below > constraints.path_length:
        return f"{_describe(issuer)} allows {constraints.path_length} intermediates below it"
    usage = _key_usage(issuer)
    if usage is not None and not usage.key_cert_sign:
        return f"{_describe(issuer)} may not sign certificates (no keyCertSign)"
    return None


def _verify_path(chain: Sequence[x509.Certificate], bundle: Sequence[x509.Certificate]) -> None:
    """Raise ``untrusted-chain`` unless each certificate is signed by the next, the last by
    a root of ``bundle``, and every issuer is a CA allowed to sign that deep."""
    for depth, (cert, issuer) in enumerate(pairwise(chain)):
        if not _signed_by(cert, issuer):
            raise _reject(
                "untrusted-chain",
                f"{_describe(cert)} is not signed by the next certificate in the chain, "
                f"{_describe(issuer)}",
            )
        if problem := _check_issuer(issuer, depth):
            raise _reject("untrusted-chain", problem)
    last = chain[-1]
    anchors = [root for root in bundle if root == last or _signed_by(last, root)]
    if not anchors:
        raise _reject(
            "untrusted-chain",
            f"{_describe(last)} (issuer {last.issuer.rfc4514_string()!r}) is not signed by "
            "any root in the trust bundle: it comes from another CA or is self-signed",
        )
    anchor = anchors[0]
    if anchor != last and (problem := _check_issuer(anchor, len(chain) - 1)):
        raise _reject("untrusted-chain", problem)


def _check_validity(chain: Sequence[x509.Certificate], now: datetime) -> None:
    for cert in chain:
        if now < cert.not_valid_before_utc:
            raise _reject(
                "not-yet-valid",
                f"{_describe(cert)} is valid only from {cert.not_valid_before_utc.isoformat()} "
                f"(now {now.isoformat()}); check the clocks of both machines",
            )
        if now > cert.not_valid_after_utc:
            raise _reject(
                "expired",
                f"{_describe(cert)} expired at {cert.not_valid_after_utc.isoformat()} "
                f"(now {now.isoformat()}); the instance must renew its certificate",
            )


def _leaf_uri(leaf: x509.Certificate) -> str:
    constraints = _basic_constraints(leaf)
    if constraints is not None and constraints.ca:
        raise _reject("not-an-svid", f"{_describe(leaf)} is a CA certificate, not an SVID")
    usage = _key_usage(leaf)
    if usage is not None and (usage.key_cert_sign or usage.crl_sign):
        raise _reject("not-an-svid", f"{_describe(leaf)} may sign certificates; not an SVID")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if len(uris) != 1:
        raise _reject(
            "uri-san-count",
            f"{_describe(leaf)} has {len(uris)} URI SANs ({', '.join(uris) or 'none'}); "
            "an SVID has exactly one, its SPIFFE ID",
        )
    return uris[0]


def _split(spiffe_id: str) -> tuple[str, str]:
    """``(trust domain, service)`` of ``spiffe://<domain>/svc/<service>``; ValueError if not."""
    parts = urlsplit(spiffe_id)
    if parts.scheme != "spiffe":
        raise ValueError(f"{spiffe_id!r} is not a SPIFFE ID (scheme is not spiffe)")
    if not parts.hostname or parts.port or parts.username or parts.query or parts.fragment:
        raise ValueError(f"{spiffe_id!r} is not a SPIFFE ID (it needs a bare trust domain)")
    prefix, _, service = parts.path.partition("/svc/")
    if prefix or not _SERVICE.fullmatch(service):
        raise ValueError(f"{spiffe_id!r} does not name a shoal service (path /svc/<service>)")
    return parts.netloc, service


def service_of(spiffe_id: str, trust_domain: str) -> str:
    """The service named by ``spiffe_id``; ValueError if it is not a service of ``trust_domain``."""
    domain, service = _split(spiffe_id)
    if domain != trust_domain:
        raise ValueError(f"{spiffe_id!r} is in trust domain {domain!r}, not {trust_domain!r}")
    return service


def _check_name_constraints(uri: str, domain: str, chain: Sequence[x509.Certificate]) -> None:
    for ca in chain[1:]:
        try:
            constraints = ca.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            continue
        permitted = [
            name.value
            for name in constraints.permitted_subtrees or ()
            if isinstance(name, x509.UniformResourceIdentifier)
        ]
        if constraints.permitted_subtrees is not None and domain not in permitted:
            raise _reject(
                "foreign-trust-domain",
                f"{_describe(ca)} may only sign identities in {', '.join(permitted) or 'none'}, "
                f"not {uri}",
            )


def check_leaf(leaf: x509.Certificate, trust_domain: str) -> str:
    """The SPIFFE ID of an SVID whose chain TLS has already verified, or :class:`SvidRejectedError`.

    What OpenSSL does not check: the leaf is not a CA, has exactly one URI SAN, and
    that URI names a service in ``trust_domain``.
    """
    uri = _leaf_uri(leaf)
    try:
        domain, _service = _split(uri)
    except ValueError as exc:
        raise _reject("not-an-svid", f"{_describe(leaf)}: {exc}") from exc
    if domain != trust_domain:
        raise _reject(
            "foreign-trust-domain",
            f"{_describe(leaf)} is {uri}, in trust domain {domain!r}, not {trust_domain!r}",
        )
    return uri


def verify_svid(
    chain: Sequence[x509.Certificate],
    bundle: Sequence[x509.Certificate],
    *,
    trust_domain: str,
    now: datetime | None = None,
) -> str:
    """The SPIFFE ID of a presented chain (leaf first), or :class:`SvidRejectedError`.

    ``bundle`` holds the trusted roots; ``now`` (timezone-aware) defaults to the current time.
    """
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware (e.g. datetime.now(UTC))")
    if not chain:
        raise _reject("not-an-svid", "the peer presented no certificate")
    _verify_path(chain, bundle)
    _check_validity(chain, now)
    uri = check_leaf(chain[0], trust_domain)
    _check_name_constraints(uri, trust_domain, chain)
    return uri
