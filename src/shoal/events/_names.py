"""The names events live under: topics, subjects, streams, consumers, marker keys.

Pure functions, no I/O. A topic is dot-separated tokens of ``[A-Za-z0-9_-]``
(1 to 128 characters, no wildcards); app and service names are DNS labels.

* ``shoal.<app>.events.<publisher>.<topic>``: where an event is published; NATS
  permissions let a service's user publish only under its own name, so the
  subject proves the event's ``ce-source``.
* ``shoal.<app>.dlq.<subscriber>.<topic>``: a dead letter of one subscriber.
* ``shoal.<app>.replay.<subscriber>.<topic>``: a dead letter sent back to its
  subscriber alone (``shoal events replay``; only the admin user may publish it).
* streams ``shoal-events-<app>`` (events and replays) and ``shoal-dlq-<app>``.
* one durable consumer per (subscribing service, topic), named by
  :func:`consumer_name`, an injective mapping onto NATS-legal names.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from shoal.exceptions import EventsError

__all__ = [
    "MAX_TOPIC_LENGTH",
    "check_topic",
    "consumer_name",
    "dlq_stream",
    "dlq_subject",
    "dlq_subjects",
    "event_subject",
    "events_stream",
    "events_subjects",
    "replay_subject",
    "replay_subjects",
    "seen_key",
    "subscriber_filter",
    "topic_of_subject",
]

MAX_TOPIC_LENGTH: Final = 128
_TOPIC: Final = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_MAX_READABLE_CONSUMER: Final = 200
"""Longer consumer names (a long topic) become a digest: NATS keeps names on disk."""


def check_topic(topic: object) -> str:
    """``topic`` if it is a valid topic name, else EventsError stating the rule."""
    if not isinstance(topic, str):
        raise EventsError(f"event topic {topic!r} is a {type(topic).__name__}; topics are str")
    if not 1 <= len(topic) <= MAX_TOPIC_LENGTH or _TOPIC.fullmatch(topic) is None:
        shown = topic if len(topic) <= 60 else topic[:60] + "..."
        raise EventsError(
            f"event topic {shown!r} is not valid: a topic is 1 to {MAX_TOPIC_LENGTH} characters "
            "of dot-separated tokens, each of letters, digits, '_' and '-' (e.g. "
            "'orders.created'); no wildcards ('*', '>'), spaces or empty tokens"
        )
    return topic


def events_stream(app: str) -> str:
    return f"shoal-events-{app}"


def dlq_stream(app: str) -> str:
    return f"shoal-dlq-{app}"


def events_subjects(app: str) -> str:
    return f"shoal.{app}.events.>"


def replay_subjects(app: str) -> str:
    return f"shoal.{app}.replay.>"


def replay_subject(app: str, subscriber: str, topic: str) -> str:
    return f"shoal.{app}.replay.{subscriber}.{topic}"


def dlq_subjects(app: str) -> str:
    return f"shoal.{app}.dlq.>"


def event_subject(app: str, publisher: str, topic: str) -> str:
    return f"shoal.{app}.events.{publisher}.{topic}"


def subscriber_filter(app: str, topic: str) -> str:
    """The consumer's filter: ``topic`` from any publishing service."""
    return f"shoal.{app}.events.*.{topic}"


def dlq_subject(app: str, subscriber: str, topic: str) -> str:
    return f"shoal.{app}.dlq.{subscriber}.{topic}"


def topic_of_subject(subject: str) -> tuple[str, str]:
    """(service, topic) of an event, replay or dead-letter subject."""
    parts = subject.split(".", 4)
    if len(parts) != 5 or parts[0] != "shoal":
        raise EventsError(f"{subject!r} is not a shoal event subject")
    return parts[3], parts[4]


def consumer_name(service: str, topic: str) -> str:
    """The durable consumer of ``service`` on ``topic``: ``<service>_<escaped topic>``.

    Injective: a service (a DNS label) holds no ``_``, so the first ``_`` ends it; in
    the topic ``_`` becomes ``_u`` and ``.`` becomes ``_d`` (a prefix-free code). A
    name past 200 characters is ``<service>__h<sha256 of the topic>`` instead (an
    escaped topic never starts with ``_h``).
    """
    escaped = topic.replace("_", "_u").replace(".", "_d")
    name = f"{service}_{escaped}"
    if len(name) <= _MAX_READABLE_CONSUMER:
        return name
    return f"{service}__h{hashlib.sha256(topic.encode()).hexdigest()}"


def seen_key(consumer: str, event_id: str) -> str:
    """The state key marking ``event_id`` as handled by ``consumer`` (idempotent handlers)."""
    return f"_shoal/events/seen/{consumer}/{event_id}"
