"""Redis state (redis.asyncio): every key of a store lives under ``shoal:<app>:<service>:``.

- ``...:k:<key>``  a hash ``{v: JSON text, e: ETag}``; TTL is Redis's own (PEXPIRE),
  so an expired key is gone for every read at once.
- ``...:@index``   a sorted set of the keys (all score 0), listed by ZRANGEBYLEX on a
  byte range (no glob patterns, so ``*``, ``%`` and ``_`` are plain characters);
  members whose hash expired are dropped from it lazily by the listing script.
- ``...:@outbox``, ``...:@outbox:data``, ``...:@outbox:seq``  the outbox: ids by
  commit sequence, payloads by id, and the sequence counter.

Writes run as Lua scripts, which Redis executes atomically: a script first checks
every condition (ETags, create-only keys), then writes, so a conflict leaves nothing
written. (The listing script
reads hashes it finds in the index, so a store needs one Redis server, not a Cluster.)
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shoal.exceptions import StateError
from shoal.state._api import StateStore
from shoal.state._backend import OutboxRecord, Write
from shoal.state._codec import check_name, conflict

__all__ = ["RedisBackend", "open_redis", "redact_url"]

# KEYS: index, outbox ids, outbox data, outbox seq, then one hash per write.
# ARGV: n writes, then per write: member, value ("" for delete), is_delete, etag check
# ("" for none), new etag, ttl ms ("0" for none), absent check ("1": the key must not
# exist; Redis drops an expired key, so EXISTS counts only live ones); then per outbox
# record: id, payload. A failed check returns {-1, i} (write i) before anything is written.
_COMMIT = """
local n = tonumber(ARGV[1])
for i = 1, n do
  local a = 1 + (i - 1) * 7
  local want = ARGV[a + 4]
  if want ~= '' then
    local have = redis.call('HGET', KEYS[4 + i], 'e')
    if have ~= want then return {-1, i} end
  end
  if ARGV[a + 7] == '1' and redis.call('EXISTS', KEYS[4 + i]) == 1 then return {-1, i} end
end
local out = {0}
for i = 1, n do
  local a = 1 + (i - 1) * 7
  local k = KEYS[4 + i]
  if ARGV[a + 3] == '1' then
    out[i + 1] = redis.call('DEL', k)
    redis.call('ZREM', KEYS[1], ARGV[a + 1])
  else
    redis.call('HSET', k, 'v', ARGV[a + 2], 'e', ARGV[a + 5])
    local ttl = tonumber(ARGV[a + 6])
    if ttl > 0 then redis.call('PEXPIRE', k, ttl) else redis.call('PERSIST', k) end
    redis.call('ZADD', KEYS[1], 0, ARGV[a + 1])
    if ARGV[a + 7] == '1' then out[i + 1] = 0 else out[i + 1] = 1 end
  end
end
for j = 2 + n * 7, #ARGV, 2 do
  local seq = redis.call('INCR', KEYS[4])
  redis.call('ZADD', KEYS[2], seq, ARGV[j])
  redis.call('HSET', KEYS[3], ARGV[j], ARGV[j + 1])
end
return out
"""

# KEYS: index. ARGV: hash key prefix, min, max (ZRANGEBYLEX bounds), limit.
_LIST = """
local limit = tonumber(ARGV[4])
local out = {}
local offset = 0
while #out < limit * 2 do
  local batch = limit * 2
  local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3], 'LIMIT', offset, batch)
  if #members == 0 then break end
  offset = offset + #members
  for _, m in ipairs(members) do
    local v = redis.call('HGET', ARGV[1] .. m, 'v')
    if v then
      if #out < limit * 2 then out[#out + 1] = m; out[#out + 1] = v end
    else
      redis.call('ZREM', KEYS[1], m)
      offset = offset - 1
    end
  end
  if #members < batch then break end
end
return out
"""


async def open_redis(
    url: str, app: str, service: str, *, connect_timeout: float = 5.0
) -> StateStore:
    """The state store of ``service`` of ``app`` in the Redis server at ``url``
    (``redis://[:password@]host:port/db``)."""
    backend = RedisBackend(
        url, check_name("app", app), check_name("service", service), connect_timeout
    )
    await backend.open()
    return StateStore(backend)


def redact_url(url: str) -> str:
    """``url`` without its password."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "localhost", parts.port or 6379
    except ValueError:
        return "the configured URL"
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme or 'redis'}://{user}{host}:{port}{parts.path}"


class RedisBackend:
    """:class:`~shoal.state._backend.StateBackend` on one Redis key prefix."""

    name = "redis"

    def __init__(self, url: str, app: str, service: str, connect_timeout: float) -> None:
        self.where = f"{redact_url(url)} (redis, app {app!r}, service {service!r})"
        self.prefix = f"shoal:{app}:{service}:"
        self._data = self.prefix + "k:"
        self._index = self.prefix + "@index"
        self._outbox = self.prefix + "@outbox"
        try:
            self._redis: Any = aioredis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=connect_timeout,
                socket_timeout=connect_timeout * 2,
            )
        except ValueError as exc:
            raise StateError(
                f"state store {self.where}: the URL is invalid ({exc}); "
                "use redis://[:password@]host:port/db"
            ) from None
        self._commit = self._redis.register_script(_COMMIT)
        self._list = self._redis.register_script(_LIST)
        self._closed = False

    async def open(self) -> None:
        try:
            with self._errors("cannot be reached"):
                await self._redis.ping()
        except BaseException:
            await self.aclose()
            raise

    @contextmanager
    def _errors(self, what: str = "failed") -> Iterator[None]:
        if self._closed:
            raise StateError(f"state store {self.where} is closed; open it again")
        try:
            yield
        except (RedisError, OSError, TimeoutError) as exc:
            detail = str(exc).strip() or type(exc).__name__
            raise StateError(
                f"state store {self.where} {what}: {detail}; check that Redis is running "
                "there and that the URL (and password) in the service's state settings is right"
            ) from exc

    async def get(self, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
        with self._errors():
            if len(keys) == 1:
                rows = [await self._redis.hmget(self._data + keys[0], "v", "e")]
            else:
                pipe = self._redis.pipeline(transaction=False)
                for k in keys:
                    pipe.hmget(self._data + k, "v", "e")
                rows = await pipe.execute()
        return {k: (v, e) for k, (v, e) in zip(keys, rows, strict=True) if v is not None}

    async def list(self, prefix: str, limit: int) -> builtins.list[tuple[str, str]]:
        raw = prefix.encode()
        low = b"[" + raw if raw else b"-"
        # the least byte string above every key starting with prefix (UTF-8 has no 0xFF)
        high = b"(" + raw[:-1] + bytes([raw[-1] + 1]) if raw else b"+"
        with self._errors():
            flat = await self._list(keys=[self._index], args=[self._data, low, high, limit])
        return list(zip(flat[0::2], flat[1::2], strict=True))

    async def commit(
        self, writes: Sequence[Write], outbox: Sequence[OutboxRecord] = ()
    ) -> builtins.list[bool]:
        keys = [self._index, self._outbox, self._outbox + ":data", self._outbox + ":seq"]
        args: list[str | int | float] = [len(writes)]
        for w in writes:
            keys.append(self._data + w.key)
            ttl = 0 if w.ttl is None else max(1, math.ceil(w.ttl * 1000))
            delete = w.value is None
            args += [w.key, w.value or "", "1" if delete else "0", w.etag or "", w.new_etag, ttl]
            args.append("1" if w.absent else "0")
        for r in outbox:
            args += [r.id, r.payload]
        with self._errors():
            out = await self._commit(keys=keys, args=args)
        if out[0] == -1:
            failed = writes[int(out[1]) - 1]
            raise conflict(failed.key, self.where, absent=failed.absent)
        return [bool(x) for x in out[1:]]

    async def outbox_pending(self, limit: int) -> builtins.list[OutboxRecord]:
        with self._errors():
            ids = await self._redis.zrange(self._outbox, 0, limit - 1)
            payloads = await self._redis.hmget(self._outbox + ":data", ids) if ids else []
        return [OutboxRecord(i, p) for i, p in zip(ids, payloads, strict=True) if p is not None]

    async def outbox_remove(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        with self._errors():
            pipe = self._redis.pipeline(transaction=True)
            pipe.zrem(self._outbox, *ids)
            pipe.hdel(self._outbox + ":data", *ids)
            await pipe.execute()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._redis.aclose()
