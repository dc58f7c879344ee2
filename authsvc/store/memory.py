"""The embedded store: one process, its threads, one lock.

It keeps the same contract as the Redis store (``tests/unit/store`` checks both):

- a session is live while ``now < expires_at``; once a call with a later ``now`` has
  seen it dead (``use_session``, ``list_sessions``) it is gone for good, as Redis
  deletes it in the same situation;
- a claim lasts until ``expires_at`` on the real clock (Redis ``EXAT``); one whose
  ``expires_at`` is already past lasts one second, as ``SET ... EX 1`` does.

Memory stays bounded: every ``_SWEEP_EVERY`` writes, dead claims (by ``time.time()``)
and dead sessions (by the latest ``now`` a caller passed in) are dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from authsvc.store import SessionRecord

__all__ = ["MemoryStore", "check_record"]

#: Writes between two full sweeps of dead entries (amortised O(1) per write).
_SWEEP_EVERY = 1024


@dataclass(slots=True)
class _Session:
    fields: dict[str, str]
    index: str
    expires_at: int


class MemoryStore:
    """A thread-safe in-process ``Store`` (``memory://``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Claim key -> (when it lapses, in float seconds on the real clock; its value).
        self._claims: dict[str, tuple[float, str]] = {}
        self._sessions: dict[str, _Session] = {}
        self._configs: dict[str, str] = {}
        self._indexes: dict[str, set[str]] = {}
        #: The latest ``now`` seen from a caller: sessions dead at it are swept.
        self._latest_now = 0
        self._writes = 0

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

    def _wrote(self, wall: float) -> None:
        self._writes += 1
        if self._writes % _SWEEP_EVERY:
            return
        self._claims = {k: held for k, held in self._claims.items() if held[0] > wall}
        dead = [s for s, rec in self._sessions.items() if rec.expires_at <= self._latest_now]
        for session_id in dead:
            self._drop(session_id)


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
