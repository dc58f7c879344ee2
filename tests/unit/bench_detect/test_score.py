"""The scorer and the report on a hand-made labels file and alerts."""

from __future__ import annotations

from typing import Any

from bench.detect.labels import CampaignLabel, Labels, PatternLabel
from bench.detect.report import build_report, markdown, percentile
from bench.detect.score import GRACE_MS, score

LABELS = Labels(
    seed=1, days=1, window_start=0, window_end=86_400_000, events=10_000,
    runner_networks=(),
    campaigns=(
        CampaignLabel("spray-1", "fast_spray", 1_000, 5_000, ("password_spray",), "a spray",
                      {"ip": ["192.0.2.1"]}, ("a1", "a2")),
        CampaignLabel("replay-1", "proof_reuse", 10_000, 20_000, ("proof_reuse",),
                      "a replay", {"ip": ["192.0.2.2"]}, ("b1",)),
    ),
    patterns=(PatternLabel("typo-1", "typo", "user:ann", 40_000, 40_000, ("p1",)),),
)


def alert(detector: str, severity: str, time: int, *ids: str) -> dict[str, Any]:
    return {"type": "anomaly.alert", "time": time,
            "alert": {"detector": detector, "severity": severity, "entity": "ip:192.0.2.9",
                      "evidence": {"n": 1}, "event_ids": list(ids)}}


ALERTS = [
    alert("password_spray", "signal", 3_000, "a1"),         # detects spray-1 after 2 s
    alert("brute_force", "signal", 4_000, "a2", "x"),       # so does another detector
    alert("password_spray", "signal", 4_500, "a2"),         # later: not the first
    alert("proof_reuse", "page", 20_000 + GRACE_MS + 1, "b1"),  # too late: replay-1 missed
    alert("password_spray", "signal", 40_000, "p1"),        # false, on a typo
    alert("proof_reuse", "page", 60_000),                   # false: names no event
    alert("credential_stuffing", "page", 70_000, "x"),      # false, routine traffic
]


def test_detections_lateness_and_false_alerts() -> None:
    result = score(LABELS, ALERTS)
    spray, replay = result.campaigns
    assert spray.detected_by == {"password_spray": 2_000, "brute_force": 3_000}
    assert spray.time_to_detect == 2_000
    assert not replay.detected and replay.late == {"proof_reuse": 1}
    assert [(a.detector, a.patterns) for a in result.false_alerts] == [
        ("password_spray", ("typo",)), ("proof_reuse", ()), ("credential_stuffing", ())]
    assert result.benign_events == 10_000 - 3
    assert result.alerts["password_spray"]["signal"] == 3


def test_report_recall_false_rates_and_targets() -> None:
    severities = {"password_spray": "signal", "proof_reuse": "page", "brute_force": "signal",
                  "credential_stuffing": "page"}
    report = build_report([score(LABELS, ALERTS)], severities)
    rows = {r["detector"]: r for r in report.data["detectors"]}
    spray = rows["password_spray"]
    assert (spray["campaigns"], spray["detected"], spray["recall"]) == (1, 1, 1.0)
    assert spray["false_signals"] == 1 and spray["false_signals_per_10k"] == 1.0  # 1 in 9,997
    assert spray["ok"]  # 1.0 false signal per 10,000 is within 5
    replay = rows["proof_reuse"]
    assert (replay["recall"], replay["false_pages"]) == (0.0, 1)
    assert not replay["ok"]
    assert rows["credential_stuffing"]["recall"] is None  # no campaign expects it
    assert rows["brute_force"]["false_signals"] == 0
    assert not report.passed
    kinds = {t["type"]: t for t in report.data["campaign_types"]}
    assert kinds["fast_spray"]["ttd_median_s"] == 2
    assert [m["id"] for m in kinds["proof_reuse"]["missed"]] == ["replay-1"]
    groups = {(g["detector"], g["pattern"]): g["count"] for g in report.data["false_alerts"]}
    assert groups == {("password_spray", "typo"): 1, ("proof_reuse", "routine"): 1,
                      ("credential_stuffing", "routine"): 1}
    table = markdown(report, days=1)
    assert "| proof_reuse | page | 0/1 | 0.00 (≥ 0.95) |" in table
    assert "**below target**" in table


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5, 1, 3], 50) == 3
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([7], 95) == 7
