"""The keys of a gateway route with ``jwt``: a JWKS, from a file or a URL.

A file is read when the gateway starts; a bad or missing one stops the start,
saying what is wrong. A URL is fetched on first use and kept :data:`CACHE_TTL`
seconds. A token naming a key that is not in the cached set makes the gateway
fetch it again, at most once per :data:`REFETCH_INTERVAL` (keys rotate). When a
fetch fails the cached set stays in use; with nothing cached,
:class:`JwksUnavailableError` (the gateway answers 503 ``jwks-unavailable``).

Only public signature keys of the asymmetric kinds are kept (RSA of 2048 bits or
more, EC, OKP); a symmetric or private key in a JWKS is a problem, reported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from shoal.exceptions import ManifestError, ManifestProblem, ShoalError

__all__ = [
    "CACHE_TTL",
    "REFETCH_INTERVAL",
    "RETRY_AFTER_FAILURE",
    "JwksUnavailableError",
    "Key",
    "KeySet",
    "Keys",
    "open_keys",
    "parse_jwks",
]

log = logging.getLogger("shoal.gateway")

CACHE_TTL = 300.0
"""Seconds a JWKS fetched from a URL is used before it is fetched again."""
REFETCH_INTERVAL = 30.0
"""The least time between two fetches of a JWKS URL (for unknown keys, or after a failure)."""
RETRY_AFTER_FAILURE = 5.0
"""With no JWKS fetched yet, the least time between two attempts."""
FETCH_TIMEOUT = 5.0
MAX_JWKS_BYTES = 1024 * 1024

# The kind of key each algorithm needs: (kty, the curves it may be on; empty: any).
_KEY_KIND: dict[str, tuple[str, frozenset[str]]] = {
    **{
        f"{family}{bits}": ("RSA", frozenset())
        for family in ("RS", "PS")
        for bits in (256, 384, 512)
    },
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
_LOADERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "RSA": RSAAlgorithm.from_jwk,
    "EC": ECAlgorithm.from_jwk,
    "OKP": OKPAlgorithm.from_jwk,
}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth"})
_MIN_RSA_BITS = 2048


class JwksUnavailableError(ShoalError):
    """The route's JWKS URL could not be fetched, and no earlier copy is cached."""


@dataclasses.dataclass(frozen=True, slots=True)
class Key:
    """One public signature key of a JWKS."""

    kid: str | None
    kty: str
    crv: str | None
    alg: str | None  # the JWK's own "alg", if it names one
    key: Any  # a cryptography public key

    def fits(self, alg: str) -> bool:
        """Whether this key may verify a signature made with ``alg``."""
        kty, curves = _KEY_KIND.get(alg, ("", frozenset()))
        if self.kty != kty or (curves and self.crv not in curves):
            return False
        return self.alg is None or self.alg == alg

    def describe(self) -> str:
        kind = f"{self.kty} {self.crv}" if self.crv else self.kty
        return f"key {self.kid!r} ({kind})" if self.kid is not None else f"the key ({kind})"


@dataclasses.dataclass(frozen=True, slots=True)
class KeySet:
    """The usable signature keys of a JWKS."""

    keys: tuple[Key, ...]

    def find(self, kid: str | None) -> Key | None:
        """The key named ``kid``; without a kid, the only key, if there is only one."""
        if kid is None:
            return self.keys[0] if len(self.keys) == 1 else None
        return next((key for key in self.keys if key.kid == kid), None)

    def has(self, kid: str | None) -> bool:
        return self.find(kid) is not None


def parse_jwks(data: bytes) -> tuple[KeySet, list[str]]:
    """The signature keys in a JWKS document, and a problem for each key that cannot be used.

    Keys marked for encryption (``"use": "enc"``) are left out without a problem.
    """
    try:
        doc = json.loads(data)
    except ValueError as exc:
        return KeySet(()), [f"not valid JSON: {exc}"]
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return KeySet(()), ['expected a JWKS: a JSON object {"keys": [...]}']
    keys: list[Key] = []
    problems: list[str] = []
    for index, entry in enumerate(entries):
        try:
            key = _parse_key(entry)
        except ValueError as exc:
            kid = entry.get("kid") if isinstance(entry, dict) else None
            named = f" (kid {kid!r})" if isinstance(kid, str) else ""
            problems.append(f"keys[{index}]{named}: {exc}")
            continue
        if key is not None:
            keys.append(key)
    return KeySet(tuple(keys)), problems


def _parse_key(entry: object) -> Key | None:
    if not isinstance(entry, dict):
        raise ValueError("expected a JSON object")
    kty, kid, crv, alg = (entry.get(name) for name in ("kty", "kid", "crv", "alg"))
    if entry.get("use", "sig") != "sig":
        return None
    if kty == "oct":
        raise ValueError("a symmetric (shared secret) key: only public keys are accepted")
    if not isinstance(kty, str) or kty not in _LOADERS:
        raise ValueError(f"unsupported key type (kty) {kty!r}: use RSA, EC or OKP")
    if _PRIVATE_MEMBERS & entry.keys():
        raise ValueError("a private key: a JWKS for verifying holds public keys only")
    if kid is not None and not isinstance(kid, str):
        raise ValueError(f"kid must be a string, got {kid!r}")
    if alg is not None and alg not in _KEY_KIND:
        raise ValueError(f"alg {alg!r} is not an asymmetric signature algorithm")
    if kty == "OKP" and crv not in ("Ed25519", "Ed448"):
        raise ValueError(f"curve {crv!r} is not for signatures: use Ed25519 or Ed448")
    try:
        key = _LOADERS[kty](entry)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not a valid {kty} key: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < _MIN_RSA_BITS:
        raise ValueError(f"an RSA key of {key.key_size} bits: at least {_MIN_RSA_BITS} needed")
    return Key(kid, kty, crv if isinstance(crv, str) else None, alg, key)


class _FileKeys:
    """A JWKS file, read once, when the gateway starts."""

    def __init__(self, path: Path, prefix: str) -> None:
        def fail(message: str) -> ManifestError:
            problem = f"the JWKS of gateway route {prefix!r}: {message}"
            return ManifestError([ManifestProblem(str(path), 0, 0, "", problem)])

        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise fail("no such file (jwks: is relative to the app directory)") from None
        except OSError as exc:
            raise fail(f"cannot read: {exc.strerror or exc}") from None
        keys, problems = parse_jwks(data)
        if problems:
            raise fail("; ".join(problems))
        if not keys.keys:
            raise fail("holds no signature key")
        self._keys = keys

    async def get(self, kid: str | None) -> KeySet:
        return self._keys

    async def aclose(self) -> None:
        return None


class _UrlKeys:
    """A JWKS URL: fetched on first use, cached, fetched again when stale or a key is unknown."""

    def __init__(
        self, url: str, client: httpx.AsyncClient | None, clock: Callable[[], float]
    ) -> None:
        self._url = url
        self._client = client
        self._owns_client = client is None
        self._clock = clock
        self._keys: KeySet | None = None
        self._fetched_at = -math.inf
        self._attempted_at = -math.inf
        self._lock = asyncio.Lock()

    async def get(self, kid: str | None) -> KeySet:
        if self._should_fetch(kid):
            async with self._lock:
                if self._should_fetch(kid):  # unless another request just did
                    await self._fetch()
        if self._keys is None:
            raise JwksUnavailableError(f"the JWKS at {self._url} cannot be fetched")
        return self._keys

    def _should_fetch(self, kid: str | None) -> bool:
        since_attempt = self._clock() - self._attempted_at
        if self._keys is None:
            return since_attempt >= RETRY_AFTER_FAILURE
        stale = self._clock() - self._fetched_at >= CACHE_TTL
        return (stale or not self._keys.has(kid)) and since_attempt >= REFETCH_INTERVAL

    async def _fetch(self) -> None:
        self._attempted_at = self._clock()
        try:
            keys = await self._download()
        except _FetchError as exc:
            if self._keys is None:
                log.error("cannot fetch the JWKS at %s: %s", self._url, exc)
            else:
                log.warning(
                    "cannot fetch the JWKS at %s: %s (keeping the keys held)", self._url, exc
                )
            return
        self._keys, self._fetched_at = keys, self._attempted_at

    async def _download(self) -> KeySet:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=FETCH_TIMEOUT)
        body = bytearray()
        try:
            headers = {"accept": "application/json"}
            async with self._client.stream("GET", self._url, headers=headers) as response:
                if response.status_code != 200:
                    raise _FetchError(f"HTTP {response.status_code}")
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise _FetchError(f"larger than {MAX_JWKS_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise _FetchError(f"{type(exc).__name__}: {exc}") from exc
        keys, problems = parse_jwks(bytes(body))
        for problem in problems:
            log.warning("the JWKS at %s: %s (key left out)", self._url, problem)
        if not keys.keys:
            raise _FetchError("it holds no usable signature key")
        return keys

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


class _FetchError(Exception):
    pass


Keys = _FileKeys | _UrlKeys


def open_keys(
    jwks: str,
    app_dir: Path,
    *,
    prefix: str,
    client: httpx.AsyncClient | None,
    clock: Callable[[], float],
) -> Keys:
    """The keys at ``jwks``: a URL, or a file relative to ``app_dir`` (read now)."""
    if "://" in jwks:
        return _UrlKeys(jwks, client, clock)
    return _FileKeys(app_dir / jwks, prefix)
