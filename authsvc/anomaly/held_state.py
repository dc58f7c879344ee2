"""Detector state held in one consumer's memory, checkpointed to Redis under a lease.

``anomaly.consumer_state: memory`` (the default). One consumer of the group at a time
holds the lease (``Lease``: ``SET NX PX``, renewed with every checkpoint) and with it
the detector state, as a ``HeldState``: the ``MemoryState`` that replay uses, exact
distinct counts included, so the live run finds what ``authsvc detect replay`` finds.
After every batch it writes a checkpoint: the entries it changed or dropped, and the id
of the last stream entry the state holds, in one script call that first checks the
lease is still its own (a consumer that lost it, paused past its lease, cannot
overwrite its successor's state). Only then are the batch's entries acknowledged.

A consumer that takes over loads the last checkpoint and claims every pending entry of
the group: those up to the checkpoint's entry are in the state already and are only
acknowledged, the others are processed, in stream order, before anything new. So each
event moves the state exactly once, however a holder died.

Keys, under ``{prefix}anomaly:held:{group}``::

    (the key itself)   hash: state key -> JSON [expires_at, kind, value]
    ...:at             the id of the last stream entry the state holds
    ...:owner          the lease: the holder's name and a nonce, with its expiry

A principal's open alert (``authsvc.anomaly.engine.OPEN_ALERT``), which the token path
reads, is also written where ``RedisState`` writes it, with each checkpoint.
"""

from __future__ import annotations

import json
import secrets
from contextlib import AbstractContextManager
from typing import Any

import redis

from authsvc.anomaly.engine import OPEN_ALERT
from authsvc.anomaly.state import MemoryState
from authsvc.anomaly.stream import guard
from authsvc.errors import StoreUnavailable

__all__ = ["HeldState", "Lease", "LeaseLost", "entry_order"]


class LeaseLost(Exception):
    """Another consumer holds the detector state now (the message says which)."""


def entry_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a sortable pair (``1700000000000-3`` -> (1700000000000, 3))."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


# KEYS[1] the lease. ARGV[1] the holder, ARGV[2] the lease's length (ms).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS[1] the lease.  ARGV[1] the holder.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] the lease, KEYS[2] the state hash, KEYS[3] its entry id. ARGV: the holder,
# the lease's length (ms), the entry id; the number of fields to set, then field and
# value each; the number of fields to delete, then each; the number of open alerts,
# then for each: its key, its lifetime (s), its number of fields, then field and value
# each. Commands take at most 1000 fields at a time (Lua's unpack has a limit).
_CHECKPOINT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local i = 4
local function each(command, width)
  local count = tonumber(ARGV[i])
  i = i + 1
  local chunk = {}
  for _ = 1, count do
    for w = 0, width - 1 do chunk[#chunk + 1] = ARGV[i + w] end
    i = i + width
    if #chunk >= 1000 then
      redis.call(command, KEYS[2], unpack(chunk))
      chunk = {}
    end
  end
  if #chunk > 0 then redis.call(command, KEYS[2], unpack(chunk)) end
end
each('HSET', 2)
each('HDEL', 1)
local alerts = tonumber(ARGV[i])
i = i + 1
for _ = 1, alerts do
  local key, ttl, count = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  local fields = {}
  for f = 1, 2 * count do fields[f] = ARGV[i + f - 1] end
  i = i + 2 * count
  if count > 0 then
    redis.call('HSET', key, unpack(fields))
    redis.call('EXPIRE', key, ttl)
  end
end
redis.call('SET', KEYS[3], ARGV[3])
return 1
"""


class Lease:
    """The right to hold a group's detector state, ``seconds`` long unless renewed."""

    def __init__(
        self, client: redis.Redis, *, prefix: str, group: str, consumer: str, seconds: float
    ) -> None:
        if seconds <= 0:
            raise ValueError(f"the lease must last a positive time, not {seconds}")
        self.key = f"{prefix}anomaly:held:{group}:owner"
        #: The consumer's name and a nonce: two processes given one name never share it.
        self.holder = f"{consumer}:{secrets.token_hex(4)}"
        self.ms = max(1, int(seconds * 1000))
        self._client = client
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self) -> bool:
        """Take the lease if nobody holds it (or renew it if we do); True if ours."""
        with _guard():
            if self._client.set(self.key, self.holder, nx=True, px=self.ms):
                return True
            return bool(self._renew(keys=[self.key], args=[self.holder, self.ms]))

    def renew(self) -> None:
        """Extend the lease; LeaseLost if it is not ours any more."""
        with _guard():
            if self._renew(keys=[self.key], args=[self.holder, self.ms]):
                return
        raise self.lost()

    def lost(self) -> LeaseLost:
        """The error for a lease that is not ours, naming who holds it now."""
        return LeaseLost(f"the lease is held by {self.current() or 'nobody'}")

    def release(self) -> None:
        """Let go at once (a stopping holder), so that another consumer takes over."""
        with _guard():
            self._release(keys=[self.key], args=[self.holder])

    def current(self) -> str | None:
        with _guard():
            value: Any = self._client.get(self.key)
        return None if value is None else str(value)


class HeldState(MemoryState):
    """A ``MemoryState`` that remembers what changed, for ``checkpoint``."""

    def __init__(self, client: redis.Redis, *, prefix: str, group: str) -> None:
        super().__init__()
        self.key = f"{prefix}anomaly:held:{group}"
        self._at_key = f"{self.key}:at"
        self._alert_prefix = f"{prefix}anomaly:"
        self._client = client
        self._checkpoint = client.register_script(_CHECKPOINT)
        #: The last stream entry the state holds (None: none yet).
        self.at: str | None = None
        self._changed: set[str] = set()
        self._alerts: dict[str, int] = {}  # open-alert keys changed -> lifetime (s)

    def put(self, key: str, expires_at: int, value: Any) -> None:
        self.data[key] = (expires_at, value)
        self._changed.add(key)
        if key.startswith(OPEN_ALERT):
            self._alerts[key] = max(1, expires_at - self.now)

    def drop(self, key: str) -> None:
        del self.data[key]
        self._changed.add(key)

    def holds(self, entry_id: str) -> bool:
        """True if the state has the entry's event in it already (processed before)."""
        return self.at is not None and entry_order(entry_id) <= entry_order(self.at)

    def clear(self) -> None:
        """Forget everything held (the lease is gone)."""
        self.data = {}
        self.at = None
        self._changed.clear()
        self._alerts.clear()

    def load(self) -> int:
        """Replace what is held with the last checkpoint; the number of entries."""
        data: dict[str, tuple[int, Any]] = {}
        with _guard():
            at: Any = self._client.get(self._at_key)
            cursor = 0
            while True:
                reply: Any = self._client.hscan(self.key, cursor, count=1000)
                cursor, page = reply
                for key, text in page.items():
                    data[str(key)] = _decode(str(key), text)
                if not cursor:
                    break
        self.clear()
        self.data = data
        self.at = None if at is None else str(at)
        return len(data)

    def checkpoint(self, lease: Lease, at: str) -> None:
        """Write what changed since the last checkpoint and ``at`` (the last entry now in
        the state), if the lease is still ours (renewing it); LeaseLost if not."""
        if self.at is not None and entry_order(at) < entry_order(self.at):
            at = self.at
        put: list[str | int] = []
        dropped: list[str] = []
        for key in self._changed:
            entry = self.data.get(key)
            if entry is None:
                dropped.append(key)
            else:
                put += [key, _encode(entry)]
        args: list[str | int] = [lease.holder, lease.ms, at, len(put) // 2, *put]
        args += [len(dropped), *dropped, len(self._alerts)]
        for key, ttl in self._alerts.items():
            entry = self.data.get(key)
            fields: dict[str, str] = entry[1] if entry is not None else {}
            args += [self._alert_prefix + key, ttl, len(fields)]
            for name, value in fields.items():
                args += [name, value]
        with _guard():
            reply: Any = self._checkpoint(keys=[lease.key, self.key, self._at_key], args=args)
        if reply != 1:
            raise lease.lost()
        self._changed.clear()
        self._alerts.clear()
        self.at = at


def _encode(entry: tuple[int, Any]) -> str:
    expires_at, value = entry
    if isinstance(value, set):
        kind, value = "set", sorted(value)
    elif isinstance(value, dict):
        kind = "hash"
    elif isinstance(value, int):
        kind = "int"
    else:
        kind, value = "str", str(value)
    return json.dumps([expires_at, kind, value], separators=(",", ":"))


def _decode(key: str, text: object) -> tuple[int, Any]:
    try:
        expires_at, kind, value = json.loads(str(text))
        if kind == "set":
            return int(expires_at), set(map(str, value))
        if kind == "hash":
            return int(expires_at), {str(k): str(v) for k, v in value.items()}
        if kind == "int":
            return int(expires_at), int(value)
        if kind == "str":
            return int(expires_at), str(value)
    except (ValueError, TypeError, AttributeError):
        pass
    raise StoreUnavailable(f"the detector state in Redis holds an unreadable entry: {key!r}")


def _guard() -> AbstractContextManager[None]:
    return guard("the detector state")
