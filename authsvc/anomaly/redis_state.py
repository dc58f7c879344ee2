"""Detector state in Redis: each event's operations in one pipeline (one round trip).

Key layout (under ``{prefix}anomaly:``): window buckets ``KEY:<bucket>`` (HyperLogLogs
for distinct counts, integers for counts), sets, strings and hashes, each with an
expiry. Commands used: PFADD/PFCOUNT, INCRBY/MGET, SADD/SCARD, SET NX GET / SET GET
(Redis 7.0+), GET, HGETALL/HSET and EXPIRE.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import redis
from redis.commands.core import Script

from authsvc.anomaly.state import BUCKETS, Handle, Ops, bucket_keys
from authsvc.errors import StoreUnavailable

__all__ = ["RedisState"]

T = TypeVar("T")


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


#: KEYS[1] claim. ARGV: value, now, until (event time), ttl (Redis's own expiry, a
#: backstop). The stored value is ``until|value``; an ended claim is taken over.
_CLAIM = """
local held = redis.call('GET', KEYS[1])
if held then
  local bar = string.find(held, '|', 1, true)
  if bar and tonumber(string.sub(held, 1, bar - 1)) > tonumber(ARGV[2]) then
    return string.sub(held, bar + 1)
  end
end
redis.call('SET', KEYS[1], ARGV[3] .. '|' .. ARGV[1], 'EX', ARGV[4])
return false
"""


class _Memo:
    """What this process knows it need not send again: keys whose expiry it set (until
    when, in event time), and ``first`` keys whose value is settled (they never change).
    Dropped whole when large, and when a batch fails (it may not have run)."""

    LIMIT = 200_000

    def __init__(self) -> None:
        self.expiring: dict[str, int] = {}
        self.settled: dict[str, tuple[str, int]] = {}

    def trim(self) -> None:
        if len(self.expiring) > self.LIMIT:
            self.expiring = {}
        if len(self.settled) > self.LIMIT:
            self.settled = {}


class RedisState:
    def __init__(self, client: redis.Redis, *, prefix: str = "authsvc:") -> None:
        self._client = client
        self._prefix = prefix + "anomaly:"
        self._claim = client.register_script(_CLAIM)
        self._memo = _Memo()

    def begin(self, now: int) -> Ops:
        self._memo.trim()
        return _RedisOps(self._client, self._prefix, now, self._claim, self._memo)


class _RedisOps:
    def __init__(
        self, client: redis.Redis, prefix: str, now: int, claim: Script, memo: _Memo
    ) -> None:
        self.now = now
        self._memo = memo
        self._claim_script = claim
        self._prefix = prefix
        self._pipe = client.pipeline(transaction=False)
        #: (number of replies, how to turn them into the handle's value, the handle)
        self._reads: list[tuple[int, Callable[[list[Any]], Any], Handle[Any] | None]] = []

    def _add(
        self, replies: int, convert: Callable[[list[Any]], T], handle: Handle[T] | None
    ) -> None:
        self._reads.append((replies, convert, handle))

    def _window(self, key: str, window: int) -> tuple[list[str], int]:
        keys, length = bucket_keys(self._prefix + key, self.now, window)
        ttl = (self.now // length + BUCKETS) * length - self.now + 60
        return keys, ttl

    def _expire(self, full: str, ttl: int, *, refresh: int | None = None) -> int:
        """Queue an EXPIRE unless this process set one on ``full`` already (and, with
        ``refresh``, less than that many seconds ago); the number of replies queued."""
        if self._memo.expiring.get(full, -1) > self.now:
            return 0
        self._pipe.expire(full, max(1, ttl))
        self._memo.expiring[full] = self.now + (refresh if refresh is not None else ttl)
        return 1

    def distinct(self, key: str, members: Sequence[str], window: int) -> Handle[int]:
        keys, ttl = self._window(key, window)
        self._pipe.pfadd(keys[0], *members)
        queued = self._expire(keys[0], ttl)
        self._pipe.pfcount(*keys)
        handle: Handle[int] = Handle()
        self._add(2 + queued, lambda r: int(r[-1]), handle)
        return handle

    def distinct_count(self, key: str, window: int) -> Handle[int]:
        keys, _ = self._window(key, window)
        self._pipe.pfcount(*keys)
        handle: Handle[int] = Handle()
        self._add(1, lambda r: int(r[0]), handle)
        return handle

    def count(self, key: str, window: int, amount: int = 1) -> Handle[int]:
        keys, ttl = self._window(key, window)
        self._pipe.incrby(keys[0], amount)
        queued = self._expire(keys[0], ttl)
        self._pipe.mget(keys)
        handle: Handle[int] = Handle()
        self._add(2 + queued, lambda r: sum(int(v) for v in r[-1] if v is not None), handle)
        return handle

    def incr(self, key: str, amount: int, ttl: int) -> Handle[int]:
        full = self._prefix + key
        self._pipe.incrby(full, amount)
        queued = self._expire(full, ttl)
        handle: Handle[int] = Handle()
        self._add(1 + queued, lambda r: int(r[0]), handle)
        return handle

    def remember(self, key: str, member: str, ttl: int) -> Handle[bool]:
        full = self._prefix + key
        self._pipe.sadd(full, member)
        queued = self._expire(full, ttl, refresh=min(ttl, 86400))  # kept alive daily
        handle: Handle[bool] = Handle()
        self._add(1 + queued, lambda r: bool(r[0]), handle)
        return handle

    def cardinality(self, key: str) -> Handle[int]:
        self._pipe.scard(self._prefix + key)
        handle: Handle[int] = Handle()
        self._add(1, lambda r: int(r[0]), handle)
        return handle

    def first(self, key: str, value: str, ttl: int) -> Handle[str | None]:
        full = self._prefix + key
        handle: Handle[str | None] = Handle()
        settled = self._memo.settled.get(full)
        if settled is not None and settled[1] > self.now:
            handle.set(settled[0])  # set before (by this process or another): its value
            return handle
        self._pipe.set(full, value, nx=True, get=True, ex=max(1, ttl))
        # Known to live at least until then (it was set at the earliest now).
        until = self.now + max(1, ttl) // 2

        def convert(r: list[Any]) -> str | None:
            held = _text(r[0])
            self._memo.settled[full] = (value if held is None else held, until)
            return held

        self._add(1, convert, handle)
        return handle

    def claim(self, key: str, value: str, ttl: int) -> Handle[str | None]:
        until = self.now + ttl
        self._claim_script(
            keys=[self._prefix + key],
            args=[value, self.now, until, max(1, ttl) + 86400],
            client=self._pipe,
        )
        handle: Handle[str | None] = Handle()
        self._add(1, lambda r: _text(r[0]) if r[0] else None, handle)
        return handle

    def swap(self, key: str, value: str, ttl: int) -> Handle[str | None]:
        self._pipe.set(self._prefix + key, value, get=True, ex=max(1, ttl))
        handle: Handle[str | None] = Handle()
        self._add(1, lambda r: _text(r[0]), handle)
        return handle

    def get(self, key: str) -> Handle[str | None]:
        self._pipe.get(self._prefix + key)
        handle: Handle[str | None] = Handle()
        self._add(1, lambda r: _text(r[0]), handle)
        return handle

    def hgetall(self, key: str) -> Handle[dict[str, str]]:
        self._pipe.hgetall(self._prefix + key)
        handle: Handle[dict[str, str]] = Handle()
        self._add(
            1, lambda r: {str(_text(k)): str(_text(v)) for k, v in dict(r[0]).items()}, handle
        )
        return handle

    def hset(self, key: str, fields: Mapping[str, str], ttl: int) -> None:
        full = self._prefix + key
        self._pipe.hset(full, mapping=cast(Any, dict(fields)))
        self._pipe.expire(full, max(1, ttl))
        self._add(2, lambda r: None, None)

    def execute(self) -> None:
        if not self._reads:
            return
        try:
            replies = self._pipe.execute()
        except redis.RedisError as exc:
            self._memo.expiring.clear()
            self._memo.settled.clear()
            raise StoreUnavailable(f"anomaly state in Redis: {exc}") from exc
        finally:
            self._pipe.reset()
        at = 0
        reads, self._reads = self._reads, []
        for count, convert, handle in reads:
            value = convert(replies[at : at + count])
            at += count
            if handle is not None:
                handle.set(value)
