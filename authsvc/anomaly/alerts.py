"""``authsvc detect alerts``: the ``anomaly.alert`` events of the audit trail, filtered."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from authsvc.anomaly.engine import ALERT_TYPE
from authsvc.anomaly.replay import encode_alert
from authsvc.audit.source import Filter

__all__ = ["AlertFilter", "jsonl_lines", "table_lines"]

_EVIDENCE_WIDTH = 60


@dataclass(frozen=True)
class AlertFilter:
    """Alerts in a time range (``when``: the audit ``Filter``'s ``since``/``until``)
    of one detector, entity and severity, each exactly, when given."""

    when: Filter = field(default_factory=Filter)
    detector: str | None = None
    entity: str | None = None
    severity: str | None = None

    def __call__(self, event: Mapping[str, Any]) -> bool:
        if event.get("type") != ALERT_TYPE or not self.when(event):
            return False
        alert = event.get("alert")
        if not isinstance(alert, dict):
            return False
        return all(
            wanted is None or alert.get(name) == wanted
            for name, wanted in (
                ("detector", self.detector),
                ("entity", self.entity),
                ("severity", self.severity),
            )
        )

    def apply(self, events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        return (event for event in events if self(event))


def jsonl_lines(alerts: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """One alert event a line, as recorded (chain members included)."""
    for alert in alerts:
        yield encode_alert(alert) + "\n"


def table_lines(alerts: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """A header, then one aligned line per alert: time (UTC), severity, detector,
    entity, the evidence (shortened) and the alert's event id."""
    yield f"{'TIME (UTC)':<20} {'SEVERITY':<8} {'DETECTOR':<20} {'ENTITY':<32} EVIDENCE / ID\n"
    for event in alerts:
        alert = event.get("alert") or {}
        when = dt.datetime.fromtimestamp(int(event.get("time") or 0) / 1000, dt.UTC)
        evidence = json.dumps(alert.get("evidence") or {}, sort_keys=True, separators=(",", ":"))
        if len(evidence) > _EVIDENCE_WIDTH:
            evidence = evidence[: _EVIDENCE_WIDTH - 3] + "..."
        yield (
            f"{when:%Y-%m-%d %H:%M:%S} {alert.get('severity', ''):<8} "
            f"{alert.get('detector', ''):<20} {alert.get('entity', ''):<32} "
            f"{evidence} {event.get('event_id', '')}\n"
        )
