"""The models of ``shoal.yaml``: what a valid manifest is, with no I/O.

Every check raises an error a user can read as is. Checks that are not about
one value (exactly one of ``asgi``/``command``, routes naming known services,
versions and traffic rules across entries, in ``_traffic_checks.py``) run on
the raw input next to field validation, so one pass reports every problem,
each at the key it is about.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    StrictBool,
    StrictStr,
    ValidationInfo,
    model_validator,
)

from shoal.manifest._authz import (
    AuthzPolicy,
    AuthzRule,
    DefaultPolicyField,
    by_alias,
    rule_name,
)
from shoal.manifest._authz_checks import authz_extras
from shoal.manifest._checks import (
    AT_KEY,
    AT_VALUE,
    DEFAULT_VERSION,
    Extra,
    Loc,
    Port,
    Replicas,
    ServiceName,
    Version,
    closest,
    dns_label,
    field_of,
    problem,
    validate_with,
)
from shoal.manifest._config import ConfigMap, config_extras
from shoal.manifest._jwt import JwtSpec
from shoal.manifest._policy import (
    DEFAULT_POLICY,
    Duration,
    LimitsPolicy,
    OutlierPolicy,
    RetryPolicy,
    RoutePolicy,
    ServicePolicy,
    TrafficPolicy,
)
from shoal.manifest._state import StateField, StateSpec
from shoal.manifest._traffic_checks import (
    entry_extras,
    order_extras,
    read_entries,
    service_problem,
)

__all__ = [
    "AT_KEY",
    "AT_VALUE",
    "MANIFEST_FILENAME",
    "GatewaySpec",
    "Manifest",
    "RouteSpec",
    "ServiceSpec",
    "closest",
]

MANIFEST_FILENAME = "shoal.yaml"

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_IMPORT_PATH = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_import_path(value: str) -> str:
    if _IMPORT_PATH.fullmatch(value):
        return value
    hint = " (add ':app' or the name of the ASGI object)" if ":" not in value else ""
    raise problem(
        f"expected an import path 'package.module:attribute' (e.g. 'catalog.main:app'), "
        f"got {value!r}{hint}"
    )


def _check_env_name(name: str) -> str:
    if _ENV_NAME.fullmatch(name):
        return name
    raise problem(
        "not a valid environment variable name: use letters, digits and '_', "
        "not starting with a digit",
        at_key=True,
    )


def _env_value(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _split_command(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise problem(f"cannot split the command into words: {exc}") from None


def _check_command(words: tuple[str, ...]) -> tuple[str, ...]:
    if not words or not words[0]:
        raise problem('must name the program to run, e.g. ["node", "server.js"]')
    return words


def _check_prefix(prefix: str) -> str:
    if prefix.startswith("/"):
        return prefix
    raise problem(f"must start with '/', got {prefix!r} (try {'/' + prefix!r})")


AppName = Annotated[StrictStr, AfterValidator(dns_label("app name"))]
ImportPath = Annotated[StrictStr, AfterValidator(_check_import_path)]
Command = Annotated[
    tuple[StrictStr, ...], BeforeValidator(_split_command), AfterValidator(_check_command)
]
EnvName = Annotated[StrictStr, AfterValidator(_check_env_name)]
EnvValue = Annotated[StrictStr, BeforeValidator(_env_value)]


class RouteSpec(BaseModel):
    """One gateway route: requests under ``prefix`` go to ``service``.

    With ``jwt``, only requests bearing a valid token pass (see :class:`JwtSpec`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: Annotated[StrictStr, AfterValidator(_check_prefix)]
    service: StrictStr
    strip_prefix: StrictBool = False
    jwt: JwtSpec | None = None


def _check_tls_path(value: str) -> str:
    if not value.strip():
        raise problem("a file path is required (relative to the app directory, or absolute)")
    return value


TlsPath = Annotated[StrictStr, AfterValidator(_check_tls_path)]


def _tls_word(value: object) -> object:
    if value == "dev":
        return {"dev": True}
    if isinstance(value, str):
        raise problem(
            f"expected `dev` (a development certificate for localhost) or "
            f"{{cert: FILE, key: FILE}}, got {value!r}"
        )
    return value


class GatewayTlsSpec(BaseModel):
    """What the gateway serves outward: ``dev`` (made by shoal), or the user's PEM files,
    relative to the app directory (``cert``: the chain, leaf first; ``key``: unencrypted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert: TlsPath | None = None
    key: TlsPath | None = None
    dev: StrictBool = False

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if not self.dev and (self.cert is None or self.key is None):
            missing = "key" if self.key is None else "cert"
            raise problem(f"`{missing}` is missing: give both cert and key, or write `tls: dev`")
        return self


class GatewaySpec(BaseModel):
    """The one entry point from outside: a port, its routes, and optionally TLS.

    ``tls: dev`` serves a self-signed certificate for localhost that shoal makes
    under ``.shoal/gateway-tls/``; ``tls: {cert, key}`` serves the user's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    port: Port = 8080
    routes: tuple[RouteSpec, ...] = ()
    tls: Annotated[GatewayTlsSpec | None, BeforeValidator(_tls_word)] = None


def _kind_extras(data: Mapping[object, object]) -> list[Extra]:
    has_asgi = data.get("asgi") is not None
    has_command = data.get("command") is not None
    if has_asgi and has_command:
        return [((), "set either 'asgi' or 'command', not both", True)]
    if not has_asgi and not has_command:
        message = (
            "needs 'asgi' (the import path of an ASGI app, e.g. 'orders.main:app') "
            'or \'command\' (a program to run, e.g. ["node", "server.js"])'
        )
        return [((), message, True)]
    if has_asgi and data.get("port") is not None:
        message = "port applies only to command services (asgi services get a free port)"
        return [(("port",), message, True)]
    return []


def _service_extras(data: object) -> list[Extra]:
    if not isinstance(data, Mapping):
        return []
    return [*_kind_extras(data), *order_extras(data), *config_extras(data)]


class ServiceSpec(BaseModel):
    """One service: an ASGI app (``asgi``) or any program (``command``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    asgi: ImportPath | None = None
    command: Command | None = None
    port: Port | None = None
    replicas: Replicas = 1
    version: Version = DEFAULT_VERSION
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    service: ServiceName | None = None
    """Run as another version of the named service (the entry holds that service's rules)."""
    timeout: Duration = DEFAULT_POLICY.timeout
    retries: RetryPolicy = DEFAULT_POLICY.retries
    outlier: OutlierPolicy = DEFAULT_POLICY.outlier
    limits: LimitsPolicy = DEFAULT_POLICY.limits
    routes: tuple[RoutePolicy, ...] = ()
    traffic: TrafficPolicy = DEFAULT_POLICY.traffic
    config: ConfigMap = Field(default_factory=dict)
    """Configuration values (JSON); `shoal config set` overrides them live."""
    state: StateField = StateSpec()
    """Where ``shoal.state()`` keeps this service's keys (SQLite unless told otherwise)."""

    def policy(self) -> ServicePolicy:
        """The traffic policy written under this entry."""
        return ServicePolicy(
            timeout=self.timeout,
            retries=self.retries,
            outlier=self.outlier,
            limits=self.limits,
            routes=self.routes,
            traffic=self.traffic,
        )

    @property
    def kind(self) -> Literal["asgi", "command"]:
        """``"asgi"`` for an ASGI app run by the runtime, ``"command"`` for a program."""
        return "asgi" if self.asgi is not None else "command"

    @model_validator(mode="wrap")
    @classmethod
    def _exactly_one_kind(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        result: Self = validate_with(data, handler, _service_extras(data), cls.__name__)
        return result


def _manifest_extras(data: object) -> list[Extra]:
    services = field_of(data, "services")
    if not isinstance(services, Mapping):
        return []
    if not services:
        return [(("services",), "needs at least one service", True)]
    entries = read_entries(services)
    extras = entry_extras(entries)
    routes = field_of(field_of(data, "gateway"), "routes")
    if not isinstance(routes, list | tuple):
        return extras
    for index, route in enumerate(routes):
        target = field_of(route, "service")
        message = service_problem(target, entries) if isinstance(target, str) else None
        if message is not None:
            loc: Loc = ("gateway", "routes", index, "service")
            extras.append((loc, message, False))
    return extras


class Manifest(BaseModel):
    """A whole ``shoal.yaml``: the app's name, its services, its gateway and who may call
    whom (``policies:``, the rules, and ``default_policy`` for services no rule targets)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    app: AppName
    services: dict[ServiceName, ServiceSpec]
    gateway: GatewaySpec | None = None
    default_policy: DefaultPolicyField = "allow-mesh"
    authz_rules: tuple[AuthzRule, ...] = Field(default=(), alias="policies")
    """``policies:`` in the file (``policies()`` is each service's compiled policy)."""

    _path: Path = PrivateAttr(default_factory=lambda: Path(MANIFEST_FILENAME).absolute())

    @property
    def path(self) -> Path:
        """The absolute path of the manifest file."""
        return self._path

    @property
    def directory(self) -> Path:
        """The absolute path of the directory holding the manifest (the app's root)."""
        return self._path.parent

    @property
    def instances_total(self) -> int:
        """How many instances run in all: the sum of every service's replicas."""
        return sum(service.replicas for service in self.services.values())

    def service_of(self, entry: str) -> str:
        """The mesh service that the instances of ``entry`` register as."""
        return self.services[entry].service or entry

    def authz(self, service: str) -> AuthzPolicy:
        """What ``service``'s instances enforce: ``default_policy`` and the rules targeting
        it, each named (``policies[<index>]`` for a rule written without a name)."""
        rules = tuple(
            rule if rule.name is not None else rule.model_copy(update={"name": rule_name(index)})
            for index, rule in enumerate(self.authz_rules)
            if rule.target == service
        )
        return AuthzPolicy(default=self.default_policy, rules=rules)

    def policies(self) -> dict[str, ServicePolicy]:
        """Each mesh service's policy: traffic rules from its own entry (not its version
        entries) and authorization from :meth:`authz`."""
        return {
            name: spec.policy().model_copy(update={"authz": self.authz(name)})
            for name, spec in self.services.items()
            if spec.service is None
        }

    @model_validator(mode="wrap")
    @classmethod
    def _cross_checks(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        extras = [*_manifest_extras(data), *authz_extras(data)]
        result: Self = validate_with(data, by_alias(cls, handler), extras, cls.__name__)
        path = info.context.get("path") if isinstance(info.context, dict) else None
        if isinstance(path, Path):
            result._path = path.absolute()
        return result
