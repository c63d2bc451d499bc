"""What to do with a delivery whose handler failed, and what a dead letter carries. Pure.

shoal, not the server, counts deliveries against ``max_deliveries`` (the
consumer's server-side ``max_deliver`` is unlimited) so that a dead letter is
stored, and acknowledged by JetStream, *before* the original is terminated: a
crash between the two redelivers the original, and the dead letter's
``Nats-Msg-Id`` (``<event id>:<service>``) makes the second copy a duplicate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Final

from shoal.events._wire import format_time
from shoal.exceptions import EventsError

__all__ = [
    "DeadLetter",
    "Retry",
    "dead_letter_headers",
    "dead_letter_id",
    "decide",
    "describe_error",
]

MAX_ERROR_LENGTH: Final = 1000
ERROR_HEADER: Final = "shoal-error"
DELIVERIES_HEADER: Final = "shoal-deliveries"
SERVICE_HEADER: Final = "shoal-subscriber"
CONSUMER_HEADER: Final = "shoal-consumer"
SUBJECT_HEADER: Final = "shoal-original-subject"
SEQUENCE_HEADER: Final = "shoal-original-sequence"
FAILED_AT_HEADER: Final = "shoal-failed-at"


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    """Redeliver after ``delay`` seconds (a ``nak`` with that delay)."""

    delay: float


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """Store a dead letter, then terminate the delivery."""


def check_policy(max_deliveries: int, backoff: Sequence[float]) -> tuple[float, ...]:
    """``backoff`` as a tuple if the pair is usable, else EventsError saying why."""
    if isinstance(max_deliveries, bool) or not isinstance(max_deliveries, int):
        raise EventsError(f"max_deliveries must be an int, got {max_deliveries!r}")
    if max_deliveries < 1:
        raise EventsError(f"max_deliveries must be at least 1, got {max_deliveries}")
    delays = tuple(backoff)
    if not delays or any(
        isinstance(d, bool) or not isinstance(d, int | float) or not 0 <= d <= 86_400
        for d in delays
    ):
        raise EventsError(
            f"backoff must be a non-empty sequence of delays in seconds (0 to 86400), "
            f"got {backoff!r}"
        )
    return tuple(float(d) for d in delays)


def decide(delivery: int, max_deliveries: int, backoff: Sequence[float]) -> Retry | DeadLetter:
    """After the handler failed on delivery number ``delivery`` (1-based): retry after
    ``backoff[min(delivery - 1, len - 1)]`` seconds, or dead-letter it if that was the
    last delivery allowed."""
    if delivery >= max_deliveries:
        return DeadLetter()
    return Retry(backoff[min(max(delivery, 1) - 1, len(backoff) - 1)])


def describe_error(exc: BaseException) -> str:
    """``Type: message`` on one line, at most 1000 characters."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 3] + "..."


def dead_letter_id(event_id: str, service: str) -> str:
    return f"{event_id}:{service}"


def dead_letter_headers(
    original: Mapping[str, str],
    *,
    error: str,
    deliveries: int,
    service: str,
    consumer: str,
    subject: str,
    sequence: int,
    when: dt.datetime | None = None,
) -> dict[str, str]:
    """The original event's headers (minus NATS' own) with why and where it failed."""
    headers = {k: v for k, v in original.items() if not k.lower().startswith("nats-")}
    headers.update(
        {
            ERROR_HEADER: error,
            DELIVERIES_HEADER: str(deliveries),
            SERVICE_HEADER: service,
            CONSUMER_HEADER: consumer,
            SUBJECT_HEADER: subject,
            SEQUENCE_HEADER: str(sequence),
            FAILED_AT_HEADER: format_time(when or dt.datetime.now(dt.UTC)),
        }
    )
    return headers
