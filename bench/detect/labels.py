"""The sidecar of an events file: the campaigns in it, and the named benign episodes.

``labels.json``::

    {"schema": "authsvc.bench.detect/1", "seed": 1, "days": 14,
     "window": {"start": ms, "end": ms}, "events": 151234, "benign_events": 141000,
     "runner_networks": ["10.20.0.0/16", "10.21.0.0/16"],
     "campaigns": [{"id": "slow_spray-1", "type": "slow_spray", "start": ms, "end": ms,
                    "expected": ["password_spray"], "description": "...",
                    "entities": {"ip": [...], "account": [...]}, "event_ids": [...]}],
     "patterns": [{"id": "typo-17", "pattern": "typo", "entity": "user:jsmith",
                   "start": ms, "end": ms, "event_ids": [...]}]}

A campaign's ``start`` and ``end`` are the times of its first and last event. Benign
events are all the others, routine ones included (only episodes a detector might
mistake for an attack are named as patterns).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA", "CampaignLabel", "Labels", "PatternLabel"]

SCHEMA = "authsvc.bench.detect/1"


@dataclass(frozen=True)
class CampaignLabel:
    id: str
    type: str
    start: int
    end: int
    expected: tuple[str, ...]
    description: str
    entities: Mapping[str, Sequence[str]]
    event_ids: tuple[str, ...]


@dataclass(frozen=True)
class PatternLabel:
    id: str
    pattern: str
    entity: str
    start: int
    end: int
    event_ids: tuple[str, ...]


@dataclass(frozen=True)
class Labels:
    seed: int
    days: int
    window_start: int
    window_end: int
    events: int
    runner_networks: tuple[str, ...]
    campaigns: tuple[CampaignLabel, ...]
    patterns: tuple[PatternLabel, ...]

    @property
    def benign_events(self) -> int:
        return self.events - sum(len(c.event_ids) for c in self.campaigns)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "seed": self.seed, "days": self.days,
            "window": {"start": self.window_start, "end": self.window_end},
            "events": self.events, "benign_events": self.benign_events,
            "runner_networks": list(self.runner_networks),
            "campaigns": [asdict(c) for c in self.campaigns],
            "patterns": [asdict(p) for p in self.patterns],
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Labels:
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} labels file (schema {data.get('schema')!r})")
        return cls(
            seed=int(data["seed"]), days=int(data["days"]),
            window_start=int(data["window"]["start"]), window_end=int(data["window"]["end"]),
            events=int(data["events"]),
            runner_networks=tuple(data["runner_networks"]),
            campaigns=tuple(
                CampaignLabel(
                    id=c["id"], type=c["type"], start=int(c["start"]), end=int(c["end"]),
                    expected=tuple(c["expected"]), description=c["description"],
                    entities={k: list(v) for k, v in c["entities"].items()},
                    event_ids=tuple(c["event_ids"]),
                )
                for c in data["campaigns"]
            ),
            patterns=tuple(
                PatternLabel(
                    id=p["id"], pattern=p["pattern"], entity=p["entity"],
                    start=int(p["start"]), end=int(p["end"]), event_ids=tuple(p["event_ids"]),
                )
                for p in data["patterns"]
            ),
        )

    @classmethod
    def read(cls, path: Path) -> Labels:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
