"""Audit events: one per decision, never a password or a raw token.

This module holds the sink interface and the default sink, which writes each event as
one line, ``authsvc.audit {json}``, to standard error (one ``write`` per event, then a
flush; no logging machinery on the token path). An event is recorded before the token
is returned; a sink that raises fails the request (no decision goes unrecorded).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Mapping
from typing import Any, Protocol, TextIO

from authsvc.audit.schema import uuid7

__all__ = ["AuditLog", "MemoryAuditLog", "StreamAuditLog", "new_event_id"]


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def new_event_id() -> str:
    """A UUIDv7: time-ordered, so exports and streams sort by it."""
    return uuid7()


class AuditLog(Protocol):
    def record(self, event: Mapping[str, Any]) -> None:
        """Accept the event durably or raise."""


class StreamAuditLog:
    """Writes ``authsvc.audit {json}`` lines to a text stream (stderr by default)."""

    PREFIX = "authsvc.audit "

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def record(self, event: Mapping[str, Any]) -> None:
        line = self.PREFIX + _ENCODER.encode(event) + "\n"
        stream = self._stream or sys.stderr
        with self._lock:
            stream.write(line)
            stream.flush()


class MemoryAuditLog:
    """Keeps events in a list; for tests and for embedding."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def record(self, event: Mapping[str, Any]) -> None:
        self.events.append(dict(event))
