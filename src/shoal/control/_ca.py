"""The app's certificate authority: a root and an intermediate that sign X.509 SVIDs.

Each app is its own SPIFFE trust domain, ``<app>.shoal``. The root (10 years, path
length 1) signs one intermediate (1 year, path length 0, name-constrained to URIs in
the trust domain), and the intermediate signs the instances' SVIDs: short-lived leaf
certificates whose only name is one URI SAN, ``spiffe://<app>.shoal/svc/<service>``.

An instance makes its own key and sends a CSR (:func:`new_key_and_csr`); its private
key never leaves the process. The CA ignores whatever names the CSR asks for.

No network I/O here; :meth:`CertificateAuthority.load_or_create` keeps the
certificates and keys under ``DIR/.shoal/ca/`` (directory 0700, files 0600).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shoal._statefiles import write_private
from shoal.exceptions import IdentityError

__all__ = [
    "BACKDATE",
    "CertificateAuthority",
    "Clock",
    "check_expiry",
    "describe_certificate",
    "DEFAULT_SVID_LIFETIME",
    "new_key_and_csr",
    "spiffe_id",
    "trust_domain",
]

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware (UTC); injectable so tests need not sleep."""

DEFAULT_SVID_LIFETIME = 86400.0
"""Seconds an SVID is valid for unless :meth:`CertificateAuthority.issue` is told otherwise."""

BACKDATE = timedelta(seconds=20)
"""NotBefore is set this far in the past, so a peer whose clock is a little behind accepts it."""

ROOT_LIFETIME = timedelta(days=3650)
INTERMEDIATE_LIFETIME = timedelta(days=365)

_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_FILES = ("root.pem", "root.key", "intermediate.pem", "intermediate.key")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _check_label(kind: str, name: str) -> None:
    if not _DNS_LABEL.fullmatch(name):
        raise ValueError(
            f"{kind} name {name!r} cannot be part of a SPIFFE ID: "
            "use lowercase letters, digits and '-' (a DNS label)"
        )


def trust_domain(app: str) -> str:
    """The SPIFFE trust domain of ``app``: ``<app>.shoal``."""
    _check_label("app", app)
    return f"{app}.shoal"


def spiffe_id(app: str, service: str) -> str:
    """The SPIFFE ID of ``service`` in ``app``: ``spiffe://<app>.shoal/svc/<service>``."""
    _check_label("service", service)
    return f"spiffe://{trust_domain(app)}/svc/{service}"


def new_key_and_csr(
    service: str,
) -> tuple[ec.EllipticCurvePrivateKey, x509.CertificateSigningRequest]:
    """A fresh EC P-256 key for an instance of ``service`` and a CSR signed with it."""
    _check_label("service", service)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
        .sign(key, hashes.SHA256())
    )
    return key, csr


def _ca_certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    now: datetime,
    lifetime: timedelta,
    path_length: int,
    permitted_host: str | None = None,
) -> x509.Certificate:
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if permitted_host is not None:
        # RFC 5280 4.2.1.10: a URI constraint names the host of the URI.
        builder = builder.add_extension(
            x509.NameConstraints(
                permitted_subtrees=[x509.UniformResourceIdentifier(permitted_host)],
                excluded_subtrees=None,
            ),
            critical=True,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _leaf_key_usage(public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=isinstance(public, rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_name(domain: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, domain),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


class CertificateAuthority:
    """The root and intermediate of one app; issues SVIDs to its instances."""

    def __init__(
        self,
        app: str,
        *,
        root: x509.Certificate,
        root_key: ec.EllipticCurvePrivateKey,
        intermediate: x509.Certificate,
        intermediate_key: ec.EllipticCurvePrivateKey,
        clock: Clock = _utcnow,
    ) -> None:
        self.app = app
        self.trust_domain = trust_domain(app)
        self.root = root
        self.intermediate = intermediate
        self._root_key = root_key
        self._intermediate_key = intermediate_key
        self._clock = clock

    @classmethod
    def create(cls, app: str, *, clock: Clock = _utcnow) -> CertificateAuthority:
        """A new root and intermediate for ``app`` (EC P-256 keys)."""
        domain = trust_domain(app)
        now = clock()
        root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = _ca_name(domain, f"shoal {app} root")
        root = _ca_certificate(
            root_name,
            root_key,
            root_name,
            root_key,
            now=now,
            lifetime=ROOT_LIFETIME,
            path_length=1,
        )
        intermediate_key = ec.generate_private_key(ec.SECP256R1())
        intermediate_name = _ca_name(domain, f"shoal {app} intermediate")
        intermediate = _ca_certificate(
            intermediate_name,
            intermediate_key,
            root_name,
            root_key,
            now=now,
            lifetime=INTERMEDIATE_LIFETIME,
            path_length=0,
            permitted_host=domain,
        )
        return cls(
            app,
            root=root,
            root_key=root_key,
            intermediate=intermediate,
            intermediate_key=intermediate_key,
            clock=clock,
        )

    @classmethod
    def load_or_create(
        cls, directory: Path, app: str, *, clock: Clock = _utcnow
    ) -> CertificateAuthority:
        """The CA kept under ``directory/.shoal/ca/``; a new one, saved there, if there is none."""
        ca_dir = directory / ".shoal" / "ca"
        present = [name for name in _FILES if (ca_dir / name).exists()]
        if not present:
            ca = cls.create(app, clock=clock)
            ca.save(directory)
            return ca
        if len(present) != len(_FILES):
            missing = ", ".join(name for name in _FILES if name not in present)
            raise IdentityError(
                f"{ca_dir}: incomplete certificate authority (missing {missing}); "
                f"restore the files, or remove {ca_dir} to make a new CA "
                "(every instance then needs a new certificate)"
            )
        try:
            root = x509.load_pem_x509_certificate((ca_dir / "root.pem").read_bytes())
            intermediate = x509.load_pem_x509_certificate(
                (ca_dir / "intermediate.pem").read_bytes()
            )
            root_key = _load_ec_key(ca_dir / "root.key")
            intermediate_key = _load_ec_key(ca_dir / "intermediate.key")
            intermediate.verify_directly_issued_by(root)
        except (OSError, ValueError, TypeError) as exc:
            raise IdentityError(
                f"{ca_dir}: unreadable certificate authority ({exc}); "
                f"remove {ca_dir} to make a new one"
            ) from exc
        expected = f"shoal {app} root"
        names = root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names or names[0].value != expected:
            found = names[0].value if names else "no common name"
            raise IdentityError(
                f"{ca_dir}: the root is {found!r}, not {expected!r}: this CA belongs to "
                f"another app; remove {ca_dir} to make one for {app!r}"
            )
        return cls(
            app,
            root=root,
            root_key=root_key,
            intermediate=intermediate,
            intermediate_key=intermediate_key,
            clock=clock,
        )

    def save(self, directory: Path) -> None:
        """Write the certificates and keys under ``directory/.shoal/ca/`` (0700, files 0600)."""
        state_dir = directory / ".shoal"
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        ca_dir = state_dir / "ca"
        ca_dir.mkdir(mode=0o700, exist_ok=True)
        ca_dir.chmod(0o700)
        pem = serialization.Encoding.PEM
        for name, cert, key in (
            ("root", self.root, self._root_key),
            ("intermediate", self.intermediate, self._intermediate_key),
        ):
            key_pem = key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            write_private(ca_dir / f"{name}.key", key_pem.decode("ascii"))
            write_private(ca_dir / f"{name}.pem", cert.public_bytes(pem).decode("ascii"))

    def issue(
        self,
        csr: x509.CertificateSigningRequest,
        service: str,
        *,
        lifetime: float = DEFAULT_SVID_LIFETIME,
        clock: Clock | None = None,
    ) -> list[x509.Certificate]:
        """An SVID for an instance of ``service``: ``[leaf, intermediate]``.

        The leaf carries the CSR's public key and exactly one name, the URI SAN
        ``spiffe://<app>.shoal/svc/<service>``; the names the CSR asks for are ignored.
        """
        uri = spiffe_id(self.app, service)
        if lifetime <= 0:
            raise ValueError(f"SVID lifetime must be positive, not {lifetime}")
        if not csr.is_signature_valid:
            raise IdentityError(
                f"refusing to issue an SVID for {service!r}: the CSR's signature does not "
                "match its public key (make the CSR with new_key_and_csr)"
            )
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise IdentityError(
                f"refusing to issue an SVID for {service!r}: unsupported key type "
                f"{type(public).__name__} (use EC P-256)"
            )
        now = (clock or self._clock)()
        leaf = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.trust_domain),
                        x509.NameAttribute(NameOID.COMMON_NAME, service),
                    ]
                )
            )
            .issuer_name(self.intermediate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + timedelta(seconds=lifetime))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(public), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self._intermediate_key.public_key()
                ),
                critical=False,
            )
            .sign(self._intermediate_key, hashes.SHA256())
        )
        return [leaf, self.intermediate]

    def bundle(self) -> list[x509.Certificate]:
        """The trust bundle: the root certificate(s) a peer's chain must lead to."""
        return [self.root]

    def bundle_pem(self) -> bytes:
        """:meth:`bundle` as concatenated PEM."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.bundle())


def describe_certificate(
    cert: x509.Certificate, *, now: datetime | None = None
) -> dict[str, object]:
    """Name, role, expiry and days left of a CA certificate (for `shoal check` and the API)."""
    now = now or _utcnow()
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(names[0].value) if names else cert.subject.rfc4514_string()
    left = cert.not_valid_after_utc - now
    return {
        "name": name,
        "role": "root" if cert.issuer == cert.subject else "intermediate",
        "not_after": cert.not_valid_after_utc.isoformat(),
        "days_left": round(left.total_seconds() / 86400, 1),
        "fingerprint": cert.fingerprint(hashes.SHA256()).hex()[:16],
    }


def check_expiry(
    directory: Path, *, now: datetime | None = None, warn_days: float = 30.0
) -> list[tuple[str, str]]:
    """``[(level, message)]`` for the CA under ``directory/.shoal/ca``: ``error`` for an expired
    root or intermediate, ``warning`` for one that expires within ``warn_days``."""
    now = now or _utcnow()
    ca_dir = directory / ".shoal" / "ca"
    found: list[tuple[str, str]] = []
    for name in ("root.pem", "intermediate.pem"):
        path = ca_dir / name
        if not path.exists():
            continue
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as exc:
            found.append(("error", f"{path}: unreadable certificate ({exc})"))
            continue
        info = describe_certificate(cert, now=now)
        days = float(str(info["days_left"]))
        if cert.not_valid_after_utc <= now:
            found.append(
                (
                    "error",
                    f"{path}: the {info['role']} expired on {info['not_after']}; every SVID it "
                    "vouches for fails; run `shoal ca rotate` (or remove .shoal/ca and restart)",
                )
            )
        elif days <= warn_days:
            found.append(
                (
                    "warning",
                    f"{path}: the {info['role']} expires in {days:g} days ({info['not_after']}); "
                    "run `shoal ca rotate` before then",
                )
            )
    return found


def _load_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{path.name} holds a {type(key).__name__}, not an EC private key")
    return key
