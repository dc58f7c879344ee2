"""CI outside CI, new context, dormant credentials and proof reuse on crafted sequences."""

from __future__ import annotations

from typing import Any

from tests.unit.anomaly.conftest import Run
from tests.unit.anomaly.events import T0, failure, success
from tests.unit.anomaly.test_credentials import of

DAY = 86400
GH = {
    "kind": "ci",
    "provider": "github",
    "credential": "subject_token",
    "claims": {"repository": "acme/app", "ref": "refs/heads/main"},
}
RUNNERS = {"networks": {"runners": ["10.20.0.0/16"]}}
DECLARED = {"ci_outside_ci": {"runner_networks": ["runners"]}}


def ci(ip: str, at: int, **extra: Any) -> dict[str, Any]:
    return success("repo:acme/app:ref:refs/heads/main", ip, at, **{**GH, **extra})


def test_ci_identity_outside_declared_runner_networks_pages(run: Run) -> None:
    inside = [ci("10.20.3.4", T0 + i) for i in range(5)]
    assert of(run(inside, DECLARED, **RUNNERS), "ci_outside_ci") == []
    outside = ci("203.0.113.50", T0 + 10)
    alerts = of(
        run([*inside, outside, ci("203.0.113.50", T0 + 20)], DECLARED, **RUNNERS), "ci_outside_ci"
    )
    assert [(a["severity"], a["evidence"]["why"], a["event_ids"]) for a in alerts] == [
        ("page", "outside the runner networks", [outside["event_id"]])
    ]
    assert alerts[0]["evidence"]["repository"] == "acme/app"


def test_ci_identity_from_an_interactive_client(run: Run) -> None:
    browser = ci("10.20.3.4", T0, ua="Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0")
    desktop = ci(
        "10.20.3.4",
        T0 + 1,
        ua="docker/24.0.7 go/go1.20 os/linux arch/arm64 "
        "UpstreamClient(Docker-Client/24.0.7 \\(darwin\\))",
    )
    alerts = of(run([browser, desktop], DECLARED, **RUNNERS), "ci_outside_ci")
    assert [a["evidence"]["why"] for a in alerts] == ["interactive client"]  # one per day


def test_ci_networks_are_learned_when_none_are_declared(run: Run) -> None:
    learn = [ci(f"10.20.{i}.4", T0 + i * 3600) for i in range(24)]
    during = ci("203.0.113.50", T0 + 2 * DAY)  # still learning (7 days): taught, quiet
    known = ci("10.20.200.1", T0 + 8 * DAY)  # the same /16 as learned
    new = ci("198.51.100.9", T0 + 8 * DAY + 60)
    alerts = of(run([*learn, during, known, new]), "ci_outside_ci")
    assert [(a["evidence"]["network"], a["event_ids"]) for a in alerts] == [
        ("198.51.0.0/16", [new["event_id"]])
    ]
    # A network taught during learning stays known.
    assert of(run([*learn, during, ci("203.0.113.77", T0 + 9 * DAY)]), "ci_outside_ci") == []


def test_humans_are_not_ci(run: Run) -> None:
    events = [success("alice", "203.0.113.9", T0), success("alice", "198.51.100.1", T0 + 1)]
    assert of(run(events, DECLARED, **RUNNERS), "ci_outside_ci") == []


def test_new_context_after_learning_and_not_when_shared(run: Run) -> None:
    home = [success("alice", "203.0.113.9", T0 + d * DAY) for d in range(8)]
    travel = success("alice", "198.51.100.9", T0 + 8 * DAY + 60)
    alerts = of(run([*home, travel]), "new_context")
    assert [(a["entity"], a["evidence"]["value"], a["event_ids"]) for a in alerts] == [
        ("static:alice", "net:198.51.100.0/24", [travel["event_id"]])
    ]
    # The same first use while learning is quiet.
    early = success("alice", "198.51.100.9", T0 + 2 * DAY)
    assert of(run([*home[:2], early]), "new_context") == []
    # A context five principals used today (a new office VPN) is not news.
    office = [success(f"user{i}", "198.51.100.20", T0 + 8 * DAY + i) for i in range(5)]
    assert of(run([*home, *office, travel]), "new_context") == []
    # Four (alice and three more) are not enough to make it ordinary.
    alerts = of(run([*home, *office[:3], travel]), "new_context")
    assert [a["evidence"]["principals_sharing"] for a in alerts] == [4]


def test_dormant_credential(run: Run) -> None:
    old = success("bob", "203.0.113.9", T0)
    just_under = success("bob", "203.0.113.9", T0 + 90 * DAY - 1)
    assert of(run([old, just_under]), "dormant_credential") == []
    back = success("bob", "203.0.113.9", T0 + 90 * DAY)
    alerts = of(run([old, back]), "dormant_credential")
    assert [(a["entity"], a["evidence"]["unused_for_seconds"]) for a in alerts] == [
        ("static:bob", 90 * DAY)
    ]


def test_proof_reuse_pages(run: Run) -> None:
    replay = failure("", "203.0.113.9", T0, reason="TOKEN_REPLAYED")
    replay["actor"] = {
        "credential": "subject_token",
        "provider": "github",
        "fingerprint": "fp-jwt",
        "claims": {"sub": "repo:acme/app", "jti": "j1"},
    }
    expired = failure("", "203.0.113.9", T0 + 1, reason="TOKEN_EXPIRED")
    alerts = of(run([replay, expired]), "proof_reuse")
    assert [(a["entity"], a["severity"], a["evidence"]["claims"]) for a in alerts] == [
        ("github:repo:acme/app", "page", {"jti": "j1"})
    ]


def test_a_client_retrying_its_own_exchange_is_not_a_reuse(run: Run) -> None:
    exchanged = ci("10.20.3.4", T0, fingerprint="fp-proof")

    def replay(ip: str, at: int) -> dict[str, Any]:
        event = failure("", ip, at, reason="TOKEN_REPLAYED")
        event["actor"] = {
            "credential": "subject_token",
            "provider": "github",
            "fingerprint": "fp-proof",
            "claims": {"sub": "repo:acme/app"},
        }
        return event

    assert of(run([exchanged, replay("10.20.3.4", T0 + 60)]), "proof_reuse") == []
    late = of(run([exchanged, replay("10.20.3.4", T0 + 61)]), "proof_reuse")
    assert [a["evidence"]["seconds_after_first_use"] for a in late] == [61]
    elsewhere = of(run([exchanged, replay("203.0.113.9", T0 + 2)]), "proof_reuse")
    assert [(a["severity"], a["evidence"]["first_used_from"]) for a in elsewhere] == [
        ("page", "10.20.3.4")
    ]
