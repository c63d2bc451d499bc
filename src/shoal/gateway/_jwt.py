"""Verifying the bearer token of a request, for a gateway route with ``jwt``.

A token passes when its header names an algorithm the route allows, the key
it names (``kid``) is in the route's JWKS and is of that algorithm's kind (an
RSA key for ``RS*``/``PS*``, an EC key on the right curve for ``ES*``, an OKP
key for ``EdDSA``: no key can be used with another algorithm than its own),
the signature holds, and its claims are in date (``exp`` required, ``nbf``
and ``iat`` checked when present, with a leeway of :data:`LEEWAY` seconds for
clock skew), from the route's ``issuer`` and for its ``audience``, when set.
Where the keys come from is ``_jwks.py``'s business.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import httpx
import jwt

from shoal.exceptions import ShoalError
from shoal.gateway._jwks import Key, open_keys
from shoal.manifest._jwt import JwtSpec

__all__ = ["LEEWAY", "JwtRejectedError", "JwtVerifier", "Reason"]

LEEWAY = 30.0
"""Seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat``."""

Reason = Literal[
    "missing-token",
    "malformed",
    "bad-algorithm",
    "unknown-key",
    "bad-signature",
    "expired",
    "not-yet-valid",
    "wrong-issuer",
    "wrong-audience",
]


class JwtRejectedError(ShoalError):
    """The request's token does not pass; ``reason`` is machine-readable (``expired``...)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message


class JwtVerifier:
    """Checks the bearer tokens of one gateway route against its ``jwt`` settings.

    ``app_dir`` is where a JWKS file is looked up; ``client`` fetches a JWKS URL
    (default: one of its own, closed by :meth:`aclose`); ``clock`` gives the
    time in seconds since the epoch.
    """

    def __init__(
        self,
        spec: JwtSpec,
        app_dir: Path,
        *,
        prefix: str = "/",
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self._clock = clock
        self._keys = open_keys(spec.jwks, app_dir, prefix=prefix, client=client, clock=clock)

    async def aclose(self) -> None:
        await self._keys.aclose()

    async def verify(self, authorization: str | None) -> dict[str, Any]:
        """The verified claims of the token in ``authorization`` (the header's value).

        Raises :class:`JwtRejectedError` saying why the token does not pass, or
        :class:`JwksUnavailableError` when the keys cannot be had.
        """
        token = _bearer_token(authorization)
        alg, kid = _header_of(token)
        if alg not in self.spec.algorithms:
            allowed = ", ".join(self.spec.algorithms)
            raise JwtRejectedError("bad-algorithm", f"alg {alg!r} is not allowed ({allowed})")
        key = (await self._keys.get(kid)).find(kid)
        if key is None:
            named = f"key {kid!r}" if kid is not None else "no key (kid), and the JWKS has several"
            raise JwtRejectedError("unknown-key", f"the token names {named} not in the JWKS")
        if not key.fits(alg):
            raise JwtRejectedError(
                "bad-algorithm", f"alg {alg!r} cannot be used with {key.describe()}"
            )
        claims = self._decode(token, alg, key)
        self._check_times(claims)
        return claims

    def _decode(self, token: str, alg: str, key: Key) -> dict[str, Any]:
        spec = self.spec
        required = ["exp", *(["iss"] if spec.issuer else []), *(["aud"] if spec.audience else [])]
        options: Any = {  # times are checked by _check_times, against self._clock
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_iss": spec.issuer is not None,
            "verify_aud": spec.audience is not None,
            "require": required,
        }
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                issuer=spec.issuer,
                audience=spec.audience,
                options=options,
            )
        except jwt.PyJWTError as exc:
            raise _rejection(exc) from None
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock()
        times = {name: claims.get(name) for name in ("exp", "nbf", "iat")}
        for name, value in times.items():
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise JwtRejectedError("malformed", f"the {name} claim is not a number")
        exp, nbf, iat = times["exp"], times["nbf"], times["iat"]
        if exp is not None and now > exp + LEEWAY:
            raise JwtRejectedError("expired", f"the token expired {_ago(now - exp)} ago")
        for name, value in (("nbf", nbf), ("iat", iat)):
            if value is not None and now + LEEWAY < value:
                when = _ago(value - now)
                raise JwtRejectedError(
                    "not-yet-valid", f"the token is valid only in {when} ({name})"
                )


def _ago(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise JwtRejectedError("missing-token", "this route needs 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise JwtRejectedError("missing-token", "this route needs 'Authorization: Bearer <token>'")
    if not token.isascii() or token.count(".") != 2:
        raise JwtRejectedError("malformed", "the token is not a JWT (header.payload.signature)")
    return token


def _header_of(token: str) -> tuple[str, str | None]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise JwtRejectedError("malformed", f"the token's header cannot be read: {exc}") from None
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str):
        raise JwtRejectedError("malformed", "the token's header names no algorithm (alg)")
    if kid is not None and not isinstance(kid, str):
        raise JwtRejectedError("malformed", "the token's key id (kid) is not a string")
    return alg, kid


def _rejection(exc: jwt.PyJWTError) -> JwtRejectedError:
    if isinstance(exc, jwt.InvalidSignatureError):
        return JwtRejectedError("bad-signature", "the signature does not match the token")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        missing: dict[str, Reason] = {"iss": "wrong-issuer", "aud": "wrong-audience"}
        return JwtRejectedError(
            missing.get(exc.claim, "malformed"), f"the token has no {exc.claim} claim"
        )
    if isinstance(exc, jwt.InvalidIssuerError):
        return JwtRejectedError("wrong-issuer", "the token is from another issuer (iss)")
    if isinstance(exc, jwt.InvalidAudienceError):
        return JwtRejectedError("wrong-audience", "the token is for another audience (aud)")
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return JwtRejectedError("bad-algorithm", str(exc))
    return JwtRejectedError("malformed", f"the token cannot be read: {exc}")
