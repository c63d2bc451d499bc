"""NATS permissions of a service's user: only its own registry entries, only what it needs.

The embedded NATS gives the supervisor and the operator one admin user, and every
service a user of its own whose permissions are an allow-list: it may

* put and delete registry entries under its own name (``$KV.shoal-registry-<app>.<service>.>``),
  so an instance of A can never rewrite B's entry to take B's traffic;
* read and watch the registry, the traffic policies and the trust bundle (stream info,
  consumers, flow control), but write none of them;
* ask the issuer for its first certificate and its renewals, not for any identity
  (the ``issue`` subject is the admin's);
* publish its telemetry (``shoal.<app>.telemetry.>``);
* publish events under its own name only (``shoal.<app>.events.<service>.>``, so an
  event's subject proves its ``ce-source``) and its own dead letters
  (``shoal.<app>.dlq.<service>.>``); read the two event streams' info; create, pull
  from and ack consumers of the events stream (NATS cannot match a consumer-name
  prefix, so not only its own: see ``shoal.events``); never create, change or
  delete a stream, nor publish a replay (the admin's ``shoal events replay``);
* read and watch its own config and secrets bucket, and no other service's (see
  ``shoal.config._layout.read_subjects``);
* receive replies on its own inbox, ``_INBOX_<service>.>``, and nobody else's.

Everything else is denied by NATS itself; a violation is an error to the client.
"""

from __future__ import annotations

import json

from shoal.backbone._connection import inbox_prefix
from shoal.backbone._policies import policy_bucket_name
from shoal.backbone._registry import bucket_name as registry_bucket_name
from shoal.backbone._trust import ca_subject, trust_bucket_name

__all__ = ["service_permissions", "users_block"]


def service_permissions(app: str, service: str) -> dict[str, dict[str, list[str]]]:
    """The ``permissions`` of ``service``'s NATS user, as nats-server's config takes them."""
    registry = registry_bucket_name(app)
    publish = [
        f"$KV.{registry}.{service}.>",
        "$JS.API.INFO",
        "$JS.FC.>",
        ca_subject(app, "bootstrap"),
        ca_subject(app, "renew"),
        f"shoal.{app}.telemetry.>",
    ]
    for bucket in (registry, policy_bucket_name(app), trust_bucket_name(app)):
        stream = f"KV_{bucket}"
        publish += [
            f"$JS.API.STREAM.INFO.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}",
            f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.INFO.{stream}.>",
            f"$JS.API.CONSUMER.DELETE.{stream}.>",
            f"$JS.API.DIRECT.GET.{stream}.>",
            f"$JS.API.STREAM.MSG.GET.{stream}",
        ]
    # The building blocks sit above the backbone: their subjects are imported here, late.
    from shoal.config._layout import read_subjects as config_read_subjects
    from shoal.events._permissions import event_permissions

    publish += event_permissions(app, service)
    publish += config_read_subjects(app, service)
    return {"publish": {"allow": publish}, "subscribe": {"allow": [f"{inbox_prefix(service)}.>"]}}


def users_block(app: str, admin: tuple[str, str], services: dict[str, tuple[str, str]]) -> str:
    """nats-server's ``authorization { users: [...] }``: the admin, then one user per service.

    ``services`` maps a service to its (user, password). JSON is valid nats-server config.
    """
    users: list[dict[str, object]] = [{"user": admin[0], "password": admin[1]}]
    for service, (user, password) in sorted(services.items()):
        users.append(
            {
                "user": user,
                "password": password,
                "permissions": service_permissions(app, service),
            }
        )
    return "authorization " + json.dumps({"users": users}, indent=1) + "\n"
