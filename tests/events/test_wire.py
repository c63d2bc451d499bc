"""CloudEvents binary mode: encoding, its checks, and decoding back."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from shoal.events._event import decode_event
from shoal.events._wire import EncodedEvent, encode_event
from shoal.exceptions import EventsError

WHEN = dt.datetime(2026, 12, 6, 2, 40, 41, 123456, tzinfo=dt.UTC)


def test_an_event_carries_the_cloudevents_attributes_in_headers() -> None:
    event = encode_event(
        "orders",
        "order.created",
        {"id": 7, "total": 12.5, "name": "café"},
        key="7",
        headers={"x-tenant": "acme"},
        event_id="e1",
        time=WHEN,
        traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
    )
    assert event.headers == {
        "ce-specversion": "1.0",
        "ce-id": "e1",
        "ce-source": "orders",
        "ce-type": "order.created",
        "ce-time": "2026-12-06T02:40:41.123456Z",
        "content-type": "application/json",
        "ce-partitionkey": "7",
        "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
        "x-tenant": "acme",
    }
    assert json.loads(event.body) == {"id": 7, "total": 12.5, "name": "café"}
    decoded = decode_event(event.headers, event.body.encode(), 3)
    assert decoded.id == "e1"
    assert decoded.source == "orders"
    assert decoded.type == "order.created"
    assert decoded.time == WHEN
    assert decoded.key == "7"
    assert decoded.delivery == 3
    assert decoded.headers == {"x-tenant": "acme"}
    assert decoded.data == {"id": 7, "total": 12.5, "name": "café"}
    assert decoded.trace_id == "1" * 32
    assert decoded.span_id == "2" * 16


def test_a_record_survives_json_for_the_outbox() -> None:
    event = encode_event("orders", "order.created", [1, None, "x"], event_id="e2", time=WHEN)
    again = EncodedEvent.from_json(json.loads(json.dumps(event.to_json())))
    assert again == event
    with pytest.raises(EventsError, match="ce-id"):
        EncodedEvent.from_json({**event.to_json(), "id": "other"})


def test_ids_are_fresh_by_default() -> None:
    assert encode_event("s", "t", 1).id != encode_event("s", "t", 1).id


def test_a_non_serialisable_payload_names_the_topic_and_the_type() -> None:
    with pytest.raises(EventsError, match=r"topic 'order.created'.*datetime"):
        encode_event("orders", "order.created", {"at": WHEN})
    with pytest.raises(EventsError, match="not JSON-serialisable"):
        encode_event("orders", "t", float("nan"))


@pytest.mark.parametrize(
    "name", ["ce-id", "CE-Source", "content-type", "traceparent", "Nats-Msg-Id", "nats-expected"]
)
def test_reserved_headers_are_refused(name: str) -> None:
    with pytest.raises(EventsError, match="is reserved"):
        encode_event("orders", "t", {}, headers={name: "x"})


@pytest.mark.parametrize(
    ("headers", "match"),
    [({"bad name": "x"}, "not a valid header name"), ({"x": "a\r\nb"}, "one line"),
     ({"x": 5}, "use a str")],
)  # fmt: skip
def test_bad_headers_are_refused(headers: dict[str, object], match: str) -> None:
    with pytest.raises(EventsError, match=match):
        encode_event("orders", "t", {}, headers=headers)  # type: ignore[arg-type]


def test_a_message_without_cloudevents_headers_is_not_an_event() -> None:
    with pytest.raises(EventsError, match="ce-id"):
        decode_event({}, b"{}", 1)
    with pytest.raises(EventsError, match="not JSON"):
        decode_event(encode_event("s", "t", 1).headers, b"{", 1)
