"""The brute-force backoff through the app: failed passwords per (account, address).

The harness clock drives the service's ``now``, so waits pass without sleeping. The
configuration here waits from the 3rd failure: 2 s, then 4, 8, ... up to 60 s.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import TestResponse

from authsvc.anomaly.backoff import backoff_key
from authsvc.errors import StoreUnavailable
from authsvc.store import BackoffState
from authsvc.store.memory import MemoryStore
from tests.conftest import (
    PASSWORDS,
    SERVICE,
    Harness,
    MakeHarness,
    MakeSettings,
    base_config,
    basic,
)
from tests.oidc_issuer import AUDIENCE, TestIssuer

HOME = "192.0.2.10"
ELSEWHERE = "198.51.100.7"
BACKOFF = {"threshold": 3, "window": 600, "base_delay": 2, "max_delay": 60}
QUERY = f"/token?service={SERVICE}&scope=repository:team/app:pull"


class RecordingStore(MemoryStore):
    """The memory store, recording the backoff calls; ``down`` makes them fail."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.down = False

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.down:
            raise StoreUnavailable("redis at 127.0.0.1:1 did not answer: refused")

    def note_failure(self, key: str, now: int, **limits: int) -> int:
        self._call("note_failure")
        return super().note_failure(key, now, **limits)

    def backoff_state(self, key: str, now: int) -> BackoffState:
        self._call("backoff_state")
        return super().backoff_state(key, now)

    def clear_failures(self, key: str) -> None:
        self._call("clear_failures")
        super().clear_failures(key)


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


@pytest.fixture
def h(make_harness: MakeHarness, make_settings: MakeSettings, store: RecordingStore) -> Harness:
    return make_harness(make_settings(anomaly={"backoff": BACKOFF}), store=store)


def login(h: Harness, user: str, password: str, ip: str = HOME) -> TestResponse:
    return h.client.get(QUERY, headers=basic(user, password), environ_base={"REMOTE_ADDR": ip})


def post_login(h: Harness, user: str, password: str, ip: str = HOME) -> TestResponse:
    return h.client.post(
        "/token",
        data={
            "grant_type": "password",
            "client_id": "containerd",
            "username": user,
            "password": password,
            "service": SERVICE,
            "scope": "repository:team/app:pull",
        },
        environ_base={"REMOTE_ADDR": ip},
    )


def fail(h: Harness, user: str, times: int, ip: str = HOME) -> None:
    for _ in range(times):
        assert login(h, user, "wrong", ip).status_code == 401


def test_after_threshold_failures_even_the_right_password_waits(h: Harness) -> None:
    fail(h, "alice", 3)
    r = login(h, "alice", PASSWORDS["alice"])
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "2"
    assert r.headers["Cache-Control"] == "no-store"
    assert "WWW-Authenticate" not in r.headers  # not a credential problem: a wait
    assert r.get_json() == {
        "errors": [
            {
                "code": "TOOMANYREQUESTS",
                "message": "too many failed logins for this account from this address: "
                "retry in 2 seconds",
                "detail": {"retry_after": 2},
            }
        ]
    }
    h.clock.advance(1)
    assert login(h, "alice", PASSWORDS["alice"]).headers["Retry-After"] == "1"
    h.clock.advance(1)
    assert login(h, "alice", PASSWORDS["alice"]).status_code == 200


def test_each_further_failure_doubles_the_wait_up_to_max_delay(h: Harness) -> None:
    fail(h, "alice", 3)
    waits = []
    for _ in range(7):
        r = login(h, "alice", PASSWORDS["alice"])
        waits.append(int(r.headers["Retry-After"]))
        h.clock.advance(waits[-1])
        fail(h, "alice", 1)
    assert waits == [2, 4, 8, 16, 32, 60, 60]


def test_a_refused_attempt_neither_checks_the_password_nor_counts(
    h: Harness, store: RecordingStore
) -> None:
    fail(h, "alice", 3)  # waits 2 s
    store.calls.clear()
    for password in ("wrong", PASSWORDS["alice"], "wrong"):
        assert login(h, "alice", password).status_code == 429
    assert store.calls == ["backoff_state"] * 3  # no note_failure
    h.clock.advance(2)
    fail(h, "alice", 1)  # the 4th failure: 4 s, as if the refused ones never happened
    assert login(h, "alice", PASSWORDS["alice"]).headers["Retry-After"] == "4"


def test_another_address_and_another_account_are_not_slowed(h: Harness) -> None:
    fail(h, "alice", 3)
    assert login(h, "alice", PASSWORDS["alice"]).status_code == 429
    assert login(h, "alice", PASSWORDS["alice"], ELSEWHERE).status_code == 200
    assert login(h, "bob", PASSWORDS["bob"]).status_code == 200
    assert login(h, "alice", "wrong", ELSEWHERE).status_code == 401  # counted apart


def test_an_ipv6_client_is_counted_by_its_64(h: Harness) -> None:
    for host in range(3):
        assert login(h, "alice", "wrong", f"2001:db8:1:2::{host + 1}").status_code == 401
    assert login(h, "alice", PASSWORDS["alice"], "2001:db8:1:2::99").status_code == 429
    assert login(h, "alice", PASSWORDS["alice"], "2001:db8:1:3::1").status_code == 200


def test_post_answers_with_an_oauth2_error_and_retry_after(h: Harness) -> None:
    for _ in range(3):
        r = post_login(h, "alice", "wrong")
        assert (r.status_code, r.get_json()["error"]) == (401, "invalid_grant")
    r = post_login(h, "alice", PASSWORDS["alice"])
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "2"
    assert r.get_json() == {
        "error": "slow_down",
        "error_description": "too many failed logins for this account from this address: "
        "retry in 2 seconds",
        "retry_after": 2,
    }
    assert login(h, "alice", PASSWORDS["alice"]).status_code == 429  # GET and POST: one count


def test_the_refusal_is_one_audit_event(h: Harness) -> None:
    fail(h, "alice", 3)
    before = len(h.audit.events)
    login(h, "alice", PASSWORDS["alice"])
    (event,) = h.audit.events[before:]
    assert event["type"] == "token.issue"
    assert (event["outcome"], event["reason"]) == ("failure", "TOO_MANY_ATTEMPTS")
    assert event["actor"]["username"] == "alice"
    assert event["client"]["ip"] == HOME
    assert event["message"].endswith("retry in 2 seconds")
    assert event["decision"]["granted"] == []


def test_an_unknown_user_counts_and_waits_like_a_known_one(h: Harness) -> None:
    fail(h, "mallory", 3)
    r = login(h, "mallory", "anything")
    assert r.status_code == 429
    assert r.get_json()["errors"][0]["detail"] == {"retry_after": 2}
    failures = [e["reason"] for e in h.audit.events if e.get("type") == "token.issue"]
    assert failures == ["UNKNOWN_USER"] * 3 + ["TOO_MANY_ATTEMPTS"]


def test_a_success_clears_the_failures(h: Harness, store: RecordingStore) -> None:
    fail(h, "alice", 2)
    store.calls.clear()
    assert login(h, "alice", PASSWORDS["alice"]).status_code == 200
    assert store.calls == ["backoff_state", "clear_failures"]
    fail(h, "alice", 2)  # 2, not 4: no wait yet
    assert login(h, "alice", PASSWORDS["alice"]).status_code == 200


def test_a_success_costs_one_read_and_other_credentials_none(
    h: Harness, store: RecordingStore
) -> None:
    def calls(send: Any) -> list[str]:
        store.calls.clear()
        assert send().status_code == 200
        return list(store.calls)

    alice = basic("alice", PASSWORDS["alice"])
    assert calls(lambda: h.client.get(QUERY, headers=alice)) == ["backoff_state"]
    # Found clean, it is not asked again for `recheck` (1) second ...
    assert calls(lambda: h.client.get(QUERY, headers=alice)) == []
    h.clock.advance(1)
    assert calls(lambda: h.client.get(QUERY, headers=alice)) == ["backoff_state"]
    assert calls(lambda: h.client.get(QUERY)) == []  # anonymous
    refresh = h.client.get(QUERY + "&offline_token=true", headers=alice).get_json()
    token = refresh["refresh_token"]
    assert calls(lambda: h.client.get(QUERY, headers=basic("<token>", token))) == []
    grant = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "client_id": "c",
        "service": SERVICE,
    }
    assert calls(lambda: h.client.post("/token", data=grant)) == []


def test_a_refresh_token_from_a_waiting_address_still_works(h: Harness) -> None:
    r = h.client.get(
        QUERY + "&offline_token=true",
        headers=basic("alice", PASSWORDS["alice"]),
        environ_base={"REMOTE_ADDR": HOME},
    )
    refresh = r.get_json()["refresh_token"]
    fail(h, "alice", 3)
    assert login(h, "alice", PASSWORDS["alice"]).status_code == 429
    assert login(h, "<token>", refresh).status_code == 200
    assert login(h, "<token>", "asr_" + "A" * 43).status_code == 401  # not counted either
    assert login(h, "<token>", refresh).status_code == 200


def test_an_unreachable_store_fails_open_with_a_warning(
    h: Harness, store: RecordingStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.down = True
    with caplog.at_level(logging.WARNING, logger="authsvc.anomaly.backoff"):
        for _ in range(5):
            assert login(h, "alice", "wrong").status_code == 401  # not a 503
        assert login(h, "alice", PASSWORDS["alice"]).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.name == "authsvc.anomaly.backoff"]
    assert len(warnings) == 1  # at most one a minute, not one per request
    assert "failing open" in warnings[0]
    assert "redis at 127.0.0.1:1 did not answer" in warnings[0]
    store.down = False
    assert h.store.backoff_state("anything", int(h.clock())) == BackoffState(0, 0)


def test_disabled_backoff_never_waits_nor_touches_the_store(
    make_harness: MakeHarness, make_settings: MakeSettings, store: RecordingStore
) -> None:
    h = make_harness(make_settings(anomaly={"backoff": {**BACKOFF, "enabled": False}}), store=store)
    fail(h, "alice", 10)
    assert login(h, "alice", PASSWORDS["alice"]).status_code == 200
    assert store.calls == []


def test_the_default_waits_from_the_fifth_failure(make_harness: MakeHarness) -> None:
    h = make_harness()
    fail(h, "alice", 4)
    assert login(h, "alice", PASSWORDS["alice"]).status_code == 200
    fail(h, "alice", 5)
    assert login(h, "alice", PASSWORDS["alice"]).headers["Retry-After"] == "1"


# -- OIDC tokens as passwords are proofs, not guesses -----------------------------------


GITHUB_CLAIMS = {
    "sub": "repo:Acme/App:ref:refs/heads/main",
    "repository": "Acme/App",
    "repository_id": "74",
    "repository_owner": "Acme",
    "repository_owner_id": "65",
    "ref": "refs/heads/main",
    "ref_type": "branch",
    "event_name": "push",
    "workflow": "release",
    "runner_environment": "github-hosted",
}


def test_an_oidc_token_as_the_password_neither_counts_nor_waits(
    make_harness: MakeHarness,
    make_settings: MakeSettings,
    store: RecordingStore,
    issuer: TestIssuer,
    keys_dir: Path,
) -> None:
    identities = base_config(keys_dir)["identities"]
    identities["oidc"] = {
        "gh": {"preset": "github-actions", "issuer": issuer.url, "audience": AUDIENCE}
    }
    h = make_harness(
        make_settings(anomaly={"backoff": BACKOFF}, identities=identities), store=store
    )
    for _ in range(4):  # refused tokens: a wrong audience
        bad = issuer.mint({**GITHUB_CLAIMS, "aud": "elsewhere"}, iat=int(h.clock()))
        assert login(h, "ci", bad).status_code == 401
    assert store.calls == []
    fail(h, "ci", 3)  # "ci" as a static user name with a plain password does count
    assert login(h, "ci", "anything").status_code == 429
    token = issuer.mint(GITHUB_CLAIMS, iat=int(h.clock()))
    assert login(h, "ci", token).status_code == 200  # the proof is not slowed


def test_failures_counted_elsewhere_take_effect_within_recheck(
    h: Harness, store: RecordingStore
) -> None:
    assert login(h, "alice", PASSWORDS["alice"]).status_code == 200  # found clean
    # Another worker counts three failures from the same address meanwhile.
    now = int(h.clock())
    for _ in range(3):
        store.note_failure(
            backoff_key("alice", HOME),
            now,
            window=600,
            threshold=3,
            base_delay=2,
            max_delay=60,
        )
    assert login(h, "alice", PASSWORDS["alice"]).status_code == 200  # still trusted clean
    h.clock.advance(1)
    answer = login(h, "alice", PASSWORDS["alice"])
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "1"
    # A failure this worker sees drops what it remembered at once.
    h.clock.advance(5)
    assert login(h, "bob", PASSWORDS["bob"]).status_code == 200
    assert login(h, "bob", "wrong").status_code == 401
    assert login(h, "bob", "wrong").status_code == 401
    assert login(h, "bob", "wrong").status_code == 401
    assert login(h, "bob", PASSWORDS["bob"]).status_code == 429
