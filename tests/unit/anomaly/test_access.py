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


def pulls(
    who: str, start: int, count: int, prefix: str = "r", ip: str = "203.0.113.9"
) -> list[dict[str, object]]:
    return [
        success(who, ip, start + i, granted=[f"repository:lib/{prefix}{i}:pull"])
        for i in range(count)
    ]


MASS = {"mass_pull": {"floor": 20, "multiplier": 3.0, "learning": 86400}}


def test_mass_pull_fires_at_the_floor_after_learning(run: Run) -> None:
    known = pulls("alice", T0, 1)  # alice is seen: her learning starts
    later = T0 + 2 * DAY
    assert of(run(known + pulls("alice", later, 19), MASS), "mass_pull") == []
    alerts = of(run(known + pulls("alice", later, 25), MASS), "mass_pull")
    assert [(a["entity"], a["evidence"]["distinct_repositories"]) for a in alerts] == [
        ("static:alice", 20)
    ]
    # While learning, the same is quiet.
    assert of(run(pulls("alice", T0, 25), MASS), "mass_pull") == []
    # The window slides: 12 repositories at the end of one hour and 12 at the start of
    # the next are one mass pull.
    split = pulls("alice", later + 3000, 12, "a") + pulls("alice", later + 3700, 12, "b")
    alerts = of(run(known + split, MASS), "mass_pull")
    assert [a["evidence"]["distinct_repositories"] for a in alerts] == [20]


def test_a_weekly_rollout_is_its_own_normal_on_its_own_network(run: Run) -> None:
    cluster, elsewhere = "10.30.0.7", "198.51.100.66"
    week = 7 * DAY
    rollouts = [e for w in range(3) for e in pulls("deploy", T0 + w * week, 60, ip=cluster)]
    # The first rollout is before the end of learning; the later ones are quiet
    # (60 < 1.5 x the peak of 60 decayed for a week by a half-life of 30 days: 76.6).
    assert of(run(rollouts, MASS), "mass_pull") == []
    # 40 repositories from another network, days after the last rollout, are alerted.
    stolen = pulls("deploy", T0 + 2 * week + 3 * DAY, 40, ip=elsewhere)
    alerts = of(run(rollouts + stolen, MASS), "mass_pull")
    assert [(a["evidence"]["network"], a["evidence"]["distinct_repositories"]) for a in alerts] == [
        ("net:198.51.100.0/24", 20)
    ]
    # Twice the usual rollout from the cluster is alerted too.
    double = pulls("deploy", T0 + 3 * week, 160, "big", ip=cluster)
    alerts = of(run(rollouts + double, MASS), "mass_pull")
    assert [a["evidence"]["network"] for a in alerts] == ["net:10.30.0.0/24"]


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
    push = ["repository:team/app:pull,push"]
    night_push = success("alice", "203.0.113.9", T0 + 10 * DAY + 3 * HOUR + 60, granted=push)
    alerts = of(run([*work, night_push]), "off_hours_push")
    assert [
        (a["entity"], a["evidence"]["hour_utc"], a["evidence"]["active_bands"]) for a in alerts
    ] == [("static:alice", 3, [4, 5, 6, 7, 8])]
    # A day's push, and one in the band next to her working hours, are quiet.
    day_push = success("alice", "203.0.113.9", T0 + 10 * DAY + 9 * HOUR, granted=push)
    early_push = success("alice", "203.0.113.9", T0 + 10 * DAY + 6 * HOUR, granted=push)
    assert of(run([*work, day_push, early_push]), "off_hours_push") == []
    # The login an attacker makes a minute before pushing does not make 3 a.m. hers ...
    login = success("alice", "203.0.113.9", T0 + 10 * DAY + 3 * HOUR)
    assert len(of(run([*work, login, night_push]), "off_hours_push")) == 1
    # ... but a night she did work, days before, does.
    worked_night = success("alice", "203.0.113.9", T0 + 8 * DAY + 3 * HOUR)
    assert of(run([*work, worked_night, night_push]), "off_hours_push") == []
    # Nothing is alerted while learning.
    early = success("alice", "203.0.113.9", T0 + 2 * DAY + 3 * HOUR, granted=push)
    assert of(run([*work[:20], early]), "off_hours_push") == []


def test_a_ci_job_pushes_with_its_repository_whatever_the_ref(run: Run) -> None:
    def job(ref: str, at: int, target: str) -> dict[str, object]:
        return success(
            f"repo:acme/app:ref:{ref}",
            "10.20.0.5",
            at,
            kind="ci",
            provider="github",
            credential="subject_token",
            claims={"repository": "acme/app", "ref": ref},
            granted=[f"repository:{target}:pull,push"],
        )

    main = job("refs/heads/main", T0, "ci/acme/app")
    tag = job("refs/tags/v1.2.0", T0 + 8 * DAY, "ci/acme/app")
    other = job("refs/heads/feature", T0 + 8 * DAY + 1, "ci/acme/other")
    alerts = of(run([main, tag, other]), "first_time_push")
    assert [(a["evidence"]["repository"], a["evidence"]["groups"]) for a in alerts] == [
        ("ci/acme/other", ["github:repository:acme/app"])
    ]


def test_a_theft_across_an_hour_boundary_does_not_teach_its_own_baseline(run: Run) -> None:
    known = pulls("alice", T0, 1)
    # From a new network, 15 repositories in the last minutes of an hour (under the
    # floor of 20), then 40 more in the next: its first hour must not become its normal.
    start = T0 + 2 * DAY + 3000
    theft = pulls("alice", start, 15, "a", ip="198.51.100.66") + pulls(
        "alice", start + 700, 40, "b", ip="198.51.100.66"
    )
    alerts = of(run(known + theft, MASS), "mass_pull")
    assert [a["evidence"]["distinct_repositories"] for a in alerts] == [20]
