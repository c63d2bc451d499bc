"""The app key, per-service keys and the AEAD binding; key names and command-line values."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from shoal.config._crypto import decrypt, derive_key, encrypt, load_or_create_app_key
from shoal.config._layout import bucket_name, parse_assignment, read_subjects
from shoal.exceptions import ConfigError


def test_the_app_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    state = tmp_path / ".shoal"
    key = load_or_create_app_key(state)
    assert len(key) == 32
    assert stat.S_IMODE((state / "app.key").stat().st_mode) == 0o600
    assert load_or_create_app_key(state) == key
    (state / "app.key").write_bytes(b"short")
    with pytest.raises(ConfigError, match="is not 32 bytes"):
        load_or_create_app_key(state)


def test_a_ciphertext_opens_only_for_its_app_service_and_name(tmp_path: Path) -> None:
    app_key = load_or_create_app_key(tmp_path)
    catalog = derive_key(app_key, "shop", "catalog")
    orders = derive_key(app_key, "shop", "orders")
    assert catalog != orders
    assert derive_key(app_key, "shop2", "catalog") != catalog
    sealed = encrypt(catalog, "shop", "catalog", "db", "hunter2")
    assert b"hunter2" not in sealed
    assert encrypt(catalog, "shop", "catalog", "db", "hunter2") != sealed  # a fresh nonce
    assert decrypt(catalog, "shop", "catalog", "db", sealed) == "hunter2"
    for key, service, name in [(orders, "orders", "db"), (catalog, "catalog", "api")]:
        with pytest.raises(ConfigError, match="does not decrypt") as caught:
            decrypt(key, "shop", service, name, sealed)
        assert "hunter2" not in str(caught.value)
    # The right key under another service's name (moved, not re-encrypted) fails too.
    with pytest.raises(ConfigError, match="does not decrypt"):
        decrypt(catalog, "shop", "orders", "db", sealed)
    with pytest.raises(ConfigError, match="not in a known format"):
        decrypt(catalog, "shop", "catalog", "db", b"\x02" + sealed[1:])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("page_size=20", ("page_size", 20)),
        ("ratio=0.5", ("ratio", 0.5)),
        ("beta=true", ("beta", True)),
        ('tags=["a","b"]', ("tags", ["a", "b"])),
        ('limits={"read": 1}', ("limits", {"read": 1})),
        ("title=Big sale", ("title", "Big sale")),
        ('quoted="42"', ("quoted", "42")),
        ("empty=", ("empty", "")),
        ("n=null", ("n", "null")),
        ("x=a=b", ("x", "a=b")),
    ],
)
def test_a_command_line_value_is_json_if_it_parses_else_text(
    text: str, expected: tuple[str, object]
) -> None:
    assert parse_assignment(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("page_size", "expected KEY=VALUE"),
        ("page size=1", r"not a valid config key name: .* \(try 'page_size'\)"),
        ("=1", "not a valid config key name"),
        ("a.b=1", r"\(try 'a_b'\)"),
    ],
)
def test_bad_assignments_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_assignment(text)


def test_a_service_may_read_only_its_own_bucket() -> None:
    assert bucket_name("shop", "catalog") == "shoal-config-shop_catalog"
    assert bucket_name("a-b", "c") != bucket_name("a", "b-c")
    subjects = read_subjects("shop", "catalog")
    assert all("KV_shoal-config-shop_catalog" in s for s in subjects)
    assert not [s for s in subjects if s.startswith("$KV.")]  # never a write
