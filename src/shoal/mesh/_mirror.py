"""Mirroring: a share of calls also goes to a shadow version, whose answer is compared.

The copy is sent at the same time as the primary call, from a background task,
so the caller's answer and its latency do not depend on the shadow. When both
answers are in, their status and the SHA-256 of their bodies are compared;
matches and mismatches are counted per service and each mismatch is logged
(logger ``shoal.mesh.mirror``). Only calls whose request body is in memory and
at most 64 KiB are mirrored, at most ``MAX_IN_FLIGHT`` at a time; the rest are
counted as skipped. Copies carry ``shoal-mirror: 1``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx

from shoal.mesh import _deadline
from shoal.mesh._body import BUFFER_LIMIT, Whole, replayable_size
from shoal.mesh._metrics import count_mirror

if TYPE_CHECKING:
    from shoal.mesh._call import Call
    from shoal.mesh._transport import MeshTransport
    from shoal.registry._records import InstanceRecord

__all__ = ["MIRROR_HEADER", "Mirror", "MirrorStats"]

log = logging.getLogger("shoal.mesh.mirror")

MIRROR_HEADER = "shoal-mirror"
MAX_IN_FLIGHT = 64
READ_LIMIT = 1024 * 1024
"""Shadow answers are hashed up to this many bytes."""

_Answer = tuple[int, str | None]  # status, body hash (None: not known)


@dataclasses.dataclass(slots=True)
class MirrorStats:
    sent: int = 0
    matched: int = 0
    mismatched: int = 0
    failed: int = 0
    skipped: int = 0


class Mirror:
    def __init__(self, transport: MeshTransport) -> None:
        self.t = transport
        self.stats: dict[str, MirrorStats] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def stats_of(self, service: str) -> MirrorStats:
        stats = self.stats.get(service)
        if stats is None:
            stats = self.stats[service] = MirrorStats()
        return stats

    async def run(self, call: Call, version: str, ready: list[InstanceRecord]) -> httpx.Response:
        """Make ``call`` and, beside it, send a copy to an instance of ``version``."""
        service = call.dest.service
        stats = self.stats_of(service)
        request = call.request
        size = replayable_size(request)
        targets = [r for r in ready if r.version == version]
        if size is None or size > BUFFER_LIMIT or not targets or len(self._tasks) >= MAX_IN_FLIGHT:
            stats.skipped += 1
            return await call.run()
        copy = httpx.Request(
            request.method,
            request.url,
            headers=[*request.headers.multi_items(), (MIRROR_HEADER, "1")],
            content=request.content,
        )
        primary: asyncio.Future[_Answer | None] = asyncio.get_running_loop().create_future()
        shadow = self._shadow(service, version, targets, copy, call.deadline, primary)
        task = asyncio.create_task(shadow)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            response = await call.run()
        except BaseException:
            primary.set_result(None)
            raise
        stream = response.stream
        if isinstance(stream, Whole):
            primary.set_result((response.status_code, hashlib.sha256(stream.content).hexdigest()))
        elif isinstance(stream, httpx.AsyncByteStream):  # hash it as the caller reads it
            response.stream = _Hashing(stream, response.status_code, primary)
        else:
            primary.set_result((response.status_code, None))
        return response

    async def _shadow(
        self,
        service: str,
        version: str,
        targets: list[InstanceRecord],
        copy: httpx.Request,
        deadline: float,
        primary: asyncio.Future[_Answer | None],
    ) -> None:
        stats = self.stats_of(service)
        stats.sent += 1
        try:
            shadow = await self._send(targets, copy, deadline)
        except Exception as exc:  # the shadow's failure is reported, never raised
            stats.failed += 1
            count_mirror(self.t.caller, service, "failed")
            log.warning(
                "mirror of %s %s to %s %s failed: %s", copy.method, copy.url, service, version, exc
            )
            return
        try:  # the primary's body is hashed as its caller reads it: wait for that, bounded
            first = await asyncio.wait_for(primary, max(deadline - _deadline.now(), 0) + 5)
        except TimeoutError:
            first = None
        if first is None:  # the primary call failed or was never read: nothing to compare
            return
        if _same(first, shadow):
            stats.matched += 1
            count_mirror(self.t.caller, service, "matched")
            return
        stats.mismatched += 1
        count_mirror(self.t.caller, service, "mismatched")
        log.warning(
            "mirror mismatch for %s %s on %s: primary %s, %s answered %s",
            copy.method,
            copy.url.raw_path.decode(),
            service,
            _show(first),
            version,
            _show(shadow),
        )

    async def _send(
        self, targets: list[InstanceRecord], copy: httpx.Request, deadline: float
    ) -> _Answer:
        balancer = self.t.balancer
        record = balancer.pick(targets) or targets[0]
        started = balancer.start(record.instance)
        digest = hashlib.sha256()
        read = 0
        try:
            async with asyncio.timeout(max(deadline - _deadline.now(), 0)):
                copy.headers[_deadline.TIMEOUT_HEADER] = _deadline.format_timeout(
                    deadline - _deadline.now()
                )
                response = await self.t.pool.send(
                    record.host, record.port, copy, identity=record.identity
                )
                try:
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read > READ_LIMIT:
                            return response.status_code, None
                        digest.update(chunk)
                finally:
                    await response.aclose()
        except BaseException:
            balancer.abandon(record.instance)
            raise
        balancer.finish(record.instance, started)
        return response.status_code, digest.hexdigest()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class _Hashing(httpx.AsyncByteStream):
    """The primary's body, passed through unchanged while its SHA-256 is taken."""

    def __init__(
        self, inner: httpx.AsyncByteStream, status: int, done: asyncio.Future[_Answer | None]
    ) -> None:
        self._inner = inner
        self._status = status
        self._done = done
        self._digest = hashlib.sha256()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._digest.update(chunk)
            yield chunk
        if not self._done.done():
            self._done.set_result((self._status, self._digest.hexdigest()))

    async def aclose(self) -> None:
        if not self._done.done():  # closed before the end: the body is not known
            self._done.set_result((self._status, None))
        await self._inner.aclose()


def _same(a: _Answer, b: _Answer) -> bool:
    if a[0] != b[0]:
        return False
    return a[1] is None or b[1] is None or a[1] == b[1]


def _show(answer: _Answer) -> str:
    status, digest = answer
    return f"{status} (body sha256 {digest[:12]})" if digest else str(status)
