"""What ``shoal events`` shows and what ``shoal events replay`` does (admin connection).

Replay sends a dead letter back to the one subscriber it failed in, not to every
subscriber of its topic: it is republished on ``shoal.<app>.replay.<service>.<topic>``,
which only that service's consumer of the topic takes (besides the topic's events),
with the event's own ``ce-id`` (an idempotent handler recognises it; it never
committed) and a fresh ``Nats-Msg-Id`` (so the duplicate window does not drop
it). Once JetStream has acknowledged the copy, the dead letter is deleted.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import api

from shoal.backbone._connection import Backbone
from shoal.events._delivery import (
    DELIVERIES_HEADER,
    ERROR_HEADER,
    FAILED_AT_HEADER,
    SERVICE_HEADER,
)
from shoal.events._names import dlq_stream, events_stream, replay_subject, topic_of_subject
from shoal.exceptions import EventsError

__all__ = ["DeadLetterRecord", "dead_letters", "events_overview", "replay_dead_letters"]

log = logging.getLogger("shoal.events")

DeadLetterRecord = dict[str, Any]
_SCAN_LIMIT = 100_000
_ERRORS = (nats.errors.Error, TimeoutError)


async def events_overview(backbone: Backbone, app: str, *, recent: int = 20) -> dict[str, Any]:
    """Streams (messages, bytes), consumers per service and topic, dead letters."""
    try:
        streams = [await _stream(backbone, name) for name in (events_stream(app), dlq_stream(app))]
        consumers = []
        if streams[0]["exists"]:
            infos = await backbone.js.consumers_info(events_stream(app))
            consumers = sorted(
                (_consumer(info) for info in infos), key=lambda c: (c["service"], c["topic"])
            )
        letters = await _newest_dead_letters(backbone, streams[1], recent)
    except _ERRORS as exc:
        raise EventsError(f"cannot read the event streams of {app}: {exc!r}") from exc
    return {
        "streams": streams,
        "consumers": consumers,
        "dead_letters": {"count": streams[1]["messages"], "recent": letters},
    }


async def _newest_dead_letters(
    backbone: Backbone, stream: dict[str, Any], limit: int
) -> list[DeadLetterRecord]:
    """Up to ``limit`` dead letters, newest first, read back from the stream's end: the
    dashboard asks every 2 s, so this costs ``limit`` reads however many there are
    (every message of the stream is a dead letter; a replayed one leaves a gap)."""
    out: list[DeadLetterRecord] = []
    if not stream["exists"] or not stream["messages"]:
        return out
    seq, first = stream["last_seq"], stream["first_seq"]
    for _ in range(limit * 4):  # gaps of replayed letters: a bound, not a scan
        if seq < first or len(out) >= limit:
            break
        with contextlib.suppress(nats.js.errors.NotFoundError):  # replayed: a gap
            out.append(_record(await backbone.js.get_msg(stream["name"], seq)))
        seq -= 1
    return out


async def _stream(backbone: Backbone, name: str) -> dict[str, Any]:
    try:
        info = await backbone.js.stream_info(name)
    except nats.js.errors.NotFoundError:
        return {"name": name, "exists": False, "messages": 0, "bytes": 0, "consumers": 0}
    state = info.state
    return {
        "name": name,
        "exists": True,
        "messages": state.messages,
        "bytes": state.bytes,
        "consumers": state.consumer_count,
        "first_seq": state.first_seq,
        "last_seq": state.last_seq,
    }


def _consumer(info: api.ConsumerInfo) -> dict[str, Any]:
    config = info.config
    filters = config.filter_subjects or ([config.filter_subject] if config.filter_subject else [])
    topic = filters[0].split(".", 4)[4] if filters and filters[0].count(".") >= 4 else ""
    return {
        "name": info.name,
        "service": info.name.split("_", 1)[0],
        "topic": topic,
        "pending": info.num_pending or 0,
        "ack_pending": info.num_ack_pending or 0,
        "redelivered": info.num_redelivered or 0,
        "waiting": info.num_waiting or 0,
        "delivered": info.delivered.stream_seq if info.delivered else 0,
    }


async def dead_letters(
    backbone: Backbone, app: str, *, service: str | None = None, topic: str | None = None
) -> list[DeadLetterRecord]:
    """Every dead letter (oldest first), optionally of one service and/or topic."""
    stream = dlq_stream(app)
    subject = f"shoal.{app}.dlq.{service or '*'}.{topic or '>'}"
    out: list[DeadLetterRecord] = []
    seq = 1
    while len(out) < _SCAN_LIMIT:
        try:
            msg = await backbone.js.get_msg(stream, seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            break
        out.append(_record(msg))
        seq = (msg.seq or seq) + 1
    return out


def _record(msg: api.RawStreamMsg) -> DeadLetterRecord:
    headers = dict(msg.headers or {})
    subject = msg.subject or ""
    service, topic = topic_of_subject(subject)
    return {
        "seq": msg.seq,
        "id": headers.get("ce-id", ""),
        "service": headers.get(SERVICE_HEADER, service),
        "topic": headers.get("ce-type", topic),
        "source": headers.get("ce-source", ""),
        "error": headers.get(ERROR_HEADER, ""),
        "deliveries": int(headers.get(DELIVERIES_HEADER, "0") or 0),
        "failed_at": headers.get(FAILED_AT_HEADER, ""),
        "subject": subject,
        "headers": headers,
        "data": (msg.data or b"").decode("utf-8", "replace"),
    }


async def replay_dead_letters(
    backbone: Backbone,
    app: str,
    *,
    service: str | None = None,
    topic: str | None = None,
    ids: list[str] | None = None,
    replay_all: bool = False,
) -> list[DeadLetterRecord]:
    """Send the chosen dead letters back to their subscriber; the replayed ones."""
    if not replay_all and not ids:
        raise EventsError("say which dead letters to replay: event ids, or --all")
    wanted = set(ids or [])
    try:
        letters = await dead_letters(backbone, app, service=service, topic=topic)
    except _ERRORS as exc:
        raise EventsError(f"cannot read the dead letters of {app}: {exc!r}") from exc
    chosen = [d for d in letters if replay_all or d["id"] in wanted]
    missing = wanted - {d["id"] for d in chosen}
    if missing:
        raise EventsError(
            f"no dead letter with id {', '.join(sorted(missing))}"
            + (f" (service {service})" if service else "")
            + (f" (topic {topic})" if topic else "")
            + "; `shoal events` lists them"
        )
    done: list[DeadLetterRecord] = []
    for letter in chosen:
        headers = {  # the event's own headers, not the dead letter's
            k: v
            for k, v in letter["headers"].items()
            if not k.lower().startswith(("shoal-", "nats-"))
        }
        headers["Nats-Msg-Id"] = f"{letter['id']}:replay:{letter['seq']}"
        subject = replay_subject(app, letter["service"], letter["topic"])
        body = letter["data"].encode()
        try:
            await backbone.js.publish(
                subject, body, timeout=5.0, stream=events_stream(app), headers=headers
            )
            await backbone.js.delete_msg(dlq_stream(app), letter["seq"])
        except _ERRORS as exc:
            raise EventsError(
                f"replaying dead letter {letter['id']} of {letter['service']} failed after "
                f"{len(done)} replayed: {exc!r}"
            ) from exc
        log.info("replayed dead letter %s to %s (%s)", letter["id"], letter["service"], subject)
        done.append({k: v for k, v in letter.items() if k != "headers"})
    return done
