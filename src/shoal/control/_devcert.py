"""The gateway's development certificate: self-signed, for localhost, made on demand.

``gateway: {tls: dev}`` serves HTTPS without the user providing anything. The
certificate names ``localhost``, ``127.0.0.1`` and ``::1``, lives 90 days, and is
made again when it is missing, unreadable or within 7 days of expiry. Clients
must trust it explicitly (``curl --cacert .shoal/gateway-tls/cert.pem``): it is
for development, never for production, where ``tls: {cert, key}`` names the real one.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shoal._statefiles import write_private

__all__ = ["dev_certificate"]

LIFETIME = timedelta(days=90)
RENEW_BEFORE = timedelta(days=7)


def dev_certificate(directory: Path, app: str) -> tuple[Path, Path]:
    """``(cert, key)`` paths of the development certificate of the app in ``directory``."""
    folder = directory / ".shoal" / "gateway-tls"
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    now = datetime.now(UTC)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if cert.not_valid_after_utc - now > RENEW_BEFORE:
            return cert_path, key_path
    except (OSError, ValueError):
        pass
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"shoal {app} (development)"),
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(seconds=20))
        .not_valid_after(now + LIFETIME)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    write_private(key_path, key_pem)
    write_private(cert_path, cert.public_bytes(pem).decode("ascii"))
    return cert_path, key_path
