"""JWT validation on a gateway route, as written under ``jwt:`` in ``shoal.yaml``.

Only asymmetric algorithms are allowed: the gateway holds public keys (a JWKS
file or URL) and nothing that could sign a token. ``none`` (an unsigned token)
and the HMAC family (``HS256``...) are refused here, with the reason, so that
neither can be configured by mistake. No I/O here: whether the file exists is
checked when the gateway starts.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, StrictStr

from shoal.manifest._checks import closest, problem

__all__ = ["ALGORITHMS", "DEFAULT_ALGORITHMS", "JwtSpec"]

ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
"""The algorithms a route may allow: asymmetric signatures only."""

DEFAULT_ALGORITHMS = ("RS256", "ES256")

_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def _check_algorithm(value: str) -> str:
    if value in ALGORITHMS:
        return value
    if value.lower() == "none":
        raise problem("'none' means an unsigned token, which anyone can forge: never accepted")
    if value.upper().startswith("HS"):
        raise problem(
            f"{value!r} is a symmetric (HMAC) algorithm: its key is a shared secret, which "
            "would have to sit in the JWKS file or be served from the JWKS URL; use an "
            f"asymmetric algorithm ({', '.join(DEFAULT_ALGORITHMS)}, ...)"
        )
    same = next((a for a in ALGORITHMS if a.lower() == value.lower()), None)
    match = same or closest(value, ALGORITHMS)
    hint = f"did you mean {match!r}? " if match else ""
    raise problem(f"unknown algorithm {value!r} ({hint}allowed: {', '.join(ALGORITHMS)})")


def _check_algorithms(values: tuple[str, ...]) -> tuple[str, ...]:
    if not values:
        raise problem(f"needs at least one algorithm (the default is {list(DEFAULT_ALGORITHMS)})")
    return tuple(dict.fromkeys(values))


def _check_jwks(value: str) -> str:
    if not value.strip():
        raise problem("must name a JWKS file (relative to the app directory) or an https URL")
    if "://" not in value:
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise problem(f"expected a file path or an http(s) URL, got {value!r}")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise problem(
            f"the keys must not travel in clear: use https (got {value!r}; "
            "plain http is accepted only for localhost)"
        )
    return value


def _check_text(value: str) -> str:
    if not value.strip():
        raise problem("must not be empty")
    return value


def _one_or_many(value: object) -> object:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return value
    shown = "an empty value" if value is None else repr(value)
    raise problem(f"expected a string or a list of strings, got {shown}")


def _check_audience(values: tuple[str, ...]) -> tuple[str, ...]:
    if not values:
        raise problem("needs at least one audience (or leave 'audience' out)")
    return values


Text = Annotated[StrictStr, AfterValidator(_check_text)]
Algorithm = Annotated[StrictStr, AfterValidator(_check_algorithm)]


class JwtSpec(BaseModel):
    """Require a valid bearer token on a route: signed by a key of ``jwks``, from ``issuer``,
    for ``audience``, unexpired, with one of ``algorithms``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    jwks: Annotated[StrictStr, AfterValidator(_check_jwks)]
    """A JWKS file (relative to the app directory) or an http(s) URL serving one."""
    issuer: Text | None = None
    """The ``iss`` every token must carry (unchecked when not given)."""
    audience: (
        Annotated[tuple[Text, ...], BeforeValidator(_one_or_many), AfterValidator(_check_audience)]
        | None
    ) = None
    """The ``aud`` a token must name (one of them, when several; unchecked when not given)."""
    algorithms: Annotated[tuple[Algorithm, ...], AfterValidator(_check_algorithms)] = (
        DEFAULT_ALGORITHMS
    )

    @property
    def is_url(self) -> bool:
        """Whether ``jwks`` is a URL (else a file)."""
        return "://" in self.jwks
