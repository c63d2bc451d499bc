"""Where configuration and secrets live in NATS, and what a key or a value may be. No I/O.

Each mesh service has one JetStream key-value bucket, ``shoal-config-<app>_<service>``
(``_`` cannot occur in an app or service name, so two pairs never share a bucket),
with history (the last 64 revisions of each key). Its keys:

* ``config.manifest.<key>``: the value of ``services.<name>.config.<key>`` in
  ``shoal.yaml``, written by the supervisor at start and when the manifest is applied;
* ``config.override.<key>``: a value set live with `shoal config set` (deleted by
  `shoal config unset`, which brings back the manifest's value);
* ``secret.<name>``: a secret, AES-GCM ciphertext (see ``_crypto``).

One bucket per service, not one per app, because NATS permissions then say exactly
who reads what by stream name: a service's user may read its own bucket and no
other (nats-py's ordered consumers re-create themselves without a name, so a
per-key filter in the API subject could not be relied on).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

__all__ = [
    "CONFIG_PREFIX",
    "HISTORY",
    "KEY_RULE",
    "MANIFEST",
    "OVERRIDE",
    "SECRET_PREFIX",
    "Source",
    "bucket_name",
    "check_json",
    "is_key",
    "key_problem",
    "parse_assignment",
    "stream_name",
]

HISTORY = 64
"""Revisions kept per key (NATS KV's maximum)."""

MANIFEST = "manifest"
OVERRIDE = "override"
Source = Literal["manifest", "override"]
CONFIG_PREFIX = "config."
SECRET_PREFIX = "secret."

_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
KEY_RULE = "letters, digits, '_' and '-', 1 to 64 characters"


def bucket_name(app: str, service: str) -> str:
    """The config bucket of ``service`` in ``app``."""
    return f"shoal-config-{app}_{service}"


def stream_name(app: str, service: str) -> str:
    """The JetStream stream under the bucket (what NATS permissions name)."""
    return f"KV_{bucket_name(app, service)}"


def is_key(key: object) -> bool:
    return isinstance(key, str) and _KEY.fullmatch(key) is not None


def key_problem(what: str, key: str) -> str | None:
    """Why ``key`` cannot name a config key or secret (``what``), or None if it can."""
    if is_key(key):
        return None
    fixed = re.sub(r"[^A-Za-z0-9_-]+", "_", key).strip("_")[:64]
    hint = f" (try {fixed!r})" if fixed and fixed != key else ""
    return f"{key!r} is not a valid {what} name: use {KEY_RULE}{hint}"


def check_json(value: object, where: str = "") -> str | None:
    """Why ``value`` is not a config value (str, int, float, bool, list, map), or None."""
    at = f" at {where}" if where else ""
    if isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if value == value and abs(value) != float("inf") else f"not a finite number{at}"
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = check_json(item, f"{where}[{index}]")
            if found:
                return found
        return None
    if isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str):
                return f"map keys must be strings, got {name!r}{at}"
            found = check_json(item, f"{where}.{name}" if where else name)
            if found:
                return found
        return None
    if value is None:
        return f'an empty value{at}: write a value ("" for an empty string), or leave the key out'
    return (
        f"expected a string, number, true/false, list or map{at}, "
        f"got a {type(value).__name__} (put it in quotes to make it a string)"
    )


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line: the value is JSON if it parses, else a string.

    Raises ValueError with the reason.
    """
    key, sep, raw = text.partition("=")
    if not sep:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    problem = key_problem("config key", key)
    if problem:
        raise ValueError(problem)
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    else:
        if check_json(value) is not None:  # null, NaN: keep the text as written
            value = raw
    return key, value


def read_subjects(app: str, service: str) -> list[str]:
    """What ``service``'s NATS user may publish to read (and watch) its own bucket, no other.

    Stream info and consumer create/info/delete of its own stream (nats-py's ordered
    consumer creates an unnamed consumer: ``$JS.API.CONSUMER.CREATE.<stream>``), and
    direct gets of its own keys. No ``$KV.<bucket>.>``: instances never write config.
    """
    stream = stream_name(app, service)
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.API.DIRECT.GET.{stream}.>",
    ]
