"""Storing a dead letter: the original event, why and where it failed, acked by JetStream."""

from __future__ import annotations

from nats.aio.msg import Msg

from shoal.backbone._connection import Backbone
from shoal.events._delivery import dead_letter_headers, dead_letter_id
from shoal.events._names import dlq_stream, dlq_subject

__all__ = ["DEAD_LETTER_TIMEOUT", "send_dead_letter"]

DEAD_LETTER_TIMEOUT = 5.0


async def send_dead_letter(
    backbone: Backbone,
    app: str,
    service: str,
    consumer: str,
    msg: Msg,
    headers: dict[str, str],
    *,
    delivery: int,
    error: str,
    event_id: str,
    topic: str,
) -> None:
    """Publish the dead letter of ``msg`` on ``shoal.<app>.dlq.<service>.<topic>`` and await
    JetStream's ack (nats errors propagate: the caller redelivers and tries again). Its
    ``Nats-Msg-Id`` is ``<event id>:<service>``: a second try after a crash is a duplicate."""
    out = dead_letter_headers(
        headers,
        error=error,
        deliveries=delivery,
        service=service,
        consumer=consumer,
        subject=msg.subject,
        sequence=msg.metadata.sequence.stream,
    )
    out["Nats-Msg-Id"] = dead_letter_id(event_id, service)
    await backbone.js.publish(
        dlq_subject(app, service, topic),
        msg.data,
        timeout=DEAD_LETTER_TIMEOUT,
        stream=dlq_stream(app),
        headers=out,
    )
