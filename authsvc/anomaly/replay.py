"""``authsvc detect replay``: the detectors over an exported audit log, on a fresh
in-memory state, deterministically (the same input gives byte-identical output)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from authsvc.anomaly.detectors import build_detectors
from authsvc.anomaly.engine import Engine
from authsvc.anomaly.geo import open_geo
from authsvc.anomaly.settings import AnomalySettings
from authsvc.anomaly.state import MemoryState, State
from authsvc.anomaly.view import Networks

__all__ = ["ReplayError", "build_engine", "encode_alert", "read_events", "replay"]


class ReplayError(ValueError):
    """The input is not an audit log (names the line)."""


def build_engine(settings: AnomalySettings, state: State) -> Engine:
    networks = Networks(settings.networks, open_geo(settings.geo))
    return Engine(build_detectors(settings.detectors), state, networks)


def encode_alert(alert: Mapping[str, Any]) -> str:
    return json.dumps(alert, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def read_events(lines: Iterable[str], source: str = "input") -> Iterator[dict[str, Any]]:
    """Parse JSON Lines; blank lines are skipped, anything else not an object refused."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise ReplayError(f"{source} line {number}: not JSON: {exc}") from exc
        if not isinstance(event, dict):
            raise ReplayError(f"{source} line {number}: not a JSON object")
        yield event


def replay(
    events: Iterable[Mapping[str, Any]],
    settings: AnomalySettings,
    write: Callable[[str], object],
) -> tuple[int, int]:
    """Write one JSON line per alert; return (events read, alerts written)."""
    engine = build_engine(settings, MemoryState())
    read = written = 0
    for event in events:
        read += 1
        for alert in engine.process(event):
            write(encode_alert(alert) + "\n")
            written += 1
    return read, written
