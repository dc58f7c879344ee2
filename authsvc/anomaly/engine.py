"""Runs detectors over audit events and turns what they find into ``anomaly.alert`` events.

A detector is a pure function of (event, state) over event time. Its ``observe`` is a
generator: it queues operations on the event's ``Ops``, ``yield``s to have them run,
reads the answers, and may queue more and yield again; it reports with
``ops``-independent ``Finding``s through ``found``. The engine steps every detector in
lockstep, so one event costs one store round trip per step (almost always one), plus one
when something was found, to claim the alert: an alert is claimed per (detector, entity,
window key) for the detector's window, so a burst gives one alert, never a flood.

Alert ids are derived from (detector, entity, triggering event), so processing an event
twice (a consumer killed mid-batch) never writes an alert twice, and a replay of the
same events gives the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from authsvc.anomaly.state import Handle, Ops, State
from authsvc.anomaly.view import EventView, Networks, view_of
from authsvc.audit.schema import SCHEMA

__all__ = ["ALERT_TYPE", "OPEN_ALERT", "Detector", "Engine", "Finding", "alert_id"]

ALERT_TYPE = "anomaly.alert"
#: State key (under the state's prefix, ``{prefix}anomaly:``) of a principal's open alert.
OPEN_ALERT = "open:"

Severity = Literal["page", "signal"]
Found = Callable[["Finding"], None]


@dataclass(frozen=True)
class Finding:
    entity: str
    #: How long this (detector, entity[, key]) stays alerted: later findings within it
    #: are the same alert. Also the alert's window (it ends at the triggering event).
    window: int
    evidence: Mapping[str, Any]
    #: Distinguishes alerts of one entity that are different findings (a repository).
    key: str = ""
    severity: Severity | None = None
    event_ids: Sequence[str] = field(default=())
    #: Other (entity, key) pairs of the same detector this alert stands for: they are
    #: claimed with it, so the same attack seen at a coarser grain is not alerted again.
    covers: Sequence[tuple[str, str]] = field(default=())
    #: The detector the finding is reported for, when not the one reporting it: of two
    #: detectors that join two events, the one that sees the second (in processing
    #: order) reports. Dropped when that detector is not running.
    detector: str = ""


class Detector(Protocol):
    name: str
    severity: Severity

    def observe(self, view: EventView, ops: Ops, found: Found) -> Iterator[None]:
        """Queue operations, ``yield`` to run them, report findings with ``found``."""


def alert_id(detector: str, entity: str, key: str, trigger: str, time_ms: int) -> str:
    """A UUIDv7-shaped id: the trigger's milliseconds, then bits of a hash."""
    digest = hashlib.sha256(f"{detector}\0{entity}\0{key}\0{trigger}".encode()).digest()
    rand = int.from_bytes(digest[:10], "big")
    value = (time_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (rand >> 68) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class Engine:
    """Detectors over events, with their state; ``process`` returns the new alerts."""

    def __init__(self, detectors: Sequence[Detector], state: State, networks: Networks) -> None:
        self.detectors = list(detectors)
        self._state = state
        self._networks = networks

    def flush(self) -> None:
        """Send the state's held-back writes (before the processed events are acked)."""
        self._state.flush()

    def process(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        view = view_of(event, self._networks)
        if view is None:
            return []
        ops = self._state.begin(view.now)
        findings: list[tuple[Detector, Finding]] = []
        running: list[tuple[Detector, Iterator[None]]] = []
        for detector in self.detectors:
            steps = detector.observe(
                view,
                ops,
                lambda f, d=detector: findings.append((d, f)),  # type: ignore[misc]
            )
            running.append((detector, steps))
        while running:
            still: list[tuple[Detector, Iterator[None]]] = []
            for detector, steps in running:
                if next(steps, _DONE) is not _DONE:
                    still.append((detector, steps))
            ops.execute()
            running = still
        if not findings:
            return []
        return self._claim(view, ops, self._attributed(findings))

    def _attributed(
        self, findings: list[tuple[Detector, Finding]]
    ) -> list[tuple[Detector, Finding]]:
        """Each finding with the detector it is for (``Finding.detector``)."""
        out: list[tuple[Detector, Finding]] = []
        for reporter, finding in findings:
            if not finding.detector or finding.detector == reporter.name:
                out.append((reporter, finding))
                continue
            named = next((d for d in self.detectors if d.name == finding.detector), None)
            if named is not None:
                out.append((named, finding))
        return out

    def _claim(
        self, view: EventView, ops: Ops, findings: list[tuple[Detector, Finding]]
    ) -> list[dict[str, Any]]:
        claims: list[tuple[Detector, Finding, str, Handle[str | None]]] = []
        for detector, finding in findings:
            alert = alert_id(
                detector.name, finding.entity, finding.key, view.event_id, view.time_ms
            )
            key = f"alerted:{detector.name}:{finding.entity}:{finding.key}"
            claims.append((detector, finding, alert, ops.claim(key, alert, finding.window)))
            for entity, extra in finding.covers:
                ops.claim(f"alerted:{detector.name}:{entity}:{extra}", alert, finding.window)
            if view.principal is not None:
                # The principal has an open alert for the window: rules may shorten the
                # tokens it gets meanwhile (``open_alert_token_ttl``).
                ops.hset(
                    OPEN_ALERT + view.principal,
                    {"until": str(view.now + finding.window), "detector": detector.name},
                    finding.window,
                )
        ops.execute()
        alerts: list[dict[str, Any]] = []
        for detector, finding, alert, held in claims:
            if held.value is not None and held.value != alert:
                continue  # this (detector, entity) is alerted for this window already
            severity = finding.severity or detector.severity
            alerts.append(
                {
                    "schema": SCHEMA,
                    "event_id": alert,
                    "time": view.time_ms,
                    "type": ALERT_TYPE,
                    "outcome": "success",
                    "reason": detector.name.upper(),
                    "alert": {
                        "detector": detector.name,
                        "severity": severity,
                        "entity": finding.entity,
                        "window": {
                            "start": view.time_ms - finding.window * 1000,
                            "end": view.time_ms,
                        },
                        "evidence": dict(finding.evidence),
                        "event_ids": list(finding.event_ids or (view.event_id,)),
                        **({"principal": view.principal} if view.principal else {}),
                    },
                }
            )
        return alerts


_DONE: Any = object()
