"""A caller's state for one destination service: its policy, bulkhead, budget, outliers.

Built from the service's :class:`ServicePolicy` and rebuilt part by part when the
policy changes live, so a new retry budget does not forget which instances are
ejected.
"""

from __future__ import annotations

import functools
import time

from shoal.manifest._policy import ServicePolicy
from shoal.mesh._budget import RetryBudget
from shoal.mesh._bulkhead import Bulkhead
from shoal.mesh._metrics import count_ejection
from shoal.mesh._outlier import OutlierDetector
from shoal.types import Clock

__all__ = ["Destination"]


class Destination:
    """What this process keeps about calling one service."""

    __slots__ = ("_clock", "budget", "bulkhead", "caller", "outlier", "policy", "service")

    def __init__(
        self,
        service: str,
        policy: ServicePolicy,
        *,
        clock: Clock = time.monotonic,
        caller: str = "",
    ) -> None:
        self.service = service
        self.caller = caller
        self._clock = clock
        self.policy = policy
        self.bulkhead = Bulkhead(policy.limits.concurrency)
        self.budget = self._budget(policy)
        self.outlier = self._outlier(policy)

    def update(self, policy: ServicePolicy) -> None:
        """Apply a changed policy, keeping the state of parts whose settings did not change."""
        old, self.policy = self.policy, policy
        if policy.limits.concurrency != old.limits.concurrency:
            self.bulkhead.set_limit(policy.limits.concurrency)
        if policy.retries.budget != old.retries.budget:
            self.budget = self._budget(policy)
        if policy.outlier != old.outlier:
            self.outlier = self._outlier(policy)

    def _budget(self, policy: ServicePolicy) -> RetryBudget:
        budget = policy.retries.budget
        return RetryBudget(
            ratio=budget.percent / 100,
            min_per_second=budget.min_per_second,
            window=budget.window,
            clock=self._clock,
        )

    def _outlier(self, policy: ServicePolicy) -> OutlierDetector:
        outlier = policy.outlier
        return OutlierDetector(
            consecutive_failures=outlier.failures,
            base_ejection=outlier.ejection,
            max_ejection=outlier.max_ejection,
            max_ejected_fraction=outlier.max_ejected_percent / 100,
            clock=self._clock,
            on_eject=functools.partial(count_ejection, self.caller, self.service),
        )
