"""The production store: one Redis shared by every worker and host.

Key layout (everything under ``prefix``, ``authsvc:`` by default)::

    {prefix}once:{key}               string "1", EXAT expires_at       claim_once
    {prefix}session:{id}             hash: caller's fields, last_used,  put/use/delete
                                     _index, _expires_at; EXPIREAT expires_at
    {prefix}sessions-index:{index}   sorted set id -> expires_at;      list_sessions
                                     EXPIREAT the latest member's expires_at

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

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from authsvc.errors import StoreUnavailable
from authsvc.store import SessionRecord
from authsvc.store.memory import check_record

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


class RedisStore:
    """A ``Store`` on Redis (``redis://``, ``rediss://``, ``unix://``)."""

    def __init__(self, client: redis.Redis[str], *, prefix: str, address: str) -> None:
        """Use ``client`` (built with ``decode_responses=True``); ``address`` names it
        in error messages and must not carry credentials."""
        self._client = client
        self._address = address
        self._once = f"{prefix}once:"
        self._session = f"{prefix}session:"
        self._index = f"{prefix}sessions-index:"
        self._configs = f"{prefix}configs"
        self._use_script = client.register_script(_USE_SESSION)
        self._claim_script = client.register_script(_CLAIM)
        self._delete_script = client.register_script(_DELETE_SESSION)
        self._list_script = client.register_script(_LIST_SESSIONS)

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
            pipe.hset(key, mapping=fields)
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

    def close(self) -> None:
        with self._guard():
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


def _address(client: redis.Redis[str]) -> str:
    """``host:port`` or the socket path: enough to find the server, no credentials."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
