"""Cross-checks of versions and traffic rules between the entries of ``shoal.yaml``.

An entry with ``service:`` runs another version of that service; the service's
own entry holds its traffic rules, which may only name versions some entry
runs. These checks read the raw input next to field validation (see
``_models.py``), so one pass reports every problem, each at the key it is about.
A value that fails its own field check is skipped here: that problem is
reported already.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel
from pydantic_core import PydanticCustomError

from shoal.manifest._checks import (
    DEFAULT_VERSION,
    Extra,
    Loc,
    closest,
    field_of,
    is_dns_label,
    is_version,
)
from shoal.manifest._policy import BackoffPolicy, OutlierPolicy, parse_duration

__all__ = [
    "POLICY_KEYS",
    "Entries",
    "entry_extras",
    "order_extras",
    "read_entries",
    "service_problem",
    "unknown_name",
]

POLICY_KEYS = ("timeout", "retries", "outlier", "limits", "routes", "traffic")
"""The keys of a service's traffic rules: only its own entry may carry them."""

_GATEWAY = "gateway"


@dataclass(frozen=True)
class Entries:
    """The raw ``services`` mapping, as far as cross-checks need it."""

    specs: dict[str, object]
    """Every entry's raw spec, by entry name, in file order."""
    mesh: list[str]
    """The entries that are services of their own (no ``service:``)."""
    owner: dict[str, str] = field(default_factory=dict)
    """The mesh service each entry registers as, where that is known."""
    versions: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per mesh service, the versions run and the first entry running each."""


def _written(spec: object, key: str) -> bool:
    """Whether ``key`` was given in ``spec`` (not left to its default)."""
    if isinstance(spec, Mapping):
        return key in spec
    if isinstance(spec, BaseModel):
        return key in spec.model_fields_set
    return False


def _version_of(spec: object) -> str | None:
    if not _written(spec, "version"):
        return DEFAULT_VERSION if isinstance(spec, Mapping | BaseModel) else None
    version = field_of(spec, "version")
    return version if is_version(version) else None


def read_entries(services: Mapping[object, object]) -> Entries:
    """Which entry registers as which service, and the versions each service runs."""
    specs = {name: spec for name, spec in services.items() if isinstance(name, str)}
    mesh = [name for name, spec in specs.items() if field_of(spec, "service") is None]
    entries = Entries(specs, mesh)
    for name, spec in specs.items():
        target = field_of(spec, "service")
        if target is None:
            entries.owner[name] = name
        elif isinstance(target, str) and target in mesh:
            entries.owner[name] = target
        else:
            continue
        version = _version_of(spec)
        if version is not None:
            entries.versions.setdefault(entries.owner[name], {}).setdefault(version, name)
    return entries


def unknown_name(what: str, name: str, known: Sequence[str]) -> str:
    """``unknown service 'x'`` with the closest known name, or the list of them."""
    match = closest(name, known)
    if match is not None:
        return f"unknown {what} {name!r} (did you mean {match!r}?)"
    if known:
        return f"unknown {what} {name!r} ({what}s: {', '.join(sorted(known))})"
    return f"unknown {what} {name!r} (no {what}s are defined)"


def service_problem(name: str, entries: Entries) -> str | None:
    """Why ``name`` does not name a mesh service, or None when it does."""
    if name in entries.mesh:
        return None
    owner = entries.owner.get(name)
    if owner is not None:
        return (
            f"{name!r} is a version of service {owner!r}, not a service of its own "
            f"(did you mean {owner!r}?)"
        )
    if name in entries.specs:
        return f"{name!r} is a version entry, not a service of its own"
    return unknown_name("service", name, entries.mesh)


def _target_extras(entries: Entries) -> list[Extra]:
    """``service:`` names another entry, one that is a service of its own."""
    extras: list[Extra] = []
    for name, spec in entries.specs.items():
        target = field_of(spec, "service")
        if not is_dns_label(target):
            continue
        if target == name:
            message = (
                "an entry cannot be a version of itself (leave out 'service': "
                "an entry is its own service unless it names another)"
            )
        else:
            message = service_problem(target, entries) or ""
        if message:
            extras.append((("services", name, "service"), message, False))
    return extras


def _version_extras(entries: Entries) -> list[Extra]:
    """Each (service, version) is run by one entry; the later ones are told which."""
    extras: list[Extra] = []
    for name, service in entries.owner.items():
        spec = entries.specs[name]
        version = _version_of(spec)
        if version is None:
            continue
        first = entries.versions[service][version]
        if first != name:
            default = "" if _written(spec, "version") else " (the default)"
            message = (
                f"version {version!r}{default} of service {service!r} is already run by "
                f"entry {first!r} (give this entry another version)"
            )
            extras.append((("services", name, "version"), message, True))
    return extras


def _carried_extras(entries: Entries) -> list[Extra]:
    """A version entry carries no traffic rules: they are the service's, in its own entry."""
    extras: list[Extra] = []
    for name, spec in entries.specs.items():
        target = field_of(spec, "service")
        if not isinstance(target, str) or target == name:
            continue
        service = entries.owner.get(name) or entries.owner.get(target)
        service = service or closest(target, entries.mesh)
        if service is None:
            continue
        message = f"traffic rules for service {service!r} go under its own entry {service!r}"
        extras += [
            (("services", name, key), message, True) for key in POLICY_KEYS if _written(spec, key)
        ]
    return extras


def _unknown_version(service: str, version: str, known: Sequence[str]) -> str:
    listing = f"versions: {', '.join(known)}" if known else "no valid versions"
    match = closest(version, known)
    hint = f"did you mean {match!r}? " if match is not None else ""
    return f"unknown version {version!r} of service {service!r} ({hint}{listing})"


def _split_extras(service: str, split: object, where: Loc, known: Sequence[str]) -> list[Extra]:
    if not isinstance(split, Mapping):
        return []
    extras: list[Extra] = [
        ((*where, version), _unknown_version(service, version, known), True)
        for version in split
        if is_version(version) and version not in known
    ]
    weights = list(split.values())
    valid = all(type(w) is int and 0 <= w <= 100 for w in weights)
    if weights and valid and sum(weights) != 100:
        message = f"weights must add up to 100, got {sum(weights)}"
        extras.append((where, message, True))
    return extras


def _traffic_extras(service: str, entries: Entries) -> list[Extra]:
    """Versions named in ``traffic`` are run by some entry; split weights add up to 100."""
    traffic = field_of(entries.specs[service], "traffic")
    where: Loc = ("services", service, "traffic")
    known = list(entries.versions.get(service, {}))
    extras = _split_extras(service, field_of(traffic, "split"), (*where, "split"), known)
    mirror = field_of(field_of(traffic, "mirror"), "version")
    named: list[tuple[Loc, object]] = [((*where, "mirror", "version"), mirror)]
    matches = field_of(traffic, "match")
    if isinstance(matches, list | tuple):
        for index, match in enumerate(matches):
            named.append(((*where, "match", index, "version"), field_of(match, "version")))
    for loc, version in named:
        if is_version(version) and version not in known:
            extras.append((loc, _unknown_version(service, version, known), False))
    return extras


def _caller_extras(service: str, entries: Entries) -> list[Extra]:
    """Rate limits name calling services, ``gateway`` or ``*``."""
    rate = field_of(field_of(entries.specs[service], "limits"), "rate")
    if not isinstance(rate, Mapping):
        return []
    callers = [*entries.mesh, _GATEWAY]
    extras: list[Extra] = []
    for caller in rate:
        if not is_dns_label(caller) or caller in callers:
            continue  # '*', a known caller, or not a name at all (reported already)
        if caller in entries.specs:  # a version entry: callers are services
            message = service_problem(caller, entries) or ""
        elif (match := closest(caller, callers)) is not None:
            message = f"unknown caller {caller!r} (did you mean {match!r}?)"
        else:
            listing = ", ".join(sorted(callers))
            message = f"unknown caller {caller!r} (callers: {listing}, or '*' for any other)"
        extras.append((("services", service, "limits", "rate", caller), message, True))
    return extras


def entry_extras(entries: Entries) -> list[Extra]:
    """Every cross-check between entries, versions and traffic rules."""
    extras = [*_target_extras(entries), *_version_extras(entries), *_carried_extras(entries)]
    for service in entries.mesh:
        extras += _traffic_extras(service, entries)
        extras += _caller_extras(service, entries)
    return extras


def _show(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def _seconds(raw: object, key: str, default: float) -> float | None:
    """The duration written at ``key`` (its default if not written), None if invalid."""
    if not _written(raw, key):
        return default
    try:
        value = parse_duration(field_of(raw, key))
    except PydanticCustomError:
        return None
    return value if isinstance(value, float) and 0 < value <= 86400 else None


def _at_most(raw: object, where: Loc, low: str, high: str, defaults: BaseModel) -> list[Extra]:
    """``low`` is at most ``high``: reported at ``low`` if written, else at ``high``."""
    least = _seconds(raw, low, getattr(defaults, low))
    most = _seconds(raw, high, getattr(defaults, high))
    if least is None or most is None or least <= most:
        return []
    if _written(raw, low):
        default = "" if _written(raw, high) else ", the default"
        message = f"must be at most {high} ({_show(most)}{default}), got {_show(least)}"
        return [((*where, low), message, False)]
    message = f"must be at least {low} ({_show(least)}, the default), got {_show(most)}"
    return [((*where, high), message, False)]


def order_extras(spec: Mapping[object, object]) -> list[Extra]:
    """Within one entry: ``backoff.base`` <= ``backoff.cap``, ``ejection`` <= ``max_ejection``."""
    backoff = field_of(field_of(spec, "retries"), "backoff")
    outlier = field_of(spec, "outlier")
    return [
        *_at_most(backoff, ("retries", "backoff"), "base", "cap", BackoffPolicy()),
        *_at_most(outlier, ("outlier",), "ejection", "max_ejection", OutlierPolicy()),
    ]
