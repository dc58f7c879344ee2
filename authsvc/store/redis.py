"""The production store: one Redis shared by every worker and host.

Key layout (everything under ``prefix``, ``authsvc:`` by default)::

    {prefix}once:{key}               string "1", EXAT expires_at       claim_once
    {prefix}session:{id}             hash: caller's fields, last_used,  put/use/delete
                                     _index, _expires_at; EXPIREAT expires_at
    {prefix}sessions-index:{index}   sorted set id -> expires_at;      list_sessions
                                     EXPIREAT the latest member's expires_at
    {prefix}audit                    stream, one field ``event`` (JSON) append/read_audit
    {prefix}audit-seen:{event_id}    string "1", EX the retention window  append_audit
                                     (or AUDIT_SEEN_TTL): idempotent appends
    {prefix}backoff:{key}            hash failures, reset_at,            note_failure,
                                     wait_until; EXPIRE until both the   backoff_state,
                                     window and the wait are over        clear_failures

``append_audit`` is one script per batch. For each event it checks the seen key, and
only if it is absent XADDs the event (``MAXLEN ~ max_len``) and then sets the seen key:
a command that fails stops the script before the event counts as seen, so a retry
appends it. ``MINID ~`` trimming (XADD takes one trim strategy) is one XTRIM at the end;
the seen keys' lifetime is computed from the server's ``TIME``, the clock stream ids use.

``note_failure`` is one script: read the counter, open a new window if the last one
closed, count, set the wait, and EXPIRE the key relative to the caller's ``now`` (so a
counter lives as long as its window or its wait, whatever the server's clock says).
``backoff_state`` is one HMGET, judged against ``now`` here as in the memory store.

Every method is one round trip: one command, one MULTI pipeline, or one Lua script
(the first call of a script after a Redis restart costs one extra SCRIPT LOAD).
``_index`` and ``_expires_at`` are bookkeeping and never leave this module. A session
is live while ``now < _expires_at``; a call that finds it dead deletes it, so a later
call with an earlier ``now`` does not bring it back (the memory store does the same).

The session and list scripts reach keys they derive from stored values (the index a
session belongs to, the sessions an index lists), which a Redis Cluster does not
allow across hash slots: on a cluster, put a hash tag in ``prefix`` (``{authsvc}:``).
``EXPIREAT ... NX``/``GT`` needs Redis 7.0 or later.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from authsvc.errors import StoreUnavailable
from authsvc.store import AUDIT_SEEN_TTL, AuditEntry, BackoffState, SessionRecord
from authsvc.store.audit_connection import AuditConnection
from authsvc.store.memory import (
    MAX_DOUBLINGS,
    check_audit_limits,
    check_backoff_limits,
    check_record,
    encode_audit_events,
    parse_stream_id,
)

__all__ = ["RedisStore"]

#: Seconds to connect and to wait for a reply before the request fails with 503.
SOCKET_TIMEOUT = 2.0
#: Ping a pooled connection idle for this long before using it (drops stale sockets).
HEALTH_CHECK_INTERVAL = 30

# KEYS[1] session hash. ARGV[1] now. Returns the hash as a flat list, or nil.
#: Claim a key for a value unless it is held; answer the holder's value (nil: ours now).
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EXAT', ARGV[2]) then
  return nil
end
return redis.call('GET', KEYS[1])
"""

_USE_SESSION = """
local expires_at = redis.call('HGET', KEYS[1], '_expires_at')
if not expires_at then return false end
if tonumber(expires_at) <= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return false
end
redis.call('HSET', KEYS[1], 'last_used', ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] session hash. ARGV[1] index key prefix, ARGV[2] session id. Returns 1 or 0.
_DELETE_SESSION = """
local index = redis.call('HGET', KEYS[1], '_index')
local existed = redis.call('DEL', KEYS[1])
if index then redis.call('ZREM', ARGV[1] .. index, ARGV[2]) end
return existed
"""

# KEYS[1] index sorted set. ARGV[1] now, ARGV[2] session key prefix, ARGV[3] index.
# Returns {id1, {field, value, ...}, id2, {...}, ...} in score order; deletes the dead
# sessions and drops members whose hash is gone or now belongs to another index.
_LIST_SESSIONS = """
local now = tonumber(ARGV[1])
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[2] .. id
  local fields = redis.call('HGETALL', key)
  local expires_at, index = nil, nil
  for i = 1, #fields, 2 do
    if fields[i] == '_expires_at' then expires_at = tonumber(fields[i + 1])
    elseif fields[i] == '_index' then index = fields[i + 1] end
  end
  if index ~= ARGV[3] or expires_at == nil then
    redis.call('ZREM', KEYS[1], id)
  elseif expires_at <= now then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], id)
  else
    out[#out + 1] = id
    out[#out + 1] = fields
  end
end
return out
"""

# KEYS[1] the stream, KEYS[2..n+1] the events' seen keys. ARGV[1] max_len, ARGV[2]
# min_time_ms or '', ARGV[3] seen TTL without min_time_ms, ARGV[4..n+3] the events' JSON.
# Returns how many events were appended.
_APPEND_AUDIT = """
local ttl = tonumber(ARGV[3])
local min_id = ARGV[2]
if min_id ~= '' then
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  ttl = math.max(1, math.ceil((now_ms - tonumber(min_id)) / 1000))
end
local added = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[i + 2])
    redis.call('SET', KEYS[i], '1', 'EX', ttl)
    added = added + 1
  end
end
if min_id ~= '' then
  redis.call('XTRIM', KEYS[1], 'MINID', '~', min_id)
end
return added
"""


# KEYS[1] the counter hash. ARGV[1] now, ARGV[2] window, ARGV[3] threshold,
# ARGV[4] base_delay, ARGV[5] max_delay, ARGV[6] doublings past which the wait is
# max_delay. Returns wait_until, or 0 when no wait is pending at now.
_NOTE_FAILURE = """
local now = tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'failures', 'reset_at', 'wait_until')
local failures = tonumber(state[1]) or 0
local reset_at = tonumber(state[2]) or 0
local wait_until = tonumber(state[3]) or 0
if now >= reset_at then
  failures = 0
  reset_at = now + tonumber(ARGV[2])
end
failures = failures + 1
local doublings = failures - tonumber(ARGV[3])
if doublings >= 0 then
  local delay = tonumber(ARGV[5])
  if doublings < tonumber(ARGV[6]) then
    delay = math.min(delay, tonumber(ARGV[4]) * 2 ^ doublings)
  end
  wait_until = math.max(wait_until, now + delay)
end
redis.call('HSET', KEYS[1], 'failures', failures, 'reset_at', reset_at,
           'wait_until', wait_until)
redis.call('EXPIRE', KEYS[1], math.max(reset_at, wait_until) - now)
if wait_until > now then return wait_until end
return 0
"""


class RedisStore:
    """A ``Store`` on Redis (``redis://``, ``rediss://``, ``unix://``)."""

    def __init__(self, client: redis.Redis, *, prefix: str, address: str) -> None:
        """Use ``client`` (built with ``decode_responses=True``); ``address`` names it
        in error messages and must not carry credentials."""
        self._client = client
        self._address = address
        self._once = f"{prefix}once:"
        self._session = f"{prefix}session:"
        self._index = f"{prefix}sessions-index:"
        self._configs = f"{prefix}configs"
        self._audit = f"{prefix}audit"
        self._audit_seen = f"{prefix}audit-seen:"
        self._backoff = f"{prefix}backoff:"
        # Written by the detectors (authsvc.anomaly.engine.OPEN_ALERT, RedisState's prefix).
        self._open_alert = f"{prefix}anomaly:open:"
        self._use_script = client.register_script(_USE_SESSION)
        self._claim_script = client.register_script(_CLAIM)
        self._delete_script = client.register_script(_DELETE_SESSION)
        self._list_script = client.register_script(_LIST_SESSIONS)
        self._append_audit_script = client.register_script(_APPEND_AUDIT)
        self._audit_connection = AuditConnection(client.connection_pool)
        self._note_failure_script = client.register_script(_NOTE_FAILURE)

    @classmethod
    def from_url(cls, url: str, *, prefix: str) -> RedisStore:
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            health_check_interval=HEALTH_CHECK_INTERVAL,
            # No silent replays: a retried SET NX whose first attempt landed would
            # refuse the very claimant that won. A failure is a 503 the client retries.
            retry=Retry(NoBackoff(), 0),
        )
        return cls(client, prefix=prefix, address=_address(client))

    def ping(self) -> None:
        with self._guard():
            self._client.ping()

    def claim_once(self, key: str, expires_at: int) -> bool:
        return self.claim_value(key, "1", expires_at) is None

    def claim_value(self, key: str, value: str, expires_at: int) -> str | None:
        # A claim already past its expiry still holds for a second, as in MemoryStore.
        expires_at = max(expires_at, int(time.time()) + 1)
        with self._guard():
            reply: object = self._claim_script(keys=[self._once + key], args=[value, expires_at])
        return None if reply is None else str(reply)

    def put_session(
        self, session_id: str, record: Mapping[str, str], *, index: str, expires_at: int
    ) -> None:
        # (typed for redis-py's hset, whose mapping keys may be str or bytes)
        fields: dict[str | bytes, str] = dict(check_record(record).items())
        fields["_index"] = index
        fields["_expires_at"] = str(expires_at)
        key, index_key = self._session + session_id, self._index + index
        with self._guard():
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(key, mapping=cast(Any, fields))
            pipe.expireat(key, expires_at)
            pipe.zadd(index_key, {session_id: expires_at})
            # The index lives as long as its longest-lived member: NX sets a first
            # expiry, GT only ever pushes it later.
            pipe.expireat(index_key, expires_at, nx=True)
            pipe.expireat(index_key, expires_at, gt=True)
            pipe.execute()

    def use_session(self, session_id: str, now: int) -> SessionRecord | None:
        with self._guard():
            reply: object = self._use_script(keys=[self._session + session_id], args=[now])
        if reply is None:
            return None
        return self._record(session_id, reply)

    def delete_session(self, session_id: str) -> bool:
        with self._guard():
            reply: object = self._delete_script(
                keys=[self._session + session_id], args=[self._index, session_id]
            )
        return reply == 1

    def list_sessions(self, index: str, now: int) -> list[SessionRecord]:
        with self._guard():
            reply: object = self._list_script(
                keys=[self._index + index], args=[now, self._session, index]
            )
        if not isinstance(reply, list) or len(reply) % 2:
            raise self._unexpected(reply)
        return [self._record(str(reply[i]), reply[i + 1]) for i in range(0, len(reply), 2)]

    def announce_config(self, writer: str, digest: str, now: int) -> None:
        with self._guard():
            self._client.hset(self._configs, writer, f"{digest}@{now}")

    def configs(self) -> dict[str, str]:
        with self._guard():
            reply = self._client.hgetall(self._configs)
        return {str(k): str(v) for k, v in reply.items()}

    def append_audit(
        self, events: Sequence[Mapping[str, Any]], *, max_len: int, min_time_ms: int | None
    ) -> int:
        check_audit_limits(max_len, min_time_ms)
        batch = encode_audit_events(events)
        if not batch:
            return 0
        keys = [self._audit] + [self._audit_seen + event_id for event_id, _ in batch]
        args: list[str | int] = [
            max_len,
            "" if min_time_ms is None else min_time_ms,
            AUDIT_SEEN_TTL,
            *(text for _, text in batch),
        ]
        with self._guard():
            reply = self._audit_connection.run(self._append_audit_script, keys, args)
        if not isinstance(reply, int):
            raise self._unexpected(reply)
        return reply

    def read_audit(self, after: str = "0", count: int = 1000) -> list[AuditEntry]:
        parse_stream_id(after)
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        with self._guard():
            reply: object = self._client.xrange(self._audit, min="(" + after, count=count)
        if not isinstance(reply, list):
            raise self._unexpected(reply)
        entries: list[AuditEntry] = []
        for item in reply:
            try:
                stream_id, fields = item
                entries.append((str(stream_id), json.loads(fields["event"])))
            except (TypeError, ValueError, KeyError) as exc:
                raise self._unexpected(item) from exc
        return entries

    def audit_length(self) -> int:
        with self._guard():
            return self._client.xlen(self._audit)

    def note_failure(
        self,
        key: str,
        now: int,
        *,
        window: int,
        threshold: int,
        base_delay: int,
        max_delay: int,
    ) -> int:
        check_backoff_limits(window, threshold, base_delay, max_delay)
        args = [now, window, threshold, base_delay, max_delay, MAX_DOUBLINGS]
        with self._guard():
            reply: object = self._note_failure_script(keys=[self._backoff + key], args=args)
        if not isinstance(reply, int):
            raise self._unexpected(reply)
        return reply

    def backoff_state(self, key: str, now: int) -> BackoffState:
        with self._guard():
            reply: object = self._client.hmget(
                self._backoff + key, ["failures", "reset_at", "wait_until"]
            )
        if not isinstance(reply, list) or len(reply) != 3:
            raise self._unexpected(reply)
        try:
            failures, reset_at, wait_until = (0 if v is None else int(v) for v in reply)
        except ValueError as exc:
            raise self._unexpected(reply) from exc
        return BackoffState(
            failures if now < reset_at else 0, wait_until if wait_until > now else 0
        )

    def clear_failures(self, key: str) -> None:
        with self._guard():
            self._client.delete(self._backoff + key)

    def open_alert(self, principal: str, now: int) -> str | None:
        with self._guard():
            reply: object = self._client.hmget(self._open_alert + principal, ["until", "detector"])
        if not isinstance(reply, list) or len(reply) != 2:
            raise self._unexpected(reply)
        until, detector = reply
        if until is None or detector is None:
            return None
        try:
            return str(detector) if int(until) > now else None
        except ValueError as exc:
            raise self._unexpected(reply) from exc

    def mark_open_alert(self, principal: str, detector: str, until: int) -> None:
        key = self._open_alert + principal
        with self._guard():
            pipe = self._client.pipeline(transaction=True)
            pipe.hset(key, mapping={"until": str(until), "detector": detector})
            pipe.expireat(key, until + 60)
            pipe.execute()

    def close(self) -> None:
        with self._guard():
            self._audit_connection.close()
            self._client.close()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn any Redis failure into StoreUnavailable naming the server, not the URL."""
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"redis at {self._address} did not answer: {exc}") from exc
        except redis.RedisError as exc:
            raise StoreUnavailable(f"redis at {self._address} failed: {exc}") from exc

    def _record(self, session_id: str, flat: object) -> SessionRecord:
        """A flat ``[field, value, ...]`` hash reply as a record: bookkeeping out, id in."""
        if not isinstance(flat, list) or len(flat) % 2:
            raise self._unexpected(flat)
        pairs = zip(flat[::2], flat[1::2], strict=True)
        record = {str(k): str(v) for k, v in pairs if not str(k).startswith("_")}
        record["id"] = session_id
        return record

    def _unexpected(self, reply: object) -> StoreUnavailable:
        return StoreUnavailable(
            f"redis at {self._address} sent an unexpected reply ({type(reply).__name__})"
        )


def _address(client: redis.Redis) -> str:
    """``host:port`` or the socket path: enough to find the server, no credentials."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
