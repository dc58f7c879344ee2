"""Quality over several seeds: recall, false alerts per 10,000 benign events, time to
detect, per detector and per campaign type, against the targets.

Targets (per detector, by the severity it is configured with): a paging detector must
catch at least 95 % of the campaigns it is expected to catch, with at most 1 false page
per 10,000 benign events; a signal at least 80 %, with at most 5 false signals per
10,000. A detector no campaign type expects (``first_time_push``) only has the false
alert target.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.detect.score import FalseAlert, SeedScore

__all__ = ["TARGETS", "Report", "build_report", "markdown", "percentile"]

#: severity -> (minimum recall, maximum false alerts per 10,000 benign events)
TARGETS: dict[str, tuple[float, float]] = {"page": (0.95, 1.0), "signal": (0.8, 5.0)}
_EXAMPLES = 3


def percentile(values: Sequence[int], q: float) -> int | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


@dataclass(frozen=True)
class Report:
    data: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.data["passed"])


def _per_10k(count: int, benign: int) -> float:
    return round(count * 10_000 / benign, 3) if benign else 0.0


def _summary(ttds: list[int]) -> dict[str, int | None]:
    return {"ttd_median_s": _seconds(percentile(ttds, 50)),
            "ttd_p95_s": _seconds(percentile(ttds, 95))}


def _seconds(ms: int | None) -> int | None:
    return None if ms is None else ms // 1000


def build_report(
    scores: Sequence[SeedScore], severities: Mapping[str, str],
    described: Mapping[str, Mapping[str, Any]] | None = None,
) -> Report:
    """``severities``: every configured detector's severity; ``described``: accounts of
    the false alerts' events (``score.describe_events``), for the examples."""
    benign = sum(s.benign_events for s in scores)
    campaigns = [(s.seed, c) for s in scores for c in s.campaigns]
    false_by: dict[str, list[tuple[int, FalseAlert]]] = {}
    for s in scores:
        for alert in s.false_alerts:
            false_by.setdefault(alert.detector, []).append((s.seed, alert))
    detectors = sorted(set(severities) | set(false_by)
                       | {d for _, c in campaigns for d in c.expected})
    rows = []
    for name in detectors:
        severity = severities.get(name, "signal")
        expected = [c for _, c in campaigns if name in c.expected]
        caught = [c.detected_by[name] for c in expected if name in c.detected_by]
        falses = Counter(a.severity for _, a in false_by.get(name, []))
        min_recall, max_false = TARGETS[severity]
        recall = len(caught) / len(expected) if expected else None
        false_rate = _per_10k(falses[severity], benign)
        ok = (recall is None or recall >= min_recall) and false_rate <= max_false
        rows.append({
            "detector": name, "severity": severity, "campaigns": len(expected),
            "detected": len(caught), "recall": None if recall is None else round(recall, 3),
            "target_recall": min_recall if expected else None,
            "false_pages": falses["page"], "false_signals": falses["signal"],
            "false_pages_per_10k": _per_10k(falses["page"], benign),
            "false_signals_per_10k": _per_10k(falses["signal"], benign),
            "target_false_per_10k": max_false, **_summary(caught), "ok": ok,
            "alerts": sum(sum(s.alerts.get(name, Counter()).values()) for s in scores),
        })
    types = []
    for kind in dict.fromkeys(c.type for _, c in campaigns):
        group = [(seed, c) for seed, c in campaigns if c.type == kind]
        ttds = [t for _, c in group if (t := c.time_to_detect) is not None]
        types.append({
            "type": kind, "campaigns": len(group), "detected": len(ttds),
            "recall": round(len(ttds) / len(group), 3),
            "expected": list(group[0][1].expected),
            "by_expected": {
                d: round(sum(d in c.detected_by for _, c in group) / len(group), 3)
                for d in group[0][1].expected
            },
            **_summary(ttds),
            "missed": [
                {"seed": seed, "id": c.id, "description": c.description,
                 "other_detectors": sorted(c.detected_by), "late": dict(c.late)}
                for seed, c in group if not set(c.expected) & set(c.detected_by)
            ],
        })
    all_false = [a for s in scores for a in s.false_alerts]
    overall = {
        "seeds": [s.seed for s in scores], "events": sum(s.events for s in scores),
        "benign_events": benign, "campaigns": len(campaigns),
        "detected": sum(c.detected for _, c in campaigns),
        "false_pages_per_10k": _per_10k(sum(a.severity == "page" for a in all_false), benign),
        "false_signals_per_10k": _per_10k(sum(a.severity == "signal" for a in all_false),
                                          benign),
    }
    return Report({
        "passed": all(r["ok"] for r in rows), "overall": overall, "detectors": rows,
        "campaign_types": types, "false_alerts": _false_groups(false_by, described or {}),
    })


def _false_groups(
    false_by: Mapping[str, list[tuple[int, FalseAlert]]],
    described: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """False alerts grouped by detector and the benign pattern behind them."""
    groups: dict[tuple[str, str], list[tuple[int, FalseAlert]]] = {}
    for detector, alerts in false_by.items():
        for seed, alert in alerts:
            pattern = "+".join(alert.patterns) or "routine"
            groups.setdefault((detector, pattern), []).append((seed, alert))
    out = []
    for (detector, pattern), alerts in sorted(groups.items(), key=lambda g: -len(g[1])):
        out.append({
            "detector": detector, "pattern": pattern, "count": len(alerts),
            "severities": dict(Counter(a.severity for _, a in alerts)),
            "examples": [
                {"seed": seed, "entity": a.entity, "evidence": dict(a.evidence),
                 "events": [described[i] for i in a.event_ids[:2] if i in described]}
                for seed, a in alerts[:_EXAMPLES]
            ],
        })
    return out


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def markdown(report: Report, *, days: int) -> str:
    d = report.data
    o = d["overall"]
    lines = [
        f"Detector quality over {len(o['seeds'])} seeds x {days} simulated days: "
        f"{o['events']:,} events, {o['benign_events']:,} benign, {o['campaigns']} campaigns "
        f"({o['detected']} detected by some detector); all false alerts together: "
        f"{o['false_pages_per_10k']} pages and {o['false_signals_per_10k']} signals "
        "per 10,000 benign events.",
        "",
        "| detector | severity | campaigns caught | recall (target) "
        "| false pages / 10k | false signals / 10k (target) | TTD median | TTD p95 | |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["detectors"]:
        recall = "-" if r["recall"] is None else f"{r['recall']:.2f} (≥ {r['target_recall']})"
        target = f"≤ {r['target_false_per_10k']:g}"
        pages = f"{r['false_pages_per_10k']:g}" + (f" ({target})" if r["severity"] == "page"
                                                    else "")
        signals = f"{r['false_signals_per_10k']:g}" + (
            f" ({target})" if r["severity"] == "signal" else "")
        lines.append(
            f"| {r['detector']} | {r['severity']} | {r['detected']}/{r['campaigns']} "
            f"| {recall} | {pages} | {signals} | {_duration(r['ttd_median_s'])} "
            f"| {_duration(r['ttd_p95_s'])} | {'ok' if r['ok'] else '**below target**'} |"
        )
    lines += [
        "",
        "| campaign type | expected detector | caught by it | caught by any "
        "| TTD median | TTD p95 |",
        "|---|---|---|---|---|---|",
    ]
    for t in d["campaign_types"]:
        by = ", ".join(f"{v:.2f}" for v in t["by_expected"].values())
        lines.append(
            f"| {t['type']} | {', '.join(t['expected'])} | {by} "
            f"| {t['detected']}/{t['campaigns']} | {_duration(t['ttd_median_s'])} "
            f"| {_duration(t['ttd_p95_s'])} |"
        )
    return "\n".join(lines) + "\n"
