"""Detector state in Redis: each batch of an event's operations is one script call.

The operations the detectors queue are sent as a small program (``_PROGRAM``: an op
letter, then its arguments) to one Lua script, which runs them in order and answers one
reply each: one round trip and one command per batch, whatever the number of detectors
(redis-py's cost per pipelined command, not Redis's, was most of the consumer's time).

Key layout (under ``{prefix}anomaly:``): window buckets ``KEY:<bucket>`` (HyperLogLogs
for distinct counts, integers for counts), sets, strings and hashes, each with an
expiry. Commands run by the script: PFADD/PFCOUNT, INCRBY, SADD, SET NX GET /
SET GET (Redis 7.0+), GET, HGETALL/HSET and EXPIRE. The script names its keys in ARGV,
so the anomaly state needs one Redis, not a Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

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


#: Runs a program of operations; one reply each (false for "none").
_PROGRAM = """
local out = {}
local i = 1
local n = #ARGV
local function keys_at(at)
  local count = tonumber(ARGV[at])
  local keys = {}
  for k = 1, count do keys[k] = ARGV[at + k] end
  return keys, at + count + 1
end
while i <= n do
  local op = ARGV[i]
  if op == 'D' then
    local keys, at = keys_at(i + 1)
    local ttl = tonumber(ARGV[at])
    local members, next_at = keys_at(at + 1)
    redis.call('PFADD', keys[1], unpack(members))
    if ttl > 0 then redis.call('EXPIRE', keys[1], ttl) end
    out[#out + 1] = redis.call('PFCOUNT', unpack(keys))
    i = next_at
  elseif op == 'R' then
    local keys, at = keys_at(i + 1)
    out[#out + 1] = redis.call('PFCOUNT', unpack(keys))
    i = at
  elseif op == 'I' then
    out[#out + 1] = redis.call('INCRBY', ARGV[i + 1], ARGV[i + 2])
    if tonumber(ARGV[i + 3]) > 0 then redis.call('EXPIRE', ARGV[i + 1], ARGV[i + 3]) end
    i = i + 4
  elseif op == 'S' then
    out[#out + 1] = redis.call('SADD', ARGV[i + 1], ARGV[i + 2])
    if tonumber(ARGV[i + 3]) > 0 then redis.call('EXPIRE', ARGV[i + 1], ARGV[i + 3]) end
    i = i + 4
  elseif op == 'F' then
    out[#out + 1] = redis.call('SET', ARGV[i + 1], ARGV[i + 2], 'NX', 'GET', 'EX', ARGV[i + 3])
    i = i + 4
  elseif op == 'X' then
    out[#out + 1] = redis.call('SET', ARGV[i + 1], ARGV[i + 2], 'GET', 'EX', ARGV[i + 3])
    i = i + 4
  elseif op == 'G' then
    out[#out + 1] = redis.call('GET', ARGV[i + 1])
    i = i + 2
  elseif op == 'H' then
    out[#out + 1] = redis.call('HGETALL', ARGV[i + 1])
    i = i + 2
  elseif op == 'P' then
    local fields, at = keys_at(i + 3)
    redis.call('HSET', ARGV[i + 1], unpack(fields))
    redis.call('EXPIRE', ARGV[i + 1], ARGV[i + 2])
    out[#out + 1] = false
    i = at
  elseif op == 'L' then
    -- a claim in event time: the value is until|holder; an ended claim is taken over
    local key, value, now = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local untl, ttl = ARGV[i + 4], ARGV[i + 5]
    local held = redis.call('GET', key)
    local reply = false
    if held then
      local bar = string.find(held, '|', 1, true)
      if bar and tonumber(string.sub(held, 1, bar - 1)) > tonumber(now) then
        reply = string.sub(held, bar + 1)
      end
    end
    if not reply then redis.call('SET', key, untl .. '|' .. value, 'EX', ttl) end
    out[#out + 1] = reply
    i = i + 6
  else
    return redis.error_reply('anomaly state: unknown operation ' .. tostring(op))
  end
end
return out
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
        self._program = client.register_script(_PROGRAM)
        self._memo = _Memo()
        #: Writes no answer is awaited for, to go first in the next batch's program.
        self._deferred: list[str | int] = []

    def begin(self, now: int) -> Ops:
        self._memo.trim()
        return _RedisOps(self._prefix, now, self._program, self._memo, self._deferred)

    def flush(self) -> None:
        """Send the writes held back for the next batch (see ``_RedisOps.execute``)."""
        if self._deferred:
            _RedisOps(self._prefix, 0, self._program, self._memo, self._deferred).send([], [])


Convert = Callable[[Any], Any]


class _RedisOps:
    def __init__(
        self, prefix: str, now: int, program: Script, memo: _Memo, deferred: list[str | int]
    ) -> None:
        self.now = now
        self._prefix = prefix
        self._program_script = program
        self._memo = memo
        self._deferred = deferred
        self._prompt = False
        self._args: list[str | int] = []
        #: how to turn each reply into its handle's value
        self._reads: list[tuple[Convert, Handle[Any] | None]] = []

    def _op(self, args: Sequence[str | int], convert: Convert, handle: Handle[T] | None) -> None:
        self._args.extend(args)
        self._reads.append((convert, handle))

    def _window(self, key: str, window: int) -> tuple[list[str], int]:
        keys, length = bucket_keys(self._prefix + key, self.now, window)
        ttl = (self.now // length + BUCKETS) * length - self.now + 60
        return keys, ttl

    def _ttl(self, full: str, ttl: int, *, refresh: int | None = None) -> int:
        """The expiry to set on ``full``: 0 when this process set one already (and, with
        ``refresh``, less than that many seconds ago)."""
        if self._memo.expiring.get(full, -1) > self.now:
            return 0
        self._memo.expiring[full] = self.now + (refresh if refresh is not None else ttl)
        return max(1, ttl)

    def distinct(self, key: str, members: Sequence[str], window: int) -> Handle[int]:
        keys, ttl = self._window(key, window)
        handle: Handle[int] = Handle()
        self._op(
            ["D", len(keys), *keys, self._ttl(keys[0], ttl), len(members), *members],
            int,
            handle,
        )
        return handle

    def distinct_count(self, key: str, window: int) -> Handle[int]:
        keys, _ = self._window(key, window)
        handle: Handle[int] = Handle()
        self._op(["R", len(keys), *keys], int, handle)
        return handle

    def incr(self, key: str, amount: int, ttl: int) -> Handle[int]:
        full = self._prefix + key
        handle: Handle[int] = Handle()
        self._op(["I", full, amount, self._ttl(full, ttl)], int, handle)
        return handle

    def remember(self, key: str, member: str, ttl: int) -> Handle[bool]:
        full = self._prefix + key
        handle: Handle[bool] = Handle()
        refresh = min(ttl, 86400)  # kept alive daily
        self._op(["S", full, member, self._ttl(full, ttl, refresh=refresh)], bool, handle)
        return handle

    def first(self, key: str, value: str, ttl: int) -> Handle[str | None]:
        full = self._prefix + key
        handle: Handle[str | None] = Handle()
        settled = self._memo.settled.get(full)
        if settled is not None and settled[1] > self.now:
            handle.set(settled[0])  # set before (by this process or another): its value
            return handle
        # Known to live at least until then (it was set at the earliest now).
        until = self.now + max(1, ttl) // 2

        def convert(reply: Any) -> str | None:
            held = _text(reply)
            self._memo.settled[full] = (value if held is None else held, until)
            return held

        self._op(["F", full, value, max(1, ttl)], convert, handle)
        return handle

    def claim(self, key: str, value: str, ttl: int) -> Handle[str | None]:
        handle: Handle[str | None] = Handle()
        backstop = max(1, ttl) + 86400  # Redis's own expiry, after the event-time end
        self._op(
            ["L", self._prefix + key, value, self.now, self.now + ttl, backstop], _text, handle
        )
        return handle

    def swap(self, key: str, value: str, ttl: int) -> Handle[str | None]:
        handle: Handle[str | None] = Handle()
        self._op(["X", self._prefix + key, value, max(1, ttl)], _text, handle)
        return handle

    def get(self, key: str) -> Handle[str | None]:
        handle: Handle[str | None] = Handle()
        self._op(["G", self._prefix + key], _text, handle)
        return handle

    def hgetall(self, key: str) -> Handle[dict[str, str]]:
        handle: Handle[dict[str, str]] = Handle()

        def convert(reply: Any) -> dict[str, str]:
            flat = [str(_text(v)) for v in (reply or [])]
            return dict(zip(flat[::2], flat[1::2], strict=True))

        self._op(["H", self._prefix + key], convert, handle)
        return handle

    def hset(self, key: str, fields: Mapping[str, str], ttl: int, *, prompt: bool = False) -> None:
        flat = [part for item in fields.items() for part in item]
        self._op(["P", self._prefix + key, max(1, ttl), len(flat), *flat], lambda r: None, None)
        self._prompt = self._prompt or prompt

    def execute(self) -> None:
        """Run what was queued. A batch of writes only (nothing waits for an answer: the
        last step of most events) is held back and sent first in the next batch, whose
        operations it precedes as it would have: the order, and so every answer, is the
        same, and most events cost one round trip instead of two. ``RedisState.flush``
        sends it before the consumer acknowledges its entries."""
        if not self._reads:
            return
        args, self._args = self._args, []
        reads, self._reads = self._reads, []
        prompt, self._prompt = self._prompt, False
        if not prompt and all(handle is None for _, handle in reads):
            self._deferred.extend(args)
            return
        self.send(args, reads)

    def send(self, args: list[str | int], reads: list[tuple[Convert, Handle[Any] | None]]) -> None:
        """Run the held-back writes, then ``args``; hand out the answers of ``reads``."""
        try:
            replies = self._program_script(keys=[], args=[*self._deferred, *args])
        except redis.RedisError as exc:
            self._memo.expiring.clear()
            self._memo.settled.clear()
            raise StoreUnavailable(f"anomaly state in Redis: {exc}") from exc
        if not isinstance(replies, list) or len(replies) < len(reads):
            raise StoreUnavailable(f"anomaly state in Redis: unexpected reply {replies!r:.200}")
        self._deferred.clear()
        # The held-back writes answer first (nothing); then one answer per read.
        answers = replies[len(replies) - len(reads) :]
        for (convert, handle), reply in zip(reads, answers, strict=True):
            value = convert(reply)
            if handle is not None:
                handle.set(value)
