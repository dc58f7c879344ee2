"""The embedded store: one process, its threads, one lock.

It keeps the same contract as the Redis store (``tests/unit/store`` checks both):

- a session is live while ``now < expires_at``; once a call with a later ``now`` has
  seen it dead (``use_session``, ``list_sessions``) it is gone for good, as Redis
  deletes it in the same situation;
- a claim lasts until ``expires_at`` on the real clock (Redis ``EXAT``); one whose
  ``expires_at`` is already past lasts one second, as ``SET ... EX 1`` does.

Memory stays bounded: every ``_SWEEP_EVERY`` writes, dead claims (by ``time.time()``)
and dead sessions (by the latest ``now`` a caller passed in) are dropped.

The audit stream is a list of ``(stream id, JSON text)`` with ids ``"<ms>-<seq>"`` from
``time.time()`` (increasing even if the clock steps back, as Redis does), trimmed
exactly: to the newest ``max_len`` entries and to ids at or after ``min_time_ms``. Seen
event ids are remembered for the same time as in Redis, but at most the newest
``max(max_len, _SEEN_MIN)`` of them, so memory stays bounded under any load.

Backoff counters live until ``now`` passes both their window and their wait; the sweep
drops the ones dead at the latest ``now`` a caller passed in.
"""

from __future__ import annotations

import bisect
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authsvc.store import AUDIT_SEEN_TTL, AuditEntry, BackoffState, SessionRecord

__all__ = [
    "MAX_DOUBLINGS",
    "MemoryStore",
    "audit_seen_ttl",
    "backoff_delay",
    "check_audit_limits",
    "check_backoff_limits",
    "check_record",
    "encode_audit_events",
    "parse_stream_id",
]

#: Writes between two full sweeps of dead entries (amortised O(1) per write).
_SWEEP_EVERY = 1024
#: The fewest event ids the memory store remembers for idempotent appends.
_SEEN_MIN = 100_000
#: Trimmed audit entries kept at the head of the list before it is compacted.
_COMPACT_AFTER = 1024


#: Past this many doublings every wait is ``max_delay`` (no huge powers of two).
MAX_DOUBLINGS = 40


@dataclass(slots=True)
class _Session:
    fields: dict[str, str]
    index: str
    expires_at: int


@dataclass(slots=True)
class _Counter:
    failures: int
    #: The window's end: failures before it count, the first one after opens a new one.
    reset_at: int
    wait_until: int


class MemoryStore:
    """A thread-safe in-process ``Store`` (``memory://``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Claim key -> (when it lapses, in float seconds on the real clock; its value).
        self._claims: dict[str, tuple[float, str]] = {}
        self._sessions: dict[str, _Session] = {}
        self._configs: dict[str, str] = {}
        self._indexes: dict[str, set[str]] = {}
        self._counters: dict[str, _Counter] = {}
        #: principal -> (detector, until): open anomaly alerts.
        self._open_alerts: dict[str, tuple[str, int]] = {}
        #: The latest ``now`` seen from a caller: sessions dead at it are swept.
        self._latest_now = 0
        self._writes = 0
        # The audit stream: parallel lists of (ms, seq) keys and (id, JSON) entries,
        # live from ``_audit_head`` on (the trimmed head is compacted away in bulk).
        self._audit_keys: list[tuple[int, int]] = []
        self._audit_entries: list[tuple[str, str]] = []
        self._audit_head = 0
        self._audit_last = (0, -1)
        #: event id -> until when (wall seconds) it counts as seen; oldest first.
        self._audit_seen: OrderedDict[str, float] = OrderedDict()

    def ping(self) -> None:
        return None

    def claim_once(self, key: str, expires_at: int) -> bool:
        return self.claim_value(key, "1", expires_at) is None

    def claim_value(self, key: str, value: str, expires_at: int) -> str | None:
        wall = time.time()
        with self._lock:
            held = self._claims.get(key)
            if held is not None and held[0] > wall:
                return held[1]
            self._claims[key] = (expires_at if expires_at > wall else wall + 1, value)
            self._wrote(wall)
            return None

    def put_session(
        self, session_id: str, record: Mapping[str, str], *, index: str, expires_at: int
    ) -> None:
        fields = check_record(record)
        with self._lock:
            self._drop(session_id)
            self._sessions[session_id] = _Session(fields, index, expires_at)
            self._indexes.setdefault(index, set()).add(session_id)
            self._wrote(time.time())

    def use_session(self, session_id: str, now: int) -> SessionRecord | None:
        with self._lock:
            self._latest_now = max(self._latest_now, now)
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if session.expires_at <= now:
                self._drop(session_id)
                return None
            session.fields["last_used"] = str(now)
            return _public(session_id, session)

    def delete_session(self, session_id: str) -> bool:
        with self._lock:
            return self._drop(session_id)

    def list_sessions(self, index: str, now: int) -> list[SessionRecord]:
        with self._lock:
            self._latest_now = max(self._latest_now, now)
            live: list[tuple[int, str, _Session]] = []
            for session_id in list(self._indexes.get(index, ())):
                session = self._sessions[session_id]
                if session.expires_at <= now:
                    self._drop(session_id)
                else:
                    live.append((session.expires_at, session_id, session))
            # Redis returns an index in score order (expires_at, then id): so do we.
            live.sort(key=lambda item: (item[0], item[1]))
            return [_public(session_id, session) for _, session_id, session in live]

    def announce_config(self, writer: str, digest: str, now: int) -> None:
        with self._lock:
            self._configs[writer] = f"{digest}@{now}"

    def configs(self) -> dict[str, str]:
        with self._lock:
            return dict(self._configs)

    def append_audit(
        self, events: Sequence[Mapping[str, Any]], *, max_len: int, min_time_ms: int | None
    ) -> int:
        check_audit_limits(max_len, min_time_ms)
        batch = encode_audit_events(events)
        wall = time.time()
        now_ms = int(wall * 1000)
        seen_until = wall + audit_seen_ttl(min_time_ms, now_ms)
        with self._lock:
            self._forget_seen(wall, max(max_len, _SEEN_MIN))
            added = 0
            for event_id, text in batch:
                until = self._audit_seen.get(event_id)
                if until is not None and until > wall:
                    continue
                self._audit_seen[event_id] = seen_until
                self._audit_seen.move_to_end(event_id)
                last_ms, last_seq = self._audit_last
                key = (now_ms, 0) if now_ms > last_ms else (last_ms, last_seq + 1)
                self._audit_last = key
                self._audit_keys.append(key)
                self._audit_entries.append((f"{key[0]}-{key[1]}", text))
                added += 1
            self._trim_audit(max_len, min_time_ms)
            return added

    def read_audit(self, after: str = "0", count: int = 1000) -> list[AuditEntry]:
        start = parse_stream_id(after)
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        with self._lock:
            first = bisect.bisect_right(self._audit_keys, start, lo=self._audit_head)
            page = self._audit_entries[first : first + count]
        return [(stream_id, json.loads(text)) for stream_id, text in page]

    def audit_length(self) -> int:
        with self._lock:
            return len(self._audit_keys) - self._audit_head

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
        with self._lock:
            self._latest_now = max(self._latest_now, now)
            counter = self._counters.get(key)
            if counter is None:
                counter = self._counters[key] = _Counter(0, now + window, 0)
            elif now >= counter.reset_at:
                counter.failures, counter.reset_at = 0, now + window
            counter.failures += 1
            if counter.failures >= threshold:
                delay = backoff_delay(counter.failures - threshold, base_delay, max_delay)
                counter.wait_until = max(counter.wait_until, now + delay)
            self._wrote(time.time())
            return counter.wait_until if counter.wait_until > now else 0

    def backoff_state(self, key: str, now: int) -> BackoffState:
        with self._lock:
            self._latest_now = max(self._latest_now, now)
            counter = self._counters.get(key)
            if counter is None:
                return BackoffState(0, 0)
            return BackoffState(
                counter.failures if now < counter.reset_at else 0,
                counter.wait_until if counter.wait_until > now else 0,
            )

    def clear_failures(self, key: str) -> None:
        with self._lock:
            self._counters.pop(key, None)

    def open_alert(self, principal: str, now: int) -> str | None:
        with self._lock:
            held = self._open_alerts.get(principal)
        return held[0] if held is not None and held[1] > now else None

    def mark_open_alert(self, principal: str, detector: str, until: int) -> None:
        with self._lock:
            self._open_alerts[principal] = (detector, until)

    def close(self) -> None:
        return None

    # -- under the lock -------------------------------------------------------------

    def _drop(self, session_id: str) -> bool:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        members = self._indexes.get(session.index)
        if members is not None:
            members.discard(session_id)
            if not members:
                del self._indexes[session.index]
        return True

    def _forget_seen(self, wall: float, keep: int) -> None:
        seen = self._audit_seen
        while seen and (len(seen) >= keep or next(iter(seen.values())) <= wall):
            seen.popitem(last=False)

    def _trim_audit(self, max_len: int, min_time_ms: int | None) -> None:
        keys = self._audit_keys
        head = max(self._audit_head, len(keys) - max_len)
        if min_time_ms is not None:
            head = bisect.bisect_left(keys, (min_time_ms, 0), lo=head)
        self._audit_head = head
        if head > _COMPACT_AFTER and head * 2 > len(keys):
            del keys[:head]
            del self._audit_entries[:head]
            self._audit_head = 0

    def _wrote(self, wall: float) -> None:
        self._writes += 1
        if self._writes % _SWEEP_EVERY:
            return
        self._claims = {k: held for k, held in self._claims.items() if held[0] > wall}
        dead = [s for s, rec in self._sessions.items() if rec.expires_at <= self._latest_now]
        for session_id in dead:
            self._drop(session_id)
        self._counters = {
            key: counter
            for key, counter in self._counters.items()
            if max(counter.reset_at, counter.wait_until) > self._latest_now
        }


def check_record(record: Mapping[str, str]) -> dict[str, str]:
    """A copy of a caller's record, refusing the field names the stores reserve.

    ``id`` is added to every record handed back; names starting with ``_`` hold the
    stores' own bookkeeping (``_index``, ``_expires_at`` in Redis). Shared with
    ``authsvc.store.redis`` so both refuse exactly the same records.
    """
    reserved = sorted(name for name in record if name == "id" or name.startswith("_"))
    if reserved:
        raise ValueError(f"session record uses reserved field names: {', '.join(reserved)}")
    return dict(record)


def _public(session_id: str, session: _Session) -> SessionRecord:
    """A copy the caller may keep: its fields plus ``id``."""
    return {**session.fields, "id": session_id}


_STREAM_ID = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")


def parse_stream_id(text: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` (or ``"<ms>"``, meaning ``<ms>-0``) as a pair; ValueError else."""
    match = _STREAM_ID.fullmatch(text)
    if match is None:
        raise ValueError(f"not an audit stream id: {text!r}")
    return int(match[1]), int(match[2] or 0)


def check_audit_limits(max_len: int, min_time_ms: int | None) -> None:
    """Refuse a ``max_len`` below 1 or a negative ``min_time_ms`` (both stores)."""
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, not {max_len}")
    if min_time_ms is not None and min_time_ms < 0:
        raise ValueError(f"min_time_ms must not be negative, not {min_time_ms}")


def encode_audit_events(events: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``(event_id, compact JSON)`` of each event; ValueError naming the first bad one.

    Shared with ``authsvc.store.redis``, so both stores refuse the same events and hand
    back the same JSON values.
    """
    batch: list[tuple[str, str]] = []
    for position, event in enumerate(events):
        event_id = event.get("event_id") if isinstance(event, Mapping) else None
        if not isinstance(event_id, str) or not event_id:
            raise ValueError(f"audit event {position} has no string event_id")
        line = getattr(event, "line", None)  # the chain's encoding (EncodedEvent)
        if isinstance(line, bytes):
            batch.append((event_id, line.decode("utf-8").rstrip("\n")))
            continue
        try:
            text = json.dumps(
                dict(event), separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"audit event {event_id} is not JSON: {exc}") from exc
        batch.append((event_id, text))
    return batch


def check_backoff_limits(window: int, threshold: int, base_delay: int, max_delay: int) -> None:
    """Refuse a backoff counter's limits below 1, or a ``max_delay`` under ``base_delay``."""
    for name, value in (
        ("window", window),
        ("threshold", threshold),
        ("base_delay", base_delay),
        ("max_delay", max_delay),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, not {value}")
    if max_delay < base_delay:
        raise ValueError(f"max_delay ({max_delay}) must not be shorter than base_delay")


def backoff_delay(doublings: int, base_delay: int, max_delay: int) -> int:
    """``min(max_delay, base_delay * 2**doublings)`` without building huge numbers.

    The Redis store's script computes the same (``MAX_DOUBLINGS`` is its cut-off too).
    """
    if doublings >= MAX_DOUBLINGS:
        return max_delay
    return min(max_delay, base_delay << doublings)


def audit_seen_ttl(min_time_ms: int | None, now_ms: int) -> int:
    """Seconds an appended event id is remembered: the retention window, else 7 days.

    The Redis store computes the same in its script, on the server's clock.
    """
    if min_time_ms is None:
        return AUDIT_SEEN_TTL
    return max(1, math.ceil((now_ms - min_time_ms) / 1000))
