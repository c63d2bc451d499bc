"""Secrets at rest: AES-GCM under a per-service key derived (HKDF-SHA256) from the app's key.

The app key is 32 random bytes in ``DIR/.shoal/app.key`` (mode 0600), made on first
use. The supervisor derives each service's key and hands it to that service's
instances through the bootstrap pipe (never argv or environment). The additional
authenticated data binds app, service and secret name, so a ciphertext copied into
another service's bucket, or under another name, does not decrypt.

Stored form: ``b"\\x01" + nonce (12 bytes) + ciphertext-and-tag``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shoal.exceptions import ConfigError

__all__ = [
    "APP_KEY_FILE",
    "decode_key",
    "decrypt",
    "derive_key",
    "encode_key",
    "encrypt",
    "load_or_create_app_key",
]

APP_KEY_FILE = "app.key"
_VERSION = b"\x01"
_NONCE = 12


def load_or_create_app_key(state_dir: Path) -> bytes:
    """The app key in ``state_dir/app.key``, made (0600, 32 random bytes) if missing."""
    path = state_dir / APP_KEY_FILE
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
        key = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot use the app key {path}: {exc.strerror or exc}") from exc
    if len(key) != 32:
        raise ConfigError(
            f"the app key {path} is not 32 bytes ({len(key)}): it was damaged; restore it "
            "from a backup (without it the stored secrets cannot be read)"
        )
    return key


def derive_key(app_key: bytes, app: str, service: str) -> bytes:
    """``service``'s own 32-byte key: HKDF-SHA256 of the app key, bound to app and service."""
    info = f"shoal secret key v1|{app}|{service}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(app_key)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def decode_key(text: str) -> bytes:
    key = base64.b64decode(text.encode(), validate=True)
    if len(key) != 32:
        raise ValueError("a service key is 32 bytes")
    return key


def _aad(app: str, service: str, name: str) -> bytes:
    return f"shoal-secret|{app}|{service}|{name}".encode()


def encrypt(key: bytes, app: str, service: str, name: str, plaintext: str) -> bytes:
    nonce = secrets.token_bytes(_NONCE)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), _aad(app, service, name))
    return _VERSION + nonce + sealed


def decrypt(key: bytes, app: str, service: str, name: str, stored: bytes) -> str:
    """The plaintext; ConfigError (naming the secret, never a value) if it does not open."""
    if stored[:1] != _VERSION or len(stored) < 1 + _NONCE + 16:
        raise ConfigError(f"secret {name!r} of service {service!r} is not in a known format")
    nonce, sealed = stored[1 : 1 + _NONCE], stored[1 + _NONCE :]
    try:
        return AESGCM(key).decrypt(nonce, sealed, _aad(app, service, name)).decode()
    except (InvalidTag, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"secret {name!r} of service {service!r} does not decrypt with this service's key "
            "(it was made for another service or name, or the app key changed); "
            f"set it again with `shoal secret set {service} {name}`"
        ) from exc
