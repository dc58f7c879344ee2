"""Spray, success after spray, brute force and stuffing on crafted sequences, against
both the memory and the Redis state."""

from __future__ import annotations

from typing import Any

from tests.unit.anomaly.conftest import Run
from tests.unit.anomaly.events import T0, failure, success

ONLY_SPRAY = {
    "password_spray": {"threshold": 5, "network_threshold": 8, "slow_threshold": 12},
    "brute_force": {"enabled": False},
    "new_context": {"enabled": False},
    "dormant_credential": {"enabled": False},
    "credential_stuffing": {"enabled": False},
}


def of(alerts: list[dict[str, Any]], detector: str) -> list[dict[str, Any]]:
    return [a["alert"] for a in alerts if a["alert"]["detector"] == detector]


def test_spray_fires_at_its_threshold_and_not_one_below(run: Run) -> None:
    below = [failure(f"u{i}", "203.0.113.9", T0 + i * 10) for i in range(4)]
    assert of(run(below, ONLY_SPRAY), "password_spray") == []
    at = [*below, failure("u4", "203.0.113.9", T0 + 50)]
    alerts = of(run(at, ONLY_SPRAY), "password_spray")
    assert [(a["entity"], a["evidence"]["distinct_accounts"]) for a in alerts] == [
        ("ip:203.0.113.9", 5)
    ]
    assert alerts[0]["severity"] == "signal"
    assert alerts[0]["event_ids"] == [at[-1]["event_id"]]
    assert alerts[0]["window"] == {"start": (T0 + 50 - 3600) * 1000, "end": (T0 + 50) * 1000}


def test_the_same_account_failing_again_is_not_a_spray(run: Run) -> None:
    events = [failure("alice", "203.0.113.9", T0 + i) for i in range(30)]
    assert of(run(events, ONLY_SPRAY), "password_spray") == []


def test_spray_is_one_alert_per_window_then_forgotten(run: Run) -> None:
    first = [failure(f"u{i}", "203.0.113.9", T0 + i) for i in range(9)]
    # Two hours later the counts are gone: 4 more accounts are not a spray ...
    later = [failure(f"v{i}", "203.0.113.9", T0 + 7200 + i) for i in range(4)]
    # ... and 5 are, a new alert in a new window.
    again = [*later, failure("v4", "203.0.113.9", T0 + 7210)]
    ip_only = {
        **ONLY_SPRAY,
        "password_spray": {"threshold": 5, "network_threshold": 99, "slow_threshold": 99},
    }
    alerts = of(run(first + later, ip_only), "password_spray")
    assert len(alerts) == 1
    alerts = of(run(first + again, ip_only), "password_spray")
    assert [a["window"]["end"] for a in alerts] == [(T0 + 4) * 1000, (T0 + 7210) * 1000]


def test_a_spray_spread_over_a_network_is_caught_by_the_network(run: Run) -> None:
    events = [failure(f"u{i}", f"198.51.100.{i + 1}", T0 + i) for i in range(8)]
    alerts = of(run(events, ONLY_SPRAY), "password_spray")
    assert [(a["entity"], a["evidence"]["threshold"]) for a in alerts] == [
        ("net:198.51.100.0/24", 8)
    ]


def test_a_slow_spray_is_caught_over_the_day(run: Run) -> None:
    events = [failure(f"u{i}", "203.0.113.9", T0 + i * 1200) for i in range(12)]  # 3/hour
    alerts = of(run(events, ONLY_SPRAY), "password_spray")
    assert [(a["entity"], a["evidence"]["window_seconds"]) for a in alerts] == [
        ("ip:203.0.113.9", 86400)
    ]


def test_named_networks_stand_for_the_network(run: Run) -> None:
    events = [failure(f"u{i}", f"10.1.{i}.1", T0 + i) for i in range(8)]
    alerts = of(run(events, ONLY_SPRAY, networks={"office": ["10.1.0.0/16"]}), "password_spray")
    assert [a["entity"] for a in alerts] == ["net:office"]


def test_success_after_spray_pages(run: Run) -> None:
    spray = [failure(f"u{i}", "203.0.113.9", T0 + i) for i in range(5)]
    hit = success("u3", "203.0.113.9", T0 + 600)
    alerts = of(run([*spray, hit], ONLY_SPRAY), "success_after_spray")
    assert [(a["entity"], a["severity"], a["event_ids"]) for a in alerts] == [
        ("ip:203.0.113.9", "page", [hit["event_id"]])
    ]
    # An hour and more after the spray the source is no longer flagged.
    late = success("u3", "203.0.113.9", T0 + 3700)
    assert of(run([*spray, late], ONLY_SPRAY), "success_after_spray") == []
    # Nor is a success from elsewhere.
    other = success("u3", "192.0.2.1", T0 + 600)
    assert of(run([*spray, other], ONLY_SPRAY), "success_after_spray") == []


# Several consumers sharing a stream handle events out of order: a success can be
# handled before the failure that flags its source. These feed the engine in such an
# order; whichever of the two is handled second reports.


def test_a_success_handled_before_the_spray_that_precedes_it_still_pages(run: Run) -> None:
    spray = [failure(f"u{i}", "203.0.113.9", T0 + i) for i in range(5)]
    hit = success("u3", "203.0.113.9", T0 + 600)
    alerts = of(run([hit, *spray], ONLY_SPRAY), "success_after_spray")
    assert [(a["entity"], a["severity"], a["evidence"], a["event_ids"]) for a in alerts] == [
        (
            "ip:203.0.113.9",
            "page",
            {"account": "static:u3", "sprayed_source": "ip:203.0.113.9"},
            [hit["event_id"], spray[-1]["event_id"]],  # the success, the flagging failure
        )
    ]


def test_a_success_handled_first_is_found_across_the_hour_its_record_is_kept_by(
    run: Run,
) -> None:
    # Successes are kept in one record per window (an hour) of event time: the spray
    # flags its source in the last second of one, the success came in the next.
    assert T0 % 3600 == 0
    spray = [failure(f"u{i}", "203.0.113.9", T0 + 3595 + i) for i in range(5)]
    hit = success("u3", "203.0.113.9", T0 + 3605)
    alerts = of(run([hit, *spray], ONLY_SPRAY), "success_after_spray")
    assert [(a["entity"], a["event_ids"]) for a in alerts] == [
        ("ip:203.0.113.9", [hit["event_id"], spray[-1]["event_id"]])
    ]


def test_a_success_earlier_than_the_spray_is_not_paged_in_either_order(run: Run) -> None:
    spray = [failure(f"u{i}", "203.0.113.9", T0 + 10 + i) for i in range(5)]
    before = success("u3", "203.0.113.9", T0 + 5)  # before the failure that flags
    for order in ([before, *spray], [*spray, before]):
        assert of(run(order, ONLY_SPRAY), "success_after_spray") == []
    # A success a second after the flagging failure pages, in either order.
    after = success("u3", "203.0.113.9", T0 + 15)
    for order in ([after, *spray], [*spray, after]):
        paged = of(run(order, ONLY_SPRAY), "success_after_spray")
        assert [a["evidence"]["account"] for a in paged] == ["static:u3"]


def test_a_success_handled_first_pages_once_however_often_the_spray_flags(run: Run) -> None:
    spray = [failure(f"u{i}", "203.0.113.9", T0 + i) for i in range(9)]  # flags 5 times
    first = success("u3", "203.0.113.9", T0 + 20)
    later = success("u7", "203.0.113.9", T0 + 30)  # handled after the flag: same window
    alerts = of(run([first, *spray, later], ONLY_SPRAY), "success_after_spray")
    assert [(a["entity"], a["evidence"]["account"]) for a in alerts] == [
        ("ip:203.0.113.9", "static:u3")
    ]


def test_a_success_from_the_network_handled_first_pages_for_the_network(run: Run) -> None:
    spray = [failure(f"u{i}", f"198.51.100.{i + 1}", T0 + i) for i in range(8)]
    neighbour = success("u2", "198.51.100.200", T0 + 60)
    alerts = of(run([neighbour, *spray], ONLY_SPRAY), "success_after_spray")
    assert [(a["entity"], a["evidence"]["account"]) for a in alerts] == [
        ("net:198.51.100.0/24", "static:u2")
    ]
    # A success from the flagging address itself pages for the address alone (it is
    # also one of the network's, as when handled after the flag).
    same = success("u2", "198.51.100.8", T0 + 60)
    for order in ([same, *spray], [*spray, same]):
        paged = of(run(order, ONLY_SPRAY), "success_after_spray")
        assert [a["entity"] for a in paged] == ["ip:198.51.100.8"]


def test_no_success_after_spray_is_reported_when_that_detector_is_off(run: Run) -> None:
    spray = [failure(f"u{i}", "203.0.113.9", T0 + i) for i in range(5)]
    hit = success("u3", "203.0.113.9", T0 + 600)
    off = {**ONLY_SPRAY, "success_after_spray": {"enabled": False}}
    alerts = run([hit, *spray, hit], off)
    assert of(alerts, "success_after_spray") == []
    assert [a["alert"]["detector"] for a in alerts] == ["password_spray"]


BRUTE = {"brute_force": {"threshold": 6, "window": 600}, "password_spray": {"enabled": False}}


def test_brute_force_counts_per_account_and_address(run: Run) -> None:
    five = [failure("alice", "203.0.113.9", T0 + i) for i in range(5)]
    other_ip = failure("alice", "203.0.113.10", T0 + 6)
    other_user = failure("bob", "203.0.113.9", T0 + 7)
    assert of(run([*five, other_ip, other_user], BRUTE), "brute_force") == []
    sixth = failure("alice", "203.0.113.9", T0 + 8)
    seventh = failure("alice", "203.0.113.9", T0 + 9)
    alerts = of(run([*five, other_ip, other_user, sixth, seventh], BRUTE), "brute_force")
    assert [(a["entity"], a["evidence"]["distinct_passwords"]) for a in alerts] == [
        ("account:alice@ip:203.0.113.9", 6)
    ]
    # A tool retrying one (expired) password is not guessing.
    loop = [failure("alice", "203.0.113.9", T0 + i, password="old") for i in range(30)]
    assert of(run(loop, BRUTE), "brute_force") == []
    # Failures spread beyond the window never add up.
    spread = [failure("alice", "203.0.113.9", T0 + i * 200) for i in range(12)]
    assert of(run(spread, BRUTE), "brute_force") == []


STUFFING = {
    "credential_stuffing": {"bucket": 60, "min_failures": 20, "learning": 600},
    "password_spray": {"enabled": False},
    "brute_force": {"enabled": False},
    "new_context": {"enabled": False},
    "dormant_credential": {"enabled": False},
}


def _minute(start: int, requests: int, failures: int, unknown: int = 0) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i in range(requests):
        at = start + (i * 59) // max(1, requests)
        if i < unknown:
            events.append(failure(f"nobody{i}", f"192.0.2.{i % 250}", at, reason="UNKNOWN_USER"))
        elif i < failures:
            events.append(failure(f"user{i}", f"192.0.2.{i % 250}", at))
        else:
            events.append(success(f"user{i % 40}", "198.51.100.7", at))
    return events


def test_stuffing_is_a_rise_against_the_baseline_after_learning(run: Run) -> None:
    normal = [e for m in range(15) for e in _minute(T0 + m * 60, 40, 2)]
    attack = _minute(T0 + 15 * 60, 200, 150, unknown=120)
    closer = [success("user1", "198.51.100.7", T0 + 16 * 60 + 1)]
    alerts = of(run(normal + attack + closer, STUFFING), "credential_stuffing")
    assert {a["evidence"]["measure"] for a in alerts} == {"failure_ratio", "unknown_share"}
    assert all(a["severity"] == "page" and a["entity"] == "global" for a in alerts)
    # The same burst while still learning is quiet.
    early = [e for m in range(3) for e in _minute(T0 + m * 60, 40, 2)]
    attack = _minute(T0 + 3 * 60, 200, 150, unknown=120)
    closer = [success("user1", "198.51.100.7", T0 + 4 * 60 + 1)]
    assert of(run(early + attack + closer, STUFFING), "credential_stuffing") == []


def test_stuffing_needs_enough_failures(run: Run) -> None:
    normal = [e for m in range(15) for e in _minute(T0 + m * 60, 40, 2)]
    small = _minute(T0 + 15 * 60, 25, 19)  # a high ratio, but 19 < min_failures
    closer = [success("user1", "198.51.100.7", T0 + 16 * 60 + 1)]
    assert of(run(normal + small + closer, STUFFING), "credential_stuffing") == []
    enough = _minute(T0 + 15 * 60, 25, 20)
    alerts = of(run(normal + enough + closer, STUFFING), "credential_stuffing")
    assert [a["evidence"]["failures"] for a in alerts] == [20]


def test_an_office_nat_is_sprayed_only_when_failures_outnumber_its_logins(run: Run) -> None:
    nat = "198.51.100.1"
    office = [success(f"staff{i}", nat, T0 + i) for i in range(40)]
    typos = [failure(f"staff{i}", nat, T0 + 100 + i) for i in range(20)]
    # 20 accounts failed: over the threshold (5) but not over half of the 40 that log in.
    assert of(run(office + typos, ONLY_SPRAY), "password_spray") == []
    spray = [failure(f"victim{i}", nat, T0 + 200 + i) for i in range(5)]
    alerts = of(run(office + typos + spray, ONLY_SPRAY), "password_spray")
    assert [
        (a["evidence"]["distinct_accounts"], a["evidence"]["accounts_succeeding"]) for a in alerts
    ] == [(21, 40)]


def test_success_after_spray_pages_once_per_source(run: Run) -> None:
    spray = [failure(f"u{i}", "203.0.113.9", T0 + i) for i in range(5)]
    logins = [success(f"u{i}", "203.0.113.9", T0 + 600 + i) for i in range(3)]
    alerts = of(run([*spray, *logins], ONLY_SPRAY), "success_after_spray")
    assert [a["evidence"]["account"] for a in alerts] == ["static:u0"]
