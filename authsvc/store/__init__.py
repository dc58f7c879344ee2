"""The narrow storage interface, named by what the domain needs.

Two implementations keep the same contract (``tests/unit/store`` runs one suite
against both): ``memory://`` for a single embedded process and ``redis://`` for
production, where every worker and host shares the one Redis. Each method is one
round trip to Redis at most.

Records are flat ``dict[str, str]`` (a Redis hash); callers serialise richer values.
Times are integer Unix seconds passed in by the caller (``now``), never read from a
clock here, so tests drive expiry without sleeping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

__all__ = ["SessionRecord", "Store", "open_store"]

#: A stored session credential: its id plus the caller's fields.
SessionRecord = dict[str, str]


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
