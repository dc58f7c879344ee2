"""The narrow storage interface, named by what the domain needs.

Two implementations keep the same contract (``tests/unit/store`` runs one suite
against both): ``memory://`` for a single embedded process and ``redis://`` for
production, where every worker and host shares the one Redis. Each method is one
round trip to Redis at most.

Records are flat ``dict[str, str]`` (a Redis hash); callers serialise richer values.
Times are integer Unix seconds passed in by the caller (``now``), never read from a
clock here, so tests drive expiry without sleeping. The audit stream is the exception:
its entry ids, like a Redis stream's, carry the store's own clock in milliseconds.

The audit stream (``append_audit``, ``read_audit``, ``audit_length``) keeps events in
the order they were accepted, each under a stream id ``"<ms>-<seq>"`` (increasing).
Appending is idempotent by ``event_id``: an id seen within the retention window
(``now - min_time_ms``, or ``AUDIT_SEEN_TTL`` without one) is not appended again, so a
sink may retry or replay a batch whose answer it never got. Trimming keeps at least
the newest ``max_len`` events and every event at or after ``min_time_ms``: the memory
store trims exactly; Redis trims approximately (``~``: whole stream nodes, so it may
keep up to ``stream-node-max-entries``, 100 by default, more than asked).

Backoff counters (``note_failure``, ``backoff_state``, ``clear_failures``) count failed
logins under an opaque key (the caller hashes what it counts). Failures are counted in a
fixed window that opens with the first failure; once ``threshold`` of them fell in it,
each failure sets ``wait_until = now + min(max_delay, base_delay * 2**(failures -
threshold))`` (a wait is never shortened). A counter is gone once ``now`` is past both
its window and its wait; Redis expires it then (a TTL from the caller's ``now``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

__all__ = [
    "AUDIT_SEEN_TTL",
    "AuditEntry",
    "BackoffState",
    "SessionRecord",
    "Store",
    "open_store",
]

#: A stored session credential: its id plus the caller's fields.
SessionRecord = dict[str, str]
#: One audit stream entry: its stream id (``"<ms>-<seq>"``) and the event.
AuditEntry = tuple[str, dict[str, Any]]
#: Seconds an appended ``event_id`` is remembered when no ``min_time_ms`` bounds it.
AUDIT_SEEN_TTL = 7 * 86400


class BackoffState(NamedTuple):
    """A backoff counter as seen at ``now``."""

    #: Failures counted in the window open at ``now`` (0 once it has closed).
    failures: int
    #: No attempt before this time (0: none pending at ``now``).
    wait_until: int


class Store(Protocol):
    """What authsvc keeps outside a process. Every failure raises StoreUnavailable."""

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` with the reason when the store cannot be reached."""

    def claim_once(self, key: str, expires_at: int) -> bool:
        """Claim ``key`` until ``expires_at``; True for the first claimant only (atomic)."""

    def claim_value(self, key: str, value: str, expires_at: int) -> str | None:
        """Claim ``key`` for ``value`` until ``expires_at`` (atomic, one round trip).

        Returns None when this call claimed it, else the value of whoever holds it, so a
        caller can tell "the same proof again" from "another proof with the same id".
        """

    def put_session(
        self, session_id: str, record: Mapping[str, str], *, index: str, expires_at: int
    ) -> None:
        """Keep a session record until ``expires_at``, listed under ``index``."""

    def use_session(self, session_id: str, now: int) -> SessionRecord | None:
        """Return the live record (``None`` if missing or expired) and set ``last_used``.

        Reading and stamping are one atomic step (one round trip).
        """

    def delete_session(self, session_id: str) -> bool:
        """Remove a session (and its index entry); True if it existed."""

    def list_sessions(self, index: str, now: int) -> list[SessionRecord]:
        """Live sessions under ``index``, each with its ``id`` field; prunes dead entries."""

    def announce_config(self, writer: str, digest: str, now: int) -> None:
        """Record which configuration (its hash) ``writer`` (host:pid) now serves."""

    def configs(self) -> dict[str, str]:
        """writer -> ``digest@time`` of every writer's last announced configuration."""

    def append_audit(
        self, events: Sequence[Mapping[str, Any]], *, max_len: int, min_time_ms: int | None
    ) -> int:
        """Append the events not seen before (by ``event_id``), in order, atomically;
        return how many were new. Then trim to ``max_len`` and drop entries older than
        ``min_time_ms`` (if given). ``ValueError`` for an event without a string
        ``event_id`` or that is not JSON; nothing is appended then."""

    def read_audit(self, after: str = "0", count: int = 1000) -> list[AuditEntry]:
        """Up to ``count`` entries with a stream id after ``after`` (exclusive), oldest
        first; pass the last id returned to read the next page."""

    def audit_length(self) -> int:
        """How many events the audit stream holds now."""

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
        """Count one failure under ``key`` (atomic, one round trip); return the time
        before which no attempt is allowed (0: none). ``window`` opens at the first
        failure; from the ``threshold``-th failure in it on, each failure doubles the
        wait from ``base_delay`` up to ``max_delay``."""

    def backoff_state(self, key: str, now: int) -> BackoffState:
        """The counter under ``key`` at ``now`` (``(0, 0)`` when there is none)."""

    def clear_failures(self, key: str) -> None:
        """Forget the counter under ``key`` (after a success)."""

    def open_alert(self, principal: str, now: int) -> str | None:
        """The detector of ``principal``'s anomaly alert open at ``now``, if any (written
        by the detectors' state under ``{prefix}anomaly:open:``; one round trip)."""

    def mark_open_alert(self, principal: str, detector: str, until: int) -> None:
        """Open an alert for ``principal`` until ``until`` (what the detectors write)."""

    def close(self) -> None:
        """Release connections."""


def open_store(url: str, *, prefix: str = "authsvc:") -> Store:
    """Open the store named by ``url`` (``memory://`` or ``redis://...``/``rediss://``)."""
    if url == "memory://" or url.startswith("memory://"):
        from authsvc.store.memory import MemoryStore

        return MemoryStore()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from authsvc.store.redis import RedisStore

        return RedisStore.from_url(url, prefix=prefix)
    raise ValueError(f"unsupported storage URL scheme in {url!r}: use memory:// or redis://")
