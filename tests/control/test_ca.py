"""The app's certificate authority and the SVID checks a handshake relies on."""

from __future__ import annotations

import stat
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shoal.control._ca import (
    DEFAULT_SVID_LIFETIME,
    CertificateAuthority,
    Clock,
    new_key_and_csr,
    spiffe_id,
    trust_domain,
)
from shoal.control._svid import service_of, verify_svid
from shoal.exceptions import IdentityError, ShoalError, SvidRejectedError

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def shop() -> CertificateAuthority:
    return CertificateAuthority.create("shop", clock=lambda: NOW)


def issue(
    ca: CertificateAuthority,
    service: str = "catalog",
    *,
    lifetime: float = DEFAULT_SVID_LIFETIME,
    clock: Clock | None = None,
) -> list[x509.Certificate]:
    _key, csr = new_key_and_csr(service)
    return ca.issue(csr, service, lifetime=lifetime, clock=clock)


def forge_leaf(
    ca: CertificateAuthority,
    sans: Sequence[x509.GeneralName],
    *,
    signer: ec.EllipticCurvePrivateKey | None = None,
) -> x509.Certificate:
    """A leaf signed by hand with the CA's intermediate key (or ``signer``), naming ``sans``."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")]))
        .issuer_name(ca.intermediate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=1))
        .not_valid_after(NOW + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(signer or ca._intermediate_key, hashes.SHA256())


def rejection(chain: Sequence[x509.Certificate], ca: CertificateAuthority) -> SvidRejectedError:
    with pytest.raises(SvidRejectedError) as info:
        verify_svid(chain, ca.bundle(), trust_domain="shop.shoal", now=NOW)
    return info.value


def test_names_of_the_trust_domain_and_of_a_service() -> None:
    assert trust_domain("shop") == "shop.shoal"
    assert spiffe_id("shop", "catalog") == "spiffe://shop.shoal/svc/catalog"
    assert service_of("spiffe://shop.shoal/svc/catalog", "shop.shoal") == "catalog"
    with pytest.raises(ValueError, match=r"not 'shop\.shoal'"):
        service_of("spiffe://bank.shoal/svc/catalog", "shop.shoal")
    with pytest.raises(ValueError, match="DNS label"):
        spiffe_id("shop", "Bad/Name")


def test_identity_errors_are_shoal_errors() -> None:
    assert issubclass(SvidRejectedError, IdentityError)
    assert issubclass(IdentityError, ShoalError)


def test_ca_has_a_root_and_a_name_constrained_intermediate(shop: CertificateAuthority) -> None:
    root_bc = shop.root.extensions.get_extension_for_class(x509.BasicConstraints).value
    inter_bc = shop.intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (root_bc.ca, root_bc.path_length) == (True, 1)
    assert (inter_bc.ca, inter_bc.path_length) == (True, 0)
    assert (
        shop.root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "shoal shop root"
    )
    assert shop.root.not_valid_after_utc - shop.root.not_valid_before_utc > timedelta(days=3649)
    shop.intermediate.verify_directly_issued_by(shop.root)
    constraints = shop.intermediate.extensions.get_extension_for_class(x509.NameConstraints).value
    assert constraints.permitted_subtrees == [x509.UniformResourceIdentifier("shop.shoal")]
    assert shop.bundle() == [shop.root]
    assert x509.load_pem_x509_certificates(shop.bundle_pem()) == [shop.root]


def test_load_or_create_keeps_the_same_ca_across_reloads(tmp_path: Path) -> None:
    first = CertificateAuthority.load_or_create(tmp_path, "shop")
    again = CertificateAuthority.load_or_create(tmp_path, "shop")
    assert again.root == first.root
    assert again.intermediate == first.intermediate
    chain = issue(again)
    assert verify_svid(chain, first.bundle(), trust_domain="shop.shoal") == (
        "spiffe://shop.shoal/svc/catalog"
    )


def test_ca_keys_are_owner_only(tmp_path: Path) -> None:
    CertificateAuthority.load_or_create(tmp_path, "shop")
    ca_dir = tmp_path / ".shoal" / "ca"
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / ".shoal").stat().st_mode) == 0o700
    for name in ("root.key", "intermediate.key"):
        assert stat.S_IMODE((ca_dir / name).stat().st_mode) == 0o600, name
    assert sorted(p.name for p in ca_dir.iterdir()) == [
        "intermediate.key",
        "intermediate.pem",
        "root.key",
        "root.pem",
    ]


def test_load_or_create_refuses_another_apps_ca(tmp_path: Path) -> None:
    CertificateAuthority.load_or_create(tmp_path, "shop")
    with pytest.raises(IdentityError, match="belongs to another app"):
        CertificateAuthority.load_or_create(tmp_path, "bank")


def test_load_or_create_refuses_an_incomplete_ca(tmp_path: Path) -> None:
    CertificateAuthority.load_or_create(tmp_path, "shop")
    (tmp_path / ".shoal" / "ca" / "intermediate.key").unlink()
    with pytest.raises(IdentityError, match=r"missing intermediate\.key"):
        CertificateAuthority.load_or_create(tmp_path, "shop")


def test_leaf_has_exactly_one_uri_san_whatever_the_csr_asked(shop: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    greedy = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("bank.example"),
                    x509.UniformResourceIdentifier("spiffe://shop.shoal/svc/admin"),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    leaf, intermediate = shop.issue(greedy, "catalog")
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier("spiffe://shop.shoal/svc/catalog")]
    assert leaf.public_key() == key.public_key()
    assert intermediate == shop.intermediate
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign


def test_leaf_is_backdated_20s_and_lives_24h_by_default(shop: CertificateAuthority) -> None:
    leaf = issue(shop)[0]
    assert leaf.not_valid_before_utc == NOW - timedelta(seconds=20)
    assert leaf.not_valid_after_utc == NOW + timedelta(hours=24)
    shorter = issue(shop, lifetime=3600.0)[0]
    assert shorter.not_valid_after_utc == NOW + timedelta(hours=1)
    assert shorter.serial_number != leaf.serial_number


def test_a_valid_svid_yields_its_spiffe_id(shop: CertificateAuthority) -> None:
    chain = issue(shop, "orders")
    assert verify_svid(chain, shop.bundle(), trust_domain="shop.shoal", now=NOW) == (
        "spiffe://shop.shoal/svc/orders"
    )
    # a peer clock 10 s behind still accepts it, thanks to the backdating
    late = NOW - timedelta(seconds=10)
    assert verify_svid(chain, shop.bundle(), trust_domain="shop.shoal", now=late)


def test_expired_svid_is_rejected(shop: CertificateAuthority) -> None:
    chain = issue(shop, clock=lambda: NOW - timedelta(days=2))
    error = rejection(chain, shop)
    assert error.reason == "expired"
    assert "catalog" in str(error)
    assert f"{chain[0].serial_number:x}" in str(error)


def test_not_yet_valid_svid_is_rejected(shop: CertificateAuthority) -> None:
    chain = issue(shop, clock=lambda: NOW + timedelta(hours=1))
    assert rejection(chain, shop).reason == "not-yet-valid"


def test_svid_of_another_apps_ca_is_rejected(shop: CertificateAuthority) -> None:
    bank = CertificateAuthority.create("bank", clock=lambda: NOW)
    error = rejection(issue(bank), shop)
    assert error.reason == "untrusted-chain"
    assert "trust bundle" in str(error)


def test_svid_naming_another_trust_domain_is_rejected(shop: CertificateAuthority) -> None:
    leaf = forge_leaf(shop, [x509.UniformResourceIdentifier("spiffe://bank.shoal/svc/catalog")])
    error = rejection([leaf, shop.intermediate], shop)
    assert error.reason == "foreign-trust-domain"
    assert "bank.shoal" in str(error)


def test_svid_with_two_uri_sans_is_rejected(shop: CertificateAuthority) -> None:
    leaf = forge_leaf(
        shop,
        [
            x509.UniformResourceIdentifier("spiffe://shop.shoal/svc/catalog"),
            x509.UniformResourceIdentifier("spiffe://shop.shoal/svc/admin"),
        ],
    )
    assert rejection([leaf, shop.intermediate], shop).reason == "uri-san-count"


def test_svid_without_uri_san_is_rejected(shop: CertificateAuthority) -> None:
    for sans in ([], [x509.DNSName("catalog.shop.shoal")]):
        leaf = forge_leaf(shop, sans)
        assert rejection([leaf, shop.intermediate], shop).reason == "uri-san-count"


def test_self_signed_svid_is_rejected(shop: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    uri = x509.UniformResourceIdentifier("spiffe://shop.shoal/svc/catalog")
    leaf = forge_leaf(shop, [uri], signer=key)
    assert rejection([leaf], shop).reason == "untrusted-chain"
    assert rejection([leaf, shop.intermediate], shop).reason == "untrusted-chain"


def test_missing_intermediate_is_rejected(shop: CertificateAuthority) -> None:
    leaf = issue(shop)[0]
    assert rejection([leaf], shop).reason == "untrusted-chain"


def test_ca_certificate_presented_as_leaf_is_rejected(shop: CertificateAuthority) -> None:
    assert rejection([shop.intermediate], shop).reason == "not-an-svid"
    assert rejection([shop.root], shop).reason == "not-an-svid"


def test_empty_chain_is_rejected(shop: CertificateAuthority) -> None:
    assert rejection([], shop).reason == "not-an-svid"


def test_uri_that_is_not_a_service_is_rejected(shop: CertificateAuthority) -> None:
    leaf = forge_leaf(shop, [x509.UniformResourceIdentifier("spiffe://shop.shoal/ns/default")])
    assert rejection([leaf, shop.intermediate], shop).reason == "not-an-svid"
