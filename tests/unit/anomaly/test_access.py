"""Scope probing, mass pull, first-time push and off-hours push on crafted sequences."""

from __future__ import annotations

from tests.unit.anomaly.conftest import Run
from tests.unit.anomaly.events import T0, success
from tests.unit.anomaly.test_credentials import of

DAY = 86400
HOUR = 3600


def test_scope_probing_counts_distinct_denied_pairs(run: Run) -> None:
    probe = {"scope_probing": {"threshold": 5, "window": 600}}
    denied = [
        success(
            "mallory", "203.0.113.9", T0 + i, granted=[], denied=[f"repository:secret/r{i}:pull"]
        )
        for i in range(4)
    ]
    again = success(
        "mallory", "203.0.113.9", T0 + 5, granted=[], denied=["repository:secret/r0:pull"]
    )  # the same pair again
    assert of(run([*denied, again], probe), "scope_probing") == []
    fifth = success(
        "mallory", "203.0.113.9", T0 + 6, granted=[], denied=["repository:secret/r4:pull"]
    )
    alerts = of(run([*denied, again, fifth], probe), "scope_probing")
    assert [(a["entity"], a["evidence"]["distinct_denied"]) for a in alerts] == [
        ("static:mallory", 5)
    ]
    # Spread beyond the window, they never add up.
    slow = [
        success(
            "mallory",
            "203.0.113.9",
            T0 + i * 700,
            granted=[],
            denied=[f"repository:secret/r{i}:pull"],
        )
        for i in range(8)
    ]
    assert of(run(slow, probe), "scope_probing") == []


def test_a_robot_denied_delete_or_catalog_is_alerted_at_once(run: Run) -> None:
    robot = success(
        "builder", "10.0.0.1", T0, kind="robot", granted=[], denied=["repository:team/app:delete"]
    )
    human = success(
        "alice",
        "10.0.0.2",
        T0 + 1,
        granted=[],
        denied=["repository:team/app:delete", "registry:catalog:*"],
    )
    alerts = of(run([robot, human]), "scope_probing")
    assert [(a["entity"], a["evidence"]["denied"]) for a in alerts] == [
        ("static:builder", ["repository:team/app:delete"])
    ]


def pulls(who: str, start: int, count: int, prefix: str = "r") -> list[dict[str, object]]:
    return [
        success(who, "203.0.113.9", start + i, granted=[f"repository:lib/{prefix}{i}:pull"])
        for i in range(count)
    ]


def test_mass_pull_needs_the_floor_and_the_principals_own_baseline(run: Run) -> None:
    mass = {"mass_pull": {"floor": 20, "multiplier": 3.0}}
    assert of(run(pulls("alice", T0, 19), mass), "mass_pull") == []
    alerts = of(run(pulls("alice", T0, 25), mass), "mass_pull")
    assert [(a["entity"], a["evidence"]["distinct_repositories"]) for a in alerts] == [
        ("static:alice", 20)
    ]
    # A principal that always pulls ~60 repositories an hour (a mirror) is alerted in its
    # first hour (nothing is known of it), then it is its own normal ...
    mirror = [e for h in range(8) for e in pulls("mirror", T0 + h * HOUR, 60, f"h{h % 3}-")]
    alerts = of(run(mirror, mass), "mass_pull")
    assert [a["evidence"]["hour_start"] for a in alerts] == [T0]
    # ... until it pulls four times as much.
    burst = pulls("mirror", T0 + 8 * HOUR, 240, "burst")
    alerts = of(run(mirror + burst, mass), "mass_pull")
    assert [
        (a["evidence"]["hour_start"], a["evidence"]["distinct_repositories"]) for a in alerts
    ] == [(T0, 20), (T0 + 8 * HOUR, 180)]


def test_first_time_push_by_group(run: Run) -> None:
    learn = [
        success(
            "alice",
            "203.0.113.9",
            T0,
            groups=["team-a"],
            granted=["repository:team-a/app:pull,push"],
        )
    ]
    teammate = success(
        "bob",
        "203.0.113.9",
        T0 + 8 * DAY,
        groups=["team-a"],
        granted=["repository:team-a/app:pull,push"],
    )
    foreign = success(
        "bob",
        "203.0.113.9",
        T0 + 8 * DAY + 1,
        groups=["team-a"],
        granted=["repository:team-b/api:pull,push"],
    )
    alerts = of(run([*learn, teammate, foreign]), "first_time_push")
    assert [(a["entity"], a["evidence"]["repository"]) for a in alerts] == [
        ("static:bob", "team-b/api")
    ]
    # During the learning period (7 days) it is taught, not alerted.
    early = success(
        "bob",
        "203.0.113.9",
        T0 + DAY,
        groups=["team-a"],
        granted=["repository:team-b/api:pull,push"],
    )
    assert of(run([*learn, early]), "first_time_push") == []


def test_off_hours_push(run: Run) -> None:
    # Alice works 08:00-17:59 UTC for ten days (five 2-hour bands).
    work = [
        success("alice", "203.0.113.9", T0 + d * DAY + h * HOUR)
        for d in range(10)
        for h in range(8, 18)
    ]
    night_pull = success("alice", "203.0.113.9", T0 + 10 * DAY + 3 * HOUR)
    night_push = success(
        "alice",
        "203.0.113.9",
        T0 + 10 * DAY + 3 * HOUR + 60,
        granted=["repository:team/app:pull,push"],
    )
    day_push = success(
        "alice", "203.0.113.9", T0 + 10 * DAY + 9 * HOUR, granted=["repository:team/app:pull,push"]
    )
    assert of(run([*work, day_push]), "off_hours_push") == []
    # A pull at night teaches the band (only pushes are alerted) ...
    assert of(run([*work, night_pull, night_push]), "off_hours_push") == []
    alerts = of(run([*work, night_push]), "off_hours_push")
    assert [(a["entity"], a["evidence"]["hour_utc"]) for a in alerts] == [("static:alice", 3)]
    # ... and nothing is alerted while learning.
    early_push = success(
        "alice", "203.0.113.9", T0 + 2 * DAY + 3 * HOUR, granted=["repository:team/app:pull,push"]
    )
    assert of(run([*work[:20], early_push]), "off_hours_push") == []
