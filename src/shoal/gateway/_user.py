"""The ``shoal-user`` header: the verified claims of the end user, as the gateway forwards them.

On a route with ``jwt``, the gateway sets ``shoal-user`` to the base64url
(unpadded) compact JSON of the token's verified claims. On every route it first
removes any ``shoal-user`` the client sent, so a service behind the gateway
never sees one it did not set. :func:`user_claims` reads it back.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["USER_HEADER", "encode_claims", "user_claims"]

USER_HEADER = "shoal-user"

_USER = USER_HEADER.encode()


def encode_claims(claims: Mapping[str, Any]) -> bytes:
    """``claims`` as the value of ``shoal-user``."""
    text = json.dumps(claims, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=")


def user_claims(source: Mapping[str, Any]) -> dict[str, Any] | None:
    """The end user's verified claims from an ASGI scope or a mapping of headers, if any.

    ``source`` is the ``scope`` of an ASGI app or request headers (starlette's
    ``request.headers``, a ``dict``). ``None`` when the request carries no
    ``shoal-user`` (a route without ``jwt``, or a call from inside the mesh), or
    one the gateway cannot have set (it is not valid base64url JSON).
    """
    value: object = None
    if isinstance(source.get("headers"), list) and isinstance(source.get("type"), str):
        value = next((v for k, v in source["headers"] if k.lower() == _USER), None)
    else:
        value = next((v for k, v in source.items() if str(k).lower() == USER_HEADER), None)
    if isinstance(value, str):
        value = value.encode("latin-1", "replace")
    if not isinstance(value, bytes):
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4)))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None
