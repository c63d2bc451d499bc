"""Authorization policy: which mesh callers may call a service, as written in ``shoal.yaml``.

The manifest's top-level ``policies:`` is a list of :class:`AuthzRule`, each naming the
service it protects (``target``), and ``default_policy`` says what a service no rule
targets allows (``allow-mesh``, any authenticated mesh caller, or ``deny``). Each
service's instances receive an :class:`AuthzPolicy`: the app's default and the rules
that target that service, inside its ``ServicePolicy`` (as JSON, applied live). The
evaluator is ``shoal.mesh._authz``; how rules combine is described there. No I/O here.

Rule paths are normalised at load exactly as request paths are at the door
(``shoal.mesh._paths``), so a rule and a request can only meet in one spelling.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from shoal.manifest._checks import AT_KEY, AT_VALUE, closest, dns_label, problem

__all__ = [
    "ACTIONS",
    "DEFAULT_POLICIES",
    "METHODS",
    "Action",
    "AuthzPolicy",
    "AuthzRule",
    "DefaultPolicy",
    "by_alias",
    "rule_name",
]

ACTIONS = ("allow", "deny")
DEFAULT_POLICIES = ("allow-mesh", "deny")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")

_RULE_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?|policies\[\d{1,6}\]")
_SERVICE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

T = TypeVar("T")


def rule_name(index: int) -> str:
    """The name of the rule at ``index`` of ``policies:`` when it was given none."""
    return f"policies[{index}]"


def _one_of(choices: Sequence[str]) -> Callable[[object], object]:
    """A check that a string is one of ``choices``, suggesting the closest on a typo."""

    def check(value: object) -> object:
        if not isinstance(value, str) or value in choices:
            return value  # not a string: the Literal reports it
        match = closest(value.lower(), choices)
        hint = f" (did you mean {match!r}?)" if match is not None else ""
        listing = " or ".join(repr(choice) for choice in choices)
        raise problem(f"expected {listing}, got {value!r}{hint}")

    return check


def _method(value: str) -> str:
    if value in METHODS:
        return value
    if value.upper() in METHODS:
        raise problem(f"methods are written in uppercase: did you mean {value.upper()!r}?")
    match = closest(value.upper(), METHODS)
    hint = f"did you mean {match!r}? " if match is not None else ""
    raise problem(f"unknown HTTP method {value!r} ({hint}methods: {', '.join(METHODS)})")


def _caller(value: str) -> str:
    if value == "*" or _SERVICE.fullmatch(value):
        return value
    fixed = value.lower()
    hint = f" (try {fixed!r})" if _SERVICE.fullmatch(fixed) else ""
    raise problem(f"expected the name of a calling service or '*', got {value!r}{hint}")


def _path(value: str) -> str:
    # Imported here: shoal.mesh imports the manifest models, so a module-level import
    # would be circular. The path rules live with the request side on purpose.
    from shoal.mesh._paths import PathRejectedError, normalize_path

    if not value.startswith("/"):
        raise problem(f"must start with '/', got {value!r} (try {'/' + value!r})")
    if "?" in value or "#" in value:
        raise problem(f"a path prefix holds no query or fragment ('?', '#'), got {value!r}")
    if "\\" in value:
        raise problem(f"a path prefix has no backslashes (use '/'), got {value!r}")
    try:
        return normalize_path(value)
    except PathRejectedError as exc:
        raise problem(f"not a usable path prefix: {exc.reason}, got {value!r}") from None


def _rule_name(value: str) -> str:
    if _RULE_NAME.fullmatch(value):
        return value
    raise problem(
        "not a valid rule name: use letters, digits, '-', '_' and '.', starting and ending "
        f"with a letter or digit, at most 63 characters, got {value!r}"
    )


def _listed(value: object) -> object:
    if isinstance(value, str):
        item = value if re.fullmatch(r"[\w/-]+", value) else f'"{value}"'
        raise problem(f"expected a list, got {value!r} (write [{item}])")
    return value


def _some(what: str) -> Callable[[tuple[str, ...]], tuple[str, ...]]:
    def check(values: tuple[str, ...]) -> tuple[str, ...]:
        if not values:
            raise problem(f"an empty list matches nothing: leave the key out to match any {what}")
        return values

    return check


Action = Literal["allow", "deny"]
DefaultPolicy = Literal["allow-mesh", "deny"]
RuleName = Annotated[StrictStr, AfterValidator(_rule_name)]
Target = Annotated[StrictStr, AfterValidator(dns_label("service name"))]
Caller = Annotated[StrictStr, AfterValidator(_caller)]
Method = Annotated[StrictStr, AfterValidator(_method)]
PathPrefix = Annotated[StrictStr, AfterValidator(_path)]
Callers = Annotated[
    tuple[Caller, ...], BeforeValidator(_listed), AfterValidator(_some("authenticated caller"))
]
Methods = Annotated[tuple[Method, ...], BeforeValidator(_listed), AfterValidator(_some("method"))]
PathPrefixes = Annotated[
    tuple[PathPrefix, ...], BeforeValidator(_listed), AfterValidator(_some("path"))
]
DefaultPolicyField = Annotated[DefaultPolicy, BeforeValidator(_one_of(DEFAULT_POLICIES))]


def _yaml_keys(model: type[BaseModel]) -> list[str]:
    return sorted(info.alias or name for name, info in model.model_fields.items())


def _unknown_key(model: type[BaseModel], key: object) -> str:
    valid = _yaml_keys(model)
    match = closest(str(key), valid)
    if match is not None:
        return f"unknown key (did you mean {match!r}?)"
    return f"unknown key (valid keys: {', '.join(valid)})"


def _redetail(error: ErrorDetails, model: type[BaseModel]) -> InitErrorDetails:
    kind = error["type"]
    if kind == "extra_forbidden" and len(error["loc"]) == 1:
        message = _unknown_key(model, error["loc"][0])
        return {"type": problem(message, at_key=True), "loc": error["loc"], "input": error["input"]}
    detail: InitErrorDetails = {
        "type": PydanticCustomError(kind, error["msg"]) if kind in (AT_KEY, AT_VALUE) else kind,
        "loc": error["loc"],
        "input": error["input"],
    }
    if "ctx" in error:
        detail["ctx"] = error["ctx"]
    return detail


def by_alias(model: type[BaseModel], handler: Callable[[Any], T]) -> Callable[[Any], T]:
    """``handler``, with unknown keys of ``model`` itself reported against the YAML keys.

    A field spelt differently in Python (``from_`` for ``from:``) would otherwise be
    suggested by its Python name.
    """

    def run(data: Any) -> T:
        try:
            return handler(data)
        except ValidationError as exc:
            errors = exc.errors()
            if not any(e["type"] == "extra_forbidden" and len(e["loc"]) == 1 for e in errors):
                raise
            details = [_redetail(error, model) for error in errors]
            raise ValidationError.from_exception_data(exc.title, details) from None

    return run


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)


class AuthzRule(_Model):
    """One rule: requests to ``target`` from ``from``, with ``methods``, under ``paths``.

    The requirements given are ANDed, the values inside one are ORed; one left out
    matches anything (``from`` then matches any authenticated caller, like ``"*"``).
    """

    name: RuleName | None = None
    target: Target
    action: Annotated[Action, BeforeValidator(_one_of(ACTIONS))] = "allow"
    from_: Callers | None = Field(default=None, alias="from")
    methods: Methods | None = None
    paths: PathPrefixes | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _yaml_names(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        return by_alias(cls, handler)(data)


class AuthzPolicy(_Model):
    """What one service's instances enforce: the app's default and the rules targeting it."""

    default: DefaultPolicyField = "allow-mesh"
    rules: tuple[AuthzRule, ...] = ()

    @classmethod
    def from_json(cls, data: str | bytes) -> AuthzPolicy:
        return cls.model_validate_json(data)

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_defaults=True).encode()
