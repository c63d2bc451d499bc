"""The endpoint cache alone: expiry, staging of a new snapshot, freezing."""

from __future__ import annotations

import time

from shoal.registry import Delete, EndpointCache, InstanceRecord, Put, Synced
from shoal.testing import ManualClock


def rec(instance: str, ttl: float = 2.0) -> InstanceRecord:
    return InstanceRecord(
        app="a", service="s", instance=instance, host="127.0.0.1", port=9000,
        state="ready", started_at=time.time(), ttl=ttl,
    )  # fmt: skip


def test_entry_written_long_ago_expires_sooner() -> None:
    clock = ManualClock()
    cache = EndpointCache(clock)
    cache.apply(Put(rec("i1"), age=1.5))
    clock.advance(0.4)
    assert [r.instance for r in cache.ready("s")] == ["i1"]
    clock.advance(0.2)
    assert cache.ready("s") == []


def test_entry_older_than_its_ttl_is_never_live() -> None:
    cache = EndpointCache(ManualClock())
    cache.apply(Put(rec("i1"), age=5.0))
    assert cache.ready("s") == []


def test_new_snapshot_replaces_the_cache_only_when_complete() -> None:
    cache = EndpointCache(ManualClock())
    cache.apply(Put(rec("old")))
    cache.apply(Synced())
    cache.begin_sync()
    cache.apply(Put(rec("new")))
    assert [r.instance for r in cache.ready("s")] == ["old"]
    cache.apply(Synced())
    assert [r.instance for r in cache.ready("s")] == ["new"]


def test_frozen_cache_does_not_expire_and_thaws_on_sync() -> None:
    clock = ManualClock()
    cache = EndpointCache(clock)
    cache.apply(Put(rec("i1", ttl=2.0)))
    cache.apply(Synced())
    cache.freeze()
    clock.advance(100)
    assert [r.instance for r in cache.ready("s")] == ["i1"]
    cache.begin_sync()
    cache.apply(Synced())  # the new snapshot lacks i1: it has one TTL to heartbeat again
    assert not cache.frozen
    clock.advance(2.1)
    assert cache.ready("s") == []


def test_delete_removes_and_counts_as_a_change() -> None:
    cache = EndpointCache(ManualClock())
    cache.apply(Put(rec("i1")))
    before = cache.generation
    cache.apply(Delete("s", "i1"))
    assert cache.ready("s") == []
    assert cache.services() == []
    assert cache.generation == before + 1


def test_thaw_gives_entries_live_at_the_freeze_one_ttl_of_grace() -> None:
    clock = ManualClock()
    cache = EndpointCache(clock)
    cache.apply(Put(rec("kept", ttl=2.0)))
    cache.apply(Put(rec("deleted", ttl=2.0)))
    cache.apply(Synced())
    cache.freeze()
    clock.advance(30)
    cache.begin_sync()
    cache.apply(Put(rec("kept", ttl=2.0), age=29.0))  # stale: its owner has not re-heartbeated
    cache.apply(Delete("s", "deleted"))
    cache.apply(Synced())
    assert [r.instance for r in cache.ready("s")] == ["kept"]
    clock.advance(2.1)
    assert cache.ready("s") == []
