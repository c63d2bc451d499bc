"""Authorization decisions: may this caller make this request to this service?

For one service's :class:`~shoal.manifest._authz.AuthzPolicy`, in order:

1. a caller with no mesh identity is denied (``denied:unauthenticated``), whatever
   the rules say, ``from: ["*"]`` and ``default_policy: allow-mesh`` included;
2. a matching ``deny`` rule denies (``denied:<rule>``): deny beats allow;
3. once any ``allow`` rule targets the service, a request must match one
   (``denied:no-allow-match`` otherwise);
4. a service with no ``allow`` rule follows the app's default: ``allow-mesh`` lets
   any authenticated caller through, ``deny`` refuses (``denied:default-policy``).

A rule matches when every requirement it gives does (the calling service is in
``from``, or ``from`` is ``"*"`` or left out; the method is in ``methods``; the path
is one of ``paths`` or under it, on segment boundaries); values in one list are
ORed. This is Istio's AuthorizationPolicy order (DENY, then ALLOW, then the
default). The path must already be normalised (``shoal.mesh._paths``), the same
path the app is then given. Policies are compiled once per policy object, so a
decision is a few set lookups. No I/O here.
"""

from __future__ import annotations

import dataclasses

from shoal.manifest._authz import AuthzPolicy, AuthzRule

__all__ = ["Decision", "authorize"]


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """Whether a request may proceed, why (``denied:<rule>`` ...), and the rule that decided."""

    allowed: bool
    reason: str
    rule: str | None = None


_UNAUTHENTICATED = Decision(False, "denied:unauthenticated")
_NO_ALLOW_MATCH = Decision(False, "denied:no-allow-match")
_DEFAULT_DENY = Decision(False, "denied:default-policy")
_DEFAULT_ALLOW = Decision(True, "allowed:default-policy")


@dataclasses.dataclass(frozen=True, slots=True)
class _Rule:
    decision: Decision
    callers: frozenset[str] | None  # None: any authenticated caller
    methods: frozenset[str] | None
    prefixes: tuple[tuple[str, str], ...] | None  # (base, base + "/") per path prefix

    def matches(self, caller: str, method: str, path: str) -> bool:
        if self.callers is not None and caller not in self.callers:
            return False
        if self.methods is not None and method not in self.methods:
            return False
        if self.prefixes is None:
            return True
        return any(path == base or path.startswith(under) for base, under in self.prefixes)


@dataclasses.dataclass(frozen=True, slots=True)
class _Compiled:
    policy: AuthzPolicy  # held so its id() is not reused while cached
    denies: tuple[_Rule, ...]
    allows: tuple[_Rule, ...]
    default: Decision


def _compile_rule(rule: AuthzRule, index: int) -> _Rule:
    name = rule.name if rule.name is not None else f"rules[{index}]"
    allowed = rule.action == "allow"
    decision = Decision(allowed, f"{'allowed' if allowed else 'denied'}:{name}", name)
    callers = None if rule.from_ is None or "*" in rule.from_ else frozenset(rule.from_)
    methods = None if rule.methods is None else frozenset(rule.methods)
    prefixes = None
    if rule.paths is not None:
        bases = [path.rstrip("/") for path in rule.paths]
        prefixes = tuple((base, base + "/") for base in bases)
    return _Rule(decision, callers, methods, prefixes)


def _compile(policy: AuthzPolicy) -> _Compiled:
    rules = [_compile_rule(rule, index) for index, rule in enumerate(policy.rules)]
    return _Compiled(
        policy,
        denies=tuple(rule for rule in rules if not rule.decision.allowed),
        allows=tuple(rule for rule in rules if rule.decision.allowed),
        default=_DEFAULT_ALLOW if policy.default == "allow-mesh" else _DEFAULT_DENY,
    )


_CACHE_SIZE = 256
_compiled: dict[int, _Compiled] = {}


def _compiled_for(policy: AuthzPolicy) -> _Compiled:
    compiled = _compiled.get(id(policy))
    if compiled is None or compiled.policy is not policy:
        if len(_compiled) >= _CACHE_SIZE:
            _compiled.clear()  # policies change rarely: the live ones are recompiled at once
        compiled = _compiled[id(policy)] = _compile(policy)
    return compiled


def authorize(policy: AuthzPolicy, caller: str | None, method: str, path: str) -> Decision:
    """The decision on ``method path`` from ``caller`` (None: unauthenticated).

    ``path`` is the normalised path (``normalize_raw_path``), the one the app is given.
    """
    if caller is None:
        return _UNAUTHENTICATED
    compiled = _compiled_for(policy)
    for rule in compiled.denies:
        if rule.matches(caller, method, path):
            return rule.decision
    if compiled.allows:
        for rule in compiled.allows:
            if rule.matches(caller, method, path):
                return rule.decision
        return _NO_ALLOW_MATCH
    return compiled.default
