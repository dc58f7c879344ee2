"""The configured audit pipeline: chain -> (spool ->) sink, and an optional stderr copy.

ChainedAuditLog      fills writer, seq and the hash chain; signs checkpoints
  SpoolingAuditLog   (on_failure: spool) local fsynced spool while the sink is down
    StoreAuditLog | FileAuditLog
(audit.stderr)       what the sink accepted, also as an ``authsvc.audit`` line
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from authsvc.audit import AuditLog, StreamAuditLog
from authsvc.audit.chain import ChainedAuditLog
from authsvc.audit.schema import writer_id
from authsvc.audit.sinks import BatchAuditLog, FileAuditLog, SpoolingAuditLog, StoreAuditLog
from authsvc.config import AuditSettings
from authsvc.store import Store
from authsvc.tokens import SigningKey

log = logging.getLogger(__name__)

__all__ = ["build_audit"]

DAY = 86400


class _MirroringSink:
    """A sink that also copies what it accepted (so the copy carries seq and hash)."""

    def __init__(self, sink: AuditLog, mirror: AuditLog) -> None:
        self._sink = sink
        self._mirror = mirror

    def record(self, event: Mapping[str, Any]) -> None:
        self.record_many([event])

    def record_many(self, events: Sequence[Mapping[str, Any]]) -> None:
        if isinstance(self._sink, BatchAuditLog):
            self._sink.record_many(events)
        else:  # (build_audit's sinks all have record_many)
            for event in events:
                self._sink.record(event)
        try:
            for event in events:
                self._mirror.record(event)
        except Exception:  # the sink has them: a failed copy must not fail (or resend) them
            log.warning(
                "the audit event was recorded but not copied to standard error", exc_info=True
            )


def build_audit(
    settings: AuditSettings, *, store: Store, signer: Callable[[], SigningKey]
) -> tuple[ChainedAuditLog, SpoolingAuditLog | None]:
    """The audit log to record into (``close`` it to seal its events with a last
    checkpoint), and the spool (for /readyz) when there is one."""
    sink: AuditLog
    if settings.sink == "redis":
        sink = StoreAuditLog(
            store,
            max_len=settings.redis.max_len,
            retention_seconds=settings.redis.retention_days * DAY,
        )
    else:
        settings.file.path.parent.mkdir(parents=True, exist_ok=True)
        sink = FileAuditLog(
            settings.file.path,
            max_bytes=settings.file.max_bytes,
            rotate_daily=settings.file.rotate_daily,
            fsync=settings.file.fsync,
        )
    spool = None
    if settings.on_failure == "spool":
        settings.spool.parent.mkdir(parents=True, exist_ok=True)
        sink = spool = SpoolingAuditLog(sink, settings.spool)
    if settings.stderr:
        sink = _MirroringSink(sink, StreamAuditLog())
    chained = ChainedAuditLog(
        sink,
        writer=writer_id(),
        signer=signer,
        checkpoint_every=settings.checkpoint_every,
        checkpoint_seconds=settings.checkpoint_seconds,
    )
    return chained, spool
