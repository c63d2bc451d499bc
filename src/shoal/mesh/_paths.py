"""Request-path normalisation for authorization rules: one canonical path, checked and served.

A rule such as ``deny /admin`` is only as good as the path it is matched against. If the
guard checks one spelling of the path and the app routes another, the rule can be walked
around by encoding. So the path is normalised *once*, from the undecoded
``scope["raw_path"]``, and that same result is both matched against the rules and handed
to the app (as ``scope["path"]``, with :func:`encode_path` for ``scope["raw_path"]``). The
result is a fixed point: normalising it again changes nothing, so nothing downstream can
find a second meaning in it.

The classes of bypass this closes, and the rule for each:

* **Dot segments** (CVE-2019-9901: Envoy matched RBAC rules on the path as sent, so
  ``/x/../admin`` escaped a rule on ``/admin`` that the app then served). ``.`` and ``..``
  are removed as in RFC 3986 section 5.2.4 *after* percent-decoding, so ``%2e%2e`` counts
  too, and ``..`` at the root is clamped there (``/../admin`` is ``/admin``), as
  remove_dot_segments and browsers do. This is Envoy's ``normalize_path``.
* **Repeated slashes**: ``//admin`` is ``/admin`` (Envoy's ``merge_slashes``); an
  empty segment never means anything to a router.
* **Encoded slashes** ``%2F`` and ``%5C``: decoding them would change which segments the
  path has (``/x/..%2Fadmin``), keeping them lets a backend that decodes them later
  disagree with the check. They are refused, like Envoy's
  ``path_with_escaped_slashes_action: REJECT_REQUEST``. Raw backslashes are refused too,
  since some servers treat them as slashes.
* **Path parameters** (Tomcat and Spring strip ``;params`` from each segment, so
  ``/x/..;/admin`` is ``/admin`` to them; Orange Tsai, "Breaking Parser Logic", 2018):
  everything from a segment's first raw ``;`` is dropped, *before* decoding, as Tomcat
  does. An encoded ``%3B`` is data, not a delimiter: it decodes to a literal ``;`` that
  stays in the segment, and :func:`encode_path` re-encodes it, so no later parser can
  read it as a parameter. ``/admin%3Bx`` is the path ``/admin;x``, which neither the rule
  on ``/admin`` nor a literal router takes for ``/admin``.
* **Double encoding** (IIS, CVE-2001-0333): percent-escapes are decoded exactly once; an
  escaped ``%`` that decodes into another escape (``%252e``, ``%25%32%65``) is refused,
  since a second decoder downstream would see ``.``.
* **Malformed or hostile bytes**: invalid escapes (``%zz``, a truncated ``%4``), NUL and
  other control characters whether raw or encoded (C1 controls included), bytes that are
  not UTF-8 once decoded (the overlong ``%c0%ae`` of the IIS Unicode traversal,
  CVE-2000-0884), a raw ``?`` or ``#`` (``raw_path`` never holds the query, so one here
  means the caller passed the whole target) and a path not starting with ``/`` are all
  refused.
* **Trailing dots and spaces** (Windows strips them, so ``admin.`` and ``admin%20`` open
  ``admin``): they are stripped from every segment other than ``.`` and ``..``; a
  segment made only of dots and spaces (``...``, ``.%20``) has no agreed meaning and is
  refused.

Refused paths raise :class:`PathRejectedError`; the guard answers 400 without calling the
app. Other escapes are decoded (``/caf%C3%A9`` is ``/café``), case is kept (rules are
case-sensitive unless they say otherwise), and a trailing slash is kept when the last
segment was empty, ``.`` or ``..`` (``/admin/.`` is ``/admin/``). Unicode is not
NFKC-folded: ``/admin`` spelt with a fullwidth ``a`` (U+FF41) stays as it is, and a literal
router does not take it for ``/admin`` either. No I/O here.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, unquote_to_bytes

__all__ = [
    "PathRejectedError",
    "encode_path",
    "normalize_path",
    "normalize_raw_path",
    "path_matches_prefix",
]

_BAD_RAW = re.compile(rb"[\x00-\x1f\x7f\\?#]")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_ESCAPE = re.compile(rb"%[0-9A-Fa-f]{2}")
_DOT_SEGMENTS = (".", "..")
# RFC 3986 pchar, less ";" (a decoded ";" is data, not a parameter) and "%".
_SAFE = "/!$&'()*+,=:@"


class PathRejectedError(ValueError):
    """A request path refused outright (answer 400) rather than normalised."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"request path {path!r} rejected: {reason}; send a plain path "
            "(no encoded '/' or '\\', control characters or double encoding)"
        )
        self.path = path
        self.reason = reason


def normalize_raw_path(raw_path: bytes) -> str:
    """The canonical form of ``scope["raw_path"]`` (undecoded), or :class:`PathRejectedError`."""
    shown = raw_path.decode("ascii", "backslashreplace")
    if not raw_path.startswith(b"/"):
        raise PathRejectedError(shown, "it does not start with '/'")
    bad = _BAD_RAW.search(raw_path)
    if bad is not None:
        raise PathRejectedError(shown, f"it contains the raw character {bad.group()!r}")
    segments = [_segment(raw, shown) for raw in raw_path[1:].split(b"/")]
    return _remove_dot_segments(segments)


def normalize_path(raw: str) -> str:
    """The canonical form of a still-encoded path given as text (``"/caf%C3%A9"``).

    Not for ``scope["path"]``: the server has already decoded that, and decoding it again
    is the double decoding this module refuses. Use :func:`normalize_raw_path` on
    ``scope["raw_path"]``.
    """
    try:
        encoded = raw.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PathRejectedError(raw, "it is not valid Unicode") from exc
    return normalize_raw_path(encoded)


def encode_path(path: str) -> bytes:
    """The ``raw_path`` to hand the app with a normalised ``path``; normalises back to it."""
    return quote(path, safe=_SAFE).encode("ascii")


def path_matches_prefix(path: str, prefix: str, *, case_sensitive: bool = True) -> bool:
    """Whether normalised ``path`` is ``prefix`` or lies under it, on segment boundaries.

    ``/admin`` (or ``/admin/``) matches ``/admin``, ``/admin/`` and ``/admin/x`` but not
    ``/administrator``; ``/`` matches everything. Without case sensitivity both sides are
    case-folded (``str.casefold``), so ``/ADMIN`` matches ``/admin``.
    """
    if not prefix.startswith("/"):
        raise ValueError(f"a path prefix must start with '/', got {prefix!r}")
    if not case_sensitive:
        path, prefix = path.casefold(), prefix.casefold()
    base = prefix.rstrip("/")
    return path == base or path.startswith(base + "/")


def _segment(raw: bytes, shown: str) -> str:
    """One segment: parameters dropped, decoded once, checked, trailing dots stripped."""
    raw = raw.split(b";", 1)[0]
    if _BAD_ESCAPE.search(raw):
        raise PathRejectedError(
            shown, "it has an invalid percent-escape ('%' not before two hex digits)"
        )
    decoded = unquote_to_bytes(raw)
    if b"/" in decoded or b"\\" in decoded:
        raise PathRejectedError(shown, "it contains an encoded slash (%2F) or backslash (%5C)")
    if _ESCAPE.search(decoded):
        raise PathRejectedError(shown, "it is double percent-encoded (%25 decodes to an escape)")
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PathRejectedError(shown, "it is not UTF-8 once percent-decoded") from exc
    if any(unicodedata.category(char) == "Cc" for char in text):
        raise PathRejectedError(shown, "it contains an encoded control character")
    if text in _DOT_SEGMENTS:
        return text
    stripped = text.rstrip(". ")
    if text and not stripped:
        raise PathRejectedError(shown, f"the segment {text!r} is only dots and spaces")
    return stripped


def _remove_dot_segments(segments: list[str]) -> str:
    """Join segments, dropping empty ones and ``.``, resolving ``..`` (clamped at the root)."""
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment not in ("", "."):
            kept.append(segment)
    path = "/" + "/".join(kept)
    if kept and segments[-1] in ("", *_DOT_SEGMENTS):
        path += "/"
    return path
