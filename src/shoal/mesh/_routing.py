"""Per-call traffic decisions: which version answers, injected faults, mirroring.

Pure functions of the service's :class:`TrafficPolicy`, the request headers and
a random source, so their percentages are tested over many draws without I/O.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from shoal.manifest._policy import FaultPolicy, TrafficPolicy

__all__ = ["choose_version", "decide_faults", "wants_mirror"]


def choose_version(
    traffic: TrafficPolicy, headers: Mapping[str, str], rng: random.Random
) -> tuple[str | None, str]:
    """The version to send to (None: any) and why: a header match wins over the split."""
    for rule in traffic.match:
        if rule.matches(headers):
            shown = ", ".join(f"{k}: {v}" for k, v in rule.headers.items())
            return rule.version, f"header match ({shown})"
    split = traffic.split
    if not split:
        return None, ""
    total = sum(split.values())
    if total <= 0:
        return None, ""
    draw = rng.random() * total
    for version, weight in split.items():
        if draw < weight:
            return version, f"split {weight}/{total}"
        draw -= weight
    version = next(v for v, w in reversed(split.items()) if w > 0)
    return version, f"split {split[version]}/{total}"


def decide_faults(faults: FaultPolicy | None, rng: random.Random) -> tuple[float, int | None]:
    """(seconds to delay, status to abort with or None), drawn independently."""
    if faults is None:
        return 0.0, None
    delay = 0.0
    if faults.delay is not None and rng.random() * 100 < faults.delay.percent:
        delay = faults.delay.duration
    abort = None
    if faults.abort is not None and rng.random() * 100 < faults.abort.percent:
        abort = faults.abort.status
    return delay, abort


def wants_mirror(traffic: TrafficPolicy, rng: random.Random) -> str | None:
    """The version to mirror this request to, if it is among the mirrored share."""
    mirror = traffic.mirror
    if mirror is None or not rng.random() * 100 < mirror.percent:
        return None
    return mirror.version
