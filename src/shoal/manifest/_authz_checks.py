"""Cross-checks of the authorization rules in ``shoal.yaml`` against its services.

A rule protects a mesh service of the app (``target``) from calling services
(``from``); both must be services of their own, not version entries, and the
gateway may call but is not a target (it takes outside traffic, which carries no
mesh identity). Rule names are unique, defaults (``policies[<index>]``)
included. Like ``_traffic_checks.py`` these read the raw input next to field
validation; a value that fails its own field check is skipped here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shoal.manifest._authz import rule_name
from shoal.manifest._checks import Extra, Loc, closest, field_of, is_dns_label
from shoal.manifest._traffic_checks import Entries, read_entries, service_problem

__all__ = ["authz_extras"]

_GATEWAY = "gateway"
_KEY = "policies"


def _target_problem(target: str, entries: Entries) -> str | None:
    if target == _GATEWAY and target not in entries.mesh:
        return (
            "the gateway cannot be a target: it takes outside traffic, which has no mesh "
            "identity to authorize (protect it with JWT; rules protect the services behind it)"
        )
    return service_problem(target, entries)


def _caller_problem(caller: str, entries: Entries, gateway: bool) -> str | None:
    callers = [*entries.mesh, _GATEWAY] if gateway else list(entries.mesh)
    if caller in callers:
        return None
    if caller == _GATEWAY:
        return "unknown caller 'gateway' (the manifest has no gateway)"
    if caller in entries.specs:  # a version entry: callers are services
        return service_problem(caller, entries)
    match = closest(caller, callers)
    if match is not None:
        return f"unknown caller {caller!r} (did you mean {match!r}?)"
    listing = ", ".join(sorted(callers)) or "none"
    return f"unknown caller {caller!r} (callers: {listing}, or '*' for any)"


def _rule_extras(rule: object, where: Loc, entries: Entries, gateway: bool) -> list[Extra]:
    extras: list[Extra] = []
    target = field_of(rule, "target")
    if is_dns_label(target) and (message := _target_problem(target, entries)) is not None:
        extras.append(((*where, "target"), message, False))
    callers = field_of(rule, "from_") if not isinstance(rule, Mapping) else rule.get("from")
    if isinstance(callers, list | tuple):
        for index, caller in enumerate(callers):
            if not is_dns_label(caller):
                continue  # '*', or not a name at all (reported already)
            message = _caller_problem(caller, entries, gateway)
            if message is not None:
                extras.append(((*where, "from", index), message, False))
    return extras


def _name_extras(rules: Sequence[object]) -> list[Extra]:
    """Each rule's name (its default included) is used once."""
    extras: list[Extra] = []
    first: dict[str, int] = {}
    for index, rule in enumerate(rules):
        written = field_of(rule, "name")
        name = written if isinstance(written, str) else rule_name(index)
        if name not in first:
            first[name] = index
            continue
        used = f"is already used by {rule_name(first[name])} (give each rule its own name)"
        if isinstance(written, str):
            extras.append(((_KEY, index, "name"), f"rule name {name!r} {used}", False))
        else:
            extras.append(((_KEY, index), f"this rule's default name {name!r} {used}", False))
    return extras


def authz_extras(data: object) -> list[Extra]:
    """Every cross-check of ``policies:`` against the manifest's services and gateway."""
    rules = field_of(data, _KEY)
    services = field_of(data, "services")
    if not isinstance(rules, list | tuple):
        return []
    extras = _name_extras(rules)
    if not isinstance(services, Mapping) or not services:
        return extras  # no services: reported already
    entries = read_entries(services)
    gateway = field_of(data, _GATEWAY) is not None
    for index, rule in enumerate(rules):
        extras += _rule_extras(rule, (_KEY, index), entries, gateway)
    return extras
