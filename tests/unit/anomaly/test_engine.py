"""The engine's attribution of a finding one detector reports for another."""

from __future__ import annotations

from collections.abc import Iterator

from authsvc.anomaly.engine import Detector, Engine, Finding, Found, Severity
from authsvc.anomaly.state import MemoryState, Ops
from authsvc.anomaly.view import EventView, Networks
from tests.unit.anomaly.events import T0, failure


class Reporter:
    """Reports every event for the detector named ``target``."""

    name = "reporter"
    severity: Severity = "signal"

    def __init__(self, target: str) -> None:
        self.target = target

    def observe(self, view: EventView, ops: Ops, found: Found) -> Iterator[None]:
        found(Finding(entity=f"ip:{view.ip}", window=60, evidence={}, detector=self.target))
        yield


class Target:
    name = "target"
    severity: Severity = "page"

    def observe(self, view: EventView, ops: Ops, found: Found) -> Iterator[None]:
        return iter(())  # finds nothing itself


def alerts(detectors: list[Detector]) -> list[tuple[str, str, str]]:
    engine = Engine(detectors, MemoryState(), Networks())
    out = engine.process(failure("alice", "203.0.113.9", T0))
    return [(a["alert"]["detector"], a["alert"]["severity"], a["reason"]) for a in out]


def test_a_finding_reported_for_another_detector_is_that_detectors_alert() -> None:
    assert alerts([Reporter("target"), Target()]) == [("target", "page", "TARGET")]


def test_a_finding_for_a_detector_that_is_not_running_is_dropped() -> None:
    assert alerts([Reporter("target")]) == []
    # naming itself (or no one) is the reporter's own alert
    assert alerts([Reporter("reporter")]) == [("reporter", "signal", "REPORTER")]
    assert alerts([Reporter("")]) == [("reporter", "signal", "REPORTER")]
