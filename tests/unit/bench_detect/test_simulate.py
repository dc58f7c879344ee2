"""The simulator: seeded, and labelled exactly (on a small company, for speed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from authsvc.anomaly.detectors import NAMES
from bench.detect.attacks import EXPECTED
from bench.detect.context import DAY
from bench.detect.labels import Labels
from bench.detect.simulate import Settings, simulate

SMALL = Settings(seed=3, days=10, warmup_days=7, humans=50, teams=5, ci=6,
                 campaigns_per_type=1)
#: campaigns whose addresses nobody else ever uses (the others may act from a victim's home)
ATTACKER_ONLY = {"slow_spray", "fast_spray", "brute_force", "credential_stuffing",
                 "success_after_spray", "stolen_credential", "ci_outside_runners",
                 "proof_reuse"}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Labels]:
    path = tmp_path_factory.mktemp("sim") / "events.jsonl"
    return path, simulate(SMALL, path)


@pytest.fixture(scope="module")
def events(simulated: tuple[Path, Labels]) -> list[dict[str, Any]]:
    path, _ = simulated
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_same_seed_gives_the_same_bytes(
    simulated: tuple[Path, Labels], tmp_path: Path
) -> None:
    path, labels = simulated
    again = simulate(SMALL, tmp_path / "again.jsonl")
    assert (tmp_path / "again.jsonl").read_bytes() == path.read_bytes()
    assert again == labels
    other = Settings(**{**SMALL.__dict__, "seed": 4})
    simulate(other, tmp_path / "other.jsonl")
    assert (tmp_path / "other.jsonl").read_bytes() != path.read_bytes()


def test_events_are_time_ordered_audit_events(events: list[dict[str, Any]]) -> None:
    times = [e["time"] for e in events]
    assert times == sorted(times)
    assert len({e["event_id"] for e in events}) == len(events)
    assert {e["schema"] for e in events} == {"authsvc.audit/1"}
    assert {e["outcome"] for e in events} == {"success", "partial", "failure"}
    assert len(events) > 10_000


def test_labels_cover_exactly_the_campaign_events(
    simulated: tuple[Path, Labels], events: list[dict[str, Any]]
) -> None:
    _, labels = simulated
    time_of = {e["event_id"]: e["time"] for e in events}
    labelled: set[str] = set()
    for campaign in labels.campaigns:
        ids = set(campaign.event_ids)
        assert ids and ids <= time_of.keys(), campaign.id
        assert not ids & labelled, f"{campaign.id} shares events with another campaign"
        labelled |= ids
        times = [time_of[i] for i in campaign.event_ids]
        assert (campaign.start, campaign.end) == (min(times), max(times))
        assert labels.window_start + SMALL.warmup_days * DAY <= campaign.start
        assert campaign.end <= labels.window_end
    assert {c.type for c in labels.campaigns} == set(EXPECTED)
    assert labels.benign_events == len(events) - len(labelled)
    attacker_ips = {ip for c in labels.campaigns if c.type in ATTACKER_ONLY
                    for ip in c.entities["ip"]}
    from_attackers = {e["event_id"] for e in events
                      if e["client"]["ip"] in attacker_ips}
    only_theirs = {i for c in labels.campaigns if c.type in ATTACKER_ONLY
                   for i in c.event_ids}
    assert from_attackers == only_theirs


def test_benign_patterns_hold_no_campaign_event(simulated: tuple[Path, Labels]) -> None:
    _, labels = simulated
    campaign_ids = {i for c in labels.campaigns for i in c.event_ids}
    assert labels.patterns
    assert not campaign_ids & {i for p in labels.patterns for i in p.event_ids}


def test_every_expected_detector_exists() -> None:
    assert {d for names in EXPECTED.values() for d in names} <= set(NAMES)


def test_labels_survive_json(simulated: tuple[Path, Labels], tmp_path: Path) -> None:
    _, labels = simulated
    labels.write(tmp_path / "labels.json")
    assert Labels.read(tmp_path / "labels.json") == labels


@pytest.mark.parametrize(
    ("change", "field"),
    [({"days": 8}, "days"), ({"teams": 11}, "teams"), ({"humans": 10}, "humans"),
     ({"ci": 1}, "ci")],
)
def test_settings_name_the_bad_field(change: dict[str, int], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Settings(**{**SMALL.__dict__, **change})


def test_victims_are_known_for_a_warm_up_before_their_campaign(
    simulated: tuple[Path, Labels], events: list[dict[str, Any]]
) -> None:
    _, labels = simulated
    first: dict[str, int] = {}
    for event in events:
        account = event["actor"].get("account")
        if account is not None and event["outcome"] != "failure":
            first.setdefault(account, event["time"])
    for campaign in labels.campaigns:
        if campaign.type in ("stolen_credential", "off_hours_push"):
            (victim,) = campaign.entities["account"]
            assert first[victim] + SMALL.warmup_days * DAY <= campaign.start, campaign.id
