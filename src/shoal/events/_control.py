"""The control API's events endpoints (the supervisor's admin connection answers them).

GET  /v1/events          streams, consumers, dead letters (the 20 most recent)
POST /v1/events/replay   {"service"?, "topic"?, "ids"?: [...], "all"?: bool}: the replayed
"""

from __future__ import annotations

from typing import Any

from shoal.backbone._connection import Backbone
from shoal.events._admin import events_overview, replay_dead_letters
from shoal.events._names import check_topic

__all__ = ["events_route"]


async def events_route(
    backbone: Backbone, app: str, method: str, path: str, data: dict[str, Any]
) -> tuple[int, Any]:
    if (method, path) == ("GET", "/v1/events"):
        return 200, await events_overview(backbone, app, recent=int(data.get("recent", 20)))
    if (method, path) == ("POST", "/v1/events/replay"):
        topic = data.get("topic")
        ids = data.get("ids") or []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("ids is a list of event ids")
        replayed = await replay_dead_letters(
            backbone,
            app,
            service=str(data["service"]) if data.get("service") else None,
            topic=check_topic(topic) if topic else None,
            ids=ids,
            replay_all=bool(data.get("all")),
        )
        return 200, {"replayed": replayed}
    return 404, {"error": f"no such endpoint: {method} {path}"}
