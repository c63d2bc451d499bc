"""How instances get certificates and the trust bundle over NATS: subjects, messages, bucket.

The supervisor's issuer answers three request subjects, each a JSON object:

``shoal.<app>.ca.bootstrap``  ``{"token", "csr"}``: the first SVID of a spawned
    instance; the single-use token names the service it may have.
``shoal.<app>.ca.renew``      ``{"chain", "csr", "proof"}``: a new SVID for the
    holder of a current one; ``proof`` is the current key's signature over the CSR.
``shoal.<app>.ca.issue``      ``{"service", "csr"}``: the operator's path (a hand-run
    `shoal serve`, the CLI); only the app's admin NATS user may publish to it.

A reply is ``{"chain": PEM, "bundle": PEM, "generation": n}`` or ``{"error", "reason"}``.

The trust bundle lives in the KV bucket ``shoal-trust-<app>``, key ``bundle``:
the roots every instance must trust, a generation that bumps on each change, and
``reissue``: instances whose SVID came from an older intermediate renew at once.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["TRUST_KEY", "TrustState", "ca_subject", "decode_reply", "trust_bucket_name"]

TRUST_KEY = "bundle"


def trust_bucket_name(app: str) -> str:
    return f"shoal-trust-{app}"


def ca_subject(app: str, verb: str) -> str:
    """``shoal.<app>.ca.<verb>``: bootstrap, renew or issue."""
    return f"shoal.{app}.ca.{verb}"


class TrustState(BaseModel):
    """What the trust bucket holds."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    roots: tuple[str, ...]
    """PEM certificates, each a root an SVID may chain to."""
    generation: int
    issuer: str = ""
    """The fingerprint of the intermediate that signs now; SVIDs from another renew."""


def decode_reply(data: bytes) -> dict[str, Any]:
    """The issuer's reply as a dict (``{"error": ...}`` for anything unreadable)."""
    try:
        reply = json.loads(data)
    except ValueError:
        return {"error": "the certificate authority sent an unreadable reply", "reason": "protocol"}
    if not isinstance(reply, dict):
        return {"error": "the certificate authority sent an unreadable reply", "reason": "protocol"}
    return reply
