"""Risk responses through the app: a shorter token lifetime while an anomaly alert is
open on the caller, and the admin endpoints behind the same password backoff."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from authsvc.errors import StoreUnavailable
from authsvc.store.memory import MemoryStore
from tests.conftest import PASSWORDS, SERVICE, MakeHarness, MakeSettings, base_config, basic

QUERY = f"/token?service={SERVICE}&scope=repository:team/app:pull"


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def test_an_open_alert_shortens_the_tokens_of_rules_that_ask(
    make_settings: MakeSettings, make_harness: MakeHarness, keys_dir: Any
) -> None:
    rules = base_config(keys_dir)["rules"]
    rules[0]["open_alert_token_ttl"] = 60  # dev-team: alice
    h = make_harness(make_settings(rules=rules))
    store = h.store
    assert isinstance(store, MemoryStore)
    alice = basic("alice", PASSWORDS["alice"])

    normal = h.client.get(QUERY, headers=alice).get_json()
    assert normal["expires_in"] == 300
    now = int(h.clock())
    store.mark_open_alert("static:alice", "new_context", now + 3600)
    cut = h.client.get(QUERY, headers=alice).get_json()
    assert cut["expires_in"] == 60
    claims = _claims(cut["token"])
    assert claims["exp"] - claims["iat"] == 60
    assert h.audit.events[-1]["token"]["open_alert"] == "new_context"
    assert "open_alert" not in h.audit.events[-2]["token"]

    # Bob's rule does not ask for it: an open alert on him changes nothing.
    store.mark_open_alert("static:bob", "mass_pull", now + 3600)
    bob = h.client.get(QUERY, headers=basic("bob", PASSWORDS["bob"])).get_json()
    assert bob["expires_in"] == 300

    # Once the alert's window has passed, alice's tokens are whole again.
    h.clock.advance(3601)
    assert h.client.get(QUERY, headers=alice).get_json()["expires_in"] == 300


def test_the_admin_endpoints_are_behind_the_password_backoff(
    make_settings: MakeSettings, make_harness: MakeHarness
) -> None:
    settings = make_settings(
        admin={"accounts": ["admin"]},
        anomaly={"backoff": {"threshold": 2, "window": 600, "base_delay": 30, "max_delay": 60}},
    )
    h = make_harness(settings)
    here = {"REMOTE_ADDR": "192.0.2.10"}
    wrong = basic("admin", "not-the-password")
    for _ in range(2):
        answer = h.client.get("/audit/export", headers=wrong, environ_base=here)
        assert answer.status_code == 401
    right = basic("admin", PASSWORDS["admin"])
    refused = h.client.get("/audit/export", headers=right, environ_base=here)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "30"
    assert "retry in 30 seconds" in refused.get_data(as_text=True)
    # From elsewhere the admin is not slowed.
    elsewhere = h.client.get(
        "/audit/export", headers=right, environ_base={"REMOTE_ADDR": "198.51.100.7"}
    )
    assert elsewhere.status_code == 200
    h.clock.advance(31)
    assert h.client.get("/audit/export", headers=right, environ_base=here).status_code == 200


def test_an_unreadable_open_alert_gives_the_usual_lifetime_and_one_warning(
    make_settings: MakeSettings,
    make_harness: MakeHarness,
    keys_dir: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Down(MemoryStore):
        def open_alert(self, principal: str, now: int) -> str | None:
            raise StoreUnavailable("redis at 127.0.0.1:6379: connection refused")

    rules = base_config(keys_dir)["rules"]
    rules[0]["open_alert_token_ttl"] = 60
    h = make_harness(make_settings(rules=rules), store=Down())
    alice = basic("alice", PASSWORDS["alice"])
    with caplog.at_level(logging.WARNING, logger="authsvc.anomaly.risk"):
        for _ in range(3):
            assert h.client.get(QUERY, headers=alice).get_json()["expires_in"] == 300
    warnings = [r.getMessage() for r in caplog.records if r.name == "authsvc.anomaly.risk"]
    assert len(warnings) == 1
    assert "connection refused" in warnings[0] and "usual token lifetimes" in warnings[0]
