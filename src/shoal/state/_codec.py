"""Keys, values and ETags as every state backend stores them.

Keys are non-empty strings of at most 512 characters without NUL (and encodable as
UTF-8). Values are JSON text; an ETag is a random token, new for every write, so a
key that is deleted and written again never takes back an old ETag.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from typing import Any

from shoal.exceptions import ConcurrencyError, StateError

__all__ = [
    "MAX_KEY_LENGTH",
    "check_key",
    "check_name",
    "check_ttl",
    "conflict",
    "decode",
    "encode",
    "new_etag",
    "prefix_end",
]

MAX_KEY_LENGTH = 512
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_DECODER = json.JSONDecoder()


def check_name(kind: str, name: str) -> str:
    """``name`` if it is a valid app or service name (a DNS label), else StateError."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise StateError(
            f"state store: {kind} name {name!r} is not a DNS label; use 1-63 lowercase "
            "letters, digits and '-', as in shoal.yaml"
        )
    return name


def check_key(key: object) -> str:
    """``key`` if it is a valid state key, else StateError saying why."""
    if not isinstance(key, str):
        raise StateError(f"state key {key!r} is a {type(key).__name__}; keys are str")
    if not key or len(key) > MAX_KEY_LENGTH:
        raise StateError(
            f"state key {key[:40]!r}{'...' if len(key) > 40 else ''} has {len(key)} "
            f"characters; keys have 1 to {MAX_KEY_LENGTH}"
        )
    if "\x00" in key:
        raise StateError(f"state key {key!r} contains NUL; remove it")
    try:
        key.encode()
    except UnicodeEncodeError:
        raise StateError(
            f"state key {key!r} is not valid Unicode (lone surrogate); fix the key"
        ) from None
    return key


def check_ttl(key: str, ttl: float | None) -> float | None:
    """``ttl`` if it is None or a positive finite number of seconds, else StateError."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise StateError(f"state key {key!r}: ttl {ttl!r} is not a number of seconds")
    if ttl <= 0:
        raise StateError(f"state key {key!r}: ttl {ttl!r} must be > 0 seconds; omit it to keep")
    return float(ttl)


def encode(key: str, value: object) -> str:
    """``value`` as JSON text; StateError naming ``key`` if it is not JSON data."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StateError(
            f"state value for key {key!r} cannot be stored: {exc}; store JSON data "
            "(dict with str keys, list, str, int, finite float, bool, None)"
        ) from None


def decode(text: str) -> Any:
    """The value stored as ``text``."""
    return _DECODER.decode(text)


def new_etag() -> str:
    """A fresh ETag: 96 random bits, URL-safe."""
    return secrets.token_urlsafe(12)


def conflict(key: str, where: str, *, absent: bool = False) -> ConcurrencyError:
    """The error for a stale ETag on ``key`` in the store at ``where``, or (``absent``)
    for a create-only write that found ``key`` already there."""
    if absent:
        return ConcurrencyError(
            f"state key {key!r} in {where} already exists, so the create-only write "
            "(absent=True) was refused; read it, or write it with its ETag",
            key=key,
        )
    return ConcurrencyError(
        f"state key {key!r} in {where} was changed or deleted since its ETag was read; "
        "read it again and retry",
        key=key,
    )


def prefix_end(prefix: str) -> str | None:
    """The least string greater than every string that starts with ``prefix``, in code
    point order (which is UTF-8 byte order); None if there is none (``prefix`` empty or
    all U+10FFFF). Range scans use ``prefix <= key < end``: no LIKE or glob patterns."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be stored; skip past them
                nxt = 0xE000
            return "".join(chars) + chr(nxt)
    return None
