"""Retry or dead-letter: the backoff each delivery gets, and what a dead letter carries."""

from __future__ import annotations

import datetime as dt

import pytest

from shoal.events._delivery import (
    DeadLetter,
    Retry,
    check_policy,
    dead_letter_headers,
    dead_letter_id,
    decide,
    describe_error,
)
from shoal.exceptions import EventsError


def test_each_failed_delivery_waits_its_backoff_and_the_last_repeats() -> None:
    backoff = (1.0, 5.0, 30.0)
    assert [decide(n, 6, backoff) for n in range(1, 7)] == [
        Retry(1.0), Retry(5.0), Retry(30.0), Retry(30.0), Retry(30.0), DeadLetter(),
    ]  # fmt: skip


def test_the_last_allowed_delivery_dead_letters() -> None:
    assert decide(5, 5, (1.0,)) == DeadLetter()
    assert decide(9, 5, (1.0,)) == DeadLetter()  # counted past the limit: still dead
    assert decide(1, 1, (1.0,)) == DeadLetter()
    assert decide(4, 5, (1.0,)) == Retry(1.0)


@pytest.mark.parametrize(
    ("max_deliveries", "backoff"),
    [(0, (1.0,)), (True, (1.0,)), (3, ()), (3, (-1.0,)), (3, ("1",)), (3, (1e9,))],
)
def test_unusable_policies_are_refused(max_deliveries: object, backoff: tuple[object]) -> None:
    with pytest.raises(EventsError):
        check_policy(max_deliveries, backoff)  # type: ignore[arg-type]


def test_errors_are_one_bounded_line() -> None:
    assert describe_error(ValueError("bad\n  value")) == "ValueError: bad value"
    assert describe_error(KeyError()) == "KeyError"
    assert len(describe_error(RuntimeError("x" * 5000))) == 1000


def test_a_dead_letter_keeps_the_event_and_says_why_and_where() -> None:
    original = {"ce-id": "e1", "ce-type": "t", "Nats-Msg-Id": "e1", "x-tenant": "acme"}
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    headers = dead_letter_headers(
        original, error="ValueError: no", deliveries=5, service="billing",
        consumer="billing_t", subject="shoal.a.events.orders.t", sequence=42, when=when,
    )  # fmt: skip
    assert headers == {
        "ce-id": "e1",
        "ce-type": "t",
        "x-tenant": "acme",
        "shoal-error": "ValueError: no",
        "shoal-deliveries": "5",
        "shoal-subscriber": "billing",
        "shoal-consumer": "billing_t",
        "shoal-original-subject": "shoal.a.events.orders.t",
        "shoal-original-sequence": "42",
        "shoal-failed-at": "2026-01-01T00:00:00.000000Z",
    }
    assert dead_letter_id("e1", "billing") == "e1:billing"
