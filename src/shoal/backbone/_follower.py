"""Following a KV bucket into memory: a snapshot, then every change, across NATS outages.

The traffic policies (``NatsPolicies``) and an instance's configuration
(``LiveConfig``) both keep a bucket's content in memory and answer reads without
I/O. :class:`BucketFollower` is what they share: the watch task, the snapshot
staged until :class:`~shoal.backbone._kv.KvSynced` and installed in one step,
each later change applied as it comes, a new watch (and a fresh snapshot) once
NATS is back after a drop, the last state kept meanwhile (static stability), and a
generation that bumps with every change applied, for waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

from shoal.backbone._connection import Backbone
from shoal.backbone._kv import KvChange, KvSynced, watch_bucket
from shoal.exceptions import BackboneError, ShoalError

__all__ = ["BucketFollower"]

S = TypeVar("S")


class BucketFollower(ABC, Generic[S]):
    """Follows the bucket ``bucket``; subclasses say what a snapshot ``S`` is and how
    changes go into it (``_new_snapshot``, ``_stage``, ``_install``, ``_apply``)."""

    what = "the bucket"
    """What the bucket holds, for messages (e.g. ``the traffic policies``)."""

    def __init__(self, backbone: Backbone, bucket: str, *, retry_delay: float = 0.2) -> None:
        self._backbone = backbone
        self.bucket = bucket
        self._retry_delay = retry_delay
        self._generation = 0
        self._changed = asyncio.Event()
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def generation(self) -> int:
        """Bumps on every change applied (a put, a delete, a new snapshot that differs)."""
        return self._generation

    async def wait_for_generation(self, generation: int, timeout: float) -> None:
        """Return once ``self.generation >= generation``; ``TimeoutError`` after ``timeout``."""
        async with asyncio.timeout(timeout):
            while self._generation < generation:
                await self._changed.wait()

    def _bump(self) -> None:
        self._generation += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def start(self, timeout: float = 5.0) -> None:
        """Load the snapshot and keep following; BackboneError if it does not load in time."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"shoal-follow-{self.bucket}")
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            raise BackboneError(
                f"{self.what} ({self.bucket}) did not load within {timeout:g} s"
            ) from None

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=5.0)

    async def _run(self) -> None:
        while True:
            try:
                await self._watch()
                delay = self._retry_delay  # NATS dropped: watched again once it is back
            except ShoalError as exc:
                delay = self._watch_failed(exc)
            await asyncio.sleep(delay)

    async def _watch(self) -> None:
        staged: S | None = self._new_snapshot()  # a snapshot, until KvSynced
        events = watch_bucket(self._backbone, self.bucket, self._ensure)
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, KvSynced):
                    if staged is not None:
                        self._install(staged)
                        self._synced.set()
                    staged = None
                elif staged is not None:
                    self._stage(staged, event)
                else:
                    self._apply(event)

    # -- what a follower says ---------------------------------------------------------

    @abstractmethod
    async def _ensure(self) -> object:
        """Make sure the bucket exists (or raise); awaited before each watch."""

    @abstractmethod
    def _watch_failed(self, exc: ShoalError) -> float:
        """Report a failed watch; seconds to wait before the next one."""

    @abstractmethod
    def _new_snapshot(self) -> S:
        """An empty snapshot to read the bucket into."""

    @abstractmethod
    def _stage(self, staged: S, change: KvChange) -> None:
        """Put ``change`` into the snapshot being read."""

    @abstractmethod
    def _install(self, staged: S) -> None:
        """Make the complete snapshot current (``self._synced`` is set only after the
        first one: ``not self._synced.is_set()`` tells the first from a re-watch)."""

    @abstractmethod
    def _apply(self, change: KvChange) -> None:
        """Apply a change that came after the snapshot."""
