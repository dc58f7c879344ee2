"""Reading the audit trail back: from the JSON Lines files or the store, filtered.

Everything here streams: an export of millions of events holds one page (the store) or
one line (a file) at a time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authsvc.audit.verify import read_jsonl
from authsvc.config import Settings
from authsvc.errors import InvalidScope
from authsvc.scopes import parse_scope
from authsvc.store import Store

__all__ = ["Filter", "file_events", "live_events", "parse_when", "store_events"]

PAGE = 1000


def file_events(path: Path) -> Iterator[dict[str, Any]]:
    """The rotated files (``path.YYYYMMDD-HHMMSS``, oldest first), then the current one."""
    rotated = sorted(p for p in path.parent.glob(path.name + ".*") if p.suffix != ".lock")
    for part in [*rotated, path]:
        if part.exists():
            yield from read_jsonl(part)


def store_events(store: Store) -> Iterator[dict[str, Any]]:
    after = "0"
    while True:
        page = store.read_audit(after, PAGE)
        for stream_id, event in page:
            yield event
            after = stream_id
        if len(page) < PAGE:
            return


def live_events(settings: Settings, store: Store | None) -> Iterator[dict[str, Any]]:
    """The configured sink's events, oldest first: the store's audit stream
    (``audit.sink: redis``, read from ``store``) or the JSON Lines files."""
    if settings.audit.sink == "redis":
        if store is None:
            raise ValueError("audit.sink is redis: reading the audit trail needs the store")
        return store_events(store)
    return file_events(settings.audit.file.path)


def parse_when(text: str) -> int:
    """Milliseconds since the epoch from ISO 8601 (UTC if no zone) or epoch seconds."""
    if text.isdigit():
        return int(text) * 1000
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{text!r} is neither ISO 8601 nor seconds since the epoch") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class Filter:
    since_ms: int | None = None
    until_ms: int | None = None
    #: Matches the actor's subject, account or user name exactly.
    actor: str | None = None
    #: Matches events whose requested scopes name this repository.
    repository: str | None = None
    outcome: str | None = None

    def __call__(self, event: Mapping[str, Any]) -> bool:
        time_ms = event.get("time")
        if self.since_ms is not None and (not isinstance(time_ms, int) or time_ms < self.since_ms):
            return False
        if self.until_ms is not None and (not isinstance(time_ms, int) or time_ms >= self.until_ms):
            return False
        if self.outcome is not None and event.get("outcome") != self.outcome:
            return False
        if self.actor is not None:
            actor = event.get("actor") or {}
            names = {actor.get("subject"), actor.get("account"), actor.get("username")}
            if self.actor not in names:
                return False
        if self.repository is not None:
            scopes = (event.get("request") or {}).get("scopes") or []
            if self.repository not in _repositories(scopes):
                return False
        return True

    def apply(self, events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        return (event for event in events if self(event))


def _repositories(scopes: Iterable[object]) -> set[str]:
    names: set[str] = set()
    for value in scopes:
        for text in str(value).split():
            try:
                scope = parse_scope(text)
            except InvalidScope:
                continue
            if scope.type == "repository":
                names.add(scope.name)
    return names
