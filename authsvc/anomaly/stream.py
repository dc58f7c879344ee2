"""The audit stream seen by a Redis Streams consumer group (``authsvc detect run``).

Keys, under the store's prefix (``authsvc:``)::

    {prefix}audit                          the audit stream (authsvc.store.redis): XGROUP,
                                           XREADGROUP, XACK, XAUTOCLAIM, XINFO
    {prefix}audit-seen:{event_id}          set by the store in the script that appends
                                           the event: "this event is in the stream"
    {prefix}anomaly:recording:{event_id}   the consumer recording that alert now
                                           (SET NX PX, deleted by its holder)

Recording an alert exactly once. Alert ids are derived from what triggered them, so two
consumers that process one event (a killed consumer's entries claimed while it was in
fact only slow, or a batch read again after a crash) produce the same alert. The store
would take the second copy as already there, but ``ChainedAuditLog`` would still have
given it a ``seq``, leaving a gap in that writer's chain. So ``begin_record`` looks,
in one script, whether the alert is in the stream already (``SEEN``) and otherwise
takes the recording lock (``OURS``), or answers ``BUSY`` while another consumer holds
it. The holder records the alert, then lets go (``end_record``); whoever comes next
finds it ``SEEN``. A holder that dies leaves the lock to expire (``lock_ms``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

import redis

from authsvc.errors import StoreUnavailable

__all__ = ["Backlog", "Entry", "GroupStream", "RecordState"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One stream entry: its id and event, or None when it holds no audit event."""

    id: str
    event: dict[str, Any] | None


class Backlog(NamedTuple):
    #: Entries delivered to a consumer of the group and not acknowledged.
    pending: int
    #: Entries not yet delivered to any consumer (None when Redis cannot tell).
    lag: int | None


class RecordState(StrEnum):
    SEEN = "seen"
    OURS = "ours"
    BUSY = "busy"


# KEYS[1] the alert's seen key, KEYS[2] its recording lock. ARGV[1] the consumer,
# ARGV[2] the lock's lifetime (ms).
_BEGIN_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 'seen' end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'ours' end
return 'busy'
"""

# KEYS[1] the recording lock. ARGV[1] the consumer: only its own lock is deleted.
_END_RECORD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class GroupStream:
    """One consumer (``consumer``) of a group (``group``) on the audit stream."""

    def __init__(self, client: redis.Redis, *, prefix: str, group: str, consumer: str) -> None:
        """``client`` decodes responses (``decode_responses=True``), and its socket
        timeout is longer than any ``block_ms`` passed to ``read``."""
        if not group or not consumer:
            raise ValueError("the consumer group and the consumer need names")
        self.group = group
        self.consumer = consumer
        self.key = f"{prefix}audit"
        self._seen = f"{prefix}audit-seen:"
        self._lock = f"{prefix}anomaly:recording:"
        self._client = client
        self._begin = client.register_script(_BEGIN_RECORD)
        self._end = client.register_script(_END_RECORD)

    def create_group(self, *, from_start: bool) -> bool:
        """Create the group (and the stream) unless it exists; True if created. A new
        group starts at the stream's end, or with ``from_start`` at its first entry."""
        with guard():
            try:
                self._client.xgroup_create(
                    self.key, self.group, id="0" if from_start else "$", mkstream=True
                )
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
                return False
        return True

    def read(self, count: int, block_ms: int | None = None, *, own: bool = False) -> list[Entry]:
        """New entries (waiting up to ``block_ms``), or with ``own`` the entries this
        consumer was given before and did not acknowledge (a restart under one name)."""
        with guard():
            reply: Any = self._client.xreadgroup(
                self.group, self.consumer, {self.key: "0" if own else ">"},
                count=count, block=None if own else block_ms,
            )  # fmt: skip
        if not reply:
            return []
        return [_entry(entry_id, fields) for entry_id, fields in reply[0][1]]

    def claim(self, min_idle_ms: int, count: int, start: str = "0-0") -> tuple[str, list[Entry]]:
        """Take up to ``count`` entries idle for ``min_idle_ms`` from other consumers
        (XAUTOCLAIM); the cursor to go on from ("0-0": done). Entries trimmed from the
        stream meanwhile are dropped from the pending list by Redis itself."""
        with guard():
            reply: Any = self._client.xautoclaim(
                self.key, self.group, self.consumer, min_idle_ms, start_id=start, count=count
            )
        cursor, entries = str(reply[0]), reply[1]
        return cursor, [_entry(entry_id, fields) for entry_id, fields in entries]

    def ack(self, ids: Sequence[str]) -> None:
        if ids:
            with guard():
                self._client.xack(self.key, self.group, *ids)

    def backlog(self) -> Backlog:
        with guard():
            groups: Any = self._client.xinfo_groups(self.key)
        for info in groups:
            if info.get("name") == self.group:
                lag = info.get("lag")
                return Backlog(int(info.get("pending") or 0), None if lag is None else int(lag))
        return Backlog(0, None)

    def forget_consumers(self, idle_ms: int) -> list[str]:
        """Remove consumers with nothing pending, idle for ``idle_ms``: the names of
        stopped processes (a live one is only recreated by its next read)."""
        forgotten: list[str] = []
        with guard():
            consumers: Any = self._client.xinfo_consumers(self.key, self.group)
            for info in consumers:
                name = str(info.get("name"))
                idle = int(info.get("idle") or 0)
                if name != self.consumer and not int(info.get("pending") or 0) and idle >= idle_ms:
                    self._client.xgroup_delconsumer(self.key, self.group, name)
                    forgotten.append(name)
        return forgotten

    def begin_record(self, event_id: str, lock_ms: int) -> RecordState:
        with guard():
            reply: object = self._begin(
                keys=[self._seen + event_id, self._lock + event_id], args=[self.consumer, lock_ms]
            )
        return RecordState(str(reply))

    def end_record(self, event_id: str) -> None:
        with guard():
            self._end(keys=[self._lock + event_id], args=[self.consumer])


def _entry(entry_id: object, fields: object) -> Entry:
    """Parse an entry; one that holds no JSON object (or was deleted) has no event."""
    event = None
    if isinstance(fields, dict) and isinstance(fields.get("event"), str):
        try:
            parsed = json.loads(fields["event"])
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            event = parsed
    return Entry(str(entry_id), event)


@contextmanager
def guard(what: str = "the audit stream") -> Iterator[None]:
    """Redis errors as StoreUnavailable, naming ``what`` was being read or written."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise StoreUnavailable(f"{what} in Redis did not answer: {exc}") from exc
    except redis.RedisError as exc:
        raise StoreUnavailable(f"{what} in Redis failed: {exc}") from exc

