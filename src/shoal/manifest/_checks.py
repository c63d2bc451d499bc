"""The building blocks of manifest validation: located problems and common value checks.

A check raises :func:`problem`; its error type says whether the problem points
at the key or at the value, so the loader can report the right line and column.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, TypeGuard

from pydantic import AfterValidator, BaseModel, StrictInt, StrictStr, ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

__all__ = [
    "AT_KEY",
    "AT_VALUE",
    "DEFAULT_VERSION",
    "Extra",
    "Loc",
    "Port",
    "Replicas",
    "ServiceName",
    "Version",
    "between",
    "closest",
    "dns_label",
    "field_of",
    "is_dns_label",
    "is_version",
    "problem",
    "validate_with",
]

# Error types of shoal's own checks; the type says where the error points.
AT_KEY = "shoal_at_key"
AT_VALUE = "shoal_at_value"

Loc = tuple[str | int, ...]

_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_DNS_RULE = (
    "use lowercase letters, digits and '-', starting and ending with a letter or digit, "
    "at most 63 characters"
)
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")


def problem(message: str, *, at_key: bool = False) -> PydanticCustomError:
    """A located problem: raise it from a validator."""
    # No context is given, so the message is used verbatim (braces included).
    return PydanticCustomError(AT_KEY if at_key else AT_VALUE, message)


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``word``, if one is close enough to be a likely typo."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _as_dns_label(name: str) -> str:
    label = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return label[:63].rstrip("-")


def dns_label(what: str, *, at_key: bool = False) -> Callable[[str], str]:
    def check(name: str) -> str:
        if _DNS_LABEL.fullmatch(name):
            return name
        fixed = _as_dns_label(name)
        hint = f" (try {fixed!r})" if fixed else ""
        raise problem(f"not a valid {what}: {_DNS_RULE}{hint}", at_key=at_key)

    return check


def between(low: int, high: int) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise problem(f"must be between {low} and {high}, got {value}")
        return value

    return AfterValidator(check)


def is_dns_label(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a string that passes as a service name."""
    return isinstance(value, str) and _DNS_LABEL.fullmatch(value) is not None


def is_version(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a string that passes as a version label."""
    return isinstance(value, str) and _LABEL_VALUE.fullmatch(value) is not None


def _check_version(value: str) -> str:
    if _LABEL_VALUE.fullmatch(value):
        return value
    raise problem(
        "not a valid version label: use letters, digits, '-', '_' and '.', "
        f"starting and ending with a letter or digit, at most 63 characters, got {value!r}"
    )


ServiceName = Annotated[StrictStr, AfterValidator(dns_label("service name", at_key=True))]
Port = Annotated[StrictInt, between(1, 65535)]
Replicas = Annotated[StrictInt, between(0, 64)]
Version = Annotated[StrictStr, AfterValidator(_check_version)]
DEFAULT_VERSION = "v1"

# (where, message, point at the key rather than the value)
Extra = tuple[Loc, str, bool]


def field_of(obj: object, name: str) -> object:
    if isinstance(obj, Mapping):
        return obj.get(name)
    if isinstance(obj, BaseModel):
        return getattr(obj, name, None)
    return None


def _redetail(error: ErrorDetails) -> InitErrorDetails:
    kind = error["type"]
    detail: InitErrorDetails = {
        "type": PydanticCustomError(kind, error["msg"]) if kind in (AT_KEY, AT_VALUE) else kind,
        "loc": error["loc"],
        "input": error["input"],
    }
    if "ctx" in error:
        detail["ctx"] = error["ctx"]
    return detail


def validate_with(
    data: Any, handler: Callable[[Any], Any], extras: Sequence[Extra], title: str
) -> Any:
    """Run field validation and report ``extras`` with its errors, all at once."""
    details: list[InitErrorDetails] = []
    try:
        result = handler(data)
    except ValidationError as exc:
        if not extras:
            raise
        details = [_redetail(error) for error in exc.errors()]
    else:
        if not extras:
            return result
    for loc, message, at_key in extras:
        details.append({"type": problem(message, at_key=at_key), "loc": loc, "input": data})
    raise ValidationError.from_exception_data(title, details)
