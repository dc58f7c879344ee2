"""Audit events: one per decision, never a password or a raw token.

This module holds the sink interface and the default sink, which writes each event as
one JSON line to the ``authsvc.audit`` logger. An event is recorded before the token
is returned; a sink that raises fails the request (no decision goes unrecorded).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["AuditLog", "LoggingAuditLog", "MemoryAuditLog", "new_event_id"]


def new_event_id() -> str:
    return str(uuid.uuid4())


class AuditLog(Protocol):
    def record(self, event: Mapping[str, Any]) -> None:
        """Accept the event durably or raise."""


class LoggingAuditLog:
    """Writes each event as one JSON line to a logger (stderr under ``authsvc serve``)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("authsvc.audit")

    def record(self, event: Mapping[str, Any]) -> None:
        self._logger.info(json.dumps(event, sort_keys=True, separators=(",", ":")))


class MemoryAuditLog:
    """Keeps events in a list; for tests and for embedding."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def record(self, event: Mapping[str, Any]) -> None:
        self.events.append(dict(event))
