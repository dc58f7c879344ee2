"""The webhook's outbox: alerts waiting for delivery, kept in Redis.

Kept in Redis, not in the consumer's memory, so a restart (or a crash) loses nothing
and every consumer of the group delivers from one queue. Keys (under the store's
prefix, ``authsvc:``)::

    {prefix}anomaly:webhook:outbox        sorted set: alert id -> when it is due (ms)
    {prefix}anomaly:webhook:bodies        hash: alert id -> the JSON body
    {prefix}anomaly:webhook:attempts      hash: alert id -> attempts started
    {prefix}anomaly:webhook:queued:{id}   "1" for 7 days: the alert was queued once
    {prefix}anomaly:webhook:dead          list, newest first: what was not delivered,
                                          ``{"alert", "attempts", "error", "time"}``

Taking an alert (``take``) is the visibility timeout of a job queue: its due time moves
``lease_ms`` ahead and its attempt count goes up, in one script, so a sender that dies
mid-POST leaves the alert to be taken again once the lease is over (the lost attempt
counts). ``enqueue`` queues an alert at most once (the ``queued`` key), however often
the event behind it is processed. All times come from the Redis server's clock.

Bounds: the outbox holds at most ``max_outbox`` alerts (past that an alert goes straight
to the dead-letter list, error "outbox full"); the dead-letter list keeps the newest
``max_dead``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis

from authsvc.errors import StoreUnavailable

__all__ = ["Delivery", "Outbox"]

#: How long an alert id is remembered as queued (the store's seen-event lifetime).
QUEUED_TTL = 7 * 86400

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: queued marker, outbox, bodies, dead. ARGV: id, body, marker TTL, max outbox,
# max dead, the dead-letter record if the outbox is full. 1 queued, 0 seen, 2 full.
_ENQUEUE = (
    _NOW
    + """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then return 0 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  redis.call('LPUSH', KEYS[4], ARGV[6])
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[5]) - 1)
  return 2
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
return 1
"""
)

# KEYS: outbox, bodies, attempts. ARGV: lease (ms). Returns {id, body, attempts}, or
# {'', ms until the next is due (-1: empty)}.
_TAKE = (
    _NOW
    + """
while true do
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1)
  if #due == 0 then
    local next = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    if #next == 0 then return {'', -1} end
    return {'', math.max(0, tonumber(next[2]) - now)}
  end
  local id = due[1]
  local body = redis.call('HGET', KEYS[2], id)
  if body then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), id)
    return {id, body, redis.call('HINCRBY', KEYS[3], id, 1)}
  end
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[3], id)
end
"""
)

# KEYS: outbox, bodies, attempts. ARGV: id.
_DONE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
"""

# KEYS: outbox. ARGV: id, delay (ms). Only while it is still queued (XX).
_RETRY = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
"""
)

# KEYS: outbox, bodies, attempts, dead. ARGV: id, the dead-letter record, max dead.
_DEAD = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('LPUSH', KEYS[4], ARGV[2])
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[3]) - 1)
return 1
"""


@dataclass(frozen=True)
class Delivery:
    """An alert taken for delivery: attempt ``attempt`` (1 for the first)."""

    id: str
    body: bytes
    attempt: int


class Outbox:
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        max_outbox: int = 100_000,
        max_dead: int = 100_000,
    ) -> None:
        if max_outbox < 1 or max_dead < 1:
            raise ValueError("the outbox and the dead-letter list must hold at least one")
        base = f"{prefix}anomaly:webhook:"
        self._queued = base + "queued:"
        self._outbox = base + "outbox"
        self._bodies = base + "bodies"
        self._attempts = base + "attempts"
        self.dead_key = base + "dead"
        self._max_outbox = max_outbox
        self._max_dead = max_dead
        self._client = client
        self._enqueue = client.register_script(_ENQUEUE)
        self._take = client.register_script(_TAKE)
        self._done = client.register_script(_DONE)
        self._retry = client.register_script(_RETRY)
        self._dead = client.register_script(_DEAD)

    def enqueue(self, event_id: str, body: bytes) -> bool:
        """Queue an alert unless it was queued before; True if queued now."""
        full = _dead_record(body, 0, "outbox full")
        keys = [self._queued + event_id, self._outbox, self._bodies, self.dead_key]
        args: list[str | int] = [
            event_id,
            body.decode(),
            QUEUED_TTL,
            self._max_outbox,
            self._max_dead,
            full,
        ]
        with _guard():
            reply: object = self._enqueue(keys=keys, args=args)
        return reply == 1

    def take(self, lease_ms: int) -> Delivery | int | None:
        """The next due alert, leased for ``lease_ms``; else the milliseconds until the
        next one is due, or None when the outbox is empty."""
        with _guard():
            reply: Any = self._take(
                keys=[self._outbox, self._bodies, self._attempts], args=[lease_ms]
            )
        if reply[0] == "":
            wait = int(reply[1])
            return None if wait < 0 else wait
        return Delivery(str(reply[0]), str(reply[1]).encode(), int(reply[2]))

    def done(self, delivery: Delivery) -> None:
        with _guard():
            self._done(keys=[self._outbox, self._bodies, self._attempts], args=[delivery.id])

    def retry(self, delivery: Delivery, delay_ms: int) -> None:
        with _guard():
            self._retry(keys=[self._outbox], args=[delivery.id, delay_ms])

    def dead(self, delivery: Delivery, error: str) -> bool:
        """Move the alert to the dead-letter list; False if it was not queued any more."""
        record = _dead_record(delivery.body, delivery.attempt, error)
        keys = [self._outbox, self._bodies, self._attempts, self.dead_key]
        with _guard():
            reply: object = self._dead(keys=keys, args=[delivery.id, record, self._max_dead])
        return reply == 1

    def sizes(self) -> tuple[int, int]:
        """(alerts in the outbox, alerts in the dead-letter list)."""
        with _guard():
            pipe = self._client.pipeline(transaction=False)
            pipe.zcard(self._outbox)
            pipe.llen(self.dead_key)
            outbox, dead = pipe.execute()
        return int(outbox), int(dead)

    def dead_letters(self, count: int = 100) -> list[dict[str, Any]]:
        """The newest ``count`` dead letters, newest first."""
        with _guard():
            items: Any = self._client.lrange(self.dead_key, 0, count - 1)
        return [json.loads(item) for item in items]


def _dead_record(body: bytes, attempts: int, error: str) -> str:
    return json.dumps(
        {
            "alert": json.loads(body),
            "attempts": attempts,
            "error": error,
            "time": int(time.time() * 1000),
        },
        sort_keys=True,
        separators=(",", ":"),
    )


@contextmanager
def _guard() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise StoreUnavailable(f"the webhook outbox in Redis failed: {exc}") from exc
