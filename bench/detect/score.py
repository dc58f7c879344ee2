"""Scoring one seed's alerts against its labels.

    python bench/detect/score.py --labels labels.json --alerts alerts.jsonl

A campaign is **detected** by an alert that names one of the campaign's events in
``alert.event_ids`` and whose time lies within [campaign start, campaign end + 15 min];
its time to detect is the alert's time minus the campaign's start. An alert is
**false** when none of its event ids belongs to a campaign (an alert naming no event
at all is false too); an alert on campaign events outside that window is **late**
(neither a detection nor false). A false alert is attributed to the benign patterns
(``labels.json``) its events belong to, or to ``routine`` traffic.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)  # `bench.*` when run as bench/detect/score.py

from bench.detect.labels import Labels  # noqa: E402

__all__ = ["GRACE_MS", "CampaignResult", "FalseAlert", "SeedScore", "describe_events", "score"]

#: How long after a campaign's last event an alert still counts as detecting it.
GRACE_MS = 15 * 60 * 1000


@dataclass
class CampaignResult:
    id: str
    type: str
    description: str
    expected: tuple[str, ...]
    start: int
    #: detector -> earliest time to detect (ms), for every detector that detected it
    detected_by: dict[str, int] = field(default_factory=dict)
    #: detector -> alerts on its events outside the window
    late: Counter[str] = field(default_factory=Counter)

    @property
    def detected(self) -> bool:
        return bool(self.detected_by)

    @property
    def time_to_detect(self) -> int | None:
        return min(self.detected_by.values()) if self.detected_by else None


@dataclass(frozen=True)
class FalseAlert:
    detector: str
    severity: str
    entity: str
    time: int
    evidence: Mapping[str, Any]
    event_ids: tuple[str, ...]
    patterns: tuple[str, ...]  # pattern names of its events; empty: routine traffic


@dataclass
class SeedScore:
    seed: int
    events: int
    benign_events: int
    campaigns: list[CampaignResult]
    false_alerts: list[FalseAlert]
    #: detector -> severity -> alerts (all of them)
    alerts: dict[str, Counter[str]]


def read_alerts(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            event = json.loads(line)
            if not isinstance(event, dict) or not isinstance(event.get("alert"), dict):
                raise ValueError(f"{path} line {number}: not an anomaly.alert event")
            yield event


def score(labels: Labels, alerts: Iterable[Mapping[str, Any]]) -> SeedScore:
    owner: dict[str, int] = {}
    for index, campaign in enumerate(labels.campaigns):
        for event_id in campaign.event_ids:
            owner[event_id] = index
    pattern_of: dict[str, str] = {}
    for pattern in labels.patterns:
        for event_id in pattern.event_ids:
            pattern_of[event_id] = pattern.pattern
    results = [
        CampaignResult(c.id, c.type, c.description, c.expected, c.start)
        for c in labels.campaigns
    ]
    false_alerts: list[FalseAlert] = []
    counts: dict[str, Counter[str]] = {}
    for event in alerts:
        alert = event["alert"]
        detector, severity = str(alert.get("detector")), str(alert.get("severity"))
        counts.setdefault(detector, Counter())[severity] += 1
        time = int(event["time"])
        ids = tuple(str(i) for i in alert.get("event_ids") or ())
        hit = {owner[i] for i in ids if i in owner}
        if not hit:
            false_alerts.append(FalseAlert(
                detector, severity, str(alert.get("entity")), time,
                alert.get("evidence") or {}, ids,
                tuple(sorted({pattern_of[i] for i in ids if i in pattern_of})),
            ))
            continue
        for index in hit:
            campaign, result = labels.campaigns[index], results[index]
            if campaign.start <= time <= campaign.end + GRACE_MS:
                ttd = time - campaign.start
                best = result.detected_by.get(detector)
                result.detected_by[detector] = ttd if best is None else min(best, ttd)
            else:
                result.late[detector] += 1
    return SeedScore(labels.seed, labels.events, labels.benign_events, results,
                     false_alerts, counts)


def describe_events(events_path: Path, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """A short account of the wanted events (who, from where, with what, what came of
    it), read from the events file in one pass."""
    found: dict[str, dict[str, Any]] = {}
    if not wanted:
        return found
    prefix = len('{"schema":"authsvc.audit/1","event_id":"')
    with events_path.open(encoding="utf-8") as lines:
        for line in lines:
            if line[prefix:prefix + 36] not in wanted:
                continue
            event = json.loads(line)
            actor = event.get("actor") or {}
            found[event["event_id"]] = {
                "time": event["time"],
                "who": actor.get("account") or actor.get("username"),
                "kind": actor.get("kind"),
                "credential": actor.get("credential"),
                "ip": (event.get("client") or {}).get("ip"),
                "user_agent": (event.get("client") or {}).get("user_agent"),
                "reason": event.get("reason"),
                "scopes": (event.get("request") or {}).get("scopes"),
            }
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--alerts", type=Path, required=True)
    args = parser.parse_args(argv)
    result = score(Labels.read(args.labels), read_alerts(args.alerts))
    detected = sum(c.detected for c in result.campaigns)
    print(f"seed {result.seed}: {detected}/{len(result.campaigns)} campaigns detected, "
          f"{len(result.false_alerts)} false alerts over {result.benign_events} benign events")
    for c in result.campaigns:
        state = ", ".join(f"{d} +{ms // 1000}s" for d, ms in sorted(c.detected_by.items()))
        print(f"  {c.id:<24} {state or 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
